//! Test fixtures: a fresh store per test, fast queue settings, and fault injectors that wrap
//! a real port (never a fake of one).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
pub use bulklink::faults::{FaultyCatalog, Halt};
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_aws::{self as aws, AwsClients, AwsNames, LocalEmulator, ResourceNames};
use bulklink_core::domain::{BrandId, Job, JobEvent, JobId};
use bulklink_core::ports::{CreateOutcome, Cursor, EventBus, Page, Ports, Queue, ReceivedMessage};
use bulklink_core::{Settings, StoreError, StoreResult};
use bulklink_sqlite::{self as embedded, EmbeddedStore, LinkStats, SeededBrand};
use chrono::Utc;
use fanout::Fanout;
use worker::ChunkProcessor;

/// Webhook targets on this machine's loopback are allowed (the test receivers); nothing
/// else is, and names resolve only through an empty table.
pub fn loopback_egress() -> bulklink_egress::Egress {
    bulklink_egress::Egress::new(
        vec!["127.0.0.0/8".parse().expect("a CIDR")],
        Arc::new(bulklink_egress::StaticResolver::default()),
    )
}

/// Small pages and chunks (many of each from few locations) and a short visibility timeout.
pub fn fast_settings() -> Settings {
    Settings {
        chunk_size: 50,
        page_size: 200,
        max_receive_count: 3,
        visibility_timeout: Duration::from_secs(1),
        failure_min_sample: 1_000_000,
        // Tests fire requests far faster than a brand may: the limit has its own tests.
        brand_rate_per_sec: 100_000.0,
        brand_rate_burst: 100_000,
        ..Settings::default()
    }
}

/// A subscription filter to a job's outcomes: its terminal events and awaiting approval
/// (what a test waiting for a job's end subscribes to; others hear starts and pauses too).
pub fn outcomes() -> serde_json::Value {
    serde_json::json!({ "eventTypes": bulklink_core::domain::EventType::OUTCOMES })
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Aws,
}

impl Kind {
    /// Moto answers in milliseconds per call: aws runs use a few hundred locations.
    pub fn scale(self, embedded: u64, aws: u64) -> u64 {
        match self {
            Kind::Embedded => embedded,
            Kind::Aws => aws,
        }
    }
}

/// Runs each listed `async fn name(kind: Kind)` as one test per backend:
/// `<module>::embedded::name` and `<module>::aws::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::support::Kind::Embedded).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::support::Kind::Aws).await;
                }
            )*
        }
    };
}

/// One moto server for the whole test process; it exits when the process does.
static EMULATOR: OnceLock<LocalEmulator> = OnceLock::new();

pub fn emulator() -> &'static LocalEmulator {
    EMULATOR.get_or_init(|| {
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        LocalEmulator::start(&workspace).expect("the moto emulator starts")
    })
}

enum Backing {
    Embedded(Arc<EmbeddedStore>),
    Aws {
        clients: Box<AwsClients>,
        names: Box<AwsNames>,
    },
}

/// A fresh backend for one test: an SQLite file in a temporary directory, or tables,
/// queues and a topic of their own on the process's moto server.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    backing: Backing,
}

impl Env {
    /// An embedded backend.
    pub fn new(settings: Settings) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path().join("test.db")).expect("open store");
        Env {
            dir,
            settings,
            backing: Backing::Embedded(store),
        }
    }

    pub async fn of(kind: Kind, mut settings: Settings) -> Env {
        match kind {
            Kind::Embedded => Env::new(settings),
            Kind::Aws => {
                // Room for a chunk's writes on one moto that every parallel test shares
                // (a delivery gives up at 80% of it). SQS counts whole seconds.
                settings.visibility_timeout =
                    settings.visibility_timeout.max(Duration::from_secs(4));
                let endpoint = emulator().endpoint().to_owned();
                let clients = AwsClients::load(Some(&endpoint)).await;
                let prefix = format!("e{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let made =
                    aws::bootstrap(&clients, &endpoint, &ResourceNames { prefix }, &settings)
                        .await
                        .expect("bootstrap on moto");
                Env {
                    dir: tempfile::tempdir().expect("temp dir"),
                    settings,
                    backing: Backing::Aws {
                        clients: Box::new(clients),
                        names: Box::new(made.names),
                    },
                }
            }
        }
    }

    /// The AWS resources of an aws env.
    pub fn aws_names(&self) -> Option<&AwsNames> {
        match &self.backing {
            Backing::Aws { names, .. } => Some(names.as_ref()),
            Backing::Embedded(_) => None,
        }
    }

    /// The SDK clients of an aws env.
    pub fn aws_clients(&self) -> Option<&AwsClients> {
        match &self.backing {
            Backing::Aws { clients, .. } => Some(clients),
            Backing::Embedded(_) => None,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("test.db")
    }

    /// Everything the backend keeps at rest, as bytes: the embedded backend's SQLite file
    /// with its write-ahead log and shared memory; every item of the AWS tables, scanned.
    pub async fn stored_bytes(&self) -> Vec<u8> {
        match &self.backing {
            Backing::Embedded(_) => {
                let mut bytes = Vec::new();
                for entry in std::fs::read_dir(self.dir.path()).unwrap() {
                    let path = entry.unwrap().path();
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    if name.starts_with("test.db") {
                        bytes.extend(std::fs::read(&path).unwrap());
                    }
                }
                bytes
            }
            Backing::Aws { clients, names } => {
                let mut bytes = Vec::new();
                for table in [&names.catalog_table, &names.jobs_table] {
                    let items: Vec<_> = clients
                        .dynamodb
                        .scan()
                        .table_name(table)
                        .into_paginator()
                        .items()
                        .send()
                        .collect::<Vec<_>>()
                        .await;
                    for item in items {
                        for value in item.expect("scan").into_values() {
                            attribute_bytes(&value, &mut bytes);
                        }
                    }
                }
                bytes
            }
        }
    }

    pub fn ports(&self) -> Ports {
        match &self.backing {
            Backing::Embedded(store) => embedded::ports(store, &self.settings),
            Backing::Aws { clients, names } => aws::ports(
                clients,
                names,
                bulklink_core::Clock::system(),
                self.settings.link_shards,
            ),
        }
    }

    /// Starts the whole pipeline on this backend, ports passed through `wrap`.
    pub async fn start(&self, config: RuntimeConfig, wrap: impl FnOnce(Ports) -> Ports) -> Runtime {
        match &self.backing {
            Backing::Embedded(_) => Runtime::start_embedded_with(&self.db(), config, wrap).await,
            Backing::Aws { clients, names } => {
                Runtime::start_aws((**clients).clone(), names, config, wrap).await
            }
        }
        .expect("runtime starts")
    }

    /// A runtime config with this env's settings; loopback webhook receivers allowed.
    /// A runtime's config for this env; it does not follow the estate (`rules` tests turn
    /// that on).
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig {
            settings: self.settings.clone(),
            egress: loopback_egress(),
            follow_estate: false,
            ..Default::default()
        }
    }

    pub async fn seed(&self, locations: u64) -> SeededBrand {
        let brand = BrandId::new_random();
        if let Backing::Embedded(store) = &self.backing {
            return store
                .seed_brand(brand, "test offer", locations)
                .await
                .expect("seed");
        }
        bulklink::seed::seed_brand(&self.ports(), brand, "test offer", locations)
            .await
            .expect("seed")
    }

    /// What the catalog holds for an offer and its brand, read through the ports.
    pub async fn link_stats(&self, seeded: &SeededBrand) -> LinkStats {
        if let Backing::Embedded(store) = &self.backing {
            return store
                .link_stats(seeded.brand_id, seeded.offer_id)
                .await
                .expect("stats");
        }
        bulklink::seed::link_stats(&self.ports(), seeded)
            .await
            .expect("stats")
    }

    /// Everything the backend holds, behind the ports: every row of every SQLite table, or
    /// every item of both DynamoDB tables and the depth of each queue; sorted, as text.
    pub async fn snapshot(&self) -> Vec<String> {
        let mut all = Vec::new();
        match &self.backing {
            Backing::Embedded(_) => {
                let conn = rusqlite::Connection::open(self.db()).expect("open");
                let tables: Vec<String> = conn
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .unwrap()
                    .query_map([], |row| row.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for table in tables {
                    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
                    let columns = stmt.column_count();
                    let rows = stmt
                        .query_map([], |row| {
                            let cells: Vec<String> = (0..columns)
                                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                                .collect();
                            Ok(format!("{table}: {}", cells.join(" | ")))
                        })
                        .unwrap();
                    all.extend(rows.map(Result::unwrap));
                }
            }
            Backing::Aws { clients, names } => {
                for table in [&names.catalog_table, &names.jobs_table] {
                    let mut start = None;
                    loop {
                        let out = clients
                            .dynamodb
                            .scan()
                            .table_name(table)
                            .set_exclusive_start_key(start)
                            .send()
                            .await
                            .expect("scan");
                        for item in out.items.unwrap_or_default() {
                            let sorted: std::collections::BTreeMap<_, _> =
                                item.into_iter().collect();
                            all.push(format!("{table}: {sorted:?}"));
                        }
                        start = out.last_evaluated_key;
                        if start.is_none() {
                            break;
                        }
                    }
                }
                let ports = self.ports();
                for queue in [
                    ports.fanout_queue.raw(),
                    ports.chunk_queue.raw(),
                    ports.webhook_queue.raw(),
                ] {
                    all.push(format!(
                        "{}: {}",
                        queue.name(),
                        queue.depth().await.unwrap()
                    ));
                }
            }
        }
        all.sort();
        all
    }

    /// Rows of the chunk ledger of a job, read behind the ports.
    pub async fn ledger_size(&self, job: JobId) -> u64 {
        match &self.backing {
            Backing::Embedded(store) => store.ledger_size(job).await.expect("ledger"),
            Backing::Aws { clients, names } => {
                let out = clients
                    .dynamodb
                    .query()
                    .table_name(&names.jobs_table)
                    .key_condition_expression("pk = :j AND begins_with(sk, :c)")
                    .expression_attribute_values(":j", AttributeValue::S(format!("JOB#{job}")))
                    .expression_attribute_values(":c", AttributeValue::S("CHUNK#".into()))
                    .select(aws_sdk_dynamodb::types::Select::Count)
                    .send()
                    .await
                    .expect("ledger query");
                out.count as u64
            }
        }
    }
}

/// Creates a PENDING job for the offer, as job-api does (without starting it).
pub async fn create_job(ports: &Ports, seeded: &SeededBrand) -> Job {
    let job = Job::new(seeded.brand_id, seeded.offer_id, None, Utc::now());
    match ports.jobs.create_job(&job, None).await.expect("create job") {
        CreateOutcome::Created(job) => job,
        other => panic!("job not created: {other:?}"),
    }
}

/// Runs fanout for a job to the end, by hand.
pub async fn fan_out(ports: &Ports, settings: &Settings, job: JobId) {
    let far = tokio::time::Instant::now() + Duration::from_secs(3_600);
    Fanout::new(ports.clone(), settings)
        .run(job, far)
        .await
        .expect("fanout");
}

/// Every message currently visible on a queue.
pub async fn drain(queue: &dyn Queue) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let batch = queue.receive(10, Duration::ZERO).await.expect("receive");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Processes every visible chunk message once with `processor`, deleting those that succeed.
pub async fn work_off(ports: &Ports, processor: &ChunkProcessor) -> usize {
    let messages = drain(ports.chunk_queue.as_ref()).await;
    for m in &messages {
        if processor.process(&m.body, m.receive_count).await.is_ok() {
            ports
                .chunk_queue
                .delete(std::slice::from_ref(&m.receipt))
                .await
                .expect("delete");
        }
    }
    messages.len()
}

/// Polls until `check` holds, or fails the test after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the job is terminal and returns it.
pub async fn wait_terminal(ports: &Ports, id: JobId, timeout: Duration) -> Job {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = match ports.jobs.get_job(id).await {
            Ok(job) => job.expect("job exists"),
            // A read that timed out (a fault a test injects, or a loaded emulator) is asked
            // again until the deadline, as any poller would.
            Err(StoreError::Unavailable(e)) if tokio::time::Instant::now() < deadline => {
                eprintln!("get job {id}: {e:?}; asking again");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => panic!("get job: {e:?}"),
        };
        if job.status.is_terminal() {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job still {} after {timeout:?}: {job:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The invariants of a finished job (DESIGN §5.1) against the store's own rows.
pub async fn assert_exact(env: &Env, seeded: &SeededBrand, job: &Job) {
    let c = job.counters;
    assert_eq!(c.processed(), c.total, "counters do not add up: {c:?}");
    assert_eq!(job.chunks_done, job.chunks_total, "chunks accounted");
    let stats = env.link_stats(seeded).await;
    assert_eq!(
        stats.offer_locations_total, stats.offer_links,
        "locationsTotal == Link rows"
    );
    assert_eq!(
        stats.offer_links,
        c.linked + c.already_linked,
        "Link rows == linked by us + others"
    );
    assert_eq!(
        env.ledger_size(job.id).await,
        u64::from(job.chunks_total),
        "one ledger row per chunk"
    );
}

/// Wraps a real queue: every body is sent twice; or sending halts on the n-th batch.
pub struct FaultyQueue {
    pub inner: Arc<dyn Queue>,
    pub duplicate: bool,
    /// Every send waits this long first (a slow queue service).
    pub send_delay: Duration,
    pub halt_on_send: Option<(usize, Arc<Halt>)>,
    pub sends: AtomicUsize,
}

impl FaultyQueue {
    pub fn new(inner: Arc<dyn Queue>) -> Self {
        FaultyQueue {
            inner,
            duplicate: false,
            send_delay: Duration::ZERO,
            halt_on_send: None,
            sends: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Queue for FaultyQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn send_grouped(&self, group: Option<&str>, bodies: &[String]) -> StoreResult<()> {
        let call = self.sends.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.send_delay).await;
        if let Some((n, halt)) = &self.halt_on_send {
            if call == *n {
                halt.stop_here().await;
            }
        }
        self.inner.send_grouped(group, bodies).await?;
        if self.duplicate {
            self.inner.send_grouped(group, bodies).await?;
        }
        Ok(())
    }
    async fn send_delayed(&self, body: &str, delay: Duration) -> StoreResult<()> {
        self.inner.send_delayed(body, delay).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> StoreResult<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipts: &[String]) -> StoreResult<()> {
        self.inner.delete(receipts).await
    }
    async fn depth(&self) -> StoreResult<u64> {
        self.inner.depth().await
    }
}

/// Wraps a real event bus: records the job outcomes published (a job's end, or that it
/// awaits approval), and can refuse to publish them; other events (start, pause, progress)
/// pass through unrecorded.
pub struct RecordingEvents {
    pub inner: Arc<dyn EventBus>,
    pub refuse: AtomicBool,
    pub published: Mutex<Vec<JobEvent>>,
}

impl RecordingEvents {
    pub fn new(inner: Arc<dyn EventBus>) -> Self {
        RecordingEvents {
            inner,
            refuse: AtomicBool::new(false),
            published: Mutex::new(Vec::new()),
        }
    }

    pub fn published(&self) -> Vec<JobEvent> {
        self.published.lock().expect("lock").clone()
    }
}

#[async_trait]
impl EventBus for RecordingEvents {
    async fn publish(&self, event: &JobEvent) -> StoreResult<()> {
        if !bulklink_core::domain::EventType::OUTCOMES.contains(&event.event_type) {
            return self.inner.publish(event).await;
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("injected fault: publish refused"));
        }
        self.inner.publish(event).await?;
        self.published.lock().expect("lock").push(event.clone());
        Ok(())
    }
}

/// Wraps a real webhooks store: the first delivery created, or the first attempt recorded,
/// halts (forever) once stored.
pub struct FaultyWebhooks {
    pub inner: Arc<dyn bulklink_core::ports::Webhooks>,
    pub halt_after_create: Option<Arc<Halt>>,
    pub halt_before_update: Option<Arc<Halt>>,
}

#[async_trait]
impl bulklink_core::ports::Webhooks for FaultyWebhooks {
    async fn create_subscription(
        &self,
        s: &bulklink_core::domain::Subscription,
    ) -> StoreResult<bulklink_core::domain::Subscription> {
        self.inner.create_subscription(s).await
    }
    async fn get_subscription(
        &self,
        id: bulklink_core::domain::SubscriptionId,
    ) -> StoreResult<Option<bulklink_core::domain::Subscription>> {
        self.inner.get_subscription(id).await
    }
    async fn page_brand_subscriptions(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<bulklink_core::domain::Subscription>> {
        self.inner
            .page_brand_subscriptions(brand, after, limit)
            .await
    }
    async fn delete_subscription(
        &self,
        id: bulklink_core::domain::SubscriptionId,
    ) -> StoreResult<bool> {
        self.inner.delete_subscription(id).await
    }
    async fn rotate_secret(
        &self,
        id: bulklink_core::domain::SubscriptionId,
        secret: &bulklink_core::domain::WebhookSecret,
        until: chrono::DateTime<Utc>,
    ) -> StoreResult<Option<bulklink_core::domain::Subscription>> {
        self.inner.rotate_secret(id, secret, until).await
    }
    async fn disable_subscription(
        &self,
        id: bulklink_core::domain::SubscriptionId,
        reason: &str,
    ) -> StoreResult<()> {
        self.inner.disable_subscription(id, reason).await
    }
    async fn create_delivery(
        &self,
        d: &bulklink_core::domain::Delivery,
    ) -> StoreResult<bulklink_core::domain::Delivery> {
        let stored = self.inner.create_delivery(d).await?;
        if let Some(halt) = &self.halt_after_create {
            halt.stop_here().await;
        }
        Ok(stored)
    }
    async fn get_delivery(
        &self,
        s: bulklink_core::domain::SubscriptionId,
        id: bulklink_core::domain::DeliveryId,
    ) -> StoreResult<Option<bulklink_core::domain::Delivery>> {
        self.inner.get_delivery(s, id).await
    }
    async fn update_delivery(
        &self,
        d: &bulklink_core::domain::Delivery,
        expected: u32,
    ) -> StoreResult<bool> {
        if let Some(halt) = &self.halt_before_update {
            halt.stop_here().await;
        }
        self.inner.update_delivery(d, expected).await
    }
    async fn page_subscription_deliveries(
        &self,
        s: bulklink_core::domain::SubscriptionId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<bulklink_core::domain::Delivery>> {
        self.inner
            .page_subscription_deliveries(s, after, limit)
            .await
    }
    async fn page_job_deliveries(
        &self,
        job: JobId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<bulklink_core::domain::Delivery>> {
        self.inner.page_job_deliveries(job, after, limit).await
    }
    async fn overdue_deliveries(
        &self,
        before: chrono::DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<bulklink_core::domain::Delivery>> {
        self.inner.overdue_deliveries(before, limit).await
    }
    async fn enable_subscription(
        &self,
        id: bulklink_core::domain::SubscriptionId,
    ) -> StoreResult<Option<bulklink_core::domain::Subscription>> {
        self.inner.enable_subscription(id).await
    }
    async fn record_failing(
        &self,
        id: bulklink_core::domain::SubscriptionId,
        at: chrono::DateTime<Utc>,
    ) -> StoreResult<Option<chrono::DateTime<Utc>>> {
        self.inner.record_failing(id, at).await
    }
    async fn clear_failing(&self, id: bulklink_core::domain::SubscriptionId) -> StoreResult<()> {
        self.inner.clear_failing(id).await
    }
    async fn take_send_slot(
        &self,
        id: bulklink_core::domain::SubscriptionId,
        now_us: i64,
        spacing_us: i64,
        max_ahead_us: i64,
    ) -> StoreResult<Option<bulklink_core::domain::SendSlot>> {
        self.inner
            .take_send_slot(id, now_us, spacing_us, max_ahead_us)
            .await
    }
    async fn record_event(&self, event: &bulklink_core::domain::Event) -> StoreResult<()> {
        self.inner.record_event(event).await
    }
    async fn page_brand_events(
        &self,
        brand: BrandId,
        since: chrono::DateTime<Utc>,
        until: chrono::DateTime<Utc>,
        after: Option<&bulklink_core::ports::Cursor>,
        limit: usize,
    ) -> StoreResult<bulklink_core::ports::Page<bulklink_core::domain::Event>> {
        self.inner
            .page_brand_events(brand, since, until, after, limit)
            .await
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The answer is a problem+json of `status` whose `detail` says `detail_has`.
pub fn assert_problem(
    r: &bulklink::client::ApiResponse,
    status: reqwest::StatusCode,
    detail_has: &str,
) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(r.body["status"], status.as_u16());
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(detail_has),
        "detail {detail:?} lacks {detail_has:?}"
    );
}

/// The bytes of a DynamoDB attribute's value (strings as UTF-8, binaries as they are),
/// nested ones included.
fn attribute_bytes(value: &AttributeValue, out: &mut Vec<u8>) {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => out.extend(s.as_bytes()),
        AttributeValue::B(b) => out.extend(b.as_ref()),
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => {
            v.iter().for_each(|s| out.extend(s.as_bytes()))
        }
        AttributeValue::Bs(v) => v.iter().for_each(|b| out.extend(b.as_ref())),
        AttributeValue::L(v) => v.iter().for_each(|a| attribute_bytes(a, out)),
        AttributeValue::M(m) => m.iter().for_each(|(k, a)| {
            out.extend(k.as_bytes());
            attribute_bytes(a, out)
        }),
        _ => {}
    }
    out.push(0);
}

/// Where `needle` occurs in `haystack`.
pub fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
