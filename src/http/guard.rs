//! The checks in front of the action routes: no credential in the URL, the bearer token
//! (constant-time) behind a per-peer limit of failed authentications, the body limits, the
//! `<secret>` segment, and the per-secret rate limit (both in [`ActionLimiter`]). It must never import the handlers or the state: callers pass the token and
//! the limiter.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::api::CompromiseBody;
use super::respond::{Body, error_json};
use super::route::percent_decode;
use crate::aws::SecretValue;

/// The largest request body an action route reads (SPEC §7).
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// `POST /compromised` requests per secret within [`RATE_WINDOW`]: the first opens the
/// incident, the next ones answer 200 with it; more is a script in a loop.
pub(crate) const RATE_LIMIT: usize = 5;
/// `POST /rotate` and `POST /rollback` requests per secret within [`RATE_WINDOW`] (a rotation
/// takes well under a second on a fast backend; one per 2 s on average is plenty).
pub(crate) const ROTATE_RATE_LIMIT: usize = 30;
/// The rate limit's sliding window.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(60);
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

/// The action routes, each with its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `POST /rotate/<secret>`.
    Rotate,
    /// `POST /rollback/<secret>`.
    Rollback,
    /// `POST /compromised/<secret>`.
    Compromised,
}

impl Action {
    /// The word used in rate-limit keys and messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Rotate => "rotate",
            Action::Rollback => "rollback",
            Action::Compromised => "compromised",
        }
    }

    /// Requests per secret within [`RATE_WINDOW`].
    pub(crate) fn rate_limit(self) -> usize {
        match self {
            Action::Compromised => RATE_LIMIT,
            Action::Rotate | Action::Rollback => ROTATE_RATE_LIMIT,
        }
    }
}

/// Failed authentications (a wrong `Authorization` header) one peer IP may make within
/// [`RATE_WINDOW`]; the next requests of that peer needing a token answer `429` (even with the right token, so that guessing learns
/// nothing) until the oldest failure leaves the window.
pub(crate) const AUTH_FAILURE_LIMIT: usize = 10;
/// Peers whose failures are remembered at most (stale ones are forgotten first).
const MAX_TRACKED_PEERS: usize = 4096;

/// The peer address of a request, put in its extensions by the serving loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(pub(crate) IpAddr);

/// The rate limits of the HTTP API: per-(action, secret) sliding window of the action routes
/// (keys are inventory names, bounded by the inventory, checked only after the secret was
/// found), and failed authentications per peer IP (bounded by [`MAX_TRACKED_PEERS`]).
#[derive(Default)]
pub struct ActionLimiter {
    /// The accepted requests of the last window, oldest first, per key.
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// The failed authentications of the last window, oldest first, per peer.
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl ActionLimiter {
    /// `Some(retry_after)` while `peer` has [`AUTH_FAILURE_LIMIT`] failed authentications in
    /// the last [`RATE_WINDOW`].
    pub(crate) fn auth_blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let q = failures.get_mut(&peer)?;
        prune(q, now);
        if q.len() < AUTH_FAILURE_LIMIT {
            if q.is_empty() {
                failures.remove(&peer);
            }
            return None;
        }
        let oldest = q.front().copied().unwrap_or(now);
        Some(RATE_WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
    }

    /// Records a failed authentication of `peer` at `now`.
    pub(crate) fn auth_failed(&self, peer: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.contains_key(&peer) && failures.len() >= MAX_TRACKED_PEERS {
            failures.retain(|_, q| {
                prune(q, now);
                !q.is_empty()
            });
            if failures.len() >= MAX_TRACKED_PEERS {
                // Still full of active peers: forget the one whose last failure is oldest.
                let stalest = failures
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(ip) = stalest {
                    failures.remove(&ip);
                }
            }
        }
        let q = failures.entry(peer).or_default();
        prune(q, now);
        q.push_back(now);
        // Only the last AUTH_FAILURE_LIMIT matter for the decision.
        while q.len() > AUTH_FAILURE_LIMIT {
            q.pop_front();
        }
    }

    /// Records a request at `now`; `Err(retry_after)` when `limit` requests were recorded in
    /// the last [`RATE_WINDOW`] (the refused request is not recorded).
    pub(crate) fn check(&self, key: &str, limit: usize, now: Instant) -> Result<(), Duration> {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let q = hits.entry(key.to_string()).or_default();
        prune(q, now);
        if q.len() >= limit {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(RATE_WINDOW.saturating_sub(now.saturating_duration_since(oldest)));
        }
        q.push_back(now);
        Ok(())
    }
}

/// Drops the instants older than [`RATE_WINDOW`] at `now`.
fn prune(q: &mut VecDeque<Instant>, now: Instant) {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
    {
        q.pop_front();
    }
}

/// What an action request is checked against.
pub(crate) struct Gate<'a> {
    /// The admin token; `None` turns every action off (403).
    pub(crate) token: Option<&'a SecretValue>,
    /// The per-secret rate limit.
    pub(crate) limiter: &'a ActionLimiter,
}

/// Validates the raw `<secret>` segment: percent-decoded exactly once, then only the characters
/// Secrets Manager allows in a name (`A-Z a-z 0-9 / _ + = . @ -`), at most 512 of them, and no
/// empty, `.` or `..` path segment. `Err` says why (the caller answers 400).
pub(crate) fn secret_from_path(raw: &str) -> Result<String, &'static str> {
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
pub(crate) fn query_has_credentials(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|kv| {
        let key = kv.split('=').next().unwrap_or("");
        let key = percent_decode(key).unwrap_or_else(|| key.to_string());
        CREDENTIAL_KEYS.contains(&key.to_ascii_lowercase().as_str())
    })
}

/// Whether `headers` carry `Authorization: Bearer <expected>` (compared in constant time);
/// always false when no token is configured.
pub(crate) fn bearer_ok(expected: Option<&SecretValue>, headers: &HeaderMap) -> bool {
    use subtle::ConstantTimeEq;
    let Some(expected) = expected else {
        return false;
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes()))
}

/// `429` with `Retry-After` (whole seconds, rounded up).
fn too_many(wait: Duration, msg: String) -> Response<Body> {
    let mut r = error_json(StatusCode::TOO_MANY_REQUESTS, msg);
    if let Ok(v) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

/// Checks the bearer token in constant time, after the peer's failure limit; `Some` is the
/// refusal to send. A wrong `Authorization` header (any scheme) counts as a failure of the
/// peer; a missing one does not.
fn authorize(gate: &Gate<'_>, req: &Request<Incoming>) -> Option<Response<Body>> {
    if gate.token.is_none() {
        return Some(error_json(
            StatusCode::FORBIDDEN,
            "actions are off: no admin token is configured (server.admin_token_file or server.admin_token_env)",
        ));
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let now = Instant::now();
    if let Some(wait) = peer.and_then(|ip| gate.limiter.auth_blocked(ip, now)) {
        return Some(too_many(
            wait,
            format!(
                "too many failed authentications from this address: at most {AUTH_FAILURE_LIMIT} per {} s",
                RATE_WINDOW.as_secs()
            ),
        ));
    }
    if bearer_ok(gate.token, req.headers()) {
        None
    } else {
        // A request without credentials guesses nothing; a wrong one (any scheme) does.
        if let Some(ip) = peer
            && req.headers().contains_key(AUTHORIZATION)
        {
            gate.limiter.auth_failed(ip, now);
        }
        let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Some(r)
    }
}

/// Whether a read route may show its details: `Ok(false)` without an `Authorization` header
/// (the anonymous summary), `Ok(true)` with the valid token, else the refusal of
/// [`authorize`] (`401`, `403` when no token is configured, `429` after repeated failures).
#[allow(clippy::result_large_err)]
pub(crate) fn read_access(
    gate: &Gate<'_>,
    req: &Request<Incoming>,
) -> Result<bool, Response<Body>> {
    if !req.headers().contains_key(AUTHORIZATION) {
        return Ok(false);
    }
    match authorize(gate, req) {
        None => Ok(true),
        Some(r) => Err(r),
    }
}

/// The checks every action POST passes, in order: no credential in the query (400), the bearer
/// token (403/401), a declared body size within [`MAX_BODY`] (413), a valid `<secret>` (400), a
/// known secret (404), the rate limit (429). Returns the inventory name.
// The error is the response to send, built once per refused request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn guard_action(
    gate: &Gate<'_>,
    req: &Request<Incoming>,
    action: Action,
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
    if let Some(r) = authorize(gate, req) {
        return Err(r);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
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
    let limit = action.rate_limit();
    let word = action.as_str();
    if let Err(wait) = gate
        .limiter
        .check(&format!("{word}:{label}"), limit, Instant::now())
    {
        return Err(too_many(
            wait,
            format!(
                "rate limited: at most {limit} {word} requests per secret per {} s",
                RATE_WINDOW.as_secs()
            ),
        ));
    }
    Ok(label)
}

/// Reads the body, at most [`MAX_BODY`] bytes (enforced while reading) within `timeout`.
#[allow(clippy::result_large_err)]
pub(crate) async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, Response<Body>> {
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

/// Parses the body of `POST /compromised`: empty means no reason; anything else must be the
/// JSON object.
pub(crate) fn parse_compromise_body(body: &[u8]) -> Result<CompromiseBody, String> {
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

#[cfg(test)]
mod tests {
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
            assert!(
                l.check("compromised:A", 5, t0 + Duration::from_secs(i as u64))
                    .is_ok()
            );
        }
        let wait = l
            .check("compromised:A", 5, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check("compromised:B", 5, t0).is_ok());
        assert!(l.check("rotate:A", 5, t0).is_ok());
        assert!(l.check("compromised:A", 5, t0 + RATE_WINDOW).is_ok());
        assert_eq!(Action::Compromised.rate_limit(), RATE_LIMIT);
        assert_eq!(Action::Rotate.rate_limit(), ROTATE_RATE_LIMIT);
        assert_eq!(Action::Rollback.rate_limit(), ROTATE_RATE_LIMIT);
    }

    #[test]
    fn failed_authentications_are_limited_per_peer() {
        let l = ActionLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..AUTH_FAILURE_LIMIT {
            assert_eq!(l.auth_blocked(a, t0), None, "after {i} failures");
            l.auth_failed(a, t0 + Duration::from_secs(i as u64));
        }
        let at = t0 + Duration::from_secs(20);
        assert_eq!(l.auth_blocked(a, at), Some(Duration::from_secs(40)));
        assert_eq!(l.auth_blocked(b, at), None, "another peer is unaffected");
        // The window slides: the oldest failure leaves it at t0 + 60 s.
        assert!(
            l.auth_blocked(a, t0 + RATE_WINDOW - Duration::from_millis(1))
                .is_some()
        );
        assert_eq!(l.auth_blocked(a, t0 + RATE_WINDOW), None);
        // The table stays bounded however many peers fail.
        for i in 0..(MAX_TRACKED_PEERS as u32 + 100) {
            l.auth_failed(IpAddr::from(std::net::Ipv4Addr::from(i)), at);
        }
        assert!(l.failures.lock().unwrap().len() <= MAX_TRACKED_PEERS);
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
