//! The estate function: the catalog table's DynamoDB stream in (its event source mapping
//! keeps only location items and delivers a shard's records in order), each location
//! created or changed followed by its brand's standing rules. A record that cannot be
//! followed is reported with every record after it (`ReportBatchItemFailures` from its
//! sequence number), so they are retried in order and nothing is skipped.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use bulklink_aws::estate::location_to_follow;
use bulklink_core::domain::LocationId;
use bulklink_core::ports::Ports;
use serde_dynamo::AttributeValue;
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

/// Follows every location change of the batch in order; stops at the first that fails and
/// reports it (the mapping retries from there).
pub async fn handle(ports: &Ports, event: Event) -> DynamoDbEventResponse {
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
        match bulklink_core::rules::follow(ports, location).await {
            Ok(done) => info!(location_id = %location, rules = done.len(), "location followed"),
            Err(e) => {
                warn!(location_id = %location, error = %e, "following the location failed; the batch is retried from it");
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number.clone();
                response.batch_item_failures.push(failure);
                return response;
            }
        }
    }
    response
}

pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let ports = &setup.ports;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Event>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            Ok::<_, lambda_runtime::Error>(handle(ports, event.payload).instrument(span).await)
        },
    ))
    .await
}
