//! `bulklink demo`: the main job end to end on a fresh embedded store, over real HTTP —
//! seed a brand, subscribe a local webhook receiver, create the job, watch it, and check
//! that every location was linked exactly once.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bulklink_core::domain::{BrandId, JobStatus};
use bulklink_http::views::{JobView, SubscriptionView};
use bulklink_sqlite::LinkStats;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::ApiClient;
use crate::receiver::Receiver;
use crate::runtime::{Runtime, RuntimeConfig};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub locations: u64,
    pub config: RuntimeConfig,
    /// Print progress and results (the CLI); tests run it quietly.
    pub interactive: bool,
    /// Keep the server running after the job, for the console (`run_keeping_console`).
    pub console: bool,
}

/// What `demo --console` keeps running after the job: the server (API, pipeline, console),
/// the webhook receiver (so redeliveries land) and the store's directory.
pub struct ConsoleSession {
    /// The console, with the demo brand's token in the fragment (`#token=…`): a browser
    /// never sends a fragment to the server.
    pub url: String,
    runtime: Runtime,
    receiver: Receiver,
    _dir: tempfile::TempDir,
}

impl ConsoleSession {
    pub async fn shutdown(self) {
        self.receiver.stop();
        self.runtime.shutdown().await;
    }
}

#[derive(Debug)]
pub struct DemoOutcome {
    pub locations: u64,
    pub job: JobView,
    pub event: Value,
    pub notifications: usize,
    /// The delivery's Standard Webhooks signature checked out with the subscription's secret.
    pub signature_verified: bool,
    pub offer_locations_total: u64,
    pub stats: LinkStats,
    pub elapsed: Duration,
}

impl DemoOutcome {
    /// Every promise of the demo, checked; the list of those broken.
    pub fn problems(&self) -> Vec<String> {
        let n = self.locations;
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(what);
            }
        };
        check(
            self.job.status == JobStatus::Succeeded,
            format!("status is {}, not SUCCEEDED", self.job.status),
        );
        check(
            self.job.counters.counters.linked == n,
            format!("linked = {}, not {n}", self.job.counters.counters.linked),
        );
        check(
            self.offer_locations_total == n,
            format!(
                "offer.locationsTotal = {}, not {n}",
                self.offer_locations_total
            ),
        );
        check(
            self.stats.offer_links == n,
            format!("{} Link rows, not {n}", self.stats.offer_links),
        );
        check(
            self.stats.brand_locations_with_offer == n,
            format!(
                "{} locations have hasOffer = true, not {n}",
                self.stats.brand_locations_with_offer
            ),
        );
        check(
            self.notifications == 1,
            format!("{} webhook notifications, not 1", self.notifications),
        );
        check(
            self.signature_verified,
            "the webhook's signature did not verify".to_owned(),
        );
        check(
            self.event["type"] == "job.succeeded",
            format!(
                "webhook event type is {}, not job.succeeded",
                self.event["type"]
            ),
        );
        problems
    }
}

/// Runs the demo and stops everything it started.
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let (outcome, session) = run_keeping_console(options).await?;
    if let Some(session) = session {
        session.shutdown().await;
    }
    Ok(outcome)
}

/// Runs the demo; with `options.console` the server keeps running afterwards and the
/// session to stop it is returned.
pub async fn run_keeping_console(
    options: DemoOptions,
) -> anyhow::Result<(DemoOutcome, Option<ConsoleSession>)> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let db = dir.path().join("bulklink-demo.db");
    let say = |line: String| {
        if options.interactive {
            println!("{line}");
        }
    };

    // The demo's webhook receiver listens on loopback: open exactly that range.
    let mut config = options.config.clone();
    config.egress = bulklink_egress::Egress::new(
        vec!["127.0.0.0/8".parse().expect("a CIDR")],
        std::sync::Arc::new(bulklink_egress::SystemResolver),
    );
    let runtime = Runtime::start_embedded(&db, config).await?;
    let store = runtime
        .embedded_store()
        .context("the demo runs on the embedded backend")?
        .clone();
    let seeded = store
        .seed_brand(BrandId::new_random(), "5% cashback", options.locations)
        .await?;
    say(format!(
        "seeded brand {} with {} locations and offer {}",
        seeded.brand_id, seeded.locations, seeded.offer_id
    ));
    say(format!("API listening on {}", runtime.base_url));

    // The demo's own brand token: every request acts as that brand.
    let token = options
        .config
        .token_for("demo", bulklink_http::auth::Role::Brand(seeded.brand_id));
    let api = ApiClient::new(&runtime.base_url)?.with_token(token.clone());
    let mut receiver = Receiver::start().await?;
    let subscription: SubscriptionView = api
        .post(
            "/webhooks",
            // The job's end: its terminal event (the catalog lists what else there is).
            &json!({
                "url": receiver.url,
                "description": "the demo's receiver",
                "filter": { "eventTypes": [
                    "job.succeeded", "job.completed_with_errors", "job.failed", "job.cancelled"
                ] }
            }),
        )
        .await?;
    receiver.trust(
        subscription
            .secret
            .as_deref()
            .context("a new subscription shows its secret")?,
    )?;
    say(format!(
        "webhook {} subscribed at {}",
        subscription.id, receiver.url
    ));

    let started = Instant::now();
    let job = api
        .create_job(
            seeded.offer_id,
            Some(&format!("demo-{}", seeded.offer_id)),
            None,
        )
        .await?;
    say(format!(
        "POST /offers/{}/link-all-locations → job {}",
        seeded.offer_id, job.id
    ));

    let bar = if options.interactive {
        ProgressBar::new(options.locations)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}",
        )?
        .progress_chars("=> "),
    );
    let timeout = Duration::from_secs(120 + options.locations / 1_000);
    let job = api
        .wait_terminal(job.id, Duration::from_millis(100), timeout, |view| {
            bar.set_length(view.counters.counters.total.max(options.locations));
            bar.set_position(view.counters.processed);
            bar.set_message(format!(
                "{} {:.0}/s",
                view.status,
                view.rate_per_sec.unwrap_or_default()
            ));
        })
        .await?;
    bar.finish();
    let elapsed = started.elapsed();

    let delivery = tokio::time::timeout(Duration::from_secs(30), receiver.next())
        .await
        .context("no webhook delivery within 30 s")?
        .context("webhook receiver stopped")?;
    let event = delivery.event().context("a delivery without an event")?;
    let signature_verified = delivery.verified.is_ok();
    let notifications = 1 + count_further_deliveries(&store, &mut receiver).await?;

    let offer: bulklink_core::domain::Offer =
        api.get(&format!("/offers/{}", seeded.offer_id)).await?;
    let stats = store.link_stats(seeded.brand_id, seeded.offer_id).await?;

    say(String::new());
    say(format!(
        "webhook received (webhook-id {}), signature {}:",
        delivery.webhook_id().unwrap_or("?"),
        match &delivery.verified {
            Ok(()) => "verified (Standard Webhooks v1, the subscription's secret)".to_owned(),
            Err(e) => format!("NOT verified: {e}"),
        }
    ));
    say(serde_json::to_string_pretty(&event)?);
    say(String::new());
    let c = &job.counters.counters;
    say(format!(
        "job {} {} in {:.2} s",
        job.id,
        job.status,
        elapsed.as_secs_f64()
    ));
    say(format!(
        "  total {}  linked {}  alreadyLinked {}  notFound {}  failed {}  cancelled {}",
        c.total, c.linked, c.already_linked, c.not_found, c.failed, c.cancelled
    ));
    say(format!(
        "  offer.locationsTotal {}  Link rows {}  locations with hasOffer {}/{}",
        offer.locations_total,
        stats.offer_links,
        stats.brand_locations_with_offer,
        stats.brand_locations
    ));
    let outcome = DemoOutcome {
        locations: options.locations,
        job,
        event,
        notifications,
        signature_verified,
        offer_locations_total: offer.locations_total,
        stats,
        elapsed,
    };
    if !options.console {
        receiver.stop();
        runtime.shutdown().await;
        return Ok((outcome, None));
    }
    let url = format!("{}/console/#token={token}", runtime.base_url);
    Ok((
        outcome,
        Some(ConsoleSession {
            url,
            runtime,
            receiver,
            _dir: dir,
        }),
    ))
}

/// Once the store holds no pending delivery, every delivery made has arrived: counts
/// those beyond the first.
async fn count_further_deliveries(
    store: &bulklink_sqlite::EmbeddedStore,
    receiver: &mut Receiver,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.delivery_counts().await?.0 != 0 {
        if Instant::now() > deadline {
            bail!("webhook deliveries still pending after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut more = 0;
    while receiver.messages.try_recv().is_ok() {
        more += 1;
    }
    Ok(more)
}
