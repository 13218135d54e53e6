//! The step transition of a rotation (pure: no I/O, `now` is a parameter).
//!
//! Given where the journal says a rotation is (its state, step and attempts) and what running
//! that step gave (a completed [`StepOutcome`], or a failure with its [`Retry`] class),
//! [`transition`] says what the engine does next: the next state and step, the outcome of the
//! journal event, whether a success or a failure is counted, how long to back off before the step
//! runs again, whether the rotation's grace (and so its finalize) starts, and whether AWSPENDING
//! must be taken off the rotation's version. [`begin`] says whether a journaled rotation has a
//! step to run at all. The engine applies these decisions; this module only makes them.
//!
//! The strategy's mode plays no part: a `lambda` rotation runs its steps differently (the
//! engine's step runner), but moves between them exactly as every other rotation does.
//!
//! This module must never import the engine, the AWS adapter, the store, hooks, or anything
//! that does I/O or reads the clock.

use std::time::Duration;

use crate::domain::RotationResult;

use super::journal::{EventOutcome, State, Step};
use super::protocol::Retry;

/// Attempts of one step before the rotation is marked failed.
pub const MAX_ATTEMPTS: u32 = 5;
/// Attempts of one step when it keeps failing for a transient AWS reason (network, timeout,
/// throttling): about ten minutes with the capped backoff, so a short outage does not fail an
/// accepted rotation.
pub const MAX_TRANSIENT_ATTEMPTS: u32 = 25;
/// Backoff before the second attempt; doubles each time, capped at [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The wait between attempts of a step past finish once [`MAX_TRANSIENT_ATTEMPTS`] have failed:
/// such a step is retried until it succeeds (the new value is AWSCURRENT, and the old
/// credential must not stay valid for ever), at this pace, and reported stuck.
pub const STUCK_BACKOFF: Duration = Duration::from_secs(300);

/// What a completed step reports for the journal.
#[derive(Debug)]
pub(crate) struct StepOutcome {
    /// `ok` or `skipped`.
    pub(crate) outcome: EventOutcome,
    /// A sentence for the timeline.
    pub(crate) message: String,
    /// The version that was AWSCURRENT before, if create learned it.
    pub(crate) previous_version_id: Option<String>,
    /// Finalize found AWSCURRENT on another version: the rotation was superseded.
    pub(crate) superseded: bool,
}

impl StepOutcome {
    /// A step that did its work.
    pub(crate) fn ok(message: impl Into<String>) -> StepOutcome {
        StepOutcome {
            outcome: EventOutcome::Ok,
            message: message.into(),
            previous_version_id: None,
            superseded: false,
        }
    }

    /// A step that found its work already done.
    pub(crate) fn skipped(message: impl Into<String>) -> StepOutcome {
        StepOutcome {
            outcome: EventOutcome::Skipped,
            ..StepOutcome::ok(message)
        }
    }
}

/// Where the journal says a rotation is, as far as its next move depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// The rotation's state.
    pub(crate) state: State,
    /// The step to run (or that ran).
    pub(crate) step: Step,
    /// Failed attempts of that step so far.
    pub(crate) attempts: u32,
}

/// What the engine does next, after a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The state, step and attempts to journal.
    pub(crate) next: At,
    /// The outcome of the journal event, recorded under the step that ran.
    pub(crate) event: EventOutcome,
    /// The rotation result to count, if any.
    pub(crate) count: Option<RotationResult>,
    /// The rotation stops being in progress (its in-progress gauge drops to zero).
    pub(crate) ends_in_progress: bool,
    /// How long to wait before running the same step again; `None` when it is not run again.
    pub(crate) backoff: Option<Duration>,
    /// The grace starts: finalize is due at this epoch second (and finish happened at `now`).
    pub(crate) finalize_after: Option<i64>,
    /// AWSPENDING must be taken off the rotation's version: it failed before finish, so its
    /// version never became AWSCURRENT.
    pub(crate) abandon: bool,
    /// A step past finish has failed [`MAX_ATTEMPTS`] times or more: it is retried for ever and
    /// reported stuck (`keywarden_rotation_stuck`) until it succeeds.
    pub(crate) stuck: bool,
}

/// What a journaled rotation needs before any step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Run its step now.
    Run,
    /// It waits in grace: queue its finalize for this epoch second.
    Wait(i64),
    /// Nothing is left to do (done, failed or rolled back).
    Stop,
}

/// Whether a rotation read from the journal at `now` has a step to run.
pub(crate) fn begin(state: State, finalize_after: Option<i64>, now: i64) -> Begin {
    match state {
        State::Running => Begin::Run,
        State::Grace => {
            let due = finalize_after.unwrap_or(0);
            if due > now {
                Begin::Wait(due)
            } else {
                Begin::Run
            }
        }
        State::Done | State::Failed | State::RolledBack => Begin::Stop,
    }
}

/// How many attempts a step gets when it fails with this retry class.
pub(crate) fn attempt_limit(retry: Retry) -> u32 {
    match retry {
        Retry::Transient => MAX_TRANSIENT_ATTEMPTS,
        Retry::Limited => MAX_ATTEMPTS,
        Retry::Never => 1,
    }
}

/// The wait before attempt `attempts + 1` of a step past finish, which never gives up.
pub(crate) fn backoff_past_finish(attempts: u32) -> Duration {
    if attempts < MAX_TRANSIENT_ATTEMPTS {
        backoff(attempts)
    } else {
        STUCK_BACKOFF
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones (at least one).
pub(crate) fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// What to do after the step at `at` ran with `result`, at epoch second `now`, for a rotation
/// whose grace is `grace_seconds`.
pub(crate) fn transition(
    at: At,
    result: Result<&StepOutcome, Retry>,
    now: i64,
    grace_seconds: u64,
) -> Transition {
    match result {
        Ok(out) => completed(at, out, now, grace_seconds),
        Err(retry) => failed(at, retry),
    }
}

fn completed(at: At, out: &StepOutcome, now: i64, grace_seconds: u64) -> Transition {
    let finish = at.step == Step::Finish;
    let (step, state, finalize_after) = match at.step {
        _ if out.superseded => (at.step, State::RolledBack, None),
        Step::Finish => (
            Step::Finalize,
            State::Grace,
            Some(now.saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX))),
        ),
        Step::Finalize | Step::Done => (Step::Done, State::Done, None),
        s => (s.next(), State::Running, None),
    };
    Transition {
        next: At {
            state,
            step,
            attempts: 0,
        },
        event: out.outcome,
        count: finish.then_some(RotationResult::Success),
        ends_in_progress: finish,
        backoff: None,
        finalize_after,
        abandon: false,
        stuck: false,
    }
}

fn failed(at: At, retry: Retry) -> Transition {
    let attempts = at.attempts.saturating_add(1);
    if at.step >= Step::Finish && retry != Retry::Never {
        // AWSCURRENT may have moved: failing here would leave the old credential valid for
        // ever and count the rotation twice. Retry until it succeeds.
        return Transition {
            next: At { attempts, ..at },
            event: EventOutcome::Error,
            count: None,
            ends_in_progress: false,
            backoff: Some(backoff_past_finish(attempts)),
            finalize_after: None,
            abandon: false,
            stuck: attempts >= MAX_ATTEMPTS,
        };
    }
    if attempts >= attempt_limit(retry) {
        Transition {
            next: At {
                state: State::Failed,
                step: at.step,
                attempts,
            },
            event: EventOutcome::Failed,
            count: Some(RotationResult::Failure),
            ends_in_progress: at.state == State::Running,
            backoff: None,
            finalize_after: None,
            abandon: at.step < Step::Finish,
            stuck: false,
        }
    } else {
        Transition {
            next: At { attempts, ..at },
            event: EventOutcome::Error,
            count: None,
            ends_in_progress: false,
            backoff: Some(backoff(attempts)),
            finalize_after: None,
            abandon: false,
            stuck: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const GRACE: u64 = 600;

    fn at(state: State, step: Step, attempts: u32) -> At {
        At {
            state,
            step,
            attempts,
        }
    }

    /// One case: where the rotation is, what the step gave, and the expected transition.
    fn check(from: At, result: Result<&StepOutcome, Retry>, expected: Transition) {
        assert_eq!(
            transition(from, result, NOW, GRACE),
            expected,
            "from {from:?} with {result:?}"
        );
    }

    fn advance(state: State, step: Step, event: EventOutcome) -> Transition {
        Transition {
            next: at(state, step, 0),
            event,
            count: None,
            ends_in_progress: false,
            backoff: None,
            finalize_after: None,
            abandon: false,
            stuck: false,
        }
    }

    #[test]
    fn completed_steps_move_to_the_next_step() {
        for outcome in [StepOutcome::ok("done"), StepOutcome::skipped("already")] {
            let e = outcome.outcome;
            let o = Ok(&outcome);
            // Attempts are reset whatever they were.
            check(
                at(State::Running, Step::Create, 3),
                o,
                advance(State::Running, Step::Set, e),
            );
            check(
                at(State::Running, Step::Set, 0),
                o,
                advance(State::Running, Step::Test, e),
            );
            check(
                at(State::Running, Step::Test, 1),
                o,
                advance(State::Running, Step::Finish, e),
            );
            check(
                at(State::Running, Step::Finish, 2),
                o,
                Transition {
                    count: Some(RotationResult::Success),
                    ends_in_progress: true,
                    finalize_after: Some(NOW + GRACE as i64),
                    ..advance(State::Grace, Step::Finalize, e)
                },
            );
            check(
                at(State::Grace, Step::Finalize, 4),
                o,
                advance(State::Done, Step::Done, e),
            );
            check(
                at(State::Grace, Step::Done, 0),
                o,
                advance(State::Done, Step::Done, e),
            );
        }
    }

    #[test]
    fn a_superseded_finalize_rolls_the_rotation_back_without_counting() {
        let out = StepOutcome {
            superseded: true,
            ..StepOutcome::skipped("AWSCURRENT moved on")
        };
        for step in [Step::Finalize, Step::Done] {
            check(
                at(State::Grace, step, 1),
                Ok(&out),
                advance(State::RolledBack, step, EventOutcome::Skipped),
            );
        }
    }

    #[test]
    fn a_compromise_without_grace_is_due_for_finalize_at_once() {
        let out = StepOutcome::ok("promoted");
        let t = transition(at(State::Running, Step::Finish, 0), Ok(&out), NOW, 0);
        assert_eq!(t.finalize_after, Some(NOW));
        assert_eq!(begin(t.next.state, t.finalize_after, NOW), Begin::Run);
    }

    #[test]
    fn failed_steps_back_off_until_their_budget_is_spent() {
        for (retry, limit) in [
            (Retry::Limited, MAX_ATTEMPTS),
            (Retry::Transient, MAX_TRANSIENT_ATTEMPTS),
        ] {
            for step in [Step::Create, Step::Set, Step::Test] {
                for attempts in 0..limit - 1 {
                    check(
                        at(State::Running, step, attempts),
                        Err(retry),
                        Transition {
                            next: at(State::Running, step, attempts + 1),
                            event: EventOutcome::Error,
                            count: None,
                            ends_in_progress: false,
                            backoff: Some(backoff(attempts + 1)),
                            finalize_after: None,
                            abandon: false,
                            stuck: false,
                        },
                    );
                }
                check(
                    at(State::Running, step, limit - 1),
                    Err(retry),
                    Transition {
                        next: at(State::Failed, step, limit),
                        event: EventOutcome::Failed,
                        count: Some(RotationResult::Failure),
                        ends_in_progress: true,
                        backoff: None,
                        finalize_after: None,
                        abandon: true,
                        stuck: false,
                    },
                );
            }
        }
    }

    #[test]
    fn a_step_that_is_never_retried_fails_the_rotation_at_once() {
        for step in [Step::Create, Step::Set, Step::Test] {
            check(
                at(State::Running, step, 0),
                Err(Retry::Never),
                Transition {
                    next: at(State::Failed, step, 1),
                    event: EventOutcome::Failed,
                    count: Some(RotationResult::Failure),
                    ends_in_progress: true,
                    backoff: None,
                    finalize_after: None,
                    abandon: true,
                    stuck: false,
                },
            );
        }
    }

    #[test]
    fn past_finish_only_a_step_that_cannot_go_on_fails() {
        for (state, step) in [
            (State::Running, Step::Finish),
            (State::Grace, Step::Finalize),
        ] {
            check(
                at(state, step, 7),
                Err(Retry::Never),
                Transition {
                    next: at(State::Failed, step, 8),
                    event: EventOutcome::Failed,
                    count: Some(RotationResult::Failure),
                    ends_in_progress: state == State::Running,
                    backoff: None,
                    finalize_after: None,
                    abandon: false,
                    stuck: false,
                },
            );
        }
    }

    #[test]
    fn past_finish_a_step_is_retried_for_ever_never_failed_and_reported_stuck() {
        for retry in [Retry::Limited, Retry::Transient] {
            for (state, step) in [
                (State::Running, Step::Finish),
                (State::Grace, Step::Finalize),
            ] {
                for attempts in [0, 1, MAX_ATTEMPTS - 1, MAX_TRANSIENT_ATTEMPTS, 10_000] {
                    let t = transition(at(state, step, attempts), Err(retry), NOW, GRACE);
                    assert_eq!(t.next, at(state, step, attempts + 1), "{retry:?} {step:?}");
                    assert_eq!(t.event, EventOutcome::Error);
                    assert_eq!(t.count, None, "counted once, at finish");
                    assert!(!t.abandon && !t.ends_in_progress);
                    assert_eq!(t.stuck, attempts + 1 >= MAX_ATTEMPTS);
                    let b = t.backoff.expect("always retried");
                    assert!(b <= STUCK_BACKOFF && b >= FIRST_BACKOFF, "{b:?}");
                }
            }
        }
        assert_eq!(backoff_past_finish(MAX_TRANSIENT_ATTEMPTS), STUCK_BACKOFF);
        assert_eq!(backoff_past_finish(3), backoff(3));
    }

    #[test]
    fn finalize_retries_keep_the_rotation_in_grace() {
        check(
            at(State::Grace, Step::Finalize, 0),
            Err(Retry::Limited),
            Transition {
                next: at(State::Grace, Step::Finalize, 1),
                event: EventOutcome::Error,
                count: None,
                ends_in_progress: false,
                backoff: Some(FIRST_BACKOFF),
                finalize_after: None,
                abandon: false,
                stuck: false,
            },
        );
    }

    #[test]
    fn the_backoff_doubles_from_one_second_and_stops_at_thirty() {
        let seconds: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(MAX_TRANSIENT_ATTEMPTS), MAX_BACKOFF);
    }

    #[test]
    fn begin_runs_running_rotations_and_due_finalizes_only() {
        for (state, after, expected) in [
            (State::Running, None, Begin::Run),
            (State::Grace, Some(NOW + 1), Begin::Wait(NOW + 1)),
            (State::Grace, Some(NOW), Begin::Run),
            (State::Grace, None, Begin::Run),
            (State::Done, None, Begin::Stop),
            (State::Failed, None, Begin::Stop),
            (State::RolledBack, Some(NOW + 1), Begin::Stop),
        ] {
            assert_eq!(begin(state, after, NOW), expected, "{state:?} {after:?}");
        }
    }
}
