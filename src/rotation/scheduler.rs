//! The scheduler: starts scheduled rotations of due secrets inside their windows.
//!
//! Every [`SCHEDULER_EVERY`] it reads the view and the journal for each inventory secret, asks
//! [`super::scheduled::decide`] (the pure decision) whether to start, wait or stay idle, shows a
//! waiting reason in the view, exports the planned time
//! (`keywarden_secret_rotation_planned_timestamp_seconds`), and requests a rotation from the
//! engine when it is time.
//!
//! With `[reminders]` configured it also records the start and end notices of scheduled
//! rotations (SPEC §11) in the reminder ledger, which the reminder task publishes: the start
//! right after the request was journaled, the end once the rotation is `done`, `failed` or
//! `rolled_back` (a rotation in `grace` has not ended). Besides its periodic pass it wakes on
//! every published rotation change to look at the view's rotations, so an end is recorded at
//! once. The journal is the truth: each pass also looks at each secret's latest journaled
//! rotation, so a notice whose recording a crash prevented is recorded after the restart (the
//! intent's `INSERT OR IGNORE` and a cache of the keys known to be in the ledger make this
//! idempotent). Rotations whose start (or end) is older than [`NOTICE_STALE`] get no notice: an
//! upgrade does not announce old rotations.
//!
//! A due secret with `verify` checks starts only once they pass (the pre-flight, SPEC §12); until
//! then `/secrets` shows the failing check as its waiting reason. After an automatic rollback
//! the pure decision keeps it waiting (see [`super::scheduled`]).
//!
//! It must never import the HTTP server, the CLI, the incident workflow or the finalizer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{error, info, warn};

use crate::aws::SecretsWriteApi;
use crate::config::SecretSpec;
use crate::domain::view::{RotationView, SecretStatus};
use crate::domain::{RotationResult, State, Step};
use crate::reminder::{
    LedgerStore, NoticeKind, ReminderKey, RotationNotice, notice_key, render_notice,
};

use super::engine::{RequestError, RotationCore};
use super::failpoint;
use super::journal::{JournalStore, Rotation, Trigger};
use super::scheduled;
use super::strategy;

/// How often the scheduler looks for due secrets.
const SCHEDULER_EVERY: Duration = Duration::from_secs(5);

/// Rotations that started (or ended) longer ago than this get no notice.
pub const NOTICE_STALE: Duration = Duration::from_secs(86_400);

/// What a notice needs of a rotation, from its journal row or the view.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    id: &'a str,
    trigger: Trigger,
    state: State,
    step: Step,
    requested_at: i64,
    updated_at: i64,
    error: Option<&'a str>,
}

impl<'a> Seen<'a> {
    fn of_row(r: &'a Rotation) -> Seen<'a> {
        Seen {
            id: &r.id,
            trigger: r.trigger,
            state: r.state,
            step: r.step,
            requested_at: r.requested_at,
            updated_at: r.updated_at,
            error: r.error.as_deref(),
        }
    }

    fn of_view(v: &'a RotationView) -> Option<Seen<'a>> {
        Some(Seen {
            id: v.rotation_id.as_deref()?,
            trigger: v.trigger?,
            state: v.state?,
            step: v.step?,
            requested_at: v.requested_at?,
            updated_at: v.updated_at?,
            error: v.error.as_deref(),
        })
    }

    /// How it ended, when it has.
    fn result(&self) -> Option<RotationResult> {
        match self.state {
            State::Done => Some(RotationResult::Success),
            State::Failed => Some(RotationResult::Failure),
            State::RolledBack => Some(RotationResult::RolledBack),
            State::Running | State::Grace => None,
        }
    }
}

/// The notices a scheduled rotation is owed at `now`: its start (unless stale), then its end
/// once it has ended (unless stale). Pure.
fn owed(r: &Seen<'_>, now: i64) -> Vec<NoticeKind> {
    if r.trigger != Trigger::Scheduled {
        return Vec::new();
    }
    let fresh = |t: i64| t >= now.saturating_sub(NOTICE_STALE.as_secs() as i64);
    let mut out = Vec::new();
    if fresh(r.requested_at) {
        out.push(NoticeKind::Started);
    }
    if r.result().is_some() && fresh(r.updated_at) {
        out.push(NoticeKind::Ended);
    }
    out
}

impl<A: SecretsWriteApi> RotationCore<A> {
    /// Starts scheduled rotations of due secrets inside their windows, until shutdown.
    pub async fn run_scheduler(self: Arc<Self>) {
        let stop = self.shutdown.clone();
        let mut said: HashMap<String, String> = HashMap::new();
        let mut noted: HashSet<ReminderKey> = HashSet::new();
        let mut changes = self.subscribe();
        let mut next_pass = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_pass {
                self.schedule_once(&mut said, &mut noted).await;
                next_pass = tokio::time::Instant::now() + SCHEDULER_EVERY;
            } else {
                self.note_from_view(&mut noted);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_pass) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The core is gone; only the periodic pass is left.
                        changes = self.subscribe();
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Records the notices owed to the scheduled rotations the view shows (woken by a change).
    fn note_from_view(&self, noted: &mut HashSet<ReminderKey>) {
        if self.config.reminders.is_none() {
            return;
        }
        let now = Utc::now().timestamp();
        let rows: Vec<(RotationView, SecretStatus)> = {
            let view = self.view.read();
            view.rotations
                .iter()
                .filter(|(_, r)| r.trigger == Some(Trigger::Scheduled))
                .filter_map(|(name, r)| Some((r.clone(), view.secrets.get(name)?.clone())))
                .collect()
        };
        for (r, status) in &rows {
            let Some(seen) = Seen::of_view(r) else {
                continue;
            };
            let spec = self.config.secrets.iter().find(|s| s.name == status.name);
            self.note(&seen, status, spec, None, now, noted);
        }
    }

    /// Records the notices `r` is owed and the ledger does not hold yet, in one transaction.
    fn note(
        &self,
        r: &Seen<'_>,
        status: &SecretStatus,
        spec: Option<&SecretSpec>,
        planned: Option<i64>,
        now: i64,
        noted: &mut HashSet<ReminderKey>,
    ) {
        if self.config.reminders.is_none() {
            return;
        }
        let wanted: Vec<(NoticeKind, ReminderKey)> = owed(r, now)
            .into_iter()
            .map(|k| (k, notice_key(&status.name, r.requested_at, k)))
            .filter(|(_, key)| !noted.contains(key))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let keys: Vec<ReminderKey> = wanted.iter().map(|(_, k)| k.clone()).collect();
        match self.store.known(&keys) {
            Ok(present) => noted.extend(present),
            Err(e) => {
                error!(secret = %status.name, error = %e, "Cannot read the reminder ledger for rotation notices; will try again.");
                return;
            }
        }
        let result = r.result().map(RotationResult::as_str);
        let intents: Vec<(ReminderKey, crate::reminder::Message)> = wanted
            .into_iter()
            .filter(|(_, key)| !noted.contains(key))
            .map(|(kind, key)| {
                let ended = kind == NoticeKind::Ended;
                let n = RotationNotice {
                    kind,
                    rotation_id: r.id,
                    requested_at: r.requested_at,
                    at: if ended { r.updated_at } else { r.requested_at },
                    result: if ended { result } else { None },
                    step: r.step.as_str(),
                    error: r.error,
                    planned: if ended { None } else { planned },
                    trigger: r.trigger.as_str(),
                    verify: None,
                };
                let message = render_notice(&n, status, spec);
                (key, message)
            })
            .collect();
        if intents.is_empty() {
            return;
        }
        match self.store.record_intents(&intents, now) {
            Ok(_) => {
                for (key, _) in &intents {
                    info!(secret = %status.name, rotation = %r.id, kind = key.kind(), "Scheduled rotation notice recorded.");
                    noted.insert(key.clone());
                }
                failpoint::hit("notice:recorded");
            }
            Err(e) => {
                error!(secret = %status.name, rotation = %r.id, error = %e, "Cannot record a scheduled rotation notice; will try again.");
            }
        }
    }

    /// One scheduler pass; `said` remembers the last waiting reason logged per secret, `noted`
    /// the notice keys known to be in the ledger.
    async fn schedule_once(
        self: &Arc<Self>,
        said: &mut HashMap<String, String>,
        noted: &mut HashSet<ReminderKey>,
    ) {
        let now = Utc::now();
        for spec in &self.config.secrets {
            let (status, undeclared) = {
                let view = self.view.read();
                let Some(st) = view.secrets.get(&spec.name).cloned() else {
                    continue;
                };
                // With access monitoring on, readers are unknown until its first report.
                let access_reported = self.config.access.is_none()
                    || view
                        .polls
                        .get("access")
                        .is_some_and(|h| h.last_success.is_some());
                let undeclared = access_reported.then(|| {
                    view.access
                        .get(&spec.name)
                        .map(|a| a.undeclared_readers.clone())
                        .unwrap_or_default()
                });
                (st, undeclared)
            };
            let last = match self.store.recent_rotations(Some(&spec.name), 1) {
                Ok(mut v) => v.pop(),
                Err(e) => {
                    error!(error = %e, "Scheduler cannot read the rotation journal.");
                    return;
                }
            };
            let digest = super::verify::config_digest(spec);
            let scheduled::Verdict {
                decision,
                next_window,
                planned,
            } = scheduled::decide(scheduled::Inputs {
                config_digest: Some(&digest),
                now,
                status: &status,
                strategy: spec.rotation.strategy,
                window: spec.window.as_ref(),
                undeclared: undeclared.as_deref(),
                last: last.as_ref(),
                lead: self
                    .config
                    .reminders
                    .as_ref()
                    .and_then(|r| r.lead.iter().min().copied()),
            });
            let waiting = match &decision {
                scheduled::Decision::Wait(w) => Some(w.clone()),
                _ => None,
            };
            {
                let mut view = self.view.write();
                let entry: &mut RotationView = view.rotations.entry(spec.name.clone()).or_default();
                entry.waiting = waiting.clone();
                entry.next_window = next_window.map(|t| t.timestamp());
                entry.planned = planned;
            }
            self.metrics.set_planned(&spec.name, planned);
            if let Some(last) = &last {
                self.note(
                    &Seen::of_row(last),
                    &status,
                    Some(spec),
                    planned,
                    now.timestamp(),
                    noted,
                );
            }
            match decision {
                scheduled::Decision::Wait(why) => {
                    if said.get(&spec.name) != Some(&why) {
                        warn!(secret = %spec.name, reason = %why, "Scheduled rotation is due but waits.");
                        said.insert(spec.name.clone(), why);
                    }
                }
                scheduled::Decision::Start => {
                    if let Err(refused) = strategy::for_spec(&spec.name, &spec.rotation) {
                        let why = refused.to_string();
                        self.view
                            .write()
                            .rotations
                            .entry(spec.name.clone())
                            .or_default()
                            .waiting = Some(why.clone());
                        if said.get(&spec.name) != Some(&why) {
                            warn!(secret = %spec.name, reason = %why, "Scheduled rotation is due but cannot start.");
                            said.insert(spec.name.clone(), why);
                        }
                        continue;
                    }
                    match self
                        .request_guarded(&spec.name, Trigger::Scheduled, false)
                        .await
                    {
                        Ok(r) => {
                            said.remove(&spec.name);
                            info!(secret = %spec.name, rotation = %r.id, "Scheduled rotation started inside the window.");
                            self.note(
                                &Seen::of_row(&r),
                                &status,
                                Some(spec),
                                planned,
                                now.timestamp(),
                                noted,
                            );
                        }
                        Err(RequestError::Busy(_)) => {}
                        Err(RequestError::Preflight { check, value }) => {
                            let why = format!(
                                "pre-flight check {check} failed: {value}; the rotation starts once it passes"
                            );
                            self.view
                                .write()
                                .rotations
                                .entry(spec.name.clone())
                                .or_default()
                                .waiting = Some(why.clone());
                            if said.get(&spec.name) != Some(&why) {
                                warn!(secret = %spec.name, reason = %why, "Scheduled rotation is due but waits.");
                                said.insert(spec.name.clone(), why);
                            }
                            continue;
                        }
                        Err(e) => {
                            warn!(secret = %spec.name, error = %e, "Scheduled rotation could not start.")
                        }
                    }
                }
                scheduled::Decision::Idle | scheduled::Decision::Busy => {
                    said.remove(&spec.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(trigger: Trigger, state: State, requested_at: i64, updated_at: i64) -> Seen<'static> {
        Seen {
            id: "r",
            trigger,
            state,
            step: Step::Set,
            requested_at,
            updated_at,
            error: None,
        }
    }

    #[test]
    fn a_scheduled_rotation_is_owed_a_start_and_an_end_once_it_ended() {
        use NoticeKind::{Ended, Started};
        let now = 1_800_000_000;
        let day = NOTICE_STALE.as_secs() as i64;
        let cases = [
            (Trigger::Scheduled, State::Running, now, now, vec![Started]),
            // Grace has not ended: the old value is still kept.
            (Trigger::Scheduled, State::Grace, now, now, vec![Started]),
            (
                Trigger::Scheduled,
                State::Done,
                now,
                now,
                vec![Started, Ended],
            ),
            (
                Trigger::Scheduled,
                State::Failed,
                now,
                now,
                vec![Started, Ended],
            ),
            (
                Trigger::Scheduled,
                State::RolledBack,
                now,
                now,
                vec![Started, Ended],
            ),
            // Started long ago, ended now: only the end is still news.
            (
                Trigger::Scheduled,
                State::Done,
                now - day - 1,
                now,
                vec![Ended],
            ),
            // Old history (an upgrade): nothing.
            (
                Trigger::Scheduled,
                State::Done,
                now - 3 * day,
                now - 2 * day,
                vec![],
            ),
            // Manual and compromise rotations have their own reporting.
            (Trigger::Manual, State::Done, now, now, vec![]),
            (Trigger::Compromise, State::Running, now, now, vec![]),
        ];
        for (trigger, state, requested, updated, want) in cases {
            assert_eq!(
                owed(&seen(trigger, state, requested, updated), now),
                want,
                "{trigger:?} {state:?} {requested} {updated}"
            );
        }
        assert_eq!(
            seen(Trigger::Scheduled, State::Failed, now, now)
                .result()
                .map(RotationResult::as_str),
            Some("failure")
        );
    }
}
