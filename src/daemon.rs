//! `keywarden run`: wires the store, the AWS clients, the pollers and the HTTP listener
//! together, and shuts them all down cleanly on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::aws;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::poll::access::AccessPoller;
use crate::poll::metadata::MetadataPoller;
use crate::schedule::format_duration;
use crate::store::{Store, StoreError};
use crate::view::SharedView;

/// How long the pollers get to stop after the listener closed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let store = Store::open(&config.state.path)?;
    info!(path = %config.state.path.display(), schema = store.schema_version()?, "State store open.");
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.server.listen);

    let metrics = Arc::new(Metrics::new());
    if let Some(r) = &config.reminders {
        metrics.set_leads(r.lead.iter().map(|d| format_duration(*d)).collect());
    }
    let view = SharedView::default();
    let sdk = aws::client::load(&config.aws).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = spawn_signal_listener(stop_tx)?;

    let poller = MetadataPoller::new(
        aws::secretsmanager::SecretsManager::new(&sdk, metrics.clone()),
        config.clone(),
        view.clone(),
        metrics.clone(),
    );
    let metadata = tokio::spawn(poller.run(stop_rx.clone()));
    let access = config.access.as_ref().map(|access| {
        let poller = AccessPoller::new(
            aws::cloudwatchlogs::CloudWatchLogs::new(&sdk, metrics.clone()),
            config.clone(),
            access.clone(),
            view.clone(),
            metrics.clone(),
            store.clone(),
        );
        info!(
            log_group = %access.log_group,
            access_every = %format_duration(config.poll.access_every),
            "Access poller enabled."
        );
        tokio::spawn(poller.run(stop_rx.clone()))
    });

    info!(
        listen = %local,
        secrets = config.secrets.len(),
        metadata_every = %format_duration(config.poll.metadata_every),
        "keywarden is running; metrics on http://{local}/metrics"
    );
    let state = Arc::new(AppState {
        config: config.clone(),
        view,
        metrics,
    });
    http::serve(listener, state, stop_rx).await;

    match tokio::time::timeout(STOP_GRACE, metadata).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "Metadata poller ended abnormally."),
        Err(_) => warn!(
            "Metadata poller did not stop within {}s.",
            STOP_GRACE.as_secs()
        ),
    }
    if let Some(access) = access {
        match tokio::time::timeout(STOP_GRACE, access).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "Access poller ended abnormally."),
            Err(_) => warn!(
                "Access poller did not stop within {}s.",
                STOP_GRACE.as_secs()
            ),
        }
    }
    signals.abort();
    info!("keywarden stopped.");
    Ok(())
}

/// Turns the first SIGTERM or SIGINT into `true` on the stop channel.
fn spawn_signal_listener(
    stop: watch::Sender<bool>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "Shutting down.");
        let _ = stop.send(true);
    }))
}
