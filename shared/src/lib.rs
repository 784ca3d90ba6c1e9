//! The contract between Fleet's producer and its workers: the versioned job message and its
//! JSON Schema, identifiers, the job state machine, the DynamoDB ledger, the SQS queue
//! adapter, configuration and AWS client construction. What a job itself is built with (the
//! event, the handler trait, the runtime) is the crate `fleet-job`; the modules both sides
//! share (ids, S3 addresses, the claim-check's references, invocation records) are its own,
//! re-exported here.

pub mod aws;
pub mod claim_check;
pub mod cli;
pub mod completion;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod queue;
pub mod results;
pub mod s3_list;
pub mod state;
pub mod time;

pub use fleet_job::{ids, invocation_record, s3};

/// The JSON Schema of the job message, version 1, for producers in other languages.
pub const JOB_MESSAGE_SCHEMA_V1: &str = include_str!("../schema/job-message.v1.json");
