//! SDK errors → `StoreError`: throttling, timeouts and server faults are retryable (the SDK
//! has already retried them with backoff); everything else is not.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::error::StoreError;

/// Error codes that mean "slow down or try again", across DynamoDB, SQS and SNS.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "KMSThrottlingException",
    "AWS.SimpleQueueService.ServiceUnavailable",
];

pub(crate) fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// Classifies any SDK error of any operation.
pub(crate) fn classify<E, R>(operation: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("{operation}: {}", describe(&e)))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = service.err().message().unwrap_or_default();
            if is_retryable_code(code) {
                StoreError::Unavailable(format!("{operation}: {code}: {message}"))
            } else {
                StoreError::Internal(format!("{operation}: {code}: {message}"))
            }
        }
        _ => StoreError::Internal(format!("{operation}: {}", describe(&e))),
    }
}

fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_faults_are_retryable() {
        assert!(is_retryable_code("ProvisionedThroughputExceededException"));
        assert!(is_retryable_code("ThrottlingException"));
        assert!(is_retryable_code("InternalServerError"));
        assert!(!is_retryable_code("ValidationException"));
        assert!(!is_retryable_code("ConditionalCheckFailedException"));
    }
}
