//! The scheduler: starts scheduled rotations of due secrets inside their windows.
//!
//! Every [`SCHEDULER_EVERY`] it reads the view and the journal for each inventory secret, asks
//! [`super::scheduled::decide`] (the pure decision) whether to start, wait or stay idle, shows a
//! waiting reason in the view, and requests a rotation from the engine when it is time.
//!
//! It must never import the HTTP server, the CLI, the incident workflow or the finalizer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{error, info, warn};

use crate::aws::SecretsWriteApi;
use crate::domain::view::RotationView;

use super::engine::{RequestError, RequestOptions, RotationCore};
use super::journal::{JournalStore, Trigger};
use super::scheduled;
use super::strategy;

/// How often the scheduler looks for due secrets.
const SCHEDULER_EVERY: Duration = Duration::from_secs(5);

impl<A: SecretsWriteApi> RotationCore<A> {
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
            let last = match self.store.recent_rotations(Some(&spec.name), 1) {
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
}
