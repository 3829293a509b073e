//! The deliverer as a Lambda function on the webhook queue: the records of a batch are
//! handled side by side (a hanging receiver holds only its own), each failure reported
//! alone (`ReportBatchItemFailures`); an undecodable record too (the one queue policy,
//! `bulklink_lambda::leave_for_redelivery`: it reaches the webhook queue's DLQ).

use std::io::Write;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use bulklink_core::telemetry::{emf_line, Metric};
use bulklink_lambda::RecordWithoutId;

use crate::{Deliverer, Report};

pub async fn handle_sqs_event(
    deliverer: &Deliverer,
    event: SqsEvent,
    metrics: &mut impl Write,
) -> Result<SqsBatchResponse, RecordWithoutId> {
    let (reports, response) = bulklink_lambda::handle_event(deliverer, event, None).await?;
    write_metrics(&reports, metrics);
    Ok(response)
}

/// One metrics line for an invocation's reports.
fn write_metrics(reports: &[Report], metrics: &mut impl Write) {
    let mut total = Report::default();
    for report in reports {
        total.add(*report);
    }
    let _ = writeln!(metrics, "{}", delivery_metrics(&total));
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
            Metric::count("WebhooksDisabled", report.disabled.into()),
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
    bulklink_lambda::run_lambda(deliverer, |reports| {
        write_metrics(reports, &mut std::io::stdout())
    })
    .await
}
