//! Compromise incidents (SPEC §7): `POST /compromised/<secret>` opens one; a task per incident
//! then runs its steps in order, each journaled in the store before and after it runs:
//!
//! 1. `rotate`: a compromise rotation through the rotation core (no window, no grace: finalize
//!    follows finish, so dual-key and primary-secondary keep only the new key, postgres and redis
//!    cut the old credentials' sessions); a rotation still in grace is finalized first. With
//!    `verify` checks it also waits for the watch's first round and keeps the failing check
//!    (`verify_failing`, refreshed by the report step) for the report and the to-do list.
//! 2. `audit`: every principal that read the secret within `incident.audit_lookback`, from the
//!    CloudTrail log group of `[access]`, plus what the access poller flagged.
//! 3. `notify`: one SNS message to `[incident] sns_topic_arn` (never a value).
//! 4. `report`: JSON and Markdown in `incident.report_dir`; the incident closes (`resolved`, or
//!    `failed` naming the steps that failed).
//!
//! The incident row is written before the API answers `202`, and every step's start and end is
//! written as it happens, so a daemon killed mid-incident resumes it at start ([`Incidents::resume`])
//! from the first step that has not ended. Steps are safe to run again: the rotation is found by
//! its id in the incident (or adopted from the journal), the audit and the report are recomputed,
//! and the notice is at-least-once (a crash between SNS accepting it and the journal write sends
//! it again; a FIFO topic deduplicates by incident id).
//!
//! Nothing here ever holds a secret value: the incident document is built from journal facts,
//! CloudTrail records and the request's reason.
//!
//! Owns the `incidents` table (`store.rs`) and the report files. Must never import `http` or
//! `cli`; it drives the rotation core through its public API only.

pub mod audit;
pub mod free_text;
pub mod report;
pub mod store;
pub mod store_dynamodb;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aws::SecretsWriteApi;
use crate::aws::{FifoIds, Notification, NotifyApi, is_fifo_topic};
use crate::config::{Config, SecretSpec};
use crate::domain::Strategy;
use crate::domain::view::SharedView;
use crate::rotation::journal::{State, Trigger};
use crate::rotation::{RequestError, RequestOptions, RotationCore};
use crate::store::{StateStore, StoreError};
use crate::telemetry::Metrics;
use store::IncidentStore;

pub use audit::{Audit, AuditFlag, AuditReader};

/// The service on the real SNS and CloudWatch Logs adapters.
pub type Service = Incidents<crate::aws::sns::Sns, crate::aws::cloudwatchlogs::CloudWatchLogs>;

/// The steps of an incident, in order.
pub const STEPS: [&str; 4] = ["rotate", "audit", "notify", "report"];

/// The longest wait for a rotation change before the incident looks again anyway.
const CHANGE_SAFETY_NET: Duration = Duration::from_secs(60);
/// Attempts of the SNS publish before the notify step fails.
const NOTIFY_ATTEMPTS: u32 = 5;
/// Attempts of the first notice (`incident_opened`) before it is given up (logged as an error;
/// the report notice still follows).
const OPENED_NOTICE_ATTEMPTS: u32 = 10;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Steps are running (or will resume at start).
    Open,
    /// Every step succeeded (or was skipped with a reason).
    Resolved,
    /// At least one step failed; the report says which.
    Failed,
}

impl Status {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Resolved => "resolved",
            Status::Failed => "failed",
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Started, not ended (a crash leaves it here; resume runs it again).
    Running,
    /// Succeeded.
    Done,
    /// Not applicable (the message says why).
    Skipped,
    /// Failed (the message says why).
    Failed,
}

impl StepState {
    /// Whether the step has ended.
    pub fn ended(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::Skipped | StepState::Failed
        )
    }

    /// The text shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
        }
    }
}

/// One step of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// One of [`STEPS`].
    pub name: String,
    /// Where it stands.
    pub state: StepState,
    /// When it (last) started, milliseconds since the epoch.
    pub started_at_ms: Option<i64>,
    /// When it ended, milliseconds since the epoch.
    pub ended_at_ms: Option<i64>,
    /// How many times it was started (more than 1 after a crash).
    pub runs: u32,
    /// What happened, in a sentence (never a value).
    pub message: Option<String>,
}

/// One entry of the rotation's timeline, copied from the rotation journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationEvent {
    /// Seconds since the epoch.
    pub at: i64,
    /// The rotation step.
    pub step: String,
    /// Its outcome.
    pub outcome: String,
    /// The journal's sentence.
    pub message: Option<String>,
}

/// A compromise incident: what the store keeps (the `doc` column) and the API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// 32 hex characters.
    pub incident_id: String,
    /// The `secret` label.
    pub secret: String,
    /// The Secrets Manager id.
    pub secret_id: String,
    /// The rotation strategy.
    pub strategy: Strategy,
    /// The configured impact.
    pub impact: String,
    /// Why it was reported.
    pub reason: String,
    /// Who reported it.
    pub reported_by: String,
    /// Where it stands.
    pub status: Status,
    /// Opened, milliseconds since the epoch.
    pub opened_at_ms: i64,
    /// Closed, milliseconds since the epoch.
    pub closed_at_ms: Option<i64>,
    /// The steps, in order.
    pub steps: Vec<StepRecord>,
    /// The compromise rotation.
    pub rotation_id: Option<String>,
    /// The version that is AWSCURRENT after the rotation.
    pub new_version_id: Option<String>,
    /// The version that was AWSCURRENT when the incident opened.
    pub previous_version_id: Option<String>,
    /// When AWSCURRENT moved to the new version (seconds since the epoch).
    pub rotated_at: Option<i64>,
    /// A rotation that was in grace and was finalized at once.
    pub finalized_earlier_rotation: Option<String>,
    /// A running non-compromise rotation that the compromise stopped before its finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted_rotation: Option<String>,
    /// The rotation's own timeline.
    pub rotation_events: Vec<RotationEvent>,
    /// The access audit.
    pub audit: Option<Audit>,
    /// The SNS MessageId of the notice.
    pub notice_message_id: Option<String>,
    /// The report files.
    pub report_json: Option<PathBuf>,
    /// The Markdown report file.
    pub report_md: Option<PathBuf>,
    /// What a human must still do.
    pub todo: Vec<String>,
    /// A consumer check (`verify`) that failed during the compromise rotation's watch: the
    /// rotation is never rolled back, so that consumer must be fixed by hand (issue #14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_failing: Option<VerifyFinding>,
}

/// A verify check that failed after a compromise rotation, as the incident last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyFinding {
    /// The check's name (it names the consumer it probes).
    pub check: String,
    /// What it last observed when it failed (never a secret value).
    pub value: String,
    /// Whether it still failed in the last round the incident saw.
    pub failing_now: bool,
    /// Watch rounds run when the incident looked.
    pub rounds: u32,
}

/// The failing check of a rotation's watch state, if one failed. Pure.
pub fn verify_finding(v: &crate::rotation::verify::VerifyState) -> Option<VerifyFinding> {
    let f = v.failing.as_ref()?;
    Some(VerifyFinding {
        check: f.check.clone(),
        value: f.value.clone(),
        failing_now: v.consecutive.contains_key(&f.check),
        rounds: v.rounds,
    })
}

impl Incident {
    /// The status URL (relative).
    pub fn url(&self) -> String {
        format!("/incidents/{}", self.incident_id)
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn step_mut(&mut self, name: &str) -> &mut StepRecord {
        if let Some(i) = self.steps.iter().position(|s| s.name == name) {
            &mut self.steps[i]
        } else {
            self.steps.push(StepRecord {
                name: name.to_string(),
                state: StepState::Pending,
                started_at_ms: None,
                ended_at_ms: None,
                runs: 0,
                message: None,
            });
            let last = self.steps.len() - 1;
            &mut self.steps[last]
        }
    }

    /// The status the incident closes with once every step ended.
    pub fn final_status(&self) -> Status {
        if self.steps.iter().any(|s| s.state == StepState::Failed) {
            Status::Failed
        } else {
            Status::Resolved
        }
    }
}

/// One notice of incident `inc` to the security topic: attributes `secret`, `incident_id` and
/// `kind`; on a FIFO topic one group per incident and one deduplication id per kind (the report
/// keeps the id it always had, `incident-<id>`).
fn security_notice(
    topic_arn: &str,
    inc: &Incident,
    kind: &str,
    subject: String,
    body: String,
) -> Notification {
    let dedup = match kind {
        "incident_report" => format!("incident-{}", inc.incident_id),
        other => format!(
            "incident-{}-{}",
            inc.incident_id,
            other.trim_start_matches("incident_")
        ),
    };
    Notification {
        topic_arn: topic_arn.to_string(),
        subject,
        body,
        attributes: vec![
            ("secret".into(), inc.secret.clone()),
            ("incident_id".into(), inc.incident_id.clone()),
            ("kind".into(), kind.into()),
        ],
        fifo: is_fifo_topic(topic_arn).then(|| FifoIds {
            group_id: format!("incident-{}", inc.incident_id),
            deduplication_id: dedup,
        }),
    }
}

/// A new incident document for `spec`.
pub fn new_incident(
    id: &str,
    spec: &SecretSpec,
    reason: &str,
    reported_by: &str,
    now_ms: i64,
) -> Incident {
    Incident {
        incident_id: id.to_string(),
        secret: spec.name.clone(),
        secret_id: spec.id.clone(),
        strategy: spec.rotation.strategy,
        impact: spec.impact.clone(),
        reason: free_text::scrub(reason, free_text::MAX_REASON),
        reported_by: free_text::scrub(reported_by, free_text::MAX_REPORTER),
        status: Status::Open,
        opened_at_ms: now_ms,
        closed_at_ms: None,
        steps: STEPS
            .iter()
            .map(|n| StepRecord {
                name: n.to_string(),
                state: StepState::Pending,
                started_at_ms: None,
                ended_at_ms: None,
                runs: 0,
                message: None,
            })
            .collect(),
        rotation_id: None,
        new_version_id: None,
        previous_version_id: None,
        rotated_at: None,
        finalized_earlier_rotation: None,
        preempted_rotation: None,
        rotation_events: Vec::new(),
        audit: None,
        notice_message_id: None,
        report_json: None,
        report_md: None,
        todo: Vec::new(),
        verify_failing: None,
    }
}

/// Why an incident could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not in the inventory.
    #[error("unknown secret {0:?}: not in the inventory")]
    UnknownSecret(String),
    /// The store could not record it: nothing was started.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No id could be drawn.
    #[error("cannot draw an incident id from the OS random number generator: {0}")]
    Random(String),
}

/// What [`Incidents::open`] did.
#[derive(Debug, Clone)]
pub enum Opened {
    /// A new incident was recorded and started.
    New(Incident),
    /// An incident on the secret was already open; nothing new started.
    Existing(Incident),
}

/// The outcome of one step run.
struct StepResult {
    state: StepState,
    message: String,
}

impl StepResult {
    fn done(m: impl Into<String>) -> StepResult {
        StepResult {
            state: StepState::Done,
            message: m.into(),
        }
    }
    fn skipped(m: impl Into<String>) -> StepResult {
        StepResult {
            state: StepState::Skipped,
            message: m.into(),
        }
    }
    fn failed(m: impl Into<String>) -> StepResult {
        StepResult {
            state: StepState::Failed,
            message: m.into(),
        }
    }
}

/// The incident service: opens incidents and drives each one to its end.
/// `A` is the Secrets Manager side of the rotation core (the SDK adapter in the daemon, a fake
/// in tests).
pub struct Incidents<N, L, A: SecretsWriteApi = crate::aws::secretsmanager::SecretsManager> {
    store: StateStore,
    config: Arc<Config>,
    engine: Arc<RotationCore<A>>,
    notify: N,
    logs: Option<L>,
    metrics: Arc<Metrics>,
    view: SharedView,
    /// Incident ids with a task driving them.
    driving: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes an incident from `driving` when its task ends.
struct Driving<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Where reports go: `incident.report_dir`, else `incidents/` next to the state file.
pub fn report_dir(config: &Config) -> PathBuf {
    match &config.incident {
        Some(i) => i.report_dir.clone(),
        None => config
            .state
            .path
            .parent()
            .map(|p| p.join("incidents"))
            .unwrap_or_else(|| PathBuf::from("incidents")),
    }
}

impl<N: NotifyApi, L: crate::aws::LogsApi, A: SecretsWriteApi + 'static> Incidents<N, L, A> {
    /// The service; call [`Incidents::resume`] next.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: impl Into<StateStore>,
        config: Arc<Config>,
        engine: Arc<RotationCore<A>>,
        notify: N,
        logs: Option<L>,
        metrics: Arc<Metrics>,
        view: SharedView,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        for spec in &config.secrets {
            metrics.init_counters(&spec.name);
        }
        Arc::new(Incidents {
            store: store.into(),
            config,
            engine,
            notify,
            logs,
            metrics,
            view,
            driving: Mutex::new(HashSet::new()),
            shutdown,
        })
    }

    /// The inventory entry for a name from the URL.
    pub fn find_secret(&self, name: &str) -> Option<&SecretSpec> {
        self.engine.find_secret(name)
    }

    /// Opens an incident on `spec` (durably, before it returns), or returns the open one.
    pub fn open(
        self: &Arc<Self>,
        secret: &str,
        reason: &str,
        reported_by: &str,
    ) -> Result<Opened, OpenError> {
        let spec = self
            .find_secret(secret)
            .ok_or_else(|| OpenError::UnknownSecret(secret.to_string()))?;
        let id =
            crate::rotation::journal::new_id().map_err(|e| OpenError::Random(e.to_string()))?;
        let inc = new_incident(&id, spec, reason, reported_by, now_ms());
        match self.store.create_incident(&inc)? {
            Ok(()) => {
                self.metrics.count_incidents(&inc.secret, 1);
                self.metrics.set_incident_open(&inc.secret, true);
                warn!(secret = %inc.secret, incident = %inc.incident_id, reported_by = %inc.reported_by, "Compromise incident opened and journaled.");
                crate::rotation::failpoint::hit("incident:accepted");
                self.spawn_opened_notice(inc.clone());
                self.spawn(inc.incident_id.clone());
                Ok(Opened::New(inc))
            }
            Err(existing) => Ok(Opened::Existing(existing)),
        }
    }

    /// One incident.
    pub fn get(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.store.incident(id)
    }

    /// The latest incidents, newest first.
    pub fn list(&self, limit: u32) -> Result<Vec<Incident>, StoreError> {
        self.store.recent_incidents(limit)
    }

    /// Restarts every open incident and restores the incident metrics from the store (the
    /// counter carries every incident ever opened, so one opened just before a crash is not
    /// lost to `increase()`). Returns how many incidents were resumed.
    pub fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        for (secret, n) in self.store.incident_counts()? {
            if self.config.secrets.iter().any(|s| s.name == secret) {
                self.metrics.count_incidents(&secret, n);
            }
        }
        let open = self.store.open_incidents()?;
        for inc in &open {
            if self.store.opened_notice(&inc.incident_id)?.is_none() {
                self.spawn_opened_notice(inc.clone());
            }
            self.metrics.set_incident_open(&inc.secret, true);
            info!(secret = %inc.secret, incident = %inc.incident_id, "Resuming an open compromise incident.");
            self.spawn(inc.incident_id.clone());
        }
        self.metrics.mark_dirty();
        Ok(open.len())
    }

    /// Picks up every open incident that no task drives (its task stopped on a store error).
    /// Returns how many it restarted.
    pub fn redrive(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut n = 0;
        for inc in self.store.open_incidents()? {
            if lock(&self.driving).contains(&inc.incident_id) {
                continue;
            }
            warn!(secret = %inc.secret, incident = %inc.incident_id, "An open incident had no task driving it: driving it again.");
            self.spawn(inc.incident_id);
            n += 1;
        }
        Ok(n)
    }

    /// Runs [`Incidents::redrive`] every [`crate::rotation::REDRIVE_EVERY`] until shutdown.
    pub async fn run_redrive(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::rotation::REDRIVE_EVERY) => {}
                _ = self.shutdown.cancelled() => return,
            }
            if let Err(e) = self.redrive() {
                warn!(error = %e, "Cannot look for open incidents without a task; trying again later.");
            }
        }
    }

    fn spawn(self: &Arc<Self>, id: String) {
        if !lock(&self.driving).insert(id.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _guard = Driving(&me.driving, id.clone());
            if let Err(e) = me.drive(&id).await {
                error!(incident = %id, error = %e, "Incident stopped on a store error; the re-drive resumes it within a minute.");
            }
        });
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    async fn drive(self: &Arc<Self>, id: &str) -> Result<(), StoreError> {
        let Some(mut inc) = self.store.incident(id)? else {
            return Ok(());
        };
        for name in STEPS {
            if inc.step(name).is_some_and(|s| s.state.ended()) {
                continue;
            }
            if self.stopping() {
                return Ok(());
            }
            {
                let s = inc.step_mut(name);
                s.state = StepState::Running;
                s.started_at_ms = Some(now_ms());
                s.ended_at_ms = None;
                s.runs += 1;
            }
            self.store.save_incident(&inc)?;
            info!(incident = %inc.incident_id, secret = %inc.secret, step = name, "Incident step started.");
            let result = match name {
                "rotate" => self.rotate(&mut inc).await?,
                "audit" => self.audit(&mut inc).await,
                "notify" => self.notice(&mut inc).await,
                _ => self.report(&mut inc),
            };
            let Some(result) = result else {
                // Shutting down mid-step: the step resumes at the next start.
                return Ok(());
            };
            {
                let s = inc.step_mut(name);
                s.state = result.state;
                s.ended_at_ms = Some(now_ms());
                s.message = Some(result.message.clone());
            }
            if name == "report" {
                inc.status = inc.final_status();
                inc.closed_at_ms = inc.step("report").and_then(|s| s.ended_at_ms);
                // Rewrite the files with the closing status (the report step wrote them while
                // the incident was still open).
                if result.state == StepState::Done
                    && let Err(e) = report::write_files(&report_dir(&self.config), &inc)
                {
                    warn!(incident = %inc.incident_id, error = %e, "Cannot rewrite the report with the closing status.");
                }
            }
            self.store.save_incident(&inc)?;
            let level_ok = result.state != StepState::Failed;
            if level_ok {
                info!(incident = %inc.incident_id, secret = %inc.secret, step = name, outcome = result.state.as_str(), message = %result.message, "Incident step ended.");
            } else {
                error!(incident = %inc.incident_id, secret = %inc.secret, step = name, message = %result.message, "Incident step failed.");
            }
            crate::rotation::failpoint::hit(&format!("incident:{name}:done"));
        }
        if inc.status != Status::Open {
            self.metrics.set_incident_open(&inc.secret, false);
            info!(incident = %inc.incident_id, secret = %inc.secret, status = inc.status.as_str(), "Compromise incident closed.");
        }
        Ok(())
    }

    /// Step 1: the compromise rotation. `Ok(None)` when shutting down.
    async fn rotate(&self, inc: &mut Incident) -> Result<Option<StepResult>, StoreError> {
        let Some(spec) = self.config.secrets.iter().find(|s| s.name == inc.secret) else {
            return Ok(Some(StepResult::failed(format!(
                "{} is no longer in the inventory",
                inc.secret
            ))));
        };
        let spec_name = spec.name.clone();
        // Every change of a rotation's state wakes this up; it never polls the journal.
        let mut changes = self.engine.subscribe();
        loop {
            if let Some(rid) = inc.rotation_id.clone() {
                // Follow our rotation to its end.
                loop {
                    let Some((r, events)) = self.engine.status(&rid)? else {
                        return Ok(Some(StepResult::failed(format!(
                            "rotation {rid} is not in the journal"
                        ))));
                    };
                    if r.state == State::Grace {
                        // A compromise rotation has no grace; make sure of it.
                        self.engine.finalize_now(&rid)?;
                    }
                    if !r.state.is_active() && self.first_round_pending(&r) {
                        // The consumers' verdict on the new value is part of the incident:
                        // wait for the watch's first round (one `[verify] every` after finish).
                        if !self.wait_for_a_change(&mut changes).await {
                            return Ok(None);
                        }
                        continue;
                    }
                    if !r.state.is_active() {
                        inc.verify_failing = r.detail.verify.as_ref().and_then(verify_finding);
                        inc.rotation_events = events
                            .into_iter()
                            .map(|e| RotationEvent {
                                at: e.at,
                                step: e.step,
                                outcome: e.outcome.as_str().to_string(),
                                message: e.message,
                            })
                            .collect();
                        inc.previous_version_id = r.detail.previous_version_id.clone();
                        inc.rotated_at = r.detail.finished_at;
                        return Ok(Some(match r.state {
                            State::Done => {
                                // Two-key strategies write the value without the old key at
                                // finalize, under the rotation's finalize token.
                                let version = if inc.strategy.keeps_two_keys() {
                                    r.finalize_token()
                                } else {
                                    r.token.clone()
                                };
                                let msg = format!(
                                    "rotation {rid} finished and finalized: AWSCURRENT is version {version}; the previous value no longer works ({})",
                                    finalize_words(inc.strategy)
                                );
                                inc.new_version_id = Some(version);
                                StepResult::done(msg)
                            }
                            other => StepResult::failed(format!(
                                "rotation {rid} ended {}: {}",
                                other.as_str(),
                                r.error.unwrap_or_default()
                            )),
                        }));
                    }
                    if !self.wait_for_a_change(&mut changes).await {
                        return Ok(None);
                    }
                }
            }
            match self.engine.request(
                &spec_name,
                Trigger::Compromise,
                RequestOptions {
                    grace: Some(Duration::ZERO),
                },
            ) {
                Ok(r) => {
                    info!(incident = %inc.incident_id, rotation = %r.id, "Compromise rotation requested.");
                    inc.rotation_id = Some(r.id);
                    self.store.save_incident(inc)?;
                }
                Err(RequestError::Busy(r)) => {
                    if r.trigger == Trigger::Compromise
                        && r.requested_at * 1000 >= inc.opened_at_ms - 1000
                    {
                        // Ours, requested before a crash that came before the journal write.
                        inc.rotation_id = Some(r.id.clone());
                        self.store.save_incident(inc)?;
                    } else {
                        if r.state == State::Grace {
                            if inc.finalized_earlier_rotation.as_deref() != Some(r.id.as_str()) {
                                info!(incident = %inc.incident_id, rotation = %r.id, "A rotation in grace still accepts the previous key: finalizing it now, in compromise mode.");
                                inc.finalized_earlier_rotation = Some(r.id.clone());
                                self.store.save_incident(inc)?;
                            }
                            self.engine.finalize_now(&r.id)?;
                        } else if self
                            .engine
                            .preempt(&r.id, &format!("compromise incident {}", inc.incident_id))
                            .await?
                        {
                            warn!(incident = %inc.incident_id, rotation = %r.id, "A running rotation of the secret was pre-empted by the compromise.");
                            inc.preempted_rotation = Some(r.id.clone());
                            self.store.save_incident(inc)?;
                            continue;
                        }
                        if !self.wait_for_a_change(&mut changes).await {
                            return Ok(None);
                        }
                    }
                }
                Err(e @ (RequestError::Refused(_) | RequestError::Preflight { .. })) => {
                    return Ok(Some(StepResult::failed(format!(
                        "{e}; rotate the secret by hand"
                    ))));
                }
                Err(e @ RequestError::UnknownSecret(_)) => {
                    return Ok(Some(StepResult::failed(e.to_string())));
                }
                Err(RequestError::Store(e)) => return Err(e),
                Err(e @ RequestError::Random(_)) => {
                    return Ok(Some(StepResult::failed(e.to_string())));
                }
            }
        }
    }

    /// Sends the first notice (`kind = incident_opened`) on its own task, so neither a slow SNS
    /// nor its retries hold back the rotation. Retried with backoff up to
    /// [`OPENED_NOTICE_ATTEMPTS`] times; recorded once SNS took it (a resume sends it again only
    /// if it was never recorded; a FIFO topic deduplicates by incident id).
    fn spawn_opened_notice(self: &Arc<Self>, inc: Incident) {
        let Some(cfg) = self.config.incident.clone() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let lookback = crate::schedule::format_duration(cfg.audit_lookback);
            let base = format!("http://{}", me.config.server.listen);
            let (subject, body) = report::opened_notice(&inc, &base, &lookback);
            let n = security_notice(&cfg.sns_topic_arn, &inc, "incident_opened", subject, body);
            for attempt in 0..OPENED_NOTICE_ATTEMPTS {
                if attempt > 0 {
                    let wait = crate::reminder::backoff(attempt, fastrand::f64());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = me.shutdown.cancelled() => return,
                    }
                }
                match me.notify.publish(&n).await {
                    Ok(message_id) => {
                        if let Err(e) = me.store.record_opened_notice(&inc.incident_id, &message_id)
                        {
                            warn!(incident = %inc.incident_id, error = %e, "Cannot record that the first incident notice was sent; a restart may send it again.");
                        }
                        info!(incident = %inc.incident_id, secret = %inc.secret, %message_id, "First incident notice accepted by SNS.");
                        return;
                    }
                    Err(e) => {
                        warn!(incident = %inc.incident_id, attempt = attempt + 1, error = %e, "First incident notice not accepted by SNS; retrying.");
                    }
                }
            }
            error!(incident = %inc.incident_id, secret = %inc.secret, "SNS refused the first incident notice {OPENED_NOTICE_ATTEMPTS} times; the report notice will still follow.");
        });
    }

    /// Waits until some rotation's state changes (or a minute passes: a safety net, never the
    /// pace). False when shutting down.
    async fn wait_for_a_change(&self, changes: &mut tokio::sync::watch::Receiver<u64>) -> bool {
        if self.stopping() {
            return false;
        }
        tokio::select! {
            _ = changes.changed() => true,
            _ = tokio::time::sleep(CHANGE_SAFETY_NET) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// Step 2: the access audit. `None` when shutting down.
    async fn audit(&self, inc: &mut Incident) -> Option<StepResult> {
        let lookback = self
            .config
            .incident
            .as_ref()
            .map(|i| i.audit_lookback)
            .unwrap_or(Duration::from_secs(30 * 86_400));
        let log_group = self
            .config
            .access
            .as_ref()
            .and_then(|a| a.log_group.as_deref());
        let (Some(access), Some(log_group), Some(logs)) =
            (&self.config.access, log_group, &self.logs)
        else {
            return Some(StepResult::skipped(
                "no [access] log_group is configured: audit CloudTrail for reads of the secret by hand",
            ));
        };
        let Some(spec) = self.config.secrets.iter().find(|s| s.name == inc.secret) else {
            return Some(StepResult::failed("the secret left the inventory"));
        };
        let end_ms = now_ms();
        let start_ms = end_ms - i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX / 4);
        let flagged = audit::flagged(&self.view, &inc.secret, start_ms);
        let shutdown = self.shutdown.clone();
        let run = audit::run(logs, access, spec, &self.view, start_ms, end_ms, flagged);
        let result = tokio::select! {
            r = run => r,
            _ = shutdown.cancelled() => return None,
        };
        Some(match result {
            Ok(a) => {
                let undeclared = a
                    .readers
                    .iter()
                    .filter(|r| !r.declared && r.reads > 0)
                    .count();
                let msg = format!(
                    "{} principal(s) read the secret in the last {} ({} undeclared); {} finding(s) flagged; {} log event(s) read",
                    a.readers.iter().filter(|r| r.reads > 0).count(),
                    crate::schedule::format_duration(lookback),
                    undeclared,
                    a.flagged.len(),
                    a.events_read
                );
                inc.audit = Some(a);
                StepResult::done(msg)
            }
            Err(e) => {
                warn!(incident = %inc.incident_id, error = %e, "Incident audit cannot read the log group.");
                let short: String = e.message.chars().take(200).collect();
                StepResult::failed(format!(
                    "cannot read the log group {}: {} {} failed ({}): {short}",
                    log_group,
                    e.service,
                    e.operation,
                    e.kind.as_str()
                ))
            }
        })
    }

    /// Step 3: the security team's notice. `None` when shutting down.
    async fn notice(&self, inc: &mut Incident) -> Option<StepResult> {
        let Some(cfg) = &self.config.incident else {
            return Some(StepResult::skipped(
                "no [incident] sns_topic_arn is configured: notify the security team by hand",
            ));
        };
        if inc.notice_message_id.is_some() {
            return Some(StepResult::done("the notice was already accepted by SNS"));
        }
        let base = format!("http://{}", self.config.server.listen);
        let dir = report_dir(&self.config);
        let (subject, body) = report::notice(inc, &base, &dir);
        let n = security_notice(&cfg.sns_topic_arn, inc, "incident_report", subject, body);
        let mut last = String::new();
        for attempt in 0..NOTIFY_ATTEMPTS {
            if attempt > 0 {
                let wait = crate::reminder::backoff(attempt, fastrand::f64());
                let shutdown = self.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
            match self.notify.publish(&n).await {
                Ok(message_id) => {
                    let msg = format!(
                        "notice published to {} (MessageId {message_id})",
                        cfg.sns_topic_arn
                    );
                    inc.notice_message_id = Some(message_id);
                    return Some(StepResult::done(msg));
                }
                Err(e) => {
                    warn!(incident = %inc.incident_id, attempt = attempt + 1, error = %e, "Incident notice not accepted by SNS.");
                    last = e.to_string();
                }
            }
        }
        Some(StepResult::failed(format!(
            "SNS refused the notice {NOTIFY_ATTEMPTS} times: {last}"
        )))
    }

    /// Whether a finished compromise rotation with verify checks has not run its first watch
    /// round yet (and is not late for it by more than [`CHANGE_SAFETY_NET`]).
    fn first_round_pending(&self, r: &crate::rotation::journal::Rotation) -> bool {
        let Some(v) = r.detail.verify.as_ref() else {
            return false;
        };
        if r.state != State::Done || v.done || v.rounds > 0 {
            return false;
        }
        let every = i64::try_from(self.config.verify.every.as_secs()).unwrap_or(i64::MAX);
        let late = i64::try_from(CHANGE_SAFETY_NET.as_secs()).unwrap_or(60);
        let due = r
            .detail
            .finished_at
            .unwrap_or(r.updated_at)
            .saturating_add(every)
            .saturating_add(late);
        Utc::now().timestamp() < due
    }

    /// Step 4: the report files.
    fn report(&self, inc: &mut Incident) -> Option<StepResult> {
        let spec = self.config.secrets.iter().find(|s| s.name == inc.secret);
        // The watch went on during the audit and the notice: take its latest verdict.
        if let Some(rid) = inc.rotation_id.clone() {
            match self.engine.status(&rid) {
                Ok(Some((r, _))) => {
                    if let Some(f) = r.detail.verify.as_ref().and_then(verify_finding) {
                        inc.verify_failing = Some(f);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(incident = %inc.incident_id, error = %e, "Cannot read the rotation's watch for the report; it lists what the rotate step saw.");
                }
            }
        }
        inc.todo = report::todo(inc, spec);
        let dir = report_dir(&self.config);
        // Written with the status the incident will close with.
        let mut closing = inc.clone();
        closing.status = closing.final_status();
        match report::write_files(&dir, &closing) {
            Ok((json, md)) => {
                inc.report_json = Some(json);
                inc.report_md = Some(md.clone());
                Some(StepResult::done(format!(
                    "report written to {}",
                    md.display()
                )))
            }
            Err(e) => Some(StepResult::failed(format!(
                "cannot write the report in {}: {e}",
                dir.display()
            ))),
        }
    }
}

/// What finalize did for a strategy, in words.
pub fn finalize_words(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::DualKey => "the previous key was dropped: only the new key verifies",
        Strategy::PrimarySecondary => {
            "the re-encryption hook ran and the secondary key was dropped"
        }
        Strategy::Postgres => "the old user was set NOLOGIN and its sessions were terminated",
        Strategy::Redis => "the old password was removed and its clients were killed",
        Strategy::Elasticache => "the replication group's AUTH token was SET to the new one alone",
        Strategy::Random => "the value was replaced",
        Strategy::Lambda => "the rotation Lambda replaced the value",
        Strategy::None => "finalized",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SecretSpec {
        let cfg = crate::config::parse(
            r#"
[[secret]]
name = "JWT_SECRET"
id = "svc/jwt"
rotation = { strategy = "dual-key" }
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        cfg.secrets[0].clone()
    }

    #[test]
    fn final_status_table() {
        let mut inc = new_incident("a", &spec(), "r", "me", 0);
        assert_eq!(inc.status, Status::Open);
        for (states, want) in [
            (
                [
                    StepState::Done,
                    StepState::Done,
                    StepState::Done,
                    StepState::Done,
                ],
                Status::Resolved,
            ),
            (
                [
                    StepState::Done,
                    StepState::Skipped,
                    StepState::Skipped,
                    StepState::Done,
                ],
                Status::Resolved,
            ),
            (
                [
                    StepState::Failed,
                    StepState::Done,
                    StepState::Done,
                    StepState::Done,
                ],
                Status::Failed,
            ),
            (
                [
                    StepState::Done,
                    StepState::Done,
                    StepState::Failed,
                    StepState::Done,
                ],
                Status::Failed,
            ),
        ] {
            for (s, st) in inc.steps.iter_mut().zip(states) {
                s.state = st;
            }
            assert_eq!(inc.final_status(), want, "{states:?}");
        }
    }

    #[test]
    fn new_incident_has_every_step_pending() {
        let inc = new_incident("abc", &spec(), "leaked", "alice", 5);
        assert_eq!(
            inc.steps
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            STEPS
        );
        assert!(inc.steps.iter().all(|s| s.state == StepState::Pending));
        assert_eq!(inc.url(), "/incidents/abc");
        assert_eq!(inc.status, Status::Open);
    }
}
