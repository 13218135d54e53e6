//! Rotation schedules: AWS schedule expressions, configuration durations and
//! the arithmetic that turns a secret's rotation facts into instants.
//!
//! This module is pure. No function in it performs I/O and none reads the
//! clock: every function that depends on the current time takes `now` as an
//! explicit argument, so callers and tests decide what "now" is. All instants
//! are UTC, which is also the time zone of every AWS Secrets Manager rotation
//! schedule.
//!
//! Five files, one concern each (`tests.rs` holds their table-driven tests):
//!
//! * `cron.rs`: [`ScheduleExpr`] parses the `RotationRules.ScheduleExpression` that AWS
//!   reports, either `rate(N days)` / `rate(N hours)` or
//!   `cron(minutes hours day-of-month month day-of-week year)`, and finds the
//!   next occurrence after a given instant.
//! * `duration.rs`: [`parse_duration`] and [`format_duration`] read and write keywarden's
//!   configuration durations such as `90d`, `48h` or `1h30m`.
//! * `rules.rs`: [`last_rotation`], [`interval`], [`due`], [`is_overdue`] and
//!   [`scheduled`] combine a secret's [`RotationFacts`] into the instants the
//!   metrics report.
//!   [`is_pending`] and [`current_version`] read the staging labels of a
//!   secret's versions.
//! * `planned.rs`: [`planned`] gives when a due secret with a `window` rotates (SPEC §11): the
//!   last opening of the window before its due date, else the first after it; [`WINDOW_OPEN`]
//!   is how long a window stays open.
//!
//! # Cron dialect
//!
//! The cron dialect is the one of Amazon EventBridge, which Secrets Manager
//! shares: exactly six whitespace-separated fields, minutes (0-59), hours
//! (0-23), day-of-month (1-31), month (1-12 or JAN-DEC), day-of-week (1-7 or
//! SUN-SAT, where 1 is Sunday) and year (1970-2199). Names are
//! case-insensitive. Every field accepts `*`, `,` lists, `-` ranges and `/`
//! steps (`0/15`, `*/5`, `5-30/5`, `MON/2`). Ranges whose start is after their
//! end wrap around in every field except the year (`22-2` in hours means 22,
//! 23, 0, 1 and 2; `FRI-MON` means Friday to Monday). Exactly one of
//! day-of-month and day-of-week must be `?`, and `?` is not allowed anywhere
//! else.
//!
//! Day-of-month also accepts `L` (the last day of the month), `L-n` (n days
//! before the last day), `LW` (the last weekday of the month) and `nW` (the
//! weekday nearest to day n without leaving the month; it never matches in a
//! month that has no day n). Day-of-week also accepts `L` alone (Saturday, the
//! last day of the week), `nL` (the last weekday n of the month, for example
//! `5L` or `THUL` for the last Thursday) and `n#k` (the k-th weekday n of the
//! month, k from 1 to 5, for example `3#2` for the second Tuesday). Each of
//! these special forms must be the only item of its field: `L,15`, `1W,15W`,
//! `2-6L` and `3#1,6#3` are rejected.
//!
//! The Secrets Manager restrictions on top of EventBridge (minutes must be 0,
//! year must be `*`, rotations at least four hours apart) are not enforced,
//! because this module reads schedules that AWS has already accepted and the
//! more general EventBridge syntax is a strict superset.
//!
//! Must never import anything of the crate but this folder: it is a leaf under `config` and
//! the domain.

mod cron;
mod duration;
mod planned;
mod rules;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub use cron::{CronExpr, ScheduleExpr};
pub use duration::{format_duration, parse_duration};
pub use planned::{WINDOW_OPEN, last_between, planned};
pub use rules::{
    RotationFacts, current_version, due, interval, is_overdue, is_pending, last_rotation, scheduled,
};

/// The number of seconds in a minute.
pub(crate) const SECS_PER_MINUTE: u64 = 60;
/// The number of seconds in an hour.
pub(crate) const SECS_PER_HOUR: u64 = 3_600;
/// The number of seconds in a day.
pub(crate) const SECS_PER_DAY: u64 = 86_400;
/// The number of seconds in a week.
pub(crate) const SECS_PER_WEEK: u64 = 604_800;

/// What the canonical forms of a schedule expression look like, for errors.
const EXPRESSION_FORMS: &str =
    "rate(N days), rate(N hours) or cron(minutes hours day-of-month month day-of-week year)";

/// What a configuration duration looks like, for errors.
const DURATION_FORMS: &str =
    "a number followed by a unit s, m, h, d or w, such as 90d, 48h, 15m, 30s or 1h30m";

/// An error from parsing a schedule expression or a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule expression was empty or only whitespace.
    #[error("schedule expression is empty; expected {EXPRESSION_FORMS}")]
    EmptyExpression,
    /// The schedule expression starts with neither `rate` nor `cron`.
    #[error("unrecognised schedule expression {0:?}; expected {EXPRESSION_FORMS}")]
    UnknownExpression(String),
    /// The schedule expression lacks its opening or closing parenthesis.
    #[error(
        "{kind}() expression {input:?} is missing its {side} parenthesis; expected {kind}(...)"
    )]
    MissingParenthesis {
        /// Either `rate` or `cron`.
        kind: &'static str,
        /// Either `opening` or `closing`.
        side: &'static str,
        /// The expression as given.
        input: String,
    },
    /// Text follows the closing parenthesis of the schedule expression.
    #[error(
        "{kind}() expression {input:?} has text after its closing parenthesis; expected nothing after it"
    )]
    TrailingText {
        /// Either `rate` or `cron`.
        kind: &'static str,
        /// The expression as given.
        input: String,
    },
    /// A `rate()` expression is malformed.
    #[error("invalid rate() expression {input:?}: {reason}")]
    InvalidRate {
        /// The expression as given.
        input: String,
        /// What was wrong and what was expected instead.
        reason: String,
    },
    /// A `cron()` expression does not have exactly six fields.
    #[error("cron() takes 6 fields (minutes hours day-of-month month day-of-week year), found {0}")]
    CronFieldCount(usize),
    /// One field of a `cron()` expression is malformed.
    #[error("invalid cron() {field} field {value:?}: {reason}")]
    InvalidCronField {
        /// The name of the field, such as `day-of-week`.
        field: &'static str,
        /// The field's text, in upper case.
        value: String,
        /// What was wrong and what was expected instead.
        reason: String,
    },
    /// The day-of-month and day-of-week fields break the rule that exactly
    /// one of them is `?`.
    #[error(
        "invalid cron() day fields (day-of-month {day_of_month:?}, day-of-week {day_of_week:?}): {reason}"
    )]
    CronDayConflict {
        /// The day-of-month field's text, in upper case.
        day_of_month: String,
        /// The day-of-week field's text, in upper case.
        day_of_week: String,
        /// What was wrong and what was expected instead.
        reason: &'static str,
    },
    /// A configuration duration is malformed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The duration as given.
        input: String,
        /// What was wrong and what was expected instead.
        reason: String,
    },
}

/// `t + d`, or `None` when the result is not representable.
pub(crate) fn add_duration(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}
