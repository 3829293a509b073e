//! Data that outlives a version: a SQLite file written by the previous release (schema 1,
//! `fixtures/store-v1.db`: a finished 300-location job, its idempotency key, a webhook
//! subscription of the SNS era) opens, migrates once and keeps what it held.

use bulklink::runtime::RuntimeConfig;
use reqwest::Method;
use serde_json::Value;
use shared::auth::Role;
use shared::domain::{BrandId, JobStatus, OfferId};
use shared::embedded::EmbeddedStore;

use crate::support::*;

struct V1 {
    dir: tempfile::TempDir,
    brand: BrandId,
    offer: OfferId,
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
    }
}

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

    let store = EmbeddedStore::open(&db).unwrap();
    assert_eq!(user_version(&db), 2);
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
    assert_eq!(user_version(&db), 2);

    let config = RuntimeConfig {
        consumers: false,
        ..Env::new(fast_settings()).config()
    };
    let runtime = bulklink::runtime::Runtime::start_embedded(&db, config)
        .await
        .unwrap();
    // The token `bulklink token --brand` minted when the file was written had this sub.
    let api = bulklink::client::ApiClient::new(&runtime.base_url)
        .unwrap()
        .with_token(
            runtime
                .token_for(&format!("brand-{}", v1.brand), Role::Brand(v1.brand))
                .unwrap(),
        );
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
    // The subscription became a signed webhook of its brand, URL and filter kept.
    let hooks: Value = api.get("/webhooks").await.unwrap();
    let hook = &hooks["items"][0];
    assert_eq!(hook["url"], "http://127.0.0.1:9/hook");
    assert_eq!(hook["filter"]["events"][0], "job.succeeded");
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
