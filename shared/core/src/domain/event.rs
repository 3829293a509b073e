//! Job events: what webhooks receive when a job reaches a terminal status, or waits for an
//! approval.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BrandId, Counters, Job, JobId, JobKind, JobStatus, OfferId};

/// The events a job sends when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
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
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::JobSucceeded,
        EventType::JobCompletedWithErrors,
        EventType::JobFailed,
        EventType::JobCancelled,
        EventType::JobAwaitingApproval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobSucceeded => "job.succeeded",
            EventType::JobCompletedWithErrors => "job.completed_with_errors",
            EventType::JobFailed => "job.failed",
            EventType::JobCancelled => "job.cancelled",
            EventType::JobAwaitingApproval => "job.awaiting_approval",
        }
    }

    /// What the event says, for the event catalog (`GET /webhooks/event-types`).
    pub fn description(self) -> &'static str {
        match self {
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
        }
    }

    /// The job status an event of this type is sent in.
    pub fn status(self) -> JobStatus {
        match self {
            EventType::JobSucceeded => JobStatus::Succeeded,
            EventType::JobCompletedWithErrors => JobStatus::CompletedWithErrors,
            EventType::JobFailed => JobStatus::Failed,
            EventType::JobCancelled => JobStatus::Cancelled,
            EventType::JobAwaitingApproval => JobStatus::AwaitingApproval,
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
    /// The event of a job in its status: a finished job's terminal event, or the event of a
    /// job awaiting approval; `None` for other statuses.
    pub fn of_status(job: &Job) -> Option<JobEvent> {
        let event_type = EventType::for_status(job.status)?;
        let name = format!("{}:{}", job.id, event_type.as_str());
        Some(JobEvent {
            event_id: Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()),
            event_type,
            job_id: job.id,
            brand_id: job.brand_id,
            offer_id: job.offer_id,
            job_type: Some(job.spec.kind),
            status: job.status,
            counters: job.counters,
            occurred_at: match job.status {
                JobStatus::AwaitingApproval => job.created_at,
                _ => job.finished_at.unwrap_or(job.updated_at),
            },
        })
    }
}

impl JobEvent {
    /// An event of this type as a delivery carries it, for the event catalog: fixed ids and
    /// times, counters that add up for its status.
    pub fn example(event_type: EventType) -> JobEvent {
        use chrono::TimeZone;
        let id = |n: u128| Uuid::from_u128(0x0190_a0b0_c0d0_7e0f_8a0b_0c0d_0e0f_1000 + n);
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
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
        }
        JobEvent {
            event_id: id(0x31),
            event_type,
            job_id: JobId::from_uuid(id(0x21)),
            brand_id: BrandId::from_uuid(id(0x12)),
            offer_id: Some(OfferId::from_uuid(id(0x11))),
            job_type: Some(JobKind::LinkAllLocations),
            status: event_type.status(),
            counters,
            occurred_at: at,
        }
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
