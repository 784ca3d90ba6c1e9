//! The job message: what travels on the jobs queue, from the producer (or any service that
//! follows `schema/job-message.v1.json`) to the workers. It is versioned, strict (unknown
//! fields are refused, so a typo never silently changes behaviour) and small.
//!
//! The JSON Schema and [`parse_message`] accept and refuse the same documents, except for
//! two rules JSON Schema cannot express, which only [`parse_message`] checks: the body's
//! size in bytes, and that the job id starts with the message's request id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{self, JobId};

pub use fleet_job::event::{
    EVENT_ENV, HandedLease, JobEvent, LargeResults, RouteReason, RouteRule, Target,
};
pub use fleet_job::exit::EXIT_INTERRUPTED;

/// The only message version this build understands.
pub const MESSAGE_VERSION: u64 = 1;
/// Default limit on a message body, in bytes (SQS's classic limit).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Highest `max_attempts` a request or message may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// What the submitter knows about where a job should run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingHint {
    /// A target forced by the submitter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub target: Option<Target>,
    /// The submitter's estimate of the job's duration, in seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub estimated_secs: Option<f64>,
}

/// One job on the queue (version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Always [`MESSAGE_VERSION`].
    pub version: u64,
    pub request_id: String,
    /// `<request_id>:<index>`.
    pub job_id: String,
    pub job_type: String,
    /// The attempt the sender expects to run, from 1. The ledger's count wins when it is
    /// higher: a retried message is the same message, made visible again.
    pub attempt: u32,
    /// The job's input, handed to the job code unchanged.
    pub payload: Value,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "routing_object"
    )]
    pub routing: Option<RoutingHint>,
    /// When the message was sent, in milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// Attempts allowed for this job; the worker's configuration decides when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub max_attempts: Option<u32>,
    /// The tenant the job runs for: the SQS message group it is sent under (fair queueing
    /// on a standard queue favours quiet tenants) and the `tenants.<name>` cap it counts
    /// against. Absent: its request id.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub tenant: Option<String>,
}

impl JobMessage {
    /// The job's tenant: [`JobMessage::tenant`], else its request id.
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.request_id)
    }
}

/// The SQS message group of a job message's body: its tenant, else its request id (`None`
/// for a body that is not a job message).
pub fn message_group(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Group {
        request_id: Option<String>,
        tenant: Option<String>,
    }
    let g: Group = serde_json::from_str(body).ok()?;
    g.tenant.or(g.request_id)
}

/// An optional field that, when present, must hold a value: `null` is refused as the JSON
/// Schema refuses it (absence is handled by `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `routing` must be a JSON object: serde would also build a struct from an array.
fn routing_object<'de, D>(d: D) -> Result<Option<RoutingHint>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match Value::deserialize(d)? {
        v @ Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "routing must be an object, got {other}"
        ))),
    }
}

impl JobMessage {
    /// The parsed job id. Only valid on a message that passed [`parse_message`] or
    /// [`JobMessage::validate`].
    pub fn job(&self) -> Result<JobId, MessageError> {
        JobId::parse(&self.job_id).map_err(|e| MessageError::field("job_id", e))
    }

    /// The checks that go beyond the shape of the document.
    pub fn validate(&self) -> Result<JobId, MessageError> {
        if self.version != MESSAGE_VERSION {
            return Err(MessageError::UnknownVersion(self.version));
        }
        ids::validate_request_id(&self.request_id)
            .map_err(|e| MessageError::field("request_id", e))?;
        let job = self.job()?;
        if job.request_id() != self.request_id {
            return Err(MessageError::field(
                "job_id",
                format!(
                    "must start with the request id {:?}, got {:?}",
                    self.request_id, self.job_id
                ),
            ));
        }
        ids::validate_job_type(&self.job_type).map_err(|e| MessageError::field("job_type", e))?;
        if let Some(t) = &self.tenant {
            ids::validate_request_id(t).map_err(|e| MessageError::field("tenant", e))?;
        }
        if self.attempt == 0 {
            return Err(MessageError::field("attempt", "must be at least 1"));
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return Err(MessageError::field(
                "max_attempts",
                format!("must be 1 to {MAX_ATTEMPTS_LIMIT}, got {n}"),
            ));
        }
        if let Some(RoutingHint {
            estimated_secs: Some(s),
            ..
        }) = &self.routing
            && !(s.is_finite() && *s >= 0.0)
        {
            return Err(MessageError::field(
                "routing.estimated_secs",
                "must be a number of seconds, 0 or more",
            ));
        }
        Ok(job)
    }

    /// The message for a job as the ledger has it (a re-send, a redrive, an adoption): the
    /// stored payload must be JSON (the ledger only stores what was parsed as JSON).
    pub fn for_job(
        job: &JobId,
        job_type: &str,
        payload_json: &str,
        attempt: u32,
        max_attempts: Option<u32>,
        target: Option<Target>,
        enqueued_at_ms: u64,
    ) -> Result<Self, MessageError> {
        Ok(JobMessage {
            version: MESSAGE_VERSION,
            request_id: job.request_id().to_owned(),
            job_id: job.to_string(),
            job_type: job_type.to_owned(),
            attempt: attempt.max(1),
            payload: serde_json::from_str(payload_json).map_err(|e| {
                MessageError::field("payload", format!("stored payload is not JSON: {e}"))
            })?,
            routing: target.map(|t| RoutingHint {
                target: Some(t),
                estimated_secs: None,
            }),
            enqueued_at_ms,
            max_attempts,
            tenant: None,
        })
    }

    /// The message as the queue carries it.
    pub fn to_body(&self) -> String {
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a message was refused. The text goes into the dead-letter record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("message is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    #[error("message is not a JSON object")]
    NotObject,
    #[error("message has no numeric 'version' field")]
    NoVersion,
    #[error("unknown message version {0} (this worker understands version {MESSAGE_VERSION})")]
    UnknownVersion(u64),
    #[error("message does not match version {MESSAGE_VERSION}: {0}")]
    Shape(String),
    #[error("invalid {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

impl MessageError {
    fn field(field: &'static str, reason: impl ToString) -> Self {
        MessageError::Field {
            field,
            reason: reason.to_string(),
        }
    }
}

/// Parses and validates a message body. Every way a body can be wrong gives an error; none
/// panics.
pub fn parse_message(body: &str, max_bytes: usize) -> Result<(JobMessage, JobId), MessageError> {
    if body.len() > max_bytes {
        return Err(MessageError::TooLarge {
            size: body.len(),
            limit: max_bytes,
        });
    }
    let value: Value =
        serde_json::from_str(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
    let Value::Object(map) = &value else {
        return Err(MessageError::NotObject);
    };
    match map.get("version").and_then(Value::as_u64) {
        None => return Err(MessageError::NoVersion),
        Some(MESSAGE_VERSION) => {}
        Some(v) => return Err(MessageError::UnknownVersion(v)),
    }
    // Parsed again from the text (not from `value`): only that sees duplicate keys.
    let message: JobMessage =
        serde_json::from_str(body).map_err(|e| MessageError::Shape(e.to_string()))?;
    let job = message.validate()?;
    Ok((message, job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "version": 1, "request_id": "r1", "job_id": "r1:7", "job_type": "resize",
            "attempt": 1, "payload": {"k": [1, 2]}, "enqueued_at_ms": 1_700_000_000_000u64
        })
    }

    #[test]
    fn accepts_a_good_message_and_round_trips() {
        let body = good().to_string();
        let (m, job) = parse_message(&body, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(job.index(), 7);
        let again = parse_message(&m.to_body(), DEFAULT_MAX_MESSAGE_BYTES)
            .unwrap()
            .0;
        assert_eq!(again, m);
    }

    #[test]
    fn size_limit_is_checked_on_raw_bytes() {
        let body = good().to_string();
        let err = parse_message(&body, body.len() - 1).unwrap_err();
        assert!(matches!(err, MessageError::TooLarge { .. }), "{err}");
        assert!(parse_message(&body, body.len()).is_ok());
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1]), "not a JSON object"),
            (json!({"version": 2}), "unknown message version 2"),
            (json!({"request_id": "r"}), "no numeric 'version'"),
            (
                {
                    let mut v = good();
                    v["extra"] = json!(1);
                    v
                },
                "unknown field `extra`",
            ),
            (
                {
                    let mut v = good();
                    v.as_object_mut().unwrap().remove("payload");
                    v
                },
                "missing field `payload`",
            ),
            (
                {
                    let mut v = good();
                    v["job_id"] = json!("r2:7");
                    v
                },
                "must start with the request id",
            ),
            (
                {
                    let mut v = good();
                    v["job_id"] = json!("r1:07");
                    v
                },
                "invalid job_id",
            ),
            (
                {
                    let mut v = good();
                    v["attempt"] = json!(0);
                    v
                },
                "invalid attempt",
            ),
            (
                {
                    let mut v = good();
                    v["job_type"] = json!("a b");
                    v
                },
                "invalid job_type",
            ),
            (
                {
                    let mut v = good();
                    v["max_attempts"] = json!(0);
                    v
                },
                "invalid max_attempts",
            ),
            (
                {
                    let mut v = good();
                    v["routing"] = json!({"target": "gpu"});
                    v
                },
                "unknown variant",
            ),
        ];
        for (doc, want) in cases {
            let err = parse_message(&doc.to_string(), DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
            assert!(err.to_string().contains(want), "{doc}: {err}");
        }
        let err = parse_message("{nope", 100).unwrap_err();
        assert!(matches!(err, MessageError::NotJson(_)));
    }
}
