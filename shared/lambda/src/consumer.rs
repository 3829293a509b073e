//! The one way a queue is consumed: fanout, the worker and the webhook deliverer are each a
//! [`Consumer`], and two drivers run any of them — [`handle_event`] for an SQS event on
//! Lambda (partial batch responses) and [`run_queue_loop`] for `bulklink serve` (receive,
//! handle, delete what succeeded). Both apply the same failure policy
//! ([`leave_for_redelivery`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{warn, Instrument};

use crate::ports::{Queue, ReceivedMessage};
use crate::{
    batch_response, deadline_instant, leave_for_redelivery, received_messages, Failure,
    RecordWithoutId,
};

/// What a queue's consumer does with one message.
pub trait Consumer: Send + Sync {
    /// What handling one message yields (a chunk's report, a delivery's counts).
    type Done: Send;
    type Error: std::fmt::Display + Send;

    /// The name its logs carry (`consumer`).
    fn name(&self) -> &'static str;

    /// Most messages handled side by side: 1 (the default) handles a batch one message
    /// after another; more lets a slow message hold only its own slot.
    fn side_by_side(&self) -> usize {
        1
    }

    /// Most messages taken in one receive by the local loop (the Lambda event source
    /// mapping's batch size is Terraform's).
    fn receive_batch(&self) -> usize {
        10
    }

    /// Handles one message. `deadline` is when the invocation ends (Lambda) or the time
    /// budget a local instance gives each message; `None` when there is none.
    fn handle(
        &self,
        message: &ReceivedMessage,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Self::Done, Self::Error>> + Send;

    /// Whether a failure can ever succeed on another delivery.
    fn failure(error: &Self::Error) -> Failure<'_>;
}

/// Handles `messages` as the consumer says (one after another, or up to `side_by_side` at
/// once), in order; a failed one is left for redelivery (logged here).
async fn handle_batch<C: Consumer>(
    consumer: &C,
    messages: &[ReceivedMessage],
    deadline: impl Fn() -> Option<Instant>,
) -> Vec<Result<C::Done, ()>> {
    if consumer.side_by_side() <= 1 {
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            // Each message's deadline is read when it starts, not when the batch did.
            outcomes.push(handle_one(consumer, message, deadline()).await);
        }
        return outcomes;
    }
    let mut outcomes = Vec::with_capacity(messages.len());
    for group in messages.chunks(consumer.side_by_side()) {
        let started: Vec<_> = group
            .iter()
            .map(|message| handle_one(consumer, message, deadline()))
            .collect();
        outcomes.extend(futures::future::join_all(started).await);
    }
    outcomes
}

/// One message: its outcome, a failure left for redelivery (logged here).
async fn handle_one<C: Consumer>(
    consumer: &C,
    message: &ReceivedMessage,
    deadline: Option<Instant>,
) -> Result<C::Done, ()> {
    consumer
        .handle(message, deadline)
        .await
        .map_err(|e| leave_for_redelivery(consumer.name(), message, C::failure(&e)))
}

/// The SQS driver: every record of a Lambda event handled by `consumer` by `deadline`;
/// each failure reported alone in the partial batch response. Returns what the handled
/// messages yielded, for the function's metrics.
pub async fn handle_event<C: Consumer>(
    consumer: &C,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> Result<(Vec<C::Done>, SqsBatchResponse), RecordWithoutId> {
    let messages = received_messages(event)?;
    let outcomes = handle_batch(consumer, &messages, || deadline).await;
    let mut done = Vec::with_capacity(messages.len());
    let mut failed = Vec::new();
    for (message, outcome) in messages.into_iter().zip(outcomes) {
        match outcome {
            Ok(value) => done.push(value),
            Err(()) => failed.push(message.message_id),
        }
    }
    Ok((done, batch_response(failed)))
}

/// A Lambda function on an SQS event source: every invocation goes through
/// [`handle_event`]; `after` sees what each invocation's messages yielded (metrics).
pub async fn run_lambda<C: Consumer>(
    consumer: C,
    after: impl Fn(&[C::Done]) + Send + Sync,
) -> Result<(), lambda_runtime::Error> {
    let (consumer, after) = (&consumer, &after);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let deadline = deadline_instant(event.context.deadline);
            let (done, response) = handle_event(consumer, event.payload, Some(deadline))
                .instrument(span)
                .await?;
            after(&done);
            Ok::<SqsBatchResponse, lambda_runtime::Error>(response)
        },
    ))
    .await
}

/// The local receive loop of `bulklink serve`: receives from `queue` until `shutdown`,
/// handles as the consumer says and deletes what succeeded; a failed message reappears
/// after its visibility timeout. `time_budget` is each message's deadline, as a Lambda
/// invocation's timeout would be. A consumer that handles one message at a time takes a
/// batch, handles it and deletes its successes in one call; one that handles side by side
/// keeps up to that many messages in flight, each deleted when done. On shutdown the
/// messages in hand are finished first.
pub async fn run_queue_loop<C: Consumer + 'static>(
    consumer: Arc<C>,
    queue: Arc<dyn Queue>,
    time_budget: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let deadline = move || time_budget.map(|budget| Instant::now() + budget);
    let slots = Arc::new(Semaphore::new(consumer.side_by_side().max(1)));
    let mut in_flight = JoinSet::new();
    while !*shutdown.borrow() {
        while in_flight.try_join_next().is_some() {}
        // A sequential consumer takes its whole batch (one receive, one delete); one that
        // handles side by side takes what its free slots can hold.
        let free = if consumer.side_by_side() <= 1 {
            consumer.receive_batch()
        } else {
            slots.available_permits().min(consumer.receive_batch())
        };
        if free == 0 {
            tokio::select! {
                _ = in_flight.join_next() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let received = tokio::select! {
            received = queue.receive(free, Duration::from_secs(1)) => received,
            _ = shutdown.changed() => continue,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                warn!(queue = queue.name(), error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if consumer.side_by_side() <= 1 {
            let outcomes = handle_batch(consumer.as_ref(), &messages, deadline).await;
            let handled: Vec<String> = messages
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| outcome.is_ok())
                .map(|(message, _)| message.receipt.clone())
                .collect();
            delete(queue.as_ref(), &handled).await;
            continue;
        }
        for message in messages {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                break;
            };
            let (consumer, queue) = (consumer.clone(), queue.clone());
            in_flight.spawn(async move {
                if handle_one(consumer.as_ref(), &message, deadline())
                    .await
                    .is_ok()
                {
                    delete(queue.as_ref(), std::slice::from_ref(&message.receipt)).await;
                }
                drop(slot);
            });
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// Deletes handled messages. A delete that fails is only logged: the message comes back
/// and is handled again, which every consumer tolerates (the ledger, the fanout cursor
/// and the delivery log dedupe it).
async fn delete(queue: &dyn Queue, receipts: &[String]) {
    if receipts.is_empty() {
        return;
    }
    if let Err(e) = queue.delete(receipts).await {
        warn!(queue = queue.name(), error = %e, "delete failed; the message will be handled again");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use aws_lambda_events::event::sqs::SqsMessage;

    use super::*;

    /// Fails the bodies "bad" (never decodable) and "busy" (passing); records how many
    /// messages it held at once and the order they started in.
    struct Probe {
        side_by_side: usize,
        held: AtomicUsize,
        most_held: AtomicUsize,
        started: Mutex<Vec<String>>,
    }

    #[derive(Debug)]
    struct ProbeError(&'static str);

    impl std::fmt::Display for ProbeError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Consumer for Probe {
        type Done = String;
        type Error = ProbeError;

        fn name(&self) -> &'static str {
            "probe"
        }

        fn side_by_side(&self) -> usize {
            self.side_by_side
        }

        async fn handle(
            &self,
            message: &ReceivedMessage,
            _deadline: Option<Instant>,
        ) -> Result<String, ProbeError> {
            self.started.lock().unwrap().push(message.body.clone());
            let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_held.fetch_max(now, Ordering::SeqCst);
            // Give every other message of the batch the chance to start.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            self.held.fetch_sub(1, Ordering::SeqCst);
            match message.body.as_str() {
                "bad" => Err(ProbeError("undecodable")),
                "busy" => Err(ProbeError("store busy")),
                body => Ok(body.to_uppercase()),
            }
        }

        fn failure(error: &ProbeError) -> Failure<'_> {
            match error.0 {
                "undecodable" => Failure::Undecodable(error),
                _ => Failure::Passing(error),
            }
        }
    }

    fn probe(side_by_side: usize) -> Probe {
        Probe {
            side_by_side,
            held: AtomicUsize::new(0),
            most_held: AtomicUsize::new(0),
            started: Mutex::new(Vec::new()),
        }
    }

    fn event(bodies: &[&str]) -> SqsEvent {
        let mut event = SqsEvent::default();
        for (i, body) in bodies.iter().enumerate() {
            let mut record = SqsMessage::default();
            record.message_id = Some(format!("m{i}"));
            record.body = Some((*body).to_owned());
            event.records.push(record);
        }
        event
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    #[tokio::test]
    async fn a_batch_is_handled_in_order_one_at_a_time_and_each_failure_is_reported_alone() {
        let consumer = probe(1);
        let (done, response) =
            handle_event(&consumer, event(&["a", "bad", "b", "busy", "c"]), None)
                .await
                .unwrap();

        assert_eq!(done, ["A", "B", "C"]);
        assert_eq!(failed(&response), ["m1", "m3"]);
        assert_eq!(
            *consumer.started.lock().unwrap(),
            ["a", "bad", "b", "busy", "c"]
        );
        assert_eq!(consumer.most_held.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_consumer_that_handles_side_by_side_holds_the_batch_at_once() {
        let consumer = probe(64);
        let (done, response) = handle_event(&consumer, event(&["a", "busy", "b", "c"]), None)
            .await
            .unwrap();

        assert_eq!(done, ["A", "B", "C"]);
        assert_eq!(failed(&response), ["m1"]);
        assert_eq!(consumer.most_held.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_record_without_a_message_id_fails_the_whole_batch() {
        let mut event = event(&["a", "b"]);
        event.records[1].message_id = None;
        let outcome = handle_event(&probe(1), event, None).await;
        assert!(matches!(outcome, Err(RecordWithoutId { index: 1 })));
    }

    /// A queue of bodies that records what each receive asked for and what was deleted,
    /// and turns `stop` true once it is empty.
    struct Recorded {
        bodies: Mutex<Vec<String>>,
        asked: Mutex<Vec<usize>>,
        deleted: Mutex<Vec<String>>,
        stop: watch::Sender<bool>,
    }

    #[async_trait::async_trait]
    impl Queue for Recorded {
        fn name(&self) -> &str {
            "recorded"
        }
        async fn send_grouped(
            &self,
            _: Option<&str>,
            _: &[String],
        ) -> bulklink_core::error::StoreResult<()> {
            unreachable!("the loop only receives and deletes")
        }
        async fn send_delayed(
            &self,
            _: &str,
            _: Duration,
        ) -> bulklink_core::error::StoreResult<()> {
            unreachable!("the loop only receives and deletes")
        }
        async fn receive(
            &self,
            max: usize,
            _wait: Duration,
        ) -> bulklink_core::error::StoreResult<Vec<ReceivedMessage>> {
            self.asked.lock().unwrap().push(max);
            let mut bodies = self.bodies.lock().unwrap();
            let n = max.min(bodies.len());
            let taken: Vec<String> = bodies.drain(..n).collect();
            if taken.is_empty() {
                self.stop.send_replace(true);
            }
            Ok(taken
                .into_iter()
                .map(|body| ReceivedMessage {
                    message_id: body.clone(),
                    receipt: format!("r-{body}"),
                    body,
                    receive_count: 1,
                })
                .collect())
        }
        async fn delete(&self, receipts: &[String]) -> bulklink_core::error::StoreResult<()> {
            self.deleted.lock().unwrap().extend_from_slice(receipts);
            Ok(())
        }
        async fn depth(&self) -> bulklink_core::error::StoreResult<u64> {
            Ok(self.bodies.lock().unwrap().len() as u64)
        }
    }

    #[tokio::test]
    async fn the_local_loop_takes_a_sequential_consumers_whole_batch_and_deletes_what_passed() {
        let bodies: Vec<String> = (0..25)
            .map(|i| format!("m{i}"))
            .chain(["busy".to_owned()])
            .collect();
        let (stop, shutdown) = watch::channel(false);
        let queue = Arc::new(Recorded {
            bodies: Mutex::new(bodies.clone()),
            asked: Mutex::new(Vec::new()),
            deleted: Mutex::new(Vec::new()),
            stop,
        });
        run_queue_loop(Arc::new(probe(1)), queue.clone(), None, shutdown).await;

        // Batches of the consumer's receive_batch, not one message at a time.
        let asked = queue.asked.lock().unwrap().clone();
        assert_eq!(asked, [10, 10, 10, 10], "{asked:?}");
        let deleted = queue.deleted.lock().unwrap().clone();
        let passed: Vec<String> = bodies[..25].iter().map(|b| format!("r-{b}")).collect();
        assert_eq!(
            deleted, passed,
            "every handled message deleted, the failed one left"
        );
    }
}
