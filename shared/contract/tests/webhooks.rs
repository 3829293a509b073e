//! Webhooks contracts at the port level: subscriptions of a brand with their secrets,
//! deliveries created once and updated only from the state they were read at, and events
//! published onto the webhook queue. HTTP delivery is tested where the deliverer lives.

use std::time::Duration;

use bulklink_core::domain::{
    BrandId, Delivery, DeliveryStatus, Event, EventType, Job, JobEvent, JobStatus, OfferId,
    Subscription, SubscriptionFilter, SubscriptionId, SubscriptionStatus, WebhookEvent,
    WebhookMessage, WebhookSecret, WebhookUrl,
};
use chrono::Utc;

use crate::support::{now_ms, Fixture};

fn url(path: &str) -> WebhookUrl {
    format!("https://hooks.example.invalid/{path}")
        .parse()
        .unwrap()
}

fn subscription(brand: BrandId, path: &str) -> Subscription {
    Subscription::new(
        SubscriptionId::new_random(),
        brand,
        url(path),
        SubscriptionFilter {
            event_types: Some(vec![EventType::JobSucceeded]),
            ..Default::default()
        },
        Some("orders service".into()),
        now_ms(),
    )
}

/// The delivery of a job's event to `sub`.
fn delivery_of(event: &JobEvent, sub: &Subscription, at: chrono::DateTime<Utc>) -> Delivery {
    Delivery::new(&Event::Job(event.clone()), sub, at)
}

fn event_of(brand: BrandId) -> JobEvent {
    let mut job = Job::new(brand, OfferId::new_random(), None, now_ms());
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(now_ms());
    JobEvent::of_status(&job).unwrap()
}

pub async fn a_new_subscription_reads_back_with_its_secret(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let sub = subscription(BrandId::new_random(), "a");

    let stored = webhooks.create_subscription(&sub).await.unwrap();

    assert_eq!(stored, sub);
    assert_eq!(
        stored.filter.brand_id,
        Some(sub.brand_id),
        "pinned to its brand"
    );
    assert_eq!(webhooks.get_subscription(sub.id).await.unwrap(), Some(sub));
    assert_eq!(
        webhooks
            .get_subscription(SubscriptionId::new_random())
            .await
            .unwrap(),
        None
    );
}

pub async fn creating_a_subscription_that_exists_returns_the_stored_one(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let first = subscription(BrandId::new_random(), "a");
    webhooks.create_subscription(&first).await.unwrap();
    let mut again = first.clone();
    again.secret = WebhookSecret::generate();
    again.url = url("other");

    let stored = webhooks.create_subscription(&again).await.unwrap();

    assert_eq!(stored, first, "the first one, its secret included");
}

pub async fn a_brands_subscriptions_list_newest_first_page_by_page(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let mut made = Vec::new();
    for i in 0..5 {
        let mut sub = subscription(brand, &format!("s{i}"));
        sub.created_at = now_ms() + chrono::Duration::milliseconds(i);
        webhooks.create_subscription(&sub).await.unwrap();
        made.push(sub.id);
    }
    webhooks
        .create_subscription(&subscription(BrandId::new_random(), "x"))
        .await
        .unwrap();

    let first = webhooks
        .page_brand_subscriptions(brand, None, 3)
        .await
        .unwrap();
    let second = webhooks
        .page_brand_subscriptions(brand, first.next.as_ref(), 3)
        .await
        .unwrap();

    made.reverse();
    let listed: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, made);
    assert!(
        second.next.is_none() || {
            let third = webhooks
                .page_brand_subscriptions(brand, second.next.as_ref(), 3)
                .await
                .unwrap();
            third.items.is_empty() && third.next.is_none()
        }
    );
}

pub async fn deleting_a_subscription_removes_it_once(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let sub = subscription(BrandId::new_random(), "a");
    webhooks.create_subscription(&sub).await.unwrap();

    let first = webhooks.delete_subscription(sub.id).await.unwrap();
    let second = webhooks.delete_subscription(sub.id).await.unwrap();

    assert_eq!((first, second), (true, false));
    assert_eq!(webhooks.get_subscription(sub.id).await.unwrap(), None);
}

pub async fn rotating_keeps_the_previous_secret_until_its_expiry(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let sub = subscription(BrandId::new_random(), "a");
    webhooks.create_subscription(&sub).await.unwrap();
    let new = WebhookSecret::generate();
    let until = now_ms() + chrono::Duration::hours(24);

    let rotated = webhooks
        .rotate_secret(sub.id, &new, until)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(rotated.secret, new);
    assert_eq!(rotated.previous_secret, Some((sub.secret.clone(), until)));
    assert_eq!(rotated.signing_secrets(Utc::now()), vec![&new, &sub.secret]);
    let later = until + chrono::Duration::seconds(1);
    assert_eq!(rotated.signing_secrets(later), vec![&new]);
    let unknown = webhooks
        .rotate_secret(SubscriptionId::new_random(), &new, until)
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

pub async fn disabling_a_subscription_stops_it_wanting_events_and_enabling_brings_it_back(
    fx: &Fixture,
) {
    let webhooks = &fx.ports.webhooks;
    let sub = subscription(BrandId::new_random(), "a");
    webhooks.create_subscription(&sub).await.unwrap();

    let started = now_ms();
    assert_eq!(
        webhooks.record_failing(sub.id, started).await.unwrap(),
        Some(started)
    );
    // A later failure keeps the streak's start.
    let later = started + chrono::Duration::hours(1);
    assert_eq!(
        webhooks.record_failing(sub.id, later).await.unwrap(),
        Some(started)
    );
    webhooks
        .disable_subscription(sub.id, "it failed")
        .await
        .unwrap();

    let stored = webhooks.get_subscription(sub.id).await.unwrap().unwrap();
    assert_eq!(stored.status, SubscriptionStatus::Disabled);
    assert_eq!(stored.disabled_reason.as_deref(), Some("it failed"));
    assert_eq!(stored.failing_since, Some(started));
    assert!(!stored.wants(&Event::Job(event_of(sub.brand_id))));

    let enabled = webhooks.enable_subscription(sub.id).await.unwrap().unwrap();
    assert_eq!(enabled.status, SubscriptionStatus::Active);
    assert_eq!(
        (enabled.disabled_reason, enabled.failing_since),
        (None, None)
    );
    assert_eq!(
        webhooks
            .get_subscription(sub.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        SubscriptionStatus::Active
    );
    webhooks.record_failing(sub.id, later).await.unwrap();
    webhooks.clear_failing(sub.id).await.unwrap();
    assert_eq!(
        webhooks
            .get_subscription(sub.id)
            .await
            .unwrap()
            .unwrap()
            .failing_since,
        None
    );
    let unknown = SubscriptionId::new_random();
    assert_eq!(webhooks.enable_subscription(unknown).await.unwrap(), None);
    assert_eq!(webhooks.record_failing(unknown, later).await.unwrap(), None);
}

pub async fn a_delivery_is_created_once_and_a_replay_finds_it(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let sub = subscription(brand, "a");
    let event = event_of(brand);
    let delivery = delivery_of(&event, &sub, now_ms());

    let first = webhooks.create_delivery(&delivery).await.unwrap();
    let mut attempted = first.clone();
    attempted.attempts = 1;
    attempted.last_status_code = Some(500);
    assert!(webhooks.update_delivery(&attempted, 0).await.unwrap());
    let replay = webhooks
        .create_delivery(&delivery_of(&event, &sub, now_ms()))
        .await
        .unwrap();

    assert_eq!(first, delivery);
    assert_eq!(replay, attempted, "the stored one, not a fresh one");
    assert_eq!(
        webhooks.get_delivery(sub.id, delivery.id).await.unwrap(),
        Some(attempted)
    );
    assert_eq!(
        webhooks
            .get_delivery(SubscriptionId::new_random(), delivery.id)
            .await
            .unwrap(),
        None,
        "a delivery is found under its own subscription only"
    );
}

pub async fn a_delivery_update_applies_only_from_the_attempt_count_it_was_read_at(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let sub = subscription(brand, "a");
    let stored = webhooks
        .create_delivery(&delivery_of(&event_of(brand), &sub, now_ms()))
        .await
        .unwrap();
    let mut one = stored.clone();
    one.attempts = 1;
    one.status = DeliveryStatus::Succeeded;
    one.last_status_code = Some(200);
    let mut rival = stored.clone();
    rival.attempts = 1;
    rival.last_error = Some("timed out".into());

    let won = webhooks.update_delivery(&one, 0).await.unwrap();
    let lost = webhooks.update_delivery(&rival, 0).await.unwrap();

    assert_eq!((won, lost), (true, false));
    let now = webhooks
        .get_delivery(sub.id, stored.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now, one);
}

pub async fn deliveries_list_newest_first_by_subscription_and_by_job(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let (a, b) = (subscription(brand, "a"), subscription(brand, "b"));
    let mut events = Vec::new();
    for i in 0..3 {
        let mut event = event_of(brand);
        event.occurred_at = now_ms() + chrono::Duration::seconds(i);
        events.push(event);
    }
    for event in &events {
        for sub in [&a, &b] {
            webhooks
                .create_delivery(&delivery_of(event, sub, now_ms()))
                .await
                .unwrap();
        }
    }

    let first = webhooks
        .page_subscription_deliveries(a.id, None, 2)
        .await
        .unwrap();
    let rest = webhooks
        .page_subscription_deliveries(a.id, first.next.as_ref(), 2)
        .await
        .unwrap();
    let of_a: Vec<_> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|d| d.event_id)
        .collect();
    let newest_first: Vec<_> = events.iter().rev().map(|e| e.event_id).collect();
    assert_eq!(of_a, newest_first);
    let of_job = webhooks
        .page_job_deliveries(events[1].job_id, None, 10)
        .await
        .unwrap();
    let mut subs: Vec<_> = of_job.items.iter().map(|d| d.subscription_id).collect();
    subs.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(subs, expected);
    assert!(of_job
        .items
        .iter()
        .all(|d| d.job_id == Some(events[1].job_id)));
}

pub async fn overdue_deliveries_are_the_pending_ones_past_due(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let sub = subscription(brand, "a");
    let long_ago = now_ms() - chrono::Duration::minutes(30);
    let mut overdue = delivery_of(&event_of(brand), &sub, long_ago);
    overdue.next_attempt_at = Some(long_ago);
    let overdue = webhooks.create_delivery(&overdue).await.unwrap();
    let done = webhooks
        .create_delivery(&delivery_of(&event_of(brand), &sub, long_ago))
        .await
        .unwrap();
    let mut succeeded = done.clone();
    succeeded.status = DeliveryStatus::Succeeded;
    succeeded.attempts = 1;
    succeeded.next_attempt_at = None;
    assert!(webhooks.update_delivery(&succeeded, 0).await.unwrap());
    let mut later = delivery_of(&event_of(brand), &sub, now_ms());
    later.next_attempt_at = Some(now_ms() + chrono::Duration::minutes(5));
    webhooks.create_delivery(&later).await.unwrap();

    let found = webhooks
        .overdue_deliveries(now_ms() - chrono::Duration::minutes(2), 100)
        .await
        .unwrap();

    let ids: Vec<_> = found.iter().map(|d| d.id).collect();
    assert!(ids.contains(&overdue.id));
    assert!(
        !ids.contains(&succeeded.id) && !ids.contains(&later.id),
        "{ids:?}"
    );
}

pub async fn a_published_event_reaches_the_webhook_queue_raw(fx: &Fixture) {
    let event = event_of(BrandId::new_random());

    fx.ports.events.publish(&event).await.unwrap();

    let deadline = tokio::time::Instant::now() + fx.arrival_wait();
    loop {
        let messages = fx
            .ports
            .webhook_queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap();
        if let Some(m) = messages.first() {
            assert_eq!(
                WebhookMessage::decode(&m.body).unwrap(),
                WebhookMessage::Event(Event::Job(event))
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event never arrived"
        );
    }
}

pub async fn a_subscriptions_progress_window_and_a_delivery_of_no_job_read_back(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let mut sub = subscription(brand, "p");
    sub.progress_every_seconds = Some(30);
    let stored = webhooks.create_subscription(&sub).await.unwrap();
    assert_eq!(stored.progress_every_seconds, Some(30));
    assert_eq!(
        webhooks.get_subscription(sub.id).await.unwrap(),
        Some(sub.clone())
    );

    let test = Event::Webhook(WebhookEvent::test(brand, sub.id, now_ms()));
    let made = webhooks
        .create_delivery(&Delivery::new(&test, &sub, now_ms()))
        .await
        .unwrap();
    assert_eq!(made.job_id, None);
    let read = webhooks
        .get_delivery(sub.id, made.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, made);
    assert_eq!(read.event_type, EventType::WebhookTest);
    let listed = webhooks
        .page_subscription_deliveries(sub.id, None, 10)
        .await
        .unwrap();
    assert_eq!(listed.items, vec![made]);
}

pub async fn a_brands_events_page_oldest_first_in_a_half_open_range(fx: &Fixture) {
    let webhooks = &fx.ports.webhooks;
    let brand = BrandId::new_random();
    let start = now_ms();
    let mut kept = Vec::new();
    for i in 0..5 {
        let mut event = event_of(brand);
        event.occurred_at = start + chrono::Duration::seconds(i);
        kept.push(Event::Job(event));
    }
    // Kept out of order, one twice, and another brand's at the same times.
    for event in kept.iter().rev().chain([&kept[2]]) {
        webhooks.record_event(event).await.unwrap();
    }
    let mut other = event_of(BrandId::new_random());
    other.occurred_at = start + chrono::Duration::seconds(1);
    webhooks.record_event(&Event::Job(other)).await.unwrap();

    // [start + 1 s, start + 4 s): the second to the fourth, in pages of two.
    let (since, until) = (
        start + chrono::Duration::seconds(1),
        start + chrono::Duration::seconds(4),
    );
    let first = webhooks
        .page_brand_events(brand, since, until, None, 2)
        .await
        .unwrap();
    let rest = webhooks
        .page_brand_events(brand, since, until, first.next.as_ref(), 2)
        .await
        .unwrap();
    assert!(rest.next.is_none());
    let read: Vec<Event> = first.items.into_iter().chain(rest.items).collect();
    assert_eq!(read, kept[1..4].to_vec());
    let none = webhooks
        .page_brand_events(
            brand,
            until + chrono::Duration::seconds(10),
            until + chrono::Duration::seconds(20),
            None,
            10,
        )
        .await
        .unwrap();
    assert!(none.items.is_empty());
}
