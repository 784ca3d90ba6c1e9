//! # Writing a Fleet job
//!
//! A Fleet job is one binary that runs unchanged in three places: in AWS Lambda, in an ECS
//! (Fargate) task, and on your machine behind a local copy of Lambda's Invoke API. Fleet's
//! workers decide per job where it runs; your code does not know or care. This crate is all
//! a job needs: it depends on neither Fleet's ledger nor the DynamoDB and SQS SDKs.
//!
//! ## A complete job
//!
//! ```no_run
//! use std::process::ExitCode;
//! use std::time::Duration;
//!
//! use fleet_job::{JobContext, JobError, JobHandler};
//! use serde_json::{Value, json};
//!
//! /// Counts the words of `payload.text`.
//! struct WordCount;
//!
//! impl JobHandler for WordCount {
//!     async fn handle(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
//!         // Input the job can never accept: fail it now, without retries.
//!         let Some(text) = payload.get("text").and_then(Value::as_str) else {
//!             return Err(JobError::permanent("InvalidPayload", "payload.text must be a string"));
//!         };
//!         // A dependency that asks us to slow down: run again later, the attempt is not spent.
//!         if text == "busy" {
//!             return Err(JobError::throttled(
//!                 "PartnerBusy",
//!                 "the partner API answered 429",
//!                 Some(Duration::from_secs(1)),
//!             ));
//!         }
//!         // Key side effects by (job id, fence) to make a re-execution harmless.
//!         let _idempotency_key = format!("{}/{}", ctx.job_id, ctx.fence);
//!         Ok(json!({"words": text.split_whitespace().count()}))
//!     }
//! }
//!
//! fn main() -> ExitCode {
//!     fleet_job::main(WordCount)
//! }
//! ```
//!
//! In `Cargo.toml`: `fleet-job`, `serde_json`, and (for the `async fn` in the trait) nothing
//! else; [`main`] starts its own tokio runtime.
//!
//! ## What the handler receives
//!
//! [`JobHandler::handle`] gets the job's `payload` (the JSON the request gave this job) and
//! a [`JobContext`]: the request and job ids, the job type, the attempt (from 1) and the
//! **fence**. A job runs at least once: after a worker crash or a lost answer it can run
//! again, and the fence grows with every claim, so a side effect keyed by (job id, fence)
//! is applied once per claim and a stale run can be told from the current one. Fleet records
//! each job's outcome exactly once.
//!
//! A payload too large for a message was kept in S3 by the producer (the *claim-check*):
//! the runtime reads it back, checks its size and SHA-256, and hands your code the original
//! payload. A result too large for an asynchronous Lambda's record is stored the same way
//! when the worker configures a prefix ([`event::LargeResults`]). You never see references.
//!
//! ## How a job fails
//!
//! Return a [`JobError`]; its [`ErrorKind`] tells the worker what to do:
//!
//! | you return | the worker |
//! |---|---|
//! | [`JobError::new`] | retries with backoff while the job has attempts left, then fails it and dead-letters its message with the reason |
//! | [`JobError::permanent`] | fails the job at once (bad input: a retry would fail the same way) |
//! | [`JobError::throttled`] | runs it again after the retry-after you give (at least its backoff), without spending an attempt |
//!
//! A panic is a failure worth retrying. So is running out of time: the function's timeout
//! under Lambda, the worker's deadline for a task.
//!
//! ## Where it runs
//!
//! [`main`] picks the entrypoint:
//!
//! - **Lambda** (`AWS_LAMBDA_RUNTIME_API` set, as Lambda sets it): build for
//!   `provided.al2023` and package the binary as `bootstrap`. A failure's kind travels in
//!   the function error's `errorType` ([`error`]).
//! - **Container** (`run`, or no arguments with [`event::EVENT_ENV`] set): the event is
//!   base64 JSON in `FLEET_EVENT`, the result is printed on stdout, and the exit code tells
//!   the outcome ([`exit`]). SIGTERM (a Spot interruption, a scale-in) ends it with 143,
//!   which the worker takes for an interruption, not your failure.
//! - **Local Invoke API** (`serve --listen 127.0.0.1:9001`): an HTTP server that answers
//!   like Lambda, so a worker on your machine calls the job with its unchanged Lambda
//!   client (`AWS_ENDPOINT_URL_LAMBDA`). `--timeout` emulates the function timeout.
//!   Asynchronous invocations (`X-Amz-Invocation-Type: Event`) need the feature
//!   `local-async`, which adds SQS to deliver their records to the outcomes queue; leave it
//!   out of what you ship to Lambda or ECS.
//!
//! Logs go to stderr (`RUST_LOG`; `FLEET_LOG_FORMAT=json` for one JSON object a line).
//!
//! ## Testing a handler
//!
//! A handler is a plain value: call `handle` in a `#[tokio::test]` with a
//! [`JobContext`] you build. To run the whole binary as Fleet will, start it with `serve`
//! and point a worker at it, or run it as a container would:
//! `FLEET_EVENT=$(echo -n '{"request_id":"r","job_id":"r:0","job_type":"t","attempt":1,"fence":1,"payload":{}}' | base64 -w0) my-job run`.

pub mod claim_check;
pub mod error;
pub mod event;
pub mod exit;
pub mod ids;
pub mod invocation_record;
pub mod log;
pub mod runtime;
pub mod s3;
pub mod time;

pub use error::{ErrorKind, JobError};
pub use event::JobEvent;
pub use runtime::{JobContext, JobHandler, main};
