//! Job lifecycle steps shared by worker, fanout, the DLQ consumer and the sweeper:
//! completing a fully accounted job and publishing its terminal event at least once.

use chrono::Utc;
use tracing::{info, warn};

use crate::domain::{plan, FanoutMessage, FollowUp, Job, JobEvent, JobKind, JobStatus, Transition};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Completion, CreateOutcome, IdempotencyClaim, Ports, Released};

/// Whether a caller that finds a job terminal but not yet notified publishes its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Republish {
    /// Only the winner of the terminal transition publishes (the normal path: another
    /// caller that finds the job terminal is racing the winner, not replacing it).
    No,
    /// A replay or a sweep: the winner may have died between the transition and the
    /// publish, so publish again (receivers dedupe on `eventId`).
    IfUnnotified,
}

/// Brings `job` as far as it can go: completes it if every chunk is accounted (the winner
/// publishes the terminal event, DESIGN §5.3, §5.4). Returns the job as it is afterwards.
pub async fn settle(ports: &Ports, job: Job, republish: Republish) -> StoreResult<Job> {
    if !job.status.is_terminal() && job.is_fully_accounted() {
        return match ports.jobs.try_complete(job.id).await? {
            Completion::Won(done) => {
                info!(job_id = %done.id, status = %done.status, "job finished");
                notify(ports, &done).await?;
                Ok(done)
            }
            Completion::AlreadyTerminal(done) if republish == Republish::IfUnnotified => {
                notify_if_needed(ports, done).await
            }
            Completion::NotYet(job) | Completion::AlreadyTerminal(job) => Ok(job),
        };
    }
    if republish == Republish::IfUnnotified {
        return notify_if_needed(ports, job).await;
    }
    Ok(job)
}

async fn notify_if_needed(ports: &Ports, job: Job) -> StoreResult<Job> {
    if job.status.is_terminal() && job.notified_at.is_none() {
        notify(ports, &job).await?;
    }
    Ok(job)
}

/// Publishes the job's event (its terminal one, or that it awaits approval), then records
/// that it was sent. Dying in between means a
/// second publish later (at-least-once); receivers dedupe on `eventId`.
pub async fn notify(ports: &Ports, job: &Job) -> StoreResult<()> {
    if job.status.is_terminal() {
        follow_up(ports, job).await?;
    }
    let Some(event) = JobEvent::of_status(job) else {
        warn!(job_id = %job.id, status = %job.status, "no event for a job in this status");
        return Ok(());
    };
    ports.events.publish(&event).await?;
    ports.jobs.mark_notified(job.id, ports.clock.now()).await?;
    info!(job_id = %job.id, event = event.event_type.as_str(), "job event published");
    Ok(())
}

/// Releases the SCHEDULED jobs whose `notBefore` has come: each moves to PENDING in one
/// conditional change (however many schedulers run, one wins) and is started like a job
/// just created (a fanout message; if that is lost, the sweeper starts a PENDING job after
/// `SWEEP_PENDING_AFTER_SECS`). How many this call released.
pub async fn release_due(ports: &Ports) -> StoreResult<usize> {
    let now = ports.clock.now();
    let mut released = 0;
    for job in ports.jobs.due_jobs(now, 100).await? {
        match ports
            .jobs
            .release_job(job.id, Transition::Due, None, now)
            .await?
        {
            Some(Released::Released(job)) => {
                ports
                    .fanout_queue
                    .send(&FanoutMessage { job_id: job.id })
                    .await?;
                info!(job_id = %job.id, not_before = ?job.not_before, "scheduled job released");
                released += 1;
            }
            // Released by another scheduler, or cancelled meanwhile.
            Some(Released::NotHeld(_)) | None => {}
        }
    }
    for (offer, at) in ports.jobs.due_offer_starts(now, 100).await? {
        match start_offer(ports, offer, at).await {
            Ok(true) => released += 1,
            Ok(false) => {}
            // The next tick tries again (another job holds the offer, a store hiccup).
            Err(e) => warn!(offer_id = %offer, error = %e, "an offer's start waits"),
        }
    }
    Ok(released)
}

/// Makes the job an offer's schedule starts with, once its `startsAt` (`at`) has come: a
/// `reconcile` if the offer follows a standing rule now, else a link-all; either ends by
/// making the end's unlink-all (`JobSpec::then`) if the schedule has an end. Once however
/// often this runs (its idempotency claim is derived from the offer and the time). Whether
/// a job was made.
async fn start_offer(
    ports: &Ports,
    offer_id: crate::domain::OfferId,
    at: chrono::DateTime<Utc>,
) -> StoreResult<bool> {
    let Some(offer) = ports.catalog.get_offer(offer_id).await? else {
        ports.jobs.clear_offer_start(offer_id).await?;
        return Ok(false);
    };
    let mut schedule = offer.schedule.clone().unwrap_or_default();
    if schedule.starts_at != Some(at) || schedule.start_job_id.is_some() {
        // Moved or made already: this start is stale.
        ports.jobs.clear_offer_start(offer_id).await?;
        return Ok(false);
    }
    let kind = match ports.catalog.get_rule(offer_id).await? {
        Some(_) => JobKind::Reconcile,
        None => JobKind::LinkAllLocations,
    };
    let then = schedule.ends_at.map(|not_before| FollowUp {
        kind: JobKind::UnlinkAllLocations,
        not_before,
    });
    let spec = crate::domain::JobSpec {
        then,
        ..plan(kind, None)
            .map_err(|e| StoreError::internal(format!("offer {offer_id}'s start: {e}")))?
    };
    let now = ports.clock.now();
    let job = Job::planned(spec, offer.brand_id, Some(offer_id), None, now);
    let key = derived_key(&format!("start:{offer_id}:{}", at.timestamp_millis()));
    let job = match ports.jobs.create_job(&job, Some(&key)).await? {
        CreateOutcome::Created(job) | CreateOutcome::Replayed(job) => job,
        CreateOutcome::OfferGone => {
            ports.jobs.clear_offer_start(offer_id).await?;
            return Ok(false);
        }
        CreateOutcome::OfferBusy(other) => {
            return Err(StoreError::unavailable(format!(
                "offer {offer_id} has an active job, {other}"
            )))
        }
        other => {
            return Err(StoreError::internal(format!(
                "offer {offer_id}'s start was refused: {other:?}"
            )))
        }
    };
    ports
        .fanout_queue
        .send(&FanoutMessage { job_id: job.id })
        .await?;
    schedule.start_job_id = Some(job.id);
    ports
        .catalog
        .set_offer_schedule(offer_id, &schedule)
        .await?;
    ports.jobs.clear_offer_start(offer_id).await?;
    info!(offer_id = %offer_id, job_id = %job.id, kind = %kind, "offer started");
    Ok(true)
}

/// An idempotency claim of a job the pipeline makes itself, from what makes it unique.
fn derived_key(name: &str) -> IdempotencyClaim {
    let key = uuid::Uuid::new_v5(&DERIVED_NAMESPACE, name.as_bytes()).to_string();
    IdempotencyClaim {
        key_hash: key.clone(),
        request_hash: key,
    }
}

/// Makes the job an ended job asks for (`JobSpec::then`: an offer's end after its start),
/// before its end is announced, so that a crash in between makes it on the next try
/// (the sweeper re-notifies a job without `notifiedAt`). Once however often this runs: the
/// new job's idempotency claim is derived from the ended job. It is recorded on the offer's
/// schedule. If another job holds the offer then, this fails (retryable) and is tried again.
async fn follow_up(ports: &Ports, job: &Job) -> StoreResult<()> {
    let (Some(then), Some(offer)) = (job.spec.then, job.offer_id) else {
        return Ok(());
    };
    let spec = plan(then.kind, None)
        .map_err(|e| StoreError::internal(format!("job {}'s follow-up: {e}", job.id)))?;
    // The offer's schedule as it is now says when (its end may have moved since).
    let Some(current) = ports.catalog.get_offer(offer).await? else {
        return Ok(());
    };
    let mut schedule = current.schedule.unwrap_or_default();
    let not_before = schedule.ends_at.unwrap_or(then.not_before);
    let now = ports.clock.now();
    let next = Job {
        not_before: Some(not_before),
        created_by: job.created_by.clone(),
        ..Job::planned(spec, job.brand_id, Some(offer), None, now)
    }
    .held(false, now);
    let claim = derived_key(&format!("follow-up:{}", job.id));
    let next = match ports.jobs.create_job(&next, Some(&claim)).await? {
        CreateOutcome::Created(next) | CreateOutcome::Replayed(next) => next,
        CreateOutcome::OfferGone => return Ok(()),
        CreateOutcome::OfferBusy(other) => {
            return Err(StoreError::unavailable(format!(
                "job {}'s follow-up waits: offer {offer} has an active job, {other}",
                job.id
            )))
        }
        other => {
            return Err(StoreError::internal(format!(
                "job {}'s follow-up was refused: {other:?}",
                job.id
            )))
        }
    };
    if next.status == JobStatus::Pending {
        ports
            .fanout_queue
            .send(&FanoutMessage { job_id: next.id })
            .await?;
    }
    if schedule.end_job_id != Some(next.id) {
        schedule.end_job_id = Some(next.id);
        ports.catalog.set_offer_schedule(offer, &schedule).await?;
    }
    info!(job_id = %job.id, follow_up = %next.id, status = %next.status, "follow-up job made");
    Ok(())
}

/// Namespace of the idempotency keys of jobs the pipeline makes (an offer's start and end).
const DERIVED_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c0e_91d2_7b44_4f3a_8e61_02a9_d4f7_b0c1);

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub notified: usize,
    pub completed: usize,
    pub restarted_fanouts: usize,
    pub stalled: usize,
    pub rescheduled_deliveries: usize,
}

/// Finishes what an interrupted step left undone, for jobs untouched since `idle_since`
/// (and PENDING jobs untouched since `pending_since`, which no request is starting any
/// more): publishes missing terminal events, completes fully accounted jobs, restarts
/// fanouts that stopped (a lost fanout message, a crash between job creation and start),
/// and flags jobs whose chunks make no progress.
pub async fn sweep(
    ports: &Ports,
    idle_since: chrono::DateTime<Utc>,
    pending_since: chrono::DateTime<Utc>,
) -> StoreResult<SweepReport> {
    let mut report = SweepReport::default();
    let newest = idle_since.max(pending_since);
    for job in ports.jobs.unsettled_jobs(newest, 100).await? {
        let idle = job.updated_at < idle_since;
        let unstarted =
            job.status == crate::domain::JobStatus::Pending && job.updated_at < pending_since;
        if !(idle || unstarted) {
            continue;
        }
        if job.status == crate::domain::JobStatus::Paused {
            // Waiting for its owner; its resume restarts it.
            continue;
        }
        if job.status.is_held() {
            // Released by the scheduler or an approval; a job awaiting approval whose event
            // was lost (its creator died before publishing) is announced here.
            if job.status == crate::domain::JobStatus::AwaitingApproval && job.notified_at.is_none()
            {
                notify(ports, &job).await?;
                report.notified += 1;
            }
            continue;
        }
        if job.status.is_terminal() {
            notify(ports, &job).await?;
            report.notified += 1;
        } else if job.chunks_parked > 0 {
            // Left PAUSED but its parked chunks were not re-sent (the fanout message was lost).
            let message = crate::domain::FanoutMessage { job_id: job.id };
            ports.fanout_queue.send(&message).await?;
            warn!(job_id = %job.id, parked = job.chunks_parked, "parked chunks left behind; fanout restarted");
            report.restarted_fanouts += 1;
        } else if job.is_fully_accounted() {
            if settle(ports, job, Republish::IfUnnotified)
                .await?
                .status
                .is_terminal()
            {
                report.completed += 1;
            }
        } else if !job.fanout_done {
            let message = crate::domain::FanoutMessage { job_id: job.id };
            ports.fanout_queue.send(&message).await?;
            warn!(job_id = %job.id, status = %job.status, "fanout idle; restarted");
            report.restarted_fanouts += 1;
        } else {
            warn!(
                job_id = %job.id,
                chunks_done = job.chunks_done,
                chunks_total = job.chunks_total,
                "job has made no progress; chunks are still queued or dead-lettered"
            );
            report.stalled += 1;
        }
    }
    report.rescheduled_deliveries = reschedule_overdue_deliveries(ports).await?;
    Ok(report)
}

/// Asks the webhook deliverer to attempt `delivery` after `delay` (zero: now). The message
/// names the delivery's attempt count; once another attempt has been recorded it is stale
/// and dropped, so extra copies cost nothing.
pub async fn schedule_attempt(
    queue: &crate::ports::TypedQueue<crate::domain::WebhookMessage>,
    delivery: &crate::domain::Delivery,
    delay: std::time::Duration,
) -> StoreResult<()> {
    schedule_attempt_in_slot(queue, delivery, delay, None).await
}

/// [`schedule_attempt`] for an attempt whose rate-limited subscription keeps it the send
/// slot `send_slot` (µs since the epoch): it sends then without asking for another.
pub async fn schedule_attempt_in_slot(
    queue: &crate::ports::TypedQueue<crate::domain::WebhookMessage>,
    delivery: &crate::domain::Delivery,
    delay: std::time::Duration,
    send_slot: Option<i64>,
) -> StoreResult<()> {
    let message = crate::domain::WebhookMessage::Attempt {
        subscription_id: delivery.subscription_id,
        delivery_id: delivery.id,
        attempts: delivery.attempts,
        send_slot,
    };
    queue
        .send_delayed(&message, delay.min(crate::ports::MAX_SEND_DELAY))
        .await
}

/// Sends a delivery again now, whatever its state: same `webhook-id`, a new timestamp.
/// `None` if another attempt changed it meanwhile (ask again).
pub async fn redeliver(
    ports: &Ports,
    delivery: crate::domain::Delivery,
) -> StoreResult<Option<crate::domain::Delivery>> {
    let expected = delivery.attempts;
    let again = delivery.due_again(ports.clock.now());
    if !ports.webhooks.update_delivery(&again, expected).await? {
        return Ok(None);
    }
    // Dying right here leaves the delivery pending without a message: the sweeper finds
    // overdue deliveries and schedules them again.
    schedule_attempt(&ports.webhook_queue, &again, std::time::Duration::ZERO).await?;
    Ok(Some(again))
}

/// Pending deliveries are overdue this long after their attempt was due: their message was
/// lost (a crash between recording a delivery's state and scheduling its next attempt).
pub const DELIVERY_OVERDUE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Schedules overdue deliveries again; how many.
pub async fn reschedule_overdue_deliveries(ports: &Ports) -> StoreResult<usize> {
    let before = ports.clock.now()
        - chrono::Duration::from_std(DELIVERY_OVERDUE_AFTER).unwrap_or(chrono::Duration::zero());
    let overdue = ports.webhooks.overdue_deliveries(before, 100).await?;
    for delivery in &overdue {
        warn!(delivery_id = %delivery.id, "webhook delivery overdue; scheduled again");
        schedule_attempt(&ports.webhook_queue, delivery, std::time::Duration::ZERO).await?;
    }
    Ok(overdue.len())
}
