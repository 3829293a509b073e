//! Fanout: pages a job's location ids (where they come from is the job kind's business:
//! `bulklink_core::kinds::page_ids`), cuts each page into
//! chunk messages and advances the job's cursor by compare-and-set (DESIGN §5.2). Chunk
//! sequence numbers derive from the cursor position, so a replayed page resends the same
//! sequence numbers and the worker's ledger dedupes them. Near its deadline it hands over
//! to a fresh invocation by re-enqueueing itself.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod lambda;

use std::sync::Arc;
use std::time::Duration;

use bulklink_core::domain::{
    ChunkMessage, ChunkSeq, ChunkTally, Counter, DomainError, FanoutMessage, Job, JobEvent, JobId,
    JobStatus,
};
use bulklink_core::importing::{PageLimits, WorkPage};
use bulklink_core::lifecycle;
use bulklink_core::ports::{Advanced, Failure, FanoutAdvance, Ports, Queue, ReceivedMessage};
use bulklink_core::{Settings, StoreError};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

/// SendMessageBatch takes at most 10 entries.
const SEND_BATCH: usize = 10;
/// Batches in flight at once: hides per-request latency against SQS.
const SENDS_IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    BadMessage(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FanoutError {
    /// What the queue policy (`bulklink_lambda::leave_for_redelivery`) makes of it.
    pub fn failure(&self) -> bulklink_lambda::Failure<'_> {
        match self {
            FanoutError::BadMessage(_) => bulklink_lambda::Failure::Undecodable(self),
            FanoutError::Store(_) => bulklink_lambda::Failure::Passing(self),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FanoutReport {
    /// Every page is enqueued (or the job was cancelled before the end).
    Finished(Job),
    /// The deadline came first; a fresh fanout message continues from the cursor.
    HandedOver(Job),
    /// Another fanout invocation advanced the cursor first; it carries on.
    Superseded(Job),
    /// The job is paused: its resume sends a fresh fanout message.
    Paused(Job),
    /// The next page waits for the chunks sent so far (an import's closing of what its file
    /// did not name); a delayed fanout message looks again.
    Waiting(Job),
    /// Nothing to do: the job is gone or already finished.
    Nothing,
}

pub struct Fanout {
    ports: Ports,
    limits: PageLimits,
    deadline_margin: Duration,
    /// How long an import waits between looks at whether its rows are all applied.
    wait_interval: Duration,
}

/// The longest an import's fanout waits between looks at whether its rows are all applied.
const MAX_WAIT: Duration = Duration::from_secs(5);

impl Fanout {
    pub fn new(ports: Ports, settings: &Settings) -> Self {
        Fanout {
            ports,
            limits: PageLimits {
                page_size: settings.page_size,
                chunk_size: settings.chunk_size,
                max_import_bytes: settings.max_import_bytes,
            },
            deadline_margin: settings.fanout_deadline_margin,
            wait_interval: (settings.visibility_timeout / 10)
                .clamp(Duration::from_millis(200), MAX_WAIT),
        }
    }

    /// Handles one fanout queue message: a job to fan out, or an object store's word that an
    /// import's file arrived (which starts its job).
    pub async fn handle(&self, body: &str, deadline: Instant) -> Result<FanoutReport, FanoutError> {
        if let Some(arrived) = bulklink_core::uploads::arrivals(body) {
            for import in arrived? {
                match bulklink_core::uploads::start_import(&self.ports, import).await? {
                    Some(job) => {
                        info!(import_id = %import, job_id = %job.id, "import file arrived; its job starts")
                    }
                    None => {
                        warn!(import_id = %import, "a file arrived for an import that does not exist")
                    }
                }
            }
            return Ok(FanoutReport::Nothing);
        }
        let message = FanoutMessage::decode(body)?;
        self.run(message.job_id, deadline).await
    }

    /// Fans a job out from its stored cursor until done or `deadline` is near.
    pub async fn run(&self, job_id: JobId, deadline: Instant) -> Result<FanoutReport, FanoutError> {
        let span = tracing::info_span!("fanout", job_id = %job_id);
        async {
            let Some(mut job) = self.ports.jobs.start_job(job_id).await? else {
                warn!("fanout for a job that does not exist");
                return Ok(FanoutReport::Nothing);
            };
            if job.status == JobStatus::Running
                && job.fanout_cursor.is_none()
                && job.chunks_total == 0
                && !job.fanout_done
            {
                // Before its first page (again, if the fanout that published it died before
                // its first step: the event keeps its id, deliveries are made once).
                self.ports.events.publish(&JobEvent::started(&job)).await?;
            }
            loop {
                if job.status.is_terminal() {
                    return Ok(FanoutReport::Nothing);
                }
                if job.status == JobStatus::Paused {
                    info!("job is paused; fanout stops until it resumes");
                    return Ok(FanoutReport::Paused(job));
                }
                if job.status.is_held() {
                    info!(status = %job.status, "job is held; fanout waits for its release");
                    return Ok(FanoutReport::Nothing);
                }
                if job.chunks_parked > 0 {
                    job = self.resend_parked(job).await?;
                    continue;
                }
                if job.fanout_done {
                    return Ok(FanoutReport::Finished(
                        lifecycle::settle(&self.ports, job, lifecycle::Republish::No).await?,
                    ));
                }
                if Instant::now() + self.deadline_margin >= deadline {
                    self.ports
                        .fanout_queue
                        .send(&FanoutMessage { job_id })
                        .await?;
                    info!(
                        chunks = job.chunks_total,
                        "deadline near; fanout handed over"
                    );
                    return Ok(FanoutReport::HandedOver(job));
                }
                job = match self.fan_out_one_page(&job).await? {
                    Step::Advanced(advanced) => match *advanced {
                        Advanced::Applied(job) => job,
                        Advanced::Superseded(job) => {
                            info!("another fanout advanced the cursor first; stopping");
                            return Ok(FanoutReport::Superseded(job));
                        }
                    },
                    Step::Wait => {
                        self.ports
                            .fanout_queue
                            .send_delayed(&FanoutMessage { job_id }, self.wait_interval)
                            .await?;
                        return Ok(FanoutReport::Waiting(job));
                    }
                };
            }
        }
        .instrument(span)
        .await
    }

    /// Re-sends the chunks parked while the job was paused (same group, same sequence
    /// numbers: the ledger dedupes a chunk that was also accounted), then removes each
    /// parking. A crash between the two re-sends them again, which costs nothing. The job
    /// as it is after.
    async fn resend_parked(&self, job: Job) -> Result<Job, FanoutError> {
        let group = job.brand_id.to_string();
        // Bounded: a chunk parked again meanwhile (a second pause) stays for that pause.
        let rounds = (job.chunks_parked as usize).div_ceil(SEND_BATCH) + 1;
        for _ in 0..rounds {
            let parked = self.ports.ledger.parked_chunks(job.id, SEND_BATCH).await?;
            if parked.is_empty() {
                break;
            }
            // The bodies exactly as they were received and parked.
            let bodies: Vec<String> = parked.iter().map(|p| p.body.clone()).collect();
            self.ports
                .chunk_queue
                .raw()
                .send_grouped(Some(&group), &bodies)
                .await?;
            for chunk in &parked {
                self.ports.ledger.unpark_chunk(job.id, chunk).await?;
            }
            info!(chunks = parked.len(), "parked chunks re-sent");
        }
        let id = job.id;
        match self.ports.jobs.get_job(id).await? {
            Some(job) if job.chunks_parked == 0 || job.status == JobStatus::Paused => Ok(job),
            Some(job) => Err(StoreError::unavailable(format!(
                "{} chunks of job {} are still parked; the fanout message will be retried",
                job.chunks_parked, job.id
            ))
            .into()),
            None => Err(StoreError::Invalid(format!("job {id} vanished")).into()),
        }
    }

    /// Reads the page after the job's cursor, enqueues its chunks, then advances the cursor.
    /// A job being cancelled or failing gets no more pages: its fanout is closed instead.
    pub async fn fan_out_one_page(&self, job: &Job) -> Result<Step, FanoutError> {
        let prev_cursor = job.fanout_cursor.clone();
        if job.status.skips_chunks() {
            let step = FanoutAdvance {
                prev_cursor: prev_cursor.clone(),
                next_cursor: job.fanout_cursor.clone(),
                done: true,
                chunks_added: 0,
                ids_added: 0,
            };
            info!(status = %job.status, "job is winding down; fanout stops early");
            match self.ports.jobs.advance_fanout(job.id, &step).await? {
                // Refused although no other step landed: chunks of the page at the cursor
                // were sent and accounted before their own step (a fanout that died, or is
                // about to land it). The close never leaves them outside the job's total:
                // that page is landed first (the same chunks again, which the ledger
                // dedupes), and the close comes after it.
                Advanced::Superseded(now)
                    if now.fanout_cursor == job.fanout_cursor
                        && !now.fanout_done
                        && now.chunks_total == job.chunks_total =>
                {
                    info!("the page at the cursor has accounted chunks; landing it first");
                }
                other => return Ok(Step::Advanced(Box::new(other))),
            }
        }
        let page =
            bulklink_core::kinds::page_work(&self.ports, job, prev_cursor.as_deref(), self.limits)
                .await?;
        let (chunks, items, next) = match page {
            WorkPage::Chunks {
                chunks,
                items,
                next,
            } => (chunks, items, next),
            WorkPage::Wait => return Ok(Step::Wait),
            WorkPage::Refused(failure) => return self.refuse(job, failure).await,
        };
        let chunks: Vec<ChunkMessage> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, work)| work.message(job, job.chunks_total + i as u32))
            .collect();
        let chunks_added = chunks.len() as u32;
        let mut batches: Vec<Vec<ChunkMessage>> = Vec::new();
        for chunk in chunks {
            match batches.last_mut() {
                Some(batch) if batch.len() < SEND_BATCH => batch.push(chunk),
                _ => batches.push(vec![chunk]),
            }
        }
        let queue = self.ports.chunk_queue.clone();
        // The brand is the message group: brands share the chunk queue fairly.
        let group = job.brand_id.to_string();
        futures::stream::iter(batches)
            .map(move |batch| {
                let queue = queue.clone();
                let group = group.clone();
                async move { queue.send_grouped(Some(&group), &batch).await }
            })
            .buffer_unordered(SENDS_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let step = FanoutAdvance {
            prev_cursor,
            done: next.is_none(),
            next_cursor: next,
            chunks_added,
            ids_added: items,
        };
        Ok(Step::Advanced(Box::new(
            self.ports.jobs.advance_fanout(job.id, &step).await?,
        )))
    }

    /// Ends a job whose input cannot be read: its fanout closes with one chunk that is the
    /// refusal, accounted as one failure (with its line and reason) of a job that is FAILING,
    /// so it ends FAILED; nothing further is read. A replay finds the chunk accounted.
    async fn refuse(&self, job: &Job, failure: Failure) -> Result<Step, FanoutError> {
        warn!(reason = %failure.reason, "the job's input is refused; the job fails");
        let seq = ChunkSeq(job.chunks_total);
        let step = FanoutAdvance {
            prev_cursor: job.fanout_cursor.clone(),
            next_cursor: job.fanout_cursor.clone(),
            done: true,
            chunks_added: 1,
            ids_added: 1,
        };
        // Accounted before the fanout closes: a crash between the two replays the refusal
        // (the ledger dedupes it) rather than leaving a closed fanout with a chunk never
        // accounted.
        self.ports.jobs.mark_failing(job.id).await?;
        let mut tally = ChunkTally::default();
        tally.fail(Counter::Failed, failure);
        self.ports
            .ledger
            .record_chunk(job.id, job.offer_id, seq, &tally, 0)
            .await?;
        Ok(Step::Advanced(Box::new(
            self.ports.jobs.advance_fanout(job.id, &step).await?,
        )))
    }
}

/// What one fanout step did.
#[derive(Debug)]
pub enum Step {
    Advanced(Box<Advanced>),
    /// Nothing read: the next page waits for the chunks sent so far.
    Wait,
}

/// Fanout as a queue consumer (`bulklink_lambda`'s SQS driver and local loop): one message
/// at a time — a fanout message in hand is one no other instance can take.
impl bulklink_lambda::Consumer for Fanout {
    type Done = FanoutReport;
    type Error = FanoutError;

    fn name(&self) -> &'static str {
        "fanout"
    }

    fn receive_batch(&self) -> usize {
        1
    }

    async fn handle(
        &self,
        message: &ReceivedMessage,
        deadline: Option<Instant>,
    ) -> Result<FanoutReport, FanoutError> {
        // Without a deadline (no caller gives none) a run still hands over in time.
        let deadline = deadline.unwrap_or_else(|| Instant::now() + DEFAULT_TIME_BUDGET);
        Fanout::handle(self, &message.body, deadline).await
    }

    fn failure(error: &FanoutError) -> bulklink_lambda::Failure<'_> {
        error.failure()
    }
}

/// The deadline of a message handled without one: a Lambda function's timeout.
const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(60);

/// The local runner's fanout instance: each message gets `time_budget` as its deadline,
/// as a Lambda invocation gets its timeout.
pub async fn run_queue_loop(
    fanout: Arc<Fanout>,
    queue: Arc<dyn Queue>,
    time_budget: Duration,
    shutdown: watch::Receiver<bool>,
) {
    bulklink_lambda::run_queue_loop(fanout, queue, Some(time_budget), shutdown).await
}
