//! status: the read side of the HTTP API. Job status, failures and a brand's jobs; reads of
//! offers, locations and an offer's links; webhook subscriptions and their deliveries. Every
//! route but `/healthz` acts as its `Caller`; the operator console (`console`) is public
//! and calls these routes from the browser. One axum `Router` serves Lambda and
//! `bulklink serve` alike.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bulklink_core::domain::{BrandId, Country, Delivery, Link, Location, LocationFilter, Offer};
use bulklink_core::domain::{ImportId, JobId, LocationId, LocationStatus, OfferId, OfferRule};
use bulklink_core::ports::Failure;
use bulklink_core::ports::Ports;
use bulklink_core::rules::Drift;
use bulklink_http::auth::Caller;
use bulklink_http::http::Problem;
use bulklink_http::http::{
    parse_id, ApiError, ApiState, BrandPageQuery, ListBody, PageQuery, QueryParams,
};
use bulklink_http::openapi::{BadRequest, Forbidden, NotFound, Unauthorized};
use bulklink_http::views::{ImportView, JobView};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

pub mod console;
mod event_types;
mod reports;
mod webhooks;

/// The read routes and webhooks, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .routes(routes!(list_brand_jobs))
        .routes(routes!(get_job))
        .routes(routes!(get_import))
        .routes(routes!(list_failures))
        .routes(routes!(reports::get_job_report))
        .routes(routes!(list_job_deliveries))
        .routes(routes!(get_offer))
        .routes(routes!(list_offers))
        .routes(routes!(get_offer_rule))
        .routes(routes!(get_offer_drift))
        .routes(routes!(list_offer_locations))
        .routes(routes!(get_location))
        .routes(routes!(list_locations))
        .merge(webhooks::routes())
        .merge(event_types::routes())
}

/// The read routes as an axum router (what the status function serves).
pub fn router(state: ApiState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.merge(console::router()).with_state(state)
}

/// The whole API's OpenAPI 3.1 document: the write routes (job-api) and these.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        use utoipa::OpenApi;
        let (_, mut document) =
            OpenApiRouter::<ApiState>::with_openapi(bulklink_http::openapi::ApiDoc::openapi())
                .merge(job_api::routes())
                .merge(routes())
                .split_for_parts();
        document.info.version = env!("CARGO_PKG_VERSION").to_owned();
        bulklink_http::openapi::limit_every_authenticated_operation(&mut document);
        document
    })
}

/// The answer of a healthy server.
#[derive(serde::Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: String,
}

/// Liveness: 200 while the backend can serve.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    security(()),
    responses(
        (status = 200, description = "Serving", body = Health, example = json!({ "status": "ok" })),
        (status = 503, description = "The backend cannot serve (e.g. its database file was removed); `detail` says why",
         content_type = "application/problem+json", body = Problem),
    )
)]
async fn healthz(State(ports): State<Ports>) -> Result<Json<Health>, ApiError> {
    match ports.health.check().await {
        Ok(()) => Ok(Json(Health {
            status: "ok".to_owned(),
        })),
        Err(problem) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problem)),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// A job: status, counters, percent, rate, ETA, timestamps.
#[utoipa::path(
    get,
    path = "/jobs/{jobId}",
    tag = "jobs",
    operation_id = "getJob",
    params(("jobId" = JobId, Path, description = "The job")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = caller.visible_job(&ports, job_id).await?;
    Ok(Json(JobView::of(&job, ports.clock.now())))
}

/// An import: waiting for its file, started (with its `jobId`), or expired.
#[utoipa::path(
    get,
    path = "/imports/{importId}",
    tag = "imports",
    operation_id = "getImport",
    params(("importId" = ImportId, Path, description = "The import")),
    responses(
        (status = 200, description = "The import", body = ImportView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_import(
    State(ports): State<Ports>,
    caller: Caller,
    Path(import_id): Path<String>,
) -> Result<Json<ImportView>, ApiError> {
    let import_id: ImportId = parse_id(&import_id)?;
    let import = caller.visible_import(&ports, import_id).await?;
    Ok(Json(ImportView::of(&import, ports.clock.now())))
}

/// The locations a job could not link, with reasons.
#[utoipa::path(
    get,
    path = "/jobs/{jobId}/failures",
    tag = "jobs",
    operation_id = "listJobFailures",
    params(("jobId" = JobId, Path, description = "The job"), PageQuery),
    responses(
        (status = 200, description = "A page of failures", body = ListBody<Failure>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
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
        .ledger
        .page_failures(job_id, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |f| f)).into_response())
}

/// A brand's jobs, newest first.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    operation_id = "listJobs",
    params(BrandPageQuery),
    responses(
        (status = 200, description = "A page of jobs", body = ListBody<JobView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
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
    let now = ports.clock.now();
    Ok(Json(ListBody::from_page(page, |job| JobView::of(&job, now))).into_response())
}

/// The offer's standing rule.
#[utoipa::path(
    get,
    path = "/offers/{offerId}/rule",
    tag = "rules",
    operation_id = "getOfferRule",
    params(("offerId" = OfferId, Path, description = "The offer")),
    responses(
        (status = 200, description = "The rule", body = OfferRule),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_offer_rule(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let rule = visible_rule(&ports, &caller, &offer_id).await?;
    Ok(Json(rule).into_response())
}

/// The offer's drift from its rule: exact counts of active matching locations without the
/// link (`missing`) and of links outside the rule (`extra`).
///
/// Reads every location of the brand and whether it carries the offer (on DynamoDB about
/// one read unit per location), so it is for checking, not for polling.
#[utoipa::path(
    get,
    path = "/offers/{offerId}/drift",
    tag = "rules",
    operation_id = "getOfferDrift",
    params(("offerId" = OfferId, Path, description = "The offer")),
    responses(
        (status = 200, description = "The drift", body = Drift),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_offer_drift(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let rule = visible_rule(&ports, &caller, &offer_id).await?;
    let drift = bulklink_core::rules::drift(&ports, &rule).await?;
    Ok(Json(drift).into_response())
}

/// The rule of an offer the caller may see; 404 if the offer has none.
async fn visible_rule(
    ports: &Ports,
    caller: &Caller,
    offer_id: &str,
) -> Result<OfferRule, ApiError> {
    let offer_id: OfferId = parse_id(offer_id)?;
    caller.visible_offer(ports, offer_id).await?;
    ports
        .catalog
        .get_rule(offer_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("offer {offer_id} has no rule")))
}

/// A brand's offers in id order, each with `locationsTotal`.
#[utoipa::path(
    get,
    path = "/offers",
    tag = "catalog",
    operation_id = "listOffers",
    params(BrandPageQuery),
    responses(
        (status = 200, description = "A page of offers", body = ListBody<Offer>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
async fn list_offers(
    State(ports): State<Ports>,
    caller: Caller,
    QueryParams(query): QueryParams<BrandPageQuery>,
) -> Result<Response, ApiError> {
    let (brand, cursor, limit) = query.resolve(&caller)?;
    let page = ports
        .catalog
        .page_brand_offers(brand, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ListBody::from_page(page, |offer| offer)).into_response())
}

/// An offer, with `locationsTotal`.
#[utoipa::path(
    get,
    path = "/offers/{offerId}",
    tag = "catalog",
    operation_id = "getOffer",
    params(("offerId" = OfferId, Path, description = "The offer")),
    responses(
        (status = 200, description = "The offer", body = Offer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_offer(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let offer = caller.visible_offer(&ports, offer_id).await?;
    Ok(Json(offer).into_response())
}

/// The offer's links, in location-id order.
#[utoipa::path(
    get,
    path = "/offers/{offerId}/locations",
    tag = "catalog",
    operation_id = "listOfferLinks",
    params(("offerId" = OfferId, Path, description = "The offer"), PageQuery),
    responses(
        (status = 200, description = "A page of links", body = ListBody<Link>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
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

/// A location, with `hasOffer`.
#[utoipa::path(
    get,
    path = "/locations/{locationId}",
    tag = "catalog",
    operation_id = "getLocation",
    params(("locationId" = LocationId, Path, description = "The location")),
    responses(
        (status = 200, description = "The location", body = Location),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn get_location(
    State(ports): State<Ports>,
    caller: Caller,
    Path(location_id): Path<String>,
) -> Result<Response, ApiError> {
    let location_id: LocationId = parse_id(&location_id)?;
    let location = caller.visible_location(&ports, location_id).await?;
    Ok(Json(location).into_response())
}

/// `GET /locations`: a brand's page, narrowed by at most one value of each attribute.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LocationListQuery {
    /// The brand: the caller's when absent; an administrator must name one.
    #[param(value_type = Option<BrandId>)]
    brand_id: Option<String>,
    /// Only `active` or only `closed` locations; without it, the active ones, then the
    /// closed ones.
    status: Option<LocationStatus>,
    /// Only locations in this country (ISO 3166-1 alpha-2, upper case).
    #[param(value_type = Option<Country>)]
    country: Option<String>,
    /// Only locations in this city (exactly as stored).
    #[param(min_length = 1)]
    city: Option<String>,
    /// Only locations carrying this tag.
    #[param(min_length = 1)]
    tag: Option<String>,
    /// Only the location with this external id.
    #[param(min_length = 1)]
    external_id: Option<String>,
    /// Where the page starts: the `nextCursor` of the previous page, unchanged.
    #[param(min_length = 1, pattern = "^[A-Za-z0-9_-]+$(?!\\n)")]
    cursor: Option<String>,
    /// Locations read per page, 1 to 1000 (default 100); with a filter a page holds the
    /// ones that match, so it may hold fewer (even none) and still have a next one.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A brand's locations in id order (active ones first), optionally narrowed by status and
/// attribute.
#[utoipa::path(
    get,
    path = "/locations",
    tag = "catalog",
    operation_id = "listLocations",
    params(LocationListQuery),
    responses(
        (status = 200, description = "A page of locations", body = ListBody<Location>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
async fn list_locations(
    State(ports): State<Ports>,
    caller: Caller,
    QueryParams(query): QueryParams<LocationListQuery>,
) -> Result<Response, ApiError> {
    let page_query = BrandPageQuery {
        brand_id: query.brand_id.clone(),
        cursor: query.cursor.clone(),
        limit: query.limit,
    };
    let (brand, cursor, limit) = page_query.resolve(&caller)?;
    for (name, value) in [
        ("city", &query.city),
        ("tag", &query.tag),
        ("externalId", &query.external_id),
    ] {
        if value.as_deref() == Some("") {
            return Err(ApiError::bad_request(format!(
                "query parameter {name} must not be empty: leave it out to list every location"
            )));
        }
    }
    let country = query
        .country
        .as_deref()
        .map(|c| c.parse::<Country>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("query parameter {e}")))?;
    let filter = LocationFilter {
        country: country.into_iter().collect(),
        city: query.city.into_iter().collect(),
        tags: query.tag.into_iter().collect(),
        external_ids: query.external_id.into_iter().collect(),
        ..Default::default()
    };
    let page = ports
        .catalog
        .page_brand_locations(brand, query.status, cursor.as_ref(), limit)
        .await?;
    let items = ports
        .catalog
        .locations_matching(brand, &page.items, &filter)
        .await?;
    let page = bulklink_core::ports::Page {
        items,
        next: page.next,
    };
    Ok(Json(ListBody::from_page(page, |location| location)).into_response())
}

/// The webhook deliveries of a job's event, newest first.
#[utoipa::path(
    get,
    path = "/jobs/{jobId}/deliveries",
    tag = "webhooks",
    operation_id = "listJobDeliveries",
    params(("jobId" = JobId, Path, description = "The job"), PageQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = ListBody<Delivery>,
         links(("Redeliver" = (operation_id = "redeliver", parameters(("id" = "$response.body#/items/0/subscriptionId"),
             ("deliveryId" = "$response.body#/items/0/id")))))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
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
