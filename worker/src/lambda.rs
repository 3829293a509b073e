//! The worker as a Lambda function: an SQS batch in, the ids of the messages that failed out
//! (`ReportBatchItemFailures`). Each record is handled on its own, so a malformed one is
//! reported alone; records that the invocation's deadline leaves no time for are reported
//! failed without being started, and SQS redelivers them.

use std::io::Write;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use bulklink_core::telemetry::{emf_line, Metric};
use bulklink_lambda::{deadline_instant, RecordWithoutId};
use tracing::Instrument;

use crate::{ChunkConsumer, ChunkProcessor, ChunkReport, Handled, Source};

/// The Lambda function: the SQS consumer of the chunk queue, or of the chunk DLQ when
/// `WORKER_SOURCE=dead-letters`.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let source = match std::env::var("WORKER_SOURCE").as_deref() {
        Ok("dead-letters") => Source::DeadLetters,
        Ok("chunks") | Err(_) => Source::Chunks,
        Ok(other) => {
            return Err(format!("WORKER_SOURCE={other:?}: use chunks or dead-letters").into())
        }
    };
    let counter = setup.clients.counter.clone();
    let throttles = setup.clients.counter.clone();
    let processor = ChunkProcessor::new(setup.ports, &setup.settings)
        .with_retry_probe(std::sync::Arc::new(move || counter.retries()))
        .with_throttle_probe(std::sync::Arc::new(move || throttles.throttles()));
    bulklink_lambda::run_lambda(ChunkConsumer { processor, source }, move |handled| {
        write_metrics(source, handled, &mut std::io::stdout())
    })
    .await
}

/// One invocation as the Lambda runtime makes it: every log line of it carries the
/// request id, and it ends before the context's deadline. Writes one CloudWatch Embedded
/// Metric Format line per handled chunk to `metrics`.
pub async fn invoke(
    processor: &ChunkProcessor,
    source: Source,
    event: lambda_runtime::LambdaEvent<SqsEvent>,
    metrics: &mut impl Write,
) -> Result<SqsBatchResponse, RecordWithoutId> {
    let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
    let deadline = deadline_instant(event.context.deadline);
    let consumer = ChunkConsumer { processor, source };
    let (handled, response) =
        bulklink_lambda::handle_event(&consumer, event.payload, Some(deadline))
            .instrument(span)
            .await?;
    write_metrics(source, &handled, metrics);
    Ok(response)
}

/// One metrics line per handled chunk.
fn write_metrics(source: Source, handled: &[Handled], metrics: &mut impl Write) {
    for chunk in handled {
        let line = chunk_metrics(
            source,
            &chunk.report,
            chunk.sdk_retries,
            chunk.write_rate,
            chunk.duration,
        );
        let _ = writeln!(metrics, "{line}");
    }
}

/// The per-chunk metrics line (EMF): counts, SDK retries (throttling and timeouts), the
/// instance's write rate now (when limited), duration. The chunk DLQ consumer's lines carry
/// `Function = worker-dlq`.
pub fn chunk_metrics(
    source: Source,
    report: &ChunkReport,
    sdk_retries: u64,
    write_rate: Option<f64>,
    duration: Duration,
) -> String {
    let counts = match report {
        ChunkReport::Recorded { counts, .. } => *counts,
        ChunkReport::Duplicate { .. }
        | ChunkReport::JobGone { .. }
        | ChunkReport::Parked { .. } => Default::default(),
    };
    let duplicate = matches!(report, ChunkReport::Duplicate { .. });
    let parked = matches!(report, ChunkReport::Parked { .. });
    let function = match source {
        Source::Chunks => "worker",
        Source::DeadLetters => "worker-dlq",
    };
    let mut metrics = vec![
        Metric::count("Linked", counts.linked.into()),
        Metric::count("AlreadyLinked", counts.already_linked.into()),
        Metric::count("NotFound", counts.not_found.into()),
        Metric::count("Failed", counts.failed.into()),
        Metric::count("Cancelled", counts.cancelled.into()),
        Metric::count("DuplicateDeliveries", u64::from(duplicate)),
        Metric::count("ParkedChunks", u64::from(parked)),
        Metric::count("ThrottledRetries", sdk_retries),
        Metric::millis("ChunkDuration", duration.as_millis() as u64),
    ];
    if let Some(rate) = write_rate {
        metrics.push(Metric::per_sec("WriteRatePerSec", rate));
    }
    emf_line("bulklink", &[("Function", function)], &metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(source: Source, rate: Option<f64>) -> serde_json::Value {
        let report = ChunkReport::Parked {
            job_id: bulklink_core::domain::JobId::new_v7(),
        };
        serde_json::from_str(&chunk_metrics(
            source,
            &report,
            0,
            rate,
            Duration::from_millis(3),
        ))
        .unwrap()
    }

    #[test]
    fn the_dead_letter_consumer_reports_under_its_own_function_with_its_write_rate() {
        let chunks = line(Source::Chunks, Some(250.0));
        assert_eq!(chunks["Function"], "worker");
        assert_eq!(chunks["WriteRatePerSec"], 250.0);
        assert_eq!(chunks["ParkedChunks"], 1.0);
        let dead = line(Source::DeadLetters, None);
        assert_eq!(dead["Function"], "worker-dlq");
        // Unlimited: no rate to report.
        assert!(dead.get("WriteRatePerSec").is_none(), "{dead}");
    }
}
