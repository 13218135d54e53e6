//! The `elasticache` strategy (issue #13, point 1) against behaviour, not just calls: moto for
//! Secrets Manager and ElastiCache, a real redis-server (TLS on one port, the launcher's
//! plaintext control port on another) behind the replication group through the launcher's
//! `/_keywarden/elasticache-backing`, and the real keywarden binary. Which tokens work is asked
//! of the redis-server itself (AUTH), never of the emulator.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_elasticache as ec;
use aws_sdk_secretsmanager as sm;
use serde_json::{Value, json};

use super::databases::{Certs, make_certs};
use crate::support::{Daemon, Moto, free_port, http, store_files_contain};

const TOKEN: &str = "test-admin-token-0123456789abcdef0123";
/// The group's first AUTH token: a canary that must never appear in any output.
pub(crate) const CANARY: &str = "ec-canary-token-Vb7Qm2Lx9Rk4";
const GROUP: &str = "event-service-redis";
const SECRET_ID: &str = "event-service/redis";

/// A redis-server with a plaintext port (the launcher's control connection, and these tests'
/// AUTH probes) and a TLS port (the group's endpoint), killed on drop.
pub(crate) struct Backing {
    child: Child,
    port: u16,
    tls_port: u16,
    pub(crate) certs: Certs,
}

impl Backing {
    pub(crate) async fn start() -> Backing {
        let certs = make_certs();
        let (port, tls_port) = (free_port(), free_port());
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--tls-port", &tls_port.to_string()])
            .args(["--tls-cert-file", &certs.server_pem.display().to_string()])
            .args(["--tls-key-file", &certs.server_key.display().to_string()])
            .args(["--tls-ca-cert-file", &certs.ca.display().to_string()])
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server ({e}): apt-get install redis-server"));
        let b = Backing {
            child,
            port,
            tls_port,
            certs,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    /// Whether the redis-server accepts `token` (AUTH as the default user, as ElastiCache's
    /// clients do).
    pub(crate) async fn accepts(&self, token: &str) -> bool {
        let c = redis::Client::open(
            redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
                "127.0.0.1".into(),
                self.port,
            ))
            .unwrap()
            .set_redis_settings(redis::RedisConnectionInfo::default().set_password(token)),
        )
        .unwrap();
        match c.get_multiplexed_async_connection().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok(),
            Err(e) => {
                assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");
                false
            }
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ec_client(moto: &Moto) -> ec::Client {
    ec::Client::new(&moto.sdk_config().await)
}

/// Creates replication group `id` (with `token`, in-transit encryption as asked) in moto.
async fn create_group(client: &ec::Client, id: &str, token: Option<&str>, transit: bool) {
    client
        .create_replication_group()
        .replication_group_id(id)
        .replication_group_description("keywarden test")
        .set_auth_token(token.map(str::to_string))
        .transit_encryption_enabled(transit)
        .send()
        .await
        .unwrap();
}

/// Backs group `id` with `b`: its endpoint is `localhost` on the TLS port (or the plaintext
/// port when `tls` is false).
pub(crate) async fn back(moto: &Moto, id: &str, b: &Backing, tls: bool) {
    let (status, body) = moto
        .control(
            "POST",
            "elasticache-backing",
            json!({
                "replication_group_id": id,
                "redis": {"host": "127.0.0.1", "port": b.port},
                "endpoint": {"address": "localhost", "port": if tls { b.tls_port } else { b.port }},
                "modify_seconds": 1.0,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn create_secret(client: &sm::Client, name: &str, value: &str) {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

async fn current(client: &sm::Client, id: &str) -> String {
    client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_string()
}

async fn version_count(client: &sm::Client, id: &str) -> usize {
    client
        .list_secret_version_ids()
        .secret_id(id)
        .include_deprecated(true)
        .send()
        .await
        .unwrap()
        .versions()
        .len()
}

fn config(moto: &Moto, secrets: &str) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n{secrets}",
        moto.endpoint(),
    )
}

/// The runbook's REDIS_PASSWORD: a plain string, the group's AUTH token.
fn redis_secret(name: &str, id: &str, group: &str, grace: &str, ca: &std::path::Path) -> String {
    format!(
        "[[secret]]\nname = \"{name}\"\nid = \"{id}\"\n\
         rotation = {{ strategy = \"elasticache\", replication_group = \"{group}\", grace = \"{grace}\", ca_file = \"{}\", timeout = \"60s\" }}\n\
         hooks = [{{ on = \"test\", command = [\"sh\", \"-c\", \"env >> {{dir}}/hook.env\"] }}, \
                  {{ on = \"finish\", command = [\"sh\", \"-c\", \"env >> {{dir}}/hook.env\"] }}, \
                  {{ on = \"finalize\", command = [\"sh\", \"-c\", \"env >> {{dir}}/hook.env\"] }}]\n\n",
        ca.display()
    )
}

async fn post(d: &Daemon, path: &str, body: Option<String>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url(path),
        &[("authorization", auth.as_str())],
        body,
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn rotate(d: &Daemon, secret: &str) -> String {
    let (status, v) = post(d, &format!("/rotate/{secret}"), None).await;
    assert_eq!(status, 202, "rotate {secret}: {v}\nlog:\n{}", d.log());
    v["rotation_id"].as_str().unwrap().to_string()
}

/// How many ModifyReplicationGroup calls moto served.
async fn modify_calls(moto: &Moto) -> u64 {
    moto.requests()
        .await
        .get("elasticache:ModifyReplicationGroup")
        .copied()
        .unwrap_or(0)
}

/// Issue #13 (1) and (9): a rotation with a grace. During the grace both tokens work on the
/// redis-server behind the group; after finalize only the new one. The value stays a plain
/// string; no token reaches the trace log, the metrics, the store or a hook's environment.
#[tokio::test]
async fn old_token_works_during_grace_and_is_refused_after_finalize() {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let ecc = ec_client(&moto).await;
    let b = Backing::start().await;
    create_group(&ecc, GROUP, Some(CANARY), true).await;
    back(&moto, GROUP, &b, true).await;
    create_secret(&sm, SECRET_ID, CANARY).await;
    assert!(b.accepts(CANARY).await, "the group's first token works");

    let conf = config(
        &moto,
        &redis_secret("REDIS", SECRET_ID, GROUP, "6s", &b.certs.ca),
    );
    let dir = tempfile::tempdir().unwrap();
    let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_LOG", "trace")];
    let d = Daemon::start_in_env(dir, free_port(), &conf, &env).await;
    let modifies_before = modify_calls(&moto).await;
    let id = rotate(&d, "REDIS").await;
    let r = d
        .wait_rotation(&id, &["grace"], Duration::from_secs(60))
        .await;
    let new = current(&sm, SECRET_ID).await;
    assert_ne!(new, CANARY);
    assert!(!new.starts_with('{'), "a plain string stays a plain string");
    keywarden::rotation::strategy::elasticache::valid_token(&new).unwrap();
    assert!(b.accepts(&new).await, "the new token works: {r:#}");
    assert!(
        b.accepts(CANARY).await,
        "the old token works during the grace"
    );
    // set: SET the current token (drops a leftover), ROTATE the new one.
    assert_eq!(modify_calls(&moto).await - modifies_before, 2);

    d.wait_rotation(&id, &["done"], Duration::from_secs(60))
        .await;
    assert!(b.accepts(&new).await, "the new token works after finalize");
    assert!(
        !b.accepts(CANARY).await,
        "the old token is refused after finalize"
    );
    assert_eq!(
        modify_calls(&moto).await - modifies_before,
        3,
        "finalize: one SET"
    );
    assert_eq!(
        version_count(&sm, SECRET_ID).await,
        2,
        "exactly one new version"
    );

    // Issue #13 (9): the canary scan.
    let scrape = d.get("/metrics").await.1;
    let (_, rotations) = d.get(&format!("/rotations/{id}")).await;
    let dir = d.kill9();
    let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap();
    assert!(log.contains("TRACE"), "the log is at trace level");
    assert!(
        log.contains("ModifyReplicationGroup"),
        "the SDK calls are traced"
    );
    let hook_env = std::fs::read_to_string(dir.path().join("hook.env")).unwrap();
    assert!(hook_env.contains("KEYWARDEN_SECRET=REDIS"), "{hook_env}");
    for (what, token) in [("old", CANARY), ("new", new.as_str())] {
        assert!(!log.contains(token), "the {what} token is in the log");
        assert!(
            !scrape.contains(token),
            "the {what} token is in the metrics"
        );
        assert!(!rotations.contains(token), "the {what} token is in the API");
        assert!(
            !hook_env.contains(token),
            "the {what} token is in a hook's environment"
        );
        assert!(
            store_files_contain(dir.path(), token).is_empty(),
            "the {what} token is in the store"
        );
    }
}

/// Issue #13 (1): a compromise SETs the new token right after finish: the old token is refused
/// at once. A JSON value keeps its other fields and changes `password`.
#[tokio::test]
async fn compromise_refuses_the_old_token_at_once() {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let ecc = ec_client(&moto).await;
    let b = Backing::start().await;
    create_group(&ecc, GROUP, Some(CANARY), true).await;
    back(&moto, GROUP, &b, true).await;
    let old = json!({"password": CANARY, "host": "master.example", "port": 6379}).to_string();
    create_secret(&sm, SECRET_ID, &old).await;
    // The security notices are read from a queue subscribed to the incident topic: no token may
    // be in them (issue #13 point 9).
    let wire = crate::reminders::Wire::new(&moto);
    let topic = wire.create_topic("security-ec").await;
    let queue = wire.create_queue("security-ec-q").await;
    wire.subscribe(&topic, "security-ec-q").await;
    let conf = config(
        &moto,
        &redis_secret("REDIS", SECRET_ID, GROUP, "24h", &b.certs.ca),
    )
    .replace(
        "[state]",
        &format!(
            "[incident]\nsns_topic_arn = \"{topic}\"\nreport_dir = \"{{dir}}/reports\"\n[state]"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in_env(dir, free_port(), &conf, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let (status, v) = post(
        &d,
        "/compromised/REDIS",
        Some("{\"reason\":\"test\"}".into()),
    )
    .await;
    assert_eq!(status, 202, "{v}\n{}", d.log());
    let inc = v["incident_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let new = loop {
        let (_, body) = d.get(&format!("/incidents/{inc}")).await;
        let i: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if !i.is_null() && i["status"] != "open" {
            break current(&sm, SECRET_ID).await;
        }
        assert!(Instant::now() < deadline, "{i:#}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let j: Value = serde_json::from_str(&new).unwrap();
    assert_eq!(j["host"], "master.example");
    assert_eq!(j["port"], 6379);
    let tok = j["password"].as_str().unwrap();
    assert_ne!(tok, CANARY);
    assert!(b.accepts(tok).await, "the new token works");
    assert!(
        !b.accepts(CANARY).await,
        "the compromised token is refused at once"
    );
    let notices = wire.drain(&queue).await;
    assert_eq!(
        notices.len(),
        2,
        "the first notice and the report: {notices:?}"
    );
    for n in &notices {
        let text = format!("{} {} {:?}", n.subject, n.body, n.attributes);
        assert!(
            !text.contains(CANARY) && !text.contains(tok),
            "a token in a notice"
        );
    }
    for entry in std::fs::read_dir(d.dir.path().join("reports")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !text.contains(CANARY) && !text.contains(tok),
            "a token in the report"
        );
    }
}

/// Issue #13 (1): kill -9 at each step boundary (every failpoint an elasticache rotation
/// reaches) and start again: the rotation resumes and ends with exactly one new version, the
/// new token works and the old one is refused (grace 0s, written explicitly).
#[tokio::test]
async fn kill9_at_each_step_boundary_resumes_with_exactly_one_new_version() {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let ecc = ec_client(&moto).await;
    let b = Backing::start().await;
    create_group(&ecc, GROUP, Some(CANARY), true).await;
    back(&moto, GROUP, &b, true).await;
    create_secret(&sm, SECRET_ID, CANARY).await;
    let conf = config(
        &moto,
        &redis_secret("REDIS", SECRET_ID, GROUP, "0s", &b.certs.ca),
    );
    // finalize:put and finalize:moved sit where finalize writes a new value (dual-key); an
    // elasticache finalize changes the group, not the value, and never reaches them.
    let points = keywarden::rotation::failpoint::POINTS
        .iter()
        .filter(|p| !matches!(**p, "finalize:put" | "finalize:moved"));
    for point in points {
        let old = current(&sm, SECRET_ID).await;
        let before = version_count(&sm, SECRET_ID).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_FAILPOINT", *point)];
        let d = Daemon::start_in_env(dir, port, &conf, &env).await;
        let url = d.url("/rotate/REDIS");
        let answer = keywarden::cli::remote::call("POST", &url, Some(TOKEN)).await;
        if let Ok((status, body)) = &answer {
            assert_eq!(*status, 202, "{point}: {body}");
        }
        let dir = d.wait_exit(Duration::from_secs(60));
        let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
        assert!(
            log.contains(&format!("failpoint {point} reached")),
            "{point}:\n{log}"
        );
        let d = Daemon::start_in_env(dir, port, &conf, &[("KW_TEST_TOKEN", TOKEN)]).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = d.get("/rotations").await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let list: Vec<Value> = v["rotations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r["secret"] == "REDIS")
                .collect();
            assert!(list.len() <= 1, "{point}: one rotation: {v:#}");
            if list.first().is_some_and(|r| r["state"] == "done") {
                break;
            }
            assert!(
                list.first().is_none_or(|r| r["state"] != "failed"),
                "{point}: {v:#}\n{}",
                d.log()
            );
            assert!(Instant::now() < deadline, "{point}: {v:#}\n{}", d.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let new = current(&sm, SECRET_ID).await;
        assert_ne!(new, old, "{point}");
        assert_eq!(
            version_count(&sm, SECRET_ID).await,
            before + 1,
            "{point}: exactly one new version"
        );
        assert!(b.accepts(&new).await, "{point}: the new token works");
        assert!(!b.accepts(&old).await, "{point}: the old token is refused");
        d.kill9();
    }
}

/// Issue #13 (1): AWS errors come back as AWS gave them (code and message) in the rotation's
/// error: an unknown group, a group without in-transit encryption, a group busy in another
/// state. Nothing is promoted: AWSCURRENT keeps the old value.
#[tokio::test]
async fn aws_errors_are_reported_as_aws_gave_them() {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let ecc = ec_client(&moto).await;
    let b = Backing::start().await;
    create_group(&ecc, "plaintext-group", None, false).await;
    back(&moto, "plaintext-group", &b, false).await;
    create_group(&ecc, "busy-group", Some(CANARY), true).await;
    back(&moto, "busy-group", &b, true).await;
    let (status, body) = moto
        .control(
            "POST",
            "elasticache-backing",
            json!({"replication_group_id": "busy-group", "status": "snapshotting"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cases = [
        (
            "UNKNOWN",
            "t/unknown",
            "no-such-group",
            "ReplicationGroupNotFoundFault",
        ),
        (
            "PLAIN",
            "t/plain",
            "plaintext-group",
            "InvalidParameterValue",
        ),
        (
            "BUSY",
            "t/busy",
            "busy-group",
            "InvalidReplicationGroupState",
        ),
    ];
    let mut secrets = String::new();
    for (name, id, group, _) in cases {
        create_secret(&sm, id, CANARY).await;
        secrets.push_str(&redis_secret(name, id, group, "0s", &b.certs.ca));
    }
    let conf = config(&moto, &secrets);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in_env(dir, free_port(), &conf, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let mut ids = Vec::new();
    for (name, ..) in cases {
        ids.push(rotate(&d, name).await);
    }
    for ((name, id, group, code), rid) in cases.iter().zip(&ids) {
        let r = d
            .wait_rotation(rid, &["failed"], Duration::from_secs(90))
            .await;
        let err = r["error"].as_str().unwrap_or_default();
        eprintln!("{name}: {err}");
        assert!(err.contains(code), "{name}: {r:#}");
        assert!(
            err.contains(group),
            "{name}: the error names the group: {err}"
        );
        assert!(!err.contains(CANARY), "{name}");
        assert_eq!(
            current(&sm, id).await,
            CANARY,
            "{name}: AWSCURRENT unchanged"
        );
    }
    assert!(
        b.accepts(CANARY).await,
        "the busy group's token still works"
    );
}

/// Issue #13 (1): a rotation that fails after its set (here its test hook fails) leaves its
/// token valid beside the current one. The next rotation's ROTATE must not make the group drop
/// the current token (ElastiCache keeps two: a ROTATE while two are valid drops the older, the
/// one every client uses): set SETs the current token alone first. During the next rotation's
/// grace the current token still works, the abandoned one does not.
#[tokio::test]
async fn a_token_left_by_a_failed_rotation_never_displaces_the_current_one() {
    let moto = Moto::start();
    let sm = moto.secrets_client().await;
    let ecc = ec_client(&moto).await;
    let b = Backing::start().await;
    create_group(&ecc, GROUP, Some(CANARY), true).await;
    back(&moto, GROUP, &b, true).await;
    create_secret(&sm, SECRET_ID, CANARY).await;
    let conf = config(
        &moto,
        &format!(
            "[[secret]]\nname = \"REDIS\"\nid = \"{SECRET_ID}\"\n\
             rotation = {{ strategy = \"elasticache\", replication_group = \"{GROUP}\", grace = \"1h\", ca_file = \"{}\" }}\n\
             hooks = [{{ on = \"test\", command = [\"sh\", \"-c\", \"test -f {{dir}}/pass\"] }}]\n",
            b.certs.ca.display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    let d = Daemon::start_in_env(dir, free_port(), &conf, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let first = rotate(&d, "REDIS").await;
    d.wait_rotation(&first, &["failed"], Duration::from_secs(90))
        .await;
    let versions = sm
        .list_secret_version_ids()
        .secret_id(SECRET_ID)
        .include_deprecated(true)
        .send()
        .await
        .unwrap();
    let abandoned_id = versions
        .versions()
        .iter()
        .filter_map(|v| v.version_id())
        .find(|v| v.contains(&first))
        .unwrap()
        .to_string();
    let abandoned = sm
        .get_secret_value()
        .secret_id(SECRET_ID)
        .version_id(&abandoned_id)
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_string();
    assert!(
        b.accepts(&abandoned).await,
        "the failed rotation's token was ROTATEd in"
    );
    assert!(b.accepts(CANARY).await);
    assert_eq!(
        current(&sm, SECRET_ID).await,
        CANARY,
        "AWSCURRENT unchanged"
    );

    std::fs::write(&pass, "").unwrap();
    let second = rotate(&d, "REDIS").await;
    d.wait_rotation(&second, &["grace"], Duration::from_secs(60))
        .await;
    let new = current(&sm, SECRET_ID).await;
    assert!(b.accepts(&new).await, "the new token works");
    assert!(
        b.accepts(CANARY).await,
        "the current token still works during the grace"
    );
    assert!(
        !b.accepts(&abandoned).await,
        "the abandoned token was dropped"
    );
}
