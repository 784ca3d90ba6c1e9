//! Cancelling a request (one write to its request item; the replicas do the rest), and
//! deleting a finished request's claim-check payloads.

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_shared::ledger::RequestLedger;
use fleet_shared::queue::JobQueue;
use serde::Serialize;

use crate::{Producer, ProducerError};

/// How long `cancel` waits after its write before it returns: a replica trusts a request's
/// view for at most [`fleet_shared::ledger::REQUEST_VIEW_TTL`], so no job starts after this.
pub const CANCEL_SETTLE: Duration =
    Duration::from_millis(fleet_shared::ledger::REQUEST_VIEW_TTL.as_millis() as u64 + 500);

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelReport {
    pub request_id: String,
    /// When the request was (first) cancelled.
    pub cancelled_at_ms: u64,
    /// Jobs running in tasks are stopped too.
    pub stop_running: bool,
    /// The request's jobs per state as `cancel` returns: jobs not started become CANCELLED
    /// as their messages arrive at a replica.
    pub states: BTreeMap<String, u32>,
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// Cancels a request with one write to its request item: replicas stop starting its
    /// jobs (a job not started becomes CANCELLED when its message arrives), and with
    /// `stop_running` they stop its jobs running in tasks (ECS tasks, local processes; a
    /// Lambda invocation cannot be stopped and finishes). Returns once no job of the request
    /// can start any more. Cancelling again changes nothing.
    pub async fn cancel(
        &self,
        request_id: &str,
        stop_running: bool,
    ) -> Result<CancelReport, ProducerError> {
        let now = fleet_shared::time::now_ms();
        if !self
            .ledger
            .cancel_request(request_id, now, stop_running)
            .await?
        {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        tokio::time::sleep(CANCEL_SETTLE).await;
        let record = self.request(request_id).await?;
        let status = self.status(request_id).await?;
        Ok(CancelReport {
            request_id: request_id.to_owned(),
            cancelled_at_ms: record.cancelled_at_ms.unwrap_or(now),
            stop_running: record.stop_running,
            states: status.states,
        })
    }

    /// `NotDone` (saying `then`) unless every job of the request is finished.
    pub(crate) async fn require_done(
        &self,
        request_id: &str,
        then: &'static str,
    ) -> Result<(), ProducerError> {
        let status = self.status(request_id).await?;
        if status.done {
            return Ok(());
        }
        Err(ProducerError::NotDone {
            request_id: request_id.to_owned(),
            finished: status.finished(),
            total: status.total,
            then,
        })
    }

    /// Deletes the claim-check payloads of a finished request (all its jobs terminal), or of
    /// any request with `force`. The number of objects deleted.
    pub async fn cleanup(&self, request_id: &str, force: bool) -> Result<u64, ProducerError> {
        let Some(prefix) = self.config.claim_check.location() else {
            return Err(ProducerError::Storage(
                "no claim_check.prefix is configured".into(),
            ));
        };
        if !force {
            self.require_done(
                request_id,
                "its payloads are still needed (--force deletes them anyway)",
            )
            .await?;
        }
        let under = fleet_shared::claim_check::request_prefix(&prefix, request_id);
        fleet_shared::claim_check::delete_prefix(self.s3()?, &under)
            .await
            .map_err(ProducerError::Storage)
    }
}
