//! Imports end to end on both backends: a file uploaded to the URL `POST /imports` gives
//! (the server's own on the embedded backend, a presigned S3 PUT on moto) becomes an
//! `import-locations` job whose counters add up to the file's rows, whose invalid rows are
//! failures with their lines, and which is exact when its chunks are delivered twice or a
//! worker dies half-way through one.

use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink::runtime::{Runtime, RuntimeConfig};
use bulklink_core::domain::{BrandId, ImportState, JobId, JobStatus, Location, LocationStatus};
use bulklink_core::ports::Ports;
use bulklink_core::Settings;
use bulklink_http::auth::Role;
use bulklink_http::views::JobView;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);
/// The upload secret of the imports a test makes by hand.
const TOKEN: &str = "a-test-upload-secret";

crate::on_both_backends!(
    rows_are_upserts_counted_with_their_lines_and_a_second_run_changes_nothing,
    close_missing_closes_what_the_file_does_not_name,
    a_file_that_is_not_an_import_fails_with_its_reason_and_imports_nothing,
    duplicate_deliveries_and_a_worker_dying_mid_chunk_leave_the_counts_exact,
    an_upload_url_takes_one_file,
    an_upload_url_expires,
    an_import_pauses_resumes_and_cancels_like_any_job,
);

/// The CSV the tests import (lines numbered from the header, line 1).
pub(crate) fn stores_csv(brand_note: &str) -> String {
    [
        "externalId,name,address,city,region,postcode,country,tags,status",
        // 2: new.
        &format!("s-1,Soho {brand_note},1 Dean St,London,,W1D,GB,drive-thru;late,"),
        // 3: the store the test created first, its city changed: updated.
        "s-2,,2 High St,Leeds,,,GB,,active",
        // 4: the store the test created first, as it is: unchanged.
        "s-3,,3 Low Rd,York,,,GB,,",
        // 5: invalid: no such country.
        "s-4,,4 Any Rd,,,,XX,,",
        // 6: invalid: no address.
        "s-5,Nameless,,,,,,,",
        // 7: new, and closed from the start.
        "s-6,,\"6, Quoted Row\",Bath,,,GB,,closed",
        // 8: invalid: the same store as line 2.
        "s-1,Again,9 Other St,,,,,,",
        // 9: invalid: a malformed line (a field more than the header names).
        "s-9,,9 Extra St,,,,GB,,,surplus",
        "",
    ]
    .join("\n")
}

/// A fresh env whose brand has two stores with external ids (`s-2` in York, `s-3` as the
/// file says), and its running runtime and API.
pub(crate) async fn estate(kind: Kind) -> (Env, Runtime, ApiClient, BrandId) {
    let env = Env::of(kind, fast_settings()).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let brand = BrandId::new_random();
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    for (id, address, city) in [("s-2", "2 High St", "York"), ("s-3", "3 Low Rd", "York")] {
        let r = api
            .send(
                reqwest::Method::PUT,
                &format!("/locations/by-external-id/{id}"),
                Some(&json!({ "address": address, "city": city, "country": "GB" })),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    (env, runtime, api, brand)
}

/// Imports `file` and waits for its job to end.
pub(crate) async fn imported(
    api: &ApiClient,
    ports: &Ports,
    format: &str,
    close_missing: bool,
    file: &str,
) -> JobView {
    let import = api.create_import(format, close_missing).await.unwrap();
    assert_eq!(import.state, ImportState::Waiting);
    let url = import.upload_url.clone().unwrap();
    let (status, body) = api.upload(&url, file.to_owned()).await.unwrap();
    assert!(status.is_success(), "upload: {status} {body}");
    let job = api.import_job(import.id, WAIT).await.unwrap();
    wait_terminal(ports, job, WAIT).await;
    let view = api.job(job).await.unwrap();
    assert_eq!(view.import_id, Some(import.id));
    assert_eq!(view.offer_id, None);
    view
}

/// The job's failures: (line, reason).
async fn failures(api: &ApiClient, job: JobId) -> Vec<(u64, String)> {
    let page: Value = api.get(&format!("/jobs/{job}/failures")).await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().unwrap(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The brand's location with this external id.
async fn store(api: &ApiClient, external_id: &str) -> Location {
    let page: Value = api
        .get(&format!("/locations?externalId={external_id}"))
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{external_id}: {page}");
    serde_json::from_value(items[0].clone()).unwrap()
}

fn counts(job: &JobView) -> [u64; 7] {
    let c = &job.counters.counters;
    [
        c.total,
        c.created,
        c.updated,
        c.unchanged,
        c.closed,
        c.invalid,
        c.failed,
    ]
}

async fn rows_are_upserts_counted_with_their_lines_and_a_second_run_changes_nothing(kind: Kind) {
    let (_env, runtime, api, _brand) = estate(kind).await;
    let csv = stores_csv("a");

    let first = imported(&api, &runtime.ports, "csv", false, &csv).await;

    assert_eq!(first.status, JobStatus::CompletedWithErrors);
    // total, created, updated, unchanged, closed, invalid, failed: 8 rows.
    assert_eq!(counts(&first), [8, 2, 1, 1, 0, 4, 0]);
    let lines = failures(&api, first.id).await;
    assert_eq!(
        lines.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [5, 6, 8, 9],
        "{lines:?}"
    );
    assert!(lines[0].1.contains("country"), "{lines:?}");
    assert!(lines[1].1.contains("address is missing"), "{lines:?}");
    assert!(lines[2].1.contains("line 2"), "{lines:?}");
    assert!(
        lines[3].1.contains("10 fields; the header names 9"),
        "{lines:?}"
    );
    let soho = store(&api, "s-1").await;
    assert_eq!(soho.attributes.tags, ["drive-thru", "late"]);
    assert_eq!(soho.attributes.postcode.as_deref(), Some("W1D"));
    assert_eq!(soho.attributes.name.as_deref(), Some("Soho a"));
    assert_eq!(
        store(&api, "s-2").await.attributes.city.as_deref(),
        Some("Leeds")
    );
    let quoted = store(&api, "s-6").await;
    assert_eq!(
        (quoted.address.as_str(), quoted.status),
        ("6, Quoted Row", LocationStatus::Closed)
    );

    // The same file again: nothing to do but what is invalid still is.
    let again = imported(&api, &runtime.ports, "csv", false, &csv).await;
    assert_eq!(counts(&again), [8, 0, 0, 4, 0, 4, 0]);
    assert_eq!(store(&api, "s-1").await.updated_at, soho.updated_at);

    // The same stores as NDJSON, one of them renamed.
    let ndjson = [
        json!({ "externalId": "s-1", "name": "Soho b", "address": "1 Dean St", "city": "London",
                "postcode": "W1D", "country": "GB", "tags": ["drive-thru", "late"] }),
        json!({ "externalId": "s-3", "address": "3 Low Rd", "city": "York", "country": "GB" }),
        json!({ "externalId": "s-7", "address": "7 New St", "colour": "red" }),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let third = imported(&api, &runtime.ports, "ndjson", false, &ndjson).await;
    assert_eq!(counts(&third), [3, 0, 1, 1, 0, 1, 0]);
    let lines = failures(&api, third.id).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, 3);
    assert!(lines[0].1.contains("colour"), "{lines:?}");
    assert_eq!(
        store(&api, "s-1").await.attributes.name.as_deref(),
        Some("Soho b")
    );
    runtime.shutdown().await;
}

async fn close_missing_closes_what_the_file_does_not_name(kind: Kind) {
    let (_env, runtime, api, _brand) = estate(kind).await;
    // A third store the file will not name, and one closed already (not counted again).
    for (id, status) in [("gone-1", "active"), ("gone-2", "closed")] {
        let r = api
            .send(
                reqwest::Method::PUT,
                &format!("/locations/by-external-id/{id}"),
                Some(&json!({ "address": "somewhere", "status": status })),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let file = "externalId,address,city,country\ns-2,2 High St,York,GB\nnew-1,1 New Rd,,\n";

    let job = imported(&api, &runtime.ports, "csv", true, file).await;

    assert_eq!(job.status, JobStatus::Succeeded);
    // s-3 and gone-1 were active and not named; gone-2 was closed already.
    assert_eq!(counts(&job), [4, 1, 0, 1, 2, 0, 0]);
    assert_eq!(job.counters.processed, 4);
    for (id, status) in [
        ("s-2", LocationStatus::Active),
        ("new-1", LocationStatus::Active),
        ("s-3", LocationStatus::Closed),
        ("gone-1", LocationStatus::Closed),
        ("gone-2", LocationStatus::Closed),
    ] {
        assert_eq!(store(&api, id).await.status, status, "{id}");
    }
    // Again: everything named is as the file says, nothing left to close.
    let again = imported(&api, &runtime.ports, "csv", true, file).await;
    assert_eq!(counts(&again), [2, 0, 0, 2, 0, 0, 0]);
    runtime.shutdown().await;
}

async fn a_file_that_is_not_an_import_fails_with_its_reason_and_imports_nothing(kind: Kind) {
    let settings = Settings {
        max_import_bytes: 4_096,
        ..fast_settings()
    };
    let env = Env::of(kind, settings).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let brand = BrandId::new_random();
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10".to_vec();
    let big = format!(
        "externalId,address\n{}",
        (0..400)
            .map(|i| format!("big-{i},{i} Long Road\n"))
            .collect::<String>()
    );
    for (file, reason) in [
        (png, "not UTF-8"),
        (b"hello,world\n".to_vec(), "unknown column 'hello'"),
        (big.into_bytes(), "4096 bytes"),
    ] {
        let import = api.create_import("csv", true).await.unwrap();
        let (status, body) = api
            .upload(import.upload_url.as_deref().unwrap(), file)
            .await
            .unwrap();
        match kind {
            // The server reads the file as it arrives: refused there, the URL still usable.
            Kind::Embedded => {
                assert!(
                    status == StatusCode::UNPROCESSABLE_ENTITY
                        || status == StatusCode::PAYLOAD_TOO_LARGE,
                    "{status} {body}"
                );
                assert!(body.contains(reason), "{body}");
                let now: Value = api.get(&format!("/imports/{}", import.id)).await.unwrap();
                assert_eq!(now["state"], "waiting", "{now}");
            }
            // S3 takes any file: its job reads the first bytes and fails, line 1 saying why.
            Kind::Aws => {
                assert!(status.is_success(), "{status} {body}");
                let job = api.import_job(import.id, WAIT).await.unwrap();
                let done = wait_terminal(&runtime.ports, job, WAIT).await;
                assert_eq!(done.status, JobStatus::Failed, "{done:?}");
                assert_eq!((done.counters.total, done.counters.failed), (1, 1));
                let lines = failures(&api, job).await;
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert_eq!(lines[0].0, 1);
                assert!(lines[0].1.contains(reason), "{lines:?}");
            }
        }
    }
    let page: Value = api.get("/locations").await.unwrap();
    assert_eq!(page["items"], json!([]), "nothing imported");
    runtime.shutdown().await;
}

/// Every chunk message sent twice, and a worker that applied the first half of a chunk's
/// rows before it died (its writes made, the chunk never accounted): the counts are still
/// exactly the file's.
async fn duplicate_deliveries_and_a_worker_dying_mid_chunk_leave_the_counts_exact(kind: Kind) {
    let settings = Settings {
        chunk_size: 10,
        page_size: 40,
        ..fast_settings()
    };
    let env = Env::of(kind, settings).await;
    let brand = BrandId::new_random();
    let rows = kind.scale(400, 120);
    let file = format!(
        "externalId,address,tags\n{}",
        (0..rows)
            .map(|i| format!("d-{i},{i} Dup St,t{}\n", i % 3))
            .collect::<String>()
    );
    // The first 5 rows of the file applied by a worker that then died: no chunk accounted.
    let early = env.ports();
    let import = bulklink_core::domain::Import {
        id: bulklink_core::domain::ImportId::new_v7(),
        brand_id: brand,
        format: bulklink_core::domain::ImportFormat::Csv,
        close_missing: false,
        created_at: early.clock.now(),
        expires_at: early.clock.now() + chrono::Duration::minutes(15),
        job_id: JobId::new_v7(),
        started_at: None,
        token_hash: Some(bulklink_http::http::sha256_hex(TOKEN.as_bytes())),
        principal: None,
    };
    let job = bulklink_core::uploads::job_of(&import, early.clock.now());
    let half: Vec<(u64, Location)> = (0..5)
        .map(|i| {
            let raw = bulklink_core::domain::RawRow {
                external_id: Some(format!("d-{i}")),
                address: Some(format!("{i} Dup St")),
                tags: Some(vec![format!("t{}", i % 3)]),
                ..Default::default()
            };
            (i + 2, raw.into_location(brand, early.clock.now()).unwrap())
        })
        .collect();
    let done = bulklink_core::importing::apply_rows(&early, &job, &half)
        .await
        .unwrap();
    assert!(done
        .iter()
        .all(|o| o.outcome == bulklink_core::domain::RowOutcome::Created));

    let runtime = env
        .start(env.config(), |mut ports| {
            let mut twice = FaultyQueue::new(ports.chunk_queue.raw().clone());
            twice.duplicate = true;
            ports.chunk_queue = bulklink_core::ports::TypedQueue::new(std::sync::Arc::new(twice));
            ports
        })
        .await;
    let api = runtime.api_as(Role::Brand(brand)).unwrap();
    // The import the dead worker served, its file arriving now through its upload URL.
    runtime.ports.imports.create_import(&import).await.unwrap();
    let url = runtime
        .ports
        .uploads
        .upload_url(&import, Some(TOKEN))
        .await
        .unwrap();
    let url = if url.starts_with('/') {
        format!("{}{url}", api.base())
    } else {
        url
    };
    let (status, body) = api.upload(&url, file.clone()).await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(
        api.import_job(import.id, WAIT).await.unwrap(),
        import.job_id
    );
    let ended = wait_terminal(&runtime.ports, import.job_id, WAIT).await;

    assert_eq!(ended.status, JobStatus::Succeeded, "{ended:?}");
    assert_eq!(
        (
            ended.counters.total,
            ended.counters.created,
            ended.counters.processed()
        ),
        (rows, rows, rows),
        "{:?}",
        ended.counters
    );
    assert_eq!(
        env.ledger_size(import.job_id).await,
        ended.chunks_total as u64
    );
    let page: Value = api.get("/locations?limit=1000").await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len() as u64, rows);
    // A second run: every row unchanged, delivered twice or not.
    let again = imported(&api, &runtime.ports, "csv", false, &file).await;
    assert_eq!(counts(&again), [rows, 0, 0, rows, 0, 0, 0]);
    runtime.shutdown().await;
}

async fn an_upload_url_takes_one_file(kind: Kind) {
    let (_env, runtime, api, _brand) = estate(kind).await;
    let import = api.create_import("csv", false).await.unwrap();
    let url = import.upload_url.clone().unwrap();
    let first = "externalId,address\none-1,1 First St\n";
    let (status, body) = api.upload(&url, first).await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    let job = api.import_job(import.id, WAIT).await.unwrap();
    wait_terminal(&runtime.ports, job, WAIT).await;

    let second = "externalId,address\ntwo-1,1 Second St\ntwo-2,2 Second St\n";
    let (status, body) = api.upload(&url, second).await.unwrap();
    match kind {
        Kind::Embedded => assert_eq!(status, StatusCode::CONFLICT, "{body}"),
        // A presigned PUT works until it expires: S3 takes it, nothing reads it.
        Kind::Aws => assert!(status.is_success(), "{status} {body}"),
    }
    // Whatever arrives later, the import is its first file's: one job, one store.
    let now: Value = api.get(&format!("/imports/{}", import.id)).await.unwrap();
    assert_eq!(now["jobId"], job.to_string());
    let jobs = runtime
        .ports
        .jobs
        .page_brand_jobs(import.brand_id, None, 100)
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    let page: Value = api.get("/locations").await.unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["externalId"].as_str())
        .collect();
    assert!(
        ids.contains(&"one-1") && !ids.iter().any(|i| i.starts_with("two")),
        "{ids:?}"
    );

    runtime.shutdown().await;
}

async fn an_upload_url_expires(kind: Kind) {
    let env = Env::of(kind, fast_settings()).await;
    let clock = bulklink_core::Clock::manual(env.ports().clock.now());
    let config = RuntimeConfig {
        clock: clock.clone(),
        ..env.config()
    };
    let runtime = env.start(config, |ports| ports).await;
    let api = runtime.api_as(Role::Brand(BrandId::new_random())).unwrap();
    let late = api.create_import("csv", false).await.unwrap();
    assert_eq!(
        late.expires_at - late.created_at,
        chrono::Duration::minutes(15)
    );

    clock.advance(chrono::Duration::minutes(15));

    let shown: Value = api.get(&format!("/imports/{}", late.id)).await.unwrap();
    assert_eq!(shown["state"], "expired", "{shown}");
    if kind == Kind::Embedded {
        // (S3 itself refuses a presigned URL past its expiry.)
        let (status, body) = api
            .upload(
                late.upload_url.as_deref().unwrap(),
                "externalId,address
",
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::GONE, "{body}");
    }
    runtime.shutdown().await;
}

/// An import is a job like any other: paused and resumed, it ends exact; cancelled, it ends
/// CANCELLED with every row accounted.
async fn an_import_pauses_resumes_and_cancels_like_any_job(kind: Kind) {
    let settings = Settings {
        chunk_size: 20,
        page_size: 100,
        // Slow enough to act on while it runs.
        write_budget_per_sec: Some(kind.scale(400, 100) as f64),
        ..fast_settings()
    };
    let env = Env::of(kind, settings).await;
    let runtime = env.start(env.config(), |ports| ports).await;
    let api = runtime.api_as(Role::Brand(BrandId::new_random())).unwrap();
    let rows = kind.scale(600, 150);
    let file = |tag: &str| {
        std::iter::once("externalId,address\n".to_owned())
            .chain((0..rows).map(|i| format!("{tag}-{i},{i} Paused St\n")))
            .collect::<String>()
    };
    let started = |file: String| {
        let api = api.clone();
        async move {
            let import = api.create_import("csv", false).await.unwrap();
            let (status, body) = api
                .upload(import.upload_url.as_deref().unwrap(), file)
                .await
                .unwrap();
            assert!(status.is_success(), "{status} {body}");
            api.import_job(import.id, WAIT).await.unwrap()
        }
    };

    let job = started(file("p")).await;
    let paused = api.pause(job).await.unwrap();
    assert_eq!(paused.status, JobStatus::Paused, "{paused:?}");
    let still = api.job(job).await.unwrap();
    assert_eq!(still.status, JobStatus::Paused, "{still:?}");
    let resumed = api.resume(job).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Running);
    let done = wait_terminal(&runtime.ports, job, WAIT).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!((done.counters.total, done.counters.created), (rows, rows));

    let job = started(file("c")).await;
    let cancelled = api.cancel(job).await.unwrap();
    assert!(
        matches!(
            cancelled.status,
            JobStatus::Cancelling | JobStatus::Cancelled
        ),
        "{cancelled:?}"
    );
    let done = wait_terminal(&runtime.ports, job, WAIT).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    let c = done.counters;
    assert_eq!(c.created + c.cancelled, c.total, "{c:?}");
    assert_eq!(c.processed(), c.total, "{c:?}");
    runtime.shutdown().await;
}
