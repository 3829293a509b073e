//! Imports: a file of a brand's stores (CSV or NDJSON), uploaded once, applied as a job of
//! upserts by external id. What an import is, how a file's rows are found and read, and what
//! a row may hold. Pure, no IO: the file's bytes come from the `Uploads` port.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::text::{checked_tags, checked_text};
use super::{
    BrandId, Country, DomainError, ImportId, JobId, Location, LocationAttributes, LocationId,
    LocationStatus, Upserted, MAX_ATTRIBUTE_LEN, MAX_EXTERNAL_ID_LEN,
};

/// Most characters of an address (the API's rule).
pub const MAX_ADDRESS_LEN: usize = 500;
/// Most bytes of one row: a longer one cannot be told apart from a file that is not rows.
pub const MAX_ROW_BYTES: usize = 64 * 1024;
/// Bytes fanout reads at once to find a page's rows.
pub const READ_WINDOW: u64 = 4 * 1024 * 1024;

/// How the file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// A header row, then one store a row; `tags` separated by `;`.
    Csv,
    /// One JSON object a line, with the same field names (`tags` an array).
    Ndjson,
}

impl ImportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Csv => "csv",
            ImportFormat::Ndjson => "ndjson",
        }
    }
}

/// An upload of a file of stores and, once the file has arrived, the job that applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Import {
    pub id: ImportId,
    pub brand_id: BrandId,
    pub format: ImportFormat,
    /// Close the brand's active locations the file does not name.
    pub close_missing: bool,
    pub created_at: DateTime<Utc>,
    /// When the upload URL stops working (if the file has not arrived by then).
    pub expires_at: DateTime<Utc>,
    /// The job the file's arrival starts: chosen up front, so a replayed start makes it once.
    pub job_id: JobId,
    /// When the file arrived and the job was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// SHA-256 (hex) of the secret in an upload URL the server itself serves (the embedded
    /// backend); `None` where the file goes to an object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// Who asked for it (the token's `sub`), for the job's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// Where an import is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ImportState {
    /// Waiting for the file.
    Waiting,
    /// The file arrived; its job runs (or ran).
    Started,
    /// The upload URL expired before the file arrived.
    Expired,
}

impl Import {
    pub fn state(&self, now: DateTime<Utc>) -> ImportState {
        if self.started_at.is_some() {
            ImportState::Started
        } else if now >= self.expires_at {
            ImportState::Expired
        } else {
            ImportState::Waiting
        }
    }

    /// The object key (or file name) its file is stored under.
    pub fn file_key(id: ImportId) -> String {
        format!("imports/{id}")
    }
}

impl ImportId {
    pub fn new_v7() -> Self {
        ImportId::from_uuid(uuid::Uuid::now_v7())
    }

    /// The import whose file is stored under `key` (`Import::file_key`).
    pub fn from_file_key(key: &str) -> Option<Self> {
        key.strip_prefix("imports/")?.parse().ok()
    }
}

/// What applying one row (or closing one missing store) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowOutcome {
    Created,
    Updated,
    Unchanged,
    /// Closed because the file did not name it (`closeMissing`).
    Closed,
    /// An earlier row of the file (this line) has the same external id: this one is invalid.
    Duplicate {
        first_line: u64,
    },
    /// Nothing to do: the location is gone, or no longer one to close.
    Gone,
}

/// What an upsert by external id that carries an import's mark did: what any upsert does, or
/// nothing, the location carrying a mark of the same import already (what it says of the
/// row: `ImportMark::seen_by`). The one upsert both backends make, marked or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkedUpsert {
    Done(Box<Upserted>),
    Seen(LocationId, RowOutcome),
}

/// What an import's row did, and to which location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportedRow {
    pub location: LocationId,
    pub outcome: RowOutcome,
}

impl MarkedUpsert {
    /// How the import counts it.
    pub fn row_outcome(&self) -> RowOutcome {
        match self {
            MarkedUpsert::Done(done) => match **done {
                Upserted::Created(_) => RowOutcome::Created,
                Upserted::Updated(_) => RowOutcome::Updated,
                Upserted::Unchanged(_) => RowOutcome::Unchanged,
            },
            MarkedUpsert::Seen(_, outcome) => *outcome,
        }
    }

    /// The row's outcome and the location it was applied to.
    pub fn imported_row(&self) -> ImportedRow {
        let location = match self {
            MarkedUpsert::Done(done) => done.location().id,
            MarkedUpsert::Seen(id, _) => *id,
        };
        ImportedRow {
            location,
            outcome: self.row_outcome(),
        }
    }

    /// The upsert of an unmarked write (which sees no mark).
    pub fn unmarked(self) -> Result<Upserted, DomainError> {
        match self {
            MarkedUpsert::Done(upserted) => Ok(*upserted),
            MarkedUpsert::Seen(..) => Err(DomainError::Corrupt(
                "an upsert without an import's mark saw one".to_owned(),
            )),
        }
    }
}

/// What an import wrote on a location, in the same write: which job, for which line (0 for a
/// closing) and with what outcome. A replayed row finds it and answers with the outcome
/// recorded; a second row of the same external id finds another line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportMark {
    pub job: JobId,
    pub line: u64,
    pub outcome: RowOutcome,
}

impl ImportMark {
    pub fn to_attr(&self) -> String {
        let outcome = match self.outcome {
            RowOutcome::Created => "created",
            RowOutcome::Updated => "updated",
            RowOutcome::Unchanged => "unchanged",
            RowOutcome::Closed => "closed",
            // Never written: a duplicate changes nothing; nor does a location that is gone.
            RowOutcome::Duplicate { .. } | RowOutcome::Gone => "none",
        };
        format!("{}/{}/{outcome}", self.job, self.line)
    }

    pub fn from_attr(s: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::Corrupt(format!("import mark '{s}' does not read"));
        let mut parts = s.split('/');
        let (Some(job), Some(line), Some(outcome), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let outcome = match outcome {
            "created" => RowOutcome::Created,
            "updated" => RowOutcome::Updated,
            "unchanged" => RowOutcome::Unchanged,
            "closed" => RowOutcome::Closed,
            _ => return Err(bad()),
        };
        Ok(ImportMark {
            job: job.parse().map_err(|_| bad())?,
            line: line.parse().map_err(|_| bad())?,
            outcome,
        })
    }

    /// What a row at `line` of `job` makes of a location carrying this mark: the outcome
    /// recorded (a replay of the same row), a duplicate (another row of the same file), or
    /// nothing (another import's mark: the row is to be applied).
    pub fn seen_by(&self, job: JobId, line: u64) -> Option<RowOutcome> {
        if self.job != job {
            None
        } else if self.line == line {
            Some(self.outcome)
        } else {
            Some(RowOutcome::Duplicate {
                first_line: self.line,
            })
        }
    }
}

/// A file's columns (CSV) and field names (NDJSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    ExternalId,
    Name,
    Address,
    City,
    Region,
    Postcode,
    Country,
    Tags,
    Status,
}

impl Column {
    pub const ALL: [Column; 9] = [
        Column::ExternalId,
        Column::Name,
        Column::Address,
        Column::City,
        Column::Region,
        Column::Postcode,
        Column::Country,
        Column::Tags,
        Column::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Column::ExternalId => "externalId",
            Column::Name => "name",
            Column::Address => "address",
            Column::City => "city",
            Column::Region => "region",
            Column::Postcode => "postcode",
            Column::Country => "country",
            Column::Tags => "tags",
            Column::Status => "status",
        }
    }

    fn named(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The columns a CSV header names, in order: each known, none twice, `externalId` and
/// `address` among them. The error says what is wrong with the file.
pub fn csv_columns(header: &[String]) -> Result<Vec<Column>, String> {
    let known = || {
        Column::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut columns = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        // A byte-order mark before the first column is not part of its name.
        let name = if i == 0 {
            name.trim_start_matches('\u{feff}')
        } else {
            name
        };
        let name = name.trim();
        let column = Column::named(name).ok_or_else(|| {
            format!(
                "the header names an unknown column '{}': a CSV import's header row names \
                 some of {}",
                name.chars().take(40).collect::<String>(),
                known()
            )
        })?;
        if columns.contains(&column) {
            return Err(format!("the header names the column '{name}' twice"));
        }
        columns.push(column);
    }
    for needed in [Column::ExternalId, Column::Address] {
        if !columns.contains(&needed) {
            return Err(format!(
                "the header has no '{}' column: a CSV import's header row names some of {} \
                 (externalId and address among them)",
                needed.as_str(),
                known()
            ));
        }
    }
    Ok(columns)
}

/// One row as the file gives it, before it is checked (an absent field and an empty CSV cell
/// are both `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRow {
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub postcode: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub status: Option<String>,
}

impl RawRow {
    /// A CSV record's fields under `columns`.
    pub fn from_csv(columns: &[Column], record: &csv::StringRecord) -> Result<Self, String> {
        if record.len() != columns.len() {
            return Err(format!(
                "the row has {} fields; the header names {}",
                record.len(),
                columns.len()
            ));
        }
        let mut row = RawRow::default();
        for (column, value) in columns.iter().zip(record.iter()) {
            if value.is_empty() {
                continue;
            }
            let value = Some(value.to_owned());
            match column {
                Column::ExternalId => row.external_id = value,
                Column::Name => row.name = value,
                Column::Address => row.address = value,
                Column::City => row.city = value,
                Column::Region => row.region = value,
                Column::Postcode => row.postcode = value,
                Column::Country => row.country = value,
                Column::Status => row.status = value,
                Column::Tags => {
                    row.tags = value.map(|v| {
                        v.split(';')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                }
            }
        }
        Ok(row)
    }

    /// An NDJSON line's object.
    pub fn from_json(line: &str) -> Result<Self, String> {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => serde_json::from_str(line).map_err(|e| {
                // serde's message without its "at line 1 column N" tail.
                let text = e.to_string();
                match text.find(" at line ") {
                    Some(at) => text[..at].to_owned(),
                    None => text,
                }
            }),
            Ok(_) => Err("the line is not a JSON object".to_owned()),
            Err(_) => Err("the line is not JSON".to_owned()),
        }
    }

    /// The location the row describes for `brand` (a new id and `now` as its times, which an
    /// existing location keeps its own of), or why the row is invalid.
    pub fn into_location(self, brand: BrandId, now: DateTime<Utc>) -> Result<Location, String> {
        let external_id = self
            .external_id
            .ok_or_else(|| "externalId is missing".to_owned())?;
        let external_id = checked_text("externalId", &external_id, MAX_EXTERNAL_ID_LEN)?;
        let address = self
            .address
            .ok_or_else(|| "address is missing".to_owned())?;
        let address = checked_text("address", &address, MAX_ADDRESS_LEN)?;
        let text = |field: &str, value: Option<String>| {
            value
                .map(|v| checked_text(field, &v, MAX_ATTRIBUTE_LEN))
                .transpose()
        };
        let country = self
            .country
            .map(|c| {
                c.trim()
                    .parse::<Country>()
                    .map_err(|e| format!("country: {e}"))
            })
            .transpose()?;
        let status = match self.status.as_deref().map(str::trim) {
            None => LocationStatus::Active,
            Some("active") => LocationStatus::Active,
            Some("closed") => LocationStatus::Closed,
            Some(other) => {
                return Err(format!(
                    "status '{}' is neither active nor closed",
                    other.chars().take(40).collect::<String>()
                ))
            }
        };
        let mut location = Location::new(LocationId::new_random(), brand, address, now);
        location.external_id = Some(external_id);
        location.status = status;
        location.attributes = LocationAttributes {
            name: text("name", self.name)?,
            city: text("city", self.city)?,
            region: text("region", self.region)?,
            postcode: text("postcode", self.postcode)?,
            country,
            tags: checked_tags("tags", &self.tags.unwrap_or_default())?,
        };
        Ok(location)
    }
}

/// A run of whole rows of a file: its bytes `start..end`, the line the first begins on and
/// (CSV) the columns the header names. What a chunk of an import carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RowSpan {
    pub start: u64,
    pub end: u64,
    pub line: u64,
    pub rows: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// Where in a file the next row begins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilePosition {
    pub offset: u64,
    pub line: u64,
}

impl FilePosition {
    pub const START: FilePosition = FilePosition { offset: 0, line: 1 };
}

/// One row found in a window: its bytes (relative to the file) and the line it begins on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowBounds {
    pub start: u64,
    pub end: u64,
    pub line: u64,
}

/// The rows found in a window of a file read from `at`, at most `max_rows`, and where the
/// next row begins. A row the window cuts is left to the next window (unless the window
/// ends the file). Blank lines are no rows.
pub struct FoundRows {
    pub rows: Vec<RowBounds>,
    pub next: FilePosition,
}

/// Finds whole rows in `window` (the file's bytes from `at`; `last` when it ends the file).
/// An error when a row is longer than [`MAX_ROW_BYTES`] (a file that is not one of rows).
pub fn find_rows(
    format: ImportFormat,
    window: &[u8],
    at: &FilePosition,
    last: bool,
    max_rows: usize,
) -> Result<FoundRows, String> {
    let mut rows = Vec::new();
    let mut next = at.clone();
    match format {
        ImportFormat::Ndjson => {
            let mut offset = 0usize;
            let mut line = at.line;
            while rows.len() < max_rows && offset < window.len() {
                let end = match window[offset..].iter().position(|b| *b == b'\n') {
                    Some(i) => offset + i + 1,
                    None if last => window.len(),
                    None => break,
                };
                if window[offset..end].iter().any(|b| !b.is_ascii_whitespace()) {
                    rows.push(RowBounds {
                        start: at.offset + offset as u64,
                        end: at.offset + end as u64,
                        line,
                    });
                }
                offset = end;
                line += 1;
                next = FilePosition {
                    offset: at.offset + offset as u64,
                    line,
                };
            }
        }
        ImportFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(window);
            let mut record = csv::ByteRecord::new();
            let mut lines = LineCounter::default();
            loop {
                if rows.len() >= max_rows {
                    break;
                }
                let read = reader
                    .read_byte_record(&mut record)
                    .map_err(|e| format!("the file does not read as CSV: {e}"))?;
                if !read {
                    break;
                }
                let end = reader.position().byte();
                if !last && end as usize >= window.len() {
                    // Perhaps cut by the window (its end seen only as the window's): the
                    // next window reads it whole.
                    break;
                }
                let from = record.position().map_or(0, |p| p.byte());
                let (start, line) = lines.record_start(window, from as usize);
                rows.push(RowBounds {
                    start: at.offset + start as u64,
                    end: at.offset + end,
                    line: at.line + line,
                });
                next = FilePosition {
                    offset: at.offset + end,
                    line: at.line + lines.before(window, end as usize),
                };
            }
        }
    }
    if rows.is_empty() && !last && window.len() >= MAX_ROW_BYTES {
        return Err(format!(
            "line {} is longer than {} KiB: the file is not one of rows",
            at.line,
            MAX_ROW_BYTES / 1024
        ));
    }
    Ok(FoundRows { rows, next })
}

/// Counts the lines before a position of a buffer, read forward once.
#[derive(Default)]
struct LineCounter {
    upto: usize,
    newlines: u64,
}

impl LineCounter {
    /// Lines that end before `at` (positions only move forward).
    fn before(&mut self, bytes: &[u8], at: usize) -> u64 {
        let at = at.min(bytes.len());
        if at > self.upto {
            self.newlines += bytes[self.upto..at].iter().filter(|b| **b == b'\n').count() as u64;
            self.upto = at;
        }
        self.newlines
    }

    /// Where a record read from `from` really begins (past the blank lines the CSV reader
    /// skipped), and how many lines come before it.
    fn record_start(&mut self, bytes: &[u8], from: usize) -> (usize, u64) {
        let mut start = from.min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\n' | b'\r') {
            start += 1;
        }
        (start, self.before(bytes, start))
    }
}

/// The rows of a span's bytes, each with its line and what it says (or why it is invalid).
pub fn read_rows(
    format: ImportFormat,
    columns: Option<&[Column]>,
    span: &RowSpan,
    bytes: &[u8],
) -> Vec<(u64, Result<RawRow, String>)> {
    let mut rows = Vec::with_capacity(span.rows as usize);
    match format {
        ImportFormat::Ndjson => {
            for (line, text) in (span.line..).zip(bytes.split(|b| *b == b'\n')) {
                if text.iter().any(|b| !b.is_ascii_whitespace()) {
                    let row = std::str::from_utf8(text)
                        .map_err(|_| "the line is not UTF-8".to_owned())
                        .and_then(RawRow::from_json);
                    rows.push((line, row));
                }
            }
        }
        ImportFormat::Csv => {
            let columns = columns.unwrap_or(&[]);
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes);
            let mut record = csv::ByteRecord::new();
            let mut lines = LineCounter::default();
            loop {
                match reader.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let from = record.position().map_or(0, |p| p.byte()) as usize;
                        let (_, line) = lines.record_start(bytes, from);
                        let row = csv::StringRecord::from_byte_record(record.clone())
                            .map_err(|_| "the row is not UTF-8".to_owned())
                            .and_then(|r| RawRow::from_csv(columns, &r));
                        rows.push((span.line + line, row));
                    }
                    Err(e) => {
                        let from = e.position().map_or(0, |p| p.byte()) as usize;
                        let (_, line) = lines.record_start(bytes, from);
                        rows.push((
                            span.line + line,
                            Err(format!("the row does not read as CSV: {e}")),
                        ));
                        break;
                    }
                }
            }
        }
    }
    rows
}

/// The header of a CSV file (its first record, from the file's first bytes), or why the file
/// is not an import's CSV; for NDJSON, whether its first row is an object. Where the rows
/// begin.
pub fn read_header(
    format: ImportFormat,
    first: &[u8],
    last: bool,
) -> Result<(Option<Vec<String>>, FilePosition), String> {
    match format {
        ImportFormat::Ndjson => {
            let found = find_rows(format, first, &FilePosition::START, last, 1)?;
            if let Some(row) = found.rows.first() {
                let text = &first[row.start as usize..row.end as usize];
                let object = std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                    .is_some_and(|v| v.is_object());
                if !object {
                    return Err(format!(
                        "line {} is not a JSON object: the file is not NDJSON",
                        row.line
                    ));
                }
            }
            Ok((None, FilePosition::START))
        }
        ImportFormat::Csv => {
            let found = find_rows(format, first, &FilePosition::START, last, 1)?;
            let Some(row) = found.rows.first() else {
                return Err("the file is empty: a CSV import starts with a header row".to_owned());
            };
            let text = std::str::from_utf8(&first[row.start as usize..row.end as usize])
                .map_err(|_| "the header row is not UTF-8: the file is not CSV".to_owned())?;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(text.as_bytes());
            let header = reader
                .records()
                .next()
                .transpose()
                .map_err(|e| format!("the header row does not read as CSV: {e}"))?
                .map(|r| r.iter().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default();
            csv_columns(&header)?;
            Ok((Some(header), found.next))
        }
    }
}

/// The columns a span names, checked again (a chunk message is input like any other).
pub fn span_columns(format: ImportFormat, span: &RowSpan) -> Result<Option<Vec<Column>>, String> {
    match (format, &span.columns) {
        (ImportFormat::Ndjson, _) => Ok(None),
        (ImportFormat::Csv, Some(header)) => csv_columns(header).map(Some),
        (ImportFormat::Csv, None) => Err("a CSV chunk names no columns".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    const CSV: &str = "externalId,name,address,city,region,postcode,country,tags,status\n\
        s-1,Soho,1 Dean St,London,,W1D,GB,drive-thru;late,active\n\
        \n\
        s-2,,\"2 Long\nRoad\",Leeds,,,GB,,closed\n\
        s-3,,3 High St,,,,XX,,\n";

    #[test]
    fn a_csv_file_reads_as_rows_with_their_lines_and_reasons() {
        let bytes = CSV.as_bytes();
        let (header, from) = read_header(ImportFormat::Csv, bytes, true).unwrap();
        let header = header.unwrap();
        assert_eq!(from.line, 2);
        let found = find_rows(
            ImportFormat::Csv,
            &bytes[from.offset as usize..],
            &from,
            true,
            10,
        )
        .unwrap();
        let lines: Vec<u64> = found.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4, 6]);
        let span = RowSpan {
            start: found.rows[0].start,
            end: found.rows[2].end,
            line: 2,
            rows: 3,
            columns: Some(header),
        };
        let columns = span_columns(ImportFormat::Csv, &span).unwrap();
        let rows = read_rows(
            ImportFormat::Csv,
            columns.as_deref(),
            &span,
            &bytes[span.start as usize..span.end as usize],
        );
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 4, 6]);
        let brand = BrandId::new_random();
        let first = rows[0]
            .1
            .clone()
            .unwrap()
            .into_location(brand, at())
            .unwrap();
        assert_eq!(first.attributes.tags, ["drive-thru", "late"]);
        assert_eq!(first.attributes.region, None);
        // A quoted field may span lines (the row still begins on line 4); an address may not.
        let second = rows[1].1.clone().unwrap().into_location(brand, at());
        assert!(second.unwrap_err().contains("U+000A"));
        let third = rows[2].1.clone().unwrap().into_location(brand, at());
        assert!(third.unwrap_err().contains("country"), "XX is no country");
    }

    #[test]
    fn a_window_leaves_a_cut_row_to_the_next_and_pages_meet_exactly() {
        let bytes = CSV.as_bytes();
        let (_, mut at) = read_header(ImportFormat::Csv, bytes, true).unwrap();
        let mut lines = Vec::new();
        // Windows of 70 bytes (rows of up to 57): rows cross the edges.
        loop {
            let end = (at.offset as usize + 70).min(bytes.len());
            let last = end == bytes.len();
            let found = find_rows(
                ImportFormat::Csv,
                &bytes[at.offset as usize..end],
                &at,
                last,
                1,
            )
            .unwrap();
            if found.rows.is_empty() && last {
                break;
            }
            lines.extend(found.rows.iter().map(|r| r.line));
            assert!(
                found.next.offset > at.offset || last,
                "no progress at {at:?}"
            );
            at = found.next;
        }
        assert_eq!(lines, [2, 4, 6]);
    }

    #[test]
    fn files_that_are_not_an_import_say_why() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(read_header(ImportFormat::Csv, png, true)
            .unwrap_err()
            .contains("not"));
        let unknown = read_header(ImportFormat::Csv, b"externalId,address,colour\n", true);
        assert!(unknown.unwrap_err().contains("unknown column 'colour'"));
        let missing = read_header(ImportFormat::Csv, b"externalId,name\n", true);
        assert!(missing.unwrap_err().contains("no 'address' column"));
        let csv_as_json = read_header(ImportFormat::Ndjson, b"externalId,address\n", true);
        assert!(csv_as_json.unwrap_err().contains("not NDJSON"));
        let long = vec![b'a'; MAX_ROW_BYTES + 1];
        let err = find_rows(ImportFormat::Ndjson, &long, &FilePosition::START, false, 10);
        assert!(err.err().unwrap().contains("longer than 64 KiB"));
    }

    #[test]
    fn ndjson_rows_take_the_same_fields_and_refuse_others() {
        let text = "{\"externalId\":\"a\",\"address\":\"1 A St\",\"tags\":[\"x\"]}\n\n[1]\n{\"externalId\":\"b\",\"address\":\"2\",\"colour\":\"red\"}\n";
        let span = RowSpan {
            start: 0,
            end: text.len() as u64,
            line: 1,
            rows: 3,
            columns: None,
        };
        let rows = read_rows(ImportFormat::Ndjson, None, &span, text.as_bytes());
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3, 4]);
        assert!(rows[0].1.is_ok());
        assert_eq!(
            rows[1].1.clone().unwrap_err(),
            "the line is not a JSON object"
        );
        assert!(rows[2]
            .1
            .clone()
            .unwrap_err()
            .contains("unknown field `colour`"));
    }

    #[test]
    fn marks_round_trip_and_tell_a_replay_from_a_duplicate() {
        let job = JobId::new_v7();
        let mark = ImportMark {
            job,
            line: 7,
            outcome: RowOutcome::Created,
        };
        assert_eq!(ImportMark::from_attr(&mark.to_attr()).unwrap(), mark);
        assert_eq!(mark.seen_by(job, 7), Some(RowOutcome::Created));
        assert_eq!(
            mark.seen_by(job, 9),
            Some(RowOutcome::Duplicate { first_line: 7 })
        );
        assert_eq!(mark.seen_by(JobId::new_v7(), 7), None);
        assert!(ImportMark::from_attr("x/1/created").is_err());
    }
}
