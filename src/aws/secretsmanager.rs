//! Secrets Manager adapter: implements [`SecretsMetadataApi`] and [`SecretsWriteApi`] on the
//! SDK client. Values pass through as [`SecretValue`] and are never formatted.

use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::DateTime as AwsDateTime;
use aws_sdk_secretsmanager::types::SecretListEntry;
use chrono::{DateTime, Utc};

use super::{
    AwsError, AwsErrorKind, CallObserver, CallOutcome, SecretMeta, SecretPage, SecretStages,
    SecretValue, SecretsMetadataApi, SecretsWriteApi, VersionMeta, VersionSelector, VersionedValue,
};

const SERVICE: &str = "secretsmanager";

/// The Secrets Manager client plus the observer that counts its calls.
#[derive(Clone)]
pub struct SecretsManager {
    /// The SDK client.
    client: Client,
    /// Where each call is counted.
    observer: Arc<dyn CallObserver>,
}

impl SecretsManager {
    /// Wraps an SDK client built from the shared configuration.
    pub fn new(sdk: &aws_config::SdkConfig, observer: Arc<dyn CallObserver>) -> Self {
        SecretsManager {
            client: Client::new(sdk),
            observer,
        }
    }

    /// Wraps an SDK client built elsewhere (the SDK's mock clients in tests).
    pub fn from_client(client: Client, observer: Arc<dyn CallObserver>) -> Self {
        SecretsManager { client, observer }
    }

    fn record<T, E, R>(
        &self,
        operation: &'static str,
        resource: &str,
        result: Result<T, SdkError<E, R>>,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let result = result.map_err(|e| classify(operation, &e));
        self.observer
            .aws_call(SERVICE, operation, CallOutcome::of(&result));
        super::report_access(
            self.observer.as_ref(),
            SERVICE,
            operation,
            resource,
            &result,
        );
        result
    }
}

/// Maps an SDK error to our bounded kinds.
pub(crate) fn classify<E, R>(operation: &'static str, e: &SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let kind = match e {
        SdkError::TimeoutError(_) => AwsErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => AwsErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_io() => AwsErrorKind::Network,
        // The SDK reports a failed credentials chain as a dispatch failure of kind "other": a
        // refused AssumeRole is `auth`, a throttled one (STS `Throttling`) is `throttled`.
        SdkError::DispatchFailure(d)
            if d.as_connector_error()
                .is_some_and(|c| mentions_credentials(c)) =>
        {
            let throttled = d
                .as_connector_error()
                .is_some_and(|c| chain_mentions(c, &["Throttling", "Rate exceeded"]));
            if throttled {
                AwsErrorKind::Throttled
            } else {
                AwsErrorKind::Auth
            }
        }
        SdkError::DispatchFailure(_) => AwsErrorKind::Network,
        SdkError::ResponseError(_) => AwsErrorKind::Other,
        SdkError::ServiceError(s) => s
            .err()
            .code()
            .map_or(AwsErrorKind::Service, AwsErrorKind::from_code),
        _ => AwsErrorKind::Other,
    };
    AwsError {
        service: SERVICE,
        operation,
        kind,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// Whether any error in the chain is about loading credentials.
fn mentions_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    chain_mentions(e, &["credentials"])
}

/// Whether any error in the chain (its message or its debug form, which carries the service's
/// error code) contains one of `needles`.
fn chain_mentions(e: &(dyn std::error::Error + 'static), needles: &[&str]) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = format!("{err} {err:?}");
        if needles.iter().any(|n| text.contains(n)) {
            return true;
        }
        next = err.source();
    }
    false
}

pub(crate) fn to_chrono(t: Option<&AwsDateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

fn to_meta(e: &SecretListEntry) -> SecretMeta {
    let rules = e.rotation_rules();
    let versions = e.secret_versions_to_stages().map(|m| {
        let mut v: Vec<(String, Vec<String>)> =
            m.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        v.sort();
        v
    });
    SecretMeta {
        arn: e.arn().unwrap_or_default().to_string(),
        name: e.name().unwrap_or_default().to_string(),
        created: to_chrono(e.created_date()),
        last_rotated: to_chrono(e.last_rotated_date()),
        last_accessed: to_chrono(e.last_accessed_date()),
        deleted: to_chrono(e.deleted_date()),
        rotation_enabled: e.rotation_enabled().unwrap_or(false),
        automatically_after_days: rules.and_then(|r| r.automatically_after_days()),
        schedule_expression: rules
            .and_then(|r| r.schedule_expression())
            .map(str::to_string),
        next_rotation: to_chrono(e.next_rotation_date()),
        versions,
    }
}

impl SecretsMetadataApi for SecretsManager {
    async fn list_secrets_page(&self, next_token: Option<String>) -> Result<SecretPage, AwsError> {
        let out = self
            .client
            .list_secrets()
            .max_results(100)
            .include_planned_deletion(true)
            .set_next_token(next_token)
            .send()
            .await;
        let out = self.record("ListSecrets", "*", out)?;
        Ok(SecretPage {
            secrets: out.secret_list().iter().map(to_meta).collect(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn list_secret_versions(&self, secret_id: &str) -> Result<Vec<VersionMeta>, AwsError> {
        let mut versions = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_secret_version_ids()
                .secret_id(secret_id)
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await;
            let out = self.record("ListSecretVersionIds", secret_id, out)?;
            for v in out.versions() {
                versions.push(VersionMeta {
                    id: v.version_id().unwrap_or_default().to_string(),
                    stages: v.version_stages().to_vec(),
                    created: to_chrono(v.created_date()),
                });
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(versions)
    }
}

impl SecretsWriteApi for SecretsManager {
    async fn describe(&self, secret_id: &str) -> Result<SecretStages, AwsError> {
        super::gate::check(SERVICE, "DescribeSecret")?;
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await;
        let out = self.record("DescribeSecret", secret_id, out)?;
        let mut versions: Vec<(String, Vec<String>)> = out
            .version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .collect()
            })
            .unwrap_or_default();
        versions.sort();
        Ok(SecretStages {
            arn: out.arn().unwrap_or_default().to_string(),
            name: out.name().unwrap_or_default().to_string(),
            versions,
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            rotation_lambda: out
                .rotation_lambda_arn()
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            last_rotated: to_chrono(out.last_rotated_date()),
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        which: VersionSelector<'_>,
    ) -> Result<VersionedValue, AwsError> {
        super::gate::check(SERVICE, "GetSecretValue")?;
        let req = self.client.get_secret_value().secret_id(secret_id);
        let req = match which {
            VersionSelector::Stage(stage) => req.version_stage(stage),
            VersionSelector::IdAndStage(id, stage) => req.version_id(id).version_stage(stage),
        };
        let out = self.record("GetSecretValue", secret_id, req.send().await)?;
        let value = match (out.secret_string(), out.secret_binary()) {
            (Some(s), _) => SecretValue::new(s.to_string()),
            (None, Some(b)) => {
                use base64::Engine as _;
                SecretValue::binary_base64(
                    base64::engine::general_purpose::STANDARD.encode(b.as_ref()),
                )
            }
            (None, None) => SecretValue::new(String::new()),
        };
        Ok(VersionedValue {
            version_id: out.version_id().unwrap_or_default().to_string(),
            value,
        })
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretValue,
    ) -> Result<String, AwsError> {
        super::gate::check(SERVICE, "PutSecretValue")?;
        let req = self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .version_stages(super::AWSPENDING);
        let req = if value.is_binary() {
            use base64::Engine as _;
            let bytes = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(value.expose())
                    .map_err(|_| AwsError {
                        service: "secretsmanager",
                        operation: "PutSecretValue",
                        kind: AwsErrorKind::Service,
                        message: "the new value of a SecretBinary secret is not base64 bytes: nothing was sent".into(),
                    })?,
            );
            req.secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
                bytes.to_vec(),
            ))
        } else {
            req.secret_string(value.expose())
        };
        let out = req.send().await;
        let out = self.record("PutSecretValue", secret_id, out)?;
        Ok(out.version_id().unwrap_or(token).to_string())
    }

    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), AwsError> {
        super::gate::check(SERVICE, "UpdateSecretVersionStage")?;
        let out = self
            .client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(str::to_string))
            .set_remove_from_version_id(remove_from.map(str::to_string))
            .send()
            .await;
        self.record("UpdateSecretVersionStage", secret_id, out)
            .map(|_| ())
    }

    async fn rotate_secret(&self, secret_id: &str, token: &str) -> Result<(), AwsError> {
        super::gate::check(SERVICE, "RotateSecret")?;
        let out = self
            .client
            .rotate_secret()
            .secret_id(secret_id)
            .client_request_token(token)
            .send()
            .await;
        self.record("RotateSecret", secret_id, out).map(|_| ())
    }
}
