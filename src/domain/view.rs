//! The one in-memory view of the inventory that the pollers write and everything else reads:
//! the status of every watched secret and the health of each poller.
//!
//! This module does no I/O and never reads the clock: callers pass `now`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::time::Instant;

use serde::Serialize;

use crate::domain::targets::{TargetId, Targets};
use crate::domain::{Severity, State, Step, Strategy, Trigger};

/// Whether a secret comes from the inventory or from discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Managed {
    /// Listed in the configuration.
    Inventory,
    /// Found by `[discovery] name_prefixes`.
    Discovered,
}

impl Managed {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Managed::Inventory => "inventory",
            Managed::Discovered => "discovered",
        }
    }
}

/// Everything keywarden knows about one watched secret. Never holds a value.
/// Timestamps are seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretStatus {
    /// The key of the secret in the view and the API: its inventory name, its Secrets Manager
    /// name when discovered, or `account:region:name` when discovered in another target than
    /// the home one (the `secret` label is then the name alone, see `domain::targets`).
    pub name: String,
    /// The account and region it is read from (its `account` and `region` labels).
    #[serde(skip)]
    pub target: TargetId,
    /// Configured id (name or ARN); the Secrets Manager name when discovered.
    pub id: String,
    /// Full ARN once seen in AWS.
    pub arn: Option<String>,
    /// Inventory or discovered.
    pub managed: Managed,
    /// Alert severity.
    pub severity: Severity,
    /// What a compromise means.
    pub impact: String,
    /// Rotation strategy.
    pub strategy: Strategy,
    /// Exists in AWS and is not scheduled for deletion.
    pub present: bool,
    /// DeletedDate is set.
    pub deletion_scheduled: bool,
    /// Last rotation.
    pub last_rotated: Option<i64>,
    /// Rotation policy in seconds.
    pub interval_seconds: Option<i64>,
    /// Last rotation plus interval.
    pub due: Option<i64>,
    /// `now > due` when this status was computed.
    pub overdue: bool,
    /// When AWS will rotate next (AWS rotation on only).
    pub scheduled: Option<i64>,
    /// AWS-side rotation enabled.
    pub rotation_enabled: bool,
    /// A version other than AWSCURRENT carries AWSPENDING.
    pub pending: bool,
    /// LastAccessedDate.
    pub last_accessed: Option<i64>,
    /// Version id labelled AWSCURRENT.
    pub current_version: Option<String>,
    /// Creation time of that version (ListSecretVersionIds), kept so that the next cycle looks
    /// it up again only when the AWSCURRENT version changes.
    #[serde(skip)]
    pub current_created: Option<i64>,
    /// When this status was computed.
    pub observed_at: i64,
}

impl SecretStatus {
    /// Age of the current value in whole days at `now`.
    pub fn age_days(&self, now: i64) -> Option<i64> {
        self.last_rotated.map(|t| (now - t).div_euclid(86_400))
    }

    /// Whether keywarden's scheduler rotates this secret: it exists, its strategy rotates, and
    /// it is not a `lambda` secret whose rotation AWS runs itself.
    pub fn rotated_by_scheduler(&self) -> bool {
        self.present
            && !matches!(self.strategy, Strategy::None)
            && !(matches!(self.strategy, Strategy::Lambda) && self.rotation_enabled)
    }

    /// When the scheduler plans to rotate it (SPEC §11, [`crate::schedule::planned`]): the last
    /// opening of `window` before the due date, else the first after it. `None` without a window
    /// (such a secret is never rotated by the scheduler), with a `rate()` window, without a due
    /// date, or when the scheduler does not rotate it.
    pub fn planned(&self, window: Option<&crate::schedule::ScheduleExpr>, now: i64) -> Option<i64> {
        if !self.rotated_by_scheduler() {
            return None;
        }
        let at = |t: i64| chrono::DateTime::from_timestamp(t, 0);
        let last = self.last_rotated.and_then(at);
        crate::schedule::planned(window?, at(self.due?)?, last, at(now)?).map(|t| t.timestamp())
    }
}

/// What the access poller learned about one secret. Principals are ARNs: they go to `/secrets`,
/// logs and reminders, never to metric labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AccessFacts {
    /// Principals that read the secret within the baseline window and match no declared
    /// consumer. A scheduled rotation waits while this is not empty; reminders name them.
    pub undeclared_readers: Vec<String>,
    /// Distinct principals that read the secret within the baseline window.
    pub principals: usize,
    /// Anomalies detected on the secret since the daemon started.
    pub anomalies: u64,
}

/// Anomalies kept for `GET /anomalies`.
pub const RECENT_ANOMALIES: usize = 1000;

/// What the access poller reports beyond per-secret facts: the recent anomalies (newest
/// first, at most [`RECENT_ANOMALIES`]) and the counts SPEC §3 has no metric for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccessLog {
    /// Recent anomalies, newest first.
    pub recent: VecDeque<crate::access::detect::Anomaly>,
    /// Log events skipped since start because they were not JSON, oversized or malformed.
    pub skipped_records: u64,
    /// Already counted CloudTrail events read again (overlap re-reads and duplicate
    /// deliveries), since start.
    pub repeated_events: u64,
    /// Principals evicted from full per-secret sets (`access.max_principals_per_secret`).
    pub principal_evictions: u64,
}

impl AccessLog {
    /// Adds anomalies (oldest first in `found`), keeping the newest [`RECENT_ANOMALIES`].
    pub fn push(&mut self, found: impl IntoIterator<Item = crate::access::detect::Anomaly>) {
        for a in found {
            self.recent.push_front(a);
        }
        self.recent.truncate(RECENT_ANOMALIES);
    }
}

/// Rotation state of one secret as `/secrets` shows it (the `rotation` object). Never a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RotationView {
    /// The latest rotation's id.
    pub rotation_id: Option<String>,
    /// Its trigger.
    pub trigger: Option<Trigger>,
    /// Its state: `running`, `grace`, `done`, `failed`, `rolled_back`.
    pub state: Option<State>,
    /// Its next (or failed) step.
    pub step: Option<Step>,
    /// When it was requested (seconds since the epoch).
    pub requested_at: Option<i64>,
    /// Its last change.
    pub updated_at: Option<i64>,
    /// When finalize may run, while in grace.
    pub finalize_after: Option<i64>,
    /// Its last error.
    pub error: Option<String>,
    /// Why a scheduled rotation is not starting although the secret is due.
    pub waiting: Option<String>,
    /// The next opening of the secret's window after now, when it has one.
    pub next_window: Option<i64>,
    /// The planned rotation time ([`SecretStatus::planned`]), as the scheduler last computed it;
    /// `/secrets` shows it as the secret's `planned` field.
    #[serde(skip)]
    pub planned: Option<i64>,
}

/// Health of one poller.
#[derive(Debug, Clone, Default)]
pub struct PollHealth {
    /// End of the last successful cycle.
    pub last_success: Option<Instant>,
    /// Failed cycles since the last success.
    pub consecutive_failures: u64,
    /// Kind of the last error.
    pub last_error: Option<&'static str>,
}

/// The shared state itself.
#[derive(Debug, Default)]
pub struct View {
    /// Watched secrets by `secret` label.
    pub secrets: BTreeMap<String, SecretStatus>,
    /// Poller health by source (`metadata`, `access`).
    pub polls: HashMap<&'static str, PollHealth>,
    /// Access facts by `secret` label (written by the access poller).
    pub access: HashMap<String, AccessFacts>,
    /// Recent anomalies and access counters (written by the access poller).
    pub access_log: AccessLog,
    /// Rotation state by `secret` label (written by the rotation core and its scheduler).
    pub rotations: HashMap<String, RotationView>,
    /// Accounts and regions the last metadata cycle could not read, with the error kind
    /// (their secrets keep their last status; `/readyz` names them without failing).
    pub accounts_down: Vec<(TargetId, &'static str)>,
}

impl View {
    /// Records the end of a poll cycle.
    pub fn record_poll(&mut self, source: &'static str, at: Instant, error: Option<&'static str>) {
        let h = self.polls.entry(source).or_default();
        match error {
            None => {
                h.last_success = Some(at);
                h.consecutive_failures = 0;
                h.last_error = None;
            }
            Some(kind) => {
                h.consecutive_failures += 1;
                h.last_error = Some(kind);
            }
        }
    }

    /// Ready when every listed poller succeeded within three of its intervals.
    /// Returns the reasons it is not.
    pub fn readiness(&self, now: Instant, sources: &[(&'static str, Duration)]) -> Vec<String> {
        let mut problems = Vec::new();
        for (source, every) in sources {
            let limit = every.saturating_mul(3);
            match self.polls.get(source).and_then(|h| h.last_success) {
                None => problems.push(format!("{source} poller has not succeeded yet")),
                Some(t) if now.saturating_duration_since(t) > limit => problems.push(format!(
                    "{source} poller last succeeded {}s ago (limit {}s)",
                    now.saturating_duration_since(t).as_secs(),
                    limit.as_secs()
                )),
                Some(_) => {}
            }
        }
        problems
    }
}

/// The view shared between tasks. Critical sections are short and never await. It also holds
/// the table of targets (account, region) that statuses point into.
#[derive(Debug, Clone, Default)]
pub struct SharedView(Arc<RwLock<View>>, Arc<Targets>);

impl SharedView {
    /// An empty view whose home target is in `home_region`.
    pub fn with_targets(targets: Arc<Targets>) -> SharedView {
        SharedView(Arc::default(), targets)
    }

    /// The table of targets.
    pub fn targets(&self) -> &Arc<Targets> {
        &self.1
    }

    /// Reads the view; a poisoned lock still yields the data (writers never leave it torn).
    pub fn read(&self) -> RwLockReadGuard<'_, View> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the view.
    pub fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view holds one per watched secret (100,000 in an organization): keep it small.
    #[test]
    fn a_status_is_small() {
        let size = std::mem::size_of::<SecretStatus>();
        assert!(size <= 240, "{size} bytes");
    }

    #[test]
    fn readiness_follows_three_intervals() {
        let mut v = View::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(v.readiness(t0, &[("metadata", every)]).len(), 1);
        v.record_poll("metadata", t0, None);
        assert!(
            v.readiness(t0 + Duration::from_secs(30), &[("metadata", every)])
                .is_empty()
        );
        v.record_poll("metadata", t0 + Duration::from_secs(10), Some("network"));
        assert_eq!(v.polls["metadata"].consecutive_failures, 1);
        assert_eq!(
            v.readiness(t0 + Duration::from_secs(31), &[("metadata", every)])
                .len(),
            1
        );
        v.record_poll("metadata", t0 + Duration::from_secs(40), None);
        assert!(
            v.readiness(t0 + Duration::from_secs(41), &[("metadata", every)])
                .is_empty()
        );
    }
}
