//! A local webhook receiver on loopback, as a bulklink user would write one: it checks each
//! delivery's Standard Webhooks signature with the subscription's secret, keeps what it got,
//! and answers with the status its `answer` function picks (200 by default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bulklink_core::domain::{VerifyError, WebhookSecret};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// One delivery as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The signature check against the secrets the receiver knew at that moment.
    pub verified: Result<(), VerifyError>,
    /// 1 for the first request this receiver got.
    pub nth: u32,
    /// What the receiver answered.
    pub answered: u16,
    /// When it arrived (this machine's monotonic clock).
    pub arrived: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `webhook-id`: the same on every attempt of one delivery.
    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    /// The whole payload `{ type, timestamp, data }`.
    pub fn payload(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The event: the payload's `data`.
    pub fn event(&self) -> Option<Value> {
        Some(self.payload()?.get("data")?.clone())
    }

    /// Checks the signature against `secrets`, as a receiver does.
    pub fn verify_with(&self, secrets: &[&WebhookSecret]) -> Result<(), VerifyError> {
        bulklink_core::domain::verify(
            secrets,
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            self.header("webhook-signature"),
            &self.body,
            // A receiver checks the timestamp against its own machine's time.
            bulklink_core::Clock::system().now(),
        )
    }
}

/// Picks the answer to the `nth` request.
pub type Answer = Arc<dyn Fn(u32) -> u16 + Send + Sync>;

pub struct Receiver {
    pub url: String,
    pub messages: mpsc::UnboundedReceiver<Received>,
    secrets: Arc<Mutex<Vec<WebhookSecret>>>,
    stop: watch::Sender<bool>,
}

#[derive(Clone)]
struct Ctx {
    tx: mpsc::UnboundedSender<Received>,
    secrets: Arc<Mutex<Vec<WebhookSecret>>>,
    answer: Answer,
    count: Arc<AtomicU32>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> anyhow::Result<Receiver> {
        Self::start_with(Arc::new(|_| 200)).await
    }

    pub async fn start_with(answer: Answer) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let (tx, messages) = mpsc::unbounded_channel();
        let secrets = Arc::new(Mutex::new(Vec::new()));
        let ctx = Ctx {
            tx,
            secrets: secrets.clone(),
            answer,
            count: Arc::new(AtomicU32::new(0)),
        };
        let app = Router::new().route("/hook", post(receive)).with_state(ctx);
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Receiver {
            url,
            messages,
            secrets,
            stop,
        })
    }

    /// Trusts `secret` from now on (beside any it already trusts).
    pub fn trust(&self, secret: &str) -> anyhow::Result<()> {
        let secret: WebhookSecret = secret.parse()?;
        self.secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(secret);
        Ok(())
    }

    /// The next delivery.
    pub async fn next(&mut self) -> Option<Received> {
        self.messages.recv().await
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn receive(State(ctx): State<Ctx>, headers: HeaderMap, body: String) -> StatusCode {
    let arrived = std::time::Instant::now();
    let nth = ctx.count.fetch_add(1, Ordering::SeqCst) + 1;
    let headers: HashMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let secrets = ctx
        .secrets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let get = |name: &str| headers.get(name).map(String::as_str);
    let verified = bulklink_core::domain::verify(
        &secrets.iter().collect::<Vec<_>>(),
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
        &body,
        bulklink_core::Clock::system().now(),
    );
    let answered = (ctx.answer)(nth);
    let _ = ctx.tx.send(Received {
        headers,
        body,
        verified,
        nth,
        answered,
        arrived,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

/// Arrivals counted by the second: per whole second from the first arrival, and the most
/// in any 1-s window starting at an arrival (what a receiver limiting itself would see).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    pub per_second: Vec<usize>,
    pub most_in_any_second: usize,
}

impl Windows {
    pub fn of(arrivals: &[std::time::Instant]) -> Windows {
        let mut sorted = arrivals.to_vec();
        sorted.sort();
        let Some(first) = sorted.first().copied() else {
            return Windows {
                per_second: Vec::new(),
                most_in_any_second: 0,
            };
        };
        let mut per_second = Vec::new();
        for at in &sorted {
            let second = (*at - first).as_secs() as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
        let one = std::time::Duration::from_secs(1);
        let most_in_any_second = sorted
            .iter()
            .enumerate()
            .map(|(i, start)| {
                sorted[i..]
                    .iter()
                    .take_while(|at| **at - *start < one)
                    .count()
            })
            .max()
            .unwrap_or(0);
        Windows {
            per_second,
            most_in_any_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Windows;

    #[test]
    fn windows_count_each_second_and_the_busiest_sliding_one() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let w = Windows::of(&[at(0), at(600), at(900), at(1_100), at(1_950), at(3_000)]);
        assert_eq!(w.per_second, vec![3, 2, 0, 1]);
        // [600, 1600) holds 600, 900 and 1100; [900, 1900) the same; none holds four.
        assert_eq!(w.most_in_any_second, 3);
        assert_eq!(Windows::of(&[]).most_in_any_second, 0);
    }
}
