//! `fleet-producer export`: a finished request's results to S3, as
//! [`fleet_shared::results::export`] writes them (parts per final state, then the manifest).

use fleet_shared::ledger::RequestLedger;
use fleet_shared::queue::JobQueue;
pub use fleet_shared::results::{ExportFile, Manifest, PART_BYTES, export_base};

use crate::{Producer, ProducerError, RequestError};

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// Exports the results of finished request `request_id` under `to` (`s3://bucket/prefix`;
    /// a prefix that does not end in `/` gets one). A request with unfinished jobs is
    /// refused before anything is written.
    pub async fn export(&self, request_id: &str, to: &str) -> Result<Manifest, ProducerError> {
        let base = export_base(to).map_err(|reason| {
            ProducerError::Invalid(RequestError::Field {
                field: "to".into(),
                reason,
            })
        })?;
        self.require_done(
            request_id,
            "its results are exported once every job is, and nothing was written",
        )
        .await?;
        let (shards, _) = self.job_shards(request_id).await?;
        Ok(
            fleet_shared::results::export(&self.ledger, self.s3()?, request_id, shards, &base)
                .await?,
        )
    }
}
