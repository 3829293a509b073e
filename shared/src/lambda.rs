//! What the SQS-triggered Lambda functions share: reading an SQS event's records as queue
//! messages, the partial batch response, and the invocation's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
