//! What a reminder says (SPEC §5): the Subject, the plain-text body, the MessageAttributes, the
//! message stored for a ledger row that lost its own, and the ids of a FIFO topic.
//!
//! Pure: no I/O, and `now` comes in through [`MessageContext`] (this module never reads the
//! clock). It never sees a secret value: everything it writes comes from the view (metadata)
//! and the inventory. It must never import the ledger, the task, the store or the AWS
//! boundary beyond the plain [`FifoIds`] data type.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aws::FifoIds;
use crate::config::SecretSpec;
use crate::domain::view::{AccessFacts, SecretStatus};
use crate::reminder::plan::ReminderKey;
use crate::schedule::format_duration;

/// SNS rejects a Subject of 100 characters or more.
pub(crate) const SUBJECT_MAX: usize = 99;
/// Undeclared readers named in a message at most (the rest are counted).
const READERS_LISTED: usize = 20;

/// What the access poller knows about a secret, for the message.
#[derive(Debug, Clone, Copy)]
pub enum AccessInfo<'a> {
    /// `[access]` is not configured.
    Off,
    /// `[access]` is configured but has not reported on this secret yet.
    NotYet,
    /// The facts of the baseline window.
    Facts(&'a AccessFacts),
}

/// Everything a message is rendered from. Holds no value.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext<'a> {
    /// The secret's status from the view.
    pub status: &'a SecretStatus,
    /// Its inventory entry (consumers, window); `None` for a discovered secret.
    pub spec: Option<&'a SecretSpec>,
    /// Readers seen in CloudTrail.
    pub access: AccessInfo<'a>,
    /// The planned rotation time (SPEC §11), when the secret has one.
    pub planned: Option<i64>,
    /// When the message is rendered.
    pub now: i64,
    /// The account and region the secret lives in, when known.
    pub place: Option<(&'a str, &'a str)>,
}

/// A rendered message, as stored in the ledger and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// ASCII, fewer than 100 characters (`SUBJECT_MAX` at most).
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// MessageAttributes (String): `secret`, `severity`, `due`, `kind`, and `planned` when
    /// there is a planned time; a notice has `rotation_id` (and `result` at the end) instead.
    pub attributes: Vec<(String, String)>,
}

/// `YYYY-MM-DD` of a timestamp.
pub(crate) fn date(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// `YYYY-MM-DD HH:MM UTC` of a timestamp.
pub(crate) fn date_time(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// A span of time in words, rounded: `14 days`, `5 hours`, `less than an hour`.
pub(crate) fn span_words(seconds: i64) -> String {
    let s = seconds.max(0);
    if s >= 36 * 3600 {
        format!("{} days", (s + 43_200) / 86_400)
    } else if s >= 5400 {
        format!("{} hours", (s + 1800) / 3600)
    } else if s >= 3600 {
        "1 hour".to_string()
    } else {
        "less than an hour".to_string()
    }
}

/// The Subject: `[keywarden] <secret>: ...`, with the secret's name made ASCII and shortened
/// so the whole stays within [`SUBJECT_MAX`] characters.
pub(crate) fn subject(name: &str, tail: &str) -> String {
    const PREFIX: &str = "[keywarden] ";
    let ascii: String = name
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    let room = SUBJECT_MAX.saturating_sub(PREFIX.len() + tail.len());
    let shown = if ascii.len() <= room {
        ascii
    } else {
        let keep = room.saturating_sub(3);
        format!("{}...", &ascii[..keep])
    };
    format!("{PREFIX}{shown}{tail}")
}

/// Renders the message of a reminder. Pure: everything comes from `ctx`.
///
/// The body is, in order: the headline, the facts of the secret, its declared consumers, the
/// readers seen in CloudTrail, the pre-rotation checklist and a closing line.
pub fn render(key: &ReminderKey, ctx: &MessageContext<'_>) -> Message {
    let s = ctx.status;
    let name = crate::domain::targets::label_of_key(&s.name);
    let shown = match ctx.place {
        Some((account, region)) if !account.is_empty() => {
            format!("{name} ({account}, {region})")
        }
        _ => name.to_string(),
    };
    let (subject_tail, headline) = headline(key, &shown, ctx.planned, ctx.now);
    // The Subject names the account and region when they fit; the body always does.
    let subject_name = if "[keywarden] ".len() + shown.len() + subject_tail.len() <= SUBJECT_MAX {
        shown.as_str()
    } else {
        name
    };
    let consumers: &[String] = ctx.spec.map_or(&[], |spec| spec.consumers.as_slice());

    let mut b = String::with_capacity(2048);
    let _ = writeln!(b, "{headline}\n");
    write_facts(&mut b, key, s, ctx.place, ctx.planned, ctx.now);
    write_consumers(&mut b, consumers);
    let readers_line = write_readers(&mut b, ctx.access);
    write_checklist(
        &mut b,
        &window_line(ctx.spec, ctx.now),
        consumers.len(),
        &readers_line,
    );
    write_closing(&mut b, key);

    Message {
        subject: subject(subject_name, &subject_tail),
        body: b,
        attributes: attributes(key, s, ctx.place, ctx.planned),
    }
}

/// The tail of the Subject after the secret's name, and the body's first sentence.
fn headline(key: &ReminderKey, name: &str, planned: Option<i64>, now: i64) -> (String, String) {
    let due_date = date(key.due);
    let plan = planned.map(|p| plan_sentence(p, key.due));
    if key.is_overdue() {
        let then = plan.map_or_else(|| "Rotate it now.".to_string(), |p| format!("{p}."));
        (
            format!(": rotation OVERDUE since {due_date}"),
            format!(
                "{} was due for rotation on {} and is overdue by {}. {then}",
                name,
                date_time(key.due),
                span_words(now - key.due)
            ),
        )
    } else if let (Some(p), Some(plan)) = (planned, plan) {
        let left = span_words(p - now);
        (
            format!(": rotation planned {} (in {left}), due {due_date}", date(p)),
            format!(
                "{} is due for rotation on {}. {plan}, in {left}. Prepare for it now.",
                name,
                date_time(key.due),
            ),
        )
    } else {
        let left = span_words(key.due - now);
        (
            format!(": rotation due {due_date} (in {left})"),
            format!(
                "{} is due for rotation on {} (in {}). Plan the rotation now.",
                name,
                date_time(key.due),
                left
            ),
        )
    }
}

/// What keywarden plans: the planned time and which opening of the window it is.
fn plan_sentence(planned: i64, due: i64) -> String {
    let which = if planned <= due {
        "the last opening of its window before the due date"
    } else {
        "the first opening of its window after the due date"
    };
    format!(
        "keywarden plans to rotate it at {} ({which})",
        date_time(planned)
    )
}

/// The facts block: one aligned `Name:  value` line per fact of the secret.
fn write_facts(
    b: &mut String,
    key: &ReminderKey,
    s: &SecretStatus,
    place: Option<(&str, &str)>,
    planned: Option<i64>,
    now: i64,
) {
    let _ = writeln!(
        b,
        "Secret:        {}",
        crate::domain::targets::label_of_key(&s.name)
    );
    if let Some((account, region)) = place.filter(|(a, _)| !a.is_empty()) {
        let _ = writeln!(b, "Account:       {account}");
        let _ = writeln!(b, "Region:        {region}");
    }
    let _ = writeln!(b, "Id:            {}", s.id);
    if let Some(arn) = &s.arn {
        let _ = writeln!(b, "ARN:           {arn}");
    }
    let _ = writeln!(
        b,
        "Due date:      {} ({})",
        date(key.due),
        date_time(key.due)
    );
    if let Some(p) = planned {
        let _ = writeln!(b, "Planned:       {}", date_time(p));
    }
    let _ = writeln!(b, "Age:           {}", age(s, now));
    let _ = writeln!(b, "Interval:      {}", interval(s));
    let _ = writeln!(b, "Impact:        {}", impact(s));
    let _ = writeln!(b, "Severity:      {}", s.severity.as_str());
    let _ = writeln!(b, "Strategy:      {}", s.strategy.as_str());
    let _ = writeln!(b, "AWS rotation:  {}", aws_rotation(s));
    if s.pending {
        let _ = writeln!(
            b,
            "Pending:       a rotation is half done (AWSPENDING on a version that is not AWSCURRENT)"
        );
    }
}

/// The age in whole days and the last rotation, or `unknown`.
fn age(s: &SecretStatus, now: i64) -> String {
    match s.last_rotated {
        Some(t) => format!(
            "{} days (last rotated {})",
            (now - t).div_euclid(86_400),
            date_time(t)
        ),
        None => "unknown".to_string(),
    }
}

/// The rotation interval as `schedule::format_duration` writes it, or `unknown`.
fn interval(s: &SecretStatus) -> String {
    s.interval_seconds
        .map(|i| format_duration(Duration::from_secs(i.max(0) as u64)))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The inventory's impact statement, or a note that it has none.
fn impact(s: &SecretStatus) -> &str {
    if s.impact.is_empty() {
        "not stated in the inventory"
    } else {
        s.impact.as_str()
    }
}

/// Whether AWS's own rotation is on, and its next run when known.
fn aws_rotation(s: &SecretStatus) -> String {
    match (s.rotation_enabled, s.scheduled) {
        (true, Some(t)) => format!("on, next run {}", date_time(t)),
        (true, None) => "on".to_string(),
        (false, _) => "off".to_string(),
    }
}

/// The declared consumers block.
fn write_consumers(b: &mut String, consumers: &[String]) {
    let _ = writeln!(b, "\nDeclared consumers:");
    if consumers.is_empty() {
        let _ = writeln!(b, "  none declared in the inventory");
    }
    for c in consumers {
        let _ = writeln!(b, "  - {c}");
    }
}

/// The CloudTrail readers block. Returns the summary the checklist repeats.
fn write_readers(b: &mut String, access: AccessInfo<'_>) -> String {
    let _ = writeln!(b, "\nReaders seen in CloudTrail:");
    match access {
        AccessInfo::Off => {
            let _ = writeln!(b, "  not available (access monitoring off)");
            "readers not available (access monitoring off)".to_string()
        }
        AccessInfo::NotYet => {
            let _ = writeln!(
                b,
                "  not available yet (the access poller has not reported on this secret)"
            );
            "readers not available yet".to_string()
        }
        AccessInfo::Facts(f) => write_reader_facts(b, f),
    }
}

/// The readers of the baseline window, naming at most [`READERS_LISTED`] undeclared ones.
/// Returns the summary the checklist repeats.
fn write_reader_facts(b: &mut String, f: &AccessFacts) -> String {
    let _ = writeln!(
        b,
        "  {} distinct principal(s) read it within the baseline window",
        f.principals
    );
    let undeclared = &f.undeclared_readers;
    if undeclared.is_empty() {
        let _ = writeln!(b, "  every one of them matches a declared consumer");
        return format!("{} reader(s) seen, all declared", f.principals);
    }
    let _ = writeln!(
        b,
        "  {} of them match no declared consumer:",
        undeclared.len()
    );
    for p in undeclared.iter().take(READERS_LISTED) {
        let _ = writeln!(b, "  - {p}");
    }
    if undeclared.len() > READERS_LISTED {
        let _ = writeln!(b, "  ... and {} more", undeclared.len() - READERS_LISTED);
    }
    format!(
        "{} undeclared reader(s) listed above must be declared or cut off",
        undeclared.len()
    )
}

/// The rotation window and its next opening after `now`, or advice to pick one.
fn window_line(spec: Option<&SecretSpec>, now: i64) -> String {
    match spec.and_then(|spec| spec.window.as_ref()) {
        Some(w) => {
            let next = DateTime::<Utc>::from_timestamp(now, 0)
                .and_then(|t| w.next_after(t))
                .map(|t| date_time(t.timestamp()))
                .unwrap_or_else(|| "none (the schedule has no further occurrence)".to_string());
            format!("window {w}, next opening {next}")
        }
        None => "no window configured: pick a quiet period yourself".to_string(),
    }
}

/// The pre-rotation checklist of SPEC §5.
fn write_checklist(b: &mut String, window: &str, consumers: usize, readers_line: &str) {
    let _ = writeln!(b, "\nBefore rotating:");
    let _ = writeln!(
        b,
        "  [ ] The on-call team knows the rotation is coming, and when."
    );
    let _ = writeln!(
        b,
        "  [ ] A backup of the current value exists and has been checked (keywarden never reads it)."
    );
    let _ = writeln!(
        b,
        "  [ ] The deployment pipeline is green, so consumers can pick up the new value."
    );
    let _ = writeln!(
        b,
        "  [ ] The way back is ready: the previous value stays available as AWSPREVIOUS until the grace period ends."
    );
    let _ = writeln!(b, "  [ ] It runs in a low-traffic period: {window}.");
    let _ = writeln!(
        b,
        "  [ ] Every consumer is known: {consumers} declared pattern(s); {readers_line}."
    );
}

/// The closing line: sent once, and never with a secret value.
fn write_closing(b: &mut String, key: &ReminderKey) {
    let (what, lead) = if key.is_overdue() {
        ("notice", String::new())
    } else {
        ("reminder", format!(" and lead time ({})", key.lead_label()))
    };
    let _ = writeln!(
        b,
        "\nkeywarden sends this {what} once for this due date{lead}. It never includes secret values."
    );
}

/// The MessageAttributes: `secret` (the full name), `severity`, `due`, `kind`, and `planned`
/// (`YYYY-MM-DD HH:MM UTC`) when there is a planned time.
fn attributes(
    key: &ReminderKey,
    s: &SecretStatus,
    place: Option<(&str, &str)>,
    planned: Option<i64>,
) -> Vec<(String, String)> {
    let mut a = vec![
        (
            "secret".to_string(),
            crate::domain::targets::label_of_key(&s.name).to_string(),
        ),
        ("severity".to_string(), s.severity.as_str().to_string()),
        ("due".to_string(), date(key.due)),
        ("kind".to_string(), key.kind().to_string()),
    ];
    if let Some((account, region)) = place.filter(|(a, _)| !a.is_empty()) {
        a.push(("account".to_string(), account.to_string()));
        a.push(("region".to_string(), region.to_string()));
    }
    if let Some(p) = planned {
        a.push(("planned".to_string(), date_time(p)));
    }
    a
}

/// A minimal message for a ledger row whose stored message is unreadable.
pub(crate) fn fallback_message(key: &ReminderKey) -> Message {
    if key.is_notice() {
        let what = key.kind().replace('_', " ");
        return Message {
            subject: subject(&key.secret, &format!(": scheduled {what}")),
            body: format!(
                "{}: scheduled {what} (the rotation requested at {}). See `keywarden rotations` for details.\n",
                key.secret,
                date_time(key.due)
            ),
            attributes: vec![
                ("secret".to_string(), key.secret.clone()),
                ("kind".to_string(), key.kind().to_string()),
            ],
        };
    }
    let due_date = date(key.due);
    let tail = if key.is_overdue() {
        format!(": rotation OVERDUE since {due_date}")
    } else {
        format!(": rotation due {due_date}")
    };
    Message {
        subject: subject(&key.secret, &tail),
        body: format!(
            "{} is due for rotation on {}. See `keywarden status` for details.\n",
            key.secret,
            date_time(key.due)
        ),
        attributes: vec![
            ("secret".to_string(), key.secret.clone()),
            ("due".to_string(), due_date),
            ("kind".to_string(), key.kind().to_string()),
        ],
    }
}

/// Lower-case hex SHA-256.
fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Group and deduplication ids for a FIFO topic. The group is the secret (messages about one
/// secret stay in order); a name SNS would refuse (over 128 characters, or characters other
/// than letters, digits and ASCII punctuation) is replaced by its hash. The deduplication id
/// is the SHA-256 of (secret, due, lead): 64 characters, the same on every retry.
pub(crate) fn fifo_ids(key: &ReminderKey) -> FifoIds {
    let valid_group = key.secret.len() <= 128
        && !key.secret.is_empty()
        && key.secret.chars().all(|c| c.is_ascii_graphic());
    let group_id = if valid_group {
        key.secret.clone()
    } else {
        format!("secret-{}", sha256_hex(key.secret.as_bytes()))
    };
    let material = format!(
        "keywarden-reminder\n{}\n{}\n{}",
        key.secret, key.due, key.lead_seconds
    );
    FifoIds {
        group_id,
        deduplication_id: sha256_hex(material.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminder::plan::OVERDUE_LEAD;
    use crate::reminder::testing::{DAY, config_with, key, status};

    #[test]
    fn lead_message_has_every_field_and_the_checklist() {
        let config = config_with("");
        let due = 1_800_000_000; // 2027-01-15 08:00 UTC
        let now = due - 14 * DAY;
        let s = status("JWT_SECRET", Some(due));
        let m = render(
            &key("JWT_SECRET", due, 14 * DAY),
            &MessageContext {
                status: &s,
                spec: config.secrets.first(),
                access: AccessInfo::Off,
                planned: None,
                now,
                place: None,
            },
        );
        assert_eq!(
            m.subject,
            "[keywarden] JWT_SECRET: rotation due 2027-01-15 (in 14 days)"
        );
        for needle in [
            "Secret:        JWT_SECRET",
            "Id:            svc/JWT_SECRET",
            "Due date:      2027-01-15",
            "Age:           76 days",
            "Interval:      90d",
            "Impact:        User auth compromised",
            "Severity:      critical",
            "Strategy:      dual-key",
            "  - arn:aws:sts::123456789012:assumed-role/event-service-*/*",
            "not available (access monitoring off)",
            "on-call",
            "backup of the current value",
            "pipeline is green",
            "AWSPREVIOUS",
            "window cron(0 3 ? * TUE *), next opening 2027-01-05 03:00 UTC",
            "Every consumer is known: 1 declared pattern(s)",
            "lead time (14d)",
        ] {
            assert!(
                m.body.contains(needle),
                "body lacks {needle:?}:\n{}",
                m.body
            );
        }
        assert_eq!(
            m.attributes,
            vec![
                ("secret".to_string(), "JWT_SECRET".to_string()),
                ("severity".to_string(), "critical".to_string()),
                ("due".to_string(), "2027-01-15".to_string()),
                ("kind".to_string(), "reminder".to_string()),
            ]
        );
    }

    /// Issue #17 point 2: a reminder names the account and region of the secret, and a
    /// discovered secret of another account is named without its key's qualifier.
    #[test]
    fn a_member_account_secret_is_named_with_its_account_and_region() {
        let due = 1_800_000_000;
        let s = status("111111111111:eu-west-1:shared/db", Some(due));
        let m = render(
            &key("111111111111:eu-west-1:shared/db", due, 14 * DAY),
            &MessageContext {
                status: &s,
                spec: None,
                access: AccessInfo::Off,
                planned: None,
                now: due - 14 * DAY,
                place: Some(("111111111111", "eu-west-1")),
            },
        );
        assert_eq!(
            m.subject,
            "[keywarden] shared/db (111111111111, eu-west-1): rotation due 2027-01-15 (in 14 days)"
        );
        for needle in [
            "Secret:        shared/db\n",
            "Account:       111111111111\n",
            "Region:        eu-west-1\n",
        ] {
            assert!(m.body.contains(needle), "{needle:?} in\n{}", m.body);
        }
        let attr = |k: &str| {
            m.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(attr("secret"), Some("shared/db"));
        assert_eq!(attr("account"), Some("111111111111"));
        assert_eq!(attr("region"), Some("eu-west-1"));
    }

    #[test]
    fn a_planned_rotation_is_named_in_subject_body_and_attributes() {
        let config = config_with("");
        let due = 1_800_000_000; // Friday 2027-01-15 08:00 UTC
        // The last Tuesday 03:00 before it.
        let planned = due - 3 * DAY - 5 * 3600;
        let s = status("JWT_SECRET", Some(due));
        let ctx = |now| MessageContext {
            status: &s,
            spec: config.secrets.first(),
            access: AccessInfo::Off,
            planned: Some(planned),
            now,
            place: None,
        };
        let m = render(&key("JWT_SECRET", due, 14 * DAY), &ctx(planned - 14 * DAY));
        assert_eq!(
            m.subject,
            "[keywarden] JWT_SECRET: rotation planned 2027-01-12 (in 14 days), due 2027-01-15"
        );
        for needle in [
            "keywarden plans to rotate it at 2027-01-12 03:00 UTC (the last opening of its window before the due date), in 14 days",
            "Due date:      2027-01-15",
            "Planned:       2027-01-12 03:00 UTC",
        ] {
            assert!(m.body.contains(needle), "lacks {needle:?}:\n{}", m.body);
        }
        assert_eq!(
            m.attributes.last(),
            Some(&("planned".to_string(), "2027-01-12 03:00 UTC".to_string()))
        );
        // Overdue, planned at the first opening after the due date.
        let after = due + 4 * DAY - 5 * 3600;
        let m = render(
            &key("JWT_SECRET", due, OVERDUE_LEAD),
            &MessageContext {
                planned: Some(after),
                ..ctx(due + DAY)
            },
        );
        assert!(
            m.body.contains("keywarden plans to rotate it at 2027-01-19 03:00 UTC (the first opening of its window after the due date)."),
            "{}",
            m.body
        );
    }

    #[test]
    fn overdue_message_and_access_facts() {
        let config = config_with("[access]\nlog_group = \"/aws/ct\"\n");
        let due = 1_800_000_000;
        let s = status("JWT_SECRET", Some(due));
        let facts = AccessFacts {
            undeclared_readers: vec!["arn:aws:iam::123456789012:user/mallory".to_string()],
            principals: 3,
            anomalies: 1,
        };
        let m = render(
            &key("JWT_SECRET", due, OVERDUE_LEAD),
            &MessageContext {
                status: &s,
                spec: config.secrets.first(),
                access: AccessInfo::Facts(&facts),
                planned: None,
                now: due + 3 * DAY,
                place: None,
            },
        );
        assert_eq!(
            m.subject,
            "[keywarden] JWT_SECRET: rotation OVERDUE since 2027-01-15"
        );
        assert!(m.body.contains("overdue by 3 days"), "{}", m.body);
        assert!(m.body.contains("3 distinct principal(s)"), "{}", m.body);
        assert!(
            m.body
                .contains("  - arn:aws:iam::123456789012:user/mallory"),
            "{}",
            m.body
        );
        assert!(!m.body.contains("lead time"), "{}", m.body);
        assert_eq!(m.attributes[3], ("kind".to_string(), "overdue".to_string()));
        // Configured but silent access poller.
        let m = render(
            &key("JWT_SECRET", due, OVERDUE_LEAD),
            &MessageContext {
                status: &s,
                spec: None,
                access: AccessInfo::NotYet,
                planned: None,
                now: due + 1,
                place: None,
            },
        );
        assert!(m.body.contains("not available yet"), "{}", m.body);
        assert!(m.body.contains("none declared"), "{}", m.body);
        assert!(m.body.contains("no window configured"), "{}", m.body);
    }

    #[test]
    fn subject_is_always_short_ascii_and_names_the_due_date() {
        let due = 1_800_000_000;
        for name in [
            "A".to_string(),
            "x".repeat(40),
            "y".repeat(87),
            "z".repeat(300),
            "ÄÖÜ-secret-with-ünïcode-".repeat(10),
            "event-service/".repeat(30),
        ] {
            let s = status(&name, Some(due));
            for (lead, now) in [
                (14 * DAY, due - 14 * DAY),
                (DAY, due - 600),
                (OVERDUE_LEAD, due + 100 * 365 * DAY),
            ] {
                let m = render(
                    &key(&name, due, lead),
                    &MessageContext {
                        status: &s,
                        spec: None,
                        access: AccessInfo::Off,
                        planned: None,
                        now,
                        place: None,
                    },
                );
                assert!(
                    m.subject.len() < 100,
                    "{} chars: {}",
                    m.subject.len(),
                    m.subject
                );
                assert!(m.subject.is_ascii(), "{}", m.subject);
                assert!(m.subject.contains("2027-01-15"), "{}", m.subject);
                assert!(
                    !m.subject.contains('\n') && !m.subject.contains('\r'),
                    "{}",
                    m.subject
                );
                if lead == OVERDUE_LEAD {
                    assert!(m.subject.contains("OVERDUE"), "{}", m.subject);
                }
                // The attribute keeps the full name.
                assert_eq!(m.attributes[0].1, name);
            }
        }
    }

    #[test]
    fn span_words_table() {
        for (secs, words) in [
            (0, "less than an hour"),
            (3599, "less than an hour"),
            (3600, "1 hour"),
            (5 * 3600, "5 hours"),
            (35 * 3600, "35 hours"),
            (14 * DAY - 1, "14 days"),
            (14 * DAY, "14 days"),
            (-5, "less than an hour"),
        ] {
            assert_eq!(span_words(secs), words, "{secs}");
        }
    }

    #[test]
    fn fifo_ids_are_stable_bounded_and_distinct() {
        let a = fifo_ids(&key("JWT_SECRET", 100, 14 * DAY));
        assert_eq!(a, fifo_ids(&key("JWT_SECRET", 100, 14 * DAY)));
        assert_eq!(a.group_id, "JWT_SECRET");
        assert_eq!(a.deduplication_id.len(), 64);
        for other in [
            key("JWT_SECRET", 101, 14 * DAY),
            key("JWT_SECRET", 100, DAY),
            key("JWT_SECRET", 100, OVERDUE_LEAD),
            key("JWT_SECRETX", 100, 14 * DAY),
        ] {
            assert_ne!(a.deduplication_id, fifo_ids(&other).deduplication_id);
        }
        for name in ["x".repeat(129), "has space".to_string(), "ü".to_string()] {
            let ids = fifo_ids(&key(&name, 1, 1));
            assert!(ids.group_id.len() <= 128, "{}", ids.group_id);
            assert!(ids.group_id.chars().all(|c| c.is_ascii_graphic()));
        }
    }
}
