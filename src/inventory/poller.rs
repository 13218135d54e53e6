//! The metadata poller: ListSecrets (one page per 100 secrets) every `poll.metadata_every`,
//! ListSecretVersionIds only for a secret whose AWSCURRENT version id changed since the last
//! cycle, then the view and the per-secret metrics are brought up to date.
//!
//! A failed cycle changes nothing in the view: the last values stay exported, the error is
//! counted by kind, and readiness turns false after three intervals without success.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::aws::{AwsError, SecretMeta, SecretsMetadataApi};
use crate::config::Config;
use crate::domain::view::{SecretStatus, SharedView};
use crate::inventory::{self, Watched};
use crate::telemetry::Metrics;

/// Label of this poller's metrics.
pub const SOURCE: &str = "metadata";

/// ListSecretVersionIds calls in flight at once (first cycle, or many rotations at once).
const VERSION_LOOKUPS_IN_FLIGHT: usize = 8;

/// Creation time of the AWSCURRENT version, remembered per secret ARN.
#[derive(Debug, Clone)]
struct CurrentVersion {
    /// The version id it was fetched for.
    id: String,
    /// Its CreatedDate.
    created: Option<DateTime<Utc>>,
}

/// The result of one ListSecretVersionIds lookup: ARN, AWSCURRENT version id, its creation time.
type VersionLookup = (String, String, Result<Option<DateTime<Utc>>, AwsError>);

/// What one cycle did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// ListSecrets pages read.
    pub pages: usize,
    /// Secrets listed by AWS.
    pub listed: usize,
    /// Secrets watched (inventory plus discovered).
    pub watched: usize,
    /// ListSecretVersionIds calls made.
    pub version_lookups: usize,
}

/// The poller and its memory between cycles.
pub struct MetadataPoller<A> {
    /// The AWS boundary.
    api: A,
    /// Configuration (inventory and discovery).
    config: Arc<Config>,
    /// Where statuses are published.
    view: SharedView,
    /// Where they are exported.
    metrics: Arc<Metrics>,
    /// AWSCURRENT creation times by ARN.
    versions: HashMap<String, CurrentVersion>,
    /// How many secrets the last listing had (to size the next one at once).
    last_listed: usize,
}

impl<A: SecretsMetadataApi> MetadataPoller<A> {
    /// A poller with an empty memory.
    pub fn new(api: A, config: Arc<Config>, view: SharedView, metrics: Arc<Metrics>) -> Self {
        MetadataPoller {
            api,
            config,
            view,
            metrics,
            versions: HashMap::new(),
            last_listed: 0,
        }
    }

    /// Reads every ListSecrets page.
    async fn list_all(&self) -> Result<(Vec<SecretMeta>, usize), AwsError> {
        let mut all = Vec::with_capacity(self.last_listed + 100);
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = self.api.list_secrets_page(token).await?;
            pages += 1;
            all.extend(page.secrets);
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok((all, pages))
    }

    /// Runs one cycle and publishes its statuses to the view and the metrics. When ListSecrets
    /// fails nothing is published; when only some version lookups fail, those secrets keep
    /// their previous status, the rest is published, and the first error is returned.
    pub async fn poll_once(&mut self, now: DateTime<Utc>) -> Result<CycleReport, AwsError> {
        let (report, statuses, first_error) = self.cycle(now).await?;
        self.publish(statuses).await;
        first_error.map_or(Ok(report), Err)
    }

    /// Runs one cycle and returns its statuses without publishing them (`keywarden status`).
    pub async fn statuses_once(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(CycleReport, Vec<SecretStatus>), AwsError> {
        let (report, statuses, first_error) = self.cycle(now).await?;
        first_error.map_or(Ok((report, statuses)), Err)
    }

    async fn cycle(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(CycleReport, Vec<SecretStatus>, Option<AwsError>), AwsError> {
        let (listed, pages) = self.list_all().await?;
        self.last_listed = listed.len();
        let watch = inventory::watch_list(&self.config, &listed);
        let mut report = CycleReport {
            pages,
            listed: listed.len(),
            watched: watch.len(),
            version_lookups: 0,
        };
        // Version lookups only for secrets whose AWSCURRENT id changed, a few at a time.
        let stale: Vec<(String, String)> = watch
            .iter()
            .filter_map(|(_, meta)| {
                let m = (*meta)?;
                let current = inventory::current_version_id(m)?;
                match self.versions.get(&m.arn) {
                    Some(known) if known.id == current => None,
                    _ => Some((m.arn.clone(), current.to_string())),
                }
            })
            .collect();
        report.version_lookups = stale.len();
        let api = &self.api;
        let fetched: Vec<VersionLookup> = stream::iter(stale)
            .map(|(arn, current)| async move {
                let created = api.list_secret_versions(&arn).await.map(|versions| {
                    versions
                        .into_iter()
                        .find(|v| v.id == current)
                        .and_then(|v| v.created)
                });
                (arn, current, created)
            })
            .buffer_unordered(VERSION_LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut failed: HashMap<String, AwsError> = HashMap::new();
        for (arn, id, created) in fetched {
            match created {
                Ok(created) => {
                    debug!(arn = %arn, version = %id, "AWSCURRENT version changed; creation time read.");
                    self.versions.insert(arn, CurrentVersion { id, created });
                }
                Err(e) => {
                    failed.insert(arn, e);
                }
            }
        }

        let mut statuses = Vec::with_capacity(watch.len());
        let mut first_error = None;
        let mut live_arns: HashSet<&str> = HashSet::with_capacity(watch.len());
        for (w, meta) in &watch {
            let mut created = None;
            if let Some(m) = meta {
                live_arns.insert(m.arn.as_str());
                if let Some(e) = failed.remove(&m.arn) {
                    warn!(secret = %w.name, error = %e, "Cannot read the versions of a secret; keeping its previous status.");
                    first_error.get_or_insert(e);
                    if let Some(previous) = self.previous_status(w) {
                        statuses.push(previous);
                        continue;
                    }
                } else {
                    created = self.versions.get(&m.arn).and_then(|v| v.created);
                }
            }
            statuses.push(inventory::evaluate(w, *meta, created, now));
        }
        self.versions
            .retain(|arn, _| live_arns.contains(arn.as_str()));
        Ok((report, statuses, first_error))
    }

    fn previous_status(&self, w: &Watched) -> Option<SecretStatus> {
        self.view.read().secrets.get(&w.name).cloned()
    }

    /// Moves the statuses into the view (no copy: with 10,000 secrets a copy is megabytes)
    /// after the metrics took what they export.
    async fn publish(&self, statuses: Vec<SecretStatus>) {
        let changed = self.metrics.sync_secrets(&statuses);
        let secrets = statuses.into_iter().map(|s| (s.name.clone(), s)).collect();
        // The write guard is a temporary: the previous map is freed after the lock is released.
        let previous = std::mem::replace(&mut self.view.write().secrets, secrets);
        drop(previous);
        let metrics = self.metrics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if changed {
                // Render now, off the scrape path, so the next scrape is served from the cache.
                metrics.refresh();
            }
            // A cycle allocates and frees megabytes (the listing, the statuses): give them
            // back, off the async workers (malloc_trim walks the whole heap).
            crate::daemon::memory::trim();
        })
        .await;
    }

    /// Polls until `shutdown` turns true.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let every = self.config.poll.metadata_every;
        let (metrics, view) = (self.metrics.clone(), self.view.clone());
        crate::daemon::periodic::run_periodically(
            SOURCE, every, &metrics, &view, &shutdown, &mut self,
        )
        .await;
        info!("Metadata poller stopped.");
    }
}

impl<A: SecretsMetadataApi> crate::daemon::periodic::Cycle for MetadataPoller<A> {
    async fn cycle(&mut self, started: Instant) -> Option<&'static str> {
        match self.poll_once(Utc::now()).await {
            Ok(report) => {
                debug!(
                    pages = report.pages,
                    listed = report.listed,
                    watched = report.watched,
                    version_lookups = report.version_lookups,
                    seconds = started.elapsed().as_secs_f64(),
                    "Metadata poll done."
                );
                None
            }
            Err(e) => {
                warn!(error = %e, kind = e.kind.as_str(), "Metadata poll failed; last values stay exported.");
                Some(e.kind.as_str())
            }
        }
    }
}
