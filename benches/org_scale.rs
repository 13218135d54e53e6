//! Organization scale (issue #17, point 6): one metadata poll cycle's processing and the encoding
//! of `/metrics` for 100,000 secrets in 50 accounts x 2 regions (100 member targets of 1,000
//! secrets each, plus the daemon's own account and region with none), as the daemon wires it:
//! `MetadataPoller::with_targets`, every target interned in the view's `Targets` table, the
//! metrics labelling per-secret series from the same table.
//!
//! The AWS side is an in-memory implementation of keywarden's own `SecretsMetadataApi` per
//! target that hands out prebuilt ListSecrets pages of 100, so only keywarden's work is measured
//! (the AWS calls of a cycle are counted against moto by `benches/org_scale.sh`).
//!
//! Two fleets: every secret *discovered* (`[discovery] name_prefixes`, keyed
//! `account:region:name`), and every secret in the *inventory* (`[[secret]]` with `account` and
//! `region`). Sizes: `KEYWARDEN_BENCH_ACCOUNTS` (default 50), `KEYWARDEN_BENCH_REGIONS` (2),
//! `KEYWARDEN_BENCH_PER_TARGET` (1,000; without it, `KEYWARDEN_BENCH_SECRETS` spread over the
//! targets, as `scripts/test` sets it); `KEYWARDEN_BENCH_FLEETS=discovered|inventory|both`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use keywarden::aws::SecretMeta;
use keywarden::config::{self, Config};
use keywarden::domain::targets::{TargetId, Targets};
use keywarden::domain::view::SharedView;
use keywarden::inventory::poller::{MetadataPoller, PollTarget};
use keywarden::telemetry::Metrics;

/// The benchmarks' fixed "now" (as in `common.rs`, whose fleet helpers this one does not use).
mod common {
    use chrono::{DateTime, Utc};

    pub fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }
}

const HOME_ACCOUNT: &str = "123456789012";
const HOME_REGION: &str = "us-east-1";
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "ap-southeast-2", "sa-east-1"];

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// The shape of the fleet.
#[derive(Clone, Copy)]
struct Shape {
    accounts: usize,
    regions: usize,
    per_target: usize,
}

impl Shape {
    fn from_env() -> Shape {
        let regions = env_usize("KEYWARDEN_BENCH_REGIONS", 2);
        assert!(
            (1..=REGIONS.len()).contains(&regions),
            "KEYWARDEN_BENCH_REGIONS: 1 to {}",
            REGIONS.len()
        );
        let accounts = env_usize("KEYWARDEN_BENCH_ACCOUNTS", 50);
        // `scripts/test` sets KEYWARDEN_BENCH_SECRETS (1,000) for every benchmark: spread them.
        let per_target = match std::env::var("KEYWARDEN_BENCH_SECRETS") {
            Ok(_) if std::env::var("KEYWARDEN_BENCH_PER_TARGET").is_err() => {
                (env_usize("KEYWARDEN_BENCH_SECRETS", 0) / (accounts * regions).max(1)).max(1)
            }
            _ => env_usize("KEYWARDEN_BENCH_PER_TARGET", 1_000),
        };
        Shape {
            accounts,
            regions,
            per_target,
        }
    }

    fn account(&self, a: usize) -> String {
        format!("{:012}", 210_000_000_000u64 + a as u64)
    }

    /// (account, region) of every member target, in order.
    fn places(&self) -> Vec<(String, &'static str)> {
        (0..self.accounts)
            .flat_map(|a| (0..self.regions).map(move |r| (a, r)))
            .map(|(a, r)| (self.account(a), REGIONS[r]))
            .collect()
    }

    fn total(&self) -> usize {
        self.accounts * self.regions * self.per_target
    }
}

#[path = "pages.rs"]
mod pages;
use pages::Pages;

/// What ListSecrets returns in one account and region: `n` secrets with two versions each.
fn listed(account: &str, region: &str, n: usize) -> Vec<SecretMeta> {
    (0..n)
        .map(|i| SecretMeta {
            arn: format!(
                "arn:aws:secretsmanager:{region}:{account}:secret:fleet/service-{i:05}-AbCdEf"
            ),
            name: format!("fleet/service-{i:05}"),
            created: chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0),
            last_rotated: None,
            last_accessed: chrono::DateTime::from_timestamp(1_799_900_000, 0),
            deleted: None,
            rotation_enabled: i % 10 == 0,
            automatically_after_days: (i % 10 == 0).then_some(30),
            schedule_expression: None,
            next_rotation: None,
            versions: Some(vec![
                (format!("v-{i}-b"), vec!["AWSCURRENT".to_string()]),
                (format!("v-{i}-a"), vec!["AWSPREVIOUS".to_string()]),
            ]),
        })
        .collect()
}

/// The configuration: the member accounts, and either discovery of every `fleet/` secret or an
/// inventory entry (with policy, severity, impact and consumers) for each secret.
fn config(shape: Shape, inventory: bool) -> Config {
    let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
    let regions: Vec<String> = REGIONS[..shape.regions]
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect();
    for a in 0..shape.accounts {
        let id = shape.account(a);
        text.push_str(&format!(
            "[[account]]\nid = \"{id}\"\nrole_arn = \"arn:aws:iam::{id}:role/keywarden-read\"\nregions = [{}]\n",
            regions.join(", ")
        ));
    }
    if inventory {
        for (t, (account, region)) in shape.places().iter().enumerate() {
            for i in 0..shape.per_target {
                text.push_str(&format!(
                    "[[secret]]\nname = \"SECRET_{t:03}_{i:05}\"\nid = \"fleet/service-{i:05}\"\n\
                     account = \"{account}\"\nregion = \"{region}\"\nrotate_every = \"90d\"\n\
                     severity = \"high\"\nimpact = \"Service {i} credentials\"\n\
                     consumers = [\"arn:aws:sts::{account}:assumed-role/service-{i}-*/*\"]\n"
                ));
            }
        }
    } else {
        text.push_str(
            "[discovery]\nname_prefixes = [\"fleet/\"]\ndefault_rotate_every = \"90d\"\n",
        );
    }
    config::parse(&text, Path::new("org-scale.toml")).expect("bench config is valid")
}

/// A poller of the home target (no secret) and every member target, wired as the daemon does,
/// after its first cycle (which looks every version up).
fn poller(
    rt: &tokio::runtime::Runtime,
    shape: Shape,
    inventory: bool,
) -> (MetadataPoller<Pages>, Arc<Metrics>) {
    let started = Instant::now();
    let config = Arc::new(config(shape, inventory));
    let parsed = started.elapsed();
    let targets = Arc::new(Targets::new(HOME_REGION));
    targets.set_home_account(HOME_ACCOUNT);
    let metrics = Arc::new(Metrics::new());
    metrics.set_targets(
        targets.clone(),
        keywarden::daemon::place_inventory(&config, &targets),
    );
    let mut polled = vec![PollTarget::new(TargetId::HOME, Pages(Vec::new()))];
    for (account, region) in shape.places() {
        let id = targets
            .intern(&account, region)
            .expect("room for the targets");
        polled.push(PollTarget::new(
            id,
            Pages(listed(&account, region, shape.per_target)),
        ));
    }
    let view = SharedView::with_targets(targets);
    let mut poller = MetadataPoller::with_targets(polled, config, view, metrics.clone());
    let report = rt
        .block_on(poller.poll_once(common::now()))
        .expect("first cycle");
    assert_eq!(report.version_lookups, shape.total());
    assert_eq!(report.watched, shape.total());
    assert_eq!(report.targets, shape.accounts * shape.regions + 1);
    eprintln!(
        "{} fleet: {} secrets in {} targets; config parsed in {:.2?}, first cycle done {:.2?} after start",
        if inventory { "inventory" } else { "discovered" },
        shape.total(),
        report.targets,
        parsed,
        started.elapsed()
    );
    (poller, metrics)
}

fn bench_fleet(c: &mut Criterion, rt: &tokio::runtime::Runtime, shape: Shape, inventory: bool) {
    let (mut poller, metrics) = poller(rt, shape, inventory);
    let n = shape.total();
    // The home target answers one empty page.
    let pages = shape.accounts * shape.regions * shape.per_target.div_ceil(100) + 1;
    let fleet = if inventory { "inventory" } else { "discovered" };
    let mut g = c.benchmark_group(format!("org_scale_{n}_secrets_{fleet}"));
    g.sample_size(10);
    g.bench_function("metadata_cycle_steady_state", |b| {
        b.iter(|| {
            let report = rt.block_on(poller.poll_once(common::now())).expect("cycle");
            assert_eq!(report.version_lookups, 0);
            assert_eq!(report.pages, pages);
        })
    });
    // The encoding of the per-secret series: what the background refresher pays after a cycle
    // that changed a value (a scrape then sends the cached bytes).
    metrics.refresh();
    let plain = metrics.scrape(true, false);
    let gz = metrics.scrape(true, true);
    let last = format!(
        "secret=\"{}\"",
        if inventory {
            format!(
                "SECRET_{:03}_{:05}",
                shape.accounts * shape.regions - 1,
                shape.per_target - 1
            )
        } else {
            format!("fleet/service-{:05}", shape.per_target - 1)
        }
    );
    assert!(metrics.render().contains(&last), "{last} is not rendered");
    eprintln!(
        "{fleet} exposition: {} bytes, {} bytes gzip-compressed",
        plain.fleet.len() + plain.process.len(),
        gz.fleet.len() + gz.process.len()
    );
    g.bench_function("refresh_after_change", |b| b.iter(|| metrics.refresh()));
    g.bench_function("scrape_prometheus_openmetrics_gzip", |b| {
        b.iter(|| black_box(metrics.scrape(true, true)))
    });
    g.bench_function("scrape_openmetrics_plain", |b| {
        b.iter(|| black_box(metrics.scrape(true, false)))
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let shape = Shape::from_env();
    let fleets = std::env::var("KEYWARDEN_BENCH_FLEETS").unwrap_or_else(|_| "both".into());
    if fleets == "discovered" || fleets == "both" {
        bench_fleet(c, &rt, shape, false);
    }
    if fleets == "inventory" || fleets == "both" {
        bench_fleet(c, &rt, shape, true);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
