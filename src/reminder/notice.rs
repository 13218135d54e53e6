//! The notices about a scheduled rotation (SPEC §11, issue #13 point 5): one when it starts,
//! one when it ends (success, failure or rollback), both on the reminders topic with the
//! MessageAttribute `kind` = `rotation_started` | `rotation_ended`.
//!
//! They go through the reminder ledger like reminders do: the rotation scheduler records the
//! intent (the rendered message) durably, the reminder task publishes it and marks it sent, so
//! each is sent once across restarts. Their ledger key is (secret, the rotation's `requested_at`,
//! `STARTED_LEAD` or `ENDED_LEAD`): the scheduler starts at most one rotation of a secret
//! per second (one pass every 5 s), so `requested_at` tells a secret's scheduled rotations apart.
//!
//! Pure: no I/O, no clock; what it says comes from the journal's row (through [`RotationNotice`]),
//! the view and the inventory, never from a secret value. Its ledger markers and [`NoticeKind`]
//! live with the keys in `plan`. It must never import the ledger, the task, the store, the
//! rotation core or the AWS boundary.

use std::fmt::Write as _;

use crate::config::SecretSpec;
use crate::domain::view::SecretStatus;
use crate::reminder::message::{Message, date, date_time, subject};
use crate::reminder::plan::{NoticeKind, ReminderKey, kind_word};

/// Characters of a rotation's error a notice quotes at most.
const ERROR_MAX: usize = 500;

/// The facts of one scheduled rotation a notice reports, from its journal row.
#[derive(Debug, Clone, Copy)]
pub struct RotationNotice<'a> {
    /// Started or ended.
    pub kind: NoticeKind,
    /// The rotation id.
    pub rotation_id: &'a str,
    /// When it was requested (the ledger key), seconds since the epoch.
    pub requested_at: i64,
    /// When it started (for a start) or ended (for an end).
    pub at: i64,
    /// For an end: `success`, `failure` or `rolled_back` (the `result` label words).
    pub result: Option<&'a str>,
    /// The step it was at when it ended (a failure's step).
    pub step: &'a str,
    /// A failure's error, as journaled (never a value).
    pub error: Option<&'a str>,
    /// Its planned time, when the secret has one.
    pub planned: Option<i64>,
    /// Its trigger word (`scheduled`, or `manual` for an automatic rollback's notice).
    pub trigger: &'a str,
    /// An automatic rollback (SPEC §12): the check that failed and its last value.
    pub verify: Option<(&'a str, &'a str)>,
}

/// The ledger key of a notice about `secret`'s rotation requested at `requested_at`.
pub fn notice_key(secret: &str, requested_at: i64, kind: NoticeKind) -> ReminderKey {
    ReminderKey {
        secret: secret.to_string(),
        due: requested_at,
        lead_seconds: kind.lead(),
    }
}

/// Renders a notice. Pure: everything comes from the arguments.
pub fn render_notice(
    n: &RotationNotice<'_>,
    status: &SecretStatus,
    spec: Option<&SecretSpec>,
) -> Message {
    let name = &status.name;
    let (tail, headline) = match (n.kind, n.result) {
        (NoticeKind::Started, _) => (
            ": scheduled rotation started".to_string(),
            format!(
                "keywarden started the scheduled rotation of {name} at {}. Tell the on-call team now: \
                 consumers must pick up the new value once it becomes AWSCURRENT.",
                date_time(n.at)
            ),
        ),
        (NoticeKind::Ended, Some("success")) => (
            ": scheduled rotation succeeded".to_string(),
            format!(
                "The scheduled rotation of {name} ended at {}: the new value is AWSCURRENT and the \
                 previous one was retired after its grace period.",
                date_time(n.at)
            ),
        ),
        (NoticeKind::Ended, Some("rolled_back")) if n.verify.is_some() => (
            format!(": {} rotation rolled back automatically", n.trigger),
            format!(
                "The {} rotation of {name} was rolled back automatically at {}: a consumer check \
                 kept failing after the new value became AWSCURRENT, so AWSCURRENT is the previous \
                 value again and the rollback hooks ran. Scheduled rotations of it stop until an \
                 operator rotates it by hand or its configuration changes.",
                n.trigger,
                date_time(n.at)
            ),
        ),
        (NoticeKind::Ended, Some("rolled_back")) => (
            ": scheduled rotation rolled back".to_string(),
            format!(
                "The scheduled rotation of {name} was rolled back at {}: AWSCURRENT is the \
                 previous value again. Find out why before the next window tries again.",
                date_time(n.at)
            ),
        ),
        (NoticeKind::Ended, _) => (
            ": scheduled rotation failed".to_string(),
            format!(
                "The scheduled rotation of {name} failed at step {} at {}; AWSCURRENT still holds \
                 the previous value. The next window tries again.",
                n.step,
                date_time(n.at)
            ),
        ),
    };
    let mut b = String::with_capacity(1024);
    let _ = writeln!(b, "{headline}\n");
    let _ = writeln!(b, "Secret:        {name}");
    let _ = writeln!(b, "Id:            {}", status.id);
    let _ = writeln!(b, "Rotation:      {}", n.rotation_id);
    let _ = writeln!(b, "Trigger:       {}", n.trigger);
    let _ = writeln!(b, "Strategy:      {}", status.strategy.as_str());
    if let Some(w) = spec.and_then(|s| s.window.as_ref()) {
        let _ = writeln!(b, "Window:        {w}");
    }
    if let Some(p) = n.planned {
        let _ = writeln!(b, "Planned:       {}", date_time(p));
    }
    if let Some(due) = status.due {
        let _ = writeln!(b, "Due date:      {} ({})", date(due), date_time(due));
    }
    let _ = writeln!(b, "Severity:      {}", status.severity.as_str());
    if !status.impact.is_empty() {
        let _ = writeln!(b, "Impact:        {}", status.impact);
    }
    if let Some(result) = n.result {
        let _ = writeln!(b, "Result:        {result}");
    }
    if let Some((check, value)) = n.verify {
        let _ = writeln!(
            b,
            "Rolled back by: verify (check {check}, last value: {value})"
        );
    }
    if let Some(e) = n.error.filter(|_| n.result != Some("success")) {
        let e: String = e.chars().take(ERROR_MAX).collect();
        let _ = writeln!(b, "Error:         {e}");
    }
    match n.kind {
        NoticeKind::Started => {
            let _ = writeln!(
                b,
                "\nWhat happens next: a new version is created as AWSPENDING, set in the backing \
                 system and tested; then finish makes it AWSCURRENT and runs the finish hooks. The \
                 previous value stays AWSPREVIOUS until finalize, after the grace period, so \
                 `keywarden rollback {name}` can go back until then. Follow it with \
                 `keywarden rotations` or GET /rotations/{}. A second notice says how it ended.",
                n.rotation_id
            );
        }
        NoticeKind::Ended => {
            let _ = writeln!(
                b,
                "\nThe timeline is at GET /rotations/{} (`keywarden rotations`).",
                n.rotation_id
            );
        }
    }
    let _ = writeln!(
        b,
        "\nkeywarden sends this notice once per rotation. It never includes secret values."
    );
    let mut attributes = vec![
        ("secret".to_string(), name.clone()),
        ("severity".to_string(), status.severity.as_str().to_string()),
        ("kind".to_string(), kind_word(n.kind).to_string()),
        ("rotation_id".to_string(), n.rotation_id.to_string()),
    ];
    if let Some(due) = status.due {
        attributes.push(("due".to_string(), date(due)));
    }
    if let Some(result) = n.result {
        attributes.push(("result".to_string(), result.to_string()));
    }
    Message {
        subject: subject(name, &tail),
        body: b,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminder::testing::{config_with, status};

    #[test]
    fn start_and_end_notices_say_what_and_carry_the_rotation() {
        let config = config_with("");
        let due = 1_800_000_000; // 2027-01-15 08:00 UTC
        let s = status("JWT_SECRET", Some(due));
        let start = RotationNotice {
            kind: NoticeKind::Started,
            rotation_id: "0123456789abcdef0123456789abcdef",
            requested_at: due - 3600,
            at: due - 3600,
            result: None,
            step: "create",
            error: None,
            trigger: "scheduled",
            verify: None,
            planned: Some(due - 5 * 3600),
        };
        let m = render_notice(&start, &s, config.secrets.first());
        assert_eq!(
            m.subject,
            "[keywarden] JWT_SECRET: scheduled rotation started"
        );
        for needle in [
            "started the scheduled rotation of JWT_SECRET at 2027-01-15 07:00 UTC",
            "on-call",
            "Rotation:      0123456789abcdef0123456789abcdef",
            "Window:        cron(0 3 ? * TUE *)",
            "Planned:       2027-01-15 03:00 UTC",
            "Due date:      2027-01-15",
            "keywarden rollback JWT_SECRET",
            "never includes secret values",
        ] {
            assert!(m.body.contains(needle), "lacks {needle:?}:\n{}", m.body);
        }
        let attr = |m: &Message, k: &str| {
            m.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(attr(&m, "kind").as_deref(), Some("rotation_started"));
        assert_eq!(
            attr(&m, "rotation_id").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(attr(&m, "result"), None);
        for (result, subject_tail, body, error_shown) in [
            ("success", "succeeded", "new value is AWSCURRENT", false),
            ("failure", "failed", "failed at step set", true),
            ("rolled_back", "rolled back", "rolled back", true),
        ] {
            let end = RotationNotice {
                kind: NoticeKind::Ended,
                result: Some(result),
                step: "set",
                error: Some("cannot connect to db.internal:5432"),
                at: due,
                ..start
            };
            let m = render_notice(&end, &s, config.secrets.first());
            assert_eq!(
                m.subject,
                format!("[keywarden] JWT_SECRET: scheduled rotation {subject_tail}")
            );
            assert!(m.body.contains(body), "{}", m.body);
            assert_eq!(m.body.contains("db.internal"), error_shown, "{}", m.body);
            assert_eq!(attr(&m, "kind").as_deref(), Some("rotation_ended"));
            assert_eq!(attr(&m, "result").as_deref(), Some(result));
        }
    }

    #[test]
    fn notice_keys_are_distinct_from_reminders_and_from_each_other() {
        let started = notice_key("A", 100, NoticeKind::Started);
        let ended = notice_key("A", 100, NoticeKind::Ended);
        assert_ne!(started, ended);
        assert_eq!(started.kind(), "rotation_started");
        assert_eq!(ended.kind(), "rotation_ended");
        assert!(started.is_notice() && ended.is_notice());
        assert!(!started.is_overdue());
        let reminder = ReminderKey {
            secret: "A".into(),
            due: 100,
            lead_seconds: 14 * 86_400,
        };
        assert!(!reminder.is_notice());
        assert_eq!(reminder.kind(), "reminder");
    }
}
