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
//! - [`FleetCap`]: this replica's holding of a cap shared by every replica through the
//!   ledger (`lambda.max_concurrency`, the function's reserved concurrency).
//! - [`Permits`]: what an attempt holds, and how its end signals each limit.
//!
//! The shared ones are in `fleet.rs`.
//!
//! A target's gauges (`fleet_in_flight`, `fleet_concurrency_limit`) come from its
//! [`AdaptiveLimit`], so in-flight falls back to 0 whenever every permit is gone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::error::ErrorClass;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

mod fleet;

pub use fleet::{CapPermit, FleetCap, SharedRate, StartPace};

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
    /// A job type's (`fleet_job_type_concurrency_limit{job_type}`, for the job types the
    /// configuration lists: the names of others come from messages, so no label is made of
    /// them).
    JobType(String, bool),
}

impl std::fmt::Display for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gauge::Target(t) => f.write_str(t),
            Gauge::JobType(t, _) => write!(f, "job type {t}"),
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
    /// `listed`: the configuration lists the job type, so its gauge is published.
    pub fn for_job_type(job_type: &str, listed: bool, min: usize, max: usize) -> Arc<Self> {
        Self::labelled(Gauge::JobType(job_type.to_owned(), listed), min, max)
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
            Gauge::JobType(t, true) => {
                metrics::gauge!(fm::JOB_TYPE_CONCURRENCY_LIMIT, "job_type" => t.clone())
                    .set(s.limit as f64);
            }
            Gauge::JobType(_, false) => {}
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
                    Gauge::JobType(..) => s.limit.min(s.in_flight + 1),
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
    /// A slot of the job type's fleet-wide cap (`job_types.<t>.max_concurrency`).
    pub type_cap: Option<CapPermit>,
    /// A slot of the tenant's fleet-wide cap (`tenants.<name>.max_concurrency`).
    pub tenant_cap: Option<CapPermit>,
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
            AdaptiveLimit::for_job_type("t", true, 1, 8),
        );
        let permits = || async {
            Permits {
                target: lambda.acquire().await,
                job_type: job_type.acquire().await,
                fleet: None,
                type_cap: None,
                tenant_cap: None,
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
