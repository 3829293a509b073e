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
use shared::embedded::DeliveryPolicy;
use shared::ports::{Subscription, SubscriptionStatus};

use crate::support::*;

fn quick_retries() -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts: 5,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
    }
}

async fn start(env: &Env) -> (Runtime, ApiClient) {
    let config = RuntimeConfig {
        settings: env.settings.clone(),
        delivery: quick_retries(),
        ..Default::default()
    };
    let runtime = Runtime::start_embedded(&env.db(), config).await.unwrap();
    let api = ApiClient::new(&runtime.base_url).unwrap();
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
    let (runtime, api) = start(&env).await;
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
async fn a_subscription_filtered_to_another_brand_receives_nothing() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(60).await;
    let (runtime, api) = start(&env).await;
    let mut ours = Receiver::start().await.unwrap();
    let mut theirs = Receiver::start().await.unwrap();
    let a: Value = api
        .post(
            "/webhooks",
            &json!({ "url": ours.url, "filter": { "jobId": null, "events": ["job.succeeded"] } }),
        )
        .await
        .unwrap();
    let b: Value = api
        .post(
            "/webhooks",
            &json!({ "url": theirs.url, "filter": { "brandId": shared::domain::BrandId::new_random() } }),
        )
        .await
        .unwrap();
    for id in [&a["id"], &b["id"]] {
        let id = id.as_str().unwrap().to_owned();
        eventually(Duration::from_secs(5), "confirmation", || {
            confirmed(&api, &id)
        })
        .await;
    }

    api.create_job(seeded.offer_id, None, None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), ours.next_notification())
        .await
        .unwrap()
        .unwrap();
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
    let mut theirs_got = Vec::new();
    while let Ok(m) = theirs.messages.try_recv() {
        theirs_got.push(m.message_type);
    }
    assert_eq!(theirs_got, vec!["SubscriptionConfirmation".to_owned()]);
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_until_the_receiver_accepts_it() {
    let env = Env::new(fast_settings());
    let seeded = env.seed(60).await;
    let (runtime, api) = start(&env).await;
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
    let (runtime, api) = start(&env).await;
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
            Some(&json!({ "url": "https://example.com/h", "filter": { "events": ["job.exploded"] } })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);

    let created = api
        .send(
            reqwest::Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://example.com/h" })),
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
