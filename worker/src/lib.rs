//! The worker: takes chunk messages, links each location under the write budget, accounts
//! the chunk exactly once in the ledger and finishes the job when the last chunk lands.
//! The same code serves the Lambda function (SQS batches) and the local runner.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod estate;
pub mod lambda;
mod limiter;
pub mod sweeper;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulklink_core::budget::{BudgetWatch, LiveRates};
use bulklink_core::domain::{
    ChunkCounts, ChunkMessage, ChunkTally, DomainError, Job, JobEvent, JobId, JobStatus,
};
use bulklink_core::importing;
use bulklink_core::kinds::{self, Unfinished};
use bulklink_core::lifecycle::{self, Republish};
use bulklink_core::ports::{Ledgered, Parking, Ports, Queue, ReceivedMessage};
use bulklink_core::{Settings, StoreError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

pub use limiter::{WriteLimiter, WRITES_PER_LOCATION};

/// Why a message could not be handled. Every error leaves the message for redelivery;
/// only the kind differs, for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    BadMessage(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("processing took longer than {0:?}; the chunk will be redelivered")]
    TimedOut(Duration),
    #[error("no time left in this invocation; the chunk will be redelivered")]
    NoTimeLeft,
}

impl ChunkError {
    /// What the queue policy (`bulklink_lambda::leave_for_redelivery`) makes of it.
    pub fn failure(&self) -> bulklink_lambda::Failure<'_> {
        match self {
            ChunkError::BadMessage(_) => bulklink_lambda::Failure::Undecodable(self),
            _ => bulklink_lambda::Failure::Passing(self),
        }
    }
}

/// What handling one message did.
#[derive(Clone, Debug, PartialEq)]
pub enum ChunkReport {
    /// Accounted by this delivery.
    Recorded { job_id: JobId, counts: ChunkCounts },
    /// Already accounted by an earlier delivery; nothing changed.
    Duplicate { job_id: JobId },
    /// The job no longer exists (expired); nothing to account.
    JobGone { job_id: JobId },
    /// The job is paused: the chunk is parked with it until it resumes (no write, and no
    /// delivery counted toward the dead-letter queue meanwhile).
    Parked { job_id: JobId },
}

/// What a delivery does with its chunk.
#[derive(Clone, Copy, Debug)]
enum Attempt {
    /// Try the action; on the last allowed delivery give up if it fails.
    Try { receive_count: u32 },
    /// Give up at once (the chunk reached the dead-letter queue).
    GiveUp,
}

/// Which queue a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Chunks,
    DeadLetters,
}

impl Source {
    /// The consumer's name in logs.
    pub fn consumer(self) -> &'static str {
        match self {
            Source::Chunks => "worker",
            Source::DeadLetters => "worker-dlq",
        }
    }
}

pub struct ChunkProcessor {
    ports: Ports,
    max_receive_count: u32,
    failure_threshold: f64,
    failure_min_sample: u64,
    limiter: WriteLimiter,
    budget: BudgetWatch,
    time_limit: Duration,
    retries: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    throttles: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// Where this worker reports its live rate, under its name.
    live: Option<(LiveRates, String)>,
    /// When this worker last published each job's `job.progress`.
    progress_sent: Mutex<HashMap<JobId, chrono::DateTime<chrono::Utc>>>,
}

/// One worker publishes a job's `job.progress` at most this often (subscriptions thin it
/// further to their `progressEverySeconds`): a job of 10,000 chunks is not 10,000 events.
const PROGRESS_EVERY: chrono::Duration = chrono::Duration::seconds(1);

/// Share of the visibility timeout one delivery may spend. Past it the delivery gives up,
/// so no message is redelivered (or dead-lettered and accounted) while a worker still
/// writes for it; on Lambda the function timeout (≤ visibility / 6) bounds it instead.
const VISIBILITY_SHARE: f64 = 0.8;

impl ChunkProcessor {
    /// One worker instance: it holds its share of the write budget.
    pub fn new(ports: Ports, settings: &Settings) -> Self {
        ChunkProcessor {
            max_receive_count: settings.max_receive_count,
            failure_threshold: settings.failure_threshold,
            failure_min_sample: settings.failure_min_sample,
            limiter: WriteLimiter::new(settings.per_worker_write_budget()),
            budget: BudgetWatch::new(ports.runtime_settings.clone(), settings),
            ports,
            time_limit: settings.visibility_timeout.mul_f64(VISIBILITY_SHARE),
            retries: None,
            throttles: None,
            live: None,
            progress_sent: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `job.progress` of `job` (just accounted a chunk of) once it has run for
    /// `PROGRESS_EVERY`, unless this worker did within `PROGRESS_EVERY`, in the background. Advisory: a failed (or, on Lambda, frozen)
    /// publish is lost, the chunk stands (the job's terminal event carries its last counters).
    async fn publish_progress(&self, job: &Job) {
        let now = self.ports.clock.now();
        if now - job.started_at.unwrap_or(job.created_at) < PROGRESS_EVERY {
            // A job that ends within a second says all in its terminal event.
            return;
        }
        {
            let mut sent = self
                .progress_sent
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if sent
                .get(&job.id)
                .is_some_and(|at| now - *at < PROGRESS_EVERY)
            {
                return;
            }
            if sent.len() >= 1_024 {
                sent.retain(|_, at| now - *at < PROGRESS_EVERY);
            }
            sent.insert(job.id, now);
        }
        // Off the chunk's path: the chunk is accounted already, and a slow bus must not
        // hold the next one.
        let (events, event) = (self.ports.events.clone(), JobEvent::progress(job, now));
        tokio::spawn(async move {
            if let Err(e) = events.publish(&event).await {
                warn!(error = %e, job_id = %event.job_id, "job.progress not published");
            }
        });
    }

    /// Reads the backend's count of throttled requests: the adaptive limiter backs off when
    /// it grows while this worker writes.
    pub fn with_throttle_probe(mut self, probe: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        self.throttles = Some(probe);
        self
    }

    /// Reports this worker's live write rate into `rates` as `name`.
    pub fn with_live_rates(mut self, rates: LiveRates, name: &str) -> Self {
        rates.set(name, self.limiter.current_rate());
        self.live = Some((rates, name.to_owned()));
        self
    }

    /// The rate this worker writes at now (writes/s); `None` = unlimited.
    pub fn write_rate(&self) -> Option<f64> {
        self.limiter.current_rate()
    }

    fn throttle_count(&self) -> u64 {
        self.throttles.as_ref().map_or(0, |probe| probe())
    }

    /// Reads the backend's count of SDK retries (throttling, timeouts), for the per-chunk
    /// metrics of a Lambda instance.
    pub fn with_retry_probe(mut self, probe: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        self.retries = Some(probe);
        self
    }

    /// SDK retries so far (0 where the backend has none).
    pub fn sdk_retries(&self) -> u64 {
        self.retries.as_ref().map_or(0, |probe| probe())
    }

    /// Messages to take per receive. A rate-limited worker takes one at a time: a batch
    /// held by one worker is budget the idle workers cannot spend.
    pub fn receive_batch_size(&self) -> usize {
        if self.limiter.current_rate().is_some() {
            1
        } else {
            10
        }
    }

    /// Handles one message from `source`.
    pub async fn handle(
        &self,
        source: Source,
        message: &ReceivedMessage,
    ) -> Result<ChunkReport, ChunkError> {
        self.handle_within(source, message, self.time_limit).await
    }

    /// Handles one message, giving up after `limit` (or the visibility-timeout bound, if
    /// shorter): a Lambda invocation passes the time its deadline leaves.
    pub async fn handle_within(
        &self,
        source: Source,
        message: &ReceivedMessage,
        limit: Duration,
    ) -> Result<ChunkReport, ChunkError> {
        let limit = limit.min(self.time_limit);
        let work = async {
            match source {
                Source::Chunks => self.process(&message.body, message.receive_count).await,
                Source::DeadLetters => self.account_dead_letter(&message.body).await,
            }
        };
        // Dropping the work midway is a crash at a port boundary: the ledger makes the
        // redelivery exact.
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ChunkError::TimedOut(limit)))
    }

    /// Does a chunk's action and accounts it. On the last allowed delivery a chunk that
    /// still cannot be done is accounted as given up instead of erroring (DESIGN §5.3).
    pub async fn process(&self, body: &str, receive_count: u32) -> Result<ChunkReport, ChunkError> {
        self.run(body, Attempt::Try { receive_count }).await
    }

    /// Accounts a chunk that reached the dead-letter queue: what this job did counts as
    /// done, the rest as failed, so the job still ends (DESIGN §5.3).
    pub async fn account_dead_letter(&self, body: &str) -> Result<ChunkReport, ChunkError> {
        self.run(body, Attempt::GiveUp).await
    }

    /// The one path of a chunk: try the action (or skip it for a winding-down job), or give
    /// up with a reason, then account it once.
    async fn run(&self, body: &str, attempt: Attempt) -> Result<ChunkReport, ChunkError> {
        let chunk = ChunkMessage::decode(body)?;
        // The live budget, re-read at most every `budget_refresh`.
        self.limiter.set_share(self.budget.share().await);
        let span = match attempt {
            Attempt::Try { receive_count } => {
                tracing::info_span!("chunk", job_id = %chunk.job_id, chunk_seq = %chunk.seq, receive_count)
            }
            Attempt::GiveUp => {
                tracing::info_span!("dead_chunk", job_id = %chunk.job_id, chunk_seq = %chunk.seq)
            }
        };
        async {
            let Some(mut job) = self.load_job(&chunk).await? else {
                return Ok(ChunkReport::JobGone { job_id: chunk.job_id });
            };
            let mut looks = 0;
            while job.status == JobStatus::Paused && matches!(attempt, Attempt::Try { .. }) {
                match self.ports.ledger.park_chunk(job.id, chunk.seq, body).await? {
                    Parking::Parked => {
                        info!("job is paused; chunk parked until it resumes");
                        return Ok(ChunkReport::Parked { job_id: job.id });
                    }
                    Parking::Accounted => {
                        info!("chunk already accounted; replay adds nothing");
                        return Ok(ChunkReport::Duplicate { job_id: job.id });
                    }
                    Parking::NotPaused => {}
                }
                looks += 1;
                if looks == 3 {
                    return Err(StoreError::unavailable("the job's pause keeps changing").into());
                }
                // Resumed (or cancelled) in the meantime: carry on as it is now.
                let Some(now) = self.load_job(&chunk).await? else {
                    return Ok(ChunkReport::JobGone { job_id: chunk.job_id });
                };
                job = now;
            }
            let tally = if job.status.skips_chunks() {
                self.unfinished(&job, &chunk, Unfinished::Skipped).await?
            } else {
                match attempt {
                    Attempt::GiveUp => {
                        let reason = "delivery attempts exhausted; the chunk reached the dead-letter queue";
                        self.unfinished(&job, &chunk, Unfinished::GivenUp { reason, attempts: self.max_receive_count }).await?
                    }
                    Attempt::Try { receive_count } => match self.apply(&job, &chunk).await {
                        Ok(done) => done,
                        Err(e) if receive_count >= self.max_receive_count => {
                            warn!(error = %e, "last delivery failed; accounting the chunk as given up");
                            let reason = format!("{} failed on every delivery; last error: {e}", job.spec.action.verb());
                            self.unfinished(&job, &chunk, Unfinished::GivenUp { reason: &reason, attempts: receive_count }).await?
                        }
                        Err(e) => {
                            warn!(error = %e, retryable = e.is_retryable(), "the chunk's action failed; it will be redelivered");
                            return Err(e.into());
                        }
                    },
                }
            };
            let delta = kinds::offer_delta(&job, &tally.counts());
            self.account(&chunk, &tally, delta).await
        }
        .instrument(span)
        .await
    }

    async fn load_job(&self, chunk: &ChunkMessage) -> Result<Option<Job>, ChunkError> {
        let job = self.ports.jobs.get_job(chunk.job_id).await?;
        match &job {
            None => warn!("the chunk's job does not exist; dropping the chunk"),
            Some(job) if job.offer_id != chunk.offer_id || job.brand_id != chunk.brand_id => {
                return Err(DomainError::BadMessage(format!(
                    "chunk names offer {:?} / brand {}, its job has offer {:?} / brand {}",
                    chunk.offer_id, chunk.brand_id, job.offer_id, job.brand_id
                ))
                .into());
            }
            Some(_) => {}
        }
        Ok(job)
    }

    /// Accounts a chunk that was not (fully) done (`kinds::account_unfinished`): its ids, or
    /// an import's rows.
    async fn unfinished(
        &self,
        job: &Job,
        chunk: &ChunkMessage,
        how: Unfinished<'_>,
    ) -> Result<ChunkTally, StoreError> {
        match &chunk.rows {
            Some(span) => importing::account_unfinished_rows(&self.ports, job, span, how).await,
            None => {
                kinds::account_unfinished(
                    &self.ports,
                    job,
                    chunk.offer_id,
                    &chunk.location_ids,
                    how,
                )
                .await
            }
        }
    }

    /// The job's action on the chunk, in slices of the write budget: what became of each
    /// item (an import's invalid rows as failures).
    async fn apply(&self, job: &Job, chunk: &ChunkMessage) -> Result<ChunkTally, StoreError> {
        let Some(span) = &chunk.rows else {
            let outcomes = self
                .paced(&chunk.location_ids, |part| {
                    kinds::apply(&self.ports, job, part)
                })
                .await?;
            return Ok(kinds::tally(&chunk.location_ids, &outcomes));
        };
        let mut valid = Vec::with_capacity(span.rows as usize);
        let mut invalid = Vec::new();
        for (line, row) in importing::rows_of(&self.ports, job, span).await? {
            match row {
                Ok(location) => valid.push((line, location)),
                Err(reason) => invalid.push((line, reason)),
            }
        }
        let outcomes = self
            .paced(&valid, |part| importing::apply_rows(&self.ports, job, part))
            .await?;
        let lines: Vec<_> = valid.iter().map(|(line, _)| *line).zip(outcomes).collect();
        Ok(importing::tally_rows(lines, invalid))
    }

    /// Does `each` to `items` in slices the write budget allows, in order.
    async fn paced<'a, T, O, F, Fut>(&self, items: &'a [T], each: F) -> Result<Vec<O>, StoreError>
    where
        F: Fn(&'a [T]) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<O>, StoreError>>,
    {
        let mut outcomes = Vec::with_capacity(items.len());
        let batch = self.limiter.locations_per_batch();
        for part in items.chunks(batch) {
            self.limiter.acquire(part.len()).await;
            let throttled_before = self.throttle_count();
            let done = each(part).await;
            if self.throttle_count() > throttled_before {
                self.limiter.throttled();
            }
            outcomes.extend(done?);
        }
        if let Some((rates, name)) = &self.live {
            rates.set(name, self.limiter.current_rate());
        }
        Ok(outcomes)
    }

    async fn account(
        &self,
        chunk: &ChunkMessage,
        tally: &ChunkTally,
        offer_delta: i64,
    ) -> Result<ChunkReport, ChunkError> {
        let ledgered = self
            .ports
            .ledger
            .record_chunk(chunk.job_id, chunk.offer_id, chunk.seq, tally, offer_delta)
            .await?;
        let counts = tally.counts();
        let report = match &ledgered {
            Ledgered::Recorded(_) => {
                info!(
                    linked = counts.linked,
                    already_linked = counts.already_linked,
                    unlinked = counts.unlinked,
                    not_linked = counts.not_linked,
                    not_found = counts.not_found,
                    failed = counts.failed,
                    cancelled = counts.cancelled,
                    created = counts.created,
                    updated = counts.updated,
                    unchanged = counts.unchanged,
                    closed = counts.closed,
                    invalid = counts.invalid,
                    "chunk accounted"
                );
                ChunkReport::Recorded {
                    job_id: chunk.job_id,
                    counts,
                }
            }
            Ledgered::Duplicate(_) => {
                info!("chunk already accounted; replay adds nothing");
                ChunkReport::Duplicate {
                    job_id: chunk.job_id,
                }
            }
        };
        let (job, republish) = match ledgered {
            Ledgered::Recorded(job) => {
                if job
                    .counters
                    .exceeds_failure_threshold(self.failure_threshold, self.failure_min_sample)
                    && self.ports.jobs.mark_failing(job.id).await?
                {
                    warn!(
                        failed = job.counters.failed,
                        "failure threshold exceeded; job is FAILING"
                    );
                }
                if !job.is_fully_accounted() && !job.status.is_terminal() {
                    self.publish_progress(&job).await;
                }
                (job, Republish::No)
            }
            // A replay: the delivery it replays may have died before finishing the job.
            Ledgered::Duplicate(job) => (job, Republish::IfUnnotified),
        };
        lifecycle::settle(&self.ports, job, republish).await?;
        Ok(report)
    }
}

/// Handles a batch, each message on its own; returns the ids of the messages that failed
/// (SQS partial batch response). One bad message never fails the others.
pub async fn process_batch(
    processor: &ChunkProcessor,
    source: Source,
    messages: &[ReceivedMessage],
) -> Vec<(String, Result<ChunkReport, ChunkError>)> {
    let mut results = Vec::with_capacity(messages.len());
    for message in messages {
        let result = processor.handle(source, message).await;
        if let Err(e) = &result {
            bulklink_lambda::leave_for_redelivery(source.consumer(), message, e.failure());
        }
        results.push((message.message_id.clone(), result));
    }
    results
}

/// Time kept back from a Lambda invocation's deadline for answering the runtime.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// The worker on one source, as a queue consumer (`bulklink_lambda`'s SQS driver and local
/// loop): messages one after another, each within the time the deadline leaves (a message
/// the deadline leaves no time for is not started, and comes back).
pub struct ChunkConsumer<P> {
    pub processor: P,
    pub source: Source,
}

/// What one handled chunk message yields: its report and what its metrics line carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Handled {
    pub report: ChunkReport,
    /// SDK retries (throttling, timeouts) while it was handled.
    pub sdk_retries: u64,
    /// The instance's write rate afterwards (when limited).
    pub write_rate: Option<f64>,
    pub duration: Duration,
}

impl<P> bulklink_lambda::Consumer for ChunkConsumer<P>
where
    P: std::borrow::Borrow<ChunkProcessor> + Send + Sync,
{
    type Done = Handled;
    type Error = ChunkError;

    fn name(&self) -> &'static str {
        self.source.consumer()
    }

    fn receive_batch(&self) -> usize {
        self.processor.borrow().receive_batch_size()
    }

    async fn handle(
        &self,
        message: &ReceivedMessage,
        deadline: Option<Instant>,
    ) -> Result<Handled, ChunkError> {
        let processor = self.processor.borrow();
        let limit = match deadline {
            None => processor.time_limit,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left <= DEADLINE_MARGIN {
                    return Err(ChunkError::NoTimeLeft);
                }
                left - DEADLINE_MARGIN
            }
        };
        let started = Instant::now();
        let retries_before = processor.sdk_retries();
        let report = processor.handle_within(self.source, message, limit).await?;
        Ok(Handled {
            report,
            sdk_retries: processor.sdk_retries().saturating_sub(retries_before),
            write_rate: processor.write_rate(),
            duration: started.elapsed(),
        })
    }

    fn failure(error: &ChunkError) -> bulklink_lambda::Failure<'_> {
        error.failure()
    }
}

/// The local runner's worker instance: receive, handle, delete what succeeded; failed
/// messages reappear after their visibility timeout. Runs until `shutdown` turns true,
/// finishing the batch in hand first.
pub async fn run_queue_loop(
    processor: Arc<ChunkProcessor>,
    queue: Arc<dyn Queue>,
    source: Source,
    shutdown: watch::Receiver<bool>,
) {
    let consumer = Arc::new(ChunkConsumer { processor, source });
    bulklink_lambda::run_queue_loop(consumer, queue, None, shutdown).await
}
