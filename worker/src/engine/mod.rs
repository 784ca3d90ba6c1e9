//! The coordinator engine: one worker replica's loop. Generic over the queue, the
//! dead-letter queue, the ledger and the dispatcher, so the same code runs against AWS and
//! against in-memory parts in tests and benchmarks.
//!
//! For each message: parse it (a malformed one goes to the dead-letter queue with its
//! reason), claim the job in the ledger, run the attempt while a heartbeat renews the lease
//! and the message's visibility, write the outcome to the ledger (conditional on owner and
//! fence), and only then acknowledge the message. Backpressure: receive loops ask for no
//! more messages than there are free slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use fleet_shared::config::{Config, SQS_MAX_VISIBILITY_SECS};
use fleet_shared::ledger::{Claim, ClaimRequest, Finish, Lease, Ledger, LedgerError};
use fleet_shared::message::{JobEvent, JobMessage, parse_message};
use fleet_shared::queue::{DeadLetterQueue, JobQueue, MAX_BATCH, Received};
use fleet_shared::state::JobState;
use fleet_shared::time::Clock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::acks::Acker;
use crate::classify::ErrorClass;
use crate::dispatch::{Dispatcher, Outcome};
use crate::retry::RetryPolicy;

/// Message attributes of a dead-lettered message.
pub mod dead_letter_attr {
    pub const ERROR_CLASS: &str = "fleet-error-class";
    pub const ERROR: &str = "fleet-error";
    pub const JOB_ID: &str = "fleet-job-id";
    pub const ATTEMPTS: &str = "fleet-attempts";
    pub const REPLICA: &str = "fleet-replica";
}

/// Longest error text kept in the ledger or a dead-letter record.
const MAX_ERROR_CHARS: usize = 4000;

/// The parts an engine runs on.
pub struct Parts<Q, D, L, X> {
    pub queue: Arc<Q>,
    pub dead_letters: Arc<D>,
    pub ledger: Arc<L>,
    pub dispatcher: Arc<X>,
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
        }
    }
}

pub struct Engine<Q, D, L, X> {
    queue: Arc<Q>,
    dead_letters: Arc<D>,
    ledger: Arc<L>,
    dispatcher: Arc<X>,
    config: Arc<Config>,
    replica: String,
    retry: RetryPolicy,
    clock: Clock,
    stats: Stats,
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

enum AttemptEnd {
    Done(Outcome, Duration),
    LeaseLost,
    Stopped,
}

impl<Q, D, L, X> Engine<Q, D, L, X>
where
    Q: JobQueue,
    D: DeadLetterQueue,
    L: Ledger,
    X: Dispatcher,
{
    pub fn new(parts: Parts<Q, D, L, X>, config: Arc<Config>, replica: String) -> Self {
        Self {
            queue: parts.queue,
            dead_letters: parts.dead_letters,
            ledger: parts.ledger,
            dispatcher: parts.dispatcher,
            retry: RetryPolicy::from_config(&config),
            config,
            replica,
            clock: Clock::System,
            stats: Stats::default(),
        }
    }

    /// Reads time from `clock` instead of the system clock (tests use [`Clock::tokio`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn stats(&self) -> Report {
        self.stats.report()
    }

    /// Runs until `shutdown` is cancelled, then drains: no new receives, in-flight jobs get
    /// `worker.drain_secs` to finish, and what is still running then is released (lease
    /// given back, message visible at once). `hard_stop` cuts the drain short.
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
        let report = self.stats();
        info!(?report, "worker stopped");
        report
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
            let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
            while permits.len() < MAX_BATCH {
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
                    for m in messages {
                        let Some(permit) = permits.pop() else { break };
                        Stats::bump(&self.stats.received);
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

    /// Everything that happens to one received message.
    async fn handle(&self, m: Received, acker: &Acker, hard_stop: &CancellationToken) {
        let (msg, job) = match parse_message(&m.body, self.config.limits.max_message_bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                Stats::bump(&self.stats.malformed);
                warn!(message_id = %m.message_id, error = %e, "malformed message; dead-lettering it");
                if self
                    .dead_letter(&m.body, None, ErrorClass::Permanent, &e.to_string(), 0)
                    .await
                {
                    acker.delete(m.receipt);
                }
                return;
            }
        };
        let span = info_span!("job", request_id = %msg.request_id, job_id = %msg.job_id);
        async {
            let payload_json = msg.payload.to_string();
            let now = self.clock.now_ms();
            let claim = self
                .ledger
                .claim(&ClaimRequest {
                    job: &job,
                    job_type: &msg.job_type,
                    payload_json: &payload_json,
                    max_attempts: msg.max_attempts,
                    owner: &self.replica,
                    now_ms: now,
                    lease_ms: self.config.worker.lease_secs * 1000,
                    skew_ms: self.config.worker.clock_skew_secs * 1000,
                    enqueued_at_ms: msg.enqueued_at_ms,
                })
                .await;
            match claim {
                Ok(Claim::Claimed(lease)) => {
                    Stats::bump(&self.stats.claimed);
                    self.run_attempt(&msg, lease, &m, acker, hard_stop).await;
                }
                Ok(Claim::NotYet { state, until_ms }) => {
                    Stats::bump(&self.stats.deferred);
                    let hide = visibility_secs(until_ms.saturating_sub(now));
                    debug!(%state, hide_secs = hide.as_secs(), "not claimable yet; deferring the message");
                    self.set_visibility(&m.receipt, hide).await;
                }
                Ok(Claim::Finished { state, last_error }) => {
                    Stats::bump(&self.stats.obsolete);
                    debug!(%state, "job already finished; deleting the message");
                    // A FAILED job's dead-letter record may have been lost to a crash between
                    // the ledger write and the send: send it again (readers de-duplicate by
                    // job id).
                    if state == JobState::Failed {
                        let reason = last_error.unwrap_or_else(|| "failed".into());
                        if !self
                            .dead_letter(&m.body, Some(&msg.job_id), ErrorClass::Permanent, &reason, 0)
                            .await
                        {
                            return;
                        }
                    }
                    acker.delete(m.receipt);
                }
                Err(e) => {
                    Stats::bump(&self.stats.ledger_errors);
                    warn!(error = %e, "claim failed; the message will come back");
                    self.set_visibility(&m.receipt, Duration::from_secs(5)).await;
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn run_attempt(
        &self,
        msg: &JobMessage,
        lease: Lease,
        m: &Received,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        let max_attempts = self
            .config
            .max_attempts_for(&msg.job_type, lease.max_attempts.or(msg.max_attempts));
        let event = JobEvent {
            request_id: msg.request_id.clone(),
            job_id: msg.job_id.clone(),
            job_type: msg.job_type.clone(),
            attempt: lease.attempt,
            fence: lease.fence,
            payload: msg.payload.clone(),
        };
        debug!(attempt = lease.attempt, fence = lease.fence, "dispatching");
        let end = {
            let started = Instant::now();
            let dispatch = self.dispatcher.dispatch(&event);
            let keep_alive = self.keep_alive(&lease, &m.receipt);
            tokio::select! {
                outcome = dispatch => AttemptEnd::Done(outcome, started.elapsed()),
                () = keep_alive => AttemptEnd::LeaseLost,
                _ = hard_stop.cancelled() => AttemptEnd::Stopped,
            }
        };
        match end {
            AttemptEnd::Done(outcome, took) => {
                self.record(msg, &lease, max_attempts, outcome, took, m, acker)
                    .await
            }
            AttemptEnd::LeaseLost => {
                Stats::bump(&self.stats.leases_lost);
                warn!(
                    fence = lease.fence,
                    "lease lost while the job ran; its result will not be recorded by this replica"
                );
            }
            AttemptEnd::Stopped => {
                match self.ledger.release(&lease).await {
                    Ok(()) => {
                        Stats::bump(&self.stats.released);
                        info!(attempt = lease.attempt, "released unfinished job");
                    }
                    Err(e) => warn!(error = %e, "release failed; the lease will expire instead"),
                }
                self.set_visibility(&m.receipt, Duration::ZERO).await;
            }
        }
    }

    /// Renews the lease and the message's visibility every heartbeat period; returns only
    /// when the lease is lost (refused by the ledger, or not renewed before it expired).
    async fn keep_alive(&self, lease: &Lease, receipt: &str) {
        let w = &self.config.worker;
        let mut until = lease.until_ms;
        loop {
            tokio::time::sleep(w.heartbeat()).await;
            let next = self.clock.now_ms() + w.lease_secs * 1000;
            match self.ledger.heartbeat(lease, next).await {
                Ok(()) => until = next,
                Err(LedgerError::Stale { .. }) => return,
                Err(e) => {
                    Stats::bump(&self.stats.ledger_errors);
                    warn!(error = %e, "heartbeat failed; will try again");
                }
            }
            if let Err(e) = self.queue.set_visibility(receipt, w.lease()).await {
                warn!(error = %e, "could not extend the message's visibility");
            }
            if self.clock.now_ms() >= until {
                return;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        msg: &JobMessage,
        lease: &Lease,
        max_attempts: u32,
        outcome: Outcome,
        took: Duration,
        m: &Received,
        acker: &Acker,
    ) {
        let duration_ms = took.as_millis() as u64;
        match outcome {
            Outcome::Succeeded { result } => {
                let result = (result.len() <= self.config.limits.max_result_bytes)
                    .then(|| String::from_utf8_lossy(&result).into_owned());
                let finish = Finish::Succeeded {
                    result,
                    duration_ms,
                };
                if self.write_finish(lease, &finish).await {
                    Stats::bump(&self.stats.succeeded);
                    debug!(duration_ms, "succeeded");
                    acker.delete(m.receipt.clone());
                }
            }
            Outcome::Failed { class, message } => {
                let message = clip(&message);
                if class.is_retryable() && lease.attempt < max_attempts {
                    let delay = self.retry.delay(lease.attempt);
                    let finish = Finish::Retry {
                        error: format!("{class}: {message}"),
                        retry_at_ms: self.clock.now_ms() + delay.as_millis() as u64,
                        duration_ms,
                    };
                    if self.write_finish(lease, &finish).await {
                        Stats::bump(&self.stats.retried);
                        info!(attempt = lease.attempt, max_attempts, %class, error = %message, retry_in_secs = delay.as_secs(), "attempt failed; will retry");
                        self.set_visibility(&m.receipt, visibility_secs(delay.as_millis() as u64))
                            .await;
                    }
                } else {
                    let finish = Finish::Failed {
                        error: format!("{class}: {message}"),
                        duration_ms,
                    };
                    // Ledger first: if the dead-letter send is lost to a crash, the message
                    // comes back, the claim finds the job FAILED and sends it then.
                    if self.write_finish(lease, &finish).await {
                        Stats::bump(&self.stats.failed);
                        warn!(attempt = lease.attempt, max_attempts, %class, error = %message, "job failed");
                        if self
                            .dead_letter(&m.body, Some(&msg.job_id), class, &message, lease.attempt)
                            .await
                        {
                            acker.delete(m.receipt.clone());
                        }
                    }
                }
            }
        }
    }

    /// Writes an outcome, retrying transient ledger errors. False when the write did not
    /// happen (lease lost, or the ledger stayed unreachable: the message will come back).
    async fn write_finish(&self, lease: &Lease, finish: &Finish) -> bool {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(5)
            .with_jitter()
            .build();
        loop {
            match self.ledger.finish(lease, finish, self.clock.now_ms()).await {
                Ok(()) => return true,
                Err(LedgerError::Stale { .. }) => {
                    Stats::bump(&self.stats.leases_lost);
                    warn!(fence = lease.fence, state = %finish.state(), "ledger refused the outcome: the lease was lost");
                    return false;
                }
                Err(e) => {
                    Stats::bump(&self.stats.ledger_errors);
                    match delays.next() {
                        Some(d) => {
                            warn!(error = %e, "outcome write failed; retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            warn!(error = %e, "outcome write failed; leaving the message to come back");
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// Sends a message to the dead-letter queue with the reason. False if it could not be
    /// sent (then the message must not be deleted).
    async fn dead_letter(
        &self,
        body: &str,
        job_id: Option<&str>,
        class: ErrorClass,
        reason: &str,
        attempts: u32,
    ) -> bool {
        let mut attrs = vec![
            (dead_letter_attr::ERROR_CLASS, class.as_str().to_owned()),
            (dead_letter_attr::ERROR, clip(reason)),
            (dead_letter_attr::ATTEMPTS, attempts.to_string()),
            (dead_letter_attr::REPLICA, self.replica.clone()),
        ];
        if let Some(id) = job_id {
            attrs.push((dead_letter_attr::JOB_ID, id.to_owned()));
        }
        match self.dead_letters.send(body, &attrs).await {
            Ok(()) => {
                Stats::bump(&self.stats.dead_lettered);
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
