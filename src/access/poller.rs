//! The access poller (SPEC §4): reads the CloudTrail records of `[access] log_group` with
//! FilterLogEvents every `poll.access_every`, counts each CloudTrail eventID exactly once, and
//! runs anomaly detection.
//!
//! A cycle reads `[checkpoint - overlap, now]` (late CloudTrail deliveries land inside the
//! overlap), in slices of at most an hour, every page through its own rate limiter. Each slice
//! is parsed, filtered (`eventSource` is Secrets Manager, `secretId` names a watched secret),
//! deduplicated by eventID against the ids already counted, sorted by time, and classified.
//! The new eventIDs, the checkpoint and the touched principals are committed to the store in one
//! transaction *before* metrics, logs and `GET /anomalies` see them: a crash never counts an
//! event twice (at worst a crash between commit and export drops that slice's increments).
//!
//! At start the poller restores the principals of the store and learns the log group's history
//! over `[now - baseline, first cycle start)`: history updates principal sets and rates and
//! raises nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::access::seen::SeenIds;
use crate::config::ConsumerPatterns;
use chrono::{DateTime, Utc};
use ipnet::IpNet;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::detect::{self, Anomaly, Detector, Event, Policy, PrincipalStats, Thresholds};
use crate::access::store::{AccessState, SliceCommit, StoredReader};
use crate::aws::{AwsError, LogEvent, LogsApi, QueueMessage};
use crate::cloudtrail::{self, AccessCounts, ParseError, Record, SecretIndex};
use crate::config::{AccessConfig, AccessSource, Config};
use crate::domain::targets::TargetId;
use crate::domain::view::{AccessFacts, Managed, SharedView};
use crate::store::{StateStore, StoreError};
use crate::telemetry::Metrics;

/// Label of this poller's metrics and readiness.
pub const SOURCE: &str = "access";

/// Longest time range read and committed in one piece.
const SLICE_MS: i64 = 60 * 60 * 1000;

/// Prefix of the CloudWatch Logs event ids of skipped records in `access_seen`, so that a
/// malformed line re-read in the overlap is counted once too.
const SKIPPED_PREFIX: &str = "cwl:";

/// Prefix of the SQS MessageIds of rejected messages in `access_seen`: a message left for the
/// dead-letter queue is received again until its maxReceiveCount, and counted once.
pub(super) const SQS_SKIPPED_PREFIX: &str = "sqs:";

/// A failed cycle.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// FilterLogEvents failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Shutdown was requested.
    #[error("stopped")]
    Stopped,
}

impl AccessError {
    /// The bounded `kind` label of `keywarden_poll_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            AccessError::Aws(e) => e.kind.as_str(),
            AccessError::Store(_) => "store",
            AccessError::Stopped => "other",
        }
    }
}

/// A token bucket of one token: at most `per_second` acquisitions per second.
#[derive(Debug)]
pub struct RateLimiter {
    /// Time between two requests.
    interval: Duration,
    /// Earliest time of the next request.
    next: tokio::time::Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_second` requests per second (at least one per hour).
    pub fn new(per_second: f64) -> RateLimiter {
        let secs = if per_second.is_finite() && per_second > 0.0 {
            (1.0 / per_second).min(3600.0)
        } else {
            1.0
        };
        RateLimiter {
            interval: Duration::from_secs_f64(secs),
            next: tokio::time::Instant::now(),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&mut self) {
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + self.interval;
    }
}

/// Reads every FilterLogEvents page of `[start_ms, end_ms]`, each through `limiter`, calling
/// `page` with each page's events. Returns the number of pages.
pub async fn scan<L: LogsApi>(
    api: &L,
    limiter: &mut RateLimiter,
    log_group: &str,
    start_ms: i64,
    end_ms: i64,
    mut page: impl FnMut(Vec<LogEvent>),
) -> Result<usize, AwsError> {
    let mut token = None;
    let mut pages = 0;
    loop {
        limiter.acquire().await;
        let p = api
            .filter_log_events_page(log_group, start_ms, end_ms, token)
            .await?;
        pages += 1;
        page(p.events);
        match p.next_token {
            Some(t) => token = Some(t),
            None => return Ok(pages),
        }
    }
}

/// What one cycle did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// FilterLogEvents pages read.
    pub pages: usize,
    /// Log events read.
    pub log_events: usize,
    /// Events counted (first delivery of an eventID on a watched secret).
    pub counted: usize,
    /// Events already counted (overlap re-reads and duplicate deliveries).
    pub repeated: usize,
    /// Records skipped as not JSON, oversized or malformed (first time read).
    pub skipped: usize,
    /// Anomalies raised.
    pub anomalies: usize,
}

/// A slice's new events, classified before the commit.
struct Classified {
    /// Events by secret, event and outcome.
    counts: AccessCounts,
    /// Anomalies, in time order.
    found: Vec<Anomaly>,
    /// Readers the slice touched, as they will be stored.
    readers: Vec<StoredReader>,
    /// Principals evicted from full sets during the slice.
    evictions: u64,
}

/// Per-secret context of a cycle.
struct SecretCtx {
    /// The `secret` label.
    name: String,
    /// Declared consumers (inventory secrets only).
    consumers: Option<ConsumerPatterns>,
    /// Expected sources.
    allowed_sources: Vec<IpNet>,
    /// Rotation grace in ms.
    grace_ms: i64,
    /// Last rotation in ms.
    last_rotated_ms: Option<i64>,
    /// AWSCURRENT version id.
    current_version: Option<String>,
    /// Whether it is in the inventory.
    inventory: bool,
}

impl SecretCtx {
    fn policy(&self) -> Policy<'_> {
        Policy {
            consumers: self.consumers.as_ref(),
            allowed_sources: &self.allowed_sources,
            grace_ms: self.grace_ms,
            last_rotated_ms: self.last_rotated_ms,
            current_version: self.current_version.as_deref(),
        }
    }
}

/// The secrets watched this cycle: an index from `secretId` to a context.
struct Watch {
    /// secretId forms to the index in `secrets`.
    index: SecretIndex,
    /// Contexts in the order of `index.names()`.
    secrets: Vec<SecretCtx>,
}

impl Watch {
    /// The watched secret a `secretId` of `record` means (a plain name means the secret of
    /// the account and region the call was made to).
    fn lookup(&self, record: &Record<'_>, secret_id: &str) -> Option<usize> {
        self.index.resolve_index_at(
            secret_id,
            record.recipient_account.as_deref(),
            record.aws_region.as_deref(),
        )
    }
}

/// Builds the watch list from the inventory and what the metadata poller knows.
fn build_watch(config: &Config, view: &SharedView) -> Watch {
    let targets = view.targets().clone();
    let view = view.read();
    let home = targets.labels(TargetId::HOME);
    let mut index = SecretIndex::with_home(&home.account, &home.region);
    let mut secrets = Vec::new();
    for spec in &config.secrets {
        let status = view.secrets.get(&spec.name);
        let place = crate::inventory::spec_place(config, spec)
            .filter(|(a, r)| !(**a == *home.account && **r == *home.region));
        let at = index.add_at(
            &spec.name,
            &spec.id,
            status.and_then(|s| s.arn.as_deref()),
            place,
        );
        if at < secrets.len() {
            continue;
        }
        secrets.push(SecretCtx {
            name: spec.name.clone(),
            consumers: Some(spec.consumer_set.clone()),
            allowed_sources: spec.allowed_sources.clone(),
            grace_ms: i64::try_from(spec.rotation.grace.as_millis()).unwrap_or(i64::MAX / 4),
            last_rotated_ms: status.and_then(|s| s.last_rotated).map(|t| t * 1000),
            current_version: status.and_then(|s| s.current_version.clone()),
            inventory: true,
        });
    }
    for s in view.secrets.values() {
        if s.managed != Managed::Discovered {
            continue;
        }
        let labels = (!s.target.is_home()).then(|| targets.labels(s.target));
        let place = labels.as_ref().map(|l| (&*l.account, &*l.region));
        let at = index.add_at(&s.name, &s.id, s.arn.as_deref(), place);
        if at < secrets.len() {
            continue;
        }
        secrets.push(SecretCtx {
            name: s.name.clone(),
            consumers: None,
            allowed_sources: Vec::new(),
            grace_ms: 0,
            last_rotated_ms: s.last_rotated.map(|t| t * 1000),
            current_version: s.current_version.clone(),
            inventory: false,
        });
    }
    // `secrets[i]` is the context of `index.names()[i]`.
    Watch { index, secrets }
}

/// One record attributed to watched secrets, ready to be classified.
struct Attributed<'a> {
    /// Log event timestamp (ms): windows, checkpoints and the seen-id horizon.
    log_ms: i64,
    /// When the call happened (ms): eventTime, or the log timestamp without one.
    time_ms: i64,
    /// The record.
    record: Record<'a>,
    /// Indexes of the watched secrets it concerns.
    secrets: Vec<usize>,
}

/// Result of sorting out one slice's log events (or one batch of queue messages).
#[derive(Default)]
struct Sorted<'a> {
    /// New events, sorted by time.
    new: Vec<Attributed<'a>>,
    /// New skipped records: (prefixed log event id or MessageId, timestamp, reason).
    skipped: Vec<(String, i64, &'static str)>,
    /// Already counted.
    repeated: usize,
}

/// One log event or queue message, parsed.
struct Input<'a> {
    /// CloudWatch Logs event id, or SQS MessageId: the key of a skipped record.
    key: &'a str,
    /// Log event timestamp, or when the message was received (ms).
    ts_ms: i64,
    /// The record, or the bounded reason it is not one.
    parsed: Result<Record<'a>, &'static str>,
}

impl<'a> Input<'a> {
    fn of_log_event(ev: &'a LogEvent) -> Input<'a> {
        Input {
            key: &ev.event_id,
            ts_ms: ev.timestamp_ms,
            parsed: cloudtrail::parse(&ev.message).map_err(ParseError::as_str),
        }
    }
}

/// Parses, filters and deduplicates a slice. Pure apart from reading `seen`. `prefix` marks
/// the keys of skipped inputs (their source).
fn sort_out<'a>(
    inputs: impl IntoIterator<Item = Input<'a>>,
    prefix: &str,
    watch: &Watch,
    seen: &SeenIds,
) -> Sorted<'a> {
    let mut out = Sorted::default();
    let mut fresh: HashSet<&str> = HashSet::new();
    for ev in inputs {
        let record = match ev.parsed {
            Ok(r) => r,
            Err(why) => {
                let key = format!("{prefix}{}", ev.key);
                if !seen.contains(&key) && fresh.insert(ev.key) {
                    out.skipped.push((key, ev.ts_ms, why));
                }
                continue;
            }
        };
        if record.event_source != cloudtrail::SECRETS_MANAGER {
            continue;
        }
        let mut secrets: Vec<usize> = record
            .secret_ids()
            .filter_map(|id| watch.lookup(&record, id))
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        if secrets.is_empty() {
            continue;
        }
        if seen.contains(record.event_id.as_ref()) {
            out.repeated += 1;
            continue;
        }
        // A duplicate delivery inside this slice: the id borrows from `events`.
        let id: &'a str = match &record.event_id {
            std::borrow::Cow::Borrowed(s) => s,
            std::borrow::Cow::Owned(_) => {
                // An escaped id: compare by value against the ones kept so far.
                if out.new.iter().any(|a| a.record.event_id == record.event_id) {
                    out.repeated += 1;
                    continue;
                }
                out.new.push(Attributed {
                    log_ms: ev.ts_ms,
                    time_ms: record.time_ms().unwrap_or(ev.ts_ms),
                    record,
                    secrets,
                });
                continue;
            }
        };
        if !fresh.insert(id) {
            out.repeated += 1;
            continue;
        }
        out.new.push(Attributed {
            log_ms: ev.ts_ms,
            time_ms: record.time_ms().unwrap_or(ev.ts_ms),
            record,
            secrets,
        });
    }
    out.new.sort_by(|a, b| {
        a.time_ms
            .cmp(&b.time_ms)
            .then_with(|| a.record.event_id.cmp(&b.record.event_id))
    });
    out
}

/// `time_ms`: when the call happened (see [`Attributed::time_ms`]).
fn event_of<'a>(r: &'a Record<'a>, time_ms: i64) -> Event<'a> {
    Event {
        event_id: &r.event_id,
        time_ms,
        event_name: &r.event_name,
        outcome: r.outcome(),
        principal: &r.principal,
        source_ip: r.source_ip.as_deref(),
        aws_service: r.is_aws_service(),
        version_stage: r.version_stage.as_deref(),
        version_id: r.version_id.as_deref(),
    }
}

/// The poller and its memory between cycles.
pub struct AccessPoller<L> {
    /// The AWS boundary.
    api: L,
    /// Configuration (inventory).
    config: Arc<Config>,
    /// `[access]`.
    access: AccessConfig,
    /// Where facts and anomalies are published.
    view: SharedView,
    /// Where counts are exported.
    metrics: Arc<Metrics>,
    /// Checkpoint, seen ids, principals.
    store: StateStore,
    /// FilterLogEvents pacing.
    limiter: RateLimiter,
    /// Anomaly state.
    detector: Detector,
    /// eventIDs (and skipped log event ids) already counted, with their log timestamp.
    seen: SeenIds,
    /// Everything before this log timestamp has been read (minus late arrivals).
    checkpoint_ms: Option<i64>,
    /// The watch list of the queue source, rebuilt by [`AccessPoller::refresh`].
    queue_watch: Option<Watch>,
}

impl<L: LogsApi> AccessPoller<L> {
    /// A poller; call [`AccessPoller::start`] before polling.
    pub fn new(
        api: L,
        config: Arc<Config>,
        access: AccessConfig,
        view: SharedView,
        metrics: Arc<Metrics>,
        store: impl Into<StateStore>,
    ) -> Self {
        for spec in &config.secrets {
            // Counters and the gauge exist from the first scrape.
            metrics.init_counters(&spec.name);
            metrics.set_principals(&spec.name, 0);
        }
        let limiter = RateLimiter::new(access.max_requests_per_second);
        let detector = Detector::new(Thresholds::from(&access), 0);
        AccessPoller {
            api,
            config,
            access,
            view,
            metrics,
            store: store.into(),
            limiter,
            detector,
            seen: SeenIds::default(),
            checkpoint_ms: None,
            queue_watch: None,
        }
    }

    fn overlap_ms(&self) -> i64 {
        i64::try_from(self.access.overlap.as_millis()).unwrap_or(i64::MAX / 4)
    }

    fn baseline_ms(&self) -> i64 {
        i64::try_from(self.access.baseline.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// The key of the checkpoint row: the log group, or the queue URL with `source = "sqs"`.
    fn checkpoint_key(&self) -> &str {
        match &self.access.source {
            AccessSource::Sqs { queue_url } => queue_url,
            AccessSource::CloudWatchLogs => self.access.log_group.as_deref().unwrap_or_default(),
        }
    }

    /// Restores the store's state and learns the log group's history. Returns the number of
    /// history records learned.
    pub async fn start(&mut self, now: DateTime<Utc>) -> Result<usize, AccessError> {
        let now_ms = now.timestamp_millis();
        let baseline_start = now_ms - self.baseline_ms();
        let restored = self.store.restore(self.checkpoint_key(), baseline_start)?;
        let checkpoint = restored.checkpoint_ms;
        let live_start = match checkpoint {
            Some(c) => (c - self.overlap_ms()).max(baseline_start),
            None => now_ms - self.overlap_ms(),
        };
        self.detector = Detector::new(Thresholds::from(&self.access), baseline_start);
        let readers = restored.readers.len();
        for r in restored.readers {
            self.detector.restore_principal(
                &r.secret,
                &r.principal,
                PrincipalStats {
                    first_seen_ms: r.first_seen_ms,
                    last_seen_ms: r.last_seen_ms,
                    reads: r.reads,
                    source_ips: Default::default(),
                },
            );
        }
        self.seen = restored.seen.into_iter().collect();
        // Without a checkpoint the first cycle starts one overlap back from now.
        self.checkpoint_ms = Some(checkpoint.unwrap_or(now_ms));
        info!(
            source = %self.checkpoint_key(),
            checkpoint_ms = ?checkpoint,
            seen_ids = self.seen.len(),
            principals = readers,
            "Access state restored; learning the baseline from the log group."
        );

        // History: learn only (no counting, no anomalies); order does not matter for learning.
        // Without a log group (queue source only) there is no history to learn from.
        let watch = build_watch(&self.config, &self.view);
        let mut learned = 0usize;
        let mut start = baseline_start;
        let log_group = self.access.log_group.clone().unwrap_or_default();
        while start < live_start && self.access.log_group.is_some() {
            let end = (start + SLICE_MS * 24).min(live_start) - 1;
            let detector = &mut self.detector;
            // Page by page: memory stays at one page whatever the history holds.
            scan(
                &self.api,
                &mut self.limiter,
                &log_group,
                start,
                end.max(start),
                |events| {
                    for ev in &events {
                        let Ok(record) = cloudtrail::parse(&ev.message) else {
                            continue;
                        };
                        if record.event_source != cloudtrail::SECRETS_MANAGER {
                            continue;
                        }
                        let time_ms = record.time_ms().unwrap_or(ev.timestamp_ms);
                        for id in record.secret_ids() {
                            if let Some(i) = watch.lookup(&record, id) {
                                let ctx = &watch.secrets[i];
                                let event = event_of(&record, time_ms);
                                detector.observe(&ctx.name, &ctx.policy(), &event, true);
                                learned += 1;
                            }
                        }
                    }
                },
            )
            .await?;
            start = end + 1;
        }
        info!(learned, "Access baseline learned.");
        self.publish_facts(&watch, now_ms);
        Ok(learned)
    }

    /// Runs one cycle up to `now`.
    pub async fn poll_once(&mut self, now: DateTime<Utc>) -> Result<CycleReport, AccessError> {
        let now_ms = now.timestamp_millis();
        let watch = build_watch(&self.config, &self.view);
        let mut report = CycleReport::default();
        let checkpoint = self.checkpoint_ms.unwrap_or(now_ms);
        let mut start = (checkpoint - self.overlap_ms()).max(now_ms - self.baseline_ms());
        while start <= now_ms {
            let end = (start + SLICE_MS).min(now_ms);
            self.slice(&watch, start, end, &mut report).await?;
            start = end + 1;
        }
        self.detector.expire(now_ms);
        self.publish_facts(&watch, now_ms);
        Ok(report)
    }

    /// Reads, counts and commits `[start, end]`.
    async fn slice(
        &mut self,
        watch: &Watch,
        start: i64,
        end: i64,
        report: &mut CycleReport,
    ) -> Result<(), AccessError> {
        let mut events: Vec<LogEvent> = Vec::new();
        let log_group = self.access.log_group.as_deref().unwrap_or_default();
        report.pages += scan(
            &self.api,
            &mut self.limiter,
            log_group,
            start,
            end,
            |page| events.extend(page),
        )
        .await?;
        report.log_events += events.len();
        let sorted = sort_out(
            events.iter().map(Input::of_log_event),
            SKIPPED_PREFIX,
            watch,
            &self.seen,
        );
        self.commit_and_export(watch, sorted, end, report)
    }

    /// Counts one batch of queue messages received at `now` (`[access] source = "sqs"`): each
    /// body is an EventBridge event whose `detail` goes through the same parser, eventID dedup
    /// and detector as a log event, committed in one transaction. Returns, for each message,
    /// whether it may be deleted now that the commit landed: every valid event (counted,
    /// repeated or not about a watched secret) may; a message that is not a valid event may not
    /// (it is counted once and left for the queue's dead-letter queue).
    pub fn ingest(
        &mut self,
        messages: &[QueueMessage],
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<Vec<bool>, AccessError> {
        let now_ms = now.timestamp_millis();
        let watch = match self.queue_watch.take() {
            Some(w) => w,
            None => build_watch(&self.config, &self.view),
        };
        let inputs: Vec<Input<'_>> = messages
            .iter()
            .map(|m| Input {
                key: &m.message_id,
                ts_ms: now_ms,
                parsed: super::envelope::detail(&m.body)
                    .and_then(|d| cloudtrail::parse(d).map_err(ParseError::as_str)),
            })
            .collect();
        let deletable: Vec<bool> = inputs.iter().map(|i| i.parsed.is_ok()).collect();
        report.log_events += messages.len();
        let sorted = sort_out(inputs, SQS_SKIPPED_PREFIX, &watch, &self.seen);
        let result = self.commit_and_export(&watch, sorted, now_ms, report);
        self.queue_watch = Some(watch);
        result.map(|()| deletable)
    }

    /// The queue source's periodic work: a fresh watch list (new inventory facts, discovered
    /// secrets), expired detector windows and the published facts.
    pub fn refresh(&mut self, now: DateTime<Utc>) {
        let now_ms = now.timestamp_millis();
        let watch = build_watch(&self.config, &self.view);
        self.detector.expire(now_ms);
        self.publish_facts(&watch, now_ms);
        self.queue_watch = Some(watch);
    }

    /// Classifies `sorted`, commits it (checkpoint `end`), and only then exports it.
    fn commit_and_export(
        &mut self,
        watch: &Watch,
        sorted: Sorted<'_>,
        end: i64,
        report: &mut CycleReport,
    ) -> Result<(), AccessError> {
        let classified = self.classify(watch, &sorted);

        // Durable first: new ids, checkpoint, readers; prune what the overlap no longer needs.
        let horizon = end - self.overlap_ms();
        let new_ids: Vec<(&str, i64)> = sorted
            .new
            .iter()
            .map(|a| (a.record.event_id.as_ref(), a.log_ms))
            .chain(sorted.skipped.iter().map(|(k, t, _)| (k.as_str(), *t)))
            .collect();
        self.store.commit_slice(
            &SliceCommit {
                log_group: self.checkpoint_key(),
                new_ids: &new_ids,
                readers: &classified.readers,
                end_ms: end,
                seen_horizon_ms: horizon,
                reader_horizon_ms: end - self.baseline_ms(),
            },
            &|| crate::rotation::failpoint::hit("access:before-commit"),
        )?;
        crate::rotation::failpoint::hit("access:committed");

        // Now acknowledged: memory, metrics, logs, view.
        for (id, ms) in &new_ids {
            self.seen.insert(id, *ms);
        }
        self.seen.retain_from(horizon);
        self.checkpoint_ms = Some(end);
        self.export(watch, &sorted, classified, report);
        Ok(())
    }

    /// Counts and runs the detector over a slice's new events, in time order.
    fn classify(&mut self, watch: &Watch, sorted: &Sorted<'_>) -> Classified {
        let mut counts = AccessCounts::new();
        let mut found: Vec<Anomaly> = Vec::new();
        let mut touched: HashSet<(usize, &str)> = HashSet::new();
        let evictions_before = self.evictions(watch);
        for a in &sorted.new {
            let ev = event_of(&a.record, a.time_ms);
            for &i in &a.secrets {
                let ctx = &watch.secrets[i];
                counts.add(i, ev.event_name, ev.outcome);
                found.extend(self.detector.observe(&ctx.name, &ctx.policy(), &ev, false));
                if ev.is_successful_read() {
                    touched.insert((i, ev.principal));
                }
            }
        }
        let evictions = self.evictions(watch) - evictions_before;
        let readers = touched
            .iter()
            .filter_map(|&(i, p)| {
                let name = watch.secrets[i].name.as_str();
                self.detector.reader(name, p).map(|s| StoredReader {
                    secret: name.to_string(),
                    principal: p.to_string(),
                    first_seen_ms: s.first_seen_ms,
                    last_seen_ms: s.last_seen_ms,
                    reads: s.reads,
                })
            })
            .collect();
        Classified {
            counts,
            found,
            readers,
            evictions,
        }
    }

    /// Principals evicted so far over the watched secrets.
    fn evictions(&self, watch: &Watch) -> u64 {
        watch
            .secrets
            .iter()
            .map(|s| self.detector.evictions(&s.name))
            .sum()
    }

    /// After the commit: counters, the `Access anomaly.` log lines, the cycle report and the
    /// view's access log.
    fn export(
        &self,
        watch: &Watch,
        sorted: &Sorted<'_>,
        classified: Classified,
        report: &mut CycleReport,
    ) {
        let Classified {
            counts,
            found,
            evictions,
            ..
        } = classified;
        for (i, event, outcome, n) in counts.iter() {
            self.metrics
                .count_access(&watch.secrets[i].name, event, outcome, n);
        }
        for (key, ms, why) in &sorted.skipped {
            self.metrics.count_skipped_record(why);
            match key.strip_prefix(SQS_SKIPPED_PREFIX) {
                Some(message_id) => {
                    warn!(message_id = %message_id, reason = *why, "Rejected a queue message that is not an EventBridge event carrying a CloudTrail record; it is left for the dead-letter queue.")
                }
                None => {
                    warn!(log_event_id = %key.trim_start_matches(SKIPPED_PREFIX), timestamp_ms = ms, reason = *why, "Skipped a log event that is not a usable CloudTrail record.")
                }
            }
        }
        for a in &found {
            self.metrics.count_anomaly(&a.secret, a.kind);
            warn!(
                secret = %a.secret,
                kind = a.kind.as_str(),
                principal = %a.principal,
                ip = a.source_ip.as_deref().unwrap_or("-"),
                event_id = %a.event_id,
                event = %a.event_name,
                time = %DateTime::<Utc>::from_timestamp_millis(a.time_ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
                detail = %a.detail,
                "Access anomaly."
            );
        }
        // The per-secret families are rendered from a cache: say that they changed.
        self.metrics.mark_dirty();
        if evictions > 0 {
            warn!(
                evictions,
                max = self.access.max_principals_per_secret,
                "Principal sets full; least recently seen principals forgotten (they will count as new)."
            );
        }
        report.counted += sorted.new.len();
        report.repeated += sorted.repeated;
        report.skipped += sorted.skipped.len();
        report.anomalies += found.len();
        let mut view = self.view.write();
        let log = &mut view.access_log;
        log.skipped_records += sorted.skipped.len() as u64;
        log.repeated_events += sorted.repeated as u64;
        log.principal_evictions += evictions;
        log.push(found);
    }

    /// Publishes per-secret facts and the principals gauge.
    fn publish_facts(&self, watch: &Watch, now_ms: i64) {
        let baseline = self.baseline_ms();
        let mut facts = HashMap::with_capacity(watch.secrets.len());
        for ctx in &watch.secrets {
            let readers = self.detector.readers(&ctx.name, now_ms);
            let undeclared = match &ctx.consumers {
                Some(c) if ctx.inventory => detect::undeclared_readers(
                    readers.iter().map(|(p, s)| (*p, s.last_seen_ms)),
                    c,
                    now_ms,
                    baseline,
                ),
                _ => Vec::new(),
            };
            self.metrics.set_principals(&ctx.name, readers.len());
            facts.insert(
                ctx.name.clone(),
                AccessFacts {
                    undeclared_readers: undeclared,
                    principals: readers.len(),
                    anomalies: self.detector.anomalies(&ctx.name),
                },
            );
        }
        self.metrics.mark_dirty();
        self.view.write().access = facts;
    }

    /// Waits (bounded) for the metadata poller's first success, then learns the baseline,
    /// retrying each period. False when `shutdown` came first. `super::run` then counts.
    pub async fn prepare(&mut self, shutdown: &CancellationToken) -> bool {
        // Wait (bounded) for the metadata poller's first success: discovered secrets, ARNs,
        // last rotations and current versions come from it, and learning needs them.
        let wait_until = Instant::now()
            + self
                .config
                .poll
                .metadata_every
                .saturating_mul(3)
                .min(Duration::from_secs(60));
        while Instant::now() < wait_until
            && self
                .view
                .read()
                .polls
                .get(crate::inventory::poller::SOURCE)
                .is_none_or(|h| h.last_success.is_none())
        {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
        // Learn first; a failure is retried at the next period, and counted.
        let every = self.config.poll.access_every;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.start(Utc::now()) => r,
                _ = shutdown.cancelled() => return false,
            };
            match result {
                Ok(_) => return true,
                Err(e) => {
                    warn!(error = %e, kind = e.kind(), "Cannot learn the access baseline; retrying.");
                    crate::daemon::periodic::record_cycle(
                        &self.metrics,
                        &self.view,
                        SOURCE,
                        started,
                        Some(e.kind()),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
            }
        }
    }

    /// The poll period (`poll.access_every`).
    pub fn every(&self) -> Duration {
        self.config.poll.access_every
    }

    /// The configured source.
    pub fn source(&self) -> AccessSource {
        self.access.source.clone()
    }

    /// The metrics and the view it publishes to (for the loop that drives it).
    pub fn outputs(&self) -> (Arc<Metrics>, SharedView) {
        (self.metrics.clone(), self.view.clone())
    }
}

impl<L: LogsApi> crate::daemon::periodic::Cycle for AccessPoller<L> {
    async fn cycle(&mut self, started: Instant) -> Option<&'static str> {
        match self.poll_once(Utc::now()).await {
            Ok(report) => {
                debug!(
                    pages = report.pages,
                    log_events = report.log_events,
                    counted = report.counted,
                    repeated = report.repeated,
                    skipped = report.skipped,
                    anomalies = report.anomalies,
                    seconds = started.elapsed().as_secs_f64(),
                    "Access poll done."
                );
                None
            }
            Err(e) => {
                warn!(error = %e, kind = e.kind(), "Access poll failed; it resumes from its checkpoint.");
                Some(e.kind())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on paused time: the runtime advances the clock exactly to each sleep's deadline, so
    /// the spacing is measured exactly and no real-time bound can flake.
    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_requests() {
        for (per_second, requests, spacing_ms) in [(20.0, 5, 50), (100.0, 11, 10), (0.5, 3, 2000)] {
            let mut limiter = RateLimiter::new(per_second);
            let started = tokio::time::Instant::now();
            let mut at = Vec::new();
            for _ in 0..requests {
                limiter.acquire().await;
                at.push(started.elapsed().as_millis());
            }
            // The first request goes at once, each later one exactly one interval after the last.
            let want: Vec<u128> = (0..requests).map(|i| i * spacing_ms).collect();
            assert_eq!(at, want, "{per_second}/s x{requests}");
        }
        // After an idle spell the next request goes at once, and the one after it waits a full
        // interval again (no burst from the idle time).
        let mut limiter = RateLimiter::new(10.0);
        limiter.acquire().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let t = tokio::time::Instant::now();
        limiter.acquire().await;
        assert_eq!(t.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(t.elapsed(), Duration::from_millis(100));
        // A nonsensical rate falls back to one per second rather than spinning.
        assert_eq!(RateLimiter::new(f64::NAN).interval, Duration::from_secs(1));
        assert_eq!(RateLimiter::new(0.0).interval, Duration::from_secs(1));
    }
}
