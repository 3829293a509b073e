//! Many brands at once: fair share of the chunk queue across brands, and pausing a job for
//! longer than its chunks could survive on the queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink_core::domain::{JobId, JobStatus};
use bulklink_core::ports::Ports;
use bulklink_http::auth::Role;
use bulklink_http::views::JobView;
use reqwest::{Method, StatusCode};

use crate::support::*;

crate::on_both_backends!(
    a_job_paused_past_its_chunks_redelivery_limit_writes_nothing_and_ends_exact_on_resume,
    a_paused_job_can_be_cancelled_and_its_parked_chunks_are_accounted,
);

const WAIT: Duration = Duration::from_secs(120);

/// A budget that makes the job take a few seconds: long enough to pause it mid-way.
fn paced_settings(kind: Kind) -> bulklink_core::Settings {
    bulklink_core::Settings {
        // moto under a full test run is slow: room for a slow delivery or two.
        max_receive_count: kind.scale(2, 3) as u32,
        write_budget_per_sec: Some(kind.scale(1_000, 400) as f64),
        // Small chunks on moto: a delivery's writes fit its visibility timeout even when
        // the emulator is slow under the whole suite.
        chunk_size: kind.scale(50, 20) as usize,
        // And twice the usual time for each delivery on moto: two full suite runs saw 28
        // and 49 of 400 locations dead-lettered after the resume, every delivery of their
        // chunks past the 3.2 s the 4 s default leaves.
        visibility_timeout: Duration::from_secs(kind.scale(1, 8)),
        ..fast_settings()
    }
}

/// Pauses the job once its fanout is done, then waits until nothing of it is in flight:
/// every chunk is accounted or parked and both queues are empty.
async fn pause_when_fanned_out(api: &ApiClient, ports: &Ports, id: JobId) -> JobView {
    let fanned_out = || async { api.job(id).await.unwrap().fanout_done };
    eventually(WAIT, "fanout to finish", fanned_out).await;
    let paused = api.pause(id).await.unwrap();
    assert_eq!(paused.status, JobStatus::Paused);
    assert!(paused.paused_at.is_some(), "{paused:?}");
    let settled = || async {
        let job = api.job(id).await.unwrap();
        job.chunks_done + job.chunks_parked == job.chunks_total
            && ports.chunk_queue.depth().await.unwrap() == 0
            && ports.fanout_queue.depth().await.unwrap() == 0
    };
    eventually(WAIT, "every chunk accounted or parked", settled).await;
    api.job(id).await.unwrap()
}

async fn a_job_paused_past_its_chunks_redelivery_limit_writes_nothing_and_ends_exact_on_resume(
    kind: Kind,
) {
    let env = Env::of(kind, paced_settings(kind)).await;
    let seeded = env.seed(kind.scale(2_000, 400)).await;
    let catalog = Arc::new(std::sync::OnceLock::<Arc<FaultyCatalog>>::new());
    let seen = catalog.clone();
    let runtime = env
        .start(env.config(), move |mut ports| {
            let faulty = Arc::new(FaultyCatalog::new(ports.catalog.clone()));
            seen.set(faulty.clone()).ok();
            ports.catalog = faulty;
            ports
        })
        .await;
    let catalog = catalog.get().unwrap().clone();
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let paused = pause_when_fanned_out(&api, &runtime.ports, job.id).await;
    assert!(
        paused.chunks_parked > 0,
        "the pause came too late to park anything: {paused:?}"
    );
    // A second pause changes nothing; a paused job cannot be undone or resumed twice over.
    assert_eq!(api.pause(job.id).await.unwrap().status, JobStatus::Paused);

    let writes = catalog.link_calls.load(Ordering::SeqCst);
    let links = env.link_stats(&seeded).await;
    // Longer than a queued message could last: every delivery of it would have counted.
    let pause = env.settings.visibility_timeout * (env.settings.max_receive_count + 1);
    tokio::time::sleep(pause).await;
    assert_eq!(
        catalog.link_calls.load(Ordering::SeqCst),
        writes,
        "catalog writes while paused"
    );
    assert_eq!(env.link_stats(&seeded).await, links);
    assert_eq!(runtime.ports.chunk_dlq.depth().await.unwrap(), 0);
    let still = api.job(job.id).await.unwrap();
    assert_eq!(still.status, JobStatus::Paused);
    assert!(
        still.paused_seconds >= pause.as_secs_f64(),
        "{} s paused",
        still.paused_seconds
    );
    assert_eq!(still.chunks_parked, paused.chunks_parked);

    let resumed = api.resume(job.id).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Running);
    assert!(resumed.paused_at.is_none());
    let done = wait_terminal(&runtime.ports, job.id, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.counters.linked, seeded.locations);
    assert_eq!(done.chunks_parked, 0);
    assert!(done.paused_ms >= pause.as_millis() as u64, "{done:?}");
    assert_exact(&env, &seeded, &done).await;
    assert_eq!(runtime.ports.chunk_dlq.depth().await.unwrap(), 0);

    // An ended job is neither paused nor resumed: 409 with the job's location.
    for action in ["pause", "resume"] {
        let r = api
            .send(
                Method::POST,
                &format!("/jobs/{}/{action}", job.id),
                None,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CONFLICT, "{action}: {}", r.body);
        assert!(
            r.body["detail"].as_str().unwrap().contains("SUCCEEDED"),
            "{}",
            r.body
        );
    }
    runtime.shutdown().await;
}

async fn a_paused_job_can_be_cancelled_and_its_parked_chunks_are_accounted(kind: Kind) {
    let env = Env::of(kind, paced_settings(kind)).await;
    let seeded = env.seed(kind.scale(2_000, 400)).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let paused = pause_when_fanned_out(&api, &runtime.ports, job.id).await;
    assert!(paused.chunks_parked > 0, "{paused:?}");

    // Another brand sees no such job.
    let stranger = runtime
        .api_as(Role::Brand(bulklink_core::domain::BrandId::new_random()))
        .unwrap();
    for action in ["pause", "resume"] {
        let r = stranger
            .send(
                Method::POST,
                &format!("/jobs/{}/{action}", job.id),
                None,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}: {}", r.body);
    }

    assert_eq!(
        api.cancel(job.id).await.unwrap().status,
        JobStatus::Cancelling
    );
    let done = wait_terminal(&runtime.ports, job.id, WAIT).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    assert_eq!(done.chunks_parked, 0);
    // What the parked chunks' earlier deliveries linked counts as linked, the rest cancelled.
    assert!(
        done.counters.cancelled > 0 && done.counters.linked < seeded.locations,
        "the parked chunks count as cancelled: {done:?}"
    );
    assert!(done.paused_at.is_none() && done.paused_ms > 0, "{done:?}");
    assert_exact(&env, &seeded, &done).await;
    runtime.shutdown().await;
}

/// A delivery that linked part of its chunk and then died (timed out, or its worker
/// crashed) leaves links the ledger has not seen. When the chunk comes back to a job that
/// is winding down, those links still count as the job's: `locationsTotal` stays exact.
#[tokio::test]
async fn a_skipped_chunk_counts_what_an_earlier_delivery_of_it_linked() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(100).await;
    let ports = env.ports();
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    let messages = drain(ports.chunk_queue.as_ref()).await;
    assert_eq!(messages.len(), 2);
    let first = bulklink_core::domain::ChunkMessage::decode(&messages[0].body).unwrap();
    ports
        .catalog
        .link_locations(
            job.offer_id.unwrap(),
            job.brand_id,
            bulklink_core::domain::LinkedBy::Job(job.id),
            &first.location_ids[..20],
        )
        .await
        .unwrap();
    ports.jobs.request_cancel(job.id).await.unwrap();
    let processor = worker::ChunkProcessor::new(ports.clone(), &env.settings);
    for m in &messages {
        processor.process(&m.body, m.receive_count).await.unwrap();
    }
    let done = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!((done.counters.linked, done.counters.cancelled), (20, 80));
    assert_exact(&env, &seeded, &done).await;
}

/// One brand's backlog does not hold up another brand's first chunks: with the queue
/// served fairly across brands, brand B's small job finishes while brand A's large one,
/// queued whole before it, still has most of its chunks to go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_brands_small_job_finishes_while_a_large_one_is_still_running() {
    let env = Env::new(bulklink_core::Settings {
        chunk_size: 100,
        page_size: 1_000,
        write_budget_per_sec: Some(2_000.0),
        worker_concurrency: 4,
        ..fast_settings()
    });
    let a = env.seed(4_000).await;
    let b = env.seed(200).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api_a = runtime.api_as(Role::Brand(a.brand_id)).unwrap();
    let api_b = runtime.api_as(Role::Brand(b.brand_id)).unwrap();
    let job_a = api_a.create_job(a.offer_id, None, None).await.unwrap();
    let fanned_out = || async { api_a.job(job_a.id).await.unwrap().fanout_done };
    eventually(WAIT, "A's fanout to finish", fanned_out).await;
    // Every chunk of A is queued ahead of B's.
    let job_b = api_b.create_job(b.offer_id, None, None).await.unwrap();
    let done_b = wait_terminal(&runtime.ports, job_b.id, WAIT).await;
    let now_a = runtime.ports.jobs.get_job(job_a.id).await.unwrap().unwrap();
    assert_eq!(done_b.status, JobStatus::Succeeded);
    assert!(
        now_a.chunks_done * 2 < now_a.chunks_total,
        "B waited behind A: when B ended A had {} of {} chunks done",
        now_a.chunks_done,
        now_a.chunks_total
    );
    let done_a = wait_terminal(&runtime.ports, job_a.id, WAIT).await;
    assert_exact(&env, &a, &done_a).await;
    assert_exact(&env, &b, &done_b).await;
    runtime.shutdown().await;
}

/// On SQS, chunk messages carry their brand as `MessageGroupId` (fair queues): as fanout
/// sends them, and as it re-sends the chunks a pause parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_message_on_sqs_carries_its_brand_as_message_group() {
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let seeded = env.seed(120).await;
    let ports = env.ports();
    let sqs = &env.aws_clients().unwrap().sqs;
    let url = env.aws_names().unwrap().chunk_queue_url.clone();
    let receive_groups = || async {
        let mut seen = Vec::new();
        loop {
            let out = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
                )
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return seen;
            }
            for m in messages {
                let group = m
                    .attributes
                    .as_ref()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                    })
                    .cloned();
                seen.push((group, m.body.unwrap(), m.receipt_handle.unwrap()));
            }
        }
    };
    let brand = Some(seeded.brand_id.to_string());
    let job = create_job(&ports, &seeded).await;
    fan_out(&ports, &env.settings, job.id).await;
    let sent = receive_groups().await;
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|(g, _, _)| *g == brand), "{sent:?}");

    // Paused: the workers park every chunk, then the resume re-sends them.
    ports
        .jobs
        .pause_job(job.id, chrono::Utc::now())
        .await
        .unwrap();
    let processor = worker::ChunkProcessor::new(ports.clone(), &env.settings);
    for (_, body, receipt) in &sent {
        let report = processor.process(body, 1).await.unwrap();
        assert!(matches!(report, worker::ChunkReport::Parked { .. }));
        ports
            .chunk_queue
            .delete(std::slice::from_ref(receipt))
            .await
            .unwrap();
    }
    ports
        .jobs
        .resume_job(job.id, chrono::Utc::now())
        .await
        .unwrap();
    fan_out(&ports, &env.settings, job.id).await;
    let resent = receive_groups().await;
    assert_eq!(resent.len(), 3);
    assert!(resent.iter().all(|(g, _, _)| *g == brand), "{resent:?}");
    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.chunks_parked, 0);
}

/// The embedded queue serves message groups least recently served first: a group that
/// arrives behind another's backlog gets every other delivery, in its own order.
#[tokio::test]
async fn the_embedded_queue_alternates_between_groups_with_waiting_messages() {
    let env = Env::new(fast_settings());
    let queue = env.ports().chunk_queue.raw().clone();
    let bodies = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    queue
        .send_grouped(Some("a"), &bodies("a", 8))
        .await
        .unwrap();
    queue
        .send_grouped(Some("b"), &bodies("b", 2))
        .await
        .unwrap();
    queue.send_batch(&bodies("none", 1)).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        let got = queue.receive(1, Duration::ZERO).await.unwrap();
        order.push(got[0].body.clone());
    }
    // Three groups, each served in turn (least recently served first), each in its order.
    let set = |items: &[String]| -> std::collections::BTreeSet<String> {
        items.iter().cloned().collect()
    };
    let expect = |items: &[&str]| -> std::collections::BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    };
    assert_eq!(
        set(&order[..3]),
        expect(&["a0", "b0", "none0"]),
        "{order:?}"
    );
    assert_eq!(set(&order[3..5]), expect(&["a1", "b1"]), "{order:?}");
    assert_eq!(order[5], "a2", "{order:?}");
}

/// A brand over its request rate gets 429 with `Retry-After`; another brand's requests in
/// the same second, and an administrator's, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brand_over_its_request_rate_gets_429_and_other_brands_do_not() {
    let env = Env::new(bulklink_core::Settings {
        brand_rate_per_sec: 0.1,
        brand_rate_burst: 5,
        ..fast_settings()
    });
    let noisy = env.seed(3).await;
    let quiet = env.seed(3).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let get = |role: Role, path: String| {
        let token = runtime.token_for("someone", role).unwrap();
        let url = format!("{}{path}", runtime.base_url);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let offer = |seeded: &bulklink_sqlite::SeededBrand| format!("/offers/{}", seeded.offer_id);
    for _ in 0..5 {
        let r = get(Role::Brand(noisy.brand_id), offer(&noisy)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let over = get(Role::Brand(noisy.brand_id), offer(&noisy)).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=10).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_eq!(over.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = over.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&noisy.brand_id.to_string()),
        "{problem}"
    );
    // The same second: the quiet brand has its own bucket, the administrator none.
    for _ in 0..5 {
        let r = get(Role::Brand(quiet.brand_id), offer(&quiet)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    for _ in 0..10 {
        let r = get(Role::Admin, offer(&noisy)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        get(Role::Brand(noisy.brand_id), offer(&noisy))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    runtime.shutdown().await;
}

/// An administrator changes the write budget while a job runs: every worker takes its new
/// share (the live rates say so), a brand may not touch it, and the job ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_budget_changes_while_a_job_runs_and_every_worker_takes_its_share() {
    let env = Env::new(bulklink_core::Settings {
        write_budget_per_sec: Some(400.0),
        worker_concurrency: 4,
        budget_refresh: Duration::from_millis(500),
        visibility_timeout: Duration::from_secs(4),
        ..fast_settings()
    });
    let seeded = env.seed(2_000).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let admin = runtime.api_as(Role::Admin).unwrap();
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let before = admin.write_budget().await.unwrap();
    assert_eq!(
        (before.writes_per_sec, before.source.as_str()),
        (400.0, "default")
    );
    let refused = api
        .send(
            Method::PUT,
            "/admin/write-budget",
            Some(&serde_json::json!({ "writesPerSec": 1e6 })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let at_default = || async {
        let rates = admin.write_budget().await.unwrap().workers;
        rates.len() == 4 && rates.iter().all(|w| w.writes_per_sec == 100.0)
    };
    eventually(WAIT, "every worker at 400 / 4", at_default).await;
    let changed = admin.set_write_budget(4_000.0).await.unwrap();
    assert_eq!(
        (changed.writes_per_sec, changed.source.as_str()),
        (4_000.0, "setting")
    );
    let at_new = || async {
        let rates = admin.write_budget().await.unwrap().workers;
        rates.iter().all(|w| w.writes_per_sec == 1_000.0)
    };
    eventually(WAIT, "every worker at 4,000 / 4", at_new).await;
    let done = wait_terminal(&runtime.ports, job.id, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_exact(&env, &seeded, &done).await;
    // 0 is unlimited.
    assert_eq!(
        admin.set_write_budget(0.0).await.unwrap().writes_per_sec,
        0.0
    );
    runtime.shutdown().await;
}
