//! Changing a running request's `max_concurrency`: one write to its window; a larger window
//! releases the difference at once, a smaller one lets running jobs finish and releases
//! nothing more until fewer than the new limit run.

use fleet_shared::config::MAX_WINDOW;
use fleet_shared::ledger::RequestLedger;
use fleet_shared::queue::JobQueue;
use serde::Serialize;

use crate::request::RequestError;
use crate::{Producer, ProducerError};

/// What `limit` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitReport {
    pub request_id: String,
    pub max_concurrency: u32,
    /// Jobs released (and sent) at once because the window grew.
    pub released: u32,
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// Sets the request's `max_concurrency` (its window) while it runs.
    pub async fn limit(
        &self,
        request_id: &str,
        max_concurrency: u32,
    ) -> Result<LimitReport, ProducerError> {
        if !(1..=MAX_WINDOW).contains(&max_concurrency) {
            return Err(ProducerError::Invalid(RequestError::Field {
                field: "max_concurrency".into(),
                reason: format!("must be 1 to {MAX_WINDOW}, got {max_concurrency}"),
            }));
        }
        if !self.ledger.set_window(request_id, max_concurrency).await? {
            return Err(match self.ledger.get_request(request_id).await? {
                None => ProducerError::NotFound(request_id.to_owned()),
                Some(_) => ProducerError::NotWindowed {
                    request_id: request_id.to_owned(),
                },
            });
        }
        let released = self.release(request_id).await?;
        Ok(LimitReport {
            request_id: request_id.to_owned(),
            max_concurrency,
            released,
        })
    }
}
