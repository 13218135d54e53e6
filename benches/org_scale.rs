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

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "common.rs"]
mod common;

#[path = "pages.rs"]
mod pages;

#[path = "org_fleet.rs"]
mod org_fleet;
use org_fleet::{Shape, now, poller};

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
            let report = rt.block_on(poller.poll_once(now())).expect("cycle");
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
        sent(plain),
        sent(gz)
    );
    g.bench_function("refresh_after_change", |b| b.iter(|| metrics.refresh()));
    g.bench_function("scrape_prometheus_openmetrics_gzip", |b| {
        b.iter(|| black_box(sent(metrics.scrape(true, true))))
    });
    g.bench_function("scrape_openmetrics_plain", |b| {
        b.iter(|| black_box(sent(metrics.scrape(true, false))))
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

/// Bytes sent for one answer: every chunk produced, as the server's body does.
fn sent(e: keywarden::telemetry::Exposition) -> usize {
    e.into_chunks().map(|c| c.len()).sum()
}
