//! The estate function: the catalog table's DynamoDB stream in (its event source mapping
//! keeps only location items and delivers a shard's records in order), each location
//! created or changed followed by its brand's standing rules. A record that cannot be
//! followed is reported with every record after it (`ReportBatchItemFailures` from its
//! sequence number), so they are retried in order and nothing is skipped; so is the record
//! the invocation's deadline leaves no time for, with the rest of the batch.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use bulklink_aws::estate::location_to_follow;
use bulklink_core::domain::LocationId;
use bulklink_core::ports::Ports;
use serde_dynamo::AttributeValue;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

/// The location a record asks the rules to follow, if any.
pub fn followed_location(record: &EventRecord) -> Option<LocationId> {
    let text = |item: &serde_dynamo::Item, name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => Some(s.clone()),
        _ => None,
    };
    let change = &record.change;
    location_to_follow(
        &record.event_name,
        text(&change.keys, "pk").as_deref(),
        text(&change.keys, "sk").as_deref(),
        text(&change.old_image, "version").as_deref(),
        text(&change.new_image, "version").as_deref(),
    )
}

/// Time kept back from the invocation's deadline for answering the runtime: a location is
/// not started with less than this left, and one still being followed when only this is
/// left is given up (following is idempotent: its retry finds what was written).
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Follows every location change of the batch in order; stops at the first that fails, or
/// that `deadline` leaves no time for, and reports it (the mapping retries from there).
pub async fn handle(
    ports: &Ports,
    event: Event,
    deadline: Option<Instant>,
) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    let mut followed = std::collections::HashSet::new();
    for record in &event.records {
        let Some(location) = followed_location(record) else {
            continue;
        };
        // A location changed twice in one batch is followed once, as it is now.
        if !followed.insert(location) {
            continue;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let outcome = match left {
            None => Some(bulklink_core::rules::follow(ports, location).await),
            Some(left) if left <= DEADLINE_MARGIN => None,
            Some(left) => tokio::time::timeout(
                left - DEADLINE_MARGIN,
                bulklink_core::rules::follow(ports, location),
            )
            .await
            .ok(),
        };
        match outcome {
            Some(Ok(done)) => {
                info!(location_id = %location, rules = done.len(), "location followed");
                continue;
            }
            Some(Err(e)) => {
                warn!(location_id = %location, error = %e, "following the location failed; the batch is retried from it")
            }
            None => {
                info!(location_id = %location, "no time left in this invocation; the batch is retried from this location")
            }
        }
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = record.change.sequence_number.clone();
        response.batch_item_failures.push(failure);
        return response;
    }
    response
}

pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let ports = &setup.ports;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Event>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let deadline = bulklink_lambda::deadline_instant(event.context.deadline);
            let response = handle(ports, event.payload, Some(deadline))
                .instrument(span)
                .await;
            Ok::<_, lambda_runtime::Error>(response)
        },
    ))
    .await
}
