//! One classification of every way an attempt can end badly, used by every dispatcher.
//! The engine decides from the class alone: permanent errors fail the job at once; the
//! others spend an attempt and are retried while attempts remain.

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;

use std::time::Duration;

use fleet_job::ErrorKind;
use fleet_job::exit::ExitKind;
pub use fleet_shared::error::{ErrorClass, by_code_and_status, sdk_error};

/// A failed Invoke call (not a function error: those come back as a response). A connection
/// refused or reset is transient (a reset after the request was sent may have run the job:
/// it still counts as an attempt, like every transient failure); a read timeout is a timeout.
pub fn lambda_invoke_error(e: &SdkError<InvokeError>) -> ErrorClass {
    sdk_error(e)
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

/// A failure the job reported, by its kind ([`fleet_job::ErrorKind`]), and the delay it
/// asked for.
pub fn job_error(kind: ErrorKind) -> (ErrorClass, Option<Duration>) {
    match kind {
        ErrorKind::Failed => (ErrorClass::JobFailure, None),
        ErrorKind::Permanent => (ErrorClass::Permanent, None),
        ErrorKind::Throttled { retry_after } => (ErrorClass::Throttled, retry_after),
    }
}

/// Whether a function error is Lambda's own "response over the limit": a response as large
/// again next time, so permanent.
pub fn is_response_too_large(error_type: &str) -> bool {
    error_type.ends_with("ResponseSizeTooLarge")
}

/// A function error, by Lambda's `errorType`: the kind a Fleet job gave it, else Lambda's
/// timeouts, else a job failure.
pub fn function_error(error_type: &str) -> (ErrorClass, Option<Duration>) {
    match ErrorKind::of_error_type(error_type) {
        (ErrorKind::Failed, _)
            if error_type == "Sandbox.Timedout" || error_type.ends_with("Timeout") =>
        {
            (ErrorClass::Timeout, None)
        }
        (ErrorKind::Failed, _) if is_response_too_large(error_type) => {
            (ErrorClass::Permanent, None)
        }
        (kind, _) => job_error(kind),
    }
}

/// A job container's exit code: `None` for success. A job stopped by SIGTERM (143) was
/// interrupted, not failed: transient.
pub fn exit_code(code: i32) -> Option<ErrorClass> {
    match ExitKind::of_code(code) {
        ExitKind::Succeeded => None,
        ExitKind::Interrupted => Some(ErrorClass::Transient),
        ExitKind::Failed(kind) => Some(job_error(kind).0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let class = |t: &str| function_error(t).0;
        assert_eq!(class("Sandbox.Timedout"), ErrorClass::Timeout);
        assert_eq!(class("RequestedFailure"), ErrorClass::JobFailure);
        assert_eq!(
            class("Function.ResponseSizeTooLarge"),
            ErrorClass::Permanent
        );
        let e = fleet_job::JobError::permanent("InvalidPayload", "m");
        assert_eq!(class(&e.wire_error_type()), ErrorClass::Permanent);
        let e = fleet_job::JobError::throttled("ApiTimeout", "m", Some(Duration::from_secs(2)));
        assert_eq!(
            function_error(&e.wire_error_type()),
            (ErrorClass::Throttled, Some(Duration::from_secs(2)))
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(0), None);
        assert_eq!(exit_code(1), Some(ErrorClass::JobFailure));
        assert_eq!(exit_code(2), Some(ErrorClass::Permanent));
        assert_eq!(exit_code(3), Some(ErrorClass::Permanent));
        assert_eq!(exit_code(75), Some(ErrorClass::Throttled));
        assert_eq!(exit_code(101), Some(ErrorClass::JobFailure));
        assert_eq!(exit_code(143), Some(ErrorClass::Transient));
    }
}
