//! The metadata poller against moto: exact ages and due dates, paging cost, outages, and series
//! that leave.

use std::time::Duration;

use crate::support::{
    Daemon, Moto, create_aged_secret, keywarden_command, now, promtool_check_metrics,
};

/// The runbook's five secrets: (inventory name, Secrets Manager name, age in days, policy days).
const RUNBOOK: [(&str, &str, i64, i64); 5] = [
    ("JWT_SECRET", "event-service/jwt-secret", 85, 90),
    ("SERVICE_TOKEN_SECRET", "event-service/s2s-secret", 35, 30),
    ("DATABASE_PASSWORD", "event-service/database", 10, 90),
    ("REDIS_PASSWORD", "event-service/redis", 95, 90),
    (
        "API_KEY_ENCRYPTION_KEY",
        "event-service/api-key-encryption",
        179,
        180,
    ),
];

fn inventory_config(moto: &Moto, every: &str, extra: &str) -> String {
    let mut c = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\n\
         [poll]\nmetadata_every = \"{every}\"\n\
         [state]\npath = \"{{state}}\"\n{extra}\n",
        moto.endpoint()
    );
    for (name, id, _, policy) in RUNBOOK {
        c.push_str(&format!(
            "[[secret]]\nname = \"{name}\"\nid = \"{id}\"\nrotate_every = \"{policy}d\"\nseverity = \"critical\"\nimpact = \"impact of {name}\"\n\n"
        ));
    }
    c.push_str("[[secret]]\nname = \"LEGACY_TOKEN\"\nid = \"event-service/legacy-token\"\nrotate_every = \"90d\"\n");
    c
}

async fn wait_first_poll(d: &Daemon) -> crate::support::Scrape {
    // The first poll of the 1,000-secret test makes 1,000 ListSecretVersionIds calls against
    // moto; on a loaded 2-core machine that takes more than 30 s.
    d.wait_for("a successful metadata poll", Duration::from_secs(90), |s| {
        s.get(
            "keywarden_last_successful_poll_timestamp_seconds",
            &[("source", "metadata")],
        )
        .is_some()
    })
    .await
}

#[tokio::test]
async fn runbook_secrets_are_exact_to_the_second() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let mut created = Vec::new();
    for (_, id, age, _) in RUNBOOK {
        created.push(create_aged_secret(&moto, &client, id, age).await);
    }
    // AWS rotation on for the database secret, with a known next date.
    let next = now() + 20 * 86_400;
    moto.set_dates(serde_json::json!({
        "secret_id": "event-service/database",
        "rotation": {"enabled": true, "automatically_after_days": 30, "next_rotation": next},
    }))
    .await;
    // A rotation left half-way on the JWT secret: AWSPENDING on a new version.
    client
        .put_secret_value()
        .secret_id("event-service/jwt-secret")
        .secret_string("pending-value")
        .version_stages("AWSPENDING")
        .client_request_token("0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();

    let d = Daemon::start(&inventory_config(&moto, "1s", "")).await;
    let s = wait_first_poll(&d).await;
    let t = now();
    for (i, (name, _, _, policy)) in RUNBOOK.iter().enumerate() {
        let l = [("secret", *name)];
        let interval = policy * 86_400;
        assert_eq!(
            s.get("keywarden_secret_last_rotated_timestamp_seconds", &l),
            Some(created[i] as f64),
            "{name} last rotated"
        );
        assert_eq!(
            s.get("keywarden_secret_rotation_interval_seconds", &l),
            Some(interval as f64),
            "{name} interval"
        );
        let due = s
            .get("keywarden_secret_rotation_due_timestamp_seconds", &l)
            .unwrap();
        assert_eq!(due, (created[i] + interval) as f64, "{name} due");
        let overdue = matches!(*name, "SERVICE_TOKEN_SECRET" | "REDIS_PASSWORD");
        assert_eq!(due < t as f64, overdue, "{name} overdue");
        assert_eq!(s.get("keywarden_secret_present", &l), Some(1.0), "{name}");
        assert_eq!(
            s.get(
                "keywarden_secret_info",
                &[
                    ("secret", name),
                    ("severity", "critical"),
                    ("managed", "inventory")
                ]
            ),
            Some(1.0)
        );
    }
    // The absent inventory secret.
    assert_eq!(
        s.get("keywarden_secret_present", &[("secret", "LEGACY_TOKEN")]),
        Some(0.0)
    );
    assert_eq!(
        s.get(
            "keywarden_secret_rotation_due_timestamp_seconds",
            &[("secret", "LEGACY_TOKEN")]
        ),
        None
    );
    // AWS-side rotation and pending state.
    let db = [("secret", "DATABASE_PASSWORD")];
    assert_eq!(s.get("keywarden_secret_rotation_enabled", &db), Some(1.0));
    assert_eq!(
        s.get("keywarden_secret_rotation_scheduled_timestamp_seconds", &db),
        Some(next as f64)
    );
    assert_eq!(
        s.get(
            "keywarden_secret_rotation_scheduled_timestamp_seconds",
            &[("secret", "REDIS_PASSWORD")]
        ),
        None
    );
    assert_eq!(
        s.get(
            "keywarden_secret_rotation_pending",
            &[("secret", "JWT_SECRET")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "keywarden_secret_rotation_pending",
            &[("secret", "REDIS_PASSWORD")]
        ),
        Some(0.0)
    );
    // Counters of later features exist at 0 from the first scrape.
    assert_eq!(
        s.get(
            "keywarden_rotations_total",
            &[
                ("secret", "JWT_SECRET"),
                ("trigger", "manual"),
                ("result", "failure")
            ]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.get(
            "keywarden_secret_access_anomalies_total",
            &[("secret", "LEGACY_TOKEN"), ("kind", "new_principal")]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.get(
            "keywarden_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        s.sum(
            "keywarden_aws_requests_total",
            &[("operation", "ListSecrets"), ("outcome", "ok")]
        ) >= 1.0
    );
    promtool_check_metrics(&s.text);

    // Prometheus itself negotiates OpenMetrics.
    let (status, headers, body) = crate::support::http(
        "GET",
        &d.url("/metrics"),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text"))
    );
    assert!(body.ends_with("# EOF\n"));

    // /secrets carries the same facts.
    let (status, body) = d.get("/secrets").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let secrets = v["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 6);
    let redis = secrets
        .iter()
        .find(|s| s["name"] == "REDIS_PASSWORD")
        .unwrap();
    assert_eq!(redis["overdue"], true);
    assert_eq!(redis["due"], created[3] + 90 * 86_400);

    // `keywarden status` agrees, as JSON and as a table.
    let config = d.dir.path().join("keywarden.toml");
    let out = keywarden_command()
        .args(["status", "--output", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jwt = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "JWT_SECRET")
        .unwrap();
    assert_eq!(jwt["last_rotated"], created[0]);
    assert_eq!(jwt["pending"], true);
    // The running daemon answered the anomaly counts (none: this config reads no CloudTrail).
    assert_eq!(jwt["anomalies"]["count"], 0, "{jwt:#}");
    let out = keywarden_command()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap();
    for column in [
        "SECRET",
        "PRESENT",
        "AGE",
        "INTERVAL",
        "DUE",
        "SCHEDULED",
        "PENDING",
        "LAST ACCESSED",
        "ANOMALIES",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let redis_row = table
        .lines()
        .find(|l| l.starts_with("REDIS_PASSWORD"))
        .unwrap();
    assert!(
        redis_row.contains(" 95d ")
            && redis_row.contains(" 90d ")
            && redis_row.contains("overdue 5d"),
        "{redis_row}"
    );
    let legacy_row = table
        .lines()
        .find(|l| l.starts_with("LEGACY_TOKEN"))
        .unwrap();
    assert!(legacy_row.contains(" no "), "{legacy_row}");
}

#[tokio::test]
async fn thousand_secrets_cost_one_list_page_per_hundred() {
    const N: usize = 1000;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let mut tasks = tokio::task::JoinSet::new();
    let names: Vec<String> = (0..N).map(|i| format!("bulk/secret-{i:04}")).collect();
    for chunk in names.chunks(N / 8) {
        let client = client.clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for name in chunk {
                client
                    .create_secret()
                    .name(&name)
                    .secret_string("x")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    moto.reset_requests().await;
    let config = format!(
        "[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[server]\nlisten = \"{{listen}}\"\n\
         [poll]\nmetadata_every = \"1s\"\n[state]\npath = \"{{state}}\"\n\
         [discovery]\nname_prefixes = [\"bulk/\"]\ndefault_rotate_every = \"90d\"\n",
        moto.endpoint()
    );
    let d = Daemon::start(&config).await;
    let first = wait_first_poll(&d).await;
    let c1 = Daemon::metadata_cycles(&first);
    assert_eq!(
        first
            .samples
            .iter()
            .filter(|s| s.name == "keywarden_secret_present")
            .count(),
        N
    );
    let s = d
        .wait_for("three more cycles", Duration::from_secs(60), |s| {
            Daemon::metadata_cycles(s) >= c1 + 3.0
        })
        .await;
    let before = moto.requests().await;
    let s2 = d.scrape().await;
    let after = moto.requests().await;
    let cycles = Daemon::metadata_cycles(&s2);
    let lists = s2.sum(
        "keywarden_aws_requests_total",
        &[("operation", "ListSecrets")],
    );
    // Every completed cycle read exactly ceil(N/100) pages; a cycle under way may add a few.
    let per = N.div_ceil(100) as f64;
    assert!(
        lists >= per * cycles && lists < per * (cycles + 1.0),
        "{lists} ListSecrets calls for {cycles} cycles"
    );
    let moto_lists = |m: &std::collections::BTreeMap<String, u64>| {
        m.get("secretsmanager:ListSecrets").copied().unwrap_or(0) as f64
    };
    assert!(
        moto_lists(&before) <= lists && lists <= moto_lists(&after),
        "moto saw {before:?} / {after:?}, keywarden counted {lists}"
    );
    // Version lookups: one per secret in the first cycle, none since.
    let versions = |s: &crate::support::Scrape| {
        s.sum(
            "keywarden_aws_requests_total",
            &[("operation", "ListSecretVersionIds")],
        )
    };
    assert_eq!(versions(&s), N as f64);
    assert_eq!(versions(&s2), N as f64);
    assert_eq!(
        after.get("secretsmanager:ListSecretVersionIds").copied(),
        Some(N as u64)
    );
}

#[tokio::test]
async fn moto_outage_keeps_values_counts_errors_and_recovers() {
    let mut moto = Moto::start();
    let client = moto.secrets_client().await;
    let created = create_aged_secret(&moto, &client, "event-service/jwt-secret", 85).await;
    let d = Daemon::start(&inventory_config(&moto, "1s", "")).await;
    wait_first_poll(&d).await;
    let (status, _) = d.get("/readyz").await;
    assert_eq!(status, 200);

    moto.stop();
    let s = d
        .wait_for("network errors counted", Duration::from_secs(30), |s| {
            s.get(
                "keywarden_poll_errors_total",
                &[("source", "metadata"), ("kind", "network")],
            )
            .unwrap_or(0.0)
                >= 1.0
        })
        .await;
    // The last values stay exported.
    assert_eq!(
        s.get(
            "keywarden_secret_rotation_due_timestamp_seconds",
            &[("secret", "JWT_SECRET")]
        ),
        Some((created + 90 * 86_400) as f64)
    );
    assert!(
        s.sum(
            "keywarden_aws_requests_total",
            &[("operation", "ListSecrets"), ("outcome", "error")]
        ) >= 1.0
    );
    // Not ready after three failed intervals.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = d.get("/readyz").await;
        if status == 503 {
            assert!(body.contains("metadata"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    moto.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = d.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz did not recover:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // moto restarted empty: the secret now reads as missing, and the daemon never exited.
    d.wait_for(
        "the secret to read as missing",
        Duration::from_secs(10),
        |s| s.get("keywarden_secret_present", &[("secret", "JWT_SECRET")]) == Some(0.0),
    )
    .await;
}

#[tokio::test]
async fn deleted_secrets_read_absent_and_discovered_series_leave() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    create_aged_secret(&moto, &client, "event-service/jwt-secret", 10).await;
    create_aged_secret(&moto, &client, "event-service/extra-a", 10).await;
    create_aged_secret(&moto, &client, "event-service/extra-b", 10).await;
    let d = Daemon::start(&inventory_config(
        &moto,
        "1s",
        "[discovery]\nname_prefixes = [\"event-service/extra-\"]\n",
    ))
    .await;
    let s = wait_first_poll(&d).await;
    assert_eq!(
        s.get(
            "keywarden_secret_present",
            &[("secret", "event-service/extra-a")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "keywarden_secret_info",
            &[
                ("secret", "event-service/extra-b"),
                ("managed", "discovered")
            ]
        ),
        Some(1.0)
    );
    // Scheduled for deletion: the inventory secret reads present 0.
    client
        .delete_secret()
        .secret_id("event-service/jwt-secret")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    // Gone for good: the discovered secret's series disappear.
    client
        .delete_secret()
        .secret_id("event-service/extra-a")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let s = d
        .wait_for("the deletions to show", Duration::from_secs(30), |s| {
            s.get("keywarden_secret_present", &[("secret", "JWT_SECRET")]) == Some(0.0)
                && !s.mentions_secret("event-service/extra-a")
        })
        .await;
    assert_eq!(
        s.get(
            "keywarden_secret_present",
            &[("secret", "event-service/extra-b")]
        ),
        Some(1.0)
    );
    assert!(!s.text.contains("extra-a"), "{}", s.text);
}
