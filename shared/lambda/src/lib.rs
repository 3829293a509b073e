//! What the Lambda functions share: their setup from the environment (settings, AWS
//! clients, the ports), the init-error report, and for the SQS-triggered ones reading an
//! event's records as queue messages, the partial batch response, the invocation's deadline
//! and the one policy for a message that fails.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod consumer;

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use tokio::time::Instant;

// The core's modules, under the paths this crate's code names them by.
use bulklink_aws::{AwsClients, AwsNames};
use bulklink_core::config::SettingsError;
use bulklink_core::{clock, ports, telemetry, Settings};

use crate::ports::{Ports, ReceivedMessage};

pub use consumer::{handle_event, run_lambda, run_queue_loop, Consumer};

/// What every Lambda function builds once at start from the environment Terraform sets:
/// settings, the AWS clients and the backend's ports. Logs are JSON lines
/// (`LOG_FORMAT=json` in Lambda).
pub struct LambdaSetup {
    pub settings: Settings,
    pub clients: AwsClients,
    pub ports: Ports,
}

impl LambdaSetup {
    pub async fn from_env() -> Result<Self, SettingsError> {
        let settings = Settings::from_env()?;
        let names = AwsNames::from_env()?;
        let clients = AwsClients::load(None).await;
        let ports = bulklink_aws::ports(
            &clients,
            &names,
            clock::Clock::system(),
            settings.link_shards,
        );
        Ok(LambdaSetup {
            settings,
            clients,
            ports,
        })
    }

    /// `from_env` for a function's init: an invalid setting ends it (see [`or_fail_init`]).
    pub async fn init() -> Self {
        telemetry::init("info");
        or_fail_init(Self::from_env().await).await
    }
}

/// The value of a function's init step, or — on an invalid setting — one JSON log line that
/// names it, the reason reported to the Runtime API's init-error endpoint, and the end of
/// the process (AWS then shows the reason instead of a bare `Runtime.ExitError`).
pub async fn or_fail_init<T>(step: Result<T, SettingsError>) -> T {
    match step {
        Ok(value) => value,
        Err(e) => fail_init(&e).await,
    }
}

/// An SQS record without a message id cannot be reported alone: the whole batch must fail.
#[derive(Debug, thiserror::Error)]
#[error("SQS record {index} has no messageId; failing the batch so every record is retried")]
pub struct RecordWithoutId {
    pub index: usize,
}

/// The event's records as queue messages. A record without a body stays in: it fails alone
/// as a malformed message.
pub fn received_messages(event: SqsEvent) -> Result<Vec<ReceivedMessage>, RecordWithoutId> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let message_id = record
                .message_id
                .filter(|id| !id.is_empty())
                .ok_or(RecordWithoutId { index })?;
            Ok(ReceivedMessage {
                message_id,
                receipt: record.receipt_handle.unwrap_or_default(),
                body: record.body.unwrap_or_default(),
                receive_count: record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
        })
        .collect()
}

/// A partial batch response naming `failed` message ids (and no others).
pub fn batch_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// The invocation's deadline (milliseconds since the epoch, from the Lambda context) as an
/// `Instant` of this process.
pub fn deadline_instant(deadline_ms: u64) -> Instant {
    // The deadline is the Lambda service's reading of the machine's time.
    let now_ms = crate::clock::Clock::system().now_ms().max(0) as u64;
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Ends a function's init on an invalid setting: one JSON log line naming it, the reason
/// posted to the Runtime API's init-error endpoint, then exit.
pub async fn fail_init(e: &SettingsError) -> ! {
    tracing::error!(
        setting = e.name,
        value = %e.value,
        why = e.why,
        "invalid setting; the function cannot start"
    );
    if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
        let body = serde_json::json!({
            "errorMessage": e.to_string(),
            "errorType": "InvalidSetting",
            "stackTrace": [],
        });
        let report = tokio::time::timeout(
            Duration::from_secs(2),
            post_init_error(&api, &body.to_string()),
        )
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        if let Err(err) = report {
            tracing::error!(error = %err, "could not report the init error to the Runtime API");
        }
    }
    std::process::exit(1)
}

/// Posts an init error to the Runtime API (`host:port`, plain HTTP/1.1 on the sandbox's
/// loopback). Written out by hand so the functions need no HTTP client library for one
/// request; the answer must be a 2xx.
async fn post_init_error(api: &str, body: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(api).await?;
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.InvalidSetting\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status_line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = String::from_utf8_lossy(status_line);
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(std::io::Error::other(format!(
            "the Runtime API answered {:?}",
            status.trim_end()
        ))),
    }
}

/// How a consumer's handling of one queue message failed.
pub enum Failure<'a> {
    /// The body can never decode: not JSON, or not this queue's message.
    Undecodable(&'a dyn std::fmt::Display),
    /// Anything else (the store, a timeout): the next delivery may succeed.
    Passing(&'a dyn std::fmt::Display),
}

/// The one policy for a message whose handling failed, for every queue consumer (fanout,
/// worker, webhooks) on Lambda and in `serve`: the message stays on its queue — reported in
/// `batchItemFailures` on Lambda, not deleted locally — so the queue delivers it again, and
/// after `maxReceiveCount` deliveries the queue's redrive policy moves it to its dead-letter
/// queue, where the DLQ alarm fires. A message that can never decode goes the same way and
/// is logged at error level: it is never dropped (what was sent stays for whoever looks into
/// it) and never acted on. The caller reports or keeps the message; this logs why.
pub fn leave_for_redelivery(consumer: &str, message: &ReceivedMessage, failure: Failure<'_>) {
    match failure {
        Failure::Undecodable(e) => tracing::error!(
            consumer,
            message_id = %message.message_id,
            receive_count = message.receive_count,
            error = %e,
            "undecodable message: left for the dead-letter queue"
        ),
        Failure::Passing(e) => tracing::warn!(
            consumer,
            message_id = %message.message_id,
            receive_count = message.receive_count,
            error = %e,
            "message failed; it will be delivered again"
        ),
    }
}
