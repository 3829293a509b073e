//! EventBus port on SQLite: an event goes straight onto the webhook queue, as SNS hands it
//! to the webhook queue's raw subscription on AWS.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{JobEvent, WebhookMessage};
use crate::error::StoreResult;
use crate::ports::{EventBus, Queue};

pub struct EmbeddedEvents {
    webhook_queue: Arc<dyn Queue>,
}

impl EmbeddedEvents {
    pub fn new(webhook_queue: Arc<dyn Queue>) -> Self {
        EmbeddedEvents { webhook_queue }
    }
}

#[async_trait]
impl EventBus for EmbeddedEvents {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()> {
        self.webhook_queue
            .send_batch(&[WebhookMessage::Event(event.clone()).encode()])
            .await
    }
}
