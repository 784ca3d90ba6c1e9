//! `[worker]`: one replica's receive loops, leases, shutdown, sweeper and retries.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, SQS_MAX_VISIBILITY_SECS, check_attempts, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// This replica's name in the ledger's `owner` field. Default: host name, process id
    /// and a random suffix. Env `FLEET_REPLICA_ID`.
    pub replica_id: Option<String>,
    /// Jobs one replica runs at once. Env `FLEET_CONCURRENCY`.
    pub concurrency: usize,
    /// Concurrent long-poll receive loops. Env `FLEET_RECEIVE_LOOPS`.
    pub receive_loops: usize,
    /// Long-poll wait per receive (SQS allows 0 to 20). Env `FLEET_WAIT_TIME_SECS`.
    pub wait_time_secs: u64,
    /// Lease on a claimed job, renewed by heartbeats; also the message's visibility while
    /// the job runs. Env `FLEET_LEASE_SECS`.
    pub lease_secs: u64,
    /// Heartbeat period; default a third of the lease. Env `FLEET_HEARTBEAT_SECS`.
    pub heartbeat_secs: Option<u64>,
    /// On SIGTERM, how long in-flight jobs may run before they are released.
    /// Env `FLEET_DRAIN_SECS`.
    pub drain_secs: u64,
    /// Clock skew tolerated between replicas: a lease counts as expired only this long after
    /// its expiry time. Env `FLEET_CLOCK_SKEW_SECS`.
    pub clock_skew_secs: u64,
    /// Attempts per job unless the job type or the request says otherwise.
    /// Env `FLEET_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// How often the sweeper looks for expired leases (jittered).
    /// Env `FLEET_SWEEP_SECS`.
    pub sweep_secs: u64,
    /// How long a job must be overdue (a lease expired, or claimable and unclaimed) before
    /// the sweeper takes its message for lost and sends it again; only while the queue has no
    /// backlog, since a waiting message is not lost. Env `FLEET_RECOVER_SECS`.
    pub recover_secs: u64,
    /// Where to append this replica's history (one JSON line per claim, dispatch, terminal
    /// write, rejected stale write, release, adoption, re-send), for the chaos checker.
    /// Env `FLEET_HISTORY_LOG`.
    pub history_log: Option<std::path::PathBuf>,
    /// Delay before the second attempt; it doubles with each attempt after.
    /// Env `FLEET_RETRY_BASE_SECS`.
    pub retry_base_secs: u64,
    /// Longest delay between attempts. Env `FLEET_RETRY_MAX_SECS`.
    pub retry_max_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            replica_id: None,
            concurrency: 64,
            receive_loops: 4,
            wait_time_secs: 20,
            lease_secs: 60,
            heartbeat_secs: None,
            drain_secs: 30,
            clock_skew_secs: 5,
            sweep_secs: 30,
            recover_secs: 120,
            history_log: None,
            max_attempts: 5,
            retry_base_secs: 2,
            retry_max_secs: 300,
        }
    }
}

impl WorkerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// The lease in milliseconds, as the ledger compares times.
    pub fn lease_ms(&self) -> u64 {
        self.lease_secs * 1000
    }

    /// The clock skew tolerated, in milliseconds.
    pub fn skew_ms(&self) -> u64 {
        self.clock_skew_secs * 1000
    }

    pub fn heartbeat(&self) -> Duration {
        match self.heartbeat_secs {
            Some(s) => Duration::from_secs(s),
            None => Duration::from_millis(self.lease_secs * 1000 / 3),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.replica_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "worker.replica_id",
                "must be 1 to 128 characters without spaces",
            ));
        }
        if !(1..=100_000).contains(&self.concurrency) {
            return Err(invalid("worker.concurrency", "must be 1 to 100000"));
        }
        if !(1..=64).contains(&self.receive_loops) {
            return Err(invalid("worker.receive_loops", "must be 1 to 64"));
        }
        if self.wait_time_secs > 20 {
            return Err(invalid(
                "worker.wait_time_secs",
                "must be 0 to 20 (SQS's long-poll limit)",
            ));
        }
        if !(2..=SQS_MAX_VISIBILITY_SECS).contains(&self.lease_secs) {
            return Err(invalid(
                "worker.lease_secs",
                format!("must be 2 to {SQS_MAX_VISIBILITY_SECS} (SQS's visibility limit)"),
            ));
        }
        let hb = self.heartbeat();
        if hb.is_zero() || hb >= self.lease() {
            return Err(invalid(
                "worker.heartbeat_secs",
                "must be at least 1 and below worker.lease_secs",
            ));
        }
        if !(1..=3600).contains(&self.sweep_secs) {
            return Err(invalid("worker.sweep_secs", "must be 1 to 3600"));
        }
        if !(1..=86_400).contains(&self.recover_secs) {
            return Err(invalid("worker.recover_secs", "must be 1 to 86400"));
        }
        if self.clock_skew_secs > 300 {
            return Err(invalid("worker.clock_skew_secs", "must be 0 to 300"));
        }
        check_attempts("worker.max_attempts", self.max_attempts)?;
        if self.retry_base_secs == 0 || self.retry_base_secs > self.retry_max_secs {
            return Err(invalid(
                "worker.retry_base_secs",
                "must be at least 1 and at most worker.retry_max_secs",
            ));
        }
        if self.retry_max_secs > SQS_MAX_VISIBILITY_SECS {
            return Err(invalid(
                "worker.retry_max_secs",
                format!("must be at most {SQS_MAX_VISIBILITY_SECS} (SQS's visibility limit)"),
            ));
        }
        Ok(())
    }
}
