//! A stand-in for the Lambda Runtime API on loopback, enough to run the real function
//! binaries: it hands out queued events (with a real `Lambda-Runtime-Deadline-Ms`),
//! collects their responses and errors, and records init errors.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::Notify;

/// How one invocation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error(Value),
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<(String, Value, Duration)>,
    outcomes: HashMap<String, Outcome>,
    init_errors: Vec<(Option<String>, Value)>,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Shared,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let shared = Shared::default();
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RuntimeApi { addr, shared }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for a function run against this stand-in.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an event; the function gets `timeout` until its deadline. Returns the request id.
    pub fn invoke(&self, event: Value, timeout: Duration) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.shared
            .inner
            .lock()
            .unwrap()
            .queue
            .push_back((id.clone(), event, timeout));
        self.shared.changed.notify_waiters();
        id
    }

    /// How the invocation ended, waiting up to `wait`; `None` if it did not end.
    pub async fn outcome(&self, id: &str, wait: Duration) -> Option<Outcome> {
        self.wait_for(wait, |inner| inner.outcomes.get(id).cloned())
            .await
    }

    /// The first init error reported: its error-type header and body.
    pub async fn init_error(&self, wait: Duration) -> Option<(Option<String>, Value)> {
        self.wait_for(wait, |inner| inner.init_errors.first().cloned())
            .await
    }

    async fn wait_for<T>(
        &self,
        wait: Duration,
        mut f: impl FnMut(&Inner) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = f(&self.shared.inner.lock().unwrap()) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

async fn next(State(shared): State<Shared>) -> Response {
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let queued = shared.inner.lock().unwrap().queue.pop_front();
        if let Some((id, event, timeout)) = queued {
            let deadline = chrono::Utc::now().timestamp_millis() + timeout.as_millis() as i64;
            let mut headers = HeaderMap::new();
            let mut set = |name: &'static str, value: String| {
                headers.insert(name, HeaderValue::from_str(&value).unwrap());
            };
            set("lambda-runtime-aws-request-id", id);
            set("lambda-runtime-deadline-ms", deadline.to_string());
            set(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:bulklink-test".into(),
            );
            set(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
            );
            return (StatusCode::OK, headers, Json(event)).into_response();
        }
        changed.await;
    }
}

async fn respond(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    // The runtime client sends no JSON content type.
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    shared
        .inner
        .lock()
        .unwrap()
        .outcomes
        .insert(id, Outcome::Response(body));
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn fail(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    shared
        .inner
        .lock()
        .unwrap()
        .outcomes
        .insert(id, Outcome::Error(body));
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let kind = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    shared.inner.lock().unwrap().init_errors.push((kind, body));
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

/// A Lambda function binary of this workspace, built beside the test binary
/// (`cargo build --workspace --bins`, which `scripts/test.sh` runs first).
pub fn function_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the functions first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}
