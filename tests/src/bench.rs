//! `fleet-bench`: the worker engine's performance, measured.
//!
//! - `makespan`: the engine over in-memory queue, ledger and dispatcher with a latency per
//!   call, on tokio's simulated clock (it measures scheduling, not the CPU: that is
//!   `overhead`), against the ideal finishing time and against a batch fan-out coordinator
//!   on the same jobs.
//! - `overhead`: zero latencies and zero-length jobs on one core, real time: jobs per second
//!   and CPU per job.
//! - `scaling`: `makespan` at several sizes, each in its own process (peak memory is per
//!   process).
//! - `footprint` and `api-economy` live in [`crate::bench_live`]: they use real HTTP and the
//!   real SDK.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::config::Config;
use fleet_shared::ledger::item::JobItem;
use fleet_shared::ledger::memory::MemoryLedger;
use fleet_shared::ledger::{
    Adopted, Change, Claim, ClaimRequest, Counts, DueEntry, DueKind, History, ItemKey, JobDetail,
    Lease, Ledger, LedgerError, LiveReport, NewJob, Page, PutRequestOutcome, ReleaseRecord,
    RequestLedger, RequestRecord, RequestView, Requeue,
};
use fleet_shared::message::JobEvent;
use fleet_shared::queue::memory::MemoryQueue;
use fleet_shared::queue::{DeadLetterQueue, JobQueue, QueueError, Received};
use fleet_shared::state::JobState;
use fleet_shared::time::Clock;
use fleet_worker::dispatch::{Dispatcher, NoTasks, Outcome, TaskEnd};
use fleet_worker::engine::{Engine, Parts};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Time per call of the in-memory parts.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub receive: Duration,
    pub delete: Duration,
    pub visibility: Duration,
    pub ledger: Duration,
    pub invoke: Duration,
}

impl Latency {
    /// The model: receive 15 ms, delete/visibility 10 ms, ledger call 8 ms, invoke
    /// overhead 30 ms.
    pub fn model() -> Self {
        let ms = Duration::from_millis;
        Self {
            receive: ms(15),
            delete: ms(10),
            visibility: ms(10),
            ledger: ms(8),
            invoke: ms(30),
        }
    }

    pub fn zero() -> Self {
        Self {
            receive: Duration::ZERO,
            delete: Duration::ZERO,
            visibility: Duration::ZERO,
            ledger: Duration::ZERO,
            invoke: Duration::ZERO,
        }
    }
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// An in-memory part with a latency per call; counts its calls.
pub struct Slow<T> {
    pub inner: Arc<T>,
    pub latency: Latency,
    pub calls: Arc<std::sync::atomic::AtomicU64>,
}

impl<T> Slow<T> {
    pub fn new(inner: Arc<T>, latency: Latency) -> Self {
        Self {
            inner,
            latency,
            calls: Arc::default(),
        }
    }

    async fn call(&self, d: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        pause(d).await;
    }
}

impl<T: JobQueue> JobQueue for Slow<T> {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        self.call(self.latency.receive).await;
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        self.call(self.latency.delete).await;
        self.inner.delete_batch(receipts).await
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        self.call(self.latency.visibility).await;
        self.inner.backlog().await
    }

    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.call(self.latency.delete).await;
        self.inner.send(body, delay).await
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.call(self.latency.visibility).await;
        self.inner.set_visibility(receipt, timeout).await
    }

    async fn send_all(&self, bodies: &[String]) -> Result<(), QueueError> {
        // SendMessageBatch: ten messages a call, eight calls at once (as SqsQueue sends).
        let calls = bodies.len().div_ceil(fleet_shared::queue::MAX_BATCH) as u64;
        self.calls.fetch_add(calls, Ordering::Relaxed);
        pause(self.latency.delete * calls.div_ceil(8) as u32).await;
        self.inner.send_all(bodies).await
    }
}

impl<T: DeadLetterQueue> DeadLetterQueue for Slow<T> {
    async fn send_dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        self.call(self.latency.delete).await;
        self.inner.send_dead_letter(body, attributes).await
    }
}

impl<T: Ledger> Ledger for Slow<T> {
    fn index_shards(&self) -> u32 {
        self.inner.index_shards()
    }

    async fn request_view(&self, request_id: &str) -> Result<RequestView, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.request_view(request_id).await
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.claim(req).await
    }

    async fn heartbeat(&self, lease: &Lease, until_ms: u64) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.heartbeat(lease, until_ms).await
    }

    async fn record_task(&self, lease: &Lease, task: &str) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.record_task(lease, task).await
    }

    async fn take_tokens(
        &self,
        bucket: &fleet_shared::ledger::Bucket,
        want: u32,
        now_ms: u64,
    ) -> Result<fleet_shared::ledger::Taken, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.take_tokens(bucket, want, now_ms).await
    }

    async fn allot(
        &self,
        cap: &fleet_shared::ledger::Cap,
        replica: &str,
        want: u32,
        now_ms: u64,
    ) -> Result<u32, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.allot(cap, replica, want, now_ms).await
    }

    async fn take_slots(
        &self,
        pace: &fleet_shared::ledger::Pace,
        want: u32,
        now_ms: u64,
    ) -> Result<fleet_shared::ledger::Slots, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.take_slots(pace, want, now_ms).await
    }

    async fn running_at(&self, attempts: &[(ItemKey, u64)]) -> Result<Vec<bool>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.running_at(attempts).await
    }

    async fn commit(
        &self,
        slot: &str,
        changes: &[Change],
        live: &[LiveReport],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.commit(slot, changes, live).await
    }

    async fn due(
        &self,
        kind: DueKind,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueEntry>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.due(kind, shard, before_ms, limit).await
    }

    async fn adopt(
        &self,
        entry: &DueEntry,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        skew_ms: u64,
    ) -> Result<Option<Adopted>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .adopt(entry, owner, now_ms, lease_ms, skew_ms)
            .await
    }

    async fn requeue(
        &self,
        entry: &DueEntry,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> Result<Option<Requeue>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .requeue(entry, now_ms, due_before_ms, again_after_ms)
            .await
    }

    async fn history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.history(key).await
    }

    async fn durations(&self, job_type: &str) -> Result<Vec<u64>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.durations(job_type).await
    }

    async fn add_durations(
        &self,
        job_type: &str,
        samples: &[u64],
        window: usize,
    ) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.add_durations(job_type, samples, window).await
    }

    async fn add_throughput(
        &self,
        request_id: &str,
        point: &fleet_shared::ledger::ThroughputPoint,
    ) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.add_throughput(request_id, point).await
    }
}

/// The producer's calls, each with the ledger's latency; batch calls cost as many round trips
/// as the DynamoDB adapter makes (BatchWriteItem: 25 items a call, 4 at once; BatchGetItem:
/// 100 keys a call).
impl<T: RequestLedger> RequestLedger for Slow<T> {
    async fn put_request(&self, r: &RequestRecord) -> Result<PutRequestOutcome, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.put_request(r).await
    }

    async fn get_request(&self, request_id: &str) -> Result<Option<RequestRecord>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.get_request(request_id).await
    }

    async fn requests_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.requests_page(cursor, limit).await
    }

    async fn throughput(
        &self,
        request_id: &str,
        since_ms: u64,
    ) -> Result<Vec<fleet_shared::ledger::ThroughputPoint>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.throughput(request_id, since_ms).await
    }

    async fn put_jobs(&self, jobs: &[NewJob]) -> Result<(), LedgerError> {
        let calls = jobs.len().div_ceil(25) as u64;
        self.calls.fetch_add(calls, Ordering::Relaxed);
        pause(self.latency.ledger * calls.div_ceil(4) as u32).await;
        self.inner.put_jobs(jobs).await
    }

    async fn job_states(&self, keys: &[ItemKey]) -> Result<Vec<Option<JobState>>, LedgerError> {
        for _ in keys.chunks(100) {
            self.call(self.latency.ledger).await;
        }
        self.inner.job_states(keys).await
    }

    async fn set_written(&self, request_id: &str, written: u32) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.set_written(request_id, written).await
    }

    async fn set_window(&self, request_id: &str, window: u32) -> Result<bool, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.set_window(request_id, window).await
    }

    async fn mark_released(
        &self,
        jobs: &[fleet_shared::ids::JobId],
        job_shards: u32,
        now_ms: u64,
    ) -> Result<Vec<fleet_shared::ledger::Requeue>, LedgerError> {
        // One UpdateItem a job, as many at once as the DynamoDB ledger sends them.
        let calls = jobs.len() as u64;
        self.calls.fetch_add(calls, Ordering::Relaxed);
        let at_once = fleet_shared::ledger::dynamo::MARKS_AT_ONCE as u64;
        pause(self.latency.ledger * calls.div_ceil(at_once) as u32).await;
        self.inner.mark_released(jobs, job_shards, now_ms).await
    }

    async fn put_release(&self, release: &ReleaseRecord) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.put_release(release).await
    }

    async fn advance_release(
        &self,
        request_id: &str,
        range: std::ops::Range<u32>,
        releaser: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .advance_release(request_id, range, releaser, now_ms, until_ms)
            .await
    }

    async fn released_jobs(
        &self,
        jobs: &[fleet_shared::ids::JobId],
        job_shards: u32,
        consistent: bool,
    ) -> Result<Vec<fleet_shared::ledger::Requeue>, LedgerError> {
        // One BatchGetItem per 100 jobs, one after the other.
        let calls = (jobs.len() as u64).div_ceil(100).max(1);
        self.calls.fetch_add(calls, Ordering::Relaxed);
        pause(self.latency.ledger * calls as u32).await;
        self.inner.released_jobs(jobs, job_shards, consistent).await
    }

    async fn finish_request(
        &self,
        request_id: &str,
        notifier: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<RequestRecord>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .finish_request(request_id, notifier, now_ms, until_ms)
            .await
    }

    async fn request_notified(
        &self,
        request_id: &str,
        now_ms: u64,
        manifest: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .request_notified(request_id, now_ms, manifest)
            .await
    }

    async fn due_finish_checks(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.due_finish_checks(before_ms, limit).await
    }

    async fn defer_finish_check(&self, request_id: &str, at_ms: u64) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.defer_finish_check(request_id, at_ms).await
    }

    async fn due_releases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.due_releases(shard, before_ms, limit).await
    }

    async fn delete_release(&self, release: &ReleaseRecord) -> Result<(), LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.delete_release(release).await
    }

    async fn cancel_request(
        &self,
        request_id: &str,
        now_ms: u64,
        stop_running: bool,
    ) -> Result<bool, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .cancel_request(request_id, now_ms, stop_running)
            .await
    }

    async fn fail_request(
        &self,
        request_id: &str,
        now_ms: u64,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.fail_request(request_id, now_ms, reason).await
    }

    async fn counts(&self, request_id: &str, now_ms: u64) -> Result<Counts, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.counts(request_id, now_ms).await
    }

    async fn recount(&self, request_id: &str, job_shards: u32) -> Result<Counts, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.recount(request_id, job_shards).await
    }

    async fn jobs_page(
        &self,
        request_id: &str,
        job_shards: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner
            .jobs_page(request_id, job_shards, cursor, limit)
            .await
    }

    async fn failed_page(
        &self,
        request_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.failed_page(request_id, cursor, limit).await
    }

    async fn job(&self, key: &ItemKey) -> Result<Option<(JobItem, String)>, LedgerError> {
        self.call(self.latency.ledger).await;
        RequestLedger::job(self.inner.as_ref(), key).await
    }

    async fn result(&self, key: &ItemKey) -> Result<Option<String>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.result(key).await
    }

    async fn job_history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.job_history(key).await
    }

    async fn commit_changes(
        &self,
        slot: &str,
        changes: &[Change],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        self.call(self.latency.ledger).await;
        self.inner.commit_changes(slot, changes).await
    }
}

/// One execution as the simulated job recorded it: job index, start and end (seconds since
/// the run began).
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub index: u32,
    pub start: f64,
    pub end: f64,
}

/// A job that takes the invoke overhead plus its payload's `ms`, and records itself.
pub struct SimJob {
    overhead: Duration,
    began: tokio::time::Instant,
    runs: Mutex<Vec<Run>>,
    in_flight: AtomicUsize,
}

impl SimJob {
    pub fn new(overhead: Duration) -> Self {
        Self {
            overhead,
            began: tokio::time::Instant::now(),
            runs: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Dispatcher for SimJob {
    fn target(&self) -> &'static str {
        "lambda"
    }

    async fn dispatch(&self, event: &JobEvent) -> TaskEnd {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let start = self.began.elapsed().as_secs_f64();
        let ms = event.payload["ms"].as_u64().unwrap_or(0);
        pause(self.overhead + Duration::from_millis(ms)).await;
        let index = event
            .job_id
            .rsplit(':')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(u32::MAX);
        let end = self.began.elapsed().as_secs_f64();
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Run { index, start, end });
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        TaskEnd::of(Outcome::Succeeded {
            result: b"{}".to_vec(),
        })
    }
}

/// Job durations, ms: lognormal with median 1 s and shape `sigma`, from `seed`.
pub fn durations(n: usize, sigma: f64, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box-Muller: a standard normal from two uniforms.
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (1000.0 * (sigma * z).exp()).round() as u64
        })
        .collect()
}

/// A job message whose payload is `{"ms": ms}`.
pub fn message(request: &str, index: usize, ms: u64) -> String {
    crate::bench_live::job_body(request, index, json!({"ms": ms}), None)
}

/// The engine's configuration for a benchmark with `limit` jobs in flight: the Lambda limit
/// is `limit` (what the ideal time assumes: at most `limit` executions at once), and the
/// replica holds a tenth more jobs than that, so that receiving, claiming and recording
/// outcomes overlap the executions instead of keeping an execution slot idle.
pub fn engine_config(limit: usize) -> Config {
    let mut c = Config::default();
    c.lambda.function = Some("bench".into());
    c.lambda.max_concurrency = Some(limit);
    c.worker.concurrency = limit + limit.div_ceil(10);
    c.worker.receive_loops = (limit / 100).clamp(4, 32);
    c.worker.wait_time_secs = 1;
    c
}

/// The best any scheduler that starts jobs in queue order can do with `limit` slots and no
/// overhead at all: each job starts on the slot that frees first.
pub fn greedy_makespan_ms(durations: &[u64], limit: usize) -> u64 {
    let mut slots: std::collections::BinaryHeap<std::cmp::Reverse<u64>> =
        (0..limit.max(1)).map(|_| std::cmp::Reverse(0)).collect();
    for d in durations {
        let std::cmp::Reverse(free) = slots.pop().unwrap_or(std::cmp::Reverse(0));
        slots.push(std::cmp::Reverse(free + d));
    }
    slots.into_iter().map(|r| r.0).max().unwrap_or(0)
}

/// The ideal finishing time, ms: the larger of all the work spread over the slots and the
/// longest job.
pub fn ideal_ms(durations: &[u64], limit: usize) -> f64 {
    let total: u64 = durations.iter().sum();
    (total as f64 / limit.max(1) as f64).max(durations.iter().copied().max().unwrap_or(0) as f64)
}

/// What one engine run measured.
#[derive(Debug, Clone)]
pub struct EngineRun {
    pub makespan_s: f64,
    /// Calls to the jobs queue (receives, batched deletes, visibility, backlog reads).
    pub queue_calls: u64,
    /// Calls to the ledger.
    pub ledger_calls: u64,
    pub runs: Vec<Run>,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_in_flight: usize,
}

/// Runs `durations` through one engine replica with `limit` in flight, the given latencies,
/// on the current runtime (the caller picks a simulated or a real clock). Stops when every
/// job has run once.
pub async fn run_engine(durations: &[u64], limit: usize, latency: Latency) -> EngineRun {
    let queue = Arc::new(MemoryQueue::new());
    for (i, ms) in durations.iter().enumerate() {
        queue.push(message("bench", i, *ms));
    }
    let job = Arc::new(SimJob::new(latency.invoke));
    let slow_queue = Arc::new(Slow::new(queue.clone(), latency));
    let slow_ledger = Arc::new(Slow::new(Arc::new(MemoryLedger::new()), latency));
    let parts = Parts {
        queue: slow_queue.clone(),
        dead_letters: Arc::new(Slow::new(Arc::new(MemoryQueue::new()), latency)),
        ledger: slow_ledger.clone(),
        dispatcher: job.clone(),
        tasks: Arc::new(NoTasks),
    };
    let engine = Arc::new(
        Engine::new(parts, Arc::new(engine_config(limit)), "bench".into())
            .with_clock(Clock::tokio()),
    );
    let shutdown = CancellationToken::new();
    let hard = CancellationToken::new();
    let cpu0 = cpu_seconds();
    let wall0 = std::time::Instant::now();
    let began = tokio::time::Instant::now();
    let run = tokio::spawn(engine.clone().run(shutdown.clone(), hard.clone()));
    let n = durations.len();
    let mut peak = 0;
    loop {
        peak = peak.max(job.in_flight());
        if job.runs.lock().unwrap_or_else(|p| p.into_inner()).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let makespan_s = began.elapsed().as_secs_f64();
    let wall_s = wall0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    shutdown.cancel();
    hard.cancel();
    let _ = run.await;
    EngineRun {
        makespan_s,
        queue_calls: slow_queue.calls.load(Ordering::Relaxed),
        ledger_calls: slow_ledger.calls.load(Ordering::Relaxed),
        runs: job.runs(),
        wall_s,
        cpu_s,
        peak_in_flight: peak,
    }
}

/// The batch fan-out coordinator: take as many jobs as the limit, run them all (claim,
/// invoke, record), wait for the last, take the next batch.
pub async fn run_batches(durations: &[u64], limit: usize, latency: Latency) -> f64 {
    let began = tokio::time::Instant::now();
    for batch in durations.chunks(limit.max(1)) {
        pause(latency.receive).await;
        let calls: Vec<_> = batch
            .iter()
            .map(|ms| async move {
                pause(latency.ledger).await;
                pause(latency.invoke + Duration::from_millis(*ms)).await;
                pause(latency.ledger).await;
            })
            .collect();
        futures::future::join_all(calls).await;
        pause(latency.delete).await;
    }
    began.elapsed().as_secs_f64()
}

/// Checks the benchmark's own bookkeeping: every job ran exactly once, and the recorded
/// times are consistent. Returns the problems.
pub fn check_runs(runs: &[Run], n: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = vec![0u32; n];
    for r in runs {
        match seen.get_mut(r.index as usize) {
            Some(c) => *c += 1,
            None => problems.push(format!("a run of unknown job {}", r.index)),
        }
        if r.end < r.start {
            problems.push(format!("job {} ended before it started", r.index));
        }
    }
    let missing = seen.iter().filter(|c| **c == 0).count();
    let twice = seen.iter().filter(|c| **c > 1).count();
    if missing > 0 {
        problems.push(format!("{missing} jobs never ran"));
    }
    if twice > 0 {
        problems.push(format!("{twice} jobs ran more than once"));
    }
    problems
}

/// CPU seconds this process has used (user + system), to the nanosecond.
pub fn cpu_seconds() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// This process's peak resident memory, MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    status_kb("VmHWM:") / 1024.0
}

/// This process's resident memory now, MB.
pub fn rss_mb() -> f64 {
    status_kb("VmRSS:") / 1024.0
}

fn status_kb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The machine the figures come from.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_gib": (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu": model,
    })
}

/// `makespan`: the engine and the batch coordinator on the same jobs, simulated clock.
pub fn makespan(n: usize, limit: usize, sigma: f64, seed: u64) -> anyhow::Result<Value> {
    let d = durations(n, sigma, seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let engine = rt.block_on(run_engine(&d, limit, Latency::model()));
    let baseline_s = rt.block_on(run_batches(&d, limit, Latency::model()));
    let problems = check_runs(&engine.runs, n);
    anyhow::ensure!(problems.is_empty(), "bookkeeping: {problems:?}");
    // The makespan from the recorded times (the last end), not from the run loop's clock.
    let recorded = engine.runs.iter().map(|r| r.end).fold(0.0, f64::max);
    let ideal_s = ideal_ms(&d, limit) / 1000.0;
    let greedy_s = greedy_makespan_ms(&d, limit) as f64 / 1000.0;
    Ok(json!({
        "scenario": "makespan",
        "jobs": n,
        "limit": limit,
        "sigma": sigma,
        "ideal_s": round(ideal_s, 3),
        "makespan_s": round(recorded, 3),
        "efficiency": round(ideal_s / recorded, 4),
        "greedy_makespan_s": round(greedy_s, 3),
        "greedy_efficiency": round(ideal_s / greedy_s, 4),
        "vs_greedy": round(greedy_s / recorded, 4),
        "baseline_makespan_s": round(baseline_s, 3),
        "baseline_efficiency": round(ideal_s / baseline_s, 4),
        "peak_in_flight": engine.peak_in_flight,
        "queue_calls_per_job": round(engine.queue_calls as f64 / n as f64, 3),
        "ledger_calls_per_job": round(engine.ledger_calls as f64 / n as f64, 3),
        "calls_per_job": round((engine.queue_calls + engine.ledger_calls + n as u64) as f64 / n as f64, 3),
        "cpu_s": round(engine.cpu_s, 3),
        "wall_s": round(engine.wall_s, 3),
        "cpu_us_per_job": round(engine.cpu_s * 1e6 / n as f64, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }))
}

/// `overhead`: zero latency, zero-length jobs, one core, real time.
pub fn overhead(n: usize, limit: usize) -> anyhow::Result<Value> {
    let d = vec![0u64; n];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine = rt.block_on(run_engine(&d, limit, Latency::zero()));
    let problems = check_runs(&engine.runs, n);
    anyhow::ensure!(problems.is_empty(), "bookkeeping: {problems:?}");
    Ok(json!({
        "scenario": "overhead",
        "jobs": n,
        "limit": limit,
        "wall_s": round(engine.wall_s, 3),
        "jobs_per_sec": round(n as f64 / engine.wall_s, 0),
        "cpu_s": round(engine.cpu_s, 3),
        "cpu_us_per_job": round(engine.cpu_s * 1e6 / n as f64, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }))
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Figures per job of several runs, for a table.
pub fn per_target(calls: &BTreeMap<String, u64>, jobs: u64) -> BTreeMap<String, f64> {
    calls
        .iter()
        .map(|(k, v)| (k.clone(), round(*v as f64 / jobs.max(1) as f64, 3)))
        .collect()
}
