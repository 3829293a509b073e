//! The OpenAPI document as a contract: the committed copy is the generated one, it names
//! exactly the routes of the README's table and the server serves each of them, and every
//! status code it documents is one a real request gets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bulklink::client::{ApiClient, ApiResponse};
use bulklink::receiver::Receiver;
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_core::domain::{BrandId, JobId, LocationId, OfferId};
use bulklink_core::Settings;
use bulklink_http::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use utoipa::openapi::{OpenApi, PathItem};

use crate::support::*;

/// The repository's root.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `bulklink openapi` prints.
fn generated() -> String {
    serde_json::to_string_pretty(status::openapi()).unwrap() + "\n"
}

/// A text path parameter is documented with the rule `checked_text` applies to it.
#[test]
fn the_external_id_path_parameter_has_the_text_rule() {
    let doc: Value = serde_json::from_str(&generated()).unwrap();
    let params = &doc["paths"]["/locations/by-external-id/{externalId}"]["put"]["parameters"];
    let external_id = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "externalId")
        .unwrap();
    assert_eq!(
        external_id["schema"]["pattern"],
        bulklink_http::http::TEXT_PATTERN
    );
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let committed = std::fs::read_to_string(root().join("docs/openapi.json")).unwrap();
    // Line by line, so a failure points at the first difference.
    let first_difference = committed
        .lines()
        .zip(generated().lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("line {}: committed {a:?}, generated {b:?}", i + 1));
    assert!(
        committed == generated(),
        "docs/openapi.json differs from the API the code serves ({}); regenerate it with \
         `cargo run --bin bulklink -- openapi > docs/openapi.json` and review the change",
        first_difference.unwrap_or_else(|| "in length".to_owned())
    );
}

/// Every `(METHOD, /path)` the document describes, with its operation.
fn operations(doc: &OpenApi) -> BTreeMap<Route, &utoipa::openapi::path::Operation> {
    let mut all = BTreeMap::new();
    for (path, item) in &doc.paths.paths {
        let item: &PathItem = item;
        for (method, op) in [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if let Some(op) = op {
                all.insert((method.to_owned(), path.clone()), op);
            }
        }
    }
    all
}

/// The rows of the README's API table: the first column's backticked method and path pairs
/// (`GET` / `DELETE /webhooks/{id}` is two routes, queries left off) and the status codes the
/// last column names.
/// A route as the README writes it: method and path.
type Route = (String, String);

/// One row of the README's API table: its routes and the status codes it names.
struct ReadmeRow {
    routes: Vec<Route>,
    codes: BTreeSet<String>,
}

fn readme_rows() -> Vec<ReadmeRow> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split("| method & path |")
        .nth(1)
        .expect("README has the API table");
    let mut rows = Vec::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').collect();
        let mut routes = Vec::new();
        let mut pending_methods = Vec::new();
        for code in cells[1].split('`').skip(1).step_by(2) {
            match code.split_once(' ') {
                None => pending_methods.push(code.to_owned()),
                Some((method, path)) => {
                    let path = path.split('?').next().unwrap().to_owned();
                    for m in pending_methods.drain(..).chain([method.to_owned()]) {
                        routes.push((m, path.clone()));
                    }
                }
            }
        }
        let codes = cells[cells.len() - 2]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| n.len() == 3)
            .map(str::to_owned)
            .collect();
        rows.push(ReadmeRow { routes, codes });
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_lists_the_readme_routes_and_the_server_serves_each() {
    let env = Env::new(fast_settings());
    let runtime = env
        .start(
            RuntimeConfig {
                consumers: false,
                ..env.config()
            },
            |ports| ports,
        )
        .await;
    // Public: no token.
    let served: Value = ApiClient::new(&runtime.base_url)
        .unwrap()
        .get("/openapi.json")
        .await
        .unwrap();
    assert_eq!(served, serde_json::to_value(status::openapi()).unwrap());
    assert_eq!(served["openapi"], "3.1.0");

    let documented: BTreeSet<_> = operations(status::openapi()).into_keys().collect();
    let rows = readme_rows();
    let readme: BTreeSet<_> = rows.iter().flat_map(|row| row.routes.clone()).collect();
    assert!(readme.len() >= 20, "the table parsed: {readme:?}");
    assert_eq!(
        documented.difference(&readme).collect::<Vec<_>>(),
        Vec::<&Route>::new(),
        "documented but not in the README's table"
    );
    assert_eq!(
        readme.difference(&documented).collect::<Vec<_>>(),
        Vec::<&Route>::new(),
        "in the README's table but not documented"
    );

    // The codes the table names are documented ones.
    let ops = operations(status::openapi());
    for ReadmeRow { routes, codes } in &rows {
        let documented: BTreeSet<String> = routes
            .iter()
            .filter_map(|route| ops.get(route))
            .flat_map(|op| op.responses.responses.keys().cloned())
            .collect();
        let undocumented: Vec<_> = codes.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "the README names {undocumented:?} for {routes:?}, the document does not"
        );
    }

    // Each documented route reaches a handler: the router's own answers for unknown routes
    // and methods say so in `detail`.
    let admin = runtime.api_as(Role::Admin).unwrap();
    let placeholder = "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011";
    for (method, path) in &documented {
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    if segment == "{deliveryId}" {
                        "msg_0190a0b0c0d07e0f8a0b0c0d0e0f1011"
                    } else {
                        placeholder
                    }
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let r = admin
            .send(method.parse().unwrap(), &concrete, None, &[])
            .await
            .unwrap();
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(
            r.status != StatusCode::METHOD_NOT_ALLOWED && !detail.starts_with("no route for"),
            "{method} {path} is documented but not served: {} {}",
            r.status,
            r.body
        );
    }
    runtime.shutdown().await;
}

/// Every operation that documents 503, asked of `runtime` (whose store is down) with a
/// request that reaches the store: ids of nothing, and a valid body where one is needed.
/// Administrators' routes as an administrator, the rest as a brand.
async fn ask_every_store_operation(runtime: &Runtime, brand: BrandId) -> Vec<(String, Answer)> {
    let as_brand = runtime.api_as(Role::Brand(brand)).unwrap();
    let as_admin = runtime.api_as(Role::Admin).unwrap();
    let nothing = uuid::Uuid::now_v7().to_string();
    let bodies: BTreeMap<&str, Value> = BTreeMap::from([
        ("setWriteBudget", json!({ "writesPerSec": 100_000 })),
        ("createOffer", json!({ "name": "5% off" })),
        ("renameOffer", json!({ "name": "6% off" })),
        ("createLocations", json!({ "address": "1 High Street" })),
        ("readdressLocation", json!({ "address": "2 High Street" })),
        (
            "upsertLocationByExternalId",
            json!({ "address": "3 High Street" }),
        ),
        ("createWebhook", json!({ "url": "http://127.0.0.1:9/hook" })),
        (
            "replayWebhook",
            json!({ "since": chrono::Utc::now() - chrono::Duration::hours(1) }),
        ),
        ("setOfferRule", json!({ "where": {} })),
        ("createImport", json!({ "format": "csv" })),
    ]);
    let delivery = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let mut asked = Vec::new();
    for ((method, path), op) in operations(status::openapi()) {
        if !op.responses.responses.contains_key("503") || path == "/healthz" {
            continue;
        }
        let id = op.operation_id.clone().unwrap();
        let concrete = path
            .split('/')
            .map(|s| match s {
                "{deliveryId}" => delivery.as_str(),
                s if s.starts_with('{') => nothing.as_str(),
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let caller = if path.starts_with("/admin/") {
            as_admin.clone()
        } else {
            as_brand.clone()
        };
        let body = bodies.get(id.as_str()).cloned();
        // All at once: on AWS each waits out the SDK's retries.
        asked.push(async move {
            let answer = caller
                .send(method.parse().unwrap(), &concrete, body.as_ref(), &[])
                .await
                .unwrap();
            (id, Answer::from(answer))
        });
    }
    let answers = futures::future::join_all(asked).await;
    assert!(
        answers.len() > 20,
        "every store operation: {}",
        answers.len()
    );
    answers
}

/// An answer, from the API client or from a hand-made request.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    location: Option<String>,
    retry_after: Option<u64>,
    body: Value,
}

impl From<ApiResponse> for Answer {
    fn from(r: ApiResponse) -> Self {
        Answer {
            status: r.status,
            content_type: r.content_type,
            location: r.location,
            retry_after: r.retry_after,
            body: r.body,
        }
    }
}

/// The documented `(operationId, status)` pairs, and those seen answered.
struct Reach {
    documented: BTreeMap<(String, u16), bool>,
    seen: BTreeSet<(String, u16)>,
}

impl Reach {
    fn new() -> Reach {
        let mut documented = BTreeMap::new();
        for op in operations(status::openapi()).into_values() {
            let id = op.operation_id.clone().unwrap();
            for (status, response) in &op.responses.responses {
                let has_location = match response {
                    utoipa::openapi::RefOr::T(r) => r.headers.contains_key("Location"),
                    // A shared problem response: no Location.
                    utoipa::openapi::RefOr::Ref(_) => false,
                };
                documented.insert((id.clone(), status.parse().unwrap()), has_location);
            }
        }
        Reach {
            documented,
            seen: BTreeSet::new(),
        }
    }

    /// Asserts `answer` is the documented `status` of `op` and in its documented shape.
    fn saw(&mut self, op: &str, status: u16, answer: impl Into<Answer>) -> Value {
        let answer = answer.into();
        let key = (op.to_owned(), status);
        let has_location = *self
            .documented
            .get(&key)
            .unwrap_or_else(|| panic!("{op} does not document {status}"));
        assert_eq!(answer.status.as_u16(), status, "{op}: {}", answer.body);
        if status >= 400 {
            assert_eq!(
                answer.content_type.as_deref(),
                Some("application/problem+json"),
                "{op} {status}"
            );
            assert_eq!(answer.body["status"], status, "{op}: {}", answer.body);
            assert!(
                answer.body["detail"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{op} {status}: {}",
                answer.body
            );
        }
        // The shared 429 and 503 say when to come back (a health check's 503 does not).
        if status == 429 || (status == 503 && op != "healthz") {
            assert!(
                answer.retry_after.is_some_and(|secs| secs >= 1),
                "{op} {status} carries Retry-After"
            );
        }
        if has_location && !(op == "createLocations" && answer.body.is_array()) {
            assert!(answer.location.is_some(), "{op} {status} carries Location");
        }
        self.seen.insert(key);
        answer.body
    }

    fn assert_all_seen(&self) {
        let unreached: Vec<_> = self
            .documented
            .keys()
            .filter(|k| !self.seen.contains(*k))
            .collect();
        assert!(
            unreached.is_empty(),
            "documented but never answered: {unreached:?}"
        );
    }
}

/// A request by hand: a raw body of `content_type`.
async fn raw(
    api: &ApiClient,
    token: &str,
    method: Method,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> Answer {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", api.base()))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let header = |name: reqwest::header::HeaderName| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, content_type, location) = (
        r.status(),
        header(reqwest::header::CONTENT_TYPE),
        header(reqwest::header::LOCATION),
    );
    let retry_after = header(reqwest::header::RETRY_AFTER).and_then(|s| s.parse().ok());
    Answer {
        status,
        content_type,
        location,
        retry_after,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

/// The codes every job-creating route shares: 400 (a bad id), 404 (an unknown one), 413
/// and 415 (the body).
#[allow(clippy::too_many_arguments)]
async fn creation_codes(
    reach: &mut Reach,
    op: &str,
    api: &ApiClient,
    token: &str,
    path: &str,
    bad_id: &str,
    unknown_id: &str,
    big: &[u8],
) {
    let bad = api.send(Method::POST, bad_id, None, &[]).await.unwrap();
    reach.saw(op, 400, bad);
    let unknown = api.send(Method::POST, unknown_id, None, &[]).await.unwrap();
    reach.saw(op, 404, unknown);
    let json = "application/json";
    reach.saw(
        op,
        413,
        raw(api, token, Method::POST, path, json, big.to_vec()).await,
    );
    let text = b"{}".to_vec();
    reach.saw(
        op,
        415,
        raw(api, token, Method::POST, path, "text/plain", text).await,
    );
}

/// A job of `brand` on `offer` that ended COMPLETED_WITH_ERRORS with one failure, written
/// through the job store's own steps.
async fn finished_with_a_failure(
    ports: &bulklink_core::ports::Ports,
    brand: BrandId,
    offer: OfferId,
) -> bulklink_core::domain::JobId {
    use bulklink_core::domain::{ChunkSeq, ChunkTally, Counter, Job};
    use bulklink_core::ports::{Completion, CreateOutcome, Failure, FanoutAdvance};
    let job = Job::new(brand, offer, None, chrono::Utc::now());
    let CreateOutcome::Created(job) = ports.jobs.create_job(&job, None).await.unwrap() else {
        panic!("job not created");
    };
    ports.jobs.start_job(job.id).await.unwrap();
    let step = FanoutAdvance {
        prev_cursor: None,
        next_cursor: None,
        done: true,
        chunks_added: 1,
        ids_added: 1,
    };
    ports.jobs.advance_fanout(job.id, &step).await.unwrap();
    let mut tally = ChunkTally::default();
    tally.fail(
        Counter::Failed,
        Failure::of_location(LocationId::new_random(), "refused".into(), 3),
    );
    ports
        .ledger
        .record_chunk(job.id, Some(offer), ChunkSeq(0), &tally, 0)
        .await
        .unwrap();
    let Completion::Won(done) = ports.jobs.try_complete(job.id).await.unwrap() else {
        panic!("job not completed");
    };
    done.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_status_code_is_answered_to_a_real_request() {
    let mut reach = Reach::new();
    let big = vec![b' '; bulklink_http::http::MAX_BODY_BYTES + 1];

    // --- a server whose jobs never start: active jobs stay active -----------------------
    let idle_env = Env::new(fast_settings());
    let idle_seed = idle_env.seed(5).await;
    let idle = idle_env
        .start(
            RuntimeConfig {
                consumers: false,
                ..idle_env.config()
            },
            |ports| ports,
        )
        .await;
    let brand = idle_seed.brand_id;
    let api = idle.api_as(Role::Brand(brand)).unwrap();
    let token = idle.token_for("brand", Role::Brand(brand)).unwrap();
    let link_all = format!("/offers/{}/link-all-locations", idle_seed.offer_id);
    let key = [("idempotency-key", "k-1")];
    let job = reach.saw(
        "createLinkAllJob",
        202,
        api.send(Method::POST, &link_all, None, &key).await.unwrap(),
    );
    let job_id = job["id"].as_str().unwrap().to_owned();
    reach.saw(
        "getJobReport",
        409,
        api.send(Method::GET, &format!("/jobs/{job_id}/report"), None, &[])
            .await
            .unwrap(),
    );

    // Jobs awaiting approval: approved by another caller of the brand, or rejected.
    let held_seed = idle_env.seed(3).await;
    let held_brand = Role::Brand(held_seed.brand_id);
    let holder = idle.api_as(held_brand.clone()).unwrap();
    let approver = ApiClient::new(&idle.base_url)
        .unwrap()
        .with_token(idle.token_for("approver", held_brand).unwrap());
    let awaiting = |offer: OfferId| {
        let holder = holder.clone();
        async move {
            let created = holder
                .send(
                    Method::POST,
                    &format!("/offers/{offer}/link-all-locations"),
                    Some(&json!({ "requireApproval": true })),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(created.status, 202, "{}", created.body);
            created.body["id"].as_str().unwrap().to_owned()
        }
    };
    let first = awaiting(held_seed.offer_id).await;
    let path = |job: &str, verb: &str| format!("/jobs/{job}/{verb}");
    let post = |client: &ApiClient, path: String| {
        let client = client.clone();
        async move { client.send(Method::POST, &path, None, &[]).await.unwrap() }
    };
    reach.saw(
        "approveJob",
        403,
        post(&holder, path(&first, "approve")).await,
    );
    reach.saw(
        "approveJob",
        202,
        post(&approver, path(&first, "approve")).await,
    );
    reach.saw(
        "approveJob",
        409,
        post(&approver, path(&first, "approve")).await,
    );
    reach.saw(
        "rejectJob",
        409,
        post(&holder, path(&first, "reject")).await,
    );
    reach.saw(
        "approveJob",
        400,
        post(&approver, path("nope", "approve")).await,
    );
    let unknown_job = JobId::new_v7().to_string();
    reach.saw(
        "approveJob",
        404,
        post(&approver, path(&unknown_job, "approve")).await,
    );
    let second_offer: Value = holder
        .post("/offers", &json!({ "name": "held too" }))
        .await
        .unwrap();
    let second = awaiting(second_offer["id"].as_str().unwrap().parse().unwrap()).await;
    reach.saw(
        "rejectJob",
        202,
        post(&holder, path(&second, "reject")).await,
    );
    reach.saw(
        "rejectJob",
        400,
        post(&holder, path("nope", "reject")).await,
    );
    reach.saw(
        "rejectJob",
        404,
        post(&holder, path(&unknown_job, "reject")).await,
    );
    reach.saw(
        "createLinkAllJob",
        200,
        api.send(Method::POST, &format!("{link_all}?dryRun=true"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "createLinkAllJob",
        409,
        api.send(Method::POST, &link_all, None, &[]).await.unwrap(),
    );
    reach.saw(
        "setOfferRule",
        409,
        api.send(
            Method::PUT,
            &format!("/offers/{}/rule", idle_seed.offer_id),
            Some(&json!({ "where": {} })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createLinkAllJob",
        422,
        api.send(
            Method::POST,
            &link_all,
            Some(&json!({ "callbackUrl": "https://a.example/x" })),
            &key,
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createLinkAllJob",
        400,
        api.send(Method::POST, "/offers/nope/link-all-locations", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "createLinkAllJob",
        404,
        api.send(
            Method::POST,
            &format!("/offers/{}/link-all-locations", OfferId::new_random()),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createLinkAllJob",
        413,
        raw(
            &api,
            &token,
            Method::POST,
            &link_all,
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "createLinkAllJob",
        415,
        raw(
            &api,
            &token,
            Method::POST,
            &link_all,
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );
    for (op, action) in [("pauseJob", "pause"), ("resumeJob", "resume")] {
        reach.saw(
            op,
            202,
            api.send(Method::POST, &format!("/jobs/{job_id}/{action}"), None, &[])
                .await
                .unwrap(),
        );
        reach.saw(
            op,
            400,
            api.send(Method::POST, &format!("/jobs/nope/{action}"), None, &[])
                .await
                .unwrap(),
        );
        reach.saw(
            op,
            404,
            api.send(
                Method::POST,
                &format!("/jobs/{}/{action}", uuid::Uuid::new_v4()),
                None,
                &[],
            )
            .await
            .unwrap(),
        );
    }
    reach.saw(
        "cancelJob",
        202,
        api.send(Method::POST, &format!("/jobs/{job_id}/cancel"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "cancelJob",
        400,
        api.send(Method::POST, "/jobs/nope/cancel", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "cancelJob",
        404,
        api.send(
            Method::POST,
            &format!("/jobs/{}/cancel", uuid::Uuid::new_v4()),
            None,
            &[],
        )
        .await
        .unwrap(),
    );

    // An offer with an active job is not deleted.
    reach.saw(
        "deleteOffer",
        409,
        api.send(
            Method::DELETE,
            &format!("/offers/{}", idle_seed.offer_id),
            None,
            &[],
        )
        .await
        .unwrap(),
    );

    // Unlink-all on an offer of its own; 409 on the offer whose link-all is active.
    let spare: Value = api
        .post("/offers", &json!({ "name": "spare" }))
        .await
        .unwrap();
    let unlink_all = format!(
        "/offers/{}/unlink-all-locations",
        spare["id"].as_str().unwrap()
    );
    let key = [("idempotency-key", "k-unlink")];
    creation_codes(
        &mut reach,
        "createUnlinkAllJob",
        &api,
        &token,
        &unlink_all,
        "/offers/nope/unlink-all-locations",
        &format!("/offers/{}/unlink-all-locations", OfferId::new_random()),
        &big,
    )
    .await;
    reach.saw(
        "createUnlinkAllJob",
        200,
        api.send(
            Method::POST,
            &format!("{unlink_all}?dryRun=true"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createUnlinkAllJob",
        202,
        api.send(Method::POST, &unlink_all, None, &key)
            .await
            .unwrap(),
    );
    reach.saw(
        "createUnlinkAllJob",
        422,
        api.send(
            Method::POST,
            &unlink_all,
            Some(&json!({ "callbackUrl": "https://a.example/x" })),
            &key,
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createUnlinkAllJob",
        409,
        api.send(
            Method::POST,
            &format!("/offers/{}/unlink-all-locations", idle_seed.offer_id),
            None,
            &[],
        )
        .await
        .unwrap(),
    );

    // Retry-failures of a job that ended with a failure (ledgered by hand: no consumers here).
    let retried: Value = api
        .post("/offers", &json!({ "name": "retried" }))
        .await
        .unwrap();
    let failed = finished_with_a_failure(
        &idle.ports,
        brand,
        retried["id"].as_str().unwrap().parse().unwrap(),
    )
    .await;
    let retry = format!("/jobs/{failed}/retry-failures");
    let key = [("idempotency-key", "k-retry")];
    creation_codes(
        &mut reach,
        "retryJobFailures",
        &api,
        &token,
        &retry,
        "/jobs/nope/retry-failures",
        &format!("/jobs/{}/retry-failures", uuid::Uuid::new_v4()),
        &big,
    )
    .await;
    reach.saw(
        "retryJobFailures",
        200,
        api.send(Method::POST, &format!("{retry}?dryRun=true"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "retryJobFailures",
        202,
        api.send(Method::POST, &retry, None, &key).await.unwrap(),
    );
    reach.saw(
        "retryJobFailures",
        422,
        api.send(
            Method::POST,
            &retry,
            Some(&json!({ "callbackUrl": "https://a.example/x" })),
            &key,
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "retryJobFailures",
        409,
        api.send(Method::POST, &retry, None, &[]).await.unwrap(),
    );

    // The database file gone: /healthz says so (last on this server).
    reach.saw(
        "healthz",
        200,
        api.send(Method::GET, "/healthz", None, &[]).await.unwrap(),
    );
    std::fs::remove_file(idle_env.db()).unwrap();
    reach.saw(
        "healthz",
        503,
        api.send(Method::GET, "/healthz", None, &[]).await.unwrap(),
    );
    idle.shutdown().await;

    // --- a running server, with a brand, another brand and an administrator --------------
    let env = Env::new(fast_settings());
    let seeded = env.seed(10).await;
    let other = env.seed(3).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let brand = seeded.brand_id;
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    let admin = runtime.api_as(Role::Admin).unwrap();
    let token = runtime.token_for("brand", Role::Brand(brand)).unwrap();
    let anonymous = ApiClient::new(&runtime.base_url).unwrap();
    let theirs = other.brand_id;
    let unknown = "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011";

    // Webhooks first, so the job below is delivered: one receiver that takes it, one that
    // answers 410 (its subscription is disabled).
    let mut taker = Receiver::start().await.unwrap();
    let mut gone = Receiver::start_with(Arc::new(|_| 410)).await.unwrap();
    let sub = reach.saw(
        "createWebhook",
        201,
        api.send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": taker.url, "filter": outcomes() })),
            &[],
        )
        .await
        .unwrap(),
    );
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let gone_sub = reach.saw(
        "createWebhook",
        201,
        api.send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": gone.url, "filter": outcomes() })),
            &[],
        )
        .await
        .unwrap(),
    );
    let gone_id = gone_sub["id"].as_str().unwrap().to_owned();
    reach.saw(
        "createWebhook",
        400,
        api.send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": "not a url" })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createWebhook",
        403,
        api.send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": taker.url, "filter": { "brandId": theirs } })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createWebhook",
        422,
        api.send(
            Method::POST,
            "/webhooks",
            Some(&json!({ "url": taker.url, "filter": { "jobId": uuid::Uuid::new_v4() } })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createWebhook",
        413,
        raw(
            &api,
            &token,
            Method::POST,
            "/webhooks",
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "createWebhook",
        415,
        raw(
            &api,
            &token,
            Method::POST,
            "/webhooks",
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );

    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = api
        .wait_terminal(
            job.id,
            Duration::from_millis(20),
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), taker.next())
        .await
        .expect("a delivery")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), gone.next())
        .await
        .expect("a delivery")
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the 410 subscription to be disabled",
        || async {
            let read: Value = api.get(&format!("/webhooks/{gone_id}")).await.unwrap();
            read["status"] == "disabled"
        },
    )
    .await;

    // Jobs.
    let j = job.id;
    reach.saw(
        "getJob",
        200,
        api.send(Method::GET, &format!("/jobs/{j}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getJob",
        400,
        api.send(Method::GET, "/jobs/nope", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getJob",
        404,
        api.send(Method::GET, &format!("/jobs/{unknown}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listJobs",
        200,
        api.send(Method::GET, "/jobs", None, &[]).await.unwrap(),
    );
    reach.saw(
        "listJobs",
        400,
        api.send(Method::GET, "/jobs?limit=0", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listJobs",
        403,
        api.send(Method::GET, &format!("/jobs?brandId={theirs}"), None, &[])
            .await
            .unwrap(),
    );
    let report = reach.saw(
        "getJobReport",
        200,
        api.send(Method::GET, &format!("/jobs/{j}/report"), None, &[])
            .await
            .unwrap(),
    );
    assert!(
        report
            .as_str()
            .is_some_and(|csv| csv.starts_with("locationId,externalId,outcome,error,at\n")),
        "{report}"
    );
    reach.saw(
        "getJobReport",
        400,
        api.send(Method::GET, &format!("/jobs/{j}/report?limit=0"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getJobReport",
        404,
        api.send(Method::GET, &format!("/jobs/{unknown}/report"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listJobFailures",
        200,
        api.send(Method::GET, &format!("/jobs/{j}/failures"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listJobFailures",
        400,
        api.send(
            Method::GET,
            &format!("/jobs/{j}/failures?cursor="),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listJobFailures",
        404,
        api.send(Method::GET, &format!("/jobs/{unknown}/failures"), None, &[])
            .await
            .unwrap(),
    );
    let log = reach.saw(
        "listJobDeliveries",
        200,
        api.send(Method::GET, &format!("/jobs/{j}/deliveries"), None, &[])
            .await
            .unwrap(),
    );
    assert_eq!(log["items"].as_array().unwrap().len(), 2, "{log}");
    reach.saw(
        "listJobDeliveries",
        400,
        api.send(
            Method::GET,
            &format!("/jobs/{j}/deliveries?limit=x"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listJobDeliveries",
        404,
        api.send(
            Method::GET,
            &format!("/jobs/{unknown}/deliveries"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    for (op, action) in [
        ("cancelJob", "cancel"),
        ("pauseJob", "pause"),
        ("resumeJob", "resume"),
    ] {
        reach.saw(
            op,
            409,
            api.send(Method::POST, &format!("/jobs/{j}/{action}"), None, &[])
                .await
                .unwrap(),
        );
    }
    let undo = format!("/jobs/{j}/undo");
    creation_codes(
        &mut reach,
        "undoJob",
        &api,
        &token,
        &undo,
        "/jobs/nope/undo",
        &format!("/jobs/{unknown}/undo"),
        &big,
    )
    .await;
    let key = [("idempotency-key", "k-undo")];
    reach.saw(
        "undoJob",
        200,
        api.send(Method::POST, &format!("{undo}?dryRun=true"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "undoJob",
        202,
        api.send(Method::POST, &undo, None, &key).await.unwrap(),
    );
    reach.saw(
        "undoJob",
        422,
        api.send(
            Method::POST,
            &undo,
            Some(&json!({ "callbackUrl": "https://a.example/x" })),
            &key,
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "undoJob",
        409,
        api.send(Method::POST, &undo, None, &[]).await.unwrap(),
    );

    // Offers and locations.
    let offer = reach.saw(
        "createOffer",
        201,
        api.send(
            Method::POST,
            "/offers",
            Some(&json!({ "name": "autumn" })),
            &[],
        )
        .await
        .unwrap(),
    );
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    reach.saw(
        "createOffer",
        409,
        api.send(
            Method::POST,
            "/offers",
            Some(&json!({ "id": offer_id, "name": "again" })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createOffer",
        400,
        api.send(Method::POST, "/offers", Some(&json!({ "name": "" })), &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "createOffer",
        403,
        api.send(
            Method::POST,
            "/offers",
            Some(&json!({ "name": "x", "brandId": theirs })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createOffer",
        413,
        raw(
            &api,
            &token,
            Method::POST,
            "/offers",
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "createOffer",
        415,
        raw(
            &api,
            &token,
            Method::POST,
            "/offers",
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );
    reach.saw(
        "getOffer",
        200,
        api.send(Method::GET, &format!("/offers/{offer_id}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getOffer",
        400,
        api.send(Method::GET, "/offers/nope", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getOffer",
        404,
        api.send(
            Method::GET,
            &format!("/offers/{}", other.offer_id),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listOfferLinks",
        200,
        api.send(
            Method::GET,
            &format!("/offers/{}/locations", seeded.offer_id),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listOfferLinks",
        400,
        api.send(
            Method::GET,
            &format!("/offers/{offer_id}/locations?limit=1001"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listOfferLinks",
        404,
        api.send(
            Method::GET,
            &format!("/offers/{unknown}/locations"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );

    let location = reach.saw(
        "createLocations",
        201,
        api.send(
            Method::POST,
            "/locations",
            Some(&json!({ "address": "1 Main St" })),
            &[],
        )
        .await
        .unwrap(),
    );
    let location_id = location["id"].as_str().unwrap().to_owned();
    let batch = reach.saw(
        "createLocations",
        201,
        api.send(
            Method::POST,
            "/locations",
            Some(&json!([{ "address": "2 Main St" }, { "address": "3 Main St" }])),
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(batch.as_array().unwrap().len(), 2);
    reach.saw(
        "createLocations",
        409,
        api.send(
            Method::POST,
            "/locations",
            Some(&json!({ "id": location_id, "address": "elsewhere" })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createLocations",
        400,
        api.send(Method::POST, "/locations", Some(&json!([])), &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "createLocations",
        403,
        api.send(
            Method::POST,
            "/locations",
            Some(&json!({ "address": "x", "brandId": theirs })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "createLocations",
        413,
        raw(
            &api,
            &token,
            Method::POST,
            "/locations",
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "createLocations",
        415,
        raw(
            &api,
            &token,
            Method::POST,
            "/locations",
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );
    reach.saw(
        "getLocation",
        200,
        api.send(Method::GET, &format!("/locations/{location_id}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getLocation",
        400,
        api.send(Method::GET, "/locations/nope", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getLocation",
        404,
        api.send(
            Method::GET,
            &format!("/locations/{}", LocationId::new_random()),
            None,
            &[],
        )
        .await
        .unwrap(),
    );

    let link = format!("/offers/{offer_id}/locations/{location_id}");
    reach.saw(
        "linkLocation",
        201,
        api.send(Method::PUT, &link, None, &[]).await.unwrap(),
    );
    reach.saw(
        "linkLocation",
        200,
        api.send(Method::PUT, &link, None, &[]).await.unwrap(),
    );
    reach.saw(
        "linkLocation",
        400,
        api.send(
            Method::PUT,
            &format!("/offers/nope/locations/{location_id}"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "linkLocation",
        404,
        api.send(
            Method::PUT,
            &format!("/offers/{offer_id}/locations/{unknown}"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    let their_location = their_first_location(&admin, theirs).await;
    reach.saw(
        "linkLocation",
        409,
        admin
            .send(
                Method::PUT,
                &format!("/offers/{offer_id}/locations/{their_location}"),
                None,
                &[],
            )
            .await
            .unwrap(),
    );

    // A standing rule: set (its reconcile job starts), read, its drift, removed.
    let ruled: Value = api
        .post("/offers", &json!({ "name": "ruled" }))
        .await
        .unwrap();
    let rule = format!("/offers/{}/rule", ruled["id"].as_str().unwrap());
    let drift = format!("/offers/{}/drift", ruled["id"].as_str().unwrap());
    let unknown_offer = OfferId::new_random();
    let everywhere = json!({ "where": {} });
    for (op, method, path, body, status) in [
        ("getOfferRule", Method::GET, rule.clone(), None, 404),
        ("getOfferDrift", Method::GET, drift.clone(), None, 404),
        ("deleteOfferRule", Method::DELETE, rule.clone(), None, 404),
        (
            "setOfferRule",
            Method::PUT,
            rule.clone(),
            Some(&everywhere),
            200,
        ),
        ("getOfferRule", Method::GET, rule.clone(), None, 200),
        ("getOfferDrift", Method::GET, drift.clone(), None, 200),
        ("deleteOfferRule", Method::DELETE, rule.clone(), None, 204),
        (
            "setOfferRule",
            Method::PUT,
            rule.clone(),
            Some(&json!({ "where": { "town": [] } })),
            400,
        ),
        (
            "setOfferRule",
            Method::PUT,
            format!("/offers/{unknown_offer}/rule"),
            Some(&everywhere),
            404,
        ),
        (
            "getOfferRule",
            Method::GET,
            "/offers/nope/rule".into(),
            None,
            400,
        ),
        (
            "getOfferDrift",
            Method::GET,
            "/offers/nope/drift".into(),
            None,
            400,
        ),
        (
            "deleteOfferRule",
            Method::DELETE,
            "/offers/nope/rule".into(),
            None,
            400,
        ),
    ] {
        reach.saw(
            op,
            status,
            api.send(method, &path, body, &[]).await.unwrap(),
        );
    }
    reach.saw(
        "setOfferRule",
        413,
        raw(
            &api,
            &token,
            Method::PUT,
            &rule,
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "setOfferRule",
        415,
        raw(
            &api,
            &token,
            Method::PUT,
            &rule,
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );

    // Webhooks.
    reach.saw(
        "listWebhookEventTypes",
        200,
        api.send(Method::GET, "/webhooks/event-types", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listWebhooks",
        200,
        api.send(Method::GET, "/webhooks", None, &[]).await.unwrap(),
    );
    reach.saw(
        "listWebhooks",
        400,
        api.send(Method::GET, "/webhooks?brandId=nope", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listWebhooks",
        403,
        api.send(
            Method::GET,
            &format!("/webhooks?brandId={theirs}"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "getWebhook",
        200,
        api.send(Method::GET, &format!("/webhooks/{sub_id}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getWebhook",
        400,
        api.send(Method::GET, "/webhooks/nope", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getWebhook",
        404,
        api.send(Method::GET, &format!("/webhooks/{unknown}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "rotateWebhookSecret",
        200,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/rotate-secret"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "rotateWebhookSecret",
        400,
        api.send(Method::POST, "/webhooks/nope/rotate-secret", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "rotateWebhookSecret",
        404,
        api.send(
            Method::POST,
            &format!("/webhooks/{unknown}/rotate-secret"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    let taken = reach.saw(
        "listWebhookDeliveries",
        200,
        api.send(
            Method::GET,
            &format!("/webhooks/{sub_id}/deliveries"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listWebhookDeliveries",
        400,
        api.send(
            Method::GET,
            &format!("/webhooks/{sub_id}/deliveries?cursor=%25"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "listWebhookDeliveries",
        404,
        api.send(
            Method::GET,
            &format!("/webhooks/{unknown}/deliveries"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    let delivery = taken["items"][0]["id"].as_str().unwrap().to_owned();
    let refused: Value = api
        .get(&format!("/webhooks/{gone_id}/deliveries"))
        .await
        .unwrap();
    let refused = refused["items"][0]["id"].as_str().unwrap().to_owned();
    reach.saw(
        "redeliver",
        202,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/deliveries/{delivery}/redeliver"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "redeliver",
        409,
        api.send(
            Method::POST,
            &format!("/webhooks/{gone_id}/deliveries/{refused}/redeliver"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "redeliver",
        400,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/deliveries/nope/redeliver"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    let test_send = reach.saw(
        "sendWebhookTest",
        202,
        api.send(Method::POST, &format!("/webhooks/{sub_id}/test"), None, &[])
            .await
            .unwrap(),
    );
    assert_eq!(test_send["eventType"], "webhook.test", "{test_send}");
    assert!(test_send.get("jobId").is_none(), "{test_send}");
    reach.saw(
        "sendWebhookTest",
        409,
        api.send(
            Method::POST,
            &format!("/webhooks/{gone_id}/test"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "sendWebhookTest",
        400,
        api.send(Method::POST, "/webhooks/nope/test", None, &[])
            .await
            .unwrap(),
    );
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let dry = reach.saw(
        "replayWebhook",
        200,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/replay?dryRun=true"),
            Some(&json!({ "since": hour_ago })),
            &[],
        )
        .await
        .unwrap(),
    );
    assert!(dry["events"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(dry["dryRun"], true);
    let replayed = reach.saw(
        "replayWebhook",
        202,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/replay"),
            Some(&json!({ "since": hour_ago })),
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(replayed["events"], dry["events"], "{replayed}");
    reach.saw(
        "replayWebhook",
        400,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/replay"),
            Some(&json!({ "since": "yesterday" })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "replayWebhook",
        404,
        api.send(
            Method::POST,
            &format!("/webhooks/{unknown}/replay"),
            Some(&json!({ "since": hour_ago })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "replayWebhook",
        409,
        api.send(
            Method::POST,
            &format!("/webhooks/{gone_id}/replay"),
            Some(&json!({ "since": hour_ago })),
            &[],
        )
        .await
        .unwrap(),
    );
    let too_old = reach.saw(
        "replayWebhook",
        422,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/replay"),
            Some(
                &json!({ "since": (chrono::Utc::now() - chrono::Duration::days(31)).to_rfc3339() }),
            ),
            &[],
        )
        .await
        .unwrap(),
    );
    assert!(
        too_old["detail"].as_str().unwrap().contains("30 days"),
        "{too_old}"
    );
    reach.saw(
        "replayWebhook",
        413,
        raw(
            &api,
            &token,
            Method::POST,
            &format!("/webhooks/{sub_id}/replay"),
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "replayWebhook",
        415,
        raw(
            &api,
            &token,
            Method::POST,
            &format!("/webhooks/{sub_id}/replay"),
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );
    reach.saw(
        "sendWebhookTest",
        404,
        api.send(
            Method::POST,
            &format!("/webhooks/{unknown}/test"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    // The subscription the 410 disabled, enabled again.
    let enabled = reach.saw(
        "enableWebhook",
        200,
        api.send(
            Method::POST,
            &format!("/webhooks/{gone_id}/enable"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(enabled["status"], "active", "{enabled}");
    reach.saw(
        "enableWebhook",
        400,
        api.send(Method::POST, "/webhooks/nope/enable", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "enableWebhook",
        404,
        api.send(
            Method::POST,
            &format!("/webhooks/{unknown}/enable"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "redeliver",
        404,
        api.send(
            Method::POST,
            &format!("/webhooks/{sub_id}/deliveries/{refused}/redeliver"),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "deleteWebhook",
        204,
        api.send(Method::DELETE, &format!("/webhooks/{sub_id}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "deleteWebhook",
        404,
        api.send(Method::DELETE, &format!("/webhooks/{sub_id}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "deleteWebhook",
        400,
        api.send(Method::DELETE, "/webhooks/nope", None, &[])
            .await
            .unwrap(),
    );

    // Catalog changes: the offer above carries a location now, a fresh one does not.
    let path = format!("/offers/{offer_id}");
    let rename = json!({ "name": "winter" });
    let fresh: Value = api
        .post("/offers", &json!({ "name": "brief" }))
        .await
        .unwrap();
    let fresh = format!("/offers/{}", fresh["id"].as_str().unwrap());
    let bad_offer = "/offers/nope";
    let unknown_offer = format!("/offers/{unknown}");
    for (op, method, body, ok) in [
        ("renameOffer", Method::PATCH, Some(&rename), 200),
        ("deleteOffer", Method::DELETE, None, 204),
    ] {
        reach.saw(
            op,
            400,
            api.send(method.clone(), bad_offer, body, &[])
                .await
                .unwrap(),
        );
        reach.saw(
            op,
            404,
            api.send(method.clone(), &unknown_offer, body, &[])
                .await
                .unwrap(),
        );
        let target = if ok == 204 { &fresh } else { &path };
        reach.saw(op, ok, api.send(method, target, body, &[]).await.unwrap());
    }
    // An offer whose end's unlink-all is made: its end no longer moves.
    let ending: Value = api
        .post(
            "/offers",
            &json!({ "name": "ending", "endsAt": chrono::Utc::now() + chrono::Duration::hours(1) }),
        )
        .await
        .unwrap();
    assert!(ending["schedule"]["endJobId"].is_string(), "{ending}");
    reach.saw(
        "renameOffer",
        409,
        api.send(
            Method::PATCH,
            &format!("/offers/{}", ending["id"].as_str().unwrap()),
            Some(&json!({ "endsAt": chrono::Utc::now() + chrono::Duration::hours(2) })),
            &[],
        )
        .await
        .unwrap(),
    );
    let here = format!("/locations/{location_id}");
    let readdress = json!({ "address": "3 Elm St" });
    let bad_location = "/locations/nope";
    let unknown_location = format!("/locations/{unknown}");
    for (op, method, body, ok) in [
        ("readdressLocation", Method::PATCH, Some(&readdress), 200),
        ("deleteLocation", Method::DELETE, None, 204),
    ] {
        reach.saw(
            op,
            400,
            api.send(method.clone(), bad_location, body, &[])
                .await
                .unwrap(),
        );
        reach.saw(
            op,
            404,
            api.send(method.clone(), &unknown_location, body, &[])
                .await
                .unwrap(),
        );
        reach.saw(op, ok, api.send(method, &here, body, &[]).await.unwrap());
    }
    // A brand's offers; refused for a bad limit or another brand.
    let offers = reach.saw(
        "listOffers",
        200,
        api.send(Method::GET, "/offers?limit=10", None, &[])
            .await
            .unwrap(),
    );
    assert!(!offers["items"].as_array().unwrap().is_empty(), "{offers}");
    reach.saw(
        "listOffers",
        400,
        api.send(Method::GET, "/offers?limit=0", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listOffers",
        403,
        api.send(
            Method::GET,
            &format!("/offers?brandId={}", BrandId::new_random()),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    // A brand's locations, whole and narrowed; refused for a bad country or another brand.
    let listed = reach.saw(
        "listLocations",
        200,
        api.send(Method::GET, "/locations?city=Leeds&limit=1000", None, &[])
            .await
            .unwrap(),
    );
    assert!(listed["items"].is_array(), "{listed}");
    reach.saw(
        "listLocations",
        400,
        api.send(Method::GET, "/locations?country=UK", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "listLocations",
        403,
        api.send(
            Method::GET,
            &format!("/locations?brandId={}", BrandId::new_random()),
            None,
            &[],
        )
        .await
        .unwrap(),
    );

    // Upserts by external id: created, then the same again, then refused.
    let by_external = "/locations/by-external-id/store-1";
    let store = json!({ "address": "4 Elm St", "city": "Leeds" });
    for ok in [201, 200] {
        reach.saw(
            "upsertLocationByExternalId",
            ok,
            api.send(Method::PUT, by_external, Some(&store), &[])
                .await
                .unwrap(),
        );
    }
    reach.saw(
        "upsertLocationByExternalId",
        400,
        api.send(
            Method::PUT,
            by_external,
            Some(&json!({ "address": "" })),
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "upsertLocationByExternalId",
        403,
        api.send(
            Method::PUT,
            &format!("{by_external}?brandId={}", BrandId::new_random()),
            Some(&store),
            &[],
        )
        .await
        .unwrap(),
    );
    let by_external_path = by_external.to_owned();
    for (op, method, path) in [
        ("renameOffer", Method::PATCH, &path),
        ("readdressLocation", Method::PATCH, &unknown_location),
        ("upsertLocationByExternalId", Method::PUT, &by_external_path),
    ] {
        reach.saw(
            op,
            413,
            raw(
                &api,
                &token,
                method.clone(),
                path,
                "application/json",
                big.clone(),
            )
            .await,
        );
        reach.saw(
            op,
            415,
            raw(&api, &token, method, path, "text/plain", b"{}".to_vec()).await,
        );
    }

    // Imports: made, refused, read; their file uploaded once, refused, and too late.
    let import = |body: Value| {
        let api = api.clone();
        async move {
            api.send(Method::POST, "/imports", Some(&body), &[])
                .await
                .unwrap()
        }
    };
    let made = reach.saw(
        "createImport",
        201,
        import(json!({ "format": "csv" })).await,
    );
    reach.saw(
        "createImport",
        400,
        import(json!({ "format": "xlsx" })).await,
    );
    reach.saw(
        "createImport",
        403,
        import(json!({ "format": "csv", "brandId": BrandId::new_random() })).await,
    );
    reach.saw(
        "createImport",
        413,
        raw(
            &api,
            &token,
            Method::POST,
            "/imports",
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "createImport",
        415,
        raw(
            &api,
            &token,
            Method::POST,
            "/imports",
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );
    let import_id = made["id"].as_str().unwrap().to_owned();
    let upload_url = made["uploadUrl"].as_str().unwrap().to_owned();
    let upload = |url: String, body: &'static [u8]| async move {
        let r = reqwest::Client::new()
            .put(url)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, location) = (
            r.status(),
            r.headers()
                .get(reqwest::header::LOCATION)
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        let content_type = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        Answer {
            status,
            content_type,
            location,
            retry_after: None,
            body: r.json().await.unwrap_or(Value::Null),
        }
    };
    let base = api.base().to_owned();
    reach.saw(
        "getImport",
        200,
        api.send(Method::GET, &format!("/imports/{import_id}"), None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getImport",
        400,
        api.send(Method::GET, "/imports/nope", None, &[])
            .await
            .unwrap(),
    );
    reach.saw(
        "getImport",
        404,
        api.send(
            Method::GET,
            &format!("/imports/{}", JobId::new_v7()),
            None,
            &[],
        )
        .await
        .unwrap(),
    );
    reach.saw(
        "uploadImportFile",
        400,
        upload(format!("{base}/imports/nope/file?token=x"), b"").await,
    );
    reach.saw(
        "uploadImportFile",
        404,
        upload(
            format!("{base}/imports/{}/file?token=x", JobId::new_v7()),
            b"",
        )
        .await,
    );
    reach.saw(
        "uploadImportFile",
        403,
        upload(format!("{base}/imports/{import_id}/file?token=not-it"), b"").await,
    );
    reach.saw(
        "uploadImportFile",
        422,
        upload(upload_url.clone(), b"hello,world\n").await,
    );
    reach.saw(
        "uploadImportFile",
        202,
        upload(upload_url.clone(), b"externalId,address\ni-1,1 Import St\n").await,
    );
    reach.saw(
        "uploadImportFile",
        409,
        upload(upload_url.clone(), b"externalId,address\n").await,
    );
    // A deployment that takes 64 bytes at most, whose clock a test moves.
    let tight_env = Env::new(Settings {
        max_import_bytes: 64,
        ..fast_settings()
    });
    let clock = bulklink_core::Clock::manual(tight_env.ports().clock.now());
    let tight = tight_env
        .start(
            RuntimeConfig {
                consumers: false,
                clock: clock.clone(),
                ..tight_env.config()
            },
            |ports| ports,
        )
        .await;
    let tight_api = tight.api_as(Role::Brand(BrandId::new_random())).unwrap();
    let new_url = || async {
        let made: Value = tight_api
            .post("/imports", &json!({ "format": "csv" }))
            .await
            .unwrap();
        made["uploadUrl"].as_str().unwrap().to_owned()
    };
    let url = new_url().await;
    reach.saw("uploadImportFile", 413, upload(url, &[b'x'; 65]).await);
    let url = new_url().await;
    clock.advance(chrono::Duration::minutes(15));
    reach.saw(
        "uploadImportFile",
        410,
        upload(url, b"externalId,address\n").await,
    );
    tight.shutdown().await;

    reach.saw(
        "openapi",
        200,
        anonymous
            .send(Method::GET, "/openapi.json", None, &[])
            .await
            .unwrap(),
    );

    // The write budget: administrators only.
    let budget = "/admin/write-budget";
    let admin_token = runtime.token_for("admin", Role::Admin).unwrap();
    let set = |writes: f64| json!({ "writesPerSec": writes });
    reach.saw(
        "getWriteBudget",
        200,
        admin.send(Method::GET, budget, None, &[]).await.unwrap(),
    );
    reach.saw(
        "getWriteBudget",
        403,
        api.send(Method::GET, budget, None, &[]).await.unwrap(),
    );
    for (caller, writes, code) in [
        (&admin, 5_000.0, 200),
        (&admin, -1.0, 400),
        (&admin, 1.0, 422),
        (&api, 5_000.0, 403),
        (&admin, 0.0, 200),
    ] {
        reach.saw(
            "setWriteBudget",
            code,
            caller
                .send(Method::PUT, budget, Some(&set(writes)), &[])
                .await
                .unwrap(),
        );
    }
    reach.saw(
        "setWriteBudget",
        413,
        raw(
            &admin,
            &admin_token,
            Method::PUT,
            budget,
            "application/json",
            big.clone(),
        )
        .await,
    );
    reach.saw(
        "setWriteBudget",
        415,
        raw(
            &admin,
            &admin_token,
            Method::PUT,
            budget,
            "text/plain",
            b"{}".to_vec(),
        )
        .await,
    );

    // No token: 401 on every route but the public ones.
    for ((method, path), op) in operations(status::openapi()) {
        let public = op
            .security
            .as_ref()
            .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
        let id = op.operation_id.clone().unwrap();
        if public {
            continue;
        }
        let concrete = path.replace("{deliveryId}", "msg_0190a0b0c0d07e0f8a0b0c0d0e0f1011");
        let concrete = concrete
            .split('/')
            .map(|s| if s.starts_with('{') { unknown } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let r = anonymous
            .send(method.parse().unwrap(), &concrete, None, &[])
            .await
            .unwrap();
        assert!(
            r.www_authenticate
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{id}"
        );
        reach.saw(&id, 401, r);
    }
    runtime.shutdown().await;

    // Over its request rate, a brand gets 429 on every route that needs a caller.
    let limited_env = Env::new(bulklink_core::Settings {
        brand_rate_per_sec: 0.01,
        brand_rate_burst: 1,
        ..fast_settings()
    });
    let limited = limited_env.start(limited_env.config(), |ports| ports).await;
    let spent = limited.api_as(Role::Brand(brand)).unwrap();
    let first = spent.send(Method::GET, "/jobs", None, &[]).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    for ((method, path), op) in operations(status::openapi()) {
        let id = op.operation_id.clone().unwrap();
        if !op.responses.responses.contains_key("429") {
            continue;
        }
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { unknown } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let r = spent
            .send(method.parse().unwrap(), &concrete, None, &[])
            .await
            .unwrap();
        reach.saw(&id, 429, r);
    }
    limited.shutdown().await;

    // With its store unavailable, every operation that reads or writes it answers 503.
    let down_env = Env::new(fast_settings());
    let down_seed = down_env.seed(1).await;
    let down = down_env
        .start(
            RuntimeConfig {
                consumers: false,
                ..down_env.config()
            },
            |ports| ports,
        )
        .await;
    down.embedded_store().unwrap().fail_every_call(true);
    for (id, answer) in ask_every_store_operation(&down, down_seed.brand_id).await {
        reach.saw(&id, 503, answer);
    }
    down.embedded_store().unwrap().fail_every_call(false);
    down.shutdown().await;
    reach.assert_all_seen();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamodb_and_sqs_unreachable_every_store_operation_answers_503_with_retry_after() {
    // A loopback port nothing listens on: every SDK call is refused, retried, then given up.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let clients = bulklink_aws::AwsClients::load(Some(&endpoint)).await;
    let names = bulklink_aws::AwsNames {
        catalog_table: "catalog".into(),
        jobs_table: "jobs".into(),
        fanout_queue_url: format!("{endpoint}/000000000000/fanout"),
        chunk_queue_url: format!("{endpoint}/000000000000/chunks"),
        chunk_dlq_url: format!("{endpoint}/000000000000/chunks-dlq"),
        events_topic_arn: "arn:aws:sns:us-east-1:000000000000:events".into(),
        webhook_queue_url: format!("{endpoint}/000000000000/webhooks"),
        uploads_bucket: "uploads".into(),
        webhook_secrets_key: "alias/webhook-secrets".into(),
    };
    let config = RuntimeConfig {
        consumers: false,
        settings: fast_settings(),
        egress: crate::support::loopback_egress(),
        ..Default::default()
    };
    let runtime = Runtime::start_aws(clients, &names, config, |ports| ports)
        .await
        .unwrap();
    let answers = ask_every_store_operation(&runtime, BrandId::new_random()).await;
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(_, a)| {
            a.status != StatusCode::SERVICE_UNAVAILABLE
                || a.content_type.as_deref() != Some("application/problem+json")
                || a.retry_after.is_none()
        })
        .map(|(id, a)| format!("{id}: {} {:?} {}", a.status, a.retry_after, a.body))
        .collect();
    assert!(wrong.is_empty(), "not a 503 with Retry-After: {wrong:#?}");
    runtime.shutdown().await;
}

/// A location of brand `theirs`, as an administrator reads it.
async fn their_first_location(admin: &ApiClient, theirs: BrandId) -> String {
    let created: Value = admin
        .post(
            "/locations",
            &json!({ "brandId": theirs, "address": "their street" }),
        )
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_owned()
}
