//! Tests of the configuration: every table, every error message with its location.

use super::validate::line_column;

use super::*;

fn check_err(toml: &str, expected_key: &str, expected_fragment: &str, line: usize) {
    let err = parse(toml, Path::new("test.toml")).expect_err("config should be rejected");
    match err {
        ConfigError::Invalid {
            line: l,
            key,
            message,
            ..
        } => {
            assert_eq!(key, expected_key, "key of {message}");
            assert!(
                message.contains(expected_fragment),
                "message {message:?} lacks {expected_fragment:?}"
            );
            assert_eq!(l, line, "line of {message}");
        }
        other => panic!("unexpected error {other}"),
    }
}

const BASE: &str = "[[secret]]\nname = \"A\"\nid = \"svc/a\"\n";

#[test]
fn minimal_config_is_valid() {
    let c = parse(BASE, Path::new("t.toml")).unwrap();
    assert_eq!(c.secrets.len(), 1);
    assert_eq!(c.poll.metadata_every, Duration::from_secs(60));
    assert_eq!(c.server.listen.port(), 9717);
    assert_eq!(c.secrets[0].rotation.strategy, Strategy::None);
}

#[test]
fn errors_are_located() {
    check_err(
        "[server]\nlisten = \"127.0.0.1:1\"\nfoo = 1\n",
        "server.foo",
        "unknown field",
        3,
    );
    check_err(
        &format!("{BASE}rotate_every = \"ninety days\"\n"),
        "secret[0].rotate_every",
        "expected a duration",
        4,
    );
    check_err(
        &format!("{BASE}allowed_sources = [\"10.0.0.0/33\"]\n"),
        "secret[0].allowed_sources[0]",
        "CIDR",
        4,
    );
    check_err(
        &format!("{BASE}[[secret]]\nname = \"A\"\nid = \"svc/b\"\n"),
        "secret[1].name",
        "duplicate secret name",
        5,
    );
    check_err(
        "[[secret]]\nname = \"A\"\n",
        "secret[0].id",
        "missing field",
        1,
    );
    check_err(
        "[server]\nadmin_token = \"hunter2\"\n",
        "server.admin_token",
        "never written",
        2,
    );
    check_err(
        &format!("{BASE}rotation = {{ strategy = \"magic\" }}\n"),
        "secret[0].rotation.strategy",
        "unknown variant",
        4,
    );
    check_err(
        &format!("{BASE}consumers = [\"arn:[a\"]\n"),
        "secret[0].consumers[0]",
        "glob",
        4,
    );
}

#[test]
fn line_column_counts_characters() {
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("é=\nx", 4), (2, 1));
    assert_eq!(line_column("", 10), (1, 1));
}

/// Issue #15 (low): a zero timeout would fail every hook, rotation or request at once; each is
/// refused where it is written.
#[test]
fn zero_timeouts_are_refused() {
    check_err(
        "[server]\nheader_timeout = \"0s\"\n",
        "server.header_timeout",
        "at least \"1s\"",
        2,
    );
    check_err(
        "[server]\nbody_timeout = \"0s\"\n",
        "server.body_timeout",
        "at least \"1s\"",
        2,
    );
    check_err(
        &format!("{BASE}rotation = {{ strategy = \"random\", timeout = \"0s\" }}\n"),
        "secret[0].rotation.timeout",
        "at least \"1s\"",
        4,
    );
    check_err(
        &format!("{BASE}hooks = [{{ on = \"finish\", command = [\"true\"], timeout = \"0s\" }}]\n"),
        "secret[0].hooks[0].timeout",
        "at least \"1s\"",
        4,
    );
}

/// Issue #15 (low): a name that is another secret's id makes `POST /rotate/<x>` ambiguous
/// (inventory name or Secrets Manager name): refused.
#[test]
fn a_name_that_is_another_secrets_id_is_refused() {
    check_err(
        &format!("{BASE}[[secret]]\nname = \"svc/a\"\nid = \"svc/b\"\n"),
        "secret[1].name",
        "is the id of secret[0]",
        5,
    );
    // A secret whose name is its own id is fine.
    parse(
        "[[secret]]\nname = \"svc/a\"\nid = \"svc/a\"\n",
        Path::new("t.toml"),
    )
    .expect("name equal to its own id");
}

#[test]
fn database_server_keys() {
    let pg = |extra: &str| {
        format!("{BASE}rotation = {{ strategy = \"postgres\", master_secret = \"m\"{extra} }}\n")
    };
    // TLS verify-full is the default; host, port and dbname are optional (the master secret may
    // carry them).
    let c = parse(&pg(""), Path::new("t.toml")).unwrap();
    assert_eq!(c.secrets[0].rotation.server, ServerConnection::default());
    assert_eq!(c.secrets[0].rotation.server.tls, ServerTls::VerifyFull);
    let c = parse(
        &pg(", host = \"db.internal\", port = 6432, dbname = \"app\", ca_file = \"/etc/rds-ca.pem\""),
        Path::new("t.toml"),
    )
    .unwrap();
    let s = &c.secrets[0].rotation.server;
    assert_eq!(
        (s.host.as_deref(), s.port, s.dbname.as_deref(), s.tls),
        (
            Some("db.internal"),
            Some(6432),
            Some("app"),
            ServerTls::VerifyFull
        )
    );
    assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/rds-ca.pem")));
    let c = parse(&pg(", tls = \"disable\""), Path::new("t.toml")).unwrap();
    assert_eq!(c.secrets[0].rotation.server.tls, ServerTls::Disable);

    check_err(
        &pg(", tls = \"prefer\""),
        "secret[0].rotation.tls",
        "verify-full",
        4,
    );
    check_err(
        &pg(", port = 70000"),
        "secret[0].rotation.port",
        "between 1 and 65535",
        4,
    );
    check_err(
        &pg(", host = \"\""),
        "secret[0].rotation.host",
        "non-empty host",
        4,
    );
    check_err(
        &pg(", tls = \"disable\", ca_file = \"/ca.pem\""),
        "secret[0].rotation.ca_file",
        "tls = \"disable\"",
        4,
    );
    check_err(
        &format!(
            "{BASE}rotation = {{ strategy = \"redis\", master_secret = \"m\", dbname = \"x\" }}\n"
        ),
        "secret[0].rotation.dbname",
        "applies to the postgres strategy",
        4,
    );
    check_err(
        &format!("{BASE}rotation = {{ strategy = \"random\", host = \"h\" }}\n"),
        "secret[0].rotation.host",
        "applies to the postgres and redis strategies",
        4,
    );
}

/// Issue #15, point 8: the connection protection keys; zero is refused, defaults documented in
/// the README.
#[test]
fn connection_protection_keys() {
    for key in [
        "max_connections",
        "max_connections_per_ip",
        "reserved_connections",
    ] {
        check_err(
            &format!("[server]\n{key} = 0\n"),
            &format!("server.{key}"),
            "positive integer",
            2,
        );
    }
    check_err(
        "[server]\nwrite_timeout = \"0s\"\n",
        "server.write_timeout",
        "at least \"1s\"",
        2,
    );
    let c = crate::config::parse("", std::path::Path::new("t.toml")).unwrap();
    assert_eq!(c.server.max_connections, 256);
    assert_eq!(c.server.max_connections_per_ip, 32);
    assert_eq!(c.server.reserved_connections, 16);
    assert_eq!(c.server.write_timeout, std::time::Duration::from_secs(10));
    let c = crate::config::parse(
        "[server]\nmax_connections_per_ip = 3\nreserved_connections = 2\nwrite_timeout = \"2s\"\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.server.max_connections_per_ip, 3);
    assert_eq!(c.server.reserved_connections, 2);
    assert_eq!(c.server.write_timeout, std::time::Duration::from_secs(2));
}

/// Issue #13 point 4: a missing `grace` is the strategy's default (SPEC §11), and an explicit
/// `"0s"` is honoured.
#[test]
fn grace_defaults_per_strategy_and_explicit_zero_is_honoured() {
    let hours = |h: u64| Duration::from_secs(h * 3600);
    for (rotation, grace, is_default) in [
        ("strategy = \"dual-key\"", hours(48), true),
        ("strategy = \"primary-secondary\"", hours(1), true),
        ("strategy = \"random\"", Duration::ZERO, true),
        ("strategy = \"lambda\"", Duration::ZERO, true),
        (
            "strategy = \"elasticache\", replication_group = \"event-service-redis\"",
            hours(24),
            true,
        ),
        (
            "strategy = \"dual-key\", grace = \"0s\"",
            Duration::ZERO,
            false,
        ),
        ("strategy = \"dual-key\", grace = \"2h\"", hours(2), false),
    ] {
        let text = format!("{BASE}rotation = {{ {rotation} }}\n");
        let c = parse(&text, Path::new("t.toml")).unwrap();
        let r = &c.secrets[0].rotation;
        assert_eq!(
            (r.grace, r.grace_is_default),
            (grace, is_default),
            "{rotation}"
        );
    }
    let text = "[[secret]]\nname = \"DB\"\nid = \"db/app\"\n\
                rotation = { strategy = \"postgres\", master_secret = \"db/master\" }\n\
                [[secret]]\nname = \"R\"\nid = \"cache/app\"\n\
                rotation = { strategy = \"redis\", master_secret = \"cache/master\" }\n";
    let c = parse(text, Path::new("t.toml")).unwrap();
    assert_eq!(c.secrets[0].rotation.grace, hours(24));
    assert_eq!(c.secrets[1].rotation.grace, hours(24));
}

/// Issue #13, point 1: `rotation.replication_group` is required by `elasticache` and refused
/// elsewhere; `ca_file` applies, `tls = "disable"`, `host`, `port` and `master_secret` do not.
#[test]
fn elasticache_keys() {
    let ec = |extra: &str| format!("{BASE}rotation = {{ strategy = \"elasticache\"{extra} }}\n");
    let c = parse(
        &ec(", replication_group = \"event-service-redis\", ca_file = \"/ca.pem\", timeout = \"20m\""),
        Path::new("t.toml"),
    )
    .unwrap();
    let r = &c.secrets[0].rotation;
    assert_eq!(r.strategy, Strategy::Elasticache);
    assert_eq!(r.replication_group.as_deref(), Some("event-service-redis"));
    assert_eq!(r.server.ca_file.as_deref(), Some(Path::new("/ca.pem")));
    assert_eq!(r.timeout, std::time::Duration::from_secs(20 * 60));
    assert!(crate::rotation::strategy::for_spec("A", r).is_ok());
    check_err(
        &ec(""),
        "secret[0].rotation.replication_group",
        "needs replication_group",
        4,
    );
    for bad in ["", "1abc", "a--b", "a-", "a_b", &"a".repeat(41)] {
        check_err(
            &ec(&format!(", replication_group = \"{bad}\"")),
            "secret[0].rotation.replication_group",
            "expected a replication group id",
            4,
        );
    }
    let g = ", replication_group = \"g\"";
    check_err(
        &ec(&format!("{g}, tls = \"disable\"")),
        "secret[0].rotation.tls",
        "always uses TLS",
        4,
    );
    check_err(
        &ec(&format!("{g}, host = \"h\"")),
        "secret[0].rotation.host",
        "applies to the postgres and redis strategies",
        4,
    );
    check_err(
        &ec(&format!("{g}, master_secret = \"m\"")),
        "secret[0].rotation.master_secret",
        "not elasticache",
        4,
    );
    check_err(
        &format!("{BASE}rotation = {{ strategy = \"random\", replication_group = \"g\" }}\n"),
        "secret[0].rotation.replication_group",
        "applies to the elasticache strategy",
        4,
    );
    // Rollback after finalize is refused: the old token is dead once SET ran.
    assert!(Strategy::Elasticache.old_credential_dies_at_finalize());
}

#[test]
fn verify_checks_parse_with_defaults() {
    let text = format!(
        "[verify]\nprometheus_url = \"http://127.0.0.1:9090/\"\n\n{BASE}rotation = {{ strategy = \"random\" }}\nverify = [\n  {{ name = \"db-health\", http = \"http://127.0.0.1:8080/health\", json_pointer = \"/checks/database\", equals = \"ok\" }},\n  {{ name = \"jwt\", http = \"http://127.0.0.1:8080/validate\", headers = {{ Authorization = \"EVENT_SERVICE_TEST_TOKEN\" }}, expect_status = 204 }},\n  {{ name = \"auth-failures\", prometheus = \"sum(rate(auth_failures_total[1m]))\", max_ratio = 3.0 }},\n  {{ name = \"login\", command = [\"/bin/true\"], timeout = \"10s\" }},\n]\n"
    );
    let c = parse(&text, Path::new("t.toml")).unwrap();
    assert_eq!(c.verify.every, Duration::from_secs(30));
    assert_eq!(c.verify.watch, Duration::from_secs(900));
    assert_eq!(c.verify.failures, 2);
    assert_eq!(
        c.verify.prometheus_url.as_deref(),
        Some("http://127.0.0.1:9090")
    );
    let v = &c.secrets[0].verify;
    assert_eq!(v.len(), 4);
    assert_eq!(
        v[0].kind,
        CheckKind::Http {
            url: "http://127.0.0.1:8080/health".into(),
            expect_status: 200,
            json_pointer: Some("/checks/database".into()),
            equals: Some(serde_json::json!("ok")),
            headers: vec![],
        }
    );
    assert!(
        matches!(&v[1].kind, CheckKind::Http { headers, expect_status: 204, .. } if headers == &[("Authorization".to_string(), "EVENT_SERVICE_TEST_TOKEN".to_string())])
    );
    assert!(
        matches!(v[2].kind, CheckKind::Prometheus { limit: PromLimit::MaxRatio(r), .. } if r == 3.0)
    );
    assert_eq!(v[3].timeout, Duration::from_secs(10));
    assert_eq!(v[0].timeout, Duration::from_secs(5));
}

#[test]
fn verify_errors_are_located() {
    let rot = "rotation = { strategy = \"random\" }\n";
    check_err(
        &format!(
            "{BASE}{rot}verify = [{{ name = \"a\", http = \"http://x/\", headers = {{ Authorization = \"Bearer abc\" }} }}]\n"
        ),
        "secret[0].verify[0].headers",
        "NAME of an environment variable",
        5,
    );
    check_err(
        &format!("{BASE}{rot}verify = [{{ name = \"a\", prometheus = \"up\", max = 1.0 }}]\n"),
        "secret[0].verify[0].prometheus",
        "[verify] prometheus_url",
        5,
    );
    check_err(
        &format!(
            "[verify]\nprometheus_url = \"http://p:9090\"\n{BASE}{rot}verify = [{{ name = \"a\", prometheus = \"up\" }}]\n"
        ),
        "secret[0].verify[0].prometheus",
        "max (absolute) or max_ratio",
        7,
    );
    check_err(
        &format!(
            "{BASE}{rot}verify = [{{ name = \"a\", http = \"http://x/\", command = [\"true\"] }}]\n"
        ),
        "secret[0].verify[0]",
        "exactly one of",
        5,
    );
    check_err(
        &format!(
            "{BASE}{rot}verify = [{{ name = \"a\", http = \"http://x/\", json_pointer = \"checks\", equals = \"ok\" }}]\n"
        ),
        "secret[0].verify[0].json_pointer",
        "RFC 6901",
        5,
    );
    check_err(
        &format!(
            "{BASE}{rot}verify = [{{ name = \"a\", command = [\"true\"] }}, {{ name = \"a\", command = [\"true\"] }}]\n"
        ),
        "secret[0].verify[1].name",
        "duplicate check name",
        5,
    );
    check_err(
        "[verify]\nwatch = \"soon\"\n",
        "verify.watch",
        "expected a duration",
        2,
    );
    check_err(
        "[verify]\nfailures = 0\n",
        "verify.failures",
        "positive integer",
        2,
    );
    // The old credential dies at finalize: the grace must cover the watch.
    check_err(
        &format!(
            "[verify]\nwatch = \"2h\"\n{BASE}rotation = {{ strategy = \"postgres\", master_secret = \"m\", grace = \"1h\" }}\nverify = [{{ name = \"a\", command = [\"true\"] }}]\n"
        ),
        "secret[0].rotation.grace",
        "shorter than [verify] watch",
        6,
    );
    // Random finalize removes nothing: a short grace is fine (finalize waits for the watch).
    let ok = format!(
        "[verify]\nwatch = \"2h\"\n{BASE}rotation = {{ strategy = \"random\", grace = \"1m\" }}\nverify = [{{ name = \"a\", command = [\"true\"] }}]\n"
    );
    assert!(parse(&ok, Path::new("t.toml")).is_ok());
}

#[test]
fn access_source_keys() {
    let url = "https://sqs.us-east-1.amazonaws.com/123456789012/keywarden-cloudtrail";
    let c = parse(
        &format!("[access]\nsource = \"sqs\"\nqueue_url = \"{url}\"\n{BASE}"),
        Path::new("t.toml"),
    )
    .unwrap();
    let a = c.access.unwrap();
    assert_eq!(
        a.source,
        AccessSource::Sqs {
            queue_url: url.into()
        }
    );
    assert_eq!(a.log_group, None);
    // Both: the queue counts, the log group teaches the baseline.
    let c = parse(
        &format!("[access]\nsource = \"sqs\"\nqueue_url = \"{url}\"\nlog_group = \"/ct\"\n{BASE}"),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.access.unwrap().log_group.as_deref(), Some("/ct"));
    // The default source is CloudWatch Logs, as before.
    let c = parse(
        &format!("[access]\nlog_group = \"/ct\"\n{BASE}"),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.access.unwrap().source, AccessSource::CloudWatchLogs);
    check_err(
        "[access]\nsource = \"sqs\"\n",
        "access.queue_url",
        "required with source = \"sqs\"",
        2,
    );
    check_err(
        "[access]\nsource = \"kinesis\"\nlog_group = \"/ct\"\n",
        "access.source",
        "expected \"cloudwatch_logs\" or \"sqs\"",
        2,
    );
    check_err(
        "[access]\nsource = \"sqs\"\nqueue_url = \"keywarden-cloudtrail\"\n",
        "access.queue_url",
        "expected a queue URL",
        3,
    );
    check_err(
        "[access]\nlog_group = \"/ct\"\nqueue_url = \"https://q\"\n",
        "access.queue_url",
        "only read with source = \"sqs\"",
        3,
    );
    check_err(
        "[access]\noverlap = \"15m\"\n",
        "access.log_group",
        "required with source = \"cloudwatch_logs\"",
        1,
    );
}

/// SPEC §14: `[state] backend` is `sqlite` (the default) or `dynamodb`, which needs `table`.
#[test]
fn state_backend_and_table() {
    let c = parse(BASE, Path::new("t.toml")).unwrap();
    assert_eq!(c.state.backend, StateBackend::Sqlite);
    assert_eq!(c.state.table, None);
    let c = parse(
        &format!("[state]\nbackend = \"dynamodb\"\ntable = \"keywarden-state\"\n{BASE}"),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.state.backend, StateBackend::DynamoDb);
    assert_eq!(c.state.table.as_deref(), Some("keywarden-state"));
    check_err(
        &format!("[state]\nbackend = \"dynamodb\"\n{BASE}"),
        "state.table",
        "required with backend = \"dynamodb\"",
        2,
    );
    check_err(
        &format!("[state]\nbackend = \"redis\"\n{BASE}"),
        "state.backend",
        "expected \"sqlite\" (the default) or \"dynamodb\", found \"redis\"",
        2,
    );
    check_err(
        &format!("[state]\nbackend = \"dynamodb\"\ntable = \"a b\"\n{BASE}"),
        "state.table",
        "expected a DynamoDB table name",
        3,
    );
}
