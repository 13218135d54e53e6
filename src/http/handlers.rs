//! The handlers: one function per route family, dispatched on the parsed [`Route`]. Every JSON
//! answer is an `api` type. It must never import the serving loop (`http/mod.rs`).

use std::convert::Infallible;
use std::sync::Arc;

use chrono::Utc;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::api::{
    AnomaliesBody, AnomalyItem, IncidentAccepted, IncidentDetail, IncidentList, IncidentSummary,
    RotateAccepted, RotateRefused, RotationDetail, RotationList, SecretEntry, SecretsBody,
};
use super::api::{Redact, redact};
use super::guard::{Action, guard_action, parse_compromise_body, read_access, read_body};
use super::respond::{Body, error_json, json, method_not_allowed, text};
use super::route::{Miss, Route};
use super::state::AppState;
use crate::incident::{OpenError, Opened};
use crate::rotation::journal::{Rotation, Trigger};
use crate::rotation::{RequestError, RollbackError};
use crate::telemetry;

/// Routes one request.
pub(crate) async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let route = match Route::parse(req.method(), req.uri().path(), req.uri().query()) {
        Ok(route) => route,
        Err(Miss::NotFound) => return text(StatusCode::NOT_FOUND, "not found\n"),
        Err(Miss::MethodNotAllowed(allow)) => return method_not_allowed(allow),
        Err(Miss::MalformedId) => {
            return match &state.rotation {
                Some(_) => error_json(
                    StatusCode::BAD_REQUEST,
                    "malformed percent-escape in the path",
                ),
                None => rotation_off(),
            };
        }
        Err(Miss::NoSuchIncident) => {
            return match &state.incidents {
                Some(_) => error_json(StatusCode::NOT_FOUND, "no such incident"),
                None => incidents_off(),
            };
        }
    };
    // Read routes with details: anonymous callers get the summary.
    let full = match &route {
        Route::Secrets
        | Route::Anomalies
        | Route::Rotations
        | Route::Rotation(_)
        | Route::Incidents
        | Route::Incident(_)
        | Route::IncidentReport(_) => match read_access(&state.gate(), &req) {
            Ok(full) => full,
            Err(r) => return r,
        },
        _ => false,
    };
    match route {
        Route::Metrics => metrics(&state, &req),
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        Route::Readyz => readyz(&state),
        Route::Secrets => secrets(&state, full),
        Route::Anomalies => anomalies(&state, full),
        Route::Rotate { raw, force } => rotate(&state, &req, &raw, force).await,
        Route::Rollback { raw, force } => rollback(&state, &req, &raw, force).await,
        Route::Rotations => rotations(&state, full),
        Route::Rotation(id) => rotation(&state, &id, full),
        Route::Compromised(raw) => compromised(&state, req, &raw).await,
        Route::Incidents => incidents(&state, full),
        Route::Incident(id) => incident(&state, &id, false, full),
        Route::IncidentReport(id) => incident(&state, &id, true, full),
    }
}

/// A read answer: the whole body with the token (`full`), else its [`redact`]ed summary.
fn read_json<T: serde::Serialize>(value: &T, full: bool, kind: Redact) -> Response<Body> {
    if full {
        return json(StatusCode::OK, value);
    }
    match serde_json::to_value(value) {
        Ok(mut v) => {
            redact(kind, &mut v);
            json(StatusCode::OK, &v)
        }
        Err(e) => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}"),
        ),
    }
}

/// `GET /metrics`: OpenMetrics when Prometheus asks for it, else the classic text format.
fn metrics(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
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
    // The cached per-secret part is sent without copying it (with gzip the two parts are two
    // members of one gzip stream); plain text is decompressed chunk by chunk as the body goes.
    let gzip = e.gzip;
    let frames = e.into_chunks().map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(StreamBody::new(stream::iter(frames)).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if gzip {
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// `GET /readyz`.
fn readyz(state: &AppState) -> Response<Body> {
    // [ha]: only the leader is ready, so a Service sends the actions to it.
    if let Some(why) = state.metrics.follower() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        );
    }
    let mut problems = state
        .view
        .read()
        .readiness(Instant::now(), &state.pollers());
    // A refused permission makes some feature fail; name it (action and resource).
    problems.extend(
        state
            .metrics
            .denied_permissions()
            .into_iter()
            .map(|p| format!("AWS denied {p}")),
    );
    // An account or region that cannot be read does not make keywarden unready (the others
    // are watched): it is named below the verdict, and in keywarden_account_up.
    let details: String = {
        let view = state.view.read();
        view.accounts_down
            .iter()
            .map(|(id, kind)| {
                let l = state.view.targets().labels(*id);
                format!(
                    "account {} region {}: cannot be read ({kind}); its secrets keep their last status\n",
                    l.account, l.region
                )
            })
            .collect()
    };
    if problems.is_empty() {
        text(StatusCode::OK, format!("ready\n{details}"))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n{details}", problems.join("; ")),
        )
    }
}

/// `GET /secrets`.
fn secrets(state: &AppState, full: bool) -> Response<Body> {
    let view = state.view.read();
    read_json(
        &SecretsBody {
            generated_at: Utc::now().timestamp(),
            secrets: view
                .secrets
                .values()
                .map(|status| {
                    let rotation = view.rotations.get(&status.name);
                    let place = state.view.targets().labels(status.target);
                    SecretEntry {
                        status,
                        account: place.account,
                        region: place.region,
                        rotation,
                        planned: rotation.and_then(|r| r.planned),
                    }
                })
                .collect(),
        },
        full,
        Redact::Secrets,
    )
}

/// `GET /anomalies`.
fn anomalies(state: &AppState, full: bool) -> Response<Body> {
    let view = state.view.read();
    let log = &view.access_log;
    read_json(
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
            per_secret: super::api::per_secret(
                view.access.iter().map(|(s, f)| (s.as_str(), f.anomalies)),
                &log.recent,
            ),
        },
        full,
        Redact::Anomalies,
    )
}

/// `503` of the rotation routes when no rotation core runs.
fn rotation_off() -> Response<Body> {
    error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        "the rotation core is not running",
    )
}

/// `503` of the incident routes when no incident service runs.
fn incidents_off() -> Response<Body> {
    error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        "the incident service is not running",
    )
}

/// How a journaled rotation is announced.
fn rotate_accepted(r: &Rotation) -> RotateAccepted {
    RotateAccepted {
        rotation_id: r.id.clone(),
        secret: r.secret.clone(),
        status: r.state.as_str().to_string(),
        url: format!("/rotations/{}", r.id),
    }
}

/// `POST /rotate/<secret>[?force=true]`: 409 naming the failing pre-flight check unless forced.
async fn rotate(
    state: &AppState,
    req: &Request<Incoming>,
    raw: &str,
    force: bool,
) -> Response<Body> {
    let Some(engine) = &state.rotation else {
        return match guard_action(&state.gate(), req, Action::Rotate, raw, &|_| None) {
            Err(r) => r,
            Ok(_) => rotation_off(),
        };
    };
    let name = match guard_action(&state.gate(), req, Action::Rotate, raw, &|n| {
        engine.secret_name(n)
    }) {
        Ok(label) => label,
        Err(r) => return r,
    };
    match engine.request_guarded(&name, Trigger::Manual, force).await {
        Ok(r) => json(StatusCode::ACCEPTED, &rotate_accepted(&r)),
        Err(RequestError::UnknownSecret(_)) => {
            error_json(StatusCode::NOT_FOUND, format!("unknown secret {name:?}"))
        }
        Err(RequestError::Busy(r)) => json(
            StatusCode::CONFLICT,
            &RotateRefused {
                error: format!("a rotation of {} is already {}", r.secret, r.state.as_str()),
                active: Some(rotate_accepted(&r)),
            },
        ),
        Err(e @ (RequestError::Refused(_) | RequestError::Preflight { .. })) => {
            error_json(StatusCode::CONFLICT, e)
        }
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /rollback/<secret>[?force=true]`.
async fn rollback(
    state: &AppState,
    req: &Request<Incoming>,
    raw: &str,
    force: bool,
) -> Response<Body> {
    let Some(engine) = &state.rotation else {
        return match guard_action(&state.gate(), req, Action::Rollback, raw, &|_| None) {
            Err(r) => r,
            Ok(_) => rotation_off(),
        };
    };
    let name = match guard_action(&state.gate(), req, Action::Rollback, raw, &|n| {
        engine.secret_name(n)
    }) {
        Ok(label) => label,
        Err(r) => return r,
    };
    match engine.rollback(&name, force).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(RollbackError::UnknownSecret(_)) => {
            error_json(StatusCode::NOT_FOUND, format!("unknown secret {name:?}"))
        }
        Err(
            e @ (RollbackError::Refused { .. }
            | RollbackError::Running(_)
            | RollbackError::NothingToRollBack(_)),
        ) => error_json(StatusCode::CONFLICT, e),
        Err(e @ RollbackError::Aws(_)) => error_json(StatusCode::BAD_GATEWAY, e),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /rotations`.
fn rotations(state: &AppState, full: bool) -> Response<Body> {
    let Some(engine) = &state.rotation else {
        return rotation_off();
    };
    match engine.recent(100) {
        Ok(rotations) => read_json(&RotationList { rotations }, full, Redact::Rotations),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /rotations/<id>`.
fn rotation(state: &AppState, id: &str, full: bool) -> Response<Body> {
    let Some(engine) = &state.rotation else {
        return rotation_off();
    };
    match engine.status(id) {
        Ok(Some((rotation, events))) => {
            read_json(&RotationDetail { rotation, events }, full, Redact::Rotation)
        }
        Ok(None) => error_json(StatusCode::NOT_FOUND, format!("no rotation {id:?}")),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /compromised/<secret>`: guard, then at most [`super::guard::MAX_BODY`] bytes of body
/// within `server.body_timeout`, then the incident.
async fn compromised(state: &AppState, req: Request<Incoming>, raw: &str) -> Response<Body> {
    let Some(svc) = &state.incidents else {
        return match guard_action(&state.gate(), &req, Action::Compromised, raw, &|_| None) {
            Err(r) => r,
            Ok(_) => incidents_off(),
        };
    };
    let label = match guard_action(&state.gate(), &req, Action::Compromised, raw, &|n| {
        svc.secret_name(n)
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
    match svc.open(&label, &reason, &reported_by) {
        Ok(Opened::New(inc)) => json(StatusCode::ACCEPTED, &IncidentAccepted::from(&inc)),
        Ok(Opened::Existing(inc)) => json(StatusCode::OK, &IncidentAccepted::from(&inc)),
        Err(e @ OpenError::UnknownSecret(_)) => error_json(StatusCode::NOT_FOUND, e),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /incidents`.
fn incidents(state: &AppState, full: bool) -> Response<Body> {
    let Some(svc) = &state.incidents else {
        return incidents_off();
    };
    match svc.list(200) {
        Ok(list) => read_json(
            &IncidentList {
                incidents: list.iter().map(IncidentSummary::from).collect(),
            },
            full,
            Redact::Incidents,
        ),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /incidents/<id>` and, with `markdown`, `GET /incidents/<id>/report.md` (the report
/// lists principals, IPs and the reason: the token only).
fn incident(state: &AppState, id: &str, markdown: bool, full: bool) -> Response<Body> {
    let Some(svc) = &state.incidents else {
        return incidents_off();
    };
    if markdown && !full {
        let mut r = error_json(
            StatusCode::UNAUTHORIZED,
            "the report needs Authorization: Bearer <admin token>; GET /incidents/<id> without it is the summary",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match svc.get(id) {
        Ok(Some(inc)) if markdown => {
            let mut r = text(StatusCode::OK, crate::incident::report::markdown(&inc));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/markdown; charset=utf-8"),
            );
            r
        }
        Ok(Some(inc)) => read_json(&IncidentDetail::from(&inc), full, Redact::Incident),
        Ok(None) => error_json(StatusCode::NOT_FOUND, "no such incident"),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
