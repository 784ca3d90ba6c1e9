//! `[ledger]`: the DynamoDB table and how job items are spread over it.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, ITEM_SAFE_BYTES, invalid};
use crate::ledger::item::HISTORY_ENTRY_MAX_BYTES;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The DynamoDB table. Env `FLEET_TABLE`.
    pub table: String,
    /// Days a finished job's item (and a request's, from its creation) is kept before the
    /// table's TTL (attribute `expires_at`) deletes it; kept for ever when unset. Env
    /// `FLEET_LEDGER_TTL_DAYS`.
    pub ttl_days: Option<u32>,
    /// Partitions of the due index (each of leases and of waiting jobs), written into the
    /// table's layout item when the table is first opened; the table's value wins after.
    /// 32 keep every index partition under 150 write units a second at 2,000 jobs a second.
    /// Env `FLEET_LEDGER_INDEX_SHARDS`.
    pub index_shards: u32,
    /// Most partitions one request's job items are spread over (a request gets one per
    /// 1,000 jobs up to this). Env `FLEET_LEDGER_MAX_JOB_SHARDS`.
    pub max_job_shards: u32,
    /// Failed attempts kept whole in a job's history; older ones are only counted.
    pub history_keep: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            table: "fleet-ledger".into(),
            ttl_days: None,
            index_shards: 32,
            max_job_shards: 64,
            history_keep: 10,
        }
    }
}

/// Jobs per partition of a request's job items.
pub const JOBS_PER_SHARD: u32 = 1000;

impl LedgerConfig {
    /// The partitions a request of `total` jobs spreads its job items over.
    pub fn job_shards(&self, total: u32) -> u32 {
        total
            .div_ceil(JOBS_PER_SHARD)
            .clamp(1, self.max_job_shards.max(1))
    }

    /// The TTL as a duration.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl_days
            .map(|d| Duration::from_secs(u64::from(d) * 24 * 3600))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.table;
        if !(3..=255).contains(&t.len())
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(
                "ledger.table",
                format!("{t:?} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ - .)"),
            ));
        }
        if self.ttl_days == Some(0) {
            return Err(invalid(
                "ledger.ttl_days",
                "must be at least 1 (unset keeps items)",
            ));
        }
        if !(1..=1024).contains(&self.index_shards) {
            return Err(invalid("ledger.index_shards", "must be 1 to 1024"));
        }
        if !(1..=1024).contains(&self.max_job_shards) {
            return Err(invalid("ledger.max_job_shards", "must be 1 to 1024"));
        }
        // Every item the ledger writes stays under DynamoDB's 400 KB: a history holds at
        // most this many entries of bounded size.
        let history_max = HISTORY_ENTRY_MAX_BYTES * self.history_keep as usize;
        if self.history_keep == 0 || history_max > ITEM_SAFE_BYTES {
            return Err(invalid(
                "ledger.history_keep",
                format!(
                    "must be 1 to {} (each entry may take {} bytes, and an item holds at most 400 KB)",
                    ITEM_SAFE_BYTES / HISTORY_ENTRY_MAX_BYTES,
                    HISTORY_ENTRY_MAX_BYTES
                ),
            ));
        }
        Ok(())
    }
}
