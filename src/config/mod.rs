//! Configuration: the TOML file of SPEC §1, parsed into `RawConfig` with serde and validated into
//! the typed [`Config`] the rest of the daemon uses.
//!
//! Every error names the file, line, column and key and says what was expected
//! ([`ConfigError`]). Values that need parsing (durations, schedule expressions, CIDRs, globs) are
//! parsed while deserializing, so the TOML parser attaches the span of the offending value. Checks
//! that span several values (duplicate names, strategy-specific keys) use [`toml::Spanned`].
//!
//! This module reads the file it is given and nothing else; it never looks at the environment
//! (token sources are recorded, not resolved).
//! Must never import anything but `domain` vocabulary, `schedule` and `access::glob`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use crate::domain::{Severity, Strategy};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::access::glob::PrincipalGlob;
use crate::schedule::{self, ScheduleExpr};

mod raw;
#[cfg(test)]
mod tests;
mod validate;

use raw::RawConfig;
use validate::{Locator, validate};

/// A configuration problem, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file was read but holds something invalid.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        /// The configuration file.
        file: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// Dotted path of the key, such as `secret[2].rotation.strategy`.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookStage {
    /// During step 3; must pass for the rotation to finish.
    Test,
    /// After AWSCURRENT moved to the new version.
    Finish,
    /// After the previous value was dropped.
    Finalize,
    /// After a rollback (manual or automatic) moved AWSCURRENT back; its failure is reported,
    /// never undoes the rollback.
    Rollback,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub source: PathBuf,
    /// How to reach AWS.
    pub aws: AwsConfig,
    /// The HTTP listener.
    pub server: ServerConfig,
    /// Poll periods.
    pub poll: PollConfig,
    /// CloudTrail access events; `None` disables the access poller.
    pub access: Option<AccessConfig>,
    /// Pre-rotation reminders; `None` disables them.
    pub reminders: Option<RemindersConfig>,
    /// Compromise response; `None` disables `POST /compromised`.
    pub incident: Option<IncidentConfig>,
    /// The embedded store.
    pub state: StateConfig,
    /// `[ha]` with `enabled = true`: leader election over the DynamoDB store.
    pub ha: Option<HaConfig>,
    /// Secrets watched without being listed; `None` disables discovery.
    pub discovery: Option<DiscoveryConfig>,
    /// How rotation checks run (SPEC §12); defaults when `[verify]` is absent.
    pub verify: VerifyConfig,
    /// The inventory, in file order.
    pub secrets: Vec<SecretSpec>,
    /// `[[account]]`: member accounts read through an assumed role (SPEC §13).
    pub accounts: Vec<AccountSpec>,
    /// `[organization]`: every active account of the organization.
    pub organization: Option<OrganizationConfig>,
}

impl Config {
    /// Whether keywarden reads other accounts than its own (`[[account]]` or `[organization]`).
    pub fn multi_account(&self) -> bool {
        !self.accounts.is_empty() || self.organization.is_some()
    }
}

/// Where the ExternalId of an assumed role comes from. The value is read at start, never
/// written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalIdSource {
    /// `external_id_env`: an environment variable's name.
    Env(String),
    /// `external_id_file`: a file holding it (trailing newline ignored).
    File(PathBuf),
}

/// One `[[account]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// The 12-digit account id.
    pub id: String,
    /// The role keywarden assumes in it.
    pub role_arn: String,
    /// The role's ExternalId, if its trust policy asks for one.
    pub external_id: Option<ExternalIdSource>,
    /// The regions read in it (at least one).
    pub regions: Vec<String>,
}

/// `[organization]`: accounts from organizations:ListAccounts (suspended ones skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationConfig {
    /// The role name assumed in every member account (`arn:aws:iam::<id>:role/<role_name>`).
    pub role_name: String,
    /// The regions read in every account.
    pub regions: Vec<String>,
    /// Account ids never read.
    pub exclude: Vec<String>,
    /// The role's ExternalId, if its trust policy asks for one.
    pub external_id: Option<ExternalIdSource>,
    /// How often the account list is read again.
    pub refresh_every: Duration,
}

/// `[verify]` (SPEC §12): how the `verify = [...]` checks of every secret run.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// Prometheus base URL for `prometheus` checks (`/api/v1/query` is appended).
    pub prometheus_url: Option<String>,
    /// A file holding a bearer token for Prometheus, read at each query.
    pub prometheus_token_file: Option<PathBuf>,
    /// Time between two rounds of checks during the watch (default 30 s).
    pub every: Duration,
    /// How long after finish the checks keep running (default 15 min).
    pub watch: Duration,
    /// Consecutive failures of one check that roll the rotation back (default 2).
    pub failures: u32,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            prometheus_url: None,
            prometheus_token_file: None,
            every: Duration::from_secs(30),
            watch: Duration::from_secs(15 * 60),
            failures: 2,
        }
    }
}

/// One `verify = [...]` check of a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// Its name (unique within the secret): the `check` label.
    pub name: String,
    /// What it checks.
    pub kind: CheckKind,
    /// How long one run may take before it counts as failed (default 5 s).
    pub timeout: Duration,
}

/// The three kinds of check.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `http = "URL"`: a GET whose status must be `expect_status` and, with `json_pointer`, whose
    /// JSON body holds `equals` at that RFC 6901 pointer.
    Http {
        /// `http://` URL.
        url: String,
        /// Expected status (default 200).
        expect_status: u16,
        /// RFC 6901 pointer into the JSON body.
        json_pointer: Option<String>,
        /// The value expected at the pointer.
        equals: Option<serde_json::Value>,
        /// (header name, environment variable NAME holding its value): never a literal.
        headers: Vec<(String, String)>,
    },
    /// `prometheus = "PROMQL"`: an instant query whose value must stay within `limit`.
    Prometheus {
        /// The PromQL expression.
        query: String,
        /// `max` or `max_ratio`.
        limit: PromLimit,
    },
    /// `command = [argv...]`: exit 0 passes (the hook runner: no shell, no value in its
    /// environment).
    Command {
        /// argv.
        argv: Vec<String>,
    },
}

/// The bound of a `prometheus` check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromLimit {
    /// `max`: the value must be at most this.
    Max(f64),
    /// `max_ratio`: the value must be at most this times the same query's value measured just
    /// before the rotation started.
    MaxRatio(f64),
}

/// `[aws]`.
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// Region; when absent the standard AWS chain decides.
    pub region: Option<String>,
    /// Endpoint override for local emulators; `AWS_ENDPOINT_URL` also works.
    pub endpoint_url: Option<String>,
}

/// Where the admin bearer token comes from. The token itself is never in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Read from this file at start.
    File(PathBuf),
    /// Read from this environment variable at start.
    Env(String),
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Admin token source; `None` turns every action route off (403).
    pub admin_token: Option<TokenSource>,
    /// Normal connections served at once; beyond, only requests with the admin token are
    /// served, in the reserve.
    pub max_connections: usize,
    /// Normal connections of one peer IP at once; beyond, the reserve.
    pub max_connections_per_ip: usize,
    /// Connections kept for requests that carry the admin token.
    pub reserved_connections: usize,
    /// Time a write to a client may make no progress before the connection is cut.
    pub write_timeout: Duration,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Time a client has to send its request body.
    pub body_timeout: Duration,
}

/// `[poll]`.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Secret metadata poll period.
    pub metadata_every: Duration,
    /// Access event poll period.
    pub access_every: Duration,
}

/// `[access]`.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// CloudWatch Logs group receiving the CloudTrail trail: what `cloudwatch_logs` counts
    /// from, and where the baseline, `keywarden consumers` and the incident audit read history
    /// (with `sqs`, optional).
    pub log_group: Option<String>,
    /// Where live events come from.
    pub source: AccessSource,
    /// Re-read window for late CloudTrail delivery.
    pub overlap: Duration,
    /// Principals seen within this window are known.
    pub baseline: Duration,
    /// FilterLogEvents requests per second at most.
    pub max_requests_per_second: f64,
    /// A 5-minute read count above `spike_factor` times the learned rate is a spike...
    pub spike_factor: f64,
    /// ...provided it is also at least this many reads.
    pub spike_min_reads: u64,
    /// Denied calls on one secret within 5 minutes that make a burst.
    pub denied_burst: u64,
    /// Distinct principals remembered per secret before the oldest is evicted.
    pub max_principals_per_secret: usize,
}

/// `[access] source`: where the access poller counts live events from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessSource {
    /// FilterLogEvents over `log_group` every `poll.access_every` (the default).
    CloudWatchLogs,
    /// EventBridge events (their `detail` a CloudTrail record) pushed to an SQS queue.
    Sqs {
        /// The queue URL.
        queue_url: String,
    },
}

/// `[reminders]`.
#[derive(Debug, Clone)]
pub struct RemindersConfig {
    /// One reminder per lead time per due date.
    pub lead: Vec<Duration>,
    /// SNS topic receiving reminders.
    pub sns_topic_arn: String,
}

/// `[incident]`.
#[derive(Debug, Clone)]
pub struct IncidentConfig {
    /// SNS topic of the security team.
    pub sns_topic_arn: String,
    /// Where incident reports are written.
    pub report_dir: PathBuf,
    /// How far back the access audit looks.
    pub audit_lookback: Duration,
}

/// `[state]`.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Where durable state lives.
    pub backend: StateBackend,
    /// The embedded store file (the SQLite backend's, and `migrate-store`'s SQLite side).
    pub path: PathBuf,
    /// The DynamoDB table (the DynamoDB backend's, and `migrate-store`'s DynamoDB side).
    pub table: Option<String>,
}

/// `[ha]` (SPEC §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// How long a follower sees the lease record unchanged before it takes over.
    pub lease: Duration,
    /// This replica's name; `None`: the host name.
    pub replica: Option<String>,
}

/// `[state] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// The embedded SQLite file at `path` (the default).
    Sqlite,
    /// The DynamoDB table `table` (created by `keywarden init-store`).
    DynamoDb,
}

impl StateBackend {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackend::Sqlite => "sqlite",
            StateBackend::DynamoDb => "dynamodb",
        }
    }

    /// Parses a configuration word (`sqlite`, `dynamodb`).
    pub fn parse(word: &str) -> Option<StateBackend> {
        match word {
            "sqlite" => Some(StateBackend::Sqlite),
            "dynamodb" => Some(StateBackend::DynamoDb),
            _ => None,
        }
    }
}

/// `[discovery]`.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Secrets whose name starts with one of these are watched too.
    pub name_prefixes: Vec<String>,
    /// Policy for discovered secrets without RotationRules.
    pub default_rotate_every: Option<Duration>,
}

/// One inventory secret.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    /// `account`: the member account it lives in (`None`: the daemon's own account).
    pub account: Option<String>,
    /// `region`: its region (`None`: the account's first region, or the daemon's own).
    pub region: Option<String>,
    /// Inventory name: the `secret` label.
    pub name: String,
    /// Secrets Manager name or ARN.
    pub id: String,
    /// Rotation policy; when absent taken from the secret's RotationRules.
    pub rotate_every: Option<Duration>,
    /// Alert severity.
    pub severity: Severity,
    /// What a compromise means, in words.
    pub impact: String,
    /// Declared consumers as written (glob patterns over principal ARNs).
    pub consumers: Vec<String>,
    /// The compiled consumer patterns.
    pub consumer_set: ConsumerPatterns,
    /// Source networks expected for reads; empty means any.
    pub allowed_sources: Vec<IpNet>,
    /// Low-traffic window in which scheduled rotations start.
    pub window: Option<ScheduleExpr>,
    /// How keywarden rotates it.
    pub rotation: RotationSpec,
    /// Commands run at rotation steps.
    pub hooks: Vec<HookSpec>,
    /// Checks run before a rotation starts and during its watch (SPEC §12).
    pub verify: Vec<CheckSpec>,
}

impl SecretSpec {
    /// Whether a principal ARN matches one of the declared consumers.
    pub fn is_declared_consumer(&self, principal: &str) -> bool {
        self.consumer_set.is_match(principal)
    }
}

/// `rotation = { ... }` of a secret.
#[derive(Debug, Clone)]
pub struct RotationSpec {
    /// The strategy.
    pub strategy: Strategy,
    /// Time between finish and finalize for scheduled and manual rotations.
    pub grace: Duration,
    /// `grace` was not written: it is the strategy's default (`Strategy::default_grace`).
    pub grace_is_default: bool,
    /// Random bytes in a generated value.
    pub bytes: usize,
    /// Secret holding admin credentials (postgres, redis).
    pub master_secret: Option<String>,
    /// How long a lambda rotation may take before it is reported failed.
    pub timeout: Duration,
    /// Where and how the `postgres` and `redis` strategies reach their server (`elasticache`:
    /// `ca_file` only; the endpoint and TLS come from DescribeReplicationGroups).
    pub server: ServerConnection,
    /// `replication_group` (`elasticache` only): the ElastiCache replication group whose AUTH
    /// token the secret holds.
    pub replication_group: Option<String>,
}

/// `rotation = { host, port, dbname, tls, ca_file }` of a `postgres` or `redis` secret: the
/// server keywarden logs in to as the admin (and as the new user, to test it). Each of host,
/// port and dbname may instead come from the master secret; never from the rotated secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConnection {
    /// `host`: the server's DNS name or IP (the name TLS verifies).
    pub host: Option<String>,
    /// `port`: default 5432 (postgres), 6379 (redis).
    pub port: Option<u16>,
    /// `dbname` (postgres only): the database the admin logs in to.
    pub dbname: Option<String>,
    /// `tls`: `verify-full` (default) or `disable`.
    pub tls: ServerTls,
    /// `ca_file`: PEM CA certificates to verify the server with; default the system trust store.
    pub ca_file: Option<PathBuf>,
}

/// `rotation.tls` of a `postgres` or `redis` secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTls {
    /// TLS with the certificate chain and the host name verified (libpq `sslmode=verify-full`,
    /// and for PostgreSQL `channel_binding=require`; `rediss://` for Redis).
    #[default]
    VerifyFull,
    /// Plaintext, asked for explicitly: the admin password crosses the network unencrypted.
    Disable,
}

impl Default for RotationSpec {
    fn default() -> Self {
        RotationSpec {
            strategy: Strategy::None,
            grace: Duration::ZERO,
            grace_is_default: true,
            bytes: 32,
            master_secret: None,
            timeout: Duration::from_secs(15 * 60),
            server: ServerConnection::default(),
            replication_group: None,
        }
    }
}

/// One hook.
#[derive(Debug, Clone)]
pub struct HookSpec {
    /// When it runs.
    pub on: HookStage,
    /// argv; no shell.
    pub command: Vec<String>,
    /// Killed after this long, which fails the step.
    pub timeout: Duration,
}

/// A duration written as `"90d"`, `"48h"`, `"15m"` or `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        schedule::parse_duration(&text).map(ConfigDuration).map_err(|e| {
            de::Error::custom(format!(
                "expected a duration such as \"90d\", \"48h\", \"15m\" or \"30s\", found {text:?} ({e})"
            ))
        })
    }
}

/// Declared consumers: globs over principal ARNs (`*` any run of characters including `/`, `?`
/// one character, `[...]` a class; see [`PrincipalGlob`]). A pattern costs about 100 bytes, so a
/// fleet of 10,000 secrets pays about a megabyte for its consumers.
#[derive(Debug, Clone, Default)]
pub struct ConsumerPatterns(Vec<PrincipalGlob>);

impl ConsumerPatterns {
    /// No declared consumer: nothing matches.
    pub fn empty() -> ConsumerPatterns {
        ConsumerPatterns(Vec::new())
    }

    /// Compiles patterns; the error says which one is wrong and why.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<ConsumerPatterns, String> {
        patterns
            .iter()
            .map(|p| parse_glob(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(ConsumerPatterns)
    }

    /// Whether `principal` matches one of the patterns.
    pub fn is_match(&self, principal: &str) -> bool {
        self.0.iter().any(|p| p.matches(principal))
    }

    /// Whether there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compiles a glob over principal ARNs.
fn parse_glob(text: &str) -> Result<PrincipalGlob, String> {
    const EXAMPLE: &str = "\"arn:aws:sts::123456789012:assumed-role/app-*/*\"";
    if text.trim().is_empty() {
        return Err(format!(
            "expected a glob over principal ARNs such as {EXAMPLE}, found an empty string"
        ));
    }
    PrincipalGlob::new(text).map_err(|e| {
        format!(
            "expected a glob over principal ARNs such as {EXAMPLE}, found {text:?}: {} at character {}",
            e.msg, e.pos
        )
    })
}

/// The default config path when neither `--config` nor `KEYWARDEN_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/keywarden/keywarden.toml";

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `path` is used in messages only.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let located = Locator { text, file: &file };
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        located.error(span, "(document)", e.message().trim().to_string())
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let span = inner.span().unwrap_or(0..0);
        let message = inner.message().trim().to_string();
        located.error(span, &key_for(&path, &message), message)
    })?;
    validate(raw, &located, path)
}

/// Builds the dotted key of an error: serde reports a missing field from its parent table.
fn key_for(path: &str, message: &str) -> String {
    // `toml::Spanned` shows up in serde paths as a private field; it is not a key.
    let cleaned = path.replace(".$__serde_spanned_private_value", "");
    let path = if cleaned == "." { "" } else { cleaned.as_str() };
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        if path.is_empty() {
            return field.to_string();
        }
        return format!("{path}.{field}");
    }
    if path.is_empty() {
        "(document)".to_string()
    } else {
        path.to_string()
    }
}
