//! An import job's steps: fanout finds the rows of its file and sends runs of them as chunks;
//! the worker reads a run and applies each row (`LocationImports::import_row`); once every
//! row is accounted, an import that closes what its file does not name pages the brand's
//! active locations left unmarked and closes them. The job's fanout position is an
//! `ImportCursor`.

use serde::{Deserialize, Serialize};

use crate::domain::{
    find_rows, read_header, read_rows, span_columns, ChunkMessage, ChunkTally, Counter,
    FilePosition, ImportFormat, ImportId, ImportMark, ImportedRow, Job, Location, LocationId,
    LocationStatus, RowOutcome, RowSpan, Source, MAX_CHUNK_ROWS, READ_WINDOW,
};
use crate::error::{StoreError, StoreResult};
use crate::kinds::{Outcome, Unfinished};
use crate::ports::{Cursor, Failure, Ports};

/// Where an import's fanout is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
enum ImportCursor {
    /// The next row begins at `at`; `columns`: the CSV header's.
    Rows {
        #[serde(flatten)]
        at: FilePosition,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
    },
    /// Closing what the file did not name: after the brand page position `after`.
    Close {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
}

/// One step of a job's fanout.
#[derive(Debug)]
pub enum WorkPage {
    /// Chunks to send (their ids or rows), how many ids or rows they hold, and the position
    /// after them (`None`: that was the last page).
    Chunks {
        chunks: Vec<ChunkWork>,
        items: u64,
        next: Option<String>,
    },
    /// The next page must wait until every chunk sent so far is accounted (an import closes
    /// what its file did not name only once every row is applied): ask again later.
    Wait,
    /// The job's input cannot be read (a file that is too large, or not an import's): this
    /// failure ends the job, no further row applied.
    Refused(Failure),
}

/// What one chunk carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkWork {
    Ids(Vec<LocationId>),
    Rows(RowSpan),
}

impl ChunkWork {
    /// The chunk message for `job`, numbered `seq`.
    pub fn message(self, job: &Job, seq: u32) -> ChunkMessage {
        let (location_ids, rows) = match self {
            ChunkWork::Ids(ids) => (ids, None),
            ChunkWork::Rows(span) => (Vec::new(), Some(span)),
        };
        ChunkMessage {
            job_id: job.id,
            offer_id: job.offer_id,
            brand_id: job.brand_id,
            seq: crate::domain::ChunkSeq(seq),
            location_ids,
            rows,
        }
    }
}

/// How big fanout's steps are.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    /// Ids or rows a page holds at most.
    pub page_size: usize,
    /// Ids or rows a chunk holds at most.
    pub chunk_size: usize,
    /// The largest import file taken.
    pub max_import_bytes: u64,
}

/// The import a job applies, if it is an import job.
pub fn upload_of(job: &Job) -> Option<(ImportId, ImportFormat, bool)> {
    match job.spec.source.builtin()? {
        Source::Upload {
            import,
            format,
            close_missing,
        } => Some((import, format, close_missing)),
        _ => None,
    }
}

/// The next step of an import job's fanout, after `after` (its stored position).
pub async fn page(
    ports: &Ports,
    job: &Job,
    (import, format, close_missing): (ImportId, ImportFormat, bool),
    after: Option<&str>,
    limits: PageLimits,
) -> StoreResult<WorkPage> {
    let cursor = match after {
        None => match start(ports, import, format, limits).await? {
            Ok(cursor) => cursor,
            Err(refused) => return Ok(WorkPage::Refused(refused)),
        },
        Some(raw) => serde_json::from_str::<ImportCursor>(raw).map_err(|e| {
            StoreError::internal(format!("job {}'s import position '{raw}': {e}", job.id))
        })?,
    };
    match cursor {
        ImportCursor::Rows { at, columns } => {
            rows_page(ports, import, format, close_missing, at, columns, limits).await
        }
        ImportCursor::Close { after } => {
            if after.is_none() && job.chunks_done < job.chunks_total {
                return Ok(WorkPage::Wait);
            }
            close_page(ports, job, after, limits).await
        }
    }
}

/// Where the rows begin: after the header (CSV), checked; or why the file is refused.
async fn start(
    ports: &Ports,
    import: ImportId,
    format: ImportFormat,
    limits: PageLimits,
) -> StoreResult<Result<ImportCursor, Failure>> {
    let Some(size) = ports.uploads.size(import).await? else {
        return Ok(Err(Failure::of_line(
            1,
            "the import's file is not there (removed after it arrived?)".to_owned(),
            1,
        )));
    };
    if size > limits.max_import_bytes {
        return Ok(Err(Failure::of_line(
            1,
            format!(
                "the file is {size} bytes; an import takes at most {} bytes: split it",
                limits.max_import_bytes
            ),
            1,
        )));
    }
    let first = ports.uploads.read(import, 0, READ_WINDOW.min(size)).await?;
    match read_header(format, &first, first.len() as u64 >= size) {
        Ok((columns, at)) => Ok(Ok(ImportCursor::Rows { at, columns })),
        Err(reason) => Ok(Err(Failure::of_line(1, reason, 1))),
    }
}

async fn rows_page(
    ports: &Ports,
    import: ImportId,
    format: ImportFormat,
    close_missing: bool,
    at: FilePosition,
    columns: Option<Vec<String>>,
    limits: PageLimits,
) -> StoreResult<WorkPage> {
    let size = ports.uploads.size(import).await?.unwrap_or(0);
    let end = (at.offset + READ_WINDOW).min(size);
    let window = if at.offset < end {
        ports.uploads.read(import, at.offset, end).await?
    } else {
        Vec::new()
    };
    let last = at.offset + window.len() as u64 >= size;
    let found = match find_rows(format, &window, &at, last, limits.page_size) {
        Ok(found) => found,
        Err(reason) => return Ok(WorkPage::Refused(Failure::of_line(at.line, reason, 1))),
    };
    let chunks: Vec<ChunkWork> = found
        .rows
        .chunks(limits.chunk_size.min(MAX_CHUNK_ROWS as usize))
        .map(|rows| {
            ChunkWork::Rows(RowSpan {
                start: rows[0].start,
                end: rows[rows.len() - 1].end,
                line: rows[0].line,
                rows: rows.len() as u32,
                columns: columns.clone(),
            })
        })
        .collect();
    let items = found.rows.len() as u64;
    let done =
        last && (found.rows.is_empty() || found.next.offset >= at.offset + window.len() as u64);
    let next = if !done {
        Some(ImportCursor::Rows {
            at: found.next,
            columns,
        })
    } else if close_missing {
        Some(ImportCursor::Close { after: None })
    } else {
        None
    };
    Ok(WorkPage::Chunks {
        chunks,
        items,
        next: next.map(|c| serde_json::to_string(&c).expect("a cursor serializes")),
    })
}

/// A page of the brand's active locations this import did not mark (its file did not name
/// them): the ones to close.
async fn close_page(
    ports: &Ports,
    job: &Job,
    after: Option<String>,
    limits: PageLimits,
) -> StoreResult<WorkPage> {
    let after = after.map(Cursor::from_position);
    let page = ports
        .catalog
        .page_brand_locations(
            job.brand_id,
            Some(LocationStatus::Active),
            after.as_ref(),
            limits.page_size,
        )
        .await?;
    let marks = ports.location_imports.import_marks(&page.items).await?;
    let unnamed: Vec<LocationId> = page
        .items
        .iter()
        .zip(marks)
        .filter(|(_, mark)| mark.is_none_or(|m| m.job != job.id))
        .map(|(id, _)| *id)
        .collect();
    let chunks = unnamed
        .chunks(limits.chunk_size)
        .map(|ids| ChunkWork::Ids(ids.to_vec()))
        .collect();
    let next = page.next.map(|c| {
        serde_json::to_string(&ImportCursor::Close {
            after: Some(c.position().to_owned()),
        })
        .expect("a cursor serializes")
    });
    Ok(WorkPage::Chunks {
        chunks,
        items: unnamed.len() as u64,
        next,
    })
}

/// The rows of a chunk: each line with the location it describes, or why it is invalid.
pub async fn rows_of(
    ports: &Ports,
    job: &Job,
    span: &RowSpan,
) -> StoreResult<Vec<(u64, Result<Location, String>)>> {
    let (import, format, _) = upload_of(job).ok_or_else(|| {
        StoreError::internal(format!("job {} carries rows but imports no file", job.id))
    })?;
    let columns = span_columns(format, span).map_err(StoreError::Invalid)?;
    let bytes = ports.uploads.read(import, span.start, span.end).await?;
    if (bytes.len() as u64) < span.end - span.start {
        return Err(StoreError::Invalid(format!(
            "the import's file ends before byte {} of the chunk's rows",
            span.end
        )));
    }
    let now = ports.clock.now();
    Ok(read_rows(format, columns.as_deref(), span, &bytes)
        .into_iter()
        .map(|(line, row)| {
            let location = row.and_then(|r| r.into_location(job.brand_id, now));
            (line, location)
        })
        .collect())
}

/// Applies rows (one slice of a chunk's valid rows).
pub async fn apply_rows(
    ports: &Ports,
    job: &Job,
    rows: &[(u64, Location)],
) -> StoreResult<Vec<ImportedRow>> {
    let mut outcomes = Vec::with_capacity(rows.len());
    for (line, location) in rows {
        let mark = ImportMark {
            job: job.id,
            line: *line,
            outcome: RowOutcome::Created,
        };
        outcomes.push(ports.location_imports.import_row(location, mark).await?);
    }
    Ok(outcomes)
}

/// What became of one row of a chunk.
enum RowEnd<'a> {
    Applied(ImportedRow),
    Invalid(String),
    GivenUp(&'a str, u32),
    Skipped,
}

/// The tally of a chunk's rows, in line order.
fn tally_lines(mut rows: Vec<(u64, RowEnd<'_>)>) -> ChunkTally {
    rows.sort_by_key(|(line, _)| *line);
    let mut tally = ChunkTally::with_capacity(rows.len());
    for (line, end) in rows {
        match end {
            RowEnd::Applied(ImportedRow {
                outcome: RowOutcome::Duplicate { first_line },
                ..
            }) => tally.fail(
                Counter::Invalid,
                Failure::of_line(
                    line,
                    format!(
                        "externalId is the same as line {first_line}'s: a file names a store once"
                    ),
                    1,
                ),
            ),
            RowEnd::Applied(row) => tally.push_row(
                line,
                Some(row.location),
                Outcome::Row(row.outcome).counter(),
            ),
            RowEnd::Invalid(reason) => {
                tally.fail(Counter::Invalid, Failure::of_line(line, reason, 1))
            }
            RowEnd::GivenUp(reason, attempts) => tally.fail(
                Counter::Failed,
                Failure::of_line(line, reason.to_owned(), attempts),
            ),
            RowEnd::Skipped => tally.push_row(line, None, Counter::Cancelled),
        }
    }
    tally
}

/// The tally of a chunk's rows: `done` the outcomes of its valid rows, `invalid` the reasons
/// of the others.
pub fn tally_rows(done: Vec<(u64, ImportedRow)>, invalid: Vec<(u64, String)>) -> ChunkTally {
    let rows = done
        .into_iter()
        .map(|(line, row)| (line, RowEnd::Applied(row)))
        .chain(
            invalid
                .into_iter()
                .map(|(line, reason)| (line, RowEnd::Invalid(reason))),
        )
        .collect();
    tally_lines(rows)
}

/// Accounts an import chunk of rows that was not (fully) done: a row the store shows this
/// job applied counts as what it did, an invalid row as invalid (reading it again says the
/// same), the rest as failed (given up) or cancelled (skipped).
pub async fn account_unfinished_rows(
    ports: &Ports,
    job: &Job,
    span: &RowSpan,
    how: Unfinished<'_>,
) -> StoreResult<ChunkTally> {
    let rows = match rows_of(ports, job, span).await {
        Ok(rows) => rows,
        // The file is gone (a chunk of a job that ended long ago): nothing of it can be told
        // but that its rows were not applied.
        Err(StoreError::Invalid(_)) if matches!(how, Unfinished::Skipped) => {
            let mut tally = ChunkTally::with_capacity(span.rows as usize);
            for _ in 0..span.rows {
                tally.push_unknown(Counter::Cancelled);
            }
            return Ok(tally);
        }
        Err(e) => return Err(e),
    };
    let mut ends = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let location = match row {
            Ok(location) => location,
            Err(reason) => {
                ends.push((line, RowEnd::Invalid(reason)));
                continue;
            }
        };
        let external_id = location.external_id.as_deref().unwrap_or_default();
        let found = ports
            .catalog
            .find_by_external_id(job.brand_id, external_id)
            .await?;
        let seen = match found {
            Some(found) => ports
                .location_imports
                .import_marks(&[found.id])
                .await?
                .pop()
                .flatten()
                .and_then(|m| m.seen_by(job.id, line))
                .map(|outcome| ImportedRow {
                    location: found.id,
                    outcome,
                }),
            None => None,
        };
        let end = match (seen, how) {
            (Some(row), _) => RowEnd::Applied(row),
            (None, Unfinished::GivenUp { reason, attempts }) => RowEnd::GivenUp(reason, attempts),
            (None, Unfinished::Skipped) => RowEnd::Skipped,
        };
        ends.push((line, end));
    }
    Ok(tally_lines(ends))
}

/// Accounts a chunk of locations to close that was not (fully) done: those this job closed
/// count as closed, the rest as failed (given up) or cancelled (skipped).
pub async fn account_unfinished_closes(
    ports: &Ports,
    job: &Job,
    ids: &[LocationId],
    how: Unfinished<'_>,
) -> StoreResult<ChunkTally> {
    let marks = ports.location_imports.import_marks(ids).await?;
    let mut tally = ChunkTally::with_capacity(ids.len());
    for (id, mark) in ids.iter().zip(marks) {
        let closed_here = mark.is_some_and(|m| m.job == job.id && m.outcome == RowOutcome::Closed);
        match how {
            _ if closed_here => tally.push(*id, Counter::Closed),
            Unfinished::GivenUp { reason, attempts } => tally.fail(
                Counter::Failed,
                Failure::of_location(*id, reason.to_owned(), attempts),
            ),
            Unfinished::Skipped => tally.push(*id, Counter::Cancelled),
        }
    }
    Ok(tally)
}
