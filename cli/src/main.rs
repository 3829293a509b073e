//! The `bulklink` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bulklink::bench;
use bulklink::client::ApiClient;
use bulklink::demo::{self, DemoOptions};
use bulklink::runtime::{AuthSetup, Runtime, RuntimeConfig};
use bulklink::server::ServerLimits;
use bulklink_aws::{self as aws, AwsClients, AwsNames, ResourceNames};
use bulklink_core::domain::{BrandId, JobId, LocationId, OfferId};
use bulklink_core::Settings;
use bulklink_http::auth::Role;
use bulklink_sqlite::EmbeddedStore;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

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
    /// API requests per second per brand (overrides BRAND_RATE_PER_SEC).
    #[arg(long)]
    brand_rate_per_sec: Option<f64>,
    /// Requests a brand may make at once (overrides BRAND_RATE_BURST).
    #[arg(long)]
    brand_rate_burst: Option<u32>,
    /// A new job of more locations than this waits for a second caller's approval; 0 = only
    /// when its request asks (overrides APPROVAL_ABOVE_LOCATIONS).
    #[arg(long)]
    approval_above: Option<u64>,
    /// Partitions a new offer's links are spread over on the aws backend, 1..=64 (overrides
    /// LINK_SHARDS; the embedded backend has none).
    #[arg(long)]
    link_shards: Option<u16>,
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
        if let Some(rate) = self.brand_rate_per_sec {
            settings.brand_rate_per_sec = rate;
        }
        if let Some(burst) = self.brand_rate_burst {
            settings.brand_rate_burst = burst;
        }
        if let Some(above) = self.approval_above {
            settings.approval_above_locations = (above > 0).then_some(above);
        }
        if let Some(shards) = self.link_shards {
            settings.link_shards = shards;
        }
        settings.validate()?;
        Ok(settings)
    }
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the main job end to end on a fresh embedded store and check the result.
    Demo {
        #[arg(long, default_value_t = 10_000)]
        locations: u64,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Keep the server running after the job and print the console's URL, with the
        /// demo brand's token (valid 1 h) in its fragment; Ctrl-C stops it.
        #[arg(long)]
        console: bool,
    },
    /// Serve the HTTP API and run the pipeline (embedded backend by default).
    Serve {
        #[arg(long, value_enum, default_value_t = BackendKind::Embedded)]
        backend: BackendKind,
        #[command(flatten)]
        auth: AuthArgs,
        #[command(flatten)]
        server: ServerArgs,
        /// The SQLite file (embedded backend).
        #[arg(long, default_value = "bulklink.db")]
        db: PathBuf,
        /// The key webhook signing secrets are sealed with in the SQLite file (embedded
        /// backend); created with mode 0600 when missing, refused if others can read it.
        /// Default: bulklink-secrets.key beside --db.
        #[arg(long)]
        secrets_key: Option<PathBuf>,
        /// AWS endpoint override, e.g. a local emulator (aws backend; default: AWS_ENDPOINT_URL).
        #[arg(long)]
        endpoint_url: Option<String>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Base URL clients reach this server at (printed at start).
        #[arg(long)]
        public_url: Option<String>,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// For trying out failure handling (never in production): every link or unlink
        /// write to this location fails, so a job over it ends with it among its failures.
        /// Repeatable.
        #[arg(long, value_name = "LOCATION_ID")]
        fail_links_to: Vec<LocationId>,
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
    /// Bring the AWS tables forward after upgrading from an earlier release (reads the
    /// environment `serve --backend aws` reads): gives offers created before `GET /offers`
    /// their brand-index keys. Idempotent; safe while serving. Prints what it changed.
    Upgrade {
        /// AWS endpoint override (default: AWS_ENDPOINT_URL).
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Move one offer's links to another number of partitions on the aws backend, online
    /// (reads the environment `serve --backend aws` reads): an offer made before links were
    /// sharded, to `--shards` (default LINK_SHARDS). Jobs, links and reads go on meanwhile;
    /// a run stopped at any point is resumed by running it again. Prints what it moved.
    MigrateLinks {
        /// The offer.
        #[arg(long)]
        offer: OfferId,
        /// Shards to move its links to, 1..=64 (default: LINK_SHARDS, 8).
        #[arg(long)]
        shards: Option<u16>,
        /// How long to wait after the move begins before reading the old keys: longer than
        /// any link operation that read the offer before (a chunk lives at most its
        /// visibility timeout). Default: VISIBILITY_TIMEOUT_SECS, at least 120.
        #[arg(long)]
        grace_secs: Option<f64>,
        /// AWS endpoint override (default: AWS_ENDPOINT_URL).
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Print a signed token that `serve` (with the same --token-key) accepts.
    Token {
        /// The HS256 key file; created (mode 0600) when missing.
        #[arg(long, default_value = "bulklink.key")]
        token_key: PathBuf,
        /// A token of this brand...
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        brand: Option<String>,
        /// ...or of an administrator of every brand (scope bulklink:admin).
        #[arg(long)]
        admin: bool,
        /// How long it is valid: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// The principal (`sub`); idempotency keys are scoped by it.
        #[arg(long)]
        sub: Option<String>,
    },
    /// Create an offer and N locations for a brand; prints {"brandId","offerId","locations"}.
    Seed {
        /// Write straight into this SQLite file...
        #[arg(long, conflicts_with = "api", required_unless_present = "api")]
        db: Option<PathBuf>,
        /// ...or go through a running server's API.
        #[arg(long)]
        api: Option<String>,
        /// Bearer token for --api (a brand's, or an administrator's with --brand).
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long)]
        locations: u64,
        /// Brand id (a new one if absent).
        #[arg(long)]
        brand: Option<String>,
        #[arg(long, default_value = "5% cashback")]
        offer_name: String,
    },
    /// Create, watch, pause, resume or cancel a job on a running server.
    Job {
        #[command(subcommand)]
        action: JobAction,
    },
    /// Read or change the live write budget of a running server (administrators).
    Budget {
        #[command(subcommand)]
        action: BudgetAction,
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
        /// Sharded links (aws): one link-all of --locations per comma-separated shard count,
        /// through a proxy that gives every partition key --per-key-writes writes/s; link
        /// writes/s, throttled share and exactness per count, and link-shards.png.
        #[arg(long, value_delimiter = ',')]
        shards: Vec<u16>,
        /// The capacity model's writes per second per partition key (with --shards).
        #[arg(long, default_value_t = 5.0)]
        per_key_writes: f64,
        /// Fair share (embedded): brand A's 100,000-location job, brand B's 300-location
        /// job 5 s later, each beside its solo run (use with --write-budget 2000).
        #[arg(long)]
        fairness: bool,
        /// Standing rules (embedded): 1,000 location changes, one every 10 ms, to a brand of
        /// 10,000 locations with a rule; the time from each change's 2xx until the rule
        /// has followed it (p50, p90, p99, max).
        #[arg(long)]
        rules: bool,
        /// Imports (embedded): a CSV of --import-rows new stores uploaded and imported;
        /// rows/s and peak RSS at 100,000 rows and at the end.
        #[arg(long)]
        import: bool,
        #[arg(long, default_value_t = 1_000_000)]
        import_rows: u64,
        /// A live budget change (embedded): one job at --write-budget, set to this many
        /// writes/s over the API --budget-change-at seconds in; prints per-second windows.
        #[arg(long)]
        budget_change_to: Option<f64>,
        #[arg(long, default_value_t = 5.0)]
        budget_change_at: f64,
        /// Webhook throttle (embedded): --webhook-events deliveries at once to a receiver
        /// whose subscription has this rateLimitPerSec; prints the arrivals per second.
        #[arg(long)]
        webhook_rate: Option<u32>,
        #[arg(long, default_value_t = 1_000)]
        webhook_events: u32,
        /// Directory for the PNG charts drawn beside the tables (made if missing):
        /// pipeline-vs-floor.png, write-budget.png, budget-change.png or fairness.png. Their
        /// text needs a TTF font ($BULKLINK_CHART_FONT, else DejaVu Sans or Liberation Sans
        /// from Debian's font packages); without one the charts are skipped, not the bench.
        #[arg(long, value_name = "DIR", default_value = "bench-charts")]
        charts: PathBuf,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Print the API's OpenAPI 3.1 document (what `GET /openapi.json` serves).
    Openapi,
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

#[derive(Args, Clone)]
struct AuthArgs {
    /// The HS256 key that local tokens are signed with (`bulklink token`); created with
    /// mode 0600 when missing.
    #[arg(long, default_value = "bulklink.key")]
    token_key: PathBuf,
    /// Verify RS256/ES256 tokens against this JWKS file instead (as API Gateway would).
    #[arg(long, requires_all = ["jwt_issuer", "jwt_audience"], conflicts_with = "insecure_no_auth")]
    jwks: Option<PathBuf>,
    /// The `iss` a --jwks token must carry.
    #[arg(long, requires = "jwks")]
    jwt_issuer: Option<String>,
    /// The `aud` a --jwks token must carry.
    #[arg(long, requires = "jwks")]
    jwt_audience: Option<String>,
    /// No authentication at all: every caller is an administrator. Only on a loopback
    /// --listen address, for experiments.
    #[arg(long)]
    insecure_no_auth: bool,
    /// The claim naming a caller's brand.
    #[arg(long, env = "BRAND_CLAIM", default_value = bulklink_http::auth::DEFAULT_BRAND_CLAIM)]
    brand_claim: String,
    /// Let webhooks reach this range (repeatable), e.g. 127.0.0.0/8 for a local receiver.
    #[arg(long = "webhook-allow-cidr", value_name = "CIDR")]
    webhook_allow_cidr: Vec<String>,
    /// How webhook host names are looked up: `system`, or `none` (no DNS at all: names are
    /// accepted at registration and every delivery to one fails; for closed environments).
    #[arg(long, value_enum, default_value_t = ResolverKind::System)]
    webhook_resolver: ResolverKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ResolverKind {
    System,
    None,
}

impl AuthArgs {
    fn setup(&self, listen: SocketAddr) -> anyhow::Result<AuthSetup> {
        if self.insecure_no_auth {
            if !listen.ip().is_loopback() {
                bail!(
                    "--insecure-no-auth is refused on {listen}: it lets anyone act on every \
                     brand, so it only runs on a loopback --listen address"
                );
            }
            tracing::warn!(
                %listen,
                "authentication is OFF (--insecure-no-auth): every caller is an administrator"
            );
            return Ok(AuthSetup::Disabled);
        }
        if let Some(path) = &self.jwks {
            let json = std::fs::read_to_string(path)
                .with_context(|| format!("reading the JWKS {}", path.display()))?;
            return Ok(AuthSetup::Jwks {
                json,
                issuer: self.jwt_issuer.clone().unwrap_or_default(),
                audience: self.jwt_audience.clone().unwrap_or_default(),
            });
        }
        Ok(AuthSetup::LocalKey(bulklink::tokens::load_or_create_key(
            &self.token_key,
        )?))
    }

    fn egress(&self) -> anyhow::Result<bulklink_egress::Egress> {
        let mut list = std::env::var("WEBHOOK_ALLOW_CIDRS").unwrap_or_default();
        for cidr in &self.webhook_allow_cidr {
            list.push(',');
            list.push_str(cidr);
        }
        let allow = bulklink_egress::Egress::parse_cidrs(&list)
            .map_err(|e| anyhow::anyhow!("--webhook-allow-cidr / WEBHOOK_ALLOW_CIDRS: {e}"))?;
        if !allow.is_empty() {
            tracing::info!(?allow, "webhooks may reach these ranges");
        }
        let resolver: std::sync::Arc<dyn bulklink_egress::Resolve> = match self.webhook_resolver {
            ResolverKind::System => std::sync::Arc::new(bulklink_egress::SystemResolver),
            ResolverKind::None => std::sync::Arc::new(bulklink_egress::NoResolver),
        };
        Ok(bulklink_egress::Egress::new(allow, resolver))
    }
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Most connections served at once; more are answered 503.
    #[arg(long, default_value_t = ServerLimits::default().max_connections)]
    max_connections: usize,
    /// Seconds a request's headers may take to arrive.
    #[arg(long, default_value_t = ServerLimits::default().header_read_timeout.as_secs_f64())]
    header_read_timeout: f64,
    /// Seconds an idle connection is kept open.
    #[arg(long, default_value_t = ServerLimits::default().idle_timeout.as_secs_f64())]
    idle_timeout: f64,
    /// Seconds a request may take before it is answered 408/503.
    #[arg(long, default_value_t = ServerLimits::default().request_timeout.as_secs_f64())]
    request_timeout: f64,
}

impl ServerArgs {
    fn limits(&self) -> anyhow::Result<ServerLimits> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(anyhow::anyhow!(
                    "--{name} must be a positive number of seconds"
                ))
            }
        };
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        Ok(ServerLimits {
            header_read_timeout: secs("header-read-timeout", self.header_read_timeout)?,
            idle_timeout: secs("idle-timeout", self.idle_timeout)?,
            request_timeout: secs("request-timeout", self.request_timeout)?,
            max_connections: self.max_connections,
            ..ServerLimits::default()
        })
    }
}

#[derive(Subcommand)]
enum JobAction {
    /// POST /offers/{offer}/link-all-locations; prints the job.
    Create {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        job: String,
    },
    /// POST /jobs/{job}/cancel; prints the job.
    Cancel {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        job: String,
    },
    /// POST /jobs/{job}/pause; prints the job.
    Pause {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        job: String,
    },
    /// POST /jobs/{job}/resume; prints the job.
    Resume {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        job: String,
    },
    /// GET /jobs/{job}/report, every part of it: what became of each location the finished
    /// job touched, written to standard output (or --out).
    Report {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// csv (locationId,externalId,outcome,error,at) or ndjson.
        #[arg(long, default_value = "csv", value_parser = ["csv", "ndjson"])]
        format: String,
        /// Write the report to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        job: String,
    },
}

#[derive(Subcommand)]
enum BudgetAction {
    /// GET /admin/write-budget: the budget in force and the workers' live rates.
    Get {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// An administrator's token.
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// PUT /admin/write-budget: catalog writes per second across all workers (0 =
    /// unlimited); every worker applies it within 5 s.
    Set {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// An administrator's token.
        #[arg(long, env = "BULKLINK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        writes_per_sec: f64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve { .. });
    bulklink_core::telemetry::init(if quiet { "warn" } else { "info" });
    match cli.command {
        Command::Demo {
            locations,
            pipeline,
            console,
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let (outcome, session) = demo::run_keeping_console(DemoOptions {
                locations,
                config,
                interactive: true,
                console,
            })
            .await?;
            let problems = outcome.problems();
            if !problems.is_empty() {
                if let Some(session) = session {
                    session.shutdown().await;
                }
                bail!("demo failed: {}", problems.join("; "));
            }
            emit!("demo OK: every location linked exactly once");
            if let Some(session) = session {
                emit!(
                    "console (the demo brand's token is in the fragment, which a browser never sends): {}",
                    session.url
                );
                emit!("serving until Ctrl-C");
                let signal = stop_signal().await?;
                eprintln!("{signal}: shutting down");
                session.shutdown().await;
            }
        }
        Command::Serve {
            backend,
            auth,
            server,
            db,
            secrets_key,
            endpoint_url,
            listen,
            public_url,
            pipeline,
            fail_links_to,
        } => {
            let failing = fail_links_to;
            if !failing.is_empty() {
                tracing::warn!(
                    locations = failing.len(),
                    "link writes to the --fail-links-to locations will fail (a testing aid)"
                );
            }
            let wrap = move |mut ports: bulklink_core::ports::Ports| {
                if !failing.is_empty() {
                    ports.catalog =
                        Arc::new(bulklink::faults::failing_links_to(ports.catalog, failing));
                }
                ports
            };
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                listen,
                public_url,
                auth: auth.setup(listen)?,
                brand_claim: auth.brand_claim.clone(),
                egress: auth.egress()?,
                limits: server.limits()?,
                secrets_key,
                ..Default::default()
            };
            let runtime = match backend {
                BackendKind::Embedded => Runtime::start_embedded_with(&db, config, wrap).await?,
                BackendKind::Aws => {
                    let names = AwsNames::from_env()?;
                    let clients = AwsClients::load(endpoint_url.as_deref()).await;
                    Runtime::start_aws(clients, &names, config, wrap).await?
                }
            };
            eprintln!(
                "bulklink serving {} ({backend:?} backend)",
                runtime.base_url
            );
            let signal = stop_signal().await?;
            eprintln!("{signal}: shutting down (in-flight requests finish first)");
            runtime.shutdown().await;
            eprintln!("stopped");
        }
        Command::Token {
            token_key,
            brand,
            admin,
            ttl,
            sub,
        } => {
            let role = match (admin, brand) {
                (true, _) => Role::Admin,
                (false, Some(brand)) => Role::Brand(brand.parse()?),
                (false, None) => bail!("pass --brand UUID or --admin"),
            };
            let ttl =
                bulklink::tokens::parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let key = bulklink::tokens::load_or_create_key(&token_key)?;
            let sub = sub.unwrap_or_else(|| match &role {
                Role::Admin => "admin".to_owned(),
                Role::Brand(brand) => format!("brand-{brand}"),
            });
            let brand_claim = bulklink_http::auth::brand_claim_from(|n| std::env::var(n).ok())?;
            emit!(
                "{}",
                bulklink::tokens::mint_token(
                    &key,
                    &sub,
                    &role,
                    ttl,
                    &brand_claim,
                    &bulklink_core::Clock::system()
                )?
            );
        }
        Command::Seed {
            db,
            api,
            token,
            locations,
            brand,
            offer_name,
        } => {
            let brand: Option<BrandId> = brand.map(|b| b.parse()).transpose()?;
            let seeded = match (db, api) {
                (Some(db), _) => {
                    let store = EmbeddedStore::open(&db)?;
                    let brand = brand.unwrap_or_else(BrandId::new_random);
                    let s = store.seed_brand(brand, &offer_name, locations).await?;
                    json!({ "brandId": s.brand_id, "offerId": s.offer_id, "locations": s.locations })
                }
                (None, Some(api)) => {
                    let client = ApiClient::new(&api)?.with_optional_token(token);
                    seed_over_api(&client, brand, &offer_name, locations).await?
                }
                (None, None) => bail!("pass --db or --api"),
            };
            emit!("{seeded}");
        }
        Command::Job { action } => run_job_action(action).await?,
        Command::Budget { action } => run_budget_action(action).await?,
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
            for (name, value) in n.env() {
                emit!("export {name}={value}");
            }
        }
        Command::Bench {
            backend: BackendKind::Aws,
            locations,
            endpoint_url,
            shards,
            per_key_writes,
            charts,
            pipeline,
            ..
        } if !shards.is_empty() => {
            let mut settings = pipeline.settings()?;
            // Chunks small enough that one takes a fraction of its visibility timeout even
            // when one partition paces the whole job.
            settings.chunk_size = settings.chunk_size.min(20);
            settings.visibility_timeout = settings.visibility_timeout.max(Duration::from_secs(60));
            let config = RuntimeConfig {
                settings,
                ..Default::default()
            };
            let report = bench::shards(
                config,
                locations,
                &shards,
                per_key_writes,
                endpoint_url,
                &charts,
            )
            .await?;
            emit!("{}", report.trim_end());
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
            emit!("link-all:\n{}", economy.link_all.report().trim_end());
            emit!("\nunlink-all:\n{}", economy.unlink_all.report().trim_end());
            emit!("\nfiltered link-all:\n{}", economy.filtered.trim_end());
            emit!("\nthe link-all's report:\n{}", economy.report.trim_end());
            emit!(
                "\nthe offer's links, listed:\n{}",
                economy.listing.trim_end()
            );
            emit!(
                "\nimport (new stores):\n{}",
                economy.import_new.report().trim_end()
            );
            emit!(
                "\nimport (the same file again):\n{}",
                economy.import_again.report().trim_end()
            );
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            webhook_rate: Some(rate),
            webhook_events,
            pipeline,
            ..
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let report = bench::webhook_throttle(config, rate, webhook_events).await?;
            emit!("{}", report.trim_end());
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            import: true,
            import_rows,
            pipeline,
            ..
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let report = bench::import(config, import_rows).await?;
            emit!("{}", report.trim_end());
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            rules: true,
            pipeline,
            ..
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let report = bench::rules(config, 10_000, 1_000, Duration::from_millis(10)).await?;
            emit!("{}", report.trim_end());
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            fairness: true,
            charts,
            pipeline,
            ..
        } => {
            let config = RuntimeConfig {
                settings: pipeline.settings()?,
                ..Default::default()
            };
            let report =
                bench::fairness(config, 100_000, 300, Duration::from_secs(5), &charts).await?;
            emit!("{}", report.trim_end());
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            budget_change_to: Some(to),
            budget_change_at,
            charts,
            pipeline,
            ..
        } => {
            let settings = pipeline.settings()?;
            let budget = settings
                .write_budget_per_sec
                .context("--budget-change-to needs a --write-budget to change from")?;
            // Enough writes for 15 s at the first budget and as long again after.
            let locations = (budget * 15.0 / f64::from(worker::WRITES_PER_LOCATION)
                + to * 10.0 / f64::from(worker::WRITES_PER_LOCATION))
            .ceil() as u64;
            let config = RuntimeConfig {
                settings,
                ..Default::default()
            };
            let report = bench::budget_change(
                config,
                locations,
                to,
                Duration::from_secs_f64(budget_change_at),
                &charts,
            )
            .await?;
            emit!("{}", report.trim_end());
        }
        Command::Bench {
            backend: BackendKind::Embedded,
            sizes,
            charts,
            pipeline,
            ..
        } => {
            let settings = pipeline.settings()?;
            match settings.write_budget_per_sec {
                None => {
                    let results = bench::run_children(&sizes, settings.worker_concurrency, None)?;
                    emit!("{}", bench::throughput_table(&results).trim_end());
                    if let Some(chart) = bench::throughput_chart(&results, &charts) {
                        emit!("chart: {}", chart.display());
                    }
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
                        if let Some(chart) = bench::budget_chart(m, budget, &charts) {
                            emit!("chart: {}", chart.display());
                        }
                    }
                }
            }
        }
        Command::Upgrade { endpoint_url } => {
            let names = AwsNames::from_env()?;
            let clients = AwsClients::load(endpoint_url.as_deref()).await;
            let upgraded = aws::upgrade(&clients, &names).await?;
            emit!("{}", serde_json::to_string(&upgraded)?);
        }
        Command::MigrateLinks {
            offer,
            shards,
            grace_secs,
            endpoint_url,
        } => {
            let settings = Settings::from_env()?;
            let names = AwsNames::from_env()?;
            let clients = AwsClients::load(endpoint_url.as_deref()).await;
            let grace = match grace_secs {
                Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
                Some(secs) => bail!("--grace-secs must be 0 or more, not {secs}"),
                None => settings.visibility_timeout.max(Duration::from_secs(120)),
            };
            let migrated = aws::migrate_links(
                &clients,
                &names,
                &bulklink_core::Clock::system(),
                offer,
                shards.unwrap_or(settings.link_shards),
                grace,
            )
            .await?;
            emit!("{}", serde_json::to_string(&migrated)?);
        }
        Command::Openapi => {
            emit!("{}", serde_json::to_string_pretty(status::openapi())?);
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

/// Waits for SIGTERM or SIGINT (Ctrl-C); names the one that came.
async fn stop_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").map_err(Into::into),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

/// Seeds through the API as the token's caller: its own brand, or (an administrator's
/// token) the brand named by --brand.
async fn seed_over_api(
    client: &ApiClient,
    brand: Option<BrandId>,
    offer_name: &str,
    locations: u64,
) -> anyhow::Result<serde_json::Value> {
    let mut new_offer = json!({ "name": offer_name });
    if let Some(brand) = brand {
        new_offer["brandId"] = json!(brand);
    }
    let offer: bulklink_core::domain::Offer = client.post("/offers", &new_offer).await?;
    let brand = offer.brand_id;
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
            token,
            offer,
            idempotency_key,
            callback_url,
        } => {
            let offer: OfferId = offer.parse()?;
            let job = ApiClient::new(&api)?
                .with_optional_token(token)
                .create_job(offer, idempotency_key.as_deref(), callback_url.as_deref())
                .await?;
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobAction::Watch { api, token, job } => {
            let id: JobId = job.parse()?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}",
            )?);
            let job = ApiClient::new(&api)?
                .with_optional_token(token)
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
        JobAction::Cancel { api, token, job } => {
            let id: JobId = job.parse()?;
            let job = ApiClient::new(&api)?
                .with_optional_token(token)
                .cancel(id)
                .await?;
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobAction::Pause { api, token, job } => {
            let id: JobId = job.parse()?;
            let job = ApiClient::new(&api)?
                .with_optional_token(token)
                .pause(id)
                .await?;
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobAction::Resume { api, token, job } => {
            let id: JobId = job.parse()?;
            let job = ApiClient::new(&api)?
                .with_optional_token(token)
                .resume(id)
                .await?;
            emit!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobAction::Report {
            api,
            token,
            format,
            out,
            job,
        } => {
            let id: JobId = job.parse()?;
            let client = ApiClient::new(&api)?.with_optional_token(token);
            let ndjson = format == "ndjson";
            let rows = match out {
                Some(path) => {
                    let file = tokio::fs::File::create(&path)
                        .await
                        .with_context(|| format!("creating {}", path.display()))?;
                    client.report(id, ndjson, None, file).await?
                }
                None => client.report(id, ndjson, None, tokio::io::stdout()).await?,
            };
            eprintln!("{rows} rows");
        }
    }
    Ok(())
}

async fn run_budget_action(action: BudgetAction) -> anyhow::Result<()> {
    let (api, token, change) = match action {
        BudgetAction::Get { api, token } => (api, token, None),
        BudgetAction::Set {
            api,
            token,
            writes_per_sec,
        } => (api, token, Some(writes_per_sec)),
    };
    let client = ApiClient::new(&api)?.with_optional_token(token);
    let budget = match change {
        None => client.write_budget().await?,
        Some(writes) => client.set_write_budget(writes).await?,
    };
    emit!("{}", serde_json::to_string_pretty(&budget)?);
    Ok(())
}
