//! AWS schedule expressions: `rate(N days|hours)` and the six-field EventBridge `cron(...)`
//! dialect described in the folder's doc, with next-occurrence search. Pure.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc, Weekday};

use super::{SECS_PER_DAY, SECS_PER_HOUR, SECS_PER_MINUTE, ScheduleError, add_duration};

/// The first year a cron expression can name.
const MIN_YEAR: i32 = 1970;
/// The last year a cron expression can name; searches stop at its end.
const MAX_YEAR: i32 = 2199;

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
        if let Some((word, bit)) = position
            && let Some(bits) = self.0.get_mut(word)
        {
            *bits |= 1 << bit;
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
    if let Some(day) = text.strip_suffix('W')
        && !day.is_empty()
        && day.bytes().all(|b| b.is_ascii_digit())
    {
        return parse_value(day, &DAY_OF_MONTH).map(DayOfMonth::NearestWeekday);
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
