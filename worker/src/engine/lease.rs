//! An attempt's lease and message while it runs and after: the heartbeat (`keep_alive`), the
//! conclusion (`conclude`), giving an unfinished attempt back, and the message's visibility
//! (`refuse`, `defer`, `set_visibility`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_shared::ledger::{Change, Finish, Ledger, LedgerError};
use fleet_shared::message::JobMessage;
use fleet_shared::queue::{JobQueue, Received};
use fleet_shared::state::AttemptOutcome;
use tracing::{info, warn};

use super::attempt::{Attempt, AttemptEnd, Beat, TaskInfo};
use super::events::Noted;
use super::views::VIEW_TTL;
use super::{Backends, Engine, visibility_secs};
use crate::acks::Acker;
use crate::classify::ErrorClass;
use crate::dispatch::TaskLauncher;
use crate::routing::Route;

impl<B: Backends> Engine<B> {
    /// Everything that happens to one received message.
    /// Whether the job's request was cancelled, checked right before the job starts (after
    /// every wait for a permit or a RunTask slot): no job starts on a request view older
    /// than [`VIEW_TTL`], so none starts once `cancel` has returned.
    pub(super) async fn cancelled(&self, a: &Attempt<'_>) -> bool {
        self.views
            .get(self.ledger.as_ref(), &a.msg.request_id, VIEW_TTL)
            .await
            .is_ok_and(|v| v.cancelled)
    }

    /// What follows an attempt's end: the outcome recorded, or the lease given up.
    pub(super) async fn conclude(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        end: AttemptEnd,
        acker: &Acker,
    ) {
        match end {
            AttemptEnd::HandedToLambda => {}
            AttemptEnd::Deferred(delay) => {
                info!(
                    delay_ms = delay.as_millis() as u64,
                    "its job type's or tenant's fleet-wide cap is full; the job comes back later"
                );
                self.give_back_after(a, delay).await;
            }
            AttemptEnd::Done(outcome, info) => {
                self.record(a, route, outcome, info, acker).await;
            }
            AttemptEnd::Cancelled => {
                if let Some(task) = a.task() {
                    self.tasks.stop(&task, "request cancelled").await;
                }
                self.record_finish(
                    a,
                    route,
                    Finish::Cancelled,
                    AttemptOutcome::Cancelled,
                    TaskInfo::default(),
                    acker,
                )
                .await;
            }
            AttemptEnd::LeaseLost { expired } => {
                self.note(Noted::LeaseLost);
                warn!(
                    fence = a.lease.fence,
                    expired,
                    "lease lost while the job ran; its result will not be recorded by this replica"
                );
                // A local process cannot be followed by anyone else: stop it. An ECS task is
                // the new owner's (or the adopter's) to follow.
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
    pub(super) async fn give_back(&self, a: &Attempt<'_>) {
        self.give_back_after(a, Duration::ZERO).await;
    }

    /// [`Engine::give_back`], the message visible again after `delay`.
    pub(super) async fn give_back_after(&self, a: &Attempt<'_>, delay: Duration) {
        let change = Change::Release {
            lease: a.lease.clone(),
            now_ms: self.clock.now_ms(),
        };
        match self.recorder().commit(change).await {
            Ok(()) => {
                self.note(Noted::Released {
                    job: &a.msg.job_id,
                    fence: a.lease.fence,
                });
                info!(attempt = a.lease.attempt, "released unfinished job");
                if let Some(m) = a.held() {
                    self.set_visibility(&m.receipt, delay).await;
                }
            }
            Err(LedgerError::Stale { .. }) => {
                self.note_stale(a, "release");
                info!(fence = a.lease.fence, "the job has a new owner already");
            }
            Err(e) => warn!(error = %e, "release failed; the lease will expire instead"),
        }
    }

    /// Renews the lease (and, while it is held, the message's visibility) every heartbeat
    /// period; returns when the lease is lost (refused by the ledger, or not renewed before
    /// it expired), or when the job's request was cancelled with `--stop-running` while the
    /// job runs in a task (which can be stopped; a Lambda invocation cannot).
    pub(super) async fn keep_alive(&self, a: &Attempt<'_>) -> Beat {
        let w = &self.config.worker;
        let mut until = a.lease.until_ms;
        loop {
            tokio::time::sleep(w.heartbeat()).await;
            let handing = a.handing.lock().await;
            if *handing {
                drop(handing);
                return std::future::pending().await;
            }
            let next = self.clock.now_ms() + w.lease_ms();
            let beat = self.ledger.heartbeat(&a.lease, next).await;
            drop(handing);
            match beat {
                Ok(()) => {
                    until = next;
                    a.until_ms.store(next, Ordering::Relaxed);
                }
                Err(LedgerError::Stale { .. }) => {
                    self.note(Noted::Stale {
                        job: &a.lease.job.to_string(),
                        fence: a.lease.fence,
                        op: "heartbeat",
                        state: None,
                    });
                    return Beat::LeaseLost { expired: false };
                }
                Err(e) => {
                    self.note(Noted::LedgerError);
                    warn!(error = %e, "heartbeat failed; will try again");
                }
            }
            if let Some(m) = a.held()
                && let Err(e) = self.queue.set_visibility(&m.receipt, w.lease()).await
            {
                warn!(error = %e, "could not extend the message's visibility");
            }
            if self.clock.now_ms() >= until {
                self.note(Noted::LeaseExpired {
                    job: &a.msg.job_id,
                    fence: a.lease.fence,
                });
                return Beat::LeaseLost { expired: true };
            }
            if a.task().is_some()
                && self
                    .views
                    .get(self.ledger.as_ref(), &a.msg.request_id, VIEW_TTL)
                    .await
                    .is_ok_and(|v| v.stop_running)
            {
                info!(task = ?a.task(), "request cancelled with --stop-running; stopping the task");
                return Beat::Cancelled;
            }
        }
    }

    /// A message refused before any attempt: dead-lettered with the reason, then deleted.
    pub(super) async fn refuse(
        &self,
        m: &Received,
        msg: Option<&JobMessage>,
        reason: &str,
        acker: &Acker,
    ) {
        let record = self.failure_record(msg, ErrorClass::Permanent, reason, &Default::default());
        if self.dead_letter(&m.body, &record).await {
            acker.delete(m.receipt.clone());
        }
    }

    pub(super) async fn set_visibility(&self, receipt: &str, after: Duration) {
        if let Err(e) = self.queue.set_visibility(receipt, after).await {
            warn!(error = %e, "could not change the message's visibility");
        }
    }

    /// Makes a message come back in `wait_ms`: hidden when that is short, else deleted and
    /// sent again with a delay (up to SQS's 15 minutes; a claim then waits out the rest), so
    /// long waits do not stay in flight.
    pub(super) async fn defer(&self, m: &Received, wait_ms: u64, acker: &Acker) {
        let wait = Duration::from_millis(wait_ms);
        if wait <= super::MAX_HIDE {
            self.set_visibility(&m.receipt, visibility_secs(wait_ms))
                .await;
            return;
        }
        let delay = wait.min(fleet_shared::queue::MAX_DELAY);
        match self.queue.send(&m.body, delay).await {
            Ok(()) => {
                self.note(Noted::ResentDelayed);
                acker.delete(m.receipt.clone());
            }
            Err(e) => {
                warn!(error = %e, "could not send the message again delayed; hiding it instead");
                self.set_visibility(&m.receipt, visibility_secs(wait_ms))
                    .await;
            }
        }
    }
}
