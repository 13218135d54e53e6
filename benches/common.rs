//! Shared fixtures for the benchmarks: a 10,000-secret inventory (see [`n`]) and its ListSecrets
//! pages.

#![allow(dead_code)] // Shared by several benchmark binaries; each uses part of it.

use std::path::Path;

use chrono::{DateTime, Utc};
use keywarden::aws::SecretMeta;
use keywarden::config::{self, Config};

/// Secrets in the benchmark fleet: 10,000, or `KEYWARDEN_BENCH_SECRETS` (scripts/test runs the
/// benchmarks once each, as tests of their assertions, on a fleet of 1,000 in the debug build).
pub fn n() -> usize {
    match std::env::var("KEYWARDEN_BENCH_SECRETS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("KEYWARDEN_BENCH_SECRETS={v:?} is not a count: {e}")),
        Err(_) => 10_000,
    }
}

/// A fixed "now".
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
}

/// An inventory of `n` secrets, each with a policy, severity, impact and consumers.
pub fn config(n: usize) -> Config {
    let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[secret]]\nname = \"SECRET_{i:05}\"\nid = \"fleet/service-{i:05}\"\nrotate_every = \"90d\"\n\
             severity = \"high\"\nimpact = \"Service {i} credentials\"\n\
             consumers = [\"arn:aws:sts::123456789012:assumed-role/service-{i}-*/*\"]\n"
        ));
    }
    config::parse(&text, Path::new("bench.toml")).expect("bench config is valid")
}

/// What ListSecrets returns for the fleet: every secret with two versions.
pub fn listed(n: usize) -> Vec<SecretMeta> {
    listed_in("123456789012", "us-east-1", n)
}

/// What ListSecrets returns in one account and region: `n` secrets `fleet/service-NNNNN` with
/// two versions each (10% with AWS rotation on).
pub fn listed_in(account: &str, region: &str, n: usize) -> Vec<SecretMeta> {
    (0..n)
        .map(|i| SecretMeta {
            arn: format!(
                "arn:aws:secretsmanager:{region}:{account}:secret:fleet/service-{i:05}-AbCdEf"
            ),
            name: format!("fleet/service-{i:05}"),
            created: DateTime::from_timestamp(1_700_000_000 + i as i64, 0),
            last_rotated: None,
            last_accessed: DateTime::from_timestamp(1_799_900_000, 0),
            deleted: None,
            rotation_enabled: i % 10 == 0,
            automatically_after_days: (i % 10 == 0).then_some(30),
            schedule_expression: None,
            next_rotation: None,
            versions: Some(vec![
                (format!("v-{i}-b"), vec!["AWSCURRENT".to_string()]),
                (format!("v-{i}-a"), vec!["AWSPREVIOUS".to_string()]),
            ]),
        })
        .collect()
}
