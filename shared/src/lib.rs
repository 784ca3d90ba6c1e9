//! The contract between Fleet's producer and its workers: the versioned job message and its
//! JSON Schema, identifiers, the job state machine, the DynamoDB ledger, the SQS queue
//! adapter, configuration, AWS client construction, and (feature `runtime`) the job runtime
//! that job authors build on.

pub mod aws;
pub mod claim_check;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod ids;
pub mod invocation_record;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod queue;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod s3;
pub mod s3_list;
pub mod state;
pub mod time;

/// The JSON Schema of the job message, version 1, for producers in other languages.
pub const JOB_MESSAGE_SCHEMA_V1: &str = include_str!("../schema/job-message.v1.json");
