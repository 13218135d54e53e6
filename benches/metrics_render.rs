//! `/metrics` for a fleet of 10,000 inventory secrets: a scrape, the re-rendering after a change,
//! and the per-cycle metric update.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keywarden::inventory;
use keywarden::telemetry::Metrics;

#[path = "common.rs"]
mod common;

fn bench(c: &mut Criterion) {
    let n = common::n();
    let config = common::config(n);
    let listed = common::listed(n);
    let statuses: Vec<_> = inventory::watch_list(&config, &listed)
        .iter()
        .map(|(w, m)| inventory::evaluate(w, *m, None, common::now()))
        .collect();
    let metrics = Metrics::new();
    metrics.set_leads(vec!["14d".into()]);
    metrics.sync_secrets(&statuses);
    let bytes = metrics.render().len();
    // Every inventory secret is in the exposition, the last one too.
    let last = format!("secret=\"SECRET_{:05}\"", n - 1);
    assert!(metrics.render().contains(&last), "{last} is not rendered");
    let gz = metrics.scrape(true, true);
    eprintln!(
        "exposition for {} secrets: {} bytes, {} bytes gzip-compressed",
        n,
        bytes,
        sent(gz)
    );

    let mut g = c.benchmark_group("metrics_10k_secrets");
    g.sample_size(30);
    // A scrape: the per-secret series come from the cache kept fresh off the scrape path.
    metrics.refresh();
    g.bench_function("scrape_prometheus_openmetrics_gzip", |b| {
        b.iter(|| black_box(sent(metrics.scrape(true, true))))
    });
    g.bench_function("scrape_openmetrics_plain", |b| {
        b.iter(|| black_box(sent(metrics.scrape(true, false))))
    });
    g.bench_function("scrape_text_0_0_4_plain", |b| {
        b.iter(|| black_box(sent(metrics.scrape(false, false))))
    });
    g.bench_function("render_as_one_string", |b| {
        b.iter(|| black_box(metrics.render()))
    });
    // What the refresher pays after a cycle that changed something.
    g.bench_function("refresh_after_change", |b| b.iter(|| metrics.refresh()));
    g.bench_function("sync_secrets_steady_state", |b| {
        b.iter(|| metrics.sync_secrets(black_box(&statuses)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// Bytes sent for one answer: every chunk produced, as the server's body does.
fn sent(e: keywarden::telemetry::Exposition) -> usize {
    e.into_chunks().map(|c| c.len()).sum()
}
