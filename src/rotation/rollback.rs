//! Rollback (SPEC §6): moves AWSCURRENT back to the AWSPREVIOUS version.
//!
//! Refused while a compromise incident on the secret is open (unless forced) and while a
//! rotation of it is running; a rotation waiting in grace is cancelled (state `rolled_back`,
//! its finalize dropped from the finalizer's queue) and the rollback is journaled and counted.
//!
//! It must never import the HTTP server, the CLI or the incident workflow (it only reads the
//! journal's record of open incidents).

use serde::Serialize;
use tracing::warn;

use crate::aws::{AWSCURRENT, AWSPREVIOUS, AwsError, SecretsWriteApi};
use crate::domain::RotationResult;
use crate::store::StoreError;

use super::engine::{RotationCore, lock, now_s};
use super::journal::{self, EventOutcome, ROLLBACK, State, Trigger};
use crate::rotation::journal::JournalStore;

/// Why a rollback was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Not in the inventory.
    #[error("unknown secret {0:?}: not in the inventory")]
    UnknownSecret(String),
    /// A compromise incident is open and `force` was not given.
    #[error(
        "a compromise incident on {secret} is open ({incident}): rolling back would restore a compromised value; pass force to do it anyway"
    )]
    IncidentOpen {
        /// The secret.
        secret: String,
        /// The incident id.
        incident: String,
    },
    /// A rotation is between create and finish.
    #[error("rotation {0} of this secret is running; wait for it to finish or fail")]
    Running(String),
    /// No AWSPREVIOUS version.
    #[error("{0} has no AWSPREVIOUS version to roll back to")]
    NothingToRollBack(String),
    /// AWS refused.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The journal could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The secret label.
    pub secret: String,
    /// The version that was AWSCURRENT (now AWSPREVIOUS).
    pub from_version: String,
    /// The version that is AWSCURRENT now.
    pub to_version: String,
    /// The rotation whose finalize was cancelled, if one was in grace.
    pub rotation_id: Option<String>,
    /// Always `rolled_back`.
    pub result: RotationResult,
}

impl<A: SecretsWriteApi> RotationCore<A> {
    /// Moves AWSCURRENT back to the AWSPREVIOUS version (SPEC §6). Refused while a compromise
    /// incident on the secret is open unless `force`, and while a rotation is running; a
    /// rotation waiting for finalize is cancelled.
    pub async fn rollback(
        &self,
        secret: &str,
        force: bool,
    ) -> Result<RollbackReport, RollbackError> {
        let spec = self
            .find_secret(secret)
            .ok_or_else(|| RollbackError::UnknownSecret(secret.to_string()))?;
        if let Some(incident) = self.store.open_incident_of(&spec.name)? {
            if !force {
                return Err(RollbackError::IncidentOpen {
                    secret: spec.name.clone(),
                    incident,
                });
            }
            warn!(secret = %spec.name, %incident, "Rolling back despite an open compromise incident (forced).");
        }
        let last = self.store.recent_rotations(Some(&spec.name), 1)?.pop();
        if let Some(r) = last.as_ref().filter(|r| r.state == State::Running) {
            return Err(RollbackError::Running(r.id.clone()));
        }
        let st = self.api.describe(&spec.id).await?;
        let current = st
            .version_with(AWSCURRENT)
            .ok_or_else(|| RollbackError::NothingToRollBack(spec.name.clone()))?
            .to_string();
        let previous = st
            .version_with(AWSPREVIOUS)
            .filter(|p| *p != current)
            .ok_or_else(|| RollbackError::NothingToRollBack(spec.name.clone()))?
            .to_string();
        self.api
            .update_stage(&spec.id, AWSCURRENT, Some(&previous), Some(&current))
            .await?;
        let st = self.api.describe(&spec.id).await?;
        if !st.has(&current, AWSPREVIOUS) {
            self.api
                .update_stage(&spec.id, AWSPREVIOUS, Some(&current), Some(&previous))
                .await?;
        }
        let now = now_s();
        let mut cancelled = None;
        let trigger = last.as_ref().map_or(Trigger::Manual, |r| r.trigger);
        if let Some(r) = &last {
            let msg = format!("AWSCURRENT moved back from version {current} to {previous}");
            if r.state == State::Grace {
                self.store.update_rotation(
                    &r.id,
                    &journal::Update {
                        step: r.step,
                        state: State::RolledBack,
                        attempts: 0,
                        error: None,
                        detail: &r.detail,
                        event: (ROLLBACK, EventOutcome::Ok, Some(&msg)),
                    },
                    now,
                )?;
                lock(&self.finalize_due).retain(|(_, id)| id != &r.id);
                cancelled = Some(r.id.clone());
            } else {
                self.store
                    .note_rotation(&r.id, ROLLBACK, EventOutcome::Ok, Some(&msg), now)?;
            }
            if let Ok(Some(r)) = self.store.rotation(&r.id) {
                self.publish(&r);
            }
        }
        self.count(&spec.name, trigger, RotationResult::RolledBack);
        warn!(secret = %spec.name, from = %current, to = %previous, forced = force, "Rolled back: AWSCURRENT is the previous version again.");
        Ok(RollbackReport {
            secret: spec.name.clone(),
            from_version: current,
            to_version: previous,
            rotation_id: cancelled,
            result: RotationResult::RolledBack,
        })
    }
}
