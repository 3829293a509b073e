//! Imports on the embedded backend: the rows an import applies (one writer transaction a
//! row: find, compare, write with the mark), its records, and its files (a directory beside
//! the database, `<db>.uploads/`).

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::catalog::{find_external, insert_location, read_location, write_change};
use crate::domain::{
    Import, ImportId, ImportMark, ImportedRow, JobId, Location, LocationChange, LocationId,
    LocationStatus, MarkedUpsert, RowOutcome, Upserted,
};
use crate::error::{StoreError, StoreResult};
use crate::ports::{ByteStream, Imports, LocationImports, Uploads};
use crate::{from_ms, sql, to_ms, EmbeddedStore};

fn mark_of(conn: &Connection, id: LocationId) -> StoreResult<Option<ImportMark>> {
    let mark: Option<Option<String>> = conn
        .prepare_cached("SELECT imported_by FROM locations WHERE id = ?1")
        .map_err(sql)?
        .query_row([id.to_string()], |row| row.get(0))
        .optional()
        .map_err(sql)?;
    Ok(mark
        .flatten()
        .map(|m| ImportMark::from_attr(&m))
        .transpose()?)
}

fn put_mark(conn: &Connection, id: LocationId, mark: ImportMark) -> StoreResult<()> {
    conn.prepare_cached("UPDATE locations SET imported_by = ?2 WHERE id = ?1")
        .map_err(sql)?
        .execute(params![id.to_string(), mark.to_attr()])
        .map_err(sql)?;
    Ok(())
}

/// The upsert by external id, inside the caller's writer unit: creates the brand's location
/// with `location.external_id`, or makes the existing one's address, attributes and status
/// exactly `location`'s (`updatedAt` moves only on a change; closing leaves every offer).
/// With an import's `mark`, the mark is written with it (alone on an unchanged location),
/// and a location carrying a mark of the same import answers from it, unwritten.
pub(crate) fn upsert_in(
    conn: &Connection,
    location: &Location,
    now: DateTime<Utc>,
    mark: Option<ImportMark>,
) -> StoreResult<MarkedUpsert> {
    let Some(external_id) = location.external_id.as_deref() else {
        return Err(StoreError::Invalid("an upsert needs an external id".into()));
    };
    let upserted = match find_external(conn, location.brand_id, external_id)? {
        None => {
            if !insert_location(conn, location)? {
                return Err(StoreError::Conflict(format!(
                    "location {} already exists",
                    location.id
                )));
            }
            Upserted::Created(location.clone())
        }
        Some(id) => {
            let seen = match mark {
                Some(mark) => mark_of(conn, id)?.and_then(|m| m.seen_by(mark.job, mark.line)),
                None => None,
            };
            if let Some(seen) = seen {
                return Ok(MarkedUpsert::Seen(id, seen));
            }
            let existing = read_location(conn, id)?
                .ok_or_else(|| StoreError::internal(format!("location {id} vanished")))?;
            match existing.changed(&LocationChange::replacing_with(location), now) {
                Some(changed) => Upserted::Updated(write_change(conn, &existing, changed)?),
                None => Upserted::Unchanged(existing),
            }
        }
    };
    let upserted = MarkedUpsert::Done(Box::new(upserted));
    if let (Some(mark), MarkedUpsert::Done(done)) = (mark, &upserted) {
        let outcome = upserted.row_outcome();
        put_mark(conn, done.location().id, ImportMark { outcome, ..mark })?;
    }
    Ok(upserted)
}

#[async_trait]
impl LocationImports for EmbeddedStore {
    async fn import_row(&self, location: &Location, mark: ImportMark) -> StoreResult<ImportedRow> {
        let location = location.clone();
        let now = self.clock().now();
        // One writer unit finds, compares and writes (the mark with the change).
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let upserted = upsert_in(&tx, &location, now, Some(mark))?;
            tx.commit().map_err(sql)?;
            Ok(upserted.imported_row())
        })
        .await
    }

    async fn import_marks(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<ImportMark>>> {
        let ids = ids.to_vec();
        self.read(move |conn| ids.iter().map(|id| mark_of(conn, *id)).collect())
            .await
    }

    async fn close_unimported(
        &self,
        job: JobId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<RowOutcome>> {
        let ids = ids.to_vec();
        let now = self.clock().now();
        let closing = LocationChange {
            status: Some(LocationStatus::Closed),
            ..Default::default()
        };
        let closed = ImportMark {
            job,
            line: 0,
            outcome: RowOutcome::Closed,
        };
        self.write(move |conn| {
            let tx = conn.savepoint().map_err(sql)?;
            let mut outcomes = Vec::with_capacity(ids.len());
            for id in ids {
                let outcome = match mark_of(&tx, id)? {
                    Some(mark) if mark == closed => RowOutcome::Closed,
                    // Named by the file after all.
                    Some(mark) if mark.job == job => RowOutcome::Gone,
                    _ => match read_location(&tx, id)? {
                        Some(location) => match location.changed(&closing, now) {
                            Some(changed) => {
                                write_change(&tx, &location, changed)?;
                                put_mark(&tx, id, closed)?;
                                RowOutcome::Closed
                            }
                            // Closed already.
                            None => RowOutcome::Gone,
                        },
                        None => RowOutcome::Gone,
                    },
                };
                outcomes.push(outcome);
            }
            tx.commit().map_err(sql)?;
            Ok(outcomes)
        })
        .await
    }
}

#[async_trait]
impl Imports for EmbeddedStore {
    async fn create_import(&self, import: &Import) -> StoreResult<()> {
        let body = serde_json::to_string(&Import {
            started_at: None,
            ..import.clone()
        })
        .map_err(|e| StoreError::internal(e.to_string()))?;
        let id = import.id.to_string();
        self.write(move |conn| {
            conn.prepare_cached("INSERT INTO imports (id, body) VALUES (?1, ?2)")
                .map_err(sql)?
                .execute(params![id, body])
                .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn get_import(&self, id: ImportId) -> StoreResult<Option<Import>> {
        self.read(move |conn| read_import(conn, id)).await
    }

    async fn mark_started(&self, id: ImportId, at: DateTime<Utc>) -> StoreResult<Option<Import>> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE imports SET started_at = coalesce(started_at, ?2) WHERE id = ?1",
            )
            .map_err(sql)?
            .execute(params![id.to_string(), to_ms(at)])
            .map_err(sql)?;
            read_import(conn, id)
        })
        .await
    }
}

fn read_import(conn: &Connection, id: ImportId) -> StoreResult<Option<Import>> {
    let row: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT body, started_at FROM imports WHERE id = ?1")
        .map_err(sql)?
        .query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map_err(sql)?;
    row.map(|(body, started)| {
        let mut import: Import = serde_json::from_str(&body)
            .map_err(|e| StoreError::internal(format!("import {id} does not read: {e}")))?;
        import.started_at = started.map(from_ms);
        Ok(import)
    })
    .transpose()
}

/// Imports' files in a directory: each written to a temporary name and renamed whole once
/// complete, so a reader never sees half a file.
pub struct DirUploads {
    dir: PathBuf,
}

impl DirUploads {
    /// Files beside the database at `db`: `<db>.uploads/`.
    pub fn beside(db: &std::path::Path) -> Self {
        let mut dir = db.as_os_str().to_owned();
        dir.push(".uploads");
        DirUploads { dir: dir.into() }
    }

    fn path(&self, id: ImportId) -> PathBuf {
        self.dir.join(id.to_string())
    }
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl Uploads for DirUploads {
    /// This server's own upload route, with the import's secret.
    async fn upload_url(&self, import: &Import, token: Option<&str>) -> StoreResult<String> {
        let token = token.ok_or_else(|| {
            StoreError::internal("the embedded upload URL needs the import's secret")
        })?;
        Ok(format!("/imports/{}/file?token={token}", import.id))
    }

    async fn receive(&self, id: ImportId, mut body: ByteStream, limit: u64) -> StoreResult<u64> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io("creating the uploads directory", e))?;
        let partial = self
            .dir
            .join(format!("{id}.{}.partial", rand::random::<u64>()));
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| io("creating the upload's file", e))?;
        let mut size = 0u64;
        let result: StoreResult<()> = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| {
                    StoreError::Invalid(format!("the upload broke off after {size} bytes: {e}"))
                })?;
                size += piece.len() as u64;
                if size > limit {
                    return Err(StoreError::Invalid(format!(
                        "the file is larger than {limit} bytes, the most an import takes: split it"
                    )));
                }
                file.write_all(&piece)
                    .await
                    .map_err(|e| io("writing the upload", e))?;
            }
            file.sync_all()
                .await
                .map_err(|e| io("writing the upload", e))
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        // Linked, not renamed: a second upload never replaces a file a job reads.
        let kept = tokio::fs::hard_link(&partial, self.path(id)).await;
        let _ = tokio::fs::remove_file(&partial).await;
        match kept {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StoreError::Conflict(
                format!("import {id}'s file has arrived already"),
            )),
            Err(e) => Err(io("keeping the upload", e)),
        }
    }

    /// The route keeps one file only (`receive`): it is the import's as it lands.
    async fn take(&self, _id: ImportId) -> StoreResult<()> {
        Ok(())
    }

    async fn size(&self, id: ImportId) -> StoreResult<Option<u64>> {
        match tokio::fs::metadata(self.path(id)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading the upload's size", e)),
        }
    }

    async fn read(&self, id: ImportId, start: u64, end: u64) -> StoreResult<Vec<u8>> {
        let mut file = match tokio::fs::File::open(self.path(id)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Invalid(format!(
                    "import {id}'s file is not there"
                )))
            }
            Err(e) => return Err(io("opening the upload", e)),
        };
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| io("reading the upload", e))?;
        let mut bytes = Vec::with_capacity(end.saturating_sub(start) as usize);
        file.take(end.saturating_sub(start))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| io("reading the upload", e))?;
        Ok(bytes)
    }

    async fn delete(&self, id: ImportId) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing the upload", e)),
        }
    }
}
