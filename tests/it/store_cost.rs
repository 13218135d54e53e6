//! DynamoDB request counts of the state store (issue #18, point 5): a steady metadata cycle
//! writes nothing, and an access slice of up to 99 items (its id items, readers, checkpoint)
//! is one write request. The
//! figures are printed (`--nocapture`) and written down in docs/performance.md.

use std::collections::BTreeMap;

use keywarden::access::store::{AccessState, SliceCommit, StoredReader};

use crate::support::{Backend, Daemon, Moto, Scrape, create_aged_secret, dynamo_table, uuid_like};

/// DynamoDB requests by operation in a scrape.
fn dynamo_requests(s: &Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for op in [
        "GetItem",
        "Query",
        "BatchGetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
        "BatchWriteItem",
    ] {
        let n = s.sum(
            "keywarden_aws_requests_total",
            &[("service", "dynamodb"), ("operation", op)],
        );
        if n > 0.0 {
            out.insert(op.to_string(), n);
        }
    }
    out
}

fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_metadata_cycle_writes_nothing_to_dynamodb() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let mut secrets = String::new();
    for i in 0..5 {
        create_aged_secret(&moto, &client, &format!("cost/s{i}"), 10).await;
        secrets.push_str(&format!(
            "[[secret]]\nname = \"S{i}\"\nid = \"cost/s{i}\"\nrotate_every = \"90d\"\n\
             rotation = {{ strategy = \"random\" }}\n\n"
        ));
    }
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [reminders]\nlead = [\"14d\"]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:cost\"\n\
         [incident]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:cost\"\nreport_dir = \"{{dir}}/reports\"\n\
         {}\n{secrets}",
        moto.endpoint(),
        Backend::Dynamo.state_section(&moto)
    );
    let d = Daemon::start_in_env(
        tempfile::tempdir().unwrap(),
        crate::support::free_port(),
        &config,
        &[("KW_TEST_TOKEN", "cost-admin-token-0123456789abcdef0123")],
    )
    .await;
    // Past the start (resume, first polls), then a window of steady cycles.
    d.let_polls_pass(3.0).await;
    let s0 = d.scrape().await;
    let (c0, r0) = (Daemon::metadata_cycles(&s0), dynamo_requests(&s0));
    let started = std::time::Instant::now();
    d.let_polls_pass(20.0).await;
    let s1 = d.scrape().await;
    let (c1, r1) = (Daemon::metadata_cycles(&s1), dynamo_requests(&s1));
    let cycles = c1 - c0;
    let window = started.elapsed();
    let used = delta(&r0, &r1);
    let writes: f64 = WRITES.iter().filter_map(|w| used.get(*w)).sum::<f64>() + 0.0;
    let reads: f64 = used.values().sum::<f64>() - writes;
    println!(
        "steady state on DynamoDB: {cycles} metadata cycles in {window:.1?}: {used:?} \
         ({:.2} reads and {writes} writes per cycle)",
        reads / cycles
    );
    assert!(cycles >= 20.0, "{cycles} cycles");
    assert_eq!(writes, 0.0, "a steady cycle writes nothing: {used:?}");
    // The reminder task reads the pending markers each time it wakes (an empty Query, about
    // twice a cycle); the redrives read the active markers every 30 s. Measured 2.0 alone;
    // a loaded machine adds wake-ups.
    assert!(
        reads / cycles <= 3.0,
        "{:.2} reads per cycle: {used:?}",
        reads / cycles
    );
}

#[tokio::test]
async fn an_access_slice_is_one_write_request() {
    let moto = Moto::start();
    let name = format!("kw-cost-{}", &uuid_like()[..8]);
    let t = dynamo_table(&moto.endpoint(), &name);
    assert!(t.create_table().expect("create the table"));
    let now_ms = crate::support::now() * 1000;
    let mut figures = Vec::new();
    for (events, readers) in [
        (0usize, 0usize),
        (25, 1),
        (1_000, 20),
        (10_000, 96),
        (10_000, 300),
    ] {
        let ids: Vec<String> = (0..events)
            .map(|i| format!("evt-{events}-{readers}-{i:06}"))
            .collect();
        let new_ids: Vec<(&str, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), now_ms - i as i64))
            .collect();
        let rs: Vec<StoredReader> = (0..readers)
            .map(|i| StoredReader {
                secret: "S".into(),
                principal: format!("arn:aws:iam::123456789012:user/u{i}"),
                first_seen_ms: now_ms - 10_000,
                last_seen_ms: now_ms,
                reads: 3,
            })
            .collect();
        let before = t.requests();
        t.commit_slice(
            &SliceCommit {
                log_group: "/g",
                new_ids: &new_ids,
                readers: &rs,
                end_ms: now_ms,
                seen_horizon_ms: now_ms - 30 * 60_000,
                reader_horizon_ms: now_ms - 14 * 86_400_000,
            },
            &|| {},
        )
        .expect("commit the slice");
        let after = t.requests();
        let writes = after.writes - before.writes;
        figures.push((events, readers, writes, after.reads - before.reads));
        // Items: the ids packed 4,000 to an item, one per reader, the checkpoint; one
        // TransactWriteItems per 99 of them (the 100th action is kept for the [ha] lease check).
        let items = events.div_ceil(4_000) + readers + 1;
        assert_eq!(
            writes as usize,
            items.div_ceil(99),
            "{events} events, {readers} readers"
        );
        assert!(
            writes * 25 <= events.max(25) as u64,
            "{events} events, {readers} readers: {writes} writes is more than one per 25 events"
        );
        assert_eq!(after.reads, before.reads, "a commit reads nothing");
    }
    println!(
        "access slices on DynamoDB (events, readers, write requests, read requests): {figures:?}"
    );
    let r = t.restore("/g", 0).expect("restore");
    assert_eq!(r.seen.len(), 25 + 1_000 + 2 * 10_000);
    assert_eq!(r.checkpoint_ms, Some(now_ms));
}
