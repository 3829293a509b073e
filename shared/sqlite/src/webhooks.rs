//! Webhooks port on SQLite: subscriptions of brands and the record of their deliveries,
//! with the same conditional rules as the DynamoDB adapter (create-if-absent, updates only
//! from the attempt count they were read at).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::catalog::page_of;
use super::{from_ms, sql, to_ms, EmbeddedStore};
use crate::domain::{
    BrandId, Delivery, DeliveryId, Event, JobId, SendSlot, Subscription, SubscriptionId,
    WebhookSecret, DELIVERY_RETENTION, EVENT_RETENTION,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Cursor, Page, Webhooks};
use bulklink_core::sealing::{LocalSealer, Stored, SEALED_PREFIX};

const SUBSCRIPTION_COLUMNS: &str = "id, brand_id, url, filter, description, status, secret, \
    previous_secret, previous_secret_until, created_at, progress_every_seconds, rate_limit_per_sec, \
    failing_since, disabled_reason";

fn subscription_from_row(
    row: &Row<'_>,
    sealer: &LocalSealer,
) -> rusqlite::Result<StoreResult<Subscription>> {
    let id: String = row.get(0)?;
    let brand: String = row.get(1)?;
    let url: String = row.get(2)?;
    let filter: String = row.get(3)?;
    let description: Option<String> = row.get(4)?;
    let status: String = row.get(5)?;
    let secret: String = row.get(6)?;
    let previous: Option<String> = row.get(7)?;
    let previous_until: Option<i64> = row.get(8)?;
    let created_at: i64 = row.get(9)?;
    let progress_every_seconds: Option<u32> = row.get(10)?;
    let rate_limit_per_sec: Option<u32> = row.get(11)?;
    let failing_since: Option<i64> = row.get(12)?;
    let disabled_reason: Option<String> = row.get(13)?;
    Ok((|| {
        let id: SubscriptionId = id.parse()?;
        Ok(Subscription {
            id,
            brand_id: brand.parse()?,
            url: url.parse()?,
            filter: serde_json::from_str(&filter)
                .map_err(|e| StoreError::internal(format!("stored filter is corrupt: {e}")))?,
            description,
            created_at: from_ms(created_at),
            status: status.parse()?,
            secret: sealer.open(id, &secret)?,
            previous_secret: match (previous, previous_until) {
                (Some(secret), Some(until)) => Some((sealer.open(id, &secret)?, from_ms(until))),
                _ => None,
            },
            progress_every_seconds,
            rate_limit_per_sec,
            failing_since: failing_since.map(from_ms),
            disabled_reason,
        })
    })())
}

const DELIVERY_COLUMNS: &str = "id, subscription_id, event_id, event_type, job_id, brand_id, \
    body, status, attempts, first_attempt_at, last_attempt_at, last_status_code, last_error, \
    next_attempt_at, created_at";

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<Delivery>> {
    let id: String = row.get(0)?;
    let subscription: String = row.get(1)?;
    let event_id: String = row.get(2)?;
    let event_type: String = row.get(3)?;
    // '' for an event of no job (the column predates those).
    let job: String = row.get(4)?;
    let brand: String = row.get(5)?;
    let body: String = row.get(6)?;
    let status: String = row.get(7)?;
    let attempts: u32 = row.get(8)?;
    let first: Option<i64> = row.get(9)?;
    let last: Option<i64> = row.get(10)?;
    let code: Option<u16> = row.get(11)?;
    let error: Option<String> = row.get(12)?;
    let next: Option<i64> = row.get(13)?;
    let created: i64 = row.get(14)?;
    Ok((|| {
        Ok(Delivery {
            id: id.parse()?,
            subscription_id: subscription.parse()?,
            event_id: event_id
                .parse()
                .map_err(|_| StoreError::internal(format!("event id '{event_id}'")))?,
            event_type: serde_json::from_value(serde_json::Value::String(event_type))
                .map_err(|e| StoreError::internal(format!("event type: {e}")))?,
            job_id: (!job.is_empty()).then(|| job.parse()).transpose()?,
            brand_id: brand.parse()?,
            status: status.parse()?,
            attempts,
            first_attempt_at: first.map(from_ms),
            last_attempt_at: last.map(from_ms),
            last_status_code: code,
            last_error: error,
            next_attempt_at: next.map(from_ms),
            created_at: from_ms(created),
            body,
        })
    })())
}

fn load_subscription(
    conn: &rusqlite::Connection,
    id: &str,
    sealer: &LocalSealer,
) -> StoreResult<Option<Subscription>> {
    conn.prepare_cached(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM webhooks WHERE id = ?1"
    ))
    .map_err(sql)?
    .query_row([id], |row| subscription_from_row(row, sealer))
    .optional()
    .map_err(sql)?
    .transpose()
}

fn load_delivery(conn: &rusqlite::Connection, id: &str) -> StoreResult<Option<Delivery>> {
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1"
    ))
    .map_err(sql)?
    .query_row([id], delivery_from_row)
    .optional()
    .map_err(sql)?
    .transpose()
}

/// Seals every signing secret stored in plaintext (by a release before secrets were
/// sealed), in one transaction, and leaves nothing of the plaintext in the file: `VACUUM`
/// rewrites the file from its live rows (the old values stay in no free page), and a
/// truncating checkpoint empties the write-ahead log that held the pages they were on.
/// Once per file: later opens find nothing to seal. How many were sealed.
pub(crate) fn seal_plaintext_secrets(
    conn: &mut rusqlite::Connection,
    sealer: &LocalSealer,
) -> StoreResult<usize> {
    let plain: Vec<(String, String, Option<String>)> = conn
        .prepare(
            "SELECT id, secret, previous_secret FROM webhooks \
             WHERE substr(secret, 1, ?1) <> ?2 OR substr(previous_secret, 1, ?1) <> ?2",
        )
        .map_err(sql)?
        .query_map(
            params![SEALED_PREFIX.len() + 1, format!("{SEALED_PREFIX}.")],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    if plain.is_empty() {
        return Ok(0);
    }
    let seal = |id: SubscriptionId, stored: &str| -> StoreResult<String> {
        Ok(if Stored::is_sealed(stored) {
            stored.to_owned()
        } else {
            sealer.seal(id, &sealer.open(id, stored)?)
        })
    };
    let tx = conn.transaction().map_err(sql)?;
    for (id, secret, previous) in &plain {
        let sub: SubscriptionId = id.parse()?;
        let previous = previous.as_deref().map(|p| seal(sub, p)).transpose()?;
        tx.execute(
            "UPDATE webhooks SET secret = ?2, previous_secret = ?3 WHERE id = ?1",
            params![id, seal(sub, secret)?, previous],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)?;
    conn.execute_batch("VACUUM").map_err(sql)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(sql)?;
    tracing::info!(
        count = plain.len(),
        "sealed webhook signing secrets stored in plaintext"
    );
    Ok(plain.len())
}

impl EmbeddedStore {
    /// Removes delivery records and events older than their retention (DynamoDB's TTL on
    /// AWS); how many.
    pub async fn expire_deliveries(&self, now: DateTime<Utc>) -> StoreResult<usize> {
        let before = to_ms(now) - DELIVERY_RETENTION.as_millis() as i64;
        let events_before = to_ms(now) - EVENT_RETENTION.as_millis() as i64;
        self.write(move |conn| {
            let deliveries = conn
                .execute(
                    "DELETE FROM webhook_deliveries WHERE created_at < ?1",
                    [before],
                )
                .map_err(sql)?;
            let events = conn
                .execute(
                    "DELETE FROM webhook_events WHERE occurred_at < ?1",
                    [events_before],
                )
                .map_err(sql)?;
            Ok(deliveries + events)
        })
        .await
    }

    async fn page_deliveries(
        &self,
        column: &'static str,
        key: String,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>> {
        let before = after
            .map(|c| c.position().to_owned())
            .unwrap_or_else(|| "~".to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {column} = ?1 AND id < ?2 \
                     ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![key, before, limit as i64 + 1], delivery_from_row)
                .map_err(sql)?;
            let mut found = Vec::new();
            for row in rows {
                found.push(row.map_err(sql)??);
            }
            Ok(page_of(found, limit, |d| d.id.to_string()))
        })
        .await
    }
}

#[async_trait]
impl Webhooks for EmbeddedStore {
    async fn create_subscription(&self, subscription: &Subscription) -> StoreResult<Subscription> {
        let sub = subscription.clone();
        let filter = serde_json::to_string(&sub.filter)
            .map_err(|e| StoreError::internal(format!("filter: {e}")))?;
        let sealer = self.sealer.clone();
        let sealed = sealer.seal(sub.id, &sub.secret);
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            tx.execute(
                "INSERT OR IGNORE INTO webhooks (id, brand_id, url, filter, description, status, secret, \
                 created_at, progress_every_seconds, rate_limit_per_sec) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    sub.id.to_string(),
                    sub.brand_id.to_string(),
                    sub.url.as_str(),
                    filter,
                    sub.description,
                    sub.status.as_str(),
                    sealed,
                    to_ms(sub.created_at),
                    sub.progress_every_seconds,
                    sub.rate_limit_per_sec,
                ],
            )
            .map_err(sql)?;
            let stored = load_subscription(&tx, &sub.id.to_string(), &sealer)?
                .ok_or_else(|| StoreError::internal("subscription vanished"))?;
            tx.commit().map_err(sql)?;
            Ok(stored)
        })
        .await
    }

    async fn get_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        let sealer = self.sealer.clone();
        self.read(move |conn| load_subscription(conn, &id.to_string(), &sealer))
            .await
    }

    async fn page_brand_subscriptions(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Subscription>> {
        // Position: "{created_at:020}:{id}", newest first.
        let before = after
            .map(|c| c.position().to_owned())
            .unwrap_or_else(|| "~".to_owned());
        let sealer = self.sealer.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM webhooks WHERE brand_id = ?1 \
                     AND printf('%020d:%s', created_at, id) < ?2 \
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(
                    params![brand.to_string(), before, limit as i64 + 1],
                    |row| subscription_from_row(row, &sealer),
                )
                .map_err(sql)?;
            let mut found = Vec::new();
            for row in rows {
                found.push(row.map_err(sql)??);
            }
            Ok(page_of(found, limit, |s| {
                format!("{:020}:{}", to_ms(s.created_at), s.id)
            }))
        })
        .await
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> StoreResult<bool> {
        self.write(move |conn| {
            conn.execute("DELETE FROM webhooks WHERE id = ?1", [id.to_string()])
                .map(|n| n == 1)
                .map_err(sql)
        })
        .await
    }

    async fn rotate_secret(
        &self,
        id: SubscriptionId,
        secret: &WebhookSecret,
        previous_until: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>> {
        let sealer = self.sealer.clone();
        let sealed = sealer.seal(id, secret);
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            tx.execute(
                "UPDATE webhooks SET previous_secret = secret, previous_secret_until = ?2, secret = ?3 \
                 WHERE id = ?1",
                params![id.to_string(), to_ms(previous_until), sealed],
            )
            .map_err(sql)?;
            let stored = load_subscription(&tx, &id.to_string(), &sealer)?;
            tx.commit().map_err(sql)?;
            Ok(stored)
        })
        .await
    }

    async fn disable_subscription(&self, id: SubscriptionId, reason: &str) -> StoreResult<()> {
        let reason = reason.to_owned();
        self.write(move |conn| {
            conn.execute(
                "UPDATE webhooks SET status = 'disabled', disabled_reason = ?2 WHERE id = ?1",
                params![id.to_string(), reason],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }

    async fn enable_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        let sealer = self.sealer.clone();
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            tx.execute(
                "UPDATE webhooks SET status = 'active', disabled_reason = NULL, \
                 failing_since = NULL WHERE id = ?1",
                [id.to_string()],
            )
            .map_err(sql)?;
            let stored = load_subscription(&tx, &id.to_string(), &sealer)?;
            tx.commit().map_err(sql)?;
            Ok(stored)
        })
        .await
    }

    async fn record_failing(
        &self,
        id: SubscriptionId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            tx.execute(
                "UPDATE webhooks SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL",
                params![id.to_string(), to_ms(at)],
            )
            .map_err(sql)?;
            let since: Option<Option<i64>> = tx
                .query_row(
                    "SELECT failing_since FROM webhooks WHERE id = ?1",
                    [id.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(since.flatten().map(from_ms))
        })
        .await
    }

    async fn clear_failing(&self, id: SubscriptionId) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE webhooks SET failing_since = NULL WHERE id = ?1",
                [id.to_string()],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }

    async fn take_send_slot(
        &self,
        id: SubscriptionId,
        now_us: i64,
        spacing_us: i64,
        max_ahead_us: i64,
    ) -> StoreResult<Option<SendSlot>> {
        // One write transaction: read and move the slot together.
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let stored: Option<Option<i64>> = tx
                .query_row(
                    "SELECT next_send_at FROM webhooks WHERE id = ?1",
                    [id.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql)?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            let slot = SendSlot::plan(stored, now_us, spacing_us, max_ahead_us);
            if let SendSlot::At { next, .. } = slot {
                tx.execute(
                    "UPDATE webhooks SET next_send_at = ?2 WHERE id = ?1",
                    params![id.to_string(), next],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Ok(Some(slot))
        })
        .await
    }

    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<Delivery> {
        let d = delivery.clone();
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            tx.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (id, subscription_id, event_id, event_type, job_id, \
                 brand_id, body, status, attempts, next_attempt_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    d.id.to_string(),
                    d.subscription_id.to_string(),
                    d.event_id.to_string(),
                    d.event_type.as_str(),
                    d.job_id.map(|j| j.to_string()).unwrap_or_default(),
                    d.brand_id.to_string(),
                    d.body,
                    d.status.as_str(),
                    d.attempts,
                    d.next_attempt_at.map(to_ms),
                    to_ms(d.created_at),
                ],
            )
            .map_err(sql)?;
            let stored = load_delivery(&tx, &d.id.to_string())?
                .ok_or_else(|| StoreError::internal("delivery vanished"))?;
            tx.commit().map_err(sql)?;
            Ok(stored)
        })
        .await
    }

    async fn get_delivery(
        &self,
        subscription: SubscriptionId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        let found = self
            .read(move |conn| load_delivery(conn, &id.to_string()))
            .await?;
        Ok(found.filter(|d| d.subscription_id == subscription))
    }

    async fn update_delivery(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
    ) -> StoreResult<bool> {
        let d = delivery.clone();
        self.write(move |conn| {
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?3, attempts = ?4, first_attempt_at = ?5, \
                 last_attempt_at = ?6, last_status_code = ?7, last_error = ?8, next_attempt_at = ?9 \
                 WHERE id = ?1 AND attempts = ?2",
                params![
                    d.id.to_string(),
                    expected_attempts,
                    d.status.as_str(),
                    d.attempts,
                    d.first_attempt_at.map(to_ms),
                    d.last_attempt_at.map(to_ms),
                    d.last_status_code,
                    d.last_error,
                    d.next_attempt_at.map(to_ms),
                ],
            )
            .map(|n| n == 1)
            .map_err(sql)
        })
        .await
    }

    async fn page_subscription_deliveries(
        &self,
        subscription: SubscriptionId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>> {
        self.page_deliveries("subscription_id", subscription.to_string(), after, limit)
            .await
    }

    async fn page_job_deliveries(
        &self,
        job: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>> {
        self.page_deliveries("job_id", job.to_string(), after, limit)
            .await
    }

    async fn overdue_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE status = 'pending' AND next_attempt_at < ?1 ORDER BY next_attempt_at LIMIT ?2"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![to_ms(before), limit as i64], delivery_from_row)
                .map_err(sql)?;
            let mut found = Vec::new();
            for row in rows {
                found.push(row.map_err(sql)??);
            }
            Ok(found)
        })
        .await
    }

    async fn record_event(&self, event: &Event) -> StoreResult<()> {
        let body = serde_json::to_string(event)
            .map_err(|e| StoreError::internal(format!("event: {e}")))?;
        let (brand, at, id) = (
            event.brand_id().to_string(),
            to_ms(event.occurred_at()),
            event.event_id().to_string(),
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO webhook_events (brand_id, occurred_at, event_id, body) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(sql)?
            .execute(params![brand, at, id, body])
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }

    async fn page_brand_events(
        &self,
        brand: BrandId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Event>> {
        // Position: "{occurred_at:020}:{event_id}", oldest first.
        let after = after.map(|c| c.position().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT occurred_at, event_id, body FROM webhook_events WHERE brand_id = ?1 \
                     AND occurred_at >= ?2 AND occurred_at < ?3 \
                     AND printf('%020d:%s', occurred_at, event_id) > ?4 \
                     ORDER BY occurred_at, event_id LIMIT ?5",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(
                    params![
                        brand.to_string(),
                        to_ms(since),
                        to_ms(until),
                        after,
                        limit as i64 + 1
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    },
                )
                .map_err(sql)?;
            let mut found = Vec::new();
            for row in rows {
                let (at, id, body) = row.map_err(sql)?;
                let value = serde_json::from_str(&body)
                    .map_err(|e| StoreError::internal(format!("stored event {id}: {e}")))?;
                found.push((format!("{at:020}:{id}"), Event::from_json(value)?));
            }
            let page = page_of(found, limit, |(position, _)| position.clone());
            Ok(Page {
                items: page.items.into_iter().map(|(_, e)| e).collect(),
                next: page.next,
            })
        })
        .await
    }
}
