//! The ledger operations the producer performs, and the records they read and write.

use std::future::Future;

use super::item::JobItem;
use super::*;
use crate::ids::JobId;
use crate::message::Target;

/// A release of a windowed request's jobs `range` at `at_ms`: the one write a release makes
/// besides the cursor's. It is in the due index (partitions `X#<n>`) until a sweeper has
/// checked, once the queue has moved past `at_ms`, that every job of the range was sent (a
/// job still PENDING with no due entry was not: the sweeper sends it), and deleted then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub request_id: String,
    pub range: std::ops::Range<u32>,
    pub at_ms: u64,
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
    /// Failed jobs the request tolerates (from `options.tolerated_failure_percent` and
    /// `options.tolerated_failure_count`, the lower of the two): one more fails the request.
    pub tolerated_failures: Option<u32>,
    /// Set when the request failed as a whole (its failures went over what it tolerates); a
    /// failed request is cancelled too, so its jobs not started yet never start.
    pub failed: Option<RequestFailure>,
    /// Most of its jobs released to the queue and not finished at a time (its
    /// `options.max_concurrency`, or the fleet's `limits.window`); `None` for a request
    /// whose messages were all sent at once.
    pub window: Option<u32>,
    /// The window is a cap the request set (`options.max_concurrency`, or a `limit`): its
    /// jobs waiting for a retry keep their places. A default window (`limits.window`, only
    /// a backlog's bound) lets them go while they wait.
    pub capped: bool,
    /// Jobs released so far, by index: jobs `0..released` had (or will have) a message.
    pub released: u32,
    /// Whom it runs for (`tenant` in the request file); `None`: its request id.
    pub tenant: Option<String>,
    /// Who releases its jobs, and until when (ms): one releaser at a time, so that racing
    /// releases do not mark the same jobs (see [`window`](super::window)).
    pub releaser: Option<(String, u64)>,
    /// Where its results are exported when it finishes (`options.results.s3_prefix`).
    pub results_prefix: Option<String>,
    /// Its finish: when it was seen finished, and its event.
    pub completion: Completion,
}

/// A request's finish, as its item records it (see [`RequestLedger::finish_request`]).
///
/// Until its event is sent the request item is in the due index (partition
/// [`FINISH_DUE_PARTITION`](super::item::FINISH_DUE_PARTITION)) at `check_at_ms`: a
/// sweeper then checks whether it finished, and sends the event a replica that stopped
/// did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// When a replica first found every job terminal.
    pub finished_at_ms: Option<u64>,
    /// Who sends its event (and exports its results), and until when (ms).
    pub notifier: Option<(String, u64)>,
    /// When its event was sent (and its results exported): it is out of the due index.
    pub notified_at_ms: Option<u64>,
    /// `s3://` of its results' manifest, when they were exported on finishing.
    pub manifest: Option<String>,
    /// When a sweeper checks it next; `None` once notified.
    pub check_at_ms: Option<u64>,
}

/// Every job of the request is in a terminal state (a cancelled request's jobs never
/// released count as cancelled).
pub fn is_done(r: &RequestRecord, c: &Counts) -> bool {
    let n = |v: i64| v.max(0) as u64;
    let finished =
        n(c.succeeded) + n(c.failed) + n(c.cancelled) + u64::from(window::never_released(r));
    r.total > 0 && finished >= u64::from(r.total)
}

/// The request as a whole: `FAILED` (over its tolerated failures), `CANCELLED`, `FINISHED`
/// (every job terminal) or `RUNNING`.
pub fn request_state(failed: bool, cancelled: bool, done: bool) -> &'static str {
    match (failed, cancelled, done) {
        (true, _, _) => "FAILED",
        (false, true, _) => "CANCELLED",
        (false, false, true) => "FINISHED",
        (false, false, false) => "RUNNING",
    }
}

impl RequestRecord {
    /// A request of `total` jobs created at `created_at_ms`, with every option unset: no
    /// window, no threshold, its jobs in one partition, none written yet.
    pub fn new(request_id: &str, job_type: &str, total: u32, created_at_ms: u64) -> Self {
        RequestRecord {
            request_id: request_id.to_owned(),
            job_type: job_type.to_owned(),
            total,
            content_hash: String::new(),
            max_attempts: None,
            target: None,
            created_at_ms,
            job_shards: 1,
            written: 0,
            cancelled_at_ms: None,
            stop_running: false,
            tolerated_failures: None,
            failed: None,
            window: None,
            capped: false,
            released: 0,
            tenant: None,
            releaser: None,
            results_prefix: None,
            completion: Completion::default(),
        }
    }
}

/// Why and when a request failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestFailure {
    pub at_ms: u64,
    pub reason: String,
}

/// The answer to writing a request item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRequestOutcome {
    Created,
    /// A request with this id exists; here is what it holds.
    Exists(Box<RequestRecord>),
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
    /// Held back by its request's window: written without a due entry, released (and sent)
    /// later by [`window::release`](super::window::release).
    pub held: bool,
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
    /// Where a succeeded job's result is (inline on its item, or in its result item).
    pub result: super::item::ResultAt,
}

impl From<&JobItem> for JobDetail {
    fn from(j: &JobItem) -> Self {
        JobDetail {
            job_id: j.job.to_string(),
            index: j.job.index(),
            state: j.state,
            attempts: j.attempts,
            task: j.task.clone(),
            last_error: j.last_error.clone(),
            error_class: j.error_class,
            last: j.last.clone(),
            finished_at_ms: j.finished_at_ms,
            result: j.result.clone(),
        }
    }
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

    /// Sets the request's window (see [`RequestRecord::window`]). `false` when there is no
    /// such request or it has no window.
    fn set_window(
        &self,
        request_id: &str,
        window: u32,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Gives each of `jobs` still PENDING with no due entry its due entry (from then on the
    /// sweeper re-sends it if its message is lost), in one conditional write per job: what
    /// the sweeper does with the jobs of a release that were not sent. Returns what to send
    /// for those it marked (a job marked already, by a racing sweeper, or missing is left
    /// out).
    fn mark_released(
        &self,
        jobs: &[JobId],
        job_shards: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<Requeue>, LedgerError>> + Send;

    /// Writes a release record (unconditionally: a racing release of the same first job
    /// writes the same key).
    fn put_release(
        &self,
        release: &ReleaseRecord,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Moves the request's release cursor from `range.start` to `range.end` and makes
    /// `releaser` its releaser until `until_ms`, in one conditional write: only if the
    /// cursor is at `range.start` and nobody else's turn lasts at `now_ms`. `false` when
    /// another release moved the cursor first or holds the turn.
    fn advance_release(
        &self,
        request_id: &str,
        range: std::ops::Range<u32>,
        releaser: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// What to send for those of `jobs` that are PENDING with no due entry (released and
    /// not yet sent, or sent and not yet claimed): one BatchGetItem per 100 jobs, strongly
    /// consistent or not, and their payload items.
    fn released_jobs(
        &self,
        jobs: &[JobId],
        job_shards: u32,
        consistent: bool,
    ) -> impl Future<Output = Result<Vec<Requeue>, LedgerError>> + Send;

    /// Release records in due index partition `shard` released before `before_ms`, oldest
    /// first, at most `limit`.
    fn due_releases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ReleaseRecord>, LedgerError>> + Send;

    /// Deletes a release record (nothing when it is gone).
    fn delete_release(
        &self,
        release: &ReleaseRecord,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Marks the request cancelled (one write); `stop_running` also asks replicas to stop
    /// its jobs running in tasks. `false` when there is no such request.
    fn cancel_request(
        &self,
        request_id: &str,
        now_ms: u64,
        stop_running: bool,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Marks the request failed as a whole with `reason`, and cancelled (without stopping
    /// running jobs), in one conditional write. `false` when there is no such request or it
    /// had failed already (the first reason stays).
    fn fail_request(
        &self,
        request_id: &str,
        now_ms: u64,
        reason: &str,
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

    /// Records that the request finished (every job terminal; its `finished_at` is set
    /// once, at the first call) and makes `notifier` the one who sends its event until
    /// `until_ms`, in one conditional write: only if its event was not sent yet and nobody
    /// else's turn lasts at `now_ms` (the holder may renew its turn). The sweepers' next
    /// check of it moves to `until_ms`. The request as it now stands when the turn is
    /// `notifier`'s; `None` when it is someone else's, the event was sent, or there is no
    /// such request.
    fn finish_request(
        &self,
        request_id: &str,
        notifier: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> impl Future<Output = Result<Option<RequestRecord>, LedgerError>> + Send;

    /// Records that the request's event was sent (and its results exported to `manifest`),
    /// and takes it out of the due index.
    fn request_notified(
        &self,
        request_id: &str,
        now_ms: u64,
        manifest: Option<&str>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Requests whose event was not sent, due for a check before `before_ms`, oldest first,
    /// at most `limit`: their ids.
    fn due_finish_checks(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, LedgerError>> + Send;

    /// Moves the sweepers' next check of a request whose event was not sent to `at_ms`
    /// (nothing once it was sent).
    fn defer_finish_check(
        &self,
        request_id: &str,
        at_ms: u64,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// A page of request ids, newest first (by creation), after `cursor` (a page's `next`).
    fn requests_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<String>, LedgerError>> + Send;

    /// A request's throughput series from the bucket holding `since_ms` on, oldest first
    /// (see [`series`](super::series)).
    fn throughput(
        &self,
        request_id: &str,
        since_ms: u64,
    ) -> impl Future<Output = Result<Vec<super::ThroughputPoint>, LedgerError>> + Send;

    /// Commits producer-side changes (redrives) under counter slot `slot`.
    fn commit_changes(
        &self,
        slot: &str,
        changes: &[Change],
    ) -> impl Future<Output = Result<Vec<Result<(), LedgerError>>, LedgerError>> + Send;
}
