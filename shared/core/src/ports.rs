//! The ports: what the pipeline needs from storage, queues and event delivery. Small async
//! traits; each backend (embedded SQLite, AWS) implements all of them. Handlers take
//! `Arc<dyn Port>` and never see a concrete backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    BrandId, ChunkSeq, ChunkTally, Delivery, DeliveryId, DomainError, DriftWatch, Event, Import,
    ImportId, ImportMark, ImportedRow, ItemOutcome, Job, JobEvent, JobId, Link, LinkOutcome,
    LinkedBy, Location, LocationChange, LocationFilter, LocationId, LocationStatus, Offer, OfferId,
    OfferRule, OfferSchedule, RowOutcome, SendSlot, Subscription, SubscriptionId, Transition,
    Upserted, WatchedRule, WebhookSecret,
};
use crate::error::StoreResult;

/// An opaque page position. Clients only ever see the encoded form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a backend's raw position (an SQLite key, a DynamoDB key as JSON).
    pub fn from_position(raw: impl Into<String>) -> Self {
        Cursor(raw.into())
    }

    pub fn position(&self) -> &str {
        &self.0
    }

    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    pub fn decode(s: &str) -> Result<Self, DomainError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| DomainError::InvalidCursor)?;
        String::from_utf8(bytes)
            .map(Cursor)
            .map_err(|_| DomainError::InvalidCursor)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Offers, locations and links.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Creates an offer; `Conflict` if its id exists.
    async fn create_offer(&self, offer: &Offer) -> StoreResult<()>;
    async fn get_offer(&self, id: OfferId) -> StoreResult<Option<Offer>>;
    /// A brand's offers in id order.
    async fn page_brand_offers(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Offer>>;
    /// Creates up to 100 locations (50 if any has an external id), all or none; `Conflict`
    /// if any id, or any external id in its brand, exists, unless the whole batch exists
    /// exactly as sent (a retried request, which is then already done).
    async fn create_locations(&self, locations: &[Location]) -> StoreResult<()>;
    async fn get_location(&self, id: LocationId) -> StoreResult<Option<Location>>;
    /// A brand's location ids from the brand index (keys only): with a status, those with
    /// it in id order; without, the active ones in id order, then the closed ones.
    async fn page_brand_locations(
        &self,
        brand: BrandId,
        status: Option<LocationStatus>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>>;
    /// Links each location to the offer (conditional: once per link), marking it
    /// `hasOffer`. Does NOT touch `offer.locationsTotal`: the chunk ledger does that.
    /// A link already made by `by` counts as `Linked`, so a replay sees the same outcomes.
    async fn link_locations(
        &self,
        offer: OfferId,
        brand: BrandId,
        by: LinkedBy,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>>;
    /// Removes the offer's link to each location, if there is one (and, with `only_by`, if
    /// that job made it); a location left without any offer loses `hasOffer`. Leaves a
    /// mark that `by` removed it, so a replay sees `Unlinked` again. Does NOT touch
    /// `offer.locationsTotal`: the chunk ledger does that.
    async fn unlink_locations(
        &self,
        offer: OfferId,
        by: JobId,
        only_by: Option<JobId>,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>>;
    /// Which job removed each of `ids` from the offer, where the mark of one is left and no
    /// link was made since (read-only).
    async fn unlinked_by(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<JobId>>>;
    /// The ids of the offer's links in location-id order; with `made_by`, only the links
    /// that one made. A page may hold fewer than `limit` ids (even none) and still have a
    /// next one.
    async fn page_offer_link_ids(
        &self,
        offer: OfferId,
        made_by: Option<LinkedBy>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>>;
    /// Renames an offer; `None` if it does not exist.
    async fn rename_offer(&self, id: OfferId, name: &str) -> StoreResult<Option<Offer>>;
    /// Sets an offer's schedule (its times and the jobs they made); false if there is no
    /// such offer.
    async fn set_offer_schedule(&self, id: OfferId, schedule: &OfferSchedule) -> StoreResult<bool>;
    /// The locations of `ids` that are the brand's and match `filter`, in the order given
    /// (read-only; an id of nothing or of another brand is left out).
    async fn locations_matching(
        &self,
        brand: BrandId,
        ids: &[LocationId],
        filter: &LocationFilter,
    ) -> StoreResult<Vec<Location>>;
    /// The external ids of `ids`, in order (`None`: the location has none, or is gone).
    /// Read-only and eventually consistent: what a report shows beside each location.
    async fn external_ids(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<String>>>;
    /// The brand's location with this external id, if there is one.
    async fn find_by_external_id(
        &self,
        brand: BrandId,
        external_id: &str,
    ) -> StoreResult<Option<Location>>;
    /// Creates the brand's location with `location.external_id` (as `location`, its id
    /// and times), or makes the existing one's address and attributes exactly
    /// `location`'s (its id, times and links kept; `updatedAt` moves only on a change;
    /// closing leaves every offer, as `update_location` does).
    async fn upsert_by_external_id(&self, location: &Location) -> StoreResult<Upserted>;
    /// Applies a change to a location's address, attributes and status at once (`updatedAt`
    /// moves only if something changed); `None` if it does not exist. Closing an active
    /// location also leaves every offer it carried, as `delete_location` does, in the same
    /// write; reopening one makes it linkable again (it carries nothing). Otherwise links
    /// and `hasOffer` are untouched.
    async fn update_location(
        &self,
        id: LocationId,
        change: &LocationChange,
    ) -> StoreResult<Option<Location>>;
    /// Deletes a location: it leaves every offer it carried, each offer's `locationsTotal`
    /// one less, all at once; a job that comes to it later counts it `notFound`. The offers
    /// it left; `None` if it did not exist.
    async fn delete_location(&self, id: LocationId) -> StoreResult<Option<Vec<OfferId>>>;
    /// Links one location now and counts it on the offer, atomically.
    async fn link_direct(&self, offer: &Offer, location: LocationId) -> StoreResult<LinkOutcome>;
    /// Who linked each of `ids` to the offer, if anyone (read-only).
    async fn existing_links(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<LinkedBy>>>;
    /// Sets the offer's standing rule (replacing one it had); `Invalid` if the offer does not
    /// exist (an offer deleted meanwhile keeps no rule).
    async fn put_rule(&self, rule: &OfferRule) -> StoreResult<()>;
    async fn get_rule(&self, offer: OfferId) -> StoreResult<Option<OfferRule>>;
    /// Removes the offer's rule; false if it had none.
    async fn delete_rule(&self, offer: OfferId) -> StoreResult<bool>;
    /// A brand's standing rules, one per offer that has one.
    async fn brand_rules(&self, brand: BrandId) -> StoreResult<Vec<OfferRule>>;
    /// Every brand's standing rules in offer-id order, each with what the drift watch last
    /// noted on it, without reading anything else (read-only).
    async fn page_rules(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<WatchedRule>>;
    /// Notes `now` as what the drift watch saw of `rule`, on condition that the offer's rule
    /// is still the one set at `rule.set_at` and its watch still `was`; false (nothing
    /// written) otherwise: the rule was set again or removed, or another watch got there
    /// first.
    async fn note_drift(
        &self,
        rule: &OfferRule,
        was: DriftWatch,
        now: DriftWatch,
    ) -> StoreResult<bool>;
    /// Makes the offer's link to each location what `rule` wants of the location as it is
    /// when written (active and matching: linked; otherwise: not linked), atomically with
    /// respect to changes to the location, and counts each link made or removed on the
    /// offer's `locationsTotal` in the same write. `by` owns the links it makes; a job sees
    /// its own earlier links and removals again as `Linked` / `Unlinked` (a replay). An id
    /// of nothing, or of another brand, is `NotFound`.
    async fn follow_rule(
        &self,
        rule: &OfferRule,
        ids: &[LocationId],
        by: LinkedBy,
    ) -> StoreResult<Vec<LinkOutcome>>;
    /// The links of an offer in location-id order.
    async fn page_offer_links(
        &self,
        offer: OfferId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Link>>;
}

/// What an import writes to the brand's locations: the same store as the catalog, seen by
/// the import job's steps.
#[async_trait]
pub trait LocationImports: Send + Sync {
    /// Applies one row: creates the brand's location with `location.external_id` (as
    /// `location`), or makes the existing one's address, attributes and status exactly the
    /// row's (closing leaves every offer, as `update_location` does), writing `mark` (its
    /// outcome filled in) on the location in the same write; an unchanged location gets the
    /// mark alone (a later row of the same external id, and the closing of what the file
    /// does not name, must know the file named it). A location that already carries a mark
    /// of this job answers from it (`ImportMark::seen_by`): a replay, or a second row of the
    /// same external id.
    async fn import_row(&self, location: &Location, mark: ImportMark) -> StoreResult<ImportedRow>;
    /// The import mark each of `ids` carries (`None`: none, or no such location).
    async fn import_marks(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<ImportMark>>>;
    /// Closes each of `ids` that is active and carries no mark of `job` (leaving every offer,
    /// as closing does), marking it closed by `job` in the same write: `Closed`; one that
    /// carries this job's closing mark already is `Closed` again (a replay); any other is
    /// `Gone` (deleted, closed by someone else, or named by the file after all).
    async fn close_unimported(
        &self,
        job: JobId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<RowOutcome>>;
}

/// Import records: an upload waiting for its file, and the job it started.
#[async_trait]
pub trait Imports: Send + Sync {
    async fn create_import(&self, import: &Import) -> StoreResult<()>;
    async fn get_import(&self, id: ImportId) -> StoreResult<Option<Import>>;
    /// Records that the import's file arrived at `at` (once: a second call leaves the first
    /// time). The import as it is after; `None` if there is no such import.
    async fn mark_started(&self, id: ImportId, at: DateTime<Utc>) -> StoreResult<Option<Import>>;
}

/// Where an import's file is put and read from: S3 on AWS, a directory beside the database
/// on the embedded backend.
#[async_trait]
pub trait Uploads: Send + Sync {
    /// Where the client PUTs the import's file, valid until the import expires: an absolute
    /// URL (S3, presigned), or a path on this server (`/…`) the server serves itself.
    async fn upload_url(&self, import: &Import, token: Option<&str>) -> StoreResult<String>;
    /// Stores a file sent to this server (the embedded backend's upload route), refusing more
    /// than `limit` bytes, or a body that breaks off, with `Invalid` (nothing kept), and a
    /// second file for the import with `Conflict` (the first kept). The bytes stored. The AWS
    /// backend takes no file itself (`Invalid`): S3 does.
    async fn receive(&self, id: ImportId, body: ByteStream, limit: u64) -> StoreResult<u64>;
    /// Makes the arrived file the import's own, once: what its job reads from then on, which
    /// a later upload to the same URL does not change (an S3 presigned PUT works until it
    /// expires; the embedded route takes one file only).
    async fn take(&self, id: ImportId) -> StoreResult<()>;
    /// The size of the file the import took; `None` if there is none.
    async fn size(&self, id: ImportId) -> StoreResult<Option<u64>>;
    /// Bytes `start..end` of the file (fewer at its end).
    async fn read(&self, id: ImportId, start: u64, end: u64) -> StoreResult<Vec<u8>>;
    /// Removes the file (an import done with it, or refused).
    async fn delete(&self, id: ImportId) -> StoreResult<()>;
}

/// The body of an upload: its bytes as they come (an error ends it).
pub type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>> + Send + 'static>>;

/// The claim an `Idempotency-Key` makes: hashes only, never the raw key or body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Hash of (principal, key).
    pub key_hash: String,
    /// Hash of what was asked: offer id and the canonical body.
    pub request_hash: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created(Job),
    /// Same key, same request: the job the first request created.
    Replayed(Job),
    /// Same key, different request.
    KeyReused,
    /// The offer already has an active job: this one.
    OfferBusy(JobId),
    /// The job to undo has an undo already: this one.
    UndoExists(JobId),
    /// The offer was deleted.
    OfferGone,
}

/// What `delete_offer` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfferDeletion {
    Deleted,
    NotFound,
    /// It still carries this many locations: unlink them first.
    HasLinks(u64),
    /// It has an active job.
    Busy(JobId),
}

/// One fanout page's effect on the job, applied only if the cursor is still `prev_cursor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanoutAdvance {
    pub prev_cursor: Option<String>,
    pub next_cursor: Option<String>,
    pub done: bool,
    pub chunks_added: u32,
    pub ids_added: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Advanced {
    Applied(Job),
    /// Another fanout moved the cursor first; the job as it is now.
    Superseded(Job),
}

/// A location a job could not act on, or a row of an import's file it could not apply, and
/// why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The location (absent for a row of an import's file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<LocationId>,
    /// The line of the import's file the row begins on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub reason: String,
    pub attempts: u32,
}

impl Failure {
    /// A location's failure.
    pub fn of_location(location_id: LocationId, reason: String, attempts: u32) -> Self {
        Failure {
            location_id: Some(location_id),
            line: None,
            reason,
            attempts,
        }
    }

    /// A row's failure.
    pub fn of_line(line: u64, reason: String, attempts: u32) -> Self {
        Failure {
            location_id: None,
            line: Some(line),
            reason,
            attempts,
        }
    }

    /// The key a store files it under, unique in its job and in the order failures list:
    /// the location id, or `line:` and the line zero-padded (rows list in file order).
    pub fn key(&self) -> String {
        match (self.location_id, self.line) {
            (Some(id), _) => id.to_string(),
            (None, line) => format!("line:{:012}", line.unwrap_or(0)),
        }
    }

    /// What `key` filed: the location id, or the line.
    pub fn from_key(key: &str, reason: String, attempts: u32) -> Result<Self, DomainError> {
        match key.strip_prefix("line:") {
            Some(line) => {
                let line = line
                    .parse()
                    .map_err(|_| DomainError::Corrupt(format!("failure key '{key}'")))?;
                Ok(Failure::of_line(line, reason, attempts))
            }
            None => Ok(Failure::of_location(key.parse()?, reason, attempts)),
        }
    }
}

/// An accounted chunk as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRecord {
    pub seq: ChunkSeq,
    pub recorded_at: DateTime<Utc>,
    /// What became of each of its items; `None` for a chunk accounted by a release that kept
    /// no outcomes.
    pub outcomes: Option<Vec<ItemOutcome>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ledgered {
    /// This call accounted the chunk; the job after the update.
    Recorded(Job),
    /// The chunk was already accounted; the job as it is.
    Duplicate(Job),
}

impl Ledgered {
    pub fn job(&self) -> &Job {
        match self {
            Ledgered::Recorded(job) | Ledgered::Duplicate(job) => job,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// This call moved the job to its terminal status.
    Won(Job),
    /// Not every chunk is accounted yet (or fanout is not done).
    NotYet(Job),
    AlreadyTerminal(Job),
}

#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    Cancelling(Job),
    /// Too late: the job is terminal (or already failing).
    NotCancellable(Job),
}

/// What a pause or resume request found and did.
#[derive(Clone, Debug, PartialEq)]
pub enum PauseOutcome {
    /// This call moved the job (PAUSED, or back to RUNNING); the job after the change.
    Changed(Job),
    /// Nothing to change: the job is already where it was asked to go, or its status does
    /// not allow the move; the job as it is.
    Unchanged(Job),
}

/// What a release of a held job found and did.
#[derive(Clone, Debug, PartialEq)]
pub enum Released {
    /// This call moved the job; the job after.
    Released(Job),
    /// The job was not in a status the release starts from (released or ended already).
    NotHeld(Job),
}

/// A chunk a paused job's worker took off the queue. `token` names this parking: a chunk
/// parked again (a redelivery, or a second pause) gets a new one, so the fanout that re-sends
/// it removes only the parking it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedChunk {
    pub seq: ChunkSeq,
    pub body: String,
    pub token: String,
}

/// What `park_chunk` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parking {
    Parked,
    /// The job is not PAUSED (any more): nothing parked.
    NotPaused,
    /// The chunk is accounted already (a redelivery of one a worker finished while the
    /// pause began): nothing to park.
    Accounted,
}

/// A setting operators change while jobs run, stored with the jobs.
pub const WRITE_BUDGET_SETTING: &str = "write-budget";

/// Jobs: their records and status transitions, idempotency keys, active locks and undo
/// marks, the fanout cursor and what the sweeper looks for.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Writes the job (PENDING), its idempotency claim and the offer's active lock, atomically;
    /// for an undo also the mark that its parent has one (one undo per job).
    async fn create_job(
        &self,
        job: &Job,
        claim: Option<&IdempotencyClaim>,
    ) -> StoreResult<CreateOutcome>;
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// Deletes an offer that carries no location and has no active job, atomically with
    /// both checks (the active lock lives with the jobs).
    async fn delete_offer(&self, id: OfferId) -> StoreResult<OfferDeletion>;
    /// A brand's jobs, newest first.
    async fn page_brand_jobs(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Job>>;
    /// PENDING → RUNNING (sets `startedAt`); other statuses are left alone. The job as it is.
    async fn start_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// Compare-and-set of the fanout cursor (DESIGN §5.2).
    async fn advance_fanout(&self, id: JobId, step: &FanoutAdvance) -> StoreResult<Advanced>;
    /// The conditional terminal transition (DESIGN §5.3); releases the offer's active lock.
    async fn try_complete(&self, id: JobId) -> StoreResult<Completion>;
    /// PENDING/RUNNING/PAUSED → CANCELLING (a pause ends: its time is added to `pausedMs`).
    async fn request_cancel(&self, id: JobId) -> StoreResult<Option<CancelOutcome>>;
    /// PENDING/RUNNING → PAUSED at `at`.
    async fn pause_job(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<Option<PauseOutcome>>;
    /// PAUSED → RUNNING at `at`, adding the pause to `pausedMs` (and setting `startedAt` if
    /// the job was paused before it started).
    async fn resume_job(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<Option<PauseOutcome>>;
    /// RUNNING → FAILING; false if the job was not RUNNING.
    async fn mark_failing(&self, id: JobId) -> StoreResult<bool>;
    /// Releases a held job (`Transition::Approve`, `ApproveForLater`, `Due`) at `at`,
    /// conditionally on its status, recording its `approver`; its terminal event is still to
    /// be sent (`notifiedAt` cleared). `None` if the job does not exist.
    async fn release_job(
        &self,
        id: JobId,
        transition: Transition,
        approver: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Released>>;
    /// Up to `limit` SCHEDULED jobs whose `notBefore` is at or before `now`, soonest first.
    async fn due_jobs(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Job>>;
    /// Records that the offer starts at `at` (its schedule's `startsAt`), replacing an
    /// earlier time: the scheduler makes its start's job then.
    async fn put_offer_start(&self, offer: OfferId, at: DateTime<Utc>) -> StoreResult<()>;
    /// Up to `limit` offers whose start is at or before `now`, soonest first, with its time.
    async fn due_offer_starts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(OfferId, DateTime<Utc>)>>;
    /// Forgets the offer's start (made, or the offer is gone).
    async fn clear_offer_start(&self, offer: OfferId) -> StoreResult<()>;
    async fn mark_notified(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<()>;
    /// Jobs the sweeper should look at: not terminal and untouched since `idle_since`,
    /// or terminal without a notification and finished before `idle_since`.
    async fn unsettled_jobs(
        &self,
        idle_since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Job>>;
}

/// The chunk ledger (each chunk accounted once, with the job's counters), the failures it
/// records and the chunks parked while their job is paused. The same store as the jobs
/// (one transaction reaches both), seen by the steps that account chunks.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// The chunk ledger (DESIGN §5.1): chunk marker (with the chunk's outcomes, the rows of
    /// the job's report) + job counters (the outcomes counted) + `chunksDone` +
    /// `offer.locationsTotal += offer_delta`, all or nothing, once per (job, seq). What the
    /// outcomes mean is the job kind's business, not the ledger's. The tally's failures are
    /// durable once this returns.
    async fn record_chunk(
        &self,
        job: JobId,
        offer: Option<OfferId>,
        seq: ChunkSeq,
        tally: &ChunkTally,
        offer_delta: i64,
    ) -> StoreResult<Ledgered>;
    /// Up to `limit` of a job's accounted chunks from sequence number `from` on, in order,
    /// with their outcomes (fewer than `limit`: there are no more).
    async fn chunks_from(
        &self,
        id: JobId,
        from: ChunkSeq,
        limit: usize,
    ) -> StoreResult<Vec<ChunkRecord>>;
    /// Parks a chunk of a PAUSED job, atomically with that status and with the chunk not
    /// being accounted yet (nothing written otherwise). Parking a parked chunk again
    /// replaces its token.
    async fn park_chunk(&self, id: JobId, seq: ChunkSeq, body: &str) -> StoreResult<Parking>;
    /// Up to `limit` of a job's parked chunks.
    async fn parked_chunks(&self, id: JobId, limit: usize) -> StoreResult<Vec<ParkedChunk>>;
    /// Removes a parking (once its chunk is re-sent), unless the chunk was parked again
    /// since (another token).
    async fn unpark_chunk(&self, id: JobId, parked: &ParkedChunk) -> StoreResult<()>;
    async fn page_failures(
        &self,
        id: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Failure>>;
}
/// Settings operators change while jobs run (`WRITE_BUDGET_SETTING`), stored with the jobs.
#[async_trait]
pub trait RuntimeSettings: Send + Sync {
    /// A runtime setting (`WRITE_BUDGET_SETTING`), as stored.
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>>;
    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()>;
}

/// A message as received from a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// For this delivery. Delete with the latest receipt: with an older one SQS "might not"
    /// delete the message (the embedded backend never does).
    pub receipt: String,
    pub body: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
}

/// Most messages in one send (the SendMessageBatch limit).
pub const MAX_SEND_BATCH: usize = 10;

/// The limits every queue adapter enforces on a send, whatever its service would accept.
pub fn check_send_batch(bodies: &[String]) -> StoreResult<()> {
    if bodies.len() > MAX_SEND_BATCH {
        return Err(crate::StoreError::Invalid(format!(
            "a batch holds at most {MAX_SEND_BATCH} messages, not {}",
            bodies.len()
        )));
    }
    if let Some(big) = bodies
        .iter()
        .find(|b| b.len() > crate::domain::MAX_MESSAGE_BYTES)
    {
        return Err(crate::StoreError::Invalid(format!(
            "a message of {} bytes exceeds the {}-byte limit",
            big.len(),
            crate::domain::MAX_MESSAGE_BYTES
        )));
    }
    // SendMessageBatch limits the whole batch's payload as well as each message's.
    let total: usize = bodies.iter().map(String::len).sum();
    if total > crate::domain::MAX_MESSAGE_BYTES {
        return Err(crate::StoreError::Invalid(format!(
            "a batch of {total} bytes exceeds the {}-byte limit of one send",
            crate::domain::MAX_MESSAGE_BYTES
        )));
    }
    Ok(())
}

/// A delayed send waits at most `MAX_SEND_DELAY`.
pub fn check_delay(delay: Duration) -> StoreResult<()> {
    if delay > MAX_SEND_DELAY {
        return Err(crate::StoreError::Invalid(format!(
            "a message can be delayed by at most {} s, not {} s",
            MAX_SEND_DELAY.as_secs(),
            delay.as_secs_f64()
        )));
    }
    Ok(())
}

/// A queue with at-least-once delivery, visibility timeout, receive count and (when
/// configured) a dead-letter queue after `max_receive_count` deliveries.
#[async_trait]
pub trait Queue: Send + Sync {
    fn name(&self) -> &str;
    /// Sends up to 10 bodies (the SendMessageBatch limit); every entry or an error.
    async fn send_batch(&self, bodies: &[String]) -> StoreResult<()> {
        self.send_grouped(None, bodies).await
    }
    /// As `send_batch`, each message in message group `group` (a chunk's brand). Groups
    /// share the queue fairly: SQS fair queues on AWS, least recently served first on the
    /// embedded queue, so one group's backlog does not hold up another's messages.
    async fn send_grouped(&self, group: Option<&str>, bodies: &[String]) -> StoreResult<()>;
    /// Sends one body that becomes visible after `delay` (at most 15 minutes, as SQS's
    /// DelaySeconds).
    async fn send_delayed(&self, body: &str, delay: Duration) -> StoreResult<()>;
    /// Up to `max` (≤ 10) messages, waiting up to `wait` for the first (long polling).
    async fn receive(&self, max: usize, wait: Duration) -> StoreResult<Vec<ReceivedMessage>>;
    /// Deletes delivered messages by receipt (up to 10).
    async fn delete(&self, receipts: &[String]) -> StoreResult<()>;
    /// Messages waiting plus in flight (approximate, as SQS reports them).
    async fn depth(&self) -> StoreResult<u64>;
}

/// What a queue carries, encoded and decoded in one place: a sender hands a
/// [`TypedQueue`] the message, never a body it encoded itself.
pub trait QueueMessage: Sized + Send + Sync + 'static {
    fn encode(&self) -> String;
    /// The message a body holds; an error says why it holds none.
    fn decode(body: &str) -> Result<Self, crate::domain::DomainError>;
}

impl QueueMessage for crate::domain::FanoutMessage {
    fn encode(&self) -> String {
        crate::domain::FanoutMessage::encode(self)
    }
    fn decode(body: &str) -> Result<Self, crate::domain::DomainError> {
        crate::domain::FanoutMessage::decode(body)
    }
}

impl QueueMessage for crate::domain::ChunkMessage {
    fn encode(&self) -> String {
        crate::domain::ChunkMessage::encode(self)
    }
    fn decode(body: &str) -> Result<Self, crate::domain::DomainError> {
        crate::domain::ChunkMessage::decode(body)
    }
}

impl QueueMessage for crate::domain::WebhookMessage {
    fn encode(&self) -> String {
        crate::domain::WebhookMessage::encode(self)
    }
    fn decode(body: &str) -> Result<Self, crate::domain::DomainError> {
        crate::domain::WebhookMessage::decode(body)
    }
}

/// A queue of one kind of message (`TypedQueue<ChunkMessage>`) over a backend's [`Queue`]:
/// sends take messages and encode them here. Receiving, deleting and the depth are the
/// queue's own; [`TypedQueue::raw`] is the untyped queue, for the consumer loops and for
/// tests that put on a queue what no sender would.
pub struct TypedQueue<M> {
    queue: Arc<dyn Queue>,
    of: std::marker::PhantomData<fn(M) -> M>,
}

impl<M> Clone for TypedQueue<M> {
    fn clone(&self) -> Self {
        TypedQueue {
            queue: self.queue.clone(),
            of: std::marker::PhantomData,
        }
    }
}

impl<M> AsRef<dyn Queue> for TypedQueue<M> {
    fn as_ref(&self) -> &(dyn Queue + 'static) {
        self.queue.as_ref()
    }
}

impl<M: QueueMessage> TypedQueue<M> {
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        TypedQueue {
            queue,
            of: std::marker::PhantomData,
        }
    }

    /// Sends one message.
    pub async fn send(&self, message: &M) -> StoreResult<()> {
        self.queue.send_batch(&[message.encode()]).await
    }

    /// Sends up to 10 messages in one batch, each in message group `group`.
    pub async fn send_grouped(&self, group: Option<&str>, messages: &[M]) -> StoreResult<()> {
        let bodies: Vec<String> = messages.iter().map(QueueMessage::encode).collect();
        self.queue.send_grouped(group, &bodies).await
    }

    /// Sends one message that becomes visible after `delay` (at most [`MAX_SEND_DELAY`]).
    pub async fn send_delayed(&self, message: &M, delay: Duration) -> StoreResult<()> {
        self.queue.send_delayed(&message.encode(), delay).await
    }

    /// The message a received body holds.
    pub fn decode(&self, body: &str) -> Result<M, crate::domain::DomainError> {
        M::decode(body)
    }

    /// The untyped queue underneath.
    pub fn raw(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    pub fn name(&self) -> &str {
        self.queue.name()
    }

    pub async fn receive(&self, max: usize, wait: Duration) -> StoreResult<Vec<ReceivedMessage>> {
        self.queue.receive(max, wait).await
    }

    pub async fn delete(&self, receipts: &[String]) -> StoreResult<()> {
        self.queue.delete(receipts).await
    }

    pub async fn depth(&self) -> StoreResult<u64> {
        self.queue.depth().await
    }
}

/// Job events onto the event bus: SNS on AWS (where AWS-native consumers can subscribe
/// too), the webhook queue itself on the embedded backend. Either way every event reaches
/// the webhook queue, raw.
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()>;
}

/// Webhook subscriptions and the record of their deliveries.
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Stores a new subscription; one with the same id already there is returned as it is
    /// (a replayed `callbackUrl`), secret included.
    async fn create_subscription(&self, subscription: &Subscription) -> StoreResult<Subscription>;
    async fn get_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>>;
    /// A brand's subscriptions, newest first.
    async fn page_brand_subscriptions(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Subscription>>;
    /// False if there was no such subscription.
    async fn delete_subscription(&self, id: SubscriptionId) -> StoreResult<bool>;
    /// The new secret signs from now on; the one it replaces also signs until `previous_until`.
    async fn rotate_secret(
        &self,
        id: SubscriptionId,
        secret: &WebhookSecret,
        previous_until: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>>;
    /// Nothing more is sent to it, for `reason` (the receiver said 410 Gone, or every
    /// delivery failed for days).
    async fn disable_subscription(&self, id: SubscriptionId, reason: &str) -> StoreResult<()>;
    /// Active again: its reason and failing streak cleared. `None` if there is no such
    /// subscription.
    async fn enable_subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>>;
    /// An attempt failed at `at`: the subscription's failing streak starts then unless one
    /// has started already. When the streak started (`None`: no such subscription).
    async fn record_failing(
        &self,
        id: SubscriptionId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<DateTime<Utc>>>;
    /// An attempt succeeded: no failing streak.
    async fn clear_failing(&self, id: SubscriptionId) -> StoreResult<()>;
    /// Takes the subscription's next send slot (`SendSlot::plan` of its stored next free
    /// slot, `spacing_us` apart, at most `max_ahead_us` away), atomically however many
    /// deliverers ask at once; `None` if there is no such subscription. Times in
    /// microseconds since the epoch.
    async fn take_send_slot(
        &self,
        id: SubscriptionId,
        now_us: i64,
        spacing_us: i64,
        max_ahead_us: i64,
    ) -> StoreResult<Option<SendSlot>>;
    /// Stores the delivery unless one with its id exists; the delivery as stored.
    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<Delivery>;
    async fn get_delivery(
        &self,
        subscription: SubscriptionId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>>;
    /// Writes the delivery's new state if it still has `expected_attempts` attempts (no
    /// other attempt got there first); false otherwise.
    async fn update_delivery(
        &self,
        delivery: &Delivery,
        expected_attempts: u32,
    ) -> StoreResult<bool>;
    /// A subscription's deliveries, newest first.
    async fn page_subscription_deliveries(
        &self,
        subscription: SubscriptionId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>>;
    /// A job's deliveries, newest first.
    async fn page_job_deliveries(
        &self,
        job: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>>;
    /// Pending deliveries whose next attempt was due before `before` (oldest first).
    async fn overdue_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    /// Keeps `event` in its brand's event log (`EVENT_RETENTION`), what replays read; an
    /// event kept already is left as it is.
    async fn record_event(&self, event: &Event) -> StoreResult<()>;
    /// A brand's events that occurred in `[since, until)`, oldest first.
    async fn page_brand_events(
        &self,
        brand: BrandId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Event>>;
}

/// Whether the backend can serve: what `GET /healthz` reports.
#[async_trait]
pub trait Health: Send + Sync {
    /// `Err` says what is wrong, naming the resource (e.g. the database file).
    async fn check(&self) -> Result<(), String>;
}

/// A backend whose resources are managed services: healthy as long as this process runs.
pub struct AlwaysHealthy;

#[async_trait]
impl Health for AlwaysHealthy {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Every port the pipeline uses, one backend's worth.
#[derive(Clone)]
pub struct Ports {
    pub catalog: Arc<dyn Catalog>,
    /// What imports write to the locations (the same store as `catalog`).
    pub location_imports: Arc<dyn LocationImports>,
    /// Import records (the same store as `jobs`).
    pub imports: Arc<dyn Imports>,
    /// Imports' files.
    pub uploads: Arc<dyn Uploads>,
    pub jobs: Arc<dyn JobStore>,
    /// The chunk ledger, failures and parked chunks (the same store as `jobs`).
    pub ledger: Arc<dyn Ledger>,
    /// Settings changed while jobs run (the same store as `jobs`).
    pub runtime_settings: Arc<dyn RuntimeSettings>,
    pub fanout_queue: TypedQueue<crate::domain::FanoutMessage>,
    pub chunk_queue: TypedQueue<crate::domain::ChunkMessage>,
    pub chunk_dlq: TypedQueue<crate::domain::ChunkMessage>,
    pub events: Arc<dyn EventBus>,
    pub webhooks: Arc<dyn Webhooks>,
    /// Events (raw) and scheduled delivery attempts, for the webhook deliverer.
    pub webhook_queue: TypedQueue<crate::domain::WebhookMessage>,
    pub health: Arc<dyn Health>,
    /// The time of day every handler and pipeline step reads (the stores hold the same one).
    pub clock: crate::clock::Clock,
    /// Readers of job sources the core does not define (`crate::kinds::page_ids`).
    pub sources: crate::kinds::SourceReaders,
}

/// The longest delay of a delayed send (SQS's DelaySeconds maximum).
pub const MAX_SEND_DELAY: Duration = Duration::from_secs(900);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_opaque_and_round_trip() {
        let cursor = Cursor::from_position("LOC#1234");
        let encoded = cursor.encode();
        assert!(!encoded.contains("LOC"));
        assert_eq!(Cursor::decode(&encoded).unwrap(), cursor);
        assert!(Cursor::decode("%%%").is_err());
    }
}
