//! The AWS boundary. This module tree is the only place that names AWS SDK types.
//!
//! The rest of the daemon talks to AWS through the small traits below, which speak keywarden's
//! own types ([`SecretMeta`], [`VersionMeta`], [`AwsError`]). The adapters in the submodules
//! implement them on the real SDK clients and count every call in
//! `keywarden_aws_requests_total`. Tests of the logic use the traits; tests of the adapters run
//! against moto.

pub mod client;
pub mod cloudwatchlogs;
pub mod secretsmanager;

use std::future::Future;

use chrono::{DateTime, Utc};

/// Metadata of one secret as ListSecrets reports it. Never holds a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretMeta {
    /// Full ARN.
    pub arn: String,
    /// Secrets Manager name.
    pub name: String,
    /// CreatedDate.
    pub created: Option<DateTime<Utc>>,
    /// LastRotatedDate.
    pub last_rotated: Option<DateTime<Utc>>,
    /// LastAccessedDate (AWS reports it to the day).
    pub last_accessed: Option<DateTime<Utc>>,
    /// DeletedDate: set while the secret is scheduled for deletion.
    pub deleted: Option<DateTime<Utc>>,
    /// RotationEnabled.
    pub rotation_enabled: bool,
    /// RotationRules.AutomaticallyAfterDays.
    pub automatically_after_days: Option<i64>,
    /// RotationRules.ScheduleExpression, verbatim.
    pub schedule_expression: Option<String>,
    /// NextRotationDate.
    pub next_rotation: Option<DateTime<Utc>>,
    /// SecretVersionsToStages: (version id, stages), sorted by version id.
    pub versions: Option<Vec<(String, Vec<String>)>>,
}

/// One version of a secret as ListSecretVersionIds reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    /// VersionId.
    pub id: String,
    /// VersionStages.
    pub stages: Vec<String>,
    /// CreatedDate.
    pub created: Option<DateTime<Utc>>,
}

/// A bounded classification of AWS failures; used as the `kind` label of error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsErrorKind {
    /// The service throttled us.
    Throttled,
    /// The request could not be sent or the connection broke.
    Network,
    /// The request or an attempt timed out.
    Timeout,
    /// Credentials or permissions were refused.
    Auth,
    /// The resource does not exist.
    NotFound,
    /// The service answered with another error.
    Service,
    /// Anything else (a malformed response, a bug in the SDK).
    Other,
}

impl AwsErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AwsErrorKind::Throttled => "throttled",
            AwsErrorKind::Network => "network",
            AwsErrorKind::Timeout => "timeout",
            AwsErrorKind::Auth => "auth",
            AwsErrorKind::NotFound => "not_found",
            AwsErrorKind::Service => "service",
            AwsErrorKind::Other => "other",
        }
    }

    /// Classifies an AWS error code such as `ThrottlingException`.
    pub fn from_code(code: &str) -> AwsErrorKind {
        match code {
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "LimitExceededException" => AwsErrorKind::Throttled,
            "ResourceNotFoundException" | "NotFound" | "NotFoundException" => {
                AwsErrorKind::NotFound
            }
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "AuthorizationError"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch" => AwsErrorKind::Auth,
            _ => AwsErrorKind::Service,
        }
    }
}

/// A failed AWS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed ({}): {message}", kind.as_str())]
pub struct AwsError {
    /// The service, such as `secretsmanager`.
    pub service: &'static str,
    /// The operation, such as `ListSecrets`.
    pub operation: &'static str,
    /// What kind of failure.
    pub kind: AwsErrorKind,
    /// The SDK's description (never contains a secret value: these calls carry none back).
    pub message: String,
}

/// One page of ListSecrets.
#[derive(Debug, Clone, Default)]
pub struct SecretPage {
    /// The secrets of this page.
    pub secrets: Vec<SecretMeta>,
    /// The token of the next page, if any.
    pub next_token: Option<String>,
}

/// The Secrets Manager metadata calls the poller makes.
pub trait SecretsMetadataApi: Send + Sync + 'static {
    /// One ListSecrets page of up to 100 secrets, including those scheduled for deletion.
    fn list_secrets_page(
        &self,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<SecretPage, AwsError>> + Send;

    /// Every version of a secret with its stages and creation time.
    fn list_secret_versions(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<Vec<VersionMeta>, AwsError>> + Send;
}

/// One CloudWatch Logs event as FilterLogEvents returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// CloudWatch Logs' own event id (not the CloudTrail eventID inside the message).
    pub event_id: String,
    /// The log event timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The raw message: one CloudTrail record as JSON.
    pub message: String,
}

/// One FilterLogEvents page.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// The events of this page (not sorted by time across streams).
    pub events: Vec<LogEvent>,
    /// The token of the next page, if any.
    pub next_token: Option<String>,
}

/// The CloudWatch Logs call the access poller makes.
pub trait LogsApi: Send + Sync + 'static {
    /// One FilterLogEvents page of `log_group` for log event timestamps in
    /// `[start_ms, end_ms]` (both inclusive, as AWS defines them).
    fn filter_log_events_page(
        &self,
        log_group: &str,
        start_ms: i64,
        end_ms: i64,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<LogPage, AwsError>> + Send;
}
