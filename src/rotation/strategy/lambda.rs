//! `lambda`: AWS-managed rotation through the secret's rotation Lambda.

use crate::aws::SecretValue;

use super::{Mode, RotationStrategy, StrategyError};

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
