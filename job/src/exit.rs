//! A job container's exit codes: the container entrypoint ends with one of them, and the
//! worker reads the task's exit code back with [`ExitKind::of_code`].

use crate::error::ErrorKind;

/// The job succeeded (its result is on stdout).
pub const EXIT_SUCCESS: u8 = 0;
/// The job failed; another attempt may succeed ([`ErrorKind::Failed`]).
pub const EXIT_JOB_FAILED: u8 = 1;
/// The event itself is missing or malformed, or the arguments are wrong: permanent.
pub const EXIT_BAD_EVENT: u8 = 2;
/// The job failed permanently ([`ErrorKind::Permanent`]).
pub const EXIT_PERMANENT: u8 = 3;
/// The job was throttled by something it depends on ([`ErrorKind::Throttled`]; a container
/// cannot pass a retry-after). `EX_TEMPFAIL` of sysexits.h.
pub const EXIT_THROTTLED: u8 = 75;
/// The job was stopped by SIGTERM before it finished (a Fargate Spot interruption, a
/// StopTask, a scale-in): 128 + 15, as a shell reports it. Not the job's failure.
pub const EXIT_INTERRUPTED: u8 = 143;

/// What a job container's exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Succeeded,
    /// The job ended with an error of this kind.
    Failed(ErrorKind),
    /// Stopped from outside before it finished.
    Interrupted,
}

impl ExitKind {
    /// The exit code a job ending with this error uses.
    pub fn code_of(kind: ErrorKind) -> u8 {
        match kind {
            ErrorKind::Failed => EXIT_JOB_FAILED,
            ErrorKind::Permanent => EXIT_PERMANENT,
            ErrorKind::Throttled { .. } => EXIT_THROTTLED,
        }
    }

    /// The reading of an exit code. Codes this runtime does not use (a crash, an
    /// out-of-memory kill's 137) are failures worth retrying.
    pub fn of_code(code: i32) -> ExitKind {
        match u8::try_from(code) {
            Ok(EXIT_SUCCESS) => ExitKind::Succeeded,
            Ok(EXIT_BAD_EVENT | EXIT_PERMANENT) => ExitKind::Failed(ErrorKind::Permanent),
            Ok(EXIT_THROTTLED) => ExitKind::Failed(ErrorKind::Throttled { retry_after: None }),
            Ok(EXIT_INTERRUPTED) => ExitKind::Interrupted,
            _ => ExitKind::Failed(ErrorKind::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_written() {
        for kind in [
            ErrorKind::Failed,
            ErrorKind::Permanent,
            ErrorKind::Throttled { retry_after: None },
        ] {
            let code = ExitKind::code_of(kind);
            assert_eq!(ExitKind::of_code(i32::from(code)), ExitKind::Failed(kind));
        }
        assert_eq!(ExitKind::of_code(0), ExitKind::Succeeded);
        assert_eq!(ExitKind::of_code(143), ExitKind::Interrupted);
        assert_eq!(ExitKind::of_code(137), ExitKind::Failed(ErrorKind::Failed));
        assert_eq!(ExitKind::of_code(-1), ExitKind::Failed(ErrorKind::Failed));
        assert_eq!(ExitKind::of_code(2), ExitKind::Failed(ErrorKind::Permanent));
    }
}
