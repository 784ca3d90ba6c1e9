//! State changes that move a request's counts, and the one rule of how they move them.

use super::*;
use crate::ids::JobId;
use crate::message::Target;

/// A state change that moves a request's counts, committed with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An attempt's outcome (needs the lease).
    Finish {
        lease: Lease,
        finish: Finish,
        record: AttemptRecord,
    },
    /// Gives an unfinished attempt back (shutdown, or a lease that ran out unrenewed):
    /// RETRYING, claimable at once, the attempt not counted.
    Release { lease: Lease, now_ms: u64 },
    /// A job that has not started (PENDING, or RETRYING and waiting) → CANCELLED.
    CancelWaiting {
        job: JobId,
        key: ItemKey,
        from: JobState,
        now_ms: u64,
    },
    /// FAILED → PENDING with `budget` more attempts than it used (an operator's redrive);
    /// `fence` is the fence the caller read (the write holds only if nobody moved the job).
    Redrive {
        job: JobId,
        key: ItemKey,
        fence: u64,
        budget: u32,
        target: Option<Target>,
        now_ms: u64,
    },
}

/// How a change moves its request's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Jobs waiting for, or running, an attempt after a retry.
    pub retrying: i64,
    /// Attempts recorded (a throttled attempt refunded is not one).
    pub attempts: i64,
    /// What the attempts recorded cost, in billionths of a US dollar.
    pub cost_nusd: i64,
    /// Of the attempts, those that ran on Lambda and on ECS.
    pub lambda_attempts: i64,
    pub ecs_attempts: i64,
}

impl Delta {
    pub fn is_zero(&self) -> bool {
        *self == Delta::default()
    }

    pub fn add(&mut self, o: &Delta) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.retrying += o.retrying;
        self.attempts += o.attempts;
        self.cost_nusd += o.cost_nusd;
        self.lambda_attempts += o.lambda_attempts;
        self.ecs_attempts += o.ecs_attempts;
    }
}

impl Change {
    pub fn job(&self) -> &JobId {
        match self {
            Change::Finish { lease, .. } | Change::Release { lease, .. } => &lease.job,
            Change::CancelWaiting { job, .. } | Change::Redrive { job, .. } => job,
        }
    }

    pub fn key(&self) -> &ItemKey {
        match self {
            Change::Finish { lease, .. } | Change::Release { lease, .. } => &lease.key,
            Change::CancelWaiting { key, .. } | Change::Redrive { key, .. } => key,
        }
    }

    /// The state the job is left in.
    pub fn state(&self) -> JobState {
        match self {
            Change::Finish { finish, .. } => finish.state(),
            Change::Release { .. } => JobState::Retrying,
            Change::CancelWaiting { .. } => JobState::Cancelled,
            Change::Redrive { .. } => JobState::Pending,
        }
    }

    /// Whether the change appends to the job's history item.
    pub fn writes_history(&self) -> bool {
        matches!(
            self,
            Change::Finish {
                finish: Finish::Retry { .. } | Finish::Failed { .. },
                ..
            }
        )
    }

    /// How the change moves the request's counters: one pure rule for both ledgers.
    ///
    /// A job is counted RETRYING from the write that schedules a retry (or releases it)
    /// until the write that ends the attempt after it; a terminal state is counted once, by
    /// the write that enters it, and a redrive takes a FAILED job out of the failed count.
    pub fn delta(&self) -> Delta {
        let mut d = Delta::default();
        match self {
            Change::Finish {
                lease,
                finish,
                record,
            } => {
                d.cost_nusd = record.usage.map_or(0, |u| u.cost_nusd as i64);
                let debt = i64::from(lease.after_retry);
                match finish {
                    Finish::Succeeded { .. } => {
                        d.succeeded = 1;
                        d.attempts = 1;
                        d.retrying = -debt;
                    }
                    Finish::Failed { .. } => {
                        d.failed = 1;
                        d.attempts = 1;
                        d.retrying = -debt;
                    }
                    Finish::Cancelled => {
                        d.cancelled = 1;
                        d.attempts = 1;
                        d.retrying = -debt;
                    }
                    Finish::Retry { refund, .. } => {
                        d.attempts = i64::from(!refund);
                        d.retrying = 1 - debt;
                    }
                }
                match record.target {
                    Target::Lambda => d.lambda_attempts = d.attempts,
                    Target::Ecs => d.ecs_attempts = d.attempts,
                    // An attempt runs on a resolved target; `auto` is never recorded.
                    Target::Auto => {}
                }
            }
            Change::Release { lease, .. } => d.retrying = 1 - i64::from(lease.after_retry),
            Change::CancelWaiting { from, .. } => {
                d.cancelled = 1;
                d.retrying = -i64::from(*from == JobState::Retrying);
            }
            Change::Redrive { .. } => d.failed = -1,
        }
        d
    }
}
