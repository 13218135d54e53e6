//! The CLI side of the daemon's action routes: `keywarden rotate` and `keywarden rollback` (and
//! later `compromised`) send one authenticated request to a running daemon and, for a rotation,
//! follow its status URL, printing each step as it completes.
//!
//! The token comes from `KEYWARDEN_ADMIN_TOKEN`; it is sent only in the `Authorization` header
//! and never printed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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

/// One HTTP exchange with an optional JSON body; returns status and body.
pub async fn call_with_body(
    method: &str,
    url: &str,
    token: Option<&str>,
    json: Option<&serde_json::Value>,
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
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| err("no answer within 30 s".into()))?
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

fn error_text(v: &serde_json::Value) -> String {
    v.get("error")
        .and_then(|e| e.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// `keywarden rotate`: starts a manual rotation and follows it. Returns true on success
/// (finished: AWSCURRENT is the new version).
pub async fn rotate(server: &str, token: &str, secret: &str) -> Result<bool, RemoteError> {
    let url = format!("{server}/rotate/{}", encode_segment(secret));
    let (status, body) = call("POST", &url, Some(token)).await?;
    if status != 202 {
        eprintln!(
            "keywarden: rotation of {secret} refused ({status}): {}",
            error_text(&body)
        );
        if let Some(u) = body.get("url").and_then(|u| u.as_str()) {
            eprintln!("keywarden: the active rotation is at {server}{u}");
        }
        return Ok(false);
    }
    let id = body
        .get("rotation_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let status_url = format!(
        "{server}{}",
        body.get("url").and_then(|u| u.as_str()).unwrap_or_default()
    );
    println!("rotation {id} of {secret} accepted");
    follow(&status_url).await
}

/// GETs a status URL. Connection failures are retried every 500 ms, up to `max_failures` in a
/// row: the daemon may be restarting, and it resumes what it was doing. `Ok(None)` when the daemon
/// answered with something other than 200 (reported on stderr).
async fn get_status(
    url: &str,
    max_failures: u32,
) -> Result<Option<serde_json::Value>, RemoteError> {
    let mut failures = 0;
    loop {
        match call("GET", url, None).await {
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

/// Prints each new event of a rotation until it leaves `running`; true when it finished.
pub async fn follow(status_url: &str) -> Result<bool, RemoteError> {
    let mut printed = 0usize;
    loop {
        let Some(body) = get_status(status_url, 20).await? else {
            return Ok(false);
        };
        let events = body
            .get("events")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for e in events.iter().skip(printed) {
            let at = e.get("at").and_then(|v| v.as_i64()).unwrap_or(0);
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp(at, 0)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            println!(
                "{at}  {:<9} {:<8} {}",
                e.get("step").and_then(|v| v.as_str()).unwrap_or(""),
                e.get("outcome").and_then(|v| v.as_str()).unwrap_or(""),
                e.get("message").and_then(|v| v.as_str()).unwrap_or("")
            );
        }
        printed = events.len().max(printed);
        match body.get("state").and_then(|s| s.as_str()).unwrap_or("") {
            "running" => {}
            "grace" => {
                let after = body
                    .pointer("/detail/finalize_after")
                    .and_then(|v| v.as_i64())
                    .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                println!("finished: AWSCURRENT is the new version; finalize after {after}");
                return Ok(true);
            }
            "done" => {
                println!("finished and finalized");
                return Ok(true);
            }
            other => {
                let err = body.get("error").and_then(|v| v.as_str()).unwrap_or("");
                eprintln!("keywarden: rotation {other}: {err}");
                return Ok(false);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let (status, body) = call("POST", &url, Some(token)).await?;
    if status == 200 {
        println!(
            "rolled back {secret}: AWSCURRENT is version {} again (was {})",
            body.get("to_version")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            body.get("from_version")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        );
        if let Some(r) = body.get("rotation_id").and_then(|v| v.as_str()) {
            println!("the finalize of rotation {r} was cancelled");
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
    let body = serde_json::json!({"reason": reason, "reported_by": reported_by});
    let (status, body) = call_with_body("POST", &url, Some(token), Some(&body)).await?;
    let id = body
        .get("incident_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    match status {
        202 => println!("incident {id} opened for {secret}"),
        200 => println!(
            "incident {id} on {secret} is already open: following it (nothing new started)"
        ),
        _ => {
            eprintln!(
                "keywarden: compromise of {secret} refused ({status}): {}",
                error_text(&body)
            );
            return Ok(false);
        }
    }
    let status_url = format!(
        "{server}{}",
        body.get("url").and_then(|u| u.as_str()).unwrap_or_default()
    );
    follow_incident(server, &status_url).await
}

/// Prints each step of an incident as it ends, then the report path; true when resolved.
pub async fn follow_incident(server: &str, status_url: &str) -> Result<bool, RemoteError> {
    let mut shown = std::collections::HashSet::new();
    loop {
        let Some(body) = get_status(status_url, 60).await? else {
            return Ok(false);
        };
        for s in body
            .get("steps")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let name = s.get("name").and_then(|v| v.as_str()).unwrap_or("");
            let state = s.get("state").and_then(|v| v.as_str()).unwrap_or("");
            if !matches!(state, "done" | "skipped" | "failed") || !shown.insert(name.to_string()) {
                continue;
            }
            let at = s
                .get("ended_at_ms")
                .and_then(|v| v.as_i64())
                .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            println!(
                "{at}  {name:<7} {state:<8} {}",
                s.get("message").and_then(|v| v.as_str()).unwrap_or("")
            );
        }
        let state = body.get("status").and_then(|s| s.as_str()).unwrap_or("");
        if state != "open" {
            let id = body
                .get("incident_id")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if let Some(p) = body.get("report_md").and_then(|v| v.as_str()) {
                println!("report: {p}");
            }
            println!("report: {server}/incidents/{id}/report.md");
            if state == "resolved" {
                println!("incident {id} resolved; the report lists what a human must still do");
                return Ok(true);
            }
            eprintln!(
                "keywarden: incident {id} {state}: see the failed steps above and the report"
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `keywarden incidents`: the daemon's incidents, newest first.
pub async fn incidents(server: &str) -> Result<(u16, serde_json::Value), RemoteError> {
    call("GET", &format!("{server}/incidents"), None).await
}

/// The table of `keywarden incidents`.
pub fn render_incidents(list: &[serde_json::Value]) -> String {
    let mut rows = vec![[
        "INCIDENT".to_string(),
        "SECRET".into(),
        "STATUS".into(),
        "OPENED".into(),
        "CLOSED".into(),
        "FAILED STEPS".into(),
        "REASON".into(),
    ]];
    let t = |v: Option<&serde_json::Value>| {
        v.and_then(|v| v.as_i64())
            .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for i in list {
        let s = |k: &str| i.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let failed = i
            .get("failed_steps")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push([
            s("incident_id"),
            s("secret"),
            s("status"),
            t(i.get("opened_at")),
            t(i.get("closed_at")),
            if failed.is_empty() {
                "-".into()
            } else {
                failed
            },
            s("reason")
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
