//! The HTTP listener (hyper 1, HTTP/1.1).
//!
//! Routes:
//! - `GET /metrics`: the Prometheus exposition (OpenMetrics text).
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when every poller succeeded within three of its intervals, else 503
//!   with the reasons.
//! - `GET /secrets`: JSON status of every watched secret, with a `rotation` object (latest
//!   rotation, and why a due scheduled rotation waits).
//! - `GET /anomalies`: JSON list of recent access anomalies, newest first, with the access
//!   poller's counts of skipped records, repeated deliveries and principal evictions.
//! - `POST /rotate/<secret>`: journals a manual rotation, then `202`
//!   `{"rotation_id","secret","status","url"}`; `409` while one is active or for strategy `none`.
//! - `POST /rollback/<secret>[?force=true]`: AWSCURRENT back to AWSPREVIOUS; `409` while a
//!   compromise incident on the secret is open (unless forced) or a rotation is running.
//! - `GET /rotations`: the latest rotations; `GET /rotations/<id>`: one rotation and its steps.
//!
//! Every POST needs `Authorization: Bearer <admin token>` (compared in constant time): `401`
//! when missing or wrong, `403` when no token is configured (actions are off). `<secret>` is the
//! inventory name or the Secrets Manager name (slashes allowed, percent-decoded once).
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
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::aws::SecretValue;
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::rotation::journal::Trigger;
use crate::rotation::{Engine, RequestError, RequestOptions, RollbackError};
use crate::view::{RotationView, SecretStatus, SharedView};

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
    /// The rotation core (`None` in tools that only serve reads).
    pub rotation: Option<Arc<Engine>>,
    /// The admin bearer token; `None` turns every POST off (403).
    pub admin_token: Option<SecretValue>,
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

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
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
            let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
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
    secrets: Vec<SecretEntry<'a>>,
}

/// One secret of `GET /secrets`: its status plus its rotation state.
#[derive(Serialize)]
struct SecretEntry<'a> {
    /// The status fields.
    #[serde(flatten)]
    status: &'a SecretStatus,
    /// Latest rotation and scheduler state, when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<&'a RotationView>,
}

/// Decodes `%XX` escapes once; `None` for a malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks the bearer token in constant time; `Some` is the refusal to send.
fn authorize(state: &AppState, req: &Request<Incoming>) -> Option<Response<Body>> {
    use subtle::ConstantTimeEq;
    let Some(expected) = &state.admin_token else {
        return Some(json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "actions are off: no admin token is configured (server.admin_token_file or server.admin_token_env)"}),
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) && !given.is_empty() {
        None
    } else {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "missing or wrong bearer token"}),
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }
}

fn error_json(status: StatusCode, msg: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({"error": msg.to_string()}))
}

/// `POST /rotate/<secret>`, `POST /rollback/<secret>`, `GET /rotations[/<id>]`.
async fn rotation_routes(state: &AppState, req: &Request<Incoming>) -> Option<Response<Body>> {
    let path = req.uri().path();
    let (kind, rest) = if let Some(r) = path.strip_prefix("/rotate/") {
        ("rotate", r)
    } else if let Some(r) = path.strip_prefix("/rollback/") {
        ("rollback", r)
    } else if path == "/rotations" {
        ("list", "")
    } else if let Some(r) = path.strip_prefix("/rotations/") {
        ("get", r)
    } else {
        return None;
    };
    let is_post = kind == "rotate" || kind == "rollback";
    if is_post && req.method() != Method::POST {
        return Some(method_not_allowed("POST"));
    }
    if !is_post && req.method() != Method::GET && req.method() != Method::HEAD {
        return Some(method_not_allowed("GET, HEAD"));
    }
    if is_post {
        if let Some(r) = authorize(state, req) {
            return Some(r);
        }
    }
    let Some(engine) = &state.rotation else {
        return Some(error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rotation core is not running",
        ));
    };
    let Some(name) = percent_decode(rest) else {
        return Some(error_json(
            StatusCode::BAD_REQUEST,
            "malformed percent-escape in the path",
        ));
    };
    Some(match kind {
        "rotate" => match engine.request(&name, Trigger::Manual, RequestOptions::default()) {
            Ok(r) => json(
                StatusCode::ACCEPTED,
                &serde_json::json!({
                    "rotation_id": r.id,
                    "secret": r.secret,
                    "status": r.state.as_str(),
                    "url": format!("/rotations/{}", r.id),
                }),
            ),
            Err(RequestError::UnknownSecret(_)) => {
                error_json(StatusCode::NOT_FOUND, format!("unknown secret {name:?}"))
            }
            Err(RequestError::Busy(r)) => json(
                StatusCode::CONFLICT,
                &serde_json::json!({
                    "error": format!("a rotation of {} is already {}", r.secret, r.state.as_str()),
                    "rotation_id": r.id,
                    "secret": r.secret,
                    "status": r.state.as_str(),
                    "url": format!("/rotations/{}", r.id),
                }),
            ),
            Err(e @ RequestError::Refused(_)) => error_json(StatusCode::CONFLICT, e),
            Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        "rollback" => {
            let force = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .any(|kv| kv == "force=true" || kv == "force=1" || kv == "force");
            match engine.rollback(&name, force).await {
                Ok(report) => json(StatusCode::OK, &report),
                Err(RollbackError::UnknownSecret(_)) => {
                    error_json(StatusCode::NOT_FOUND, format!("unknown secret {name:?}"))
                }
                Err(
                    e @ (RollbackError::IncidentOpen { .. }
                    | RollbackError::Running(_)
                    | RollbackError::NothingToRollBack(_)),
                ) => error_json(StatusCode::CONFLICT, e),
                Err(e @ RollbackError::Aws(_)) => error_json(StatusCode::BAD_GATEWAY, e),
                Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        "list" => match engine.recent(100) {
            Ok(list) => json(StatusCode::OK, &serde_json::json!({ "rotations": list })),
            Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        _ => match engine.status(&name) {
            Ok(Some((r, events))) => {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "events".into(),
                        serde_json::to_value(events).unwrap_or_default(),
                    );
                }
                json(StatusCode::OK, &v)
            }
            Ok(None) => error_json(StatusCode::NOT_FOUND, format!("no rotation {name:?}")),
            Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
    })
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
    if let Some(r) = rotation_routes(&state, &req).await {
        return r;
    }
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
            let gzip = req
                .headers()
                .get_all(ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
            let e = state.metrics.scrape(openmetrics, gzip);
            let content_type = if openmetrics {
                metrics::OPENMETRICS_CONTENT_TYPE
            } else {
                metrics::TEXT_CONTENT_TYPE
            };
            // Two chunks: the cached per-secret part is sent without copying it; with gzip
            // they are two members of one gzip stream.
            let frames = [e.fleet, e.process].map(|b| Ok::<_, Infallible>(Frame::data(b)));
            let mut r = Response::new(StreamBody::new(stream::iter(frames)).boxed());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            if e.gzip {
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
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
                    secrets: view
                        .secrets
                        .values()
                        .map(|status| SecretEntry {
                            status,
                            rotation: view.rotations.get(&status.name),
                        })
                        .collect(),
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
