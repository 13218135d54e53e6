//! Rollback (SPEC §6): moves AWSCURRENT back to the AWSPREVIOUS version.
//!
//! Refused while a rotation of the secret is running. Refused unless forced ([`Refusal`], decided
//! by the pure [`refusal`]) while a compromise incident on the secret is open, when the target
//! version was replaced by a compromise rotation (it holds a leaked value), when the target's
//! credential was finalized away (a NOLOGIN user, a removed password), and when AWSCURRENT is
//! not the latest rotation's version (after a failed rotation, AWSPREVIOUS is the value before
//! the last good one). A forced rollback journals what it overrode. A rotation waiting in grace
//! is cancelled (state `rolled_back`, its finalize dropped from the finalizer's queue) and the
//! rollback is journaled and counted.
//!
//! It must never import the HTTP server, the CLI or the incident workflow (it only reads the
//! journal's record of open incidents).

use serde::Serialize;
use tracing::{error, info, warn};

use crate::aws::{AWSCURRENT, AWSPREVIOUS, AwsError, SecretsWriteApi, VersionSelector};
use crate::config::{HookStage, SecretSpec};
use crate::domain::{RotationResult, Strategy};
use crate::store::StoreError;

use super::engine::{RotationCore, lock, now_s};
use super::hooks::{self, HookEnv};
use super::journal::{self, EventOutcome, ROLLBACK, ROLLBACK_HOOK, Rotation, State, Trigger};
use super::strategy;
use super::verify::CheckFailure;
use crate::reminder::{LedgerStore, NoticeKind, RotationNotice, notice_key, render_notice};

/// `rolled_back_by` of a rollback an operator asked for.
pub const ROLLED_BACK_BY_OPERATOR: &str = "operator";
/// `rolled_back_by` of an automatic rollback after a failing check.
pub const ROLLED_BACK_BY_VERIFY: &str = "verify";
use crate::rotation::journal::JournalStore;

/// Why a rollback was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Not in the inventory.
    #[error("unknown secret {0:?}: not in the inventory")]
    UnknownSecret(String),
    /// Rolling back would restore a leaked or dead value, or undo a good rotation.
    #[error("rollback of {secret} refused: {reason}; pass force to do it anyway")]
    Refused {
        /// The secret.
        secret: String,
        /// Why.
        reason: Refusal,
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

/// Why a rollback would do harm (each overridable with force, and then journaled).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A compromise incident on the secret is open.
    #[error(
        "a compromise incident on the secret is open ({incident}): rolling back would restore a compromised value"
    )]
    IncidentOpen {
        /// The incident id.
        incident: String,
    },
    /// The target version is the one a compromise rotation replaced.
    #[error(
        "version {version} was replaced by compromise rotation {rotation}: it holds a leaked value"
    )]
    ReplacedByCompromise {
        /// The target version.
        version: String,
        /// The compromise rotation.
        rotation: String,
    },
    /// The target version's credential no longer works on the backing system.
    #[error(
        "the credential of version {version} was finalized away by rotation {rotation} ({strategy} finalize): it no longer works"
    )]
    FinalizedAway {
        /// The target version.
        version: String,
        /// The rotation whose finalize disabled it.
        rotation: String,
        /// Its strategy.
        strategy: String,
    },
    /// AWSCURRENT is not the version the latest rotation made current.
    #[error(
        "AWSCURRENT ({current}) is not the latest rotation's version ({latest}); rolling back would undo an earlier rotation"
    )]
    NotLatest {
        /// The version that is AWSCURRENT.
        current: String,
        /// The latest rotation, its state and version, or that there is none.
        latest: String,
    },
}

/// Whether rolling back from `current` to `previous` would do harm, given the secret's rotations
/// (newest first) and its open incident. Pure: the journal facts are parameters.
pub fn refusal(
    current: &str,
    previous: &str,
    rotations: &[Rotation],
    open_incident: Option<&str>,
) -> Option<Refusal> {
    if let Some(incident) = open_incident {
        return Some(Refusal::IncidentOpen {
            incident: incident.to_string(),
        });
    }
    for r in rotations
        .iter()
        .filter(|r| r.trigger == Trigger::Compromise)
    {
        let strategy = Strategy::from_word(&r.detail.strategy);
        let leaked = r.detail.previous_version_id.as_deref() == Some(previous)
            // A two-key rotation's own version still carries the leaked key as `previous`.
            || (strategy.is_some_and(Strategy::keeps_two_keys) && r.token == previous);
        if leaked && r.state != State::Failed {
            return Some(Refusal::ReplacedByCompromise {
                version: previous.to_string(),
                rotation: r.id.clone(),
            });
        }
    }
    let Some(latest) = rotations.first() else {
        return Some(Refusal::NotLatest {
            current: current.to_string(),
            latest: "there is none: keywarden did not write it".to_string(),
        });
    };
    let ours = current == latest.token || current == latest.finalize_token();
    if !ours || !matches!(latest.state, State::Grace | State::Done) {
        return Some(Refusal::NotLatest {
            current: current.to_string(),
            latest: format!(
                "rotation {} is {}, version {}",
                latest.id,
                latest.state.as_str(),
                latest.token
            ),
        });
    }
    let strategy = Strategy::from_word(&latest.detail.strategy);
    if latest.state == State::Done
        && latest.detail.previous_version_id.as_deref() == Some(previous)
        && strategy.is_some_and(Strategy::old_credential_dies_at_finalize)
    {
        return Some(Refusal::FinalizedAway {
            version: previous.to_string(),
            rotation: latest.id.clone(),
            strategy: latest.detail.strategy.clone(),
        });
    }
    None
}

/// The result of one `on = "rollback"` hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookOutcome {
    /// The hook's argv, joined by spaces.
    pub command: String,
    /// Whether it exited 0 within its timeout.
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// The `on = "rollback"` hooks, in order, each with its result (all run, whatever the
    /// others gave).
    pub hooks: Vec<HookOutcome>,
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
        let running = |rotations: &[Rotation]| match rotations.first() {
            Some(r) if r.state == State::Running => Err(RollbackError::Running(r.id.clone())),
            _ => Ok(()),
        };
        running(&self.store.recent_rotations(Some(&spec.name), 1)?)?;
        // Serialized with the steps: a finalize that runs now ends before this goes on, and
        // what it left is what this reads.
        let held = self.secret_lock(&spec.name);
        let _held = held.lock().await;
        let rotations = self.store.recent_rotations(Some(&spec.name), 100)?;
        running(&rotations)?;
        let last = rotations.first().cloned();
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
        let incident = self.store.open_incident_of(&spec.name)?;
        let overridden = refusal(&current, &previous, &rotations, incident.as_deref());
        if let Some(reason) = &overridden {
            if !force {
                return Err(RollbackError::Refused {
                    secret: spec.name.clone(),
                    reason: reason.clone(),
                });
            }
            warn!(secret = %spec.name, reason = %reason, "Rolling back although it was refused (forced).");
        }
        self.move_back(&spec.id, &current, &previous).await?;
        let now = now_s();
        let mut cancelled = None;
        let trigger = last.as_ref().map_or(Trigger::Manual, |r| r.trigger);
        if let Some(r) = &last {
            let mut msg = format!("AWSCURRENT moved back from version {current} to {previous}");
            if let Some(reason) = &overridden {
                msg.push_str(&format!("; forced past the refusal: {reason}"));
            }
            let mut detail = r.detail.clone();
            detail.rolled_back_by = Some(ROLLED_BACK_BY_OPERATOR.to_string());
            if r.state == State::Grace && self.mark_rolled_back(r, &detail, &msg, now)? {
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
        let hooks = self
            .rollback_hooks(spec, last.as_ref(), &previous, &current)
            .await;
        Ok(RollbackReport {
            secret: spec.name.clone(),
            from_version: current,
            to_version: previous,
            rotation_id: cancelled,
            result: RotationResult::RolledBack,
            hooks,
        })
    }

    /// AWSCURRENT from `current` back to `previous`, and AWSPREVIOUS onto `current`.
    async fn move_back(&self, id: &str, current: &str, previous: &str) -> Result<(), AwsError> {
        self.api
            .update_stage(id, AWSCURRENT, Some(previous), Some(current))
            .await?;
        let st = self.api.describe(id).await?;
        if !st.has(current, AWSPREVIOUS) {
            self.api
                .update_stage(id, AWSPREVIOUS, Some(current), Some(previous))
                .await?;
        }
        Ok(())
    }

    /// The automatic rollback of a guarded rotation (SPEC §12) whose check `failure` failed
    /// `[verify] failures` times in a row during its watch: the same path as
    /// [`RotationCore::rollback`] (the secret's lock, the [`refusal`] rules, the stage moves,
    /// the rollback hooks, the count), for this rotation only and only while it is in grace;
    /// recorded with `rolled_back_by = "verify"`, the check and its last value, plus one notice
    /// on the reminders topic. Returns false (nothing moved) when the rotation left its grace or
    /// a refusal holds (an incident opened meanwhile, AWSCURRENT moved elsewhere).
    pub(super) async fn auto_rollback(
        &self,
        id: &str,
        failure: &CheckFailure,
    ) -> Result<bool, RollbackError> {
        let Some(first) = self.store.rotation(id)? else {
            return Ok(false);
        };
        let Some(spec) = self.config.secrets.iter().find(|s| s.name == first.secret) else {
            return Ok(false);
        };
        let held = self.secret_lock(&spec.name);
        let _held = held.lock().await;
        let rotations = self.store.recent_rotations(Some(&spec.name), 100)?;
        let Some(rot) = rotations.iter().find(|r| r.id == id).cloned() else {
            return Ok(false);
        };
        if rot.state != State::Grace || rot.trigger == Trigger::Compromise {
            return Ok(false);
        }
        let st = self.api.describe(&spec.id).await?;
        let current = st
            .version_with(AWSCURRENT)
            .ok_or_else(|| RollbackError::NothingToRollBack(spec.name.clone()))?
            .to_string();
        let previous = rot
            .detail
            .previous_version_id
            .clone()
            .or_else(|| st.version_with(AWSPREVIOUS).map(str::to_string))
            .filter(|p| *p != current)
            .ok_or_else(|| RollbackError::NothingToRollBack(spec.name.clone()))?;
        let incident = self.store.open_incident_of(&spec.name)?;
        if let Some(reason) = refusal(&current, &previous, &rotations, incident.as_deref()) {
            warn!(secret = %spec.name, rotation = id, check = %failure.check, reason = %reason, "A verify check keeps failing but the automatic rollback is refused.");
            return Ok(false);
        }
        self.move_back(&spec.id, &current, &previous).await?;
        let now = now_s();
        let mut detail = rot.detail.clone();
        detail.rolled_back_by = Some(ROLLED_BACK_BY_VERIFY.to_string());
        detail.rolled_back_check = Some(failure.clone());
        let n = detail
            .verify
            .as_ref()
            .and_then(|v| v.consecutive.get(&failure.check).copied())
            .unwrap_or(0);
        let msg = format!(
            "rolled back automatically: check {} failed {n} times in a row (last value: {}); AWSCURRENT moved back from version {current} to {previous}",
            failure.check, failure.value
        );
        self.mark_rolled_back(&rot, &detail, &msg, now)?;
        if let Ok(Some(r)) = self.store.rotation(&rot.id) {
            self.publish(&r);
        }
        self.count(&spec.name, rot.trigger, RotationResult::RolledBack);
        error!(secret = %spec.name, rotation = %rot.id, check = %failure.check, value = %failure.value, from = %current, to = %previous, "Rolled back automatically: a verify check failed; AWSCURRENT is the previous version again.");
        self.notice_auto_rollback(spec, &rot, failure, now);
        self.rollback_hooks(spec, Some(&rot), &previous, &current)
            .await;
        Ok(true)
    }

    /// Journals `r` as `rolled_back` (compare-and-set on its state and step) with `detail` and
    /// the rollback event, and drops its finalize from the queue. False if it had moved on.
    fn mark_rolled_back(
        &self,
        r: &Rotation,
        detail: &journal::Detail,
        msg: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let applied = self.store.update_rotation(
            &r.id,
            &journal::Update {
                from: (r.state, r.step),
                step: r.step,
                state: State::RolledBack,
                attempts: 0,
                error: None,
                detail,
                event: (ROLLBACK, EventOutcome::Ok, Some(msg)),
            },
            now,
        )?;
        if applied {
            lock(&self.finalize_due).retain(|(_, q)| q != &r.id);
        }
        Ok(applied)
    }

    /// Records the one notice of an automatic rollback in the reminder ledger (the reminder
    /// task publishes it on the reminders topic). Its key is the rotation's end notice's, so a
    /// scheduled rotation gets this notice instead of a second one.
    fn notice_auto_rollback(
        &self,
        spec: &SecretSpec,
        rot: &Rotation,
        failure: &CheckFailure,
        now: i64,
    ) {
        if self.config.reminders.is_none() {
            return;
        }
        let Some(status) = self.view.read().secrets.get(&spec.name).cloned() else {
            warn!(secret = %spec.name, "The secret is not in the view yet: no rollback notice.");
            return;
        };
        let key = notice_key(&spec.name, rot.requested_at, NoticeKind::Ended);
        let n = RotationNotice {
            kind: NoticeKind::Ended,
            rotation_id: &rot.id,
            requested_at: rot.requested_at,
            at: now,
            result: Some(RotationResult::RolledBack.as_str()),
            step: rot.step.as_str(),
            error: None,
            planned: None,
            trigger: rot.trigger.as_str(),
            verify: Some((&failure.check, &failure.value)),
        };
        let message = render_notice(&n, &status, Some(spec));
        match self.store.record_intents(&[(key, message)], now) {
            Ok(_) => {
                info!(secret = %spec.name, rotation = %rot.id, "Automatic rollback notice recorded.")
            }
            Err(e) => {
                error!(secret = %spec.name, rotation = %rot.id, error = %e, "Cannot record the automatic rollback notice.")
            }
        }
    }

    /// Runs every `on = "rollback"` hook after AWSCURRENT moved back to `now_current`; each
    /// result is journaled on `last` (when there is one), logged and, when it failed, counted.
    async fn rollback_hooks(
        &self,
        spec: &SecretSpec,
        last: Option<&Rotation>,
        now_current: &str,
        rolled_back_from: &str,
    ) -> Vec<HookOutcome> {
        let hooks: Vec<_> = spec
            .hooks
            .iter()
            .filter(|h| h.on == HookStage::Rollback)
            .collect();
        if hooks.is_empty() {
            return Vec::new();
        }
        // Both values may appear in hook output: redact them.
        let mut fragments = Vec::new();
        for v in [now_current, rolled_back_from] {
            match self
                .api
                .get_value(
                    &spec.id,
                    VersionSelector::IdAndStage(v, stage_of(v, now_current)),
                )
                .await
            {
                Ok(got) => fragments.extend(strategy::redaction_fragments(&got.value)),
                Err(e) => {
                    warn!(secret = %spec.name, version = v, error = %e, "Cannot read a value to redact from rollback hook output.")
                }
            }
        }
        let env = HookEnv {
            secret: &spec.name,
            secret_id: &spec.id,
            version_id: now_current,
            previous_version_id: Some(rolled_back_from),
            step: ROLLBACK,
            trigger: last.map_or("manual", |r| r.trigger.as_str()),
            rotation_id: last.map_or("", |r| r.id.as_str()),
        };
        let n = hooks.len();
        let mut out = Vec::with_capacity(n);
        for (i, hook) in hooks.into_iter().enumerate() {
            let result = hooks::run_one(hook, env, self.hide_env(), &fragments).await;
            let command = hook.command.join(" ");
            let (outcome, msg) = match &result {
                Ok(()) => (
                    EventOutcome::Ok,
                    format!("rollback hook {}/{n} `{command}` passed", i + 1),
                ),
                Err(e) => (
                    EventOutcome::Failed,
                    format!("rollback hook {}/{n} failed: {e}", i + 1),
                ),
            };
            if result.is_err() {
                self.metrics.count_rollback_hook_failure(&spec.name);
                warn!(secret = %spec.name, hook = i + 1, error = %msg, "A rollback hook failed; AWSCURRENT stays where the rollback put it.");
            } else {
                info!(secret = %spec.name, hook = i + 1, "Rollback hook passed.");
            }
            if let Some(r) = last
                && let Err(e) =
                    self.store
                        .note_rotation(&r.id, ROLLBACK_HOOK, outcome, Some(&msg), now_s())
            {
                warn!(secret = %spec.name, error = %e, "Cannot journal a rollback hook's result.");
            }
            out.push(HookOutcome {
                command,
                ok: result.is_ok(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        out
    }
}

/// The stage a version carries right after a rollback: the target is AWSCURRENT, the version
/// rolled back from is AWSPREVIOUS.
fn stage_of<'a>(version: &str, now_current: &str) -> &'a str {
    if version == now_current {
        AWSCURRENT
    } else {
        AWSPREVIOUS
    }
}
