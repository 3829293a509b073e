//! Fanout as a Lambda function: each fanout message pages its job until the invocation's
//! deadline is near, then hands over by re-enqueueing itself (see `Fanout::run`). Failed
//! messages are reported alone (`ReportBatchItemFailures`, `bulklink_lambda`'s SQS driver).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use bulklink_lambda::RecordWithoutId;
use tokio::time::Instant;

use crate::Fanout;

pub async fn handle_sqs_event(
    fanout: &Fanout,
    event: SqsEvent,
    deadline: Instant,
) -> Result<SqsBatchResponse, RecordWithoutId> {
    let (_, response) = bulklink_lambda::handle_event(fanout, event, Some(deadline)).await?;
    Ok(response)
}

pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    bulklink_lambda::run_lambda(Fanout::new(setup.ports, &setup.settings), |_| {}).await
}
