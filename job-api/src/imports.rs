//! Imports: `POST /imports` makes an upload (its URL, single-use, expiring) and the upload
//! starts the import job. On AWS the file goes straight to S3 (a presigned PUT) and the
//! bucket's event starts the job; on the embedded backend the URL is this server's own
//! `PUT /imports/{importId}/file?token=…`. Reading an import is a status route.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bulklink_core::domain::{
    read_header, BrandId, Import, ImportFormat, ImportId, ImportState, JobId, READ_WINDOW,
};
use bulklink_core::StoreError;
use bulklink_http::auth::Caller;
use bulklink_http::http::{parse_id, sha256_hex, ApiError, ApiState, JsonBody, Problem};
use bulklink_http::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, ServiceUnavailable, Unauthorized, UnsupportedMediaType,
};
use bulklink_http::views::ImportView;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

/// The body of `POST /imports`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "format": "csv", "closeMissing": false }))]
pub struct NewImport {
    /// How the file is written: `csv` (a header row naming some of `externalId`, `name`,
    /// `address`, `city`, `region`, `postcode`, `country`, `tags` (`;`-separated), `status`)
    /// or `ndjson` (one object a line, the same fields, `tags` an array).
    format: ImportFormat,
    /// Close the brand's active locations the file does not name (counted `closed`).
    #[serde(default)]
    close_missing: bool,
    /// The caller's brand when absent; an administrator must name it.
    #[serde(default)]
    brand_id: Option<BrandId>,
}
bulklink_core::json_object_only!(NewImport);

/// Make an import: where to upload the file, and until when.
///
/// The answer's `uploadUrl` takes one `PUT` of the file (any size up to the deployment's
/// limit; a million rows is well within it) until `expiresAt`; the file's arrival starts an
/// `import-locations` job, shown at `GET /imports/{importId}` (its `jobId`) and
/// `GET /jobs/{jobId}`. Each row is an upsert of the brand's location with that
/// `externalId`: counted `created`, `updated`, `unchanged` or `invalid` (a failure with its
/// line and reason, `GET /jobs/{jobId}/failures`); with `closeMissing`, active locations
/// the file does not name are closed (`closed`).
#[utoipa::path(
    post,
    path = "/imports",
    tag = "imports",
    operation_id = "createImport",
    request_body(content = NewImport, content_type = "application/json",
        example = json!({ "format": "csv", "closeMissing": false })),
    responses(
        (status = 201, description = "The import, waiting for its file at `uploadUrl`", body = ImportView,
         headers(("Location" = String, description = "`/imports/{importId}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
pub async fn create_import(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewImport>,
) -> Result<Response, ApiError> {
    let ports = &state.ports;
    let brand = caller.acting_brand(body.brand_id, "brandId")?;
    let now = ports.clock.now();
    let expiry = chrono::Duration::from_std(state.settings.import_upload_expiry)
        .map_err(|e| ApiError::from(StoreError::internal(e.to_string())))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let import = Import {
        id: ImportId::new_v7(),
        brand_id: brand,
        format: body.format,
        close_missing: body.close_missing,
        created_at: now,
        expires_at: now + expiry,
        job_id: JobId::new_v7(),
        started_at: None,
        token_hash: Some(sha256_hex(token.as_bytes())),
        principal: Some(caller.principal.clone()),
    };
    ports.imports.create_import(&import).await?;
    let url = ports.uploads.upload_url(&import, Some(&token)).await?;
    let mut view = ImportView::of(&import, now);
    view.upload_url = Some(absolute(&headers, url));
    info!(import_id = %import.id, brand_id = %brand, format = import.format.as_str(), principal = %caller.principal, "import made");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, view.location())],
        Json(view),
    )
        .into_response())
}

/// A URL the server serves itself (`/…`), made absolute with the origin the request came to.
fn absolute(headers: &HeaderMap, url: String) -> String {
    if !url.starts_with('/') {
        return url;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    match host {
        Some(host) => format!("{scheme}://{host}{url}"),
        None => url,
    }
}

/// `?token=` of an upload URL.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The upload's secret, as `uploadUrl` carries it.
    token: Option<String>,
}

/// Upload an import's file (the embedded backend's `uploadUrl`).
///
/// The URL's `token` is the authority: no bearer token. Single-use: once a file has been
/// taken, the URL answers 409; after `expiresAt`, 410. A file that is not an import's (its
/// first row says so: not CSV with a known header, not NDJSON) is refused with 422 and
/// nothing kept — the URL still works for the right file.
#[utoipa::path(
    put,
    path = "/imports/{importId}/file",
    tag = "imports",
    operation_id = "uploadImportFile",
    security(()),
    params(("importId" = ImportId, Path, description = "The import"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The file, as `format` says (CSV or NDJSON)"),
    responses(
        (status = 202, description = "The file is taken; the import's job has started", body = ImportView,
         headers(("Location" = String, description = "`/jobs/{jobId}`"))),
        (status = 400, response = BadRequest),
        (status = 403, description = "The token is not this import's", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such import", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "A file was taken already", content_type = "application/problem+json", body = Problem),
        (status = 410, description = "The upload URL has expired", content_type = "application/problem+json", body = Problem),
        (status = 413, response = PayloadTooLarge),
        (status = 422, description = "The file is not an import's (the reason names its line)", content_type = "application/problem+json", body = Problem),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn upload_file(
    State(state): State<ApiState>,
    Path(import_id): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ports = &state.ports;
    let id: ImportId = parse_id(&import_id)?;
    let missing = || ApiError::not_found(format!("import {id} does not exist"));
    let import = ports.imports.get_import(id).await?.ok_or_else(missing)?;
    let token_ok = match (import.token_hash.as_deref(), query.token.as_deref()) {
        (Some(hash), Some(token)) => same(hash, &sha256_hex(token.as_bytes())),
        _ => false,
    };
    if !token_ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token does not upload import {id}'s file"),
        ));
    }
    let now = ports.clock.now();
    match import.state(now) {
        ImportState::Started => {
            return Err(ApiError::conflict(format!(
                "import {id}'s file has arrived already: an upload URL is single-use"
            ))
            .with_location(format!("/imports/{id}")))
        }
        ImportState::Expired => {
            return Err(ApiError::new(
                StatusCode::GONE,
                format!(
                    "import {id}'s upload URL expired at {}: make a new import",
                    import.expires_at.to_rfc3339()
                ),
            ))
        }
        ImportState::Waiting => {}
    }
    let limit = state.settings.max_import_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let stream = body
        .into_data_stream()
        .map(|piece| piece.map(|b| b.to_vec()).map_err(|e| e.to_string()));
    let size = match ports.uploads.receive(id, Box::pin(stream), limit).await {
        Ok(size) => size,
        Err(StoreError::Invalid(detail)) if detail.contains("larger than") => {
            return Err(too_large(limit))
        }
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(format!(
                "import {id}'s file has arrived already: an upload URL is single-use"
            ))
            .with_location(format!("/imports/{id}")))
        }
        Err(e) => return Err(e.into()),
    };
    let first = ports.uploads.read(id, 0, READ_WINDOW.min(size)).await?;
    if let Err(reason) = read_header(import.format, &first, first.len() as u64 >= size) {
        ports.uploads.delete(id).await?;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the file is not a {} import: {reason}; nothing was imported",
                import.format.as_str()
            ),
        ));
    }
    let job = bulklink_core::uploads::start_import(ports, id)
        .await?
        .ok_or_else(missing)?;
    let import = ports.imports.get_import(id).await?.ok_or_else(missing)?;
    info!(import_id = %id, job_id = %job.id, bytes = size, "import file taken; its job starts");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/jobs/{}", job.id))],
        Json(ImportView::of(&import, ports.clock.now())),
    )
        .into_response())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the file is larger than {limit} bytes, the most an import takes: split it"),
    )
}

/// Compares two hashes in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}
