//! `[claim_check]`: where payloads too large to travel inline are kept in S3.

use serde::Deserialize;

use super::{ConfigError, ITEM_SAFE_BYTES, invalid};

/// Where payloads too large to travel inline go (the claim-check pattern): the producer writes
/// them to S3 and the message, the ledger and the event carry a reference; the job runtime
/// reads the payload back before the job code sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimCheckConfig {
    /// `s3://bucket/prefix/`; off when unset (large payloads then travel inline up to the
    /// message and ledger limits). Env `FLEET_CLAIM_CHECK_PREFIX`.
    pub prefix: Option<String>,
    /// Payloads whose JSON is larger than this go to S3. The default keeps ledger items small:
    /// DynamoDB bills every update by the item's size (1 KB units), and a job's item is
    /// updated at least three times per attempt. Env `FLEET_CLAIM_CHECK_INLINE_MAX_BYTES`.
    pub inline_max_bytes: usize,
}

impl Default for ClaimCheckConfig {
    fn default() -> Self {
        Self {
            prefix: None,
            inline_max_bytes: 32 * 1024,
        }
    }
}

impl ClaimCheckConfig {
    /// The parsed prefix, when one is configured (validated by
    /// [`Config::validate`](super::Config::validate)).
    pub fn location(&self) -> Option<crate::s3::S3Uri> {
        self.prefix
            .as_deref()
            .and_then(|p| crate::s3::S3Uri::parse(p).ok())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.prefix {
            crate::s3::S3Uri::parse(p).map_err(|e| invalid("claim_check.prefix", e))?;
        }
        if self.inline_max_bytes > ITEM_SAFE_BYTES {
            return Err(invalid(
                "claim_check.inline_max_bytes",
                format!("must be at most {ITEM_SAFE_BYTES}: a payload item holds at most 400 KB"),
            ));
        }
        if self.inline_max_bytes < 1024 {
            return Err(invalid(
                "claim_check.inline_max_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}
