//! Access events (SPEC §4): CloudTrail records about secrets, counted once each, and the
//! anomalies found in them.
//!
//! - `detect`: pure anomaly detection, one rule per anomaly kind.
//! - `glob`: the consumer globs over principal ARNs.
//! - `consumers`: who read a secret (`keywarden consumers`, the incident audit).
//! - `poller`: the task that reads the log group, commits eventIDs, then exports.
//! - `queue`: the `sqs` source: EventBridge events received from SQS, fed to the poller's
//!   parse, dedup, commit and export, deleted after the commit; `envelope` (pure) borrows the
//!   CloudTrail record out of each message.
//! - [`run`] (here): prepares the poller, then drives it with the periodic loop or the queue.
//! - `seen`: the eventIDs already counted, in memory (UUIDs as 128-bit numbers).
//! - `store`: the poller's durable state behind the `AccessState` trait (the only SQL here).
//!
//! The scanner and record types live in `crate::cloudtrail`. Must never import `http`, `cli`,
//! `rotation` or `incident`.

pub mod consumers;
pub mod detect;
pub mod envelope;
pub mod glob;
pub mod poller;
pub mod queue;
pub mod seen;
pub mod store;
pub mod store_dynamodb;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::aws::{LogsApi, QueueApi};
use crate::config::AccessSource;

/// The access task: waits for the metadata poller, learns the baseline, then polls the log
/// group every `poll.access_every` or, with `source = "sqs"`, receives from `queue`, until
/// `shutdown`.
pub async fn run<L: LogsApi, Q: QueueApi>(
    mut poller: poller::AccessPoller<L>,
    queue: Option<Q>,
    shutdown: CancellationToken,
) {
    if poller.prepare(&shutdown).await {
        let every = poller.every();
        let (metrics, view) = poller.outputs();
        match (poller.source(), queue) {
            (AccessSource::Sqs { queue_url }, Some(queue)) => {
                queue::run(
                    &mut poller,
                    &queue,
                    &queue_url,
                    every,
                    &metrics,
                    &view,
                    &shutdown,
                )
                .await
            }
            (AccessSource::Sqs { .. }, None) => {
                warn!("Access source is sqs but no queue client was given; not counting.")
            }
            (AccessSource::CloudWatchLogs, _) => {
                crate::daemon::periodic::run_periodically(
                    poller::SOURCE,
                    every,
                    &metrics,
                    &view,
                    &shutdown,
                    &mut poller,
                )
                .await
            }
        }
    }
    info!("Access poller stopped.");
}
