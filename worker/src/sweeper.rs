//! The sweeper as a scheduled Lambda function: finishes jobs whose completion or
//! notification was interrupted, restarts lost fanouts and flags jobs without progress;
//! every minute, starts the scheduled jobs whose `notBefore` has come; and at its own
//! cadence watches every standing rule's drift (`offer.drift`).

use bulklink_core::lifecycle::{self, SweepReport};
use bulklink_core::ports::Ports;
use bulklink_core::Settings;
use serde_json::{json, Value};
use tracing::Instrument;

/// What a scheduled event asks for: `{"task": "release-due"}` (every minute) only starts the
/// scheduled jobs whose time has come; any other event is a sweep, which does that too.
fn releases_only(event: &Value) -> bool {
    event.get("task").and_then(Value::as_str) == Some("release-due")
}

/// `{"task": "watch-drift"}`: the drift watch alone (`rules::watch_drift`), on its own
/// schedule, since it reads every location of each brand with a rule.
fn watches_drift(event: &Value) -> bool {
    event.get("task").and_then(Value::as_str) == Some("watch-drift")
}

/// One sweep (or release of due jobs, or drift watch), as the scheduled event triggers it;
/// the report is the function's result.
pub async fn handle_scheduled_event(
    ports: &Ports,
    settings: &Settings,
    event: &Value,
) -> Result<Value, bulklink_core::StoreError> {
    if watches_drift(event) {
        let report = bulklink_core::rules::watch_drift(ports, settings.drift_settle).await?;
        return Ok(json!({ "drift": report }));
    }
    let released = lifecycle::release_due(ports).await?;
    if releases_only(event) {
        return Ok(json!({ "released": released }));
    }
    let (idle_since, pending_since) = settings.sweep_thresholds(ports.clock.now());
    let report: SweepReport = lifecycle::sweep(ports, idle_since, pending_since).await?;
    Ok(json!({
        "notified": report.notified,
        "completed": report.completed,
        "restartedFanouts": report.restarted_fanouts,
        "stalled": report.stalled,
        "released": released,
    }))
}

pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let (ports, settings) = (&setup.ports, &setup.settings);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            handle_scheduled_event(ports, settings, &event.payload)
                .instrument(span)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
