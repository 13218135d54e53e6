//! Pre-rotation reminders against moto: an SQS queue subscribed to the SNS topic receives what
//! keywarden publishes. Timing at the lead boundary, exactly once across kill -9, a topic that
//! appears late, the overdue notice, a rotation starting a new cycle, FIFO deduplication,
//! content and attributes, and no secret value anywhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keywarden::store::Store;

use crate::support::{Backend, Daemon, Moto, Scrape, http, now};

const DAY: i64 = 86_400;
const ACCOUNT: &str = "123456789012";
/// Every secret value in these tests contains this; it must never leave Secrets Manager.
const CANARY: &str = "CANARY-7f3a9c-never-publish-me";

/// The SNS and SQS calls the tests make, over the services' wire protocols (moto does not check
/// signatures; the Authorization header only routes the request).
pub(crate) struct Wire {
    endpoint: String,
}

/// One message as SNS delivered it to the queue (the JSON envelope).
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The SNS MessageId.
    pub(crate) sns_id: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) attributes: BTreeMap<String, String>,
    /// SQS attributes (MessageGroupId, MessageDeduplicationId on FIFO queues).
    pub(crate) sqs: BTreeMap<String, String>,
    /// When SNS accepted it (the envelope's Timestamp), seconds since the epoch.
    pub(crate) published_at: i64,
}

fn auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

impl Wire {
    pub(crate) fn new(moto: &Moto) -> Wire {
        Wire {
            endpoint: moto.endpoint(),
        }
    }

    pub(crate) async fn sqs(&self, op: &str, body: serde_json::Value) -> serde_json::Value {
        let target = format!("AmazonSQS.{op}");
        let auth = auth("sqs");
        let (status, _, text) = http(
            "POST",
            &format!("{}/", self.endpoint),
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", &target),
                ("authorization", &auth),
            ],
            Some(body.to_string()),
        )
        .await;
        assert_eq!(status, 200, "SQS {op}: {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    pub(crate) async fn sns(&self, params: &[(&str, &str)]) -> String {
        let form: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let auth = auth("sns");
        let (status, _, text) = http(
            "POST",
            &format!("{}/", self.endpoint),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &auth),
            ],
            Some(form.join("&")),
        )
        .await;
        assert_eq!(status, 200, "SNS {params:?}: {text}");
        text
    }

    /// Creates a queue (FIFO when the name ends in `.fifo`); returns its URL.
    pub(crate) async fn create_queue(&self, name: &str) -> String {
        let mut body = serde_json::json!({ "QueueName": name });
        if name.ends_with(".fifo") {
            body["Attributes"] = serde_json::json!({ "FifoQueue": "true" });
        }
        let v = self.sqs("CreateQueue", body).await;
        v["QueueUrl"].as_str().expect("QueueUrl").to_string()
    }

    /// Creates a topic (FIFO when the name ends in `.fifo`); returns its ARN.
    pub(crate) async fn create_topic(&self, name: &str) -> String {
        let mut params = vec![("Action", "CreateTopic"), ("Name", name)];
        if name.ends_with(".fifo") {
            params.extend([
                ("Attributes.entry.1.key", "FifoTopic"),
                ("Attributes.entry.1.value", "true"),
            ]);
        }
        self.sns(&params).await;
        topic_arn(name)
    }

    /// Subscribes the queue to the topic (JSON envelope delivery).
    pub(crate) async fn subscribe(&self, topic_arn: &str, queue: &str) {
        let queue_arn = format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}");
        self.sns(&[
            ("Action", "Subscribe"),
            ("TopicArn", topic_arn),
            ("Protocol", "sqs"),
            ("Endpoint", &queue_arn),
        ])
        .await;
    }

    /// Receives (and deletes) whatever the queue holds now.
    pub(crate) async fn drain(&self, queue_url: &str) -> Vec<Delivered> {
        let mut out = Vec::new();
        loop {
            let v = self
                .sqs(
                    "ReceiveMessage",
                    serde_json::json!({
                        "QueueUrl": queue_url,
                        "MaxNumberOfMessages": 10,
                        "AttributeNames": ["All"],
                    }),
                )
                .await;
            let messages = v["Messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let envelope: serde_json::Value =
                    serde_json::from_str(m["Body"].as_str().expect("Body")).expect("SNS envelope");
                let attributes = envelope["MessageAttributes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| {
                                assert_eq!(v["Type"], "String", "attribute {k}");
                                (k.clone(), v["Value"].as_str().unwrap_or("").to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let sqs = m["Attributes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Delivered {
                    sns_id: envelope["MessageId"].as_str().unwrap_or("").to_string(),
                    subject: envelope["Subject"].as_str().unwrap_or("").to_string(),
                    body: envelope["Message"].as_str().unwrap_or("").to_string(),
                    attributes,
                    sqs,
                    published_at: envelope["Timestamp"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map_or(0, |t| t.timestamp()),
                });
                self.sqs(
                    "DeleteMessage",
                    serde_json::json!({
                        "QueueUrl": queue_url,
                        "ReceiptHandle": m["ReceiptHandle"],
                    }),
                )
                .await;
            }
        }
    }
}

fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn topic_arn(name: &str) -> String {
    format!("arn:aws:sns:us-east-1:{ACCOUNT}:{name}")
}

/// Creates a secret holding the canary whose AWSCURRENT version was created at `created`.
async fn secret_created_at(
    moto: &Moto,
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
    created: i64,
) {
    client
        .create_secret()
        .name(id)
        .secret_string(format!("{{\"current\":\"{CANARY}-{id}\"}}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e:?}"));
    moto.set_dates(serde_json::json!({
        "secret_id": id,
        "created": created,
        "current_version_created": created,
    }))
    .await;
}

/// The window of the secrets of [`config`]: Tuesdays 03:00 UTC.
const WEEKLY: &str = "cron(0 3 ? * TUE *)";

/// A config: 1 s metadata polls, `[reminders]` on `topic`, and one `[[secret]]` per
/// (name, id) with a 90-day policy and the [`WEEKLY`] window.
fn config(moto: &Moto, topic: &str, secrets: &[(&str, &str)]) -> String {
    let with_window: Vec<(&str, &str, &str)> = secrets
        .iter()
        .map(|(name, id)| (*name, *id, WEEKLY))
        .collect();
    config_windows(moto, topic, &with_window)
}

/// Like [`config`], with each secret's window given: (name, id, window).
fn config_windows(moto: &Moto, topic: &str, secrets: &[(&str, &str, &str)]) -> String {
    config_windows_on(moto, topic, secrets, Backend::Sqlite)
}

/// Like [`config_windows`], with the state store on `backend`.
fn config_windows_on(
    moto: &Moto,
    topic: &str,
    secrets: &[(&str, &str, &str)],
    backend: Backend,
) -> String {
    let mut c = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         {}\
         [reminders]\nlead = [\"14d\"]\nsns_topic_arn = \"{}\"\n",
        moto.endpoint(),
        backend.state_section(moto),
        topic_arn(topic)
    );
    for (name, id, window) in secrets {
        c.push_str(&format!(
            "\n[[secret]]\nname = \"{name}\"\nid = \"{id}\"\nrotate_every = \"90d\"\n\
             severity = \"critical\"\nimpact = \"User auth compromised\"\n\
             consumers = [\"arn:aws:sts::{ACCOUNT}:assumed-role/event-service-*/*\"]\n\
             window = \"{window}\"\n\
             rotation = {{ strategy = \"dual-key\", grace = \"48h\" }}\n"
        ));
    }
    c
}

fn sent(s: &Scrape, secret: &str, lead: &str) -> f64 {
    s.get(
        "keywarden_reminders_sent_total",
        &[("secret", secret), ("lead", lead)],
    )
    .unwrap_or(0.0)
}

fn failures(s: &Scrape, secret: &str) -> f64 {
    s.get("keywarden_reminder_failures_total", &[("secret", secret)])
        .unwrap_or(0.0)
}

/// Collects messages until `done` holds on all received so far, or fails after `limit`.
async fn receive_until(
    wire: &Wire,
    queue: &str,
    got: &mut Vec<Delivered>,
    limit: Duration,
    d: &Daemon,
    done: impl Fn(&[Delivered]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        got.extend(wire.drain(queue).await);
        if done(got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "messages so far: {got:#?}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a few more metadata polls (and reminder evaluations) to pass.
async fn let_polls_pass(d: &Daemon, polls: f64) {
    d.let_polls_pass(polls).await;
}

fn assert_no_canary(what: &str, text: &str) {
    assert!(
        !text.contains(CANARY),
        "a secret value leaked into {what}:\n{text}"
    );
}

#[tokio::test]
async fn lead_boundary_content_attributes_and_no_value_anywhere() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("reminders").await;
    let queue = wire.create_queue("reminders-q").await;
    wire.subscribe(&topic, "reminders-q").await;

    // JWT_SECRET: due - 14d passed 60 s ago, and its planned window (the last Tuesday 03:00
    // before that) is earlier still.
    let t = now();
    let past_created = t - 76 * DAY - 60;
    secret_created_at(&moto, &client, "event-service/jwt-secret", past_created).await;
    // EARLY: its window opens once, at `planned`, 14 days and 40 to 100 s from now; it is due
    // 3 days after that. Its reminder goes 14 days before the planned rotation (issue #13
    // point 5), not 14 days before the due date: 40 to 100 s from now.
    let planned = (t + 14 * DAY + 40 + 59) / 60 * 60;
    let ahead_boundary = planned - 14 * DAY;
    let planned_at = chrono::DateTime::from_timestamp(planned, 0).unwrap();
    let one_shot = planned_at.format("cron(%-M %-H %-d %-m ? %Y)").to_string();
    let early_due = planned + 3 * DAY;
    let ahead_created = early_due - 90 * DAY;
    secret_created_at(&moto, &client, "event-service/early", ahead_created).await;
    let cfg = config_windows(
        &moto,
        "reminders",
        &[
            ("JWT_SECRET", "event-service/jwt-secret", WEEKLY),
            ("EARLY", "event-service/early", &one_shot),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let mut d = Daemon::start_in_with_log(dir, port, &cfg, Some("trace")).await;

    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        !m.is_empty()
    })
    .await;
    d.wait_for("EARLY's planned time", Duration::from_secs(15), |s| {
        s.get(
            "keywarden_secret_rotation_planned_timestamp_seconds",
            &[("secret", "EARLY")],
        ) == Some(planned as f64)
    })
    .await;
    // Two more polls, each followed by a reminder evaluation that knows EARLY's due date.
    let_polls_pass(&d, 2.0).await;
    let s = d.scrape().await;
    got.extend(wire.drain(&queue).await);
    // Before EARLY's boundary only JWT_SECRET's reminder exists. This check never skips: if the
    // boundary passed already, the machine was too slow for it and the test says so.
    assert!(
        now() < ahead_boundary,
        "EARLY's boundary passed before the check could run (the daemon took over 40 s to see \
         its due date and poll twice more)"
    );
    assert_eq!(
        sent(&s, "EARLY", "14d"),
        0.0,
        "EARLY reminded before its lead"
    );
    assert!(got.iter().all(|m| m.attributes["secret"] == "JWT_SECRET"));
    let due = past_created + 90 * DAY;
    let due_date = chrono::DateTime::from_timestamp(due, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let jwt = got
        .iter()
        .find(|m| m.attributes["secret"] == "JWT_SECRET")
        .expect("a JWT_SECRET reminder")
        .clone();
    assert!(jwt.subject.len() < 100, "{}", jwt.subject);
    assert!(jwt.subject.contains("JWT_SECRET"), "{}", jwt.subject);
    // Issue #17 point 2: the reminder names the account and region (the Subject too when they
    // fit in its 100 characters).
    assert!(
        jwt.body.contains("Account:       123456789012\n")
            && jwt.body.contains("Region:        us-east-1\n"),
        "{}",
        jwt.body
    );
    assert!(jwt.subject.contains(&due_date), "{}", jwt.subject);
    assert!(!jwt.subject.contains("OVERDUE"), "{}", jwt.subject);
    assert_eq!(jwt.attributes["severity"], "critical");
    assert_eq!(jwt.attributes["due"], due_date);
    assert_eq!(jwt.attributes["kind"], "reminder");
    for needle in [
        "Secret:        JWT_SECRET".to_string(),
        "Id:            event-service/jwt-secret".to_string(),
        format!("Due date:      {due_date}"),
        "Age:           76 days".to_string(),
        "Interval:      90d".to_string(),
        "Impact:        User auth compromised".to_string(),
        "Severity:      critical".to_string(),
        "Strategy:      dual-key".to_string(),
        format!("  - arn:aws:sts::{ACCOUNT}:assumed-role/event-service-*/*"),
        "not available (access monitoring off)".to_string(),
        "on-call".to_string(),
        "backup of the current value".to_string(),
        "pipeline is green".to_string(),
        "AWSPREVIOUS".to_string(),
        "window cron(0 3 ? * TUE *), next opening".to_string(),
        "Planned:       ".to_string(),
        "Every consumer is known".to_string(),
    ] {
        assert!(
            jwt.body.contains(&needle),
            "body lacks {needle:?}:\n{}",
            jwt.body
        );
    }

    // EARLY's reminder comes once its boundary passed, not before.
    receive_until(&wire, &queue, &mut got, Duration::from_secs(130), &d, |m| {
        m.iter().any(|x| x.attributes["secret"] == "EARLY")
    })
    .await;
    let early = got
        .iter()
        .find(|m| m.attributes["secret"] == "EARLY")
        .unwrap();
    assert!(
        early.published_at >= ahead_boundary,
        "EARLY was published at {} before its boundary {ahead_boundary}",
        early.published_at
    );
    // It names the planned rotation, and still the due date.
    let planned_text = planned_at.format("%Y-%m-%d %H:%M UTC").to_string();
    let early_due_date = chrono::DateTime::from_timestamp(early_due, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    for needle in [
        format!("Planned:       {planned_text}"),
        format!("Due date:      {early_due_date}"),
    ] {
        assert!(
            early.body.contains(&needle),
            "lacks {needle:?}:\n{}",
            early.body
        );
    }
    assert!(early.subject.contains("planned"), "{}", early.subject);
    assert_eq!(early.attributes["planned"], planned_text);
    // Nothing more: one message per (secret, due, lead).
    let_polls_pass(&d, 3.0).await;
    got.extend(wire.drain(&queue).await);
    assert_eq!(got.len(), 2, "{got:#?}");
    let s = d.scrape().await;
    assert_eq!(sent(&s, "JWT_SECRET", "14d"), 1.0);
    assert_eq!(sent(&s, "EARLY", "14d"), 1.0);
    assert_eq!(sent(&s, "JWT_SECRET", "overdue"), 0.0);
    assert_eq!(failures(&s, "JWT_SECRET"), 0.0);
    assert!(
        s.get(
            "keywarden_aws_requests_total",
            &[
                ("service", "sns"),
                ("operation", "Publish"),
                ("outcome", "ok")
            ]
        ) == Some(2.0),
        "{}",
        s.text
    );

    // No secret value anywhere: messages, trace log, metrics; and no value was ever read.
    for m in &got {
        assert_no_canary("a message subject", &m.subject);
        assert_no_canary("a message body", &m.body);
        assert_no_canary("message attributes", &format!("{:?}", m.attributes));
    }
    let log = d.log();
    assert!(
        log.contains("TRACE"),
        "the daemon did not log at trace level"
    );
    assert!(log.contains("Reminder sent."), "{log}");
    assert_no_canary("the daemon log", &log);
    assert_no_canary("the metrics", &s.text);
    let requests = moto.requests().await;
    assert!(
        !requests.keys().any(|k| k.contains("GetSecretValue")),
        "{requests:?}"
    );

    // The sender stops with the daemon.
    let (status, took) = d.stop_with("TERM", Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        d.log()
    );
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(d.log().contains("Reminder sender stopped"), "{}", d.log());
    // Nor in the store: every state.db* file, the WAL included.
    let leaks = crate::support::store_files_contain(d.dir.path(), CANARY);
    assert!(leaks.is_empty(), "a secret value is in {leaks:?}");
}

#[tokio::test]
async fn overdue_notice_once_then_rotation_starts_a_new_cycle() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("reminders").await;
    let queue = wire.create_queue("q").await;
    wire.subscribe(&topic, "q").await;
    let created = now() - 100 * DAY;
    secret_created_at(&moto, &client, "svc/db", created).await;
    let d = Daemon::start(&config(&moto, "reminders", &[("DB", "svc/db")])).await;

    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        !m.is_empty()
    })
    .await;
    let_polls_pass(&d, 3.0).await;
    got.extend(wire.drain(&queue).await);
    // First seen overdue: only the overdue notice, not a "due in 14 days" reminder.
    assert_eq!(got.len(), 1, "{got:#?}");
    let due = created + 90 * DAY;
    let due_date = chrono::DateTime::from_timestamp(due, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let notice = &got[0];
    assert!(notice.subject.contains("OVERDUE"), "{}", notice.subject);
    assert!(notice.subject.contains(&due_date), "{}", notice.subject);
    assert!(notice.subject.contains("DB"), "{}", notice.subject);
    assert!(
        notice.body.contains("overdue by 10 days"),
        "{}",
        notice.body
    );
    assert_eq!(notice.attributes["kind"], "overdue");
    assert_eq!(notice.attributes["due"], due_date);
    let s = d.scrape().await;
    assert_eq!(sent(&s, "DB", "overdue"), 1.0);
    assert_eq!(sent(&s, "DB", "14d"), 0.0);

    // A rotation: a new AWSCURRENT version, 80 days old, so the new due date is 10 days away
    // and inside the 14-day lead. The new cycle gets its own reminder. The version is dated
    // before it becomes AWSCURRENT (as on AWS, a version's creation time never changes later).
    let old_current = client
        .describe_secret()
        .secret_id("svc/db")
        .send()
        .await
        .unwrap()
        .version_ids_to_stages()
        .and_then(|m| {
            m.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                .map(|(id, _)| id.clone())
        })
        .expect("an AWSCURRENT version");
    let token = "0123456789abcdef0123456789abcdef";
    client
        .put_secret_value()
        .secret_id("svc/db")
        .secret_string(format!("{{\"current\":\"{CANARY}-rotated\"}}"))
        .client_request_token(token)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let rotated = now() - 80 * DAY;
    moto.set_dates(serde_json::json!({
        "secret_id": "svc/db",
        "version_created": { token: rotated },
    }))
    .await;
    client
        .update_secret_version_stage()
        .secret_id("svc/db")
        .version_stage("AWSCURRENT")
        .move_to_version_id(token)
        .remove_from_version_id(&old_current)
        .send()
        .await
        .unwrap();
    client
        .update_secret_version_stage()
        .secret_id("svc/db")
        .version_stage("AWSPENDING")
        .remove_from_version_id(token)
        .send()
        .await
        .unwrap();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        m.len() >= 2
    })
    .await;
    let_polls_pass(&d, 3.0).await;
    got.extend(wire.drain(&queue).await);
    assert_eq!(got.len(), 2, "{got:#?}");
    let new_due_date = chrono::DateTime::from_timestamp(rotated + 90 * DAY, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(got[1].attributes["due"], new_due_date);
    assert_eq!(got[1].attributes["kind"], "reminder");
    // Its weekly window opens again before the due date: the reminder names that planned time.
    assert!(
        got[1].subject.contains(&format!("due {new_due_date}"))
            && got[1].subject.contains("rotation planned"),
        "{}",
        got[1].subject
    );
    assert!(got[1].body.contains("Planned:       "), "{}", got[1].body);
    let s = d.scrape().await;
    assert_eq!(sent(&s, "DB", "14d"), 1.0);
    assert_eq!(sent(&s, "DB", "overdue"), 1.0);
    for m in &got {
        assert_no_canary("a message", &format!("{m:?}"));
    }
}

#[tokio::test]
async fn missing_topic_is_retried_until_it_exists() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    secret_created_at(&moto, &client, "svc/jwt", now() - 80 * DAY).await;
    let d = Daemon::start(&config(&moto, "late-topic", &[("JWT_SECRET", "svc/jwt")])).await;

    // The topic does not exist: publishes fail, are counted, and the reminder stays pending.
    let s = d
        .wait_for("reminder failures", Duration::from_secs(30), |s| {
            failures(s, "JWT_SECRET") >= 2.0
        })
        .await;
    assert_eq!(sent(&s, "JWT_SECRET", "14d"), 0.0);
    assert!(
        s.get(
            "keywarden_aws_requests_total",
            &[
                ("service", "sns"),
                ("operation", "Publish"),
                ("outcome", "error")
            ]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{}",
        s.text
    );

    let topic = wire.create_topic("late-topic").await;
    let queue = wire.create_queue("late-q").await;
    wire.subscribe(&topic, "late-q").await;
    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        !m.is_empty()
    })
    .await;
    let s = d
        .wait_for(
            "the reminder counted as sent",
            Duration::from_secs(10),
            |s| sent(s, "JWT_SECRET", "14d") == 1.0,
        )
        .await;
    let failed = failures(&s, "JWT_SECRET");
    assert!(failed >= 2.0, "failures {failed}");
    let_polls_pass(&d, 3.0).await;
    got.extend(wire.drain(&queue).await);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].attributes["secret"], "JWT_SECRET");
    // The ledger holds the attempts and the SNS message id.
    let (attempts, message_id, state): (i64, String, String) =
        Store::open(&d.dir.path().join("state.db"))
            .unwrap()
            .with(
                |c| {
                    c.query_row(
                        "SELECT attempts, message_id, state FROM reminders",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                },
                "row",
            )
            .unwrap();
    assert!(
        attempts as f64 >= failed,
        "{attempts} attempts, {failed} failures"
    );
    assert_eq!(state, "sent");
    assert_eq!(message_id, got[0].sns_id);
    let log = d.log();
    assert!(
        log.contains("it stays pending and will be retried"),
        "{log}"
    );
    assert_eq!(
        failures(&d.scrape().await, "JWT_SECRET"),
        failed,
        "no failure after the success"
    );
}

#[tokio::test]
async fn exactly_one_message_across_kill_9_restarts() {
    exactly_one_message_across_kill_9(Backend::Sqlite).await;
}

#[tokio::test]
async fn exactly_one_message_across_kill_9_restarts_on_dynamodb() {
    exactly_one_message_across_kill_9(Backend::Dynamo).await;
}

async fn exactly_one_message_across_kill_9(backend: Backend) {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    secret_created_at(&moto, &client, "svc/a", now() - 80 * DAY).await;
    secret_created_at(&moto, &client, "svc/b", now() - 95 * DAY).await;
    let cfg = config_windows_on(
        &moto,
        "restart-topic",
        &[("A", "svc/a", WEEKLY), ("B", "svc/b", WEEKLY)],
        backend,
    );

    // Run 1: the topic is missing, so both reminders are recorded but stay pending.
    let d = Daemon::start(&cfg).await;
    let port = d.addr.port();
    d.wait_for("failed publishes", Duration::from_secs(30), |s| {
        failures(s, "A") >= 1.0 && failures(s, "B") >= 1.0
    })
    .await;
    let dir = d.kill9();
    let pending = crate::support::ledger_rows(dir.path())
        .iter()
        .filter(|(_, state, _)| state == "pending")
        .count();
    assert_eq!(pending, 2, "both intents were recorded before any publish");

    // Run 2: the topic exists now; the pending reminders are delivered after the restart.
    let topic = wire.create_topic("restart-topic").await;
    let queue = wire.create_queue("restart-q").await;
    wire.subscribe(&topic, "restart-q").await;
    let d = Daemon::start_in(dir, port, &cfg).await;
    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        m.len() >= 2
    })
    .await;
    d.wait_for("both counted", Duration::from_secs(10), |s| {
        sent(s, "A", "14d") == 1.0 && sent(s, "B", "overdue") == 1.0
    })
    .await;
    let dir = d.kill9();

    // Runs 3 and 4: kill -9 again right after the first poll of a start, then let one run a
    // while.
    let d = Daemon::start_in(dir, port, &cfg).await;
    d.let_polls_pass(1.0).await;
    let dir = d.kill9();
    let d = Daemon::start_in(dir, port, &cfg).await;
    let_polls_pass(&d, 4.0).await;
    got.extend(wire.drain(&queue).await);
    let mut per_secret: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        *per_secret
            .entry(m.attributes["secret"].clone())
            .or_default() += 1;
    }
    assert_eq!(
        per_secret,
        BTreeMap::from([("A".to_string(), 1), ("B".to_string(), 1)]),
        "{got:#?}"
    );
    let s = d.scrape().await;
    assert_eq!(
        sent(&s, "A", "14d"),
        0.0,
        "the restarted daemon sent nothing again"
    );
    assert_eq!(sent(&s, "B", "overdue"), 0.0);
    let rows = crate::support::ledger_rows(d.dir.path());
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (secret, state, id) in &rows {
        assert_eq!(state, "sent", "{secret}");
        let id = id.as_deref().unwrap_or("");
        assert!(
            got.iter().any(|m| m.sns_id == id),
            "{secret}: stored message id {id} not among delivered {got:#?}"
        );
    }
}

#[tokio::test]
async fn fifo_topic_deduplicates_a_republish_after_a_lost_record() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("reminders.fifo").await;
    let queue = wire.create_queue("reminders-q.fifo").await;
    wire.subscribe(&topic, "reminders-q.fifo").await;
    secret_created_at(&moto, &client, "svc/jwt", now() - 80 * DAY).await;
    let cfg = config(&moto, "reminders.fifo", &[("JWT_SECRET", "svc/jwt")]);

    let d = Daemon::start(&cfg).await;
    let port = d.addr.port();
    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        !m.is_empty()
    })
    .await;
    d.wait_for("the reminder counted", Duration::from_secs(10), |s| {
        sent(s, "JWT_SECRET", "14d") == 1.0
    })
    .await;
    let first = got[0].clone();
    assert_eq!(
        first.sqs.get("MessageGroupId").map(String::as_str),
        Some("JWT_SECRET")
    );
    let dedup = first
        .sqs
        .get("MessageDeduplicationId")
        .cloned()
        .unwrap_or_default();
    assert_eq!(dedup.len(), 64, "{:?}", first.sqs);

    // Simulate the crash window: SNS accepted the message but the store never recorded it.
    let dir = d.kill9();
    let reverted = Store::open(&dir.path().join("state.db"))
        .unwrap()
        .with(
            |c| {
                c.execute(
                    "UPDATE reminders SET state = 'pending', sent_at = NULL, message_id = NULL",
                    [],
                )
            },
            "revert",
        )
        .unwrap();
    assert_eq!(reverted, 1);
    let d = Daemon::start_in(dir, port, &cfg).await;
    // The daemon publishes again (SNS accepts it) and SNS drops it as a duplicate.
    d.wait_for("the republish accepted", Duration::from_secs(30), |s| {
        sent(s, "JWT_SECRET", "14d") == 1.0
    })
    .await;
    let_polls_pass(&d, 3.0).await;
    got.extend(wire.drain(&queue).await);
    assert_eq!(got.len(), 1, "FIFO deduplication failed: {got:#?}");
    let s = d.scrape().await;
    assert_eq!(
        s.get(
            "keywarden_aws_requests_total",
            &[
                ("service", "sns"),
                ("operation", "Publish"),
                ("outcome", "ok")
            ]
        ),
        Some(1.0),
        "the second run published once more: {}",
        s.text
    );
}

/// The stored message of the one ledger row of the store in `dir`, and its state and
/// message id (no daemon running).
fn ledger_row(dir: &std::path::Path) -> (keywarden::reminder::Message, String, Option<String>) {
    let store = Store::open(&dir.join("state.db")).expect("open the store");
    let (json, state, id): (String, String, Option<String>) = store
        .with(
            |c| {
                c.query_row(
                    "SELECT message, state, message_id FROM reminders",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            },
            "read the ledger row",
        )
        .expect("one ledger row");
    let message = serde_json::from_str(&json).expect("the stored message is JSON");
    (message, state, id)
}

/// A crash between SNS accepting a reminder and the ledger marking it sent: after the restart
/// the reminder is published once more (a standard topic sees it twice, as ARCHITECTURE.md
/// documents), and the text delivered the second time is byte-identical to the text stored in
/// the ledger and to the first delivery.
#[tokio::test]
async fn crash_between_sns_accepting_and_the_ledger_resends_the_stored_text_once() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("crash-topic").await;
    let queue = wire.create_queue("crash-q").await;
    wire.subscribe(&topic, "crash-q").await;
    secret_created_at(&moto, &client, "svc/jwt", now() - 80 * DAY).await;
    let cfg = config(&moto, "crash-topic", &[("JWT_SECRET", "svc/jwt")]);

    // Run 1 dies right after Publish returned a MessageId.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let d = Daemon::launch_in_env(
        dir,
        port,
        &cfg,
        &[("KEYWARDEN_FAILPOINT", "reminder:published")],
    );
    let dir = d.wait_exit(Duration::from_secs(60));
    let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        log.contains("failpoint reminder:published reached"),
        "the daemon did not stop after the publish; log:\n{log}"
    );
    let (stored, state, id) = ledger_row(dir.path());
    assert_eq!(
        (state.as_str(), id),
        ("pending", None),
        "the crash came before the ledger"
    );
    let first = {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.is_empty() {
            got.extend(wire.drain(&queue).await);
            assert!(Instant::now() < deadline, "the first publish never arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got.len(), 1, "{got:#?}");
        got.remove(0)
    };

    // Run 2 publishes the pending row again and records it.
    let d = Daemon::start_in(dir, port, &cfg).await;
    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(30), &d, |m| {
        !m.is_empty()
    })
    .await;
    d.wait_for("the resend counted", Duration::from_secs(10), |s| {
        sent(s, "JWT_SECRET", "14d") == 1.0
    })
    .await;
    let_polls_pass(&d, 3.0).await;
    got.extend(wire.drain(&queue).await);
    assert_eq!(got.len(), 1, "resent exactly once: {got:#?}");
    let second = &got[0];
    assert_ne!(first.sns_id, second.sns_id, "two publishes, two MessageIds");
    assert_eq!(
        second.body, stored.body,
        "resent body differs from the ledger"
    );
    assert_eq!(
        second.body, first.body,
        "resent body differs from the first"
    );
    assert_eq!(second.subject, stored.subject);
    assert_eq!(second.subject, first.subject);
    assert_eq!(second.attributes, first.attributes);
    let attributes: BTreeMap<String, String> = stored.attributes.iter().cloned().collect();
    assert_eq!(second.attributes, attributes);
    assert_no_canary("the resent body", &second.body);

    // The ledger now says sent, with the second MessageId; no store file holds the value.
    let dir = d.terminate(Duration::from_secs(20));
    let (_, state, id) = ledger_row(dir.path());
    assert_eq!(state, "sent");
    assert_eq!(id.as_deref(), Some(second.sns_id.as_str()));
    let leaks = crate::support::store_files_contain(dir.path(), CANARY);
    assert!(leaks.is_empty(), "a secret value is in {leaks:?}");
}

/// The notices of the reminders topic about scheduled rotations, by `kind`.
fn notices<'a>(got: &'a [Delivered], kind: &str) -> Vec<&'a Delivered> {
    got.iter()
        .filter(|m| m.attributes.get("kind").map(String::as_str) == Some(kind))
        .collect()
}

/// Issue #13 point 5: a scheduled rotation sends one `rotation_started` notice when it starts
/// and one `rotation_ended` notice when it ends, through the reminder ledger (intent recorded
/// before the publish), exactly once, also when the daemon is killed right after the start
/// notice was recorded and started again twice.
#[tokio::test]
async fn scheduled_rotation_start_and_end_notices_exactly_once_across_kill_9() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let wire = Wire::new(&moto);
    // Overdue, with a window that is always open: the scheduler starts it at once.
    secret_created_at(&moto, &client, "svc/s2s", now() - 100 * DAY).await;
    let cfg = config_windows(
        &moto,
        "notice-topic",
        &[("S2S", "svc/s2s", "cron(* * * * ? *)")],
    )
    .replace(
        "rotation = { strategy = \"dual-key\", grace = \"48h\" }",
        "rotation = { strategy = \"random\", grace = \"0s\" }",
    );

    // Run 1 dies right after the start notice's intent was committed to the ledger. Its topic
    // does not exist yet, so the reminder task (which runs on its own and may try the new row
    // before the abort) cannot deliver it in run 1 either.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let d = Daemon::launch_in_env(
        dir,
        port,
        &cfg,
        &[("KEYWARDEN_FAILPOINT", "notice:recorded")],
    );
    let dir = d.wait_exit(Duration::from_secs(60));
    let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        log.contains("failpoint notice:recorded reached"),
        "the daemon did not stop after recording the notice; log:\n{log}"
    );
    let rows: Vec<(String, String)> = Store::open(&dir.path().join("state.db"))
        .unwrap()
        .with(
            |c| {
                let mut st = c.prepare(
                    "SELECT kind, state FROM reminders WHERE kind LIKE 'rotation%' ORDER BY kind",
                )?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            },
            "notices",
        )
        .unwrap();
    assert_eq!(
        rows,
        vec![("rotation_started".to_string(), "pending".to_string())],
        "the start notice was recorded, not yet sent"
    );

    // Run 2: the topic exists; the pending notice goes out, the rotation resumes and ends, its
    // end notice follows.
    let topic = wire.create_topic("notice-topic").await;
    let queue = wire.create_queue("notice-q").await;
    wire.subscribe(&topic, "notice-q").await;
    let d = Daemon::start_in(dir, port, &cfg).await;
    let mut got = Vec::new();
    receive_until(&wire, &queue, &mut got, Duration::from_secs(60), &d, |m| {
        !notices(m, "rotation_ended").is_empty()
    })
    .await;
    let dir = d.kill9();
    // Runs 3 and 4: nothing is sent again.
    let d = Daemon::start_in(dir, port, &cfg).await;
    d.let_polls_pass(1.0).await;
    let dir = d.kill9();
    let d = Daemon::start_in(dir, port, &cfg).await;
    d.let_polls_pass(6.0).await;
    got.extend(wire.drain(&queue).await);

    let started = notices(&got, "rotation_started");
    let ended = notices(&got, "rotation_ended");
    assert_eq!((started.len(), ended.len()), (1, 1), "{got:#?}");
    let (started, ended) = (started[0], ended[0]);
    let (_, body) = d.get("/rotations").await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rotations = list["rotations"].as_array().unwrap();
    assert_eq!(rotations.len(), 1, "{list:#}");
    let id = rotations[0]["id"].as_str().unwrap();
    assert_eq!(rotations[0]["trigger"], "scheduled");
    for m in [started, ended] {
        assert_eq!(m.attributes["secret"], "S2S");
        assert_eq!(m.attributes["rotation_id"], id);
        assert_eq!(m.attributes["severity"], "critical");
        assert!(
            m.subject.len() < 100 && m.subject.contains("S2S"),
            "{}",
            m.subject
        );
        assert!(m.body.contains(id), "{}", m.body);
        assert!(
            m.body.contains("Window:        cron(* * * * ? *)"),
            "{}",
            m.body
        );
        assert_no_canary("a notice", &format!("{m:?}"));
    }
    assert!(
        started.subject.contains("scheduled rotation started"),
        "{}",
        started.subject
    );
    assert!(started.body.contains("on-call"), "{}", started.body);
    assert_eq!(ended.attributes["result"], "success");
    assert!(
        ended.subject.contains("scheduled rotation succeeded"),
        "{}",
        ended.subject
    );
    assert!(started.published_at <= ended.published_at);
    // The ledger holds both as sent; nothing is left pending.
    let store = Store::open(&d.dir.path().join("state.db")).unwrap();
    let states: Vec<(String, String)> = store
        .with(
            |c| {
                let mut st = c.prepare(
                    "SELECT kind, state FROM reminders WHERE kind LIKE 'rotation%' ORDER BY kind",
                )?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            },
            "notices",
        )
        .unwrap();
    assert_eq!(
        states,
        vec![
            ("rotation_ended".to_string(), "sent".to_string()),
            ("rotation_started".to_string(), "sent".to_string()),
        ]
    );
    // No value in the daemon's log or the store either.
    assert_no_canary("the daemon log", &d.log());
    let leaks = crate::support::store_files_contain(d.dir.path(), CANARY);
    assert!(leaks.is_empty(), "a secret value is in {leaks:?}");
}
