//! Incidents on DynamoDB (`[state] backend = "dynamodb"`), the same calls as `store.rs`.
//!
//! Items: an incident is `pk = "incident"`, `sk = id`, with `secret`, `status`, `opened_at`
//! (seconds), `closed_at` and its document as JSON in `doc`. An open incident also holds the
//! marker `pk = "active"`, `sk = "incident#<secret>"` (its `id`), created with it in one
//! transaction conditional on no marker (one open incident per secret) and deleted in the
//! transaction that closes it; rollback reads that marker
//! ([`crate::rotation::journal::JournalStore::open_incident_of`]).

use std::collections::BTreeMap;

use crate::aws::dynamodb::{DynamoTable, Expr, Item, Value, Write, key};
use crate::store::{Fields, Store, StoreError, corrupt, dynamo_error};

use super::store::IncidentStore;
use super::{Incident, Status};

const PK: &str = "incident";
const ACTIVE: &str = "active";
const META: &str = "meta";

fn marker(secret: &str) -> String {
    format!("incident#{secret}")
}

fn item(inc: &Incident) -> Item {
    let closed = if inc.status == Status::Open {
        Value::Null
    } else {
        Value::N(inc.closed_at_ms.unwrap_or(inc.opened_at_ms) / 1000)
    };
    let mut i = key(PK, &inc.incident_id);
    i.insert("secret".into(), Value::S(inc.secret.clone()));
    i.insert("status".into(), Value::S(inc.status.as_str().to_string()));
    i.insert("opened_at".into(), Value::N(inc.opened_at_ms / 1000));
    i.insert("closed_at".into(), closed);
    // Serializing plain strings and numbers cannot fail.
    i.insert(
        "doc".into(),
        Value::S(serde_json::to_string(inc).unwrap_or_else(|_| "{}".to_string())),
    );
    i
}

fn parse(t: &DynamoTable, i: &Item) -> Result<Incident, StoreError> {
    Fields::of(t, "read an incident", i).json("doc")
}

fn marker_id(t: &DynamoTable, m: &Item) -> Result<String, StoreError> {
    Ok(Fields::of(t, "read open incidents", m).s("id")?.to_string())
}

impl IncidentStore for DynamoTable {
    fn create_incident(&self, inc: &Incident) -> Result<Result<(), Incident>, StoreError> {
        let mut m = key(ACTIVE, &marker(&inc.secret));
        m.insert("id".into(), Value::S(inc.incident_id.clone()));
        for _ in 0..2 {
            let done = self
                .transact(vec![Write::put_new(m.clone()), Write::put_new(item(inc))])
                .map_err(dynamo_error(self, "record an incident"))?;
            match done {
                Ok(()) => return Ok(Ok(())),
                Err(failed) if failed.first() == Some(&true) => {
                    let open = match self
                        .get(ACTIVE, &marker(&inc.secret))
                        .map_err(dynamo_error(self, "read open incidents"))?
                    {
                        Some(m) => {
                            let id = marker_id(self, &m)?;
                            (self.incident(&id)?, id)
                        }
                        None => continue,
                    };
                    match open {
                        (Some(existing), _) if existing.status == Status::Open => {
                            return Ok(Err(existing));
                        }
                        (_, stale_id) => {
                            // A marker whose incident is closed or gone: cleared once.
                            self.write(Write::Delete {
                                pk: ACTIVE.into(),
                                sk: marker(&inc.secret),
                                cond: Some(Expr::new("#id = :id").value("id", Value::S(stale_id))),
                            })
                            .map_err(dynamo_error(self, "clear a stale incident marker"))?;
                        }
                    }
                }
                Err(_) => {
                    return Err(corrupt(
                        self,
                        "record an incident",
                        PK,
                        &inc.incident_id,
                        "an incident with this id already exists",
                    ));
                }
            }
        }
        Err(corrupt(
            self,
            "record an incident",
            ACTIVE,
            &marker(&inc.secret),
            "the open-incident marker keeps changing",
        ))
    }

    fn save_incident(&self, inc: &Incident) -> Result<(), StoreError> {
        // Like SQLite's UPDATE: nothing is written for an incident that was never recorded.
        let put = Write::Put {
            item: item(inc),
            cond: Some(Expr::new("attribute_exists(#pk)")),
        };
        if inc.status == Status::Open {
            return self
                .write(put)
                .map(|_| ())
                .map_err(dynamo_error(self, "update an incident"));
        }
        let release = Write::Delete {
            pk: ACTIVE.into(),
            sk: marker(&inc.secret),
            cond: Some(
                Expr::new("attribute_not_exists(#pk) OR #id = :id")
                    .value("id", Value::S(inc.incident_id.clone())),
            ),
        };
        self.transact(vec![put, release])
            .map(|_| ())
            .map_err(dynamo_error(self, "update an incident"))
    }

    fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.get(PK, id)
            .map_err(dynamo_error(self, "read an incident"))?
            .map(|i| parse(self, &i))
            .transpose()
    }

    fn recent_incidents(&self, limit: u32) -> Result<Vec<Incident>, StoreError> {
        let items = self
            .query(PK, None, None)
            .map_err(dynamo_error(self, "list incidents"))?;
        let mut out = items
            .iter()
            .map(|i| parse(self, i))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (b.opened_at_ms, &b.incident_id).cmp(&(a.opened_at_ms, &a.incident_id)));
        out.truncate(limit as usize);
        Ok(out)
    }

    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let markers = self
            .query(ACTIVE, Some("incident#"), None)
            .map_err(dynamo_error(self, "list incidents"))?;
        let keys = markers
            .iter()
            .map(|m| marker_id(self, m).map(|id| (PK.to_string(), id)))
            .collect::<Result<Vec<_>, _>>()?;
        let items = self
            .batch_get(&keys)
            .map_err(dynamo_error(self, "list incidents"))?;
        let mut out = items
            .iter()
            .map(|i| parse(self, i))
            .filter(|i| i.as_ref().map_or(true, |i| i.status == Status::Open))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.opened_at_ms, &a.incident_id).cmp(&(b.opened_at_ms, &b.incident_id)));
        Ok(out)
    }

    fn incident_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let items = self
            .query(PK, None, None)
            .map_err(dynamo_error(self, "count incidents"))?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for i in &items {
            let secret = Fields::of(self, "count incidents", i).s("secret")?;
            *counts.entry(secret.to_string()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    fn opened_notice(&self, id: &str) -> Result<Option<String>, StoreError> {
        let got = self
            .get(META, &format!("incident:{id}:opened_notice"))
            .map_err(dynamo_error(self, "read meta"))?;
        Ok(got.and_then(|i| crate::aws::dynamodb::s(&i, "value").map(str::to_string)))
    }

    fn record_opened_notice(&self, id: &str, message_id: &str) -> Result<(), StoreError> {
        let mut i = key(META, &format!("incident:{id}:opened_notice"));
        i.insert("value".into(), Value::S(message_id.to_string()));
        self.write(Write::Put {
            item: i,
            cond: None,
        })
        .map(|_| ())
        .map_err(dynamo_error(self, "write meta"))
    }
}

/// Copies every incident of the SQLite store, with its open marker and its first notice's
/// message id, to table `t` (`migrate-store`); returns how many incidents.
pub fn copy_from(store: &Store, t: &DynamoTable) -> Result<usize, StoreError> {
    let all = store.recent_incidents(u32::MAX)?;
    let mut items = Vec::with_capacity(all.len());
    for inc in &all {
        items.push(item(inc));
        if inc.status == Status::Open {
            let mut m = key(ACTIVE, &marker(&inc.secret));
            m.insert("id".into(), Value::S(inc.incident_id.clone()));
            items.push(m);
        }
    }
    t.batch_put(items)
        .map_err(dynamo_error(t, "copy incidents"))?;
    Ok(all.len())
}
