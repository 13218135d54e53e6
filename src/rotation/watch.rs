//! The engine side of guarded rotation (SPEC §12): the pre-flight of manual and scheduled
//! requests ([`RotationCore::request_guarded`]), the `max_ratio` baselines of rotations that
//! skipped it, and the watch task of each rotation after finish.
//!
//! The watch runs every `[verify] every` and journals each round in the rotation's `detail`
//! (compare-and-set under the secret's lock, like every step), so a kill -9 resumes it: `drive`
//! (and [`RotationCore::resume`] for a compromise already finalized) starts it again, and the
//! next round is due `every` after the last journaled one. A finalize waits for the watch
//! (`drive` returns while it is pending) unless the rotation is a compromise. After `failures`
//! consecutive failures of one check the rotation is rolled back (`auto_rollback`); a
//! compromise rotation never is: its failing check is counted, logged and journaled for the
//! incident.
//!
//! It must never import the HTTP server, the CLI or the incident workflow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::aws::SecretsWriteApi;
use crate::config::{CheckKind, PromLimit, SecretSpec};

use super::engine::{RequestError, RequestOptions, RotationCore, lock, now_s};
use super::journal::{self, EventOutcome, JournalStore, Rotation, State, Trigger};
use super::verify::{self, CheckEnv, CheckResult, Next};

/// The journal's step word of a pre-flight event.
pub const PREFLIGHT: &str = "preflight";
/// The journal's step word of a watch round.
pub const VERIFY: &str = "verify";

/// Removes a rotation from `watching` when its watch task ends, however it ends.
struct Watching<'a>(
    &'a std::sync::Mutex<std::collections::HashSet<String>>,
    String,
);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

fn is_ratio(c: &crate::config::CheckSpec) -> bool {
    matches!(
        c.kind,
        CheckKind::Prometheus {
            limit: PromLimit::MaxRatio(_),
            ..
        }
    )
}

impl<A: SecretsWriteApi> RotationCore<A> {
    /// Counts each failed result in `keywarden_rotation_verify_failures_total`.
    fn count_failures(&self, secret: &str, results: &[CheckResult]) {
        for r in results.iter().filter(|r| !r.ok) {
            self.metrics.count_verify_failure(secret, &r.check);
        }
    }

    fn check_env<'a>(
        &'a self,
        spec: &'a SecretSpec,
        rot: Option<&'a Rotation>,
        step: &'a str,
    ) -> CheckEnv<'a> {
        CheckEnv {
            secret: &spec.name,
            secret_id: &spec.id,
            version_id: rot.map_or("", |r| r.token.as_str()),
            rotation_id: rot.map_or("", |r| r.id.as_str()),
            trigger: rot.map_or("manual", |r| r.trigger.as_str()),
            step,
            hide_env: self.hide_env(),
        }
    }

    /// Accepts a manual or scheduled rotation after its pre-flight: every check must pass once
    /// (the `max_ratio` checks' values become their baselines). A failing check refuses the
    /// request ([`RequestError::Preflight`]) unless `force`, and then is journaled as forced.
    pub async fn request_guarded(
        self: &Arc<Self>,
        secret: &str,
        trigger: Trigger,
        force: bool,
    ) -> Result<Rotation, RequestError> {
        let spec = self
            .find_secret(secret)
            .ok_or_else(|| RequestError::UnknownSecret(secret.to_string()))?;
        if spec.verify.is_empty() {
            return self.request(secret, trigger, RequestOptions::default());
        }
        if let Some(active) = self
            .store
            .recent_rotations(Some(&spec.name), 1)?
            .into_iter()
            .find(|r| r.state.is_active())
        {
            return Err(RequestError::Busy(Box::new(active)));
        }
        let env = self.check_env(spec, None, PREFLIGHT);
        let results =
            verify::run_all(&spec.verify, &self.config.verify, &BTreeMap::new(), env).await;
        self.count_failures(&spec.name, &results);
        let baselines: BTreeMap<String, f64> = spec
            .verify
            .iter()
            .filter(|c| is_ratio(c))
            .filter_map(|c| {
                let r = results.iter().find(|r| r.check == c.name)?;
                Some((c.name.clone(), r.number?))
            })
            .collect();
        let failed = results.iter().find(|r| !r.ok);
        if let Some(f) = failed {
            if !force {
                warn!(secret = %spec.name, check = %f.check, value = %f.value, trigger = trigger.as_str(), "Pre-flight check failed: the rotation does not start.");
                return Err(RequestError::Preflight {
                    check: f.check.clone(),
                    value: f.value.clone(),
                });
            }
            warn!(secret = %spec.name, check = %f.check, value = %f.value, "Pre-flight check failed; rotating anyway (forced).");
        }
        let rot = self.request_with(secret, trigger, RequestOptions::default(), Some(baselines))?;
        let (outcome, msg) = match failed {
            Some(f) => (
                EventOutcome::Failed,
                format!(
                    "pre-flight check {} failed: {}; forced past it",
                    f.check, f.value
                ),
            ),
            None => (
                EventOutcome::Ok,
                format!("pre-flight: all {} checks passed", results.len()),
            ),
        };
        if let Err(e) = self
            .store
            .note_rotation(&rot.id, PREFLIGHT, outcome, Some(&msg), now_s())
        {
            warn!(rotation = %rot.id, error = %e, "Cannot journal the pre-flight result.");
        }
        Ok(rot)
    }

    /// Measures the `max_ratio` baselines of a rotation that skipped the pre-flight (a
    /// compromise), before create: AWSCURRENT has not moved yet.
    pub(super) async fn measure_baselines(&self, rot: &Rotation) {
        let Some(spec) = self.config.secrets.iter().find(|s| s.name == rot.secret) else {
            return;
        };
        let ratio: Vec<_> = spec
            .verify
            .iter()
            .filter(|c| is_ratio(c))
            .cloned()
            .collect();
        let env = self.check_env(spec, Some(rot), PREFLIGHT);
        let results = verify::run_all(&ratio, &self.config.verify, &BTreeMap::new(), env).await;
        let mut detail = rot.detail.clone();
        let Some(v) = detail.verify.as_mut() else {
            return;
        };
        v.measured = true;
        for r in &results {
            if let Some(n) = r.number {
                v.baselines.insert(r.check.clone(), n);
            }
        }
        let msg = format!(
            "baselines measured before create: {}",
            results
                .iter()
                .map(|r| format!("{} = {}", r.check, r.value))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let held = self.secret_lock(&rot.secret);
        let _held = held.lock().await;
        let u = journal::Update {
            from: (rot.state, rot.step),
            step: rot.step,
            state: rot.state,
            attempts: rot.attempts,
            error: rot.error.as_deref(),
            detail: &detail,
            event: (PREFLIGHT, EventOutcome::Ok, Some(&msg)),
        };
        if let Err(e) = self.store.update_rotation(&rot.id, &u, now_s()) {
            error!(rotation = %rot.id, error = %e, "Cannot journal the baselines; retrying in 5 s.");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// Starts the watch task of rotation `id` unless one runs.
    pub(super) fn spawn_watch(self: &Arc<Self>, id: String) {
        if !lock(&self.watching).insert(id.clone()) {
            return;
        }
        let core = self.clone();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            let _guard = Watching(&core.watching, id.clone());
            tokio::select! {
                _ = core.watch(&id) => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Runs the watch rounds of one rotation until it is done or rolled back.
    async fn watch(self: &Arc<Self>, id: &str) {
        loop {
            let rot = match self.store.rotation(id) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    error!(rotation = id, error = %e, "Cannot read the rotation journal for its watch; retrying in 5 s.");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let compromise = rot.trigger == Trigger::Compromise;
            let Some(v) = rot.detail.verify.clone() else {
                return;
            };
            let live = rot.state == State::Grace || (compromise && rot.state == State::Done);
            if v.done || !live {
                return;
            }
            let Some(spec) = self.config.secrets.iter().find(|s| s.name == rot.secret) else {
                return;
            };
            let every = i64::try_from(self.config.verify.every.as_secs()).unwrap_or(i64::MAX);
            let since = v
                .last_round_at
                .or(rot.detail.finished_at)
                .unwrap_or_else(now_s);
            let wait = since.saturating_add(every).saturating_sub(now_s()).max(0);
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
            let env = self.check_env(spec, Some(&rot), VERIFY);
            let results =
                verify::run_all(&spec.verify, &self.config.verify, &v.baselines, env).await;
            self.count_failures(&spec.name, &results);
            let held = self.secret_lock(&rot.secret).lock_owned().await;
            let cur = match self.store.rotation(id) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    error!(rotation = id, error = %e, "Cannot read the rotation journal for its watch.");
                    continue;
                }
            };
            let mut detail = cur.detail.clone();
            let Some(state) = detail.verify.as_mut() else {
                return;
            };
            let now = now_s();
            let next = verify::after_round(
                state,
                &results,
                self.config.verify.failures,
                now,
                compromise,
            );
            let failed: Vec<String> = results
                .iter()
                .filter(|r| !r.ok)
                .map(|r| {
                    let n = state.consecutive.get(&r.check).copied().unwrap_or(0);
                    format!("check {} failed ({n} in a row): {}", r.check, r.value)
                })
                .collect();
            let (outcome, msg) = if failed.is_empty() {
                let mut m = format!(
                    "round {}: all {} checks passed",
                    state.rounds,
                    results.len()
                );
                if next == Next::Done {
                    m.push_str("; the watch is over");
                }
                (EventOutcome::Ok, m)
            } else {
                (
                    EventOutcome::Failed,
                    format!("round {}: {}", state.rounds, failed.join("; ")),
                )
            };
            let u = journal::Update {
                from: (cur.state, cur.step),
                step: cur.step,
                state: cur.state,
                attempts: cur.attempts,
                error: cur.error.as_deref(),
                detail: &detail,
                event: (VERIFY, outcome, Some(&msg)),
            };
            match self.store.update_rotation(id, &u, now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    error!(rotation = id, error = %e, "Cannot journal a watch round; it runs again.");
                    continue;
                }
            }
            if let Ok(Some(r)) = self.store.rotation(id) {
                self.publish(&r);
            }
            drop(held);
            if !failed.is_empty() {
                if compromise {
                    error!(secret = %rot.secret, rotation = id, detail = %msg, "A consumer check fails after a compromise rotation: it is never rolled back (that would restore the leaked value); fix the consumer.");
                } else {
                    warn!(secret = %rot.secret, rotation = id, detail = %msg, "A verify check failed during the watch.");
                }
            }
            match next {
                Next::Continue => {}
                Next::Done => {
                    info!(secret = %rot.secret, rotation = id, rounds = detail.verify.as_ref().map_or(0, |v| v.rounds), "Watch over: every check passed.");
                    if cur.state == State::Grace {
                        self.spawn_drive(id.to_string());
                    }
                    return;
                }
                Next::RollBack(f) => match self.auto_rollback(id, &f).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        error!(secret = %rot.secret, rotation = id, error = %e, "Automatic rollback failed; the next round tries again.");
                    }
                },
            }
        }
    }
}
