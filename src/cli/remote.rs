//! The CLI side of the daemon's action routes: `keywarden rotate` and `keywarden rollback` (and
//! later `compromised`) send one authenticated request to a running daemon and, for a rotation,
//! follow its status URL, printing each step as it completes.
//!
//! Every answer is read as a type of `http::api`, the same types the server writes. This module
//! must never import the server side of `http` (handlers, state) or `daemon`.
//!
//! The token comes from `KEYWARDEN_ADMIN_TOKEN`; it is sent only in the `Authorization` header
//! and never printed. Reads (`incidents`, following a rotation or an incident) send it too when it
//! is set, because anonymous reads get a summary without reasons, reporters and messages.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::api::{
    CompromiseBody, ErrorBody, IncidentAccepted, IncidentDetail, IncidentProgress, IncidentSummary,
    RollbackDone, RotateAccepted, RotateRefused, RotationDetail, RotationEventLine,
    RotationProgress,
};
use crate::incident::Status;

/// A request that failed before an HTTP answer arrived.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct RemoteError {
    /// What was called.
    pub url: String,
    /// Why it failed.
    pub reason: String,
}

/// One HTTP exchange; returns status and body.
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value), RemoteError> {
    call_with_body(method, url, token, None).await
}

/// How long an ordinary request may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long `POST /rollback` may take: it answers after the rollback hooks ran (restarts).
const ROLLBACK_ANSWER_WITHIN: Duration = Duration::from_secs(60 * 60);

/// One HTTP exchange with an optional JSON body; returns status and body.
pub async fn call_with_body(
    method: &str,
    url: &str,
    token: Option<&str>,
    json: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), RemoteError> {
    call_within(method, url, token, json, ANSWER_WITHIN).await
}

/// One HTTP exchange that may take up to `limit`.
async fn call_within(
    method: &str,
    url: &str,
    token: Option<&str>,
    json: Option<&serde_json::Value>,
    limit: Duration,
) -> Result<(u16, serde_json::Value), RemoteError> {
    let err = |reason: String| RemoteError {
        url: url.to_string(),
        reason,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match json {
        Some(v) => {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(body))
        .map_err(|e| err(format!("invalid request: {e}")))?;
    let resp = tokio::time::timeout(limit, client.request(req))
        .await
        .map_err(|_| {
            err(format!(
                "no answer within {}",
                crate::schedule::format_duration(limit)
            ))
        })?
        .map_err(|e| err(format!("cannot reach the daemon: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| err(format!("broken answer: {e}")))?
        .to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    Ok((status, value))
}

/// Percent-encodes a secret name for a path segment (slashes kept: the daemon accepts them).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/+=@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a JSON answer as the API type `T`; a body of another shape is a broken answer.
fn decode<T: DeserializeOwned>(url: &str, body: &serde_json::Value) -> Result<T, RemoteError> {
    T::deserialize(body).map_err(|e| RemoteError {
        url: url.to_string(),
        reason: format!("unexpected answer ({e}): {body}"),
    })
}

/// The sentence of a refusal: the `error` of an [`ErrorBody`], else the whole body.
fn error_text(v: &serde_json::Value) -> String {
    ErrorBody::deserialize(v)
        .map(|b| b.error)
        .unwrap_or_else(|_| v.to_string())
}

/// `keywarden rotate`: starts a manual rotation and follows it. Returns true on success
/// (finished: AWSCURRENT is the new version).
pub async fn rotate(
    server: &str,
    token: &str,
    secret: &str,
    force: bool,
) -> Result<bool, RemoteError> {
    let mut url = format!("{server}/rotate/{}", encode_segment(secret));
    if force {
        url.push_str("?force=true");
    }
    let (status, body) = call("POST", &url, Some(token)).await?;
    if status != 202 {
        eprintln!(
            "keywarden: rotation of {secret} refused ({status}): {}",
            error_text(&body)
        );
        if let Ok(RotateRefused {
            active: Some(active),
            ..
        }) = RotateRefused::deserialize(&body)
        {
            eprintln!(
                "keywarden: the active rotation is at {server}{}",
                active.url
            );
        }
        return Ok(false);
    }
    let accepted: RotateAccepted = decode(&url, &body)?;
    println!("rotation {} of {secret} accepted", accepted.rotation_id);
    follow(&format!("{server}{}", accepted.url), Some(token)).await
}

/// GETs a status URL. Connection failures are retried every 500 ms, up to `max_failures` in a
/// row: the daemon may be restarting, and it resumes what it was doing. `Ok(None)` when the daemon
/// answered with something other than 200 (reported on stderr).
async fn get_status(
    url: &str,
    token: Option<&str>,
    max_failures: u32,
) -> Result<Option<serde_json::Value>, RemoteError> {
    let mut failures = 0;
    loop {
        match call("GET", url, token).await {
            Ok((200, body)) => return Ok(Some(body)),
            Ok((status, body)) => {
                eprintln!("keywarden: {url}: {status}: {}", error_text(&body));
                return Ok(None);
            }
            Err(e) if failures < max_failures => {
                failures += 1;
                eprintln!("keywarden: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints each new event of a rotation until it leaves `running` (a guarded rotation: until its
/// watch is over or it is rolled back); true when it finished. With
/// the token the events carry their messages (anonymous reads get a summary).
pub async fn follow(status_url: &str, token: Option<&str>) -> Result<bool, RemoteError> {
    let mut printed = 0usize;
    let mut said_watching = false;
    loop {
        let Some(body) = get_status(status_url, token, 20).await? else {
            return Ok(false);
        };
        let detail: RotationDetail<RotationProgress, RotationEventLine> =
            decode(status_url, &body)?;
        for e in detail.events.iter().skip(printed) {
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp(e.at, 0)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            println!(
                "{at}  {:<9} {:<8} {}",
                e.step,
                e.outcome,
                e.message.as_deref().unwrap_or("")
            );
        }
        printed = detail.events.len().max(printed);
        match followed(&detail.rotation) {
            Followed::Running => {}
            Followed::Watching(line) => {
                if !said_watching {
                    println!("{line}");
                    said_watching = true;
                }
            }
            Followed::Finished(line) => {
                println!("{line}");
                return Ok(true);
            }
            Followed::Ended(line) => {
                eprintln!("keywarden: {line}");
                return Ok(false);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a followed rotation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Between create and finish.
    Running,
    /// Finished, and its `verify` checks are being watched: it may still be rolled back.
    Watching(String),
    /// Finished (in grace with its watch over, or finalized).
    Finished(String),
    /// Failed or rolled back: the sentence says how (and by whom, with the check and its last
    /// value for an automatic rollback).
    Ended(String),
}

fn time_text(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// What a rotation's status means for `keywarden rotate` and any CLI view of it. Pure.
pub fn followed(rotation: &RotationProgress) -> Followed {
    let d = &rotation.detail;
    match rotation.state.as_str() {
        "running" => Followed::Running,
        "grace" if d.verify.as_ref().is_some_and(|v| !v.done) => Followed::Watching(format!(
            "finished: AWSCURRENT is the new version; watching its verify checks until {} (a failing check rolls it back)",
            time_text(d.verify.as_ref().and_then(|v| v.watch_until))
        )),
        "grace" => Followed::Finished(format!(
            "finished: AWSCURRENT is the new version; finalize after {}",
            time_text(d.finalize_after)
        )),
        "done" => Followed::Finished("finished and finalized".to_string()),
        "rolled_back" => {
            let by = d.rolled_back_by.as_deref().unwrap_or("operator");
            let check = d
                .rolled_back_check
                .as_ref()
                .map(|c| format!(": check {} failed (last value: {})", c.check, c.value))
                .unwrap_or_default();
            Followed::Ended(format!(
                "rotation rolled_back (rolled_back_by = {by}){check}; AWSCURRENT is the previous version again"
            ))
        }
        other => Followed::Ended(format!(
            "rotation {other}: {}",
            rotation.error.as_deref().unwrap_or("")
        )),
    }
}

/// `keywarden rollback`.
pub async fn rollback(
    server: &str,
    token: &str,
    secret: &str,
    force: bool,
) -> Result<bool, RemoteError> {
    let mut url = format!("{server}/rollback/{}", encode_segment(secret));
    if force {
        url.push_str("?force=true");
    }
    let (status, body) =
        call_within("POST", &url, Some(token), None, ROLLBACK_ANSWER_WITHIN).await?;
    if status == 200 {
        let done: RollbackDone = decode(&url, &body)?;
        println!(
            "rolled back {secret}: AWSCURRENT is version {} again (was {})",
            done.to_version, done.from_version
        );
        if let Some(r) = done.rotation_id {
            println!("the finalize of rotation {r} was cancelled");
        }
        let n = done.hooks.len();
        for (i, h) in done.hooks.iter().enumerate() {
            match &h.error {
                None => println!("rollback hook {}/{n} ok: {}", i + 1, h.command),
                Some(e) => println!("rollback hook {}/{n} failed: {e}", i + 1),
            }
        }
        if done.hooks.iter().any(|h| !h.ok) {
            eprintln!(
                "keywarden: {secret} was rolled back, but a rollback hook failed (see above); AWSCURRENT stays rolled back"
            );
            return Ok(false);
        }
        Ok(true)
    } else {
        eprintln!(
            "keywarden: rollback of {secret} refused ({status}): {}",
            error_text(&body)
        );
        Ok(false)
    }
}

/// `keywarden compromised`: opens (or joins) the incident and follows it step by step. Returns
/// true when it resolved.
pub async fn compromised(
    server: &str,
    token: &str,
    secret: &str,
    reason: &str,
    reported_by: &str,
) -> Result<bool, RemoteError> {
    let url = format!("{server}/compromised/{}", encode_segment(secret));
    let request = CompromiseBody {
        reason: Some(reason.to_string()),
        reported_by: Some(reported_by.to_string()),
    };
    let request = serde_json::to_value(&request).map_err(|e| RemoteError {
        url: url.clone(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    let (status, body) = call_with_body("POST", &url, Some(token), Some(&request)).await?;
    if status != 202 && status != 200 {
        eprintln!(
            "keywarden: compromise of {secret} refused ({status}): {}",
            error_text(&body)
        );
        return Ok(false);
    }
    let accepted: IncidentAccepted = decode(&url, &body)?;
    let id = &accepted.incident_id;
    if status == 202 {
        println!("incident {id} opened for {secret}");
    } else {
        println!("incident {id} on {secret} is already open: following it (nothing new started)");
    }
    follow_incident(server, &format!("{server}{}", accepted.url), Some(token)).await
}

/// Prints each step of an incident as it ends, then the report path; true when resolved.
pub async fn follow_incident(
    server: &str,
    status_url: &str,
    token: Option<&str>,
) -> Result<bool, RemoteError> {
    let mut shown = std::collections::HashSet::new();
    loop {
        let Some(body) = get_status(status_url, token, 60).await? else {
            return Ok(false);
        };
        let detail: IncidentDetail<IncidentProgress> = decode(status_url, &body)?;
        let inc = detail.incident;
        for s in &inc.steps {
            if !s.state.ended() || !shown.insert(s.name.clone()) {
                continue;
            }
            let at = s
                .ended_at_ms
                .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            println!(
                "{at}  {:<7} {:<8} {}",
                s.name,
                s.state.as_str(),
                s.message.as_deref().unwrap_or("")
            );
        }
        if inc.status != Status::Open {
            let id = &inc.incident_id;
            if let Some(p) = &inc.report_md {
                println!("report: {p}");
            }
            println!("report: {server}/incidents/{id}/report.md");
            if inc.status == Status::Resolved {
                println!("incident {id} resolved; the report lists what a human must still do");
                return Ok(true);
            }
            eprintln!(
                "keywarden: incident {id} {}: see the failed steps above and the report",
                inc.status.as_str()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `keywarden incidents`: the daemon's incidents, newest first; with the token they carry
/// reason and reporter (anonymous reads get a summary).
pub async fn incidents(
    server: &str,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value), RemoteError> {
    call("GET", &format!("{server}/incidents"), token).await
}

/// The incidents of a `GET /incidents` answer; an answer of another shape is an error naming it.
pub fn incident_list(
    server: &str,
    body: serde_json::Value,
) -> Result<Vec<IncidentSummary>, RemoteError> {
    crate::http::api::IncidentList::deserialize(body)
        .map(|l| l.incidents)
        .map_err(|e| RemoteError {
            url: format!("{server}/incidents"),
            reason: format!("unexpected answer: {e}"),
        })
}

/// The table of `keywarden incidents`.
pub fn render_incidents(list: &[IncidentSummary]) -> String {
    let mut rows = vec![[
        "INCIDENT".to_string(),
        "SECRET".into(),
        "STATUS".into(),
        "OPENED".into(),
        "CLOSED".into(),
        "FAILED STEPS".into(),
        "REASON".into(),
    ]];
    let t = |v: Option<i64>| {
        v.and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for i in list.iter().cloned() {
        let failed = i.failed_steps.join(",");
        rows.push([
            i.incident_id,
            i.secret,
            i.status.as_str().to_string(),
            t(Some(i.opened_at)),
            t(i.closed_at),
            if failed.is_empty() {
                "-".into()
            } else {
                failed
            },
            i.reason
                .replace(['\n', '\r'], " ")
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(json: serde_json::Value) -> RotationProgress {
        RotationProgress::deserialize(&json).unwrap()
    }

    #[test]
    fn a_rolled_back_rotation_shows_who_and_the_check() {
        // The journal's `detail` as GET /rotations/<id> sends it.
        let auto = progress(serde_json::json!({
            "state": "rolled_back",
            "error": null,
            "detail": {
                "strategy": "random",
                "rolled_back_by": "verify",
                "rolled_back_check": {"check": "auth-failures", "value": "0.66 (max 0)"},
                "verify": {"watch_until": 1_700_000_100, "done": false, "rounds": 2}
            }
        }));
        let Followed::Ended(line) = followed(&auto) else {
            panic!("{:?}", followed(&auto));
        };
        assert!(
            line.contains("rolled_back_by = verify")
                && line.contains("check auth-failures")
                && line.contains("last value: 0.66 (max 0)"),
            "{line}"
        );
        let by_hand = progress(serde_json::json!({
            "state": "rolled_back",
            "detail": {"rolled_back_by": "operator"}
        }));
        assert!(
            matches!(followed(&by_hand), Followed::Ended(l) if l.contains("rolled_back_by = operator") && !l.contains("check"))
        );
    }

    #[test]
    fn a_guarded_rotation_is_followed_through_its_watch() {
        let watching = progress(serde_json::json!({
            "state": "grace",
            "detail": {"finalize_after": 1_700_000_200, "verify": {"watch_until": 1_700_000_100, "done": false}}
        }));
        assert!(
            matches!(followed(&watching), Followed::Watching(l) if l.contains("2023-11-14T22:15:00"))
        );
        let watched = progress(serde_json::json!({
            "state": "grace",
            "detail": {"finalize_after": 1_700_000_200, "verify": {"watch_until": 1_700_000_100, "done": true}}
        }));
        assert!(
            matches!(followed(&watched), Followed::Finished(l) if l.contains("finalize after"))
        );
        let plain = progress(serde_json::json!({"state": "grace", "detail": {}}));
        assert!(matches!(followed(&plain), Followed::Finished(_)));
        let failed =
            progress(serde_json::json!({"state": "failed", "error": "boom", "detail": {}}));
        assert_eq!(
            followed(&failed),
            Followed::Ended("rotation failed: boom".into())
        );
        let running = progress(serde_json::json!({"state": "running"}));
        assert_eq!(followed(&running), Followed::Running);
    }
}
