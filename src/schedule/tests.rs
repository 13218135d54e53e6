//! Table-driven tests of the schedule folder.

use super::*;
use chrono::{DateTime, Utc};

/// An expression, a starting instant and the occurrences expected after
/// it, in order; `-` expects `None`.
type NextCase<'a> = (&'a str, &'a str, &'a [&'a str]);

/// A case name, a policy, the facts, the last rotation, the default and
/// the expected interval.
type IntervalCase<'a> = (
    &'a str,
    Option<Duration>,
    RotationFacts,
    Option<DateTime<Utc>>,
    Option<Duration>,
    Option<Duration>,
);

/// A case name, the facts, the last rotation, now and the expected
/// instant; `-` stands for `None`.
type ScheduledCase<'a> = (&'a str, RotationFacts, &'a str, &'a str, &'a str);

/// A case name, the versions with their labels, whether a rotation is
/// pending and the current version.
type VersionCase<'a> = (
    &'a str,
    &'a [(&'a str, &'a [&'a str])],
    bool,
    Option<&'a str>,
);

/// Parses an RFC 3339 instant such as `2026-03-10T09:59:59Z`.
fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test instant {s:?}: {e}"))
        .with_timezone(&Utc)
}

/// Parses an optional instant, where `-` stands for `None`.
fn maybe_at(s: &str) -> Option<DateTime<Utc>> {
    (s != "-").then(|| at(s))
}

/// A duration of whole days.
fn days(n: u64) -> Duration {
    Duration::from_secs(n * SECS_PER_DAY)
}

/// A duration of whole hours.
fn hours(n: u64) -> Duration {
    Duration::from_secs(n * SECS_PER_HOUR)
}

/// Fails with every message in `failures`, if there are any.
fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Checks that `expr` parses and that, starting from `t`, repeated calls
/// of `next_after` yield `expected` in order; `-` expects `None`.
fn check(expr: &str, t: &str, expected: &[&str]) -> Result<(), String> {
    let parsed = ScheduleExpr::parse(expr).map_err(|e| format!("{expr}: {e}"))?;
    let mut from = at(t);
    for (step, want) in expected.iter().enumerate() {
        let got = parsed.next_after(from);
        if got != maybe_at(want) {
            return Err(format!(
                "{expr} from {t}, occurrence {}: expected {want}, got {got:?}",
                step + 1
            ));
        }
        match got {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(())
}

/// Runs `check` over a table and reports every failing row.
fn check_all(cases: &[NextCase]) {
    report(
        cases
            .iter()
            .filter_map(|(expr, t, expected)| check(expr, t, expected).err())
            .collect(),
    );
}

#[test]
fn eventbridge_doc_examples() {
    #[rustfmt::skip]
    let cases: &[NextCase] = &[
        // Every day at 10:00 UTC.
        ("cron(0 10 * * ? *)", "2026-03-10T09:59:59Z", &["2026-03-10T10:00:00Z", "2026-03-11T10:00:00Z"]),
        ("cron(0 10 * * ? *)", "2026-03-10T10:00:00Z", &["2026-03-11T10:00:00Z"]),
        ("cron(0 10 * * ? *)", "2026-12-31T10:00:00Z", &["2027-01-01T10:00:00Z"]),
        ("cron(0 10 * * ? *)", "2026-03-10T09:59:59.999Z", &["2026-03-10T10:00:00Z"]),
        // Every day at 12:15 UTC.
        ("cron(15 12 * * ? *)", "2026-03-10T12:14:59Z", &["2026-03-10T12:15:00Z", "2026-03-11T12:15:00Z"]),
        ("cron(15 12 * * ? *)", "2026-03-10T12:15:30Z", &["2026-03-11T12:15:00Z"]),
        // 18:00 UTC Monday to Friday; 2026-03-13 is a Friday.
        ("cron(0 18 ? * MON-FRI *)", "2026-03-13T18:00:00Z", &["2026-03-16T18:00:00Z", "2026-03-17T18:00:00Z"]),
        ("cron(0 18 ? * MON-FRI *)", "2026-03-14T09:00:00Z", &["2026-03-16T18:00:00Z"]),
        ("cron(0 18 ? * MON-FRI *)", "2026-03-16T17:59:59Z", &["2026-03-16T18:00:00Z"]),
        // 08:00 UTC on the first day of every month.
        ("cron(0 8 1 * ? *)", "2026-01-31T12:00:00Z", &["2026-02-01T08:00:00Z", "2026-03-01T08:00:00Z"]),
        ("cron(0 8 1 * ? *)", "2026-12-01T08:00:00Z", &["2027-01-01T08:00:00Z"]),
        // Every 15 minutes.
        ("cron(0/15 * * * ? *)", "2026-03-10T10:07:00Z", &["2026-03-10T10:15:00Z", "2026-03-10T10:30:00Z", "2026-03-10T10:45:00Z", "2026-03-10T11:00:00Z"]),
        ("cron(0/15 * * * ? *)", "2026-12-31T23:50:00Z", &["2027-01-01T00:00:00Z"]),
        ("cron(0/15 * * * ? *)", "2026-03-10T10:15:00.500Z", &["2026-03-10T10:30:00Z"]),
        // Every 10 minutes Monday to Friday.
        ("cron(0/10 * ? * MON-FRI *)", "2026-03-13T23:55:00Z", &["2026-03-16T00:00:00Z", "2026-03-16T00:10:00Z"]),
        ("cron(0/10 * ? * MON-FRI *)", "2026-03-11T08:01:00Z", &["2026-03-11T08:10:00Z"]),
        // Every 5 minutes from 08:00 to 17:55 Monday to Friday.
        ("cron(0/5 8-17 ? * MON-FRI *)", "2026-03-16T17:50:00Z", &["2026-03-16T17:55:00Z", "2026-03-17T08:00:00Z", "2026-03-17T08:05:00Z"]),
        ("cron(0/5 8-17 ? * MON-FRI *)", "2026-03-16T07:59:59Z", &["2026-03-16T08:00:00Z"]),
        ("cron(0/5 8-17 ? * MON-FRI *)", "2026-03-20T17:55:00Z", &["2026-03-23T08:00:00Z"]),
        // 09:00 UTC on the first Monday of each month.
        ("cron(0 9 ? * 2#1 *)", "2026-01-01T00:00:00Z", &["2026-01-05T09:00:00Z", "2026-02-02T09:00:00Z", "2026-03-02T09:00:00Z", "2026-04-06T09:00:00Z"]),
        ("cron(0 9 ? * 2#1 *)", "2026-06-01T09:00:00Z", &["2026-07-06T09:00:00Z"]),
        // 04:00 UTC every Sunday.
        ("cron(0 4 ? * SUN *)", "2026-03-10T00:00:00Z", &["2026-03-15T04:00:00Z", "2026-03-22T04:00:00Z"]),
        ("cron(0 4 ? * SUN *)", "2026-02-28T05:00:00Z", &["2026-03-01T04:00:00Z"]),
        // 16:00 UTC on Saturdays and Sundays.
        ("cron(0 16 ? * SAT,SUN *)", "2026-03-13T12:00:00Z", &["2026-03-14T16:00:00Z", "2026-03-15T16:00:00Z", "2026-03-21T16:00:00Z"]),
        // 08:00 UTC on the last day of the month, across leap and common years.
        ("cron(0 8 L * ? *)", "2028-02-10T00:00:00Z", &["2028-02-29T08:00:00Z", "2028-03-31T08:00:00Z"]),
        ("cron(0 8 L * ? *)", "2026-02-10T00:00:00Z", &["2026-02-28T08:00:00Z", "2026-03-31T08:00:00Z", "2026-04-30T08:00:00Z"]),
        ("cron(0 8 L * ? *)", "2100-02-01T00:00:00Z", &["2100-02-28T08:00:00Z"]),
        ("cron(0 8 L * ? *)", "2026-12-31T08:00:00Z", &["2027-01-31T08:00:00Z"]),
    ];
    check_all(cases);
}

#[test]
fn secrets_manager_doc_examples() {
    #[rustfmt::skip]
    let cases: &[NextCase] = &[
        // Increments of hours reset each day: 04:00, 16:00, then 04:00 again.
        ("cron(0 4/12 * * ? *)", "2026-03-10T00:00:00Z", &["2026-03-10T04:00:00Z", "2026-03-10T16:00:00Z", "2026-03-11T04:00:00Z"]),
        ("cron(0 8/8 * * ? *)", "2026-03-10T00:00:00Z", &["2026-03-10T08:00:00Z", "2026-03-10T16:00:00Z", "2026-03-11T08:00:00Z"]),
        ("cron(0 2/10 * * ? *)", "2026-03-10T12:00:00Z", &["2026-03-10T22:00:00Z", "2026-03-11T02:00:00Z"]),
        // Days 1, 8, 15, 22 and 29, so February 2026 ends early.
        ("cron(0 8 1/7 * ? *)", "2026-02-22T08:00:00Z", &["2026-03-01T08:00:00Z", "2026-03-08T08:00:00Z"]),
        ("cron(0 8 1/7 * ? *)", "2026-03-22T08:00:00Z", &["2026-03-29T08:00:00Z", "2026-04-01T08:00:00Z"]),
        // The first Sunday of the month; 2026-02-01 and 2026-03-01 are Sundays.
        ("cron(0 0 ? * SUN#1 *)", "2026-02-01T00:00:00Z", &["2026-03-01T00:00:00Z", "2026-04-05T00:00:00Z"]),
        ("cron(0 16 L * ? *)", "2026-04-30T16:00:00Z", &["2026-05-31T16:00:00Z"]),
        // Rate expressions are anchored at the given instant.
        ("rate(10 days)", "2026-01-15T10:30:00Z", &["2026-01-25T10:30:00Z", "2026-02-04T10:30:00Z"]),
        ("rate(4 hours)", "2026-12-31T22:00:00Z", &["2027-01-01T02:00:00Z", "2027-01-01T06:00:00Z"]),
        ("rate(1 day)", "2028-02-28T00:00:00Z", &["2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"]),
        ("rate(1 hour)", "2026-03-10T10:20:30Z", &["2026-03-10T11:20:30Z"]),
    ];
    check_all(cases);
}

#[test]
fn calendar_edges_and_year_limits() {
    #[rustfmt::skip]
    let cases: &[NextCase] = &[
        // February 29 only exists in leap years.
        ("cron(0 0 29 2 ? *)", "2026-03-01T00:00:00Z", &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
        // 2196 is the last leap year before 2200, which is past the year range.
        ("cron(0 0 29 2 ? *)", "2196-03-01T00:00:00Z", &["-"]),
        // February 30 never exists; the search ends at 2199.
        ("cron(0 0 30 2 ? *)", "1970-01-01T00:00:00Z", &["-"]),
        // A fixed year is exhausted after its last occurrence.
        ("cron(0 0 1 1 ? 2030)", "2026-06-01T00:00:00Z", &["2030-01-01T00:00:00Z", "-"]),
        ("cron(0 12 * * ? 2026)", "2026-12-31T12:00:00Z", &["-"]),
        ("cron(0 0 1 1 ? 2027,2029)", "2026-01-01T00:00:00Z", &["2027-01-01T00:00:00Z", "2029-01-01T00:00:00Z", "-"]),
        ("cron(0 0 1 1 ? 2026-2030/2)", "2025-01-01T00:00:00Z", &["2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "-"]),
        // The year field ends at 2199.
        ("cron(0 0 * * ? *)", "2199-12-30T12:00:00Z", &["2199-12-31T00:00:00Z", "-"]),
        ("cron(0 0 31 12 ? 2199)", "2199-12-31T00:00:00Z", &["-"]),
        ("cron(0 0 * * ? *)", "2300-01-01T00:00:00Z", &["-"]),
        // The year field starts at 1970.
        ("cron(0 0 * * ? *)", "1960-05-05T00:00:00Z", &["1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"]),
        ("cron(0 0 1 1 ? 1970)", "1969-12-31T23:59:59Z", &["1970-01-01T00:00:00Z", "-"]),
        // Every minute rolls over the hour, day and year.
        ("cron(* * * * ? *)", "2026-12-31T23:59:00Z", &["2027-01-01T00:00:00Z", "2027-01-01T00:01:00Z"]),
    ];
    check_all(cases);
}

#[test]
fn special_day_forms() {
    #[rustfmt::skip]
    let cases: &[NextCase] = &[
        // 15W: 2026-02-15 and 2026-03-15 are Sundays, 2026-08-15 is a Saturday.
        ("cron(0 12 15W * ? *)", "2026-02-01T00:00:00Z", &["2026-02-16T12:00:00Z", "2026-03-16T12:00:00Z", "2026-04-15T12:00:00Z"]),
        ("cron(0 12 15W * ? *)", "2026-08-01T00:00:00Z", &["2026-08-14T12:00:00Z"]),
        // 1W does not go back into the previous month: 2026-08-01 is a Saturday.
        ("cron(0 12 1W * ? *)", "2026-07-15T00:00:00Z", &["2026-08-03T12:00:00Z", "2026-09-01T12:00:00Z"]),
        // 31W does not go forward into the next month: 2026-05-31 is a Sunday.
        // June has no 31st, so the next match is Friday 2026-07-31.
        ("cron(0 12 31W * ? *)", "2026-05-01T00:00:00Z", &["2026-05-29T12:00:00Z", "2026-07-31T12:00:00Z"]),
        // LW: 2026-01-31 and 2026-02-28 are Saturdays, 2026-05-31 is a Sunday.
        ("cron(0 12 LW * ? *)", "2026-01-01T00:00:00Z", &["2026-01-30T12:00:00Z", "2026-02-27T12:00:00Z", "2026-03-31T12:00:00Z"]),
        ("cron(0 12 LW * ? *)", "2026-05-01T00:00:00Z", &["2026-05-29T12:00:00Z"]),
        // L-2: two days before the last day.
        ("cron(0 0 L-2 * ? *)", "2026-02-01T00:00:00Z", &["2026-02-26T00:00:00Z", "2026-03-29T00:00:00Z", "2026-04-28T00:00:00Z"]),
        // 5L: the last Thursday of the month.
        ("cron(0 12 ? * 5L *)", "2026-01-01T00:00:00Z", &["2026-01-29T12:00:00Z", "2026-02-26T12:00:00Z", "2026-03-26T12:00:00Z", "2026-04-30T12:00:00Z"]),
        ("cron(0 0 ? * FRIL *)", "2026-07-01T00:00:00Z", &["2026-07-31T00:00:00Z"]),
        // L alone in day-of-week is Saturday.
        ("cron(0 12 ? * L *)", "2026-03-10T00:00:00Z", &["2026-03-14T12:00:00Z", "2026-03-21T12:00:00Z"]),
        // 3#2: the second Tuesday.
        ("cron(0 9 ? * 3#2 *)", "2026-03-01T00:00:00Z", &["2026-03-10T09:00:00Z", "2026-04-14T09:00:00Z"]),
        // 1#5: the fifth Sunday, which most months lack.
        ("cron(0 0 ? * 1#5 *)", "2026-03-01T00:00:00Z", &["2026-03-29T00:00:00Z", "2026-05-31T00:00:00Z", "2026-08-30T00:00:00Z"]),
    ];
    check_all(cases);
}

#[test]
fn lists_ranges_steps_and_names() {
    #[rustfmt::skip]
    let cases: &[NextCase] = &[
        // Ranges that wrap: hours 22, 0 and 2; Friday to Monday.
        ("cron(0 22-2/2 * * ? *)", "2026-03-10T21:00:00Z", &["2026-03-10T22:00:00Z", "2026-03-11T00:00:00Z", "2026-03-11T02:00:00Z", "2026-03-11T22:00:00Z"]),
        ("cron(0 12 ? * FRI-MON *)", "2026-03-10T00:00:00Z", &["2026-03-13T12:00:00Z", "2026-03-14T12:00:00Z", "2026-03-15T12:00:00Z", "2026-03-16T12:00:00Z", "2026-03-20T12:00:00Z"]),
        // Names are case-insensitive.
        ("cron(0 12 ? jan,Jul mon *)", "2026-06-01T00:00:00Z", &["2026-07-06T12:00:00Z", "2026-07-13T12:00:00Z"]),
        // Month ranges with steps: January, April, July and October.
        ("cron(0 0 1 JAN-DEC/3 ? *)", "2026-02-01T00:00:00Z", &["2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"]),
        // Lists of values and ranges.
        ("cron(0,30 9-10,14 * * ? *)", "2026-03-10T10:31:00Z", &["2026-03-10T14:00:00Z", "2026-03-10T14:30:00Z", "2026-03-11T09:00:00Z"]),
        ("cron(5-30/5 1 * * ? *)", "2026-03-10T01:27:00Z", &["2026-03-10T01:30:00Z", "2026-03-11T01:05:00Z"]),
        ("cron(*/20 0 * * ? *)", "2026-03-10T00:41:00Z", &["2026-03-11T00:00:00Z", "2026-03-11T00:20:00Z"]),
        // Weekday numbers: 1 is Sunday and 7 is Saturday.
        ("cron(0 0 ? * 1,7 *)", "2026-03-10T00:00:00Z", &["2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"]),
        // Steps in day-of-week: Sunday, Tuesday, Thursday and Saturday; then Monday, Wednesday and Friday.
        ("cron(0 0 ? * 1/2 *)", "2026-03-10T00:00:00Z", &["2026-03-12T00:00:00Z", "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z", "2026-03-17T00:00:00Z"]),
        ("cron(0 0 ? * MON/2 *)", "2026-03-10T00:00:00Z", &["2026-03-11T00:00:00Z", "2026-03-13T00:00:00Z", "2026-03-16T00:00:00Z"]),
        // Whitespace around and inside the expression, and upper-case keywords.
        ("  cron(  0   10 * *  ?  * )  ", "2026-03-10T09:00:00Z", &["2026-03-10T10:00:00Z"]),
        ("cron (0\t10 * * ? *)", "2026-03-10T09:00:00Z", &["2026-03-10T10:00:00Z"]),
        ("CRON(0 10 * * ? *)", "2026-03-10T09:00:00Z", &["2026-03-10T10:00:00Z"]),
        (" rate( 10   days ) ", "2026-03-10T09:00:00Z", &["2026-03-20T09:00:00Z"]),
    ];
    check_all(cases);
}

#[test]
fn rate_periods() {
    #[rustfmt::skip]
    let cases: &[(&str, Duration)] = &[
        ("rate(10 days)", days(10)),
        ("rate(1 day)", days(1)),
        ("rate(1 days)", days(1)),
        ("rate(4 hours)", hours(4)),
        ("rate(1 hour)", hours(1)),
        ("rate(12 HOURS)", hours(12)),
        ("rate(999 days)", days(999)),
    ];
    let failures = cases
        .iter()
        .filter_map(|(text, want)| match ScheduleExpr::parse(text) {
            Ok(ScheduleExpr::Rate(got)) if got == *want => None,
            other => Some(format!("{text}: expected Rate({want:?}), got {other:?}")),
        })
        .collect();
    report(failures);
}

#[test]
fn parse_errors() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("cron(0 10 * * ?)", "cron() takes 6 fields (minutes hours day-of-month month day-of-week year), found 5"),
        ("cron(0 10 * * ? * *)", "cron() takes 6 fields (minutes hours day-of-month month day-of-week year), found 7"),
        ("cron()", "found 0"),
        ("cron(0 10 1 * MON *)", "you cannot specify both day-of-month and day-of-week; use ? in one of them"),
        ("cron(0 10 * * * *)", "you cannot specify both day-of-month and day-of-week"),
        ("cron(0 10 L * 6L *)", "you cannot specify both day-of-month and day-of-week"),
        ("cron(0 10 ? * ? *)", "exactly one of day-of-month and day-of-week must be ?, but both are"),
        ("cron(? 10 * * ? *)", "invalid cron() minutes field \"?\": ? is only allowed as the whole day-of-month or day-of-week field"),
        ("cron(0 10 * ? ? *)", "invalid cron() month field \"?\""),
        ("cron(0 10 * * ? ?)", "invalid cron() year field \"?\""),
        ("cron(0 10 1,? * ? *)", "? is only allowed"),
        ("cron(60 10 * * ? *)", "invalid cron() minutes field \"60\": 60 is out of range; expected a number 0-59"),
        ("cron(0 24 * * ? *)", "invalid cron() hours field \"24\": 24 is out of range; expected a number 0-23"),
        ("cron(0 0 32 * ? *)", "invalid cron() day-of-month field \"32\": 32 is out of range; expected a number 1-31"),
        ("cron(0 0 0 * ? *)", "0 is out of range; expected a number 1-31"),
        ("cron(0 0 1 13 ? *)", "13 is out of range; expected a number 1-12 or a name JAN-DEC"),
        ("cron(0 0 1 0 ? *)", "0 is out of range; expected a number 1-12"),
        ("cron(0 0 ? * 8 *)", "8 is out of range; expected a number 1-7 (1 = Sunday) or a name SUN-SAT"),
        ("cron(0 0 ? * 0 *)", "0 is out of range; expected a number 1-7"),
        ("cron(0 0 1 * ? 1969)", "1969 is out of range; expected a year 1970-2199"),
        ("cron(0 0 1 * ? 2200)", "2200 is out of range; expected a year 1970-2199"),
        ("cron(0 0 1 * ? 99999999999)", "is out of range; expected a year 1970-2199"),
        ("cron(0 0 1 FOO ? *)", "invalid cron() month field \"FOO\": \"FOO\" is not a valid value; expected a number 1-12 or a name JAN-DEC"),
        ("cron(0 0 ? * FUNDAY *)", "\"FUNDAY\" is not a valid value; expected a number 1-7 (1 = Sunday) or a name SUN-SAT"),
        ("cron(0 0 ? * MON-FRY *)", "\"FRY\" is not a valid value"),
        ("cron(0 0 ? * JAN *)", "\"JAN\" is not a valid value; expected a number 1-7"),
        ("cron(0 0 1 MON ? *)", "\"MON\" is not a valid value; expected a number 1-12"),
        ("cron(-5 0 * * ? *)", "a value is missing; expected a number 0-59"),
        ("cron(0 1,,2 * * ? *)", "a value is missing; expected a number 0-23"),
        ("cron(0/0 * * * ? *)", "invalid cron() minutes field \"0/0\": a step of 0 never advances; use a step from 1 to 60"),
        ("cron(0 */0 * * ? *)", "a step of 0 never advances; use a step from 1 to 24"),
        ("cron(0/61 * * * ? *)", "the step 61 is larger than the field's 60 values"),
        ("cron(*/x * * * ? *)", "the step after / must be a whole number from 1 to 60, found \"X\""),
        ("cron(0/ * * * ? *)", "the step after / must be a whole number"),
        ("cron(0/5/2 * * * ? *)", "the step after / must be a whole number"),
        ("cron(0 0 1 1 ? 2030-2026)", "the range 2030-2026 runs backwards; put the smaller year first"),
        ("cron(0 0 ? * 3#1,6#3 *)", "L and # must stand alone in day-of-week"),
        ("cron(0 0 ? * 3#6 *)", "the occurrence after # must be a number from 1 to 5, found \"6\""),
        ("cron(0 0 ? * 3#0 *)", "the occurrence after # must be a number from 1 to 5"),
        ("cron(0 0 ? * 8#1 *)", "8 is out of range"),
        ("cron(0 0 ? * 5L,6 *)", "L and # must stand alone in day-of-week"),
        ("cron(0 0 ? * 2-6L *)", "before L (for example 5L or THUL)"),
        ("cron(0 0 L,15 * ? *)", "L and W must stand alone in day-of-month"),
        ("cron(0 0 1W,15W * ? *)", "L and W must stand alone in day-of-month"),
        ("cron(0 0 XW * ? *)", "expected L, L-n, LW or a single day followed by W"),
        ("cron(0 0 W * ? *)", "expected L, L-n, LW or a single day followed by W"),
        ("cron(0 0 1-5W * ? *)", "expected L, L-n, LW or a single day followed by W"),
        ("cron(0 0 32W * ? *)", "32 is out of range; expected a number 1-31"),
        ("cron(0 0 L-31 * ? *)", "L-n needs a number of days n from 1 to 30, found \"31\""),
        ("cron(0 0 L-0 * ? *)", "L-n needs a number of days n from 1 to 30"),
        ("cron(0 L * * ? *)", "invalid cron() hours field \"L\": \"L\" is not a valid value; expected a number 0-23"),
        ("cron(0 0 1 * ? L)", "invalid cron() year field \"L\""),
        ("cron(0 0 1 * ? 2026#1)", "invalid cron() year field"),
        ("rate(0 days)", "invalid rate() expression \"rate(0 days)\": the value must be a positive whole number, found 0"),
        ("rate(5 weeks)", "the unit must be hour, hours, day or days, found \"weeks\""),
        ("rate(10 minutes)", "the unit must be hour, hours, day or days, found \"minutes\""),
        ("rate(days)", "expected a value and a unit such as rate(10 days) or rate(4 hours), found 1 word(s)"),
        ("rate(10)", "expected a value and a unit"),
        ("rate()", "found 0 word(s)"),
        ("rate(10 days extra)", "found 3 word(s)"),
        ("rate(-1 days)", "the value must be a positive whole number, found \"-1\""),
        ("rate(1.5 days)", "the value must be a positive whole number, found \"1.5\""),
        ("rate(99999999999999999999 days)", "the value 99999999999999999999 is too large"),
        ("rate(999999999999999999 days)", "the period of 999999999999999999 days is too large"),
        ("rate 10 days", "rate() expression \"rate 10 days\" is missing its opening parenthesis; expected rate(...)"),
        ("rate(10 days", "is missing its closing parenthesis"),
        ("cron 0 10 * * ? *)", "cron() expression \"cron 0 10 * * ? *)\" is missing its opening parenthesis"),
        ("cron(0 10 * * ? *", "cron() expression \"cron(0 10 * * ? *\" is missing its closing parenthesis"),
        ("cron", "is missing its opening parenthesis"),
        ("cron(0 10 * * ? *) daily", "has text after its closing parenthesis"),
        ("", "schedule expression is empty; expected rate(N days), rate(N hours) or cron(minutes hours day-of-month month day-of-week year)"),
        ("   ", "schedule expression is empty"),
        ("every 10 days", "unrecognised schedule expression \"every 10 days\"; expected rate(N days)"),
        ("at(2026-01-01T00:00:00)", "unrecognised schedule expression"),
        ("(0 10 * * ? *)", "unrecognised schedule expression"),
    ];
    let failures = cases
        .iter()
        .filter_map(|(text, want)| match ScheduleExpr::parse(text) {
            Err(e) if e.to_string().contains(want) => None,
            Err(e) => Some(format!(
                "{text:?}: expected an error containing {want:?}, got {e}"
            )),
            Ok(parsed) => Some(format!("{text:?}: expected an error, parsed {parsed:?}")),
        })
        .collect();
    report(failures);
}

#[test]
fn parse_error_variants() {
    assert_eq!(
        ScheduleExpr::parse("cron(0 10 * * ?)"),
        Err(ScheduleError::CronFieldCount(5))
    );
    assert_eq!(ScheduleExpr::parse(""), Err(ScheduleError::EmptyExpression));
    assert_eq!(
        ScheduleExpr::parse("cron(0 10 1 * mon *)"),
        Err(ScheduleError::CronDayConflict {
            day_of_month: "1".to_string(),
            day_of_week: "MON".to_string(),
            reason: "you cannot specify both day-of-month and day-of-week; use ? in one of them, as in cron(0 10 * * ? *) or cron(0 18 ? * MON-FRI *)",
        })
    );
    assert!(matches!(
        ScheduleExpr::parse("cron(0 25 * * ? *)"),
        Err(ScheduleError::InvalidCronField { field: "hours", .. })
    ));
    assert!(matches!(
        ScheduleExpr::parse("rate(5 weeks)"),
        Err(ScheduleError::InvalidRate { .. })
    ));
    assert!(matches!(
        parse_duration("90"),
        Err(ScheduleError::InvalidDuration { .. })
    ));
}

#[test]
fn display_is_canonical_and_round_trips() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("rate(10 days)", "rate(10 days)"),
        ("rate(1 day)", "rate(1 day)"),
        ("rate(1 days)", "rate(1 day)"),
        ("RATE( 4  hours )", "rate(4 hours)"),
        ("rate(1 hour)", "rate(1 hour)"),
        ("rate(24 hours)", "rate(1 day)"),
        ("rate(36 hours)", "rate(36 hours)"),
        ("cron(0 3 ? * tue *)", "cron(0 3 ? * TUE *)"),
        ("  cron( 0  3 ?\t* TUE * ) ", "cron(0 3 ? * TUE *)"),
        ("cron(0/15 * * * ? *)", "cron(0/15 * * * ? *)"),
        ("cron(0 8 l * ? *)", "cron(0 8 L * ? *)"),
        ("cron(0 9 ? * sun#1 2026-2030)", "cron(0 9 ? * SUN#1 2026-2030)"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        match ScheduleExpr::parse(text) {
            Ok(parsed) => {
                let shown = parsed.to_string();
                if shown != *want {
                    failures.push(format!("{text:?}: expected {want:?}, displayed {shown:?}"));
                }
                if ScheduleExpr::parse(&shown).as_ref() != Ok(&parsed) {
                    failures.push(format!("{text:?}: {shown:?} does not parse back"));
                }
            }
            Err(e) => failures.push(format!("{text:?}: {e}")),
        }
    }
    report(failures);
    // Rates built by hand fall back to smaller units.
    let shown = |secs| ScheduleExpr::Rate(Duration::from_secs(secs)).to_string();
    assert_eq!(shown(90), "rate(90 seconds)");
    assert_eq!(shown(120), "rate(2 minutes)");
    assert_eq!(shown(1), "rate(1 second)");
}

#[test]
fn cron_expr_is_usable_directly() {
    let Ok(ScheduleExpr::Cron(cron)) = ScheduleExpr::parse("cron(0 3 1 * ? *)") else {
        panic!("expected a cron expression");
    };
    assert_eq!(cron.to_string(), "cron(0 3 1 * ? *)");
    assert_eq!(
        cron.next_after(at("2026-01-15T00:00:00Z")),
        Some(at("2026-02-01T03:00:00Z"))
    );
}

#[test]
fn durations_parse() {
    #[rustfmt::skip]
    let cases: &[(&str, u64)] = &[
        ("90d", 90 * SECS_PER_DAY),
        ("48h", 48 * SECS_PER_HOUR),
        ("15m", 15 * SECS_PER_MINUTE),
        ("30s", 30),
        ("1h30m", 5_400),
        ("1d12h", 129_600),
        ("2w", 2 * SECS_PER_WEEK),
        ("1w2d3h4m5s", SECS_PER_WEEK + 2 * SECS_PER_DAY + 3 * SECS_PER_HOUR + 4 * SECS_PER_MINUTE + 5),
        ("0s", 0),
        ("0d", 0),
        ("007m", 420),
        ("  7d ", 7 * SECS_PER_DAY),
        ("9223372036854775s", 9_223_372_036_854_775),
    ];
    let failures = cases
        .iter()
        .filter_map(|(text, secs)| match parse_duration(text) {
            Ok(got) if got == Duration::from_secs(*secs) => None,
            other => Some(format!("{text:?}: expected {secs}s, got {other:?}")),
        })
        .collect();
    report(failures);
}

#[test]
fn duration_errors() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("", "invalid duration \"\": it is empty; expected a number followed by a unit s, m, h, d or w"),
        ("   ", "it is empty"),
        ("abc", "expected a number at \"abc\""),
        ("d", "expected a number at \"d\""),
        ("90", "the number 90 has no unit; add one of s, m, h, d or w, as in 90d"),
        ("1h30", "the number 30 has no unit"),
        ("-5d", "negative durations are not allowed"),
        ("+5d", "expected a number at \"+5d\""),
        ("5x", "unknown unit 'x' after 5; expected one of s, m, h, d or w"),
        ("5M", "unknown unit 'M' after 5"),
        ("1.5h", "unknown unit '.' after 1"),
        ("1h 30m", "expected a number at \" 30m\""),
        ("1h1h", "units must go from largest to smallest (w, d, h, m, s) and appear at most once"),
        ("30m1h", "units must go from largest to smallest"),
        ("99999999999999999999s", "it is too large (overflow)"),
        ("18446744073709551615d", "it is too large (overflow)"),
        ("18446744073709551615m1s", "it is too large (overflow)"),
        ("9223372036854776s", "it is too large (overflow)"),
    ];
    let failures = cases
        .iter()
        .filter_map(|(text, want)| match parse_duration(text) {
            Err(e) if e.to_string().contains(want) => None,
            other => Some(format!(
                "{text:?}: expected an error containing {want:?}, got {other:?}"
            )),
        })
        .collect();
    report(failures);
}

#[test]
fn durations_format() {
    #[rustfmt::skip]
    let cases: &[(Duration, &str)] = &[
        (Duration::ZERO, "0s"),
        (days(90), "90d"),
        (Duration::from_secs(129_600), "1d12h"),
        (Duration::from_secs(5_400), "1h30m"),
        (Duration::from_secs(59), "59s"),
        (Duration::from_secs(3_661), "1h1m1s"),
        (Duration::from_secs(SECS_PER_WEEK), "7d"),
        (days(365), "365d"),
        (Duration::from_secs(SECS_PER_DAY + 1), "1d1s"),
        (Duration::from_millis(1_500), "1s"),
        (Duration::from_millis(500), "0s"),
    ];
    let failures = cases
        .iter()
        .filter_map(|(d, want)| {
            let got = format_duration(*d);
            (got != *want).then(|| format!("{d:?}: expected {want:?}, got {got:?}"))
        })
        .collect();
    report(failures);
}

#[test]
fn durations_round_trip() {
    let mut failures = Vec::new();
    let seconds = [
        0,
        1,
        59,
        60,
        61,
        3_599,
        3_600,
        5_400,
        86_399,
        86_400,
        129_600,
        7_776_000,
        31_622_400,
        123_456_789,
    ];
    for secs in seconds {
        let d = Duration::from_secs(secs);
        let text = format_duration(d);
        if parse_duration(&text) != Ok(d) {
            failures.push(format!(
                "{secs}s formats as {text:?}, which does not parse back"
            ));
        }
    }
    for text in [
        "0s", "90d", "23h", "15m", "30s", "1h30m", "1d12h", "1d1h1m1s",
    ] {
        match parse_duration(text) {
            Ok(d) if format_duration(d) == text => {}
            other => failures.push(format!("{text:?} does not format back: {other:?}")),
        }
    }
    report(failures);
}

/// Facts with only the given schedule fields set.
fn facts(after_days: Option<i64>, expression: Option<&str>) -> RotationFacts {
    RotationFacts {
        automatically_after_days: after_days,
        schedule_expression: expression.map(str::to_string),
        ..RotationFacts::default()
    }
}

#[test]
fn last_rotation_falls_back() {
    let (a, b, c) = (
        Some(at("2026-03-01T00:00:00Z")),
        Some(at("2026-02-01T00:00:00Z")),
        Some(at("2026-01-01T00:00:00Z")),
    );
    let cases = [
        ((a, b, c), a),
        ((None, b, c), b),
        ((None, None, c), c),
        ((a, None, None), a),
        ((None, None, None), None),
    ];
    for ((current_version_created, last_rotated, created), want) in cases {
        let f = RotationFacts {
            created,
            last_rotated,
            current_version_created,
            ..RotationFacts::default()
        };
        assert_eq!(last_rotation(&f), want, "{f:?}");
    }
}

#[test]
fn interval_fallbacks() {
    let last = Some(at("2026-01-15T00:00:00Z"));
    let monthly = Some("cron(0 3 1 * ? *)");
    #[rustfmt::skip]
    let cases: &[IntervalCase] = &[
        ("policy wins", Some(days(30)), facts(Some(7), Some("rate(10 days)")), last, Some(days(90)), Some(days(30))),
        ("after days", None, facts(Some(7), monthly), last, Some(days(90)), Some(days(7))),
        ("zero days ignored", None, facts(Some(0), Some("rate(10 days)")), last, None, Some(days(10))),
        ("negative days ignored", None, facts(Some(-3), None), last, Some(days(90)), Some(days(90))),
        ("rate days", None, facts(None, Some("rate(10 days)")), last, Some(days(90)), Some(days(10))),
        ("rate hours", None, facts(None, Some("rate(4 hours)")), None, None, Some(hours(4))),
        // Feb 1 03:00 to Mar 1 03:00 in a common year.
        ("cron gap", None, facts(None, monthly), last, Some(days(90)), Some(days(28))),
        // Feb 1 03:00 to Mar 1 03:00 in a leap year.
        ("cron gap leap", None, facts(None, monthly), Some(at("2028-01-15T00:00:00Z")), None, Some(days(29))),
        // Feb 2 09:00 to Mar 2 09:00, the first Mondays.
        ("cron gap nth", None, facts(None, Some("cron(0 9 ? * 2#1 *)")), Some(at("2026-01-10T00:00:00Z")), None, Some(days(28))),
        ("cron gap hours", None, facts(None, Some("cron(0 4/12 * * ? *)")), last, None, Some(hours(12))),
        ("cron without last", None, facts(None, monthly), None, Some(days(90)), None),
        ("cron exhausted", None, facts(None, Some("cron(0 0 1 1 ? 2026)")), Some(at("2025-06-01T00:00:00Z")), Some(days(90)), None),
        ("invalid expression", None, facts(None, Some("cron(bogus)")), last, Some(days(90)), Some(days(90))),
        ("default", None, facts(None, None), last, Some(days(90)), Some(days(90))),
        ("nothing", None, facts(None, None), last, None, None),
    ];
    let failures = cases
        .iter()
        .filter_map(|(name, policy, f, last, default, want)| {
            let got = interval(*policy, f, *last, *default);
            (got != *want).then(|| format!("{name}: expected {want:?}, got {got:?}"))
        })
        .collect();
    report(failures);
}

#[test]
fn due_and_overdue() {
    let last = at("2026-01-01T00:00:00Z");
    assert_eq!(
        due(Some(last), Some(days(10))),
        Some(at("2026-01-11T00:00:00Z"))
    );
    assert_eq!(
        due(Some(last), Some(hours(36))),
        Some(at("2026-01-02T12:00:00Z"))
    );
    assert_eq!(due(None, Some(days(10))), None);
    assert_eq!(due(Some(last), None), None);
    assert_eq!(due(None, None), None);
    assert_eq!(due(Some(last), Some(Duration::from_secs(u64::MAX))), None);
    assert_eq!(due(Some(DateTime::<Utc>::MAX_UTC), Some(days(1))), None);

    let due_at = Some(at("2026-01-11T00:00:00Z"));
    let cases = [
        (None, "2030-01-01T00:00:00Z", false),
        (due_at, "2026-01-10T23:59:59Z", false),
        (due_at, "2026-01-11T00:00:00Z", false),
        (due_at, "2026-01-11T00:00:01Z", true),
    ];
    for (due_at, now, want) in cases {
        assert_eq!(
            is_overdue(due_at, at(now)),
            want,
            "due {due_at:?}, now {now}"
        );
    }
}

#[test]
fn scheduled_rules() {
    let enabled = |after_days: Option<i64>, expression: Option<&str>| RotationFacts {
        rotation_enabled: true,
        ..facts(after_days, expression)
    };
    let monthly = Some("cron(0 8 1 * ? *)");
    let daily = Some("cron(0 10 * * ? *)");
    let reported = Some(at("2026-05-05T05:05:05Z"));
    #[rustfmt::skip]
    let cases: &[ScheduledCase] = &[
        ("disabled", RotationFacts { next_rotation: reported, ..facts(Some(30), monthly) }, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "-"),
        ("reported date wins", RotationFacts { next_rotation: reported, ..enabled(Some(30), monthly) }, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-05-05T05:05:05Z"),
        ("after days", enabled(Some(30), monthly), "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-31T00:00:00Z"),
        ("after days in the past", enabled(Some(30), None), "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-01-31T00:00:00Z"),
        ("after days without last", enabled(Some(30), None), "-", "2026-01-02T00:00:00Z", "-"),
        ("after days without last falls to cron", enabled(Some(30), monthly), "-", "2026-02-10T00:00:00Z", "2026-03-01T08:00:00Z"),
        ("rate", enabled(None, Some("rate(10 days)")), "2026-01-01T05:00:00Z", "2026-01-02T00:00:00Z", "2026-01-11T05:00:00Z"),
        ("rate without last", enabled(None, Some("rate(10 days)")), "-", "2026-01-02T00:00:00Z", "-"),
        ("cron after a rotation in its window", enabled(None, monthly), "2026-02-01T08:10:00Z", "2026-02-10T00:00:00Z", "2026-03-01T08:00:00Z"),
        ("cron skips missed windows", enabled(None, monthly), "2025-11-01T08:30:00Z", "2026-02-10T00:00:00Z", "2026-03-01T08:00:00Z"),
        ("cron window still open", enabled(None, daily), "2026-03-09T10:05:00Z", "2026-03-10T15:00:00Z", "2026-03-10T10:00:00Z"),
        ("cron window at the 24-hour bound", enabled(None, daily), "2026-03-08T10:05:00Z", "2026-03-11T10:00:00Z", "2026-03-10T10:00:00Z"),
        ("cron window past the 24-hour bound", enabled(None, daily), "2026-03-08T10:05:00Z", "2026-03-11T10:00:01Z", "2026-03-11T10:00:00Z"),
        ("cron without last", enabled(None, monthly), "-", "2026-02-10T00:00:00Z", "2026-03-01T08:00:00Z"),
        ("cron without last, window open", enabled(None, monthly), "-", "2026-03-01T20:00:00Z", "2026-03-01T08:00:00Z"),
        ("cron exhausted", enabled(None, Some("cron(0 0 1 1 ? 2026)")), "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "-"),
        ("invalid expression", enabled(None, Some("cron(0 0 1 * MON *)")), "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "-"),
        ("nothing", enabled(None, None), "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "-"),
    ];
    let failures = cases
        .iter()
        .filter_map(|(name, f, last, now, want)| {
            let got = scheduled(f, maybe_at(last), at(now));
            (got != maybe_at(want)).then(|| format!("{name}: expected {want}, got {got:?}"))
        })
        .collect();
    report(failures);
}

#[test]
fn pending_and_current_versions() {
    #[rustfmt::skip]
    let cases: &[VersionCase] = &[
        ("no versions", &[], false, None),
        ("current only", &[("v1", &["AWSCURRENT"])], false, Some("v1")),
        ("pending on the current version", &[("v1", &["AWSCURRENT", "AWSPENDING"])], false, Some("v1")),
        ("pending on another version", &[("v1", &["AWSCURRENT"]), ("v2", &["AWSPENDING"])], true, Some("v1")),
        ("pending listed before current", &[("v2", &["AWSPENDING"]), ("v1", &["AWSPREVIOUS", "AWSCURRENT"])], true, Some("v1")),
        ("previous and current with pending", &[("v1", &["AWSPREVIOUS"]), ("v2", &["AWSCURRENT", "AWSPENDING"])], false, Some("v2")),
        ("pending without any current", &[("v2", &["AWSPENDING"])], true, None),
        ("labels are case-sensitive", &[("v1", &["awscurrent"]), ("v2", &["awspending"])], false, None),
        ("version without labels", &[("v1", &[]), ("v2", &["AWSCURRENT"])], false, Some("v2")),
    ];
    let mut failures = Vec::new();
    for (name, versions, pending, current) in cases {
        let got_pending = is_pending(versions.iter().copied());
        let got_current = current_version(versions.iter().copied());
        if got_pending != *pending || got_current != *current {
            failures.push(format!(
                "{name}: expected pending {pending} and current {current:?}, \
                 got {got_pending} and {got_current:?}"
            ));
        }
    }
    report(failures);
}

#[test]
fn pending_accepts_owned_strings() {
    let versions: Vec<(String, Vec<String>)> = vec![
        ("v1".to_string(), vec!["AWSCURRENT".to_string()]),
        ("v2".to_string(), vec!["AWSPENDING".to_string()]),
    ];
    let pairs = || {
        versions
            .iter()
            .map(|(id, stages)| (id.as_str(), stages.as_slice()))
    };
    assert!(is_pending(pairs()));
    assert_eq!(current_version(pairs()), Some("v1"));
}
