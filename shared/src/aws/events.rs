//! EventBus port on SNS: events are published with the message attributes webhooks filter
//! on (`eventType`, `jobId`, `brandId`, `offerId`); a webhook is an HTTP/S subscription with
//! a FilterPolicy on them. SNS itself runs the confirmation handshake and the retries.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sns::error::ProvideErrorMetadata;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;
use serde_json::{json, Value};

use super::error::classify;
use crate::domain::{EventType, JobEvent, SubscriptionId, WebhookUrl};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Confirmation, EventBus, Subscription, SubscriptionFilter, SubscriptionStatus};

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

    fn subscription_arn(&self, id: SubscriptionId) -> String {
        format!("{}:{id}", self.topic_arn)
    }
}

fn attribute(value: String) -> StoreResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// The SNS filter policy of a subscription filter; `None` when it filters nothing.
pub(crate) fn filter_policy(filter: &SubscriptionFilter) -> Option<String> {
    let mut policy = serde_json::Map::new();
    if let Some(job) = filter.job_id {
        policy.insert("jobId".into(), json!([job.to_string()]));
    }
    if let Some(brand) = filter.brand_id {
        policy.insert("brandId".into(), json!([brand.to_string()]));
    }
    if let Some(events) = &filter.events {
        let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
        policy.insert("eventType".into(), json!(names));
    }
    (!policy.is_empty()).then(|| Value::Object(policy).to_string())
}

fn filter_of_policy(policy: Option<&String>) -> StoreResult<SubscriptionFilter> {
    let Some(policy) = policy else {
        return Ok(SubscriptionFilter::default());
    };
    let value: Value = serde_json::from_str(policy)
        .map_err(|e| StoreError::Internal(format!("filter policy: {e}")))?;
    let first = |name: &str| {
        value[name]
            .get(0)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let events = match value.get("eventType").and_then(Value::as_array) {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|v| {
                    serde_json::from_value::<EventType>(v.clone())
                        .map_err(|e| StoreError::Internal(format!("filter policy event: {e}")))
                })
                .collect::<StoreResult<Vec<_>>>()?,
        ),
    };
    Ok(SubscriptionFilter {
        job_id: first("jobId").map(|id| id.parse()).transpose()?,
        brand_id: first("brandId").map(|id| id.parse()).transpose()?,
        events,
    })
}

#[async_trait]
impl EventBus for SnsEvents {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()> {
        let message = serde_json::to_string(event)
            .map_err(|e| StoreError::Internal(format!("event encoding: {e}")))?;
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(event.event_type.as_str())
            .message(message)
            .message_attributes(
                "eventType",
                attribute(event.event_type.as_str().to_owned())?,
            )
            .message_attributes("jobId", attribute(event.job_id.to_string())?)
            .message_attributes("brandId", attribute(event.brand_id.to_string())?)
            .message_attributes("offerId", attribute(event.offer_id.to_string())?)
            .send()
            .await
            .map_err(|e| classify("Publish", e))?;
        Ok(())
    }

    async fn subscribe(
        &self,
        url: &WebhookUrl,
        filter: &SubscriptionFilter,
    ) -> StoreResult<Subscription> {
        let protocol = if url.as_str().starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let out = self
            .sns
            .subscribe()
            .topic_arn(&self.topic_arn)
            .protocol(protocol)
            .endpoint(url.as_str())
            .set_attributes(
                filter_policy(filter).map(|p| HashMap::from([("FilterPolicy".to_owned(), p)])),
            )
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("InvalidParameter") => StoreError::Conflict(format!(
                    "{url} is already subscribed with another filter: {}",
                    e.message().unwrap_or_default()
                )),
                _ => classify("Subscribe", e),
            })?;
        let arn = out.subscription_arn.unwrap_or_default();
        let id = arn
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .parse::<SubscriptionId>()
            .map_err(|_| StoreError::Internal(format!("unexpected subscription ARN '{arn}'")))?;
        self.get_subscription(id)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("subscription {id} not visible yet")))
    }

    async fn get_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        let result = self
            .sns
            .get_subscription_attributes()
            .subscription_arn(self.subscription_arn(id))
            .send()
            .await;
        let attrs = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if e.code() == Some("NotFound") => return Ok(None),
            Err(e) => return Err(classify("GetSubscriptionAttributes", e)),
        };
        let url = attrs
            .get("Endpoint")
            .ok_or_else(|| StoreError::Internal("subscription without an endpoint".into()))?
            .parse()?;
        Ok(Some(Subscription {
            id,
            url,
            filter: filter_of_policy(attrs.get("FilterPolicy"))?,
            status: if attrs.get("PendingConfirmation").map(String::as_str) == Some("true") {
                SubscriptionStatus::PendingConfirmation
            } else {
                SubscriptionStatus::Confirmed
            },
            created_at: None,
        }))
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> StoreResult<bool> {
        if self.get_subscription(id).await?.is_none() {
            return Ok(false);
        }
        self.sns
            .unsubscribe()
            .subscription_arn(self.subscription_arn(id))
            .send()
            .await
            .map_err(|e| classify("Unsubscribe", e))?;
        Ok(true)
    }

    async fn confirm_subscription(
        &self,
        id: SubscriptionId,
        token: &str,
    ) -> StoreResult<Confirmation> {
        if self.get_subscription(id).await?.is_none() {
            return Ok(Confirmation::UnknownSubscription);
        }
        match self
            .sns
            .confirm_subscription()
            .topic_arn(&self.topic_arn)
            .token(token)
            .send()
            .await
        {
            Ok(out) if out.subscription_arn() == Some(self.subscription_arn(id).as_str()) => {
                Ok(Confirmation::Confirmed)
            }
            Ok(_) => Ok(Confirmation::BadToken),
            Err(e) if e.code() == Some("InvalidParameter") => Ok(Confirmation::BadToken),
            Err(e) => Err(classify("ConfirmSubscription", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::BrandId;

    #[test]
    fn filters_round_trip_through_filter_policies() {
        let filter = SubscriptionFilter {
            job_id: None,
            brand_id: Some(BrandId::new_random()),
            events: Some(vec![EventType::JobFailed, EventType::JobCancelled]),
        };
        let policy = filter_policy(&filter).unwrap();
        assert_eq!(filter_of_policy(Some(&policy)).unwrap(), filter);
        assert_eq!(filter_policy(&SubscriptionFilter::default()), None);
    }
}
