//! One classification of every way an attempt can end badly, used by every dispatcher.
//! The engine decides from the class alone: permanent errors fail the job at once; the
//! others spend an attempt and are retried while attempts remain.

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;

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

/// A function error, by Lambda's `errorType`. A response over Lambda's limit
/// (`Function.ResponseSizeTooLarge`) would be as large again: permanent, not a job failure
/// to retry.
pub fn function_error(error_type: &str) -> ErrorClass {
    if error_type == "Sandbox.Timedout" || error_type.ends_with("Timeout") {
        ErrorClass::Timeout
    } else if error_type.ends_with("ResponseSizeTooLarge") {
        ErrorClass::Permanent
    } else {
        ErrorClass::JobFailure
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
        assert_eq!(function_error("Sandbox.Timedout"), ErrorClass::Timeout);
        assert_eq!(function_error("RequestedFailure"), ErrorClass::JobFailure);
        assert_eq!(
            function_error("Function.ResponseSizeTooLarge"),
            ErrorClass::Permanent
        );
    }
}
