//! What the handlers read: [`AppState`], built by the daemon (or a test) and shared by every
//! connection. It must never import the handlers or the serving loop.

use std::sync::Arc;
use std::time::Duration;

use super::guard::{ActionLimiter, Gate};
use crate::aws::SecretValue;
use crate::aws::{LogsApi, NotifyApi, SecretsWriteApi};
use crate::config::Config;
use crate::domain::view::SharedView;
use crate::incident::{Incident, Incidents, OpenError, Opened};
use crate::rotation::journal::{Event, Rotation, Trigger};
use crate::rotation::{RequestError, RequestOptions, RollbackError, RollbackReport, RotationCore};
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// A boxed future, so the services can be trait objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the rotation routes need of the rotation core. The daemon passes the core over the
/// Secrets Manager adapter; tests pass one over `aws::fake` or a stub.
pub trait RotationService: Send + Sync {
    /// The inventory name of a secret given by inventory or Secrets Manager name.
    fn secret_name(&self, name: &str) -> Option<String>;
    /// Accepts a rotation (journaled before this returns).
    fn request(
        &self,
        secret: &str,
        trigger: Trigger,
        opts: RequestOptions,
    ) -> Result<Rotation, RequestError>;
    /// Accepts a rotation after its pre-flight checks (SPEC §12); `force` starts it past a
    /// failing one.
    fn request_guarded<'a>(
        &'a self,
        secret: &'a str,
        trigger: Trigger,
        force: bool,
    ) -> BoxFuture<'a, Result<Rotation, RequestError>>;
    /// Moves AWSCURRENT back to the previous version.
    fn rollback<'a>(
        &'a self,
        secret: &'a str,
        force: bool,
    ) -> BoxFuture<'a, Result<RollbackReport, RollbackError>>;
    /// The newest rotations.
    fn recent(&self, limit: u32) -> Result<Vec<Rotation>, StoreError>;
    /// One rotation and its journal.
    fn status(&self, id: &str) -> Result<Option<(Rotation, Vec<Event>)>, StoreError>;
}

impl<A: SecretsWriteApi + 'static> RotationService for Arc<RotationCore<A>> {
    fn secret_name(&self, name: &str) -> Option<String> {
        self.find_secret(name).map(|s| s.name.clone())
    }

    fn request(
        &self,
        secret: &str,
        trigger: Trigger,
        opts: RequestOptions,
    ) -> Result<Rotation, RequestError> {
        RotationCore::request(self, secret, trigger, opts)
    }

    fn request_guarded<'a>(
        &'a self,
        secret: &'a str,
        trigger: Trigger,
        force: bool,
    ) -> BoxFuture<'a, Result<Rotation, RequestError>> {
        Box::pin(RotationCore::request_guarded(self, secret, trigger, force))
    }

    fn rollback<'a>(
        &'a self,
        secret: &'a str,
        force: bool,
    ) -> BoxFuture<'a, Result<RollbackReport, RollbackError>> {
        Box::pin(RotationCore::rollback(self, secret, force))
    }

    fn recent(&self, limit: u32) -> Result<Vec<Rotation>, StoreError> {
        RotationCore::recent(self, limit)
    }

    fn status(&self, id: &str) -> Result<Option<(Rotation, Vec<Event>)>, StoreError> {
        RotationCore::status(self, id)
    }
}

/// What the incident routes need of the incident service.
pub trait IncidentService: Send + Sync {
    /// The inventory name of a secret given by inventory or Secrets Manager name.
    fn secret_name(&self, name: &str) -> Option<String>;
    /// Opens an incident (journaled before this returns), or returns the open one.
    fn open(&self, secret: &str, reason: &str, reported_by: &str) -> Result<Opened, OpenError>;
    /// One incident.
    fn get(&self, id: &str) -> Result<Option<Incident>, StoreError>;
    /// The newest incidents.
    fn list(&self, limit: u32) -> Result<Vec<Incident>, StoreError>;
}

impl<N, L, A> IncidentService for Arc<Incidents<N, L, A>>
where
    N: NotifyApi + 'static,
    L: LogsApi + 'static,
    A: SecretsWriteApi + 'static,
{
    fn secret_name(&self, name: &str) -> Option<String> {
        self.find_secret(name).map(|s| s.name.clone())
    }

    fn open(&self, secret: &str, reason: &str, reported_by: &str) -> Result<Opened, OpenError> {
        Incidents::open(self, secret, reason, reported_by)
    }

    fn get(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        Incidents::get(self, id)
    }

    fn list(&self, limit: u32) -> Result<Vec<Incident>, StoreError> {
        Incidents::list(self, limit)
    }
}

/// What the handlers read.
pub struct AppState {
    /// The configuration (server limits, poll periods).
    pub config: Arc<Config>,
    /// The shared inventory view.
    pub view: SharedView,
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
    /// The rotation core (`None` in tools that only serve reads).
    pub rotation: Option<Arc<dyn RotationService>>,
    /// The admin bearer token; `None` turns every POST off (403).
    pub admin_token: Option<SecretValue>,
    /// Compromise incidents (`None` in tools that only serve reads).
    pub incidents: Option<Arc<dyn IncidentService>>,
    /// The per-secret rate limit of the action routes.
    pub limiter: ActionLimiter,
}

impl AppState {
    /// The pollers readiness depends on, with their periods.
    pub(crate) fn pollers(&self) -> Vec<(&'static str, Duration)> {
        let mut p = vec![(
            crate::inventory::poller::SOURCE,
            self.config.poll.metadata_every,
        )];
        if self.config.access.is_some() && self.view.read().polls.contains_key("access") {
            p.push(("access", self.config.poll.access_every));
        }
        p
    }

    /// What the action routes are checked against.
    pub(crate) fn gate(&self) -> Gate<'_> {
        Gate {
            token: self.admin_token.as_ref(),
            limiter: &self.limiter,
        }
    }
}
