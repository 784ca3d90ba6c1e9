//! Concurrency and rate limits of one replica.
//!
//! - [`AdaptiveLimit`]: an in-flight limit that adapts to throttling: halved when a call is
//!   throttled; after each window of as many successes as the limit, doubled back up to the
//!   last good value (the highest limit that held for a window, below the one throttled),
//!   then grown by one per window above it, between configured bounds. A burst of throttles
//!   from calls started under the same limit halves it once, not once per call.
//! - [`RateLimiter`]: a token bucket for calls with a per-second quota, in one replica.
//! - [`SharedRate`]: a token bucket shared by every replica, kept in the ledger and taken a
//!   block at a time (ECS RunTask: the account's budget, not each replica's).
//! - [`StartPace`]: start slots at a steady rate shared by every replica, kept in the ledger
//!   and taken a block at a time (a job type's `max_starts_per_sec`): no burst on top.
//!
//! A target's gauges (`fleet_in_flight`, `fleet_concurrency_limit`) come from its
//! [`AdaptiveLimit`], so in-flight falls back to 0 whenever every permit is gone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::error::ErrorClass;
use fleet_shared::ledger::{Ledger, LedgerError};
use fleet_shared::time::Clock;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    successes: usize,
    /// The last good value: the highest limit that held for a window of successes, kept
    /// below a limit that was throttled. Recovery doubles up to it, then probes by one.
    good: usize,
    /// Grows with every decrease: a throttled permit from before it does not decrease again.
    generation: u64,
}

/// What a limit's gauges are labelled with.
#[derive(Debug, Clone)]
enum Gauge {
    /// A target's (`fleet_concurrency_limit{target}`, `fleet_in_flight{target}`).
    Target(&'static str),
    /// A job type's (`fleet_job_type_concurrency_limit{job_type}`).
    JobType(String),
}

impl std::fmt::Display for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gauge::Target(t) => f.write_str(t),
            Gauge::JobType(t) => write!(f, "job type {t}"),
        }
    }
}

#[derive(Debug)]
pub struct AdaptiveLimit {
    name: Gauge,
    min: usize,
    max: usize,
    state: Mutex<State>,
    changed: Notify,
}

impl AdaptiveLimit {
    /// A target's limit, starting at `max`.
    pub fn new(name: &'static str, min: usize, max: usize) -> Arc<Self> {
        Self::labelled(Gauge::Target(name), min, max)
    }

    /// A job type's limit, starting at `max`: lowered when the job itself reports being
    /// throttled (its partner API answered 429), to half of what was running then, and
    /// raised again as its jobs succeed.
    pub fn for_job_type(job_type: &str, min: usize, max: usize) -> Arc<Self> {
        Self::labelled(Gauge::JobType(job_type.to_owned()), min, max)
    }

    fn labelled(name: Gauge, min: usize, max: usize) -> Arc<Self> {
        let min = min.max(1);
        let max = max.max(min);
        let limit = Arc::new(Self {
            name,
            min,
            max,
            state: Mutex::new(State {
                limit: max,
                in_flight: 0,
                successes: 0,
                good: max,
                generation: 0,
            }),
            changed: Notify::new(),
        });
        limit.publish(&limit.lock());
        limit
    }

    /// Shows the limit and the calls in flight as the `fleet_concurrency_limit` and
    /// `fleet_in_flight` gauges of this target.
    fn publish(&self, s: &State) {
        use fleet_shared::metrics as fm;
        match &self.name {
            Gauge::Target(t) => {
                metrics::gauge!(fm::CONCURRENCY_LIMIT, "target" => *t).set(s.limit as f64);
                metrics::gauge!(fm::IN_FLIGHT, "target" => *t).set(s.in_flight as f64);
            }
            Gauge::JobType(t) => {
                metrics::gauge!(fm::JOB_TYPE_CONCURRENCY_LIMIT, "job_type" => t.clone())
                    .set(s.limit as f64);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Calls that could start now.
    pub fn available(&self) -> usize {
        let s = self.lock();
        s.limit.saturating_sub(s.in_flight)
    }

    /// Waits until a call could start.
    pub async fn wait_available(&self) {
        loop {
            let changed = self.changed.notified();
            if self.available() > 0 {
                return;
            }
            changed.await;
        }
    }

    /// Room under the limit if there is some now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<LimitPermit> {
        let mut s = self.lock();
        (s.in_flight < s.limit).then(|| {
            s.in_flight += 1;
            self.publish(&s);
            LimitPermit {
                limit: self.clone(),
                generation: s.generation,
                done: false,
            }
        })
    }

    /// Waits for room under the limit and takes it.
    pub async fn acquire(self: &Arc<Self>) -> LimitPermit {
        loop {
            let changed = self.changed.notified();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    self.publish(&s);
                    return LimitPermit {
                        limit: self.clone(),
                        generation: s.generation,
                        done: false,
                    };
                }
            }
            changed.await;
        }
    }

    fn release(&self, generation: u64, signal: Signal) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        match signal {
            Signal::Success => {
                s.successes += 1;
                if s.successes >= s.limit {
                    s.good = s.good.max(s.limit);
                }
                if s.successes >= s.limit && s.limit < self.max {
                    s.limit = if s.limit < s.good {
                        (s.limit * 2).min(s.good)
                    } else {
                        s.limit + 1
                    }
                    .min(self.max);
                    s.successes = 0;
                    if s.limit == self.max {
                        info!(
                            target_kind = %self.name,
                            limit = s.limit,
                            "concurrency limit back at its maximum"
                        );
                    } else {
                        debug!(
                            target_kind = %self.name,
                            limit = s.limit,
                            "concurrency limit raised"
                        );
                    }
                }
            }
            Signal::Throttled if generation == s.generation => {
                // A job type's limit sits far above what runs until its first throttle:
                // halve what was running (this permit included), not the ceiling.
                let before = match self.name {
                    Gauge::JobType(_) => s.limit.min(s.in_flight + 1),
                    Gauge::Target(_) => s.limit,
                };
                s.good = s.good.min(before.saturating_sub(1)).max(self.min);
                s.limit = (before / 2).max(self.min);
                s.successes = 0;
                s.generation += 1;
                warn!(
                    target_kind = %self.name,
                    from = before,
                    to = s.limit,
                    "throttled: concurrency limit lowered"
                );
            }
            Signal::Throttled | Signal::Neutral => {}
        }
        self.publish(&s);
        drop(s);
        self.changed.notify_waiters();
    }
}

enum Signal {
    Success,
    Throttled,
    Neutral,
}

/// Room under an [`AdaptiveLimit`]; tell it how the call went. Dropped without a word, it
/// counts as neither success nor throttling.
#[derive(Debug)]
pub struct LimitPermit {
    limit: Arc<AdaptiveLimit>,
    generation: u64,
    done: bool,
}

impl LimitPermit {
    pub fn success(mut self) {
        self.done = true;
        self.limit.release(self.generation, Signal::Success);
    }

    pub fn throttled(mut self) {
        self.done = true;
        self.limit.release(self.generation, Signal::Throttled);
    }
}

/// The permits an attempt holds: its target's (Lambda or ECS) and its job type's. How the
/// attempt ended tells each what it needs: a success both; a throttle the one that throttled
/// (the target's for a Lambda 429 or an ECS capacity shortage, the job type's when the job
/// itself reported being throttled); anything else neither.
#[derive(Debug)]
pub struct Permits {
    pub target: LimitPermit,
    pub job_type: LimitPermit,
    /// A slot of the fleet-wide cap of the target, when it has one.
    pub fleet: Option<CapPermit>,
}

impl Permits {
    pub fn ended(self, end: &crate::dispatch::TaskEnd) {
        use crate::dispatch::Outcome;
        match &end.outcome {
            Outcome::Succeeded { .. } => {
                self.target.success();
                self.job_type.success();
            }
            Outcome::Failed {
                class: ErrorClass::Throttled,
                ..
            } if end.throttled_by_job() => self.job_type.throttled(),
            Outcome::Failed {
                class: ErrorClass::Throttled,
                ..
            } => self.target.throttled(),
            Outcome::Failed { .. } => {}
        }
    }
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        if !self.done {
            self.limit.release(self.generation, Signal::Neutral);
        }
    }
}

/// A token bucket: at most `per_sec` calls a second on average, bursts of up to `per_sec`.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    bucket: tokio::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_sec: f64) -> Self {
        let per_sec = per_sec.max(0.001);
        Self {
            per_sec,
            bucket: tokio::sync::Mutex::new((per_sec, Instant::now())),
        }
    }

    /// Waits for a token. Callers are served in arrival order.
    pub async fn acquire(&self) {
        let mut bucket = self.bucket.lock().await;
        loop {
            let now = Instant::now();
            let (tokens, at) = *bucket;
            let tokens =
                (tokens + now.duration_since(at).as_secs_f64() * self.per_sec).min(self.per_sec);
            if tokens >= 1.0 {
                *bucket = (tokens - 1.0, now);
                return;
            }
            *bucket = (tokens, now);
            tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / self.per_sec)).await;
        }
    }
}

/// A per-second budget shared by every replica (a token bucket in the ledger): a replica
/// takes a block of tokens at a time (a read and a conditional write) and spends it locally.
#[derive(Debug)]
pub struct SharedRate {
    bucket: fleet_shared::ledger::Bucket,
    block: u32,
    held: tokio::sync::Mutex<u32>,
}

impl SharedRate {
    /// `per_sec` for the whole fleet, bursts of up to a second's worth.
    pub fn new(name: &str, per_sec: f64) -> Self {
        Self {
            bucket: fleet_shared::ledger::Bucket {
                name: name.to_owned(),
                rate: per_sec,
                burst: per_sec.max(1.0),
            },
            block: ((per_sec / 4.0).ceil() as u32).clamp(1, 10),
            held: tokio::sync::Mutex::new(0),
        }
    }

    /// Waits for a token (see [`spend_or_take`] for ledger errors).
    pub async fn acquire<L: Ledger>(&self, ledger: &L, clock: Clock) -> Result<(), LedgerError> {
        let mut held = self.held.lock().await;
        spend_or_take(
            &self.bucket.name,
            &mut *held,
            |held| {
                let one = *held > 0;
                if one {
                    *held -= 1;
                }
                one.then_some(Duration::ZERO)
            },
            || ledger.take_tokens(&self.bucket, self.block, clock.now_ms()),
            |held, t| {
                *held = t.granted;
                (t.granted == 0).then(|| Duration::from_millis(t.wait_ms))
            },
        )
        .await
    }
}

/// The wait of a budget shared through the ledger: `spend` uses what is held (the wait
/// before the start it allows; `None` when nothing is held), else `take` asks the ledger
/// for more and `keep` holds what it gave (the wait before asking again when it gave none).
/// A ledger error that may pass (throttled, transient, a timeout) is tried again after a
/// growing pause, up to 5 s (nothing is ever assumed granted); a permanent one (a missing
/// table, a refused permission) is returned, as waiting cannot cure it.
async fn spend_or_take<H, G, F>(
    name: &str,
    held: &mut H,
    spend: impl Fn(&mut H) -> Option<Duration>,
    take: impl Fn() -> F,
    keep: impl Fn(&mut H, G) -> Option<Duration>,
) -> Result<(), LedgerError>
where
    F: std::future::Future<Output = Result<G, LedgerError>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        if let Some(wait) = spend(held) {
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        match take().await {
            Ok(granted) => {
                if let Some(wait) = keep(held, granted) {
                    tokio::time::sleep(wait).await;
                }
            }
            Err(e) if e.class() == ErrorClass::Permanent => return Err(e),
            Err(e) => {
                warn!(budget = name, error = %e, "could not take from a budget shared through the ledger; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Starts paced across the fleet (a job type's `max_starts_per_sec`): start slots from a
/// pace kept in the ledger, taken a block at a time and spent one start each, none before
/// its time. A slot not used within a quarter of the spacing after its time is dropped
/// rather than spent late, so that a replica held up cannot bunch its starts with the
/// others' on time.
#[derive(Debug)]
pub struct StartPace {
    pace: fleet_shared::ledger::Pace,
    block: u32,
    /// Slot times held, in microseconds, oldest first.
    held: tokio::sync::Mutex<std::collections::VecDeque<u64>>,
}

impl StartPace {
    /// `per_sec` starts a second for the whole fleet, a quarter second's slots a block
    /// (1 to 10).
    pub fn new(name: &str, per_sec: f64) -> Self {
        let block = ((per_sec / 4.0).ceil() as u32).clamp(1, 10);
        Self {
            pace: fleet_shared::ledger::Pace::new(name, per_sec, block),
            block,
            held: tokio::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Waits for a start slot's time (see [`spend_or_take`] for ledger errors).
    pub async fn acquire<L: Ledger>(&self, ledger: &L, clock: Clock) -> Result<(), LedgerError> {
        let mut held = self.held.lock().await;
        let grace = self.pace.spacing_us / 4;
        spend_or_take(
            &self.pace.name,
            &mut *held,
            |held| {
                let now_us = clock.now_ms() * 1000;
                while held.front().is_some_and(|t| t + grace < now_us) {
                    held.pop_front();
                }
                let t = held.pop_front()?;
                Some(Duration::from_micros(t.saturating_sub(now_us)))
            },
            || ledger.take_slots(&self.pace, self.block, clock.now_ms()),
            |held, s| {
                held.extend(s.times());
                (s.granted == 0).then(|| Duration::from_millis(s.wait_ms))
            },
        )
        .await
    }
}

/// A replica's share of a fleet-wide cap (`lambda.max_concurrency`, the function's reserved
/// concurrency): it starts an attempt only under the slots it holds in the ledger's item of
/// the cap, asks for more when it has none free (a block at a time), and renews its holding
/// every second with what it runs plus a block for what waits, giving the rest back. A
/// holding it could not renew before its TTL counts as none.
#[derive(Debug)]
pub struct FleetCap {
    cap: fleet_shared::ledger::Cap,
    replica: String,
    block: u32,
    state: Mutex<CapState>,
    /// One ledger call at a time.
    asking: tokio::sync::Mutex<()>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct CapState {
    held: u32,
    /// Until when the holding stands (ms), as of the last answer.
    until_ms: u64,
    running: u32,
    waiting: u32,
}

/// How long a holding lasts unrenewed (renewals come every second).
const CAP_TTL_MS: u64 = 10_000;
const CAP_RENEW: Duration = Duration::from_secs(1);

impl FleetCap {
    pub fn new(name: &str, limit: u32, replica: &str) -> Arc<Self> {
        Arc::new(Self {
            cap: fleet_shared::ledger::Cap {
                name: name.to_owned(),
                limit,
                ttl_ms: CAP_TTL_MS,
            },
            replica: replica.to_owned(),
            block: (limit / 20).clamp(1, 50),
            state: Mutex::new(CapState::default()),
            asking: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots this replica holds (as of its last answer from the ledger).
    pub fn held(&self) -> u32 {
        self.lock().held
    }

    /// Asks the ledger to hold what runs plus `extra`, at most the cap.
    async fn ask<L: Ledger>(
        &self,
        ledger: &L,
        clock: Clock,
        extra: u32,
    ) -> Result<(), LedgerError> {
        let _one = self.asking.lock().await;
        let want = {
            let s = self.lock();
            (s.running + extra).min(self.cap.limit)
        };
        let now = clock.now_ms();
        let mine = ledger.allot(&self.cap, &self.replica, want, now).await?;
        let mut s = self.lock();
        s.held = mine;
        s.until_ms = now + self.cap.ttl_ms;
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Waits for a slot (see [`spend_or_take`] for ledger errors: the same).
    pub async fn acquire<L: Ledger>(
        self: &Arc<Self>,
        ledger: &L,
        clock: Clock,
    ) -> Result<CapPermit, LedgerError> {
        let mut pause = Duration::from_millis(250);
        loop {
            let now = clock.now_ms();
            {
                let mut s = self.lock();
                if s.running < s.held && now < s.until_ms {
                    s.running += 1;
                    return Ok(CapPermit { cap: self.clone() });
                }
                s.waiting += 1;
            }
            let extra = self.lock().waiting.min(self.block).max(1);
            let asked = self.ask(ledger, clock, extra).await;
            self.lock().waiting -= 1;
            match asked {
                Ok(()) => {
                    // Full: wait for a slot of ours to end, or ask again shortly.
                    let changed = self.changed.notified();
                    let room = {
                        let s = self.lock();
                        s.running < s.held
                    };
                    if !room {
                        let _ = tokio::time::timeout(Duration::from_millis(250), changed).await;
                    }
                }
                Err(e) if e.class() == ErrorClass::Permanent => return Err(e),
                Err(e) => {
                    warn!(cap = %self.cap.name, error = %e, "could not take slots of the fleet-wide cap; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Renews the holding every second until `stop`, then gives back what does not run
    /// (all of it once nothing runs).
    pub async fn renew_loop<L: Ledger>(
        self: Arc<Self>,
        ledger: Arc<L>,
        clock: Clock,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CAP_RENEW) => {}
                _ = stop.cancelled() => break,
            }
            let extra = self.lock().waiting.min(self.block);
            if let Err(e) = self.ask(ledger.as_ref(), clock, extra).await {
                warn!(cap = %self.cap.name, error = %e, "could not renew this replica's slots of the fleet-wide cap");
            }
        }
        if let Err(e) = self.ask(ledger.as_ref(), clock, 0).await {
            warn!(cap = %self.cap.name, error = %e, "could not give back the fleet-wide cap's slots; they expire");
        }
    }
}

/// A slot of a [`FleetCap`], given back when dropped.
#[derive(Debug)]
pub struct CapPermit {
    cap: Arc<FleetCap>,
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        let mut s = self.cap.lock();
        s.running = s.running.saturating_sub(1);
        drop(s);
        self.cap.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_once_per_burst_and_grows_back_by_windows() {
        let limit = AdaptiveLimit::new("lambda", 2, 16);
        // Sixteen calls in flight, all throttled: one halving, not sixteen.
        let permits: Vec<_> = futures::future::join_all((0..16).map(|_| limit.acquire())).await;
        assert_eq!(limit.available(), 0);
        for p in permits {
            p.throttled();
        }
        assert_eq!(limit.limit(), 8);
        // A throttle under the new limit halves again, down to the minimum and no further.
        limit.acquire().await.throttled();
        assert_eq!(limit.limit(), 4);
        limit.acquire().await.throttled();
        limit.acquire().await.throttled();
        assert_eq!(limit.limit(), 2);
        // Recovery: doubled per window of `limit` successes, up to the last good value
        // (below 4, the lowest limit throttled: 3), then one step per window.
        for _ in 0..2 {
            limit.acquire().await.success();
        }
        assert_eq!(limit.limit(), 3);
        for _ in 0..3 {
            limit.acquire().await.success();
        }
        assert_eq!(limit.limit(), 4);
        for _ in 0..4 {
            limit.acquire().await.success();
        }
        assert_eq!(limit.limit(), 5);
        // A dropped permit frees its room and changes nothing else.
        drop(limit.acquire().await);
        assert_eq!((limit.limit(), limit.in_flight()), (5, 0));
    }

    #[tokio::test]
    async fn recovers_by_doubling_to_the_last_good_value() {
        let limit = AdaptiveLimit::new("lambda", 1, 1000);
        // It ran at 1000 without trouble for a window, then 1000 in flight were throttled.
        for _ in 0..1000 {
            limit.acquire().await.success();
        }
        let permits: Vec<_> = futures::future::join_all((0..1000).map(|_| limit.acquire())).await;
        for p in permits {
            p.throttled();
        }
        assert_eq!(limit.limit(), 500);
        // Throttled again at 500: the last good value is now 499.
        limit.acquire().await.throttled();
        assert_eq!(limit.limit(), 250);
        let mut windows = Vec::new();
        for _ in 0..4 {
            let n = limit.limit();
            let permits: Vec<_> = futures::future::join_all((0..n).map(|_| limit.acquire())).await;
            for p in permits {
                p.success();
            }
            windows.push(limit.limit());
        }
        // 250 → 499 in one window (not 249 windows of +1), then probing by one.
        assert_eq!(windows, vec![499, 500, 501, 502]);
    }

    /// A throttle the job reported lowers its job type's limit and leaves the target's; a
    /// throttle of the target the other way round; a success grows both.
    #[tokio::test]
    async fn an_attempts_end_signals_the_limit_that_throttled() {
        use crate::dispatch::{Outcome, TaskEnd};
        let (lambda, job_type) = (
            AdaptiveLimit::new("lambda", 1, 8),
            AdaptiveLimit::for_job_type("t", 1, 8),
        );
        let permits = || async {
            Permits {
                target: lambda.acquire().await,
                job_type: job_type.acquire().await,
                fleet: None,
            }
        };
        let throttled = |error_type: Option<&str>, exit_code| TaskEnd {
            stopped_reason: error_type.map(str::to_owned),
            exit_code,
            ..TaskEnd::of(Outcome::Failed {
                class: ErrorClass::Throttled,
                message: "slow down".into(),
            })
        };
        // Four running when the first throttle comes (under Lambda: the kind in errorType):
        // the job type's limit halves what ran; the Lambda limit stays.
        let mut running = futures::future::join_all((0..4).map(|_| permits())).await;
        let reported = Some("Fleet.Throttled[retry_after_ms=1000].Partner");
        running.pop().unwrap().ended(&throttled(reported, None));
        assert_eq!((lambda.limit(), job_type.limit()), (8, 2));
        drop(running);
        // In a container: exit code 75.
        permits().await.ended(&throttled(None, Some(75)));
        assert_eq!((lambda.limit(), job_type.limit()), (8, 1));
        // Lambda's own 429: no errorType, no exit code.
        permits().await.ended(&throttled(None, None));
        assert_eq!((lambda.limit(), job_type.limit()), (4, 1));
        // A job failure of another kind moves neither.
        permits().await.ended(&TaskEnd::of(Outcome::Failed {
            class: ErrorClass::JobFailure,
            message: "no".into(),
        }));
        assert_eq!((lambda.limit(), job_type.limit()), (4, 1));
        for _ in 0..4 {
            permits()
                .await
                .ended(&TaskEnd::of(Outcome::Succeeded { result: vec![] }));
        }
        assert!(
            lambda.limit() > 4 && job_type.limit() > 1,
            "successes raise both"
        );
    }

    /// Two replicas share a cap of 4 through the ledger: together they never hold more; a
    /// slot one gives back (at its next renewal) goes to the other; a replica that stops
    /// renewing frees its slots when its holding expires.
    #[tokio::test(start_paused = true)]
    async fn a_fleet_wide_cap_is_shared_through_the_ledger() {
        let ledger = Arc::new(fleet_shared::ledger::memory::MemoryLedger::new());
        let clock = Clock::tokio();
        let (a, b) = (FleetCap::new("l", 4, "a"), FleetCap::new("l", 4, "b"));
        let mut held_by_a = Vec::new();
        for _ in 0..3 {
            held_by_a.push(a.acquire(ledger.as_ref(), clock).await.unwrap());
        }
        let b1 = b.acquire(ledger.as_ref(), clock).await.unwrap();
        assert_eq!(a.held() + b.held(), 4);
        // A fifth waits: nothing is free.
        let waiting = tokio::spawn({
            let (b, ledger) = (b.clone(), ledger.clone());
            async move { b.acquire(ledger.as_ref(), clock).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished());
        // "a" ends one and renews: "b" gets it.
        let stop = tokio_util::sync::CancellationToken::new();
        let renewing = tokio::spawn(a.clone().renew_loop(ledger.clone(), clock, stop.clone()));
        drop(held_by_a.pop());
        let b2 = waiting.await.unwrap();
        assert_eq!((a.held(), b.held()), (2, 2));
        // "a" stops renewing (it died): after the TTL its two slots are "b"'s to take.
        stop.cancel();
        renewing.await.unwrap();
        std::mem::forget(held_by_a);
        tokio::time::sleep(Duration::from_millis(CAP_TTL_MS + 1)).await;
        let more: Vec<_> =
            futures::future::join_all((0..2).map(|_| b.acquire(ledger.as_ref(), clock))).await;
        assert!(more.iter().all(Result::is_ok));
        assert_eq!(b.held(), 4);
        drop((b1, b2, more));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_room() {
        let limit = AdaptiveLimit::new("lambda", 1, 1);
        let first = limit.acquire().await;
        let l2 = limit.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await.success() });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        first.success();
        waiter.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_keeps_to_its_rate() {
        let limiter = RateLimiter::new(20.0);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire().await;
        }
        // A burst of 20, then 80 more at 20 a second: 4 s of (virtual) time.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(3990) && took < Duration::from_millis(4100),
            "{took:?}"
        );
    }
}
