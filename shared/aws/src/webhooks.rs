//! Webhooks port on DynamoDB, in the jobs table: a subscription is `WEBHOOK#{id}/#WEBHOOK`
//! (a brand's, newest first, on `gsi1` under `WEBHOOKS#{brand}`); its deliveries are
//! `WEBHOOK#{id}/DELIVERY#{deliveryId}` (delivery ids sort by event time), also on `gsi1`
//! under `DELIVERIES#{job}`, removed by TTL after 30 days. A brand's events (what replays
//! read) are `EVENTS#{brand}/EVENT#{occurredAt ms:020}#{eventId}`, oldest first, removed by
//! TTL after 30 days.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::batch_get;
use super::items::{cursor_of, from_item, key, n, s, start_key, to_item, Item};
use super::sdk_error::classify;
use super::sealing::KmsSealer;
use crate::domain::{
    BrandId, Delivery, DeliveryId, Event, JobId, SendSlot, Subscription, SubscriptionId,
    WebhookSecret, DELIVERY_RETENTION, EVENT_RETENTION,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Cursor, Page, Webhooks};

pub(crate) const SUBSCRIPTION_SK: &str = "#WEBHOOK";
/// Compare-and-set rounds `take_send_slot` tries before deferring.
const SLOT_TRIES: usize = 8;

fn subscription_pk(id: SubscriptionId) -> String {
    format!("WEBHOOK#{id}")
}

fn events_pk(brand: BrandId) -> String {
    format!("EVENTS#{brand}")
}

/// An event's sort key; `event_sk(t, "")` sorts before every event at `t`.
fn event_sk(at: DateTime<Utc>, event_id: &str) -> String {
    format!("EVENT#{:020}#{event_id}", ms(at).max(0))
}

fn delivery_sk(id: DeliveryId) -> String {
    format!("DELIVERY#{id}")
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(e.to_string())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionItem {
    pk: String,
    sk: String,
    id: String,
    brand_id: String,
    url: String,
    /// The filter as JSON.
    filter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    status: String,
    secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_secret_until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress_every_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limit_per_sec: Option<u32>,
    /// A rate-limited subscription's next free send slot (µs; `take_send_slot` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_send_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    created_at: i64,
    gsi1pk: String,
    gsi1sk: String,
}

impl SubscriptionItem {
    /// The item of `sub`, its secrets as sealed (`secret`, and the previous one's).
    fn of(sub: &Subscription, secret: String, previous: Option<String>) -> StoreResult<Self> {
        Ok(SubscriptionItem {
            pk: subscription_pk(sub.id),
            sk: SUBSCRIPTION_SK.to_owned(),
            id: sub.id.to_string(),
            brand_id: sub.brand_id.to_string(),
            url: sub.url.to_string(),
            filter: serde_json::to_string(&sub.filter).map_err(internal)?,
            description: sub.description.clone(),
            status: sub.status.as_str().to_owned(),
            secret,
            previous_secret: previous,
            previous_secret_until: sub.previous_secret.as_ref().map(|(_, until)| ms(*until)),
            progress_every_seconds: sub.progress_every_seconds,
            rate_limit_per_sec: sub.rate_limit_per_sec,
            next_send_at: None,
            failing_since: sub.failing_since.map(ms),
            disabled_reason: sub.disabled_reason.clone(),
            created_at: ms(sub.created_at),
            gsi1pk: format!("WEBHOOKS#{}", sub.brand_id),
            gsi1sk: format!("{:020}#{}", ms(sub.created_at), sub.id),
        })
    }

    async fn into_subscription(self, sealer: &KmsSealer) -> StoreResult<Subscription> {
        let id: SubscriptionId = self.id.parse()?;
        Ok(Subscription {
            id,
            brand_id: self.brand_id.parse()?,
            url: self.url.parse()?,
            filter: serde_json::from_str(&self.filter).map_err(internal)?,
            description: self.description,
            created_at: from_ms(self.created_at),
            status: self.status.parse()?,
            secret: sealer.open(id, &self.secret).await?,
            previous_secret: match (self.previous_secret, self.previous_secret_until) {
                (Some(secret), Some(until)) => {
                    Some((sealer.open(id, &secret).await?, from_ms(until)))
                }
                _ => None,
            },
            progress_every_seconds: self.progress_every_seconds,
            rate_limit_per_sec: self.rate_limit_per_sec,
            failing_since: self.failing_since.map(from_ms),
            disabled_reason: self.disabled_reason,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryItem {
    pk: String,
    sk: String,
    id: String,
    subscription_id: String,
    event_id: String,
    event_type: String,
    /// Absent for an event of no job (`webhook.test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
    brand_id: String,
    body: String,
    status: String,
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_attempt_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_attempt_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<i64>,
    created_at: i64,
    /// TTL (seconds since the epoch).
    expires_at: i64,
    /// A job's deliveries (absent, so not indexed, for an event of no job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    /// Only while pending: the sparse index of pending deliveries by when they are due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2sk: Option<String>,
}

/// The `gsi2` partition of pending deliveries.
const PENDING_DELIVERIES: &str = "PENDING_DELIVERIES";

impl DeliveryItem {
    fn of(d: &Delivery) -> Self {
        DeliveryItem {
            pk: subscription_pk(d.subscription_id),
            sk: delivery_sk(d.id),
            id: d.id.to_string(),
            subscription_id: d.subscription_id.to_string(),
            event_id: d.event_id.to_string(),
            event_type: d.event_type.as_str().to_owned(),
            job_id: d.job_id.map(|j| j.to_string()),
            brand_id: d.brand_id.to_string(),
            body: d.body.clone(),
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            first_attempt_at: d.first_attempt_at.map(ms),
            last_attempt_at: d.last_attempt_at.map(ms),
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at.map(ms),
            created_at: ms(d.created_at),
            expires_at: d.created_at.timestamp() + DELIVERY_RETENTION.as_secs() as i64,
            gsi1pk: d.job_id.map(|j| format!("DELIVERIES#{j}")),
            gsi1sk: d.job_id.map(|_| d.id.to_string()),
            gsi2pk: (d.status == crate::domain::DeliveryStatus::Pending)
                .then(|| PENDING_DELIVERIES.to_owned()),
            gsi2sk: (d.status == crate::domain::DeliveryStatus::Pending).then(|| {
                format!(
                    "{:020}#{}",
                    d.next_attempt_at.map(ms).unwrap_or_default(),
                    d.id
                )
            }),
        }
    }

    fn into_delivery(self) -> StoreResult<Delivery> {
        Ok(Delivery {
            id: self.id.parse()?,
            subscription_id: self.subscription_id.parse()?,
            event_id: self
                .event_id
                .parse()
                .map_err(|_| internal(format!("event id '{}'", self.event_id)))?,
            event_type: serde_json::from_value(serde_json::Value::String(self.event_type))
                .map_err(internal)?,
            job_id: self.job_id.map(|j| j.parse()).transpose()?,
            brand_id: self.brand_id.parse()?,
            status: self.status.parse()?,
            attempts: self.attempts,
            first_attempt_at: self.first_attempt_at.map(from_ms),
            last_attempt_at: self.last_attempt_at.map(from_ms),
            last_status_code: self.last_status_code,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at.map(from_ms),
            created_at: from_ms(self.created_at),
            body: self.body,
        })
    }
}

pub struct DynamoWebhooks {
    ddb: Client,
    table: String,
    sealer: Arc<KmsSealer>,
}

impl DynamoWebhooks {
    /// Subscriptions in `table`, their signing secrets sealed by `sealer`.
    pub fn new(ddb: Client, table: &str, sealer: Arc<KmsSealer>) -> Self {
        DynamoWebhooks {
            ddb,
            table: table.to_owned(),
            sealer,
        }
    }

    async fn subscription_of(&self, item: Item) -> StoreResult<Subscription> {
        from_item::<SubscriptionItem>(item)?
            .into_subscription(&self.sealer)
            .await
    }

    /// Applies `expression` (`#s` names `status`; `values` its placeholders) to an existing
    /// subscription's item: the item afterwards, `None` if there is no such subscription.
    async fn update_subscription(
        &self,
        id: SubscriptionId,
        expression: &str,
        values: &[(&str, AttributeValue)],
    ) -> StoreResult<Option<Item>> {
        let mut update = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(subscription_pk(id), SUBSCRIPTION_SK)))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllNew);
        if expression.contains("#s") {
            update = update.expression_attribute_names("#s", "status");
        }
        for (name, value) in values {
            update = update.expression_attribute_values(*name, value.clone());
        }
        match update.send().await {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(e) if conditional_check_failed(&e) => Ok(None),
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    /// Puts `item` unless its key exists; the stored item either way.
    async fn put_if_absent(&self, item: Item) -> StoreResult<Item> {
        let result = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(item),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let PutItemError::ConditionalCheckFailedException(ccf) = e.into_err() else {
                    unreachable!("matched above")
                };
                ccf.item
                    .ok_or_else(|| internal("condition failed without the old item"))
            }
            Err(e) => Err(classify("PutItem", e)),
        }
    }

    async fn get(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(out.item)
    }

    /// Base-table keys from a keys-only `gsi1` query, newest first, and the next cursor.
    async fn index_keys(
        &self,
        partition: String,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<(Vec<Item>, Option<Cursor>)> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(partition))
            .scan_index_forward(false)
            .set_exclusive_start_key(start_key(after)?)
            .limit(limit.min(1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let keys = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let (Some(pk), Some(sk)) = (item.get("pk"), item.get("sk")) else {
                    return Err(internal("index item without its table key"));
                };
                Ok(HashMap::from([
                    ("pk".to_owned(), pk.clone()),
                    ("sk".to_owned(), sk.clone()),
                ]))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((keys, cursor_of(out.last_evaluated_key)?))
    }

    /// The items of `keys`, in that order (missing ones left out).
    async fn fetch_in_order(&self, keys: Vec<Item>) -> StoreResult<Vec<Item>> {
        let order: Vec<(String, String)> = keys.iter().map(key_pair).collect();
        let mut found: HashMap<(String, String), Item> = batch_get(&self.ddb, &self.table, keys)
            .await?
            .into_iter()
            .map(|item| (key_pair(&item), item))
            .collect();
        Ok(order.iter().filter_map(|k| found.remove(k)).collect())
    }
}

fn conditional_check_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

fn key_pair(item: &Item) -> (String, String) {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    };
    (text("pk"), text("sk"))
}

fn delivery_of(item: Item) -> StoreResult<Delivery> {
    from_item::<DeliveryItem>(item)?.into_delivery()
}

#[async_trait]
impl Webhooks for DynamoWebhooks {
    async fn create_subscription(&self, subscription: &Subscription) -> StoreResult<Subscription> {
        let secret = self
            .sealer
            .seal(subscription.id, &subscription.secret)
            .await?;
        let previous = match &subscription.previous_secret {
            Some((previous, _)) => Some(self.sealer.seal(subscription.id, previous).await?),
            None => None,
        };
        let item = to_item(&SubscriptionItem::of(subscription, secret, previous)?)?;
        self.subscription_of(self.put_if_absent(item).await?).await
    }

    async fn get_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        match self.get(subscription_pk(id), SUBSCRIPTION_SK).await? {
            Some(item) => self.subscription_of(item).await.map(Some),
            None => Ok(None),
        }
    }

    async fn page_brand_subscriptions(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Subscription>> {
        let (keys, next) = self
            .index_keys(format!("WEBHOOKS#{brand}"), after, limit)
            .await?;
        // Side by side: a cold deliverer opens each one's data key with KMS.
        let items = futures::future::try_join_all(
            self.fetch_in_order(keys)
                .await?
                .into_iter()
                .map(|item| self.subscription_of(item)),
        )
        .await?;
        Ok(Page { items, next })
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> StoreResult<bool> {
        let result = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(subscription_pk(id), SUBSCRIPTION_SK)))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if conditional_check_failed(&e) => Ok(false),
            Err(e) => Err(classify("DeleteItem", e)),
        }
    }

    async fn rotate_secret(
        &self,
        id: SubscriptionId,
        secret: &WebhookSecret,
        previous_until: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>> {
        let sealed = self.sealer.seal(id, secret).await?;
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(subscription_pk(id), SUBSCRIPTION_SK)))
            .update_expression(
                "SET previousSecret = secret, previousSecretUntil = :until, secret = :new",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":until", n(ms(previous_until)))
            .expression_attribute_values(":new", s(sealed))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes {
                Some(item) => self.subscription_of(item).await.map(Some),
                None => Ok(None),
            },
            Err(e) if conditional_check_failed(&e) => Ok(None),
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn disable_subscription(&self, id: SubscriptionId, reason: &str) -> StoreResult<()> {
        self.update_subscription(
            id,
            "SET #s = :disabled, disabledReason = :reason",
            &[(":disabled", s("disabled")), (":reason", s(reason))],
        )
        .await
        .map(drop)
    }

    async fn enable_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        match self
            .update_subscription(
                id,
                "SET #s = :active REMOVE disabledReason, failingSince",
                &[(":active", s("active"))],
            )
            .await?
        {
            Some(item) => self.subscription_of(item).await.map(Some),
            None => Ok(None),
        }
    }

    async fn record_failing(
        &self,
        id: SubscriptionId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        // Set only if unset; either way the stored value comes back.
        let Some(item) = self
            .update_subscription(
                id,
                "SET failingSince = if_not_exists(failingSince, :at)",
                &[(":at", n(ms(at)))],
            )
            .await?
        else {
            return Ok(None);
        };
        match item.get("failingSince") {
            Some(AttributeValue::N(v)) => Ok(Some(from_ms(v.parse().map_err(internal)?))),
            _ => Err(internal("failingSince was not returned")),
        }
    }

    async fn clear_failing(&self, id: SubscriptionId) -> StoreResult<()> {
        self.update_subscription(id, "REMOVE failingSince", &[])
            .await
            .map(drop)
    }

    async fn take_send_slot(
        &self,
        id: SubscriptionId,
        now_us: i64,
        spacing_us: i64,
        max_ahead_us: i64,
    ) -> StoreResult<Option<SendSlot>> {
        // Compare-and-set on the stored slot; under contention another deliverer moved it
        // first, so read again. After a few lost races, come back a slot later.
        for _ in 0..SLOT_TRIES {
            let Some(item) = super::get_item(
                &self.ddb,
                &self.table,
                key(subscription_pk(id), SUBSCRIPTION_SK),
            )
            .await?
            else {
                return Ok(None);
            };
            let stored = match item.get("nextSendAt") {
                Some(AttributeValue::N(n)) => Some(n.parse::<i64>().map_err(internal)?),
                _ => None,
            };
            let slot = SendSlot::plan(stored, now_us, spacing_us, max_ahead_us);
            let SendSlot::At { next, .. } = slot else {
                return Ok(Some(slot));
            };
            let update = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(subscription_pk(id), SUBSCRIPTION_SK)))
                .update_expression("SET nextSendAt = :next")
                .expression_attribute_values(":next", n(next));
            let update = match stored {
                Some(seen) => update
                    .condition_expression("nextSendAt = :seen")
                    .expression_attribute_values(":seen", n(seen)),
                None => update.condition_expression(
                    "attribute_exists(pk) AND attribute_not_exists(nextSendAt)",
                ),
            };
            match update.send().await {
                Ok(_) => return Ok(Some(slot)),
                Err(e) if conditional_check_failed(&e) => continue,
                Err(e) => return Err(classify("UpdateItem", e)),
            }
        }
        Ok(Some(SendSlot::Busy {
            free_at: now_us + spacing_us,
        }))
    }

    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<Delivery> {
        let item = to_item(&DeliveryItem::of(delivery))?;
        delivery_of(self.put_if_absent(item).await?)
    }

    async fn get_delivery(
        &self,
        subscription: SubscriptionId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        self.get(subscription_pk(subscription), &delivery_sk(id))
            .await?
            .map(delivery_of)
            .transpose()
    }

    async fn update_delivery(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
    ) -> StoreResult<bool> {
        let item = to_item(&DeliveryItem::of(delivery))?;
        // The whole new state in one conditional put: only from the state it was read at.
        let result = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attempts = :expected")
            .expression_attribute_values(":expected", n(expected_attempts))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if conditional_check_failed(&e) => Ok(false),
            Err(e) => Err(classify("PutItem", e)),
        }
    }

    async fn page_subscription_deliveries(
        &self,
        subscription: SubscriptionId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND begins_with(sk, :d)")
            .expression_attribute_values(":p", s(subscription_pk(subscription)))
            .expression_attribute_values(":d", s("DELIVERY#"))
            .scan_index_forward(false)
            .set_exclusive_start_key(start_key(after)?)
            .limit(limit.min(1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(delivery_of)
            .collect::<StoreResult<_>>()?;
        Ok(Page {
            items,
            next: cursor_of(out.last_evaluated_key)?,
        })
    }

    async fn overdue_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :p AND gsi2sk < :before")
            .expression_attribute_values(":p", s(PENDING_DELIVERIES))
            .expression_attribute_values(":before", s(format!("{:020}", ms(before))))
            .limit(limit.min(1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let keys = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                Some(HashMap::from([
                    ("pk".to_owned(), item.get("pk")?.clone()),
                    ("sk".to_owned(), item.get("sk")?.clone()),
                ]))
            })
            .collect();
        self.fetch_in_order(keys)
            .await?
            .into_iter()
            .map(delivery_of)
            .collect()
    }

    async fn record_event(&self, event: &Event) -> StoreResult<()> {
        let body = serde_json::to_string(event).map_err(internal)?;
        let expires = event.occurred_at().timestamp() + EVENT_RETENTION.as_secs() as i64;
        // The same event keeps the same key and body: putting it again changes nothing.
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(events_pk(event.brand_id())))
            .item(
                "sk",
                s(event_sk(event.occurred_at(), &event.event_id().to_string())),
            )
            .item("eventType", s(event.event_type().as_str()))
            .item("body", s(body))
            .item("expiresAt", n(expires))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    async fn page_brand_events(
        &self,
        brand: BrandId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Event>> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":p", s(events_pk(brand)))
            .expression_attribute_values(":from", s(event_sk(since, "")))
            // Before every event at `until`: the range is half-open.
            .expression_attribute_values(":to", s(event_sk(until, "")))
            .set_exclusive_start_key(start_key(after)?)
            .limit(limit.clamp(1, 1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let body = item
                    .get("body")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| internal("an event item without its body"))?;
                let value = serde_json::from_str(body).map_err(internal)?;
                Ok(Event::from_json(value)?)
            })
            .collect::<StoreResult<_>>()?;
        Ok(Page {
            items,
            next: cursor_of(out.last_evaluated_key)?,
        })
    }

    async fn page_job_deliveries(
        &self,
        job: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>> {
        let (keys, next) = self
            .index_keys(format!("DELIVERIES#{job}"), after, limit)
            .await?;
        let items = self
            .fetch_in_order(keys)
            .await?
            .into_iter()
            .map(delivery_of)
            .collect::<StoreResult<_>>()?;
        Ok(Page { items, next })
    }
}
