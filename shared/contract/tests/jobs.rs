//! JobStore contracts: idempotent creation with one active job per offer, the fanout cursor
//! compare-and-set, the chunk ledger that accounts each chunk exactly once, and the terminal
//! transition that exactly one caller wins.

use std::collections::HashSet;

use bulklink_core::domain::{
    BrandId, ChunkCounts, ChunkSeq, ChunkTally, Counter, Job, JobId, JobStatus, LocationId, Offer,
    OfferId, Transition,
};
use bulklink_core::ports::{
    Advanced, CancelOutcome, Completion, CreateOutcome, Cursor, Failure, FanoutAdvance, Ledgered,
    OfferDeletion, ParkedChunk, Parking, PauseOutcome, Released,
};
use bulklink_core::StoreResult;
use chrono::{Duration, Utc};
use futures::future::join_all;

use crate::support::{claim, job_for, now_ms, offer, seed, Fixture};

fn created(outcome: CreateOutcome) -> Job {
    match outcome {
        CreateOutcome::Created(job) => job,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// A chunk's tally of these counts (each outcome a location of its own), `failures` among
/// its failed ones.
fn tally(counts: ChunkCounts, failures: &[Failure]) -> ChunkTally {
    let mut tally = ChunkTally::default();
    for failure in failures {
        tally.fail(Counter::Failed, failure.clone());
    }
    let failed_without_reason = counts.failed.saturating_sub(failures.len() as u32);
    for (counter, n) in [
        (Counter::Linked, counts.linked),
        (Counter::AlreadyLinked, counts.already_linked),
        (Counter::NotFound, counts.not_found),
        (Counter::Failed, failed_without_reason),
        (Counter::Cancelled, counts.cancelled),
        (Counter::Unlinked, counts.unlinked),
        (Counter::NotLinked, counts.not_linked),
    ] {
        for _ in 0..n {
            tally.push(LocationId::new_random(), counter);
        }
    }
    tally
}

fn counts(linked: u32, already_linked: u32, not_found: u32, failed: u32) -> ChunkCounts {
    ChunkCounts {
        linked,
        already_linked,
        not_found,
        failed,
        ..Default::default()
    }
}

fn failure(reason: &str, attempts: u32) -> Failure {
    Failure::of_location(LocationId::new_random(), reason.to_owned(), attempts)
}

/// The whole fanout in one step: done, with `chunks` chunks holding `ids` location ids.
fn all_pages(chunks: u32, ids: u64) -> FanoutAdvance {
    FanoutAdvance {
        prev_cursor: None,
        next_cursor: None,
        done: true,
        chunks_added: chunks,
        ids_added: ids,
    }
}

/// An offer and its job, created and started.
async fn running_job(fx: &Fixture) -> (Offer, Job) {
    let (offer, _) = seed(&fx.ports, 0).await;
    let job = created(
        fx.ports
            .jobs
            .create_job(&job_for(&offer), None)
            .await
            .unwrap(),
    );
    let job = fx.ports.jobs.start_job(job.id).await.unwrap().unwrap();
    (offer, job)
}

/// A running job whose fanout is done, with `chunks` chunks of `ids` ids outstanding.
async fn fanned_out(fx: &Fixture, chunks: u32, ids: u64) -> (Offer, Job) {
    let (offer, job) = running_job(fx).await;
    let advanced = fx
        .ports
        .jobs
        .advance_fanout(job.id, &all_pages(chunks, ids))
        .await;
    let Ok(Advanced::Applied(job)) = advanced else {
        panic!("fanout did not apply: {advanced:?}");
    };
    (offer, job)
}

/// A job that ran one chunk and won its terminal transition.
async fn succeeded(fx: &Fixture) -> (Offer, Job) {
    let (offer, job) = fanned_out(fx, 1, 1).await;
    let jobs = &fx.ports.jobs;
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(1, 0, 0, 0), &[]),
            counts(1, 0, 0, 0).offer_delta(),
        )
        .await
        .unwrap();
    let Completion::Won(job) = jobs.try_complete(job.id).await.unwrap() else {
        panic!("the job did not complete");
    };
    (offer, job)
}

fn winners(results: &[StoreResult<Completion>]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r, Ok(Completion::Won(_))))
        .count()
}

pub async fn a_new_job_is_created_pending(fx: &Fixture) {
    let (offer, _) = seed(&fx.ports, 0).await;
    let job = job_for(&offer);

    let stored = created(fx.ports.jobs.create_job(&job, None).await.unwrap());

    assert_eq!(stored.id, job.id);
    assert_eq!(stored.status, JobStatus::Pending);
    assert_eq!(
        (stored.brand_id, stored.offer_id),
        (offer.brand_id, Some(offer.id))
    );
    assert_eq!(stored.counters, Default::default());
    assert_eq!((stored.chunks_total, stored.chunks_done), (0, 0));
    assert_eq!(
        (stored.fanout_cursor.as_deref(), stored.fanout_done),
        (None, false)
    );
    assert_eq!(stored.created_at, job.created_at);
    assert_eq!(
        (stored.started_at, stored.finished_at, stored.notified_at),
        (None, None, None)
    );
    assert_eq!(fx.ports.jobs.get_job(job.id).await.unwrap(), Some(stored));
}

pub async fn the_same_claim_replays_the_first_job(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let claim = claim("k1", "offer-a");
    let first = created(
        jobs.create_job(&job_for(&offer), Some(&claim))
            .await
            .unwrap(),
    );
    let retry = job_for(&offer);

    let outcome = jobs.create_job(&retry, Some(&claim)).await.unwrap();

    let CreateOutcome::Replayed(replayed) = outcome else {
        panic!("expected Replayed, got {outcome:?}");
    };
    assert_eq!(replayed.id, first.id);
    assert_eq!(jobs.get_job(retry.id).await.unwrap(), None);
}

pub async fn the_same_key_for_a_different_request_is_refused(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (first_offer, _) = seed(&fx.ports, 0).await;
    let (second_offer, _) = seed(&fx.ports, 0).await;
    created(
        jobs.create_job(&job_for(&first_offer), Some(&claim("k1", "offer-a")))
            .await
            .unwrap(),
    );
    let second = job_for(&second_offer);

    let outcome = jobs
        .create_job(&second, Some(&claim("k1", "offer-b")))
        .await
        .unwrap();

    assert_eq!(outcome, CreateOutcome::KeyReused);
    assert_eq!(jobs.get_job(second.id).await.unwrap(), None);
}

pub async fn a_second_job_for_a_busy_offer_names_the_active_one(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let first = created(jobs.create_job(&job_for(&offer), None).await.unwrap());
    let second = job_for(&offer);

    let outcome = jobs.create_job(&second, None).await.unwrap();

    assert_eq!(outcome, CreateOutcome::OfferBusy(first.id));
    assert_eq!(jobs.get_job(second.id).await.unwrap(), None);
}

pub async fn concurrent_creates_for_one_offer_create_one_job(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let candidates: Vec<Job> = (0..10).map(|_| job_for(&offer)).collect();

    let results: Vec<_> = join_all(candidates.iter().map(|job| jobs.create_job(job, None))).await;

    let winners: Vec<JobId> = results
        .iter()
        .filter_map(|r| match r {
            Ok(CreateOutcome::Created(job)) => Some(job.id),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        match result {
            Ok(CreateOutcome::Created(_)) => {}
            Ok(CreateOutcome::OfferBusy(active)) => assert_eq!(*active, winners[0]),
            Ok(other) => panic!("expected OfferBusy, got {other:?}"),
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
}

pub async fn concurrent_retries_with_one_claim_create_one_job(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let claim = claim("k1", "offer-a");
    let candidates: Vec<Job> = (0..10).map(|_| job_for(&offer)).collect();

    let results: Vec<_> = join_all(
        candidates
            .iter()
            .map(|job| jobs.create_job(job, Some(&claim))),
    )
    .await;

    let mut ids = HashSet::new();
    for result in &results {
        match result {
            Ok(CreateOutcome::Created(job) | CreateOutcome::Replayed(job)) => {
                ids.insert(job.id);
            }
            Ok(other) => panic!("expected the first job again, got {other:?}"),
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    let created = results
        .iter()
        .filter(|r| matches!(r, Ok(CreateOutcome::Created(_))))
        .count();
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(ids.len(), 1, "{results:?}");
}

pub async fn starting_a_pending_job_runs_it_once(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let job = created(jobs.create_job(&job_for(&offer), None).await.unwrap());

    let started = jobs.start_job(job.id).await.unwrap().unwrap();
    let again = jobs.start_job(job.id).await.unwrap().unwrap();

    assert_eq!(started.status, JobStatus::Running);
    assert!(started.started_at.is_some());
    assert_eq!(again.status, JobStatus::Running);
    assert_eq!(again.started_at, started.started_at);
}

pub async fn a_scheduled_job_is_due_at_its_time_and_released_once(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let now = fx.ports.clock.now();
    let at = now + Duration::hours(1);
    let held = Job {
        not_before: Some(at),
        created_by: Some("alice".into()),
        ..job_for(&offer)
    }
    .held(false, now);
    let job = created(jobs.create_job(&held, None).await.unwrap());
    assert_eq!(job.status, JobStatus::Scheduled);
    assert_eq!(
        (job.not_before, job.created_by.as_deref()),
        (Some(at), Some("alice"))
    );
    // Another scheduled job, due later: the earlier comes first.
    let (later_offer, _) = seed(&fx.ports, 0).await;
    let later = Job {
        not_before: Some(at + Duration::minutes(1)),
        ..job_for(&later_offer)
    }
    .held(false, now);
    let later = created(jobs.create_job(&later, None).await.unwrap());

    let before: Vec<JobId> = ids(jobs.due_jobs(at - Duration::seconds(1), 10).await.unwrap());
    assert!(!before.contains(&job.id), "not due before its time");
    let due = ids(jobs
        .due_jobs(at + Duration::hours(1), 10_000)
        .await
        .unwrap());
    let (first, second) = (position(&due, job.id), position(&due, later.id));
    assert!(first < second, "soonest first: {due:?}");
    assert!(
        ids(jobs.due_jobs(at, 10_000).await.unwrap()).contains(&job.id),
        "due at its time"
    );

    let releases =
        join_all((0..5).map(|_| jobs.release_job(job.id, Transition::Due, None, at))).await;
    let won: Vec<Job> = releases
        .into_iter()
        .filter_map(|r| match r.unwrap().unwrap() {
            Released::Released(job) => Some(job),
            Released::NotHeld(job) => {
                assert_eq!(job.status, JobStatus::Pending);
                None
            }
        })
        .collect();
    assert_eq!(won.len(), 1, "released once");
    assert_eq!(won[0].status, JobStatus::Pending);
    let due = ids(jobs
        .due_jobs(at + Duration::hours(1), 10_000)
        .await
        .unwrap());
    assert!(!due.contains(&job.id), "released: no longer due");
    assert!(due.contains(&later.id));
    assert!(jobs
        .release_job(JobId::new_v7(), Transition::Due, None, at)
        .await
        .unwrap()
        .is_none());
}

pub async fn an_approval_records_its_approver_and_leaves_the_end_to_be_notified(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let now = fx.ports.clock.now();
    let awaiting = |offer: &Offer, not_before| {
        Job {
            not_before,
            created_by: Some("alice".into()),
            ..job_for(offer)
        }
        .held(true, now)
    };
    let (offer, _) = seed(&fx.ports, 0).await;
    let job = created(
        jobs.create_job(&awaiting(&offer, None), None)
            .await
            .unwrap(),
    );
    assert_eq!(job.status, JobStatus::AwaitingApproval);
    // Its job.awaiting_approval event was sent.
    jobs.mark_notified(job.id, now).await.unwrap();
    let Some(Released::Released(approved)) = jobs
        .release_job(job.id, Transition::Approve, Some("bob"), now)
        .await
        .unwrap()
    else {
        panic!("not released");
    };
    assert_eq!(approved.status, JobStatus::Pending);
    assert_eq!(approved.approved_by.as_deref(), Some("bob"));
    assert_eq!(approved.created_by.as_deref(), Some("alice"));
    assert_eq!(
        approved.notified_at, None,
        "its end is still to be announced"
    );
    let again = jobs
        .release_job(job.id, Transition::Approve, Some("carol"), now)
        .await
        .unwrap();
    let Some(Released::NotHeld(unchanged)) = again else {
        panic!("approved twice: {again:?}");
    };
    assert_eq!(unchanged.approved_by.as_deref(), Some("bob"));

    // A rejected one is back in the sweeper's view, its end still to announce (its fanout
    // message may be lost).
    let (offer, _) = seed(&fx.ports, 0).await;
    let rejected = created(
        jobs.create_job(&awaiting(&offer, None), None)
            .await
            .unwrap(),
    );
    jobs.mark_notified(rejected.id, now).await.unwrap();
    let later = now + Duration::hours(1);
    assert!(!ids(jobs.unsettled_jobs(later, 10_000).await.unwrap()).contains(&rejected.id));
    let Some(Released::Released(cancelling)) = jobs
        .release_job(rejected.id, Transition::Reject, None, now)
        .await
        .unwrap()
    else {
        panic!("not rejected");
    };
    assert_eq!(
        (cancelling.status, cancelling.notified_at),
        (JobStatus::Cancelling, None)
    );
    assert!(ids(jobs.unsettled_jobs(later, 10_000).await.unwrap()).contains(&rejected.id));

    // Approved before its time: scheduled, and due then.
    let (offer, _) = seed(&fx.ports, 0).await;
    let at = now + Duration::hours(2);
    let job = created(
        jobs.create_job(&awaiting(&offer, Some(at)), None)
            .await
            .unwrap(),
    );
    assert!(
        !ids(jobs.due_jobs(at, 10_000).await.unwrap()).contains(&job.id),
        "not scheduled yet"
    );
    let transition = job.approval_at(now);
    assert_eq!(transition, Transition::ApproveForLater);
    let released = jobs
        .release_job(job.id, transition, Some("bob"), now)
        .await
        .unwrap();
    assert!(
        matches!(released, Some(Released::Released(ref j)) if j.status == JobStatus::Scheduled)
    );
    assert!(ids(jobs.due_jobs(at, 10_000).await.unwrap()).contains(&job.id));
}

pub async fn an_offers_start_is_due_at_its_time_moves_and_is_cleared(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (first, second) = (OfferId::new_random(), OfferId::new_random());
    let at = now_ms() + Duration::hours(1);
    jobs.put_offer_start(first, at + Duration::minutes(1))
        .await
        .unwrap();
    jobs.put_offer_start(second, at).await.unwrap();
    let due = |when| async move {
        jobs.due_offer_starts(when, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|(o, _)| *o == first || *o == second)
            .collect::<Vec<_>>()
    };
    assert!(
        due(at - Duration::seconds(1)).await.is_empty(),
        "not due before its time"
    );
    assert_eq!(due(at).await, [(second, at)]);
    assert_eq!(
        due(at + Duration::hours(1)).await,
        [(second, at), (first, at + Duration::minutes(1))],
        "soonest first"
    );
    // Moved: due at its new time only.
    jobs.put_offer_start(second, at + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        due(at + Duration::hours(1)).await,
        [(first, at + Duration::minutes(1))]
    );
    jobs.clear_offer_start(first).await.unwrap();
    assert!(due(at + Duration::hours(1)).await.is_empty());
    // Scheduled jobs share the index: an offer's start is not a job.
    assert!(jobs
        .due_jobs(at + Duration::hours(3), 10_000)
        .await
        .unwrap()
        .iter()
        .all(|job| job.status == JobStatus::Scheduled));
}

fn ids(jobs: Vec<Job>) -> Vec<JobId> {
    jobs.into_iter().map(|j| j.id).collect()
}

fn position(ids: &[JobId], id: JobId) -> usize {
    ids.iter()
        .position(|x| *x == id)
        .unwrap_or_else(|| panic!("{id} not among {ids:?}"))
}

pub async fn starting_leaves_a_job_in_any_other_status_alone(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let pending = created(jobs.create_job(&job_for(&offer), None).await.unwrap());
    jobs.request_cancel(pending.id).await.unwrap();
    let (_, finished) = succeeded(fx).await;

    let cancelling = jobs.start_job(pending.id).await.unwrap().unwrap();
    let terminal = jobs.start_job(finished.id).await.unwrap().unwrap();

    assert_eq!(cancelling.status, JobStatus::Cancelling);
    assert_eq!(cancelling.started_at, None);
    assert_eq!(terminal.status, JobStatus::Succeeded);
    assert_eq!(terminal.started_at, finished.started_at);
}

pub async fn starting_an_unknown_job_finds_nothing(fx: &Fixture) {
    running_job(fx).await;

    let started = fx.ports.jobs.start_job(JobId::new_v7()).await.unwrap();

    assert_eq!(started, None);
}

pub async fn a_fanout_advance_applies_only_from_the_current_cursor(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (_, job) = running_job(fx).await;
    let first_page = FanoutAdvance {
        prev_cursor: None,
        next_cursor: Some("page-2".to_owned()),
        done: false,
        chunks_added: 2,
        ids_added: 150,
    };
    let last_page = FanoutAdvance {
        prev_cursor: Some("page-2".to_owned()),
        next_cursor: None,
        done: true,
        chunks_added: 1,
        ids_added: 50,
    };

    let applied = jobs.advance_fanout(job.id, &first_page).await.unwrap();
    let replayed = jobs.advance_fanout(job.id, &first_page).await.unwrap();
    let finished = jobs.advance_fanout(job.id, &last_page).await.unwrap();

    let Advanced::Applied(after_first) = applied else {
        panic!("expected Applied, got {applied:?}");
    };
    assert_eq!(after_first.fanout_cursor.as_deref(), Some("page-2"));
    assert_eq!(
        (after_first.chunks_total, after_first.counters.total),
        (2, 150)
    );
    assert!(!after_first.fanout_done);
    let Advanced::Superseded(current) = replayed else {
        panic!("expected Superseded, got {replayed:?}");
    };
    assert_eq!(current.fanout_cursor.as_deref(), Some("page-2"));
    assert_eq!((current.chunks_total, current.counters.total), (2, 150));
    let Advanced::Applied(done) = finished else {
        panic!("expected Applied, got {finished:?}");
    };
    assert!(done.fanout_done);
    assert_eq!((done.chunks_total, done.counters.total), (3, 200));
}

/// A cancel's close of the fanout and a page whose chunks were sent just before it: the
/// close never leaves accounted chunks outside `chunksTotal`, and a chunk beyond a closed
/// fanout is never accounted — either order keeps `total` = what the ledger counts.
pub async fn a_close_never_leaves_accounted_chunks_outside_the_total(fx: &Fixture) {
    let (jobs, ledger) = (&fx.ports.jobs, &fx.ports.ledger);
    let close = FanoutAdvance {
        prev_cursor: None,
        next_cursor: None,
        done: true,
        chunks_added: 0,
        ids_added: 0,
    };
    let record = |job: JobId, offer: OfferId| async move {
        ledger
            .record_chunk(
                job,
                Some(offer),
                ChunkSeq(0),
                &tally(counts(0, 0, 0, 0), &[]),
                0,
            )
            .await
            .unwrap()
    };

    // The page's chunk is accounted first: the close is refused, the page's step lands.
    let (offer, job) = running_job(fx).await;
    assert!(matches!(
        record(job.id, offer.id).await,
        Ledgered::Recorded(_)
    ));
    let refused = jobs.advance_fanout(job.id, &close).await.unwrap();
    let Advanced::Superseded(now) = refused else {
        panic!("a close below an accounted chunk applied: {refused:?}");
    };
    assert!(!now.fanout_done);
    let landed = jobs.advance_fanout(job.id, &all_pages(1, 3)).await.unwrap();
    let Advanced::Applied(now) = landed else {
        panic!("the page's step did not land: {landed:?}");
    };
    assert_eq!(
        (now.chunks_total, now.chunks_done, now.counters.total),
        (1, 1, 3)
    );

    // The close lands first: the page's chunk is not accounted, its step is superseded.
    let (offer, job) = running_job(fx).await;
    assert!(matches!(
        jobs.advance_fanout(job.id, &close).await.unwrap(),
        Advanced::Applied(_)
    ));
    let Ledgered::Duplicate(now) = record(job.id, offer.id).await else {
        panic!("a chunk beyond the closed fanout was accounted");
    };
    assert_eq!((now.chunks_total, now.chunks_done), (0, 0));
    assert!(matches!(
        jobs.advance_fanout(job.id, &all_pages(1, 3)).await.unwrap(),
        Advanced::Superseded(_)
    ));
    assert!(ledger
        .chunks_from(job.id, ChunkSeq(0), 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn concurrent_fanout_advances_from_one_cursor_apply_once(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (_, job) = running_job(fx).await;
    let first_page = FanoutAdvance {
        prev_cursor: None,
        next_cursor: Some("page-2".to_owned()),
        done: false,
        chunks_added: 3,
        ids_added: 300,
    };

    let results: Vec<_> = join_all((0..10).map(|_| jobs.advance_fanout(job.id, &first_page))).await;

    let applied = results
        .iter()
        .filter(|r| matches!(r, Ok(Advanced::Applied(_))))
        .count();
    assert_eq!(applied, 1, "{results:?}");
    assert!(
        results.iter().all(|r| match r {
            Ok(_) => true,
            Err(e) => e.is_retryable(),
        }),
        "{results:?}"
    );
    let after = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((after.chunks_total, after.counters.total), (3, 300));
}

pub async fn recording_a_chunk_adds_its_counts_to_the_job_and_the_offer(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 2, 10).await;

    let ledgered = fx
        .ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(3, 1, 1, 0), &[]),
            counts(3, 1, 1, 0).offer_delta(),
        )
        .await
        .unwrap();

    let Ledgered::Recorded(after) = ledgered else {
        panic!("expected Recorded, got {ledgered:?}");
    };
    let c = after.counters;
    assert_eq!(
        (c.total, c.linked, c.already_linked, c.not_found),
        (10, 3, 1, 1)
    );
    assert_eq!((c.failed, c.cancelled), (0, 0));
    assert_eq!((after.chunks_done, after.chunks_total), (1, 2));
    assert_eq!(jobs.get_job(job.id).await.unwrap(), Some(after));
    let offer = fx.ports.catalog.get_offer(offer.id).await.unwrap().unwrap();
    assert_eq!(offer.locations_total, 3);
}

pub async fn a_replayed_chunk_adds_nothing_to_the_counters(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 2, 6).await;
    let first_failure = failure("throttled", 3);
    let first = fx
        .ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(2, 0, 0, 1), std::slice::from_ref(&first_failure)),
            counts(2, 0, 0, 1).offer_delta(),
        )
        .await
        .unwrap();

    let replay = fx
        .ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(2, 0, 0, 1), &[failure("again", 4)]),
            counts(2, 0, 0, 1).offer_delta(),
        )
        .await
        .unwrap();

    let Ledgered::Duplicate(now) = replay else {
        panic!("expected Duplicate, got {replay:?}");
    };
    assert_eq!(now.counters, first.job().counters);
    assert_eq!(now.chunks_done, 1);
    assert_eq!(
        jobs.get_job(job.id).await.unwrap().unwrap().counters,
        first.job().counters
    );
    let offer = fx.ports.catalog.get_offer(offer.id).await.unwrap().unwrap();
    assert_eq!(offer.locations_total, 2);
    let failures = fx
        .ports
        .ledger
        .page_failures(job.id, None, 10)
        .await
        .unwrap();
    assert_eq!(failures.items, vec![first_failure]);
}

pub async fn a_chunks_outcomes_are_kept_with_it_once_and_read_back_in_order(fx: &Fixture) {
    let (offer, job) = fanned_out(fx, 3, 12).await;
    let mut first = tally(
        counts(2, 1, 0, 0),
        &[failure("throttled, a reason, \"quoted\"", 3)],
    );
    first.push_row(7, None, Counter::Invalid);
    let tallies = [
        first,
        tally(counts(4, 0, 0, 0), &[]),
        tally(counts(0, 0, 1, 0), &[]),
    ];
    // Recorded out of order, the first twice (a replay with other outcomes changes nothing).
    for seq in [2u32, 0, 1] {
        let t = &tallies[seq as usize];
        fx.ports
            .ledger
            .record_chunk(
                job.id,
                Some(offer.id),
                ChunkSeq(seq),
                t,
                t.counts().offer_delta(),
            )
            .await
            .unwrap();
    }
    let other = tally(counts(0, 0, 0, 0), &[failure("other", 1)]);
    fx.ports
        .ledger
        .record_chunk(job.id, Some(offer.id), ChunkSeq(0), &other, 0)
        .await
        .unwrap();

    let head = fx
        .ports
        .ledger
        .chunks_from(job.id, ChunkSeq(0), 2)
        .await
        .unwrap();
    assert_eq!(
        head.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [ChunkSeq(0), ChunkSeq(1)]
    );
    let rest = fx
        .ports
        .ledger
        .chunks_from(job.id, ChunkSeq(2), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    for (record, tally) in head.iter().chain(&rest).zip(&tallies) {
        assert_eq!(record.outcomes.as_deref(), Some(tally.outcomes()));
        let age = fx.ports.clock.now() - record.recorded_at;
        assert!(age >= Duration::zero() && age < Duration::minutes(1));
    }
    let none = fx
        .ports
        .ledger
        .chunks_from(job.id, ChunkSeq(3), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    let other_job = fx
        .ports
        .ledger
        .chunks_from(JobId::new_v7(), ChunkSeq(0), 10);
    assert!(other_job.await.unwrap().is_empty());
}

pub async fn concurrent_deliveries_of_one_chunk_are_recorded_once(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 1, 5).await;
    let chunk = counts(4, 1, 0, 0);
    let delivered = tally(chunk, &[]);

    let results = join_all((0..10).map(|_| {
        fx.ports.ledger.record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &delivered,
            chunk.offer_delta(),
        )
    }))
    .await;

    let recorded = results
        .iter()
        .filter(|r| matches!(r, Ok(Ledgered::Recorded(_))))
        .count();
    assert_eq!(recorded, 1, "{results:?}");
    // A transaction that lost a race may be refused as retryable instead of reported
    // as a duplicate (DynamoDB's TransactionConflict); nothing else is acceptable.
    for result in &results {
        match result {
            Ok(_) => {}
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    let after = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        (after.counters.linked, after.counters.already_linked),
        (4, 1)
    );
    assert_eq!(after.chunks_done, 1);
    let offer = fx.ports.catalog.get_offer(offer.id).await.unwrap().unwrap();
    assert_eq!(offer.locations_total, 4);
}

pub async fn recorded_failures_are_listed_with_reason_and_attempts(fx: &Fixture) {
    let (offer, job) = fanned_out(fx, 2, 10).await;
    let first: Vec<Failure> = (1..=3).map(|n| failure("brand mismatch", n)).collect();
    let second = vec![failure("throttled", 5), failure("timeout", 2)];
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(2, 0, 0, 3), &first),
            counts(2, 0, 0, 3).offer_delta(),
        )
        .await
        .unwrap();
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(1),
            &tally(counts(3, 0, 0, 2), &second),
            counts(3, 0, 0, 2).offer_delta(),
        )
        .await
        .unwrap();

    let mut sizes = Vec::new();
    let mut listed = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = fx
            .ports
            .ledger
            .page_failures(job.id, cursor.as_ref(), 2)
            .await
            .unwrap();
        sizes.push(page.items.len());
        listed.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }

    let mut expected: Vec<Failure> = first.into_iter().chain(second).collect();
    expected.sort_by_key(|f| f.location_id);
    listed.sort_by_key(|f| f.location_id);
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(listed, expected);
}

pub async fn completion_waits_for_fanout_and_every_chunk(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let job = created(jobs.create_job(&job_for(&offer), None).await.unwrap());
    let while_pending = jobs.try_complete(job.id).await.unwrap();
    jobs.start_job(job.id).await.unwrap();
    let first_page = FanoutAdvance {
        prev_cursor: None,
        next_cursor: Some("page-2".to_owned()),
        done: false,
        chunks_added: 1,
        ids_added: 2,
    };
    jobs.advance_fanout(job.id, &first_page).await.unwrap();
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(2, 0, 0, 0), &[]),
            counts(2, 0, 0, 0).offer_delta(),
        )
        .await
        .unwrap();
    let while_fanning_out = jobs.try_complete(job.id).await.unwrap();
    let last_page = FanoutAdvance {
        prev_cursor: Some("page-2".to_owned()),
        next_cursor: None,
        done: true,
        chunks_added: 1,
        ids_added: 2,
    };
    jobs.advance_fanout(job.id, &last_page).await.unwrap();
    let with_a_chunk_outstanding = jobs.try_complete(job.id).await.unwrap();
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(1),
            &tally(counts(2, 0, 0, 0), &[]),
            counts(2, 0, 0, 0).offer_delta(),
        )
        .await
        .unwrap();

    let done = jobs.try_complete(job.id).await.unwrap();
    let after = jobs.try_complete(job.id).await.unwrap();

    assert!(
        matches!(while_pending, Completion::NotYet(_)),
        "{while_pending:?}"
    );
    assert!(
        matches!(while_fanning_out, Completion::NotYet(_)),
        "{while_fanning_out:?}"
    );
    assert!(
        matches!(with_a_chunk_outstanding, Completion::NotYet(_)),
        "{with_a_chunk_outstanding:?}"
    );
    let Completion::Won(won) = done else {
        panic!("expected Won, got {done:?}");
    };
    assert_eq!(won.status, JobStatus::Succeeded);
    assert!(won.finished_at.is_some());
    let Completion::AlreadyTerminal(terminal) = after else {
        panic!("expected AlreadyTerminal, got {after:?}");
    };
    assert_eq!(terminal.status, JobStatus::Succeeded);
}

pub async fn concurrent_completion_attempts_have_exactly_one_winner(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 1, 1).await;
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(1, 0, 0, 0), &[]),
            counts(1, 0, 0, 0).offer_delta(),
        )
        .await
        .unwrap();

    let results: Vec<_> = join_all((0..10).map(|_| jobs.try_complete(job.id))).await;

    assert_eq!(winners(&results), 1, "{results:?}");
    for result in &results {
        match result {
            Ok(Completion::Won(_) | Completion::AlreadyTerminal(_)) => {}
            Ok(other) => panic!("a loser must see the job terminal, not {other:?}"),
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    let after = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(after.status, JobStatus::Succeeded);
}

pub async fn a_running_job_with_failures_completes_with_errors(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 1, 2).await;
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(1, 0, 0, 1), &[failure("x", 3)]),
            counts(1, 0, 0, 1).offer_delta(),
        )
        .await
        .unwrap();

    let completion = jobs.try_complete(job.id).await.unwrap();

    let Completion::Won(done) = completion else {
        panic!("expected Won, got {completion:?}");
    };
    assert_eq!(done.status, JobStatus::CompletedWithErrors);
}

pub async fn a_cancelling_job_completes_as_cancelled(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 1, 2).await;
    jobs.request_cancel(job.id).await.unwrap();
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(ChunkCounts::all_cancelled(2), &[]),
            ChunkCounts::all_cancelled(2).offer_delta(),
        )
        .await
        .unwrap();

    let completion = jobs.try_complete(job.id).await.unwrap();

    let Completion::Won(done) = completion else {
        panic!("expected Won, got {completion:?}");
    };
    assert_eq!(done.status, JobStatus::Cancelled);
}

pub async fn a_failing_job_completes_as_failed(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 1, 2).await;
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(0, 0, 0, 2), &[]),
            counts(0, 0, 0, 2).offer_delta(),
        )
        .await
        .unwrap();
    assert!(jobs.mark_failing(job.id).await.unwrap());

    let completion = jobs.try_complete(job.id).await.unwrap();

    let Completion::Won(done) = completion else {
        panic!("expected Won, got {completion:?}");
    };
    assert_eq!(done.status, JobStatus::Failed);
}

pub async fn completion_frees_the_offer_for_a_new_job(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, job) = fanned_out(fx, 1, 1).await;
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(1, 0, 0, 0), &[]),
            counts(1, 0, 0, 0).offer_delta(),
        )
        .await
        .unwrap();
    let while_running = jobs.create_job(&job_for(&offer), None).await.unwrap();

    jobs.try_complete(job.id).await.unwrap();
    let next = job_for(&offer);
    let after = jobs.create_job(&next, None).await.unwrap();

    assert_eq!(while_running, CreateOutcome::OfferBusy(job.id));
    assert_eq!(created(after).id, next.id);
}

pub async fn a_pending_or_running_job_can_be_cancelled(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let pending = created(jobs.create_job(&job_for(&offer), None).await.unwrap());
    let (_, running) = running_job(fx).await;

    let outcomes = [
        jobs.request_cancel(pending.id).await.unwrap(),
        jobs.request_cancel(running.id).await.unwrap(),
    ];

    for (outcome, id) in outcomes.into_iter().zip([pending.id, running.id]) {
        let Some(CancelOutcome::Cancelling(job)) = outcome else {
            panic!("expected Cancelling, got {outcome:?}");
        };
        assert_eq!(job.status, JobStatus::Cancelling);
        let stored = jobs.get_job(id).await.unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Cancelling);
    }
}

pub async fn a_terminal_job_cannot_be_cancelled(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (_, job) = succeeded(fx).await;

    let outcome = jobs.request_cancel(job.id).await.unwrap();

    let Some(CancelOutcome::NotCancellable(current)) = outcome else {
        panic!("expected NotCancellable, got {outcome:?}");
    };
    assert_eq!(current.status, JobStatus::Succeeded);
    let stored = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Succeeded);
}

pub async fn cancelling_an_unknown_job_finds_nothing(fx: &Fixture) {
    running_job(fx).await;

    let outcome = fx.ports.jobs.request_cancel(JobId::new_v7()).await.unwrap();

    assert_eq!(outcome, None);
}

pub async fn only_a_running_job_can_be_marked_failing(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (offer, _) = seed(&fx.ports, 0).await;
    let job = created(jobs.create_job(&job_for(&offer), None).await.unwrap());

    let while_pending = jobs.mark_failing(job.id).await.unwrap();
    let pending = jobs.get_job(job.id).await.unwrap().unwrap();
    jobs.start_job(job.id).await.unwrap();
    let while_running = jobs.mark_failing(job.id).await.unwrap();
    let while_failing = jobs.mark_failing(job.id).await.unwrap();
    let failing = jobs.get_job(job.id).await.unwrap().unwrap();

    assert!(!while_pending);
    assert_eq!(pending.status, JobStatus::Pending);
    assert!(while_running);
    assert!(!while_failing);
    assert_eq!(failing.status, JobStatus::Failing);
}

pub async fn marking_a_job_notified_records_when(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let (_, job) = succeeded(fx).await;
    let at = now_ms();

    jobs.mark_notified(job.id, at).await.unwrap();

    assert_eq!(job.notified_at, None);
    let stored = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.notified_at, Some(at));
}

pub async fn a_brands_jobs_list_newest_first_page_by_page(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let brand = BrandId::new_random();
    let mut mine = Vec::new();
    for _ in 0..5 {
        let mine_offer = offer(brand);
        fx.ports.catalog.create_offer(&mine_offer).await.unwrap();
        let job = Job::new(brand, mine_offer.id, None, now_ms());
        mine.push(created(jobs.create_job(&job, None).await.unwrap()).id);
    }
    let theirs = offer(BrandId::new_random());
    fx.ports.catalog.create_offer(&theirs).await.unwrap();
    let other = Job::new(theirs.brand_id, theirs.id, None, now_ms());
    created(jobs.create_job(&other, None).await.unwrap());

    let mut sizes = Vec::new();
    let mut listed = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = jobs
            .page_brand_jobs(brand, cursor.as_ref(), 2)
            .await
            .unwrap();
        sizes.push(page.items.len());
        listed.extend(page.items.into_iter().map(|job| job.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }

    mine.reverse();
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(listed, mine);
}

pub async fn unsettled_jobs_are_the_idle_ones_not_yet_notified(fx: &Fixture) {
    let jobs = &fx.ports.jobs;
    let before_any = Utc::now() - Duration::seconds(1);
    let (_, running) = running_job(fx).await;
    let (_, unnotified) = succeeded(fx).await;
    let (_, notified) = succeeded(fx).await;
    jobs.mark_notified(notified.id, now_ms()).await.unwrap();
    let ours: HashSet<JobId> = [running.id, unnotified.id, notified.id].into();

    let all_idle = jobs
        .unsettled_jobs(Utc::now() + Duration::seconds(60), 100)
        .await
        .unwrap();
    let none_idle = jobs.unsettled_jobs(before_any, 100).await.unwrap();

    let idle: HashSet<JobId> = all_idle
        .iter()
        .map(|job| job.id)
        .filter(|id| ours.contains(id))
        .collect();
    assert_eq!(idle, [running.id, unnotified.id].into());
    assert!(
        none_idle.iter().all(|job| !ours.contains(&job.id)),
        "{none_idle:?}"
    );
}

pub async fn a_job_is_not_created_for_an_offer_that_does_not_exist(fx: &Fixture) {
    let job = Job::new(BrandId::new_random(), OfferId::new_random(), None, now_ms());
    let outcome = fx.ports.jobs.create_job(&job, None).await.unwrap();
    assert_eq!(outcome, CreateOutcome::OfferGone);
    assert!(fx.ports.jobs.get_job(job.id).await.unwrap().is_none());
}

pub async fn an_offer_is_deleted_only_without_links_or_an_active_job(fx: &Fixture) {
    let (first, ids) = seed(&fx.ports, 2).await;
    let jobs = &fx.ports.jobs;
    let job = created(jobs.create_job(&job_for(&first), None).await.unwrap());
    assert_eq!(
        jobs.delete_offer(first.id).await.unwrap(),
        OfferDeletion::Busy(job.id)
    );
    fx.ports.catalog.link_direct(&first, ids[0]).await.unwrap();
    let idle = offer_with_links(fx, &first).await;
    assert_eq!(
        jobs.delete_offer(idle.id).await.unwrap(),
        OfferDeletion::HasLinks(1)
    );
    let empty = offer(first.brand_id);
    fx.ports.catalog.create_offer(&empty).await.unwrap();
    assert_eq!(
        jobs.delete_offer(empty.id).await.unwrap(),
        OfferDeletion::Deleted
    );
    assert!(fx
        .ports
        .catalog
        .get_offer(empty.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        jobs.delete_offer(empty.id).await.unwrap(),
        OfferDeletion::NotFound
    );
}

/// A second offer of the brand, linked directly to the first offer's first link.
async fn offer_with_links(fx: &Fixture, first: &Offer) -> Offer {
    let second = offer(first.brand_id);
    fx.ports.catalog.create_offer(&second).await.unwrap();
    let link = fx
        .ports
        .catalog
        .page_offer_links(first.id, None, 1)
        .await
        .unwrap()
        .items[0]
        .location_id;
    fx.ports.catalog.link_direct(&second, link).await.unwrap();
    second
}

pub async fn a_paused_job_parks_each_chunk_once_and_resumes_with_its_pause_counted(fx: &Fixture) {
    let (offer, job) = fanned_out(fx, 3, 3).await;
    let jobs = &fx.ports.jobs;
    let at = Utc::now();
    let Some(PauseOutcome::Changed(paused)) = jobs.pause_job(job.id, at).await.unwrap() else {
        panic!("not paused");
    };
    assert_eq!(paused.status, JobStatus::Paused);
    assert_eq!(
        paused.paused_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    assert!(matches!(
        jobs.pause_job(job.id, Utc::now()).await.unwrap(),
        Some(PauseOutcome::Unchanged(_))
    ));
    // Chunk 0 was accounted while the pause began; 1 is parked twice (a redelivery).
    fx.ports
        .ledger
        .record_chunk(
            job.id,
            Some(offer.id),
            ChunkSeq(0),
            &tally(counts(1, 0, 0, 0), &[]),
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        fx.ports
            .ledger
            .park_chunk(job.id, ChunkSeq(0), "zero")
            .await
            .unwrap(),
        Parking::Accounted
    );
    for _ in 0..2 {
        assert_eq!(
            fx.ports
                .ledger
                .park_chunk(job.id, ChunkSeq(1), "one")
                .await
                .unwrap(),
            Parking::Parked
        );
    }
    assert_eq!(
        fx.ports
            .ledger
            .park_chunk(job.id, ChunkSeq(2), "two")
            .await
            .unwrap(),
        Parking::Parked
    );
    let now = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((now.chunks_parked, now.chunks_done), (2, 1));
    let parked = fx.ports.ledger.parked_chunks(job.id, 10).await.unwrap();
    let mut bodies: Vec<&str> = parked.iter().map(|p| p.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["one", "two"]);

    let resumed_at = at + Duration::milliseconds(1_500);
    let Some(PauseOutcome::Changed(resumed)) = jobs.resume_job(job.id, resumed_at).await.unwrap()
    else {
        panic!("not resumed");
    };
    assert_eq!(resumed.status, JobStatus::Running);
    assert_eq!((resumed.paused_at, resumed.paused_ms), (None, 1_500));
    assert!(matches!(
        jobs.resume_job(job.id, Utc::now()).await.unwrap(),
        Some(PauseOutcome::Unchanged(_))
    ));
    // Not paused any more: nothing parks.
    assert_eq!(
        fx.ports
            .ledger
            .park_chunk(job.id, ChunkSeq(1), "one")
            .await
            .unwrap(),
        Parking::NotPaused
    );
    // A parking removed with a stale token stays; with its own, it goes.
    let one = parked.iter().find(|p| p.seq == ChunkSeq(1)).unwrap();
    let stale = ParkedChunk {
        token: "stale".into(),
        ..one.clone()
    };
    fx.ports.ledger.unpark_chunk(job.id, &stale).await.unwrap();
    assert_eq!(
        fx.ports
            .ledger
            .parked_chunks(job.id, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    for chunk in &parked {
        fx.ports.ledger.unpark_chunk(job.id, chunk).await.unwrap();
    }
    assert_eq!(
        fx.ports.ledger.parked_chunks(job.id, 10).await.unwrap(),
        vec![]
    );
    let after = jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(after.chunks_parked, 0);
}

pub async fn a_paused_job_can_be_cancelled_but_an_ended_one_not_paused(fx: &Fixture) {
    let (_, job) = fanned_out(fx, 1, 1).await;
    let jobs = &fx.ports.jobs;
    jobs.pause_job(job.id, Utc::now() - Duration::seconds(2))
        .await
        .unwrap();
    let Some(CancelOutcome::Cancelling(cancelling)) = jobs.request_cancel(job.id).await.unwrap()
    else {
        panic!("a paused job is cancellable");
    };
    assert_eq!(cancelling.paused_at, None);
    assert!(cancelling.paused_ms >= 2_000, "{cancelling:?}");
    let (_, ended) = succeeded(fx).await;
    for outcome in [
        jobs.pause_job(ended.id, Utc::now()).await.unwrap(),
        jobs.resume_job(ended.id, Utc::now()).await.unwrap(),
    ] {
        let Some(PauseOutcome::Unchanged(job)) = outcome else {
            panic!("an ended job changed: {outcome:?}");
        };
        assert_eq!(job.status, JobStatus::Succeeded);
    }
    assert_eq!(
        jobs.pause_job(JobId::new_v7(), Utc::now()).await.unwrap(),
        None
    );
}

pub async fn a_setting_reads_back_as_last_written(fx: &Fixture) {
    let name = format!("test-{}", JobId::new_v7());
    assert_eq!(
        fx.ports.runtime_settings.get_setting(&name).await.unwrap(),
        None
    );
    fx.ports
        .runtime_settings
        .put_setting(&name, "1000")
        .await
        .unwrap();
    fx.ports
        .runtime_settings
        .put_setting(&name, "250")
        .await
        .unwrap();
    assert_eq!(
        fx.ports
            .runtime_settings
            .get_setting(&name)
            .await
            .unwrap()
            .as_deref(),
        Some("250")
    );
}
