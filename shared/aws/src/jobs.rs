//! JobStore port on DynamoDB. Every multi-item change is one TransactWriteItems: job
//! creation (job + active lock + idempotency claim), the chunk ledger (chunk marker + job
//! counters + offer total), and completion (status + lock release).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::batch_get;
use super::items::*;
use super::sdk_error::{cancellation, classify, condition_failed, retryable_cancel};
use crate::clock::Clock;
use crate::domain::{
    decode_outcomes, BrandId, ChunkSeq, ChunkTally, Import, ImportId, Job, JobId, JobStatus,
    OfferId, Transition,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{
    Advanced, CancelOutcome, ChunkRecord, Completion, CreateOutcome, Cursor, Failure,
    FanoutAdvance, IdempotencyClaim, Imports, JobStore, Ledger, Ledgered, OfferDeletion, Page,
    ParkedChunk, Parking, PauseOutcome, Released, RuntimeSettings,
};

/// How long an `Idempotency-Key` is remembered (DynamoDB TTL, checked on read too).
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;
/// An offer's start, for the scheduler: `OFFERSTART#{offer}` / `#START`.
const OFFER_START_PREFIX: &str = "OFFERSTART#";
const OFFER_START_SK: &str = "#START";

fn offer_start_pk(offer: OfferId) -> String {
    format!("{OFFER_START_PREFIX}{offer}")
}

/// The chunk marker's attribute holding its outcomes (binary, `ChunkTally::encode`).
const OUTCOMES: &str = "outcomes";
/// How long a finished job's items stay before TTL removes them.
const JOB_RETENTION_SECS: i64 = 30 * 24 * 60 * 60;
/// Read-then-write rounds a pause's end gets when the job changes between the two.
const PAUSE_RACE_ROUNDS: usize = 3;
/// BatchWriteItem takes at most 25 items.
const BATCH_WRITE: usize = 25;

pub struct DynamoJobs {
    ddb: Client,
    table: String,
    catalog_table: String,
    clock: Clock,
}

/// Why a parking transaction was refused, if for a reason of its own: its item at `paused`
/// checks that the job is PAUSED, its last (2) that the chunk is not in the ledger.
fn parking_refused(
    reasons: &[aws_sdk_dynamodb::types::CancellationReason],
    paused: usize,
) -> Option<Parking> {
    if condition_failed(reasons.get(paused)) {
        Some(Parking::NotPaused)
    } else if condition_failed(reasons.get(2)) {
        Some(Parking::Accounted)
    } else {
        None
    }
}

fn pause_outcome(result: Result<Job, Option<Job>>) -> Option<PauseOutcome> {
    match result {
        Ok(job) => Some(PauseOutcome::Changed(job)),
        Err(Some(job)) => Some(PauseOutcome::Unchanged(job)),
        Err(None) => None,
    }
}

/// `#s IN (:s0, :s1, …)` and its values: a job status condition built from the state
/// machine's list (`#s` names the `status` attribute).
fn status_in(statuses: &[JobStatus]) -> (String, HashMap<String, AttributeValue>) {
    let values: HashMap<String, AttributeValue> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| (format!(":s{i}"), s(status.as_str())))
        .collect();
    let names: Vec<String> = (0..statuses.len()).map(|i| format!(":s{i}")).collect();
    (format!("#s IN ({})", names.join(", ")), values)
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(e.to_string())
}

impl DynamoJobs {
    pub fn new(ddb: Client, table: &str, catalog_table: &str, clock: Clock) -> Self {
        DynamoJobs {
            ddb,
            table: table.to_owned(),
            catalog_table: catalog_table.to_owned(),
            clock,
        }
    }

    async fn load(&self, id: JobId) -> StoreResult<Option<Job>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), JOB_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        out.item.map(job_from_item).transpose()
    }

    async fn must_load(&self, id: JobId) -> StoreResult<Job> {
        self.load(id)
            .await?
            .ok_or_else(|| StoreError::Invalid(format!("job {id} does not exist")))
    }

    /// A conditional UpdateItem returning the new item, or the current one (if any) when
    /// the condition failed.
    async fn conditional_update(
        &self,
        id: JobId,
        update: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
        names: Option<HashMap<String, String>>,
    ) -> StoreResult<Result<Job, Option<Job>>> {
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), JOB_SK)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .set_expression_attribute_names(names)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Ok(job_from_item(out.attributes.unwrap_or_default())?)),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                let UpdateItemError::ConditionalCheckFailedException(ccf) = e.into_err() else {
                    unreachable!("matched above")
                };
                match ccf.item() {
                    Some(item) => Ok(Err(Some(job_from_item(item.clone())?))),
                    None => Ok(Err(self.load(id).await?)),
                }
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    /// Ends the pause that began at `paused_at`: status `to`, its time added to pausedMs
    /// (and `startedAt` set at `started` if the job never started), only if the job is
    /// still in that pause.
    async fn end_pause(
        &self,
        id: JobId,
        paused_at: DateTime<Utc>,
        to: Transition,
        started: Option<DateTime<Utc>>,
    ) -> StoreResult<Result<Job, Option<Job>>> {
        debug_assert!(to.allows(JobStatus::Paused), "{to:?} does not end a pause");
        let now = started.unwrap_or_else(|| self.clock.now());
        let paused_for = (now - paused_at).num_milliseconds().max(0);
        self.conditional_update(
            id,
            "SET #s = :to, pausedMs = if_not_exists(pausedMs, :zero) + :for, \
             startedAt = if_not_exists(startedAt, :now), updatedAt = :now REMOVE pausedAt",
            "#s = :paused AND pausedAt = :at",
            HashMap::from([
                (":to".into(), s(to.to().as_str())),
                (":paused".into(), s(JobStatus::Paused.as_str())),
                (":at".into(), n(paused_at.timestamp_millis())),
                (":for".into(), n(paused_for)),
                (":zero".into(), n(0)),
                (":now".into(), n(now.timestamp_millis())),
            ]),
            Some(HashMap::from([("#s".into(), "status".into())])),
        )
        .await
    }

    async fn put_failures(&self, job: JobId, failures: &[Failure]) -> StoreResult<()> {
        for batch in failures.chunks(BATCH_WRITE) {
            let mut requests = Vec::with_capacity(batch.len());
            for f in batch {
                let put = PutRequest::builder()
                    .set_item(Some(to_item(&FailureItem::of(job, f))?))
                    .build()
                    .map_err(internal)?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = Some(HashMap::from([(self.table.clone(), requests)]));
            let mut round = 0u32;
            while let Some(items) = pending.take().filter(|p| !p.is_empty()) {
                round += 1;
                if round > 10 {
                    return Err(StoreError::unavailable(
                        "BatchWriteItem kept returning unprocessed items",
                    ));
                }
                if round > 1 {
                    // UnprocessedItems means throttling: back off before the rest.
                    tokio::time::sleep(Duration::from_millis(50 << round.min(6))).await;
                }
                let out = self
                    .ddb
                    .batch_write_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(|e| classify("BatchWriteItem", e))?;
                pending = out.unprocessed_items;
            }
        }
        Ok(())
    }

    async fn batch_get_jobs(&self, ids: &[JobId]) -> StoreResult<HashMap<JobId, Job>> {
        let keys = ids.iter().map(|id| key(job_pk(*id), JOB_SK)).collect();
        batch_get(&self.ddb, &self.table, keys)
            .await?
            .into_iter()
            .map(|item| job_from_item(item).map(|job| (job.id, job)))
            .collect()
    }

    /// Job ids from a keys-only index query, in index order, plus the next cursor.
    async fn query_job_ids(
        &self,
        index: &str,
        partition: (&str, String),
        forward: bool,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<(Vec<JobId>, Option<Cursor>)> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(format!("{} = :p", partition.0))
            .expression_attribute_values(":p", s(partition.1))
            .scan_index_forward(forward)
            .set_exclusive_start_key(start_key(after)?)
            .limit(limit.min(1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let ids = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk
                    .strip_prefix("JOB#")
                    .ok_or_else(|| internal(format!("bad job key '{pk}'")))?
                    .parse::<JobId>()
                    .map_err(StoreError::from),
                _ => Err(internal("job index item without pk")),
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((ids, cursor_of(out.last_evaluated_key)?))
    }

    /// The keys in the scheduler's `gsi2` partition due by `now`, soonest first: scheduled
    /// jobs (`JOB#…`) and offers' starts (`OFFERSTART#…`) side by side.
    async fn due_keys(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Item>> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :p AND gsi2sk <= :due")
            .expression_attribute_values(":p", s(SCHEDULED))
            // After every key of this millisecond ('~' sorts after them).
            .expression_attribute_values(":due", s(scheduled_key(now.timestamp_millis(), "~")))
            .limit(limit.clamp(1, 1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        Ok(out.items.unwrap_or_default())
    }
}

#[async_trait]
impl JobStore for DynamoJobs {
    async fn create_job(
        &self,
        job: &Job,
        claim: Option<&IdempotencyClaim>,
    ) -> StoreResult<CreateOutcome> {
        let now = self.clock.now().timestamp();
        let mut writes = Vec::with_capacity(3);
        let mut claim_index = None;
        if let Some(claim) = claim {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(idemp_pk(&claim.key_hash)))
                .item("sk", s(IDEMP_SK))
                .item("requestHash", s(&claim.request_hash))
                .item("jobId", s(job.id.to_string()))
                .item("expiresAt", n(now + IDEMPOTENCY_TTL_SECS))
                // An expired claim TTL has not deleted yet counts as absent.
                .condition_expression("attribute_not_exists(pk) OR expiresAt < :now")
                .expression_attribute_values(":now", n(now))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(internal)?;
            claim_index = Some(writes.len());
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        let mut undo_index = None;
        if let Some(parent) = job.spec.once_per_parent() {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(undo_pk(parent)))
                .item("sk", s(UNDO_SK))
                .item("jobId", s(job.id.to_string()))
                .condition_expression("attribute_not_exists(pk)")
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(internal)?;
            undo_index = Some(writes.len());
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        // The offer must still exist (DELETE /offers/{id} may have run since it was read),
        // and have no other active job. A job on no offer (an import) takes no lock.
        let mut offer_index = None;
        let mut lock_index = None;
        if let Some(offer) = job.offer_id {
            offer_index = Some(writes.len());
            writes.push(
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.catalog_table)
                            .set_key(Some(key(offer_pk(offer), OFFER_SK)))
                            .condition_expression("attribute_exists(pk)")
                            .build()
                            .map_err(internal)?,
                    )
                    .build(),
            );
            lock_index = Some(writes.len());
            writes.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .item("pk", s(active_pk(offer)))
                            .item("sk", s(ACTIVE_SK))
                            .item("jobId", s(job.id.to_string()))
                            .condition_expression("attribute_not_exists(pk)")
                            .return_values_on_condition_check_failure(
                                ReturnValuesOnConditionCheckFailure::AllOld,
                            )
                            .build()
                            .map_err(internal)?,
                    )
                    .build(),
            );
        }
        let job_index = writes.len();
        writes.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(to_item(&JobItem::of(job))?))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(internal)?,
                )
                .build(),
        );
        let result = self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        let reasons = match result {
            Ok(_) => return Ok(CreateOutcome::Created(self.must_load(job.id).await?)),
            Err(e) => cancellation(e)?,
        };
        if let Some(i) = claim_index.filter(|i| condition_failed(reasons.get(*i))) {
            let old = reasons[i].item().cloned().unwrap_or_default();
            let text = |name: &str| match old.get(name) {
                Some(AttributeValue::S(v)) => v.clone(),
                _ => String::new(),
            };
            let same = claim.is_some_and(|c| c.request_hash == text("requestHash"));
            if !same {
                return Ok(CreateOutcome::KeyReused);
            }
            let first: JobId = text("jobId").parse()?;
            return Ok(CreateOutcome::Replayed(self.must_load(first).await?));
        }
        if let Some(lock_index) = lock_index.filter(|i| condition_failed(reasons.get(*i))) {
            let holder = match reasons[lock_index].item().and_then(|i| i.get("jobId")) {
                Some(AttributeValue::S(id)) => id.parse()?,
                _ => return Err(internal("active lock without a jobId")),
            };
            // A timed-out attempt may have been applied before the SDK retried it: then
            // the lock is our own and the job exists.
            if holder == job.id {
                return Ok(CreateOutcome::Created(self.must_load(job.id).await?));
            }
            return Ok(CreateOutcome::OfferBusy(holder));
        }
        if offer_index.is_some_and(|i| condition_failed(reasons.get(i))) {
            return Ok(CreateOutcome::OfferGone);
        }
        if let Some(i) = undo_index.filter(|i| condition_failed(reasons.get(*i))) {
            let holder = match reasons[i].item().and_then(|item| item.get("jobId")) {
                Some(AttributeValue::S(id)) => id.parse()?,
                _ => return Err(internal("undo mark without a jobId")),
            };
            if holder == job.id {
                return Ok(CreateOutcome::Created(self.must_load(job.id).await?));
            }
            return Ok(CreateOutcome::UndoExists(holder));
        }
        if condition_failed(reasons.get(job_index)) {
            // Its id was chosen before (an import's): a replay of this very creation.
            return Ok(CreateOutcome::Replayed(self.must_load(job.id).await?));
        }
        Err(retryable_cancel(&reasons))
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.load(id).await
    }

    async fn delete_offer(&self, id: OfferId) -> StoreResult<OfferDeletion> {
        let idle = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(active_pk(id), ACTIVE_SK)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(internal)?;
        let delete = Delete::builder()
            .table_name(&self.catalog_table)
            .set_key(Some(key(offer_pk(id), OFFER_SK)))
            .condition_expression("attribute_exists(pk) AND locationsTotal = :zero")
            .expression_attribute_values(":zero", n(0))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(internal)?;
        // Its standing rule, if it has one, goes with it, and the rule's registry copy.
        let rule = Delete::builder()
            .table_name(&self.catalog_table)
            .set_key(Some(key(offer_pk(id), RULE_SK)))
            .build()
            .map_err(internal)?;
        let registered = Delete::builder()
            .table_name(&self.catalog_table)
            .set_key(Some(key(RULES_PK.to_owned(), &offer_pk(id))))
            .build()
            .map_err(internal)?;
        let result = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(idle).build())
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().delete(rule).build())
            .transact_items(TransactWriteItem::builder().delete(registered).build())
            .send()
            .await;
        let Err(e) = result else {
            return Ok(OfferDeletion::Deleted);
        };
        let reasons = cancellation(e)?;
        if condition_failed(reasons.first()) {
            return match reasons[0].item().and_then(|i| i.get("jobId")) {
                Some(AttributeValue::S(job)) => Ok(OfferDeletion::Busy(job.parse()?)),
                _ => Err(StoreError::unavailable("active lock changed while read")),
            };
        }
        if condition_failed(reasons.get(1)) {
            return Ok(match reasons[1].item() {
                None => OfferDeletion::NotFound,
                Some(item) => match item.get("locationsTotal") {
                    Some(AttributeValue::N(total)) => {
                        OfferDeletion::HasLinks(total.parse().unwrap_or_default())
                    }
                    _ => OfferDeletion::HasLinks(0),
                },
            });
        }
        Err(retryable_cancel(&reasons))
    }

    async fn page_brand_jobs(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Job>> {
        let (ids, next) = self
            .query_job_ids("gsi1", ("gsi1pk", brand_key(brand)), false, after, limit)
            .await?;
        let mut found = self.batch_get_jobs(&ids).await?;
        let items = ids.iter().filter_map(|id| found.remove(id)).collect();
        Ok(Page { items, next })
    }

    async fn start_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let now = self.clock.now().timestamp_millis();
        let (condition, mut values) = status_in(Transition::Start.from());
        values.insert(":to".into(), s(Transition::Start.to().as_str()));
        values.insert(":now".into(), n(now));
        let result = self
            .conditional_update(
                id,
                "SET #s = :to, startedAt = :now, updatedAt = :now",
                &condition,
                values,
                Some(HashMap::from([("#s".into(), "status".into())])),
            )
            .await?;
        Ok(match result {
            Ok(job) => Some(job),
            Err(current) => current,
        })
    }

    async fn advance_fanout(&self, id: JobId, step: &FanoutAdvance) -> StoreResult<Advanced> {
        let mut values = HashMap::from([
            (":done".to_owned(), AttributeValue::Bool(step.done)),
            (":open".to_owned(), AttributeValue::Bool(false)),
            (":chunks".to_owned(), n(step.chunks_added)),
            (":ids".to_owned(), n(step.ids_added)),
            (":now".to_owned(), n(self.clock.now().timestamp_millis())),
        ]);
        let mut update =
            "SET fanoutDone = :done, updatedAt = :now ADD chunksTotal :chunks, #total :ids"
                .to_owned();
        match &step.next_cursor {
            Some(next) => {
                update = format!("SET fanoutCursor = :next, {}", &update["SET ".len()..]);
                values.insert(":next".into(), s(next));
            }
            None => update.push_str(" REMOVE fanoutCursor"),
        }
        let mut condition = match &step.prev_cursor {
            Some(prev) => {
                values.insert(":prev".into(), s(prev));
                "fanoutCursor = :prev AND fanoutDone = :open".to_owned()
            }
            None => "attribute_not_exists(fanoutCursor) AND fanoutDone = :open".to_owned(),
        };
        // A step that adds no chunk (a close) never leaves accounted chunks outside
        // `chunksTotal`: a page sent and accounted before its own step lands supersedes it.
        // (A step adding chunks may find its own page's chunks accounted already.)
        if step.chunks_added == 0 {
            condition.push_str(" AND chunksDone <= chunksTotal");
        }
        Ok(
            match self
                .conditional_update(
                    id,
                    &update,
                    &condition,
                    values,
                    // `total` is a DynamoDB reserved word.
                    Some(HashMap::from([("#total".into(), "total".into())])),
                )
                .await?
            {
                Ok(job) => Advanced::Applied(job),
                Err(Some(job)) => Advanced::Superseded(job),
                Err(None) => return Err(StoreError::Invalid(format!("job {id} does not exist"))),
            },
        )
    }

    async fn try_complete(&self, id: JobId) -> StoreResult<Completion> {
        let job = self.must_load(id).await?;
        if job.status.is_terminal() {
            return Ok(Completion::AlreadyTerminal(job));
        }
        let Some(next) = job.status.completes_as(&job.counters) else {
            return Ok(Completion::NotYet(job));
        };
        if !job.is_fully_accounted() {
            return Ok(Completion::NotYet(job));
        }
        let now = self.clock.now();
        let finish = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), JOB_SK)))
            .update_expression(
                "SET #s = :next, finishedAt = :now, updatedAt = :now, expiresAt = :exp",
            )
            .condition_expression("#s = :cur AND fanoutDone = :t AND chunksDone >= chunksTotal")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":next", s(next.as_str()))
            .expression_attribute_values(":cur", s(job.status.as_str()))
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":exp", n(now.timestamp() + JOB_RETENTION_SECS))
            .build()
            .map_err(internal)?;
        let mut request = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(finish).build());
        if let Some(offer) = job.offer_id {
            let release = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(active_pk(offer), ACTIVE_SK)))
                .condition_expression("attribute_not_exists(pk) OR jobId = :id")
                .expression_attribute_values(":id", s(id.to_string()))
                .build()
                .map_err(internal)?;
            request = request.transact_items(TransactWriteItem::builder().delete(release).build());
        }
        let result = request.send().await;
        match result {
            Ok(_) => Ok(Completion::Won(self.must_load(id).await?)),
            Err(e) => {
                let reasons = cancellation(e)?;
                if condition_failed(reasons.first()) {
                    let now = self.must_load(id).await?;
                    Ok(if now.status.is_terminal() {
                        Completion::AlreadyTerminal(now)
                    } else {
                        Completion::NotYet(now)
                    })
                } else {
                    Err(retryable_cancel(&reasons))
                }
            }
        }
    }

    async fn request_cancel(&self, id: JobId) -> StoreResult<Option<CancelOutcome>> {
        // One update from the statuses without a pause to end; a PAUSED job below.
        let unpaused: Vec<JobStatus> = Transition::Cancel
            .from()
            .iter()
            .copied()
            .filter(|s| *s != JobStatus::Paused)
            .collect();
        let (condition, mut values) = status_in(&unpaused);
        values.insert(":to".into(), s(Transition::Cancel.to().as_str()));
        values.insert(":now".into(), n(self.clock.now().timestamp_millis()));
        let mut result = self
            .conditional_update(
                id,
                "SET #s = :to, updatedAt = :now",
                &condition,
                values,
                Some(HashMap::from([("#s".into(), "status".into())])),
            )
            .await?;
        // A paused job: the pause ends with the cancel, its time added to pausedMs.
        for _ in 0..PAUSE_RACE_ROUNDS {
            let Err(Some(job)) = &result else { break };
            let Some(paused_at) = job.paused_at.filter(|_| job.status == JobStatus::Paused) else {
                break;
            };
            result = self
                .end_pause(job.id, paused_at, Transition::Cancel, None)
                .await?;
        }
        Ok(match result {
            Ok(job) => Some(CancelOutcome::Cancelling(job)),
            Err(None) => None,
            Err(Some(job)) if job.status == JobStatus::Cancelling => {
                Some(CancelOutcome::Cancelling(job))
            }
            Err(Some(job)) => Some(CancelOutcome::NotCancellable(job)),
        })
    }

    async fn pause_job(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<Option<PauseOutcome>> {
        let (condition, mut values) = status_in(Transition::Pause.from());
        values.insert(":to".into(), s(Transition::Pause.to().as_str()));
        values.insert(":at".into(), n(at.timestamp_millis()));
        let result = self
            .conditional_update(
                id,
                "SET #s = :to, pausedAt = :at, updatedAt = :at",
                &condition,
                values,
                Some(HashMap::from([("#s".into(), "status".into())])),
            )
            .await?;
        Ok(pause_outcome(result))
    }

    async fn resume_job(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<Option<PauseOutcome>> {
        let Some(mut job) = self.load(id).await? else {
            return Ok(None);
        };
        for _ in 0..PAUSE_RACE_ROUNDS {
            let Some(paused_at) = job.paused_at.filter(|_| job.status == JobStatus::Paused) else {
                return Ok(Some(PauseOutcome::Unchanged(job)));
            };
            match self
                .end_pause(id, paused_at, Transition::Resume, Some(at))
                .await?
            {
                Ok(job) => return Ok(Some(PauseOutcome::Changed(job))),
                Err(None) => return Ok(None),
                Err(Some(now)) => job = now,
            }
        }
        Err(StoreError::unavailable(format!(
            "job {id} changed under {PAUSE_RACE_ROUNDS} resume attempts"
        )))
    }

    async fn mark_failing(&self, id: JobId) -> StoreResult<bool> {
        let (condition, mut values) = status_in(Transition::StartFailing.from());
        values.insert(":to".into(), s(Transition::StartFailing.to().as_str()));
        values.insert(":now".into(), n(self.clock.now().timestamp_millis()));
        let result = self
            .conditional_update(
                id,
                "SET #s = :to, updatedAt = :now",
                &condition,
                values,
                Some(HashMap::from([("#s".into(), "status".into())])),
            )
            .await?;
        Ok(result.is_ok())
    }

    async fn release_job(
        &self,
        id: JobId,
        transition: Transition,
        approver: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Released>> {
        let Some(mut job) = self.load(id).await? else {
            return Ok(None);
        };
        // Into the sweeper's partition, or (approved for later) the scheduler's.
        job.status = transition.to();
        let (condition, mut values) = status_in(transition.from());
        values.insert(":to".into(), s(transition.to().as_str()));
        values.insert(":now".into(), n(at.timestamp_millis()));
        values.insert(":p".into(), s(sweep_partition(job.status)));
        values.insert(":k".into(), s(sweep_key(&job)));
        let mut update = "SET #s = :to, updatedAt = :now, gsi2pk = :p, gsi2sk = :k".to_owned();
        if let Some(approver) = approver {
            values.insert(":by".into(), s(approver));
            update.push_str(", approvedBy = :by");
        }
        update.push_str(" REMOVE notifiedAt");
        let result = self
            .conditional_update(
                id,
                &update,
                &condition,
                values,
                Some(HashMap::from([("#s".into(), "status".into())])),
            )
            .await?;
        Ok(match result {
            Ok(job) => Some(Released::Released(job)),
            Err(job) => job.map(Released::NotHeld),
        })
    }

    async fn due_jobs(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Job>> {
        let ids = self
            .due_keys(now, limit.min(100))
            .await?
            .iter()
            .filter_map(|item| item.get("pk").and_then(|pk| pk.as_s().ok()))
            .filter_map(|pk| pk.strip_prefix("JOB#"))
            .map(|id| id.parse::<JobId>().map_err(StoreError::from))
            .collect::<StoreResult<Vec<_>>>()?;
        let found = self.batch_get_jobs(&ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.get(id))
            .filter(|job| job.status == JobStatus::Scheduled)
            .cloned()
            .collect())
    }

    async fn put_offer_start(&self, offer: OfferId, at: DateTime<Utc>) -> StoreResult<()> {
        // In the scheduler's partition of `gsi2`, beside the scheduled jobs.
        let mut item = key(offer_start_pk(offer), OFFER_START_SK);
        item.extend([
            ("startsAt".to_owned(), n(at.timestamp_millis())),
            ("gsi2pk".to_owned(), s(SCHEDULED)),
            (
                "gsi2sk".to_owned(),
                s(scheduled_key(
                    at.timestamp_millis(),
                    &format!("offer:{offer}"),
                )),
            ),
        ]);
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    async fn due_offer_starts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(OfferId, DateTime<Utc>)>> {
        let mut due = Vec::new();
        for item in self.due_keys(now, 1_000).await? {
            let Some(offer) = item
                .get("pk")
                .and_then(|pk| pk.as_s().ok())
                .and_then(|pk| pk.strip_prefix(OFFER_START_PREFIX))
            else {
                continue;
            };
            let at = item
                .get("gsi2sk")
                .and_then(|k| k.as_s().ok())
                .and_then(|k| k.split('#').next())
                .and_then(|ms| ms.parse::<i64>().ok())
                .ok_or_else(|| internal(format!("offer {offer}'s start has no time")))?;
            due.push((offer.parse()?, from_ms(at)));
            if due.len() >= limit {
                break;
            }
        }
        Ok(due)
    }

    async fn clear_offer_start(&self, offer: OfferId) -> StoreResult<()> {
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(offer_start_pk(offer), OFFER_START_SK)))
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e))?;
        Ok(())
    }

    async fn mark_notified(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<()> {
        // Leaving the sparse index is what takes the job off the sweeper's list.
        self.conditional_update(
            id,
            "SET notifiedAt = :at REMOVE gsi2pk, gsi2sk",
            "attribute_exists(pk) AND attribute_not_exists(notifiedAt)",
            HashMap::from([(":at".into(), n(at.timestamp_millis()))]),
            None,
        )
        .await?
        .ok();
        Ok(())
    }

    async fn unsettled_jobs(
        &self,
        idle_since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Job>> {
        let mut idle = Vec::new();
        let mut cursor = None;
        loop {
            let (ids, next) = self
                .query_job_ids(
                    "gsi2",
                    ("gsi2pk", UNSETTLED.to_owned()),
                    true,
                    cursor.as_ref(),
                    100,
                )
                .await?;
            let found = self.batch_get_jobs(&ids).await?;
            idle.extend(
                ids.iter()
                    .filter_map(|id| found.get(id))
                    .filter(|job| job.notified_at.is_none() && job.updated_at < idle_since)
                    .cloned(),
            );
            if idle.len() >= limit || next.is_none() {
                idle.truncate(limit);
                return Ok(idle);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Ledger for DynamoJobs {
    async fn record_chunk(
        &self,
        job: JobId,
        offer: Option<OfferId>,
        seq: ChunkSeq,
        tally: &ChunkTally,
        offer_delta: i64,
    ) -> StoreResult<Ledgered> {
        let (counts, failures) = (tally.counts(), tally.failures());
        // The marker carries the failures (a transaction holds at most 100 items, a chunk
        // may have 100 failures); the FAIL# items are written from whichever version of
        // the chunk won the ledger, so a replay never changes them. It carries the chunk's
        // outcomes too, in their compact binary form (the rows of the job's report: no write
        // of their own, about 1.7 KB more on a chunk of 100 locations).
        let mut marker_item = to_item(&ChunkItem::of(job, seq, tally, self.clock.now_ms()))?;
        marker_item.insert(
            OUTCOMES.to_owned(),
            AttributeValue::B(Blob::new(tally.encode())),
        );
        let marker = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker_item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(internal)?;
        let counters = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(job), JOB_SK)))
            .update_expression(
                "SET updatedAt = :now ADD linked :l, alreadyLinked :a, notFound :nf, failed :f, \
                 cancelled :c, unlinked :u, notLinked :nl, created :cr, updated :up, \
                 unchanged :un, closed :cl, invalid :iv, chunksDone :one",
            )
            // A chunk of a page whose fanout step never landed (the fanout was closed
            // first, by a cancel) is outside the job's `total`: it is not accounted.
            .condition_expression(
                "attribute_exists(pk) AND (fanoutDone = :open OR chunksTotal > :seq)",
            )
            .expression_attribute_values(":open", AttributeValue::Bool(false))
            .expression_attribute_values(":seq", n(seq.0))
            .expression_attribute_values(":now", n(self.clock.now().timestamp_millis()))
            .expression_attribute_values(":l", n(counts.linked))
            .expression_attribute_values(":a", n(counts.already_linked))
            .expression_attribute_values(":nf", n(counts.not_found))
            .expression_attribute_values(":f", n(counts.failed))
            .expression_attribute_values(":c", n(counts.cancelled))
            .expression_attribute_values(":u", n(counts.unlinked))
            .expression_attribute_values(":nl", n(counts.not_linked))
            .expression_attribute_values(":cr", n(counts.created))
            .expression_attribute_values(":up", n(counts.updated))
            .expression_attribute_values(":un", n(counts.unchanged))
            .expression_attribute_values(":cl", n(counts.closed))
            .expression_attribute_values(":iv", n(counts.invalid))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(internal)?;
        let mut request = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(marker).build())
            .transact_items(TransactWriteItem::builder().update(counters).build());
        if let Some(offer) = offer.filter(|_| offer_delta != 0) {
            let total = Update::builder()
                .table_name(&self.catalog_table)
                .set_key(Some(key(offer_pk(offer), OFFER_SK)))
                .update_expression("ADD locationsTotal :d")
                .expression_attribute_values(":d", n(offer_delta))
                .build()
                .map_err(internal)?;
            request = request.transact_items(TransactWriteItem::builder().update(total).build());
        }
        match request.send().await {
            Ok(_) => {
                // Dying before this leaves the message undeleted: its replay lands below.
                self.put_failures(job, failures).await?;
                Ok(Ledgered::Recorded(self.must_load(job).await?))
            }
            Err(e) => {
                let reasons = cancellation(e)?;
                if condition_failed(reasons.first()) {
                    let ledgered = match reasons.first().and_then(|r| r.item()) {
                        Some(item) => from_item::<ChunkItem>(item.clone())?.failures,
                        None => Vec::new(),
                    };
                    self.put_failures(job, &ledgered).await?;
                    Ok(Ledgered::Duplicate(self.must_load(job).await?))
                } else if condition_failed(reasons.get(1)) {
                    match self.load(job).await? {
                        // Beyond its closed fanout: nothing accounted, as for a duplicate.
                        Some(found) => Ok(Ledgered::Duplicate(found)),
                        None => Err(StoreError::Invalid(format!("job {job} does not exist"))),
                    }
                } else {
                    Err(retryable_cancel(&reasons))
                }
            }
        }
    }

    async fn chunks_from(
        &self,
        id: JobId,
        from: ChunkSeq,
        limit: usize,
    ) -> StoreResult<Vec<ChunkRecord>> {
        // A query returns at most 1 MB: read on until `limit` chunks or the last one.
        let mut chunks = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :j AND sk BETWEEN :from AND :last")
                .expression_attribute_values(":j", s(job_pk(id)))
                .expression_attribute_values(":from", s(chunk_sk(from)))
                .expression_attribute_values(":last", s("CHUNK#~"))
                .projection_expression("sk, recordedAt, #o")
                .expression_attribute_names("#o", OUTCOMES)
                .set_exclusive_start_key(start)
                .limit((limit - chunks.len()).min(1_000) as i32)
                .send()
                .await
                .map_err(|e| classify("Query", e))?;
            for item in out.items.unwrap_or_default() {
                chunks.push(chunk_record(item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() || chunks.len() >= limit {
                return Ok(chunks);
            }
        }
    }

    async fn park_chunk(&self, id: JobId, seq: ChunkSeq, body: &str) -> StoreResult<Parking> {
        let now = self.clock.now().timestamp_millis();
        let parked = |condition: Option<&str>| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(
                    [
                        ("pk", s(job_pk(id))),
                        ("sk", s(parked_sk(seq))),
                        ("body", s(body)),
                        ("token", s(format!("{:016x}", rand::random::<u64>()))),
                        ("parkedAt", n(now)),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                ))
                .set_condition_expression(condition.map(str::to_owned))
                .build()
                .map_err(internal)
        };
        let unaccounted = || {
            ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(job_pk(id), &chunk_sk(seq))))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(internal)
        };
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), JOB_SK)))
            .update_expression("ADD chunksParked :one SET updatedAt = :now")
            .condition_expression("#s = :paused")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":paused", s(JobStatus::Paused.as_str()))
            .build()
            .map_err(internal)?;
        let first = self
            .ddb
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(parked(Some("attribute_not_exists(pk)"))?)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().update(count).build())
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(unaccounted()?)
                    .build(),
            )
            .send()
            .await;
        let Err(e) = first else {
            return Ok(Parking::Parked);
        };
        let reasons = cancellation(e)?;
        if let Some(refused) = parking_refused(&reasons, 1) {
            return Ok(refused);
        }
        if !condition_failed(reasons.first()) {
            return Err(retryable_cancel(&reasons));
        }
        // Parked already (a redelivery, or parked again before its re-send was removed): a
        // new token, still only while the job is PAUSED.
        let paused = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), JOB_SK)))
            .condition_expression("#s = :paused")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":paused", s(JobStatus::Paused.as_str()))
            .build()
            .map_err(internal)?;
        let again = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(paused).build())
            .transact_items(TransactWriteItem::builder().put(parked(None)?).build())
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(unaccounted()?)
                    .build(),
            )
            .send()
            .await;
        let Err(e) = again else {
            return Ok(Parking::Parked);
        };
        let reasons = cancellation(e)?;
        parking_refused(&reasons, 0).ok_or_else(|| retryable_cancel(&reasons))
    }

    async fn parked_chunks(&self, id: JobId, limit: usize) -> StoreResult<Vec<ParkedChunk>> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :parked)")
            .expression_attribute_values(":pk", s(job_pk(id)))
            .expression_attribute_values(":parked", s("PARKED#"))
            .consistent_read(true)
            .limit(limit.clamp(1, 1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        out.items()
            .iter()
            .map(|item| {
                let text = |name: &str| match item.get(name) {
                    Some(AttributeValue::S(v)) => Ok(v.clone()),
                    _ => Err(StoreError::internal(format!(
                        "a parked chunk of job {id} has no {name}"
                    ))),
                };
                let sk = text("sk")?;
                let seq = sk
                    .strip_prefix("PARKED#")
                    .and_then(|seq| seq.parse().ok())
                    .ok_or_else(|| StoreError::internal(format!("parked chunk key '{sk}'")))?;
                Ok(ParkedChunk {
                    seq: ChunkSeq(seq),
                    body: text("body")?,
                    token: text("token")?,
                })
            })
            .collect()
    }

    async fn unpark_chunk(&self, id: JobId, parked: &ParkedChunk) -> StoreResult<()> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), &parked_sk(parked.seq))))
            .condition_expression("#t = :token")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":token", s(&parked.token))
            .build()
            .map_err(internal)?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(id), JOB_SK)))
            .update_expression("ADD chunksParked :minus SET updatedAt = :now")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":now", n(self.clock.now().timestamp_millis()))
            .build()
            .map_err(internal)?;
        let result = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        let Err(e) = result else { return Ok(()) };
        let reasons = cancellation(e)?;
        if condition_failed(reasons.first()) {
            // Parked again since (or removed already): that parking stays.
            return Ok(());
        }
        Err(retryable_cancel(&reasons))
    }

    async fn page_failures(
        &self,
        id: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Failure>> {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :j AND begins_with(sk, :f)")
            .expression_attribute_values(":j", s(job_pk(id)))
            .expression_attribute_values(":f", s("FAIL#"))
            .set_exclusive_start_key(start_key(after)?)
            .limit(limit.min(1_000) as i32)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| from_item::<FailureItem>(item)?.into_failure())
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page {
            items,
            next: cursor_of(out.last_evaluated_key)?,
        })
    }
}
#[async_trait]
impl RuntimeSettings for DynamoJobs {
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(setting_pk(name), SETTING_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(out.item.and_then(|item| match item.get("value") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        }))
    }

    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        let mut item = key(setting_pk(name), SETTING_SK);
        item.insert("value".into(), s(value));
        item.insert("updatedAt".into(), n(self.clock.now().timestamp_millis()));
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }
}

/// An import's record: `IMPORT#<id>` / `IMPORT`, the import as JSON (without its start) and
/// `startedAt` once its file arrived; kept as long as a job.
#[async_trait]
impl Imports for DynamoJobs {
    async fn create_import(&self, import: &Import) -> StoreResult<()> {
        let body = serde_json::to_string(&Import {
            started_at: None,
            ..import.clone()
        })
        .map_err(|e| internal(e.to_string()))?;
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(import_pk(import.id)))
            .item("sk", s(IMPORT_SK))
            .item("body", s(body))
            .item(
                "expiresAt",
                n(import.expires_at.timestamp() + JOB_RETENTION_SECS),
            )
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    async fn get_import(&self, id: ImportId) -> StoreResult<Option<Import>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(import_pk(id), IMPORT_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        out.item.map(import_from_item).transpose()
    }

    async fn mark_started(&self, id: ImportId, at: DateTime<Utc>) -> StoreResult<Option<Import>> {
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(import_pk(id), IMPORT_SK)))
            .update_expression("SET startedAt = if_not_exists(startedAt, :at)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":at", n(at.timestamp_millis()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes.map(import_from_item).transpose(),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }
}

fn import_pk(id: ImportId) -> String {
    format!("IMPORT#{id}")
}

const IMPORT_SK: &str = "IMPORT";

fn import_from_item(item: Item) -> StoreResult<Import> {
    let body = match item.get("body") {
        Some(AttributeValue::S(body)) => body,
        _ => return Err(internal("an import item without its body")),
    };
    let mut import: Import = serde_json::from_str(body)
        .map_err(|e| internal(format!("an import item does not read: {e}")))?;
    if let Some(AttributeValue::N(at)) = item.get("startedAt") {
        let ms: i64 = at
            .parse()
            .map_err(|_| internal("an import's startedAt is not a number"))?;
        import.started_at = Some(from_ms(ms));
    }
    Ok(import)
}

/// A chunk marker as the ledger record it is.
fn chunk_record(mut item: Item) -> StoreResult<ChunkRecord> {
    let outcomes = match item.remove(OUTCOMES) {
        Some(AttributeValue::B(blob)) => Some(decode_outcomes(blob.as_ref())?),
        _ => None,
    };
    let sk = item.get("sk").and_then(|v| v.as_s().ok()).cloned();
    let seq = sk
        .as_deref()
        .and_then(|sk| sk.strip_prefix("CHUNK#"))
        .and_then(|seq| seq.parse().ok())
        .ok_or_else(|| StoreError::internal(format!("a chunk item's sk is {sk:?}")))?;
    let at = match item.get("recordedAt") {
        Some(AttributeValue::N(ms)) => ms.parse().unwrap_or_default(),
        _ => 0,
    };
    Ok(ChunkRecord {
        seq: ChunkSeq(seq),
        recorded_at: from_ms(at),
        outcomes,
    })
}

/// The write units a job's chunk markers took, with their outcomes and as they would be
/// without (each written once, in the ledger's transaction: 2 units a KB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkerUnits {
    pub markers: u64,
    pub with: u64,
    pub without: u64,
}

/// Measures [`MarkerUnits`] from the stored markers (`bulklink bench --backend aws`).
pub async fn chunk_marker_units(ddb: &Client, table: &str, job: JobId) -> StoreResult<MarkerUnits> {
    let transact_units = |bytes: u64| 2 * bytes.div_ceil(1_024);
    let mut units = MarkerUnits {
        markers: 0,
        with: 0,
        without: 0,
    };
    let mut start = None;
    loop {
        let page = ddb
            .query()
            .table_name(table)
            .key_condition_expression("pk = :j AND begins_with(sk, :c)")
            .expression_attribute_values(":j", s(job_pk(job)))
            .expression_attribute_values(":c", s("CHUNK#"))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("Query", e))?;
        for mut item in page.items.unwrap_or_default() {
            units.markers += 1;
            units.with += transact_units(crate::stored_item_size(&item));
            item.remove(OUTCOMES);
            units.without += transact_units(crate::stored_item_size(&item));
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(units);
        }
    }
}
