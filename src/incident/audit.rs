//! The incident's access audit: every principal that read the secret within
//! `incident.audit_lookback`, from the CloudTrail records in the `[access]` log group, with what
//! the access poller flagged about the secret in that time.
//!
//! The records are read with the access poller's FilterLogEvents scan and parsed by
//! [`crate::cloudtrail`]; readers are aggregated by [`crate::access::consumers::Consumers`] (the same
//! report as `keywarden consumers`).

use serde::{Deserialize, Serialize};

use crate::access::consumers::Consumers;
use crate::access::poller::{RateLimiter, scan};
use crate::aws::{AwsError, LogsApi};
use crate::cloudtrail::{self, SecretIndex};
use crate::config::{AccessConfig, SecretSpec};
use crate::domain::view::SharedView;

/// One reader of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReader {
    /// Principal ARN (or service, or account).
    pub principal: String,
    /// Successful reads.
    pub reads: u64,
    /// Denied read attempts.
    pub denied: u64,
    /// Source addresses (at most 32).
    pub source_ips: Vec<String>,
    /// First read, RFC 3339 (empty with only denied attempts).
    pub first_seen: String,
    /// Last read, RFC 3339.
    pub last_seen: String,
    /// Matches one of the secret's declared `consumers`.
    pub declared: bool,
    /// Anomaly kinds the access poller raised for this principal on this secret.
    pub flags: Vec<String>,
}

/// One finding of the access poller on the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFlag {
    /// Anomaly kind.
    pub kind: String,
    /// Principal of the event.
    pub principal: String,
    /// Its source address.
    pub source_ip: Option<String>,
    /// eventName.
    pub event_name: String,
    /// CloudTrail eventID.
    pub event_id: String,
    /// eventTime, RFC 3339.
    pub time: String,
    /// The numbers behind it.
    pub detail: String,
}

/// The audit of one incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// The log group read.
    pub log_group: String,
    /// Start of the window, RFC 3339.
    pub from: String,
    /// End of the window, RFC 3339.
    pub until: String,
    /// Log events read.
    pub events_read: u64,
    /// Records skipped as malformed.
    pub skipped_records: u64,
    /// Readers, most reads first.
    pub readers: Vec<AuditReader>,
    /// What the access poller flagged on the secret within the window.
    pub flagged: Vec<AuditFlag>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The access poller's findings on `secret` since `start_ms` (newest first).
pub fn flagged(view: &SharedView, secret: &str, start_ms: i64) -> Vec<AuditFlag> {
    let view = view.read();
    view.access_log
        .recent
        .iter()
        .filter(|a| a.secret == secret && a.time_ms >= start_ms)
        .map(|a| AuditFlag {
            kind: a.kind.as_str().to_string(),
            principal: a.principal.clone(),
            source_ip: a.source_ip.clone(),
            event_name: a.event_name.clone(),
            event_id: a.event_id.clone(),
            time: rfc3339(a.time_ms),
            detail: a.detail.clone(),
        })
        .collect()
}

/// Reads `[start_ms, end_ms]` of the log group and builds the audit of `spec`.
pub async fn run<L: LogsApi>(
    logs: &L,
    access: &AccessConfig,
    spec: &SecretSpec,
    view: &SharedView,
    start_ms: i64,
    end_ms: i64,
    flagged: Vec<AuditFlag>,
) -> Result<Audit, AwsError> {
    // The caller runs the audit only when a log group is configured.
    let log_group = access.log_group.as_deref().unwrap_or_default();
    let mut index = SecretIndex::new();
    let arn = view
        .read()
        .secrets
        .get(&spec.name)
        .and_then(|s| s.arn.clone());
    index.add(&spec.name, &spec.id, arn.as_deref());
    let mut limiter = RateLimiter::new(access.max_requests_per_second);
    let mut found = Consumers::new();
    let (mut events, mut skipped) = (0u64, 0u64);
    scan(logs, &mut limiter, log_group, start_ms, end_ms, |page| {
        events += page.len() as u64;
        for ev in &page {
            match cloudtrail::parse(&ev.message) {
                Ok(r) => {
                    if r.event_source == cloudtrail::SECRETS_MANAGER
                        && r.secret_ids().any(|i| index.resolve_index(i).is_some())
                    {
                        found.add(&r, ev.timestamp_ms, &spec.consumer_set);
                    }
                }
                Err(_) => skipped += 1,
            }
        }
    })
    .await?;
    let readers = found
        .list()
        .into_iter()
        .map(|c| {
            let mut flags: Vec<String> = flagged
                .iter()
                .filter(|f| f.principal == c.principal)
                .map(|f| f.kind.clone())
                .collect();
            flags.sort();
            flags.dedup();
            AuditReader {
                principal: c.principal,
                reads: c.reads,
                denied: c.denied,
                source_ips: c.source_ips.into_iter().collect(),
                first_seen: c.first_seen,
                last_seen: c.last_seen,
                declared: c.declared,
                flags,
            }
        })
        .collect();
    Ok(Audit {
        log_group: log_group.to_string(),
        from: rfc3339(start_ms),
        until: rfc3339(end_ms),
        events_read: events,
        skipped_records: skipped,
        readers,
        flagged,
    })
}
