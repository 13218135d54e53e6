//! The rotation engine: [`RotationCore`] accepts requests, resumes journaled rotations at start,
//! and drives each rotation step by step (one task per rotation).
//!
//! The engine owns the step loop and its I/O: it reads the journaled rotation, runs its step
//! (the strategy, [`super::protocol`] and [`super::hooks`]), asks [`super::transition`] what
//! follows, and applies that answer: the journal write, the metrics, the backoff and the
//! AWSPENDING clean-up. Every `failpoint::hit` sits right after the journal write it names.
//!
//! It must never import the HTTP server, the CLI, the incident workflow, the finalizer, the
//! scheduler or rollback (they build on the engine, not the other way round).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aws::{SecretValue, SecretsWriteApi, VersionSelector, AWSCURRENT, AWSPREVIOUS};
use crate::config::{Config, HookStage, SecretSpec};
use crate::domain::view::SharedView;
use crate::domain::RotationResult;
use crate::store::{Store, StoreError};
use crate::telemetry::{Metrics, TriggerLabel};

use super::failpoint;
use super::hooks::{self, HookEnv};
use super::journal::{self, Detail, Event, Rotation, State, Step, Trigger};
use super::protocol::{self, FinalizeState, LambdaState, Retry, StepError};
use super::strategy::{self, Mode, Refused, RotationStrategy, StepContext};
use super::transition::{self, At, Begin, StepOutcome, Transition};

/// How often a Lambda rotation is looked at.
const LAMBDA_POLL: Duration = Duration::from_secs(2);

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

/// Options of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    /// Overrides `rotation.grace` (a compromise passes zero).
    pub grace: Option<Duration>,
}

/// The rotation core.
pub struct RotationCore<A> {
    /// Secrets Manager.
    pub(super) api: A,
    /// The journal.
    pub(super) store: Store,
    /// The inventory and hooks.
    pub(super) config: Arc<Config>,
    /// Where `/secrets` reads rotation state.
    pub(super) view: SharedView,
    /// Rotation metrics.
    pub(super) metrics: Arc<Metrics>,
    /// An environment variable hooks must not inherit (the admin token's).
    hide_env: Option<String>,
    /// Finalizations waiting for their grace: (epoch second, rotation id).
    pub(super) finalize_due: Mutex<BTreeSet<(i64, String)>>,
    /// Wakes the finalizer when `finalize_due` changes.
    pub(super) finalize_wake: Notify,
    /// Rotation ids that have a task driving them.
    driving: Mutex<HashSet<String>>,
    /// When each rotation started in this process (duration histogram).
    started: Mutex<HashMap<String, Instant>>,
    /// Rotations whose duration this process already observed (when AWSCURRENT moved).
    observed: Mutex<HashSet<String>>,
    /// The daemon's shutdown signal.
    pub(super) shutdown: CancellationToken,
}

/// Removes a rotation from `driving` when its task ends, however it ends.
struct Driving<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

/// Locks `m`, even if a task panicked while holding it.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wall clock in epoch seconds, as the journal records time.
pub(super) fn now_s() -> i64 {
    Utc::now().timestamp()
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

    pub(super) fn spawn_drive(self: &Arc<Self>, id: String) {
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
    pub(super) fn publish(&self, r: &Rotation) {
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

    pub(super) fn count(&self, secret: &str, trigger: Trigger, result: RotationResult) {
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
            match transition::begin(rot.state, rot.detail.finalize_after, now_s()) {
                Begin::Run => {
                    if rot.state == State::Running {
                        self.set_in_progress(&rot.secret, true);
                    }
                }
                Begin::Wait(due) => {
                    lock(&self.finalize_due).insert((due, rot.id.clone()));
                    self.finalize_wake.notify_one();
                    return;
                }
                Begin::Stop => return,
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
            let at = At {
                state: rot.state,
                step: rot.step,
                attempts: rot.attempts,
            };
            let grace = rot.detail.grace_seconds;
            match result {
                Ok(out) => {
                    let t = transition::transition(at, Ok(&out), now, grace);
                    if let Err(e) = self.step_done(&rot, &out, &t, now) {
                        error!(rotation = id, error = %e, "Cannot journal a completed step; retrying it in 5 s.");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
                Err(e) => {
                    let t = transition::transition(at, Err(e.retry()), now, grace);
                    let msg = e.to_string();
                    warn!(secret = %rot.secret, rotation = id, step = rot.step.as_str(), attempt = t.next.attempts, error = %msg, "Rotation step failed.");
                    let Some(backoff) = t.backoff else {
                        self.apply_failure(&rot, &msg, &t).await;
                        return;
                    };
                    let u = journal::Update {
                        step: t.next.step,
                        state: t.next.state,
                        attempts: t.next.attempts,
                        error: Some(&msg),
                        detail: &rot.detail,
                        event: (rot.step.as_str(), t.event, Some(&msg)),
                    };
                    if let Err(e) = journal::update(&self.store, id, &u, now) {
                        error!(rotation = id, error = %e, "Cannot journal a failed attempt.");
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Journals a completed step and moves to the next one, as `t` says.
    fn step_done(
        &self,
        rot: &Rotation,
        out: &StepOutcome,
        t: &Transition,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut detail = rot.detail.clone();
        if out.previous_version_id.is_some() {
            detail.previous_version_id = out.previous_version_id.clone();
        }
        if t.finalize_after.is_some() {
            detail.finished_at = Some(now);
            detail.finalize_after = t.finalize_after;
        }
        journal::update(
            &self.store,
            &rot.id,
            &journal::Update {
                step: t.next.step,
                state: t.next.state,
                attempts: t.next.attempts,
                error: None,
                detail: &detail,
                event: (rot.step.as_str(), t.event, Some(&out.message)),
            },
            now,
        )?;
        info!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), outcome = t.event.as_str(), detail = %out.message, "Rotation step completed.");
        failpoint::hit(&format!("{}:done", rot.step.as_str()));
        if t.ends_in_progress {
            self.set_in_progress(&rot.secret, false);
        }
        if let Some(result) = t.count {
            self.count(&rot.secret, rot.trigger, result);
        }
        if rot.step == Step::Finish {
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

    /// Marks a rotation failed at once (it cannot run at all), as a step that is never retried.
    async fn fail(&self, rot: &Rotation, msg: &str) {
        let at = At {
            state: rot.state,
            step: rot.step,
            attempts: rot.attempts,
        };
        let t = transition::transition(at, Err(Retry::Never), now_s(), rot.detail.grace_seconds);
        self.apply_failure(rot, msg, &t).await;
    }

    /// Marks a rotation failed after its last attempt (or a fatal error), takes AWSPENDING off
    /// its version if it never became current, and counts it, as `t` says.
    async fn apply_failure(&self, rot: &Rotation, msg: &str, t: &Transition) {
        if t.abandon {
            if let Err(e) = protocol::abandon(&self.api, &rot.detail.secret_id, &rot.token).await {
                warn!(secret = %rot.secret, rotation = %rot.id, error = %e, "Could not remove AWSPENDING from the failed rotation's version.");
            }
        }
        let u = journal::Update {
            step: t.next.step,
            state: t.next.state,
            attempts: t.next.attempts,
            error: Some(msg),
            detail: &rot.detail,
            event: (rot.step.as_str(), t.event, Some(msg)),
        };
        if let Err(e) = journal::update(&self.store, &rot.id, &u, now_s()) {
            error!(rotation = %rot.id, error = %e, "Cannot journal a failed rotation.");
        }
        if t.ends_in_progress {
            self.set_in_progress(&rot.secret, false);
        }
        if let Some(result) = t.count {
            self.count(&rot.secret, rot.trigger, result);
        }
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
    use crate::rotation::journal::EventOutcome;
    use crate::rotation::MAX_ATTEMPTS;

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
