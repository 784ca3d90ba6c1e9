//! The request file: `{"request_id"?, "job_type", "jobs": [payload, ...], "options"?:
//! {"max_attempts"?, "target"?}}`. It is validated completely, every job's message built and
//! measured, before anything is written anywhere.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use fleet_shared::ids::{self, JobId, MAX_JOBS_PER_REQUEST};
use fleet_shared::ledger::{NewJob, RequestRecord};
use fleet_shared::message::{JobMessage, MAX_ATTEMPTS_LIMIT, MESSAGE_VERSION, RoutingHint, Target};

/// DynamoDB's item limit is 400 KB; a job item holds the payload plus some 300 bytes of
/// attributes.
pub const MAX_LEDGER_PAYLOAD_BYTES: usize = 390 * 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// Makes submission idempotent; generated when absent.
    #[serde(default)]
    pub request_id: Option<String>,
    pub job_type: String,
    /// One payload per job; job `i` gets id `<request_id>:<i>`.
    pub jobs: Vec<Value>,
    #[serde(default)]
    pub options: RequestOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// Attempts per job; default from the worker's configuration.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Where the jobs run; default `auto`.
    #[serde(default)]
    pub target: Option<Target>,
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

/// A request that passed every check, with its jobs' messages built.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub record: RequestRecord,
    pub jobs: Vec<NewJob>,
    /// Message bodies, by job index.
    pub bodies: Vec<String>,
}

/// Parses a request file's text.
pub fn parse(text: &str) -> Result<RequestFile, RequestError> {
    serde_json::from_str(text).map_err(|e| RequestError::Syntax(e.to_string()))
}

/// A fresh request id: time-ordered and unique.
pub fn new_request_id() -> String {
    format!("req-{}", uuid::Uuid::now_v7().simple())
}

/// JSON with object keys sorted at every level and no spaces: the same content always gives
/// the same bytes, whatever order the file wrote its keys in.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// SHA-256 of the request's content (job type, jobs, options), hex.
pub fn content_hash(file: &RequestFile) -> String {
    let doc = serde_json::json!({
        "job_type": file.job_type,
        "jobs": file.jobs,
        "options": {
            "max_attempts": file.options.max_attempts,
            "target": file.options.target.map(Target::as_str),
        },
    });
    let digest = Sha256::digest(canonical_json(&doc).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks everything and builds the jobs and their messages.
pub fn validate(
    file: RequestFile,
    max_message_bytes: usize,
    now_ms: u64,
) -> Result<ValidRequest, RequestError> {
    let request_id = match &file.request_id {
        Some(id) => {
            ids::validate_request_id(id).map_err(|e| field("request_id", e))?;
            id.clone()
        }
        None => new_request_id(),
    };
    ids::validate_job_type(&file.job_type).map_err(|e| field("job_type", e))?;
    if file.jobs.is_empty() {
        return Err(field("jobs", "a request needs at least one job"));
    }
    if file.jobs.len() > MAX_JOBS_PER_REQUEST as usize {
        return Err(field(
            "jobs",
            format!(
                "{} jobs is over the limit of {MAX_JOBS_PER_REQUEST} per request",
                file.jobs.len()
            ),
        ));
    }
    if let Some(n) = file.options.max_attempts
        && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
    {
        return Err(field(
            "options.max_attempts",
            format!("must be 1 to {MAX_ATTEMPTS_LIMIT}, got {n}"),
        ));
    }
    let hash = content_hash(&file);
    let routing = file.options.target.map(|t| RoutingHint {
        target: Some(t),
        estimated_secs: None,
    });
    let mut jobs = Vec::with_capacity(file.jobs.len());
    let mut bodies = Vec::with_capacity(file.jobs.len());
    for (i, payload) in file.jobs.into_iter().enumerate() {
        let job = JobId::new(&request_id, i as u32).map_err(|e| field(format!("jobs[{i}]"), e))?;
        let payload_json = payload.to_string();
        if payload_json.len() > MAX_LEDGER_PAYLOAD_BYTES {
            return Err(field(
                format!("jobs[{i}]"),
                format!(
                    "payload is {} bytes, over the ledger's limit of {MAX_LEDGER_PAYLOAD_BYTES}",
                    payload_json.len()
                ),
            ));
        }
        let message = JobMessage {
            version: MESSAGE_VERSION,
            request_id: request_id.clone(),
            job_id: job.to_string(),
            job_type: file.job_type.clone(),
            attempt: 1,
            payload,
            routing: routing.clone(),
            enqueued_at_ms: now_ms,
            max_attempts: file.options.max_attempts,
        };
        let body = message.to_body();
        if body.len() > max_message_bytes {
            return Err(field(
                format!("jobs[{i}]"),
                format!(
                    "the job's message is {} bytes, over the limit of {max_message_bytes} (limits.max_message_bytes)",
                    body.len()
                ),
            ));
        }
        jobs.push(NewJob {
            job,
            job_type: file.job_type.clone(),
            payload_json,
            max_attempts: file.options.max_attempts,
            target: file.options.target,
            created_at_ms: now_ms,
        });
        bodies.push(body);
    }
    Ok(ValidRequest {
        record: RequestRecord {
            request_id,
            job_type: file.job_type,
            total: jobs.len() as u32,
            content_hash: hash,
            max_attempts: file.options.max_attempts,
            target: file.options.target,
            created_at_ms: now_ms,
        },
        jobs,
        bodies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_shared::message::{DEFAULT_MAX_MESSAGE_BYTES, parse_message};

    fn check(text: &str) -> Result<ValidRequest, RequestError> {
        validate(parse(text)?, DEFAULT_MAX_MESSAGE_BYTES, 1_000)
    }

    #[test]
    fn builds_deterministic_jobs_and_valid_messages() {
        let v = check(r#"{"request_id": "r1", "job_type": "t", "jobs": [{"a": 1}, null], "options": {"max_attempts": 3, "target": "lambda"}}"#).unwrap();
        assert_eq!(v.record.total, 2);
        assert_eq!(v.jobs[1].job.to_string(), "r1:1");
        for body in &v.bodies {
            let (m, _) = parse_message(body, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
            assert_eq!(m.max_attempts, Some(3));
            assert_eq!(m.routing.unwrap().target, Some(Target::Lambda));
        }
    }

    #[test]
    fn generates_an_id_when_none_is_given() {
        let a = check(r#"{"job_type": "t", "jobs": [1]}"#).unwrap();
        let b = check(r#"{"job_type": "t", "jobs": [1]}"#).unwrap();
        assert!(a.record.request_id.starts_with("req-"));
        assert_ne!(a.record.request_id, b.record.request_id);
        assert_eq!(a.record.content_hash, b.record.content_hash);
    }

    #[test]
    fn hash_ignores_key_order_but_not_content() {
        let h = |t: &str| content_hash(&parse(t).unwrap());
        assert_eq!(
            h(r#"{"job_type": "t", "jobs": [{"a": 1, "b": 2}]}"#),
            h(r#"{"jobs": [{"b": 2, "a": 1}], "job_type": "t", "options": {}}"#)
        );
        assert_ne!(
            h(r#"{"job_type": "t", "jobs": [1]}"#),
            h(r#"{"job_type": "t", "jobs": [2]}"#)
        );
        assert_ne!(
            h(r#"{"job_type": "t", "jobs": [1]}"#),
            h(r#"{"job_type": "t", "jobs": [1], "options": {"max_attempts": 2}}"#)
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let big = format!(
            r#"{{"job_type": "t", "jobs": [1, {{"x": "{}"}}]}}"#,
            "y".repeat(300_000)
        );
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "not a valid request"),
            (r#"{"job_type": "t"}"#.into(), "missing field `jobs`"),
            (
                r#"{"job_type": "t", "jobs": []}"#.into(),
                "jobs: a request needs at least one job",
            ),
            (
                r#"{"job_type": "t", "jobs": [1], "priority": 1}"#.into(),
                "unknown field `priority`",
            ),
            (
                r#"{"job_type": "t", "jobs": [1], "options": {"retries": 1}}"#.into(),
                "unknown field `retries`",
            ),
            (
                r#"{"job_type": "t", "jobs": [1], "options": {"target": "gpu"}}"#.into(),
                "unknown variant `gpu`",
            ),
            (
                r#"{"job_type": "t", "jobs": [1], "options": {"max_attempts": 0}}"#.into(),
                "options.max_attempts",
            ),
            (r#"{"job_type": "a b", "jobs": [1]}"#.into(), "job_type:"),
            (
                r#"{"request_id": "a:b", "job_type": "t", "jobs": [1]}"#.into(),
                "request_id:",
            ),
            (big, "jobs[1]: the job's message is"),
        ];
        for (text, want) in cases {
            let err = check(&text).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }
}
