//! job-api: the write side of the HTTP API. Creates link-all jobs (idempotently, one
//! active per offer), cancels them, and the catalog writes: offers, locations, direct links.
//! One axum `Router` serves Lambda and `bulklink serve` alike.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::domain::{
    BrandId, FanoutMessage, IdempotencyKey, Job, JobId, LinkOutcome, Location, LocationId, Offer,
    OfferId, WebhookUrl,
};
use shared::http::{parse_id, principal, sha256_hex, ApiError, JsonBody, OptionalJsonBody};
use shared::ports::{CancelOutcome, CreateOutcome, IdempotencyClaim, Ports, SubscriptionFilter};
use shared::views::JobView;
use tracing::info;

/// Most locations in one `POST /locations`.
pub const MAX_LOCATIONS_PER_REQUEST: usize = 100;
const MAX_NAME_LEN: usize = 200;
const MAX_ADDRESS_LEN: usize = 500;

pub fn router(ports: Ports) -> Router {
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
        .with_state(ports)
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LinkAllBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<WebhookUrl>,
}

fn accepted(job: &Job) -> Response {
    let view = JobView::of(job, Utc::now());
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, view.location())],
        Json(view),
    )
        .into_response()
}

async fn create_link_all_job(
    State(ports): State<Ports>,
    Path(offer_id): Path<String>,
    headers: HeaderMap,
    OptionalJsonBody(body, _): OptionalJsonBody<LinkAllBody>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let key = idempotency_key(&headers)?;
    let body = body.unwrap_or_default();
    let offer = ports
        .catalog
        .get_offer(offer_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("offer {offer_id} does not exist")))?;
    let claim = key.map(|key| IdempotencyClaim {
        key_hash: sha256_hex(format!("{}\n{}", principal(&headers), key.as_str()).as_bytes()),
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
    match ports.jobs.create_job(&job, claim.as_ref()).await? {
        CreateOutcome::Created(job) => {
            info!(job_id = %job.id, offer_id = %offer_id, "job created");
            start(&ports, &job).await?;
            Ok(accepted(&job))
        }
        CreateOutcome::Replayed(job) => {
            // The first request may have died between writing the job and starting it.
            if job.status == shared::domain::JobStatus::Pending {
                start(&ports, &job).await?;
            }
            Ok(accepted(&job))
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

/// Subscribes the job's callback (if any) before the job can finish, then starts fanout.
/// Both are idempotent, so a retried request repeats them safely.
async fn start(ports: &Ports, job: &Job) -> Result<(), ApiError> {
    if let Some(url) = &job.callback_url {
        let filter = SubscriptionFilter {
            job_id: Some(job.id),
            ..Default::default()
        };
        ports.events.subscribe(url, &filter).await?;
    }
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
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    match ports.jobs.request_cancel(job_id).await? {
        None => Err(ApiError::not_found(format!("job {job_id} does not exist"))),
        Some(CancelOutcome::Cancelling(job)) => {
            info!(job_id = %job_id, "cancel requested");
            Ok(accepted(&job))
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
    brand_id: BrandId,
    name: String,
}

async fn create_offer(
    State(ports): State<Ports>,
    JsonBody(new): JsonBody<NewOffer>,
) -> Result<Response, ApiError> {
    let name = checked_text("name", &new.name, MAX_NAME_LEN)?;
    let offer = Offer {
        id: new.id.unwrap_or_else(OfferId::new_random),
        brand_id: new.brand_id,
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
    brand_id: BrandId,
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<NewLocation>),
    One(NewLocation),
}

async fn create_locations(
    State(ports): State<Ports>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    // Parsed in two steps so a bad element gets serde's own message, not "no variant matched".
    let parsed = if body.is_array() {
        serde_json::from_value::<Vec<NewLocation>>(body).map(OneOrMany::Many)
    } else {
        serde_json::from_value::<NewLocation>(body).map(OneOrMany::One)
    }
    .map_err(|e| ApiError::bad_request(format!("request body is not valid: {e}")))?;
    let (new, many) = match parsed {
        OneOrMany::Many(list) => (list, true),
        OneOrMany::One(one) => (vec![one], false),
    };
    if new.is_empty() || new.len() > MAX_LOCATIONS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "send 1 to {MAX_LOCATIONS_PER_REQUEST} locations, not {}",
            new.len()
        )));
    }
    let mut locations = Vec::with_capacity(new.len());
    for (i, n) in new.into_iter().enumerate() {
        let field = if many {
            format!("[{i}].address")
        } else {
            "address".to_owned()
        };
        locations.push(Location {
            id: n.id.unwrap_or_else(LocationId::new_random),
            brand_id: n.brand_id,
            address: checked_text(&field, &n.address, MAX_ADDRESS_LEN)?,
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
        (
            StatusCode::CREATED,
            Json(serde_json::to_value(&locations).unwrap_or_default()),
        )
            .into_response()
    } else {
        let one = &locations[0];
        (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/locations/{}", one.id))],
            Json(serde_json::to_value(one).unwrap_or_default()),
        )
            .into_response()
    };
    Ok(response)
}

async fn link_one_location(
    State(ports): State<Ports>,
    Path((offer_id, location_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let location_id: LocationId = parse_id(&location_id)?;
    let offer = ports
        .catalog
        .get_offer(offer_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("offer {offer_id} does not exist")))?;
    let location = ports
        .catalog
        .get_location(location_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("location {location_id} does not exist")))?;
    if location.brand_id != offer.brand_id {
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

fn checked_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if trimmed.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(trimmed.to_owned())
}
