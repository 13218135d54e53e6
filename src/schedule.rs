//! Rotation schedules: AWS schedule expressions, configuration durations and
//! the arithmetic that turns a secret's rotation facts into instants.
//!
//! This module is pure. No function in it performs I/O and none reads the
//! clock: every function that depends on the current time takes `now` as an
//! explicit argument, so callers and tests decide what "now" is. All instants
//! are UTC, which is also the time zone of every AWS Secrets Manager rotation
//! schedule.
//!
//! It covers four things:
//!
//! * [`ScheduleExpr`] parses the `RotationRules.ScheduleExpression` that AWS
//!   reports, either `rate(N days)` / `rate(N hours)` or
//!   `cron(minutes hours day-of-month month day-of-week year)`, and finds the
//!   next occurrence after a given instant.
//! * [`parse_duration`] and [`format_duration`] read and write keywarden's
//!   configuration durations such as `90d`, `48h` or `1h30m`.
//! * [`last_rotation`], [`interval`], [`due`], [`is_overdue`] and
//!   [`scheduled`] combine a secret's [`RotationFacts`] into the instants the
//!   metrics report.
//! * [`is_pending`] and [`current_version`] read the staging labels of a
//!   secret's versions.
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

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc, Weekday};

/// The number of seconds in a minute.
const SECS_PER_MINUTE: u64 = 60;
/// The number of seconds in an hour.
const SECS_PER_HOUR: u64 = 3_600;
/// The number of seconds in a day.
const SECS_PER_DAY: u64 = 86_400;
/// The number of seconds in a week.
const SECS_PER_WEEK: u64 = 604_800;

/// The first year a cron expression can name.
const MIN_YEAR: i32 = 1970;
/// The last year a cron expression can name; searches stop at its end.
const MAX_YEAR: i32 = 2199;

/// The staging label of the version that is currently in use.
const STAGE_CURRENT: &str = "AWSCURRENT";
/// The staging label of the version that a rotation is creating.
const STAGE_PENDING: &str = "AWSPENDING";

/// How long a cron rotation window can stay open after its occurrence.
///
/// A Secrets Manager rotation window must not extend into the next UTC day,
/// so no window lasts longer than a day.
const MAX_ROTATION_WINDOW: TimeDelta = TimeDelta::hours(24);

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
    #[error("{kind}() expression {input:?} has text after its closing parenthesis; expected nothing after it")]
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
    #[error(
        "cron() takes 6 fields (minutes hours day-of-month month day-of-week year), found {0}"
    )]
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
    #[error("invalid cron() day fields (day-of-month {day_of_month:?}, day-of-week {day_of_week:?}): {reason}")]
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

/// A parsed AWS schedule expression: `rate(N days)` or `rate(N hours)`
/// (also with the singular `day` or `hour`), or `cron(m h dom mon dow year)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpr {
    /// A fixed period between rotations.
    Rate(Duration),
    /// A calendar schedule.
    Cron(CronExpr),
}

impl ScheduleExpr {
    /// Parses a schedule expression.
    ///
    /// Whitespace around the expression, between the keyword and the
    /// parenthesis and inside the parentheses is tolerated, and the keywords,
    /// units and names are case-insensitive. A `rate()` takes a positive whole
    /// number and one of `hour`, `hours`, `day` or `days`; minutes and weeks
    /// are rejected because Secrets Manager does not accept them.
    pub fn parse(s: &str) -> Result<ScheduleExpr, ScheduleError> {
        let text = s.trim();
        if text.is_empty() {
            return Err(ScheduleError::EmptyExpression);
        }
        let keyword_len = text
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        let (keyword, rest) = text.split_at(keyword_len);
        let kind = if keyword.eq_ignore_ascii_case("rate") {
            "rate"
        } else if keyword.eq_ignore_ascii_case("cron") {
            "cron"
        } else {
            return Err(ScheduleError::UnknownExpression(text.to_string()));
        };
        let Some(after_open) = rest.trim_start().strip_prefix('(') else {
            return Err(ScheduleError::MissingParenthesis {
                kind,
                side: "opening",
                input: text.to_string(),
            });
        };
        let Some(close) = after_open.rfind(')') else {
            return Err(ScheduleError::MissingParenthesis {
                kind,
                side: "closing",
                input: text.to_string(),
            });
        };
        let (inner, tail) = after_open.split_at(close);
        if tail.len() > 1 {
            return Err(ScheduleError::TrailingText {
                kind,
                input: text.to_string(),
            });
        }
        if kind == "rate" {
            parse_rate(inner, text).map(ScheduleExpr::Rate)
        } else {
            CronExpr::parse(inner).map(ScheduleExpr::Cron)
        }
    }

    /// The first occurrence strictly after `t`.
    ///
    /// For a rate the anchor is `t` itself, so the result is `t + rate`. For
    /// a cron the result is `None` when it has no further occurrence because
    /// its year range is exhausted.
    ///
    /// A rate also yields `None` when `t + rate` is beyond what
    /// [`DateTime`] can represent.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            ScheduleExpr::Rate(period) => add_duration(t, *period),
            ScheduleExpr::Cron(cron) => cron.next_after(t),
        }
    }
}

impl fmt::Display for ScheduleExpr {
    /// Writes the canonical form, such as `rate(10 days)`, `rate(1 hour)` or
    /// `cron(0 3 ? * TUE *)`.
    ///
    /// A rate is written in the largest of days, hours, minutes and seconds
    /// that divides it exactly. Only days and hours can come from
    /// [`ScheduleExpr::parse`]; the other units appear only for a rate built
    /// by hand. A cron is written with its fields in upper case and separated
    /// by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleExpr::Rate(period) => {
                let secs = period.as_secs();
                let (count, unit) = [
                    (SECS_PER_DAY, "day"),
                    (SECS_PER_HOUR, "hour"),
                    (SECS_PER_MINUTE, "minute"),
                ]
                .iter()
                .find(|(size, _)| secs > 0 && secs % size == 0)
                .map_or((secs, "second"), |&(size, unit)| (secs / size, unit));
                let plural = if count == 1 { "" } else { "s" };
                write!(f, "rate({count} {unit}{plural})")
            }
            ScheduleExpr::Cron(cron) => write!(f, "{cron}"),
        }
    }
}

/// Parses the inside of a `rate(...)` expression into its period.
fn parse_rate(inner: &str, input: &str) -> Result<Duration, ScheduleError> {
    let error = |reason: String| ScheduleError::InvalidRate {
        input: input.to_string(),
        reason,
    };
    let parts: Vec<&str> = inner.split_whitespace().collect();
    let [value, unit] = parts.as_slice() else {
        return Err(error(format!(
            "expected a value and a unit such as rate(10 days) or rate(4 hours), found {} word(s)",
            parts.len()
        )));
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(format!(
            "the value must be a positive whole number, found {value:?}"
        )));
    }
    let count: u64 = value
        .parse()
        .map_err(|_| error(format!("the value {value} is too large")))?;
    if count == 0 {
        return Err(error(
            "the value must be a positive whole number, found 0".to_string(),
        ));
    }
    let unit_secs = if unit.eq_ignore_ascii_case("day") || unit.eq_ignore_ascii_case("days") {
        SECS_PER_DAY
    } else if unit.eq_ignore_ascii_case("hour") || unit.eq_ignore_ascii_case("hours") {
        SECS_PER_HOUR
    } else {
        return Err(error(format!(
            "the unit must be hour, hours, day or days, found {unit:?}"
        )));
    };
    count
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .filter(|period| TimeDelta::from_std(*period).is_ok())
        .ok_or_else(|| error(format!("the period of {count} {unit} is too large")))
}

/// A parsed `cron()` schedule, evaluated in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    /// The six fields in upper case, separated by single spaces.
    text: String,
    /// The minutes of the hour that match.
    minutes: SmallSet,
    /// The hours of the day that match.
    hours: SmallSet,
    /// The rule for the day-of-month field.
    day_of_month: DayOfMonth,
    /// The months of the year that match.
    months: SmallSet,
    /// The rule for the day-of-week field.
    day_of_week: DayOfWeek,
    /// The years that match.
    years: YearSet,
}

impl CronExpr {
    /// Parses the six fields found inside `cron(...)`.
    fn parse(inner: &str) -> Result<CronExpr, ScheduleError> {
        let fields: Vec<String> = inner
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let [minutes, hours, day_of_month, months, day_of_week, years] = fields.as_slice() else {
            return Err(ScheduleError::CronFieldCount(fields.len()));
        };
        let cron = CronExpr {
            text: fields.join(" "),
            minutes: parse_field_set(minutes, &MINUTES)?,
            hours: parse_field_set(hours, &HOURS)?,
            day_of_month: parse_day_of_month(day_of_month).map_err(|reason| {
                ScheduleError::InvalidCronField {
                    field: DAY_OF_MONTH.name,
                    value: day_of_month.clone(),
                    reason,
                }
            })?,
            months: parse_field_set(months, &MONTHS)?,
            day_of_week: parse_day_of_week(day_of_week).map_err(|reason| {
                ScheduleError::InvalidCronField {
                    field: DAY_OF_WEEK.name,
                    value: day_of_week.clone(),
                    reason,
                }
            })?,
            years: parse_field_set(years, &YEARS)?,
        };
        let conflict = match (&cron.day_of_month, &cron.day_of_week) {
            (DayOfMonth::Any, DayOfWeek::Any) => Some(
                "exactly one of day-of-month and day-of-week must be ?, but both are; put a value or * in one of them",
            ),
            (DayOfMonth::Any, _) | (_, DayOfWeek::Any) => None,
            _ => Some(
                "you cannot specify both day-of-month and day-of-week; use ? in one of them, as in cron(0 10 * * ? *) or cron(0 18 ? * MON-FRI *)",
            ),
        };
        match conflict {
            Some(reason) => Err(ScheduleError::CronDayConflict {
                day_of_month: day_of_month.clone(),
                day_of_week: day_of_week.clone(),
                reason,
            }),
            None => Ok(cron),
        }
    }

    /// The first occurrence strictly after `t`, or `None` when there is none
    /// up to the end of the year field (at the latest the end of 2199).
    ///
    /// Occurrences fall on whole minutes. The search walks forward over the
    /// matching years, months and days and only looks at hours and minutes on
    /// days that match, so even an expression that never matches again costs
    /// at most one check per remaining day up to 2199. An instant before 1970
    /// is treated as the start of 1970.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = search_start(t)?;
        let (start_year, start_month, start_day) = (start.year(), start.month(), start.day());
        for year in start_year..=MAX_YEAR {
            if !self.years.contains(year) {
                continue;
            }
            let in_start_year = year == start_year;
            let first_month = if in_start_year { start_month } else { 1 };
            for month in first_month..=12 {
                if !self.months.contains(month) {
                    continue;
                }
                let in_start_month = in_start_year && month == start_month;
                let last_day = days_in_month(year, month)?;
                let first_day = if in_start_month { start_day } else { 1 };
                for day in first_day..=last_day {
                    let date = NaiveDate::from_ymd_opt(year, month, day)?;
                    if !self.day_matches(date, last_day) {
                        continue;
                    }
                    let from = if in_start_month && day == start_day {
                        (start.hour(), start.minute())
                    } else {
                        (0, 0)
                    };
                    if let Some((hour, minute)) = self.first_time_of_day(from) {
                        return date.and_hms_opt(hour, minute, 0).map(|dt| dt.and_utc());
                    }
                }
            }
        }
        None
    }

    /// The earliest matching hour and minute at or after `from` on one day.
    fn first_time_of_day(&self, from: (u32, u32)) -> Option<(u32, u32)> {
        let (from_hour, from_minute) = from;
        (from_hour..24)
            .filter(|&hour| self.hours.contains(hour))
            .find_map(|hour| {
                let first_minute = if hour == from_hour { from_minute } else { 0 };
                (first_minute..60)
                    .find(|&minute| self.minutes.contains(minute))
                    .map(|minute| (hour, minute))
            })
    }

    /// Whether both day fields accept `date`, a day of a month with
    /// `last_day` days.
    fn day_matches(&self, date: NaiveDate, last_day: u32) -> bool {
        self.day_of_month.matches(date, last_day) && self.day_of_week.matches(date, last_day)
    }
}

impl fmt::Display for CronExpr {
    /// Writes `cron(...)` with the fields in upper case and separated by
    /// single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cron({})", self.text)
    }
}

/// The first whole minute strictly after `t`, but no earlier than 1970.
///
/// It is `None` when that minute is past the end of 2199.
fn search_start(t: DateTime<Utc>) -> Option<NaiveDateTime> {
    let naive = t.naive_utc();
    let this_minute = naive.date().and_hms_opt(naive.hour(), naive.minute(), 0)?;
    let next_minute = this_minute.checked_add_signed(TimeDelta::minutes(1))?;
    let floor = NaiveDate::from_ymd_opt(MIN_YEAR, 1, 1)?.and_hms_opt(0, 0, 0)?;
    Some(next_minute.max(floor)).filter(|start| start.year() <= MAX_YEAR)
}

/// The number of days in `month` of `year`.
fn days_in_month(year: i32, month: u32) -> Option<u32> {
    let (next_year, next_month) = if month == 12 {
        (year.checked_add(1)?, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(next_year, next_month, 1)?
        .pred_opt()
        .map(|last| last.day())
}

/// The AWS number of a weekday: 1 is Sunday and 7 is Saturday.
fn weekday_number(date: NaiveDate) -> u32 {
    date.weekday().number_from_sunday()
}

/// The weekday nearest to day `target` of a month with `last_day` days,
/// without leaving the month, or `None` when the month has no such day.
fn nearest_weekday(year: i32, month: u32, target: u32, last_day: u32) -> Option<u32> {
    let weekday = NaiveDate::from_ymd_opt(year, month, target)?.weekday();
    Some(match weekday {
        Weekday::Sat if target == 1 => 3,
        Weekday::Sat => target - 1,
        Weekday::Sun if target == last_day => target - 2,
        Weekday::Sun => target + 1,
        _ => target,
    })
}

/// Something a cron field's values can be collected into.
trait FieldSet: Default {
    /// Adds `value`; values the set cannot hold are ignored, which never
    /// happens for values that passed the field's range check.
    fn insert(&mut self, value: u32);
}

/// A set of values below 64, one bit per value; it holds every field but
/// the year.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SmallSet(u64);

impl SmallSet {
    /// Whether `value` is in the set.
    fn contains(self, value: u32) -> bool {
        value < 64 && (self.0 >> value) & 1 == 1
    }
}

impl FieldSet for SmallSet {
    fn insert(&mut self, value: u32) {
        if value < 64 {
            self.0 |= 1 << value;
        }
    }
}

/// A set of years from 1970 to 2199, one bit per year counted from 1970.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct YearSet([u64; 4]);

impl YearSet {
    /// Whether `year` is in the set.
    fn contains(&self, year: i32) -> bool {
        Self::position(year).and_then(|(word, bit)| self.0.get(word).map(|bits| (bits >> bit) & 1))
            == Some(1)
    }

    /// The word and bit that stand for `year`, if it is not before 1970.
    fn position(year: i32) -> Option<(usize, u32)> {
        let offset = u32::try_from(year.checked_sub(MIN_YEAR)?).ok()?;
        Some((usize::try_from(offset / 64).ok()?, offset % 64))
    }
}

impl FieldSet for YearSet {
    fn insert(&mut self, value: u32) {
        let position = i32::try_from(value).ok().and_then(Self::position);
        if let Some((word, bit)) = position {
            if let Some(bits) = self.0.get_mut(word) {
                *bits |= 1 << bit;
            }
        }
    }
}

/// The rule of a day-of-month field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfMonth {
    /// `?`: the day-of-week field decides.
    Any,
    /// Numbers, ranges, steps or `*`.
    Days(SmallSet),
    /// `L` or `L-n`: the last day of the month, less `offset` days.
    Last {
        /// How many days before the last day.
        offset: u32,
    },
    /// `LW`: the last weekday of the month.
    LastWeekday,
    /// `nW`: the weekday nearest to day n within the month.
    NearestWeekday(u32),
}

impl DayOfMonth {
    /// Whether `date`, a day of a month with `last_day` days, matches.
    fn matches(&self, date: NaiveDate, last_day: u32) -> bool {
        let day = date.day();
        match *self {
            DayOfMonth::Any => true,
            DayOfMonth::Days(days) => days.contains(day),
            DayOfMonth::Last { offset } => last_day.checked_sub(offset) == Some(day),
            DayOfMonth::LastWeekday => {
                nearest_weekday(date.year(), date.month(), last_day, last_day) == Some(day)
            }
            DayOfMonth::NearestWeekday(target) => {
                nearest_weekday(date.year(), date.month(), target, last_day) == Some(day)
            }
        }
    }
}

/// The rule of a day-of-week field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfWeek {
    /// `?`: the day-of-month field decides.
    Any,
    /// Weekday numbers (1 is Sunday), names, ranges, steps, `*` or `L`.
    Days(SmallSet),
    /// `nL`: the last weekday n of the month.
    LastOfMonth(u32),
    /// `n#k`: the k-th weekday n of the month.
    Nth {
        /// The weekday, 1 (Sunday) to 7 (Saturday).
        weekday: u32,
        /// Which occurrence in the month, 1 to 5.
        nth: u32,
    },
}

impl DayOfWeek {
    /// Whether `date`, a day of a month with `last_day` days, matches.
    fn matches(&self, date: NaiveDate, last_day: u32) -> bool {
        let day = date.day();
        let weekday = weekday_number(date);
        match *self {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days.contains(weekday),
            DayOfWeek::LastOfMonth(wanted) => weekday == wanted && day + 7 > last_day,
            DayOfWeek::Nth {
                weekday: wanted,
                nth,
            } => weekday == wanted && (day - 1) / 7 + 1 == nth,
        }
    }
}

/// The description of one cron field's values.
struct FieldSpec {
    /// The field's name in error messages.
    name: &'static str,
    /// The smallest value.
    min: u32,
    /// The largest value.
    max: u32,
    /// Names for the values from `min` upwards, if the field has names.
    names: &'static [&'static str],
    /// Whether a range may wrap from the largest value to the smallest.
    cyclic: bool,
    /// What a valid value looks like, for error messages.
    expected: &'static str,
}

/// The minutes field.
const MINUTES: FieldSpec = FieldSpec {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
    cyclic: true,
    expected: "a number 0-59",
};

/// The hours field.
const HOURS: FieldSpec = FieldSpec {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
    cyclic: true,
    expected: "a number 0-23",
};

/// The day-of-month field, for its plain numbers.
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    cyclic: true,
    expected: "a number 1-31",
};

/// The month field.
const MONTHS: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    cyclic: true,
    expected: "a number 1-12 or a name JAN-DEC",
};

/// The day-of-week field, for its plain weekdays.
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    cyclic: true,
    expected: "a number 1-7 (1 = Sunday) or a name SUN-SAT",
};

/// The year field.
const YEARS: FieldSpec = FieldSpec {
    name: "year",
    min: MIN_YEAR as u32,
    max: MAX_YEAR as u32,
    names: &[],
    cyclic: false,
    expected: "a year 1970-2199",
};

/// Parses a field made only of values, ranges, steps, lists and `*`, and
/// wraps any problem in an error that names the field.
fn parse_field_set<T: FieldSet>(text: &str, spec: &FieldSpec) -> Result<T, ScheduleError> {
    parse_set(text, spec).map_err(|reason| ScheduleError::InvalidCronField {
        field: spec.name,
        value: text.to_string(),
        reason,
    })
}

/// Parses a list of values, ranges, steps and `*` into a set.
fn parse_set<T: FieldSet>(text: &str, spec: &FieldSpec) -> Result<T, String> {
    let mut set = T::default();
    let width = spec.max - spec.min + 1;
    for item in text.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(step, width)?)),
            None => (item, None),
        };
        let (start, end) = if base == "*" {
            (spec.min, spec.max)
        } else if let Some((first, last)) = base.split_once('-') {
            (parse_value(first, spec)?, parse_value(last, spec)?)
        } else {
            let value = parse_value(base, spec)?;
            (value, if step.is_some() { spec.max } else { value })
        };
        // The span is how many values past `start` the range reaches,
        // counting across the wrap from the maximum back to the minimum.
        let span = if start <= end {
            end - start
        } else if spec.cyclic {
            (spec.max - start) + (end - spec.min) + 1
        } else {
            return Err(format!(
                "the range {start}-{end} runs backwards; put the smaller {} first",
                spec.name
            ));
        };
        let step = step.unwrap_or(1);
        let mut offset = 0;
        while offset <= span {
            set.insert(spec.min + (start - spec.min + offset) % width);
            offset += step;
        }
    }
    Ok(set)
}

/// Parses the increment after `/`, which must be between 1 and the number
/// of values in the field.
fn parse_step(text: &str, width: u32) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the step after / must be a whole number from 1 to {width}, found {text:?}"
        ));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(format!(
            "a step of 0 never advances; use a step from 1 to {width}"
        )),
        Ok(step) if step <= width => Ok(step),
        _ => Err(format!(
            "the step {text} is larger than the field's {width} values; use a step from 1 to {width}"
        )),
    }
}

/// Parses one value: a number in the field's range or one of its names.
fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    if text.is_empty() {
        return Err(format!("a value is missing; expected {}", spec.expected));
    }
    if text == "?" {
        return Err(format!(
            "? is only allowed as the whole day-of-month or day-of-week field; expected {}",
            spec.expected
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u32>()
            .ok()
            .filter(|value| (spec.min..=spec.max).contains(value))
            .ok_or_else(|| format!("{text} is out of range; expected {}", spec.expected));
    }
    spec.names
        .iter()
        .zip(spec.min..)
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, value)| value)
        .ok_or_else(|| format!("{text:?} is not a valid value; expected {}", spec.expected))
}

/// Parses a day-of-month field, including `?`, `L`, `L-n`, `LW` and `nW`.
fn parse_day_of_month(text: &str) -> Result<DayOfMonth, String> {
    if text == "?" {
        return Ok(DayOfMonth::Any);
    }
    if !text.contains(['L', 'W']) {
        return parse_set(text, &DAY_OF_MONTH).map(DayOfMonth::Days);
    }
    if text.contains(',') {
        return Err(
            "L and W must stand alone in day-of-month (for example L, L-3, LW or 15W), not in a list"
                .to_string(),
        );
    }
    if text == "L" {
        return Ok(DayOfMonth::Last { offset: 0 });
    }
    if text == "LW" {
        return Ok(DayOfMonth::LastWeekday);
    }
    if let Some(offset) = text.strip_prefix("L-") {
        return Some(offset)
            .filter(|offset| offset.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|offset| offset.parse::<u32>().ok())
            .filter(|offset| (1..=30).contains(offset))
            .map(|offset| DayOfMonth::Last { offset })
            .ok_or_else(|| format!("L-n needs a number of days n from 1 to 30, found {offset:?}"));
    }
    if let Some(day) = text.strip_suffix('W') {
        if !day.is_empty() && day.bytes().all(|b| b.is_ascii_digit()) {
            return parse_value(day, &DAY_OF_MONTH).map(DayOfMonth::NearestWeekday);
        }
    }
    Err("expected L, L-n, LW or a single day followed by W (for example 15W)".to_string())
}

/// Parses a day-of-week field, including `?`, `L`, `nL` and `n#k`.
fn parse_day_of_week(text: &str) -> Result<DayOfWeek, String> {
    if text == "?" {
        return Ok(DayOfWeek::Any);
    }
    let special = text.contains('#') || text.split(',').any(|item| item.ends_with('L'));
    if !special {
        return parse_set(text, &DAY_OF_WEEK).map(DayOfWeek::Days);
    }
    if text.contains(',') {
        return Err(
            "L and # must stand alone in day-of-week (for example 6L or 3#2); lists such as 3#1,6#3 are not allowed"
                .to_string(),
        );
    }
    if let Some((weekday, nth)) = text.split_once('#') {
        let weekday = parse_value(weekday, &DAY_OF_WEEK)?;
        let nth = Some(nth)
            .filter(|nth| nth.len() == 1)
            .and_then(|nth| nth.parse::<u32>().ok())
            .filter(|nth| (1..=5).contains(nth))
            .ok_or_else(|| {
                format!("the occurrence after # must be a number from 1 to 5, found {nth:?}")
            })?;
        return Ok(DayOfWeek::Nth { weekday, nth });
    }
    if text == "L" {
        let mut saturday = SmallSet::default();
        saturday.insert(DAY_OF_WEEK.max);
        return Ok(DayOfWeek::Days(saturday));
    }
    let weekday = text.strip_suffix('L').unwrap_or(text);
    parse_value(weekday, &DAY_OF_WEEK)
        .map(DayOfWeek::LastOfMonth)
        .map_err(|reason| format!("{reason}, before L (for example 5L or THUL)"))
}

/// Parses a keywarden configuration duration such as "90d", "48h", "15m",
/// "30s", or a compound one such as "1h30m" or "1d12h".
///
/// Each part is a whole number followed by a lower-case unit: `w` (7 days),
/// `d`, `h`, `m` or `s`. Parts go from the largest unit to the smallest and
/// each unit appears at most once, so `1h30m` is accepted and `30m1h` and
/// `1h1h` are not. Whitespace around the duration is ignored; whitespace
/// inside it is not allowed. Zero (`0s`, `0d`) is a valid duration. A
/// duration too large to add to a [`DateTime`] is rejected as an overflow.
/// Empty text, a sign, a number without a unit and an unknown unit are
/// rejected too, each with a message that says what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, ScheduleError> {
    const UNITS: [(char, u64); 5] = [
        ('w', SECS_PER_WEEK),
        ('d', SECS_PER_DAY),
        ('h', SECS_PER_HOUR),
        ('m', SECS_PER_MINUTE),
        ('s', 1),
    ];
    let error = |reason: String| ScheduleError::InvalidDuration {
        input: s.to_string(),
        reason,
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(error(format!("it is empty; expected {DURATION_FORMS}")));
    }
    if text.starts_with('-') {
        return Err(error(format!(
            "negative durations are not allowed; expected {DURATION_FORMS}"
        )));
    }
    let mut total: u64 = 0;
    let mut previous_rank: Option<usize> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_len);
        if digits.is_empty() {
            return Err(error(format!(
                "expected a number at {after:?}; expected {DURATION_FORMS}"
            )));
        }
        let mut chars = after.chars();
        let Some(unit) = chars.next() else {
            return Err(error(format!(
                "the number {digits} has no unit; add one of s, m, h, d or w, as in {digits}d"
            )));
        };
        let Some(rank) = UNITS.iter().position(|&(name, _)| name == unit) else {
            return Err(error(format!(
                "unknown unit {unit:?} after {digits}; expected one of s, m, h, d or w"
            )));
        };
        if previous_rank.is_some_and(|previous| rank <= previous) {
            return Err(error(
                "units must go from largest to smallest (w, d, h, m, s) and appear at most once, as in 1d12h"
                    .to_string(),
            ));
        }
        let unit_secs = UNITS.get(rank).map_or(1, |&(_, secs)| secs);
        total = digits
            .parse::<u64>()
            .ok()
            .and_then(|count| count.checked_mul(unit_secs))
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| error("it is too large (overflow)".to_string()))?;
        previous_rank = Some(rank);
        rest = chars.as_str();
    }
    let duration = Duration::from_secs(total);
    if TimeDelta::from_std(duration).is_err() {
        return Err(error("it is too large (overflow)".to_string()));
    }
    Ok(duration)
}

/// Formats a duration in the syntax of [`parse_duration`], largest units
/// first ("90d", "1d12h", "0s").
///
/// The largest unit used is the day, so two weeks are written `14d`.
/// Fractions of a second are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut rest = d.as_secs();
    if rest == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (size, unit) in [
        (SECS_PER_DAY, 'd'),
        (SECS_PER_HOUR, 'h'),
        (SECS_PER_MINUTE, 'm'),
        (1, 's'),
    ] {
        let count = rest / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push(unit);
            rest %= size;
        }
    }
    out
}

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

/// `t + d`, or `None` when the result is not representable.
fn add_duration(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
