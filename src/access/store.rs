//! The access poller's durable state: eventIDs already counted (`access_seen`), the checkpoint
//! per log group (`access_checkpoints`) and the readers of each secret within the baseline
//! (`access_principals`). The only place that names these tables.
//!
//! [`AccessState`] is the interface the poller uses; [`Store`] (SQLite) implements it, so a
//! second backend implements the same four calls. Must never import the poller or telemetry.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use crate::store::{StateStore, Store, StoreError};

/// A reader of a secret as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReader {
    /// The secret's inventory name.
    pub secret: String,
    /// The principal ARN.
    pub principal: String,
    /// First read seen (ms since the epoch).
    pub first_seen_ms: i64,
    /// Last read seen (ms since the epoch).
    pub last_seen_ms: i64,
    /// Reads counted (not learned from history).
    pub reads: u64,
}

/// What the poller restores at start.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Where the last committed slice ended, if any.
    pub checkpoint_ms: Option<i64>,
    /// Every eventID within the overlap, with its log timestamp.
    pub seen: HashMap<String, i64>,
    /// Readers last seen within the baseline, least recent first.
    pub readers: Vec<StoredReader>,
}

/// One slice, committed at once: its new eventIDs, the readers it touched, the new checkpoint,
/// and the horizons below which ids and readers are no longer needed.
#[derive(Debug, Clone)]
pub struct SliceCommit<'a> {
    /// The log group the checkpoint belongs to.
    pub log_group: &'a str,
    /// New eventIDs (and skipped-record keys) with their log timestamps.
    pub new_ids: &'a [(&'a str, i64)],
    /// Readers touched by the slice, with their merged statistics.
    pub readers: &'a [StoredReader],
    /// The slice's end: the new checkpoint.
    pub end_ms: i64,
    /// Ids older than this are dropped (outside the overlap).
    pub seen_horizon_ms: i64,
    /// Readers last seen before this are dropped (outside the baseline).
    pub reader_horizon_ms: i64,
}

/// The access poller's durable state.
pub trait AccessState {
    /// Everything needed to resume: checkpoint, seen ids, readers since `baseline_start_ms`.
    fn restore(&self, log_group: &str, baseline_start_ms: i64) -> Result<Restored, StoreError>;

    /// Commits one slice in one transaction; `before_commit` runs inside it, last (the tests'
    /// crash point).
    fn commit_slice(
        &self,
        slice: &SliceCommit<'_>,
        before_commit: &dyn Fn(),
    ) -> Result<(), StoreError>;
}

impl AccessState for Store {
    fn restore(&self, log_group: &str, baseline_start_ms: i64) -> Result<Restored, StoreError> {
        self.with(
            |c| {
                let checkpoint_ms: Option<i64> = c
                    .query_row(
                        "SELECT until_ms FROM access_checkpoints WHERE log_group = ?1",
                        [log_group],
                        |r| r.get(0),
                    )
                    .optional()?;
                let mut stmt = c.prepare("SELECT event_id, event_ms FROM access_seen")?;
                let seen = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<HashMap<_, _>, _>>()?;
                let mut stmt = c.prepare(
                    "SELECT secret, principal, first_seen, last_seen, reads FROM access_principals
                     WHERE last_seen >= ?1 ORDER BY last_seen ASC",
                )?;
                let readers = stmt
                    .query_map([baseline_start_ms], |r| {
                        Ok(StoredReader {
                            secret: r.get(0)?,
                            principal: r.get(1)?,
                            first_seen_ms: r.get(2)?,
                            last_seen_ms: r.get(3)?,
                            reads: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Restored {
                    checkpoint_ms,
                    seen,
                    readers,
                })
            },
            "load access state",
        )
    }

    fn commit_slice(
        &self,
        slice: &SliceCommit<'_>,
        before_commit: &dyn Fn(),
    ) -> Result<(), StoreError> {
        self.with(
            |c| {
                let tx = c.transaction()?;
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT OR IGNORE INTO access_seen (event_id, event_ms) VALUES (?1, ?2)",
                    )?;
                    for (id, ms) in slice.new_ids {
                        ins.execute(params![id, ms])?;
                    }
                    let mut up = tx.prepare_cached(
                        "INSERT INTO access_principals (secret, principal, first_seen, last_seen, reads)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (secret, principal) DO UPDATE SET
                           first_seen = min(first_seen, excluded.first_seen),
                           last_seen = max(last_seen, excluded.last_seen),
                           reads = max(reads, excluded.reads)",
                    )?;
                    for r in slice.readers {
                        up.execute(params![
                            r.secret,
                            r.principal,
                            r.first_seen_ms,
                            r.last_seen_ms,
                            i64::try_from(r.reads).unwrap_or(i64::MAX)
                        ])?;
                    }
                }
                tx.execute(
                    "INSERT INTO access_checkpoints (log_group, until_ms) VALUES (?1, ?2)
                     ON CONFLICT (log_group) DO UPDATE SET until_ms = excluded.until_ms",
                    params![slice.log_group, slice.end_ms],
                )?;
                tx.execute(
                    "DELETE FROM access_seen WHERE event_ms < ?1",
                    [slice.seen_horizon_ms],
                )?;
                tx.execute(
                    "DELETE FROM access_principals WHERE last_seen < ?1",
                    [slice.reader_horizon_ms],
                )?;
                before_commit();
                tx.commit()
            },
            "commit access events",
        )
    }
}

/// (log group, checkpoint ms) pairs, (eventID, ms) pairs and readers.
pub type Exported = (Vec<(String, i64)>, Vec<(String, i64)>, Vec<StoredReader>);

/// Everything of the SQLite access tables (for `migrate-store`): each log group's checkpoint,
/// every counted eventID and every reader.
pub fn export(store: &Store) -> Result<Exported, StoreError> {
    store.with(
        |c| {
            let mut stmt =
                c.prepare("SELECT log_group, until_ms FROM access_checkpoints ORDER BY log_group")?;
            let checkpoints = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt =
                c.prepare("SELECT event_id, event_ms FROM access_seen ORDER BY event_ms")?;
            let seen = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt = c.prepare(
                "SELECT secret, principal, first_seen, last_seen, reads FROM access_principals
                 ORDER BY secret, principal",
            )?;
            let readers = stmt
                .query_map([], |r| {
                    Ok(StoredReader {
                        secret: r.get(0)?,
                        principal: r.get(1)?,
                        first_seen_ms: r.get(2)?,
                        last_seen_ms: r.get(3)?,
                        reads: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((checkpoints, seen, readers))
        },
        "read access state",
    )
}

impl AccessState for StateStore {
    fn restore(&self, log_group: &str, baseline_start_ms: i64) -> Result<Restored, StoreError> {
        match self {
            StateStore::Sqlite(s) => s.restore(log_group, baseline_start_ms),
            StateStore::Dynamo(t) => t.restore(log_group, baseline_start_ms),
        }
    }

    fn commit_slice(
        &self,
        slice: &SliceCommit<'_>,
        before_commit: &dyn Fn(),
    ) -> Result<(), StoreError> {
        match self {
            StateStore::Sqlite(s) => s.commit_slice(slice, before_commit),
            StateStore::Dynamo(t) => t.commit_slice(slice, before_commit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_slice_is_restored_and_horizons_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let empty = store.restore("/g", 0).unwrap();
        assert_eq!(empty.checkpoint_ms, None);
        let reader = |p: &str, last: i64| StoredReader {
            secret: "S".into(),
            principal: p.into(),
            first_seen_ms: 1,
            last_seen_ms: last,
            reads: 2,
        };
        let readers = [reader("old", 5), reader("new", 50)];
        store
            .commit_slice(
                &SliceCommit {
                    log_group: "/g",
                    new_ids: &[("a", 10), ("b", 100)],
                    readers: &readers,
                    end_ms: 200,
                    seen_horizon_ms: 50,
                    reader_horizon_ms: 20,
                },
                &|| {},
            )
            .unwrap();
        let r = store.restore("/g", 0).unwrap();
        assert_eq!(r.checkpoint_ms, Some(200));
        assert_eq!(r.seen, HashMap::from([("b".to_string(), 100)]));
        assert_eq!(r.readers, [reader("new", 50)]);
        assert_eq!(store.restore("/other", 0).unwrap().checkpoint_ms, None);
    }
}
