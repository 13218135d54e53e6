//! The rotation journal on DynamoDB (`[state] backend = "dynamodb"`), the same calls as the
//! SQLite tables of `journal.rs`.
//!
//! Items: a rotation is `pk = "rotation"`, `sk = id`, with its timeline as the list `events`
//! (appended in the same UpdateItem that moves the rotation, so a step and its event are one
//! write). An active rotation (running or grace) also holds the marker `pk = "active"`,
//! `sk = "rotation#<secret>"` (its `id`): inserting a rotation creates the marker and the
//! rotation in one transaction conditional on no marker, so two requests can never both start
//! one; leaving the active states deletes it in the same transaction. Updates are
//! compare-and-set on (state, step) through a condition expression.

use crate::aws::dynamodb::{DynamoTable, Expr, Item, Value, Write, key};
use crate::store::{Fields, Store, StoreError, corrupt, dynamo_error};

use super::journal::{
    Detail, Event, EventOutcome, JournalStore, Rotation, State, Step, Trigger, Update, token_for,
};

const PK: &str = "rotation";
const ACTIVE: &str = "active";

fn marker(secret: &str) -> String {
    format!("rotation#{secret}")
}

fn detail_json(d: &Detail) -> String {
    serde_json::to_string(d).unwrap_or_else(|_| "{}".to_string())
}

fn event_value(at: i64, step: &str, outcome: EventOutcome, message: Option<&str>) -> Value {
    Value::M(
        [
            ("at".to_string(), Value::N(at)),
            ("step".to_string(), Value::S(step.to_string())),
            (
                "outcome".to_string(),
                Value::S(outcome.as_str().to_string()),
            ),
            ("message".to_string(), crate::aws::dynamodb::opt_s(message)),
        ]
        .into(),
    )
}

fn parse(t: &DynamoTable, item: &Item) -> Result<Rotation, StoreError> {
    let f = Fields::of(t, "read a rotation", item);
    Ok(Rotation {
        id: f.s("sk")?.to_string(),
        secret: f.s("secret")?.to_string(),
        trigger: f.word("trigger")?,
        token: f.s("token")?.to_string(),
        step: f.word("step")?,
        state: f.word("state")?,
        requested_at: f.n("requested_at")?,
        updated_at: f.n("updated_at")?,
        attempts: u32::try_from(f.n("attempts")?)
            .map_err(|_| f.corrupt("attribute attempts is out of range"))?,
        error: f.opt_s("error")?,
        detail: f.json("detail")?,
    })
}

fn events(t: &DynamoTable, item: &Item) -> Result<Vec<Event>, StoreError> {
    let f = Fields::of(t, "read rotation events", item);
    let Some(Value::L(list)) = item.get("events") else {
        return Err(f.corrupt("attribute events is missing or not a list"));
    };
    list.iter()
        .map(|v| {
            let Value::M(m) = v else {
                return Err(f.corrupt("an event is not a map"));
            };
            let e = Fields::of(t, "read rotation events", m);
            Ok(Event {
                at: e.n("at")?,
                step: e.s("step")?.to_string(),
                outcome: e.word("outcome")?,
                message: e.opt_s("message")?,
            })
        })
        .collect()
}

fn active_rotation_of(t: &DynamoTable, secret: &str) -> Result<Option<Rotation>, StoreError> {
    let Some(m) = t
        .get(ACTIVE, &marker(secret))
        .map_err(dynamo_error(t, "read the active rotation"))?
    else {
        return Ok(None);
    };
    let id = Fields::of(t, "read the active rotation", &m).s("id")?;
    JournalStore::rotation(t, id)
}

impl JournalStore for DynamoTable {
    fn insert_rotation(
        &self,
        id: &str,
        secret: &str,
        trigger: Trigger,
        detail: &Detail,
        now: i64,
    ) -> Result<Result<Rotation, Rotation>, StoreError> {
        let mut item = key(PK, id);
        for (k, v) in [
            ("secret", Value::S(secret.to_string())),
            ("trigger", Value::S(trigger.as_str().to_string())),
            ("token", Value::S(token_for(id))),
            ("step", Value::S(Step::Create.as_str().to_string())),
            ("state", Value::S(State::Running.as_str().to_string())),
            ("requested_at", Value::N(now)),
            ("updated_at", Value::N(now)),
            ("attempts", Value::N(0)),
            ("error", Value::Null),
            ("detail", Value::S(detail_json(detail))),
            (
                "events",
                Value::L(vec![event_value(
                    now,
                    "accepted",
                    EventOutcome::Ok,
                    Some(&format!("{} rotation accepted", trigger.as_str())),
                )]),
            ),
        ] {
            item.insert(k.to_string(), v);
        }
        let mut m = key(ACTIVE, &marker(secret));
        m.insert("id".into(), Value::S(id.to_string()));
        // Twice at most: a marker left by a rotation that is no longer active (written by a
        // crash between two keywarden versions, or by hand) is cleared once.
        for _ in 0..2 {
            let done = self
                .transact(vec![
                    Write::put_new(m.clone()),
                    Write::put_new(item.clone()),
                ])
                .map_err(dynamo_error(self, "journal a rotation"))?;
            match done {
                Ok(()) => {
                    return parse(self, &item).map(Ok);
                }
                Err(failed) if failed.first() == Some(&true) => {
                    match active_rotation_of(self, secret)? {
                        Some(active) if active.state.is_active() => return Ok(Err(active)),
                        stale => {
                            let stale_id = stale.map(|r| r.id).unwrap_or_default();
                            self.write(Write::Delete {
                                pk: ACTIVE.into(),
                                sk: marker(secret),
                                cond: Some(Expr::new("#id = :id").value("id", Value::S(stale_id))),
                            })
                            .map_err(dynamo_error(self, "clear a stale rotation marker"))?;
                        }
                    }
                }
                Err(_) => {
                    return Err(corrupt(
                        self,
                        "journal a rotation",
                        PK,
                        id,
                        "a rotation with this id already exists",
                    ));
                }
            }
        }
        Err(corrupt(
            self,
            "journal a rotation",
            ACTIVE,
            &marker(secret),
            "the active-rotation marker keeps changing",
        ))
    }

    fn rotation(&self, id: &str) -> Result<Option<Rotation>, StoreError> {
        self.get(PK, id)
            .map_err(dynamo_error(self, "read a rotation"))?
            .map(|i| parse(self, &i))
            .transpose()
    }

    fn rotation_events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        match self
            .get(PK, id)
            .map_err(dynamo_error(self, "read rotation events"))?
        {
            Some(i) => events(self, &i),
            None => Ok(Vec::new()),
        }
    }

    fn rotations_in_states(&self, states: &[State]) -> Result<Vec<Rotation>, StoreError> {
        let items = if states.iter().all(|s| s.is_active()) {
            // Only the markers: the partition of every rotation ever is not read.
            let markers = self
                .query(ACTIVE, Some("rotation#"), None)
                .map_err(dynamo_error(self, "read unfinished rotations"))?;
            let keys = markers
                .iter()
                .map(|m| {
                    Fields::of(self, "read unfinished rotations", m)
                        .s("id")
                        .map(|id| (PK.to_string(), id.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.batch_get(&keys)
                .map_err(dynamo_error(self, "read unfinished rotations"))?
        } else {
            self.query(PK, None, None)
                .map_err(dynamo_error(self, "read rotations"))?
        };
        let mut out = items
            .iter()
            .map(|i| parse(self, i))
            .filter(|r| r.as_ref().map_or(true, |r| states.contains(&r.state)))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(out)
    }

    fn recent_rotations(
        &self,
        secret: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Rotation>, StoreError> {
        let items = match secret {
            Some(s) => self.query(
                PK,
                None,
                Some(&Expr::new("#secret = :s").value("s", Value::S(s.to_string()))),
            ),
            None => self.query(PK, None, None),
        }
        .map_err(dynamo_error(self, "read recent rotations"))?;
        let mut out = items
            .iter()
            .map(|i| parse(self, i))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| {
            (b.requested_at, b.updated_at, &b.id).cmp(&(a.requested_at, a.updated_at, &a.id))
        });
        out.truncate(limit as usize);
        Ok(out)
    }

    fn update_rotation(&self, id: &str, u: &Update<'_>, now: i64) -> Result<bool, StoreError> {
        let update = Expr::new(
            "SET #step = :step, #state = :state, #attempts = :attempts, #error = :error, \
             #detail = :detail, #updated_at = :now, #events = list_append(#events, :ev)",
        )
        .value("step", Value::S(u.step.as_str().to_string()))
        .value("state", Value::S(u.state.as_str().to_string()))
        .value("attempts", Value::N(i64::from(u.attempts)))
        .value("error", crate::aws::dynamodb::opt_s(u.error))
        .value("detail", Value::S(detail_json(u.detail)))
        .value("now", Value::N(now))
        .value(
            "ev",
            Value::L(vec![event_value(now, u.event.0, u.event.1, u.event.2)]),
        );
        let cond = Expr::new("#state = :fstate AND #step = :fstep")
            .value("fstate", Value::S(u.from.0.as_str().to_string()))
            .value("fstep", Value::S(u.from.1.as_str().to_string()));
        let write = Write::Update {
            pk: PK.into(),
            sk: id.to_string(),
            update,
            cond: Some(cond),
        };
        let leaves = u.from.0.is_active() && !u.state.is_active();
        let enters = !u.from.0.is_active() && u.state.is_active();
        if !leaves && !enters {
            return self
                .write(write)
                .map_err(dynamo_error(self, "update a rotation"));
        }
        let Some(current) = JournalStore::rotation(self, id)? else {
            return Ok(false);
        };
        let mine = Expr::new("attribute_not_exists(#pk) OR #id = :id")
            .value("id", Value::S(id.to_string()));
        let marker_write = if leaves {
            Write::Delete {
                pk: ACTIVE.into(),
                sk: marker(&current.secret),
                cond: Some(mine),
            }
        } else {
            let mut m = key(ACTIVE, &marker(&current.secret));
            m.insert("id".into(), Value::S(id.to_string()));
            Write::Put {
                item: m,
                cond: Some(mine),
            }
        };
        match self
            .transact(vec![write, marker_write])
            .map_err(dynamo_error(self, "update a rotation"))?
        {
            Ok(()) => Ok(true),
            Err(_) => Ok(false),
        }
    }

    fn note_rotation(
        &self,
        id: &str,
        step: &str,
        outcome: EventOutcome,
        message: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let written = self
            .write(Write::Update {
                pk: PK.into(),
                sk: id.to_string(),
                update: Expr::new("SET #events = list_append(#events, :ev)").value(
                    "ev",
                    Value::L(vec![event_value(now, step, outcome, message)]),
                ),
                cond: Some(Expr::new("attribute_exists(#pk)")),
            })
            .map_err(dynamo_error(self, "note a rotation event"))?;
        if written {
            Ok(())
        } else {
            Err(corrupt(
                self,
                "note a rotation event",
                PK,
                id,
                "no such rotation",
            ))
        }
    }

    fn open_incident_of(&self, secret: &str) -> Result<Option<String>, StoreError> {
        let Some(m) = self
            .get(ACTIVE, &format!("incident#{secret}"))
            .map_err(dynamo_error(self, "read open incidents"))?
        else {
            return Ok(None);
        };
        Ok(Some(
            Fields::of(self, "read open incidents", &m)
                .s("id")?
                .to_string(),
        ))
    }
}

/// The item of rotation `r` with its timeline.
fn rotation_item(r: &Rotation, evs: &[Event]) -> Item {
    let mut item = key(PK, &r.id);
    for (k, v) in [
        ("secret", Value::S(r.secret.clone())),
        ("trigger", Value::S(r.trigger.as_str().to_string())),
        ("token", Value::S(r.token.clone())),
        ("step", Value::S(r.step.as_str().to_string())),
        ("state", Value::S(r.state.as_str().to_string())),
        ("requested_at", Value::N(r.requested_at)),
        ("updated_at", Value::N(r.updated_at)),
        ("attempts", Value::N(i64::from(r.attempts))),
        ("error", crate::aws::dynamodb::opt_s(r.error.as_deref())),
        ("detail", Value::S(detail_json(&r.detail))),
        (
            "events",
            Value::L(
                evs.iter()
                    .map(|e| event_value(e.at, &e.step, e.outcome, e.message.as_deref()))
                    .collect(),
            ),
        ),
    ] {
        item.insert(k.to_string(), v);
    }
    item
}

/// Copies every rotation of the SQLite journal, with its timeline and its active marker, to
/// table `t` (`migrate-store`); returns how many rotations.
pub fn copy_from(store: &Store, t: &DynamoTable) -> Result<usize, StoreError> {
    let all = store.recent_rotations(None, u32::MAX)?;
    let mut items = Vec::with_capacity(all.len());
    for r in &all {
        let evs = store.rotation_events(&r.id)?;
        items.push(rotation_item(r, &evs));
        if r.state.is_active() {
            let mut m = key(ACTIVE, &marker(&r.secret));
            m.insert("id".into(), Value::S(r.id.clone()));
            items.push(m);
        }
    }
    t.batch_put(items)
        .map_err(dynamo_error(t, "copy the rotation journal"))?;
    Ok(all.len())
}
