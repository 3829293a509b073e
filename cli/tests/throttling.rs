//! Throttling and timeouts, as the real SDK meets them: a proxy in front of moto answers
//! some DynamoDB requests with `ProvisionedThroughputExceededException` or
//! `ThrottlingException`, or answers too late. The SDK retries them with backoff, errors that
//! outlast its retries are retryable, and the job still ends with exact counts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use bulklink::proxy::{from_first_throttle, throttled_share, Capacity, Fault, Proxy, Rule};
use bulklink_aws::AwsClients;
use bulklink_core::domain::{JobStatus, OfferId};

use crate::support::*;

async fn start_proxy(rule: Rule) -> (String, Proxy) {
    let proxy = Proxy::start(emulator().endpoint(), rule).await.unwrap();
    (proxy.url.clone(), proxy)
}

/// Clients through the proxy: the product's standard retry mode, with test-sized backoff
/// and attempt timeout.
async fn clients_via(endpoint: &str, max_attempts: u32) -> AwsClients {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(20)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(1))
                .build(),
        )
        .load()
        .await;
    AwsClients::from_config(&config)
}

/// The whole pipeline on `env`'s resources through `clients`, and an API client of `brand`.
async fn pipeline_via(
    env: &Env,
    clients: AwsClients,
    brand: bulklink_core::domain::BrandId,
) -> (bulklink::runtime::Runtime, bulklink::client::ApiClient) {
    // No scheduled jobs here: the scheduler's second-by-second query of the emulator would
    // only add to the load whose timing this measures.
    let config = bulklink::runtime::RuntimeConfig {
        release_every: std::time::Duration::from_secs(3_600),
        ..env.config()
    };
    let pipeline =
        bulklink::runtime::Runtime::start_aws(clients, env.aws_names().unwrap(), config, |ports| {
            ports
        })
        .await
        .unwrap();
    let api = pipeline
        .api_as(bulklink_http::auth::Role::Brand(brand))
        .unwrap();
    (pipeline, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_under_throttling_and_timeouts_still_ends_with_exact_counts() {
    // A visibility timeout with room for retries and backoff, as in production.
    let mut settings = fast_settings();
    settings.visibility_timeout = Duration::from_secs(20);
    settings.max_receive_count = 5;
    let env = Env::of(Kind::Aws, settings).await;
    let n = 200;
    let seeded = env.seed(n).await;
    let (endpoint, proxy) =
        start_proxy(Arc::new(|_target: &str, _: &[u8], i: usize| match i % 23 {
            3 | 10 | 17 => Fault::Throttle("ProvisionedThroughputExceededException"),
            6 | 20 => Fault::Throttle("ThrottlingException"),
            13 => Fault::Late,
            _ => Fault::Pass,
        }))
        .await;
    let clients = clients_via(&endpoint, 8).await;
    let counter = clients.counter.clone();
    let (pipeline, api) = pipeline_via(&env, clients, seeded.brand_id).await;

    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(180)).await;

    let failures = pipeline
        .ports
        .ledger
        .page_failures(job.id, None, 5)
        .await
        .unwrap();
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "{:?} {:?}",
        job.counters,
        failures.items.first()
    );
    assert_eq!(job.counters.linked, n);
    assert_exact(&env, &seeded, &job).await;
    assert_eq!(env.link_stats(&seeded).await.brand_locations_with_offer, n);
    let (throttled, late) = (
        proxy.throttled.load(Ordering::SeqCst),
        proxy.late.load(Ordering::SeqCst),
    );
    assert!(
        throttled >= 20,
        "only {throttled} throttling answers injected"
    );
    assert!(late >= 5, "only {late} late answers injected");
    let dynamo: (u64, u64) = counter
        .snapshot()
        .iter()
        .filter(|((service, _), _)| service == "DynamoDB")
        .fold((0, 0), |(c, a), (_, n)| (c + n.calls, a + n.attempts));
    assert!(
        dynamo.1 >= dynamo.0 + throttled as u64,
        "the SDK retried every throttled request: {dynamo:?}"
    );
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_outlasts_the_sdk_retries_is_a_retryable_error() {
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let (endpoint, proxy) = start_proxy(Arc::new(|target: &str, _: &[u8], _| {
        if target.ends_with(".GetItem") {
            Fault::Throttle("ProvisionedThroughputExceededException")
        } else {
            Fault::Pass
        }
    }))
    .await;
    let clients = clients_via(&endpoint, 3).await;
    let ports = bulklink_aws::ports(
        &clients,
        env.aws_names().unwrap(),
        bulklink_core::Clock::system(),
        8,
    );

    let err = ports
        .catalog
        .get_offer(OfferId::new_random())
        .await
        .unwrap_err();

    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("ProvisionedThroughputExceededException"),
        "{err}"
    );
    assert_eq!(
        proxy.throttled.load(Ordering::SeqCst),
        3,
        "three attempts, all throttled"
    );
}

/// (throttled, all) of the write answers since `since`; of their later half (the second
/// half of the job's writes, however long stalls between them took); and of the later half
/// of those from the first throttle on (the budget's first meeting with the capacity: on a
/// loaded machine the emulator's own slowness can keep a job under the capacity until late
/// in it).
#[allow(clippy::type_complexity)]
fn shares(
    capacity: &Capacity,
    since: std::time::Instant,
) -> ((usize, usize), (usize, usize), (usize, usize)) {
    let answers = capacity.answers_since(since);
    let after = from_first_throttle(&answers);
    (
        throttled_share(&answers),
        throttled_share(&answers[answers.len() / 2..]),
        throttled_share(&after[after.len() / 2..]),
    )
}

/// A budget three times what the table can take: the offer's links share one partition key
/// of 20 writes a second, so the job can write about 40 a second (a link and a location
/// each), and the budget is 120. The job ends exact, and the adaptive limiter brings the
/// throttled share of writes in the job's second half under 10% — where the decrease
/// disabled measures about 36%. (The 5% target is the benchmark's, on a quiet machine:
/// beside the whole suite's emulator load this test has measured 5.3–5.8%.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_above_the_tables_capacity_converges_to_it_instead_of_burning_retries() {
    // Well under what moto takes when the whole suite runs, so the budget meets it.
    const PER_KEY: f64 = 20.0;
    let mut settings = fast_settings();
    settings.chunk_size = 10;
    settings.visibility_timeout = Duration::from_secs(30);
    settings.max_receive_count = 5;
    settings.worker_concurrency = 4;
    settings.write_budget_per_sec = Some(3.0 * 2.0 * PER_KEY);
    // The offer's links in one partition key: the hot key this models (sharded links,
    // docs/benchmarks.md "Sharded links", spread them over eight and measure apart).
    settings.link_shards = 1;
    let env = Env::of(Kind::Aws, settings).await;
    let n = 400;
    let seeded = env.seed(n).await;
    let capacity = Capacity::new(PER_KEY);
    let (endpoint, _proxy) = start_proxy(capacity.rule()).await;
    // The product's number of attempts (its backoff scaled down, as elsewhere here).
    let clients = clients_via(&endpoint, bulklink_aws::SDK_MAX_ATTEMPTS).await;
    let (pipeline, api) = pipeline_via(&env, clients, seeded.brand_id).await;

    let started = std::time::Instant::now();
    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(240)).await;
    let took = started.elapsed();
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.counters);
    assert_eq!(job.counters.linked, n);
    assert_exact(&env, &seeded, &job).await;

    let ((all_throttled, all_writes), (late_throttled, late_writes), (throttled, writes)) =
        shares(&capacity, started);
    let share = throttled as f64 / writes as f64;
    println!(
        "capacity model: {n} locations in {:.1} s; throttled {all_throttled} of {all_writes} \
         write answers overall, {late_throttled} of {late_writes} ({:.2}%) in the job's second \
         half, {throttled} of {writes} ({:.2}%) in the second half from the first throttle on",
        took.as_secs_f64(),
        100.0 * late_throttled as f64 / late_writes as f64,
        100.0 * share
    );
    assert!(
        all_throttled > 0,
        "the budget never met the modelled capacity"
    );
    assert!(
        share < 0.10,
        "{throttled} of {writes} writes throttled in the second half from the first throttle on"
    );
    pipeline.shutdown().await;
}

/// A rate-limited subscription's send slot is asked for a quarter of a second ahead: time
/// enough for DynamoDB's answer, not for a store answering in seconds (a loaded table, or
/// its emulator under a long run). There, every answer came after its slot, and each
/// attempt, sent back to ask again, found the same, for as long as the store was slow. The
/// deliverer notes how long the store takes to answer and asks that much further ahead:
/// through a proxy that answers every read of the subscription 1.5 s late, the delivery
/// is sent within a few tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_delivery_gets_sent_when_the_store_answers_for_its_slot_late() {
    use bulklink_core::domain::WebhookMessage;
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let rule: Rule = Arc::new(|target: &str, body: &[u8], _| {
        let read_of_subscription = target.ends_with(".GetItem")
            && std::str::from_utf8(body).is_ok_and(|b| b.contains("\"#WEBHOOK\""));
        if read_of_subscription {
            Fault::Late
        } else {
            Fault::Pass
        }
    });
    let (endpoint, proxy) = start_proxy(rule).await;
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await;
    let runtime = bulklink::runtime::Runtime::start_aws(
        AwsClients::from_config(&config),
        env.aws_names().unwrap(),
        bulklink::runtime::RuntimeConfig {
            consumers: false,
            ..env.config()
        },
        |ports| ports,
    )
    .await
    .unwrap();
    let ports = runtime.ports.clone();
    let brand = bulklink_core::domain::BrandId::new_random();
    let mut receiver = bulklink::receiver::Receiver::start().await.unwrap();
    let sub = crate::webhooks::stored_subscription(&ports, brand, &receiver.url, |s| {
        s.rate_limit_per_sec = Some(1)
    })
    .await;
    receiver.trust(sub.secret.as_str()).unwrap();
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();
    let event = crate::webhooks::succeeded_event(brand, ports.clock.now());

    let mut report = deliverer
        .handle(&WebhookMessage::Event(event).encode())
        .await
        .unwrap();
    let mut tries = 1;
    while report.delivered == 0 {
        assert!(
            tries < 4,
            "not sent in {tries} tries: each answer came after its slot ({report:?})"
        );
        let message = crate::webhooks::next_webhook_message(&ports).await;
        report = deliverer.handle(&message.body).await.unwrap();
        ports
            .webhook_queue
            .delete(&[message.receipt])
            .await
            .unwrap();
        tries += 1;
    }

    assert!(
        proxy.late.load(Ordering::SeqCst) >= 2,
        "the reads were late"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), receiver.next())
        .await
        .expect("a delivery")
        .expect("the receiver runs");
    assert!(got.verified.is_ok(), "{:?}", got.verified);
    runtime.shutdown().await;
}
