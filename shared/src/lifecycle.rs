//! Job lifecycle steps shared by worker, fanout, the DLQ consumer and the sweeper:
//! completing a fully accounted job and publishing its terminal event at least once.

use chrono::Utc;
use tracing::{info, warn};

use crate::domain::{Job, JobEvent};
use crate::error::StoreResult;
use crate::ports::{Completion, Ports};

/// Brings `job` as far as it can go: completes it if every chunk is accounted, then
/// publishes its terminal event if nobody has yet (DESIGN §5.3, §5.4). Returns the job as
/// it is afterwards.
pub async fn settle(ports: &Ports, job: Job) -> StoreResult<Job> {
    let job = if !job.status.is_terminal() && job.is_fully_accounted() {
        match ports.jobs.try_complete(job.id).await? {
            Completion::Won(done) => {
                info!(job_id = %done.id, status = %done.status, "job finished");
                done
            }
            Completion::NotYet(job) | Completion::AlreadyTerminal(job) => job,
        }
    } else {
        job
    };
    if job.status.is_terminal() && job.notified_at.is_none() {
        notify(ports, &job).await?;
    }
    Ok(job)
}

/// Publishes the terminal event, then records that it was sent. Dying in between means a
/// second publish later (at-least-once); receivers dedupe on `eventId`.
pub async fn notify(ports: &Ports, job: &Job) -> StoreResult<()> {
    let Some(event) = JobEvent::terminal(job) else {
        warn!(job_id = %job.id, status = %job.status, "no event for a job that is not terminal");
        return Ok(());
    };
    ports.events.publish(&event).await?;
    ports.jobs.mark_notified(job.id, Utc::now()).await?;
    info!(job_id = %job.id, event = event.event_type.as_str(), "job event published");
    Ok(())
}
