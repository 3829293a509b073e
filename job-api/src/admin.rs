//! Administration: the live write budget (`GET`/`PUT /admin/write-budget`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bulklink_core::ports::WRITE_BUDGET_SETTING;
use bulklink_http::auth::Caller;
use bulklink_http::http::{ApiError, ApiState, JsonBody, Problem};
use bulklink_http::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

/// The highest budget accepted: far above what one table takes, low enough to be a number
/// every worker can divide.
const MAX_WRITES_PER_SEC: f64 = 10_000_000.0;

/// The write budget in force and, where the workers run in this process, their live rates.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"writesPerSec": 1000.0, "source": "setting", "refreshSeconds": 5.0,
    "workers": [{"worker": "worker-1", "writesPerSec": 250.0}, {"worker": "worker-2", "writesPerSec": 125.0}]}))]
pub struct WriteBudgetView {
    /// Catalog writes per second across all workers; 0 = unlimited.
    pub writes_per_sec: f64,
    /// `setting` (set through this route) or `default` (`WRITE_BUDGET_PER_SEC`).
    pub source: String,
    /// Every worker applies a change within this many seconds.
    pub refresh_seconds: f64,
    /// Each worker's rate now (0 = unlimited): its share of the budget, less while it backs
    /// off from throttling. Empty where workers run elsewhere (on Lambda, each instance
    /// reports `WriteRatePerSec` in its metrics).
    pub workers: Vec<WorkerRate>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRate {
    pub worker: String,
    pub writes_per_sec: f64,
}

/// A new write budget.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "writesPerSec": 1000 }))]
pub struct WriteBudgetChange {
    /// Catalog writes per second across all workers (about 2 per location); 0 = unlimited.
    #[schema(minimum = 0, maximum = 10000000)]
    writes_per_sec: f64,
}
bulklink_core::json_object_only!(WriteBudgetChange);

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the write budget is the operators': it needs an administrator token",
        ))
    }
}

async fn view(state: &ApiState) -> Result<WriteBudgetView, ApiError> {
    let (budget, stored) =
        bulklink_core::budget::current(state.ports.runtime_settings.as_ref(), &state.settings)
            .await?;
    Ok(WriteBudgetView {
        writes_per_sec: budget.unwrap_or(0.0),
        source: if stored { "setting" } else { "default" }.to_owned(),
        refresh_seconds: state.settings.budget_refresh.as_secs_f64(),
        workers: state
            .live_rates
            .snapshot()
            .into_iter()
            .map(|(worker, rate)| WorkerRate {
                worker,
                writes_per_sec: rate.map_or(0.0, |r| (r * 100.0).round() / 100.0),
            })
            .collect(),
    })
}

/// The write budget in force, and the workers' live rates.
#[utoipa::path(
    get,
    path = "/admin/write-budget",
    tag = "admin",
    operation_id = "getWriteBudget",
    responses(
        (status = 200, description = "The budget", body = WriteBudgetView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
pub async fn get_write_budget(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<WriteBudgetView>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(view(&state).await?))
}

/// Change the write budget while jobs run: every worker applies it within
/// `refreshSeconds`, for the jobs running and those to come.
#[utoipa::path(
    put,
    path = "/admin/write-budget",
    tag = "admin",
    operation_id = "setWriteBudget",
    request_body(content = WriteBudgetChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The budget, as stored", body = WriteBudgetView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "A budget so low one chunk would outlast its visibility timeout",
         content_type = "application/problem+json", body = Problem),
    )
)]
pub async fn set_write_budget(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(change): JsonBody<WriteBudgetChange>,
) -> Result<Json<WriteBudgetView>, ApiError> {
    require_admin(&caller)?;
    let writes = change.writes_per_sec;
    if !(writes.is_finite() && (0.0..=MAX_WRITES_PER_SEC).contains(&writes)) {
        return Err(ApiError::bad_request(format!(
            "writesPerSec must be between 0 (unlimited) and {MAX_WRITES_PER_SEC}, not {writes}"
        )));
    }
    let checked = bulklink_core::Settings {
        write_budget_per_sec: (writes > 0.0).then_some(writes),
        ..state.settings.clone()
    };
    if let Err(e) = checked.validate() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "writesPerSec {writes} is too low for these workers: {}",
                e.why
            ),
        ));
    }
    state
        .ports
        .runtime_settings
        .put_setting(WRITE_BUDGET_SETTING, &writes.to_string())
        .await?;
    info!(writes_per_sec = writes, principal = %caller.principal, "write budget changed");
    Ok(Json(view(&state).await?))
}
