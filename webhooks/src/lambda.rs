//! The deliverer as a Lambda function on the webhook queue: the records of a batch are
//! handled side by side (a hanging receiver holds only its own), each failure reported
//! alone (`ReportBatchItemFailures`); an undecodable record too (the one queue policy,
//! `bulklink_lambda::leave_for_redelivery`: it reaches the webhook queue's DLQ).

use std::io::Write;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use bulklink_core::telemetry::{emf_line, Metric};
use bulklink_lambda::{batch_response, leave_for_redelivery, received_messages, RecordWithoutId};
use futures::future::join_all;
use tracing::Instrument;

use crate::{Deliverer, Report};

pub async fn handle_sqs_event(
    deliverer: &Deliverer,
    event: SqsEvent,
    metrics: &mut impl Write,
) -> Result<SqsBatchResponse, RecordWithoutId> {
    let messages = received_messages(event)?;
    let results = join_all(messages.iter().map(|m| deliverer.handle(&m.body))).await;
    let mut failed = Vec::new();
    let mut total = Report::default();
    for (message, result) in messages.into_iter().zip(results) {
        match result {
            Ok(report) => total.add(report),
            Err(e) => {
                leave_for_redelivery("webhooks", &message, e.failure());
                failed.push(message.message_id);
            }
        }
    }
    let _ = writeln!(metrics, "{}", delivery_metrics(&total));
    Ok(batch_response(failed))
}

/// The invocation's metrics line (EMF), dimension `Function=webhooks`.
pub fn delivery_metrics(report: &Report) -> String {
    emf_line(
        "bulklink",
        &[("Function", "webhooks")],
        &[
            Metric::count("WebhookAttempts", report.attempted.into()),
            Metric::count("WebhookDelivered", report.delivered.into()),
            Metric::count("WebhookFailedAttempts", report.failed_attempts.into()),
            Metric::count("WebhookGivenUp", report.given_up.into()),
            Metric::count("WebhookDeferred", report.deferred.into()),
        ],
    )
}

/// The Lambda function: the webhook queue's consumer.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let egress = bulklink_lambda::or_fail_init(bulklink_egress::Egress::from_env(|name: &str| {
        std::env::var(name).ok()
    }))
    .await;
    let deliverer = Deliverer::new(&setup.ports, egress, &setup.settings)?;
    let deliverer = &deliverer;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            handle_sqs_event(deliverer, event.payload, &mut std::io::stdout())
                .instrument(span)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
