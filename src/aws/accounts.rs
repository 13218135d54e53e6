//! Reading other accounts (SPEC §13): an SDK configuration per (account, region) whose
//! credentials come from a role assumed there, the daemon's own account id (STS
//! GetCallerIdentity) and the organization's accounts (Organizations ListAccounts).
//!
//! Credentials: aws-config's `AssumeRoleProvider` (AssumeRole with the role's ExternalId, the
//! daemon's own credentials as the base) behind the SDK's lazy identity cache, which reuses the
//! session until shortly before it expires and then assumes the role again. [`CountingProvider`]
//! sits between the two, so each real AssumeRole call is counted in
//! `keywarden_aws_requests_total{service="sts",operation="AssumeRole"}`; a cached one is not a
//! call.

use std::sync::Arc;

use aws_config::identity::IdentityCache;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, future::ProvideCredentials as CredentialsFuture,
};

use super::{AwsError, AwsErrorKind, CallObserver, CallOutcome};

/// One account of the organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccount {
    /// The 12-digit id.
    pub id: String,
    /// `ACTIVE` (anything else, such as `SUSPENDED` or `PENDING_CLOSURE`, is skipped).
    pub active: bool,
}

/// The calls that find which accounts to read.
pub trait AccountsApi: Send + Sync + 'static {
    /// STS GetCallerIdentity: the account of the daemon's own credentials.
    fn caller_account(&self) -> impl Future<Output = Result<String, AwsError>> + Send;

    /// Organizations ListAccounts, every page.
    fn list_accounts(&self) -> impl Future<Output = Result<Vec<OrgAccount>, AwsError>> + Send;
}

/// The STS and Organizations clients of the daemon's own credentials.
#[derive(Clone)]
pub struct Accounts {
    sts: aws_sdk_sts::Client,
    organizations: aws_sdk_organizations::Client,
    observer: Arc<dyn CallObserver>,
}

impl Accounts {
    /// Clients from the shared configuration.
    pub fn new(sdk: &SdkConfig, observer: Arc<dyn CallObserver>) -> Accounts {
        Accounts {
            sts: aws_sdk_sts::Client::new(sdk),
            organizations: aws_sdk_organizations::Client::new(sdk),
            observer,
        }
    }
}

impl AccountsApi for Accounts {
    async fn caller_account(&self) -> Result<String, AwsError> {
        const OPERATION: &str = "GetCallerIdentity";
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError {
                service: "sts",
                ..super::secretsmanager::classify(OPERATION, &e)
            })
            .and_then(|o| {
                o.account.ok_or_else(|| AwsError {
                    service: "sts",
                    operation: OPERATION,
                    kind: AwsErrorKind::Other,
                    message: "GetCallerIdentity answered without an account".into(),
                })
            });
        self.observer
            .aws_call("sts", OPERATION, CallOutcome::of(&out));
        out
    }

    async fn list_accounts(&self) -> Result<Vec<OrgAccount>, AwsError> {
        const OPERATION: &str = "ListAccounts";
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .organizations
                .list_accounts()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| AwsError {
                    service: "organizations",
                    ..super::secretsmanager::classify(OPERATION, &e)
                });
            self.observer
                .aws_call("organizations", OPERATION, CallOutcome::of(&out));
            super::report_access(
                self.observer.as_ref(),
                "organizations",
                OPERATION,
                "*",
                &out,
            );
            let out = out?;
            for a in out.accounts.unwrap_or_default() {
                let Some(id) = a.id else { continue };
                let active = a.status.as_ref().is_some_and(|s| s.as_str() == "ACTIVE");
                all.push(OrgAccount { id, active });
            }
            match out.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(all)
    }
}

/// A credentials provider that counts each call of the provider it wraps (each is one
/// AssumeRole: the identity cache in front of it answers the others).
#[derive(Debug)]
pub struct CountingProvider<P> {
    inner: P,
    observer: Arc<dyn CallObserver>,
}

impl std::fmt::Debug for dyn CallObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallObserver")
    }
}

impl<P: ProvideCredentials> ProvideCredentials for CountingProvider<P> {
    fn provide_credentials<'a>(&'a self) -> CredentialsFuture<'a>
    where
        Self: 'a,
    {
        CredentialsFuture::new(async move {
            let out = self.inner.provide_credentials().await;
            let outcome = match &out {
                Ok(_) => CallOutcome::Ok,
                Err(e) if is_throttling(e) => CallOutcome::Throttled,
                Err(_) => CallOutcome::Error,
            };
            self.observer.aws_call("sts", "AssumeRole", outcome);
            out
        })
    }
}

fn is_throttling(e: &aws_credential_types::provider::error::CredentialsError) -> bool {
    let text = aws_sdk_sts::error::DisplayErrorContext(e).to_string();
    text.contains("Throttl") || text.contains("Rate exceeded")
}

/// The SDK configuration that reads `region` of another account through `role_arn`: the shared
/// configuration (endpoint, timeouts, retries) with the assumed role's credentials, behind an
/// identity cache of its own. `external_id` is the value the role's trust policy asks for, if
/// any.
///
/// The cache is the target's own: the shared one keeps at most 64 credential providers
/// (`aws-smithy-runtime`'s `DEFAULT_MAX_PARTITIONS`) and evicts an arbitrary one beyond, so with
/// more than 64 accounts and regions on one cache the assumed-role credentials were dropped and
/// AssumeRole called again several times per cycle (about 375 per cycle for 100 targets).
pub async fn assumed_config(
    home: &SdkConfig,
    role_arn: &str,
    external_id: Option<&str>,
    region: &str,
    observer: Arc<dyn CallObserver>,
) -> SdkConfig {
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("keywarden")
        .region(Region::new(region.to_string()))
        .configure(home);
    if let Some(id) = external_id {
        builder = builder.external_id(id);
    }
    let provider = builder.build().await;
    home.to_builder()
        .region(Region::new(region.to_string()))
        .identity_cache(IdentityCache::lazy().build())
        .credentials_provider(SharedCredentialsProvider::new(CountingProvider {
            inner: provider,
            observer,
        }))
        .build()
}

/// The SDK configuration of the daemon's own account in another `region`.
pub fn home_config_in(home: &SdkConfig, region: &str) -> SdkConfig {
    home.to_builder()
        .region(Region::new(region.to_string()))
        .build()
}

/// An observer for a member account's clients: counts every call, but does not report
/// refusals as missing permissions of the daemon (`/readyz` would turn unready for one
/// account): the account shows in `keywarden_account_up` instead.
pub struct QuietDenials(pub Arc<dyn CallObserver>);

impl CallObserver for QuietDenials {
    fn aws_call(&self, service: &'static str, operation: &'static str, outcome: CallOutcome) {
        self.0.aws_call(service, operation, outcome);
    }
}
