//! Store errors, split by what the caller should do: retry (throttled, busy, timed out)
//! or not (conflict, invalid, corrupt). Adapters map every SDK/SQL error into this.

use crate::domain::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or condition rule refused the write; the message says which.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself is wrong; retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Throttled, busy, timed out or unreachable: retry with backoff.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A fault injected at the port boundary by a test.
    #[error("injected fault: {0}")]
    Injected(String),
    /// Anything else: a bug, corrupt data, a broken invariant. Not retryable.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Injected(_))
    }
}

impl From<DomainError> for StoreError {
    fn from(e: DomainError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
