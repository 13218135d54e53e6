//! Builds the shared AWS SDK configuration once, honouring `[aws] region`, `[aws] endpoint_url`
//! and the standard AWS environment (`AWS_ENDPOINT_URL`, credentials chain).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::AwsConfig;

/// Loads the SDK configuration. Timeouts are bounded so that a dead endpoint fails a poll in
/// seconds instead of hanging it; the standard retry mode retries throttling and transient
/// errors three times with jittered backoff.
pub async fn load(cfg: &AwsConfig) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}
