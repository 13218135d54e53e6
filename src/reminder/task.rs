//! The [`Reminders`] task: it turns the reminders due into durable intents in the ledger,
//! publishes them through [`NotifyApi`], marks them sent once SNS accepted them, retries
//! failures with capped, jittered exponential [`backoff`], and stops on the shared
//! cancellation token with every unsent reminder still pending in the ledger. It also publishes
//! the scheduled-rotation notices the rotation scheduler records in the same ledger: it reads the
//! ledger's pending rows at every wake-up (one indexed query a second) and sends the new ones.
//!
//! This is the only part of the folder that does I/O or reads the clock. It must never import
//! the daemon, the HTTP server or the rotation core (the failpoint marker aside).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::aws::{AwsError, Notification, NotifyApi, is_fifo_topic};
use crate::config::Config;
use crate::domain::view::{SecretStatus, SharedView};
use crate::reminder::ledger::LedgerStore;
use crate::reminder::message::{AccessInfo, Message, MessageContext, date, fifo_ids, render};
use crate::reminder::plan::{ReminderKey, due_reminders};
use crate::store::{StateStore, StoreError};
use crate::telemetry::Metrics;

/// First retry delay after a failed publish.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How often the task looks for a finished metadata poll.
const WAKE_EVERY: Duration = Duration::from_secs(1);

/// The delay before retry number `attempts` (1 after the first failure): exponential from
/// `BACKOFF_BASE` (1 s), capped at `BACKOFF_CAP` (5 minutes), with "equal jitter": half the delay fixed, the
/// other half scaled by `jitter` in `[0, 1]`.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A pending reminder held by the task.
#[derive(Debug, Clone)]
struct Outbox {
    /// What to publish.
    message: Message,
    /// Failed attempts so far (from the ledger, then counted here).
    attempts: i64,
    /// Not before this instant.
    next_at: Instant,
    /// SNS accepted it but the ledger could not record that yet: only the record is retried.
    accepted: Option<String>,
}

/// The reminder task: evaluates the view, records intents, publishes them.
pub struct Reminders<N> {
    /// The SNS boundary.
    api: N,
    /// Configuration (`[reminders]`, inventory, `[access]`).
    config: Arc<Config>,
    /// Where statuses come from.
    view: SharedView,
    /// The ledger.
    ledger: StateStore,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Keys known to be in the ledger, so each evaluation only looks up new ones.
    known: HashSet<ReminderKey>,
    /// Pending reminders by key.
    outbox: BTreeMap<ReminderKey, Outbox>,
    /// The ledger's pending rows have been loaded.
    loaded: bool,
    /// The metadata poll whose view was last evaluated, and when the evaluation ran.
    evaluated: Option<(Option<Instant>, Instant)>,
    /// Draws the jitter of each retry delay, in `[0, 1]` (`fastrand::f64`; a fixed value in tests).
    jitter: fn() -> f64,
}

impl<N: NotifyApi> Reminders<N> {
    /// A task for `config.reminders`; does nothing useful without it.
    pub fn new(
        api: N,
        config: Arc<Config>,
        view: SharedView,
        store: impl Into<StateStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reminders {
            api,
            config,
            view,
            ledger: store.into(),
            metrics,
            known: HashSet::new(),
            outbox: BTreeMap::new(),
            loaded: false,
            evaluated: None,
            jitter: fastrand::f64,
        }
    }

    /// Loads the ledger's pending rows that are not in the outbox yet: at the first call the
    /// ones left before a restart (sent first thing), later the notices the rotation scheduler
    /// recorded.
    fn load_pending(&mut self) {
        match self.ledger.pending() {
            Ok(rows) => {
                let now = Instant::now();
                let mut new = 0;
                for row in rows {
                    if self.outbox.contains_key(&row.key) {
                        continue;
                    }
                    new += 1;
                    if self.loaded {
                        info!(secret = %row.key.secret, kind = row.key.kind(), "Notice recorded; publishing.");
                    }
                    self.known.insert(row.key.clone());
                    self.outbox.insert(
                        row.key,
                        Outbox {
                            message: row.message,
                            attempts: row.attempts,
                            next_at: now,
                            accepted: None,
                        },
                    );
                }
                if !self.loaded && new > 0 {
                    info!(
                        pending = new,
                        "Reminders recorded before a restart are still pending; sending them."
                    );
                }
                self.loaded = true;
            }
            Err(e) => error!(error = %e, "Cannot read pending reminders; will try again."),
        }
    }

    /// Computes the reminders due at `now` and records the new ones durably. Returns how many
    /// were recorded.
    pub fn evaluate(&mut self, now: i64) -> Result<usize, StoreError> {
        let Some(rc) = &self.config.reminders else {
            return Ok(0);
        };
        let topic = rc.sns_topic_arn.clone();
        let leads = rc.lead.clone();
        // Windows by secret: a planned rotation time moves the leads (SPEC §11).
        let windows: HashMap<&str, &crate::schedule::ScheduleExpr> = self
            .config
            .secrets
            .iter()
            .filter_map(|s| s.window.as_ref().map(|w| (s.name.as_str(), w)))
            .collect();
        let planned = |s: &SecretStatus| s.planned(windows.get(s.name.as_str()).copied(), now);
        let candidates: Vec<ReminderKey> = {
            let view = self.view.read();
            due_reminders(view.secrets.values().map(|s| (s, planned(s))), &leads, now)
                .into_iter()
                .filter(|k| !self.known.contains(k))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        // The ledger is read without holding the view's lock.
        let present = self.ledger.known(&candidates)?;
        self.known.extend(present);
        let mut intents: Vec<(ReminderKey, Message)> = Vec::new();
        {
            let view = self.view.read();
            for key in candidates {
                if self.known.contains(&key) {
                    continue;
                }
                let Some(status) = view.secrets.get(&key.secret) else {
                    continue;
                };
                let access = match (&self.config.access, view.access.get(&key.secret)) {
                    (_, Some(f)) => AccessInfo::Facts(f),
                    (None, None) => AccessInfo::Off,
                    (Some(_), None) => AccessInfo::NotYet,
                };
                let labels = self.view.targets().labels(status.target);
                let ctx = MessageContext {
                    status,
                    spec: self.config.secrets.iter().find(|s| s.name == key.secret),
                    access,
                    planned: planned(status),
                    now,
                    place: Some((&labels.account, &labels.region)),
                };
                let message = render(&key, &ctx);
                intents.push((key, message));
            }
        }
        if intents.is_empty() {
            return Ok(0);
        }
        let inserted = self.ledger.record_intents(&intents, now)?;
        let at = Instant::now();
        for (key, message) in intents {
            info!(
                secret = %key.secret,
                due = %date(key.due),
                lead = %key.lead_label(),
                kind = key.kind(),
                topic = %topic,
                "Reminder recorded; publishing."
            );
            self.known.insert(key.clone());
            self.outbox.entry(key).or_insert(Outbox {
                message,
                attempts: 0,
                next_at: at,
                accepted: None,
            });
        }
        Ok(inserted)
    }

    /// Publishes every reminder whose time has come. Stops early on shutdown.
    async fn send_ready(&mut self, shutdown: &CancellationToken) {
        let Some(rc) = &self.config.reminders else {
            return;
        };
        let topic = rc.sns_topic_arn.clone();
        let fifo = is_fifo_topic(&topic);
        let ready: Vec<ReminderKey> = {
            let now = Instant::now();
            self.outbox
                .iter()
                .filter(|(_, o)| o.next_at <= now)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in ready {
            if shutdown.is_cancelled() {
                return;
            }
            let Some(entry) = self.outbox.get(&key).cloned() else {
                continue;
            };
            let message_id = match entry.accepted {
                Some(id) => id,
                None => {
                    let notification = Notification {
                        topic_arn: topic.clone(),
                        subject: entry.message.subject.clone(),
                        body: entry.message.body.clone(),
                        attributes: entry.message.attributes.clone(),
                        fifo: fifo.then(|| fifo_ids(&key)),
                    };
                    let result = tokio::select! {
                        r = self.api.publish(&notification) => r,
                        _ = shutdown.cancelled() => return,
                    };
                    match result {
                        Ok(id) => {
                            crate::rotation::failpoint::hit("reminder:published");
                            id
                        }
                        Err(e) => {
                            self.failed(&key, &e);
                            continue;
                        }
                    }
                }
            };
            self.accepted(&key, message_id);
        }
    }

    /// SNS accepted a reminder: record it, then count it.
    fn accepted(&mut self, key: &ReminderKey, message_id: String) {
        match self
            .ledger
            .mark_sent(key, &message_id, Utc::now().timestamp())
        {
            Ok(_) if key.is_notice() => {
                self.outbox.remove(key);
                info!(
                    secret = %key.secret,
                    kind = key.kind(),
                    message_id = %message_id,
                    "Notice sent."
                );
            }
            Ok(_) => {
                self.outbox.remove(key);
                self.metrics.count_reminder(&key.secret, &key.lead_label());
                info!(
                    secret = %key.secret,
                    due = %date(key.due),
                    lead = %key.lead_label(),
                    message_id = %message_id,
                    "Reminder sent."
                );
            }
            Err(e) => {
                // Only the record is retried: publishing again would send a duplicate.
                error!(secret = %key.secret, error = %e, "SNS accepted a reminder but the store could not record it; retrying the record.");
                if let Some(o) = self.outbox.get_mut(key) {
                    o.accepted = Some(message_id);
                    o.next_at = Instant::now() + BACKOFF_BASE;
                }
            }
        }
    }

    /// A publish failed: count it, record it, schedule the retry.
    fn failed(&mut self, key: &ReminderKey, e: &AwsError) {
        self.metrics.count_reminder_failure(&key.secret);
        let text: String = e.to_string().chars().take(500).collect();
        let stored = self.ledger.count_failure(key, &text);
        let Some(o) = self.outbox.get_mut(key) else {
            return;
        };
        o.attempts = match stored {
            Ok(n) => n,
            Err(se) => {
                warn!(secret = %key.secret, error = %se, "Cannot record a failed reminder attempt.");
                o.attempts + 1
            }
        };
        let attempts = u32::try_from(o.attempts).unwrap_or(u32::MAX);
        let delay = backoff(attempts, (self.jitter)());
        o.next_at = Instant::now() + delay;
        warn!(
            secret = %key.secret,
            due = %date(key.due),
            lead = %key.lead_label(),
            kind = e.kind.as_str(),
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            error = %e,
            "Publishing a reminder failed; it stays pending and will be retried."
        );
    }

    /// Whether the view should be evaluated now: a metadata poll finished since the last
    /// evaluation, or a poll period passed (time alone can make a reminder due).
    fn should_evaluate(&self) -> bool {
        let last_poll = self
            .view
            .read()
            .polls
            .get(crate::inventory::poller::SOURCE)
            .and_then(|h| h.last_success);
        match self.evaluated {
            None => last_poll.is_some(),
            Some((seen, at)) => {
                seen != last_poll || at.elapsed() >= self.config.poll.metadata_every
            }
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut wake = tokio::time::interval(WAKE_EVERY.min(self.config.poll.metadata_every));
        wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_retry = self.outbox.values().map(|o| o.next_at).min();
            tokio::select! {
                _ = wake.tick() => {}
                _ = async {
                    match next_retry {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = shutdown.cancelled() => {}
            }
            if shutdown.is_cancelled() {
                break;
            }
            self.load_pending();
            if self.should_evaluate() {
                let last_poll = self
                    .view
                    .read()
                    .polls
                    .get(crate::inventory::poller::SOURCE)
                    .and_then(|h| h.last_success);
                match self.evaluate(Utc::now().timestamp()) {
                    Ok(n) => {
                        if n > 0 {
                            debug!(recorded = n, "Reminder evaluation recorded new reminders.");
                        }
                        self.evaluated = Some((last_poll, Instant::now()));
                    }
                    Err(e) => error!(error = %e, "Cannot record reminders; will try again."),
                }
            }
            self.send_ready(&shutdown).await;
        }
        info!(
            pending = self.outbox.len(),
            "Reminder sender stopped; pending reminders stay recorded."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    use crate::store::Store;

    use crate::aws::AwsErrorKind;
    use crate::domain::view::PollHealth;
    use crate::reminder::testing::{DAY, config_with, status};

    #[test]
    fn backoff_grows_caps_and_jitters() {
        for (attempts, jitter, expected_ms) in [
            (1, 0.0, 500),
            (1, 1.0, 1000),
            (2, 0.0, 1000),
            (3, 1.0, 4000),
            (9, 1.0, 256_000),
            (10, 1.0, 300_000),
            (10, 0.0, 150_000),
            (u32::MAX, 1.0, 300_000),
            (0, 1.0, 1000),
        ] {
            assert_eq!(
                backoff(attempts, jitter).as_millis(),
                expected_ms,
                "{attempts} {jitter}"
            );
        }
    }

    /// An SNS stand-in that refuses the first `failures` publishes and accepts every later one,
    /// noting when each attempt came and sending the id of each accepted message.
    #[derive(Clone)]
    struct FlakySns {
        /// How many publishes fail before the first success.
        failures: usize,
        /// The instant of every publish attempt, in order.
        attempts: Arc<Mutex<Vec<Instant>>>,
        /// Receives the MessageId of every accepted publish.
        accepted: mpsc::UnboundedSender<String>,
    }

    impl NotifyApi for FlakySns {
        async fn publish(&self, _notification: &Notification) -> Result<String, AwsError> {
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap();
                attempts.push(Instant::now());
                attempts.len()
            };
            if attempt <= self.failures {
                return Err(AwsError {
                    service: "sns",
                    operation: "Publish",
                    kind: AwsErrorKind::Throttled,
                    message: format!("rate exceeded (attempt {attempt})"),
                });
            }
            let id = format!("mid-{attempt}");
            self.accepted.send(id.clone()).unwrap();
            Ok(id)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_publish_is_retried_at_the_backoff_times_and_sent_once() {
        const FAILURES: usize = 3;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let config = Arc::new(config_with(""));
        let due = Utc::now().timestamp() + 7 * DAY;
        let view = SharedView::default();
        {
            let mut v = view.write();
            v.secrets
                .insert("JWT_SECRET".to_string(), status("JWT_SECRET", Some(due)));
            v.polls.insert(
                crate::inventory::poller::SOURCE,
                PollHealth {
                    last_success: Some(Instant::now()),
                    ..PollHealth::default()
                },
            );
        }
        let metrics = Arc::new(Metrics::new());
        metrics.set_leads(vec!["14d".to_string(), "overdue".to_string()]);
        let (accepted, mut accepted_rx) = mpsc::unbounded_channel();
        let sns = FlakySns {
            failures: FAILURES,
            attempts: Arc::default(),
            accepted,
        };
        let attempts = sns.attempts.clone();
        let mut task = Reminders::new(sns, config, view, store.clone(), metrics.clone());
        // The upper end of the jitter: every delay is the full exponential step.
        task.jitter = || 1.0;

        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let running = tokio::spawn(task.run(stop.clone()));
        let message_id = accepted_rx.recv().await.unwrap();
        // Ten more minutes of paused time: many wake-ups and evaluations, and no second publish.
        tokio::time::sleep(Duration::from_secs(600)).await;
        stop.cancel();
        running.await.unwrap();

        // The first attempt comes at once; retry n comes backoff(n) after failure n.
        let mut expected = vec![Duration::ZERO];
        for n in 1..=FAILURES {
            let last = expected[expected.len() - 1];
            expected.push(last + backoff(n as u32, 1.0));
        }
        assert_eq!(
            expected,
            [0, 1, 3, 7].map(Duration::from_secs).to_vec(),
            "the documented schedule: 1 s, 2 s, 4 s"
        );
        let seen: Vec<Duration> = attempts.lock().unwrap().iter().map(|t| *t - t0).collect();
        assert_eq!(seen, expected);
        assert_eq!(message_id, format!("mid-{}", FAILURES + 1));
        assert!(accepted_rx.try_recv().is_err(), "accepted a second time");

        let key = ReminderKey {
            secret: "JWT_SECRET".to_string(),
            due,
            lead_seconds: 14 * DAY,
        };
        let ledger = store;
        assert_eq!(
            crate::reminder::ledger::row(&ledger, &key).unwrap(),
            Some(("sent".to_string(), Some(message_id), FAILURES as i64))
        );
        assert!(ledger.pending().unwrap().is_empty());
        let text = metrics.render_text();
        for line in [
            format!("keywarden_reminder_failures_total{{secret=\"JWT_SECRET\",account=\"\",region=\"\"}} {FAILURES}\n"),
            "keywarden_reminders_sent_total{secret=\"JWT_SECRET\",account=\"\",region=\"\",lead=\"14d\"} 1\n".to_string(),
        ] {
            assert!(text.contains(&line), "no {line:?} in:\n{text}");
        }
    }
}
