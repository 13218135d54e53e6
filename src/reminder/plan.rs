//! Which reminders are due (SPEC §5): the [`ReminderKey`] of one reminder and
//! [`due_reminders`], from the view's statuses, the configured leads and `now`.
//!
//! Pure: no I/O, and `now` is a parameter (this module never reads the clock). It must never
//! import the ledger, the task, the store or the AWS boundary.

use std::time::Duration;

use crate::domain::view::SecretStatus;
use crate::schedule::format_duration;

/// `lead_seconds` of an overdue notice in the ledger (a lead is never negative).
pub const OVERDUE_LEAD: i64 = -1;
/// The `lead` label of `keywarden_reminders_sent_total` for overdue notices.
pub const OVERDUE_LABEL: &str = "overdue";

/// One reminder: the ledger's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReminderKey {
    /// The `secret` label.
    pub secret: String,
    /// The due date it is about, seconds since the epoch.
    pub due: i64,
    /// The lead in seconds, or [`OVERDUE_LEAD`] for the overdue notice.
    pub lead_seconds: i64,
}

impl ReminderKey {
    /// Whether this is the overdue notice.
    pub fn is_overdue(&self) -> bool {
        self.lead_seconds == OVERDUE_LEAD
    }

    /// The ledger's `kind` column and the `kind` message attribute.
    pub fn kind(&self) -> &'static str {
        if self.is_overdue() {
            "overdue"
        } else {
            "reminder"
        }
    }

    /// The `lead` label: the lead as `schedule::format_duration` writes it, or `overdue`.
    pub fn lead_label(&self) -> String {
        if self.is_overdue() {
            OVERDUE_LABEL.to_string()
        } else {
            format_duration(Duration::from_secs(self.lead_seconds.max(0) as u64))
        }
    }
}

/// The reminders due at `now`, in key order.
///
/// For each present secret with a due date: while `now <= due`, one reminder per lead once
/// `now >= due - lead`; once `now > due`, the overdue notice instead. A secret first seen
/// overdue therefore gets only the overdue notice; one seen earlier gets its lead reminders
/// and, if it passes its due date unrotated, the overdue notice too. Secrets that are missing
/// or scheduled for deletion get nothing.
pub fn due_reminders<'a>(
    statuses: impl IntoIterator<Item = &'a SecretStatus>,
    leads: &[Duration],
    now: i64,
) -> Vec<ReminderKey> {
    let mut out = Vec::new();
    for s in statuses {
        let Some(due) = s.due.filter(|_| s.present) else {
            continue;
        };
        if now > due {
            out.push(ReminderKey {
                secret: s.name.clone(),
                due,
                lead_seconds: OVERDUE_LEAD,
            });
            continue;
        }
        for lead in leads {
            let lead = i64::try_from(lead.as_secs()).unwrap_or(i64::MAX);
            if now >= due.saturating_sub(lead) {
                out.push(ReminderKey {
                    secret: s.name.clone(),
                    due,
                    lead_seconds: lead,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminder::testing::{DAY, key, status};

    #[test]
    fn due_reminders_table() {
        let due = 1_800_000_000;
        let d14 = Duration::from_secs(14 * 86_400);
        let d1 = Duration::from_secs(86_400);
        let l14 = 14 * DAY;
        let cases: Vec<(&str, Vec<Duration>, i64, Vec<i64>)> = vec![
            ("well before the lead", vec![d14], due - l14 - 1, vec![]),
            ("exactly at due - lead", vec![d14], due - l14, vec![l14]),
            ("just past due - lead", vec![d14], due - l14 + 1, vec![l14]),
            ("at the due date itself", vec![d14], due, vec![l14]),
            ("one second overdue", vec![d14], due + 1, vec![OVERDUE_LEAD]),
            (
                "long overdue",
                vec![d14],
                due + 400 * DAY,
                vec![OVERDUE_LEAD],
            ),
            (
                "two leads, first only",
                vec![d1, d14],
                due - 5 * DAY,
                vec![l14],
            ),
            ("two leads, both", vec![d1, d14], due - 3600, vec![DAY, l14]),
            (
                "two leads, overdue replaces both",
                vec![d1, d14],
                due + 10,
                vec![OVERDUE_LEAD],
            ),
        ];
        for (what, leads, now, expected) in cases {
            let s = status("A", Some(due));
            let got: Vec<i64> = due_reminders([&s], &leads, now)
                .into_iter()
                .map(|k| {
                    assert_eq!(k.secret, "A");
                    assert_eq!(k.due, due);
                    k.lead_seconds
                })
                .collect();
            let mut expected = expected;
            expected.sort();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn due_reminders_skip_missing_and_undated_and_follow_rotation() {
        let due = 1_800_000_000;
        let leads = [Duration::from_secs(14 * 86_400)];
        let mut gone = status("GONE", Some(due));
        gone.present = false;
        let undated = status("UNDATED", None);
        let rotated = status("ROT", Some(due + 90 * DAY));
        let got = due_reminders([&gone, &undated, &rotated], &leads, due + 1);
        assert!(got.is_empty(), "{got:?}");
        // After a rotation the new due date is a new key: its own cycle of reminders.
        let got = due_reminders([&rotated], &leads, due + 90 * DAY - 13 * DAY);
        assert_eq!(got, vec![key("ROT", due + 90 * DAY, 14 * DAY)]);
    }
}
