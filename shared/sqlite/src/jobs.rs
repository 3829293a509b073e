//! JobStore port on SQLite: job records, the chunk ledger, failures, idempotency claims and
//! the one-active-job-per-offer lock. Every multi-item change is one transaction, as the AWS
//! adapter makes it one TransactWriteItems.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::catalog::page_of;
use super::{from_ms, sql, to_ms, EmbeddedStore};
use crate::domain::{
    decode_outcomes, BrandId, ChunkSeq, ChunkTally, Counters, Job, JobId, JobSpec, JobStatus,
    OfferId, Transition,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{
    Advanced, CancelOutcome, ChunkRecord, Completion, CreateOutcome, Cursor, Failure,
    FanoutAdvance, IdempotencyClaim, JobStore, Ledger, Ledgered, OfferDeletion, Page, ParkedChunk,
    Parking, PauseOutcome, Released, RuntimeSettings,
};

/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

const JOB_COLUMNS: &str = "id, status, brand_id, offer_id, callback_url, total, linked, \
    already_linked, not_found, failed, cancelled, fanout_cursor, fanout_done, chunks_total, \
    chunks_done, created_at, updated_at, started_at, finished_at, notified_at, spec, \
    unlinked, not_linked, paused_at, paused_ms, chunks_parked, created, updated, unchanged, \
    closed, invalid, not_before, created_by, approved_by";

/// The `offer_id` of a job on no offer (an import): the column predates such jobs and is
/// `NOT NULL`.
const NO_OFFER: &str = "";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Job, StoreError>> {
    let id: String = row.get(0)?;
    let status: String = row.get(1)?;
    let brand: String = row.get(2)?;
    let offer: String = row.get(3)?;
    let callback: Option<String> = row.get(4)?;
    let counters = Counters {
        total: row.get::<_, i64>(5)? as u64,
        linked: row.get::<_, i64>(6)? as u64,
        already_linked: row.get::<_, i64>(7)? as u64,
        not_found: row.get::<_, i64>(8)? as u64,
        failed: row.get::<_, i64>(9)? as u64,
        cancelled: row.get::<_, i64>(10)? as u64,
        unlinked: row.get::<_, i64>(21)? as u64,
        not_linked: row.get::<_, i64>(22)? as u64,
        created: row.get::<_, i64>(26)? as u64,
        updated: row.get::<_, i64>(27)? as u64,
        unchanged: row.get::<_, i64>(28)? as u64,
        closed: row.get::<_, i64>(29)? as u64,
        invalid: row.get::<_, i64>(30)? as u64,
    };
    let spec: String = row.get(20)?;
    let fanout_cursor: Option<String> = row.get(11)?;
    let fanout_done: bool = row.get(12)?;
    let chunks_total = row.get::<_, i64>(13)? as u32;
    let chunks_done = row.get::<_, i64>(14)? as u32;
    let created_at = from_ms(row.get(15)?);
    let updated_at = from_ms(row.get(16)?);
    let started_at = row.get::<_, Option<i64>>(17)?.map(from_ms);
    let finished_at = row.get::<_, Option<i64>>(18)?.map(from_ms);
    let notified_at = row.get::<_, Option<i64>>(19)?.map(from_ms);
    let paused_at = row.get::<_, Option<i64>>(23)?.map(from_ms);
    let paused_ms = row.get::<_, i64>(24)?.max(0) as u64;
    let chunks_parked = row.get::<_, i64>(25)?.max(0) as u32;
    let not_before = row.get::<_, Option<i64>>(31)?.map(from_ms);
    let created_by: Option<String> = row.get(32)?;
    let approved_by: Option<String> = row.get(33)?;
    Ok((|| {
        Ok(Job {
            id: id.parse()?,
            spec: JobSpec::from_json(&spec)?,
            status: status.parse()?,
            brand_id: brand.parse()?,
            offer_id: (offer != NO_OFFER).then(|| offer.parse()).transpose()?,
            callback_url: callback.map(|url| url.parse()).transpose()?,
            counters,
            fanout_cursor,
            fanout_done,
            chunks_total,
            chunks_done,
            created_at,
            updated_at,
            started_at,
            finished_at,
            notified_at,
            paused_at,
            paused_ms,
            chunks_parked,
            not_before,
            created_by,
            approved_by,
        })
    })())
}

fn load_job(conn: &Connection, id: &str) -> StoreResult<Option<Job>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .map_err(sql)?
        .query_row([id], job_from_row)
        .optional()
        .map_err(sql)?
        .transpose()
}

fn pause_outcome(changed: usize, job: Job) -> PauseOutcome {
    if changed == 1 {
        PauseOutcome::Changed(job)
    } else {
        PauseOutcome::Unchanged(job)
    }
}

fn must_load_job(conn: &Connection, id: &str) -> StoreResult<Job> {
    load_job(conn, id)?.ok_or_else(|| StoreError::Invalid(format!("job {id} does not exist")))
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create_job(
        &self,
        job: &Job,
        claim: Option<&IdempotencyClaim>,
    ) -> StoreResult<CreateOutcome> {
        let clock = self.clock.clone();
        let (job, claim) = (job.clone(), claim.cloned());
        self.write(move |conn| {
            let tx = conn.savepoint()
                .map_err(sql)?;
            let now = clock.now_ms();
            if let Some(claim) = &claim {
                let existing: Option<(String, String)> = tx
                    .query_row(
                        "SELECT request_hash, job_id FROM idempotency WHERE key_hash = ?1 AND expires_at > ?2",
                        params![claim.key_hash, now],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some((request_hash, job_id)) = existing {
                    return if request_hash == claim.request_hash {
                        Ok(CreateOutcome::Replayed(must_load_job(&tx, &job_id)?))
                    } else {
                        Ok(CreateOutcome::KeyReused)
                    };
                }
            }
            if let Some(offer) = job.offer_id {
                let active: Option<String> = tx
                    .query_row(
                        "SELECT job_id FROM active_jobs WHERE offer_id = ?1",
                        [offer.to_string()],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some(active) = active {
                    return Ok(CreateOutcome::OfferBusy(active.parse()?));
                }
                let offer_exists = tx
                    .prepare_cached("SELECT 1 FROM offers WHERE id = ?1")
                    .map_err(sql)?
                    .exists([offer.to_string()])
                    .map_err(sql)?;
                if !offer_exists {
                    return Ok(CreateOutcome::OfferGone);
                }
            }
            let exists = tx
                .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
                .map_err(sql)?
                .exists([job.id.to_string()])
                .map_err(sql)?;
            if exists {
                // Its id was chosen before (an import's): a replay of this very creation.
                return Ok(CreateOutcome::Replayed(must_load_job(&tx, &job.id.to_string())?));
            }
            if let Some(parent) = job.spec.once_per_parent() {
                let undo: Option<String> = tx
                    .query_row(
                        "SELECT job_id FROM undos WHERE parent_job_id = ?1",
                        [parent.to_string()],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some(undo) = undo {
                    return Ok(CreateOutcome::UndoExists(undo.parse()?));
                }
                tx.execute(
                    "INSERT INTO undos (parent_job_id, job_id) VALUES (?1, ?2)",
                    params![parent.to_string(), job.id.to_string()],
                )
                .map_err(sql)?;
            }
            tx.execute(
                "INSERT INTO jobs (id, spec, status, brand_id, offer_id, callback_url, created_at, \
                 updated_at, not_before, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
                params![
                    job.id.to_string(),
                    job.spec.to_json(),
                    job.status.as_str(),
                    job.brand_id.to_string(),
                    job.offer_id.map_or_else(|| NO_OFFER.to_owned(), |o| o.to_string()),
                    job.callback_url.as_ref().map(|u| u.to_string()),
                    to_ms(job.created_at),
                    job.not_before.map(to_ms),
                    job.created_by,
                ],
            )
            .map_err(sql)?;
            if let Some(offer) = job.offer_id {
                tx.execute(
                    "INSERT INTO active_jobs (offer_id, job_id) VALUES (?1, ?2)",
                    params![offer.to_string(), job.id.to_string()],
                )
                .map_err(sql)?;
            }
            if let Some(claim) = &claim {
                tx.execute(
                    "INSERT OR REPLACE INTO idempotency (key_hash, request_hash, job_id, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![claim.key_hash, claim.request_hash, job.id.to_string(), now + IDEMPOTENCY_TTL_MS],
                )
                .map_err(sql)?;
            }
            let created = must_load_job(&tx, &job.id.to_string())?;
            tx.commit().map_err(sql)?;
            Ok(CreateOutcome::Created(created))
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.read(move |conn| load_job(conn, &id.to_string())).await
    }

    async fn delete_offer(&self, id: OfferId) -> StoreResult<OfferDeletion> {
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let id = id.to_string();
            let total: Option<i64> = tx
                .query_row(
                    "SELECT locations_total FROM offers WHERE id = ?1",
                    [&id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql)?;
            let Some(total) = total else {
                return Ok(OfferDeletion::NotFound);
            };
            let active: Option<String> = tx
                .query_row(
                    "SELECT job_id FROM active_jobs WHERE offer_id = ?1",
                    [&id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql)?;
            if let Some(active) = active {
                return Ok(OfferDeletion::Busy(active.parse()?));
            }
            if total != 0 {
                return Ok(OfferDeletion::HasLinks(total as u64));
            }
            tx.execute("DELETE FROM offers WHERE id = ?1", [&id])
                .map_err(sql)?;
            tx.execute("DELETE FROM unlinks WHERE offer_id = ?1", [&id])
                .map_err(sql)?;
            tx.execute("DELETE FROM rules WHERE offer_id = ?1", [&id])
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(OfferDeletion::Deleted)
        })
        .await
    }

    async fn page_brand_jobs(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Job>> {
        // Newest first; with no cursor start above every possible id.
        let before = after
            .map(|c| c.position().to_owned())
            .unwrap_or_else(|| "~".to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE brand_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![brand.to_string(), before, limit as i64 + 1], job_from_row)
                .map_err(sql)?;
            let mut jobs = Vec::new();
            for row in rows {
                jobs.push(row.map_err(sql)??);
            }
            Ok(page_of(jobs, limit, |job| job.id.to_string()))
        })
        .await
    }

    async fn start_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let clock = self.clock.clone();
        self.write(move |conn| {
            let now = clock.now_ms();
            conn.execute(
                &format!(
                    "UPDATE jobs SET status = '{}', started_at = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND {}",
                    Transition::Start.to(),
                    Transition::Start.sql_condition("status")
                ),
                params![id.to_string(), now],
            )
            .map_err(sql)?;
            load_job(conn, &id.to_string())
        })
        .await
    }

    async fn advance_fanout(&self, id: JobId, step: &FanoutAdvance) -> StoreResult<Advanced> {
        let clock = self.clock.clone();
        let step = step.clone();
        self.write(move |conn| {
            let id = id.to_string();
            let changed = conn
                .prepare_cached(
                    // Never below what the ledger already accounted: a close that would
                    // leave accounted chunks outside `chunks_total` (a page sent, its chunks
                    // accounted, its own step not yet made) is superseded by that page's.
                    "UPDATE jobs SET fanout_cursor = ?3, fanout_done = ?4, \
                     chunks_total = chunks_total + ?5, total = total + ?6, updated_at = ?7 \
                     WHERE id = ?1 AND fanout_cursor IS ?2 AND fanout_done = 0 \
                     AND chunks_done <= chunks_total + ?5",
                )
                .map_err(sql)?
                .execute(params![
                    id,
                    step.prev_cursor,
                    step.next_cursor,
                    step.done,
                    step.chunks_added,
                    step.ids_added as i64,
                    clock.now_ms()
                ])
                .map_err(sql)?;
            let job = must_load_job(conn, &id)?;
            Ok(if changed == 1 {
                Advanced::Applied(job)
            } else {
                Advanced::Superseded(job)
            })
        })
        .await
    }

    async fn try_complete(&self, id: JobId) -> StoreResult<Completion> {
        let clock = self.clock.clone();
        self.write(move |conn| {
            let tx = conn.savepoint()
                .map_err(sql)?;
            let id = id.to_string();
            let job = must_load_job(&tx, &id)?;
            if job.status.is_terminal() {
                return Ok(Completion::AlreadyTerminal(job));
            }
            let Some(next) = job.status.completes_as(&job.counters) else {
                return Ok(Completion::NotYet(job));
            };
            if !job.is_fully_accounted() {
                return Ok(Completion::NotYet(job));
            }
            let now = clock.now_ms();
            let changed = tx
                .execute(
                    "UPDATE jobs SET status = ?3, finished_at = ?4, updated_at = ?4 \
                     WHERE id = ?1 AND status = ?2 AND fanout_done = 1 AND chunks_done >= chunks_total",
                    params![id, job.status.as_str(), next.as_str(), now],
                )
                .map_err(sql)?;
            if changed == 0 {
                return Ok(Completion::NotYet(job));
            }
            if let Some(offer) = job.offer_id {
                tx.execute(
                    "DELETE FROM active_jobs WHERE offer_id = ?1 AND job_id = ?2",
                    params![offer.to_string(), id],
                )
                .map_err(sql)?;
            }
            let done = must_load_job(&tx, &id)?;
            tx.commit().map_err(sql)?;
            Ok(Completion::Won(done))
        })
        .await
    }

    async fn request_cancel(&self, id: JobId) -> StoreResult<Option<CancelOutcome>> {
        let clock = self.clock.clone();
        self.write(move |conn| {
            let id = id.to_string();
            conn.execute(
                &format!(
                    "UPDATE jobs SET status = '{}', updated_at = ?2, \
                     paused_ms = paused_ms + COALESCE(MAX(?2 - paused_at, 0), 0), \
                     paused_at = NULL WHERE id = ?1 AND {}",
                    Transition::Cancel.to(),
                    Transition::Cancel.sql_condition("status")
                ),
                params![id, clock.now_ms()],
            )
            .map_err(sql)?;
            Ok(load_job(conn, &id)?.map(|job| {
                if job.status == JobStatus::Cancelling {
                    CancelOutcome::Cancelling(job)
                } else {
                    CancelOutcome::NotCancellable(job)
                }
            }))
        })
        .await
    }

    async fn pause_job(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<Option<PauseOutcome>> {
        self.write(move |conn| {
            let id = id.to_string();
            let changed = conn
                .execute(
                    &format!(
                        "UPDATE jobs SET status = '{}', paused_at = ?2, updated_at = ?2 \
                         WHERE id = ?1 AND {}",
                        Transition::Pause.to(),
                        Transition::Pause.sql_condition("status")
                    ),
                    params![id, to_ms(at)],
                )
                .map_err(sql)?;
            Ok(load_job(conn, &id)?.map(|job| pause_outcome(changed, job)))
        })
        .await
    }

    async fn resume_job(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<Option<PauseOutcome>> {
        self.write(move |conn| {
            let id = id.to_string();
            let changed = conn
                .execute(
                    &format!(
                        "UPDATE jobs SET status = '{}', \
                         paused_ms = paused_ms + MAX(?2 - paused_at, 0), paused_at = NULL, \
                         started_at = COALESCE(started_at, ?2), updated_at = ?2 \
                         WHERE id = ?1 AND {}",
                        Transition::Resume.to(),
                        Transition::Resume.sql_condition("status")
                    ),
                    params![id, to_ms(at)],
                )
                .map_err(sql)?;
            Ok(load_job(conn, &id)?.map(|job| pause_outcome(changed, job)))
        })
        .await
    }

    async fn mark_failing(&self, id: JobId) -> StoreResult<bool> {
        let clock = self.clock.clone();
        self.write(move |conn| {
            let changed = conn
                .execute(
                    &format!(
                        "UPDATE jobs SET status = '{}', updated_at = ?2 WHERE id = ?1 AND {}",
                        Transition::StartFailing.to(),
                        Transition::StartFailing.sql_condition("status")
                    ),
                    params![id.to_string(), clock.now_ms()],
                )
                .map_err(sql)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_job(
        &self,
        id: JobId,
        transition: Transition,
        approver: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Released>> {
        let approver = approver.map(str::to_owned);
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let id = id.to_string();
            let changed = tx
                .execute(
                    &format!(
                        "UPDATE jobs SET status = '{}', updated_at = ?2, notified_at = NULL, \
                         approved_by = COALESCE(?3, approved_by) WHERE id = ?1 AND {}",
                        transition.to(),
                        transition.sql_condition("status")
                    ),
                    params![id, to_ms(at), approver],
                )
                .map_err(sql)?;
            let job = load_job(&tx, &id)?;
            tx.commit().map_err(sql)?;
            Ok(job.map(|job| match changed {
                1 => Released::Released(job),
                _ => Released::NotHeld(job),
            }))
        })
        .await
    }

    async fn due_jobs(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Job>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE status = '{}' AND not_before <= ?1 \
                     ORDER BY not_before LIMIT ?2",
                    JobStatus::Scheduled
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![to_ms(now), limit as i64], job_from_row)
                .map_err(sql)?;
            let mut jobs = Vec::new();
            for row in rows {
                jobs.push(row.map_err(sql)??);
            }
            Ok(jobs)
        })
        .await
    }

    async fn put_offer_start(&self, offer: OfferId, at: DateTime<Utc>) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO offer_starts (offer_id, starts_at) VALUES (?1, ?2)",
                params![offer.to_string(), to_ms(at)],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn due_offer_starts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(OfferId, DateTime<Utc>)>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT offer_id, starts_at FROM offer_starts WHERE starts_at <= ?1 \
                     ORDER BY starts_at LIMIT ?2",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![to_ms(now), limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(sql)?;
            let mut due = Vec::new();
            for row in rows {
                let (offer, at) = row.map_err(sql)?;
                due.push((offer.parse()?, from_ms(at)));
            }
            Ok(due)
        })
        .await
    }

    async fn clear_offer_start(&self, offer: OfferId) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM offer_starts WHERE offer_id = ?1",
                [offer.to_string()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn mark_notified(&self, id: JobId, at: DateTime<Utc>) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE jobs SET notified_at = ?2 WHERE id = ?1 AND notified_at IS NULL",
                params![id.to_string(), to_ms(at)],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn unsettled_jobs(
        &self,
        idle_since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Job>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE notified_at IS NULL AND updated_at < ?1 \
                     ORDER BY updated_at LIMIT ?2"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![to_ms(idle_since), limit as i64], job_from_row)
                .map_err(sql)?;
            let mut jobs = Vec::new();
            for row in rows {
                jobs.push(row.map_err(sql)??);
            }
            Ok(jobs)
        })
        .await
    }
}

#[async_trait]
impl Ledger for EmbeddedStore {
    async fn record_chunk(
        &self,
        job: JobId,
        offer: Option<OfferId>,
        seq: ChunkSeq,
        tally: &ChunkTally,
        offer_delta: i64,
    ) -> StoreResult<Ledgered> {
        let clock = self.clock.clone();
        let failures = tally.failures().to_vec();
        let counts = tally.counts();
        let outcomes = tally.encode();
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let (job, now) = (job.to_string(), clock.now_ms());
            let fresh = tx
                .prepare_cached(
                    "INSERT INTO chunk_ledger (job_id, seq, linked, already_linked, not_found, failed, \
                     cancelled, unlinked, not_linked, recorded_at, created, updated, unchanged, \
                     closed, invalid, outcomes) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16 \
                     WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND fanout_done = 1 \
                     AND chunks_total <= ?2) \
                     ON CONFLICT DO NOTHING",
                )
                .map_err(sql)?
                .execute(params![
                    job,
                    seq.0,
                    counts.linked,
                    counts.already_linked,
                    counts.not_found,
                    counts.failed,
                    counts.cancelled,
                    counts.unlinked,
                    counts.not_linked,
                    now,
                    counts.created,
                    counts.updated,
                    counts.unchanged,
                    counts.closed,
                    counts.invalid,
                    outcomes
                ])
                .map_err(sql)?
                == 1;
            // Not inserted: accounted before, or a chunk of a page whose fanout step never
            // landed (the fanout was closed first, by a cancel), outside the job's `total`.
            if !fresh {
                return Ok(Ledgered::Duplicate(must_load_job(&tx, &job)?));
            }
            {
                let mut put_failure = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO failures (job_id, location_id, reason, attempts) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(sql)?;
                for f in &failures {
                    put_failure
                        .execute(params![job, f.key(), f.reason, f.attempts])
                        .map_err(sql)?;
                }
            }
            let updated = tx
                .prepare_cached(
                    "UPDATE jobs SET linked = linked + ?2, already_linked = already_linked + ?3, \
                     not_found = not_found + ?4, failed = failed + ?5, cancelled = cancelled + ?6, \
                     unlinked = unlinked + ?8, not_linked = not_linked + ?9, \
                     created = created + ?10, updated = updated + ?11, \
                     unchanged = unchanged + ?12, closed = closed + ?13, invalid = invalid + ?14, \
                     chunks_done = chunks_done + 1, updated_at = ?7 WHERE id = ?1",
                )
                .map_err(sql)?
                .execute(params![
                    job,
                    counts.linked,
                    counts.already_linked,
                    counts.not_found,
                    counts.failed,
                    counts.cancelled,
                    now,
                    counts.unlinked,
                    counts.not_linked,
                    counts.created,
                    counts.updated,
                    counts.unchanged,
                    counts.closed,
                    counts.invalid
                ])
                .map_err(sql)?;
            if updated == 0 {
                // Dropping the transaction rolls the ledger marker back.
                return Err(StoreError::Invalid(format!("job {job} does not exist")));
            }
            if let Some(offer) = offer.filter(|_| offer_delta != 0) {
                tx.prepare_cached(
                    "UPDATE offers SET locations_total = locations_total + ?2 WHERE id = ?1",
                )
                .map_err(sql)?
                .execute(params![offer.to_string(), offer_delta])
                .map_err(sql)?;
            }
            let after = must_load_job(&tx, &job)?;
            tx.commit().map_err(sql)?;
            Ok(Ledgered::Recorded(after))
        })
        .await
    }

    async fn park_chunk(&self, id: JobId, seq: ChunkSeq, body: &str) -> StoreResult<Parking> {
        let clock = self.clock.clone();
        let body = body.to_owned();
        self.write(move |conn| {
            let tx = conn.savepoint()
                .map_err(sql)?;
            let id = id.to_string();
            let paused = tx
                .prepare_cached(&format!(
                    "SELECT 1 FROM jobs WHERE id = ?1 AND status = '{}'",
                    JobStatus::Paused
                ))
                .map_err(sql)?
                .exists([&id])
                .map_err(sql)?;
            if !paused {
                return Ok(Parking::NotPaused);
            }
            let accounted = tx
                .prepare_cached("SELECT 1 FROM chunk_ledger WHERE job_id = ?1 AND seq = ?2")
                .map_err(sql)?
                .exists(params![id, seq.0])
                .map_err(sql)?;
            if accounted {
                return Ok(Parking::Accounted);
            }
            let now = clock.now_ms();
            let token = format!("{:016x}", rand::random::<u64>());
            let existed = tx
                .prepare_cached("SELECT 1 FROM parked_chunks WHERE job_id = ?1 AND seq = ?2")
                .map_err(sql)?
                .exists(params![id, seq.0])
                .map_err(sql)?;
            tx.execute(
                "INSERT OR REPLACE INTO parked_chunks (job_id, seq, body, parked_at, token) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq.0, body, now, token],
            )
            .map_err(sql)?;
            if !existed {
                tx.execute(
                    "UPDATE jobs SET chunks_parked = chunks_parked + 1, updated_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Ok(Parking::Parked)
        })
        .await
    }

    async fn parked_chunks(&self, id: JobId, limit: usize) -> StoreResult<Vec<ParkedChunk>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, body, token FROM parked_chunks WHERE job_id = ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![id.to_string(), limit as i64], |row| {
                    Ok(ParkedChunk {
                        seq: ChunkSeq(row.get(0)?),
                        body: row.get(1)?,
                        token: row.get(2)?,
                    })
                })
                .map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)
        })
        .await
    }

    async fn unpark_chunk(&self, id: JobId, parked: &ParkedChunk) -> StoreResult<()> {
        let clock = self.clock.clone();
        let (seq, token) = (parked.seq, parked.token.clone());
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let id = id.to_string();
            let removed = tx
                .execute(
                    "DELETE FROM parked_chunks WHERE job_id = ?1 AND seq = ?2 AND token = ?3",
                    params![id, seq.0, token],
                )
                .map_err(sql)?;
            if removed == 1 {
                tx.execute(
                    "UPDATE jobs SET chunks_parked = chunks_parked - 1, updated_at = ?2 WHERE id = ?1",
                    params![id, clock.now_ms()],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn page_failures(
        &self,
        id: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Failure>> {
        let after = after.map(|c| c.position().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT location_id, reason, attempts FROM failures \
                     WHERE job_id = ?1 AND location_id > ?2 ORDER BY location_id LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![id.to_string(), after, limit as i64 + 1], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u32>(2)?,
                    ))
                })
                .map_err(sql)?;
            let mut failures = Vec::new();
            for row in rows {
                let (key, reason, attempts) = row.map_err(sql)?;
                failures.push(Failure::from_key(&key, reason, attempts)?);
            }
            Ok(page_of(failures, limit, Failure::key))
        })
        .await
    }

    async fn chunks_from(
        &self,
        id: JobId,
        from: ChunkSeq,
        limit: usize,
    ) -> StoreResult<Vec<ChunkRecord>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, recorded_at, outcomes FROM chunk_ledger \
                     WHERE job_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![id.to_string(), from.0, limit as i64], |row| {
                    Ok((
                        row.get::<_, u32>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                })
                .map_err(sql)?;
            let mut chunks = Vec::new();
            for row in rows {
                let (seq, at, outcomes) = row.map_err(sql)?;
                chunks.push(ChunkRecord {
                    seq: ChunkSeq(seq),
                    recorded_at: from_ms(at),
                    outcomes: outcomes.as_deref().map(decode_outcomes).transpose()?,
                });
            }
            Ok(chunks)
        })
        .await
    }
}
#[async_trait]
impl RuntimeSettings for EmbeddedStore {
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT value FROM settings WHERE name = ?1")
                .map_err(sql)?
                .query_row([name], |row| row.get(0))
                .optional()
                .map_err(sql)
        })
        .await
    }

    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        let clock = self.clock.clone();
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO settings (name, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![name, value, clock.now_ms()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }
}
