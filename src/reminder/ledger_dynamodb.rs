//! The reminder ledger on DynamoDB (`[state] backend = "dynamodb"`), the same calls as
//! `ledger.rs`.
//!
//! Items: a ledger row is `pk = "reminder"`, `sk = "<due>#<lead>#<secret>"` with the key's
//! fields, `kind`, `state`, `attempts`, `created_at`, `sent_at`, `message_id`, `last_error`
//! and the rendered `message`. A pending row also has the marker `pk = "reminder_pending"`
//! (same `sk`), so the task lists what is still to send without reading the whole ledger.
//! An intent is recorded with a put conditional on no row (exactly once, even when two
//! writers race); `mark_sent` moves the row and deletes the marker in one transaction.

use crate::aws::dynamodb::{DynamoTable, Expr, Item, MAX_TRANSACTION, Value, Write, key};
use crate::store::{Fields, Store, StoreError, dynamo_error};

use super::ledger::{LedgerStore, PendingRow};
use super::message::{Message, fallback_message};
use super::plan::ReminderKey;

const PK: &str = "reminder";
const PENDING: &str = "reminder_pending";

fn sk(k: &ReminderKey) -> String {
    format!("{}#{}#{}", k.due, k.lead_seconds, k.secret)
}

fn key_of(t: &DynamoTable, i: &Item) -> Result<ReminderKey, StoreError> {
    let f = Fields::of(t, "read the reminder ledger", i);
    Ok(ReminderKey {
        secret: f.s("secret")?.to_string(),
        due: f.n("due")?,
        lead_seconds: f.n("lead_seconds")?,
    })
}

impl LedgerStore for DynamoTable {
    fn known(&self, keys: &[ReminderKey]) -> Result<Vec<ReminderKey>, StoreError> {
        let wanted: Vec<(String, String)> = keys.iter().map(|k| (PK.to_string(), sk(k))).collect();
        let items = self
            .batch_get(&wanted)
            .map_err(dynamo_error(self, "read the reminder ledger"))?;
        let found = items
            .iter()
            .map(|i| key_of(self, i))
            .collect::<Result<std::collections::HashSet<_>, _>>()?;
        Ok(keys.iter().filter(|k| found.contains(k)).cloned().collect())
    }

    fn record_intents(
        &self,
        intents: &[(ReminderKey, Message)],
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut inserted = 0;
        let rows: Vec<(Write, Write)> = intents
            .iter()
            .map(|(k, m)| {
                let mut row = key(PK, &sk(k));
                for (name, v) in [
                    ("secret", Value::S(k.secret.clone())),
                    ("due", Value::N(k.due)),
                    ("lead_seconds", Value::N(k.lead_seconds)),
                    ("kind", Value::S(k.kind().to_string())),
                    ("state", Value::S("pending".into())),
                    ("attempts", Value::N(0)),
                    ("created_at", Value::N(now)),
                    (
                        "message",
                        Value::S(serde_json::to_string(m).unwrap_or_default()),
                    ),
                ] {
                    row.insert(name.to_string(), v);
                }
                (
                    Write::put_new(row),
                    Write::Put {
                        item: key(PENDING, &sk(k)),
                        cond: None,
                    },
                )
            })
            .collect();
        // One transaction per group of intents; a group where another writer was first is
        // written one intent at a time, so each row is inserted once.
        for group in rows.chunks(MAX_TRANSACTION / 2) {
            let writes: Vec<Write> = group
                .iter()
                .flat_map(|(a, b)| [a.clone(), b.clone()])
                .collect();
            match self
                .transact(writes)
                .map_err(dynamo_error(self, "record reminder intents"))?
            {
                Ok(()) => inserted += group.len(),
                Err(_) => {
                    for (row, marker) in group {
                        if self
                            .transact(vec![row.clone(), marker.clone()])
                            .map_err(dynamo_error(self, "record reminder intents"))?
                            .is_ok()
                        {
                            inserted += 1;
                        }
                    }
                }
            }
        }
        Ok(inserted)
    }

    fn pending(&self) -> Result<Vec<PendingRow>, StoreError> {
        let markers = self
            .query(PENDING, None, None)
            .map_err(dynamo_error(self, "read pending reminders"))?;
        if markers.is_empty() {
            return Ok(Vec::new());
        }
        let keys = markers
            .iter()
            .map(|m| {
                Fields::of(self, "read pending reminders", m)
                    .s("sk")
                    .map(|s| (PK.to_string(), s.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let items = self
            .batch_get(&keys)
            .map_err(dynamo_error(self, "read pending reminders"))?;
        let mut out = Vec::new();
        for i in &items {
            let f = Fields::of(self, "read pending reminders", i);
            if f.s("state")? != "pending" {
                continue;
            }
            let key = key_of(self, i)?;
            let message = f
                .opt_s("message")?
                .and_then(|m| serde_json::from_str::<Message>(&m).ok())
                .unwrap_or_else(|| fallback_message(&key));
            out.push(PendingRow {
                attempts: f.n("attempts")?,
                key,
                message,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn mark_sent(&self, key: &ReminderKey, message_id: &str, now: i64) -> Result<bool, StoreError> {
        let update = Write::Update {
            pk: PK.into(),
            sk: sk(key),
            update: Expr::new(
                "SET #state = :sent, #sent_at = :now, #message_id = :mid REMOVE #last_error",
            )
            .value("sent", Value::S("sent".into()))
            .value("now", Value::N(now))
            .value("mid", Value::S(message_id.to_string())),
            cond: Some(Expr::new("#state = :pending").value("pending", Value::S("pending".into()))),
        };
        let unmark = Write::Delete {
            pk: PENDING.into(),
            sk: sk(key),
            cond: None,
        };
        Ok(self
            .transact(vec![update, unmark])
            .map_err(dynamo_error(self, "mark a reminder sent"))?
            .is_ok())
    }

    fn count_failure(&self, key: &ReminderKey, error: &str) -> Result<i64, StoreError> {
        let written = self
            .write(Write::Update {
                pk: PK.into(),
                sk: sk(key),
                update: Expr::new("SET #attempts = #attempts + :one, #last_error = :e")
                    .value("one", Value::N(1))
                    .value("e", Value::S(error.to_string())),
                cond: Some(Expr::new("attribute_exists(#pk)")),
            })
            .map_err(dynamo_error(self, "record a failed reminder"))?;
        if !written {
            return Err(crate::store::corrupt(
                self,
                "record a failed reminder",
                PK,
                &sk(key),
                "no such reminder",
            ));
        }
        let row = self
            .get(PK, &sk(key))
            .map_err(dynamo_error(self, "record a failed reminder"))?;
        match row {
            Some(i) => Fields::of(self, "record a failed reminder", &i).n("attempts"),
            None => Ok(0),
        }
    }
}

/// Copies every ledger row (pending and sent) of the SQLite store to table `t`, with the
/// pending markers (`migrate-store`); returns how many rows.
pub fn copy_from(store: &Store, t: &DynamoTable) -> Result<usize, StoreError> {
    let rows = super::ledger::all_rows(store)?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let k = &r.key;
        let mut row = key(PK, &sk(k));
        for (name, v) in [
            ("secret", Value::S(k.secret.clone())),
            ("due", Value::N(k.due)),
            ("lead_seconds", Value::N(k.lead_seconds)),
            ("kind", Value::S(k.kind().to_string())),
            ("state", Value::S(r.state.clone())),
            ("attempts", Value::N(r.attempts)),
            ("created_at", Value::N(r.created_at)),
        ] {
            row.insert(name.to_string(), v);
        }
        if let Some(m) = &r.message {
            row.insert("message".into(), Value::S(m.clone()));
        }
        if let Some(e) = &r.last_error {
            row.insert("last_error".into(), Value::S(e.clone()));
        }
        if let Some(at) = r.sent_at {
            row.insert("sent_at".into(), Value::N(at));
        }
        if let Some(id) = &r.message_id {
            row.insert("message_id".into(), Value::S(id.clone()));
        }
        items.push(row);
        if r.state == "pending" {
            items.push(key(PENDING, &sk(k)));
        }
    }
    t.batch_put(items)
        .map_err(dynamo_error(t, "copy the reminder ledger"))?;
    Ok(rows.len())
}
