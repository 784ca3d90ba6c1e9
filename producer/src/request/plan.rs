//! What a request's jobs are, as far as that needs no AWS call: the checks of its shape, the
//! jobs of a `jobs` or `range` request, the prefix a `source` request lists; then the
//! grouping of a listed prefix's objects into jobs.

use serde_json::Value;

use fleet_shared::ids::MAX_JOBS_PER_REQUEST;
use fleet_shared::s3::S3Uri;
use fleet_shared::s3_list::S3Object;

use super::{MAX_LINES_PER_JOB, ManifestFormat, RequestError, RequestFile, SourceSpec, field};

/// How a request's jobs are to be obtained, after the checks that need no AWS call.
#[derive(Debug, Clone, PartialEq)]
pub enum JobsPlan {
    /// Listed, or generated from a range: ready.
    Ready(Vec<Value>),
    /// The objects under this prefix, to be listed.
    List(S3Uri, SourceSpec),
    /// The rows of this object, to be read: this many per job.
    Manifest(S3Uri, ManifestFormat, u32),
}

/// A request file whose checks that need no AWS call passed, with its [`JobsPlan`]: what
/// [`crate::Producer::prepare`] takes, so a submission plans its jobs once (the CLI checks a
/// file before it connects to anything, then submits what it checked).
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    file: RequestFile,
    plan: JobsPlan,
}

impl CheckedRequest {
    pub fn file(&self) -> &RequestFile {
        &self.file
    }

    pub fn plan(&self) -> &JobsPlan {
        &self.plan
    }

    pub fn into_parts(self) -> (RequestFile, JobsPlan) {
        (self.file, self.plan)
    }
}

/// The checks that need no AWS call, and the jobs of `jobs` and `range` requests.
pub fn check(file: RequestFile) -> Result<CheckedRequest, RequestError> {
    let plan = plan(&file)?;
    Ok(CheckedRequest { file, plan })
}

/// Most objects one source listing may turn into jobs: [`MAX_JOBS_PER_REQUEST`] jobs of up
/// to this many objects each bounds the listing too.
pub const MAX_OBJECTS_PER_JOB: u32 = 10_000;

/// What [`check`] checks and plans.
fn plan(file: &RequestFile) -> Result<JobsPlan, RequestError> {
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
    if let Some(m) = &source.s3_manifest {
        return plan_manifest(m, source);
    }
    if source.format.is_some() || source.lines_per_job.is_some() {
        return Err(field(
            "source.s3_manifest",
            "format and lines_per_job are for a manifest: give s3_manifest",
        ));
    }
    let Some(prefix) = &source.s3_prefix else {
        return Err(field(
            "source",
            "give s3_prefix (one job per object) or s3_manifest (one job per rows of an object)",
        ));
    };
    let uri = S3Uri::parse(prefix).map_err(|e| field("source.s3_prefix", e))?;
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

/// The plan of a manifest source: its object, format and rows per job.
fn plan_manifest(manifest: &str, source: &SourceSpec) -> Result<JobsPlan, RequestError> {
    if source.s3_prefix.is_some()
        || source.group_bytes.is_some()
        || source.max_objects_per_job.is_some()
    {
        return Err(field(
            "source.s3_manifest",
            "give s3_manifest or s3_prefix (with group_bytes, max_objects_per_job), not both",
        ));
    }
    let uri = S3Uri::parse(manifest).map_err(|e| field("source.s3_manifest", e))?;
    if uri.key.is_empty() || uri.key.ends_with('/') {
        return Err(field("source.s3_manifest", "names a prefix, not an object"));
    }
    let lower = uri.key.to_ascii_lowercase();
    let format = match source.format {
        Some(f) => f,
        None if lower.ends_with(".csv") => ManifestFormat::Csv,
        None if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") => ManifestFormat::Jsonl,
        None => {
            return Err(field(
                "source.format",
                "give \"csv\" or \"jsonl\" (the object's name does not say)",
            ));
        }
    };
    let n = source.lines_per_job.unwrap_or(1);
    if !(1..=MAX_LINES_PER_JOB).contains(&n) {
        return Err(field(
            "source.lines_per_job",
            format!("must be 1 to {MAX_LINES_PER_JOB}"),
        ));
    }
    Ok(JobsPlan::Manifest(uri, format, n))
}

/// The jobs of a listed source: objects (in the listing's key order) grouped up to
/// `group_bytes` and `max_objects_per_job`. The same objects always give the same jobs, so
/// the same prefix content re-submitted under the same request id is the same request.
pub fn group_objects(
    prefix: &S3Uri,
    spec: &SourceSpec,
    params: Option<&Value>,
    objects: &[S3Object],
) -> Vec<Value> {
    let max_objects = spec.max_objects_per_job.unwrap_or(match spec.group_bytes {
        Some(_) => MAX_OBJECTS_PER_JOB,
        None => 1,
    }) as usize;
    let mut groups: Vec<&[S3Object]> = Vec::new();
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
