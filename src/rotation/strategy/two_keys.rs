//! `dual-key` (JWT signing keys) and `primary-secondary` (encryption keys): the new key goes
//! first, the old one stays beside it until finalize.

use serde_json::{Map, Value};

use crate::aws::SecretValue;

use super::value::{encode_object, json_object, random_base64};
use super::{RotationStrategy, StrategyError};

/// The JSON keys of a two-key strategy: (new key, old key).
pub type KeyNames = (&'static str, &'static str);
pub const DUAL_KEY: KeyNames = ("current", "previous");
pub const PRIMARY_SECONDARY: KeyNames = ("primary", "secondary");

/// `dual-key` (`{"current", "previous"}`) and `primary-secondary` (`{"primary", "secondary"}`):
/// the new key goes first, the old one stays beside it until finalize.
#[derive(Debug)]
pub struct TwoKeys {
    /// Random bytes per key.
    pub bytes: usize,
    /// The JSON key names.
    pub keys: KeyNames,
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
