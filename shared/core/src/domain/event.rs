//! Events webhooks deliver: a job's (`JobEvent`: it started, paused, resumed, made progress,
//! ended or waits for an approval), a subscription's own (`WebhookEvent`: a test send, or
//! another subscription disabled) and an offer's (`OfferEvent`: its links drifted from its
//! standing rule).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    BrandId, Counters, DomainError, Job, JobId, JobKind, JobStatus, OfferId, SubscriptionId,
};

/// Every type of event webhooks send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// Fanout began: the job is RUNNING.
    #[serde(rename = "job.started")]
    JobStarted,
    /// A job's counters moved (sent only to subscriptions with `progressEverySeconds`).
    #[serde(rename = "job.progress")]
    JobProgress,
    #[serde(rename = "job.paused")]
    JobPaused,
    #[serde(rename = "job.resumed")]
    JobResumed,
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.completed_with_errors")]
    JobCompletedWithErrors,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    /// A job was created AWAITING_APPROVAL: someone of its brand should approve or reject it.
    #[serde(rename = "job.awaiting_approval")]
    JobAwaitingApproval,
    /// Asked for with `POST /webhooks/{id}/test`: sent to that subscription only.
    #[serde(rename = "webhook.test")]
    WebhookTest,
    /// A subscription was disabled (its deliveries all failed for days): told to the
    /// brand's other subscriptions.
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    /// An offer's links have disagreed with its standing rule for longer than the settling
    /// time.
    #[serde(rename = "offer.drift")]
    OfferDrift,
}

/// What an event is about, which says the type of its `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A `JobEvent`.
    Job,
    /// A `WebhookEvent`.
    Webhook,
    /// An `OfferEvent`.
    Offer,
}

impl EventType {
    pub const ALL: [EventType; 12] = [
        EventType::JobStarted,
        EventType::JobProgress,
        EventType::JobPaused,
        EventType::JobResumed,
        EventType::JobSucceeded,
        EventType::JobCompletedWithErrors,
        EventType::JobFailed,
        EventType::JobCancelled,
        EventType::JobAwaitingApproval,
        EventType::WebhookTest,
        EventType::WebhookDisabled,
        EventType::OfferDrift,
    ];

    /// What a job's `callbackUrl` hears: that the job ended, or that it waits for approval.
    pub const OUTCOMES: [EventType; 5] = [
        EventType::JobSucceeded,
        EventType::JobCompletedWithErrors,
        EventType::JobFailed,
        EventType::JobCancelled,
        EventType::JobAwaitingApproval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobStarted => "job.started",
            EventType::JobProgress => "job.progress",
            EventType::JobPaused => "job.paused",
            EventType::JobResumed => "job.resumed",
            EventType::JobSucceeded => "job.succeeded",
            EventType::JobCompletedWithErrors => "job.completed_with_errors",
            EventType::JobFailed => "job.failed",
            EventType::JobCancelled => "job.cancelled",
            EventType::JobAwaitingApproval => "job.awaiting_approval",
            EventType::WebhookTest => "webhook.test",
            EventType::WebhookDisabled => "webhook.disabled",
            EventType::OfferDrift => "offer.drift",
        }
    }

    /// What an event of this type is about.
    pub fn kind(self) -> EventKind {
        match self {
            EventType::WebhookTest | EventType::WebhookDisabled => EventKind::Webhook,
            EventType::OfferDrift => EventKind::Offer,
            _ => EventKind::Job,
        }
    }

    /// What the event says, for the event catalog (`GET /webhooks/event-types`).
    pub fn description(self) -> &'static str {
        match self {
            EventType::JobStarted => {
                "A job started: fanout began paging its locations (or rows) and it is RUNNING. \
                 Import jobs send the same job events as any other, `jobType` telling them \
                 apart."
            }
            EventType::JobProgress => {
                "A job's `counters` moved. Sent only to subscriptions that set \
                 `progressEverySeconds`, at most one per job in each such window; the last \
                 counters come with the job's terminal event."
            }
            EventType::JobPaused => {
                "A job was paused (POST /jobs/{jobId}/pause): no new chunk starts until it \
                 is resumed."
            }
            EventType::JobResumed => {
                "A paused job was resumed (POST /jobs/{jobId}/resume) and is RUNNING again."
            }
            EventType::JobSucceeded => {
                "A job ended SUCCEEDED: every location (or row) it acted on was done; `counters` \
                 say how."
            }
            EventType::JobCompletedWithErrors => {
                "A job ended COMPLETED_WITH_ERRORS: it went through, and some locations failed \
                 (`counters.failed`; GET /jobs/{jobId}/failures lists them)."
            }
            EventType::JobFailed => {
                "A job ended FAILED: its failures passed the failure threshold, or its input \
                 could not be read."
            }
            EventType::JobCancelled => {
                "A job ended CANCELLED (cancelled, or rejected while awaiting approval): \
                 `counters.cancelled` were left undone."
            }
            EventType::JobAwaitingApproval => {
                "A job was created AWAITING_APPROVAL: someone of its brand other than its \
                 creator should approve (POST /jobs/{jobId}/approve) or reject it."
            }
            EventType::WebhookTest => {
                "A test send (POST /webhooks/{id}/test), to that subscription only, signed with \
                 its current secret: check a receiver end to end. It acts on nothing."
            }
            EventType::WebhookDisabled => {
                "Another subscription of the brand (`webhookId`) was disabled: every delivery \
                 to it failed for days (`reason`). POST /webhooks/{id}/enable brings it back."
            }
            EventType::OfferDrift => {
                "An offer's links have disagreed with its standing rule since `driftSince`, \
                 longer than the settling time: `missing` locations the rule wants lack the \
                 offer, `extra` ones carry it unwanted (GET /offers/{offerId}/drift counts \
                 them now). One event per stretch of drift; PUT /offers/{offerId}/rule or a \
                 reconcile job mends it."
            }
        }
    }

    /// The job status an event of this type is always sent in, if one.
    pub fn status(self) -> Option<JobStatus> {
        match self {
            EventType::JobStarted | EventType::JobResumed => Some(JobStatus::Running),
            EventType::JobPaused => Some(JobStatus::Paused),
            EventType::JobSucceeded => Some(JobStatus::Succeeded),
            EventType::JobCompletedWithErrors => Some(JobStatus::CompletedWithErrors),
            EventType::JobFailed => Some(JobStatus::Failed),
            EventType::JobCancelled => Some(JobStatus::Cancelled),
            EventType::JobAwaitingApproval => Some(JobStatus::AwaitingApproval),
            EventType::JobProgress
            | EventType::WebhookTest
            | EventType::WebhookDisabled
            | EventType::OfferDrift => None,
        }
    }

    pub fn for_status(status: JobStatus) -> Option<EventType> {
        match status {
            JobStatus::Succeeded => Some(EventType::JobSucceeded),
            JobStatus::CompletedWithErrors => Some(EventType::JobCompletedWithErrors),
            JobStatus::Failed => Some(EventType::JobFailed),
            JobStatus::Cancelled => Some(EventType::JobCancelled),
            JobStatus::AwaitingApproval => Some(EventType::JobAwaitingApproval),
            _ => None,
        }
    }
}

/// Namespace for deriving event ids, so a re-published event keeps its id.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4a0e_2c59_4d0b_9a57_3e1d_52c8_a001);

/// A job's terminal event: the `data` of a webhook delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// Stable for one job's terminal event: receivers dedupe on it.
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub job_id: JobId,
    pub brand_id: BrandId,
    /// The job's offer (absent for an import, which acts on no offer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    /// The job's kind.
    #[serde(rename = "jobType", default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<JobKind>,
    pub status: JobStatus,
    pub counters: Counters,
    pub occurred_at: DateTime<Utc>,
}

impl JobEvent {
    /// `job` as an event of `event_type` at `at`, its id derived from the job, the type and
    /// `occurrence` (what tells two events of one type of one job apart), so an event
    /// published twice keeps its id.
    fn of(job: &Job, event_type: EventType, occurrence: &str, at: DateTime<Utc>) -> JobEvent {
        let name = format!("{}:{}{occurrence}", job.id, event_type.as_str());
        JobEvent {
            event_id: Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()),
            event_type,
            job_id: job.id,
            brand_id: job.brand_id,
            offer_id: job.offer_id,
            job_type: Some(job.spec.kind),
            status: job.status,
            counters: job.counters,
            occurred_at: at,
        }
    }

    /// The event of a job in its status: a finished job's terminal event, or the event of a
    /// job awaiting approval; `None` for other statuses.
    pub fn of_status(job: &Job) -> Option<JobEvent> {
        let event_type = EventType::for_status(job.status)?;
        let at = match job.status {
            JobStatus::AwaitingApproval => job.created_at,
            _ => job.finished_at.unwrap_or(job.updated_at),
        };
        Some(JobEvent::of(job, event_type, "", at))
    }

    /// `job.started`, of a job fanout found RUNNING before its first page: one per job.
    pub fn started(job: &Job) -> JobEvent {
        let at = job.started_at.unwrap_or(job.updated_at);
        JobEvent::of(job, EventType::JobStarted, "", at)
    }

    /// `job.paused`, of a PAUSED job: one per pause (its id names the pause's start).
    pub fn paused(job: &Job) -> JobEvent {
        let at = job.paused_at.unwrap_or(job.updated_at);
        let occurrence = format!(":{}", at.timestamp_millis());
        JobEvent::of(job, EventType::JobPaused, &occurrence, at)
    }

    /// `job.resumed`, of a job just resumed at `at`: one per resume (its id names the time
    /// the job has been paused in all, which each resume adds to).
    pub fn resumed(job: &Job, at: DateTime<Utc>) -> JobEvent {
        let occurrence = format!(":{}", job.paused_ms);
        JobEvent::of(job, EventType::JobResumed, &occurrence, at)
    }

    /// `job.progress`, of a job whose counters are these at `at` (one per chunk accounted).
    pub fn progress(job: &Job, at: DateTime<Utc>) -> JobEvent {
        let occurrence = format!(":{}", job.chunks_done);
        JobEvent::of(job, EventType::JobProgress, &occurrence, at)
    }

    /// An event of this type as a delivery carries it, for the event catalog: fixed ids and
    /// times, counters that add up for its status.
    pub fn example(event_type: EventType) -> JobEvent {
        let mut counters = Counters {
            total: 10_000,
            ..Counters::default()
        };
        match event_type {
            EventType::JobSucceeded => counters.linked = 10_000,
            EventType::JobCompletedWithErrors => (counters.linked, counters.failed) = (9_990, 10),
            EventType::JobFailed => (counters.linked, counters.failed) = (600, 400),
            EventType::JobCancelled => (counters.linked, counters.cancelled) = (4_000, 6_000),
            EventType::JobAwaitingApproval => counters.total = 0,
            EventType::JobStarted => counters.total = 0,
            EventType::JobProgress | EventType::JobPaused | EventType::JobResumed => {
                (counters.linked, counters.already_linked) = (3_100, 900)
            }
            EventType::WebhookTest | EventType::WebhookDisabled | EventType::OfferDrift => {}
        }
        JobEvent {
            event_id: example_id(0x31),
            event_type,
            job_id: JobId::from_uuid(example_id(0x21)),
            brand_id: BrandId::from_uuid(example_id(0x12)),
            offer_id: Some(OfferId::from_uuid(example_id(0x11))),
            job_type: Some(JobKind::LinkAllLocations),
            status: event_type.status().unwrap_or(JobStatus::Running),
            counters,
            occurred_at: example_time(),
        }
    }
}

fn example_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_a0b0_c0d0_7e0f_8a0b_0c0d_0e0f_1000 + n)
}

fn example_time() -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
}

/// An event of a webhook subscription itself: the `data` of a `webhook.test` delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// New for every test send.
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub brand_id: BrandId,
    /// The subscription it is about (a test send's is the one it is sent to).
    pub webhook_id: SubscriptionId,
    pub occurred_at: DateTime<Utc>,
    /// Why it was disabled (`webhook.disabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl WebhookEvent {
    /// A test send to `webhook` of `brand`, made at `at`.
    pub fn test(brand: BrandId, webhook: SubscriptionId, at: DateTime<Utc>) -> WebhookEvent {
        WebhookEvent {
            event_id: Uuid::now_v7(),
            event_type: EventType::WebhookTest,
            brand_id: brand,
            webhook_id: webhook,
            occurred_at: at,
            reason: None,
        }
    }

    /// That `webhook` of `brand`, failing since `failing_since`, was disabled at `at` for
    /// `reason`: one event per such stretch of failures.
    pub fn disabled(
        brand: BrandId,
        webhook: SubscriptionId,
        reason: &str,
        failing_since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> WebhookEvent {
        let name = format!(
            "{webhook}:webhook.disabled:{}",
            failing_since.timestamp_millis()
        );
        WebhookEvent {
            event_id: Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()),
            event_type: EventType::WebhookDisabled,
            brand_id: brand,
            webhook_id: webhook,
            occurred_at: at,
            reason: Some(reason.to_owned()),
        }
    }

    /// For the event catalog.
    pub fn example(event_type: EventType) -> WebhookEvent {
        WebhookEvent {
            event_id: example_id(0x32),
            event_type,
            brand_id: BrandId::from_uuid(example_id(0x12)),
            webhook_id: SubscriptionId::from_uuid(example_id(0x14)),
            occurred_at: example_time(),
            reason: (event_type == EventType::WebhookDisabled).then(|| {
                "every delivery failed for 5 days (since 2026-11-26T10:00:00.000Z)".to_owned()
            }),
        }
    }
}

/// An event of an offer: the `data` of an `offer.drift` delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OfferEvent {
    /// Stable for one stretch of drift: receivers dedupe on it.
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub brand_id: BrandId,
    pub offer_id: OfferId,
    /// Since when the offer's links have disagreed with its rule (as first seen).
    pub drift_since: DateTime<Utc>,
    /// Active locations the rule wants that do not carry the offer, when last counted.
    pub missing: u64,
    /// Locations carrying the offer that the rule does not want, when last counted.
    pub extra: u64,
    pub occurred_at: DateTime<Utc>,
}

impl OfferEvent {
    /// That the rule of `offer` (of `brand`) has been drifting since `since`, as counted at
    /// `at`: one event per stretch of drift (its id names the offer and `since`).
    pub fn drift(
        brand: BrandId,
        offer: OfferId,
        since: DateTime<Utc>,
        drift: super::Drift,
        at: DateTime<Utc>,
    ) -> OfferEvent {
        let name = format!("{offer}:offer.drift:{}", since.timestamp_millis());
        OfferEvent {
            event_id: Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()),
            event_type: EventType::OfferDrift,
            brand_id: brand,
            offer_id: offer,
            drift_since: since,
            missing: drift.missing,
            extra: drift.extra,
            occurred_at: at,
        }
    }

    /// For the event catalog.
    pub fn example(event_type: EventType) -> OfferEvent {
        OfferEvent {
            event_id: example_id(0x33),
            event_type,
            brand_id: BrandId::from_uuid(example_id(0x12)),
            offer_id: OfferId::from_uuid(example_id(0x11)),
            drift_since: example_time() - chrono::Duration::minutes(45),
            missing: 3,
            extra: 1,
            occurred_at: example_time(),
        }
    }
}

/// Any event a delivery carries: its `type` says which kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Job(JobEvent),
    Webhook(WebhookEvent),
    Offer(OfferEvent),
}

impl Event {
    /// An event of `event_type` as the catalog shows it.
    pub fn example(event_type: EventType) -> Event {
        match event_type.kind() {
            EventKind::Job => Event::Job(JobEvent::example(event_type)),
            EventKind::Webhook => Event::Webhook(WebhookEvent::example(event_type)),
            EventKind::Offer => Event::Offer(OfferEvent::example(event_type)),
        }
    }

    pub fn event_id(&self) -> Uuid {
        match self {
            Event::Job(e) => e.event_id,
            Event::Webhook(e) => e.event_id,
            Event::Offer(e) => e.event_id,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            Event::Job(e) => e.event_type,
            Event::Webhook(e) => e.event_type,
            Event::Offer(e) => e.event_type,
        }
    }

    pub fn brand_id(&self) -> BrandId {
        match self {
            Event::Job(e) => e.brand_id,
            Event::Webhook(e) => e.brand_id,
            Event::Offer(e) => e.brand_id,
        }
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Event::Job(e) => e.occurred_at,
            Event::Webhook(e) => e.occurred_at,
            Event::Offer(e) => e.occurred_at,
        }
    }

    /// The job it is about, if a job's.
    pub fn job_id(&self) -> Option<JobId> {
        match self {
            Event::Job(e) => Some(e.job_id),
            Event::Webhook(_) | Event::Offer(_) => None,
        }
    }

    /// Reads an event of any kind, its `type` deciding which.
    pub fn from_json(value: serde_json::Value) -> Result<Event, DomainError> {
        let event_type: EventType = value
            .get("type")
            .cloned()
            .ok_or_else(|| DomainError::BadMessage("an event has a type".into()))
            .and_then(|t| {
                serde_json::from_value(t)
                    .map_err(|e| DomainError::BadMessage(format!("event type: {e}")))
            })?;
        let bad = |e: serde_json::Error| {
            DomainError::BadMessage(format!("not a {} event: {e}", event_type.as_str()))
        };
        match event_type.kind() {
            EventKind::Job => serde_json::from_value(value).map(Event::Job),
            EventKind::Webhook => serde_json::from_value(value).map(Event::Webhook),
            EventKind::Offer => serde_json::from_value(value).map(Event::Offer),
        }
        .map_err(bad)
    }
}

impl From<JobEvent> for Event {
    fn from(event: JobEvent) -> Event {
        Event::Job(event)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// The time the test jobs are made at: fixed, so nothing here depends on the day.
    fn made_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    }

    #[test]
    fn a_republished_event_keeps_its_id() {
        let mut job = Job::new(
            BrandId::new_random(),
            OfferId::new_random(),
            None,
            made_at(),
        );
        job.status = JobStatus::Succeeded;
        let first = JobEvent::of_status(&job).unwrap();
        job.notified_at = Some(made_at() + chrono::Duration::seconds(5));
        let again = JobEvent::of_status(&job).unwrap();
        assert_eq!(first.event_id, again.event_id);
        assert_eq!(first.event_type, EventType::JobSucceeded);
    }

    #[test]
    fn each_pause_and_resume_is_its_own_event_and_a_republished_one_keeps_its_id() {
        let mut job = Job::new(
            BrandId::new_random(),
            OfferId::new_random(),
            None,
            made_at(),
        );
        job.status = JobStatus::Paused;
        job.paused_at = Some(made_at() + chrono::Duration::seconds(1));
        let first_pause = JobEvent::paused(&job);
        assert_eq!(first_pause.event_id, JobEvent::paused(&job).event_id);
        assert_eq!(first_pause.occurred_at, job.paused_at.unwrap());
        job.status = JobStatus::Running;
        job.paused_at = None;
        job.paused_ms = 4_000;
        let resumed_at = made_at() + chrono::Duration::seconds(5);
        let first_resume = JobEvent::resumed(&job, resumed_at);
        assert_eq!(first_resume.status, JobStatus::Running);
        job.status = JobStatus::Paused;
        job.paused_at = Some(made_at() + chrono::Duration::seconds(9));
        assert_ne!(JobEvent::paused(&job).event_id, first_pause.event_id);
        job.paused_ms = 6_000;
        assert_ne!(
            JobEvent::resumed(&job, resumed_at).event_id,
            first_resume.event_id
        );
        // Distinct from every other type's event of the job.
        assert_ne!(JobEvent::started(&job).event_id, first_pause.event_id);
    }

    #[test]
    fn running_jobs_have_no_terminal_event() {
        let mut job = Job::new(
            BrandId::new_random(),
            OfferId::new_random(),
            None,
            made_at(),
        );
        job.status = JobStatus::Running;
        assert!(JobEvent::of_status(&job).is_none());
    }

    #[test]
    fn every_terminal_status_and_awaiting_approval_has_an_event_type() {
        for status in JobStatus::ALL {
            assert_eq!(
                status.is_terminal() || status == JobStatus::AwaitingApproval,
                EventType::for_status(status).is_some()
            );
        }
    }
}
