//! The ledger operations a worker replica performs.

use std::future::Future;

use super::*;

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

    /// Takes up to `want` start slots of `pace` (shared by every replica): a read and a
    /// conditional write, tried again when another replica wrote between them.
    fn take_slots(
        &self,
        pace: &Pace,
        want: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<Slots, LedgerError>> + Send;

    /// Asks for `replica` to hold `want` slots of the fleet-wide `cap` (a renewal when it
    /// holds some): what it holds now, at most `want`, for the cap's TTL. A read and a
    /// conditional write, tried again when another replica wrote between them.
    fn allot(
        &self,
        cap: &Cap,
        replica: &str,
        want: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<u32, LedgerError>> + Send;

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

    /// Adds a replica's sums of finished jobs to a request's throughput series (see
    /// [`series`](super::series)): one write, added to what other replicas wrote.
    fn add_throughput(
        &self,
        request_id: &str,
        point: &super::ThroughputPoint,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Adds durations to a job type's record, keeping the newest `window`.
    fn add_durations(
        &self,
        job_type: &str,
        samples: &[u64],
        window: usize,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}
