//! How a job fails, and how the worker reads it back.
//!
//! A [`JobError`] has a kind, which tells the worker what to do next:
//!
//! | kind | made by | the worker |
//! |---|---|---|
//! | [`ErrorKind::Failed`] | [`JobError::new`] | retries while the job has attempts left, with backoff, then fails it |
//! | [`ErrorKind::Permanent`] | [`JobError::permanent`] | fails the job at once (retrying cannot help: bad input) |
//! | [`ErrorKind::Throttled`] | [`JobError::throttled`] | retries after the delay asked for (at least its backoff), without spending an attempt |
//!
//! Under Lambda the kind travels in the function error's `errorType` (Lambda reports only a
//! type and a message): `Fleet.Permanent.<type>`, `Fleet.Throttled.<type>`, or
//! `Fleet.Throttled[retry_after_ms=N].<type>`; a failure keeps its own type. In a container
//! it is the exit code ([`crate::exit`]). [`ErrorKind::of_error_type`] is the one reader of
//! that encoding.

use std::time::Duration;

/// What the worker does with a failed attempt (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job failed; another attempt may succeed.
    Failed,
    /// Another attempt would fail the same way.
    Permanent,
    /// Something the job depends on asked it to slow down (an HTTP 429, say).
    Throttled {
        /// How long to wait before the next attempt, when the dependency said.
        retry_after: Option<Duration>,
    },
}

const PERMANENT_PREFIX: &str = "Fleet.Permanent.";
const THROTTLED_PREFIX: &str = "Fleet.Throttled";
const RETRY_AFTER_OPEN: &str = "[retry_after_ms=";

/// The longest retry-after the worker honours (a message's visibility is capped at 12 h;
/// 15 minutes keeps a throttled job from vanishing for long).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

impl ErrorKind {
    /// The kind an `errorType` carries, and the job's own type without the kind's prefix.
    /// A type without Fleet's prefix is a failure (Lambda's own types such as
    /// `Runtime.ExitError` among them).
    pub fn of_error_type(error_type: &str) -> (ErrorKind, &str) {
        if let Some(own) = error_type.strip_prefix(PERMANENT_PREFIX) {
            return (ErrorKind::Permanent, own);
        }
        let Some(rest) = error_type.strip_prefix(THROTTLED_PREFIX) else {
            return (ErrorKind::Failed, error_type);
        };
        if let Some(own) = rest.strip_prefix('.') {
            return (ErrorKind::Throttled { retry_after: None }, own);
        }
        let parsed = rest.strip_prefix(RETRY_AFTER_OPEN).and_then(|r| {
            let (ms, own) = r.split_once("].")?;
            let ms: u64 = ms.parse().ok()?;
            Some((ms, own))
        });
        match parsed {
            Some((ms, own)) => (
                ErrorKind::Throttled {
                    retry_after: Some(Duration::from_millis(ms).min(MAX_RETRY_AFTER)),
                },
                own,
            ),
            None => (ErrorKind::Failed, error_type),
        }
    }
}

/// A job's failure: its kind, a type (a short name, `InvalidPayload` say) and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct JobError {
    pub kind: ErrorKind,
    pub error_type: String,
    pub message: String,
}

impl JobError {
    /// A failure worth retrying.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Failed,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// A failure no retry can mend: the job fails at once.
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            ..Self::new(error_type, message)
        }
    }

    /// The job was asked to slow down: it runs again after `retry_after` (when given) and
    /// the attempt does not count. Longer than [`MAX_RETRY_AFTER`] counts as that.
    pub fn throttled(
        error_type: impl Into<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            kind: ErrorKind::Throttled {
                retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
            },
            ..Self::new(error_type, message)
        }
    }

    /// The `errorType` Lambda reports: the job's type with its kind.
    pub fn wire_error_type(&self) -> String {
        match self.kind {
            ErrorKind::Failed => self.error_type.clone(),
            ErrorKind::Permanent => format!("{PERMANENT_PREFIX}{}", self.error_type),
            ErrorKind::Throttled { retry_after: None } => {
                format!("{THROTTLED_PREFIX}.{}", self.error_type)
            }
            ErrorKind::Throttled {
                retry_after: Some(d),
            } => format!(
                "{THROTTLED_PREFIX}{RETRY_AFTER_OPEN}{}].{}",
                d.as_millis(),
                self.error_type
            ),
        }
    }

    /// The body Lambda returns for a function error.
    pub fn to_lambda_body(&self) -> serde_json::Value {
        serde_json::json!({"errorType": self.wire_error_type(), "errorMessage": self.message})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_error_type() {
        let ms = Duration::from_millis;
        for e in [
            JobError::new("InvalidPayload", "m"),
            JobError::permanent("Runtime.Bad", "m"),
            JobError::throttled("PartnerBusy", "429", None),
            JobError::throttled("PartnerBusy", "429", Some(ms(1500))),
        ] {
            let wire = e.wire_error_type();
            assert_eq!(
                ErrorKind::of_error_type(&wire),
                (e.kind, e.error_type.as_str()),
                "{wire}"
            );
        }
        assert_eq!(
            JobError::throttled("T", "m", Some(ms(1500))).wire_error_type(),
            "Fleet.Throttled[retry_after_ms=1500].T"
        );
        assert_eq!(
            JobError::throttled("T", "m", Some(Duration::from_secs(86_400))).kind,
            ErrorKind::Throttled {
                retry_after: Some(MAX_RETRY_AFTER)
            }
        );
    }

    #[test]
    fn foreign_and_malformed_types_are_failures() {
        for t in [
            "Runtime.ExitError",
            "Sandbox.Timedout",
            "Fleet.ThrottledX",
            "Fleet.Throttled[retry_after_ms=x].T",
            "Fleet.Throttled[retry_after_ms=5]T",
            "Fleet.Permanent",
        ] {
            assert_eq!(ErrorKind::of_error_type(t), (ErrorKind::Failed, t), "{t}");
        }
    }
}
