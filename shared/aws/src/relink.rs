//! `bulklink migrate-links`: moves one offer's links to another number of shards, online.
//!
//! 1. The offer item is marked moving (`linkShardsTo`, `movingSince`), on condition that no
//!    other move is under way. From then on every link operation writes a link only to its
//!    new key, on condition that its old key holds none, and reads both (`items::Layout`).
//! 2. The mover waits `grace` after `movingSince`: an operation that read the offer's
//!    layout before the move began (a chunk reads it once, and lives at most its visibility
//!    timeout) has ended by then, so nothing writes to an old key unchecked any more.
//! 3. Each item under the old layout's keys (a link, or an unlink's or a closing's mark) is
//!    put at its new key and deleted from its old one in one transaction, the delete on
//!    condition that the item is still what was read; an item already at its new key
//!    (written there during the move) is newer, and the old one only goes.
//! 4. Once the old keys hold nothing, the offer's `linkShards` becomes the new count.
//!
//! A move stopped at any point (kill -9) is resumed by running the same command again.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use serde::Serialize;

use super::items::*;
use super::sdk_error::{cancellation, classify, condition_failed, retryable_cancel};
use super::{AwsClients, AwsNames};
use crate::clock::Clock;
use crate::config::MAX_LINK_SHARDS;
use crate::domain::{LocationId, OfferId};
use crate::error::{StoreError, StoreResult};

/// What a move did.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Migrated {
    pub offer_id: OfferId,
    pub from: u16,
    pub to: u16,
    /// Items (links and the marks left in links' places) moved by this run.
    pub moved: u64,
}

/// Attributes an item at a link's key may carry; its move is conditional on all of them.
const LINK_ATTRIBUTES: [&str; 4] = ["linkedBy", "linkedAt", "unlinkedBy", "closed"];

/// Items read from an old key at a time.
const PAGE: i32 = 100;

/// Passes over the old keys before the mover gives up finding them empty.
const PASSES: usize = 3;

/// Tries of one item's move when others keep changing it.
const ATTEMPTS: usize = 8;

/// Moves `offer`'s links to `to` shards (see the module), waiting `grace` after the move
/// began before it reads the old keys; resumes a move to `to` that was stopped.
pub async fn migrate_links(
    clients: &AwsClients,
    names: &AwsNames,
    clock: &Clock,
    offer: OfferId,
    to: u16,
    grace: Duration,
) -> StoreResult<Migrated> {
    if to == 0 || to > MAX_LINK_SHARDS {
        return Err(StoreError::Invalid(format!(
            "--shards must be 1..={MAX_LINK_SHARDS}, not {to}"
        )));
    }
    let mover = Mover {
        ddb: &clients.dynamodb,
        table: &names.catalog_table,
        offer,
    };
    let (from, since) = mover.begin(to, clock).await?;
    if from == to {
        return Ok(Migrated {
            offer_id: offer,
            from,
            to,
            moved: 0,
        });
    }
    let ready = since + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let wait = (ready - clock.now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let mut moved = 0;
    for pass in 0.. {
        let mut found = 0;
        for pk in link_pks(offer, from) {
            let (n, m) = mover.empty(&pk, to).await?;
            found += n;
            moved += m;
        }
        if found == 0 {
            break;
        }
        if pass + 1 == PASSES {
            return Err(StoreError::unavailable(format!(
                "offer {offer}'s old link keys still held {found} items after {PASSES} passes; \
                 run migrate-links again"
            )));
        }
    }
    mover.finish(to).await?;
    Ok(Migrated {
        offer_id: offer,
        from,
        to,
        moved,
    })
}

struct Mover<'a> {
    ddb: &'a aws_sdk_dynamodb::Client,
    table: &'a str,
    offer: OfferId,
}

impl Mover<'_> {
    /// Marks the offer moving to `to` (or finds it so): the count it moves from and when the
    /// move began; `(to, _)` if its links are already there.
    async fn begin(
        &self,
        to: u16,
        clock: &Clock,
    ) -> StoreResult<(u16, chrono::DateTime<chrono::Utc>)> {
        for _ in 0..ATTEMPTS {
            let item = self
                .get(key(offer_pk(self.offer), OFFER_SK))
                .await?
                .ok_or_else(|| {
                    StoreError::Invalid(format!("offer {} does not exist", self.offer))
                })?;
            let layout = Layout::of(&item)?;
            match layout.moving_to {
                Some(moving) if moving == to => {
                    let since = match item.get("movingSince") {
                        Some(AttributeValue::N(ms)) => ms.parse().ok(),
                        _ => None,
                    }
                    .map(from_ms)
                    .unwrap_or_else(|| clock.now());
                    return Ok((layout.shards, since));
                }
                Some(moving) => {
                    return Err(StoreError::Conflict(format!(
                        "offer {}'s links are moving to {moving} shards; finish that first \
                         (--shards {moving})",
                        self.offer
                    )))
                }
                None if layout.shards == to => return Ok((to, clock.now())),
                None => {}
            }
            let now = clock.now();
            let result = self
                .ddb
                .update_item()
                .table_name(self.table)
                .set_key(Some(key(offer_pk(self.offer), OFFER_SK)))
                .update_expression("SET linkShardsTo = :to, movingSince = :now")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(linkShardsTo)")
                .expression_attribute_values(":to", n(to))
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok((layout.shards, now)),
                // Another move began meanwhile: read it.
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {}
                Err(e) => return Err(classify("UpdateItem", e)),
            }
        }
        Err(StoreError::unavailable(
            "the offer kept changing; run migrate-links again",
        ))
    }

    /// Moves every item under one old partition key: (items found, items moved).
    async fn empty(&self, pk: &str, to: u16) -> StoreResult<(u64, u64)> {
        let (mut found, mut moved) = (0, 0);
        let mut after = "LOC#".to_owned();
        loop {
            let page = self
                .ddb
                .query()
                .table_name(self.table)
                .key_condition_expression("pk = :p AND sk > :after")
                .expression_attribute_values(":p", s(pk))
                .expression_attribute_values(":after", s(after.clone()))
                .consistent_read(true)
                .limit(PAGE)
                .send()
                .await
                .map_err(|e| classify("Query", e))?;
            let items = page.items.unwrap_or_default();
            for item in items {
                let Some(AttributeValue::S(sk)) = item.get("sk").cloned() else {
                    return Err(StoreError::internal("a link item without a sort key"));
                };
                if !sk.starts_with("LOC#") {
                    continue;
                }
                found += 1;
                moved += u64::from(self.move_one(item, to).await?);
                after = sk;
            }
            if page.last_evaluated_key.is_none() {
                return Ok((found, moved));
            }
        }
    }

    /// Moves one item from its old key to its new one: whether it was moved (false: the new
    /// key already held a newer one, and the old one was only deleted; or it was gone).
    async fn move_one(&self, mut item: Item, to: u16) -> StoreResult<bool> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let pause = rand::random_range(0..=(10u64 << attempt.min(6)));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let old_key = key(string(&item, "pk")?, &string(&item, "sk")?);
            let location: LocationId = string(&item, "sk")?.trim_start_matches("LOC#").parse()?;
            let mut moved = item.clone();
            moved.extend(link_key(self.offer, to, location));
            let put = Put::builder()
                .table_name(self.table)
                .set_item(Some(moved))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))?;
            let delete = unchanged_delete(self.table, old_key.clone(), &item)?;
            let result = self
                .ddb
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().delete(delete).build())
                .send()
                .await;
            let Err(e) = result else { return Ok(true) };
            let reasons = cancellation(e)?;
            if condition_failed(reasons.get(1)) {
                // Changed since read (a link made or removed at its old key): read it again.
                match self.get(old_key).await? {
                    Some(now) => item = now,
                    None => return Ok(false),
                }
                continue;
            }
            if condition_failed(reasons.first()) {
                // Written at its new key during the move: newer than what is left at the old
                // one, which can then only be a mark (a link at both would break the move's
                // rule that a link is written new only while the old key holds none).
                if item.contains_key("linkedBy") {
                    let new = self.get(link_key(self.offer, to, location)).await?;
                    return Err(StoreError::internal(format!(
                        "offer {} has a link to {location} at its old key and {new:?} at its \
                         new one; stopped the move",
                        self.offer
                    )));
                }
                let delete = unchanged_delete(self.table, old_key.clone(), &item)?;
                match self
                    .ddb
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().delete(delete).build())
                    .send()
                    .await
                {
                    Ok(_) => return Ok(false),
                    Err(e) => {
                        let reasons = cancellation(e)?;
                        if !condition_failed(reasons.first()) {
                            return Err(retryable_cancel(&reasons));
                        }
                        match self.get(old_key).await? {
                            Some(now) => item = now,
                            None => return Ok(false),
                        }
                        continue;
                    }
                }
            }
            if attempt + 1 == ATTEMPTS {
                return Err(retryable_cancel(&reasons));
            }
        }
        Err(StoreError::unavailable(format!(
            "a link of offer {} kept changing while it was moved; run migrate-links again",
            self.offer
        )))
    }

    /// The offer's links are all at their new keys: the move is over.
    async fn finish(&self, to: u16) -> StoreResult<()> {
        let result = self
            .ddb
            .update_item()
            .table_name(self.table)
            .set_key(Some(key(offer_pk(self.offer), OFFER_SK)))
            .update_expression("SET linkShards = :to REMOVE linkShardsTo, movingSince")
            .condition_expression("linkShardsTo = :to")
            .expression_attribute_values(":to", n(to))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Err(StoreError::Conflict(format!(
                    "offer {} is no longer moving to {to} shards (deleted, or finished by \
                     another run)",
                    self.offer
                )))
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn get(&self, key: Item) -> StoreResult<Option<Item>> {
        super::get_item(self.ddb, self.table, key).await
    }
}

fn string(item: &Item, name: &str) -> StoreResult<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(StoreError::internal(format!("a link item without {name}"))),
    }
}

/// Deletes the item at `at` on condition that it is still `item` (its link attributes).
fn unchanged_delete(table: &str, at: Item, item: &Item) -> StoreResult<Delete> {
    let mut condition = vec!["attribute_exists(pk)".to_owned()];
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    for (i, attribute) in LINK_ATTRIBUTES.iter().enumerate() {
        names.insert(format!("#a{i}"), (*attribute).to_owned());
        match item.get(*attribute) {
            Some(value) => {
                condition.push(format!("#a{i} = :v{i}"));
                values.insert(format!(":v{i}"), value.clone());
            }
            None => condition.push(format!("attribute_not_exists(#a{i})")),
        }
    }
    Delete::builder()
        .table_name(table)
        .set_key(Some(at))
        .condition_expression(condition.join(" AND "))
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values((!values.is_empty()).then_some(values))
        .build()
        .map_err(|e| StoreError::internal(e.to_string()))
}
