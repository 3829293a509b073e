//! `bulklink bench`: the embedded pipeline end to end (POST → SUCCEEDED over HTTP) against
//! its floor — the bare SQLite work of the same links — with peak RSS; and the write budget
//! as achieved per one-second window. Each size runs in a child process of its own so its
//! peak RSS is its own. Beside its tables it draws PNG charts (`crate::charts`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bulklink_core::domain::{BrandId, JobId, JobStatus};
use bulklink_sqlite::EmbeddedStore;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::charts;
use crate::client::ApiClient;
use crate::runtime::{Runtime, RuntimeConfig};

/// What one child run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    pub locations: u64,
    pub workers: usize,
    pub write_budget: Option<f64>,
    pub pipeline_secs: f64,
    pub pipeline_per_sec: f64,
    pub peak_rss_mib: f64,
    pub floor_secs: Option<f64>,
    pub floor_per_sec: Option<f64>,
    /// Catalog writes per one-second window (rate-limited runs).
    pub write_windows: Vec<u64>,
    /// An unlink-all job of the same offer right after (unlimited runs).
    #[serde(default)]
    pub unlink_secs: Option<f64>,
}

impl Measured {
    pub fn ratio(&self) -> Option<f64> {
        self.floor_per_sec
            .map(|floor| self.pipeline_per_sec / floor)
    }
}

/// One size, in this process: seed, run the job over HTTP, then (unless rate-limited) the floor.
pub async fn measure(locations: u64, config: RuntimeConfig) -> anyhow::Result<Measured> {
    let config = unlimited_callers(config);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let store = EmbeddedStore::open(&db)?;
    let seeded = store
        .seed_brand(BrandId::new_random(), "bench", locations)
        .await?;
    drop(store);
    // Seeding is set-up, not pipeline: start the peak-RSS count from here.
    reset_peak_rss();

    let runtime = Runtime::start_embedded(&db, config.clone()).await?;
    let api = ApiClient::new(&runtime.base_url)?
        .with_token(config.token(bulklink_http::auth::Role::Brand(seeded.brand_id)));
    let started = Instant::now();
    let job = api.create_job(seeded.offer_id, None, None).await?;
    ended(
        &api,
        job.id,
        Duration::from_millis(20),
        "bench job",
        |c| c.linked,
        locations,
    )
    .await?;
    let pipeline_secs = started.elapsed().as_secs_f64();
    let peak_rss_mib = peak_rss_mib().unwrap_or(f64::NAN);
    let write_windows = if config.settings.write_budget_per_sec.is_some() {
        writes_per_window(&runtime, seeded.offer_id).await?
    } else {
        Vec::new()
    };
    let unlink_secs = if config.settings.write_budget_per_sec.is_none() {
        Some(unlink_all(&api, seeded.offer_id, locations).await?)
    } else {
        None
    };
    runtime.shutdown().await;

    let (floor_secs, floor_per_sec) = if config.settings.write_budget_per_sec.is_none() {
        let floor_db = dir.path().join("floor.db");
        let store = EmbeddedStore::open(&floor_db)?;
        let floor_seed = store
            .seed_brand(BrandId::new_random(), "floor", locations)
            .await?;
        drop(store);
        let secs = tokio::task::spawn_blocking(move || {
            floor(&floor_db, floor_seed.brand_id, floor_seed.offer_id)
        })
        .await??;
        (Some(secs), Some(locations as f64 / secs))
    } else {
        (None, None)
    };
    Ok(Measured {
        locations,
        workers: config.settings.worker_concurrency,
        write_budget: config.settings.write_budget_per_sec,
        pipeline_secs,
        pipeline_per_sec: locations as f64 / pipeline_secs,
        peak_rss_mib,
        floor_secs,
        floor_per_sec,
        write_windows,
        unlink_secs,
    })
}

/// Runs an unlink-all job of `offer` over HTTP to the end; its duration.
async fn unlink_all(
    api: &ApiClient,
    offer: bulklink_core::domain::OfferId,
    locations: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let created = api
        .send(
            reqwest::Method::POST,
            &format!("/offers/{offer}/unlink-all-locations"),
            None,
            &[],
        )
        .await?;
    if created.status != reqwest::StatusCode::ACCEPTED {
        bail!(
            "unlink-all was refused: {} {}",
            created.status,
            created.body
        );
    }
    let id = created.body["id"]
        .as_str()
        .context("unlink-all answered without an id")?
        .parse()?;
    ended(
        api,
        id,
        Duration::from_millis(20),
        "unlink-all",
        |c| c.unlinked,
        locations,
    )
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The floor: page the brand index, then per chunk of 100 one transaction that updates the
/// locations and inserts the links. Nothing else: no queue, ledger, HTTP or status.
pub fn floor(
    db: &Path,
    brand: BrandId,
    offer: bulklink_core::domain::OfferId,
) -> anyhow::Result<f64> {
    let mut conn = Connection::open(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let (brand, offer) = (brand.to_string(), offer.to_string());
    let started = Instant::now();
    let mut after = String::new();
    loop {
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT id FROM locations WHERE brand_id = ?1 AND closed = 0 AND id > ?2 \
                 ORDER BY id LIMIT 10000",
            )?
            .query_map(params![brand, after], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        for chunk in ids.chunks(100) {
            let tx = conn.transaction()?;
            {
                let mut mark = tx.prepare_cached(
                    "UPDATE locations SET has_offer = 1 WHERE id = ?1 AND brand_id = ?2 AND closed = 0",
                )?;
                let mut link = tx.prepare_cached(
                    "INSERT INTO links (offer_id, location_id, linked_by, linked_at) VALUES (?1, ?2, 'floor', ?3)",
                )?;
                let now = bulklink_core::Clock::system().now_ms();
                for id in chunk {
                    mark.execute(params![id, brand])?;
                    link.execute(params![offer, id, now])?;
                }
            }
            tx.commit()?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Linux: resets this process's peak RSS to its current RSS (clear_refs 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Linux: this process's peak RSS (VmHWM) in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs each size in a child process (`bulklink bench-one`) and collects the results.
pub fn run_children(
    sizes: &[u64],
    workers: usize,
    write_budget: Option<f64>,
) -> anyhow::Result<Vec<Measured>> {
    let exe = std::env::current_exe().context("locating the bulklink binary")?;
    let mut results = Vec::new();
    for &n in sizes {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "bench-one",
            "--locations",
            &n.to_string(),
            "--workers",
            &workers.to_string(),
        ]);
        if let Some(budget) = write_budget {
            cmd.args(["--write-budget", &budget.to_string()]);
        }
        let output = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !output.status.success() {
            bail!("bench for {n} locations failed ({})", output.status);
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let measured: Measured = serde_json::from_str(line.trim())
            .with_context(|| format!("bench child printed {line:?}"))?;
        results.push(measured);
    }
    Ok(results)
}

/// The throughput table, as printed and recorded in docs/benchmarks.md.
pub fn throughput_table(results: &[Measured]) -> String {
    let mut out = String::from(
        "| locations | pipeline s | pipeline loc/s | floor loc/s | pipeline/floor | unlink-all loc/s | peak RSS MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        out.push_str(&format!(
            "| {} | {:.2} | {:.0} | {} | {} | {} | {:.1} |\n",
            m.locations,
            m.pipeline_secs,
            m.pipeline_per_sec,
            m.floor_per_sec
                .map(|f| format!("{f:.0}"))
                .unwrap_or_else(|| "-".into()),
            m.ratio()
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into()),
            m.unlink_secs
                .map(|secs| format!("{:.0}", m.locations as f64 / secs))
                .unwrap_or_else(|| "-".into()),
            m.peak_rss_mib,
        ));
    }
    out
}

/// Per-window writes against the budget: every full window's ratio, the max and the mean.
pub fn budget_report(m: &Measured, budget: f64) -> String {
    let windows = &m.write_windows;
    // The last window is cut short by the end of the job: it is shown, not judged.
    let full = &windows[..windows.len().saturating_sub(1)];
    let mut out = format!(
        "write budget {budget}/s, {} workers, {} locations ({} writes), {:.1} s\n",
        m.workers,
        m.locations,
        m.locations * u64::from(worker::WRITES_PER_LOCATION),
        m.pipeline_secs
    );
    for (i, w) in windows.iter().enumerate() {
        let note = if i + 1 == windows.len() {
            " (partial)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  window {i:>3}: {w:>7} writes  {:.3}×B{note}\n",
            *w as f64 / budget
        ));
    }
    if !full.is_empty() {
        let max = full.iter().copied().max().unwrap_or(0) as f64;
        let mean = full.iter().sum::<u64>() as f64 / full.len() as f64;
        out.push_str(&format!(
            "  full windows: {}  max {:.3}×B  mean {:.3}×B\n",
            full.len(),
            max / budget,
            mean / budget
        ));
    }
    out
}

/// AWS requests of one aws-mode job, per linked location.
#[derive(Clone, Debug)]
pub struct RequestEconomy {
    /// The job's kind: the write target applies to link-all.
    pub kind: bulklink_core::domain::JobKind,
    pub locations: u64,
    pub secs: f64,
    /// `(service, operation) → (calls, attempts)`.
    pub requests: std::collections::BTreeMap<(String, String), bulklink_aws::Counts>,
}

const DYNAMO_WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

impl RequestEconomy {
    fn calls(&self, service: &str, which: impl Fn(&str) -> bool) -> u64 {
        self.requests
            .iter()
            .filter(|((s, op), _)| s == service && which(op))
            .map(|(_, c)| c.calls)
            .sum()
    }

    pub fn dynamodb_writes(&self) -> u64 {
        self.calls("DynamoDB", |op| DYNAMO_WRITES.contains(&op))
    }

    pub fn queries(&self) -> u64 {
        self.calls("DynamoDB", |op| op == "Query")
    }

    pub fn scans(&self) -> u64 {
        self.calls("DynamoDB", |op| op == "Scan")
    }

    pub fn sqs_sends(&self) -> u64 {
        self.calls("SQS", |op| op.starts_with("SendMessage"))
    }

    pub fn publishes(&self) -> u64 {
        self.calls("SNS", |op| op == "Publish")
    }

    /// The report, as printed and recorded in docs/benchmarks.md.
    pub fn report(&self) -> String {
        let n = self.locations as f64;
        let import = self.kind == bulklink_core::domain::JobKind::ImportLocations;
        let unit = if import { "row" } else { "location" };
        let mut out = format!(
            "aws-mode {} job: {} {unit}s in {:.1} s\n\n| service | operation | calls | attempts | per {unit} |\n|---|---|---:|---:|---:|\n",
            self.kind, self.locations, self.secs
        );
        for ((service, op), c) in &self.requests {
            out.push_str(&format!(
                "| {service} | {op} | {} | {} | {:.4} |\n",
                c.calls,
                c.attempts,
                c.calls as f64 / n
            ));
        }
        let check = |ok: bool| if ok { "ok" } else { "OVER" };
        let writes = self.dynamodb_writes() as f64 / n;
        // Unlinking writes 2 per location, 3 where the location is left without offers:
        // reported, with no target.
        let write_target = if self.kind == bulklink_core::domain::JobKind::LinkAllLocations {
            format!("≤ 2.05: {}", check(writes <= 2.05))
        } else {
            "no target: 2 per location, 3 for one left without offers".to_owned()
        };
        let queries = self.queries() as f64 / n;
        let query_target = if self.kind == bulklink_core::domain::JobKind::LinkAllLocations {
            format!("≤ 0.002: {}", check(queries <= 0.002))
        } else {
            "no target".to_owned()
        };
        let sends = self.sqs_sends() as f64 / n;
        if import {
            // A row: read its external id's claim and the location, then one write (the
            // change, or the mark alone); a new store is one transaction of two puts.
            let reads = self.calls("DynamoDB", |op| op == "GetItem" || op == "BatchGetItem");
            out.push_str(&format!(
                "\nDynamoDB writes per row {writes:.4}\n\
                 DynamoDB reads per row {:.4}\n\
                 DynamoDB scans {} (0: {})\n\
                 S3 requests per row {:.4}\n\
                 SQS SendMessage* per row {sends:.4}\n\
                 SNS Publish {} (1 terminal event: {})\n",
                reads as f64 / n,
                self.scans(),
                check(self.scans() == 0),
                self.calls("S3", |_| true) as f64 / n,
                self.publishes(),
                check(self.publishes() == 1),
            ));
            return out;
        }
        out.push_str(&format!(
            "\nDynamoDB writes per location {writes:.4} ({write_target})\n\
             DynamoDB queries per location {queries:.4} ({query_target})\n\
             DynamoDB scans {} (0: {})\n\
             SQS SendMessage* per location {sends:.4} (≤ 0.002: {})\n\
             SNS Publish {} (1 terminal event: {})\n",
            self.scans(),
            check(self.scans() == 0),
            check(sends <= 0.002),
            self.publishes(),
            check(self.publishes() == 1),
        ));
        out
    }
}

/// One job on the AWS backend (a local emulator: the one at `endpoint`, or a moto server
/// started from the workspace's `.venv`), counting every AWS request from job creation to
/// the terminal event.
pub async fn measure_aws(
    locations: u64,
    config: RuntimeConfig,
    endpoint: Option<String>,
) -> anyhow::Result<AwsEconomy> {
    // What the jobs cost, not what following the estate with standing rules costs (none
    // are set; on AWS the estate function does it, with clients of its own).
    let config = RuntimeConfig {
        follow_estate: false,
        ..unlimited_callers(config)
    };
    use bulklink_aws::{self as aws, AwsClients, ResourceNames};

    let (_emulator, endpoint) = emulator_at(endpoint)?;
    let clients = AwsClients::load(Some(&endpoint)).await;
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let names = aws::bootstrap(
        &clients,
        &endpoint,
        &ResourceNames { prefix },
        &config.settings,
    )
    .await?
    .names;
    let shards = config.settings.link_shards;
    let ports = aws::ports(&clients, &names, bulklink_core::Clock::system(), shards);
    let offer = crate::seed::seed_brand(&ports, BrandId::new_random(), "bench", locations).await?;

    // Count from the job's creation on: seeding is set-up.
    clients.counter.reset();
    let counter = clients.counter.clone();
    let read_units = clients.read_units.clone();
    let token = config.token(bulklink_http::auth::Role::Brand(offer.brand_id));
    let ddb = clients.dynamodb.clone();
    let runtime = Runtime::start_aws(clients, &names, config, |ports| ports).await?;
    let api = ApiClient::new(&runtime.base_url)?.with_token(token);
    let started = Instant::now();
    let job = api.create_job(offer.offer_id, None, None).await?;
    ended(
        &api,
        job.id,
        Duration::from_millis(500),
        "aws bench job",
        |c| c.linked,
        locations,
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let link_all = RequestEconomy {
        kind: bulklink_core::domain::JobKind::LinkAllLocations,
        locations,
        secs,
        requests: counter.snapshot(),
    };
    let report = report_economy(
        &ddb,
        &names.jobs_table,
        &api,
        &read_units,
        job.id,
        locations,
    )
    .await?;
    let listing = listing_economy(&api, &counter, offer.offer_id, shards).await?;
    // Then the same offer unlinked from all of them, counted on its own.
    counter.reset();
    let started = Instant::now();
    unlink_all(&api, offer.offer_id, locations).await?;
    let unlink_secs = started.elapsed().as_secs_f64();
    let unlink = RequestEconomy {
        kind: bulklink_core::domain::JobKind::UnlinkAllLocations,
        locations,
        secs: unlink_secs,
        requests: counter.snapshot(),
    };
    // A link-all narrowed to the tenth of a brand in one country: what its reads cost per
    // location it links (fanout reads each location of the brand to match it).
    let filtered = filtered_link_all(&runtime, &api, &read_units, locations).await?;
    // An import of as many new stores, then the same file again (every row unchanged).
    let file: String = std::iter::once("externalId,name,address,city,country,tags\n".to_owned())
        .chain((0..locations).map(|i| {
            format!(
                "B-{i:07},Store {i},{i} Bench Road,City {},GB,t{}\n",
                i % 50,
                i % 7
            )
        }))
        .collect();
    let mut imports = Vec::new();
    for kind in ["new stores", "the same file again"] {
        counter.reset();
        let started = Instant::now();
        let job = import_file(&api, "csv", false, file.clone()).await?;
        let view = ended(
            &api,
            job,
            Duration::from_millis(500),
            "aws bench import",
            |c| c.created + c.unchanged,
            locations,
        )
        .await?;
        imports.push(RequestEconomy {
            kind: bulklink_core::domain::JobKind::ImportLocations,
            locations,
            secs: started.elapsed().as_secs_f64(),
            requests: counter.snapshot(),
        });
        tracing::debug!(kind, counters = ?view.counters, "bench import done");
    }
    // Stop the pollers before reading the counts, so idle receives stop adding up.
    runtime.shutdown().await;
    let again = imports.pop().context("two imports")?;
    let new = imports.pop().context("two imports")?;
    Ok(AwsEconomy {
        link_all,
        unlink_all: unlink,
        filtered,
        report,
        listing,
        import_new: new,
        import_again: again,
    })
}

/// The requests of `GET /offers/{id}/locations` pages of 100, walked to the end: per page,
/// against the target of one Query per link shard and one read of the offer (its shard
/// count) besides the caller's check that the offer is theirs.
async fn listing_economy(
    api: &ApiClient,
    counter: &bulklink_aws::RequestCounter,
    offer: bulklink_core::domain::OfferId,
    shards: u16,
) -> anyhow::Result<String> {
    counter.reset();
    let mut pages = 0u64;
    let mut links = 0usize;
    let mut path = format!("/offers/{offer}/locations?limit=100");
    loop {
        let page: serde_json::Value = api.get(&path).await?;
        pages += 1;
        links += page["items"].as_array().map_or(0, Vec::len);
        match page["nextCursor"].as_str() {
            Some(next) => path = format!("/offers/{offer}/locations?limit=100&cursor={next}"),
            None => break,
        }
    }
    let requests = counter.snapshot();
    let calls = |op: &str| {
        requests
            .iter()
            .filter(|((service, o), _)| service == "DynamoDB" && o == op)
            .map(|(_, c)| c.calls)
            .sum::<u64>()
    };
    let per_page = |op: &str| calls(op) as f64 / pages as f64;
    let check = |ok: bool| if ok { "ok" } else { "OVER" };
    let queries = per_page("Query");
    Ok(format!(
        "{links} links in {pages} pages of 100 at {shards} link shard(s)\n\
         DynamoDB queries per page {queries:.2} (≤ S + 1 = {}: {})\n\
         DynamoDB GetItem per page {:.2} (the caller's offer, its shard count)\n\
         DynamoDB scans {} (0: {})\n",
        shards + 1,
        check(queries <= f64::from(shards) + 1.0),
        per_page("GetItem"),
        calls("Scan"),
        check(calls("Scan") == 0),
    ))
}

/// The emulator to run against: the one at `endpoint`, or a moto server started from the
/// workspace's `.venv` (kept running while the first value lives).
fn emulator_at(
    endpoint: Option<String>,
) -> anyhow::Result<(Option<bulklink_aws::LocalEmulator>, String)> {
    if let Some(endpoint) = endpoint {
        return Ok((None, endpoint));
    }
    let workspace = std::env::current_dir()?
        .ancestors()
        .find(|dir| dir.join("scripts/moto_server.py").exists())
        .map(Path::to_path_buf)
        .context("run from the bulklink checkout, or pass --endpoint-url")?;
    let emulator = bulklink_aws::LocalEmulator::start(&workspace)?;
    let endpoint = emulator.endpoint().to_owned();
    Ok((Some(emulator), endpoint))
}

/// What one link-all measured on the capacity model at one shard count.
#[derive(Clone, Debug)]
pub struct ShardRun {
    pub shards: u16,
    pub locations: u64,
    pub secs: f64,
    /// Link writes/s over the second half of the job's links (from half linked to done).
    pub converged: f64,
    /// (throttled, all) write answers from the first throttle on.
    pub throttled: (usize, usize),
    /// Link writes answered (not throttled) per 1 s window since the POST.
    pub windows: Vec<(f64, f64)>,
    /// linked, locationsTotal, locations with `hasOffer`, links listed.
    pub exact: (u64, u64, u64, u64),
}

/// `bench --backend aws --shards 1,8`: one link-all of `locations` per shard count, its
/// DynamoDB requests through a proxy that gives every partition key `per_key` writes/s (a
/// token bucket each, as DynamoDB's partitions are), at a write budget well above what the
/// largest shard count can take, so the table's capacity and the adaptive limiter pace the
/// job, not the budget.
pub async fn shards(
    config: RuntimeConfig,
    locations: u64,
    counts: &[u16],
    per_key: f64,
    endpoint: Option<String>,
    charts_dir: &Path,
) -> anyhow::Result<String> {
    use bulklink_aws::{self as aws, AwsClients, ResourceNames};

    let (_emulator, endpoint) = emulator_at(endpoint)?;
    let most = f64::from(counts.iter().copied().max().unwrap_or(1));
    let budget = 3.0 * f64::from(worker::WRITES_PER_LOCATION) * most * per_key;
    let mut runs = Vec::new();
    for &shards in counts {
        let mut settings = config.settings.clone();
        settings.link_shards = shards;
        settings.write_budget_per_sec = Some(budget);
        settings.validate()?;
        let config = RuntimeConfig {
            settings,
            follow_estate: false,
            ..unlimited_callers(config.clone())
        };
        let direct = AwsClients::load(Some(&endpoint)).await;
        let prefix = format!("shards{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let names = aws::bootstrap(
            &direct,
            &endpoint,
            &ResourceNames { prefix },
            &config.settings,
        )
        .await?
        .names;
        let ports = aws::ports(&direct, &names, bulklink_core::Clock::system(), shards);
        let offer =
            crate::seed::seed_brand(&ports, BrandId::new_random(), "bench", locations).await?;

        let capacity = crate::proxy::Capacity::new(per_key);
        let proxy = crate::proxy::Proxy::start(&endpoint, capacity.rule()).await?;
        let clients = AwsClients::load(Some(&proxy.url)).await;
        let token = config.token(bulklink_http::auth::Role::Brand(offer.brand_id));
        let runtime = Runtime::start_aws(clients, &names, config, |ports| ports).await?;
        let api = ApiClient::new(&runtime.base_url)?.with_token(token);
        let started = Instant::now();
        let job = api.create_job(offer.offer_id, None, None).await?;
        let mut progress = Vec::new();
        let view = ended_watching(
            &api,
            job.id,
            Duration::from_millis(250),
            "shards bench job",
            |c| c.linked,
            locations,
            |view| {
                progress.push((
                    started.elapsed().as_secs_f64(),
                    view.counters.counters.linked,
                ))
            },
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        progress.push((secs, view.counters.counters.linked));
        runtime.shutdown().await;

        let answers = capacity.answers_since(started);
        let mut windows = vec![0f64; secs.ceil() as usize + 1];
        for answer in answers.iter().filter(|a| a.link && !a.throttled) {
            let at = (answer.at - started).as_secs_f64() as usize;
            if let Some(w) = windows.get_mut(at) {
                *w += 1.0;
            }
        }
        let half = progress
            .iter()
            .find(|(_, linked)| *linked * 2 >= locations)
            .copied()
            .unwrap_or((0.0, 0));
        let converged = (locations - half.1) as f64 / (secs - half.0).max(1e-3);
        let after = crate::proxy::from_first_throttle(&answers);
        let exact = exactness(&ports, &offer, view.counters.counters.linked).await?;
        runs.push(ShardRun {
            shards,
            locations,
            secs,
            converged,
            throttled: crate::proxy::throttled_share(after),
            windows: windows
                .into_iter()
                .enumerate()
                .map(|(i, w)| (i as f64, w))
                .collect(),
            exact,
        });
    }
    Ok(shards_report(&runs, per_key, budget, charts_dir))
}

/// The job's `linked`, and the offer's locationsTotal, locations with `hasOffer` and
/// links listed, read back.
async fn exactness(
    ports: &bulklink_core::Ports,
    offer: &bulklink_sqlite::SeededBrand,
    linked: u64,
) -> anyhow::Result<(u64, u64, u64, u64)> {
    let stats = crate::seed::link_stats(ports, offer).await?;
    Ok((
        linked,
        stats.offer_locations_total,
        stats.brand_locations_with_offer,
        stats.offer_links,
    ))
}

fn shards_report(runs: &[ShardRun], per_key: f64, budget: f64, charts_dir: &Path) -> String {
    let mut out = format!(
        "capacity model: {per_key} writes/s per partition key; write budget {budget} writes/s\n\n\
         | link shards | locations | job | link writes/s (second half) | vs 1 shard | \
         throttled writes from the first throttle on | exact |\n\
         |---:|---:|---:|---:|---:|---:|---|\n"
    );
    let one = runs.iter().find(|r| r.shards == 1).map(|r| r.converged);
    for run in runs {
        let (throttled, all) = run.throttled;
        let (linked, total, with_offer, listed) = run.exact;
        let exact = linked == run.locations
            && total == run.locations
            && with_offer == run.locations
            && listed == run.locations;
        out.push_str(&format!(
            "| {} | {} | {:.1} s | {:.1} | {} | {throttled} of {all} ({:.2}%) | {} |\n",
            run.shards,
            run.locations,
            run.secs,
            run.converged,
            one.map_or("—".to_owned(), |one| format!(
                "{:.2}×",
                run.converged / one
            )),
            100.0 * throttled as f64 / all.max(1) as f64,
            if exact {
                "yes".to_owned()
            } else {
                format!(
                    "NO: linked {linked}, locationsTotal {total}, hasOffer {with_offer}, \
                     listed {listed}"
                )
            }
        ));
    }
    let series: Vec<charts::RateSeries> = runs
        .iter()
        .map(|r| {
            (
                format!(
                    "{} link shard{}",
                    r.shards,
                    if r.shards == 1 { "" } else { "s" }
                ),
                f64::from(r.shards) * per_key,
                r.windows.clone(),
            )
        })
        .collect();
    let chart = write_chart(charts_dir, "link-shards.png", |path| {
        charts::link_rates(
            path,
            &format!("One link-all at {per_key} writes/s per partition key"),
            &series,
        )
    });
    out + &chart_line(chart)
}

/// A brand of `locations` stores, a tenth of them in GB, and a link-all of a new offer
/// narrowed to `country: GB`: the read units the job's DynamoDB reads cost (measured from
/// the items they returned), per location it linked.
async fn filtered_link_all(
    runtime: &Runtime,
    api: &ApiClient,
    read_units: &bulklink_aws::ReadUnits,
    locations: u64,
) -> anyhow::Result<String> {
    use bulklink_core::domain::{Country, Location, LocationId, Offer, OfferId};

    let ports = &runtime.ports;
    let brand = BrandId::new_random();
    let now = ports.clock.now();
    let gb: Country = "GB".parse()?;
    let fr: Country = "FR".parse()?;
    let stores: Vec<Location> = (0..locations)
        .map(|i| {
            let mut l = Location::new(
                LocationId::new_random(),
                brand,
                format!("{i} Filter St"),
                now,
            );
            l.attributes.country = Some(if i % 10 == 0 { gb } else { fr });
            l.attributes.city = Some(format!("City {}", i % 40));
            l
        })
        .collect();
    for batch in stores.chunks(100) {
        ports.catalog.create_locations(batch).await?;
    }
    let offer = Offer {
        id: OfferId::new_random(),
        brand_id: brand,
        name: "filtered".into(),
        locations_total: 0,
        schedule: None,
    };
    ports.catalog.create_offer(&offer).await?;
    let matching = locations.div_ceil(10);
    let api = ApiClient::new(api.base())?
        .with_token(runtime.token_for("bench", bulklink_http::auth::Role::Brand(brand))?);
    read_units.reset();
    read_units.measure(true);
    let started = Instant::now();
    let job: bulklink_http::views::JobView = api
        .send(
            reqwest::Method::POST,
            &format!("/offers/{}/link-all-locations", offer.id),
            Some(&serde_json::json!({ "where": { "country": ["GB"] } })),
            &[],
        )
        .await?
        .into_json()?;
    ended(
        &api,
        job.id,
        Duration::from_millis(500),
        "filtered job",
        |c| c.linked,
        matching,
    )
    .await?;
    read_units.measure(false);
    let units = read_units.units();
    Ok(format!(
        "aws-mode link-all narrowed by `where` to a tenth of a brand: {matching} of {locations} \
         locations linked in {:.1} s\n\
         | measure | value |\n|---|---:|\n\
         | DynamoDB items read | {} |\n\
         | read capacity units | {units:.1} |\n\
         | read units per linked location | {:.2} |\n",
        started.elapsed().as_secs_f64(),
        read_units.items(),
        units / matching as f64,
    ))
}

/// What a job's report costs on DynamoDB: the write units its outcomes add to the chunk
/// markers (each written once, in the ledger's transaction: 2 units per KB; measured from the
/// stored items, with and without their `outcomes`), and the read units of streaming it.
async fn report_economy(
    ddb: &bulklink_aws::DynamoClient,
    jobs_table: &str,
    api: &ApiClient,
    read_units: &bulklink_aws::ReadUnits,
    job: JobId,
    locations: u64,
) -> anyhow::Result<String> {
    let bulklink_aws::MarkerUnits {
        markers,
        with,
        without,
    } = bulklink_aws::chunk_marker_units(ddb, jobs_table, job).await?;
    read_units.reset();
    read_units.measure(true);
    let began = Instant::now();
    let rows = api.report(job, false, None, tokio::io::sink()).await?;
    let secs = began.elapsed().as_secs_f64();
    read_units.measure(false);
    anyhow::ensure!(
        rows == locations,
        "the report has {rows} rows of {locations}"
    );
    let per = |units: u64| units as f64 / locations as f64;
    Ok(format!(
        "{markers} chunk markers; write units of their transactional puts\n\
         | measure | value |\n|---|---:|\n\
         | write units, markers with outcomes | {with} |\n\
         | write units, the same markers without | {without} |\n\
         | extra write units per location | {:.3} |\n\
         | extra write requests | 0 |\n\
         | report: rows streamed | {rows} ({secs:.1} s) |\n\
         | report: read units per row | {:.2} |\n\
         target: ≤ 0.05 extra writes per location — {}\n",
        per(with - without),
        read_units.units() / rows.max(1) as f64,
        if per(with - without) <= 0.05 {
            "meets"
        } else {
            "MISSES"
        },
    ))
}

/// What `bench --backend aws` measures: a link-all, the unlink-all of the same offer, and an
/// import of as many new stores followed by the same file again.
pub struct AwsEconomy {
    pub link_all: RequestEconomy,
    pub unlink_all: RequestEconomy,
    /// The filtered link-all's reads, as printed.
    pub filtered: String,
    /// What the link-all's report cost, as printed.
    pub report: String,
    /// What a page of the offer's links cost, as printed.
    pub listing: String,
    pub import_new: RequestEconomy,
    pub import_again: RequestEconomy,
}

/// Imports `file` (`POST /imports`, the upload) and waits for the file's arrival to make the
/// job: its id.
async fn import_file(
    api: &ApiClient,
    format: &str,
    close_missing: bool,
    file: impl Into<reqwest::Body>,
) -> anyhow::Result<bulklink_core::domain::JobId> {
    let import = api.create_import(format, close_missing).await?;
    let url = import.upload_url.context("no uploadUrl")?;
    let (status, body) = api.upload(&url, file).await?;
    if !status.is_success() {
        bail!("uploading the import's file: {status} {body}");
    }
    api.import_job(import.id, Duration::from_secs(120)).await
}

/// Waits for a bench job to end and checks it did everything: SUCCEEDED with `done`
/// (linked or unlinked) of `want` locations.
async fn ended(
    api: &ApiClient,
    id: bulklink_core::domain::JobId,
    poll: Duration,
    what: &str,
    done: impl Fn(&bulklink_core::domain::Counters) -> u64,
    want: u64,
) -> anyhow::Result<bulklink_http::views::JobView> {
    ended_watching(api, id, poll, what, done, want, |_| {}).await
}

/// [`ended`], shown every status read on the way.
async fn ended_watching(
    api: &ApiClient,
    id: bulklink_core::domain::JobId,
    poll: Duration,
    what: &str,
    done: impl Fn(&bulklink_core::domain::Counters) -> u64,
    want: u64,
    progress: impl FnMut(&bulklink_http::views::JobView),
) -> anyhow::Result<bulklink_http::views::JobView> {
    let job = api
        .wait_terminal(id, poll, Duration::from_secs(3_600), progress)
        .await?;
    let got = done(&job.counters.counters);
    if job.status != JobStatus::Succeeded || got != want {
        bail!(
            "{what} ended {} with {got} of {want} locations done",
            job.status
        );
    }
    Ok(job)
}

/// The bench polls job status faster than a brand may call the API: the per-brand request
/// limit is not what it measures.
fn unlimited_callers(mut config: RuntimeConfig) -> RuntimeConfig {
    config.settings.brand_rate_per_sec = 1e9;
    config.settings.brand_rate_burst = u32::MAX;
    config
}

/// A job's percent done over time: (seconds since the run began, percent).
type Progress = Vec<(f64, f64)>;

/// How often a job's progress is kept: the status is read every 10 ms for the latencies'
/// sake, and a chart needs a sample only every 100 ms or so.
const PROGRESS_EVERY: f64 = 0.1;

/// Runs jobs of `(locations, start delay)` at once on one fresh embedded store, each of its
/// own brand; how long each took from its POST to its end, in seconds, and its progress.
async fn run_jobs(
    config: &RuntimeConfig,
    jobs: &[(u64, Duration)],
) -> anyhow::Result<Vec<(f64, Progress)>> {
    let config = &unlimited_callers(config.clone());
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("fairness.db");
    let store = EmbeddedStore::open(&db)?;
    let mut seeded = Vec::new();
    for (n, _) in jobs {
        seeded.push(
            store
                .seed_brand(BrandId::new_random(), "fairness", *n)
                .await?,
        );
    }
    drop(store);
    let runtime = Runtime::start_embedded(&db, config.clone()).await?;
    let began = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for (i, ((n, delay), seed)) in jobs.iter().zip(&seeded).enumerate() {
        let api = ApiClient::new(&runtime.base_url)?
            .with_token(config.token(bulklink_http::auth::Role::Brand(seed.brand_id)));
        let (n, delay, offer) = (*n, *delay, seed.offer_id);
        running.spawn(async move {
            tokio::time::sleep_until((began + delay).into()).await;
            let started = Instant::now();
            let job = api.create_job(offer, None, None).await?;
            let mut progress = vec![(began.elapsed().as_secs_f64(), 0.0)];
            ended_watching(
                &api,
                job.id,
                Duration::from_millis(10),
                &format!("fairness job {i}"),
                |c| c.linked,
                n,
                |view| {
                    let at = began.elapsed().as_secs_f64();
                    let last = progress.last().map_or(f64::NEG_INFINITY, |(t, _)| *t);
                    if view.status.is_terminal() || at - last >= PROGRESS_EVERY {
                        let linked = view.counters.counters.linked as f64;
                        progress.push((at, 100.0 * linked / n.max(1) as f64));
                    }
                },
            )
            .await?;
            Ok::<_, anyhow::Error>((i, started.elapsed().as_secs_f64(), progress))
        });
    }
    let mut timed = vec![(0.0, Vec::new()); jobs.len()];
    while let Some(done) = running.join_next().await {
        let (i, t, progress) = done??;
        timed[i] = (t, progress);
    }
    runtime.shutdown().await;
    Ok(timed)
}

/// `bench --fairness`: brand A's large job alone, brand B's small job alone, then B started
/// `delay` after A on the same queue and budget. B's latency beside its solo latency, A's
/// duration beside its solo duration, against the targets (B ≤ 2 s and ≤ 3× solo; A ≤
/// 1.05× solo). Charts both jobs' progress of the run together, with A's alone beside it,
/// as `fairness.png` in `charts`.
pub async fn fairness(
    config: RuntimeConfig,
    large: u64,
    small: u64,
    delay: Duration,
    charts: &Path,
) -> anyhow::Result<String> {
    let (solo_a, solo_a_progress) = first(run_jobs(&config, &[(large, Duration::ZERO)]).await?)?;
    let (solo_b, _) = first(run_jobs(&config, &[(small, Duration::ZERO)]).await?)?;
    let mut both = run_jobs(&config, &[(large, Duration::ZERO), (small, delay)]).await?;
    let (b, b_progress) = both.pop().context("the run together ran no B")?;
    let (a, a_progress) = first(both)?;
    let budget = config
        .settings
        .write_budget_per_sec
        .map_or("unlimited".to_owned(), |b| format!("{b}/s"));
    let title = format!(
        "Fair share: A = {} locations, B = {small} started {:.0} s later (budget {budget}, {} workers)",
        charts::grouped(large as f64),
        delay.as_secs_f64(),
        config.settings.worker_concurrency,
    );
    // B's run is a second or so of A's hundred: enlarged on the right, with half a second
    // either side.
    let zoom = match (b_progress.first(), b_progress.last()) {
        (Some((from, _)), Some((to, _))) => Some((from - 0.5, to + 0.5)),
        _ => None,
    };
    let series = [
        ("A beside B".to_owned(), a_progress),
        ("B beside A".to_owned(), b_progress),
        ("A alone (a run of its own)".to_owned(), solo_a_progress),
    ];
    let chart = write_chart(charts, "fairness.png", |path| {
        charts::fairness(path, &title, &series, zoom)
    });
    let mark = |ok: bool| if ok { "meets" } else { "MISSES" };
    Ok(format!(
        "fairness: budget {} writes/s, {} workers; A = {large} locations, B = {small} locations started {:.0} s after A\n\
         | job | alone s | beside the other s | ratio | target |\n\
         |---|---:|---:|---:|---|\n\
         | B ({small}) | {:.3} | {:.3} | {:.2}× | ≤ 2 s and ≤ 3× alone: {} |\n\
         | A ({large}) | {:.2} | {:.2} | {:.3}× | ≤ 1.05× alone: {} |\n",
        config.settings.write_budget_per_sec.map_or("unlimited".to_owned(), |b| b.to_string()),
        config.settings.worker_concurrency,
        delay.as_secs_f64(),
        solo_b,
        b,
        b / solo_b,
        mark(b <= 2.0 && b <= 3.0 * solo_b),
        solo_a,
        a,
        a / solo_a,
        mark(a <= 1.05 * solo_a),
    ) + &chart_line(chart))
}

fn first<T>(items: Vec<T>) -> anyhow::Result<T> {
    items.into_iter().next().context("the run ran no job")
}

/// `bench --budget-change-to N`: one rate-limited job; `at` after it starts an
/// administrator sets the budget to `to` over the API. Catalog writes per one-second
/// window, with the window the change landed in marked; charted as `budget-change.png` in
/// `charts`.
pub async fn budget_change(
    config: RuntimeConfig,
    locations: u64,
    to: f64,
    at: Duration,
    charts: &Path,
) -> anyhow::Result<String> {
    let config = unlimited_callers(config);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("budget.db");
    let store = EmbeddedStore::open(&db)?;
    let seeded = store
        .seed_brand(BrandId::new_random(), "budget", locations)
        .await?;
    drop(store);
    let runtime = Runtime::start_embedded(&db, config.clone()).await?;
    let api = ApiClient::new(&runtime.base_url)?
        .with_token(config.token(bulklink_http::auth::Role::Brand(seeded.brand_id)));
    let admin = ApiClient::new(&runtime.base_url)?
        .with_token(config.token(bulklink_http::auth::Role::Admin));
    let job = api.create_job(seeded.offer_id, None, None).await?;
    let started = bulklink_core::Clock::system().now();
    let change = tokio::spawn(async move {
        tokio::time::sleep(at).await;
        let when = bulklink_core::Clock::system().now();
        admin.set_write_budget(to).await.map(|_| when)
    });
    ended(
        &api,
        job.id,
        Duration::from_millis(20),
        "budget job",
        |c| c.linked,
        locations,
    )
    .await?;
    let changed_at = change.await??;
    let writes = writes_per_window(&runtime, seeded.offer_id).await?;
    runtime.shutdown().await;
    let from = config.settings.write_budget_per_sec.unwrap_or(0.0);
    let changed_secs = (changed_at - started).num_milliseconds() as f64 / 1_000.0;
    let change_window = changed_secs.floor() as usize;
    let mut out = format!(
        "budget change: {locations} locations at {from} writes/s; PUT /admin/write-budget {to} at {changed_secs:.1} s (window {change_window})\n",
    );
    let last = writes.len().saturating_sub(1);
    for (i, &writes) in writes.iter().enumerate() {
        let budget = if i < change_window { from } else { to };
        let note = match i.cmp(&change_window) {
            std::cmp::Ordering::Equal => "  ← budget changed in this window",
            _ if i == last => "  (last, partial)",
            _ => "",
        };
        out.push_str(&format!(
            "  window {i:>3}: {writes:>7} writes  {:.3}× the budget in force{note}\n",
            writes as f64 / budget
        ));
    }
    let title = format!(
        "Live budget change: {from} → {to} writes/s at {changed_secs:.1} s ({locations} locations, {} workers)",
        config.settings.worker_concurrency
    );
    let chart = write_chart(charts, "budget-change.png", |path| {
        charts::budget_windows(
            path,
            &title,
            &per_window(&writes),
            &[(0.0, from), (changed_secs, to)],
        )
    });
    Ok(out + &chart_line(chart))
}

/// Catalog writes per one-second window from the offer's first link: every Link row carries
/// its write time, and each link is `WRITES_PER_LOCATION` catalog writes.
async fn writes_per_window(
    runtime: &Runtime,
    offer: bulklink_core::domain::OfferId,
) -> anyhow::Result<Vec<u64>> {
    Ok(runtime
        .embedded_store()
        .context("the bench runs on the embedded backend")?
        .links_per_window(offer, 1_000)
        .await?
        .into_iter()
        .map(|links| links * u64::from(worker::WRITES_PER_LOCATION))
        .collect())
}

/// Catalog writes per one-second window as chart points: (window start s, writes).
fn per_window(writes: &[u64]) -> Vec<(f64, f64)> {
    writes
        .iter()
        .enumerate()
        .map(|(i, &w)| (i as f64, w as f64))
        .collect()
}

/// Draws one chart into `dir` (made if missing); its path, or `None` with the reason on
/// stderr: a chart never fails the bench, whose tables are its result.
fn write_chart(
    dir: &Path,
    name: &str,
    draw: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> Option<PathBuf> {
    let path = dir.join(name);
    let drawn = charts::ensure_font()
        .and_then(|_| {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        })
        .and_then(|()| draw(&path));
    match drawn {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("chart {} skipped: {e:#}", path.display());
            None
        }
    }
}

/// The line a report prints for its chart: its path, or nothing when it was skipped.
fn chart_line(chart: Option<PathBuf>) -> String {
    chart.map_or_else(String::new, |path| format!("chart: {}\n", path.display()))
}

/// `bench` (no budget): pipeline and floor rates per size, as `pipeline-vs-floor.png` in `dir`;
/// its path unless it was skipped.
pub fn throughput_chart(results: &[Measured], dir: &Path) -> Option<PathBuf> {
    let rows: Vec<_> = results
        .iter()
        .filter_map(|m| Some((m.locations, m.pipeline_per_sec, m.floor_per_sec?)))
        .collect();
    let workers = results.first().map_or(0, |m| m.workers);
    let title = format!("Embedded pipeline vs its floor ({workers} workers, no write budget)");
    write_chart(dir, "pipeline-vs-floor.png", |path| {
        charts::pipeline_vs_floor(path, &title, &rows)
    })
}

/// `bench --write-budget B`: the run's windows against B, as `write-budget.png` in `dir`; its
/// path unless it was skipped.
pub fn budget_chart(m: &Measured, budget: f64, dir: &Path) -> Option<PathBuf> {
    let windows = per_window(&m.write_windows);
    let title = format!(
        "Catalog writes per 1 s window at a budget of {budget} writes/s ({} workers, {} locations)",
        m.workers, m.locations
    );
    write_chart(dir, "write-budget.png", |path| {
        charts::budget_windows(path, &title, &windows, &[(0.0, budget)])
    })
}

/// How long after a location change's 2xx the offer's standing rule has followed it
/// (embedded): a brand of `locations` stores, an offer with the rule `country: GB`, then
/// `changes` PATCHes, one every `pace`, each moving a store into GB (to be linked) or out
/// of it (to be unlinked); each change is watched until the link is as the rule wants.
pub async fn rules(
    config: RuntimeConfig,
    locations: u64,
    changes: usize,
    pace: Duration,
) -> anyhow::Result<String> {
    use bulklink_core::domain::LinkedBy;

    let config = unlimited_callers(config);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("rules.db");
    let store = EmbeddedStore::open(&db)?;
    let seeded = store
        .seed_brand(BrandId::new_random(), "rules", locations)
        .await?;
    drop(store);
    let runtime = Runtime::start_embedded(&db, config.clone()).await?;
    let api = ApiClient::new(&runtime.base_url)?
        .with_token(config.token(bulklink_http::auth::Role::Brand(seeded.brand_id)));
    let offer = seeded.offer_id;
    let set = api
        .send(
            reqwest::Method::PUT,
            &format!("/offers/{offer}/rule"),
            Some(&serde_json::json!({ "where": { "country": ["GB"] } })),
            &[],
        )
        .await?;
    if set.status != reqwest::StatusCode::OK {
        bail!("setting the rule: {} {}", set.status, set.body);
    }
    let reconcile = set.body["job"]["id"].as_str().context("no reconcile job")?;
    loop {
        let job: serde_json::Value = api.get(&format!("/jobs/{reconcile}")).await?;
        if job["status"] == "SUCCEEDED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ports = runtime.ports.clone();
    let mut ids = Vec::new();
    let mut cursor = None;
    while ids.len() < changes {
        let page = ports
            .catalog
            .page_brand_locations(seeded.brand_id, None, cursor.as_ref(), 1_000)
            .await?;
        ids.extend(page.items);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    // Half the changes move a store into GB; the other half move those back out.
    let half = changes.div_ceil(2).min(ids.len());
    let plan: Vec<(bulklink_core::domain::LocationId, bool)> = ids[..half]
        .iter()
        .map(|id| (*id, true))
        .chain(ids[..half].iter().map(|id| (*id, false)))
        .take(changes)
        .collect();
    let began = Instant::now();
    let mut watching = tokio::task::JoinSet::new();
    for (i, (id, into)) in plan.iter().copied().enumerate() {
        tokio::time::sleep_until((began + pace * i as u32).into()).await;
        let country = if into { "GB" } else { "IE" };
        let r = api
            .send(
                reqwest::Method::PATCH,
                &format!("/locations/{id}"),
                Some(&serde_json::json!({ "country": country })),
                &[],
            )
            .await?;
        if r.status != reqwest::StatusCode::OK {
            bail!("changing location {id}: {} {}", r.status, r.body);
        }
        let answered = Instant::now();
        let ports = ports.clone();
        watching.spawn(async move {
            loop {
                let link = ports.catalog.existing_links(offer, &[id]).await?;
                if link[0].is_some() == into {
                    if into && link[0] != Some(LinkedBy::Rule) {
                        bail!("location {id} was linked by {:?}, not the rule", link[0]);
                    }
                    return Ok::<_, anyhow::Error>(answered.elapsed());
                }
                if answered.elapsed() > Duration::from_secs(60) {
                    bail!("the rule did not follow location {id} within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    let mut latencies = Vec::with_capacity(plan.len());
    while let Some(done) = watching.join_next().await {
        latencies.push(done??);
    }
    let took = began.elapsed();
    runtime.shutdown().await;
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1_000.0
    };
    let p99 = at(0.99);
    Ok(format!(
        "rules: {} changes to a brand of {locations} locations, one every {} ms ({:.1} s), \
         followed by the rule `country: GB`\n\
         | latency from the change's 2xx to the link as the rule wants | ms |\n\
         |---|---:|\n\
         | p50 | {:.1} |\n| p90 | {:.1} |\n| p99 | {p99:.1} |\n| max | {:.1} |\n\
         target: p99 ≤ 5,000 ms — {}\n",
        latencies.len(),
        pace.as_millis(),
        took.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(1.0),
        if p99 <= 5_000.0 { "meets" } else { "MISSES" },
    ))
}

/// `bench --import`: a file of `rows` new stores (CSV, written to disk first) imported on the
/// embedded backend, streamed from disk to the server's upload URL. Rows/s of the job, the
/// upload's time, and this process's peak RSS (server, workers and client together) once
/// 100,000 rows are applied and at the end: flat means the file is never held in memory.
pub async fn import(config: RuntimeConfig, rows: u64) -> anyhow::Result<String> {
    use std::io::Write;

    let config = unlimited_callers(config);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stores.csv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(
            file,
            "externalId,name,address,city,region,postcode,country,tags"
        )?;
        for i in 0..rows {
            writeln!(
                file,
                "S-{i:07},Store {i},{i} High Street,City {},,PC{:05},GB,t{};u{}",
                i % 500,
                i % 100_000,
                i % 7,
                i % 3
            )?;
        }
        file.flush()?;
    }
    let bytes = std::fs::metadata(&path)?.len();
    let db = dir.path().join("import.db");
    let brand = BrandId::new_random();
    let runtime = Runtime::start_embedded(&db, config.clone()).await?;
    let api = ApiClient::new(&runtime.base_url)?
        .with_token(config.token(bulklink_http::auth::Role::Brand(brand)));
    reset_peak_rss();
    let began = Instant::now();
    let job = import_file(&api, "csv", false, tokio::fs::File::open(&path).await?).await?;
    let uploaded = began.elapsed().as_secs_f64();
    let mut at_100k = None;
    let view = ended_watching(
        &api,
        job,
        Duration::from_millis(200),
        "import bench job",
        |c| c.created,
        rows,
        |view| {
            if at_100k.is_none() && view.counters.processed >= 100_000.min(rows) {
                at_100k = peak_rss_mib();
            }
        },
    )
    .await?;
    let took = began.elapsed().as_secs_f64();
    let peak = peak_rss_mib().unwrap_or(f64::NAN);
    let report = report_of(&api, job, rows).await?;
    runtime.shutdown().await;
    let ran = match (view.started_at, view.finished_at) {
        (Some(s), Some(f)) => (f - s).num_milliseconds() as f64 / 1_000.0,
        _ => took,
    };
    let at_100k = at_100k.unwrap_or(f64::NAN);
    let flat = peak <= at_100k * 1.10 + 5.0;
    Ok(format!(
        "import: {rows} rows ({:.1} MiB of CSV), every one a new store\n\
         | measure | value |\n|---|---:|\n\
         | upload (streamed from disk) s | {uploaded:.1} |\n\
         | job (file arrived → SUCCEEDED) s | {ran:.1} |\n\
         | rows/s | {:.0} |\n\
         | peak RSS at 100,000 rows, MiB | {at_100k:.1} |\n\
         | peak RSS at the end, MiB | {peak:.1} |\n\
         target: peak RSS < 150 MiB — {}; flat from 100,000 rows (≤ 10% + 5 MiB more) — {}\n",
        bytes as f64 / (1024.0 * 1024.0),
        rows as f64 / ran.max(f64::EPSILON),
        if peak < 150.0 { "meets" } else { "MISSES" },
        if flat { "meets" } else { "MISSES" },
    ) + &report)
}

/// Streams the finished job's whole report (CSV, through the HTTP API and the CLI's client,
/// into a counting sink) and measures its rate and the process's peak RSS while it streams.
async fn report_of(api: &ApiClient, job: JobId, rows: u64) -> anyhow::Result<String> {
    reset_peak_rss();
    let before = peak_rss_mib().unwrap_or(f64::NAN);
    let began = Instant::now();
    let counted = api.report(job, false, None, tokio::io::sink()).await?;
    let took = began.elapsed().as_secs_f64();
    let peak = peak_rss_mib().unwrap_or(f64::NAN);
    anyhow::ensure!(
        counted == rows,
        "the report has {counted} rows, the job {rows}"
    );
    Ok(format!(
        "report of that job: GET /jobs/{{id}}/report, CSV, streamed whole\n\
         | measure | value |\n|---|---:|\n\
         | rows | {counted} |\n\
         | s | {took:.1} |\n\
         | rows/s | {:.0} |\n\
         | RSS before, MiB | {before:.1} |\n\
         | peak RSS while streaming, MiB | {peak:.1} |\n\
         target: peak RSS < 100 MiB — {}\n",
        counted as f64 / took.max(f64::EPSILON),
        if peak < 100.0 { "meets" } else { "MISSES" },
    ))
}

/// Publishes `n` `job.progress` events of one new job of `brand`, each in its own 1-s
/// window of event time (so a subscription with `progressEverySeconds: 1` gets `n`
/// deliveries), all at once. The events' ids, in the order published.
pub async fn publish_progress_windows(
    ports: &bulklink_core::ports::Ports,
    brand: BrandId,
    n: u32,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    use bulklink_core::domain::{Job, JobEvent, OfferId};
    let start = ports.clock.now() - chrono::Duration::seconds(i64::from(n) + 1);
    let mut job = Job::new(brand, OfferId::new_random(), None, start);
    job.status = JobStatus::Running;
    job.counters.total = u64::from(n);
    let mut ids = Vec::new();
    for i in 0..n {
        job.chunks_done = i + 1;
        job.counters.linked = u64::from(i + 1);
        let event = JobEvent::progress(&job, start + chrono::Duration::seconds(i64::from(i)));
        ports.events.publish(&event).await?;
        ids.push(event.event_id);
    }
    Ok(ids)
}

/// `bench --webhook-rate R`: `events` deliveries at once to a receiver whose subscription
/// says `rateLimitPerSec: R`; the arrivals per second at the receiver, the most in any 1-s
/// window, and whether every event arrived.
pub async fn webhook_throttle(
    mut config: RuntimeConfig,
    rate: u32,
    events: u32,
) -> anyhow::Result<String> {
    use crate::receiver::{Receiver, Windows};
    // The receiver listens on loopback: open exactly that range; no name is ever looked up.
    config.egress = bulklink_egress::Egress::new(
        vec!["127.0.0.0/8".parse()?],
        std::sync::Arc::new(bulklink_egress::StaticResolver::default()),
    );
    let config = unlimited_callers(config);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("throttle.db");
    let runtime = Runtime::start_embedded(&db, config.clone()).await?;
    let brand = BrandId::new_random();
    let api = ApiClient::new(&runtime.base_url)?
        .with_token(config.token(bulklink_http::auth::Role::Brand(brand)));
    let mut receiver = Receiver::start().await?;
    let sub: serde_json::Value = api
        .post(
            "/webhooks",
            &serde_json::json!({ "url": receiver.url, "rateLimitPerSec": rate,
                                 "progressEverySeconds": 1 }),
        )
        .await?;
    receiver.trust(sub["secret"].as_str().context("no secret")?)?;
    let started = Instant::now();
    let ids = publish_progress_windows(&runtime.ports, brand, events).await?;
    let mut arrivals = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut unverified = 0;
    // Each delivery's own window holds it for up to 5 s; a spread of `events / rate`
    // seconds, and a minute more, bounds the wait.
    let bound = Duration::from_secs(u64::from(events / rate.max(1)) + 60);
    while seen.len() < ids.len() {
        let got = tokio::time::timeout(bound, receiver.next())
            .await
            .with_context(|| format!("{} of {} arrived", seen.len(), ids.len()))?
            .context("the receiver stopped")?;
        unverified += usize::from(got.verified.is_err());
        arrivals.push(got.arrived);
        if let Some(event) = got.event() {
            seen.insert(event["eventId"].as_str().unwrap_or_default().to_owned());
        }
    }
    let took = started.elapsed();
    runtime.shutdown().await;
    let windows = Windows::of(&arrivals);
    let mut out = format!(
        "webhook throttle: rateLimitPerSec {rate}, {events} deliveries at once\n\
         arrived: {} distinct of {events} ({} requests, {unverified} unverified) in {:.1} s; \
         most in any 1-s window: {} (limit {rate}: {})\n\
         | second | arrivals |\n|---:|---:|\n",
        seen.len(),
        arrivals.len(),
        took.as_secs_f64(),
        windows.most_in_any_second,
        if windows.most_in_any_second <= rate as usize {
            "within"
        } else {
            "OVER"
        },
    );
    for (second, n) in windows.per_second.iter().enumerate() {
        out.push_str(&format!("| {second} | {n} |\n"));
    }
    Ok(out)
}
