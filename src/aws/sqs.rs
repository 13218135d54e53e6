//! SQS adapter: implements [`QueueApi`] (ReceiveMessage, DeleteMessageBatch) on the SDK client.

use std::sync::Arc;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use super::{AwsError, AwsErrorKind, CallObserver, CallOutcome, QueueApi, QueueMessage};

const SERVICE: &str = "sqs";

/// The SQS client plus the observer that counts its calls.
#[derive(Clone)]
pub struct Sqs {
    /// The SDK client.
    client: Client,
    /// Where each call is counted.
    observer: Arc<dyn CallObserver>,
}

impl Sqs {
    /// Wraps an SDK client built from the shared configuration.
    pub fn new(sdk: &aws_config::SdkConfig, observer: Arc<dyn CallObserver>) -> Self {
        Sqs {
            client: Client::new(sdk),
            observer,
        }
    }

    fn count<T>(&self, operation: &'static str, result: &Result<T, AwsError>) {
        self.observer
            .aws_call(SERVICE, operation, CallOutcome::of(result));
    }
}

impl QueueApi for Sqs {
    async fn receive(
        &self,
        queue_url: &str,
        max_messages: i32,
        wait_seconds: i32,
    ) -> Result<Vec<QueueMessage>, AwsError> {
        const OPERATION: &str = "ReceiveMessage";
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max_messages)
            .wait_time_seconds(wait_seconds)
            .customize()
            .config_override(
                // A long poll holds the request open for `wait_seconds`: the shared 20 s attempt
                // timeout would cut every empty one short (a timeout error a poll).
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(std::time::Duration::from_secs(3))
                        .operation_attempt_timeout(long_poll_timeout(wait_seconds))
                        .operation_timeout(long_poll_timeout(wait_seconds) * 3)
                        .build(),
                ),
            )
            .send()
            .await;
        let out = out.map_err(|e| AwsError {
            service: SERVICE,
            ..super::secretsmanager::classify(OPERATION, &e)
        });
        self.count(OPERATION, &out);
        let out = out?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                // A message without a receipt handle could never be deleted: leave it to the
                // queue (it cannot happen on SQS).
                Some(QueueMessage {
                    message_id: m.message_id.unwrap_or_default(),
                    receipt_handle: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn delete_batch(
        &self,
        queue_url: &str,
        receipt_handles: &[&str],
    ) -> Result<usize, AwsError> {
        const OPERATION: &str = "DeleteMessageBatch";
        let mut entries = Vec::with_capacity(receipt_handles.len());
        for (i, handle) in receipt_handles.iter().enumerate() {
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*handle)
                .build()
                .map_err(|e| AwsError {
                    service: SERVICE,
                    operation: OPERATION,
                    kind: AwsErrorKind::Other,
                    message: e.to_string(),
                })?;
            entries.push(entry);
        }
        let out = self
            .client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let out = out.map_err(|e| AwsError {
            service: SERVICE,
            ..super::secretsmanager::classify(OPERATION, &e)
        });
        self.count(OPERATION, &out);
        Ok(out?.failed.len())
    }
}

/// The attempt timeout of a ReceiveMessage that waits up to `wait_seconds`: the wait plus room
/// for the answer.
fn long_poll_timeout(wait_seconds: i32) -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(wait_seconds).unwrap_or(0) + 10)
}
