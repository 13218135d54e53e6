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
//! - `POST /compromised/<secret>`: opens a compromise incident (journaled first), `202`
//!   `{"incident_id","secret","status","url"}`; `200` with the open incident while one is open.
//! - `GET /incidents`, `GET /incidents/<id>`, `GET /incidents/<id>/report.md`.
//!
//! Action POSTs pass `guard_action` first: a credential in the query string `400`, the token
//! (`403`/`401`), a declared body over 16 KiB `413`, a malformed `<secret>` `400`, unknown `404`,
//! the per-secret rate limit `429`; `/compromised` then reads at most 16 KiB of body within
//! `server.body_timeout` (`413`, `408`) and wants a JSON object or nothing (`400`).
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
use std::time::Duration;
use tokio::time::Instant;

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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::aws::SecretValue;
use crate::config::Config;
use crate::domain::view::{RotationView, SecretStatus, SharedView};
use crate::rotation::journal::Trigger;
use crate::rotation::{Engine, RequestError, RequestOptions, RollbackError};
use crate::telemetry::{self, Metrics};

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
    /// Compromise incidents (`None` in tools that only serve reads).
    pub incidents: Option<Arc<crate::incident::Service>>,
    /// The per-secret rate limit of the action routes.
    pub limiter: ActionLimiter,
}

impl AppState {
    /// The pollers readiness depends on, with their periods.
    fn pollers(&self) -> Vec<(&'static str, Duration)> {
        let mut p = vec![(
            crate::inventory::poller::SOURCE,
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
    let Some(engine) = &state.rotation else {
        if is_post {
            if let Err(r) = guard_action(state, req, kind, rest, &|_| None) {
                return Some(r);
            }
        }
        return Some(error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rotation core is not running",
        ));
    };
    let name = if is_post {
        match guard_action(state, req, kind, rest, &|n| {
            engine.find_secret(n).map(|s| s.name.clone())
        }) {
            Ok(label) => label,
            Err(r) => return Some(r),
        }
    } else {
        let Some(name) = percent_decode(rest) else {
            return Some(error_json(
                StatusCode::BAD_REQUEST,
                "malformed percent-escape in the path",
            ));
        };
        name
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
    anomaly: &'a crate::access::detect::Anomaly,
}

/// Routes one request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path.starts_with("/compromised/") || path == "/incidents" || path.starts_with("/incidents/")
    {
        return incident_routes(&state, req).await;
    }
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
                telemetry::OPENMETRICS_CONTENT_TYPE
            } else {
                telemetry::TEXT_CONTENT_TYPE
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
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(state.config.server.max_connections));
    let header_timeout = state.config.server.header_timeout;
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
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
            _ = shutdown.cancelled() => break,
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

/// The largest request body an action route reads (SPEC §7).
pub const MAX_BODY: usize = 16 * 1024;
/// `POST /compromised` requests per secret within [`RATE_WINDOW`]: the first opens the
/// incident, the next ones answer 200 with it; more is a script in a loop.
pub const RATE_LIMIT: usize = 5;
/// `POST /rotate` and `POST /rollback` requests per secret within [`RATE_WINDOW`] (a rotation
/// takes well under a second on a fast backend; one per 2 s on average is plenty).
pub const ROTATE_RATE_LIMIT: usize = 30;

/// The limit of an action route.
pub fn rate_limit(action: &str) -> usize {
    if action == "compromised" {
        RATE_LIMIT
    } else {
        ROTATE_RATE_LIMIT
    }
}
/// The rate limit's sliding window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The longest raw `<secret>` path segment looked at.
const MAX_RAW_SEGMENT: usize = 2048;
/// Query keys that look like credentials: refused with 400, never logged.
const CREDENTIAL_KEYS: &[&str] = &[
    "token",
    "access_token",
    "bearer",
    "auth",
    "authorization",
    "api_key",
    "apikey",
    "key",
    "admin_token",
];

/// Per-(action, secret) sliding-window rate limit of the action routes. Keys are inventory
/// names (bounded by the inventory), checked only after the secret was found.
#[derive(Default)]
pub struct ActionLimiter {
    hits: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Instant>>>,
}

impl ActionLimiter {
    /// Records a request at `now`; `Err(retry_after)` when `limit` requests were recorded in
    /// the last [`RATE_WINDOW`] (the refused request is not recorded).
    pub fn check(&self, key: &str, limit: usize, now: Instant) -> Result<(), Duration> {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let q = hits.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= limit {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(RATE_WINDOW.saturating_sub(now.saturating_duration_since(oldest)));
        }
        q.push_back(now);
        Ok(())
    }
}

/// Validates the raw `<secret>` segment: percent-decoded exactly once, then only the characters
/// Secrets Manager allows in a name (`A-Z a-z 0-9 / _ + = . @ -`), at most 512 of them, and no
/// empty, `.` or `..` path segment. `Err` says why (the caller answers 400).
pub fn secret_from_path(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("the secret name is missing");
    }
    if raw.len() > MAX_RAW_SEGMENT {
        return Err("the secret name is too long");
    }
    let name =
        percent_decode(raw).ok_or("malformed percent-escape or invalid UTF-8 in the path")?;
    if name.len() > 512 {
        return Err("the secret name is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
    {
        return Err("the secret name has a character Secrets Manager names cannot contain");
    }
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("the secret name has an empty, '.' or '..' path segment");
    }
    Ok(name)
}

/// Whether the query string carries something that looks like a credential.
pub fn query_has_credentials(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|kv| {
        let key = kv.split('=').next().unwrap_or("");
        let key = percent_decode(key).unwrap_or_else(|| key.to_string());
        CREDENTIAL_KEYS.contains(&key.to_ascii_lowercase().as_str())
    })
}

/// The checks every action POST passes, in order: no credential in the query (400), the bearer
/// token (403/401), a declared body size within [`MAX_BODY`] (413), a valid `<secret>` (400), a
/// known secret (404), the rate limit (429). Returns the inventory name.
// The error is the response to send, built once per refused request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn guard_action(
    state: &AppState,
    req: &Request<Incoming>,
    action: &str,
    raw: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Response<Body>> {
    if query_has_credentials(req.uri().query()) {
        // The URL is not logged anywhere; the caller must move the token to the header (and
        // should replace it: proxies may have logged the URL).
        return Err(error_json(
            StatusCode::BAD_REQUEST,
            "credentials are accepted only in the Authorization header (Bearer), never in the URL; replace a token that was sent in a URL",
        ));
    }
    if let Some(r) = authorize(state, req) {
        return Err(r);
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    let name = secret_from_path(raw).map_err(|why| error_json(StatusCode::BAD_REQUEST, why))?;
    let Some(label) = lookup(&name) else {
        return Err(error_json(
            StatusCode::NOT_FOUND,
            format!("unknown secret {name:?}: not in the inventory"),
        ));
    };
    let limit = rate_limit(action);
    if let Err(wait) = state
        .limiter
        .check(&format!("{action}:{label}"), limit, Instant::now())
    {
        let mut r = error_json(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limited: at most {limit} {action} requests per secret per {} s",
                RATE_WINDOW.as_secs()
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return Err(r);
    }
    Ok(label)
}

/// Reads the body, at most [`MAX_BODY`] bytes (enforced while reading) within `timeout`.
#[allow(clippy::result_large_err)]
async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(error_json(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {} s", timeout.as_secs_f64()),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )),
        Ok(Err(e)) => Err(error_json(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The optional body of `POST /compromised/<secret>`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompromiseBody {
    /// Why the secret is believed compromised.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who reported it.
    #[serde(default)]
    pub reported_by: Option<String>,
}

/// Parses the body: empty means no reason; anything else must be the JSON object.
pub fn parse_compromise_body(body: &[u8]) -> Result<CompromiseBody, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(CompromiseBody::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    if !value.is_object() {
        return Err("malformed JSON body: expected an object {\"reason\", \"reported_by\"}".into());
    }
    serde_json::from_value::<CompromiseBody>(value).map_err(|e| format!("malformed JSON body: {e}"))
}

fn incident_answer(status: StatusCode, inc: &crate::incident::Incident) -> Response<Body> {
    json(
        status,
        &serde_json::json!({
            "incident_id": inc.incident_id,
            "secret": inc.secret,
            "status": inc.status.as_str(),
            "url": inc.url(),
        }),
    )
}

/// `POST /compromised/<secret>`, `GET /incidents`, `GET /incidents/<id>`,
/// `GET /incidents/<id>/report.md`.
async fn incident_routes(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(raw) = path.strip_prefix("/compromised/") {
        if req.method() != Method::POST {
            return method_not_allowed("POST");
        }
        let Some(svc) = &state.incidents else {
            if let Err(r) = guard_action(state, &req, "compromised", raw, &|_| None) {
                return r;
            }
            return error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "the incident service is not running",
            );
        };
        let label = match guard_action(state, &req, "compromised", raw, &|n| {
            svc.find_secret(n).map(|s| s.name.clone())
        }) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let body = match read_body(req.into_body(), state.config.server.body_timeout).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let body = match parse_compromise_body(&body) {
            Ok(b) => b,
            Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
        };
        let reason = body.reason.unwrap_or_else(|| "(no reason given)".into());
        let reported_by = body.reported_by.unwrap_or_else(|| "(not given)".into());
        return match svc.open(&label, &reason, &reported_by) {
            Ok(crate::incident::Opened::New(inc)) => incident_answer(StatusCode::ACCEPTED, &inc),
            Ok(crate::incident::Opened::Existing(inc)) => incident_answer(StatusCode::OK, &inc),
            Err(e @ crate::incident::OpenError::UnknownSecret(_)) => {
                error_json(StatusCode::NOT_FOUND, e)
            }
            Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let Some(svc) = &state.incidents else {
        return error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the incident service is not running",
        );
    };
    if path == "/incidents" {
        return match svc.list(200) {
            Ok(list) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "incidents": list.iter().map(|i| i.summary()).collect::<Vec<_>>()
                }),
            ),
            Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    }
    let rest = path.strip_prefix("/incidents/").unwrap_or("");
    let (id, md) = match rest.strip_suffix("/report.md") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error_json(StatusCode::NOT_FOUND, "no such incident");
    }
    match svc.get(id) {
        Ok(Some(inc)) if md => {
            let mut r = text(StatusCode::OK, crate::incident::report::markdown(&inc));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/markdown; charset=utf-8"),
            );
            r
        }
        Ok(Some(inc)) => {
            let mut v = serde_json::to_value(&inc).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("url".into(), serde_json::json!(inc.url()));
                o.insert(
                    "report_url".into(),
                    serde_json::json!(format!("{}/report.md", inc.url())),
                );
            }
            json(StatusCode::OK, &v)
        }
        Ok(None) => error_json(StatusCode::NOT_FOUND, "no such incident"),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn secret_names_from_the_path() {
        for (raw, want) in [
            ("JWT_SECRET", Some("JWT_SECRET")),
            ("event-service/jwt-secret", Some("event-service/jwt-secret")),
            (
                "event-service%2Fjwt-secret",
                Some("event-service/jwt-secret"),
            ),
            ("a%2Bb%3Dc%40d.e", Some("a+b=c@d.e")),
            ("..", None),
            ("a/../b", None),
            ("%2e%2e", None),
            ("a/%2E%2E/b", None),
            ("./a", None),
            ("a//b", None),
            ("/a", None),
            ("a/", None),
            ("%252F", None),
            ("a%2500", None),
            ("a%00b", None),
            ("a%0Ab", None),
            ("%C0%AE%C0%AE", None),
            ("%c0%af", None),
            ("a%2", None),
            ("a%zz", None),
            ("caf%C3%A9", None),
            ("a b", None),
            ("", None),
        ] {
            assert_eq!(secret_from_path(raw).ok().as_deref(), want, "{raw}");
        }
        assert!(secret_from_path(&"a".repeat(513)).is_err());
        assert!(secret_from_path(&"a".repeat(512)).is_ok());
        assert!(secret_from_path(&"%41".repeat(700)).is_err());
    }

    #[test]
    fn credentials_in_the_query() {
        for (q, want) in [
            (None, false),
            (Some("force=true"), false),
            (Some("token=abc"), true),
            (Some("force=1&access_token=x"), true),
            (Some("Authorization=Bearer%20x"), true),
            (Some("%74oken=x"), true),
            (Some("tokens=x"), false),
        ] {
            assert_eq!(query_has_credentials(q), want, "{q:?}");
        }
    }

    #[test]
    fn rate_limit_is_per_key_and_slides() {
        let l = ActionLimiter::default();
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT {
            assert!(l
                .check("compromised:A", 5, t0 + Duration::from_secs(i as u64))
                .is_ok());
        }
        let wait = l
            .check("compromised:A", 5, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check("compromised:B", 5, t0).is_ok());
        assert!(l.check("rotate:A", 5, t0).is_ok());
        assert!(l.check("compromised:A", 5, t0 + RATE_WINDOW).is_ok());
        assert_eq!(rate_limit("compromised"), RATE_LIMIT);
        assert_eq!(rate_limit("rotate"), ROTATE_RATE_LIMIT);
        assert_eq!(rate_limit("rollback"), ROTATE_RATE_LIMIT);
    }

    #[test]
    fn compromise_bodies() {
        assert!(parse_compromise_body(b"").unwrap().reason.is_none());
        assert!(parse_compromise_body(b"  \n").is_ok());
        let b = parse_compromise_body(br#"{"reason":"leak","reported_by":"bob"}"#).unwrap();
        assert_eq!(b.reason.as_deref(), Some("leak"));
        assert_eq!(b.reported_by.as_deref(), Some("bob"));
        for bad in [
            &b"{"[..],
            b"[]",
            b"\"x\"",
            br#"{"reason":1}"#,
            br#"{"other":"x"}"#,
            b"null",
        ] {
            assert!(
                parse_compromise_body(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
