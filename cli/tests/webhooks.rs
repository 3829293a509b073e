//! Webhooks end to end, on both backends: Standard Webhooks signatures a reference library
//! verifies, rotation, retries and 410, redelivery, no head-of-line blocking, callbackUrl,
//! the delivery log, at-least-once delivery across a crash, secrets sealed at rest, and a
//! rule's lasting drift told as `offer.drift`.

use std::collections::HashSet;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::StatusCode;
use bulklink::client::ApiClient;
use bulklink::receiver::{Received, Receiver};
use bulklink::runtime::Runtime;
use bulklink_core::domain::{BrandId, EventType, WebhookSecret};
use bulklink_http::auth::Role;
use bulklink_http::views::SubscriptionView;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

crate::on_both_backends!(
    a_standard_webhooks_library_verifies_every_delivery_and_refuses_forgeries,
    after_a_rotation_deliveries_verify_with_the_new_secret_and_the_old_one,
    a_receiver_failing_for_30_seconds_gets_the_event_then_and_the_log_shows_every_attempt,
    a_receiver_answering_410_disables_its_subscription_and_hears_nothing_more,
    redeliver_sends_a_delivered_event_again_with_the_same_webhook_id,
    fifty_hanging_receivers_do_not_delay_a_healthy_one,
    a_callback_url_hears_a_job_that_ends_at_once,
    a_brands_webhooks_hear_only_its_own_brand,
    the_event_catalog_describes_every_type_and_a_real_delivery_matches_its_schema,
    a_subscription_hears_a_jobs_start_pause_resume_progress_and_end_as_the_catalog_describes,
    a_test_send_is_verified_by_the_standard_webhooks_library_and_logged_whatever_the_filter,
    a_progress_event_in_a_window_with_another_events_delivery_adds_no_attempt,
    a_replay_sends_a_ranges_events_again_in_order_with_their_webhook_ids,
    a_replay_out_of_time_hands_the_rest_on_and_misses_nothing,
    a_rate_limited_subscription_gets_every_event_and_never_more_than_its_rate_a_second,
    a_subscription_failing_for_five_days_is_disabled_its_brand_told_and_enable_brings_it_back,
    a_throttled_delivery_waiting_its_turn_is_not_taken_for_a_lost_one,
    a_throttled_delivery_sent_back_on_the_queue_keeps_its_send_slot,
    a_burst_to_one_endpoint_over_its_cap_is_sent_now_not_sent_back,
    a_secret_stored_in_plaintext_before_sealing_is_sealed_and_still_signs,
    a_rules_lasting_drift_is_told_once_a_stretch_after_the_settling_time,
);

/// Validates `instance` against the JSON Schema `schema` with the Python `jsonschema`
/// library (draft 2020-12, formats checked): `Err` with its message when it does not.
fn json_schema_check(schema: &Value, instance: &Value) -> Result<(), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = "import json, sys, jsonschema\n\
        doc = json.load(sys.stdin)\n\
        v = jsonschema.Draft202012Validator(doc['schema'], format_checker=jsonschema.FormatChecker())\n\
        errors = [e.message for e in v.iter_errors(doc['instance'])]\n\
        print(json.dumps(errors))\n";
    let mut child = Command::new(root.join(".venv/bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the venv's python (scripts/test.sh installs jsonschema with schemathesis)");
    let doc = json!({ "schema": schema, "instance": instance }).to_string();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), doc.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the validator ran");
    let errors: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// `GET /webhooks/event-types` names every event type with a description, the JSON Schema
/// of its delivery's body and an example that passes it; a real delivery passes the
/// schema of its type and no other's; a body without its counters passes none.
async fn the_event_catalog_describes_every_type_and_a_real_delivery_matches_its_schema(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(20).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let mut receiver = Receiver::start().await.unwrap();
    let sub = subscribe(&api, &receiver.url).await;
    receiver.trust(sub.secret.as_deref().unwrap()).unwrap();

    let catalog: Value = api.get("/webhooks/event-types").await.unwrap();
    let items = catalog["items"].as_array().unwrap();
    let types: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    let all: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(types, all);
    for item in items {
        assert!(item["description"].as_str().unwrap().len() > 20, "{item}");
        json_schema_check(&item["schema"], &item["example"])
            .unwrap_or_else(|e| panic!("{}'s example: {e}", item["type"]));
    }
    let schema_of = |t: &str| {
        items
            .iter()
            .find(|i| i["type"] == t)
            .map(|i| i["schema"].clone())
            .unwrap()
    };

    run_job(&api, seeded.offer_id).await;
    let delivered = next_delivery(&mut receiver, Duration::from_secs(30))
        .await
        .payload()
        .unwrap();
    assert_eq!(delivered["type"], "job.succeeded");
    json_schema_check(&schema_of("job.succeeded"), &delivered)
        .unwrap_or_else(|e| panic!("the delivery {delivered}: {e}"));
    assert!(json_schema_check(&schema_of("job.failed"), &delivered).is_err());
    let mut broken = delivered.clone();
    broken["data"].as_object_mut().unwrap().remove("counters");
    let refused = json_schema_check(&schema_of("job.succeeded"), &broken).unwrap_err();
    assert!(refused.contains("counters"), "{refused}");
    runtime.shutdown().await;
}

async fn start(env: &Env, brand: BrandId) -> (Runtime, ApiClient) {
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    (runtime, api)
}

/// A subscription to the brand's job outcomes (the events these tests wait for).
async fn subscribe(api: &ApiClient, url: &str) -> SubscriptionView {
    api.post("/webhooks", &json!({ "url": url, "filter": outcomes() }))
        .await
        .unwrap()
}

async fn next_delivery(receiver: &mut Receiver, within: Duration) -> Received {
    tokio::time::timeout(within, receiver.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery within {within:?}"))
        .expect("the receiver runs")
}

async fn run_job(
    api: &ApiClient,
    offer: bulklink_core::domain::OfferId,
) -> bulklink_http::views::JobView {
    let job = api.create_job(offer, None, None).await.unwrap();
    api.wait_terminal(
        job.id,
        Duration::from_millis(20),
        Duration::from_secs(120),
        |_| {},
    )
    .await
    .unwrap()
}

/// The receiver of `fixtures/standardwebhooks_receiver.py`: the Standard Webhooks reference
/// library (PyPI `standardwebhooks`) verifying each request with every named secret.
struct LibraryReceiver {
    child: Child,
    url: String,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl LibraryReceiver {
    /// Listens on `port` (picked before the subscription that names it).
    fn start(port: u16, secrets: &[(&str, &str)]) -> LibraryReceiver {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let script = root.join("cli/tests/fixtures/standardwebhooks_receiver.py");
        let mut child = Command::new(root.join(".venv/bin/python"))
            .arg(script)
            .arg(port.to_string())
            .args(
                secrets
                    .iter()
                    .map(|(name, secret)| format!("{name}={secret}")),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the Python receiver starts (scripts/test.sh installs standardwebhooks)");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        let mut first = true;
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if first {
                    first = false;
                    let _ = ready_tx.send(line);
                    continue;
                }
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        let listening = ready
            .recv_timeout(Duration::from_secs(30))
            .expect("it listens");
        assert_eq!(listening.trim(), port.to_string());
        LibraryReceiver {
            child,
            url: format!("http://127.0.0.1:{port}/hook"),
            lines,
        }
    }

    async fn next(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(line) = self.lines.try_recv() {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "the library receiver got nothing within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a hand-made request to the receiver and returns what its library said.
    async fn judge(&self, id: &str, timestamp: i64, signature: &str, body: &str) -> Value {
        let status = reqwest::Client::new()
            .post(&self.url)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status();
        let line = self.next(Duration::from_secs(10)).await;
        assert_eq!(line["webhookId"], id);
        let any_ok = line["results"]
            .as_object()
            .unwrap()
            .values()
            .any(|r| r == "ok");
        assert_eq!(status.is_success(), any_ok);
        line
    }
}

impl Drop for LibraryReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn a_standard_webhooks_library_verifies_every_delivery_and_refuses_forgeries(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(kind.scale(200, 60)).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let port = free_port();
    let sub = subscribe(&api, &format!("http://127.0.0.1:{port}/hook")).await;
    let secret = sub.secret.clone().unwrap();
    assert!(secret.starts_with("whsec_"));
    let wrong = WebhookSecret::generate();
    let library = LibraryReceiver::start(port, &[("ours", &secret), ("wrong", wrong.as_str())]);

    let job = run_job(&api, seeded.offer_id).await;
    let line = library.next(Duration::from_secs(30)).await;

    assert_eq!(line["results"]["ours"], "ok", "{line}");
    assert!(
        line["results"]["wrong"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{line}"
    );
    let deliveries: Value = api
        .get(&format!("/jobs/{}/deliveries", job.id))
        .await
        .unwrap();
    let delivery = &deliveries["items"][0];
    assert_eq!(delivery["status"], "succeeded", "{deliveries}");
    assert_eq!(line["webhookId"], delivery["id"]);

    // Forgeries, judged by the library: a tampered body, a wrong secret, an old timestamp.
    let ours: WebhookSecret = secret.parse().unwrap();
    let body = json!({ "type": "job.succeeded", "timestamp": "2026-12-01T00:00:00.000Z",
                       "data": { "jobId": job.id } })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let genuine = library
        .judge(
            "msg_genuine",
            now,
            &ours.sign("msg_genuine", now, &body),
            &body,
        )
        .await;
    assert_eq!(
        genuine["results"]["ours"], "ok",
        "a correctly signed request passes: {genuine}"
    );
    let tampered = body.replace("succeeded", "failed");
    let forged = library
        .judge("msg_t", now, &ours.sign("msg_t", now, &body), &tampered)
        .await;
    assert_ne!(forged["results"]["ours"], "ok", "tampered body: {forged}");
    let other = WebhookSecret::generate();
    let forged = library
        .judge("msg_w", now, &other.sign("msg_w", now, &body), &body)
        .await;
    assert_ne!(forged["results"]["ours"], "ok", "wrong secret: {forged}");
    let old = now - 6 * 60;
    let forged = library
        .judge("msg_o", old, &ours.sign("msg_o", old, &body), &body)
        .await;
    assert_ne!(forged["results"]["ours"], "ok", "old timestamp: {forged}");
    runtime.shutdown().await;
}

async fn after_a_rotation_deliveries_verify_with_the_new_secret_and_the_old_one(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(kind.scale(100, 40)).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let port = free_port();
    let sub = subscribe(&api, &format!("http://127.0.0.1:{port}/hook")).await;
    let old = sub.secret.clone().unwrap();

    let rotated: SubscriptionView = api
        .post(&format!("/webhooks/{}/rotate-secret", sub.id), &json!({}))
        .await
        .unwrap();
    let new = rotated.secret.clone().unwrap();
    let library = LibraryReceiver::start(port, &[("old", &old), ("new", &new)]);
    run_job(&api, seeded.offer_id).await;
    let line = library.next(Duration::from_secs(30)).await;

    assert_ne!(old, new);
    assert_eq!(line["results"]["new"], "ok", "{line}");
    assert_eq!(
        line["results"]["old"], "ok",
        "the old secret signs for 24 h: {line}"
    );
    let expires = rotated.previous_secret_expires_at.unwrap();
    let in_24h = chrono::Utc::now() + chrono::Duration::hours(24);
    assert!((expires - in_24h).num_seconds().abs() < 60, "{expires}");
    let read: Value = api.get(&format!("/webhooks/{}", sub.id)).await.unwrap();
    assert!(
        read.get("secret").is_none(),
        "a read never shows the secret: {read}"
    );
    assert_sealed_at_rest(&env, sub.url.as_str(), &[&old, &new]).await;
    runtime.shutdown().await;
}

/// None of `secrets` (as text, as its key's base64, or as the key's bytes) is anywhere in
/// what `env` keeps at rest, while `visible`, stored in the clear beside them, is (the
/// search does see the subscriptions).
async fn assert_sealed_at_rest(env: &Env, visible: &str, secrets: &[&str]) {
    use base64::Engine;
    let stored = env.stored_bytes().await;
    assert!(
        find_bytes(&stored, visible.as_bytes()).is_some(),
        "{visible} is stored beside the secrets"
    );
    for secret in secrets {
        let encoded = secret.strip_prefix("whsec_").expect("a whsec_ secret");
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        for (form, needle) in [
            ("text", secret.as_bytes()),
            ("base64", encoded.as_bytes()),
            ("bytes", &key[..]),
        ] {
            assert_eq!(
                find_bytes(&stored, needle),
                None,
                "a signing secret is stored in the clear ({form})"
            );
        }
    }
}

/// A subscription's secret, and the one before its last rotation (signing for another
/// hour), as a release before sealing stored them: in plaintext.
async fn store_in_plaintext(env: &Env, id: &str, secret: &str, previous: Option<&str>) {
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_millis();
    match (env.aws_clients(), env.aws_names()) {
        (Some(clients), Some(names)) => {
            let mut update = clients
                .dynamodb
                .update_item()
                .table_name(&names.jobs_table)
                .key("pk", AttributeValue::S(format!("WEBHOOK#{id}")))
                .key("sk", AttributeValue::S("#WEBHOOK".into()))
                .update_expression("SET secret = :s")
                .expression_attribute_values(":s", AttributeValue::S(secret.into()));
            if let Some(previous) = previous {
                update = update
                    .update_expression(
                        "SET secret = :s, previousSecret = :p, previousSecretUntil = :u",
                    )
                    .expression_attribute_values(":p", AttributeValue::S(previous.into()))
                    .expression_attribute_values(":u", AttributeValue::N(until.to_string()));
            }
            update.send().await.unwrap();
        }
        _ => {
            let changed = rusqlite::Connection::open(env.db())
                .unwrap()
                .execute(
                    "UPDATE webhooks SET secret = ?2, previous_secret = ?3, \
                     previous_secret_until = ?4 WHERE id = ?1",
                    rusqlite::params![id, secret, previous, previous.map(|_| until)],
                )
                .unwrap();
            assert_eq!(changed, 1);
        }
    }
    let stored = env.stored_bytes().await;
    for secret in std::iter::once(secret).chain(previous) {
        assert!(
            find_bytes(&stored, secret.as_bytes()).is_some(),
            "the plaintext secret is stored"
        );
    }
}

/// Secrets stored in plaintext by an earlier release: the embedded store seals them when it
/// opens the file; on AWS `bulklink upgrade` does. Either way they still sign.
async fn a_secret_stored_in_plaintext_before_sealing_is_sealed_and_still_signs(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(kind.scale(40, 20)).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (runtime, api) = start(&env, seeded.brand_id).await;
    // One the earlier release will have deleted, then enough others made since to fill its
    // page of the SQLite file, then the one that stays.
    let gone = subscribe(&api, "http://127.0.0.1:9/gone").await;
    let gone_secret = gone.secret.clone().unwrap();
    for i in 0..kind.scale(30, 0) {
        subscribe(&api, &format!("http://127.0.0.1:9/other-{i}")).await;
    }
    let sub = subscribe(&api, &url).await;
    let secret = sub.secret.clone().unwrap();
    let id = sub.id.to_string();
    // Rotated under the earlier release an hour ago: the previous secret still signs.
    let previous = WebhookSecret::generate().as_str().to_owned();
    let (runtime, api) = match kind {
        Kind::Embedded => {
            runtime.shutdown().await;
            store_in_plaintext(&env, &id, &secret, Some(&previous)).await;
            // A subscription the earlier release deleted: its row's bytes, secret and all,
            // stay in the free space of a page no sealing rewrites.
            store_in_plaintext(&env, &gone.id.to_string(), &gone_secret, None).await;
            rusqlite::Connection::open(env.db())
                .unwrap()
                .execute("DELETE FROM webhooks WHERE id = ?1", [gone.id.to_string()])
                .unwrap();
            // The store opens the file again.
            start(&env, seeded.brand_id).await
        }
        Kind::Aws => {
            store_in_plaintext(&env, &id, &secret, Some(&previous)).await;
            let (clients, names) = (env.aws_clients().unwrap(), env.aws_names().unwrap());
            let upgraded = bulklink_aws::upgrade(clients, names).await.unwrap();
            assert_eq!(upgraded.secrets_sealed, 1, "{upgraded:?}");
            let again = bulklink_aws::upgrade(clients, names).await.unwrap();
            assert_eq!(again.secrets_sealed, 0, "{again:?}");
            (runtime, api)
        }
    };
    let secrets: &[&str] = match kind {
        Kind::Embedded => &[&secret, &previous, &gone_secret],
        Kind::Aws => &[&secret, &previous],
    };
    assert_sealed_at_rest(&env, &url, secrets).await;
    let library = LibraryReceiver::start(port, &[("kept", &secret), ("previous", &previous)]);
    run_job(&api, seeded.offer_id).await;
    let line = library.next(Duration::from_secs(30)).await;
    assert_eq!(line["results"]["kept"], "ok", "{line}");
    assert_eq!(line["results"]["previous"], "ok", "{line}");
    runtime.shutdown().await;
}

async fn a_receiver_failing_for_30_seconds_gets_the_event_then_and_the_log_shows_every_attempt(
    kind: Kind,
) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(20).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let first_request: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let answer = {
        let first_request = first_request.clone();
        Arc::new(move |_nth: u32| {
            let since = *first_request
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
            if since.elapsed() < Duration::from_secs(30) {
                500
            } else {
                200
            }
        })
    };
    let mut receiver = Receiver::start_with(answer).await.unwrap();
    let sub = subscribe(&api, &receiver.url).await;

    let job = run_job(&api, seeded.offer_id).await;
    let mut got = Vec::new();
    loop {
        let d = next_delivery(&mut receiver, Duration::from_secs(120)).await;
        let done = d.answered == 200;
        got.push(d);
        if done {
            break;
        }
    }

    assert!(
        got.len() >= 3,
        "failed attempts, then the delivery: {}",
        got.len()
    );
    let ids: HashSet<_> = got
        .iter()
        .map(|d| d.webhook_id().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one webhook-id on every attempt");
    let log: Value = api
        .get(&format!("/webhooks/{}/deliveries", sub.id))
        .await
        .unwrap();
    let record = &log["items"][0];
    eventually(
        Duration::from_secs(10),
        "the log to record the success",
        || async {
            let log: Value = api
                .get(&format!("/webhooks/{}/deliveries", sub.id))
                .await
                .unwrap();
            log["items"][0]["status"] == "succeeded"
        },
    )
    .await;
    let log: Value = api
        .get(&format!("/webhooks/{}/deliveries", sub.id))
        .await
        .unwrap();
    let done = &log["items"][0];
    assert_eq!(record["jobId"], job.id.to_string());
    assert_eq!(done["attempts"], got.len(), "{done}");
    assert_eq!(done["lastStatusCode"], 200);
    assert!(done.get("nextAttemptAt").is_none(), "{done}");
    runtime.shutdown().await;
}

async fn a_receiver_answering_410_disables_its_subscription_and_hears_nothing_more(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(20).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let mut gone = Receiver::start_with(Arc::new(|_| 410)).await.unwrap();
    let mut control = Receiver::start().await.unwrap();
    let sub = subscribe(&api, &gone.url).await;
    subscribe(&api, &control.url).await;

    run_job(&api, seeded.offer_id).await;
    let first = next_delivery(&mut gone, Duration::from_secs(30)).await;
    next_delivery(&mut control, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(10),
        "the subscription to be disabled",
        || async {
            let read: Value = api.get(&format!("/webhooks/{}", sub.id)).await.unwrap();
            read["status"] == "disabled"
        },
    )
    .await;
    let read: Value = api.get(&format!("/webhooks/{}", sub.id)).await.unwrap();
    assert_eq!(read["disabledReason"], "the receiver answered 410 Gone");
    let second = run_job(&api, seeded.offer_id).await;
    next_delivery(&mut control, Duration::from_secs(30)).await;

    assert_eq!(first.answered, 410);
    let log: Value = api
        .get(&format!("/webhooks/{}/deliveries", sub.id))
        .await
        .unwrap();
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log["items"][0]["status"], "failed");
    let of_second: Value = api
        .get(&format!("/jobs/{}/deliveries", second.id))
        .await
        .unwrap();
    assert_eq!(
        of_second["items"].as_array().unwrap().len(),
        1,
        "only the control: {of_second}"
    );
    assert!(
        gone.messages.try_recv().is_err(),
        "nothing more for a disabled subscription"
    );
    runtime.shutdown().await;
}

async fn redeliver_sends_a_delivered_event_again_with_the_same_webhook_id(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(20).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let mut receiver = Receiver::start().await.unwrap();
    let sub = subscribe(&api, &receiver.url).await;
    receiver.trust(sub.secret.as_deref().unwrap()).unwrap();
    run_job(&api, seeded.offer_id).await;
    let first = next_delivery(&mut receiver, Duration::from_secs(30)).await;
    let id = first.webhook_id().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "the delivery to be recorded",
        || async {
            let log: Value = api
                .get(&format!("/webhooks/{}/deliveries", sub.id))
                .await
                .unwrap();
            log["items"][0]["status"] == "succeeded"
        },
    )
    .await;

    let r = api
        .send(
            Method::POST,
            &format!("/webhooks/{}/deliveries/{id}/redeliver", sub.id),
            None,
            &[],
        )
        .await
        .unwrap();
    let again = next_delivery(&mut receiver, Duration::from_secs(30)).await;

    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(again.webhook_id(), Some(id.as_str()));
    assert_eq!(again.body, first.body, "the same payload");
    let stamp = |d: &Received| {
        d.header("webhook-timestamp")
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    assert!(stamp(&again) >= stamp(&first));
    assert!(again.verified.is_ok(), "{:?}", again.verified);
    let unknown = api
        .send(
            Method::POST,
            &format!(
                "/webhooks/{}/deliveries/msg_0190a0b0c0d07e0f8a0b0c0d0e0f1011/redeliver",
                sub.id
            ),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    runtime.shutdown().await;
}

async fn fifty_hanging_receivers_do_not_delay_a_healthy_one(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(20).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    // Fifty endpoints that accept connections and never answer.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hanging = Vec::new();
    for _ in 0..50 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        hanging.push(format!("http://{}/hook", listener.local_addr().unwrap()));
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            }
        });
    }
    let mut subs = Vec::new();
    for url in &hanging {
        subs.push(subscribe(&api, url).await);
    }
    let mut healthy = Receiver::start().await.unwrap();
    subscribe(&api, &healthy.url).await;

    run_job(&api, seeded.offer_id).await;
    next_delivery(&mut healthy, Duration::from_secs(30)).await;

    // The healthy receiver had its event while every hanging attempt was still waiting for
    // its answer (each ends only at its 10 s timeout, and is then recorded): it waited for
    // none of them. Read after the arrival, so any attempt ended before it shows.
    let mut hanging_attempts = 0;
    for sub in &subs {
        let log: Value = api
            .get(&format!("/webhooks/{}/deliveries", sub.id))
            .await
            .unwrap();
        for delivery in log["items"].as_array().unwrap() {
            hanging_attempts += delivery["attempts"].as_u64().unwrap();
        }
    }
    assert_eq!(
        hanging_attempts, 0,
        "a hanging receiver's attempt ended before the healthy one got its event ({kind:?})"
    );
    stop.store(true, Ordering::SeqCst);
    runtime.shutdown().await;
}

async fn a_callback_url_hears_a_job_that_ends_at_once(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(0).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let mut receiver = Receiver::start().await.unwrap();
    let path = format!("/offers/{}/link-all-locations", seeded.offer_id);
    let body = json!({ "callbackUrl": receiver.url });
    let key = [("idempotency-key", "callback-1")];

    let created = api
        .send(Method::POST, &path, Some(&body), &key)
        .await
        .unwrap();
    let replay = api
        .send(Method::POST, &path, Some(&body), &key)
        .await
        .unwrap();
    let job = api
        .wait_terminal(
            created.body["id"].as_str().unwrap().parse().unwrap(),
            Duration::from_millis(10),
            Duration::from_secs(30),
            |_| {},
        )
        .await
        .unwrap();
    let delivery = next_delivery(&mut receiver, Duration::from_secs(30)).await;

    assert_eq!(created.status, StatusCode::ACCEPTED);
    assert_eq!(job.counters.counters.total, 0, "a job of no locations");
    let callback = &created.body["callback"];
    assert_eq!(
        replay.body["callback"], *callback,
        "a replay shows the same subscription and secret"
    );
    let secret: WebhookSecret = callback["secret"].as_str().unwrap().parse().unwrap();
    assert!(delivery.verify_with(&[&secret]).is_ok());
    assert_eq!(delivery.event().unwrap()["jobId"], job.id.to_string());
    assert_eq!(delivery.payload().unwrap()["type"], "job.succeeded");
    runtime.shutdown().await;
}

async fn a_brands_webhooks_hear_only_its_own_brand(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let ours = env.seed(20).await;
    let theirs = env.seed(20).await;
    let (runtime, api) = start(&env, ours.brand_id).await;
    let mut unfiltered = Receiver::start().await.unwrap();
    let snooping = Receiver::start().await.unwrap();
    let a = subscribe(&api, &unfiltered.url).await;
    assert_eq!(
        a.filter.brand_id,
        Some(ours.brand_id),
        "pinned to the caller's brand"
    );
    let refused = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": snooping.url, "filter": { "brandId": theirs.brand_id } })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    // Brand B's job ends first, then A's: A's receiver hears exactly A's.
    let their_api = runtime.api_as(Role::Brand(theirs.brand_id)).unwrap();
    let their_job = run_job(&their_api, theirs.offer_id).await;
    let our_job = run_job(&api, ours.offer_id).await;
    let delivery = next_delivery(&mut unfiltered, Duration::from_secs(30)).await;

    assert_eq!(delivery.event().unwrap()["jobId"], our_job.id.to_string());
    // A filter on another brand's job is refused as naming no job of ours.
    let refused = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": snooping.url, "filter": { "jobId": their_job.id } })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is not a job of brand")),
        "{}",
        refused.body
    );
    let theirs_log: Value = their_api
        .get(&format!("/jobs/{}/deliveries", their_job.id))
        .await
        .unwrap();
    assert_eq!(
        theirs_log["items"].as_array().unwrap().len(),
        0,
        "{theirs_log}"
    );
    let r = their_api
        .send(
            Method::GET,
            &format!("/webhooks/{}/deliveries", a.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_listed_read_and_deleted_and_bad_ones_are_refused() {
    let env = Env::new(fast_settings());
    let brand = BrandId::new_random();
    let (runtime, api) = start(&env, brand).await;
    let bad = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "not a url" })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["detail"]
        .as_str()
        .unwrap()
        .contains("must start with http"));
    let bad_filter = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/h", "filter": { "events": ["job.exploded"] } })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);

    let mut made = Vec::new();
    for i in 0..3 {
        let created = api
            .send(
                Method::POST,
                "/webhooks",
                Some(&json!({ "url": format!("https://hooks.example.invalid/{i}"), "description": format!("hook {i}") })),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(created.status, StatusCode::CREATED);
        assert_eq!(
            created.location,
            Some(format!(
                "/webhooks/{}",
                created.body["id"].as_str().unwrap()
            ))
        );
        assert_eq!(created.body["status"], "active");
        assert!(created.body["secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"));
        made.push(created.body["id"].as_str().unwrap().to_owned());
    }
    let page: Value = api.get("/webhooks?limit=2").await.unwrap();
    let rest: Value = api
        .get(&format!(
            "/webhooks?limit=2&cursor={}",
            page["nextCursor"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    made.reverse();
    assert_eq!(listed, made, "newest first");
    assert!(page["items"][0].get("secret").is_none());
    let id = &made[0];
    let deleted = api
        .send(Method::DELETE, &format!("/webhooks/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api
        .send(Method::GET, &format!("/webhooks/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let confirm = api
        .send(
            Method::GET,
            &format!("/webhooks/{id}/confirm?token=x"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        confirm.status,
        StatusCode::NOT_FOUND,
        "the SNS handshake is gone"
    );
    runtime.shutdown().await;
}

/// A crash between the event and the POST (`after_create`) or between the POST and its
/// record (`before_update`); after a restart the delivery arrives, under one webhook-id.
fn a_delivery_cut_off_by_a_crash_arrives_after_the_restart(kind: Kind) {
    for halt_before_update in [false, true] {
        let setup = tokio::runtime::Runtime::new().unwrap();
        let mut settings = fast_settings();
        settings.webhook_visibility_timeout = Duration::from_secs(15);
        let (env, seeded) = setup.block_on(async {
            let env = Env::of(kind, settings).await;
            let seeded = env.seed(20).await;
            (env, seeded)
        });
        let receiver_runtime = tokio::runtime::Runtime::new().unwrap();
        let mut receiver = receiver_runtime.block_on(Receiver::start()).unwrap();

        let crashed = tokio::runtime::Runtime::new().unwrap();
        let halt = Arc::new(Halt::default());
        crashed.block_on(async {
            let pipeline = env
                .start(env.config(), |mut ports| {
                    ports.webhooks = Arc::new(FaultyWebhooks {
                        inner: ports.webhooks.clone(),
                        halt_after_create: (!halt_before_update).then(|| halt.clone()),
                        halt_before_update: halt_before_update.then(|| halt.clone()),
                    });
                    ports
                })
                .await;
            let api = pipeline.api_as(Role::Brand(seeded.brand_id)).unwrap();
            api.post::<Value>(
                "/webhooks",
                &json!({ "url": receiver.url, "filter": outcomes() }),
            )
            .await
            .unwrap();
            api.create_job(seeded.offer_id, None, None).await.unwrap();
            tokio::time::timeout(Duration::from_secs(60), halt.wait())
                .await
                .expect("the deliverer reached the crash point");
            std::mem::forget(pipeline);
        });
        drop(crashed);

        let restarted = tokio::runtime::Runtime::new().unwrap();
        restarted.block_on(async {
            let pipeline = env.start(env.config(), |ports| ports).await;
            let first = next_delivery(&mut receiver, Duration::from_secs(60)).await;
            let id = first.webhook_id().unwrap().to_owned();
            let api = pipeline.api_as(Role::Brand(seeded.brand_id)).unwrap();
            let sub: Value = api.get("/webhooks").await.unwrap();
            let sub_id = sub["items"][0]["id"].as_str().unwrap().to_owned();
            eventually(
                Duration::from_secs(30),
                "the delivery to be recorded",
                || async {
                    let log: Value = api
                        .get(&format!("/webhooks/{sub_id}/deliveries"))
                        .await
                        .unwrap();
                    log["items"][0]["status"] == "succeeded"
                },
            )
            .await;
            let mut seen = vec![id];
            while let Ok(more) = receiver.messages.try_recv() {
                seen.push(more.webhook_id().unwrap().to_owned());
            }
            let unique: HashSet<_> = seen.iter().collect();
            eprintln!(
                "{kind:?}, crash {}: {} arrivals, {} unique webhook-id",
                if halt_before_update {
                    "after the POST"
                } else {
                    "before the POST"
                },
                seen.len(),
                unique.len()
            );
            assert_eq!(
                unique.len(),
                1,
                "a receiver deduplicating on webhook-id sees it once"
            );
            if !halt_before_update {
                assert_eq!(
                    seen.len(),
                    1,
                    "killed before the POST: sent once, after the restart"
                );
            }
            pipeline.shutdown().await;
        });
    }
}

#[test]
fn a_delivery_cut_off_by_a_crash_arrives_after_the_restart_embedded() {
    a_delivery_cut_off_by_a_crash_arrives_after_the_restart(Kind::Embedded);
}

#[test]
fn a_delivery_cut_off_by_a_crash_arrives_after_the_restart_aws() {
    a_delivery_cut_off_by_a_crash_arrives_after_the_restart(Kind::Aws);
}

/// Adds what `receiver` gets to `got` until every type in `wanted` is there: each
/// delivery's `webhook-id` and payload, its signature verified with the subscription's
/// secret.
async fn collect_until(receiver: &mut Receiver, got: &mut Vec<(String, Value)>, wanted: &[&str]) {
    while !wanted
        .iter()
        .all(|t| got.iter().any(|(_, p)| p["type"] == *t))
    {
        let delivery = tokio::time::timeout(Duration::from_secs(60), receiver.next())
            .await
            .unwrap_or_else(|_| panic!("still waiting for {wanted:?}; got {got:?}"))
            .expect("the receiver runs");
        assert!(delivery.verified.is_ok(), "{:?}", delivery.verified);
        got.push((
            delivery.webhook_id().unwrap().to_owned(),
            delivery.payload().unwrap(),
        ));
    }
}

/// The event types in a subscription's delivery log.
async fn logged_types(api: &ApiClient, subscription: &str) -> Vec<String> {
    let log: Value = api
        .get(&format!("/webhooks/{subscription}/deliveries?limit=100"))
        .await
        .unwrap();
    let mut types: Vec<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["eventType"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// One job, paused and resumed on its way: a subscription of every type (with
/// `progressEverySeconds`) hears it start, pause, resume, progress and end, each delivery
/// passing its type's schema in the catalog, in the order they happened; one filtered with
/// the field's old name (`events`) hears its two types only; one without
/// `progressEverySeconds` no progress; the job's `callbackUrl` its end only.
async fn a_subscription_hears_a_jobs_start_pause_resume_progress_and_end_as_the_catalog_describes(
    kind: Kind,
) {
    // A pace that leaves the job running while it is paused and resumed, and chunks enough
    // for progress between its first chunk and its last.
    let settings = bulklink_core::Settings {
        write_budget_per_sec: Some(kind.scale(1_000, 400) as f64),
        chunk_size: kind.scale(50, 20) as usize,
        ..fast_settings()
    };
    let env = Env::of(kind, settings).await;
    // Long enough (over a second after it starts) for progress to be told.
    let seeded = env.seed(kind.scale(1_500, 240)).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let mut everything = Receiver::start().await.unwrap();
    let all: SubscriptionView = api
        .post(
            "/webhooks",
            &json!({ "url": everything.url, "progressEverySeconds": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(all.progress_every_seconds, Some(1));
    everything.trust(all.secret.as_deref().unwrap()).unwrap();
    let narrow: Value = api
        .post(
            "/webhooks",
            &json!({ "url": "https://hooks.example.invalid/narrow",
                     "filter": { "events": ["job.paused", "job.succeeded"] } }),
        )
        .await
        .unwrap();
    assert_eq!(
        narrow["filter"]["eventTypes"],
        json!(["job.paused", "job.succeeded"]),
        "the old name is read as eventTypes"
    );
    let quiet: Value = api
        .post(
            "/webhooks",
            &json!({ "url": "https://hooks.example.invalid/quiet" }),
        )
        .await
        .unwrap();
    let refused = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/x", "progressEverySeconds": 0 })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("progressEverySeconds"),
        "{}",
        refused.body
    );
    let mut callback = Receiver::start().await.unwrap();

    let created = api
        .send(
            Method::POST,
            &format!("/offers/{}/link-all-locations", seeded.offer_id),
            Some(&json!({ "callbackUrl": callback.url })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    callback
        .trust(created.body["callback"]["secret"].as_str().unwrap())
        .unwrap();
    let job_id: bulklink_core::domain::JobId =
        created.body["id"].as_str().unwrap().parse().unwrap();
    let paused = api.pause(job_id).await.unwrap();
    assert_eq!(
        paused.status,
        bulklink_core::domain::JobStatus::Paused,
        "paused before it ended"
    );
    // The pause is heard before the job resumes.
    let mut got = Vec::new();
    collect_until(&mut everything, &mut got, &["job.paused"]).await;
    api.resume(job_id).await.unwrap();
    let done = api
        .wait_terminal(
            job_id,
            Duration::from_millis(20),
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(done.status, bulklink_core::domain::JobStatus::Succeeded);
    collect_until(
        &mut everything,
        &mut got,
        &[
            "job.started",
            "job.resumed",
            "job.progress",
            "job.succeeded",
        ],
    )
    .await;
    // At least once: a delivery may arrive twice, with its one webhook-id.
    got.sort_by(|a, b| a.0.cmp(&b.0));
    got.dedup_by(|a, b| a.0 == b.0);
    let mut heard: Vec<Value> = got.into_iter().map(|(_, payload)| payload).collect();

    let catalog: Value = api.get("/webhooks/event-types").await.unwrap();
    let schema_of = |t: &Value| {
        catalog["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == *t)
            .map(|i| i["schema"].clone())
            .unwrap_or_else(|| panic!("{t} is in the catalog"))
    };
    for payload in &heard {
        json_schema_check(&schema_of(&payload["type"]), payload)
            .unwrap_or_else(|e| panic!("{payload}: {e}"));
        assert_eq!(payload["data"]["jobId"], job_id.to_string(), "{payload}");
    }
    heard.sort_by_key(|p| p["data"]["occurredAt"].as_str().unwrap().to_owned());
    let at = |t: &str| {
        heard
            .iter()
            .position(|p| p["type"] == t)
            .unwrap_or_else(|| panic!("{t} in {heard:?}"))
    };
    assert!(at("job.paused") < at("job.resumed"), "{heard:?}");
    assert!(at("job.started") < at("job.succeeded"), "{heard:?}");
    assert!(at("job.resumed") < at("job.succeeded"), "{heard:?}");
    let ended = heard.iter().find(|p| p["type"] == "job.succeeded").unwrap();
    let linked = ended["data"]["counters"]["linked"].as_u64().unwrap();
    for progress in heard.iter().filter(|p| p["type"] == "job.progress") {
        assert!(
            progress["data"]["counters"]["linked"].as_u64().unwrap() <= linked,
            "{progress}"
        );
    }
    // One delivery per job and pause: a republished event finds its delivery.
    for t in ["job.started", "job.paused", "job.resumed", "job.succeeded"] {
        assert_eq!(
            heard.iter().filter(|p| p["type"] == t).count(),
            1,
            "{t}: {heard:?}"
        );
    }

    // The other subscriptions: every event above went to them too, and the filters held.
    let narrow_types = logged_types(&api, narrow["id"].as_str().unwrap()).await;
    assert_eq!(narrow_types, ["job.paused", "job.succeeded"]);
    let quiet_types = logged_types(&api, quiet["id"].as_str().unwrap()).await;
    assert_eq!(
        quiet_types,
        ["job.paused", "job.resumed", "job.started", "job.succeeded"],
        "every type but progress"
    );
    let from_callback = next_delivery(&mut callback, Duration::from_secs(30)).await;
    assert_eq!(from_callback.payload().unwrap()["type"], "job.succeeded");
    assert!(from_callback.verified.is_ok());
    let callback_log: Value = api
        .get(&format!("/jobs/{job_id}/deliveries?limit=100"))
        .await
        .unwrap();
    let callback_types: Vec<&Value> = callback_log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["subscriptionId"] == created.body["callback"]["subscriptionId"])
        .map(|d| &d["eventType"])
        .collect();
    assert_eq!(
        callback_types,
        [&json!("job.succeeded")],
        "the outcome only"
    );
    runtime.shutdown().await;
}

/// `POST /webhooks/{id}/test`: a `webhook.test` delivery the Standard Webhooks library
/// verifies with the subscription's secret, to that subscription only (its filter names no
/// such type), in its delivery log with the `webhook-id` it arrived with; a disabled or
/// unknown subscription gets none.
async fn a_test_send_is_verified_by_the_standard_webhooks_library_and_logged_whatever_the_filter(
    kind: Kind,
) {
    let env = Env::of(kind, fast_settings()).await;
    let brand = BrandId::new_random();
    let (runtime, api) = start(&env, brand).await;
    let port = free_port();
    let sub: SubscriptionView = api
        .post(
            "/webhooks",
            &json!({ "url": format!("http://127.0.0.1:{port}/hook"),
                     "filter": { "eventTypes": ["job.failed"] } }),
        )
        .await
        .unwrap();
    let secret = sub.secret.clone().unwrap();
    let wrong = WebhookSecret::generate();
    let library = LibraryReceiver::start(port, &[("ours", &secret), ("wrong", wrong.as_str())]);
    let mut sibling = Receiver::start().await.unwrap();
    let sibling_sub = subscribe(&api, &sibling.url).await;

    let sent = api
        .send(
            Method::POST,
            &format!("/webhooks/{}/test", sub.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    assert_eq!(sent.body["eventType"], "webhook.test");
    let line = library.next(Duration::from_secs(30)).await;
    assert_eq!(line["results"]["ours"], "ok", "{line}");
    assert!(
        line["results"]["wrong"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{line}"
    );
    assert_eq!(line["webhookId"], sent.body["id"]);
    assert_eq!(line["payload"]["type"], "webhook.test", "{line}");
    assert_eq!(line["payload"]["data"]["webhookId"], sub.id.to_string());
    let catalog: Value = api.get("/webhooks/event-types").await.unwrap();
    let schema = catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "webhook.test")
        .unwrap()["schema"]
        .clone();
    json_schema_check(&schema, &line["payload"]).unwrap();

    let logged = |api: &ApiClient, id: String| {
        let api = api.clone();
        async move {
            let log: Value = api
                .get(&format!("/webhooks/{id}/deliveries"))
                .await
                .unwrap();
            log["items"].as_array().unwrap().clone()
        }
    };
    let expected_id = sent.body["id"].clone();
    eventually(
        Duration::from_secs(30),
        "the test delivery to be logged as succeeded",
        || {
            let (api, id, expected_id) = (api.clone(), sub.id.to_string(), expected_id.clone());
            async move {
                let items = logged(&api, id).await;
                items.len() == 1
                    && items[0]["id"] == expected_id
                    && items[0]["status"] == "succeeded"
                    && items[0]["eventType"] == "webhook.test"
                    && items[0].get("jobId").is_none()
            }
        },
    )
    .await;
    assert!(
        logged(&api, sibling_sub.id.to_string()).await.is_empty(),
        "another subscription of the brand hears no test"
    );
    assert!(sibling.messages.try_recv().is_err());

    // Another brand's subscription is not found; a disabled one refuses (409).
    let other = runtime.api_as(Role::Brand(BrandId::new_random())).unwrap();
    let hidden = other
        .send(
            Method::POST,
            &format!("/webhooks/{}/test", sub.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{}", hidden.body);
    runtime
        .ports
        .webhooks
        .disable_subscription(sibling_sub.id, "the receiver answered 410 Gone")
        .await
        .unwrap();
    let disabled = api
        .send(
            Method::POST,
            &format!("/webhooks/{}/test", sibling_sub.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(disabled.status, StatusCode::CONFLICT, "{}", disabled.body);
    runtime.shutdown().await;
}

/// Two `job.progress` events of one job in one window of a subscription: the second finds
/// the window's delivery made for the first (pending, about to be attempted by whoever made
/// it) and adds no attempt of its own; the first's own replay still sends it.
async fn a_progress_event_in_a_window_with_another_events_delivery_adds_no_attempt(kind: Kind) {
    use bulklink_core::domain::{Delivery, Event, Job, JobEvent, JobStatus, OfferId};
    let env = Env::of(kind, fast_settings()).await;
    let ports = env.ports();
    let brand = BrandId::new_random();
    let receiver = Receiver::start().await.unwrap();
    let sub = stored_subscription(&ports, brand, &receiver.url, |s| {
        s.progress_every_seconds = Some(3_600)
    })
    .await;
    let mut job = Job::new(brand, OfferId::new_random(), None, ports.clock.now());
    job.status = JobStatus::Running;
    job.chunks_done = 1;
    let first = Event::Job(JobEvent::progress(&job, ports.clock.now()));
    job.chunks_done = 2;
    let second = Event::Job(JobEvent::progress(&job, ports.clock.now()));
    let made = ports
        .webhooks
        .create_delivery(&Delivery::new(&first, &sub, ports.clock.now()))
        .await
        .unwrap();
    assert_eq!(
        made.id,
        Delivery::new(&second, &sub, ports.clock.now()).id,
        "one window"
    );
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();
    let message = |e: &Event| bulklink_core::domain::WebhookMessage::Event(e.clone()).encode();

    let thinned = deliverer.handle(&message(&second)).await.unwrap();
    assert_eq!(
        thinned,
        webhooks::Report::default(),
        "no attempt for the second"
    );
    let replayed = deliverer.handle(&message(&first)).await.unwrap();
    assert_eq!((replayed.attempted, replayed.delivered), (1, 1));
    let mut receiver = receiver;
    let got = receiver.messages.try_recv().unwrap();
    assert_eq!(
        got.event().unwrap()["eventId"],
        first.event_id().to_string()
    );
    assert!(receiver.messages.try_recv().is_err(), "one request in all");
}

/// Runs a job of `path` (a job-creating route) to its end.
async fn run_job_at(api: &ApiClient, path: &str) -> bulklink_http::views::JobView {
    let created = api.send(Method::POST, path, None, &[]).await.unwrap();
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    api.wait_terminal(
        created.body["id"].as_str().unwrap().parse().unwrap(),
        Duration::from_millis(20),
        Duration::from_secs(120),
        |_| {},
    )
    .await
    .unwrap()
}

/// The next `n` lines of a library receiver, each verified by the library with the secret
/// named `ours`.
async fn verified_lines(library: &LibraryReceiver, n: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    for _ in 0..n {
        let line = library.next(Duration::from_secs(60)).await;
        assert_eq!(line["results"]["ours"], "ok", "{line}");
        lines.push(line);
    }
    lines
}

/// `POST /webhooks/{id}/replay`: a range's events again, in order of occurrence, with their
/// original `webhook-id`s, verified by the Standard Webhooks library; a subscription made
/// after the events gets them too (filtered); a dry run counts and sends nothing.
async fn a_replay_sends_a_ranges_events_again_in_order_with_their_webhook_ids(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let seeded = env.seed(kind.scale(60, 20)).await;
    let (runtime, api) = start(&env, seeded.brand_id).await;
    let port = free_port();
    let a: SubscriptionView = api
        .post(
            "/webhooks",
            &json!({ "url": format!("http://127.0.0.1:{port}/hook"),
                     "filter": { "eventTypes": ["job.started", "job.succeeded"] } }),
        )
        .await
        .unwrap();
    let library = LibraryReceiver::start(port, &[("ours", a.secret.as_deref().unwrap())]);
    let offer = seeded.offer_id;

    let t0 = chrono::Utc::now();
    let first = run_job_at(&api, &format!("/offers/{offer}/link-all-locations")).await;
    let mut heard = verified_lines(&library, 2).await;
    let t1 = chrono::Utc::now();
    let second = run_job_at(&api, &format!("/offers/{offer}/unlink-all-locations")).await;
    heard.extend(verified_lines(&library, 2).await);
    let t2 = chrono::Utc::now();
    let of_first: Vec<&Value> = heard
        .iter()
        .filter(|l| l["payload"]["data"]["jobId"] == first.id.to_string())
        .collect();
    assert_eq!(of_first.len(), 2, "{heard:?}");

    let replay = |id: String, since: chrono::DateTime<chrono::Utc>, until, dry: bool| {
        let api = api.clone();
        async move {
            let path = format!(
                "/webhooks/{id}/replay{}",
                if dry { "?dryRun=true" } else { "" }
            );
            api.send(
                Method::POST,
                &path,
                Some(&json!({ "since": since, "until": until })),
                &[],
            )
            .await
            .unwrap()
        }
    };
    let dry = replay(a.id.to_string(), t0, t1, true).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(dry.body["events"], 2, "{}", dry.body);
    let sent = replay(a.id.to_string(), t0, t1, false).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    assert_eq!(sent.body["events"], 2);
    let again = verified_lines(&library, 2).await;
    let ids = |lines: &[&Value]| {
        lines
            .iter()
            .map(|l| l["webhookId"].clone())
            .collect::<Vec<_>>()
    };
    let mut original = of_first.clone();
    original.sort_by_key(|l| {
        l["payload"]["data"]["occurredAt"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    assert_eq!(
        ids(&again.iter().collect::<Vec<_>>()),
        ids(&original),
        "the same webhook-ids, in order of occurrence"
    );
    let types: Vec<&Value> = again.iter().map(|l| &l["payload"]["type"]).collect();
    assert_eq!(types, [&json!("job.started"), &json!("job.succeeded")]);

    // A subscription made after the events: the range's succeeded ones, in order.
    let port_b = free_port();
    let b: SubscriptionView = api
        .post(
            "/webhooks",
            &json!({ "url": format!("http://127.0.0.1:{port_b}/hook"),
                     "filter": { "eventTypes": ["job.succeeded"] } }),
        )
        .await
        .unwrap();
    let library_b = LibraryReceiver::start(port_b, &[("ours", b.secret.as_deref().unwrap())]);
    let sent = replay(b.id.to_string(), t0, t2, false).await;
    assert_eq!(sent.body["events"], 2, "{}", sent.body);
    let to_b = verified_lines(&library_b, 2).await;
    let jobs: Vec<&Value> = to_b
        .iter()
        .map(|l| &l["payload"]["data"]["jobId"])
        .collect();
    assert_eq!(jobs, [&json!(first.id), &json!(second.id)], "in order");
    let log: Value = api
        .get(&format!("/webhooks/{}/deliveries", b.id))
        .await
        .unwrap();
    let mut logged: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["id"])
        .collect();
    logged.reverse();
    assert_eq!(
        logged,
        ids(&to_b.iter().collect::<Vec<_>>())
            .iter()
            .collect::<Vec<_>>()
    );

    // Nothing else arrived: the dry run sent nothing.
    assert!(library.lines.try_recv().is_err());
    assert!(library_b.lines.try_recv().is_err());
    runtime.shutdown().await;
}

/// A replay with no time left in each message sends one event a message and hands the rest
/// on: three events arrive in three steps, in order, each once.
async fn a_replay_out_of_time_hands_the_rest_on_and_misses_nothing(kind: Kind) {
    use bulklink_core::domain::{Replay, WebhookMessage};
    let env = Env::of(kind, fast_settings()).await;
    let ports = env.ports();
    let brand = BrandId::new_random();
    let mut receiver = Receiver::start().await.unwrap();
    let sub = stored_subscription(&ports, brand, &receiver.url, |_| {}).await;
    let start = ports.clock.now() - chrono::Duration::minutes(5);
    let mut events = Vec::new();
    for i in 0..3 {
        let event = succeeded_event(brand, start + chrono::Duration::seconds(i));
        ports.webhooks.record_event(&event).await.unwrap();
        events.push(event);
    }
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();
    let mut message = WebhookMessage::Replay(Replay {
        subscription_id: sub.id,
        since: start,
        until: ports.clock.now(),
        after: None,
    })
    .encode();
    let mut steps = 0;
    loop {
        steps += 1;
        let report = deliverer
            .handle_by(&message, Some(tokio::time::Instant::now()))
            .await
            .unwrap();
        assert_eq!(report.delivered, 1, "one event a step");
        let handed = ports
            .webhook_queue
            .receive(1, Duration::from_millis(200))
            .await
            .unwrap();
        let Some(next) = handed.first() else { break };
        ports
            .webhook_queue
            .delete(std::slice::from_ref(&next.receipt))
            .await
            .unwrap();
        message = next.body.clone();
        assert!(steps < 3, "handed on after the last event");
    }
    assert_eq!(steps, 3);
    for event in &events {
        let got = receiver.messages.try_recv().unwrap();
        assert_eq!(
            got.event().unwrap()["eventId"],
            event.event_id().to_string()
        );
    }
    assert!(receiver.messages.try_recv().is_err());
}

/// `rateLimitPerSec`: many deliveries at once to a limited receiver all arrive, and no 1-s
/// window at the receiver holds more than the limit.
async fn a_rate_limited_subscription_gets_every_event_and_never_more_than_its_rate_a_second(
    kind: Kind,
) {
    let (rate, events) = (kind.scale(10, 5) as u32, kind.scale(30, 15) as u32);
    let env = Env::of(kind, fast_settings()).await;
    let brand = BrandId::new_random();
    let (runtime, api) = start(&env, brand).await;
    let mut receiver = Receiver::start().await.unwrap();
    let sub: SubscriptionView = api
        .post(
            "/webhooks",
            &json!({ "url": receiver.url, "rateLimitPerSec": rate, "progressEverySeconds": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(sub.rate_limit_per_sec, Some(rate));
    receiver.trust(sub.secret.as_deref().unwrap()).unwrap();
    let refused = api
        .send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "https://hooks.example.invalid/r", "rateLimitPerSec": 0 })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    let ids = bulklink::bench::publish_progress_windows(&runtime.ports, brand, events)
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    let mut seen = HashSet::new();
    while seen.len() < ids.len() {
        let got = next_delivery(&mut receiver, Duration::from_secs(60)).await;
        assert!(got.verified.is_ok(), "{:?}", got.verified);
        arrivals.push(got.arrived);
        seen.insert(got.event().unwrap()["eventId"].as_str().unwrap().to_owned());
    }
    let expected: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(seen, expected, "every event, none dropped");
    let windows = bulklink::receiver::Windows::of(&arrivals);
    assert!(
        windows.most_in_any_second <= rate as usize,
        "{} in one second (limit {rate}): {:?}",
        windows.most_in_any_second,
        windows.per_second
    );
    runtime.shutdown().await;
}

/// Handles the webhook queue's `webhook.disabled` event (other messages, delayed retries,
/// are left alone): what the running deliverer would do next.
async fn tell_of_disabling(
    deliverer: &webhooks::Deliverer,
    ports: &bulklink_core::ports::Ports,
) -> Value {
    use bulklink_core::domain::{Event, EventType, WebhookMessage};
    for _ in 0..50 {
        for message in ports
            .webhook_queue
            .receive(10, Duration::from_millis(200))
            .await
            .unwrap()
        {
            if let Ok(WebhookMessage::Event(Event::Webhook(e))) =
                WebhookMessage::decode(&message.body)
            {
                if e.event_type == EventType::WebhookDisabled {
                    deliverer.handle(&message.body).await.unwrap();
                    ports
                        .webhook_queue
                        .delete(std::slice::from_ref(&message.receipt))
                        .await
                        .unwrap();
                    return serde_json::to_value(&e).unwrap();
                }
            }
        }
    }
    panic!("no webhook.disabled event on the queue");
}

/// A subscription whose every attempt fails for 5 days is disabled with its reason; the
/// brand's other subscriptions that hear the type are told (`webhook.disabled`), the
/// invocation's metrics count it, and `POST /webhooks/{id}/enable` brings it back. A success
/// in between starts the count again.
async fn a_subscription_failing_for_five_days_is_disabled_its_brand_told_and_enable_brings_it_back(
    kind: Kind,
) {
    use bulklink_core::domain::WebhookMessage;
    let env = Env::of(kind, fast_settings()).await;
    let clock = bulklink_core::Clock::manual(env.ports().clock.now());
    let config = bulklink::runtime::RuntimeConfig {
        clock: clock.clone(),
        consumers: false,
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let ports = runtime.ports.clone();
    let brand = BrandId::new_random();
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    let failing = Receiver::start_with(Arc::new(|_| 500)).await.unwrap();
    // Fails, then succeeds, then fails from then on.
    let flaky = Receiver::start_with(Arc::new(|nth| if nth == 2 { 200 } else { 500 }))
        .await
        .unwrap();
    let mut healthy = Receiver::start().await.unwrap();
    let narrow = Receiver::start().await.unwrap();
    let hook = |url: &str, filter: Value| {
        let api = api.clone();
        let body = json!({ "url": url, "filter": filter });
        async move {
            api.post::<SubscriptionView>("/webhooks", &body)
                .await
                .unwrap()
        }
    };
    let failing_sub = hook(&failing.url, json!({})).await;
    let flaky_sub = hook(&flaky.url, json!({})).await;
    let healthy_sub = hook(&healthy.url, json!({})).await;
    healthy
        .trust(healthy_sub.secret.as_deref().unwrap())
        .unwrap();
    let narrow_sub = hook(&narrow.url, json!({ "eventTypes": ["job.succeeded"] })).await;
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();
    let event = |at| WebhookMessage::Event(succeeded_event(brand, at)).encode();
    // As the API shows it, with a token of the (moved) clock's now.
    let read = |id: bulklink_core::domain::SubscriptionId| {
        let api = runtime.api_as(Role::Brand(brand)).unwrap();
        async move {
            api.get::<SubscriptionView>(&format!("/webhooks/{id}"))
                .await
                .unwrap()
        }
    };

    let t0 = clock.now();
    deliverer.handle(&event(t0)).await.unwrap();
    assert_eq!(read(failing_sub.id).await.failing_since, Some(t0));
    clock.advance(chrono::Duration::hours(1));
    deliverer.handle(&event(clock.now())).await.unwrap();
    assert_eq!(
        read(flaky_sub.id).await.failing_since,
        None,
        "a success ends the streak"
    );
    clock.advance(chrono::Duration::days(5) - chrono::Duration::minutes(61));
    let report = deliverer.handle(&event(clock.now())).await.unwrap();
    assert_eq!(report.disabled, 0, "4 days 23 hours 59 minutes");
    clock.advance(chrono::Duration::minutes(2));
    let report = deliverer.handle(&event(clock.now())).await.unwrap();

    assert_eq!(report.disabled, 1, "{report:?}");
    let metrics = webhooks::lambda::delivery_metrics(&report);
    assert!(metrics.contains("\"WebhooksDisabled\":1"), "{metrics}");
    let disabled = read(failing_sub.id).await;
    assert_eq!(
        disabled.status,
        bulklink_core::domain::SubscriptionStatus::Disabled
    );
    let reason = disabled.disabled_reason.clone().unwrap();
    assert!(reason.contains("5 days"), "{reason}");
    let flaky_now = read(flaky_sub.id).await;
    assert_eq!(
        flaky_now.status,
        bulklink_core::domain::SubscriptionStatus::Active
    );
    assert!(flaky_now.failing_since.unwrap() > t0 + chrono::Duration::days(4));

    let told = tell_of_disabling(&deliverer, &ports).await;
    assert_eq!(told["webhookId"], failing_sub.id.to_string());
    let mut heard = None;
    let secret: bulklink_core::domain::WebhookSecret =
        healthy_sub.secret.as_deref().unwrap().parse().unwrap();
    while let Ok(got) = healthy.messages.try_recv() {
        if got.payload().unwrap()["type"] == "webhook.disabled" {
            // Signed at the (moved) clock's time: checked against it.
            bulklink_core::domain::verify(
                &[&secret],
                got.header("webhook-id"),
                got.header("webhook-timestamp"),
                got.header("webhook-signature"),
                &got.body,
                clock.now(),
            )
            .unwrap();
            heard = got.event();
        }
    }
    let heard = heard.expect("the healthy subscription heard of it");
    assert_eq!(heard["webhookId"], failing_sub.id.to_string());
    assert_eq!(heard["reason"], reason.as_str());
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    for (sub, hears) in [
        (&narrow_sub, false),
        (&failing_sub, false),
        (&healthy_sub, true),
    ] {
        let log: Value = api
            .get(&format!("/webhooks/{}/deliveries?limit=100", sub.id))
            .await
            .unwrap();
        let got = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["eventType"] == "webhook.disabled");
        assert_eq!(got, hears, "{}: {log}", sub.id);
    }

    let refused = api
        .send(
            Method::POST,
            &format!("/webhooks/{}/test", failing_sub.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.body["detail"].as_str().unwrap().contains("/enable"),
        "{}",
        refused.body
    );
    let enabled: SubscriptionView = api
        .post(&format!("/webhooks/{}/enable", failing_sub.id), &json!({}))
        .await
        .unwrap();
    assert_eq!(
        enabled.status,
        bulklink_core::domain::SubscriptionStatus::Active
    );
    assert_eq!(
        (enabled.disabled_reason, enabled.failing_since),
        (None, None)
    );
    runtime.shutdown().await;
}

/// A rate-limited subscription's attempt behind minutes of backlog goes back on the queue
/// with its record saying when, so the sweeper does not take it for a lost one and send
/// it a second time.
async fn a_throttled_delivery_waiting_its_turn_is_not_taken_for_a_lost_one(kind: Kind) {
    use bulklink_core::domain::Delivery;
    let env = Env::of(kind, fast_settings()).await;
    let ports = env.ports();
    let brand = BrandId::new_random();
    let receiver = Receiver::start().await.unwrap();
    let sub = stored_subscription(&ports, brand, &receiver.url, |s| {
        s.rate_limit_per_sec = Some(1)
    })
    .await;
    // Five minutes of sends already spoken for.
    let (now, spacing) = (ports.clock.now(), sub.send_spacing_us().unwrap());
    for _ in 0..300 {
        ports
            .webhooks
            .take_send_slot(sub.id, now.timestamp_micros(), spacing, i64::MAX)
            .await
            .unwrap();
    }
    let event = succeeded_event(brand, now);
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();

    let report = deliverer
        .handle(&bulklink_core::domain::WebhookMessage::Event(event.clone()).encode())
        .await
        .unwrap();

    assert_eq!((report.deferred, report.attempted), (1, 0), "{report:?}");
    let id = Delivery::new(&event, &sub, now).id;
    let stored = ports
        .webhooks
        .get_delivery(sub.id, id)
        .await
        .unwrap()
        .unwrap();
    let back = stored.next_attempt_at.unwrap();
    assert!(
        back >= now + chrono::Duration::minutes(4),
        "{back} (now {now})"
    );
    let overdue = ports
        .webhooks
        .overdue_deliveries(now + chrono::Duration::minutes(3), 100)
        .await
        .unwrap();
    assert!(overdue.iter().all(|d| d.id != id), "taken for a lost one");
}

/// An attempt whose send slot is beyond the few seconds it may wait in place goes back on
/// the queue with that slot kept for it, and comes back to send in it without asking for
/// another: a backlog of n deliveries costs n asks, not a crowd asking again every second
/// until each is within reach (which kept DynamoDB busy with a throttled subscription's
/// slot while its backlog lasted).
async fn a_throttled_delivery_sent_back_on_the_queue_keeps_its_send_slot(kind: Kind) {
    use bulklink_core::domain::{SendSlot, WebhookMessage};
    let env = Env::of(kind, fast_settings()).await;
    let ports = env.ports();
    let brand = BrandId::new_random();
    let mut receiver = Receiver::start().await.unwrap();
    let sub = stored_subscription(&ports, brand, &receiver.url, |s| {
        s.rate_limit_per_sec = Some(1)
    })
    .await;
    receiver.trust(sub.secret.as_str()).unwrap();
    let spacing = sub.send_spacing_us().unwrap();
    // The next free slot, taking none (nothing is within 0 µs).
    let next_free = || {
        let ports = ports.clone();
        async move {
            let now = ports.clock.now().timestamp_micros();
            match ports.webhooks.take_send_slot(sub.id, now, spacing, 0).await {
                Ok(Some(SendSlot::Busy { free_at })) => free_at,
                other => panic!("{other:?}"),
            }
        }
    };
    // Six seconds of sends already spoken for: the next slot is past the wait in place.
    let now = ports.clock.now().timestamp_micros();
    for _ in 0..6 {
        ports
            .webhooks
            .take_send_slot(sub.id, now, spacing, i64::MAX)
            .await
            .unwrap();
    }
    let event = succeeded_event(brand, ports.clock.now());
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();

    let report = deliverer
        .handle(&WebhookMessage::Event(event.clone()).encode())
        .await
        .unwrap();

    assert_eq!((report.deferred, report.attempted), (1, 0), "{report:?}");
    let kept = next_free().await - spacing;
    let message = next_webhook_message(&ports).await;
    let WebhookMessage::Attempt { send_slot, .. } = WebhookMessage::decode(&message.body).unwrap()
    else {
        panic!("not an attempt: {}", message.body);
    };
    assert_eq!(
        send_slot,
        Some(kept),
        "the slot taken for it travels with it"
    );
    let report = deliverer.handle(&message.body).await.unwrap();
    assert_eq!(
        (report.deferred, report.attempted, report.delivered),
        (0, 1, 1),
        "{report:?}"
    );
    assert_eq!(
        next_free().await,
        kept + spacing,
        "it sent in its kept slot without taking another"
    );
    let sent_by = ports.clock.now().timestamp_micros();
    assert!(sent_by >= kept, "sent before its slot: {sent_by} < {kept}");
    let got = next_delivery(&mut receiver, Duration::from_secs(10)).await;
    assert!(got.verified.is_ok(), "{:?}", got.verified);
}

/// An event for more subscriptions of one endpoint than its concurrency cap: an endpoint
/// that answers at once frees its slots in milliseconds, so every delivery is sent now;
/// none goes back on the queue to come back with the others and crowd it again (which
/// kept the emulated DynamoDB busy for the length of the contract run).
async fn a_burst_to_one_endpoint_over_its_cap_is_sent_now_not_sent_back(kind: Kind) {
    use bulklink_core::domain::WebhookMessage;
    let settings = bulklink_core::Settings {
        webhook_host_concurrency: 2,
        ..fast_settings()
    };
    let env = Env::of(kind, settings).await;
    let ports = env.ports();
    let brand = BrandId::new_random();
    let mut receiver = Receiver::start().await.unwrap();
    for _ in 0..8 {
        stored_subscription(&ports, brand, &receiver.url, |_| {}).await;
    }
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();

    let report = deliverer
        .handle(&WebhookMessage::Event(succeeded_event(brand, ports.clock.now())).encode())
        .await
        .unwrap();

    assert_eq!(
        (report.attempted, report.delivered, report.deferred),
        (8, 8, 0),
        "{report:?}"
    );
    for _ in 0..8 {
        next_delivery(&mut receiver, Duration::from_secs(10)).await;
    }
}

/// The next message of the webhook queue, as soon as one is visible (left on the queue).
pub(crate) async fn next_webhook_message(
    ports: &bulklink_core::ports::Ports,
) -> bulklink_core::ports::ReceivedMessage {
    loop {
        let got = ports
            .webhook_queue
            .receive(1, Duration::from_secs(1))
            .await
            .unwrap();
        if let Some(message) = got.into_iter().next() {
            return message;
        }
    }
}

/// A subscription of `brand` to `url` written straight to the store (no API), after
/// `shape` sets what the test needs.
pub(crate) async fn stored_subscription(
    ports: &bulklink_core::ports::Ports,
    brand: BrandId,
    url: &str,
    shape: impl FnOnce(&mut bulklink_core::domain::Subscription),
) -> bulklink_core::domain::Subscription {
    let mut sub = bulklink_core::domain::Subscription::new(
        bulklink_core::domain::SubscriptionId::new_v7(),
        brand,
        url.parse().unwrap(),
        Default::default(),
        None,
        ports.clock.now(),
    );
    shape(&mut sub);
    ports.webhooks.create_subscription(&sub).await.unwrap();
    sub
}

/// The `job.succeeded` event of a new job of `brand` that ended at `at`.
pub(crate) fn succeeded_event(
    brand: BrandId,
    at: chrono::DateTime<chrono::Utc>,
) -> bulklink_core::domain::Event {
    use bulklink_core::domain::{Event, Job, JobEvent, JobStatus, OfferId};
    let mut job = Job::new(brand, OfferId::new_random(), None, at);
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(at);
    Event::Job(JobEvent::of_status(&job).unwrap())
}

/// The `offer.drift` events on the webhook queue, each handed to the deliverer and taken
/// off the queue; other messages are left alone.
async fn deliver_drift_events(
    deliverer: &webhooks::Deliverer,
    ports: &bulklink_core::ports::Ports,
) -> Vec<Value> {
    use bulklink_core::domain::{Event, WebhookMessage};
    let mut events = Vec::new();
    loop {
        let received = ports
            .webhook_queue
            .receive(10, Duration::from_millis(200))
            .await
            .unwrap();
        if received.is_empty() {
            return events;
        }
        for message in received {
            if let Ok(WebhookMessage::Event(Event::Offer(e))) =
                WebhookMessage::decode(&message.body)
            {
                deliverer.handle(&message.body).await.unwrap();
                ports
                    .webhook_queue
                    .delete(std::slice::from_ref(&message.receipt))
                    .await
                    .unwrap();
                events.push(serde_json::to_value(&e).unwrap());
            }
        }
    }
}

/// The one `offer.drift` on the queue, delivered to `healthy`: signed with `secret` (at
/// `now`), passing `schema`, of the offer and brand of `expected`, for the stretch that began
/// at its time, one missing store; nothing else sent. Its `webhook-id`.
async fn heard_drift(
    deliverer: &webhooks::Deliverer,
    ports: &bulklink_core::ports::Ports,
    healthy: &mut Receiver,
    (secret, schema): (&WebhookSecret, &Value),
    now: chrono::DateTime<chrono::Utc>,
    expected: (
        bulklink_core::domain::OfferId,
        BrandId,
        chrono::DateTime<chrono::Utc>,
    ),
) -> String {
    let told = deliver_drift_events(deliverer, ports).await;
    assert_eq!(told.len(), 1, "{told:?}");
    let got = healthy
        .messages
        .try_recv()
        .expect("the subscription heard it");
    bulklink_core::domain::verify(
        &[secret],
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        got.header("webhook-signature"),
        &got.body,
        now,
    )
    .unwrap();
    let delivered = got.payload().unwrap();
    json_schema_check(schema, &delivered)
        .unwrap_or_else(|e| panic!("the delivery {delivered}: {e}"));
    let data = &delivered["data"];
    let (offer, brand, since) = expected;
    assert_eq!(data["type"], "offer.drift");
    assert_eq!(data["offerId"], offer.to_string());
    assert_eq!(data["brandId"], brand.to_string());
    assert_eq!((&data["missing"], &data["extra"]), (&json!(1), &json!(0)));
    let began: chrono::DateTime<chrono::Utc> =
        data["driftSince"].as_str().unwrap().parse().unwrap();
    assert_eq!(began, since);
    assert!(
        healthy.messages.try_recv().is_err(),
        "nothing else was sent"
    );
    got.header("webhook-id").expect("a webhook-id").to_owned()
}

/// A rule's links drifting from it (a store opened behind the follower's back) are told as
/// one `offer.drift` once the drift has lasted the settling time — not before, and not again
/// while it lasts; signed like any delivery, matching its catalog schema, heard only by the
/// subscriptions that want the type. Mended, the stretch ends; a new one is a new event.
async fn a_rules_lasting_drift_is_told_once_a_stretch_after_the_settling_time(kind: Kind) {
    use bulklink_core::domain::{LinkedBy, Location, LocationFilter, LocationId, OfferRule};
    let env = Env::of(kind, fast_settings()).await;
    let clock = bulklink_core::Clock::manual(env.ports().clock.now());
    let config = bulklink::runtime::RuntimeConfig {
        clock: clock.clone(),
        consumers: false,
        ..env.config()
    };
    let mut settings = env.settings.clone();
    settings.drift_settle = Duration::from_secs(30 * 60);
    let runtime = env.start(config, |ports| ports).await;
    let ports = runtime.ports.clone();
    let seeded = env.seed(3).await;
    let api = runtime.api_as(Role::Brand(seeded.brand_id)).unwrap();
    let mut healthy = Receiver::start().await.unwrap();
    let narrow = Receiver::start().await.unwrap();
    let healthy_sub: SubscriptionView = api
        .post("/webhooks", &json!({ "url": healthy.url, "filter": {} }))
        .await
        .unwrap();
    let narrow_sub: SubscriptionView = api
        .post(
            "/webhooks",
            &json!({ "url": narrow.url, "filter": { "eventTypes": ["job.succeeded"] } }),
        )
        .await
        .unwrap();
    let deliverer = webhooks::Deliverer::new(&ports, loopback_egress(), &env.settings).unwrap();
    let catalog: Value = api.get("/webhooks/event-types").await.unwrap();
    let schema = catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "offer.drift")
        .map(|i| i["schema"].clone())
        .expect("offer.drift is in the catalog");

    // The rule wants every store, and has them.
    let rule = OfferRule {
        offer_id: seeded.offer_id,
        brand_id: seeded.brand_id,
        filter: LocationFilter::default(),
        set_at: clock.now(),
    };
    ports.catalog.put_rule(&rule).await.unwrap();
    let ids: Vec<LocationId> = ports
        .catalog
        .page_brand_locations(seeded.brand_id, None, None, 100)
        .await
        .unwrap()
        .items;
    ports
        .catalog
        .follow_rule(&rule, &ids, LinkedBy::Rule)
        .await
        .unwrap();
    let watch = || {
        let (ports, settings) = (ports.clone(), settings.clone());
        async move {
            worker::sweeper::handle_scheduled_event(
                &ports,
                &settings,
                &json!({ "task": "watch-drift" }),
            )
            .await
            .unwrap()["drift"]
                .clone()
        }
    };
    let report = |watched: u64, drifting: u64, notified: u64| json!({ "watched": watched, "drifting": drifting, "notified": notified });
    assert_eq!(watch().await, report(1, 0, 0));

    // A store opened with nothing following it: the rule wants it, it lacks the offer.
    let open_unfollowed = || {
        let ports = ports.clone();
        let (brand, at) = (seeded.brand_id, clock.now());
        async move {
            let store = Location::new(LocationId::new_random(), brand, "1 Drift St".into(), at);
            ports
                .catalog
                .create_locations(std::slice::from_ref(&store))
                .await
                .unwrap();
            store.id
        }
    };
    let opened = open_unfollowed().await;
    let since = clock.now();
    assert_eq!(watch().await, report(1, 1, 0));
    clock.advance(chrono::Duration::minutes(29));
    assert_eq!(watch().await, report(1, 1, 0), "29 minutes: still settling");
    assert!(deliver_drift_events(&deliverer, &ports).await.is_empty());
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(watch().await, report(1, 1, 1));

    let secret: WebhookSecret = healthy_sub.secret.as_deref().unwrap().parse().unwrap();
    let drift_of = |since| (seeded.offer_id, seeded.brand_id, since);
    let first_id = heard_drift(
        &deliverer,
        &ports,
        &mut healthy,
        (&secret, &schema),
        clock.now(),
        drift_of(since),
    )
    .await;
    let logged: Value = api
        .get(&format!("/webhooks/{}/deliveries?limit=100", narrow_sub.id))
        .await
        .unwrap();
    assert_eq!(
        logged["items"],
        json!([]),
        "a subscription to job.succeeded only"
    );

    // Not again while it lasts.
    clock.advance(chrono::Duration::hours(1));
    assert_eq!(watch().await, report(1, 1, 0));
    assert!(deliver_drift_events(&deliverer, &ports).await.is_empty());

    // Mended: the stretch ends. A new one is told anew, with its own id.
    bulklink_core::rules::follow(&ports, opened).await.unwrap();
    assert_eq!(watch().await, report(1, 0, 0));
    open_unfollowed().await;
    let again = clock.now();
    assert_eq!(watch().await, report(1, 1, 0));
    clock.advance(chrono::Duration::minutes(31));
    assert_eq!(watch().await, report(1, 1, 1));
    let second_id = heard_drift(
        &deliverer,
        &ports,
        &mut healthy,
        (&secret, &schema),
        clock.now(),
        drift_of(again),
    )
    .await;
    assert_ne!(second_id, first_id);
    runtime.shutdown().await;
}
