//! A request's results, a page at a time: one line per finished job, a succeeded job's
//! result (inline on its lean item, else from its result item, and fetched from S3 when the
//! ledger keeps only its reference) and a failed job's error. A page is one pass of the
//! request's job listing, so reading every result holds one page in memory whatever the
//! request's size.

use fleet_shared::ids::JobId;
use fleet_shared::ledger::item::{self, ResultAt};
use fleet_shared::ledger::{JobDetail, LedgerError, Page, RequestLedger};
use fleet_shared::queue::JobQueue;
use fleet_shared::state::JobState;
use serde::Serialize;

use crate::{Producer, ProducerError, RequestError};

/// One finished job's line in a request's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultLine {
    pub job_id: String,
    pub index: u32,
    pub state: JobState,
    pub attempts: u32,
    /// What a succeeded job returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why a failed job failed: its error class and last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The states `results` lists: the final ones.
pub fn is_result_state(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// A page of the request's results: its finished jobs (only those in `state` when
    /// given, which must be a final state) in ledger order. A page may hold fewer than
    /// `limit` lines (unfinished jobs are left out); `next` is `None` after the last.
    pub async fn results_page(
        &self,
        request_id: &str,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ResultLine>, ProducerError> {
        if let Some(s) = state
            && !is_result_state(s)
        {
            return Err(ProducerError::Invalid(RequestError::Field {
                field: "state".into(),
                reason: format!("{s} is not a final state (SUCCEEDED, FAILED or CANCELLED)"),
            }));
        }
        // FAILED ones come from the failed index, which holds their errors.
        let (page, shards) = self
            .job_details(request_id, state == Some(JobState::Failed), cursor, limit)
            .await?;
        let mut items = Vec::new();
        for j in page
            .items
            .iter()
            .filter(|j| is_result_state(j.state) && state.is_none_or(|s| s == j.state))
        {
            items.push(self.result_line(j, shards).await?);
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }

    async fn result_line(&self, j: &JobDetail, shards: u32) -> Result<ResultLine, ProducerError> {
        let text = match &j.result {
            ResultAt::None => None,
            ResultAt::Inline(r) => Some(r.clone()),
            ResultAt::Item(_) => {
                let job = JobId::parse(&j.job_id).map_err(|e| LedgerError::Malformed {
                    key: j.job_id.clone(),
                    message: e.to_string(),
                })?;
                self.ledger.result(&item::job_key(&job, shards)).await?
            }
        };
        let result = match text {
            Some(t) => {
                let bytes = self.result_bytes(t).await?;
                Some(serde_json::from_slice(&bytes).map_err(|e| {
                    ProducerError::Storage(format!(
                        "job {}'s recorded result is not JSON: {e}",
                        j.job_id
                    ))
                })?)
            }
            None => None,
        };
        Ok(ResultLine {
            job_id: j.job_id.clone(),
            index: j.index,
            state: j.state,
            attempts: j.attempts,
            result: (j.state == JobState::Succeeded).then(|| result.unwrap_or_default()),
            error_class: j.error_class.map(|c| c.as_str().to_owned()),
            error: j.last_error.clone(),
        })
    }

    /// A recorded result's bytes: the S3 object when the ledger keeps only its reference.
    pub(crate) async fn result_bytes(&self, text: String) -> Result<Vec<u8>, ProducerError> {
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        match fleet_shared::claim_check::result_reference_in(&value) {
            None => Ok(text.into_bytes()),
            Some(r) => {
                let r = r.map_err(|e| ProducerError::Storage(e.to_string()))?;
                fleet_shared::claim_check::fetch(self.s3()?, &r)
                    .await
                    .map_err(|e| ProducerError::Storage(e.to_string()))
            }
        }
    }
}
