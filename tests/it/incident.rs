//! Compromise incidents against moto and the real binary: the security of the action routes
//! (every refusal of SPEC §7 and the slow-client timeouts), the whole incident (compromise
//! rotation with hooks, access audit from a CloudTrail log group, one SNS notice read from an
//! SQS queue, JSON and Markdown reports, the CLI), one incident per secret at a time, a kill -9
//! mid-incident that resumes, the metrics, a canary scan of every output, and the time from the
//! POST to the new AWSCURRENT.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs as logs;
use aws_sdk_secretsmanager as sm;
use serde_json::{Value, json};

use crate::reminders::Wire;
use crate::support::{Backend, Daemon, Gate, Moto, http, keywarden_command};

const TOKEN: &str = "incident-admin-token-5b1e0c9a7d3f2e1b";
const ACCOUNT: &str = "123456789012";
const GROUP: &str = "/aws/cloudtrail/incident-test";
/// Every secret value in these tests contains this; it must never leave Secrets Manager.
const CANARY: &str = "CANARY-2c9d-incident-never-publish";

fn config(moto: &Moto, topic: Option<&str>, secrets: &str) -> String {
    config_on(moto, topic, secrets, Backend::Sqlite)
}

/// Like [`config`], with the state store on `backend`.
fn config_on(moto: &Moto, topic: Option<&str>, secrets: &str, backend: Backend) -> String {
    let incident = topic
        .map(|t| {
            format!(
                "[incident]\nsns_topic_arn = \"{t}\"\nreport_dir = \"{{dir}}/reports\"\naudit_lookback = \"30d\"\n"
            )
        })
        .unwrap_or_default();
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         header_timeout = \"1s\"\nbody_timeout = \"1s\"\n\
         [poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n\
         [access]\nlog_group = \"{GROUP}\"\n\
         {incident}\
         {}\n{secrets}",
        moto.endpoint(),
        backend.state_section(moto)
    )
}

async fn start(config: &str, extra_env: &[(&str, &str)]) -> Daemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let mut env = vec![("KW_TEST_TOKEN", TOKEN)];
    env.extend_from_slice(extra_env);
    Daemon::start_in_env(dir, port, config, &env).await
}

async fn sm_client(moto: &Moto) -> sm::Client {
    moto.secrets_client().await
}

/// Writes CloudTrail GetSecretValue records of `secret_id`: (principal ARN, source IP, minutes ago).
async fn write_reads(moto: &Moto, secret_id: &str, reads: &[(&str, &str, i64)]) {
    let client = moto.logs_client().await;
    let _ = client.create_log_group().log_group_name(GROUP).send().await;
    let stream = format!("s-{}", crate::support::uuid_like());
    client
        .create_log_stream()
        .log_group_name(GROUP)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let mut events: Vec<(i64, String)> = reads
        .iter()
        .enumerate()
        .map(|(i, (who, ip, ago))| {
            let t = now - ago * 60_000;
            let identity = if who.contains(":user/") {
                json!({"type": "IAMUser", "arn": who, "accountId": ACCOUNT, "principalId": "AIDAX"})
            } else {
                json!({"type": "AssumedRole", "arn": who, "accountId": ACCOUNT, "principalId": "AROAX:s"})
            };
            let rec = json!({
                "eventVersion": "1.08",
                "eventID": format!("{}-{i}", crate::support::uuid_like()),
                "eventTime": chrono::DateTime::from_timestamp_millis(t).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "eventSource": "secretsmanager.amazonaws.com",
                "eventName": "GetSecretValue",
                "awsRegion": "us-east-1",
                "userIdentity": identity,
                "sourceIPAddress": ip,
                "requestParameters": {"secretId": secret_id},
                "responseElements": null,
            });
            (t, rec.to_string())
        })
        .collect();
    events.sort();
    let input: Vec<logs::types::InputLogEvent> = events
        .iter()
        .map(|(t, m)| {
            logs::types::InputLogEvent::builder()
                .timestamp(*t)
                .message(m)
                .build()
                .unwrap()
        })
        .collect();
    client
        .put_log_events()
        .log_group_name(GROUP)
        .log_stream_name(&stream)
        .set_log_events(Some(input))
        .send()
        .await
        .unwrap();
}

/// Every HTTP answer body the test saw, for the canary scan.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn post(
        &mut self,
        d: &Daemon,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        let (status, _, text) =
            http("POST", &d.url(path), &headers, body.map(str::to_string)).await;
        self.0.push(text.clone());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&mut self, d: &Daemon, path: &str) -> (u16, String) {
        let (status, text) = d.get(path).await;
        self.0.push(text.clone());
        (status, text)
    }

    async fn get_json(&mut self, d: &Daemon, path: &str) -> Value {
        let (status, text) = self.get(d, path).await;
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// Sends raw bytes on a new connection and returns what came back until the server closed it
/// (or `limit` passed).
fn raw(d: &Daemon, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw POST of `path` with the admin token.
fn raw_post_status(d: &Daemon, path: &str) -> u16 {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(d, req.as_bytes(), Duration::from_secs(10));
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no status line in {answer:?}"))
}

async fn wait_incident(d: &Daemon, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = d.get(&format!("/incidents/{id}")).await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["status"] != "open" {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "incident {id} still open after {limit:?}: {v:#}\nlog:\n{}",
                d.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn current(client: &sm::Client, id: &str) -> (String, String) {
    let v = client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    (
        v.version_id().unwrap().to_string(),
        v.secret_string().unwrap_or_default().to_string(),
    )
}

async fn create(client: &sm::Client, name: &str, value: &str) {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_routes_refuse_what_spec_7_refuses() {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    for name in ["sec/a", "sec/limited", "sec/ok"] {
        create(&client, name, &format!("{CANARY}-{name}")).await;
    }
    let secrets = "[[secret]]\nname = \"A\"\nid = \"sec/a\"\nrotation = { strategy = \"random\" }\n\n\
         [[secret]]\nname = \"LIMITED\"\nid = \"sec/limited\"\nrotation = { strategy = \"random\" }\n\n\
         [[secret]]\nname = \"OK\"\nid = \"sec/ok\"\nrotation = { strategy = \"random\" }\n";
    let d = start(&config(&moto, None, secrets), &[]).await;
    let mut seen = Seen::default();
    let before = current(&client, "sec/a").await;

    for route in ["/compromised/A", "/rotate/A", "/rollback/A"] {
        // Missing, wrong, Basic: 401.
        assert_eq!(seen.post(&d, route, None, None).await.0, 401, "{route}");
        assert_eq!(
            seen.post(&d, route, Some("wrong"), None).await.0,
            401,
            "{route}"
        );
        let (status, _, _) = http(
            "POST",
            &d.url(route),
            &[(
                "authorization",
                &format!("Basic {}", base64_of(&format!("admin:{TOKEN}"))),
            )],
            None,
        )
        .await;
        assert_eq!(status, 401, "{route}: Basic auth");
        let (status, _, _) = http("POST", &d.url(route), &[("authorization", TOKEN)], None).await;
        assert_eq!(status, 401, "{route}: token without the Bearer scheme");
        // The token in the query string: 400, even with a valid header.
        let (status, body) = seen
            .post(&d, &format!("{route}?token={TOKEN}"), None, None)
            .await;
        assert_eq!(status, 400, "{route}: {body}");
        assert!(!body.to_string().contains(TOKEN));
        assert_eq!(
            seen.post(
                &d,
                &format!("{route}?access_token={TOKEN}"),
                Some(TOKEN),
                None
            )
            .await
            .0,
            400
        );
        // GET on an action route: 405.
        let (status, _, _) = http("GET", &d.url(route), &[], None).await;
        assert_eq!(status, 405, "{route}");
        // A declared body over 16 KiB: 413.
        let big = "x".repeat(16 * 1024 + 1);
        assert_eq!(
            seen.post(&d, route, Some(TOKEN), Some(&big)).await.0,
            413,
            "{route}"
        );
        // Unknown secret: 404.
        assert_eq!(
            seen.post(&d, &route.replace("/A", "/NOPE"), Some(TOKEN), None)
                .await
                .0,
            404
        );
        // Traversal and odd encodings: 400 or 404, never an action.
        for path in [
            "/..",
            "/../A",
            "/A/..",
            "/%2e%2e",
            "/%2e%2e%2fA",
            "/sec%2f..%2fa",
            "/sec%252Fa",
            "/A%00",
            "/A%2500",
            "/%C0%AE%C0%AE",
            "/A%",
            "/A%zz",
            "/sec//a",
            "/./A",
        ] {
            let p = route.replace("/A", path);
            let status = raw_post_status(&d, &p);
            assert!(status == 400 || status == 404, "{p}: {status}");
        }
        let long = format!("{}/{}", route.trim_end_matches("/A"), "a".repeat(3000));
        assert!(
            matches!(raw_post_status(&d, &long), 400 | 404 | 431),
            "overlong"
        );
    }
    // Nothing was touched.
    assert_eq!(current(&client, "sec/a").await, before);
    let list = seen.get_json(&d, "/incidents").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 0, "{list}");
    let rot = seen.get_json(&d, "/rotations").await;
    assert_eq!(rot["rotations"].as_array().unwrap().len(), 0, "{rot}");

    // Malformed JSON bodies: 400, nothing started (5 of them: each counts for the rate limit).
    for bad in [
        "{",
        "[]",
        "\"x\"",
        "{\"reason\": 5}",
        "{\"unknown\": \"x\"}",
    ] {
        let (status, body) = seen
            .post(&d, "/compromised/A", Some(TOKEN), Some(bad))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // A body over 16 KiB without Content-Length (chunked) is cut while reading: 413.
    let chunk = "y".repeat(8 * 1024);
    let mut req = format!(
        "POST /compromised/OK HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(&d, &req, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A body that never arrives: 408 after server.body_timeout (1 s).
    let started = Instant::now();
    let answer = raw(
        &d,
        format!("POST /compromised/OK HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"re").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Headers that never finish: the connection is closed after server.header_timeout (1 s).
    let started = Instant::now();
    let answer = raw(
        &d,
        b"POST /compromised/A HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held {:?}",
        started.elapsed()
    );
    assert!(!answer.contains("202"), "{answer}");
    assert_eq!(current(&client, "sec/a").await, before);
    let list = seen.get_json(&d, "/incidents").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 0, "{list}");

    // The rate limit: 5 per secret per minute; the 6th is 429 with Retry-After.
    let (status, body) = seen
        .post(
            &d,
            "/compromised/LIMITED",
            Some(TOKEN),
            Some("{\"reason\":\"rate test\"}"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    for _ in 0..4 {
        let s = seen
            .post(&d, "/compromised/LIMITED", Some(TOKEN), None)
            .await
            .0;
        assert!(s == 200 || s == 202, "{s}");
    }
    let (status, _, _) = http(
        "POST",
        &d.url("/compromised/LIMITED"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(status, 429);
    // Another secret is not limited by it; addressed by its Secrets Manager name.
    let (status, body) = seen
        .post(&d, "/compromised/sec%2Fok", Some(TOKEN), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["secret"], "OK");
    let (status, body) = seen
        .post(&d, "/compromised/sec/ok", Some(TOKEN), None)
        .await;
    assert!(status == 200 || status == 202, "{body}");

    // rotate and rollback have their own, looser limit (30 per secret per minute).
    for i in 0..30 {
        let (status, body) = seen.post(&d, "/rollback/A", Some(TOKEN), None).await;
        assert_eq!(status, 409, "rollback {i}: {body}");
    }
    assert_eq!(seen.post(&d, "/rollback/A", Some(TOKEN), None).await.0, 429);
    assert_eq!(current(&client, "sec/a").await, before);

    let log = d.log();
    assert!(!log.contains(TOKEN), "the token reached the log");
    for text in &seen.0 {
        assert!(!text.contains(TOKEN) && !text.contains(CANARY), "{text}");
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_every_action_is_403() {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    create(&client, "sec/n", "v").await;
    let text = config(
        &moto,
        None,
        "[[secret]]\nname = \"N\"\nid = \"sec/n\"\nrotation = { strategy = \"random\" }\n",
    )
    .replace("admin_token_env = \"KW_TEST_TOKEN\"\n", "");
    let d = Daemon::start(&text).await;
    for route in ["/compromised/N", "/rotate/N", "/rollback/N"] {
        let (status, _, body) = http(
            "POST",
            &d.url(route),
            &[("authorization", "Bearer x")],
            None,
        )
        .await;
        assert_eq!(status, 403, "{route}: {body}");
        let (status, _, _) = http("POST", &d.url(route), &[], None).await;
        assert_eq!(status, 403, "{route}");
    }
}

/// The whole incident on a dual-key secret through the CLI: one incident while open, the
/// rotation with its hooks and no grace, the audit, one notice, the reports, the metrics, and no
/// value anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compromise_rotates_audits_notifies_and_reports() {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    let old = format!("{{\"current\":\"{CANARY}-old\",\"kid\":\"k\"}}");
    create(&client, "app/jwt", &old).await;
    let (old_vid, _) = current(&client, "app/jwt").await;
    let app = format!("arn:aws:sts::{ACCOUNT}:assumed-role/app-a/i-1");
    let mallory = format!("arn:aws:iam::{ACCOUNT}:user/mallory");
    write_reads(
        &moto,
        "app/jwt",
        &[
            (app.as_str(), "10.0.0.5", 600),
            (app.as_str(), "10.0.0.6", 30),
            (mallory.as_str(), "203.0.113.7", 120),
            (mallory.as_str(), "203.0.113.7", 100),
            (mallory.as_str(), "198.51.100.2", 90),
        ],
    )
    .await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("security-team").await;
    let queue = wire.create_queue("security-q").await;
    wire.subscribe(&topic, "security-q").await;

    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display();
    // The finish hook holds the incident open until the test releases this gate.
    let gate = Gate::new(marks.path(), "finish-gate");
    let hold = gate.wait_command();
    let secrets = format!(
        "[[secret]]\nname = \"JWT_SECRET\"\nid = \"app/jwt\"\nimpact = \"User auth compromised\"\n\
         consumers = [\"arn:aws:sts::{ACCOUNT}:assumed-role/app-a/*\"]\n\
         rotation = {{ strategy = \"dual-key\", grace = \"48h\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", \"echo finish $KEYWARDEN_TRIGGER >> {m}/hooks; {hold}\"] }}, \
                  {{ on = \"finalize\", command = [\"sh\", \"-c\", \"echo finalize $KEYWARDEN_TRIGGER >> {m}/hooks\"] }}]\n"
    );
    let text = config(&moto, Some(&topic), &secrets);
    let d = start(&text, &[("KEYWARDEN_LOG", "trace")]).await;
    let mut seen = Seen::default();
    // The metrics exist from the start.
    let s = d
        .wait_for("the incident series", Duration::from_secs(10), |s| {
            s.get("keywarden_incidents_total", &[("secret", "JWT_SECRET")])
                .is_some()
        })
        .await;
    assert_eq!(
        s.get("keywarden_incident_open", &[("secret", "JWT_SECRET")]),
        Some(0.0)
    );

    // A read by the undeclared principal after the start: the access poller flags it.
    write_reads(&moto, "app/jwt", &[(mallory.as_str(), "203.0.113.7", 0)]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, a) = d.get("/anomalies").await;
        if a.contains("user/mallory") && a.contains("undeclared_consumer") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no anomaly: {a}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The CLI opens it and follows it.
    let server = d.url("");
    let cli = tokio::task::spawn_blocking(move || {
        keywarden_command()
            .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
            .args([
                "compromised",
                "JWT_SECRET",
                "--reason",
                "key pasted in a public channel",
                "--reported-by",
                "alice@example.com",
                "--server",
                &server,
            ])
            .output()
            .unwrap()
    });
    // While it is open (the finish hook waits on the gate): the same call answers 200 with the same
    // incident, rollback is refused, and the open gauge is 1.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let list = seen.get_json(&d, "/incidents").await;
        if let Some(i) = list["incidents"].as_array().unwrap().first() {
            break i.clone();
        }
        assert!(Instant::now() < deadline, "no incident; log:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let id = first["incident_id"].as_str().unwrap().to_string();
    assert_eq!(first["status"], "open");
    let (status, body) = seen
        .post(
            &d,
            "/compromised/app%2Fjwt",
            Some(TOKEN),
            Some("{\"reason\":\"again\"}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["incident_id"], id.as_str());
    assert_eq!(body["status"], "open");
    assert_eq!(body["url"], format!("/incidents/{id}"));
    let (status, body) = seen
        .post(&d, "/rollback/JWT_SECRET", Some(TOKEN), None)
        .await;
    assert_eq!(status, 409, "{body}");
    d.wait_for("incident_open 1", Duration::from_secs(5), |s| {
        s.get("keywarden_incident_open", &[("secret", "JWT_SECRET")]) == Some(1.0)
    })
    .await;
    // The open state was checked: let the finish hook, and so the incident, go on.
    gate.release(Duration::from_secs(30)).await;

    let out = cli.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nlog:\n{}",
        d.log()
    );
    let opened = format!("incident {id} opened for JWT_SECRET");
    for needle in [
        opened.as_str(),
        "rotate  done",
        "audit   done",
        "notify  done",
        "report  done",
        "report: ",
    ] {
        assert!(stdout.contains(needle), "{needle}:\n{stdout}");
    }
    let inc = seen.get_json(&d, &format!("/incidents/{id}")).await;
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    assert_eq!(inc["reason"], "key pasted in a public channel");
    assert_eq!(inc["reported_by"], "alice@example.com");
    for s in inc["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "done", "{s}");
        assert!(s["started_at_ms"].as_i64().unwrap() <= s["ended_at_ms"].as_i64().unwrap());
    }

    // The rotation: compromise trigger, no grace, hooks ran, only the new key is left.
    let rid = inc["rotation_id"].as_str().unwrap();
    let rot = seen.get_json(&d, &format!("/rotations/{rid}")).await;
    assert_eq!(rot["trigger"], "compromise");
    assert_eq!(rot["state"], "done");
    assert_eq!(rot["detail"]["grace_seconds"], 0);
    let (vid, v) = current(&client, "app/jwt").await;
    assert_ne!(vid, old_vid);
    assert_eq!(inc["new_version_id"], vid.as_str());
    assert_eq!(inc["previous_version_id"], old_vid.as_str());
    let j: Value = serde_json::from_str(&v).unwrap();
    assert!(
        j.get("previous").is_none(),
        "the old key is still accepted: {j}"
    );
    assert_eq!(j["kid"], "k");
    let new_key = j["current"].as_str().unwrap().to_string();
    assert!(!new_key.contains(CANARY));
    let hooks = std::fs::read_to_string(marks.path().join("hooks")).unwrap();
    assert_eq!(hooks, "finish compromise\nfinalize compromise\n");
    assert_eq!(
        seen.get_json(&d, "/rotations").await["rotations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The audit.
    let readers = inc["audit"]["readers"].as_array().unwrap();
    let by: BTreeMap<&str, &Value> = readers
        .iter()
        .map(|r| (r["principal"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by[app.as_str()]["reads"], 2);
    assert_eq!(by[app.as_str()]["declared"], true);
    assert_eq!(
        by[app.as_str()]["source_ips"],
        json!(["10.0.0.5", "10.0.0.6"])
    );
    assert_eq!(by[mallory.as_str()]["reads"], 4);
    assert!(
        by[mallory.as_str()]["flags"]
            .to_string()
            .contains("undeclared_consumer"),
        "{:#}",
        by[mallory.as_str()]
    );
    let flagged = inc["audit"]["flagged"].as_array().unwrap();
    assert!(
        flagged
            .iter()
            .any(|f| f["kind"] == "undeclared_consumer" && f["principal"] == mallory.as_str()),
        "{flagged:?}"
    );
    assert_eq!(by[mallory.as_str()]["declared"], false);
    assert_eq!(
        by[mallory.as_str()]["source_ips"],
        json!(["198.51.100.2", "203.0.113.7"])
    );
    assert!(
        by[mallory.as_str()]["first_seen"].as_str().unwrap()
            < by[mallory.as_str()]["last_seen"].as_str().unwrap()
    );
    assert!(
        inc["todo"].to_string().contains("user/mallory"),
        "{}",
        inc["todo"]
    );
    assert!(inc["todo"].to_string().contains("JWT"), "{}", inc["todo"]);

    // The reports: files and routes agree.
    let md_path = inc["report_md"].as_str().unwrap();
    assert!(stdout.contains(md_path), "{stdout}");
    let md_file = std::fs::read_to_string(md_path).unwrap();
    let json_file = std::fs::read_to_string(inc["report_json"].as_str().unwrap()).unwrap();
    let (status, md_http) = seen.get(&d, &format!("/incidents/{id}/report.md")).await;
    assert_eq!(status, 200);
    assert_eq!(md_file, md_http);
    for needle in [
        "## Timeline",
        "## Actions taken",
        "## Access audit",
        "## What a human must still do",
        "user/mallory",
        "| **no** |",
        "status | resolved",
    ] {
        assert!(md_file.contains(needle), "{needle}:\n{md_file}");
    }
    let jf: Value = serde_json::from_str(&json_file).unwrap();
    assert_eq!(jf["status"], "resolved");
    assert_eq!(jf["incident_id"], id.as_str());

    // Two notices: the first as soon as the incident was journaled, the report at the end.
    let delivered = wire.drain(&queue).await;
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let kind =
        |m: &crate::reminders::Delivered| m.attributes.get("kind").cloned().unwrap_or_default();
    let opened: Vec<_> = delivered
        .iter()
        .filter(|m| kind(m) == "incident_opened")
        .collect();
    let reports: Vec<_> = delivered
        .iter()
        .filter(|m| kind(m) == "incident_report")
        .collect();
    assert_eq!((opened.len(), reports.len()), (1, 1), "{delivered:?}");
    assert!(opened[0].published_at <= reports[0].published_at);
    for needle in [
        "JWT_SECRET",
        "key pasted in a public channel",
        "alice@example.com",
        &format!("/incidents/{id}"),
        "What happens next",
    ] {
        assert!(
            opened[0].body.contains(needle),
            "{needle}:\n{}",
            opened[0].body
        );
    }
    let n = reports[0];
    for needle in [
        "JWT_SECRET",
        "key pasted in a public channel",
        "alice@example.com",
        &format!("/incidents/{id}/report.md"),
        "rotate (done)",
        "audit (done)",
    ] {
        assert!(n.body.contains(needle), "{needle}:\n{}", n.body);
    }
    assert!(n.subject.contains("JWT_SECRET"));
    assert_eq!(
        n.attributes.get("incident_id").map(String::as_str),
        Some(id.as_str())
    );

    // The list, over HTTP and the CLI.
    let server = d.url("");
    let out = keywarden_command()
        .args(["incidents", "--output", "json", "--server", &server])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["incident_id"], id.as_str());
    assert_eq!(listed[0]["status"], "resolved");
    let out = keywarden_command()
        .args(["incidents", "--server", &server])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with("INCIDENT") && table.contains(&id) && table.contains("resolved"),
        "{table}"
    );
    seen.0.push(table);

    // Metrics.
    let s = d
        .wait_for("incident_open 0", Duration::from_secs(5), |s| {
            s.get("keywarden_incident_open", &[("secret", "JWT_SECRET")]) == Some(0.0)
        })
        .await;
    assert_eq!(
        s.get("keywarden_incidents_total", &[("secret", "JWT_SECRET")]),
        Some(1.0)
    );
    let (_, metrics) = seen.get(&d, "/metrics").await;

    // The canary scan: neither the old nor the new value anywhere.
    let log = d.log();
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "the log is not at trace level"
    );
    let mut outputs: Vec<(String, String)> = vec![
        ("log".into(), log),
        ("metrics".into(), metrics),
        ("report.md".into(), md_file),
        ("report.json".into(), json_file),
        (
            "notice".into(),
            format!("{} {} {:?}", n.subject, n.body, n.attributes),
        ),
        ("cli".into(), format!("{stdout}{stderr}")),
    ];
    outputs.extend(seen.0.iter().map(|t| ("http".to_string(), t.clone())));
    for (what, text) in &outputs {
        for value in [CANARY, &new_key] {
            assert!(!text.contains(value), "{what} contains a secret value");
        }
    }
}

/// kill -9 while the compromise rotation runs (inside its finish hook), and a crash right after
/// the audit step: after a restart each incident completes, with one rotation and one notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_interrupted_by_a_crash_resumes() {
    an_incident_interrupted_by_a_crash(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_interrupted_by_a_crash_resumes_on_dynamodb() {
    an_incident_interrupted_by_a_crash(Backend::Dynamo).await;
}

async fn an_incident_interrupted_by_a_crash(backend: Backend) {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    create(&client, "app/k9", &format!("{CANARY}-k9")).await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("security-k9").await;
    let queue = wire.create_queue("security-k9-q").await;
    wire.subscribe(&topic, "security-k9-q").await;
    write_reads(
        &moto,
        "app/k9",
        &[("arn:aws:iam::123456789012:user/deploy", "10.1.1.1", 5)],
    )
    .await;
    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display();
    // The first run of the finish hook waits on this gate, so the kill -9 below surely lands
    // inside it; later runs go straight through.
    let gate = Gate::new(marks.path(), "finish-gate");
    let hold = gate.wait_command();
    let secrets = format!(
        "[[secret]]\nname = \"K9\"\nid = \"app/k9\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", \"echo finish >> {m}/hooks; \
         if [ ! -e {m}/held ]; then : > {m}/held; {hold}; fi\"] }}]\n"
    );
    let text = config_on(&moto, Some(&topic), &secrets, backend);
    let d = start(&text, &[]).await;
    let (old_vid, _) = current(&client, "app/k9").await;
    let (status, _, body) = http(
        "POST",
        &d.url("/compromised/K9"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["incident_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Inside the finish hook: AWSCURRENT moved, finalize not run yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marks.path().join("hooks").exists() {
        assert!(
            Instant::now() < deadline,
            "the hook never ran:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let port = d.port();
    let dir = d.kill9();
    // The killed daemon's hook (its own process group) still waits: let it end.
    gate.release(Duration::from_secs(10)).await;
    let d = Daemon::start_in_env(dir, port, &text, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let inc = wait_incident(&d, &id, Duration::from_secs(40)).await;
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    assert_eq!(
        inc["steps"][0]["runs"], 2,
        "the rotate step ran again: {inc:#}"
    );
    let (vid, _) = current(&client, "app/k9").await;
    assert_ne!(vid, old_vid);
    let (_, rot) = d.get("/rotations").await;
    let rot: Value = serde_json::from_str(&rot).unwrap();
    assert_eq!(rot["rotations"].as_array().unwrap().len(), 1, "{rot:#}");
    assert_eq!(reports_in(&wire.drain(&queue).await), 1);
    assert!(d.log().contains("Resuming an open compromise incident"));
    let s = d.scrape().await;
    assert_eq!(
        s.get("keywarden_incident_open", &[("secret", "K9")]),
        Some(0.0)
    );

    // A crash right after the audit was journaled (test build failpoint: abort, like kill -9).
    let port = d.port();
    let mut dd = d;
    dd.stop_with("TERM", Duration::from_secs(10));
    let dir = dd.kill9();
    std::fs::remove_file(marks.path().join("hooks")).unwrap();
    let d = Daemon::start_in_env(
        dir,
        port,
        &text,
        &[
            ("KW_TEST_TOKEN", TOKEN),
            ("KEYWARDEN_FAILPOINT", "incident:audit:done"),
        ],
    )
    .await;
    let (status, _, body) = http(
        "POST",
        &d.url("/compromised/K9"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id2 = serde_json::from_str::<Value>(&body).unwrap()["incident_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id2, id);
    let dir = d.wait_exit(Duration::from_secs(30));
    let d = Daemon::start_in_env(dir, port, &text, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let inc = wait_incident(&d, &id2, Duration::from_secs(30)).await;
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    assert_eq!(
        inc["steps"][1]["runs"], 1,
        "the audit was done before the crash: {inc:#}"
    );
    assert_eq!(inc["steps"][2]["runs"], 1);
    assert_eq!(reports_in(&wire.drain(&queue).await), 1);
    let (_, list) = d.get("/incidents").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["incidents"].as_array().unwrap().len(), 2);
    let s = d.scrape().await;
    // The counter is restored from the store: both incidents were opened by processes that
    // crashed.
    assert_eq!(
        s.get("keywarden_incidents_total", &[("secret", "K9")]),
        Some(2.0)
    );
    assert_eq!(
        s.get("keywarden_incident_open", &[("secret", "K9")]),
        Some(0.0)
    );
}

/// The time from `POST /compromised` to the new AWSCURRENT and to the resolved incident
/// (docs/performance.md, "Compromise response").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compromise_response_time() {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    const N: usize = 7;
    let mut secrets = String::new();
    for i in 0..N {
        create(
            &client,
            &format!("perf/{i}"),
            &format!("{{\"current\":\"{CANARY}-{i}\"}}"),
        )
        .await;
        secrets.push_str(&format!(
            "[[secret]]\nname = \"P{i}\"\nid = \"perf/{i}\"\nrotation = {{ strategy = \"dual-key\" }}\n\n"
        ));
    }
    write_reads(
        &moto,
        "perf/0",
        &[("arn:aws:iam::123456789012:user/deploy", "10.1.1.1", 5)],
    )
    .await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("security-perf").await;
    let text = config(&moto, Some(&topic), &secrets);
    let d = start(&text, &[]).await;
    let (mut to_current, mut to_done) = (Vec::new(), Vec::new());
    for i in 0..N {
        let id = format!("perf/{i}");
        let (old, _) = current(&client, &id).await;
        let t0 = Instant::now();
        let (status, _, body) = http(
            "POST",
            &d.url(&format!("/compromised/P{i}")),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            None,
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let iid = serde_json::from_str::<Value>(&body).unwrap()["incident_id"]
            .as_str()
            .unwrap()
            .to_string();
        loop {
            if current(&client, &id).await.0 != old {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        to_current.push(t0.elapsed());
        let inc = wait_incident(&d, &iid, Duration::from_secs(20)).await;
        to_done.push(t0.elapsed());
        assert_eq!(inc["status"], "resolved", "{inc:#}");
    }
    to_current.sort();
    to_done.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    eprintln!(
        "compromise response over {N} incidents: POST -> new AWSCURRENT median {:?} (max {:?}); POST -> resolved median {:?} (max {:?})",
        median(&to_current),
        to_current[N - 1],
        median(&to_done),
        to_done[N - 1]
    );
    assert!(
        median(&to_current) < Duration::from_secs(1),
        "{to_current:?}"
    );
}

/// A manual rotation still in its grace (the previous key still works) is finalized at once, then
/// the compromise rotation runs; a secret keywarden cannot rotate (`none`) gives a `failed`
/// incident that still audits, notifies and reports, and a CLI exit code of 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_is_cut_short_and_a_failed_rotation_fails_the_incident() {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    create(
        &client,
        "app/graced",
        &format!("{{\"current\":\"{CANARY}-g\"}}"),
    )
    .await;
    create(&client, "app/monitored", &format!("{CANARY}-m")).await;
    write_reads(
        &moto,
        "app/graced",
        &[("arn:aws:iam::123456789012:user/deploy", "10.1.1.1", 5)],
    )
    .await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("security-grace").await;
    let queue = wire.create_queue("security-grace-q").await;
    wire.subscribe(&topic, "security-grace-q").await;
    let secrets = "[[secret]]\nname = \"GRACED\"\nid = \"app/graced\"\nrotation = { strategy = \"dual-key\", grace = \"48h\" }\n\n\
         [[secret]]\nname = \"MONITORED\"\nid = \"app/monitored\"\n";
    let text = config(&moto, Some(&topic), secrets);
    let d = start(&text, &[]).await;
    let mut seen = Seen::default();

    let (status, body) = seen.post(&d, "/rotate/GRACED", Some(TOKEN), None).await;
    assert_eq!(status, 202, "{body}");
    let manual = body["rotation_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = seen.get_json(&d, &format!("/rotations/{manual}")).await;
        if r["state"] == "grace" {
            break;
        }
        assert!(Instant::now() < deadline, "{r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = current(&client, "app/graced").await;
    assert!(v.contains("previous"), "in grace the old key is kept");

    let (status, body) = seen
        .post(
            &d,
            "/compromised/GRACED",
            Some(TOKEN),
            Some("{\"reason\":\"r\"}"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["incident_id"].as_str().unwrap().to_string();
    let inc = wait_incident(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    assert_eq!(inc["finalized_earlier_rotation"], manual.as_str());
    let r = seen.get_json(&d, &format!("/rotations/{manual}")).await;
    assert_eq!(r["state"], "done", "{r:#}");
    let rid = inc["rotation_id"].as_str().unwrap();
    assert_ne!(rid, manual);
    let rot = seen.get_json(&d, &format!("/rotations/{rid}")).await;
    assert_eq!(rot["trigger"], "compromise");
    let (vid, v) = current(&client, "app/graced").await;
    assert_eq!(vid, format!("keywarden-{rid}-final"));
    assert_eq!(inc["new_version_id"], vid.as_str());
    let j: Value = serde_json::from_str(&v).unwrap();
    assert!(j.get("previous").is_none(), "{j}");
    assert!(inc["audit"].is_object(), "{inc:#}");

    // strategy none: the rotation step fails, the others still run, the CLI exits 1.
    let server = d.url("");
    let out = tokio::task::spawn_blocking(move || {
        keywarden_command()
            .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
            .args([
                "compromised",
                "MONITORED",
                "--reason",
                "r",
                "--server",
                &server,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("rotate  failed"), "{stdout}");
    assert!(stdout.contains("report  done"), "{stdout}");
    assert!(stderr.contains("failed"), "{stderr}");
    let list = seen.get_json(&d, "/incidents").await;
    let failed = list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["secret"] == "MONITORED")
        .unwrap()
        .clone();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failed_steps"], json!(["rotate"]));
    let (_, md) = seen
        .get(
            &d,
            &format!(
                "/incidents/{}/report.md",
                failed["incident_id"].as_str().unwrap()
            ),
        )
        .await;
    assert!(md.contains("**Failed steps:** rotate"), "{md}");
    assert!(md.contains("rotate MONITORED by hand"), "{md}");
    let notices = wire.drain(&queue).await;
    assert_eq!(reports_in(&notices), 2, "{notices:?}");
    assert_eq!(
        notices.len(),
        4,
        "a first notice and a report for each: {notices:?}"
    );
    assert!(notices.iter().any(|n| n.body.contains("rotate (failed)")));
    for text in seen.0.iter().chain(notices.iter().map(|n| &n.body)) {
        assert!(!text.contains(CANARY), "{text}");
    }
}

/// Issue #15 (low): a secret pasted into `reason` or `reported_by` does not spread: not to the
/// log, the store, the report files or the API; and a newline in it cannot forge a log line.
#[tokio::test]
async fn a_pasted_secret_in_the_reason_does_not_spread() {
    const PASTED: &str = "Zr8KqP2vXw9mT4sLb7Nc3Hd6";
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    create(&client, "app/pasted", &format!("{CANARY}-p")).await;
    write_reads(
        &moto,
        "app/pasted",
        &[("arn:aws:iam::123456789012:user/deploy", "10.1.1.1", 5)],
    )
    .await;
    let secrets = "[[secret]]\nname = \"PASTED\"\nid = \"app/pasted\"\nrotation = { strategy = \"random\" }\n";
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("security-pasted").await;
    let queue = wire.create_queue("security-pasted-q").await;
    wire.subscribe(&topic, "security-pasted-q").await;
    let d = start(&config(&moto, Some(&topic), secrets), &[]).await;
    let body = json!({
        "reason": format!("value {PASTED} found in a build log\n2026-12-02T00:00:00Z INFO forged: all clear"),
        "reported_by": format!("alice password={PASTED}"),
    })
    .to_string();
    let mut seen = Seen::default();
    let (status, answer) = seen
        .post(&d, "/compromised/PASTED", Some(TOKEN), Some(&body))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["incident_id"].as_str().unwrap().to_string();
    let inc = wait_incident(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    let reason = inc["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("found in a build log"), "{inc:#}");
    assert!(!inc.to_string().contains(PASTED), "{inc:#}");
    assert!(!answer.to_string().contains(PASTED), "{answer}");
    let log = d.log();
    assert!(!log.contains(PASTED), "the pasted value reached the log");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-02T00:00:00Z INFO forged")),
        "a newline in the reason forged a log line"
    );
    let leaked = crate::support::store_files_contain(d.dir.path(), PASTED);
    assert!(leaked.is_empty(), "in the store: {leaked:?}");
    let notices = wire.drain(&queue).await;
    assert!(!notices.is_empty(), "no notice was published");
    for n in &notices {
        let all = format!("{} {} {:?}", n.subject, n.body, n.attributes);
        assert!(!all.contains(PASTED), "in the SNS notice: {all}");
    }
    for entry in std::fs::read_dir(d.dir.path().join("reports")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(PASTED), "in {}", path.display());
    }
}

/// How many report notices (`kind = incident_report`) are in `delivered`; the first notice
/// (`incident_opened`) is at least once and may be repeated after a crash.
fn reports_in(delivered: &[crate::reminders::Delivered]) -> usize {
    delivered
        .iter()
        .filter(|m| m.attributes.get("kind").map(String::as_str) == Some("incident_report"))
        .count()
}

/// Issue #13 point 6: the first notice goes to the security topic as soon as the incident is
/// journaled, while the rotation is still running (held here in its finish hook), well under a
/// second after the POST on moto; the report notice follows at the end.
#[tokio::test]
async fn the_first_notice_goes_out_before_the_rotation_ends() {
    let moto = Moto::start();
    let client = sm_client(&moto).await;
    create(
        &client,
        "app/first",
        &format!("{{\"current\":\"{CANARY}-f\"}}"),
    )
    .await;
    write_reads(
        &moto,
        "app/first",
        &[("arn:aws:iam::123456789012:user/deploy", "10.1.1.1", 5)],
    )
    .await;
    let wire = Wire::new(&moto);
    let topic = wire.create_topic("security-first").await;
    let queue = wire.create_queue("security-first-q").await;
    wire.subscribe(&topic, "security-first-q").await;
    let hooks = tempfile::tempdir().unwrap();
    let gate = Gate::new(hooks.path(), "finish");
    let secrets = format!(
        "[[secret]]\nname = \"FIRST\"\nid = \"app/first\"\nrotation = {{ strategy = \"dual-key\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", \"{}\"] }}]\n",
        gate.wait_command()
    );
    let d = start(&config(&moto, Some(&topic), &secrets), &[]).await;
    let mut seen = Seen::default();
    let posted = Instant::now();
    let (status, body) = seen
        .post(
            &d,
            "/compromised/FIRST",
            Some(TOKEN),
            Some("{\"reason\":\"r\"}"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["incident_id"].as_str().unwrap().to_string();
    let first = loop {
        let got = wire.drain(&queue).await;
        if let Some(m) = got.into_iter().next() {
            break (m, posted.elapsed());
        }
        assert!(
            posted.elapsed() < Duration::from_secs(10),
            "no first notice\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (m, took) = first;
    eprintln!("POST /compromised to the first notice in the queue: {took:?}");
    assert_eq!(
        m.attributes.get("kind").map(String::as_str),
        Some("incident_opened")
    );
    assert_eq!(
        m.attributes.get("incident_id").map(String::as_str),
        Some(id.as_str())
    );
    assert!(took < Duration::from_secs(1), "first notice after {took:?}");
    // The rotation is still held in its finish hook.
    let inc = d.get(&format!("/incidents/{id}")).await.1;
    assert!(inc.contains("\"open\""), "{inc}");
    gate.release(Duration::from_secs(10)).await;
    let inc = wait_incident(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    let rest = wire.drain(&queue).await;
    assert_eq!(reports_in(&rest), 1, "{rest:?}");
    assert_eq!(rest.len(), 1, "the first notice is sent once: {rest:?}");
}
