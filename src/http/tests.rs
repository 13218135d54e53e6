//! In-process route tests: `serve` on `127.0.0.1:0` with an [`AppState`] built here, spoken to
//! with a real HTTP/1.1 client. No AWS call is made: the rotation core is built on an SDK
//! configuration that is never used, because every action request is refused before it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guard::{ActionLimiter, MAX_BODY, ROTATE_RATE_LIMIT};
use super::{AppState, serve};
use crate::aws::SecretValue;
use crate::domain::view::SharedView;
use crate::telemetry::Metrics;

const TOKEN: &str = "test-admin-token-in-process-0123456789";

/// A server on an ephemeral port, with its address, its stop token and its task.
struct Server {
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// Cancelling it stops `serve`.
    stop: CancellationToken,
    /// The `serve` task.
    task: JoinHandle<()>,
    /// The fake Secrets Manager the rotation core writes to (secret `svc/a`).
    secrets: crate::aws::fake::FakeSecrets,
    /// Keeps the store's directory alive.
    _dir: tempfile::TempDir,
}

/// Starts `serve` with a rotation core over a fake Secrets Manager holding secret `A`
/// (`svc/a`) and no incident service. `prepare` may
/// touch the state (the limiter) before it is shared.
async fn start(prepare: impl FnOnce(&AppState)) -> Server {
    let config = Arc::new(
        crate::config::parse(
            "[[secret]]\nname = \"A\"\nid = \"svc/a\"\nrotation = { strategy = \"random\" }\n",
            Path::new("t.toml"),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("state.db")).unwrap();
    let view = SharedView::default();
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let secrets = crate::aws::fake::FakeSecrets::new();
    secrets.create("svc/a", "first-value");
    let engine = crate::rotation::RotationCore::new(
        secrets.clone(),
        store,
        config.clone(),
        view.clone(),
        metrics.clone(),
        stop.clone(),
    );
    let state = AppState {
        config,
        view,
        metrics,
        rotation: Some(Arc::new(engine)),
        admin_token: Some(SecretValue::new(TOKEN.into())),
        incidents: None,
        limiter: ActionLimiter::default(),
    };
    prepare(&state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(serve(listener, Arc::new(state), stop.clone()));
    Server {
        base,
        stop,
        task,
        secrets,
        _dir: dir,
    }
}

/// One request; returns status, headers and body text.
async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_str(v).unwrap());
    }
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(url: &str) -> (u16, HeaderMap, String) {
    call("GET", url, &[], Bytes::new()).await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<super::api::ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body}"))
        .error
}

#[tokio::test]
async fn read_routes_answer() {
    let s = start(|_| {}).await;
    let (status, h, body) = get(&format!("{}/healthz", s.base)).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");

    let (status, h, _) = get(&format!("{}/metrics", s.base)).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-type"),
        crate::telemetry::TEXT_CONTENT_TYPE
    );
    let (status, h, _) = call(
        "GET",
        &format!("{}/metrics", s.base),
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-type"),
        crate::telemetry::OPENMETRICS_CONTENT_TYPE
    );

    let (status, h, body) = get(&format!("{}/secrets", s.base)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "content-type"), "application/json");
    assert_eq!(header(&h, "cache-control"), "no-store");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["generated_at"].is_i64(), "{body}");
    assert!(v["secrets"].is_array(), "{body}");

    let (status, _, body) = get(&format!("{}/rotations", s.base)).await;
    assert_eq!(status, 200, "{body}");
    let list: super::api::RotationList<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(list.rotations.is_empty());

    let (status, _, body) = get(&format!("{}/rotations/nope", s.base)).await;
    assert_eq!(status, 404);
    assert_eq!(error_of(&body), "no rotation \"nope\"");

    // No incident service: its routes say so.
    let (status, _, body) = get(&format!("{}/incidents", s.base)).await;
    assert_eq!(status, 503);
    assert_eq!(error_of(&body), "the incident service is not running");
    s.stop.cancel();
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let s = start(|_| {}).await;
    let (status, h, body) = get(&format!("{}/nope", s.base)).await;
    assert_eq!((status, body.as_str()), (404, "not found\n"));
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");

    let (status, h, _) = call("POST", &format!("{}/healthz", s.base), &[], Bytes::new()).await;
    assert_eq!(status, 405);
    assert_eq!(header(&h, "allow"), "GET, HEAD");

    let (status, h, _) = get(&format!("{}/rotate/A", s.base)).await;
    assert_eq!(status, 405);
    assert_eq!(header(&h, "allow"), "POST");

    let (status, _, body) = get(&format!("{}/rotations/a%zz", s.base)).await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body), "malformed percent-escape in the path");
    s.stop.cancel();
}

#[tokio::test]
async fn action_guards_refuse_in_order() {
    let s = start(|_| {}).await;
    let url = format!("{}/rotate/A", s.base);
    let bearer = format!("Bearer {TOKEN}");

    let (status, h, body) = call("POST", &url, &[], Bytes::new()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(header(&h, "www-authenticate"), "Bearer");
    assert_eq!(error_of(&body), "missing or wrong bearer token");
    let (status, _, _) = call(
        "POST",
        &url,
        &[("authorization", "Bearer wrong")],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 401);

    // A credential in the URL is refused before the token is looked at.
    let (status, _, _) = call("POST", &format!("{url}?token=x"), &[], Bytes::new()).await;
    assert_eq!(status, 400);

    let big = Bytes::from(vec![b' '; MAX_BODY + 1]);
    let (status, _, body) = call("POST", &url, &[("authorization", &bearer)], big).await;
    assert_eq!(status, 413, "{body}");

    let (status, _, body) = call(
        "POST",
        &format!("{}/rotate/a%2F..%2Fb", s.base),
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = call(
        "POST",
        &format!("{}/rotate/NOPE", s.base),
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    s.stop.cancel();
}

#[tokio::test]
async fn actions_are_off_without_a_token() {
    let config = Arc::new(
        crate::config::parse(
            "[[secret]]\nname = \"A\"\nid = \"svc/a\"\nrotation = { strategy = \"random\" }\n",
            Path::new("t.toml"),
        )
        .unwrap(),
    );
    let state = AppState {
        config,
        view: SharedView::default(),
        metrics: Arc::new(Metrics::new()),
        rotation: None,
        admin_token: None,
        incidents: None,
        limiter: ActionLimiter::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, Arc::new(state), stop.clone()));
    for path in ["/rotate/A", "/rollback/A", "/compromised/A"] {
        let (status, _, body) = call(
            "POST",
            &format!("{base}{path}"),
            &[("authorization", "Bearer x")],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve stops once cancelled")
        .unwrap();
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    // The window is already full for `rotate:A`, so the request never reaches the rotation core.
    let s = start(|state| {
        let now = Instant::now();
        for _ in 0..ROTATE_RATE_LIMIT {
            state
                .limiter
                .check("rotate:A", ROTATE_RATE_LIMIT, now)
                .unwrap();
        }
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let (status, h, body) = call(
        "POST",
        &format!("{}/rotate/A", s.base),
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(error_of(&body).starts_with("rate limited: at most 30 rotate requests"));
    s.stop.cancel();
}

#[tokio::test]
async fn cancelling_the_token_stops_serve() {
    let s = start(|_| {}).await;
    assert_eq!(get(&format!("{}/healthz", s.base)).await.0, 200);
    s.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve stops once cancelled")
        .unwrap();
    // The listener is closed: a new connection is refused.
    let addr = s.base.trim_start_matches("http://");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The whole action path in-process: `POST /rotate` answers 202 with the rotation's id and
/// status URL, the rotation runs to `done` over the fake, and `GET /rotations/<id>` shows it.
#[tokio::test]
async fn a_manual_rotation_is_accepted_and_runs_to_done() {
    let s = start(|_| {}).await;
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = call(
        "POST",
        &format!("{}/rotate/A", s.base),
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let accepted: super::api::RotateAccepted = serde_json::from_str(&body).unwrap();
    assert_eq!(accepted.secret, "A");
    assert_eq!(accepted.url, format!("/rotations/{}", accepted.rotation_id));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _, body) = get(&format!("{}{}", s.base, accepted.url)).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["state"] == "done" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not done: {v:#}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (current, value) = s.secrets.staged("svc/a", "AWSCURRENT").unwrap();
    assert_eq!(current, format!("keywarden-{}", accepted.rotation_id));
    assert_ne!(value.expose(), "first-value");
    s.stop.cancel();
}

/// Issue #15 (low): anonymous GETs show a summary; principals, IPs, event ids, details and
/// rotation errors (which can name database hosts) need the admin token.
#[tokio::test]
async fn anonymous_reads_get_a_summary_and_the_token_gets_details() {
    let s = start(|state| {
        let mut v = state.view.write();
        v.access_log
            .recent
            .push_front(crate::access::detect::Anomaly {
                secret: "A".into(),
                kind: crate::domain::vocabulary::AnomalyKind::UnexpectedSource,
                principal: "arn:aws:iam::123456789012:user/mallory".into(),
                source_ip: Some("203.0.113.9".into()),
                event_id: "ev-1".into(),
                event_name: "GetSecretValue".into(),
                time_ms: 1_700_000_000_000,
                detail: "read from 203.0.113.9 outside 10.0.0.0/8".into(),
            });
        v.access.insert(
            "A".into(),
            crate::domain::view::AccessFacts {
                anomalies: 3,
                ..Default::default()
            },
        );
        v.secrets.insert(
            "A".into(),
            crate::domain::view::SecretStatus {
                name: "A".into(),
                target: Default::default(),
                id: "svc/a".into(),
                arn: None,
                managed: crate::domain::view::Managed::Inventory,
                severity: crate::domain::vocabulary::Severity::Critical,
                impact: String::new(),
                strategy: crate::domain::vocabulary::Strategy::Random,
                present: true,
                deletion_scheduled: false,
                last_rotated: None,
                interval_seconds: None,
                due: None,
                overdue: false,
                scheduled: None,
                rotation_enabled: false,
                pending: false,
                last_accessed: None,
                current_version: None,
                current_created: None,
                observed_at: 0,
            },
        );
        v.rotations.insert(
            "A".into(),
            crate::domain::view::RotationView {
                error: Some("cannot connect to db.internal.example:5432".into()),
                waiting: Some("undeclared reader arn:aws:iam::123456789012:user/mallory".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let sensitive = ["mallory", "203.0.113.9", "ev-1", "db.internal.example"];
    let bearer = format!("Bearer {TOKEN}");
    for route in ["/anomalies", "/secrets"] {
        let url = format!("{}{route}", s.base);
        let (status, _, body) = get(&url).await;
        assert_eq!(status, 200, "{route}: {body}");
        for word in sensitive {
            assert!(
                !body.contains(word),
                "{route} shows {word:?} without the token: {body}"
            );
        }
        let (status, _, full) =
            call("GET", &url, &[("authorization", &bearer)], Bytes::new()).await;
        assert_eq!(status, 200, "{route}: {full}");
        let shown = sensitive.iter().filter(|w| full.contains(*w)).count();
        assert!(
            shown >= 2,
            "{route} with the token lacks the details: {full}"
        );
        // A wrong token is refused, not silently summarized.
        let (status, _, _) = call(
            "GET",
            &url,
            &[("authorization", "Bearer wrong")],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 401, "{route}");
    }
    // The summary keeps counts, kinds and times.
    let (_, _, body) = get(&format!("{}/anomalies", s.base)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["anomalies"][0]["kind"], "unexpected_source", "{v:#}");
    assert_eq!(v["anomalies"][0]["secret"], "A", "{v:#}");
    assert!(v["anomalies"][0]["time"].is_string(), "{v:#}");
    // ...and the per-secret count since start with the latest kind (`keywarden status`).
    assert_eq!(
        v["per_secret"],
        serde_json::json!([{"secret": "A", "count": 3, "latest_kind": "unexpected_source", "latest_at": 1_700_000_000}]),
        "{v:#}"
    );
    s.stop.cancel();
}
