//! Standing rules: `PUT` and `DELETE /offers/{offerId}/rule` (reading one is a status
//! route). Setting a rule starts a `reconcile` job that makes the offer's links exactly the
//! brand's active locations the rule matches.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulklink_core::domain::{plan, Job, JobKind, LocationFilter, OfferId, OfferRule};
use bulklink_http::auth::Caller;
use bulklink_http::http::{parse_id, ApiError, ApiState, JsonBody, Problem};
use bulklink_http::openapi::{
    BadRequest, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use bulklink_http::views::JobView;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

/// The body of `PUT /offers/{offerId}/rule`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
#[schema(example = json!({ "where": { "country": ["GB"], "tags": ["drive-thru"] } }))]
pub struct RuleBody {
    /// Which active locations carry the offer; `{}` is every one of them.
    #[serde(rename = "where")]
    filter: LocationFilter,
}
bulklink_core::json_object_only!(RuleBody);

/// A rule as set, and the reconcile job that applies it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleSet {
    pub rule: OfferRule,
    /// The `reconcile` job making the offer's links agree with the rule; absent while the
    /// offer is outside its schedule (its start reconciles, its end unlinks everything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

/// Set the offer's standing rule, and reconcile its links with it.
///
/// The offer is to carry exactly the brand's active locations that match `where`. A
/// `reconcile` job (in the body, and at `GET /jobs/{jobId}`) links those missing and
/// unlinks those outside; while the rule is set, a direct link to a location outside it is
/// 409. Refused (409) while the offer has another active job: the rule is then unchanged.
#[utoipa::path(
    put,
    path = "/offers/{offerId}/rule",
    tag = "rules",
    operation_id = "setOfferRule",
    params(("offerId" = OfferId, Path, description = "The offer")),
    request_body(content = RuleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The rule is set; its reconcile job has started (none while the offer is outside its schedule)", body = RuleSet),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The offer has an active job (its `Location`)",
         content_type = "application/problem+json", body = Problem),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
pub async fn put_rule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(offer_id): Path<String>,
    JsonBody(body): JsonBody<RuleBody>,
) -> Result<Response, ApiError> {
    let ports = &state.ports;
    let offer_id: OfferId = parse_id(&offer_id)?;
    let offer = caller.visible_offer(ports, offer_id).await?;
    if let Some(problem) = body.filter.problem() {
        return Err(ApiError::bad_request(problem));
    }
    let now = ports.clock.now();
    let rule = OfferRule {
        offer_id,
        brand_id: offer.brand_id,
        filter: body.filter,
        set_at: now,
    };
    if offer.schedule.as_ref().is_some_and(|s| !s.live_at(now)) {
        // Outside its schedule the offer carries nothing: the rule waits for its start.
        ports.catalog.put_rule(&rule).await?;
        info!(offer_id = %offer_id, principal = %caller.principal, "rule set; the offer's schedule applies it");
        return Ok((StatusCode::OK, Json(RuleSet { rule, job: None })).into_response());
    }
    let spec = plan(JobKind::Reconcile, None).map_err(|e| ApiError::conflict(e.to_string()))?;
    let job = Job::planned(spec, offer.brand_id, Some(offer.id), None, now);
    // The job first: it holds the offer's one active-job lock, so the rule changes only
    // when its reconcile can run, and the offer cannot be deleted before the rule is set.
    let job = crate::created(ports, job, None).await?;
    if let Err(e) = ports.catalog.put_rule(&rule).await {
        // The job must not reconcile against a rule that was not set: it ends cancelled.
        ports.jobs.request_cancel(job.id).await?;
        crate::start(ports, &job).await?;
        return Err(e.into());
    }
    crate::start(ports, &job).await?;
    info!(offer_id = %offer_id, job_id = %job.id, principal = %caller.principal, "rule set");
    let view = JobView::of(&job, ports.clock.now());
    Ok((
        StatusCode::OK,
        Json(RuleSet {
            rule,
            job: Some(view),
        }),
    )
        .into_response())
}

/// Remove the offer's standing rule: its links stay as they are.
#[utoipa::path(
    delete,
    path = "/offers/{offerId}/rule",
    tag = "rules",
    operation_id = "deleteOfferRule",
    params(("offerId" = OfferId, Path, description = "The offer")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete_rule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let ports = &state.ports;
    let offer_id: OfferId = parse_id(&offer_id)?;
    caller.visible_offer(ports, offer_id).await?;
    if !ports.catalog.delete_rule(offer_id).await? {
        return Err(ApiError::not_found(format!("offer {offer_id} has no rule")));
    }
    info!(offer_id = %offer_id, principal = %caller.principal, "rule removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
