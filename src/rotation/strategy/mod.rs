//! Rotation strategies (SPEC §6): how a new value is made, applied, tested and finalized.
//!
//! The core drives every strategy through the [`RotationStrategy`] trait, so a strategy that
//! talks to a backing system (`postgres`, `redis`, `elasticache`) only implements `create_value`, `set`, `test`
//! and `finalize`; the protocol, the journal, retries, hooks and compromise handling stay in the
//! core. One file per strategy; `value` holds what they share about values (random material,
//! JSON objects, redaction); `server` where and how `postgres` and `redis` connect (the admin's
//! server from the configuration or the master secret, never the rotated secret; TLS);
//! `pg_auth` the guard that refuses cleartext and MD5 password requests. The value-only
//! strategies never do I/O.
//!
//! Must never import the rotation core, the journal or the store: a strategy sees a
//! [`StepContext`] and values, nothing else.

pub mod elasticache;
pub mod lambda;
pub mod pg_auth;
pub mod postgres;
pub mod random;
pub mod redis;
pub mod server;
pub mod two_keys;
pub mod value;

use std::future::Future;
use std::pin::Pin;

use crate::aws::{ElastiCacheApi, SecretValue};
use crate::config::{RotationSpec, Strategy};

pub use value::redaction_fragments;

/// A boxed future, so strategies can be trait objects.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A strategy failure. The message never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StrategyError(pub String);

/// Why a secret cannot be rotated by keywarden.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `strategy = "none"`: monitored only.
    #[error(
        "{0} has rotation strategy \"none\": keywarden only monitors it; set rotation.strategy to rotate it"
    )]
    NotRotatable(String),
}

/// Who runs the four steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// keywarden runs create, set, test and finish itself.
    Protocol,
    /// AWS runs them through the secret's rotation Lambda (RotateSecret); keywarden watches.
    AwsManaged,
}

/// What a step knows about the rotation it serves. Never the value itself.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// The `secret` label.
    pub secret: &'a str,
    /// The Secrets Manager id.
    pub secret_id: &'a str,
    /// The new version id (the rotation's token).
    pub version_id: &'a str,
    /// The version that was AWSCURRENT before.
    pub previous_version_id: Option<&'a str>,
    /// A compromise rotation: finalize must also cut off the old value's live users.
    pub compromise: bool,
    /// Admin credentials from `rotation.master_secret` (postgres, redis), read by stage.
    pub master: Option<&'a SecretValue>,
    /// The ElastiCache client (the `elasticache` strategy); `None` where the process has none.
    pub elasticache: Option<&'a dyn ElastiCacheApi>,
}

/// One rotation strategy.
pub trait RotationStrategy: Send + Sync {
    /// The configured name.
    fn name(&self) -> &'static str;

    /// Who runs the steps.
    fn mode(&self) -> Mode {
        Mode::Protocol
    }

    /// Step 1: the new value, from the current one. Must not do I/O: a crash before the
    /// PutSecretValue simply makes another value next time.
    fn create_value(&self, old: &SecretValue) -> Result<SecretValue, StrategyError>;

    /// Step 2: apply the new value to the backing system. Idempotent.
    fn set<'a>(
        &'a self,
        _ctx: StepContext<'a>,
        _new: &'a SecretValue,
        _old: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async { Ok(()) })
    }

    /// Step 3: prove the new value works. The default checks its shape.
    fn test<'a>(
        &'a self,
        _ctx: StepContext<'a>,
        new: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        let r = self.check_value(new);
        Box::pin(async move { r })
    }

    /// The shape a new value must have (non-empty; the JSON keys of the strategy).
    fn check_value(&self, new: &SecretValue) -> Result<(), StrategyError> {
        if new.is_empty() {
            Err(StrategyError("the new value is empty".into()))
        } else {
            Ok(())
        }
    }

    /// Finalize, value side: the value to store without the previous key, or `None` when the
    /// value does not change (random, lambda, postgres, redis) or is already final.
    fn finalize_value(&self, _current: &SecretValue) -> Result<Option<SecretValue>, StrategyError> {
        Ok(None)
    }

    /// Finalize, backing side: disable the old user, remove the old password; with
    /// `ctx.compromise` also end the sessions that still use it. Idempotent.
    fn finalize<'a>(
        &'a self,
        _ctx: StepContext<'a>,
        _current: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The strategy of a secret, or why it cannot be rotated.
pub fn for_spec(secret: &str, spec: &RotationSpec) -> Result<Box<dyn RotationStrategy>, Refused> {
    match spec.strategy {
        Strategy::Random => Ok(Box::new(random::RandomValue { bytes: spec.bytes })),
        Strategy::DualKey => Ok(Box::new(two_keys::TwoKeys {
            bytes: spec.bytes,
            keys: two_keys::DUAL_KEY,
        })),
        Strategy::PrimarySecondary => Ok(Box::new(two_keys::TwoKeys {
            bytes: spec.bytes,
            keys: two_keys::PRIMARY_SECONDARY,
        })),
        Strategy::Lambda => Ok(Box::new(lambda::AwsLambda)),
        Strategy::None => Err(Refused::NotRotatable(secret.to_string())),
        Strategy::Postgres => Ok(Box::new(postgres::Postgres {
            bytes: spec.bytes,
            server: spec.server.clone(),
        })),
        Strategy::Redis => Ok(Box::new(redis::RedisAcl {
            bytes: spec.bytes,
            server: spec.server.clone(),
        })),
        Strategy::Elasticache => Ok(Box::new(elasticache::ElastiCacheToken {
            replication_group: spec.replication_group.clone().unwrap_or_default(),
            timeout: spec.timeout,
            ca_file: spec.server.ca_file.clone(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::random::RandomValue;
    use super::two_keys::{DUAL_KEY, KeyNames, PRIMARY_SECONDARY, TwoKeys};
    use super::value::*;
    use super::*;
    use base64::Engine as _;
    use serde_json::Value;

    fn v(s: &str) -> SecretValue {
        SecretValue::new(s.to_string())
    }

    fn json(s: &SecretValue) -> Value {
        serde_json::from_str(s.expose()).unwrap()
    }

    #[test]
    fn random_values_are_base64_of_the_configured_size_and_differ() {
        let s = RandomValue { bytes: 48 };
        let a = s.create_value(&v("old")).unwrap();
        let b = s.create_value(&v("old")).unwrap();
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.expose())
            .unwrap();
        assert_eq!(raw.len(), 48);
        assert!(s.finalize_value(&a).unwrap().is_none());
        assert_eq!(format!("{a:?}"), "[redacted]");
    }

    #[test]
    fn two_key_strategies_table() {
        // (keys, old value, expected old key value in the new JSON)
        let cases: &[(KeyNames, &str, Option<&str>)] = &[
            (DUAL_KEY, "plain-old-value", Some("plain-old-value")),
            (
                DUAL_KEY,
                r#"{"current":"k1","previous":"k0","kid":"7"}"#,
                Some("k1"),
            ),
            (DUAL_KEY, "", None),
            (PRIMARY_SECONDARY, r#"{"primary":"p1"}"#, Some("p1")),
            (PRIMARY_SECONDARY, "[1,2]", Some("[1,2]")),
        ];
        for (keys, old, expected_prev) in cases {
            let s = TwoKeys {
                bytes: 32,
                keys: *keys,
            };
            let new = s.create_value(&v(old)).unwrap();
            let j = json(&new);
            assert_eq!(j[keys.0].as_str().unwrap().len(), 44, "{old}");
            assert_eq!(
                j.get(keys.1).and_then(Value::as_str),
                *expected_prev,
                "{old}"
            );
            s.check_value(&new).unwrap();
            let Some(fin) = s.finalize_value(&new).unwrap() else {
                // Nothing to drop: the value had no old key.
                assert!(expected_prev.is_none(), "{old}");
                continue;
            };
            let f = json(&fin);
            assert_eq!(f[keys.0], j[keys.0]);
            assert!(f.get(keys.1).is_none());
            if old.contains("kid") {
                assert_eq!(f["kid"], "7");
            }
            // Finalize is idempotent: a finalized value needs no second write.
            assert!(s.finalize_value(&fin).unwrap().is_none());
        }
        let s = TwoKeys {
            bytes: 32,
            keys: DUAL_KEY,
        };
        assert!(s.check_value(&v("not json")).is_err());
        assert!(s.check_value(&v(r#"{"current":""}"#)).is_err());
    }

    #[test]
    fn refusals_and_fragments() {
        let spec = RotationSpec::default();
        assert!(matches!(
            for_spec("X", &spec),
            Err(Refused::NotRotatable(_))
        ));
        let frags = redaction_fragments(&v(r#"{"current":"abcdefghij","n":"short"}"#));
        assert!(frags.contains(&"abcdefghij".to_string()));
        assert!(!frags.contains(&"short".to_string()));
    }
}
