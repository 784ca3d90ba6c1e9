//! What the engine tells the outside about its work, in one place. Each [`Noted`] event
//! bumps the replica's report ([`super::Stats`]), increments its Prometheus counter and, when
//! it concerns a job, appends a line to the history log (the chaos checker's input, so the
//! names and fields of those lines are part of the contract). The engine calls
//! [`Engine::note`] rather than touching the three separately.

use fleet_shared::message::Target;
use fleet_shared::metrics as fm;
use fleet_shared::state::JobState;

use super::{Backends, Engine, Stats};
use crate::history::HistoryEvent;

/// One thing the engine did or saw.
#[derive(Debug, Clone, Copy)]
pub(super) enum Noted<'a> {
    /// A message received from the jobs queue.
    Received,
    /// A message refused before any claim (malformed, unknown job type).
    Malformed,
    /// A claim refused for now (the job is running, or waits for its retry time).
    Deferred {
        state: JobState,
    },
    /// A message of a finished job.
    Obsolete {
        state: JobState,
    },
    Claimed {
        job: &'a str,
        fence: u64,
        attempt: u32,
    },
    /// A handed-off task taken over from a replica whose lease expired.
    Adopted {
        job: &'a str,
        fence: u64,
        attempt: u32,
    },
    Dispatched {
        job: &'a str,
        fence: u64,
        attempt: u32,
        target: Target,
    },
    /// A running ECS task handed off (its message deleted).
    TaskHandedOff,
    /// An attempt handed to Lambda (asynchronous invocation).
    HandedToLambda {
        job: &'a str,
        fence: u64,
        invocation: &'a str,
    },
    /// An invocation record received for an attempt.
    RecordReceived {
        job: &'a str,
        fence: u64,
        invocation: &'a str,
    },
    /// A state change the ledger took: terminal, or RETRYING.
    Written {
        job: &'a str,
        fence: u64,
        state: JobState,
    },
    /// A job of a cancelled request cancelled before it started.
    CancelledWaiting {
        job: &'a str,
    },
    /// A write the ledger refused for a stale owner or fence.
    Stale {
        job: &'a str,
        fence: u64,
        op: &'static str,
        state: Option<JobState>,
    },
    /// A lease this replica held is gone.
    LeaseLost,
    /// A lease that ran out before a renewal landed.
    LeaseExpired {
        job: &'a str,
        fence: u64,
    },
    /// An unfinished attempt given back.
    Released {
        job: &'a str,
        fence: u64,
    },
    /// A job whose message looked lost, sent again.
    Requeued {
        job: &'a str,
        fence: u64,
        state: JobState,
    },
    LedgerError,
    /// A message deleted and sent again delayed, rather than hidden for long.
    ResentDelayed,
    /// An attempt the target throttled.
    Throttled {
        target: &'static str,
    },
    /// A terminal outcome recorded (SUCCEEDED, CANCELLED or FAILED).
    Completed {
        target: &'static str,
        state: JobState,
    },
    /// A failed attempt recorded for a retry.
    Retried {
        target: &'static str,
        class: &'static str,
    },
    DeadLettered {
        class: &'a str,
    },
    /// An invocation record read: `recorded`, `stale` (a duplicate, or the job was claimed
    /// again) or `malformed`.
    Record {
        result: &'static str,
    },
}

impl<B: Backends> Engine<B> {
    /// Records `n` in the report, the metrics and the history log.
    pub(super) fn note(&self, n: Noted<'_>) {
        let s = &self.stats;
        let history = |job: &str, fence: u64, event: HistoryEvent<'_>| {
            self.history.record(self.clock.now_ms(), job, fence, event)
        };
        match n {
            Noted::Received => {
                Stats::bump(&s.received);
                metrics::counter!(fm::MESSAGES_RECEIVED).increment(1);
            }
            Noted::Malformed => Stats::bump(&s.malformed),
            Noted::Deferred { state } => {
                Stats::bump(&s.deferred);
                metrics::counter!(fm::CLAIM_CONFLICTS, "state" => state.as_str()).increment(1);
            }
            Noted::Obsolete { state } => {
                Stats::bump(&s.obsolete);
                metrics::counter!(fm::CLAIM_CONFLICTS, "state" => state.as_str()).increment(1);
            }
            Noted::Claimed {
                job,
                fence,
                attempt,
            } => {
                Stats::bump(&s.claimed);
                metrics::counter!(fm::JOBS_CLAIMED).increment(1);
                history(job, fence, HistoryEvent::Claim { attempt });
            }
            Noted::Adopted {
                job,
                fence,
                attempt,
            } => {
                Stats::bump(&s.adopted);
                metrics::counter!(fm::SWEEPER_ADOPTED).increment(1);
                history(job, fence, HistoryEvent::Adopt { attempt });
            }
            Noted::Dispatched {
                job,
                fence,
                attempt,
                target,
            } => {
                metrics::counter!(fm::JOBS_DISPATCHED, "target" => target.as_str()).increment(1);
                history(job, fence, HistoryEvent::Dispatch { attempt, target });
            }
            Noted::TaskHandedOff => Stats::bump(&s.handed_off),
            Noted::HandedToLambda {
                job,
                fence,
                invocation,
            } => {
                Stats::bump(&s.handed_off);
                history(
                    job,
                    fence,
                    HistoryEvent::HandOff {
                        invocation: invocation.into(),
                    },
                );
            }
            Noted::RecordReceived {
                job,
                fence,
                invocation,
            } => history(
                job,
                fence,
                HistoryEvent::Record {
                    invocation: invocation.into(),
                },
            ),
            Noted::Written { job, fence, state } => {
                let event = if state.is_terminal() {
                    HistoryEvent::Terminal { state }
                } else {
                    HistoryEvent::Retry { state }
                };
                history(job, fence, event);
            }
            Noted::CancelledWaiting { job } => {
                Stats::bump(&s.cancelled);
                history(
                    job,
                    0,
                    HistoryEvent::Terminal {
                        state: JobState::Cancelled,
                    },
                );
            }
            Noted::Stale {
                job,
                fence,
                op,
                state,
            } => {
                metrics::counter!(fm::STALE_WRITES_REJECTED).increment(1);
                history(
                    job,
                    fence,
                    HistoryEvent::Stale {
                        op: op.into(),
                        state,
                    },
                );
            }
            Noted::LeaseLost => {
                Stats::bump(&s.leases_lost);
                metrics::counter!(fm::LEASES_LOST).increment(1);
            }
            Noted::LeaseExpired { job, fence } => history(job, fence, HistoryEvent::LeaseExpired),
            Noted::Released { job, fence } => {
                Stats::bump(&s.released);
                metrics::counter!(fm::JOBS_RELEASED).increment(1);
                history(job, fence, HistoryEvent::Release);
            }
            Noted::Requeued { job, fence, state } => {
                Stats::bump(&s.requeued);
                metrics::counter!(fm::SWEEPER_REQUEUED).increment(1);
                history(job, fence, HistoryEvent::Requeue { state });
            }
            Noted::LedgerError => {
                Stats::bump(&s.ledger_errors);
                metrics::counter!(fm::LEDGER_ERRORS).increment(1);
            }
            Noted::ResentDelayed => Stats::bump(&s.resent_delayed),
            Noted::Throttled { target } => {
                Stats::bump(&s.throttled);
                metrics::counter!(fm::THROTTLES, "target" => target).increment(1);
            }
            Noted::Completed { target, state } => {
                let (counter, outcome) = match state {
                    JobState::Succeeded => (&s.succeeded, "succeeded"),
                    JobState::Cancelled => (&s.cancelled, "cancelled"),
                    _ => (&s.failed, "failed"),
                };
                Stats::bump(counter);
                metrics::counter!(fm::JOBS_COMPLETED, "target" => target, "outcome" => outcome)
                    .increment(1);
            }
            Noted::Retried { target, class } => {
                Stats::bump(&s.retried);
                metrics::counter!(fm::RETRIES, "target" => target, "error_class" => class)
                    .increment(1);
            }
            Noted::Record { result } => {
                metrics::counter!(fm::INVOCATION_RECORDS, "result" => result).increment(1);
            }
            Noted::DeadLettered { class } => {
                Stats::bump(&s.dead_lettered);
                metrics::counter!(fm::DEAD_LETTERED, "error_class" => class.to_owned())
                    .increment(1);
            }
        }
    }
}
