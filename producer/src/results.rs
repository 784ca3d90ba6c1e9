//! A request's results, a page at a time (see [`fleet_shared::results`]).

use fleet_shared::ledger::{Page, RequestLedger};
use fleet_shared::queue::JobQueue;
pub use fleet_shared::results::{ResultLine, is_result_state};
use fleet_shared::state::JobState;

use crate::{Producer, ProducerError, RequestError};

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
        let items = fleet_shared::results::lines(
            &self.ledger,
            self.s3.as_ref(),
            &page.items,
            shards,
            state,
        )
        .await?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// A recorded result's bytes: the S3 object when the ledger keeps only its reference.
    pub(crate) async fn result_bytes(&self, text: String) -> Result<Vec<u8>, ProducerError> {
        Ok(fleet_shared::results::result_bytes(self.s3.as_ref(), text).await?)
    }
}
