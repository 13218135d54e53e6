//! ElastiCache adapter: implements [`ElastiCacheApi`] on the SDK client (the `elasticache`
//! rotation strategy, issue #13 point 1).
//!
//! A service error is reported as AWS gave it: its code and message (`InvalidReplicationGroupState:
//! ...`, `ReplicationGroupNotFoundFault: ...`, `InvalidParameterValue: ...`). The AUTH token is
//! sent in ModifyReplicationGroup only; it is scrubbed from any error text before that text
//! leaves this module.

use std::sync::Arc;

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_elasticache::types::{AuthTokenUpdateStrategyType, ReplicationGroup};

use super::{
    AuthTokenUpdate, AwsError, AwsErrorKind, AwsFut, CallObserver, CallOutcome, ElastiCacheApi,
    ReplicationGroupState, SecretValue,
};

const SERVICE: &str = "elasticache";

/// The ElastiCache client plus the observer that counts its calls.
#[derive(Clone)]
pub struct ElastiCache {
    /// The SDK client.
    client: Client,
    /// Where each call is counted.
    observer: Arc<dyn CallObserver>,
}

impl ElastiCache {
    /// Wraps an SDK client built from the shared configuration.
    pub fn new(sdk: &aws_config::SdkConfig, observer: Arc<dyn CallObserver>) -> Self {
        ElastiCache {
            client: Client::new(sdk),
            observer,
        }
    }

    fn count<T>(&self, operation: &'static str, result: &Result<T, AwsError>) {
        self.observer
            .aws_call(SERVICE, operation, CallOutcome::of(result));
    }
}

/// An SDK error as keywarden reports it: a service error as `Code: message`, as AWS gave it;
/// anything else as the SDK describes it. `hide` (the token) is replaced by `[redacted]`.
fn classify<E, R>(operation: &'static str, e: &SdkError<E, R>, hide: Option<&str>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut err = super::secretsmanager::classify(operation, e);
    err.service = SERVICE;
    if let SdkError::ServiceError(s) = e
        && let Some(code) = s.err().code()
    {
        err.message = format!("{code}: {}", s.err().message().unwrap_or("(no message)"));
    } else {
        err.message = DisplayErrorContext(e).to_string();
    }
    if let Some(h) = hide.filter(|h| !h.is_empty()) {
        err.message = err.message.replace(h, "[redacted]");
    }
    err
}

/// The state keywarden needs from one group of the answer. Pure.
fn to_state(g: &ReplicationGroup) -> ReplicationGroupState {
    let primary = g
        .node_groups()
        .first()
        .and_then(|n| n.primary_endpoint())
        .or(g.configuration_endpoint())
        .and_then(|e| {
            let port = u16::try_from(e.port()?).ok()?;
            Some((e.address()?.to_string(), port))
        });
    ReplicationGroupState {
        id: g.replication_group_id().unwrap_or_default().to_string(),
        status: g.status().unwrap_or_default().to_string(),
        primary_endpoint: primary,
        transit_encryption: g.transit_encryption_enabled().unwrap_or(false),
        auth_token_enabled: g.auth_token_enabled().unwrap_or(false),
        pending_auth_token: g
            .pending_modified_values()
            .and_then(|p| p.auth_token_status())
            .map(|s| s.as_str().to_string()),
    }
}

impl ElastiCacheApi for ElastiCache {
    fn describe_replication_group<'a>(
        &'a self,
        group_id: &'a str,
    ) -> AwsFut<'a, Result<ReplicationGroupState, AwsError>> {
        Box::pin(async move {
            const OPERATION: &str = "DescribeReplicationGroups";
            let result = match self
                .client
                .describe_replication_groups()
                .replication_group_id(group_id)
                .send()
                .await
            {
                Ok(out) => out
                    .replication_groups()
                    .iter()
                    .find(|g| g.replication_group_id() == Some(group_id))
                    .map(to_state)
                    .ok_or_else(|| AwsError {
                        service: SERVICE,
                        operation: OPERATION,
                        kind: AwsErrorKind::NotFound,
                        message: format!("the answer does not list replication group {group_id}"),
                    }),
                Err(e) => Err(classify(OPERATION, &e, None)),
            };
            self.count(OPERATION, &result);
            super::report_access(
                self.observer.as_ref(),
                SERVICE,
                OPERATION,
                group_id,
                &result,
            );
            result
        })
    }

    fn modify_auth_token<'a>(
        &'a self,
        group_id: &'a str,
        token: &'a SecretValue,
        update: AuthTokenUpdate,
    ) -> AwsFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            const OPERATION: &str = "ModifyReplicationGroup";
            let strategy = match update {
                AuthTokenUpdate::Rotate => AuthTokenUpdateStrategyType::Rotate,
                AuthTokenUpdate::Set => AuthTokenUpdateStrategyType::Set,
            };
            let result = self
                .client
                .modify_replication_group()
                .replication_group_id(group_id)
                .auth_token(token.expose())
                .auth_token_update_strategy(strategy)
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(OPERATION, &e, Some(token.expose())));
            self.count(OPERATION, &result);
            super::report_access(
                self.observer.as_ref(),
                SERVICE,
                OPERATION,
                group_id,
                &result,
            );
            result
        })
    }
}
