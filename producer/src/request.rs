//! The request file: `{"request_id"?, "job_type", "jobs": [payload, ...], "options"?:
//! {"max_attempts"?, "target"?}}`, where `jobs` may instead be generated from
//! `"source": {"s3_prefix", "group_bytes"?, "max_objects_per_job"?}` (one job per object or
//! group of objects) or `"range": {"start", "end", "chunk"}` (one job per chunk), with
//! `"params"` handed to every generated job. It is validated completely, every job's message
//! built and measured, before anything is written anywhere.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use fleet_shared::claim_check;
use fleet_shared::ids::{self, JobId, MAX_JOBS_PER_REQUEST};
use fleet_shared::ledger::{NewJob, RequestRecord};
use fleet_shared::message::{JobMessage, MAX_ATTEMPTS_LIMIT, MESSAGE_VERSION, RoutingHint, Target};
use fleet_shared::s3::S3Uri;

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
}

/// `{"s3_prefix": "s3://bucket/prefix/", "group_bytes"?: N, "max_objects_per_job"?: N}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub s3_prefix: String,
    /// Consecutive objects (in key order) are grouped into one job up to this many bytes; an
    /// object larger than this is a job of its own. Without it, one job per object.
    #[serde(default)]
    pub group_bytes: Option<u64>,
    /// At most this many objects per job.
    #[serde(default)]
    pub max_objects_per_job: Option<u32>,
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

/// One object under a source prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// How a request's jobs are to be obtained, after the checks that need no AWS call.
#[derive(Debug, Clone, PartialEq)]
pub enum JobsPlan {
    /// Listed, or generated from a range: ready.
    Ready(Vec<Value>),
    /// The objects under this prefix, to be listed.
    List(S3Uri, SourceSpec),
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

/// Most objects one source listing may turn into jobs: [`MAX_JOBS_PER_REQUEST`] jobs of up
/// to this many objects each bounds the listing too.
pub const MAX_OBJECTS_PER_JOB: u32 = 10_000;

/// The checks that need no AWS call, and the jobs of `jobs` and `range` requests.
pub fn plan(file: &RequestFile) -> Result<JobsPlan, RequestError> {
    let given = [
        file.jobs.is_some(),
        file.source.is_some(),
        file.range.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(field(
            "jobs",
            "give exactly one of jobs, source (an S3 prefix) or range",
        ));
    }
    if let Some(p) = &file.params {
        if file.jobs.is_some() {
            return Err(field(
                "params",
                "only for jobs generated from source or range; put it in each job's payload",
            ));
        }
        if !p.is_object() {
            return Err(field("params", "must be a JSON object"));
        }
    }
    let with_params = |mut payload: Value| {
        if let (Some(p), Some(map)) = (&file.params, payload.as_object_mut()) {
            map.insert("params".into(), p.clone());
        }
        payload
    };
    if let Some(jobs) = &file.jobs {
        return Ok(JobsPlan::Ready(jobs.clone()));
    }
    if let Some(r) = file.range {
        if r.chunk == 0 {
            return Err(field("range.chunk", "must be at least 1"));
        }
        if r.end <= r.start {
            return Err(field(
                "range.end",
                format!("must be above range.start ({})", r.start),
            ));
        }
        let span = (i128::from(r.end) - i128::from(r.start)) as u128;
        let count = span.div_ceil(u128::from(r.chunk));
        if count > u128::from(MAX_JOBS_PER_REQUEST) {
            return Err(field(
                "range.chunk",
                format!(
                    "{count} chunks is over the limit of {MAX_JOBS_PER_REQUEST} jobs per request"
                ),
            ));
        }
        let jobs = (0..count)
            .map(|i| {
                let lo = i128::from(r.start) + (i * u128::from(r.chunk)) as i128;
                let hi = (lo + i128::from(r.chunk)).min(i128::from(r.end));
                with_params(serde_json::json!({"range": {"start": lo as i64, "end": hi as i64}}))
            })
            .collect();
        return Ok(JobsPlan::Ready(jobs));
    }
    let Some(source) = &file.source else {
        return Err(field("jobs", "no jobs"));
    };
    let uri = S3Uri::parse(&source.s3_prefix).map_err(|e| field("source.s3_prefix", e))?;
    if source.group_bytes == Some(0) {
        return Err(field("source.group_bytes", "must be at least 1"));
    }
    if let Some(n) = source.max_objects_per_job
        && !(1..=MAX_OBJECTS_PER_JOB).contains(&n)
    {
        return Err(field(
            "source.max_objects_per_job",
            format!("must be 1 to {MAX_OBJECTS_PER_JOB}"),
        ));
    }
    Ok(JobsPlan::List(uri, source.clone()))
}

/// The jobs of a listed source: objects (in the listing's key order) grouped up to
/// `group_bytes` and `max_objects_per_job`. The same objects always give the same jobs, so
/// the same prefix content re-submitted under the same request id is the same request.
pub fn group_objects(
    prefix: &S3Uri,
    spec: &SourceSpec,
    params: Option<&Value>,
    objects: &[SourceObject],
) -> Vec<Value> {
    let max_objects = spec.max_objects_per_job.unwrap_or(match spec.group_bytes {
        Some(_) => MAX_OBJECTS_PER_JOB,
        None => 1,
    }) as usize;
    let mut groups: Vec<&[SourceObject]> = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, o) in objects.iter().enumerate() {
        let full = i > start
            && (i - start >= max_objects
                || spec
                    .group_bytes
                    .is_some_and(|g| bytes.saturating_add(o.size) > g));
        if full {
            groups.push(&objects[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(o.size);
    }
    if start < objects.len() {
        groups.push(&objects[start..]);
    }
    groups
        .into_iter()
        .map(|g| {
            let list: Vec<Value> = g
                .iter()
                .map(|o| serde_json::json!({"key": o.key, "size": o.size, "etag": o.etag}))
                .collect();
            let mut payload = serde_json::json!({"source": {
                "bucket": prefix.bucket,
                "prefix": prefix.key,
                "objects": list,
                "bytes": g.iter().map(|o| o.size).sum::<u64>(),
            }});
            if let (Some(p), Some(map)) = (params, payload.as_object_mut()) {
                map.insert("params".into(), p.clone());
            }
            payload
        })
        .collect()
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

/// SHA-256 of the request's content (job type, jobs, options), hex. For `source` and
/// `range` requests the jobs are the generated ones, so a prefix whose objects changed is
/// other content.
pub fn content_hash(job_type: &str, jobs: &[Value], options: &RequestOptions) -> String {
    let doc = serde_json::json!({
        "job_type": job_type,
        "jobs": jobs,
        "options": {
            "max_attempts": options.max_attempts,
            "target": options.target.map(Target::as_str),
        },
    });
    let digest = Sha256::digest(canonical_json(&doc).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks everything and builds the jobs and their messages, for a request whose jobs need no
/// listing (`jobs` or `range`; a `source` needs [`group_objects`] first, then [`build`]).
pub fn validate(
    file: RequestFile,
    max_message_bytes: usize,
    now_ms: u64,
) -> Result<ValidRequest, RequestError> {
    match plan(&file)? {
        JobsPlan::Ready(jobs) => build(file, jobs, &Limits::new(max_message_bytes), None, now_ms),
        JobsPlan::List(..) => Err(field(
            "source",
            "the prefix must be listed first (Producer::prepare)",
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
}

impl Limits {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            max_job_shards: fleet_shared::config::LedgerConfig::default().max_job_shards,
        }
    }

    pub fn from_config(c: &fleet_shared::config::Config) -> Self {
        Self {
            max_message_bytes: c.limits.max_message_bytes,
            max_job_shards: c.ledger.max_job_shards,
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
    let jobs_field = if file.source.is_some() {
        "source"
    } else {
        "jobs"
    };
    if payloads.is_empty() {
        return Err(field(
            jobs_field,
            match &file.source {
                Some(s) => format!("no objects under {}", s.s3_prefix),
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
    let hash = content_hash(&file.job_type, &payloads, &file.options);
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
        },
        jobs,
        bodies,
        uploads,
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
        let h = |t: &str| check(t).unwrap().record.content_hash;
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
    fn ranges_split_exactly() {
        let v = check(
            r#"{"request_id": "r", "job_type": "t", "range": {"start": -5, "end": 17, "chunk": 5}, "params": {"k": 1}}"#,
        )
        .unwrap();
        let ranges: Vec<(i64, i64)> = v
            .jobs
            .iter()
            .map(|j| {
                let p: Value = serde_json::from_str(&j.payload_json).unwrap();
                assert_eq!(p["params"]["k"], 1);
                (
                    p["range"]["start"].as_i64().unwrap(),
                    p["range"]["end"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ranges, vec![(-5, 0), (0, 5), (5, 10), (10, 15), (15, 17)]);
        // Extremes do not overflow.
        let v = check(&format!(
            r#"{{"job_type": "t", "range": {{"start": {}, "end": {}, "chunk": {}}}}}"#,
            i64::MIN,
            i64::MAX,
            u64::MAX
        ))
        .unwrap();
        assert_eq!(v.jobs.len(), 1);
    }

    fn objects(sizes: &[u64]) -> Vec<SourceObject> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, s)| SourceObject {
                key: format!("in/{i:04}.csv"),
                size: *s,
                etag: format!("e{i}"),
            })
            .collect()
    }

    fn group_sizes(spec: &str, sizes: &[u64]) -> Vec<Vec<u64>> {
        let spec: SourceSpec = serde_json::from_str(spec).unwrap();
        let prefix = S3Uri::parse("s3://bkt/in/").unwrap();
        group_objects(&prefix, &spec, None, &objects(sizes))
            .iter()
            .map(|p| {
                assert_eq!(p["source"]["bucket"], "bkt");
                assert_eq!(p["source"]["prefix"], "in/");
                let objs = p["source"]["objects"].as_array().unwrap();
                let sizes: Vec<u64> = objs.iter().map(|o| o["size"].as_u64().unwrap()).collect();
                assert_eq!(
                    p["source"]["bytes"].as_u64().unwrap(),
                    sizes.iter().sum::<u64>()
                );
                sizes
            })
            .collect()
    }

    #[test]
    fn objects_group_by_bytes_and_count_in_key_order() {
        let one = r#"{"s3_prefix": "s3://bkt/in/"}"#;
        assert_eq!(
            group_sizes(one, &[5, 6, 7]),
            vec![vec![5], vec![6], vec![7]]
        );
        let by_bytes = r#"{"s3_prefix": "s3://bkt/in/", "group_bytes": 10}"#;
        assert_eq!(
            group_sizes(by_bytes, &[4, 6, 1, 30, 2, 2, 9]),
            vec![vec![4, 6], vec![1], vec![30], vec![2, 2], vec![9]]
        );
        let both = r#"{"s3_prefix": "s3://bkt/in/", "group_bytes": 100, "max_objects_per_job": 2}"#;
        assert_eq!(
            group_sizes(both, &[1, 1, 1, 1, 1]),
            vec![vec![1, 1], vec![1, 1], vec![1]]
        );
        // The same objects give the same jobs, hence the same content hash.
        let spec: SourceSpec = serde_json::from_str(by_bytes).unwrap();
        let prefix = S3Uri::parse("s3://bkt/in/").unwrap();
        let a = group_objects(&prefix, &spec, None, &objects(&[3, 4, 5]));
        let b = group_objects(&prefix, &spec, None, &objects(&[3, 4, 5]));
        let opts = RequestOptions::default();
        assert_eq!(content_hash("t", &a, &opts), content_hash("t", &b, &opts));
        let c = group_objects(&prefix, &spec, None, &objects(&[3, 4, 6]));
        assert_ne!(content_hash("t", &a, &opts), content_hash("t", &c, &opts));
    }

    #[test]
    fn large_payloads_are_replaced_by_references() {
        let big = "x".repeat(5000);
        let file = parse(&format!(
            r#"{{"request_id": "r9", "job_type": "t", "jobs": [{{"small": 1}}, {{"blob": "{big}"}}]}}"#
        ))
        .unwrap();
        let payloads = file.jobs.clone().unwrap();
        let cc = ClaimCheck {
            prefix: S3Uri::parse("s3://bkt/payloads/").unwrap(),
            inline_max_bytes: 1024,
        };
        let v = build(
            file,
            payloads.clone(),
            &Limits::new(DEFAULT_MAX_MESSAGE_BYTES),
            Some(&cc),
            1,
        )
        .unwrap();
        assert_eq!(v.uploads.len(), 1);
        let (index, uri, bytes) = &v.uploads[0];
        assert_eq!(*index, 1);
        assert_eq!(uri.to_string(), "s3://bkt/payloads/r9/000000001.json");
        assert_eq!(serde_json::from_slice::<Value>(bytes).unwrap(), payloads[1]);
        assert_eq!(v.jobs[0].payload_json, payloads[0].to_string());
        let stored: Value = serde_json::from_str(&v.jobs[1].payload_json).unwrap();
        let r = claim_check::reference_in(&stored).unwrap().unwrap();
        assert_eq!(r.uri, uri.to_string());
        assert_eq!(r.bytes, bytes.len() as u64);
        let (m, _) = parse_message(&v.bodies[1], DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(m.payload, stored);
        // The hash is of the content, not of the references.
        assert_eq!(
            v.record.content_hash,
            content_hash("t", &payloads, &RequestOptions::default())
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
            (r#"{"job_type": "t"}"#.into(), "jobs: give exactly one of"),
            (
                r#"{"job_type": "t", "jobs": [1], "range": {"start": 0, "end": 1, "chunk": 1}}"#
                    .into(),
                "jobs: give exactly one of",
            ),
            (
                r#"{"job_type": "t", "jobs": [1], "params": {}}"#.into(),
                "params: only for jobs generated",
            ),
            (
                r#"{"job_type": "t", "range": {"start": 0, "end": 9, "chunk": 1}, "params": 3}"#
                    .into(),
                "params: must be a JSON object",
            ),
            (
                r#"{"job_type": "t", "range": {"start": 5, "end": 5, "chunk": 1}}"#.into(),
                "range.end: must be above",
            ),
            (
                r#"{"job_type": "t", "range": {"start": 0, "end": 5, "chunk": 0}}"#.into(),
                "range.chunk: must be at least 1",
            ),
            (
                r#"{"job_type": "t", "range": {"start": 0, "end": 9000000000, "chunk": 1}}"#
                    .into(),
                "range.chunk: 9000000000 chunks is over the limit",
            ),
            (
                r#"{"job_type": "t", "range": {"start": 0, "end": 5, "step": 1}}"#.into(),
                "unknown field `step`",
            ),
            (
                r#"{"job_type": "t", "source": {"s3_prefix": "bucket/in/"}}"#.into(),
                "source.s3_prefix: must start with s3://",
            ),
            (
                r#"{"job_type": "t", "source": {"s3_prefix": "s3://bkt/in/", "group_bytes": 0}}"#
                    .into(),
                "source.group_bytes: must be at least 1",
            ),
            (
                r#"{"job_type": "t", "source": {"s3_prefix": "s3://bkt/in/", "max_objects_per_job": 0}}"#
                    .into(),
                "source.max_objects_per_job: must be 1 to",
            ),
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
