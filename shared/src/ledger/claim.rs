//! What a claim asks for and what it answers: the request's view, the lease.

use super::*;
use crate::ids::JobId;
use crate::message::Target;

/// What a replica knows of a job's request, read from the request item and kept for a few
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestView {
    /// The request has a request item (the producer wrote it); a request whose jobs were
    /// sent straight to SQS has none, and its jobs' items are created by their claims.
    pub exists: bool,
    /// Partitions the request's job items are spread over.
    pub job_shards: u32,
    pub cancelled: bool,
    /// Cancelled with `--stop-running`: jobs running in tasks are stopped too.
    pub stop_running: bool,
    /// Jobs in the request.
    pub total: u32,
    /// Failed jobs it tolerates before it fails as a whole (none: any number).
    pub tolerated_failures: Option<u32>,
    /// It failed as a whole already.
    pub failed: bool,
    /// Its jobs are released through a window: a replica that records one finished
    /// releases the next ([`window::release`](super::window::release)).
    pub windowed: bool,
}

impl RequestView {
    /// The view of a request that has no request item.
    pub fn direct(default_shards: u32) -> Self {
        Self {
            exists: false,
            job_shards: default_shards,
            cancelled: false,
            stop_running: false,
            total: 0,
            tolerated_failures: None,
            failed: false,
            windowed: false,
        }
    }

    /// The view of a request with a request item.
    pub fn of(r: &RequestRecord) -> Self {
        Self {
            exists: true,
            job_shards: r.job_shards,
            cancelled: r.cancelled_at_ms.is_some(),
            stop_running: r.stop_running,
            total: r.total,
            tolerated_failures: r.tolerated_failures,
            failed: r.failed.is_some(),
            windowed: r.window.is_some(),
        }
    }
}

/// What a worker asks for when it claims a job.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub job: &'a JobId,
    /// The request's job shards (from its [`RequestView`]).
    pub shards: u32,
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
    /// The request has no item (its jobs were sent straight to SQS): the job's item is
    /// most likely missing too, so the claim tries to create it first.
    pub direct: bool,
}

/// A lease on a job: proof of ownership for every later write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub key: ItemKey,
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
    /// The attempt before this one, as the ledger has it.
    pub previous: Option<AttemptRecord>,
    /// This attempt follows a retry (the job is counted as RETRYING until its outcome).
    pub after_retry: bool,
    /// When the job became claimable, as the ledger had it (a PENDING or RETRYING job's due
    /// time): how far behind the queue is.
    pub due_ms: Option<u64>,
    /// The lean item's size after the claim, in bytes: whether a result fits inline.
    pub item_bytes: usize,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a claim's answer is used at once, never stored
pub enum Claim {
    /// The job is ours to run.
    Claimed(Lease),
    /// Not now: another worker holds a live lease, or the retry delay has not passed. The
    /// message should come back at `until_ms`.
    NotYet { state: JobState, until_ms: u64 },
    /// The job is already in a terminal state; its message is obsolete.
    Finished {
        key: ItemKey,
        state: JobState,
        last_error: Option<String>,
        error_class: Option<ErrorClass>,
    },
}

impl Claim {
    /// Why a claim was refused, from the item as it stood (both ledgers answer alike).
    pub fn refused(j: &crate::ledger::item::JobItem, req: &ClaimRequest<'_>) -> Claim {
        match j.state {
            s if s.is_terminal() => Claim::Finished {
                key: j.key.clone(),
                state: s,
                last_error: j.last_error.clone(),
                error_class: j.error_class,
            },
            JobState::Running => Claim::NotYet {
                state: JobState::Running,
                until_ms: j.lease_until_ms.unwrap_or(req.now_ms) + req.skew_ms,
            },
            s => Claim::NotYet {
                state: s,
                until_ms: j.retry_at_ms.unwrap_or(req.now_ms),
            },
        }
    }
}
