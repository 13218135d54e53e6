//! Which reminders are due (SPEC §5): the [`ReminderKey`] of one reminder and
//! [`due_reminders`], from the view's statuses, their planned rotation times, the configured
//! leads and `now`. With a planned time (SPEC §11) a lead counts back from it, not from the due
//! date.
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

/// `lead_seconds` of a `rotation_started` notice in the ledger (below [`ENDED_LEAD`], so a
/// rotation's start sorts, and is published, before its end when both are pending).
pub const STARTED_LEAD: i64 = -3;
/// `lead_seconds` of a `rotation_ended` notice in the ledger.
pub const ENDED_LEAD: i64 = -2;

/// Which notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The scheduled rotation started.
    Started,
    /// It ended: success, failure or rollback.
    Ended,
}

impl NoticeKind {
    /// Its `lead_seconds` in the ledger.
    pub fn lead(self) -> i64 {
        match self {
            NoticeKind::Started => STARTED_LEAD,
            NoticeKind::Ended => ENDED_LEAD,
        }
    }
}

/// The `kind` attribute and ledger column of a notice.
pub(crate) fn kind_word(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Started => "rotation_started",
        NoticeKind::Ended => "rotation_ended",
    }
}

/// One reminder or notice: the ledger's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReminderKey {
    /// The `secret` label.
    pub secret: String,
    /// The due date it is about, seconds since the epoch; for a scheduled rotation's notice
    /// (`crate::reminder::notice`), the rotation's `requested_at`.
    pub due: i64,
    /// The lead in seconds, [`OVERDUE_LEAD`] for the overdue notice, or a notice's negative
    /// marker (`STARTED_LEAD`, `ENDED_LEAD`).
    pub lead_seconds: i64,
}

impl ReminderKey {
    /// Whether this is the overdue notice.
    pub fn is_overdue(&self) -> bool {
        self.lead_seconds == OVERDUE_LEAD
    }

    /// Whether this is a scheduled rotation's start or end notice.
    pub fn is_notice(&self) -> bool {
        self.notice_kind().is_some()
    }

    /// The notice this key is for, if it is one.
    fn notice_kind(&self) -> Option<NoticeKind> {
        match self.lead_seconds {
            STARTED_LEAD => Some(NoticeKind::Started),
            ENDED_LEAD => Some(NoticeKind::Ended),
            _ => None,
        }
    }

    /// The ledger's `kind` column and the `kind` message attribute.
    pub fn kind(&self) -> &'static str {
        if self.is_overdue() {
            "overdue"
        } else if let Some(n) = self.notice_kind() {
            kind_word(n)
        } else {
            "reminder"
        }
    }

    /// The `lead` label: the lead as `schedule::format_duration` writes it, or `overdue`; a
    /// notice's kind (notices are not counted in `keywarden_reminders_sent_total`).
    pub fn lead_label(&self) -> String {
        if self.is_overdue() {
            OVERDUE_LABEL.to_string()
        } else if self.is_notice() {
            self.kind().to_string()
        } else {
            format_duration(Duration::from_secs(self.lead_seconds.max(0) as u64))
        }
    }
}

/// The reminders due at `now`, in key order, from each status and its planned rotation time
/// (`SecretStatus::planned`, `None` without one).
///
/// For each present secret with a due date: while `now <= due`, one reminder per lead once
/// `now >= anchor - lead`, where the anchor is the planned time when there is one (capped at the
/// due date: a plan after the due date, when no window opening is left before it, still gets
/// its reminders before the secret is overdue), else the due date; once `now > due`, the
/// overdue notice instead. A secret first seen overdue therefore gets only the overdue notice;
/// one seen earlier gets its lead reminders and, if it passes its due date unrotated, the
/// overdue notice too. Secrets that are missing or scheduled for deletion get nothing. The key
/// stays (secret, due date, lead), so a plan that moves never sends a reminder twice.
pub fn due_reminders<'a>(
    statuses: impl IntoIterator<Item = (&'a SecretStatus, Option<i64>)>,
    leads: &[Duration],
    now: i64,
) -> Vec<ReminderKey> {
    let mut out = Vec::new();
    for (s, planned) in statuses {
        let Some(due) = s.due.filter(|_| s.present) else {
            continue;
        };
        let anchor = planned.map_or(due, |p| p.min(due));
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
            if now >= anchor.saturating_sub(lead) {
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
            let got: Vec<i64> = due_reminders([(&s, None)], &leads, now)
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
        let got = due_reminders(
            [(&gone, None), (&undated, None), (&rotated, None)],
            &leads,
            due + 1,
        );
        assert!(got.is_empty(), "{got:?}");
        // After a rotation the new due date is a new key: its own cycle of reminders.
        let got = due_reminders([(&rotated, None)], &leads, due + 90 * DAY - 13 * DAY);
        assert_eq!(got, vec![key("ROT", due + 90 * DAY, 14 * DAY)]);
    }

    #[test]
    fn a_planned_time_moves_the_lead_back_not_the_key() {
        let due = 1_800_000_000;
        let d14 = [Duration::from_secs(14 * 86_400)];
        let s = status("A", Some(due));
        // Planned 3 days before the due date: the 14-day reminder comes 17 days before due.
        let planned = Some(due - 3 * DAY);
        let at = |now| due_reminders([(&s, planned)], &d14, now);
        assert!(at(due - 17 * DAY - 1).is_empty());
        assert_eq!(at(due - 17 * DAY), vec![key("A", due, 14 * DAY)]);
        // Without the plan it would have waited 3 more days.
        assert!(due_reminders([(&s, None)], &d14, due - 17 * DAY).is_empty());
        // A plan after the due date (no opening left before it): counted from the due date.
        let late = Some(due + 5 * DAY);
        assert!(due_reminders([(&s, late)], &d14, due - 14 * DAY - 1).is_empty());
        assert_eq!(
            due_reminders([(&s, late)], &d14, due - 14 * DAY),
            vec![key("A", due, 14 * DAY)]
        );
        // Overdue: the overdue notice, plan or not.
        assert_eq!(
            due_reminders([(&s, late)], &d14, due + 1),
            vec![key("A", due, OVERDUE_LEAD)]
        );
    }
}
