//! EventBus contracts at the port level: subscriptions are idempotent per url and filter,
//! start pending confirmation, and are confirmed only with their token. HTTP delivery is
//! tested where the deliverer lives.

use shared::domain::{BrandId, EventType, SubscriptionId, WebhookUrl};
use shared::ports::{Confirmation, SubscriptionFilter, SubscriptionStatus};

use crate::support::Fixture;

fn url(path: &str) -> WebhookUrl {
    format!("https://hooks.example.com/{path}").parse().unwrap()
}

fn brand_filter() -> SubscriptionFilter {
    SubscriptionFilter {
        brand_id: Some(BrandId::new_random()),
        events: Some(vec![EventType::JobSucceeded, EventType::JobFailed]),
        ..Default::default()
    }
}

fn initial_status(fx: &Fixture) -> SubscriptionStatus {
    if fx.confirms_subscriptions_at_once() {
        SubscriptionStatus::Confirmed
    } else {
        SubscriptionStatus::PendingConfirmation
    }
}

pub async fn subscribing_returns_a_subscription_pending_confirmation(fx: &Fixture) {
    let events = &fx.ports.events;
    let (hook, filter) = (url("a"), brand_filter());

    let subscription = events.subscribe(&hook, &filter).await.unwrap();

    assert_eq!(subscription.status, initial_status(fx));
    assert_eq!((&subscription.url, &subscription.filter), (&hook, &filter));
    let stored = events.get_subscription(subscription.id).await.unwrap();
    assert_eq!(stored, Some(subscription));
}

pub async fn subscribing_the_same_url_and_filter_again_returns_the_same_subscription(fx: &Fixture) {
    let events = &fx.ports.events;
    let (hook, filter) = (url("a"), brand_filter());
    let first = events.subscribe(&hook, &filter).await.unwrap();

    let again = events.subscribe(&hook, &filter).await.unwrap();
    let other_url = events.subscribe(&url("b"), &filter).await.unwrap();

    assert_eq!(again.id, first.id);
    assert_ne!(other_url.id, first.id);
}

pub async fn unsubscribing_removes_the_subscription_once(fx: &Fixture) {
    let events = &fx.ports.events;
    let subscription = events.subscribe(&url("a"), &brand_filter()).await.unwrap();

    let first = events.unsubscribe(subscription.id).await.unwrap();
    let second = events.unsubscribe(subscription.id).await.unwrap();

    assert!(first);
    assert!(!second);
    assert_eq!(
        events.get_subscription(subscription.id).await.unwrap(),
        None
    );
}

pub async fn confirming_with_a_wrong_token_is_refused(fx: &Fixture) {
    let events = &fx.ports.events;
    let subscription = events.subscribe(&url("a"), &brand_filter()).await.unwrap();

    let outcome = events
        .confirm_subscription(subscription.id, "not-the-token")
        .await
        .unwrap();

    assert_eq!(outcome, Confirmation::BadToken);
    let stored = events
        .get_subscription(subscription.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, initial_status(fx));
}

pub async fn confirming_an_unknown_subscription_is_refused(fx: &Fixture) {
    let events = &fx.ports.events;
    events.subscribe(&url("a"), &brand_filter()).await.unwrap();
    let unknown = SubscriptionId::new_random();

    let outcome = events.confirm_subscription(unknown, "any").await.unwrap();

    assert_eq!(outcome, Confirmation::UnknownSubscription);
    assert_eq!(events.get_subscription(unknown).await.unwrap(), None);
}

/// The token travels only in the SubscriptionConfirmation message, so confirming with the
/// right one means reading it from the store: possible for the embedded backend alone.
mod embedded_only {
    use super::*;

    /// SNS keys a subscription by endpoint alone (another filter for the same URL is
    /// refused); the embedded backend keys it by url and filter.
    #[tokio::test]
    async fn the_same_url_with_another_filter_is_another_subscription() {
        let fx = Fixture::embedded().await;
        let events = &fx.ports.events;
        let first = events.subscribe(&url("a"), &brand_filter()).await.unwrap();

        let other_filter = events.subscribe(&url("a"), &brand_filter()).await.unwrap();

        assert_ne!(other_filter.id, first.id);
    }

    #[tokio::test]
    async fn confirming_with_the_right_token_confirms_the_subscription() {
        let fx = Fixture::embedded().await;
        let events = &fx.ports.events;
        let subscription = events.subscribe(&url("a"), &brand_filter()).await.unwrap();
        let db = rusqlite::Connection::open(fx.sqlite_path().unwrap()).unwrap();
        let token: String = db
            .query_row(
                "SELECT token FROM subscriptions WHERE id = ?1",
                [subscription.id.to_string()],
                |row| row.get(0),
            )
            .unwrap();

        let outcome = events
            .confirm_subscription(subscription.id, &token)
            .await
            .unwrap();

        assert_eq!(outcome, Confirmation::Confirmed);
        let stored = events
            .get_subscription(subscription.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, SubscriptionStatus::Confirmed);
    }
}
