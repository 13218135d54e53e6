//! The finalizer: runs each rotation's finalize once its grace has passed.
//!
//! Rotations waiting in `grace` sit in a `BTreeSet<(due, id)>` with a `Notify` (the mini-redis
//! purge-task shape); [`RotationCore::run_finalizer`] hands each due one back to the engine,
//! which runs finalize. [`RotationCore::finalize_now`] ends a grace early (a compromise).
//!
//! It must never import the HTTP server, the CLI, the incident workflow or the scheduler.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::SecretsWriteApi;
use crate::store::StoreError;

use super::engine::{RotationCore, lock, now_s};
use super::journal::{self, EventOutcome, State, Step};
use crate::rotation::journal::JournalStore;

impl<A: SecretsWriteApi> RotationCore<A> {
    /// Ends the grace of a rotation now: finalize runs at once, in compromise mode (an incident
    /// on a secret whose last rotation still accepts the previous key: the old credential's
    /// live sessions are cut too). Idempotent: a grace already ended early is not journaled
    /// again. Returns false if it is not in grace.
    pub fn finalize_now(self: &Arc<Self>, id: &str) -> Result<bool, StoreError> {
        let Some(r) = self.store.rotation(id)? else {
            return Ok(false);
        };
        if r.state != State::Grace {
            return Ok(false);
        }
        let now = now_s();
        if r.detail.compromise_finalize && r.detail.finalize_after.is_some_and(|t| t <= now) {
            // Already ended early: nothing to journal again, only make sure a task drives it.
            self.spawn_drive(id.to_string());
            return Ok(true);
        }
        let mut detail = r.detail.clone();
        detail.finalize_after = Some(now);
        detail.compromise_finalize = true;
        let applied = self.store.update_rotation(
            id,
            &journal::Update {
                from: (r.state, r.step),
                step: r.step,
                state: r.state,
                attempts: r.attempts,
                error: r.error.as_deref(),
                detail: &detail,
                event: (
                    Step::Finalize.as_str(),
                    EventOutcome::Requested,
                    Some("grace ended early"),
                ),
            },
            now,
        )?;
        if !applied {
            // It left the grace meanwhile (finalized, rolled back).
            return Ok(false);
        }
        lock(&self.finalize_due).retain(|(_, q)| q != id);
        self.spawn_drive(id.to_string());
        Ok(true)
    }

    /// Runs finalizations when their grace has passed, until shutdown.
    pub async fn run_finalizer(self: Arc<Self>) {
        let stop = self.shutdown.clone();
        loop {
            let now = now_s();
            let mut due = Vec::new();
            let next = {
                let mut q = lock(&self.finalize_due);
                while let Some((t, id)) = q.first().cloned() {
                    if t > now {
                        break;
                    }
                    q.pop_first();
                    due.push(id);
                }
                q.first().map(|(t, _)| *t)
            };
            for id in due {
                self.spawn_drive(id);
            }
            let sleep = match next {
                Some(t) => Duration::from_secs((t - now).max(1) as u64),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.finalize_wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
