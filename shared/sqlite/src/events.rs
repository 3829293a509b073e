//! EventBus port on SQLite: an event goes straight onto the webhook queue, as SNS hands it
//! to the webhook queue's raw subscription on AWS.

use async_trait::async_trait;

use crate::domain::{JobEvent, WebhookMessage};
use crate::error::StoreResult;
use crate::ports::{EventBus, TypedQueue};

pub struct EmbeddedEvents {
    webhook_queue: TypedQueue<WebhookMessage>,
}

impl EmbeddedEvents {
    pub fn new(webhook_queue: TypedQueue<WebhookMessage>) -> Self {
        EmbeddedEvents { webhook_queue }
    }
}

#[async_trait]
impl EventBus for EmbeddedEvents {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()> {
        self.webhook_queue
            .send(&WebhookMessage::Event(event.clone().into()))
            .await
    }
}
