//! The per-secret series of SPEC §3, one compact record per secret, and their OpenMetrics
//! encoding.
//!
//! A fleet of 10,000 inventory secrets exports about 330,000 series (every counter of an
//! inventory secret exists at 0 from the first scrape). Kept as prometheus-client families,
//! each series was a hash-map entry with its own copy of the secret name and its own heap
//! atomic: about 50 MB. Here a secret is one [`SecretSeries`]: its name once, its info labels,
//! and fixed arrays of atomics indexed by the bounded label values (event x outcome, anomaly
//! kind, trigger x result, reminder lead), with a sentinel for "no such series". That is
//! 232 bytes a secret plus 400 for its counters, which are created with the first of them: an
//! inventory secret has them from the start, a discovered secret only once something about it
//! is counted (at 100,000 discovered secrets that is 38 MiB not spent). Updates take a shared
//! lock and touch one atomic; only adding and removing secrets takes the exclusive lock.
//!
//! [`Fleet::encode`] writes the families in OpenMetrics text, in a fixed order, series sorted by
//! secret name; label values are escaped as the format requires. This module does no I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::domain::targets::{TargetId, TargetLabels, Targets, label_of_key, split_key};

use crate::domain::{AnomalyKind, EventName, Outcome, RotationResult, Trigger};

/// Slots of the access counters: event x outcome.
const ACCESS_SLOTS: usize = EventName::COUNT * Outcome::COUNT;

/// The per-secret gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// `keywarden_secret_present`.
    Present,
    /// `keywarden_secret_last_rotated_timestamp_seconds`.
    LastRotated,
    /// `keywarden_secret_rotation_interval_seconds`.
    Interval,
    /// `keywarden_secret_rotation_due_timestamp_seconds`.
    Due,
    /// `keywarden_secret_rotation_scheduled_timestamp_seconds`.
    Scheduled,
    /// `keywarden_secret_rotation_enabled`.
    RotationEnabled,
    /// `keywarden_secret_rotation_pending`.
    Pending,
    /// `keywarden_secret_last_accessed_timestamp_seconds`.
    LastAccessed,
    /// `keywarden_secret_principals`.
    Principals,
    /// `keywarden_rotation_in_progress`.
    RotationInProgress,
    /// `keywarden_incident_open`.
    IncidentOpen,
    /// `keywarden_rotation_stuck`.
    RotationStuck,
    /// `keywarden_secret_rotation_planned_timestamp_seconds` (set by the rotation scheduler).
    Planned,
}

const GAUGES: usize = 13;

/// Marks a gauge without a series.
const NO_GAUGE: i64 = i64::MIN;
/// Marks a counter without a series.
const NO_COUNTER: u64 = u64::MAX;

/// The labels of `keywarden_secret_info`, besides `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The configured id (name or ARN).
    pub id: String,
    /// critical | high | warning | info.
    pub severity: &'static str,
    /// Impact if compromised.
    pub impact: String,
    /// Rotation strategy.
    pub strategy: &'static str,
    /// `inventory` or `discovered`.
    pub managed: &'static str,
}

/// Every series of one secret.
pub struct SecretSeries {
    /// Info labels, once the metadata poller listed the secret.
    synced: Option<Info>,
    /// Its account and region (the `account` and `region` labels), an index into the targets.
    target: TargetId,
    /// The sync generation that last listed this secret.
    generation: u64,
    gauges: [AtomicI64; GAUGES],
    /// Its counters, created with the first of them: a discovered secret that nothing counted
    /// yet (most of a large discovered fleet) costs no counter slot.
    counters: OnceLock<Box<Counters>>,
}

/// The counters of one secret (each slot [`NO_COUNTER`] until its series exists).
struct Counters {
    /// By event slot x outcome.
    access: [AtomicU64; ACCESS_SLOTS],
    anomalies: [AtomicU64; AnomalyKind::COUNT],
    /// By trigger x result.
    rotations: [AtomicU64; Trigger::COUNT * RotationResult::COUNT],
    /// By lead (index into [`Fleet`]'s leads).
    reminders: Box<[AtomicU64]>,
    reminder_failures: AtomicU64,
    incidents: AtomicU64,
    /// `keywarden_rollback_hook_failures_total`.
    rollback_hook_failures: AtomicU64,
}

impl Counters {
    fn new(leads: usize) -> Counters {
        Counters {
            access: absent_counters(),
            anomalies: absent_counters(),
            rotations: absent_counters(),
            reminders: (0..leads).map(|_| AtomicU64::new(NO_COUNTER)).collect(),
            reminder_failures: AtomicU64::new(NO_COUNTER),
            incidents: AtomicU64::new(NO_COUNTER),
            rollback_hook_failures: AtomicU64::new(NO_COUNTER),
        }
    }
}

/// The access counter of an event label and outcome.
#[inline]
fn access_slot(event: EventName, outcome: Outcome) -> usize {
    event.index() * Outcome::COUNT + outcome.index()
}

fn absent_counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(NO_COUNTER))
}

impl SecretSeries {
    fn new() -> SecretSeries {
        SecretSeries {
            synced: None,
            target: TargetId::HOME,
            generation: 0,
            gauges: std::array::from_fn(|_| AtomicI64::new(NO_GAUGE)),
            counters: OnceLock::new(),
        }
    }

    /// Its counters, created (every series absent) when it has none.
    fn counters(&self, leads: usize) -> &Counters {
        self.counters.get_or_init(|| Box::new(Counters::new(leads)))
    }

    /// One kind of its counters for the encoder (empty when it has none).
    fn counted(&self, f: impl Fn(&Counters) -> &[AtomicU64]) -> &[AtomicU64] {
        self.counters.get().map_or(&[], |c| f(c))
    }

    fn gauge(&self, g: Gauge) -> &AtomicI64 {
        &self.gauges[g as usize]
    }

    /// A gauge's value (`None`: no series).
    fn get(&self, g: Gauge) -> Option<i64> {
        let v = self.gauge(g).load(Ordering::Relaxed);
        (v != NO_GAUGE).then_some(v)
    }

    /// Sets a gauge, or removes its series with `None`.
    fn set(&self, g: Gauge, value: Option<i64>) {
        self.gauge(g)
            .store(value.unwrap_or(NO_GAUGE), Ordering::Relaxed);
    }
}

/// Creates a counter at 0 when it has no series yet.
fn ensure(c: &AtomicU64) {
    let _ = c.compare_exchange(NO_COUNTER, 0, Ordering::Relaxed, Ordering::Relaxed);
}

/// Adds to a counter, creating its series.
fn add(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(if v == NO_COUNTER {
            n
        } else {
            v.saturating_add(n).min(NO_COUNTER - 1)
        })
    });
}

/// Every secret's series.
#[derive(Default)]
pub struct Fleet {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Boxed, so that the map's spare capacity costs a pointer, not a record.
    secrets: HashMap<Box<str>, Box<SecretSeries>>,
    /// Reminder lead label values, such as `14d`.
    leads: Vec<Box<str>>,
    /// Incremented by each sync.
    generation: u64,
    /// The account and region label values, by target id.
    targets: Arc<Targets>,
    /// The targets of inventory secrets outside the home account, known from the
    /// configuration before the metadata poller lists them.
    placed: HashMap<Box<str>, TargetId>,
}

impl Inner {
    fn series(&mut self, secret: &str) -> &mut SecretSeries {
        let target = match split_key(secret) {
            Some((account, region, _)) => self.targets.intern(account, region),
            None => self.placed.get(secret).copied(),
        };
        self.secrets.entry(secret.into()).or_insert_with(|| {
            let mut s = SecretSeries::new();
            s.target = target.unwrap_or(TargetId::HOME);
            Box::new(s)
        })
    }
}

impl Fleet {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the secret's record, creating it (without series) when it is new.
    fn with<R>(&self, secret: &str, f: impl FnOnce(&SecretSeries) -> R) -> R {
        {
            let inner = self.read();
            if let Some(s) = inner.secrets.get(secret) {
                return f(s);
            }
        }
        let mut inner = self.write();
        f(inner.series(secret))
    }

    /// Runs `f` on the secret's counters, creating the record and its counters when needed.
    fn with_counters<R>(&self, secret: &str, f: impl FnOnce(&Counters) -> R) -> R {
        {
            let inner = self.read();
            if let Some(s) = inner.secrets.get(secret) {
                return f(s.counters(inner.leads.len()));
            }
        }
        let mut inner = self.write();
        let leads = inner.leads.len();
        f(inner.series(secret).counters(leads))
    }

    /// Uses `targets` for the `account` and `region` labels, and places the inventory secrets
    /// of other accounts (`placed`: name and target) before they are listed.
    pub fn set_targets(&self, targets: Arc<Targets>, placed: Vec<(String, TargetId)>) {
        let mut inner = self.write();
        inner.targets = targets;
        for (name, target) in placed {
            if let Some(s) = inner.secrets.get_mut(name.as_str()) {
                s.target = target;
            }
            inner.placed.insert(name.into(), target);
        }
    }

    /// The account and region labels of a secret's record (`None`: no record yet).
    pub fn place(&self, secret: &str) -> Option<TargetLabels> {
        let inner = self.read();
        let target = inner.secrets.get(secret)?.target;
        Some(inner.targets.labels(target))
    }

    /// Declares the reminder lead label values (series of every lead exist for inventory
    /// secrets from the first scrape).
    pub fn set_leads(&self, leads: &[String]) {
        let mut inner = self.write();
        for lead in leads {
            lead_index(&mut inner, lead);
        }
    }

    /// Creates the counters (and the in-progress and incident gauges) of an inventory secret
    /// at 0; existing series keep their values.
    pub fn init_counters(&self, secret: &str) {
        self.with_counters(secret, |c| {
            for o in Outcome::ALL {
                ensure(&c.access[access_slot(EventName::GetSecretValue, o)]);
            }
            c.anomalies.iter().for_each(ensure);
            c.rotations.iter().for_each(ensure);
            c.reminders.iter().for_each(ensure);
            ensure(&c.reminder_failures);
            ensure(&c.incidents);
            ensure(&c.rollback_hook_failures);
        });
        self.with(secret, |s| {
            for g in [
                Gauge::RotationInProgress,
                Gauge::IncidentOpen,
                Gauge::RotationStuck,
            ] {
                let _ =
                    s.gauge(g)
                        .compare_exchange(NO_GAUGE, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        });
    }

    /// Sets a gauge of a secret.
    pub fn set_gauge(&self, secret: &str, g: Gauge, value: i64) {
        self.with(secret, |s| s.set(g, Some(value)));
    }

    /// Sets a gauge of a secret the metadata poller listed, or removes its series with `None`;
    /// a secret it has not listed (or no longer lists) gets no series. Returns whether the
    /// value changed.
    pub fn set_listed_gauge(&self, secret: &str, g: Gauge, value: Option<i64>) -> bool {
        let inner = self.read();
        let Some(s) = inner.secrets.get(secret).filter(|s| s.synced.is_some()) else {
            return false;
        };
        if s.get(g) == value {
            return false;
        }
        s.set(g, value);
        true
    }

    /// Adds `n` CloudTrail events of one `event` label and outcome.
    pub fn count_access(&self, secret: &str, event: EventName, outcome: Outcome, n: u64) {
        self.with_counters(secret, |c| add(&c.access[access_slot(event, outcome)], n));
    }

    /// Counts an anomaly.
    pub fn count_anomaly(&self, secret: &str, kind: AnomalyKind) {
        self.with_counters(secret, |c| add(&c.anomalies[kind.index()], 1));
    }

    /// Counts a rotation by trigger and result.
    pub fn count_rotation(&self, secret: &str, trigger: Trigger, result: RotationResult) {
        let slot = trigger.index() * RotationResult::COUNT + result.index();
        self.with_counters(secret, |c| add(&c.rotations[slot], 1));
    }

    /// Counts a reminder SNS accepted.
    pub fn count_reminder(&self, secret: &str, lead: &str) {
        let known = self.read().leads.iter().position(|l| &**l == lead);
        let i = match known {
            Some(i) => i,
            None => lead_index(&mut self.write(), lead),
        };
        self.with_counters(secret, |c| {
            if let Some(c) = c.reminders.get(i) {
                add(c, 1);
            }
        });
    }

    /// Counts a failed reminder publish.
    pub fn count_reminder_failure(&self, secret: &str) {
        self.with_counters(secret, |c| add(&c.reminder_failures, 1));
    }

    /// Adds to the incident counter.
    pub fn count_incidents(&self, secret: &str, n: u64) {
        self.with_counters(secret, |c| add(&c.incidents, n));
    }

    /// Counts one failed `on = "rollback"` hook.
    pub fn count_rollback_hook_failure(&self, secret: &str) {
        self.with_counters(secret, |c| add(&c.rollback_hook_failures, 1));
    }

    /// Makes the synced part (info and the gauges the metadata poller knows) match
    /// `statuses`; an inventory secret seen for the first time gets its counters at 0; every
    /// series of a synced secret that is no longer listed is removed. Returns whether
    /// anything changed.
    pub fn sync<'a>(&self, statuses: impl IntoIterator<Item = Synced<'a>>) -> bool {
        let mut inner = self.write();
        inner.generation += 1;
        let generation = inner.generation;
        let mut changed = false;
        let mut new_inventory = Vec::new();
        for st in statuses {
            let s = inner.series(st.name);
            s.generation = generation;
            if s.target != st.target {
                s.target = st.target;
                changed = true;
            }
            if s.synced.as_ref() == Some(&st.info)
                && SYNCED_GAUGES
                    .iter()
                    .zip(st.values)
                    .all(|(g, v)| s.get(*g) == v)
            {
                continue;
            }
            if s.synced.is_none() && st.inventory {
                new_inventory.push(st.name);
            }
            for (g, v) in SYNCED_GAUGES.iter().zip(st.values) {
                s.set(*g, v);
            }
            s.synced = Some(st.info);
            changed = true;
        }
        let before = inner.secrets.len();
        inner
            .secrets
            .retain(|_, s| s.synced.is_none() || s.generation == generation);
        changed |= inner.secrets.len() != before;
        drop(inner);
        for name in new_inventory {
            self.init_counters(name);
        }
        changed
    }

    /// Writes every family in OpenMetrics text (without `# EOF`).
    pub fn encode(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let inner = self.read();
        let mut sorted: Vec<(&str, &SecretSeries)> =
            inner.secrets.iter().map(|(k, v)| (&**k, &**v)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut w = Writer::new(out, inner.targets.all());
        // keywarden_secret_info
        w.family(
            "keywarden_secret_info",
            "gauge",
            "Static facts about a watched secret (value 1)",
            sorted
                .iter()
                .filter_map(|(name, s)| s.synced.as_ref().map(|info| (*name, *s, info))),
            |w, (name, s, info)| {
                w.sample_start("keywarden_secret_info", name, s)?;
                w.label("id", &info.id)?;
                w.label("severity", info.severity)?;
                w.label("impact", &info.impact)?;
                w.label("strategy", info.strategy)?;
                w.label("managed", info.managed)?;
                w.end_i64(1)
            },
        )?;
        for (name, help, g) in GAUGE_FAMILIES_BEFORE_ACCESS {
            w.gauge_family(name, help, g, &sorted)?;
        }
        w.counter_family(
            "keywarden_secret_access_events",
            "CloudTrail events about the secret, each counted once",
            &sorted,
            |s| s.counted(|c| &c.access[..]),
            |w, i| {
                w.label("event", EventName::ALL[i / Outcome::COUNT].as_str())?;
                w.label("outcome", Outcome::ALL[i % Outcome::COUNT].as_str())
            },
        )?;
        w.counter_family(
            "keywarden_secret_access_anomalies",
            "Access anomalies detected on the secret",
            &sorted,
            |s| s.counted(|c| &c.anomalies[..]),
            |w, i| w.label("kind", AnomalyKind::ALL[i].as_str()),
        )?;
        w.gauge_family(
            "keywarden_secret_principals",
            "Distinct principals that read the secret within the baseline window",
            Gauge::Principals,
            &sorted,
        )?;
        let leads = &inner.leads;
        w.counter_family(
            "keywarden_reminders_sent",
            "Pre-rotation reminders accepted by SNS",
            &sorted,
            |s| s.counted(|c| &c.reminders[..]),
            |w, i| w.label("lead", leads.get(i).map_or("", |l| &**l)),
        )?;
        w.counter_family(
            "keywarden_reminder_failures",
            "Failed attempts to publish a reminder (each is retried)",
            &sorted,
            |s| s.counted(|c| std::slice::from_ref(&c.reminder_failures)),
            |_, _| Ok(()),
        )?;
        w.counter_family(
            "keywarden_rotations",
            "Rotations run by keywarden, by trigger and result",
            &sorted,
            |s| s.counted(|c| &c.rotations[..]),
            |w, i| {
                w.label("trigger", Trigger::ALL[i / RotationResult::COUNT].as_str())?;
                w.label(
                    "result",
                    RotationResult::ALL[i % RotationResult::COUNT].as_str(),
                )
            },
        )?;
        w.gauge_family(
            "keywarden_rotation_in_progress",
            "1 while a rotation of the secret is under way",
            Gauge::RotationInProgress,
            &sorted,
        )?;
        w.gauge_family(
            "keywarden_rotation_stuck",
            "1 while a rotation of the secret past finish keeps failing (retried until it succeeds)",
            Gauge::RotationStuck,
            &sorted,
        )?;
        w.counter_family(
            "keywarden_incidents",
            "Compromise incidents opened for the secret",
            &sorted,
            |s| s.counted(|c| std::slice::from_ref(&c.incidents)),
            |_, _| Ok(()),
        )?;
        w.counter_family(
            "keywarden_rollback_hook_failures",
            "Rollback hooks that failed (AWSCURRENT stayed where the rollback put it)",
            &sorted,
            |s| s.counted(|c| std::slice::from_ref(&c.rollback_hook_failures)),
            |_, _| Ok(()),
        )?;
        w.gauge_family(
            "keywarden_incident_open",
            "1 while a compromise incident on the secret is open",
            Gauge::IncidentOpen,
            &sorted,
        )?;
        w.flush()
    }
}

/// The gauges between `keywarden_secret_info` and the access counters, in exposition order.
const GAUGE_FAMILIES_BEFORE_ACCESS: [(&str, &str, Gauge); 9] = [
    (
        "keywarden_secret_present",
        "1 if the secret exists in Secrets Manager and is not scheduled for deletion",
        Gauge::Present,
    ),
    (
        "keywarden_secret_last_rotated_timestamp_seconds",
        "Creation time of the AWSCURRENT version (else LastRotatedDate, else CreatedDate)",
        Gauge::LastRotated,
    ),
    (
        "keywarden_secret_rotation_interval_seconds",
        "Rotation policy of the secret",
        Gauge::Interval,
    ),
    (
        "keywarden_secret_rotation_due_timestamp_seconds",
        "When the next rotation is due: last rotation plus interval",
        Gauge::Due,
    ),
    (
        "keywarden_secret_rotation_scheduled_timestamp_seconds",
        "When AWS will rotate the secret next (only with AWS rotation enabled)",
        Gauge::Scheduled,
    ),
    (
        "keywarden_secret_rotation_planned_timestamp_seconds",
        "When keywarden plans to rotate the secret: the last opening of its window before the due date, else the first after it (only with a window)",
        Gauge::Planned,
    ),
    (
        "keywarden_secret_rotation_enabled",
        "1 if AWS-side rotation is enabled",
        Gauge::RotationEnabled,
    ),
    (
        "keywarden_secret_rotation_pending",
        "1 if a version other than AWSCURRENT carries AWSPENDING",
        Gauge::Pending,
    ),
    (
        "keywarden_secret_last_accessed_timestamp_seconds",
        "LastAccessedDate as AWS reports it (to the day)",
        Gauge::LastAccessed,
    ),
];

fn lead_index(inner: &mut Inner, lead: &str) -> usize {
    if let Some(i) = inner.leads.iter().position(|l| &**l == lead) {
        return i;
    }
    inner.leads.push(lead.into());
    let n = inner.leads.len();
    for c in inner
        .secrets
        .values_mut()
        .filter_map(|s| s.counters.get_mut())
    {
        let mut v: Vec<AtomicU64> = std::mem::take(&mut c.reminders).into_vec();
        v.resize_with(n, || AtomicU64::new(NO_COUNTER));
        c.reminders = v.into_boxed_slice();
    }
    n - 1
}

/// The gauges [`Fleet::sync`] sets, in the order of [`Synced::values`].
const SYNCED_GAUGES: [Gauge; 8] = [
    Gauge::Present,
    Gauge::LastRotated,
    Gauge::Interval,
    Gauge::Due,
    Gauge::Scheduled,
    Gauge::LastAccessed,
    Gauge::RotationEnabled,
    Gauge::Pending,
];

/// One secret's synced facts, for [`Fleet::sync`].
pub struct Synced<'a> {
    /// The key of the secret (its `secret` label, qualified for a discovered secret of
    /// another account: see `domain::targets`).
    pub name: &'a str,
    /// Its account and region.
    pub target: TargetId,
    /// Info labels.
    pub info: Info,
    /// present, last rotated, interval, due, scheduled, last accessed, rotation enabled,
    /// pending (`None`: no series).
    pub values: [Option<i64>; 8],
    /// Whether it is an inventory secret (its counters exist from the first scrape).
    pub inventory: bool,
}

/// A buffered OpenMetrics writer.
struct Writer<'w, W: std::io::Write> {
    out: &'w mut W,
    buf: Vec<u8>,
    /// The `account` and `region` values by target id (a snapshot for this encoding).
    targets: Vec<TargetLabels>,
}

impl<'w, W: std::io::Write> Writer<'w, W> {
    fn new(out: &'w mut W, targets: Vec<TargetLabels>) -> Self {
        Writer {
            out,
            buf: Vec::with_capacity(64 * 1024),
            targets,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= 60 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            ".\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ] {
            self.buf.extend_from_slice(part.as_bytes());
        }
    }

    /// Writes `name{secret="...",account="...",region="..."` (without the closing brace):
    /// the name without its qualifier, and the secret's target's labels.
    fn sample_start(&mut self, name: &str, key: &str, s: &SecretSeries) -> std::io::Result<()> {
        self.maybe_flush()?;
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"{secret=\"");
        escape_into(&mut self.buf, label_of_key(key));
        self.buf.extend_from_slice(b"\",account=\"");
        let t = self
            .targets
            .get(s.target.0 as usize)
            .or_else(|| self.targets.first());
        if let Some(t) = t {
            escape_into(&mut self.buf, &t.account);
            self.buf.extend_from_slice(b"\",region=\"");
            escape_into(&mut self.buf, &t.region);
        } else {
            self.buf.extend_from_slice(b"\",region=\"");
        }
        self.buf.push(b'"');
        Ok(())
    }

    fn label(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        self.buf.push(b',');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"=\"");
        escape_into(&mut self.buf, value);
        self.buf.push(b'"');
        Ok(())
    }

    fn end_i64(&mut self, v: i64) -> std::io::Result<()> {
        self.buf.extend_from_slice(b"} ");
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.buf.push(b'\n');
        Ok(())
    }

    fn end_u64(&mut self, v: u64) -> std::io::Result<()> {
        self.buf.extend_from_slice(b"} ");
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.buf.push(b'\n');
        Ok(())
    }

    /// A family from an iterator of items; the header only when there is a sample.
    fn family<T>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        items: impl Iterator<Item = T>,
        mut sample: impl FnMut(&mut Self, T) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut items = items.peekable();
        if items.peek().is_none() {
            return Ok(());
        }
        self.header(name, kind, help);
        for item in items {
            sample(self, item)?;
        }
        Ok(())
    }

    fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        g: Gauge,
        sorted: &[(&str, &SecretSeries)],
    ) -> std::io::Result<()> {
        let values = sorted.iter().filter_map(|(secret, s)| {
            let v = s.gauge(g).load(Ordering::Relaxed);
            (v != NO_GAUGE).then_some((*secret, *s, v))
        });
        self.family(name, "gauge", help, values, |w, (secret, s, v)| {
            w.sample_start(name, secret, s)?;
            w.end_i64(v)
        })
    }

    fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        sorted: &[(&str, &SecretSeries)],
        counters: impl Fn(&SecretSeries) -> &[AtomicU64],
        labels: impl Fn(&mut Self, usize) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let values = sorted.iter().flat_map(|(secret, s)| {
            counters(s).iter().enumerate().filter_map(|(i, c)| {
                let v = c.load(Ordering::Relaxed);
                (v != NO_COUNTER).then_some((*secret, *s, i, v))
            })
        });
        let total = format!("{name}_total");
        self.family(name, "counter", help, values, |w, (secret, s, i, v)| {
            w.sample_start(&total, secret, s)?;
            labels(w, i)?;
            w.end_u64(v)
        })
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_into(buf: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\n' => buf.extend_from_slice(b"\\n"),
            _ => buf.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: &Fleet) -> String {
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn synced<'a>(name: &'a str, impact: &str, values: [Option<i64>; 8]) -> Synced<'a> {
        Synced {
            name,
            info: Info {
                id: format!("svc/{name}"),
                severity: "high",
                impact: impact.into(),
                strategy: "random",
                managed: "inventory",
            },
            values,
            inventory: true,
            target: TargetId::HOME,
        }
    }

    #[test]
    fn an_inventory_secret_has_every_counter_at_zero_and_escaped_labels() {
        let f = Fleet::default();
        f.set_leads(&["14d".into(), "1d".into()]);
        let values = [
            Some(1),
            Some(10),
            Some(20),
            Some(30),
            None,
            Some(5),
            Some(0),
            Some(1),
        ];
        assert!(f.sync([synced("A\"B", "x \"q\" \\ y\nz", values)]));
        let t = text(&f);
        assert!(t.contains(
            "keywarden_secret_info{secret=\"A\\\"B\",account=\"\",region=\"\",id=\"svc/A\\\"B\",severity=\"high\",impact=\"x \\\"q\\\" \\\\ y\\nz\",strategy=\"random\",managed=\"inventory\"} 1\n"
        ), "{t}");
        assert!(t.contains("# HELP keywarden_secret_rotation_due_timestamp_seconds When the next rotation is due: last rotation plus interval.\n# TYPE keywarden_secret_rotation_due_timestamp_seconds gauge\nkeywarden_secret_rotation_due_timestamp_seconds{secret=\"A\\\"B\",account=\"\",region=\"\"} 30\n"));
        // No scheduled series, so no family either.
        assert!(!t.contains("scheduled_timestamp"));
        assert!(t.contains("# TYPE keywarden_secret_access_events counter\n"));
        for o in Outcome::NAMES {
            assert!(t.contains(&format!("keywarden_secret_access_events_total{{secret=\"A\\\"B\",account=\"\",region=\"\",event=\"GetSecretValue\",outcome=\"{o}\"}} 0\n")));
        }
        assert_eq!(
            t.matches("keywarden_secret_access_anomalies_total{")
                .count(),
            6
        );
        assert_eq!(t.matches("keywarden_rotations_total{").count(), 9);
        assert!(t.contains("keywarden_reminders_sent_total{secret=\"A\\\"B\",account=\"\",region=\"\",lead=\"1d\"} 0\n"));
        assert!(
            t.contains("keywarden_incident_open{secret=\"A\\\"B\",account=\"\",region=\"\"} 0\n")
        );
        assert!(t.contains(
            "keywarden_reminder_failures_total{secret=\"A\\\"B\",account=\"\",region=\"\"} 0\n"
        ));
        // Principals are set by the access poller only.
        assert!(!t.contains("keywarden_secret_principals"));
        // Nothing changed: nothing to do.
        assert!(!f.sync([synced("A\"B", "x \"q\" \\ y\nz", values)]));
    }

    #[test]
    fn the_planned_gauge_follows_listed_secrets_only() {
        let f = Fleet::default();
        let v = [Some(1), None, None, Some(50), None, None, Some(0), Some(0)];
        // Not listed yet: no series.
        assert!(!f.set_listed_gauge("A", Gauge::Planned, Some(40)));
        assert!(!text(&f).contains("planned"));
        f.sync([synced("A", "", v)]);
        assert!(f.set_listed_gauge("A", Gauge::Planned, Some(40)));
        assert!(
            !f.set_listed_gauge("A", Gauge::Planned, Some(40)),
            "unchanged"
        );
        let t = text(&f);
        assert!(t.contains("# TYPE keywarden_secret_rotation_planned_timestamp_seconds gauge\nkeywarden_secret_rotation_planned_timestamp_seconds{secret=\"A\",account=\"\",region=\"\"} 40\n"), "{t}");
        // It survives a sync (the poller does not own it) and goes with None.
        f.sync([synced("A", "", v)]);
        assert!(
            text(&f)
                .contains("planned_timestamp_seconds{secret=\"A\",account=\"\",region=\"\"} 40\n")
        );
        assert!(f.set_listed_gauge("A", Gauge::Planned, None));
        assert!(!text(&f).contains("planned"));
        // A secret no longer listed loses it with every other series.
        f.set_listed_gauge("A", Gauge::Planned, Some(41));
        f.sync(std::iter::empty());
        assert!(!text(&f).contains("planned"));
    }

    #[test]
    fn updates_count_and_removal_retires_every_series() {
        let f = Fleet::default();
        f.set_leads(&["14d".into()]);
        let v = [Some(1), None, None, None, None, None, Some(0), Some(0)];
        f.sync([synced("A", "", v), synced("B", "", v)]);
        f.count_access("A", EventName::GetSecretValue, Outcome::Denied, 3);
        f.count_access("A", EventName::of("ListSecrets"), Outcome::Success, 2);
        f.count_anomaly("A", AnomalyKind::RateSpike);
        f.count_rotation("A", Trigger::Manual, RotationResult::Success);
        f.count_reminder("A", "14d");
        f.count_reminder("A", "3d");
        f.count_reminder_failure("A");
        f.count_incidents("A", 2);
        f.set_gauge("A", Gauge::Principals, 4);
        f.set_gauge("A", Gauge::IncidentOpen, 1);
        let t = text(&f);
        for line in [
            "keywarden_secret_access_events_total{secret=\"A\",account=\"\",region=\"\",event=\"GetSecretValue\",outcome=\"denied\"} 3\n",
            "keywarden_secret_access_events_total{secret=\"A\",account=\"\",region=\"\",event=\"other\",outcome=\"success\"} 2\n",
            "keywarden_secret_access_anomalies_total{secret=\"A\",account=\"\",region=\"\",kind=\"rate_spike\"} 1\n",
            "keywarden_rotations_total{secret=\"A\",account=\"\",region=\"\",trigger=\"manual\",result=\"success\"} 1\n",
            "keywarden_reminders_sent_total{secret=\"A\",account=\"\",region=\"\",lead=\"14d\"} 1\n",
            "keywarden_reminders_sent_total{secret=\"A\",account=\"\",region=\"\",lead=\"3d\"} 1\n",
            "keywarden_reminder_failures_total{secret=\"A\",account=\"\",region=\"\"} 1\n",
            "keywarden_incidents_total{secret=\"A\",account=\"\",region=\"\"} 2\n",
            "keywarden_secret_principals{secret=\"A\",account=\"\",region=\"\"} 4\n",
            "keywarden_incident_open{secret=\"A\",account=\"\",region=\"\"} 1\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
        // B sorts after A within each family.
        let a = t
            .find("keywarden_secret_present{secret=\"A\",account=\"\",region=\"\"}")
            .unwrap();
        let b = t
            .find("keywarden_secret_present{secret=\"B\",account=\"\",region=\"\"}")
            .unwrap();
        assert!(a < b);
        // B is no longer listed: every series of it goes; A keeps its counts.
        assert!(f.sync([synced("A", "", v)]));
        let t = text(&f);
        assert!(!t.contains("secret=\"B\""), "{t}");
        assert!(t.contains("keywarden_incidents_total{secret=\"A\",account=\"\",region=\"\"} 2\n"));
    }

    #[test]
    fn a_secret_only_counted_elsewhere_survives_syncs() {
        let f = Fleet::default();
        f.count_incidents("ONLY_INCIDENT", 1);
        f.sync(std::iter::empty());
        assert!(text(&f).contains(
            "keywarden_incidents_total{secret=\"ONLY_INCIDENT\",account=\"\",region=\"\"} 1\n"
        ));
    }

    /// One record per secret: 608 bytes with the stuck and planned gauges and the rollback-hook
    /// counter of the second round (584 before); 100,000 secrets stay near 61 MB of records.
    #[test]
    fn a_record_is_small() {
        let size = std::mem::size_of::<SecretSeries>();
        assert!(size <= 256, "{size} bytes");
        let counters = std::mem::size_of::<Counters>();
        assert!(counters <= 448, "{counters} bytes");
        eprintln!("record {size} bytes, counters {counters} bytes");
    }

    #[test]
    fn counters_exist_only_once_something_is_counted() {
        let f = Fleet::default();
        let discovered = |name| Synced {
            inventory: false,
            ..synced(name, "", [Some(1); 8])
        };
        f.sync([discovered("app/a")]);
        f.sync([discovered("app/a"), discovered("app/b")]);
        let with_counters = |f: &Fleet| {
            f.read()
                .secrets
                .values()
                .filter(|s| s.counters.get().is_some())
                .count()
        };
        assert_eq!(
            with_counters(&f),
            0,
            "listed discovered secrets have no counter slots"
        );
        f.count_anomaly("app/b", AnomalyKind::NewPrincipal);
        assert_eq!(with_counters(&f), 1);
        let t = text(&f);
        assert!(t.contains("keywarden_secret_access_anomalies_total{secret=\"app/b\""));
        assert!(!t.contains("keywarden_secret_access_anomalies_total{secret=\"app/a\""));
        // A lead declared later reaches the counters that exist, and the new ones.
        f.set_leads(&["14d".to_string()]);
        f.count_reminder("app/a", "14d");
        f.count_reminder("app/b", "14d");
        let t = text(&f);
        assert!(t.contains("keywarden_reminders_sent_total{secret=\"app/a\""));
        assert!(t.contains("keywarden_reminders_sent_total{secret=\"app/b\""));
    }
}
