//! EventBus port on SQLite, delivering like SNS does to HTTP/S endpoints: a subscription
//! first receives a `SubscriptionConfirmation` whose `SubscribeURL` the receiver must GET;
//! confirmed subscriptions receive `Notification` envelopes (the event JSON in `Message`,
//! filter attributes in `MessageAttributes`); failed deliveries are retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use futures::future::join_all;
use rusqlite::{params, OptionalExtension};
use serde_json::json;
use tokio::sync::watch;

use super::{from_ms, now_ms, sql, EmbeddedStore};
use crate::domain::{JobEvent, SubscriptionId, WebhookUrl};
use crate::egress::Egress;
use crate::error::{StoreError, StoreResult};
use crate::ports::{Confirmation, EventBus, Subscription, SubscriptionFilter, SubscriptionStatus};

/// The topic every embedded event goes to, named like an SNS topic ARN.
pub const TOPIC_ARN: &str = "arn:aws:sns:embedded:000000000000:bulklink-job-events";
const DELIVERY_WAKEUP: &str = "#webhook-deliveries";

pub struct EmbeddedEvents {
    store: Arc<EmbeddedStore>,
    /// Base URL of this server's HTTP API, for SubscribeURL and UnsubscribeURL.
    public_url: String,
}

impl EmbeddedEvents {
    pub fn new(store: Arc<EmbeddedStore>, public_url: &str) -> Self {
        EmbeddedEvents {
            store,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }
}

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn subscription_arn(id: &str) -> String {
    format!("{TOPIC_ARN}:{id}")
}

/// The SNS `SubscriptionConfirmation` envelope.
fn confirmation_envelope(public_url: &str, id: &str, token: &str, message_id: &str) -> String {
    json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": token,
        "TopicArn": TOPIC_ARN,
        "Message": format!(
            "You have chosen to subscribe to the topic {TOPIC_ARN}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": format!("{public_url}/webhooks/{id}/confirm?token={token}"),
        "Timestamp": timestamp(),
        // The embedded backend does not sign messages; see docs/architecture.md.
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
    })
    .to_string()
}

/// The SNS `Notification` envelope carrying one event.
fn notification_envelope(
    public_url: &str,
    sub_id: &str,
    message_id: &str,
    event: &JobEvent,
) -> String {
    let string_attr = |value: String| json!({ "Type": "String", "Value": value });
    json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC_ARN,
        "Subject": event.event_type.as_str(),
        "Message": serde_json::to_string(event).unwrap_or_default(),
        "Timestamp": timestamp(),
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
        "UnsubscribeURL": format!("{public_url}/webhooks/{sub_id}"),
        "MessageAttributes": {
            "eventType": string_attr(event.event_type.as_str().to_owned()),
            "jobId": string_attr(event.job_id.to_string()),
            "brandId": string_attr(event.brand_id.to_string()),
            "offerId": string_attr(event.offer_id.to_string()),
        },
    })
    .to_string()
}

fn subscription_from_row(
    id: String,
    url: String,
    filter: String,
    status: String,
    created_at: i64,
) -> StoreResult<Subscription> {
    Ok(Subscription {
        id: id.parse()?,
        url: url.parse()?,
        filter: serde_json::from_str(&filter)
            .map_err(|e| StoreError::Internal(format!("stored filter is corrupt: {e}")))?,
        status: if status == "confirmed" {
            SubscriptionStatus::Confirmed
        } else {
            SubscriptionStatus::PendingConfirmation
        },
        created_at: Some(from_ms(created_at)),
    })
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, filter, status, created_at";

type SubscriptionRow = (String, String, String, String, i64);

fn subscription_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SubscriptionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

#[async_trait]
impl EventBus for EmbeddedEvents {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()> {
        let event = event.clone();
        let public_url = self.public_url.clone();
        let queued = self
            .store
            .write(move |conn| {
                let tx = conn.transaction().map_err(sql)?;
                let subscriptions: Vec<(String, String)> = {
                    let mut stmt = tx
                        .prepare_cached("SELECT id, filter FROM subscriptions WHERE status = 'confirmed'")
                        .map_err(sql)?;
                    let rows = stmt
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                        .map_err(sql)?;
                    rows.collect::<Result<_, _>>().map_err(sql)?
                };
                // One publish is one SNS message: every subscriber sees the same MessageId.
                let message_id = uuid::Uuid::new_v4().to_string();
                let mut queued = 0;
                for (sub_id, filter) in subscriptions {
                    let filter: SubscriptionFilter = serde_json::from_str(&filter)
                        .map_err(|e| StoreError::Internal(format!("stored filter is corrupt: {e}")))?;
                    if !filter.matches(&event) {
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO deliveries (subscription_id, message_type, message_id, body, next_attempt_at) \
                         VALUES (?1, 'Notification', ?2, ?3, ?4)",
                        params![
                            sub_id,
                            message_id,
                            notification_envelope(&public_url, &sub_id, &message_id, &event),
                            now_ms()
                        ],
                    )
                    .map_err(sql)?;
                    queued += 1;
                }
                tx.commit().map_err(sql)?;
                Ok(queued)
            })
            .await?;
        if queued > 0 {
            self.store.notifier(DELIVERY_WAKEUP).notify_waiters();
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        url: &WebhookUrl,
        filter: &SubscriptionFilter,
    ) -> StoreResult<Subscription> {
        let url = url.to_string();
        let filter = serde_json::to_string(filter)
            .map_err(|e| StoreError::Internal(format!("filter: {e}")))?;
        let public_url = self.public_url.clone();
        let subscription = self
            .store
            .write(move |conn| {
                let tx = conn.transaction().map_err(sql)?;
                let existing = tx
                    .query_row(
                        &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE url = ?1 AND filter = ?2"),
                        params![url, filter],
                        subscription_row,
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some((id, url, filter, status, created)) = existing {
                    return subscription_from_row(id, url, filter, status, created);
                }
                let id = SubscriptionId::new_random().to_string();
                let token = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
                let now = now_ms();
                tx.execute(
                    "INSERT INTO subscriptions (id, url, filter, status, token, created_at) \
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                    params![id, url, filter, token, now],
                )
                .map_err(sql)?;
                let message_id = uuid::Uuid::new_v4().to_string();
                tx.execute(
                    "INSERT INTO deliveries (subscription_id, message_type, message_id, body, next_attempt_at) \
                     VALUES (?1, 'SubscriptionConfirmation', ?2, ?3, ?4)",
                    params![id, message_id, confirmation_envelope(&public_url, &id, &token, &message_id), now],
                )
                .map_err(sql)?;
                tx.commit().map_err(sql)?;
                subscription_from_row(id, url, filter, "pending".into(), now)
            })
            .await?;
        self.store.notifier(DELIVERY_WAKEUP).notify_waiters();
        Ok(subscription)
    }

    async fn get_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        self.store
            .read(move |conn| {
                conn.query_row(
                    &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"),
                    [id.to_string()],
                    subscription_row,
                )
                .optional()
                .map_err(sql)?
                .map(|(id, url, filter, status, created)| {
                    subscription_from_row(id, url, filter, status, created)
                })
                .transpose()
            })
            .await
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> StoreResult<bool> {
        self.store
            .write(move |conn| {
                let tx = conn.transaction().map_err(sql)?;
                let id = id.to_string();
                let removed = tx
                    .execute("DELETE FROM subscriptions WHERE id = ?1", [&id])
                    .map_err(sql)?;
                tx.execute("DELETE FROM deliveries WHERE subscription_id = ?1", [&id])
                    .map_err(sql)?;
                tx.commit().map_err(sql)?;
                Ok(removed == 1)
            })
            .await
    }

    async fn confirm_subscription(
        &self,
        id: SubscriptionId,
        token: &str,
    ) -> StoreResult<Confirmation> {
        let token = token.to_owned();
        self.store
            .write(move |conn| {
                let stored: Option<String> = conn
                    .query_row(
                        "SELECT token FROM subscriptions WHERE id = ?1",
                        [id.to_string()],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                match stored {
                    None => Ok(Confirmation::UnknownSubscription),
                    Some(stored) if stored != token => Ok(Confirmation::BadToken),
                    Some(_) => {
                        conn.execute(
                            "UPDATE subscriptions SET status = 'confirmed' WHERE id = ?1",
                            [id.to_string()],
                        )
                        .map_err(sql)?;
                        Ok(Confirmation::Confirmed)
                    }
                }
            })
            .await
    }
}

/// Retry policy for webhook deliveries (SNS's HTTP/S delivery policy, in spirit).
#[derive(Clone, Debug)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 10,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl DeliveryPolicy {
    /// Exponential backoff after the `attempts`-th failure.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.min_delay.saturating_mul(factor).min(self.max_delay)
    }
}

struct Due {
    id: i64,
    subscription_id: String,
    url: String,
    message_type: String,
    message_id: String,
    body: String,
    attempts: u32,
}

/// Sends queued deliveries and retries the failed ones. One per process. Every attempt
/// goes through the egress rules (checked targets, no redirects, bounded responses).
pub struct WebhookDelivery {
    store: Arc<EmbeddedStore>,
    egress: Egress,
    client: reqwest::Client,
    policy: DeliveryPolicy,
}

impl WebhookDelivery {
    pub fn new(
        store: Arc<EmbeddedStore>,
        policy: DeliveryPolicy,
        egress: Egress,
    ) -> StoreResult<Self> {
        let client = egress
            .client("Amazon Simple Notification Service Agent (bulklink embedded)")
            .map_err(|e| StoreError::Internal(format!("HTTP client: {e}")))?;
        Ok(WebhookDelivery {
            store,
            egress,
            client,
            policy,
        })
    }

    /// Delivers until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wakeup = self.store.notifier(DELIVERY_WAKEUP);
        while !*shutdown.borrow() {
            let queued = wakeup.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let idle = match self.deliver_due().await {
                Ok(0) => Duration::from_millis(200),
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = &mut queued => {}
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One pass: sends every delivery that is due. Returns how many were attempted.
    pub async fn deliver_due(&self) -> StoreResult<usize> {
        let due: Vec<Due> = self
            .store
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT d.id, d.subscription_id, s.url, d.message_type, d.message_id, d.body, d.attempts \
                         FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id \
                         WHERE d.dead = 0 AND d.next_attempt_at <= ?1 ORDER BY d.next_attempt_at LIMIT 32",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([now_ms()], |row| {
                        Ok(Due {
                            id: row.get(0)?,
                            subscription_id: row.get(1)?,
                            url: row.get(2)?,
                            message_type: row.get(3)?,
                            message_id: row.get(4)?,
                            body: row.get(5)?,
                            attempts: row.get(6)?,
                        })
                    })
                    .map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)
            })
            .await?;
        let attempted = due.len();
        let results = join_all(due.iter().map(|d| self.send(d))).await;
        for (delivery, result) in due.into_iter().zip(results) {
            self.settle(delivery, result).await?;
        }
        Ok(attempted)
    }

    async fn send(&self, d: &Due) -> Result<(), String> {
        let url: WebhookUrl = d
            .url
            .parse()
            .map_err(|e| format!("stored URL is not valid: {e}"))?;
        let mut headers = vec![
            ("content-type", "text/plain; charset=UTF-8".to_owned()),
            ("x-amz-sns-message-type", d.message_type.clone()),
            ("x-amz-sns-message-id", d.message_id.clone()),
            ("x-amz-sns-topic-arn", TOPIC_ARN.to_owned()),
        ];
        if d.message_type == "Notification" {
            headers.push((
                "x-amz-sns-subscription-arn",
                subscription_arn(&d.subscription_id),
            ));
        }
        match self
            .egress
            .post(&self.client, &url, &headers, d.body.clone())
            .await
        {
            Ok(attempt) if attempt.delivered() => Ok(()),
            Ok(attempt) => Err(format!("HTTP {}", attempt.status)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn settle(&self, d: Due, result: Result<(), String>) -> StoreResult<()> {
        let attempts = d.attempts + 1;
        match result {
            Ok(()) => {
                tracing::info!(message_type = %d.message_type, url = %d.url, attempts, "webhook delivered");
                self.store
                    .write(move |conn| {
                        conn.execute("DELETE FROM deliveries WHERE id = ?1", [d.id])
                            .map_err(sql)?;
                        Ok(())
                    })
                    .await
            }
            Err(error) => {
                let dead = attempts >= self.policy.max_attempts;
                if dead {
                    tracing::error!(url = %d.url, attempts, %error, "webhook delivery abandoned");
                } else {
                    tracing::warn!(url = %d.url, attempts, %error, "webhook delivery failed; will retry");
                }
                let next = now_ms() + self.policy.delay_after(attempts).as_millis() as i64;
                self.store
                    .write(move |conn| {
                        conn.execute(
                            "UPDATE deliveries SET attempts = ?2, next_attempt_at = ?3, dead = ?4, last_error = ?5 \
                             WHERE id = ?1",
                            params![d.id, attempts, next, dead, error],
                        )
                        .map_err(sql)?;
                        Ok(())
                    })
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = DeliveryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            ..Default::default()
        };
        assert_eq!(policy.delay_after(1), Duration::from_millis(100));
        assert_eq!(policy.delay_after(2), Duration::from_millis(200));
        assert_eq!(policy.delay_after(3), Duration::from_millis(400));
        assert_eq!(policy.delay_after(9), Duration::from_millis(500));
    }
}
