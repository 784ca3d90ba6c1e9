//! The event a job receives: the same document under Lambda, in a container (base64 in
//! [`EVENT_ENV`]) and from the local Invoke API. The worker builds it from the job's message
//! and the lease it holds.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Environment variable that carries the base64-encoded event into a container.
pub const EVENT_ENV: &str = "FLEET_EVENT";

/// Where a job should run. `auto` leaves the choice to the worker's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Lambda,
    Ecs,
    Auto,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Lambda => "lambda",
            Target::Ecs => "ecs",
            Target::Auto => "auto",
        }
    }
}

/// What the job code receives: the same document for the Lambda runtime, the container
/// entrypoint (base64 in `FLEET_EVENT`) and the local Invoke-API server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub request_id: String,
    pub job_id: String,
    pub job_type: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The lease's fence: it grows with every claim, so side effects keyed by
    /// (job id, fence) are never applied twice by two owners.
    pub fence: u64,
    pub payload: Value,
    /// Set when the attempt's result travels in an invocation record (asynchronous Lambda
    /// dispatch): a result over `inline_max_bytes` is kept in S3 by the job runtime, which
    /// returns its reference instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_results: Option<LargeResults>,
    /// Why the attempt runs where it does (the routing decision), set for an asynchronous
    /// invocation so that its record brings it back to the ledger's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The lease an attempt handed to Lambda runs under, echoed back by its invocation
    /// record so that whichever replica receives it records the outcome without reading the
    /// job first (the ledger's conditions on owner and fence still decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<HandedLease>,
}

/// What an invocation record needs of its attempt's lease (see [`JobEvent::lease`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedLease {
    pub owner: String,
    /// The job item's key.
    pub pk: String,
    pub sk: String,
    pub started_ms: u64,
    pub until_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The attempt follows a retry (how the counters move).
    #[serde(default)]
    pub after_retry: bool,
    /// The job item's size after the claim (whether a result fits inline).
    #[serde(default)]
    pub item_bytes: usize,
}

/// Where the job runtime keeps a result too large to return inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeResults {
    pub inline_max_bytes: usize,
    /// The claim-check prefix (`s3://bucket/prefix/`); without one a larger result fails
    /// the job with `ResponseSizeTooLarge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl JobEvent {
    /// The event as a container receives it in `FLEET_EVENT`: base64 of its JSON.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        // Strings, numbers and JSON values always serialise.
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes `FLEET_EVENT`.
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("the event is not base64: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the event is not a job event: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_round_trips_through_base64() {
        let ev = JobEvent {
            request_id: "r".into(),
            job_id: "r:1".into(),
            job_type: "t".into(),
            attempt: 2,
            fence: 3,
            payload: json!({"x": "é\n"}),
            large_results: None,
            route: None,
            lease: None,
        };
        assert_eq!(JobEvent::from_base64(&ev.to_base64()).unwrap(), ev);
        assert!(
            JobEvent::from_base64("%%%")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            JobEvent::from_base64("e30=")
                .unwrap_err()
                .contains("not a job event")
        );
    }
}
