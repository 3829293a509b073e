//! Dry runs: what a job would do, how long it would take at the current write budget and
//! what it would cost on AWS at list prices — without writing anything.
//!
//! The request model is the one `bulklink bench --backend aws` measures (docs/benchmarks.md,
//! "AWS request economy"): per location two catalog writes (link: the Link put and the
//! location update; unlink: the link mark and the location update, a third when the location
//! is left without offers, not counted); per chunk one ledger transaction of up to three
//! items (two write units each), two job reads, one receive and one delete; sends in batches
//! of ten.

use serde::Serialize;

use crate::domain::JobKind;
use crate::Settings;

/// List prices, us-east-1, on-demand, in USD. One table, each figure with its source; the
/// date is when they were read from those pages.
pub struct Prices {
    /// DynamoDB on-demand, per million write request units
    /// (<https://aws.amazon.com/dynamodb/pricing/on-demand/>).
    pub dynamodb_per_million_writes: f64,
    /// DynamoDB on-demand, per million read request units (same page).
    pub dynamodb_per_million_reads: f64,
    /// SQS standard queues, per million requests beyond the free tier
    /// (<https://aws.amazon.com/sqs/pricing/>).
    pub sqs_per_million_requests: f64,
    /// Lambda, per million requests (<https://aws.amazon.com/lambda/pricing/>).
    pub lambda_per_million_requests: f64,
    /// Lambda x86, per GB-second of duration (same page).
    pub lambda_per_gb_second: f64,
    pub currency: &'static str,
    pub as_of: &'static str,
}

pub const LIST_PRICES: Prices = Prices {
    dynamodb_per_million_writes: 0.625,
    dynamodb_per_million_reads: 0.125,
    sqs_per_million_requests: 0.40,
    lambda_per_million_requests: 0.20,
    lambda_per_gb_second: 0.000_016_666_7,
    currency: "USD",
    as_of: "2024-11-01",
};

/// Catalog writes per location (both actions; see the module comment). The worker's write
/// budget spends this many per location too.
pub const WRITES_PER_LOCATION: u32 = 2;
/// Write units of one chunk's ledger transaction: three items, two units each.
const LEDGER_WRITE_UNITS_PER_CHUNK: u64 = 6;
/// Strongly consistent job reads per chunk (before and after the ledger).
const READS_PER_CHUNK: u64 = 2;
/// SQS requests per chunk: a tenth of a batch send, a receive and a delete.
const SQS_REQUESTS_PER_CHUNK: f64 = 2.1;
/// The worker function's memory (Terraform's `worker_memory_mb` default).
const WORKER_MEMORY_GB: f64 = 0.25;
/// Catalog writes one worker instance gets through per second without a budget (16 writes
/// in flight at about 10 ms each, measured against DynamoDB-compatible endpoints); only
/// for the Lambda duration when no budget bounds it.
const UNBOUNDED_WRITES_PER_WORKER_SEC: f64 = 1_000.0;

/// Locations/s the links of one offer's partition take on DynamoDB: 1,000 WRU/s, a Link
/// put each, and for an offer of one partition the ledger's `ADD` (2 WRU a chunk of 100)
/// beside them (docs/scaling.md).
const LOCATIONS_PER_LINK_PARTITION: f64 = 980.0;
/// Chunks/s one job's ledger takes: one transaction a chunk on the job and offer items,
/// about 65 a second before they overlap (docs/scaling.md, "Sharded links").
const LEDGER_CHUNKS_PER_SEC: f64 = 65.0;

/// The most locations/s one job of an offer whose links are spread over `link_shards`
/// partitions can write on DynamoDB in chunks of `chunk_size`, whatever the budget: the
/// least of its link partitions and its ledger.
pub fn table_ceiling(link_shards: u16, chunk_size: usize) -> f64 {
    let links = f64::from(link_shards.max(1)) * LOCATIONS_PER_LINK_PARTITION;
    links.min(LEDGER_CHUNKS_PER_SEC * chunk_size.max(1) as f64)
}

/// The estimated AWS cost of a job.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub dynamodb: f64,
    pub sqs: f64,
    pub lambda: f64,
    pub total: f64,
    /// ISO 4217.
    #[cfg_attr(feature = "openapi", schema(example = "USD"))]
    pub currency: String,
    /// When the list prices were read (`docs/architecture.md`, "Dry runs").
    #[cfg_attr(feature = "openapi", schema(example = "2024-11-01"))]
    pub prices_as_of: String,
}

/// What a job would do: the answer to a `dryRun=true` request. Nothing was written.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub kind: JobKind,
    /// Exactly the ids the job would act on now.
    pub locations: u64,
    pub chunks: u64,
    /// Catalog writes (DynamoDB write requests of the action; the ledger's are in the cost).
    pub writes: u64,
    /// At the current write budget and what the table takes of one job (its offer's link
    /// partitions, at the deployment's `LINK_SHARDS`; its ledger); absent when there is no
    /// budget (writes are then unbounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<f64>,
    pub estimated_cost: Cost,
}

/// The dry run of a job of `kind` over `locations` ids under `settings`.
pub fn estimate(kind: JobKind, locations: u64, settings: &Settings) -> DryRun {
    let p = &LIST_PRICES;
    let chunks = locations.div_ceil(settings.chunk_size.max(1) as u64);
    let writes = locations * u64::from(WRITES_PER_LOCATION);
    let ceiling = table_ceiling(settings.link_shards, settings.chunk_size);
    let estimated_seconds = settings
        .write_budget_per_sec
        .filter(|b| *b > 0.0)
        .map(|budget| {
            let per_sec = (budget / f64::from(WRITES_PER_LOCATION)).min(ceiling);
            round(locations as f64 / per_sec)
        });
    let write_units = writes + chunks * LEDGER_WRITE_UNITS_PER_CHUNK;
    let dynamodb = (write_units as f64 * p.dynamodb_per_million_writes
        + (chunks * READS_PER_CHUNK) as f64 * p.dynamodb_per_million_reads)
        / 1e6;
    let sqs = chunks as f64 * SQS_REQUESTS_PER_CHUNK * p.sqs_per_million_requests / 1e6;
    let per_worker = settings
        .per_worker_write_budget()
        .filter(|b| *b > 0.0)
        .unwrap_or(UNBOUNDED_WRITES_PER_WORKER_SEC);
    let gb_seconds = writes as f64 / per_worker * WORKER_MEMORY_GB;
    let lambda =
        (chunks as f64 * p.lambda_per_million_requests) / 1e6 + gb_seconds * p.lambda_per_gb_second;
    let micro = |usd: f64| (usd * 1e6).round() / 1e6;
    DryRun {
        kind,
        locations,
        chunks,
        writes,
        estimated_seconds,
        estimated_cost: Cost {
            dynamodb: micro(dynamodb),
            sqs: micro(sqs),
            lambda: micro(lambda),
            total: micro(dynamodb + sqs + lambda),
            currency: p.currency.to_owned(),
            prices_as_of: p.as_of.to_owned(),
        },
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_locations_cost_what_the_table_says() {
        let settings = Settings {
            chunk_size: 100,
            write_budget_per_sec: Some(2_000.0),
            worker_concurrency: 4,
            ..Settings::default()
        };
        let run = estimate(JobKind::LinkAllLocations, 1_000_000, &settings);
        assert_eq!((run.chunks, run.writes), (10_000, 2_000_000));
        assert_eq!(run.estimated_seconds, Some(1_000.0));
        // 2.06 M write units at $0.625/M, 20,000 reads at $0.125/M.
        assert_eq!(run.estimated_cost.dynamodb, 1.29);
        assert_eq!(run.estimated_cost.sqs, 0.0084);
        // 10,000 invocations, 4,000 worker-seconds at 0.25 GB.
        assert_eq!(run.estimated_cost.lambda, 0.018667);
        let c = &run.estimated_cost;
        assert!((c.total - (c.dynamodb + c.sqs + c.lambda)).abs() < 1e-6);
    }

    #[test]
    fn a_budget_past_what_the_table_takes_of_one_job_is_paced_by_the_table() {
        let at = |budget: f64, link_shards: u16| {
            let settings = Settings {
                write_budget_per_sec: Some(budget),
                link_shards,
                ..Settings::default()
            };
            estimate(JobKind::LinkAllLocations, 1_000_000, &settings).estimated_seconds
        };
        // One partition: 980 locations/s however large the budget.
        assert_eq!(at(20_000.0, 1), Some(1_020.41));
        // Eight in chunks of 100: the ledger's 6,500 first — 2 min 34 s for a million.
        assert_eq!(at(20_000.0, 8), Some(153.85));
        assert_eq!(at(13_000.0, 8), Some(153.85));
        // Under the ceilings, the budget paces it.
        assert_eq!(at(1_000.0, 8), Some(2_000.0));
        assert_eq!(table_ceiling(4, 100), 3_920.0);
        // In chunks of 200 the ledger takes 13,000: the eight shards' 7,840 bind.
        assert_eq!(table_ceiling(8, 200), 7_840.0);
        assert_eq!(table_ceiling(8, 20), 1_300.0);
    }

    #[test]
    fn without_a_budget_there_is_no_time_estimate() {
        let settings = Settings {
            write_budget_per_sec: None,
            ..Settings::default()
        };
        let run = estimate(JobKind::UnlinkAllLocations, 250, &settings);
        assert_eq!(run.estimated_seconds, None);
        assert_eq!(run.locations, 250);
    }
}
