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
use crate::domain::targets::TargetId;
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

/// One target's listing: its secrets and how many pages they took.
type Listing = Result<(Vec<SecretMeta>, usize), AwsError>;

/// What one cycle did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Accounts and regions read.
    pub targets: usize,
    /// Accounts and regions that could not be read (their secrets keep their last status).
    pub targets_down: usize,
    /// ListSecrets pages read.
    pub pages: usize,
    /// Secrets listed by AWS.
    pub listed: usize,
    /// Secrets watched (inventory plus discovered).
    pub watched: usize,
    /// ListSecretVersionIds calls made.
    pub version_lookups: usize,
}

/// ListSecrets listings of different accounts and regions in flight at once.
const TARGETS_IN_FLIGHT: usize = 8;

/// One account and region the poller reads, with the client that reads it.
pub struct PollTarget<A> {
    /// Its id in the view's targets table.
    pub id: TargetId,
    /// The Secrets Manager client of that account and region.
    pub api: A,
    /// Whether the last cycle could read it (`None` before the first), to log once per change.
    up: Option<bool>,
}

impl<A> PollTarget<A> {
    /// A target not read yet.
    pub fn new(id: TargetId, api: A) -> Self {
        PollTarget { id, api, up: None }
    }
}

/// Where each inventory secret lives, for one home account and set of targets.
struct Placement {
    /// The home account it was computed with.
    home: Arc<str>,
    /// The targets it was computed with.
    targets: Vec<TargetId>,
    /// By inventory position: the target (`None`: an account and region not read).
    of_specs: Vec<Option<TargetId>>,
}

/// The poller and its memory between cycles.
pub struct MetadataPoller<A> {
    /// Where the inventory secrets live (cached between cycles).
    placement: Option<Placement>,
    /// The accounts and regions it reads; the first is the home target.
    targets: Vec<PollTarget<A>>,
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
    /// A poller of the daemon's own account and region, with an empty memory.
    pub fn new(api: A, config: Arc<Config>, view: SharedView, metrics: Arc<Metrics>) -> Self {
        Self::with_targets(
            vec![PollTarget::new(TargetId::HOME, api)],
            config,
            view,
            metrics,
        )
    }

    /// A poller of several accounts and regions (the home target among them, first).
    pub fn with_targets(
        targets: Vec<PollTarget<A>>,
        config: Arc<Config>,
        view: SharedView,
        metrics: Arc<Metrics>,
    ) -> Self {
        MetadataPoller {
            placement: None,
            targets,
            config,
            view,
            metrics,
            versions: HashMap::new(),
            last_listed: 0,
        }
    }

    /// Replaces the accounts and regions read (the organization's list changed). The secrets
    /// of a removed target leave the view at the next cycle; its `keywarden_account_up` goes.
    pub fn set_targets(&mut self, targets: Vec<PollTarget<A>>) {
        let kept: HashSet<TargetId> = targets.iter().map(|t| t.id).collect();
        let registry = self.view.targets().clone();
        for gone in self.targets.iter().filter(|t| !kept.contains(&t.id)) {
            let l = registry.labels(gone.id);
            self.metrics.remove_account_up(&l.account, &l.region);
        }
        let mut previous: HashMap<TargetId, Option<bool>> =
            self.targets.iter().map(|t| (t.id, t.up)).collect();
        self.targets = targets;
        for t in &mut self.targets {
            t.up = previous.remove(&t.id).flatten();
        }
    }

    /// The metadata poll period.
    pub fn every(&self) -> std::time::Duration {
        self.config.poll.metadata_every
    }

    /// The metrics and the view it feeds.
    pub fn handles(&self) -> (Arc<Metrics>, SharedView) {
        (self.metrics.clone(), self.view.clone())
    }

    /// The ids of the targets read.
    pub fn target_ids(&self) -> Vec<TargetId> {
        self.targets.iter().map(|t| t.id).collect()
    }

    /// Reads every ListSecrets page of one target.
    async fn list_all(api: &A, size_hint: usize) -> Result<(Vec<SecretMeta>, usize), AwsError> {
        let mut all = Vec::with_capacity(size_hint + 100);
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = api.list_secrets_page(token).await?;
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
        // Every target's listing, a few at a time.
        let hint = self.last_listed / self.targets.len().max(1);
        let targets = &self.targets;
        let listings: Vec<(usize, Listing)> = stream::iter(0..targets.len())
            .map(|i| async move { (i, Self::list_all(&targets[i].api, hint).await) })
            .buffer_unordered(TARGETS_IN_FLIGHT)
            .collect()
            .await;
        let mut listed: Vec<Option<Vec<SecretMeta>>> = vec![None; self.targets.len()];
        let mut report = CycleReport {
            targets: self.targets.len(),
            ..CycleReport::default()
        };
        let mut down: Vec<(usize, AwsError)> = Vec::new();
        for (i, result) in listings {
            match result {
                Ok((secrets, pages)) => {
                    report.pages += pages;
                    report.listed += secrets.len();
                    listed[i] = Some(secrets);
                }
                Err(e) => down.push((i, e)),
            }
        }
        report.targets_down = down.len();
        if down.len() == self.targets.len() {
            // Nothing could be read: the cycle failed, nothing is published.
            self.record_health(&listed, &down);
            let (_, first) = down.swap_remove(0);
            return Err(first);
        }
        self.learn_home_account(&listed);
        self.record_health(&listed, &down);
        self.last_listed = report.listed;
        let registry = self.view.targets().clone();
        let config = self.config.clone();
        let placed: Vec<(Option<TargetId>, &crate::config::SecretSpec)> = self
            .place_specs()
            .into_iter()
            .zip(config.secrets.iter())
            .collect();
        // The inventory secrets of each target, grouped once (not a scan per target).
        let mut by_target: HashMap<TargetId, Vec<&crate::config::SecretSpec>> = HashMap::new();
        for (target, spec) in &placed {
            if let Some(t) = target {
                by_target.entry(*t).or_default().push(*spec);
            }
        }
        let mut watch: Vec<(usize, Watched, Option<&SecretMeta>)> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let Some(secrets) = listed[i].as_deref() else {
                continue;
            };
            let labels = registry.labels(t.id);
            let specs: &[&crate::config::SecretSpec] =
                by_target.get(&t.id).map_or(&[], Vec::as_slice);
            let scope = inventory::Scope {
                target: t.id,
                account: &labels.account,
                region: &labels.region,
            };
            watch.extend(
                inventory::watch_list_in(&self.config, specs, secrets, scope)
                    .into_iter()
                    .map(|(w, m)| (i, w, m)),
            );
        }
        // Inventory secrets of an account that is not read (not in the organization, or
        // suspended): watched, and missing.
        for (target, spec) in &placed {
            if target.is_some_and(|id| self.targets.iter().any(|t| t.id == id)) {
                continue;
            }
            let Some(id) = target.or_else(|| {
                let (account, region) = self.spec_place(spec)?;
                registry.intern(&account, &region)
            }) else {
                continue;
            };
            let scope = inventory::Scope {
                target: id,
                account: "",
                region: "",
            };
            watch.extend(
                inventory::watch_list_in(&self.config, &[*spec], &[], scope)
                    .into_iter()
                    .map(|(w, m)| (usize::MAX, w, m)),
            );
        }
        report.watched = watch.len();
        // Version lookups only for secrets whose AWSCURRENT id changed, a few at a time.
        let stale: Vec<(usize, String, String)> = watch
            .iter()
            .filter_map(|(i, _, meta)| {
                let m = (*meta)?;
                let current = inventory::current_version_id(m)?;
                match self.versions.get(&m.arn) {
                    Some(known) if known.id == current => None,
                    _ => Some((*i, m.arn.clone(), current.to_string())),
                }
            })
            .collect();
        report.version_lookups = stale.len();
        let targets = &self.targets;
        let fetched: Vec<VersionLookup> = stream::iter(stale)
            .map(|(i, arn, current)| async move {
                let created = match targets.get(i) {
                    Some(t) => t.api.list_secret_versions(&arn).await.map(|versions| {
                        versions
                            .into_iter()
                            .find(|v| v.id == current)
                            .and_then(|v| v.created)
                    }),
                    None => Ok(None),
                };
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
        let mut live_arns: HashSet<String> = HashSet::with_capacity(watch.len());
        for (_, w, meta) in &watch {
            let mut created = None;
            if let Some(m) = meta {
                live_arns.insert(m.arn.clone());
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
        // A target that could not be read keeps its secrets' last statuses.
        if !down.is_empty() {
            let down_ids: HashSet<TargetId> =
                down.iter().map(|(i, _)| self.targets[*i].id).collect();
            let view = self.view.read();
            for s in view
                .secrets
                .values()
                .filter(|s| down_ids.contains(&s.target))
            {
                if let Some(arn) = &s.arn {
                    live_arns.insert(arn.clone());
                }
                statuses.push(s.clone());
            }
        }
        self.versions.retain(|arn, _| live_arns.contains(arn));
        Ok((report, statuses, first_error))
    }

    /// Each inventory secret with the target it lives in (`None`: an account and region that
    /// is not read now).
    fn place_specs(&mut self) -> Vec<Option<TargetId>> {
        let registry = self.view.targets().clone();
        let home = registry.home_account();
        let ids: Vec<TargetId> = self.targets.iter().map(|t| t.id).collect();
        // Computed again only when the home account or the targets change.
        let fresh = match &self.placement {
            Some(p) => p.home != home || p.targets != ids,
            None => true,
        };
        if fresh {
            let read: HashSet<TargetId> = ids.iter().copied().collect();
            let targets = self
                .config
                .secrets
                .iter()
                .map(|spec| match self.spec_place(spec) {
                    None => Some(TargetId::HOME),
                    Some((account, region)) => registry
                        .find(&account, &region)
                        .filter(|id| read.contains(id)),
                })
                .collect();
            self.placement = Some(Placement {
                home,
                targets: ids,
                of_specs: targets,
            });
        }
        self.placement
            .as_ref()
            .map_or_else(Vec::new, |p| p.of_specs.clone())
    }

    /// The account and region of an inventory secret of another account (`None`: the home
    /// target).
    fn spec_place(&self, spec: &crate::config::SecretSpec) -> Option<(String, String)> {
        let (account, region) = inventory::spec_place(&self.config, spec)?;
        let registry = self.view.targets();
        if *account == *registry.home_account() && spec.region.is_none() {
            return None;
        }
        Some((account.to_string(), region.to_string()))
    }

    /// In a single-account setup the home account id is learned from the first ARN listed
    /// (no extra call); the daemon sets it from STS when it reads several accounts.
    fn learn_home_account(&self, listed: &[Option<Vec<SecretMeta>>]) {
        let registry = self.view.targets();
        if !registry.home_account().is_empty() {
            return;
        }
        let Some(home) = self
            .targets
            .iter()
            .position(|t| t.id.is_home())
            .and_then(|i| listed.get(i))
            .and_then(|l| l.as_deref())
        else {
            return;
        };
        if let Some((account, _)) = home
            .iter()
            .find_map(|m| crate::domain::targets::arn_account_region(&m.arn))
            && registry.set_home_account(account)
        {
            info!(account = %account, "Home account learned from a listed secret's ARN.");
            self.metrics.mark_dirty();
        }
    }

    /// Sets `keywarden_account_up` and the view's account health, and logs each change once.
    fn record_health(&mut self, listed: &[Option<Vec<SecretMeta>>], down: &[(usize, AwsError)]) {
        let registry = self.view.targets().clone();
        let errors: HashMap<usize, &AwsError> = down.iter().map(|(i, e)| (*i, e)).collect();
        let mut health = Vec::with_capacity(self.targets.len());
        for (i, t) in self.targets.iter_mut().enumerate() {
            let up = listed.get(i).is_some_and(Option::is_some);
            let labels = registry.labels(t.id);
            // The home account before its id is known has no series (an empty `account`
            // series would stay behind at 0 once the id is learned).
            if !labels.account.is_empty() {
                self.metrics
                    .set_account_up(&labels.account, &labels.region, up);
            }
            let error = errors.get(&i);
            if t.up != Some(up) {
                match error {
                    Some(e) => warn!(
                        account = %labels.account,
                        region = %labels.region,
                        kind = e.kind.as_str(),
                        error = %e,
                        "Cannot read this account and region; its secrets keep their last status."
                    ),
                    None if t.up.is_some() => info!(
                        account = %labels.account,
                        region = %labels.region,
                        "Account and region readable again."
                    ),
                    None => {}
                }
                t.up = Some(up);
            }
            health.push((t.id, error.map(|e| e.kind.as_str())));
        }
        let mut view = self.view.write();
        view.accounts_down = health
            .into_iter()
            .filter_map(|(id, e)| e.map(|kind| (id, kind)))
            .collect();
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
