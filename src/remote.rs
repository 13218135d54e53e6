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
    let err = |reason: String| RemoteError {
        url: url.to_string(),
        reason,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
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

/// Prints each new event of a rotation until it leaves `running`; true when it finished.
pub async fn follow(status_url: &str) -> Result<bool, RemoteError> {
    let mut printed = 0usize;
    let mut failures = 0;
    loop {
        let (status, body) = match call("GET", status_url, None).await {
            Ok(r) => r,
            Err(e) if failures < 20 => {
                // The daemon may be restarting: it resumes the rotation; keep following.
                failures += 1;
                eprintln!("keywarden: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        failures = 0;
        if status != 200 {
            eprintln!("keywarden: {status_url}: {status}: {}", error_text(&body));
            return Ok(false);
        }
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
