//! Placeholder: replaced by the real schedule module.
#![allow(dead_code, unused_variables)]
use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpr {
    Rate(Duration),
    Cron(CronExpr),
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
}
impl CronExpr {
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
}
impl ScheduleExpr {
    pub fn parse(s: &str) -> Result<ScheduleExpr, ScheduleError> {
        if s.starts_with("cron(") {
            Ok(ScheduleExpr::Cron(CronExpr { text: s.into() }))
        } else {
            Err(ScheduleError::Invalid("x".into()))
        }
    }
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
}
impl std::fmt::Display for ScheduleExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x")
    }
}
pub fn parse_duration(s: &str) -> Result<Duration, ScheduleError> {
    let (n, u) = s.split_at(s.len() - 1);
    let n: u64 = n
        .parse()
        .map_err(|_| ScheduleError::Invalid("bad".into()))?;
    Ok(Duration::from_secs(
        n * match u {
            "d" => 86400,
            "h" => 3600,
            "m" => 60,
            _ => 1,
        },
    ))
}
pub fn format_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationFacts {
    pub created: Option<DateTime<Utc>>,
    pub last_rotated: Option<DateTime<Utc>>,
    pub current_version_created: Option<DateTime<Utc>>,
    pub rotation_enabled: bool,
    pub automatically_after_days: Option<i64>,
    pub schedule_expression: Option<String>,
    pub next_rotation: Option<DateTime<Utc>>,
}
pub fn last_rotation(f: &RotationFacts) -> Option<DateTime<Utc>> {
    f.current_version_created.or(f.last_rotated).or(f.created)
}
pub fn interval(
    policy: Option<Duration>,
    f: &RotationFacts,
    last: Option<DateTime<Utc>>,
    default: Option<Duration>,
) -> Option<Duration> {
    policy.or(default)
}
pub fn due(last: Option<DateTime<Utc>>, interval: Option<Duration>) -> Option<DateTime<Utc>> {
    Some(last? + chrono::Duration::from_std(interval?).ok()?)
}
pub fn is_overdue(due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    due.is_some_and(|d| now > d)
}
pub fn scheduled(
    f: &RotationFacts,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    None
}
pub fn is_pending<'a, I, S>(versions: I) -> bool
where
    I: IntoIterator<Item = (&'a str, &'a [S])>,
    S: AsRef<str> + 'a,
{
    false
}
pub fn current_version<'a, I, S>(versions: I) -> Option<&'a str>
where
    I: IntoIterator<Item = (&'a str, &'a [S])>,
    S: AsRef<str> + 'a,
{
    None
}
