//! One classification of every way an attempt can end badly, used by every dispatcher.
//! The engine decides from the class alone: permanent errors fail the job at once; the
//! others spend an attempt and are retried while attempts remain.

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError;

/// What kind of failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The service asked us to slow down (Lambda 429 TooManyRequests, ECS throttling).
    Throttled,
    /// The call failed on the way (5xx, connection refused or reset): may succeed again.
    Transient,
    /// The job ran and reported failure (function error, non-zero exit).
    JobFailure,
    /// The job or the call ran out of time (function timeout, read timeout).
    Timeout,
    /// Retrying cannot help (malformed message, unknown job type or function, access
    /// denied).
    Permanent,
}

impl ErrorClass {
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

/// Error codes that mean "slow down", across the services we call.
const THROTTLING_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "EC2ThrottledException",
];

/// Error codes that may clear up on their own, whatever their HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "ResourceConflictException",
    "ResourceNotReadyException",
    "ServiceException",
    "ServiceUnavailableException",
    "ServerException",
    "InternalFailure",
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
];

/// A failed Invoke call (not a function error: those come back as a response). A connection
/// refused or reset is transient (a reset after the request was sent may have run the job:
/// it still counts as an attempt, like every transient failure); a read timeout is a timeout.
pub fn lambda_invoke_error(e: &SdkError<InvokeError>) -> ErrorClass {
    sdk_error(e)
}

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

/// An entry of RunTask's `failures[]`, by its reason. Capacity shortages (`RESOURCE:*`,
/// Fargate's "Capacity is unavailable") are throttling: nothing ran, slow down. Unmet
/// placement constraints (`ATTRIBUTE`, `MISSING`) cannot resolve themselves.
pub fn ecs_run_failure(reason: &str) -> ErrorClass {
    let r = reason.to_ascii_uppercase();
    if r.starts_with("RESOURCE:") || r.contains("CAPACITY") {
        ErrorClass::Throttled
    } else if r.starts_with("ATTRIBUTE")
        || r.starts_with("MISSING")
        || r.contains("INACTIVE") && r.contains("TASK DEFINITION")
    {
        ErrorClass::Permanent
    } else {
        ErrorClass::Transient
    }
}

/// A function error, by Lambda's `errorType`.
pub fn function_error(error_type: &str) -> ErrorClass {
    if error_type == "Sandbox.Timedout" || error_type.ends_with("Timeout") {
        ErrorClass::Timeout
    } else {
        ErrorClass::JobFailure
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
    fn run_task_failures() {
        assert_eq!(ecs_run_failure("RESOURCE:MEMORY"), ErrorClass::Throttled);
        assert_eq!(ecs_run_failure("RESOURCE:CPU"), ErrorClass::Throttled);
        assert_eq!(
            ecs_run_failure(
                "Capacity is unavailable at this time. Please try again later or in a different availability zone"
            ),
            ErrorClass::Throttled
        );
        assert_eq!(ecs_run_failure("ATTRIBUTE"), ErrorClass::Permanent);
        assert_eq!(ecs_run_failure("MISSING"), ErrorClass::Permanent);
        assert_eq!(ecs_run_failure("AGENT"), ErrorClass::Transient);
    }

    #[test]
    fn function_errors() {
        assert_eq!(function_error("Sandbox.Timedout"), ErrorClass::Timeout);
        assert_eq!(function_error("RequestedFailure"), ErrorClass::JobFailure);
    }
}
