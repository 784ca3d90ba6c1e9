//! The ledger in memory, with the same conditional rules as [`super::dynamo::DynamoLedger`]:
//! for unit tests of the engine and for benchmarks. Not for production: it lives and dies
//! with one process.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    Adopted, AttemptRecord, Claim, ClaimRequest, Expired, Finish, JobSummary, Lease, Ledger,
    LedgerError, Requeue, lease_shard,
};
use crate::ids::JobId;
use crate::state::{JobState, transition};

/// A job item as the in-memory ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemJob {
    pub job_type: String,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    pub fence: u64,
    pub owner: Option<String>,
    pub lease_until_ms: Option<u64>,
    pub retry_at_ms: Option<u64>,
    pub payload_json: String,
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub history: Vec<AttemptRecord>,
    pub task: Option<String>,
    pub enqueued_at_ms: u64,
    pub target: Option<crate::message::Target>,
    pub requeued_at_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct MemoryLedger {
    jobs: Mutex<HashMap<String, MemJob>>,
    durations: Mutex<HashMap<String, Vec<u64>>>,
    /// While set, heartbeats fail as an unreachable table would (tests of lease expiry).
    failing_heartbeats: std::sync::atomic::AtomicBool,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes heartbeats fail (or succeed again) as if the table could not be reached.
    pub fn fail_heartbeats(&self, fail: bool) {
        self.failing_heartbeats
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes a PENDING job as the producer would (due since `now_ms`).
    pub fn insert_pending(&self, job: &JobId, job_type: &str, payload_json: &str, now_ms: u64) {
        self.lock().insert(
            job.to_string(),
            MemJob {
                job_type: job_type.to_owned(),
                state: JobState::Pending,
                attempts: 0,
                max_attempts: None,
                fence: 0,
                owner: None,
                lease_until_ms: Some(now_ms),
                retry_at_ms: None,
                payload_json: payload_json.to_owned(),
                result: None,
                last_error: None,
                history: Vec::new(),
                task: None,
                enqueued_at_ms: now_ms,
                target: None,
                requeued_at_ms: None,
            },
        );
    }

    /// A copy of a job's item.
    pub fn get(&self, job_id: &str) -> Option<MemJob> {
        self.lock().get(job_id).cloned()
    }

    /// Every job's state and attempts, in no particular order.
    pub fn summaries(&self) -> Vec<(String, JobSummary)> {
        self.lock()
            .iter()
            .map(|(id, j)| {
                let index = id
                    .rsplit_once(':')
                    .and_then(|(_, i)| i.parse().ok())
                    .unwrap_or(0);
                (
                    id.clone(),
                    JobSummary {
                        index,
                        state: j.state,
                        attempts: j.attempts,
                    },
                )
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemJob>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owned<T>(&self, lease: &Lease, f: impl FnOnce(&mut MemJob) -> T) -> Result<T, LedgerError> {
        let mut jobs = self.lock();
        match jobs.get_mut(&lease.job.to_string()) {
            Some(j)
                if j.state == JobState::Running
                    && j.owner.as_deref() == Some(lease.owner.as_str())
                    && j.fence == lease.fence =>
            {
                Ok(f(j))
            }
            _ => Err(LedgerError::Stale {
                job: lease.job.to_string(),
                fence: lease.fence,
            }),
        }
    }
}

impl Ledger for MemoryLedger {
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
        let mut jobs = self.lock();
        let j = jobs.entry(req.job.to_string()).or_insert_with(|| MemJob {
            job_type: req.job_type.to_owned(),
            state: JobState::Pending,
            attempts: 0,
            max_attempts: req.max_attempts,
            fence: 0,
            owner: None,
            lease_until_ms: None,
            retry_at_ms: None,
            payload_json: req.payload_json.to_owned(),
            result: None,
            last_error: None,
            history: Vec::new(),
            task: None,
            enqueued_at_ms: req.enqueued_at_ms,
            target: None,
            requeued_at_ms: None,
        });
        let claimable = match j.state {
            JobState::Pending | JobState::Retrying => j.retry_at_ms.is_none_or(|t| t <= req.now_ms),
            JobState::Running => j
                .lease_until_ms
                .is_some_and(|t| t < req.now_ms.saturating_sub(req.skew_ms)),
            _ => false,
        };
        if !claimable {
            return Ok(match j.state {
                st if st.is_terminal() => Claim::Finished {
                    state: st,
                    last_error: j.last_error.clone(),
                    history: j.history.clone(),
                },
                JobState::Running => Claim::NotYet {
                    state: j.state,
                    until_ms: j.lease_until_ms.unwrap_or(req.now_ms) + req.skew_ms,
                },
                st => Claim::NotYet {
                    state: st,
                    until_ms: j.retry_at_ms.unwrap_or(req.now_ms),
                },
            });
        }
        j.state = transition(j.state, JobState::Running)?;
        j.owner = Some(req.owner.to_owned());
        j.lease_until_ms = Some(req.now_ms + req.lease_ms);
        j.fence += 1;
        j.attempts += 1;
        j.retry_at_ms = None;
        j.task = None;
        if j.max_attempts.is_none() {
            j.max_attempts = req.max_attempts;
        }
        Ok(Claim::Claimed(Lease {
            job: req.job.clone(),
            owner: req.owner.to_owned(),
            fence: j.fence,
            attempt: j.attempts,
            max_attempts: j.max_attempts,
            started_ms: req.now_ms,
            until_ms: req.now_ms + req.lease_ms,
            target: j.target,
            previous: j.history.last().cloned(),
        }))
    }

    async fn heartbeat(&self, lease: &Lease, until_ms: u64) -> Result<(), LedgerError> {
        if self
            .failing_heartbeats
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(LedgerError::Aws {
                op: "UpdateItem",
                message: "unreachable (test)".into(),
            });
        }
        self.owned(lease, |j| j.lease_until_ms = Some(until_ms))
    }

    async fn finish(
        &self,
        lease: &Lease,
        finish: &Finish,
        record: &AttemptRecord,
    ) -> Result<Vec<AttemptRecord>, LedgerError> {
        transition(JobState::Running, finish.state())?;
        self.owned(lease, |j| {
            j.state = finish.state();
            j.owner = None;
            j.lease_until_ms = None;
            j.history.push(record.clone());
            match finish {
                Finish::Succeeded { result } => {
                    j.result = result.clone();
                    j.last_error = None;
                }
                Finish::Retry {
                    error,
                    retry_at_ms,
                    refund,
                } => {
                    j.retry_at_ms = Some(*retry_at_ms);
                    // Due (for the sweeper) once the retry time has come.
                    j.lease_until_ms = Some(*retry_at_ms);
                    j.last_error = Some(error.clone());
                    if *refund {
                        j.attempts = j.attempts.saturating_sub(1);
                    }
                }
                Finish::Failed { error } => j.last_error = Some(error.clone()),
            }
            if j.state == JobState::Failed {
                j.history.clone()
            } else {
                Vec::new()
            }
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), LedgerError> {
        transition(JobState::Running, JobState::Retrying)?;
        self.owned(lease, |j| {
            j.state = JobState::Retrying;
            j.attempts = j.attempts.saturating_sub(1);
            j.owner = None;
            j.retry_at_ms = None;
            j.task = None;
        })
    }

    async fn record_task(&self, lease: &Lease, task: &str) -> Result<(), LedgerError> {
        self.owned(lease, |j| j.task = Some(task.to_owned()))
    }

    async fn expired_leases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Expired>, LedgerError> {
        let jobs = self.lock();
        let mut out: Vec<Expired> = jobs
            .iter()
            .filter(|(_, j)| !j.state.is_terminal())
            .filter_map(|(id, j)| {
                let job = JobId::parse(id).ok()?;
                let until = j.lease_until_ms?;
                (lease_shard(&job) == shard && until < before_ms).then(|| Expired {
                    job,
                    fence: j.fence,
                    owner: j.owner.clone(),
                    lease_until_ms: until,
                    task: j.task.clone(),
                    state: j.state,
                })
            })
            .collect();
        out.sort_by_key(|e| e.lease_until_ms);
        out.truncate(limit);
        Ok(out)
    }

    async fn adopt(
        &self,
        expired: &Expired,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        skew_ms: u64,
    ) -> Result<Option<Adopted>, LedgerError> {
        let mut jobs = self.lock();
        let Some(j) = jobs.get_mut(&expired.job.to_string()) else {
            return Ok(None);
        };
        let expired_now = j
            .lease_until_ms
            .is_some_and(|u| u < now_ms.saturating_sub(skew_ms));
        let Some(task) = j.task.clone() else {
            return Ok(None);
        };
        if j.state != JobState::Running || !expired_now || j.fence != expired.fence {
            return Ok(None);
        }
        j.owner = Some(owner.to_owned());
        j.fence += 1;
        j.lease_until_ms = Some(now_ms + lease_ms);
        Ok(Some(Adopted {
            lease: Lease {
                job: expired.job.clone(),
                owner: owner.to_owned(),
                fence: j.fence,
                attempt: j.attempts,
                max_attempts: j.max_attempts,
                started_ms: now_ms,
                until_ms: now_ms + lease_ms,
                target: j.target,
                previous: j.history.last().cloned(),
            },
            job_type: j.job_type.clone(),
            payload_json: j.payload_json.clone(),
            task,
            enqueued_at_ms: j.enqueued_at_ms,
        }))
    }

    async fn requeue(
        &self,
        expired: &Expired,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> Result<Option<Requeue>, LedgerError> {
        let mut jobs = self.lock();
        let Some(j) = jobs.get_mut(&expired.job.to_string()) else {
            return Ok(None);
        };
        let state_ok = match j.state {
            JobState::Running => j.fence == expired.fence && j.task.is_none(),
            JobState::Pending | JobState::Retrying => true,
            _ => false,
        };
        let due = j.lease_until_ms.is_some_and(|u| u < due_before_ms);
        let not_recent = j
            .requeued_at_ms
            .is_none_or(|r| r < now_ms.saturating_sub(again_after_ms));
        if !(state_ok && due && not_recent) {
            return Ok(None);
        }
        j.requeued_at_ms = Some(now_ms);
        Ok(Some(Requeue {
            job: expired.job.clone(),
            state: j.state,
            job_type: j.job_type.clone(),
            payload_json: j.payload_json.clone(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            target: j.target,
        }))
    }

    async fn durations(&self, job_type: &str) -> Result<Vec<u64>, LedgerError> {
        let d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(d.get(job_type).cloned().unwrap_or_default())
    }

    async fn add_durations(
        &self,
        job_type: &str,
        samples: &[u64],
        window: usize,
    ) -> Result<(), LedgerError> {
        let mut d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let all = d.entry(job_type.to_owned()).or_default();
        all.extend_from_slice(samples);
        let keep = all.len().saturating_sub(window);
        all.drain(..keep);
        Ok(())
    }
}
