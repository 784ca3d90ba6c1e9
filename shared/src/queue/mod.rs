//! The jobs queue as the worker sees it: receive, acknowledge in batches, defer, and send to
//! the dead-letter queue. [`sqs::SqsQueue`] is the real one; [`memory::MemoryQueue`] the
//! in-memory one for unit tests and benchmarks.

pub mod memory;
pub mod sqs;

use std::future::Future;
use std::time::Duration;

/// A message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    /// Valid until the message is received again; deletes and visibility changes need it.
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A call to SQS failed; `class` says whether to try again.
    #[error("queue call {op} failed ({class}): {message}")]
    Aws {
        op: &'static str,
        class: crate::error::ErrorClass,
        message: String,
    },
    #[error("queue {0:?} does not exist")]
    NoSuchQueue(String),
    /// Some entries of a batch were not sent: refused by SQS (permanent), or still failing
    /// after retries through no fault of ours (transient).
    #[error("{count} messages could not be sent: {message}")]
    SendFailed {
        count: usize,
        class: crate::error::ErrorClass,
        message: String,
    },
}

impl QueueError {
    /// How to treat the error: an SDK error keeps the class of its cause, a queue that
    /// does not exist is permanent.
    pub fn class(&self) -> crate::error::ErrorClass {
        match self {
            QueueError::Aws { class, .. } | QueueError::SendFailed { class, .. } => *class,
            QueueError::NoSuchQueue(_) => crate::error::ErrorClass::Permanent,
        }
    }
}

/// SQS's longest delivery delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Most messages one receive or batch call can carry (an SQS limit).
pub const MAX_BATCH: usize = 10;

pub trait JobQueue: Send + Sync + 'static {
    /// Up to `max` (1 to 10) messages, waiting up to `wait` for the first; each is hidden
    /// from other receivers for `visibility`.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;

    /// Deletes up to 10 messages; returns the receipts that could not be deleted.
    fn delete_batch(
        &self,
        receipts: &[String],
    ) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Messages waiting to be received: visible now, or delayed (not those in flight).
    /// Approximate, like SQS's counts.
    fn backlog(&self) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Sends a message, visible after `delay` (at most 15 minutes; SQS's limit).
    fn send(
        &self,
        body: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Sends every body at once (in batches where the queue has them).
    fn send_all(&self, bodies: &[String]) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Makes a received message visible again after `timeout` (0: at once).
    fn set_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Where messages that cannot run go, with the reason in message attributes.
pub trait DeadLetterQueue: Send + Sync + 'static {
    fn send_dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
