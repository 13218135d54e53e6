//! The rotation engine: [`RotationCore`] accepts requests, resumes journaled rotations at start,
//! and drives each rotation step by step (one task per rotation).
//!
//! The engine owns the step loop and its I/O: it reads the journaled rotation, runs its step
//! ([`super::steps`]), asks [`super::transition`] what follows, and applies that answer: the
//! journal write, the metrics, the backoff and the AWSPENDING clean-up. The `<step>:done`
//! failpoint sits right after the journal write of the completed step.
//!
//! It must never import the HTTP server, the CLI, the incident workflow, the finalizer, the
//! scheduler or rollback (they build on the engine, not the other way round).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

use chrono::Utc;
use tokio::sync::{Notify, OwnedMutexGuard, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aws::{ElastiCacheApi, SecretsWriteApi};
use crate::config::{Config, SecretSpec};
use crate::domain::RotationResult;
use crate::domain::view::SharedView;
use crate::store::{StateStore, StoreError};
use crate::telemetry::{Metrics, TriggerLabel};

use super::failpoint;
use super::journal::{self, Detail, Event, Rotation, State, Step, Trigger};
use super::protocol::{self, Retry};
use super::steps::Steps;
use super::strategy::{self, Refused};
use super::transition::{self, At, Begin, StepOutcome, Transition};
use crate::rotation::journal::JournalStore;

/// How often the journal is searched for rotations (and the store for incidents) that no task
/// drives any more.
pub const REDRIVE_EVERY: Duration = Duration::from_secs(30);

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
    /// A pre-flight check failed (SPEC §12): nothing was started.
    #[error(
        "pre-flight check {check} failed: {value}; the rotation did not start (force it past the checks to rotate anyway)"
    )]
    Preflight {
        /// The check's name.
        check: String,
        /// What it observed.
        value: String,
    },
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
    pub(super) store: StateStore,
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
    /// Rotation ids that have a task driving them, with the token that stops that task.
    driving: Mutex<HashMap<String, CancellationToken>>,
    /// One async lock per secret, held by every step (and its journal write) and by rollback,
    /// so the two never interleave.
    secret_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever a rotation's state is published: what waiters (the incident service)
    /// wait on instead of polling.
    changes: watch::Sender<u64>,
    /// When each rotation started in this process (duration histogram).
    started: Mutex<HashMap<String, Instant>>,
    /// Rotations whose duration this process already observed (when AWSCURRENT moved).
    observed: Mutex<HashSet<String>>,
    /// The daemon's shutdown signal.
    pub(super) shutdown: CancellationToken,
    /// ElastiCache for the `elasticache` strategy, set once after construction
    /// ([`RotationCore::set_elasticache`]).
    elasticache: OnceLock<Arc<dyn ElastiCacheApi>>,
    /// Rotation ids whose watch (SPEC §12) a task of this process runs.
    pub(super) watching: Mutex<HashSet<String>>,
}

/// Removes a rotation from `driving` when its task ends, however it ends.
struct Driving<'a>(&'a Mutex<HashMap<String, CancellationToken>>, String);

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
        store: impl Into<StateStore>,
        config: Arc<Config>,
        view: SharedView,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        // Every configured check's failure counter exists from the first metadata cycle.
        metrics.declare_verify_checks(
            config
                .secrets
                .iter()
                .flat_map(|s| s.verify.iter().map(|c| (s.name.clone(), c.name.clone())))
                .collect(),
        );
        let hide_env = match &config.server.admin_token {
            Some(crate::config::TokenSource::Env(name)) => Some(name.clone()),
            _ => None,
        };
        Arc::new(RotationCore {
            api,
            store: store.into(),
            config,
            view,
            metrics,
            hide_env,
            finalize_due: Mutex::new(BTreeSet::new()),
            finalize_wake: Notify::new(),
            driving: Mutex::new(HashMap::new()),
            secret_locks: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
            started: Mutex::new(HashMap::new()),
            observed: Mutex::new(HashSet::new()),
            shutdown,
            elasticache: OnceLock::new(),
            watching: Mutex::new(HashSet::new()),
        })
    }

    /// Gives the `elasticache` strategy its client (the daemon does, right after [`Self::new`]).
    /// A second call changes nothing.
    pub fn set_elasticache(&self, api: Arc<dyn ElastiCacheApi>) {
        let _ = self.elasticache.set(api);
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

    /// Accepts a rotation: journaled durably before this returns, then driven by a task. No
    /// pre-flight (a compromise must not wait for its consumers): `max_ratio` baselines are
    /// measured before create. Manual and scheduled rotations go through
    /// [`RotationCore::request_guarded`].
    pub fn request(
        self: &Arc<Self>,
        secret: &str,
        trigger: Trigger,
        opts: RequestOptions,
    ) -> Result<Rotation, RequestError> {
        self.request_with(secret, trigger, opts, None)
    }

    /// [`RotationCore::request`] with the pre-flight's baselines, when it ran.
    pub(super) fn request_with(
        self: &Arc<Self>,
        secret: &str,
        trigger: Trigger,
        opts: RequestOptions,
        baselines: Option<std::collections::BTreeMap<String, f64>>,
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
            verify: (!spec.verify.is_empty()).then(|| super::verify::VerifyState {
                measured: baselines.is_some(),
                baselines: baselines.unwrap_or_default(),
                ..Default::default()
            }),
            config_digest: Some(super::verify::config_digest(spec)),
            ..Detail::default()
        };
        let rot = match self
            .store
            .insert_rotation(&id, &spec.name, trigger, &detail, now_s())?
        {
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
        match self.store.rotation(id)? {
            Some(r) => Ok(Some((r, self.store.rotation_events(id)?))),
            None => Ok(None),
        }
    }

    /// The most recent rotations, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<Rotation>, StoreError> {
        self.store.recent_rotations(None, limit)
    }

    /// Resumes every unfinished rotation and queues every pending finalize. Returns how many.
    pub fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        for spec in &self.config.secrets {
            if let Some(r) = self.store.recent_rotations(Some(&spec.name), 1)?.first() {
                self.publish(r);
                // A compromise rotation finalizes without waiting for its watch: resume it.
                if r.state == State::Done && super::verify::watch_pending(r.detail.verify.as_ref())
                {
                    self.spawn_watch(r.id.clone());
                }
            }
        }
        let unfinished = self
            .store
            .rotations_in_states(&[State::Running, State::Grace])?;
        for r in &unfinished {
            info!(secret = %r.secret, rotation = %r.id, step = r.step.as_str(), state = r.state.as_str(), "Resuming a journaled rotation.");
            self.spawn_drive(r.id.clone());
        }
        Ok(unfinished.len())
    }

    pub(super) fn spawn_drive(self: &Arc<Self>, id: String) {
        let stop = {
            let mut driving = lock(&self.driving);
            if driving.contains_key(&id) {
                return;
            }
            let stop = self.shutdown.child_token();
            driving.insert(id.clone(), stop.clone());
            stop
        };
        let core = self.clone();
        tokio::spawn(async move {
            let _guard = Driving(&core.driving, id.clone());
            tokio::select! {
                _ = core.drive(&id) => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Picks up every `running` rotation, and every `grace` one not queued for finalize, that no
    /// task of this process drives (its task died on a panic, or stopped on a store error).
    /// Returns how many it restarted.
    pub fn redrive(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self
            .store
            .rotations_in_states(&[State::Running, State::Grace])?
        {
            let queued = lock(&self.finalize_due).iter().any(|(_, q)| *q == r.id);
            if queued || self.is_driven(&r.id) {
                continue;
            }
            warn!(secret = %r.secret, rotation = %r.id, step = r.step.as_str(), state = r.state.as_str(), "A journaled rotation had no task driving it: driving it again.");
            self.spawn_drive(r.id);
            n += 1;
        }
        Ok(n)
    }

    /// Runs [`RotationCore::redrive`] every [`REDRIVE_EVERY`] until shutdown.
    pub async fn run_redrive(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REDRIVE_EVERY) => {}
                _ = self.shutdown.cancelled() => return,
            }
            if let Err(e) = self.redrive() {
                warn!(error = %e, "Cannot look for rotations without a task; trying again later.");
            }
        }
    }

    /// The environment variable hooks must not inherit (the admin token's), if any.
    pub(super) fn hide_env(&self) -> Option<&str> {
        self.hide_env.as_deref()
    }

    /// Whether a task of this process drives rotation `id` now.
    pub fn is_driven(&self, id: &str) -> bool {
        lock(&self.driving).contains_key(id)
    }

    /// The async lock of one secret (see `secret_locks`).
    pub(super) fn secret_lock(&self, secret: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.secret_locks)
            .entry(secret.to_string())
            .or_default()
            .clone()
    }

    /// A receiver that changes whenever any rotation's state is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reads rotation `id` with its secret's lock held (read again once the lock is held, since
    /// the row may have moved while this waited). `None` if it is not in the journal.
    async fn read_locked(
        &self,
        id: &str,
    ) -> Result<Option<(Rotation, OwnedMutexGuard<()>)>, StoreError> {
        let Some(first) = self.store.rotation(id)? else {
            return Ok(None);
        };
        let held = self.secret_lock(&first.secret).lock_owned().await;
        Ok(self.store.rotation(id)?.map(|r| (r, held)))
    }

    /// Stops a non-compromise rotation that has not reached finish, for a compromise of the
    /// same secret (SPEC §7: the compromise must not wait behind it). Its task is cancelled, its
    /// AWSPENDING version abandoned, and it ends `failed` naming `why`. Returns false (and
    /// leaves it running) when it is past test, not running, or a compromise rotation itself.
    pub async fn preempt(self: &Arc<Self>, id: &str, why: &str) -> Result<bool, StoreError> {
        let Some(r) = self.store.rotation(id)? else {
            return Ok(false);
        };
        if r.state != State::Running || r.step >= Step::Finish || r.trigger == Trigger::Compromise {
            return Ok(false);
        }
        if let Some(stop) = lock(&self.driving).get(id) {
            stop.cancel();
        }
        let Some((rot, _held)) = self.read_locked(id).await? else {
            return Ok(false);
        };
        if rot.state != State::Running || rot.step >= Step::Finish {
            // It moved on before the cancel landed: let it run to its end.
            self.spawn_drive(id.to_string());
            return Ok(false);
        }
        if let Err(e) = protocol::abandon(&self.api, &rot.detail.secret_id, &rot.token).await {
            warn!(secret = %rot.secret, rotation = %rot.id, error = %e, "Could not remove AWSPENDING from the pre-empted rotation's version.");
        }
        let msg = format!("pre-empted: {why}");
        let done = self.store.update_rotation(
            &rot.id,
            &journal::Update {
                from: (rot.state, rot.step),
                step: rot.step,
                state: State::Failed,
                attempts: rot.attempts,
                error: Some(&msg),
                detail: &rot.detail,
                event: (rot.step.as_str(), journal::EventOutcome::Failed, Some(&msg)),
            },
            now_s(),
        )?;
        self.set_in_progress(&rot.secret, false);
        lock(&self.started).remove(&rot.id);
        warn!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), reason = why, "Rotation pre-empted before finish: AWSCURRENT was not moved.");
        if let Some(r) = self.store.rotation(&rot.id)? {
            self.publish(&r);
        }
        Ok(done)
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
        drop(view);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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
            let (rot, held) = match self.read_locked(id).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    error!(rotation = id, error = %e, "Cannot read the rotation journal; retrying in 5 s.");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            self.publish(&rot);
            if rot.state == State::Grace && super::verify::watch_pending(rot.detail.verify.as_ref())
            {
                // The watch runs in its own task; finalize waits for it unless this is a
                // compromise (the leaked credential must die now).
                self.spawn_watch(rot.id.clone());
                if rot.trigger != Trigger::Compromise && !rot.detail.compromise_finalize {
                    return;
                }
            }
            if rot.state == State::Running
                && rot.step == Step::Create
                && rot.detail.verify.as_ref().is_some_and(|v| !v.measured)
            {
                drop(held);
                self.measure_baselines(&rot).await;
                continue;
            }
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
            let on_moved = || self.observe_duration(&rot);
            let steps = Steps {
                api: &self.api,
                hide_env: self.hide_env.as_deref(),
                on_moved: &on_moved,
                elasticache: self.elasticache.get().map(|a| a.as_ref()),
            };
            let result = steps.run_step(&rot, spec, strategy.as_ref()).await;
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
                    if t.stuck {
                        self.metrics.set_rotation_stuck(&rot.secret, true);
                        warn!(secret = %rot.secret, rotation = id, step = rot.step.as_str(), attempt = t.next.attempts, retry_in_s = backoff.as_secs(), "Rotation stuck past finish: the step is retried until it succeeds.");
                    }
                    let u = journal::Update {
                        from: (rot.state, rot.step),
                        step: t.next.step,
                        state: t.next.state,
                        attempts: t.next.attempts,
                        error: Some(&msg),
                        detail: &rot.detail,
                        event: (rot.step.as_str(), t.event, Some(&msg)),
                    };
                    match self.store.update_rotation(id, &u, now) {
                        Ok(true) => {}
                        Ok(false) => info!(
                            rotation = id,
                            "The rotation moved on meanwhile (rolled back or pre-empted)."
                        ),
                        Err(e) => {
                            error!(rotation = id, error = %e, "Cannot journal a failed attempt.")
                        }
                    }
                    drop(held);
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
            if let Some(v) = detail.verify.as_mut() {
                let watch = i64::try_from(self.config.verify.watch.as_secs()).unwrap_or(i64::MAX);
                v.watch_until = Some(now.saturating_add(watch));
            }
        }
        let applied = self.store.update_rotation(
            &rot.id,
            &journal::Update {
                from: (rot.state, rot.step),
                step: t.next.step,
                state: t.next.state,
                attempts: t.next.attempts,
                error: None,
                detail: &detail,
                event: (rot.step.as_str(), t.event, Some(&out.message)),
            },
            now,
        )?;
        if !applied {
            warn!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), "The rotation moved on while its step ran (rolled back or pre-empted); the step's result is not journaled.");
            return Ok(());
        }
        info!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), outcome = t.event.as_str(), detail = %out.message, "Rotation step completed.");
        if rot.attempts >= super::MAX_ATTEMPTS && rot.step >= Step::Finish {
            self.metrics.set_rotation_stuck(&rot.secret, false);
        }
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
        if t.abandon
            && let Err(e) = protocol::abandon(&self.api, &rot.detail.secret_id, &rot.token).await
        {
            warn!(secret = %rot.secret, rotation = %rot.id, error = %e, "Could not remove AWSPENDING from the failed rotation's version.");
        }
        let u = journal::Update {
            from: (rot.state, rot.step),
            step: t.next.step,
            state: t.next.state,
            attempts: t.next.attempts,
            error: Some(msg),
            detail: &rot.detail,
            event: (rot.step.as_str(), t.event, Some(msg)),
        };
        match self.store.update_rotation(&rot.id, &u, now_s()) {
            Ok(true) => {}
            Ok(false) => {
                info!(rotation = %rot.id, "The rotation moved on meanwhile; its failure is not journaled.");
                return;
            }
            Err(e) => error!(rotation = %rot.id, error = %e, "Cannot journal a failed rotation."),
        }
        if t.ends_in_progress {
            self.set_in_progress(&rot.secret, false);
        }
        if let Some(result) = t.count {
            self.count(&rot.secret, rot.trigger, result);
        }
        lock(&self.started).remove(&rot.id);
        lock(&self.observed).remove(&rot.id);
        error!(secret = %rot.secret, rotation = %rot.id, step = rot.step.as_str(), error = %msg, "Rotation failed before finish: AWSCURRENT was not moved, and AWSPENDING was taken off the new version.");
        if let Ok(Some(r)) = self.store.rotation(&rot.id) {
            self.publish(&r);
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
