//! Standing rules that follow the estate: every change to a location (created, changed,
//! closed, reopened, upserted) brings the offers whose rules want it, or no longer want it,
//! to agree — and after any sequence of changes and jobs has settled, the drift is 0 and 0
//! and every count is exact.

use std::collections::BTreeSet;
use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_core::domain::{BrandId, JobStatus, LinkedBy, Location, LocationId, OfferId};
use bulklink_core::ports::Ports;
use bulklink_http::auth::Role;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);

crate::on_both_backends!(
    a_rule_follows_each_change_to_the_estate,
    random_estate_changes
);

/// Seeded random operations: 1,000 on the embedded backend, 200 on moto.
async fn random_estate_changes(kind: Kind) {
    let n = kind.scale(1_000, 200) as usize;
    random_changes_and_jobs_settle_with_no_drift_and_exact_counts(kind, n).await;
}

/// Every link of the offer, by location.
async fn links_of(ports: &Ports, offer: OfferId) -> Vec<(LocationId, LinkedBy)> {
    let mut links = Vec::new();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_offer_links(offer, cursor.as_ref(), 1_000)
            .await
            .unwrap();
        links.extend(page.items.into_iter().map(|l| (l.location_id, l.linked_by)));
        cursor = page.next;
        if cursor.is_none() {
            return links;
        }
    }
}

/// Waits until no job of the brand is active and every location change made before it was
/// called has been followed.
async fn settle(runtime: &Runtime, brand: BrandId) {
    let since = std::time::Instant::now();
    eventually(WAIT, "jobs to end and the estate feed to drain", || async {
        let jobs = runtime
            .ports
            .jobs
            .page_brand_jobs(brand, None, 1_000)
            .await
            .unwrap();
        jobs.items.iter().all(|j| j.status.is_terminal())
            && runtime.estate_followed_since(since).await.unwrap()
    })
    .await;
}

/// Every location of the brand, whatever its status.
async fn brand_locations(ports: &Ports, brand: BrandId) -> Vec<Location> {
    let mut locations = Vec::new();
    let mut cursor = None;
    loop {
        let page = ports
            .catalog
            .page_brand_locations(brand, None, cursor.as_ref(), 1_000)
            .await
            .unwrap();
        for id in &page.items {
            locations.push(ports.catalog.get_location(*id).await.unwrap().unwrap());
        }
        cursor = page.next;
        if cursor.is_none() {
            return locations;
        }
    }
}

/// The offer's drift is 0 and 0, its `locationsTotal` is its links, and every location of
/// the brand has `hasOffer` exactly when it carries an offer.
async fn assert_exact(api: &ApiClient, ports: &Ports, brand: BrandId, offers: &[OfferId]) {
    let locations = brand_locations(ports, brand).await;
    let mut carrying = BTreeSet::new();
    for offer in offers {
        let links: BTreeSet<LocationId> = links_of(ports, *offer)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let total = ports
            .catalog
            .get_offer(*offer)
            .await
            .unwrap()
            .unwrap()
            .locations_total;
        assert_eq!(
            total,
            links.len() as u64,
            "offer {offer}: locationsTotal == its links"
        );
        if let Some(rule) = ports.catalog.get_rule(*offer).await.unwrap() {
            let drift: Value = api.get(&format!("/offers/{offer}/drift")).await.unwrap();
            // Which locations disagree with the rule, to say why if any do.
            let off: Vec<&Location> = locations
                .iter()
                .filter(|l| rule.wants(l) != links.contains(&l.id))
                .collect();
            assert_eq!(
                drift,
                json!({ "missing": 0, "extra": 0 }),
                "offer {offer} drifts from {rule:?}: {off:#?}"
            );
        }
        carrying.extend(links);
    }
    for location in &locations {
        assert_eq!(
            location.has_offer,
            carrying.contains(&location.id),
            "hasOffer of {}",
            location.id
        );
    }
}

/// A request as a client sends it: a 503 (a write that lost a race too often, "retry
/// shortly") is sent again, up to 20 times.
async fn send(
    api: &ApiClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> anyhow::Result<bulklink::client::ApiResponse> {
    for _ in 0..20 {
        let r = api.send(method.clone(), path, body, headers).await?;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{method} {path} answered 503 twenty times")
}

async fn created(api: &ApiClient, body: Value) -> LocationId {
    let r = send(api, Method::POST, "/locations", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().parse().unwrap()
}

async fn patched(api: &ApiClient, id: LocationId, body: Value) {
    let r = send(
        api,
        Method::PATCH,
        &format!("/locations/{id}"),
        Some(&body),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn set_rule(api: &ApiClient, runtime: &Runtime, offer: OfferId, filter: Value) {
    let r = send(
        api,
        Method::PUT,
        &format!("/offers/{offer}/rule"),
        Some(&json!({ "where": filter })),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let job = r.body["job"]["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&runtime.ports, job, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
}

async fn a_rule_follows_each_change_to_the_estate(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(0).await;
    let config = RuntimeConfig {
        follow_estate: true,
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let ports = runtime.ports.clone();
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let offer = seeded.offer_id;
    let linked = |id: LocationId| {
        let ports = ports.clone();
        async move {
            links_of(&ports, offer)
                .await
                .into_iter()
                .find(|(l, _)| *l == id)
                .map(|(_, by)| by)
        }
    };
    let soho = created(&api, json!({ "address": "1 Soho Sq", "country": "GB" })).await;
    set_rule(
        &api,
        &runtime,
        offer,
        json!({ "country": ["GB"], "tags": ["drive-thru"] }),
    )
    .await;
    assert_eq!(linked(soho).await, None, "no drive-thru tag yet");

    // Each change is followed: tagged, it is linked; a new matching store is linked; one
    // moved abroad is unlinked; closed, unlinked; reopened, linked again.
    let follows = |id: LocationId, wanted: bool, what: &'static str| async move {
        eventually(WAIT, what, || async {
            linked(id).await.is_some() == wanted
        })
        .await;
    };
    patched(&api, soho, json!({ "tags": ["drive-thru"] })).await;
    follows(soho, true, "the tagged store to be linked").await;
    assert_eq!(linked(soho).await, Some(LinkedBy::Rule));
    let leeds = created(
        &api,
        json!({ "address": "2 Leeds Rd", "country": "GB", "tags": ["drive-thru"] }),
    )
    .await;
    follows(leeds, true, "a new matching store to be linked").await;
    let dublin = created(
        &api,
        json!({ "address": "3 Dame St", "country": "IE", "tags": ["drive-thru"] }),
    )
    .await;
    patched(&api, leeds, json!({ "country": "IE" })).await;
    follows(leeds, false, "a store moved abroad to be unlinked").await;
    patched(&api, soho, json!({ "status": "closed" })).await;
    assert_eq!(
        linked(soho).await,
        None,
        "closing leaves every offer at once"
    );
    patched(&api, soho, json!({ "status": "active" })).await;
    follows(soho, true, "a reopened store to be linked again").await;
    let r = send(
        &api,
        Method::PUT,
        "/locations/by-external-id/S-9",
        Some(&json!({ "address": "9 Kings Rd", "country": "GB", "tags": ["drive-thru"] })),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let upserted: LocationId = r.body["id"].as_str().unwrap().parse().unwrap();
    follows(upserted, true, "an upserted matching store to be linked").await;

    // While the rule is set, it alone decides: link-all and unlink-all are refused.
    let r = send(
        &api,
        Method::POST,
        &format!("/offers/{offer}/link-all-locations"),
        None,
        &[],
    )
    .await
    .unwrap();
    assert_problem(&r, StatusCode::CONFLICT, "follows a standing rule");
    settle(&runtime, seeded.brand_id).await;
    assert_eq!(linked(dublin).await, None);
    assert_exact(&api, &ports, seeded.brand_id, &[offer]).await;
    runtime.shutdown().await;
}

/// `n` random operations — stores created, changed, closed, reopened, deleted and upserted,
/// rules set and changed on two offers, direct links — then, once settled, no drift and
/// exact counts.
async fn random_changes_and_jobs_settle_with_no_drift_and_exact_counts(kind: Kind, n: usize) {
    let seed: u64 = std::env::var("BULKLINK_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_206);
    eprintln!("random estate test: seed {seed} (BULKLINK_RANDOM_SEED repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(0).await;
    let config = RuntimeConfig {
        follow_estate: true,
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let ports = runtime.ports.clone();
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let second: Value = api
        .post("/offers", &json!({ "name": "second" }))
        .await
        .unwrap();
    let offers = [
        seeded.offer_id,
        second["id"].as_str().unwrap().parse().unwrap(),
    ];
    let countries = ["GB", "IE", "FR"];
    let tags = ["drive-thru", "24h", "kiosk"];
    let filters = [
        json!({}),
        json!({ "country": ["GB"] }),
        json!({ "country": ["GB", "IE"], "tags": ["drive-thru"] }),
        json!({ "tags": ["24h", "kiosk"] }),
    ];
    let mut stores: Vec<LocationId> = Vec::new();
    for op in 0..n {
        let pick = |rng: &mut StdRng, list: &[&'static str]| list[rng.random_range(0..list.len())];
        match rng.random_range(0..100) {
            // A new store, or an upsert of one of twenty store ids (new or existing).
            0..=24 => {
                let body = json!({
                    "address": format!("{op} High St"),
                    "country": pick(&mut rng, &countries),
                    "tags": [pick(&mut rng, &tags)],
                });
                if rng.random_bool(0.5) {
                    stores.push(created(&api, body).await);
                } else {
                    let path = format!("/locations/by-external-id/S-{}", rng.random_range(0..20));
                    let r = send(&api, Method::PUT, &path, Some(&body), &[])
                        .await
                        .unwrap();
                    assert!(r.status.is_success(), "{}", r.body);
                    let id = r.body["id"].as_str().unwrap().parse().unwrap();
                    if !stores.contains(&id) {
                        stores.push(id);
                    }
                }
            }
            25..=59 if !stores.is_empty() => {
                let id = stores[rng.random_range(0..stores.len())];
                let body = match rng.random_range(0..4) {
                    0 => json!({ "country": pick(&mut rng, &countries) }),
                    1 => json!({ "tags": [pick(&mut rng, &tags), pick(&mut rng, &tags)] }),
                    2 => json!({ "status": "closed" }),
                    _ => json!({ "status": "active" }),
                };
                patched(&api, id, body).await;
            }
            60..=64 if !stores.is_empty() => {
                let id = stores.swap_remove(rng.random_range(0..stores.len()));
                let r = send(&api, Method::DELETE, &format!("/locations/{id}"), None, &[])
                    .await
                    .unwrap();
                assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
            }
            65..=69 => {
                // A rule set or changed: wait for its reconcile only sometimes, so that
                // changes also land while one runs (then the next PUT may meet it: 409).
                let offer = offers[rng.random_range(0..offers.len())];
                let filter = &filters[rng.random_range(0..filters.len())];
                let r = send(
                    &api,
                    Method::PUT,
                    &format!("/offers/{offer}/rule"),
                    Some(&json!({ "where": filter })),
                    &[],
                )
                .await
                .unwrap();
                assert!(
                    r.status == StatusCode::OK || r.status == StatusCode::CONFLICT,
                    "{}",
                    r.body
                );
                if r.status == StatusCode::OK && rng.random_bool(0.5) {
                    let job = r.body["job"]["id"].as_str().unwrap().parse().unwrap();
                    wait_terminal(&ports, job, WAIT).await;
                }
            }
            70..=79 if !stores.is_empty() => {
                // A direct link: inside the rule (or with none) it is made; outside, 409.
                let offer = offers[rng.random_range(0..offers.len())];
                let id = stores[rng.random_range(0..stores.len())];
                let r = send(
                    &api,
                    Method::PUT,
                    &format!("/offers/{offer}/locations/{id}"),
                    None,
                    &[],
                )
                .await
                .unwrap();
                assert!(
                    [StatusCode::OK, StatusCode::CREATED, StatusCode::CONFLICT].contains(&r.status),
                    "{}",
                    r.body
                );
            }
            _ => {}
        }
    }
    settle(&runtime, seeded.brand_id).await;
    assert_exact(&api, &ports, seeded.brand_id, &offers).await;
    runtime.shutdown().await;
}
