//! status: the read side of the HTTP API. Job status, failures and a brand's jobs; reads of
//! offers, locations and an offer's links; webhook subscriptions. Every route but `/healthz`
//! (and the confirmation handshake, which its token authorises) acts as its `Caller`. One
//! axum `Router` serves Lambda and `bulklink serve` alike.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use shared::auth::Caller;
use shared::domain::{BrandId, Job, JobId, LocationId, OfferId, SubscriptionId, WebhookUrl};
use shared::http::{parse_id, ApiError, ApiState, JsonBody, ListBody, PageQuery, QueryParams};
use shared::ports::{Confirmation, Ports, Subscription, SubscriptionFilter};
use shared::views::JobView;

pub fn router(state: ApiState) -> Router {
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSubscription {
    url: WebhookUrl,
    #[serde(default)]
    filter: SubscriptionFilter,
}

/// A subscription belongs to the brand its filter is pinned to.
async fn subscribe(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    let mut filter = new.filter;
    filter.brand_id = Some(caller.acting_brand(filter.brand_id, "filter.brandId")?);
    if let Some(job_id) = filter.job_id {
        let job = state.ports.jobs.get_job(job_id).await?;
        if job.is_none_or(|job| Some(job.brand_id) != filter.brand_id) {
            return Err(ApiError::bad_request(format!(
                "filter.jobId {job_id} is not a job of brand {}",
                filter.brand_id.map(|b| b.to_string()).unwrap_or_default()
            )));
        }
    }
    state.egress.check_registration(&new.url).await?;
    let subscription = state.ports.events.subscribe(&new.url, &filter).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/webhooks/{}", subscription.id))],
        Json(subscription),
    )
        .into_response())
}

async fn visible_subscription(
    ports: &Ports,
    caller: &Caller,
    id: SubscriptionId,
) -> Result<Subscription, ApiError> {
    let missing = || format!("webhook {id} does not exist");
    let subscription = ports
        .events
        .get_subscription(id)
        .await?
        .ok_or_else(|| ApiError::not_found(missing()))?;
    caller.check_owner(subscription.filter.brand_id, missing())?;
    Ok(subscription)
}

async fn get_subscription(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let subscription = visible_subscription(&ports, &caller, id).await?;
    Ok(Json(subscription).into_response())
}

async fn unsubscribe(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    visible_subscription(&ports, &caller, id).await?;
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
