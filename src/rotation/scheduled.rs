//! When a scheduled rotation starts (pure: no I/O, `now` is a parameter).
//!
//! A secret with a `cron()` window has a planned time ([`SecretStatus::planned`], SPEC §11): the
//! last opening of its window before its due date, or the first opening after it when none is
//! left (an overdue secret: the window open now, or the next one). It is eligible once now reaches
//! the planned time, and it says why it waits when it is overdue before that. A window is open for
//! [`WINDOW_OPEN`] after each opening. A secret without a window is never rotated by the
//! scheduler (SPEC §6: scheduled rotations start only inside the window) and has no planned time;
//! once overdue, or inside its shortest reminder lead when reminders are configured, it says so.
//! A `rate()` window has no calendar, so no planned time: such a secret keeps that older rule
//! (eligible once overdue or inside the lead) and starts when [`open_since`] finds the window open.
//! It waits,
//! saying why, while a version other than AWSCURRENT carries AWSPENDING, while undeclared
//! principals read it within the access baseline, while the view has not yet seen keywarden's own
//! last rotation of it (its version as AWSCURRENT, or a listing observed more than
//! [`LIST_SECRETS_LAG`] after it finished: ListSecrets may lag changes), and after a scheduled rotation failed in the current window (the next
//! window tries again). `lambda` secrets with AWS-side rotation enabled are left to AWS. After an
//! automatic rollback by a verify check (SPEC §12) it waits until an operator rotates by hand
//! (the latest rotation is then another one) or the secret's configuration changes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Strategy;
use crate::domain::view::SecretStatus;
use crate::schedule::ScheduleExpr;

use super::journal::{Rotation, State, Trigger};

/// How long a window stays open after each occurrence.
pub use crate::schedule::WINDOW_OPEN;

/// How far ListSecrets may lag behind a change on AWS (five minutes): until the view shows
/// keywarden's last rotation, a status observed within this long after it finished may be the
/// listing from before it.
pub const LIST_SECRETS_LAG: Duration = Duration::from_secs(300);

/// What the scheduler does about one secret now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not due, not rotatable by the scheduler, or absent: nothing to say.
    Idle,
    /// A rotation of it is already active.
    Busy,
    /// Due, but held back for this reason.
    Wait(String),
    /// Start a scheduled rotation.
    Start,
}

/// What [`decide`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// The next window opening after now, when it has a window (for `/secrets`).
    pub next_window: Option<DateTime<Utc>>,
    /// The planned rotation time (seconds since the epoch), when it has one.
    pub planned: Option<i64>,
}

/// The opening of the window that contains `now`, if the window is open.
pub fn open_since(window: &ScheduleExpr, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let span = chrono::Duration::from_std(WINDOW_OPEN).ok()?;
    let opening = window.next_after(now - span)?;
    (opening <= now).then_some(opening)
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// The secret's status from the view.
    pub status: &'a SecretStatus,
    /// Its strategy.
    pub strategy: Strategy,
    /// Its window.
    pub window: Option<&'a ScheduleExpr>,
    /// Undeclared readers within the baseline (from the access poller); `None` while access
    /// monitoring is configured but has not reported yet.
    pub undeclared: Option<&'a [String]>,
    /// Its latest journaled rotation.
    pub last: Option<&'a Rotation>,
    /// The shortest reminder lead, when reminders are configured: a secret without a planned
    /// time (no window, or a `rate()` one) is eligible from due minus it.
    pub lead: Option<Duration>,
    /// `verify::config_digest` of the secret as configured now: after an automatic rollback,
    /// scheduled rotations resume once it differs from the rolled-back rotation's.
    pub config_digest: Option<&'a str>,
}

/// Decides, and gives the next window opening after now and the planned time.
pub fn decide(i: Inputs<'_>) -> Verdict {
    let next_window = i.window.and_then(|w| w.next_after(i.now));
    let planned = i.status.planned(i.window, i.now.timestamp());
    let verdict = |decision| Verdict {
        decision,
        next_window,
        planned,
    };
    let wait = |why: String| verdict(Decision::Wait(why));
    let s = i.status;
    if !s.present
        || matches!(i.strategy, Strategy::None)
        || (matches!(i.strategy, Strategy::Lambda) && s.rotation_enabled)
    {
        return verdict(Decision::Idle);
    }
    let now = i.now.timestamp();
    let Some(due) = s.due else {
        return verdict(Decision::Idle);
    };
    let reached = match planned {
        // Planned: from the planned time on, or once overdue (then it says what it waits for).
        Some(p) => now >= p || now > due,
        // No planned time: overdue, or inside the shortest reminder lead.
        None => now > due.saturating_sub(i.lead.map_or(0, |d| d.as_secs() as i64)),
    };
    if !reached {
        return verdict(Decision::Idle);
    }
    if let Some(last) = i.last {
        if last.state.is_active() {
            return verdict(Decision::Busy);
        }
        // Seen: the view shows the rotation's version (or its finalized one) as AWSCURRENT, or
        // was observed later than ListSecrets can lag. A status observed soon after the
        // rotation finished may still be the listing from before it, which looks due.
        let ours = s
            .current_version
            .as_deref()
            .is_some_and(|v| v == last.token || v == last.finalize_token());
        let lag = LIST_SECRETS_LAG.as_secs() as i64;
        let unseen = last
            .detail
            .finished_at
            .is_some_and(|f| s.observed_at <= f.saturating_add(lag));
        if unseen && !ours && matches!(last.state, State::Done) {
            return wait("waiting for the metadata poller to see keywarden's last rotation".into());
        }
    }
    if let Some(last) = i.last
        && last.state == State::RolledBack
        && last.detail.rolled_back_by.as_deref() == Some(super::rollback::ROLLED_BACK_BY_VERIFY)
        && last.detail.config_digest.as_deref() == i.config_digest
    {
        let by = last.detail.rolled_back_check.as_ref().map_or_else(
            || "a verify check".to_string(),
            |f| format!("check {} (last value: {})", f.check, f.value),
        );
        return wait(format!(
            "rotation {} was rolled back automatically by {by}: scheduled rotations stop until an operator rotates it by hand or its configuration changes",
            last.id
        ));
    }
    if s.pending {
        return wait(
            "a version other than AWSCURRENT carries AWSPENDING: an unfinished rotation started outside keywarden".into(),
        );
    }
    match i.undeclared {
        None => return wait(
            "access monitoring has not reported yet: every reader must be known before a rotation"
                .into(),
        ),
        Some(undeclared) if !undeclared.is_empty() => {
            return wait(format!(
                "undeclared principals read it within the access baseline: {}; declare them in consumers or revoke their access",
                undeclared.join(", ")
            ));
        }
        Some(_) => {}
    }
    if let Some(p) = planned.filter(|p| now < *p) {
        return wait(format!(
            "overdue; planned for {} (the next opening of its window)",
            rfc3339(p)
        ));
    }
    let opened = match i.window {
        Some(w) => match open_since(w, i.now) {
            Some(o) => o.timestamp(),
            None => {
                let when = next_window
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never (the window has no further occurrence)".into());
                return wait(format!("due; waiting for its window to open at {when}"));
            }
        },
        None => {
            return Verdict {
                decision: Decision::Wait(
                    "due, but it has no window: scheduled rotations need one; set window or rotate it manually".into(),
                ),
                next_window: None,
                planned: None,
            }
        }
    };
    if let Some(last) = i.last {
        let failed = last.trigger == Trigger::Scheduled && last.state == State::Failed;
        if (failed || last.state == State::RolledBack) && last.updated_at >= opened {
            let why = if failed {
                "the scheduled rotation failed in this window; the next window tries again"
            } else {
                "the last rotation was rolled back in this window; the next window tries again"
            };
            return wait(why.into());
        }
    }
    verdict(Decision::Start)
}

/// RFC 3339 of a timestamp, or the number when it is out of range.
fn rfc3339(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0).map_or_else(|| t.to_string(), |d| d.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::journal::{Detail, Step};
    use chrono::TimeZone;

    fn status(due: i64, pending: bool) -> SecretStatus {
        SecretStatus {
            name: "S".into(),
            target: Default::default(),
            id: "app/s".into(),
            arn: None,
            managed: crate::domain::view::Managed::Inventory,
            severity: crate::config::Severity::High,
            impact: String::new(),
            strategy: Strategy::Random,
            present: true,
            deletion_scheduled: false,
            last_rotated: Some(0),
            interval_seconds: Some(86_400),
            due: Some(due),
            overdue: true,
            scheduled: None,
            rotation_enabled: false,
            pending,
            last_accessed: None,
            current_version: None,
            current_created: None,
            observed_at: 1_000,
        }
    }

    fn rot(state: State, trigger: Trigger, requested_at: i64, finished: Option<i64>) -> Rotation {
        Rotation {
            id: "r".into(),
            secret: "S".into(),
            trigger,
            token: "t".into(),
            step: Step::Create,
            state,
            requested_at,
            updated_at: requested_at,
            attempts: 0,
            error: None,
            detail: Detail {
                finished_at: finished,
                ..Detail::default()
            },
        }
    }

    #[test]
    fn decisions() {
        // Tuesdays 03:00 UTC; 2026-11-24 is a Tuesday.
        let window = ScheduleExpr::parse("cron(0 3 ? * TUE *)").unwrap();
        let inside = Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap();
        let outside = Utc.with_ymd_and_hms(2026, 11, 24, 4, 30, 0).unwrap();
        let due_past = inside.timestamp() - 10;
        let readers = vec!["arn:aws:iam::1:user/x".to_string()];
        let failed_here = rot(
            State::Failed,
            Trigger::Scheduled,
            inside.timestamp() - 60,
            None,
        );
        let failed_before = rot(
            State::Failed,
            Trigger::Scheduled,
            inside.timestamp() - 7200,
            None,
        );
        let running = rot(State::Running, Trigger::Manual, 0, None);
        let fresh_done = rot(State::Done, Trigger::Manual, 900, Some(1_500));
        // Observed (at 1_000) after the rotation finished, but within the ListSecrets lag.
        let lagged_done = rot(State::Done, Trigger::Manual, 700, Some(900));
        let old_done = rot(State::Done, Trigger::Manual, 500, Some(1_000 - 301));
        let ok = status(due_past, false);
        let mut ours = status(due_past, false);
        ours.current_version = Some("t".into());
        // Due in a week and a bit: its planned window is next Tuesday's, not this one.
        let not_due = status(inside.timestamp() + 7 * 86_400 + 10, false);
        let pending = status(due_past, true);
        type Case<'a> = (
            DateTime<Utc>,
            &'a SecretStatus,
            Strategy,
            &'a [String],
            Option<&'a Rotation>,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (inside, &ok, Strategy::Random, &[], None, "start"),
            (
                outside,
                &ok,
                Strategy::Random,
                &[],
                None,
                "wait:next opening of its window",
            ),
            (inside, &not_due, Strategy::Random, &[], None, "idle"),
            (inside, &ok, Strategy::None, &[], None, "idle"),
            (
                inside,
                &pending,
                Strategy::Random,
                &[],
                None,
                "wait:AWSPENDING",
            ),
            (inside, &ok, Strategy::Random, &readers, None, "wait:user/x"),
            (inside, &ok, Strategy::Random, &[], Some(&running), "busy"),
            (
                inside,
                &ok,
                Strategy::Random,
                &[],
                Some(&failed_here),
                "wait:failed",
            ),
            (
                inside,
                &ok,
                Strategy::Random,
                &[],
                Some(&failed_before),
                "start",
            ),
            (
                inside,
                &ok,
                Strategy::Random,
                &[],
                Some(&fresh_done),
                "wait:metadata poller",
            ),
            (
                inside,
                &ok,
                Strategy::Random,
                &[],
                Some(&lagged_done),
                "wait:metadata poller",
            ),
            (inside, &ok, Strategy::Random, &[], Some(&old_done), "start"),
            (
                inside,
                &ours,
                Strategy::Random,
                &[],
                Some(&lagged_done),
                "start",
            ),
        ];
        for (now, st, strategy, undeclared, last, want) in cases {
            let Verdict {
                decision: d,
                next_window: next,
                ..
            } = decide(Inputs {
                now,
                status: st,
                strategy,
                window: Some(&window),
                undeclared: Some(undeclared),
                last,
                lead: None,
                config_digest: None,
            });
            assert!(next.is_some());
            let got = match &d {
                Decision::Idle => "idle".to_string(),
                Decision::Busy => "busy".to_string(),
                Decision::Start => "start".to_string(),
                Decision::Wait(w) => format!("wait:{w}"),
            };
            let matches = match want.split_once(':') {
                Some((_, needle)) => got.starts_with("wait:") && got.contains(needle),
                None => got == want,
            };
            assert!(matches, "{now} {want}: got {got}");
        }
        // No window: never scheduled, and it says so.
        let Verdict {
            decision: d,
            next_window: next,
            planned,
        } = decide(Inputs {
            now: outside,
            status: &ok,
            strategy: Strategy::DualKey,
            window: None,
            undeclared: Some(&[]),
            last: None,
            lead: None,
            config_digest: None,
        });
        assert!(matches!(d, Decision::Wait(w) if w.contains("no window")));
        assert_eq!(next, None);
        assert_eq!(planned, None);
        // Access monitoring on but not reported yet: wait, whatever the window says.
        let d = decide(Inputs {
            now: inside,
            status: &ok,
            strategy: Strategy::Random,
            window: Some(&window),
            undeclared: None,
            last: None,
            lead: None,
            config_digest: None,
        })
        .decision;
        assert!(matches!(d, Decision::Wait(w) if w.contains("access monitoring has not reported")));
        // Planned timing (issue #13 point 5): with a weekly window, a secret inside its 14-day
        // reminder lead does not rotate in the first window of the lead but in the last one
        // before its due date. Due next Wednesday: planned next Tuesday 03:00, idle today.
        let lead = Some(Duration::from_secs(14 * 86_400));
        let next_tuesday = Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap();
        let in_eight_days = status(inside.timestamp() + 8 * 86_400, false);
        let v = decide(Inputs {
            now: inside,
            status: &in_eight_days,
            strategy: Strategy::Random,
            window: Some(&window),
            undeclared: Some(&[]),
            last: None,
            lead,
            config_digest: None,
        });
        assert_eq!(v.decision, Decision::Idle);
        assert_eq!(v.planned, Some(next_tuesday.timestamp()));
        // A week later, inside that window: start, with or without reminders.
        let then = inside + chrono::Duration::days(7);
        for lead in [None, lead] {
            let v = decide(Inputs {
                now: then,
                status: &in_eight_days,
                strategy: Strategy::Random,
                window: Some(&window),
                undeclared: Some(&[]),
                last: None,
                lead,
                config_digest: None,
            });
            assert_eq!(v.decision, Decision::Start, "{lead:?}");
            assert_eq!(v.planned, Some(next_tuesday.timestamp()));
        }
        // Due tomorrow: this window is the last before the due date, so it starts now.
        let tomorrow = status(inside.timestamp() + 86_400, false);
        let v = decide(Inputs {
            now: inside,
            status: &tomorrow,
            strategy: Strategy::Random,
            window: Some(&window),
            undeclared: Some(&[]),
            last: None,
            lead: None,
            config_digest: None,
        });
        assert_eq!(v.decision, Decision::Start);
        assert_eq!(
            v.planned,
            Some(
                Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0)
                    .unwrap()
                    .timestamp()
            )
        );
        // Without a window the older rule stays: due within the lead, it says it has no window.
        for (lead, want_wait) in [(None, false), (lead, true)] {
            let v = decide(Inputs {
                now: inside,
                status: &tomorrow,
                strategy: Strategy::Random,
                window: None,
                undeclared: Some(&[]),
                last: None,
                lead,
                config_digest: None,
            });
            assert_eq!(v.planned, None);
            assert_eq!(
                matches!(&v.decision, Decision::Wait(w) if w.contains("no window")),
                want_wait,
                "{lead:?}: {:?}",
                v.decision
            );
        }
        // A rate() window has no calendar: no planned time, the older rule.
        let rate = ScheduleExpr::parse("rate(1 hour)").unwrap();
        let v = decide(Inputs {
            now: inside,
            status: &ok,
            strategy: Strategy::Random,
            window: Some(&rate),
            undeclared: Some(&[]),
            last: None,
            lead: None,
            config_digest: None,
        });
        assert_eq!((v.decision, v.planned), (Decision::Start, None));
        // Strategy none and a missing secret have no plan.
        let mut gone = status(due_past, false);
        gone.present = false;
        for (st, strategy) in [(&ok, Strategy::None), (&gone, Strategy::Random)] {
            let mut st = st.clone();
            st.strategy = strategy;
            let v = decide(Inputs {
                now: inside,
                status: &st,
                strategy,
                window: Some(&window),
                undeclared: Some(&[]),
                last: None,
                lead: None,
                config_digest: None,
            });
            assert_eq!((v.decision, v.planned), (Decision::Idle, None));
        }
    }

    #[test]
    fn an_automatic_rollback_stops_scheduled_rotations_until_a_human_acts() {
        use crate::rotation::verify::CheckFailure;
        let window = ScheduleExpr::parse("cron(0 3 ? * TUE *)").unwrap();
        let inside = Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap();
        let mut ok = status(inside.timestamp() - 10, false);
        ok.observed_at = inside.timestamp();
        // Rolled back by verify two weeks ago, in an earlier window.
        let mut auto = rot(
            State::RolledBack,
            Trigger::Scheduled,
            inside.timestamp() - 14 * 86_400,
            Some(inside.timestamp() - 14 * 86_400 + 5),
        );
        auto.detail.rolled_back_by = Some("verify".into());
        auto.detail.rolled_back_check = Some(CheckFailure {
            check: "auth-failures".into(),
            value: "12 (max 10)".into(),
        });
        auto.detail.config_digest = Some("d1".into());
        let mut by_hand = auto.clone();
        by_hand.detail.rolled_back_by = Some("operator".into());
        by_hand.detail.rolled_back_check = None;
        // An operator's manual rotation after it: the latest rotation is no longer the rollback.
        let manual = rot(
            State::Done,
            Trigger::Manual,
            inside.timestamp() - 13 * 86_400,
            Some(inside.timestamp() - 13 * 86_400 + 5),
        );
        let decide_with = |last: &Rotation, digest: &str| {
            decide(Inputs {
                now: inside,
                status: &ok,
                strategy: Strategy::Random,
                window: Some(&window),
                undeclared: Some(&[]),
                last: Some(last),
                lead: None,
                config_digest: Some(digest),
            })
            .decision
        };
        // Same configuration: it waits, and says why, naming the check and its value.
        let d = decide_with(&auto, "d1");
        assert!(
            matches!(&d, Decision::Wait(w) if w.contains("rolled back automatically by check auth-failures (last value: 12 (max 10))")
                && w.contains("until an operator rotates it by hand or its configuration changes")),
            "{d:?}"
        );
        // The configuration changed: scheduled rotations resume.
        assert_eq!(decide_with(&auto, "d2"), Decision::Start);
        // An operator rotated by hand since: they resume.
        assert_eq!(decide_with(&manual, "d1"), Decision::Start);
        // An operator's rollback in an earlier window does not stop them.
        assert_eq!(decide_with(&by_hand, "d1"), Decision::Start);
    }

    #[test]
    fn window_opening() {
        let w = ScheduleExpr::parse("cron(0 3 ? * TUE *)").unwrap();
        let t = |h, m| Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap();
        assert_eq!(open_since(&w, t(3, 0)), Some(t(3, 0)));
        assert_eq!(open_since(&w, t(3, 59)), Some(t(3, 0)));
        assert_eq!(open_since(&w, t(4, 0)), None);
        assert_eq!(open_since(&w, t(2, 59)), None);
    }
}
