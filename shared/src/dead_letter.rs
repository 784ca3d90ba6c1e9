//! What a dead-lettered message carries besides its original body: a failure record, in
//! message attributes. The body stays exactly as it was sent, so a redrive can send it again
//! and a reader sees what the producer sent.

use serde::{Deserialize, Serialize};

use crate::error::ErrorClass;
use crate::message::Target;

/// Message attribute names.
pub mod attr {
    /// The [`FailureRecord`](super::FailureRecord) as JSON.
    pub const FAILURE: &str = "fleet-failure";
    /// Also in the record; separate so a reader can filter without parsing.
    pub const JOB_ID: &str = "fleet-job-id";
    pub const REQUEST_ID: &str = "fleet-request-id";
    pub const ERROR_CLASS: &str = "fleet-error-class";
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Absent for a message too malformed to name its job.
    pub job_id: Option<String>,
    pub request_id: Option<String>,
    /// `throttled`, `transient`, `job_failure`, `timeout` or `permanent`.
    pub error_class: ErrorClass,
    pub error: String,
    /// Attempts made (0 for a message refused before any attempt).
    pub attempts: u32,
    /// Where the attempts ran, in order, without repeats.
    pub targets: Vec<Target>,
    pub first_attempt_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    /// The replica that dead-lettered it.
    pub replica: String,
    pub dead_lettered_ms: u64,
}

impl FailureRecord {
    /// The message attributes that carry this record.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = vec![
            (
                attr::FAILURE,
                serde_json::to_string(self).unwrap_or_default(),
            ),
            (attr::ERROR_CLASS, self.error_class.as_str().to_owned()),
        ];
        if let Some(j) = &self.job_id {
            a.push((attr::JOB_ID, j.clone()));
        }
        if let Some(r) = &self.request_id {
            a.push((attr::REQUEST_ID, r.clone()));
        }
        a
    }

    /// The record from a message's `fleet-failure` attribute.
    pub fn from_attribute(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}
