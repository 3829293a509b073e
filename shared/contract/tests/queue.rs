//! Queue contracts (SQS standard-queue semantics): at-least-once delivery, the visibility
//! timeout, per-delivery receipts, redrive to the dead-letter queue, SQS batch limits and
//! long polling.

use std::time::Duration;

use bulklink_core::domain::MAX_MESSAGE_BYTES;
use bulklink_core::ports::{Queue, ReceivedMessage};
use bulklink_core::StoreError;
use tokio::time::Instant;

use crate::support::Fixture;

fn bodies(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

/// Receives until `n` messages arrived or `within` ran out: a queue may hand out fewer
/// messages than asked for, even when more are waiting.
async fn receive_n(queue: &dyn Queue, n: usize, within: Duration) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    while received.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        received.extend(queue.receive(n - received.len(), left).await.unwrap());
    }
    received
}

async fn receive_one(queue: &dyn Queue, within: Duration) -> ReceivedMessage {
    let mut received = receive_n(queue, 1, within).await;
    assert_eq!(received.len(), 1, "no message within {within:?}");
    received.remove(0)
}

pub async fn sent_messages_arrive_once_and_deleted_ones_never_return(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    queue.send_batch(&bodies(&["a", "b"])).await.unwrap();

    let received = receive_n(queue, 2, fx.arrival_wait()).await;
    let receipts: Vec<String> = received.iter().map(|m| m.receipt.clone()).collect();
    queue.delete(&receipts).await.unwrap();
    let afterwards = queue.receive(10, fx.quiet_wait()).await.unwrap();

    let mut texts: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["a", "b"]);
    assert!(
        received.iter().all(|m| m.receive_count == 1),
        "{received:?}"
    );
    assert_eq!(afterwards, vec![]);
    assert_eq!(queue.depth().await.unwrap(), 0);
}

pub async fn an_undeleted_message_is_redelivered_after_its_visibility_timeout(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    queue.send_batch(&bodies(&["x"])).await.unwrap();

    let first = receive_one(queue, fx.arrival_wait()).await;
    let while_in_flight = queue.receive(10, Duration::ZERO).await.unwrap();
    let again = receive_one(queue, fx.arrival_wait()).await;

    assert_eq!(while_in_flight, vec![]);
    assert_eq!((first.receive_count, again.receive_count), (1, 2));
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.body, "x");
    assert_ne!(again.receipt, first.receipt);
}

pub async fn a_receipt_from_another_queue_deletes_nothing(fx: &Fixture) {
    let (chunks, fanout) = (
        fx.ports.chunk_queue.as_ref(),
        fx.ports.fanout_queue.as_ref(),
    );
    chunks.send_batch(&bodies(&["x"])).await.unwrap();
    let received = receive_one(chunks, fx.arrival_wait()).await;

    // SQS refuses such a receipt or ignores it; either way the message stays.
    let _refused_or_ignored = fanout.delete(&[received.receipt]).await;

    assert_eq!(chunks.depth().await.unwrap(), 1);
    let again = receive_one(chunks, fx.arrival_wait()).await;
    assert_eq!(again.message_id, received.message_id);
}

pub async fn a_message_received_too_often_moves_to_the_dead_letter_queue(fx: &Fixture) {
    let (queue, dlq) = (fx.ports.chunk_queue.as_ref(), fx.ports.chunk_dlq.as_ref());
    let max = fx.settings.max_receive_count;
    queue.send_batch(&bodies(&["poison"])).await.unwrap();
    let mut counts = Vec::new();
    for _ in 0..max {
        counts.push(receive_one(queue, fx.arrival_wait()).await.receive_count);
    }

    let from_queue = queue.receive(10, fx.quiet_wait()).await.unwrap();
    let from_dlq = receive_one(dlq, fx.arrival_wait()).await;

    assert_eq!(counts, (1..=max).collect::<Vec<_>>());
    assert_eq!(from_queue, vec![]);
    assert_eq!(from_dlq.body, "poison");
    assert_eq!(queue.depth().await.unwrap(), 0);
    assert_eq!(dlq.depth().await.unwrap(), 1);
}

pub async fn a_batch_of_more_than_ten_messages_is_refused(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    let eleven: Vec<String> = (0..11).map(|n| n.to_string()).collect();

    let sent = queue.send_batch(&eleven).await;

    assert!(matches!(sent, Err(StoreError::Invalid(_))), "{sent:?}");
    assert_eq!(queue.depth().await.unwrap(), 0);
}

pub async fn a_batch_with_a_body_over_256_kib_sends_nothing(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    let batch = vec!["small".to_owned(), "x".repeat(MAX_MESSAGE_BYTES + 1)];

    let sent = queue.send_batch(&batch).await;

    assert!(matches!(sent, Err(StoreError::Invalid(_))), "{sent:?}");
    assert_eq!(queue.depth().await.unwrap(), 0);
    assert_eq!(queue.receive(10, Duration::ZERO).await.unwrap(), vec![]);
}

pub async fn a_body_of_exactly_256_kib_is_sent(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    let body = "x".repeat(MAX_MESSAGE_BYTES);

    queue.send_batch(std::slice::from_ref(&body)).await.unwrap();

    let received = receive_one(queue, fx.arrival_wait()).await;
    assert_eq!(received.body, body);
}

pub async fn a_batch_over_256_kib_in_all_sends_nothing(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    let half = "y".repeat(MAX_MESSAGE_BYTES / 2 + 1);

    let result = queue.send_batch(&[half.clone(), half]).await;

    assert!(
        matches!(result, Err(bulklink_core::StoreError::Invalid(_))),
        "{result:?}"
    );
    assert_eq!(queue.depth().await.unwrap(), 0);
}

pub async fn a_long_poll_returns_as_soon_as_a_message_is_sent(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.clone();
    // 20 s is the longest SQS long poll; the bound below is far shorter.
    let receiver = tokio::spawn(async move { queue.receive(1, Duration::from_secs(20)).await });

    fx.ports
        .chunk_queue
        .raw()
        .send_batch(&bodies(&["wake up"]))
        .await
        .unwrap();

    let received = tokio::time::timeout(Duration::from_secs(5), receiver)
        .await
        .expect("the long poll returned with the message")
        .unwrap()
        .unwrap();
    let texts: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(texts, ["wake up"]);
}

pub async fn depth_counts_waiting_and_in_flight_messages(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    queue.send_batch(&bodies(&["a", "b", "c"])).await.unwrap();

    let waiting = queue.depth().await.unwrap();
    let message = receive_one(queue, fx.arrival_wait()).await;
    let one_in_flight = queue.depth().await.unwrap();
    queue.delete(&[message.receipt]).await.unwrap();
    let one_deleted = queue.depth().await.unwrap();

    assert_eq!((waiting, one_in_flight, one_deleted), (3, 3, 2));
}

mod embedded_only {
    use super::*;

    /// SQS only says an older receipt's delete "succeeds, but the message might not be
    /// deleted" (and moto deletes it), so this is the embedded backend's promise, not a
    /// port contract; nothing in bulklink relies on it.
    #[tokio::test]
    async fn a_stale_receipt_deletes_nothing() {
        let fx = Fixture::embedded().await;
        let queue = fx.ports.chunk_queue.as_ref();
        queue.send_batch(&bodies(&["x"])).await.unwrap();
        let first = receive_one(queue, fx.arrival_wait()).await;
        receive_one(queue, fx.arrival_wait()).await;

        queue.delete(&[first.receipt]).await.unwrap();

        let third = receive_one(queue, fx.arrival_wait()).await;
        assert_eq!(third.message_id, first.message_id);
        assert_eq!(third.receive_count, 3);
        queue.delete(&[third.receipt]).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
    }
}

pub async fn a_delayed_message_arrives_only_after_its_delay(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();
    let delay = Duration::from_secs(2);
    let sent = tokio::time::Instant::now();

    queue.send_delayed("later", delay).await.unwrap();
    let early = queue.receive(10, Duration::ZERO).await.unwrap();
    let message = receive_one(queue, delay + fx.arrival_wait()).await;

    assert!(early.is_empty(), "visible before its delay");
    assert_eq!(message.body, "later");
    assert!(
        sent.elapsed() >= delay,
        "arrived after {:?}",
        sent.elapsed()
    );
}

pub async fn a_delay_longer_than_fifteen_minutes_is_refused(fx: &Fixture) {
    let queue = fx.ports.chunk_queue.as_ref();

    let refused = queue
        .send_delayed("much later", Duration::from_secs(901))
        .await;

    assert!(
        matches!(refused, Err(bulklink_core::StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(queue.depth().await.unwrap(), 0);
}

pub async fn a_typed_queue_sends_messages_that_its_receiver_decodes_as_sent(fx: &Fixture) {
    use bulklink_core::domain::{
        BrandId, ChunkMessage, ChunkSeq, FanoutMessage, JobId, LocationId,
    };
    let chunks: Vec<ChunkMessage> = (0..3)
        .map(|seq| ChunkMessage {
            job_id: JobId::new_v7(),
            offer_id: Some(bulklink_core::domain::OfferId::new_random()),
            brand_id: BrandId::new_random(),
            seq: ChunkSeq(seq),
            location_ids: vec![LocationId::new_random(), LocationId::new_random()],
            rows: None,
        })
        .collect();
    fx.ports
        .chunk_queue
        .send_grouped(Some("brand"), &chunks)
        .await
        .unwrap();
    let fanout = FanoutMessage {
        job_id: JobId::new_v7(),
    };
    fx.ports.fanout_queue.send(&fanout).await.unwrap();

    let mut got: Vec<ChunkMessage> = receive_n(fx.ports.chunk_queue.as_ref(), 3, fx.arrival_wait())
        .await
        .iter()
        .map(|m| fx.ports.chunk_queue.decode(&m.body).unwrap())
        .collect();
    got.sort_by_key(|c| c.seq.0);
    assert_eq!(got, chunks);
    let handed = receive_one(fx.ports.fanout_queue.as_ref(), fx.arrival_wait()).await;
    assert_eq!(fx.ports.fanout_queue.decode(&handed.body).unwrap(), fanout);
    // A body that is no chunk is refused by name, not guessed at.
    let refused = fx.ports.chunk_queue.decode(&handed.body).unwrap_err();
    assert!(
        refused.to_string().contains("not a chunk message"),
        "{refused}"
    );
}
