//! The HTTP listener (hyper 1, HTTP/1.1).
//!
//! Routes:
//! - `GET /metrics`: the Prometheus exposition (OpenMetrics text).
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when every poller succeeded within three of its intervals and AWS refuses
//!   no permission keywarden used (each refused `service:Operation on resource` is named), else 503
//!   with the reasons.
//! - `GET /secrets`: JSON status of every watched secret, with a `rotation` object (latest
//!   rotation, and why a due scheduled rotation waits).
//! - `GET /anomalies`: JSON list of recent access anomalies, newest first, with the access
//!   poller's counts of skipped records, repeated deliveries and principal evictions, and per
//!   secret the anomaly count since start with the latest kind (`per_secret`).
//! - `POST /rotate/<secret>`: journals a manual rotation, then `202`
//!   `{"rotation_id","secret","status","url"}`; `409` while one is active or for strategy `none`.
//! - `POST /rollback/<secret>[?force=true]`: AWSCURRENT back to AWSPREVIOUS; `409` while a
//!   rotation is running, and unless forced when it would do harm (`rotation::Refusal`).
//! - `GET /rotations`: the latest rotations; `GET /rotations/<id>`: one rotation and its steps.
//! - `POST /compromised/<secret>`: opens a compromise incident (journaled first), `202`
//!   `{"incident_id","secret","status","url"}`; `200` with the open incident while one is open.
//! - `GET /incidents`, `GET /incidents/<id>`, `GET /incidents/<id>/report.md`.
//!
//! Reads without `Authorization` get a summary (`api::redact`): no principals, IPs, event ids,
//! reasons, reporters, messages or errors (which can name database hosts); with the valid token
//! the full answer; a wrong token `401`; `report.md` needs the token.
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
//! inventory name or the Secrets Manager name (slashes allowed, percent-decoded once). After 10
//! wrong `Authorization` headers within a minute, a peer IP gets `429` with `Retry-After` for
//! anything that needs or carries a token (even the right one) until the oldest failure is a
//! minute old.
//!
//! Protection (`conn.rs`): every connection is accepted at once. At most
//! `server.max_connections` normal connections are served, at most
//! `server.max_connections_per_ip` of them from one peer IP; beyond, a connection takes one of
//! `server.reserved_connections` reserve slots, where only a request carrying the valid admin
//! token is served (one request; any other answers `503` with `Retry-After: 1` and the connection
//! closes); when the reserve is full, its oldest connection that has not shown the token is
//! dropped for the newcomer, and with a reserve full of authenticated requests the newcomer is
//! closed at once. So clients that hold every normal slot cannot keep a responder's
//! `POST /compromised` out. Request headers must arrive within `server.header_timeout` (also
//! between keep-alive requests), a write that makes no progress for `server.write_timeout` (a
//! client that pipelines and never reads) cuts the connection, and on shutdown open connections
//! get a few seconds to finish before they are dropped.
//!
//! Files: `conn.rs` (admission, write timeout), `route.rs` (pure parsing), `guard.rs` (token, limits, rate limit), `api.rs` (JSON
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
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub mod api;
mod conn;
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

/// Serves `listener` until `shutdown` is cancelled, then drains open connections. Every
/// connection is accepted at once and admitted by [`conn::Slots`] (normal, reserve or closed).
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) {
    let server = &state.config.server;
    let slots = conn::Slots::new(conn::Limits {
        general: server.max_connections,
        per_ip: server.max_connections_per_ip,
        reserve: server.reserved_connections,
    });
    let header_timeout = server.header_timeout;
    let write_timeout = server.write_timeout;
    let graceful = GracefulShutdown::new();
    loop {
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
        let Some((slot, ticket)) = slots.admit(peer.ip()) else {
            debug!(%peer, "Connection closed at once: every slot and the reserve are taken.");
            drop(stream);
            continue;
        };
        let state = state.clone();
        // On a reserve connection only a request with the admin token is served.
        let authorized = ticket.as_ref().map(|t| t.authorized.clone());
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let state = state.clone();
            let authorized = authorized.clone();
            req.extensions_mut().insert(guard::Peer(peer.ip()));
            async move {
                if let Some(flag) = &authorized {
                    if !guard::bearer_ok(state.admin_token.as_ref(), req.headers()) {
                        return Ok::<_, Infallible>(respond::busy());
                    }
                    flag.store(true, std::sync::atomic::Ordering::Release);
                }
                Ok::<_, Infallible>(handle(state, req).await)
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024)
            // A reserve connection serves one request.
            .keep_alive(!slot.is_reserve());
        let io = TokioIo::new(conn::WriteDeadline::new(stream, write_timeout));
        let conn = graceful.watch(builder.serve_connection(io, service));
        let evicted = ticket.map(|t| t.evict);
        tokio::spawn(async move {
            let ended = match evicted {
                Some(evicted) => tokio::select! {
                    r = conn => Some(r),
                    _ = evicted.cancelled() => None,
                },
                None => Some(conn.await),
            };
            match ended {
                Some(Err(e)) => debug!(%peer, error = %e, "Connection ended with an error."),
                Some(Ok(())) => {}
                None => debug!(%peer, "Reserve connection dropped for a newer one."),
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => info!("HTTP connections drained."),
        _ = tokio::time::sleep(DRAIN) => warn!("HTTP connections still open after {}s; dropping them.", DRAIN.as_secs()),
    }
}
