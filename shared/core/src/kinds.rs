//! The job-kind seam: everything that differs between kinds of job, in one place. Where a
//! kind's location ids come from (fanout pages them), what is done to each id (the worker
//! applies it), how an outcome counts, and how a chunk that could not be done is accounted.
//! Fanout, worker, ledger and views call these and know no kind themselves; the signed
//! change to the offer's `locationsTotal` is `ChunkCounts::offer_delta`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{
    Action, ChunkCounts, ChunkTally, Counter, Job, JobId, LinkOutcome, LinkedBy, LocationFilter,
    LocationId, LocationStatus, OfferId, RowOutcome, Source,
};
use crate::error::{StoreError, StoreResult};
use crate::importing::{self, ChunkWork, PageLimits, WorkPage};
use crate::ports::{Cursor, Failure, Page, Ports};

/// The offer a job of an offer-wide kind acts on (every kind but an import has one).
fn offer_of(job: &Job) -> StoreResult<OfferId> {
    job.offer_id.ok_or_else(|| {
        StoreError::internal(format!("{} job {} names no offer", job.spec.kind, job.id))
    })
}

/// One page of a job's location ids, after `after` (the job's fanout cursor): read from its
/// source, one of this build's (`Source`) or one a reader is registered for.
pub async fn page_ids(
    ports: &Ports,
    job: &Job,
    after: Option<&Cursor>,
    limit: usize,
) -> StoreResult<Page<LocationId>> {
    let Some(source) = job.spec.source.builtin() else {
        let name = job.spec.source.name();
        let reader = ports.sources.get(name).ok_or_else(|| {
            StoreError::internal(format!(
                "job {} reads source '{name}', which this build does not know",
                job.id
            ))
        })?;
        return reader.page(ports, job, after, limit).await;
    };
    match source {
        Source::BrandLocations { filter } => {
            let page = ports
                .catalog
                .page_brand_locations(job.brand_id, Some(LocationStatus::Active), after, limit)
                .await?;
            narrowed(ports, job, page, filter.as_ref()).await
        }
        Source::OfferLinks { made_by, filter } => {
            let page = ports
                .catalog
                .page_offer_link_ids(offer_of(job)?, made_by.map(LinkedBy::Job), after, limit)
                .await?;
            narrowed(ports, job, page, filter.as_ref()).await
        }
        Source::BrandEstate => {
            ports
                .catalog
                .page_brand_locations(job.brand_id, None, after, limit)
                .await
        }
        Source::JobFailures { job: failed } => {
            let page = ports.ledger.page_failures(failed, after, limit).await?;
            Ok(Page {
                items: page
                    .items
                    .into_iter()
                    .filter_map(|f| f.location_id)
                    .collect(),
                next: page.next,
            })
        }
        Source::Upload { .. } => Err(StoreError::internal(format!(
            "job {} reads a file's rows, not location ids",
            job.id
        ))),
    }
}

/// The next step of a job's fanout after `after` (its stored position): a page of its ids
/// (or an import's rows) cut into chunks.
pub async fn page_work(
    ports: &Ports,
    job: &Job,
    after: Option<&str>,
    limits: PageLimits,
) -> StoreResult<WorkPage> {
    if let Some(upload) = importing::upload_of(job) {
        return importing::page(ports, job, upload, after, limits).await;
    }
    let after = after.map(Cursor::from_position);
    let mut page = page_ids(ports, job, after.as_ref(), limits.page_size).await?;
    spread(job.id, &mut page.items);
    Ok(WorkPage::Chunks {
        chunks: page
            .items
            .chunks(limits.chunk_size)
            .map(|ids| ChunkWork::Ids(ids.to_vec()))
            .collect(),
        items: page.items.len() as u64,
        next: page.next.map(|c| c.position().to_owned()),
    })
}

/// Puts a page's ids in an order of their own, the same every time the page is read for
/// this job (sorted by a hash keyed by the job): a page comes in id order, and its chunks
/// cut from that order would each write one narrow range of the offer's links, the whole
/// job moving through the key range front to back. Spread, each chunk's writes fall all
/// over it (across every link shard, and over what DynamoDB can split for heat).
pub fn spread(job: JobId, ids: &mut [LocationId]) {
    let key = job.to_string();
    ids.sort_by_cached_key(|id| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes().chain(id.to_string().bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // FNV's last bytes move only its low bits much: mix them through.
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^ (hash >> 33)
    });
}

/// A page of ids kept to the locations that match `filter` (the page's cursor unchanged:
/// a page may hold fewer ids than asked, even none).
async fn narrowed(
    ports: &Ports,
    job: &Job,
    page: Page<LocationId>,
    filter: Option<&LocationFilter>,
) -> StoreResult<Page<LocationId>> {
    let Some(filter) = filter else {
        return Ok(page);
    };
    let matching = ports
        .catalog
        .locations_matching(job.brand_id, &page.items, filter)
        .await?;
    Ok(Page {
        items: matching.into_iter().map(|l| l.id).collect(),
        next: page.next,
    })
}

/// Reads a source the core does not define: one page of a job's ids after `after`, in an
/// order that does not change while the job runs (the cursor resumes it).
#[async_trait]
pub trait SourceReader: Send + Sync {
    async fn page(
        &self,
        ports: &Ports,
        job: &Job,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>>;
}

/// The readers of sources the core does not define, by name (a `SourceSpec`'s `type`).
/// A new source is a reader registered here and a spec naming it: no stored schema, no
/// adapter method beyond what reading it needs.
#[derive(Clone, Default)]
pub struct SourceReaders(Arc<BTreeMap<String, Arc<dyn SourceReader>>>);

impl SourceReaders {
    /// These readers and `reader` for `name`.
    pub fn with(self, name: &str, reader: Arc<dyn SourceReader>) -> Self {
        let mut readers = (*self.0).clone();
        readers.insert(name.to_owned(), reader);
        SourceReaders(Arc::new(readers))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn SourceReader>> {
        self.0.get(name)
    }
}

/// How many ids the job would act on now: every page of its source, read as fanout reads
/// them (keys only; on DynamoDB the brand index holds no location attributes).
pub async fn count_ids(ports: &Ports, job: &Job) -> StoreResult<u64> {
    count_ids_up_to(ports, job, u64::MAX).await
}

/// `count_ids`, read no further than the page that passes `cap` (the count may be a page
/// past it): whether a job is larger than a limit costs at most the limit's reads.
pub async fn count_ids_up_to(ports: &Ports, job: &Job, cap: u64) -> StoreResult<u64> {
    let mut count = 0;
    let mut cursor = None;
    loop {
        let page = page_ids(ports, job, cursor.as_ref(), COUNT_PAGE).await?;
        count += page.items.len() as u64;
        cursor = page.next;
        if cursor.is_none() || count >= cap {
            return Ok(count);
        }
    }
}

/// Ids per page when counting.
const COUNT_PAGE: usize = 1_000;

/// What became of one id of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Link(LinkOutcome),
    /// An import's closing of a location its file did not name.
    Row(RowOutcome),
}

/// Does the job's action to `ids` (one slice of a chunk).
pub async fn apply(ports: &Ports, job: &Job, ids: &[LocationId]) -> StoreResult<Vec<Outcome>> {
    let links = match job.spec.action {
        Action::Link => {
            ports
                .catalog
                .link_locations(offer_of(job)?, job.brand_id, LinkedBy::Job(job.id), ids)
                .await?
        }
        Action::Unlink { only_by } => {
            ports
                .catalog
                .unlink_locations(offer_of(job)?, job.id, only_by, ids)
                .await?
        }
        Action::Reconcile => reconcile(ports, job, ids).await?,
        Action::Import => {
            let closed = ports.location_imports.close_unimported(job.id, ids).await?;
            return Ok(closed.into_iter().map(Outcome::Row).collect());
        }
    };
    Ok(links.into_iter().map(Outcome::Link).collect())
}

/// Brings each location of `ids` to what the offer's rule (as it is now) wants of it, each
/// decision written on condition that the location has not changed since it was read
/// (`Catalog::follow_rule`, which also counts on the offer: see `offer_delta`).
async fn reconcile(ports: &Ports, job: &Job, ids: &[LocationId]) -> StoreResult<Vec<LinkOutcome>> {
    let offer = offer_of(job)?;
    let rule = ports.catalog.get_rule(offer).await?.ok_or_else(|| {
        StoreError::Conflict(format!(
            "offer {offer} has no rule any more; its reconcile job {} cannot go on",
            job.id
        ))
    })?;
    ports
        .catalog
        .follow_rule(&rule, ids, LinkedBy::Job(job.id))
        .await
}

/// The change a chunk's counts make to the offer's `locationsTotal` through the ledger:
/// `linked − unlinked`, except for a reconcile, whose every link and removal counted on the
/// offer in the write that made it (`Catalog::follow_rule`).
pub fn offer_delta(job: &Job, counts: &ChunkCounts) -> i64 {
    match job.spec.action {
        Action::Reconcile | Action::Import => 0,
        Action::Link | Action::Unlink { .. } => counts.offer_delta(),
    }
}

impl Outcome {
    /// The counter it adds to.
    pub fn counter(self) -> Counter {
        match self {
            Outcome::Link(LinkOutcome::Linked) => Counter::Linked,
            Outcome::Link(LinkOutcome::AlreadyLinked) => Counter::AlreadyLinked,
            Outcome::Link(LinkOutcome::NotFound) | Outcome::Row(RowOutcome::Gone) => {
                Counter::NotFound
            }
            Outcome::Link(LinkOutcome::Unlinked) => Counter::Unlinked,
            Outcome::Link(LinkOutcome::NotLinked) => Counter::NotLinked,
            Outcome::Row(RowOutcome::Created) => Counter::Created,
            Outcome::Row(RowOutcome::Updated) => Counter::Updated,
            Outcome::Row(RowOutcome::Unchanged) => Counter::Unchanged,
            Outcome::Row(RowOutcome::Closed) => Counter::Closed,
            Outcome::Row(RowOutcome::Duplicate { .. }) => Counter::Invalid,
        }
    }
}

/// The tally of a chunk whose action was done: `outcomes[i]` is what became of `ids[i]`.
pub fn tally(ids: &[LocationId], outcomes: &[Outcome]) -> ChunkTally {
    let mut tally = ChunkTally::with_capacity(ids.len());
    for (id, outcome) in ids.iter().zip(outcomes) {
        tally.push(*id, outcome.counter());
    }
    tally
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
    offer: Option<OfferId>,
    ids: &[LocationId],
    how: Unfinished<'_>,
) -> StoreResult<ChunkTally> {
    if job.spec.action == Action::Import {
        return crate::importing::account_unfinished_closes(ports, job, ids, how).await;
    }
    let offer =
        offer.ok_or_else(|| StoreError::internal(format!("job {} names no offer", job.id)))?;
    let owners = ports.catalog.existing_links(offer, ids).await?;
    let removed = match job.spec.action {
        Action::Link | Action::Import => vec![None; ids.len()],
        Action::Unlink { .. } | Action::Reconcile => ports.catalog.unlinked_by(offer, ids).await?,
    };
    let me = LinkedBy::Job(job.id);
    let mut tally = ChunkTally::with_capacity(ids.len());
    for ((id, owner), removed) in ids.iter().zip(owners).zip(removed) {
        let effect = match (job.spec.action, owner) {
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
            // What this job did shows; whether it was to link or unlink the rest, only the
            // rule and the location (read again by a retry) would say.
            (Action::Reconcile, Some(by)) if by == me => Effect::Done(LinkOutcome::Linked),
            (Action::Reconcile, None) if removed == Some(job.id) => {
                Effect::Done(LinkOutcome::Unlinked)
            }
            (Action::Reconcile, _) => Effect::Untouched,
            // Accounted above.
            (Action::Import, _) => Effect::Untouched,
        };
        match (effect, how) {
            (Effect::Done(outcome), _) | (Effect::Moot(outcome), Unfinished::GivenUp { .. }) => {
                tally.push(*id, Outcome::Link(outcome).counter())
            }
            (Effect::Untouched, Unfinished::GivenUp { reason, attempts }) => tally.fail(
                Counter::Failed,
                Failure::of_location(*id, reason.to_owned(), attempts),
            ),
            (Effect::Moot(_) | Effect::Untouched, Unfinished::Skipped) => {
                tally.push(*id, Counter::Cancelled)
            }
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_spread_the_same_way_each_time_for_its_job_and_keeps_every_id() {
        let mut ids: Vec<LocationId> = (0..1_000).map(|_| LocationId::new_random()).collect();
        ids.sort();
        let job = JobId::new_v7();
        let mut once = ids.clone();
        spread(job, &mut once);
        let mut again = ids.clone();
        again.reverse();
        spread(job, &mut again);
        assert_eq!(
            once, again,
            "the same order whatever order the page came in"
        );
        let mut kept = once.clone();
        kept.sort();
        assert_eq!(kept, ids);
        // Spread: the first chunk of 100 holds ids from all over the page, not its start.
        let first: Vec<usize> = once[..100]
            .iter()
            .map(|id| ids.binary_search(id).unwrap())
            .collect();
        assert!(first.iter().any(|i| *i >= 900) && first.iter().any(|i| *i < 100));
        let in_order = first.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (25..75).contains(&in_order),
            "{in_order} of 99 steps ascend"
        );
        // Another job spreads it another way.
        let mut other = ids.clone();
        spread(JobId::new_v7(), &mut other);
        assert_ne!(other, once);
    }
}
