//! Every metric keywarden exports (SPEC §3), registered in one place.
//!
//! [`Metrics`] owns the handles; the pollers and the rotation core update them through its
//! methods, and [`Metrics::render`] encodes the exposition for `GET /metrics`. Timestamps are
//! absolute seconds since the epoch. Labels are bounded: the `secret` label is an inventory or
//! discovered secret name, every other label comes from a fixed set. The series of a secret that
//! left the view are removed by [`Metrics::sync_secrets`].
//!
//! Two parts: the per-secret series live in [`crate::telemetry::fleet`] (one compact record per
//! secret, rendered into a gzip cache off the scrape path); the process-wide families (polls,
//! AWS requests, rotation durations, build) are prometheus-client families, encoded per scrape.
//!
//! Owns every metric name and the exposition. Must never import the store, `http`, `cli` or
//! any task; the label values it takes are `domain` vocabulary words.

pub mod exposition;
pub mod fleet;

pub use exposition::{Exposition, FleetChunks, openmetrics_to_text};

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aws::{CallObserver, CallOutcome};
use crate::domain::view::{Managed, SecretStatus};
use crate::domain::{AnomalyKind, EventName, Outcome, RotationResult, Trigger};
use crate::telemetry::fleet::{Fleet, Gauge as FleetGauge, Info, Synced};

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text exposition (format 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of `keywarden_leader`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    /// `[ha] replica`.
    pub replica: String,
}

/// Labels of `keywarden_aws_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsRequestLabels {
    /// AWS service, such as `secretsmanager`.
    pub service: &'static str,
    /// Operation, such as `ListSecrets`.
    pub operation: &'static str,
    /// `ok`, `throttled` or `error`.
    pub outcome: &'static str,
}

/// Label of the poll metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `metadata` or `access`.
    pub source: &'static str,
}

/// Labels of `keywarden_account_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The 12-digit account id.
    pub account: String,
    /// The region.
    pub region: String,
}

/// Label of `keywarden_access_skipped_records_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of [`SKIP_REASONS`].
    pub reason: &'static str,
}

/// Why a log event or queue message is not a usable CloudTrail record: the three reasons of
/// `cloudtrail::ParseError`, and `not_event` for a queue message that is not an EventBridge
/// event with a `detail` object.
pub const SKIP_REASONS: [&str; 4] = ["oversized", "not_json", "malformed", "not_event"];

/// Labels of `keywarden_poll_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollErrorLabels {
    /// `metadata` or `access`.
    pub source: &'static str,
    /// A bounded error kind, such as `network` or `throttled`.
    pub kind: &'static str,
}

/// Label of `keywarden_rotation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// `scheduled`, `manual` or `compromise`.
    pub trigger: &'static str,
}

/// Labels of `keywarden_rotation_verify_failures_total`: an inventory name and a configured
/// check name (both bounded by the configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// The `secret` label.
    pub secret: String,
    /// The secret's account.
    pub account: String,
    /// The secret's region.
    pub region: String,
    /// The check's configured name.
    pub check: String,
}

/// Labels of `keywarden_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
}

/// The cached rendering of the per-secret families.
#[derive(Default)]
struct FleetCache {
    /// OpenMetrics text without `# EOF`, gzip-compressed (one gzip member). Per-secret series
    /// repeat their names and labels, so this is about 5% of the text.
    gzip: Bytes,
    /// When it was rendered.
    rendered_at: Option<Instant>,
}

fn gzip(text: &str) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(text.len() / 8 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    Bytes::from(enc.finish().unwrap_or_default())
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn poll_histogram() -> Histogram {
    // 10 ms to about 160 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

fn rotation_histogram() -> Histogram {
    // 50 ms to about 7 h: lambda rotations and grace-less compromise rotations alike.
    Histogram::new(exponential_buckets(0.05, 3.0, 14))
}

/// Every metric handle, registered once.
pub struct Metrics {
    /// Per-secret series (tens per secret, one compact record per secret): rendered only when
    /// they changed and served from `cache`.
    secrets: Fleet,
    /// Process-wide families (polls, AWS requests, build): small, rendered on every scrape.
    process: Registry,
    /// The last rendering of `fleet`.
    cache: RwLock<FleetCache>,
    /// Set when a fleet series changed since the last rendering.
    dirty: AtomicBool,
    /// Permissions AWS refused (`service:Operation`, resource) that no later call of the same
    /// operation was allowed since: `/readyz` names them. At most [`MAX_DENIALS`].
    denials: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// `keywarden_rotation_duration_seconds`.
    pub rotation_duration: HistogramFamily<TriggerLabel>,
    /// `keywarden_poll_duration_seconds`.
    pub poll_duration: HistogramFamily<SourceLabel>,
    /// `keywarden_poll_errors_total`.
    pub poll_errors: Family<PollErrorLabels, Counter>,
    /// `keywarden_last_successful_poll_timestamp_seconds`.
    pub last_successful_poll: Family<SourceLabel, Gauge>,
    /// `keywarden_aws_requests_total`.
    pub aws_requests: Family<AwsRequestLabels, Counter>,
    /// `keywarden_rotation_verify_failures_total`.
    pub verify_failures: Family<CheckLabels, Counter>,
    /// `keywarden_access_skipped_records_total`.
    pub skipped_records: Family<ReasonLabel, Counter>,
    /// `keywarden_account_up`: one series per watched account and region.
    pub account_up: Family<AccountLabels, Gauge>,
    /// Configured verify checks (secret, check): their failure counters exist at 0 from the
    /// first metadata cycle that placed the secret (its account and region known).
    declared_checks: std::sync::Mutex<Vec<(String, String)>>,
    /// `keywarden_leader` (with `[ha]`).
    pub leader: Family<ReplicaLabel, Gauge>,
    /// With `[ha]`: why this replica is not the leader (`/readyz` is 503 then); `None` on the
    /// leader and without `[ha]`.
    follower: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut process = Registry::default();
        let m = Metrics {
            secrets: Fleet::default(),
            process: Registry::default(),
            cache: RwLock::new(FleetCache::default()),
            dirty: AtomicBool::new(true),
            denials: Default::default(),
            rotation_duration: Family::new_with_constructor(rotation_histogram),
            poll_duration: Family::new_with_constructor(poll_histogram),
            poll_errors: Family::default(),
            last_successful_poll: Family::default(),
            aws_requests: Family::default(),
            verify_failures: Family::default(),
            skipped_records: Family::default(),
            account_up: Family::default(),
            declared_checks: Default::default(),
            leader: Family::default(),
            follower: std::sync::Mutex::new(None),
        };
        process.register(
            "keywarden_leader",
            "1 on the replica that holds the lease (runs the pollers, reminders, rotations and incidents), 0 on a follower ([ha])",
            m.leader.clone(),
        );
        process.register(
            "keywarden_rotation_verify_failures",
            "Failed runs of a rotation's verify checks (pre-flight and watch)",
            m.verify_failures.clone(),
        );
        process.register(
            "keywarden_rotation_duration_seconds",
            "Time from the start of a rotation to its new AWSCURRENT",
            m.rotation_duration.clone(),
        );
        process.register(
            "keywarden_poll_duration_seconds",
            "Duration of one poll cycle",
            m.poll_duration.clone(),
        );
        process.register(
            "keywarden_poll_errors",
            "Failed poll cycles by source and error kind",
            m.poll_errors.clone(),
        );
        process.register(
            "keywarden_last_successful_poll_timestamp_seconds",
            "End of the last poll cycle that succeeded",
            m.last_successful_poll.clone(),
        );
        process.register(
            "keywarden_aws_requests",
            "AWS API calls made by keywarden, by outcome",
            m.aws_requests.clone(),
        );
        process.register(
            "keywarden_access_skipped_records",
            "Log events and queue messages that are not a usable CloudTrail record, each counted once, by reason",
            m.skipped_records.clone(),
        );
        process.register(
            "keywarden_account_up",
            "1 if the last metadata cycle could read the account and region (AssumeRole and ListSecrets succeeded)",
            m.account_up.clone(),
        );
        for reason in SKIP_REASONS {
            let _ = m.skipped_records.get_or_create(&ReasonLabel { reason });
        }
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        process.register("keywarden_build_info", "Build information (value 1)", build);
        for source in ["metadata", "access"] {
            // Histograms exist from the first scrape so that rate() has a start.
            let _ = m.poll_duration.get_or_create(&SourceLabel { source });
        }
        for trigger in Trigger::NAMES {
            let _ = m.rotation_duration.get_or_create(&TriggerLabel { trigger });
        }
        Metrics { process, ..m }
    }

    /// Declares the reminder lead times (label values such as `14d`), so that the reminder
    /// counters of each inventory secret exist from the first scrape.
    pub fn set_leads(&self, leads: Vec<String>) {
        self.secrets.set_leads(&leads);
        self.mark_dirty();
    }

    /// Marks the per-secret series as changed: the next [`Metrics::refresh`] re-renders them.
    /// Every per-secret setter below calls it.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether per-secret series changed since the last rendering.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Age of the cached per-secret rendering (`None` before the first).
    pub fn cache_age(&self) -> Option<Duration> {
        self.read_cache().rendered_at.map(|t| t.elapsed())
    }

    /// Re-renders the per-secret series into the cache, in both formats. This is the expensive
    /// part for a large fleet (see docs/performance.md): it runs after a poll cycle changed
    /// something and in the background refresher ([`run_refresher`]), so a scrape finds the
    /// cache clean and only encodes the small process registry.
    pub fn refresh(&self) {
        self.dirty.store(false, Ordering::Release);
        let hint = self.read_cache().gzip.len();
        let mut w = GzEncoder::new(Vec::with_capacity(hint + 4096), Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = self.secrets.encode(&mut w);
        let gzip = Bytes::from(w.finish().unwrap_or_default());
        let mut cache = match self.cache.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *cache = FleetCache {
            gzip,
            rendered_at: Some(Instant::now()),
        };
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, FleetCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self) -> Bytes {
        if !self.is_dirty() {
            let c = self.read_cache();
            if c.rendered_at.is_some() {
                return c.gzip.clone();
            }
        }
        // Only when something changed since the refresher last ran.
        self.refresh();
        self.read_cache().gzip.clone()
    }

    /// The exposition, without copying the large part: the cached per-secret series and the
    /// freshly encoded process series. Prometheus (OpenMetrics with gzip) gets the cached gzip
    /// member as is; other clients get plain text, decompressed chunk by chunk while the body
    /// is sent ([`exposition`]), so a plain scrape never holds the whole text.
    pub fn scrape(&self, openmetrics: bool, accept_gzip: bool) -> Exposition {
        let fleet = self.cached();
        let mut process = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut process, &self.process);
        if openmetrics {
            let _ = encode_eof(&mut process);
            if accept_gzip {
                return Exposition {
                    fleet: FleetChunks::whole(fleet),
                    process: gzip(&process),
                    gzip: true,
                };
            }
            return Exposition {
                fleet: FleetChunks::decompressed(fleet, false),
                process: Bytes::from(process),
                gzip: false,
            };
        }
        Exposition {
            fleet: FleetChunks::decompressed(fleet, true),
            process: Bytes::from(openmetrics_to_text(&process)),
            gzip: false,
        }
    }

    /// The whole OpenMetrics exposition as one string.
    pub fn render(&self) -> String {
        let e = self.scrape(true, false);
        String::from_utf8_lossy(&e.concat()).into_owned()
    }

    /// The whole exposition in the Prometheus text format 0.0.4, for clients that do not ask
    /// for OpenMetrics (curl, `promtool check metrics`, older scrapers).
    pub fn render_text(&self) -> String {
        let e = self.scrape(false, false);
        String::from_utf8_lossy(&e.concat()).into_owned()
    }

    /// Counts one AWS call.
    pub fn aws_request(
        &self,
        service: &'static str,
        operation: &'static str,
        outcome: CallOutcome,
    ) {
        self.aws_requests
            .get_or_create(&AwsRequestLabels {
                service,
                operation,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records a finished poll cycle.
    pub fn poll_finished(
        &self,
        source: &'static str,
        seconds: f64,
        error_kind: Option<&'static str>,
        now: i64,
    ) {
        let label = SourceLabel { source };
        self.poll_duration.get_or_create(&label).observe(seconds);
        match error_kind {
            None => {
                self.last_successful_poll.get_or_create(&label).set(now);
            }
            Some(kind) => {
                self.poll_errors
                    .get_or_create(&PollErrorLabels { source, kind })
                    .inc();
            }
        }
    }

    /// Uses `targets` for the `account` and `region` labels of per-secret series; `placed` are
    /// the inventory secrets of other accounts (name, target), known before they are listed.
    pub fn set_targets(
        &self,
        targets: std::sync::Arc<crate::domain::targets::Targets>,
        placed: Vec<(String, crate::domain::targets::TargetId)>,
    ) {
        self.secrets.set_targets(targets, placed);
        self.mark_dirty();
    }

    /// Sets `keywarden_account_up` of one account and region.
    pub fn set_account_up(&self, account: &str, region: &str, up: bool) {
        self.account_up
            .get_or_create(&AccountLabels {
                account: account.to_string(),
                region: region.to_string(),
            })
            .set(i64::from(up));
    }

    /// Declares the configured verify checks (secret, check name): each failure counter exists
    /// at 0 once the secret's account is known.
    pub fn declare_verify_checks(&self, checks: Vec<(String, String)>) {
        *self
            .declared_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = checks;
        self.materialize_checks();
    }

    fn check_labels(&self, secret: &str, check: &str) -> Option<CheckLabels> {
        let place = self.secrets.place(secret)?;
        (!place.account.is_empty()).then(|| CheckLabels {
            secret: secret.to_string(),
            account: place.account.to_string(),
            region: place.region.to_string(),
            check: check.to_string(),
        })
    }

    fn materialize_checks(&self) {
        let declared = self
            .declared_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (secret, check) in declared {
            if let Some(l) = self.check_labels(&secret, &check) {
                let _ = self.verify_failures.get_or_create(&l);
            }
        }
    }

    /// Counts a failed run of a verify check of `secret`.
    pub fn count_verify_failure(&self, secret: &str, check: &str) {
        let labels = self.check_labels(secret, check).unwrap_or_else(|| {
            let place = self.secrets.place(secret);
            CheckLabels {
                secret: secret.to_string(),
                account: place
                    .as_ref()
                    .map_or_else(String::new, |p| p.account.to_string()),
                region: place.map_or_else(String::new, |p| p.region.to_string()),
                check: check.to_string(),
            }
        });
        self.verify_failures.get_or_create(&labels).inc();
    }

    /// Removes `keywarden_account_up` of an account and region no longer read.
    pub fn remove_account_up(&self, account: &str, region: &str) {
        self.account_up.remove(&AccountLabels {
            account: account.to_string(),
            region: region.to_string(),
        });
    }

    /// Makes the per-secret series match `statuses`: sets every gauge the metadata poller knows,
    /// creates the counters of new inventory secrets at 0, and removes every series of a secret
    /// no longer listed. Returns whether anything changed (then the cache is marked dirty).
    pub fn sync_secrets<'a>(&self, statuses: impl IntoIterator<Item = &'a SecretStatus>) -> bool {
        let changed = self.secrets.sync(statuses.into_iter().map(|s| Synced {
            name: &s.name,
            target: s.target,
            info: Info {
                id: s.id.clone(),
                severity: s.severity.as_str(),
                impact: s.impact.clone(),
                strategy: s.strategy.as_str(),
                managed: s.managed.as_str(),
            },
            values: [
                Some(i64::from(s.present)),
                s.last_rotated,
                s.interval_seconds,
                s.due,
                s.scheduled,
                s.last_accessed,
                Some(i64::from(s.rotation_enabled)),
                Some(i64::from(s.pending)),
            ],
            inventory: s.managed == Managed::Inventory,
        }));
        if changed {
            self.mark_dirty();
            self.materialize_checks();
        }
        changed
    }

    /// Creates the counters of an inventory secret at 0 (idempotent).
    pub fn init_counters(&self, name: &str) {
        self.secrets.init_counters(name);
        self.mark_dirty();
    }

    /// Adds `n` to `keywarden_secret_access_events_total`.
    pub fn count_access(&self, secret: &str, event: EventName, outcome: Outcome, n: u64) {
        self.secrets.count_access(secret, event, outcome, n);
        self.mark_dirty();
    }

    /// Counts one `keywarden_access_skipped_records_total` (`reason`: one of [`SKIP_REASONS`]).
    pub fn count_skipped_record(&self, reason: &'static str) {
        self.skipped_records
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one `keywarden_secret_access_anomalies_total`.
    pub fn count_anomaly(&self, secret: &str, kind: AnomalyKind) {
        self.secrets.count_anomaly(secret, kind);
        self.mark_dirty();
    }

    /// Sets `keywarden_secret_principals`.
    pub fn set_principals(&self, secret: &str, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.secrets.set_gauge(secret, FleetGauge::Principals, n);
        self.mark_dirty();
    }

    /// Sets `keywarden_rotation_in_progress`.
    pub fn set_rotation_in_progress(&self, secret: &str, on: bool) {
        self.secrets
            .set_gauge(secret, FleetGauge::RotationInProgress, i64::from(on));
        self.mark_dirty();
    }

    /// Sets `keywarden_secret_rotation_planned_timestamp_seconds` of a listed secret, or removes
    /// the series with `None`. Marks the exposition dirty only when the value changed, so the
    /// scheduler can call it on every pass.
    pub fn set_planned(&self, secret: &str, planned: Option<i64>) {
        if self
            .secrets
            .set_listed_gauge(secret, FleetGauge::Planned, planned)
        {
            self.mark_dirty();
        }
    }

    /// Sets `keywarden_rotation_stuck` of a secret.
    pub fn set_rotation_stuck(&self, secret: &str, stuck: bool) {
        self.secrets
            .set_gauge(secret, FleetGauge::RotationStuck, i64::from(stuck));
        self.mark_dirty();
    }

    /// Counts one `keywarden_rotations_total`.
    pub fn count_rotation(&self, secret: &str, trigger: Trigger, result: RotationResult) {
        self.secrets.count_rotation(secret, trigger, result);
        self.mark_dirty();
    }

    /// Counts one `keywarden_reminders_sent_total`.
    pub fn count_reminder(&self, secret: &str, lead: &str) {
        self.secrets.count_reminder(secret, lead);
        self.mark_dirty();
    }

    /// Counts one `keywarden_reminder_failures_total`.
    pub fn count_reminder_failure(&self, secret: &str) {
        self.secrets.count_reminder_failure(secret);
        self.mark_dirty();
    }

    /// Adds `n` to `keywarden_incidents_total`.
    pub fn count_incidents(&self, secret: &str, n: u64) {
        self.secrets.count_incidents(secret, n);
        self.mark_dirty();
    }

    /// Counts one `keywarden_rollback_hook_failures_total`.
    pub fn count_rollback_hook_failure(&self, secret: &str) {
        self.secrets.count_rollback_hook_failure(secret);
        self.mark_dirty();
    }

    /// Sets `keywarden_incident_open`.
    pub fn set_incident_open(&self, secret: &str, open: bool) {
        self.secrets
            .set_gauge(secret, FleetGauge::IncidentOpen, i64::from(open));
        self.mark_dirty();
    }
}

/// Keeps the per-secret rendering fresh: re-renders when something marked it dirty (checked
/// every `every`), and at least every `max_age` as a safety net. Stops on `shutdown`.
pub async fn run_refresher(
    metrics: std::sync::Arc<Metrics>,
    every: Duration,
    max_age: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let stale = metrics.cache_age().is_none_or(|age| age >= max_age);
        if metrics.is_dirty() || stale {
            let m = metrics.clone();
            let _ = tokio::task::spawn_blocking(move || {
                m.refresh();
                crate::daemon::memory::trim();
            })
            .await;
        }
    }
}

/// Converts prometheus-client's OpenMetrics text into the Prometheus text format 0.0.4: counter
/// families are named with their `_total` suffix in `# HELP` and `# TYPE`, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines are dropped. Sample lines are unchanged.
/// Refused permissions remembered for `/readyz` at most (operations times resources is bounded
/// by the inventory; this keeps the answer short).
pub const MAX_DENIALS: usize = 32;

impl Metrics {
    /// With `[ha]`: records whether `replica` leads (`keywarden_leader`, and `/readyz`).
    pub fn set_leader(&self, replica: &str, leader: bool, holder: Option<&str>) {
        self.leader
            .get_or_create(&ReplicaLabel {
                replica: replica.to_string(),
            })
            .set(i64::from(leader));
        let why = (!leader).then(|| match holder {
            Some(h) => format!("follower: replica {h} holds the lease"),
            None => "follower: no replica holds the lease yet".to_string(),
        });
        *self.follower.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Why this replica is a follower (`None`: it leads, or `[ha]` is off).
    pub fn follower(&self) -> Option<String> {
        self.follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The permissions AWS refuses now, as `service:Operation on resource`, sorted.
    pub fn denied_permissions(&self) -> Vec<String> {
        self.denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(action, resource)| format!("{action} on {resource}"))
            .collect()
    }
}

impl CallObserver for Metrics {
    fn aws_call(&self, service: &'static str, operation: &'static str, outcome: CallOutcome) {
        self.aws_request(service, operation, outcome);
    }

    fn allowed(&self, service: &'static str, operation: &'static str, resource: &str) {
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        if denials.is_empty() {
            return;
        }
        let key = (format!("{service}:{operation}"), resource.to_string());
        denials.remove(&key);
    }

    fn denied(
        &self,
        service: &'static str,
        operation: &'static str,
        resource: &str,
        message: &str,
    ) {
        let key = (format!("{service}:{operation}"), resource.to_string());
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        if denials.contains(&key) || denials.len() >= MAX_DENIALS {
            return;
        }
        tracing::warn!(
            action = %key.0,
            resource = %key.1,
            "AWS denied {} on {}: grant it (keywarden iam-policy prints the policy): {message}",
            key.0,
            key.1
        );
        denials.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_permissions_are_named_until_the_operation_is_allowed_again() {
        let m = Metrics::new();
        m.aws_call("sns", "Publish", CallOutcome::Error);
        m.denied(
            "sns",
            "Publish",
            "arn:aws:sns:us-east-1:1:t",
            "AuthorizationError: no",
        );
        m.denied("sns", "Publish", "arn:aws:sns:us-east-1:1:t", "again");
        m.denied(
            "secretsmanager",
            "ListSecrets",
            "*",
            "AccessDeniedException",
        );
        assert_eq!(
            m.denied_permissions(),
            [
                "secretsmanager:ListSecrets on *",
                "sns:Publish on arn:aws:sns:us-east-1:1:t"
            ]
        );
        m.aws_call("sns", "Publish", CallOutcome::Ok);
        m.allowed("sns", "Publish", "arn:aws:sns:us-east-1:1:other");
        assert_eq!(
            m.denied_permissions().len(),
            2,
            "a success on another resource (another topic) does not grant this one"
        );
        m.allowed("sns", "Publish", "arn:aws:sns:us-east-1:1:t");
        assert_eq!(m.denied_permissions(), ["secretsmanager:ListSecrets on *"]);
        for i in 0..100 {
            m.denied("logs", "FilterLogEvents", &format!("g{i}"), "denied");
        }
        assert_eq!(m.denied_permissions().len(), MAX_DENIALS);
    }

    #[test]
    fn counters_get_total_names_in_text_format() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\n\
                  # HELP b Gauge.\n# TYPE b gauge\n# UNIT b seconds\nb 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 2\n\
             # HELP b Gauge.\n# TYPE b gauge\nb 1\n"
        );
    }

    #[test]
    fn removed_secrets_lose_every_series() {
        use crate::config::{Severity, Strategy};
        use crate::domain::view::Managed;
        let m = Metrics::new();
        m.set_leads(vec!["14d".into()]);
        let s = SecretStatus {
            name: "GONE".into(),
            target: Default::default(),
            id: "svc/gone".into(),
            arn: None,
            managed: Managed::Inventory,
            severity: Severity::High,
            impact: "x".into(),
            strategy: Strategy::Random,
            present: true,
            deletion_scheduled: false,
            last_rotated: Some(1),
            interval_seconds: Some(2),
            due: Some(3),
            overdue: false,
            scheduled: Some(4),
            rotation_enabled: true,
            pending: false,
            last_accessed: Some(5),
            current_version: None,
            current_created: None,
            observed_at: 6,
        };
        m.sync_secrets([&s]);
        let before = m.render();
        assert!(
            before.contains("keywarden_secret_rotation_due_timestamp_seconds{secret=\"GONE\",account=\"\",region=\"\"} 3")
        );
        assert!(before.contains("keywarden_reminders_sent_total{secret=\"GONE\",account=\"\",region=\"\",lead=\"14d\"} 0"));
        m.sync_secrets([]);
        let after = m.render();
        assert!(!after.contains("GONE"), "{after}");
    }
}
