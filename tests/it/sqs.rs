//! The access poller's queue source (`[access] source = "sqs"`, issue #17 point 3) against
//! moto's SQS: EventBridge events whose `detail` is a CloudTrail record, counted exactly once
//! through duplicate deliveries, out-of-order events and a kill -9 between the store commit and
//! the deletion; malformed messages counted once by reason and left for the dead-letter queue;
//! the baseline still learned from the log group. Canary: no secret value and no message body
//! anywhere keywarden writes.

use crate::access::counted;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_cloudwatchlogs as logs;
use aws_sdk_sqs as sqs;
use serde_json::{Value, json};

use crate::support::{Daemon, Moto, Scrape, now, store_files_contain};

const ACCOUNT: &str = "123456789012";
const GROUP: &str = "/aws/cloudtrail/keywarden-sqs-test";
const CANARY: &str = "CANARY-sqs-7f3e9b1c";

/// One CloudTrail record sent as an EventBridge event, and what it must count once.
#[derive(Clone, Debug)]
struct Rec {
    /// eventID.
    id: String,
    /// The CloudTrail record.
    detail: Value,
    /// (secret label, event label, outcome) counted once per eventID, if any.
    counts: Vec<(&'static str, &'static str, &'static str)>,
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn role(session: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/app-a/{session}")
}

/// A Secrets Manager call on `secret_id` at `t` by `who`; `label` is the inventory name it
/// counts for (`None`: not watched).
fn call(
    id: &str,
    t: i64,
    name: &'static str,
    secret_id: &str,
    who: &str,
    denied: bool,
    label: Option<&'static str>,
) -> Rec {
    let mut v = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "arn": who, "accountId": ACCOUNT,
                         "principalId": "AROAX:s"},
        "eventTime": iso(t), "eventSource": "secretsmanager.amazonaws.com", "eventName": name,
        "awsRegion": "us-east-1", "sourceIPAddress": "10.0.1.1", "userAgent": "aws-sdk-rust",
        "requestParameters": {"secretId": secret_id}, "responseElements": null,
        "requestID": id, "eventID": id, "readOnly": true, "eventType": "AwsApiCall",
        "managementEvent": true, "recipientAccountId": ACCOUNT
    });
    if denied {
        v["errorCode"] = json!("AccessDenied");
        v["errorMessage"] = json!("User is not authorized to perform this action");
    }
    let outcome = if denied { "denied" } else { "success" };
    Rec {
        id: id.to_string(),
        detail: v,
        counts: label.map(|l| vec![(l, name, outcome)]).unwrap_or_default(),
    }
}

/// The EventBridge event EventBridge delivers to an SQS target for a CloudTrail record.
fn envelope(n: usize, detail: &Value) -> String {
    json!({
        "version": "0", "id": format!("6a7e8feb-b491-4cf7-a9f1-{n:012}"),
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.secretsmanager",
        "account": ACCOUNT, "time": detail["eventTime"].clone(), "region": "us-east-1",
        "resources": [], "detail": detail
    })
    .to_string()
}

/// Bodies that are not usable events, each with the reason keywarden must count it under.
/// Each carries the canary: a body must never reach a log line.
fn malformed() -> Vec<(String, &'static str)> {
    vec![
        (format!("{CANARY} plain text"), "not_json"),
        (
            format!("{{\"detail-type\": \"{CANARY}\", \"det"),
            "not_json",
        ),
        (json!({"note": CANARY}).to_string(), "not_event"),
        (
            json!({"detail-type": "AWS API Call via CloudTrail", "source": "aws.secretsmanager",
                   "detail": CANARY})
            .to_string(),
            "not_event",
        ),
        (
            json!({"detail-type": "AWS API Call via CloudTrail", "source": "aws.secretsmanager",
                   "detail": {"eventID": 7, "eventSource": "secretsmanager.amazonaws.com",
                              "eventName": "GetSecretValue", "note": CANARY}})
            .to_string(),
            "malformed",
        ),
    ]
}

struct World {
    moto: Moto,
    sqs: sqs::Client,
    logs: logs::Client,
    queue_url: String,
    dlq_url: String,
    config: String,
    /// secretId forms per label: name and ARN.
    ids: BTreeMap<&'static str, (String, String)>,
}

async fn world(visibility_s: u32, max_receives: u32) -> World {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let mut ids = BTreeMap::new();
    for (label, name) in [("JWT", "svc/jwt"), ("DB", "svc/db")] {
        let arn = sm
            .create_secret()
            .name(name)
            .secret_string(format!("{CANARY}-value-of-{name}"))
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_string();
        ids.insert(label, (name.to_string(), arn));
    }
    let sqs = sqs::Client::new(&moto.sdk_config().await);
    let dlq_url = sqs
        .create_queue()
        .queue_name("keywarden-cloudtrail-dlq")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let dlq_arn = format!("arn:aws:sqs:us-east-1:{ACCOUNT}:keywarden-cloudtrail-dlq");
    let queue_url = sqs
        .create_queue()
        .queue_name("keywarden-cloudtrail")
        .attributes(
            sqs::types::QueueAttributeName::VisibilityTimeout,
            visibility_s.to_string(),
        )
        .attributes(
            sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let logs = moto.logs_client().await;
    logs.create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    let mut config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\n\
         [poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n\
         [access]\nsource = \"sqs\"\nqueue_url = \"{queue_url}\"\nlog_group = \"{GROUP}\"\n\
         overlap = \"30m\"\nbaseline = \"14d\"\nmax_requests_per_second = 50\n\
         [state]\npath = \"{{state}}\"\n",
        moto.endpoint()
    );
    for (label, name) in [("JWT", "svc/jwt"), ("DB", "svc/db")] {
        config.push_str(&format!(
            "[[secret]]\nname = \"{label}\"\nid = \"{name}\"\n\
             consumers = [\"arn:aws:sts::{ACCOUNT}:assumed-role/app-*/*\"]\n\
             allowed_sources = [\"10.0.0.0/8\"]\n"
        ));
    }
    World {
        moto,
        sqs,
        logs,
        queue_url,
        dlq_url,
        config,
        ids,
    }
}

/// Sends bodies in batches of 10, in the order given.
async fn send(client: &sqs::Client, url: &str, bodies: &[String]) {
    for (n, chunk) in bodies.chunks(10).enumerate() {
        let entries: Vec<sqs::types::SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{n}-{i}"))
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(out.failed().is_empty(), "send failed: {:?}", out.failed());
    }
}

/// Visible plus in-flight messages of a queue.
async fn depth(client: &sqs::Client, url: &str) -> u64 {
    use sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().cloned().unwrap_or_default();
    [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|a| {
        attrs
            .get(a)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}

fn expected(recs: &[&Rec]) -> BTreeMap<(String, String, String), u64> {
    crate::access::expected_counts(recs.iter().map(|r| (r.id.as_str(), r.counts.as_slice())))
}

fn skipped(s: &Scrape) -> BTreeMap<String, u64> {
    s.samples
        .iter()
        .filter(|x| x.name == "keywarden_access_skipped_records_total" && x.value > 0.0)
        .map(|x| (x.labels["reason"].clone(), x.value as u64))
        .collect()
}

fn anomalies(s: &Scrape, kind: &str) -> BTreeMap<String, u64> {
    s.samples
        .iter()
        .filter(|x| {
            x.name == "keywarden_secret_access_anomalies_total"
                && x.value > 0.0
                && x.labels["kind"] == kind
        })
        .map(|x| (x.labels["secret"].clone(), x.value as u64))
        .collect()
}

/// A batch of records on the watched secrets, with unique ids from `prefix`: reads by two
/// sessions (by name and by ARN), denied reads, describes; plus noise that must not count.
fn traffic(w: &World, prefix: &str, t0: i64, n: usize) -> Vec<Rec> {
    let mut v = Vec::new();
    for i in 0..n {
        let id = |k: &str| format!("{prefix}-{k}-{i:04}");
        let t = t0 + (i as i64) * 1000;
        let (label, secret) = if i % 2 == 0 {
            ("JWT", &w.ids["JWT"])
        } else {
            ("DB", &w.ids["DB"])
        };
        let form = if i % 3 == 0 { &secret.1 } else { &secret.0 };
        v.push(call(
            &id("r"),
            t,
            "GetSecretValue",
            form,
            &role("i-1"),
            false,
            Some(label),
        ));
        if i % 4 == 0 {
            v.push(call(
                &id("d"),
                t,
                "GetSecretValue",
                &secret.0,
                &role("i-1"),
                true,
                Some(label),
            ));
        }
        if i % 5 == 0 {
            v.push(call(
                &id("s"),
                t,
                "DescribeSecret",
                &secret.1,
                &role("i-1"),
                false,
                Some(label),
            ));
        }
        if i % 6 == 0 {
            v.push(call(
                &id("u"),
                t,
                "GetSecretValue",
                "svc/unwatched",
                &role("i-1"),
                false,
                None,
            ));
        }
    }
    v
}

fn stored_ids(dir: &std::path::Path) -> HashSet<String> {
    let store = keywarden::store::Store::open(&dir.join("state.db")).expect("open the store");
    store
        .with(
            |c| {
                let mut st = c.prepare("SELECT event_id FROM access_seen")?;
                let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect()
            },
            "read access_seen",
        )
        .expect("read access_seen")
}

/// Duplicates (twice and three times), events sent out of time order, noise, malformed
/// messages, and a new principal against a baseline learned from the log group: every eventID
/// counts once, each malformed message counts once under its reason and ends in the DLQ, every
/// valid message is deleted, and no value or body leaks.
#[tokio::test]
async fn sqs_counts_exactly_once_and_leaves_malformed_messages_to_the_dlq() {
    let w = world(4, 2).await;
    let t0 = now() * 1000;
    // History in the log group: i-1 read both secrets two hours ago. The queue source still
    // learns the baseline from it, so i-1 is not a new principal below.
    let hist = [
        call(
            "hist-1",
            t0 - 7_200_000,
            "GetSecretValue",
            &w.ids["JWT"].0,
            &role("i-1"),
            false,
            Some("JWT"),
        ),
        call(
            "hist-2",
            t0 - 7_100_000,
            "GetSecretValue",
            &w.ids["DB"].0,
            &role("i-1"),
            false,
            Some("DB"),
        ),
    ];
    w.logs
        .create_log_stream()
        .log_group_name(GROUP)
        .log_stream_name("h")
        .send()
        .await
        .unwrap();
    let events: Vec<logs::types::InputLogEvent> = hist
        .iter()
        .map(|r| {
            logs::types::InputLogEvent::builder()
                .timestamp(
                    chrono::DateTime::parse_from_rfc3339(r.detail["eventTime"].as_str().unwrap())
                        .unwrap()
                        .timestamp_millis(),
                )
                .message(r.detail.to_string())
                .build()
                .unwrap()
        })
        .collect();
    w.logs
        .put_log_events()
        .log_group_name(GROUP)
        .log_stream_name("h")
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();

    let mut recs = traffic(&w, "a", t0 - 600_000, 60);
    // A new principal on JWT (a declared consumer: new_principal only).
    recs.push(call(
        "new-1",
        t0 - 30_000,
        "GetSecretValue",
        &w.ids["JWT"].0,
        &role("i-9"),
        false,
        Some("JWT"),
    ));
    // Out of order: newest first.
    recs.reverse();
    // Duplicates: every 7th record again, every 11th a third time, sent at the end.
    let dups: Vec<Rec> = recs
        .iter()
        .step_by(7)
        .chain(recs.iter().step_by(11))
        .cloned()
        .collect();
    let mut bodies: Vec<String> = Vec::new();
    for (n, r) in recs.iter().chain(&dups).enumerate() {
        bodies.push(envelope(n, &r.detail));
    }
    let bad = malformed();
    // Malformed messages in the middle of the stream.
    let mid = bodies.len() / 2;
    for (k, (b, _)) in bad.iter().enumerate() {
        bodies.insert(mid + k, b.clone());
    }
    send(&w.sqs, &w.queue_url, &bodies).await;

    let d = Daemon::start(&w.config).await;
    let all: Vec<&Rec> = recs.iter().chain(&dups).collect();
    let want = expected(&all);
    let mut want_skipped: BTreeMap<String, u64> = BTreeMap::new();
    for (_, why) in &bad {
        *want_skipped.entry(why.to_string()).or_default() += 1;
    }
    d.wait_for("exact counts through SQS", Duration::from_secs(60), |s| {
        counted(s) == want && skipped(s) == want_skipped
    })
    .await;
    // Valid messages are deleted; the malformed ones are received again (visibility 4 s)
    // until maxReceiveCount = 2 moves them to the DLQ.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (main, dlq) = (
            depth(&w.sqs, &w.queue_url).await,
            depth(&w.sqs, &w.dlq_url).await,
        );
        if main == 0 && dlq == bad.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue {main} / dlq {dlq} (want 0 / {}); log:\n{}",
            bad.len(),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Settled: redeliveries of malformed messages counted nothing more.
    let s = d.scrape().await;
    assert_eq!(counted(&s), want, "{}", s.text);
    assert_eq!(skipped(&s), want_skipped, "{}", s.text);
    assert_eq!(
        anomalies(&s, "new_principal"),
        BTreeMap::from([("JWT".to_string(), 1)]),
        "i-1 was learned from the log group; only i-9 is new; log:\n{}",
        d.log()
    );
    assert!(
        s.sum(
            "keywarden_aws_requests_total",
            &[
                ("service", "sqs"),
                ("operation", "DeleteMessageBatch"),
                ("outcome", "ok")
            ]
        ) >= (recs.len() / 10) as f64,
        "{}",
        s.text
    );
    let (status, body) = d.get("/anomalies").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["skipped_records"], json!(bad.len()), "{body}");
    // Each duplicate delivery of a watched secret's event is a repeated event. On a loaded
    // machine a valid message can also come back after the 4 s visibility timeout before its
    // deletion (seen once: 22 for 21 duplicates): SQS's at-least-once, also repeated, never
    // counted twice (the counts above are exact).
    assert!(
        body["repeated_events"].as_u64().unwrap_or(0)
            >= dups.iter().filter(|r| !r.counts.is_empty()).count() as u64,
        "each duplicate delivery of a watched secret's event is one repeated event: {body}"
    );
    // Canary: no value, no message body in the log, the metrics or the store.
    assert!(!d.log().contains(CANARY), "the log holds the canary");
    assert!(!s.text.contains(CANARY), "the metrics hold the canary");
    assert_eq!(
        store_files_contain(d.dir.path(), CANARY),
        Vec::<std::path::PathBuf>::new()
    );
    drop(w.moto);
}

/// kill -9 (the `access:committed` failpoint) after the first batch is committed and before
/// its messages are deleted: the messages come back after their visibility timeout, the
/// restarted daemon finds their eventIDs in the store, counts them nothing, deletes them, and
/// counts what arrived meanwhile exactly once.
#[tokio::test]
async fn sqs_redelivery_after_a_crash_between_commit_and_delete_counts_once() {
    let w = world(2, 50).await;
    let t0 = now() * 1000;
    let a = traffic(&w, "a", t0 - 300_000, 40);
    let bodies: Vec<String> = a
        .iter()
        .enumerate()
        .map(|(n, r)| envelope(n, &r.detail))
        .collect();
    send(&w.sqs, &w.queue_url, &bodies).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let point = "access:committed";
    let d = Daemon::launch_in_env(dir, port, &w.config, &[("KEYWARDEN_FAILPOINT", point)]);
    let dir = d.wait_exit(Duration::from_secs(90));
    let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {point} reached")),
        "log:\n{log}"
    );
    let stored = stored_ids(dir.path());
    let a_stored = a.iter().filter(|r| stored.contains(&r.id)).count();
    assert!(a_stored > 0, "the first batch was committed; log:\n{log}");
    // Committed, not deleted: every message is still in the queue.
    assert_eq!(depth(&w.sqs, &w.queue_url).await, bodies.len() as u64);

    // While it is down: duplicates of A and new events.
    let b = traffic(&w, "b", t0 - 100_000, 20);
    let again: Vec<Rec> = a.iter().step_by(3).cloned().collect();
    let more: Vec<String> = b
        .iter()
        .chain(&again)
        .enumerate()
        .map(|(n, r)| envelope(1000 + n, &r.detail))
        .collect();
    send(&w.sqs, &w.queue_url, &more).await;

    let d = Daemon::start_in(dir, port, &w.config).await;
    let want_recs: Vec<&Rec> = a
        .iter()
        .chain(&b)
        .chain(&again)
        .filter(|r| !stored.contains(&r.id))
        .collect();
    let want = expected(&want_recs);
    d.wait_for(
        "exact counts after the restart",
        Duration::from_secs(60),
        |s| counted(s) == want,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while depth(&w.sqs, &w.queue_url).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "queue not drained; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(depth(&w.sqs, &w.dlq_url).await, 0);
    let s = d.scrape().await;
    assert_eq!(counted(&s), want, "{}", s.text);
    let (_, body) = d.get("/anomalies").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["repeated_events"].as_u64().unwrap_or(0) >= a_stored as u64,
        "the redelivered committed events are repeats: {body}"
    );
}
