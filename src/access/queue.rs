//! The queue source of the access poller (`[access] source = "sqs"`, SPEC §13): CloudTrail
//! records pushed by EventBridge rules to an SQS queue.
//!
//! A few long-poll ReceiveMessage requests (10 messages each) are kept in flight. What they
//! bring is handed to [`AccessPoller::ingest`] in batches: each body is an EventBridge event
//! whose `detail` is the CloudTrail record, parsed by the same `cloudtrail::parse`, deduplicated
//! by eventID against the same `access_seen` table and run through the same detector as a log
//! event. Messages are deleted (DeleteMessageBatch) only after the batch's store commit: SQS
//! delivers at least once, and a message received again after a crash between commit and
//! delete finds its eventID already counted. A message that is not a valid event is counted
//! once (`keywarden_access_skipped_records_total`) and never deleted: the queue's redrive
//! policy (maxReceiveCount) moves it to the dead-letter queue.
//!
//! eventIDs are remembered for `access.overlap` after they were received, so the queue's
//! visibility timeout must stay well below it (the shipped `central.yaml` uses 60 s against
//! the default overlap of 15 minutes).

use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::poller::{AccessPoller, CycleReport, SOURCE};
use crate::aws::{AwsError, LogsApi, QueueApi, QueueMessage};
use crate::domain::view::SharedView;
use crate::telemetry::Metrics;

/// ReceiveMessage requests kept in flight.
pub const RECEIVES_IN_FLIGHT: usize = 4;

/// Messages per ReceiveMessage and per DeleteMessageBatch (the SQS maximum).
const BATCH: usize = 10;

/// Long-poll wait of each ReceiveMessage, seconds (the SQS maximum).
const WAIT_SECONDS: i32 = 20;

/// Most messages counted in one store commit.
const MAX_PER_COMMIT: usize = 500;

/// Wait before a ReceiveMessage that follows a failed one.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long shutdown waits for deletions in flight (a message not deleted is received again
/// and found already counted).
const DELETE_DRAIN: Duration = Duration::from_secs(2);

/// One ReceiveMessage, after `delay`.
async fn receive<Q: QueueApi>(
    queue: Q,
    url: std::sync::Arc<str>,
    delay: Option<Duration>,
) -> Result<Vec<QueueMessage>, AwsError> {
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    queue.receive(&url, BATCH as i32, WAIT_SECONDS).await
}

/// One DeleteMessageBatch; returns (entries, entries SQS failed to delete).
async fn delete<Q: QueueApi>(
    queue: Q,
    url: std::sync::Arc<str>,
    handles: Vec<String>,
) -> (usize, Result<usize, AwsError>) {
    let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
    (handles.len(), queue.delete_batch(&url, &refs).await)
}

/// Receives, counts and deletes until `shutdown`. Each batch is recorded as one access cycle
/// (`keywarden_poll_duration_seconds{source="access"}`, `/readyz`); every `every` the watch
/// list is rebuilt and the facts published.
pub async fn run<L: LogsApi, Q: QueueApi>(
    poller: &mut AccessPoller<L>,
    queue: &Q,
    queue_url: &str,
    every: Duration,
    metrics: &Metrics,
    view: &SharedView,
    shutdown: &CancellationToken,
) {
    let url: std::sync::Arc<str> = queue_url.into();
    let mut receiving = FuturesUnordered::new();
    for _ in 0..RECEIVES_IN_FLIGHT {
        receiving.push(receive(queue.clone(), url.clone(), None));
    }
    let mut deleting = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<QueueMessage> = Vec::with_capacity(MAX_PER_COMMIT + BATCH);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                poller.refresh(Utc::now());
                continue;
            }
            Some(done) = deleting.next() => {
                deleted(done);
                continue;
            }
            Some(r) = receiving.next() => r,
        };
        let started = Instant::now();
        // This answer, and every other one already there, up to one commit's worth.
        let mut next = Some(first);
        let mut error: Option<AwsError> = None;
        while let Some(r) = next.take() {
            let delay = match r {
                Ok(messages) => {
                    batch.extend(messages);
                    None
                }
                Err(e) => {
                    error = Some(e);
                    Some(RETRY_AFTER)
                }
            };
            receiving.push(receive(queue.clone(), url.clone(), delay));
            if batch.len() < MAX_PER_COMMIT {
                next = receiving.next().now_or_never().flatten();
            }
        }
        if let Some(e) = &error {
            warn!(error = %e, kind = e.kind.as_str(), "ReceiveMessage failed; retrying.");
        }
        if batch.is_empty() {
            // An empty long-poll has nothing to make durable: no commit (an idle queue would
            // otherwise cost an fsync per receive); pruning waits for the next message.
            let outcome = error.map(|e| e.kind.as_str());
            crate::daemon::periodic::record_cycle(metrics, view, SOURCE, started, outcome);
            continue;
        }
        let mut report = CycleReport::default();
        let outcome = match poller.ingest(&batch, Utc::now(), &mut report) {
            Ok(deletable) => {
                // Committed: now the messages may go.
                let handles: Vec<String> = batch
                    .iter_mut()
                    .zip(deletable)
                    .filter(|(_, d)| *d)
                    .map(|(m, _)| std::mem::take(&mut m.receipt_handle))
                    .collect();
                for chunk in handles.chunks(BATCH) {
                    deleting.push(delete(queue.clone(), url.clone(), chunk.to_vec()));
                }
                debug!(
                    messages = report.log_events,
                    counted = report.counted,
                    repeated = report.repeated,
                    rejected = report.skipped,
                    anomalies = report.anomalies,
                    "Access queue batch done."
                );
                error.map(|e| e.kind.as_str())
            }
            Err(e) => {
                // Nothing deleted: the messages come back after their visibility timeout.
                warn!(error = %e, kind = e.kind(), "Access queue batch not committed; its messages will be received again.");
                Some(e.kind())
            }
        };
        batch.clear();
        crate::daemon::periodic::record_cycle(metrics, view, SOURCE, started, outcome);
    }
    // Deletions in flight are committed work: give them a moment.
    let _ = tokio::time::timeout(DELETE_DRAIN, async {
        while let Some(done) = deleting.next().await {
            deleted(done);
        }
    })
    .await;
}

/// Logs a failed deletion (the message is received again and found already counted).
fn deleted((entries, result): (usize, Result<usize, AwsError>)) {
    match result {
        Ok(0) => {}
        Ok(failed) => {
            warn!(
                failed,
                entries,
                "DeleteMessageBatch left messages; they will be received again and not counted twice."
            )
        }
        Err(e) => {
            warn!(error = %e, kind = e.kind.as_str(), entries, "DeleteMessageBatch failed; the messages will be received again and not counted twice.")
        }
    }
}
