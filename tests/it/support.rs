//! Shared support for the integration tests: the moto launcher, the keywarden binary as a child
//! process, a small HTTP client and a parser for the metrics exposition.
//!
//! Nothing here skips: a missing dependency fails the test with the command that installs it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager as sm;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the project's virtualenv, with moto installed.
pub fn venv_python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (it creates .venv), or: python3 -m venv .venv && \
         .venv/bin/pip install 'moto[server]==5.2.5'",
        python.display()
    );
    python
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// Current time in whole seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A running moto launcher (`tests/support/moto_server.py`).
pub struct Moto {
    child: Option<Child>,
    /// The loopback port it serves on.
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port and waits for its READY line.
    pub fn start() -> Moto {
        Moto::start_on(0)
    }

    /// Starts moto enforcing IAM after its first `n` AWS requests
    /// (`--initial-no-auth-action-count`).
    pub fn start_enforcing(n: u32) -> Moto {
        Moto::start_with(0, &["--initial-no-auth-action-count", &n.to_string()])
    }

    fn start_on(port: u16) -> Moto {
        Moto::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Moto {
        let python = venv_python();
        let mut child = Command::new(python)
            .arg(root().join("tests/support/moto_server.py"))
            .args([
                "--port",
                &port.to_string(),
                "--quiet",
                "--exit-on-stdin-eof",
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/support/moto_server.py");
        let stdout = child.stdout.take().expect("moto stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so moto never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("moto did not print its READY line within 30 s");
        let port = line
            .trim()
            .strip_prefix("KEYWARDEN-MOTO-READY port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from moto: {line:?}"));
        Moto {
            child: Some(child),
            port,
        }
    }

    /// The endpoint URL to give keywarden and the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops moto (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let _ = wait_timeout(&mut child, Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts moto again on the same port (its state is empty).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The port may linger briefly; retry until it binds.
            let attempt = std::panic::catch_unwind(|| Moto::start_on(self.port));
            match attempt {
                Ok(mut m) => {
                    self.child = m.child.take();
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }

    /// The SDK configuration for this moto: its endpoint, us-east-1, dummy credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(sm::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await
    }

    /// A Secrets Manager client against this moto.
    pub async fn secrets_client(&self) -> sm::Client {
        sm::Client::new(&self.sdk_config().await)
    }

    /// A CloudWatch Logs client against this moto.
    pub async fn logs_client(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.sdk_config().await)
    }

    /// Calls the launcher's control API.
    pub async fn control(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, _, body) = http(
            method,
            &format!("{}/_keywarden/{path}", self.endpoint()),
            &[("content-type", "application/json")],
            Some(body.to_string()),
        )
        .await;
        let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, value)
    }

    /// Sets a secret's stored dates (see the launcher's docs).
    pub async fn set_dates(&self, body: serde_json::Value) {
        let (status, answer) = self.control("POST", "secret-dates", body).await;
        assert_eq!(status, 200, "secret-dates failed: {answer}");
    }

    /// AWS requests moto served, by `service:Operation`.
    pub async fn requests(&self) -> BTreeMap<String, u64> {
        let (status, v) = self
            .control("GET", "requests", serde_json::Value::Null)
            .await;
        assert_eq!(status, 200);
        serde_json::from_value(v).expect("request counts are a map")
    }

    /// Resets the request counts.
    pub async fn reset_requests(&self) {
        let (status, _) = self
            .control("DELETE", "requests", serde_json::Value::Null)
            .await;
        assert_eq!(status, 200);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates a secret with a value and makes its current value `age_days` old (exact seconds).
/// Returns the creation timestamp set.
pub async fn create_aged_secret(
    moto: &Moto,
    client: &sm::Client,
    name: &str,
    age_days: i64,
) -> i64 {
    client
        .create_secret()
        .name(name)
        .secret_string(format!("value-of-{name}-{}", uuid_like()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    let created = now() - age_days * 86_400;
    moto.set_dates(serde_json::json!({
        "secret_id": name,
        "created": created,
        "current_version_created": created,
    }))
    .await;
    created
}

/// A random-enough token for test values.
pub fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{n:x}")
}

/// Sends a POSIX signal to a child.
pub fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status();
}

/// Waits for a child up to `limit`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP request; returns status, headers and body text.
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Vec<(String, String)>, String) {
    // No pooling: a test's connection never outlives its request.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("valid request");
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    (status, headers, body)
}

/// The status of a GET of `url`, `None` when the connection fails (a replica of `[ha]` that
/// switches from follower to leader closes its listener and opens it again).
pub async fn try_status(url: &str) -> Option<u16> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let req = hyper::Request::builder()
        .method("GET")
        .uri(url)
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

/// One sample of the exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The raw text.
    pub text: String,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses Prometheus text (no escapes in label values beyond `\"`, enough for our labels).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut map = BTreeMap::new();
            let mut rest = labels;
            while let Some((key, after)) = rest.split_once("=\"") {
                let mut end = 0;
                let bytes = after.as_bytes();
                while end < bytes.len()
                    && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
                {
                    end += 1;
                }
                map.insert(
                    key.trim_start_matches(',').to_string(),
                    after[..end].replace("\\\"", "\""),
                );
                rest = after.get(end + 1..).unwrap_or("");
            }
            samples.push(Sample {
                name: name.to_string(),
                labels: map,
                value,
            });
        }
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the one series `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        });
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "more than one series of {name} matches {labels:?}"
        );
        Some(first.value)
    }

    /// Sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Whether any series mentions `secret`.
    pub fn mentions_secret(&self, secret: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.labels.get("secret").map(String::as_str) == Some(secret))
    }
}

/// A keywarden daemon run as a child process with its own temp dir.
pub struct Daemon {
    child: Option<Child>,
    /// The temp dir with the config, the store and the log.
    pub dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin token it was given in `KW_TEST_TOKEN`, sent by [`Daemon::get`] so that the
    /// read routes answer with their details (issue #15: anonymous reads get a summary).
    pub token: Option<String>,
}

/// The keywarden binary built by cargo for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keywarden"))
}

/// A `Command` for the binary with a scrubbed environment (dummy AWS credentials only).
pub fn keywarden_command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "KEYWARDEN_LOG",
            "debug,aws_config=warn,aws_config::sts::assume_role=error,aws_smithy_runtime=warn,hyper=warn",
        );
    cmd
}

impl Daemon {
    /// Sends signal `name` (`STOP`, `CONT`, ...) to the daemon.
    pub fn send(&self, name: &str) {
        if let Some(child) = self.child.as_ref() {
            signal(child, name);
        }
    }

    /// Whether the daemon has exited, with its status.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Writes `config` (with `{listen}`, `{state}` and `{dir}` substituted) and starts the
    /// daemon, waiting until `/healthz` answers.
    pub async fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        Daemon::start_in(dir, port, config).await
    }

    /// Starts a daemon in an existing dir and port (used to restart).
    pub async fn start_in(dir: tempfile::TempDir, port: u16, config: &str) -> Daemon {
        Daemon::start_in_env(dir, port, config, &[]).await
    }

    /// Like [`Daemon::start_in`], with `KEYWARDEN_LOG` set to `log_filter` when given (for
    /// example `trace`, to scan every log line the daemon can write).
    pub async fn start_in_with_log(
        dir: tempfile::TempDir,
        port: u16,
        config: &str,
        log_filter: Option<&str>,
    ) -> Daemon {
        match log_filter {
            Some(filter) => {
                Daemon::start_in_env(dir, port, config, &[("KEYWARDEN_LOG", filter)]).await
            }
            None => Daemon::start_in_env(dir, port, config, &[]).await,
        }
    }

    /// Like [`Daemon::start_in`], with extra environment variables for the daemon.
    pub async fn start_in_env(
        dir: tempfile::TempDir,
        port: u16,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut d = Daemon::launch_in_env(dir, port, config, env);
        d.wait_healthy().await;
        d
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("keywarden exited early with {status}; log:\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && try_status(&self.url("/healthz")).await == Some(200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "keywarden did not become healthy; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keywarden.log")).unwrap_or_default()
    }

    /// GET a path, with the admin token when the daemon has one (see [`Daemon::token`]).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let (status, _, body) = http("GET", &self.url(path), &headers, None).await;
        (status, body)
    }

    /// Scrapes `/metrics` (Prometheus text format).
    pub async fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "metrics: {body}");
        Scrape::parse(&body)
    }

    /// Waits until `check` holds on a scrape, or fails with the log.
    pub async fn wait_for<F: Fn(&Scrape) -> bool>(
        &self,
        what: &str,
        limit: Duration,
        check: F,
    ) -> Scrape {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.scrape().await;
            if check(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{}\nlog:\n{}",
                s.text,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Number of completed metadata poll cycles.
    pub fn metadata_cycles(s: &Scrape) -> f64 {
        s.get(
            "keywarden_poll_duration_seconds_count",
            &[("source", "metadata")],
        )
        .unwrap_or(0.0)
    }

    /// Waits until `polls` more metadata cycles have completed than when it was called: the
    /// positive signal before a negative check ("nothing happened in N cycles").
    pub async fn let_polls_pass(&self, polls: f64) {
        let start = Daemon::metadata_cycles(&self.scrape().await);
        self.wait_for("more metadata polls", Duration::from_secs(30), |s| {
            Daemon::metadata_cycles(s) >= start + polls
        })
        .await;
    }

    /// Waits until rotation `id` is in one of `states` and returns its JSON; fails at once,
    /// with the log, when it failed and `failed` is not one of `states`.
    pub async fn wait_rotation(
        &self,
        id: &str,
        states: &[&str],
        limit: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get(&format!("/rotations/{id}")).await;
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).expect("rotation JSON");
                let state = v["state"].as_str().unwrap_or("");
                assert!(
                    state != "failed" || states.contains(&"failed"),
                    "rotation {id} failed: {v:#}\nlog:\n{}",
                    self.log()
                );
                if states.contains(&state) {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "rotation {id} not in {states:?} after {limit:?}: {v:#}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal and waits for exit; returns the status and how long it took.
    pub fn stop_with(&mut self, sig: &str, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let mut child = self.child.take().expect("daemon is running");
        let started = Instant::now();
        signal(&child, sig);
        let status = wait_timeout(&mut child, limit);
        let took = started.elapsed();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (status, took)
    }

    /// Waits for the daemon to exit by itself (a failpoint abort); returns its dir for a
    /// restart. Fails with the log when it is still running after `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> tempfile::TempDir {
        let mut child = self.child.take().expect("daemon is running");
        if wait_timeout(&mut child, limit).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "keywarden did not exit within {limit:?}; log:\n{}",
                self.log()
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Kills the daemon with SIGKILL and returns its dir for a restart.
    pub fn kill9(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("---- keywarden log ----\n{}", self.log());
            }
        }
    }
}

/// Runs `promtool check metrics` on an exposition; fails the test with its output.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it with `apt-get install prometheus` (scripts/test does)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Path helper for test files.
pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Every file of the store in `dir` (`state.db`, `state.db-wal`, `state.db-shm`, and any
/// other `state.db*`) whose bytes contain `needle`. The store runs in WAL mode, so recent
/// commits live in `state.db-wal` until a checkpoint: a canary scan of `state.db` alone can
/// miss them. Fails the test when `dir` holds no store file at all (nothing was scanned).
pub fn store_files_contain(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut scanned = 0;
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let is_store = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("state.db"));
        if !is_store {
            continue;
        }
        scanned += 1;
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if bytes
            .windows(needle.len().max(1))
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    assert!(scanned > 0, "no state.db* file in {}", dir.display());
    found
}

impl Daemon {
    /// Like [`Daemon::start_in_env`], without waiting for `/healthz`: for a daemon that may
    /// abort at a failpoint before it answers. Wait for it with [`Daemon::wait_exit`].
    pub fn launch_in_env(
        dir: tempfile::TempDir,
        port: u16,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let text = config
            .replace("{listen}", &addr.to_string())
            .replace(
                "{state}",
                &dir.path().join("state.db").display().to_string(),
            )
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("keywarden.toml");
        std::fs::write(&config_path, text).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("keywarden.log"))
            .expect("open log");
        let mut cmd = keywarden_command();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn keywarden");
        Daemon {
            child: Some(child),
            dir,
            addr,
            token: env
                .iter()
                .find(|(k, _)| *k == "KW_TEST_TOKEN")
                .map(|(_, v)| v.to_string()),
        }
    }

    /// Sends SIGTERM and waits up to `limit` for a clean exit; returns the dir. Fails with
    /// the log when it does not exit in time or exits unsuccessfully.
    pub fn terminate(mut self, limit: Duration) -> tempfile::TempDir {
        let (status, _) = self.stop_with("TERM", limit);
        assert!(
            status.is_some_and(|s| s.success()),
            "keywarden did not stop cleanly on SIGTERM within {limit:?} ({status:?}); log:\n{}",
            self.log()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// Whether process `pid` is gone. A zombie (state `Z` in `/proc/<pid>/stat`: dead, not yet
/// reaped by its parent) counts as dead.
pub fn process_is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// Waits up to `limit` for process `pid` to die (see [`process_is_dead`]); returns whether it
/// did.
pub fn wait_process_dead(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if process_is_dead(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for `path` to hold a complete line (its writer ends it with a newline)
/// and returns that line; fails the test otherwise.
pub fn wait_for_line(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some((line, _)) = text.split_once('\n')
        {
            return line.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} did not get a line within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One row of the rotation journal as a dead daemon left it: `(id, secret, step, state)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// The rotation id.
    pub id: String,
    /// The inventory name of the secret.
    pub secret: String,
    /// The journaled step (`create` ... `done`).
    pub step: String,
    /// The journaled state (`running`, `grace`, `done`, ...).
    pub state: String,
}

/// Reads the rotation journal of `state.db` in `dir` read-only (the daemon must have exited), in
/// request order. Committed WAL frames are part of what a reader sees, so this is exactly what a
/// restarted daemon will resume from.
pub fn journal_rows(dir: &Path) -> Vec<JournalRow> {
    if let Some(table) = dynamo_table_of(dir) {
        use keywarden::rotation::journal::{JournalStore, State};
        let rows = table
            .rotations_in_states(&State::ALL)
            .unwrap_or_else(|e| panic!("read the journal of {}: {e}", table.name()));
        return rows
            .into_iter()
            .map(|r| JournalRow {
                id: r.id,
                secret: r.secret,
                step: r.step.as_str().to_string(),
                state: r.state.as_str().to_string(),
            })
            .collect();
    }
    let path = dir.join("state.db");
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
    let mut stmt = conn
        .prepare("SELECT id, secret, step, state FROM rotations ORDER BY requested_at, rowid")
        .expect("the rotations table exists");

    stmt.query_map([], |r| {
        Ok(JournalRow {
            id: r.get(0)?,
            secret: r.get(1)?,
            step: r.get(2)?,
            state: r.get(3)?,
        })
    })
    .expect("query the journal")
    .collect::<Result<Vec<_>, _>>()
    .expect("read the journal")
}

/// The value of one version, by id alone (labelled or not); `None` when it does not exist.
pub async fn value_of_version(client: &sm::Client, id: &str, version: &str) -> Option<String> {
    match client
        .get_secret_value()
        .secret_id(id)
        .version_id(version)
        .send()
        .await
    {
        Ok(v) => Some(v.secret_string().unwrap_or_default().to_string()),
        Err(e) => {
            let code = e.as_service_error().and_then(|s| {
                use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
                s.code().map(str::to_string)
            });
            assert_eq!(
                code.as_deref(),
                Some("ResourceNotFoundException"),
                "reading version {version} of {id}: {e:?}"
            );
            None
        }
    }
}

/// The values written under a rotation's ClientRequestTokens (`keywarden-<id>` and, for the
/// strategies with a finalize value, `keywarden-<id>-final`) that exist right now.
pub async fn token_values(client: &sm::Client, id: &str, rid: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for token in [format!("keywarden-{rid}"), format!("keywarden-{rid}-final")] {
        if let Some(v) = value_of_version(client, id, &token).await {
            out.insert(token, v);
        }
    }
    out
}

/// A named pipe that holds a shell hook until the test releases it: the hook runs
/// [`Gate::wait_command`], which blocks reading the pipe, and [`Gate::release`] opens the pipe for
/// writing and closes it, so the reader sees end-of-file and the hook goes on. This replaces a
/// `sleep` in a hook with an explicit signal. The reader gives up after 120 s so that a failed test
/// leaves no process behind for long.
pub struct Gate {
    path: PathBuf,
}

impl Gate {
    /// Creates the pipe `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Gate {
        let path = dir.join(name);
        let out = Command::new("mkfifo")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mkfifo ({e}): install coreutils"));
        assert!(
            out.status.success(),
            "mkfifo {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Gate { path }
    }

    /// The shell command a hook runs to wait for the release.
    pub fn wait_command(&self) -> String {
        format!("timeout 120 cat {} >/dev/null", self.path.display())
    }

    /// Releases every hook waiting on the pipe. Fails when no hook is waiting within `limit`
    /// (opening a pipe for writing without blocking fails with ENXIO while it has no reader).
    pub async fn release(&self, limit: Duration) {
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = Instant::now() + limit;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
            {
                // Dropping the writer closes it: the reader sees end-of-file.
                Ok(writer) => {
                    drop(writer);
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => panic!("cannot open {} for writing: {e}", self.path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "no hook waited on {} within {limit:?}",
                self.path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The state store backend a test runs against (SPEC §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The SQLite file `{state}` in the daemon's dir.
    Sqlite,
    /// A fresh DynamoDB table on moto, created as `keywarden init-store` does.
    Dynamo,
}

impl Backend {
    /// The `[state]` section of a configuration for this backend. For DynamoDB, a new table
    /// (unique name) is created on `moto` first.
    pub fn state_section(self, moto: &Moto) -> String {
        match self {
            Backend::Sqlite => "[state]\npath = \"{state}\"\n".to_string(),
            Backend::Dynamo => {
                let name = format!("kw-{}", &uuid_like()[..12]);
                let section = format!(
                    "[state]\nbackend = \"dynamodb\"\ntable = \"{name}\"\npath = \"{{state}}\"\n"
                );
                init_store(moto, &section);
                section
            }
        }
    }
}

/// A client of DynamoDB table `name` on the emulator at `endpoint` (dummy credentials).
pub fn dynamo_table(endpoint: &str, name: &str) -> keywarden::aws::dynamodb::DynamoTable {
    let creds = sm::config::Credentials::new("test", "test", None, None, "tests");
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(sm::config::SharedCredentialsProvider::new(creds))
        .build();
    keywarden::aws::dynamodb::DynamoTable::with_sdk(
        &sdk,
        name,
        std::sync::Arc::new(keywarden::aws::NoObserver),
    )
    .unwrap_or_else(|e| panic!("DynamoDB client: {e}"))
}

/// The DynamoDB table of the configuration the daemon in `dir` ran with, if its backend is
/// `dynamodb`.
pub fn dynamo_table_of(dir: &Path) -> Option<keywarden::aws::dynamodb::DynamoTable> {
    let path = dir.join("keywarden.toml");
    let text = std::fs::read_to_string(&path).ok()?;
    let config = keywarden::config::parse(&text, &path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if config.state.backend != keywarden::config::StateBackend::DynamoDb {
        return None;
    }
    let table = config.state.table.clone()?;
    let endpoint = config.aws.endpoint_url.clone()?;
    Some(dynamo_table(&endpoint, &table))
}

/// Runs `keywarden init-store` with `state_section` against `moto` and returns its output;
/// fails unless it exits 0.
pub fn init_store(moto: &Moto, state_section: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("keywarden.toml");
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n{}",
        moto.endpoint(),
        state_section.replace(
            "{state}",
            &dir.path().join("state.db").display().to_string()
        )
    );
    std::fs::write(&config, text).expect("write config");
    let out = keywarden_command()
        .arg("init-store")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run keywarden init-store");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keywarden init-store failed: {text}");
    text
}

/// Every reminder ledger row the daemon in `dir` left, whichever its backend:
/// (secret, state, SNS message id), by secret.
pub fn ledger_rows(dir: &Path) -> Vec<(String, String, Option<String>)> {
    let mut rows: Vec<(String, String, Option<String>)> = match dynamo_table_of(dir) {
        Some(t) => t
            .query("reminder", None, None)
            .unwrap_or_else(|e| panic!("read the ledger: {e}"))
            .iter()
            .map(|i| {
                use keywarden::aws::dynamodb::s;
                (
                    s(i, "secret").unwrap_or_default().to_string(),
                    s(i, "state").unwrap_or_default().to_string(),
                    s(i, "message_id").map(str::to_string),
                )
            })
            .collect(),
        None => {
            let store =
                keywarden::store::Store::open(&dir.join("state.db")).expect("open the store");
            keywarden::reminder::all_rows(&store)
                .expect("read the ledger")
                .into_iter()
                .map(|r| (r.key.secret, r.state, r.message_id))
                .collect()
        }
    };
    rows.sort();
    rows
}
