//! High availability on DynamoDB (issue #18, points 2 to 4) with two keywarden processes on
//! moto: one leader, one follower; failover after kill -9 in the middle of a rotation; a paused
//! (SIGSTOP) leader that wakes up past its lease steps down without acting; fenced writes.

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager as sm;

use crate::support::{Backend, Daemon, Moto, Scrape, free_port};

const TOKEN: &str = "ha-admin-token-0123456789abcdef0123456789";
const LEASE: Duration = Duration::from_secs(3);

fn config(moto: &Moto, state: &str, replica: &str) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         {state}\
         [ha]\nenabled = true\nlease = \"{}s\"\nreplica = \"{replica}\"\n\n\
         [[secret]]\nname = \"HA\"\nid = \"ha/x\"\n\
         rotation = {{ strategy = \"random\", grace = \"0s\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sleep\", \"2\"] }}]\n",
        moto.endpoint(),
        LEASE.as_secs()
    )
}

async fn start(config: &str) -> Daemon {
    Daemon::start_in_env(
        tempfile::tempdir().unwrap(),
        free_port(),
        config,
        &[("KW_TEST_TOKEN", TOKEN)],
    )
    .await
}

fn leads(s: &Scrape, replica: &str) -> Option<f64> {
    s.get("keywarden_leader", &[("replica", replica)])
}

/// Waits until `replica` leads (tolerating its listener switch from follower to leader).
async fn wait_leader(d: &Daemon, replica: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while !try_leads(d, replica).await {
        assert!(
            t0.elapsed() < limit,
            "{replica} did not lead within {limit:?}:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

async fn versions(client: &sm::Client) -> usize {
    client
        .list_secret_version_ids()
        .secret_id("ha/x")
        .include_deprecated(true)
        .send()
        .await
        .unwrap()
        .versions()
        .len()
}

async fn world() -> (Moto, sm::Client, String) {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    client
        .create_secret()
        .name("ha/x")
        .secret_string("v0")
        .send()
        .await
        .unwrap();
    let state = Backend::Dynamo.state_section(&moto);
    (moto, client, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_mid_rotation_the_follower_finishes_it_once() {
    let (moto, client, state) = world().await;
    let a = start(&config(&moto, &state, "a")).await;
    wait_leader(&a, "a", Duration::from_secs(15)).await;
    let b = start(&config(&moto, &state, "b")).await;
    // The follower: gauge 0, /readyz 503 naming the leader, no per-secret series.
    let s = b
        .wait_for("the follower's gauge", Duration::from_secs(10), |s| {
            leads(s, "b") == Some(0.0)
        })
        .await;
    assert!(
        !s.mentions_secret("HA"),
        "a follower exports no per-secret series"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = b.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        if body.contains("replica a holds the lease") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = a.get("/readyz").await;
    assert!(status == 200 || status == 503, "{status}");

    let before = versions(&client).await;
    let (status, _, body) = crate::support::http(
        "POST",
        &a.url("/rotate/HA"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["rotation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // In the finish hook (2 s): the new version is AWSCURRENT, the rotation not journaled done.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let killed = Instant::now();
    drop(a.kill9());
    let failover = wait_leader(&b, "b", Duration::from_secs(30)).await;
    let measured = killed.elapsed();
    println!(
        "failover after kill -9: follower led {measured:.2?} after the kill (lease {LEASE:?}, period {:?}); waited {failover:.2?}",
        LEASE / 3
    );
    assert!(
        measured <= LEASE + LEASE / 3 + Duration::from_secs(2),
        "took over within lease + renew period (plus a poll): {measured:?}"
    );
    let r = b
        .wait_rotation(&id, &["done"], Duration::from_secs(30))
        .await;
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(
        versions(&client).await,
        before + 1,
        "exactly one new version"
    );
    let (status, body) = b.get("/readyz").await;
    assert!(status == 200 || body.contains("poll"), "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_steps_down_without_acting_when_it_wakes_up() {
    let (moto, client, state) = world().await;
    let mut a = start(&config(&moto, &state, "a")).await;
    wait_leader(&a, "a", Duration::from_secs(15)).await;
    let b = start(&config(&moto, &state, "b")).await;
    b.wait_for("the follower", Duration::from_secs(10), |s| {
        leads(s, "b") == Some(0.0)
    })
    .await;
    let before = versions(&client).await;
    a.send("STOP");
    let stopped = Instant::now();
    wait_leader(&b, "b", Duration::from_secs(30)).await;
    println!(
        "failover after SIGSTOP: the follower led {:.2?} after the pause (lease {LEASE:?})",
        stopped.elapsed()
    );
    // A rotation by the new leader, while the old one is still paused.
    let (status, _, body) = crate::support::http(
        "POST",
        &b.url("/rotate/HA"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    a.send("CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = a.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the old leader did not step down:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !status.success(),
        "stepping down exits non-zero: {status:?}"
    );
    let log = a.log();
    assert!(log.contains("Lease lost: stepping down"), "{log}");
    let woke = log
        .lines()
        .skip_while(|l| !l.contains("Lease lost"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("the old leader after SIGCONT:\n{woke}");
    // Nothing of the old leader reached Secrets Manager after it woke: its log shows no call
    // that was sent, only refusals by the gate, if any.
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["rotation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b
        .wait_rotation(&id, &["done"], Duration::from_secs(30))
        .await;
    assert_eq!(r["state"], "done");
    assert_eq!(
        versions(&client).await,
        before + 1,
        "one new version, by the new leader"
    );
    let s = b.scrape().await;
    assert_eq!(leads(&s, "b"), Some(1.0), "the new leader kept the lease");
}

/// Fencing at the table: once another replica took the lease, a write of the old epoch is
/// refused and the table reports the lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_write_is_refused() {
    use keywarden::rotation::journal::{Detail, JournalStore, Trigger};
    let moto = Moto::start();
    let state = Backend::Dynamo.state_section(&moto);
    let table = state
        .lines()
        .find_map(|l| l.strip_prefix("table = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string();
    let old = crate::support::dynamo_table(&moto.endpoint(), &table);
    let new = crate::support::dynamo_table(&moto.endpoint(), &table);
    let lease_a = keywarden::ha::Lease::new(old.clone(), "a".into(), LEASE);
    let metrics = keywarden::telemetry::Metrics::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let (epoch_a, _, _) = lease_a.acquire(&metrics, &stop).await.unwrap();
    old.fence(epoch_a);
    let d = Detail::default();
    assert!(
        old.insert_rotation("r1", "X", Trigger::Manual, &d, 1)
            .unwrap()
            .is_ok()
    );
    // "b" sees the lease unchanged for a whole lease (a is not renewing) and takes it.
    let lease_b = keywarden::ha::Lease::new(new.clone(), "b".into(), LEASE);
    let (epoch_b, _, _) = lease_b.acquire(&metrics, &stop).await.unwrap();
    assert_eq!(epoch_b, epoch_a + 1);
    new.fence(epoch_b);
    let err = old
        .insert_rotation("r2", "Y", Trigger::Manual, &d, 2)
        .expect_err("the deposed leader's write is refused");
    assert!(
        err.to_string().contains("no longer holds the lease"),
        "{err}"
    );
    assert!(old.fence_lost());
    assert!(new.rotation("r2").unwrap().is_none(), "nothing written");
    assert!(
        new.insert_rotation("r3", "Y", Trigger::Manual, &d, 3)
            .unwrap()
            .is_ok()
    );
}

/// The alert rules with a leader and a follower scraped, and across a failover
/// (`alerts/ha.rules.test.yml`, promtool).
#[test]
fn alert_rules_stay_correct_with_several_replicas() {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "/usr/bin/promtool is missing: apt-get install --no-install-recommends prometheus"
    );
    let out = std::process::Command::new(promtool)
        .args(["test", "rules", "alerts/ha.rules.test.yml"])
        .current_dir(crate::support::root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
}

/// A GET that tolerates a replica switching from follower to leader (its listener closes and
/// opens again): `None` when the connection fails.
async fn try_get(d: &Daemon, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(d.addr).await.ok()?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

async fn try_leads(d: &Daemon, replica: &str) -> bool {
    match try_get(d, "/metrics").await {
        Some((200, body)) => body.lines().any(|l| {
            l.starts_with("keywarden_leader{")
                && l.contains(&format!("replica=\"{replica}\""))
                && l.ends_with(" 1")
        }),
        _ => false,
    }
}

/// The index of the replica that leads, polled until one does; fails with `what` 30 s after
/// `since`.
async fn leader_among(
    replicas: &[Option<Daemon>],
    names: &[&str],
    since: Instant,
    what: &str,
) -> usize {
    loop {
        let mut found = None;
        for (i, r) in replicas.iter().enumerate() {
            if let Some(d) = r
                && try_leads(d, names[i]).await
            {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            return i;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue #18 point 4: 20 kill -9 of whichever replica leads, at random moments, among three
/// replicas, while reminders are due (FIFO topic) and an incident is open: every reminder is
/// delivered exactly once and the incident resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_leader_kills_deliver_each_reminder_once_and_resolve_the_incident() {
    use crate::reminders::Wire;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    crate::support::create_aged_secret(&moto, &client, "svc/a", 80).await;
    crate::support::create_aged_secret(&moto, &client, "svc/b", 95).await;
    // Reminders that come due while the leaders are being killed: with a 90d policy and a 14d
    // lead, a reminder is due 76 days after the last rotation; these cross that point 10, 30,
    // 50, 70 and 90 seconds into the run.
    const DURING: [i64; 5] = [10, 30, 50, 70, 90];
    for (k, t) in DURING.iter().enumerate() {
        let id = format!("svc/d{k}");
        crate::support::create_aged_secret(&moto, &client, &id, 0).await;
        let created = crate::support::now() - 76 * 86_400 + t;
        moto.set_dates(serde_json::json!({
            "secret_id": id, "created": created, "current_version_created": created,
        }))
        .await;
    }
    client
        .create_secret()
        .name("svc/c")
        .secret_string("c0")
        .send()
        .await
        .unwrap();
    let wire = Wire::new(&moto);
    let reminders = wire.create_topic("ha-reminders.fifo").await;
    let queue = wire.create_queue("ha-reminders-q.fifo").await;
    wire.subscribe(&reminders, "ha-reminders-q.fifo").await;
    let security = wire.create_topic("ha-security").await;
    let state = Backend::Dynamo.state_section(&moto);
    let config = |replica: &str| {
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
             [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
             [poll]\nmetadata_every = \"1s\"\n\
             [reminders]\nlead = [\"14d\"]\nsns_topic_arn = \"{reminders}\"\n\
             [incident]\nsns_topic_arn = \"{security}\"\nreport_dir = \"{{dir}}/reports\"\n\
             {state}\
             [ha]\nenabled = true\nlease = \"{}s\"\nreplica = \"{replica}\"\n\n\
             [[secret]]\nname = \"A\"\nid = \"svc/a\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"B\"\nid = \"svc/b\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"D0\"\nid = \"svc/d0\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"D1\"\nid = \"svc/d1\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"D2\"\nid = \"svc/d2\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"D3\"\nid = \"svc/d3\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"D4\"\nid = \"svc/d4\"\nrotate_every = \"90d\"\n\n\
             [[secret]]\nname = \"C\"\nid = \"svc/c\"\n\
             rotation = {{ strategy = \"random\", grace = \"0s\" }}\n\
             hooks = [{{ on = \"finish\", command = [\"sleep\", \"1\"] }}]\n",
            moto.endpoint(),
            LEASE.as_secs()
        )
    };
    let names = ["a", "b", "c"];
    let mut replicas: Vec<Option<Daemon>> = Vec::new();
    for n in names {
        replicas.push(Some(start(&config(n)).await));
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ (crate::support::now() as u64);
    let mut incident: Option<String> = None;
    let mut failovers = Vec::new();
    let mut leader = leader_among(&replicas, &names, Instant::now(), "no first leader").await;
    for round in 0..20 {
        if incident.is_none() {
            let d = replicas[leader].as_ref().unwrap();
            // Just took the lease: its listener may still be switching over.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (status, _, body) = crate::support::http(
                "POST",
                &d.url("/compromised/C"),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                None,
            )
            .await;
            assert_eq!(status, 202, "{body}");
            incident = Some(
                serde_json::from_str::<serde_json::Value>(&body).unwrap()["incident_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(200 + seed % 1500)).await;
        let d = replicas[leader].take().unwrap();
        let port = d.port();
        let dir = d.kill9();
        let killed = Instant::now();
        // Another replica takes over (the killed one is restarted only after that).
        let next = leader_among(
            &replicas,
            &names,
            killed,
            &format!("round {round}: no replica took over"),
        )
        .await;
        failovers.push(killed.elapsed());
        replicas[leader] = Some(
            Daemon::start_in_env(
                dir,
                port,
                &config(names[leader]),
                &[("KW_TEST_TOKEN", TOKEN)],
            )
            .await,
        );
        leader = next;
    }
    // Settle: a leader, every reminder out, the incident resolved.
    let t0 = Instant::now();
    let (leader, inc) = loop {
        let mut done = None;
        for (i, r) in replicas.iter().enumerate() {
            let d = r.as_ref().unwrap();
            if try_leads(d, names[i]).await {
                let Some((status, body)) =
                    try_get(d, &format!("/incidents/{}", incident.as_deref().unwrap())).await
                else {
                    continue;
                };
                if status == 200 {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    if v["status"] != "open" {
                        done = Some((i, v));
                    }
                }
            }
        }
        if let Some(x) = done {
            break x;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the incident did not end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(inc["status"], "resolved", "{inc:#}");
    let d = replicas[leader].as_ref().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = wire.drain(&queue).await;
    let t0 = Instant::now();
    let expected = 2 + DURING.len();
    while got.len() < expected && t0.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        got.extend(wire.drain(&queue).await);
    }
    let mut per_secret: std::collections::BTreeMap<String, usize> = Default::default();
    for m in &got {
        *per_secret
            .entry(m.attributes["secret"].clone())
            .or_default() += 1;
    }
    println!("20 leader kills: failovers {failovers:.1?}; reminders delivered {per_secret:?}");
    let mut want: std::collections::BTreeMap<String, usize> =
        [("A".to_string(), 1), ("B".to_string(), 1)].into();
    want.extend((0..DURING.len()).map(|k| (format!("D{k}"), 1)));
    // A few more seconds: a duplicate would arrive now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for m in wire.drain(&queue).await {
        *per_secret
            .entry(m.attributes["secret"].clone())
            .or_default() += 1;
    }
    assert_eq!(per_secret, want, "each reminder exactly once: {got:#?}");
    let rows = crate::support::ledger_rows(d.dir.path());
    assert!(
        rows.iter().all(|(_, state, _)| state == "sent"),
        "every ledger row sent: {rows:?}"
    );
}
