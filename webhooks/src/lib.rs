//! webhooks: delivers job events to bulklink's webhook subscriptions, the same code on both
//! backends. It reads the webhook queue: an event (raw, from the event bus) becomes one
//! recorded delivery per matching subscription, attempted at once; a failed attempt is
//! scheduled again on the same queue (a delayed message) until it succeeds, the receiver
//! says 410 Gone, or the retry window is spent. Every attempt is signed per Standard
//! Webhooks, goes through the egress rules, and never waits on another endpoint.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod lambda;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulklink_core::domain::{
    Delivery, DeliveryId, DeliveryStatus, Event, Replay, RetrySchedule, SendSlot, Subscription,
    SubscriptionId, SubscriptionStatus, WebhookEvent, WebhookMessage,
};
use bulklink_core::lifecycle::{schedule_attempt, schedule_attempt_in_slot};
use bulklink_core::ports::{Ports, Queue, ReceivedMessage, TypedQueue, Webhooks};
use bulklink_core::{Settings, StoreError};
use bulklink_egress::Egress;
use futures::future::join_all;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn, Instrument};

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("bulklink/", env!("CARGO_PKG_VERSION"));
/// An attempt that finds its endpoint busy (at its concurrency cap) waits this long at most
/// for one of its slots: an endpoint that answers at once frees one in milliseconds, so a
/// burst of deliveries to it is sent now rather than sent back to crowd the queue again.
const HOST_WAIT: Duration = Duration::from_secs(1);

/// An attempt that finds its endpoint busy for `HOST_WAIT` (or this deliverer at its cap)
/// goes back on the queue for this long, and up to as long again (spread at random, so
/// that what was sent back together does not come back together).
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Why a message could not be handled. Either way the message is left to be delivered
/// again (`bulklink_lambda::leave_for_redelivery`): one that can never decode reaches the
/// webhook queue's dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("undecodable message: {0}")]
    Undecodable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HandleError {
    /// What the queue policy (`bulklink_lambda::leave_for_redelivery`) makes of it.
    pub fn failure(&self) -> bulklink_lambda::Failure<'_> {
        match self {
            HandleError::Undecodable(_) => bulklink_lambda::Failure::Undecodable(self),
            _ => bulklink_lambda::Failure::Passing(self),
        }
    }
}

/// What handling one message did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub attempted: u32,
    pub delivered: u32,
    pub failed_attempts: u32,
    /// Deliveries given up on (window spent, 410, subscription gone).
    pub given_up: u32,
    /// Attempts put back on the queue because their endpoint was busy.
    pub deferred: u32,
    /// Subscriptions disabled because every delivery failed for days.
    pub disabled: u32,
}

impl Report {
    pub fn add(&mut self, other: Report) {
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.failed_attempts += other.failed_attempts;
        self.given_up += other.given_up;
        self.deferred += other.deferred;
        self.disabled += other.disabled;
    }
}

pub struct Deliverer {
    webhooks: Arc<dyn Webhooks>,
    queue: TypedQueue<WebhookMessage>,
    egress: Egress,
    client: reqwest::Client,
    schedule: RetrySchedule,
    in_flight: Arc<Semaphore>,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    host_limit: usize,
    clock: bulklink_core::Clock,
    /// How long one message may take at most (half the webhook queue's visibility
    /// timeout): a replay hands the rest of its range on before it.
    message_budget: Duration,
    disable_after: Duration,
    /// How long the store has lately taken to answer for a send slot (µs, the longest
    /// lately seen, fading by an eighth an ask): a slow store's attempts ask for slots that
    /// much further off, so that the answer comes back before the slot.
    slot_answer_us: AtomicI64,
}

/// How late in its send slot an attempt may still send (µs): the slots are 5% (50 ms a
/// second) wider than the rate needs, so a send this late never crowds the next one.
const SLOT_LATE_US: i64 = 20_000;

/// A rate-limited subscription's attempt waits in place for a send slot at most this far
/// ahead (µs); past it, it goes back on the queue with the slot kept for it.
const MAX_SLOT_AHEAD_US: i64 = 5_000_000;

/// How far ahead an attempt may be given a send slot (µs): a day, the retry window's
/// default. A backlog longer than that takes no slot; its attempts come back as it shrinks.
const MAX_SLOT_KEPT_US: i64 = 86_400_000_000;

/// An attempt sent back on the queue with a slot kept for it comes back this long before
/// the slot (µs): within `MAX_SLOT_AHEAD_US` of it even when a delayed message takes its
/// whole second longer (delays count whole seconds, rounded up) and some to be received.
const SLOT_RETURN_LEAD_US: i64 = 3_000_000;

/// Events one step of a replay reads at a time.
const REPLAY_PAGE: usize = 100;
/// A replay hands over this long before its budget ends: one attempt's timeout and some.
const REPLAY_MARGIN: Duration = Duration::from_secs(12);

impl Deliverer {
    pub fn new(ports: &Ports, egress: Egress, settings: &Settings) -> Result<Self, StoreError> {
        let client = egress
            .client(USER_AGENT)
            .map_err(|e| StoreError::internal(format!("HTTP client: {e}")))?;
        Ok(Deliverer {
            webhooks: ports.webhooks.clone(),
            queue: ports.webhook_queue.clone(),
            egress,
            client,
            schedule: RetrySchedule {
                window: settings.webhook_retry_window,
            },
            in_flight: Arc::new(Semaphore::new(settings.webhook_concurrency)),
            per_host: Mutex::new(HashMap::new()),
            host_limit: settings.webhook_host_concurrency,
            clock: ports.clock.clone(),
            message_budget: settings.webhook_visibility_timeout / 2,
            disable_after: settings.webhook_disable_after,
            slot_answer_us: AtomicI64::new(0),
        })
    }

    /// Handles one message of the webhook queue. `Ok`: delete it.
    pub async fn handle(&self, body: &str) -> Result<Report, HandleError> {
        self.handle_by(body, None).await
    }

    /// [`Deliverer::handle`], a replay handing the rest of its range on before `deadline`.
    pub async fn handle_by(
        &self,
        body: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Report, HandleError> {
        match WebhookMessage::decode(body).map_err(|e| HandleError::Undecodable(e.to_string()))? {
            WebhookMessage::Event(event) => {
                let span = tracing::info_span!("webhook_event", event_id = %event.event_id(), event = event.event_type().as_str());
                self.dispatch(event).instrument(span).await
            }
            WebhookMessage::Attempt {
                subscription_id,
                delivery_id,
                attempts,
                send_slot,
            } => {
                let span = tracing::info_span!("webhook_attempt", delivery_id = %delivery_id);
                self.scheduled(subscription_id, delivery_id, attempts, send_slot)
                    .instrument(span)
                    .await
            }
            WebhookMessage::Replay(replay) => {
                let span = tracing::info_span!("webhook_replay", subscription_id = %replay.subscription_id);
                let budget_end = tokio::time::Instant::now() + self.message_budget;
                let deadline = deadline.map_or(budget_end, |d| d.min(budget_end));
                self.replay(replay, deadline).instrument(span).await
            }
        }
    }

    /// A step of a replay: the subscription's brand's events of the range after where it
    /// got to, each wanted one sent again now (its delivery made if there is none), one
    /// after another in order of occurrence; what is left goes on in a new message before
    /// `deadline`.
    async fn replay(
        &self,
        mut replay: Replay,
        deadline: tokio::time::Instant,
    ) -> Result<Report, HandleError> {
        let mut total = Report::default();
        let Some(subscription) = self
            .webhooks
            .get_subscription(replay.subscription_id)
            .await?
            .filter(|s| s.status == SubscriptionStatus::Active)
        else {
            info!("replay stopped: the subscription is gone or disabled");
            return Ok(total);
        };
        let margin = REPLAY_MARGIN.min(self.message_budget / 2);
        let mut passed = 0usize;
        // One read range for this message's pages (their cursors continue it).
        let from = replay.read_from();
        let mut cursor = None;
        loop {
            let page = self
                .webhooks
                .page_brand_events(
                    subscription.brand_id,
                    from,
                    replay.until,
                    cursor.as_ref(),
                    REPLAY_PAGE,
                )
                .await?;
            let ahead: Vec<Event> = page
                .items
                .into_iter()
                .filter(|e| replay.is_ahead(e))
                .collect();
            for event in ahead {
                // At least one event a message, however short its time.
                if passed > 0 && tokio::time::Instant::now() + margin >= deadline {
                    self.queue
                        .send(&WebhookMessage::Replay(replay.clone()))
                        .await?;
                    info!(sent = total.attempted, "replay handed on");
                    return Ok(total);
                }
                if subscription.wants(&event) {
                    total.add(self.send_again(&subscription, &event).await?);
                }
                replay.after = Some((event.occurred_at(), event.event_id()));
                passed += 1;
            }
            cursor = page.next;
            if cursor.is_none() {
                info!(sent = total.attempted, "replay done");
                return Ok(total);
            }
        }
    }

    /// `event`'s delivery to `subscription` (made if it has none; its `webhook-id` is the
    /// original), attempted again now.
    async fn send_again(
        &self,
        subscription: &Subscription,
        event: &Event,
    ) -> Result<Report, StoreError> {
        let now = self.clock.now();
        let delivery = self
            .webhooks
            .create_delivery(&Delivery::new(event, subscription, now))
            .await?;
        if delivery.event_id != event.event_id() {
            // A `job.progress` thinned out: its window's delivery is another event's.
            return Ok(Report::default());
        }
        let expected = delivery.attempts;
        let delivery = delivery.due_again(now);
        if !self.webhooks.update_delivery(&delivery, expected).await? {
            // An attempt of it is under way: that one sends it.
            return Ok(Report::default());
        }
        self.attempt(subscription.clone(), delivery).await
    }

    /// An event: kept in its brand's event log (what replays read), then one delivery per
    /// matching subscription (kept if it exists: a replayed event finds its deliveries),
    /// each due one attempted now. A `job.progress` whose
    /// subscription's window has a delivery of another event already adds nothing.
    async fn dispatch(&self, event: Event) -> Result<Report, HandleError> {
        self.webhooks.record_event(&event).await?;
        let now = self.clock.now();
        let mut wanted = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .webhooks
                .page_brand_subscriptions(event.brand_id(), cursor.as_ref(), 1_000)
                .await?;
            wanted.extend(page.items.into_iter().filter(|s| s.wants(&event)));
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        let mut due = Vec::new();
        for subscription in wanted {
            let delivery = self
                .webhooks
                .create_delivery(&Delivery::new(&event, &subscription, now))
                .await?;
            // A delivery of another event: a `job.progress` whose window already has one
            // (sent by whoever made it; this event is thinned out).
            if delivery.event_id == event.event_id() && delivery.is_due(now) {
                due.push((subscription, delivery));
            }
        }
        let reports = join_all(due.into_iter().map(|(s, d)| self.attempt(s, d))).await;
        let mut total = Report::default();
        for report in reports {
            total.add(report?);
        }
        if total.attempted > 0 || total.deferred > 0 {
            info!(
                attempted = total.attempted,
                delivered = total.delivered,
                deferred = total.deferred,
                "event dispatched to webhooks"
            );
        }
        Ok(total)
    }

    /// A scheduled attempt: made if the delivery still stands where the message left it.
    async fn scheduled(
        &self,
        subscription_id: SubscriptionId,
        delivery_id: DeliveryId,
        attempts: u32,
        send_slot: Option<i64>,
    ) -> Result<Report, HandleError> {
        let Some(delivery) = self
            .webhooks
            .get_delivery(subscription_id, delivery_id)
            .await?
        else {
            return Ok(Report::default());
        };
        if delivery.status != DeliveryStatus::Pending || delivery.attempts != attempts {
            // Another attempt was recorded after this message was sent.
            return Ok(Report::default());
        }
        let now = self.clock.now();
        if let Some(at) = delivery.next_attempt_at.filter(|at| *at > now) {
            // Waits longer than one delayed message can: send it on (its slot with it).
            let wait = (at - now).to_std().unwrap_or_default();
            schedule_attempt_in_slot(&self.queue, &delivery, wait, send_slot).await?;
            return Ok(Report::default());
        }
        match self.webhooks.get_subscription(subscription_id).await? {
            Some(subscription) => self
                .attempt_in_slot(subscription, delivery, send_slot)
                .await
                .map_err(Into::into),
            None => self
                .give_up(delivery, "the subscription was deleted")
                .await
                .map_err(Into::into),
        }
    }

    async fn give_up(&self, mut delivery: Delivery, why: &str) -> Result<Report, StoreError> {
        let expected = delivery.attempts;
        delivery.status = DeliveryStatus::Failed;
        delivery.next_attempt_at = None;
        delivery.last_error = Some(why.to_owned());
        self.webhooks.update_delivery(&delivery, expected).await?;
        Ok(Report {
            given_up: 1,
            ..Default::default()
        })
    }

    fn host_slots(&self, subscription: &Subscription) -> Arc<Semaphore> {
        let host = url_authority(subscription.url.as_str());
        let mut map = self
            .per_host
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.host_limit)))
            .clone()
    }

    /// After a failed attempt at `now`: the subscription's failing streak (started now if
    /// none; one conditional write a failed attempt), and if it has lasted
    /// `webhook_disable_after`, the subscription disabled, the brand's other subscriptions
    /// told (`webhook.disabled`), and why.
    async fn failing_too_long(
        &self,
        subscription: &Subscription,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, StoreError> {
        // The stored streak, not the one read with the subscription: a success since may
        // have ended it.
        let Some(since) = self.webhooks.record_failing(subscription.id, now).await? else {
            return Ok(None);
        };
        let after = chrono::Duration::from_std(self.disable_after).unwrap_or(chrono::Duration::MAX);
        if now - since < after {
            return Ok(None);
        }
        let reason = format!(
            "every delivery failed for {} days (since {})",
            after.num_days(),
            since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        self.webhooks
            .disable_subscription(subscription.id, &reason)
            .await?;
        warn!(subscription_id = %subscription.id, %reason, "webhook subscription disabled");
        let told =
            WebhookEvent::disabled(subscription.brand_id, subscription.id, &reason, since, now);
        self.queue
            .send(&WebhookMessage::Event(Event::Webhook(told)))
            .await?;
        Ok(Some(reason))
    }

    /// Puts an attempt back on the queue for `wait`, with the send slot kept for it if any.
    /// When it comes back more than a minute after the time its record says, the record is
    /// moved too, so the sweeper never takes a delivery that waits its turn for a lost one
    /// (and sends it twice).
    async fn defer(
        &self,
        mut delivery: Delivery,
        wait: Duration,
        send_slot: Option<i64>,
    ) -> Result<Report, StoreError> {
        let back =
            self.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
        let recorded = delivery.next_attempt_at.unwrap_or(back);
        if back - recorded > chrono::Duration::seconds(60) {
            let expected = delivery.attempts;
            delivery.next_attempt_at = Some(back);
            if !self.webhooks.update_delivery(&delivery, expected).await? {
                // Another attempt got there first: its record and schedule stand.
                return Ok(Report::default());
            }
        }
        schedule_attempt_in_slot(&self.queue, &delivery, wait, send_slot).await?;
        Ok(Report {
            deferred: 1,
            ..Default::default()
        })
    }

    /// Takes one of the endpoint's slots (waiting `host_wait` at most) and one of this
    /// deliverer's (without waiting: one slow endpoint must not hold the others back).
    async fn slots(
        &self,
        subscription: &Subscription,
        host_wait: Duration,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let host = tokio::time::timeout(host_wait, self.host_slots(subscription).acquire_owned())
            .await
            .ok()?
            .ok()?;
        let global = self.in_flight.clone().try_acquire_owned().ok()?;
        Some((host, global))
    }

    /// The subscription's next send slot for an attempt asking at `now_us`: one the store's
    /// answer can come back before. A slot's lead (`SEND_SLOT_LEAD_US`) covers a store that
    /// answers in milliseconds; one answering slower (a loaded DynamoDB, or its emulator)
    /// is asked as if it were later by twice its recent answer time past that lead.
    /// Otherwise every answer would come after its slot, and each attempt, sent back to ask
    /// again, would find the same.
    async fn take_send_slot(
        &self,
        id: bulklink_core::domain::SubscriptionId,
        now_us: i64,
        spacing_us: i64,
    ) -> Result<Option<SendSlot>, StoreError> {
        let lag = self.slot_answer_us.load(Ordering::Relaxed);
        let extra =
            (2 * lag - bulklink_core::domain::SEND_SLOT_LEAD_US).clamp(0, MAX_SLOT_AHEAD_US / 2);
        let slot = self
            .webhooks
            .take_send_slot(id, now_us + extra, spacing_us, MAX_SLOT_KEPT_US)
            .await?;
        let took = (self.clock.now().timestamp_micros() - now_us).max(0);
        let _ = self
            .slot_answer_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                Some(took.max(seen - seen / 8))
            });
        Ok(slot)
    }

    /// How long an attempt that found no slot goes back on the queue for.
    fn busy_retry() -> Duration {
        BUSY_RETRY.mul_f64(1.0 + rand::random::<f64>())
    }

    /// One attempt of `delivery`, recorded; the next one scheduled if it failed.
    async fn attempt(
        &self,
        subscription: Subscription,
        delivery: Delivery,
    ) -> Result<Report, StoreError> {
        self.attempt_in_slot(subscription, delivery, None).await
    }

    /// [`Deliverer::attempt`] in `send_slot` if one was kept for it and is not past.
    async fn attempt_in_slot(
        &self,
        subscription: Subscription,
        mut delivery: Delivery,
        send_slot: Option<i64>,
    ) -> Result<Report, StoreError> {
        if subscription.status != bulklink_core::domain::SubscriptionStatus::Active {
            return self.give_up(delivery, "the subscription is disabled").await;
        }
        if let Some(spacing) = subscription.send_spacing_us() {
            // A rate-limited subscription: its send slot first (waiting for it holds no
            // concurrency slot). Each attempt asks for a slot once: one far ahead is kept
            // for it while it waits on the queue, so a backlog of n deliveries costs n
            // asks, not a crowd asking again every second until each is within reach.
            let now_us = self.clock.now().timestamp_micros();
            let kept = send_slot.filter(|slot| now_us <= slot + SLOT_LATE_US);
            let at = match kept {
                Some(slot) => slot,
                None => match self
                    .take_send_slot(subscription.id, now_us, spacing)
                    .await?
                {
                    None => return self.give_up(delivery, "the subscription was deleted").await,
                    Some(SendSlot::Busy { free_at }) => {
                        // Spread, never dropped: back once the backlog is within reach.
                        let wait = (free_at - now_us - MAX_SLOT_KEPT_US).max(1_000_000);
                        return self
                            .defer(delivery, Duration::from_micros(wait as u64), None)
                            .await;
                    }
                    Some(SendSlot::At { at, .. }) => at,
                },
            };
            let answered = self.clock.now().timestamp_micros();
            if at - answered > MAX_SLOT_AHEAD_US {
                // Back on the queue, the slot kept for it: it returns shortly before.
                let wait = (at - answered - SLOT_RETURN_LEAD_US) as u64;
                return self
                    .defer(delivery, Duration::from_micros(wait), Some(at))
                    .await;
            }
            if answered < at {
                tokio::time::sleep(Duration::from_micros((at - answered) as u64)).await;
            }
            if self.clock.now().timestamp_micros() > at + SLOT_LATE_US {
                // The store answered, or this task woke, after the slot began: sending
                // now could crowd the next one. Let the slot go; try again (asking for a
                // slot further off: the slow answer was noted).
                return self.defer(delivery, Self::busy_retry(), None).await;
            }
        }
        // In its send slot, a rate-limited attempt cannot wait for the endpoint: later
        // would crowd the next slot.
        let host_wait = match subscription.send_spacing_us() {
            Some(_) => Duration::ZERO,
            None => HOST_WAIT,
        };
        let Some(slots) = self.slots(&subscription, host_wait).await else {
            // Busy endpoint (or deliverer): come back shortly rather than hold this message
            // and everything behind it.
            return self.defer(delivery, Self::busy_retry(), None).await;
        };
        let now = self.clock.now();
        let id = delivery.id.to_string();
        let timestamp = now.timestamp();
        let signature = subscription
            .signing_secrets(now)
            .iter()
            .map(|secret| secret.sign(&id, timestamp, &delivery.body))
            .collect::<Vec<_>>()
            .join(" ");
        let headers = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
            ("content-type", "application/json".to_owned()),
        ];
        let result = self
            .egress
            .post(
                &self.client,
                &subscription.url,
                &headers,
                delivery.body.clone(),
            )
            .await;
        // The endpoint's and the deliverer's slots bound requests in flight: recording
        // the answer needs neither.
        drop(slots);

        let expected = delivery.attempts;
        delivery.attempts += 1;
        delivery.first_attempt_at.get_or_insert(now);
        delivery.last_attempt_at = Some(now);
        let mut report = Report {
            attempted: 1,
            ..Default::default()
        };
        let mut retry_after = None;
        match &result {
            Ok(answer) if answer.delivered() => {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.last_status_code = Some(answer.status);
                delivery.last_error = None;
                delivery.next_attempt_at = None;
                report.delivered = 1;
                if subscription.failing_since.is_some() {
                    self.webhooks.clear_failing(subscription.id).await?;
                }
            }
            Ok(answer) if answer.status == 410 => {
                delivery.status = DeliveryStatus::Failed;
                delivery.last_status_code = Some(410);
                delivery.last_error = Some("410 Gone: the subscription is now disabled".into());
                delivery.next_attempt_at = None;
                self.webhooks
                    .disable_subscription(subscription.id, "the receiver answered 410 Gone")
                    .await?;
                warn!(subscription_id = %subscription.id, "receiver answered 410 Gone; subscription disabled");
                report.given_up = 1;
            }
            Ok(answer) => {
                delivery.last_status_code = Some(answer.status);
                delivery.last_error = Some(if answer.body_excerpt.is_empty() {
                    format!("HTTP {}", answer.status)
                } else {
                    format!("HTTP {}: {}", answer.status, answer.body_excerpt)
                });
                retry_after = answer.retry_after;
            }
            Err(e) => {
                delivery.last_status_code = None;
                delivery.last_error = Some(e.to_string());
            }
        }
        if delivery.status == DeliveryStatus::Pending {
            report.failed_attempts = 1;
            if let Some(reason) = self.failing_too_long(&subscription, now).await? {
                delivery.status = DeliveryStatus::Failed;
                delivery.next_attempt_at = None;
                delivery.last_error = Some(format!(
                    "{}; the subscription is now disabled: {reason}",
                    delivery.last_error.as_deref().unwrap_or("failed")
                ));
                report.given_up = 1;
                report.disabled = 1;
            }
        }
        if delivery.status == DeliveryStatus::Pending {
            let first = delivery.first_attempt_at.unwrap_or(now);
            match self.schedule.next_attempt(
                first,
                now,
                delivery.attempts,
                retry_after,
                rand::random::<f64>(),
            ) {
                Some(at) => delivery.next_attempt_at = Some(at),
                None => {
                    delivery.status = DeliveryStatus::Failed;
                    delivery.next_attempt_at = None;
                    report.given_up = 1;
                }
            }
        }
        if !self.webhooks.update_delivery(&delivery, expected).await? {
            // Another attempt of the same delivery got there first; its record stands.
            return Ok(report);
        }
        match delivery.status {
            DeliveryStatus::Succeeded => {
                info!(delivery_id = %delivery.id, attempts = delivery.attempts, "webhook delivered")
            }
            DeliveryStatus::Failed => warn!(
                delivery_id = %delivery.id,
                attempts = delivery.attempts,
                error = delivery.last_error.as_deref().unwrap_or_default(),
                "webhook delivery given up"
            ),
            DeliveryStatus::Pending => {
                let wait = delivery
                    .next_attempt_at
                    .map(|at| (at - self.clock.now()).to_std().unwrap_or_default())
                    .unwrap_or_default();
                warn!(
                    delivery_id = %delivery.id,
                    attempts = delivery.attempts,
                    error = delivery.last_error.as_deref().unwrap_or_default(),
                    retry_in_secs = wait.as_secs(),
                    "webhook attempt failed; will retry"
                );
                // Dying between the record above and this leaves no message: the sweeper
                // reschedules overdue deliveries.
                schedule_attempt(&self.queue, &delivery, wait).await?;
            }
        }
        Ok(report)
    }
}

/// `scheme://host:port` of a URL: the unit of the per-endpoint concurrency cap.
fn url_authority(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}")
}

/// Messages the deliverer handles side by side: a slow endpoint holds only its own.
const MESSAGES_IN_FLIGHT: usize = 64;

/// The deliverer as a queue consumer (`bulklink_lambda`'s SQS driver and local loop).
impl bulklink_lambda::Consumer for Deliverer {
    type Done = Report;
    type Error = HandleError;

    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn side_by_side(&self) -> usize {
        MESSAGES_IN_FLIGHT
    }

    /// Each attempt is bounded by its own timeout; the deadline does not shorten it.
    async fn handle(
        &self,
        message: &ReceivedMessage,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Report, HandleError> {
        self.handle_by(&message.body, deadline).await
    }

    fn failure(error: &HandleError) -> bulklink_lambda::Failure<'_> {
        error.failure()
    }
}

/// The local runner: receives from the webhook queue until `shutdown`, handling messages
/// side by side, deleting the handled ones.
pub async fn run_queue_loop(
    deliverer: Arc<Deliverer>,
    queue: Arc<dyn Queue>,
    shutdown: watch::Receiver<bool>,
) {
    bulklink_lambda::run_queue_loop(deliverer, queue, None, shutdown).await
}
