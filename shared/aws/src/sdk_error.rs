//! SDK errors → `StoreError`: throttling, timeouts and server faults are retryable (the SDK
//! has already retried them with backoff); everything else is not.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;

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

/// Classifies any SDK error of any operation: retryable or not from the error itself
/// (timeouts, dispatch and response failures; a service error by its code). The SDK error
/// stays as the store error's cause.
pub(crate) fn classify<E, R>(operation: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let message = format!("{operation}: {}", describe(&e));
            StoreError::unavailable_from(message, e)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = format!(
                "{operation}: {code}: {}",
                service.err().message().unwrap_or_default()
            );
            if is_retryable_code(code) {
                StoreError::unavailable_from(message, e)
            } else {
                StoreError::internal_from(message, e)
            }
        }
        _ => {
            let message = format!("{operation}: {}", describe(&e));
            StoreError::internal_from(message, e)
        }
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

/// A cancelled TransactWriteItems: each item's reason; any other error, classified.
pub(crate) fn cancellation(
    e: SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>,
) -> Result<Vec<CancellationReason>, StoreError> {
    match e {
        SdkError::ServiceError(service)
            if matches!(
                service.err(),
                TransactWriteItemsError::TransactionCanceledException(_)
            ) =>
        {
            let TransactWriteItemsError::TransactionCanceledException(cancel) = service.into_err()
            else {
                unreachable!("matched above")
            };
            Ok(cancel.cancellation_reasons().to_vec())
        }
        other => Err(classify("TransactWriteItems", other)),
    }
}

pub(crate) fn condition_failed(reason: Option<&CancellationReason>) -> bool {
    reason.and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}

/// A cancellation that was not a condition of ours (a conflicting transaction, throttling):
/// safe to retry.
pub(crate) fn retryable_cancel(reasons: &[CancellationReason]) -> StoreError {
    StoreError::unavailable(format!(
        "transaction cancelled: {:?}",
        reasons
            .iter()
            .map(|r| r.code().unwrap_or("None"))
            .collect::<Vec<_>>()
    ))
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

    type GetItemError = aws_sdk_dynamodb::operation::get_item::GetItemError;
    type Raw = aws_smithy_runtime_api::http::Response;

    fn service_error(code: &str) -> SdkError<GetItemError, Raw> {
        let meta = aws_sdk_dynamodb::error::ErrorMetadata::builder()
            .code(code)
            .message("from the service")
            .build();
        SdkError::service_error(
            GetItemError::generic(meta),
            Raw::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            ),
        )
    }

    #[test]
    fn a_classified_sdk_error_is_kept_as_the_cause_and_decides_retrying() {
        let throttled = classify("GetItem", service_error("ThrottlingException"));
        assert!(throttled.is_retryable());
        assert_eq!(
            throttled.to_string(),
            "temporarily unavailable: GetItem: ThrottlingException: from the service"
        );
        let cause = throttled
            .cause()
            .and_then(|c| c.downcast_ref::<SdkError<GetItemError, Raw>>())
            .expect("the SDK error itself is the cause");
        assert_eq!(cause.code(), Some("ThrottlingException"));

        let refused = classify("GetItem", service_error("ValidationException"));
        assert!(!refused.is_retryable());
        assert!(refused
            .cause()
            .is_some_and(|c| c.is::<SdkError<GetItemError, Raw>>()));

        let timed_out = classify(
            "GetItem",
            SdkError::<GetItemError, Raw>::timeout_error("attempt timed out"),
        );
        assert!(timed_out.is_retryable());
        assert!(timed_out.cause().is_some());
    }
}
