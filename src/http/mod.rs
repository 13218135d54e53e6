//! The HTTP listener (hyper 1, HTTP/1.1).
//!
//! Routes:
//! - `GET /metrics`: the Prometheus exposition (OpenMetrics text).
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when every poller succeeded within three of its intervals, else 503
//!   with the reasons.
//! - `GET /secrets`: JSON status of every watched secret, with a `rotation` object (latest
//!   rotation, and why a due scheduled rotation waits).
//! - `GET /anomalies`: JSON list of recent access anomalies, newest first, with the access
//!   poller's counts of skipped records, repeated deliveries and principal evictions.
//! - `POST /rotate/<secret>`: journals a manual rotation, then `202`
//!   `{"rotation_id","secret","status","url"}`; `409` while one is active or for strategy `none`.
//! - `POST /rollback/<secret>[?force=true]`: AWSCURRENT back to AWSPREVIOUS; `409` while a
//!   rotation is running, and unless forced when it would do harm (`rotation::Refusal`).
//! - `GET /rotations`: the latest rotations; `GET /rotations/<id>`: one rotation and its steps.
//! - `POST /compromised/<secret>`: opens a compromise incident (journaled first), `202`
//!   `{"incident_id","secret","status","url"}`; `200` with the open incident while one is open.
//! - `GET /incidents`, `GET /incidents/<id>`, `GET /incidents/<id>/report.md`.
//!
//! The route is parsed once into `route::Route`; every JSON answer and body is a type of
//! [`api`], which the CLI (`cli::remote`) reads too.
//!
//! Action POSTs pass `guard::guard_action` first: a credential in the query string `400`, the token
//! (`403`/`401`), a declared body over 16 KiB `413`, a malformed `<secret>` `400`, unknown `404`,
//! the per-secret rate limit `429`; `/compromised` then reads at most 16 KiB of body within
//! `server.body_timeout` (`413`, `408`) and wants a JSON object or nothing (`400`).
//!
//! Every POST needs `Authorization: Bearer <admin token>` (compared in constant time): `401`
//! when missing or wrong, `403` when no token is configured (actions are off). `<secret>` is the
//! inventory name or the Secrets Manager name (slashes allowed, percent-decoded once).
//!
//! Protection: at most `server.max_connections` connections are served at once (the semaphore is
//! acquired before `accept`, so the excess waits in the kernel backlog), request headers must
//! arrive within `server.header_timeout`, and on shutdown open connections get a few seconds to
//! finish before they are dropped.
//!
//! Files: `route.rs` (pure parsing), `guard.rs` (token, limits, rate limit), `api.rs` (JSON
//! types), `respond.rs` (answer builders), `state.rs` ([`AppState`]), `handlers.rs` (one function
//! per route). This file only serves; none of those files imports it. The folder never imports
//! `daemon` or `cli`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub mod api;
mod guard;
mod handlers;
mod respond;
mod route;
mod state;
#[cfg(test)]
mod tests;

pub use guard::ActionLimiter;
pub use state::{AppState, IncidentService, RotationService};

use handlers::handle;

/// How long open connections may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(3);

/// Serves `listener` until `shutdown` is cancelled, then drains open connections.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(state.config.server.max_connections));
    let header_timeout = state.config.server.header_timeout;
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(error = %e, "Accept failed; retrying in 100 ms.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "Connection ended with an error.");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => info!("HTTP connections drained."),
        _ = tokio::time::sleep(DRAIN) => warn!("HTTP connections still open after {}s; dropping them.", DRAIN.as_secs()),
    }
}
