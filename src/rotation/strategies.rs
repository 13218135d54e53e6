//! Rotation strategies (SPEC §6): how a new value is made, applied, tested and finalized.
//!
//! The core drives every strategy through the [`RotationStrategy`] trait, so a strategy that
//! talks to a backing system (the `postgres` and `redis` strategies of issue #8) only implements
//! `create_value`, `set`, `test` and `finalize`; the protocol, the journal, retries, hooks and
//! compromise handling stay in the core. The value-only strategies here never do I/O.

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::aws::SecretValue;
use crate::config::{RotationSpec, Strategy};

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
    #[error("{0} has rotation strategy \"none\": keywarden only monitors it; set rotation.strategy to rotate it")]
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
        Strategy::Random => Ok(Box::new(RandomValue { bytes: spec.bytes })),
        Strategy::DualKey => Ok(Box::new(TwoKeys {
            bytes: spec.bytes,
            keys: DUAL_KEY,
        })),
        Strategy::PrimarySecondary => Ok(Box::new(TwoKeys {
            bytes: spec.bytes,
            keys: PRIMARY_SECONDARY,
        })),
        Strategy::Lambda => Ok(Box::new(AwsLambda)),
        Strategy::None => Err(Refused::NotRotatable(secret.to_string())),
        Strategy::Postgres => Ok(Box::new(super::postgres::Postgres { bytes: spec.bytes })),
        Strategy::Redis => Ok(Box::new(super::redis_acl::RedisAcl { bytes: spec.bytes })),
    }
}

/// A password for a database user: `bytes` CSPRNG bytes, URL-safe base64 without padding
/// (letters, digits, `-` and `_`), so it fits connection URLs and config files unquoted.
pub fn random_password(bytes: usize) -> Result<SecretValue, StrategyError> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; bytes]);
    getrandom::getrandom(&mut buf)
        .map_err(|e| StrategyError(format!("the OS random number generator failed: {e}")))?;
    Ok(SecretValue::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf[..]),
    ))
}

/// `msg` with every non-empty `hide` string replaced by `[redacted]`: for server error texts that
/// may echo a statement or an argument.
pub fn scrub(msg: &str, hide: &[&str]) -> String {
    let mut out = msg.to_string();
    for h in hide.iter().filter(|h| h.len() >= 4) {
        out = out.replace(h, "[redacted]");
    }
    out
}

/// `bytes` bytes of the OS CSPRNG, base64 (standard alphabet, padded).
pub fn random_base64(bytes: usize) -> Result<SecretValue, StrategyError> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; bytes]);
    getrandom::getrandom(&mut buf)
        .map_err(|e| StrategyError(format!("the OS random number generator failed: {e}")))?;
    Ok(SecretValue::new(
        base64::engine::general_purpose::STANDARD.encode(&buf[..]),
    ))
}

/// `random`: a new random string replaces the value.
#[derive(Debug)]
pub struct RandomValue {
    /// Random bytes per value.
    pub bytes: usize,
}

impl RotationStrategy for RandomValue {
    fn name(&self) -> &'static str {
        "random"
    }

    fn create_value(&self, _old: &SecretValue) -> Result<SecretValue, StrategyError> {
        random_base64(self.bytes)
    }
}

/// A secret value as a JSON object, when it is one.
pub fn json_object(v: &SecretValue) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(v.expose()) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// A JSON object as a new secret value.
pub fn encode_object(m: Map<String, Value>) -> Result<SecretValue, StrategyError> {
    serde_json::to_string(&Value::Object(m))
        .map(SecretValue::new)
        .map_err(|e| StrategyError(format!("cannot encode the new value: {e}")))
}

/// The `port` field of a credentials object: a number or a numeric string.
pub fn json_port(m: &Map<String, Value>) -> Option<u16> {
    match m.get("port") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

/// The JSON keys of a two-key strategy: (new key, old key).
type KeyNames = (&'static str, &'static str);
const DUAL_KEY: KeyNames = ("current", "previous");
const PRIMARY_SECONDARY: KeyNames = ("primary", "secondary");

/// `dual-key` (`{"current", "previous"}`) and `primary-secondary` (`{"primary", "secondary"}`):
/// the new key goes first, the old one stays beside it until finalize.
#[derive(Debug)]
pub struct TwoKeys {
    /// Random bytes per key.
    pub bytes: usize,
    /// The JSON key names.
    keys: KeyNames,
}

impl RotationStrategy for TwoKeys {
    fn name(&self) -> &'static str {
        if self.keys == DUAL_KEY {
            "dual-key"
        } else {
            "primary-secondary"
        }
    }

    fn create_value(&self, old: &SecretValue) -> Result<SecretValue, StrategyError> {
        let (new_key, old_key) = self.keys;
        let fresh = random_base64(self.bytes)?;
        // Other fields of the JSON (a key id, an algorithm) are kept. A plain-string value (a
        // secret before its first rotation by keywarden) becomes the old key.
        let (mut m, previous) = match json_object(old) {
            Some(m) => {
                let prev = m.get(new_key).cloned();
                (m, prev)
            }
            None if old.is_empty() => (Map::new(), None),
            None => (Map::new(), Some(Value::String(old.expose().to_string()))),
        };
        m.insert(new_key.into(), Value::String(fresh.expose().to_string()));
        match previous {
            Some(p) => m.insert(old_key.into(), p),
            None => m.remove(old_key),
        };
        encode_object(m)
    }

    fn check_value(&self, new: &SecretValue) -> Result<(), StrategyError> {
        let (new_key, _) = self.keys;
        match json_object(new).as_ref().and_then(|m| m.get(new_key)) {
            Some(Value::String(s)) if !s.is_empty() => Ok(()),
            _ => Err(StrategyError(format!(
                "the new value is not a JSON object with a non-empty \"{new_key}\" string"
            ))),
        }
    }

    fn finalize_value(&self, current: &SecretValue) -> Result<Option<SecretValue>, StrategyError> {
        let (_, old_key) = self.keys;
        self.check_value(current)?;
        let Some(mut m) = json_object(current) else {
            return Ok(None);
        };
        if m.remove(old_key).is_none() {
            return Ok(None);
        }
        encode_object(m).map(Some)
    }
}

/// `lambda`: AWS-managed rotation; RotateSecret runs the secret's rotation Lambda.
#[derive(Debug)]
pub struct AwsLambda;

impl RotationStrategy for AwsLambda {
    fn name(&self) -> &'static str {
        "lambda"
    }

    fn mode(&self) -> Mode {
        Mode::AwsManaged
    }

    fn create_value(&self, _old: &SecretValue) -> Result<SecretValue, StrategyError> {
        Err(StrategyError(
            "the lambda strategy makes its values in the rotation Lambda".into(),
        ))
    }
}

/// The pieces of a value that must never appear in output: the value itself and every JSON
/// string field of 8 characters or more (keys, passwords).
pub fn redaction_fragments(v: &SecretValue) -> Vec<String> {
    let mut out = Vec::new();
    if !v.is_empty() {
        out.push(v.expose().to_string());
    }
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(v.expose()) {
        for val in m.values() {
            if let Value::String(s) = val {
                if s.len() >= 8 {
                    out.push(s.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
