//! Webhook delivery with SNS HTTP/S semantics: the confirmation handshake, the Notification
//! envelope with message attributes, filtering, and retries with backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bulklink::client::ApiClient;
use bulklink::receiver::Receiver;
use bulklink::runtime::{Runtime, RuntimeConfig};
use serde_json::{json, Value};
use shared::auth::Role;
use shared::domain::BrandId;
use shared::embedded::DeliveryPolicy;
use shared::ports::{Subscription, SubscriptionStatus};

use crate::support::*;

fn quick_retries() -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts: 5,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    }
}

/// The pipeline with loopback receivers allowed, and a client acting as `brand`.
async fn start(env: &Env, brand: BrandId) -> (Runtime, ApiClient) {
    let config = RuntimeConfig {
        settings: env.settings.clone(),
        delivery: quick_retries(),
        egress: loopback_egress(),
        ..Default::default()
    };
    let runtime = Runtime::start_embedded(&env.db(), config).await.unwrap();
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    (runtime, api)
}

async fn confirmed(api: &ApiClient, id: &str) -> bool {
    let sub: Subscription = api.get(&format!("/webhooks/{id}")).await.unwrap();
    sub.status == SubscriptionStatus::Confirmed
}

#[tokio::test]
async fn a_subscriber_confirms_then_receives_the_sns_notification_with_attributes() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(120).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let mut receiver = Receiver::start().await.unwrap();
    let sub: Value = api
        .post(
            "/webhooks",
            &json!({ "url": receiver.url, "filter": { "brandId": seeded.brand_id } }),
        )
        .await
        .unwrap();
    assert_eq!(sub["status"], "pendingConfirmation");
    let sub_id = sub["id"].as_str().unwrap().to_owned();

    let first = tokio::time::timeout(Duration::from_secs(10), receiver.messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.message_type, "SubscriptionConfirmation");
    assert_eq!(first.envelope["Type"], "SubscriptionConfirmation");
    assert!(first.envelope["Token"].as_str().unwrap().len() >= 32);
    assert!(first.envelope["SubscribeURL"]
        .as_str()
        .unwrap()
        .starts_with(&runtime.base_url));
    eventually(Duration::from_secs(5), "confirmation", || {
        confirmed(&api, &sub_id)
    })
    .await;

    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(30), receiver.next_notification())
        .await
        .unwrap()
        .unwrap();
    let envelope = &note.envelope;
    assert_eq!(envelope["Type"], "Notification");
    assert!(envelope["TopicArn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:sns:"));
    let attr = |name: &str| envelope["MessageAttributes"][name]["Value"].clone();
    assert_eq!(attr("eventType"), "job.succeeded");
    assert_eq!(attr("jobId"), job.id.to_string());
    assert_eq!(attr("brandId"), seeded.brand_id.to_string());
    assert_eq!(attr("offerId"), seeded.offer_id.to_string());
    let event = note.event().unwrap();
    assert_eq!(event["type"], "job.succeeded");
    assert_eq!(event["counters"]["linked"], 120);
    assert!(event["eventId"].as_str().is_some());
    receiver.stop();
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_brands_webhooks_hear_only_its_own_brand() {
    let env = Env::new(fast_settings());
    let ours_seed = env.seed(60).await;
    let theirs_seed = env.seed(60).await;
    let (runtime, api) = start(&env, ours_seed.brand_id).await;
    let mut unfiltered = Receiver::start().await.unwrap();
    let mut snooping = Receiver::start().await.unwrap();
    // Brand A subscribes with no filter (pinned to A) and tries a filter on brand B.
    let a: Value = api
        .post("/webhooks", &json!({ "url": unfiltered.url }))
        .await
        .unwrap();
    assert_eq!(a["filter"]["brandId"], ours_seed.brand_id.to_string());
    let refused = api
        .send(
            reqwest::Method::POST,
            "/webhooks",
            Some(&json!({ "url": snooping.url, "filter": { "brandId": theirs_seed.brand_id } })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let id = a["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "confirmation", || {
        confirmed(&api, &id)
    })
    .await;

    // Brand B's job ends first, then A's: A's receiver hears exactly A's.
    let theirs = runtime.api_as(Role::Brand(theirs_seed.brand_id)).unwrap();
    let their_job = theirs
        .create_job(theirs_seed.offer_id, None, None)
        .await
        .unwrap();
    wait_terminal(&runtime.ports, their_job.id, Duration::from_secs(30)).await;
    let our_job = api
        .create_job(ours_seed.offer_id, None, None)
        .await
        .unwrap();
    let note = tokio::time::timeout(Duration::from_secs(30), unfiltered.next_notification())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.event().unwrap()["jobId"], our_job.id.to_string());
    eventually(Duration::from_secs(5), "all deliveries made", || async {
        runtime
            .embedded_store()
            .expect("embedded")
            .undelivered_webhooks()
            .await
            .unwrap()
            == (0, 0)
    })
    .await;
    assert!(
        unfiltered.messages.try_recv().is_err(),
        "nothing of brand B"
    );
    assert!(snooping.messages.try_recv().is_err(), "never subscribed");
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_until_the_receiver_accepts_it() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(60).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = {
        let (hits, http) = (hits.clone(), reqwest::Client::new());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let (hits, http, tx) = (hits.clone(), http.clone(), tx.clone());
                async move {
                    let envelope: Value = serde_json::from_str(&body).unwrap();
                    if envelope["Type"] == "SubscriptionConfirmation" {
                        http.get(envelope["SubscribeURL"].as_str().unwrap())
                            .send()
                            .await
                            .unwrap();
                        return StatusCode::OK;
                    }
                    // The first two notification attempts fail.
                    if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    tx.send(envelope).unwrap();
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sub: Value = api.post("/webhooks", &json!({ "url": url })).await.unwrap();
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "confirmation", || {
        confirmed(&api, &sub_id)
    })
    .await;

    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let envelope = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "two refusals, then the delivery"
    );
    assert_eq!(
        envelope["MessageAttributes"]["jobId"]["Value"],
        job.id.to_string()
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn webhook_subscriptions_can_be_read_and_deleted_and_bad_ones_are_refused() {
    let env = Env::new(fast_settings());
    let (runtime, api) = start(&env, BrandId::new_random()).await;
    let bad = api
        .send(
            reqwest::Method::POST,
            "/webhooks",
            Some(&json!({ "url": "not a url" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["detail"]
        .as_str()
        .unwrap()
        .contains("must start with http"));
    let bad_filter = api
        .send(
            reqwest::Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/h", "filter": { "events": ["job.exploded"] } })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);

    let created = api
        .send(
            reqwest::Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/h" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap();
    let wrong_token = api
        .send(
            reqwest::Method::GET,
            &format!("/webhooks/{id}/confirm?token=nope"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    let deleted = api
        .send(
            reqwest::Method::DELETE,
            &format!("/webhooks/{id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api
        .send(reqwest::Method::GET, &format!("/webhooks/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    runtime.shutdown().await;
}
