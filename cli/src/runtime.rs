//! The local runtime: every Lambda's job as tasks of one process, over one backend's ports.
//! The same library code the Lambda functions run; only the loop around it is local.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulklink_aws::{AwsClients, AwsNames};
use bulklink_core::{Clock, Ports, Settings};
use bulklink_egress::Egress;
use bulklink_http::auth::{Authenticator, Role, Verifier};
use bulklink_http::http::ApiState;
use bulklink_sqlite::{self as embedded, EmbeddedStore};
use fanout::Fanout;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use worker::{ChunkProcessor, Source};

use crate::server::{self, ServerLimits};

/// Fanout loops of the local runtime.
const FANOUT_INSTANCES: usize = 2;

/// How the API authenticates callers.
#[derive(Clone)]
pub enum AuthSetup {
    /// HS256 tokens signed with this key (`bulklink token`, or `RuntimeConfig::token`).
    LocalKey(Vec<u8>),
    /// RS256/ES256 tokens of an OIDC issuer, checked against its key set.
    Jwks {
        json: String,
        issuer: String,
        audience: String,
    },
    /// No authentication (`--insecure-no-auth`): every caller is an administrator.
    Disabled,
}

impl std::fmt::Debug for AuthSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthSetup::LocalKey(_) => f.write_str("LocalKey(…)"),
            AuthSetup::Jwks {
                issuer, audience, ..
            } => write!(f, "Jwks({issuer}, {audience})"),
            AuthSetup::Disabled => f.write_str("Disabled"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub settings: Settings,
    pub listen: SocketAddr,
    /// Base URL clients reach the API at; default `http://{listen}`.
    pub public_url: Option<String>,
    /// Each fanout message's deadline, as a Lambda invocation's timeout.
    pub fanout_time_budget: Duration,
    pub sweep_every: Duration,
    /// How often scheduled jobs whose `notBefore` has come are started (with the consumers).
    pub release_every: Duration,
    /// How often every standing rule's drift is counted (with the consumers): a drift that
    /// lasts `Settings::drift_settle` is told as `offer.drift`.
    pub drift_watch_every: Duration,
    /// Start the queue consumers (off: only the API runs, for driving steps by hand).
    pub consumers: bool,
    /// With the consumers, follow location changes with the standing rules (the embedded
    /// feed, or the catalog table's stream on aws). On in production; tests without rules
    /// turn it off to spare the emulator reading a stream nobody needs.
    pub follow_estate: bool,
    /// How callers are authenticated. The default is a fresh local key that only this
    /// config can mint tokens for (`token`): nothing is open by default.
    pub auth: AuthSetup,
    /// The claim naming a caller's brand (`BRAND_CLAIM`).
    pub brand_claim: String,
    /// Where webhooks may go.
    pub egress: Egress,
    pub limits: ServerLimits,
    /// The time of day the store, the API and the pipeline read (the machine's by default).
    pub clock: Clock,
    /// The embedded backend's secrets key file (default: beside the SQLite file).
    pub secrets_key: Option<PathBuf>,
}

impl RuntimeConfig {
    /// A token for `role`, signed with this config's local key.
    pub fn token(&self, role: Role) -> String {
        self.token_for(&format!("{role:?}").to_lowercase(), role)
    }

    /// As `token`, for the principal `sub`.
    pub fn token_for(&self, sub: &str, role: Role) -> String {
        let AuthSetup::LocalKey(key) = &self.auth else {
            panic!(
                "tokens can only be minted with a local key, not {:?}",
                self.auth
            );
        };
        crate::tokens::mint_token(
            key,
            sub,
            &role,
            Duration::from_secs(3_600),
            &self.brand_claim,
            &self.clock,
        )
        .expect("HS256 signing cannot fail")
    }

    fn authenticator(&self) -> anyhow::Result<Authenticator> {
        Ok(match &self.auth {
            AuthSetup::LocalKey(key) => Authenticator::Verify(
                Verifier::hs256(key, &self.brand_claim).with_clock(self.clock.clone()),
            ),
            AuthSetup::Jwks {
                json,
                issuer,
                audience,
            } => Authenticator::Verify(
                Verifier::jwks(json, issuer, audience, &self.brand_claim)
                    .map_err(|e| anyhow::anyhow!("the JWKS: {e}"))?
                    .with_clock(self.clock.clone()),
            ),
            AuthSetup::Disabled => Authenticator::Disabled,
        })
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            settings: Settings::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            fanout_time_budget: Duration::from_secs(60),
            sweep_every: Duration::from_secs(10),
            release_every: Duration::from_secs(1),
            drift_watch_every: Duration::from_secs(15 * 60),
            consumers: true,
            follow_estate: true,
            auth: AuthSetup::LocalKey(random_key()),
            brand_claim: bulklink_http::auth::DEFAULT_BRAND_CLAIM.to_owned(),
            egress: Egress::default(),
            limits: ServerLimits::default(),
            clock: Clock::system(),
            secrets_key: None,
        }
    }
}

/// The backend a runtime runs on.
#[derive(Clone)]
pub enum Backend {
    Embedded(Arc<EmbeddedStore>),
    Aws(AwsClients),
}

pub struct Runtime {
    pub addr: SocketAddr,
    pub base_url: String,
    pub backend: Backend,
    pub ports: Ports,
    /// What `token` signs with: the local key and brand claim, if the API uses one.
    minter: Option<(Vec<u8>, String)>,
    /// The runtime's time of day (its tokens are issued at it).
    pub clock: Clock,
    /// Whether the catalog stream was found empty by a look that began at or after a time
    /// (aws: the estate follower's probe).
    stream_idle: Option<Arc<dyn Fn(Instant) -> bool + Send + Sync>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::fill(&mut key[..]);
    key
}

/// The HTTP API (both routers) and the console, finished once.
pub fn app(state: ApiState, auth: Arc<Authenticator>) -> axum::Router {
    let settings = state.settings.clone();
    let (router, _) = job_api::routes().merge(status::routes()).split_for_parts();
    let router = router.merge(status::console::router()).with_state(state);
    bulklink_http::http::finish_router(router, auth, &settings)
}

impl Runtime {
    /// Opens the SQLite file at `db` and starts the API and every consumer.
    pub async fn start_embedded(db: &Path, config: RuntimeConfig) -> anyhow::Result<Runtime> {
        Self::start_embedded_with(db, config, |ports| ports).await
    }

    /// As `start_embedded`, with the ports passed through `wrap` first: the seam where
    /// tests inject faults at the port boundary.
    pub async fn start_embedded_with(
        db: &Path,
        config: RuntimeConfig,
        wrap: impl FnOnce(Ports) -> Ports,
    ) -> anyhow::Result<Runtime> {
        let secrets_key = config
            .secrets_key
            .clone()
            .unwrap_or_else(|| bulklink_sqlite::secrets_key_beside(db));
        let store = EmbeddedStore::open_with(db, config.clock.clone(), &secrets_key)
            .with_context(|| format!("opening the store at {}", db.display()))?;
        let settings = config.settings.clone();
        let backend = Backend::Embedded(store.clone());
        Self::start(backend, config, move || {
            wrap(embedded::ports(&store, &settings))
        })
        .await
    }

    /// Starts the API and every consumer on AWS resources (or a local emulator of them).
    pub async fn start_aws(
        clients: AwsClients,
        names: &AwsNames,
        config: RuntimeConfig,
        wrap: impl FnOnce(Ports) -> Ports,
    ) -> anyhow::Result<Runtime> {
        let ports = wrap(bulklink_aws::ports(
            &clients,
            names,
            config.clock.clone(),
            config.settings.link_shards,
        ));
        // Positioned before the API answers, so every change it accepts is followed.
        let follower = if config.consumers && config.follow_estate {
            match bulklink_aws::estate::StreamFollower::start(&clients, &names.catalog_table).await
            {
                Ok(follower) => Some(follower),
                Err(e) => {
                    tracing::warn!(error = %e, "standing rules will not follow location changes");
                    None
                }
            }
        } else {
            None
        };
        let mut runtime = Self::start(Backend::Aws(clients), config, move || ports).await?;
        if let Some(follower) = follower {
            runtime.stream_idle = Some(Arc::new(follower.idle_probe()));
            let watcher = runtime.shutdown.subscribe();
            runtime
                .tasks
                .spawn(follower.run(runtime.ports.clone(), watcher));
        }
        Ok(runtime)
    }

    /// Whether every location change accepted before `since` has been followed by the
    /// rules: the embedded feed is empty, or the catalog stream was found empty by a look
    /// that began after `since`.
    pub async fn estate_followed_since(&self, since: Instant) -> anyhow::Result<bool> {
        match (&self.backend, &self.stream_idle) {
            (Backend::Embedded(store), _) => Ok(store.estate_changes(1).await?.is_empty()),
            (Backend::Aws(_), Some(idle)) => Ok(idle(since)),
            (Backend::Aws(_), None) => anyhow::bail!("this runtime does not follow the stream"),
        }
    }

    async fn start(
        backend: Backend,
        config: RuntimeConfig,
        make_ports: impl FnOnce() -> Ports,
    ) -> anyhow::Result<Runtime> {
        config.settings.validate()?;
        let auth = Arc::new(config.authenticator()?);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let ports = make_ports();
        let egress = config.egress.clone().with_clock(config.clock.clone());
        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let live_rates = bulklink_core::budget::LiveRates::default();
        let state = ApiState {
            ports: ports.clone(),
            egress: egress.clone(),
            settings: config.settings.clone(),
            live_rates: live_rates.clone(),
        };
        tasks.spawn(server::serve(
            listener,
            app(state, auth),
            config.limits,
            watcher.clone(),
        ));
        if let Backend::Embedded(store) = &backend {
            tasks.spawn(watch_database_file(store.clone(), watcher.clone()));
        }

        if config.consumers {
            // Several fanout instances, as Lambda runs one invocation per message: one
            // brand's long fanout never holds up another brand's start.
            let fanout = Arc::new(Fanout::new(ports.clone(), &config.settings));
            for _ in 0..FANOUT_INSTANCES {
                tasks.spawn(fanout::run_queue_loop(
                    fanout.clone(),
                    ports.fanout_queue.raw().clone(),
                    config.fanout_time_budget,
                    watcher.clone(),
                ));
            }
            // One processor per worker: each holds its own share of the write budget,
            // as each Lambda instance does.
            for n in 1..=config.settings.worker_concurrency {
                let mut processor = ChunkProcessor::new(ports.clone(), &config.settings)
                    .with_live_rates(live_rates.clone(), &format!("worker-{n}"));
                if let Backend::Aws(clients) = &backend {
                    let counter = clients.counter.clone();
                    processor =
                        processor.with_throttle_probe(Arc::new(move || counter.throttles()));
                }
                let processor = Arc::new(processor);
                tasks.spawn(worker::run_queue_loop(
                    processor,
                    ports.chunk_queue.raw().clone(),
                    Source::Chunks,
                    watcher.clone(),
                ));
            }
            let dead_letters = Arc::new(ChunkProcessor::new(ports.clone(), &config.settings));
            tasks.spawn(worker::run_queue_loop(
                dead_letters,
                ports.chunk_dlq.raw().clone(),
                Source::DeadLetters,
                watcher.clone(),
            ));
            // The same deliverer on both backends, over the backend's webhook queue.
            let deliverer = Arc::new(webhooks::Deliverer::new(
                &ports,
                egress.clone(),
                &config.settings,
            )?);
            tasks.spawn(webhooks::run_queue_loop(
                deliverer,
                ports.webhook_queue.raw().clone(),
                watcher.clone(),
            ));
            if let (Backend::Embedded(store), true) = (&backend, config.follow_estate) {
                tasks.spawn(run_estate_follower(
                    ports.clone(),
                    store.clone(),
                    watcher.clone(),
                ));
            }
            tasks.spawn(run_scheduler(
                ports.clone(),
                config.release_every,
                watcher.clone(),
            ));
            tasks.spawn(run_drift_watch(
                ports.clone(),
                config.drift_watch_every,
                config.settings.drift_settle,
                watcher.clone(),
            ));
            tasks.spawn(run_sweeper(
                ports.clone(),
                match &backend {
                    Backend::Embedded(store) => Some(store.clone()),
                    Backend::Aws(_) => None,
                },
                config.sweep_every,
                config.settings.clone(),
                watcher.clone(),
            ));
        }
        tracing::info!(%addr, "bulklink running");
        let minter = match &config.auth {
            AuthSetup::LocalKey(key) => Some((key.clone(), config.brand_claim.clone())),
            _ => None,
        };
        Ok(Runtime {
            addr,
            base_url,
            backend,
            ports,
            minter,
            clock: config.clock.clone(),
            stream_idle: None,
            shutdown,
            tasks,
        })
    }

    /// A token this runtime's API accepts, for `role` (principal `sub`). Only with a local key.
    pub fn token_for(&self, sub: &str, role: Role) -> anyhow::Result<String> {
        let (key, claim) = self
            .minter
            .as_ref()
            .context("this runtime does not verify tokens with a local key")?;
        Ok(crate::tokens::mint_token(
            key,
            sub,
            &role,
            Duration::from_secs(3_600),
            claim,
            &self.clock,
        )?)
    }

    /// An API client acting as `role`.
    pub fn api_as(&self, role: Role) -> anyhow::Result<crate::client::ApiClient> {
        let sub = match &role {
            Role::Admin => "admin".to_owned(),
            Role::Brand(brand) => format!("brand-{brand}"),
        };
        Ok(crate::client::ApiClient::new(&self.base_url)?.with_token(self.token_for(&sub, role)?))
    }

    /// The embedded store, when running on the embedded backend.
    pub fn embedded_store(&self) -> Option<&Arc<EmbeddedStore>> {
        match &self.backend {
            Backend::Embedded(store) => Some(store),
            Backend::Aws(_) => None,
        }
    }

    /// Stops every task, letting each finish the message in hand.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Logs an error when the SQLite file is removed or replaced under the running server
/// (`/healthz` answers 503 meanwhile), and again when it is back.
async fn watch_database_file(store: Arc<EmbeddedStore>, mut shutdown: watch::Receiver<bool>) {
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match (store.check_file(), healthy) {
            (Err(problem), true) => {
                tracing::error!(path = %store.path().display(), problem = %problem, "database file lost");
                healthy = false;
            }
            (Ok(()), false) => {
                tracing::info!(path = %store.path().display(), "database file is back");
                healthy = true;
            }
            _ => {}
        }
    }
}

/// How often the estate follower looks for location changes when it found none.
const ESTATE_POLL: Duration = Duration::from_millis(50);
/// Changes the estate follower reads at once.
const ESTATE_BATCH: usize = 500;

/// Follows location changes (the `estate_changes` feed, in the order they were written)
/// with the rules of their brands: one follower, so one location's changes are followed in
/// order. A change is removed once followed; a failure is logged and the batch is read
/// again after a pause, so nothing is lost.
async fn run_estate_follower(
    ports: Ports,
    store: Arc<EmbeddedStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = ESTATE_POLL;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let followed = async {
            let changes = store.estate_changes(ESTATE_BATCH).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                return Ok::<_, bulklink_core::StoreError>(false);
            };
            // A location changed twice in the batch is followed once, as it is now.
            let mut seen = std::collections::HashSet::new();
            for change in &changes {
                if seen.insert(change.location_id) {
                    bulklink_core::rules::follow(&ports, change.location_id).await?;
                }
            }
            store.followed_estate_changes(last).await?;
            Ok(true)
        }
        .await;
        pause = match followed {
            Ok(true) => continue,
            Ok(false) => ESTATE_POLL,
            Err(e) => {
                tracing::warn!(error = %e, "following location changes failed; retrying");
                (pause * 2).min(Duration::from_secs(5))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Starts scheduled jobs whose `notBefore` has come, every `every` (a second).
async fn run_scheduler(ports: Ports, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(e) = bulklink_core::lifecycle::release_due(&ports).await {
            tracing::warn!(error = %e, "releasing scheduled jobs failed");
        }
    }
}

/// Counts every standing rule's drift, every `every` (`rules::watch_drift`).
async fn run_drift_watch(
    ports: Ports,
    every: Duration,
    settle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match bulklink_core::rules::watch_drift(&ports, settle).await {
            Ok(report) if report.drifting > 0 => tracing::info!(?report, "drift watch"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the drift watch failed"),
        }
    }
}

async fn run_sweeper(
    ports: Ports,
    store: Option<Arc<EmbeddedStore>>,
    every: Duration,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let (idle_since, pending_since) = settings.sweep_thresholds(ports.clock.now());
        match bulklink_core::lifecycle::sweep(&ports, idle_since, pending_since).await {
            Ok(report) if report != Default::default() => tracing::info!(?report, "sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
        if let Some(store) = &store {
            if let Err(e) = store.expire_deliveries(ports.clock.now()).await {
                tracing::warn!(error = %e, "expiring old webhook deliveries failed");
            }
        }
    }
}
