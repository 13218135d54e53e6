//! What the strategies share about values: random material (OS CSPRNG), JSON credential
//! objects, and the fragments of a value that must be redacted from output. No I/O.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::aws::SecretValue;

use super::StrategyError;

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

/// The pieces of a value that must never appear in output: the value itself and every JSON
/// string field of 8 characters or more (keys, passwords).
pub fn redaction_fragments(v: &SecretValue) -> Vec<String> {
    let mut out = Vec::new();
    if !v.is_empty() {
        out.push(v.expose().to_string());
    }
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(v.expose()) {
        for val in m.values() {
            if let Value::String(s) = val
                && s.len() >= 8
            {
                out.push(s.clone());
            }
        }
    }
    out
}
