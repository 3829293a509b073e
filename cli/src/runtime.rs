//! The local runtime: every Lambda's job as tasks of one process, over one backend's ports.
//! The same library code the Lambda functions run; only the loop around it is local.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fanout::Fanout;
use shared::aws::{AwsClients, AwsNames};
use shared::embedded::{self, DeliveryPolicy, EmbeddedStore, WebhookDelivery};
use shared::{Ports, Settings};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use worker::{ChunkProcessor, Source};

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub settings: Settings,
    pub listen: SocketAddr,
    /// Base URL clients (and webhook receivers) reach the API at; default `http://{listen}`.
    pub public_url: Option<String>,
    /// Each fanout message's deadline, as a Lambda invocation's timeout.
    pub fanout_time_budget: Duration,
    pub delivery: DeliveryPolicy,
    pub sweep_every: Duration,
    /// Start the queue consumers (off: only the API runs, for driving steps by hand).
    pub consumers: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            settings: Settings::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            fanout_time_budget: Duration::from_secs(60),
            delivery: DeliveryPolicy::default(),
            sweep_every: Duration::from_secs(30),
            consumers: true,
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
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// The HTTP API: both routers, finished once.
pub fn app(ports: Ports) -> axum::Router {
    shared::http::finish_router(job_api::router(ports.clone()).merge(status::router(ports)))
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
        let store = EmbeddedStore::open(db)
            .with_context(|| format!("opening the store at {}", db.display()))?;
        let settings = config.settings.clone();
        let backend = Backend::Embedded(store.clone());
        Self::start(backend, config, move |base_url| {
            wrap(embedded::ports(&store, &settings, base_url))
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
        let ports = wrap(shared::aws::ports(&clients, names));
        Self::start(Backend::Aws(clients), config, move |_| ports).await
    }

    async fn start(
        backend: Backend,
        config: RuntimeConfig,
        make_ports: impl FnOnce(&str) -> Ports,
    ) -> anyhow::Result<Runtime> {
        config.settings.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let ports = make_ports(&base_url);
        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let server = axum::serve(listener, app(ports.clone()));
        let mut stop = watcher.clone();
        tasks.spawn(async move {
            let graceful = server.with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = graceful.await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });

        if config.consumers {
            let fanout = Arc::new(Fanout::new(ports.clone(), &config.settings));
            tasks.spawn(fanout::run_queue_loop(
                fanout,
                ports.fanout_queue.clone(),
                config.fanout_time_budget,
                watcher.clone(),
            ));
            // One processor per worker: each holds its own share of the write budget,
            // as each Lambda instance does.
            for _ in 0..config.settings.worker_concurrency {
                let processor = Arc::new(ChunkProcessor::new(ports.clone(), &config.settings));
                tasks.spawn(worker::run_queue_loop(
                    processor,
                    ports.chunk_queue.clone(),
                    Source::Chunks,
                    watcher.clone(),
                ));
            }
            let dead_letters = Arc::new(ChunkProcessor::new(ports.clone(), &config.settings));
            tasks.spawn(worker::run_queue_loop(
                dead_letters,
                ports.chunk_dlq.clone(),
                Source::DeadLetters,
                watcher.clone(),
            ));
            // On AWS, SNS delivers webhooks itself.
            if let Backend::Embedded(store) = &backend {
                let delivery = WebhookDelivery::new(store.clone(), config.delivery.clone())?;
                tasks.spawn(delivery.run(watcher.clone()));
            }
            tasks.spawn(run_sweeper(
                ports.clone(),
                config.sweep_every,
                config.settings.sweep_idle_after,
                watcher.clone(),
            ));
        }
        tracing::info!(%addr, "bulklink running");
        Ok(Runtime {
            addr,
            base_url,
            backend,
            ports,
            shutdown,
            tasks,
        })
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

async fn run_sweeper(
    ports: Ports,
    every: Duration,
    idle_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let idle_since = chrono::Utc::now()
            - chrono::Duration::from_std(idle_after).unwrap_or(chrono::Duration::MAX);
        match shared::lifecycle::sweep(&ports, idle_since).await {
            Ok(report) if report != Default::default() => tracing::info!(?report, "sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}
