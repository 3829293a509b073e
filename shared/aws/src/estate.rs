//! Following the estate on AWS: the catalog table's DynamoDB stream carries every change to
//! every item; the changes standing rules follow are a location created, or a location whose
//! `version` moved (its address, attributes or status changed — links only mark it, which
//! leaves the version alone). The estate function (worker crate) reads the stream through
//! its event source mapping; `serve --backend aws` reads it itself (`StreamFollower`).

use crate::domain::LocationId;

/// The location a stream record asks the rules to follow, if it does: `event` is the
/// record's `eventName`, `pk`/`sk` its keys, and the versions those of its old and new
/// images (absent before a location's first change).
pub fn location_to_follow(
    event: &str,
    pk: Option<&str>,
    sk: Option<&str>,
    old_version: Option<&str>,
    new_version: Option<&str>,
) -> Option<LocationId> {
    if sk != Some(super::items::LOCATION_SK) {
        return None;
    }
    let id = pk?.strip_prefix("LOC#")?.parse().ok()?;
    match event {
        "INSERT" => Some(id),
        "MODIFY" if old_version != new_version => Some(id),
        _ => None,
    }
}

#[cfg(feature = "emulator")]
pub use follower::StreamFollower;

#[cfg(feature = "emulator")]
mod follower {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
    use tokio::sync::watch;

    use super::location_to_follow;
    use crate::error::{StoreError, StoreResult};
    use crate::ports::Ports;
    use crate::AwsClients;

    /// How often the follower asks the stream for records when it found none.
    const POLL: Duration = Duration::from_millis(100);

    /// Reads the catalog table's stream from the time it starts, shard by shard, and
    /// follows each location change with its brand's rules, in order: what the estate
    /// function's event source mapping does on AWS, for a server run against a local
    /// emulator.
    pub struct StreamFollower {
        streams: aws_sdk_dynamodbstreams::Client,
        arn: String,
        /// Each shard, and the sequence number of the last record read from it.
        shards: Vec<(String, Option<String>)>,
        began: Instant,
        /// Milliseconds after `began` when the last poll that found nothing started.
        idle_from: Arc<AtomicU64>,
    }

    impl StreamFollower {
        /// Positions a reader at the end of every shard of the table's stream: changes from
        /// now on are followed. `Err` if the table has no stream.
        pub async fn start(clients: &AwsClients, table: &str) -> StoreResult<StreamFollower> {
            let described = clients
                .dynamodb
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| StoreError::unavailable(format!("DescribeTable: {e}")))?;
            let arn = described
                .table()
                .and_then(|t| t.latest_stream_arn())
                .ok_or_else(|| {
                    StoreError::internal(format!("table {table} has no stream to follow"))
                })?
                .to_owned();
            let streams = aws_sdk_dynamodbstreams::Client::new(&clients.sdk_config);
            let stream = streams
                .describe_stream()
                .stream_arn(&arn)
                .send()
                .await
                .map_err(|e| StoreError::unavailable(format!("DescribeStream: {e}")))?;
            let shard_ids: Vec<String> = stream
                .stream_description()
                .map(|d| d.shards())
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.shard_id().map(str::to_owned))
                .collect();
            let mut follower = StreamFollower {
                streams,
                arn,
                shards: shard_ids.into_iter().map(|id| (id, None)).collect(),
                began: Instant::now(),
                idle_from: Arc::new(AtomicU64::new(0)),
            };
            // What the stream holds already is history: read past it without following.
            while follower.read(None).await? {}
            Ok(follower)
        }

        /// A probe: whether a poll that started at or after `since` found the stream empty
        /// (then every change written before `since` has been followed).
        pub fn idle_probe(&self) -> impl Fn(Instant) -> bool + Send + Sync + 'static {
            let (began, idle_from) = (self.began, self.idle_from.clone());
            move |since: Instant| {
                let since_ms = since.saturating_duration_since(began).as_millis() as u64;
                idle_from.load(Ordering::SeqCst) > since_ms
            }
        }

        /// Follows until `shutdown`; a failure is logged and the same records are read
        /// again after a pause (the iterator moves on only once a batch is followed).
        pub async fn run(mut self, ports: Ports, mut shutdown: watch::Receiver<bool>) {
            let mut pause = POLL;
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let polled_at = self.began.elapsed().as_millis() as u64 + 1;
                match self.poll_once(&ports).await {
                    Ok(true) => {
                        pause = POLL;
                        continue;
                    }
                    Ok(false) => {
                        self.idle_from.store(polled_at, Ordering::SeqCst);
                        pause = POLL;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "following the catalog stream failed; retrying");
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }

        /// One read of every shard; whether any records came.
        async fn poll_once(&mut self, ports: &Ports) -> StoreResult<bool> {
            self.read(Some(ports)).await
        }

        /// Reads every shard after the last record read from it, following each location
        /// change with `ports` (none: only moving past them); whether any records came. A
        /// fresh iterator each time, from the last sequence number: the local emulator
        /// replaces a table's stream shard when it rolls a cancelled transaction back, and an
        /// iterator taken before would read the old one for ever.
        async fn read(&mut self, ports: Option<&Ports>) -> StoreResult<bool> {
            let mut any = false;
            for (shard, last) in &mut self.shards {
                let request = self
                    .streams
                    .get_shard_iterator()
                    .stream_arn(&self.arn)
                    .shard_id(shard.as_str());
                let request = match last.as_deref() {
                    Some(seq) => request
                        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                        .sequence_number(seq),
                    None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                };
                let iterator = request
                    .send()
                    .await
                    .map_err(|e| StoreError::unavailable(format!("GetShardIterator: {e}")))?;
                let Some(iterator) = iterator.shard_iterator() else {
                    continue;
                };
                let out = self
                    .streams
                    .get_records()
                    .shard_iterator(iterator)
                    .send()
                    .await
                    .map_err(|e| StoreError::unavailable(format!("GetRecords: {e}")))?;
                let mut seen = std::collections::HashSet::new();
                for record in out.records() {
                    any = true;
                    let Some(change) = record.dynamodb() else {
                        continue;
                    };
                    if let Some(ports) = ports {
                        let text =
                            |image: Option<&std::collections::HashMap<String, AttributeValue>>,
                             name: &str| {
                                image.and_then(|i| match i.get(name) {
                                    Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => {
                                        Some(s.clone())
                                    }
                                    _ => None,
                                })
                            };
                        let event = record
                            .event_name()
                            .map(|e| e.as_str().to_owned())
                            .unwrap_or_default();
                        let followed = location_to_follow(
                            &event,
                            text(change.keys(), "pk").as_deref(),
                            text(change.keys(), "sk").as_deref(),
                            text(change.old_image(), "version").as_deref(),
                            text(change.new_image(), "version").as_deref(),
                        );
                        // A location changed twice in one batch is followed once, as it is now.
                        if let Some(location) = followed.filter(|l| seen.insert(*l)) {
                            bulklink_core::rules::follow(ports, location).await?;
                        }
                    }
                    if let Some(seq) = change.sequence_number() {
                        *last = Some(seq.to_owned());
                    }
                }
            }
            Ok(any)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_location_created_or_changed_is_followed() {
        let id = LocationId::new_random();
        let pk = format!("LOC#{id}");
        let at = |event, sk, old, new| location_to_follow(event, Some(&pk), Some(sk), old, new);
        assert_eq!(at("INSERT", "#LOC", None, None), Some(id));
        assert_eq!(at("MODIFY", "#LOC", None, Some("1")), Some(id));
        assert_eq!(at("MODIFY", "#LOC", Some("3"), Some("4")), Some(id));
        // A link marks the location without changing its version; a deletion took its
        // links with it; a link item or a claim is no location.
        assert_eq!(at("MODIFY", "#LOC", Some("3"), Some("3")), None);
        assert_eq!(at("MODIFY", "#LOC", None, None), None);
        assert_eq!(at("REMOVE", "#LOC", Some("3"), None), None);
        assert_eq!(at("INSERT", "#EXT", None, None), None);
        assert_eq!(
            location_to_follow("INSERT", Some("OFFER#x"), Some(&pk), None, None),
            None
        );
    }
}
