//! The benchmarks' in-memory ListSecrets: one account and region's prebuilt listing, served in
//! pages of 100, each version created 10 days before the benchmarks' fixed "now" (shared by
//! `poll_cycle.rs` and `org_scale.rs`).

use chrono::DateTime;
use keywarden::aws::{AwsError, SecretMeta, SecretPage, SecretsMetadataApi, VersionMeta};

/// One target's prebuilt ListSecrets listing.
pub struct Pages(pub Vec<SecretMeta>);

impl SecretsMetadataApi for Pages {
    async fn list_secrets_page(&self, next_token: Option<String>) -> Result<SecretPage, AwsError> {
        let start: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let end = (start + 100).min(self.0.len());
        Ok(SecretPage {
            secrets: self.0[start..end].to_vec(),
            next_token: (end < self.0.len()).then(|| end.to_string()),
        })
    }

    async fn list_secret_versions(&self, secret_id: &str) -> Result<Vec<VersionMeta>, AwsError> {
        let meta = self.0.iter().find(|m| m.arn == secret_id);
        Ok(meta
            .and_then(|m| m.versions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, stages)| VersionMeta {
                id,
                stages,
                created: DateTime::from_timestamp(1_800_000_000 - 10 * 86_400, 0),
            })
            .collect())
    }
}
