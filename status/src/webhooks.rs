//! Webhook subscriptions, resources of a brand: create (with its signing secret), list,
//! read, delete, rotate the secret; their deliveries and redelivery.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use shared::auth::Caller;
use shared::domain::{
    DeliveryId, Subscription, SubscriptionFilter, SubscriptionId, WebhookSecret, WebhookUrl,
    PREVIOUS_SECRET_GRACE,
};
use shared::http::{
    checked_text, parse_id, ApiError, ApiState, BrandPageQuery, JsonBody, ListBody, PageQuery,
    QueryParams,
};
use shared::ports::Ports;
use shared::views::SubscriptionView;

const MAX_DESCRIPTION_LEN: usize = 500;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/webhooks", post(subscribe).get(list_subscriptions))
        .route("/webhooks/{id}", get(get_subscription).delete(unsubscribe))
        .route("/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/webhooks/{id}/deliveries", get(list_deliveries))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSubscription {
    url: WebhookUrl,
    #[serde(default)]
    filter: SubscriptionFilter,
    description: Option<String>,
}

/// A subscription belongs to the brand its filter is pinned to: the caller's.
async fn subscribe(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    let brand = caller.acting_brand(new.filter.brand_id, "filter.brandId")?;
    if let Some(job_id) = new.filter.job_id {
        let job = state.ports.jobs.get_job(job_id).await?;
        if job.is_none_or(|job| job.brand_id != brand) {
            return Err(ApiError::bad_request(format!(
                "filter.jobId {job_id} is not a job of brand {brand}"
            )));
        }
    }
    let description = new
        .description
        .as_deref()
        .map(|d| checked_text("description", d, MAX_DESCRIPTION_LEN))
        .transpose()?;
    state.egress.check_registration(&new.url).await?;
    let subscription = Subscription::new(
        SubscriptionId::new_v7(),
        brand,
        new.url,
        new.filter,
        description,
        Utc::now(),
    );
    let stored = state
        .ports
        .webhooks
        .create_subscription(&subscription)
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/webhooks/{}", stored.id))],
        Json(SubscriptionView::of(&stored, true)),
    )
        .into_response())
}

async fn list_subscriptions(
    State(ports): State<Ports>,
    caller: Caller,
    QueryParams(query): QueryParams<BrandPageQuery>,
) -> Result<Response, ApiError> {
    let (brand, cursor, limit) = query.resolve(&caller)?;
    let page = ports
        .webhooks
        .page_brand_subscriptions(brand, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |s| {
        SubscriptionView::of(&s, false)
    }))
    .into_response())
}

async fn get_subscription(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let subscription = caller.visible_subscription(&ports, id).await?;
    Ok(Json(SubscriptionView::of(&subscription, false)).into_response())
}

async fn unsubscribe(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    caller.visible_subscription(&ports, id).await?;
    if ports.webhooks.delete_subscription(id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("webhook {id} does not exist")))
    }
}

/// A new secret, shown in this answer only; the previous one keeps signing for 24 hours.
async fn rotate_secret(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    caller.visible_subscription(&ports, id).await?;
    let until = Utc::now()
        + chrono::Duration::from_std(PREVIOUS_SECRET_GRACE).unwrap_or(chrono::Duration::zero());
    let rotated = ports
        .webhooks
        .rotate_secret(id, &WebhookSecret::generate(), until)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} does not exist")))?;
    tracing::info!(subscription_id = %id, principal = %caller.principal, "webhook secret rotated");
    Ok(Json(SubscriptionView::of(&rotated, true)).into_response())
}

async fn list_deliveries(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let (cursor, limit) = (query.cursor()?, query.limit()?);
    caller.visible_subscription(&ports, id).await?;
    let page = ports
        .webhooks
        .page_subscription_deliveries(id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |d| d)).into_response())
}

/// Sends a delivery again now: the same `webhook-id`, a new timestamp.
async fn redeliver(
    State(ports): State<Ports>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let delivery_id: DeliveryId = parse_id(&delivery_id)?;
    let subscription = caller.visible_subscription(&ports, id).await?;
    if subscription.status != shared::domain::SubscriptionStatus::Active {
        return Err(ApiError::conflict(format!(
            "webhook {id} is disabled (its receiver answered 410 Gone); create a new one"
        )));
    }
    let missing = || format!("delivery {delivery_id} of webhook {id} does not exist");
    for _ in 0..3 {
        let delivery = ports
            .webhooks
            .get_delivery(id, delivery_id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        if let Some(scheduled) = shared::lifecycle::redeliver(&ports, delivery).await? {
            tracing::info!(%delivery_id, principal = %caller.principal, "redelivery requested");
            return Ok((StatusCode::ACCEPTED, Json(scheduled)).into_response());
        }
    }
    // Three attempts raced this request: it is being delivered right now anyway.
    Err(ApiError::conflict(format!(
        "delivery {delivery_id} is being attempted right now; ask again shortly"
    ))
    .with_retry_after(1))
}
