//! The incidents table (migration 1): one row per incident, its document as JSON in `doc`.
//! `closed_at IS NULL` means open; rollback reads exactly that
//! ([`crate::rotation::journal::open_incident`]).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Incident, Status};
use crate::store::{Store, StoreError};

fn doc(inc: &Incident) -> String {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(inc).unwrap_or_else(|_| "{}".to_string())
}

fn parse(text: String) -> rusqlite::Result<Incident> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Inserts `inc` unless an incident on the same secret is open; `Err(open)` then. The row is on
/// disk when this returns `Ok(Ok(()))`.
pub fn create(store: &Store, inc: &Incident) -> Result<Result<(), Incident>, StoreError> {
    store.with(
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

/// Writes the document (status and closing time follow it).
pub fn save(store: &Store, inc: &Incident) -> Result<(), StoreError> {
    let closed = if inc.status == Status::Open {
        None
    } else {
        Some(inc.closed_at_ms.unwrap_or(inc.opened_at_ms) / 1000)
    };
    store.with(
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

/// One incident.
pub fn get(store: &Store, id: &str) -> Result<Option<Incident>, StoreError> {
    store.with(
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

/// The latest incidents, newest first.
pub fn recent(store: &Store, limit: u32) -> Result<Vec<Incident>, StoreError> {
    many(
        store,
        "SELECT doc FROM incidents ORDER BY opened_at DESC, rowid DESC LIMIT ?1",
        limit,
    )
}

/// Every open incident, oldest first.
pub fn open_all(store: &Store) -> Result<Vec<Incident>, StoreError> {
    many(
        store,
        "SELECT doc FROM incidents WHERE closed_at IS NULL ORDER BY opened_at LIMIT ?1",
        u32::MAX,
    )
}

/// How many incidents each secret has had (all time).
pub fn counts(store: &Store) -> Result<Vec<(String, u64)>, StoreError> {
    store.with(
        |c| {
            let mut stmt = c.prepare("SELECT secret, COUNT(*) FROM incidents GROUP BY secret")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::new_incident;

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
        assert!(create(&store, &first).unwrap().is_ok());
        let second = new_incident("i2", spec, "r", "me", 2_000);
        let existing = create(&store, &second).unwrap().unwrap_err();
        assert_eq!(existing.incident_id, "i1");
        assert_eq!(
            crate::rotation::journal::open_incident(&store, "A").unwrap(),
            Some("i1".to_string())
        );
        assert_eq!(open_all(&store).unwrap().len(), 1);
        first.status = Status::Resolved;
        first.closed_at_ms = Some(3_000);
        save(&store, &first).unwrap();
        assert!(
            crate::rotation::journal::open_incident(&store, "A")
                .unwrap()
                .is_none()
        );
        assert!(create(&store, &second).unwrap().is_ok());
        assert_eq!(recent(&store, 10).unwrap()[0].incident_id, "i2");
        assert_eq!(counts(&store).unwrap(), vec![("A".to_string(), 2)]);
        assert_eq!(get(&store, "i1").unwrap().unwrap().status, Status::Resolved);
    }
}
