//! The ledger's error, with the class that says whether to try again.

use super::*;
use crate::state::InvalidTransition;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A conditional write found another owner or fence: this replica's lease is gone and its
    /// write was refused. Not retryable.
    #[error("lease lost on {job}: the ledger refused a write with fence {fence}")]
    Stale { job: String, fence: u64 },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// A call to DynamoDB failed; `class` says whether to try again.
    #[error("ledger call {op} failed ({class}): {message}")]
    Aws {
        op: &'static str,
        class: ErrorClass,
        message: String,
    },
    /// An item does not have the shape this build writes.
    #[error("ledger item {key} is malformed: {message}")]
    Malformed { key: String, message: String },
    /// The table is not laid out as this build needs.
    #[error("{0}")]
    Layout(String),
}

impl LedgerError {
    /// How to treat the error: stale writes and malformed items are permanent.
    pub fn class(&self) -> ErrorClass {
        match self {
            LedgerError::Aws { class, .. } => *class,
            _ => ErrorClass::Permanent,
        }
    }

    /// A throttled call, as the limits model and DynamoDB's throughput errors give it.
    pub fn throttled(op: &'static str, message: impl Into<String>) -> Self {
        LedgerError::Aws {
            op,
            class: ErrorClass::Throttled,
            message: message.into(),
        }
    }
}
