//! Tracing set-up shared by every binary, and CloudWatch Embedded Metric Format lines.
//! Logs are human-readable by default and JSON lines when `LOG_FORMAT=json` (what Lambda
//! and log pipelines want), each line carrying the fields of the spans it happened in
//! (`request_id`, `job_id`, `chunk_seq`). Filter with `RUST_LOG`.

use serde_json::{json, Map, Value};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

pub fn init(default_filter: &str) {
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    init_with(default_filter, json, std::io::stderr);
}

/// As `init`, writing to `writer`; `json` picks the JSON-lines format.
pub fn init_with<W>(default_filter: &str, json: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests, embedded use) is harmless: keep the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}

/// One metric of an EMF line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub value: f64,
    pub unit: &'a str,
}

impl<'a> Metric<'a> {
    pub fn count(name: &'a str, value: u64) -> Self {
        Metric {
            name,
            value: value as f64,
            unit: "Count",
        }
    }

    /// A rate (writes per second); unlimited is not a number and is left out.
    pub fn per_sec(name: &'a str, value: f64) -> Self {
        Metric {
            name,
            value,
            unit: "Count/Second",
        }
    }

    pub fn millis(name: &'a str, value: u64) -> Self {
        Metric {
            name,
            value: value as f64,
            unit: "Milliseconds",
        }
    }
}

/// A CloudWatch Embedded Metric Format line: printed to stdout in Lambda, CloudWatch turns it
/// into metrics in `namespace` with the given dimensions.
pub fn emf_line(namespace: &str, dimensions: &[(&str, &str)], metrics: &[Metric<'_>]) -> String {
    // CloudWatch takes the machine's time here (it refuses metrics far from its own).
    let timestamp = crate::clock::Clock::system().now_ms().max(0) as u64;
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics
                    .iter()
                    .map(|m| json!({ "Name": m.name, "Unit": m.unit }))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        root.insert((*name).into(), Value::from(*value));
    }
    for m in metrics {
        root.insert(m.name.into(), Value::from(m.value));
    }
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_every_metric_it_carries() {
        let line = emf_line(
            "bulklink",
            &[("Function", "worker")],
            &[
                Metric::count("Linked", 7),
                Metric::millis("ChunkDuration", 12),
            ],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        let declared = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "bulklink");
        assert_eq!(declared["Dimensions"][0][0], "Function");
        assert_eq!(declared["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(v["Function"], "worker");
        assert_eq!(v["Linked"], 7.0);
        assert!(v["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
