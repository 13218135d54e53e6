//! SPEC §11: the planned rotation time of a due secret with a `window`. Pure.
//!
//! A window opens at each occurrence of its `cron()` expression and stays open
//! [`WINDOW_OPEN`]. An opening is still *usable* while its window is open (it opened less than
//! [`WINDOW_OPEN`] before `now`) and only if it comes after the secret's last rotation (an opening
//! before the last rotation belongs to the previous cycle). The planned time is:
//!
//! - the **last** usable opening at or before the due date, when there is one: a secret that is
//!   not yet due rotates in the last window before its due date, not in the first window after
//!   it entered its reminder lead;
//! - else, for a secret that is already overdue, the window open now (its latest opening);
//! - else the **first** usable opening after the due date: when no opening is left before it
//!   (a monthly window whose last opening before the due date has passed), or the next opening
//!   of an overdue secret's window.
//!
//! So the planned time is stable while time passes: it moves only when its window closed without
//! a rotation (then to the first opening after the due date) or when a rotation moved the due date.
//! A `rate()` window has no calendar (its "openings" are relative to the instant asked about), so
//! it has no planned time; the scheduler keeps its older rule for it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::cron::{CronExpr, ScheduleExpr};

/// How long a window stays open after each opening.
pub const WINDOW_OPEN: Duration = Duration::from_secs(3600);

/// The first span looked back over from the upper bound, in [`last_between`].
const FIRST_SPAN: TimeDelta = TimeDelta::hours(1);

/// The last occurrence of `cron` in `(after, until]`, or `None` when it has none there.
///
/// The search looks back from `until` over spans that grow fourfold (1 hour, 4 hours, 16
/// hours, ...), walking each span forward: a frequent schedule is found in the first span, a
/// weekly one within a few, a yearly one within about ten, and the walk never goes below `after`.
pub fn last_between(
    cron: &CronExpr,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if until <= after {
        return None;
    }
    let mut span = FIRST_SPAN;
    loop {
        let start = until
            .checked_sub_signed(span)
            .map_or(after, |s| s.max(after));
        let mut t = start;
        let mut last = None;
        while let Some(next) = cron.next_after(t) {
            if next > until {
                break;
            }
            last = Some(next);
            t = next;
        }
        if last.is_some() || start <= after {
            return last;
        }
        span = span.checked_mul(4)?;
    }
}

/// When a secret that is due at `due`, last rotated at `last_rotated`, rotates in `window`, as
/// seen at `now` (see the module documentation). `None` for a `rate()` window, or when the
/// window has no opening left at all.
pub fn planned(
    window: &ScheduleExpr,
    due: DateTime<Utc>,
    last_rotated: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let ScheduleExpr::Cron(cron) = window else {
        return None;
    };
    let open = TimeDelta::from_std(WINDOW_OPEN).ok()?;
    // Usable openings came after this instant: their window is still open, and they are not
    // from before the last rotation.
    let usable = now.checked_sub_signed(open)?;
    let after = match last_rotated {
        Some(last) if last > usable => last,
        _ => usable,
    };
    last_between(cron, after, due)
        // Overdue with its window open now: the latest opening (with overlapping windows, such
        // as one every minute, the one that opened last).
        .or_else(|| {
            (due < now)
                .then(|| last_between(cron, after, now))
                .flatten()
        })
        .or_else(|| cron.next_after(after.max(due)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad test instant {s:?}: {e}"))
            .with_timezone(&Utc)
    }

    fn cron(text: &str) -> CronExpr {
        match ScheduleExpr::parse(text).unwrap() {
            ScheduleExpr::Cron(c) => c,
            ScheduleExpr::Rate(_) => panic!("{text} is a rate"),
        }
    }

    /// Windows from the AWS schedule-expression examples: weekly (every Monday 10:00 UTC) and
    /// monthly (the first of the month at 08:00 UTC). 2026-11-23 is a Monday.
    const WEEKLY: &str = "cron(0 10 ? * MON *)";
    const MONTHLY: &str = "cron(0 8 1 * ? *)";

    /// A case name, the window, the due date, the last rotation, now and the planned time.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
    );

    #[test]
    fn planned_table() {
        let cases: &[Case] = &[
            (
                "weekly: the last Monday before a Thursday due date, not the first in the lead",
                WEEKLY,
                "2026-11-26T12:00:00Z",
                Some("2026-08-28T12:00:00Z"),
                "2026-11-01T00:00:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: a due date inside a window plans that window",
                WEEKLY,
                "2026-11-23T10:30:00Z",
                None,
                "2026-11-10T00:00:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: a due date exactly at an opening plans that opening",
                WEEKLY,
                "2026-11-23T10:00:00Z",
                None,
                "2026-11-10T00:00:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: a due date one minute before an opening plans the week before",
                WEEKLY,
                "2026-11-23T09:59:00Z",
                None,
                "2026-11-10T00:00:00Z",
                Some("2026-11-16T10:00:00Z"),
            ),
            (
                "weekly: inside an earlier window, the plan is still the last one before due",
                WEEKLY,
                "2026-11-26T12:00:00Z",
                None,
                "2026-11-16T10:20:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: inside the planned window, it stays planned until the window closes",
                WEEKLY,
                "2026-11-26T12:00:00Z",
                None,
                "2026-11-23T10:59:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: the planned window closed unrotated: the first opening after due",
                WEEKLY,
                "2026-11-26T12:00:00Z",
                None,
                "2026-11-23T11:00:00Z",
                Some("2026-11-30T10:00:00Z"),
            ),
            (
                "weekly: overdue: the next opening",
                WEEKLY,
                "2026-11-10T00:00:00Z",
                None,
                "2026-11-18T15:00:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: overdue with the window open now: now's window",
                WEEKLY,
                "2026-11-10T00:00:00Z",
                None,
                "2026-11-23T10:20:00Z",
                Some("2026-11-23T10:00:00Z"),
            ),
            (
                "weekly: rotated in this window with a 1-day interval: not this window again",
                WEEKLY,
                "2026-11-24T10:10:00Z",
                Some("2026-11-23T10:10:00Z"),
                "2026-11-23T10:20:00Z",
                Some("2026-11-30T10:00:00Z"),
            ),
            (
                "monthly: the first of the month before a due date on the 20th",
                MONTHLY,
                "2026-11-20T00:00:00Z",
                None,
                "2026-10-15T00:00:00Z",
                Some("2026-11-01T08:00:00Z"),
            ),
            (
                "monthly: no opening left before the due date: the first after it",
                MONTHLY,
                "2026-11-20T00:00:00Z",
                None,
                "2026-11-05T00:00:00Z",
                Some("2026-12-01T08:00:00Z"),
            ),
            (
                "monthly: a 90-day interval plans the last first-of-month before due",
                MONTHLY,
                "2027-02-15T00:00:00Z",
                Some("2026-11-17T00:00:00Z"),
                "2026-11-17T00:05:00Z",
                Some("2027-02-01T08:00:00Z"),
            ),
            (
                "yearly: found far back from the due date",
                "cron(0 0 1 1 ? *)",
                "2027-12-30T00:00:00Z",
                None,
                "2026-11-17T00:00:00Z",
                Some("2027-01-01T00:00:00Z"),
            ),
            (
                "every minute: the minute of the due date",
                "cron(* * * * ? *)",
                "2026-12-01T06:30:30Z",
                None,
                "2026-11-17T00:00:00Z",
                Some("2026-12-01T06:30:00Z"),
            ),
            (
                "every minute, overdue: the minute that opened last",
                "cron(* * * * ? *)",
                "2026-11-10T00:00:00Z",
                None,
                "2026-12-01T06:30:30Z",
                Some("2026-12-01T06:30:00Z"),
            ),
            (
                "a window that never opens again",
                "cron(0 10 ? * MON 2020)",
                "2026-11-26T12:00:00Z",
                None,
                "2026-11-01T00:00:00Z",
                None,
            ),
            (
                "a rate window has no calendar: no plan",
                "rate(7 days)",
                "2026-11-26T12:00:00Z",
                None,
                "2026-11-01T00:00:00Z",
                None,
            ),
        ];
        for (case, window, due, last, now, want) in cases {
            let w = ScheduleExpr::parse(window).unwrap();
            let got = planned(&w, at(due), last.map(at), at(now));
            assert_eq!(got, want.map(at), "{case}");
        }
    }

    #[test]
    fn last_between_bounds() {
        let weekly = cron(WEEKLY);
        // Bounds: the upper one is included, the lower one is not.
        let monday = at("2026-11-23T10:00:00Z");
        assert_eq!(
            last_between(&weekly, at("2026-11-01T00:00:00Z"), monday),
            Some(monday)
        );
        assert_eq!(
            last_between(&weekly, monday, at("2026-11-29T00:00:00Z")),
            None
        );
        assert_eq!(last_between(&weekly, monday, monday), None);
        // A long gap: walks back across a year to the last matching day.
        let feb29 = cron("cron(0 12 29 2 ? *)");
        assert_eq!(
            last_between(
                &feb29,
                at("2020-01-01T00:00:00Z"),
                at("2027-06-01T00:00:00Z")
            ),
            Some(at("2024-02-29T12:00:00Z"))
        );
    }
}
