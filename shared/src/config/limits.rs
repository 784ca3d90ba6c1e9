//! `[limits]`: the largest message and result Fleet accepts.

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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_result_bytes: 32 * 1024,
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
        Ok(())
    }
}
