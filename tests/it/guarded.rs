//! Guarded rotation end to end (issue #14, point 4; SPEC §12): moto, keywarden, Prometheus,
//! Alertmanager with the PagerDuty sink, and two instances of a consumer app
//! (`tests/support/consumer_app.py`) that authenticate requests with the value they last loaded
//! and reload it only when a hook calls their `/reload`.
//!
//! - (e) pre-flight: with the app's health broken, `POST /rotate` answers 409 naming the check.
//! - (a) + (d) GOOD: the finish hook reloads the app, the watch's checks pass, keywarden is
//!   killed with SIGKILL during the watch and resumes it after restart; finalize runs after it.
//! - (b) FORGOTTEN: no finish hook, so its clients' requests fail; the `prometheus` check on
//!   `auth_failures_total` fails twice in a row and the rotation is rolled back automatically.
//!   Measured: first failing scrape -> AWSCURRENT back on the old version. It is started with
//!   `keywarden rotate`, which follows it through the watch and prints `rolled_back_by`, the
//!   check and its last value.
//! - SCHED (scheduled, window always open): waits with the failing pre-flight in `/secrets`,
//!   starts once the check passes; rolled back by verify, its scheduled rotations stop (the
//!   `/secrets` reason) until a manual rotation clears it.
//! - (c) COMP: a compromise whose consumer is not reloaded: never rolled back,
//!   `SecretRotationVerifyFailing` reaches the sink, and the incident (JSON, Markdown report,
//!   to-do) lists the failing check.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alerting::{
    Proc, ROUTING_KEY, is_trigger_for, require, start_sink, test_alertmanager, test_rules,
    wait_event,
};
use crate::support::{Daemon, Moto, free_port, http, root, venv_python};

const TOKEN: &str = "test-admin-token-guarded-0123456789abcdef";

/// A consumer app process, killed on drop.
struct App {
    child: Child,
    port: u16,
}

impl App {
    async fn start(moto: &Moto, secret_id: &str, log: &Path) -> App {
        let port = free_port();
        let file = std::fs::File::create(log).expect("app log");
        let child = Command::new(venv_python())
            .arg(root().join("tests/support/consumer_app.py"))
            .arg(port.to_string())
            .arg(moto.endpoint())
            .arg(secret_id)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("start the consumer app");
        let app = App { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "consumer app did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hook_get(url: &str) -> String {
    format!(
        "[\"{}\", \"-c\", \"import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10).read()\", \"{url}\"]",
        venv_python().display()
    )
}

struct Extra<'a> {
    comp: &'a App,
    gate: &'a Path,
    topic: &'a str,
}

fn config(moto: &Moto, prom: &str, good: &App, marker: &Path, x: &Extra<'_>) -> String {
    format!(
        r#"[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[server]
listen = "{{listen}}"
admin_token_env = "KW_TEST_TOKEN"
[poll]
metadata_every = "1s"
[state]
path = "{{state}}"
[verify]
prometheus_url = "{prom}"
every = "1s"
watch = "4s"
failures = 2
[incident]
sns_topic_arn = "{topic}"
report_dir = "{{dir}}/reports"

[[secret]]
name = "SCHED"
id = "guard/sched"
severity = "high"
rotate_every = "90d"
window = "cron(* * * * ? *)"
rotation = {{ strategy = "random" }}
verify = [{{ name = "gate", command = ["{py}", "-c", "import os, sys; sys.exit(0 if os.path.exists(sys.argv[1]) else 1)", "{gate}"] }}]

[[secret]]
name = "COMP"
id = "guard/comp"
severity = "critical"
rotation = {{ strategy = "random" }}
verify = [{{ name = "comp-api", http = "{comp_health}", json_pointer = "/checks/auth", equals = "ok" }}]

[[secret]]
name = "GOOD"
id = "guard/good"
severity = "critical"
rotation = {{ strategy = "random" }}
hooks = [{{ on = "finish", command = {reload} }}]
verify = [{{ name = "health", http = "{health}", json_pointer = "/checks/auth", equals = "ok" }}]

[[secret]]
name = "FORGOTTEN"
id = "guard/forgotten"
severity = "critical"
rotation = {{ strategy = "random" }}
hooks = [{{ on = "rollback", command = ["{py}", "-c", "import sys; open(sys.argv[1], 'a').write('rolled back')", "{marker}"] }}]
verify = [{{ name = "auth-failures", prometheus = 'sum(rate(auth_failures_total{{job="forgotten"}}[3s]))', max = 0.0 }}]
"#,
        endpoint = moto.endpoint(),
        reload = hook_get(&good.url("/reload")),
        health = good.url("/health"),
        py = venv_python().display(),
        marker = marker.display(),
        topic = x.topic,
        gate = x.gate.display(),
        comp_health = x.comp.url("/health"),
    )
}

/// The rotation state of `secret` in an authenticated `GET /secrets`.
async fn rotation_entry(d: &Daemon, secret: &str) -> Value {
    let (status, text) = d.get("/secrets").await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("secrets JSON");
    v["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == secret)
        .map(|s| s["rotation"].clone())
        .unwrap_or(Value::Null)
}

/// Waits until the `/secrets` waiting reason of `secret` satisfies `ok`.
async fn wait_reason(d: &Daemon, secret: &str, what: &str, ok: impl Fn(&str) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = rotation_entry(d, secret).await;
        if ok(r["waiting"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{secret}: {what}: {r:#}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The newest rotation of `secret` with `trigger`, waiting for one.
async fn wait_rotation_of(d: &Daemon, secret: &str, trigger: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, text) = d.get("/rotations").await;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(id) = v["rotations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["secret"] == secret && r["trigger"] == trigger)
            .and_then(|r| r["id"].as_str())
        {
            return id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {trigger} rotation of {secret}: {v:#}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn post(d: &Daemon, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http("POST", &d.url(path), &[("authorization", &auth)], None).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn current_version(client: &aws_sdk_secretsmanager::Client, id: &str) -> String {
    let v = client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .expect("get value");
    v.version_id().unwrap_or_default().to_string()
}

fn wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn events_of(v: &Value, step: &str) -> Vec<Value> {
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["step"] == step)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_rotation_end_to_end() {
    require("/usr/bin/prometheus");
    require("/usr/bin/prometheus-alertmanager");
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    for (id, value) in [
        ("guard/good", "good-initial-value-0001"),
        ("guard/forgotten", "forgotten-initial-value-0001"),
        ("guard/comp", "comp-initial-value-0001"),
    ] {
        client
            .create_secret()
            .name(id)
            .secret_string(value)
            .send()
            .await
            .expect("create");
    }
    let good = App::start(&moto, "guard/good", &dir.join("good.log")).await;
    let forgotten = App::start(&moto, "guard/forgotten", &dir.join("forgotten.log")).await;
    let comp = App::start(&moto, "guard/comp", &dir.join("comp.log")).await;
    // SCHED is 100 days old with a 90-day policy and a window that is always open: due now.
    crate::support::create_aged_secret(&moto, &client, "guard/sched", 100).await;
    let gate: PathBuf = dir.join("sched-gate");
    let topic = crate::reminders::Wire::new(&moto)
        .create_topic("security-guarded")
        .await;

    let (sink, events) = start_sink().await;
    let key_file = dir.join("routing-key");
    std::fs::write(&key_file, ROUTING_KEY).expect("key file");
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(&am_config, test_alertmanager(sink, &key_file)).expect("am config");
    let am_port = free_port();
    let mut am = Proc::start(
        "alertmanager",
        "/usr/bin/prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_string(),
        ],
        dir.join("alertmanager.log"),
    );
    am.wait_ready(&format!("http://127.0.0.1:{am_port}/-/ready"))
        .await;

    let prom_port = free_port();
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let marker: PathBuf = dir.join("rollback-hook-ran");
    let extra = Extra {
        comp: &comp,
        gate: &gate,
        topic: &topic,
    };
    let config_text = config(&moto, &prom_url, &good, &marker, &extra);
    let kw_dir = tempfile::tempdir().expect("temp dir");
    let kw_port = free_port();
    let env = [("KW_TEST_TOKEN", TOKEN)];
    let kw = Daemon::start_in_env(kw_dir, kw_port, &config_text, &env).await;

    let rules = dir.join("rules.yml");
    std::fs::write(&rules, test_rules()).expect("rules");
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{rules}\"]\n\
             alerting:\n  alertmanagers:\n    - static_configs: [{{targets: [\"127.0.0.1:{am_port}\"]}}]\n\
             scrape_configs:\n  - job_name: keywarden\n    static_configs: [{{targets: [\"127.0.0.1:{kw_port}\"]}}]\n\
             \x20 - job_name: good\n    static_configs: [{{targets: [\"127.0.0.1:{g}\"]}}]\n\
             \x20 - job_name: forgotten\n    static_configs: [{{targets: [\"127.0.0.1:{f}\"]}}]\n",
            rules = rules.display(),
            g = good.port,
            f = forgotten.port,
        ),
    )
    .expect("prometheus config");
    let mut prom = Proc::start(
        "prometheus",
        "/usr/bin/prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--rules.alert.resend-delay=1s".to_string(),
        ],
        dir.join("prometheus.log"),
    );
    prom.wait_ready(&format!("{prom_url}/-/ready")).await;
    // Let Prometheus scrape the apps a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Point 2: the scheduled rotation of SCHED is due in its window but its pre-flight fails
    // (no gate file): it waits and /secrets says why.
    wait_reason(&kw, "SCHED", "no pre-flight reason", |w| {
        w.contains("pre-flight check gate failed") && w.contains("starts once it passes")
    })
    .await;

    // (e) Pre-flight failure: a manual rotation gets 409 naming the failing check.
    assert_eq!(http("GET", &good.url("/break"), &[], None).await.0, 200);
    let (status, body) = post(&kw, "/rotate/GOOD").await;
    assert_eq!(status, 409, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("pre-flight check health failed") && msg.contains("503"),
        "{body}"
    );
    assert_eq!(http("GET", &good.url("/mend"), &[], None).await.0, 200);

    // (a) + (d): a good rotation; kill -9 during its watch; the watch resumes; finalize after it.
    let before = current_version(&client, "guard/good").await;
    let (status, body) = post(&kw, "/rotate/GOOD").await;
    assert_eq!(status, 202, "{body}");
    let id = body["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = kw.get(&format!("/rotations/{id}")).await;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !events_of(&v, "verify").is_empty() {
            assert_eq!(v["state"], "grace", "{v:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no watch round: {v:#}\n{}",
            kw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kw_dir = kw.kill9();
    let kw2 = Daemon::start_in_env(kw_dir, kw_port, &config_text, &env).await;
    let v = kw2
        .wait_rotation(&id, &["done"], Duration::from_secs(60))
        .await;
    let rounds = events_of(&v, "verify");
    assert!(rounds.len() >= 2, "{v:#}");
    assert!(rounds.iter().all(|e| e["outcome"] == "ok"), "{v:#}");
    let watch_until = v["detail"]["verify"]["watch_until"]
        .as_i64()
        .expect("watch_until");
    let finalize = events_of(&v, "finalize");
    assert!(
        finalize
            .iter()
            .all(|e| e["at"].as_i64().unwrap_or(0) >= watch_until),
        "finalize before the watch ended: {v:#}"
    );
    assert!(
        kw2.log().contains("Resuming a journaled rotation."),
        "{}",
        kw2.log()
    );
    assert_ne!(current_version(&client, "guard/good").await, before);
    let kw = kw2;

    // (b) A forgotten consumer: rolled back automatically.
    // Started with the CLI, which follows it through the watch (issue #14 point 4).
    let old = current_version(&client, "guard/forgotten").await;
    let cli_out = dir.join("cli-rotate.out");
    let cli_err = dir.join("cli-rotate.err");
    let mut cli = crate::support::keywarden_command()
        .args(["rotate", "FORGOTTEN", "--server", &kw.url("")])
        .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&cli_out).expect("cli out"))
        .stderr(std::fs::File::create(&cli_err).expect("cli err"))
        .spawn()
        .expect("start keywarden rotate");
    let id = wait_rotation_of(&kw, "FORGOTTEN", "manual").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut moved = false;
    let back_at = loop {
        let now = current_version(&client, "guard/forgotten").await;
        if now != old {
            moved = true;
        } else if moved {
            break wall();
        }
        assert!(Instant::now() < deadline, "not rolled back\n{}", kw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v = kw
        .wait_rotation(&id, &["rolled_back"], Duration::from_secs(30))
        .await;
    assert_eq!(v["detail"]["rolled_back_by"], "verify", "{v:#}");
    assert_eq!(
        v["detail"]["rolled_back_check"]["check"], "auth-failures",
        "{v:#}"
    );
    // `keywarden rotate` followed it to the rollback: exit 1, rolled_back_by, the check and its
    // last value.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = cli.try_wait().expect("cli wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "keywarden rotate did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = std::fs::read_to_string(&cli_out).unwrap_or_default();
    let err = std::fs::read_to_string(&cli_err).unwrap_or_default();
    assert_eq!(exit.code(), Some(1), "{out}\n{err}");
    let value = v["detail"]["rolled_back_check"]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(
        out.contains(&format!("rotation {id} of FORGOTTEN accepted"))
            && out.contains("watching its verify checks")
            && err.contains("rolled_back_by = verify")
            && err.contains("check auth-failures failed")
            && err.contains(&format!("last value: {value}")),
        "{out}\n{err}"
    );
    // The first scrape of the app that saw an auth failure, from Prometheus' raw samples.
    let q = "auth_failures_total{job=\"forgotten\"}[2m]";
    let url = format!("{prom_url}/api/v1/query?query={}", url_encode(q));
    let (_, _, text) = http("GET", &url, &[], None).await;
    let samples: Value = serde_json::from_str(&text).expect("prometheus answer");
    let first_fail = samples["data"]["result"][0]["values"]
        .as_array()
        .expect("samples")
        .iter()
        .find(|s| {
            s[1].as_str()
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(0.0)
                > 0.0
        })
        .and_then(|s| s[0].as_f64())
        .expect("a failing scrape");
    let latency = back_at - first_fail;
    println!(
        "guarded rollback latency: first failing scrape -> AWSCURRENT back on the old version: {latency:.2} s (goal: failures x every + one scrape = 3 s)"
    );
    assert!(latency > 0.0 && latency < 10.0, "latency {latency}");
    // The rollback hook ran, and the page reached the sink.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "rollback hook did not run\n{}",
            kw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = || format!("{}\n{}\n{}", kw.log(), prom.log(), am.log());
    wait_event(
        &events,
        "SecretRotationRolledBack for FORGOTTEN",
        Duration::from_secs(60),
        |e| is_trigger_for(e, "SecretRotationRolledBack", "FORGOTTEN"),
        &logs,
    )
    .await;
    // Metrics: the failures and the rolled_back result.
    let s = kw.scrape().await;
    assert!(
        s.sum(
            "keywarden_rotation_verify_failures_total",
            &[("secret", "FORGOTTEN"), ("check", "auth-failures")]
        ) >= 2.0
    );
    assert!(
        s.sum(
            "keywarden_rotations_total",
            &[("secret", "FORGOTTEN"), ("result", "rolled_back")]
        ) >= 1.0
    );

    // Point 2: once the pre-flight passes, the scheduled rotation of SCHED starts.
    std::fs::write(&gate, "open").expect("gate");
    let sched = wait_rotation_of(&kw, "SCHED", "scheduled").await;
    let v = kw
        .wait_rotation(&sched, &["grace"], Duration::from_secs(30))
        .await;
    assert!(
        events_of(&v, "preflight")
            .iter()
            .any(|e| e["outcome"] == "ok"),
        "{v:#}"
    );
    // Point 3: its consumer breaks during the watch: rolled back by verify; scheduled rotations
    // of SCHED stop, and /secrets says so...
    std::fs::remove_file(&gate).expect("close the gate");
    let v = kw
        .wait_rotation(&sched, &["rolled_back"], Duration::from_secs(30))
        .await;
    assert_eq!(v["detail"]["rolled_back_by"], "verify", "{v:#}");
    let r = wait_reason(&kw, "SCHED", "no rollback reason", |w| {
        w.contains(&format!(
            "rotation {sched} was rolled back automatically by check gate"
        )) && w.contains("until an operator rotates it by hand")
    })
    .await;
    println!("SCHED after the automatic rollback: {r}");
    // ... even once the check passes again (no new scheduled rotation) ...
    std::fs::write(&gate, "open").expect("gate");
    kw.let_polls_pass(7.0).await;
    let r = rotation_entry(&kw, "SCHED").await;
    assert!(
        r["waiting"]
            .as_str()
            .unwrap_or("")
            .contains("rolled back automatically"),
        "{r:#}"
    );
    assert_eq!(
        wait_rotation_of(&kw, "SCHED", "scheduled").await,
        sched,
        "a second scheduled rotation started"
    );
    // ... until an operator rotates it by hand.
    let (status, body) = post(&kw, "/rotate/SCHED").await;
    assert_eq!(status, 202, "{body}");
    let manual = body["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_string();
    kw.wait_rotation(&manual, &["grace", "done"], Duration::from_secs(30))
        .await;
    wait_reason(&kw, "SCHED", "the rollback reason stayed", |w| {
        !w.contains("rolled back automatically")
    })
    .await;

    // (c) A compromise whose consumer (the COMP app, never reloaded) breaks: never rolled back,
    // a page, and the incident lists the failing check.
    let before = current_version(&client, "guard/comp").await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _, text) = http(
        "POST",
        &kw.url("/compromised/COMP"),
        &[("authorization", &auth)],
        Some("{\"reason\":\"pasted in a ticket\"}".into()),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    let opened: Value = serde_json::from_str(&text).expect("incident JSON");
    let incident = opened["incident_id"]
        .as_str()
        .expect("incident id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let inc = loop {
        let (_, text) = kw.get(&format!("/incidents/{incident}")).await;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if v["status"] != "open" && v["status"].is_string() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "incident open: {v:#}\n{}",
            kw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(inc["verify_failing"]["check"], "comp-api", "{inc:#}");
    assert!(
        inc["todo"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t.as_str().unwrap_or("").contains("verify check comp-api")),
        "{inc:#}"
    );
    let md_path = inc["report_md"].as_str().expect("report_md");
    let md = std::fs::read_to_string(md_path).expect("report.md");
    assert!(
        md.contains("## Consumer checks after the rotation") && md.contains("| comp-api |"),
        "{md}"
    );
    let json_path = inc["report_json"].as_str().expect("report_json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).expect("report json"))
            .expect("report JSON");
    assert_eq!(doc["verify_failing"]["check"], "comp-api", "{doc:#}");
    let (_, md_api) = kw.get(&format!("/incidents/{incident}/report.md")).await;
    assert!(md_api.contains("comp-api"), "{md_api}");
    wait_event(
        &events,
        "SecretRotationVerifyFailing for COMP",
        Duration::from_secs(60),
        |e| is_trigger_for(e, "SecretRotationVerifyFailing", "COMP"),
        &logs,
    )
    .await;
    // Never rolled back: AWSCURRENT stays on the compromise rotation's version.
    let rid = inc["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_string();
    let v = kw
        .wait_rotation(&rid, &["done"], Duration::from_secs(30))
        .await;
    assert!(v["detail"]["rolled_back_by"].is_null(), "{v:#}");
    let now = current_version(&client, "guard/comp").await;
    assert_ne!(now, before);
    assert_eq!(now, v["token"].as_str().unwrap_or_default(), "{v:#}");
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HTTP checks over https (the runbook's JWT validate endpoint is https): the server's
/// certificate is verified against the system trust store (here a test CA through
/// SSL_CERT_FILE); a name the certificate does not cover fails the pre-flight, naming the check.
#[tokio::test]
async fn https_checks_verify_the_server_certificate() {
    let certs = crate::databases::make_certs();
    let port = free_port();
    // A one-route https server: /health answers {"checks":{"database":"ok"}}.
    let server = format!(
        "import http.server, ssl, json\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       body = json.dumps({{'checks': {{'database': 'ok'}}}}).encode()\n\
         \x20       self.send_response(200); self.send_header('Content-Type', 'application/json')\n\
         \x20       self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n\
         \x20   def log_message(self, *a): pass\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('{}', '{}')\n\
         s.socket = ctx.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        certs.server_pem.display(),
        certs.server_key.display()
    );
    let mut child = Command::new(venv_python())
        .args(["-c", &server])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 for the https test server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the https test server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    for name in ["guard/tls", "guard/tls-name"] {
        client
            .create_secret()
            .name(name)
            .secret_string("tls-check-value-0")
            .send()
            .await
            .unwrap();
    }
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n[state]\npath = \"{{state}}\"\n\
         [verify]\nevery = \"1s\"\nwatch = \"2s\"\n\n\
         [[secret]]\nname = \"TLS\"\nid = \"guard/tls\"\nrotation = {{ strategy = \"random\" }}\n\
         verify = [{{ name = \"db-health\", http = \"https://localhost:{port}/health\", json_pointer = \"/checks/database\", equals = \"ok\" }}]\n\n\
         [[secret]]\nname = \"TLS_NAME\"\nid = \"guard/tls-name\"\nrotation = {{ strategy = \"random\" }}\n\
         verify = [{{ name = \"wrong-name\", http = \"https://127.0.0.1:{port}/health\" }}]\n",
        moto.endpoint()
    );
    let ca = certs.ca.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let env = [("KW_TEST_TOKEN", TOKEN), ("SSL_CERT_FILE", ca.as_str())];
    let d = Daemon::start_in_env(dir, free_port(), &config, &env).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url("/rotate/TLS"),
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(
        status,
        202,
        "the https pre-flight should pass: {body}\n{}",
        d.log()
    );
    let id = serde_json::from_str::<Value>(&body).unwrap()["rotation_id"]
        .as_str()
        .unwrap()
        .to_string();
    d.wait_rotation(&id, &["done"], Duration::from_secs(30))
        .await;
    let (status, _, body) = http(
        "POST",
        &d.url("/rotate/TLS_NAME"),
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(
        status, 409,
        "a certificate for another name must fail: {body}"
    );
    assert!(body.contains("wrong-name"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}
