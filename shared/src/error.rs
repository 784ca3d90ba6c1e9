//! One classification of every way an AWS call or an attempt can fail, used by the ledger,
//! the queue and every dispatcher. Callers decide from the class alone: permanent errors are
//! never retried; throttling is retried after a pause without counting against anything;
//! the others are retried with backoff.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};

/// What kind of failure a call or an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The service asked us to slow down (Lambda 429 TooManyRequests, DynamoDB
    /// ProvisionedThroughputExceeded, ECS throttling).
    Throttled,
    /// The call failed on the way (5xx, connection refused or reset, a transaction that
    /// collided with another): may succeed again.
    Transient,
    /// The job ran and reported failure (function error, non-zero exit).
    JobFailure,
    /// The job or the call ran out of time (function timeout, read timeout).
    Timeout,
    /// Retrying cannot help (malformed message, unknown job type or function, access
    /// denied, an item DynamoDB refuses as invalid or too large).
    Permanent,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Throttled,
        ErrorClass::Transient,
        ErrorClass::JobFailure,
        ErrorClass::Timeout,
        ErrorClass::Permanent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::JobFailure => "job_failure",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Permanent => "permanent",
        }
    }

    pub fn is_retryable(self) -> bool {
        self != ErrorClass::Permanent
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown error class {s:?}"))
    }
}

/// Error codes that mean "slow down", across the services we call.
const THROTTLING_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "EC2ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "SlowDown",
];

/// Error codes that may clear up on their own, whatever their HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "ResourceConflictException",
    "ResourceNotReadyException",
    "ServiceException",
    "ServiceUnavailableException",
    "ServerException",
    "InternalFailure",
    "InternalServerError",
    "TransactionConflictException",
    "TransactionInProgressException",
    "EC2UnexpectedException",
    "ENILimitReachedException",
    "SubnetIPAddressLimitReachedException",
];

/// Error codes for which a retry cannot help.
const PERMANENT_CODES: &[&str] = &[
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "InvalidRuntimeException",
    "InvalidZipFileException",
    "InvalidSecurityGroupIDException",
    "InvalidSubnetIDException",
    "ClusterNotFoundException",
    "InvalidParameterException",
    "PlatformUnknownException",
    "PlatformTaskDefinitionIncompatibilityException",
    "UnsupportedFeatureException",
    "BlockedException",
    "ResourceNotFoundException",
    "AccessDeniedException",
    "AccessDenied",
    "InvalidParameterValueException",
    "InvalidRequestContentException",
    "RequestTooLargeException",
    "UnsupportedMediaTypeException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ClientException",
    "ValidationException",
    "ItemCollectionSizeLimitExceededException",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
];

/// Any AWS SDK call's error: construction errors never retry, timeouts are timeouts,
/// transport failures are transient, service errors go by code, then by HTTP status.
pub fn sdk_error<E: ProvideErrorMetadata>(e: &SdkError<E>) -> ErrorClass {
    match e {
        SdkError::ConstructionFailure(_) => ErrorClass::Permanent,
        SdkError::TimeoutError(_) => ErrorClass::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => ErrorClass::Timeout,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorClass::Transient,
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            by_code_and_status(se.err().code(), status)
        }
        _ => ErrorClass::Transient,
    }
}

/// A service error by its code, else its HTTP status.
pub fn by_code_and_status(code: Option<&str>, status: u16) -> ErrorClass {
    match code {
        Some(c) if THROTTLING_CODES.contains(&c) => ErrorClass::Throttled,
        Some(c) if TRANSIENT_CODES.contains(&c) => ErrorClass::Transient,
        Some(c) if PERMANENT_CODES.contains(&c) => ErrorClass::Permanent,
        _ if status == 429 => ErrorClass::Throttled,
        _ if status >= 500 => ErrorClass::Transient,
        _ if (400..500).contains(&status) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(
            by_code_and_status(Some("TooManyRequestsException"), 429),
            ErrorClass::Throttled
        );
        assert_eq!(
            by_code_and_status(Some("ProvisionedThroughputExceededException"), 400),
            ErrorClass::Throttled
        );
        assert_eq!(
            by_code_and_status(Some("ValidationException"), 400),
            ErrorClass::Permanent
        );
        assert_eq!(
            by_code_and_status(Some("TransactionConflictException"), 400),
            ErrorClass::Transient
        );
        assert_eq!(by_code_and_status(None, 429), ErrorClass::Throttled);
        assert_eq!(
            by_code_and_status(Some("ResourceNotFoundException"), 404),
            ErrorClass::Permanent
        );
        assert_eq!(
            by_code_and_status(Some("ServiceException"), 500),
            ErrorClass::Transient
        );
        assert_eq!(by_code_and_status(None, 503), ErrorClass::Transient);
        assert_eq!(
            by_code_and_status(Some("Whatever"), 400),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn names_round_trip() {
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>(), Ok(c));
            assert_eq!(
                serde_json::to_string(&c).unwrap_or_default(),
                format!("\"{c}\"")
            );
        }
    }
}
