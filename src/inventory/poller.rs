//! The metadata poller: ListSecrets (one page per 100 secrets) every `poll.metadata_every`,
//! ListSecretVersionIds only for a secret whose AWSCURRENT version id changed since the last
//! cycle, then the view and the per-secret metrics are brought up to date.
//!
//! Memory: each account and region is evaluated as soon as its listing arrives, and its
//! statuses replace its secrets' entries in the view in place; the listing is dropped then. A
//! cycle never holds the whole listing, nor a second copy of the view (at 100,000 secrets the
//! two were about 100 MiB above the resting size, docs/performance.md). The creation time of
//! each AWSCURRENT version is kept in the secret's status, not in a map of its own.
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

/// ListSecretVersionIds calls in flight at once in one account and region (first cycle, or
/// many rotations at once); up to [`TARGETS_IN_FLIGHT`] accounts and regions are read at once.
const VERSION_LOOKUPS_IN_FLIGHT: usize = 8;

/// One ListSecretVersionIds lookup: the position in the watch list, the creation time of the
/// AWSCURRENT version (`None`: not among the versions).
type VersionLookup = (usize, Result<Option<DateTime<Utc>>, AwsError>);

/// The statuses of every watched secret of one account and region in one cycle: they replace
/// all of that target's entries in the view.
struct TargetStatuses {
    target: TargetId,
    statuses: Vec<SecretStatus>,
}

/// What one target's part of a cycle produced.
struct TargetRead {
    pages: usize,
    listed: usize,
    version_lookups: usize,
    group: TargetStatuses,
    /// The first ListSecretVersionIds error (those secrets kept their previous status).
    first_error: Option<AwsError>,
    /// The account of the first listed ARN (home target only: single-account mode learns it).
    account_seen: Option<String>,
}

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
    /// fails everywhere nothing is published; when only some version lookups fail, those
    /// secrets keep their previous status, the rest is published, and the first error is
    /// returned.
    pub async fn poll_once(&mut self, now: DateTime<Utc>) -> Result<CycleReport, AwsError> {
        let mut sink = Sink::View(ViewUpdate::new(&self.view));
        let (report, first_error) = self.cycle(now, &mut sink).await?;
        self.publish().await;
        first_error.map_or(Ok(report), Err)
    }

    /// Runs one cycle and returns its statuses without publishing them (`keywarden status`).
    pub async fn statuses_once(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(CycleReport, Vec<SecretStatus>), AwsError> {
        let mut sink = Sink::Collect(Vec::new());
        let (report, first_error) = self.cycle(now, &mut sink).await?;
        let Sink::Collect(statuses) = sink else {
            return Ok((report, Vec::new()));
        };
        first_error.map_or(Ok((report, statuses)), Err)
    }

    /// Lists, looks up and evaluates one target; the listing is dropped on return.
    async fn read_target(
        &self,
        i: usize,
        specs: &[&crate::config::SecretSpec],
        hint: usize,
        now: DateTime<Utc>,
    ) -> Result<TargetRead, AwsError> {
        let t = &self.targets[i];
        let (secrets, pages) = Self::list_all(&t.api, hint).await?;
        let account_seen =
            t.id.is_home()
                .then(|| {
                    secrets
                        .iter()
                        .find_map(|m| crate::domain::targets::arn_account_region(&m.arn))
                        .map(|(account, _)| account.to_string())
                })
                .flatten();
        let labels = self.view.targets().labels(t.id);
        let scope = inventory::Scope {
            target: t.id,
            account: &labels.account,
            region: &labels.region,
        };
        let watch = inventory::watch_list_in(&self.config, specs, &secrets, scope);
        let (statuses, version_lookups, first_error) = self.evaluate_all(&watch, &t.api, now).await;
        Ok(TargetRead {
            pages,
            listed: secrets.len(),
            version_lookups,
            group: TargetStatuses {
                target: t.id,
                statuses,
            },
            first_error,
            account_seen,
        })
    }

    /// The statuses of one target's watched secrets. ListSecretVersionIds runs only for a
    /// secret whose AWSCURRENT version differs from the one its status in the view was
    /// computed with; a failed lookup keeps the secret's previous status.
    async fn evaluate_all(
        &self,
        watch: &[(Watched, Option<&SecretMeta>)],
        api: &A,
        now: DateTime<Utc>,
    ) -> (Vec<SecretStatus>, usize, Option<AwsError>) {
        // Creation times known from the view, by position in `watch` (`None`: look it up).
        let mut created: Vec<Option<Option<DateTime<Utc>>>> = {
            let view = self.view.read();
            watch
                .iter()
                .map(|(w, meta)| {
                    // A missing secret has nothing to look up.
                    let Some(m) = meta else {
                        return Some(None);
                    };
                    let Some(current) = inventory::current_version_id(m) else {
                        return Some(None);
                    };
                    match view.secrets.get(&w.name) {
                        Some(p)
                            if p.arn.as_deref() == Some(m.arn.as_str())
                                && p.current_version.as_deref() == Some(current) =>
                        {
                            Some(
                                p.current_created
                                    .and_then(|t| DateTime::from_timestamp(t, 0)),
                            )
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        let stale: Vec<usize> = (0..watch.len()).filter(|k| created[*k].is_none()).collect();
        let lookups = stale.len();
        let fetched: Vec<VersionLookup> = stream::iter(stale)
            .map(|k| async move {
                // Only listed secrets with an AWSCURRENT version are stale (see `created`).
                let result = match watch[k].1 {
                    Some(m) => {
                        let current = inventory::current_version_id(m).unwrap_or_default();
                        api.list_secret_versions(&m.arn).await.map(|versions| {
                            versions
                                .into_iter()
                                .find(|v| v.id == current)
                                .and_then(|v| v.created)
                        })
                    }
                    None => Ok(None),
                };
                (k, result)
            })
            .buffer_unordered(VERSION_LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut failed: HashMap<usize, AwsError> = HashMap::new();
        for (k, result) in fetched {
            match result {
                Ok(t) => {
                    debug!(secret = %watch[k].0.name, "AWSCURRENT version changed; creation time read.");
                    created[k] = Some(t);
                }
                Err(e) => {
                    failed.insert(k, e);
                }
            }
        }
        let mut statuses = Vec::with_capacity(watch.len());
        let mut first_error = None;
        for (k, (w, meta)) in watch.iter().enumerate() {
            if let Some(e) = failed.remove(&k) {
                warn!(secret = %w.name, error = %e, "Cannot read the versions of a secret; keeping its previous status.");
                first_error.get_or_insert(e);
                if let Some(previous) = self.previous_status(w) {
                    statuses.push(previous);
                    continue;
                }
            }
            let created = created[k].flatten();
            statuses.push(inventory::evaluate(w, *meta, created, now));
        }
        (statuses, lookups, first_error)
    }

    async fn cycle(
        &mut self,
        now: DateTime<Utc>,
        sink: &mut Sink,
    ) -> Result<(CycleReport, Option<AwsError>), AwsError> {
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
        let mut report = CycleReport {
            targets: self.targets.len(),
            ..CycleReport::default()
        };
        // Every target a few at a time; each is evaluated in its own future and its statuses
        // land in the sink as soon as they are ready.
        let hint = self.last_listed / self.targets.len().max(1);
        let mut up = vec![false; self.targets.len()];
        let mut down: Vec<(usize, AwsError)> = Vec::new();
        // (position of the target, its statuses): `keywarden status` lists them in order.
        let mut groups: Vec<(usize, TargetStatuses)> = Vec::new();
        let mut first_error = None;
        let mut account_seen = None;
        {
            let this = &*self;
            let by_target = &by_target;
            let mut reads = stream::iter(0..this.targets.len())
                .map(|i| async move {
                    let specs: &[&crate::config::SecretSpec] = by_target
                        .get(&this.targets[i].id)
                        .map_or(&[], Vec::as_slice);
                    (i, this.read_target(i, specs, hint, now).await)
                })
                .buffer_unordered(TARGETS_IN_FLIGHT);
            while let Some((i, result)) = reads.next().await {
                match result {
                    Ok(read) => {
                        up[i] = true;
                        report.pages += read.pages;
                        report.listed += read.listed;
                        report.version_lookups += read.version_lookups;
                        report.watched += read.group.statuses.len();
                        if first_error.is_none() {
                            first_error = read.first_error;
                        }
                        if read.account_seen.is_some() {
                            account_seen = read.account_seen;
                        }
                        match sink {
                            // Replaced now, so that only a few targets' statuses are alive.
                            Sink::View(update) => update.replace(&this.view, read.group),
                            Sink::Collect(_) => groups.push((i, read.group)),
                        }
                    }
                    Err(e) => down.push((i, e)),
                }
            }
        }
        report.targets_down = down.len();
        if down.len() == self.targets.len() {
            // Nothing could be read: the cycle failed, nothing is published.
            self.record_health(&up, &down);
            let (_, first) = down.swap_remove(0);
            return Err(first);
        }
        if let Some(account) = account_seen {
            self.learn_home_account(&account);
        }
        self.record_health(&up, &down);
        self.last_listed = report.listed;
        // Inventory secrets of an account that is not read (not in the organization, or
        // suspended): watched, and missing.
        let read: HashSet<TargetId> = self.targets.iter().map(|t| t.id).collect();
        let mut unread: HashMap<TargetId, Vec<Watched>> = HashMap::new();
        for (target, spec) in &placed {
            if target.is_some_and(|id| read.contains(&id)) {
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
            unread.entry(id).or_default().extend(
                inventory::watch_list_in(&self.config, &[*spec], &[], scope)
                    .into_iter()
                    .map(|(w, _)| w),
            );
        }
        for (target, watched) in unread {
            let statuses: Vec<SecretStatus> = watched
                .iter()
                .map(|w| inventory::evaluate(w, None, None, now))
                .collect();
            report.watched += statuses.len();
            let group = TargetStatuses { target, statuses };
            match sink {
                Sink::View(update) => update.replace(&self.view, group),
                Sink::Collect(_) => groups.push((usize::MAX, group)),
            }
        }
        match sink {
            // A target that could not be read keeps its secrets' last statuses; the secrets
            // of a target no longer read leave the view.
            Sink::View(update) => {
                for (i, _) in &down {
                    update.keep(self.targets[*i].id);
                }
                update.finish(&self.view);
            }
            Sink::Collect(all) => {
                let down_ids: HashSet<TargetId> =
                    down.iter().map(|(i, _)| self.targets[*i].id).collect();
                groups.sort_by_key(|(i, g)| (*i, g.target));
                all.extend(groups.into_iter().flat_map(|(_, g)| g.statuses));
                let view = self.view.read();
                all.extend(
                    view.secrets
                        .values()
                        .filter(|s| down_ids.contains(&s.target))
                        .cloned(),
                );
            }
        }
        Ok((report, first_error))
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
    fn learn_home_account(&self, account: &str) {
        let registry = self.view.targets();
        if !registry.home_account().is_empty() {
            return;
        }
        if registry.set_home_account(account) {
            info!(account = %account, "Home account learned from a listed secret's ARN.");
            self.metrics.mark_dirty();
        }
    }

    /// Sets `keywarden_account_up` and the view's account health, and logs each change once.
    fn record_health(&mut self, up: &[bool], down: &[(usize, AwsError)]) {
        let registry = self.view.targets().clone();
        let errors: HashMap<usize, &AwsError> = down.iter().map(|(i, e)| (*i, e)).collect();
        let mut health = Vec::with_capacity(self.targets.len());
        for (i, t) in self.targets.iter_mut().enumerate() {
            let up = up.get(i).copied().unwrap_or(false);
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

    /// Brings the metrics up to date with the view the cycle updated (a secret that left the
    /// view loses its series there), and re-renders them off the async workers when something
    /// changed.
    async fn publish(&self) {
        let changed = {
            let view = self.view.read();
            self.metrics.sync_secrets(view.secrets.values())
        };
        let metrics = self.metrics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if changed {
                // Render now, off the scrape path, so the next scrape is served from the cache.
                metrics.refresh();
            }
            // A cycle allocates and frees megabytes (listings, statuses): give them back, off
            // the async workers (malloc_trim walks the whole heap).
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

/// Where a cycle's statuses go.
enum Sink {
    /// Into the view, target by target (the daemon).
    View(ViewUpdate),
    /// Into a list (`keywarden status`); the view is not touched.
    Collect(Vec<SecretStatus>),
}

/// A cycle's in-place update of the view: each target's statuses replace that target's entries
/// as they arrive; at the end, the entries of targets neither replaced nor kept leave.
struct ViewUpdate {
    /// How many entries each target had in the view when the cycle began.
    before: HashMap<TargetId, usize>,
    /// Targets replaced or kept this cycle.
    touched: HashSet<TargetId>,
}

impl ViewUpdate {
    fn new(view: &SharedView) -> ViewUpdate {
        let mut before: HashMap<TargetId, usize> = HashMap::new();
        for s in view.read().secrets.values() {
            *before.entry(s.target).or_default() += 1;
        }
        ViewUpdate {
            before,
            touched: HashSet::new(),
        }
    }

    /// Makes `group`'s statuses the only entries of its target. Moves them into the view: a
    /// key is allocated only for a secret new to the view.
    fn replace(&mut self, view: &SharedView, group: TargetStatuses) {
        let TargetStatuses { target, statuses } = group;
        self.touched.insert(target);
        let before = self.before.get(&target).copied().unwrap_or(0);
        let mut view = view.write();
        let map = &mut view.secrets;
        // Entries of this target that are not in the new statuses (deleted secrets, an
        // inventory secret placed elsewhere) exist only when fewer of the new keys were there.
        let kept = statuses
            .iter()
            .filter(|s| map.get(&s.name).is_some_and(|p| p.target == target))
            .count();
        if kept < before {
            let names: HashSet<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
            let gone: Vec<String> = map
                .iter()
                .filter(|(k, s)| s.target == target && !names.contains(k.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                map.remove(&k);
            }
        }
        for s in statuses {
            match map.get_mut(&s.name) {
                Some(slot) => *slot = s,
                None => {
                    map.insert(s.name.clone(), s);
                }
            }
        }
    }

    /// Keeps a target's entries as they are (it could not be read).
    fn keep(&mut self, target: TargetId) {
        self.touched.insert(target);
    }

    /// Removes the entries of every target neither replaced nor kept this cycle.
    fn finish(&self, view: &SharedView) {
        if self.before.keys().all(|t| self.touched.contains(t)) {
            return;
        }
        view.write()
            .secrets
            .retain(|_, s| self.touched.contains(&s.target));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsErrorKind;
    use crate::aws::fake::{FakeSecrets, Op};
    use crate::domain::targets::Targets;

    fn poller(targets: Vec<(&str, &str, FakeSecrets)>) -> MetadataPoller<FakeSecrets> {
        let config = crate::config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[discovery]\nname_prefixes = [\"app/\"]\n",
            std::path::Path::new("poller-test.toml"),
        )
        .expect("valid config");
        let registry = Arc::new(Targets::new("us-east-1"));
        registry.set_home_account("123456789012");
        let polled = targets
            .into_iter()
            .map(|(account, region, api)| {
                let id = registry.intern(account, region).expect("room");
                PollTarget::new(id, api)
            })
            .collect();
        let metrics = Arc::new(Metrics::new());
        metrics.set_targets(registry.clone(), Vec::new());
        MetadataPoller::with_targets(
            polled,
            Arc::new(config),
            SharedView::with_targets(registry),
            metrics,
        )
    }

    /// A poller of the home account (one secret) and a member account in another region (one
    /// secret), with handles on both fakes.
    fn home_and_member(
        at_home: &str,
        in_member: &str,
    ) -> (FakeSecrets, FakeSecrets, MetadataPoller<FakeSecrets>) {
        let home = FakeSecrets::new();
        home.create(at_home, "v");
        let member = FakeSecrets::new();
        member.create(in_member, "v");
        let p = poller(vec![
            ("123456789012", "us-east-1", home.clone()),
            ("210000000001", "eu-west-1", member.clone()),
        ]);
        (home, member, p)
    }

    fn keys(p: &MetadataPoller<FakeSecrets>) -> Vec<String> {
        p.view.read().secrets.keys().cloned().collect()
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[tokio::test]
    async fn statuses_replace_the_view_in_place_and_deleted_secrets_leave() {
        let aws = FakeSecrets::new();
        for n in ["app/a", "app/b", "app/c"] {
            aws.create(n, "v");
        }
        let mut p = poller(vec![("123456789012", "us-east-1", aws.clone())]);
        let r = p.poll_once(now()).await.expect("first cycle");
        assert_eq!((r.watched, r.version_lookups), (3, 3));
        assert_eq!(keys(&p), ["app/a", "app/b", "app/c"]);
        let created = p.view.read().secrets["app/a"].current_created;
        assert!(created.is_some(), "the AWSCURRENT creation time is kept");

        // Steady: nothing looked up again; the creation time stays.
        let r = p.poll_once(now()).await.expect("steady cycle");
        assert_eq!(r.version_lookups, 0);
        assert_eq!(p.view.read().secrets["app/a"].current_created, created);

        // b scheduled for deletion (a discovered secret leaves), c replaced (new ARN and
        // version: looked up once).
        aws.edit_meta("app/b", |m| m.deleted = Some(Utc::now()));
        aws.create("app/c", "w");
        let r = p.poll_once(now()).await.expect("cycle");
        assert_eq!((r.watched, r.version_lookups), (2, 1));
        assert_eq!(keys(&p), ["app/a", "app/c"]);
        let text = p.metrics.render();
        assert!(!text.contains("secret=\"app/b\""), "b's series left");
        assert!(text.contains("secret=\"app/c\""));
    }

    #[tokio::test]
    async fn a_failed_version_lookup_keeps_the_previous_status_and_retries() {
        let aws = FakeSecrets::new();
        aws.create("app/a", "v");
        let mut p = poller(vec![("123456789012", "us-east-1", aws.clone())]);
        p.poll_once(now()).await.expect("first cycle");
        let before = p.view.read().secrets["app/a"].clone();
        aws.create("app/a", "w");
        aws.faults()
            .fail_next(Op::ListSecretVersionIds, 1, AwsErrorKind::Throttled);
        let e = p.poll_once(now()).await.expect_err("the lookup failed");
        assert_eq!(e.kind, AwsErrorKind::Throttled);
        assert_eq!(
            p.view.read().secrets["app/a"],
            before,
            "previous status kept"
        );
        let r = p.poll_once(now()).await.expect("retried");
        assert_eq!(r.version_lookups, 1);
        assert_ne!(
            p.view.read().secrets["app/a"].current_version,
            before.current_version
        );
    }

    #[tokio::test]
    async fn a_target_down_keeps_its_statuses_and_a_removed_target_leaves() {
        let (home, member, mut p) = home_and_member("app/h", "app/m");
        p.poll_once(now()).await.expect("first cycle");
        let member_key = "210000000001:eu-west-1:app/m";
        assert_eq!(keys(&p), [member_key, "app/h"]);

        member
            .faults()
            .fail_next(Op::ListSecrets, 1, AwsErrorKind::Auth);
        let r = p.poll_once(now()).await.expect("one target is enough");
        assert_eq!(r.targets_down, 1);
        assert_eq!(keys(&p), [member_key, "app/h"], "kept while down");
        assert_eq!(p.view.read().accounts_down.len(), 1);

        // Both down: the cycle fails and nothing changes.
        for t in [&home, &member] {
            t.faults()
                .fail_next(Op::ListSecrets, 1, AwsErrorKind::Network);
        }
        assert!(p.poll_once(now()).await.is_err());
        assert_eq!(keys(&p), [member_key, "app/h"]);

        // The member target is no longer read: its secrets leave at the next cycle.
        let home_target = p.targets.remove(0);
        p.set_targets(vec![home_target]);
        p.poll_once(now()).await.expect("cycle");
        assert_eq!(keys(&p), ["app/h"]);
        assert!(!p.metrics.render().contains("app/m"));
    }

    #[tokio::test]
    async fn statuses_once_lists_targets_in_order_and_leaves_the_view_alone() {
        let (_, _, mut p) = home_and_member("app/z", "app/a");
        let (report, statuses) = p.statuses_once(now()).await.expect("cycle");
        assert_eq!(report.watched, 2);
        let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["app/z", "210000000001:eu-west-1:app/a"]);
        assert!(p.view.read().secrets.is_empty());
    }
}
