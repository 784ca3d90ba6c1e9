//! The request file: `{"request_id"?, "job_type", "jobs": [payload, ...], "options"?:
//! {"max_attempts"?, "target"?}}`, where `jobs` may instead be generated from
//! `"source": {"s3_prefix", "group_bytes"?, "max_objects_per_job"?}` (one job per object or
//! group of objects), `"source": {"s3_manifest", "format"?, "lines_per_job"?}` (one job per
//! N rows of a CSV or JSON Lines object) or `"range": {"start", "end", "chunk"}` (one job
//! per chunk), with
//! `"params"` handed to every generated job. It is validated completely, every job's message
//! built and measured, before anything is written anywhere.
//!
//! A submission goes through three steps, each once: [`parse`] (the text), [`check`] (every
//! check that needs no AWS call, and the jobs of `jobs` and `range` requests: the request's
//! [`JobsPlan`]), then [`build`] (the jobs and their messages, once a `source` prefix is
//! listed or its manifest read). [`crate::Producer::submit_request`] takes a [`CheckedRequest`] and does the rest.

mod build;
pub mod manifest;
mod plan;

use serde::Deserialize;
use serde_json::Value;

use fleet_shared::message::Target;

pub use build::{
    ClaimCheck, Limits, MAX_LEDGER_PAYLOAD_BYTES, ValidRequest, build, canonical_json,
    content_hash, validate,
};
pub use manifest::{MAX_LINES_PER_JOB, ManifestError, ManifestFormat, ManifestSpec};
pub use plan::{CheckedRequest, JobsPlan, MAX_OBJECTS_PER_JOB, check, group_objects};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// Makes submission idempotent; generated when absent.
    #[serde(default)]
    pub request_id: Option<String>,
    pub job_type: String,
    /// One payload per job; job `i` gets id `<request_id>:<i>`. Exactly one of `jobs`,
    /// `source` and `range` is given.
    #[serde(default)]
    pub jobs: Option<Vec<Value>>,
    /// Jobs from the objects under an S3 prefix.
    #[serde(default)]
    pub source: Option<SourceSpec>,
    /// Jobs from an integer range.
    #[serde(default)]
    pub range: Option<RangeSpec>,
    /// A JSON object given to every job generated from `source` or `range`, as the payload's
    /// `params`.
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub options: RequestOptions,
    /// Whom the request runs for (`[A-Za-z0-9_-]{1,64}`): its messages' SQS message group,
    /// and the `tenants.<name>.max_concurrency` cap its jobs count against with every other
    /// request of the tenant. Default: its request id.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `{"s3_prefix": "s3://bucket/prefix/", "group_bytes"?: N, "max_objects_per_job"?: N}` (one
/// job per object or group of objects), or `{"s3_manifest": "s3://bucket/ids.csv",
/// "format"?: "csv"|"jsonl", "lines_per_job"?: N}` (one job per N rows of the object).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default)]
    pub s3_prefix: Option<String>,
    /// Consecutive objects (in key order) are grouped into one job up to this many bytes; an
    /// object larger than this is a job of its own. Without it, one job per object.
    #[serde(default)]
    pub group_bytes: Option<u64>,
    /// At most this many objects per job.
    #[serde(default)]
    pub max_objects_per_job: Option<u32>,
    /// An object whose rows are the jobs' (see [`manifest`]).
    #[serde(default)]
    pub s3_manifest: Option<String>,
    /// How its lines are read; by default from its name's extension (`.csv`, `.jsonl`,
    /// `.ndjson`).
    #[serde(default)]
    pub format: Option<ManifestFormat>,
    /// Rows per job (default 1).
    #[serde(default)]
    pub lines_per_job: Option<u32>,
}

/// `{"start": a, "end": b, "chunk": n}`: jobs for `[a, a+n)`, `[a+n, a+2n)`, ... up to `b`
/// (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    pub start: i64,
    pub end: i64,
    pub chunk: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// Attempts per job; default from the worker's configuration.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Where the jobs run; default `auto`.
    #[serde(default)]
    pub target: Option<Target>,
    /// The request fails as a whole once more than this percentage of its jobs (0 to 100,
    /// of all its jobs) have failed; default: it never does.
    #[serde(default)]
    pub tolerated_failure_percent: Option<f64>,
    /// The request fails as a whole once more than this many of its jobs have failed.
    #[serde(default)]
    pub tolerated_failure_count: Option<u32>,
    /// Most of its jobs running (released and not finished) at a time, across the fleet;
    /// changeable while it runs (`fleet-producer limit`). Default: the fleet's
    /// `limits.window`. Not part of the request's content hash.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Where its results are exported when it finishes.
    #[serde(default)]
    pub results: Option<ResultsOptions>,
}

/// `options.results`: the export that runs by itself when the request finishes (what
/// `fleet-producer export` does after the fact).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsOptions {
    /// `s3://bucket/prefix/`: JSON Lines parts per final state, then `manifest.json`.
    pub s3_prefix: String,
}

impl RequestOptions {
    /// Failed jobs a request of `total` jobs tolerates: the lower of the two options.
    pub fn tolerated_failures(&self, total: u32) -> Option<u32> {
        let by_percent = self
            .tolerated_failure_percent
            .map(|p| (p / 100.0 * f64::from(total)).floor() as u32);
        match (by_percent, self.tolerated_failure_count) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Why a request was refused. Nothing has been written when this is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("not a valid request: {0}")]
    Syntax(String),
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

fn field(field: impl Into<String>, reason: impl ToString) -> RequestError {
    RequestError::Field {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Parses a request file's text.
pub fn parse(text: &str) -> Result<RequestFile, RequestError> {
    serde_json::from_str(text).map_err(|e| RequestError::Syntax(e.to_string()))
}

/// A fresh request id: time-ordered and unique.
pub fn new_request_id() -> String {
    format!("req-{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests;
