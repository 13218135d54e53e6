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

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use crate::domain::{Severity, Strategy};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::principal_glob::PrincipalGlob;
use crate::schedule::{self, ScheduleExpr};

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
    /// Secrets watched without being listed; `None` disables discovery.
    pub discovery: Option<DiscoveryConfig>,
    /// The inventory, in file order.
    pub secrets: Vec<SecretSpec>,
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
    /// Concurrent connections accepted at most; more wait in the kernel backlog.
    pub max_connections: usize,
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
    /// CloudWatch Logs group receiving the CloudTrail trail.
    pub log_group: String,
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
    /// The embedded store file.
    pub path: PathBuf,
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
    /// Random bytes in a generated value.
    pub bytes: usize,
    /// Secret holding admin credentials (postgres, redis).
    pub master_secret: Option<String>,
    /// How long a lambda rotation may take before it is reported failed.
    pub timeout: Duration,
}

impl Default for RotationSpec {
    fn default() -> Self {
        RotationSpec {
            strategy: Strategy::None,
            grace: Duration::ZERO,
            bytes: 32,
            master_secret: None,
            timeout: Duration::from_secs(15 * 60),
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

/// An AWS schedule expression, `rate(...)` or `cron(...)`.
#[derive(Debug, Clone)]
struct ConfigSchedule(ScheduleExpr);

impl<'de> Deserialize<'de> for ConfigSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ScheduleExpr::parse(&text).map(ConfigSchedule).map_err(|e| {
            de::Error::custom(format!(
                "expected an AWS schedule expression such as \"cron(0 3 ? * TUE *)\" or \"rate(7 days)\", found {text:?}: {e}"
            ))
        })
    }
}

/// Parses a CIDR block such as `10.0.0.0/8`.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.trim().parse::<IpNet>().map_err(|_| {
        format!("expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", found {text:?}")
    })
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

// ---------------------------------------------------------------------------------------------
// The raw, serde-facing form. Field names are the config keys.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    aws: RawAws,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    poll: RawPoll,
    access: Option<RawAccess>,
    reminders: Option<RawReminders>,
    incident: Option<RawIncident>,
    #[serde(default)]
    state: RawState,
    discovery: Option<RawDiscovery>,
    #[serde(default, rename = "secret")]
    secrets: Vec<RawSecret>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    admin_token_file: Option<String>,
    admin_token_env: Option<Spanned<String>>,
    /// Accepted only to say clearly that tokens are never written inline.
    admin_token: Option<Spanned<toml::Value>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout: Option<ConfigDuration>,
    body_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    metadata_every: Option<Spanned<ConfigDuration>>,
    access_every: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    log_group: String,
    overlap: Option<ConfigDuration>,
    baseline: Option<ConfigDuration>,
    max_requests_per_second: Option<Spanned<f64>>,
    spike_factor: Option<Spanned<f64>>,
    spike_min_reads: Option<Spanned<i64>>,
    denied_burst: Option<Spanned<i64>>,
    max_principals_per_secret: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReminders {
    lead: Option<Spanned<Vec<ConfigDuration>>>,
    sns_topic_arn: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncident {
    sns_topic_arn: Spanned<String>,
    report_dir: Option<String>,
    audit_lookback: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    name_prefixes: Spanned<Vec<String>>,
    default_rotate_every: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: Spanned<String>,
    id: Spanned<String>,
    rotate_every: Option<ConfigDuration>,
    severity: Option<Severity>,
    impact: Option<String>,
    #[serde(default)]
    consumers: Vec<Spanned<String>>,
    #[serde(default)]
    allowed_sources: Vec<Spanned<String>>,
    window: Option<ConfigSchedule>,
    rotation: Option<RawRotation>,
    #[serde(default)]
    hooks: Vec<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    strategy: Spanned<Strategy>,
    grace: Option<ConfigDuration>,
    bytes: Option<Spanned<i64>>,
    master_secret: Option<Spanned<String>>,
    timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    on: HookStage,
    command: Spanned<Vec<String>>,
    timeout: Option<ConfigDuration>,
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

/// Turns byte spans into `file:line:column` errors.
struct Locator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: std::ops::Range<usize>, key: &str, message: String) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(spanned.span(), key, message.into())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn positive(
    loc: &Locator<'_>,
    value: &Option<Spanned<i64>>,
    key: &str,
    default: u64,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() > 0 => Ok(*v.get_ref() as u64),
        Some(v) => Err(loc.at(
            v,
            key,
            format!("expected a positive integer, found {}", v.get_ref()),
        )),
    }
}

fn positive_f64(
    loc: &Locator<'_>,
    value: &Option<Spanned<f64>>,
    key: &str,
    default: f64,
) -> Result<f64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => Ok(*v.get_ref()),
        Some(v) => Err(loc.at(
            v,
            key,
            format!("expected a positive number, found {}", v.get_ref()),
        )),
    }
}

fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validate(raw: RawConfig, loc: &Locator<'_>, path: &Path) -> Result<Config, ConfigError> {
    let endpoint_url = match raw.aws.endpoint_url {
        Some(url) => {
            let text = url.get_ref().trim();
            if !(text.starts_with("http://") || text.starts_with("https://")) {
                return Err(loc.at(
                    &url,
                    "aws.endpoint_url",
                    format!("expected an http:// or https:// URL, found {text:?}"),
                ));
            }
            Some(text.to_string())
        }
        None => None,
    };
    let aws = AwsConfig {
        region: raw.aws.region,
        endpoint_url,
    };

    let server = validate_server(raw.server, loc)?;

    let metadata_every = raw
        .poll
        .metadata_every
        .map(|d| at_least_one_second(loc, d, "poll.metadata_every"))
        .transpose()?
        .unwrap_or(Duration::from_secs(60));
    let access_every = raw
        .poll
        .access_every
        .map(|d| at_least_one_second(loc, d, "poll.access_every"))
        .transpose()?
        .unwrap_or(Duration::from_secs(60));
    let poll = PollConfig {
        metadata_every,
        access_every,
    };

    let access = match raw.access {
        Some(a) => Some(AccessConfig {
            log_group: a.log_group,
            overlap: a.overlap.map_or(Duration::from_secs(15 * 60), |d| d.0),
            baseline: a.baseline.map_or(Duration::from_secs(14 * 86400), |d| d.0),
            max_requests_per_second: positive_f64(
                loc,
                &a.max_requests_per_second,
                "access.max_requests_per_second",
                1.0,
            )?,
            spike_factor: positive_f64(loc, &a.spike_factor, "access.spike_factor", 5.0)?,
            spike_min_reads: positive(loc, &a.spike_min_reads, "access.spike_min_reads", 20)?,
            denied_burst: positive(loc, &a.denied_burst, "access.denied_burst", 5)?,
            max_principals_per_secret: positive(
                loc,
                &a.max_principals_per_secret,
                "access.max_principals_per_secret",
                1000,
            )? as usize,
        }),
        None => None,
    };

    let reminders = match raw.reminders {
        Some(r) => {
            check_sns_arn(loc, &r.sns_topic_arn, "reminders.sns_topic_arn")?;
            let lead = match r.lead {
                Some(leads) => {
                    if leads.get_ref().is_empty() {
                        return Err(loc.at(
                            &leads,
                            "reminders.lead",
                            "expected at least one lead time such as [\"14d\"]",
                        ));
                    }
                    let mut set: Vec<Duration> = leads.get_ref().iter().map(|d| d.0).collect();
                    set.sort();
                    set.dedup();
                    set
                }
                None => vec![Duration::from_secs(14 * 86400)],
            };
            Some(RemindersConfig {
                lead,
                sns_topic_arn: r.sns_topic_arn.into_inner(),
            })
        }
        None => None,
    };

    let incident = match raw.incident {
        Some(i) => {
            check_sns_arn(loc, &i.sns_topic_arn, "incident.sns_topic_arn")?;
            Some(IncidentConfig {
                sns_topic_arn: i.sns_topic_arn.into_inner(),
                report_dir: PathBuf::from(
                    i.report_dir
                        .unwrap_or_else(|| "/var/lib/keywarden/incidents".into()),
                ),
                audit_lookback: i
                    .audit_lookback
                    .map_or(Duration::from_secs(30 * 86400), |d| d.0),
            })
        }
        None => None,
    };

    let state = StateConfig {
        path: PathBuf::from(
            raw.state
                .path
                .unwrap_or_else(|| "/var/lib/keywarden/state.db".into()),
        ),
    };

    let discovery = match raw.discovery {
        Some(d) => {
            if d.name_prefixes.get_ref().iter().any(|p| p.is_empty()) {
                return Err(loc.at(
                    &d.name_prefixes,
                    "discovery.name_prefixes",
                    "expected non-empty name prefixes such as \"event-service/\" (an empty prefix would watch every secret of the account)",
                ));
            }
            Some(DiscoveryConfig {
                name_prefixes: d.name_prefixes.into_inner(),
                default_rotate_every: d.default_rotate_every.map(|d| d.0),
            })
        }
        None => None,
    };

    let mut secrets = Vec::with_capacity(raw.secrets.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for (index, s) in raw.secrets.into_iter().enumerate() {
        let key = |field: &str| format!("secret[{index}].{field}");
        let name = s.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(loc.at(&s.name, &key("name"), "expected a non-empty name"));
        }
        if let Some(first) = names.insert(name.clone(), index) {
            return Err(loc.at(
                &s.name,
                &key("name"),
                format!("duplicate secret name {name:?}: secret[{first}] already uses it; names must be unique"),
            ));
        }
        let id = s.id.get_ref().trim().to_string();
        if id.is_empty() {
            return Err(loc.at(
                &s.id,
                &key("id"),
                "expected the Secrets Manager name or ARN of the secret",
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(loc.at(
                &s.id,
                &key("id"),
                format!(
                    "duplicate secret id {id:?}: another inventory entry watches the same secret"
                ),
            ));
        }
        let mut patterns = Vec::with_capacity(s.consumers.len());
        let mut consumers = Vec::with_capacity(s.consumers.len());
        for (j, pattern) in s.consumers.iter().enumerate() {
            let glob = parse_glob(pattern.get_ref())
                .map_err(|m| loc.at(pattern, &key(&format!("consumers[{j}]")), m))?;
            patterns.push(glob);
            consumers.push(pattern.get_ref().clone());
        }
        let consumer_set = ConsumerPatterns(patterns);
        let mut allowed_sources = Vec::with_capacity(s.allowed_sources.len());
        for (j, cidr) in s.allowed_sources.iter().enumerate() {
            allowed_sources.push(
                parse_cidr(cidr.get_ref())
                    .map_err(|m| loc.at(cidr, &key(&format!("allowed_sources[{j}]")), m))?,
            );
        }
        let rotation = match s.rotation {
            Some(r) => validate_rotation(r, loc, &key("rotation"))?,
            None => RotationSpec::default(),
        };
        let mut hooks = Vec::with_capacity(s.hooks.len());
        for (h, hook) in s.hooks.into_iter().enumerate() {
            if hook.command.get_ref().is_empty() || hook.command.get_ref()[0].trim().is_empty() {
                return Err(loc.at(
                    &hook.command,
                    &key(&format!("hooks[{h}].command")),
                    "expected a non-empty argv array such as [\"kubectl\", \"rollout\", \"restart\", \"deployment/app\"]",
                ));
            }
            hooks.push(HookSpec {
                on: hook.on,
                command: hook.command.into_inner(),
                timeout: hook.timeout.map_or(Duration::from_secs(5 * 60), |d| d.0),
            });
        }
        secrets.push(SecretSpec {
            name,
            id,
            rotate_every: s.rotate_every.map(|d| d.0),
            severity: s.severity.unwrap_or(Severity::Warning),
            impact: s.impact.unwrap_or_default(),
            consumers,
            consumer_set,
            allowed_sources,
            window: s.window.map(|w| w.0),
            rotation,
            hooks,
        });
    }

    Ok(Config {
        source: path.to_path_buf(),
        aws,
        server,
        poll,
        access,
        reminders,
        incident,
        state,
        discovery,
        secrets,
    })
}

fn at_least_one_second(
    loc: &Locator<'_>,
    d: Spanned<ConfigDuration>,
    key: &str,
) -> Result<Duration, ConfigError> {
    if d.get_ref().0 < Duration::from_secs(1) {
        return Err(loc.at(&d, key, "expected a period of at least \"1s\""));
    }
    Ok(d.get_ref().0)
}

fn check_sns_arn(loc: &Locator<'_>, arn: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    let text = arn.get_ref();
    if !(text.starts_with("arn:") && text.split(':').nth(2) == Some("sns")) {
        return Err(loc.at(
            arn,
            key,
            format!("expected an SNS topic ARN such as \"arn:aws:sns:us-east-1:123456789012:topic\", found {text:?}"),
        ));
    }
    Ok(())
}

fn validate_server(s: RawServer, loc: &Locator<'_>) -> Result<ServerConfig, ConfigError> {
    if let Some(inline) = &s.admin_token {
        return Err(loc.at(
            inline,
            "server.admin_token",
            "tokens are never written in the configuration: set admin_token_file (a file holding the token) or admin_token_env (the name of an environment variable holding it)",
        ));
    }
    let listen = match s.listen {
        Some(l) => l.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
            loc.at(
                &l,
                "server.listen",
                format!(
                    "expected an address and port such as \"127.0.0.1:9717\", found {:?}",
                    l.get_ref()
                ),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 9717)),
    };
    let admin_token = match (s.admin_token_file, s.admin_token_env) {
        (Some(_), Some(env)) => {
            return Err(loc.at(
                &env,
                "server.admin_token_env",
                "expected only one of admin_token_file and admin_token_env",
            ))
        }
        (Some(file), None) => Some(TokenSource::File(PathBuf::from(file))),
        (None, Some(env)) => {
            if !is_env_var_name(env.get_ref()) {
                return Err(loc.at(
                    &env,
                    "server.admin_token_env",
                    "expected the name of an environment variable such as \"KEYWARDEN_ADMIN_TOKEN\" (never the token itself)",
                ));
            }
            Some(TokenSource::Env(env.into_inner()))
        }
        (None, None) => None,
    };
    let max_connections = positive(loc, &s.max_connections, "server.max_connections", 256)?;
    Ok(ServerConfig {
        listen,
        admin_token,
        max_connections: max_connections as usize,
        header_timeout: s.header_timeout.map_or(Duration::from_secs(10), |d| d.0),
        body_timeout: s.body_timeout.map_or(Duration::from_secs(10), |d| d.0),
    })
}

fn validate_rotation(
    r: RawRotation,
    loc: &Locator<'_>,
    key: &str,
) -> Result<RotationSpec, ConfigError> {
    let strategy = *r.strategy.get_ref();
    let bytes = match &r.bytes {
        Some(b) if !strategy.generates_bytes() => {
            return Err(loc.at(
                b,
                &format!("{key}.bytes"),
                format!(
                "`bytes` applies to the random, dual-key and primary-secondary strategies, not {}",
                strategy.as_str()
            ),
            ))
        }
        Some(b) if !(16..=4096).contains(b.get_ref()) => {
            return Err(loc.at(
                b,
                &format!("{key}.bytes"),
                format!(
                    "expected between 16 and 4096 random bytes, found {}",
                    b.get_ref()
                ),
            ))
        }
        Some(b) => *b.get_ref() as usize,
        None => 32,
    };
    let needs_master = matches!(strategy, Strategy::Postgres | Strategy::Redis);
    match (&r.master_secret, needs_master) {
        (None, true) => {
            return Err(loc.at(
                &r.strategy,
                &format!("{key}.master_secret"),
                format!(
                    "the {} strategy needs master_secret: the Secrets Manager id of the admin credentials",
                    strategy.as_str()
                ),
            ))
        }
        (Some(m), false) => {
            return Err(loc.at(
                m,
                &format!("{key}.master_secret"),
                format!(
                    "master_secret applies to the postgres and redis strategies, not {}",
                    strategy.as_str()
                ),
            ))
        }
        _ => {}
    }
    Ok(RotationSpec {
        strategy,
        grace: r.grace.map_or(Duration::ZERO, |d| d.0),
        bytes,
        master_secret: r.master_secret.map(Spanned::into_inner),
        timeout: r.timeout.map_or(Duration::from_secs(15 * 60), |d| d.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(toml: &str, expected_key: &str, expected_fragment: &str, line: usize) {
        let err = parse(toml, Path::new("test.toml")).expect_err("config should be rejected");
        match err {
            ConfigError::Invalid {
                line: l,
                key,
                message,
                ..
            } => {
                assert_eq!(key, expected_key, "key of {message}");
                assert!(
                    message.contains(expected_fragment),
                    "message {message:?} lacks {expected_fragment:?}"
                );
                assert_eq!(l, line, "line of {message}");
            }
            other => panic!("unexpected error {other}"),
        }
    }

    const BASE: &str = "[[secret]]\nname = \"A\"\nid = \"svc/a\"\n";

    #[test]
    fn minimal_config_is_valid() {
        let c = parse(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(c.poll.metadata_every, Duration::from_secs(60));
        assert_eq!(c.server.listen.port(), 9717);
        assert_eq!(c.secrets[0].rotation.strategy, Strategy::None);
    }

    #[test]
    fn errors_are_located() {
        check_err(
            "[server]\nlisten = \"127.0.0.1:1\"\nfoo = 1\n",
            "server.foo",
            "unknown field",
            3,
        );
        check_err(
            &format!("{BASE}rotate_every = \"ninety days\"\n"),
            "secret[0].rotate_every",
            "expected a duration",
            4,
        );
        check_err(
            &format!("{BASE}allowed_sources = [\"10.0.0.0/33\"]\n"),
            "secret[0].allowed_sources[0]",
            "CIDR",
            4,
        );
        check_err(
            &format!("{BASE}[[secret]]\nname = \"A\"\nid = \"svc/b\"\n"),
            "secret[1].name",
            "duplicate secret name",
            5,
        );
        check_err(
            "[[secret]]\nname = \"A\"\n",
            "secret[0].id",
            "missing field",
            1,
        );
        check_err(
            "[server]\nadmin_token = \"hunter2\"\n",
            "server.admin_token",
            "never written",
            2,
        );
        check_err(
            &format!("{BASE}rotation = {{ strategy = \"magic\" }}\n"),
            "secret[0].rotation.strategy",
            "unknown variant",
            4,
        );
        check_err(
            &format!("{BASE}consumers = [\"arn:[a\"]\n"),
            "secret[0].consumers[0]",
            "glob",
            4,
        );
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é=\nx", 4), (2, 1));
        assert_eq!(line_column("", 10), (1, 1));
    }
}
