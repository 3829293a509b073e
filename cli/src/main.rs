//! The `bulklink` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bulklink::bench;
use bulklink::client::ApiClient;
use bulklink::demo::{self, DemoOptions};
use bulklink::runtime::{Runtime, RuntimeConfig};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shared::aws::{self, AwsClients, AwsNames, ResourceNames};
use shared::domain::{BrandId, JobId, OfferId};
use shared::embedded::EmbeddedStore;
use shared::Settings;

/// Prints a line to stdout; a closed pipe (`bulklink … | head`) ends the program quietly
/// instead of panicking.
macro_rules! emit {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "bulklink",
    version,
    about = "Link one offer to all of a brand's locations, as a job"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct PipelineArgs {
    /// Worker instances (overrides WORKER_MAX_CONCURRENCY).
    #[arg(long)]
    workers: Option<usize>,
    /// Catalog writes per second across all workers; 0 = unlimited (overrides WRITE_BUDGET_PER_SEC).
    #[arg(long)]
    write_budget: Option<f64>,
}

impl PipelineArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut settings = Settings::from_env()?;
        if let Some(workers) = self.workers {
            settings.worker_concurrency = workers;
        }
        if let Some(budget) = self.write_budget {
            settings.write_budget_per_sec = (budget > 0.0).then_some(budget);
        }
        settings.validate()?;
        Ok(settings)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the main job end to end on a fresh embedded store and check the result.
    Demo {
        #[arg(long, default_value_t = 10_000)]
        locations: u64,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Serve the HTTP API and run the pipeline (embedded backend by default).
    Serve {
        #[arg(long, value_enum, default_value_t = BackendKind::Embedded)]
        backend: BackendKind,
        /// The SQLite file (embedded backend).
        #[arg(long, default_value = "bulklink.db")]
        db: PathBuf,
        /// AWS endpoint override, e.g. a local emulator (aws backend; default: AWS_ENDPOINT_URL).
        #[arg(long)]
        endpoint_url: Option<String>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Base URL clients reach this server at (used in webhook SubscribeURLs).
        #[arg(long)]
        public_url: Option<String>,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Create the tables, queues and topic on a local AWS endpoint (an emulator) and print
    /// the environment `serve --backend aws` reads. Refuses non-loopback endpoints.
    Bootstrap {
        #[arg(long)]
        endpoint_url: String,
        /// Resource names start with this.
        #[arg(long, default_value = "bulklink")]
        prefix: String,
    },
    /// Create an offer and N locations for a brand; prints {"brandId","offerId","locations"}.
    Seed {
        /// Write straight into this SQLite file...
        #[arg(long, conflicts_with = "api", required_unless_present = "api")]
        db: Option<PathBuf>,
        /// ...or go through a running server's API.
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        locations: u64,
        /// Brand id (a new one if absent).
        #[arg(long)]
        brand: Option<String>,
        #[arg(long, default_value = "5% cashback")]
        offer_name: String,
    },
    /// Create, watch or cancel a job on a running server.
    Job {
        #[command(subcommand)]
        action: JobAction,
    },
    /// Benchmark the embedded pipeline against its floor, or count an aws-mode job's AWS
    /// requests (see docs/benchmarks.md).
    Bench {
        #[arg(long, value_enum, default_value_t = BackendKind::Embedded)]
        backend: BackendKind,
        /// Comma-separated location counts (embedded).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<u64>,
        /// Locations of the aws-mode job.
        #[arg(long, default_value_t = 2_000)]
        locations: u64,
        /// A running local emulator (aws); default: start moto from .venv.
        #[arg(long)]
        endpoint_url: Option<String>,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// One bench size in this process; prints one JSON line (used by `bench`).
    #[command(hide = true)]
    BenchOne {
        #[arg(long)]
        locations: u64,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendKind {
    Embedded,
    Aws,
}

#[derive(Subcommand)]
enum JobAction {
    /// POST /offers/{offer}/link-all-locations; prints the job.
    Create {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long)]
        offer: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        callback_url: Option<String>,
    },
    /// Show a progress bar until the job ends; prints the final job.
    Watch {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        job: String,
    },
    /// POST /jobs/{job}/cancel; prints the job.
    Cancel {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        job: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve { .. });
    shared::telemetry::init(if quiet { "warn" } else { "info" });
    match cli.command {
        Command::Demo {
            locations,
            pipeline,
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let outcome = demo::run(DemoOptions {
                locations,
                config,
                interactive: true,
            })
            .await?;
            let problems = outcome.problems();
            if !problems.is_empty() {
                bail!("demo failed: {}", problems.join("; "));
            }
            emit!("demo OK: every location linked exactly once");
        }
        Command::Serve {
            backend,
            db,
            endpoint_url,
            listen,
            public_url,
            pipeline,
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                listen,
                public_url,
                ..Default::default()
            };
            let runtime = match backend {
                BackendKind::Embedded => Runtime::start_embedded(&db, config).await?,
                BackendKind::Aws => {
                    let names = AwsNames::from_env()?;
                    let clients = AwsClients::load(endpoint_url.as_deref()).await;
                    Runtime::start_aws(clients, &names, config, |ports| ports).await?
                }
            };
            eprintln!(
                "bulklink serving {} ({backend:?} backend)",
                runtime.base_url
            );
            tokio::signal::ctrl_c().await?;
            eprintln!("shutting down");
            runtime.shutdown().await;
        }
        Command::Seed {
            db,
            api,
            locations,
            brand,
            offer_name,
        } => {
            let brand: BrandId = match brand {
                Some(b) => b.parse()?,
                None => BrandId::new_random(),
            };
            let seeded = match (db, api) {
                (Some(db), _) => {
                    let store = EmbeddedStore::open(&db)?;
                    let s = store.seed_brand(brand, &offer_name, locations).await?;
                    json!({ "brandId": s.brand_id, "offerId": s.offer_id, "locations": s.locations })
                }
                (None, Some(api)) => seed_over_api(&api, brand, &offer_name, locations).await?,
                (None, None) => bail!("pass --db or --api"),
            };
            emit!("{seeded}");
        }
        Command::Job { action } => run_job_action(action).await?,
        Command::Bootstrap {
            endpoint_url,
            prefix,
        } => {
            let settings = Settings::from_env()?;
            let clients = AwsClients::load(Some(&endpoint_url)).await;
            let made = aws::bootstrap(
                &clients,
                &endpoint_url,
                &ResourceNames { prefix },
                &settings,
            )
            .await
            .context("bootstrapping the local endpoint")?;
            let n = &made.names;
            emit!("export AWS_ENDPOINT_URL={endpoint_url}");
            emit!("export CATALOG_TABLE={}", n.catalog_table);
            emit!("export JOBS_TABLE={}", n.jobs_table);
            emit!("export FANOUT_QUEUE_URL={}", n.fanout_queue_url);
            emit!("export CHUNK_QUEUE_URL={}", n.chunk_queue_url);
            emit!("export CHUNK_DLQ_URL={}", n.chunk_dlq_url);
            emit!("export EVENTS_TOPIC_ARN={}", n.events_topic_arn);
        }
        Command::Bench {
            backend: BackendKind::Aws,
            locations,
            endpoint_url,
            pipeline,
            ..
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let economy = bench::measure_aws(locations, config, endpoint_url).await?;
            emit!("{}", economy.report().trim_end());
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            sizes,
            pipeline,
            ..
        } => {
            let settings = pipeline.settings()?;
            match settings.write_budget_per_sec {
                None => {
                    let results = bench::run_children(&sizes, settings.worker_concurrency, None)?;
                    emit!("{}", bench::throughput_table(&results).trim_end());
                }
                Some(budget) => {
                    // A job of at least 20·B writes, at two writes per location.
                    let locations =
                        (budget * 20.0 / f64::from(worker::WRITES_PER_LOCATION)).ceil() as u64;
                    let results = bench::run_children(
                        &[locations],
                        settings.worker_concurrency,
                        Some(budget),
                    )?;
                    for m in &results {
                        emit!("{}", bench::budget_report(m, budget).trim_end());
                    }
                }
            }
        }
        Command::BenchOne {
            locations,
            pipeline,
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let measured = bench::measure(locations, config).await?;
            emit!("{}", serde_json::to_string(&measured)?);
        }
    }
    Ok(())
}

async fn seed_over_api(
    api: &str,
    brand: BrandId,
    offer_name: &str,
    locations: u64,
) -> anyhow::Result<serde_json::Value> {
    let client = ApiClient::new(api)?;
    let offer: shared::domain::Offer = client
        .post("/offers", &json!({ "brandId": brand, "name": offer_name }))
        .await?;
    let mut left = locations;
    let mut n = 0u64;
    while left > 0 {
        let batch = left.min(job_api::MAX_LOCATIONS_PER_REQUEST as u64);
        let body: Vec<_> = (0..batch)
            .map(|i| json!({ "brandId": brand, "address": format!("{} Main Street, Store {}", n + i + 1, n + i) }))
            .collect();
        let _: serde_json::Value = client.post("/locations", &json!(body)).await?;
        left -= batch;
        n += batch;
    }
    Ok(json!({ "brandId": brand, "offerId": offer.id, "locations": locations }))
}

async fn run_job_action(action: JobAction) -> anyhow::Result<()> {
    match action {
        JobAction::Create {
            api,
            offer,
            idempotency_key,
            callback_url,
        } => {
            let offer: OfferId = offer.parse()?;
            let job = ApiClient::new(&api)?
                .create_job(offer, idempotency_key.as_deref(), callback_url.as_deref())
                .await?;
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobAction::Watch { api, job } => {
            let id: JobId = job.parse()?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}",
            )?);
            let job = ApiClient::new(&api)?
                .wait_terminal(
                    id,
                    Duration::from_millis(250),
                    Duration::from_secs(86_400),
                    |v| {
                        bar.set_length(v.counters.counters.total);
                        bar.set_position(v.counters.processed);
                        bar.set_message(v.status.to_string());
                    },
                )
                .await
                .context("watching the job")?;
            bar.finish();
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobAction::Cancel { api, job } => {
            let id: JobId = job.parse()?;
            let job = ApiClient::new(&api)?.cancel(id).await?;
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
    }
    Ok(())
}
