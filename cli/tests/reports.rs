//! Reports end to end on both backends: `GET /jobs/{id}/report` (through the CLI's client,
//! which follows the parts) has one row per location a finished job accounted, its outcomes
//! count to the job's counters, failed rows carry their errors, an import's rows their lines.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bulklink::client::ApiClient;
use bulklink_core::domain::{JobId, JobStatus, LocationId};
use bulklink_http::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::*;

crate::on_both_backends!(
    a_report_has_a_row_per_location_whose_outcomes_are_the_counters_and_failures_carry_errors,
    an_imports_report_carries_each_row_with_its_line_and_the_invalid_ones_with_their_reasons,
);

/// Splits CSV text into records of fields (RFC 4180: quoted fields, doubled quotes).
pub(crate) fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\n', false) => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (c, _) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "the text ends mid-record"
    );
    records
}

/// The whole report as CSV records (header first), through the client; `limit` rows a part.
pub(crate) async fn report_csv(
    api: &ApiClient,
    job: JobId,
    limit: Option<usize>,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let rows = api.report(job, false, limit, &mut out).await.unwrap();
    let records = parse_csv(std::str::from_utf8(&out).unwrap());
    assert_eq!(
        records.len() as u64,
        rows + 1,
        "the client counts the rows it wrote"
    );
    records
}

/// How many rows of each outcome (the CSV's third column).
fn outcome_counts(records: &[Vec<String>]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for record in &records[1..] {
        *counts.entry(record[2].clone()).or_default() += 1;
    }
    counts
}

/// The job's non-zero counters but `total`, by name.
fn counters_of(counters: &impl serde::Serialize) -> BTreeMap<String, u64> {
    let value = serde_json::to_value(counters).unwrap();
    value
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, n)| *name != "total" && n.as_u64() != Some(0))
        .map(|(name, n)| (name.clone(), n.as_u64().unwrap()))
        .collect()
}

async fn a_report_has_a_row_per_location_whose_outcomes_are_the_counters_and_failures_carry_errors(
    kind: Kind,
) {
    let mut settings = fast_settings();
    settings.chunk_size = kind.scale(50, 20) as usize;
    // On moto a delivery gets 8 s: with the 1 s of the fast settings, a loaded emulator
    // (the whole suite on two cores) made the poisoned chunk's deliveries run past it, and
    // SQS dead-lettered it before its last delivery could record why it failed.
    settings.visibility_timeout = Duration::from_secs(kind.scale(1, 8));
    let env = Env::of(kind, settings).await;
    let n = kind.scale(500, 200);
    let seeded = env.seed(n).await;
    let ports = env.ports();
    let poisoned = crate::pipeline::first_location(&ports, &seeded).await;
    let mut catalog = FaultyCatalog::new(ports.catalog.clone());
    catalog.fail_link = Box::new(move |ids: &[LocationId]| ids.contains(&poisoned));
    let pipeline = env
        .start(env.config(), |mut p| {
            p.catalog = Arc::new(catalog);
            p
        })
        .await;
    let api = pipeline.api_as(Role::Brand(seeded.brand_id)).unwrap();

    // A job that has not finished has no report yet.
    let waiting = env.seed(3).await;
    let pending = create_job(&pipeline.ports, &waiting).await;
    let early = pipeline
        .api_as(Role::Brand(waiting.brand_id))
        .unwrap()
        .send(
            Method::GET,
            &format!("/jobs/{}/report", pending.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.body);
    assert!(
        early.body["detail"].as_str().unwrap().contains("PENDING"),
        "{}",
        early.body
    );

    let job = api.create_job(seeded.offer_id, None, None).await.unwrap();
    let job = wait_terminal(&pipeline.ports, job.id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::CompletedWithErrors);
    let chunk = env.settings.chunk_size as u64;
    assert_eq!(job.counters.failed, chunk);

    let records = report_csv(&api, job.id, None).await;
    assert_eq!(
        records[0],
        ["locationId", "externalId", "outcome", "error", "at"]
    );
    let rows = &records[1..];
    assert_eq!(rows.len() as u64, job.counters.total, "a row per location");
    assert_eq!(job.counters.total, n);
    let ids: HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids.len() as u64, n, "no location twice");
    assert_eq!(outcome_counts(&records), counters_of(&job.counters));
    let failed: Vec<_> = rows.iter().filter(|r| r[2] == "failed").collect();
    assert_eq!(failed.len() as u64, chunk);
    assert!(failed.iter().any(|r| r[0] == poisoned.to_string()));
    for row in &failed {
        assert!(
            row[3].contains("linking failed on every delivery"),
            "{row:?}"
        );
    }
    for row in rows.iter().filter(|r| r[2] != "failed") {
        assert_eq!(row[3], "", "{row:?}");
        chrono::DateTime::parse_from_rfc3339(&row[4]).unwrap();
    }

    // The same rows in parts of 7, following each part's Link.
    assert_eq!(report_csv(&api, job.id, Some(7)).await, records);

    // NDJSON: the same rows as objects.
    let mut out = Vec::new();
    let lines = api.report(job.id, true, None, &mut out).await.unwrap();
    assert_eq!(lines, n);
    let objects: Vec<Value> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (object, record) in objects.iter().zip(rows) {
        assert_eq!(object["locationId"], record[0].as_str());
        assert_eq!(object["outcome"], record[2].as_str());
        assert_eq!(object["error"].as_str().unwrap_or(""), record[3]);
    }

    // Brand-scoped as the job is; a bad limit is the caller's error.
    let stranger = pipeline.api_as(Role::Brand(waiting.brand_id)).unwrap();
    let hidden = stranger
        .send(Method::GET, &format!("/jobs/{}/report", job.id), None, &[])
        .await
        .unwrap();
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let admin = pipeline.api_as(Role::Admin).unwrap();
    assert_eq!(report_csv(&admin, job.id, None).await, records);
    let bad = api
        .send(
            Method::GET,
            &format!("/jobs/{}/report?limit=0", job.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.content_type.as_deref(),
        Some("application/problem+json")
    );
    pipeline.shutdown().await;
}

async fn an_imports_report_carries_each_row_with_its_line_and_the_invalid_ones_with_their_reasons(
    kind: Kind,
) {
    let (_env, runtime, api, _brand) = crate::imports::estate(kind).await;
    let view = crate::imports::imported(
        &api,
        &runtime.ports,
        "csv",
        false,
        &crate::imports::stores_csv("report"),
    )
    .await;
    assert_eq!(view.counters.counters.total, 8);
    let records = report_csv(&api, view.id, None).await;
    assert_eq!(
        records[0],
        ["locationId", "externalId", "outcome", "error", "at", "line"]
    );
    let rows = &records[1..];
    assert_eq!(rows.len(), 8);
    assert_eq!(
        outcome_counts(&records),
        counters_of(&view.counters.counters)
    );
    let by_line: BTreeMap<u64, &Vec<String>> =
        rows.iter().map(|r| (r[5].parse().unwrap(), r)).collect();
    assert_eq!(
        by_line.keys().copied().collect::<Vec<_>>(),
        (2..=9).collect::<Vec<_>>()
    );
    for (line, external_id, outcome) in [
        (2, "s-1", "created"),
        (3, "s-2", "updated"),
        (4, "s-3", "unchanged"),
        (7, "s-6", "created"),
    ] {
        let row = by_line[&line];
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            (external_id, outcome),
            "{row:?}"
        );
        row[0].parse::<LocationId>().unwrap();
    }
    let failures: Value = api
        .get(&format!("/jobs/{}/failures", view.id))
        .await
        .unwrap();
    for failure in failures["items"].as_array().unwrap() {
        let row = by_line[&failure["line"].as_u64().unwrap()];
        assert_eq!(row[2], "invalid");
        assert_eq!(row[3], failure["reason"].as_str().unwrap());
        assert_eq!(row[0], "", "an invalid row made no location");
    }
    assert_eq!(failures["items"].as_array().unwrap().len(), 4);
    runtime.shutdown().await;
}
