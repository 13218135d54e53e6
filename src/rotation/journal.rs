//! The rotation journal on the store's `rotations` and `rotation_events` tables.
//!
//! A rotation is inserted (state `running`, step `create`) in one transaction that first checks
//! that no other rotation of the same secret is active, so two requests can never both start
//! one. Every step that completes moves `step` forward and appends an event; the daemon resumes
//! `running` rows from their step and schedules the finalize of `grace` rows. Nothing here ever
//! holds a secret value: rows carry names, version ids, times and error texts from AWS or hooks.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

pub use crate::domain::{EventOutcome, State, Step, Trigger};

/// The step name of a rollback's journal event.
pub const ROLLBACK: &str = "rollback";
/// The step name of the journal event of one rollback hook.
pub const ROLLBACK_HOOK: &str = "rollback_hook";

use crate::store::{StateStore, Store, StoreError};

/// Facts about a rotation kept in the `detail` JSON column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// The Secrets Manager id (name or ARN) the rotation writes to.
    pub secret_id: String,
    /// The strategy at request time.
    pub strategy: String,
    /// Seconds between finish and finalize (0 for compromise rotations).
    pub grace_seconds: u64,
    /// When it was requested, in milliseconds since the epoch (for the duration histogram).
    pub requested_at_ms: i64,
    /// The version that was AWSCURRENT when create ran (the one that becomes AWSPREVIOUS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version_id: Option<String>,
    /// When finish completed (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// When finalize may run (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalize_after: Option<i64>,
    /// Finalize runs in compromise mode (it also cuts the old credential's live sessions): set
    /// when an incident ended the grace early, so a resume after a crash still does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compromise_finalize: bool,
    /// The checks' state (SPEC §12): pre-flight baselines and the watch; `None` when the
    /// secret has no checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<super::verify::VerifyState>,
    /// Who rolled it back: `operator` or `verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<String>,
    /// The check that rolled it back and its last value (`rolled_back_by = "verify"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_check: Option<super::verify::CheckFailure>,
    /// `verify::config_digest` of the secret at request time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
}

/// One journaled rotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rotation {
    /// Rotation id (32 hex characters).
    pub id: String,
    /// The `secret` label.
    pub secret: String,
    /// What started it.
    pub trigger: Trigger,
    /// The ClientRequestToken of create, which is also the new version id.
    pub token: String,
    /// The next step to run (or the one that failed).
    pub step: Step,
    /// Where it stands.
    pub state: State,
    /// When it was accepted (seconds since the epoch).
    pub requested_at: i64,
    /// Last change (seconds since the epoch).
    pub updated_at: i64,
    /// Failed attempts of the current step.
    pub attempts: u32,
    /// The last error, if any.
    pub error: Option<String>,
    /// Version ids, times and grace.
    pub detail: Detail,
}

impl Rotation {
    /// The ClientRequestToken of the finalize write (value-changing strategies only).
    pub fn finalize_token(&self) -> String {
        format!("{}-final", self.token)
    }
}

/// One entry of a rotation's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When (seconds since the epoch).
    pub at: i64,
    /// The step it concerns.
    pub step: String,
    /// How it went.
    pub outcome: EventOutcome,
    /// A sentence (never a value).
    pub message: Option<String>,
}

/// The token of a rotation id: 42 characters, within the 32 to 64 AWS accepts.
pub fn token_for(id: &str) -> String {
    format!("keywarden-{id}")
}

/// A new random rotation id: 16 bytes of the OS CSPRNG in hex.
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

const COLUMNS: &str =
    "id, secret, trigger, token, step, state, requested_at, updated_at, attempts, error, detail";

/// Reads a column of a closed vocabulary: a word outside it is a corrupt row, an error.
fn word<T>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<T>
where
    T: for<'a> TryFrom<&'a str, Error = crate::domain::UnknownWord>,
{
    let text: String = r.get(i)?;
    T::try_from(text.as_str()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Rotation> {
    let detail: String = r.get(10)?;
    Ok(Rotation {
        id: r.get(0)?,
        secret: r.get(1)?,
        trigger: word(r, 2)?,
        token: r.get(3)?,
        step: word(r, 4)?,
        state: word(r, 5)?,
        requested_at: r.get(6)?,
        updated_at: r.get(7)?,
        attempts: r.get(8)?,
        error: r.get(9)?,
        detail: serde_json::from_str(&detail).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

fn detail_json(d: &Detail) -> String {
    serde_json::to_string(d).unwrap_or_else(|_| "{}".to_string())
}

/// A change to one rotation, written with its event in one transaction, only if the rotation
/// is still where the writer read it (`from`): a compare-and-set, so a rollback and a step, or
/// two writers after a crash, never overwrite each other's state.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    /// The state and step the writer read; nothing is written if the row moved on.
    pub from: (State, Step),
    /// New step.
    pub step: Step,
    /// New state.
    pub state: State,
    /// New attempt count.
    pub attempts: u32,
    /// New error (None clears it).
    pub error: Option<&'a str>,
    /// New detail.
    pub detail: &'a Detail,
    /// The event: (step or `rollback`, outcome, message).
    pub event: (&'a str, EventOutcome, Option<&'a str>),
}

/// The rotation journal's storage: the only calls the rotation core and the incident service make on the `rotations` and `rotation_events` tables. [`Store`] (SQLite) implements it; a second backend implements the same calls.
pub trait JournalStore {
    /// Inserts a new rotation unless one of the same secret is active; returns `Err(active)` then.
    /// The row is on disk when this returns `Ok`.
    fn insert_rotation(
        &self,
        id: &str,
        secret: &str,
        trigger: Trigger,
        detail: &Detail,
        now: i64,
    ) -> Result<Result<Rotation, Rotation>, StoreError>;

    /// Reads one rotation.
    fn rotation(&self, id: &str) -> Result<Option<Rotation>, StoreError>;

    /// The timeline of a rotation, oldest first.
    fn rotation_events(&self, id: &str) -> Result<Vec<Event>, StoreError>;

    /// Every rotation in one of `states`, oldest first.
    fn rotations_in_states(&self, states: &[State]) -> Result<Vec<Rotation>, StoreError>;

    /// The most recent rotations, newest first; of one secret when given.
    fn recent_rotations(
        &self,
        secret: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Rotation>, StoreError>;

    /// Applies an update durably if the rotation is still at `u.from`; returns false (and
    /// writes nothing) if it moved on.
    fn update_rotation(&self, id: &str, u: &Update<'_>, now: i64) -> Result<bool, StoreError>;

    /// Appends an event without changing the rotation.
    fn note_rotation(
        &self,
        id: &str,
        step: &str,
        outcome: EventOutcome,
        message: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Whether a compromise incident on `secret` is open (the incidents table of SPEC §7: an
    /// incident is open until `closed_at` is set).
    fn open_incident_of(&self, secret: &str) -> Result<Option<String>, StoreError>;
}

impl JournalStore for Store {
    fn insert_rotation(
        &self,
        id: &str,
        secret: &str,
        trigger: Trigger,
        detail: &Detail,
        now: i64,
    ) -> Result<Result<Rotation, Rotation>, StoreError> {
        self.with(
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let active = tx
                    .query_row(
                        &format!(
                            "SELECT {COLUMNS} FROM rotations WHERE secret = ?1
                             AND state IN ('running', 'grace') ORDER BY requested_at DESC LIMIT 1"
                        ),
                        [secret],
                        row,
                    )
                    .optional()?;
                if let Some(active) = active {
                    return Ok(Err(active));
                }
                tx.execute(
                    &format!("INSERT INTO rotations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'create', 'running', ?5, ?5, 0, NULL, ?6)"),
                    params![id, secret, trigger.as_str(), token_for(id), now, detail_json(detail)],
                )?;
                tx.execute(
                    "INSERT INTO rotation_events (rotation_id, at, step, outcome, message) VALUES (?1, ?2, 'accepted', 'ok', ?3)",
                    params![id, now, format!("{} rotation accepted", trigger.as_str())],
                )?;
                let r = tx.query_row(
                    &format!("SELECT {COLUMNS} FROM rotations WHERE id = ?1"),
                    [id],
                    row,
                )?;
                tx.commit()?;
                Ok(Ok(r))
            },
            "journal a rotation",
        )
    }

    fn rotation(&self, id: &str) -> Result<Option<Rotation>, StoreError> {
        self.with(
            |c| {
                c.query_row(
                    &format!("SELECT {COLUMNS} FROM rotations WHERE id = ?1"),
                    [id],
                    row,
                )
                .optional()
            },
            "read a rotation",
        )
    }

    fn rotation_events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        self.with(
            |c| {
                let mut st = c.prepare(
                    "SELECT at, step, outcome, message FROM rotation_events WHERE rotation_id = ?1 ORDER BY rowid",
                )?;
                let rows = st.query_map([id], |r| {
                    Ok(Event {
                        at: r.get(0)?,
                        step: r.get(1)?,
                        outcome: word(r, 2)?,
                        message: r.get(3)?,
                    })
                })?;
                rows.collect()
            },
            "read rotation events",
        )
    }

    fn rotations_in_states(&self, states: &[State]) -> Result<Vec<Rotation>, StoreError> {
        let list = states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        self.with(
            |c| {
                let mut st = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM rotations WHERE state IN ({list}) ORDER BY requested_at, id"
                ))?;
                let rows = st.query_map([], row)?;
                rows.collect()
            },
            "read unfinished rotations",
        )
    }

    fn recent_rotations(
        &self,
        secret: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Rotation>, StoreError> {
        self.with(
            |c| {
                let mut st = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM rotations WHERE (?1 IS NULL OR secret = ?1)
                     ORDER BY requested_at DESC, rowid DESC LIMIT ?2"
                ))?;
                let rows = st.query_map(params![secret, limit], row)?;
                rows.collect()
            },
            "read recent rotations",
        )
    }

    fn update_rotation(&self, id: &str, u: &Update<'_>, now: i64) -> Result<bool, StoreError> {
        self.with(
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = tx.execute(
                    "UPDATE rotations SET step = ?2, state = ?3, attempts = ?4, error = ?5, detail = ?6, updated_at = ?7
                     WHERE id = ?1 AND state = ?8 AND step = ?9",
                    params![id, u.step.as_str(), u.state.as_str(), u.attempts, u.error, detail_json(u.detail), now,
                            u.from.0.as_str(), u.from.1.as_str()],
                )?;
                if changed == 0 {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO rotation_events (rotation_id, at, step, outcome, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, now, u.event.0, u.event.1.as_str(), u.event.2],
                )?;
                tx.commit()?;
                Ok(true)
            },
            "update a rotation",
        )
    }

    fn note_rotation(
        &self,
        id: &str,
        step: &str,
        outcome: EventOutcome,
        message: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.with(
            |c| {
                c.execute(
                    "INSERT INTO rotation_events (rotation_id, at, step, outcome, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, now, step, outcome.as_str(), message],
                )
                .map(|_| ())
            },
            "note a rotation event",
        )
    }

    fn open_incident_of(&self, secret: &str) -> Result<Option<String>, StoreError> {
        self.with(
            |c| {
                c.query_row(
                    "SELECT id FROM incidents WHERE secret = ?1 AND closed_at IS NULL ORDER BY opened_at DESC LIMIT 1",
                    [secret],
                    |r| r.get(0),
                )
                .optional()
            },
            "read open incidents",
        )
    }
}

/// The configured backend's journal.
fn journal(s: &StateStore) -> &dyn JournalStore {
    match s {
        StateStore::Sqlite(s) => s,
        StateStore::Dynamo(t) => t,
    }
}

impl JournalStore for StateStore {
    fn insert_rotation(
        &self,
        id: &str,
        secret: &str,
        trigger: Trigger,
        detail: &Detail,
        now: i64,
    ) -> Result<Result<Rotation, Rotation>, StoreError> {
        journal(self).insert_rotation(id, secret, trigger, detail, now)
    }

    fn rotation(&self, id: &str) -> Result<Option<Rotation>, StoreError> {
        journal(self).rotation(id)
    }

    fn rotation_events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        journal(self).rotation_events(id)
    }

    fn rotations_in_states(&self, states: &[State]) -> Result<Vec<Rotation>, StoreError> {
        journal(self).rotations_in_states(states)
    }

    fn recent_rotations(
        &self,
        secret: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Rotation>, StoreError> {
        journal(self).recent_rotations(secret, limit)
    }

    fn update_rotation(&self, id: &str, u: &Update<'_>, now: i64) -> Result<bool, StoreError> {
        journal(self).update_rotation(id, u, now)
    }

    fn note_rotation(
        &self,
        id: &str,
        step: &str,
        outcome: EventOutcome,
        message: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        journal(self).note_rotation(id, step, outcome, message, now)
    }

    fn open_incident_of(&self, secret: &str) -> Result<Option<String>, StoreError> {
        journal(self).open_incident_of(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail() -> Detail {
        Detail {
            secret_id: "app/x".into(),
            strategy: "random".into(),
            grace_seconds: 0,
            requested_at_ms: 1_000,
            ..Detail::default()
        }
    }

    #[test]
    fn one_active_rotation_per_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let a = store
            .insert_rotation("a1", "X", Trigger::Manual, &detail(), 10)
            .unwrap()
            .unwrap();
        assert_eq!(a.token, "keywarden-a1");
        assert_eq!((a.step, a.state), (Step::Create, State::Running));
        let busy = store
            .insert_rotation("a2", "X", Trigger::Manual, &detail(), 11)
            .unwrap()
            .unwrap_err();
        assert_eq!(busy.id, "a1");
        store
            .insert_rotation("b1", "Y", Trigger::Scheduled, &detail(), 11)
            .unwrap()
            .unwrap();
        let d = detail();
        let finished = |from: (State, Step)| Update {
            from,
            step: Step::Done,
            state: State::Done,
            attempts: 0,
            error: None,
            detail: &d,
            event: ("finalize", EventOutcome::Ok, None),
        };
        // Compare-and-set: a writer that read another state or step writes nothing.
        let stale = finished((State::Grace, Step::Finalize));
        assert!(!store.update_rotation("a1", &stale, 12).unwrap());
        assert_eq!(store.rotation_events("a1").unwrap().len(), 1);
        assert_eq!(store.rotation("a1").unwrap().unwrap().state, State::Running);
        let fresh = finished((State::Running, Step::Create));
        assert!(store.update_rotation("a1", &fresh, 12).unwrap());
        assert!(
            !store.update_rotation("a1", &fresh, 12).unwrap(),
            "applied once"
        );
        store
            .insert_rotation("a3", "X", Trigger::Manual, &detail(), 13)
            .unwrap()
            .unwrap();
        let running = store.rotations_in_states(&[State::Running]).unwrap();
        assert_eq!(
            running.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b1", "a3"]
        );
        assert_eq!(store.rotation_events("a1").unwrap().len(), 2);
        assert_eq!(store.recent_rotations(Some("X"), 10).unwrap()[0].id, "a3");
        assert!(store.open_incident_of("X").unwrap().is_none());
    }

    /// A row whose trigger, state or step is not a known word was corrupted outside keywarden:
    /// reading it is an error naming the column, never a silent default such as `manual`.
    #[test]
    fn corrupt_rows_are_errors_not_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .insert_rotation("c1", "X", Trigger::Compromise, &detail(), 10)
            .unwrap()
            .unwrap();
        for (column, value) in [
            ("trigger", "sheduled"),
            ("state", "paused"),
            ("step", "CREATE"),
            ("detail", "{not json"),
        ] {
            let fresh = Store::open(&dir.path().join(format!("{column}.db"))).unwrap();
            fresh
                .insert_rotation("c1", "X", Trigger::Compromise, &detail(), 10)
                .unwrap()
                .unwrap();
            fresh
                .with(
                    |c| c.execute(&format!("UPDATE rotations SET {column} = ?1"), [value]),
                    "corrupt",
                )
                .unwrap();
            let err = fresh.rotation("c1").expect_err(column).to_string();
            assert!(err.contains(value) || column == "detail", "{column}: {err}");
        }
        assert_eq!(
            store.rotation("c1").unwrap().unwrap().trigger,
            Trigger::Compromise
        );
    }

    #[test]
    fn ids_and_tokens_fit_aws_limits() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 32);
        let t = token_for(&id);
        assert!((32..=64).contains(&t.len()));
        let r = Rotation {
            id: id.clone(),
            secret: "X".into(),
            trigger: Trigger::Manual,
            token: t,
            step: Step::Create,
            state: State::Running,
            requested_at: 0,
            updated_at: 0,
            attempts: 0,
            error: None,
            detail: Detail::default(),
        };
        assert!((32..=64).contains(&r.finalize_token().len()));
    }
}
