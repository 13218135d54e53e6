//! SNS adapter: implements [`NotifyApi`] on the SDK client.

use std::sync::Arc;

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use super::{AwsError, AwsErrorKind, CallObserver, CallOutcome, Notification, NotifyApi};

const SERVICE: &str = "sns";

/// The SNS client plus the observer that counts its calls.
#[derive(Clone)]
pub struct Sns {
    /// The SDK client.
    client: Client,
    /// Where each call is counted.
    observer: Arc<dyn CallObserver>,
}

impl Sns {
    /// Wraps an SDK client built from the shared configuration.
    pub fn new(sdk: &aws_config::SdkConfig, observer: Arc<dyn CallObserver>) -> Self {
        Sns {
            client: Client::new(sdk),
            observer,
        }
    }

    fn count(&self, operation: &'static str, result: &Result<String, AwsError>) {
        self.observer
            .aws_call(SERVICE, operation, CallOutcome::of(result));
    }
}

/// An error raised before the request was sent (an invalid attribute).
fn invalid(operation: &'static str, message: String) -> AwsError {
    AwsError {
        service: SERVICE,
        operation,
        kind: AwsErrorKind::Other,
        message,
    }
}

impl NotifyApi for Sns {
    async fn publish(&self, n: &Notification) -> Result<String, AwsError> {
        const OPERATION: &str = "Publish";
        super::gate::check(SERVICE, OPERATION)?;
        let mut request = self
            .client
            .publish()
            .topic_arn(&n.topic_arn)
            .subject(&n.subject)
            .message(&n.body);
        for (name, value) in &n.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| invalid(OPERATION, format!("message attribute {name}: {e}")))?;
            request = request.message_attributes(name, value);
        }
        if let Some(fifo) = &n.fifo {
            request = request
                .message_group_id(&fifo.group_id)
                .message_deduplication_id(&fifo.deduplication_id);
        }
        let result = match request.send().await {
            Ok(out) => Ok(out.message_id().unwrap_or_default().to_string()),
            Err(e) => {
                // The SDK's error types are shared across services; only the service name differs.
                let mut err = super::secretsmanager::classify(OPERATION, &e);
                err.service = SERVICE;
                Err(err)
            }
        };
        self.count(OPERATION, &result);
        super::report_access(
            self.observer.as_ref(),
            SERVICE,
            OPERATION,
            &n.topic_arn,
            &result,
        );
        result
    }
}
