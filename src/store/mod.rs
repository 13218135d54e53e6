//! The embedded durable store (SQLite through rusqlite, bundled): everything that must survive a
//! restart lives here: the reminder ledger, the rotation journal, incidents, access checkpoints,
//! seen CloudTrail event ids and principal baselines.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a transaction is on disk when `commit`
//! returns; callers acknowledge nothing (an API answer, a log line saying "recorded") before
//! that. The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] lists every step
//! and is applied in one transaction per step at open.
//!
//! The connection is synchronous. [`Store::with`], the one door to it, runs each call off the
//! async workers: on a multi-thread tokio runtime through `block_in_place` (the worker hands its
//! other tasks to another thread while this one waits on the mutex, the fsync or SQLite's busy
//! timeout), so a slow or locked store never stalls the HTTP listener or the pollers. Outside a
//! runtime, or on a current-thread one (unit tests), the call runs in place.
//!
//! Owns the connection, its pragmas and the migrations, and nothing else: each feature's SQL
//! lives with the feature, behind a small trait that `Store` implements (`JournalStore`,
//! `IncidentStore`, `LedgerStore`, `AccessState`), so a second backend implements those four.
//! Must never import a feature's types.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::aws::dynamodb::DynamoTable;
use crate::config::{StateBackend, StateConfig};

/// A store failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("state store {path}: {context}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The directory of the database could not be created.
    #[error("state store {path}: cannot create its directory: {source}")]
    Directory {
        /// The database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `PRAGMA quick_check` found damage: nothing is read from or written to the file.
    #[error(
        "state store {path} is damaged ({problems}); restore it from a backup or move it away (keywarden starts with an empty store then)"
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What SQLite found (its first lines).
        problems: String,
    },
    /// DynamoDB refused or failed a call.
    #[error("state store table {table}: {context}: {source}")]
    Dynamo {
        /// The table.
        table: String,
        /// What was being done.
        context: &'static str,
        /// The AWS error.
        source: crate::aws::AwsError,
    },
    /// A DynamoDB item is not what keywarden writes (a corrupt record is an error, never a
    /// default).
    #[error("state store table {table}: {context}: item {key}: {problem}")]
    Corrupt {
        /// The table.
        table: String,
        /// What was being done.
        context: &'static str,
        /// The item's key (`pk/sk`).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The file was written by a newer keywarden.
    #[error(
        "state store {path}: schema version {found} is newer than this keywarden understands ({supported}); upgrade keywarden or move the file away"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Highest version known here.
        supported: i64,
    },
}

/// What `PRAGMA quick_check` finds wrong with the file (`None`: nothing). SQLite reports some
/// damage as the check's rows and some as an error of the check itself; both are damage.
fn damage(conn: &Connection) -> rusqlite::Result<Option<String>> {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    let found = conn.prepare("PRAGMA quick_check(5)").and_then(|mut stmt| {
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
    });
    match found {
        Ok(lines) if lines.iter().all(|l| l == "ok") => Ok(None),
        Ok(lines) => Ok(Some(lines.join("; "))),
        Err(e) if matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase)) => {
            Ok(Some(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // Version 1: the tables of every durable feature.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- One row per (secret, due date, lead): the reminder ledger.
    CREATE TABLE reminders (
        secret       TEXT    NOT NULL,
        due          INTEGER NOT NULL,
        lead_seconds INTEGER NOT NULL,
        kind         TEXT    NOT NULL,
        state        TEXT    NOT NULL CHECK (state IN ('pending', 'sent')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        created_at   INTEGER NOT NULL,
        sent_at      INTEGER,
        message_id   TEXT,
        PRIMARY KEY (secret, due, lead_seconds)
    );
    -- The rotation journal: one row per accepted rotation.
    CREATE TABLE rotations (
        id           TEXT PRIMARY KEY,
        secret       TEXT    NOT NULL,
        trigger      TEXT    NOT NULL,
        token        TEXT    NOT NULL UNIQUE,
        step         TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        requested_at INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        error        TEXT,
        detail       TEXT    NOT NULL DEFAULT '{}'
    );
    CREATE INDEX rotations_by_secret ON rotations (secret, state);
    CREATE TABLE rotation_events (
        rotation_id TEXT    NOT NULL REFERENCES rotations (id),
        at          INTEGER NOT NULL,
        step        TEXT    NOT NULL,
        outcome     TEXT    NOT NULL,
        message     TEXT
    );
    -- Compromise incidents, with their timeline as JSON.
    CREATE TABLE incidents (
        id        TEXT PRIMARY KEY,
        secret    TEXT    NOT NULL,
        status    TEXT    NOT NULL,
        opened_at INTEGER NOT NULL,
        closed_at INTEGER,
        doc       TEXT    NOT NULL
    );
    CREATE INDEX incidents_by_secret ON incidents (secret, status);
    -- Access poller: how far the log group was read, and which events were counted.
    CREATE TABLE access_checkpoints (
        log_group TEXT PRIMARY KEY,
        until_ms  INTEGER NOT NULL
    );
    CREATE TABLE access_seen (
        event_id TEXT PRIMARY KEY,
        event_ms INTEGER NOT NULL
    );
    CREATE INDEX access_seen_by_time ON access_seen (event_ms);
    CREATE TABLE access_principals (
        secret     TEXT    NOT NULL,
        principal  TEXT    NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        reads      INTEGER NOT NULL,
        PRIMARY KEY (secret, principal)
    );
    "#,
    // Version 2: a reminder carries the message it publishes, rendered when its intent is
    // recorded, so every retry (and a retry after a restart) sends the same text.
    r#"
    ALTER TABLE reminders ADD COLUMN message TEXT;
    CREATE INDEX reminders_by_state ON reminders (state);
    "#,
];

/// The store handle; cheap to clone, one connection behind a mutex.
#[derive(Clone)]
pub struct Store {
    /// The open connection.
    conn: Arc<Mutex<Connection>>,
    /// The file, for messages.
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let err = |context: &'static str| {
            let path = path.to_path_buf();
            move |source| StoreError::Sqlite {
                path,
                context,
                source,
            }
        };
        let mut conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err("set busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        // A damaged file is refused before anything reads or writes it.
        if let Some(problems) = damage(&conn).map_err(err("check the file"))? {
            return Err(StoreError::Damaged {
                path: path.to_path_buf(),
                problems,
            });
        }
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err("read schema version"))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err("begin migration"))?;
            tx.execute_batch(sql).map_err(err("apply migration"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err("record schema version"))?;
            tx.commit().map_err(err("commit migration"))?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.with(
            |c| c.pragma_query_value(None, "user_version", |r| r.get(0)),
            "read schema version",
        )
    }

    /// Runs `f` on the connection, mapping its error with `context`.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
        context: &'static str,
    ) -> Result<T, StoreError> {
        let call = || {
            let mut conn = self.lock();
            f(&mut conn).map_err(|source| StoreError::Sqlite {
                path: self.path.to_path_buf(),
                context,
                source,
            })
        };
        let on_workers = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_workers {
            tokio::task::block_in_place(call)
        } else {
            call()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind: rusqlite
        // rolls back an uncommitted transaction when it is dropped.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a meta value durably.
    pub fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(
            |c| {
                c.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )
                .map(|_| ())
            },
            "write meta",
        )
    }

    /// Reads a meta value.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(
            |c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
            },
            "read meta",
        )
    }

    /// Every meta row (for `migrate-store`).
    pub fn meta_rows(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(
            |c| {
                let mut stmt = c.prepare("SELECT key, value FROM meta ORDER BY key")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            },
            "read meta",
        )
    }

    /// `PRAGMA integrity_check`: `Ok(())` or the problems SQLite found.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.with(
            |c| {
                let mut stmt = c.prepare("PRAGMA integrity_check")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                let found: Vec<String> = rows.collect::<Result<_, _>>()?;
                Ok(found.into_iter().filter(|l| l != "ok").collect())
            },
            "check integrity",
        )
    }
}

/// The durable store the features use: one of two backends behind the same four traits
/// (`JournalStore`, `IncidentStore`, `LedgerStore`, `AccessState`), each implemented for this
/// enum by the feature that owns the records. Cheap to clone.
#[derive(Clone, Debug)]
pub enum StateStore {
    /// The embedded SQLite file (the default).
    Sqlite(Store),
    /// One DynamoDB table (`[state] backend = "dynamodb"`).
    Dynamo(DynamoTable),
}

impl From<Store> for StateStore {
    fn from(s: Store) -> StateStore {
        StateStore::Sqlite(s)
    }
}

impl StateStore {
    /// Opens the configured backend: the SQLite file (created and migrated if needed) or a
    /// client of the DynamoDB table (which `keywarden init-store` creates). `observer` counts
    /// the DynamoDB requests.
    pub fn open(
        state: &StateConfig,
        aws: &crate::config::AwsConfig,
        observer: Arc<dyn crate::aws::CallObserver>,
    ) -> Result<StateStore, StoreError> {
        match state.backend {
            StateBackend::Sqlite => Store::open(&state.path).map(StateStore::Sqlite),
            StateBackend::DynamoDb => {
                let table = state.table.clone().unwrap_or_default();
                let t = DynamoTable::connect(aws, &table, observer).map_err(|source| {
                    StoreError::Dynamo {
                        table: table.clone(),
                        context: "connect",
                        source,
                    }
                })?;
                // One read at start: a missing table or a refused permission shows now.
                match t.get("meta", "schema") {
                    Ok(_) => Ok(StateStore::Dynamo(t)),
                    Err(source) if source.kind == crate::aws::AwsErrorKind::NotFound => {
                        Err(StoreError::Dynamo {
                            table,
                            context: "the table does not exist (create it with `keywarden init-store`)",
                            source,
                        })
                    }
                    Err(source) => Err(StoreError::Dynamo {
                        table,
                        context: "read the table",
                        source,
                    }),
                }
            }
        }
    }

    /// Where the state lives, for log lines: the file or `dynamodb:TABLE`.
    pub fn describe(&self) -> String {
        match self {
            StateStore::Sqlite(s) => s.path.display().to_string(),
            StateStore::Dynamo(t) => format!("dynamodb:{}", t.name()),
        }
    }

    /// Sets a meta value durably.
    pub fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            StateStore::Sqlite(s) => s.put_meta(key, value),
            StateStore::Dynamo(t) => {
                let mut item = crate::aws::dynamodb::key("meta", key);
                item.insert(
                    "value".into(),
                    crate::aws::dynamodb::Value::S(value.to_string()),
                );
                t.write(crate::aws::dynamodb::Write::Put { item, cond: None })
                    .map(|_| ())
                    .map_err(dynamo_error(t, "write meta"))
            }
        }
    }

    /// Reads a meta value.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            StateStore::Sqlite(s) => s.get_meta(key),
            StateStore::Dynamo(t) => t
                .get("meta", key)
                .map(|i| i.and_then(|i| crate::aws::dynamodb::s(&i, "value").map(str::to_string)))
                .map_err(dynamo_error(t, "read meta")),
        }
    }
}

/// Maps an AWS error of table `t` to a [`StoreError`] saying what was being done.
pub fn dynamo_error<'a>(
    t: &'a DynamoTable,
    context: &'static str,
) -> impl FnOnce(crate::aws::AwsError) -> StoreError + 'a {
    move |source| StoreError::Dynamo {
        table: t.name().to_string(),
        context,
        source,
    }
}

/// A [`StoreError::Corrupt`] for item `pk/sk` of table `t`.
pub fn corrupt(
    t: &DynamoTable,
    context: &'static str,
    pk: &str,
    sk: &str,
    problem: impl Into<String>,
) -> StoreError {
    StoreError::Corrupt {
        table: t.name().to_string(),
        context,
        key: format!("{pk}/{sk}"),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        store.put_meta("k", "v1").unwrap();
        store.put_meta("k", "v2").unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get_meta("k").unwrap().as_deref(), Some("v2"));
        assert!(store.integrity_check().unwrap().is_empty());
    }

    /// kill -9 cannot show that a commit was fsynced (the page cache survives a killed process),
    /// so the durability settings are read back from the open connection instead.
    #[test]
    fn the_connection_is_wal_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let (journal, synchronous): (String, i64) = store
            .with(
                |c| {
                    let journal = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                    let synchronous = c.pragma_query_value(None, "synchronous", |r| r.get(0))?;
                    Ok((journal, synchronous))
                },
                "read pragmas",
            )
            .unwrap();
        assert_eq!(journal.to_ascii_lowercase(), "wal", "journal_mode");
        // SQLite reports synchronous as a number: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
        assert_eq!(synchronous, 2, "synchronous is not FULL (2)");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}

#[cfg(test)]
mod corruption_tests {
    use super::*;

    /// Issue #15 (low): a damaged file is refused at open with what SQLite found, instead of
    /// failing later in the middle of a rotation or an incident.
    #[test]
    fn a_damaged_file_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            for i in 0..200 {
                store
                    .put_meta(&format!("key-{i:04}"), &"x".repeat(200))
                    .unwrap();
            }
            // Everything into the main file, so that the damage below is what SQLite reads.
            store
                .with(
                    |c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"),
                    "checkpoint",
                )
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        assert!(bytes.len() > 6 * page, "the file has {} bytes", bytes.len());
        // Damage a b-tree page of the table (not the header page).
        for b in &mut bytes[3 * page..4 * page] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).expect_err("a damaged store must not open");
        let text = err.to_string();
        assert!(text.contains("damaged"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}

/// Reads the attributes of one DynamoDB item, each missing or mistyped one a
/// [`StoreError::Corrupt`] naming the item and the attribute.
pub struct Fields<'a> {
    table: &'a DynamoTable,
    context: &'static str,
    item: &'a crate::aws::dynamodb::Item,
}

impl<'a> Fields<'a> {
    /// The attributes of `item` of table `table`, read while doing `context`.
    pub fn of(
        table: &'a DynamoTable,
        context: &'static str,
        item: &'a crate::aws::dynamodb::Item,
    ) -> Fields<'a> {
        Fields {
            table,
            context,
            item,
        }
    }

    /// A [`StoreError::Corrupt`] about this item.
    pub fn corrupt(&self, problem: impl Into<String>) -> StoreError {
        use crate::aws::dynamodb::s;
        corrupt(
            self.table,
            self.context,
            s(self.item, "pk").unwrap_or("?"),
            s(self.item, "sk").unwrap_or("?"),
            problem,
        )
    }

    /// A string attribute.
    pub fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        crate::aws::dynamodb::s(self.item, name)
            .ok_or_else(|| self.corrupt(format!("attribute {name} is missing or not a string")))
    }

    /// A string attribute that may be NULL or absent.
    pub fn opt_s(&self, name: &str) -> Result<Option<String>, StoreError> {
        use crate::aws::dynamodb::Value;
        match self.item.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.corrupt(format!("attribute {name} is not a string"))),
        }
    }

    /// A number attribute.
    pub fn n(&self, name: &str) -> Result<i64, StoreError> {
        crate::aws::dynamodb::n(self.item, name)
            .ok_or_else(|| self.corrupt(format!("attribute {name} is missing or not a number")))
    }

    /// A number attribute that may be NULL or absent.
    pub fn opt_n(&self, name: &str) -> Result<Option<i64>, StoreError> {
        use crate::aws::dynamodb::Value;
        match self.item.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::N(v)) => Ok(Some(*v)),
            Some(_) => Err(self.corrupt(format!("attribute {name} is not a number"))),
        }
    }

    /// A word of a closed vocabulary: one outside it is a corrupt item.
    pub fn word<T>(&self, name: &str) -> Result<T, StoreError>
    where
        T: for<'b> TryFrom<&'b str, Error = crate::domain::UnknownWord>,
    {
        let text = self.s(name)?;
        T::try_from(text).map_err(|e| self.corrupt(format!("attribute {name}: {e}")))
    }

    /// A JSON document attribute.
    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        let text = self.s(name)?;
        serde_json::from_str(text).map_err(|e| self.corrupt(format!("attribute {name}: {e}")))
    }
}
