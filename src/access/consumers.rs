//! `keywarden consumers`: who read a secret, from its CloudTrail records.
//!
//! [`Consumers`] aggregates successful reads (GetSecretValue, BatchGetSecretValue) of one secret
//! by principal: reads, source addresses, first and last seen, declared or not. The caller feeds
//! it parsed records; rendering is pure. The rotation core's question ("who read it within the
//! baseline and is not declared") is [`crate::access::detect::undeclared_readers`].
//!
//! This module does no I/O and never reads the clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ConsumerPatterns;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::cloudtrail::{Outcome, Record};

/// Source addresses listed per principal.
const MAX_IPS: usize = 32;

/// One reader of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumer {
    /// The principal (ARN, service, or account).
    pub principal: String,
    /// Successful reads.
    pub reads: u64,
    /// Denied read attempts.
    pub denied: u64,
    /// Source addresses (at most 32).
    pub source_ips: BTreeSet<String>,
    /// First read, RFC 3339.
    pub first_seen: String,
    /// Last read, RFC 3339.
    pub last_seen: String,
    /// Matches one of the secret's `consumers`.
    pub declared: bool,
    #[serde(skip)]
    first_ms: i64,
    #[serde(skip)]
    last_ms: i64,
}

/// Readers of one secret, by principal.
#[derive(Debug, Clone, Default)]
pub struct Consumers {
    /// Aggregates by principal.
    by_principal: BTreeMap<String, Consumer>,
    /// CloudTrail eventIDs seen (duplicate deliveries count once).
    seen: std::collections::HashSet<String>,
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Consumers {
    /// Nothing read yet.
    pub fn new() -> Consumers {
        Consumers::default()
    }

    /// Adds a record already known to concern the secret; `log_ms` is used when the record has
    /// no valid eventTime. Only reads are kept.
    pub fn add(&mut self, r: &Record<'_>, log_ms: i64, consumers: &ConsumerPatterns) {
        if !crate::cloudtrail::is_read(&r.event_name) {
            return;
        }
        let outcome = r.outcome();
        if outcome == Outcome::Error || !self.seen.insert(r.event_id.to_string()) {
            return;
        }
        let t = r.time_ms().unwrap_or(log_ms);
        let c = self
            .by_principal
            .entry(r.principal.to_string())
            .or_insert_with(|| Consumer {
                principal: r.principal.to_string(),
                reads: 0,
                denied: 0,
                source_ips: BTreeSet::new(),
                first_seen: String::new(),
                last_seen: String::new(),
                declared: consumers.is_match(r.principal.as_ref()),
                first_ms: i64::MAX,
                last_ms: i64::MIN,
            });
        if outcome == Outcome::Denied {
            c.denied += 1;
            return;
        }
        c.reads += 1;
        c.first_ms = c.first_ms.min(t);
        c.last_ms = c.last_ms.max(t);
        if let Some(ip) = &r.source_ip
            && c.source_ips.len() < MAX_IPS
        {
            c.source_ips.insert(ip.to_string());
        }
    }

    /// The readers, most reads first. Principals with only denied attempts are listed last.
    pub fn list(&self) -> Vec<Consumer> {
        let mut v: Vec<Consumer> = self
            .by_principal
            .values()
            .map(|c| {
                let mut c = c.clone();
                if c.reads > 0 {
                    c.first_seen = rfc3339(c.first_ms);
                    c.last_seen = rfc3339(c.last_ms);
                }
                c
            })
            .collect();
        v.sort_by(|a, b| b.reads.cmp(&a.reads).then(a.principal.cmp(&b.principal)));
        v
    }
}

/// Renders the readers as an aligned table.
pub fn render_table(rows: &[Consumer]) -> String {
    let header = [
        "PRINCIPAL",
        "READS",
        "DENIED",
        "SOURCE IPS",
        "FIRST SEEN",
        "LAST SEEN",
        "DECLARED",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|c| {
            [
                c.principal.clone(),
                c.reads.to_string(),
                c.denied.to_string(),
                c.source_ips.iter().cloned().collect::<Vec<_>>().join(","),
                if c.first_seen.is_empty() {
                    "-".into()
                } else {
                    c.first_seen.clone()
                },
                if c.last_seen.is_empty() {
                    "-".into()
                } else {
                    c.last_seen.clone()
                },
                if c.declared {
                    "yes".into()
                } else {
                    "NO".into()
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |row: &[&str]| {
        let parts: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        let r: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, who: &str, ip: &str, time: &str, error: Option<&str>, name: &str) -> String {
        let err = error
            .map(|e| format!(",\"errorCode\":\"{e}\""))
            .unwrap_or_default();
        format!(
            r#"{{"eventID":"{id}","eventTime":"{time}","eventSource":"secretsmanager.amazonaws.com","eventName":"{name}",
            "userIdentity":{{"type":"AssumedRole","arn":"{who}"}},"sourceIPAddress":"{ip}",
            "requestParameters":{{"secretId":"s"}}{err}}}"#
        )
    }

    #[test]
    fn aggregates_reads_by_principal() {
        let declared = ConsumerPatterns::new(&["arn:app/*"]).unwrap();
        let texts = [
            rec(
                "1",
                "arn:app/a",
                "10.0.0.1",
                "2024-05-01T10:00:00Z",
                None,
                "GetSecretValue",
            ),
            rec(
                "2",
                "arn:app/a",
                "10.0.0.2",
                "2024-05-01T09:00:00Z",
                None,
                "GetSecretValue",
            ),
            rec(
                "2",
                "arn:app/a",
                "10.0.0.2",
                "2024-05-01T09:00:00Z",
                None,
                "GetSecretValue",
            ),
            rec(
                "3",
                "arn:x",
                "1.2.3.4",
                "2024-05-02T00:00:00Z",
                None,
                "BatchGetSecretValue",
            ),
            rec(
                "4",
                "arn:x",
                "1.2.3.4",
                "2024-05-02T00:00:00Z",
                Some("AccessDenied"),
                "GetSecretValue",
            ),
            rec(
                "5",
                "arn:x",
                "1.2.3.4",
                "2024-05-02T00:00:00Z",
                None,
                "DescribeSecret",
            ),
            rec(
                "6",
                "arn:y",
                "1.2.3.5",
                "2024-05-02T00:00:00Z",
                Some("AccessDenied"),
                "GetSecretValue",
            ),
        ];
        let mut c = Consumers::new();
        for t in &texts {
            c.add(&crate::cloudtrail::parse(t).unwrap(), 0, &declared);
        }
        let rows = c.list();
        let summary: Vec<(&str, u64, u64, bool, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.principal.as_str(),
                    r.reads,
                    r.denied,
                    r.declared,
                    r.first_seen.as_str(),
                    r.last_seen.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "arn:app/a",
                    2,
                    0,
                    true,
                    "2024-05-01T09:00:00Z",
                    "2024-05-01T10:00:00Z"
                ),
                (
                    "arn:x",
                    1,
                    1,
                    false,
                    "2024-05-02T00:00:00Z",
                    "2024-05-02T00:00:00Z"
                ),
                ("arn:y", 0, 1, false, "", ""),
            ]
        );
        assert_eq!(rows[0].source_ips.len(), 2);
        let table = render_table(&rows);
        assert!(table.starts_with("PRINCIPAL"), "{table}");
        assert!(table.contains("arn:x") && table.contains("NO"), "{table}");
    }
}
