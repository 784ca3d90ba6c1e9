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

pub mod dynamo;
pub mod item;
pub mod memory;
pub mod model;
pub mod recorder;

use std::fmt;
use std::future::Future;

use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::message::{RouteReason, Target};
use crate::state::{AttemptOutcome, InvalidTransition, JobState};

pub use item::{Due, DueKind};

/// The version of the table's layout this build reads and writes. A table recording another
/// version (or none, with an older layout's indexes) is refused at start-up.
pub const LAYOUT_VERSION: u32 = 2;

/// How long a replica trusts what it read of a request (cancelled or not): a cancel waits
/// this long before it returns, so no job of a cancelled request starts after it.
pub const REQUEST_VIEW_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Counter items per request: a replica adds its counts to the slot its name hashes to, so
/// replicas rarely write the same counter item and never make one key hot.
pub const COUNTER_SLOTS: u32 = 64;

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
}

impl RequestView {
    /// The view of a request that has no request item.
    pub fn direct(default_shards: u32) -> Self {
        Self {
            exists: false,
            job_shards: default_shards,
            cancelled: false,
            stop_running: false,
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

/// A state change that moves a request's counts, committed with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An attempt's outcome (needs the lease).
    Finish {
        lease: Lease,
        finish: Finish,
        record: AttemptRecord,
    },
    /// Gives an unfinished attempt back (shutdown, or a lease that ran out unrenewed):
    /// RETRYING, claimable at once, the attempt not counted.
    Release { lease: Lease, now_ms: u64 },
    /// A job that has not started (PENDING, or RETRYING and waiting) → CANCELLED.
    CancelWaiting {
        job: JobId,
        key: ItemKey,
        from: JobState,
        now_ms: u64,
    },
    /// FAILED → PENDING with `budget` more attempts than it used (an operator's redrive);
    /// `fence` is the fence the caller read (the write holds only if nobody moved the job).
    Redrive {
        job: JobId,
        key: ItemKey,
        fence: u64,
        budget: u32,
        target: Option<Target>,
        now_ms: u64,
    },
}

/// How a change moves its request's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Jobs waiting for, or running, an attempt after a retry.
    pub retrying: i64,
    /// Attempts recorded (a throttled attempt refunded is not one).
    pub attempts: i64,
}

impl Delta {
    pub fn is_zero(&self) -> bool {
        *self == Delta::default()
    }

    pub fn add(&mut self, o: &Delta) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.retrying += o.retrying;
        self.attempts += o.attempts;
    }
}

impl Change {
    pub fn job(&self) -> &JobId {
        match self {
            Change::Finish { lease, .. } | Change::Release { lease, .. } => &lease.job,
            Change::CancelWaiting { job, .. } | Change::Redrive { job, .. } => job,
        }
    }

    pub fn key(&self) -> &ItemKey {
        match self {
            Change::Finish { lease, .. } | Change::Release { lease, .. } => &lease.key,
            Change::CancelWaiting { key, .. } | Change::Redrive { key, .. } => key,
        }
    }

    /// The state the job is left in.
    pub fn state(&self) -> JobState {
        match self {
            Change::Finish { finish, .. } => finish.state(),
            Change::Release { .. } => JobState::Retrying,
            Change::CancelWaiting { .. } => JobState::Cancelled,
            Change::Redrive { .. } => JobState::Pending,
        }
    }

    /// Whether the change appends to the job's history item.
    pub fn writes_history(&self) -> bool {
        matches!(
            self,
            Change::Finish {
                finish: Finish::Retry { .. } | Finish::Failed { .. },
                ..
            }
        )
    }

    /// How the change moves the request's counters: one pure rule for both ledgers.
    ///
    /// A job is counted RETRYING from the write that schedules a retry (or releases it)
    /// until the write that ends the attempt after it; a terminal state is counted once, by
    /// the write that enters it, and a redrive takes a FAILED job out of the failed count.
    pub fn delta(&self) -> Delta {
        let mut d = Delta::default();
        match self {
            Change::Finish { lease, finish, .. } => {
                let debt = i64::from(lease.after_retry);
                match finish {
                    Finish::Succeeded { .. } => {
                        d.succeeded = 1;
                        d.attempts = 1;
                        d.retrying = -debt;
                    }
                    Finish::Failed { .. } => {
                        d.failed = 1;
                        d.attempts = 1;
                        d.retrying = -debt;
                    }
                    Finish::Cancelled => {
                        d.cancelled = 1;
                        d.attempts = 1;
                        d.retrying = -debt;
                    }
                    Finish::Retry { refund, .. } => {
                        d.attempts = i64::from(!refund);
                        d.retrying = 1 - debt;
                    }
                }
            }
            Change::Release { lease, .. } => d.retrying = 1 - i64::from(lease.after_retry),
            Change::CancelWaiting { from, .. } => {
                d.cancelled = 1;
                d.retrying = -i64::from(*from == JobState::Retrying);
            }
            Change::Redrive { .. } => d.failed = -1,
        }
        d
    }
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
}

impl Counts {
    pub fn add_delta(&mut self, d: &Delta) {
        self.succeeded += d.succeeded;
        self.failed += d.failed;
        self.cancelled += d.cancelled;
        self.retrying += d.retrying;
        self.attempts += d.attempts;
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
        }
    }
}

/// Reports older than this are not counted as running.
pub const LIVE_REPORT_MAX_AGE_MS: u64 = 60_000;

/// A token bucket kept in the ledger (item `FLEET` / `BUCKET#<name>`), shared by the
/// replicas: fleet-wide rates such as the account's RunTask budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub name: String,
    /// Tokens a second.
    pub rate: f64,
    /// Most tokens saved up.
    pub burst: f64,
}

impl Bucket {
    /// The tokens a bucket holds at `now_ms`, from what it held (`tokens` at `at_ms`; a
    /// bucket never written is full).
    pub fn refilled(&self, stored: Option<(f64, u64)>, now_ms: u64) -> f64 {
        match stored {
            None => self.burst,
            Some((tokens, at_ms)) => {
                let secs = now_ms.saturating_sub(at_ms) as f64 / 1000.0;
                (tokens + secs * self.rate).min(self.burst).max(0.0)
            }
        }
    }

    /// What a take of `want` from `available` tokens gives.
    pub fn take(&self, available: f64, want: u32) -> Taken {
        let granted = (available.floor() as u32).min(want);
        let wait_ms = if granted == 0 {
            (((1.0 - available) / self.rate.max(1e-6)) * 1000.0)
                .ceil()
                .max(1.0) as u64
        } else {
            0
        };
        Taken { granted, wait_ms }
    }
}

/// The answer to [`Ledger::take_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub granted: u32,
    /// With none granted: when the next token is due.
    pub wait_ms: u64,
}

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

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A conditional write found another owner or fence: this replica's lease is gone and its
    /// write was refused. Not retryable.
    #[error("lease lost on {job}: the ledger refused a write with fence {fence}")]
    Stale { job: String, fence: u64 },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// A call to DynamoDB failed; `class` says whether to try again.
    #[error("ledger call {op} failed ({class}): {message}")]
    Aws {
        op: &'static str,
        class: ErrorClass,
        message: String,
    },
    /// An item does not have the shape this build writes.
    #[error("ledger item {key} is malformed: {message}")]
    Malformed { key: String, message: String },
    /// The table is not laid out as this build needs.
    #[error("{0}")]
    Layout(String),
}

impl LedgerError {
    /// How to treat the error: stale writes and malformed items are permanent.
    pub fn class(&self) -> ErrorClass {
        match self {
            LedgerError::Aws { class, .. } => *class,
            _ => ErrorClass::Permanent,
        }
    }

    /// A throttled call, as the limits model and DynamoDB's throughput errors give it.
    pub fn throttled(op: &'static str, message: impl Into<String>) -> Self {
        LedgerError::Aws {
            op,
            class: ErrorClass::Throttled,
            message: message.into(),
        }
    }
}

/// The ledger operations a worker replica performs.
pub trait Ledger: Send + Sync + 'static {
    /// Partitions of the due index (recorded in the table's layout item).
    fn index_shards(&self) -> u32;

    /// What the request item says (or [`RequestView::direct`] when there is none).
    fn request_view(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<RequestView, LedgerError>> + Send;

    /// Takes the lease on a job if it is claimable: new (only for a direct request),
    /// PENDING or RETRYING with its delay passed, or RUNNING under a lease that expired.
    /// The fence and the attempt count grow.
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

    /// Records the task a handed-off attempt runs in, if the lease is still ours.
    fn record_task(
        &self,
        lease: &Lease,
        task: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Takes up to `want` tokens from a token bucket kept in the ledger and shared by every
    /// replica (`bucket.rate` tokens a second, at most `bucket.burst` saved): a read and a
    /// conditional write, tried again when another replica wrote between them.
    fn take_tokens(
        &self,
        bucket: &Bucket,
        want: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<Taken, LedgerError>> + Send;

    /// For each `(key, fence)`, whether the job is still RUNNING at that fence (one read of
    /// up to 100 items per call: how a replica learns that jobs it handed off have ended).
    fn running_at(
        &self,
        attempts: &[(ItemKey, u64)],
    ) -> impl Future<Output = Result<Vec<bool>, LedgerError>> + Send;

    /// Commits changes (at most 99 jobs) with the counters they move, in one transaction,
    /// under counter slot `slot`, with the replica's live reports. `Err` when the whole call
    /// failed (throttled or transient: try again); otherwise one result per change, in order
    /// (`Stale` for a change whose condition did not hold; the others were written).
    fn commit(
        &self,
        slot: &str,
        changes: &[Change],
        live: &[LiveReport],
    ) -> impl Future<Output = Result<Vec<Result<(), LedgerError>>, LedgerError>> + Send;

    /// Up to `limit` entries of one due-index partition due before `before_ms`, oldest
    /// first: `Lease` partitions hold RUNNING jobs, `Waiting` ones PENDING and RETRYING jobs.
    fn due(
        &self,
        kind: DueKind,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueEntry>, LedgerError>> + Send;

    /// Takes over a handed-off job whose lease expired: same attempt, higher fence, new
    /// owner and lease. `None` when someone else was faster or the job moved on.
    fn adopt(
        &self,
        entry: &DueEntry,
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
        entry: &DueEntry,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> impl Future<Output = Result<Option<Requeue>, LedgerError>> + Send;

    /// A job's history (its failed attempts, and the last attempt of any kind).
    fn history(&self, key: &ItemKey) -> impl Future<Output = Result<History, LedgerError>> + Send;

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
    /// Partitions its job items are spread over.
    pub job_shards: u32,
    /// Jobs whose items and messages the producer has written (a cut-short submission
    /// resumes from here).
    pub written: u32,
    pub cancelled_at_ms: Option<u64>,
    pub stop_running: bool,
}

/// The answer to writing a request item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRequestOutcome {
    Created,
    /// A request with this id exists; here is what it holds.
    Exists(RequestRecord),
}

/// A job item the producer writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job: JobId,
    pub key: ItemKey,
    pub job_type: String,
    pub payload_json: String,
    pub max_attempts: Option<u32>,
    pub target: Option<Target>,
    pub created_at_ms: u64,
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
    pub error_class: Option<ErrorClass>,
    /// The last attempt (the history has the failed ones whole).
    pub last: Option<AttemptRecord>,
    pub finished_at_ms: Option<u64>,
}

/// A page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` after the last.
    pub next: Option<String>,
}

/// The ledger operations the producer performs.
pub trait RequestLedger: Send + Sync + 'static {
    /// Writes a request item unless one with this id exists.
    fn put_request(
        &self,
        r: &RequestRecord,
    ) -> impl Future<Output = Result<PutRequestOutcome, LedgerError>> + Send;

    fn get_request(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<RequestRecord>, LedgerError>> + Send;

    /// Writes PENDING job items (and their payload items) unconditionally: the caller passes
    /// only jobs that have no item yet.
    fn put_jobs(&self, jobs: &[NewJob]) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// The states of the jobs at `keys` that have an item (a resumed submission's check).
    fn job_states(
        &self,
        keys: &[ItemKey],
    ) -> impl Future<Output = Result<Vec<Option<JobState>>, LedgerError>> + Send;

    /// Moves the request's submission watermark up to `written` (never down).
    fn set_written(
        &self,
        request_id: &str,
        written: u32,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Marks the request cancelled (one write); `stop_running` also asks replicas to stop
    /// its jobs running in tasks. `false` when there is no such request.
    fn cancel_request(
        &self,
        request_id: &str,
        now_ms: u64,
        stop_running: bool,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// The request's counts: a bounded number of reads whatever its size.
    fn counts(
        &self,
        request_id: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Counts, LedgerError>> + Send;

    /// Counts the request's jobs from their items (every item is read) and corrects the
    /// counters by the difference; the recount.
    fn recount(
        &self,
        request_id: &str,
        job_shards: u32,
    ) -> impl Future<Output = Result<Counts, LedgerError>> + Send;

    /// A page of a request's jobs (in shard order, then by index).
    fn jobs_page(
        &self,
        request_id: &str,
        job_shards: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<JobDetail>, LedgerError>> + Send;

    /// A page of a request's FAILED jobs, from the failed index.
    fn failed_page(
        &self,
        request_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<JobDetail>, LedgerError>> + Send;

    /// A job's lean item and its payload.
    fn job(
        &self,
        key: &ItemKey,
    ) -> impl Future<Output = Result<Option<(item::JobItem, String)>, LedgerError>> + Send;

    /// A succeeded job's result as recorded (JSON text), if it has one.
    fn result(
        &self,
        key: &ItemKey,
    ) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send;

    /// A job's history.
    fn job_history(
        &self,
        key: &ItemKey,
    ) -> impl Future<Output = Result<History, LedgerError>> + Send;

    /// Commits producer-side changes (redrives) under counter slot `slot`.
    fn commit_changes(
        &self,
        slot: &str,
        changes: &[Change],
    ) -> impl Future<Output = Result<Vec<Result<(), LedgerError>>, LedgerError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(after_retry: bool) -> Lease {
        let job = JobId::new("r", 1).unwrap_or_else(|e| panic!("{e}"));
        Lease {
            key: item::job_key(&job, 1),
            job,
            owner: "a".into(),
            fence: 1,
            attempt: 1,
            max_attempts: None,
            started_ms: 0,
            until_ms: 1,
            target: None,
            previous: None,
            after_retry,
            due_ms: None,
            item_bytes: 0,
        }
    }

    fn finish(after_retry: bool, finish: Finish) -> Delta {
        Change::Finish {
            lease: lease(after_retry),
            finish,
            record: AttemptRecord {
                attempt: 1,
                fence: 1,
                started_ms: 0,
                ended_ms: 1,
                target: crate::message::Target::Lambda,
                outcome: crate::state::AttemptOutcome::Failed(ErrorClass::JobFailure),
                retry_at_ms: None,
                reason: crate::message::RouteReason::of(crate::message::RouteRule::Default),
                exit_code: None,
                stopped_reason: None,
            },
        }
        .delta()
    }

    fn d(succeeded: i64, failed: i64, cancelled: i64, retrying: i64, attempts: i64) -> Delta {
        Delta {
            succeeded,
            failed,
            cancelled,
            retrying,
            attempts,
        }
    }

    /// Every change, first attempt and after a retry: how the counters move.
    #[test]
    fn every_change_moves_the_counters_by_the_rule() {
        let ok = Finish::Succeeded { result: None };
        let retry = |refund| Finish::Retry {
            class: ErrorClass::JobFailure,
            error: "e".into(),
            retry_at_ms: 5,
            refund,
        };
        let failed = Finish::Failed {
            class: ErrorClass::Permanent,
            error: "e".into(),
        };
        let table = [
            (finish(false, ok.clone()), d(1, 0, 0, 0, 1)),
            (finish(true, ok), d(1, 0, 0, -1, 1)),
            (finish(false, retry(false)), d(0, 0, 0, 1, 1)),
            (finish(true, retry(false)), d(0, 0, 0, 0, 1)),
            (finish(false, retry(true)), d(0, 0, 0, 1, 0)),
            (finish(true, retry(true)), d(0, 0, 0, 0, 0)),
            (finish(false, failed.clone()), d(0, 1, 0, 0, 1)),
            (finish(true, failed), d(0, 1, 0, -1, 1)),
            (finish(false, Finish::Cancelled), d(0, 0, 1, 0, 1)),
            (finish(true, Finish::Cancelled), d(0, 0, 1, -1, 1)),
        ];
        for (i, (got, want)) in table.into_iter().enumerate() {
            assert_eq!(got, want, "row {i}");
        }
        let job = JobId::new("r", 1).unwrap_or_else(|e| panic!("{e}"));
        let key = item::job_key(&job, 1);
        let release = |after_retry| {
            Change::Release {
                lease: lease(after_retry),
                now_ms: 0,
            }
            .delta()
        };
        assert_eq!(release(false), d(0, 0, 0, 1, 0));
        assert_eq!(release(true), d(0, 0, 0, 0, 0));
        let cancel = |from| {
            Change::CancelWaiting {
                job: job.clone(),
                key: key.clone(),
                from,
                now_ms: 0,
            }
            .delta()
        };
        assert_eq!(cancel(JobState::Pending), d(0, 0, 1, 0, 0));
        assert_eq!(cancel(JobState::Retrying), d(0, 0, 1, -1, 0));
        let redrive = Change::Redrive {
            job: job.clone(),
            key,
            fence: 1,
            budget: 3,
            target: None,
            now_ms: 0,
        };
        assert_eq!(redrive.delta(), d(0, -1, 0, 0, 0));
    }

    #[test]
    fn buckets_refill_at_their_rate_up_to_their_burst() {
        let b = Bucket {
            name: "b".into(),
            rate: 20.0,
            burst: 20.0,
        };
        assert_eq!(b.refilled(None, 5), 20.0);
        assert_eq!(b.refilled(Some((0.0, 1000)), 1500), 10.0);
        assert_eq!(b.refilled(Some((15.0, 1000)), 9000), 20.0);
        // Another replica's clock ahead of ours adds nothing.
        assert_eq!(b.refilled(Some((3.0, 2000)), 1000), 3.0);
        assert_eq!(
            b.take(7.9, 5),
            Taken {
                granted: 5,
                wait_ms: 0
            }
        );
        assert_eq!(
            b.take(2.5, 5),
            Taken {
                granted: 2,
                wait_ms: 0
            }
        );
        assert_eq!(
            b.take(0.5, 5),
            Taken {
                granted: 0,
                wait_ms: 25
            }
        );
    }

    #[test]
    fn slots_are_stable_and_in_range() {
        assert_eq!(counter_slot("replica-a"), counter_slot("replica-a"));
        let slots: std::collections::BTreeSet<String> =
            (0..500).map(|i| counter_slot(&format!("r{i}"))).collect();
        assert!(slots.len() > 50, "{}", slots.len());
        assert!(
            slots
                .iter()
                .all(|s| s.parse::<u32>().is_ok_and(|n| n < COUNTER_SLOTS))
        );
    }
}
