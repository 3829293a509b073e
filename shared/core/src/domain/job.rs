//! The job record and its state machine: which transitions are legal and which terminal
//! status a finished job earns. Pure, no IO.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::spec::{plan, JobSpec};
use super::{BrandId, DomainError, JobId, OfferId, WebhookUrl};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting for its `notBefore`; nothing done yet.
    Scheduled,
    /// Waiting for a second caller's approval (`POST /jobs/{jobId}/approve`).
    AwaitingApproval,
    Pending,
    Running,
    /// Paused by its owner: chunks are parked, not worked, until it is resumed.
    Paused,
    Cancelling,
    Failing,
    Succeeded,
    CompletedWithErrors,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 11] = [
        JobStatus::Scheduled,
        JobStatus::AwaitingApproval,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Cancelling,
        JobStatus::Failing,
        JobStatus::Succeeded,
        JobStatus::CompletedWithErrors,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "SCHEDULED",
            JobStatus::AwaitingApproval => "AWAITING_APPROVAL",
            JobStatus::Pending => "PENDING",
            JobStatus::Running => "RUNNING",
            JobStatus::Paused => "PAUSED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Failing => "FAILING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::CompletedWithErrors
                | JobStatus::Failed
                | JobStatus::Cancelled
        )
    }

    /// Held before it starts: for its time (SCHEDULED) or an approval (AWAITING_APPROVAL).
    /// Fanout does nothing for such a job; the sweeper leaves it to what releases it.
    pub fn is_held(self) -> bool {
        matches!(self, JobStatus::Scheduled | JobStatus::AwaitingApproval)
    }

    /// Chunks of a job in this status are skipped (ledgered as `cancelled`), not linked.
    pub fn skips_chunks(self) -> bool {
        matches!(self, JobStatus::Cancelling | JobStatus::Failing) || self.is_terminal()
    }

    /// Whether a cancel request may move the job to CANCELLING.
    pub fn can_cancel(self) -> bool {
        Transition::Cancel.allows(self)
    }

    /// Whether a pause request may move the job to PAUSED.
    pub fn can_pause(self) -> bool {
        Transition::Pause.allows(self)
    }

    /// The status a job in `self` ends with once all its chunks are accounted.
    /// `None` for statuses that cannot complete (PENDING has not fanned out; terminal is done).
    pub fn completes_as(self, counters: &Counters) -> Option<JobStatus> {
        match self {
            JobStatus::Running if counters.failed > 0 || counters.invalid > 0 => {
                Some(JobStatus::CompletedWithErrors)
            }
            JobStatus::Running => Some(JobStatus::Succeeded),
            JobStatus::Cancelling => Some(JobStatus::Cancelled),
            JobStatus::Failing => Some(JobStatus::Failed),
            _ => None,
        }
    }
}

/// The job state machine: each change of status a request or the pipeline makes, with the
/// statuses it may start from. Both backends build their conditions from `from()` (an SQL
/// `status IN (…)`, a DynamoDB `#s IN (…)`), and `allowedActions` is derived from it, so
/// the rule lives here only. Completion (RUNNING, CANCELLING or FAILING to a terminal
/// status) is `JobStatus::completes_as`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Fanout's first step.
    Start,
    /// An owner's cancel; chunks still queued are then skipped.
    Cancel,
    /// An owner's pause.
    Pause,
    /// An owner's resume.
    Resume,
    /// The failure threshold tripped.
    StartFailing,
    /// A second caller approved it, and its time has come (or it has none).
    Approve,
    /// A second caller approved it before its `notBefore`: it waits for its time.
    ApproveForLater,
    /// Its `notBefore` has come (the scheduler).
    Due,
    /// An owner's cancel of a held job: it ends before it did anything.
    Withdraw,
    /// A reject of a job awaiting approval.
    Reject,
}

impl Transition {
    pub const ALL: [Transition; 10] = [
        Transition::Start,
        Transition::Cancel,
        Transition::Pause,
        Transition::Resume,
        Transition::StartFailing,
        Transition::Approve,
        Transition::ApproveForLater,
        Transition::Due,
        Transition::Withdraw,
        Transition::Reject,
    ];

    /// The statuses this change may start from.
    pub const fn from(self) -> &'static [JobStatus] {
        match self {
            Transition::Start => &[JobStatus::Pending],
            Transition::Cancel => &[JobStatus::Pending, JobStatus::Running, JobStatus::Paused],
            Transition::Withdraw => &[JobStatus::Scheduled, JobStatus::AwaitingApproval],
            Transition::Reject => &[JobStatus::AwaitingApproval],
            Transition::Pause => &[JobStatus::Pending, JobStatus::Running],
            Transition::Resume => &[JobStatus::Paused],
            Transition::StartFailing => &[JobStatus::Running],
            Transition::Approve | Transition::ApproveForLater => &[JobStatus::AwaitingApproval],
            Transition::Due => &[JobStatus::Scheduled],
        }
    }

    /// The status it leaves the job in.
    pub const fn to(self) -> JobStatus {
        match self {
            Transition::Start | Transition::Resume => JobStatus::Running,
            Transition::Cancel | Transition::Withdraw | Transition::Reject => JobStatus::Cancelling,
            Transition::Pause => JobStatus::Paused,
            Transition::StartFailing => JobStatus::Failing,
            Transition::Approve | Transition::Due => JobStatus::Pending,
            Transition::ApproveForLater => JobStatus::Scheduled,
        }
    }

    pub fn allows(self, status: JobStatus) -> bool {
        self.from().contains(&status)
    }

    /// `status IN ('A', 'B')`: this change's condition in SQL, for a column named `column`.
    pub fn sql_condition(self, column: &str) -> String {
        let listed: Vec<String> = self
            .from()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("{column} IN ({})", listed.join(", "))
    }
}

/// What a job's owner may ask of a job (`allowedActions` of the job's view; each is a
/// `POST /jobs/{id}/<action>` route).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum OwnerAction {
    Cancel,
    Pause,
    Resume,
    Undo,
    RetryFailures,
    /// Start a job awaiting approval (a caller other than its creator).
    Approve,
    /// End a job awaiting approval, CANCELLED.
    Reject,
}

impl OwnerAction {
    pub const ALL: [OwnerAction; 7] = [
        OwnerAction::Cancel,
        OwnerAction::Pause,
        OwnerAction::Resume,
        OwnerAction::Undo,
        OwnerAction::RetryFailures,
        OwnerAction::Approve,
        OwnerAction::Reject,
    ];
}

/// Why a job cannot be the parent of a derived (undo, retry-failures) job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotDerivable {
    #[error("job {0} is {1}; wait until it has ended")]
    NotEnded(JobId, JobStatus),
    #[error("job {0} is a {1} job: it made no links to undo")]
    NothingToUndo(JobId, JobKind),
    #[error("job {0} has no failures to retry")]
    NoFailures(JobId),
    #[error("a {1} job cannot be derived from job {0}")]
    NotDerivedKind(JobId, JobKind),
    #[error("a {0} job is derived from another job: name it")]
    NeedsParent(JobKind),
    #[error("a {0} job is made by uploading a file (POST /imports)")]
    MadeByUpload(JobKind),
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| DomainError::Corrupt(format!("unknown job status '{s}'")))
    }
}

/// Per-location outcome counts. On a job they are sums over its ledgered chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Location ids enqueued by fanout.
    pub total: u64,
    /// Links this job created.
    pub linked: u64,
    /// Locations that were already linked to the offer by someone else.
    pub already_linked: u64,
    /// Locations that vanished (or changed brand) between fanout and linking.
    pub not_found: u64,
    /// Locations that could not be linked; see `GET /jobs/{id}/failures`.
    pub failed: u64,
    /// Locations skipped because the job was cancelled or failing.
    pub cancelled: u64,
    /// Links this job removed (unlinking kinds).
    #[serde(default)]
    pub unlinked: u64,
    /// Locations that carried no link this job could remove (unlinking kinds): not linked
    /// to the offer, or (for an undo) linked by someone other than the undone job.
    #[serde(default)]
    pub not_linked: u64,
    /// Import: rows that made a new location.
    #[serde(default)]
    pub created: u64,
    /// Import: rows that changed a location.
    #[serde(default)]
    pub updated: u64,
    /// Import: rows that said what the location already was.
    #[serde(default)]
    pub unchanged: u64,
    /// Import with `closeMissing`: active locations the file did not name, closed.
    #[serde(default)]
    pub closed: u64,
    /// Import: rows that could not be applied; each is a failure with its line and reason.
    #[serde(default)]
    pub invalid: u64,
}

impl Counters {
    pub fn processed(&self) -> u64 {
        self.attempted() + self.cancelled
    }

    /// Locations the job tried its action on (all but the cancelled ones).
    fn attempted(&self) -> u64 {
        self.linked
            + self.already_linked
            + self.not_found
            + self.failed
            + self.unlinked
            + self.not_linked
            + self.created
            + self.updated
            + self.unchanged
            + self.closed
            + self.invalid
    }

    /// Whether the failure threshold trips: enough samples and too large a share failed.
    pub fn exceeds_failure_threshold(&self, threshold: f64, min_sample: u64) -> bool {
        let attempted = self.attempted();
        attempted >= min_sample.max(1) && (self.failed as f64 / attempted as f64) > threshold
    }
}

/// The counts of one chunk, as written to the chunk ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkCounts {
    pub linked: u32,
    pub already_linked: u32,
    pub not_found: u32,
    pub failed: u32,
    pub cancelled: u32,
    #[serde(default)]
    pub unlinked: u32,
    #[serde(default)]
    pub not_linked: u32,
    #[serde(default)]
    pub created: u32,
    #[serde(default)]
    pub updated: u32,
    #[serde(default)]
    pub unchanged: u32,
    #[serde(default)]
    pub closed: u32,
    #[serde(default)]
    pub invalid: u32,
}

impl ChunkCounts {
    pub fn all_cancelled(n: usize) -> Self {
        ChunkCounts {
            cancelled: n as u32,
            ..Default::default()
        }
    }

    pub fn size(&self) -> u32 {
        self.linked
            + self.already_linked
            + self.not_found
            + self.failed
            + self.cancelled
            + self.unlinked
            + self.not_linked
            + self.created
            + self.updated
            + self.unchanged
            + self.closed
            + self.invalid
    }

    /// The signed change this chunk makes to its offer's `locationsTotal`: links made minus
    /// links removed. What the ledger adds, whatever the kind.
    pub fn offer_delta(&self) -> i64 {
        i64::from(self.linked) - i64::from(self.unlinked)
    }
}

/// What a job is: where its location ids come from (see `crate::kinds`). Stored with the
/// job and shown as its `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobKind {
    /// Every location of the offer's brand.
    #[serde(rename = "link-all-locations")]
    LinkAllLocations,
    /// Every location the offer is linked to.
    #[serde(rename = "unlink-all-locations")]
    UnlinkAllLocations,
    /// The links another job (`parentJobId`) made.
    #[serde(rename = "undo")]
    Undo,
    /// The locations another job (`parentJobId`) failed on, with that job's action.
    #[serde(rename = "retry-failures")]
    RetryFailures,
    /// Every location of the offer's brand, whatever its status: linked if the offer's
    /// standing rule wants it, unlinked if not (`PUT /offers/{offerId}/rule` starts one).
    #[serde(rename = "reconcile")]
    Reconcile,
    /// The rows of an uploaded file, each an upsert of a location by its external id (and,
    /// with `closeMissing`, the closing of the brand's active locations it did not name).
    #[serde(rename = "import-locations")]
    ImportLocations,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::LinkAllLocations,
        JobKind::UnlinkAllLocations,
        JobKind::Undo,
        JobKind::RetryFailures,
        JobKind::Reconcile,
        JobKind::ImportLocations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::LinkAllLocations => "link-all-locations",
            JobKind::UnlinkAllLocations => "unlink-all-locations",
            JobKind::Undo => "undo",
            JobKind::RetryFailures => "retry-failures",
            JobKind::Reconcile => "reconcile",
            JobKind::ImportLocations => "import-locations",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| DomainError::Corrupt(format!("unknown job kind '{s}'")))
    }
}

/// What a job does to each of its location ids. Stored with the job: a retry of an undo
/// must unlink under the undo's condition, which its kind alone does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Link the location to the offer (once per link).
    Link,
    /// Remove the offer's link to the location; with `only_by`, only a link that job made.
    Unlink { only_by: Option<JobId> },
    /// Link the location if the offer's standing rule (as it is when the chunk is done)
    /// wants it, remove the offer's link to it if not.
    Reconcile,
    /// Apply a file's rows to the brand's locations (and close the ones it does not name).
    Import,
}

impl Action {
    /// The action as a word, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Link => "linking",
            Action::Unlink { .. } => "unlinking",
            Action::Reconcile => "reconciling",
            Action::Import => "importing",
        }
    }

    pub fn to_attr(self) -> String {
        match self {
            Action::Link => "link".to_owned(),
            Action::Unlink { only_by: None } => "unlink".to_owned(),
            Action::Unlink { only_by: Some(job) } => format!("unlink-by:{job}"),
            Action::Reconcile => "reconcile".to_owned(),
            Action::Import => "import".to_owned(),
        }
    }

    pub fn from_attr(s: &str) -> Result<Self, DomainError> {
        match s {
            "link" => Ok(Action::Link),
            "unlink" => Ok(Action::Unlink { only_by: None }),
            "reconcile" => Ok(Action::Reconcile),
            "import" => Ok(Action::Import),
            _ => match s.strip_prefix("unlink-by:") {
                Some(job) => Ok(Action::Unlink {
                    only_by: Some(job.parse()?),
                }),
                None => Err(DomainError::Corrupt(format!("unknown job action '{s}'"))),
            },
        }
    }
}

/// A job as stored: what it is (its spec), status, counters, fanout progress and timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    /// What the job does, to which locations: the one value a new source or kind changes.
    pub spec: JobSpec,
    pub status: JobStatus,
    pub brand_id: BrandId,
    /// The offer it acts on; `None` for a job on the brand's locations themselves (an import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    pub callback_url: Option<WebhookUrl>,
    pub counters: Counters,
    /// Opaque position of the next brand page; `None` before the first page.
    pub fanout_cursor: Option<String>,
    pub fanout_done: bool,
    pub chunks_total: u32,
    pub chunks_done: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub notified_at: Option<DateTime<Utc>>,
    /// When the current pause began; `None` unless PAUSED.
    #[serde(default)]
    pub paused_at: Option<DateTime<Utc>>,
    /// Milliseconds spent paused in earlier pauses (the current one is not included).
    #[serde(default)]
    pub paused_ms: u64,
    /// Chunks taken off the queue while the job was paused, waiting to be re-sent.
    #[serde(default)]
    pub chunks_parked: u32,
    /// When it may start (`notBefore` of the creating request); SCHEDULED until then.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// The `sub` of the caller that created it (who may not approve it).
    #[serde(default)]
    pub created_by: Option<String>,
    /// The `sub` of the caller that approved it.
    #[serde(default)]
    pub approved_by: Option<String>,
}

impl Job {
    /// Whether its owner may ask `action` of the job now, by its status and counters. (An
    /// undo of a job that has one already is refused at creation with 409 and the existing
    /// undo's `Location`: that needs a read this rule does not make.)
    pub fn allows(&self, action: OwnerAction) -> bool {
        match action {
            OwnerAction::Cancel => {
                Transition::Cancel.allows(self.status) || Transition::Withdraw.allows(self.status)
            }
            OwnerAction::Pause => Transition::Pause.allows(self.status),
            OwnerAction::Resume => Transition::Resume.allows(self.status),
            OwnerAction::Undo => plan(JobKind::Undo, Some(self)).is_ok(),
            OwnerAction::RetryFailures => plan(JobKind::RetryFailures, Some(self)).is_ok(),
            OwnerAction::Approve => Transition::Approve.allows(self.status),
            OwnerAction::Reject => Transition::Reject.allows(self.status),
        }
    }

    /// Every action its owner may ask of the job now.
    pub fn allowed_actions(&self) -> Vec<OwnerAction> {
        OwnerAction::ALL
            .into_iter()
            .filter(|a| self.allows(*a))
            .collect()
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_attr())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Action::from_attr(&s).map_err(serde::de::Error::custom)
    }
}

impl Job {
    /// A PENDING job of `spec`, nothing done yet.
    pub fn planned(
        spec: JobSpec,
        brand_id: BrandId,
        offer_id: Option<OfferId>,
        callback_url: Option<WebhookUrl>,
        now: DateTime<Utc>,
    ) -> Self {
        Job {
            id: JobId::new_v7(),
            spec,
            status: JobStatus::Pending,
            brand_id,
            offer_id,
            callback_url,
            counters: Counters::default(),
            fanout_cursor: None,
            fanout_done: false,
            chunks_total: 0,
            chunks_done: 0,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            notified_at: None,
            paused_at: None,
            paused_ms: 0,
            chunks_parked: 0,
            not_before: None,
            created_by: None,
            approved_by: None,
        }
    }

    /// The status a new job is created in: AWAITING_APPROVAL if it needs an approval, else
    /// SCHEDULED while its `notBefore` is ahead, else PENDING.
    pub fn held(mut self, approval: bool, now: DateTime<Utc>) -> Self {
        self.status = if approval {
            JobStatus::AwaitingApproval
        } else if self.not_before.is_some_and(|at| at > now) {
            JobStatus::Scheduled
        } else {
            JobStatus::Pending
        };
        self
    }

    /// How an approval at `now` releases it: to start now, or at its `notBefore`.
    pub fn approval_at(&self, now: DateTime<Utc>) -> Transition {
        if self.not_before.is_some_and(|at| at > now) {
            Transition::ApproveForLater
        } else {
            Transition::Approve
        }
    }

    /// A link-all job.
    pub fn new(
        brand_id: BrandId,
        offer_id: OfferId,
        callback_url: Option<WebhookUrl>,
        now: DateTime<Utc>,
    ) -> Self {
        let spec = plan(JobKind::LinkAllLocations, None).expect("link-all needs no parent");
        Job::planned(spec, brand_id, Some(offer_id), callback_url, now)
    }

    /// All chunks enqueued by a finished fanout are accounted: the job may complete.
    pub fn is_fully_accounted(&self) -> bool {
        self.fanout_done && self.chunks_done >= self.chunks_total
    }

    /// Share of enqueued locations already accounted, 0..=100. Stays below 100 until
    /// fanout has finished, because `total` still grows until then.
    pub fn percent(&self) -> f64 {
        if self.status.is_terminal() {
            return 100.0;
        }
        let total = self.counters.total;
        if total == 0 {
            return 0.0;
        }
        let pct = 100.0 * self.counters.processed() as f64 / total as f64;
        if self.fanout_done {
            pct.min(100.0)
        } else {
            pct.min(99.0)
        }
    }

    /// Time spent paused so far, the current pause included.
    pub fn paused_for(&self, now: DateTime<Utc>) -> std::time::Duration {
        let current = self
            .paused_at
            .map_or(0, |at| (now - at).num_milliseconds().max(0) as u64);
        std::time::Duration::from_millis(self.paused_ms + current)
    }

    /// Accounted locations per second of the time the job ran (since it started, less the
    /// time it spent paused).
    pub fn rate_per_sec(&self, now: DateTime<Utc>) -> Option<f64> {
        let started = self.started_at?;
        let until = self.finished_at.unwrap_or(now);
        let secs = (until - started).num_milliseconds() as f64 / 1000.0
            - self.paused_for(now).as_secs_f64();
        (secs > 0.0).then(|| self.counters.processed() as f64 / secs)
    }

    /// Seconds until every enqueued location is accounted, at the rate it ran at (a paused
    /// job: the running time still needed once resumed). Unknown until fanout is done (the
    /// total is not final before then).
    pub fn eta_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        if self.status.is_terminal() {
            return Some(0.0);
        }
        if !self.fanout_done {
            return None;
        }
        let rate = self.rate_per_sec(now).filter(|r| *r > 0.0)?;
        let left = self
            .counters
            .total
            .saturating_sub(self.counters.processed());
        Some(left as f64 / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instant the tests' jobs and events are made at: fixed, so nothing ages.
    fn at() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    fn counters(linked: u64, failed: u64) -> Counters {
        Counters {
            total: linked + failed,
            linked,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn a_running_job_without_failures_succeeds() {
        assert_eq!(
            JobStatus::Running.completes_as(&counters(10, 0)),
            Some(JobStatus::Succeeded)
        );
    }

    #[test]
    fn a_running_job_with_failures_completes_with_errors() {
        assert_eq!(
            JobStatus::Running.completes_as(&counters(10, 1)),
            Some(JobStatus::CompletedWithErrors)
        );
    }

    #[test]
    fn cancelling_ends_cancelled_and_failing_ends_failed() {
        let c = counters(1, 1);
        assert_eq!(
            JobStatus::Cancelling.completes_as(&c),
            Some(JobStatus::Cancelled)
        );
        assert_eq!(JobStatus::Failing.completes_as(&c), Some(JobStatus::Failed));
    }

    #[test]
    fn pending_and_terminal_jobs_cannot_complete() {
        let c = counters(1, 0);
        assert_eq!(JobStatus::Pending.completes_as(&c), None);
        for status in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert_eq!(status.completes_as(&c), None, "{status}");
        }
    }

    #[test]
    fn only_pending_running_or_paused_jobs_can_be_cancelled_and_held_ones_withdrawn() {
        let cancellable: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.can_cancel())
            .collect();
        assert_eq!(
            cancellable,
            vec![JobStatus::Pending, JobStatus::Running, JobStatus::Paused]
        );
        let withdrawn: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| Transition::Withdraw.allows(*s))
            .collect();
        assert_eq!(
            withdrawn,
            vec![JobStatus::Scheduled, JobStatus::AwaitingApproval]
        );
        let pausable: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.can_pause())
            .collect();
        assert_eq!(pausable, vec![JobStatus::Pending, JobStatus::Running]);
        assert!(!JobStatus::Paused.skips_chunks());
        assert_eq!(JobStatus::Paused.completes_as(&counters(1, 0)), None);
    }

    #[test]
    fn transitions_start_where_the_state_machine_says_and_their_sql_lists_exactly_those() {
        assert_eq!(
            Transition::Cancel.sql_condition("status"),
            "status IN ('PENDING', 'RUNNING', 'PAUSED')"
        );
        for t in Transition::ALL {
            for s in JobStatus::ALL {
                let quoted = format!("'{}'", s.as_str());
                assert_eq!(
                    t.sql_condition("status").contains(&quoted),
                    t.allows(s),
                    "{t:?} from {s}"
                );
            }
            assert!(!t.allows(t.to()), "{t:?} leaves the job where it was");
            assert!(t.from().iter().all(|s| !s.is_terminal()), "{t:?}");
        }
    }

    #[test]
    fn a_new_job_is_held_for_its_approval_then_its_time() {
        let now = at();
        let later = now + chrono::Duration::seconds(3);
        let job = |not_before| Job {
            not_before,
            ..Job::new(BrandId::new_random(), OfferId::new_random(), None, now)
        };
        assert_eq!(job(None).held(false, now).status, JobStatus::Pending);
        assert_eq!(job(Some(now)).held(false, now).status, JobStatus::Pending);
        assert_eq!(
            job(Some(later)).held(false, now).status,
            JobStatus::Scheduled
        );
        let awaiting = job(Some(later)).held(true, now);
        assert_eq!(awaiting.status, JobStatus::AwaitingApproval);
        assert_eq!(awaiting.approval_at(now), Transition::ApproveForLater);
        assert_eq!(awaiting.approval_at(later), Transition::Approve);
        assert!(JobStatus::Scheduled.is_held() && JobStatus::AwaitingApproval.is_held());
        assert!(!JobStatus::Pending.is_held());
    }

    #[test]
    fn allowed_actions_follow_status_action_and_counters() {
        let brand = BrandId::new_random();
        let job_in = |kind: JobKind, status: JobStatus, failed: u64| {
            let spec = plan(kind, None).unwrap();
            let mut job = Job::planned(spec, brand, Some(OfferId::new_random()), None, at());
            job.status = status;
            job.counters = counters(3, failed);
            job
        };
        use OwnerAction::*;
        let link = JobKind::LinkAllLocations;
        let expect = [
            (link, JobStatus::Scheduled, 0, vec![Cancel]),
            (
                link,
                JobStatus::AwaitingApproval,
                0,
                vec![Cancel, Approve, Reject],
            ),
            (link, JobStatus::Pending, 0, vec![Cancel, Pause]),
            (link, JobStatus::Running, 0, vec![Cancel, Pause]),
            (link, JobStatus::Paused, 0, vec![Cancel, Resume]),
            (link, JobStatus::Cancelling, 0, vec![]),
            (link, JobStatus::Failing, 1, vec![]),
            (link, JobStatus::Succeeded, 0, vec![Undo]),
            (
                link,
                JobStatus::CompletedWithErrors,
                1,
                vec![Undo, RetryFailures],
            ),
            (link, JobStatus::Failed, 1, vec![Undo, RetryFailures]),
            (link, JobStatus::Cancelled, 0, vec![Undo]),
            (
                JobKind::UnlinkAllLocations,
                JobStatus::CompletedWithErrors,
                1,
                vec![RetryFailures],
            ),
            (JobKind::UnlinkAllLocations, JobStatus::Succeeded, 0, vec![]),
        ];
        for (kind, status, failed, allowed) in expect {
            let job = job_in(kind, status, failed);
            assert_eq!(job.allowed_actions(), allowed, "{kind} {status}");
        }
        let running = job_in(link, JobStatus::Running, 0);
        assert_eq!(
            plan(JobKind::Undo, Some(&running)),
            Err(NotDerivable::NotEnded(running.id, JobStatus::Running))
        );
        let done = job_in(link, JobStatus::Succeeded, 0);
        let undo = plan(JobKind::Undo, Some(&done)).unwrap();
        assert_eq!(
            undo.action,
            Action::Unlink {
                only_by: Some(done.id)
            }
        );
        assert_eq!(undo.once_per_parent(), Some(done.id));
        assert_eq!(
            undo.source.builtin(),
            Some(super::super::Source::OfferLinks {
                made_by: Some(done.id),
                filter: None
            })
        );
        assert_eq!(
            plan(JobKind::RetryFailures, Some(&done)),
            Err(NotDerivable::NoFailures(done.id))
        );
        let failed = job_in(JobKind::UnlinkAllLocations, JobStatus::Failed, 2);
        let retry = plan(JobKind::RetryFailures, Some(&failed)).unwrap();
        assert_eq!(retry.action, failed.spec.action);
        assert_eq!(retry.parent_job_id, Some(failed.id));
        assert_eq!(retry.once_per_parent(), None);
        assert_eq!(
            plan(JobKind::LinkAllLocations, Some(&failed)),
            Err(NotDerivable::NotDerivedKind(
                failed.id,
                JobKind::LinkAllLocations
            ))
        );
        assert_eq!(
            plan(JobKind::Undo, None),
            Err(NotDerivable::NeedsParent(JobKind::Undo))
        );
    }

    #[test]
    fn time_paused_does_not_count_toward_the_rate() {
        let t0 = at();
        let mut job = Job::new(BrandId::new_random(), OfferId::new_random(), None, t0);
        job.status = JobStatus::Paused;
        job.started_at = Some(t0);
        job.counters = counters(100, 0);
        job.fanout_done = true;
        job.counters.total = 300;
        // Ran 10 s, paused 20 s earlier and for the last 10 s.
        job.paused_ms = 20_000;
        job.paused_at = Some(t0 + chrono::Duration::seconds(30));
        let now = t0 + chrono::Duration::seconds(40);
        assert_eq!(job.paused_for(now), std::time::Duration::from_secs(30));
        assert_eq!(job.rate_per_sec(now), Some(10.0));
        assert_eq!(job.eta_seconds(now), Some(20.0));
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }

    #[test]
    fn kinds_and_actions_round_trip_through_their_names() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        let undone = JobId::new_v7();
        for action in [
            Action::Link,
            Action::Unlink { only_by: None },
            Action::Unlink {
                only_by: Some(undone),
            },
        ] {
            assert_eq!(Action::from_attr(&action.to_attr()).unwrap(), action);
        }
        assert!(Action::from_attr("relink").is_err());
    }

    #[test]
    fn a_chunk_changes_its_offer_by_links_made_minus_links_removed() {
        let linking = ChunkCounts {
            linked: 7,
            already_linked: 3,
            ..Default::default()
        };
        let unlinking = ChunkCounts {
            unlinked: 4,
            not_linked: 6,
            ..Default::default()
        };
        assert_eq!((linking.offer_delta(), linking.size()), (7, 10));
        assert_eq!((unlinking.offer_delta(), unlinking.size()), (-4, 10));
    }

    #[test]
    fn failure_threshold_needs_the_minimum_sample() {
        let c = counters(5, 5);
        assert!(!c.exceeds_failure_threshold(0.1, 100));
        assert!(c.exceeds_failure_threshold(0.1, 10));
        assert!(!c.exceeds_failure_threshold(0.5, 10));
    }

    #[test]
    fn percent_stays_below_100_until_fanout_is_done() {
        let mut job = Job::new(BrandId::new_random(), OfferId::new_random(), None, at());
        job.status = JobStatus::Running;
        job.counters = counters(100, 0);
        assert_eq!(job.percent(), 99.0);
        job.fanout_done = true;
        assert_eq!(job.percent(), 100.0);
    }
}
