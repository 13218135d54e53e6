//! Guarded rotation (SPEC §12): the `verify = [...]` checks of a secret, run once before a
//! rotation starts (pre-flight) and every `[verify] every` for `[verify] watch` after finish.
//!
//! Pure part (no I/O, no clock): judging one observation ([`judge_http`], [`judge_prometheus`],
//! [`prometheus_value`]) and what a round of results means for the watch ([`after_round`]: go
//! on, done, or roll back after `failures` consecutive failures of one check). Thin I/O part
//! ([`run_check`]): a GET with the hyper client, an instant query against Prometheus'
//! `/api/v1/query`, or a command through the hook runner ([`super::hooks::run_one`]: no shell,
//! and its environment never holds a value). HTTP header values come from environment variables
//! named in the configuration, never from the file.
//!
//! The watch state lives in the rotation's journal `detail` ([`VerifyState`]), so a kill -9
//! during the watch resumes it where it was; finalize never runs before the watch is `done`.
//! A result's `value` is an observation (an HTTP status, a JSON value at a pointer, a query's
//! number, an exit status): never a secret value.
//!
//! It must never import the HTTP server, the CLI or the incident workflow.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{
    CheckKind, CheckSpec, HookSpec, HookStage, PromLimit, SecretSpec, VerifyConfig,
};

use super::hooks::{self, HookEnv};

/// Bytes of an HTTP check's body read at most.
const MAX_BODY: usize = 1 << 20;
/// Characters of an observed value kept in the journal and messages.
const VALUE_MAX: usize = 200;

/// A check that failed, with the value it last observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFailure {
    /// The check's name.
    pub check: String,
    /// What it observed (never a secret value).
    pub value: String,
}

/// The checks' durable state in a rotation's `detail`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyState {
    /// Each `max_ratio` check's value measured just before the rotation started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baselines: BTreeMap<String, f64>,
    /// The baselines were measured (by the pre-flight, or before create when it did not run).
    #[serde(default)]
    pub measured: bool,
    /// When the watch ends (epoch seconds); set at finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_until: Option<i64>,
    /// Consecutive failures of each check that failed its last run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consecutive: BTreeMap<String, u32>,
    /// Rounds run so far.
    #[serde(default)]
    pub rounds: u32,
    /// When the last round ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_round_at: Option<i64>,
    /// Whether every check passed in the last round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_round_ok: Option<bool>,
    /// The first check that failed in the last round that had a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<CheckFailure>,
    /// The watch is over (and, except for a compromise, its last round passed).
    #[serde(default)]
    pub done: bool,
}

/// The result of one run of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The check's name.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it observed.
    pub value: String,
    /// A `prometheus` check's number (pre-flight keeps it as the baseline).
    pub number: Option<f64>,
}

/// What the watch does after a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Run another round after `every`.
    Continue,
    /// The watch is over: finalize may run.
    Done,
    /// A check failed `failures` times in a row: roll back.
    RollBack(CheckFailure),
}

/// Whether finalize must still wait for the watch.
pub fn watch_pending(state: Option<&VerifyState>) -> bool {
    state.is_some_and(|v| !v.done)
}

/// Applies one round's `results` at `now` to `state` and says what follows. A compromise
/// rotation never rolls back (that would restore the leaked value): its watch ends at
/// `watch_until` whatever the last round gave. Otherwise the watch ends once `watch_until` has
/// passed and the last round passed; a failing check past `watch_until` keeps it going until it
/// passes or reaches `failures` in a row. Pure.
pub fn after_round(
    state: &mut VerifyState,
    results: &[CheckResult],
    failures: u32,
    now: i64,
    compromise: bool,
) -> Next {
    state.rounds = state.rounds.saturating_add(1);
    state.last_round_at = Some(now);
    let mut worst: Option<(u32, CheckFailure)> = None;
    for r in results {
        if r.ok {
            state.consecutive.remove(&r.check);
            continue;
        }
        let n = state.consecutive.entry(r.check.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let f = CheckFailure {
            check: r.check.clone(),
            value: r.value.clone(),
        };
        if worst.as_ref().is_none_or(|(m, _)| *n > *m) {
            worst = Some((*n, f));
        }
    }
    state.last_round_ok = Some(worst.is_none());
    if let Some((n, f)) = worst {
        state.failing = Some(f.clone());
        if !compromise && n >= failures.max(1) {
            return Next::RollBack(f);
        }
    }
    let over = state.watch_until.is_some_and(|t| now >= t);
    if over && (compromise || state.last_round_ok == Some(true)) {
        state.done = true;
        return Next::Done;
    }
    Next::Continue
}

/// A fingerprint of what the checks and rotation of `spec` are configured to do: after an
/// automatic rollback, scheduled rotations resume once it changes.
pub fn config_digest(spec: &SecretSpec) -> String {
    let text = format!("{:?}|{:?}|{:?}", spec.rotation, spec.verify, spec.hooks);
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cut(text: &str) -> String {
    if text.chars().count() <= VALUE_MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(VALUE_MAX).collect();
        s.push('…');
        s
    }
}

/// Judges an HTTP check's answer. Pure.
pub fn judge_http(
    status: u16,
    body: &[u8],
    expect_status: u16,
    pointer: Option<&str>,
    equals: Option<&serde_json::Value>,
) -> (bool, String) {
    if status != expect_status {
        return (false, format!("status {status} (expected {expect_status})"));
    }
    let (Some(pointer), Some(want)) = (pointer, equals) else {
        return (true, format!("status {status}"));
    };
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return (false, format!("status {status}, body is not JSON: {e}")),
    };
    match json.pointer(pointer) {
        None => (false, format!("status {status}, nothing at {pointer}")),
        Some(got) if got == want => (true, format!("{pointer} = {}", cut(&got.to_string()))),
        Some(got) => (
            false,
            format!("{pointer} = {} (expected {want})", cut(&got.to_string())),
        ),
    }
}

/// The number of a Prometheus `/api/v1/query` answer: a scalar, or the largest sample of a
/// vector; an empty vector is 0 (as an alert rule on it would not fire). Pure.
pub fn prometheus_value(body: &[u8]) -> Result<f64, String> {
    #[derive(Deserialize)]
    struct Answer {
        status: String,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "resultType")]
        result_type: String,
        result: serde_json::Value,
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if a.status != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            a.status,
            a.error.unwrap_or_default()
        ));
    }
    let data = a.data.ok_or("Prometheus answered without data")?;
    let sample = |v: &serde_json::Value| -> Result<f64, String> {
        v.get(1)
            .and_then(|s| s.as_str())
            .ok_or_else(|| "a sample without a value".to_string())?
            .parse::<f64>()
            .map_err(|e| format!("a sample that is not a number: {e}"))
    };
    match data.result_type.as_str() {
        "scalar" => sample(&data.result),
        "vector" => {
            let series = data
                .result
                .as_array()
                .ok_or("a vector that is not a list")?;
            let mut max: Option<f64> = None;
            for s in series {
                let v = sample(s.get("value").unwrap_or(&serde_json::Value::Null))?;
                max = Some(max.map_or(v, |m: f64| m.max(v)));
            }
            Ok(max.unwrap_or(0.0))
        }
        other => Err(format!(
            "a {other} answer: expected an instant vector or a scalar"
        )),
    }
}

/// Judges a Prometheus check's value against its limit; a `max_ratio` check without a
/// baseline (the pre-flight itself) passes and its value becomes the baseline. With a baseline
/// of 0 the value must stay 0. Pure.
pub fn judge_prometheus(value: f64, limit: PromLimit, baseline: Option<f64>) -> (bool, String) {
    if value.is_nan() {
        return (false, "NaN".to_string());
    }
    match limit {
        PromLimit::Max(max) => (value <= max, format!("{value} (max {max})")),
        PromLimit::MaxRatio(r) => match baseline {
            None => (true, format!("{value} (baseline)")),
            Some(b) => (
                value <= r * b,
                format!("{value} (max {} = {r} × baseline {b})", r * b),
            ),
        },
    }
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters stay).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One GET: the status and up to [`MAX_BODY`] bytes of body.
async fn get(
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    // https verified against the system trust store (rustls-native-certs: SSL_CERT_FILE and
    // SSL_CERT_DIR are honoured), plain http as written.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut req = hyper::Request::builder().method("GET").uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
}

/// Where a check runs: the names a command check gets in its environment.
#[derive(Debug, Clone, Copy)]
pub struct CheckEnv<'a> {
    /// The inventory name.
    pub secret: &'a str,
    /// The Secrets Manager id.
    pub secret_id: &'a str,
    /// The rotation's version (or AWSCURRENT's, before one started).
    pub version_id: &'a str,
    /// The rotation id, if one exists yet.
    pub rotation_id: &'a str,
    /// The trigger word.
    pub trigger: &'a str,
    /// `preflight` or `verify`.
    pub step: &'a str,
    /// The environment variable commands must not inherit (the admin token's).
    pub hide_env: Option<&'a str>,
}

/// Runs one check once.
pub async fn run_check(
    check: &CheckSpec,
    cfg: &VerifyConfig,
    baseline: Option<f64>,
    env: CheckEnv<'_>,
) -> CheckResult {
    let result = |ok: bool, value: String, number: Option<f64>| CheckResult {
        check: check.name.clone(),
        ok,
        value: cut(&value),
        number,
    };
    match &check.kind {
        CheckKind::Http {
            url,
            expect_status,
            json_pointer,
            equals,
            headers,
        } => {
            let mut values = Vec::with_capacity(headers.len());
            for (name, var) in headers {
                match std::env::var(var) {
                    Ok(v) => values.push((name.clone(), v)),
                    Err(_) => {
                        return result(
                            false,
                            format!(
                                "header {name}: environment variable {var} is not set (header values come from environment variables, never from the configuration)"
                            ),
                            None,
                        );
                    }
                }
            }
            match get(url, &values, check.timeout).await {
                Ok((status, body)) => {
                    let (ok, v) = judge_http(
                        status,
                        &body,
                        *expect_status,
                        json_pointer.as_deref(),
                        equals.as_ref(),
                    );
                    result(ok, v, None)
                }
                Err(e) => result(false, e, None),
            }
        }
        CheckKind::Prometheus { query, limit } => {
            let Some(base) = &cfg.prometheus_url else {
                return result(false, "[verify] prometheus_url is not set".into(), None);
            };
            let mut headers = Vec::new();
            if let Some(file) = &cfg.prometheus_token_file {
                match std::fs::read_to_string(file) {
                    Ok(t) => {
                        headers.push(("authorization".to_string(), format!("Bearer {}", t.trim())))
                    }
                    Err(e) => {
                        return result(
                            false,
                            format!("cannot read prometheus_token_file {}: {e}", file.display()),
                            None,
                        );
                    }
                }
            }
            let url = format!("{base}/api/v1/query?query={}", encode_query(query));
            match get(&url, &headers, check.timeout).await {
                Ok((200, body)) => match prometheus_value(&body) {
                    Ok(v) => {
                        let (ok, text) = judge_prometheus(v, *limit, baseline);
                        result(ok, text, Some(v))
                    }
                    Err(e) => result(false, e, None),
                },
                Ok((status, body)) => result(
                    false,
                    format!(
                        "Prometheus answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ),
                    None,
                ),
                Err(e) => result(false, e, None),
            }
        }
        CheckKind::Command { argv } => {
            let hook = HookSpec {
                on: HookStage::Test,
                command: argv.clone(),
                timeout: check.timeout,
            };
            let henv = HookEnv {
                secret: env.secret,
                secret_id: env.secret_id,
                version_id: env.version_id,
                previous_version_id: None,
                step: env.step,
                trigger: env.trigger,
                rotation_id: env.rotation_id,
            };
            match hooks::run_one(&hook, henv, env.hide_env, &[]).await {
                Ok(()) => result(true, "exit 0".into(), None),
                Err(e) => result(false, command_value(&e), None),
            }
        }
    }
}

/// A failed command check's value, in a check's words: how it ended, never the command's path
/// (it shows in `/secrets`, incidents and alerts).
fn command_value(e: &hooks::HookError) -> String {
    match e {
        hooks::HookError::Spawn { reason, .. } => format!("could not start: {reason}"),
        hooks::HookError::Failed { status, .. } => status.clone(),
        hooks::HookError::TimedOut { seconds, .. } => format!("timed out after {seconds}s"),
    }
}

/// Runs every check of `checks` once, in order.
pub async fn run_all(
    checks: &[CheckSpec],
    cfg: &VerifyConfig,
    baselines: &BTreeMap<String, f64>,
    env: CheckEnv<'_>,
) -> Vec<CheckResult> {
    let mut out = Vec::with_capacity(checks.len());
    for c in checks {
        out.push(run_check(c, cfg, baselines.get(&c.name).copied(), env).await);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_check_reads_as_a_check_not_a_hook() {
        let failed = hooks::HookError::Failed {
            command: "/opt/venv/bin/python".into(),
            status: "exit status: 1".into(),
        };
        assert_eq!(command_value(&failed), "exit status: 1");
        let slow = hooks::HookError::TimedOut {
            command: "/opt/check".into(),
            seconds: 5,
        };
        assert_eq!(command_value(&slow), "timed out after 5s");
    }

    fn r(check: &str, ok: bool) -> CheckResult {
        CheckResult {
            check: check.into(),
            ok,
            value: if ok { "ok".into() } else { "status 503".into() },
            number: None,
        }
    }

    #[test]
    fn http_status_and_pointer() {
        let body = br#"{"checks":{"database":"ok"},"valid":true}"#;
        let ok = serde_json::json!("ok");
        assert!(judge_http(200, body, 200, Some("/checks/database"), Some(&ok)).0);
        let (pass, v) = judge_http(503, body, 200, None, None);
        assert!(!pass);
        assert_eq!(v, "status 503 (expected 200)");
        let down = br#"{"checks":{"database":"down"}}"#;
        let (pass, v) = judge_http(200, down, 200, Some("/checks/database"), Some(&ok));
        assert!(!pass);
        assert!(v.contains("\"down\""), "{v}");
        assert!(!judge_http(200, b"<html>", 200, Some("/valid"), Some(&ok)).0);
        assert!(!judge_http(200, body, 200, Some("/nope"), Some(&ok)).0);
        // RFC 6901 escapes: ~1 is '/', ~0 is '~'.
        let esc = br#"{"a/b":{"m~n":1}}"#;
        assert!(
            judge_http(
                200,
                esc,
                200,
                Some("/a~1b/m~0n"),
                Some(&serde_json::json!(1))
            )
            .0
        );
    }

    #[test]
    fn prometheus_answers() {
        let vec = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2.5"]},{"metric":{},"value":[1,"7"]}]}}"#;
        assert_eq!(prometheus_value(vec), Ok(7.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(prometheus_value(empty), Ok(0.0));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(prometheus_value(scalar), Ok(3.0));
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(prometheus_value(err).unwrap_err().contains("parse error"));
        assert!(judge_prometheus(10.0, PromLimit::Max(10.0), None).0);
        assert!(!judge_prometheus(10.5, PromLimit::Max(10.0), None).0);
        assert!(judge_prometheus(5.0, PromLimit::MaxRatio(3.0), None).0);
        assert!(judge_prometheus(5.0, PromLimit::MaxRatio(3.0), Some(2.0)).0);
        assert!(!judge_prometheus(7.0, PromLimit::MaxRatio(3.0), Some(2.0)).0);
        assert!(!judge_prometheus(0.1, PromLimit::MaxRatio(3.0), Some(0.0)).0);
        assert!(!judge_prometheus(f64::NAN, PromLimit::Max(1.0), None).0);
        assert_eq!(
            encode_query("rate(a[1m]) > 1"),
            "rate%28a%5B1m%5D%29%20%3E%201"
        );
    }

    #[test]
    fn rounds_roll_back_after_consecutive_failures() {
        let mut s = VerifyState {
            watch_until: Some(100),
            ..VerifyState::default()
        };
        assert_eq!(
            after_round(&mut s, &[r("a", false), r("b", true)], 2, 10, false),
            Next::Continue
        );
        // A pass in between resets the count.
        assert_eq!(
            after_round(&mut s, &[r("a", true), r("b", true)], 2, 20, false),
            Next::Continue
        );
        assert_eq!(
            after_round(&mut s, &[r("a", false), r("b", true)], 2, 30, false),
            Next::Continue
        );
        assert_eq!(s.consecutive.get("a"), Some(&1));
        let next = after_round(&mut s, &[r("a", false), r("b", false)], 2, 40, false);
        assert_eq!(
            next,
            Next::RollBack(CheckFailure {
                check: "a".into(),
                value: "status 503".into()
            })
        );
        assert_eq!(s.rounds, 4);
    }

    #[test]
    fn the_watch_ends_on_a_passing_round_after_its_time() {
        let mut s = VerifyState {
            watch_until: Some(100),
            ..VerifyState::default()
        };
        assert_eq!(
            after_round(&mut s, &[r("a", true)], 2, 50, false),
            Next::Continue
        );
        // Past the watch with a failing round: keep going.
        assert_eq!(
            after_round(&mut s, &[r("a", false)], 2, 100, false),
            Next::Continue
        );
        assert!(watch_pending(Some(&s)));
        assert_eq!(
            after_round(&mut s, &[r("a", true)], 2, 110, false),
            Next::Done
        );
        assert!(!watch_pending(Some(&s)));
        assert!(!watch_pending(None));
    }

    #[test]
    fn a_compromise_never_rolls_back() {
        let mut s = VerifyState {
            watch_until: Some(100),
            ..VerifyState::default()
        };
        for t in [10, 20, 30] {
            assert_eq!(
                after_round(&mut s, &[r("a", false)], 2, t, true),
                Next::Continue
            );
        }
        assert_eq!(s.failing.as_ref().map(|f| f.check.as_str()), Some("a"));
        assert_eq!(
            after_round(&mut s, &[r("a", false)], 2, 100, true),
            Next::Done
        );
    }
}
