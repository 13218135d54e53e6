//! Which accounts and regions the metadata poller reads (SPEC §13): the daemon's own account
//! and region always; with `[[account]]`, each listed account in each of its regions through
//! its role; with `[organization]`, every active account of organizations:ListAccounts (minus
//! `exclude` and the daemon's own account), read again every `refresh_every`.
//!
//! A member account's client reports its calls to the metrics but not its refusals: an account
//! that cannot be read shows in `keywarden_account_up` and below `/readyz`'s verdict, without
//! making the daemon unready ([`crate::aws::accounts::QuietDenials`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::aws::CallObserver;
use crate::aws::accounts::{Accounts, AccountsApi, QuietDenials, assumed_config};
use crate::aws::secretsmanager::SecretsManager;
use crate::config::{Config, ExternalIdSource, OrganizationConfig};
use crate::domain::targets::{TargetId, Targets};
use crate::domain::view::SharedView;
use crate::inventory::poller::{MetadataPoller, PollTarget, SOURCE};
use crate::telemetry::Metrics;
use aws_config::SdkConfig;

/// Why the accounts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// An ExternalId source is missing or empty.
    #[error("{table}: the ExternalId cannot be read: {message}")]
    ExternalId {
        /// `account[N]` or `organization`.
        table: String,
        /// What is wrong (never the value).
        message: String,
    },
    /// Too many accounts and regions.
    #[error(
        "more than {} accounts and regions",
        crate::domain::targets::MAX_TARGETS
    )]
    TooMany,
}

/// Reads an ExternalId from its source (never logged).
pub fn read_external_id(source: &ExternalIdSource, table: &str) -> Result<String, AccountsError> {
    let err = |message: String| AccountsError::ExternalId {
        table: table.to_string(),
        message,
    };
    let value = match source {
        ExternalIdSource::Env(name) => std::env::var(name)
            .map_err(|_| err(format!("the environment variable {name} is not set")))?,
        ExternalIdSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?,
    };
    let value = value.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(err("it is empty".to_string()));
    }
    Ok(value)
}

/// Everything a member target's client is built from.
#[derive(Clone)]
struct MemberBuilder {
    sdk: SdkConfig,
    observer: Arc<dyn CallObserver>,
    /// The home target's client observer (its refusals are the daemon's own).
    home_observer: Arc<dyn CallObserver>,
}

impl MemberBuilder {
    /// The daemon's own account in another region: its own credentials, no role.
    fn home_in(&self, region: &str) -> SecretsManager {
        SecretsManager::new(
            &crate::aws::accounts::home_config_in(&self.sdk, region),
            self.home_observer.clone(),
        )
    }

    async fn build(
        &self,
        role_arn: &str,
        external_id: Option<&str>,
        region: &str,
    ) -> SecretsManager {
        let sdk = assumed_config(
            &self.sdk,
            role_arn,
            external_id,
            region,
            self.observer.clone(),
        )
        .await;
        SecretsManager::new(&sdk, self.observer.clone())
    }
}

/// The metadata poller of every account and region, with the organization's account list.
pub struct FleetPoller {
    poller: MetadataPoller<SecretsManager>,
    org: Option<OrgSource>,
}

/// The organization's accounts, read again every `refresh_every`.
struct OrgSource {
    accounts: Accounts,
    config: OrganizationConfig,
    external_id: Option<String>,
    builder: MemberBuilder,
    home: SecretsManager,
    targets: Arc<Targets>,
    /// The member clients built so far, by target.
    members: HashMap<TargetId, SecretsManager>,
    next_refresh: Instant,
    /// Whether the last ListAccounts failed (to log once per change).
    failing: bool,
}

/// Builds the poller of every account and region the configuration names.
pub async fn fleet_poller(
    config: Arc<Config>,
    sdk: &SdkConfig,
    view: SharedView,
    metrics: Arc<Metrics>,
) -> Result<FleetPoller, AccountsError> {
    let home = SecretsManager::new(sdk, metrics.clone());
    let mut targets = vec![PollTarget::new(TargetId::HOME, home.clone())];
    if !config.multi_account() {
        let poller = MetadataPoller::with_targets(targets, config, view, metrics);
        return Ok(FleetPoller { poller, org: None });
    }
    let registry = view.targets().clone();
    let accounts = Accounts::new(sdk, metrics.clone());
    match accounts.caller_account().await {
        Ok(id) => {
            registry.set_home_account(&id);
            info!(account = %id, "Home account (STS GetCallerIdentity).");
        }
        Err(e) => {
            warn!(error = %e, "Cannot read the home account id (STS GetCallerIdentity); it is learned from the first listed secret.")
        }
    }
    let home_account = registry.home_account();
    let home_region = registry.labels(TargetId::HOME).region;
    let builder = MemberBuilder {
        sdk: sdk.clone(),
        observer: Arc::new(QuietDenials(metrics.clone())),
        home_observer: metrics.clone(),
    };
    for (i, a) in config.accounts.iter().enumerate() {
        let external_id = a
            .external_id
            .as_ref()
            .map(|s| read_external_id(s, &format!("account[{i}]")))
            .transpose()?;
        for region in &a.regions {
            if *a.id == *home_account && **region == *home_region {
                continue;
            }
            let id = registry
                .intern(&a.id, region)
                .ok_or(AccountsError::TooMany)?;
            let api = builder
                .build(&a.role_arn, external_id.as_deref(), region)
                .await;
            targets.push(PollTarget::new(id, api));
        }
    }
    let org = match &config.organization {
        Some(o) => Some(OrgSource {
            accounts,
            config: o.clone(),
            external_id: o
                .external_id
                .as_ref()
                .map(|s| read_external_id(s, "organization"))
                .transpose()?,
            builder,
            home,
            targets: registry.clone(),
            members: HashMap::new(),
            next_refresh: Instant::now(),
            failing: false,
        }),
        None => None,
    };
    info!(
        targets = targets.len(),
        organization = org.is_some(),
        "Reading several accounts and regions."
    );
    let poller = MetadataPoller::with_targets(targets, config, view, metrics);
    Ok(FleetPoller { poller, org })
}

impl OrgSource {
    /// The organization's targets, when a refresh is due and ListAccounts answers.
    async fn refresh(&mut self) -> Option<Vec<PollTarget<SecretsManager>>> {
        if Instant::now() < self.next_refresh {
            return None;
        }
        self.next_refresh = Instant::now() + self.config.refresh_every;
        let listed = match self.accounts.list_accounts().await {
            Ok(l) => {
                if self.failing {
                    info!("organizations:ListAccounts answers again.");
                    self.failing = false;
                }
                l
            }
            Err(e) => {
                if !self.failing {
                    warn!(error = %e, kind = e.kind.as_str(), "Cannot list the organization's accounts; the last list stays.");
                    self.failing = true;
                }
                // Try again sooner than a full refresh period.
                self.next_refresh = Instant::now() + Duration::from_secs(60);
                return None;
            }
        };
        let home_account = self.targets.home_account();
        let home_region = self.targets.labels(TargetId::HOME).region;
        let mut out = vec![PollTarget::new(TargetId::HOME, self.home.clone())];
        let mut skipped = 0;
        for a in listed {
            if !a.active || self.config.exclude.contains(&a.id) {
                skipped += 1;
                continue;
            }
            for region in &self.config.regions {
                let own = *a.id == *home_account;
                if own && **region == *home_region {
                    continue;
                }
                let Some(id) = self.targets.intern(&a.id, region) else {
                    warn!("Too many accounts and regions; the rest are not read.");
                    break;
                };
                let api = match self.members.get(&id) {
                    Some(api) => api.clone(),
                    // The management (or delegated administrator) account itself is read with
                    // the daemon's own credentials: StackSets do not deploy the member role there.
                    None if own => {
                        let api = self.builder.home_in(region);
                        self.members.insert(id, api.clone());
                        api
                    }
                    None => {
                        let role = format!("arn:aws:iam::{}:role/{}", a.id, self.config.role_name);
                        let api = self
                            .builder
                            .build(&role, self.external_id.as_deref(), region)
                            .await;
                        self.members.insert(id, api.clone());
                        api
                    }
                };
                out.push(PollTarget::new(id, api));
            }
        }
        let kept: std::collections::HashSet<TargetId> = out.iter().map(|t| t.id).collect();
        self.members.retain(|id, _| kept.contains(id));
        info!(
            targets = out.len(),
            skipped_accounts = skipped,
            "Organization accounts read."
        );
        Some(out)
    }
}

impl FleetPoller {
    /// Polls until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let every = self.poller.every();
        let (metrics, view) = self.poller.handles();
        crate::daemon::periodic::run_periodically(
            SOURCE, every, &metrics, &view, &shutdown, &mut self,
        )
        .await;
        info!("Metadata poller stopped.");
    }

    /// The poller itself (`keywarden status`).
    pub fn into_inner(self) -> MetadataPoller<SecretsManager> {
        self.poller
    }

    /// Reads the organization's accounts when due (`keywarden status` calls it once).
    pub async fn refresh_accounts(&mut self) {
        if let Some(org) = &mut self.org
            && let Some(targets) = org.refresh().await
        {
            self.poller.set_targets(targets);
        }
    }
}

impl crate::daemon::periodic::Cycle for FleetPoller {
    async fn cycle(&mut self, started: Instant) -> Option<&'static str> {
        self.refresh_accounts().await;
        crate::daemon::periodic::Cycle::cycle(&mut self.poller, started).await
    }
}
