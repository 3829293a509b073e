//! Catalog port on DynamoDB. Linking a location is two conditional writes — mark the
//! location (it must exist in the brand) and put the Link item if absent, asking for the old
//! item on a lost condition so a replay by the same job is recognised (DESIGN §5.1). An
//! offer's Link items are spread over its `linkShards` partitions (`items::Layout`; during a
//! `migrate-links` move, over two layouts), every operation reading where from the offer.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};

use super::items::*;
use super::sdk_error::{cancellation, classify, condition_failed, retryable_cancel};
use super::{batch_get, get_item};
use crate::clock::Clock;
use crate::domain::{
    BrandId, DriftWatch, ImportMark, ImportedRow, JobId, Link, LinkOutcome, LinkedBy, Location,
    LocationAttributes, LocationChange, LocationFilter, LocationId, LocationStatus, MarkedUpsert,
    Offer, OfferId, OfferRule, OfferSchedule, RowOutcome, Upserted, WatchedRule,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Catalog, Cursor, LocationImports, Page};

/// The marks an import writes with a change: `changed` with one, `unchanged` (if any) on a
/// location the row leaves as it is.
#[derive(Clone, Copy, Debug)]
struct Marks {
    changed: ImportMark,
    unchanged: Option<ImportMark>,
}

/// What `change_marked` found and did.
enum Marked {
    Missing,
    Changed(Location),
    Unchanged(Location),
    /// The location carries a mark of the same import: what it says of this row.
    Seen(RowOutcome),
}

/// Reads and transactions a location's deletion tries before it gives up (503).
const DELETE_ATTEMPTS: usize = 5;

/// Reads of a location a change makes before giving up when others keep changing it.
const UPDATE_ATTEMPTS: usize = 5;

/// Most writes DynamoDB takes in one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// Per-location write pairs in flight at once within one chunk.
const LINKS_IN_FLIGHT: usize = 16;

/// What putting a link found.
enum PutLink {
    Made,
    Exists(LinkedBy),
    /// The location was closed while the link was being made.
    Closed,
}

/// Offers a location may carry and still be closed in one transaction (of 100 items: the
/// location, and per offer the link and the offer's count).
const MAX_OFFERS_ON_DELETE: usize = 49;

/// What a link's key must hold for the link to be put there: no link; no closing's mark
/// unless the location has been reopened since (`closed` a version before `:marked`, the
/// location's when this link marked it; a deletion's `true` never passes). An unlink's mark
/// is replaced.
const LINK_FREE: &str = "attribute_not_exists(linkedBy) AND (attribute_not_exists(closed) \
     OR (attribute_type(closed, :num) AND closed < :marked))";

/// What a link's put that lost its condition found at the keys it checked: a link (its
/// owner), else a closing's mark.
fn found_in_place(items: &[Option<Item>]) -> StoreResult<PutLink> {
    for item in items.iter().flatten() {
        if item.contains_key("linkedBy") {
            let link: LinkItem = from_item(item.clone())?;
            if let Some(owner) = link.owner()? {
                return Ok(PutLink::Exists(owner));
            }
        }
    }
    if items
        .iter()
        .flatten()
        .any(|item| item.contains_key("closed"))
    {
        return Ok(PutLink::Closed);
    }
    Err(StoreError::unavailable("link changed while written"))
}

/// Where an offer's links begin in its partitions (every link's sort key is `LOC#id`).
const LINKS_START: &str = "LOC#";

/// Items to ask each of `shards` link shards for, for a page of `limit` links merged from
/// them: its share and slack for the share's spread (about four standard deviations, so a
/// page comes out short about never), at most `limit`.
fn per_shard_limit(limit: usize, shards: u16) -> usize {
    if shards <= 1 {
        return limit.max(1);
    }
    let share = limit as f64 / f64::from(shards);
    let asked = (share + 4.0 * share.sqrt() + 8.0).ceil() as usize;
    asked.clamp(1, limit.max(1))
}

/// One page of links merged from each shard's Query page (its items in sort-key order, and
/// the sort key it stopped at if it has more): the first `limit` items in sort-key order
/// up to the first position some shard stopped at (past it, that shard may hold items the
/// others' would skip), and the position to go on after if there is more.
fn merge_shard_pages(
    pages: Vec<(Vec<Item>, Option<String>)>,
    limit: usize,
) -> (Vec<Item>, Option<String>) {
    let bound = pages
        .iter()
        .filter_map(|(_, stopped)| stopped.clone())
        .min();
    let sk_of = |item: &Item| match item.get("sk") {
        Some(AttributeValue::S(sk)) => sk.clone(),
        _ => String::new(),
    };
    let mut items: Vec<(String, Item)> = pages
        .into_iter()
        .flat_map(|(items, _)| items)
        .map(|item| (sk_of(&item), item))
        // Past the links of a one-shard offer's partition there is nothing of them.
        .filter(|(sk, _)| sk.starts_with(LINKS_START))
        .filter(|(sk, _)| bound.as_ref().is_none_or(|b| sk <= b))
        .collect();
    // Stable: of an item read at two keys (during a move) the one of the earlier page stays.
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.dedup_by(|later, earlier| later.0 == earlier.0);
    let more = bound.is_some() || items.len() > limit;
    items.truncate(limit);
    let next = match (more, items.last()) {
        (false, _) => None,
        (true, Some((sk, _))) => Some(sk.clone()),
        (true, None) => bound,
    };
    (items.into_iter().map(|(_, item)| item).collect(), next)
}

/// Linking marks the location: the offer joins its set (`offerIds`), `hasOffer` is true.
const MARK_LOCATION: &str = "SET hasOffer = :t ADD offerIds :o";
/// What a location must be to be linked: there, the brand's, and not closed.
const LINKABLE: &str = "attribute_exists(pk) AND brandId = :b AND attribute_not_exists(closed)";

fn offer_set(offer: OfferId) -> AttributeValue {
    AttributeValue::Ss(vec![offer.to_string()])
}

/// Before another attempt at a write that lost a race (a location changed, linked or
/// unlinked between its read and its write): a random pause of up to 10 ms × 2^attempt, so
/// that writers racing for one location do not keep colliding. None before the first.
async fn contention_pause(attempt: usize) {
    if attempt == 0 {
        return;
    }
    let most = 10u64 << attempt.min(6);
    let pause = rand::random_range(0..=most);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

/// The offers a location item carries (its `offerIds` set).
fn offers_of(item: &Item) -> Vec<String> {
    match item.get("offerIds") {
        Some(AttributeValue::Ss(set)) => set.clone(),
        _ => Vec::new(),
    }
}

/// The condition that a location's offer set is still exactly `offers`, and its values.
fn offers_unchanged(offers: &[String]) -> (String, HashMap<String, AttributeValue>) {
    if offers.is_empty() {
        return ("attribute_not_exists(offerIds)".to_owned(), HashMap::new());
    }
    let mut condition = "size(offerIds) = :n".to_owned();
    let mut values = HashMap::from([(":n".to_owned(), n(offers.len()))]);
    for (i, offer) in offers.iter().enumerate() {
        condition.push_str(&format!(" AND contains(offerIds, :o{i})"));
        values.insert(format!(":o{i}"), s(offer));
    }
    (condition, values)
}

pub struct DynamoCatalog {
    ddb: Client,
    table: String,
    clock: Clock,
    /// How many partitions a new offer's links are spread over.
    link_shards: u16,
}

impl DynamoCatalog {
    pub fn new(ddb: Client, table: &str, clock: Clock, link_shards: u16) -> Self {
        DynamoCatalog {
            ddb,
            table: table.to_owned(),
            clock,
            link_shards: link_shards.max(1),
        }
    }

    /// Where the offer keeps its links, from its item (one partition for an offer made
    /// before links were sharded, or one that is not there: it has no links). One strongly
    /// consistent read of the offer item per batch of link operations: the layout changes
    /// only by `migrate-links`, which waits out every operation that read the one before.
    async fn layout(&self, offer: OfferId) -> StoreResult<Layout> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(offer_pk(offer), OFFER_SK)))
            .projection_expression("linkShards, linkShardsTo")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        out.item.as_ref().map_or(Ok(Layout::ONE), Layout::of)
    }

    /// The layouts of several offers (by id as a location's offer set names them).
    async fn layouts(&self, offers: &[String]) -> StoreResult<HashMap<String, Layout>> {
        let keys = offers
            .iter()
            .map(|o| key(format!("OFFER#{o}"), OFFER_SK))
            .collect();
        let mut layouts = HashMap::new();
        for item in batch_get(&self.ddb, &self.table, keys).await? {
            if let Some(AttributeValue::S(pk)) = item.get("pk") {
                layouts.insert(
                    pk.trim_start_matches("OFFER#").to_owned(),
                    Layout::of(&item)?,
                );
            }
        }
        Ok(layouts)
    }

    /// The offer's link items (or marks) of `ids`, read consistently; during a move both
    /// keys of each, a link at either.
    async fn link_items_of(&self, offer: OfferId, ids: &[LocationId]) -> StoreResult<Vec<Item>> {
        let layout = self.layout(offer).await?;
        let mut keys = Vec::with_capacity(ids.len() * 2);
        for id in ids {
            keys.push(layout.key(offer, *id));
            keys.extend(layout.old_key(offer, *id));
        }
        batch_get(&self.ddb, &self.table, keys).await
    }

    /// The offer's link item for a location and, during a move, the one at its old key
    /// (strongly consistent): (new, old).
    async fn link_items_at(
        &self,
        offer: OfferId,
        layout: Layout,
        id: LocationId,
    ) -> StoreResult<(Option<Item>, Option<Item>)> {
        let new = self.get_key(layout.key(offer, id)).await?;
        let old = match layout.old_key(offer, id) {
            Some(old) => self.get_key(old).await?,
            None => None,
        };
        Ok((new, old))
    }

    async fn get(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        self.get_key(key(pk, sk)).await
    }

    async fn get_key(&self, key: Item) -> StoreResult<Option<Item>> {
        get_item(&self.ddb, &self.table, key).await
    }

    /// The put of an external id's claim, if no location of the brand has it.
    fn claim(
        &self,
        brand: BrandId,
        external_id: &str,
        id: LocationId,
    ) -> StoreResult<TransactWriteItem> {
        let mut item = key(external_pk(brand, external_id), EXTERNAL_SK);
        item.insert("locationId".to_owned(), s(id.to_string()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The location that holds the external id in the brand, from its claim.
    async fn claimed_by(
        &self,
        brand: BrandId,
        external_id: &str,
    ) -> StoreResult<Option<LocationId>> {
        let Some(claim) = self
            .get(external_pk(brand, external_id), EXTERNAL_SK)
            .await?
        else {
            return Ok(None);
        };
        match claim.get("locationId") {
            Some(AttributeValue::S(id)) => Ok(Some(id.parse()?)),
            _ => Err(StoreError::internal(format!(
                "the claim of externalId '{external_id}' names no location"
            ))),
        }
    }

    /// Reads the location, applies the change and writes it back on condition that no
    /// other change came between (its `version`); read again if one did. Closing an active
    /// location also takes it out of every offer it carries, in one transaction with the
    /// change (as a deletion does), on condition that its offers are still those read. The
    /// location after, and whether it changed; `None` if it does not exist.
    async fn change_location(
        &self,
        id: LocationId,
        change: &LocationChange,
    ) -> StoreResult<Option<(Location, bool)>> {
        Ok(match self.change_marked(id, change, None).await? {
            Marked::Missing => None,
            Marked::Changed(location) => Some((location, true)),
            Marked::Unchanged(location) => Some((location, false)),
            Marked::Seen(_) => {
                return Err(StoreError::internal("a change without a mark saw one"));
            }
        })
    }

    /// `change_location`, writing an import's mark with the change (`marks.changed`), or
    /// alone on an unchanged location (`marks.unchanged`), on the same condition; a location
    /// carrying a mark of the same job answers from it (`ImportMark::seen_by`) unwritten.
    async fn change_marked(
        &self,
        id: LocationId,
        change: &LocationChange,
        marks: Option<Marks>,
    ) -> StoreResult<Marked> {
        for attempt in 0..UPDATE_ATTEMPTS {
            contention_pause(attempt).await;
            let Some(item) = self.get(location_pk(id), LOCATION_SK).await? else {
                return Ok(Marked::Missing);
            };
            let offers = offers_of(&item);
            let read = from_item::<LocationItem>(item)?;
            let version = read.version;
            if let Some(marks) = &marks {
                let seen = read
                    .imported_by
                    .as_deref()
                    .map(ImportMark::from_attr)
                    .transpose()?
                    .and_then(|m| m.seen_by(marks.changed.job, marks.changed.line));
                if let Some(seen) = seen {
                    return Ok(Marked::Seen(seen));
                }
            }
            let location = read.into_location()?;
            let Some(mut changed) = location.changed(change, self.clock.now()) else {
                match marks.and_then(|m| m.unchanged) {
                    None => return Ok(Marked::Unchanged(location)),
                    Some(mark) => {
                        if self.put_mark(id, version, mark).await? {
                            return Ok(Marked::Unchanged(location));
                        }
                        continue;
                    }
                }
            };
            let closing = location.is_active() && !changed.is_active();
            let mut values = HashMap::from([
                (":a".to_owned(), s(changed.address.clone())),
                (
                    ":u".to_owned(),
                    n(changed.updated_at.map_or(0, |t| t.timestamp_millis())),
                ),
                (":g".to_owned(), s(brand_index_sk(id, changed.status))),
                (":one".to_owned(), n(1)),
            ]);
            let mut set = vec!["address = :a", "updatedAt = :u", "gsi1sk = :g"];
            let mut remove = Vec::new();
            if changed.attributes == LocationAttributes::default() {
                remove.push("attributes");
            } else {
                set.push("attributes = :m");
                values.insert(
                    ":m".to_owned(),
                    AttributeValue::M(to_item(&changed.attributes)?),
                );
            }
            if changed.is_active() {
                remove.push("closed");
            } else {
                set.push("closed = :t");
                values.insert(":t".to_owned(), AttributeValue::Bool(true));
            }
            if let Some(marks) = &marks {
                set.push("importedBy = :im");
                values.insert(":im".to_owned(), s(marks.changed.to_attr()));
            }
            let mut condition = match version {
                Some(v) => {
                    values.insert(":v".to_owned(), n(v));
                    "attribute_exists(pk) AND version = :v".to_owned()
                }
                None => "attribute_exists(pk) AND attribute_not_exists(version)".to_owned(),
            };
            if closing {
                set.push("hasOffer = :f");
                values.insert(":f".to_owned(), AttributeValue::Bool(false));
                remove.push("offerIds");
                let (unchanged, offer_values) = offers_unchanged(&offers);
                condition.push_str(" AND ");
                condition.push_str(&unchanged);
                values.extend(offer_values);
                changed.has_offer = false;
            }
            let mut update = format!("SET {}", set.join(", "));
            if !remove.is_empty() {
                update.push_str(&format!(" REMOVE {}", remove.join(", ")));
            }
            update.push_str(" ADD version :one");
            let written = if closing {
                // Links being made right now find the location closed at this version.
                let closed_at = n(version.unwrap_or(0) + 1);
                let write = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(location_pk(id), LOCATION_SK)))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?;
                let mut writes = vec![TransactWriteItem::builder().update(write).build()];
                writes.extend(self.leaving(id, &offers, closed_at).await?);
                self.transact(writes).await?
            } else {
                let result = self
                    .ddb
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(location_pk(id), LOCATION_SK)))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await;
                match result {
                    Ok(_) => true,
                    Err(SdkError::ServiceError(e))
                        if matches!(
                            e.err(),
                            UpdateItemError::ConditionalCheckFailedException(_)
                        ) =>
                    {
                        false
                    }
                    Err(e) => return Err(classify("UpdateItem", e)),
                }
            };
            if written {
                return Ok(Marked::Changed(changed));
            }
        }
        Err(StoreError::unavailable(format!(
            "location {id} kept changing while it was being updated; retry"
        )))
    }

    /// Creates locations (and their external ids' claims) all or none; with `mark`, each
    /// location carries it (an import's row).
    async fn create_marked(
        &self,
        locations: &[Location],
        mark: Option<ImportMark>,
    ) -> StoreResult<()> {
        if locations.is_empty() {
            return Ok(());
        }
        let items = locations
            .iter()
            .map(|location| {
                let mut item = LocationItem::of(location);
                item.imported_by = mark.map(|m| m.to_attr());
                to_item(&item)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut writes = Vec::with_capacity(locations.len() * 2);
        // What each write is (one entry a write): a location (its index) or the claim of
        // its external id.
        let mut what: Vec<(usize, bool)> = Vec::with_capacity(locations.len() * 2);
        for (i, item) in items.iter().enumerate() {
            what.push((i, false));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk)")
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))?;
            writes.push(TransactWriteItem::builder().put(put).build());
            if let Some(external_id) = &locations[i].external_id {
                writes.push(self.claim(locations[i].brand_id, external_id, locations[i].id)?);
                what.push((i, true));
            }
        }
        if writes.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Invalid(format!(
                "{} locations with external ids are more than one request can create at once",
                locations.len()
            )));
        }
        let Err(e) = self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        else {
            return Ok(());
        };
        let reasons = cancellation(e)?;
        let conflicts: Vec<usize> = (0..reasons.len())
            .filter(|i| condition_failed(reasons.get(*i)))
            .collect();
        if conflicts.is_empty() {
            return Err(retryable_cancel(&reasons));
        }
        // A retried request (or an SDK retry of an attempt that timed out after it was
        // applied) finds its own items. The batch is atomic: only when every item
        // conflicts, each with the location as sent, is the batch already done.
        let as_sent = |r: usize| -> StoreResult<bool> {
            let Some(old) = reasons[r].item() else {
                return Ok(false);
            };
            let (i, claim) = what[r];
            if claim {
                return Ok(old.get("locationId") == Some(&s(locations[i].id.to_string())));
            }
            let old = from_item::<LocationItem>(old.clone())?.into_location()?;
            Ok(old.same_as_sent(&locations[i]))
        };
        let mut ours = conflicts.len() == what.len();
        for &r in &conflicts {
            ours = ours && as_sent(r)?;
        }
        if ours {
            return Ok(());
        }
        let (i, claim) = what[conflicts[0]];
        let location = &locations[i];
        Err(StoreError::Conflict(match (&location.external_id, claim) {
            (Some(external_id), true) => {
                format!("a location with externalId '{external_id}' already exists")
            }
            _ => format!("location {} already exists", location.id),
        }))
    }

    /// The upsert by external id: the external id's claim, then the location — created (its
    /// claim in the same transaction), or changed on condition of the version read. With an
    /// import's `mark`, the mark goes in the same write (its outcome filled in), alone on an
    /// unchanged location, and a location carrying a mark of the same import answers from it.
    async fn upsert_marked(
        &self,
        location: &Location,
        mark: Option<ImportMark>,
    ) -> StoreResult<MarkedUpsert> {
        let Some(external_id) = location.external_id.as_deref() else {
            return Err(StoreError::Invalid("an upsert needs an external id".into()));
        };
        let with = |outcome| mark.map(|m| ImportMark { outcome, ..m });
        let marks = mark.map(|m| Marks {
            changed: ImportMark {
                outcome: RowOutcome::Updated,
                ..m
            },
            unchanged: with(RowOutcome::Unchanged),
        });
        for attempt in 0..UPDATE_ATTEMPTS {
            contention_pause(attempt).await;
            let Some(id) = self.claimed_by(location.brand_id, external_id).await? else {
                match self
                    .create_marked(std::slice::from_ref(location), with(RowOutcome::Created))
                    .await
                {
                    Ok(()) => {
                        return Ok(MarkedUpsert::Done(Box::new(Upserted::Created(
                            location.clone(),
                        ))))
                    }
                    // Made meanwhile (perhaps by this row's earlier delivery): read it.
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            let change = LocationChange::replacing_with(location);
            return Ok(match self.change_marked(id, &change, marks).await? {
                Marked::Changed(l) => MarkedUpsert::Done(Box::new(Upserted::Updated(l))),
                Marked::Unchanged(l) => MarkedUpsert::Done(Box::new(Upserted::Unchanged(l))),
                Marked::Seen(outcome) => MarkedUpsert::Seen(id, outcome),
                // A claim whose location was deleted as it was read: read again.
                Marked::Missing => continue,
            });
        }
        Err(StoreError::unavailable(format!(
            "the location with externalId '{external_id}' kept changing; retry"
        )))
    }

    /// Writes an import's mark alone, on condition that the location is still at `version`;
    /// false if it changed meanwhile.
    async fn put_mark(
        &self,
        id: LocationId,
        version: Option<u64>,
        mark: ImportMark,
    ) -> StoreResult<bool> {
        let mut update = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(location_pk(id), LOCATION_SK)))
            .update_expression("SET importedBy = :im")
            .expression_attribute_values(":im", s(mark.to_attr()));
        update = match version {
            Some(v) => update
                .condition_expression("attribute_exists(pk) AND version = :v")
                .expression_attribute_values(":v", n(v)),
            None => update
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(version)"),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    /// Sends a transaction: false if a condition failed (someone wrote between the read
    /// and this write), an error if it was cancelled for another reason.
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> StoreResult<bool> {
        let result = self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let reasons = cancellation(e)?;
                if reasons.iter().any(|r| condition_failed(Some(r))) {
                    Ok(false)
                } else {
                    Err(retryable_cancel(&reasons))
                }
            }
        }
    }

    /// The writes that take a location out of each of `offers` (its offer set as read):
    /// each link deleted with one off its offer's `locationsTotal`; where the offer is in the
    /// set but its link is not yet put (a job linking it right now), a `closed` mark in the
    /// link's place, which that put then finds (`mark`: the location's version once closed,
    /// or `true` for a deletion, which no later link passes).
    async fn leaving(
        &self,
        id: LocationId,
        offers: &[String],
        mark: AttributeValue,
    ) -> StoreResult<Vec<TransactWriteItem>> {
        if offers.len() > MAX_OFFERS_ON_DELETE {
            return Err(StoreError::Conflict(format!(
                "location {id} carries {} offers, more than the {MAX_OFFERS_ON_DELETE} one \
                 closing can leave at once; unlink some first",
                offers.len()
            )));
        }
        let layouts = self.layouts(offers).await?;
        let layout_of = |offer: &String| -> StoreResult<(OfferId, Layout)> {
            Ok((
                offer.parse()?,
                layouts.get(offer).copied().unwrap_or(Layout::ONE),
            ))
        };
        let mut keys = Vec::with_capacity(offers.len() * 2);
        for offer in offers {
            let (offer, layout) = layout_of(offer)?;
            keys.push(layout.key(offer, id));
            keys.extend(layout.old_key(offer, id));
        }
        // Where each offer's link is (its new key or, during a move, its old one).
        let mut linked: HashMap<String, Item> = HashMap::new();
        for item in batch_get(&self.ddb, &self.table, keys).await? {
            if item.contains_key("linkedBy") {
                if let Some(AttributeValue::S(pk)) = item.get("pk") {
                    let at = key(pk.clone(), &link_sk(id));
                    linked.insert(offer_of_link_pk(pk)?.to_string(), at);
                }
            }
        }
        let mut writes = Vec::with_capacity(offers.len() * 2);
        for offer_text in offers {
            let (offer, layout) = layout_of(offer_text)?;
            if let Some(link_key) = linked.remove(offer_text) {
                let unlink = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(link_key))
                    .condition_expression("attribute_exists(linkedBy)")
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?;
                let count = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(offer_pk(offer), OFFER_SK)))
                    .update_expression("ADD locationsTotal :minus")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":minus", n(-1))
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?;
                writes.push(TransactWriteItem::builder().delete(unlink).build());
                writes.push(TransactWriteItem::builder().update(count).build());
            } else {
                let mut closed = layout.key(offer, id);
                closed.insert("closed".to_owned(), mark.clone());
                let block = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(closed))
                    .condition_expression("attribute_not_exists(linkedBy)")
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?;
                writes.push(TransactWriteItem::builder().put(block).build());
                if let Some(old) = layout.old_key(offer, id) {
                    writes.push(self.no_link_at(old)?);
                }
            }
        }
        Ok(writes)
    }

    /// A transaction's check that a key holds no link (during a move, the old key of a link
    /// being written at its new one).
    fn no_link_at(&self, key: Item) -> StoreResult<TransactWriteItem> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression("attribute_not_exists(linkedBy)")
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Adds the offer to the location's offer set (`hasOffer` true) if it exists in `brand`
    /// and is active: its version then (0 before the first change), which the link's put
    /// compares with a closing's mark; `None` if it is not there to link. Idempotent: a set
    /// holds the offer once however often it is added.
    async fn mark_location(
        &self,
        id: LocationId,
        offer: OfferId,
        brand: BrandId,
    ) -> StoreResult<Option<u64>> {
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(location_pk(id), LOCATION_SK)))
            .update_expression(MARK_LOCATION)
            .condition_expression(LINKABLE)
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":o", offer_set(offer))
            .expression_attribute_values(":b", s(brand.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(
                match out.attributes.as_ref().and_then(|a| a.get("version")) {
                    Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
                        StoreError::internal(format!("location {id} has version '{v}'"))
                    })?,
                    _ => 0,
                },
            )),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    /// Puts the Link item if absent; on a lost condition, who owns the existing link (or
    /// that the location was closed or deleted while this link was being made: a mark
    /// left at a version after `marked`, the location's when this link marked it).
    async fn put_link(
        &self,
        offer: OfferId,
        layout: Layout,
        id: LocationId,
        by: LinkedBy,
        marked: u64,
    ) -> StoreResult<PutLink> {
        if layout.moving_to.is_some() {
            return self.put_link_moving(offer, layout, id, by, marked).await;
        }
        let item = to_item(&LinkItem::new(offer, layout, id, by, self.clock.now_ms()))?;
        let result = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(LINK_FREE)
            .expression_attribute_values(":num", s("N"))
            .expression_attribute_values(":marked", n(marked))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutLink::Made),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let PutItemError::ConditionalCheckFailedException(ccf) = e.into_err() else {
                    unreachable!("matched above")
                };
                let old = match ccf.item() {
                    Some(old) => old.clone(),
                    // Not every DynamoDB-compatible store returns ALL_OLD: read it instead.
                    None => self
                        .get_key(layout.key(offer, id))
                        .await?
                        .ok_or_else(|| StoreError::unavailable("link vanished while read"))?,
                };
                found_in_place(&[Some(old)])
            }
            Err(e) => Err(classify("PutItem", e)),
        }
    }

    /// `put_link` during a move: the link put at its new key on the same condition as
    /// ever, in one transaction with the same condition on its old key (where a link made
    /// before the move, or a closing's mark, may still be).
    async fn put_link_moving(
        &self,
        offer: OfferId,
        layout: Layout,
        id: LocationId,
        by: LinkedBy,
        marked: u64,
    ) -> StoreResult<PutLink> {
        let old = layout
            .old_key(offer, id)
            .ok_or_else(|| StoreError::internal("a move without an old key"))?;
        let values = HashMap::from([
            (":num".to_owned(), s("N")),
            (":marked".to_owned(), n(marked)),
        ]);
        let mut last = None;
        // The mover takes items from old keys to new in transactions of its own: one that
        // overlaps this one cancels it (TransactionConflict), and an item it moves between
        // this put and the read after it is found at its new key on a second look.
        for attempt in 0..UPDATE_ATTEMPTS {
            contention_pause(attempt).await;
            let item = to_item(&LinkItem::new(offer, layout, id, by, self.clock.now_ms()))?;
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(LINK_FREE)
                .set_expression_attribute_values(Some(values.clone()))
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))?;
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(old.clone()))
                .condition_expression(LINK_FREE)
                .set_expression_attribute_values(Some(values.clone()))
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))?;
            let result = self
                .ddb
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().condition_check(check).build())
                .send()
                .await;
            let Err(e) = result else {
                return Ok(PutLink::Made);
            };
            let reasons = cancellation(e)?;
            if !reasons.iter().any(|r| condition_failed(Some(r))) {
                last = Some(retryable_cancel(&reasons));
                continue;
            }
            let (new, old) = self.link_items_at(offer, layout, id).await?;
            match found_in_place(&[new, old]) {
                Ok(found) => return Ok(found),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::unavailable("link changed while written")))
    }

    async fn link_one(
        &self,
        offer: OfferId,
        layout: Layout,
        brand: BrandId,
        by: LinkedBy,
        id: LocationId,
    ) -> StoreResult<LinkOutcome> {
        let Some(marked) = self.mark_location(id, offer, brand).await? else {
            return Ok(LinkOutcome::NotFound);
        };
        Ok(match self.put_link(offer, layout, id, by, marked).await? {
            PutLink::Made => LinkOutcome::Linked,
            // Only a job is one actor across deliveries; two direct links are two requests.
            PutLink::Exists(owner) if owner == by && matches!(by, LinkedBy::Job(_)) => {
                LinkOutcome::Linked
            }
            PutLink::Exists(_) => LinkOutcome::AlreadyLinked,
            PutLink::Closed => LinkOutcome::NotFound,
        })
    }

    /// One attempt at deleting a location (see `delete_location`): `Ok(None)` if it lost a
    /// race and should be tried again.
    async fn try_delete_location(
        &self,
        id: LocationId,
    ) -> StoreResult<Option<Option<Vec<OfferId>>>> {
        let Some(item) = self.get(location_pk(id), LOCATION_SK).await? else {
            return Ok(Some(None));
        };
        let offers = offers_of(&item);
        // The location goes only if its offers are still exactly these.
        let (unchanged, values) = offers_unchanged(&offers);
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(location_pk(id), LOCATION_SK)))
            .condition_expression(format!("attribute_exists(pk) AND {unchanged}"))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let mut writes = vec![TransactWriteItem::builder().delete(delete).build()];
        let location = from_item::<LocationItem>(item)?.into_location()?;
        if let Some(external_id) = &location.external_id {
            // Its external id is free again.
            let release = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(
                    external_pk(location.brand_id, external_id),
                    EXTERNAL_SK,
                )))
                .condition_expression("locationId = :l")
                .expression_attribute_values(":l", s(id.to_string()))
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))?;
            writes.push(TransactWriteItem::builder().delete(release).build());
        }
        writes.extend(
            self.leaving(id, &offers, AttributeValue::Bool(true))
                .await?,
        );
        if !self.transact(writes).await? {
            return Ok(None); // a job linked or unlinked it meanwhile: read it again
        }
        offers
            .iter()
            .map(|o| o.parse::<OfferId>().map_err(StoreError::from))
            .collect::<StoreResult<Vec<_>>>()
            .map(|o| Some(Some(o)))
    }

    /// Removes one link (DESIGN: unlinking): replace the Link item by the mark that `by`
    /// removed it, then take the offer out of the location's set, and clear `hasOffer` if
    /// the set is empty and still is when written. A replay finds its own mark and does the
    /// location steps again (they are idempotent).
    async fn unlink_one(
        &self,
        offer: OfferId,
        layout: Layout,
        by: JobId,
        only_by: Option<JobId>,
        id: LocationId,
    ) -> StoreResult<LinkOutcome> {
        // During a move the link is at its new key or still at its old one; the mover may
        // take it from old to new between two tries (never back), so new, old, new again.
        let mut keys = vec![layout.key(offer, id)];
        if let Some(old) = layout.old_key(offer, id) {
            keys.push(old);
            keys.push(layout.key(offer, id));
        }
        let mut mine = false;
        let mut done = false;
        for at in keys {
            match self.try_unlink(at, by, only_by).await? {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(Some(found)) => mine |= from_item::<LinkItem>(found)?.remover()? == Some(by),
                Err(None) => {}
            }
        }
        if !done && !mine {
            return Ok(LinkOutcome::NotLinked);
        }
        self.unmark_location(id, offer).await?;
        Ok(LinkOutcome::Unlinked)
    }

    /// Replaces the link at `at` by the mark that `by` removed it (if it is a link, and with
    /// `only_by` one that job made); on a lost condition, what is there.
    async fn try_unlink(
        &self,
        at: Item,
        by: JobId,
        only_by: Option<JobId>,
    ) -> StoreResult<Result<(), Option<Item>>> {
        let mut condition = "attribute_exists(linkedBy)".to_owned();
        let mut request = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(at.clone()))
            .update_expression("SET unlinkedBy = :j REMOVE linkedBy, linkedAt")
            .expression_attribute_values(":j", s(by.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(undone) = only_by {
            condition.push_str(" AND linkedBy = :by");
            request =
                request.expression_attribute_values(":by", s(LinkedBy::Job(undone).to_attr()));
        }
        match request.condition_expression(condition).send().await {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                let UpdateItemError::ConditionalCheckFailedException(ccf) = e.into_err() else {
                    unreachable!("matched above")
                };
                Ok(Err(match ccf.item() {
                    Some(old) => Some(old.clone()),
                    None => self.get_key(at).await?,
                }))
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    /// One location brought to what the rule wants of it: read the location (its
    /// `version`) and the link, then write on condition that the location is still that
    /// version — a change to it between the read and the write makes this read again, so
    /// a decision is never written against a location that has changed since.
    async fn follow_one(
        &self,
        rule: &OfferRule,
        layout: Layout,
        id: LocationId,
        by: LinkedBy,
    ) -> StoreResult<LinkOutcome> {
        let offer = rule.offer_id;
        for attempt in 0..UPDATE_ATTEMPTS {
            contention_pause(attempt).await;
            let Some(item) = self.get(location_pk(id), LOCATION_SK).await? else {
                return Ok(LinkOutcome::NotFound);
            };
            let offers = offers_of(&item);
            let read = from_item::<LocationItem>(item)?;
            let version = read.version;
            let location = read.into_location()?;
            if location.brand_id != rule.brand_id {
                return Ok(LinkOutcome::NotFound);
            }
            // The link (during a move at its new key or still at its old one), or the
            // marks of the last removal.
            let (new, old) = self.link_items_at(offer, layout, id).await?;
            let mut owner = None;
            let mut remover = None;
            let mut link_at = layout.key(offer, id);
            for (at, item) in [
                (Some(layout.key(offer, id)), new),
                (layout.old_key(offer, id), old),
            ] {
                let (Some(at), Some(item)) = (at, item) else {
                    continue;
                };
                let item = from_item::<LinkItem>(item)?;
                if owner.is_none() {
                    if let Some(found) = item.owner()? {
                        owner = Some(found);
                        link_at = at;
                    }
                }
                remover = remover.or(item.remover()?);
            }
            let job = match by {
                LinkedBy::Job(job) => Some(job),
                _ => None,
            };
            let mut values = HashMap::from([(":o".to_owned(), offer_set(offer))]);
            let mut condition = "attribute_exists(pk)".to_owned();
            match version {
                Some(v) => {
                    condition.push_str(" AND version = :v");
                    values.insert(":v".to_owned(), n(v));
                }
                None => condition.push_str(" AND attribute_not_exists(version)"),
            }
            let count = |delta: i64| {
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(offer_pk(offer), OFFER_SK)))
                    .update_expression("ADD locationsTotal :d")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":d", n(delta))
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))
            };
            let writes = match (rule.wants(&location), owner) {
                (true, Some(owner)) if job.is_some() && owner == by => {
                    return Ok(LinkOutcome::Linked)
                }
                (true, Some(_)) => return Ok(LinkOutcome::AlreadyLinked),
                (false, None) => {
                    if location.has_offer && offers.is_empty() {
                        // An earlier removal's last step (clearing `hasOffer`) never ran.
                        self.clear_has_offer(id).await?;
                    }
                    return Ok(if job.is_some() && remover == job {
                        LinkOutcome::Unlinked
                    } else {
                        LinkOutcome::NotLinked
                    });
                }
                (true, None) => {
                    values.insert(":t".to_owned(), AttributeValue::Bool(true));
                    let mark = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(location_pk(id), LOCATION_SK)))
                        .update_expression(MARK_LOCATION)
                        .condition_expression(format!(
                            "{condition} AND attribute_not_exists(closed)"
                        ))
                        .set_expression_attribute_values(Some(values))
                        .build()
                        .map_err(|e| StoreError::internal(e.to_string()))?;
                    let link = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(to_item(&LinkItem::new(
                            offer,
                            layout,
                            id,
                            by,
                            self.clock.now_ms(),
                        ))?))
                        .condition_expression("attribute_not_exists(linkedBy)")
                        .build()
                        .map_err(|e| StoreError::internal(e.to_string()))?;
                    let mut writes = vec![
                        TransactWriteItem::builder().update(mark).build(),
                        TransactWriteItem::builder().put(link).build(),
                        TransactWriteItem::builder().update(count(1)?).build(),
                    ];
                    if let Some(old) = layout.old_key(offer, id) {
                        writes.push(self.no_link_at(old)?);
                    }
                    writes
                }
                (false, Some(_)) => {
                    let unmark = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(location_pk(id), LOCATION_SK)))
                        .update_expression("DELETE offerIds :o")
                        .condition_expression(condition)
                        .set_expression_attribute_values(Some(values))
                        .build()
                        .map_err(|e| StoreError::internal(e.to_string()))?;
                    let link_key = link_at;
                    // A job leaves the mark that it removed the link, which a replay finds.
                    let unlink = match job {
                        Some(job) => TransactWriteItem::builder()
                            .update(
                                Update::builder()
                                    .table_name(&self.table)
                                    .set_key(Some(link_key))
                                    .update_expression(
                                        "SET unlinkedBy = :j REMOVE linkedBy, linkedAt",
                                    )
                                    .condition_expression("attribute_exists(linkedBy)")
                                    .expression_attribute_values(":j", s(job.to_string()))
                                    .build()
                                    .map_err(|e| StoreError::internal(e.to_string()))?,
                            )
                            .build(),
                        None => TransactWriteItem::builder()
                            .delete(
                                Delete::builder()
                                    .table_name(&self.table)
                                    .set_key(Some(link_key))
                                    .condition_expression("attribute_exists(linkedBy)")
                                    .build()
                                    .map_err(|e| StoreError::internal(e.to_string()))?,
                            )
                            .build(),
                    };
                    vec![
                        TransactWriteItem::builder().update(unmark).build(),
                        unlink,
                        TransactWriteItem::builder().update(count(-1)?).build(),
                    ]
                }
            };
            let linking = rule.wants(&location);
            if self.transact(writes).await? {
                if linking {
                    return Ok(LinkOutcome::Linked);
                }
                if offers.len() <= 1 {
                    self.clear_has_offer(id).await?;
                }
                return Ok(LinkOutcome::Unlinked);
            }
        }
        Err(StoreError::unavailable(format!(
            "location {id} kept changing while offer {offer}'s rule was applied to it; retry"
        )))
    }

    /// `hasOffer` false if the location carries no offer (and still carries none when
    /// written: a link made meanwhile keeps it true).
    async fn clear_has_offer(&self, id: LocationId) -> StoreResult<()> {
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(location_pk(id), LOCATION_SK)))
            .update_expression("SET hasOffer = :f")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(offerIds)")
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(())
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn unmark_location(&self, id: LocationId, offer: OfferId) -> StoreResult<()> {
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(location_pk(id), LOCATION_SK)))
            .update_expression("DELETE offerIds :o")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":o", offer_set(offer))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let left = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                return Ok(()); // the location is gone
            }
            Err(e) => return Err(classify("UpdateItem", e)),
        };
        if left.contains_key("offerIds") {
            return Ok(());
        }
        // An empty set is removed by DynamoDB; a link of another offer made since adds it back,
        // and then the condition keeps `hasOffer` true.
        self.clear_has_offer(id).await
    }

    /// Link items of an offer (and the marks left in links' places) in location-id order,
    /// one page: a Query of each of its link shards for the items after the cursor's
    /// position, merged. Each shard is asked for its share of the page and some slack;
    /// the page ends at the first position some shard may have more before, so it is
    /// exact however the ids fall (a page may come out short, never out of order). The
    /// cursor is that one position (`{"sk": "LOC#id"}`; a cursor of the release before
    /// names the same `sk`).
    async fn link_items(
        &self,
        offer: OfferId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<(Vec<LinkItem>, Option<Cursor>)> {
        let after = match start_key(after)? {
            None => LINKS_START.to_owned(),
            Some(mut key) => match key.remove("sk") {
                Some(AttributeValue::S(sk)) if sk.starts_with(LINKS_START) => sk,
                _ => return Err(StoreError::Invalid("cursor is not valid".into())),
            },
        };
        let layout = self.layout(offer).await?;
        let query = |pk: String, per_shard: usize, consistent: bool| {
            self.ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND sk > :after")
                .expression_attribute_values(":p", s(pk))
                .expression_attribute_values(":after", s(after.clone()))
                .limit(per_shard.min(i32::MAX as usize) as i32)
                .consistent_read(consistent)
                .send()
        };
        // During a move the new layout's shards are read after the old one's, strongly
        // consistently: a link the mover takes from old to new in between is then read
        // twice (once kept), never missed.
        let moving = layout.moving_to.is_some();
        let mut read = Vec::new();
        for shards in [Some(layout.shards), layout.moving_to]
            .into_iter()
            .flatten()
        {
            let per_shard = per_shard_limit(limit, shards);
            read.push(
                futures::future::try_join_all(
                    link_pks(offer, shards)
                        .into_iter()
                        .map(|pk| query(pk, per_shard, moving)),
                )
                .await
                .map_err(|e| classify("Query", e))?,
            );
        }
        // The new layout's pages first: of an item read at both keys, its new one is kept.
        let pages = read
            .into_iter()
            .rev()
            .flatten()
            .map(|page| {
                let stopped = match page.last_evaluated_key.and_then(|mut k| k.remove("sk")) {
                    None => None,
                    Some(AttributeValue::S(sk)) => Some(sk),
                    Some(_) => {
                        return Err(StoreError::internal("a link's sort key is not a string"))
                    }
                };
                Ok((page.items.unwrap_or_default(), stopped))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let (items, next) = merge_shard_pages(pages, limit);
        let next = next
            .map(|sk| cursor_of(Some(HashMap::from([("sk".to_owned(), s(sk))]))))
            .transpose()?
            .flatten();
        let links = items
            .into_iter()
            .map(from_item::<LinkItem>)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((links, next))
    }

    /// `SET name = value` on an existing item; the item after, or `None` if it is absent.
    async fn update_attribute(
        &self,
        pk: String,
        sk: &str,
        name: &str,
        value: &str,
    ) -> StoreResult<Option<Item>> {
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .update_expression("SET #a = :v")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", s(value))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.attributes),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn query_page(
        &self,
        index: Option<&str>,
        key_condition: &str,
        values: HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<(Vec<Item>, Option<Cursor>)> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(key_condition)
            .set_expression_attribute_values(Some(values))
            .set_exclusive_start_key(start_key(after)?)
            .limit(limit.min(i32::MAX as usize) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        Ok((
            out.items.unwrap_or_default(),
            cursor_of(out.last_evaluated_key)?,
        ))
    }
}

#[async_trait]
impl Catalog for DynamoCatalog {
    async fn create_offer(&self, offer: &Offer) -> StoreResult<()> {
        let item = to_item(&OfferItem::of(offer, self.link_shards))?;
        match self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Err(StoreError::Conflict(format!(
                    "offer {} already exists",
                    offer.id
                )))
            }
            Err(e) => Err(classify("PutItem", e)),
        }
    }

    async fn get_offer(&self, id: OfferId) -> StoreResult<Option<Offer>> {
        self.get(offer_pk(id), OFFER_SK)
            .await?
            .map(|item| from_item::<OfferItem>(item)?.into_offer())
            .transpose()
    }

    /// The brand index's offer keys (`OFFER#id`, beside its locations' `LOC#…`), then the
    /// offers themselves (BatchGetItem: the index holds keys only).
    async fn page_brand_offers(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Offer>> {
        let values = HashMap::from([
            (":b".to_owned(), s(brand_key(brand))),
            (":p".to_owned(), s(BRAND_INDEX_OFFER)),
        ]);
        let (index, next) = self
            .query_page(
                Some("gsi1"),
                "gsi1pk = :b AND begins_with(gsi1sk, :p)",
                values,
                after,
                limit,
            )
            .await?;
        let order = index
            .iter()
            .map(|k| match k.get("pk") {
                Some(AttributeValue::S(pk)) => Ok(pk.clone()),
                _ => Err(StoreError::internal("brand index item without pk")),
            })
            .collect::<StoreResult<Vec<String>>>()?;
        let keys = order.iter().map(|pk| key(pk.clone(), OFFER_SK)).collect();
        let mut found: HashMap<String, Offer> = HashMap::new();
        for item in batch_get(&self.ddb, &self.table, keys).await? {
            let offer = from_item::<OfferItem>(item)?;
            found.insert(offer.pk.clone(), offer.into_offer()?);
        }
        // An offer deleted between the query and the read is left out.
        let items = order.iter().filter_map(|pk| found.remove(pk)).collect();
        Ok(Page { items, next })
    }

    async fn create_locations(&self, locations: &[Location]) -> StoreResult<()> {
        self.create_marked(locations, None).await
    }

    async fn get_location(&self, id: LocationId) -> StoreResult<Option<Location>> {
        self.get(location_pk(id), LOCATION_SK)
            .await?
            .map(|item| from_item::<LocationItem>(item)?.into_location())
            .transpose()
    }

    async fn page_brand_locations(
        &self,
        brand: BrandId,
        status: Option<LocationStatus>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        let mut values = HashMap::from([(":b".to_owned(), s(brand_key(brand)))]);
        let condition = match status {
            Some(LocationStatus::Active) => {
                values.insert(":lo".to_owned(), s(BRAND_INDEX_ACTIVE));
                values.insert(":hi".to_owned(), s(BRAND_INDEX_ACTIVE_END));
                "gsi1pk = :b AND gsi1sk BETWEEN :lo AND :hi"
            }
            Some(LocationStatus::Closed) => {
                values.insert(":p".to_owned(), s(BRAND_INDEX_CLOSED));
                "gsi1pk = :b AND begins_with(gsi1sk, :p)"
            }
            None => {
                values.insert(":p".to_owned(), s(BRAND_INDEX_ACTIVE));
                "gsi1pk = :b AND begins_with(gsi1sk, :p)"
            }
        };
        let (items, next) = self
            .query_page(Some("gsi1"), condition, values, after, limit)
            .await?;
        let ids = items
            .into_iter()
            .map(|item| match item.get("gsi1sk") {
                Some(AttributeValue::S(sk)) => id_of_brand_index_sk(sk),
                _ => Err(StoreError::internal("brand index item without gsi1sk")),
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items: ids, next })
    }

    async fn link_locations(
        &self,
        offer: OfferId,
        brand: BrandId,
        by: LinkedBy,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>> {
        let layout = self.layout(offer).await?;
        futures::stream::iter(ids.iter().copied())
            .map(|id| self.link_one(offer, layout, brand, by, id))
            .buffered(LINKS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn set_offer_schedule(&self, id: OfferId, schedule: &OfferSchedule) -> StoreResult<bool> {
        let json = serde_json::to_string(schedule)
            .map_err(|e| StoreError::internal(format!("cannot write a schedule: {e}")))?;
        Ok(self
            .update_attribute(offer_pk(id), OFFER_SK, "schedule", &json)
            .await?
            .is_some())
    }

    async fn rename_offer(&self, id: OfferId, name: &str) -> StoreResult<Option<Offer>> {
        self.update_attribute(offer_pk(id), OFFER_SK, "name", name)
            .await?
            .map(|item| from_item::<OfferItem>(item)?.into_offer())
            .transpose()
    }

    async fn update_location(
        &self,
        id: LocationId,
        change: &LocationChange,
    ) -> StoreResult<Option<Location>> {
        Ok(self
            .change_location(id, change)
            .await?
            .map(|(location, _)| location))
    }

    /// Reads the page's locations (BatchGetItem, 100 keys a request) and keeps those that
    /// match: a filtered job reads every location of its source once.
    async fn locations_matching(
        &self,
        brand: BrandId,
        ids: &[LocationId],
        filter: &LocationFilter,
    ) -> StoreResult<Vec<Location>> {
        let keys = ids
            .iter()
            .map(|id| key(location_pk(*id), LOCATION_SK))
            .collect();
        let mut matching = HashMap::new();
        for item in batch_get(&self.ddb, &self.table, keys).await? {
            let location = from_item::<LocationItem>(item)?.into_location()?;
            if location.brand_id == brand && filter.matches(&location) {
                matching.insert(location.id, location);
            }
        }
        Ok(ids.iter().filter_map(|id| matching.remove(id)).collect())
    }

    async fn external_ids(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<String>>> {
        // A BatchGetItem refuses a key named twice.
        let distinct: std::collections::BTreeSet<LocationId> = ids.iter().copied().collect();
        let keys = distinct
            .into_iter()
            .map(|id| key(location_pk(id), LOCATION_SK))
            .collect();
        let mut found = HashMap::new();
        for item in batch_get(&self.ddb, &self.table, keys).await? {
            let read = from_item::<LocationItem>(item)?;
            if let Some(external_id) = read.external_id {
                found.insert(read.pk, external_id);
            }
        }
        Ok(ids
            .iter()
            .map(|id| found.get(&location_pk(*id)).cloned())
            .collect())
    }

    async fn find_by_external_id(
        &self,
        brand: BrandId,
        external_id: &str,
    ) -> StoreResult<Option<Location>> {
        let Some(id) = self.claimed_by(brand, external_id).await? else {
            return Ok(None);
        };
        Ok(self
            .get_location(id)
            .await?
            .filter(|l| l.external_id.as_deref() == Some(external_id)))
    }

    /// Finds the claim of the external id; creates the location with its claim if there is
    /// none, else changes the location it names. Another request creating the same
    /// external id meanwhile makes this one read again and change what that one made.
    async fn upsert_by_external_id(&self, location: &Location) -> StoreResult<Upserted> {
        Ok(self.upsert_marked(location, None).await?.unmarked()?)
    }

    /// Reads the location's offer set and the links it names, then in one transaction
    /// deletes the location (if its set is still that), its links and one from each offer's
    /// `locationsTotal`; a set that changed meanwhile (a job linking it) means read again.
    async fn delete_location(&self, id: LocationId) -> StoreResult<Option<Vec<OfferId>>> {
        for attempt in 0..DELETE_ATTEMPTS {
            contention_pause(attempt).await;
            if let Some(done) = self.try_delete_location(id).await? {
                return Ok(done);
            }
        }
        Err(StoreError::unavailable(format!(
            "location {id} kept changing while it was being deleted; retry"
        )))
    }

    async fn link_direct(&self, offer: &Offer, location: LocationId) -> StoreResult<LinkOutcome> {
        let layout = self.layout(offer.id).await?;
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(location_pk(location), LOCATION_SK)))
            .update_expression(MARK_LOCATION)
            .condition_expression(LINKABLE)
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":o", offer_set(offer.id))
            .expression_attribute_values(":b", s(offer.brand_id.to_string()))
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let link = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&LinkItem::new(
                offer.id,
                layout,
                location,
                LinkedBy::Direct,
                self.clock.now_ms(),
            ))?))
            .condition_expression("attribute_not_exists(linkedBy)")
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(offer_pk(offer.id), OFFER_SK)))
            .update_expression("ADD locationsTotal :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let mut writes = vec![
            TransactWriteItem::builder().update(mark).build(),
            TransactWriteItem::builder().put(link).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        // During a move: and no link at its old key.
        if let Some(old) = layout.old_key(offer.id, location) {
            writes.push(self.no_link_at(old)?);
        }
        let result = self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        let Err(e) = result else {
            return Ok(LinkOutcome::Linked);
        };
        let reasons = cancellation(e)?;
        if condition_failed(reasons.first()) {
            Ok(LinkOutcome::NotFound)
        } else if condition_failed(reasons.get(1)) || condition_failed(reasons.get(3)) {
            Ok(LinkOutcome::AlreadyLinked)
        } else if condition_failed(reasons.get(2)) {
            Err(StoreError::Invalid(format!(
                "offer {} does not exist",
                offer.id
            )))
        } else {
            Err(retryable_cancel(&reasons))
        }
    }

    /// Puts the rule item and its copy in the rule registry (`RULES_PK`; a fresh drift
    /// watch) in one transaction with the check that the offer exists (an offer deleted in
    /// between keeps no rule: its deletion removes both items too).
    async fn put_rule(&self, rule: &OfferRule) -> StoreResult<()> {
        let mut item = rule_item(rule, offer_pk(rule.offer_id), RULE_SK.to_owned())?;
        item.extend([
            ("gsi1pk".to_owned(), s(brand_key(rule.brand_id))),
            (
                "gsi1sk".to_owned(),
                s(format!("{BRAND_INDEX_RULE}{}", rule.offer_id)),
            ),
        ]);
        let registered = rule_item(rule, RULES_PK.to_owned(), offer_pk(rule.offer_id))?;
        let offer = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(offer_pk(rule.offer_id), OFFER_SK)))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let put = |item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))
        };
        let written = self
            .transact(vec![
                TransactWriteItem::builder().condition_check(offer).build(),
                TransactWriteItem::builder().put(put(item)?).build(),
                TransactWriteItem::builder().put(put(registered)?).build(),
            ])
            .await?;
        if written {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!(
                "offer {} does not exist",
                rule.offer_id
            )))
        }
    }

    async fn get_rule(&self, offer: OfferId) -> StoreResult<Option<OfferRule>> {
        match self.get(offer_pk(offer), RULE_SK).await? {
            Some(item) => rule_of(offer, &item).map(Some),
            None => Ok(None),
        }
    }

    /// The rule registry, one query page.
    async fn page_rules(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<WatchedRule>> {
        let values = HashMap::from([(":p".to_owned(), s(RULES_PK))]);
        let (items, next) = self
            .query_page(None, "pk = :p", values, after, limit)
            .await?;
        let mut rules = Vec::with_capacity(items.len());
        for item in items {
            let Some(AttributeValue::S(sk)) = item.get("sk") else {
                return Err(StoreError::internal("a rule registry item without sk"));
            };
            let offer: OfferId = sk
                .strip_prefix("OFFER#")
                .ok_or_else(|| StoreError::internal(format!("bad rule registry key '{sk}'")))?
                .parse()?;
            let since = match item.get("driftSince") {
                Some(AttributeValue::N(ms)) => ms
                    .parse()
                    .ok()
                    .and_then(chrono::DateTime::from_timestamp_millis),
                _ => None,
            };
            rules.push(WatchedRule {
                rule: rule_of(offer, &item)?,
                watch: DriftWatch {
                    since,
                    notified: matches!(item.get("driftNotified"), Some(AttributeValue::Bool(true))),
                },
            });
        }
        Ok(Page { items: rules, next })
    }

    /// One conditional update of the rule's registry item.
    async fn note_drift(
        &self,
        rule: &OfferRule,
        was: DriftWatch,
        now: DriftWatch,
    ) -> StoreResult<bool> {
        let mut values = HashMap::from([
            (":set".to_owned(), n(rule.set_at.timestamp_millis())),
            (":notified".to_owned(), AttributeValue::Bool(now.notified)),
        ]);
        let mut condition = vec!["setAt = :set".to_owned()];
        match was.since {
            Some(since) => {
                condition.push("driftSince = :was".to_owned());
                values.insert(":was".to_owned(), n(since.timestamp_millis()));
            }
            None => condition.push("attribute_not_exists(driftSince)".to_owned()),
        }
        if was.notified {
            condition.push("driftNotified = :true".to_owned());
            values.insert(":true".to_owned(), AttributeValue::Bool(true));
        } else {
            condition
                .push("(attribute_not_exists(driftNotified) OR driftNotified = :false)".to_owned());
            values.insert(":false".to_owned(), AttributeValue::Bool(false));
        }
        let update = match now.since {
            Some(since) => {
                values.insert(":since".to_owned(), n(since.timestamp_millis()));
                "SET driftSince = :since, driftNotified = :notified"
            }
            None => "SET driftNotified = :notified REMOVE driftSince",
        };
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(RULES_PK.to_owned(), &offer_pk(rule.offer_id))))
            .update_expression(update)
            .condition_expression(condition.join(" AND "))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    /// The brand index's rule keys, then the rules (BatchGetItem).
    async fn brand_rules(&self, brand: BrandId) -> StoreResult<Vec<OfferRule>> {
        let mut offers = Vec::new();
        let mut cursor = None;
        loop {
            let values = HashMap::from([
                (":b".to_owned(), s(brand_key(brand))),
                (":p".to_owned(), s(BRAND_INDEX_RULE)),
            ]);
            let (keys, next) = self
                .query_page(
                    Some("gsi1"),
                    "gsi1pk = :b AND begins_with(gsi1sk, :p)",
                    values,
                    cursor.as_ref(),
                    1_000,
                )
                .await?;
            for k in keys {
                if let Some(AttributeValue::S(sk)) = k.get("gsi1sk") {
                    offers.push(sk.trim_start_matches(BRAND_INDEX_RULE).parse::<OfferId>()?);
                }
            }
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        let mut rules = Vec::with_capacity(offers.len());
        for offer in offers {
            // A rule removed since the index was read is left out.
            if let Some(rule) = self.get_rule(offer).await? {
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    async fn follow_rule(
        &self,
        rule: &OfferRule,
        ids: &[LocationId],
        by: LinkedBy,
    ) -> StoreResult<Vec<LinkOutcome>> {
        let layout = self.layout(rule.offer_id).await?;
        futures::stream::iter(ids.iter().copied())
            .map(|id| self.follow_one(rule, layout, id, by))
            .buffered(LINKS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// The rule item (on condition that there is one) and its registry copy, at once.
    async fn delete_rule(&self, offer: OfferId) -> StoreResult<bool> {
        let delete = |pk: String, sk: String, condition: Option<&str>| {
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk, &sk)))
                .set_condition_expression(condition.map(str::to_owned))
                .build()
                .map_err(|e| StoreError::internal(e.to_string()))
        };
        self.transact(vec![
            TransactWriteItem::builder()
                .delete(delete(
                    offer_pk(offer),
                    RULE_SK.to_owned(),
                    Some("attribute_exists(pk)"),
                )?)
                .build(),
            TransactWriteItem::builder()
                .delete(delete(RULES_PK.to_owned(), offer_pk(offer), None)?)
                .build(),
        ])
        .await
    }

    async fn existing_links(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<LinkedBy>>> {
        let mut owners: HashMap<LocationId, LinkedBy> = HashMap::new();
        for item in self.link_items_of(offer, ids).await? {
            if let Some(link) = from_item::<LinkItem>(item)?.into_link()? {
                owners.insert(link.location_id, link.linked_by);
            }
        }
        Ok(ids.iter().map(|id| owners.get(id).copied()).collect())
    }

    async fn unlink_locations(
        &self,
        offer: OfferId,
        by: JobId,
        only_by: Option<JobId>,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>> {
        let layout = self.layout(offer).await?;
        futures::stream::iter(ids.iter().copied())
            .map(|id| self.unlink_one(offer, layout, by, only_by, id))
            .buffered(LINKS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn unlinked_by(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<JobId>>> {
        let mut removers: HashMap<LocationId, JobId> = HashMap::new();
        let mut linked = std::collections::HashSet::new();
        for item in self.link_items_of(offer, ids).await? {
            let item = from_item::<LinkItem>(item)?;
            let location = item.location_id()?;
            if item.owner()?.is_some() {
                // Linked again since (during a move the link may be at the other key).
                linked.insert(location);
            } else if let Some(job) = item.remover()? {
                removers.insert(location, job);
            }
        }
        removers.retain(|location, _| !linked.contains(location));
        Ok(ids.iter().map(|id| removers.get(id).copied()).collect())
    }

    async fn page_offer_link_ids(
        &self,
        offer: OfferId,
        made_by: Option<LinkedBy>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        let (items, next) = self.link_items(offer, after, limit).await?;
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            match item.owner()? {
                Some(owner) if made_by.is_none_or(|wanted| wanted == owner) => {
                    ids.push(item.location_id()?)
                }
                _ => {}
            }
        }
        Ok(Page { items: ids, next })
    }

    async fn page_offer_links(
        &self,
        offer: OfferId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Link>> {
        let (items, next) = self.link_items(offer, after, limit).await?;
        let mut links = Vec::with_capacity(items.len());
        for item in items {
            links.extend(item.into_link()?);
        }
        Ok(Page { items: links, next })
    }
}

#[async_trait]
impl LocationImports for DynamoCatalog {
    /// The external id's claim, then the location: created with the mark (its claim in the
    /// same transaction), or changed on condition of the version read, the mark in the same
    /// write; an unchanged location gets the mark alone, on the same condition.
    async fn import_row(&self, location: &Location, mark: ImportMark) -> StoreResult<ImportedRow> {
        Ok(self
            .upsert_marked(location, Some(mark))
            .await?
            .imported_row())
    }

    async fn import_marks(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<ImportMark>>> {
        let keys = ids
            .iter()
            .map(|id| key(location_pk(*id), LOCATION_SK))
            .collect();
        let mut marks = HashMap::new();
        for item in batch_get(&self.ddb, &self.table, keys).await? {
            let read = from_item::<LocationItem>(item)?;
            if let Some(mark) = read.imported_by.as_deref() {
                marks.insert(read.pk.clone(), ImportMark::from_attr(mark)?);
            }
        }
        Ok(ids
            .iter()
            .map(|id| marks.get(&location_pk(*id)).copied())
            .collect())
    }

    async fn close_unimported(
        &self,
        job: JobId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<RowOutcome>> {
        let closing = LocationChange {
            status: Some(LocationStatus::Closed),
            ..Default::default()
        };
        let marks = Marks {
            changed: ImportMark {
                job,
                line: 0,
                outcome: RowOutcome::Closed,
            },
            unchanged: None,
        };
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            let outcome = match self.change_marked(*id, &closing, Some(marks)).await? {
                Marked::Changed(_) | Marked::Seen(RowOutcome::Closed) => RowOutcome::Closed,
                // Gone, closed already, or named by the file after all.
                Marked::Missing | Marked::Unchanged(_) | Marked::Seen(_) => RowOutcome::Gone,
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

/// A rule's item at `pk / sk`: its brand, `where` (JSON) and `setAt`.
fn rule_item(rule: &OfferRule, pk: String, sk: String) -> StoreResult<Item> {
    let filter = serde_json::to_string(&rule.filter)
        .map_err(|e| StoreError::internal(format!("cannot write a rule: {e}")))?;
    let mut item = key(pk, &sk);
    item.extend([
        ("brandId".to_owned(), s(rule.brand_id.to_string())),
        ("where".to_owned(), s(filter)),
        ("setAt".to_owned(), n(rule.set_at.timestamp_millis())),
    ]);
    Ok(item)
}

/// The rule of `offer` an item written by `rule_item` holds.
fn rule_of(offer: OfferId, item: &Item) -> StoreResult<OfferRule> {
    let (
        Some(AttributeValue::S(brand)),
        Some(AttributeValue::S(filter)),
        Some(AttributeValue::N(set_at)),
    ) = (item.get("brandId"), item.get("where"), item.get("setAt"))
    else {
        return Err(StoreError::internal(format!(
            "offer {offer} has a malformed rule item"
        )));
    };
    let set_at: i64 = set_at
        .parse()
        .map_err(|_| StoreError::internal(format!("offer {offer}'s rule has setAt '{set_at}'")))?;
    Ok(OfferRule {
        offer_id: offer,
        brand_id: brand.parse()?,
        filter: serde_json::from_str(filter).map_err(|e| {
            StoreError::internal(format!("offer {offer} has an unreadable rule: {e}"))
        })?,
        set_at: chrono::DateTime::from_timestamp_millis(set_at).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sks(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i.get("sk") {
                Some(AttributeValue::S(sk)) => sk.clone(),
                _ => panic!("no sk"),
            })
            .collect()
    }

    /// Pages of shards holding `shards[i]` (sort keys `LOC#n`), each read `per_shard` at a
    /// time, merged until the end: every key once, in order, however they are spread.
    fn list_all(shards: &[Vec<u32>], per_shard: usize, limit: usize) -> (Vec<String>, usize) {
        let key_of = |n: u32| format!("LOC#{n:05}");
        let mut after = LINKS_START.to_owned();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 10_000, "paging does not end");
            let read = shards
                .iter()
                .map(|shard| {
                    let mut keys: Vec<String> = shard.iter().map(|n| key_of(*n)).collect();
                    keys.sort();
                    let rest: Vec<String> = keys.into_iter().filter(|k| *k > after).collect();
                    let stopped = (rest.len() > per_shard).then(|| rest[per_shard - 1].clone());
                    let items = rest
                        .into_iter()
                        .take(per_shard)
                        .map(|sk| key("x".to_owned(), &sk))
                        .collect();
                    (items, stopped)
                })
                .collect();
            let (items, next) = merge_shard_pages(read, limit);
            assert!(items.len() <= limit);
            seen.extend(sks(&items));
            match next {
                Some(next) => after = next,
                None => return (seen, pages),
            }
        }
    }

    #[test]
    fn merged_shard_pages_list_every_link_once_in_order_even_when_one_shard_holds_most() {
        let mut all: Vec<u32> = (0..500).collect();
        let expected: Vec<String> = all.iter().map(|n| format!("LOC#{n:05}")).collect();
        // Even: by n mod 8. Skewed: one shard holds everything from 100 to 400.
        let even: Vec<Vec<u32>> = (0..8)
            .map(|s| all.iter().copied().filter(|n| n % 8 == s).collect())
            .collect();
        let skewed: Vec<Vec<u32>> = (0..8)
            .map(|s| {
                all.iter()
                    .copied()
                    .filter(|n| {
                        if (100..400).contains(n) {
                            s == 3
                        } else {
                            n % 8 == s
                        }
                    })
                    .collect()
            })
            .collect();
        for shards in [&even, &skewed] {
            for limit in [1, 7, 100, 1_000] {
                let per_shard = per_shard_limit(limit, 8);
                let (seen, _) = list_all(shards, per_shard, limit);
                assert_eq!(seen, expected, "limit {limit}");
            }
        }
        // Evenly spread, a page of 100 is full: 5 pages and the end.
        let (_, pages) = list_all(&even, per_shard_limit(100, 8), 100);
        assert_eq!(pages, 5);
        // One shard: its own pages.
        all.reverse();
        let (seen, pages) = list_all(&[all.clone()], per_shard_limit(100, 1), 100);
        assert_eq!((seen, pages), (expected, 5));
    }

    #[test]
    fn each_shard_is_asked_for_its_share_and_slack_never_more_than_the_page() {
        assert_eq!(per_shard_limit(100, 1), 100);
        assert_eq!(per_shard_limit(100, 8), 35);
        assert_eq!(per_shard_limit(5, 8), 5);
        assert_eq!(per_shard_limit(10_000, 8), 1_400);
        assert_eq!(per_shard_limit(0, 8), 1);
    }
}
