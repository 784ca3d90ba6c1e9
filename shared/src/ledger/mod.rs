//! The ledger: the source of truth for what must run. One DynamoDB table (layout in
//! [`item`] and `docs/ARCHITECTURE.md`) holds a request item per request, a lean item per
//! job spread over many partitions, write-once payload, result and history items beside it,
//! and a few counter items per request. Every write a worker makes is conditional: a claim
//! takes a lease (owner, expiry, and a fence that only grows); heartbeats and outcome writes
//! hold only while owner and fence still match, so a replica that lost its lease can never
//! overwrite a newer owner's work.
//!
//! State changes that move a request's counts (outcomes, releases, cancels, redrives) are
//! [`Change`]s, committed in transactions together with the counter items they move, so a
//! request's counts are exact: a crash cannot record a job without counting it.
//!
//! [`Ledger`] is what a worker replica uses and [`RequestLedger`] what the producer uses;
//! [`dynamo::DynamoLedger`] is the real one and [`memory::MemoryLedger`] the in-memory one
//! for unit tests and benchmarks, which can apply a model of AWS's limits ([`model`]).
//!
//! One file per role, all re-exported here: `claim.rs` (what a claim asks and answers),
//! `change.rs` (changes and the deltas they move), `counts.rs` (counter slots, live
//! reports, a request's counts), `bucket.rs` (shared token buckets), `due.rs` (what the
//! sweeper reads), `error.rs` ([`LedgerError`]), `replica.rs` (the [`Ledger`] trait) and
//! `requests.rs` (the producer's records and the [`RequestLedger`] trait); [`window`]
//! releases a windowed request's jobs. The attempt records and the outcome of an attempt
//! stay in this file.

pub mod dynamo;
pub mod item;
pub mod memory;
pub mod model;
pub mod recorder;

mod bucket;
mod cap;
mod change;
mod claim;
mod counts;
mod due;
mod error;
mod page;
mod replica;
mod requests;
pub mod series;
#[cfg(test)]
mod tests;
pub mod window;

pub use bucket::*;
pub use cap::*;
pub use change::*;
pub use claim::*;
pub use counts::*;
pub use due::*;
pub use error::*;
pub use replica::*;
pub use requests::*;
pub use series::ThroughputPoint;

use std::fmt;

use crate::error::ErrorClass;
use crate::message::{RouteReason, Target};
use crate::state::{AttemptOutcome, JobState};

pub use item::{Due, DueKind};

/// The version of the table's layout this build reads and writes. A table recording another
/// version (or none, with an older layout's indexes) is refused at start-up.
pub const LAYOUT_VERSION: u32 = 6;

/// How long a replica trusts what it read of a request (cancelled or not): a cancel waits
/// this long before it returns, so no job of a cancelled request starts after it.
pub const REQUEST_VIEW_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Where an item lives: its partition and sort key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

impl ItemKey {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pk, self.sk)
    }
}

/// How an attempt ended, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Succeeded {
        /// The job's result (JSON text, at most `limits.max_result_bytes`: a larger one is
        /// kept in S3 and this is its reference), or `None` when it returned nothing.
        result: Option<String>,
    },
    /// The attempt failed and another one will follow at `retry_at_ms`.
    Retry {
        class: ErrorClass,
        error: String,
        retry_at_ms: u64,
        /// The attempt does not count against the limit (it was throttled before it ran).
        refund: bool,
    },
    /// The job failed for good.
    Failed { class: ErrorClass, error: String },
    /// The job's request was cancelled with `--stop-running` while it ran in a task.
    Cancelled,
}

impl Finish {
    pub fn state(&self) -> JobState {
        match self {
            Finish::Succeeded { .. } => JobState::Succeeded,
            Finish::Retry { .. } => JobState::Retrying,
            Finish::Failed { .. } => JobState::Failed,
            Finish::Cancelled => JobState::Cancelled,
        }
    }

    /// The error class and message of a failed attempt.
    pub fn error(&self) -> Option<(ErrorClass, &str)> {
        match self {
            Finish::Retry { class, error, .. } | Finish::Failed { class, error } => {
                Some((*class, error.as_str()))
            }
            _ => None,
        }
    }
}

/// One attempt as the job's history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub fence: u64,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Where it ran: `lambda` or `ecs`.
    pub target: Target,
    /// `succeeded`, `cancelled`, or the error class.
    pub outcome: AttemptOutcome,
    /// When the next attempt may start, if this one is to be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
    /// Why it ran where it ran (the routing decision).
    pub reason: RouteReason,
    /// A container's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why a task stopped, as ECS says (stop code and reason; out-of-memory shows here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// What it used, and what that cost at the configured prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What an attempt used: Lambda's billed duration and memory, or a Fargate task's size and
/// billed run time; and its estimated cost at the configured prices (`[prices]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Lambda: the billed duration (its REPORT line's, or the attempt's own time when Lambda
    /// does not report it). Fargate: the task's run time, at least Fargate's one minute.
    pub billed_ms: u64,
    pub memory_mb: u32,
    /// A Fargate task's CPU units (1024 = 1 vCPU); none for Lambda.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_units: Option<u32>,
    /// Its estimated cost in billionths of a US dollar.
    pub cost_nusd: u64,
}

/// An attempt of the history with its whole error text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub record: AttemptRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a history's attempts ran, in order, without repeats.
pub fn targets_of(attempts: &[HistoryEntry]) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    for h in attempts {
        if !targets.contains(&h.record.target) {
            targets.push(h.record.target);
        }
    }
    targets
}

/// A job's history: the newest attempts whole, and how many older ones were dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct History {
    pub attempts: Vec<HistoryEntry>,
    pub older: u64,
}
