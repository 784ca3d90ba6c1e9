//! What a change or an owned write does to a job's item, under the same conditions as
//! DynamoDB's.

use crate::ledger::item::{
    self, JobItem, ResultAt, SHORT_ERROR_BYTES, clip_bytes, due_for, encode_job,
};
use crate::ledger::{Change, Finish, Lease, LedgerError};
use crate::state::{JobState, transition};

use super::*;

impl MemoryLedger {
    /// The item a change leaves, or why it cannot apply.
    pub(super) fn applied(&self, st: &Store, change: &Change) -> Result<JobItem, LedgerError> {
        let key = change.key();
        let Some(j) = st.jobs.get(key) else {
            return match change {
                Change::Finish { lease, .. } | Change::Release { lease, .. } => Err(stale(lease)),
                _ => Err(LedgerError::Stale {
                    job: change.job().to_string(),
                    fence: 0,
                }),
            };
        };
        let mut j = j.clone();
        match change {
            Change::Finish {
                lease,
                finish,
                record,
            } => {
                if !owns(&j, lease) {
                    return Err(stale(lease));
                }
                transition(JobState::Running, finish.state())?;
                let ended = record.ended_ms;
                j.state = finish.state();
                j.owner = None;
                j.lease_until_ms = None;
                j.retry_at_ms = None;
                j.duration_ms = Some(ended.saturating_sub(record.started_ms));
                j.last = Some(record.clone());
                match finish {
                    Finish::Succeeded { result } => {
                        j.finished_at_ms = Some(ended);
                        j.due = None;
                        j.retry_debt = false;
                        j.last_error = None;
                        j.error_class = None;
                        j.result = match result {
                            None => ResultAt::None,
                            Some(r) if item::result_inline(lease.item_bytes, r) => {
                                ResultAt::Inline(r.clone())
                            }
                            Some(_) => ResultAt::Item(lease.fence),
                        };
                        j.expires_at = self.expiry(ended);
                    }
                    Finish::Retry {
                        class,
                        error,
                        retry_at_ms,
                        refund,
                    } => {
                        j.retry_at_ms = Some(*retry_at_ms);
                        j.due =
                            due_for(&j.job, JobState::Retrying, *retry_at_ms, self.index_shards);
                        j.last_error = Some(clip_bytes(error, SHORT_ERROR_BYTES));
                        j.error_class = Some(*class);
                        j.retry_debt = true;
                        if *refund {
                            j.attempts = j.attempts.saturating_sub(1);
                        }
                    }
                    Finish::Failed { class, error } => {
                        j.finished_at_ms = Some(ended);
                        j.due = None;
                        j.retry_debt = false;
                        j.failed = true;
                        j.last_error = Some(clip_bytes(error, SHORT_ERROR_BYTES));
                        j.error_class = Some(*class);
                        j.expires_at = self.expiry(ended);
                    }
                    Finish::Cancelled => {
                        j.finished_at_ms = Some(ended);
                        j.due = None;
                        j.retry_debt = false;
                        j.expires_at = self.expiry(ended);
                    }
                }
            }
            Change::Release { lease, now_ms } => {
                if !owns(&j, lease) {
                    return Err(stale(lease));
                }
                transition(JobState::Running, JobState::Retrying)?;
                j.state = JobState::Retrying;
                j.attempts = j.attempts.saturating_sub(1);
                j.owner = None;
                j.lease_until_ms = None;
                j.retry_at_ms = None;
                j.task = None;
                j.retry_debt = true;
                j.due = due_for(&j.job, JobState::Retrying, *now_ms, self.index_shards);
            }
            Change::CancelWaiting { from, now_ms, .. } => {
                if j.state != *from {
                    return Err(LedgerError::Stale {
                        job: j.job.to_string(),
                        fence: j.fence,
                    });
                }
                transition(*from, JobState::Cancelled)?;
                j.state = JobState::Cancelled;
                j.finished_at_ms = Some(*now_ms);
                j.due = None;
                j.retry_at_ms = None;
                j.retry_debt = false;
                j.expires_at = self.expiry(*now_ms);
            }
            Change::Redrive {
                fence,
                budget,
                target,
                now_ms,
                ..
            } => {
                if j.state != JobState::Failed || j.fence != *fence {
                    return Err(LedgerError::Stale {
                        job: j.job.to_string(),
                        fence: *fence,
                    });
                }
                transition(JobState::Failed, JobState::Pending)?;
                j.state = JobState::Pending;
                j.max_attempts = Some(j.attempts + budget);
                j.due = due_for(&j.job, JobState::Pending, *now_ms, self.index_shards);
                if target.is_some() {
                    j.target = *target;
                }
                j.finished_at_ms = None;
                j.failed = false;
                j.expires_at = None;
                j.requeued_at_ms = None;
            }
        }
        Ok(j)
    }

    pub(super) fn owned_update(
        &self,
        op: &'static str,
        lease: &Lease,
        f: impl FnOnce(&mut JobItem),
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get(&lease.key).cloned() else {
            return Err(stale(lease));
        };
        let old_item = encode_job(&j);
        if !owns(&j, lease) {
            self.refused_write(op, &lease.key.pk, &old_item)?;
            return Err(stale(lease));
        }
        let mut new = j;
        f(&mut new);
        let new_item = encode_job(&new);
        self.check_size(op, &lease.key, &new_item)?;
        self.write(
            op,
            &item_charges(&lease.key.pk, Some(&old_item), Some(&new_item), 1.0),
        )?;
        st.put_job(new);
        Ok(())
    }
}
