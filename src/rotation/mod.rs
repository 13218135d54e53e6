//! The rotation core (SPEC §6): one engine for scheduled, manual and compromise rotations.
//!
//! A request is journaled (state `running`, step `create`) before anyone is told it was
//! accepted; a task per rotation then drives the steps create, set, test and finish
//! ([`protocol`]) with the secret's [`strategy::RotationStrategy`] and [`hooks`], recording each
//! completed step durably. A failed step is retried with exponential backoff up to
//! [`MAX_ATTEMPTS`]; then the rotation is `failed`, AWSPENDING is taken off its version (AWSCURRENT
//! was never touched before finish), and the failure is counted and shown. After finish the
//! rotation waits in `grace` and the finalizer ([`RotationCore::run_finalizer`], a
//! `BTreeSet<(due, id)>` plus `Notify`, the mini-redis purge-task shape) runs finalize when the
//! grace has passed; a compromise rotation has no grace, so finalize follows finish at once.
//!
//! At start [`RotationCore::resume`] restarts every `running` rotation from its journaled step
//! and queues every `grace` one; because every step first reads the version stages and the
//! ClientRequestToken is fixed per rotation, resuming never writes a second version.

pub mod failpoint;
pub mod hooks;
pub mod journal;

pub mod protocol;

pub mod scheduled;
pub mod strategy;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aws::{
    AwsError, SecretValue, SecretsWriteApi, VersionSelector, AWSCURRENT, AWSPREVIOUS,
};
use crate::config::{Config, HookStage, SecretSpec};
use crate::domain::view::{RotationView, SharedView};
use crate::domain::RotationResult;
use crate::store::{Store, StoreError};
use crate::telemetry::{Metrics, TriggerLabel};

use hooks::HookEnv;
use journal::{Detail, Event, EventOutcome, Rotation, State, Step, Trigger, ROLLBACK};
use protocol::{FinalizeState, LambdaState, Retry, StepError};
use strategy::{Mode, Refused, RotationStrategy, StepContext};

/// Attempts of one step before the rotation is marked failed.
pub const MAX_ATTEMPTS: u32 = 5;
/// Attempts of one step when it keeps failing for a transient AWS reason (network, timeout,
/// throttling): about ten minutes with the capped backoff, so a short outage does not fail an
/// accepted rotation.
pub const MAX_TRANSIENT_ATTEMPTS: u32 = 25;
/// Backoff before the second attempt; doubles each time, capped at [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a Lambda rotation is looked at.
const LAMBDA_POLL: Duration = Duration::from_secs(2);
/// How often the scheduler looks for due secrets.
const SCHEDULER_EVERY: Duration = Duration::from_secs(5);

/// The engine on the real Secrets Manager adapter.
pub type Engine = RotationCore<crate::aws::secretsmanager::SecretsManager>;

/// Why a rotation request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not in the inventory.
    #[error("unknown secret {0:?}: not in the inventory")]
    UnknownSecret(String),
    /// The strategy does not rotate.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A rotation of the secret is active.
    #[error("a rotation of {} is already {}: {}", .0.secret, .0.state.as_str(), .0.id)]
    Busy(Box<Rotation>),
    /// The journal could not be written: nothing was accepted.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No rotation id could be drawn.
    #[error("cannot draw a rotation id from the OS random number generator: {0}")]
    Random(String),
}

/// Why a rollback was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Not in the inventory.
    #[error("unknown secret {0:?}: not in the inventory")]
    UnknownSecret(String),
    /// A compromise incident is open and `force` was not given.
    #[error("a compromise incident on {secret} is open ({incident}): rolling back would restore a compromised value; pass force to do it anyway")]
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

/// Options of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    /// Overrides `rotation.grace` (a compromise passes zero).
    pub grace: Option<Duration>,
}

/// The rotation core.
pub struct RotationCore<A> {
    /// Secrets Manager.
    api: A,
    /// The journal.
    store: Store,
    /// The inventory and hooks.
    config: Arc<Config>,
    /// Where `/secrets` reads rotation state.
    view: SharedView,
    /// Rotation metrics.
    metrics: Arc<Metrics>,
    /// An environment variable hooks must not inherit (the admin token's).
    hide_env: Option<String>,
    /// Finalizations waiting for their grace: (epoch second, rotation id).
    finalize_due: Mutex<BTreeSet<(i64, String)>>,
    /// Wakes the finalizer when `finalize_due` changes.
    finalize_wake: Notify,
    /// Rotation ids that have a task driving them.
    driving: Mutex<HashSet<String>>,
    /// When each rotation started in this process (duration histogram).
    started: Mutex<HashMap<String, Instant>>,
    /// Rotations whose duration this process already observed (when AWSCURRENT moved).
    observed: Mutex<HashSet<String>>,
    /// The daemon's shutdown signal.
    shutdown: CancellationToken,
}

/// Removes a rotation from `driving` when its task ends, however it ends.
struct Driving<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_s() -> i64 {
    Utc::now().timestamp()
}

/// What a completed step reports for the journal.
struct StepOutcome {
    /// `ok` or `skipped`.
    outcome: EventOutcome,
    /// A sentence for the timeline.
    message: String,
    /// The version that was AWSCURRENT before, if create learned it.
    previous_version_id: Option<String>,
    /// Finalize found AWSCURRENT on another version: the rotation was superseded.
    superseded: bool,
}

impl StepOutcome {
    fn ok(message: impl Into<String>) -> StepOutcome {
        StepOutcome {
            outcome: EventOutcome::Ok,
            message: message.into(),
            previous_version_id: None,
            superseded: false,
        }
    }

    fn skipped(message: impl Into<String>) -> StepOutcome {
        StepOutcome {
            outcome: EventOutcome::Skipped,
            ..StepOutcome::ok(message)
        }
    }
}

/// How many attempts a step gets for this error.
fn attempt_limit(e: &StepError) -> u32 {
    match e.retry() {
        Retry::Transient => MAX_TRANSIENT_ATTEMPTS,
        Retry::Limited => MAX_ATTEMPTS,
        Retry::Never => 1,
    }
}

impl<A: SecretsWriteApi> RotationCore<A> {
    /// A core; call [`RotationCore::resume`] and spawn the finalizer and scheduler next.
    pub fn new(
        api: A,
        store: Store,
        config: Arc<Config>,
        view: SharedView,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let hide_env = match &config.server.admin_token {
            Some(crate::config::TokenSource::Env(name)) => Some(name.clone()),
            _ => None,
        };
        Arc::new(RotationCore {
            api,
            store,
            config,
            view,
            metrics,
            hide_env,
            finalize_due: Mutex::new(BTreeSet::new()),
            finalize_wake: Notify::new(),
            driving: Mutex::new(HashSet::new()),
            started: Mutex::new(HashMap::new()),
            observed: Mutex::new(HashSet::new()),
            shutdown,
        })
    }

    /// The inventory entry named `name` (inventory name, or its configured Secrets Manager id).
    pub fn find_secret(&self, name: &str) -> Option<&SecretSpec> {
        self.config
            .secrets
            .iter()
            .find(|s| s.name == name)
            .or_else(|| self.config.secrets.iter().find(|s| s.id == name))
            .or_else(|| {
                // The Secrets Manager name of an inventory secret configured by ARN.
                let view = self.view.read();
                let label = view
                    .secrets
                    .values()
                    .find(|st| st.arn.as_deref().is_some_and(|a| arn_names(a, name)))
                    .map(|st| st.name.clone())?;
                drop(view);
                self.config.secrets.iter().find(|s| s.name == label)
            })
    }

    /// Accepts a rotation: journaled durably before this returns, then driven by a task.
    pub fn request(
        self: &Arc<Self>,
        secret: &str,
        trigger: Trigger,
        opts: RequestOptions,
    ) -> Result<Rotation, RequestError> {
        let spec = self
            .find_secret(secret)
            .ok_or_else(|| RequestError::UnknownSecret(secret.to_string()))?;
        strategy::for_spec(&spec.name, &spec.rotation)?;
        let id = journal::new_id().map_err(|e| RequestError::Random(e.to_string()))?;
        let grace = opts.grace.unwrap_or(spec.rotation.grace);
        let detail = Detail {
            secret_id: spec.id.clone(),
            strategy: spec.rotation.strategy.as_str().to_string(),
            grace_seconds: grace.as_secs(),
            requested_at_ms: Utc::now().timestamp_millis(),
            ..Detail::default()
        };
        let rot = match journal::insert(&self.store, &id, &spec.name, trigger, &detail, now_s())? {
            Ok(r) => r,
            Err(active) => return Err(RequestError::Busy(Box::new(active))),
        };
        lock(&self.started).insert(rot.id.clone(), Instant::now());
        info!(secret = %rot.secret, rotation = %rot.id, trigger = trigger.as_str(), strategy = %detail.strategy, "Rotation accepted and journaled.");
        failpoint::hit("accepted");
        self.publish(&rot);
        self.spawn_drive(rot.id.clone());
        Ok(rot)
    }

    /// A rotation and its timeline.
    pub fn status(&self, id: &str) -> Result<Option<(Rotation, Vec<Event>)>, StoreError> {
        match journal::get(&self.store, id)? {
            Some(r) => Ok(Some((r, journal::events(&self.store, id)?))),
            None => Ok(None),
        }
    }

    /// The most recent rotations, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<Rotation>, StoreError> {
        journal::recent(&self.store, None, limit)
    }

    /// Ends the grace of a rotation now: finalize runs at once (a compromise of a secret whose
    /// last rotation still accepts the previous key). Returns false if it is not in grace.
    pub fn finalize_now(self: &Arc<Self>, id: &str) -> Result<bool, StoreError> {
        let Some(r) = journal::get(&self.store, id)? else {
            return Ok(false);
        };
        if r.state != State::Grace {
            return Ok(false);
        }
        let now = now_s();
        let mut detail = r.detail.clone();
        detail.finalize_after = Some(now);
        journal::update(
            &self.store,
            id,
            &journal::Update {
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
        lock(&self.finalize_due).retain(|(_, q)| q != id);
        self.spawn_drive(id.to_string());
        Ok(true)
    }

    /// Resumes every unfinished rotation and queues every pending finalize. Returns how many.
    pub fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        for spec in &self.config.secrets {
            if let Some(r) = journal::recent(&self.store, Some(&spec.name), 1)?.first() {
                self.publish(r);
            }
        }
        let unfinished = journal::in_states(&self.store, &[State::Running, State::Grace])?;
        for r in &unfinished {
            info!(secret = %r.secret, rotation = %r.id, step = r.step.as_str(), state = r.state.as_str(), "Resuming a journaled rotation.");
            self.spawn_drive(r.id.clone());
        }
        Ok(unfinished.len())
    }

    fn spawn_drive(self: &Arc<Self>, id: String) {
        if !lock(&self.driving).insert(id.clone()) {
            return;
        }
        let core = self.clone();
        tokio::spawn(async move {
            let _guard = Driving(&core.driving, id.clone());
            let stop = core.shutdown.clone();
            tokio::select! {
                _ = core.drive(&id) => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Writes the rotation's state to the view.
    fn publish(&self, r: &Rotation) {
        let mut view = self.view.write();
        let entry = view.rotations.entry(r.secret.clone()).or_default();
        entry.rotation_id = Some(r.id.clone());
        entry.trigger = Some(r.trigger);
        entry.state = Some(r.state);
        entry.step = Some(r.step);
        entry.requested_at = Some(r.requested_at);
        entry.updated_at = Some(r.updated_at);
        entry.finalize_after = r.detail.finalize_after.filter(|_| r.state == State::Grace);
        entry.error = r.error.clone();
    }

    fn set_in_progress(&self, secret: &str, on: bool) {
        self.metrics.set_rotation_in_progress(secret, on);
    }

    fn count(&self, secret: &str, trigger: Trigger, result: RotationResult) {
        self.metrics.count_rotation(secret, trigger, result);
    }

    /// Drives one rotation until it is done, failed, waiting for its grace, or rolled back.
    async fn drive(self: &Arc<Self>, id: &str) {
        loop {
            let rot = match journal::get(&self.store, id) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    error!(rotation = id, error = %e, "Cannot read the rotation journal; retrying in 5 s.");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            self.publish(&rot);
            match rot.state {
                State::Running => self.set_in_progress(&rot.secret, true),
                State::Grace => {
                    let due = rot.detail.finalize_after.unwrap_or(0);
                    if due > now_s() {
                        lock(&self.finalize_due).insert((due, rot.id.clone()));
                        self.finalize_wake.notify_one();
                        return;
                    }
                }
                State::Done | State::Failed | State::RolledBack => return,
            }
            let Some(spec) = self.config.secrets.iter().find(|s| s.name == rot.secret) else {
                self.fail(&rot, "the secret is no longer in the inventory")
                    .await;
                return;
            };
            let strategy = match strategy::for_spec(&spec.name, &spec.rotation) {
                Ok(s) => s,
                Err(e) => {
                    self.fail(&rot, &e.to_string()).await;
                    return;
                }
            };
            let result = self.run_step(&rot, spec, strategy.as_ref()).await;
            let now = now_s();
            match result {
                Ok(out) => {
                    if let Err(e) = self.step_done(&rot, out, now) {
                        error!(rotation = id, error = %e, "Cannot journal a completed step; retrying it in 5 s.");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
                Err(e) => {
                    let attempts = rot.attempts + 1;
                    let msg = e.to_string();
                    warn!(secret = %rot.secret, rotation = id, step = rot.step.as_str(), attempt = attempts, error = %msg, "Rotation step failed.");
                    if attempts >= attempt_limit(&e) {
                        self.fail(&rot, &msg).await;
                        return;
                    }
                    let u = journal::Update {
                        step: rot.step,
                        state: rot.state,
                        attempts,
                        error: Some(&msg),
                        detail: &rot.detail,
                        event: (rot.step.as_str(), EventOutcome::Error, Some(&msg)),
                    };
                    if let Err(e) = journal::update(&self.store, id, &u, now) {
                        error!(rotation = id, error = %e, "Cannot journal a failed attempt.");
                    }
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << (attempts - 1).min(10))
                        .min(MAX_BACKOFF);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Journals a completed step and moves to the next one.
    fn step_done(&self, rot: &Rotation, out: StepOutcome, now: i64) -> Result<(), StoreError> {
        let mut detail = rot.detail.clone();
        if out.previous_version_id.is_some() {
            detail.previous_version_id = out.previous_version_id.clone();
        }
        let (step, state) = match rot.step {
            _ if out.superseded => (rot.step, State::RolledBack),
            Step::Finish => {
                detail.finished_at = Some(now);
                detail.finalize_after = Some(now + detail.grace_seconds as i64);
                (Step::Finalize, State::Grace)
            }
            Step::Finalize | Step::Done => (Step::Done, State::Done),
            s => (s.next(), State::Running),
        };
        journal::update(
            &self.store,
            &rot.id,
            &journal::Update {
                step,
                state,
                attempts: 0,
                error: None,
                detail: &detail,
                event: (rot.step.as_str(), out.outcome, Some(&out.message)),
            },
            now,
        )?;
        info!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), outcome = out.outcome.as_str(), detail = %out.message, "Rotation step completed.");
        failpoint::hit(&format!("{}:done", rot.step.as_str()));
        if rot.step == Step::Finish {
            self.set_in_progress(&rot.secret, false);
            self.count(&rot.secret, rot.trigger, RotationResult::Success);
            // Resumed past the label move: this process has not observed it yet.
            if !lock(&self.observed).remove(&rot.id) {
                self.observe_duration(rot);
                lock(&self.observed).remove(&rot.id);
            }
            info!(secret = %rot.secret, rotation = %rot.id, finalize_after = detail.finalize_after, "Rotation finished: AWSCURRENT is the new version.");
        }
        Ok(())
    }

    /// Observes the time from the request to the new AWSCURRENT, once per process.
    fn observe_duration(&self, rot: &Rotation) {
        let seconds = match lock(&self.started).remove(&rot.id) {
            Some(t) => t.elapsed().as_secs_f64(),
            None => {
                ((Utc::now().timestamp_millis() - rot.detail.requested_at_ms).max(0) as f64)
                    / 1000.0
            }
        };
        self.metrics
            .rotation_duration
            .get_or_create(&TriggerLabel {
                trigger: rot.trigger.as_str(),
            })
            .observe(seconds);
        lock(&self.observed).insert(rot.id.clone());
        info!(secret = %rot.secret, rotation = %rot.id, seconds, "AWSCURRENT moved to the new version.");
    }

    /// Marks a rotation failed after its last attempt (or a fatal error), takes AWSPENDING off
    /// its version if it never became current, and counts it.
    async fn fail(&self, rot: &Rotation, msg: &str) {
        if rot.step < Step::Finish {
            if let Err(e) = protocol::abandon(&self.api, &rot.detail.secret_id, &rot.token).await {
                warn!(secret = %rot.secret, rotation = %rot.id, error = %e, "Could not remove AWSPENDING from the failed rotation's version.");
            }
        }
        let u = journal::Update {
            step: rot.step,
            state: State::Failed,
            attempts: rot.attempts + 1,
            error: Some(msg),
            detail: &rot.detail,
            event: (rot.step.as_str(), EventOutcome::Failed, Some(msg)),
        };
        if let Err(e) = journal::update(&self.store, &rot.id, &u, now_s()) {
            error!(rotation = %rot.id, error = %e, "Cannot journal a failed rotation.");
        }
        if rot.state == State::Running {
            self.set_in_progress(&rot.secret, false);
        }
        self.count(&rot.secret, rot.trigger, RotationResult::Failure);
        lock(&self.started).remove(&rot.id);
        lock(&self.observed).remove(&rot.id);
        error!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), error = %msg, "Rotation failed; AWSCURRENT was left as it was before this step.");
        if let Ok(Some(r)) = journal::get(&self.store, &rot.id) {
            self.publish(&r);
        }
    }

    async fn master_value(&self, spec: &SecretSpec) -> Result<Option<SecretValue>, StepError> {
        match &spec.rotation.master_secret {
            Some(m) => Ok(Some(
                self.api
                    .get_value(m, VersionSelector::Stage(AWSCURRENT))
                    .await?
                    .value,
            )),
            None => Ok(None),
        }
    }

    /// Runs the hooks of `stage`, redacting the given values from their output.
    async fn hooks(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
        stage: HookStage,
        step: &str,
        version_id: &str,
        values: &[&SecretValue],
    ) -> Result<usize, StepError> {
        if !spec.hooks.iter().any(|h| h.on == stage) {
            return Ok(0);
        }
        let fragments: Vec<String> = values
            .iter()
            .flat_map(|v| strategy::redaction_fragments(v))
            .collect();
        let env = HookEnv {
            secret: &rot.secret,
            secret_id: &rot.detail.secret_id,
            version_id,
            previous_version_id: rot.detail.previous_version_id.as_deref(),
            step,
            trigger: rot.trigger.as_str(),
            rotation_id: &rot.id,
        };
        Ok(hooks::run_stage(
            &spec.hooks,
            stage,
            env,
            self.hide_env.as_deref(),
            &fragments,
        )
        .await?)
    }

    /// Values to redact from hook output once AWSCURRENT moved: the current and previous.
    async fn current_and_previous(&self, rot: &Rotation) -> Vec<SecretValue> {
        let id = &rot.detail.secret_id;
        let mut out = Vec::new();
        for stage in [AWSCURRENT, AWSPREVIOUS] {
            if let Ok(v) = self.api.get_value(id, VersionSelector::Stage(stage)).await {
                out.push(v.value);
            }
        }
        out
    }

    async fn run_step(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
        strategy: &dyn RotationStrategy,
    ) -> Result<StepOutcome, StepError> {
        if strategy.mode() == Mode::AwsManaged {
            return self.run_lambda_step(rot, spec).await;
        }
        let id = rot.detail.secret_id.as_str();
        let token = rot.token.as_str();
        let master = self.master_value(spec).await?;
        let ctx = StepContext {
            secret: &rot.secret,
            secret_id: id,
            version_id: token,
            previous_version_id: rot.detail.previous_version_id.as_deref(),
            compromise: rot.trigger == Trigger::Compromise,
            master: master.as_ref(),
        };
        match rot.step {
            Step::Create => {
                let c = protocol::create(&self.api, id, token, strategy).await?;
                let mut out = if c.wrote {
                    StepOutcome::ok(format!("version {token} written as AWSPENDING"))
                } else {
                    StepOutcome::skipped(format!("version {token} already exists"))
                };
                out.previous_version_id = c.previous_version_id;
                Ok(out)
            }
            Step::Set => match protocol::pending_value(&self.api, id, token).await? {
                None => Ok(StepOutcome::skipped(
                    "the new version is already AWSCURRENT",
                )),
                Some(new) => {
                    let (_, old) = protocol::current_value(&self.api, id).await?;
                    strategy.set(ctx, &new, &old).await?;
                    Ok(StepOutcome::ok(format!(
                        "{} applied the new value",
                        strategy.name()
                    )))
                }
            },
            Step::Test => match protocol::pending_value(&self.api, id, token).await? {
                None => Ok(StepOutcome::skipped(
                    "the new version is already AWSCURRENT",
                )),
                Some(new) => {
                    strategy.test(ctx, &new).await?;
                    let (_, old) = protocol::current_value(&self.api, id).await?;
                    let n = self
                        .hooks(rot, spec, HookStage::Test, "test", token, &[&new, &old])
                        .await?;
                    Ok(StepOutcome::ok(format!(
                        "the new value passed the {} checks and {n} test hook(s)",
                        strategy.name()
                    )))
                }
            },
            Step::Finish => {
                let moved = protocol::promote(
                    &self.api,
                    id,
                    token,
                    rot.detail.previous_version_id.as_deref(),
                )
                .await?;
                if moved {
                    self.observe_duration(rot);
                }
                let values = self.current_and_previous(rot).await;
                let refs: Vec<&SecretValue> = values.iter().collect();
                let n = self
                    .hooks(rot, spec, HookStage::Finish, "finish", token, &refs)
                    .await?;
                Ok(StepOutcome::ok(format!(
                    "AWSCURRENT is version {token}{}; {n} finish hook(s) ran",
                    if moved { "" } else { " (already)" }
                )))
            }
            Step::Finalize | Step::Done => self.finalize_step(rot, spec, strategy, ctx).await,
        }
    }

    async fn finalize_step(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
        strategy: &dyn RotationStrategy,
        ctx: StepContext<'_>,
    ) -> Result<StepOutcome, StepError> {
        let id = rot.detail.secret_id.as_str();
        let token = rot.token.as_str();
        let final_token = rot.finalize_token();
        let mut msg = String::new();
        match protocol::finalize_state(&self.api, id, token, &final_token).await? {
            FinalizeState::Superseded(other) => {
                return Ok(StepOutcome {
                    superseded: true,
                    ..StepOutcome::skipped(format!(
                        "AWSCURRENT is version {} now, not this rotation's: finalize cancelled",
                        other.as_deref().unwrap_or("(none)")
                    ))
                });
            }
            FinalizeState::Ours => {
                let cur = self
                    .api
                    .get_value(id, VersionSelector::IdAndStage(token, AWSCURRENT))
                    .await?;
                if let Some(v) = strategy.finalize_value(&cur.value)? {
                    protocol::write_final(&self.api, id, token, &final_token, &v).await?;
                    msg = format!(
                        "the previous key was dropped: AWSCURRENT is version {final_token}; "
                    );
                }
            }
            FinalizeState::Finalized => {}
        }
        let (cur_id, current) = protocol::current_value(&self.api, id).await?;
        strategy.finalize(ctx, &current).await?;
        let values = self.current_and_previous(rot).await;
        let refs: Vec<&SecretValue> = values.iter().collect();
        let n = self
            .hooks(rot, spec, HookStage::Finalize, "finalize", &cur_id, &refs)
            .await?;
        Ok(StepOutcome::ok(format!("{msg}{n} finalize hook(s) ran")))
    }

    /// The `lambda` strategy: create calls RotateSecret with the token; set and test belong to
    /// the Lambda; finish waits for the token's version to become AWSCURRENT, failing once
    /// `rotation.timeout` has passed since the request.
    async fn run_lambda_step(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
    ) -> Result<StepOutcome, StepError> {
        let id = rot.detail.secret_id.as_str();
        let token = rot.token.as_str();
        match rot.step {
            Step::Create => {
                let st = self.api.describe(id).await?;
                match protocol::lambda_state(&st, token) {
                    LambdaState::NotStarted => {
                        self.api.rotate_secret(id, token).await?;
                        failpoint::hit("create:put");
                        Ok(StepOutcome {
                            previous_version_id: st.version_with(AWSCURRENT).map(str::to_string),
                            ..StepOutcome::ok(format!(
                                "RotateSecret called; the rotation Lambda writes version {token}"
                            ))
                        })
                    }
                    _ => Ok(StepOutcome::skipped("RotateSecret was already called")),
                }
            }
            Step::Set | Step::Test => Ok(StepOutcome::skipped("run by the rotation Lambda")),
            Step::Finish => {
                let deadline = rot.requested_at + spec.rotation.timeout.as_secs() as i64;
                loop {
                    let st = self.api.describe(id).await?;
                    if protocol::lambda_state(&st, token) == LambdaState::Done {
                        break;
                    }
                    if now_s() >= deadline {
                        let where_ = if st.stages_of(token).is_some() {
                            format!("version {token} is still AWSPENDING")
                        } else {
                            format!("version {token} was never written")
                        };
                        return Err(StepError::Fatal(format!(
                            "the rotation Lambda did not finish within {} ({where_}); see the Lambda's CloudWatch logs",
                            crate::schedule::format_duration(spec.rotation.timeout)
                        )));
                    }
                    tokio::time::sleep(LAMBDA_POLL).await;
                }
                let n = self
                    .hooks(rot, spec, HookStage::Finish, "finish", token, &[])
                    .await?;
                Ok(StepOutcome::ok(format!(
                    "the rotation Lambda made version {token} AWSCURRENT; {n} finish hook(s) ran"
                )))
            }
            Step::Finalize | Step::Done => {
                let n = self
                    .hooks(rot, spec, HookStage::Finalize, "finalize", token, &[])
                    .await?;
                Ok(StepOutcome::ok(format!("{n} finalize hook(s) ran")))
            }
        }
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

    /// Starts scheduled rotations of due secrets inside their windows, until shutdown.
    pub async fn run_scheduler(self: Arc<Self>) {
        let stop = self.shutdown.clone();
        let mut said: HashMap<String, String> = HashMap::new();
        loop {
            self.schedule_once(&mut said);
            tokio::select! {
                _ = tokio::time::sleep(SCHEDULER_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One scheduler pass; `said` remembers the last waiting reason logged per secret.
    fn schedule_once(self: &Arc<Self>, said: &mut HashMap<String, String>) {
        let now = Utc::now();
        for spec in &self.config.secrets {
            let (status, undeclared) = {
                let view = self.view.read();
                let Some(st) = view.secrets.get(&spec.name).cloned() else {
                    continue;
                };
                // With access monitoring on, readers are unknown until its first report.
                let access_reported = self.config.access.is_none()
                    || view
                        .polls
                        .get("access")
                        .is_some_and(|h| h.last_success.is_some());
                let undeclared = access_reported.then(|| {
                    view.access
                        .get(&spec.name)
                        .map(|a| a.undeclared_readers.clone())
                        .unwrap_or_default()
                });
                (st, undeclared)
            };
            let last = match journal::recent(&self.store, Some(&spec.name), 1) {
                Ok(mut v) => v.pop(),
                Err(e) => {
                    error!(error = %e, "Scheduler cannot read the rotation journal.");
                    return;
                }
            };
            let (decision, next_window) = scheduled::decide(scheduled::Inputs {
                now,
                status: &status,
                strategy: spec.rotation.strategy,
                window: spec.window.as_ref(),
                undeclared: undeclared.as_deref(),
                last: last.as_ref(),
                lead: self
                    .config
                    .reminders
                    .as_ref()
                    .and_then(|r| r.lead.iter().min().copied()),
            });
            let waiting = match &decision {
                scheduled::Decision::Wait(w) => Some(w.clone()),
                _ => None,
            };
            {
                let mut view = self.view.write();
                let entry: &mut RotationView = view.rotations.entry(spec.name.clone()).or_default();
                entry.waiting = waiting.clone();
                entry.next_window = next_window.map(|t| t.timestamp());
            }
            match decision {
                scheduled::Decision::Wait(why) => {
                    if said.get(&spec.name) != Some(&why) {
                        warn!(secret = %spec.name, reason = %why, "Scheduled rotation is due but waits.");
                        said.insert(spec.name.clone(), why);
                    }
                }
                scheduled::Decision::Start => {
                    if let Err(refused) = strategy::for_spec(&spec.name, &spec.rotation) {
                        let why = refused.to_string();
                        self.view
                            .write()
                            .rotations
                            .entry(spec.name.clone())
                            .or_default()
                            .waiting = Some(why.clone());
                        if said.get(&spec.name) != Some(&why) {
                            warn!(secret = %spec.name, reason = %why, "Scheduled rotation is due but cannot start.");
                            said.insert(spec.name.clone(), why);
                        }
                        continue;
                    }
                    said.remove(&spec.name);
                    match self.request(&spec.name, Trigger::Scheduled, RequestOptions::default()) {
                        Ok(r) => {
                            info!(secret = %spec.name, rotation = %r.id, "Scheduled rotation started inside the window.")
                        }
                        Err(RequestError::Busy(_)) => {}
                        Err(e) => {
                            warn!(secret = %spec.name, error = %e, "Scheduled rotation could not start.")
                        }
                    }
                }
                scheduled::Decision::Idle | scheduled::Decision::Busy => {
                    said.remove(&spec.name);
                }
            }
        }
    }

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
        if let Some(incident) = journal::open_incident(&self.store, &spec.name)? {
            if !force {
                return Err(RollbackError::IncidentOpen {
                    secret: spec.name.clone(),
                    incident,
                });
            }
            warn!(secret = %spec.name, %incident, "Rolling back despite an open compromise incident (forced).");
        }
        let last = journal::recent(&self.store, Some(&spec.name), 1)?.pop();
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
                journal::update(
                    &self.store,
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
                journal::note(
                    &self.store,
                    &r.id,
                    ROLLBACK,
                    EventOutcome::Ok,
                    Some(&msg),
                    now,
                )?;
            }
            if let Ok(Some(r)) = journal::get(&self.store, &r.id) {
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

/// Whether `arn` is the ARN of a secret named `name` (`...:secret:<name>-XXXXXX`).
fn arn_names(arn: &str, name: &str) -> bool {
    arn.split_once(":secret:")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.rsplit_once('-'))
        .is_some_and(|(n, _)| n == name)
}

#[cfg(test)]
mod tests {
    //! The `lambda` strategy against the SDK's own mocks (moto cannot run a rotation Lambda).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
    use aws_sdk_secretsmanager::operation::rotate_secret::{RotateSecretError, RotateSecretOutput};
    use aws_sdk_secretsmanager::types::error::InvalidRequestException;
    use aws_sdk_secretsmanager::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;
    use crate::aws::secretsmanager::SecretsManager;

    /// A core on a mocked client, with one `lambda` secret `L` (id `app/l`).
    fn core(client: Client, timeout: &str) -> (Arc<Engine>, Arc<Metrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            format!(
                "[state]\npath = \"{}\"\n[[secret]]\nname = \"L\"\nid = \"app/l\"\n\
                 rotation = {{ strategy = \"lambda\", timeout = \"{timeout}\" }}\n",
                dir.path().join("s.db").display()
            ),
        )
        .unwrap();
        let config = Arc::new(crate::config::load(&path).unwrap());
        let store = Store::open(&config.state.path).unwrap();
        let metrics = Arc::new(Metrics::new());
        let rx = CancellationToken::new();
        let api = SecretsManager::from_client(client, metrics.clone());
        let core = RotationCore::new(
            api,
            store,
            config,
            SharedView::default(),
            metrics.clone(),
            rx,
        );
        (core, metrics, dir)
    }

    async fn wait_for(core: &Engine, id: &str, states: &[State]) -> (Rotation, Vec<Event>) {
        for _ in 0..3000 {
            let (r, e) = core.status(id).unwrap().unwrap();
            if states.contains(&r.state) {
                return (r, e);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("rotation {id} never reached {states:?}");
    }

    fn stages(pairs: &[(&str, &[&str])]) -> DescribeSecretOutput {
        let mut b = DescribeSecretOutput::builder()
            .name("app/l")
            .arn("arn:aws:secretsmanager:us-east-1:1:secret:app/l-AbCdEf");
        for (id, s) in pairs {
            b = b.version_ids_to_stages(*id, s.iter().map(|x| x.to_string()).collect());
        }
        b.build()
    }

    #[tokio::test]
    async fn lambda_rotation_calls_rotate_secret_once_and_waits_for_awscurrent() {
        let token: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = token.clone();
        let rotate = mock!(Client::rotate_secret)
            .match_requests(move |r| {
                *lock(&seen) = r.client_request_token().map(str::to_string);
                r.secret_id() == Some("app/l")
            })
            .then_output(|| RotateSecretOutput::builder().build());
        let after = Arc::new(AtomicUsize::new(0));
        let t = token.clone();
        let describe = mock!(Client::describe_secret).then_compute_output(move |_| {
            let Some(tok) = lock(&t).clone() else {
                return stages(&[("old", &["AWSCURRENT"])]);
            };
            // Twice in progress, then the Lambda has finished.
            if after.fetch_add(1, Ordering::SeqCst) < 2 {
                stages(&[("old", &["AWSCURRENT"]), (&tok, &["AWSPENDING"])])
            } else {
                stages(&[
                    ("old", &["AWSPREVIOUS"]),
                    (&tok, &["AWSCURRENT", "AWSPENDING"]),
                ])
            }
        });
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe]
        );
        let (core, metrics, _dir) = core(client, "5m");
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (done, events) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(done.state, State::Done, "{events:?}");
        assert_eq!(rotate.num_calls(), 1, "RotateSecret exactly once");
        assert_eq!(lock(&token).as_deref(), Some(r.token.as_str()));
        assert_eq!(done.detail.previous_version_id.as_deref(), Some("old"));
        let steps: Vec<&str> = events.iter().map(|e| e.step.as_str()).collect();
        assert_eq!(
            steps,
            ["accepted", "create", "set", "test", "finish", "finalize"]
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"keywarden_rotations_total{secret="L",trigger="manual",result="success"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn lambda_rotation_that_never_finishes_fails_clearly_at_the_timeout() {
        let t: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = t.clone();
        let rotate = mock!(Client::rotate_secret)
            .match_requests(move |r| {
                *lock(&seen) = r.client_request_token().map(str::to_string);
                true
            })
            .then_output(|| RotateSecretOutput::builder().build());
        let describe =
            mock!(Client::describe_secret).then_compute_output(move |_| match lock(&t).clone() {
                Some(tok) => stages(&[("old", &["AWSCURRENT"]), (&tok, &["AWSPENDING"])]),
                None => stages(&[("old", &["AWSCURRENT"])]),
            });
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe]
        );
        let (core, metrics, _dir) = core(client, "1s");
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (failed, _) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(failed.state, State::Failed);
        assert_eq!(failed.step, Step::Finish);
        let err = failed.error.unwrap();
        assert!(
            err.contains("did not finish within 1s") && err.contains("still AWSPENDING"),
            "{err}"
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"keywarden_rotations_total{secret="L",trigger="manual",result="failure"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lambda_rotate_secret_errors_are_retried_then_reported() {
        let rotate = mock!(Client::rotate_secret).then_error(|| {
            RotateSecretError::InvalidRequestException(
                InvalidRequestException::builder()
                    .message("No Lambda rotation function ARN is associated with this secret.")
                    .build(),
            )
        });
        let describe = mock!(Client::describe_secret)
            .then_compute_output(|_| stages(&[("old", &["AWSCURRENT"])]));
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe]
        );
        let (core, _metrics, _dir) = core(client, "5m");
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (failed, events) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(failed.state, State::Failed);
        assert_eq!(failed.step, Step::Create);
        assert_eq!(rotate.num_calls(), MAX_ATTEMPTS as usize);
        let err = failed.error.unwrap();
        assert!(
            err.contains("RotateSecret") && err.contains("No Lambda rotation function"),
            "{err}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.outcome == EventOutcome::Error)
                .count(),
            MAX_ATTEMPTS as usize - 1
        );
    }
}
