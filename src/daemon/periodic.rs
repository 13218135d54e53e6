//! Pollers: tasks that read AWS on a period and feed the shared [`crate::domain::view::SharedView`].
//!
//! Both pollers run their cycles through [`run_periodically`] and record each cycle's end with
//! [`record_cycle`]: `keywarden_poll_duration_seconds`, `keywarden_poll_errors_total`,
//! `keywarden_last_successful_poll_timestamp_seconds` and the readiness of `/readyz`.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

use chrono::Utc;

use tokio_util::sync::CancellationToken;

use crate::domain::view::SharedView;
use crate::telemetry::Metrics;

/// Records the end of a cycle of `source` that started at `started`: its duration and outcome
/// (`error_kind`, `None` on success) in the metrics and in the view.
pub fn record_cycle(
    metrics: &Metrics,
    view: &SharedView,
    source: &'static str,
    started: Instant,
    error_kind: Option<&'static str>,
) {
    metrics.poll_finished(
        source,
        started.elapsed().as_secs_f64(),
        error_kind,
        Utc::now().timestamp(),
    );
    view.write().record_poll(source, Instant::now(), error_kind);
}

/// One cycle of a poller.
pub trait Cycle {
    /// Runs a cycle that started at `started`, logs its outcome, and returns the error kind of
    /// a failed cycle (`None` on success).
    fn cycle(&mut self, started: Instant) -> impl Future<Output = Option<&'static str>> + Send;
}

/// Runs `poller`'s cycle at once and then every `every` (a late cycle delays the next tick
/// instead of bunching them) until `shutdown` turns true or its sender is gone; a cycle in
/// flight is abandoned on shutdown (each poller keeps its state consistent at any await
/// point). Each end is recorded with [`record_cycle`] under `source`.
pub async fn run_periodically(
    source: &'static str,
    every: Duration,
    metrics: &Metrics,
    view: &SharedView,
    shutdown: &CancellationToken,
    poller: &mut impl Cycle,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let error_kind = tokio::select! {
            k = poller.cycle(started) => k,
            _ = shutdown.cancelled() => return,
        };
        record_cycle(metrics, view, source, started, error_kind);
    }
}
