//! What the SQS-triggered Lambda functions share: reading an SQS event's records as queue
//! messages, the partial batch response, and the invocation's deadline.

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use tokio::time::Instant;

use crate::ports::ReceivedMessage;

/// An SQS record without a message id cannot be reported alone: the whole batch must fail.
#[derive(Debug, thiserror::Error)]
#[error("SQS record {index} has no messageId; failing the batch so every record is retried")]
pub struct RecordWithoutId {
    pub index: usize,
}

/// The event's records as queue messages. A record without a body stays in: it fails alone
/// as a malformed message.
pub fn received_messages(event: SqsEvent) -> Result<Vec<ReceivedMessage>, RecordWithoutId> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let message_id = record
                .message_id
                .filter(|id| !id.is_empty())
                .ok_or(RecordWithoutId { index })?;
            Ok(ReceivedMessage {
                message_id,
                receipt: record.receipt_handle.unwrap_or_default(),
                body: record.body.unwrap_or_default(),
                receive_count: record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
        })
        .collect()
}

/// A partial batch response naming `failed` message ids (and no others).
pub fn batch_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// The invocation's deadline (milliseconds since the epoch, from the Lambda context) as an
/// `Instant` of this process.
pub fn deadline_instant(deadline_ms: u64) -> Instant {
    // The deadline is the Lambda service's reading of the machine's time.
    let now_ms = crate::clock::Clock::system().now_ms().max(0) as u64;
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Ends a function's init on an invalid setting: one JSON log line naming it, the reason
/// posted to the Runtime API's init-error endpoint, then exit.
pub async fn fail_init(e: &crate::config::SettingsError) -> ! {
    tracing::error!(
        setting = e.name,
        value = %e.value,
        why = e.why,
        "invalid setting; the function cannot start"
    );
    if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
        let body = serde_json::json!({
            "errorMessage": e.to_string(),
            "errorType": "InvalidSetting",
            "stackTrace": [],
        });
        let posted = reqwest::Client::new()
            .post(format!("http://{api}/2018-06-01/runtime/init/error"))
            .header(
                "Lambda-Runtime-Function-Error-Type",
                "Runtime.InvalidSetting",
            )
            .json(&body)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Err(err) = posted {
            tracing::error!(error = %err, "could not report the init error to the Runtime API");
        }
    }
    std::process::exit(1)
}

/// How a consumer's handling of one queue message failed.
pub enum Failure<'a> {
    /// The body can never decode: not JSON, or not this queue's message.
    Undecodable(&'a dyn std::fmt::Display),
    /// Anything else (the store, a timeout): the next delivery may succeed.
    Passing(&'a dyn std::fmt::Display),
}

/// The one policy for a message whose handling failed, for every queue consumer (fanout,
/// worker, webhooks) on Lambda and in `serve`: the message stays on its queue — reported in
/// `batchItemFailures` on Lambda, not deleted locally — so the queue delivers it again, and
/// after `maxReceiveCount` deliveries the queue's redrive policy moves it to its dead-letter
/// queue, where the DLQ alarm fires. A message that can never decode goes the same way and
/// is logged at error level: it is never dropped (what was sent stays for whoever looks into
/// it) and never acted on. The caller reports or keeps the message; this logs why.
pub fn leave_for_redelivery(consumer: &str, message: &ReceivedMessage, failure: Failure<'_>) {
    match failure {
        Failure::Undecodable(e) => tracing::error!(
            consumer,
            message_id = %message.message_id,
            receive_count = message.receive_count,
            error = %e,
            "undecodable message: left for the dead-letter queue"
        ),
        Failure::Passing(e) => tracing::warn!(
            consumer,
            message_id = %message.message_id,
            receive_count = message.receive_count,
            error = %e,
            "message failed; it will be delivered again"
        ),
    }
}
