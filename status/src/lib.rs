//! status: the read side of the HTTP API. Job status, failures and a brand's jobs; reads of
//! offers, locations and an offer's links; webhook subscriptions. One axum `Router` serves
//! Lambda and `bulklink serve` alike.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use shared::domain::{BrandId, JobId, LocationId, OfferId, SubscriptionId, WebhookUrl};
use shared::http::{parse_id, ApiError, JsonBody, ListBody, PageQuery, QueryParams};
use shared::ports::{Confirmation, Ports, SubscriptionFilter};
use shared::views::JobView;

pub fn router(ports: Ports) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/jobs", get(list_brand_jobs))
        .route("/jobs/{job_id}", get(get_job))
        .route("/jobs/{job_id}/failures", get(list_failures))
        .route("/offers/{offer_id}", get(get_offer))
        .route("/offers/{offer_id}/locations", get(list_offer_locations))
        .route("/locations/{location_id}", get(get_location))
        .route("/webhooks", axum::routing::post(subscribe))
        .route("/webhooks/{id}", get(get_subscription).delete(unsubscribe))
        .route("/webhooks/{id}/confirm", get(confirm_subscription))
        .with_state(ports)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn get_job(
    State(ports): State<Ports>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = ports
        .jobs
        .get_job(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    Ok(Json(JobView::of(&job, Utc::now())))
}

async fn list_failures(
    State(ports): State<Ports>,
    Path(job_id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let (cursor, limit) = (query.cursor()?, query.limit()?);
    if ports.jobs.get_job(job_id).await?.is_none() {
        return Err(ApiError::not_found(format!("job {job_id} does not exist")));
    }
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
    QueryParams(query): QueryParams<JobsQuery>,
) -> Result<Response, ApiError> {
    let brand: BrandId = parse_id(
        query
            .brand_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("query parameter brandId is required"))?,
    )?;
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

async fn get_offer(
    State(ports): State<Ports>,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let offer = ports
        .catalog
        .get_offer(offer_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("offer {offer_id} does not exist")))?;
    Ok(Json(offer).into_response())
}

async fn list_offer_locations(
    State(ports): State<Ports>,
    Path(offer_id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let (cursor, limit) = (query.cursor()?, query.limit()?);
    if ports.catalog.get_offer(offer_id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "offer {offer_id} does not exist"
        )));
    }
    let page = ports
        .catalog
        .page_offer_links(offer_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |link| link)).into_response())
}

async fn get_location(
    State(ports): State<Ports>,
    Path(location_id): Path<String>,
) -> Result<Response, ApiError> {
    let location_id: LocationId = parse_id(&location_id)?;
    let location = ports
        .catalog
        .get_location(location_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("location {location_id} does not exist")))?;
    Ok(Json(location).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSubscription {
    url: WebhookUrl,
    #[serde(default)]
    filter: SubscriptionFilter,
}

async fn subscribe(
    State(ports): State<Ports>,
    JsonBody(new): JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    let subscription = ports.events.subscribe(&new.url, &new.filter).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/webhooks/{}", subscription.id))],
        Json(subscription),
    )
        .into_response())
}

async fn get_subscription(
    State(ports): State<Ports>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let subscription = ports
        .events
        .get_subscription(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} does not exist")))?;
    Ok(Json(subscription).into_response())
}

async fn unsubscribe(
    State(ports): State<Ports>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    if ports.events.unsubscribe(id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("webhook {id} does not exist")))
    }
}

#[derive(Debug, Deserialize)]
struct ConfirmQuery {
    token: String,
}

async fn confirm_subscription(
    State(ports): State<Ports>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<ConfirmQuery>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    match ports.events.confirm_subscription(id, &query.token).await? {
        Confirmation::Confirmed => {
            Ok(Json(serde_json::json!({ "id": id, "status": "confirmed" })).into_response())
        }
        Confirmation::BadToken => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the confirmation token does not match this subscription",
        )),
        Confirmation::UnknownSubscription => {
            Err(ApiError::not_found(format!("webhook {id} does not exist")))
        }
    }
}
