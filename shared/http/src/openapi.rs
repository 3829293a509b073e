//! The pieces of the OpenAPI document every router shares: the problem+json error answers,
//! the bearer-JWT security scheme, and the document's frame (info, tags). The paths come from
//! the `#[utoipa::path]` annotations on the handlers, collected as the routers are built.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::http::Problem;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// The name of the security scheme (bearer JWT).
pub const BEARER: &str = "bearerAuth";

fn problem(description: &str, example: serde_json::Value) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                Problem::name(),
            ))))
            .example(Some(example))
            .build(),
    )
}

fn example(status: u16, title: &str, detail: &str) -> serde_json::Value {
    serde_json::json!({ "type": "about:blank", "title": title, "status": status, "detail": detail })
}

macro_rules! problem_response {
    ($(#[$doc:meta])* $name:ident, $status:literal, $title:literal, $description:literal, $detail:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl<'s> utoipa::ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (
                    stringify!($name),
                    problem($description, example($status, $title, $detail)).build().into(),
                )
            }
        }
    };
}

problem_response!(
    BadRequest,
    400,
    "Bad Request",
    "The request is not valid: a malformed id, parameter or body; `detail` names it.",
    "offerId 'nope' is not a valid UUID"
);
problem_response!(
    Forbidden,
    403,
    "Forbidden",
    "The caller may not act on the brand it named.",
    "brandId 0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011 is not your brand (0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012); a token acts on its own brand only"
);
problem_response!(
    NotFound,
    404,
    "Not Found",
    "No such resource, or one of another brand (the answer is the same).",
    "offer 0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011 does not exist"
);
problem_response!(
    Conflict,
    409,
    "Conflict",
    "The request conflicts with the resource's state; `detail` says how.",
    "offer 0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011 already exists"
);
problem_response!(
    PayloadTooLarge,
    413,
    "Payload Too Large",
    "The body is larger than 64 KiB.",
    "request body is larger than the 65536-byte limit"
);
problem_response!(
    UnsupportedMediaType,
    415,
    "Unsupported Media Type",
    "A body was sent that is not JSON.",
    "request body must be JSON: send Content-Type: application/json"
);

/// 401, with its `WWW-Authenticate: Bearer` challenge.
pub struct Unauthorized;

impl<'s> utoipa::ToResponse<'s> for Unauthorized {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = problem(
            "No bearer token, or a malformed, expired or badly signed one.",
            example(
                401,
                "Unauthorized",
                "this route needs a bearer token: send Authorization: Bearer <JWT>",
            ),
        )
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(
                    "`Bearer realm=\"bulklink\"` (with `error=\"invalid_token\"` for a bad token)",
                ))
                .build(),
        )
        .build();
        ("Unauthorized", response.into())
    }
}

/// 429, with its `Retry-After`.
pub struct TooManyRequests;

impl<'s> utoipa::ToResponse<'s> for TooManyRequests {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = problem(
            "The caller's brand is over its request rate (`BRAND_RATE_PER_SEC`, \
             `BRAND_RATE_BURST`); administrators are not limited.",
            example(
                429,
                "Too Many Requests",
                "brand 0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012 is over its request rate; retry after 1 s",
            ),
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(u32::schema()))
                .description(Some("Seconds until the brand may send again"))
                .build(),
        )
        .build();
        ("TooManyRequests", response.into())
    }
}

/// 503, with its `Retry-After`: the store did not answer in time or reported itself busy.
pub struct ServiceUnavailable;

impl<'s> utoipa::ToResponse<'s> for ServiceUnavailable {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = problem(
            "The store is unavailable for the moment (DynamoDB throttling or unreachable, \
             SQLite busy), or the request took longer than the server's request timeout. \
             Nothing or all of a write was done: retry the same request (with its \
             Idempotency-Key where the route takes one) after `Retry-After`.",
            example(
                503,
                "Service Unavailable",
                "the store is temporarily unavailable; retry shortly",
            ),
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(u32::schema()))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        )
        .build();
        ("ServiceUnavailable", response.into())
    }
}

/// Operations that need a caller but never read or write the store: no 503.
const STORELESS_OPERATIONS: [&str; 1] = ["listWebhookEventTypes"];

/// Every operation that needs a caller may answer 429 (the per-brand request limit applies
/// where the caller is known, whatever the route) and, as each reads or writes the store
/// (but those of `STORELESS_OPERATIONS`), 503 when the store is unavailable.
pub fn limit_every_authenticated_operation(document: &mut utoipa::openapi::OpenApi) {
    let shared = [
        ("429", <TooManyRequests as utoipa::ToResponse>::response()),
        (
            "503",
            <ServiceUnavailable as utoipa::ToResponse>::response(),
        ),
    ];
    let components = document.components.get_or_insert_with(Default::default);
    for (_, (name, response)) in &shared {
        components
            .responses
            .insert((*name).to_owned(), response.clone());
    }
    for item in document.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let public = op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
            let storeless = op
                .operation_id
                .as_deref()
                .is_some_and(|id| STORELESS_OPERATIONS.contains(&id));
            if !public {
                for (status, (name, _)) in &shared {
                    if storeless && *status == "503" {
                        continue;
                    }
                    op.responses.responses.insert(
                        (*status).to_owned(),
                        RefOr::Ref(utoipa::openapi::Ref::from_response_name(*name)),
                    );
                }
            }
        }
    }
}

/// A `Location` header: where the resource is.
pub fn location_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(String::schema()))
        .description(Some("The path of the resource"))
        .build()
}

/// Adds the bearer-JWT scheme and requires it everywhere; public operations opt out.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with `sub`, the brand claim (`brand_id` by default: one brand UUID) \
                         and/or `scope` with `bulklink:admin`. `bulklink token` mints local ones.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's frame.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "bulklink",
        description = "Link one offer to all of a brand's locations, as a job. Every route but \
                       `/healthz` and `/openapi.json` needs a bearer token and acts on the token's \
                       brand. Errors are `application/problem+json` (RFC 9457). Lists answer \
                       `{ items, nextCursor }`; pass `cursor` back unchanged for the next page.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    security(("bearerAuth" = [])),
    modifiers(&BearerAuth),
    components(
        schemas(Problem),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType)
    ),
    tags(
        (name = "jobs", description = "Bulk jobs: create, follow, cancel"),
        (name = "catalog", description = "Offers, locations and links"),
        (name = "rules", description = "Standing rules: the locations an offer follows, and its drift from them"),
        (name = "imports", description = "Files of a brand's stores, applied as import jobs"),
        (name = "webhooks", description = "Subscriptions and their deliveries (Standard Webhooks)"),
        (name = "admin", description = "Operating the service: the live write budget"),
        (name = "service", description = "Liveness and this document")
    )
)]
pub struct ApiDoc;
