//! Fanout as a Lambda function: each fanout message pages its job until the invocation's
//! deadline is near, then hands over by re-enqueueing itself (see `Fanout::run`). Failed
//! messages are reported alone (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use bulklink_lambda::{
    batch_response, deadline_instant, leave_for_redelivery, received_messages, RecordWithoutId,
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::Fanout;

pub async fn handle_sqs_event(
    fanout: &Fanout,
    event: SqsEvent,
    deadline: Instant,
) -> Result<SqsBatchResponse, RecordWithoutId> {
    let mut failed = Vec::new();
    for message in received_messages(event)? {
        if let Err(e) = fanout.handle(&message.body, deadline).await {
            leave_for_redelivery("fanout", &message, e.failure());
            failed.push(message.message_id);
        }
    }
    Ok(batch_response(failed))
}

pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let fanout = Fanout::new(setup.ports, &setup.settings);
    let fanout = &fanout;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let deadline = deadline_instant(event.context.deadline);
            handle_sqs_event(fanout, event.payload, deadline)
                .instrument(span)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
