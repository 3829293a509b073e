//! Queue port on SQS. Batch calls answer 200 even when some entries failed: every `Failed`
//! list is checked, and failed sends are retried before the call gives up.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use super::sdk_error::{classify, is_retryable_code};
use crate::error::{StoreError, StoreResult};
use crate::ports::{
    check_delay, check_send_batch, Queue, ReceivedMessage, MAX_SEND_BATCH as MAX_BATCH,
};

/// SQS long polling waits at most 20 s.
const MAX_WAIT_SECS: u64 = 20;
const SEND_ROUNDS: u32 = 5;

pub struct SqsQueue {
    sqs: Client,
    url: String,
    name: String,
}

impl SqsQueue {
    pub fn new(sqs: Client, url: &str, name: &str) -> Self {
        SqsQueue {
            sqs,
            url: url.to_owned(),
            name: name.to_owned(),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(e.to_string())
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_grouped(&self, group: Option<&str>, bodies: &[String]) -> StoreResult<()> {
        check_send_batch(bodies)?;
        let mut pending: Vec<(usize, &String)> = bodies.iter().enumerate().collect();
        for round in 1..=SEND_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            if round > 1 {
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
            }
            let entries = pending
                .iter()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body.as_str())
                        .set_message_group_id(group.map(str::to_owned))
                        .build()
                        .map_err(internal)
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify("SendMessageBatch", e))?;
            let failed = out.failed();
            if let Some(permanent) = failed
                .iter()
                .find(|f| f.sender_fault() && !is_retryable_code(f.code()))
            {
                return Err(StoreError::Invalid(format!(
                    "SendMessageBatch refused entry {}: {} {}",
                    permanent.id(),
                    permanent.code(),
                    permanent.message().unwrap_or_default()
                )));
            }
            let failed_ids: Vec<&str> = failed.iter().map(|f| f.id()).collect();
            pending.retain(|(i, _)| failed_ids.contains(&i.to_string().as_str()));
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(StoreError::unavailable(format!(
                "SendMessageBatch: {} entries still failing after {SEND_ROUNDS} rounds",
                pending.len()
            )))
        }
    }

    async fn send_delayed(&self, body: &str, delay: Duration) -> StoreResult<()> {
        check_send_batch(std::slice::from_ref(&body.to_owned()))?;
        check_delay(delay)?;
        // SQS counts whole seconds: round up, so a message is never early.
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(secs as i32)
            .send()
            .await
            .map_err(|e| classify("SendMessage", e))?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> StoreResult<Vec<ReceivedMessage>> {
        let wait_secs = wait.as_secs().min(MAX_WAIT_SECS);
        // A long poll legitimately outlasts the usual attempt timeout.
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(wait_secs + 5))
            .build();
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                ReceivedMessage {
                    message_id: m.message_id.unwrap_or_default(),
                    receipt: m.receipt_handle.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    receive_count,
                }
            })
            .collect())
    }

    async fn delete(&self, receipts: &[String]) -> StoreResult<()> {
        for batch in receipts.chunks(MAX_BATCH) {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(internal)
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify("DeleteMessageBatch", e))?;
            if let Some(f) = out.failed().first() {
                // The message comes back after its visibility timeout; its replay is harmless.
                return Err(StoreError::unavailable(format!(
                    "DeleteMessageBatch failed for {} entries, first: {} {}",
                    out.failed().len(),
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    async fn depth(&self) -> StoreResult<u64> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| classify("GetQueueAttributes", e))?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |name: &QueueAttributeName| {
            attrs
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(get(&QueueAttributeName::ApproximateNumberOfMessages)
            + get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }
}
