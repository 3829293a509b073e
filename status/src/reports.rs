//! `GET /jobs/{jobId}/report`: what became of every location a finished job touched, as CSV
//! or NDJSON, streamed a page at a time (`bulklink_core::reports`), so memory stays flat.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulklink_core::domain::{Job, JobId, ReportRow};
use bulklink_core::ports::{Cursor, Ports};
use bulklink_core::reports::{self, NoReport, ReportPage};
use bulklink_http::auth::Caller;
use bulklink_http::http::{parse_id, ApiError, ApiState, Problem, QueryParams};
use bulklink_http::openapi::{BadRequest, NotFound, Unauthorized};

/// Rows read and sent at a time.
const ROWS_PER_PAGE: usize = 2_000;
/// Most rows a `limit` may ask for.
const MAX_LIMIT: usize = 100_000;

pub const NDJSON: &str = "application/x-ndjson";
pub const CSV: &str = "text/csv; charset=utf-8";

/// `?cursor=&limit=` of a report.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Where this part begins: the `cursor` of the previous part's `Link: rel="next"`.
    #[param(min_length = 1, pattern = "^[A-Za-z0-9_-]+$(?!\\n)")]
    pub cursor: Option<String>,
    /// Most rows in this response, 1 to 100000 (default: the rest of the report, or the
    /// deployment's `REPORT_ROWS_PER_RESPONSE`); a `Link` names the next part.
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv { with_line: bool },
    Ndjson,
}

impl Format {
    fn of(headers: &HeaderMap, job: &Job) -> Self {
        let ndjson = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)));
        if ndjson {
            Format::Ndjson
        } else {
            Format::Csv {
                with_line: job.spec.action == bulklink_core::domain::Action::Import,
            }
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv { .. } => CSV,
            Format::Ndjson => NDJSON,
        }
    }

    fn write(self, rows: &[ReportRow], out: &mut String) {
        for row in rows {
            match self {
                Format::Csv { with_line } => out.push_str(&row.csv(with_line)),
                Format::Ndjson => {
                    out.push_str(&serde_json::to_string(row).unwrap_or_default());
                    out.push('\n');
                }
            }
        }
    }
}

/// A finished job's report: what became of each location it touched.
///
/// CSV columns `locationId,externalId,outcome,error,at` (an import's report adds `line`), one row per location (or row of its file) the job
/// accounted — exactly `counters.total` rows, whose outcomes count to the counters.
/// `text/csv` unless `Accept` names `application/x-ndjson`. Streamed whole, or in parts of
/// `limit` rows (or the deployment's `REPORT_ROWS_PER_RESPONSE`), each with a
/// `Link: <…?cursor=…>; rel="next"` while more remain.
#[utoipa::path(
    get,
    path = "/jobs/{jobId}/report",
    tag = "jobs",
    operation_id = "getJobReport",
    params(("jobId" = JobId, Path, description = "The job"), ReportQuery),
    responses(
        (status = 200, description = "The report (or a part of it: see `Link`)",
         headers(("Link" = String, description = "`<…/report?cursor=…>; rel=\"next\"` while more rows remain")),
         content(
             (String = "text/csv", example = "locationId,externalId,outcome,error,at\n0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011,S-1,linked,,2026-12-07T10:00:00.000Z\n"),
             (ReportRow = "application/x-ndjson"),
         )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, description = "The job has not finished (or was accounted by a release that kept no outcomes); `detail` says which",
         content_type = "application/problem+json", body = Problem),
    )
)]
pub async fn get_job_report(
    State(state): State<ApiState>,
    caller: Caller,
    Path(job_id): Path<String>,
    QueryParams(query): QueryParams<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&job_id)?;
    let cursor = match query.cursor.as_deref() {
        Some("") => return Err(ApiError::bad_request("cursor must not be empty")),
        Some(c) => Some(Cursor::decode(c)?),
        None => None,
    };
    let limit = match query.limit {
        Some(n) if !(1..=MAX_LIMIT).contains(&n) => {
            return Err(ApiError::bad_request(format!(
                "limit {n} is out of range 1..={MAX_LIMIT}"
            )))
        }
        Some(n) => Some(n),
        None => state.settings.report_rows_per_response,
    };
    let ports = state.ports.clone();
    let job = caller.visible_job(&ports, job_id).await?;
    let format = Format::of(&headers, &job);
    // The first page is read before answering, so that a refusal is a problem, not a
    // broken stream.
    let first_size = limit.unwrap_or(ROWS_PER_PAGE).min(ROWS_PER_PAGE);
    let first = reports::page(&ports, &job, cursor.as_ref(), first_size)
        .await?
        .map_err(|no| refusal(&no, &job))?;
    let mut head = String::new();
    if let Format::Csv { with_line } = format {
        head.push_str(ReportRow::csv_header(with_line));
    }
    let stream = Pages {
        ports,
        job,
        format,
        left: limit,
        first: Some(first),
        head,
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type());
    // With a limit, the part ends where the limit does: its `Link` must be known before the
    // body, so such a part is read whole first (at most `limit` rows).
    if let Some(limit) = limit {
        let (body, next) = stream.collect(limit).await?;
        if let Some(next) = next {
            let link = format!(
                "</jobs/{job_id}/report?cursor={}&limit={limit}>; rel=\"next\"",
                next.encode()
            );
            response = response.header(
                header::LINK,
                HeaderValue::from_str(&link)
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
            );
        }
        return response
            .body(Body::from(body))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    }
    response
        .body(Body::from_stream(stream.stream()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        .map(IntoResponse::into_response)
}

fn refusal(no: &NoReport, job: &Job) -> ApiError {
    ApiError::conflict(no.detail(job))
}

/// The report's pages, from the first (read already) on.
struct Pages {
    ports: Ports,
    job: Job,
    format: Format,
    /// Rows still to send in this response (`None`: all of them).
    left: Option<usize>,
    first: Option<ReportPage>,
    head: String,
}

impl Pages {
    /// The next page's text, and where the one after begins; `None` once done.
    async fn next(
        &mut self,
        after: Option<Cursor>,
    ) -> Result<Option<(String, Option<Cursor>)>, ApiError> {
        let page = match self.first.take() {
            Some(first) => first,
            None => {
                let Some(after) = after else {
                    return Ok(None);
                };
                let size = self.left.unwrap_or(ROWS_PER_PAGE).min(ROWS_PER_PAGE);
                if size == 0 {
                    return Ok(None);
                }
                reports::page(&self.ports, &self.job, Some(&after), size)
                    .await?
                    .map_err(|no| refusal(&no, &self.job))?
            }
        };
        if let Some(left) = &mut self.left {
            *left -= page.rows.len().min(*left);
        }
        let mut text = std::mem::take(&mut self.head);
        self.format.write(&page.rows, &mut text);
        Ok(Some((text, page.next)))
    }

    /// Reads up to `limit` rows whole: the body and where the next part begins.
    async fn collect(mut self, limit: usize) -> Result<(String, Option<Cursor>), ApiError> {
        self.left = Some(limit);
        let mut body = String::new();
        let mut after = None;
        loop {
            match self.next(after.clone()).await? {
                Some((text, next)) => {
                    body.push_str(&text);
                    after = next;
                    if after.is_none() || self.left == Some(0) {
                        return Ok((body, after));
                    }
                }
                None => return Ok((body, None)),
            }
        }
    }

    /// Streams every page; a failure on the way ends the stream with an error (the client
    /// sees a cut-off response, never a short report passed off as whole).
    fn stream(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures::stream::unfold(
            (self, None::<Cursor>, false),
            |(mut pages, after, done)| async move {
                if done {
                    return None;
                }
                match pages.next(after).await {
                    Ok(Some((text, next))) => {
                        let done = next.is_none();
                        Some((Ok(Bytes::from(text)), (pages, next, done)))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(detail = %e.detail, "a report's stream broke off");
                        Some((Err(std::io::Error::other(e.detail)), (pages, None, true)))
                    }
                }
            },
        )
    }
}
