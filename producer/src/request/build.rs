//! A request's jobs and their messages, built and measured against the limits (message
//! size, ledger item size, jobs per request) before anything is written; large payloads
//! replaced by claim-check references.

use serde_json::Value;
use sha2::{Digest, Sha256};

use fleet_shared::claim_check;
use fleet_shared::config::MAX_WINDOW;
use fleet_shared::ids::{self, JobId, MAX_JOBS_PER_REQUEST};
use fleet_shared::ledger::{NewJob, RequestRecord};
use fleet_shared::message::{JobMessage, MAX_ATTEMPTS_LIMIT, MESSAGE_VERSION, RoutingHint, Target};
use fleet_shared::s3::S3Uri;

use super::{
    JobsPlan, RequestError, RequestFile, RequestOptions, SourceSpec, check, field, new_request_id,
};

/// DynamoDB's item limit is 400 KB; a job item holds the payload plus some 300 bytes of
/// attributes.
pub const MAX_LEDGER_PAYLOAD_BYTES: usize = 390 * 1000;

/// A request that passed every check, with its jobs' messages built.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub record: RequestRecord,
    pub jobs: Vec<NewJob>,
    /// Message bodies, by job index.
    pub bodies: Vec<String>,
    /// Payloads to write to S3 before the jobs are recorded (the claim-check): job index,
    /// where, and the bytes.
    pub uploads: Vec<(u32, S3Uri, Vec<u8>)>,
}

/// Where large payloads go, for [`validate`].
#[derive(Debug, Clone)]
pub struct ClaimCheck {
    pub prefix: S3Uri,
    /// Payloads whose JSON is larger go to S3.
    pub inline_max_bytes: usize,
}

/// JSON with object keys sorted at every level and no spaces: the same content always gives
/// the same bytes, whatever order the file wrote its keys in.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// [`canonical_json`], written into `out` (a hasher takes it piece by piece). Writing to a
/// String or a hasher cannot fail, so the results are not checked.
fn write_canonical(v: &Value, out: &mut impl std::fmt::Write) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let _ = out.write_char('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char(',');
                }
                let _ = out.write_str(&Value::String(k.clone()).to_string());
                let _ = out.write_char(':');
                write_canonical(&map[k], out);
            }
            let _ = out.write_char('}');
        }
        Value::Array(items) => {
            let _ = out.write_char('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char(',');
                }
                write_canonical(item, out);
            }
            let _ = out.write_char(']');
        }
        other => {
            let _ = out.write_str(&other.to_string());
        }
    }
}

/// A SHA-256 that takes text as [`std::fmt::Write`].
struct Hashing(Sha256);

impl std::fmt::Write for Hashing {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// SHA-256 of the request's content (job type, jobs, options), hex. For `source` and
/// `range` requests the jobs are the generated ones, so a prefix whose objects changed is
/// other content.
pub fn content_hash(
    job_type: &str,
    jobs: &[Value],
    options: &RequestOptions,
    tenant: Option<&str>,
) -> String {
    let mut opts = serde_json::json!({
        "max_attempts": options.max_attempts,
        "target": options.target.map(Target::as_str),
    });
    // Options added later count only when set, so older requests keep their hashes.
    for (k, v) in [
        (
            "tolerated_failure_percent",
            options
                .tolerated_failure_percent
                .map(serde_json::Value::from),
        ),
        (
            "tolerated_failure_count",
            options.tolerated_failure_count.map(serde_json::Value::from),
        ),
        (
            "results",
            options
                .results
                .as_ref()
                .map(|r| serde_json::json!({"s3_prefix": r.s3_prefix})),
        ),
    ] {
        if let Some(v) = v {
            opts[k] = v;
        }
    }
    // The canonical JSON of {"job_type", "jobs", "options", "tenant"?} (keys in that order,
    // sorted), hashed as it is written: the jobs are not copied into one document.
    let mut h = Hashing(Sha256::new());
    use std::fmt::Write as _;
    let _ = write!(h, "{{\"job_type\":{},\"jobs\":[", Value::from(job_type));
    for (i, j) in jobs.iter().enumerate() {
        if i > 0 {
            let _ = h.write_str(",");
        }
        write_canonical(j, &mut h);
    }
    let _ = h.write_str("],\"options\":");
    write_canonical(&opts, &mut h);
    if let Some(t) = tenant {
        let _ = write!(h, ",\"tenant\":{}", Value::from(t));
    }
    let _ = h.write_str("}");
    let digest = h.0.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks everything and builds the jobs and their messages, for a request whose jobs need no
/// listing (`jobs` or `range`; a `source` needs [`super::group_objects`] first, then
/// [`build`]).
pub fn validate(
    file: RequestFile,
    max_message_bytes: usize,
    now_ms: u64,
) -> Result<ValidRequest, RequestError> {
    match check(file)?.into_parts() {
        (file, JobsPlan::Ready(jobs)) => {
            build(file, jobs, &Limits::new(max_message_bytes), None, now_ms)
        }
        (_, JobsPlan::List(..) | JobsPlan::Manifest(..)) => Err(field(
            "source",
            "the prefix must be listed or the manifest read first (Producer::prepare)",
        )),
    }
}

/// The limits a request is built within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message body (`limits.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Most partitions the request's job items are spread over (`ledger.max_job_shards`).
    pub max_job_shards: u32,
    /// The window of a request without `options.max_concurrency` (`limits.window`; 0:
    /// none).
    pub window: u32,
}

impl Limits {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            max_job_shards: fleet_shared::config::LedgerConfig::default().max_job_shards,
            window: fleet_shared::config::LimitsConfig::default().window,
        }
    }

    pub fn from_config(c: &fleet_shared::config::Config) -> Self {
        Self {
            max_message_bytes: c.limits.max_message_bytes,
            max_job_shards: c.ledger.max_job_shards,
            window: c.limits.window,
        }
    }
}

/// Checks everything and builds the jobs and their messages from the request's (given or
/// generated) job payloads. Payloads over the claim-check's inline limit are replaced by
/// references and listed in `uploads`.
pub fn build(
    file: RequestFile,
    payloads: Vec<Value>,
    limits: &Limits,
    claim_check: Option<&ClaimCheck>,
    now_ms: u64,
) -> Result<ValidRequest, RequestError> {
    let max_message_bytes = limits.max_message_bytes;
    let request_id = match &file.request_id {
        Some(id) => {
            ids::validate_request_id(id).map_err(|e| field("request_id", e))?;
            id.clone()
        }
        None => new_request_id(),
    };
    ids::validate_job_type(&file.job_type).map_err(|e| field("job_type", e))?;
    if let Some(t) = &file.tenant {
        ids::validate_request_id(t).map_err(|e| field("tenant", e))?;
    }
    let jobs_field = if file.source.is_some() {
        "source"
    } else {
        "jobs"
    };
    if payloads.is_empty() {
        return Err(field(
            jobs_field,
            match &file.source {
                Some(SourceSpec {
                    s3_manifest: Some(m),
                    ..
                }) => format!("no rows in {m}"),
                Some(s) => format!(
                    "no objects under {}",
                    s.s3_prefix.as_deref().unwrap_or_default()
                ),
                None => "a request needs at least one job".into(),
            },
        ));
    }
    if payloads.len() > MAX_JOBS_PER_REQUEST as usize {
        return Err(field(
            jobs_field,
            format!(
                "{} jobs is over the limit of {MAX_JOBS_PER_REQUEST} per request",
                payloads.len()
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
    if let Some(p) = file.options.tolerated_failure_percent
        && !(p.is_finite() && (0.0..=100.0).contains(&p))
    {
        return Err(field(
            "options.tolerated_failure_percent",
            format!("must be 0 to 100, got {p}"),
        ));
    }
    let results_prefix = match &file.options.results {
        None => None,
        Some(r) => Some(
            fleet_shared::results::export_base(&r.s3_prefix)
                .map_err(|reason| field("options.results.s3_prefix", reason))?
                .to_string(),
        ),
    };
    if let Some(n) = file.options.max_concurrency
        && !(1..=MAX_WINDOW).contains(&n)
    {
        return Err(field(
            "options.max_concurrency",
            format!("must be 1 to {MAX_WINDOW}, got {n}"),
        ));
    }
    let window = file
        .options
        .max_concurrency
        .or((limits.window > 0).then_some(limits.window));
    // The first window's jobs are written released and sent as they are written; the rest
    // are held until jobs finish.
    let released = window.map_or(0, |w| w.min(payloads.len() as u32));
    let hash = content_hash(
        &file.job_type,
        &payloads,
        &file.options,
        file.tenant.as_deref(),
    );
    let routing = file.options.target.map(|t| RoutingHint {
        target: Some(t),
        estimated_secs: None,
    });
    let job_shards = fleet_shared::config::LedgerConfig {
        max_job_shards: limits.max_job_shards,
        ..Default::default()
    }
    .job_shards(payloads.len() as u32);
    let mut jobs = Vec::with_capacity(payloads.len());
    let mut bodies = Vec::with_capacity(payloads.len());
    let mut uploads = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let job = JobId::new(&request_id, i as u32).map_err(|e| field(format!("jobs[{i}]"), e))?;
        let mut payload_json = payload.to_string();
        let mut payload = payload;
        if let Some(cc) = claim_check
            && payload_json.len() > cc.inline_max_bytes
        {
            let uri = claim_check::object_uri(&cc.prefix, &request_id, i as u32);
            payload = claim_check::reference(&uri, payload_json.as_bytes());
            let body = std::mem::replace(&mut payload_json, payload.to_string());
            uploads.push((i as u32, uri, body.into_bytes()));
        }
        if payload_json.len() > MAX_LEDGER_PAYLOAD_BYTES {
            return Err(field(
                format!("{jobs_field}[{i}]"),
                format!(
                    "payload is {} bytes, over the ledger's limit of {MAX_LEDGER_PAYLOAD_BYTES} (configure claim_check.prefix to keep large payloads in S3)",
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
            tenant: file.tenant.clone(),
        };
        let body = message.to_body();
        if body.len() > max_message_bytes {
            return Err(field(
                format!("{jobs_field}[{i}]"),
                format!(
                    "the job's message is {} bytes, over the limit of {max_message_bytes} (limits.max_message_bytes)",
                    body.len()
                ),
            ));
        }
        jobs.push(NewJob {
            key: fleet_shared::ledger::item::job_key(&job, job_shards),
            job,
            job_type: file.job_type.clone(),
            payload_json,
            max_attempts: file.options.max_attempts,
            target: file.options.target,
            created_at_ms: now_ms,
            held: window.is_some() && i as u32 >= released,
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
            job_shards,
            written: 0,
            cancelled_at_ms: None,
            stop_running: false,
            tolerated_failures: file.options.tolerated_failures(jobs.len() as u32),
            failed: None,
            window,
            capped: file.options.max_concurrency.is_some(),
            released,
            tenant: file.tenant,
            releaser: None,
            results_prefix,
            // A sweeper checks it once it may have finished (and sends the event a replica
            // that stopped did not).
            completion: fleet_shared::ledger::Completion {
                check_at_ms: Some(now_ms),
                ..Default::default()
            },
        },
        jobs,
        bodies,
        uploads,
    })
}
