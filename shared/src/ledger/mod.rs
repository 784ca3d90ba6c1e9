//! The ledger: the source of truth for what must run. One DynamoDB table holds a request
//! item per request and one item per job (layout in `docs/ARCHITECTURE.md`). Every write a
//! worker makes is conditional: a claim takes a lease (owner, expiry, and a fence that only
//! grows); heartbeats and outcome writes hold only while owner and fence still match, so a
//! replica that lost its lease can never overwrite a newer owner's work.
//!
//! [`Ledger`] is the narrow interface the worker engine uses; [`dynamo::DynamoLedger`] is the
//! real one and [`memory::MemoryLedger`] the in-memory one for unit tests and benchmarks.

pub mod dynamo;
pub mod memory;

use std::future::Future;

use crate::ids::JobId;
use crate::message::Target;
use crate::state::{InvalidTransition, JobState};

/// What a worker asks for when it claims a job.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub job: &'a JobId,
    pub job_type: &'a str,
    /// The payload as JSON text, stored when the claim creates the job's item (a message
    /// sent straight to SQS by another service has no item yet).
    pub payload_json: &'a str,
    /// The message's own attempt limit, if it carries one.
    pub max_attempts: Option<u32>,
    pub owner: &'a str,
    pub now_ms: u64,
    /// The lease runs until `now_ms + lease_ms`.
    pub lease_ms: u64,
    /// Clock skew tolerated: another owner's lease counts as expired only `skew_ms` after
    /// its expiry time.
    pub skew_ms: u64,
    pub enqueued_at_ms: u64,
}

/// A lease on a job: proof of ownership for every later write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub owner: String,
    /// Grows with every claim of this job.
    pub fence: u64,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The limit recorded on the job, if the request or message set one.
    pub max_attempts: Option<u32>,
    /// When the claim was made.
    pub started_ms: u64,
    pub until_ms: u64,
    /// The job's own target (the request's option, or a redrive's).
    pub target: Option<Target>,
    /// The attempt before this one, as the history has it.
    pub previous: Option<AttemptRecord>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The job is ours to run.
    Claimed(Lease),
    /// Not now: another worker holds a live lease, or the retry delay has not passed. The
    /// message should come back at `until_ms`.
    NotYet { state: JobState, until_ms: u64 },
    /// The job is already in a terminal state; its message is obsolete.
    Finished {
        state: JobState,
        last_error: Option<String>,
        history: Vec<AttemptRecord>,
    },
}

/// How an attempt ended, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Succeeded {
        /// The job's result (JSON text), or `None` when it was too large to keep.
        result: Option<String>,
    },
    /// The attempt failed and another one will follow at `retry_at_ms`.
    Retry {
        error: String,
        retry_at_ms: u64,
        /// The attempt does not count against the limit (it was throttled before it ran).
        refund: bool,
    },
    /// The job failed for good.
    Failed { error: String },
}

impl Finish {
    pub fn state(&self) -> JobState {
        match self {
            Finish::Succeeded { .. } => JobState::Succeeded,
            Finish::Retry { .. } => JobState::Retrying,
            Finish::Failed { .. } => JobState::Failed,
        }
    }
}

/// One attempt as the job's history in the ledger keeps it (appended by the outcome write,
/// so it costs no extra call).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub fence: u64,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Where it ran: `lambda` or `ecs`.
    pub target: String,
    /// `succeeded`, or the error class.
    pub outcome: String,
    /// When the next attempt may start, if this one is to be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
    /// Why it ran where it ran (the routing decision).
    #[serde(default)]
    pub reason: String,
    /// A container's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why a task stopped, as ECS says (stop code and reason; out-of-memory shows here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

/// Leases are spread over this many shards of the lease-expiry index, so finding expired
/// leases is a few small queries, never a table scan.
pub const LEASE_SHARDS: u32 = 16;

/// The lease-expiry shard of a job (stable: FNV-1a of the job id).
pub fn lease_shard(job: &JobId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in job.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % LEASE_SHARDS
}

/// A job the lease-expiry index lists as due: a RUNNING job whose lease expired, or a
/// PENDING or RETRYING job claimable since then. (The index holds every job that is not
/// finished, keyed by when it needs attention.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub job: JobId,
    pub fence: u64,
    pub owner: Option<String>,
    pub lease_until_ms: u64,
    /// The ECS task running it, if it was handed off.
    pub task: Option<String>,
    /// RUNNING (a lease that expired), or PENDING / RETRYING (claimable since
    /// `lease_until_ms`, and not claimed yet).
    pub state: JobState,
}

/// A job the sweeper sends to the queue again, as the ledger has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    pub job: JobId,
    pub state: JobState,
    pub job_type: String,
    pub payload_json: String,
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    pub target: Option<Target>,
}

/// A handed-off job taken over from a replica whose lease expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub lease: Lease,
    pub job_type: String,
    pub payload_json: String,
    pub task: String,
    pub enqueued_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A conditional write found another owner or fence: this replica's lease is gone and its
    /// write was refused. Not retryable.
    #[error("lease lost on {job}: the ledger refused a write with fence {fence}")]
    Stale { job: String, fence: u64 },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// A call to DynamoDB failed.
    #[error("ledger call {op} failed: {message}")]
    Aws { op: &'static str, message: String },
    /// An item does not have the shape this build writes.
    #[error("ledger item {key} is malformed: {message}")]
    Malformed { key: String, message: String },
}

/// The ledger operations a worker replica performs.
pub trait Ledger: Send + Sync + 'static {
    /// Takes the lease on a job if it is claimable: new, PENDING or RETRYING with its delay
    /// passed, or RUNNING under a lease that expired. The fence and the attempt count grow.
    fn claim(
        &self,
        req: &ClaimRequest<'_>,
    ) -> impl Future<Output = Result<Claim, LedgerError>> + Send;

    /// Extends the lease to `until_ms`, if it is still ours.
    fn heartbeat(
        &self,
        lease: &Lease,
        until_ms: u64,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records the attempt's outcome and appends `record` to the job's history, if the lease is
    /// still ours. Returns the whole history when the job became FAILED (for its dead-letter
    /// record), else an empty list.
    fn finish(
        &self,
        lease: &Lease,
        finish: &Finish,
        record: &AttemptRecord,
    ) -> impl Future<Output = Result<Vec<AttemptRecord>, LedgerError>> + Send;

    /// Gives the job back unfinished (shutdown): RETRYING, claimable at once, and the
    /// attempt is not counted.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records the task a handed-off attempt runs in, if the lease is still ours.
    fn record_task(
        &self,
        lease: &Lease,
        task: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Up to `limit` unfinished jobs of one shard due before `before_ms`: RUNNING ones whose
    /// lease ended, PENDING or RETRYING ones claimable since.
    fn expired_leases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Expired>, LedgerError>> + Send;

    /// Takes over a handed-off job whose lease expired: same attempt, higher fence, new
    /// owner and lease. `None` when someone else was faster or the job moved on.
    fn adopt(
        &self,
        expired: &Expired,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        skew_ms: u64,
    ) -> impl Future<Output = Result<Option<Adopted>, LedgerError>> + Send;

    /// Claims the right to send a job's message again (its message looks lost): a RUNNING
    /// job without a task whose lease ended, or a PENDING or RETRYING job, due before
    /// `due_before_ms`, not re-sent in the last `again_after_ms`. Two sweepers racing: one
    /// wins. `None` when the job moved on.
    fn requeue(
        &self,
        expired: &Expired,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> impl Future<Output = Result<Option<Requeue>, LedgerError>> + Send;

    /// Recent durations (ms) of a job type's successful attempts, newest last.
    fn durations(
        &self,
        job_type: &str,
    ) -> impl Future<Output = Result<Vec<u64>, LedgerError>> + Send;

    /// Adds durations to a job type's record, keeping the newest `window`.
    fn add_durations(
        &self,
        job_type: &str,
        samples: &[u64],
        window: usize,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

/// A request as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub request_id: String,
    pub job_type: String,
    pub total: u32,
    /// SHA-256 of the request's canonical content: the same id with other content is refused.
    pub content_hash: String,
    pub max_attempts: Option<u32>,
    pub target: Option<Target>,
    pub created_at_ms: u64,
}

/// A job item the producer writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job: JobId,
    pub job_type: String,
    pub payload_json: String,
    pub max_attempts: Option<u32>,
    pub target: Option<Target>,
    pub created_at_ms: u64,
}

/// What a redrive did to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    /// FAILED (or already redriven and still PENDING) → PENDING with a new limit.
    Redriven {
        job_type: String,
        payload_json: String,
        attempts: u32,
        max_attempts: u32,
    },
    /// The job is in another state; nothing changed.
    NotFailed(JobState),
    /// No such job in the ledger.
    Missing,
}

/// One job in full, as `jobs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDetail {
    pub job_id: String,
    pub index: u32,
    pub state: JobState,
    pub attempts: u32,
    pub task: Option<String>,
    pub last_error: Option<String>,
    pub history: Vec<AttemptRecord>,
}

/// One job's state, as `status` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    pub index: u32,
    pub state: JobState,
    pub attempts: u32,
}
