//! job-api: the write side of the HTTP API. Creates link-all jobs (idempotently, one
//! active per offer), cancels them, and the catalog writes: offers, locations, direct links.
//! Every route acts as its `Caller`: a brand's caller on its own brand only. One axum
//! `Router` serves Lambda and `bulklink serve` alike.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod admin;
pub mod imports;
pub mod rules;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bulklink_core::domain::{
    plan, Action, AttributesChange, BrandId, Country, FanoutMessage, IdempotencyKey, Job, JobEvent,
    JobId, JobKind, JobStatus, LinkOutcome, Location, LocationChange, LocationFilter, LocationId,
    LocationStatus, NotDerivable, Offer, OfferId, OfferSchedule, Subscription, Transition,
    Upserted, WebhookUrl, MAX_ATTRIBUTE_LEN, MAX_EXTERNAL_ID_LEN, MAX_TAGS, MAX_TAG_LEN,
};
use bulklink_core::estimate::DryRun;
use bulklink_core::ports::{
    CancelOutcome, CreateOutcome, IdempotencyClaim, OfferDeletion, PauseOutcome, Ports, Released,
};
use bulklink_core::StoreError;
use bulklink_http::auth::Caller;
use bulklink_http::http::Problem;
use bulklink_http::http::{
    checked_text, parse_id, sha256_hex, ApiError, ApiState, JsonBody, OptionalJsonBody, QueryParams,
};
use bulklink_http::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use bulklink_http::views::{CallbackView, JobView};
use chrono::DurationRound;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Most locations in one `POST /locations`.
pub const MAX_LOCATIONS_PER_REQUEST: usize = 100;
/// Most locations in one `POST /locations` when any carries an external id (each is two
/// writes of one transaction on DynamoDB: the location and its external id's claim).
pub const MAX_EXTERNAL_LOCATIONS_PER_REQUEST: usize = 50;
const MAX_NAME_LEN: usize = 200;
const MAX_ADDRESS_LEN: usize = 500;

/// The write routes, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_link_all_job))
        .routes(routes!(create_unlink_all_job))
        .routes(routes!(undo_job))
        .routes(routes!(retry_job_failures))
        .routes(routes!(cancel_job))
        .routes(routes!(approve_job))
        .routes(routes!(reject_job))
        .routes(routes!(pause_job))
        .routes(routes!(admin::get_write_budget, admin::set_write_budget))
        .routes(routes!(resume_job))
        .routes(routes!(create_offer))
        .routes(routes!(rename_offer, delete_offer))
        .routes(routes!(create_locations))
        .routes(routes!(upsert_location_by_external_id))
        .routes(routes!(readdress_location, delete_location))
        .routes(routes!(link_one_location))
        .routes(routes!(rules::put_rule, rules::delete_rule))
        .routes(routes!(imports::create_import))
        .routes(routes!(imports::upload_file))
}

/// The write routes as an axum router (what the job-api function serves).
pub fn router(state: ApiState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state)
}

/// The optional body of a link-all request.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
struct LinkAllBody {
    /// A webhook for this job alone: a subscription filtered to it, made before the job starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<WebhookUrl>,
    /// Link-all and unlink-all only: act on the locations that match (AND across fields,
    /// OR within a list, any of `tags`). Shown on the job; a dry run counts exactly these.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    filter: Option<LocationFilter>,
    /// Start no earlier than this (RFC 3339, at most a year ahead): the job is `SCHEDULED`
    /// until then (cancellable, holding the offer's one active job). A time already past
    /// starts it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// `true`: the job is created `AWAITING_APPROVAL` and starts only once a caller of its
    /// brand other than its creator (or an administrator) approves it
    /// (`POST /jobs/{jobId}/approve`). The deployment may require it of large jobs anyway
    /// (`APPROVAL_ABOVE_LOCATIONS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    require_approval: Option<bool>,
}
bulklink_core::json_object_only!(LinkAllBody, serialize);

/// The optional body of an undo or a retry-failures request: it acts on exactly what its
/// parent did, so it takes no `where`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
struct DerivedJobBody {
    /// A webhook for this job alone: a subscription filtered to it, made before the job starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<WebhookUrl>,
    /// Start no earlier than this (RFC 3339, at most a year ahead): the job is `SCHEDULED`
    /// until then (cancellable, holding the offer's one active job). A time already past
    /// starts it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// `true`: the job is created `AWAITING_APPROVAL` and starts only once a caller of its
    /// brand other than its creator (or an administrator) approves it
    /// (`POST /jobs/{jobId}/approve`). The deployment may require it of large jobs anyway
    /// (`APPROVAL_ABOVE_LOCATIONS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    require_approval: Option<bool>,
}
bulklink_core::json_object_only!(DerivedJobBody);

impl From<DerivedJobBody> for LinkAllBody {
    fn from(body: DerivedJobBody) -> Self {
        LinkAllBody {
            callback_url: body.callback_url,
            filter: None,
            not_before: body.not_before,
            require_approval: body.require_approval,
        }
    }
}

fn accepted(ports: &Ports, job: &Job, callback: Option<CallbackView>) -> Response {
    let mut view = JobView::of(job, ports.clock.now());
    view.callback = callback;
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, view.location())],
        Json(view),
    )
        .into_response()
}

/// The job-creating routes, one row each: the function serving it, its path and operation,
/// the kind of job it makes and what its path names (an offer, or the job a derived job
/// derives from), and its words for the docs. Every row is served by `create_job`; the
/// parameters, body and answers every creating route shares are declared once, here.
macro_rules! creating_routes {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $path:literal as $operation:literal makes $kind:ident from
            $target:ident($param:literal: $param_type:ty, $param_doc:literal)
        {
            body: $body:ty,
            created: $created:literal,
            conflict: $conflict:literal, $conflict_location:ty,
            links: ($($link:tt)*),
            example: $example:tt $(,)?
        }
    )*) => {$(
        $(#[doc = $doc])*
        #[utoipa::path(
            post,
            path = $path,
            tag = "jobs",
            operation_id = $operation,
            params(
                CreateQuery,
                ($param = $param_type, Path, description = $param_doc),
                ("Idempotency-Key" = Option<String>, Header, pattern = "^[\\x21-\\x7E]{1,255}$(?!\\n)",
                 description = "Makes a retry safe: 1 to 255 visible ASCII characters, per caller, kept 24 hours",
                 example = "order-2026-12-01-42"),
            ),
            request_body(content = Option<$body>, content_type = "application/json",
                description = "Optional", example = json!({ "callbackUrl": "https://hooks.example.com/bulklink" })),
            responses(
                (status = 200, description = "`dryRun=true`: what the job would do; nothing was written", body = DryRun),
                (status = 202, description = $created, body = JobView,
                 headers(("Location" = String, description = "`/jobs/{jobId}`")),
                 links($($link)*),
                 example = json!($example)),
                (status = 400, response = BadRequest),
                (status = 401, response = Unauthorized),
                (status = 404, response = NotFound),
                (status = 409, description = $conflict, content_type = "application/problem+json",
                 body = Problem, headers(("Location" = $conflict_location, description = "The job in the way (the offer's active job, or the undo there is already), where there is one"))),
                (status = 413, response = PayloadTooLarge),
                (status = 415, response = UnsupportedMediaType),
                (status = 422, description = "This Idempotency-Key was used for a different request",
                 content_type = "application/problem+json", body = Problem),
            )
        )]
        async fn $name(
            State(state): State<ApiState>,
            caller: Caller,
            Path(named): Path<String>,
            QueryParams(query): QueryParams<CreateQuery>,
            headers: HeaderMap,
            OptionalJsonBody(body, _): OptionalJsonBody<$body>,
        ) -> Result<Response, ApiError> {
            let target = Target::$target(parse_id(&named)?);
            let body = body.map(LinkAllBody::from);
            create_job(state, caller, JobKind::$kind, target, &headers, query, body).await
        }
    )*};
}

creating_routes! {
    /// Create a job that links the offer to every location of its brand.
    ///
    /// Answers at once; the job runs in the background (follow it at `Location`). An offer has
    /// at most one active job: a second one gets 409 with the `Location` of the first. The same
    /// `Idempotency-Key` (per caller) and body within 24 hours answers with the same job.
    create_link_all_job: "/offers/{offerId}/link-all-locations" as "createLinkAllJob"
        makes LinkAllLocations from Offer("offerId": OfferId, "The offer to link")
    {
        body: LinkAllBody,
        created: "The job, created (or the one this key made before)",
        conflict: "The offer already has an active job, or follows a standing rule", String,
        links: (("GetJob" = (operation_id = "getJob", parameters(("jobId" = "$response.body#/id")))), ("CancelJob" = (operation_id = "cancelJob", parameters(("jobId" = "$response.body#/id")))), ("ListJobFailures" = (operation_id = "listJobFailures", parameters(("jobId" = "$response.body#/id")))), ("ListJobDeliveries" = (operation_id = "listJobDeliveries", parameters(("jobId" = "$response.body#/id")))), ("UndoJob" = (operation_id = "undoJob", parameters(("jobId" = "$response.body#/id")))), ("RetryJobFailures" = (operation_id = "retryJobFailures", parameters(("jobId" = "$response.body#/id"))))),
        example: {"id": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011", "type": "link-all-locations",
             "action": "link", "status": "PENDING", "allowedActions": ["cancel", "pause"], "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012",
             "offerId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1013",
             "counters": {"total": 0, "linked": 0, "alreadyLinked": 0, "notFound": 0, "failed": 0, "cancelled": 0, "processed": 0},
             "percent": 0.0, "fanoutDone": false, "chunksTotal": 0, "chunksDone": 0,
             "createdAt": "2026-12-01T10:00:00.000Z", "updatedAt": "2026-12-01T10:00:00.000Z"},
    }

    /// Create a job that unlinks the offer from every location it is linked to.
    ///
    /// Like link-all: answers at once, one active job per offer (of any kind), idempotent
    /// with `Idempotency-Key`. Each location left without any offer loses `hasOffer`.
    create_unlink_all_job: "/offers/{offerId}/unlink-all-locations" as "createUnlinkAllJob"
        makes UnlinkAllLocations from Offer("offerId": OfferId, "The offer to unlink")
    {
        body: LinkAllBody,
        created: "The job, created (or the one this key made before)",
        conflict: "The offer already has an active job, or follows a standing rule", String,
        links: (("GetJob" = (operation_id = "getJob", parameters(("jobId" = "$response.body#/id")))), ("CancelJob" = (operation_id = "cancelJob", parameters(("jobId" = "$response.body#/id"))))),
        example: {"id": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1021", "type": "unlink-all-locations",
             "action": "unlink", "status": "PENDING", "allowedActions": ["cancel", "pause"], "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012",
             "offerId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1013",
             "counters": {"total": 0, "linked": 0, "alreadyLinked": 0, "notFound": 0, "failed": 0, "cancelled": 0, "unlinked": 0, "notLinked": 0, "processed": 0},
             "percent": 0.0, "fanoutDone": false, "chunksTotal": 0, "chunksDone": 0,
             "createdAt": "2026-12-01T10:00:00.000Z", "updatedAt": "2026-12-01T10:00:00.000Z"},
    }

    /// Undo a job: a new job that unlinks exactly the links that job made.
    ///
    /// Links made directly or by other jobs stay. Only a finished job that links can be undone,
    /// and only once.
    undo_job: "/jobs/{jobId}/undo" as "undoJob"
        makes Undo from Job("jobId": JobId, "The job to undo")
    {
        body: DerivedJobBody,
        created: "The undo job, created (or the one this key made before)",
        conflict: "The job has not ended, does not link, has an undo already, or its offer has an active job or follows a standing rule",
            Option<String>,
        links: (("GetJob" = (operation_id = "getJob", parameters(("jobId" = "$response.body#/id"))))),
        example: {"id": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1022", "type": "undo",
             "parentJobId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011",
             "action": "unlink", "status": "PENDING", "allowedActions": ["cancel", "pause"], "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012",
             "offerId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1013",
             "counters": {"total": 0, "linked": 0, "alreadyLinked": 0, "notFound": 0, "failed": 0, "cancelled": 0, "unlinked": 0, "notLinked": 0, "processed": 0},
             "percent": 0.0, "fanoutDone": false, "chunksTotal": 0, "chunksDone": 0,
             "createdAt": "2026-12-01T10:00:00.000Z", "updatedAt": "2026-12-01T10:00:00.000Z"},
    }

    /// Retry a job's failures: a new job over exactly the locations it failed on.
    ///
    /// It does what that job did (link, or unlink) to those locations only. Only a finished
    /// job with failures.
    retry_job_failures: "/jobs/{jobId}/retry-failures" as "retryJobFailures"
        makes RetryFailures from Job("jobId": JobId, "The job whose failures to retry")
    {
        body: DerivedJobBody,
        created: "The retry job, created (or the one this key made before)",
        conflict: "The job has not ended, has no failures, or its offer has an active job or follows a standing rule (unless the job is a reconcile)",
            Option<String>,
        links: (("GetJob" = (operation_id = "getJob", parameters(("jobId" = "$response.body#/id"))))),
        example: {"id": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1023", "type": "retry-failures",
             "parentJobId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011",
             "action": "link", "status": "PENDING", "allowedActions": ["cancel", "pause"], "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012",
             "offerId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1013",
             "counters": {"total": 0, "linked": 0, "alreadyLinked": 0, "notFound": 0, "failed": 0, "cancelled": 0, "unlinked": 0, "notLinked": 0, "processed": 0},
             "percent": 0.0, "fanoutDone": false, "chunksTotal": 0, "chunksDone": 0,
             "createdAt": "2026-12-01T10:00:00.000Z", "updatedAt": "2026-12-01T10:00:00.000Z"},
    }
}

/// The query of every job-creating route.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CreateQuery {
    /// `true`: count the job's locations and estimate its time and AWS cost; nothing is
    /// written and no job is made (200).
    dry_run: Option<bool>,
}

/// What a creating route names: the offer of an offer-wide job, or the job a derived job
/// derives from.
#[derive(Clone, Copy)]
enum Target {
    Offer(OfferId),
    Job(JobId),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Offer(id) => write!(f, "{id}"),
            Target::Job(id) => write!(f, "{id}"),
        }
    }
}

async fn create_job(
    state: ApiState,
    caller: Caller,
    kind: JobKind,
    target: Target,
    headers: &HeaderMap,
    query: CreateQuery,
    body: Option<LinkAllBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let body = body.unwrap_or_default();
    if query.dry_run == Some(true) {
        return dry_run(&state, &caller, kind, target, body).await;
    }
    // Detached from the request: a client that hangs up mid-request (the handler's future is
    // dropped with the connection) must not leave a job written but never started.
    tokio::spawn(async move { new_job(&state, &caller, kind, target, key, body).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "job creation task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; it has been logged",
            )
        })?
}

/// `?dryRun=true`: the job as it would be made, counted and estimated; nothing is written.
async fn dry_run(
    state: &ApiState,
    caller: &Caller,
    kind: JobKind,
    target: Target,
    body: LinkAllBody,
) -> Result<Response, ApiError> {
    let job = planned_job(state, caller, kind, target, &body).await?;
    let locations = bulklink_core::kinds::count_ids(&state.ports, &job).await?;
    let plan = bulklink_core::estimate::estimate(kind, locations, &state.settings);
    Ok((StatusCode::OK, Json(plan)).into_response())
}

async fn new_job(
    state: &ApiState,
    caller: &Caller,
    kind: JobKind,
    target: Target,
    key: Option<IdempotencyKey>,
    body: LinkAllBody,
) -> Result<Response, ApiError> {
    let job = planned_job(state, caller, kind, target, &body).await?;
    let approval = needs_approval(state, &job, &body).await?;
    let job = job.held(approval, state.ports.clock.now());
    let claim = key.map(|key| IdempotencyClaim {
        key_hash: sha256_hex(format!("{}\n{}", caller.principal, key.as_str()).as_bytes()),
        // The parsed body, re-serialised: whitespace or key order do not make a new request.
        request_hash: sha256_hex(
            format!(
                "{kind}\n{target}\n{}",
                serde_json::to_string(&body).unwrap_or_default()
            )
            .as_bytes(),
        ),
    });
    create_and_start(&state.ports, job, claim).await
}

/// The job a creating request asks for, checked against the caller and its parent.
async fn planned_job(
    state: &ApiState,
    caller: &Caller,
    kind: JobKind,
    target: Target,
    body: &LinkAllBody,
) -> Result<Job, ApiError> {
    let (spec, brand, offer) = match target {
        Target::Offer(offer_id) => {
            let offer = caller.visible_offer(&state.ports, offer_id).await?;
            (plan(kind, None).map_err(refused)?, offer.brand_id, offer.id)
        }
        Target::Job(parent_id) => {
            let parent = caller.visible_job(&state.ports, parent_id).await?;
            let spec = plan(kind, Some(&parent)).map_err(refused)?;
            let offer = parent
                .offer_id
                .ok_or_else(|| ApiError::conflict(format!("job {parent_id} acts on no offer")))?;
            (spec, parent.brand_id, offer)
        }
    };
    if spec.action != Action::Reconcile && state.ports.catalog.get_rule(offer).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "offer {offer} follows a standing rule, which alone decides its links: change the \
             rule (PUT /offers/{offer}/rule) or remove it (DELETE) first"
        ))
        .with_location(format!("/offers/{offer}/rule")));
    }
    let spec = match &body.filter {
        None => spec,
        Some(filter) => {
            if let Some(problem) = filter.problem() {
                return Err(ApiError::bad_request(problem));
            }
            spec.narrowed(filter.clone())
                .map_err(ApiError::bad_request)?
        }
    };
    if let Some(url) = &body.callback_url {
        state.egress.check_registration(url).await?;
    }
    let now = state.ports.clock.now();
    if let Some(at) = body.not_before {
        if at > now + chrono::Duration::days(MAX_SCHEDULE_DAYS) {
            return Err(ApiError::bad_request(format!(
                "notBefore {} is more than {MAX_SCHEDULE_DAYS} days ahead",
                at.to_rfc3339()
            )));
        }
    }
    Ok(Job {
        // Kept to the millisecond, as every time is stored.
        not_before: body.not_before.map(|at| {
            at.duration_trunc(chrono::Duration::milliseconds(1))
                .unwrap_or(at)
        }),
        created_by: Some(caller.principal.clone()),
        ..Job::planned(spec, brand, Some(offer), body.callback_url.clone(), now)
    })
}

/// How far ahead a job may be scheduled.
const MAX_SCHEDULE_DAYS: i64 = 366;

/// Whether a new job waits for an approval: asked for, or more locations than the
/// deployment lets a job touch unapproved (counted as a dry run counts, up to one more).
async fn needs_approval(state: &ApiState, job: &Job, body: &LinkAllBody) -> Result<bool, ApiError> {
    if body.require_approval == Some(true) {
        return Ok(true);
    }
    let Some(above) = state.settings.approval_above_locations else {
        return Ok(false);
    };
    let counted = bulklink_core::kinds::count_ids_up_to(&state.ports, job, above + 1).await?;
    Ok(counted > above)
}

/// A request the planning rules (`bulklink_core::domain::plan`, which `allowedActions`
/// shows too) refuse: 409, with the job to wait for where there is one.
fn refused(refused: NotDerivable) -> ApiError {
    let conflict = ApiError::conflict(refused.to_string());
    match refused {
        NotDerivable::NotEnded(id, _) => conflict.with_location(format!("/jobs/{id}")),
        _ => conflict,
    }
}

async fn create_and_start(
    ports: &Ports,
    job: Job,
    claim: Option<IdempotencyClaim>,
) -> Result<Response, ApiError> {
    let job = created(ports, job, claim).await?;
    let callback = callback(ports, &job).await?;
    // A replay's first request may have died between writing the job and starting it (or
    // announcing that it awaits approval).
    match job.status {
        JobStatus::Pending => start(ports, &job).await?,
        JobStatus::AwaitingApproval if job.notified_at.is_none() => {
            bulklink_core::lifecycle::notify(ports, &job).await?;
        }
        _ => {}
    }
    Ok(accepted(ports, &job, callback))
}

/// Writes the job (or finds the one its claim made): the job, or why it was refused.
pub(crate) async fn created(
    ports: &Ports,
    job: Job,
    claim: Option<IdempotencyClaim>,
) -> Result<Job, ApiError> {
    let offer_id = job
        .offer_id
        .map_or_else(|| "(none)".to_owned(), |o| o.to_string());
    match ports.jobs.create_job(&job, claim.as_ref()).await? {
        CreateOutcome::Created(job) => {
            info!(job_id = %job.id, offer_id = %offer_id, "job created");
            Ok(job)
        }
        CreateOutcome::Replayed(job) => Ok(job),
        CreateOutcome::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used for a different request",
        )),
        CreateOutcome::OfferBusy(running) => Err(ApiError::conflict(format!(
            "offer {offer_id} already has an active job: {running}"
        ))
        .with_location(format!("/jobs/{running}"))),
        CreateOutcome::OfferGone => Err(ApiError::not_found(format!(
            "offer {offer_id} does not exist"
        ))),
        CreateOutcome::UndoExists(undo) => Err(ApiError::conflict(format!(
            "job {} has been undone already, by job {undo}",
            job.spec
                .parent_job_id
                .map(|p| p.to_string())
                .unwrap_or_default()
        ))
        .with_location(format!("/jobs/{undo}"))),
    }
}

/// The job's `callbackUrl` subscription, made before the job can start (so its event
/// reaches it however fast the job ends). One per job: a replay finds the same one.
async fn callback(ports: &Ports, job: &Job) -> Result<Option<CallbackView>, ApiError> {
    let Some(url) = &job.callback_url else {
        return Ok(None);
    };
    let wanted = Subscription::for_callback(job.id, job.brand_id, url.clone(), ports.clock.now());
    let stored = ports.webhooks.create_subscription(&wanted).await?;
    Ok(Some(CallbackView {
        subscription_id: stored.id,
        secret: stored.secret.as_str().to_owned(),
    }))
}

/// Starts fanout; idempotent, so a retried request repeats it safely.
pub(crate) async fn start(ports: &Ports, job: &Job) -> Result<(), ApiError> {
    ports
        .fanout_queue
        .send(&FanoutMessage { job_id: job.id })
        .await?;
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| bulklink_core::domain::DomainError::InvalidIdempotencyKey)
                .and_then(str::parse)
                .map_err(ApiError::from)
        })
        .transpose()
}

/// Cancel a job: it stops linking and ends `CANCELLED` once its queued chunks are skipped.
#[utoipa::path(
    post,
    path = "/jobs/{jobId}/cancel",
    tag = "jobs",
    operation_id = "cancelJob",
    params(("jobId" = JobId, Path, description = "The job")),
    responses(
        (status = 202, description = "The job, now cancelling", body = JobView,
         headers(("Location" = String, description = "`/jobs/{jobId}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The job has ended", content_type = "application/problem+json", body = Problem,
         headers(("Location" = String, description = "The job"))),
    )
)]
async fn cancel_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = caller.visible_job(&ports, job_id).await?;
    if job.status.is_held() {
        // Released meanwhile: cancelled as any other job, below.
        if let Some(response) = withdrawn(&ports, &caller, &job, Transition::Withdraw).await? {
            return Ok(response);
        }
    }
    cancelled(&ports, &caller, job_id, "cancel requested", |job| {
        ApiError::conflict(format!(
            "job {} is {}; it can no longer be cancelled",
            job.id, job.status
        ))
        .with_location(format!("/jobs/{}", job.id))
    })
    .await
}

/// Ends a held job before it did anything (`Transition::Withdraw`, or `Reject`): CANCELLING
/// in one conditional change that also puts it back in the sweeper's view with its end
/// still to announce (`release_job`), then fanout closes it. `None` if it was not held any
/// more.
async fn withdrawn(
    ports: &Ports,
    caller: &Caller,
    job: &Job,
    how: Transition,
) -> Result<Option<Response>, ApiError> {
    let now = ports.clock.now();
    match ports.jobs.release_job(job.id, how, None, now).await? {
        Some(Released::Released(job)) => {
            info!(job_id = %job.id, principal = %caller.principal, transition = ?how, "held job withdrawn");
            start(ports, &job).await?;
            Ok(Some(accepted(ports, &job, None)))
        }
        Some(Released::NotHeld(_)) => Ok(None),
        None => Err(ApiError::not_found(format!(
            "job {} does not exist",
            job.id
        ))),
    }
}

/// Moves the job to CANCELLING and has fanout finish it (re-sending chunks parked by a
/// pause to be skipped, or closing a job that sent none): 202 with the job, or `refused`.
async fn cancelled(
    ports: &Ports,
    caller: &Caller,
    job_id: JobId,
    note: &str,
    refused: impl Fn(&Job) -> ApiError,
) -> Result<Response, ApiError> {
    match ports.jobs.request_cancel(job_id).await? {
        None => Err(ApiError::not_found(format!("job {job_id} does not exist"))),
        Some(CancelOutcome::Cancelling(job)) => {
            info!(job_id = %job_id, principal = %caller.principal, "{note}");
            start(ports, &job).await?;
            Ok(accepted(ports, &job, None))
        }
        Some(CancelOutcome::NotCancellable(job)) => Err(refused(&job)),
    }
}

/// Approve a job awaiting approval: it starts (or, before its `notBefore`, is scheduled).
///
/// By a caller of the job's brand (or an administrator) other than the one that created it:
/// the creator's own approval is 403.
#[utoipa::path(
    post,
    path = "/jobs/{jobId}/approve",
    tag = "jobs",
    operation_id = "approveJob",
    params(("jobId" = JobId, Path, description = "The job")),
    responses(
        (status = 202, description = "The job, approved: PENDING (starting) or SCHEDULED", body = JobView,
         headers(("Location" = String, description = "`/jobs/{jobId}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "The caller created the job: another caller must approve it", content_type = "application/problem+json", body = Problem),
        (status = 404, response = NotFound),
        (status = 409, description = "The job is not awaiting approval (approved, rejected or cancelled already)", content_type = "application/problem+json", body = Problem,
         headers(("Location" = String, description = "The job"))),
    )
)]
async fn approve_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = caller.visible_job(&ports, job_id).await?;
    if job.status != JobStatus::AwaitingApproval {
        return Err(not_awaiting(&job));
    }
    if job.created_by.as_deref() == Some(caller.principal.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "job {job_id} was created by '{}': a second caller of its brand (or an \
                 administrator) must approve it",
                caller.principal
            ),
        ));
    }
    let now = ports.clock.now();
    let released = ports
        .jobs
        .release_job(job_id, job.approval_at(now), Some(&caller.principal), now)
        .await?;
    match released {
        None => Err(ApiError::not_found(format!("job {job_id} does not exist"))),
        Some(Released::NotHeld(job)) => Err(not_awaiting(&job)),
        Some(Released::Released(job)) => {
            info!(job_id = %job_id, principal = %caller.principal, status = %job.status, "job approved");
            if job.status == JobStatus::Pending {
                start(&ports, &job).await?;
            }
            Ok(accepted(&ports, &job, None))
        }
    }
}

/// Reject a job awaiting approval: it ends `CANCELLED` without touching a location.
#[utoipa::path(
    post,
    path = "/jobs/{jobId}/reject",
    tag = "jobs",
    operation_id = "rejectJob",
    params(("jobId" = JobId, Path, description = "The job")),
    responses(
        (status = 202, description = "The job, rejected: CANCELLING, then CANCELLED", body = JobView,
         headers(("Location" = String, description = "`/jobs/{jobId}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The job is not awaiting approval", content_type = "application/problem+json", body = Problem,
         headers(("Location" = String, description = "The job"))),
    )
)]
async fn reject_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let job = caller.visible_job(&ports, job_id).await?;
    match withdrawn(&ports, &caller, &job, Transition::Reject).await? {
        Some(response) => Ok(response),
        None => Err(not_awaiting(
            &ports.jobs.get_job(job_id).await?.unwrap_or(job),
        )),
    }
}

fn not_awaiting(job: &Job) -> ApiError {
    ApiError::conflict(format!(
        "job {} is {}: it is not awaiting approval",
        job.id, job.status
    ))
    .with_location(format!("/jobs/{}", job.id))
}

/// Pause a job: its workers stop writing and park its chunks (no write budget spent, no
/// delivery counted toward the dead-letter queue) until it is resumed or cancelled.
#[utoipa::path(
    post,
    path = "/jobs/{jobId}/pause",
    tag = "jobs",
    operation_id = "pauseJob",
    params(("jobId" = JobId, Path, description = "The job")),
    responses(
        (status = 202, description = "The job, now paused (or paused already)", body = JobView,
         headers(("Location" = String, description = "`/jobs/{jobId}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The job has ended or is winding down", content_type = "application/problem+json", body = Problem,
         headers(("Location" = String, description = "The job"))),
    )
)]
async fn pause_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    caller.visible_job(&ports, job_id).await?;
    match ports.jobs.pause_job(job_id, ports.clock.now()).await? {
        None => Err(ApiError::not_found(format!("job {job_id} does not exist"))),
        Some(PauseOutcome::Changed(job)) => {
            info!(job_id = %job_id, principal = %caller.principal, "job paused");
            ports.events.publish(&JobEvent::paused(&job)).await?;
            Ok(accepted(&ports, &job, None))
        }
        Some(PauseOutcome::Unchanged(job)) if job.status == JobStatus::Paused => {
            // A retried pause: its event again (the same id: delivered once), in case the
            // first request died before publishing it.
            ports.events.publish(&JobEvent::paused(&job)).await?;
            Ok(accepted(&ports, &job, None))
        }
        Some(PauseOutcome::Unchanged(job)) => Err(ApiError::conflict(format!(
            "job {job_id} is {}; only a PENDING or RUNNING job can be paused",
            job.status
        ))
        .with_location(format!("/jobs/{job_id}"))),
    }
}

/// Resume a paused job: it goes back to RUNNING and its parked chunks are queued again.
#[utoipa::path(
    post,
    path = "/jobs/{jobId}/resume",
    tag = "jobs",
    operation_id = "resumeJob",
    params(("jobId" = JobId, Path, description = "The job")),
    responses(
        (status = 202, description = "The job, running again (or not paused: left as it is)", body = JobView,
         headers(("Location" = String, description = "`/jobs/{jobId}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The job has ended or is winding down", content_type = "application/problem+json", body = Problem,
         headers(("Location" = String, description = "The job"))),
    )
)]
async fn resume_job(
    State(ports): State<Ports>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    caller.visible_job(&ports, job_id).await?;
    let at = ports.clock.now();
    let job = match ports.jobs.resume_job(job_id, at).await? {
        None => return Err(ApiError::not_found(format!("job {job_id} does not exist"))),
        Some(PauseOutcome::Changed(job)) => {
            info!(job_id = %job_id, principal = %caller.principal, "job resumed");
            ports.events.publish(&JobEvent::resumed(&job, at)).await?;
            job
        }
        Some(PauseOutcome::Unchanged(job))
            if matches!(job.status, JobStatus::Pending | JobStatus::Running) =>
        {
            job
        }
        Some(PauseOutcome::Unchanged(job)) => {
            return Err(ApiError::conflict(format!(
                "job {job_id} is {}; only a PAUSED job can be resumed",
                job.status
            ))
            .with_location(format!("/jobs/{job_id}")))
        }
    };
    // Fanout re-sends the parked chunks and carries on paging; a retried resume (the first
    // died before this) repeats it safely.
    start(&ports, &job).await?;
    Ok(accepted(&ports, &job, None))
}

/// A new offer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "name": "5% cashback" }))]
struct NewOffer {
    /// Chosen by the client, or a new one.
    id: Option<OfferId>,
    /// The caller's brand when absent; an administrator must name it.
    brand_id: Option<BrandId>,
    /// 1 to 200 characters, not only white space, no control characters.
    #[schema(schema_with = name_schema)]
    name: String,
    /// When it goes live (RFC 3339): a link-all of the brand's locations, `SCHEDULED` until
    /// then, is made with the offer.
    #[serde(default)]
    starts_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it ends (RFC 3339, after `startsAt`): an unlink-all of every location it is
    /// linked to runs then (made, `SCHEDULED`, when the start's job ends).
    #[serde(default)]
    ends_at: Option<chrono::DateTime<chrono::Utc>>,
}
bulklink_core::json_object_only!(NewOffer);

/// Create an offer of the caller's brand.
#[utoipa::path(
    post,
    path = "/offers",
    tag = "catalog",
    operation_id = "createOffer",
    request_body(content = NewOffer, content_type = "application/json"),
    responses(
        (status = 201, description = "The offer", body = Offer,
         headers(("Location" = String, description = "`/offers/{offerId}`")),
         links(("GetOffer" = (operation_id = "getOffer", parameters(("offerId" = "$response.body#/id")))), ("CreateLinkAllJob" = (operation_id = "createLinkAllJob", parameters(("offerId" = "$response.body#/id")))), ("ListOfferLinks" = (operation_id = "listOfferLinks", parameters(("offerId" = "$response.body#/id"))))),
         example = json!({"id": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1013", "brandId": "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012",
                          "name": "5% cashback", "locationsTotal": 0})),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
async fn create_offer(
    State(ports): State<Ports>,
    caller: Caller,
    JsonBody(new): JsonBody<NewOffer>,
) -> Result<Response, ApiError> {
    let brand_id = caller.acting_brand(new.brand_id, "brandId")?;
    let name = checked_text("name", &new.name, MAX_NAME_LEN)?;
    let now = ports.clock.now();
    let millis = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map(|at| {
            at.duration_trunc(chrono::Duration::milliseconds(1))
                .unwrap_or(at)
        })
    };
    let schedule = OfferSchedule::checked(
        millis(new.starts_at),
        millis(new.ends_at),
        now,
        MAX_SCHEDULE_DAYS,
    )
    .map_err(ApiError::bad_request)?;
    let mut offer = Offer {
        id: new.id.unwrap_or_else(OfferId::new_random),
        brand_id,
        name,
        locations_total: 0,
        schedule: schedule.clone(),
    };
    ports.catalog.create_offer(&offer).await?;
    if let Some(schedule) = schedule {
        offer.schedule = Some(scheduled(&ports, &caller, &offer, schedule).await?);
    }
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/offers/{}", offer.id))],
        Json(offer),
    )
        .into_response())
}

/// Puts an offer's schedule in motion: its start is left to the scheduler (which makes, at
/// `startsAt`, a link-all — or a reconcile if the offer then follows a standing rule — that
/// makes the end's unlink-all when it ends); a schedule with an end alone makes that
/// unlink-all now, `SCHEDULED` at `endsAt`.
async fn scheduled(
    ports: &Ports,
    caller: &Caller,
    offer: &Offer,
    mut schedule: OfferSchedule,
) -> Result<OfferSchedule, ApiError> {
    match (schedule.starts_at, schedule.ends_at) {
        (Some(start), _) => ports.jobs.put_offer_start(offer.id, start).await?,
        (None, Some(end)) => {
            let now = ports.clock.now();
            let spec = plan(JobKind::UnlinkAllLocations, None).map_err(refused)?;
            let job = Job {
                not_before: Some(end),
                created_by: Some(caller.principal.clone()),
                ..Job::planned(spec, offer.brand_id, Some(offer.id), None, now)
            }
            .held(false, now);
            let job = created(ports, job, None).await?;
            if job.status == JobStatus::Pending {
                start(ports, &job).await?;
            }
            schedule.end_job_id = Some(job.id);
            ports
                .catalog
                .set_offer_schedule(offer.id, &schedule)
                .await?;
        }
        (None, None) => {}
    }
    info!(offer_id = %offer.id, principal = %caller.principal, "offer scheduled");
    Ok(schedule)
}

/// An offer's change: its name, its schedule's times, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "name": "10% cashback" }))]
struct OfferChange {
    /// 1 to 200 characters, not only white space, no control characters.
    #[schema(schema_with = name_schema)]
    #[serde(default)]
    name: Option<String>,
    /// A new start (RFC 3339), until the offer has started.
    #[serde(default)]
    starts_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A new end (RFC 3339, after the start), until the end's job is made.
    #[serde(default)]
    ends_at: Option<chrono::DateTime<chrono::Utc>>,
}
bulklink_core::json_object_only!(OfferChange);

/// Rename an offer, or move its schedule.
///
/// `startsAt` moves (or sets) the start until the offer has started; `endsAt` moves (or
/// sets) the end until the end's unlink-all is made (then 409 with its `Location`: cancel it
/// and set the end again). An offer that has neither gets its schedule as `POST /offers`
/// would.
#[utoipa::path(
    patch,
    path = "/offers/{offerId}",
    tag = "catalog",
    operation_id = "renameOffer",
    params(("offerId" = OfferId, Path, description = "The offer")),
    request_body(content = OfferChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The offer, changed", body = Offer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The schedule cannot move any more (started, or its end's job is made: its `Location`)",
         content_type = "application/problem+json", body = Problem,
         headers(("Location" = Option<String>, description = "The job in the way"))),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
async fn rename_offer(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
    JsonBody(change): JsonBody<OfferChange>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    let mut offer = caller.visible_offer(&ports, offer_id).await?;
    if change.name.is_none() && change.starts_at.is_none() && change.ends_at.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: send name, startsAt or endsAt",
        ));
    }
    let name = change
        .name
        .as_deref()
        .map(|name| checked_text("name", name, MAX_NAME_LEN))
        .transpose()?;
    if change.starts_at.is_some() || change.ends_at.is_some() {
        offer = rescheduled(&ports, &caller, offer, &change).await?;
    }
    if let Some(name) = name {
        offer = ports
            .catalog
            .rename_offer(offer_id, &name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("offer {offer_id} does not exist")))?;
    }
    Ok(Json(offer).into_response())
}

/// Moves an offer's schedule as `change` asks, while each part can still move.
async fn rescheduled(
    ports: &Ports,
    caller: &Caller,
    offer: Offer,
    change: &OfferChange,
) -> Result<Offer, ApiError> {
    let millis = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map(|at| {
            at.duration_trunc(chrono::Duration::milliseconds(1))
                .unwrap_or(at)
        })
    };
    let current = offer.schedule.clone().unwrap_or_default();
    if let (Some(_), Some(job)) = (change.starts_at, current.start_job_id) {
        return Err(ApiError::conflict(format!(
            "offer {} has started (job {job}): its start cannot move",
            offer.id
        ))
        .with_location(format!("/jobs/{job}")));
    }
    if let (Some(_), Some(job)) = (change.ends_at, current.end_job_id) {
        return Err(ApiError::conflict(format!(
            "offer {}'s end is made (job {job}): cancel that job, then set endsAt again",
            offer.id
        ))
        .with_location(format!("/jobs/{job}")));
    }
    let starts_at = millis(change.starts_at).or(current.starts_at);
    let ends_at = millis(change.ends_at).or(current.ends_at);
    let now = ports.clock.now();
    let Some(checked) = OfferSchedule::checked(starts_at, ends_at, now, MAX_SCHEDULE_DAYS)
        .map_err(ApiError::bad_request)?
    else {
        return Ok(offer);
    };
    let schedule = OfferSchedule {
        start_job_id: current.start_job_id,
        end_job_id: current.end_job_id,
        ..checked
    };
    ports
        .catalog
        .set_offer_schedule(offer.id, &schedule)
        .await?;
    let schedule = match change.starts_at {
        // The start moves: the scheduler makes it at the new time.
        Some(_) => {
            let at = schedule.starts_at.unwrap_or(now);
            ports.jobs.put_offer_start(offer.id, at).await?;
            schedule
        }
        // Only the end moves: the start's job reads it when it ends; an offer that had no
        // start, or whose start's job has ended, gets its end's job now.
        None => {
            let start_done = match current.start_job_id {
                Some(job) => ports
                    .jobs
                    .get_job(job)
                    .await?
                    .is_none_or(|job| job.status.is_terminal()),
                None => current.starts_at.is_none(),
            };
            if start_done {
                let ends_only = OfferSchedule {
                    starts_at: None,
                    ..schedule.clone()
                };
                let made = scheduled(ports, caller, &offer, ends_only).await?;
                OfferSchedule {
                    end_job_id: made.end_job_id,
                    ..schedule
                }
            } else {
                schedule
            }
        }
    };
    ports
        .catalog
        .set_offer_schedule(offer.id, &schedule)
        .await?;
    Ok(Offer {
        schedule: Some(schedule),
        ..offer
    })
}

/// Delete an offer that carries no location and has no active job.
///
/// Unlink it first (`POST /offers/{offerId}/unlink-all-locations`).
#[utoipa::path(
    delete,
    path = "/offers/{offerId}",
    tag = "catalog",
    operation_id = "deleteOffer",
    params(("offerId" = OfferId, Path, description = "The offer")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "It still carries locations, or has an active job",
         content_type = "application/problem+json", body = Problem,
         headers(("Location" = Option<String>, description = "The active job, where there is one"))),
    )
)]
async fn delete_offer(
    State(ports): State<Ports>,
    caller: Caller,
    Path(offer_id): Path<String>,
) -> Result<Response, ApiError> {
    let offer_id: OfferId = parse_id(&offer_id)?;
    caller.visible_offer(&ports, offer_id).await?;
    match ports.jobs.delete_offer(offer_id).await? {
        OfferDeletion::Deleted => {
            info!(offer_id = %offer_id, principal = %caller.principal, "offer deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        OfferDeletion::NotFound => Err(ApiError::not_found(format!(
            "offer {offer_id} does not exist"
        ))),
        OfferDeletion::HasLinks(n) => Err(ApiError::conflict(format!(
            "offer {offer_id} still carries {n} locations; unlink them first \
             (POST /offers/{offer_id}/unlink-all-locations)"
        ))),
        OfferDeletion::Busy(job) => Err(ApiError::conflict(format!(
            "offer {offer_id} has an active job: {job}"
        ))
        .with_location(format!("/jobs/{job}"))),
    }
}

/// A change to a location: each field present is set, `null` removes an attribute, an
/// absent field is left as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "address": "1 High St", "city": "London", "tags": ["drive-thru"] }))]
struct LocationPatch {
    /// 1 to 500 characters, not only white space, no control characters (it cannot be
    /// removed: `null` is refused).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = address_schema)]
    address: Option<Option<String>>,
    /// The store's name; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = nullable_attribute_schema)]
    name: Option<Option<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = nullable_attribute_schema)]
    city: Option<Option<String>>,
    /// A state, county or province; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = nullable_attribute_schema)]
    region: Option<Option<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = nullable_attribute_schema)]
    postcode: Option<Option<String>>,
    /// ISO 3166-1 alpha-2, upper case; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Country>)]
    country: Option<Option<String>>,
    /// The whole list of tags (replaces the old one); `null` or `[]` removes them all.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = nullable_tags_schema)]
    tags: Option<Option<Vec<String>>>,
    /// `closed` leaves every offer the location carried (as a deletion does, but the
    /// location stays, with its ids and attributes); `active` reopens it. `null` is the same
    /// as leaving it out.
    #[serde(default)]
    status: Option<LocationStatus>,
}
bulklink_core::json_object_only!(LocationPatch);

/// Change a location: its address, any of its attributes and its status, at once.
///
/// `updatedAt` moves only when something changes: the same body twice changes nothing.
/// Setting `status` to `closed` leaves every offer the location carried, each offer's
/// `locationsTotal` one less; no job links it until it is `active` again.
#[utoipa::path(
    patch,
    path = "/locations/{locationId}",
    tag = "catalog",
    operation_id = "readdressLocation",
    params(("locationId" = LocationId, Path, description = "The location")),
    request_body(content = LocationPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The location, changed", body = Location),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
async fn readdress_location(
    State(ports): State<Ports>,
    caller: Caller,
    Path(location_id): Path<String>,
    JsonBody(patch): JsonBody<LocationPatch>,
) -> Result<Response, ApiError> {
    let location_id: LocationId = parse_id(&location_id)?;
    caller.visible_location(&ports, location_id).await?;
    let address = match patch.address {
        None => None,
        Some(None) => {
            return Err(ApiError::bad_request(
                "address cannot be removed: send a new one or leave it out",
            ))
        }
        Some(Some(address)) => Some(checked_text("address", &address, MAX_ADDRESS_LEN)?),
    };
    let attributes = AttributeFields {
        name: patch.name,
        city: patch.city,
        region: patch.region,
        postcode: patch.postcode,
        country: patch.country,
        tags: patch.tags,
    }
    .checked(&|name: &str| name.to_owned())?;
    let change = LocationChange {
        address,
        status: patch.status,
        attributes,
    };
    let location = ports
        .catalog
        .update_location(location_id, &change)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("location {location_id} does not exist")))?;
    Ok(Json(location).into_response())
}

/// A field that may be sent as `null`: `Some(None)`, where an absent one is `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A location's attributes as a request sends them, before they are checked.
struct AttributeFields {
    name: Option<Option<String>>,
    city: Option<Option<String>>,
    region: Option<Option<String>>,
    postcode: Option<Option<String>>,
    country: Option<Option<String>>,
    tags: Option<Option<Vec<String>>>,
}

impl AttributeFields {
    /// Checks each field (its name in errors from `field`): text as any text is, the
    /// country an assigned ISO code, at most 20 tags of 1 to 50 characters (each kept once).
    fn checked(self, field: &dyn Fn(&str) -> String) -> Result<AttributesChange, ApiError> {
        let text = |name: &str, value: Option<Option<String>>| {
            value
                .map(|v| {
                    v.map(|v| checked_text(&field(name), &v, MAX_ATTRIBUTE_LEN))
                        .transpose()
                })
                .transpose()
        };
        let country = self
            .country
            .map(|c| {
                c.map(|c| {
                    c.parse::<Country>()
                        .map_err(|e| ApiError::bad_request(format!("{}: {e}", field("country"))))
                })
                .transpose()
            })
            .transpose()?;
        let tags = self
            .tags
            .map(|tags| checked_tags(&field("tags"), tags.unwrap_or_default()))
            .transpose()?;
        Ok(AttributesChange {
            name: text("name", self.name)?,
            city: text("city", self.city)?,
            region: text("region", self.region)?,
            postcode: text("postcode", self.postcode)?,
            country,
            tags,
        })
    }
}

fn checked_tags(field: &str, tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    bulklink_core::domain::checked_tags(field, &tags).map_err(ApiError::bad_request)
}

fn nullable_attribute_schema() -> utoipa::openapi::Object {
    bulklink_http::http::nullable_text_schema(MAX_ATTRIBUTE_LEN)
}

fn tags_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(bulklink_http::http::text_schema(MAX_TAG_LEN))
        .max_items(Some(MAX_TAGS))
        .description(Some(
            "Up to 20 tags of 1 to 50 characters; a tag sent twice is kept once",
        ))
        .build()
}

fn nullable_tags_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    ArrayBuilder::from(tags_schema())
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

/// Delete a location (a store closes): it leaves every offer it carried.
///
/// Each of those offers' `locationsTotal` drops by one; a running job that comes to the
/// location counts it `notFound`.
#[utoipa::path(
    delete,
    path = "/locations/{locationId}",
    tag = "catalog",
    operation_id = "deleteLocation",
    params(("locationId" = LocationId, Path, description = "The location")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
async fn delete_location(
    State(ports): State<Ports>,
    caller: Caller,
    Path(location_id): Path<String>,
) -> Result<Response, ApiError> {
    let location_id: LocationId = parse_id(&location_id)?;
    caller.visible_location(&ports, location_id).await?;
    let left = ports
        .catalog
        .delete_location(location_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("location {location_id} does not exist")))?;
    info!(location_id = %location_id, offers = left.len(), principal = %caller.principal, "location deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Declares the body of a request that makes a location: the fields given, then the address
/// and the attributes every such body takes, with `attribute_fields` to check them.
macro_rules! location_body {
    (
        $(#[$meta:meta])*
        struct $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty,)* }
    ) => {
        #[derive(Debug, Deserialize, ToSchema)]
        #[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
        $(#[$meta])*
        struct $name {
            $($(#[$field_meta])* $field: $ty,)*
            /// 1 to 500 characters, not only white space, no control characters.
            #[schema(schema_with = address_schema)]
            address: String,
            /// The store's name (`null` is the same as leaving an attribute out).
            #[serde(default)]
            #[schema(schema_with = nullable_attribute_schema)]
            name: Option<String>,
            #[serde(default)]
            #[schema(schema_with = nullable_attribute_schema)]
            city: Option<String>,
            /// A state, county or province.
            #[serde(default)]
            #[schema(schema_with = nullable_attribute_schema)]
            region: Option<String>,
            #[serde(default)]
            #[schema(schema_with = nullable_attribute_schema)]
            postcode: Option<String>,
            /// ISO 3166-1 alpha-2, upper case.
            #[serde(default)]
            #[schema(value_type = Option<Country>)]
            country: Option<String>,
            #[serde(default)]
            #[schema(schema_with = nullable_tags_schema)]
            tags: Option<Vec<String>>,
            /// `active` when left out (or `null`); a location made `closed` leaves every
            /// offer it carried.
            #[serde(default)]
            status: Option<LocationStatus>,
        }
        bulklink_core::json_object_only!($name);

        impl $name {
            /// The attributes sent, to be checked (an attribute left out is one the
            /// location will not have).
            fn attribute_fields(&mut self) -> AttributeFields {
                AttributeFields {
                    name: self.name.take().map(Some),
                    city: self.city.take().map(Some),
                    region: self.region.take().map(Some),
                    postcode: self.postcode.take().map(Some),
                    country: self.country.take().map(Some),
                    tags: self.tags.take().map(Some),
                }
            }
        }
    };
}

location_body! {
    /// A new location.
    struct NewLocation {
        /// Chosen by the client, or a new one.
        id: Option<LocationId>,
        /// The caller's brand when absent; an administrator must name it.
        brand_id: Option<BrandId>,
        /// The brand's own id for the store, unique in the brand (a batch with external ids
        /// holds at most 50 locations).
        #[serde(default)]
        #[schema(schema_with = nullable_external_id_schema)]
        external_id: Option<String>,
    }
}

fn name_schema() -> utoipa::openapi::Object {
    bulklink_http::http::text_schema(MAX_NAME_LEN)
}

fn address_schema() -> utoipa::openapi::Object {
    bulklink_http::http::text_schema(MAX_ADDRESS_LEN)
}

/// One location, or a batch of 1 to 100 (created all or none).
struct NewLocations;

impl utoipa::PartialSchema for NewLocations {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Ref};
        let one = Ref::from_schema_name(NewLocation::name());
        OneOfBuilder::new()
            .item(one.clone())
            .item(
                ArrayBuilder::new()
                    .items(one)
                    .min_items(Some(1))
                    .max_items(Some(MAX_LOCATIONS_PER_REQUEST)),
            )
            .description(Some(
                "One location, or a batch of 1 to 100 (created all or none)",
            ))
            .examples([serde_json::json!([{ "address": "1 Main St" }, { "address": "2 Main St" }])])
            .into()
    }
}

impl ToSchema for NewLocations {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            NewLocation::name().into(),
            <NewLocation as utoipa::PartialSchema>::schema(),
        ));
        NewLocation::schemas(schemas);
    }
}

/// What `POST /locations` made: the location, or the batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum CreatedLocations {
    One(Box<Location>),
    Many(Vec<Location>),
}

/// The answer to a direct link.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LinkResult {
    offer_id: OfferId,
    location_id: LocationId,
    /// Always true: the location carries the offer now.
    linked: bool,
}

/// Create one location of the caller's brand, or a batch of up to 100.
#[utoipa::path(
    post,
    path = "/locations",
    tag = "catalog",
    operation_id = "createLocations",
    request_body(content = NewLocations, content_type = "application/json"),
    responses(
        (status = 201, description = "The location (with `Location`), or the batch", body = CreatedLocations,
         headers(("Location" = Option<String>, description = "`/locations/{locationId}`, for a single location"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
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
    let now = ports.clock.now();
    let mut locations = Vec::with_capacity(new.len());
    for (i, mut n) in new.into_iter().enumerate() {
        let field = |name: &str| {
            if many {
                format!("[{i}].{name}")
            } else {
                name.to_owned()
            }
        };
        let mut location = Location::new(
            n.id.unwrap_or_else(LocationId::new_random),
            caller.acting_brand(n.brand_id, &field("brandId"))?,
            checked_text(&field("address"), &n.address, MAX_ADDRESS_LEN)?,
            now,
        );
        location.external_id = n
            .external_id
            .take()
            .map(|e| checked_text(&field("externalId"), &e, MAX_EXTERNAL_ID_LEN))
            .transpose()?;
        let attributes = n.attribute_fields().checked(&field)?;
        location.attributes = attributes.into_attributes();
        location.status = n.status.unwrap_or_default();
        locations.push(location);
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = locations.iter().find(|l| !seen.insert(l.id)) {
        return Err(ApiError::bad_request(format!(
            "location {} appears twice",
            dup.id
        )));
    }
    let external: Vec<&str> = locations
        .iter()
        .filter_map(|l| l.external_id.as_deref())
        .collect();
    if !external.is_empty() && locations.len() > MAX_EXTERNAL_LOCATIONS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "send at most {MAX_EXTERNAL_LOCATIONS_PER_REQUEST} locations at once when they carry \
             externalId, not {}",
            locations.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = external.iter().find(|e| !seen.insert(**e)) {
        return Err(ApiError::bad_request(format!(
            "externalId '{dup}' appears twice"
        )));
    }
    if let Err(e) = ports.catalog.create_locations(&locations).await {
        return Err(with_existing(&ports, &locations, e).await);
    }
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

/// A `Conflict` of a create, with `Location` of the location that already has one of the
/// external ids sent (the first found), when that is why.
async fn with_existing(ports: &Ports, sent: &[Location], e: StoreError) -> ApiError {
    if !matches!(e, StoreError::Conflict(_)) {
        return e.into();
    }
    for location in sent {
        let Some(external_id) = &location.external_id else {
            continue;
        };
        if let Ok(Some(existing)) = ports
            .catalog
            .find_by_external_id(location.brand_id, external_id)
            .await
        {
            if existing.id != location.id {
                return ApiError::conflict(format!(
                    "a location with externalId '{external_id}' already exists: {}",
                    existing.id
                ))
                .with_location(format!("/locations/{}", existing.id));
            }
        }
    }
    e.into()
}

location_body! {
    /// The address and attributes a `PUT /locations/by-external-id/{externalId}` makes a
    /// location have (an attribute left out is removed).
    #[schema(example = json!({ "address": "1 Old Compton St", "name": "Soho", "city": "London", "country": "GB", "tags": ["drive-thru"] }))]
    struct LocationPut {}
}

/// `?brandId=` of a route that acts on one brand.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BrandQuery {
    /// The brand: the caller's when absent; an administrator must name one.
    #[param(value_type = Option<BrandId>)]
    brand_id: Option<String>,
}

/// Create or update the brand's location with this external id.
///
/// The location's address and attributes become exactly the body's (an attribute left out
/// is removed); its id, `createdAt` and links are kept. The same body twice changes nothing
/// (200, `updatedAt` unchanged).
#[utoipa::path(
    put,
    path = "/locations/by-external-id/{externalId}",
    tag = "catalog",
    operation_id = "upsertLocationByExternalId",
    params(
        ("externalId" = String, Path, description = "The brand's own id for the store: 1 to 100 characters, not only white space, no control characters",
         min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000\\uFEFF][^\\u0000-\\u001F\\u007F-\\u009F]*$(?!\\n)"),
        BrandQuery,
    ),
    request_body(content = LocationPut, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (with `Location`)", body = Location,
         headers(("Location" = String, description = "`/locations/{locationId}`"))),
        (status = 200, description = "Updated, or already as sent", body = Location),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
async fn upsert_location_by_external_id(
    State(ports): State<Ports>,
    caller: Caller,
    Path(external_id): Path<String>,
    QueryParams(query): QueryParams<BrandQuery>,
    JsonBody(mut body): JsonBody<LocationPut>,
) -> Result<Response, ApiError> {
    let requested = query.brand_id.as_deref().map(parse_id).transpose()?;
    let brand = caller.acting_brand(requested, "query parameter brandId")?;
    let external_id = checked_text("externalId", &external_id, MAX_EXTERNAL_ID_LEN)?;
    let now = ports.clock.now();
    let mut location = Location::new(
        LocationId::new_random(),
        brand,
        checked_text("address", &body.address, MAX_ADDRESS_LEN)?,
        now,
    );
    location.external_id = Some(external_id);
    location.status = body.status.unwrap_or_default();
    location.attributes = body
        .attribute_fields()
        .checked(&|name: &str| name.to_owned())?
        .into_attributes();
    let response = match ports.catalog.upsert_by_external_id(&location).await? {
        Upserted::Created(made) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/locations/{}", made.id))],
            Json(made),
        )
            .into_response(),
        Upserted::Updated(l) | Upserted::Unchanged(l) => (StatusCode::OK, Json(l)).into_response(),
    };
    Ok(response)
}

fn nullable_external_id_schema() -> utoipa::openapi::Object {
    bulklink_http::http::nullable_text_schema(MAX_EXTERNAL_ID_LEN)
}

/// Link one location to the offer now.
#[utoipa::path(
    put,
    path = "/offers/{offerId}/locations/{locationId}",
    tag = "catalog",
    operation_id = "linkLocation",
    params(
        ("offerId" = OfferId, Path, description = "The offer"),
        ("locationId" = LocationId, Path, description = "A location of the offer's brand"),
    ),
    responses(
        (status = 201, description = "Linked now", body = LinkResult),
        (status = 200, description = "It was linked already", body = LinkResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The location is closed or outside the offer's rule, or an administrator linked a location of another brand than the offer's",
         content_type = "application/problem+json", body = Problem),
    )
)]
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
    if location.is_active() {
        if let Some(rule) = ports.catalog.get_rule(offer_id).await? {
            if !rule.wants(&location) {
                return Err(ApiError::conflict(format!(
                    "location {location_id} is outside offer {offer_id}'s rule: change the rule \
                     (PUT /offers/{offer_id}/rule) or the location's attributes to link it"
                )));
            }
        }
    }
    let status = match ports.catalog.link_direct(&offer, location_id).await? {
        LinkOutcome::Linked => StatusCode::CREATED,
        LinkOutcome::AlreadyLinked => StatusCode::OK,
        LinkOutcome::NotFound | LinkOutcome::Unlinked | LinkOutcome::NotLinked => {
            // Closed before or while it was linked, or deleted meanwhile.
            return Err(match ports.catalog.get_location(location_id).await? {
                Some(l) if !l.is_active() => ApiError::conflict(format!(
                    "location {location_id} is closed: reopen it (PATCH status active) to link it"
                )),
                _ => ApiError::not_found(format!("location {location_id} does not exist")),
            });
        }
    };
    let body = LinkResult {
        offer_id,
        location_id,
        linked: true,
    };
    Ok((status, Json(body)).into_response())
}
