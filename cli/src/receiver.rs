//! A local webhook receiver that behaves as an SNS HTTP/S subscriber must: it confirms a
//! subscription by GETting the `SubscribeURL`, and hands each `Notification` on.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// One received SNS envelope, with the header that named its type.
#[derive(Clone, Debug)]
pub struct Received {
    pub message_type: String,
    pub envelope: Value,
}

impl Received {
    /// The event inside a `Notification` (its `Message`, parsed).
    pub fn event(&self) -> Option<Value> {
        serde_json::from_str(self.envelope["Message"].as_str()?).ok()
    }
}

pub struct Receiver {
    pub url: String,
    pub messages: mpsc::UnboundedReceiver<Received>,
    stop: watch::Sender<bool>,
}

#[derive(Clone)]
struct Ctx {
    tx: mpsc::UnboundedSender<Received>,
    http: reqwest::Client,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let (tx, messages) = mpsc::unbounded_channel();
        let ctx = Ctx {
            tx,
            http: reqwest::Client::new(),
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
            stop,
        })
    }

    /// The next `Notification`, skipping confirmations.
    pub async fn next_notification(&mut self) -> Option<Received> {
        while let Some(received) = self.messages.recv().await {
            if received.message_type == "Notification" {
                return Some(received);
            }
        }
        None
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn receive(State(ctx): State<Ctx>, headers: HeaderMap, body: String) -> StatusCode {
    let Ok(envelope) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    // SNS names the type in a header and in the envelope; emulators may send only the latter.
    let message_type = headers
        .get("x-amz-sns-message-type")
        .and_then(|v| v.to_str().ok())
        .or_else(|| envelope["Type"].as_str())
        .unwrap_or_default()
        .to_owned();
    if message_type == "SubscriptionConfirmation" {
        let Some(url) = envelope["SubscribeURL"].as_str() else {
            return StatusCode::BAD_REQUEST;
        };
        match ctx.http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => {}
            _ => return StatusCode::BAD_GATEWAY,
        }
    }
    let _ = ctx.tx.send(Received {
        message_type,
        envelope,
    });
    StatusCode::OK
}
