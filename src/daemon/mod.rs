//! `keywarden run`: wires the store, the AWS clients, the pollers, the rotation core and the
//! HTTP listener together, and shuts them all down cleanly on SIGTERM or SIGINT.
//!
//! Owns the wiring and the process: `periodic.rs` (the loop both pollers run), `memory.rs`
//! (glibc arena and trim). Every task is spawned on one `TaskTracker` and stops on one
//! `CancellationToken`. Nothing imports `daemon` but `cli` (and the pollers' shared loop).

pub mod accounts;
#[allow(unsafe_code)] // glibc mallopt/malloc_trim: FFI without memory arguments.
pub mod memory;
pub mod periodic;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::access::poller::AccessPoller;
use crate::aws::{self, SecretValue};
use crate::config::{Config, ServerConfig, TokenSource};
use crate::domain::targets::{TargetId, Targets};
use crate::domain::view::SharedView;
use crate::http::{self, AppState};
use crate::reminder::{self, Reminders};
use crate::rotation::RotationCore;
use crate::schedule::format_duration;
use crate::store::{StateStore, StoreError};
use crate::telemetry::Metrics;

/// How often the metrics refresher looks for changed per-secret series.
const METRICS_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The per-secret rendering is redone at least this often.
const METRICS_MAX_AGE: Duration = Duration::from_secs(60);

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
    /// The configured admin token could not be read.
    #[error("admin token: {0}")]
    AdminToken(String),
    /// An account could not be set up.
    #[error(transparent)]
    Accounts(#[from] accounts::AccountsError),
    /// `[ha]`: this replica lost the lease and stopped (its supervisor starts it again as a
    /// follower).
    #[error("stepped down: this replica lost the lease")]
    SteppedDown,
    /// `[ha]` needs the DynamoDB store.
    #[error("[ha] needs [state] backend = \"dynamodb\"")]
    HaNeedsDynamo,
}

/// The shortest admin token accepted, in bytes (256 bits of a random hex or base64 token).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// Reads the admin token from its file or environment variable (`None` when not configured).
/// A configured source that is missing, empty or shorter than [`MIN_ADMIN_TOKEN_BYTES`] is an
/// error: the daemon would otherwise serve with actions silently off, or guessable. The file
/// must pass [`token_file_problem`] (checked on the opened file, so it cannot be swapped).
pub fn load_admin_token(server: &ServerConfig) -> Result<Option<SecretValue>, DaemonError> {
    let (text, origin) = match &server.admin_token {
        None => return Ok(None),
        Some(TokenSource::File(path)) => {
            let fail = |e: std::io::Error| {
                DaemonError::AdminToken(format!(
                    "cannot read server.admin_token_file {}: {e}",
                    path.display()
                ))
            };
            let mut file = std::fs::File::open(path).map_err(fail)?;
            let meta = file.metadata().map_err(fail)?;
            {
                use std::os::unix::fs::MetadataExt;
                let me = rustix::process::geteuid().as_raw();
                if let Some(problem) = token_file_problem(meta.mode(), meta.uid(), me) {
                    return Err(DaemonError::AdminToken(format!(
                        "server.admin_token_file {}: {problem}",
                        path.display()
                    )));
                }
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).map_err(fail)?;
            (text, format!("server.admin_token_file {}", path.display()))
        }
        Some(TokenSource::Env(name)) => (
            std::env::var(name).map_err(|_| {
                DaemonError::AdminToken(format!(
                    "server.admin_token_env names {name}, which is not set"
                ))
            })?,
            format!("server.admin_token_env {name}"),
        ),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(DaemonError::AdminToken(format!(
            "the admin token of {origin} is empty"
        )));
    }
    if token.len() < MIN_ADMIN_TOKEN_BYTES {
        return Err(DaemonError::AdminToken(format!(
            "the admin token of {origin} is {} bytes; at least {MIN_ADMIN_TOKEN_BYTES} bytes are required (for example `openssl rand -hex 32`)",
            token.len()
        )));
    }
    Ok(Some(SecretValue::new(token.to_string())))
}

/// Why a token file with permission bits `mode`, owned by `owner`, must not be used by a
/// daemon running as `me` (pure): any group or other permission (the token would be readable,
/// or replaceable, by other accounts), or an owner that is neither `me` nor root (that account
/// could rewrite it). `None` when it is fine (0600 or 0400 of ours or root's).
pub fn token_file_problem(mode: u32, owner: u32, me: u32) -> Option<String> {
    let perm = mode & 0o7777;
    if perm & 0o077 != 0 {
        return Some(format!(
            "mode {perm:04o} gives group or other users access to the token; chmod 600 it"
        ));
    }
    if owner != me && owner != 0 {
        return Some(format!(
            "owned by uid {owner}, neither this daemon's user (uid {me}) nor root; chown it"
        ));
    }
    None
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    // Parsing a large configuration leaves freed memory behind: give it back.
    crate::daemon::memory::trim();
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.server.listen);
    let admin_token = load_admin_token(&config.server)?;
    if crate::rotation::failpoint::ENABLED {
        warn!("This is a test build: rotation failpoints (KEYWARDEN_FAILPOINT) are honoured.");
    }
    let metrics = Arc::new(Metrics::new());
    let store = StateStore::open(&config.state, &config.aws, metrics.clone())?;
    match &store {
        StateStore::Sqlite(s) => {
            info!(path = %config.state.path.display(), schema = s.schema_version()?, "State store open.");
        }
        StateStore::Dynamo(t) => info!(table = %t.name(), "State store open (DynamoDB)."),
    }
    if let Some(r) = &config.reminders {
        let mut leads: Vec<String> = r.lead.iter().map(|d| format_duration(*d)).collect();
        leads.push(reminder::OVERDUE_LABEL.to_string());
        metrics.set_leads(leads);
    }
    let sdk = aws::client::load(&config.aws).await;
    let view = SharedView::with_targets(Arc::new(Targets::new(
        sdk.region().map_or("", |r| r.as_ref()),
    )));
    metrics.set_targets(
        view.targets().clone(),
        place_inventory(&config, view.targets()),
    );
    // One token stops every task; one tracker waits for all of them with one deadline.
    let stop = CancellationToken::new();
    let signals = spawn_signal_listener(stop.clone())?;
    let mut listener = listener;
    let mut lease_task = None;
    if let Some(ha) = &config.ha {
        let StateStore::Dynamo(table) = &store else {
            return Err(DaemonError::HaNeedsDynamo);
        };
        let replica = ha.replica.clone().unwrap_or_else(crate::ha::host_name);
        let lease = crate::ha::Lease::new(table.clone(), replica.clone(), ha.lease);
        // A follower: /healthz, /metrics (keywarden_leader 0, no per-secret series), /readyz 503.
        aws::gate::close();
        metrics.set_leader(&replica, false, None);
        info!(replica = %replica, lease = %format_duration(ha.lease), "High availability on: following until this replica takes the lease.");
        let follower_stop = stop.child_token();
        let follower = Arc::new(AppState {
            config: config.clone(),
            view: SharedView::default(),
            metrics: metrics.clone(),
            rotation: None,
            admin_token: None,
            incidents: None,
            limiter: http::ActionLimiter::default(),
        });
        let server = tokio::spawn(http::serve(listener, follower, follower_stop.clone()));
        let taken = lease.acquire(&metrics, &stop).await;
        follower_stop.cancel();
        let _ = server.await;
        let Some((epoch, rvn, sent)) = taken else {
            signals.abort();
            info!("keywarden stopped.");
            return Ok(());
        };
        table.fence(epoch);
        // Open for the lease just taken before anything spawns (the lease task renews it).
        aws::gate::open_until(sent + ha.lease);
        metrics.set_leader(&replica, true, None);
        listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: config.server.listen,
                source,
            })?;
        let stop = stop.clone();
        lease_task = Some(tokio::spawn(async move {
            lease.hold(epoch, rvn, sent, &stop).await
        }));
    }
    let w = Wiring {
        sdk,
        config,
        store,
        view,
        metrics,
        stop,
        tasks: TaskTracker::new(),
    };
    let fleet =
        accounts::fleet_poller(w.config.clone(), &w.sdk, w.view.clone(), w.metrics.clone()).await?;
    w.tasks.spawn(fleet.run(w.stop.clone()));
    spawn_watchers(&w);
    let rotation = start_rotation(&w)?;
    info!(
        listen = %local,
        secrets = w.config.secrets.len(),
        metadata_every = %format_duration(w.config.poll.metadata_every),
        "keywarden is running; metrics on http://{local}/metrics"
    );
    let incidents = start_incidents(&w, rotation.clone())?;
    let state = Arc::new(AppState {
        config: w.config.clone(),
        view: w.view.clone(),
        metrics: w.metrics.clone(),
        rotation: Some(Arc::new(rotation)),
        admin_token,
        incidents: Some(Arc::new(incidents)),
        limiter: http::ActionLimiter::default(),
    });
    http::serve(listener, state, w.stop.clone()).await;
    drain(&w).await;
    signals.abort();
    if let Some(task) = lease_task
        && task.await.unwrap_or(false)
    {
        error!("keywarden stopped: it lost the lease.");
        return Err(DaemonError::SteppedDown);
    }
    info!("keywarden stopped.");
    Ok(())
}

/// What every task is built from, and how they all stop.
struct Wiring {
    /// The validated configuration.
    config: Arc<Config>,
    /// The durable store.
    store: StateStore,
    /// The one in-memory view.
    view: SharedView,
    /// Every metric.
    metrics: Arc<Metrics>,
    /// The AWS SDK configuration, loaded once.
    sdk: aws_config::SdkConfig,
    /// Cancelled once to stop every task.
    stop: CancellationToken,
    /// Every long-lived task, waited for once at the end.
    tasks: TaskTracker,
}

/// The targets of the inventory secrets of other accounts (name, target), from the
/// configuration, so that their series carry their account before they are listed.
pub fn place_inventory(config: &Config, targets: &Targets) -> Vec<(String, TargetId)> {
    config
        .secrets
        .iter()
        .filter_map(|s| {
            let (account, region) = crate::inventory::spec_place(config, s)?;
            Some((s.name.clone(), targets.intern(account, region)?))
        })
        .collect()
}

/// The tasks that watch (the metadata poller is spawned before): the access poller (with
/// `[access]`), the metrics refresher and the reminder sender (with `[reminders]`).
fn spawn_watchers(w: &Wiring) {
    if let Some(access) = w.config.access.as_ref() {
        let poller = AccessPoller::new(
            aws::cloudwatchlogs::CloudWatchLogs::new(&w.sdk, w.metrics.clone()),
            w.config.clone(),
            access.clone(),
            w.view.clone(),
            w.metrics.clone(),
            w.store.clone(),
        );
        let queue = match &access.source {
            crate::config::AccessSource::Sqs { queue_url } => {
                info!(queue_url = %queue_url, log_group = access.log_group.as_deref().unwrap_or("-"), "Access poller enabled (SQS source).");
                Some(aws::sqs::Sqs::new(&w.sdk, w.metrics.clone()))
            }
            crate::config::AccessSource::CloudWatchLogs => {
                info!(
                    log_group = access.log_group.as_deref().unwrap_or("-"),
                    access_every = %format_duration(w.config.poll.access_every),
                    "Access poller enabled."
                );
                None
            }
        };
        w.tasks
            .spawn(crate::access::run(poller, queue, w.stop.clone()));
    }
    w.tasks.spawn(crate::telemetry::run_refresher(
        w.metrics.clone(),
        METRICS_REFRESH_EVERY,
        METRICS_MAX_AGE,
        w.stop.clone(),
    ));
    if let Some(r) = w.config.reminders.as_ref() {
        info!(topic = %r.sns_topic_arn, leads = r.lead.len(), "Reminders on.");
        let task = Reminders::new(
            aws::sns::Sns::new(&w.sdk, w.metrics.clone()),
            w.config.clone(),
            w.view.clone(),
            w.store.clone(),
            w.metrics.clone(),
        );
        w.tasks.spawn(task.run(w.stop.clone()));
    }
}

/// The rotation core: unfinished rotations resumed from the journal, then its finalizer and
/// scheduler spawned.
fn start_rotation(w: &Wiring) -> Result<Arc<crate::rotation::Engine>, DaemonError> {
    let rotation = RotationCore::new(
        aws::secretsmanager::SecretsManager::new(&w.sdk, w.metrics.clone()),
        w.store.clone(),
        w.config.clone(),
        w.view.clone(),
        w.metrics.clone(),
        w.stop.clone(),
    );
    rotation.set_elasticache(Arc::new(aws::elasticache::ElastiCache::new(
        &w.sdk,
        w.metrics.clone(),
    )));
    let resumed = rotation.resume()?;
    if resumed > 0 {
        info!(
            rotations = resumed,
            "Resumed unfinished rotations from the journal."
        );
    }
    w.tasks.spawn(rotation.clone().run_finalizer());
    w.tasks.spawn(rotation.clone().run_scheduler());
    w.tasks.spawn(rotation.clone().run_redrive());
    Ok(rotation)
}

/// The incident service over `rotation`, with open incidents resumed.
fn start_incidents(
    w: &Wiring,
    rotation: Arc<crate::rotation::Engine>,
) -> Result<Arc<crate::incident::Service>, DaemonError> {
    let incidents = crate::incident::Incidents::new(
        w.store.clone(),
        w.config.clone(),
        rotation,
        aws::sns::Sns::new(&w.sdk, w.metrics.clone()),
        w.config
            .access
            .as_ref()
            .map(|_| aws::cloudwatchlogs::CloudWatchLogs::new(&w.sdk, w.metrics.clone())),
        w.metrics.clone(),
        w.view.clone(),
        w.stop.clone(),
    );
    let reopened = incidents.resume()?;
    if reopened > 0 {
        info!(
            incidents = reopened,
            "Resumed open compromise incidents from the store."
        );
    }
    w.tasks.spawn(incidents.clone().run_redrive());
    Ok(incidents)
}

/// After the listener drained: cancels every task and waits for all of them, once, within
/// [`STOP_GRACE`].
async fn drain(w: &Wiring) {
    w.stop.cancel();
    w.tasks.close();
    if tokio::time::timeout(STOP_GRACE, w.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            still_running = w.tasks.len(),
            "Some tasks did not stop within {}s; exiting anyway.",
            STOP_GRACE.as_secs()
        );
    }
}

/// Cancels `stop` at the first SIGTERM or SIGINT.
fn spawn_signal_listener(
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "Shutting down.");
        stop.cancel();
    }))
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn token_file_modes_and_owners() {
        // Private files of ours or root's.
        for (mode, owner) in [(0o100600, 1000), (0o100400, 1000), (0o600, 0)] {
            assert_eq!(
                token_file_problem(mode, owner, 1000),
                None,
                "{mode:o} {owner}"
            );
        }
        // Any group or other bit.
        for mode in [0o644, 0o640, 0o604, 0o610, 0o601, 0o660, 0o100666] {
            let why = token_file_problem(mode, 1000, 1000).expect("refused");
            assert!(why.contains(&format!("{:04o}", mode & 0o7777)), "{why}");
        }
        // Another non-root account's file, even private.
        let why = token_file_problem(0o600, 1001, 1000).expect("refused");
        assert!(why.contains("uid 1001"), "{why}");
        // Root running with root's file.
        assert_eq!(token_file_problem(0o600, 0, 0), None);
    }

    #[test]
    fn short_tokens_are_refused_and_not_echoed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let server = |token: &str| {
            let path = dir.path().join(format!("t{}", token.len()));
            std::fs::write(&path, format!("{token}\n")).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            ServerConfig {
                admin_token: Some(TokenSource::File(path)),
                ..crate::config::parse("", std::path::Path::new("t.toml"))
                    .expect("empty config")
                    .server
            }
        };
        let short = "a".repeat(31);
        let e = load_admin_token(&server(&short)).unwrap_err().to_string();
        assert!(e.contains("31 bytes") && e.contains("at least 32"), "{e}");
        assert!(!e.contains(&short), "{e}");
        let t = load_admin_token(&server(&"b".repeat(32))).unwrap();
        assert_eq!(t.map(|t| t.expose().len()), Some(32));
    }
}
