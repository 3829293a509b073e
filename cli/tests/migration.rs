//! Data that outlives a version: a SQLite file written by the previous release (schema 1,
//! `fixtures/store-v1.db`: a finished 300-location job, its idempotency key, a webhook
//! subscription of the SNS era) opens, migrates once and keeps what it held.
//!
//! Each fixture was written at the time in its `store-vN.json` (`createdAt`); the tests
//! run the runtime's clock from a minute after it, so what they prove holds on any day.
//! What a day later changes (the Idempotency-Key has expired) is a test of its own.

use bulklink::client::ApiClient;
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_core::domain::{BrandId, JobStatus, OfferId};
use bulklink_core::Clock;
use bulklink_http::auth::Role;
use bulklink_sqlite::EmbeddedStore;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;

use crate::support::*;

struct V1 {
    dir: tempfile::TempDir,
    brand: BrandId,
    offer: OfferId,
    /// When the fixture was written.
    created: DateTime<Utc>,
}

/// The `createdAt` of a fixture's description.
fn created_at(seeded: &Value) -> DateTime<Utc> {
    seeded["createdAt"]
        .as_str()
        .expect("the fixture's description names its createdAt")
        .parse()
        .unwrap()
}

/// A clock a minute after the fixture was written, running from there.
fn fixture_clock(created: DateTime<Utc>) -> Clock {
    Clock::starting_at(created + chrono::Duration::minutes(1))
}

fn v1_copy() -> V1 {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures.join("store-v1.db"), dir.path().join("bulklink.db")).unwrap();
    let seeded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("store-v1.json")).unwrap())
            .unwrap();
    V1 {
        dir,
        brand: seeded["brandId"].as_str().unwrap().parse().unwrap(),
        offer: seeded["offerId"].as_str().unwrap().parse().unwrap(),
        created: created_at(&seeded),
    }
}

/// The v1 file's runtime, its clock at `clock`, and an API client of the fixture's brand
/// (the sub `bulklink token --brand` gave its token).
async fn v1_runtime(v1: &V1, clock: Clock) -> (Runtime, ApiClient) {
    let config = RuntimeConfig {
        consumers: false,
        clock,
        ..Env::new(fast_settings()).config()
    };
    let runtime = Runtime::start_embedded(&v1.dir.path().join("bulklink.db"), config)
        .await
        .unwrap();
    let api = ApiClient::new(&runtime.base_url).unwrap().with_token(
        runtime
            .token_for(&format!("brand-{}", v1.brand), Role::Brand(v1.brand))
            .unwrap(),
    );
    (runtime, api)
}

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 13;

fn user_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_the_previous_release_migrates_once_and_keeps_every_job_link_and_count() {
    let v1 = v1_copy();
    let db = v1.dir.path().join("bulklink.db");
    assert_eq!(user_version(&db), 1);

    let store = EmbeddedStore::open_with_clock(&db, fixture_clock(v1.created)).unwrap();
    assert_eq!(user_version(&db), SCHEMA_VERSION);
    let stats = store.link_stats(v1.brand, v1.offer).await.unwrap();
    assert_eq!(
        (
            stats.brand_locations,
            stats.brand_locations_with_offer,
            stats.offer_links,
            stats.offer_locations_total
        ),
        (300, 300, 300, 300)
    );
    drop(store);
    // Opening it again migrates nothing more.
    EmbeddedStore::open(&db).unwrap();
    assert_eq!(user_version(&db), SCHEMA_VERSION);

    let (runtime, api) = v1_runtime(&v1, fixture_clock(v1.created)).await;
    let jobs: Value = api.get("/jobs").await.unwrap();
    let job = &jobs["items"][0];
    assert_eq!(job["status"], JobStatus::Succeeded.as_str());
    assert_eq!(job["counters"]["linked"], 300);
    assert_eq!(job["counters"]["total"], 300);
    // Its Idempotency-Key still names it.
    let replay = api
        .send(
            Method::POST,
            &format!("/offers/{}/link-all-locations", v1.offer),
            None,
            &[("idempotency-key", "fixture-1")],
        )
        .await
        .unwrap();
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert_eq!(replay.body["id"], job["id"]);
    // Every location of the file is active, with its offer, and listed as active.
    let active: Value = api
        .get("/locations?status=active&limit=1000")
        .await
        .unwrap();
    let active = active["items"].as_array().unwrap();
    assert_eq!(active.len(), 300);
    assert!(active
        .iter()
        .all(|l| l["status"] == "active" && l["hasOffer"] == true));
    let closed: Value = api.get("/locations?status=closed").await.unwrap();
    assert_eq!(closed["items"], serde_json::json!([]));
    // The subscription became a signed webhook of its brand, URL and filter kept.
    let hooks: Value = api.get("/webhooks").await.unwrap();
    let hook = &hooks["items"][0];
    assert_eq!(hook["url"], "http://127.0.0.1:9/hook");
    // Its filter, stored as `events` then, reads back as `eventTypes`.
    assert_eq!(
        hook["filter"]["eventTypes"],
        serde_json::json!(["job.succeeded"])
    );
    assert_eq!(hook["status"], "active");
    let rotated: Value = api
        .post(
            &format!("/webhooks/{}/rotate-secret", hook["id"].as_str().unwrap()),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_after_the_file_was_written_its_idempotency_key_has_expired_and_makes_a_new_job() {
    let v1 = v1_copy();
    // Within the key's 24 h it names the fixture's job; a second past them it names nothing.
    let clock =
        Clock::manual(v1.created + chrono::Duration::hours(24) - chrono::Duration::seconds(1));
    let (runtime, api) = v1_runtime(&v1, clock.clone()).await;
    let jobs: Value = api.get("/jobs").await.unwrap();
    let fixture_job = jobs["items"][0]["id"].clone();
    let link_all = format!("/offers/{}/link-all-locations", v1.offer);
    let key = [("idempotency-key", "fixture-1")];

    let within = api.send(Method::POST, &link_all, None, &key).await.unwrap();
    assert_eq!(within.status, 202, "{}", within.body);
    assert_eq!(
        within.body["id"], fixture_job,
        "within its 24 h the key names the job"
    );

    clock.advance(chrono::Duration::seconds(2));
    let after = api.send(Method::POST, &link_all, None, &key).await.unwrap();
    assert_eq!(after.status, 202, "{}", after.body);
    assert_ne!(
        after.body["id"], fixture_job,
        "an expired key starts a new job"
    );
    assert_eq!(after.body["status"], "PENDING");
    assert_eq!(
        after.body["createdAt"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        clock.now(),
        "the new job is created at the runtime's time"
    );
    // The key now names the new job, for another 24 h.
    let replay = api.send(Method::POST, &link_all, None, &key).await.unwrap();
    assert_eq!(replay.body["id"], after.body["id"]);
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_file_of_a_newer_release_is_refused_and_left_alone() {
    let v1 = v1_copy();
    let db = v1.dir.path().join("bulklink.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let refused = EmbeddedStore::open(&db).err().expect("refused");

    assert!(
        refused.to_string().contains("schema version 99"),
        "{refused}"
    );
    assert_eq!(user_version(&db), 99);
}

/// `fixtures/store-v2.db`, written by the release before job kinds (schema 2): a finished
/// 300-location link-all job with the Idempotency-Key `fixture-2`, and one of its locations
/// also linked directly to a second offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_the_release_before_job_kinds_migrates_and_its_jobs_can_be_undone() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bulklink.db");
    std::fs::copy(fixtures.join("store-v2.db"), &db).unwrap();
    let seeded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("store-v2.json")).unwrap())
            .unwrap();
    let id = |name: &str| seeded[name].as_str().unwrap().to_owned();
    let brand: BrandId = id("brandId").parse().unwrap();
    let offer: OfferId = id("offerId").parse().unwrap();
    let second: OfferId = id("secondOfferId").parse().unwrap();
    let shared_location: bulklink_core::domain::LocationId =
        id("sharedLocationId").parse().unwrap();
    let clock = fixture_clock(created_at(&seeded));
    assert_eq!(user_version(&db), 2);

    let store = EmbeddedStore::open_with_clock(&db, clock.clone()).unwrap();
    assert_eq!(user_version(&db), SCHEMA_VERSION);
    let stats = store.link_stats(brand, offer).await.unwrap();
    assert_eq!(
        (
            stats.brand_locations,
            stats.brand_locations_with_offer,
            stats.offer_links,
            stats.offer_locations_total
        ),
        (300, 300, 300, 300)
    );
    drop(store);

    let config = RuntimeConfig {
        clock,
        ..Env::new(fast_settings()).config()
    };
    let runtime = Runtime::start_embedded(&db, config).await.unwrap();
    let api = ApiClient::new(&runtime.base_url).unwrap().with_token(
        runtime
            .token_for(&format!("brand-{brand}"), Role::Brand(brand))
            .unwrap(),
    );
    let job: Value = api.get(&format!("/jobs/{}", id("jobId"))).await.unwrap();
    assert_eq!(job["type"], "link-all-locations");
    assert_eq!(job["status"], "SUCCEEDED");
    assert_eq!(job["counters"]["linked"], 300);
    assert_eq!(job["counters"]["unlinked"], 0);
    let replay = api
        .send(
            Method::POST,
            &format!("/offers/{offer}/link-all-locations"),
            None,
            &[("idempotency-key", "fixture-2")],
        )
        .await
        .unwrap();
    assert_eq!(
        replay.body["id"], job["id"],
        "its Idempotency-Key still names it"
    );

    // The old job is undone like a new one; the location with the second offer keeps hasOffer.
    let undo = api
        .send(
            Method::POST,
            &format!("/jobs/{}/undo", id("jobId")),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(undo.status, 202, "{}", undo.body);
    let undo_id: bulklink_core::domain::JobId = undo.body["id"].as_str().unwrap().parse().unwrap();
    let undone = wait_terminal(&runtime.ports, undo_id, std::time::Duration::from_secs(60)).await;
    assert_eq!(undone.counters.unlinked, 300);
    let location: Value = api
        .get(&format!("/locations/{shared_location}"))
        .await
        .unwrap();
    assert_eq!(location["hasOffer"], true);
    // A location of the old file has no attributes and no times, and is active; a change
    // gives it both.
    let keys: Vec<&str> = location
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 5, "{location}");
    assert_eq!(location["status"], "active");
    let described = api
        .send(
            Method::PATCH,
            &format!("/locations/{shared_location}"),
            Some(&serde_json::json!({ "city": "London", "country": "GB" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(described.status, 200, "{}", described.body);
    assert_eq!(described.body["city"], "London");
    assert_eq!(described.body["hasOffer"], true);
    assert!(described.body.get("updatedAt").is_some() && described.body.get("createdAt").is_none());
    let second: Value = api.get(&format!("/offers/{second}")).await.unwrap();
    assert_eq!(second["locationsTotal"], 1);
    let first: Value = api.get(&format!("/offers/{offer}")).await.unwrap();
    assert_eq!(first["locationsTotal"], 0);
    runtime.shutdown().await;
}
