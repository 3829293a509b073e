//! What became of each item of a chunk: the rows of its job's report, from which the chunk's
//! counts and failures follow. The ledger stores them with the chunk (one record per chunk,
//! in the compact form below), so a report costs no write of its own.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{ChunkCounts, DomainError, LocationId};
use crate::ports::Failure;

/// A job counter: what became of one location (or one row of an import's file). Its name is
/// the counter's in `JobView.counters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum Counter {
    Linked,
    AlreadyLinked,
    NotFound,
    Failed,
    Cancelled,
    Unlinked,
    NotLinked,
    Created,
    Updated,
    Unchanged,
    Closed,
    Invalid,
}

impl Counter {
    pub const ALL: [Counter; 12] = [
        Counter::Linked,
        Counter::AlreadyLinked,
        Counter::NotFound,
        Counter::Failed,
        Counter::Cancelled,
        Counter::Unlinked,
        Counter::NotLinked,
        Counter::Created,
        Counter::Updated,
        Counter::Unchanged,
        Counter::Closed,
        Counter::Invalid,
    ];

    /// The counter's name in `JobView.counters` and in a report's `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Linked => "linked",
            Counter::AlreadyLinked => "alreadyLinked",
            Counter::NotFound => "notFound",
            Counter::Failed => "failed",
            Counter::Cancelled => "cancelled",
            Counter::Unlinked => "unlinked",
            Counter::NotLinked => "notLinked",
            Counter::Created => "created",
            Counter::Updated => "updated",
            Counter::Unchanged => "unchanged",
            Counter::Closed => "closed",
            Counter::Invalid => "invalid",
        }
    }

    /// Its code in the stored form (its place in `ALL`).
    fn code(self) -> u8 {
        Counter::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or_default() as u8
    }

    fn of_code(code: u8) -> Option<Counter> {
        Counter::ALL.get(usize::from(code)).copied()
    }
}

impl ChunkCounts {
    /// Counts one more of `counter`.
    pub fn add(&mut self, counter: Counter) {
        let slot = match counter {
            Counter::Linked => &mut self.linked,
            Counter::AlreadyLinked => &mut self.already_linked,
            Counter::NotFound => &mut self.not_found,
            Counter::Failed => &mut self.failed,
            Counter::Cancelled => &mut self.cancelled,
            Counter::Unlinked => &mut self.unlinked,
            Counter::NotLinked => &mut self.not_linked,
            Counter::Created => &mut self.created,
            Counter::Updated => &mut self.updated,
            Counter::Unchanged => &mut self.unchanged,
            Counter::Closed => &mut self.closed,
            Counter::Invalid => &mut self.invalid,
        };
        *slot += 1;
    }
}

/// One item of a chunk: the location (absent for a row of an import's file that names
/// none), the line of the import's file, what became of it and, when it failed or was
/// invalid, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemOutcome {
    pub location: Option<LocationId>,
    pub line: Option<u64>,
    pub counter: Counter,
    pub error: Option<String>,
}

/// What became of each item of a chunk, in the chunk's order, with the failures among them
/// (what `GET /jobs/{id}/failures` lists). The chunk's counts are these outcomes counted,
/// so a report's rows and a job's counters cannot disagree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkTally {
    outcomes: Vec<ItemOutcome>,
    failures: Vec<Failure>,
}

impl ChunkTally {
    pub fn with_capacity(n: usize) -> Self {
        ChunkTally {
            outcomes: Vec::with_capacity(n),
            failures: Vec::new(),
        }
    }

    /// A location's outcome (not a failure: see `fail`).
    pub fn push(&mut self, location: LocationId, counter: Counter) {
        self.outcomes.push(ItemOutcome {
            location: Some(location),
            line: None,
            counter,
            error: None,
        });
    }

    /// A row of an import's file, and the location it was applied to (if it was).
    pub fn push_row(&mut self, line: u64, location: Option<LocationId>, counter: Counter) {
        self.outcomes.push(ItemOutcome {
            location,
            line: Some(line),
            counter,
            error: None,
        });
    }

    /// An item no more is known of than its outcome (a row of a file that is gone).
    pub fn push_unknown(&mut self, counter: Counter) {
        self.outcomes.push(ItemOutcome {
            location: None,
            line: None,
            counter,
            error: None,
        });
    }

    /// A failure: `failed` (or, a row of an import's file, `invalid`), with its reason.
    pub fn fail(&mut self, counter: Counter, failure: Failure) {
        self.outcomes.push(ItemOutcome {
            location: failure.location_id,
            line: failure.line,
            counter,
            error: Some(failure.reason.clone()),
        });
        self.failures.push(failure);
    }

    /// The same outcome for every location of `ids` (a whole chunk cancelled, say).
    pub fn all(ids: &[LocationId], counter: Counter) -> Self {
        let mut tally = ChunkTally::with_capacity(ids.len());
        for id in ids {
            tally.push(*id, counter);
        }
        tally
    }

    pub fn outcomes(&self) -> &[ItemOutcome] {
        &self.outcomes
    }

    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// The chunk's counts: its outcomes counted.
    pub fn counts(&self) -> ChunkCounts {
        let mut counts = ChunkCounts::default();
        for outcome in &self.outcomes {
            counts.add(outcome.counter);
        }
        counts
    }

    /// The outcomes in their stored form (`decode` reads them back).
    pub fn encode(&self) -> Vec<u8> {
        encode(&self.outcomes)
    }
}

/// Version of the stored form.
const FORMAT: u8 = 1;
const HAS_LOCATION: u8 = 0x10;
const HAS_LINE: u8 = 0x20;
const HAS_ERROR: u8 = 0x40;

/// The compact stored form of a chunk's outcomes: a version byte, the distinct error texts
/// (a chunk given up has one reason for all its items), then each outcome as a byte (its
/// counter and which parts follow), the location's 16 bytes, the line and the error's index
/// (LEB128). A linked location takes 17 bytes: a chunk of 100 under 2 KB.
fn encode(outcomes: &[ItemOutcome]) -> Vec<u8> {
    let mut errors: Vec<&str> = Vec::new();
    for outcome in outcomes {
        if let Some(e) = outcome.error.as_deref() {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    let mut out = Vec::with_capacity(2 + outcomes.len() * 17);
    out.push(FORMAT);
    put_varint(&mut out, errors.len() as u64);
    for e in &errors {
        put_varint(&mut out, e.len() as u64);
        out.extend_from_slice(e.as_bytes());
    }
    put_varint(&mut out, outcomes.len() as u64);
    for outcome in outcomes {
        let mut head = outcome.counter.code();
        head |= if outcome.location.is_some() {
            HAS_LOCATION
        } else {
            0
        };
        head |= if outcome.line.is_some() { HAS_LINE } else { 0 };
        head |= if outcome.error.is_some() {
            HAS_ERROR
        } else {
            0
        };
        out.push(head);
        if let Some(id) = outcome.location {
            out.extend_from_slice(id.as_uuid().as_bytes());
        }
        if let Some(line) = outcome.line {
            put_varint(&mut out, line);
        }
        if let Some(e) = outcome.error.as_deref() {
            let index = errors.iter().position(|x| *x == e).unwrap_or_default();
            put_varint(&mut out, index as u64);
        }
    }
    out
}

/// Reads what `ChunkTally::encode` wrote.
pub fn decode_outcomes(bytes: &[u8]) -> Result<Vec<ItemOutcome>, DomainError> {
    let corrupt = |what: &str| DomainError::Corrupt(format!("a chunk's outcomes: {what}"));
    let mut r = Reader { bytes, at: 0 };
    if r.byte().ok_or_else(|| corrupt("empty"))? != FORMAT {
        return Err(corrupt("unknown format"));
    }
    let n_errors = r.varint().ok_or_else(|| corrupt("truncated"))?;
    let mut errors = Vec::new();
    for _ in 0..n_errors {
        let len = r.varint().ok_or_else(|| corrupt("truncated"))? as usize;
        let text = r.take(len).ok_or_else(|| corrupt("truncated error"))?;
        errors.push(String::from_utf8(text.to_vec()).map_err(|_| corrupt("error not UTF-8"))?);
    }
    let n = r.varint().ok_or_else(|| corrupt("truncated"))? as usize;
    let mut outcomes = Vec::with_capacity(n.min(1_024));
    for _ in 0..n {
        let head = r.byte().ok_or_else(|| corrupt("truncated"))?;
        let counter = Counter::of_code(head & 0x0f).ok_or_else(|| corrupt("unknown counter"))?;
        let location = if head & HAS_LOCATION != 0 {
            let raw = r.take(16).ok_or_else(|| corrupt("truncated id"))?;
            let raw: [u8; 16] = raw.try_into().map_err(|_| corrupt("id"))?;
            Some(LocationId::from_uuid(Uuid::from_bytes(raw)))
        } else {
            None
        };
        let line = if head & HAS_LINE != 0 {
            Some(r.varint().ok_or_else(|| corrupt("truncated line"))?)
        } else {
            None
        };
        let error = if head & HAS_ERROR != 0 {
            let index = r.varint().ok_or_else(|| corrupt("truncated"))? as usize;
            Some(
                errors
                    .get(index)
                    .cloned()
                    .ok_or_else(|| corrupt("error index"))?,
            )
        } else {
            None
        };
        outcomes.push(ItemOutcome {
            location,
            line,
            counter,
            error,
        });
    }
    if r.at != bytes.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(outcomes)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

/// One row of a job's report (`GET /jobs/{id}/report`): one location (or row of an import's
/// file) and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    /// The location (absent for a row of an import's file that made none).
    pub location_id: Option<LocationId>,
    /// The location's external id, as it is now.
    pub external_id: Option<String>,
    /// The job counter it counts in.
    pub outcome: Counter,
    /// Why it failed, or why the row is invalid.
    pub error: Option<String>,
    /// When its chunk was accounted.
    pub at: DateTime<Utc>,
    /// An import's rows: the line of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl ReportRow {
    /// The CSV header; an import's report adds `line`.
    pub fn csv_header(with_line: bool) -> &'static str {
        if with_line {
            "locationId,externalId,outcome,error,at,line\n"
        } else {
            "locationId,externalId,outcome,error,at\n"
        }
    }

    /// The row as a CSV line (RFC 4180 quoting).
    pub fn csv(&self, with_line: bool) -> String {
        let mut line = format!(
            "{},{},{},{},{}",
            self.location_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            csv_field(self.external_id.as_deref().unwrap_or_default()),
            self.outcome.as_str(),
            csv_field(self.error.as_deref().unwrap_or_default()),
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        if with_line {
            line.push(',');
            if let Some(n) = self.line {
                line.push_str(&n.to_string());
            }
        }
        line.push('\n');
        line
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_compactly_and_count_as_the_counters() {
        let mut tally = ChunkTally::default();
        let ids: Vec<LocationId> = (0..100).map(|_| LocationId::new_random()).collect();
        for id in &ids[..95] {
            tally.push(*id, Counter::Linked);
        }
        for id in &ids[95..] {
            tally.fail(
                Counter::Failed,
                Failure::of_location(*id, "throttled, 8 attempts".into(), 8),
            );
        }
        tally.fail(
            Counter::Invalid,
            Failure::of_line(300, "country 'XX', \"odd\"".into(), 1),
        );
        tally.push_row(301, Some(ids[0]), Counter::Created);
        let bytes = tally.encode();
        // 17 bytes a location, one copy of the shared reason.
        assert!(bytes.len() < 100 * 17 + 100, "{} bytes", bytes.len());
        assert_eq!(decode_outcomes(&bytes).unwrap(), tally.outcomes());
        let counts = tally.counts();
        assert_eq!(
            (counts.linked, counts.failed, counts.invalid, counts.created),
            (95, 5, 1, 1)
        );
        assert_eq!(counts.size(), 102);
        assert_eq!(tally.failures().len(), 6);
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(decode_outcomes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_counter_adds_to_its_own_count_and_names_it_as_the_view_does() {
        for counter in Counter::ALL {
            let mut counts = ChunkCounts::default();
            counts.add(counter);
            let json = serde_json::to_value(counts).unwrap();
            assert_eq!(json[counter.as_str()], 1, "{counter:?}");
            assert_eq!(counts.size(), 1);
            assert_eq!(Counter::of_code(counter.code()), Some(counter));
        }
    }

    #[test]
    fn csv_rows_quote_what_needs_it() {
        let row = ReportRow {
            location_id: None,
            external_id: Some("S-1,\"x\"".into()),
            outcome: Counter::Invalid,
            error: Some("no address".into()),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            line: Some(7),
        };
        assert_eq!(
            row.csv(true),
            ",\"S-1,\"\"x\"\"\",invalid,no address,2023-11-14T22:13:20.000Z,7\n"
        );
    }
}
