//! status: the read side of the HTTP API. Job status, failures and a brand's jobs; reads of
//! offers, locations and an offer's links; webhook subscriptions and their deliveries. Every
//! route but `/healthz` acts as its `Caller`. One axum `Router` serves Lambda and
//! `bulklink serve` alike.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use shared::auth::Caller;
use shared::domain::{JobId, LocationId, OfferId};
use shared::http::{
    parse_id, ApiError, ApiState, BrandPageQuery, ListBody, PageQuery, QueryParams,
};
use shared::ports::Ports;
use shared::views::JobView;

mod webhooks;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/jobs", get(list_brand_jobs))
        .route("/jobs/{job_id}", get(get_job))
        .route("/jobs/{job_id}/failures", get(list_failures))
        .route("/offers/{offer_id}", get(get_offer))
        .route("/offers/{offer_id}/locations", get(list_offer_locations))
        .route("/locations/{location_id}", get(get_location))
        .route("/jobs/{job_id}/deliveries", get(list_job_deliveries))
        .merge(webhooks::routes())
        .with_state(state)
}

async fn healthz(State(ports): State<Ports>) -> Result<Json<serde_json::Value>, ApiError> {
    match ports.health.check().await {
        Ok(()) => Ok(Json(serde_json::json!({ "status": "ok" }))),
        Err(problem) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problem)),
    }
}

async fn get_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = caller.visible_job(&ports, job_id).await?;
    Ok(Json(JobView::of(&job, Utc::now())))
}

async fn list_failures(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let (cursor, limit) = (query.cursor()?, query.limit()?);
    caller.visible_job(&ports, job_id).await?;
    let page = ports
        .jobs
        .page_failures(job_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |f| f)).into_response())
}

async fn list_brand_jobs(
    State(ports): State<Ports>,
    caller: Caller,
    QueryParams(query): QueryParams<BrandPageQuery>,
) -> Result<Response, ApiError> {
    let (brand, cursor, limit) = query.resolve(&caller)?;
    let page = ports
        .jobs
        .page_brand_jobs(brand, cursor.as_ref(), limit)
        .await?;
    let now = Utc::now();
    Ok(Json(ListBody::from_page(page, |job| JobView::of(&job, now))).into_response())
}

async fn get_offer(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let offer = caller.visible_offer(&ports, offer_id).await?;
    Ok(Json(offer).into_response())
}

async fn list_offer_locations(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let (cursor, limit) = (query.cursor()?, query.limit()?);
    caller.visible_offer(&ports, offer_id).await?;
    let page = ports
        .catalog
        .page_offer_links(offer_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |link| link)).into_response())
}

async fn get_location(
    State(ports): State<Ports>,
    caller: Caller,
    Path(location_id): Path<String>,
) -> Result<Response, ApiError> {
    let location_id: LocationId = parse_id(&location_id)?;
    let location = caller.visible_location(&ports, location_id).await?;
    Ok(Json(location).into_response())
}

async fn list_job_deliveries(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let (cursor, limit) = (query.cursor()?, query.limit()?);
    caller.visible_job(&ports, job_id).await?;
    let page = ports
        .webhooks
        .page_job_deliveries(job_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |d| d)).into_response())
}
