//! The incidents table (migration 1): one row per incident, its document as JSON in `doc`.
//! `closed_at IS NULL` means open; rollback reads exactly that
//! ([`crate::rotation::journal::JournalStore::open_incident_of`]).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Incident, Status};
use crate::store::{StateStore, Store, StoreError};

fn doc(inc: &Incident) -> String {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(inc).unwrap_or_else(|_| "{}".to_string())
}

fn parse(text: String) -> rusqlite::Result<Incident> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn many(store: &Store, sql: &str, limit: u32) -> Result<Vec<Incident>, StoreError> {
    store.with(
        |c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for text in rows {
                out.push(parse(text?)?);
            }
            Ok(out)
        },
        "list incidents",
    )
}

/// The incident documents' storage: the only calls the incident service makes on the `incidents` table. [`Store`] (SQLite) implements it; a second backend implements the same calls.
pub trait IncidentStore {
    /// Inserts `inc` unless an incident on the same secret is open; `Err(open)` then. The row is on
    /// disk when this returns `Ok(Ok(()))`.
    fn create_incident(&self, inc: &Incident) -> Result<Result<(), Incident>, StoreError>;

    /// Writes the document (status and closing time follow it).
    fn save_incident(&self, inc: &Incident) -> Result<(), StoreError>;

    /// One incident.
    fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError>;

    /// The latest incidents, newest first.
    fn recent_incidents(&self, limit: u32) -> Result<Vec<Incident>, StoreError>;

    /// Every open incident, oldest first.
    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError>;

    /// How many incidents each secret has had (all time).
    fn incident_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// The SNS MessageId of the incident's first notice (`incident_opened`), once SNS took it.
    /// Kept apart from the document: the notice is sent by its own task while the steps run.
    fn opened_notice(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Records that SNS accepted the first notice of incident `id`.
    fn record_opened_notice(&self, id: &str, message_id: &str) -> Result<(), StoreError>;
}

impl IncidentStore for Store {
    fn create_incident(&self, inc: &Incident) -> Result<Result<(), Incident>, StoreError> {
        self.with(
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let open: Option<String> = tx
                    .query_row(
                        "SELECT doc FROM incidents WHERE secret = ?1 AND closed_at IS NULL
                         ORDER BY opened_at DESC LIMIT 1",
                        [&inc.secret],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(text) = open {
                    return Ok(Err(parse(text)?));
                }
                tx.execute(
                    "INSERT INTO incidents (id, secret, status, opened_at, closed_at, doc)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                    params![
                        inc.incident_id,
                        inc.secret,
                        inc.status.as_str(),
                        inc.opened_at_ms / 1000,
                        doc(inc)
                    ],
                )?;
                tx.commit()?;
                Ok(Ok(()))
            },
            "record an incident",
        )
    }

    fn save_incident(&self, inc: &Incident) -> Result<(), StoreError> {
        let closed = if inc.status == Status::Open {
            None
        } else {
            Some(inc.closed_at_ms.unwrap_or(inc.opened_at_ms) / 1000)
        };
        self.with(
            |c| {
                c.execute(
                    "UPDATE incidents SET status = ?2, closed_at = ?3, doc = ?4 WHERE id = ?1",
                    params![inc.incident_id, inc.status.as_str(), closed, doc(inc)],
                )
                .map(|_| ())
            },
            "update an incident",
        )
    }

    fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.with(
            |c| {
                c.query_row("SELECT doc FROM incidents WHERE id = ?1", [id], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?
                .map(parse)
                .transpose()
            },
            "read an incident",
        )
    }

    fn recent_incidents(&self, limit: u32) -> Result<Vec<Incident>, StoreError> {
        many(
            self,
            "SELECT doc FROM incidents ORDER BY opened_at DESC, rowid DESC LIMIT ?1",
            limit,
        )
    }

    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        many(
            self,
            "SELECT doc FROM incidents WHERE closed_at IS NULL ORDER BY opened_at LIMIT ?1",
            u32::MAX,
        )
    }

    fn incident_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(
            |c| {
                let mut stmt =
                    c.prepare("SELECT secret, COUNT(*) FROM incidents GROUP BY secret")?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                let mut out = Vec::new();
                for row in rows {
                    let (secret, n) = row?;
                    out.push((secret, u64::try_from(n).unwrap_or(0)));
                }
                Ok(out)
            },
            "count incidents",
        )
    }
    fn opened_notice(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.get_meta(&format!("incident:{id}:opened_notice"))
    }

    fn record_opened_notice(&self, id: &str, message_id: &str) -> Result<(), StoreError> {
        self.put_meta(&format!("incident:{id}:opened_notice"), message_id)
    }
}

/// The configured backend's incidents.
fn incidents(s: &StateStore) -> &dyn IncidentStore {
    match s {
        StateStore::Sqlite(s) => s,
        StateStore::Dynamo(t) => t,
    }
}

impl IncidentStore for StateStore {
    fn create_incident(&self, inc: &Incident) -> Result<Result<(), Incident>, StoreError> {
        incidents(self).create_incident(inc)
    }

    fn save_incident(&self, inc: &Incident) -> Result<(), StoreError> {
        incidents(self).save_incident(inc)
    }

    fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        incidents(self).incident(id)
    }

    fn recent_incidents(&self, limit: u32) -> Result<Vec<Incident>, StoreError> {
        incidents(self).recent_incidents(limit)
    }

    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        incidents(self).open_incidents()
    }

    fn incident_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        incidents(self).incident_counts()
    }

    fn opened_notice(&self, id: &str) -> Result<Option<String>, StoreError> {
        incidents(self).opened_notice(id)
    }

    fn record_opened_notice(&self, id: &str, message_id: &str) -> Result<(), StoreError> {
        incidents(self).record_opened_notice(id, message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::new_incident;
    use crate::rotation::journal::JournalStore;

    #[test]
    fn one_open_incident_per_secret_and_rollback_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let cfg = crate::config::parse(
            "[[secret]]\nname = \"A\"\nid = \"a\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let spec = &cfg.secrets[0];
        let mut first = new_incident("i1", spec, "r", "me", 1_000);
        assert!(store.create_incident(&first).unwrap().is_ok());
        let second = new_incident("i2", spec, "r", "me", 2_000);
        let existing = store.create_incident(&second).unwrap().unwrap_err();
        assert_eq!(existing.incident_id, "i1");
        assert_eq!(store.open_incident_of("A").unwrap(), Some("i1".to_string()));
        assert_eq!(store.open_incidents().unwrap().len(), 1);
        first.status = Status::Resolved;
        first.closed_at_ms = Some(3_000);
        store.save_incident(&first).unwrap();
        assert!(store.open_incident_of("A").unwrap().is_none());
        assert!(store.create_incident(&second).unwrap().is_ok());
        assert_eq!(store.recent_incidents(10).unwrap()[0].incident_id, "i2");
        assert_eq!(store.incident_counts().unwrap(), vec![("A".to_string(), 2)]);
        assert_eq!(
            store.incident("i1").unwrap().unwrap().status,
            Status::Resolved
        );
    }
}
