//! job-api: the write side of the HTTP API. Creates link-all jobs (idempotently, one
//! active per offer), cancels them, and the catalog writes: offers, locations, direct links.
//! Every route acts as its `Caller`: a brand's caller on its own brand only. One axum
//! `Router` serves Lambda and `bulklink serve` alike.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::auth::Caller;
use shared::domain::{
    BrandId, FanoutMessage, IdempotencyKey, Job, JobId, JobStatus, LinkOutcome, Location,
    LocationId, Offer, OfferId, Subscription, WebhookUrl,
};
use shared::http::{
    checked_text, parse_id, sha256_hex, ApiError, ApiState, JsonBody, OptionalJsonBody,
};
use shared::ports::{CancelOutcome, CreateOutcome, IdempotencyClaim, Ports};
use shared::views::{CallbackView, JobView};
use tracing::info;

/// Most locations in one `POST /locations`.
pub const MAX_LOCATIONS_PER_REQUEST: usize = 100;
const MAX_NAME_LEN: usize = 200;
const MAX_ADDRESS_LEN: usize = 500;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/offers/{offer_id}/link-all-locations",
            post(create_link_all_job),
        )
        .route("/jobs/{job_id}/cancel", post(cancel_job))
        .route("/offers", post(create_offer))
        .route("/locations", post(create_locations))
        .route(
            "/offers/{offer_id}/locations/{location_id}",
            put(link_one_location),
        )
        .with_state(state)
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LinkAllBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<WebhookUrl>,
}

fn accepted(job: &Job, callback: Option<CallbackView>) -> Response {
    let mut view = JobView::of(job, Utc::now());
    view.callback = callback;
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, view.location())],
        Json(view),
    )
        .into_response()
}

async fn create_link_all_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(offer_id): Path<String>,
    headers: HeaderMap,
    OptionalJsonBody(body, _): OptionalJsonBody<LinkAllBody>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let key = idempotency_key(&headers)?;
    let body = body.unwrap_or_default();
    // Detached from the request: a client that hangs up mid-request (the handler's future is
    // dropped with the connection) must not leave a job written but never started.
    tokio::spawn(async move { link_all(&state, &caller, offer_id, key, body).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "job creation task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; it has been logged",
            )
        })?
}

async fn link_all(
    state: &ApiState,
    caller: &Caller,
    offer_id: OfferId,
    key: Option<IdempotencyKey>,
    body: LinkAllBody,
) -> Result<Response, ApiError> {
    let offer = caller.visible_offer(&state.ports, offer_id).await?;
    if let Some(url) = &body.callback_url {
        state.egress.check_registration(url).await?;
    }
    let claim = key.map(|key| IdempotencyClaim {
        key_hash: sha256_hex(format!("{}\n{}", caller.principal, key.as_str()).as_bytes()),
        // The parsed body, re-serialised: whitespace or key order do not make a new request.
        request_hash: sha256_hex(
            format!(
                "link-all-locations\n{offer_id}\n{}",
                serde_json::to_string(&body).unwrap_or_default()
            )
            .as_bytes(),
        ),
    });
    let job = Job::new(
        offer.brand_id,
        offer.id,
        body.callback_url.clone(),
        Utc::now(),
    );
    create_and_start(&state.ports, job, claim).await
}

async fn create_and_start(
    ports: &Ports,
    job: Job,
    claim: Option<IdempotencyClaim>,
) -> Result<Response, ApiError> {
    let offer_id = job.offer_id;
    match ports.jobs.create_job(&job, claim.as_ref()).await? {
        CreateOutcome::Created(job) => {
            info!(job_id = %job.id, offer_id = %offer_id, "job created");
            let callback = callback(ports, &job).await?;
            start(ports, &job).await?;
            Ok(accepted(&job, callback))
        }
        CreateOutcome::Replayed(job) => {
            // The first request may have died between writing the job and starting it.
            let callback = callback(ports, &job).await?;
            if job.status == JobStatus::Pending {
                start(ports, &job).await?;
            }
            Ok(accepted(&job, callback))
        }
        CreateOutcome::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used for a different request",
        )),
        CreateOutcome::OfferBusy(running) => Err(ApiError::conflict(format!(
            "offer {offer_id} already has an active link-all job: {running}"
        ))
        .with_location(format!("/jobs/{running}"))),
    }
}

/// The job's `callbackUrl` subscription, made before the job can start (so its event
/// reaches it however fast the job ends). One per job: a replay finds the same one.
async fn callback(ports: &Ports, job: &Job) -> Result<Option<CallbackView>, ApiError> {
    let Some(url) = &job.callback_url else {
        return Ok(None);
    };
    let wanted = Subscription::for_callback(job.id, job.brand_id, url.clone(), Utc::now());
    let stored = ports.webhooks.create_subscription(&wanted).await?;
    Ok(Some(CallbackView {
        subscription_id: stored.id,
        secret: stored.secret.as_str().to_owned(),
    }))
}

/// Starts fanout; idempotent, so a retried request repeats it safely.
async fn start(ports: &Ports, job: &Job) -> Result<(), ApiError> {
    ports
        .fanout_queue
        .send_batch(&[FanoutMessage { job_id: job.id }.encode()])
        .await?;
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| shared::domain::DomainError::InvalidIdempotencyKey)
                .and_then(str::parse)
                .map_err(ApiError::from)
        })
        .transpose()
}

async fn cancel_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    caller.visible_job(&ports, job_id).await?;
    match ports.jobs.request_cancel(job_id).await? {
        None => Err(ApiError::not_found(format!("job {job_id} does not exist"))),
        Some(CancelOutcome::Cancelling(job)) => {
            info!(job_id = %job_id, principal = %caller.principal, "cancel requested");
            Ok(accepted(&job, None))
        }
        Some(CancelOutcome::NotCancellable(job)) => Err(ApiError::conflict(format!(
            "job {job_id} is {}; it can no longer be cancelled",
            job.status
        ))
        .with_location(format!("/jobs/{job_id}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewOffer {
    id: Option<OfferId>,
    /// The caller's brand when absent; an administrator must name it.
    brand_id: Option<BrandId>,
    name: String,
}

async fn create_offer(
    State(ports): State<Ports>,
    caller: Caller,
    JsonBody(new): JsonBody<NewOffer>,
) -> Result<Response, ApiError> {
    let brand_id = caller.acting_brand(new.brand_id, "brandId")?;
    let name = checked_text("name", &new.name, MAX_NAME_LEN)?;
    let offer = Offer {
        id: new.id.unwrap_or_else(OfferId::new_random),
        brand_id,
        name,
        locations_total: 0,
    };
    ports.catalog.create_offer(&offer).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/offers/{}", offer.id))],
        Json(offer),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewLocation {
    id: Option<LocationId>,
    /// The caller's brand when absent; an administrator must name it.
    brand_id: Option<BrandId>,
    address: String,
}

async fn create_locations(
    State(ports): State<Ports>,
    caller: Caller,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    // Parsed in two steps so a bad element gets serde's own message, not "no variant matched".
    let many = body.is_array();
    let new = if many {
        serde_json::from_value::<Vec<NewLocation>>(body)
    } else {
        serde_json::from_value::<NewLocation>(body).map(|one| vec![one])
    }
    .map_err(|e| ApiError::bad_request(format!("request body is not valid: {e}")))?;
    if new.is_empty() || new.len() > MAX_LOCATIONS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "send 1 to {MAX_LOCATIONS_PER_REQUEST} locations, not {}",
            new.len()
        )));
    }
    let mut locations = Vec::with_capacity(new.len());
    for (i, n) in new.into_iter().enumerate() {
        let field = |name: &str| {
            if many {
                format!("[{i}].{name}")
            } else {
                name.to_owned()
            }
        };
        locations.push(Location {
            id: n.id.unwrap_or_else(LocationId::new_random),
            brand_id: caller.acting_brand(n.brand_id, &field("brandId"))?,
            address: checked_text(&field("address"), &n.address, MAX_ADDRESS_LEN)?,
            has_offer: false,
        });
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = locations.iter().find(|l| !seen.insert(l.id)) {
        return Err(ApiError::bad_request(format!(
            "location {} appears twice",
            dup.id
        )));
    }
    ports.catalog.create_locations(&locations).await?;
    let response = if many {
        (StatusCode::CREATED, Json(locations)).into_response()
    } else {
        let one = &locations[0];
        (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/locations/{}", one.id))],
            Json(one),
        )
            .into_response()
    };
    Ok(response)
}

async fn link_one_location(
    State(ports): State<Ports>,
    caller: Caller,
    Path((offer_id, location_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let location_id: LocationId = parse_id(&location_id)?;
    let offer = caller.visible_offer(&ports, offer_id).await?;
    let location = caller.visible_location(&ports, location_id).await?;
    if location.brand_id != offer.brand_id {
        // Only an administrator gets this far with two brands in hand.
        return Err(ApiError::conflict(format!(
            "location {location_id} belongs to brand {}, offer {offer_id} to brand {}",
            location.brand_id, offer.brand_id
        )));
    }
    let status = match ports.catalog.link_direct(&offer, location_id).await? {
        LinkOutcome::Linked => StatusCode::CREATED,
        LinkOutcome::AlreadyLinked => StatusCode::OK,
        LinkOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "location {location_id} does not exist"
            )))
        }
    };
    let body =
        serde_json::json!({ "offerId": offer_id, "locationId": location_id, "linked": true });
    Ok((status, Json(body)).into_response())
}
