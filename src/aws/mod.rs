//! The AWS boundary. This module tree is the only place that names AWS SDK types.
//!
//! The rest of the daemon talks to AWS through the small traits below, which speak keywarden's
//! own types ([`SecretMeta`], [`VersionMeta`], [`AwsError`]). The adapters in the submodules
//! implement them on the real SDK clients and count every call in
//! `keywarden_aws_requests_total`. Tests of the logic use the traits; tests of the adapters run
//! against moto.
//!
//! Owns every AWS SDK type: no other folder names one. Must never import telemetry, the store or
//! any task; adapters report calls through [`CallObserver`].

pub mod accounts;
pub mod client;
pub mod cloudwatchlogs;
pub mod dynamodb;
pub mod elasticache;
#[cfg(feature = "test-util")]
pub mod fake;
pub mod gate;
pub mod secretsmanager;
pub mod sns;
pub mod sqs;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

/// How an AWS call ended, as `keywarden_aws_requests_total` counts it (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The call succeeded.
    Ok,
    /// AWS throttled it (after the SDK's own retries).
    Throttled,
    /// Any other failure.
    Error,
}

impl CallOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Throttled => "throttled",
            CallOutcome::Error => "error",
        }
    }

    /// The outcome of a call that returned `result`.
    pub fn of<T>(result: &Result<T, AwsError>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(e) if e.kind == AwsErrorKind::Throttled => CallOutcome::Throttled,
            Err(_) => CallOutcome::Error,
        }
    }
}

/// Hears of every AWS call an adapter makes. Telemetry implements it; the adapters know
/// nothing of metrics.
pub trait CallObserver: Send + Sync {
    /// One call of `service`'s `operation` ended with `outcome`.
    fn aws_call(&self, service: &'static str, operation: &'static str, outcome: CallOutcome);

    /// AWS refused `service`'s `operation` on `resource` (a secret id, topic ARN, log group or
    /// replication group; `*` for a listing) for lack of permission or credentials. Called
    /// after `aws_call`; `message` is AWS's own text (never a secret value).
    fn denied(
        &self,
        service: &'static str,
        operation: &'static str,
        resource: &str,
        message: &str,
    ) {
        let _ = (service, operation, resource, message);
    }

    /// AWS served `service`'s `operation` on `resource` (same form as in [`Self::denied`]): a
    /// refusal of that permission on that resource is over. A success on another resource
    /// (another secret, another topic) says nothing about this one.
    fn allowed(&self, service: &'static str, operation: &'static str, resource: &str) {
        let _ = (service, operation, resource);
    }
}

/// Reports the permission of `service`'s `operation` on `resource` to `observer`: served
/// ([`CallObserver::allowed`]) or refused ([`CallObserver::denied`]). Adapters call it after
/// `aws_call` with the same resource for a success as for a refusal.
pub(crate) fn report_access<T>(
    observer: &dyn CallObserver,
    service: &'static str,
    operation: &'static str,
    resource: &str,
    result: &Result<T, AwsError>,
) {
    if result.is_ok() {
        observer.allowed(service, operation, resource);
    } else {
        report_denied(observer, resource, result);
    }
}

/// Reports a refused call's permission to `observer` (see [`CallObserver::denied`]).
pub(crate) fn report_denied<T>(
    observer: &dyn CallObserver,
    resource: &str,
    result: &Result<T, AwsError>,
) {
    if let Err(e) = result
        && e.kind == AwsErrorKind::Auth
    {
        observer.denied(e.service, e.operation, resource, &e.message);
    }
}

/// An observer that ignores every call (tools and tests that count nothing).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn aws_call(&self, _: &'static str, _: &'static str, _: CallOutcome) {}
}

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
            | "Throttled"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "LimitExceededException" => AwsErrorKind::Throttled,
            "ResourceNotFoundException"
            | "NotFound"
            | "NotFoundException"
            | "ReplicationGroupNotFoundFault" => AwsErrorKind::NotFound,
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

/// One SQS message as ReceiveMessage returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// MessageId (stable across redeliveries).
    pub message_id: String,
    /// ReceiptHandle of this receive: what DeleteMessageBatch takes.
    pub receipt_handle: String,
    /// The body: an EventBridge event whose `detail` is a CloudTrail record.
    pub body: String,
}

/// The SQS calls of the access poller's queue source (`[access] source = "sqs"`).
pub trait QueueApi: Clone + Send + Sync + 'static {
    /// ReceiveMessage: up to `max_messages` (at most 10), long polling up to `wait_seconds`
    /// (at most 20). An empty answer means the wait ended with nothing to deliver.
    fn receive(
        &self,
        queue_url: &str,
        max_messages: i32,
        wait_seconds: i32,
    ) -> impl Future<Output = Result<Vec<QueueMessage>, AwsError>> + Send;

    /// DeleteMessageBatch of up to 10 receipt handles. Returns how many entries SQS reported
    /// as failed (they are redelivered after the visibility timeout).
    fn delete_batch(
        &self,
        queue_url: &str,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<usize, AwsError>> + Send;
}

/// A secret value held in memory. It zeroizes its buffer when dropped, prints as `[redacted]`
/// in `Debug`, and has no `Display` or `Serialize`: it cannot reach a log line, a metric, a JSON
/// answer or the store by accident. Code that truly needs the text calls [`SecretValue::expose`].
///
/// A SecretBinary value is held as the standard base64 of its bytes and marked binary, so the
/// rotation writes its new version as SecretBinary again ([`SecretValue::kept_as`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    /// SecretString, or the standard base64 of SecretBinary.
    text: zeroize::Zeroizing<String>,
    /// The value is a SecretBinary.
    binary: bool,
}

impl SecretValue {
    /// Wraps a SecretString value.
    pub fn new(value: String) -> SecretValue {
        SecretValue {
            text: zeroize::Zeroizing::new(value),
            binary: false,
        }
    }

    /// Wraps a SecretBinary value, given as the standard base64 of its bytes.
    pub fn binary_base64(value: String) -> SecretValue {
        SecretValue {
            binary: true,
            ..SecretValue::new(value)
        }
    }

    /// The text, for the few places that must send it (AWS, a backing system). For a
    /// SecretBinary value, the standard base64 of its bytes.
    pub fn expose(&self) -> &str {
        self.text.as_str()
    }

    /// Whether the value is a SecretBinary.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// This value, of the same kind (SecretString or SecretBinary) as `like`: a new version is
    /// written the way the secret keeps its current one.
    pub fn kept_as(mut self, like: &SecretValue) -> SecretValue {
        self.binary = like.binary;
        self
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The AWSCURRENT label.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The AWSPENDING label.
pub const AWSPENDING: &str = "AWSPENDING";
/// The AWSPREVIOUS label.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// What DescribeSecret says about a secret's versions and AWS-side rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretStages {
    /// Full ARN.
    pub arn: String,
    /// Secrets Manager name.
    pub name: String,
    /// VersionIdsToStages: (version id, stages), sorted by version id; only labelled versions.
    pub versions: Vec<(String, Vec<String>)>,
    /// RotationEnabled.
    pub rotation_enabled: bool,
    /// RotationLambdaARN.
    pub rotation_lambda: Option<String>,
    /// LastRotatedDate.
    pub last_rotated: Option<DateTime<Utc>>,
}

impl SecretStages {
    /// The version carrying `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, s)| s.iter().any(|x| x == stage))
            .map(|(id, _)| id.as_str())
    }

    /// The stages of `version_id`; `None` when the version is unknown or carries no label.
    pub fn stages_of(&self, version_id: &str) -> Option<&[String]> {
        self.versions
            .iter()
            .find(|(id, _)| id == version_id)
            .map(|(_, s)| s.as_slice())
    }

    /// Whether `version_id` carries `stage`.
    pub fn has(&self, version_id: &str, stage: &str) -> bool {
        self.stages_of(version_id)
            .is_some_and(|s| s.iter().any(|x| x == stage))
    }
}

/// Which version a read asks for. Reads always name one explicitly: never the SDK default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector<'a> {
    /// `VersionStage`.
    Stage(&'a str),
    /// `VersionId` together with the `VersionStage` it must carry.
    IdAndStage(&'a str, &'a str),
}

/// A value read from Secrets Manager with the version it came from.
#[derive(Debug, Clone)]
pub struct VersionedValue {
    /// VersionId.
    pub version_id: String,
    /// The value (SecretString, or SecretBinary base64-encoded).
    pub value: SecretValue,
}

/// The Secrets Manager calls the rotation core makes.
pub trait SecretsWriteApi: Send + Sync + 'static {
    /// DescribeSecret: versions and their stages, AWS rotation state.
    fn describe(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<SecretStages, AwsError>> + Send;

    /// GetSecretValue naming the version explicitly.
    fn get_value(
        &self,
        secret_id: &str,
        which: VersionSelector<'_>,
    ) -> impl Future<Output = Result<VersionedValue, AwsError>> + Send;

    /// PutSecretValue with `VersionStages=["AWSPENDING"]` and the fixed `token` (32 to 64
    /// characters) as ClientRequestToken, which becomes the version id. Returns the version id.
    fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretValue,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;

    /// UpdateSecretVersionStage: puts `stage` on `move_to` (taking it from `remove_from`), or
    /// only removes it from `remove_from` when `move_to` is `None`.
    fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// RotateSecret with the fixed `token`: AWS runs the secret's rotation Lambda.
    fn rotate_secret(
        &self,
        secret_id: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Extra identifiers a FIFO SNS topic requires on every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoIds {
    /// MessageGroupId: messages of one group are delivered in order (at most 128 characters).
    pub group_id: String,
    /// MessageDeduplicationId: SNS drops a second message with the same id within its
    /// five-minute deduplication interval (at most 128 characters).
    pub deduplication_id: String,
}

/// One message to publish to an SNS topic. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The topic ARN; a name ending in `.fifo` is a FIFO topic.
    pub topic_arn: String,
    /// Subject (used as the e-mail subject): ASCII, fewer than 100 characters.
    pub subject: String,
    /// The message body.
    pub body: String,
    /// MessageAttributes, all of DataType `String`, as (name, value) pairs.
    pub attributes: Vec<(String, String)>,
    /// Group and deduplication ids, for FIFO topics only.
    pub fifo: Option<FifoIds>,
}

/// Whether a topic ARN names a FIFO topic.
pub fn is_fifo_topic(topic_arn: &str) -> bool {
    topic_arn.ends_with(".fifo")
}

/// Publishing notifications (reminders, incident notices).
pub trait NotifyApi: Send + Sync + 'static {
    /// Publishes one message and returns the MessageId SNS assigned once it accepted it.
    fn publish(
        &self,
        notification: &Notification,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// A boxed future, so [`ElastiCacheApi`] can be a trait object (the strategies are).
pub type AwsFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How ModifyReplicationGroup changes the AUTH token (`AuthTokenUpdateStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthTokenUpdate {
    /// `ROTATE`: the new token is added; the current one stays valid beside it.
    Rotate,
    /// `SET`: the new token becomes the only valid one.
    Set,
}

impl AuthTokenUpdate {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthTokenUpdate::Rotate => "ROTATE",
            AuthTokenUpdate::Set => "SET",
        }
    }
}

/// What DescribeReplicationGroups says about one replication group. Never holds a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationGroupState {
    /// ReplicationGroupId.
    pub id: String,
    /// Status: `available`, `modifying`, `creating`, ...
    pub status: String,
    /// The primary endpoint (NodeGroups[0].PrimaryEndpoint), else the configuration endpoint
    /// (cluster mode enabled), as (address, port).
    pub primary_endpoint: Option<(String, u16)>,
    /// TransitEncryptionEnabled: clients must use TLS.
    pub transit_encryption: bool,
    /// AuthTokenEnabled.
    pub auth_token_enabled: bool,
    /// PendingModifiedValues.AuthTokenStatus (`SETTING`, `ROTATING`), while a change is pending.
    pub pending_auth_token: Option<String>,
}

/// The ElastiCache calls of the `elasticache` rotation strategy. Object-safe: a strategy holds
/// it as `&dyn ElastiCacheApi`.
pub trait ElastiCacheApi: Send + Sync {
    /// DescribeReplicationGroups for one group.
    fn describe_replication_group<'a>(
        &'a self,
        group_id: &'a str,
    ) -> AwsFut<'a, Result<ReplicationGroupState, AwsError>>;

    /// ModifyReplicationGroup with `AuthToken`, `AuthTokenUpdateStrategy` and
    /// `ApplyImmediately=true`. The token never appears in the error.
    fn modify_auth_token<'a>(
        &'a self,
        group_id: &'a str,
        token: &'a SecretValue,
        update: AuthTokenUpdate,
    ) -> AwsFut<'a, Result<(), AwsError>>;
}

impl std::fmt::Debug for dyn ElastiCacheApi + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ElastiCacheApi")
    }
}
