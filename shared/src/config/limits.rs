//! `[limits]`: the largest message and result Fleet accepts, and a request's window.

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::message::DEFAULT_MAX_MESSAGE_BYTES;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body accepted, in bytes. Env `FLEET_MAX_MESSAGE_BYTES`.
    pub max_message_bytes: usize,
    /// Largest job result kept in the ledger, in bytes; a larger one is kept in S3 under
    /// `claim_check.prefix` (the ledger keeps its reference), and without a prefix the
    /// attempt fails with a permanent error that says so.
    pub max_result_bytes: usize,
    /// Most jobs of a request released to the queue and not finished at a time, when the
    /// request sets no `options.max_concurrency`: the rest wait in the ledger and are sent
    /// as jobs finish, so later requests' jobs are not queued behind all of a large one's.
    /// 0 sends every job's message at once. Env `FLEET_WINDOW`.
    pub window: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_result_bytes: 32 * 1024,
            window: 10_000,
        }
    }
}

impl LimitsConfig {
    /// Checks this section alone (that a message this large fits a ledger item without a
    /// claim-check prefix is checked by [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=1024 * 1024).contains(&self.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be 1024 to 1048576 (SQS's limit)",
            ));
        }
        if !(64..=256 * 1024).contains(&self.max_result_bytes) {
            return Err(invalid(
                "limits.max_result_bytes",
                "must be 64 to 262144 (larger results are kept in S3 under claim_check.prefix)",
            ));
        }
        if self.window > MAX_WINDOW {
            return Err(invalid(
                "limits.window",
                format!("must be 0 (no window) to {MAX_WINDOW}"),
            ));
        }
        Ok(())
    }
}

/// The largest window, and the largest `options.max_concurrency` (SQS holds at most 120,000
/// messages in flight on a standard queue).
pub const MAX_WINDOW: u32 = 100_000;
