//! The rotation core against moto and the real binary: every strategy's happy path, the API and
//! CLI, crashes (failpoints and kill -9) at every step boundary and at random moments, retries
//! and visible failure, hooks, rollback, scheduled rotations in a window, secrecy of values, and
//! the time from `POST /rotate` to the new AWSCURRENT.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager as sm;
use serde_json::Value;

use crate::support::{
    Backend, Daemon, Gate, Moto, http, keywarden_command, now, store_files_contain, token_values,
};

const TOKEN: &str = "test-admin-token-0123456789abcdef0123";

fn base_config(moto: &Moto, secrets: &str) -> String {
    base_config_on(moto, secrets, Backend::Sqlite)
}

/// The base configuration with the state store on `backend`.
fn base_config_on(moto: &Moto, secrets: &str, backend: Backend) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         {}\n{secrets}",
        moto.endpoint(),
        backend.state_section(moto)
    )
}

async fn start(config: &str) -> Daemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    Daemon::start_in_env(dir, port, config, &[("KW_TEST_TOKEN", TOKEN)]).await
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

/// (version id -> stages) of every labelled version.
async fn stages(client: &sm::Client, id: &str) -> BTreeMap<String, Vec<String>> {
    let d = client.describe_secret().secret_id(id).send().await.unwrap();
    d.version_ids_to_stages()
        .map(|m| {
            m.iter()
                .filter(|(_, s)| !s.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every version, labelled or not.
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

async fn value(client: &sm::Client, id: &str, stage: &str) -> (String, String) {
    let v = client
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await
        .unwrap();
    (
        v.version_id().unwrap().to_string(),
        v.secret_string().unwrap_or_default().to_string(),
    )
}

/// The invariants after any crash: exactly one AWSCURRENT, a non-empty value, and AWSPENDING
/// on no version other than AWSCURRENT.
async fn assert_sane(client: &sm::Client, id: &str) -> (String, String) {
    let st = stages(client, id).await;
    let current: Vec<_> = st
        .iter()
        .filter(|(_, s)| s.iter().any(|x| x == "AWSCURRENT"))
        .collect();
    assert_eq!(current.len(), 1, "{id}: exactly one AWSCURRENT: {st:?}");
    let pending_elsewhere = st
        .iter()
        .any(|(_, s)| s.iter().any(|x| x == "AWSPENDING") && !s.iter().any(|x| x == "AWSCURRENT"));
    assert!(
        !pending_elsewhere,
        "{id}: AWSPENDING left on another version: {st:?}"
    );
    let (vid, v) = value(client, id, "AWSCURRENT").await;
    assert!(!v.is_empty(), "{id}: empty current value");
    (vid, v)
}

async fn post(d: &Daemon, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let (status, _, body) = http("POST", &d.url(path), &headers, None).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn get_json(d: &Daemon, path: &str) -> Value {
    let (status, body) = d.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn wait_state(d: &Daemon, id: &str, states: &[&str], limit: Duration) -> Value {
    d.wait_rotation(id, states, limit).await
}

/// The journaled rotations of one secret, newest first.
async fn rotations_of(d: &Daemon, secret: &str) -> Vec<Value> {
    let v = get_json(d, "/rotations").await;
    v["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["secret"] == secret)
        .cloned()
        .collect()
}

async fn rotate(d: &Daemon, secret: &str) -> String {
    let (status, body) = post(d, &format!("/rotate/{secret}"), Some(TOKEN)).await;
    assert_eq!(status, 202, "rotate {secret}: {body}\nlog:\n{}", d.log());
    assert_eq!(body["secret"], secret);
    assert_eq!(
        body["url"],
        format!("/rotations/{}", body["rotation_id"].as_str().unwrap())
    );
    body["rotation_id"].as_str().unwrap().to_string()
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e})"))
}

#[tokio::test]
async fn strategies_happy_paths_api_and_metrics() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/random", "old-random-value").await;
    create(&client, "app/jwt", r#"{"current":"jwt-key-0","kid":"k"}"#).await;
    create(&client, "app/apikey", "plain-old-encryption-key").await;
    create(&client, "app/monitored", "x").await;
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().display().to_string();
    let secrets = format!(
        "[[secret]]\nname = \"RANDOM\"\nid = \"app/random\"\nrotation = {{ strategy = \"random\", bytes = 48 }}\n\n\
         [[secret]]\nname = \"JWT\"\nid = \"app/jwt\"\nrotation = {{ strategy = \"dual-key\", grace = \"3s\" }}\n\n\
         [[secret]]\nname = \"APIKEY\"\nid = \"app/apikey\"\nrotation = {{ strategy = \"primary-secondary\", grace = \"0s\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", \"echo finish >> {marks}/order\"] }}, \
                  {{ on = \"finalize\", command = [\"sh\", \"-c\", \"echo finalize >> {marks}/order\"] }}]\n\n\
         [[secret]]\nname = \"MONITORED\"\nid = \"app/monitored\"\n"
    );
    let config = base_config(&moto, &secrets);
    let d = start(&config).await;

    // Refusals first: no token, wrong token, unknown secret, strategy none, wrong method.
    assert_eq!(post(&d, "/rotate/RANDOM", None).await.0, 401);
    assert_eq!(post(&d, "/rotate/RANDOM", Some("wrong")).await.0, 401);
    assert_eq!(post(&d, "/rotate/NOPE", Some(TOKEN)).await.0, 404);
    let (status, body) = post(&d, "/rotate/MONITORED", Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"none\""),
        "{body}"
    );
    assert_eq!(d.get("/rotate/RANDOM").await.0, 405);

    // random, addressed by its Secrets Manager name (slash percent-encoded).
    let (old_vid, _) = value(&client, "app/random", "AWSCURRENT").await;
    let (status, body) = post(&d, "/rotate/app%2Frandom", Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["rotation_id"].as_str().unwrap().to_string();
    let r = wait_state(&d, &id, &["done"], Duration::from_secs(20)).await;
    let (vid, v) = assert_sane(&client, "app/random").await;
    assert_eq!(vid, format!("keywarden-{id}"));
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&v)
        .unwrap();
    assert_eq!(raw.len(), 48);
    assert!(stages(&client, "app/random").await[&old_vid].contains(&"AWSPREVIOUS".to_string()));
    assert_eq!(version_count(&client, "app/random").await, 2);
    let steps: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["accepted", "create", "set", "test", "finish", "finalize"]
    );

    // dual-key: {"current": new, "previous": old} during grace, {"current": new} after.
    let id = rotate(&d, "JWT").await;
    let r = wait_state(&d, &id, &["grace"], Duration::from_secs(20)).await;
    assert!(r["detail"]["finalize_after"].as_i64().unwrap() > now());
    let (_, v) = assert_sane(&client, "app/jwt").await;
    let j = json_of(&v);
    assert_eq!(j["previous"], "jwt-key-0");
    assert_eq!(j["kid"], "k");
    let new_key = j["current"].as_str().unwrap().to_string();
    assert_eq!(new_key.len(), 44);
    // One rotation per secret at a time: a second request during grace is refused.
    let (status, body) = post(&d, "/rotate/JWT", Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["rotation_id"], id.as_str());
    let secrets = get_json(&d, "/secrets").await;
    let jwt = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "JWT")
        .unwrap()
        .clone();
    assert_eq!(jwt["rotation"]["state"], "grace", "{jwt:#}");
    wait_state(&d, &id, &["done"], Duration::from_secs(20)).await;
    let (vid, v) = assert_sane(&client, "app/jwt").await;
    assert_eq!(vid, format!("keywarden-{id}-final"));
    let j = json_of(&v);
    assert_eq!(j["current"], new_key.as_str());
    assert!(j.get("previous").is_none(), "{j}");
    assert_eq!(version_count(&client, "app/jwt").await, 3);

    // primary-secondary: finish hooks before finalize, which leaves {"primary": new}.
    let id = rotate(&d, "APIKEY").await;
    wait_state(&d, &id, &["done"], Duration::from_secs(20)).await;
    let (_, v) = assert_sane(&client, "app/apikey").await;
    let j = json_of(&v);
    assert!(j["primary"].as_str().unwrap().len() >= 40);
    assert!(j.get("secondary").is_none());
    let (_, prev) = value(&client, "app/apikey", "AWSPREVIOUS").await;
    assert_eq!(json_of(&prev)["secondary"], "plain-old-encryption-key");
    let order = std::fs::read_to_string(dir.path().join("order")).unwrap();
    assert_eq!(order, "finish\nfinalize\n");

    let s = d.scrape().await;
    for secret in ["RANDOM", "JWT", "APIKEY"] {
        let labels = [
            ("secret", secret),
            ("trigger", "manual"),
            ("result", "success"),
        ];
        assert_eq!(
            s.get("keywarden_rotations_total", &labels),
            Some(1.0),
            "{secret}"
        );
        assert_eq!(
            s.get("keywarden_rotation_in_progress", &[("secret", secret)]),
            Some(0.0)
        );
    }
    assert_eq!(
        s.get(
            "keywarden_rotation_duration_seconds_count",
            &[("trigger", "manual")]
        ),
        Some(3.0)
    );
    assert!(
        s.get(
            "keywarden_aws_requests_total",
            &[("operation", "PutSecretValue"), ("outcome", "ok")]
        )
        .unwrap()
            >= 5.0
    );
    crate::support::promtool_check_metrics(&s.text);
}

/// Every version id of a secret, labelled or not.
async fn version_ids(client: &sm::Client, id: &str) -> Vec<String> {
    client
        .list_secret_version_ids()
        .secret_id(id)
        .include_deprecated(true)
        .send()
        .await
        .unwrap()
        .versions()
        .iter()
        .filter_map(|v| v.version_id().map(str::to_string))
        .collect()
}

/// Asserts that every version a rotation had written before a crash still holds the same value
/// after the resumed rotation ended: a resume never writes a token's version again (on AWS a
/// different value under the same token is refused; the launcher does the same).
async fn assert_tokens_unchanged(
    client: &sm::Client,
    id: &str,
    rid: &str,
    before: &BTreeMap<String, String>,
    what: &str,
) {
    let after = token_values(client, id, rid).await;
    for (token, old) in before {
        let new = after.get(token);
        assert!(
            new == Some(old),
            "{what}: the value of version {token} changed across the restart (present after: {})",
            new.is_some()
        );
    }
}

/// The journal step and state a crash at `point` leaves: `<step>:done` is hit after the step
/// was journaled as completed (so the journal names the next step), any other point inside
/// the step it names (`accepted` inside create, which the request journals first).
fn journaled_at(point: &str) -> (&'static str, &'static str) {
    match point {
        "accepted" | "create:put" => ("create", "running"),
        "create:done" => ("set", "running"),
        "set:done" => ("test", "running"),
        "test:done" | "finish:moved" | "finish:unpended" => ("finish", "running"),
        "finish:done" | "finalize:put" | "finalize:moved" => ("finalize", "grace"),
        "finalize:done" => ("done", "done"),
        other => panic!("unknown failpoint {other}: add it to journaled_at"),
    }
}

/// One crash case: a secret and the failpoint that kills the daemon in its rotation.
async fn crash_once(
    moto: &Moto,
    client: &sm::Client,
    config: &str,
    secret: &str,
    id: &str,
    point: &str,
    max_new_versions: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_FAILPOINT", point)];
    let d = Daemon::start_in_env(dir, port, config, &env).await;
    let before = version_count(client, id).await;
    // The answer may never come (the "accepted" point aborts before it): the journal decides.
    let url = d.url(&format!("/rotate/{secret}"));
    let answer = keywarden::cli::remote::call("POST", &url, Some(TOKEN)).await;
    if let Ok((status, body)) = &answer {
        assert_eq!(*status, 202, "{point}: {body}");
    }
    let dir = d.wait_exit(Duration::from_secs(20));
    let log = std::fs::read_to_string(dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {point} reached")),
        "{point} not reached:\n{log}"
    );
    // What the dead daemon left: the journal (read-only) and the versions it wrote.
    let rows: Vec<_> = crate::support::journal_rows(dir.path())
        .into_iter()
        .filter(|r| r.secret == secret)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "{secret} {point}: one journaled rotation: {rows:?}"
    );
    let (want_step, want_state) = journaled_at(point);
    assert_eq!(
        (rows[0].step.as_str(), rows[0].state.as_str()),
        (want_step, want_state),
        "{secret}: the journal after a crash at {point}"
    );
    let written = token_values(client, id, &rows[0].id).await;
    let d = Daemon::start_in_env(dir, port, config, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let list = rotations_of(&d, secret).await;
    assert_eq!(
        list.len(),
        1,
        "{point}: exactly the accepted rotation: {list:?}"
    );
    let rid = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(rid, rows[0].id, "{point}: the journaled rotation resumed");
    let known = version_ids(client, id).await;
    let r = wait_state(&d, &rid, &["done"], Duration::from_secs(30)).await;
    let prev = r["detail"]["previous_version_id"]
        .as_str()
        .unwrap_or_default();
    assert!(
        known.iter().any(|v| v == prev) && !prev.starts_with(&format!("keywarden-{rid}")),
        "{point}: the journal knows the previous version: {r:#}"
    );
    let (vid, _) = assert_sane(client, id).await;
    assert!(
        vid.starts_with(&format!("keywarden-{rid}")),
        "{point}: {vid}"
    );
    assert_tokens_unchanged(client, id, &rid, &written, &format!("{secret} {point}")).await;
    let after = version_count(client, id).await;
    assert!(
        after - before <= max_new_versions && after > before,
        "{point}: {before} -> {after} versions"
    );
    let _ = moto;
}

#[tokio::test]
async fn crash_at_every_step_boundary_resumes_without_a_second_version() {
    crash_at_every_step_boundary(Backend::Sqlite).await;
}

#[tokio::test]
async fn crash_at_every_step_boundary_resumes_without_a_second_version_on_dynamodb() {
    crash_at_every_step_boundary(Backend::Dynamo).await;
}

async fn crash_at_every_step_boundary(backend: Backend) {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let points = keywarden::rotation::failpoint::POINTS;
    let mut secrets = String::new();
    for (i, _) in points.iter().enumerate() {
        create(&client, &format!("crash/dual-{i}"), r#"{"current":"k0"}"#).await;
        create(&client, &format!("crash/random-{i}"), "r0").await;
        create(&client, &format!("crash/prim-{i}"), "p0-plain-key").await;
        secrets.push_str(&format!(
            "[[secret]]\nname = \"DUAL{i}\"\nid = \"crash/dual-{i}\"\nrotation = {{ strategy = \"dual-key\", grace = \"0s\" }}\n\
             hooks = [{{ on = \"finish\", command = [\"true\"] }}]\n\n\
             [[secret]]\nname = \"RANDOM{i}\"\nid = \"crash/random-{i}\"\nrotation = {{ strategy = \"random\" }}\n\n\
             [[secret]]\nname = \"PRIM{i}\"\nid = \"crash/prim-{i}\"\nrotation = {{ strategy = \"primary-secondary\", grace = \"0s\" }}\n\n"
        ));
    }
    let config = base_config_on(&moto, &secrets, backend);
    for (i, point) in points.iter().enumerate() {
        // dual-key writes the new value and, at finalize, the value without the old key.
        crash_once(
            &moto,
            &client,
            &config,
            &format!("DUAL{i}"),
            &format!("crash/dual-{i}"),
            point,
            2,
        )
        .await;
        let (_, v) = value(&client, &format!("crash/dual-{i}"), "AWSCURRENT").await;
        let j = json_of(&v);
        assert!(
            j["current"].as_str().unwrap().len() > 10 && j.get("previous").is_none(),
            "{point}"
        );
        // primary-secondary writes {"primary": new, "secondary": old}, then {"primary": new}.
        crash_once(
            &moto,
            &client,
            &config,
            &format!("PRIM{i}"),
            &format!("crash/prim-{i}"),
            point,
            2,
        )
        .await;
        let (_, v) = value(&client, &format!("crash/prim-{i}"), "AWSCURRENT").await;
        let j = json_of(&v);
        assert!(
            j["primary"].as_str().unwrap().len() > 10 && j.get("secondary").is_none(),
            "{point}"
        );
        // random writes exactly one version; its finalize writes nothing.
        if !point.starts_with("finalize:put") && !point.starts_with("finalize:moved") {
            crash_once(
                &moto,
                &client,
                &config,
                &format!("RANDOM{i}"),
                &format!("crash/random-{i}"),
                point,
                1,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn kill9_at_random_moments_never_loses_or_doubles_a_rotation() {
    kill9_at_random_moments(Backend::Sqlite).await;
}

#[tokio::test]
async fn kill9_at_random_moments_never_loses_or_doubles_a_rotation_on_dynamodb() {
    kill9_at_random_moments(Backend::Dynamo).await;
}

async fn kill9_at_random_moments(backend: Backend) {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/k9", "v0").await;
    create(&client, "app/k9dual", r#"{"current":"k0"}"#).await;
    let config = base_config_on(
        &moto,
        "[[secret]]\nname = \"K9\"\nid = \"app/k9\"\nrotation = { strategy = \"random\" }\n\n\
         [[secret]]\nname = \"K9DUAL\"\nid = \"app/k9dual\"\nrotation = { strategy = \"dual-key\", grace = \"0s\" }\n",
        backend,
    );
    let mut d = start(&config).await;
    let port = d.port();
    // A small deterministic generator: the delays spread over the rotation's ~100 ms.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ (now() as u64);
    let mut mid_rotation = Vec::new();
    let mut killed_at = Vec::new();
    for round in 0..6 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 150);
        let (secret, id, per_rotation) = if round % 2 == 0 {
            ("K9", "app/k9", 1)
        } else {
            ("K9DUAL", "app/k9dual", 2)
        };
        let before = version_count(&client, id).await;
        let rid = rotate(&d, secret).await;
        tokio::time::sleep(delay).await;
        let dir = d.kill9();
        // Where the kill landed, as the restarted daemon will find it.
        let row = crate::support::journal_rows(dir.path())
            .into_iter()
            .find(|r| r.id == rid)
            .unwrap_or_else(|| panic!("round {round}: rotation {rid} is not in the journal"));
        if row.state == "running" || row.state == "grace" {
            mid_rotation.push((round, delay, row.step.clone()));
        }
        killed_at.push((round, delay, row.step.clone(), row.state.clone()));
        let written = token_values(&client, id, &rid).await;
        d = Daemon::start_in_env(dir, port, &config, &[("KW_TEST_TOKEN", TOKEN)]).await;
        wait_state(&d, &rid, &["done"], Duration::from_secs(30)).await;
        assert_tokens_unchanged(&client, id, &rid, &written, &format!("round {round}")).await;
        let (vid, _) = assert_sane(&client, id).await;
        assert!(
            vid.starts_with(&format!("keywarden-{rid}")),
            "round {round}: {vid}"
        );
        let after = version_count(&client, id).await;
        assert!(
            after > before && after - before <= per_rotation,
            "round {round} after {delay:?}: {before} -> {after}"
        );
    }
    assert_eq!(rotations_of(&d, "K9").await.len(), 3);
    // A kill before acceptance or after the end proves nothing: at least one round must have
    // killed a rotation that was journaled and not finished.
    eprintln!("kill -9 landed at (round, delay, step, state): {killed_at:?}");
    assert!(
        !mid_rotation.is_empty(),
        "no round killed a rotation mid-way: {killed_at:?}"
    );
}

#[tokio::test]
async fn failed_steps_retry_then_stop_visibly_and_hooks_are_timed_out() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/flaky", "flaky-0").await;
    create(&client, "app/broken", "broken-value-that-stays").await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().display().to_string();
    // FLAKY's test hook fails twice, then passes. BROKEN's hangs and is killed after 1 s each
    // time; it leaves its pid so the test can check it died.
    let secrets = format!(
        "[[secret]]\nname = \"FLAKY\"\nid = \"app/flaky\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [{{ on = \"test\", command = [\"sh\", \"-c\", \"echo x >> {p}/flaky; test $(wc -l < {p}/flaky) -ge 3\"] }}]\n\n\
         [[secret]]\nname = \"BROKEN\"\nid = \"app/broken\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [{{ on = \"test\", command = [\"sh\", \"-c\", \"echo $$ >> {p}/pids; sleep 60\"], timeout = \"1s\" }}]\n"
    );
    let d = start(&base_config(&moto, &secrets)).await;
    let (old_vid, _) = value(&client, "app/broken", "AWSCURRENT").await;
    let flaky = rotate(&d, "FLAKY").await;
    let broken = rotate(&d, "BROKEN").await;
    d.wait_for("BROKEN in progress", Duration::from_secs(10), |s| {
        s.get("keywarden_rotation_in_progress", &[("secret", "BROKEN")]) == Some(1.0)
    })
    .await;
    let r = wait_state(&d, &flaky, &["done"], Duration::from_secs(30)).await;
    let errors = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "error")
        .count();
    assert_eq!(errors, 2, "{r:#}");

    let r = wait_state(&d, &broken, &["failed"], Duration::from_secs(60)).await;
    assert_eq!(r["step"], "test");
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r:#}");
    // AWSCURRENT untouched, and the failed version no longer pending.
    let (vid, v) = assert_sane(&client, "app/broken").await;
    assert_eq!(
        (vid.as_str(), v.as_str()),
        (old_vid.as_str(), "broken-value-that-stays")
    );
    let pids = std::fs::read_to_string(dir.path().join("pids")).unwrap();
    assert_eq!(
        pids.lines().count(),
        keywarden::rotation::MAX_ATTEMPTS as usize
    );
    for pid in pids.lines() {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "hook {pid} still alive"
        );
    }
    let s = d.scrape().await;
    let failure = [
        ("secret", "BROKEN"),
        ("trigger", "manual"),
        ("result", "failure"),
    ];
    assert_eq!(s.get("keywarden_rotations_total", &failure), Some(1.0));
    assert_eq!(
        s.get("keywarden_rotation_in_progress", &[("secret", "BROKEN")]),
        Some(0.0)
    );
    let secrets = get_json(&d, "/secrets").await;
    let b = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "BROKEN")
        .unwrap()
        .clone();
    assert_eq!(b["rotation"]["state"], "failed", "{b:#}");
    assert!(
        b["rotation"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    // A failed rotation does not block the next one.
    let again = rotate(&d, "FLAKY").await;
    wait_state(&d, &again, &["done"], Duration::from_secs(30)).await;
}

#[tokio::test]
async fn hooks_get_names_and_version_never_values_or_the_admin_token() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/hooked", "CANARY-old-hooked-value-5f1e").await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().display().to_string();
    let secrets = format!(
        "[[secret]]\nname = \"HOOKED\"\nid = \"app/hooked\"\nrotation = {{ strategy = \"dual-key\", grace = \"0s\" }}\n\
         hooks = [{{ on = \"test\", command = [\"sh\", \"-c\", \"env > {p}/env-test\"] }}, \
                  {{ on = \"finish\", command = [\"sh\", \"-c\", \"env > {p}/env-finish; echo hook-says-hello\"] }}, \
                  {{ on = \"finalize\", command = [\"sh\", \"-c\", \"env > {p}/env-finalize\"] }}]\n"
    );
    let d = start(&base_config(&moto, &secrets)).await;
    let id = rotate(&d, "HOOKED").await;
    wait_state(&d, &id, &["done"], Duration::from_secs(20)).await;
    let (_, prev) = value(&client, "app/hooked", "AWSPREVIOUS").await;
    let new_key = json_of(&prev)["current"].as_str().unwrap().to_string();
    for step in ["test", "finish", "finalize"] {
        let env = std::fs::read_to_string(dir.path().join(format!("env-{step}"))).unwrap();
        assert!(env.contains("KEYWARDEN_SECRET=HOOKED\n"), "{env}");
        assert!(env.contains("KEYWARDEN_SECRET_ID=app/hooked\n"), "{env}");
        assert!(env.contains(&format!("KEYWARDEN_STEP={step}\n")), "{env}");
        assert!(
            env.contains(&format!("KEYWARDEN_ROTATION_ID={id}\n")),
            "{env}"
        );
        assert!(env.contains("KEYWARDEN_VERSION_ID=keywarden-"), "{env}");
        assert!(
            !env.contains("CANARY-old-hooked"),
            "old value in the {step} hook env"
        );
        assert!(!env.contains(&new_key), "new value in the {step} hook env");
        assert!(
            !env.contains(TOKEN) && !env.contains("KW_TEST_TOKEN"),
            "admin token in the hook env"
        );
    }
    let log = d.log();
    assert!(log.contains("hook-says-hello"), "hook output is logged");
}

#[tokio::test]
async fn no_value_reaches_the_trace_log_metrics_or_api() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let canary_random = "CANARY-random-3b9c0d7e6a55";
    let canary_key = "CANARY-dualkey-77aa01f2c3";
    create(&client, "app/canary-random", canary_random).await;
    create(
        &client,
        "app/canary-dual",
        &format!(r#"{{"current":"{canary_key}"}}"#),
    )
    .await;
    let config = base_config(
        &moto,
        // The finish hook prints the old value (it knows it here only because the test wrote it
        // into its argv): the log must show it redacted.
        "[[secret]]\nname = \"CR\"\nid = \"app/canary-random\"\nrotation = { strategy = \"random\" }\n\
         hooks = [{ on = \"finish\", command = [\"echo\", \"old=CANARY-random-3b9c0d7e6a55\"] }]\n\n\
         [[secret]]\nname = \"CD\"\nid = \"app/canary-dual\"\nrotation = { strategy = \"dual-key\", grace = \"0s\" }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let env = [("KW_TEST_TOKEN", TOKEN), ("KEYWARDEN_LOG", "trace")];
    let d = Daemon::start_in_env(dir, port, &config, &env).await;
    let a = rotate(&d, "CR").await;
    let b = rotate(&d, "CD").await;
    wait_state(&d, &a, &["done"], Duration::from_secs(20)).await;
    wait_state(&d, &b, &["done"], Duration::from_secs(20)).await;
    let (_, new_random) = value(&client, "app/canary-random", "AWSCURRENT").await;
    let (_, new_dual) = value(&client, "app/canary-dual", "AWSCURRENT").await;
    let new_key = json_of(&new_dual)["current"].as_str().unwrap().to_string();
    let outputs = vec![
        ("log", d.log()),
        ("metrics", d.scrape().await.text),
        ("secrets", d.get("/secrets").await.1),
        ("rotations", d.get("/rotations").await.1),
        ("rotation a", d.get(&format!("/rotations/{a}")).await.1),
        ("rotation b", d.get(&format!("/rotations/{b}")).await.1),
    ];
    assert!(outputs[0].1.contains("TRACE"), "the log is at trace level");
    assert!(
        outputs[0].1.contains("old=[redacted]"),
        "hook output is redacted"
    );
    // Every state.db* file, the WAL included: recent rows live in state.db-wal.
    for secret in [
        canary_random,
        canary_key,
        new_random.as_str(),
        new_key.as_str(),
    ] {
        let hits = store_files_contain(d.dir.path(), secret);
        assert!(
            hits.is_empty(),
            "a secret value reached the store: {hits:?}"
        );
    }
    for (what, text) in &outputs {
        for secret in [
            canary_random,
            canary_key,
            new_random.as_str(),
            new_key.as_str(),
        ] {
            assert!(!text.contains(secret), "a secret value reached the {what}");
        }
    }
}

#[tokio::test]
async fn rollback_refuses_during_an_open_incident_unless_forced_and_cli_follows() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/rb", "rollback-old-value").await;
    create(&client, "app/cli", "cli-old-value").await;
    let config = base_config(
        &moto,
        "[[secret]]\nname = \"RB\"\nid = \"app/rb\"\nrotation = { strategy = \"dual-key\", grace = \"1h\" }\n\n\
         [[secret]]\nname = \"CLI\"\nid = \"app/cli\"\nrotation = { strategy = \"random\" }\n",
    );
    let d = start(&config).await;
    let (old_vid, _) = value(&client, "app/rb", "AWSCURRENT").await;
    let id = rotate(&d, "RB").await;
    wait_state(&d, &id, &["grace"], Duration::from_secs(20)).await;

    // An open compromise incident blocks rollback unless forced.
    let store = keywarden::store::Store::open(&d.dir.path().join("state.db")).unwrap();
    store
        .with(
            |c| c.execute("INSERT INTO incidents (id, secret, status, opened_at, doc) VALUES ('inc-1', 'RB', 'open', 1, '{}')", []),
            "test incident",
        )
        .unwrap();
    let (status, body) = post(&d, "/rollback/RB", Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("inc-1"), "{body}");
    let (status, body) = post(&d, "/rollback/RB?force=true", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["to_version"], old_vid.as_str());
    assert_eq!(body["rotation_id"], id.as_str());
    let (vid, v) = assert_sane(&client, "app/rb").await;
    assert_eq!(
        (vid.as_str(), v.as_str()),
        (old_vid.as_str(), "rollback-old-value")
    );
    let r = wait_state(&d, &id, &["rolled_back"], Duration::from_secs(5)).await;
    assert_eq!(
        r["events"].as_array().unwrap().last().unwrap()["step"],
        "rollback"
    );
    let s = d.scrape().await;
    let labels = [
        ("secret", "RB"),
        ("trigger", "manual"),
        ("result", "rolled_back"),
    ];
    assert_eq!(s.get("keywarden_rotations_total", &labels), Some(1.0));

    // The CLI: rotate follows to the end and prints every step; rollback undoes it.
    let out = keywarden_command()
        .args(["rotate", "CLI", "--server", &d.url("")])
        .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in ["accepted", "create", "set", "test", "finish", "finalize"] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}");
    }
    let out = keywarden_command()
        .args(["rollback", "CLI", "--server", &d.url("")])
        .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        value(&client, "app/cli", "AWSCURRENT").await.1,
        "cli-old-value"
    );
    // Refusals exit 1; a missing token is a usage error.
    let out = keywarden_command()
        .args(["rotate", "NOPE", "--server", &d.url("")])
        .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = keywarden_command()
        .args(["rotate", "CLI", "--server", &d.url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn actions_are_off_without_a_token() {
    let moto = Moto::start();
    let config = base_config(&moto, "").replace("admin_token_env = \"KW_TEST_TOKEN\"\n", "");
    let d = Daemon::start(&config).await;
    assert_eq!(post(&d, "/rotate/X", Some(TOKEN)).await.0, 403);
    assert_eq!(post(&d, "/rollback/X", Some(TOKEN)).await.0, 403);
}

#[tokio::test]
async fn scheduled_rotations_start_in_their_window_and_say_why_they_wait() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    for id in [
        "sched/open",
        "sched/closed",
        "sched/pending",
        "sched/nowindow",
    ] {
        crate::support::create_aged_secret(&moto, &client, id, 100).await;
    }
    // Due in 10 days: inside the 14-day reminder lead, but its window (every minute) opens
    // again right before its due date, so it is planned then and does not rotate now.
    let lead_created = crate::support::create_aged_secret(&moto, &client, "sched/lead", 80).await;
    // Due in 30 days: not yet.
    crate::support::create_aged_secret(&moto, &client, "sched/later", 60).await;
    // A version other than AWSCURRENT carries AWSPENDING: an unfinished outside rotation.
    client
        .put_secret_value()
        .secret_id("sched/pending")
        .secret_string("half-done")
        .version_stages("AWSPENDING")
        .client_request_token("outside-rotation-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    // A window that is always open (every minute, open an hour) and one opening in 3 hours.
    let hour = (chrono::Utc::now().timestamp() / 3600 + 3) % 24;
    let secrets = format!(
        "[[secret]]\nname = \"OPEN\"\nid = \"sched/open\"\nrotate_every = \"90d\"\nwindow = \"cron(* * * * ? *)\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"CLOSED\"\nid = \"sched/closed\"\nrotate_every = \"90d\"\nwindow = \"cron(0 {hour} * * ? *)\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"PENDING\"\nid = \"sched/pending\"\nrotate_every = \"90d\"\nwindow = \"cron(* * * * ? *)\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"NOWINDOW\"\nid = \"sched/nowindow\"\nrotate_every = \"90d\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"LEAD\"\nid = \"sched/lead\"\nrotate_every = \"90d\"\nwindow = \"cron(* * * * ? *)\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"LATER\"\nid = \"sched/later\"\nrotate_every = \"90d\"\nwindow = \"cron(* * * * ? *)\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [reminders]\nlead = [\"14d\"]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:reminders\"\n"
    );
    let d = start(&base_config(&moto, &secrets)).await;
    d.wait_for("scheduled rotations", Duration::from_secs(30), |s| {
        s.get(
            "keywarden_rotations_total",
            &[
                ("secret", "OPEN"),
                ("trigger", "scheduled"),
                ("result", "success"),
            ],
        ) == Some(1.0)
    })
    .await;
    assert!(rotations_of(&d, "LATER").await.is_empty());
    let list = rotations_of(&d, "OPEN").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["trigger"], "scheduled");
    // After the poller sees the new version, the secret is no longer due: no second rotation.
    // Eleven more 1 s metadata cycles span at least 10 s, two passes of the 5 s scheduler over
    // a view that shows the new version.
    d.let_polls_pass(11.0).await;
    assert_eq!(rotations_of(&d, "OPEN").await.len(), 1);
    let secrets = get_json(&d, "/secrets").await;
    let find = |n: &str| {
        secrets["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    let closed = find("CLOSED");
    assert!(
        closed["rotation"]["waiting"]
            .as_str()
            .unwrap()
            .contains("window"),
        "{closed:#}"
    );
    assert!(closed["rotation"]["next_window"].as_i64().unwrap() > now());
    let pending = find("PENDING");
    assert!(
        pending["rotation"]["waiting"]
            .as_str()
            .unwrap()
            .contains("AWSPENDING"),
        "{pending:#}"
    );
    assert!(rotations_of(&d, "CLOSED").await.is_empty());
    assert!(rotations_of(&d, "PENDING").await.is_empty());
    let nowindow = find("NOWINDOW");
    assert!(
        nowindow["rotation"]["waiting"]
            .as_str()
            .unwrap()
            .contains("no window"),
        "{nowindow:#}"
    );
    assert!(rotations_of(&d, "NOWINDOW").await.is_empty());
    // Planned timing (issue #13 point 5): LEAD rotates at the last opening of its window before
    // its due date (the whole minute of it), not at the first opening inside its reminder lead.
    assert!(
        rotations_of(&d, "LEAD").await.is_empty(),
        "LEAD rotated early"
    );
    let lead_due = lead_created + 90 * 86_400;
    let lead_planned = lead_due - lead_due.rem_euclid(60);
    let lead = find("LEAD");
    assert_eq!(lead["planned"].as_i64(), Some(lead_planned), "{lead:#}");
    assert!(lead["rotation"]["waiting"].is_null(), "{lead:#}");
    // CLOSED is overdue: planned at the next opening of its window, and it says so.
    assert_eq!(
        closed["planned"].as_i64(),
        closed["rotation"]["next_window"].as_i64(),
        "{closed:#}"
    );
    assert!(
        closed["rotation"]["waiting"]
            .as_str()
            .unwrap()
            .contains("planned for"),
        "{closed:#}"
    );
    // No window: no planned time.
    assert!(nowindow["planned"].is_null(), "{nowindow:#}");
    let s = d.scrape().await;
    let planned = |secret: &str| {
        s.get(
            "keywarden_secret_rotation_planned_timestamp_seconds",
            &[("secret", secret)],
        )
    };
    assert_eq!(planned("LEAD"), Some(lead_planned as f64), "{}", s.text);
    assert_eq!(
        planned("CLOSED"),
        closed["planned"].as_i64().map(|p| p as f64)
    );
    assert_eq!(planned("NOWINDOW"), None, "{}", s.text);
    crate::support::promtool_check_metrics(&s.text);
    // `keywarden status` lists the planned rotations under its table.
    let out = keywarden_command()
        .args(["status", "--config"])
        .arg(d.dir.path().join("keywarden.toml"))
        .env("KW_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let lead_text = chrono::DateTime::from_timestamp(lead_planned, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string();
    assert!(
        table.lines().any(|l| l.starts_with("LEAD ")
            && l.contains(&lead_text)
            && l.contains("cron(* * * * ? *)")),
        "{table}"
    );
    assert!(
        !table
            .lines()
            .any(|l| l.starts_with("NOWINDOW ") && l.contains("cron(")),
        "{table}"
    );
    let log = d.log();
    assert!(
        log.contains("Scheduled rotation is due but waits"),
        "the log says why"
    );
}

#[tokio::test]
async fn time_from_post_rotate_to_new_awscurrent() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "perf/random", "p0").await;
    let d = start(&base_config(
        &moto,
        "[[secret]]\nname = \"PERF\"\nid = \"perf/random\"\nrotation = { strategy = \"random\" }\n",
    ))
    .await;
    let mut samples = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let id = rotate(&d, "PERF").await;
        let token = format!("keywarden-{id}");
        loop {
            let st = stages(&client, "perf/random").await;
            if st
                .get(&token)
                .is_some_and(|s| s.iter().any(|x| x == "AWSCURRENT"))
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "rotation too slow"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(started.elapsed());
        wait_state(&d, &id, &["done"], Duration::from_secs(10)).await;
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    eprintln!(
        "rotation latency POST /rotate -> new AWSCURRENT (random, moto): median {:?}, p90 {:?}, max {:?}",
        median,
        p90,
        samples.last().unwrap()
    );
    assert!(median < Duration::from_millis(1000), "median {median:?}");
}

/// The core in-process on moto, as issue #6 will drive it: a compromise rotation has no grace
/// (finalize follows finish at once), and `finalize_now` ends a grace early.
#[tokio::test]
async fn compromise_rotations_finalize_at_once_and_grace_can_end_early() {
    use keywarden::rotation::journal::{State, Trigger};
    use keywarden::rotation::{RequestOptions, RotationCore};
    use std::sync::Arc;

    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/comp", r#"{"current":"k0"}"#).await;
    create(&client, "app/grace", r#"{"current":"g0"}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\npath = \"{}\"\n\
             [[secret]]\nname = \"COMP\"\nid = \"app/comp\"\nrotation = {{ strategy = \"dual-key\", grace = \"48h\" }}\n\
             [[secret]]\nname = \"GRACE\"\nid = \"app/grace\"\nrotation = {{ strategy = \"dual-key\", grace = \"48h\" }}\n",
            dir.path().join("s.db").display()
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
    let core = RotationCore::new(api, store, config, Default::default(), metrics.clone(), rx);
    tokio::spawn(core.clone().run_finalizer());
    let wait = |id: String, want: State| {
        let core = core.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (r, events) = core.status(&id).unwrap().unwrap();
                if r.state == want {
                    return r;
                }
                assert!(
                    Instant::now() < deadline,
                    "{id} never {want:?}: {r:?} {events:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let grace = Some(Duration::ZERO);
    let r = core
        .request("COMP", Trigger::Compromise, RequestOptions { grace })
        .unwrap();
    wait(r.id.clone(), State::Done).await;
    let (vid, v) = assert_sane(&client, "app/comp").await;
    assert_eq!(vid, format!("keywarden-{}-final", r.id));
    assert!(
        json_of(&v).get("previous").is_none(),
        "the old key is gone at once"
    );

    let g = core
        .request("GRACE", Trigger::Manual, RequestOptions::default())
        .unwrap();
    let in_grace = wait(g.id.clone(), State::Grace).await;
    assert!(in_grace.detail.finalize_after.unwrap() > now() + 86_400);
    assert_eq!(
        json_of(&value(&client, "app/grace", "AWSCURRENT").await.1)["previous"],
        "g0"
    );
    assert!(core.finalize_now(&g.id).unwrap());
    wait(g.id.clone(), State::Done).await;
    assert!(
        json_of(&value(&client, "app/grace", "AWSCURRENT").await.1)
            .get("previous")
            .is_none()
    );

    let text = metrics.render();
    assert!(
        text.contains(
            r#"keywarden_rotations_total{secret="COMP",account="",region="",trigger="compromise",result="success"} 1"#
        ),
        "{text}"
    );
    stop.cancel();
}

/// Issue #15 point 6: a rollback and a running step are serialized. A rollback that arrives
/// while finalize runs (held in its finalize hook) waits for it, and then sees the rotation as
/// finalize left it; it never reports a finalize as cancelled while that finalize goes on.
#[tokio::test]
async fn a_rollback_waits_for_a_running_finalize() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/serial", r#"{"current":"s0"}"#).await;
    let hooks = tempfile::tempdir().unwrap();
    let gate = Gate::new(hooks.path(), "finalize");
    let started = hooks.path().join("started");
    let secrets = format!(
        "[[secret]]\nname = \"SERIAL\"\nid = \"app/serial\"\nrotation = {{ strategy = \"dual-key\", grace = \"1s\" }}\n\
         hooks = [{{ on = \"finalize\", command = [\"sh\", \"-c\", \"touch {}; {}\"] }}]\n",
        started.display(),
        gate.wait_command()
    );
    let d = start(&base_config(&moto, &secrets)).await;
    let id = rotate(&d, "SERIAL").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "finalize hook never ran\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = d.url("/rollback/SERIAL");
    let rollback = tokio::spawn(async move {
        let auth = format!("Bearer {TOKEN}");
        http("POST", &url, &[("authorization", auth.as_str())], None).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !rollback.is_finished(),
        "the rollback answered while finalize was still running: {:?}",
        rollback.await
    );
    gate.release(Duration::from_secs(10)).await;
    let (status, _, body) = rollback.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["rotation_id"].is_null(), "{answer:#}");
    let r = wait_state(&d, &id, &["done"], Duration::from_secs(10)).await;
    assert_eq!(
        r["events"].as_array().unwrap().last().unwrap()["step"],
        "rollback",
        "{r:#}"
    );
}

/// Issue #15 (low): a secret kept as SecretBinary stays binary: the new version is written as
/// SecretBinary (not as the base64 text of it), and its bytes are new.
#[tokio::test]
async fn a_secret_binary_value_stays_binary() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let old: Vec<u8> = (0u8..48).map(|b| b.wrapping_mul(37) ^ 0xa5).collect();
    client
        .create_secret()
        .name("app/bin")
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(old.clone()))
        .send()
        .await
        .unwrap();
    let d = start(&base_config(
        &moto,
        "[[secret]]\nname = \"BIN\"\nid = \"app/bin\"\nrotation = { strategy = \"random\" }\n",
    ))
    .await;
    let id = rotate(&d, "BIN").await;
    wait_state(&d, &id, &["done"], Duration::from_secs(30)).await;
    let cur = client
        .get_secret_value()
        .secret_id("app/bin")
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    assert_eq!(cur.version_id(), Some(format!("keywarden-{id}").as_str()));
    assert!(cur.secret_string().is_none(), "written as SecretString");
    let new = cur.secret_binary().expect("SecretBinary").as_ref().to_vec();
    assert!(!new.is_empty());
    assert_ne!(new, old);
}

/// Issue #13 point 3: `on = "rollback"` hooks run after a rollback moved AWSCURRENT. Each one's
/// result is in the answer, the journal, the metrics and the CLI; a failing one leaves
/// AWSCURRENT where the rollback put it.
#[tokio::test]
async fn rollback_hooks_run_after_the_rollback_and_report_each_result() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create(&client, "app/rbh", "rbh-old-value").await;
    let hooks = tempfile::tempdir().unwrap();
    let out = hooks.path().join("env");
    let secrets = format!(
        "[[secret]]\nname = \"RBH\"\nid = \"app/rbh\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [\n\
           {{ on = \"rollback\", command = [\"sh\", \"-c\", \"echo $KEYWARDEN_STEP $KEYWARDEN_VERSION_ID $KEYWARDEN_PREVIOUS_VERSION_ID >> {}\"] }},\n\
           {{ on = \"rollback\", command = [\"sh\", \"-c\", \"echo restart failed >&2; exit 3\"] }},\n\
         ]\n",
        out.display()
    );
    let d = start(&base_config(&moto, &secrets)).await;
    let (old_vid, _) = value(&client, "app/rbh", "AWSCURRENT").await;
    let id = rotate(&d, "RBH").await;
    wait_state(&d, &id, &["done"], Duration::from_secs(30)).await;
    let new_vid = format!("keywarden-{id}");

    let (status, body) = post(&d, "/rollback/RBH", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["to_version"], old_vid.as_str());
    let results = body["hooks"]
        .as_array()
        .expect("hook results in the answer");
    assert_eq!(results.len(), 2, "{body:#}");
    assert_eq!(results[0]["ok"], true, "{body:#}");
    assert_eq!(results[1]["ok"], false, "{body:#}");
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("3"),
        "{body:#}"
    );
    // The first hook saw the rollback: AWSCURRENT is the old version, the new one is previous.
    let env = std::fs::read_to_string(&out).unwrap();
    assert_eq!(env.trim(), format!("rollback {old_vid} {new_vid}"));
    // AWSCURRENT stays where the rollback put it.
    assert_eq!(value(&client, "app/rbh", "AWSCURRENT").await.0, old_vid);
    // The journal names each hook's result.
    let r = get_json(&d, &format!("/rotations/{id}")).await;
    let hook_events: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["step"] == "rollback_hook")
        .collect();
    assert_eq!(hook_events.len(), 2, "{r:#}");
    assert_eq!(hook_events[0]["outcome"], "ok");
    assert_eq!(hook_events[1]["outcome"], "failed");
    let s = d.scrape().await;
    assert_eq!(
        s.get(
            "keywarden_rollback_hook_failures_total",
            &[("secret", "RBH")]
        ),
        Some(1.0)
    );

    // The CLI prints each result and exits 1 when a hook failed (the rollback itself happened).
    let id2 = rotate(&d, "RBH").await;
    wait_state(&d, &id2, &["done"], Duration::from_secs(30)).await;
    let cli = keywarden_command()
        .args(["rollback", "RBH", "--server", &d.url("")])
        .env("KEYWARDEN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&cli.stdout).to_string();
    let stderr = String::from_utf8_lossy(&cli.stderr).to_string();
    assert_eq!(cli.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("rolled back RBH"), "{stdout}");
    assert!(stdout.contains("rollback hook 1/2 ok"), "{stdout}");
    assert!(stdout.contains("rollback hook 2/2 failed"), "{stdout}");
}
