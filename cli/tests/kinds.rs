//! Jobs of every kind through the real pipeline and the HTTP API: unlink-all, undo and
//! retry-failures, exact under duplicate delivery and a worker stopped after its writes,
//! with `hasOffer` exact for locations that carry another offer.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bulklink::client::{ApiClient, ApiResponse};
use bulklink::runtime::Runtime;
use bulklink_core::domain::{
    Action, AttributesChange, Job, JobId, JobKind, JobSpec, JobStatus, LinkedBy, LocationChange,
    LocationId, LocationStatus, OfferId, SourceSpec,
};
use bulklink_core::error::StoreResult;
use bulklink_core::kinds::SourceReader;
use bulklink_core::ports::{CreateOutcome, Cursor, Page, Ports};
use bulklink_http::auth::Role;
use bulklink_sqlite::SeededBrand;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

crate::on_both_backends!(
    undo_removes_exactly_its_jobs_links_under_duplicates_and_a_stopped_worker,
    unlink_all_removes_every_link_and_keeps_has_offer_exact,
    retry_failures_does_exactly_the_failed_locations,
    a_dry_run_counts_exactly_and_writes_nothing,
    a_closing_location_leaves_its_offers_exact_while_a_job_links_another,
    offers_and_locations_are_renamed_and_deleted_by_their_brand_only,
    a_source_defined_in_test_code_runs_through_the_real_pipeline,
    a_job_narrowed_by_where_acts_on_exactly_the_matching_locations,
    closed_stores_are_listed_apart_and_no_job_links_them_until_they_reopen,
    a_rule_reconciles_the_offer_to_exactly_its_matching_active_locations,
);

const WAIT: Duration = Duration::from_secs(120);

async fn post(api: &ApiClient, path: &str) -> ApiResponse {
    api.send(Method::POST, path, None, &[]).await.unwrap()
}

async fn accepted_job(api: &ApiClient, path: &str) -> JobId {
    let r = post(api, path).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{path}: {}", r.body);
    r.body["id"].as_str().unwrap().parse().unwrap()
}

/// Every id of a brand, in id order.
async fn brand_ids(ports: &Ports, seeded: &SeededBrand) -> Vec<LocationId> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_brand_locations(seeded.brand_id, None, cursor.as_ref(), 1_000)
            .await
            .unwrap();
        ids.extend(page.items);
        cursor = page.next;
        if cursor.is_none() {
            return ids;
        }
    }
}

/// The offer's links as (location, linked by).
async fn links(ports: &Ports, offer: OfferId) -> Vec<(LocationId, LinkedBy)> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_offer_links(offer, cursor.as_ref(), 1_000)
            .await
            .unwrap();
        all.extend(page.items.iter().map(|l| (l.location_id, l.linked_by)));
        cursor = page.next;
        if cursor.is_none() {
            return all;
        }
    }
}

async fn locations_total(ports: &Ports, offer: OfferId) -> u64 {
    ports
        .catalog
        .get_offer(offer)
        .await
        .unwrap()
        .unwrap()
        .locations_total
}

async fn has_offer(ports: &Ports, id: LocationId) -> bool {
    ports
        .catalog
        .get_location(id)
        .await
        .unwrap()
        .unwrap()
        .has_offer
}

/// A second offer of the seeded brand, linked directly to `ids`.
async fn second_offer(api: &ApiClient, ids: &[LocationId]) -> OfferId {
    let offer: Value = api
        .post("/offers", &json!({ "name": "second offer" }))
        .await
        .unwrap();
    let offer: OfferId = offer["id"].as_str().unwrap().parse().unwrap();
    for id in ids {
        let r = api
            .send(
                Method::PUT,
                &format!("/offers/{offer}/locations/{id}"),
                None,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    offer
}

/// The ids whose place in `ids` passes `keep`.
fn picked(ids: &[LocationId], keep: &dyn Fn(usize) -> bool) -> BTreeSet<LocationId> {
    ids.iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, id)| *id)
        .collect()
}

/// The counters of every kind add up to `total`.
fn assert_adds_up(job: &Job) {
    assert_eq!(job.counters.processed(), job.counters.total, "{job:?}");
    assert_eq!(job.chunks_done, job.chunks_total);
}

async fn undo_removes_exactly_its_jobs_links_under_duplicates_and_a_stopped_worker(kind: Kind) {
    let mut settings = fast_settings();
    settings.worker_concurrency = 2;
    // The halt is reached only by a write call that returns within the delivery's time limit
    // (80% of the visibility timeout): on a loaded emulator a chunk's writes can take longer
    // than 0.8 s, so the aws run gives each delivery 3.2 s.
    settings.visibility_timeout = Duration::from_secs(kind.scale(1, 4));
    let env = Env::of(kind, settings).await;
    let n = kind.scale(300, 120);
    let seeded = env.seed(n).await;
    let ids = brand_ids(&env.ports(), &seeded).await;
    let (direct, shared_location) = (ids[0], ids[1]);

    // Before the job: one link made directly; a location that carries a second offer.
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let r = api
        .send(
            Method::PUT,
            &format!("/offers/{}/locations/{direct}", seeded.offer_id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let other_offer = second_offer(&api, &[shared_location]).await;
    let before = locations_total(&runtime.ports, seeded.offer_id).await;
    assert_eq!(before, 1);

    let link_all = accepted_job(
        &api,
        &format!("/offers/{}/link-all-locations", seeded.offer_id),
    )
    .await;
    let parent = wait_terminal(&runtime.ports, link_all, WAIT).await;
    assert_eq!(parent.status, JobStatus::Succeeded);
    assert_eq!(
        (parent.counters.linked, parent.counters.already_linked),
        (n - 1, 1)
    );

    // Links by another job: new locations, linked by a second link-all.
    let new: Vec<Value> = (0..5)
        .map(|i| json!({ "address": format!("{i} New St") }))
        .collect();
    let made: Vec<Value> = api.post("/locations", &json!(new)).await.unwrap();
    let newer: Vec<LocationId> = made
        .iter()
        .map(|l| l["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let second = accepted_job(
        &api,
        &format!("/offers/{}/link-all-locations", seeded.offer_id),
    )
    .await;
    let second = wait_terminal(&runtime.ports, second, WAIT).await;
    assert_eq!(second.counters.linked, 5);
    runtime.shutdown().await;

    // The undo runs with every chunk sent twice, and its second write call stops for good
    // after its writes (as a worker killed there): the chunk comes back to the other worker.
    let halt = Arc::new(Halt::default());
    let stopping = halt.clone();
    let runtime = env
        .start(env.config(), move |mut ports| {
            let mut queue = FaultyQueue::new(ports.chunk_queue.raw().clone());
            queue.duplicate = true;
            ports.chunk_queue = bulklink_core::ports::TypedQueue::new(Arc::new(queue));
            let mut catalog = FaultyCatalog::new(ports.catalog.clone());
            catalog.halt_on_call = Some((2, stopping));
            ports.catalog = Arc::new(catalog);
            ports
        })
        .await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let undo_path = format!("/jobs/{link_all}/undo");
    let undo = post(&api, &undo_path).await;
    assert_eq!(undo.status, StatusCode::ACCEPTED, "{}", undo.body);
    assert_eq!(undo.body["type"], "undo");
    assert_eq!(undo.body["parentJobId"], link_all.to_string());
    let undo_id: JobId = undo.body["id"].as_str().unwrap().parse().unwrap();
    tokio::time::timeout(WAIT, halt.wait())
        .await
        .expect("a worker stopped after its writes");
    let undone = wait_terminal(&runtime.ports, undo_id, WAIT).await;
    assert_eq!(undone.status, JobStatus::Succeeded, "{undone:?}");
    assert_eq!(undone.spec.kind, JobKind::Undo);
    assert_adds_up(&undone);
    assert_eq!(
        (undone.counters.total, undone.counters.unlinked),
        (n - 1, n - 1)
    );

    let ports = env.ports();
    let left: HashSet<_> = links(&ports, seeded.offer_id).await.into_iter().collect();
    let expected: HashSet<_> = std::iter::once((direct, LinkedBy::Direct))
        .chain(newer.iter().map(|id| (*id, LinkedBy::Job(second.id))))
        .collect();
    assert_eq!(left, expected, "only the undone job's links are gone");
    assert_eq!(
        locations_total(&ports, seeded.offer_id).await,
        before + 5,
        "locationsTotal is what it was before the job, plus the other job's links"
    );
    assert!(has_offer(&ports, direct).await);
    assert!(
        has_offer(&ports, shared_location).await,
        "it still carries the other offer"
    );
    assert!(!has_offer(&ports, ids[2]).await, "it carries no offer now");
    for id in &newer {
        assert!(has_offer(&ports, *id).await);
    }
    assert_eq!(links(&ports, other_offer).await.len(), 1);

    // One undo per job; an undo makes no links to undo.
    let again = post(&api, &undo_path).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.location, Some(format!("/jobs/{undo_id}")));
    let of_undo = post(&api, &format!("/jobs/{undo_id}/undo")).await;
    assert_eq!(of_undo.status, StatusCode::CONFLICT, "{}", of_undo.body);
    // Another brand does not see the job at all.
    let stranger = runtime
        .api_as(Role::Brand(bulklink_core::domain::BrandId::new_random()))
        .unwrap();
    let foreign = post(&stranger, &format!("/jobs/{}/undo", second.id)).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    std::mem::forget(runtime); // its stopped worker never returns
}

async fn unlink_all_removes_every_link_and_keeps_has_offer_exact(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(2_000, 200);
    let seeded = env.seed(n).await;
    let runtime: Runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let ids = brand_ids(&runtime.ports, &seeded).await;
    let carrying_b = &ids[10..13];
    let offer_b = second_offer(&api, carrying_b).await;

    let link_all = accepted_job(
        &api,
        &format!("/offers/{}/link-all-locations", seeded.offer_id),
    )
    .await;
    wait_terminal(&runtime.ports, link_all, WAIT).await;
    assert_eq!(links(&runtime.ports, seeded.offer_id).await.len() as u64, n);

    let unlink = post(
        &api,
        &format!("/offers/{}/unlink-all-locations", seeded.offer_id),
    )
    .await;
    assert_eq!(unlink.status, StatusCode::ACCEPTED, "{}", unlink.body);
    assert_eq!(unlink.body["type"], "unlink-all-locations");
    let unlink_id: JobId = unlink.body["id"].as_str().unwrap().parse().unwrap();
    let job = wait_terminal(&runtime.ports, unlink_id, WAIT).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_adds_up(&job);
    assert_eq!((job.counters.total, job.counters.unlinked), (n, n));

    let ports = env.ports();
    assert!(links(&ports, seeded.offer_id).await.is_empty());
    assert_eq!(locations_total(&ports, seeded.offer_id).await, 0);
    let stats = env.link_stats(&seeded).await;
    assert_eq!(
        stats.brand_locations_with_offer, 3,
        "hasOffer only where offer B is"
    );
    for id in carrying_b {
        assert!(has_offer(&ports, *id).await);
    }
    assert_eq!(locations_total(&ports, offer_b).await, 3);
    runtime.shutdown().await;

    // One active job per offer, across kinds (no consumers: the first job stays PENDING).
    let config = bulklink::runtime::RuntimeConfig {
        consumers: false,
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let pending = accepted_job(
        &api,
        &format!("/offers/{}/link-all-locations", seeded.offer_id),
    )
    .await;
    let busy = post(
        &api,
        &format!("/offers/{}/unlink-all-locations", seeded.offer_id),
    )
    .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert_eq!(busy.location, Some(format!("/jobs/{pending}")));
    // Nor can a job that has not ended be undone.
    let early = post(&api, &format!("/jobs/{pending}/undo")).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.body);
    runtime.shutdown().await;
}

async fn retry_failures_does_exactly_the_failed_locations(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(300, 120);
    let seeded = env.seed(n).await;
    let ids = brand_ids(&env.ports(), &seeded).await;
    let victim = ids[n as usize / 2];

    // Every batch holding the victim is refused, on every delivery.
    let runtime = env
        .start(env.config(), move |mut ports| {
            let mut catalog = FaultyCatalog::new(ports.catalog.clone());
            catalog.fail_link = Box::new(move |batch| batch.contains(&victim));
            ports.catalog = Arc::new(catalog);
            ports
        })
        .await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let parent = accepted_job(
        &api,
        &format!("/offers/{}/link-all-locations", seeded.offer_id),
    )
    .await;
    let parent = wait_terminal(&runtime.ports, parent, WAIT).await;
    assert_eq!(parent.status, JobStatus::CompletedWithErrors);
    assert!(parent.counters.failed > 0);
    runtime.shutdown().await;
    let mut failed = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = env
            .ports()
            .ledger
            .page_failures(parent.id, cursor.as_ref(), 1_000)
            .await
            .unwrap();
        failed.extend(page.items.iter().filter_map(|f| f.location_id));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(failed.len() as u64, parent.counters.failed);
    assert!(failed.contains(&victim));

    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let retry = post(&api, &format!("/jobs/{}/retry-failures", parent.id)).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    assert_eq!(retry.body["type"], "retry-failures");
    let retry_id: JobId = retry.body["id"].as_str().unwrap().parse().unwrap();
    let retried = wait_terminal(&runtime.ports, retry_id, WAIT).await;
    assert_eq!(retried.status, JobStatus::Succeeded);
    assert_adds_up(&retried);
    assert_eq!(
        (retried.counters.total, retried.counters.linked),
        (failed.len() as u64, failed.len() as u64)
    );
    let by_retry: BTreeSet<_> = links(&runtime.ports, seeded.offer_id)
        .await
        .into_iter()
        .filter(|(_, by)| *by == LinkedBy::Job(retry_id))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(by_retry, failed, "exactly the failed ids");
    let stats = env.link_stats(&seeded).await;
    assert_eq!(
        (
            stats.offer_links,
            stats.offer_locations_total,
            stats.brand_locations_with_offer
        ),
        (n, n, n)
    );
    // A job without failures has nothing to retry.
    let nothing = post(&api, &format!("/jobs/{retry_id}/retry-failures")).await;
    assert_eq!(nothing.status, StatusCode::CONFLICT, "{}", nothing.body);
    assert!(nothing.body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("no failures")));
    runtime.shutdown().await;
}

async fn a_dry_run_counts_exactly_and_writes_nothing(kind: Kind) {
    let mut settings = fast_settings();
    settings.write_budget_per_sec = Some(1_000.0);
    let env = Env::of(kind, settings).await;
    let n = kind.scale(500, 120);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let ids = brand_ids(&runtime.ports, &seeded).await;
    let r = api
        .send(
            Method::PUT,
            &format!("/offers/{}/locations/{}", seeded.offer_id, ids[0]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let link_all = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let job = accepted_job(&api, &link_all).await;
    // On a loaded emulator a chunk may time out and fail: the plans below must count what
    // the store holds, whatever the job managed.
    let made = wait_terminal(&runtime.ports, job, WAIT)
        .await
        .counters
        .linked;
    assert!(made > 0, "the job made links to count");
    // Nothing in flight: what the store holds now is what it must hold after the dry runs.
    eventually(
        WAIT,
        "the job's event to be delivered and the queues empty",
        || async {
            let ports = env.ports();
            ports.chunk_queue.depth().await.unwrap() == 0
                && ports.fanout_queue.depth().await.unwrap() == 0
                && ports.webhook_queue.depth().await.unwrap() == 0
                && ports
                    .jobs
                    .get_job(job)
                    .await
                    .unwrap()
                    .unwrap()
                    .notified_at
                    .is_some()
        },
    )
    .await;
    let before = env.snapshot().await;

    let plans = [
        (link_all.clone(), "link-all-locations", n),
        // The offer's links: the one made directly and the job's.
        (
            format!("/offers/{}/unlink-all-locations", seeded.offer_id),
            "unlink-all-locations",
            made + 1,
        ),
        // The link made directly is not the job's to undo.
        (format!("/jobs/{job}/undo"), "undo", made),
    ];
    for (path, kind_name, expected) in plans {
        let r = post(&api, &format!("{path}?dryRun=true")).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let plan = &r.body;
        assert_eq!(plan["kind"], kind_name);
        assert_eq!(plan["locations"], expected, "{path}: {plan}");
        let chunks = expected.div_ceil(env.settings.chunk_size as u64);
        assert_eq!(plan["chunks"], chunks);
        assert_eq!(plan["writes"], 2 * expected);
        let seconds = (2 * expected) as f64 / 1_000.0;
        assert_eq!(plan["estimatedSeconds"], (seconds * 100.0).round() / 100.0);
        let cost = &plan["estimatedCost"];
        assert_eq!(cost["currency"], "USD");
        let parts: f64 = ["dynamodb", "sqs", "lambda"]
            .iter()
            .map(|k| cost[k].as_f64().unwrap())
            .sum();
        assert!(
            (cost["total"].as_f64().unwrap() - parts).abs() < 1e-5,
            "{cost}"
        );
        assert!(cost["dynamodb"].as_f64().unwrap() > 0.0);
    }
    // A dry run is refused where the job would be: no failures to retry.
    let none = post(&api, &format!("/jobs/{job}/retry-failures?dryRun=true")).await;
    assert_eq!(none.status, StatusCode::CONFLICT, "{}", none.body);
    let bad = post(&api, &format!("{link_all}?dryRun=maybe")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    let after = env.snapshot().await;
    assert_eq!(before, after, "a dry run wrote something");
    runtime.shutdown().await;
}

async fn a_closing_location_leaves_its_offers_exact_while_a_job_links_another(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(2_000, 200);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let ids = brand_ids(&runtime.ports, &seeded).await;
    // Three offers on the locations that will close (and one more that stays).
    let closing = &ids[..3];
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(second_offer(&api, &ids[..4]).await);
    }
    // A link-all of a fourth offer (the seeded one) runs while they close.
    let job = accepted_job(
        &api,
        &format!("/offers/{}/link-all-locations", seeded.offer_id),
    )
    .await;
    // Two close (the store stays, closed), one is deleted.
    let close = json!({ "status": "closed" });
    for id in &closing[..2] {
        let r = api
            .send(
                Method::PATCH,
                &format!("/locations/{id}"),
                Some(&close),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            (&r.body["status"], &r.body["hasOffer"]),
            (&json!("closed"), &json!(false))
        );
    }
    let r = api
        .send(
            Method::DELETE,
            &format!("/locations/{}", closing[2]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let job = wait_terminal(&runtime.ports, job, WAIT).await;
    assert_adds_up(&job);
    // Fanout reads the brand as it is: a location closed before its page was read is not
    // in the job at all; one closed after is found closed.
    assert!((n - 3..=n).contains(&job.counters.total), "{job:?}");
    assert_eq!(
        job.counters.linked + job.counters.not_found,
        job.counters.total,
        "each location linked, or found closed: {job:?}"
    );
    let ports = env.ports();
    for offer in others.iter().chain([&seeded.offer_id]) {
        let links = links(&ports, *offer).await;
        assert_eq!(
            locations_total(&ports, *offer).await,
            links.len() as u64,
            "offer {offer}: locationsTotal == its links"
        );
        assert!(
            links.iter().all(|(id, _)| !closing.contains(id)),
            "a closed location is linked to {offer}"
        );
    }
    for offer in &others {
        assert_eq!(
            locations_total(&ports, *offer).await,
            1,
            "only ids[3] is left"
        );
    }
    assert_eq!(locations_total(&ports, seeded.offer_id).await, n - 3);
    let gone = api
        .send(
            Method::GET,
            &format!("/locations/{}", closing[2]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let closed: Value = api
        .get(&format!("/locations/{}", closing[0]))
        .await
        .unwrap();
    assert_eq!(
        (&closed["status"], &closed["hasOffer"]),
        (&json!("closed"), &json!(false))
    );
    runtime.shutdown().await;
}

async fn closed_stores_are_listed_apart_and_no_job_links_them_until_they_reopen(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(120, 40);
    let seeded = env.seed(n).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let ids = brand_ids(&runtime.ports, &seeded).await;
    let closed: Vec<LocationId> = ids.iter().step_by(4).copied().collect();
    let active: Vec<LocationId> = ids
        .iter()
        .filter(|id| !closed.contains(id))
        .copied()
        .collect();
    for id in &closed {
        let r = api
            .send(
                Method::PATCH,
                &format!("/locations/{id}"),
                Some(&json!({ "status": "closed" })),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let listed = |query: &'static str| {
        let api = api.clone();
        async move {
            let mut seen = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let path = match &next {
                    Some(c) => format!("/locations?limit=7{query}&cursor={c}"),
                    None => format!("/locations?limit=7{query}"),
                };
                let page: Value = api.get(&path).await.unwrap();
                for l in page["items"].as_array().unwrap() {
                    seen.push(l["id"].as_str().unwrap().parse::<LocationId>().unwrap());
                }
                match page.get("nextCursor").and_then(Value::as_str) {
                    Some(c) => next = Some(c.to_owned()),
                    None => return seen,
                }
            }
        }
    };
    assert_eq!(listed("&status=closed").await, closed);
    assert_eq!(listed("&status=active").await, active);
    let everything: Vec<LocationId> = active.iter().chain(&closed).copied().collect();
    assert_eq!(listed("").await, everything, "active first, then closed");
    let r = api
        .send(Method::GET, "/locations?status=open", None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::BAD_REQUEST, "status");

    // A job over the whole brand, and one narrowed by an empty filter, count and link the
    // active stores only.
    let link_all = format!("/offers/{}/link-all-locations", seeded.offer_id);
    for body in [None, Some(json!({ "where": {} }))] {
        let plan = api
            .send(
                Method::POST,
                &format!("{link_all}?dryRun=true"),
                body.as_ref(),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(plan.status, StatusCode::OK, "{}", plan.body);
        assert_eq!(plan.body["locations"], active.len(), "{body:?}");
    }
    let job = accepted_job(&api, &link_all).await;
    let job = wait_terminal(&runtime.ports, job, WAIT).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(
        (
            job.counters.total,
            job.counters.linked,
            job.counters.not_found
        ),
        (active.len() as u64, active.len() as u64, 0)
    );
    let linked: Vec<LocationId> = links(&runtime.ports, seeded.offer_id)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(linked, active);
    let second = second_offer(&api, &[]).await;
    let direct = format!("/offers/{second}/locations/{}", closed[0]);
    let r = api.send(Method::PUT, &direct, None, &[]).await.unwrap();
    assert_problem(&r, StatusCode::CONFLICT, "is closed");
    assert_eq!(locations_total(&runtime.ports, second).await, 0);

    // Reopened, it carries nothing until something links it.
    let reopened = api
        .send(
            Method::PATCH,
            &format!("/locations/{}", closed[0]),
            Some(&json!({ "status": "active" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reopened.status, StatusCode::OK, "{}", reopened.body);
    assert_eq!(
        (&reopened.body["status"], &reopened.body["hasOffer"]),
        (&json!("active"), &json!(false))
    );
    let r = api.send(Method::PUT, &direct, None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for id in &ids {
        let carries = active.contains(id) || *id == closed[0];
        assert_eq!(has_offer(&runtime.ports, *id).await, carries, "{id}");
    }
    runtime.shutdown().await;
}

async fn offers_and_locations_are_renamed_and_deleted_by_their_brand_only(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(20).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let stranger = runtime
        .api_as(Role::Brand(bulklink_core::domain::BrandId::new_random()))
        .unwrap();
    let ids = brand_ids(&runtime.ports, &seeded).await;
    let offer = format!("/offers/{}", seeded.offer_id);
    let location = format!("/locations/{}", ids[0]);
    let rename = json!({ "name": "autumn" });
    let readdress = json!({ "address": "9 Elm St" });

    for (method, path, body) in [
        (Method::PATCH, &offer, Some(&rename)),
        (Method::PATCH, &location, Some(&readdress)),
        (Method::DELETE, &offer, None),
        (Method::DELETE, &location, None),
    ] {
        let r = stranger
            .send(method.clone(), path, body, &[])
            .await
            .unwrap();
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path} by another brand"
        );
    }
    let renamed = api
        .send(Method::PATCH, &offer, Some(&rename), &[])
        .await
        .unwrap();
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "autumn");
    let moved = api
        .send(Method::PATCH, &location, Some(&readdress), &[])
        .await
        .unwrap();
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let read: Value = api.get(&location).await.unwrap();
    assert_eq!(read["address"], "9 Elm St");

    // An offer with links is not deleted; after unlink-all it is.
    let job = accepted_job(&api, &format!("{offer}/link-all-locations")).await;
    wait_terminal(&runtime.ports, job, WAIT).await;
    let refused = api.send(Method::DELETE, &offer, None, &[]).await.unwrap();
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("unlink")));
    let unlink = accepted_job(&api, &format!("{offer}/unlink-all-locations")).await;
    wait_terminal(&runtime.ports, unlink, WAIT).await;
    let deleted = api.send(Method::DELETE, &offer, None, &[]).await.unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let gone = api.send(Method::GET, &offer, None, &[]).await.unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // A job for a deleted offer is not made.
    let late = post(&api, &format!("{offer}/link-all-locations")).await;
    assert_eq!(late.status, StatusCode::NOT_FOUND, "{}", late.body);
    runtime.shutdown().await;
}

/// A source of location ids defined here, in test code only: the ids its spec lists. What
/// the seam promises a new source costs: this reader and a spec naming it.
struct TheseIds;

#[derive(serde::Serialize, serde::Deserialize)]
struct TheseIdsParams {
    ids: Vec<LocationId>,
}

#[async_trait::async_trait]
impl SourceReader for TheseIds {
    async fn page(
        &self,
        _ports: &Ports,
        job: &Job,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        let TheseIdsParams { ids } = job.spec.source.params()?;
        let from = after.map_or(0, |c| c.position().parse::<usize>().unwrap());
        let to = (from + limit).min(ids.len());
        Ok(Page {
            items: ids[from..to].to_vec(),
            next: (to < ids.len()).then(|| Cursor::from_position(to.to_string())),
        })
    }
}

async fn a_source_defined_in_test_code_runs_through_the_real_pipeline(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(300, 90);
    let seeded = env.seed(n).await;
    let ids = brand_ids(&env.ports(), &seeded).await;
    // Every third location, and one that does not exist.
    let mut chosen: Vec<LocationId> = ids.iter().step_by(3).copied().collect();
    let stranger = LocationId::new_random();
    chosen.push(stranger);
    let spec = JobSpec::new(
        JobKind::LinkAllLocations,
        Action::Link,
        SourceSpec::new(
            "these-ids",
            &TheseIdsParams {
                ids: chosen.clone(),
            },
        )
        .unwrap(),
    );
    let job = Job::planned(
        spec.clone(),
        seeded.brand_id,
        Some(seeded.offer_id),
        None,
        env.ports().clock.now(),
    );

    // The stores keep the spec as it is: no schema, no adapter method knows this source.
    let CreateOutcome::Created(stored) = env.ports().jobs.create_job(&job, None).await.unwrap()
    else {
        panic!("job not created");
    };
    assert_eq!(stored.spec, spec);
    // A build without the reader refuses the job's source by name instead of guessing.
    let unknown = bulklink_core::kinds::count_ids(&env.ports(), &stored)
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("'these-ids'"), "{unknown}");

    let runtime = env
        .start(env.config(), |mut ports| {
            ports.sources = ports.sources.with("these-ids", Arc::new(TheseIds));
            ports
        })
        .await;
    assert_eq!(
        bulklink_core::kinds::count_ids(&runtime.ports, &stored)
            .await
            .unwrap(),
        chosen.len() as u64
    );
    runtime
        .ports
        .fanout_queue
        .send(&bulklink_core::domain::FanoutMessage { job_id: job.id })
        .await
        .unwrap();
    let done = wait_terminal(&runtime.ports, job.id, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_adds_up(&done);
    let c = done.counters;
    assert_eq!(
        (c.total, c.linked, c.not_found),
        (chosen.len() as u64, chosen.len() as u64 - 1, 1)
    );
    let linked: BTreeSet<LocationId> = links(&runtime.ports, seeded.offer_id)
        .await
        .into_iter()
        .map(|(id, by)| {
            assert_eq!(by, LinkedBy::Job(job.id));
            id
        })
        .collect();
    let expected: BTreeSet<LocationId> = chosen
        .iter()
        .copied()
        .filter(|id| *id != stranger)
        .collect();
    assert_eq!(linked, expected, "exactly the listed locations that exist");
    assert_eq!(
        locations_total(&runtime.ports, seeded.offer_id).await,
        expected.len() as u64
    );
    assert!(
        !has_offer(&runtime.ports, ids[1]).await,
        "an unlisted location"
    );

    // Seen from outside, it is a job like any other: its brand reads it and may undo it.
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let view = api
        .send(Method::GET, &format!("/jobs/{}", job.id), None, &[])
        .await
        .unwrap();
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    assert_eq!(view.body["type"], "link-all-locations");
    assert_eq!(view.body["allowedActions"], json!(["undo"]));
    let undo = accepted_job(&api, &format!("/jobs/{}/undo", job.id)).await;
    let undone = wait_terminal(&runtime.ports, undo, WAIT).await;
    assert_eq!(
        undone.counters.unlinked,
        expected.len() as u64,
        "{undone:?}"
    );
    assert!(links(&runtime.ports, seeded.offer_id).await.is_empty());
    runtime.shutdown().await;
}

async fn a_job_narrowed_by_where_acts_on_exactly_the_matching_locations(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(300, 90);
    let seeded = env.seed(n).await;
    let ports = env.ports();
    let ids = brand_ids(&ports, &seeded).await;
    // A third in GB, a third in IE, a third with no country; every other one a drive-thru.
    for (i, id) in ids.iter().enumerate() {
        let country = ["GB", "IE"].get(i % 3).map(|c| c.parse().unwrap());
        let tags = if i % 2 == 0 {
            vec!["drive-thru".to_owned()]
        } else {
            vec![]
        };
        let change = LocationChange {
            status: None,
            address: None,
            attributes: AttributesChange {
                country: Some(country),
                tags: Some(tags),
                ..Default::default()
            },
        };
        ports.catalog.update_location(*id, &change).await.unwrap();
    }
    let pick = |keep: &dyn Fn(usize) -> bool| picked(&ids, keep);
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let link_all = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let unlink_all = format!("/offers/{}/unlink-all-locations", seeded.offer_id);
    let send = |path: String, body: Value| {
        let api = api.clone();
        async move {
            api.send(Method::POST, &path, Some(&body), &[])
                .await
                .unwrap()
        }
    };

    // GB drive-thrus: counted exactly by a dry run, then linked and nothing else.
    let gb_drive_thru = json!({ "where": { "country": ["GB"], "tags": ["drive-thru"] } });
    let expected = pick(&|i| i % 3 == 0 && i % 2 == 0);
    let plan = send(format!("{link_all}?dryRun=true"), gb_drive_thru.clone()).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.body);
    assert_eq!(plan.body["locations"], expected.len());
    let made = send(link_all.clone(), gb_drive_thru.clone()).await;
    assert_eq!(made.status, StatusCode::ACCEPTED, "{}", made.body);
    assert_eq!(
        made.body["where"], gb_drive_thru["where"],
        "the job shows its filter"
    );
    let job: JobId = made.body["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&runtime.ports, job, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        (done.counters.total, done.counters.linked),
        (expected.len() as u64, expected.len() as u64)
    );
    let linked: BTreeSet<LocationId> = links(&runtime.ports, seeded.offer_id)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(linked, expected);
    assert_eq!(
        locations_total(&runtime.ports, seeded.offer_id).await,
        expected.len() as u64
    );
    let view: Value = api.get(&format!("/jobs/{job}")).await.unwrap();
    assert_eq!(view["where"], gb_drive_thru["where"]);

    // Every GB location now; then unlink the drive-thrus only.
    let gb = json!({ "where": { "country": ["GB"] } });
    let all_gb = send(link_all.clone(), gb).await;
    assert_eq!(all_gb.status, StatusCode::ACCEPTED, "{}", all_gb.body);
    let all_gb: JobId = all_gb.body["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&runtime.ports, all_gb, WAIT).await;
    let gb_ids = pick(&|i| i % 3 == 0);
    assert_eq!(done.counters.linked, (gb_ids.len() - expected.len()) as u64);
    assert_eq!(done.counters.already_linked, expected.len() as u64);
    let drive_thru = json!({ "where": { "tags": ["drive-thru"] } });
    let unlinked = send(unlink_all.clone(), drive_thru).await;
    assert_eq!(unlinked.status, StatusCode::ACCEPTED, "{}", unlinked.body);
    let unlinked: JobId = unlinked.body["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&runtime.ports, unlinked, WAIT).await;
    assert_eq!(done.counters.unlinked, expected.len() as u64);
    let left: BTreeSet<LocationId> = links(&runtime.ports, seeded.offer_id)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, pick(&|i| i % 3 == 0 && i % 2 == 1));
    assert_eq!(
        locations_total(&runtime.ports, seeded.offer_id).await,
        left.len() as u64
    );
    for id in &ids {
        assert_eq!(
            has_offer(&runtime.ports, *id).await,
            left.contains(id),
            "{id}"
        );
    }

    // `where` narrows offer-wide jobs only (an undo's body has no such field), and only by
    // fields it knows.
    for (path, body, detail) in [
        (
            format!("/jobs/{job}/undo"),
            json!({ "where": {} }),
            "unknown field `where`, expected one of `callbackUrl`, `notBefore`, `requireApproval`",
        ),
        (
            link_all.clone(),
            json!({ "where": { "town": ["x"] } }),
            "unknown field `town`",
        ),
        (
            link_all.clone(),
            json!({ "where": { "country": ["UK"] } }),
            "country 'UK' is not an ISO 3166-1",
        ),
    ] {
        let r = send(path, body).await;
        assert_problem(&r, StatusCode::BAD_REQUEST, detail);
    }
    runtime.shutdown().await;
}

async fn a_rule_reconciles_the_offer_to_exactly_its_matching_active_locations(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let n = kind.scale(120, 45);
    let seeded = env.seed(n).await;
    let ports = env.ports();
    let ids = brand_ids(&ports, &seeded).await;
    // A third in GB; every fifth closed.
    for (i, id) in ids.iter().enumerate() {
        let change = LocationChange {
            status: (i % 5 == 4).then_some(LocationStatus::Closed),
            address: None,
            attributes: AttributesChange {
                country: Some(Some(if i % 3 == 0 { "GB" } else { "IE" }.parse().unwrap())),
                ..Default::default()
            },
        };
        ports.catalog.update_location(*id, &change).await.unwrap();
    }
    let pick = |keep: &dyn Fn(usize) -> bool| picked(&ids, keep);
    let active = |i: usize| i % 5 != 4;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let offer = seeded.offer_id;
    // Every active location carries the offer to begin with.
    let job = accepted_job(&api, &format!("/offers/{offer}/link-all-locations")).await;
    wait_terminal(&runtime.ports, job, WAIT).await;

    let rule_path = format!("/offers/{offer}/rule");
    let gb = json!({ "where": { "country": ["GB"] } });
    let set = api
        .send(Method::PUT, &rule_path, Some(&gb), &[])
        .await
        .unwrap();
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body["rule"]["where"], gb["where"]);
    assert_eq!(set.body["job"]["type"], "reconcile");
    let reconcile: JobId = set.body["job"]["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&runtime.ports, reconcile, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let wanted = pick(&|i| active(i) && i % 3 == 0);
    assert_eq!(
        done.counters.total, n,
        "every location of the brand, closed ones too"
    );
    assert_eq!(done.counters.already_linked, wanted.len() as u64);
    assert_eq!(
        done.counters.unlinked,
        pick(&|i| active(i) && i % 3 != 0).len() as u64
    );
    assert_adds_up(&done);
    let expect_exact = |wanted: BTreeSet<LocationId>| {
        let ports = runtime.ports.clone();
        let ids = ids.clone();
        async move {
            let linked: BTreeSet<LocationId> = links(&ports, offer)
                .await
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(linked, wanted);
            assert_eq!(locations_total(&ports, offer).await, wanted.len() as u64);
            for id in &ids {
                assert_eq!(has_offer(&ports, *id).await, wanted.contains(id), "{id}");
            }
        }
    };
    expect_exact(wanted.clone()).await;
    let drift_path = format!("/offers/{offer}/drift");
    let drift: Value = api.get(&drift_path).await.unwrap();
    assert_eq!(drift, json!({ "missing": 0, "extra": 0 }));
    let read: Value = api.get(&rule_path).await.unwrap();
    assert_eq!(read["where"], gb["where"]);

    // A direct link outside the rule is refused.
    let outside = ids[1];
    let r = api
        .send(
            Method::PUT,
            &format!("/offers/{offer}/locations/{outside}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_problem(&r, StatusCode::CONFLICT, "outside offer");

    // The rule changes: setting it again reconciles, the GB stores leave and the active
    // IE ones join, each counted once.
    let ie = json!({ "where": { "country": ["IE"] } });
    let again = api
        .send(Method::PUT, &rule_path, Some(&ie), &[])
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let again: JobId = again.body["job"]["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&runtime.ports, again, WAIT).await;
    let wanted_now = pick(&|i| active(i) && i % 3 != 0);
    assert_eq!(
        (done.counters.linked, done.counters.unlinked),
        (wanted_now.len() as u64, wanted.len() as u64),
        "{done:?}"
    );
    expect_exact(wanted_now).await;
    let drift: Value = api.get(&drift_path).await.unwrap();
    assert_eq!(drift, json!({ "missing": 0, "extra": 0 }));

    // Removed, the rule guards nothing and the links stay.
    let r = api
        .send(Method::DELETE, &rule_path, None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    for path in [&rule_path, &drift_path] {
        let r = api.send(Method::GET, path, None, &[]).await.unwrap();
        assert_problem(&r, StatusCode::NOT_FOUND, "has no rule");
    }
    let r = api
        .send(Method::DELETE, &rule_path, None, &[])
        .await
        .unwrap();
    assert_problem(&r, StatusCode::NOT_FOUND, "has no rule");
    let r = api
        .send(
            Method::PUT,
            &format!("/offers/{offer}/locations/{}", ids[0]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for (body, detail) in [
        (
            json!({ "where": { "town": ["x"] } }),
            "unknown field `town`",
        ),
        (json!({}), "missing field `where`"),
        (json!({ "where": { "country": ["UK"] } }), "country 'UK'"),
    ] {
        let r = api
            .send(Method::PUT, &rule_path, Some(&body), &[])
            .await
            .unwrap();
        assert_problem(&r, StatusCode::BAD_REQUEST, detail);
    }
    runtime.shutdown().await;
}
