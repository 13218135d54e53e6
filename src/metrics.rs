//! Every metric keywarden exports (SPEC §3), registered in one place.
//!
//! [`Metrics`] owns the handles; the pollers and the rotation core update them through its
//! methods, and [`Metrics::render`] encodes the exposition for `GET /metrics`. Timestamps are
//! absolute seconds since the epoch. Labels are bounded: the `secret` label is an inventory or
//! discovered secret name, every other label comes from a fixed set. The series of a secret that
//! left the view are removed by [`Metrics::sync_secrets`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::view::{Managed, SecretStatus};

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text exposition (format 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label set of per-secret series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabel {
    /// Inventory name, or Secrets Manager name for a discovered secret.
    pub secret: String,
}

/// Labels of `keywarden_secret_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    /// The secret label.
    pub secret: String,
    /// The configured id (name or ARN).
    pub id: String,
    /// critical | high | warning | info.
    pub severity: String,
    /// Impact if compromised, from the inventory.
    pub impact: String,
    /// Rotation strategy.
    pub strategy: String,
    /// `inventory` or `discovered`.
    pub managed: String,
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

/// Labels of `keywarden_poll_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollErrorLabels {
    /// `metadata` or `access`.
    pub source: &'static str,
    /// A bounded error kind, such as `network` or `throttled`.
    pub kind: &'static str,
}

/// Labels of `keywarden_secret_access_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    /// The secret label.
    pub secret: String,
    /// CloudTrail eventName from the fixed list, else `other`.
    pub event: &'static str,
    /// `success`, `denied` or `error`.
    pub outcome: &'static str,
}

/// Labels of `keywarden_secret_access_anomalies_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    /// The secret label.
    pub secret: String,
    /// Anomaly kind.
    pub kind: &'static str,
}

/// Labels of `keywarden_reminders_sent_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReminderLabels {
    /// The secret label.
    pub secret: String,
    /// Lead time as configured, such as `14d`.
    pub lead: String,
}

/// Labels of `keywarden_rotations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    /// The secret label.
    pub secret: String,
    /// `scheduled`, `manual` or `compromise`.
    pub trigger: &'static str,
    /// `success`, `failure` or `rolled_back`.
    pub result: &'static str,
}

/// Label of `keywarden_rotation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// `scheduled`, `manual` or `compromise`.
    pub trigger: &'static str,
}

/// Labels of `keywarden_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
}

/// Anomaly kinds (the `kind` label values).
pub const ANOMALY_KINDS: [&str; 6] = [
    "undeclared_consumer",
    "new_principal",
    "rate_spike",
    "denied_burst",
    "unexpected_source",
    "previous_version_read",
];
/// CloudTrail event names counted under their own `event` label; others count as `other`.
pub const EVENTS: [&str; 9] = [
    "GetSecretValue",
    "BatchGetSecretValue",
    "DescribeSecret",
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "RotateSecret",
    "DeleteSecret",
    "RestoreSecret",
];
/// Rotation triggers.
pub const TRIGGERS: [&str; 3] = ["scheduled", "manual", "compromise"];
/// Rotation results.
pub const RESULTS: [&str; 3] = ["success", "failure", "rolled_back"];
/// Access outcomes.
pub const OUTCOMES: [&str; 3] = ["success", "denied", "error"];

/// The cached rendering of the per-secret families.
#[derive(Default)]
struct FleetCache {
    /// OpenMetrics text without `# EOF`, gzip-compressed (one gzip member). Per-secret series
    /// repeat their names and labels, so this is about 5% of the text.
    gzip: Bytes,
    /// When it was rendered.
    rendered_at: Option<Instant>,
}

/// Lets prometheus-client's text encoder write straight into a gzip stream, so the full text of
/// a large fleet never sits in memory.
struct GzipWriter(GzEncoder<Vec<u8>>);

impl std::fmt::Write for GzipWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| std::fmt::Error)
    }
}

fn gzip(text: &str) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(text.len() / 8 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    Bytes::from(enc.finish().unwrap_or_default())
}

fn gunzip(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 16);
    // The cache holds only what `refresh` compressed, so this cannot fail in practice; on a
    // failure the scrape shows the process series only.
    if GzDecoder::new(data).read_to_string(&mut out).is_err() {
        out.clear();
    }
    out
}

/// One encoded exposition, ready to send in two chunks.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// The per-secret part.
    pub fleet: Bytes,
    /// The process part (with `# EOF` for OpenMetrics).
    pub process: Bytes,
    /// Both chunks are gzip members (send `Content-Encoding: gzip`).
    pub gzip: bool,
}

/// The exported gauge values of one secret, to tell whether a cycle changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExportedValues([Option<i64>; 8]);

impl ExportedValues {
    fn of(s: &SecretStatus) -> Self {
        ExportedValues([
            Some(i64::from(s.present)),
            s.last_rotated,
            s.interval_seconds,
            s.due,
            s.scheduled,
            s.last_accessed,
            Some(i64::from(s.rotation_enabled)),
            Some(i64::from(s.pending)),
        ])
    }
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
    /// Per-secret families: large (tens of series per secret), so rendered only when they
    /// changed and served from `cache`.
    fleet: Registry,
    /// Process-wide families (polls, AWS requests, build): small, rendered on every scrape.
    process: Registry,
    /// The last rendering of `fleet`.
    cache: RwLock<FleetCache>,
    /// Set when a fleet series changed since the last rendering.
    dirty: AtomicBool,
    /// `keywarden_secret_info`.
    pub secret_info: Family<InfoLabels, Gauge>,
    /// `keywarden_secret_present`.
    pub secret_present: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_last_rotated_timestamp_seconds`.
    pub last_rotated: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_rotation_interval_seconds`.
    pub interval: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_rotation_due_timestamp_seconds`.
    pub due: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_rotation_scheduled_timestamp_seconds`.
    pub scheduled: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_rotation_enabled`.
    pub rotation_enabled: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_rotation_pending`.
    pub pending: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_last_accessed_timestamp_seconds`.
    pub last_accessed: Family<SecretLabel, Gauge>,
    /// `keywarden_secret_access_events_total`.
    pub access_events: Family<AccessLabels, Counter>,
    /// `keywarden_secret_access_anomalies_total`.
    pub access_anomalies: Family<AnomalyLabels, Counter>,
    /// `keywarden_secret_principals`.
    pub principals: Family<SecretLabel, Gauge>,
    /// `keywarden_reminders_sent_total`.
    pub reminders_sent: Family<ReminderLabels, Counter>,
    /// `keywarden_reminder_failures_total`.
    pub reminder_failures: Family<SecretLabel, Counter>,
    /// `keywarden_rotations_total`.
    pub rotations: Family<RotationLabels, Counter>,
    /// `keywarden_rotation_duration_seconds`.
    pub rotation_duration: HistogramFamily<TriggerLabel>,
    /// `keywarden_rotation_in_progress`.
    pub rotation_in_progress: Family<SecretLabel, Gauge>,
    /// `keywarden_incidents_total`.
    pub incidents: Family<SecretLabel, Counter>,
    /// `keywarden_incident_open`.
    pub incident_open: Family<SecretLabel, Gauge>,
    /// `keywarden_poll_duration_seconds`.
    pub poll_duration: HistogramFamily<SourceLabel>,
    /// `keywarden_poll_errors_total`.
    pub poll_errors: Family<PollErrorLabels, Counter>,
    /// `keywarden_last_successful_poll_timestamp_seconds`.
    pub last_successful_poll: Family<SourceLabel, Gauge>,
    /// `keywarden_aws_requests_total`.
    pub aws_requests: Family<AwsRequestLabels, Counter>,
    /// Info labels exported per secret, to retire exactly those series.
    exported: Mutex<HashMap<String, (InfoLabels, ExportedValues)>>,
    /// Every `lead` label value used, to retire reminder series.
    leads: Mutex<Vec<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut fleet = Registry::default();
        let mut process = Registry::default();
        let m = Metrics {
            fleet: Registry::default(),
            process: Registry::default(),
            cache: RwLock::new(FleetCache::default()),
            dirty: AtomicBool::new(true),
            secret_info: Family::default(),
            secret_present: Family::default(),
            last_rotated: Family::default(),
            interval: Family::default(),
            due: Family::default(),
            scheduled: Family::default(),
            rotation_enabled: Family::default(),
            pending: Family::default(),
            last_accessed: Family::default(),
            access_events: Family::default(),
            access_anomalies: Family::default(),
            principals: Family::default(),
            reminders_sent: Family::default(),
            reminder_failures: Family::default(),
            rotations: Family::default(),
            rotation_duration: Family::new_with_constructor(rotation_histogram),
            rotation_in_progress: Family::default(),
            incidents: Family::default(),
            incident_open: Family::default(),
            poll_duration: Family::new_with_constructor(poll_histogram),
            poll_errors: Family::default(),
            last_successful_poll: Family::default(),
            aws_requests: Family::default(),
            exported: Mutex::new(HashMap::new()),
            leads: Mutex::new(Vec::new()),
        };
        fleet.register(
            "keywarden_secret_info",
            "Static facts about a watched secret (value 1)",
            m.secret_info.clone(),
        );
        fleet.register(
            "keywarden_secret_present",
            "1 if the secret exists in Secrets Manager and is not scheduled for deletion",
            m.secret_present.clone(),
        );
        fleet.register(
            "keywarden_secret_last_rotated_timestamp_seconds",
            "Creation time of the AWSCURRENT version (else LastRotatedDate, else CreatedDate)",
            m.last_rotated.clone(),
        );
        fleet.register(
            "keywarden_secret_rotation_interval_seconds",
            "Rotation policy of the secret",
            m.interval.clone(),
        );
        fleet.register(
            "keywarden_secret_rotation_due_timestamp_seconds",
            "When the next rotation is due: last rotation plus interval",
            m.due.clone(),
        );
        fleet.register(
            "keywarden_secret_rotation_scheduled_timestamp_seconds",
            "When AWS will rotate the secret next (only with AWS rotation enabled)",
            m.scheduled.clone(),
        );
        fleet.register(
            "keywarden_secret_rotation_enabled",
            "1 if AWS-side rotation is enabled",
            m.rotation_enabled.clone(),
        );
        fleet.register(
            "keywarden_secret_rotation_pending",
            "1 if a version other than AWSCURRENT carries AWSPENDING",
            m.pending.clone(),
        );
        fleet.register(
            "keywarden_secret_last_accessed_timestamp_seconds",
            "LastAccessedDate as AWS reports it (to the day)",
            m.last_accessed.clone(),
        );
        fleet.register(
            "keywarden_secret_access_events",
            "CloudTrail events about the secret, each counted once",
            m.access_events.clone(),
        );
        fleet.register(
            "keywarden_secret_access_anomalies",
            "Access anomalies detected on the secret",
            m.access_anomalies.clone(),
        );
        fleet.register(
            "keywarden_secret_principals",
            "Distinct principals that read the secret within the baseline window",
            m.principals.clone(),
        );
        fleet.register(
            "keywarden_reminders_sent",
            "Pre-rotation reminders accepted by SNS",
            m.reminders_sent.clone(),
        );
        fleet.register(
            "keywarden_reminder_failures",
            "Failed attempts to publish a reminder (each is retried)",
            m.reminder_failures.clone(),
        );
        fleet.register(
            "keywarden_rotations",
            "Rotations run by keywarden, by trigger and result",
            m.rotations.clone(),
        );
        process.register(
            "keywarden_rotation_duration_seconds",
            "Time from the start of a rotation to its new AWSCURRENT",
            m.rotation_duration.clone(),
        );
        fleet.register(
            "keywarden_rotation_in_progress",
            "1 while a rotation of the secret is under way",
            m.rotation_in_progress.clone(),
        );
        fleet.register(
            "keywarden_incidents",
            "Compromise incidents opened for the secret",
            m.incidents.clone(),
        );
        fleet.register(
            "keywarden_incident_open",
            "1 while a compromise incident on the secret is open",
            m.incident_open.clone(),
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
        for trigger in TRIGGERS {
            let _ = m.rotation_duration.get_or_create(&TriggerLabel { trigger });
        }
        Metrics {
            fleet,
            process,
            ..m
        }
    }

    /// Declares the reminder lead times (label values such as `14d`), so that the reminder
    /// counters of each inventory secret exist from the first scrape.
    pub fn set_leads(&self, leads: Vec<String>) {
        match self.leads.lock() {
            Ok(mut g) => *g = leads,
            Err(poisoned) => *poisoned.into_inner() = leads,
        }
    }

    /// Marks the per-secret series as changed: the next [`Metrics::refresh`] re-renders them.
    /// Call it after changing a per-secret family directly.
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
        let mut w = GzipWriter(GzEncoder::new(
            Vec::with_capacity(hint + 4096),
            Compression::fast(),
        ));
        // Writing into a Vec cannot fail.
        let _ = encode_registry(&mut w, &self.fleet);
        let gzip = Bytes::from(w.0.finish().unwrap_or_default());
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
    /// member as is; other clients get plain text, decompressed for them (tens of milliseconds
    /// for a fleet of 10,000 secrets).
    pub fn scrape(&self, openmetrics: bool, accept_gzip: bool) -> Exposition {
        let fleet = self.cached();
        let mut process = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut process, &self.process);
        if openmetrics {
            let _ = encode_eof(&mut process);
            if accept_gzip {
                return Exposition {
                    fleet,
                    process: gzip(&process),
                    gzip: true,
                };
            }
            return Exposition {
                fleet: Bytes::from(gunzip(&fleet)),
                process: Bytes::from(process),
                gzip: false,
            };
        }
        Exposition {
            fleet: Bytes::from(openmetrics_to_text(&gunzip(&fleet))),
            process: Bytes::from(openmetrics_to_text(&process)),
            gzip: false,
        }
    }

    /// The whole OpenMetrics exposition as one string.
    pub fn render(&self) -> String {
        let e = self.scrape(true, false);
        [e.fleet, e.process]
            .iter()
            .map(|b| String::from_utf8_lossy(b))
            .collect()
    }

    /// The whole exposition in the Prometheus text format 0.0.4, for clients that do not ask
    /// for OpenMetrics (curl, `promtool check metrics`, older scrapers).
    pub fn render_text(&self) -> String {
        let e = self.scrape(false, false);
        [e.fleet, e.process]
            .iter()
            .map(|b| String::from_utf8_lossy(b))
            .collect()
    }

    /// Counts one AWS call.
    pub fn aws_request(
        &self,
        service: &'static str,
        operation: &'static str,
        outcome: &'static str,
    ) {
        self.aws_requests
            .get_or_create(&AwsRequestLabels {
                service,
                operation,
                outcome,
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

    /// Makes the per-secret series match `statuses`: sets every gauge, creates the counters of
    /// new inventory secrets at 0, and removes every series of a secret no longer listed.
    /// Returns whether anything changed (then the cache is marked dirty).
    pub fn sync_secrets<'a>(&self, statuses: impl IntoIterator<Item = &'a SecretStatus>) -> bool {
        let mut exported = match self.exported.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut seen: HashMap<String, (InfoLabels, ExportedValues)> =
            HashMap::with_capacity(exported.len());
        let mut changed = false;
        for s in statuses {
            let info = InfoLabels {
                secret: s.name.clone(),
                id: s.id.clone(),
                severity: s.severity.as_str().to_string(),
                impact: s.impact.clone(),
                strategy: s.strategy.as_str().to_string(),
                managed: s.managed.as_str().to_string(),
            };
            let values = ExportedValues::of(s);
            match exported.get(&s.name) {
                Some((old, old_values)) if *old == info && *old_values == values => {}
                Some((old, _)) => {
                    if *old != info {
                        self.secret_info.remove(old);
                        self.secret_info.get_or_create(&info).set(1);
                    }
                    self.set_gauges(s);
                    changed = true;
                }
                None => {
                    self.secret_info.get_or_create(&info).set(1);
                    if s.managed == Managed::Inventory {
                        self.init_counters(&s.name);
                    }
                    self.set_gauges(s);
                    changed = true;
                }
            }
            seen.insert(s.name.clone(), (info, values));
        }
        for (name, (info, _)) in exported.iter() {
            if !seen.contains_key(name) {
                self.secret_info.remove(info);
                self.remove_secret_series(name);
                changed = true;
            }
        }
        *exported = seen;
        if changed {
            self.mark_dirty();
        }
        changed
    }

    fn set_gauges(&self, s: &SecretStatus) {
        let label = SecretLabel {
            secret: s.name.clone(),
        };
        self.secret_present
            .get_or_create(&label)
            .set(i64::from(s.present));
        set_or_remove(&self.last_rotated, &label, s.last_rotated);
        set_or_remove(&self.interval, &label, s.interval_seconds);
        set_or_remove(&self.due, &label, s.due);
        set_or_remove(&self.scheduled, &label, s.scheduled);
        set_or_remove(&self.last_accessed, &label, s.last_accessed);
        self.rotation_enabled
            .get_or_create(&label)
            .set(i64::from(s.rotation_enabled));
        self.pending.get_or_create(&label).set(i64::from(s.pending));
    }

    /// Creates the counters of an inventory secret at 0 (idempotent).
    pub fn init_counters(&self, name: &str) {
        let secret = || name.to_string();
        for outcome in OUTCOMES {
            let _ = self.access_events.get_or_create(&AccessLabels {
                secret: secret(),
                event: "GetSecretValue",
                outcome,
            });
        }
        for kind in ANOMALY_KINDS {
            let _ = self.access_anomalies.get_or_create(&AnomalyLabels {
                secret: secret(),
                kind,
            });
        }
        for trigger in TRIGGERS {
            for result in RESULTS {
                let _ = self.rotations.get_or_create(&RotationLabels {
                    secret: secret(),
                    trigger,
                    result,
                });
            }
        }
        let leads = match self.leads.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for lead in leads {
            let _ = self.reminders_sent.get_or_create(&ReminderLabels {
                secret: secret(),
                lead,
            });
        }
        let label = SecretLabel { secret: secret() };
        let _ = self.reminder_failures.get_or_create(&label);
        let _ = self.incidents.get_or_create(&label);
        let _ = self.rotation_in_progress.get_or_create(&label);
        let _ = self.incident_open.get_or_create(&label);
    }

    fn remove_secret_series(&self, name: &str) {
        let label = SecretLabel {
            secret: name.to_string(),
        };
        for family in [
            &self.secret_present,
            &self.last_rotated,
            &self.interval,
            &self.due,
            &self.scheduled,
            &self.rotation_enabled,
            &self.pending,
            &self.last_accessed,
            &self.principals,
            &self.rotation_in_progress,
            &self.incident_open,
        ] {
            family.remove(&label);
        }
        self.reminder_failures.remove(&label);
        self.incidents.remove(&label);
        // prometheus-client cannot iterate a family, so every label set is rebuilt from the
        // fixed lists it is drawn from.
        for event in EVENTS.into_iter().chain(["other"]) {
            for outcome in OUTCOMES {
                self.access_events.remove(&AccessLabels {
                    secret: name.to_string(),
                    event,
                    outcome,
                });
            }
        }
        for kind in ANOMALY_KINDS {
            self.access_anomalies.remove(&AnomalyLabels {
                secret: name.to_string(),
                kind,
            });
        }
        for trigger in TRIGGERS {
            for result in RESULTS {
                self.rotations.remove(&RotationLabels {
                    secret: name.to_string(),
                    trigger,
                    result,
                });
            }
        }
        let leads = match self.leads.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for lead in leads {
            self.reminders_sent.remove(&ReminderLabels {
                secret: name.to_string(),
                lead,
            });
        }
    }
}

fn set_or_remove(family: &Family<SecretLabel, Gauge>, label: &SecretLabel, value: Option<i64>) {
    match value {
        Some(v) => {
            family.get_or_create(label).set(v);
        }
        None => {
            family.remove(label);
        }
    }
}

/// Keeps the per-secret rendering fresh: re-renders when something marked it dirty (checked
/// every `every`), and at least every `max_age` as a safety net. Stops on `shutdown`.
pub async fn run_refresher(
    metrics: std::sync::Arc<Metrics>,
    every: Duration,
    max_age: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let stale = metrics.cache_age().is_none_or(|age| age >= max_age);
        if metrics.is_dirty() || stale {
            let m = metrics.clone();
            let _ = tokio::task::spawn_blocking(move || {
                m.refresh();
                crate::memory::trim();
            })
            .await;
        }
    }
}

/// Converts prometheus-client's OpenMetrics text into the Prometheus text format 0.0.4: counter
/// families are named with their `_total` suffix in `# HELP` and `# TYPE`, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines are dropped. Sample lines are unchanged.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(pending) = help.replace(rest) {
                push_help(&mut out, pending, false);
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let counter = kind == "counter";
            if let Some(pending) = help.take() {
                push_help(&mut out, pending, counter);
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            if counter {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(if kind == "info" || kind == "stateset" {
                "gauge"
            } else {
                kind
            });
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            if let Some(pending) = help.take() {
                push_help(&mut out, pending, false);
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(pending) = help.take() {
        push_help(&mut out, pending, false);
    }
    out
}

fn push_help(out: &mut String, rest: &str, counter: bool) {
    let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
    out.push_str("# HELP ");
    out.push_str(name);
    if counter {
        out.push_str("_total");
    }
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_names_in_text_format() {
        let om =
            "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\n\
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
        use crate::view::Managed;
        let m = Metrics::new();
        m.set_leads(vec!["14d".into()]);
        let s = SecretStatus {
            name: "GONE".into(),
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
            observed_at: 6,
        };
        m.sync_secrets([&s]);
        let before = m.render();
        assert!(
            before.contains("keywarden_secret_rotation_due_timestamp_seconds{secret=\"GONE\"} 3")
        );
        assert!(before.contains("keywarden_reminders_sent_total{secret=\"GONE\",lead=\"14d\"} 0"));
        m.sync_secrets([]);
        let after = m.render();
        assert!(!after.contains("GONE"), "{after}");
    }
}
