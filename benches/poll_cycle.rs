//! One metadata poll cycle's processing for 10,000 secrets: paging, matching the inventory,
//! evaluating every status, publishing to the view and the metrics. The AWS side is an in-memory
//! implementation of keywarden's own trait that hands out prebuilt pages, so only keywarden's
//! work is measured (the network cost is 100 ListSecrets calls per cycle, measured separately
//! against moto by the integration tests).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keywarden::domain::view::SharedView;
use keywarden::inventory::poller::MetadataPoller;
use keywarden::telemetry::Metrics;

#[path = "common.rs"]
mod common;

#[path = "pages.rs"]
mod pages;
use pages::Pages;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let n = common::n();
    let config = Arc::new(common::config(n));
    let metrics = Arc::new(Metrics::new());
    let mut poller = MetadataPoller::new(
        Pages(common::listed(n)),
        config,
        SharedView::default(),
        metrics,
    );
    // The first cycle looks every version up; steady state is what the daemon does every minute.
    let report = rt
        .block_on(poller.poll_once(common::now()))
        .expect("first cycle");
    assert_eq!(report.version_lookups, n);
    let mut g = c.benchmark_group("metadata_cycle_10k_secrets");
    g.sample_size(20);
    g.bench_function("steady_state", |b| {
        b.iter(|| {
            let report = rt.block_on(poller.poll_once(common::now())).expect("cycle");
            assert_eq!(report.version_lookups, 0);
            assert_eq!(report.pages, n.div_ceil(100));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
