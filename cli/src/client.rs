//! A small client for bulklink's HTTP API, used by the CLI commands, the demo and the bench.

use std::time::Duration;

use anyhow::{bail, Context};
use bulklink_core::domain::{JobId, OfferId};
use bulklink_http::views::JobView;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer …` on every request.
    token: Option<String>,
}

/// A response as received: status, `Location` header and JSON body (if any).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub location: Option<String>,
    pub content_type: Option<String>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub www_authenticate: Option<String>,
    /// The `Retry-After` of a 429 or 503, in seconds.
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl ApiResponse {
    /// The body as `T`, or an error that carries the problem+json detail.
    pub fn into_json<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        if !self.status.is_success() {
            bail!(
                "HTTP {}: {}",
                self.status,
                self.body["detail"].as_str().unwrap_or("(no detail)")
            );
        }
        serde_json::from_value(self.body).context("unexpected response body")
    }
}

impl ApiClient {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: None,
        })
    }

    /// The same client acting with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The same client acting with `token`, or with none.
    pub fn with_optional_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` is sent as JSON when present.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<ApiResponse> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header(reqwest::header::LOCATION);
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let www_authenticate = header(reqwest::header::WWW_AUTHENTICATE);
        let retry_after = header(reqwest::header::RETRY_AFTER).and_then(|v| v.parse().ok());
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(ApiResponse {
            status,
            location,
            content_type,
            www_authenticate,
            retry_after,
            body,
        })
    }

    /// Writes a finished job's whole report to `out` (CSV, or NDJSON), in parts of `limit`
    /// rows if given (else as the server sends it), following each part's
    /// `Link: rel="next"` (a CSV part after the first drops its header); the rows written.
    pub async fn report(
        &self,
        id: JobId,
        ndjson: bool,
        limit: Option<usize>,
        mut out: impl tokio::io::AsyncWrite + Unpin,
    ) -> anyhow::Result<u64> {
        use tokio::io::AsyncWriteExt;
        let accept = if ndjson {
            "application/x-ndjson"
        } else {
            "text/csv"
        };
        let mut path = match limit {
            Some(limit) => format!("/jobs/{id}/report?limit={limit}"),
            None => format!("/jobs/{id}/report"),
        };
        let mut rows = 0u64;
        let mut first = true;
        loop {
            let mut request = self
                .http
                .get(format!("{}{path}", self.base))
                .header(reqwest::header::ACCEPT, accept)
                // A report of a million rows takes a while to stream.
                .timeout(Duration::from_secs(3_600));
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let mut response = request
                .send()
                .await
                .with_context(|| format!("calling {path}"))?;
            if !response.status().is_success() {
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                bail!(
                    "HTTP {status}: {}",
                    body["detail"].as_str().unwrap_or("(no detail)")
                );
            }
            let next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            // Lines are counted as they pass; a CSV part's header is skipped after the first.
            let mut skip_header = !ndjson && !first;
            while let Some(bytes) = response.chunk().await? {
                let mut bytes = &bytes[..];
                if skip_header {
                    match bytes.iter().position(|b| *b == b'\n') {
                        Some(end) => {
                            bytes = &bytes[end + 1..];
                            skip_header = false;
                        }
                        None => continue,
                    }
                }
                rows += bytes.iter().filter(|b| **b == b'\n').count() as u64;
                out.write_all(bytes).await?;
            }
            if first && !ndjson {
                rows = rows.saturating_sub(1);
            }
            first = false;
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        out.flush().await?;
        Ok(rows)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path, None, &[]).await?.into_json()
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(Method::POST, path, Some(body), &[])
            .await?
            .into_json()
    }

    /// `POST /offers/{id}/link-all-locations`.
    pub async fn create_job(
        &self,
        offer: OfferId,
        idempotency_key: Option<&str>,
        callback_url: Option<&str>,
    ) -> anyhow::Result<JobView> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|key| vec![("idempotency-key", key)])
            .unwrap_or_default();
        let body = callback_url.map(|url| serde_json::json!({ "callbackUrl": url }));
        self.send(
            Method::POST,
            &format!("/offers/{offer}/link-all-locations"),
            body.as_ref(),
            &headers,
        )
        .await?
        .into_json()
    }

    pub async fn job(&self, id: JobId) -> anyhow::Result<JobView> {
        self.get(&format!("/jobs/{id}")).await
    }

    pub async fn cancel(&self, id: JobId) -> anyhow::Result<JobView> {
        self.send(Method::POST, &format!("/jobs/{id}/cancel"), None, &[])
            .await?
            .into_json()
    }

    pub async fn write_budget(&self) -> anyhow::Result<job_api::admin::WriteBudgetView> {
        self.get("/admin/write-budget").await
    }

    pub async fn set_write_budget(
        &self,
        writes_per_sec: f64,
    ) -> anyhow::Result<job_api::admin::WriteBudgetView> {
        self.send(
            Method::PUT,
            "/admin/write-budget",
            Some(&serde_json::json!({ "writesPerSec": writes_per_sec })),
            &[],
        )
        .await?
        .into_json()
    }

    pub async fn pause(&self, id: JobId) -> anyhow::Result<JobView> {
        self.send(Method::POST, &format!("/jobs/{id}/pause"), None, &[])
            .await?
            .into_json()
    }

    pub async fn resume(&self, id: JobId) -> anyhow::Result<JobView> {
        self.send(Method::POST, &format!("/jobs/{id}/resume"), None, &[])
            .await?
            .into_json()
    }

    /// `POST /imports` (`format`, `closeMissing`): the import, with its `uploadUrl`.
    pub async fn create_import(
        &self,
        format: &str,
        close_missing: bool,
    ) -> anyhow::Result<bulklink_http::views::ImportView> {
        self.post(
            "/imports",
            &serde_json::json!({ "format": format, "closeMissing": close_missing }),
        )
        .await
    }

    /// PUTs a file to an import's upload URL, as a client does: no bearer token (the URL is
    /// the authority; S3 refuses a second one). The answer's status and body.
    pub async fn upload(
        &self,
        url: &str,
        file: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let response = self
            .http
            .put(url)
            .body(file)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .context("uploading the file")?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Polls `GET /imports/{id}` until the file's arrival has made its job.
    pub async fn import_job(
        &self,
        id: bulklink_core::domain::ImportId,
        timeout: Duration,
    ) -> anyhow::Result<JobId> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let import: bulklink_http::views::ImportView =
                self.get(&format!("/imports/{id}")).await?;
            if let Some(job) = import.job_id {
                return Ok(job);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("import {id} is still {:?} after {timeout:?}", import.state);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until it is terminal, calling `progress` on every poll.
    pub async fn wait_terminal(
        &self,
        id: JobId,
        every: Duration,
        timeout: Duration,
        mut progress: impl FnMut(&JobView),
    ) -> anyhow::Result<JobView> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = self
                .send(Method::GET, &format!("/jobs/{id}"), None, &[])
                .await?;
            if answer.status == StatusCode::TOO_MANY_REQUESTS {
                // Over the brand's request rate: wait as long as the server says.
                let wait = answer.retry_after.unwrap_or(1).clamp(1, 60);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let job: JobView = answer.into_json()?;
            progress(&job);
            if job.status.is_terminal() {
                return Ok(job);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("job {id} is still {} after {timeout:?}", job.status);
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The target of a `Link` header's `rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}
