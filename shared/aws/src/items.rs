//! DynamoDB item shapes (DESIGN §4) and their conversions to domain types, through
//! serde_dynamo. Keys: `pk`/`sk` strings; GSIs `gsi1pk`/`gsi1sk` (and `gsi2pk`/`gsi2sk` for
//! jobs that are not settled yet).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Action, BrandId, ChunkSeq, ChunkTally, Counters, Job, JobId, JobSpec, JobStatus, Link,
    LinkedBy, Location, LocationAttributes, LocationId, LocationStatus, Offer, OfferId,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Cursor, Failure};

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) const OFFER_SK: &str = "#OFFER";
pub(crate) const LOCATION_SK: &str = "#LOC";
pub(crate) const JOB_SK: &str = "#JOB";
pub(crate) const ACTIVE_SK: &str = "#ACTIVE";
pub(crate) const IDEMP_SK: &str = "#IDEMP";
/// The sparse index of jobs the sweeper may have to finish: set at creation, removed once
/// the terminal event is published. Keys only, so counter updates never write to it.
pub(crate) const UNSETTLED: &str = "UNSETTLED";
pub(crate) const SCHEDULED: &str = "SCHEDULED";

pub(crate) fn offer_pk(id: OfferId) -> String {
    format!("OFFER#{id}")
}
pub(crate) fn location_pk(id: LocationId) -> String {
    format!("LOC#{id}")
}
pub(crate) fn link_sk(id: LocationId) -> String {
    format!("LOC#{id}")
}

/// The shard of an offer's links a location's link is in: FNV-1a (64-bit) of the
/// location id as written (`LOC#` sort keys hold the same text), modulo the offer's shard
/// count. Stable across releases and machines, so every writer and reader finds one item.
pub(crate) fn link_shard(location: LocationId, shards: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in location.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u16
}

/// The partition key of one shard of an offer's links: `OFFER#{offer}` for an offer of one
/// shard (every offer made before links were sharded, whose links share the offer item's
/// partition), `OFFER#{offer}#{shard}` otherwise.
pub(crate) fn link_shard_pk(offer: OfferId, shards: u16, shard: u16) -> String {
    if shards <= 1 {
        offer_pk(offer)
    } else {
        format!("OFFER#{offer}#{shard}")
    }
}

/// The partition keys of all of an offer's link shards, in shard order.
pub(crate) fn link_pks(offer: OfferId, shards: u16) -> Vec<String> {
    (0..shards.max(1))
        .map(|shard| link_shard_pk(offer, shards, shard))
        .collect()
}

/// The key of the offer's link to a location (where its link, or a mark in its place, is).
pub(crate) fn link_key(offer: OfferId, shards: u16, location: LocationId) -> Item {
    key(
        link_shard_pk(offer, shards, link_shard(location, shards)),
        &link_sk(location),
    )
}

/// Where an offer keeps its links: `shards` partitions, or — while `migrate-links` moves
/// them — from `shards` to `moving_to`. During a move a link is written only to its new
/// key, on condition that its old key holds no link; the mover takes each old item to its
/// new key and deletes it in one transaction; readers look at both, the new one first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub shards: u16,
    pub moving_to: Option<u16>,
}

impl Layout {
    pub const ONE: Layout = Layout {
        shards: 1,
        moving_to: None,
    };

    /// The layout an offer item records (absent attributes: one partition, no move).
    pub fn of(item: &Item) -> StoreResult<Layout> {
        Ok(Layout {
            shards: shard_count(item, "linkShards")?.unwrap_or(1),
            moving_to: shard_count(item, "linkShardsTo")?,
        })
    }

    /// The shard count new links are written at.
    pub fn current(&self) -> u16 {
        self.moving_to.unwrap_or(self.shards)
    }

    /// The key a location's link is written to.
    pub fn key(&self, offer: OfferId, location: LocationId) -> Item {
        link_key(offer, self.current(), location)
    }

    /// During a move, the key the location's link may still be at.
    pub fn old_key(&self, offer: OfferId, location: LocationId) -> Option<Item> {
        self.moving_to
            .map(|_| link_key(offer, self.shards, location))
    }
}

fn shard_count(item: &Item, name: &str) -> StoreResult<Option<u16>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse::<u16>()
            .ok()
            .filter(|s| *s >= 1)
            .map(Some)
            .ok_or_else(|| StoreError::internal(format!("an offer has {name} '{v}'"))),
        Some(other) => Err(StoreError::internal(format!(
            "an offer has {name} {other:?}"
        ))),
    }
}

/// The offer a link's partition key names (`OFFER#{offer}` or `OFFER#{offer}#{shard}`).
pub(crate) fn offer_of_link_pk(pk: &str) -> StoreResult<OfferId> {
    let rest = strip(pk, "OFFER#")?;
    Ok(rest.split('#').next().unwrap_or(rest).parse()?)
}
/// The claim of an external id in a brand: one item per id, naming its location.
pub(crate) fn external_pk(brand: BrandId, external_id: &str) -> String {
    format!("EXT#{brand}#{external_id}")
}
pub(crate) const EXTERNAL_SK: &str = "#EXT";

pub(crate) fn brand_key(id: BrandId) -> String {
    format!("BRAND#{id}")
}
/// An offer's sort key in the brand index.
pub(crate) fn brand_index_offer_sk(id: OfferId) -> String {
    format!("{BRAND_INDEX_OFFER}{id}")
}
pub(crate) const BRAND_INDEX_OFFER: &str = "OFFER#";
/// An offer's standing rule: `OFFER#id / #RULE`, on the brand index as `RULE#offer`.
pub(crate) const RULE_SK: &str = "#RULE";
pub(crate) const BRAND_INDEX_RULE: &str = "RULE#";
/// The rule registry: a copy of every offer's rule (`RULES / OFFER#id`), written with the
/// rule, so the drift watch lists every rule without a scan; it also keeps what the watch
/// last saw (`driftSince`, `driftNotified`).
pub(crate) const RULES_PK: &str = "RULES";
/// A location's sort key in the brand index: `LOC#id` while active, `LOC#~id` once closed
/// (`~` sorts after every character of an id, so the active ones come first).
pub(crate) fn brand_index_sk(id: LocationId, status: LocationStatus) -> String {
    match status {
        LocationStatus::Active => format!("{BRAND_INDEX_ACTIVE}{id}"),
        LocationStatus::Closed => format!("{BRAND_INDEX_CLOSED}{id}"),
    }
}
pub(crate) const BRAND_INDEX_ACTIVE: &str = "LOC#";
pub(crate) const BRAND_INDEX_CLOSED: &str = "LOC#~";
/// Above every active location's brand-index sort key, below every closed one's.
pub(crate) const BRAND_INDEX_ACTIVE_END: &str = "LOC#}";

/// The location id of a brand-index sort key.
pub(crate) fn id_of_brand_index_sk(sk: &str) -> StoreResult<LocationId> {
    sk.strip_prefix(BRAND_INDEX_CLOSED)
        .or_else(|| sk.strip_prefix(BRAND_INDEX_ACTIVE))
        .ok_or_else(|| StoreError::internal(format!("bad gsi1sk '{sk}'")))?
        .parse::<LocationId>()
        .map_err(StoreError::from)
}
pub(crate) fn job_pk(id: JobId) -> String {
    format!("JOB#{id}")
}
pub(crate) fn chunk_sk(seq: ChunkSeq) -> String {
    format!("CHUNK#{seq}")
}
pub(crate) fn parked_sk(seq: ChunkSeq) -> String {
    format!("PARKED#{seq}")
}
pub(crate) fn setting_pk(name: &str) -> String {
    format!("SETTING#{name}")
}
pub(crate) const SETTING_SK: &str = "#SETTING";
pub(crate) fn failure_sk(key: &str) -> String {
    format!("FAIL#{key}")
}
pub(crate) fn active_pk(id: OfferId) -> String {
    format!("ACTIVE#{id}")
}
pub(crate) fn undo_pk(parent: JobId) -> String {
    format!("UNDO#{parent}")
}
pub(crate) const UNDO_SK: &str = "#UNDO";
pub(crate) fn idemp_pk(key_hash: &str) -> String {
    format!("IDEMP#{key_hash}")
}

pub(crate) fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn to_item<T: Serialize>(value: &T) -> StoreResult<Item> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::internal(format!("item encoding: {e}")))
}

pub(crate) fn from_item<'a, T: Deserialize<'a>>(item: Item) -> StoreResult<T> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::internal(format!("item decoding: {e}")))
}

fn strip<'a>(value: &'a str, prefix: &str) -> StoreResult<&'a str> {
    value
        .strip_prefix(prefix)
        .ok_or_else(|| StoreError::internal(format!("key '{value}' lacks prefix '{prefix}'")))
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfferItem {
    pub pk: String,
    pub sk: String,
    pub brand_id: String,
    pub name: String,
    pub locations_total: u64,
    /// The brand's offers index (`gsi1`, beside its locations); absent on an offer written
    /// before offers were listed, until `bulklink upgrade` gives it them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1sk: Option<String>,
    /// Its schedule (`OfferSchedule` as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Partitions its links are spread over (`link_shard_pk`); absent on an offer made
    /// before links were sharded: one, its own partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_shards: Option<u16>,
}

impl OfferItem {
    /// The item of a new offer whose links are spread over `shards` partitions.
    pub fn of(offer: &Offer, shards: u16) -> Self {
        OfferItem {
            pk: offer_pk(offer.id),
            sk: OFFER_SK.to_owned(),
            brand_id: offer.brand_id.to_string(),
            name: offer.name.clone(),
            locations_total: offer.locations_total,
            gsi1pk: Some(brand_key(offer.brand_id)),
            gsi1sk: Some(brand_index_offer_sk(offer.id)),
            schedule: offer
                .schedule
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_default()),
            link_shards: (shards > 1).then_some(shards),
        }
    }

    pub fn into_offer(self) -> StoreResult<Offer> {
        let schedule = self
            .schedule
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| {
                StoreError::internal(format!("offer {}'s schedule does not read: {e}", self.pk))
            })?;
        Ok(Offer {
            id: strip(&self.pk, "OFFER#")?.parse()?,
            brand_id: self.brand_id.parse()?,
            name: self.name,
            locations_total: self.locations_total,
            schedule,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LocationItem {
    pub pk: String,
    pub sk: String,
    pub brand_id: String,
    pub address: String,
    pub has_offer: bool,
    pub gsi1pk: String,
    pub gsi1sk: String,
    /// Claimed by an `EXT#brand#id` item of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// One map; absent when the location has none.
    #[serde(default, skip_serializing_if = "no_attributes")]
    pub attributes: LocationAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Present (true) once the store has closed; its brand-index key says so too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// Counts the changes to address, attributes and status: each change is conditional on
    /// the count it read (absent before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The last import's mark (`ImportMark::to_attr`): which job and row wrote it, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_by: Option<String>,
}

fn no_attributes(attributes: &LocationAttributes) -> bool {
    *attributes == LocationAttributes::default()
}

impl LocationItem {
    pub fn of(location: &Location) -> Self {
        LocationItem {
            pk: location_pk(location.id),
            sk: LOCATION_SK.to_owned(),
            brand_id: location.brand_id.to_string(),
            address: location.address.clone(),
            has_offer: location.has_offer,
            gsi1pk: brand_key(location.brand_id),
            gsi1sk: brand_index_sk(location.id, location.status),
            external_id: location.external_id.clone(),
            attributes: location.attributes.clone(),
            created_at: location.created_at.map(|t| t.timestamp_millis()),
            updated_at: location.updated_at.map(|t| t.timestamp_millis()),
            closed: !location.is_active(),
            version: None,
            imported_by: None,
        }
    }

    pub fn into_location(self) -> StoreResult<Location> {
        Ok(Location {
            id: strip(&self.pk, "LOC#")?.parse()?,
            brand_id: self.brand_id.parse()?,
            address: self.address,
            has_offer: self.has_offer,
            external_id: self.external_id,
            attributes: self.attributes,
            status: if self.closed {
                LocationStatus::Closed
            } else {
                LocationStatus::Active
            },
            created_at: self.created_at.map(from_ms),
            updated_at: self.updated_at.map(from_ms),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LinkItem {
    pub pk: String,
    pub sk: String,
    /// Absent on the mark an unlink leaves in the link's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_at: Option<i64>,
    /// The job that removed the link: the item is a mark, not a link, until the location is
    /// linked to the offer again (which replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlinked_by: Option<String>,
}

impl LinkItem {
    pub fn new(
        offer: OfferId,
        layout: Layout,
        location: LocationId,
        by: LinkedBy,
        at_ms: i64,
    ) -> Self {
        let shards = layout.current();
        LinkItem {
            pk: link_shard_pk(offer, shards, link_shard(location, shards)),
            sk: link_sk(location),
            linked_by: Some(by.to_attr()),
            linked_at: Some(at_ms),
            unlinked_by: None,
        }
    }

    /// Who linked it; `None` for an unlink's mark.
    pub fn owner(&self) -> StoreResult<Option<LinkedBy>> {
        Ok(self
            .linked_by
            .as_deref()
            .map(LinkedBy::from_attr)
            .transpose()?)
    }

    /// The job whose unlink left this mark.
    pub fn remover(&self) -> StoreResult<Option<JobId>> {
        match (&self.linked_by, &self.unlinked_by) {
            (None, Some(job)) => Ok(Some(job.parse()?)),
            _ => Ok(None),
        }
    }

    pub fn location_id(&self) -> StoreResult<LocationId> {
        Ok(strip(&self.sk, "LOC#")?.parse()?)
    }

    /// The link; `None` for an unlink's mark.
    pub fn into_link(self) -> StoreResult<Option<Link>> {
        let Some(linked_by) = self.owner()? else {
            return Ok(None);
        };
        Ok(Some(Link {
            offer_id: offer_of_link_pk(&self.pk)?,
            location_id: self.location_id()?,
            linked_by,
            linked_at: from_ms(self.linked_at.unwrap_or_default()),
        }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobItem {
    pub pk: String,
    pub sk: String,
    /// What the job is (`JobSpec`, JSON): the one attribute a job's kind, action, source and
    /// parent are read from. Absent on jobs written before specs: those read `kind`,
    /// `action` and `parentJobId`, which are still written beside it so that the release
    /// before can read a job this one made (a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    pub kind: String,
    /// Absent on jobs written before kinds: those link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
    pub status: String,
    pub brand_id: String,
    /// Absent for a job on no offer (an import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub total: u64,
    pub linked: u64,
    pub already_linked: u64,
    pub not_found: u64,
    pub failed: u64,
    pub cancelled: u64,
    #[serde(default)]
    pub unlinked: u64,
    #[serde(default)]
    pub not_linked: u64,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub updated: u64,
    #[serde(default)]
    pub unchanged: u64,
    #[serde(default)]
    pub closed: u64,
    #[serde(default)]
    pub invalid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout_cursor: Option<String>,
    pub fanout_done: bool,
    pub chunks_total: u32,
    pub chunks_done: u32,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<i64>,
    #[serde(default)]
    pub paused_ms: u64,
    #[serde(default)]
    pub chunks_parked: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub gsi1pk: String,
    pub gsi1sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi2sk: Option<String>,
    /// TTL attribute (epoch seconds), set when the job finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl JobItem {
    pub fn of(job: &Job) -> Self {
        let c = job.counters;
        JobItem {
            pk: job_pk(job.id),
            sk: JOB_SK.to_owned(),
            spec: Some(job.spec.to_json()),
            kind: job.spec.kind.as_str().to_owned(),
            action: Some(job.spec.action.to_attr()),
            parent_job_id: job.spec.parent_job_id.map(|p| p.to_string()),
            status: job.status.as_str().to_owned(),
            brand_id: job.brand_id.to_string(),
            offer_id: job.offer_id.map(|o| o.to_string()),
            callback_url: job.callback_url.as_ref().map(|u| u.to_string()),
            total: c.total,
            linked: c.linked,
            already_linked: c.already_linked,
            not_found: c.not_found,
            failed: c.failed,
            cancelled: c.cancelled,
            unlinked: c.unlinked,
            not_linked: c.not_linked,
            created: c.created,
            updated: c.updated,
            unchanged: c.unchanged,
            closed: c.closed,
            invalid: c.invalid,
            fanout_cursor: job.fanout_cursor.clone(),
            fanout_done: job.fanout_done,
            chunks_total: job.chunks_total,
            chunks_done: job.chunks_done,
            created_at: job.created_at.timestamp_millis(),
            updated_at: job.updated_at.timestamp_millis(),
            started_at: job.started_at.map(|t| t.timestamp_millis()),
            finished_at: job.finished_at.map(|t| t.timestamp_millis()),
            notified_at: job.notified_at.map(|t| t.timestamp_millis()),
            paused_at: job.paused_at.map(|t| t.timestamp_millis()),
            paused_ms: job.paused_ms,
            chunks_parked: job.chunks_parked,
            not_before: job.not_before.map(|t| t.timestamp_millis()),
            created_by: job.created_by.clone(),
            approved_by: job.approved_by.clone(),
            gsi1pk: brand_key(job.brand_id),
            // Job ids are UUID v7: their order is creation order.
            gsi1sk: job.id.to_string(),
            gsi2pk: Some(sweep_partition(job.status).to_owned()),
            gsi2sk: Some(sweep_key(job)),
            expires_at: None,
        }
    }

    pub fn into_job(self) -> StoreResult<Job> {
        let spec = match &self.spec {
            Some(spec) => JobSpec::from_json(spec)?,
            None => JobSpec::legacy(
                self.kind.parse()?,
                self.action
                    .as_deref()
                    .map(Action::from_attr)
                    .transpose()?
                    .unwrap_or(Action::Link),
                self.parent_job_id.map(|p| p.parse()).transpose()?,
            )?,
        };
        Ok(Job {
            id: strip(&self.pk, "JOB#")?.parse()?,
            spec,
            status: self.status.parse()?,
            brand_id: self.brand_id.parse()?,
            offer_id: self.offer_id.map(|o| o.parse()).transpose()?,
            callback_url: self.callback_url.map(|u| u.parse()).transpose()?,
            counters: Counters {
                total: self.total,
                linked: self.linked,
                already_linked: self.already_linked,
                not_found: self.not_found,
                failed: self.failed,
                cancelled: self.cancelled,
                unlinked: self.unlinked,
                not_linked: self.not_linked,
                created: self.created,
                updated: self.updated,
                unchanged: self.unchanged,
                closed: self.closed,
                invalid: self.invalid,
            },
            fanout_cursor: self.fanout_cursor,
            fanout_done: self.fanout_done,
            chunks_total: self.chunks_total,
            chunks_done: self.chunks_done,
            created_at: from_ms(self.created_at),
            updated_at: from_ms(self.updated_at),
            started_at: self.started_at.map(from_ms),
            finished_at: self.finished_at.map(from_ms),
            notified_at: self.notified_at.map(from_ms),
            paused_at: self.paused_at.map(from_ms),
            paused_ms: self.paused_ms,
            chunks_parked: self.chunks_parked,
            not_before: self.not_before.map(from_ms),
            created_by: self.created_by,
            approved_by: self.approved_by,
        })
    }
}

/// The sparse `gsi2` partition a job not yet notified sits in: SCHEDULED jobs in
/// `SCHEDULED`, by `notBefore` (the scheduler's query), the others in `UNSETTLED` (the
/// sweeper's).
pub(crate) fn sweep_partition(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Scheduled => SCHEDULED,
        _ => UNSETTLED,
    }
}

/// The job's `gsi2sk` in its partition: its id (UUID v7, creation order), or, SCHEDULED,
/// `notBefore` in zero-padded milliseconds and its id.
pub(crate) fn sweep_key(job: &Job) -> String {
    match (job.status, job.not_before) {
        (JobStatus::Scheduled, Some(at)) => {
            scheduled_key(at.timestamp_millis(), &job.id.to_string())
        }
        _ => job.id.to_string(),
    }
}

/// A SCHEDULED job's `gsi2sk`: sorts by time, then id.
pub(crate) fn scheduled_key(at_ms: i64, id: &str) -> String {
    format!("{:013}#{id}", at_ms.max(0))
}

pub(crate) fn job_from_item(item: Item) -> StoreResult<Job> {
    from_item::<JobItem>(item)?.into_job()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChunkItem {
    pub pk: String,
    pub sk: String,
    pub linked: u32,
    pub already_linked: u32,
    pub not_found: u32,
    pub failed: u32,
    pub cancelled: u32,
    #[serde(default)]
    pub unlinked: u32,
    #[serde(default)]
    pub not_linked: u32,
    #[serde(default)]
    pub created: u32,
    #[serde(default)]
    pub updated: u32,
    #[serde(default)]
    pub unchanged: u32,
    #[serde(default)]
    pub closed: u32,
    #[serde(default)]
    pub invalid: u32,
    pub recorded_at: i64,
    /// The chunk's failures, ledgered atomically with its counts; the `FAIL#` items that
    /// `GET /jobs/{id}/failures` pages through are always written from this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

impl ChunkItem {
    pub fn of(job: JobId, seq: ChunkSeq, tally: &ChunkTally, recorded_at_ms: i64) -> Self {
        let (c, failures) = (tally.counts(), tally.failures());
        ChunkItem {
            pk: job_pk(job),
            sk: chunk_sk(seq),
            linked: c.linked,
            already_linked: c.already_linked,
            not_found: c.not_found,
            failed: c.failed,
            cancelled: c.cancelled,
            unlinked: c.unlinked,
            not_linked: c.not_linked,
            created: c.created,
            updated: c.updated,
            unchanged: c.unchanged,
            closed: c.closed,
            invalid: c.invalid,
            recorded_at: recorded_at_ms,
            failures: failures.to_vec(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailureItem {
    pub pk: String,
    pub sk: String,
    pub reason: String,
    pub attempts: u32,
}

impl FailureItem {
    pub fn of(job: JobId, f: &Failure) -> Self {
        FailureItem {
            pk: job_pk(job),
            sk: failure_sk(&f.key()),
            reason: f.reason.clone(),
            attempts: f.attempts,
        }
    }

    pub fn into_failure(self) -> StoreResult<Failure> {
        Ok(Failure::from_key(
            strip(&self.sk, "FAIL#")?,
            self.reason,
            self.attempts,
        )?)
    }
}

/// A DynamoDB `LastEvaluatedKey` as an opaque cursor (all our keys are strings).
pub(crate) fn cursor_of(key: Option<Item>) -> StoreResult<Option<Cursor>> {
    let Some(key) = key else { return Ok(None) };
    let mut plain = std::collections::BTreeMap::new();
    for (name, value) in key {
        let AttributeValue::S(text) = value else {
            return Err(StoreError::internal(format!(
                "key attribute {name} is not a string"
            )));
        };
        plain.insert(name, text);
    }
    let json = serde_json::to_string(&plain)
        .map_err(|e| StoreError::internal(format!("cursor encoding: {e}")))?;
    Ok(Some(Cursor::from_position(json)))
}

/// The inverse of `cursor_of`; a cursor that does not decode is the caller's mistake.
pub(crate) fn start_key(cursor: Option<&Cursor>) -> StoreResult<Option<Item>> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let plain: HashMap<String, String> = serde_json::from_str(cursor.position())
        .map_err(|_| StoreError::Invalid("cursor is not valid".into()))?;
    Ok(Some(plain.into_iter().map(|(k, v)| (k, s(v))).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time the test jobs are made at: fixed, so nothing here depends on the day.
    fn made_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    }

    #[test]
    fn a_job_survives_the_round_trip_through_its_item() {
        let mut job = Job::new(
            BrandId::new_random(),
            OfferId::new_random(),
            None,
            made_at(),
        );
        job.fanout_cursor = Some("{\"pk\":\"x\"}".into());
        job.counters.linked = 7;
        let item = to_item(&JobItem::of(&job)).unwrap();
        assert!(!item.contains_key("startedAt"), "absent, not NULL");
        let back = job_from_item(item).unwrap();
        assert_eq!(back.id, job.id);
        assert_eq!(back.counters.linked, 7);
        assert_eq!(back.fanout_cursor, job.fanout_cursor);
        assert_eq!(
            back.created_at.timestamp_millis(),
            job.created_at.timestamp_millis()
        );
    }

    #[test]
    fn a_location_keeps_its_attributes_and_one_of_the_release_before_reads_without_any() {
        let mut location = Location::new(
            LocationId::new_random(),
            BrandId::new_random(),
            "1 High St".into(),
            made_at(),
        );
        location.attributes.city = Some("London".into());
        location.attributes.country = Some("GB".parse().unwrap());
        location.attributes.tags = vec!["drive-thru".into()];
        let item = to_item(&LocationItem::of(&location)).unwrap();
        assert!(matches!(item.get("attributes"), Some(AttributeValue::M(_))));
        let back = from_item::<LocationItem>(item)
            .unwrap()
            .into_location()
            .unwrap();
        assert_eq!(back, location);

        // What the release before wrote: keys, brand, address, hasOffer, the brand index.
        let old: Item = HashMap::from([
            ("pk".to_owned(), s(location_pk(location.id))),
            ("sk".to_owned(), s(LOCATION_SK)),
            ("brandId".to_owned(), s(location.brand_id.to_string())),
            ("address".to_owned(), s("1 High St")),
            ("hasOffer".to_owned(), AttributeValue::Bool(true)),
            ("gsi1pk".to_owned(), s(brand_key(location.brand_id))),
            ("gsi1sk".to_owned(), s(link_sk(location.id))),
        ]);
        let old = from_item::<LocationItem>(old)
            .unwrap()
            .into_location()
            .unwrap();
        assert_eq!(old.attributes, LocationAttributes::default());
        assert_eq!((old.created_at, old.updated_at), (None, None));
        assert!(old.has_offer);
        assert_eq!(old.status, LocationStatus::Active);

        // A closed one says so, and sorts after every active one in the brand index.
        location.status = LocationStatus::Closed;
        let item = to_item(&LocationItem::of(&location)).unwrap();
        assert_eq!(item.get("closed"), Some(&AttributeValue::Bool(true)));
        let Some(AttributeValue::S(sk)) = item.get("gsi1sk") else {
            panic!("no brand-index key")
        };
        assert!(sk.as_str() > BRAND_INDEX_ACTIVE_END);
        assert_eq!(id_of_brand_index_sk(sk).unwrap(), location.id);
        let active_sk = brand_index_sk(location.id, LocationStatus::Active);
        assert!(active_sk.as_str() < BRAND_INDEX_ACTIVE_END);
        assert_eq!(id_of_brand_index_sk(&active_sk).unwrap(), location.id);
        let back = from_item::<LocationItem>(item)
            .unwrap()
            .into_location()
            .unwrap();
        assert_eq!(back, location);
    }

    #[test]
    fn items_written_before_job_kinds_read_as_link_all_jobs_and_links() {
        let job = Job::new(
            BrandId::new_random(),
            OfferId::new_random(),
            None,
            made_at(),
        );
        let mut item = to_item(&JobItem::of(&job)).unwrap();
        for new in ["spec", "action", "parentJobId", "unlinked", "notLinked"] {
            item.remove(new);
        }
        assert!(item.contains_key("kind"), "the kind was always written");
        let back = job_from_item(item).unwrap();
        assert_eq!(back.spec, job.spec);
        assert_eq!(back.spec.kind, crate::domain::JobKind::LinkAllLocations);
        assert_eq!(back.spec.action, Action::Link);
        assert_eq!(back.spec.parent_job_id, None);
        assert_eq!((back.counters.unlinked, back.counters.not_linked), (0, 0));

        // A Link item of the earlier release: linkedBy and linkedAt, nothing else.
        let location = LocationId::new_random();
        let old: Item = HashMap::from([
            ("pk".to_owned(), s(offer_pk(job.offer_id.unwrap()))),
            ("sk".to_owned(), s(link_sk(location))),
            ("linkedBy".to_owned(), s(job.id.to_string())),
            ("linkedAt".to_owned(), n(1_700_000_000_000_i64)),
        ]);
        let link = from_item::<LinkItem>(old).unwrap();
        assert_eq!(link.remover().unwrap(), None);
        let link = link.into_link().unwrap().expect("a link, not a mark");
        assert_eq!(link.linked_by, LinkedBy::Job(job.id));
        assert_eq!(link.location_id, location);
    }

    #[test]
    fn a_job_item_is_read_from_its_spec_and_still_carries_what_the_release_before_reads() {
        let mut linking = Job::new(
            BrandId::new_random(),
            OfferId::new_random(),
            None,
            made_at(),
        );
        linking.status = crate::domain::JobStatus::Succeeded;
        let spec = crate::domain::plan(crate::domain::JobKind::Undo, Some(&linking)).unwrap();
        let undo = Job::planned(spec, linking.brand_id, linking.offer_id, None, made_at());
        let mut item = to_item(&JobItem::of(&undo)).unwrap();
        // What the release before reads, for a rollback.
        assert_eq!(item["kind"], s("undo"));
        assert_eq!(item["action"], s(format!("unlink-by:{}", linking.id)));
        assert_eq!(item["parentJobId"], s(linking.id.to_string()));
        // The spec is what is read: attributes that disagree with it are not.
        item.insert("kind".to_owned(), s("link-all-locations"));
        item.insert("action".to_owned(), s("link"));
        let back = job_from_item(item).unwrap();
        assert_eq!(back.spec, undo.spec);
    }

    #[test]
    fn a_links_shard_is_fixed_by_its_location_and_spreads_evenly() {
        // Pinned: links already written sit where this puts them; another hash would lose
        // them.
        let id: LocationId = "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011".parse().unwrap();
        assert_eq!(
            (link_shard(id, 8), link_shard(id, 64), link_shard(id, 1)),
            (7, 15, 0)
        );
        let offer: OfferId = "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012".parse().unwrap();
        assert_eq!(
            link_key(offer, 8, id)["pk"],
            s("OFFER#0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012#7")
        );
        assert_eq!(
            link_key(offer, 1, id)["pk"],
            s("OFFER#0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012")
        );
        assert_eq!(
            offer_of_link_pk("OFFER#0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012#7").unwrap(),
            offer
        );
        // 8,000 ids over 8 shards: each within 10% of its share.
        let mut per_shard = [0u32; 8];
        for _ in 0..8_000 {
            per_shard[usize::from(link_shard(LocationId::new_random(), 8))] += 1;
        }
        assert!(
            per_shard.iter().all(|n| (900..=1_100).contains(n)),
            "{per_shard:?}"
        );
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = key("LOC#1".into(), "#LOC");
        let cursor = cursor_of(Some(key.clone())).unwrap().unwrap();
        assert_eq!(start_key(Some(&cursor)).unwrap().unwrap(), key);
        assert!(start_key(Some(&Cursor::from_position("nope"))).is_err());
    }
}
