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
use serde::Deserialize;
use shared::auth::Caller;
use shared::domain::{BrandId, Job, JobId, LocationId, OfferId};
use shared::http::{parse_id, ApiError, ApiState, ListBody, PageQuery, QueryParams};
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

/// The job, if the caller may see it; otherwise the same 404 as a missing one.
async fn visible_job(ports: &Ports, caller: &Caller, id: JobId) -> Result<Job, ApiError> {
    let missing = || format!("job {id} does not exist");
    let job = ports
        .jobs
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(missing()))?;
    caller.check_owner(Some(job.brand_id), missing())?;
    Ok(job)
}

async fn get_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = visible_job(&ports, &caller, job_id).await?;
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
    visible_job(&ports, &caller, job_id).await?;
    let page = ports
        .jobs
        .page_failures(job_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |f| f)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobsQuery {
    brand_id: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_brand_jobs(
    State(ports): State<Ports>,
    caller: Caller,
    QueryParams(query): QueryParams<JobsQuery>,
) -> Result<Response, ApiError> {
    let requested: Option<BrandId> = query.brand_id.as_deref().map(parse_id).transpose()?;
    let brand = caller.acting_brand(requested, "query parameter brandId")?;
    let page_query = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    };
    let (cursor, limit) = (page_query.cursor()?, page_query.limit()?);
    let page = ports
        .jobs
        .page_brand_jobs(brand, cursor.as_ref(), limit)
        .await?;
    let now = Utc::now();
    Ok(Json(ListBody::from_page(page, |job| JobView::of(&job, now))).into_response())
}

async fn visible_offer(
    ports: &Ports,
    caller: &Caller,
    id: OfferId,
) -> Result<shared::domain::Offer, ApiError> {
    let missing = || format!("offer {id} does not exist");
    let offer = ports
        .catalog
        .get_offer(id)
        .await?
        .ok_or_else(|| ApiError::not_found(missing()))?;
    caller.check_owner(Some(offer.brand_id), missing())?;
    Ok(offer)
}

async fn get_offer(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let offer = visible_offer(&ports, &caller, offer_id).await?;
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
    visible_offer(&ports, &caller, offer_id).await?;
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
    let missing = || format!("location {location_id} does not exist");
    let location = ports
        .catalog
        .get_location(location_id)
        .await?
        .ok_or_else(|| ApiError::not_found(missing()))?;
    caller.check_owner(Some(location.brand_id), missing())?;
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
    visible_job(&ports, &caller, job_id).await?;
    let page = ports
        .webhooks
        .page_job_deliveries(job_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |d| d)).into_response())
}
