//! AWS misbehaving the way it does in production and moto never does on its own, injected
//! through the launcher's `/_keywarden/faults`: throttling (a rotation step keeps its transient
//! retry budget of 25 attempts, not the 5 of other failures, and every throttled call is counted
//! as `throttled`), FilterLogEvents paging (every page is read through nextToken and every event
//! counted once), and ListSecrets lagging behind a rotation (the scheduler does not rotate the
//! same secret again while the listing still shows the old version).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, Moto, create_aged_secret, now};

const TOKEN: &str = "test-admin-token-0123456789abcdef0123";

/// Injects faults; returns the launcher's fault state.
async fn faults(moto: &Moto, body: Value) -> Value {
    let (status, answer) = moto.control("POST", "faults", body).await;
    assert_eq!(status, 200, "faults: {answer}");
    answer
}

/// The launcher's fault state (what the faults did so far).
async fn fault_state(moto: &Moto) -> Value {
    let (status, answer) = moto.control("GET", "faults", Value::Null).await;
    assert_eq!(status, 200, "faults: {answer}");
    answer
}

async fn start(config: &str) -> Daemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    Daemon::start_in_env(dir, port, config, &[("KW_TEST_TOKEN", TOKEN)]).await
}

async fn wait_rotation(d: &Daemon, id: &str, states: &[&str], limit: Duration) -> Value {
    d.wait_rotation(id, states, limit).await
}

/// The journaled rotations of one secret.
async fn rotations_of(d: &Daemon, secret: &str) -> Vec<Value> {
    let (status, body) = d.get("/rotations").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("rotations JSON");
    v["rotations"]
        .as_array()
        .expect("a rotations array")
        .iter()
        .filter(|r| r["secret"] == secret)
        .cloned()
        .collect()
}

/// The SDK's own attempts per call (`aws/client.rs`: standard retry mode, 3 attempts).
const SDK_ATTEMPTS: u64 = 3;

/// A rotation whose PutSecretValue is throttled through five whole step attempts (each one the
/// SDK's three attempts) still finishes: a throttled step gets the transient budget of 25
/// attempts (README "Failure"), where any other failure would have failed the rotation at the
/// fifth. Each throttled call is counted once as `throttled`, the successful one as `ok`.
#[tokio::test]
async fn throttled_steps_retry_past_five_attempts_and_are_counted_throttled() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    client
        .create_secret()
        .name("faults/throttled")
        .secret_string("throttled-old-value")
        .send()
        .await
        .expect("create the secret");
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"THROTTLED\"\nid = \"faults/throttled\"\nrotation = {{ strategy = \"random\" }}\n",
        moto.endpoint()
    );
    let d = start(&config).await;
    let step_failures = keywarden::rotation::MAX_ATTEMPTS as u64;
    assert!(
        (step_failures as u32) < keywarden::rotation::MAX_TRANSIENT_ATTEMPTS,
        "the transient budget is larger than the ordinary one"
    );
    let throttles = step_failures * SDK_ATTEMPTS;
    faults(
        &moto,
        json!({"throttle": {"secretsmanager:PutSecretValue": throttles}}),
    )
    .await;
    moto.reset_requests().await;

    let (status, _, body) = crate::support::http(
        "POST",
        &d.url("/rotate/THROTTLED"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let accepted: Value = serde_json::from_str(&body).expect("JSON");
    let rid = accepted["rotation_id"].as_str().expect("rotation_id");
    // Backoff 1+2+4+8+16 s between the step attempts, plus the SDK's own jittered backoff.
    let r = wait_rotation(&d, rid, &["done", "failed"], Duration::from_secs(120)).await;
    assert_eq!(r["state"], "done", "throttling failed the rotation: {r:#}");

    let errors: Vec<&Value> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["outcome"] == "error")
        .collect();
    assert_eq!(errors.len() as u64, step_failures, "{r:#}");
    for e in &errors {
        assert_eq!(e["step"], "create", "{e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains("throttled"),
            "{e}"
        );
    }

    let state = fault_state(&moto).await;
    assert_eq!(
        state["throttled"]["secretsmanager:PutSecretValue"], throttles,
        "{state}"
    );
    let served = moto.requests().await;
    assert_eq!(
        served.get("secretsmanager:PutSecretValue").copied(),
        Some(throttles + 1),
        "every SDK attempt reached the emulator: {served:?}"
    );
    let s = d.scrape().await;
    let put = |outcome| {
        s.get(
            "keywarden_aws_requests_total",
            &[
                ("service", "secretsmanager"),
                ("operation", "PutSecretValue"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(put("throttled"), Some(step_failures as f64), "{}", s.text);
    assert_eq!(put("ok"), Some(1.0), "{}", s.text);
    assert_eq!(
        s.get(
            "keywarden_rotations_total",
            &[
                ("secret", "THROTTLED"),
                ("trigger", "manual"),
                ("result", "success")
            ]
        ),
        Some(1.0)
    );
}

const ACCOUNT: &str = "123456789012";
const GROUP: &str = "/aws/cloudtrail/keywarden-faults";

/// One CloudTrail GetSecretValue record of `secret_id` by an application role.
fn read_record(id: u64, t_ms: i64, secret_id: &str) -> String {
    let time = chrono::DateTime::from_timestamp_millis(t_ms)
        .expect("a valid time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let event_id = format!("5ad0c0de-0000-4000-8000-{id:012}");
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/app-a/s1"),
                         "accountId": ACCOUNT, "principalId": "AROAX:s1"},
        "eventTime": time, "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue", "awsRegion": "us-east-1", "sourceIPAddress": "10.0.1.1",
        "userAgent": "aws-sdk-rust", "requestParameters": {"secretId": secret_id},
        "responseElements": null, "requestID": event_id, "eventID": event_id, "readOnly": true,
        "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": ACCOUNT
    })
    .to_string()
}

/// With FilterLogEvents answering at most 4 events a page, the access poller follows nextToken
/// through every page (the launcher sees the nextToken requests) and counts each of the 22
/// events exactly once, however many cycles re-read the overlap.
#[tokio::test]
async fn filter_log_events_pages_are_all_read_and_each_event_counted_once() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create_aged_secret(&moto, &client, "svc/paged", 10).await;
    let logs = moto.logs_client().await;
    logs.create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .expect("create the log group");
    logs.create_log_stream()
        .log_group_name(GROUP)
        .log_stream_name("trail")
        .send()
        .await
        .expect("create the log stream");
    const EVENTS: u64 = 22;
    const PAGE: u64 = 4;
    let t0 = now() * 1000 - 5 * 60_000;
    let events: Vec<_> = (0..EVENTS)
        .map(|i| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(t0 + i as i64 * 1000)
                .message(read_record(i, t0 + i as i64 * 1000, "svc/paged"))
                .build()
                .expect("a log event")
        })
        .collect();
    logs.put_log_events()
        .log_group_name(GROUP)
        .log_stream_name("trail")
        .set_log_events(Some(events))
        .send()
        .await
        .expect("put the events");
    faults(&moto, json!({"filter_log_events_page_size": PAGE})).await;

    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\n\
         [poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n\
         [access]\nlog_group = \"{GROUP}\"\noverlap = \"30m\"\nbaseline = \"1d\"\n\
         max_requests_per_second = 50\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"PAGED\"\nid = \"svc/paged\"\n\
         consumers = [\"arn:aws:sts::{ACCOUNT}:assumed-role/app-*/*\"]\n",
        moto.endpoint()
    );
    let d = start(&config).await;
    let labels = [
        ("secret", "PAGED"),
        ("event", "GetSecretValue"),
        ("outcome", "success"),
    ];
    let cycles = |s: &crate::support::Scrape| {
        s.get(
            "keywarden_poll_duration_seconds_count",
            &[("source", "access")],
        )
        .unwrap_or(0.0)
    };
    let s = d
        .wait_for("every paged event counted", Duration::from_secs(40), |s| {
            s.get("keywarden_secret_access_events_total", &labels) == Some(EVENTS as f64)
        })
        .await;
    // Two more cycles re-read the same pages: nothing is counted twice.
    let seen = cycles(&s);
    let s = d
        .wait_for("two more access cycles", Duration::from_secs(20), |s| {
            cycles(s) >= seen + 2.0
        })
        .await;
    assert_eq!(
        s.get("keywarden_secret_access_events_total", &labels),
        Some(EVENTS as f64),
        "counted twice after more cycles"
    );
    // Each full read is 6 pages (22 events, 4 a page): 5 requests carry a nextToken.
    let state = fault_state(&moto).await;
    let pages_per_read = EVENTS.div_ceil(PAGE);
    let followed = state["filter_log_events_next_token_requests"]
        .as_u64()
        .expect("a count");
    assert!(
        followed >= 2 * (pages_per_read - 1),
        "nextToken followed only {followed} times: {state}"
    );
    let served = moto.requests().await;
    assert!(
        served.get("logs:FilterLogEvents").copied().unwrap_or(0) >= 2 * pages_per_read,
        "{served:?}"
    );
}

/// ListSecrets may lag changes by up to five minutes (README "Cost and limits"). With the
/// listing 15 s behind, a scheduled rotation that has finished still looks due to the poller for
/// those 15 s; the scheduler must not take that for a new due date and rotate the secret again.
#[tokio::test]
async fn list_secrets_lag_does_not_start_a_second_scheduled_rotation() {
    const LAG: u64 = 15;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create_aged_secret(&moto, &client, "lag/open", 100).await;
    faults(&moto, json!({"list_secrets_lag_seconds": LAG})).await;
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"LAGGED\"\nid = \"lag/open\"\nrotate_every = \"90d\"\n\
         window = \"cron(* * * * ? *)\"\nrotation = {{ strategy = \"random\" }}\n",
        moto.endpoint()
    );
    let d = start(&config).await;
    let first = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = rotations_of(&d, "LAGGED").await.pop() {
                break r;
            }
            assert!(
                Instant::now() < deadline,
                "no scheduled rotation started:\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let rid = first["id"].as_str().expect("rotation id").to_string();
    assert_eq!(first["trigger"], "scheduled");
    wait_rotation(&d, &rid, &["done"], Duration::from_secs(30)).await;
    let token = format!("keywarden-{rid}");
    // Until the lagging listing shows the new version, and a few cycles after, there is one
    // rotation only.
    let deadline = Instant::now() + Duration::from_secs(LAG + 30);
    loop {
        let list = rotations_of(&d, "LAGGED").await;
        assert_eq!(
            list.len(),
            1,
            "a second rotation started while ListSecrets lagged: {list:#?}"
        );
        let (status, body) = d.get("/secrets").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("secrets JSON");
        let seen = v["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .any(|s| s["name"] == "LAGGED" && s["current_version"] == token.as_str());
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the poller never saw version {token}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cycles = Daemon::metadata_cycles(&d.scrape().await);
    d.wait_for("three more metadata cycles", Duration::from_secs(20), |s| {
        Daemon::metadata_cycles(s) >= cycles + 3.0
    })
    .await;
    assert_eq!(rotations_of(&d, "LAGGED").await.len(), 1);
}
