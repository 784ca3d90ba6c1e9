//! A request's jobs a page at a time (with their attempt histories), one job, and a job's
//! result (read back from S3 when the ledger keeps only its reference).

use fleet_shared::ids::JobId;
use fleet_shared::ledger::item::{self, JobItem};
use fleet_shared::ledger::{History, JobDetail, LedgerError, Page, RequestLedger};
use fleet_shared::queue::JobQueue;
use fleet_shared::state::JobState;
use serde::Serialize;

use crate::{Producer, ProducerError, RequestError};

/// One job as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub state: JobState,
    pub attempts: u32,
    /// Where the last attempt ran, and why.
    pub target: Option<fleet_shared::message::Target>,
    pub reason: Option<fleet_shared::message::RouteReason>,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    pub task: Option<String>,
    /// The attempts, oldest first (failed ones with their whole error).
    pub history: Vec<fleet_shared::ledger::HistoryEntry>,
    /// Older attempts no longer kept.
    pub older_attempts: u64,
}

impl JobView {
    fn new(j: &JobDetail, history: History) -> Self {
        let last = j.last.as_ref();
        JobView {
            job_id: j.job_id.clone(),
            state: j.state,
            attempts: j.attempts,
            target: last.map(|l| l.target),
            reason: last.map(|l| l.reason),
            error_class: j.error_class.map(|c| c.as_str().to_owned()),
            last_error: j.last_error.clone(),
            task: j.task.clone(),
            history: history.attempts,
            older_attempts: history.older,
        }
    }
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// A page of a request's jobs (`state`: only those; FAILED ones come from the failed
    /// index, other states are filtered from the page, which may then hold fewer). Jobs come
    /// in ledger order (by partition, then index). `history`: read each listed job's
    /// history too (a read per job that has more than one attempt or failed).
    pub async fn jobs_page(
        &self,
        request_id: &str,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: usize,
        history: bool,
    ) -> Result<Page<JobView>, ProducerError> {
        let (page, shards) = self
            .job_details(request_id, state == Some(JobState::Failed), cursor, limit)
            .await?;
        let picked: Vec<&JobDetail> = page
            .items
            .iter()
            .filter(|j| state.is_none_or(|s| s == j.state))
            .collect();
        let mut views = Vec::with_capacity(picked.len());
        for j in picked {
            let needs = history
                && (j.attempts > 1 || j.state == JobState::Failed || j.state == JobState::Retrying);
            let h = if needs {
                let job = JobId::parse(&j.job_id).map_err(|e| LedgerError::Malformed {
                    key: j.job_id.clone(),
                    message: e.to_string(),
                })?;
                self.ledger
                    .job_history(&item::job_key(&job, shards))
                    .await?
            } else {
                History {
                    attempts: j
                        .last
                        .iter()
                        .map(|r| fleet_shared::ledger::HistoryEntry {
                            record: r.clone(),
                            error: None,
                        })
                        .collect(),
                    older: 0,
                }
            };
            views.push(JobView::new(j, h));
        }
        Ok(Page {
            items: views,
            next: page.next,
        })
    }

    /// A page of the request's job items in ledger order (of its failed index with
    /// `failed_only`), and its job shards. Not found when the request has neither a request
    /// item nor jobs (jobs sent straight to SQS have no request item).
    pub(crate) async fn job_details(
        &self,
        request_id: &str,
        failed_only: bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Page<JobDetail>, u32), ProducerError> {
        let (shards, exists) = self.job_shards(request_id).await?;
        let page = if failed_only {
            self.ledger.failed_page(request_id, cursor, limit).await
        } else {
            self.ledger
                .jobs_page(request_id, shards, cursor, limit)
                .await
        }
        .map_err(|e| match e {
            LedgerError::Malformed { key, message } if key == "cursor" => {
                ProducerError::Invalid(RequestError::Field {
                    field: "cursor".into(),
                    reason: message,
                })
            }
            e => e.into(),
        })?;
        if !exists && cursor.is_none() && page.items.is_empty() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        Ok((page, shards))
    }

    /// A job's lean item and payload.
    pub async fn job(&self, job: &JobId) -> Result<Option<(JobItem, String)>, ProducerError> {
        let (shards, _) = self.job_shards(job.request_id()).await?;
        Ok(self.ledger.job(&item::job_key(job, shards)).await?)
    }

    /// A succeeded job's result (JSON text), read from S3 when the ledger keeps only its
    /// reference.
    pub async fn result(&self, job_id: &str) -> Result<Option<Vec<u8>>, ProducerError> {
        let job = JobId::parse(job_id).map_err(|e| {
            ProducerError::Invalid(RequestError::Field {
                field: "job_id".into(),
                reason: e.to_string(),
            })
        })?;
        let (shards, _) = self.job_shards(job.request_id()).await?;
        let Some(text) = self.ledger.result(&item::job_key(&job, shards)).await? else {
            return Ok(None);
        };
        Ok(Some(self.result_bytes(text).await?))
    }
}
