//! The organization-scale fleet of the benchmarks (issue #17): 50 accounts x 2 regions of 1,000
//! secrets each by default, either discovered or in the inventory, wired as the daemon wires it.
//! Shared by `org_scale.rs` (time) and `org_memory.rs` (heap); each includes `pages.rs` as
//! `pages` and `common.rs` as `common` next to this module.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use keywarden::config::{self, Config};
use keywarden::domain::targets::{TargetId, Targets};
use keywarden::domain::view::SharedView;
use keywarden::inventory::poller::{MetadataPoller, PollTarget};
use keywarden::telemetry::Metrics;

pub use super::common::now;

pub const HOME_ACCOUNT: &str = "123456789012";
pub const HOME_REGION: &str = "us-east-1";
pub const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "ap-southeast-2", "sa-east-1"];

pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// The shape of the fleet.
#[derive(Clone, Copy)]
pub struct Shape {
    pub accounts: usize,
    pub regions: usize,
    pub per_target: usize,
}

impl Shape {
    pub fn from_env() -> Shape {
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

    pub fn account(&self, a: usize) -> String {
        format!("{:012}", 210_000_000_000u64 + a as u64)
    }

    /// (account, region) of every member target, in order.
    pub fn places(&self) -> Vec<(String, &'static str)> {
        (0..self.accounts)
            .flat_map(|a| (0..self.regions).map(move |r| (a, r)))
            .map(|(a, r)| (self.account(a), REGIONS[r]))
            .collect()
    }

    pub fn total(&self) -> usize {
        self.accounts * self.regions * self.per_target
    }
}

use super::common::listed_in as listed;
use super::pages::Pages;

/// The configuration: the member accounts, and either discovery of every `fleet/` secret or an
/// inventory entry (with policy, severity, impact and consumers) for each secret.
pub fn config(shape: Shape, inventory: bool) -> Config {
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
/// What ListSecrets returns in each member target, in the order of [`Shape::places`] (the
/// "AWS side": built before keywarden's own structures so that it can be told apart).
pub fn listings(shape: Shape) -> Vec<Pages> {
    shape
        .places()
        .iter()
        .map(|(account, region)| Pages(listed(account, region, shape.per_target)))
        .collect()
}

/// The poller of the home target (no secret) and every member target, wired as the daemon
/// does, before its first cycle.
pub fn wire(
    shape: Shape,
    config: Config,
    listings: Vec<Pages>,
) -> (MetadataPoller<Pages>, Arc<Metrics>, SharedView) {
    let config = Arc::new(config);
    let targets = Arc::new(Targets::new(HOME_REGION));
    targets.set_home_account(HOME_ACCOUNT);
    let metrics = Arc::new(Metrics::new());
    metrics.set_targets(
        targets.clone(),
        keywarden::daemon::place_inventory(&config, &targets),
    );
    let mut polled = vec![PollTarget::new(TargetId::HOME, Pages(Vec::new()))];
    for ((account, region), pages) in shape.places().into_iter().zip(listings) {
        let id = targets
            .intern(&account, region)
            .expect("room for the targets");
        polled.push(PollTarget::new(id, pages));
    }
    let view = SharedView::with_targets(targets);
    let poller = MetadataPoller::with_targets(polled, config, view.clone(), metrics.clone());
    (poller, metrics, view)
}

/// [`wire`], after its first cycle (which looks every version up).
pub fn poller(
    rt: &tokio::runtime::Runtime,
    shape: Shape,
    inventory: bool,
) -> (MetadataPoller<Pages>, Arc<Metrics>) {
    let started = Instant::now();
    let config = config(shape, inventory);
    let parsed = started.elapsed();
    let (mut poller, metrics, _) = wire(shape, config, listings(shape));
    let report = rt.block_on(poller.poll_once(now())).expect("first cycle");
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
