//! Queue port on SQLite, with SQS standard-queue semantics: at-least-once delivery, a
//! visibility timeout, a receive count, a fresh receipt per delivery, and redrive to a
//! dead-letter queue once a message has been received `max_receive_count` times.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use tokio::time::Instant;

use super::{sql, EmbeddedStore};
use crate::error::{StoreError, StoreResult};
use crate::ports::{
    check_delay, check_send_batch, Queue, ReceivedMessage, MAX_SEND_BATCH as MAX_BATCH,
};

/// How often an idle receiver looks again for messages whose visibility timeout ran out.
const IDLE_POLL: Duration = Duration::from_millis(25);

pub struct EmbeddedQueue {
    store: Arc<EmbeddedStore>,
    name: String,
    /// Dead-letter queue and the receive count after which messages move there.
    redrive: Option<(String, u32)>,
    visibility_timeout: Duration,
}

impl EmbeddedQueue {
    pub fn new(
        store: Arc<EmbeddedStore>,
        name: &str,
        redrive: Option<(String, u32)>,
        visibility_timeout: Duration,
    ) -> Self {
        EmbeddedQueue {
            store,
            name: name.to_owned(),
            redrive,
            visibility_timeout,
        }
    }

    async fn receive_now(&self, max: usize) -> StoreResult<Vec<ReceivedMessage>> {
        let clock = self.store.clock().clone();
        let name = self.name.clone();
        let redrive = self.redrive.clone();
        let visibility_ms = self.visibility_timeout.as_millis() as i64;
        let (messages, moved) = self
            .store
            .write(move |conn| {
                let tx = conn.savepoint().map_err(sql)?;
                let now = clock.now_ms();
                let mut messages = Vec::with_capacity(max);
                let mut moved = false;
                {
                    // Fair share: the group served least recently among those with a
                    // visible message goes first, for as many of its oldest messages as the
                    // receive takes; the next receive (or the rest of this one) goes to the
                    // next group.
                    let mut next_group = tx
                        .prepare_cached(
                            "SELECT g.grp FROM queue_groups g WHERE g.queue = ?1 AND EXISTS \
                             (SELECT 1 FROM queue_messages m WHERE m.queue = g.queue AND m.grp = g.grp \
                              AND m.visible_at <= ?2) ORDER BY g.served LIMIT 1",
                        )
                        .map_err(sql)?;
                    let mut oldest = tx
                        .prepare_cached(
                            "SELECT id, body, receive_count FROM queue_messages \
                             WHERE queue = ?1 AND grp = ?2 AND visible_at <= ?3 ORDER BY visible_at, id LIMIT ?4",
                        )
                        .map_err(sql)?;
                    let mut served = tx
                        .prepare_cached(
                            "UPDATE queue_groups SET served = \
                             (SELECT MAX(served) FROM queue_groups WHERE queue = ?1) + 1 \
                             WHERE queue = ?1 AND grp = ?2",
                        )
                        .map_err(sql)?;
                    let mut deliver = tx
                        .prepare_cached(
                            "UPDATE queue_messages SET visible_at = ?2, receive_count = ?3, receipt = ?4 \
                             WHERE id = ?1",
                        )
                        .map_err(sql)?;
                    let mut dead_letter = tx
                        .prepare_cached(
                            "UPDATE queue_messages SET queue = ?2, visible_at = ?3, receive_count = 0, \
                             receipt = NULL WHERE id = ?1",
                        )
                        .map_err(sql)?;
                    let mut dead_letter_group = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO queue_groups (queue, grp) VALUES (?1, ?2)",
                        )
                        .map_err(sql)?;
                    while messages.len() < max {
                        let group: Option<String> = next_group
                            .query_row(params![name, now], |row| row.get(0))
                            .optional()
                            .map_err(sql)?;
                        let Some(group) = group else { break };
                        let due: Vec<(i64, String, u32)> = oldest
                            .query_map(params![name, group, now, (max - messages.len()) as i64], |row| {
                                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                            })
                            .map_err(sql)?
                            .collect::<Result<_, _>>()
                            .map_err(sql)?;
                        served.execute(params![name, group]).map_err(sql)?;
                        for (id, body, count) in due {
                        let count = count + 1;
                        if let Some((dlq, max_receive)) = &redrive {
                            if count > *max_receive {
                                dead_letter.execute(params![id, dlq, now]).map_err(sql)?;
                                dead_letter_group.execute(params![dlq, group]).map_err(sql)?;
                                moved = true;
                                continue;
                            }
                        }
                        let receipt = format!("{id}:{count}:{:016x}", rand::random::<u64>());
                        deliver
                            .execute(params![id, now + visibility_ms, count, receipt])
                            .map_err(sql)?;
                        messages.push(ReceivedMessage {
                            message_id: id.to_string(),
                            receipt,
                            body,
                            receive_count: count,
                        });
                        }
                    }
                }
                tx.commit().map_err(sql)?;
                Ok((messages, moved))
            })
            .await?;
        if moved {
            if let Some((dlq, _)) = &self.redrive {
                self.store.notifier(dlq).notify_waiters();
            }
        }
        Ok(messages)
    }

    /// Inserts `bodies` into group `group`, visible after `delay_ms`.
    async fn insert(
        &self,
        group: Option<&str>,
        bodies: Vec<String>,
        delay_ms: i64,
    ) -> StoreResult<()> {
        let clock = self.store.clock().clone();
        let name = self.name.clone();
        let group = group.unwrap_or_default().to_owned();
        self.store
            .write(move |conn| {
                let tx = conn.savepoint().map_err(sql)?;
                {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO queue_groups (queue, grp) VALUES (?1, ?2)",
                    )
                    .map_err(sql)?
                    .execute(params![name, group])
                    .map_err(sql)?;
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO queue_messages (queue, grp, body, sent_at, visible_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(sql)?;
                    let now = clock.now_ms();
                    for body in &bodies {
                        insert
                            .execute(params![name, group, body, now, now + delay_ms])
                            .map_err(sql)?;
                    }
                }
                tx.commit().map_err(sql)
            })
            .await?;
        // A receiver that is waiting looks again (a delayed message, when it is visible).
        self.store.notifier(&self.name).notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_grouped(&self, group: Option<&str>, bodies: &[String]) -> StoreResult<()> {
        check_send_batch(bodies)?;
        if bodies.is_empty() {
            return Ok(());
        }
        self.insert(group, bodies.to_vec(), 0).await
    }

    async fn send_delayed(&self, body: &str, delay: Duration) -> StoreResult<()> {
        check_send_batch(std::slice::from_ref(&body.to_owned()))?;
        check_delay(delay)?;
        self.insert(None, vec![body.to_owned()], delay.as_millis() as i64)
            .await
    }

    async fn receive(&self, max: usize, wait: Duration) -> StoreResult<Vec<ReceivedMessage>> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = Instant::now() + wait;
        let notify = self.store.notifier(&self.name);
        loop {
            // Register interest before looking, so a send between the look and the wait
            // still wakes us.
            let sent = notify.notified();
            tokio::pin!(sent);
            sent.as_mut().enable();
            let messages = self.receive_now(max).await?;
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let nap = IDLE_POLL.min(deadline - now);
            let _ = tokio::time::timeout(nap, sent).await;
        }
    }

    async fn delete(&self, receipts: &[String]) -> StoreResult<()> {
        let mut keys = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            let id: i64 = receipt
                .split(':')
                .next()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| StoreError::Invalid(format!("'{receipt}' is not a receipt")))?;
            keys.push((id, receipt.clone()));
        }
        let name = self.name.clone();
        self.store
            .write(move |conn| {
                let tx = conn.savepoint().map_err(sql)?;
                {
                    // A receipt only deletes on the queue that issued it, as on SQS.
                    let mut delete = tx
                        .prepare_cached(
                            "DELETE FROM queue_messages WHERE id = ?1 AND receipt = ?2 AND queue = ?3",
                        )
                        .map_err(sql)?;
                    for (id, receipt) in &keys {
                        delete.execute(params![id, receipt, name]).map_err(sql)?;
                    }
                }
                tx.commit().map_err(sql)
            })
            .await
    }

    async fn depth(&self) -> StoreResult<u64> {
        let name = self.name.clone();
        self.store
            .read(move |conn| {
                conn.prepare_cached("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1")
                    .map_err(sql)?
                    .query_row([name], |row| row.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(sql)
            })
            .await
    }
}
