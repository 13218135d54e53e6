//! Configuration durations such as `90d`, `48h` or `1h30m`. Pure.

use std::time::Duration;

use chrono::TimeDelta;

use super::{
    DURATION_FORMS, SECS_PER_DAY, SECS_PER_HOUR, SECS_PER_MINUTE, SECS_PER_WEEK, ScheduleError,
};

/// Parses a keywarden configuration duration such as "90d", "48h", "15m",
/// "30s", or a compound one such as "1h30m" or "1d12h".
///
/// Each part is a whole number followed by a lower-case unit: `w` (7 days),
/// `d`, `h`, `m` or `s`. Parts go from the largest unit to the smallest and
/// each unit appears at most once, so `1h30m` is accepted and `30m1h` and
/// `1h1h` are not. Whitespace around the duration is ignored; whitespace
/// inside it is not allowed. Zero (`0s`, `0d`) is a valid duration. A
/// duration too large to add to a [`chrono::DateTime`] is rejected as an overflow.
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
