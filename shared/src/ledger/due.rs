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

impl Requeue {
    /// What to send for the job `j` (its payload read apart when it has one).
    pub fn of(j: &super::item::JobItem, payload_json: String) -> Self {
        Requeue {
            job: j.job.clone(),
            state: j.state,
            job_type: j.job_type.clone(),
            payload_json,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            target: j.target,
        }
    }

    /// The job's message: its next attempt, enqueued at `now_ms`, for its request's
    /// `tenant` (the job item does not keep it).
    pub fn message(
        &self,
        now_ms: u64,
        tenant: Option<String>,
    ) -> Result<crate::message::JobMessage, crate::message::MessageError> {
        let mut m = crate::message::JobMessage::for_job(
            &self.job,
            &self.job_type,
            &self.payload_json,
            self.attempts + 1,
            self.max_attempts,
            self.target,
            now_ms,
        )?;
        m.tenant = tenant;
        Ok(m)
    }
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
