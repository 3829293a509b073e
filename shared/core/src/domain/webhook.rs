//! Webhooks as bulklink's own resources: subscriptions of a brand, their signing secrets,
//! deliveries and their attempts, signed per the Standard Webhooks specification (v1).
//! Pure, no IO.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{BrandId, DomainError, Event, EventType, JobId, SubscriptionId, WebhookUrl};

/// A signing secret: `whsec_` + base64 of the key bytes (the Standard Webhooks form).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookSecret(String);

impl WebhookSecret {
    const PREFIX: &'static str = "whsec_";
    /// Key bytes of a new secret (the specification asks for 24 to 64).
    const NEW_BYTES: usize = 32;

    pub fn generate() -> Self {
        let mut key = [0u8; Self::NEW_BYTES];
        rand::fill(&mut key[..]);
        WebhookSecret(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.0[Self::PREFIX.len()..])
            .unwrap_or_default()
    }

    /// `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key()).expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl FromStr for WebhookSecret {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s
            .strip_prefix(Self::PREFIX)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
        match key {
            Some(key) if (24..=64).contains(&key.len()) => Ok(WebhookSecret(s.to_owned())),
            _ => Err(DomainError::Corrupt(
                "a webhook secret is whsec_ and the base64 of 24 to 64 bytes".into(),
            )),
        }
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = DomainError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<WebhookSecret> for String {
    fn from(s: WebhookSecret) -> String {
        s.0
    }
}

/// Why a delivery does not verify (the receiving side of `WebhookSecret::sign`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is more than 5 minutes away from now")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// Checks a delivery as a receiver does: a signature in `signatures` (space-separated
/// `v1,…`) by one of `secrets`, a timestamp within 5 minutes of `now`.
pub fn verify(
    secrets: &[&WebhookSecret],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let id = id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signatures = signatures.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now.timestamp() - ts).abs() > 5 * 60 {
        return Err(VerifyError::Stale);
    }
    let sent: Vec<&str> = signatures.split(' ').collect();
    let found = secrets.iter().any(|secret| {
        let expected = secret.sign(id, ts, body);
        sent.iter()
            .any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
    });
    if found {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which events a subscription receives; every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionFilter {
    /// Only this job's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_id: Option<BrandId>,
    /// Only events of these types (`GET /webhooks/event-types`); every type when absent.
    /// `events` is read as the same field (its name before this one).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "events")]
    pub event_types: Option<Vec<EventType>>,
}
crate::json_object_only!(SubscriptionFilter, serialize);

impl SubscriptionFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.job_id.is_none_or(|id| Some(id) == event.job_id())
            && self.brand_id.is_none_or(|id| id == event.brand_id())
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type()))
    }
}

/// `disabled` once the receiver answered 410 Gone, or every delivery failed for days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionStatus {
    Active,
    /// Nothing more is sent (`disabledReason` says why) until it is enabled again.
    Disabled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for SubscriptionStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(SubscriptionStatus::Active),
            "disabled" => Ok(SubscriptionStatus::Disabled),
            other => Err(DomainError::Corrupt(format!(
                "unknown subscription status '{other}'"
            ))),
        }
    }
}

/// After a rotation the previous secret signs too, for this long.
pub const PREVIOUS_SECRET_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// A webhook subscription, a resource of one brand.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub brand_id: BrandId,
    pub url: WebhookUrl,
    /// Always pinned to `brand_id`.
    pub filter: SubscriptionFilter,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub status: SubscriptionStatus,
    pub secret: WebhookSecret,
    /// The secret before the last rotation and until when it still signs.
    pub previous_secret: Option<(WebhookSecret, DateTime<Utc>)>,
    /// `job.progress` is sent to it, at most once per job in each window of this many
    /// seconds (none without it).
    pub progress_every_seconds: Option<u32>,
    /// At most this many attempts a second are sent to it, spread out (none: no limit).
    pub rate_limit_per_sec: Option<u32>,
    /// Since when every attempt to it has failed (cleared by a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
}

/// The bounds of `progressEverySeconds`.
pub const PROGRESS_EVERY_SECONDS: std::ops::RangeInclusive<u32> = 1..=86_400;
/// The bounds of `rateLimitPerSec`.
pub const RATE_LIMIT_PER_SEC: std::ops::RangeInclusive<u32> = 1..=1_000;

/// A rate-limited subscription's send slots: each attempt takes the next one, `spacing`
/// after the one before and never before now. Times in microseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendSlot {
    /// Send at this time; the subscription's next slot is now `next`.
    At { at: i64, next: i64 },
    /// The next free slot is this far ahead or more: nothing was taken; come back later.
    Busy { free_at: i64 },
}

/// A send slot is never sooner than this after it is asked for (µs): the store's answer
/// comes back before its slot, and an attempt whose answer came too late for it does not
/// send in it.
pub const SEND_SLOT_LEAD_US: i64 = 250_000;

impl SendSlot {
    /// The slot after `stored_next` (the subscription's next free slot, if it has one) for
    /// an attempt asking at `now`: `SEND_SLOT_LEAD_US` from now at the soonest, taken only
    /// if it is at most `max_ahead` away.
    pub fn plan(stored_next: Option<i64>, now: i64, spacing: i64, max_ahead: i64) -> SendSlot {
        let soonest = now + SEND_SLOT_LEAD_US;
        let at = stored_next.unwrap_or(soonest).max(soonest);
        if at - now > max_ahead {
            SendSlot::Busy { free_at: at }
        } else {
            SendSlot::At {
                at,
                next: at + spacing,
            }
        }
    }
}

impl Subscription {
    /// The time between two sends to it, in microseconds: 5% over `1 / rate`, so that no
    /// second, however a receiver counts it, sees more than `rate` even when one request
    /// takes up to 50 ms longer on its way than another.
    pub fn send_spacing_us(&self) -> Option<i64> {
        self.rate_limit_per_sec
            .map(|rate| (1_050_000 + i64::from(rate.max(1)) - 1) / i64::from(rate.max(1)))
    }
}

impl Subscription {
    pub fn new(
        id: SubscriptionId,
        brand_id: BrandId,
        url: WebhookUrl,
        mut filter: SubscriptionFilter,
        description: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        filter.brand_id = Some(brand_id);
        Subscription {
            id,
            brand_id,
            url,
            filter,
            description,
            created_at: now,
            status: SubscriptionStatus::Active,
            secret: WebhookSecret::generate(),
            previous_secret: None,
            progress_every_seconds: None,
            rate_limit_per_sec: None,
            failing_since: None,
            disabled_reason: None,
        }
    }

    /// The subscription a job's `callbackUrl` makes: one per job, so a replayed request
    /// finds the same one (and its secret).
    pub fn for_callback(
        job: JobId,
        brand_id: BrandId,
        url: WebhookUrl,
        now: DateTime<Utc>,
    ) -> Self {
        let id = Self::callback_id(job);
        let filter = SubscriptionFilter {
            job_id: Some(job),
            ..Default::default()
        };
        Subscription::new(
            id,
            brand_id,
            url,
            filter,
            Some(format!("callbackUrl of job {job}")),
            now,
        )
    }

    fn callback_id(job: JobId) -> SubscriptionId {
        SubscriptionId::from_uuid(Uuid::new_v5(
            &CALLBACK_NAMESPACE,
            job.to_string().as_bytes(),
        ))
    }

    /// A job's `callbackUrl` (`for_callback`): it hears the job's outcome only, as it always
    /// has (`EventType::OUTCOMES`), whatever types are added.
    pub fn is_callback(&self) -> bool {
        self.filter
            .job_id
            .is_some_and(|job| self.id == Self::callback_id(job))
    }

    /// The secrets that sign at `now`: the current one, and the previous one in its grace.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&WebhookSecret> {
        let mut secrets = vec![&self.secret];
        if let Some((previous, until)) = &self.previous_secret {
            if *until > now {
                secrets.push(previous);
            }
        }
        secrets
    }

    /// Receives `event`? A test send goes to the subscription it names only, whatever its
    /// filter; `job.progress` only to a subscription that set `progressEverySeconds`.
    pub fn wants(&self, event: &Event) -> bool {
        if self.status != SubscriptionStatus::Active || self.brand_id != event.brand_id() {
            return false;
        }
        match event {
            Event::Webhook(e) if e.event_type == EventType::WebhookTest => e.webhook_id == self.id,
            Event::Webhook(e) => e.webhook_id != self.id && self.filter.matches(event),
            Event::Job(e) if self.is_callback() => {
                EventType::OUTCOMES.contains(&e.event_type) && self.filter.matches(event)
            }
            Event::Job(e) => {
                (e.event_type != EventType::JobProgress || self.progress_every_seconds.is_some())
                    && self.filter.matches(event)
            }
            // A callback's filter names its job: it hears no offer's event.
            Event::Offer(_) => self.filter.matches(event),
        }
    }
}

const CALLBACK_NAMESPACE: Uuid = Uuid::from_u128(0x3c0d_55a1_7e0b_4f6a_9d0c_2b8f_71e4_c002);

/// A delivery's id: the same for every attempt (it is the `webhook-id`), derived from the
/// event and the subscription so that a replayed event finds its delivery, and ordered by
/// the event's time (UUID v7 layout) so that lists are newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeliveryId(Uuid);

impl DeliveryId {
    pub fn of(event: &Event, subscription: SubscriptionId) -> Self {
        Self::named(
            &event.event_id().to_string(),
            event.occurred_at(),
            subscription,
        )
    }

    /// The id of the one `job.progress` delivery of `job` to `subscription` in the window of
    /// `every` seconds holding `at`: the events of one window find one delivery.
    pub fn progress(
        job: JobId,
        at: DateTime<Utc>,
        every: u32,
        subscription: SubscriptionId,
    ) -> Self {
        let every_ms = i64::from(every.max(1)) * 1_000;
        let window = at.timestamp_millis().max(0) / every_ms;
        let start = DateTime::from_timestamp_millis(window * every_ms).unwrap_or(at);
        Self::named(
            &format!("{job}:job.progress:{every}:{window}"),
            start,
            subscription,
        )
    }

    fn named(name: &str, at: DateTime<Utc>, subscription: SubscriptionId) -> Self {
        let digest = Sha256::digest(format!("{name}:{subscription}"));
        let millis = at.timestamp_millis().max(0) as u64;
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        DeliveryId(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for DeliveryId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^msg_[0-9a-fA-F]{32}$"))
            .description(Some(
                "A delivery's id: its `webhook-id`, the same on every attempt",
            ))
            .examples([serde_json::json!("msg_0190a0b0c0d07e0f8a0b0c0d0e0f1011")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for DeliveryId {}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "msg_{}", self.0.simple())
    }
}

impl FromStr for DeliveryId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("msg_")
            .and_then(|hex| Uuid::try_parse(hex).ok())
            .map(DeliveryId)
            .ok_or_else(|| DomainError::InvalidId {
                kind: "deliveryId",
                value: s.chars().take(80).collect(),
            })
    }
}

impl TryFrom<String> for DeliveryId {
    type Error = DomainError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeliveryId> for String {
    fn from(id: DeliveryId) -> String {
        id.to_string()
    }
}

/// `pending` until delivered (`succeeded`) or given up (`failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted again at `next_attempt_at`.
    Pending,
    Succeeded,
    /// Given up: the retry window passed, or the subscription went away or said 410.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(DomainError::Corrupt(format!(
                "unknown delivery status '{other}'"
            ))),
        }
    }
}

/// How long delivery records are kept.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long a brand's events are kept for replays: as long as its deliveries.
pub const EVENT_RETENTION: Duration = DELIVERY_RETENTION;

/// One event on its way to one subscription, with the story of its attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: DeliveryId,
    pub subscription_id: SubscriptionId,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The job of a job's event (absent for a subscription's own, such as `webhook.test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    pub brand_id: BrandId,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The JSON body every attempt sends (the same bytes each time).
    #[serde(skip_serializing)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub body: String,
}

impl Delivery {
    pub fn new(event: &Event, subscription: &Subscription, now: DateTime<Utc>) -> Self {
        let id = match (event, subscription.progress_every_seconds) {
            (Event::Job(e), Some(every)) if e.event_type == EventType::JobProgress => {
                DeliveryId::progress(e.job_id, e.occurred_at, every, subscription.id)
            }
            _ => DeliveryId::of(event, subscription.id),
        };
        Delivery {
            id,
            subscription_id: subscription.id,
            event_id: event.event_id(),
            event_type: event.event_type(),
            job_id: event.job_id(),
            brand_id: event.brand_id(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            next_attempt_at: Some(now),
            created_at: now,
            body: payload(event),
        }
    }

    /// Due for an attempt at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status == DeliveryStatus::Pending && self.next_attempt_at.is_none_or(|at| at <= now)
    }

    /// The delivery to send again at `now`, whatever its state (a redelivery, a replay):
    /// pending and due, its attempts kept (the count its update is conditional on).
    pub fn due_again(mut self, now: DateTime<Utc>) -> Delivery {
        self.status = DeliveryStatus::Pending;
        self.next_attempt_at = Some(now);
        self
    }
}

/// The body of a delivery: `{ type, timestamp, data }` (Standard Webhooks' payload shape).
pub fn payload(event: &Event) -> String {
    payload_value(event).to_string()
}

/// [`payload`] as JSON.
pub fn payload_value(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "type": event.event_type().as_str(),
        "timestamp": event.occurred_at().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": event,
    })
}

/// When failed deliveries are tried again: soon at first (the first three retries within
/// two minutes), then less often, never more than an hour apart, for `window` after the
/// first attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetrySchedule {
    pub window: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            window: Duration::from_secs(24 * 3_600),
        }
    }
}

/// Waits after the 1st, 2nd, … failed attempt (the last repeats).
const BACKOFF_SECS: [u64; 7] = [5, 30, 60, 300, 900, 1_800, 3_600];
const MAX_WAIT: Duration = Duration::from_secs(3_600);

impl RetrySchedule {
    /// The wait after the `attempts`-th failed attempt: the receiver's `Retry-After` if it
    /// sent one (at most an hour), else the backoff with ±10% jitter (`jitter` in [0, 1)).
    pub fn wait_after(&self, attempts: u32, retry_after: Option<u64>, jitter: f64) -> Duration {
        if let Some(secs) = retry_after {
            return Duration::from_secs(secs.max(1)).min(MAX_WAIT);
        }
        let index = (attempts.max(1) as usize - 1).min(BACKOFF_SECS.len() - 1);
        let base = BACKOFF_SECS[index] as f64;
        Duration::from_secs_f64(base * (0.9 + 0.2 * jitter.clamp(0.0, 1.0))).min(MAX_WAIT)
    }

    /// When to try again after a failed attempt at `now`, or `None` once the window since
    /// the first attempt is spent.
    pub fn next_attempt(
        &self,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        attempts: u32,
        retry_after: Option<u64>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        let wait =
            chrono::Duration::from_std(self.wait_after(attempts, retry_after, jitter)).ok()?;
        let window = chrono::Duration::from_std(self.window).ok()?;
        let at = now + wait;
        (at <= first_attempt_at + window).then_some(at)
    }
}

/// What the webhook queue carries: events (from the event bus, raw) and scheduled attempts.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookMessage {
    Event(Event),
    /// Try this delivery, if it still has `attempts` attempts behind it; in `send_slot`
    /// (µs since the epoch) if a rate-limited subscription's slot was kept for it.
    Attempt {
        subscription_id: SubscriptionId,
        delivery_id: DeliveryId,
        attempts: u32,
        send_slot: Option<i64>,
    },
    /// Send the subscription's brand's events of `[since, until)` to it again, in order of
    /// occurrence, from `after` on (`POST /webhooks/{id}/replay`).
    Replay(Replay),
}

/// A replay on its way: where it has got to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replay {
    pub subscription_id: SubscriptionId,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The last event sent (its time and id): the replay goes on after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl Replay {
    /// Is `event` (of the range) still to come?
    pub fn is_ahead(&self, event: &Event) -> bool {
        self.after
            .is_none_or(|(at, id)| (event.occurred_at(), event.event_id()) > (at, id))
    }

    /// Where the replay's next read of the brand's events starts.
    pub fn read_from(&self) -> DateTime<Utc> {
        self.after.map_or(self.since, |(at, _)| at.max(self.since))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplayEnvelope {
    replay: Replay,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttemptBody {
    subscription_id: SubscriptionId,
    delivery_id: DeliveryId,
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    send_slot: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttemptEnvelope {
    attempt: AttemptBody,
}

impl WebhookMessage {
    pub fn encode(&self) -> String {
        match self {
            WebhookMessage::Event(event) => serde_json::to_string(event).unwrap_or_default(),
            WebhookMessage::Attempt {
                subscription_id,
                delivery_id,
                attempts,
                send_slot,
            } => serde_json::to_string(&AttemptEnvelope {
                attempt: AttemptBody {
                    subscription_id: *subscription_id,
                    delivery_id: *delivery_id,
                    attempts: *attempts,
                    send_slot: *send_slot,
                },
            })
            .unwrap_or_default(),
            WebhookMessage::Replay(replay) => serde_json::to_string(&ReplayEnvelope {
                replay: replay.clone(),
            })
            .unwrap_or_default(),
        }
    }

    pub fn decode(body: &str) -> Result<Self, DomainError> {
        if let Ok(ReplayEnvelope { replay }) = serde_json::from_str(body) {
            return Ok(WebhookMessage::Replay(replay));
        }
        if let Ok(AttemptEnvelope { attempt }) = serde_json::from_str(body) {
            return Ok(WebhookMessage::Attempt {
                subscription_id: attempt.subscription_id,
                delivery_id: attempt.delivery_id,
                attempts: attempt.attempts,
                send_slot: attempt.send_slot,
            });
        }
        let value: serde_json::Value = serde_json::from_str(body).map_err(|e| {
            DomainError::BadMessage(format!("not an event or a delivery attempt: {e}"))
        })?;
        Event::from_json(value).map(WebhookMessage::Event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instant the tests' jobs and events are made at: fixed, so nothing ages.
    fn at() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_filter_is_read_from_a_json_object_only() {
        let filter: SubscriptionFilter =
            serde_json::from_str(r#"{"eventTypes":["job.succeeded"]}"#).unwrap();
        assert_eq!(filter.event_types, Some(vec![EventType::JobSucceeded]));
        // The field's name before: read as the same field; both at once is refused.
        let old: SubscriptionFilter =
            serde_json::from_str(r#"{"events":["job.succeeded"]}"#).unwrap();
        assert_eq!(old, filter);
        let both = serde_json::from_str::<SubscriptionFilter>(
            r#"{"events":["job.succeeded"],"eventTypes":["job.failed"]}"#,
        )
        .unwrap_err();
        assert!(both.to_string().contains("duplicate field"), "{both}");
        // serde's derive alone would take an array of the fields in order.
        let err = serde_json::from_str::<SubscriptionFilter>("[null, null]").unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        assert!(serde_json::from_str::<SubscriptionFilter>(r#"{"other":1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"eventTypes":["job.succeeded"]}"#
        );
    }

    #[test]
    fn the_signer_matches_the_specifications_test_vector() {
        // From the Standard Webhooks specification and its reference libraries.
        let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_a_signature_and_refuses_tampering_wrong_secrets_and_old_timestamps() {
        let secret = WebhookSecret::generate();
        let other = WebhookSecret::generate();
        let now = at();
        let ts = now.timestamp();
        let sig = secret.sign("msg_1", ts, "{}");
        let check = |secrets: &[&WebhookSecret], ts: i64, sig: &str, body: &str| {
            verify(
                secrets,
                Some("msg_1"),
                Some(&ts.to_string()),
                Some(sig),
                body,
                now,
            )
        };
        assert_eq!(check(&[&secret], ts, &sig, "{}"), Ok(()));
        assert_eq!(
            check(&[&secret], ts, &sig, "{ }"),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(check(&[&other], ts, &sig, "{}"), Err(VerifyError::NoMatch));
        let old = ts - 301;
        assert_eq!(
            check(&[&secret], old, &secret.sign("msg_1", old, "{}"), "{}"),
            Err(VerifyError::Stale)
        );
        let both = format!("{} {sig}", other.sign("msg_1", ts, "{}"));
        assert_eq!(check(&[&secret], ts, &both, "{}"), Ok(()));
    }

    #[test]
    fn new_secrets_have_the_standard_form() {
        let secret = WebhookSecret::generate();
        assert!(secret.as_str().starts_with("whsec_"));
        assert!(secret.as_str().parse::<WebhookSecret>().is_ok());
        assert!("whsec_dG9vc2hvcnQ=".parse::<WebhookSecret>().is_err());
    }

    #[test]
    fn the_first_three_retries_fall_within_two_minutes_and_no_wait_exceeds_an_hour() {
        let schedule = RetrySchedule::default();
        let worst: Duration = (1..=3).map(|n| schedule.wait_after(n, None, 0.999)).sum();
        assert!(worst < Duration::from_secs(120), "{worst:?}");
        assert!(schedule.wait_after(1, None, 0.0) >= Duration::from_secs(4));
        for n in 1..100 {
            assert!(schedule.wait_after(n, None, 0.999) <= Duration::from_secs(3_600));
        }
        assert_eq!(
            schedule.wait_after(2, Some(7_200), 0.5),
            Duration::from_secs(3_600)
        );
        assert_eq!(
            schedule.wait_after(2, Some(42), 0.5),
            Duration::from_secs(42)
        );
    }

    #[test]
    fn retries_stop_once_the_window_is_spent() {
        let schedule = RetrySchedule {
            window: Duration::from_secs(60),
        };
        let first = at();
        assert!(schedule.next_attempt(first, first, 1, None, 0.5).is_some());
        let late = first + chrono::Duration::seconds(58);
        assert!(schedule.next_attempt(first, late, 2, None, 0.5).is_none());
    }

    #[test]
    fn delivery_ids_are_stable_and_ordered_by_event_time() {
        let sub = SubscriptionId::new_random();
        let mut job = super::super::Job::new(
            BrandId::new_random(),
            super::super::OfferId::new_random(),
            None,
            at(),
        );
        job.status = super::super::JobStatus::Succeeded;
        job.finished_at = Some(at());
        let event = Event::Job(super::super::JobEvent::of_status(&job).unwrap());
        assert_eq!(DeliveryId::of(&event, sub), DeliveryId::of(&event, sub));
        assert_ne!(
            DeliveryId::of(&event, sub),
            DeliveryId::of(&event, SubscriptionId::new_random())
        );
        let id = DeliveryId::of(&event, sub);
        assert_eq!(id.to_string().parse::<DeliveryId>().unwrap(), id);
        let mut later_job = job.clone();
        later_job.id = JobId::new_v7();
        later_job.finished_at = Some(job.finished_at.unwrap() + chrono::Duration::seconds(1));
        let later = Event::Job(super::super::JobEvent::of_status(&later_job).unwrap());
        assert!(DeliveryId::of(&later, sub) > id);
    }

    #[test]
    fn an_empty_filter_matches_every_event_and_a_set_field_must_match() {
        let mut job = super::super::Job::new(
            BrandId::new_random(),
            super::super::OfferId::new_random(),
            None,
            at(),
        );
        job.status = super::super::JobStatus::Succeeded;
        let event = Event::Job(super::super::JobEvent::of_status(&job).unwrap());
        assert!(SubscriptionFilter::default().matches(&event));
        let other_job = SubscriptionFilter {
            job_id: Some(JobId::new_v7()),
            ..Default::default()
        };
        assert!(!other_job.matches(&event));
        let failed_only = SubscriptionFilter {
            event_types: Some(vec![EventType::JobFailed]),
            ..Default::default()
        };
        assert!(!failed_only.matches(&event));
    }

    fn running_job(brand: BrandId) -> super::super::Job {
        let mut job =
            super::super::Job::new(brand, super::super::OfferId::new_random(), None, at());
        job.status = super::super::JobStatus::Running;
        job.started_at = Some(at());
        job
    }

    fn subscribed(brand: BrandId, filter: SubscriptionFilter) -> Subscription {
        Subscription::new(
            SubscriptionId::new_random(),
            brand,
            "https://hooks.example.invalid/a".parse().unwrap(),
            filter,
            None,
            at(),
        )
    }

    #[test]
    fn a_callback_hears_its_jobs_outcome_only_and_others_hear_every_type_but_progress() {
        let brand = BrandId::new_random();
        let mut job = running_job(brand);
        let callback = Subscription::for_callback(
            job.id,
            brand,
            "https://hooks.example.invalid/cb".parse().unwrap(),
            at(),
        );
        let all = subscribed(brand, SubscriptionFilter::default());
        assert!(callback.is_callback() && !all.is_callback());
        let started = Event::Job(super::super::JobEvent::started(&job));
        let progress = Event::Job(super::super::JobEvent::progress(&job, at()));
        assert!(!callback.wants(&started) && all.wants(&started));
        assert!(!callback.wants(&progress) && !all.wants(&progress));
        let mut every_second = all.clone();
        every_second.progress_every_seconds = Some(1);
        assert!(every_second.wants(&progress));
        job.status = super::super::JobStatus::Succeeded;
        let ended = Event::Job(super::super::JobEvent::of_status(&job).unwrap());
        assert!(callback.wants(&ended) && all.wants(&ended));
        // Another brand's subscription hears none of it.
        let other = subscribed(BrandId::new_random(), SubscriptionFilter::default());
        assert!(!other.wants(&ended));
    }

    #[test]
    fn a_test_send_goes_to_its_subscription_only_whatever_its_filter() {
        let brand = BrandId::new_random();
        let narrow = subscribed(
            brand,
            SubscriptionFilter {
                event_types: Some(vec![EventType::JobFailed]),
                ..Default::default()
            },
        );
        let sibling = subscribed(brand, SubscriptionFilter::default());
        let test = Event::Webhook(super::super::WebhookEvent::test(brand, narrow.id, at()));
        assert!(narrow.wants(&test));
        assert!(!sibling.wants(&test));
        let delivery = Delivery::new(&test, &narrow, at());
        assert_eq!(delivery.job_id, None);
        assert_eq!(delivery.event_type, EventType::WebhookTest);
        let body: serde_json::Value = serde_json::from_str(&delivery.body).unwrap();
        assert_eq!(body["type"], "webhook.test");
        assert_eq!(body["data"]["webhookId"], narrow.id.to_string());
        // It travels on the webhook queue like a job's event.
        let message = WebhookMessage::Event(test.clone());
        assert_eq!(WebhookMessage::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn a_jobs_progress_in_one_window_is_one_delivery_and_the_next_window_another() {
        let brand = BrandId::new_random();
        let mut sub = subscribed(brand, SubscriptionFilter::default());
        sub.progress_every_seconds = Some(10);
        let mut job = running_job(brand);
        let window_start = DateTime::from_timestamp(at().timestamp() / 10 * 10, 0).unwrap();
        let mut ids = Vec::new();
        for (chunks_done, secs) in [(1, 0), (2, 4), (3, 9), (4, 10), (5, 19)] {
            job.chunks_done = chunks_done;
            let when = window_start + chrono::Duration::seconds(secs);
            let event = Event::Job(super::super::JobEvent::progress(&job, when));
            ids.push(Delivery::new(&event, &sub, when).id);
        }
        assert!(ids[0] == ids[1] && ids[1] == ids[2], "{ids:?}");
        assert!(ids[3] == ids[4] && ids[3] != ids[0], "{ids:?}");
        // Each event keeps its own id: a window keeps the first of its events.
        let a = super::super::JobEvent::progress(&job, at());
        job.chunks_done += 1;
        assert_ne!(
            a.event_id,
            super::super::JobEvent::progress(&job, at()).event_id
        );
    }

    #[test]
    fn send_slots_are_spaced_never_before_now_and_not_taken_too_far_ahead() {
        let now = 1_000_000_000;
        let soonest = now + SEND_SLOT_LEAD_US;
        assert_eq!(
            SendSlot::plan(None, now, 200_000, 5_000_000),
            SendSlot::At {
                at: soonest,
                next: soonest + 200_000
            }
        );
        // A slot in the past, or too soon for the answer to arrive before it, is not given:
        // the next send is the soonest one.
        assert_eq!(
            SendSlot::plan(Some(now + 1), now, 200_000, 5_000_000),
            SendSlot::At {
                at: soonest,
                next: soonest + 200_000
            }
        );
        assert_eq!(
            SendSlot::plan(Some(now + 600_000), now, 200_000, 5_000_000),
            SendSlot::At {
                at: now + 600_000,
                next: now + 800_000
            }
        );
        assert_eq!(
            SendSlot::plan(Some(now + 5_000_001), now, 200_000, 5_000_000),
            SendSlot::Busy {
                free_at: now + 5_000_001
            }
        );
        // Five a second: no second (aligned or not) holds six slots.
        let mut sub = Subscription::new(
            SubscriptionId::new_random(),
            BrandId::new_random(),
            "https://hooks.example.invalid/a".parse().unwrap(),
            SubscriptionFilter::default(),
            None,
            at(),
        );
        sub.rate_limit_per_sec = Some(5);
        let spacing = sub.send_spacing_us().unwrap();
        assert!(spacing * 5 >= 1_050_000 && spacing < 211_000, "{spacing}");
        sub.rate_limit_per_sec = Some(1_000);
        assert!(sub.send_spacing_us().unwrap() * 1_000 > 1_000_000);
    }

    #[test]
    fn queue_messages_round_trip() {
        let attempt = WebhookMessage::Attempt {
            subscription_id: SubscriptionId::new_random(),
            delivery_id: "msg_0190a0b0c0d07e0f8a0b0c0d0e0f1011".parse().unwrap(),
            attempts: 3,
            send_slot: None,
        };
        assert_eq!(WebhookMessage::decode(&attempt.encode()).unwrap(), attempt);
        // A kept send slot travels with the attempt; a message without one still reads.
        let kept = WebhookMessage::Attempt {
            subscription_id: SubscriptionId::new_random(),
            delivery_id: "msg_0190a0b0c0d07e0f8a0b0c0d0e0f1011".parse().unwrap(),
            attempts: 0,
            send_slot: Some(1_796_680_158_498_102),
        };
        assert_eq!(WebhookMessage::decode(&kept.encode()).unwrap(), kept);
        assert!(!attempt.encode().contains("sendSlot"));
        let replay = WebhookMessage::Replay(Replay {
            subscription_id: SubscriptionId::new_random(),
            since: at(),
            until: at() + chrono::Duration::hours(1),
            after: Some((at(), Uuid::from_u128(7))),
        });
        assert_eq!(WebhookMessage::decode(&replay.encode()).unwrap(), replay);
        assert!(WebhookMessage::decode("{\"nope\":1}").is_err());
    }
}
