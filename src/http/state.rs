//! What the handlers read: [`AppState`], built by the daemon (or a test) and shared by every
//! connection. It must never import the handlers or the serving loop.

use std::sync::Arc;
use std::time::Duration;

use super::guard::{ActionLimiter, Gate};
use crate::aws::SecretValue;
use crate::config::Config;
use crate::domain::view::SharedView;
use crate::rotation::Engine;
use crate::telemetry::Metrics;

/// What the handlers read.
pub struct AppState {
    /// The configuration (server limits, poll periods).
    pub config: Arc<Config>,
    /// The shared inventory view.
    pub view: SharedView,
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
    /// The rotation core (`None` in tools that only serve reads).
    pub rotation: Option<Arc<Engine>>,
    /// The admin bearer token; `None` turns every POST off (403).
    pub admin_token: Option<SecretValue>,
    /// Compromise incidents (`None` in tools that only serve reads).
    pub incidents: Option<Arc<crate::incident::Service>>,
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
