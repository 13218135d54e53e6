//! `keywarden check-config`: the example passes, and every kind of bad input is reported with
//! file:line:column, the key and what was expected, with exit code 64.

use crate::support::{keywarden_command, root};

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = keywarden_command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts exit 64 and a message `bad.toml:LINE:COL: KEY: ...EXPECTED...`.
fn rejects(text: &str, line: usize, col: usize, key: &str, expected: &str) {
    let (code, _, stderr) = check(text);
    assert_eq!(code, 64, "exit code; stderr: {stderr}");
    let location = format!("bad.toml:{line}:{col}: {key}: ");
    assert!(stderr.contains(&location), "{location:?} not in {stderr:?}");
    assert!(stderr.contains(expected), "{expected:?} not in {stderr:?}");
}

const SECRET: &str = "[[secret]]\nname = \"JWT_SECRET\"\nid = \"svc/jwt\"\n";

#[test]
fn example_config_is_valid() {
    let out = keywarden_command()
        .args(["check-config", "--config"])
        .arg(root().join("config/keywarden.example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok (6 secrets"), "{stdout}");
}

#[test]
fn demo_config_is_valid() {
    let out = keywarden_command()
        .args(["check-config", "--config"])
        .arg(root().join("config/demo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_key() {
    rejects(
        "[poll]\nmetadata_every = \"60s\"\nmetadata_evry = \"30s\"\n",
        3,
        1,
        "poll.metadata_evry",
        "unknown field `metadata_evry`, expected",
    );
}

#[test]
fn bad_duration() {
    rejects(
        &format!("{SECRET}rotate_every = \"90 days\"\n"),
        4,
        16,
        "secret[0].rotate_every",
        "expected a duration such as \"90d\"",
    );
}

#[test]
fn bad_cron() {
    rejects(
        &format!("{SECRET}window = \"cron(0 3 * * TUE *)\"\n"),
        4,
        10,
        "secret[0].window",
        "expected an AWS schedule expression",
    );
}

#[test]
fn bad_rate() {
    rejects(
        &format!("{SECRET}window = \"rate(0 days)\"\n"),
        4,
        10,
        "secret[0].window",
        "expected an AWS schedule expression",
    );
}

#[test]
fn bad_cidr() {
    rejects(
        &format!("{SECRET}allowed_sources = [\"10.0.0.0/8\", \"10.1.2.3/40\"]\n"),
        4,
        34,
        "secret[0].allowed_sources[1]",
        "expected a CIDR block",
    );
}

#[test]
fn bad_glob() {
    rejects(
        &format!("{SECRET}consumers = [\"arn:aws:sts::1:assumed-role/[app-*\"]\n"),
        4,
        14,
        "secret[0].consumers[0]",
        "expected a glob over principal ARNs",
    );
}

#[test]
fn duplicate_name() {
    rejects(
        &format!("{SECRET}\n[[secret]]\nname = \"JWT_SECRET\"\nid = \"svc/other\"\n"),
        6,
        8,
        "secret[1].name",
        "duplicate secret name \"JWT_SECRET\"",
    );
}

#[test]
fn missing_id() {
    rejects(
        "[[secret]]\nname = \"JWT_SECRET\"\nrotate_every = \"90d\"\n",
        1,
        1,
        "secret[0].id",
        "missing field `id`",
    );
}

#[test]
fn inline_token() {
    rejects(
        "[server]\nlisten = \"127.0.0.1:9717\"\nadmin_token = \"s3cr3t-t0ken\"\n",
        3,
        15,
        "server.admin_token",
        "tokens are never written in the configuration",
    );
    // The token itself is never echoed back.
    let (_, _, stderr) = check("[server]\nadmin_token = \"s3cr3t-t0ken\"\n");
    assert!(!stderr.contains("s3cr3t-t0ken"), "{stderr}");
}

#[test]
fn token_in_env_name() {
    rejects(
        "[server]\nadmin_token_env = \"hunter2 is my token\"\n",
        2,
        19,
        "server.admin_token_env",
        "name of an environment variable",
    );
}

#[test]
fn unknown_strategy() {
    rejects(
        &format!("{SECRET}rotation = {{ strategy = \"rot13\" }}\n"),
        4,
        25,
        "secret[0].rotation.strategy",
        "unknown variant `rot13`, expected one of `lambda`, `random`, `dual-key`",
    );
}

#[test]
fn strategy_needs_master_secret() {
    rejects(
        &format!("{SECRET}rotation = {{ strategy = \"postgres\" }}\n"),
        4,
        25,
        "secret[0].rotation.master_secret",
        "needs master_secret",
    );
}

#[test]
fn missing_file_is_a_usage_error() {
    let out = keywarden_command()
        .args(["check-config", "--config", "/nonexistent/keywarden.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/keywarden.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn toml_syntax_error_is_located() {
    rejects(
        "[server\nlisten = 1\n",
        1,
        8,
        "(document)",
        "(document): unclosed table, expected `]`",
    );
}

/// Issue #13 point 4: check-config prints each rotating secret's effective grace, where it
/// comes from, and what zero means.
#[test]
fn check_config_prints_each_effective_grace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        "[[secret]]\nname = \"JWT\"\nid = \"app/jwt\"\nrotation = { strategy = \"dual-key\" }\n\
         [[secret]]\nname = \"NOW\"\nid = \"app/now\"\nrotation = { strategy = \"dual-key\", grace = \"0s\" }\n\
         [[secret]]\nname = \"S2S\"\nid = \"app/s2s\"\nrotation = { strategy = \"random\" }\n\
         [[secret]]\nname = \"MON\"\nid = \"app/mon\"\n",
    )
    .unwrap();
    let out = keywarden_command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("JWT: grace 2d (default for dual-key)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("NOW: grace 0s (configured); 0: finalize runs right after finish"),
        "{stdout}"
    );
    assert!(
        stdout.contains("S2S: grace 0s (default for random)"),
        "{stdout}"
    );
    assert!(!stdout.contains("MON:"), "{stdout}");
}

/// Issue #13 point 7: the runbook's five secrets as they are, with every consumer, restart,
/// verification and rollback hook, pass check-config; each gets the grace the runbook keeps.
#[test]
fn event_service_config_is_valid() {
    let out = keywarden_command()
        .args(["check-config", "--config"])
        .arg(root().join("config/event-service.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok (5 secrets"), "{stdout}");
    for line in [
        "JWT_SECRET: grace 2d (configured)",
        "SERVICE_TOKEN_SECRET: grace 0s (default for random)",
        "DATABASE_PASSWORD: grace 1d (configured)",
        "REDIS_PASSWORD: grace 1d (configured)",
        "API_KEY_ENCRYPTION_KEY: grace 1h (configured)",
    ] {
        assert!(stdout.contains(line), "{line}:\n{stdout}");
    }
    let config = keywarden::config::load(&root().join("config/event-service.toml")).unwrap();
    let s2s = config
        .secrets
        .iter()
        .find(|s| s.name == "SERVICE_TOKEN_SECRET")
        .unwrap();
    for service in ["venue", "ticket", "order", "payment", "event"] {
        assert!(
            s2s.consumers
                .iter()
                .any(|c| c.contains(&format!("{service}-service"))),
            "{service}-service is not a consumer"
        );
    }
    for s in &config.secrets {
        let on = |stage: keywarden::config::HookStage| s.hooks.iter().any(|h| h.on == stage);
        assert!(
            on(keywarden::config::HookStage::Finish),
            "{}: no restart",
            s.name
        );
        assert!(
            on(keywarden::config::HookStage::Rollback),
            "{}: no rollback hook",
            s.name
        );
    }
}

/// `[[account]]` and `[organization]` (issue #17 point 1): every mistake is located and named.
#[test]
fn accounts_are_checked() {
    const ROLE: &str = "role_arn = \"arn:aws:iam::111111111111:role/keywarden-read\"\n";
    let account = |extra: &str| {
        format!("[[account]]\nid = \"111111111111\"\n{ROLE}regions = [\"eu-west-1\"]\n{extra}")
    };
    rejects(
        "[[account]]\nid = \"1111\"\nrole_arn = \"x\"\nregions = [\"eu-west-1\"]\n",
        2,
        6,
        "account[0].id",
        "expected a 12-digit AWS account id",
    );
    rejects(
        "[[account]]\nid = \"222222222222\"\nrole_arn = \"arn:aws:iam::111111111111:role/r\"\nregions = [\"eu-west-1\"]\n",
        3,
        12,
        "account[0].role_arn",
        "the role is in account 111111111111, not in account 222222222222",
    );
    rejects(
        &account("external_id = \"s3cr3t\"\n"),
        5,
        15,
        "account[0].external_id",
        "is not written in the configuration",
    );
    rejects(
        "[[account]]\nid = \"111111111111\"\nrole_arn = \"arn:aws:iam::111111111111:role/r\"\nregions = [\"Europe\"]\n",
        4,
        12,
        "account[0].regions",
        "expected a region name such as \"eu-west-1\"",
    );
    rejects(
        &format!(
            "{}[organization]\nrole_name = \"keywarden-read\"\nregions = [\"eu-west-1\"]\n",
            account("")
        ),
        5,
        1,
        "organization",
        "exclude each other",
    );
    rejects(
        &format!("{}{SECRET}account = \"222222222222\"\n", account("")),
        8,
        11,
        "secret[0].account",
        "not one of the [[account]] entries",
    );
    rejects(
        &format!("{SECRET}region = \"eu-west-1\"\n"),
        4,
        10,
        "secret[0].region",
        "needs an account",
    );
    rejects(
        &format!(
            "{}{SECRET}account = \"111111111111\"\nregion = \"us-east-1\"\n",
            account("")
        ),
        9,
        10,
        "secret[0].region",
        "is not read in account 111111111111",
    );
    rejects(
        "[[secret]]\nname = \"a:b\"\nid = \"x\"\n",
        2,
        8,
        "secret[0].name",
        "contains ':'",
    );
    // A valid one says what it reads.
    let (code, stdout, stderr) = check(&format!(
        "{}[[account]]\nid = \"222222222222\"\nrole_arn = \"arn:aws:iam::222222222222:role/kr\"\nexternal_id_env = \"KW_EXT\"\nregions = [\"us-east-1\", \"eu-west-1\"]\n",
        account("")
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("account 111111111111 in eu-west-1 through arn:aws:iam::111111111111:role/keywarden-read\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("account 222222222222 in us-east-1, eu-west-1 through arn:aws:iam::222222222222:role/kr (with an ExternalId)\n"),
        "{stdout}"
    );
    let (code, stdout, stderr) = check(
        "[organization]\nrole_name = \"keywarden-read\"\nregions = [\"eu-west-1\"]\nexclude = [\"999999999999\"]\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("organization: every active account (ListAccounts every 15m) in eu-west-1 through role keywarden-read, except 999999999999"),
        "{stdout}"
    );
}
