//! A DynamoDB proxy in front of a local emulator that answers some requests as real
//! DynamoDB would under load: throttled (`ProvisionedThroughputExceededException`,
//! `ThrottlingException`) or late. `Capacity` models DynamoDB's per-partition write
//! capacity for it — the tests' and the bench's model of a hot key. Listens on 127.0.0.1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What the proxy does with one DynamoDB request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Answers with this error code, as DynamoDB throttling does.
    Throttle(&'static str),
    /// Forwards it after `LATE`.
    Late,
}

/// How late a late answer is: past an attempt timeout of a second.
pub const LATE: Duration = Duration::from_millis(1_500);

/// What to answer a DynamoDB request: its `X-Amz-Target`, its JSON body, and how many
/// DynamoDB requests came before it.
pub type Rule = Arc<dyn Fn(&str, &[u8], usize) -> Fault + Send + Sync>;

/// A running proxy: its URL and what it did.
#[derive(Clone)]
pub struct Proxy {
    pub url: String,
    pub seen: Arc<AtomicUsize>,
    pub throttled: Arc<AtomicUsize>,
    pub late: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Forwarder {
    upstream: String,
    http: reqwest::Client,
    rule: Rule,
    proxy: Proxy,
}

impl Proxy {
    /// A proxy to `upstream` (the emulator's endpoint) answering by `rule`; it serves until
    /// the runtime it was started on ends.
    pub async fn start(upstream: &str, rule: Rule) -> std::io::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Proxy {
            url: format!("http://{}", listener.local_addr()?),
            seen: Arc::default(),
            throttled: Arc::default(),
            late: Arc::default(),
        };
        let forwarder = Forwarder {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rule,
            proxy: proxy.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(forwarder);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the DynamoDB proxy stopped");
            }
        });
        Ok(proxy)
    }
}

async fn forward(
    State(f): State<Forwarder>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fault = if target.starts_with("DynamoDB_") {
        (f.rule)(&target, &body, f.proxy.seen.fetch_add(1, Ordering::SeqCst))
    } else {
        Fault::Pass
    };
    match fault {
        Fault::Throttle(code) => {
            f.proxy.throttled.fetch_add(1, Ordering::SeqCst);
            let body = format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected by the test proxy"}}"#
            );
            return (
                StatusCode::BAD_REQUEST,
                [
                    ("content-type", "application/x-amz-json-1.0"),
                    ("x-amzn-errortype", code),
                ],
                body,
            )
                .into_response();
        }
        Fault::Late => {
            f.proxy.late.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(LATE).await;
        }
        Fault::Pass => {}
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = f
        .http
        .request(method, format!("{}{path}", f.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let headers = upstream.headers().clone();
            let bytes = upstream.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// One write answer the capacity model gave.
#[derive(Clone, Debug)]
pub struct WriteAnswer {
    pub at: Instant,
    pub throttled: bool,
    /// Whether it wrote (or would have written) a link: a put of `LOC#…` under an
    /// `OFFER#…` key.
    pub link: bool,
}

/// DynamoDB's capacity, scaled down for the emulator: every partition key takes
/// `per_key` writes a second (a token bucket per `pk`, a second's worth deep). A write
/// request that touches a key with no token left is throttled whole, as DynamoDB throttles
/// a hot partition. Each write answer is recorded with when it was given.
pub struct Capacity {
    per_key: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    log: Mutex<Vec<WriteAnswer>>,
}

const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

impl Capacity {
    pub fn new(per_key: f64) -> Arc<Self> {
        Arc::new(Capacity {
            per_key,
            buckets: Default::default(),
            log: Default::default(),
        })
    }

    /// The proxy rule of this model.
    pub fn rule(self: &Arc<Self>) -> Rule {
        let model = self.clone();
        Arc::new(move |target: &str, body: &[u8], _| model.answer(target, body))
    }

    /// Every `(pk, sk)` a request names (`sk` empty where it names none).
    fn keys(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(pk) = map
                    .get("pk")
                    .and_then(|v| v.get("S"))
                    .and_then(|s| s.as_str())
                {
                    let sk = map
                        .get("sk")
                        .and_then(|v| v.get("S"))
                        .and_then(|s| s.as_str())
                        .unwrap_or_default();
                    out.push((pk.to_owned(), sk.to_owned()));
                    return;
                }
                map.values().for_each(|v| Self::keys(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| Self::keys(v, out)),
            _ => {}
        }
    }

    pub fn answer(&self, target: &str, body: &[u8]) -> Fault {
        let write = WRITES.iter().any(|op| target.ends_with(&format!(".{op}")));
        if !write {
            return Fault::Pass;
        }
        let mut keys = Vec::new();
        Self::keys(&serde_json::from_slice(body).unwrap_or_default(), &mut keys);
        let link = keys
            .iter()
            .any(|(pk, sk)| pk.starts_with("OFFER#") && sk.starts_with("LOC#"));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut fill = |key: &String| {
            let (tokens, at) = buckets.entry(key.clone()).or_insert((self.per_key, now));
            *tokens = (*tokens + (now - *at).as_secs_f64() * self.per_key).min(self.per_key);
            *at = now;
            *tokens
        };
        let throttled = keys.iter().any(|(pk, _)| fill(pk) < 1.0);
        if !throttled {
            for (pk, _) in &keys {
                if let Some(bucket) = buckets.get_mut(pk) {
                    bucket.0 -= 1.0;
                }
            }
        }
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(WriteAnswer {
                at: now,
                throttled,
                link,
            });
        if throttled {
            Fault::Throttle("ProvisionedThroughputExceededException")
        } else {
            Fault::Pass
        }
    }

    /// The write answers given since `since`, in order.
    pub fn answers_since(&self, since: Instant) -> Vec<WriteAnswer> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| a.at >= since)
            .cloned()
            .collect()
    }
}

/// (throttled, all) of `answers`.
pub fn throttled_share(answers: &[WriteAnswer]) -> (usize, usize) {
    (
        answers.iter().filter(|a| a.throttled).count(),
        answers.len(),
    )
}

/// The answers from the first throttled one on (the budget's first meeting with the
/// capacity).
pub fn from_first_throttle(answers: &[WriteAnswer]) -> &[WriteAnswer] {
    let met = answers
        .iter()
        .position(|a| a.throttled)
        .unwrap_or(answers.len());
    &answers[met..]
}
