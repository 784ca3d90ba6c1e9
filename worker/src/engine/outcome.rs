//! An attempt's outcome: what the ledger records, and what becomes of the message.
//!
//! - success: SUCCEEDED, message deleted (a result over `limits.max_result_bytes` is kept
//!   in S3 under the claim-check prefix, and the ledger keeps its reference);
//! - throttled: RETRYING without spending the attempt, after a delay that grows with the
//!   message's receive count;
//! - permanent, or the last attempt: FAILED, then the message goes to the dead-letter queue
//!   with its failure record, then it is deleted;
//! - otherwise: RETRYING after the policy's delay; the message is hidden that long when it
//!   is short, and deleted and sent again delayed when it is not (a handed-off job, whose
//!   message is gone, gets a new one).
//!
//! Every outcome is committed through the replica's [`Recorder`](super::Recorder), which
//! retries a throttled or failing ledger for as long as the attempt's lease holds.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_shared::claim_check;
use fleet_shared::dead_letter::FailureRecord;
use fleet_shared::ledger::{AttemptRecord, Change, Finish, History, Ledger, LedgerError};
use fleet_shared::message::JobMessage;
use fleet_shared::metrics as fm;
use fleet_shared::queue::{DeadLetterQueue, JobQueue, MAX_DELAY};
use fleet_shared::state::{AttemptOutcome, JobState};
use tracing::{debug, info, warn};

use super::attempt::{Attempt, TaskInfo};
use super::events::Noted;
use super::{Backends, Engine, clip};
use crate::acks::Acker;
use crate::classify::ErrorClass;
use crate::decide::{Decision, Facts, decide};
use crate::dispatch::Outcome;
use crate::routing::Route;

impl<B: Backends> Engine<B> {
    /// Decides what an attempt's outcome means for the job, and records it; whether the
    /// ledger took it (false: the lease was lost, or the write failed).
    pub(super) async fn record(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        outcome: Outcome,
        info: TaskInfo,
        acker: &Acker,
    ) -> bool {
        // A lease that could not be renewed in time is not ours any more, even if nobody has
        // taken it yet: the result is not written (the job will run again).
        if self.clock.now_ms() >= a.until_ms.load(Ordering::Relaxed) {
            self.note(Noted::LeaseLost);
            self.note(Noted::LeaseExpired {
                job: &a.msg.job_id,
                fence: a.lease.fence,
            });
            warn!(
                fence = a.lease.fence,
                "the lease expired before the attempt ended; not recording its outcome"
            );
            self.give_back(a).await;
            return false;
        }
        let took = self.clock.now_ms().saturating_sub(a.lease.started_ms);
        metrics::histogram!(fm::JOB_DURATION, "target" => route.target.as_str(), "job_type" => a.msg.job_type.clone())
            .record(took as f64 / 1000.0);
        let (class, message) = match outcome {
            Outcome::Succeeded { result } => match self.keep_result(a, result).await {
                Ok(result) => {
                    return self
                        .record_finish(
                            a,
                            route,
                            Finish::Succeeded { result },
                            AttemptOutcome::Succeeded,
                            info,
                            acker,
                        )
                        .await;
                }
                Err(message) => (ErrorClass::Permanent, message),
            },
            Outcome::Failed { class, message } => (class, clip(&message)),
        };
        if class == ErrorClass::Timeout {
            self.learner.observe(&a.msg.job_type, took);
        }
        let max_attempts = self
            .config
            .max_attempts_for(&a.msg.job_type, a.lease.max_attempts.or(a.msg.max_attempts));
        let facts = Facts {
            class,
            attempt: a.lease.attempt,
            max_attempts,
            receive_count: a.message.map_or(1, |(m, _)| m.receive_count),
            retry_after: info.retry_after,
        };
        if class == ErrorClass::Throttled {
            self.note(Noted::Throttled {
                target: route.target.as_str(),
            });
        }
        let finish = match decide(&facts, &self.retry, &mut rand::rng()) {
            Decision::Retry { delay, refund } => Finish::Retry {
                class,
                error: message,
                retry_at_ms: self.clock.now_ms() + delay.as_millis() as u64,
                refund,
            },
            Decision::Fail => Finish::Failed {
                class,
                error: message,
            },
        };
        self.record_finish(a, route, finish, AttemptOutcome::Failed(class), info, acker)
            .await
    }

    /// A result as the ledger keeps it: itself when it is at most `limits.max_result_bytes`,
    /// else a reference to it in S3 (the claim-check). `Err` says why it cannot be kept.
    async fn keep_result(
        &self,
        a: &Attempt<'_>,
        result: Vec<u8>,
    ) -> Result<Option<String>, String> {
        if result.is_empty() {
            return Ok(None);
        }
        let limit = self.config.limits.max_result_bytes;
        if result.len() <= limit {
            return Ok(Some(String::from_utf8_lossy(&result).into_owned()));
        }
        let (Some(prefix), Some(s3)) = (self.config.claim_check.location(), self.s3.as_ref())
        else {
            return Err(format!(
                "the result is {} bytes, over limits.max_result_bytes ({limit}), and no claim_check.prefix is configured to keep it in S3",
                result.len()
            ));
        };
        let uri = claim_check::result_uri(
            &prefix,
            a.lease.job.request_id(),
            a.lease.job.index(),
            a.lease.fence,
        );
        let reference = claim_check::result_reference(&uri, &result);
        claim_check::put(s3, &uri, result)
            .await
            .map_err(|e| format!("the result could not be kept in S3: {e}"))?;
        Ok(Some(reference.to_string()))
    }

    /// Commits `finish` (falling back to FAILED when the ledger refuses it as invalid), then
    /// does what follows for the job's message; whether the ledger took it.
    pub(super) async fn record_finish(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        finish: Finish,
        outcome: AttemptOutcome,
        info: TaskInfo,
        acker: &Acker,
    ) -> bool {
        let ended_ms = self.clock.now_ms();
        // A job cancelled before it started used nothing.
        let ran = outcome != AttemptOutcome::Cancelled || a.task().is_some();
        let usage = ran.then(|| self.usage(a, route, &info, ended_ms));
        if let Some(u) = &usage {
            metrics::gauge!(fm::COST_USD, "target" => route.target.as_str(), "job_type" => a.msg.job_type.clone())
                .increment(u.cost_nusd as f64 / 1e9);
        }
        let rec = AttemptRecord {
            usage,
            attempt: a.lease.attempt,
            fence: a.lease.fence,
            started_ms: a.lease.started_ms,
            ended_ms,
            target: route.target,
            outcome,
            retry_at_ms: match &finish {
                Finish::Retry { retry_at_ms, .. } => Some(*retry_at_ms),
                _ => None,
            },
            reason: route.reason,
            exit_code: info.exit_code,
            stopped_reason: info.stopped_reason,
        };
        let Some(finish) = self.commit(a, finish, rec).await else {
            return false;
        };
        // A finished job leaves its request's window; so does one waiting for a retry,
        // unless the window is a cap.
        self.job_finished(&a.msg.request_id).await;
        if !matches!(finish, Finish::Retry { .. }) {
            self.job_terminal(&a.msg.request_id);
        }
        let target = route.target.as_str();
        let took = self.clock.now_ms().saturating_sub(a.lease.started_ms);
        match finish {
            Finish::Succeeded { .. } => {
                self.note(Noted::Completed {
                    target,
                    state: JobState::Succeeded,
                });
                self.learner.observe(&a.msg.job_type, took);
                debug!(duration_ms = took, "succeeded");
                if let Some(m) = a.held() {
                    acker.delete(m.receipt.clone());
                }
            }
            Finish::Cancelled => {
                self.note(Noted::Completed {
                    target,
                    state: JobState::Cancelled,
                });
                info!("request cancelled; job cancelled");
                if let Some(m) = a.held() {
                    acker.delete(m.receipt.clone());
                }
            }
            Finish::Retry {
                class,
                error,
                retry_at_ms,
                refund,
            } => {
                self.note(Noted::Retried {
                    target,
                    class: class.as_str(),
                });
                let delay = Duration::from_millis(retry_at_ms.saturating_sub(self.clock.now_ms()));
                info!(attempt = a.lease.attempt, %class, %error, refund, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
                self.retry_message(a, delay, acker).await;
            }
            Finish::Failed { class, error } => {
                self.note(Noted::Completed {
                    target,
                    state: JobState::Failed,
                });
                warn!(attempt = a.lease.attempt, %class, %error, "job failed");
                self.job_failed(&a.msg.request_id).await;
                // Ledger first: if the dead-letter send is lost to a crash, the message comes
                // back, the claim finds the job FAILED and sends it then.
                let history = self.ledger.history(&a.lease.key).await.unwrap_or_default();
                let record = self.failure_record(Some(a.msg), class, &error, &history);
                if self.dead_letter(&a.body, &record).await
                    && let Some(m) = a.held()
                {
                    acker.delete(m.receipt.clone());
                }
            }
        }
        true
    }

    /// What an attempt that ended at `ended_ms` used, and its cost at `[prices]`: Lambda's
    /// billed duration and memory as its REPORT line says (else the attempt's own time, to
    /// the end Lambda's invocation record gives, and `lambda.memory_mb`); a task's run time
    /// at the size `ecs.task_cpu` / `ecs.task_memory_mb`.
    fn usage(
        &self,
        a: &Attempt<'_>,
        route: &Route,
        info: &TaskInfo,
        ended_ms: u64,
    ) -> fleet_shared::ledger::Usage {
        let prices = &self.config.prices;
        let r = info.reported;
        let ran_ms = r
            .ended_ms
            .filter(|e| *e <= ended_ms)
            .unwrap_or(ended_ms)
            .saturating_sub(a.lease.started_ms);
        match route.target {
            fleet_shared::message::Target::Ecs => prices.fargate(
                ran_ms,
                self.config.ecs.task_cpu,
                self.config.ecs.task_memory_mb,
            ),
            _ => prices.lambda(
                r.billed_ms.unwrap_or(ran_ms),
                r.memory_mb.unwrap_or(self.config.lambda.memory_mb),
            ),
        }
    }

    /// Brings a retried job's message back at its retry time: hidden when that is soon,
    /// else sent again delayed (and the original deleted), so retries do not pile up in
    /// flight; a handed-off job, whose message is gone, gets a new one.
    async fn retry_message(&self, a: &Attempt<'_>, delay: Duration, acker: &Acker) {
        match a.message {
            Some((m, _)) if !a.handed_off.load(Ordering::Relaxed) => {
                self.defer(m, delay.as_millis() as u64, acker).await;
            }
            _ => {
                // The claim waits out whatever of the delay is beyond SQS's 15 minutes.
                if let Err(e) = self.queue.send(&a.body, delay.min(MAX_DELAY)).await {
                    warn!(error = %e, "could not re-send the job; the sweeper will find it");
                }
            }
        }
    }

    /// Commits an outcome; the finish actually written, or `None` when none was (the lease
    /// was lost, or the recorder stopped: the message will come back).
    async fn commit(
        &self,
        a: &Attempt<'_>,
        mut finish: Finish,
        mut rec: AttemptRecord,
    ) -> Option<Finish> {
        a.end_live(&self.live);
        loop {
            let change = Change::Finish {
                lease: a.lease.clone(),
                finish: finish.clone(),
                record: rec.clone(),
            };
            match self.recorder().commit(change).await {
                Ok(()) => {
                    self.note(Noted::Written {
                        job: &a.msg.job_id,
                        fence: a.lease.fence,
                        state: finish.state(),
                    });
                    return Some(finish);
                }
                Err(LedgerError::Stale { .. }) => {
                    self.note(Noted::Stale {
                        job: &a.msg.job_id,
                        fence: a.lease.fence,
                        op: "finish",
                        state: Some(finish.state()),
                    });
                    self.note(Noted::LeaseLost);
                    warn!(fence = a.lease.fence, state = %finish.state(), "ledger refused the outcome: the lease was lost");
                    return None;
                }
                Err(e)
                    if e.class() == ErrorClass::Permanent
                        && !matches!(finish, Finish::Failed { .. }) =>
                {
                    self.note(Noted::LedgerError);
                    warn!(error = %e, "the ledger refused the outcome; recording the job FAILED instead");
                    finish = Finish::Failed {
                        class: ErrorClass::Permanent,
                        error: clip(&format!("the ledger refused the outcome: {e}")),
                    };
                    rec.outcome = AttemptOutcome::Failed(ErrorClass::Permanent);
                    rec.retry_at_ms = None;
                }
                Err(e) => {
                    self.note(Noted::LedgerError);
                    warn!(error = %e, "outcome not written; leaving the message to come back");
                    return None;
                }
            }
        }
    }

    pub(super) fn failure_record(
        &self,
        msg: Option<&JobMessage>,
        class: ErrorClass,
        error: &str,
        history: &History,
    ) -> FailureRecord {
        let targets = fleet_shared::ledger::targets_of(&history.attempts);
        let started = history.attempts.iter().map(|h| h.record.started_ms);
        FailureRecord {
            job_id: msg.map(|m| m.job_id.clone()),
            request_id: msg.map(|m| m.request_id.clone()),
            error_class: class,
            error: clip(error),
            attempts: history
                .attempts
                .iter()
                .map(|h| h.record.attempt)
                .max()
                .unwrap_or(0),
            targets,
            first_attempt_ms: started.clone().min(),
            last_attempt_ms: started.max(),
            replica: self.replica.clone(),
            dead_lettered_ms: self.clock.now_ms(),
        }
    }

    /// Sends a message to the dead-letter queue with its failure record. False if it could
    /// not be sent (then the message must not be deleted).
    pub(super) async fn dead_letter(&self, body: &str, record: &FailureRecord) -> bool {
        match self
            .dead_letters
            .send_dead_letter(body, &record.attributes())
            .await
        {
            Ok(()) => {
                self.note(Noted::DeadLettered {
                    class: record.error_class.as_str(),
                });
                true
            }
            Err(e) => {
                warn!(error = %e, "dead-letter send failed; the message will come back");
                false
            }
        }
    }
}
