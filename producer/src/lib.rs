//! The Fleet producer: turns a request into jobs with deterministic ids, records them in the
//! ledger and sends their messages, a chunk at a time (the first messages go out within
//! seconds even for a million jobs). Re-submitting a request never creates a second copy of
//! a job, and finishes a submission that was cut short. Also reads a request's progress
//! (from its counters: a bounded number of reads whatever its size), lists its jobs a page
//! at a time, cancels it (one write), and reads results.
//!
//! [`Producer`] is generic over the ledger and the queue, so its logic is unit-tested on
//! the in-memory parts; the binaries use DynamoDB and SQS. One module per part of its work:
//! `submit` (the one submission path the CLI and the HTTP API share), `status`, `jobs`
//! (listings and results), `cancel` (and the cleanup of payloads), [`dlq`].

mod cancel;
pub mod dlq;
mod export;
mod jobs;
mod limit;
pub mod request;
mod results;
mod status;
mod submit;

use std::sync::Arc;

use fleet_shared::config::Config;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::ledger::memory::DIRECT_JOB_SHARDS;
use fleet_shared::ledger::{LedgerError, RequestLedger, RequestRecord};
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::queue::{JobQueue, QueueError};

pub use cancel::{CANCEL_SETTLE, CancelReport};
pub use export::{ExportFile, Manifest, PART_BYTES};
pub use jobs::JobView;
pub use limit::LimitReport;
pub use request::{CheckedRequest, RequestError, RequestFile, ValidRequest};
pub use results::{ResultLine, is_result_state};
pub use status::{ByTarget, REQUEST_STATES, Status};
pub use submit::{MAX_SOURCE_OBJECTS, SUBMIT_CHUNK, SubmitError, SubmitReport};

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("invalid request: {0}")]
    Invalid(#[from] RequestError),
    #[error(
        "request {request_id} exists with other content; nothing was written (submit with another request_id, or the same content to finish its submission)"
    )]
    Conflict { request_id: String },
    #[error("no request {0}")]
    NotFound(String),
    /// What was asked needs every job finished; `then` says why or what to do.
    #[error("request {request_id} is not finished ({finished}/{total} jobs); {then}")]
    NotDone {
        request_id: String,
        finished: u32,
        total: u32,
        then: &'static str,
    },
    /// Redriving a cancelled request (or one failed as a whole, which is cancelled too) would
    /// only cancel its jobs again on arrival.
    #[error(
        "request {request_id} is {why}: redriven jobs would be cancelled as they arrive; nothing was changed (submit them as a new request)"
    )]
    Cancelled { request_id: String, why: String },
    #[error(
        "request {request_id} was submitted without a window (limits.window = 0): its messages are all in the queue, so its concurrency cannot be limited"
    )]
    NotWindowed { request_id: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("no dead-letter queue is configured")]
    NoDeadLetterQueue,
    /// S3 failed (listing a source, writing, reading or deleting claim-check objects).
    #[error("{0}")]
    Storage(String),
}

impl From<fleet_shared::results::ResultsError> for ProducerError {
    fn from(e: fleet_shared::results::ResultsError) -> Self {
        match e {
            fleet_shared::results::ResultsError::Ledger(e) => e.into(),
            fleet_shared::results::ResultsError::Storage(m) => ProducerError::Storage(m),
        }
    }
}

pub struct Producer<L = DynamoLedger, Q = SqsQueue> {
    ledger: L,
    queue: Q,
    dead_letters: Option<SqsQueue>,
    s3: Option<aws_sdk_s3::Client>,
    config: Arc<Config>,
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    pub fn new(ledger: L, queue: Q, config: Arc<Config>) -> Self {
        Self {
            ledger,
            queue,
            dead_letters: None,
            s3: None,
            config,
        }
    }

    /// Adds S3, for `source` requests and the claim-check.
    pub fn with_s3(mut self, s3: aws_sdk_s3::Client) -> Self {
        self.s3 = Some(s3);
        self
    }

    /// Adds the dead-letter queue, for `dlq list` without a request.
    pub fn with_dead_letters(mut self, dlq: SqsQueue) -> Self {
        self.dead_letters = Some(dlq);
        self
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    fn s3(&self) -> Result<&aws_sdk_s3::Client, ProducerError> {
        self.s3
            .as_ref()
            .ok_or_else(|| ProducerError::Storage("no S3 client".into()))
    }

    /// The request item, or not found.
    async fn request(&self, request_id: &str) -> Result<RequestRecord, ProducerError> {
        self.ledger
            .get_request(request_id)
            .await?
            .ok_or_else(|| ProducerError::NotFound(request_id.to_owned()))
    }

    /// The partitions a request's job items are in: its record's, or the default of a
    /// request whose jobs were sent straight to SQS.
    async fn job_shards(&self, request_id: &str) -> Result<(u32, bool), ProducerError> {
        Ok(match self.ledger.get_request(request_id).await? {
            Some(r) => (r.job_shards, true),
            None => (DIRECT_JOB_SHARDS, false),
        })
    }
}

#[cfg(test)]
mod tests;
