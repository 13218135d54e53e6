//! The reminder ledger: one row per (secret, due date, lead) in the store's `reminders`
//! table, behind [`LedgerStore`]. This is the only place that names SQL for reminders.
//!
//! A row is written `pending` with its rendered message before anything is published, turns
//! `sent` once SNS accepted it, and is never deleted, so a restart finds what is still to send
//! and never sends a reminder twice. It must never import the task or the AWS boundary.

use rusqlite::{OptionalExtension, params};

use crate::reminder::message::{Message, fallback_message};
use crate::reminder::plan::ReminderKey;
use crate::store::{StateStore, Store, StoreError};

/// A ledger row still to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Its key.
    pub key: ReminderKey,
    /// Failed attempts so far.
    pub attempts: i64,
    /// The message to publish.
    pub message: Message,
}

/// The `reminders` table: the only calls the reminder task makes on it. [`Store`] (SQLite)
/// implements it; a second backend implements the same calls.
pub trait LedgerStore {
    /// The keys among `keys` that the ledger already holds (in any state).
    fn known(&self, keys: &[ReminderKey]) -> Result<Vec<ReminderKey>, StoreError>;

    /// Records new reminders as `pending` in one durable transaction; rows already present are
    /// left alone. Returns how many were inserted.
    fn record_intents(
        &self,
        intents: &[(ReminderKey, Message)],
        now: i64,
    ) -> Result<usize, StoreError>;

    /// Every pending row, in key order. A row whose stored message cannot be read gets
    /// a minimal one rebuilt from its key.
    fn pending(&self) -> Result<Vec<PendingRow>, StoreError>;

    /// Marks a reminder sent with the SNS message id. Returns whether a pending row changed.
    fn mark_sent(&self, key: &ReminderKey, message_id: &str, now: i64) -> Result<bool, StoreError>;

    /// Counts a failed attempt and keeps its error; returns the attempts so far.
    fn count_failure(&self, key: &ReminderKey, error: &str) -> Result<i64, StoreError>;
}

impl LedgerStore for Store {
    /// The keys among `keys` that the ledger already holds (in any state).
    fn known(&self, keys: &[ReminderKey]) -> Result<Vec<ReminderKey>, StoreError> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT 1 FROM reminders WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3",
                )?;
                let mut found = Vec::new();
                for k in keys {
                    if stmt
                        .query_row(params![k.secret, k.due, k.lead_seconds], |_| Ok(()))
                        .optional()?
                        .is_some()
                    {
                        found.push(k.clone());
                    }
                }
                Ok(found)
            },
            "read the reminder ledger",
        )
    }

    /// Records new reminders as `pending` in one durable transaction; rows already present are
    /// left alone. Returns how many were inserted.
    fn record_intents(
        &self,
        intents: &[(ReminderKey, Message)],
        now: i64,
    ) -> Result<usize, StoreError> {
        self.with(
            |c| {
                let tx = c.transaction()?;
                let mut inserted = 0;
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR IGNORE INTO reminders
                           (secret, due, lead_seconds, kind, state, attempts, created_at, message)
                         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6)",
                    )?;
                    for (k, m) in intents {
                        let json = serde_json::to_string(m).unwrap_or_default();
                        inserted += stmt.execute(params![
                            k.secret,
                            k.due,
                            k.lead_seconds,
                            k.kind(),
                            now,
                            json
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(inserted)
            },
            "record reminder intents",
        )
    }

    /// Every pending row, in key order. A row whose stored message cannot be read gets
    /// a minimal one rebuilt from its key.
    fn pending(&self) -> Result<Vec<PendingRow>, StoreError> {
        self.with(
            |c| {
                let mut stmt = c.prepare(
                    "SELECT secret, due, lead_seconds, attempts, message FROM reminders
                     WHERE state = 'pending' ORDER BY secret, due, lead_seconds",
                )?;
                let rows = stmt.query_map([], |r| {
                    let key = ReminderKey {
                        secret: r.get(0)?,
                        due: r.get(1)?,
                        lead_seconds: r.get(2)?,
                    };
                    let message: Option<String> = r.get(4)?;
                    let message = message
                        .and_then(|m| serde_json::from_str::<Message>(&m).ok())
                        .unwrap_or_else(|| fallback_message(&key));
                    Ok(PendingRow {
                        key,
                        attempts: r.get(3)?,
                        message,
                    })
                })?;
                rows.collect()
            },
            "read pending reminders",
        )
    }

    /// Marks a reminder sent with the SNS message id. Returns whether a pending row changed.
    fn mark_sent(&self, key: &ReminderKey, message_id: &str, now: i64) -> Result<bool, StoreError> {
        self.with(
            |c| {
                c.execute(
                    "UPDATE reminders SET state = 'sent', sent_at = ?4, message_id = ?5, last_error = NULL
                     WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3 AND state = 'pending'",
                    params![key.secret, key.due, key.lead_seconds, now, message_id],
                )
                .map(|n| n > 0)
            },
            "mark a reminder sent",
        )
    }

    /// Counts a failed attempt and keeps its error; returns the attempts so far.
    fn count_failure(&self, key: &ReminderKey, error: &str) -> Result<i64, StoreError> {
        self.with(
            |c| {
                c.query_row(
                    "UPDATE reminders SET attempts = attempts + 1, last_error = ?4
                     WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3
                     RETURNING attempts",
                    params![key.secret, key.due, key.lead_seconds, error],
                    |r| r.get(0),
                )
            },
            "record a failed reminder",
        )
    }
}

/// One ledger row as stored, every column (for `migrate-store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Its key.
    pub key: ReminderKey,
    /// `pending` or `sent`.
    pub state: String,
    /// Failed attempts.
    pub attempts: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// When the intent was recorded.
    pub created_at: i64,
    /// When SNS took it.
    pub sent_at: Option<i64>,
    /// SNS's message id.
    pub message_id: Option<String>,
    /// The rendered message (JSON).
    pub message: Option<String>,
}

/// Every row of the SQLite ledger, in key order (for `migrate-store`).
pub fn all_rows(store: &Store) -> Result<Vec<LedgerRow>, StoreError> {
    store.with(
        |c| {
            let mut stmt = c.prepare(
                "SELECT secret, due, lead_seconds, state, attempts, last_error, created_at,
                        sent_at, message_id, message
                 FROM reminders ORDER BY secret, due, lead_seconds",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(LedgerRow {
                    key: ReminderKey {
                        secret: r.get(0)?,
                        due: r.get(1)?,
                        lead_seconds: r.get(2)?,
                    },
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    last_error: r.get(5)?,
                    created_at: r.get(6)?,
                    sent_at: r.get(7)?,
                    message_id: r.get(8)?,
                    message: r.get(9)?,
                })
            })?;
            rows.collect()
        },
        "read the reminder ledger",
    )
}

/// The configured backend's ledger.
fn ledger(s: &StateStore) -> &dyn LedgerStore {
    match s {
        StateStore::Sqlite(s) => s,
        StateStore::Dynamo(t) => t,
    }
}

impl LedgerStore for StateStore {
    fn known(&self, keys: &[ReminderKey]) -> Result<Vec<ReminderKey>, StoreError> {
        ledger(self).known(keys)
    }

    fn record_intents(
        &self,
        intents: &[(ReminderKey, Message)],
        now: i64,
    ) -> Result<usize, StoreError> {
        ledger(self).record_intents(intents, now)
    }

    fn pending(&self) -> Result<Vec<PendingRow>, StoreError> {
        ledger(self).pending()
    }

    fn mark_sent(&self, key: &ReminderKey, message_id: &str, now: i64) -> Result<bool, StoreError> {
        ledger(self).mark_sent(key, message_id, now)
    }

    fn count_failure(&self, key: &ReminderKey, error: &str) -> Result<i64, StoreError> {
        ledger(self).count_failure(key, error)
    }
}

/// The state and SNS message id of one row, for tests that check what the task recorded.
#[cfg(test)]
pub(crate) fn row(
    store: &Store,
    key: &ReminderKey,
) -> Result<Option<(String, Option<String>, i64)>, StoreError> {
    store.with(
        |c| {
            c.query_row(
                "SELECT state, message_id, attempts FROM reminders
                 WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3",
                params![key.secret, key.due, key.lead_seconds],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        },
        "read a reminder",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reminder::testing::{DAY, key};

    #[test]
    fn ledger_records_once_and_marks_sent() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Store::open(&dir.path().join("s.db")).unwrap();
        let k = key("A", 100, 14 * DAY);
        let m = fallback_message(&k);
        assert_eq!(
            ledger.record_intents(&[(k.clone(), m.clone())], 1).unwrap(),
            1
        );
        assert_eq!(
            ledger.record_intents(&[(k.clone(), m.clone())], 2).unwrap(),
            0
        );
        assert_eq!(
            ledger.known(&[k.clone(), key("B", 1, 1)]).unwrap(),
            vec![k.clone()]
        );
        assert_eq!(ledger.count_failure(&k, "sns Publish failed").unwrap(), 1);
        let pending = ledger.pending().unwrap();
        assert_eq!(
            pending,
            vec![PendingRow {
                key: k.clone(),
                attempts: 1,
                message: m
            }]
        );
        assert!(ledger.mark_sent(&k, "mid-1", 3).unwrap());
        assert!(!ledger.mark_sent(&k, "mid-2", 4).unwrap());
        assert!(ledger.pending().unwrap().is_empty());
        assert_eq!(
            row(&ledger, &k).unwrap(),
            Some(("sent".to_string(), Some("mid-1".to_string()), 1))
        );
    }
}
