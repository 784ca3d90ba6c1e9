//! A request's progress, read from its request item and counters: a bounded number of reads
//! whatever its size; and the recount that repairs the counters from the job items.

use std::collections::BTreeMap;

use fleet_shared::ledger::memory::DIRECT_JOB_SHARDS;
use fleet_shared::ledger::{
    Counts, RequestFailure, RequestLedger, RequestRecord, request_state, window,
};
use fleet_shared::queue::JobQueue;
use fleet_shared::state::JobState;
use serde::Serialize;

use crate::{Producer, ProducerError};

/// A request's progress, from its counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub request_id: String,
    pub total: u32,
    /// Jobs per state; every state is listed. SUCCEEDED, FAILED and CANCELLED are exact;
    /// RUNNING comes from the replicas' reports (up to 10 seconds old); RETRYING counts the
    /// jobs waiting for their next attempt; PENDING is the rest (not started yet).
    pub states: BTreeMap<String, u32>,
    /// Every job is in a terminal state.
    pub done: bool,
    /// Attempts recorded over all jobs.
    pub attempts: u64,
    /// When the request was cancelled, if it was (a request that failed as a whole is
    /// cancelled too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at_ms: Option<u64>,
    /// Failed jobs the request tolerates before it fails as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerated_failures: Option<u32>,
    /// Set when the request failed as a whole: when, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<RequestFailure>,
    /// The request as a whole: `FAILED` (over its tolerated failures), `CANCELLED`,
    /// `FINISHED` (every job terminal) or `RUNNING`.
    pub state: &'static str,
    /// Most of its jobs released and not finished at a time (its window: its
    /// `max_concurrency`, or the fleet's `limits.window`); absent when all its messages were
    /// sent at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Jobs released to the queue so far (the others wait in the ledger); with a window only.
    /// A cancelled request's jobs never released count as CANCELLED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<u32>,
    /// Whom it runs for: its `tenant`, else its request id.
    pub tenant: String,
    /// Its job type (absent for jobs sent straight to the queue, without a request item).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// When it was submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<u64>,
    /// Its attempts per target: where its jobs ran.
    pub attempts_by_target: ByTarget,
    /// When a replica found every job terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// When its completion event was sent (and its results exported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notified_at_ms: Option<u64>,
    /// `s3://` of its results' manifest, exported when it finished
    /// (`options.results.s3_prefix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<String>,
    /// Its estimated cost so far, at the configured `[prices]`: what its recorded attempts
    /// used, and the ledger and queue requests of its finished jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<fleet_shared::config::CostEstimate>,
}

/// Attempts per target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByTarget {
    pub lambda: u64,
    pub ecs: u64,
}

impl Status {
    pub fn count(&self, state: JobState) -> u32 {
        self.states.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Jobs in a terminal state.
    pub fn finished(&self) -> u32 {
        JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| self.count(s))
            .sum()
    }

    /// The status of a request (`None`: no request item, its jobs were sent straight to SQS
    /// and its total is the jobs seen) from its counts.
    pub fn from_counts(request_id: &str, request: Option<&RequestRecord>, c: &Counts) -> Self {
        let total = request.map(|r| r.total);
        let n = |v: i64| v.max(0) as u32;
        let finished = n(c.succeeded) + n(c.failed) + n(c.cancelled);
        let running = n(c.running);
        // Jobs after a retry that run now are in the running count.
        let retrying = n(c.retrying - c.running_after_retry);
        let total = total.unwrap_or(finished + running + retrying);
        // A cancelled request's jobs that never had a message will never be claimed.
        let never = request.map_or(0, window::never_released);
        let cancelled = n(c.cancelled) + never;
        let finished = finished + never;
        let pending = total.saturating_sub(finished + running + retrying);
        let mut states = BTreeMap::new();
        for (s, v) in [
            (JobState::Pending, pending),
            (JobState::Running, running),
            (JobState::Retrying, retrying),
            (JobState::Succeeded, n(c.succeeded)),
            (JobState::Failed, n(c.failed)),
            (JobState::Cancelled, cancelled),
        ] {
            states.insert(s.as_str().to_owned(), v);
        }
        let done = total > 0 && finished >= total;
        let failed = request.and_then(|r| r.failed.clone());
        let cancelled_at_ms = request.and_then(|r| r.cancelled_at_ms);
        let state = request_state(failed.is_some(), cancelled_at_ms.is_some(), done);
        Status {
            request_id: request_id.to_owned(),
            total,
            states,
            done,
            attempts: c.attempts.max(0) as u64,
            cancelled_at_ms,
            tolerated_failures: request.and_then(|r| r.tolerated_failures),
            failed,
            state,
            max_concurrency: request.and_then(|r| r.window),
            released: request.and_then(|r| r.window.map(|_| r.released)),
            tenant: request
                .and_then(|r| r.tenant.clone())
                .unwrap_or_else(|| request_id.to_owned()),
            job_type: request.map(|r| r.job_type.clone()),
            created_at_ms: request.map(|r| r.created_at_ms),
            attempts_by_target: ByTarget {
                lambda: c.lambda_attempts.max(0) as u64,
                ecs: c.ecs_attempts.max(0) as u64,
            },
            finished_at_ms: request.and_then(|r| r.completion.finished_at_ms),
            notified_at_ms: request.and_then(|r| r.completion.notified_at_ms),
            results: request.and_then(|r| r.completion.manifest.clone()),
            cost: None,
        }
    }
}

/// The states a listing filters by.
pub const REQUEST_STATES: [&str; 4] = ["RUNNING", "FINISHED", "FAILED", "CANCELLED"];
/// Most requests a page lists.
pub const MAX_LIST: usize = 100;
/// Most requests one filtered page reads.
pub const LIST_SCAN: usize = 500;

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// A request's progress: its request item and counter items, a bounded number of reads
    /// whatever the number of jobs.
    pub async fn status(&self, request_id: &str) -> Result<Status, ProducerError> {
        let mut request = self.ledger.get_request(request_id).await?;
        let counts = self
            .ledger
            .counts(request_id, fleet_shared::time::now_ms())
            .await?;
        if request.is_none() && counts == Counts::default() && !self.has_jobs(request_id).await? {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        // Every released job finished and none released after: a replica stopped between
        // recording the last finish and releasing. Released now (never in the normal run,
        // where a status call is only reads).
        if let Some(r) = &request
            && window::stalled(r, window::out_of_window(r, &counts))
        {
            match self.release(request_id).await {
                Ok(0) => {}
                Ok(_) => request = self.ledger.get_request(request_id).await?,
                // The status is what was asked for; the next call tries the release again.
                Err(e) => {
                    tracing::warn!(%request_id, error = %e, "could not release the stalled request's next jobs")
                }
            }
        }
        let mut status = Status::from_counts(request_id, request.as_ref(), &counts);
        status.cost = Some(
            self.config
                .prices
                .estimate(counts.cost_nusd, u64::from(status.finished())),
        );
        Ok(status)
    }

    /// A page of requests, newest first, each with its status; with `state`, only those in
    /// that state (`RUNNING`, `FINISHED`, `FAILED`, `CANCELLED`). A filtered page reads
    /// up to [`LIST_SCAN`] requests and may hold fewer than `limit` with a `next` cursor:
    /// the listing goes on from there.
    pub async fn requests(
        &self,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<fleet_shared::ledger::Page<Status>, ProducerError> {
        if let Some(s) = state
            && !REQUEST_STATES.contains(&s)
        {
            return Err(ProducerError::Invalid(crate::RequestError::Field {
                field: "state".into(),
                reason: format!(
                    "{s:?} is not a request state (one of {})",
                    REQUEST_STATES.join(", ")
                ),
            }));
        }
        let limit = limit.clamp(1, MAX_LIST);
        let mut items = Vec::new();
        let mut cursor = cursor.map(str::to_owned);
        let mut scanned = 0;
        loop {
            let want = if state.is_some() {
                MAX_LIST
            } else {
                limit - items.len()
            };
            let page = self.ledger.requests_page(cursor.as_deref(), want).await?;
            let read = page.items.len();
            for (i, id) in page.items.into_iter().enumerate() {
                scanned += 1;
                let status = match self.status(&id).await {
                    Ok(s) => s,
                    // Gone between the listing and the read (expired by TTL).
                    Err(ProducerError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let at = fleet_shared::ledger::item::request_list_at(
                    status.created_at_ms.unwrap_or(0),
                    &id,
                );
                if state.is_none_or(|s| s == status.state) {
                    items.push(status);
                }
                if items.len() == limit {
                    let more = i + 1 < read || page.next.is_some();
                    return Ok(fleet_shared::ledger::Page {
                        items,
                        next: more.then_some(at),
                    });
                }
            }
            match page.next {
                Some(next) if scanned < LIST_SCAN => cursor = Some(next),
                next => return Ok(fleet_shared::ledger::Page { items, next }),
            }
        }
    }

    /// A request's throughput: its jobs finished per 10-second bucket, from `since_ms`.
    pub async fn throughput(
        &self,
        request_id: &str,
        since_ms: u64,
    ) -> Result<Vec<fleet_shared::ledger::ThroughputPoint>, ProducerError> {
        if self.ledger.get_request(request_id).await?.is_none() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        Ok(self.ledger.throughput(request_id, since_ms).await?)
    }

    /// Whether a request without a request item has job items (its jobs were sent straight
    /// to SQS and claimed, but none has an outcome yet): a page of one item per partition.
    async fn has_jobs(&self, request_id: &str) -> Result<bool, ProducerError> {
        let page = self
            .ledger
            .jobs_page(request_id, DIRECT_JOB_SHARDS, None, 1)
            .await?;
        Ok(!page.items.is_empty())
    }

    /// Counts the request's jobs from their items (reads every item: a repair, not a
    /// progress display), corrects its counters by the difference, and returns the status.
    /// Exact once the request has no job in flight; while jobs finish during the recount,
    /// those may be counted twice or not at all (run it again once the request is done).
    pub async fn recount(&self, request_id: &str) -> Result<Status, ProducerError> {
        let (shards, exists) = self.job_shards(request_id).await?;
        let counted = self.ledger.recount(request_id, shards).await?;
        if !exists && counted == Counts::default() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        self.status(request_id).await
    }
}
