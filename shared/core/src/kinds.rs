//! The job-kind seam: everything that differs between kinds of job, in one place. Where a
//! kind's location ids come from (fanout pages them), what is done to each id (the worker
//! applies it), how an outcome counts, and how a chunk that could not be done is accounted.
//! Fanout, worker, ledger and views call these and know no kind themselves; the signed
//! change to the offer's `locationsTotal` is `ChunkCounts::offer_delta`.

use crate::domain::{
    Action, ChunkCounts, Job, JobId, JobKind, LinkOutcome, LinkedBy, LocationId, OfferId,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Cursor, Failure, Page, Ports};

/// One page of a job's location ids, after `after` (the job's fanout cursor).
pub async fn page_ids(
    ports: &Ports,
    job: &Job,
    after: Option<&Cursor>,
    limit: usize,
) -> StoreResult<Page<LocationId>> {
    match job.kind {
        JobKind::LinkAllLocations => {
            ports
                .catalog
                .page_brand_locations(job.brand_id, after, limit)
                .await
        }
        JobKind::UnlinkAllLocations => {
            ports
                .catalog
                .page_offer_link_ids(job.offer_id, None, after, limit)
                .await
        }
        JobKind::Undo => {
            let parent = parent(job)?;
            ports
                .catalog
                .page_offer_link_ids(job.offer_id, Some(LinkedBy::Job(parent)), after, limit)
                .await
        }
        JobKind::RetryFailures => {
            let page = ports
                .ledger
                .page_failures(parent(job)?, after, limit)
                .await?;
            Ok(Page {
                items: page.items.into_iter().map(|f| f.location_id).collect(),
                next: page.next,
            })
        }
    }
}

/// How many ids the job would act on now: every page of its source, read as fanout reads
/// them (keys only; on DynamoDB the brand index holds no location attributes).
pub async fn count_ids(ports: &Ports, job: &Job) -> StoreResult<u64> {
    let mut count = 0;
    let mut cursor = None;
    loop {
        let page = page_ids(ports, job, cursor.as_ref(), COUNT_PAGE).await?;
        count += page.items.len() as u64;
        cursor = page.next;
        if cursor.is_none() {
            return Ok(count);
        }
    }
}

/// Ids per page when counting.
const COUNT_PAGE: usize = 1_000;

fn parent(job: &Job) -> StoreResult<JobId> {
    job.parent_job_id.ok_or_else(|| {
        StoreError::internal(format!("{} job {} has no parent job", job.kind, job.id))
    })
}

/// Does the job's action to `ids` (one slice of a chunk).
pub async fn apply(ports: &Ports, job: &Job, ids: &[LocationId]) -> StoreResult<Vec<LinkOutcome>> {
    match job.action {
        Action::Link => {
            ports
                .catalog
                .link_locations(job.offer_id, job.brand_id, LinkedBy::Job(job.id), ids)
                .await
        }
        Action::Unlink { only_by } => {
            ports
                .catalog
                .unlink_locations(job.offer_id, job.id, only_by, ids)
                .await
        }
    }
}

/// The counts of a chunk whose action was done.
pub fn tally(outcomes: &[LinkOutcome]) -> ChunkCounts {
    let mut counts = ChunkCounts::default();
    for outcome in outcomes {
        match outcome {
            LinkOutcome::Linked => counts.linked += 1,
            LinkOutcome::AlreadyLinked => counts.already_linked += 1,
            LinkOutcome::NotFound => counts.not_found += 1,
            LinkOutcome::Unlinked => counts.unlinked += 1,
            LinkOutcome::NotLinked => counts.not_linked += 1,
        }
    }
    counts
}

/// How a chunk that was not (fully) done ends: given up (last delivery, dead-letter
/// queue), or skipped because its job is winding down (cancelled, failing).
#[derive(Clone, Copy, Debug)]
pub enum Unfinished<'a> {
    GivenUp { reason: &'a str, attempts: u32 },
    Skipped,
}

/// What the store shows of a job's action on one id.
enum Effect {
    /// This job's action is done (linked, or unlinked by it).
    Done(LinkOutcome),
    /// Done by someone else, or nothing to do (already linked; not linked, or not by the
    /// undone job).
    Moot(LinkOutcome),
    /// Left as it was.
    Untouched,
}

/// Accounts a chunk that was not done: what the store shows this job did counts as done
/// (an earlier delivery may have done part of it before it timed out or the job was
/// paused); the rest counts as failed with the reason (given up) or as cancelled (skipped;
/// what others did included). Counting the whole chunk as failed or cancelled would break
/// `locationsTotal = links` whenever an earlier delivery did part of it.
pub async fn account_unfinished(
    ports: &Ports,
    job: &Job,
    offer: OfferId,
    ids: &[LocationId],
    how: Unfinished<'_>,
) -> StoreResult<(ChunkCounts, Vec<Failure>)> {
    let owners = ports.catalog.existing_links(offer, ids).await?;
    let removed = match job.action {
        Action::Link => vec![None; ids.len()],
        Action::Unlink { .. } => ports.catalog.unlinked_by(offer, ids).await?,
    };
    let me = LinkedBy::Job(job.id);
    let mut done = Vec::with_capacity(ids.len());
    let mut failures = Vec::new();
    let mut counts = ChunkCounts::default();
    for ((id, owner), removed) in ids.iter().zip(owners).zip(removed) {
        let effect = match (job.action, owner) {
            (Action::Link, Some(by)) if by == me => Effect::Done(LinkOutcome::Linked),
            (Action::Link, Some(_)) => Effect::Moot(LinkOutcome::AlreadyLinked),
            (Action::Link, None) => Effect::Untouched,
            (Action::Unlink { only_by }, Some(by))
                if only_by.is_some_and(|undone| by != LinkedBy::Job(undone)) =>
            {
                Effect::Moot(LinkOutcome::NotLinked)
            }
            (Action::Unlink { .. }, Some(_)) => Effect::Untouched,
            (Action::Unlink { .. }, None) if removed == Some(job.id) => {
                Effect::Done(LinkOutcome::Unlinked)
            }
            (Action::Unlink { .. }, None) => Effect::Moot(LinkOutcome::NotLinked),
        };
        match (effect, how) {
            (Effect::Done(outcome), _) | (Effect::Moot(outcome), Unfinished::GivenUp { .. }) => {
                done.push(outcome)
            }
            (Effect::Untouched, Unfinished::GivenUp { reason, attempts }) => {
                counts.failed += 1;
                failures.push(Failure {
                    location_id: *id,
                    reason: reason.to_owned(),
                    attempts,
                });
            }
            (Effect::Moot(_) | Effect::Untouched, Unfinished::Skipped) => counts.cancelled += 1,
        }
    }
    let tallied = tally(&done);
    Ok((
        ChunkCounts {
            failed: counts.failed,
            cancelled: counts.cancelled,
            ..tallied
        },
        failures,
    ))
}
