//! The HTTP listener (hyper 1, HTTP/1.1).
//!
//! Routes:
//! - `GET /metrics`: the Prometheus exposition (OpenMetrics text).
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when every poller succeeded within three of its intervals, else 503
//!   with the reasons.
//! - `GET /secrets`: JSON status of every watched secret.
//! - `GET /anomalies`: JSON list of recent access anomalies, newest first, with the access
//!   poller's counts of skipped records, repeated deliveries and principal evictions.
//!
//! Protection: at most `server.max_connections` connections are served at once (the semaphore is
//! acquired before `accept`, so the excess waits in the kernel backlog), request headers must
//! arrive within `server.header_timeout`, and on shutdown open connections get a few seconds to
//! finish before they are dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::view::{SecretStatus, SharedView};

/// How long open connections may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(3);

/// What the handlers read.
pub struct AppState {
    /// The configuration (server limits, poll periods).
    pub config: Arc<Config>,
    /// The shared inventory view.
    pub view: SharedView,
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The pollers readiness depends on, with their periods.
    fn pollers(&self) -> Vec<(&'static str, Duration)> {
        let mut p = vec![(
            crate::poll::metadata::SOURCE,
            self.config.poll.metadata_every,
        )];
        if self.config.access.is_some() && self.view.read().polls.contains_key("access") {
            p.push(("access", self.config.poll.access_every));
        }
        p
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}\n"),
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}\n"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// The body of `GET /secrets`.
#[derive(Serialize)]
struct SecretsBody<'a> {
    /// When the answer was made.
    generated_at: i64,
    /// Every watched secret.
    secrets: Vec<&'a SecretStatus>,
}

/// The body of `GET /anomalies`.
#[derive(Serialize)]
struct AnomaliesBody<'a> {
    /// When the answer was made.
    generated_at: i64,
    /// Log events skipped as not JSON, oversized or malformed, since start.
    skipped_records: u64,
    /// Already counted events read again (overlap re-reads, duplicate deliveries), since start.
    repeated_events: u64,
    /// Principals forgotten because a per-secret set was full, since start.
    principal_evictions: u64,
    /// Recent anomalies, newest first.
    anomalies: Vec<AnomalyItem<'a>>,
}

/// One anomaly of `GET /anomalies`.
#[derive(Serialize)]
struct AnomalyItem<'a> {
    /// eventTime as RFC 3339.
    time: String,
    /// The anomaly.
    #[serde(flatten)]
    anomaly: &'a crate::anomaly::Anomaly,
}

/// Routes one request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let get_only = |f: &dyn Fn() -> Response<Body>| {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            f()
        } else {
            method_not_allowed("GET, HEAD")
        }
    };
    match path {
        "/metrics" => get_only(&|| {
            // Prometheus asks for OpenMetrics; everything else gets the classic text format.
            let openmetrics = req
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let (body, content_type) = if openmetrics {
                (state.metrics.render(), metrics::OPENMETRICS_CONTENT_TYPE)
            } else {
                (state.metrics.render_text(), metrics::TEXT_CONTENT_TYPE)
            };
            let mut r = text(StatusCode::OK, body);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }),
        "/healthz" => get_only(&|| text(StatusCode::OK, "ok\n")),
        "/readyz" => get_only(&|| {
            let problems = state
                .view
                .read()
                .readiness(Instant::now(), &state.pollers());
            if problems.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", problems.join("; ")),
                )
            }
        }),
        "/secrets" => get_only(&|| {
            let view = state.view.read();
            json(
                StatusCode::OK,
                &SecretsBody {
                    generated_at: Utc::now().timestamp(),
                    secrets: view.secrets.values().collect(),
                },
            )
        }),
        "/anomalies" => get_only(&|| {
            let view = state.view.read();
            let log = &view.access_log;
            json(
                StatusCode::OK,
                &AnomaliesBody {
                    generated_at: Utc::now().timestamp(),
                    skipped_records: log.skipped_records,
                    repeated_events: log.repeated_events,
                    principal_evictions: log.principal_evictions,
                    anomalies: log
                        .recent
                        .iter()
                        .map(|a| AnomalyItem {
                            time: chrono::DateTime::<Utc>::from_timestamp_millis(a.time_ms)
                                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                                .unwrap_or_default(),
                            anomaly: a,
                        })
                        .collect(),
                },
            )
        }),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves `listener` until `shutdown` turns true, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(state.config.server.max_connections));
    let header_timeout = state.config.server.header_timeout;
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(error = %e, "Accept failed; retrying in 100 ms.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "Connection ended with an error.");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => info!("HTTP connections drained."),
        _ = tokio::time::sleep(DRAIN) => warn!("HTTP connections still open after {}s; dropping them.", DRAIN.as_secs()),
    }
}
