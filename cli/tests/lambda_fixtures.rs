//! The Lambda handlers fed real event JSON (API Gateway HTTP API v2 request, SQS batches,
//! an EventBridge scheduled event) against moto, checking their responses and the state
//! they leave; and the JSON log and EMF metric lines a worker invocation writes.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use bulklink_core::domain::{BrandId, JobStatus, LocationId, OfferId};
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use tower::ServiceExt;
use worker::{ChunkProcessor, Source};

use crate::support::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An SQS event of the fixture record, one per `(message id, body, receive count)`.
fn sqs_event(records: &[(String, String, u32)]) -> SqsEvent {
    let template: Value = serde_json::from_str(&fixture("sqs_record.json")).unwrap();
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body, count)| {
            let mut record = template.clone();
            record["messageId"] = json!(id);
            record["body"] = json!(body);
            record["attributes"]["ApproximateReceiveCount"] = json!(count.to_string());
            record
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn context(request_id: &str) -> Context {
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    context.deadline =
        (chrono::Utc::now() + chrono::Duration::seconds(60)).timestamp_millis() as u64;
    context
}

/// A job of `chunks` chunks fanned out by the fanout handler, its chunk messages drained.
async fn fanned_out_job(
    env: &Env,
    ports: &bulklink_core::Ports,
    chunks: u64,
) -> (
    bulklink_sqlite::SeededBrand,
    bulklink_core::domain::Job,
    Vec<bulklink_core::ports::ReceivedMessage>,
) {
    let seeded = env.seed(chunks * env.settings.chunk_size as u64).await;
    let job = create_job(ports, &seeded).await;
    let fanout = fanout::Fanout::new(ports.clone(), &env.settings);
    let trigger = sqs_event(&[("fanout-1".into(), json!({ "jobId": job.id }).to_string(), 1)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let response = fanout::lambda::handle_sqs_event(&fanout, trigger, deadline)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let messages = drain(ports.chunk_queue.as_ref()).await;
    assert_eq!(messages.len() as u64, chunks);
    (seeded, job, messages)
}

fn small_chunks() -> bulklink_core::Settings {
    let mut settings = fast_settings();
    settings.chunk_size = 10;
    settings
}

/// The API Gateway v2 fixture for the offer, its JWT claims naming `brand` (no claims at
/// all with `None`: the authorizer is off).
fn link_all_request(offer: OfferId, brand: Option<BrandId>) -> LambdaRequest {
    let event = fixture("apigw_v2_link_all.json").replace("OFFER_ID", &offer.to_string());
    let mut event: Value = serde_json::from_str(&event).unwrap();
    match brand {
        Some(brand) => {
            event["requestContext"]["authorizer"]["jwt"]["claims"]["brand_id"] =
                json!(brand.to_string())
        }
        None => {
            event["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("authorizer");
        }
    }
    serde_json::from_value(event).unwrap()
}

async fn through_job_api_lambda(
    env: &Env,
    auth: bulklink_http::auth::Authenticator,
    request: LambdaRequest,
) -> Value {
    let state = bulklink_http::http::ApiState {
        ports: env.ports(),
        egress: bulklink_egress::Egress::default(),
        settings: env.settings.clone(),
        live_rates: Default::default(),
    };
    let router =
        bulklink_http::http::finish_router(job_api::router(state), Arc::new(auth), &env.settings);
    let response = lambda_http::Adapter::from(router)
        .oneshot(LambdaEvent::new(request, context("apigw-req")))
        .await
        .unwrap();
    serde_json::to_value(response).unwrap()
}

fn gateway_auth() -> bulklink_http::auth::Authenticator {
    bulklink_http::auth::Authenticator::from_lambda_env(|_| None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_gateway_v2_request_creates_a_job_through_the_lambda_adapter() {
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let seeded = env.seed(10).await;
    let request = || link_all_request(seeded.offer_id, Some(seeded.brand_id));

    let response = through_job_api_lambda(&env, gateway_auth(), request()).await;
    assert_eq!(response["statusCode"], 202, "{response}");
    let location = response["headers"]["location"].as_str().unwrap().to_owned();
    assert!(location.starts_with("/jobs/"));
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["offerId"], seeded.offer_id.to_string());
    assert_eq!(format!("/jobs/{}", body["id"].as_str().unwrap()), location);
    // The same request again (same Idempotency-Key, same sub) answers with the same job.
    let replay = through_job_api_lambda(&env, gateway_auth(), request()).await;
    assert_eq!(replay["statusCode"], 202);
    assert_eq!(replay["headers"]["location"], location.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_reads_the_caller_from_the_authorizer_claims() {
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let seeded = env.seed(10).await;

    let other = link_all_request(seeded.offer_id, Some(BrandId::new_random()));
    let response = through_job_api_lambda(&env, gateway_auth(), other).await;
    assert_eq!(
        response["statusCode"], 404,
        "another brand's offer: {response}"
    );

    let no_claims = link_all_request(seeded.offer_id, None);
    let response = through_job_api_lambda(&env, gateway_auth(), no_claims).await;
    assert_eq!(response["statusCode"], 401, "{response}");
    assert!(response["headers"]["www-authenticate"]
        .as_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert!(body["detail"].as_str().unwrap().contains("AUTH_MODE=none"));

    let off = bulklink_http::auth::Authenticator::from_lambda_env(|name| {
        (name == "AUTH_MODE").then(|| "none".to_owned())
    })
    .unwrap();
    let response = through_job_api_lambda(&env, off, link_all_request(seeded.offer_id, None)).await;
    assert_eq!(response["statusCode"], 202, "AUTH_MODE=none: {response}");
}

/// A GET through the status function as API Gateway sends one on a route without the
/// authorizer: no claims.
async fn through_status_lambda_without_claims(env: &Env, route: &str, path: &str) -> Value {
    let mut event: Value = serde_json::from_str(&fixture("apigw_v2_link_all.json")).unwrap();
    event["routeKey"] = json!(route);
    event["requestContext"]["routeKey"] = json!(route);
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!("GET");
    event["pathParameters"] = json!({});
    event["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let request: LambdaRequest = serde_json::from_value(event).unwrap();
    let state = bulklink_http::http::ApiState {
        ports: env.ports(),
        egress: bulklink_egress::Egress::default(),
        settings: env.settings.clone(),
        live_rates: Default::default(),
    };
    let router = bulklink_http::http::finish_router(
        status::router(state),
        Arc::new(gateway_auth()),
        &env.settings,
    );
    let response = lambda_http::Adapter::from(router)
        .oneshot(LambdaEvent::new(request, context("apigw-public")))
        .await
        .unwrap();
    serde_json::to_value(response).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_function_serves_the_openapi_document_without_a_caller() {
    let env = Env::of(Kind::Embedded, fast_settings()).await;
    let response =
        through_status_lambda_without_claims(&env, "GET /openapi.json", "/openapi.json").await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::to_value(status::openapi()).unwrap());
    // The same function still refuses the data routes without claims.
    let jobs = through_status_lambda_without_claims(&env, "GET /jobs", "/jobs").await;
    assert_eq!(jobs["statusCode"], 401, "{jobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_function_serves_the_console_without_a_caller() {
    let env = Env::of(Kind::Embedded, fast_settings()).await;
    for (path, content_type) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let response =
            through_status_lambda_without_claims(&env, "GET /console/{proxy+}", path).await;
        assert_eq!(response["statusCode"], 200, "{path}: {response}");
        assert_eq!(response["headers"]["content-type"], content_type, "{path}");
        assert!(!response["body"].as_str().unwrap().is_empty(), "{path}");
    }
    let bare = through_status_lambda_without_claims(&env, "GET /console", "/console").await;
    assert_eq!(bare["statusCode"], 308, "{bare}");
    assert_eq!(bare["headers"]["location"], "console/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_malformed_record_in_a_batch_of_ten_is_the_only_failure_reported() {
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let ports = env.ports();
    let (seeded, job, messages) = fanned_out_job(&env, &ports, 9).await;
    let mut records: Vec<(String, String, u32)> = messages
        .iter()
        .map(|m| (m.message_id.clone(), m.body.clone(), 1))
        .collect();
    records.insert(4, ("malformed-1".into(), "{\"jobId\": 42".into(), 1));
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    let mut metrics = Vec::new();

    let response = worker::lambda::invoke(
        &processor,
        Source::Chunks,
        LambdaEvent::new(sqs_event(&records), context("worker-req-1")),
        &mut metrics,
    )
    .await
    .unwrap();

    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["malformed-1"]);
    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_exact(&env, &seeded, &job).await;
    let lines: Vec<Value> = String::from_utf8(metrics)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every metrics line is JSON"))
        .collect();
    assert_eq!(lines.len(), 9, "one EMF line per handled chunk");
    let emf = &lines[0];
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "bulklink");
    let declared: Vec<&str> = emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in [
        "Linked",
        "AlreadyLinked",
        "Failed",
        "ThrottledRetries",
        "ChunkDuration",
    ] {
        assert!(declared.contains(&name), "{name} declared");
        assert!(emf[name].is_number(), "{name} carried");
    }
    let linked: f64 = lines.iter().map(|l| l["Linked"].as_f64().unwrap()).sum();
    assert_eq!(linked, 90.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_on_its_last_receive_is_accounted_and_the_job_ends() {
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let mut ports = env.ports();
    let mut catalog = FaultyCatalog::new(ports.catalog.clone());
    catalog.fail_link = Box::new(|_: &[LocationId]| true);
    ports.catalog = Arc::new(catalog);
    let (seeded, job, messages) = fanned_out_job(&env, &ports, 1).await;
    let last = env.settings.max_receive_count;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    let event = sqs_event(&[(
        messages[0].message_id.clone(),
        messages[0].body.clone(),
        last,
    )]);

    let response = worker::lambda::invoke(
        &processor,
        Source::Chunks,
        LambdaEvent::new(event, context("worker-req-last")),
        &mut std::io::sink(),
    )
    .await
    .unwrap();

    assert!(
        response.batch_item_failures.is_empty(),
        "accounted, not failed"
    );
    let job = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::CompletedWithErrors);
    assert_eq!(job.counters.failed, 10);
    assert_exact(&env, &seeded, &job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_event_makes_the_sweeper_publish_a_lost_event() {
    let mut settings = small_chunks();
    settings.sweep_idle_after = Duration::ZERO;
    let env = Env::of(Kind::Aws, settings).await;
    let mut ports = env.ports();
    let events = Arc::new(RecordingEvents::new(ports.events.clone()));
    events.refuse.store(true, Ordering::SeqCst);
    ports.events = events.clone();
    let (_, job, messages) = fanned_out_job(&env, &ports, 1).await;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    let _refused_publish = processor.process(&messages[0].body, 1).await;
    let stuck = ports.jobs.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        (stuck.status, stuck.notified_at),
        (JobStatus::Succeeded, None)
    );
    events.refuse.store(false, Ordering::SeqCst);
    let scheduled: Value = serde_json::from_str(&fixture("scheduled_event.json")).unwrap();

    let report = worker::sweeper::handle_scheduled_event(&ports, &env.settings, &scheduled)
        .await
        .unwrap();

    assert_eq!(report["notified"], 1, "{report}");
    assert_eq!(events.published().len(), 1);
    assert!(ports
        .jobs
        .get_job(job.id)
        .await
        .unwrap()
        .unwrap()
        .notified_at
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minute_tick_starts_the_due_jobs_and_offers_and_nothing_else() {
    use bulklink_core::domain::{Job, OfferSchedule};
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let ports = env.ports();
    let now = ports.clock.now();
    let past = now - chrono::Duration::seconds(1);
    // A scheduled job whose time has come, one whose time has not.
    let due = env.seed(3).await;
    let held = |seeded: &bulklink_sqlite::SeededBrand, at| {
        Job {
            not_before: Some(at),
            ..Job::new(
                seeded.brand_id,
                seeded.offer_id,
                None,
                past - chrono::Duration::seconds(1),
            )
        }
        .held(false, past - chrono::Duration::seconds(1))
    };
    let due_job = ports
        .jobs
        .create_job(&held(&due, past), None)
        .await
        .unwrap();
    let later = env.seed(3).await;
    let later_job = held(&later, now + chrono::Duration::hours(1));
    ports.jobs.create_job(&later_job, None).await.unwrap();
    // An offer whose start has come.
    let starting = env.seed(3).await;
    let schedule = OfferSchedule {
        starts_at: Some(past),
        ..Default::default()
    };
    ports
        .catalog
        .set_offer_schedule(starting.offer_id, &schedule)
        .await
        .unwrap();
    ports
        .jobs
        .put_offer_start(starting.offer_id, past)
        .await
        .unwrap();
    let due_job = match due_job {
        bulklink_core::ports::CreateOutcome::Created(job) => job,
        other => panic!("{other:?}"),
    };
    assert_eq!(due_job.status, JobStatus::Scheduled);

    // The EventBridge rule's constant input.
    let report = worker::sweeper::handle_scheduled_event(
        &ports,
        &env.settings,
        &json!({ "task": "release-due" }),
    )
    .await
    .unwrap();

    assert_eq!(report, json!({ "released": 2 }), "releases alone: no sweep");
    let released = ports.jobs.get_job(due_job.id).await.unwrap().unwrap();
    assert_eq!(released.status, JobStatus::Pending);
    let waiting = ports.jobs.get_job(later_job.id).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Scheduled);
    let offer = ports
        .catalog
        .get_offer(starting.offer_id)
        .await
        .unwrap()
        .unwrap();
    let start = offer
        .schedule
        .unwrap()
        .start_job_id
        .expect("the offer's start job");
    assert_eq!(
        ports.jobs.get_job(start).await.unwrap().unwrap().spec.kind,
        bulklink_core::domain::JobKind::LinkAllLocations
    );
    // Both were started: a fanout message each.
    let messages = drain(ports.fanout_queue.raw().as_ref()).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    // A second tick finds nothing.
    let again = worker::sweeper::handle_scheduled_event(
        &ports,
        &env.settings,
        &json!({ "task": "release-due" }),
    )
    .await
    .unwrap();
    assert_eq!(again, json!({ "released": 0 }));
}

/// Collects what the JSON log layer writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_invocation_logs_json_lines_with_request_job_and_chunk() {
    let captured = Captured::default();
    let sink = captured.clone();
    bulklink_core::telemetry::init_with("info", true, move || sink.clone());
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let ports = env.ports();
    let (_, job, messages) = fanned_out_job(&env, &ports, 1).await;
    let processor = ChunkProcessor::new(ports.clone(), &env.settings);
    let event = sqs_event(&[(messages[0].message_id.clone(), messages[0].body.clone(), 1)]);

    worker::lambda::invoke(
        &processor,
        Source::Chunks,
        LambdaEvent::new(event, context("log-req-7")),
        &mut std::io::sink(),
    )
    .await
    .unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "chunk accounted" && l.to_string().contains("log-req-7"))
        .unwrap_or_else(|| panic!("no 'chunk accounted' line of this invocation in:\n{text}"));
    let spans = line["spans"].as_array().unwrap();
    let field = |name: &str| spans.iter().find_map(|s| s.get(name).cloned());
    assert_eq!(field("request_id"), Some(json!("log-req-7")));
    assert_eq!(field("job_id"), Some(json!(job.id.to_string())));
    assert_eq!(field("chunk_seq"), Some(json!("00000000")));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["linked"], 10);
}

/// The environment Lambda gives every function, and the one Terraform adds, for a function
/// binary run under the Runtime API stand-in against this env's moto resources.
pub fn lambda_env(env: &Env, runtime_api: &str, function: &str) -> Vec<(String, String)> {
    let names = env.aws_names().expect("an aws env");
    let mut vars: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", function),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/12/01/[$LATEST]0123456789abcdef",
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", function),
        ("AWS_ENDPOINT_URL", emulator().endpoint()),
        ("LOG_FORMAT", "json"),
    ]
    .into_iter()
    .chain(names.env())
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let s = &env.settings;
    vars.extend([
        ("CHUNK_SIZE".to_owned(), s.chunk_size.to_string()),
        ("FANOUT_PAGE_SIZE".to_owned(), s.page_size.to_string()),
        (
            "MAX_RECEIVE_COUNT".to_owned(),
            s.max_receive_count.to_string(),
        ),
        (
            "VISIBILITY_TIMEOUT_SECS".to_owned(),
            s.visibility_timeout.as_secs_f64().to_string(),
        ),
    ]);
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_logs_the_fields_the_operations_queries_filter_on() {
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let ports = env.ports();
    let (_, job, messages) = fanned_out_job(&env, &ports, 1).await;
    let api = crate::runtime_api::RuntimeApi::start().await;
    let mut worker =
        std::process::Command::new(crate::runtime_api::function_binary("bulklink-worker"))
            .env_clear()
            .envs(lambda_env(&env, &api.host(), "bulklink-worker"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let event = serde_json::to_value(sqs_event(&[(
        messages[0].message_id.clone(),
        messages[0].body.clone(),
        1,
    )]))
    .unwrap();
    let request_id = api.invoke(event, Duration::from_secs(60));

    let outcome = api.outcome(&request_id, Duration::from_secs(60)).await;
    let _ = worker.kill();
    let output = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        outcome,
        Some(crate::runtime_api::Outcome::Response(
            json!({ "batchItemFailures": [] })
        )),
        "{stderr}"
    );
    let line: Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "chunk accounted")
        .unwrap_or_else(|| panic!("no 'chunk accounted' line in:\n{stderr}"));
    // docs/operations.md: `filter spans.0.requestId = "…"` (the runtime's span comes first)
    // and `filter message = "chunk accounted"`; a chunk's lines carry job_id and chunk_seq.
    assert_eq!(line["spans"][0]["requestId"], request_id.as_str(), "{line}");
    assert_eq!(line["spans"][2]["chunk_seq"], "00000000", "{line}");
    let spans = line["spans"].as_array().unwrap();
    let field = |name: &str| spans.iter().find_map(|s| s.get(name).cloned());
    assert_eq!(field("job_id"), Some(json!(job.id.to_string())), "{line}");
    assert_eq!(field("chunk_seq"), Some(json!("00000000")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_function_delivers_a_raw_sns_message_and_leaves_an_undecodable_one_for_its_dlq(
) {
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let ports = env.ports();
    let brand = BrandId::new_random();
    let mut receiver = bulklink::receiver::Receiver::start().await.unwrap();
    let subscription = bulklink_core::domain::Subscription::new(
        bulklink_core::domain::SubscriptionId::new_v7(),
        brand,
        receiver.url.parse().unwrap(),
        Default::default(),
        None,
        chrono::Utc::now(),
    );
    ports
        .webhooks
        .create_subscription(&subscription)
        .await
        .unwrap();
    receiver.trust(subscription.secret.as_str()).unwrap();
    let mut job =
        bulklink_core::domain::Job::new(brand, OfferId::new_random(), None, chrono::Utc::now());
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(chrono::Utc::now());
    let event = bulklink_core::domain::JobEvent::of_status(&job).unwrap();
    // With raw message delivery, the SQS body is the published message itself.
    let raw = serde_json::to_string(&event).unwrap();
    let records = sqs_event(&[
        ("sns-raw-1".into(), raw, 1),
        ("garbage-1".into(), "{\"jobId\": 42".into(), 1),
    ]);
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();
    let mut metrics = Vec::new();

    let response = webhooks::lambda::handle_sqs_event(&deliverer, records, &mut metrics)
        .await
        .unwrap();

    // The one queue policy: never dropped; reported alone, so redrive takes it to the DLQ.
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        vec!["garbage-1"],
        "only the undecodable one is left"
    );
    let delivery = tokio::time::timeout(Duration::from_secs(10), receiver.next())
        .await
        .unwrap()
        .unwrap();
    assert!(delivery.verified.is_ok(), "{:?}", delivery.verified);
    assert_eq!(
        delivery.event().unwrap()["eventId"],
        event.event_id.to_string()
    );
    let emf: Value = serde_json::from_slice(metrics.trim_ascii_end()).unwrap();
    assert_eq!(emf["Function"], "webhooks");
    assert_eq!(emf["WebhookDelivered"], 1.0);
    let log = ports
        .webhooks
        .page_subscription_deliveries(subscription.id, None, 10)
        .await
        .unwrap();
    assert_eq!(log.items.len(), 1);
    assert_eq!(
        log.items[0].status,
        bulklink_core::domain::DeliveryStatus::Succeeded
    );
}

/// A worker instance re-reads the live write budget: after an administrator's change its
/// metrics report the new rate (its share: one instance here), without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_instance_picks_up_a_changed_write_budget() {
    let env = Env::of(Kind::Aws, small_chunks()).await;
    let ports = env.ports();
    let (_, _, messages) = fanned_out_job(&env, &ports, 2).await;
    let api = crate::runtime_api::RuntimeApi::start().await;
    let mut vars = lambda_env(&env, &api.host(), "bulklink-worker");
    vars.extend([
        ("WRITE_BUDGET_PER_SEC".to_owned(), "400".to_owned()),
        ("WORKER_MAX_CONCURRENCY".to_owned(), "1".to_owned()),
        ("WRITE_BUDGET_REFRESH_SECS".to_owned(), "1".to_owned()),
    ]);
    let mut worker =
        std::process::Command::new(crate::runtime_api::function_binary("bulklink-worker"))
            .env_clear()
            .envs(vars)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = worker.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    let last_rate = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|l| l["WriteRatePerSec"].as_f64())
    };
    let deliver = |n: usize| {
        let m = &messages[n];
        let event =
            serde_json::to_value(sqs_event(&[(m.message_id.clone(), m.body.clone(), 1)])).unwrap();
        api.invoke(event, Duration::from_secs(60))
    };
    let id = deliver(0);
    assert!(api.outcome(&id, Duration::from_secs(60)).await.is_some());
    eventually(
        Duration::from_secs(10),
        "the first metrics line",
        || async { last_rate().is_some() },
    )
    .await;
    assert_eq!(last_rate(), Some(400.0));

    ports
        .runtime_settings
        .put_setting(bulklink_core::ports::WRITE_BUDGET_SETTING, "1000")
        .await
        .unwrap();
    // The same chunk again and again (a replay: nothing is written twice) until the
    // instance's refresh has read the change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while last_rate() != Some(1_000.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still at {:?} after 30 s",
            last_rate()
        );
        let id = deliver(1);
        assert!(api.outcome(&id, Duration::from_secs(60)).await.is_some());
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

/// One stream record: event name, keys pk and sk, old and new version, sequence number.
type StreamRecordSpec<'a> = (&'a str, String, &'a str, Option<u64>, Option<u64>, &'a str);

/// A DynamoDB stream event of the fixture record, one per record spec.
fn stream_event(records: &[StreamRecordSpec<'_>]) -> aws_lambda_events::event::dynamodb::Event {
    let template: Value = serde_json::from_str(&fixture("dynamodb_stream_record.json")).unwrap();
    let records: Vec<Value> = records
        .iter()
        .map(|(event, pk, sk, old, new, seq)| {
            let mut record = template.clone();
            record["eventName"] = json!(event);
            let keys = json!({ "pk": { "S": pk }, "sk": { "S": sk } });
            record["dynamodb"]["Keys"] = keys.clone();
            record["dynamodb"]["SequenceNumber"] = json!(seq);
            let image = |version: &Option<u64>| {
                let mut image = keys.clone();
                if let Some(v) = version {
                    image["version"] = json!({ "N": v.to_string() });
                }
                image
            };
            record["dynamodb"]["NewImage"] = image(new);
            if *event == "MODIFY" {
                record["dynamodb"]["OldImage"] = image(old);
            }
            record
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_batch_follows_created_and_changed_locations_and_reports_the_first_it_cannot() {
    use bulklink_core::domain::{
        AttributesChange, LinkedBy, Location, LocationChange, LocationFilter, OfferRule,
    };
    let env = Env::of(Kind::Aws, fast_settings()).await;
    let ports = env.ports();
    let seeded = env.seed(0).await;
    let rule = OfferRule {
        offer_id: seeded.offer_id,
        brand_id: seeded.brand_id,
        filter: LocationFilter {
            country: vec!["GB".parse().unwrap()],
            ..Default::default()
        },
        set_at: ports.clock.now(),
    };
    ports.catalog.put_rule(&rule).await.unwrap();
    let now = ports.clock.now();
    let store = |n: u32| {
        let mut l = Location::new(
            LocationId::new_random(),
            seeded.brand_id,
            format!("{n} High St"),
            now,
        );
        l.attributes.country = Some("GB".parse().unwrap());
        l
    };
    let (created, changed, marked) = (store(1), store(2), store(3));
    ports
        .catalog
        .create_locations(&[created.clone(), changed.clone(), marked.clone()])
        .await
        .unwrap();
    let tagged = LocationChange {
        attributes: AttributesChange {
            tags: Some(vec!["24h".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    ports
        .catalog
        .update_location(changed.id, &tagged)
        .await
        .unwrap();
    let pk = |l: &Location| format!("LOC#{}", l.id);
    let event = stream_event(&[
        ("INSERT", pk(&created), "#LOC", None, None, "100"),
        ("MODIFY", pk(&changed), "#LOC", None, Some(1), "101"),
        // A link's mark leaves the version: not a change the rules follow.
        ("MODIFY", pk(&marked), "#LOC", Some(1), Some(1), "102"),
        (
            "INSERT",
            format!("OFFER#{}", seeded.offer_id),
            &pk(&marked),
            None,
            None,
            "103",
        ),
    ]);
    // An invocation whose deadline leaves no time follows nothing and hands the whole batch
    // back from its first location record.
    let response =
        worker::estate::handle(&ports, event.clone(), Some(tokio::time::Instant::now())).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![Some("100".to_owned())]);
    assert_eq!(
        ports
            .catalog
            .existing_links(seeded.offer_id, &[created.id, changed.id])
            .await
            .unwrap(),
        vec![None, None],
        "nothing is followed without the time to"
    );
    let response = worker::estate::handle(&ports, event, None).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let links = ports
        .catalog
        .existing_links(seeded.offer_id, &[created.id, changed.id, marked.id])
        .await
        .unwrap();
    assert_eq!(
        links,
        vec![Some(LinkedBy::Rule), Some(LinkedBy::Rule), None]
    );

    // A rule that cannot be read fails its record: reported by sequence number, and nothing
    // after it in the batch is followed (the mapping retries from there, in order).
    let other = env.seed(0).await;
    let names = env.aws_names().unwrap();
    env.aws_clients()
        .unwrap()
        .dynamodb
        .put_item()
        .table_name(&names.catalog_table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("OFFER#{}", other.offer_id)),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("#RULE".into()),
        )
        .item(
            "brandId",
            aws_sdk_dynamodb::types::AttributeValue::S(other.brand_id.to_string()),
        )
        .item(
            "where",
            aws_sdk_dynamodb::types::AttributeValue::S("not json".into()),
        )
        .item(
            "setAt",
            aws_sdk_dynamodb::types::AttributeValue::N("0".into()),
        )
        .item(
            "gsi1pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("BRAND#{}", other.brand_id)),
        )
        .item(
            "gsi1sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("RULE#{}", other.offer_id)),
        )
        .send()
        .await
        .unwrap();
    let broken = Location::new(
        LocationId::new_random(),
        other.brand_id,
        "9 Bad Rd".into(),
        now,
    );
    let after = store(4);
    ports
        .catalog
        .create_locations(&[broken.clone(), after.clone()])
        .await
        .unwrap();
    let event = stream_event(&[
        ("INSERT", pk(&broken), "#LOC", None, None, "200"),
        ("INSERT", pk(&after), "#LOC", None, None, "201"),
    ]);
    let response = worker::estate::handle(&ports, event, None).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![Some("200".to_owned())]);
    assert_eq!(
        ports
            .catalog
            .existing_links(seeded.offer_id, &[after.id])
            .await
            .unwrap(),
        vec![None],
        "a record after the failed one waits for the retry"
    );
}
