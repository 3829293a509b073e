//! A deployment rehearsal: every Lambda binary runs as its own process under a Runtime API
//! stand-in (real `Lambda-Runtime-Deadline-Ms`), with the environment Terraform gives it,
//! against moto. The test plays API Gateway (v2 events with JWT authorizer claims) and the
//! SQS event source mappings (receive, invoke, delete what the batch response does not
//! report) and the catalog stream's (location records in order, retried from the first
//! reported failure); only the function binaries do bulklink's work.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use bulklink::receiver::Receiver;
use bulklink_core::domain::{BrandId, WebhookSecret};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::lambda_fixtures::lambda_env;
use crate::runtime_api::{function_binary, Outcome, RuntimeApi};
use crate::support::*;

/// One function: its process and its Runtime API, and its key in Terraform's
/// `local.function_names` (its calls to the emulator are signed with `rehearsal-{role}`).
struct Function {
    name: &'static str,
    role: &'static str,
    api: RuntimeApi,
    child: Child,
}

/// The access key a function's calls (and its event source mapping's) are signed with.
fn access_key(role: &str) -> String {
    format!("rehearsal-{role}")
}

/// SDK clients that sign as the role's function.
async fn clients_as(role: &str) -> bulklink_aws::AwsClients {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(emulator().endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            access_key(role),
            "rehearsal",
            None,
            None,
            "rehearsal",
        ))
        .load()
        .await;
    bulklink_aws::AwsClients::from_config(&config)
}

impl Function {
    async fn start(
        env: &Env,
        binary: &str,
        name: &'static str,
        role: &'static str,
        extra: &[(&str, &str)],
    ) -> Function {
        let api = RuntimeApi::start().await;
        let child = Command::new(function_binary(binary))
            .env_clear()
            .envs(lambda_env(env, &api.host(), name))
            .env("AWS_ACCESS_KEY_ID", access_key(role))
            .env("AWS_SECRET_ACCESS_KEY", "rehearsal")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_path(name)).unwrap())
            .spawn()
            .unwrap();
        Function {
            name,
            role,
            api,
            child,
        }
    }

    async fn invoke(&self, event: Value, timeout: Duration) -> Value {
        self.try_invoke(event, timeout)
            .await
            .unwrap_or_else(|e| panic!("{}", e.report))
    }

    /// The invocation's response, or how it ended otherwise.
    async fn try_invoke(&self, event: Value, timeout: Duration) -> Result<Value, Unanswered> {
        let id = self.api.invoke(event, timeout);
        match self
            .api
            .outcome(&id, timeout + Duration::from_secs(10))
            .await
        {
            Some(Outcome::Response(body)) => Ok(body),
            other => Err(Unanswered {
                errored: other.is_some(),
                report: format!(
                    "{}: invocation {id} ended {other:?}; its log ends:\n{}",
                    self.name,
                    log_tail(self.name)
                ),
            }),
        }
    }
}

/// An invocation that ended in an error (`errored`), or without an answer by its deadline
/// and ten seconds more (this machine, loaded); `report` says which, with the end of the
/// function's log.
#[derive(Debug)]
struct Unanswered {
    errored: bool,
    report: String,
}

/// What the event source mappings saw go wrong, as a real mapping would leave it: the
/// batch back on its queue after the visibility timeout.
type Incidents = Arc<std::sync::Mutex<Vec<Unanswered>>>;

/// Where a function's process writes its log (stderr).
fn log_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rehearsal-{name}.log"))
}

/// The last lines of a function's log.
fn log_tail(name: &str) -> String {
    let log = std::fs::read_to_string(log_path(name)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// API Gateway's side: an HTTP API v2 event with the authorizer's claims of `brand`.
fn http_event(method: &str, path: &str, body: Option<&Value>, brand: BrandId) -> Value {
    let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": { "content-type": "application/json", "host": "api.example.invalid" },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "rehearsal",
            "domainName": "api.example.invalid",
            "domainPrefix": "api",
            "http": { "method": method, "path": raw_path, "protocol": "HTTP/1.1",
                      "sourceIp": "127.0.0.1", "userAgent": "rehearsal" },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Dec/2026:00:00:00 +0000",
            "timeEpoch": chrono::Utc::now().timestamp_millis(),
            "authorizer": { "jwt": { "claims": {
                "sub": "rehearsal", "brand_id": brand.to_string(), "scope": "bulklink/jobs"
            }, "scopes": null } }
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
}

/// The function's answer: status code and JSON body.
async fn call(
    function: &Function,
    method: &str,
    path: &str,
    body: Option<Value>,
    brand: BrandId,
) -> (u16, Value) {
    let response = function
        .invoke(
            http_event(method, path, body.as_ref(), brand),
            Duration::from_secs(10),
        )
        .await;
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let body = response["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// A DynamoDB stream attribute as DynamoDB JSON (the Lambda event's form).
fn dynamodb_json(value: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    match value {
        A::S(s) => json!({ "S": s }),
        A::N(n) => json!({ "N": n }),
        A::Bool(b) => json!({ "BOOL": b }),
        A::Null(_) => json!({ "NULL": true }),
        A::Ss(set) => json!({ "SS": set }),
        A::Ns(set) => json!({ "NS": set }),
        A::L(list) => json!({ "L": list.iter().map(dynamodb_json).collect::<Vec<_>>() }),
        A::M(map) => json!({ "M": image_json(Some(map)) }),
        other => panic!("an attribute the rehearsal does not convert: {other:?}"),
    }
}

fn image_json(
    image: Option<
        &std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
    >,
) -> Value {
    let map: serde_json::Map<String, Value> = image
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), dynamodb_json(v)))
        .collect();
    Value::Object(map)
}

/// Records per estate invocation (Terraform's `estate_batch_size` default).
const ESTATE_BATCH_SIZE: usize = 100;

/// The catalog stream's event source mapping onto the estate function, until `stop`: its
/// records from now on, location items only (the mapping's filter), in order, at most
/// `ESTATE_BATCH_SIZE` at a time; a batch is retried from the first record the function
/// reports, or whole when the invocation errs or goes unanswered (noted in `incidents`).
async fn stream_mapping(
    clients: bulklink_aws::AwsClients,
    table: String,
    function: Arc<Function>,
    incidents: Incidents,
    mut stop: watch::Receiver<bool>,
) {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let streams = aws_sdk_dynamodbstreams::Client::new(&clients.sdk_config);
    // The stream's ARN is the deployment's (Terraform wires it in); the mapping itself reads
    // with the function's role.
    let deployer = bulklink_aws::AwsClients::load(Some(emulator().endpoint())).await;
    let arn = deployer
        .dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("the catalog table has a stream")
        .to_owned();
    let stream = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let shard = stream.stream_description().unwrap().shards()[0]
        .shard_id()
        .unwrap()
        .to_owned();
    let mut last: Option<String> = None;
    while !*stop.borrow() {
        // A fresh iterator each time (see bulklink_aws::estate: the emulator replaces a
        // shard when it rolls a transaction back).
        let request = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(&shard);
        let request = match &last {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let Ok(iterator) = request.send().await else {
            continue;
        };
        let Ok(out) = streams
            .get_records()
            .shard_iterator(iterator.shard_iterator().unwrap_or_default())
            .send()
            .await
        else {
            continue;
        };
        let mut records = Vec::new();
        let before = last.clone();
        for record in out.records().iter().take(ESTATE_BATCH_SIZE) {
            let change = record.dynamodb().unwrap();
            let seq = change.sequence_number().unwrap_or_default().to_owned();
            let keys = image_json(change.keys());
            if keys["sk"]["S"] == "#LOC" {
                records.push((
                    seq.clone(),
                    json!({
                        "eventID": seq,
                        "eventName": record.event_name().map(|e| e.as_str()),
                        "eventVersion": "1.1",
                        "eventSource": "aws:dynamodb",
                        "awsRegion": "us-east-1",
                        "dynamodb": {
                            "Keys": keys,
                            "OldImage": image_json(change.old_image()),
                            "NewImage": image_json(change.new_image()),
                            "SequenceNumber": seq,
                            "SizeBytes": 1,
                            "StreamViewType": "NEW_AND_OLD_IMAGES",
                        },
                        "eventSourceARN": arn,
                    }),
                ));
            }
            last = Some(seq);
        }
        if records.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let event: Vec<Value> = records.iter().map(|(_, r)| r.clone()).collect();
        let answer = match function
            .try_invoke(json!({ "Records": event }), Duration::from_secs(30))
            .await
        {
            Ok(answer) => answer,
            Err(unanswered) => {
                incidents.lock().unwrap().push(unanswered);
                last = before;
                continue;
            }
        };
        if let Some(first) = answer["batchItemFailures"][0]["itemIdentifier"].as_str() {
            // Retried from the reported record on: back to just before it.
            let at = records.iter().position(|(s, _)| s == first).unwrap();
            last = at.checked_sub(1).map(|i| records[i].0.clone()).or(last);
        }
    }
}

/// The SQS event source mapping of `queue_url` onto `function`, until `stop`.
async fn event_source_mapping(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    function: Arc<Function>,
    incidents: Incidents,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let received = tokio::select! {
            r = sqs.receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send() => r,
            _ = stop.changed() => return,
        };
        let Ok(received) = received else { continue };
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:rehearsal",
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let answer = match function
            .try_invoke(json!({ "Records": records }), Duration::from_secs(30))
            .await
        {
            Ok(answer) => answer,
            Err(unanswered) => {
                // As on AWS: nothing is deleted, the batch comes back.
                eprintln!("{}", unanswered.report);
                incidents.lock().unwrap().push(unanswered);
                continue;
            }
        };
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for m in &messages {
            if !failed.contains(&m.message_id().unwrap_or_default()) {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lambda_binary_does_its_part_of_a_job_under_a_runtime_api() {
    // A chunk may take as long here as on AWS: the import's 298 closures reach the estate
    // function through the stream while the worker writes, both on one emulator, and a
    // chunk given up after the 3.2 s of the fast settings went round until dead-lettered
    // (no function reads the chunk DLQ here); one was seen to take 16 s once. So: the
    // time of a real deployment's chunk, and the redeliveries to spare.
    let settings = bulklink_core::Settings {
        visibility_timeout: Duration::from_secs(20),
        max_receive_count: 10,
        ..fast_settings()
    };
    let env = Env::of(Kind::Aws, settings).await;
    let names = env.aws_names().unwrap().clone();
    let loopback = [("WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")];
    let job_api = Function::start(
        &env,
        "bulklink-job-api",
        "bulklink-job-api",
        "job_api",
        &loopback,
    )
    .await;
    let status = Function::start(
        &env,
        "bulklink-status",
        "bulklink-status",
        "status",
        &loopback,
    )
    .await;
    let fanout =
        Arc::new(Function::start(&env, "bulklink-fanout", "bulklink-fanout", "fanout", &[]).await);
    let worker = Arc::new(
        Function::start(
            &env,
            "bulklink-worker",
            "bulklink-worker",
            "worker",
            &[("WORKER_SOURCE", "chunks")],
        )
        .await,
    );
    let deliverer = Arc::new(
        Function::start(
            &env,
            "bulklink-webhooks",
            "bulklink-webhooks",
            "webhooks",
            &loopback,
        )
        .await,
    );
    let sweeper =
        Function::start(&env, "bulklink-sweeper", "bulklink-sweeper", "sweeper", &[]).await;
    let estate =
        Arc::new(Function::start(&env, "bulklink-estate", "bulklink-estate", "estate", &[]).await);

    let brand = BrandId::new_random();
    let (code, offer) = call(
        &job_api,
        "POST",
        "/offers",
        Some(json!({ "name": "rehearsal" })),
        brand,
    )
    .await;
    assert_eq!(code, 201, "{offer}");
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    for batch in 0..3 {
        let locations: Vec<Value> = (0..100)
            .map(|i| json!({ "address": format!("{} Rehearsal Road", batch * 100 + i) }))
            .collect();
        let (code, body) = call(
            &job_api,
            "POST",
            "/locations",
            Some(json!(locations)),
            brand,
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let mut receiver = Receiver::start().await.unwrap();
    let (code, hook) = call(
        &status,
        "POST",
        "/webhooks",
        Some(json!({ "url": receiver.url, "filter": outcomes() })),
        brand,
    )
    .await;
    assert_eq!(code, 201, "{hook}");
    let secret: WebhookSecret = hook["secret"].as_str().unwrap().parse().unwrap();

    let (stop, stopped) = watch::channel(false);
    // Each mapping polls with its function's role, as on AWS.
    let mut mappings = Vec::new();
    let incidents = Incidents::default();
    for (url, function) in [
        (names.fanout_queue_url.clone(), fanout.clone()),
        (names.chunk_queue_url.clone(), worker.clone()),
        (names.webhook_queue_url.clone(), deliverer.clone()),
    ] {
        let sqs = clients_as(function.role).await.sqs;
        mappings.push(tokio::spawn(event_source_mapping(
            sqs,
            url,
            function,
            incidents.clone(),
            stopped.clone(),
        )));
    }

    let (code, job) = call(
        &job_api,
        "POST",
        &format!("/offers/{offer_id}/link-all-locations"),
        None,
        brand,
    )
    .await;
    assert_eq!(code, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let mut done = Value::Null;
    for _ in 0..600 {
        let (code, body) = call(&status, "GET", &format!("/jobs/{job_id}"), None, brand).await;
        assert_eq!(code, 200, "{body}");
        if body["status"] == "SUCCEEDED" {
            done = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        done["status"], "SUCCEEDED",
        "the job ended through the binaries"
    );
    assert_eq!(done["counters"]["linked"], 300);
    assert_eq!(done["counters"]["total"], 300);

    // The job's report through the status binary, in two parts linked by `Link`.
    let mut rows = std::collections::HashSet::new();
    let mut path = format!("/jobs/{job_id}/report?limit=200");
    for part in 0.. {
        let response = status
            .invoke(
                http_event("GET", &path, None, brand),
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(response["statusCode"], 200, "{response}");
        let text = response["body"].as_str().unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("locationId,externalId,outcome,error,at"));
        for line in lines {
            assert!(line.contains(",linked,"), "{line}");
            assert!(
                rows.insert(line.split(',').next().unwrap().to_owned()),
                "{line} twice"
            );
        }
        let headers = &response["headers"];
        let link = headers["link"].as_str().or(headers["Link"].as_str());
        match link {
            Some(link) => {
                assert_eq!(part, 0, "two parts: {link}");
                path = link.split(['<', '>']).nth(1).unwrap().to_owned();
            }
            None => break,
        }
    }
    assert_eq!(rows.len(), 300, "every location once, across the parts");

    let delivery = tokio::time::timeout(Duration::from_secs(60), receiver.next())
        .await
        .expect("the delivery function delivered the event")
        .unwrap();
    assert!(
        delivery.verify_with(&[&secret]).is_ok(),
        "signed with the subscription's secret"
    );
    assert_eq!(delivery.event().unwrap()["jobId"], job_id.as_str());
    let report = sweeper
        .invoke(
            serde_json::from_str(
                &std::fs::read_to_string(format!(
                    "{}/tests/fixtures/scheduled_event.json",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
            .unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert!(
        report.get("notified").is_some() && report.get("stalled").is_some(),
        "{report}"
    );

    // A second offer with a standing rule: its reconcile job runs through fanout and the
    // worker; then a store moved into the rule's country is linked by the estate function,
    // fed by the catalog stream.
    let estate_mapping = tokio::spawn(stream_mapping(
        clients_as(estate.role).await,
        names.catalog_table.clone(),
        estate.clone(),
        incidents.clone(),
        stopped.clone(),
    ));
    let (code, ruled) = call(
        &job_api,
        "POST",
        "/offers",
        Some(json!({ "name": "ruled" })),
        brand,
    )
    .await;
    assert_eq!(code, 201, "{ruled}");
    let ruled = ruled["id"].as_str().unwrap().to_owned();
    let (code, set) = call(
        &job_api,
        "PUT",
        &format!("/offers/{ruled}/rule"),
        Some(json!({ "where": { "country": ["GB"] } })),
        brand,
    )
    .await;
    assert_eq!(code, 200, "{set}");
    let reconcile = set["job"]["id"].as_str().unwrap().to_owned();
    let mut ended = false;
    for _ in 0..600 {
        let (_, body) = call(&status, "GET", &format!("/jobs/{reconcile}"), None, brand).await;
        if body["status"] == "SUCCEEDED" {
            assert_eq!(body["counters"]["notLinked"], 300, "{body}");
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the reconcile job ended through the binaries");
    let (_, page) = call(&status, "GET", "/locations?limit=1", None, brand).await;
    let moved = page["items"][0]["id"].as_str().unwrap().to_owned();
    let (code, body) = call(
        &job_api,
        "PATCH",
        &format!("/locations/{moved}"),
        Some(json!({ "country": "GB" })),
        brand,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let mut linked = Value::Null;
    for _ in 0..300 {
        let (_, links) = call(
            &status,
            "GET",
            &format!("/offers/{ruled}/locations"),
            None,
            brand,
        )
        .await;
        if links["items"].as_array().is_some_and(|l| !l.is_empty()) {
            linked = links;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(linked["items"][0]["locationId"], moved.as_str(), "{linked}");
    assert_eq!(linked["items"][0]["linkedBy"], "rule");
    let (_, drift) = call(
        &status,
        "GET",
        &format!("/offers/{ruled}/drift"),
        None,
        brand,
    )
    .await;
    assert_eq!(drift, json!({ "missing": 0, "extra": 0 }));
    // The sweeper's drift watch (its own schedule's event) counts the same.
    let watched = sweeper
        .invoke(json!({ "task": "watch-drift" }), Duration::from_secs(30))
        .await;
    assert_eq!(
        watched["drift"],
        json!({ "watched": 1, "drifting": 0, "notified": 0 }),
        "{watched}"
    );

    // The rest of what the functions do, so that every call they make is seen (and held
    // against their roles below): a filtered dry run, a store closed and one deleted (both
    // carry the first offer), an upsert twice, the offers and the closed stores listed, the
    // rule read and removed, and an unlink-all through fanout and the worker.
    let (code, plan) = call(
        &job_api,
        "POST",
        &format!("/offers/{offer_id}/link-all-locations?dryRun=true"),
        Some(json!({ "where": { "country": ["GB"] } })),
        brand,
    )
    .await;
    assert_eq!((code, &plan["locations"]), (200, &json!(1)), "{plan}");
    let (_, page) = call(&status, "GET", "/locations?limit=3", None, brand).await;
    let closed = page["items"][1]["id"].as_str().unwrap().to_owned();
    let deleted = page["items"][2]["id"].as_str().unwrap().to_owned();
    let (code, body) = call(
        &job_api,
        "PATCH",
        &format!("/locations/{closed}"),
        Some(json!({ "status": "closed" })),
        brand,
    )
    .await;
    assert_eq!((code, &body["hasOffer"]), (200, &json!(false)), "{body}");
    let (code, body) = call(
        &job_api,
        "DELETE",
        &format!("/locations/{deleted}"),
        None,
        brand,
    )
    .await;
    assert_eq!(code, 204, "{body}");
    for expected in [201, 200] {
        let (code, body) = call(
            &job_api,
            "PUT",
            "/locations/by-external-id/R-1",
            Some(json!({ "address": "1 Rehearsal Row", "country": "FR" })),
            brand,
        )
        .await;
        assert_eq!(code, expected, "{body}");
    }
    let (_, offers) = call(&status, "GET", "/offers", None, brand).await;
    assert_eq!(offers["items"].as_array().unwrap().len(), 2, "{offers}");
    let (_, listed) = call(&status, "GET", "/locations?status=closed", None, brand).await;
    assert_eq!(listed["items"][0]["id"], closed.as_str(), "{listed}");
    let (code, _) = call(
        &status,
        "GET",
        &format!("/offers/{ruled}/rule"),
        None,
        brand,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call(
        &job_api,
        "DELETE",
        &format!("/offers/{ruled}/rule"),
        None,
        brand,
    )
    .await;
    assert_eq!(code, 204);
    let (code, job) = call(
        &job_api,
        "POST",
        &format!("/offers/{offer_id}/unlink-all-locations"),
        None,
        brand,
    )
    .await;
    assert_eq!(code, 202, "{job}");
    let unlink = job["id"].as_str().unwrap().to_owned();
    let mut unlinked = Value::Null;
    for _ in 0..600 {
        let (_, body) = call(&status, "GET", &format!("/jobs/{unlink}"), None, brand).await;
        if body["status"] == "SUCCEEDED" {
            unlinked = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unlinked["counters"]["unlinked"], 298, "{unlinked}");

    // An import: job-api presigns the upload, the file goes to S3, its event reaches fanout
    // through the fanout queue's mapping; fanout takes the file and pages its rows, the
    // worker applies them and closes the stores the file does not name.
    let (code, import) = call(
        &job_api,
        "POST",
        "/imports",
        Some(json!({ "format": "csv", "closeMissing": true })),
        brand,
    )
    .await;
    assert_eq!(code, 201, "{import}");
    let file = "externalId,address,country\nR-1,1 Rehearsal Row,GB\nR-2,2 Rehearsal Row,\n";
    let http = reqwest::Client::new();
    let put = http
        .put(import["uploadUrl"].as_str().unwrap())
        .body(file)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let import_id = import["id"].as_str().unwrap().to_owned();
    let mut imported = Value::Null;
    // A bound, not a pace: its rows, then a wait for them, then the closing pass, each a
    // Lambda invocation on this loaded machine (once past 60 s, once past 180 s beside the
    // whole suite, which now also carries the jobs' start and progress events).
    for _ in 0..3_000 {
        let (_, shown) = call(
            &status,
            "GET",
            &format!("/imports/{import_id}"),
            None,
            brand,
        )
        .await;
        if let Some(job) = shown["jobId"].as_str() {
            let (_, body) = call(&status, "GET", &format!("/jobs/{job}"), None, brand).await;
            if ["SUCCEEDED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELLED"]
                .contains(&body["status"].as_str().unwrap_or_default())
            {
                imported = body;
                break;
            }
            imported = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        imported["status"],
        "SUCCEEDED",
        "the import's job: {imported}; the mappings saw: {:#?}",
        incidents.lock().unwrap()
    );
    let counters = &imported["counters"];
    assert_eq!(
        (
            &counters["created"],
            &counters["updated"],
            &counters["closed"]
        ),
        (&json!(1), &json!(1), &json!(298)),
        "{imported}"
    );

    let _ = stop.send(true);
    for mapping in mappings {
        mapping.await.expect("an event source mapping");
    }
    estate_mapping.await.expect("the catalog stream's mapping");
    let errored: Vec<String> = incidents
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.errored)
        .map(|i| i.report.clone())
        .collect();
    assert!(errored.is_empty(), "invocations that failed: {errored:#?}");
    write_calls(&names);
}

/// Every call the emulator saw each function (or its mapping) make, as `(action, resource)`
/// with the resource named as Terraform names it (`aws_dynamodb_table.catalog.arn`, …), to
/// `<target>/tmp/rehearsal-iam-calls.json`, where terraform/tests holds each against the
/// function's role.
fn write_calls(names: &bulklink_aws::AwsNames) {
    let log = std::fs::read_to_string(emulator().calls_log()).expect("the emulator's call log");
    let symbol = |resource: &str| -> String {
        let tables = [
            (&names.catalog_table, "catalog"),
            (&names.jobs_table, "jobs"),
        ];
        for (table, name) in tables {
            if let Some(rest) = resource.strip_prefix(&format!("table/{table}")) {
                return format!("aws_dynamodb_table.{name}.arn{rest}");
            }
            if resource.contains(&format!(":table/{table}/stream/")) {
                return format!("aws_dynamodb_table.{name}.stream_arn");
            }
        }
        let queues = [
            (&names.fanout_queue_url, "fanout"),
            (&names.chunk_queue_url, "chunks"),
            (&names.chunk_dlq_url, "chunks_dlq"),
            (&names.webhook_queue_url, "webhooks"),
        ];
        for (url, name) in queues {
            if resource == url.as_str() {
                return format!("aws_sqs_queue.{name}.arn");
            }
        }
        if resource == names.events_topic_arn {
            return "aws_sns_topic.job_events.arn".to_owned();
        }
        if let Some(key) = resource.strip_prefix(&format!("{}/", names.uploads_bucket)) {
            return format!("aws_s3_bucket.uploads.arn/{key}");
        }
        if let Some(key) = resource.strip_prefix("key/") {
            if names.webhook_secrets_key.ends_with(&format!("key/{key}")) {
                return "aws_kms_key.webhook_secrets.arn".to_owned();
            }
        }
        resource.to_owned()
    };
    let mut calls: std::collections::BTreeMap<
        String,
        std::collections::BTreeSet<(String, String)>,
    > = Default::default();
    for line in log.lines() {
        let call: Value = serde_json::from_str(line).unwrap();
        let role = call["key"]
            .as_str()
            .unwrap()
            .trim_start_matches("rehearsal-");
        calls.entry(role.to_owned()).or_default().insert((
            call["action"].as_str().unwrap().to_owned(),
            symbol(call["resource"].as_str().unwrap()),
        ));
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rehearsal-iam-calls.json");
    std::fs::write(&path, serde_json::to_string_pretty(&calls).unwrap()).unwrap();
}
