//! A job's report: what became of every location (or row of an import's file) it touched,
//! read from the chunk ledger, where each chunk's outcomes were written with its counts. A
//! finished job's report has exactly `counters.total` rows and its outcomes count to the
//! job's counters, because the counters are those outcomes counted (`ChunkTally::counts`).
//! Read a page at a time (a cursor names a chunk and a row in it), so memory stays flat
//! whatever the job's size.

use crate::domain::{ChunkSeq, Job, JobStatus, ReportRow};
use crate::error::{StoreError, StoreResult};
use crate::ports::{Cursor, Ports};

/// Chunks read from the ledger at a time.
const CHUNKS_PER_READ: usize = 50;

/// Why a job has no report (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoReport {
    /// The job is not finished: its outcomes are still being written.
    Running(JobStatus),
    /// A chunk of the job was accounted by a release that kept no outcomes.
    NotKept,
}

impl NoReport {
    pub fn detail(&self, job: &Job) -> String {
        match self {
            NoReport::Running(status) => format!(
                "job {} is {status}: its report is ready once the job has finished \
                 (SUCCEEDED, FAILED or CANCELLED)",
                job.id
            ),
            NoReport::NotKept => format!(
                "job {} was accounted by a release that kept no per-location outcomes; its \
                 counters and failures (GET /jobs/{}/failures) are all there is",
                job.id, job.id
            ),
        }
    }
}

/// Whether the job can be reported now.
pub fn reportable(job: &Job) -> Result<(), NoReport> {
    if job.status.is_terminal() {
        Ok(())
    } else {
        Err(NoReport::Running(job.status))
    }
}

/// One page of a report, and where the next begins.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportPage {
    pub rows: Vec<ReportRow>,
    pub next: Option<Cursor>,
}

/// Where a page begins: a chunk, and a row in it.
fn position(after: Option<&Cursor>) -> StoreResult<(ChunkSeq, usize)> {
    let Some(cursor) = after else {
        return Ok((ChunkSeq(0), 0));
    };
    let bad = || StoreError::Invalid(crate::domain::DomainError::InvalidCursor.to_string());
    let (seq, row) = cursor.position().split_once(':').ok_or_else(bad)?;
    Ok((
        ChunkSeq(seq.parse().map_err(|_| bad())?),
        row.parse().map_err(|_| bad())?,
    ))
}

/// Up to `limit` rows of the job's report from `after` on (the start without one). The job
/// must be finished (`reportable`).
pub async fn page(
    ports: &Ports,
    job: &Job,
    after: Option<&Cursor>,
    limit: usize,
) -> StoreResult<Result<ReportPage, NoReport>> {
    if let Err(no) = reportable(job) {
        return Ok(Err(no));
    }
    let limit = limit.max(1);
    let (mut from, mut skip) = position(after)?;
    let mut rows = Vec::with_capacity(limit.min(10_000));
    loop {
        let chunks = ports
            .ledger
            .chunks_from(job.id, from, CHUNKS_PER_READ)
            .await?;
        let last_read = chunks.len() < CHUNKS_PER_READ;
        for chunk in chunks {
            let Some(outcomes) = chunk.outcomes else {
                return Ok(Err(NoReport::NotKept));
            };
            for (index, outcome) in outcomes.into_iter().enumerate().skip(skip) {
                if rows.len() == limit {
                    let next = Cursor::from_position(format!("{}:{index}", chunk.seq.0));
                    return Ok(Ok(ReportPage {
                        rows: named(ports, rows).await?,
                        next: Some(next),
                    }));
                }
                rows.push(ReportRow {
                    location_id: outcome.location,
                    external_id: None,
                    outcome: outcome.counter,
                    error: outcome.error,
                    at: chunk.recorded_at,
                    line: outcome.line,
                });
            }
            skip = 0;
            from = ChunkSeq(chunk.seq.0 + 1);
        }
        if last_read {
            return Ok(Ok(ReportPage {
                rows: named(ports, rows).await?,
                next: None,
            }));
        }
    }
}

/// Fills in each row's external id (the location's as it is now).
async fn named(ports: &Ports, mut rows: Vec<ReportRow>) -> StoreResult<Vec<ReportRow>> {
    let ids: Vec<_> = rows.iter().filter_map(|r| r.location_id).collect();
    let mut names = ports.catalog.external_ids(&ids).await?.into_iter();
    for row in rows.iter_mut().filter(|r| r.location_id.is_some()) {
        row.external_id = names.next().flatten();
    }
    Ok(rows)
}
