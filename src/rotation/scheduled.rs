//! When a scheduled rotation starts (pure: no I/O, `now` is a parameter).
//!
//! A secret is eligible once it is overdue (now past its due date, from the view), or, when
//! reminders are configured, once it is inside its shortest reminder lead (every reminder has
//! been sent by then), so a secret with a weekly window rotates before it becomes overdue. It
//! starts at
//! the next opening of its `window`: a window is open for [`WINDOW_OPEN`] after each occurrence
//! of its cron or rate expression. A secret without a window is never rotated by the scheduler
//! (SPEC §6: scheduled rotations start only inside the window); it says so. It waits,
//! saying why, while a version other than AWSCURRENT carries AWSPENDING, while undeclared
//! principals read it within the access baseline, while the view has not yet seen keywarden's own
//! last rotation of it (its version as AWSCURRENT, or a listing observed more than
//! [`LIST_SECRETS_LAG`] after it finished: ListSecrets may lag changes), and after a scheduled rotation failed in the current window (the next
//! window tries again). `lambda` secrets with AWS-side rotation enabled are left to AWS.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Strategy;
use crate::domain::view::SecretStatus;
use crate::schedule::ScheduleExpr;

use super::journal::{Rotation, State, Trigger};

/// How long a window stays open after each occurrence.
pub const WINDOW_OPEN: Duration = Duration::from_secs(3600);

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
    /// The shortest reminder lead, when reminders are configured: eligible from due minus it.
    pub lead: Option<Duration>,
}

/// Decides, and gives the next window opening after now (for `/secrets`).
pub fn decide(i: Inputs<'_>) -> (Decision, Option<DateTime<Utc>>) {
    let next_window = i.window.and_then(|w| w.next_after(i.now));
    let s = i.status;
    if !s.present
        || matches!(i.strategy, Strategy::None)
        || (matches!(i.strategy, Strategy::Lambda) && s.rotation_enabled)
    {
        return (Decision::Idle, next_window);
    }
    let now = i.now.timestamp();
    let lead = i.lead.map_or(0, |d| d.as_secs() as i64);
    match s.due {
        Some(due) if now > due.saturating_sub(lead) => {}
        _ => return (Decision::Idle, next_window),
    }
    if let Some(last) = i.last {
        if last.state.is_active() {
            return (Decision::Busy, next_window);
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
            return (
                Decision::Wait(
                    "waiting for the metadata poller to see keywarden's last rotation".into(),
                ),
                next_window,
            );
        }
    }
    if s.pending {
        return (
            Decision::Wait(
                "a version other than AWSCURRENT carries AWSPENDING: an unfinished rotation started outside keywarden".into(),
            ),
            next_window,
        );
    }
    match i.undeclared {
        None => {
            return (
                Decision::Wait(
                    "access monitoring has not reported yet: every reader must be known before a rotation".into(),
                ),
                next_window,
            )
        }
        Some(undeclared) if !undeclared.is_empty() => {
            return (
                Decision::Wait(format!(
                    "undeclared principals read it within the access baseline: {}; declare them in consumers or revoke their access",
                    undeclared.join(", ")
                )),
                next_window,
            );
        }
        Some(_) => {}
    }
    let opened = match i.window {
        Some(w) => match open_since(w, i.now) {
            Some(o) => o.timestamp(),
            None => {
                let when = next_window
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never (the window has no further occurrence)".into());
                return (
                    Decision::Wait(format!("due; waiting for its window to open at {when}")),
                    next_window,
                );
            }
        },
        None => {
            return (
                Decision::Wait(
                    "due, but it has no window: scheduled rotations need one; set window or rotate it manually".into(),
                ),
                None,
            )
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
            return (Decision::Wait(why.into()), next_window);
        }
    }
    (Decision::Start, next_window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::journal::{Detail, Step};
    use chrono::TimeZone;

    fn status(due: i64, pending: bool) -> SecretStatus {
        SecretStatus {
            name: "S".into(),
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
        let not_due = status(inside.timestamp() + 10, false);
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
                "wait:window to open",
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
            let (d, next) = decide(Inputs {
                now,
                status: st,
                strategy,
                window: Some(&window),
                undeclared: Some(undeclared),
                last,
                lead: None,
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
        let (d, next) = decide(Inputs {
            now: outside,
            status: &ok,
            strategy: Strategy::DualKey,
            window: None,
            undeclared: Some(&[]),
            last: None,
            lead: None,
        });
        assert!(matches!(d, Decision::Wait(w) if w.contains("no window")));
        assert_eq!(next, None);
        // Access monitoring on but not reported yet: wait, whatever the window says.
        let (d, _) = decide(Inputs {
            now: inside,
            status: &ok,
            strategy: Strategy::Random,
            window: Some(&window),
            undeclared: None,
            last: None,
            lead: None,
        });
        assert!(matches!(d, Decision::Wait(w) if w.contains("access monitoring has not reported")));
        // Inside the reminder lead: eligible before the due date.
        let soon = status(inside.timestamp() + 86_400, false);
        for (lead, want) in [
            (None, Decision::Idle),
            (Some(Duration::from_secs(2 * 86_400)), Decision::Start),
        ] {
            let (d, _) = decide(Inputs {
                now: inside,
                status: &soon,
                strategy: Strategy::Random,
                window: Some(&window),
                undeclared: Some(&[]),
                last: None,
                lead,
            });
            assert_eq!(d, want, "{lead:?}");
        }
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
