//! An import's file arriving: the one step both backends take when it has (the embedded
//! server's upload route once the file is stored; on AWS, the object store's event on the
//! fanout queue) — make the import's job, once, and start it.

use serde::Deserialize;

use crate::domain::{DomainError, FanoutMessage, Import, ImportId, Job, JobSpec};
use crate::error::{StoreError, StoreResult};
use crate::ports::{CreateOutcome, Ports};

/// The import job of `import`, PENDING (its id chosen when the import was).
pub fn job_of(import: &Import, now: chrono::DateTime<chrono::Utc>) -> Job {
    let mut job = Job::planned(JobSpec::import(import), import.brand_id, None, None, now);
    job.id = import.job_id;
    job
}

/// Starts the job of an import whose file arrived: makes it (unless a replay already did),
/// records the arrival on the import, and sends the job to fanout. Every step repeats
/// harmlessly, so a redelivered event or a retried upload starts the job once. `None` if
/// there is no such import.
pub async fn start_import(ports: &Ports, id: ImportId) -> StoreResult<Option<Job>> {
    let Some(import) = ports.imports.get_import(id).await? else {
        return Ok(None);
    };
    let now = ports.clock.now();
    ports.uploads.take(id).await?;
    let job = match ports.jobs.get_job(import.job_id).await? {
        Some(job) => job,
        None => match ports.jobs.create_job(&job_of(&import, now), None).await? {
            CreateOutcome::Created(job) | CreateOutcome::Replayed(job) => job,
            other => {
                // A job of that id made meanwhile by a racing delivery: read it.
                tracing::info!(?other, "the import's job was made meanwhile");
                ports.jobs.get_job(import.job_id).await?.ok_or_else(|| {
                    StoreError::unavailable(format!(
                        "import {id}'s job {} could not be made; retry",
                        import.job_id
                    ))
                })?
            }
        },
    };
    ports.imports.mark_started(id, now).await?;
    ports
        .fanout_queue
        .send(&FanoutMessage { job_id: job.id })
        .await?;
    Ok(Some(job))
}

/// The imports whose files an object-store event message says arrived: `None` if the body is
/// no such event (a fanout message); an empty list for the store's test event or objects
/// that are not imports' files.
pub fn arrivals(body: &str) -> Option<Result<Vec<ImportId>, DomainError>> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "Records", default)]
        records: Vec<Record>,
        #[serde(rename = "Event", default)]
        event: Option<String>,
    }
    #[derive(Deserialize)]
    struct Record {
        #[serde(rename = "eventName", default)]
        event_name: String,
        s3: S3,
    }
    #[derive(Deserialize)]
    struct S3 {
        object: Object,
    }
    #[derive(Deserialize)]
    struct Object {
        key: String,
    }
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let object = value.as_object()?;
    if !object.contains_key("Records") && object.get("Event").is_none() {
        return None;
    }
    let event: Event = match serde_json::from_value(value) {
        Ok(event) => event,
        Err(e) => {
            return Some(Err(DomainError::BadMessage(format!(
                "not an object-store event: {e}"
            ))))
        }
    };
    if event.event.as_deref() == Some("s3:TestEvent") {
        return Some(Ok(Vec::new()));
    }
    Some(Ok(event
        .records
        .iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated:"))
        // Keys arrive URL-encoded (`imports%2F<id>`, a space as `+`).
        .filter_map(|r| ImportId::from_file_key(&decoded(&r.s3.object.key)))
        .collect()))
}

/// An event's object key as stored.
fn decoded(key: &str) -> String {
    url::form_urlencoded::parse(format!("k={key}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_events_name_the_imports_whose_files_arrived() {
        let id = ImportId::new_v7();
        let event = format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"imports%2F{id}","size":10}}}}}},
            {{"eventName":"ObjectCreated:Put","s3":{{"object":{{"key":"elsewhere/x"}}}}}},
            {{"eventName":"ObjectRemoved:Delete","s3":{{"object":{{"key":"imports/{id}"}}}}}}]}}"#
        );
        assert_eq!(arrivals(&event).unwrap().unwrap(), vec![id]);
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
        assert_eq!(arrivals(test).unwrap().unwrap(), vec![]);
        let fanout = format!(r#"{{"jobId":"{}"}}"#, crate::domain::JobId::new_v7());
        assert!(arrivals(&fanout).is_none());
        assert!(arrivals("not json").is_none());
        assert!(arrivals(r#"{"Records":[{"s3":{}}]}"#).unwrap().is_err());
    }
}
