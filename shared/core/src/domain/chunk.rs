//! Queue message bodies: the fanout trigger and the chunk of location ids.

use serde::{Deserialize, Serialize};

use super::{BrandId, ChunkSeq, DomainError, JobId, LocationId, OfferId};

/// Most ids in one chunk message: ~4 KB of JSON, far below the 256 KiB SQS limit,
/// and one chunk stays one ledger transaction.
pub const MAX_CHUNK_SIZE: usize = 100;

/// SQS message size limit, enforced by us whatever the queue would accept.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Tells fanout to (continue to) page a job's brand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FanoutMessage {
    pub job_id: JobId,
}

/// One chunk of a job's locations, for the worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkMessage {
    pub job_id: JobId,
    pub offer_id: OfferId,
    pub brand_id: BrandId,
    pub seq: ChunkSeq,
    pub location_ids: Vec<LocationId>,
}

impl ChunkMessage {
    /// Parses and checks a message body; the error says what is wrong with it.
    pub fn decode(body: &str) -> Result<Self, DomainError> {
        let msg: ChunkMessage = serde_json::from_str(body)
            .map_err(|e| DomainError::BadMessage(format!("not a chunk message: {e}")))?;
        if msg.location_ids.is_empty() || msg.location_ids.len() > MAX_CHUNK_SIZE {
            return Err(DomainError::BadMessage(format!(
                "a chunk holds 1..={MAX_CHUNK_SIZE} location ids, this one {}",
                msg.location_ids.len()
            )));
        }
        Ok(msg)
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
            offer_id: OfferId::new_random(),
            brand_id: BrandId::new_random(),
            seq: ChunkSeq(3),
            location_ids: (0..n).map(|_| LocationId::new_random()).collect(),
        }
    }

    #[test]
    fn a_chunk_message_round_trips() {
        let msg = chunk(100);
        assert_eq!(ChunkMessage::decode(&msg.encode()).unwrap(), msg);
        assert!(msg.encode().len() < MAX_MESSAGE_BYTES / 32);
    }

    #[test]
    fn empty_or_oversized_chunks_are_rejected() {
        assert!(ChunkMessage::decode(&chunk(0).encode()).is_err());
        assert!(ChunkMessage::decode(&chunk(101).encode()).is_err());
    }

    #[test]
    fn garbage_is_a_bad_message_not_a_panic() {
        let err = ChunkMessage::decode("{\"jobId\": 3").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("bad message: not a chunk message"));
    }
}
