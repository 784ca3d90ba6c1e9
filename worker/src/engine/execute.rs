//! Running an attempt: the dispatch to its target under the heartbeat (`guarded`), the
//! synchronous path (`execute`: Lambda's answer or an ECS task's end) and the asynchronous
//! hand-off to Lambda (`hand_to_lambda`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_shared::ledger::{Ledger, LedgerError};
use fleet_shared::message::{HandedLease, JobEvent, LargeResults, Target};
use fleet_shared::metrics as fm;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::attempt::{Attempt, AttemptEnd, Beat, TaskInfo};
use super::events::Noted;
use super::{Backends, Engine};
use crate::acks::Acker;
use crate::classify::ErrorClass;
use crate::dispatch::{Dispatcher, Outcome, TaskEnd, TaskLauncher};
use crate::limits::Permits;
use crate::routing::Route;

impl<B: Backends> Engine<B> {
    /// The end of an attempt that a permanent ledger error stopped before it dispatched
    /// anything: retrying cannot help, so the job fails with `what` and the error.
    pub(super) fn refused_by_ledger(&self, what: &str, e: &LedgerError) -> AttemptEnd {
        self.note(Noted::LedgerError);
        AttemptEnd::Done(
            Outcome::Failed {
                class: ErrorClass::Permanent,
                message: format!("{what}: {e}"),
            },
            TaskInfo::default(),
        )
    }

    /// Everything that happens to one received message.
    /// Runs an attempt (`work`) and concludes it while the heartbeat renews its lease: the
    /// heartbeat goes on until the outcome is committed, not only while the job runs.
    pub(super) async fn guarded(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        work: impl std::future::Future<Output = AttemptEnd>,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        let work = async {
            let end = work.await;
            self.conclude(a, route, end, acker).await;
        };
        tokio::select! {
            () = work => {}
            beat = self.keep_alive(a) => {
                let end = match beat {
                    Beat::LeaseLost { expired } => AttemptEnd::LeaseLost { expired },
                    Beat::Cancelled => AttemptEnd::Cancelled,
                };
                self.conclude(a, route, end, acker).await;
            }
            _ = hard_stop.cancelled() => self.conclude(a, route, AttemptEnd::Stopped, acker).await,
        }
    }

    /// Runs the attempt on its target, under that target's limit.
    pub(super) async fn execute(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        event: &JobEvent,
        acker: &Acker,
    ) -> AttemptEnd {
        let target = route.target.as_str();
        self.note(Noted::Dispatched {
            job: &a.msg.job_id,
            fence: a.lease.fence,
            attempt: a.lease.attempt,
            target: route.target,
        });
        let dispatched = || {
            let waited = self.clock.now_ms().saturating_sub(a.lease.started_ms);
            metrics::histogram!(fm::DISPATCH_LATENCY, "target" => target)
                .record(waited as f64 / 1000.0);
        };
        if route.target != Target::Ecs {
            let mut permits = self.permits(&a.msg.job_type, &self.lambda_limit).await;
            if let Some(cap) = &self.lambda_cap {
                match cap.acquire(self.ledger.as_ref(), self.clock).await {
                    Ok(slot) => permits.fleet = Some(slot),
                    Err(e) => {
                        return self.refused_by_ledger(
                            "could not take a slot of lambda.max_concurrency",
                            &e,
                        );
                    }
                }
            }
            if let Err(end) = self.capped(a.msg, &mut permits).await {
                return end;
            }
            if let Err(e) = self.paced(a).await {
                return self.refused_by_ledger("could not take a start slot for the job type", &e);
            }
            a.started();
            if self.cancelled(a).await {
                return AttemptEnd::Cancelled;
            }
            dispatched();
            if self.hands_off() {
                return self.hand_to_lambda(a, route, event, permits, acker).await;
            }
            let end = self.dispatcher.dispatch(event).await;
            permits.ended(&end);
            return AttemptEnd::Done(end.outcome.clone(), TaskInfo::from(&end));
        }
        let mut permits = self.permits(&a.msg.job_type, &self.ecs_limit).await;
        if let Err(end) = self.capped(a.msg, &mut permits).await {
            return end;
        }
        a.started();
        if let Err(e) = self
            .run_tasks
            .acquire(self.ledger.as_ref(), self.clock)
            .await
        {
            return self
                .refused_by_ledger("could not take a RunTask start from the shared rate", &e);
        }
        self.tasks.pace().await;
        if let Err(e) = self.paced(a).await {
            return self.refused_by_ledger("could not take a start slot for the job type", &e);
        }
        if self.cancelled(a).await {
            return AttemptEnd::Cancelled;
        }
        let task = match self.tasks.start(event).await {
            Ok(task) => task,
            Err((class, message)) => {
                // Nothing ran: a throttle is ECS's (capacity, the API rate).
                let end = TaskEnd::of(Outcome::Failed { class, message });
                permits.ended(&end);
                return AttemptEnd::Done(end.outcome, TaskInfo::default());
            }
        };
        dispatched();
        *a.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
        match self.ledger.record_task(&a.lease, &task).await {
            Ok(()) => {}
            Err(LedgerError::Stale { .. }) => {
                self.note_stale(a, "record_task");
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
            self.note(Noted::TaskHandedOff);
            info!(%task, "task running; handed off");
        }
        let end = self.tasks.wait(&task).await;
        permits.ended(&end);
        AttemptEnd::Done(end.outcome.clone(), TaskInfo::from(&end))
    }

    /// Extends the lease to cover the event's maximum age and the function timeout, then
    /// invokes Lambda asynchronously; once the event is accepted, deletes the message and
    /// keeps only the permit (see [`super::handed`]). The lease is extended first so that a
    /// replica that dies after the Invoke re-runs nothing: its job is recorded from the
    /// record under the extended lease. One that dies between the two leaves the job to wait
    /// out that lease before the sweeper sends it again: a window of one ledger write and one
    /// Invoke call, as the call's slot (`lambda.invoke_calls`) is taken before the write.
    pub(super) async fn hand_to_lambda(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        event: &JobEvent,
        permits: Permits,
        acker: &Acker,
    ) -> AttemptEnd {
        // Closed never: the semaphore lives as long as the engine.
        let _call = self.invoke_calls.acquire().await.ok();
        let mut handing = a.handing.lock().await;
        *handing = true;
        let until = self.clock.now_ms() + self.config.lambda.hand_off_lease().as_millis() as u64;
        // The result comes back in an invocation record, which has room for so much.
        let event = JobEvent {
            large_results: Some(LargeResults {
                inline_max_bytes: fleet_shared::invocation_record::RESULT_MAX_BYTES,
                prefix: self.config.claim_check.prefix.clone(),
            }),
            route: Some(route.reason),
            lease: Some(HandedLease {
                owner: a.lease.owner.clone(),
                pk: a.lease.key.pk.clone(),
                sk: a.lease.key.sk.clone(),
                started_ms: a.lease.started_ms,
                until_ms: until,
                max_attempts: a.lease.max_attempts,
                target: a.lease.target,
                after_retry: a.lease.after_retry,
                item_bytes: a.lease.item_bytes,
            }),
            ..event.clone()
        };
        let mut pause = Duration::from_millis(100);
        loop {
            match self.ledger.heartbeat(&a.lease, until).await {
                Ok(()) => break,
                Err(LedgerError::Stale { .. }) => {
                    // Another replica took the job over (this one was paused past its
                    // lease): nothing was invoked.
                    self.note_stale(a, "hand_off");
                    return AttemptEnd::LeaseLost { expired: false };
                }
                Err(e) if e.class() == ErrorClass::Permanent => {
                    *handing = false;
                    return self.refused_by_ledger(
                        "could not extend the lease to hand the job to Lambda",
                        &e,
                    );
                }
                Err(e) => {
                    self.note(Noted::LedgerError);
                    if self.clock.now_ms() + pause.as_millis() as u64
                        >= a.until_ms.load(Ordering::Relaxed)
                    {
                        warn!(error = %e, "could not extend the lease to hand the job to Lambda");
                        return AttemptEnd::LeaseLost { expired: true };
                    }
                    warn!(error = %e, "extending the lease to hand the job to Lambda failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        a.until_ms.store(until, Ordering::Relaxed);
        let invocation = match self.dispatcher.hand_off(&event).await {
            Ok(id) => id,
            Err(end) => {
                // Not accepted: the heartbeats take the lease back to a short one while the
                // failure is recorded.
                *handing = false;
                permits.ended(&end);
                return AttemptEnd::Done(end.outcome.clone(), TaskInfo::from(&end));
            }
        };
        a.handed_off.store(true, Ordering::Relaxed);
        if let Some((m, _)) = a.message {
            acker.delete(m.receipt.clone());
        }
        // The job stays in this replica's live report until its permit is given back.
        let live = a.live.swap(false, Ordering::Relaxed);
        self.handed.add(super::handed::HandedJob::new(
            a,
            permits,
            live,
            self.clock.now_ms(),
            until,
        ));
        self.note(Noted::HandedToLambda {
            job: &a.msg.job_id,
            fence: a.lease.fence,
            invocation: &invocation,
        });
        debug!(%invocation, "handed to Lambda");
        AttemptEnd::HandedToLambda
    }
}
