//! The access poller's durable state on DynamoDB (`[state] backend = "dynamodb"`), the same
//! calls as `store.rs`.
//!
//! Items: the checkpoint of a log group is `pk = "access"`, `sk = "checkpoint#<log group>"`;
//! the eventIDs of one slice are packed into one item per [`IDS_PER_ITEM`] ids,
//! `pk = "access_seen"`, `sk = "<end ms>#<write time ns>#<n>#<log group>"`, as the map `ids` (id to log
//! timestamp); a reader is `pk = "access_reader"`, `sk = "<secret>\t<principal>"`. A slice is
//! committed with one TransactWriteItems (its id items, the readers it touched and the
//! checkpoint, all or nothing), so a slice of any number of events costs one write request as
//! long as that makes at most 99 items; a larger one is split into transactions of 99 actions,
//! the checkpoint in the last (a crash between them leaves ids counted without the checkpoint:
//! they are skipped, never counted twice, when the slice is read again). Pruning is DynamoDB's TTL on `expires`: an id item
//! expires when its newest id leaves the overlap, a reader when it leaves the baseline (items
//! past `expires` that TTL has not removed yet are skipped at restore).

use std::collections::{BTreeMap, HashMap};

use crate::aws::dynamodb::{DynamoTable, Expr, Item, MAX_TRANSACTION, Value, Write, key};
use crate::store::{Fields, Store, StoreError, dynamo_error};

use super::store::{AccessState, Restored, SliceCommit, StoredReader};

const PK: &str = "access";
const SEEN: &str = "access_seen";
const READER: &str = "access_reader";

/// EventIDs per item: about 60 bytes each, well under DynamoDB's 400 KB item limit.
pub const IDS_PER_ITEM: usize = 4000;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn expired(t: &DynamoTable, i: &Item, now: i64) -> Result<bool, StoreError> {
    Ok(Fields::of(t, "load access state", i)
        .opt_n("expires")?
        .is_some_and(|e| e < now))
}

impl AccessState for DynamoTable {
    fn restore(&self, log_group: &str, baseline_start_ms: i64) -> Result<Restored, StoreError> {
        let ctx = "load access state";
        let now = now_s();
        let checkpoint_ms = match self
            .get(PK, &format!("checkpoint#{log_group}"))
            .map_err(dynamo_error(self, ctx))?
        {
            Some(i) => Some(Fields::of(self, ctx, &i).n("until_ms")?),
            None => None,
        };
        let mut seen = HashMap::new();
        for i in self
            .query(SEEN, None, None)
            .map_err(dynamo_error(self, ctx))?
        {
            if expired(self, &i, now)? {
                continue;
            }
            let f = Fields::of(self, ctx, &i);
            let Some(Value::M(ids)) = i.get("ids") else {
                return Err(f.corrupt("attribute ids is missing or not a map"));
            };
            for (id, ms) in ids {
                let Value::N(ms) = ms else {
                    return Err(f.corrupt(format!("id {id}: not a number")));
                };
                seen.insert(id.clone(), *ms);
            }
        }
        let filter = Expr::new("#last_seen >= :b").value("b", Value::N(baseline_start_ms));
        let mut readers = Vec::new();
        for i in self
            .query(READER, None, Some(&filter))
            .map_err(dynamo_error(self, ctx))?
        {
            let f = Fields::of(self, ctx, &i);
            readers.push(StoredReader {
                secret: f.s("secret")?.to_string(),
                principal: f.s("principal")?.to_string(),
                first_seen_ms: f.n("first_seen")?,
                last_seen_ms: f.n("last_seen")?,
                reads: u64::try_from(f.n("reads")?).unwrap_or(0),
            });
        }
        readers.sort_by_key(|r| r.last_seen_ms);
        Ok(Restored {
            checkpoint_ms,
            seen,
            readers,
        })
    }

    fn commit_slice(
        &self,
        slice: &SliceCommit<'_>,
        before_commit: &dyn Fn(),
    ) -> Result<(), StoreError> {
        let overlap_ms = (slice.end_ms - slice.seen_horizon_ms).max(0);
        let baseline_ms = (slice.end_ms - slice.reader_horizon_ms).max(0);
        let mut writes = Vec::new();
        for (n, chunk) in slice.new_ids.chunks(IDS_PER_ITEM).enumerate() {
            let newest = chunk
                .iter()
                .map(|(_, ms)| *ms)
                .max()
                .unwrap_or(slice.end_ms);
            let ids: BTreeMap<String, Value> = chunk
                .iter()
                .map(|(id, ms)| ((*id).to_string(), Value::N(*ms)))
                .collect();
            // The write time keeps two slices ending at the same time apart.
            let mut i = key(
                SEEN,
                &format!("{:020}#{}#{n}#{}", slice.end_ms, now_ns(), slice.log_group),
            );
            i.insert("ids".into(), Value::M(ids));
            i.insert("expires".into(), Value::N((newest + overlap_ms) / 1000 + 1));
            writes.push(Write::Put {
                item: i,
                cond: None,
            });
        }
        for r in slice.readers {
            let mut i = key(READER, &format!("{}\t{}", r.secret, r.principal));
            for (k, v) in [
                ("secret", Value::S(r.secret.clone())),
                ("principal", Value::S(r.principal.clone())),
                ("first_seen", Value::N(r.first_seen_ms)),
                ("last_seen", Value::N(r.last_seen_ms)),
                (
                    "reads",
                    Value::N(i64::try_from(r.reads).unwrap_or(i64::MAX)),
                ),
                (
                    "expires",
                    Value::N((r.last_seen_ms + baseline_ms) / 1000 + 1),
                ),
            ] {
                i.insert(k.to_string(), v);
            }
            writes.push(Write::Put {
                item: i,
                cond: None,
            });
        }
        let mut cp = key(PK, &format!("checkpoint#{}", slice.log_group));
        cp.insert("until_ms".into(), Value::N(slice.end_ms));
        writes.push(Write::Put {
            item: cp,
            cond: None,
        });
        let groups: Vec<Vec<Write>> = writes
            .chunks(MAX_TRANSACTION)
            .map(<[Write]>::to_vec)
            .collect();
        let last = groups.len().saturating_sub(1);
        for (g, group) in groups.into_iter().enumerate() {
            if g == last {
                before_commit();
            }
            self.transact(group)
                .map_err(dynamo_error(self, "commit access events"))?
                .map_err(|_| {
                    crate::store::corrupt(
                        self,
                        "commit access events",
                        PK,
                        slice.log_group,
                        "an unconditional write was refused",
                    )
                })?;
        }
        Ok(())
    }
}

/// Copies the SQLite access state to table `t` (`migrate-store`): every checkpoint, every
/// counted eventID (packed [`IDS_PER_ITEM`] to an item, no expiry: the daemon's next commits
/// expire theirs) and every reader. Returns (checkpoints, ids, readers).
pub fn copy_from(store: &Store, t: &DynamoTable) -> Result<(usize, usize, usize), StoreError> {
    let (checkpoints, seen, readers) = super::store::export(store)?;
    let mut items = Vec::new();
    for (group, until) in &checkpoints {
        let mut cp = key(PK, &format!("checkpoint#{group}"));
        cp.insert("until_ms".into(), Value::N(*until));
        items.push(cp);
    }
    for (n, chunk) in seen.chunks(IDS_PER_ITEM).enumerate() {
        let newest = chunk.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
        let ids: BTreeMap<String, Value> = chunk
            .iter()
            .map(|(id, ms)| (id.clone(), Value::N(*ms)))
            .collect();
        let mut i = key(SEEN, &format!("{newest:020}#{}#{n}#migrated", now_ns()));
        i.insert("ids".into(), Value::M(ids));
        items.push(i);
    }
    for r in &readers {
        let mut i = key(READER, &format!("{}\t{}", r.secret, r.principal));
        for (k, v) in [
            ("secret", Value::S(r.secret.clone())),
            ("principal", Value::S(r.principal.clone())),
            ("first_seen", Value::N(r.first_seen_ms)),
            ("last_seen", Value::N(r.last_seen_ms)),
            (
                "reads",
                Value::N(i64::try_from(r.reads).unwrap_or(i64::MAX)),
            ),
        ] {
            i.insert(k.to_string(), v);
        }
        items.push(i);
    }
    t.batch_put(items)
        .map_err(dynamo_error(t, "copy access state"))?;
    Ok((checkpoints.len(), seen.len(), readers.len()))
}
