//! The invariants of DESIGN §5, driven through the real fanout and worker code, step by step
//! and through the real queue loops, with faults injected at the port boundary.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_core::domain::{ChunkMessage, JobStatus, LocationId};
use bulklink_core::lifecycle;
use worker::ChunkProcessor;

use crate::support::*;

crate::on_both_backends!(
    every_chunk_delivered_twice_and_concurrently_is_accounted_exactly_once,
    the_last_chunks_finishing_together_publish_one_event,
    a_chunk_failing_on_every_delivery_is_accounted_failed_on_its_last_delivery,
    a_chunk_that_reaches_the_dead_letter_queue_is_accounted_by_the_dlq_consumer,
    a_cancel_after_a_pages_chunks_were_sent_and_accounted_but_not_its_step_keeps_the_total,
);

/// A fanout sends a page's chunks and dies before its step; one chunk is accounted; the
/// job is cancelled. The fanout the cancel runs may not close below that chunk: it lands
/// the page first (the same chunks again), then closes, and the job ends with every id of
/// the page in `total` and accounted once (the race a CI run once caught as total 100,
/// cancelled 200).
async fn a_cancel_after_a_pages_chunks_were_sent_and_accounted_but_not_its_step_keeps_the_total(
    kind: Kind,
) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(250).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    let job = ports.jobs.start_job(job.id).await.unwrap().unwrap();
    // The dead fanout's page: its chunks sent, its step never made.
    let limits = bulklink_core::importing::PageLimits {
        page_size: env.settings.page_size,
        chunk_size: env.settings.chunk_size,
        max_import_bytes: env.settings.max_import_bytes,
    };
    let bulklink_core::importing::WorkPage::Chunks { chunks, .. } =
        bulklink_core::kinds::page_work(&ports, &job, None, limits)
            .await
            .unwrap()
    else {
        panic!("a page of ids")
    };
    let messages: Vec<ChunkMessage> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, work)| work.message(&job, i as u32))
        .collect();
    assert_eq!(messages.len(), 4, "a page of 200 in chunks of 50");
    ports
        .chunk_queue
        .send_grouped(None, &messages)
        .await
        .unwrap();
    let first = drain(ports.chunk_queue.as_ref()).await;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    let one = first
        .iter()
        .find(|m| ChunkMessage::decode(&m.body).unwrap().seq.0 == 0)
        .unwrap();
    processor.process(&one.body, 1).await.unwrap();
    assert_eq!(
        ports
            .jobs
            .get_job(job.id)
            .await
            .unwrap()
            .unwrap()
            .counters
            .linked,
        50
    );

    ports.jobs.request_cancel(job.id).await.unwrap();
    fan_out(&ports, &env.settings, job.id).await;
    // Every chunk, sent twice now, is accounted once.
    eventually(Duration::from_secs(60), "the job ends", || async {
        work_off(&ports, &processor).await;
        ports
            .jobs
            .get_job(job.id)
            .await
            .unwrap()
            .unwrap()
            .status
            .is_terminal()
    })
    .await;
    let done = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    let c = done.counters;
    assert_eq!(done.status, JobStatus::Cancelled, "{c:?}");
    // The page landed (its 200 ids), the close after it: the second page never read.
    assert_eq!((c.total, c.linked, c.cancelled), (200, 50, 150), "{c:?}");
    assert_eq!((done.chunks_total, done.chunks_done), (4, 4));
}

async fn the_last_chunks_finishing_together_publish_one_event(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let mut ports = env.ports();
    let events = Arc::new(RecordingEvents::new(ports.events.clone()));
    ports.events = events.clone();
    let jobs = 4;
    for _ in 0..jobs {
        let seeded = env.seed(2 * env.settings.chunk_size as u64).await;
        let job = create_job(&ports, &seeded).await;
        fan_out(&ports, &env.settings, job.id).await;
        let messages = drain(ports.chunk_queue.as_ref()).await;
        let [first, second] = messages.as_slice() else {
            panic!("two chunks expected, got {}", messages.len());
        };
        let a = ChunkProcessor::new(ports.clone(), &env.settings);
        let b = ChunkProcessor::new(ports.clone(), &env.settings);
        let (ra, rb) = tokio::join!(a.process(&first.body, 1), b.process(&second.body, 1));
        ra.unwrap();
        rb.unwrap();
        let receipts = [first.receipt.clone(), second.receipt.clone()];
        ports.chunk_queue.delete(&receipts).await.unwrap();
        let done = ports.jobs.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Succeeded);
    }
    assert_eq!(events.published().len(), jobs, "one event per job");
}

async fn every_chunk_delivered_twice_and_concurrently_is_accounted_exactly_once(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(1_000, 300);
    let chunks = n / env.settings.chunk_size as u64;
    let seeded = env.seed(n).await;
    let mut ports = env.ports();
    let mut duplicating = FaultyQueue::new(ports.chunk_queue.raw().clone());
    duplicating.duplicate = true;
    ports.chunk_queue = bulklink_core::ports::TypedQueue::new(Arc::new(duplicating));
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;

    let messages = drain(ports.chunk_queue.as_ref()).await;
    assert_eq!(messages.len() as u64, 2 * chunks, "every chunk sent twice");
    let a = ChunkProcessor::new(ports.clone(), &env.settings);
    let b = ChunkProcessor::new(ports.clone(), &env.settings);
    for m in &messages {
        // The same delivery handled by two workers at once, on top of the duplicate send.
        let (ra, rb) = tokio::join!(a.process(&m.body, 1), b.process(&m.body, 1));
        // On AWS a concurrent loser may be refused as a transaction conflict: it is then
        // redelivered, and its replay must add nothing either.
        for result in [ra, rb] {
            if let Err(e) = result {
                assert!(
                    matches!(&e, worker::ChunkError::Store(s) if s.is_retryable()),
                    "{e}"
                );
                a.process(&m.body, 2).await.expect("the replay");
            }
        }
    }

    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.counters.total, n);
    assert_eq!(job.counters.linked, n);
    assert_eq!(u64::from(job.chunks_total), chunks);
    let offer = ports
        .catalog
        .get_offer(seeded.offer_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offer.locations_total, n);
    assert_exact(&env, &seeded, &job).await;
    assert_eq!(env.link_stats(&seeded).await.brand_locations_with_offer, n);
    // The report names each location once, linked: a replay's outcomes were not kept again.
    let report = bulklink_core::reports::page(&ports, &job, None, 2 * n as usize)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.next, None);
    let ids: HashSet<_> = report.rows.iter().map(|r| r.location_id).collect();
    assert_eq!((report.rows.len() as u64, ids.len() as u64), (n, n));
    assert!(report
        .rows
        .iter()
        .all(|r| r.outcome == bulklink_core::domain::Counter::Linked));
}

#[tokio::test]
async fn a_replayed_fanout_page_resends_the_same_sequence_numbers() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(450).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    let job = ports.jobs.start_job(job.id).await.unwrap().unwrap();
    let fanout = fanout::Fanout::new(ports.clone(), &env.settings);

    // The same page fanned out twice from the same cursor: the second CAS loses.
    fanout.fan_out_one_page(&job).await.unwrap();
    let replay = fanout.fan_out_one_page(&job).await.unwrap();
    assert!(matches!(
        replay,
        fanout::Step::Advanced(advanced)
            if matches!(*advanced, bulklink_core::ports::Advanced::Superseded(_))
    ));

    let seqs: Vec<u32> = drain(ports.chunk_queue.as_ref())
        .await
        .iter()
        .map(|m| ChunkMessage::decode(&m.body).unwrap().seq.0)
        .collect();
    assert_eq!(seqs.len(), 8);
    let distinct: HashSet<_> = seqs.iter().collect();
    assert_eq!(distinct.len(), 4, "the replay reused seqs 0..4: {seqs:?}");
    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((job.chunks_total, job.counters.total), (4, 200));
}

#[test]
fn a_pipeline_dropped_mid_fanout_and_mid_chunk_resumes_to_exact_counts_embedded() {
    dropped_mid_fanout_and_mid_chunk_resumes_to_exact_counts(Kind::Embedded);
}

#[test]
fn a_pipeline_dropped_mid_fanout_and_mid_chunk_resumes_to_exact_counts_aws() {
    dropped_mid_fanout_and_mid_chunk_resumes_to_exact_counts(Kind::Aws);
}

/// Drops a whole runtime mid-fanout and mid-chunk, then starts a new one on the same store
/// (the same SQLite file, or the same tables and queues), and checks the job still ends
/// exactly right.
fn dropped_mid_fanout_and_mid_chunk_resumes_to_exact_counts(kind: Kind) {
    let mut settings = fast_settings();
    // Twenty chunks a page: two send batches per page, three pages.
    settings.page_size = kind.scale(1_000, 100) as usize;
    settings.chunk_size = kind.scale(50, 5) as usize;
    settings.worker_concurrency = 2;
    let n = 3 * settings.page_size as u64;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let env = runtime.block_on(Env::of(kind, settings));
    let seeded = runtime.block_on(env.seed(n));
    let fanout_halt = Arc::new(Halt::default());
    let chunk_halt = Arc::new(Halt::default());
    let job_id = runtime.block_on(async {
        let pipeline = env
            .start(env.config(), |mut ports| {
                // Page 2's second send batch never happens...
                let mut queue = FaultyQueue::new(ports.chunk_queue.raw().clone());
                queue.halt_on_send = Some((4, fanout_halt.clone()));
                ports.chunk_queue = bulklink_core::ports::TypedQueue::new(Arc::new(queue));
                // ...and the 5th chunk's links are written but never ledgered.
                let mut catalog = FaultyCatalog::new(ports.catalog.clone());
                catalog.halt_on_call = Some((5, chunk_halt.clone()));
                ports.catalog = Arc::new(catalog);
                ports
            })
            .await;
        let api = pipeline
            .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
            .unwrap();
        let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), async {
            fanout_halt.wait().await;
            chunk_halt.wait().await;
        })
        .await
        .expect("both halt points reached");
        let mid = pipeline.ports.jobs.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(mid.status, JobStatus::Running);
        assert!(!mid.fanout_done, "stopped mid-fanout");
        std::mem::forget(pipeline); // no graceful shutdown: the runtime just goes away
        job.id
    });
    drop(runtime);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pipeline = env.start(env.config(), |ports| ports).await;
        let job = wait_terminal(&pipeline.ports, job_id, Duration::from_secs(120)).await;
        assert_eq!(job.status, JobStatus::Succeeded);
        assert_eq!(job.counters.linked, n);
        assert_eq!(job.counters.total, n);
        assert_exact(&env, &seeded, &job).await;
        let stats = env.link_stats(&seeded).await;
        assert_eq!(stats.offer_locations_total, n);
        assert_eq!(stats.brand_locations_with_offer, n);
        pipeline.shutdown().await;
    });
}

async fn a_chunk_failing_on_every_delivery_is_accounted_failed_on_its_last_delivery(kind: Kind) {
    let mut settings = fast_settings();
    settings.chunk_size = kind.scale(50, 20) as usize;
    let env = Env::of(kind, settings).await;
    let n = kind.scale(500, 200);
    let seeded = env.seed(n).await;
    let ports = env.ports();
    let poisoned = first_location(&ports, &seeded).await;
    let mut catalog = FaultyCatalog::new(ports.catalog.clone());
    catalog.fail_link = Box::new(move |ids: &[LocationId]| ids.contains(&poisoned));
    let pipeline = env
        .start(env.config(), |mut p| {
            p.catalog = Arc::new(catalog);
            p
        })
        .await;
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
        .unwrap();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(120)).await;

    let chunk = env.settings.chunk_size as u64;
    assert_eq!(job.status, JobStatus::CompletedWithErrors);
    assert_eq!(job.counters.failed, chunk, "the poisoned chunk's locations");
    assert_eq!(job.counters.linked, n - chunk);
    assert_exact(&env, &seeded, &job).await;
    let failures: serde_json::Value = api
        .get(&format!("/jobs/{}/failures?limit=1000", job.id))
        .await
        .unwrap();
    let items = failures["items"].as_array().unwrap();
    assert_eq!(items.len() as u64, chunk);
    assert!(items
        .iter()
        .any(|f| f["locationId"] == poisoned.to_string()));
    assert!(items[0]["reason"]
        .as_str()
        .unwrap()
        .contains("linking failed on every delivery"));
    assert_eq!(items[0]["attempts"], 3);
    pipeline.shutdown().await;
}

async fn a_chunk_that_reaches_the_dead_letter_queue_is_accounted_by_the_dlq_consumer(kind: Kind) {
    let mut settings = fast_settings();
    settings.chunk_size = kind.scale(50, 20) as usize;
    let env = Env::of(kind, settings).await;
    let seeded = env.seed(300).await;
    let ports = env.ports();
    let poisoned = first_location(&ports, &seeded).await;
    let mut catalog = FaultyCatalog::new(ports.catalog.clone());
    catalog.fail_link = Box::new(move |ids: &[LocationId]| ids.contains(&poisoned));
    // The last delivery cannot even read the catalog, so the message is dead-lettered.
    catalog.fail_existing = 1.into();
    let catalog = Arc::new(catalog);
    let pipeline = env
        .start(env.config(), |mut p| {
            p.catalog = catalog.clone();
            p
        })
        .await;
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
        .unwrap();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(120)).await;

    assert_eq!(
        catalog.fail_existing.load(Ordering::SeqCst),
        0,
        "the last delivery failed"
    );
    let chunk = env.settings.chunk_size as u64;
    assert_eq!(job.status, JobStatus::CompletedWithErrors);
    assert_eq!(
        (job.counters.failed, job.counters.linked),
        (chunk, 300 - chunk)
    );
    assert_exact(&env, &seeded, &job).await;
    let failures: serde_json::Value = api
        .get(&format!("/jobs/{}/failures", job.id))
        .await
        .unwrap();
    let items = failures["items"].as_array().unwrap();
    assert_eq!(items.len() as u64, chunk);
    assert!(items[0]["reason"]
        .as_str()
        .unwrap()
        .contains("dead-letter queue"));
    assert_eq!(
        pipeline.ports.chunk_dlq.depth().await.unwrap(),
        0,
        "the DLQ was drained"
    );
    pipeline.shutdown().await;
}

#[tokio::test]
async fn cancelling_mid_job_ends_cancelled_with_every_location_accounted() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(1_000).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    let first = ports.chunk_queue.receive(5, Duration::ZERO).await.unwrap();
    for m in &first {
        processor.process(&m.body, m.receive_count).await.unwrap();
        ports
            .chunk_queue
            .delete(std::slice::from_ref(&m.receipt))
            .await
            .unwrap();
    }

    let cancel = ports.jobs.request_cancel(job.id).await.unwrap();
    assert!(matches!(
        cancel,
        Some(bulklink_core::ports::CancelOutcome::Cancelling(_))
    ));
    work_off(&ports, &processor).await;

    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.counters.linked, 250);
    assert_eq!(job.counters.cancelled, 750);
    assert_exact(&env, &seeded, &job).await;
    let again = ports.jobs.request_cancel(job.id).await.unwrap();
    assert!(matches!(
        again,
        Some(bulklink_core::ports::CancelOutcome::NotCancellable(_))
    ));
}

#[tokio::test]
async fn a_job_cancelled_before_fanout_starts_ends_cancelled_with_nothing_enqueued() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(300).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    ports.jobs.request_cancel(job.id).await.unwrap();
    fan_out(&ports, &env.settings, job.id).await;

    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!((job.counters.total, job.chunks_total), (0, 0));
    assert_eq!(ports.chunk_queue.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_job_whose_failures_pass_the_threshold_ends_failed() {
    let mut settings = fast_settings();
    settings.failure_min_sample = 100;
    settings.failure_threshold = 0.25;
    settings.max_receive_count = 1; // every delivery is the last: failures are immediate
    let env = Env::new(settings);
    let seeded = env.seed(1_000).await;
    let mut ports = env.ports();
    let mut catalog = FaultyCatalog::new(ports.catalog.clone());
    catalog.fail_link = Box::new(|_: &[LocationId]| true);
    ports.catalog = Arc::new(catalog);
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    work_off(&ports, &processor).await;

    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.counters.failed, 100,
        "two chunks fail, then the rest is skipped"
    );
    assert_eq!(job.counters.cancelled, 900);
    assert_exact(&env, &seeded, &job).await;
}

#[tokio::test]
async fn a_brand_without_locations_completes_at_once() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(0).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.counters.total, 0);
}

#[tokio::test]
async fn fanout_near_its_deadline_hands_over_and_the_next_invocation_continues() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(1_000).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    let fanout = fanout::Fanout::new(ports.clone(), &env.settings);
    // Already inside the deadline margin: nothing but the hand-over happens.
    let report = fanout
        .run(job.id, tokio::time::Instant::now())
        .await
        .unwrap();
    assert!(matches!(report, fanout::FanoutReport::HandedOver(_)));
    let handed = drain(ports.fanout_queue.as_ref()).await;
    assert_eq!(handed.len(), 1);

    let far = tokio::time::Instant::now() + Duration::from_secs(3_600);
    let report = fanout.handle(&handed[0].body, far).await.unwrap();
    assert!(matches!(report, fanout::FanoutReport::Finished(_)));
    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((job.counters.total, job.chunks_total), (1_000, 20));
}

#[tokio::test]
async fn a_finished_job_whose_event_was_lost_is_notified_by_the_sweeper() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(100).await;
    let mut ports = env.ports();
    let events = Arc::new(RecordingEvents::new(ports.events.clone()));
    events.refuse.store(true, Ordering::SeqCst);
    ports.events = events.clone();
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    work_off(&ports, &processor).await;
    let stuck = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stuck.status, JobStatus::Succeeded);
    assert!(stuck.notified_at.is_none(), "the publish was refused");

    events.refuse.store(false, Ordering::SeqCst);
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let report = lifecycle::sweep(&ports, later, later).await.unwrap();
    assert_eq!(report.notified, 1);
    let published = events.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].job_id, job.id);
    assert_eq!(
        published[0].event_type,
        bulklink_core::domain::EventType::JobSucceeded
    );
    assert!(ports
        .jobs
        .get_job(job.id)
        .await
        .unwrap()
        .unwrap()
        .notified_at
        .is_some());
    assert_eq!(
        lifecycle::sweep(&ports, later, later)
            .await
            .unwrap()
            .notified,
        0
    );
}

#[tokio::test]
async fn the_sweeper_restarts_a_job_whose_fanout_message_was_lost() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(100).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    assert_eq!(ports.fanout_queue.depth().await.unwrap(), 0);

    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let report = lifecycle::sweep(&ports, later, later).await.unwrap();
    assert_eq!(report.restarted_fanouts, 1);
    let handed = drain(ports.fanout_queue.as_ref()).await;
    let far = tokio::time::Instant::now() + Duration::from_secs(3_600);
    fanout::Fanout::new(ports.clone(), &env.settings)
        .handle(&handed[0].body, far)
        .await
        .unwrap();
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    work_off(&ports, &processor).await;
    assert_eq!(
        ports.jobs.get_job(job.id).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
}

#[tokio::test]
async fn a_malformed_message_in_a_batch_fails_alone() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(100).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    ports
        .chunk_queue
        .raw()
        .send_batch(&["{\"jobId\": 42".to_owned(), "null".to_owned()])
        .await
        .unwrap();
    let messages = drain(ports.chunk_queue.as_ref()).await;
    assert_eq!(messages.len(), 4);
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);

    let results = worker::process_batch(&processor, worker::Source::Chunks, &messages).await;
    let failed: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|id| !id.is_empty()));
    assert_eq!(
        ports.jobs.get_job(job.id).await.unwrap().unwrap().status,
        JobStatus::Succeeded,
        "the good chunks of the batch went through"
    );
}

/// The one queue policy, in the local runtime: a webhook-queue message that can never
/// decode is not dropped; after `max_receive_count` deliveries it is in the webhook DLQ,
/// body unchanged, and the queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_webhook_message_ends_in_its_dead_letter_queue_unchanged() {
    // The shortest a webhook message may stay invisible, and one delivery before the DLQ.
    let settings = bulklink_core::Settings {
        webhook_visibility_timeout: Duration::from_secs(15),
        max_receive_count: 1,
        ..fast_settings()
    };
    let env = Env::new(settings.clone());
    let runtime = env.start(env.config(), |ports| ports).await;
    use bulklink_core::ports::Queue;
    let garbage = "{\"eventId\": 42".to_owned();
    runtime
        .ports
        .webhook_queue
        .raw()
        .send_batch(std::slice::from_ref(&garbage))
        .await
        .unwrap();
    let store = runtime.embedded_store().unwrap().clone();
    let dlq = bulklink_sqlite::EmbeddedQueue::new(
        store,
        bulklink_sqlite::WEBHOOK_DLQ,
        None,
        Duration::from_secs(30),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let got = dlq.receive(10, Duration::from_millis(500)).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the undecodable message never reached the webhook DLQ"
        );
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, garbage);
    assert_eq!(runtime.ports.webhook_queue.depth().await.unwrap(), 0);
    runtime.shutdown().await;
}

#[tokio::test]
async fn rate_limited_workers_still_link_exactly() {
    let mut settings = fast_settings();
    settings.write_budget_per_sec = Some(2_000.0);
    settings.worker_concurrency = 2;
    let env = Env::new(settings);
    let seeded = env.seed(200).await;
    let config = RuntimeConfig {
        settings: env.settings.clone(),
        ..Default::default()
    };
    let pipeline = Runtime::start_embedded(&env.db(), config).await.unwrap();
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(seeded.brand_id))
        .unwrap();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_exact(&env, &seeded, &job).await;
    pipeline.shutdown().await;
}

pub(crate) async fn first_location(
    ports: &bulklink_core::Ports,
    seeded: &bulklink_sqlite::SeededBrand,
) -> LocationId {
    ports
        .catalog
        .page_brand_locations(seeded.brand_id, None, None, 1)
        .await
        .unwrap()
        .items[0]
}
