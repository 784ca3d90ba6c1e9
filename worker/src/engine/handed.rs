//! Attempts handed to Lambda (asynchronous invocation, `lambda.invocation = "event"`).
//!
//! Once Lambda accepts the event (202), the attempt's lease is extended to cover the
//! maximum event age plus the function timeout, the message is deleted, and the replica
//! holds nothing for it but its permits (of the Lambda limit, a cap on jobs handed to Lambda,
//! and of its job type's).
//! Every replica consumes the outcomes queue: a record names its attempt by the fence the
//! event carries; the outcome is committed under the lease the ledger has at that fence, so
//! a stale record (the job was claimed again) or a duplicate (already recorded) finds none
//! and changes nothing. A record that never comes leaves a lease that expires: the sweeper
//! sends the job again like any attempt whose replica died.
//!
//! A permit is given back when this replica records the outcome, or when a check of the
//! ledger (one batched read for up to 100 attempts, at growing intervals per attempt) finds
//! the attempt ended (another replica recorded it), or at the lease's end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use fleet_shared::ledger::recorder::Live;
use fleet_shared::ledger::{ItemKey, Lease, Ledger};
use fleet_shared::message::{JobMessage, RouteReason, RouteRule, Target};
use fleet_shared::metrics as fm;
use fleet_shared::queue::{JobQueue, MAX_BATCH, Received};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::attempt::{Attempt, TaskInfo};
use super::events::Noted;
use super::{Backends, Engine};
use crate::acks::Acker;
use crate::dispatch::{Dispatcher, record};
use crate::limits::Permits;
use crate::routing::Route;

/// The first check of an attempt handed off is this long after the hand-off; each later
/// one waits twice as long, up to [`CHECK_MAX`].
const CHECK_FIRST: Duration = Duration::from_secs(1);
const CHECK_MAX: Duration = Duration::from_secs(30);
/// After a receive of fewer records than a batch, the next waits this long.
const RECORDS_LINGER: Duration = Duration::from_millis(500);

/// One attempt handed to Lambda by this replica.
pub(super) struct HandedJob {
    key: ItemKey,
    fence: u64,
    permits: Permits,
    check_at_ms: u64,
    step: Duration,
    until_ms: u64,
    /// Counted in the replica's live report (request, after a retry) until given back.
    live: Option<(String, bool)>,
}

impl HandedJob {
    pub fn new(a: &Attempt<'_>, permits: Permits, live: bool, now_ms: u64, until_ms: u64) -> Self {
        HandedJob {
            key: a.lease.key.clone(),
            fence: a.lease.fence,
            permits,
            check_at_ms: now_ms + CHECK_FIRST.as_millis() as u64,
            step: CHECK_FIRST,
            until_ms,
            live: live.then(|| (a.msg.request_id.clone(), a.lease.after_retry)),
        }
    }
}

/// This replica's attempts handed to Lambda, by job item and fence.
pub(super) struct Handed {
    jobs: std::sync::Mutex<HashMap<(ItemKey, u64), HandedJob>>,
    live: Arc<Live>,
    /// Attempts whose record this replica is recording now: a duplicate delivered
    /// meanwhile is dropped (the one in hand comes back by itself if it is not recorded).
    recording: std::sync::Mutex<std::collections::HashSet<(ItemKey, u64)>>,
}

impl Handed {
    pub fn new(live: Arc<Live>) -> Self {
        Handed {
            jobs: Default::default(),
            live,
            recording: Default::default(),
        }
    }

    /// Marks an attempt's record as being recorded; false when one already is.
    fn start_recording(&self, attempt: &(ItemKey, u64)) -> bool {
        self.recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt.clone())
    }

    fn end_recording(&self, attempt: &(ItemKey, u64)) {
        self.recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ItemKey, u64), HandedJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, j: HandedJob) {
        metrics::gauge!(fm::HANDED_TO_LAMBDA).increment(1.0);
        self.lock().insert((j.key.clone(), j.fence), j);
    }

    fn release(&self, j: HandedJob) -> Permits {
        metrics::gauge!(fm::HANDED_TO_LAMBDA).decrement(1.0);
        if let Some((request, after_retry)) = &j.live {
            self.live.ended(request, *after_retry);
        }
        j.permits
    }

    /// Takes an attempt's permit out, if this replica handed it off.
    pub fn take(&self, key: &ItemKey, fence: u64) -> Option<Permits> {
        let j = self.lock().remove(&(key.clone(), fence))?;
        Some(self.release(j))
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Attempts due for a check at `now_ms` (those past their lease are given back: the
    /// sweeper takes them over).
    fn due(&self, now_ms: u64) -> Vec<(ItemKey, u64)> {
        let mut jobs = self.lock();
        let over: Vec<(ItemKey, u64)> = jobs
            .iter()
            .filter(|(_, j)| j.until_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in over {
            if let Some(j) = jobs.remove(&k) {
                drop(self.release(j));
            }
        }
        jobs.iter()
            .filter(|(_, j)| j.check_at_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The next check of an attempt still running.
    fn later(&self, attempt: &(ItemKey, u64), now_ms: u64) {
        if let Some(j) = self.lock().get_mut(attempt) {
            j.step = (j.step * 2).min(CHECK_MAX);
            j.check_at_ms = now_ms + j.step.as_millis() as u64;
        }
    }
}

impl<B: Backends> Engine<B> {
    /// Whether Lambda attempts are handed off (and records read from the outcomes queue).
    pub(super) fn hands_off(&self) -> bool {
        self.outcomes.is_some() && self.dispatcher.hands_off()
    }

    /// Receives invocation records until shutdown; each is recorded in its own task, as many
    /// at once as the replica has slots (a burst of records waits in the queue, not here).
    pub(super) async fn outcome_loop(
        self: Arc<Self>,
        tracker: TaskTracker,
        acker: Acker,
        shutdown: CancellationToken,
    ) {
        let Some(outcomes) = self.outcomes.clone() else {
            return;
        };
        let (deleter, deletes) = Acker::spawn(outcomes.clone());
        let wait = Duration::from_secs(self.config.worker.wait_time_secs);
        let in_progress = Arc::new(tokio::sync::Semaphore::new(
            self.config.worker.concurrency.max(MAX_BATCH),
        ));
        let mut errors = 0u32;
        loop {
            let mut room = tokio::select! {
                p = in_progress.clone().acquire_many_owned(MAX_BATCH as u32) => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let received = tokio::select! {
                r = outcomes.receive(MAX_BATCH, wait, self.config.worker.lease()) => r,
                _ = shutdown.cancelled() => break,
            };
            match received {
                Ok(records) => {
                    errors = 0;
                    // A partial batch: let more records gather before the next call (a
                    // record waits half a second more; a receive carries more).
                    let linger = !records.is_empty() && records.len() < MAX_BATCH;
                    for m in records {
                        let me = self.clone();
                        let (acker, deleter) = (acker.clone(), deleter.clone());
                        let one = room.split(1);
                        tracker.spawn(async move {
                            me.handle_record(m, &acker, &deleter).await;
                            drop(one);
                        });
                    }
                    drop(room);
                    if linger {
                        tokio::select! {
                            _ = tokio::time::sleep(RECORDS_LINGER) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    let pause = Duration::from_millis(200u64 << errors.min(5));
                    warn!(error = %e, "receive from the outcomes queue failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        // Records being handled finish first: the tracker keeps the deleter alive for them.
        drop(deleter);
        tracker.spawn(async move { deletes.finish().await });
    }

    /// Records the outcome an invocation record reports, then deletes the record.
    async fn handle_record(&self, m: Received, acker: &Acker, deleter: &Acker) {
        let rec = match record::read(&m.body) {
            Ok(r) => r,
            Err(reason) => return self.refuse_record(&m, &reason, deleter).await,
        };
        let e = &rec.event;
        let span = info_span!("job", request_id = %e.request_id, job_id = %e.job_id);
        async {
            let Ok(job) = fleet_shared::ids::JobId::parse(&e.job_id) else {
                return self
                    .refuse_record(&m, "the record's job id is not a job id", deleter)
                    .await;
            };
            let Some(lease) = e.lease.as_ref().map(|l| Lease {
                job: job.clone(),
                key: ItemKey::new(l.pk.clone(), l.sk.clone()),
                owner: l.owner.clone(),
                fence: e.fence,
                attempt: e.attempt,
                max_attempts: l.max_attempts,
                started_ms: l.started_ms,
                until_ms: l.until_ms,
                target: l.target,
                previous: None,
                after_retry: l.after_retry,
                due_ms: None,
                item_bytes: l.item_bytes,
            }) else {
                return self
                    .refuse_record(&m, "the record's event carries no lease", deleter)
                    .await;
            };
            let attempt = (lease.key.clone(), e.fence);
            if !self.handed.start_recording(&attempt) {
                self.note(Noted::Record { result: "stale" });
                debug!(fence = e.fence, "a duplicate of a record being recorded");
                deleter.delete(m.receipt.clone());
                return;
            }
            self.record_from(&rec, &job, lease, acker).await;
            self.handed.end_recording(&attempt);
            deleter.delete(m.receipt.clone());
        }
        .instrument(span)
        .await
    }

    /// A record that is not one of Fleet's: dead-lettered with the reason, then deleted.
    async fn refuse_record(&self, m: &Received, reason: &str, deleter: &Acker) {
        self.note(Noted::Record {
            result: "malformed",
        });
        warn!(message_id = %m.message_id, %reason, "malformed invocation record; dead-lettering it");
        let failure = self.failure_record(
            None,
            crate::classify::ErrorClass::Permanent,
            &format!("outcomes queue: {reason}"),
            &Default::default(),
        );
        if self.dead_letter(&m.body, &failure).await {
            deleter.delete(m.receipt.clone());
        }
    }

    /// Records the outcome of one attempt's record (not being recorded by another task of
    /// this replica). A stale record or a duplicate fails the ledger's conditions on owner
    /// and fence and changes nothing.
    async fn record_from(
        &self,
        rec: &record::Record,
        job: &fleet_shared::ids::JobId,
        lease: Lease,
        acker: &Acker,
    ) {
        let e = &rec.event;
        let msg = match JobMessage::for_job(
            job,
            &e.job_type,
            &e.payload.to_string(),
            lease.attempt,
            lease.max_attempts,
            None,
            0,
        ) {
            Ok(msg) => msg,
            Err(err) => {
                warn!(error = %err, "cannot rebuild the job's message; dropping the record");
                return;
            }
        };
        let key = lease.key.clone();
        let a = Attempt::adopted(&msg, lease);
        let route = Route {
            target: Target::Lambda,
            reason: e
                .route
                .unwrap_or(RouteReason::of(RouteRule::InvocationRecord)),
        };
        let permit = self.handed.take(&key, e.fence);
        let outcome = rec.end.outcome.clone();
        self.note(Noted::RecordReceived {
            job: &e.job_id,
            fence: e.fence,
            invocation: &rec.request_id,
        });
        let recorded = self
            .record(&a, &route, outcome.clone(), TaskInfo::from(&rec.end), acker)
            .await;
        self.note(Noted::Record {
            result: if recorded { "recorded" } else { "stale" },
        });
        if let Some(p) = permit {
            p.ended(&rec.end);
        }
    }

    /// Gives back the permits of attempts handed off that another replica recorded: checks
    /// the ledger for those due, until shutdown.
    pub(super) async fn handed_loop(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.hands_off() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_FIRST) => {}
                _ = shutdown.cancelled() => return,
            }
            let due = self.handed.due(self.clock.now_ms());
            for chunk in due.chunks(100) {
                match self.ledger.running_at(chunk).await {
                    Ok(running) => {
                        let now = self.clock.now_ms();
                        let mut ended = 0;
                        for (attempt, still) in chunk.iter().zip(running) {
                            if still {
                                self.handed.later(attempt, now);
                            } else if self.handed.take(&attempt.0, attempt.1).is_some() {
                                ended += 1;
                            }
                        }
                        if ended > 0 {
                            debug!(ended, "attempts handed to Lambda ended elsewhere");
                        }
                    }
                    Err(e) => warn!(error = %e, "could not check attempts handed to Lambda"),
                }
            }
        }
    }
}

impl<'a> Attempt<'a> {
    /// An attempt this replica did not claim (adopted, or recorded from a record).
    pub(super) fn adopted(msg: &'a JobMessage, lease: fleet_shared::ledger::Lease) -> Self {
        Attempt {
            body: msg.to_body(),
            msg,
            until_ms: AtomicU64::new(lease.until_ms),
            lease,
            message: None,
            handed_off: AtomicBool::new(true),
            task: std::sync::Mutex::new(None),
            live: AtomicBool::new(false),
            handing: tokio::sync::Mutex::new(false),
            unstarted: std::sync::Mutex::new(None),
        }
    }
}

/// Logs what a replica holds handed off when it stops.
pub(super) fn log_handed(n: usize) {
    if n > 0 {
        info!(
            handed_to_lambda = n,
            "attempts handed to Lambda keep running; any replica records their outcome"
        );
    }
}
