//! The table's layout (version [`super::LAYOUT_VERSION`]): keys, attribute names, and the
//! codec of the job item, with DynamoDB's own measure of an item's size. The DynamoDB ledger
//! reads items through [`decode_job`] and writes new ones through [`encode_job`]; the
//! in-memory ledger keeps [`JobItem`]s and measures them with [`encode_job`], so the limits
//! model charges exactly what DynamoDB would. A contract test checks that both ledgers leave
//! the same item after the same operations.
//!
//! Items (one table, keys `pk` and `sk`, both strings):
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | layout | `FLEET` | `LAYOUT` |
//! | request | `R#<request>` | `R` |
//! | job (lean: what claims, heartbeats and outcomes rewrite) | `J#<request>#<index mod job_shards>` | `<index, 9 digits>` |
//! | job payload (written once) | `D#<request>#<shard>` | `<index>#P` |
//! | job result (written by the attempt that succeeded) | same | `<index>#R` |
//! | job history (failed attempts, a bounded ring) | same | `<index>#H` |
//! | counters (one per request and replica slot) | `C#<request>#<slot>` | `C` |
//! | release record (a released range of a windowed request, until the sweeper checked it) | `RL#<request>#<hash of its first job mod 16>` | `<first index, 9 digits>` |
//! | job type durations | `T#<job type>` | `D` |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

mod counter;
mod job;
mod keys;
mod request;
mod satellite;
mod size;
#[cfg(test)]
mod tests;

pub use counter::*;
pub use job::*;
pub use keys::*;
pub use request::*;
pub use satellite::*;
pub use size::*;

pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's item size limit.
pub const ITEM_MAX_BYTES: usize = 400 * 1024;
/// The size a lean job item is kept under, so that every claim, heartbeat and outcome write
/// costs one write unit (DynamoDB bills writes per started KB of the larger of the old and
/// the new item).
pub const LEAN_MAX_BYTES: usize = 1024;
/// What a lean item holds besides its keys, job type and payload, at most: state, counts,
/// owner, lease, due keys, times, the last attempt and a short error (measured: 392 bytes
/// with a 41-character replica name; a test keeps it so).
pub const LEAN_FIXED_BYTES: usize = 400;
/// Longest error text on the lean item; the whole text is in the history item.
pub const SHORT_ERROR_BYTES: usize = 160;
/// Longest error text anywhere in the ledger (a history entry, a dead-letter record).
pub const ERROR_MAX_BYTES: usize = 2048;
/// Longest task stop reason kept.
pub const STOP_REASON_MAX_BYTES: usize = 512;
/// Upper bound of one history entry's size: the error, the stop reason, the routing reason
/// and the numbers.
pub const HISTORY_ENTRY_MAX_BYTES: usize = ERROR_MAX_BYTES + STOP_REASON_MAX_BYTES + 512;
/// Partitions of the sparse index of failed jobs, per request.
pub const FAILED_SHARDS: u32 = 8;

/// Index names and their keys.
pub const DUE_INDEX: &str = "due";
pub const FAILED_INDEX: &str = "failed";
/// Every request item, newest first: a single partition ([`REQUESTS_PARTITION`]) sorted by
/// creation; keys only (a request item's updates never rewrite its entry).
pub const REQUESTS_INDEX: &str = "requests";
/// The attributes the due index holds besides its keys (what the sweeper reads).
pub const DUE_PROJECTED: &[&str] = &[
    attr::STATE,
    attr::FENCE,
    attr::OWNER,
    attr::TASK,
    attr::RELEASE_END,
];
/// The attributes the failed index holds besides its keys (what `failures` lists).
pub const FAILED_PROJECTED: &[&str] = &[
    attr::ATTEMPTS,
    attr::ERROR_CLASS,
    attr::LAST_ERROR,
    attr::LAST_ATTEMPT,
];

/// Attribute names. Short: every name is stored (and billed) in every item.
pub mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const STATE: &str = "st";
    pub const ATTEMPTS: &str = "at";
    pub const MAX_ATTEMPTS: &str = "ma";
    pub const FENCE: &str = "fe";
    pub const OWNER: &str = "ow";
    pub const LEASE_UNTIL: &str = "lu";
    pub const RETRY_AT: &str = "ra";
    /// The due index's partition: `L#<n>` (a RUNNING job's lease) or `W#<n>` (a job waiting
    /// to be claimed); absent once the job is finished.
    pub const DUE_KEY: &str = "wk";
    /// The due index's sort key: when the job needs attention (lease end, or the moment it
    /// became claimable), ms since the epoch.
    pub const DUE_AT: &str = "wt";
    pub const JOB_TYPE: &str = "jt";
    pub const PAYLOAD: &str = "pl";
    /// The payload is in the job's payload item, not inline.
    pub const PAYLOAD_APART: &str = "px";
    pub const TARGET: &str = "tg";
    pub const CREATED_AT: &str = "ca";
    pub const ENQUEUED_AT: &str = "ea";
    pub const STARTED_AT: &str = "sa";
    pub const FINISHED_AT: &str = "fa";
    pub const DURATION: &str = "du";
    pub const REQUEUED_AT: &str = "rq";
    pub const TASK: &str = "ta";
    pub const LAST_ATTEMPT: &str = "la";
    pub const LAST_ERROR: &str = "le";
    pub const ERROR_CLASS: &str = "ec";
    pub const RESULT: &str = "rs";
    /// The result is in the result item, written by the attempt with this fence.
    pub const RESULT_FENCE: &str = "rf";
    /// The job's current attempt follows a retry: it is counted as RETRYING until its outcome.
    pub const RETRY_DEBT: &str = "rd";
    pub const FAILED_KEY: &str = "fk";
    pub const FAILED_INDEX_SK: &str = "fi";
    pub const EXPIRES_AT: &str = "xa";
    /// History item: attempts recorded in all (the ring keeps the newest).
    pub const RECORDED: &str = "n";
    /// Release record: the end of its range (the start is in its sort key).
    pub const RELEASE_END: &str = "re";
    /// Request item: the requests index's partition ([`super::REQUESTS_PARTITION`]).
    pub const LIST_KEY: &str = "lk";
    /// Request item: the requests index's sort key, `<created ms, 13 digits>#<request id>`.
    pub const LIST_AT: &str = "lt";
    /// Throughput item: jobs succeeded and failed in its bucket.
    pub const SERIES_SUCCEEDED: &str = "s";
    pub const SERIES_FAILED: &str = "f";
}

/// Request item attributes (read rarely; names kept readable).
pub mod req_attr {
    pub const REQUEST_ID: &str = "request_id";
    pub const JOB_TYPE: &str = "job_type";
    pub const TOTAL: &str = "total";
    pub const CONTENT_HASH: &str = "content_hash";
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    pub const TARGET: &str = "target";
    pub const CREATED_AT: &str = "created_at";
    pub const JOB_SHARDS: &str = "job_shards";
    pub const CANCELLED_AT: &str = "cancelled_at";
    pub const STOP_RUNNING: &str = "stop_running";
    pub const TOLERATED_FAILURES: &str = "tolerated_failures";
    /// When the request failed as a whole, and why.
    pub const FAILED_AT: &str = "failed_at";
    pub const FAILED_REASON: &str = "failed_reason";
    /// Jobs whose items and messages are written: the submission's watermark.
    pub const WRITTEN: &str = "written";
    /// The request's window, and how many of its jobs are released.
    pub const WINDOW: &str = "window";
    pub const RELEASED: &str = "released";
    pub const CAPPED: &str = "capped";
    pub const TENANT: &str = "tenant";
    /// Who releases its jobs, and until when.
    pub const RELEASER: &str = "releaser";
    pub const RELEASER_UNTIL: &str = "releaser_until";
    /// `options.results.s3_prefix`.
    pub const RESULTS_PREFIX: &str = "results_prefix";
    /// Its finish: when it was seen finished, who sends its event until when, when it was
    /// sent, and its results' manifest.
    pub const FINISHED_AT: &str = "finished_at";
    pub const NOTIFIER: &str = "notifier";
    pub const NOTIFIER_UNTIL: &str = "notifier_until";
    pub const NOTIFIED_AT: &str = "notified_at";
    pub const MANIFEST: &str = "manifest";
    /// The TTL attribute, the same as every item's.
    pub const EXPIRES_AT: &str = super::attr::EXPIRES_AT;
}

/// Layout item attributes.
pub mod layout_attr {
    pub const VERSION: &str = "version";
    pub const INDEX_SHARDS: &str = "index_shards";
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
