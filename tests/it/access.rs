//! The access poller against moto's CloudWatch Logs: a realistic CloudTrail stream (history,
//! several principals, other event sources, malformed lines, duplicate deliveries, late events
//! inside the overlap), exact counters, every anomaly kind firing or staying quiet, a kill -9
//! restart that counts nothing twice, and `keywarden consumers`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatchlogs as logs;
use serde_json::{Value, json};

use crate::support::{Backend, Daemon, Moto, Scrape, create_aged_secret, keywarden_command, now};

const ACCOUNT: &str = "123456789012";
const GROUP: &str = "/aws/cloudtrail/keywarden-test";
const MIN: i64 = 60_000;
const BUCKET: i64 = 5 * MIN;

fn role(session: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/app-a/{session}")
}

/// One CloudTrail record about to be written, and what keywarden must make of it.
#[derive(Clone, Debug)]
struct Rec {
    /// Log event timestamp (= eventTime).
    t: i64,
    /// The JSON line.
    line: String,
    /// CloudTrail eventID.
    id: String,
    /// (secret label, event label, outcome) it must count once, if any.
    counts: Vec<(&'static str, &'static str, &'static str)>,
}

/// Builds records with unique eventIDs.
struct Trail {
    next: u64,
    /// secretId forms by inventory label: name, full ARN, partial ARN.
    ids: BTreeMap<&'static str, [String; 3]>,
}

#[derive(Clone, Copy)]
struct Call<'a> {
    name: &'a str,
    who: &'a str,
    ip: &'a str,
    error: Option<&'a str>,
    stage: Option<&'a str>,
}

fn read<'a>(who: &'a str, ip: &'a str) -> Call<'a> {
    Call {
        name: "GetSecretValue",
        who,
        ip,
        error: None,
        stage: None,
    }
}

fn denied(who: &str) -> Call<'_> {
    Call {
        error: Some("AccessDenied"),
        ..read(who, "10.0.1.2")
    }
}

fn stage<'a>(who: &'a str, stage: &'a str) -> Call<'a> {
    Call {
        stage: Some(stage),
        ..read(who, "10.0.1.1")
    }
}

fn identity(who: &str) -> Value {
    if let Some(service) = who.strip_prefix("service:") {
        json!({"type": "AWSService", "invokedBy": service})
    } else if who.contains(":user/") {
        json!({"type": "IAMUser", "arn": who, "accountId": ACCOUNT, "principalId": "AIDAX", "userName": "deploy"})
    } else {
        let role_arn = who
            .replace(":sts::", ":iam::")
            .replace("assumed-role/", "role/");
        let role_arn = role_arn
            .rsplit_once('/')
            .map_or(role_arn.clone(), |(r, _)| r.to_string());
        json!({"type": "AssumedRole", "arn": who, "accountId": ACCOUNT, "principalId": "AROAX:s",
               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role_arn},
                                  "attributes": {"mfaAuthenticated": "false"}}})
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Trail {
    fn new(arns: &BTreeMap<&'static str, (String, String)>) -> Trail {
        let ids = arns
            .iter()
            .map(|(label, (name, arn))| {
                let partial = arn[..arn.len() - 7].to_string();
                (*label, [name.clone(), arn.clone(), partial])
            })
            .collect();
        Trail { next: 0, ids }
    }

    fn id(&mut self) -> String {
        self.next += 1;
        format!("0a1b2c3d-0000-4000-8000-{:012}", self.next)
    }

    /// A Secrets Manager call on one inventory secret (`label`), naming it by name, ARN or
    /// partial ARN in turn.
    fn sm(&mut self, t: i64, label: &'static str, c: Call<'_>) -> Rec {
        let id = self.id();
        let form = (self.next % 3) as usize;
        let secret_id = self.ids[label][form].clone();
        let mut params = json!({"secretId": secret_id});
        if let Some(stage) = c.stage {
            params["versionStage"] = json!(stage);
        }
        let mut v = json!({
            "eventVersion": "1.09", "userIdentity": identity(c.who), "eventTime": iso(t),
            "eventSource": "secretsmanager.amazonaws.com", "eventName": c.name,
            "awsRegion": "us-east-1", "sourceIPAddress": c.ip, "userAgent": "aws-sdk-rust",
            "requestParameters": params, "responseElements": null, "requestID": id.clone(),
            "eventID": id.clone(), "readOnly": true, "eventType": "AwsApiCall",
            "managementEvent": true, "recipientAccountId": ACCOUNT,
            "tlsDetails": {"tlsVersion": "TLSv1.3"}
        });
        if let Some(e) = c.error {
            v["errorCode"] = json!(e);
            v["errorMessage"] = json!("User is not authorized to perform this action");
        }
        let outcome = match c.error {
            None => "success",
            Some(e) if e.contains("AccessDenied") => "denied",
            Some(_) => "error",
        };
        let event = match c.name {
            "GetSecretValue" | "DescribeSecret" | "BatchGetSecretValue" | "PutSecretValue" => {
                // Leak-free &'static for the labels used here.
                match c.name {
                    "GetSecretValue" => "GetSecretValue",
                    "DescribeSecret" => "DescribeSecret",
                    "BatchGetSecretValue" => "BatchGetSecretValue",
                    _ => "PutSecretValue",
                }
            }
            _ => "other",
        };
        Rec {
            t,
            line: v.to_string(),
            id,
            counts: vec![(label, event, outcome)],
        }
    }

    /// BatchGetSecretValue of several secrets.
    fn batch(&mut self, t: i64, labels: &[&'static str], who: &str, ip: &str) -> Rec {
        let id = self.id();
        let list: Vec<String> = labels.iter().map(|l| self.ids[l][1].clone()).collect();
        let v = json!({
            "eventVersion": "1.09", "userIdentity": identity(who), "eventTime": iso(t),
            "eventSource": "secretsmanager.amazonaws.com", "eventName": "BatchGetSecretValue",
            "sourceIPAddress": ip, "requestParameters": {"secretIdList": list},
            "eventID": id.clone()
        });
        Rec {
            t,
            line: v.to_string(),
            id,
            counts: labels
                .iter()
                .map(|l| (*l, "BatchGetSecretValue", "success"))
                .collect(),
        }
    }

    /// A record that must not count: another event source, an unwatched secret, no secretId.
    fn noise(&mut self, t: i64, i: u64) -> Rec {
        let id = self.id();
        let v = match i % 3 {
            0 => json!({"eventID": id, "eventTime": iso(t), "eventSource": "kms.amazonaws.com",
                        "eventName": "Decrypt", "userIdentity": identity(&role("i-1")),
                        "sourceIPAddress": "10.0.0.1",
                        "requestParameters": {"encryptionContext": {"SecretARN": "secretsmanager.amazonaws.com"}}}),
            1 => {
                json!({"eventID": id, "eventTime": iso(t), "eventSource": "secretsmanager.amazonaws.com",
                        "eventName": "GetSecretValue", "userIdentity": identity(&role("i-1")),
                        "sourceIPAddress": "10.0.0.1", "requestParameters": {"secretId": "svc/unwatched"}})
            }
            _ => {
                json!({"eventID": id, "eventTime": iso(t), "eventSource": "secretsmanager.amazonaws.com",
                        "eventName": "ListSecrets", "userIdentity": identity(&role("i-1")),
                        "sourceIPAddress": "10.0.0.1", "requestParameters": null})
            }
        };
        Rec {
            t,
            line: v.to_string(),
            id: String::new(),
            counts: vec![],
        }
    }
}

/// A skipped line: not JSON, truncated, or with a field of the wrong type. Each mentions the
/// Secrets Manager event source so that the FilterLogEvents pattern returns it.
fn malformed(t: i64, i: u64) -> Rec {
    let line = match i % 3 {
        0 => "secretsmanager.amazonaws.com CloudTrail delivery notice: not a record".to_string(),
        1 => format!(
            "{{\"eventID\":\"trunc-{i}\",\"eventSource\":\"secretsmanager.amazonaws.com\",\"eventName\":\"GetSec"
        ),
        _ => format!(
            "{{\"eventID\":{i},\"eventSource\":\"secretsmanager.amazonaws.com\",\"eventName\":\"GetSecretValue\"}}"
        ),
    };
    Rec {
        t,
        line,
        id: String::new(),
        counts: vec![],
    }
}

/// Writes records to a stream in time-ordered batches.
async fn put(client: &logs::Client, stream: &str, recs: &[Rec]) {
    let _ = client
        .create_log_stream()
        .log_group_name(GROUP)
        .log_stream_name(stream)
        .send()
        .await;
    let mut sorted: Vec<&Rec> = recs.iter().collect();
    sorted.sort_by_key(|r| r.t);
    for chunk in sorted.chunks(1000) {
        let events: Vec<logs::types::InputLogEvent> = chunk
            .iter()
            .map(|r| {
                logs::types::InputLogEvent::builder()
                    .timestamp(r.t)
                    .message(&r.line)
                    .build()
                    .unwrap()
            })
            .collect();
        client
            .put_log_events()
            .log_group_name(GROUP)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put_log_events: {e:?}"));
    }
}

/// Expected counter values from the records counted once each.
fn expected(recs: &[&Rec]) -> BTreeMap<(String, String, String), u64> {
    expected_counts(recs.iter().map(|r| (r.id.as_str(), r.counts.as_slice())))
}

/// The access counters a set of records must produce: each eventID counted once, its
/// (secret, event, outcome) label sets added up. Shared with the SQS tests.
pub(crate) fn expected_counts<'a>(
    recs: impl IntoIterator<Item = (&'a str, &'a [(&'static str, &'static str, &'static str)])>,
) -> BTreeMap<(String, String, String), u64> {
    let mut m = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for (id, counts) in recs {
        if counts.is_empty() || !ids.insert(id) {
            continue;
        }
        for (s, e, o) in counts {
            *m.entry((s.to_string(), e.to_string(), o.to_string()))
                .or_default() += 1;
        }
    }
    m
}

/// The non-zero `keywarden_secret_access_events_total` series of a scrape. Shared with the SQS
/// tests.
pub(crate) fn counted(s: &Scrape) -> BTreeMap<(String, String, String), u64> {
    s.samples
        .iter()
        .filter(|x| x.name == "keywarden_secret_access_events_total" && x.value > 0.0)
        .map(|x| {
            (
                (
                    x.labels["secret"].clone(),
                    x.labels["event"].clone(),
                    x.labels["outcome"].clone(),
                ),
                x.value as u64,
            )
        })
        .collect()
}

fn anomalies(s: &Scrape) -> BTreeMap<(String, String), u64> {
    s.samples
        .iter()
        .filter(|x| x.name == "keywarden_secret_access_anomalies_total" && x.value > 0.0)
        .map(|x| {
            (
                (x.labels["secret"].clone(), x.labels["kind"].clone()),
                x.value as u64,
            )
        })
        .collect()
}

fn access_cycles(s: &Scrape) -> f64 {
    s.get(
        "keywarden_poll_duration_seconds_count",
        &[("source", "access")],
    )
    .unwrap_or(0.0)
}

/// Waits until the counters equal `want`, then for two more access cycles to prove they stay.
async fn wait_exact(d: &Daemon, want: &BTreeMap<(String, String, String), u64>) -> Scrape {
    let s = d
        .wait_for("exact access counters", Duration::from_secs(40), |s| {
            counted(s) == *want
        })
        .await;
    let cycles = access_cycles(&s);
    let s = d
        .wait_for("two more access cycles", Duration::from_secs(20), |s| {
            access_cycles(s) >= cycles + 2.0
        })
        .await;
    assert_eq!(counted(&s), *want, "counters moved after settling");
    s
}

struct World {
    _moto: Moto,
    logs: logs::Client,
    trail: Trail,
    config: String,
    t0: i64,
}

/// Three inventory secrets in moto, an empty log group, and the daemon configuration.
async fn world() -> World {
    world_with_group(true).await
}

async fn world_with_group(create_group: bool) -> World {
    world_on(create_group, Backend::Sqlite).await
}

/// The world with the state store on `backend`.
async fn world_on(create_group: bool, backend: Backend) -> World {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let mut arns = BTreeMap::new();
    for (label, name, age) in [
        ("JWT", "svc/jwt", 10),
        ("DB", "svc/db", 10),
        ("QUIET", "svc/quiet", 1),
    ] {
        create_aged_secret(&moto, &sm, name, age).await;
        let arn = sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_string();
        arns.insert(label, (name.to_string(), arn));
    }
    let logs = moto.logs_client().await;
    if create_group {
        logs.create_log_group()
            .log_group_name(GROUP)
            .send()
            .await
            .unwrap();
    }
    let consumers = format!(
        "[\"arn:aws:sts::{ACCOUNT}:assumed-role/app-*/*\", \"arn:aws:iam::{ACCOUNT}:user/deploy\"]"
    );
    let mut config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\n\
         [poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n\
         [access]\nlog_group = \"{GROUP}\"\noverlap = \"30m\"\nbaseline = \"14d\"\n\
         max_requests_per_second = 50\nspike_factor = 5\nspike_min_reads = 20\ndenied_burst = 5\n\
         {}",
        moto.endpoint(),
        backend.state_section(&moto)
    );
    for (label, name, grace) in [
        ("JWT", "svc/jwt", "48h"),
        ("DB", "svc/db", "0s"),
        ("QUIET", "svc/quiet", "48h"),
    ] {
        config.push_str(&format!(
            "[[secret]]\nname = \"{label}\"\nid = \"{name}\"\nconsumers = {consumers}\n\
             allowed_sources = [\"10.0.0.0/8\"]\nrotation = {{ strategy = \"dual-key\", grace = \"{grace}\" }}\n"
        ));
    }
    let t0 = now() * 1000;
    World {
        _moto: moto,
        logs,
        trail: Trail::new(&arns),
        config,
        t0,
    }
}

/// History over the last six hours (until 35 minutes ago): two app sessions read JWT and DB
/// every 30 s each (20 reads per 5 minutes per secret), a legacy job and i-1 read QUIET, the
/// deploy user describes, noise from other sources and malformed lines.
fn history(w: &mut World) -> Vec<Rec> {
    let mut v = Vec::new();
    let start = w.t0 - 6 * 60 * MIN;
    let end = w.t0 - 35 * MIN;
    let (i1, i2) = (role("i-1"), role("i-2"));
    let legacy = format!("arn:aws:sts::{ACCOUNT}:assumed-role/legacy-job/cron");
    let mut t = start;
    let mut n = 0u64;
    while t < end {
        for label in ["JWT", "DB"] {
            v.push(w.trail.sm(t, label, read(&i1, "10.0.1.1")));
            v.push(w.trail.sm(t + 1000, label, read(&i2, "10.0.1.2")));
        }
        if n.is_multiple_of(20) {
            v.push(w.trail.sm(t + 2000, "QUIET", read(&i1, "10.0.1.1")));
            v.push(w.trail.noise(t + 3000, n));
        }
        if n.is_multiple_of(60) {
            v.push(w.trail.sm(t + 4000, "QUIET", read(&legacy, "10.0.9.9")));
            v.push(malformed(t + 5000, n));
            v.push(w.trail.sm(
                t + 6000,
                "DB",
                Call {
                    name: "DescribeSecret",
                    ..read(&format!("arn:aws:iam::{ACCOUNT}:user/deploy"), "10.0.2.2")
                },
            ));
        }
        t += 30_000;
        n += 1;
    }
    v
}

/// Steady traffic like the history's, over `[from, to)`.
fn steady(w: &mut World, from: i64, to: i64) -> Vec<Rec> {
    let (i1, i2) = (role("i-1"), role("i-2"));
    let mut v = Vec::new();
    let mut t = from;
    let mut n = 0u64;
    while t < to {
        for label in ["JWT", "DB"] {
            v.push(w.trail.sm(t, label, read(&i1, "10.0.1.1")));
            v.push(w.trail.sm(t + 1000, label, read(&i2, "10.0.1.2")));
        }
        v.push(w.trail.noise(t + 2000, n));
        t += 30_000;
        n += 1;
    }
    v
}

/// Live batch A (20 to 2 minutes ago, inside the overlap): steady traffic plus every anomaly
/// scenario, firing and quiet.
fn batch_a(w: &mut World) -> Vec<Rec> {
    let from = w.t0 - 20 * MIN;
    let mut v = steady(w, from, w.t0 - 2 * MIN);
    let (i1, i2, i3) = (role("i-1"), role("i-2"), role("i-3"));
    let intruder = format!("arn:aws:sts::{ACCOUNT}:assumed-role/intruder/x");
    let legacy = format!("arn:aws:sts::{ACCOUNT}:assumed-role/legacy-job/cron");
    // A bucket fully inside batch A for the spike (DB, fires) and the near-spike (JWT, quiet).
    let bucket = (from + 2 * MIN + BUCKET - 1) / BUCKET * BUCKET;
    for k in 0..150 {
        v.push(
            w.trail
                .sm(bucket + 30_000 + k * 300, "DB", read(&i1, "10.0.1.1")),
        );
    }
    for k in 0..60 {
        v.push(
            w.trail
                .sm(bucket + 30_000 + k * 300, "JWT", read(&i2, "10.0.1.2")),
        );
    }
    // new_principal only: a new declared session reads JWT three times.
    for k in 0..3 {
        v.push(
            w.trail
                .sm(from + 60_000 + k * MIN, "JWT", read(&i3, "10.0.1.3")),
        );
    }
    // new_principal + undeclared_consumer, once: an unknown role reads DB four times.
    for k in 0..4 {
        v.push(w.trail.sm(
            from + 90_000 + k * 2 * MIN,
            "DB",
            read(&intruder, "10.9.9.9"),
        ));
    }
    // undeclared_consumer only: the legacy job known from history reads QUIET.
    v.push(
        w.trail
            .sm(from + 100_000, "QUIET", read(&legacy, "10.0.9.9")),
    );
    // unexpected_source: a known app session reads DB from outside 10/8; an AWS service
    // calling from outside is exempt.
    v.push(w.trail.sm(from + 110_000, "DB", read(&i1, "203.0.113.50")));
    v.push(w.trail.sm(
        from + 120_000,
        "DB",
        Call {
            name: "DescribeSecret",
            ..read(
                "service:secretsmanager.amazonaws.com",
                "secretsmanager.amazonaws.com",
            )
        },
    ));
    // denied_burst: six denied reads of JWT within a minute (fires once); four on DB (quiet);
    // five on QUIET spread over 25 minutes (quiet).
    for k in 0..6 {
        v.push(w.trail.sm(from + 5 * MIN + k * 10_000, "JWT", denied(&i2)));
    }
    for k in 0..4 {
        v.push(w.trail.sm(from + 5 * MIN + k * 10_000, "DB", denied(&i2)));
    }
    for k in 0..5 {
        v.push(
            w.trail
                .sm(from - 8 * MIN + k * 5 * MIN, "QUIET", denied(&i2)),
        );
    }
    // An error that is not a denial, and a write.
    v.push(w.trail.sm(
        from + 7 * MIN,
        "DB",
        Call {
            error: Some("ResourceNotFoundException"),
            ..read(&i1, "10.0.1.1")
        },
    ));
    v.push(w.trail.sm(
        from + 8 * MIN,
        "QUIET",
        Call {
            name: "PutSecretValue",
            ..read(&format!("arn:aws:iam::{ACCOUNT}:user/deploy"), "10.0.2.2")
        },
    ));
    // Two secrets in one BatchGetSecretValue.
    v.push(
        w.trail
            .batch(from + 9 * MIN, &["JWT", "DB"], &i2, "10.0.1.2"),
    );
    for k in 0..6 {
        v.push(malformed(from + k * MIN + 7, 1000 + k as u64));
    }
    v
}

/// Batch B, written while the daemon runs: new events, late events older than the checkpoint
/// but inside the overlap, duplicate deliveries of batch A, malformed lines, and reads of
/// previous versions (JWT after its grace: fires; QUIET within its grace: quiet).
fn batch_b(w: &mut World, a: &[Rec], now_ms: i64) -> (Vec<Rec>, Vec<Rec>) {
    let (i1, i2) = (role("i-1"), role("i-2"));
    let late_from = now_ms - 10 * MIN;
    let mut late = Vec::new();
    for k in 0..40 {
        late.push(
            w.trail
                .sm(late_from + k * 5000, "DB", read(&i2, "10.0.1.2")),
        );
    }
    for k in 0..3 {
        late.push(malformed(late_from + k * 1000 + 11, 2000 + k as u64));
    }
    // Duplicate deliveries: the same records again, in another stream.
    let mut dups: Vec<Rec> = a
        .iter()
        .filter(|r| !r.counts.is_empty())
        .step_by(7)
        .cloned()
        .collect();
    dups.truncate(120);
    late.extend(dups);
    let mut fresh = steady(w, now_ms - 30_000, now_ms);
    fresh.push(
        w.trail
            .sm(now_ms - 20_000, "JWT", stage(&i1, "AWSPREVIOUS")),
    );
    fresh.push(
        w.trail
            .sm(now_ms - 19_000, "QUIET", stage(&i1, "AWSPREVIOUS")),
    );
    fresh.push(w.trail.sm(now_ms - 18_000, "JWT", stage(&i1, "AWSCURRENT")));
    (late, fresh)
}

fn want_anomalies(rows: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    rows.iter()
        .map(|(s, k, n)| ((s.to_string(), k.to_string()), *n))
        .collect()
}

#[tokio::test]
async fn cloudtrail_stream_counts_exactly_and_raises_each_anomaly_once() {
    let mut w = world().await;
    let hist = history(&mut w);
    let a = batch_a(&mut w);
    assert!(
        hist.len() + a.len() > 3000,
        "a realistic volume: {}",
        hist.len() + a.len()
    );
    put(&w.logs, "123456789012_CloudTrail_us-east-1_1", &hist).await;
    put(&w.logs, "123456789012_CloudTrail_us-east-1_2", &a).await;

    // With the admin token, so that `GET /anomalies` shows principals and IPs (issue #15).
    let config = w.config.replacen(
        "[server]\n",
        "[server]\nadmin_token_env = \"KW_TEST_TOKEN\"\n",
        1,
    );
    let d = Daemon::start_in_env(
        tempfile::tempdir().expect("temp dir"),
        crate::support::free_port(),
        &config,
        &[("KW_TEST_TOKEN", "access-admin-token-0123456789abcdef0123")],
    )
    .await;
    let want_a = expected(&a.iter().collect::<Vec<_>>());
    let s = wait_exact(&d, &want_a).await;
    // Counters exist at 0 from the start for every inventory secret.
    for label in ["JWT", "DB", "QUIET"] {
        assert!(
            s.get(
                "keywarden_secret_access_anomalies_total",
                &[("secret", label), ("kind", "rate_spike")]
            )
            .is_some(),
            "{label}"
        );
    }
    let after_a = want_anomalies(&[
        ("JWT", "new_principal", 1),
        ("JWT", "denied_burst", 1),
        ("DB", "new_principal", 1),
        ("DB", "undeclared_consumer", 1),
        ("DB", "rate_spike", 1),
        ("DB", "unexpected_source", 1),
        ("QUIET", "undeclared_consumer", 1),
    ]);
    assert_eq!(anomalies(&s), after_a, "log:\n{}", d.log());

    // Batch B while the daemon runs.
    let now_ms = now() * 1000;
    let (late, fresh) = batch_b(&mut w, &a, now_ms);
    put(&w.logs, "123456789012_CloudTrail_us-east-1_3", &late).await;
    put(&w.logs, "123456789012_CloudTrail_us-east-1_4", &fresh).await;
    let all: Vec<&Rec> = a.iter().chain(&late).chain(&fresh).collect();
    let s = wait_exact(&d, &expected(&all)).await;
    let mut after_b = after_a.clone();
    after_b.insert(("JWT".into(), "previous_version_read".into()), 1);
    assert_eq!(anomalies(&s), after_b, "log:\n{}", d.log());

    // Every FilterLogEvents call is counted under service `logs`.
    assert!(
        s.get(
            "keywarden_aws_requests_total",
            &[
                ("service", "logs"),
                ("operation", "FilterLogEvents"),
                ("outcome", "ok")
            ]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    // Gauges and GET /anomalies: details there, never in labels.
    assert_eq!(
        s.get("keywarden_secret_principals", &[("secret", "DB")]),
        Some(3.0)
    );
    assert_eq!(
        s.get("keywarden_secret_principals", &[("secret", "JWT")]),
        Some(3.0)
    );
    assert!(!s.text.contains("intruder") && !s.text.contains("10.9.9.9"));
    let (status, body) = d.get("/anomalies").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    let list = body["anomalies"].as_array().unwrap();
    assert_eq!(list.len() as u64, after_b.values().sum::<u64>());
    assert_eq!(
        list[0]["kind"], "previous_version_read",
        "newest first: {body}"
    );
    let intruder = list
        .iter()
        .find(|x| x["kind"] == "undeclared_consumer" && x["secret"] == "DB")
        .unwrap();
    assert_eq!(
        intruder["principal"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/intruder/x")
    );
    assert_eq!(intruder["source_ip"], "10.9.9.9");
    assert!(
        intruder["event_id"]
            .as_str()
            .unwrap()
            .starts_with("0a1b2c3d-")
    );
    assert!(intruder["time"].as_str().unwrap().ends_with('Z'));
    // 6 malformed lines in A and 3 in B, each once although the overlap re-reads them.
    assert_eq!(body["skipped_records"], 9, "{body}");
    assert!(body["repeated_events"].as_u64().unwrap() > 0, "{body}");
    // One structured log line per anomaly.
    let log = d.log();
    assert_eq!(
        log.matches("Access anomaly.").count() as u64,
        after_b.values().sum::<u64>(),
        "{log}"
    );
    assert!(log.contains("intruder/x"));

    // keywarden consumers reads the log group itself.
    let config_path = d.dir.path().join("keywarden.toml");
    let out = keywarden_command()
        .args([
            "consumers",
            "DB",
            "--since",
            "1d",
            "--output",
            "json",
            "--config",
        ])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |p: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["principal"] == p)
            .cloned()
    };
    let intruder = row(&format!("arn:aws:sts::{ACCOUNT}:assumed-role/intruder/x")).unwrap();
    assert_eq!(intruder["reads"], 4);
    assert_eq!(intruder["declared"], false);
    assert_eq!(intruder["source_ips"], json!(["10.9.9.9"]));
    let i1 = row(&role("i-1")).unwrap();
    assert_eq!(i1["declared"], true);
    let i1_reads = hist
        .iter()
        .chain(&a)
        .chain(&late)
        .chain(&fresh)
        .filter(|r| {
            r.line.contains(&format!("\"arn\":\"{}\"", role("i-1")))
                && r.line.contains("\"GetSecretValue\"")
                && !r.line.contains("errorCode")
                && r.counts.first().is_some_and(|c| c.0 == "DB")
        })
        .map(|r| r.id.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(i1["reads"], i1_reads as u64);
    let table = keywarden_command()
        .args(["consumers", "DB", "--since", "1d", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("PRINCIPAL"), "{text}");
    assert!(String::from_utf8_lossy(&table.stderr).contains("log events"));
}

#[tokio::test]
async fn kill_9_and_restart_counts_nothing_twice() {
    let mut w = world().await;
    let hist = history(&mut w);
    let a = batch_a(&mut w);
    put(&w.logs, "s1", &hist).await;
    put(&w.logs, "s2", &a).await;
    let d = Daemon::start(&w.config).await;
    wait_exact(&d, &expected(&a.iter().collect::<Vec<_>>())).await;
    let port = d.addr.port();
    let dir = d.kill9();

    // While it is down: late events, duplicates of what it counted, new events.
    let now_ms = now() * 1000;
    let (late, fresh) = batch_b(&mut w, &a, now_ms);
    put(&w.logs, "s3", &late).await;
    put(&w.logs, "s4", &fresh).await;

    let d = Daemon::start_in(dir, port, &w.config).await;
    // The new process counts only what the first one had not: batch B without duplicates.
    let only_b: Vec<&Rec> = late
        .iter()
        .chain(&fresh)
        .filter(|r| !a.iter().any(|x| x.id == r.id))
        .collect();
    let s = wait_exact(&d, &expected(&only_b)).await;
    // Principals were restored: nothing is new again; the previous-version read is.
    assert_eq!(
        anomalies(&s),
        want_anomalies(&[("JWT", "previous_version_read", 1)]),
        "log:\n{}",
        d.log()
    );
    assert_eq!(
        s.get("keywarden_secret_principals", &[("secret", "DB")]),
        Some(3.0)
    );
}

#[tokio::test]
async fn missing_log_group_is_a_counted_poll_error_until_it_appears() {
    let w = world_with_group(false).await;
    let d = Daemon::start(&w.config).await;
    let s = d
        .wait_for("an access poll error", Duration::from_secs(30), |s| {
            s.sum("keywarden_poll_errors_total", &[("source", "access")]) >= 1.0
        })
        .await;
    assert_eq!(
        s.sum(
            "keywarden_poll_errors_total",
            &[("source", "access"), ("kind", "not_found")]
        ),
        s.sum("keywarden_poll_errors_total", &[("source", "access")]),
        "{}",
        s.text
    );
    let (status, body) = d.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("access"), "{body}");
    // The group appears: the poller recovers.
    w.logs
        .create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    d.wait_for("a successful access poll", Duration::from_secs(30), |s| {
        s.get(
            "keywarden_last_successful_poll_timestamp_seconds",
            &[("source", "access")],
        )
        .is_some()
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = d.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The eventIDs in the store's `access_seen` table of the store in `dir` (no daemon running).
fn stored_ids(dir: &std::path::Path) -> std::collections::HashSet<String> {
    if let Some(t) = crate::support::dynamo_table_of(dir) {
        use keywarden::access::store::AccessState;
        return t
            .restore(GROUP, 0)
            .expect("read the access state")
            .seen
            .into_keys()
            .collect();
    }
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

/// Crashes the daemon at the failpoint `point` of the access poller's first slice commit
/// (batch A is in that slice), writes batch B, restarts, and returns what the restarted
/// daemon exported: its settled scrape, its `GET /anomalies` body, and the daemon.
async fn crash_in_the_first_commit(
    point: &str,
    commit_landed: bool,
    backend: Backend,
) -> (Scrape, Value, Daemon) {
    let mut w = world_on(true, backend).await;
    let hist = history(&mut w);
    let a = batch_a(&mut w);
    put(&w.logs, "s1", &hist).await;
    put(&w.logs, "s2", &a).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let d = Daemon::launch_in_env(dir, port, &w.config, &[("KEYWARDEN_FAILPOINT", point)]);
    let dir = d.wait_exit(Duration::from_secs(90));
    let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {point} reached")),
        "the daemon did not stop at {point}; log:\n{log}"
    );
    // What the store holds after the crash: all of batch A's counted ids, or none of them.
    let stored = stored_ids(dir.path());
    let a_ids: Vec<&str> = a
        .iter()
        .filter(|r| !r.counts.is_empty())
        .map(|r| r.id.as_str())
        .collect();
    let a_stored = a_ids.iter().filter(|id| stored.contains(**id)).count();
    let want_stored = if commit_landed { a_ids.len() } else { 0 };
    assert_eq!(
        a_stored,
        want_stored,
        "batch A eventIDs in the store after a crash at {point} (of {})",
        a_ids.len()
    );

    // While it is down: late events, duplicates of batch A, new events.
    let now_ms = now() * 1000;
    let (late, fresh) = batch_b(&mut w, &a, now_ms);
    put(&w.logs, "s3", &late).await;
    put(&w.logs, "s4", &fresh).await;
    let d = Daemon::start_in(dir, port, &w.config).await;
    let want: Vec<&Rec> = if commit_landed {
        // The first process committed batch A; the second counts only what is new to it.
        late.iter()
            .chain(&fresh)
            .filter(|r| !a.iter().any(|x| x.id == r.id))
            .collect()
    } else {
        a.iter().chain(&late).chain(&fresh).collect()
    };
    let s = wait_exact(&d, &expected(&want)).await;
    let (status, body) = d.get("/anomalies").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("anomalies JSON");
    (s, body, d)
}

/// The number of `GET /anomalies` entries per (secret, kind).
fn listed(body: &Value) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for x in body["anomalies"].as_array().expect("anomalies list") {
        let key = (
            x["secret"].as_str().unwrap_or("").to_string(),
            x["kind"].as_str().unwrap_or("").to_string(),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

/// A crash with the slice's transaction written but not committed: nothing of it is durable,
/// so the restarted daemon reads batch A again and counts every eventID of A and B exactly
/// once, and raises each anomaly exactly once (none lost, none doubled).
#[tokio::test]
async fn crash_before_the_access_commit_loses_and_doubles_nothing() {
    crash_before_the_access_commit(Backend::Sqlite).await;
}

#[tokio::test]
async fn crash_before_the_access_commit_loses_and_doubles_nothing_on_dynamodb() {
    crash_before_the_access_commit(Backend::Dynamo).await;
}

async fn crash_before_the_access_commit(backend: Backend) {
    let (s, body, d) = crash_in_the_first_commit("access:before-commit", false, backend).await;
    let want = want_anomalies(&[
        ("JWT", "new_principal", 1),
        ("JWT", "denied_burst", 1),
        ("JWT", "previous_version_read", 1),
        ("DB", "new_principal", 1),
        ("DB", "undeclared_consumer", 1),
        ("DB", "rate_spike", 1),
        ("DB", "unexpected_source", 1),
        ("QUIET", "undeclared_consumer", 1),
    ]);
    assert_eq!(anomalies(&s), want, "log:\n{}", d.log());
    assert_eq!(listed(&body), want, "GET /anomalies: {body}");
    assert_eq!(
        d.log().matches("Access anomaly.").count() as u64,
        want.values().sum::<u64>(),
        "one log line per anomaly"
    );
}

/// A crash right after the slice's commit, before anything was exported: the restarted daemon
/// counts nothing of batch A again (its eventIDs are in the store) and counts batch B exactly
/// once; no anomaly of batch A is raised a second time.
///
/// Known gap (reported): batch A's counter increments and its anomalies were in memory only
/// when the process died, so they never reach the metrics, the log or `GET /anomalies`; the
/// store has no outbox for them. This test proves the "never twice" half.
#[tokio::test]
async fn crash_after_the_access_commit_counts_nothing_twice() {
    crash_after_the_access_commit(Backend::Sqlite).await;
}

#[tokio::test]
async fn crash_after_the_access_commit_counts_nothing_twice_on_dynamodb() {
    crash_after_the_access_commit(Backend::Dynamo).await;
}

async fn crash_after_the_access_commit(backend: Backend) {
    let (s, body, d) = crash_in_the_first_commit("access:committed", true, backend).await;
    let want = want_anomalies(&[("JWT", "previous_version_read", 1)]);
    assert_eq!(anomalies(&s), want, "log:\n{}", d.log());
    assert_eq!(listed(&body), want, "GET /anomalies: {body}");
}
