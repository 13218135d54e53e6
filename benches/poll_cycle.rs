//! One metadata poll cycle's processing for 10,000 secrets: paging, matching the inventory,
//! evaluating every status, publishing to the view and the metrics. The AWS side is an in-memory
//! implementation of keywarden's own trait that hands out prebuilt pages, so only keywarden's
//! work is measured (the network cost is 100 ListSecrets calls per cycle, measured separately
//! against moto by the integration tests).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keywarden::aws::{AwsError, SecretMeta, SecretPage, SecretsMetadataApi, VersionMeta};
use keywarden::domain::view::SharedView;
use keywarden::inventory::poller::MetadataPoller;
use keywarden::telemetry::Metrics;

#[path = "common.rs"]
mod common;

/// Prebuilt ListSecrets pages of 100.
struct Pages(Vec<SecretMeta>);

impl SecretsMetadataApi for Pages {
    async fn list_secrets_page(&self, next_token: Option<String>) -> Result<SecretPage, AwsError> {
        let start: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let end = (start + 100).min(self.0.len());
        Ok(SecretPage {
            secrets: self.0[start..end].to_vec(),
            next_token: (end < self.0.len()).then(|| end.to_string()),
        })
    }

    async fn list_secret_versions(&self, secret_id: &str) -> Result<Vec<VersionMeta>, AwsError> {
        let meta = self.0.iter().find(|m| m.arn == secret_id);
        Ok(meta
            .and_then(|m| m.versions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, stages)| VersionMeta {
                id,
                stages,
                created: common::now().checked_sub_signed(chrono::Duration::days(10)),
            })
            .collect())
    }
}

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
