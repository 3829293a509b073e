//! Queue message bodies: the fanout trigger and the chunk of location ids.

use serde::{Deserialize, Serialize};

use super::{BrandId, ChunkSeq, DomainError, JobId, LocationId, OfferId, RowSpan};

/// Most ids in one chunk message: ~39 KB of JSON, far below the 256 KiB SQS limit. A
/// chunk is one ledger transaction whatever its size, its marker carrying every location's
/// outcome (17 bytes) and each failure's reason: at 1,000 locations all failed, about a
/// quarter of DynamoDB's 400 KB item.
pub const MAX_CHUNK_SIZE: usize = 1_000;

/// Ids per chunk unless `CHUNK_SIZE` says otherwise.
pub const DEFAULT_CHUNK_SIZE: usize = 100;

/// SQS message size limit, enforced by us whatever the queue would accept.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Tells fanout to (continue to) page a job's brand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FanoutMessage {
    pub job_id: JobId,
}

/// One chunk of a job's work, for the worker: location ids, or (an import) a run of rows of
/// its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkMessage {
    pub job_id: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    pub brand_id: BrandId,
    pub seq: ChunkSeq,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_ids: Vec<LocationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowSpan>,
}

/// Most rows in one chunk of an import (each row is its own write; a larger `CHUNK_SIZE`
/// still cuts an import's file in runs of this many rows).
pub const MAX_CHUNK_ROWS: u32 = 100;

impl ChunkMessage {
    /// Parses and checks a message body; the error says what is wrong with it.
    pub fn decode(body: &str) -> Result<Self, DomainError> {
        let msg: ChunkMessage = serde_json::from_str(body)
            .map_err(|e| DomainError::BadMessage(format!("not a chunk message: {e}")))?;
        match &msg.rows {
            Some(rows) if !msg.location_ids.is_empty() => Err(DomainError::BadMessage(format!(
                "a chunk holds location ids or rows, this one both ({} ids, rows from line {})",
                msg.location_ids.len(),
                rows.line
            ))),
            Some(rows)
                if rows.rows == 0 || rows.rows > MAX_CHUNK_ROWS || rows.end <= rows.start =>
            {
                Err(DomainError::BadMessage(format!(
                    "a chunk holds 1..={MAX_CHUNK_ROWS} rows of a non-empty span, this one {} \
                     rows of bytes {}..{}",
                    rows.rows, rows.start, rows.end
                )))
            }
            Some(_) => Ok(msg),
            None if msg.location_ids.is_empty() || msg.location_ids.len() > MAX_CHUNK_SIZE => {
                Err(DomainError::BadMessage(format!(
                    "a chunk holds 1..={MAX_CHUNK_SIZE} location ids, this one {}",
                    msg.location_ids.len()
                )))
            }
            None => Ok(msg),
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl FanoutMessage {
    pub fn decode(body: &str) -> Result<Self, DomainError> {
        serde_json::from_str(body)
            .map_err(|e| DomainError::BadMessage(format!("not a fanout message: {e}")))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> ChunkMessage {
        ChunkMessage {
            job_id: JobId::new_v7(),
            offer_id: Some(OfferId::new_random()),
            brand_id: BrandId::new_random(),
            seq: ChunkSeq(3),
            location_ids: (0..n).map(|_| LocationId::new_random()).collect(),
            rows: None,
        }
    }

    #[test]
    fn a_chunk_message_round_trips() {
        let msg = chunk(100);
        assert_eq!(ChunkMessage::decode(&msg.encode()).unwrap(), msg);
        assert!(msg.encode().len() < MAX_MESSAGE_BYTES / 32);
        let largest = chunk(MAX_CHUNK_SIZE);
        assert_eq!(ChunkMessage::decode(&largest.encode()).unwrap(), largest);
        assert!(largest.encode().len() < MAX_MESSAGE_BYTES / 4);
    }

    #[test]
    fn empty_or_oversized_chunks_are_rejected() {
        assert!(ChunkMessage::decode(&chunk(0).encode()).is_err());
        assert!(ChunkMessage::decode(&chunk(MAX_CHUNK_SIZE + 1).encode()).is_err());
        let span = |rows| RowSpan {
            start: 10,
            end: 90,
            line: 2,
            rows,
            columns: None,
        };
        let rows = |n| ChunkMessage {
            rows: Some(span(n)),
            ..chunk(0)
        };
        let hundred = rows(100);
        assert_eq!(ChunkMessage::decode(&hundred.encode()).unwrap(), hundred);
        assert!(ChunkMessage::decode(&rows(0).encode()).is_err());
        assert!(ChunkMessage::decode(&rows(101).encode()).is_err());
        let both = ChunkMessage {
            rows: Some(span(3)),
            ..chunk(2)
        };
        assert!(ChunkMessage::decode(&both.encode())
            .unwrap_err()
            .to_string()
            .contains("both"));
        // A message of an earlier release (an offer always named) still reads.
        let old = r#"{"jobId":"0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011","offerId":"0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1012","brandId":"0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1013","seq":4,"locationIds":["0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1014"]}"#;
        assert_eq!(ChunkMessage::decode(old).unwrap().location_ids.len(), 1);
    }

    #[test]
    fn garbage_is_a_bad_message_not_a_panic() {
        let err = ChunkMessage::decode("{\"jobId\": 3").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("bad message: not a chunk message"));
    }
}
