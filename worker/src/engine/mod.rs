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
use fleet_shared::dead_letter::FailureRecord;
use fleet_shared::ledger::{
    AttemptRecord, Claim, ClaimRequest, Finish, Lease, Ledger, LedgerError,
};
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
use crate::limits::{AdaptiveLimit, LimitPermit};
use crate::retry::RetryPolicy;

/// Longest error text kept in the ledger or a dead-letter record.
const MAX_ERROR_CHARS: usize = 4000;

/// SQS counts a message's visibility from when it was received, up to 12 hours; a hidden
/// retry stays this far inside that limit.
const VISIBILITY_MARGIN: Duration = Duration::from_secs(60);

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
    pub throttled: AtomicU64,
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
    /// The Lambda in-flight limit, adapted to throttling.
    lambda_limit: Arc<AdaptiveLimit>,
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
    Done(Outcome),
    LeaseLost,
    Stopped,
}

/// One claimed attempt and the message it came from.
struct Attempt<'a> {
    msg: &'a JobMessage,
    lease: Lease,
    m: &'a Received,
    received_at: Instant,
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
            replica,
            clock: Clock::System,
            stats: Stats::default(),
            lambda_limit: {
                let (min, max) = config.lambda_concurrency();
                AdaptiveLimit::new("lambda", min, max)
            },
            config,
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

    /// The Lambda in-flight limit as it stands.
    pub fn lambda_limit(&self) -> usize {
        self.lambda_limit.limit()
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
            // Only what can start now: free slots, and room under the adaptive Lambda limit.
            tokio::select! {
                () = self.lambda_limit.wait_available() => {}
                _ = shutdown.cancelled() => return,
            }
            let room = self.lambda_limit.available().clamp(1, MAX_BATCH);
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
            // Room under the Lambda limit before the claim, so a claimed job never waits.
            let permit = self.lambda_limit.acquire().await;
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
                    let attempt = Attempt { msg: &msg, lease, m: &m, received_at };
                    self.run_attempt(attempt, permit, acker, hard_stop).await;
                }
                Ok(Claim::NotYet { state, until_ms }) => {
                    Stats::bump(&self.stats.deferred);
                    let hide = visibility_secs(until_ms.saturating_sub(now));
                    debug!(%state, hide_secs = hide.as_secs(), "not claimable yet; deferring the message");
                    self.set_visibility(&m.receipt, hide).await;
                }
                Ok(Claim::Finished { state, last_error, history }) => {
                    Stats::bump(&self.stats.obsolete);
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
                    Stats::bump(&self.stats.ledger_errors);
                    warn!(error = %e, "claim failed; the message will come back");
                    self.set_visibility(&m.receipt, Duration::from_secs(5)).await;
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A message refused before any attempt: dead-lettered with the reason, then deleted.
    async fn refuse(&self, m: &Received, msg: Option<&JobMessage>, reason: &str, acker: &Acker) {
        let record = self.failure_record(msg, ErrorClass::Permanent.as_str(), reason, &[]);
        if self.dead_letter(&m.body, &record).await {
            acker.delete(m.receipt.clone());
        }
    }

    async fn run_attempt(
        &self,
        a: Attempt<'_>,
        permit: LimitPermit,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        let event = JobEvent {
            request_id: a.msg.request_id.clone(),
            job_id: a.msg.job_id.clone(),
            job_type: a.msg.job_type.clone(),
            attempt: a.lease.attempt,
            fence: a.lease.fence,
            payload: a.msg.payload.clone(),
        };
        debug!(
            attempt = a.lease.attempt,
            fence = a.lease.fence,
            "dispatching"
        );
        let end = {
            let dispatch = self.dispatcher.dispatch(&event);
            let keep_alive = self.keep_alive(&a.lease, &a.m.receipt);
            tokio::select! {
                outcome = dispatch => AttemptEnd::Done(outcome),
                () = keep_alive => AttemptEnd::LeaseLost,
                _ = hard_stop.cancelled() => AttemptEnd::Stopped,
            }
        };
        match end {
            AttemptEnd::Done(outcome) => {
                match &outcome {
                    Outcome::Succeeded { .. } => permit.success(),
                    Outcome::Failed {
                        class: ErrorClass::Throttled,
                        ..
                    } => permit.throttled(),
                    Outcome::Failed { .. } => drop(permit),
                }
                self.record(&a, outcome, acker).await
            }
            AttemptEnd::LeaseLost => {
                Stats::bump(&self.stats.leases_lost);
                warn!(
                    fence = a.lease.fence,
                    "lease lost while the job ran; its result will not be recorded by this replica"
                );
            }
            AttemptEnd::Stopped => {
                match self.ledger.release(&a.lease).await {
                    Ok(()) => {
                        Stats::bump(&self.stats.released);
                        info!(attempt = a.lease.attempt, "released unfinished job");
                    }
                    Err(e) => warn!(error = %e, "release failed; the lease will expire instead"),
                }
                self.set_visibility(&a.m.receipt, Duration::ZERO).await;
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

    /// Writes an attempt's outcome, then acknowledges, hides or dead-letters its message.
    ///
    /// - success: SUCCEEDED, message deleted;
    /// - throttled: RETRYING without spending the attempt, after a delay that grows with the
    ///   message's receive count;
    /// - permanent, or the last attempt: FAILED, then the message goes to the dead-letter
    ///   queue with its failure record, then it is deleted;
    /// - otherwise: RETRYING after the policy's delay; the message is hidden as long.
    async fn record(&self, a: &Attempt<'_>, outcome: Outcome, acker: &Acker) {
        let max_attempts = self
            .config
            .max_attempts_for(&a.msg.job_type, a.lease.max_attempts.or(a.msg.max_attempts));
        let ended = self.clock.now_ms();
        let mut rec = AttemptRecord {
            attempt: a.lease.attempt,
            fence: a.lease.fence,
            started_ms: a.lease.started_ms,
            ended_ms: ended,
            target: self.dispatcher.target().to_owned(),
            outcome: "succeeded".to_owned(),
            retry_at_ms: None,
        };
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
                    debug!(
                        duration_ms = ended.saturating_sub(a.lease.started_ms),
                        "succeeded"
                    );
                    acker.delete(a.m.receipt.clone());
                }
                return;
            }
            Outcome::Failed { class, message } => (class, clip(&message)),
        };
        rec.outcome = class.as_str().to_owned();
        let error = format!("{class}: {message}");
        let retry = match class {
            ErrorClass::Throttled => {
                Stats::bump(&self.stats.throttled);
                Some((self.retry.delay(a.m.receive_count, &mut rand::rng()), true))
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
                    info!(attempt = a.lease.attempt, max_attempts, %class, error = %message, refund, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
                    // SQS keeps a message hidden at most 12 hours from its receipt; a longer
                    // delay lets it come back early and the claim hides it again.
                    let left = Duration::from_secs(SQS_MAX_VISIBILITY_SECS)
                        .saturating_sub(a.received_at.elapsed() + VISIBILITY_MARGIN);
                    let hide = visibility_secs(delay.min(left).as_millis() as u64);
                    self.set_visibility(&a.m.receipt, hide).await;
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
                    warn!(attempt = a.lease.attempt, max_attempts, %class, error = %message, "job failed");
                    let record =
                        self.failure_record(Some(a.msg), class.as_str(), &message, &history);
                    if self.dead_letter(&a.m.body, &record).await {
                        acker.delete(a.m.receipt.clone());
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
                Ok(history) => return Some(history),
                Err(LedgerError::Stale { .. }) => {
                    Stats::bump(&self.stats.leases_lost);
                    warn!(fence = lease.fence, state = %finish.state(), "ledger refused the outcome: the lease was lost");
                    return None;
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
        match self.dead_letters.send(body, &record.attributes()).await {
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
