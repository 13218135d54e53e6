//! The `postgres` and `redis` strategies (issue #8) against real servers started here: a
//! throwaway PostgreSQL cluster (the highest version of the Debian binaries installed, run as the `postgres` user, SCRAM on
//! loopback, `log_statement = all`) and a throwaway redis-server, both on free loopback ports,
//! with moto for Secrets Manager and the real keywarden binary (or the core in-process for the
//! compromise trigger, as issue #6 drives it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager as sm;
use serde_json::{Value, json};

use crate::support::{Daemon, Moto, free_port, http};

const TOKEN: &str = "test-admin-token-0123456789abcdef0123";
const INSTALL: &str = "apt-get install postgresql redis-server (scripts/test does)";
/// Where Debian installs the PostgreSQL server binaries, one directory per major version.
const PG_LIB: &str = "/usr/lib/postgresql";
/// The first passwords: canaries that must never appear in a log.
pub(crate) const PG_CANARY: &str = "pg-canary-Zq8rT2vLx9";
pub(crate) const REDIS_CANARY: &str = "redis-canary-Hk3mW7pQa1";
pub(crate) const PG_ADMIN_PW: &str = "pg-admin-pw-Jd72kQ";
pub(crate) const REDIS_ADMIN_PW: &str = "redis-admin-pw-Xs91vB";

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster (the highest installed version) in a temp dir owned by `postgres`, stopped on drop.
pub(crate) struct Pg {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

/// The `bin` directory of the highest PostgreSQL major version installed under [`PG_LIB`]
/// that has `pg_ctl` and `initdb`; fails saying what to install when there is none.
fn pg_bin_dir() -> PathBuf {
    let entries = std::fs::read_dir(PG_LIB)
        .unwrap_or_else(|e| panic!("no PostgreSQL server under {PG_LIB} ({e}): {INSTALL}"));
    let best = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("pg_ctl").is_file() && bin.join("initdb").is_file()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match best {
        Some((_, bin)) => bin,
        None => panic!("no {PG_LIB}/<version>/bin with pg_ctl and initdb: {INSTALL}"),
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let p = pg_bin_dir().join(name);
    assert!(p.exists(), "{} is missing: {INSTALL}", p.display());
    p
}

fn run_as_postgres(args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser ({e}): {INSTALL}"));
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pg {
    /// initdb, SCRAM for every TCP login but the bootstrap superuser, `log_statement = all`.
    pub(crate) async fn start() -> Pg {
        Pg::start_with(None).await
    }

    /// Like [`Pg::start`], with `ssl = on` and the server certificate and key of `tls`; every
    /// login but the bootstrap superuser's then needs TLS (`hostssl` only).
    async fn start_with(tls: Option<&Certs>) -> Pg {
        let initdb = pg_bin("initdb");
        let pg_ctl = pg_bin("pg_ctl");
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "chown to postgres: {INSTALL}");
        let data = dir.path().join("data");
        let (data_s, dir_s) = (data.display().to_string(), dir.path().display().to_string());
        run_as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            &data_s,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]);
        let others = if tls.is_some() { "hostssl" } else { "host" };
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all postgres 127.0.0.1/32 trust\n\
                 {others} all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {dir_s} -c listen_addresses=127.0.0.1 -c fsync=off -c log_statement=all \
             -c log_connections=on -c password_encryption=scram-sha-256"
        );
        if let Some(c) = tls {
            for (name, from) in [("server.crt", &c.server_pem), ("server.key", &c.server_key)] {
                let to = data.join(name);
                std::fs::copy(from, &to).unwrap();
                let st = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status()
                    .unwrap();
                assert!(st.success());
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = format!("{dir_s}/server.log");
        run_as_postgres(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            &data_s,
            "-w",
            "-l",
            &log,
            "-o",
            &opts,
            "start",
        ]);
        Pg { dir, port }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub(crate) async fn login(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db);
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The superuser (trust on loopback for `postgres` only).
    async fn superuser(&self) -> tokio_postgres::Client {
        self.login("postgres", "", "postgres").await.unwrap()
    }

    /// An admin role with exactly the rights the README asks for, an application user `app`
    /// (password: the canary) owning the database `appdb`.
    pub(crate) async fn prepare(&self) {
        let su = self.superuser().await;
        // The test's own setup is not what the log scan is about: keep it out of the log.
        su.batch_execute("SET log_statement = 'none'")
            .await
            .unwrap();
        su.batch_execute(&format!(
            "CREATE ROLE kwadmin LOGIN CREATEROLE PASSWORD '{PG_ADMIN_PW}';
             GRANT pg_signal_backend TO kwadmin;
             CREATE ROLE app LOGIN PASSWORD '{PG_CANARY}';"
        ))
        .await
        .unwrap();
        su.batch_execute("CREATE DATABASE appdb OWNER app")
            .await
            .unwrap();
    }

    async fn can_login(&self, user: &str) -> bool {
        let su = self.superuser().await;
        su.query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin_dir().join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------- Redis

/// A redis-server on a free loopback port, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
}

impl RedisServer {
    /// Starts it with an admin user holding exactly the README's ACL rights and an application
    /// user `events` (password: the canary); `default` is switched off.
    pub(crate) async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// Like [`RedisServer::start`], with extra server arguments.
    async fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server ({e}): {INSTALL}"));
        let s = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            if let Ok(c) = c.get_multiplexed_async_connection().await {
                break c;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for args in [
            vec![
                "SETUSER",
                "kwadmin",
                "on",
                &format!(">{REDIS_ADMIN_PW}"),
                "+acl|getuser",
                "+acl|setuser",
                "+acl|save",
                "+client|kill",
                "+ping",
            ],
            vec![
                "SETUSER",
                "events",
                "on",
                &format!(">{REDIS_CANARY}"),
                "~*",
                "&*",
                "+@all",
                "-@admin",
            ],
            vec!["SETUSER", "default", "off"],
        ] {
            let _: () = redis::cmd("ACL")
                .arg(&args)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        s
    }

    async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let c = redis::Client::open(format!(
            "redis://{user}:{password}@127.0.0.1:{}/",
            self.port
        ))?;
        c.get_multiplexed_async_connection().await
    }

    /// How many passwords the user has (ACL GETUSER, as the admin).
    async fn password_count(&self, user: &str) -> usize {
        let mut c = self.login("kwadmin", REDIS_ADMIN_PW).await.unwrap();
        let v: redis::Value = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(user)
            .query_async(&mut c)
            .await
            .unwrap();
        let items: Vec<(String, redis::Value)> = match v {
            redis::Value::Array(a) => a
                .chunks(2)
                .filter_map(|p| match (&p[0], p.get(1)) {
                    (redis::Value::BulkString(k), Some(v)) => {
                        Some((String::from_utf8_lossy(k).to_string(), v.clone()))
                    }
                    _ => None,
                })
                .collect(),
            redis::Value::Map(m) => m
                .into_iter()
                .filter_map(|(k, v)| match k {
                    redis::Value::BulkString(k) => {
                        Some((String::from_utf8_lossy(&k).to_string(), v))
                    }
                    _ => None,
                })
                .collect(),
            other => panic!("ACL GETUSER {user}: {other:?}"),
        };
        match items.into_iter().find(|(k, _)| k == "passwords") {
            Some((_, redis::Value::Array(a))) => a.len(),
            other => panic!("no passwords field: {other:?}"),
        }
    }
}

async fn ping(c: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<String> {
    tokio::time::timeout(Duration::from_secs(5), redis::cmd("PING").query_async(c))
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "ping timed out",
            )))
        })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- keywarden side

async fn create_secret(client: &sm::Client, name: &str, value: &Value) {
    client
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

async fn current(client: &sm::Client, id: &str) -> Value {
    let v = client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    serde_json::from_str(v.secret_string().unwrap()).unwrap()
}

/// The four secrets: the application's and the admins' for both servers.
async fn seed(client: &sm::Client, pg: &Pg, rs: &RedisServer) {
    create_secret(
        client,
        "db/app",
        &json!({"username": "app", "password": PG_CANARY, "host": "127.0.0.1",
                "port": pg.port, "dbname": "appdb", "engine": "postgres"}),
    )
    .await;
    create_secret(
        client,
        "db/master",
        &json!({"username": "kwadmin", "password": PG_ADMIN_PW, "dbname": "postgres",
                "host": "127.0.0.1", "port": pg.port}),
    )
    .await;
    create_secret(
        client,
        "cache/events",
        &json!({"username": "events", "password": REDIS_CANARY, "host": "127.0.0.1",
                "port": rs.port.to_string()}),
    )
    .await;
    create_secret(
        client,
        "cache/master",
        &json!({"username": "kwadmin", "password": REDIS_ADMIN_PW, "host": "127.0.0.1",
                "port": rs.port}),
    )
    .await;
}

fn secrets_toml(grace: &str) -> String {
    format!(
        "[[secret]]\nname = \"DATABASE_PASSWORD\"\nid = \"db/app\"\n\
         rotation = {{ strategy = \"postgres\", grace = \"{grace}\", master_secret = \"db/master\", tls = \"disable\" }}\n\n\
         [[secret]]\nname = \"REDIS_PASSWORD\"\nid = \"cache/events\"\n\
         rotation = {{ strategy = \"redis\", grace = \"{grace}\", master_secret = \"cache/master\", tls = \"disable\" }}\n"
    )
}

fn config(moto: &Moto, grace: &str) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n{}",
        moto.endpoint(),
        secrets_toml(grace)
    )
}

async fn rotate(d: &Daemon, secret: &str) -> String {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url(&format!("/rotate/{secret}")),
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 202, "rotate {secret}: {body}\nlog:\n{}", d.log());
    let v: Value = serde_json::from_str(&body).unwrap();
    v["rotation_id"].as_str().unwrap().to_string()
}

async fn wait_state(d: &Daemon, id: &str, states: &[&str], limit: Duration) -> Value {
    d.wait_rotation(id, states, limit).await
}

fn creds(v: &Value) -> (String, String) {
    (
        v["username"].as_str().unwrap().to_string(),
        v["password"].as_str().unwrap().to_string(),
    )
}

async fn assert_refused_pg(pg: &Pg, user: &str, pw: &str, why: &str) {
    match pg.login(user, pw, "appdb").await {
        Ok(_) => panic!("{user} still logs in ({why})"),
        Err(e) => {
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            assert!(
                msg.contains("not permitted to log in")
                    || msg.contains("password authentication failed"),
                "{user}: {e:?}"
            );
        }
    }
}

/// Rotations in a row: tables made by each user in turn stay readable and writable by the
/// other; the old user logs in during the grace and is refused after it; Redis has both
/// passwords during the grace and only the new one after; no password reaches the keywarden
/// trace log or the PostgreSQL statement log.
#[tokio::test]
async fn postgres_users_alternate_without_drift_and_redis_keeps_two_passwords_in_grace() {
    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    seed(&client, &pg, &rs).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_LOG", "trace")];
    let d = Daemon::start_in_env(dir, free_port(), &config(&moto, "3s"), &env).await;

    // Every secret value keywarden handles is a canary: the applications' passwords and the
    // admin passwords of the master secrets (keywarden logs in with those).
    let mut passwords = vec![
        PG_CANARY.to_string(),
        REDIS_CANARY.to_string(),
        PG_ADMIN_PW.to_string(),
        REDIS_ADMIN_PW.to_string(),
    ];
    // The test itself created the roles with their passwords; only what follows is scanned.
    let slog_start = pg.server_log().len();
    let app = pg.login("app", PG_CANARY, "appdb").await.unwrap();
    app.batch_execute("CREATE TABLE t0 (n int); INSERT INTO t0 VALUES (0);")
        .await
        .unwrap();
    drop(app);

    let (mut user, mut pw) = ("app".to_string(), PG_CANARY.to_string());
    for round in 1..=3 {
        let t0 = Instant::now();
        let rid = rotate(&d, "DATABASE_PASSWORD").await;
        wait_state(&d, &rid, &["grace"], Duration::from_secs(30)).await;
        eprintln!(
            "postgres rotation {round}: POST /rotate to new AWSCURRENT in {:?}",
            t0.elapsed()
        );
        let (new_user, new_pw) = creds(&current(&client, "db/app").await);
        let want = if round % 2 == 1 { "app_b" } else { "app" };
        assert_eq!(new_user, want, "round {round}");
        passwords.push(new_pw.clone());
        // During the grace both users log in.
        pg.login(&user, &pw, "appdb").await.unwrap();
        let c = pg.login(&new_user, &new_pw, "appdb").await.unwrap();
        // Everything made so far is readable and writable; this user's table is too.
        for t in 0..round {
            c.batch_execute(&format!(
                "INSERT INTO t{t} VALUES ({round}); SELECT * FROM t{t};"
            ))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {new_user} on t{t}: {e:?}"));
        }
        c.batch_execute(&format!(
            "CREATE TABLE t{round} (n int); INSERT INTO t{round} VALUES ({round});"
        ))
        .await
        .unwrap();
        let owners: Vec<String> = c
            .query(
                "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            owners,
            vec!["app".to_string()],
            "one owner, whoever created"
        );
        wait_state(&d, &rid, &["done"], Duration::from_secs(30)).await;
        assert_refused_pg(&pg, &user, &pw, "after the grace").await;
        assert!(!pg.can_login(&user).await, "{user} is NOLOGIN");
        assert!(pg.can_login(&new_user).await);
        // The previous user's table is still usable by the current one, after finalize.
        let c = pg.login(&new_user, &new_pw, "appdb").await.unwrap();
        c.batch_execute(&format!("UPDATE t{} SET n = n + 1", round - 1))
            .await
            .unwrap();
        (user, pw) = (new_user, new_pw);
    }

    // Redis: both passwords in the grace, only the new one after.
    let t0 = Instant::now();
    let rid = rotate(&d, "REDIS_PASSWORD").await;
    wait_state(&d, &rid, &["grace"], Duration::from_secs(30)).await;
    eprintln!(
        "redis rotation: POST /rotate to new AWSCURRENT in {:?}",
        t0.elapsed()
    );
    let (ruser, rpw) = creds(&current(&client, "cache/events").await);
    assert_eq!(ruser, "events");
    passwords.push(rpw.clone());
    let mut old_client = rs.login("events", REDIS_CANARY).await.unwrap();
    assert_eq!(ping(&mut old_client).await.unwrap(), "PONG");
    assert_eq!(
        ping(&mut rs.login("events", &rpw).await.unwrap())
            .await
            .unwrap(),
        "PONG"
    );
    assert_eq!(rs.password_count("events").await, 2);
    wait_state(&d, &rid, &["done"], Duration::from_secs(30)).await;
    let Err(e) = rs.login("events", REDIS_CANARY).await else {
        panic!("old password still accepted after finalize");
    };
    assert!(
        e.to_string().contains("WRONGPASS") || e.to_string().to_lowercase().contains("auth"),
        "{e}"
    );
    assert_eq!(
        ping(&mut rs.login("events", &rpw).await.unwrap())
            .await
            .unwrap(),
        "PONG"
    );
    assert_eq!(rs.password_count("events").await, 1);
    // Without compromise, open connections are left alone.
    assert_eq!(ping(&mut old_client).await.unwrap(), "PONG");

    let klog = d.log();
    assert!(klog.contains("TRACE"), "the log is at trace level");
    let slog = pg
        .server_log()
        .get(slog_start..)
        .unwrap_or_default()
        .to_string();
    assert!(
        slog.contains("ALTER ROLE"),
        "log_statement = all logged the statements"
    );
    let store = std::fs::read(d.dir.path().join("state.db")).unwrap_or_default();
    let wal = std::fs::read(d.dir.path().join("state.db-wal")).unwrap_or_default();
    let outputs = [
        ("keywarden log", klog),
        ("PostgreSQL log", slog),
        ("metrics", d.scrape().await.text),
        ("/secrets", d.get("/secrets").await.1),
        ("/rotations", d.get("/rotations").await.1),
        ("store", String::from_utf8_lossy(&store).into_owned()),
        ("store WAL", String::from_utf8_lossy(&wal).into_owned()),
    ];
    for (what, text) in &outputs {
        for (i, p) in passwords.iter().enumerate() {
            assert!(!text.contains(p.as_str()), "password #{i} is in the {what}");
        }
    }
}

/// Compromise (issue #6's trigger on the core, in-process, grace zero): the old PostgreSQL
/// user is NOLOGIN and its open sessions are cut; Redis drops the old password and every
/// connection of the user; reconnecting with the new values works.
#[tokio::test]
async fn compromise_cuts_old_sessions_and_redis_clients_at_once() {
    use keywarden::rotation::journal::{State, Trigger};
    use keywarden::rotation::{RequestOptions, RotationCore};
    use std::sync::Arc;

    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    seed(&client, &pg, &rs).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\npath = \"{}\"\n{}",
            dir.path().join("s.db").display(),
            secrets_toml("48h")
        ),
    )
    .unwrap();
    let config = Arc::new(keywarden::config::load(&path).unwrap());
    let store = keywarden::store::Store::open(&config.state.path).unwrap();
    let metrics = Arc::new(keywarden::telemetry::Metrics::new());
    let api = keywarden::aws::secretsmanager::SecretsManager::from_client(
        client.clone(),
        metrics.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let rx = stop.clone();
    let core = RotationCore::new(api, store, config, Default::default(), metrics, rx);
    tokio::spawn(core.clone().run_finalizer());

    let old_session = pg.login("app", PG_CANARY, "appdb").await.unwrap();
    old_session.simple_query("SELECT 1").await.unwrap();
    let mut old_redis = rs.login("events", REDIS_CANARY).await.unwrap();
    assert_eq!(ping(&mut old_redis).await.unwrap(), "PONG");

    let opts = RequestOptions {
        grace: Some(Duration::ZERO),
    };
    let a = core
        .request("DATABASE_PASSWORD", Trigger::Compromise, opts)
        .unwrap();
    let b = core
        .request("REDIS_PASSWORD", Trigger::Compromise, opts)
        .unwrap();
    for id in [a.id, b.id] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (r, events) = core.status(&id).unwrap().unwrap();
            if r.state == State::Done {
                break;
            }
            assert!(
                r.state != State::Failed && Instant::now() < deadline,
                "{r:?} {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // PostgreSQL: the open session is gone, the old user cannot come back, the new one works.
    assert!(
        old_session.simple_query("SELECT 1").await.is_err(),
        "session cut"
    );
    assert_refused_pg(&pg, "app", PG_CANARY, "compromise").await;
    let (u, p) = creds(&current(&client, "db/app").await);
    assert_eq!(u, "app_b");
    pg.login(&u, &p, "appdb")
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();

    // Redis: the connected client was dropped, the old password is refused, the new one works.
    assert!(
        ping(&mut old_redis).await.is_err(),
        "existing client dropped"
    );
    assert!(rs.login("events", REDIS_CANARY).await.is_err());
    let (_, rp) = creds(&current(&client, "cache/events").await);
    let mut fresh = rs.login("events", &rp).await.unwrap();
    assert_eq!(ping(&mut fresh).await.unwrap(), "PONG");
    assert_eq!(rs.password_count("events").await, 1);
    stop.cancel();
}

/// The AWSCURRENT credentials of `secret` log in and answer a query.
async fn assert_current_works(client: &sm::Client, pg: &Pg, rs: &RedisServer, secret: &str) {
    if secret == "DATABASE_PASSWORD" {
        let (u, p) = creds(&current(client, "db/app").await);
        let c = pg.login(&u, &p, "appdb").await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
    } else {
        let (u, p) = creds(&current(client, "cache/events").await);
        assert_eq!(
            ping(&mut rs.login(&u, &p).await.unwrap()).await.unwrap(),
            "PONG"
        );
    }
}

/// kill -9 (a failpoint abort) between set and finish and between finish and finalize: after a
/// restart the rotation completes and both servers agree with the secret.
#[tokio::test]
async fn kill9_between_set_and_finish_and_before_finalize_leaves_servers_and_secret_agreeing() {
    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    seed(&client, &pg, &rs).await;
    let config = config(&moto, "1s");
    for point in ["set:done", "finish:done"] {
        for secret in ["DATABASE_PASSWORD", "REDIS_PASSWORD"] {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_FAILPOINT", point)];
            let d = Daemon::start_in_env(dir, port, &config, &env).await;
            rotate(&d, secret).await;
            let dir = d.wait_exit(Duration::from_secs(30));
            let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
            assert!(
                log.contains(&format!("failpoint {point} reached")),
                "{point}:\n{log}"
            );
            // The journal the restart resumes from names the step after the one completed.
            let rows: Vec<_> = crate::support::journal_rows(dir.path())
                .into_iter()
                .filter(|r| r.secret == secret)
                .collect();
            let want = if point == "set:done" {
                ("test", "running")
            } else {
                ("finalize", "grace")
            };
            assert_eq!(rows.len(), 1, "{secret} {point}: {rows:?}");
            assert_eq!(
                (rows[0].step.as_str(), rows[0].state.as_str()),
                want,
                "{secret}: the journal after a crash at {point}"
            );
            let sm_id = if secret == "DATABASE_PASSWORD" {
                "db/app"
            } else {
                "cache/events"
            };
            let written = crate::support::token_values(&client, sm_id, &rows[0].id).await;
            assert!(
                !written.is_empty(),
                "{secret} {point}: nothing written before the crash"
            );
            // Even before the restart, whatever AWSCURRENT holds logs in.
            assert_current_works(&client, &pg, &rs, secret).await;
            let d = Daemon::start_in_env(dir, port, &config, &[("KW_TEST_TOKEN", TOKEN)]).await;
            let (status, body) = d.get("/rotations").await;
            assert_eq!(status, 200);
            let list: Value = serde_json::from_str(&body).unwrap();
            let rid = list["rotations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["secret"] == secret)
                .map(|r| r["id"].as_str().unwrap().to_string())
                .expect("the rotation was journaled");
            assert_eq!(
                rid, rows[0].id,
                "{secret} {point}: the journaled rotation resumed"
            );
            wait_state(&d, &rid, &["done"], Duration::from_secs(40)).await;
            drop(d);
            // A resume never writes a token's version again with another value.
            let after = crate::support::token_values(&client, sm_id, &rid).await;
            for (token, old) in &written {
                assert!(
                    after.get(token) == Some(old),
                    "{secret} {point}: the value of version {token} changed across the restart"
                );
            }
            assert_current_works(&client, &pg, &rs, secret).await;
            if secret == "DATABASE_PASSWORD" {
                let (u, _) = creds(&current(&client, "db/app").await);
                let other = if u == "app" { "app_b" } else { "app" };
                assert!(
                    pg.can_login(&u).await && !pg.can_login(other).await,
                    "{point}"
                );
            } else {
                let (u, _) = creds(&current(&client, "cache/events").await);
                assert_eq!(
                    rs.password_count(&u).await,
                    1,
                    "{point}: only the current password"
                );
            }
        }
    }
}

/// Every strategy step run twice in a row (as a resume after a crash inside a step does) is
/// harmless: set re-applies the same password, finalize finds its work done.
#[tokio::test]
async fn steps_repeated_after_an_interrupted_step_are_harmless() {
    use keywarden::aws::SecretValue;
    use keywarden::config::Strategy;
    use keywarden::rotation::strategy::{StepContext, for_spec};

    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let cases = [
        (
            Strategy::Postgres,
            json!({"username": "app", "password": PG_CANARY, "host": "127.0.0.1",
                   "port": pg.port, "dbname": "appdb"}),
            json!({"username": "kwadmin", "password": PG_ADMIN_PW, "dbname": "postgres",
                   "host": "127.0.0.1", "port": pg.port}),
        ),
        (
            Strategy::Redis,
            json!({"username": "events", "password": REDIS_CANARY, "host": "127.0.0.1",
                   "port": rs.port}),
            json!({"username": "kwadmin", "password": REDIS_ADMIN_PW, "host": "127.0.0.1",
                   "port": rs.port}),
        ),
    ];
    for (strategy, old, master) in cases {
        let spec = plaintext_spec(strategy);
        let s = for_spec("X", &spec).unwrap();
        let old = SecretValue::new(old.to_string());
        let master = SecretValue::new(master.to_string());
        let new = s.create_value(&old).unwrap();
        let ctx = StepContext {
            secret: "X",
            secret_id: "x",
            version_id: "v",
            previous_version_id: None,
            compromise: false,
            master: Some(&master),
            elasticache: None,
        };
        for _ in 0..2 {
            s.set(ctx, &new, &old).await.unwrap();
            s.test(ctx, &new).await.unwrap();
        }
        let (u, p) = creds(&serde_json::from_str(new.expose()).unwrap());
        if strategy == Strategy::Redis {
            assert_eq!(
                rs.password_count(&u).await,
                2,
                "set twice adds one password"
            );
        } else {
            // Both users log in until finalize.
            pg.login("app", PG_CANARY, "appdb").await.unwrap();
        }
        for _ in 0..2 {
            s.finalize(ctx, &new).await.unwrap();
        }
        if strategy == Strategy::Redis {
            assert_eq!(rs.password_count(&u).await, 1);
            ping(&mut rs.login(&u, &p).await.unwrap()).await.unwrap();
        } else {
            assert!(!pg.can_login("app").await && pg.can_login(&u).await);
            pg.login(&u, &p, "appdb").await.unwrap();
        }
    }
}

/// Issue #15 (10): a responder switched the Redis user off (`ACL SETUSER events off`); the set
/// step adds the new password and must leave the user off (it used to send `on`).
#[tokio::test]
async fn redis_set_leaves_a_disabled_user_disabled() {
    use keywarden::aws::SecretValue;
    use keywarden::config::Strategy;
    use keywarden::rotation::strategy::{StepContext, for_spec};

    let rs = RedisServer::start().await;
    let mut admin = rs.login("kwadmin", REDIS_ADMIN_PW).await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("events")
        .arg("off")
        .query_async(&mut admin)
        .await
        .unwrap();
    let spec = plaintext_spec(Strategy::Redis);
    let s = for_spec("X", &spec).unwrap();
    let old = SecretValue::new(
        json!({"username": "events", "password": REDIS_CANARY, "host": "127.0.0.1",
               "port": rs.port})
        .to_string(),
    );
    let master = SecretValue::new(
        json!({"username": "kwadmin", "password": REDIS_ADMIN_PW, "host": "127.0.0.1",
               "port": rs.port})
        .to_string(),
    );
    let new = s.create_value(&old).unwrap();
    let ctx = StepContext {
        secret: "X",
        secret_id: "x",
        version_id: "v",
        previous_version_id: None,
        compromise: false,
        master: Some(&master),
        elasticache: None,
    };
    s.set(ctx, &new, &old).await.unwrap();
    assert_eq!(
        rs.password_count("events").await,
        2,
        "set adds the password"
    );
    let (u, p) = creds(&serde_json::from_str(new.expose()).unwrap());
    assert!(
        rs.login(&u, &p).await.is_err(),
        "the set step switched the disabled user {u} back on"
    );
}

/// Opens a compromise incident on `secret` and waits until it is no longer open.
async fn compromise_and_wait(d: &Daemon, secret: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url(&format!("/compromised/{secret}")),
        &[("authorization", auth.as_str())],
        Some("{\"reason\":\"test\"}".to_string()),
    )
    .await;
    assert_eq!(
        status,
        202,
        "compromised {secret}: {body}\nlog:\n{}",
        d.log()
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let id = v["incident_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = d.get(&format!("/incidents/{id}")).await;
        let inc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if inc["status"] != "open" && !inc.is_null() {
            return inc;
        }
        assert!(Instant::now() < deadline, "{inc:#}\nlog:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue #15 point 2: a compromise that arrives while an earlier rotation is in its grace must
/// cut the sessions of the old user (the earlier rotation's finalize runs in compromise mode).
#[tokio::test]
async fn a_compromise_during_an_earlier_grace_cuts_the_old_users_sessions() {
    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    seed(&client, &pg, &rs).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("KW_TEST_TOKEN", TOKEN)];
    let d = Daemon::start_in_env(dir, free_port(), &config(&moto, "48h"), &env).await;

    let first = rotate(&d, "DATABASE_PASSWORD").await;
    wait_state(&d, &first, &["grace"], Duration::from_secs(30)).await;
    // In the grace the old user still logs in: an attacker holding it opens a session.
    let attacker = pg.login("app", PG_CANARY, "appdb").await.unwrap();
    attacker.simple_query("SELECT 1").await.unwrap();

    let inc = compromise_and_wait(&d, "DATABASE_PASSWORD").await;
    assert_eq!(inc["status"], "resolved", "{inc:#}\nlog:\n{}", d.log());
    assert_eq!(inc["finalized_earlier_rotation"], first.as_str());
    assert!(
        attacker.simple_query("SELECT 1").await.is_err(),
        "the old user's session survived the compromise\nlog:\n{}",
        d.log()
    );
    assert_refused_pg(&pg, "app", PG_CANARY, "compromise").await;
}

/// Issue #15 point 2: the compromise cuts the sessions of every credential older than the new
/// one, also when an earlier rotation was finalized normally (its old user set NOLOGIN, its
/// sessions left alone) and the compromise rotation then gives that user a new password.
#[tokio::test]
async fn a_compromise_cuts_sessions_left_by_an_ordinary_finalize() {
    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    seed(&client, &pg, &rs).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("KW_TEST_TOKEN", TOKEN)];
    let d = Daemon::start_in_env(dir, free_port(), &config(&moto, "3s"), &env).await;

    let attacker = pg.login("app", PG_CANARY, "appdb").await.unwrap();
    let first = rotate(&d, "DATABASE_PASSWORD").await;
    wait_state(&d, &first, &["done"], Duration::from_secs(30)).await;
    // An ordinary finalize sets the old user NOLOGIN; its open sessions are not its business.
    attacker.simple_query("SELECT 1").await.unwrap();
    // Issue #15 point 3: rolling back now would make a NOLOGIN user AWSCURRENT.
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url("/rollback/DATABASE_PASSWORD"),
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("finalized"), "{body}");
    assert_eq!(creds(&current(&client, "db/app").await).0, "app_b");

    let inc = compromise_and_wait(&d, "DATABASE_PASSWORD").await;
    assert_eq!(inc["status"], "resolved", "{inc:#}\nlog:\n{}", d.log());
    // The compromise rotation gave `app` a new password: the session opened with its old one
    // must not survive that.
    assert_eq!(creds(&current(&client, "db/app").await).0, "app");
    assert!(
        attacker.simple_query("SELECT 1").await.is_err(),
        "a session of an older credential survived the compromise\nlog:\n{}",
        d.log()
    );
    // The leaked version is nobody's AWSPREVIOUS, so nothing can roll back to it.
    let (status, _, body) = http(
        "POST",
        &d.url("/rollback/DATABASE_PASSWORD?force=true"),
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no AWSPREVIOUS"), "{body}");
}

// ---------------------------------------------------------------- admin login (issue #15, 1)

/// A spec of `strategy` on a plaintext connection (`tls = "disable"`, written explicitly as a
/// configuration must), the server taken from the master secret.
fn plaintext_spec(strategy: keywarden::config::Strategy) -> keywarden::config::RotationSpec {
    keywarden::config::RotationSpec {
        strategy,
        server: keywarden::config::ServerConnection {
            tls: keywarden::config::ServerTls::Disable,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A step context for the strategy-level tests, with `master` as the admin secret.
fn step_ctx(
    master: &keywarden::aws::SecretValue,
) -> keywarden::rotation::strategy::StepContext<'_> {
    keywarden::rotation::strategy::StepContext {
        secret: "X",
        secret_id: "x",
        version_id: "v",
        previous_version_id: None,
        compromise: false,
        master: Some(master),
        elasticache: None,
    }
}

/// Issue #15 (1): a server that asks for the password in cleartext (here a fake one, on the
/// plaintext connection the configuration asked for explicitly) gets no PasswordMessage, and the
/// step fails naming the refusal.
#[tokio::test]
async fn postgres_admin_login_refuses_a_server_asking_for_a_cleartext_password() {
    use crate::fake_pg::{Ask, FakePg};
    use keywarden::aws::SecretValue;
    use keywarden::config::Strategy;
    use keywarden::rotation::strategy::for_spec;

    for ask in [Ask::Cleartext, Ask::Md5] {
        let fake = FakePg::start(ask).await;
        // Plaintext, asked for explicitly: even then the password is not sent.
        let spec = plaintext_spec(Strategy::Postgres);
        let s = for_spec("X", &spec).unwrap();
        let old = SecretValue::new(json!({"username": "app", "password": PG_CANARY}).to_string());
        let master = SecretValue::new(
            json!({"username": "kwadmin", "password": PG_ADMIN_PW, "host": "127.0.0.1",
                   "port": fake.port, "dbname": "postgres"})
            .to_string(),
        );
        let new = s.create_value(&old).unwrap();
        let err = s
            .set(step_ctx(&master), &new, &old)
            .await
            .expect_err("the fake server lets nobody in");
        eprintln!("{ask:?}: {err}");
        let seen = fake.wait_seen(1).await;
        assert_eq!(seen.len(), 1, "{ask:?}: one connection: {seen:?}");
        assert_eq!(seen[0].user.as_deref(), Some("kwadmin"));
        assert!(
            !seen[0].password_sent(),
            "{ask:?}: a PasswordMessage reached the fake server: {:?}",
            seen[0].messages
        );
        let raw = String::from_utf8_lossy(&seen[0].raw_after_ask);
        assert!(
            !raw.contains(PG_ADMIN_PW),
            "{ask:?}: the admin password was sent"
        );
        let want = match ask {
            Ask::Cleartext => "cleartext",
            Ask::Md5 => "MD5",
        };
        assert!(
            err.0.contains(want) && err.0.contains("refused"),
            "{ask:?}: the error names the refusal: {err}"
        );
        assert!(!err.0.contains(PG_ADMIN_PW) && !err.0.contains(PG_CANARY));
    }
}

/// Issue #15 (1): a master secret without a host never sends the admin's password to the host
/// the rotated (application) secret names: the step fails before connecting anywhere, naming the
/// missing host and where it may come from.
#[tokio::test]
async fn admin_host_never_comes_from_the_rotated_secret() {
    use keywarden::aws::SecretValue;
    use keywarden::config::Strategy;
    use keywarden::rotation::strategy::for_spec;

    // A listener standing for a host an attacker wrote into the application secret.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = trap.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Answer a PostgreSQL client with a cleartext request and keep the socket open a
            // moment, so a vulnerable client would go on and send its password.
            use tokio::io::AsyncWriteExt;
            let _ = sock.write_all(b"R\0\0\0\x08\0\0\0\x03").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let cases = [
        (
            Strategy::Postgres,
            json!({"username": "app", "password": PG_CANARY, "host": "127.0.0.1",
                   "port": port, "dbname": "appdb"}),
            json!({"username": "kwadmin", "password": PG_ADMIN_PW, "dbname": "postgres"}),
        ),
        (
            Strategy::Redis,
            json!({"username": "events", "password": REDIS_CANARY, "host": "127.0.0.1",
                   "port": port}),
            json!({"username": "kwadmin", "password": REDIS_ADMIN_PW}),
        ),
    ];
    for (strategy, old, master) in cases {
        let spec = plaintext_spec(strategy);
        let s = for_spec("X", &spec).unwrap();
        let old = SecretValue::new(old.to_string());
        let master = SecretValue::new(master.to_string());
        let new = s.create_value(&old).unwrap();
        let ctx = step_ctx(&master);
        let set = tokio::time::timeout(Duration::from_secs(20), s.set(ctx, &new, &old))
            .await
            .unwrap();
        let fin = tokio::time::timeout(Duration::from_secs(20), s.finalize(ctx, &new))
            .await
            .unwrap();
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{strategy:?}: the admin login went to the host of the rotated secret"
        );
        for r in [set, fin] {
            let e = r.expect_err("no admin host");
            assert!(
                e.0.contains("host")
                    && e.0.contains("rotation.host")
                    && e.0.contains("master secret"),
                "{strategy:?}: the error names the missing host and where it may come from: {e}"
            );
        }
    }
    task.abort();
}

// ---------------------------------------------------------------- TLS (issue #15, 1)

/// A throwaway CA and a server certificate for `localhost` only (made with `openssl` in a temp
/// dir), and a second CA that signed nothing.
pub(super) struct Certs {
    _dir: tempfile::TempDir,
    pub(super) ca: PathBuf,
    pub(super) wrong_ca: PathBuf,
    pub(super) server_pem: PathBuf,
    pub(super) server_key: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl ({e}): apt-get install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (key, pem, cn) in [
        ("ca.key", "ca.pem", "kw-test-ca"),
        ("wrong.key", "wrong.pem", "kw-wrong-ca"),
    ] {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                pem,
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    Certs {
        ca: d.join("ca.pem"),
        wrong_ca: d.join("wrong.pem"),
        server_pem: d.join("server.pem"),
        server_key: d.join("server.key"),
        _dir: dir,
    }
}

/// A `verify-full` spec of `strategy` for `host`, verifying with `ca`.
fn tls_spec(
    strategy: keywarden::config::Strategy,
    host: &str,
    port: u16,
    ca: &std::path::Path,
) -> keywarden::config::RotationSpec {
    keywarden::config::RotationSpec {
        strategy,
        server: keywarden::config::ServerConnection {
            host: Some(host.to_string()),
            port: Some(port),
            dbname: (strategy == keywarden::config::Strategy::Postgres).then(|| "appdb".into()),
            tls: keywarden::config::ServerTls::VerifyFull,
            ca_file: Some(ca.to_path_buf()),
        },
        ..Default::default()
    }
}

/// Issue #15 (1): against a real PostgreSQL with `ssl = on` (hostssl only), verify-full with
/// channel binding rotates with the right CA and host name, and refuses a wrong CA, a name the
/// certificate does not carry, and a server without TLS; no password is sent in those cases.
#[tokio::test]
async fn postgres_verify_full_works_with_the_right_ca_and_refuses_a_wrong_ca_or_name() {
    use crate::fake_pg::{Ask, FakePg};
    use keywarden::aws::SecretValue;
    use keywarden::config::Strategy;
    use keywarden::rotation::strategy::for_spec;

    let certs = make_certs();
    let pg = Pg::start_with(Some(&certs)).await;
    pg.prepare().await;
    let old = SecretValue::new(json!({"username": "app", "password": PG_CANARY}).to_string());
    let master =
        SecretValue::new(json!({"username": "kwadmin", "password": PG_ADMIN_PW}).to_string());
    let ctx = step_ctx(&master);

    // Refusals first: nothing changes on the server.
    let wrong = [
        (
            "a wrong CA",
            tls_spec(Strategy::Postgres, "localhost", pg.port, &certs.wrong_ca),
            "UnknownIssuer",
        ),
        (
            "a wrong host name",
            tls_spec(Strategy::Postgres, "127.0.0.1", pg.port, &certs.ca),
            "not valid for name",
        ),
    ];
    for (why, spec, want) in wrong {
        let s = for_spec("X", &spec).unwrap();
        let new = s.create_value(&old).unwrap();
        let e = s.set(ctx, &new, &old).await.expect_err(why);
        eprintln!("{why}: {e}");
        assert!(e.0.contains(want), "{why}: {e}");
        assert!(!e.0.contains(PG_ADMIN_PW));
    }
    let fake = FakePg::start(Ask::Cleartext).await;
    let s = for_spec(
        "X",
        &tls_spec(Strategy::Postgres, "localhost", fake.port, &certs.ca),
    )
    .unwrap();
    let new = s.create_value(&old).unwrap();
    let e = s.set(ctx, &new, &old).await.expect_err("no TLS");
    eprintln!("a server without TLS: {e}");
    assert!(e.0.contains("TLS"), "{e}");
    let seen = fake.wait_seen(1).await;
    assert!(
        seen[0].ssl_requested && seen[0].user.is_none(),
        "no startup message in clear: {seen:?}"
    );
    assert!(
        pg.superuser()
            .await
            .query("SELECT 1 FROM pg_roles WHERE rolname = 'app_b'", &[])
            .await
            .unwrap()
            .is_empty()
    );

    // The right CA and name: set, test and finalize over TLS.
    let s = for_spec(
        "X",
        &tls_spec(Strategy::Postgres, "localhost", pg.port, &certs.ca),
    )
    .unwrap();
    let new = s.create_value(&old).unwrap();
    s.set(ctx, &new, &old).await.unwrap();
    s.test(ctx, &new).await.unwrap();
    s.finalize(ctx, &new).await.unwrap();
    assert!(!pg.can_login("app").await && pg.can_login("app_b").await);
    // keywarden's sessions used TLS with SCRAM channel binding (hostssl only lets TLS in).
    let log = pg.server_log();
    assert!(
        log.contains("connection authorized: user=kwadmin") && log.contains("SSL enabled"),
        "server log:\n{log}"
    );
}

/// Issue #15 (1): the same with a redis-server built with TLS (Debian's is): `--tls-port`,
/// verify-full with the right CA and name works; a wrong CA, a wrong name, and the plaintext
/// port are refused.
#[tokio::test]
async fn redis_tls_works_with_the_right_ca_and_refuses_a_wrong_ca_or_name() {
    use keywarden::aws::SecretValue;
    use keywarden::config::Strategy;
    use keywarden::rotation::strategy::for_spec;

    let certs = make_certs();
    let tls_port = free_port();
    let (p, c, k, ca) = (
        tls_port.to_string(),
        certs.server_pem.display().to_string(),
        certs.server_key.display().to_string(),
        certs.ca.display().to_string(),
    );
    let rs = RedisServer::start_with(&[
        "--tls-port",
        &p,
        "--tls-cert-file",
        &c,
        "--tls-key-file",
        &k,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ])
    .await;
    let old = SecretValue::new(json!({"username": "events", "password": REDIS_CANARY}).to_string());
    let master =
        SecretValue::new(json!({"username": "kwadmin", "password": REDIS_ADMIN_PW}).to_string());
    let ctx = step_ctx(&master);
    let wrong = [
        (
            "a wrong CA",
            tls_spec(Strategy::Redis, "localhost", tls_port, &certs.wrong_ca),
            "UnknownIssuer",
        ),
        (
            "a wrong host name",
            tls_spec(Strategy::Redis, "127.0.0.1", tls_port, &certs.ca),
            "not valid for name",
        ),
        (
            "the plaintext port",
            tls_spec(Strategy::Redis, "localhost", rs.port, &certs.ca),
            "cannot log in",
        ),
    ];
    for (why, spec, want) in wrong {
        let s = for_spec("X", &spec).unwrap();
        let new = s.create_value(&old).unwrap();
        let e = s.set(ctx, &new, &old).await.expect_err(why);
        eprintln!("{why}: {e}");
        assert!(e.0.contains(want), "{why}: {e}");
        assert!(!e.0.contains(REDIS_ADMIN_PW));
    }
    assert_eq!(rs.password_count("events").await, 1, "nothing was changed");
    let s = for_spec(
        "X",
        &tls_spec(Strategy::Redis, "localhost", tls_port, &certs.ca),
    )
    .unwrap();
    let new = s.create_value(&old).unwrap();
    s.set(ctx, &new, &old).await.unwrap();
    assert_eq!(rs.password_count("events").await, 2);
    s.test(ctx, &new).await.unwrap();
    s.finalize(ctx, &new).await.unwrap();
    assert_eq!(rs.password_count("events").await, 1);
}

// ---------------------------------------------------------------- the runbook's shape (#13, 2)

/// Issue #13 (2): the runbook keeps DATABASE_PASSWORD as `{"username","password"}`. Two such
/// secrets rotate end to end through the daemon: one takes host, port and dbname from
/// `rotation = { host, port, dbname }`, the other from its master secret. Each new value keeps
/// exactly that shape, the new user logs in, the old one is NOLOGIN after the grace, and no
/// password reaches the log.
#[tokio::test]
async fn postgres_rotates_the_runbooks_username_password_shape() {
    const SVC_CANARY: &str = "svc-canary-Rn4cW8yTz2";
    let pg = Pg::start().await;
    pg.prepare().await;
    let su = pg.superuser().await;
    su.batch_execute(&format!(
        "SET log_statement = 'none'; CREATE ROLE svc LOGIN PASSWORD '{SVC_CANARY}';"
    ))
    .await
    .unwrap();
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let shape = |u: &str, p: &str| json!({"username": u, "password": p});
    create_secret(&client, "db/runbook", &shape("app", PG_CANARY)).await;
    create_secret(&client, "db/svc", &shape("svc", SVC_CANARY)).await;
    create_secret(&client, "db/admin-min", &shape("kwadmin", PG_ADMIN_PW)).await;
    create_secret(
        &client,
        "db/admin-full",
        &json!({"username": "kwadmin", "password": PG_ADMIN_PW, "host": "127.0.0.1",
                "port": pg.port, "dbname": "appdb"}),
    )
    .await;
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"DATABASE_PASSWORD\"\nid = \"db/runbook\"\n\
         rotation = {{ strategy = \"postgres\", grace = \"1s\", master_secret = \"db/admin-min\", \
         host = \"127.0.0.1\", port = {}, dbname = \"appdb\", tls = \"disable\" }}\n\n\
         [[secret]]\nname = \"SVC_DB\"\nid = \"db/svc\"\n\
         rotation = {{ strategy = \"postgres\", grace = \"1s\", master_secret = \"db/admin-full\", \
         tls = \"disable\" }}\n",
        moto.endpoint(),
        pg.port
    );
    let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_LOG", "trace")];
    let d = Daemon::start_in_env(tempfile::tempdir().unwrap(), free_port(), &config, &env).await;
    let mut passwords = vec![
        PG_CANARY.to_string(),
        SVC_CANARY.to_string(),
        PG_ADMIN_PW.to_string(),
    ];
    for (secret, id, old_user, old_pw) in [
        ("DATABASE_PASSWORD", "db/runbook", "app", PG_CANARY),
        ("SVC_DB", "db/svc", "svc", SVC_CANARY),
    ] {
        let rid = rotate(&d, secret).await;
        let r = wait_state(&d, &rid, &["done", "failed"], Duration::from_secs(40)).await;
        assert_eq!(r["state"], "done", "{secret}: {r}\nlog:\n{}", d.log());
        let v = current(&client, id).await;
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["password", "username"],
            "{secret}: the shape is kept: {keys:?}"
        );
        let (u, p) = creds(&v);
        assert_eq!(u, format!("{old_user}_b"));
        passwords.push(p.clone());
        pg.login(&u, &p, "appdb")
            .await
            .unwrap()
            .simple_query("SELECT 1")
            .await
            .unwrap();
        assert_refused_pg(&pg, old_user, old_pw, "after the grace").await;
    }
    let log = d.log();
    for (i, p) in passwords.iter().enumerate() {
        assert!(
            !log.contains(p.as_str()),
            "password #{i} is in the keywarden log"
        );
    }
}
