//! SPEC §2: last rotation, interval, due, overdue, scheduled and pending, from a secret's
//! [`RotationFacts`] and an explicit `now`. Pure.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::cron::ScheduleExpr;
use super::{SECS_PER_DAY, add_duration};

/// The staging label of the version that is currently in use.
const STAGE_CURRENT: &str = "AWSCURRENT";
/// The staging label of the version that a rotation is creating.
const STAGE_PENDING: &str = "AWSPENDING";

/// How long a cron rotation window can stay open after its occurrence.
///
/// A Secrets Manager rotation window must not extend into the next UTC day,
/// so no window lasts longer than a day.
const MAX_ROTATION_WINDOW: TimeDelta = TimeDelta::hours(24);

/// What AWS reports about a secret's rotation, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationFacts {
    /// When the secret was created (`CreatedDate`).
    pub created: Option<DateTime<Utc>>,
    /// When the secret was last rotated (`LastRotatedDate`).
    pub last_rotated: Option<DateTime<Utc>>,
    /// When the version labelled AWSCURRENT was created.
    pub current_version_created: Option<DateTime<Utc>>,
    /// Whether AWS rotates the secret automatically (`RotationEnabled`).
    pub rotation_enabled: bool,
    /// The rotation period in days (`RotationRules.AutomaticallyAfterDays`).
    pub automatically_after_days: Option<i64>,
    /// The schedule exactly as AWS reported it
    /// (`RotationRules.ScheduleExpression`); it may be invalid.
    pub schedule_expression: Option<String>,
    /// When AWS says it will rotate next (`NextRotationDate`).
    pub next_rotation: Option<DateTime<Utc>>,
}

/// The last rotation is when the AWSCURRENT version was created, else
/// `LastRotatedDate`, else `CreatedDate`.
///
/// The AWSCURRENT version's creation time comes first because a manual
/// `PutSecretValue` also replaces the secret's value, and AWS counts that as
/// a rotation.
pub fn last_rotation(f: &RotationFacts) -> Option<DateTime<Utc>> {
    f.current_version_created.or(f.last_rotated).or(f.created)
}

/// The rotation interval: the policy (the configured `rotate_every`) if
/// there is one; else AutomaticallyAfterDays; else the ScheduleExpression,
/// where a rate gives its period and a cron gives the gap between its first
/// occurrence after `last` and the occurrence after that; else `default`
/// (the discovery default).
///
/// Invalid ScheduleExpression text is ignored and the search falls through
/// to `default`; it never panics.
///
/// An AutomaticallyAfterDays of zero or less is ignored like an absent one.
/// A valid cron schedule is final: when `last` is `None`, or the cron has
/// fewer than two occurrences left, the result is `None` and `default` is
/// not consulted.
pub fn interval(
    policy: Option<Duration>,
    f: &RotationFacts,
    last: Option<DateTime<Utc>>,
    default: Option<Duration>,
) -> Option<Duration> {
    if policy.is_some() {
        return policy;
    }
    if let Some(period) = days_to_duration(f.automatically_after_days) {
        return Some(period);
    }
    match parsed_schedule(f) {
        Some(ScheduleExpr::Rate(period)) => Some(period),
        Some(ScheduleExpr::Cron(cron)) => {
            let first = cron.next_after(last?)?;
            let second = cron.next_after(first)?;
            (second - first).to_std().ok()
        }
        None => default,
    }
}

/// The due instant is `last + interval`, or `None` if either is `None`.
///
/// It is also `None` when the sum is beyond what [`DateTime`] can represent.
pub fn due(last: Option<DateTime<Utc>>, interval: Option<Duration>) -> Option<DateTime<Utc>> {
    add_duration(last?, interval?)
}

/// Whether `now` is strictly later than `due`; an unknown due date is never
/// overdue.
pub fn is_overdue(due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    due.is_some_and(|due| now > due)
}

/// When AWS will rotate the secret next, or `None` when rotation is not
/// enabled or nothing can be computed.
///
/// The rules are tried in this order and the first that yields an instant
/// wins:
///
/// 1. `NextRotationDate`, as AWS reported it.
/// 2. AutomaticallyAfterDays (if positive): `last` + that many days.
/// 3. A `rate()` ScheduleExpression: `last` + its period.
/// 4. A `cron()` ScheduleExpression: the first occurrence that is strictly
///    after `last` and no more than 24 hours before `now`. AWS opens a
///    rotation window at each occurrence and does not catch up on windows it
///    missed, so an occurrence far in the past is not what AWS will do next;
///    but a window can stay open until the end of its UTC day, so an
///    occurrence less than 24 hours old may still be about to rotate the
///    secret. Without `last`, only the 24-hour bound applies.
///
/// Rules 2 and 3 need `last`; they are skipped without it. An invalid
/// ScheduleExpression is ignored. The results of rules 2 and 3 may lie in the
/// past when a rotation was missed, which is what makes it visible.
pub fn scheduled(
    f: &RotationFacts,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !f.rotation_enabled {
        return None;
    }
    if f.next_rotation.is_some() {
        return f.next_rotation;
    }
    let from_days = due(last, days_to_duration(f.automatically_after_days));
    if from_days.is_some() {
        return from_days;
    }
    match parsed_schedule(f)? {
        ScheduleExpr::Rate(period) => due(last, Some(period)),
        ScheduleExpr::Cron(cron) => {
            let earliest = now.checked_sub_signed(MAX_ROTATION_WINDOW)?;
            match last {
                Some(last) if last >= earliest => cron.next_after(last),
                _ => cron.next_after(earliest.checked_sub_signed(TimeDelta::nanoseconds(1))?),
            }
        }
    }
}

/// Whether a rotation is pending: some version carries AWSPENDING and that
/// same version does not also carry AWSCURRENT.
///
/// The input is `(version_id, stages)` pairs. Labels are compared exactly,
/// as AWS spells them.
pub fn is_pending<'a, I, S>(versions: I) -> bool
where
    I: IntoIterator<Item = (&'a str, &'a [S])>,
    S: AsRef<str> + 'a,
{
    versions
        .into_iter()
        .any(|(_, stages)| has_stage(stages, STAGE_PENDING) && !has_stage(stages, STAGE_CURRENT))
}

/// The version id carrying AWSCURRENT, if any.
///
/// When several versions carry it, which AWS does not allow, the first wins.
pub fn current_version<'a, I, S>(versions: I) -> Option<&'a str>
where
    I: IntoIterator<Item = (&'a str, &'a [S])>,
    S: AsRef<str> + 'a,
{
    versions
        .into_iter()
        .find(|(_, stages)| has_stage(stages, STAGE_CURRENT))
        .map(|(id, _)| id)
}

/// Whether `stages` contains exactly the label `stage`.
fn has_stage<S: AsRef<str>>(stages: &[S], stage: &str) -> bool {
    stages.iter().any(|s| s.as_ref() == stage)
}

/// The secret's ScheduleExpression, if it is present and valid.
fn parsed_schedule(f: &RotationFacts) -> Option<ScheduleExpr> {
    ScheduleExpr::parse(f.schedule_expression.as_deref()?).ok()
}

/// AutomaticallyAfterDays as a duration, if it is positive and fits.
fn days_to_duration(days: Option<i64>) -> Option<Duration> {
    let days = u64::try_from(days?).ok().filter(|&days| days > 0)?;
    days.checked_mul(SECS_PER_DAY).map(Duration::from_secs)
}
