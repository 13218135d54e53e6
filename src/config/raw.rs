//! The serde-facing form of the file: field names are the config keys, unknown keys are
//! refused, and values that need parsing (schedule expressions, CIDRs, globs) are parsed while
//! deserializing so the error carries the value's span.

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use super::{ConfigDuration, HookStage, ServerTls, Severity, Strategy};
use crate::schedule::ScheduleExpr;

/// An AWS schedule expression, `rate(...)` or `cron(...)`.
#[derive(Debug, Clone)]
pub(super) struct ConfigSchedule(pub(super) ScheduleExpr);

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
pub(super) fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.trim().parse::<IpNet>().map_err(|_| {
        format!("expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", found {text:?}")
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) aws: RawAws,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) poll: RawPoll,
    pub(super) access: Option<Spanned<RawAccess>>,
    pub(super) reminders: Option<RawReminders>,
    pub(super) incident: Option<RawIncident>,
    #[serde(default)]
    pub(super) state: RawState,
    pub(super) ha: Option<Spanned<RawHa>>,
    pub(super) discovery: Option<RawDiscovery>,
    pub(super) verify: Option<RawVerify>,
    #[serde(default, rename = "secret")]
    pub(super) secrets: Vec<RawSecret>,
    #[serde(default, rename = "account")]
    pub(super) accounts: Vec<Spanned<RawAccount>>,
    pub(super) organization: Option<Spanned<RawOrganization>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) id: Spanned<String>,
    pub(super) role_arn: Spanned<String>,
    pub(super) external_id_env: Option<Spanned<String>>,
    pub(super) external_id_file: Option<Spanned<String>>,
    /// Accepted only to say clearly that the ExternalId is never written inline.
    pub(super) external_id: Option<Spanned<toml::Value>>,
    pub(super) regions: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrganization {
    pub(super) role_name: Spanned<String>,
    pub(super) regions: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<String>>,
    pub(super) external_id_env: Option<Spanned<String>>,
    pub(super) external_id_file: Option<Spanned<String>>,
    pub(super) external_id: Option<Spanned<toml::Value>>,
    pub(super) refresh_every: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub(super) region: Option<String>,
    pub(super) endpoint_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) admin_token_file: Option<String>,
    pub(super) admin_token_env: Option<Spanned<String>>,
    /// Accepted only to say clearly that tokens are never written inline.
    pub(super) admin_token: Option<Spanned<toml::Value>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_ip: Option<Spanned<i64>>,
    pub(super) reserved_connections: Option<Spanned<i64>>,
    pub(super) write_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) header_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) body_timeout: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoll {
    pub(super) metadata_every: Option<Spanned<ConfigDuration>>,
    pub(super) access_every: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub(super) log_group: Option<String>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) queue_url: Option<Spanned<String>>,
    pub(super) overlap: Option<ConfigDuration>,
    pub(super) baseline: Option<ConfigDuration>,
    pub(super) max_requests_per_second: Option<Spanned<f64>>,
    pub(super) spike_factor: Option<Spanned<f64>>,
    pub(super) spike_min_reads: Option<Spanned<i64>>,
    pub(super) denied_burst: Option<Spanned<i64>>,
    pub(super) max_principals_per_secret: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReminders {
    pub(super) lead: Option<Spanned<Vec<ConfigDuration>>>,
    pub(super) sns_topic_arn: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIncident {
    pub(super) sns_topic_arn: Spanned<String>,
    pub(super) report_dir: Option<String>,
    pub(super) audit_lookback: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) backend: Option<Spanned<String>>,
    pub(super) path: Option<String>,
    pub(super) table: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    pub(super) enabled: Option<bool>,
    pub(super) lease: Option<Spanned<ConfigDuration>>,
    pub(super) replica: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub(super) name_prefixes: Spanned<Vec<String>>,
    pub(super) default_rotate_every: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub(super) name: Spanned<String>,
    pub(super) id: Spanned<String>,
    pub(super) account: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) rotate_every: Option<ConfigDuration>,
    pub(super) severity: Option<Severity>,
    pub(super) impact: Option<String>,
    #[serde(default)]
    pub(super) consumers: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) allowed_sources: Vec<Spanned<String>>,
    pub(super) window: Option<ConfigSchedule>,
    pub(super) rotation: Option<RawRotation>,
    #[serde(default)]
    pub(super) hooks: Vec<RawHook>,
    #[serde(default)]
    pub(super) verify: Vec<Spanned<RawCheck>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub(super) prometheus_url: Option<Spanned<String>>,
    pub(super) prometheus_token_file: Option<String>,
    pub(super) every: Option<Spanned<ConfigDuration>>,
    pub(super) watch: Option<Spanned<ConfigDuration>>,
    pub(super) failures: Option<Spanned<i64>>,
}

/// One `verify = [...]` check: exactly one of `http`, `prometheus`, `command`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) name: Spanned<String>,
    pub(super) http: Option<Spanned<String>>,
    pub(super) expect_status: Option<Spanned<i64>>,
    pub(super) json_pointer: Option<Spanned<String>>,
    pub(super) equals: Option<Spanned<toml::Value>>,
    pub(super) headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub(super) prometheus: Option<Spanned<String>>,
    pub(super) max: Option<Spanned<f64>>,
    pub(super) max_ratio: Option<Spanned<f64>>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) timeout: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub(super) strategy: Spanned<Strategy>,
    pub(super) grace: Option<Spanned<ConfigDuration>>,
    pub(super) bytes: Option<Spanned<i64>>,
    pub(super) master_secret: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<ConfigDuration>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) dbname: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<ServerTls>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) replication_group: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) on: HookStage,
    pub(super) command: Spanned<Vec<String>>,
    pub(super) timeout: Option<Spanned<ConfigDuration>>,
}
