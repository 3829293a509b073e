//! Store errors, split by what the caller should do: retry (throttled, busy, timed out)
//! or not (conflict, invalid, corrupt). Adapters map every SDK/SQL error into this, and
//! keep the error they mapped from as its `source()`: whether it is retryable is decided
//! from that error (its code) where it is classified, and logs see the whole chain.

use crate::domain::DomainError;

/// The error underneath a store error: the SDK's, SQLite's, a decoder's.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in words (complete on its own: logs print it), and the error it came
/// from when there is one, for code that needs its type.
#[derive(Debug)]
pub struct Detail {
    pub message: String,
    pub cause: Option<Cause>,
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Detail {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

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
    Unavailable(#[source] Detail),
    /// Anything else: a bug, corrupt data, a broken invariant. Not retryable.
    #[error("internal error: {0}")]
    Internal(#[source] Detail),
}

impl StoreError {
    /// Retryable: the next attempt may succeed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable(Detail {
            message: message.into(),
            cause: None,
        })
    }

    /// Retryable, caused by `cause` (kept as the error's source).
    pub fn unavailable_from(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        StoreError::Unavailable(Detail {
            message: message.into(),
            cause: Some(cause.into()),
        })
    }

    /// Not retryable.
    pub fn internal(message: impl Into<String>) -> Self {
        StoreError::Internal(Detail {
            message: message.into(),
            cause: None,
        })
    }

    /// Not retryable, caused by `cause` (kept as the error's source).
    pub fn internal_from(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        StoreError::Internal(Detail {
            message: message.into(),
            cause: Some(cause.into()),
        })
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The error this one was classified from, if any (the SDK's, SQLite's).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            StoreError::Unavailable(detail) | StoreError::Internal(detail) => {
                detail.cause.as_deref()
            }
            StoreError::Conflict(_) | StoreError::Invalid(_) => None,
        }
    }
}

impl From<DomainError> for StoreError {
    fn from(e: DomainError) -> Self {
        StoreError::internal_from(e.to_string(), e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classified_error_keeps_what_it_was_classified_from() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let e = StoreError::unavailable_from("GetItem: dispatch failure", io);
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "temporarily unavailable: GetItem: dispatch failure"
        );
        let cause = e.cause().expect("the cause is kept");
        assert_eq!(cause.to_string(), "read timed out");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("as its own type");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        // The chain a logger walks: StoreError → Detail → the io error.
        let detail = std::error::Error::source(&e).unwrap();
        assert_eq!(detail.source().unwrap().to_string(), "read timed out");
    }

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(StoreError::unavailable("busy").is_retryable());
        assert!(!StoreError::internal("corrupt").is_retryable());
        assert!(!StoreError::Conflict("taken".into()).is_retryable());
        assert!(!StoreError::Invalid("bad".into()).is_retryable());
    }
}
