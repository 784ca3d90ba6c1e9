//! Where items live: the keys of every item, the job partitions, the due and failed index
//! partitions a job is listed in.

use super::*;
use crate::ids::JobId;
use crate::ledger::{ItemKey, LedgerError};
use crate::state::JobState;

pub const LAYOUT_PK: &str = "FLEET";
pub const LAYOUT_SK: &str = "LAYOUT";
pub const REQUEST_SK: &str = "R";
pub const COUNTER_SK: &str = "C";
pub const DURATIONS_SK: &str = "D";
/// Partition key prefix of a request's release records.
pub const RELEASE_PK_PREFIX: &str = "RL#";
/// Partitions a request's release records are spread over (by their first job's hash): the
/// sweepers delete them in bursts, which one partition key would take at 1,000 a second at
/// most.
pub const RELEASE_SHARDS: u32 = 16;
/// Due index partitions of release records: `X#<n>`.
pub const RELEASE_DUE_PREFIX: &str = "X";

/// The due index partition of requests whose event was not sent yet (a request item is in
/// it until then, at its next check): few items, one partition.
pub const FINISH_DUE_PARTITION: &str = "F#0";

/// The requests index's one partition: few writes (one per request), read newest first.
pub const REQUESTS_PARTITION: &str = "Q";

/// A request item's sort key in the requests index.
pub fn request_list_at(created_at_ms: u64, request_id: &str) -> String {
    format!("{created_at_ms:013}#{request_id}")
}

/// The throughput item of a request's bucket starting at `at_ms` (see
/// [`series`](crate::ledger::series)): one partition per request, sorted by time.
pub fn throughput_key(request_id: &str, at_ms: u64) -> ItemKey {
    ItemKey::new(throughput_partition(request_id), format!("{at_ms:013}"))
}

pub fn throughput_partition(request_id: &str) -> String {
    format!("S#{request_id}")
}

pub fn request_key(request_id: &str) -> ItemKey {
    ItemKey::new(format!("R#{request_id}"), REQUEST_SK)
}

/// The release record of a request's jobs from `start`.
pub fn release_key(request_id: &str, start: u32) -> ItemKey {
    let shard = JobId::new(request_id, start).map_or(0, |j| job_hash(&j)) % RELEASE_SHARDS;
    ItemKey::new(
        format!("{RELEASE_PK_PREFIX}{request_id}#{shard}"),
        format!("{start:09}"),
    )
}

/// The due index partition of release records in `shard`.
pub fn release_partition(shard: u32) -> String {
    format!("{RELEASE_DUE_PREFIX}#{shard}")
}

/// The request id of a request item's partition key.
pub fn request_of_key(pk: &str) -> Option<&str> {
    pk.strip_prefix("R#")
}

pub fn layout_key() -> ItemKey {
    ItemKey::new(LAYOUT_PK, LAYOUT_SK)
}

pub fn job_type_key(job_type: &str) -> ItemKey {
    ItemKey::new(format!("T#{job_type}"), DURATIONS_SK)
}

pub fn counter_key(request_id: &str, slot: &str) -> ItemKey {
    ItemKey::new(format!("C#{request_id}#{slot}"), COUNTER_SK)
}

/// The partition of a request's job shard.
pub fn job_partition(request_id: &str, shard: u32) -> String {
    format!("J#{request_id}#{shard}")
}

/// The lean item of a job whose request spreads its jobs over `shards` partitions.
pub fn job_key(job: &JobId, shards: u32) -> ItemKey {
    ItemKey::new(
        job_partition(job.request_id(), job.index() % shards.max(1)),
        format!("{:09}", job.index()),
    )
}

/// The payload, result or history item of a lean item: in the shard's data partition
/// (`D#<request>#<shard>`), so a Query of the lean partition reads lean items only.
pub fn satellite(key: &ItemKey, suffix: char) -> ItemKey {
    let rest = key.pk.strip_prefix("J#").unwrap_or(&key.pk);
    ItemKey::new(format!("D#{rest}"), format!("{}#{suffix}", key.sk))
}

pub const PAYLOAD_SUFFIX: char = 'P';
pub const RESULT_SUFFIX: char = 'R';
pub const HISTORY_SUFFIX: char = 'H';

/// The job a lean item's key names.
pub fn job_of(key: &ItemKey) -> Result<JobId, LedgerError> {
    let bad = |m: &str| LedgerError::Malformed {
        key: key.to_string(),
        message: m.to_owned(),
    };
    let rest = key
        .pk
        .strip_prefix("J#")
        .or_else(|| key.pk.strip_prefix("D#"))
        .ok_or_else(|| bad("not a job key"))?;
    let (request, _shard) = rest.rsplit_once('#').ok_or_else(|| bad("no shard"))?;
    let index: u32 = key
        .sk
        .split('#')
        .next()
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| bad("no index"))?;
    JobId::new(request, index).map_err(|e| bad(&e.to_string()))
}

/// FNV-1a of the job id: the due index partition and the failed index partition.
pub fn job_hash(job: &JobId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in job.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Which due-index partitions a job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DueKind {
    /// RUNNING: keyed by the lease's end.
    Lease,
    /// PENDING or RETRYING: keyed by when it became claimable.
    Waiting,
}

impl DueKind {
    pub fn prefix(self) -> &'static str {
        match self {
            DueKind::Lease => "L",
            DueKind::Waiting => "W",
        }
    }

    pub fn partition(self, shard: u32) -> String {
        format!("{}#{shard}", self.prefix())
    }
}

/// A job's place in the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub kind: DueKind,
    pub shard: u32,
    pub at_ms: u64,
}

/// The due entry of a job in state `state` due at `at_ms` (none once finished).
pub fn due_for(job: &JobId, state: JobState, at_ms: u64, index_shards: u32) -> Option<Due> {
    let kind = match state {
        JobState::Running => DueKind::Lease,
        JobState::Pending | JobState::Retrying => DueKind::Waiting,
        _ => return None,
    };
    Some(Due {
        kind,
        shard: job_hash(job) % index_shards.max(1),
        at_ms,
    })
}

/// The failed index partition of a job.
pub fn failed_partition(job: &JobId) -> String {
    format!("{}#{}", job.request_id(), job.index() % FAILED_SHARDS)
}

/// The item of a token bucket shared by the replicas.
pub fn bucket_key(name: &str) -> ItemKey {
    ItemKey::new(LAYOUT_PK, format!("BUCKET#{name}"))
}
