//! EventBus port on SNS: every terminal event is published to the job-events topic with the
//! attributes `eventType`, `jobId`, `brandId`, `offerId`, so AWS-native consumers can
//! subscribe with filter policies. The webhook queue is one such subscriber (raw message
//! delivery); bulklink's own deliverer reads it.

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;

use super::sdk_error::classify;
use crate::domain::JobEvent;
use crate::error::{StoreError, StoreResult};
use crate::ports::EventBus;

pub struct SnsEvents {
    sns: Client,
    topic_arn: String,
}

impl SnsEvents {
    pub fn new(sns: Client, topic_arn: &str) -> Self {
        SnsEvents {
            sns,
            topic_arn: topic_arn.to_owned(),
        }
    }
}

fn attribute(value: String) -> StoreResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| StoreError::internal(e.to_string()))
}

#[async_trait]
impl EventBus for SnsEvents {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()> {
        let message = serde_json::to_string(event)
            .map_err(|e| StoreError::internal(format!("event encoding: {e}")))?;
        let mut publish = self.sns.publish();
        if let Some(offer) = event.offer_id {
            publish = publish.message_attributes("offerId", attribute(offer.to_string())?);
        }
        publish
            .topic_arn(&self.topic_arn)
            .subject(event.event_type.as_str())
            .message(message)
            .message_attributes(
                "eventType",
                attribute(event.event_type.as_str().to_owned())?,
            )
            .message_attributes("jobId", attribute(event.job_id.to_string())?)
            .message_attributes("brandId", attribute(event.brand_id.to_string())?)
            .send()
            .await
            .map_err(|e| classify("Publish", e))?;
        Ok(())
    }
}
