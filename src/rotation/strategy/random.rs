//! `random`: a new random string (`bytes` CSPRNG bytes, base64) replaces the value.

use crate::aws::SecretValue;

use super::value::random_base64;
use super::{RotationStrategy, StrategyError};

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
