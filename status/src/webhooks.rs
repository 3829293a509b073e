//! Webhook subscriptions, resources of a brand: create (with its signing secret), list,
//! read, delete, rotate the secret; their deliveries and redelivery.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulklink_core::domain::{Delivery, Event, SubscriptionStatus, WebhookEvent};
use bulklink_core::domain::{
    DeliveryId, Subscription, SubscriptionFilter, SubscriptionId, WebhookSecret, WebhookUrl,
    PREVIOUS_SECRET_GRACE, PROGRESS_EVERY_SECONDS, RATE_LIMIT_PER_SEC,
};
use bulklink_core::ports::Ports;
use bulklink_http::auth::Caller;
use bulklink_http::http::Problem;
use bulklink_http::http::{
    checked_text, parse_id, ApiError, ApiState, BrandPageQuery, JsonBody, ListBody, PageQuery,
    QueryParams,
};
use bulklink_http::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use bulklink_http::views::SubscriptionView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

const MAX_DESCRIPTION_LEN: usize = 500;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(subscribe, list_subscriptions))
        .routes(routes!(get_subscription, unsubscribe))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(send_test))
        .routes(routes!(replay))
        .routes(routes!(enable))
}

/// A new webhook subscription of the caller's brand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "url": "https://hooks.example.com/bulklink",
    "filter": { "eventTypes": ["job.succeeded", "job.failed"] }, "description": "orders service" }))]
struct NewSubscription {
    url: WebhookUrl,
    /// Which of the brand's events it hears (all when absent); `brandId` is pinned to the
    /// caller's brand.
    #[serde(default)]
    filter: SubscriptionFilter,
    /// What it is for, 1 to 500 characters.
    #[schema(schema_with = description_schema)]
    description: Option<String>,
    /// Hear `job.progress`: at most one per job in each window of this many seconds (1 to
    /// 86,400). Without it no `job.progress` is sent to this subscription.
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(
        default,
        deserialize_with = "bulklink_http::http::optional_whole_number"
    )]
    progress_every_seconds: Option<u32>,
    /// Send it at most this many attempts a second (1 to 1,000): deliveries are spread out,
    /// never dropped. No limit without it.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(
        default,
        deserialize_with = "bulklink_http::http::optional_whole_number"
    )]
    rate_limit_per_sec: Option<u32>,
}
bulklink_core::json_object_only!(NewSubscription);

fn description_schema() -> utoipa::openapi::Object {
    bulklink_http::http::nullable_text_schema(MAX_DESCRIPTION_LEN)
}

fn subscription_example(with_secret: bool) -> serde_json::Value {
    let mut example = serde_json::json!({
        "id": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1014",
        "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012",
        "url": "https://hooks.example.com/bulklink",
        "filter": { "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012", "eventTypes": ["job.succeeded"] },
        "description": "orders service",
        "createdAt": "2026-12-01T10:00:00.000Z",
        "status": "active"
    });
    if with_secret {
        example["secret"] = serde_json::json!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }
    example
}

/// Subscribe a webhook: the answer carries its signing secret, shown only here.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    request_body(content = NewSubscription, content_type = "application/json"),
    responses(
        (status = 201, description = "The subscription, with its `secret`", body = SubscriptionView,
         headers(("Location" = String, description = "`/webhooks/{id}`")),
         links(("GetWebhook" = (operation_id = "getWebhook", parameters(("id" = "$response.body#/id")))), ("ListWebhookDeliveries" = (operation_id = "listWebhookDeliveries", parameters(("id" = "$response.body#/id")))), ("RotateWebhookSecret" = (operation_id = "rotateWebhookSecret", parameters(("id" = "$response.body#/id")))), ("DeleteWebhook" = (operation_id = "deleteWebhook", parameters(("id" = "$response.body#/id"))))),
         example = json!(subscription_example(true))
        ),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "`filter.jobId` names no job of the brand",
         content_type = "application/problem+json", body = Problem),
    )
)]
async fn subscribe(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    let brand = caller.acting_brand(new.filter.brand_id, "filter.brandId")?;
    if let Some(job_id) = new.filter.job_id {
        let job = state.ports.jobs.get_job(job_id).await?;
        if job.is_none_or(|job| job.brand_id != brand) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("filter.jobId {job_id} is not a job of brand {brand}"),
            ));
        }
    }
    let description = new
        .description
        .as_deref()
        .map(|d| checked_text("description", d, MAX_DESCRIPTION_LEN))
        .transpose()?;
    if let Some(every) = new
        .progress_every_seconds
        .filter(|every| !PROGRESS_EVERY_SECONDS.contains(every))
    {
        return Err(ApiError::bad_request(format!(
            "progressEverySeconds is {every}; give 1 to 86400 seconds, or leave it out for no \
             job.progress events"
        )));
    }
    if let Some(rate) = new
        .rate_limit_per_sec
        .filter(|rate| !RATE_LIMIT_PER_SEC.contains(rate))
    {
        return Err(ApiError::bad_request(format!(
            "rateLimitPerSec is {rate}; give 1 to 1000 attempts a second, or leave it out for \
             no limit"
        )));
    }
    state.egress.check_registration(&new.url).await?;
    let mut subscription = Subscription::new(
        SubscriptionId::new_v7(),
        brand,
        new.url,
        new.filter,
        description,
        state.ports.clock.now(),
    );
    subscription.progress_every_seconds = new.progress_every_seconds;
    subscription.rate_limit_per_sec = new.rate_limit_per_sec;
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

/// A brand's webhook subscriptions, newest first (no secrets).
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    params(BrandPageQuery),
    responses(
        (status = 200, description = "A page of subscriptions", body = ListBody<SubscriptionView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
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

/// A webhook subscription (no secret).
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "getWebhook",
    params(("id" = SubscriptionId, Path, description = "The subscription")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView, example = json!(subscription_example(false))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_subscription(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let subscription = caller.visible_subscription(&ports, id).await?;
    Ok(Json(SubscriptionView::of(&subscription, false)).into_response())
}

/// Remove a webhook subscription.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    params(("id" = SubscriptionId, Path, description = "The subscription")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
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
        Err(no_such_webhook(id))
    }
}

/// A new secret, shown in this answer only; the previous one keeps signing for 24 hours.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    params(("id" = SubscriptionId, Path, description = "The subscription")),
    responses(
        (status = 200, description = "The subscription with its new `secret` and `previousSecretExpiresAt`",
         body = SubscriptionView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn rotate_secret(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    caller.visible_subscription(&ports, id).await?;
    let until = ports.clock.now()
        + chrono::Duration::from_std(PREVIOUS_SECRET_GRACE).unwrap_or(chrono::Duration::zero());
    let rotated = ports
        .webhooks
        .rotate_secret(id, &WebhookSecret::generate(), until)
        .await?
        .ok_or_else(|| no_such_webhook(id))?;
    tracing::info!(subscription_id = %id, principal = %caller.principal, "webhook secret rotated");
    Ok(Json(SubscriptionView::of(&rotated, true)).into_response())
}

/// A subscription's deliveries and their attempts, newest first.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    params(("id" = SubscriptionId, Path, description = "The subscription"), PageQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = ListBody<Delivery>,
         links(("Redeliver" = (operation_id = "redeliver", parameters(("id" = "$request.path.id"),
             ("deliveryId" = "$response.body#/items/0/id")))))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
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

/// Send a delivery again now: the same `webhook-id`, a new timestamp.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/deliveries/{deliveryId}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver",
    params(
        ("id" = SubscriptionId, Path, description = "The subscription"),
        ("deliveryId" = DeliveryId, Path, description = "The delivery (its `webhook-id`)"),
    ),
    responses(
        (status = 202, description = "Scheduled now", body = Delivery),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The subscription is disabled, or an attempt is under way",
         content_type = "application/problem+json", body = Problem),
    )
)]
async fn redeliver(
    State(ports): State<Ports>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let delivery_id: DeliveryId = parse_id(&delivery_id)?;
    let subscription = caller.visible_subscription(&ports, id).await?;
    active(&subscription)?;
    let missing = || format!("delivery {delivery_id} of webhook {id} does not exist");
    for _ in 0..3 {
        let delivery = ports
            .webhooks
            .get_delivery(id, delivery_id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        if let Some(scheduled) = bulklink_core::lifecycle::redeliver(&ports, delivery).await? {
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

/// 404: the subscription is gone (deleted meanwhile).
fn no_such_webhook(id: SubscriptionId) -> ApiError {
    ApiError::not_found(format!("webhook {id} does not exist"))
}

/// A disabled subscription sends nothing: 409 saying why.
fn active(subscription: &Subscription) -> Result<(), ApiError> {
    if subscription.status == SubscriptionStatus::Active {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "webhook {} is disabled ({}); POST /webhooks/{}/enable brings it back",
        subscription.id,
        subscription
            .disabled_reason
            .as_deref()
            .unwrap_or("no reason recorded"),
        subscription.id
    )))
}

/// Enable a disabled subscription: it hears events again, its failing streak forgotten.
/// Deliveries given up while it was disabled stay given up (replay the time it missed).
#[utoipa::path(
    post,
    path = "/webhooks/{id}/enable",
    tag = "webhooks",
    operation_id = "enableWebhook",
    params(("id" = SubscriptionId, Path, description = "The subscription")),
    responses(
        (status = 200, description = "The subscription, active (or active already)", body = SubscriptionView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn enable(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    caller.visible_subscription(&ports, id).await?;
    let enabled = ports
        .webhooks
        .enable_subscription(id)
        .await?
        .ok_or_else(|| no_such_webhook(id))?;
    tracing::info!(subscription_id = %id, principal = %caller.principal, "webhook enabled");
    Ok(Json(SubscriptionView::of(&enabled, false)).into_response())
}

/// Send a `webhook.test` event to this subscription now, signed with its current secret
/// (and the previous one while it still signs), recorded in its delivery log like any other.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/test",
    tag = "webhooks",
    operation_id = "sendWebhookTest",
    params(("id" = SubscriptionId, Path, description = "The subscription")),
    responses(
        (status = 202, description = "The test delivery, attempted at once", body = Delivery,
         headers(("Location" = String, description = "`/webhooks/{id}/deliveries`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The subscription is disabled",
         content_type = "application/problem+json", body = Problem),
    )
)]
async fn send_test(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let subscription = caller.visible_subscription(&ports, id).await?;
    active(&subscription)?;
    let now = ports.clock.now();
    let event = Event::Webhook(WebhookEvent::test(subscription.brand_id, id, now));
    let delivery = ports
        .webhooks
        .create_delivery(&Delivery::new(&event, &subscription, now))
        .await?;
    // Dying right here leaves the delivery pending without a message: the sweeper
    // schedules overdue deliveries again.
    bulklink_core::lifecycle::schedule_attempt(
        &ports.webhook_queue,
        &delivery,
        std::time::Duration::ZERO,
    )
    .await?;
    tracing::info!(subscription_id = %id, delivery_id = %delivery.id, principal = %caller.principal, "test send requested");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/webhooks/{id}/deliveries"))],
        Json(delivery),
    )
        .into_response())
}

/// A replay's range.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "since": "2026-12-01T09:00:00Z", "until": "2026-12-01T10:00:00Z" }))]
struct ReplayRange {
    /// From this instant (included); no older than the 30 days events are kept.
    since: chrono::DateTime<chrono::Utc>,
    /// Up to this instant (excluded); now when absent, never later.
    until: Option<chrono::DateTime<chrono::Utc>>,
}
bulklink_core::json_object_only!(ReplayRange);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReplayQuery {
    /// `true`: count what the replay would send, and send nothing (200).
    dry_run: Option<bool>,
}

/// What a replay sends (or, in a dry run, would send).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReplayView {
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
    /// Deliveries it sends: the brand's events of the range this subscription hears.
    events: u64,
    dry_run: bool,
}

/// Send the brand's events of a time range to this subscription again: every event kept in
/// `[since, until)` its filter matches, in order of occurrence, each with its original
/// `webhook-id` (a delivery made now for an event from before it existed).
#[utoipa::path(
    post,
    path = "/webhooks/{id}/replay",
    tag = "webhooks",
    operation_id = "replayWebhook",
    params(("id" = SubscriptionId, Path, description = "The subscription"), ReplayQuery),
    request_body(content = ReplayRange, content_type = "application/json"),
    responses(
        (status = 200, description = "`dryRun=true`: what it would send; nothing was sent", body = ReplayView),
        (status = 202, description = "The replay is under way", body = ReplayView,
         headers(("Location" = String, description = "`/webhooks/{id}/deliveries`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The subscription is disabled",
         content_type = "application/problem+json", body = Problem),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The range is not replayable: `since` not before `until`, older than the 30 days events are kept, or `until` in the future",
         content_type = "application/problem+json", body = Problem),
    )
)]
async fn replay(
    State(ports): State<Ports>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<ReplayQuery>,
    JsonBody(range): JsonBody<ReplayRange>,
) -> Result<Response, ApiError> {
    let id: SubscriptionId = parse_id(&id)?;
    let subscription = caller.visible_subscription(&ports, id).await?;
    active(&subscription)?;
    let now = ports.clock.now();
    let until = range.until.unwrap_or(now);
    bulklink_core::replay::check_range(range.since, until, now)
        .map_err(|detail| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail))?;
    let events = bulklink_core::replay::count(
        ports.webhooks.as_ref(),
        &subscription,
        range.since,
        until,
        now,
    )
    .await?;
    let dry_run = query.dry_run == Some(true);
    let view = ReplayView {
        since: range.since,
        until,
        events,
        dry_run,
    };
    if dry_run {
        return Ok(Json(view).into_response());
    }
    if events > 0 {
        ports
            .webhook_queue
            .send(&bulklink_core::domain::WebhookMessage::Replay(
                bulklink_core::domain::Replay {
                    subscription_id: id,
                    since: range.since,
                    until,
                    after: None,
                },
            ))
            .await?;
    }
    tracing::info!(subscription_id = %id, events, principal = %caller.principal, "replay requested");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/webhooks/{id}/deliveries"))],
        Json(view),
    )
        .into_response())
}
