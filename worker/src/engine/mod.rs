//! The coordinator engine: one worker replica's loop. Generic over the queue, the
//! dead-letter queue, the ledger and the two dispatchers (Lambda, and tasks: ECS or local
//! processes), so the same code runs against AWS and against in-memory parts in tests and
//! benchmarks.
//!
//! For each message: parse it (a malformed one goes to the dead-letter queue with its
//! reason), claim the job in the ledger, route it (`routing.rs`), run the attempt while a
//! heartbeat renews the lease and the message's visibility, write the outcome to the ledger
//! (conditional on owner and fence), and only then acknowledge the message. An ECS task,
//! once it exists, is handed off: its id goes to the ledger and the message is deleted, so a
//! job can run longer than SQS's 12-hour visibility limit; whoever holds the lease follows
//! the task, and the sweeper of any replica adopts it if that replica dies. Backpressure:
//! receive loops ask for no more messages than there are free slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use fleet_shared::config::{Config, SQS_MAX_VISIBILITY_SECS};
use fleet_shared::dead_letter::FailureRecord;
use fleet_shared::ids::JobId;
use fleet_shared::ledger::{
    Adopted, AttemptRecord, Claim, ClaimRequest, Expired, Finish, LEASE_SHARDS, Lease, Ledger,
    LedgerError,
};
use fleet_shared::message::{JobEvent, JobMessage, MESSAGE_VERSION, Target, parse_message};
use fleet_shared::metrics::{self as fm, Health};
use fleet_shared::queue::{DeadLetterQueue, JobQueue, MAX_BATCH, Received};
use fleet_shared::state::JobState;
use fleet_shared::time::Clock;
use rand::RngExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::acks::Acker;
use crate::classify::ErrorClass;
use crate::dispatch::{Dispatcher, Outcome, TaskEnd, TaskLauncher};
use crate::history::HistoryLog;
use crate::learn::Learner;
use crate::limits::AdaptiveLimit;
use crate::retry::RetryPolicy;
use crate::routing::{self, Route, RouteInput};

/// Longest error text kept in the ledger or a dead-letter record.
const MAX_ERROR_CHARS: usize = 4000;

/// SQS counts a message's visibility from when it was received, up to 12 hours; a hidden
/// retry stays this far inside that limit.
const VISIBILITY_MARGIN: Duration = Duration::from_secs(60);

/// Expired leases the sweeper looks at per shard and pass.
const SWEEP_BATCH: usize = 25;
/// Longest a receive waits for a batch of free slots (see `receive_loop`).
const RECEIVE_LINGER: Duration = Duration::from_millis(250);

/// The parts an engine runs on.
pub struct Parts<Q, D, L, X, T> {
    pub queue: Arc<Q>,
    pub dead_letters: Arc<D>,
    pub ledger: Arc<L>,
    /// Runs Lambda-routed attempts.
    pub dispatcher: Arc<X>,
    /// Runs ECS-routed attempts.
    pub tasks: Arc<T>,
}

/// Counters of what a replica did, logged when it stops.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    pub claimed: AtomicU64,
    pub deferred: AtomicU64,
    pub obsolete: AtomicU64,
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub leases_lost: AtomicU64,
    pub released: AtomicU64,
    pub ledger_errors: AtomicU64,
    pub throttled: AtomicU64,
    pub handed_off: AtomicU64,
    pub adopted: AtomicU64,
    pub requeued: AtomicU64,
    /// Routing decisions, by target and reason.
    pub routes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub received: u64,
    pub malformed: u64,
    pub claimed: u64,
    pub deferred: u64,
    pub obsolete: u64,
    pub succeeded: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub leases_lost: u64,
    pub released: u64,
    pub ledger_errors: u64,
    pub throttled: u64,
    pub handed_off: u64,
    pub adopted: u64,
    pub requeued: u64,
}

impl Stats {
    fn count_route(&self, route: &Route) {
        metrics::counter!(
            fm::ROUTING_DECISIONS,
            "target" => route.target.as_str(),
            "reason" => route.reason.clone()
        )
        .increment(1);
        let key = format!("{}/{}", route.target.as_str(), route.reason);
        *self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Routing decisions so far, `target/reason` → count.
    pub fn routes(&self) -> std::collections::BTreeMap<String, u64> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Stats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> Report {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Report {
            received: g(&self.received),
            malformed: g(&self.malformed),
            claimed: g(&self.claimed),
            deferred: g(&self.deferred),
            obsolete: g(&self.obsolete),
            succeeded: g(&self.succeeded),
            retried: g(&self.retried),
            failed: g(&self.failed),
            dead_lettered: g(&self.dead_lettered),
            leases_lost: g(&self.leases_lost),
            released: g(&self.released),
            ledger_errors: g(&self.ledger_errors),
            throttled: g(&self.throttled),
            handed_off: g(&self.handed_off),
            adopted: g(&self.adopted),
            requeued: g(&self.requeued),
        }
    }
}

pub struct Engine<Q, D, L, X, T> {
    queue: Arc<Q>,
    dead_letters: Arc<D>,
    ledger: Arc<L>,
    dispatcher: Arc<X>,
    tasks: Arc<T>,
    config: Arc<Config>,
    replica: String,
    retry: RetryPolicy,
    clock: Clock,
    stats: Stats,
    /// The Lambda in-flight limit, adapted to throttling.
    lambda_limit: Arc<AdaptiveLimit>,
    /// The ECS in-flight limit (tasks started and followed), adapted to throttling.
    ecs_limit: Arc<AdaptiveLimit>,
    learner: Learner,
    history: HistoryLog,
    health: Arc<Health>,
}

/// Seconds for a visibility timeout: rounded up, at least 1, at most SQS's limit.
fn visibility_secs(ms: u64) -> Duration {
    Duration::from_secs(ms.div_ceil(1000).clamp(1, SQS_MAX_VISIBILITY_SECS))
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_ERROR_CHARS {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX_ERROR_CHARS).collect();
        t.push('…');
        t
    }
}

/// How an attempt ended, seen from the replica.
enum AttemptEnd {
    Done(Outcome, TaskInfo),
    /// The ledger refused a write (`expired: false`: another replica holds the job now), or
    /// the lease ran out before a renewal landed (`expired: true`).
    LeaseLost {
        expired: bool,
    },
    Stopped,
}

/// What a task launcher adds to an outcome.
#[derive(Debug, Default, Clone)]
struct TaskInfo {
    exit_code: Option<i32>,
    stopped_reason: Option<String>,
}

impl From<&TaskEnd> for TaskInfo {
    fn from(e: &TaskEnd) -> Self {
        TaskInfo {
            exit_code: e.exit_code,
            stopped_reason: e.stopped_reason.clone(),
        }
    }
}

/// One claimed (or adopted) attempt: the job, its lease, and the message it came with.
struct Attempt<'a> {
    msg: &'a JobMessage,
    /// The message's body as sent (what a dead letter or a re-sent message carries).
    body: String,
    lease: Lease,
    /// The received message, until it is handed off or when there is none (adopted).
    message: Option<(&'a Received, Instant)>,
    handed_off: AtomicBool,
    /// The task the attempt runs in, once started.
    task: std::sync::Mutex<Option<String>>,
    /// Until when the lease is known to be ours (the last renewal's expiry).
    until_ms: AtomicU64,
}

impl Attempt<'_> {
    /// The received message while this replica still holds it.
    fn held(&self) -> Option<&Received> {
        match self.message {
            Some((m, _)) if !self.handed_off.load(Ordering::Relaxed) => Some(m),
            _ => None,
        }
    }

    fn task(&self) -> Option<String> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<Q, D, L, X, T> Engine<Q, D, L, X, T>
where
    Q: JobQueue,
    D: DeadLetterQueue,
    L: Ledger,
    X: Dispatcher,
    T: TaskLauncher,
{
    pub fn new(parts: Parts<Q, D, L, X, T>, config: Arc<Config>, replica: String) -> Self {
        let (min, max) = config.lambda_concurrency();
        Self {
            queue: parts.queue,
            dead_letters: parts.dead_letters,
            ledger: parts.ledger,
            dispatcher: parts.dispatcher,
            tasks: parts.tasks,
            retry: RetryPolicy::from_config(&config),
            clock: Clock::System,
            stats: Stats::default(),
            lambda_limit: AdaptiveLimit::new("lambda", min, max),
            ecs_limit: AdaptiveLimit::new("ecs", 1, config.ecs.max_concurrency),
            learner: Learner::new(),
            history: HistoryLog::open(config.worker.history_log.as_deref(), &replica),
            health: Health::new(Duration::from_secs(config.metrics.ready_window_secs)),
            replica,
            config,
        }
    }

    /// Reads time from `clock` instead of the system clock (tests use [`Clock::tokio`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reports service reachability and draining to `health` (what `/readyz` serves).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Bumps a report counter and its Prometheus counter.
    fn count(&self, c: &AtomicU64, metric: &'static str) {
        Stats::bump(c);
        metrics::counter!(metric).increment(1);
    }

    /// A write the ledger refused for a stale owner or fence: history and metrics.
    fn stale(&self, job: &str, fence: u64, extra: serde_json::Value) {
        metrics::counter!(fm::STALE_WRITES_REJECTED).increment(1);
        self.history
            .record(self.clock.now_ms(), "stale", job, fence, extra);
    }

    pub fn stats(&self) -> Report {
        self.stats.report()
    }

    /// The Lambda in-flight limit as it stands.
    pub fn lambda_limit(&self) -> usize {
        self.lambda_limit.limit()
    }

    /// Runs until `shutdown` is cancelled, then drains: no new receives, in-flight jobs get
    /// `worker.drain_secs` to finish, and what is still running then is released (lease
    /// given back, message visible at once; an ECS task that was handed off keeps running
    /// and another replica adopts it). `hard_stop` cuts the drain short.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) -> Report {
        let w = &self.config.worker;
        info!(replica = %self.replica, concurrency = w.concurrency, receive_loops = w.receive_loops, "worker running");
        let slots = Arc::new(Semaphore::new(w.concurrency));
        let tracker = TaskTracker::new();
        let (acker, acks) = Acker::spawn(self.queue.clone());
        metrics::gauge!(fm::DRAINING).set(0.0);
        let health = self.health.clone();
        let draining = shutdown.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            health.set_draining();
        });
        let mut loops = JoinSet::new();
        for _ in 0..w.receive_loops {
            loops.spawn(self.clone().receive_loop(
                slots.clone(),
                tracker.clone(),
                acker.clone(),
                shutdown.clone(),
                hard_stop.clone(),
            ));
        }
        loops.spawn(self.clone().sweep_loop(
            tracker.clone(),
            acker.clone(),
            shutdown.clone(),
            hard_stop.clone(),
        ));
        loops.spawn(self.clone().learn_loop(shutdown.clone()));
        while loops.join_next().await.is_some() {}
        tracker.close();
        info!(
            in_flight = tracker.len(),
            drain_secs = w.drain_secs,
            "stopped receiving; draining"
        );
        tokio::select! {
            _ = tracker.wait() => {}
            _ = tokio::time::sleep(Duration::from_secs(w.drain_secs)) => {
                info!(in_flight = tracker.len(), "drain deadline passed; releasing what is left");
                hard_stop.cancel();
            }
            _ = hard_stop.cancelled() => {
                info!(in_flight = tracker.len(), "stopping at once; releasing what is left");
            }
        }
        tracker.wait().await;
        drop(acker);
        acks.finish().await;
        self.learner.sync(self.ledger.as_ref(), &self.config).await;
        let report = self.stats();
        info!(?report, routes = ?self.stats.routes(), "worker stopped");
        report
    }

    /// Free room under the target limits (a message's target is known only after its claim).
    fn room(&self) -> usize {
        let ecs = if self.config.ecs.enabled() {
            self.ecs_limit.available()
        } else {
            0
        };
        self.lambda_limit.available() + ecs
    }

    async fn receive_loop(
        self: Arc<Self>,
        slots: Arc<Semaphore>,
        tracker: TaskTracker,
        acker: Acker,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let w = &self.config.worker;
        let wait = Duration::from_secs(w.wait_time_secs);
        let mut errors = 0u32;
        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.cancelled() => return,
            };
            // Only what can start now: free slots, and room under the target limits.
            while self.room() == 0 {
                tokio::select! {
                    () = self.lambda_limit.wait_available() => {}
                    () = self.ecs_limit.wait_available(), if self.config.ecs.enabled() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            // A receive asks for a batch: when fewer slots (or less room under the target
            // limits) are free than a batch, the replica is nearly full and they free one
            // by one; it then waits up to RECEIVE_LINGER for more rather than spend a call
            // on one or two messages. Small replicas (under ten slots a batch) never wait.
            let batch = (w.concurrency / 10).clamp(1, MAX_BATCH);
            let linger = tokio::time::sleep(RECEIVE_LINGER);
            tokio::pin!(linger);
            while self.room() < batch || slots.available_permits() + 1 < batch {
                tokio::select! {
                    _ = &mut linger => break,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let room = self.room().clamp(1, MAX_BATCH);
            let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
            while permits.len() < room {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A receive in progress is not abandoned on shutdown: SQS may already have handed
            // it messages, which would then stay hidden for a whole lease. It ends within the
            // long-poll wait, and what it brought is handed straight back.
            let received = tokio::select! {
                r = self.queue.receive(permits.len(), wait, w.lease()) => r,
                _ = hard_stop.cancelled() => return,
            };
            if shutdown.is_cancelled() {
                if let Ok(messages) = received {
                    for m in messages {
                        self.set_visibility(&m.receipt, Duration::ZERO).await;
                    }
                }
                return;
            }
            match received {
                Ok(messages) => {
                    errors = 0;
                    self.health.sqs_ok();
                    if messages.is_empty() {
                        metrics::counter!(fm::EMPTY_RECEIVES).increment(1);
                    }
                    for m in messages {
                        let Some(permit) = permits.pop() else { break };
                        self.count(&self.stats.received, fm::MESSAGES_RECEIVED);
                        let me = self.clone();
                        let acker = acker.clone();
                        let hard_stop = hard_stop.clone();
                        tracker.spawn(async move {
                            me.handle(m, &acker, &hard_stop).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    let pause = Duration::from_millis(200u64 << errors.min(5));
                    warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Publishes durations and refreshes learned routes every `routing.learn_secs`.
    async fn learn_loop(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.config.routing.learned {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(self.config.routing.learn_secs)) => {}
                _ = shutdown.cancelled() => return,
            }
            self.learner.sync(self.ledger.as_ref(), &self.config).await;
        }
    }

    /// Every `worker.sweep_secs` (jittered), reads the lease-expiry index a few items per
    /// shard (never a table scan) and repairs what the feed lost:
    ///
    /// - a handed-off task whose replica stopped renewing its lease is adopted;
    /// - a job overdue by `worker.recover_secs` (a lease that expired with no task, or a
    ///   PENDING or RETRYING job nobody claimed) gets its message again, but only while the
    ///   queue has no backlog: a message waiting in the queue is not lost. The re-sent job
    ///   goes through the normal claim, so racing sweepers cannot both run it.
    async fn sweep_loop(
        self: Arc<Self>,
        tracker: TaskTracker,
        acker: Acker,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let period = Duration::from_secs(self.config.worker.sweep_secs);
        // A first pass at once: it fills the backlog gauges and proves DynamoDB reachable.
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            self.sweep_once(&tracker, &acker, &hard_stop).await;
            pause = period.mul_f64(rand::rng().random_range(0.5..1.5));
        }
    }

    /// One pass over every shard.
    async fn sweep_once(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        let skew = self.config.worker.clock_skew_secs * 1000;
        let recover = self.config.worker.recover_secs * 1000;
        // One read of the queue's depth a pass: for the backlog gauge, and to tell a lost
        // message from a waiting one.
        let backlog = match self.queue.backlog().await {
            Ok(b) => {
                self.health.sqs_ok();
                metrics::gauge!(fm::QUEUE_BACKLOG).set(b as f64);
                b
            }
            Err(e) => {
                warn!(error = %e, "sweeper could not read the queue's backlog");
                u64::MAX
            }
        };
        // The longest-waiting unstarted job: each shard lists its due items oldest first.
        let mut oldest_waiting: Option<u64> = None;
        let mut read_all = true;
        let start = rand::rng().random_range(0..LEASE_SHARDS);
        for i in 0..LEASE_SHARDS {
            let shard = (start + i) % LEASE_SHARDS;
            let now = self.clock.now_ms();
            let expired = match self
                .ledger
                .expired_leases(shard, now.saturating_sub(skew), SWEEP_BATCH)
                .await
            {
                Ok(e) => {
                    self.health.dynamodb_ok();
                    e
                }
                Err(e) => {
                    warn!(shard, error = %e, "sweeper could not read expired leases");
                    read_all = false;
                    continue;
                }
            };
            if let Some(w) = expired
                .iter()
                .filter(|e| e.state != JobState::Running)
                .map(|e| e.lease_until_ms)
                .min()
            {
                oldest_waiting = Some(oldest_waiting.map_or(w, |o| o.min(w)));
            }
            for e in expired {
                if e.state == JobState::Running && e.task.is_some() {
                    if self.tasks.adoptable() {
                        self.try_adopt(&e, tracker, acker, hard_stop).await;
                    }
                    continue;
                }
                let due_before = now.saturating_sub(skew + recover);
                if e.lease_until_ms >= due_before {
                    continue;
                }
                if backlog > 0 {
                    continue;
                }
                self.try_requeue(&e, now, due_before, recover).await;
            }
        }
        if read_all {
            let age = oldest_waiting.map_or(0, |t| self.clock.now_ms().saturating_sub(t));
            metrics::gauge!(fm::OLDEST_WAITING_JOB).set(age as f64 / 1000.0);
        }
    }

    async fn try_adopt(
        self: &Arc<Self>,
        e: &Expired,
        tracker: &TaskTracker,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        // An adopted task counts against the ECS limit, not the receive slots.
        let Some(permit) = self.ecs_limit.try_acquire() else {
            return;
        };
        let skew = self.config.worker.clock_skew_secs * 1000;
        let lease_ms = self.config.worker.lease_secs * 1000;
        match self
            .ledger
            .adopt(e, &self.replica, self.clock.now_ms(), lease_ms, skew)
            .await
        {
            Ok(Some(adopted)) => {
                self.count(&self.stats.adopted, fm::SWEEPER_ADOPTED);
                self.history.record(
                    self.clock.now_ms(),
                    "adopt",
                    &e.job.to_string(),
                    adopted.lease.fence,
                    json!({"attempt": adopted.lease.attempt}),
                );
                info!(job_id = %e.job, task = ?e.task, previous_owner = ?e.owner, fence = adopted.lease.fence, "adopted a handed-off task");
                let me = self.clone();
                let acker = acker.clone();
                let hard_stop = hard_stop.clone();
                tracker.spawn(async move {
                    me.follow_adopted(adopted, &acker, &hard_stop).await;
                    drop(permit);
                });
            }
            Ok(None) => debug!(job_id = %e.job, "someone else adopted it first"),
            Err(err) => warn!(job_id = %e.job, error = %err, "adoption failed"),
        }
    }

    async fn try_requeue(&self, e: &Expired, now: u64, due_before: u64, recover: u64) {
        let r = match self.ledger.requeue(e, now, due_before, recover).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(err) => {
                warn!(job_id = %e.job, error = %err, "could not mark a job for re-sending");
                return;
            }
        };
        let message = JobMessage {
            version: MESSAGE_VERSION,
            request_id: r.job.request_id().to_owned(),
            job_id: r.job.to_string(),
            job_type: r.job_type.clone(),
            attempt: r.attempts + 1,
            payload: serde_json::from_str(&r.payload_json).unwrap_or_default(),
            routing: r.target.map(|t| fleet_shared::message::RoutingHint {
                target: Some(t),
                estimated_secs: None,
            }),
            enqueued_at_ms: now,
            max_attempts: r.max_attempts,
        };
        match self.queue.send(&message.to_body(), Duration::ZERO).await {
            Ok(()) => {
                self.count(&self.stats.requeued, fm::SWEEPER_REQUEUED);
                self.history.record(
                    now,
                    "requeue",
                    &message.job_id,
                    e.fence,
                    json!({"state": r.state}),
                );
                info!(job_id = %message.job_id, state = %r.state, overdue_ms = now.saturating_sub(e.lease_until_ms), "message looked lost; sent the job again");
            }
            Err(err) => {
                warn!(job_id = %message.job_id, error = %err, "re-send failed; the next pass tries again")
            }
        }
    }

    /// Follows an adopted task to its end and records the outcome.
    async fn follow_adopted(&self, adopted: Adopted, acker: &Acker, hard_stop: &CancellationToken) {
        let job = &adopted.lease.job;
        let msg = JobMessage {
            version: MESSAGE_VERSION,
            request_id: job.request_id().to_owned(),
            job_id: job.to_string(),
            job_type: adopted.job_type.clone(),
            attempt: adopted.lease.attempt,
            payload: serde_json::from_str(&adopted.payload_json).unwrap_or_default(),
            routing: None,
            enqueued_at_ms: adopted.enqueued_at_ms,
            max_attempts: adopted.lease.max_attempts,
        };
        let span = info_span!("job", request_id = %msg.request_id, job_id = %msg.job_id);
        let route = Route {
            target: Target::Ecs,
            reason: "adopted".to_owned(),
        };
        let a = Attempt {
            body: msg.to_body(),
            msg: &msg,
            lease: adopted.lease.clone(),
            message: None,
            handed_off: AtomicBool::new(true),
            task: std::sync::Mutex::new(Some(adopted.task.clone())),
            until_ms: AtomicU64::new(adopted.lease.until_ms),
        };
        async {
            let end = tokio::select! {
                end = self.tasks.wait(&adopted.task) => AttemptEnd::Done(end.outcome.clone(), TaskInfo::from(&end)),
                expired = self.keep_alive(&a) => AttemptEnd::LeaseLost { expired },
                _ = hard_stop.cancelled() => AttemptEnd::Stopped,
            };
            self.conclude(&a, &route, end, acker).await;
        }
        .instrument(span)
        .await
    }

    /// Everything that happens to one received message.
    async fn handle(&self, m: Received, acker: &Acker, hard_stop: &CancellationToken) {
        let received_at = Instant::now();
        let (msg, job) = match parse_message(&m.body, self.config.limits.max_message_bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                Stats::bump(&self.stats.malformed);
                warn!(message_id = %m.message_id, error = %e, "malformed message; dead-lettering it");
                self.refuse(&m, None, &e.to_string(), acker).await;
                return;
            }
        };
        let span = info_span!("job", request_id = %msg.request_id, job_id = %msg.job_id);
        async {
            if !self.config.knows_job_type(&msg.job_type) {
                Stats::bump(&self.stats.malformed);
                let reason = format!("unknown job type {:?} (not in job_types)", msg.job_type);
                warn!(%reason, "dead-lettering the message");
                self.refuse(&m, Some(&msg), &reason, acker).await;
                return;
            }
            let now = self.clock.now_ms();
            let claim = self.claim(&msg, &job, now).await;
            if claim.is_ok() {
                self.health.dynamodb_ok();
            }
            match claim {
                Ok(Claim::Claimed(lease)) => {
                    self.count(&self.stats.claimed, fm::JOBS_CLAIMED);
                    if lease.attempt == 1 && msg.enqueued_at_ms > 0 {
                        metrics::histogram!(fm::QUEUE_WAIT)
                            .record(now.saturating_sub(msg.enqueued_at_ms) as f64 / 1000.0);
                    }
                    self.history.record(now, "claim", &msg.job_id, lease.fence, json!({"attempt": lease.attempt}));
                    let a = Attempt {
                        msg: &msg,
                        body: m.body.clone(),
                        until_ms: AtomicU64::new(lease.until_ms),
                        lease,
                        message: Some((&m, received_at)),
                        handed_off: AtomicBool::new(false),
                        task: std::sync::Mutex::new(None),
                    };
                    self.run_attempt(&a, acker, hard_stop).await;
                }
                Ok(Claim::NotYet { state, until_ms }) => {
                    Stats::bump(&self.stats.deferred);
                    metrics::counter!(fm::CLAIM_CONFLICTS, "state" => state.as_str()).increment(1);
                    let hide = visibility_secs(until_ms.saturating_sub(now));
                    debug!(%state, hide_secs = hide.as_secs(), "not claimable yet; deferring the message");
                    self.set_visibility(&m.receipt, hide).await;
                }
                Ok(Claim::Finished { state, last_error, history }) => {
                    Stats::bump(&self.stats.obsolete);
                    metrics::counter!(fm::CLAIM_CONFLICTS, "state" => state.as_str()).increment(1);
                    debug!(%state, "job already finished; deleting the message");
                    // A FAILED job's dead-letter record may have been lost to a crash between
                    // the ledger write and the send: send it again (readers de-duplicate by
                    // job id).
                    if state == JobState::Failed {
                        let error = last_error.unwrap_or_else(|| "failed".into());
                        let (class, error) = match error.split_once(": ") {
                            Some((c, e)) => (c.to_owned(), e.to_owned()),
                            None => (ErrorClass::Permanent.as_str().to_owned(), error),
                        };
                        let record = self.failure_record(Some(&msg), &class, &error, &history);
                        if !self.dead_letter(&m.body, &record).await {
                            return;
                        }
                    }
                    acker.delete(m.receipt);
                }
                Err(e) => {
                    self.count(&self.stats.ledger_errors, fm::LEDGER_ERRORS);
                    warn!(error = %e, "claim failed; the message will come back");
                    self.set_visibility(&m.receipt, Duration::from_secs(5)).await;
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn claim(&self, msg: &JobMessage, job: &JobId, now: u64) -> Result<Claim, LedgerError> {
        let payload_json = msg.payload.to_string();
        self.ledger
            .claim(&ClaimRequest {
                job,
                job_type: &msg.job_type,
                payload_json: &payload_json,
                max_attempts: msg.max_attempts,
                owner: &self.replica,
                now_ms: now,
                lease_ms: self.config.worker.lease_secs * 1000,
                skew_ms: self.config.worker.clock_skew_secs * 1000,
                enqueued_at_ms: msg.enqueued_at_ms,
            })
            .await
    }

    /// A message refused before any attempt: dead-lettered with the reason, then deleted.
    async fn refuse(&self, m: &Received, msg: Option<&JobMessage>, reason: &str, acker: &Acker) {
        let record = self.failure_record(msg, ErrorClass::Permanent.as_str(), reason, &[]);
        if self.dead_letter(&m.body, &record).await {
            acker.delete(m.receipt.clone());
        }
    }

    fn event(&self, a: &Attempt<'_>) -> JobEvent {
        JobEvent {
            request_id: a.msg.request_id.clone(),
            job_id: a.msg.job_id.clone(),
            job_type: a.msg.job_type.clone(),
            attempt: a.lease.attempt,
            fence: a.lease.fence,
            payload: a.msg.payload.clone(),
        }
    }

    async fn run_attempt(&self, a: &Attempt<'_>, acker: &Acker, hard_stop: &CancellationToken) {
        // Attempts whose replica died or lost its lease count: a job that keeps killing its
        // replicas must not run forever. The claim that would start one attempt too many
        // records the job FAILED instead.
        let max_attempts = self
            .config
            .max_attempts_for(&a.msg.job_type, a.lease.max_attempts.or(a.msg.max_attempts));
        if a.lease.attempt > max_attempts {
            let outcome = Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!(
                    "attempts exhausted: not starting attempt {} of at most {max_attempts}; the previous ones did not finish (their replicas stopped or lost their leases)",
                    a.lease.attempt
                ),
            };
            let route = Route {
                target: match a.lease.previous.as_ref().map(|p| p.target.as_str()) {
                    Some("ecs") => Target::Ecs,
                    _ => Target::Lambda,
                },
                reason: "attempts_exhausted".into(),
            };
            self.conclude(
                a,
                &route,
                AttemptEnd::Done(outcome, TaskInfo::default()),
                acker,
            )
            .await;
            return;
        }
        let event = self.event(a);
        let event_bytes = serde_json::to_vec(&event).map(|v| v.len()).unwrap_or(0);
        let input = RouteInput {
            message: a.msg,
            ledger_target: a.lease.target,
            event_bytes,
            previous: a.lease.previous.as_ref(),
            learned: self.learner.route(&a.msg.job_type),
        };
        let Some(route) = routing::route(&self.config, &input) else {
            let info = TaskInfo::default();
            let outcome = Outcome::Failed {
                class: ErrorClass::Permanent,
                message: format!(
                    "no Lambda function or ECS launcher is configured for job type {:?}",
                    a.msg.job_type
                ),
            };
            let route = Route {
                target: Target::Lambda,
                reason: "no_target".into(),
            };
            self.conclude(a, &route, AttemptEnd::Done(outcome, info), acker)
                .await;
            return;
        };
        self.stats.count_route(&route);
        debug!(attempt = a.lease.attempt, fence = a.lease.fence, target = route.target.as_str(), reason = %route.reason, "dispatching");
        let end = tokio::select! {
            end = self.execute(a, &route, &event, acker) => end,
            expired = self.keep_alive(a) => AttemptEnd::LeaseLost { expired },
            _ = hard_stop.cancelled() => AttemptEnd::Stopped,
        };
        self.conclude(a, &route, end, acker).await;
    }

    /// Runs the attempt on its target, under that target's limit.
    async fn execute(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        event: &JobEvent,
        acker: &Acker,
    ) -> AttemptEnd {
        self.history.record(
            self.clock.now_ms(),
            "dispatch",
            &a.msg.job_id,
            a.lease.fence,
            json!({"attempt": a.lease.attempt, "target": route.target.as_str()}),
        );
        let target = route.target.as_str();
        metrics::counter!(fm::JOBS_DISPATCHED, "target" => target).increment(1);
        let dispatched = || {
            let waited = self.clock.now_ms().saturating_sub(a.lease.started_ms);
            metrics::histogram!(fm::DISPATCH_LATENCY, "target" => target)
                .record(waited as f64 / 1000.0);
        };
        if route.target != Target::Ecs {
            let permit = self.lambda_limit.acquire().await;
            dispatched();
            let outcome = self.dispatcher.dispatch(event).await;
            match &outcome {
                Outcome::Succeeded { .. } => permit.success(),
                Outcome::Failed {
                    class: ErrorClass::Throttled,
                    ..
                } => permit.throttled(),
                Outcome::Failed { .. } => drop(permit),
            }
            return AttemptEnd::Done(outcome, TaskInfo::default());
        }
        let permit = self.ecs_limit.acquire().await;
        let task = match self.tasks.start(event).await {
            Ok(task) => task,
            Err((class, message)) => {
                if class == ErrorClass::Throttled {
                    permit.throttled();
                }
                return AttemptEnd::Done(Outcome::Failed { class, message }, TaskInfo::default());
            }
        };
        dispatched();
        *a.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
        match self.ledger.record_task(&a.lease, &task).await {
            Ok(()) => {}
            Err(LedgerError::Stale { .. }) => {
                self.stale(&a.msg.job_id, a.lease.fence, json!({"op": "record_task"}));
                return AttemptEnd::LeaseLost { expired: false };
            }
            Err(e) => {
                warn!(%task, error = %e, "could not record the task; it will not be handed off")
            }
        }
        if self.tasks.adoptable()
            && let Some((m, _)) = a.message
        {
            // Hand-off: the task's id is in the ledger; from now on the lease alone keeps the
            // job, and the message would only run into SQS's 12-hour visibility limit.
            a.handed_off.store(true, Ordering::Relaxed);
            acker.delete(m.receipt.clone());
            Stats::bump(&self.stats.handed_off);
            info!(%task, "task running; handed off");
        }
        let end = self.tasks.wait(&task).await;
        match &end.outcome {
            Outcome::Succeeded { .. } => permit.success(),
            _ => drop(permit),
        }
        AttemptEnd::Done(end.outcome.clone(), TaskInfo::from(&end))
    }

    /// What follows an attempt's end: the outcome recorded, or the lease given up.
    async fn conclude(&self, a: &Attempt<'_>, route: &Route, end: AttemptEnd, acker: &Acker) {
        match end {
            AttemptEnd::Done(outcome, info) => self.record(a, route, outcome, info, acker).await,
            AttemptEnd::LeaseLost { expired } => {
                self.count(&self.stats.leases_lost, fm::LEASES_LOST);
                warn!(
                    fence = a.lease.fence,
                    expired,
                    "lease lost while the job ran; its result will not be recorded by this replica"
                );
                // A local process cannot be followed by anyone else: stop it (this is how a
                // cancel reaches it). An ECS task is the new owner's (or the adopter's) to
                // follow.
                let task = a.task();
                if let Some(task) = &task
                    && !self.tasks.adoptable()
                {
                    self.tasks.stop(task, "lease lost").await;
                }
                // A lease that ran out unrenewed may still be ours in the ledger: hand the
                // job back so it runs again at once (the write is fenced, so a replica that
                // has taken it over is not disturbed: the refusal is recorded as stale).
                if expired && !(task.is_some() && self.tasks.adoptable()) {
                    self.give_back(a).await;
                }
            }
            AttemptEnd::Stopped => {
                if a.handed_off.load(Ordering::Relaxed) {
                    // The task keeps running; when this lease expires another replica adopts it.
                    info!(task = ?a.task(), "stopping; the handed-off task keeps running and will be adopted");
                    return;
                }
                if let Some(task) = a.task() {
                    self.tasks
                        .stop(&task, "replica stopped after its drain deadline")
                        .await;
                }
                self.give_back(a).await;
            }
        }
    }

    /// Releases an unfinished attempt (RETRYING, claimable at once, the attempt not counted)
    /// and makes its message visible at once. Conditional on the lease: if another replica
    /// holds the job now, the refusal is recorded as a stale write and nothing changes.
    async fn give_back(&self, a: &Attempt<'_>) {
        match self.ledger.release(&a.lease).await {
            Ok(()) => {
                self.count(&self.stats.released, fm::JOBS_RELEASED);
                self.history.record(
                    self.clock.now_ms(),
                    "release",
                    &a.msg.job_id,
                    a.lease.fence,
                    json!({}),
                );
                info!(attempt = a.lease.attempt, "released unfinished job");
                if let Some(m) = a.held() {
                    self.set_visibility(&m.receipt, Duration::ZERO).await;
                }
            }
            Err(LedgerError::Stale { .. }) => {
                self.stale(&a.msg.job_id, a.lease.fence, json!({"op": "release"}));
                info!(fence = a.lease.fence, "the job has a new owner already");
            }
            Err(e) => warn!(error = %e, "release failed; the lease will expire instead"),
        }
    }

    /// Renews the lease (and, while it is held, the message's visibility) every heartbeat
    /// period; returns only when the lease is lost (refused by the ledger, or not renewed
    /// before it expired).
    async fn keep_alive(&self, a: &Attempt<'_>) -> bool {
        let w = &self.config.worker;
        let mut until = a.lease.until_ms;
        loop {
            tokio::time::sleep(w.heartbeat()).await;
            let next = self.clock.now_ms() + w.lease_secs * 1000;
            match self.ledger.heartbeat(&a.lease, next).await {
                Ok(()) => {
                    until = next;
                    a.until_ms.store(next, Ordering::Relaxed);
                }
                Err(LedgerError::Stale { .. }) => {
                    self.stale(
                        &a.lease.job.to_string(),
                        a.lease.fence,
                        json!({"op": "heartbeat"}),
                    );
                    return false;
                }
                Err(e) => {
                    self.count(&self.stats.ledger_errors, fm::LEDGER_ERRORS);
                    warn!(error = %e, "heartbeat failed; will try again");
                }
            }
            if let Some(m) = a.held()
                && let Err(e) = self.queue.set_visibility(&m.receipt, w.lease()).await
            {
                warn!(error = %e, "could not extend the message's visibility");
            }
            if self.clock.now_ms() >= until {
                self.history.record(
                    self.clock.now_ms(),
                    "lease_expired",
                    &a.msg.job_id,
                    a.lease.fence,
                    json!({}),
                );
                return true;
            }
        }
    }

    /// Writes an attempt's outcome, then acknowledges, hides, re-sends or dead-letters its
    /// message.
    ///
    /// - success: SUCCEEDED, message deleted;
    /// - throttled: RETRYING without spending the attempt, after a delay that grows with the
    ///   message's receive count;
    /// - permanent, or the last attempt: FAILED, then the message goes to the dead-letter
    ///   queue with its failure record, then it is deleted;
    /// - otherwise: RETRYING after the policy's delay; the message is hidden as long (a
    ///   handed-off job, whose message is gone, gets a new one).
    async fn record(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        outcome: Outcome,
        info: TaskInfo,
        acker: &Acker,
    ) {
        // A lease that could not be renewed in time is not ours any more, even if nobody has
        // taken it yet: the result is not written (the job will run again).
        if self.clock.now_ms() >= a.until_ms.load(Ordering::Relaxed) {
            self.count(&self.stats.leases_lost, fm::LEASES_LOST);
            self.history.record(
                self.clock.now_ms(),
                "lease_expired",
                &a.msg.job_id,
                a.lease.fence,
                json!({}),
            );
            warn!(
                fence = a.lease.fence,
                "the lease expired before the attempt ended; not recording its outcome"
            );
            self.give_back(a).await;
            return;
        }
        let max_attempts = self
            .config
            .max_attempts_for(&a.msg.job_type, a.lease.max_attempts.or(a.msg.max_attempts));
        let ended = self.clock.now_ms();
        let mut rec = AttemptRecord {
            attempt: a.lease.attempt,
            fence: a.lease.fence,
            started_ms: a.lease.started_ms,
            ended_ms: ended,
            target: route.target.as_str().to_owned(),
            outcome: "succeeded".to_owned(),
            retry_at_ms: None,
            reason: route.reason.clone(),
            exit_code: info.exit_code,
            stopped_reason: info.stopped_reason,
        };
        let took = ended.saturating_sub(a.lease.started_ms);
        let target = route.target.as_str();
        metrics::histogram!(fm::JOB_DURATION, "target" => target, "job_type" => a.msg.job_type.clone())
            .record(took as f64 / 1000.0);
        let (class, message) = match outcome {
            Outcome::Succeeded { result } => {
                let result = (result.len() <= self.config.limits.max_result_bytes)
                    .then(|| String::from_utf8_lossy(&result).into_owned());
                if self
                    .write_finish(&a.lease, &Finish::Succeeded { result }, &rec)
                    .await
                    .is_some()
                {
                    Stats::bump(&self.stats.succeeded);
                    metrics::counter!(fm::JOBS_COMPLETED, "target" => target, "outcome" => "succeeded")
                        .increment(1);
                    self.learner.observe(&a.msg.job_type, took);
                    debug!(duration_ms = took, "succeeded");
                    if let Some(m) = a.held() {
                        acker.delete(m.receipt.clone());
                    }
                }
                return;
            }
            Outcome::Failed { class, message } => (class, clip(&message)),
        };
        if class == ErrorClass::Timeout {
            self.learner.observe(&a.msg.job_type, took);
        }
        rec.outcome = class.as_str().to_owned();
        let error = format!("{class}: {message}");
        let receive_count = a.message.map_or(1, |(m, _)| m.receive_count);
        let retry = match class {
            ErrorClass::Throttled => {
                Stats::bump(&self.stats.throttled);
                metrics::counter!(fm::THROTTLES, "target" => target).increment(1);
                Some((self.retry.delay(receive_count, &mut rand::rng()), true))
            }
            ErrorClass::Permanent => None,
            _ if a.lease.attempt < max_attempts => {
                Some((self.retry.delay(a.lease.attempt, &mut rand::rng()), false))
            }
            _ => None,
        };
        match retry {
            Some((delay, refund)) => {
                let retry_at_ms = ended + delay.as_millis() as u64;
                rec.retry_at_ms = Some(retry_at_ms);
                let finish = Finish::Retry {
                    error,
                    retry_at_ms,
                    refund,
                };
                if self.write_finish(&a.lease, &finish, &rec).await.is_some() {
                    Stats::bump(&self.stats.retried);
                    metrics::counter!(fm::RETRIES, "target" => target, "error_class" => class.as_str())
                        .increment(1);
                    info!(attempt = a.lease.attempt, max_attempts, %class, error = %message, refund, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
                    match a.message {
                        Some((m, received_at)) if !a.handed_off.load(Ordering::Relaxed) => {
                            // SQS keeps a message hidden at most 12 hours from its receipt; a
                            // longer delay lets it come back early and the claim hides it again.
                            let left = Duration::from_secs(SQS_MAX_VISIBILITY_SECS)
                                .saturating_sub(received_at.elapsed() + VISIBILITY_MARGIN);
                            let hide = visibility_secs(delay.min(left).as_millis() as u64);
                            self.set_visibility(&m.receipt, hide).await;
                        }
                        _ => {
                            // The message was handed off: send the job again, delayed (up to
                            // SQS's 15 minutes; the claim waits out the rest of the delay).
                            if let Err(e) = self.queue.send(&a.body, delay).await {
                                warn!(error = %e, "could not re-send the job; the sweeper will find it");
                            }
                        }
                    }
                }
            }
            None => {
                // Ledger first: if the dead-letter send is lost to a crash, the message comes
                // back, the claim finds the job FAILED and sends it then.
                if let Some(history) = self
                    .write_finish(&a.lease, &Finish::Failed { error }, &rec)
                    .await
                {
                    Stats::bump(&self.stats.failed);
                    metrics::counter!(fm::JOBS_COMPLETED, "target" => target, "outcome" => "failed")
                        .increment(1);
                    warn!(attempt = a.lease.attempt, max_attempts, %class, error = %message, "job failed");
                    let record =
                        self.failure_record(Some(a.msg), class.as_str(), &message, &history);
                    if self.dead_letter(&a.body, &record).await
                        && let Some(m) = a.held()
                    {
                        acker.delete(m.receipt.clone());
                    }
                }
            }
        }
    }

    /// Writes an outcome, retrying transient ledger errors. `None` when the write did not
    /// happen (lease lost, or the ledger stayed unreachable: the message will come back);
    /// else the job's history if it became FAILED.
    async fn write_finish(
        &self,
        lease: &Lease,
        finish: &Finish,
        rec: &AttemptRecord,
    ) -> Option<Vec<AttemptRecord>> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(5)
            .with_jitter()
            .build();
        loop {
            match self.ledger.finish(lease, finish, rec).await {
                Ok(history) => {
                    let event = if finish.state().is_terminal() {
                        "terminal"
                    } else {
                        "retry"
                    };
                    self.history.record(
                        self.clock.now_ms(),
                        event,
                        &lease.job.to_string(),
                        lease.fence,
                        json!({"state": finish.state()}),
                    );
                    return Some(history);
                }
                Err(LedgerError::Stale { .. }) => {
                    self.stale(
                        &lease.job.to_string(),
                        lease.fence,
                        json!({"op": "finish", "state": finish.state()}),
                    );
                    self.count(&self.stats.leases_lost, fm::LEASES_LOST);
                    warn!(fence = lease.fence, state = %finish.state(), "ledger refused the outcome: the lease was lost");
                    return None;
                }
                Err(e) => {
                    self.count(&self.stats.ledger_errors, fm::LEDGER_ERRORS);
                    match delays.next() {
                        Some(d) => {
                            warn!(error = %e, "outcome write failed; retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            warn!(error = %e, "outcome write failed; leaving the message to come back");
                            return None;
                        }
                    }
                }
            }
        }
    }

    fn failure_record(
        &self,
        msg: Option<&JobMessage>,
        class: &str,
        error: &str,
        history: &[AttemptRecord],
    ) -> FailureRecord {
        let mut targets: Vec<String> = Vec::new();
        for h in history {
            if !targets.contains(&h.target) {
                targets.push(h.target.clone());
            }
        }
        FailureRecord {
            job_id: msg.map(|m| m.job_id.clone()),
            request_id: msg.map(|m| m.request_id.clone()),
            error_class: class.to_owned(),
            error: clip(error),
            attempts: history.iter().map(|h| h.attempt).max().unwrap_or(0),
            targets,
            first_attempt_ms: history.iter().map(|h| h.started_ms).min(),
            last_attempt_ms: history.iter().map(|h| h.started_ms).max(),
            replica: self.replica.clone(),
            dead_lettered_ms: self.clock.now_ms(),
        }
    }

    /// Sends a message to the dead-letter queue with its failure record. False if it could
    /// not be sent (then the message must not be deleted).
    async fn dead_letter(&self, body: &str, record: &FailureRecord) -> bool {
        match self
            .dead_letters
            .send_dead_letter(body, &record.attributes())
            .await
        {
            Ok(()) => {
                Stats::bump(&self.stats.dead_lettered);
                metrics::counter!(fm::DEAD_LETTERED, "error_class" => record.error_class.clone())
                    .increment(1);
                true
            }
            Err(e) => {
                warn!(error = %e, "dead-letter send failed; the message will come back");
                false
            }
        }
    }

    async fn set_visibility(&self, receipt: &str, after: Duration) {
        if let Err(e) = self.queue.set_visibility(receipt, after).await {
            warn!(error = %e, "could not change the message's visibility");
        }
    }
}

#[cfg(test)]
mod tests;
