//! The coordinator engine: one worker replica's loop. Generic over the queue, the
//! dead-letter queue, the ledger and the two dispatchers (Lambda, and tasks: ECS or local
//! processes), so the same code runs against AWS and against in-memory parts in tests and
//! benchmarks.
//!
//! For each message: parse it (a malformed one goes to the dead-letter queue with its
//! reason), claim the job in the ledger, route it (`routing.rs`), run the attempt while a
//! heartbeat renews the lease and the message's visibility, commit the outcome to the ledger
//! (conditional on owner and fence, with the request's counters, batched by the
//! [`Recorder`]) while the heartbeat goes on, and only then acknowledge the message. An ECS
//! task, once it exists, is handed off: its id goes to the ledger and the message is
//! deleted, so a job can run longer than SQS's 12-hour visibility limit; whoever holds the
//! lease follows the task, and the sweeper of any replica adopts it if that replica dies.
//! Backpressure: receive loops ask for no more messages than there are free slots.
//!
//! The parts: [`receive`] (the receive loops), [`attempt`] (one message from claim to
//! outcome), [`outcome`] (what an outcome writes and what becomes of its message),
//! [`sweep`] (adoption and lost messages), [`views`] (request views and the queue's
//! frontier).

mod attempt;
mod events;
mod execute;
mod finish;
mod handed;
mod lease;
mod outcome;
mod receive;
mod sweep;
mod thresholds;
pub mod views;
mod windows;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleet_shared::config::{Config, SQS_MAX_VISIBILITY_SECS};
use fleet_shared::ledger::recorder::{Live, Recorder};
use fleet_shared::ledger::{Ledger, RequestLedger};
use fleet_shared::metrics::{self as fm, Health};
use fleet_shared::queue::{DeadLetterQueue, JobQueue};
use fleet_shared::time::Clock;
use rand::RngExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::acks::Acker;
use crate::dispatch::{Dispatcher, TaskLauncher};
use crate::history::HistoryLog;
use crate::learn::Learner;
use crate::limits::{AdaptiveLimit, FleetCap, Permits, SharedRate, StartPace};
use crate::retry::RetryPolicy;
use crate::routing::Route;
use views::{Frontier, Views};

/// A message is kept hidden (in flight) for at most this long; a longer wait deletes it and
/// sends it again with a delay, so a storm of long retries cannot fill SQS's in-flight
/// limit (about 120,000 messages a queue, past which receives come back empty).
pub const MAX_HIDE: Duration = Duration::from_secs(60);

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

/// The five parts' types as one parameter: `Engine<B>` runs on the queue, dead-letter
/// queue, ledger, dispatcher and task launcher that `B` names. A tuple of the five is one
/// (what [`Engine::new`] builds).
pub trait Backends: 'static {
    type Queue: JobQueue;
    type DeadLetters: DeadLetterQueue;
    type Ledger: Ledger + RequestLedger;
    type Dispatcher: Dispatcher;
    type Tasks: TaskLauncher;
}

impl<Q, D, L, X, T> Backends for (Q, D, L, X, T)
where
    Q: JobQueue,
    D: DeadLetterQueue,
    L: Ledger + RequestLedger,
    X: Dispatcher,
    T: TaskLauncher,
{
    type Queue = Q;
    type DeadLetters = D;
    type Ledger = L;
    type Dispatcher = X;
    type Tasks = T;
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
    /// Jobs of cancelled requests this replica cancelled.
    pub cancelled: AtomicU64,
    /// Messages deleted and sent again delayed, instead of hidden for long.
    pub resent_delayed: AtomicU64,
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
    pub cancelled: u64,
    pub resent_delayed: u64,
}

impl Stats {
    fn count_route(&self, route: &Route) {
        metrics::counter!(
            fm::ROUTING_DECISIONS,
            "target" => route.target.as_str(),
            "reason" => route.reason.to_string()
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
            cancelled: g(&self.cancelled),
            resent_delayed: g(&self.resent_delayed),
        }
    }
}

pub struct Engine<B: Backends> {
    queue: Arc<B::Queue>,
    dead_letters: Arc<B::DeadLetters>,
    ledger: Arc<B::Ledger>,
    dispatcher: Arc<B::Dispatcher>,
    tasks: Arc<B::Tasks>,
    config: Arc<Config>,
    replica: String,
    retry: RetryPolicy,
    clock: Clock,
    stats: Stats,
    /// The Lambda in-flight limit, adapted to throttling.
    lambda_limit: Arc<AdaptiveLimit>,
    /// `lambda.max_concurrency` across every replica (the function's reserved concurrency).
    lambda_cap: Option<Arc<FleetCap>>,
    /// `job_types.<t>.max_concurrency` across every replica, per job type that sets it.
    type_caps: HashMap<String, Arc<FleetCap>>,
    /// `tenants.<name>.max_concurrency` across every replica, per tenant that sets it.
    tenant_caps: HashMap<String, Arc<FleetCap>>,
    /// The ECS in-flight limit (tasks started and followed), adapted to throttling.
    ecs_limit: Arc<AdaptiveLimit>,
    /// RunTask starts a second across the fleet (`ecs.run_task_per_sec`, the account's).
    run_tasks: SharedRate,
    learner: Learner,
    history: HistoryLog,
    health: Arc<Health>,
    /// For results too large for the ledger and direct payloads too large for it (the
    /// claim-check); without it such jobs fail with a clear error.
    s3: Option<aws_sdk_s3::Client>,
    views: Views,
    /// Start paces of the job types with `max_starts_per_sec`, made at first use.
    paces: std::sync::Mutex<HashMap<String, Arc<StartPace>>>,
    /// Each job type's in-flight limit, lowered when its jobs report being throttled.
    type_limits: std::sync::Mutex<HashMap<String, Arc<AdaptiveLimit>>>,
    /// Requests with failures to check against what they tolerate.
    thresholds: thresholds::Thresholds,
    /// Requests with terminal outcomes to check for their finish.
    finishes: finish::Finishes,
    /// Where completion events go (`[events]`); `None`: nowhere (finishes are still
    /// recorded).
    notifier: Option<crate::notify::Notifier>,
    /// Windowed requests with finishes to release for.
    windows: Arc<windows::Windows>,
    frontier: Frontier,
    /// Jobs this replica runs, per request (reported with the counters).
    live: Arc<Live>,
    /// Batches this replica's state changes; started by `run`.
    recorder: OnceLock<Recorder>,
    /// The outcomes queue (invocation records of attempts handed to Lambda).
    outcomes: Option<Arc<B::Queue>>,
    /// Attempts this replica handed to Lambda.
    handed: handed::Handed,
    /// Messages received (or being received) that hold no target permit yet: the room a
    /// receive may ask for leaves them out, so the receive loops do not ask twice for it.
    unstarted: Arc<std::sync::atomic::AtomicUsize>,
    /// Held by the receive loop that waits for room, until it has reserved its share (one
    /// waits at a time, so the loops do not all wake together to split a batch's room).
    receive_gate: tokio::sync::Mutex<()>,
    /// Asynchronous Invoke calls in progress (`lambda.invoke_calls`): each holds a connection.
    invoke_calls: tokio::sync::Semaphore,
}

/// How long an attempt waits for a slot of its job type's or tenant's fleet-wide cap before
/// it is deferred.
const CAP_WAIT: Duration = Duration::from_secs(2);

/// The fleet-wide caps of the named entries (job types, tenants) that set one, named
/// `<kind>-<name>` in the ledger.
fn fleet_caps<C>(
    entries: &std::collections::BTreeMap<String, C>,
    limit: impl Fn(&C) -> Option<u32>,
    kind: &str,
    replica: &str,
) -> HashMap<String, Arc<FleetCap>> {
    entries
        .iter()
        .filter_map(|(name, c)| {
            let n = limit(c)?;
            Some((
                name.clone(),
                FleetCap::new(&format!("{kind}-{name}"), n, replica),
            ))
        })
        .collect()
}

/// Seconds for a visibility timeout: rounded up, at least 1, at most SQS's limit.
fn visibility_secs(ms: u64) -> Duration {
    Duration::from_secs(ms.div_ceil(1000).clamp(1, SQS_MAX_VISIBILITY_SECS))
}

/// An error text as the ledger and dead-letter records keep it.
fn clip(s: &str) -> String {
    fleet_shared::ledger::item::clip_bytes(s, fleet_shared::ledger::item::ERROR_MAX_BYTES)
}

impl<Q: JobQueue, D: DeadLetterQueue, L: Ledger + RequestLedger, X: Dispatcher, T: TaskLauncher>
    Engine<(Q, D, L, X, T)>
{
    pub fn new(parts: Parts<Q, D, L, X, T>, config: Arc<Config>, replica: String) -> Self {
        let (min, max) = config.lambda_concurrency();
        let live: Arc<Live> = Arc::default();
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
            lambda_cap: config
                .lambda
                .max_concurrency
                .map(|n| FleetCap::new("lambda", n as u32, &replica)),
            type_caps: fleet_caps(&config.job_types, |c| c.max_concurrency, "type", &replica),
            tenant_caps: fleet_caps(&config.tenants, |c| c.max_concurrency, "tenant", &replica),
            ecs_limit: AdaptiveLimit::new("ecs", 1, config.ecs.max_concurrency),
            run_tasks: SharedRate::new("ecs-run-task", config.ecs.run_task_per_sec),
            learner: Learner::new(),
            history: HistoryLog::open(config.worker.history_log.as_deref(), &replica),
            health: Health::new(Duration::from_secs(config.metrics.ready_window_secs)),
            s3: None,
            views: Views::default(),
            paces: std::sync::Mutex::default(),
            type_limits: std::sync::Mutex::default(),
            thresholds: thresholds::Thresholds::default(),
            finishes: finish::Finishes::default(),
            notifier: None,
            windows: Arc::default(),
            frontier: Frontier::new(Duration::from_secs(config.worker.recover_secs)),
            handed: handed::Handed::new(live.clone()),
            live,
            recorder: OnceLock::new(),
            outcomes: None,
            unstarted: Arc::default(),
            receive_gate: tokio::sync::Mutex::new(()),
            invoke_calls: tokio::sync::Semaphore::new(config.lambda.invoke_calls),
            replica,
            config,
        }
    }
}

impl<B: Backends> Engine<B> {
    /// The start pace of `job_type`, when its configuration sets `max_starts_per_sec`.
    fn pace_of(&self, job_type: &str) -> Option<Arc<StartPace>> {
        let per_sec = self.config.job_types.get(job_type)?.max_starts_per_sec?;
        let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            paces
                .entry(job_type.to_owned())
                .or_insert_with(|| Arc::new(StartPace::new(&format!("starts-{job_type}"), per_sec)))
                .clone(),
        )
    }

    /// The in-flight limit of `job_type` in this replica, made at first use.
    fn type_limit(&self, job_type: &str) -> Arc<AdaptiveLimit> {
        let mut limits = self.type_limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.len() > 1_000 {
            // Job type names come from messages: forget the limits of types nothing runs.
            limits.retain(|_, l| Arc::strong_count(l) > 1 || l.in_flight() > 0);
        }
        limits
            .entry(job_type.to_owned())
            .or_insert_with(|| {
                // Every attempt also holds a target's permit: the two targets' limits bound
                // what a job type can have in flight, until it is throttled.
                let most = self.config.lambda_concurrency().1 + self.config.ecs.max_concurrency;
                let listed = self.config.job_types.contains_key(job_type);
                AdaptiveLimit::for_job_type(job_type, listed, 1, most)
            })
            .clone()
    }

    /// Room for an attempt of `job_type` under its job type's limit, then under `target`
    /// (the target's fleet-wide cap, when it has one, is taken after).
    async fn permits(&self, job_type: &str, target: &Arc<AdaptiveLimit>) -> Permits {
        let job_type = self.type_limit(job_type).acquire().await;
        Permits {
            target: target.acquire().await,
            job_type,
            fleet: None,
            type_cap: None,
            tenant_cap: None,
        }
    }

    /// Takes a slot of the fleet-wide caps of the job's type (`job_types.<t>.max_concurrency`)
    /// and of its tenant (`tenants.<name>.max_concurrency`), when they have one; other jobs
    /// make no call.
    ///
    /// An attempt waits at most [`CAP_WAIT`] for each: a job held back longer goes back to
    /// the queue for a second or two ([`attempt::AttemptEnd::Deferred`]) rather than hold a
    /// slot of this replica that another job type's or tenant's job could use.
    async fn capped(
        &self,
        msg: &fleet_shared::message::JobMessage,
        permits: &mut Permits,
    ) -> Result<(), attempt::AttemptEnd> {
        permits.type_cap = self
            .cap_slot(
                self.type_caps.get(&msg.job_type),
                "could not take a slot of the job type's max_concurrency",
            )
            .await?;
        permits.tenant_cap = self
            .cap_slot(
                self.tenant_caps.get(msg.tenant()),
                "could not take a slot of the tenant's max_concurrency",
            )
            .await?;
        Ok(())
    }

    /// A slot of `cap` (none without one), waiting at most [`CAP_WAIT`] for it.
    async fn cap_slot(
        &self,
        cap: Option<&Arc<FleetCap>>,
        what: &str,
    ) -> Result<Option<crate::limits::CapPermit>, attempt::AttemptEnd> {
        let Some(cap) = cap else { return Ok(None) };
        match tokio::time::timeout(CAP_WAIT, cap.acquire(self.ledger.as_ref(), self.clock)).await {
            Ok(Ok(slot)) => Ok(Some(slot)),
            Ok(Err(e)) => Err(self.refused_by_ledger(what, &e)),
            Err(_) => {
                let ms = rand::rng().random_range(1_000..3_000);
                Err(attempt::AttemptEnd::Deferred(Duration::from_millis(ms)))
            }
        }
    }

    /// Waits for a start slot of the attempt's job type (when it is paced). The request's
    /// view is read first when it is half its TTL old, so that the cancel check after the
    /// wait finds it fresh and the start keeps to its slot's time.
    async fn paced(
        &self,
        a: &attempt::Attempt<'_>,
    ) -> Result<(), fleet_shared::ledger::LedgerError> {
        let Some(p) = self.pace_of(&a.msg.job_type) else {
            return Ok(());
        };
        let half = views::VIEW_TTL / 2;
        let _ = self
            .views
            .get(self.ledger.as_ref(), &a.msg.request_id, half)
            .await;
        p.acquire(self.ledger.as_ref(), self.clock).await
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

    /// The outcomes queue: with it, and a dispatcher that hands attempts off
    /// (`lambda.invocation = "event"`), Lambda attempts are handed off and their invocation
    /// records read from this queue.
    pub fn with_outcomes(mut self, outcomes: Arc<B::Queue>) -> Self {
        self.outcomes = Some(outcomes);
        self
    }

    /// S3 for the claim-check of large results and direct payloads.
    /// Sends completion events with `notifier`.
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_s3(mut self, s3: aws_sdk_s3::Client) -> Self {
        self.s3 = Some(s3);
        self
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn stats(&self) -> Report {
        self.stats.report()
    }

    /// The Lambda in-flight limit as it stands.
    pub fn lambda_limit(&self) -> usize {
        self.lambda_limit.limit()
    }

    /// The recorder (`run` starts it).
    fn recorder(&self) -> &Recorder {
        self.recorder.get_or_init(|| {
            let (rec, _handle) = Recorder::spawn(
                self.ledger.clone(),
                &self.replica,
                self.live.clone(),
                self.clock,
            );
            rec
        })
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
        let (recorder, recorder_task) = Recorder::spawn(
            self.ledger.clone(),
            &self.replica,
            self.live.clone(),
            self.clock,
        );
        let recorder_task = self.recorder.set(recorder).is_ok().then_some(recorder_task);
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
        // Failure thresholds are checked until the drain is over (failures keep coming).
        let thresholds_stop = CancellationToken::new();
        let thresholds = tokio::spawn(self.clone().threshold_loop(thresholds_stop.clone()));
        let releases = tokio::spawn(self.clone().release_loop(thresholds_stop.clone()));
        let finishes = tokio::spawn(self.clone().finish_loop(thresholds_stop.clone()));
        let renewals: Vec<_> = self
            .lambda_cap
            .iter()
            .chain(self.type_caps.values())
            .chain(self.tenant_caps.values())
            .map(|cap| {
                tokio::spawn(cap.clone().renew_loop(
                    self.ledger.clone(),
                    self.clock,
                    thresholds_stop.clone(),
                ))
            })
            .collect();
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
        if self.hands_off() {
            loops.spawn(self.clone().outcome_loop(
                tracker.clone(),
                acker.clone(),
                shutdown.clone(),
            ));
            loops.spawn(self.clone().handed_loop(shutdown.clone()));
        }
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
        thresholds_stop.cancel();
        let _ = thresholds.await;
        let _ = releases.await;
        let _ = finishes.await;
        for r in renewals {
            let _ = r.await;
        }
        drop(acker);
        acks.finish().await;
        if let Some(t) = recorder_task {
            t.finish().await;
        }
        self.learner.sync(self.ledger.as_ref(), &self.config).await;
        handed::log_handed(self.handed.len());
        let report = self.stats();
        info!(?report, routes = ?self.stats.routes(), "worker stopped");
        report
    }
}

#[cfg(test)]
mod tests;
