//! Access anomaly detection (SPEC §4): pure logic from classified CloudTrail events to findings.
//!
//! [`Detector`] keeps, per secret, the principals that read it within the baseline window
//! (bounded by `max_principals_per_secret`, least recently seen evicted first), the read counts
//! of 5-minute buckets over the baseline (for `rate_spike`) and the recent denied calls (for
//! `denied_burst`). [`Detector::observe`] takes one event and returns the anomalies it raises;
//! with `learning` set (the log group's history read at start) it only learns.
//! [`undeclared_readers`] answers the rotation core's question: which principals read this
//! secret within the baseline window and match no declared consumer.
//!
//! This module does no I/O and never reads the clock: every time comes from the events or is
//! passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

use crate::config::ConsumerPatterns;
use ipnet::IpNet;
use serde::Serialize;

use crate::config::AccessConfig;
use crate::domain::{AnomalyKind, Outcome};

/// Length of a rate bucket and of the denied-burst window.
pub const BUCKET_MS: i64 = 5 * 60 * 1000;
/// An `undeclared_consumer`, `unexpected_source` or `previous_version_read` finding for the same
/// principal (and source address) on the same secret is raised at most once per this period.
pub const RENOTIFY_MS: i64 = 60 * 60 * 1000;
/// Source addresses remembered per principal (for `consumers` and the audit).
pub const MAX_IPS_PER_PRINCIPAL: usize = 16;

/// One finding: what `GET /anomalies` lists and the structured log line carries. Never a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// The `secret` label.
    pub secret: String,
    /// What was found.
    pub kind: AnomalyKind,
    /// The principal of the event that raised it.
    pub principal: String,
    /// Its sourceIPAddress.
    pub source_ip: Option<String>,
    /// CloudTrail eventID.
    pub event_id: String,
    /// CloudTrail eventName.
    pub event_name: String,
    /// eventTime, milliseconds since the epoch.
    pub time_ms: i64,
    /// A sentence with the numbers behind the finding.
    pub detail: String,
}

/// The thresholds of `[access]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Baseline window in milliseconds.
    pub baseline_ms: i64,
    /// A bucket above `spike_factor` times the learned rate...
    pub spike_factor: f64,
    /// ...and with at least this many reads is a spike.
    pub spike_min_reads: u64,
    /// Denied calls within 5 minutes that make a burst.
    pub denied_burst: u64,
    /// Principals remembered per secret.
    pub max_principals: usize,
}

impl From<&AccessConfig> for Thresholds {
    fn from(c: &AccessConfig) -> Thresholds {
        Thresholds {
            baseline_ms: i64::try_from(c.baseline.as_millis()).unwrap_or(i64::MAX / 4),
            spike_factor: c.spike_factor,
            spike_min_reads: c.spike_min_reads,
            denied_burst: c.denied_burst,
            max_principals: c.max_principals_per_secret,
        }
    }
}

/// What the detector needs to know about a secret.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Declared consumers; `None` for a discovered secret (it has no declaration, so
    /// `undeclared_consumer` does not apply).
    pub consumers: Option<&'a ConsumerPatterns>,
    /// Expected source networks; empty means any.
    pub allowed_sources: &'a [IpNet],
    /// Rotation grace period in milliseconds.
    pub grace_ms: i64,
    /// Last rotation (creation of AWSCURRENT), milliseconds, when known.
    pub last_rotated_ms: Option<i64>,
    /// Version id labelled AWSCURRENT, when known.
    pub current_version: Option<&'a str>,
}

/// One classified event on one secret.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// CloudTrail eventID.
    pub event_id: &'a str,
    /// eventTime, milliseconds.
    pub time_ms: i64,
    /// eventName.
    pub event_name: &'a str,
    /// success, denied or error.
    pub outcome: Outcome,
    /// The principal.
    pub principal: &'a str,
    /// sourceIPAddress.
    pub source_ip: Option<&'a str>,
    /// Made by an AWS service (exempt from `unexpected_source`).
    pub aws_service: bool,
    /// requestParameters.versionStage.
    pub version_stage: Option<&'a str>,
    /// requestParameters.versionId.
    pub version_id: Option<&'a str>,
}

impl Event<'_> {
    /// A successful GetSecretValue or BatchGetSecretValue.
    pub fn is_successful_read(&self) -> bool {
        self.outcome == Outcome::Success && crate::cloudtrail::is_read(self.event_name)
    }
}

/// What is known of one principal's reads of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrincipalStats {
    /// First read seen, milliseconds.
    pub first_seen_ms: i64,
    /// Last read seen, milliseconds.
    pub last_seen_ms: i64,
    /// Reads counted live (history learned at start adds none).
    pub reads: u64,
    /// Source addresses seen (at most [`MAX_IPS_PER_PRINCIPAL`]).
    pub source_ips: BTreeSet<String>,
}

/// Per-secret detector state.
#[derive(Debug, Clone, Default)]
struct SecretState {
    /// Readers within the baseline window.
    principals: HashMap<String, PrincipalStats>,
    /// Successful reads per 5-minute bucket (bucket index = ms / BUCKET_MS).
    buckets: BTreeMap<i64, u64>,
    /// Sum of `buckets`.
    bucket_total: u64,
    /// Buckets that already raised `rate_spike`.
    spiked: BTreeSet<i64>,
    /// Times of recent denied calls.
    denied: VecDeque<i64>,
    /// Last time a renotify-limited finding fired, by (kind, principal, address).
    fired: HashMap<(AnomalyKind, String, String), i64>,
    /// Principals evicted because the set was full.
    evictions: u64,
    /// Findings raised since start.
    anomalies: u64,
}

/// The detector: one state per secret.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Thresholds from `[access]`.
    thresholds: Thresholds,
    /// Start of the history the rate is learned over, milliseconds.
    observed_since_ms: i64,
    /// State by `secret` label.
    secrets: HashMap<String, SecretState>,
}

impl Detector {
    /// A detector that has seen nothing; `observed_since_ms` is where its history starts.
    pub fn new(thresholds: Thresholds, observed_since_ms: i64) -> Detector {
        Detector {
            thresholds,
            observed_since_ms,
            secrets: HashMap::new(),
        }
    }

    /// Restores a principal from the store. Returns whether another one was evicted for it.
    pub fn restore_principal(
        &mut self,
        secret: &str,
        principal: &str,
        stats: PrincipalStats,
    ) -> bool {
        let max = self.thresholds.max_principals;
        let state = self.secrets.entry(secret.to_string()).or_default();
        match state.principals.get_mut(principal) {
            Some(p) => {
                p.first_seen_ms = p.first_seen_ms.min(stats.first_seen_ms);
                p.last_seen_ms = p.last_seen_ms.max(stats.last_seen_ms);
                p.reads = p.reads.max(stats.reads);
                false
            }
            None => {
                let evicted = make_room(state, max);
                state.principals.insert(principal.to_string(), stats);
                evicted
            }
        }
    }

    /// Looks at one event on `secret`; returns the findings it raises (none while `learning`).
    pub fn observe(
        &mut self,
        secret: &str,
        policy: &Policy<'_>,
        ev: &Event<'_>,
        learning: bool,
    ) -> Vec<Anomaly> {
        let t = self.thresholds;
        let observed_since = self.observed_since_ms;
        let state = match self.secrets.get_mut(secret) {
            Some(s) => s,
            None => self.secrets.entry(secret.to_string()).or_default(),
        };
        // Each rule sees the state as the rules before it left it; the order is the order in
        // which findings are reported.
        let mut findings: Vec<Finding> = Vec::new();
        if !learning {
            findings.extend(unexpected_source_rule(state, policy, ev));
            findings.extend(denied_burst_rule(state, &t, ev));
        }
        if ev.is_successful_read() {
            if !learning {
                findings.extend(new_principal_rule(state, &t, ev));
                findings.extend(undeclared_consumer_rule(state, policy, ev));
                findings.extend(previous_version_rule(state, policy, ev));
            }
            remember_reader(state, &t, ev, learning);
            findings.extend(rate_spike_rule(state, &t, observed_since, ev, learning));
        }
        state.anomalies += findings.len() as u64;
        findings
            .into_iter()
            .map(|(kind, detail)| Anomaly {
                secret: secret.to_string(),
                kind,
                principal: ev.principal.to_string(),
                source_ip: ev.source_ip.map(str::to_string),
                event_id: ev.event_id.to_string(),
                event_name: ev.event_name.to_string(),
                time_ms: ev.time_ms,
                detail,
            })
            .collect()
    }

    /// Forgets readers not seen within the baseline window before `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms - self.thresholds.baseline_ms;
        for state in self.secrets.values_mut() {
            state.principals.retain(|_, p| p.last_seen_ms >= horizon);
            state.fired.retain(|_, &mut at| at > now_ms - RENOTIFY_MS);
        }
    }

    /// Readers of `secret` within the baseline window before `now_ms`.
    pub fn readers(&self, secret: &str, now_ms: i64) -> Vec<(&str, &PrincipalStats)> {
        let horizon = now_ms - self.thresholds.baseline_ms;
        let mut v: Vec<(&str, &PrincipalStats)> = self
            .secrets
            .get(secret)
            .map(|s| {
                s.principals
                    .iter()
                    .filter(|(_, p)| p.last_seen_ms >= horizon)
                    .map(|(k, p)| (k.as_str(), p))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// One reader's stats.
    pub fn reader(&self, secret: &str, principal: &str) -> Option<&PrincipalStats> {
        self.secrets.get(secret)?.principals.get(principal)
    }

    /// Principals evicted from `secret`'s set because it was full.
    pub fn evictions(&self, secret: &str) -> u64 {
        self.secrets.get(secret).map_or(0, |s| s.evictions)
    }

    /// Findings raised on `secret` since start.
    pub fn anomalies(&self, secret: &str) -> u64 {
        self.secrets.get(secret).map_or(0, |s| s.anomalies)
    }
}

/// A finding of one rule: its kind and a sentence (never a value).
type Finding = (AnomalyKind, String);

/// `unexpected_source`: a call from outside `allowed_sources` (AWS service principals exempt),
/// once per principal and address per [`RENOTIFY_MS`].
fn unexpected_source_rule(
    state: &mut SecretState,
    policy: &Policy<'_>,
    ev: &Event<'_>,
) -> Option<Finding> {
    let ip = unexpected_source(policy.allowed_sources, ev)?;
    renotify(
        state,
        AnomalyKind::UnexpectedSource,
        ev.principal,
        &ip,
        ev.time_ms,
    )
    .then(|| {
        (
            AnomalyKind::UnexpectedSource,
            format!("{} from {ip}, outside allowed_sources", ev.event_name),
        )
    })
}

/// `denied_burst`: `denied_burst` denied calls within 5 minutes; the window starts again after
/// a burst.
fn denied_burst_rule(state: &mut SecretState, t: &Thresholds, ev: &Event<'_>) -> Option<Finding> {
    if ev.outcome != Outcome::Denied {
        return None;
    }
    while state
        .denied
        .front()
        .is_some_and(|&d| d <= ev.time_ms - BUCKET_MS || d > ev.time_ms)
    {
        state.denied.pop_front();
    }
    state.denied.push_back(ev.time_ms);
    if (state.denied.len() as u64) < t.denied_burst {
        return None;
    }
    let n = state.denied.len();
    state.denied.clear();
    Some((
        AnomalyKind::DeniedBurst,
        format!(
            "{n} denied calls within 5 minutes (threshold {})",
            t.denied_burst
        ),
    ))
}

/// `new_principal`: a successful read by a principal not seen reading within the baseline.
fn new_principal_rule(state: &SecretState, t: &Thresholds, ev: &Event<'_>) -> Option<Finding> {
    let known = state
        .principals
        .get(ev.principal)
        .is_some_and(|p| p.last_seen_ms >= ev.time_ms - t.baseline_ms);
    (!known).then(|| {
        (
            AnomalyKind::NewPrincipal,
            "first read by this principal within the baseline window".to_string(),
        )
    })
}

/// `undeclared_consumer`: a successful read by a principal that matches no declared consumer,
/// once per principal per [`RENOTIFY_MS`].
fn undeclared_consumer_rule(
    state: &mut SecretState,
    policy: &Policy<'_>,
    ev: &Event<'_>,
) -> Option<Finding> {
    let consumers = policy.consumers?;
    (!consumers.is_match(ev.principal)
        && renotify(
            state,
            AnomalyKind::UndeclaredConsumer,
            ev.principal,
            "",
            ev.time_ms,
        ))
    .then(|| {
        (
            AnomalyKind::UndeclaredConsumer,
            "read by a principal that matches no declared consumer".to_string(),
        )
    })
}

/// `previous_version_read`: a read of AWSPREVIOUS or a non-current version after the grace
/// period, once per principal per [`RENOTIFY_MS`].
fn previous_version_rule(
    state: &mut SecretState,
    policy: &Policy<'_>,
    ev: &Event<'_>,
) -> Option<Finding> {
    let version = previous_version(policy, ev)?;
    renotify(
        state,
        AnomalyKind::PreviousVersionRead,
        ev.principal,
        "",
        ev.time_ms,
    )
    .then(|| {
        (
            AnomalyKind::PreviousVersionRead,
            format!("read of {version} after the rotation grace period"),
        )
    })
}

/// Remembers a successful reader (first and last seen, reads outside learning, addresses),
/// evicting the least recent one when the set is full.
fn remember_reader(state: &mut SecretState, t: &Thresholds, ev: &Event<'_>, learning: bool) {
    match state.principals.get_mut(ev.principal) {
        Some(p) => {
            p.first_seen_ms = p.first_seen_ms.min(ev.time_ms);
            p.last_seen_ms = p.last_seen_ms.max(ev.time_ms);
            if !learning {
                p.reads += 1;
            }
            remember_ip(p, ev.source_ip);
        }
        None => {
            let _ = make_room(state, t.max_principals);
            let mut p = PrincipalStats {
                first_seen_ms: ev.time_ms,
                last_seen_ms: ev.time_ms,
                reads: u64::from(!learning),
                source_ips: BTreeSet::new(),
            };
            remember_ip(&mut p, ev.source_ip);
            state.principals.insert(ev.principal.to_string(), p);
        }
    }
}

/// `rate_spike`: counts the read in its 5-minute bucket (also while learning) and compares the
/// bucket with the mean of the others since reads were first seen; once per bucket.
fn rate_spike_rule(
    state: &mut SecretState,
    t: &Thresholds,
    observed_since: i64,
    ev: &Event<'_>,
    learning: bool,
) -> Option<Finding> {
    let bucket = ev.time_ms.div_euclid(BUCKET_MS);
    let oldest = (ev.time_ms - t.baseline_ms).div_euclid(BUCKET_MS);
    if oldest > 0 {
        while let Some((&b, &n)) = state.buckets.first_key_value() {
            if b >= oldest {
                break;
            }
            state.buckets.remove(&b);
            state.bucket_total -= n;
        }
        while state.spiked.first().is_some_and(|&b| b < oldest) {
            state.spiked.pop_first();
        }
    }
    let count = {
        let c = state.buckets.entry(bucket).or_insert(0);
        *c += 1;
        *c
    };
    state.bucket_total += 1;
    if learning || count < t.spike_min_reads || state.spiked.contains(&bucket) {
        return None;
    }
    // The rate is learned since reads were first seen (a trail younger than the baseline window
    // does not dilute it), and never before `observed_since`.
    let first_seen = state.buckets.first_key_value().map_or(bucket, |(&b, _)| b);
    let first = observed_since
        .div_euclid(BUCKET_MS)
        .max(oldest)
        .max(first_seen);
    let span = (bucket - first).max(1) as f64;
    let rate = (state.bucket_total - count) as f64 / span;
    if count as f64 <= t.spike_factor * rate {
        return None;
    }
    state.spiked.insert(bucket);
    Some((
        AnomalyKind::RateSpike,
        format!(
            "{count} reads in 5 minutes; learned rate {rate:.2} per 5 minutes (factor {}, floor {})",
            t.spike_factor, t.spike_min_reads
        ),
    ))
}

/// Evicts the least recently seen principal when the set is full. Returns whether it did.
fn make_room(state: &mut SecretState, max: usize) -> bool {
    if state.principals.len() < max.max(1) {
        return false;
    }
    let oldest = state
        .principals
        .iter()
        .min_by(|a, b| a.1.last_seen_ms.cmp(&b.1.last_seen_ms).then(a.0.cmp(b.0)))
        .map(|(k, _)| k.clone());
    match oldest {
        Some(k) => {
            state.principals.remove(&k);
            state.evictions += 1;
            true
        }
        None => false,
    }
}

fn remember_ip(p: &mut PrincipalStats, ip: Option<&str>) {
    if let Some(ip) = ip
        && p.source_ips.len() < MAX_IPS_PER_PRINCIPAL
        && !p.source_ips.contains(ip)
    {
        p.source_ips.insert(ip.to_string());
    }
}

/// Whether a finding keyed by (kind, principal, address) may fire now; records it if so.
fn renotify(
    state: &mut SecretState,
    kind: AnomalyKind,
    principal: &str,
    addr: &str,
    now: i64,
) -> bool {
    let key = (kind, principal.to_string(), addr.to_string());
    match state.fired.get(&key) {
        Some(&at) if now >= at && now - at < RENOTIFY_MS => false,
        _ => {
            state.fired.insert(key, now);
            true
        }
    }
}

/// The source address of `ev` when it lies outside `allowed` (AWS service calls and host-name
/// sources are exempt; an empty list allows everything).
pub fn unexpected_source(allowed: &[IpNet], ev: &Event<'_>) -> Option<String> {
    if allowed.is_empty() || ev.aws_service {
        return None;
    }
    let ip: IpAddr = ev.source_ip?.parse().ok()?;
    (!allowed.iter().any(|n| n.contains(&ip))).then(|| ip.to_string())
}

/// The version named by a read of a previous version after the grace period, if `ev` is one.
pub fn previous_version<'a>(policy: &Policy<'_>, ev: &Event<'a>) -> Option<&'a str> {
    let rotated = policy.last_rotated_ms?;
    if ev.time_ms <= rotated.saturating_add(policy.grace_ms) {
        return None;
    }
    if let Some(stage) = ev.version_stage {
        return (stage == "AWSPREVIOUS").then_some(stage);
    }
    let id = ev.version_id?;
    let current = policy.current_version?;
    (id != current).then_some(id)
}

/// The rotation core's question: which of `readers` (principal, last read in milliseconds) read
/// the secret within `baseline_ms` before `now_ms` and match none of `consumers`. Sorted,
/// without duplicates.
pub fn undeclared_readers<'a>(
    readers: impl IntoIterator<Item = (&'a str, i64)>,
    consumers: &ConsumerPatterns,
    now_ms: i64,
    baseline_ms: i64,
) -> Vec<String> {
    let horizon = now_ms - baseline_ms;
    let mut out: Vec<String> = readers
        .into_iter()
        .filter(|(p, last)| *last >= horizon && !consumers.is_match(p))
        .map(|(p, _)| p.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % BUCKET_MS;
    const APP: &str = "arn:aws:sts::1:assumed-role/app-a/i-1";
    const INTRUDER: &str = "arn:aws:sts::1:assumed-role/intruder/x";

    fn globs(patterns: &[&str]) -> ConsumerPatterns {
        ConsumerPatterns::new(patterns).unwrap()
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            baseline_ms: 14 * 86_400_000,
            spike_factor: 5.0,
            spike_min_reads: 20,
            denied_burst: 5,
            max_principals: 3,
        }
    }

    fn ev(principal: &'static str, at: i64) -> Event<'static> {
        Event {
            event_id: "e",
            time_ms: at,
            event_name: "GetSecretValue",
            outcome: Outcome::Success,
            principal,
            source_ip: Some("10.0.0.1"),
            aws_service: false,
            version_stage: None,
            version_id: None,
        }
    }

    /// A scenario: events after a history; the kinds each live event raises.
    struct Case {
        name: &'static str,
        history: Vec<Event<'static>>,
        live: Vec<(Event<'static>, Vec<AnomalyKind>)>,
    }

    fn check(case: Case) {
        let consumers = globs(&["arn:aws:sts::1:assumed-role/app-*/*"]);
        let allowed: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let policy = Policy {
            consumers: Some(&consumers),
            allowed_sources: &allowed,
            grace_ms: 48 * 3_600_000,
            last_rotated_ms: Some(T0 - 72 * 3_600_000),
            current_version: Some("v2"),
        };
        let mut d = Detector::new(thresholds(), T0 - 86_400_000);
        for h in &case.history {
            assert!(
                d.observe("S", &policy, h, true).is_empty(),
                "{}: history raised",
                case.name
            );
        }
        for (i, (e, expected)) in case.live.iter().enumerate() {
            let mut got: Vec<AnomalyKind> = d
                .observe("S", &policy, e, false)
                .iter()
                .map(|a| a.kind)
                .collect();
            got.sort();
            let mut expected = expected.clone();
            expected.sort();
            assert_eq!(got, expected, "{}: live event {i}", case.name);
        }
    }

    #[test]
    fn every_kind_fires_and_stays_quiet() {
        use AnomalyKind::*;
        let steady: Vec<Event<'static>> = (0..288)
            .map(|i| ev(APP, T0 - 86_400_000 + i * BUCKET_MS))
            .collect();
        let cases = vec![
            Case {
                name: "known declared reader is quiet",
                history: steady.clone(),
                live: vec![(ev(APP, T0), vec![]), (ev(APP, T0 + MIN), vec![])],
            },
            Case {
                name: "first read by a declared reader is new_principal only",
                history: vec![],
                live: vec![
                    (ev(APP, T0), vec![NewPrincipal]),
                    (ev(APP, T0 + MIN), vec![]),
                ],
            },
            Case {
                name: "undeclared reader: both on first read, renotified after an hour",
                history: vec![],
                live: vec![
                    (ev(INTRUDER, T0), vec![NewPrincipal, UndeclaredConsumer]),
                    (ev(INTRUDER, T0 + MIN), vec![]),
                    (ev(INTRUDER, T0 + 61 * MIN), vec![UndeclaredConsumer]),
                ],
            },
            Case {
                name: "undeclared reader seen in history is not new but still undeclared",
                history: vec![ev(INTRUDER, T0 - 3_600_000)],
                live: vec![(ev(INTRUDER, T0), vec![UndeclaredConsumer])],
            },
            Case {
                name: "reader older than the baseline is new again",
                history: vec![ev(APP, T0 - 15 * 86_400_000)],
                live: vec![(ev(APP, T0), vec![NewPrincipal])],
            },
            Case {
                name: "denied reads are no reads; five within 5 minutes are a burst",
                history: steady.clone(),
                live: (0..6)
                    .map(|i| {
                        let mut e = ev(APP, T0 + i * 30_000);
                        e.outcome = Outcome::Denied;
                        (e, if i == 4 { vec![DeniedBurst] } else { vec![] })
                    })
                    .collect(),
            },
            Case {
                name: "denied calls spread beyond 5 minutes are no burst",
                history: vec![],
                live: (0..8)
                    .map(|i| {
                        let mut e = ev(APP, T0 + i * 2 * MIN);
                        e.outcome = Outcome::Denied;
                        e.event_name = "DescribeSecret";
                        (e, vec![])
                    })
                    .collect(),
            },
            Case {
                name: "errors other than denied are not a burst",
                history: vec![],
                live: (0..6)
                    .map(|i| {
                        let mut e = ev(APP, T0 + i * 1000);
                        e.outcome = Outcome::Error;
                        (e, vec![])
                    })
                    .collect(),
            },
            Case {
                name: "outside allowed sources, AWS services exempt",
                history: steady.clone(),
                live: vec![
                    (
                        Event {
                            source_ip: Some("203.0.113.9"),
                            ..ev(APP, T0)
                        },
                        vec![UnexpectedSource],
                    ),
                    (
                        Event {
                            source_ip: Some("203.0.113.9"),
                            ..ev(APP, T0 + MIN)
                        },
                        vec![],
                    ),
                    (
                        Event {
                            source_ip: Some("198.51.100.1"),
                            event_name: "DescribeSecret",
                            ..ev(APP, T0 + 2 * MIN)
                        },
                        vec![UnexpectedSource],
                    ),
                    (
                        Event {
                            source_ip: Some("203.0.113.7"),
                            aws_service: true,
                            ..ev(APP, T0 + 3 * MIN)
                        },
                        vec![],
                    ),
                    (
                        Event {
                            source_ip: Some("secretsmanager.amazonaws.com"),
                            ..ev(APP, T0 + 4 * MIN)
                        },
                        vec![],
                    ),
                ],
            },
            Case {
                name: "previous version after grace; current and pending are fine",
                history: steady.clone(),
                live: vec![
                    (
                        Event {
                            version_stage: Some("AWSCURRENT"),
                            ..ev(APP, T0)
                        },
                        vec![],
                    ),
                    (
                        Event {
                            version_stage: Some("AWSPENDING"),
                            ..ev(APP, T0)
                        },
                        vec![],
                    ),
                    (
                        Event {
                            version_id: Some("v2"),
                            ..ev(APP, T0)
                        },
                        vec![],
                    ),
                    (
                        Event {
                            version_stage: Some("AWSPREVIOUS"),
                            ..ev(APP, T0)
                        },
                        vec![PreviousVersionRead],
                    ),
                    (
                        Event {
                            version_id: Some("v1"),
                            ..ev(APP, T0 + MIN)
                        },
                        vec![],
                    ),
                    (
                        Event {
                            version_id: Some("v1"),
                            ..ev(APP, T0 + 61 * MIN)
                        },
                        vec![PreviousVersionRead],
                    ),
                ],
            },
            Case {
                name: "spike over a steady rate fires once per bucket",
                history: steady.clone(),
                live: (0..25)
                    .map(|i| {
                        (
                            ev(APP, T0 + i * 1000),
                            if i == 19 { vec![RateSpike] } else { vec![] },
                        )
                    })
                    .collect(),
            },
            Case {
                name: "below the floor is no spike",
                history: steady.clone(),
                live: (0..19).map(|i| (ev(APP, T0 + i * 1000), vec![])).collect(),
            },
            Case {
                name: "a busy secret needs factor times its rate",
                history: (0..288 * 10)
                    .map(|i| {
                        ev(
                            APP,
                            T0 - 86_400_000 + (i / 10) * BUCKET_MS + (i % 10) * 1000,
                        )
                    })
                    .collect(),
                live: (0..51)
                    .map(|i| {
                        (
                            ev(APP, T0 + i * 1000),
                            if i == 50 { vec![RateSpike] } else { vec![] },
                        )
                    })
                    .collect(),
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn history_raises_nothing_even_when_it_would() {
        let consumers = globs(&[]);
        let policy = Policy {
            consumers: Some(&consumers),
            allowed_sources: &["10.0.0.0/8".parse().unwrap()],
            grace_ms: 0,
            last_rotated_ms: Some(0),
            current_version: Some("v2"),
        };
        let mut d = Detector::new(thresholds(), T0);
        for i in 0..100 {
            let mut e = ev(INTRUDER, T0 + i);
            e.source_ip = Some("1.2.3.4");
            e.version_stage = Some("AWSPREVIOUS");
            if i % 2 == 0 {
                e.outcome = Outcome::Denied;
            }
            assert!(d.observe("S", &policy, &e, true).is_empty());
        }
        assert_eq!(d.readers("S", T0 + 100).len(), 1);
        assert_eq!(
            d.reader("S", INTRUDER).unwrap().reads,
            0,
            "history adds no reads"
        );
        assert_eq!(d.anomalies("S"), 0);
    }

    #[test]
    fn discovered_secrets_have_no_undeclared_consumer() {
        let policy = Policy {
            consumers: None,
            allowed_sources: &[],
            grace_ms: 0,
            last_rotated_ms: None,
            current_version: None,
        };
        let mut d = Detector::new(thresholds(), T0);
        let kinds: Vec<AnomalyKind> = d
            .observe("S", &policy, &ev(INTRUDER, T0), false)
            .iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, [AnomalyKind::NewPrincipal]);
    }

    #[test]
    fn principal_sets_are_bounded_least_recent_first() {
        let consumers = globs(&["*"]);
        let policy = Policy {
            consumers: Some(&consumers),
            allowed_sources: &[],
            grace_ms: 0,
            last_rotated_ms: None,
            current_version: None,
        };
        let mut d = Detector::new(thresholds(), T0);
        let names = ["p1", "p2", "p3", "p4", "p5"];
        for (i, p) in names.iter().enumerate() {
            d.observe("S", &policy, &ev(p, T0 + i as i64), false);
        }
        // p3 is read again: p4 is now the least recent.
        d.observe("S", &policy, &ev("p3", T0 + 10), false);
        let readers: Vec<&str> = d.readers("S", T0 + 10).iter().map(|r| r.0).collect();
        assert_eq!(readers, ["p3", "p4", "p5"]);
        assert_eq!(d.evictions("S"), 2);
        // An evicted principal reading again is new again.
        let kinds: Vec<AnomalyKind> = d
            .observe("S", &policy, &ev("p1", T0 + 20), false)
            .iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, [AnomalyKind::NewPrincipal]);
        assert_eq!(d.evictions("S"), 3);
        d.expire(T0 + 20 + thresholds().baseline_ms - 15);
        let readers: Vec<&str> = d.readers("S", T0 + 20).iter().map(|r| r.0).collect();
        assert_eq!(readers, ["p1", "p3"]);
    }

    #[test]
    fn undeclared_readers_within_the_baseline() {
        let consumers = globs(&[
            "arn:aws:sts::1:assumed-role/app-*/*",
            "arn:aws:iam::1:user/deploy",
        ]);
        let now = 100 * 86_400_000;
        let baseline = 14 * 86_400_000;
        type Case<'a> = (&'a [(&'a str, i64)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[(APP, now), ("arn:aws:iam::1:user/deploy", now)], &[]),
            (&[(INTRUDER, now - 1000), (APP, now)], &[INTRUDER]),
            (&[(INTRUDER, now - baseline - 1)], &[]),
            (
                &[(INTRUDER, now - baseline), ("z", now), (INTRUDER, now)],
                &[INTRUDER, "z"],
            ),
        ];
        for (readers, expected) in cases {
            let got = undeclared_readers(readers.iter().copied(), &consumers, now, baseline);
            assert_eq!(got, *expected, "{readers:?}");
        }
    }
}
