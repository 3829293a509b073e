//! The sweeper as a scheduled Lambda function: finishes jobs whose completion or
//! notification was interrupted, restarts lost fanouts and flags jobs without progress.

use bulklink_core::lifecycle::{self, SweepReport};
use bulklink_core::ports::Ports;
use bulklink_core::Settings;
use serde_json::{json, Value};
use tracing::Instrument;

/// One sweep, as the scheduled event triggers it; the report is the function's result.
pub async fn handle_scheduled_event(
    ports: &Ports,
    settings: &Settings,
) -> Result<Value, bulklink_core::StoreError> {
    let (idle_since, pending_since) = settings.sweep_thresholds(ports.clock.now());
    let report: SweepReport = lifecycle::sweep(ports, idle_since, pending_since).await?;
    Ok(json!({
        "notified": report.notified,
        "completed": report.completed,
        "restartedFanouts": report.restarted_fanouts,
        "stalled": report.stalled,
    }))
}

pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let (ports, settings) = (&setup.ports, &setup.settings);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            handle_scheduled_event(ports, settings)
                .instrument(span)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
