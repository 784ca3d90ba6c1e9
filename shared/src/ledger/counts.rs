//! A request's counts: the counter slots replicas write, their live reports, and the sum.

use super::*;

/// Counter items per request: a replica adds its counts to the slot its name hashes to, so
/// replicas rarely write the same counter item and never make one key hot.
pub const COUNTER_SLOTS: u32 = 64;

/// The counter slot of the producer's own changes (redrives) and of a recount's
/// corrections; read with the replicas' slots.
pub const PRODUCER_SLOT: &str = "producer";

/// The counter slot of a replica (or producer) name.
pub fn counter_slot(name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % COUNTER_SLOTS).to_string()
}

/// How many of a request's jobs a replica runs now, reported with its counter writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveReport {
    pub request_id: String,
    pub replica: String,
    pub running: u32,
    /// Of those, attempts after a retry (already in the RETRYING count).
    pub after_retry: u32,
    pub at_ms: u64,
}

/// A request's counts, summed over its counter items. Terminal counts are exact; `running`
/// comes from the replicas' recent reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub retrying: i64,
    pub attempts: i64,
    /// Jobs running now, from the replicas' reports newer than a minute.
    pub running: i64,
    /// Of those, attempts after a retry (also in `retrying`).
    pub running_after_retry: i64,
    /// What its recorded attempts cost, in billionths of a US dollar (see `[prices]`).
    pub cost_nusd: i64,
    /// Of the attempts, those that ran on Lambda and on ECS.
    pub lambda_attempts: i64,
    pub ecs_attempts: i64,
}

impl Counts {
    pub fn add_delta(&mut self, d: &Delta) {
        self.succeeded += d.succeeded;
        self.failed += d.failed;
        self.cancelled += d.cancelled;
        self.retrying += d.retrying;
        self.attempts += d.attempts;
        self.cost_nusd += d.cost_nusd;
        self.lambda_attempts += d.lambda_attempts;
        self.ecs_attempts += d.ecs_attempts;
    }

    pub fn finished(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// The delta that turns `self` into `other` (terminal and retrying counts, attempts).
    pub fn delta_to(&self, other: &Counts) -> Delta {
        Delta {
            succeeded: other.succeeded - self.succeeded,
            failed: other.failed - self.failed,
            cancelled: other.cancelled - self.cancelled,
            retrying: other.retrying - self.retrying,
            attempts: other.attempts - self.attempts,
            // A recount reads the jobs' states, not what their attempts cost or where
            // they ran.
            cost_nusd: 0,
            lambda_attempts: 0,
            ecs_attempts: 0,
        }
    }
}

/// Reports older than this are not counted as running.
pub const LIVE_REPORT_MAX_AGE_MS: u64 = 60_000;
