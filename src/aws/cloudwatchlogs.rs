//! CloudWatch Logs adapter: implements [`LogsApi`] (FilterLogEvents) on the SDK client.

use std::sync::Arc;

use aws_sdk_cloudwatchlogs::Client;

use super::{AwsError, CallObserver, CallOutcome, LogEvent, LogPage, LogsApi};

const SERVICE: &str = "logs";

/// Events per FilterLogEvents page (the AWS maximum).
const PAGE_LIMIT: i32 = 10_000;

/// A FilterLogEvents filter pattern that keeps Secrets Manager records: a quoted term is a
/// substring match in CloudWatch Logs. It only saves transfer; every record is still parsed and
/// filtered on `eventSource` by keywarden itself.
const FILTER_PATTERN: &str = "\"secretsmanager.amazonaws.com\"";

/// The CloudWatch Logs client plus the observer that counts its calls.
#[derive(Clone)]
pub struct CloudWatchLogs {
    /// The SDK client.
    client: Client,
    /// Where each call is counted.
    observer: Arc<dyn CallObserver>,
}

impl CloudWatchLogs {
    /// Wraps an SDK client built from the shared configuration.
    pub fn new(sdk: &aws_config::SdkConfig, observer: Arc<dyn CallObserver>) -> Self {
        CloudWatchLogs {
            client: Client::new(sdk),
            observer,
        }
    }
}

impl LogsApi for CloudWatchLogs {
    async fn filter_log_events_page(
        &self,
        log_group: &str,
        start_ms: i64,
        end_ms: i64,
        next_token: Option<String>,
    ) -> Result<LogPage, AwsError> {
        const OPERATION: &str = "FilterLogEvents";
        let out = self
            .client
            .filter_log_events()
            .log_group_name(log_group)
            .start_time(start_ms)
            .end_time(end_ms)
            .filter_pattern(FILTER_PATTERN)
            .limit(PAGE_LIMIT)
            .set_next_token(next_token)
            .send()
            .await;
        let out = out.map_err(|e| AwsError {
            service: SERVICE,
            ..super::secretsmanager::classify(OPERATION, &e)
        });
        self.observer
            .aws_call(SERVICE, OPERATION, CallOutcome::of(&out));
        super::report_access(self.observer.as_ref(), SERVICE, OPERATION, log_group, &out);
        let out = out?;
        let events = out
            .events()
            .iter()
            .filter_map(|e| {
                Some(LogEvent {
                    event_id: e.event_id().unwrap_or_default().to_string(),
                    timestamp_ms: e.timestamp()?,
                    message: e.message()?.to_string(),
                })
            })
            .collect();
        Ok(LogPage {
            events,
            next_token: out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }
}
