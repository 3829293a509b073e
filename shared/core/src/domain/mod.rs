//! The domain: ids, jobs, events, catalog records and message bodies. Pure, no IO.

mod catalog;
mod chunk;
mod event;
mod ids;
mod import;
mod job;
mod report;
mod spec;
mod text;
mod webhook;

pub use catalog::{
    AttributesChange, Country, Drift, DriftWatch, Link, LinkOutcome, LinkedBy, Location,
    LocationAttributes, LocationChange, LocationFilter, LocationStatus, Offer, OfferRule,
    OfferSchedule, Upserted, WatchedRule, MAX_ATTRIBUTE_LEN, MAX_EXTERNAL_ID_LEN, MAX_TAGS,
    MAX_TAG_LEN,
};
pub use chunk::{
    ChunkMessage, FanoutMessage, DEFAULT_CHUNK_SIZE, MAX_CHUNK_ROWS, MAX_CHUNK_SIZE,
    MAX_MESSAGE_BYTES,
};
pub use event::{Event, EventKind, EventType, JobEvent, OfferEvent, WebhookEvent};
pub use ids::{
    BrandId, ChunkSeq, IdempotencyKey, ImportId, JobId, LocationId, OfferId, SubscriptionId,
    WebhookUrl, UUID_PATTERN, WEBHOOK_HOST_LENGTH_PATTERN, WEBHOOK_URL_PATTERN,
};
pub use import::{
    csv_columns, find_rows, read_header, read_rows, span_columns, Column, FilePosition, FoundRows,
    Import, ImportFormat, ImportMark, ImportState, ImportedRow, MarkedUpsert, RawRow, RowBounds,
    RowOutcome, RowSpan, MAX_ADDRESS_LEN, MAX_ROW_BYTES, READ_WINDOW,
};
pub use job::{
    Action, ChunkCounts, Counters, Job, JobKind, JobStatus, NotDerivable, OwnerAction, Transition,
};
pub use report::{decode_outcomes, ChunkTally, Counter, ItemOutcome, ReportRow};
pub use spec::{plan, FollowUp, JobSpec, Source, SourceSpec};
pub use text::{checked_tags, checked_text, BLANKS};
pub use webhook::{
    payload, payload_value, verify, Delivery, DeliveryId, DeliveryStatus, Replay, RetrySchedule,
    SendSlot, Subscription, SubscriptionFilter, SubscriptionStatus, VerifyError, WebhookMessage,
    WebhookSecret, DELIVERY_RETENTION, EVENT_RETENTION, PREVIOUS_SECRET_GRACE,
    PROGRESS_EVERY_SECONDS, RATE_LIMIT_PER_SEC, SEND_SLOT_LEAD_US,
};

/// A value that breaks a domain rule. Always the caller's fault: never retry it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    #[error("{kind} '{value}' is not a valid UUID")]
    InvalidId { kind: &'static str, value: String },
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("url '{value}' {why}")]
    InvalidUrl { value: String, why: &'static str },
    #[error("cursor is not valid: pass back the nextCursor of a previous page unchanged")]
    InvalidCursor,
    #[error(
        "country '{0}' is not an ISO 3166-1 alpha-2 code (two upper-case letters, such as GB)"
    )]
    InvalidCountry(String),
    #[error("bad message: {0}")]
    BadMessage(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
