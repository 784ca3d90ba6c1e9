//! What the sweeper reads from the due index and takes over from it.

use super::*;
use crate::ids::JobId;
use crate::message::Target;

/// A job the due index lists: a RUNNING job whose lease ended, or a PENDING or RETRYING job
/// claimable since `at_ms` and not claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    pub job: JobId,
    pub key: ItemKey,
    pub kind: DueKind,
    pub fence: u64,
    pub owner: Option<String>,
    pub at_ms: u64,
    /// The ECS task running it, if it was handed off.
    pub task: Option<String>,
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
