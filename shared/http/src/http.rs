//! HTTP edge shared by the job-api and status routers: the one place errors become
//! `application/problem+json` (RFC 9457), and extractors whose rejections do too.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::DomainError;
use crate::error::StoreError;
use crate::ports::{Cursor, Page};

/// Largest request body accepted (a batch of 100 locations fits with room to spare).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Default and largest page sizes of list endpoints.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1_000;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    pub location: Option<String>,
    pub retry_after: Option<u32>,
    /// `WWW-Authenticate` of a 401.
    pub challenge: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            location: None,
            retry_after: None,
            challenge: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        self.challenge = Some(challenge.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(detail) => ApiError::conflict(detail),
            StoreError::Invalid(detail) => ApiError::bad_request(detail),
            e if e.is_retryable() => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is temporarily unavailable; retry shortly",
                )
                .with_retry_after(1)
            }
            e => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; it has been logged",
                )
            }
        }
    }
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "about:blank", "title": "Not Found", "status": 404,
    "detail": "offer 0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011 does not exist"}))]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status code's reason phrase.
    pub title: String,
    pub status: u16,
    /// What is wrong, naming the field or resource.
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// A JSON body whose every rejection is a problem+json naming what is wrong.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// An optional JSON body: empty is `None`; anything else must be JSON of type `T`.
pub struct OptionalJsonBody<T>(pub Option<T>, pub axum::body::Bytes);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = json_content_type(req.headers());
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None, bytes));
        }
        if !is_json {
            return Err(unsupported_media_type());
        }
        // JSON `null` is no body, as the document describes the optional body.
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(|value| OptionalJsonBody(value, bytes))
            .map_err(|e| ApiError::bad_request(format!("request body is not valid: {e}")))
    }
}

fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "request body must be JSON: send Content-Type: application/json",
    )
}

fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!("request body is larger than the {MAX_BODY_BYTES}-byte limit"),
        )
    } else {
        ApiError::new(status, format!("could not read the request body: {text}"))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("request body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(format!("request body is not valid: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e) => body_rejection(e.status(), e.body_text()),
        other => ApiError::new(other.status(), other.body_text()),
    }
}

/// Query parameters whose rejection is a problem+json.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("query string is not valid: {}", e.body_text()))
            })
    }
}

/// `?cursor=&limit=` of every list endpoint.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where the page starts: the `nextCursor` of the previous page, unchanged.
    #[param(min_length = 1, pattern = "^[A-Za-z0-9_-]+$(?!\\n)")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl PageQuery {
    pub fn cursor(&self) -> Result<Option<Cursor>, ApiError> {
        if self.cursor.as_deref() == Some("") {
            return Err(ApiError::bad_request(
                "cursor must not be empty: leave it out for the first page",
            ));
        }
        self.cursor
            .as_deref()
            .map(Cursor::decode)
            .transpose()
            .map_err(ApiError::from)
    }

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit {n} is out of range 1..={MAX_PAGE}"
            ))),
        }
    }
}

/// `?brandId=&cursor=&limit=` of a brand's list: the brand defaults to the caller's.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BrandPageQuery {
    /// The brand: the caller's when absent; an administrator must name one.
    #[param(value_type = Option<crate::domain::BrandId>)]
    pub brand_id: Option<String>,
    /// Where the page starts: the `nextCursor` of the previous page, unchanged.
    #[param(min_length = 1, pattern = "^[A-Za-z0-9_-]+$(?!\\n)")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl BrandPageQuery {
    /// The brand the caller lists, where the page starts and how long it is.
    pub fn resolve(
        &self,
        caller: &crate::auth::Caller,
    ) -> Result<(crate::domain::BrandId, Option<Cursor>, usize), ApiError> {
        let requested = self.brand_id.as_deref().map(parse_id).transpose()?;
        let brand = caller.acting_brand(requested, "query parameter brandId")?;
        let page = PageQuery {
            cursor: self.cursor.clone(),
            limit: self.limit,
        };
        Ok((brand, page.cursor()?, page.limit()?))
    }
}

/// The list response shape: `{ "items": [...], "nextCursor": "…" }`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListBody<T: Serialize> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T: Serialize> ListBody<T> {
    pub fn from_page<U>(page: Page<U>, f: impl FnMut(U) -> T) -> Self {
        ListBody {
            items: page.items.into_iter().map(f).collect(),
            next_cursor: page.next.map(|c| c.encode()),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The problem+json for unknown routes.
pub async fn not_found_fallback(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// The problem+json for a known route called with the wrong method.
pub async fn method_not_allowed_fallback(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not support this method", uri.path()),
    )
}

/// Parses a path segment into an id newtype, naming the field when it is wrong.
pub fn parse_id<T: std::str::FromStr<Err = DomainError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse::<T>().map_err(ApiError::from)
}

/// Longest request target accepted (414 beyond it).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes accepted, names and values together (431 beyond it).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses request targets and header sections beyond the limits, as problem+json.
async fn request_limits(request: Request, next: axum::middleware::Next) -> Response {
    let uri_len = request.uri().to_string().len();
    if uri_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {uri_len} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Adds what every served router needs: authentication, the body and header limits and
/// problem+json fallbacks. Apply once, to the router that is actually served (merging two
/// finished routers would give two fallbacks).
pub fn finish_router(
    router: axum::Router,
    auth: std::sync::Arc<crate::auth::Authenticator>,
    settings: &crate::Settings,
) -> axum::Router {
    router
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(auth))
        .layer(axum::Extension(std::sync::Arc::new(
            crate::auth::BrandLimiter::new(settings),
        )))
        .layer(axum::middleware::from_fn(request_limits))
}

/// What the HTTP routers share: the backend's ports and the rules webhook targets follow.
#[derive(Clone)]
pub struct ApiState {
    pub ports: crate::ports::Ports,
    pub egress: crate::egress::Egress,
    /// What dry runs estimate with (chunk size, write budget, workers).
    pub settings: crate::Settings,
    /// The live write rates of this process's workers (empty on Lambda).
    pub live_rates: crate::budget::LiveRates,
}

impl axum::extract::FromRef<ApiState> for crate::ports::Ports {
    fn from_ref(state: &ApiState) -> Self {
        state.ports.clone()
    }
}

impl From<crate::egress::EgressError> for ApiError {
    fn from(e: crate::egress::EgressError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// Names, addresses, descriptions (ECMA-262): no control character (U+0000–U+001F,
/// U+007F–U+009F), and at least one character that is neither control nor white space.
pub const TEXT_PATTERN: &str = concat!(
    r"^[^\u0000-\u001F\u007F-\u009F]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF]",
    r"[^\u0000-\u001F\u007F-\u009F]*$(?!\n)"
);

/// The schema of a text field of at most `max` characters (`checked_text`'s rules).
pub fn text_schema(max: usize) -> utoipa::openapi::Object {
    text_schema_of(max, utoipa::openapi::schema::Type::String.into())
}

/// [`text_schema`] for an optional field, where JSON `null` means the same as leaving it out.
pub fn nullable_text_schema(max: usize) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    text_schema_of(max, SchemaType::from_iter([Type::String, Type::Null]))
}

fn text_schema_of(
    max: usize,
    schema_type: utoipa::openapi::schema::SchemaType,
) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(schema_type)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(format!(
            "1 to {max} characters, not only white space, no control characters; kept without the white space at its ends"
        )))
        .build()
}

/// Text a client sends for a name, an address or a description: 1 to `max` characters as
/// sent, no control characters (NUL and friends), not only white space; kept without the
/// white space at its ends.
pub fn checked_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    bulklink_core::domain::checked_text(field, value, max).map_err(ApiError::bad_request)
}

/// Reads an optional whole number the way JSON Schema's `integer` means it: `25700` and
/// `25700.0` alike (serde's own `u32` refuses the second), refusing a fraction, a negative
/// number or one past `u32::MAX` with the value in the message.
pub fn optional_whole_number<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                .map(|f| f as u64)
        })
        .and_then(|n| u32::try_from(n).ok());
    whole.map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{number} is not a whole number from 0 to 4294967295"
        ))
    })
}

#[cfg(test)]
mod whole_number_tests {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::optional_whole_number")]
        n: Option<u32>,
    }

    fn read(json: &str) -> Result<Option<u32>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_whole_number_is_read_with_or_without_its_point_zero_and_nothing_else_is() {
        assert_eq!(read(r#"{"n": 25700}"#), Ok(Some(25_700)));
        assert_eq!(read(r#"{"n": 25700.0}"#), Ok(Some(25_700)));
        assert_eq!(read(r#"{}"#), Ok(None));
        assert_eq!(read(r#"{"n": null}"#), Ok(None));
        for bad in ["1.5", "-1", "4294967296", "\"3\""] {
            assert!(read(&format!(r#"{{"n": {bad}}}"#)).is_err(), "{bad}");
        }
    }
}
