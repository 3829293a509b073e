//! The JSON a client sees of a job: what `GET /jobs/{id}` and the 202 of job creation return.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Action, BrandId, Counters, Import, ImportFormat, ImportId, ImportState, Job, JobId, JobStatus,
    OfferId, OwnerAction,
};

/// What a job does to each of its locations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionView {
    #[default]
    Link,
    Unlink,
    Reconcile,
    /// Upsert each row of a file by its external id (an import).
    Import,
}

impl From<Action> for ActionView {
    fn from(action: Action) -> Self {
        match action {
            Action::Link => ActionView::Link,
            Action::Unlink { .. } => ActionView::Unlink,
            Action::Reconcile => ActionView::Reconcile,
            Action::Import => ActionView::Import,
        }
    }
}

/// A job's counters, with `processed`: their sum so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountersView {
    #[serde(flatten)]
    pub counters: Counters,
    pub processed: u64,
}

/// A job: status, counters, progress and timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: JobId,
    #[serde(rename = "type")]
    pub kind: crate::domain::JobKind,
    /// For `undo` and `retry-failures`: the job this one derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<JobId>,
    /// What the job does to each location: an undo and an unlink-all unlink; a
    /// retry-failures job does what its parent did.
    #[serde(default)]
    pub action: ActionView,
    /// The filter its locations were narrowed by (`where` of the creating request).
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::domain::LocationFilter>,
    pub status: JobStatus,
    /// What its owner may ask of the job now, each a `POST /jobs/{jobId}/<action>`: by
    /// status (`cancel`, `pause`, `resume`; `approve` and `reject` of a job awaiting approval,
    /// its approval by a caller other than `createdBy`) and, for an ended job, by what it did (`undo`
    /// of a linking job, `retry-failures` of one with failures). An undo asked of a job
    /// that has one already answers 409 with that undo's `Location`.
    #[serde(default)]
    pub allowed_actions: Vec<OwnerAction>,
    pub brand_id: BrandId,
    /// The offer it acts on (absent for an import, which acts on the brand's locations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    /// For an import: the upload it applies (`GET /imports/{importId}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<ImportId>,
    pub counters: CountersView,
    pub percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    pub fanout_done: bool,
    pub chunks_total: u32,
    pub chunks_done: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<DateTime<Utc>>,
    /// When the current pause began (PAUSED only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<DateTime<Utc>>,
    /// Seconds the job has spent paused, the current pause included. Rate and ETA count
    /// only the time it ran.
    pub paused_seconds: f64,
    /// Chunks parked while the job is paused, queued again when it resumes.
    pub chunks_parked: u32,
    /// When it may start (`notBefore` of the creating request): SCHEDULED until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The token `sub` of the caller that created it (who may not approve it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The token `sub` of the caller that approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Only in the answer to a job creation with a `callbackUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackView>,
}

impl JobView {
    pub fn of(job: &Job, now: DateTime<Utc>) -> Self {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        JobView {
            id: job.id,
            kind: job.spec.kind,
            parent_job_id: job.spec.parent_job_id,
            action: job.spec.action.into(),
            filter: job.spec.filter(),
            status: job.status,
            allowed_actions: job.allowed_actions(),
            brand_id: job.brand_id,
            offer_id: job.offer_id,
            import_id: bulklink_core::importing::upload_of(job).map(|(id, _, _)| id),
            counters: CountersView {
                counters: job.counters,
                processed: job.counters.processed(),
            },
            percent: round(job.percent()),
            rate_per_sec: job.rate_per_sec(now).map(round),
            eta_seconds: job.eta_seconds(now).map(round),
            fanout_done: job.fanout_done,
            paused_at: job.paused_at,
            paused_seconds: round(job.paused_for(now).as_secs_f64()),
            chunks_parked: job.chunks_parked,
            chunks_total: job.chunks_total,
            chunks_done: job.chunks_done,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            notified_at: job.notified_at,
            not_before: job.not_before,
            created_by: job.created_by.clone(),
            approved_by: job.approved_by.clone(),
            callback: None,
        }
    }

    pub fn location(&self) -> String {
        format!("/jobs/{}", self.id)
    }
}

/// An import: its upload and, once the file has arrived, its job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    pub id: ImportId,
    pub brand_id: BrandId,
    pub format: ImportFormat,
    /// Whether the brand's active locations the file does not name are closed.
    pub close_missing: bool,
    /// `waiting` for the file, `started` (its job runs or ran), or `expired` (the upload URL
    /// lapsed before a file arrived).
    pub state: ImportState,
    pub created_at: DateTime<Utc>,
    /// When the upload URL stops working.
    pub expires_at: DateTime<Utc>,
    /// When the file arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The import job (`GET /jobs/{jobId}`), once the file has arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Where to PUT the file: only in the answer that makes the import (it carries the
    /// upload's authority). Single-use; it stops working at `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
}

impl ImportView {
    pub fn of(import: &Import, now: DateTime<Utc>) -> Self {
        ImportView {
            id: import.id,
            brand_id: import.brand_id,
            format: import.format,
            close_missing: import.close_missing,
            state: import.state(now),
            created_at: import.created_at,
            expires_at: import.expires_at,
            started_at: import.started_at,
            job_id: import.started_at.map(|_| import.job_id),
            upload_url: None,
        }
    }

    pub fn location(&self) -> String {
        format!("/imports/{}", self.id)
    }
}

/// A webhook subscription as its owner sees it. The secret only in the answers that make
/// one (creation and rotation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub id: crate::domain::SubscriptionId,
    pub brand_id: BrandId,
    pub url: crate::domain::WebhookUrl,
    pub filter: crate::domain::SubscriptionFilter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub status: crate::domain::SubscriptionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// After a rotation: until when the previous secret also signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// `job.progress` is sent at most once per job in each window of this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub progress_every_seconds: Option<u32>,
    /// At most this many attempts a second are sent to it, spread out, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub rate_limit_per_sec: Option<u32>,
    /// Why it is disabled (`status: disabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed (none after a success); past
    /// `WEBHOOK_DISABLE_AFTER_DAYS` it is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
}

impl SubscriptionView {
    pub fn of(sub: &crate::domain::Subscription, with_secret: bool) -> Self {
        SubscriptionView {
            id: sub.id,
            brand_id: sub.brand_id,
            url: sub.url.clone(),
            filter: sub.filter.clone(),
            description: sub.description.clone(),
            created_at: sub.created_at,
            status: sub.status,
            secret: with_secret.then(|| sub.secret.as_str().to_owned()),
            previous_secret_expires_at: sub.previous_secret.as_ref().map(|(_, until)| *until),
            progress_every_seconds: sub.progress_every_seconds,
            rate_limit_per_sec: sub.rate_limit_per_sec,
            disabled_reason: sub.disabled_reason.clone(),
            failing_since: sub.failing_since,
        }
    }
}

/// The subscription a `callbackUrl` made, in the 202 of job creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackView {
    pub subscription_id: crate::domain::SubscriptionId,
    pub secret: String,
}
