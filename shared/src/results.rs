//! A request's results: read a page at a time, and exported to S3.
//!
//! **Results.** One line per finished job: a succeeded job's result (inline on its lean
//! item, else from its result item, and fetched from S3 when the ledger keeps only its
//! reference) and a failed job's error. A page is one pass of the request's job listing, so
//! reading every result holds one page in memory whatever the request's size.
//!
//! **Export.** JSON Lines files per final state (`<prefix>succeeded/part-00000.jsonl`,
//! `failed/…`, `cancelled/…`), each at most [`PART_BYTES`] (one [`ResultLine`] per job),
//! then `<prefix>manifest.json` listing the files with their lines and bytes, and the counts.
//! The manifest is written last: a reader that finds it finds every file it lists. The files
//! follow the ledger's order and a finished request's results do not change, so exporting
//! again writes the same objects under the same keys (no duplicates). One page of results
//! and one part per state are held in memory. `fleet-producer export` runs it after the
//! fact; a replica runs it when a request with `options.results.s3_prefix` finishes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ids::JobId;
use crate::ledger::item::{self, ResultAt};
use crate::ledger::{JobDetail, LedgerError, RequestLedger};
use crate::s3::S3Uri;
use crate::state::JobState;

/// The largest part file, in bytes (a part ends before the line that would pass it; a
/// single larger line is a part of its own).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Results read per page while exporting.
const EXPORT_PAGE: usize = 500;

/// Why results could not be read or exported.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// S3 failed, or a recorded result is not what it should be.
    #[error("{0}")]
    Storage(String),
}

/// One finished job's line in a request's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultLine {
    pub job_id: String,
    pub index: u32,
    pub state: JobState,
    pub attempts: u32,
    /// What a succeeded job returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why a failed job failed: its error class and last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The states `results` lists: the final ones.
pub fn is_result_state(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

/// The results of `page` (jobs of a request spread over `shards` partitions) in `state`,
/// or in any final state.
pub async fn lines<L: RequestLedger>(
    ledger: &L,
    s3: Option<&aws_sdk_s3::Client>,
    page: &[JobDetail],
    shards: u32,
    state: Option<JobState>,
) -> Result<Vec<ResultLine>, ResultsError> {
    let mut items = Vec::new();
    for j in page
        .iter()
        .filter(|j| is_result_state(j.state) && state.is_none_or(|s| s == j.state))
    {
        items.push(line(ledger, s3, j, shards).await?);
    }
    Ok(items)
}

async fn line<L: RequestLedger>(
    ledger: &L,
    s3: Option<&aws_sdk_s3::Client>,
    j: &JobDetail,
    shards: u32,
) -> Result<ResultLine, ResultsError> {
    let text = match &j.result {
        ResultAt::None => None,
        ResultAt::Inline(r) => Some(r.clone()),
        ResultAt::Item(_) => {
            let job = JobId::parse(&j.job_id).map_err(|e| LedgerError::Malformed {
                key: j.job_id.clone(),
                message: e.to_string(),
            })?;
            ledger.result(&item::job_key(&job, shards)).await?
        }
    };
    let result = match text {
        Some(t) => {
            let bytes = result_bytes(s3, t).await?;
            Some(serde_json::from_slice(&bytes).map_err(|e| {
                ResultsError::Storage(format!(
                    "job {}'s recorded result is not JSON: {e}",
                    j.job_id
                ))
            })?)
        }
        None => None,
    };
    Ok(ResultLine {
        job_id: j.job_id.clone(),
        index: j.index,
        state: j.state,
        attempts: j.attempts,
        result: (j.state == JobState::Succeeded).then(|| result.unwrap_or_default()),
        error_class: j.error_class.map(|c| c.as_str().to_owned()),
        error: j.last_error.clone(),
    })
}

/// A recorded result's bytes: the S3 object when the ledger keeps only its reference.
pub async fn result_bytes(
    s3: Option<&aws_sdk_s3::Client>,
    text: String,
) -> Result<Vec<u8>, ResultsError> {
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    match crate::claim_check::result_reference_in(&value) {
        None => Ok(text.into_bytes()),
        Some(r) => {
            let r = r.map_err(|e| ResultsError::Storage(e.to_string()))?;
            let s3 = s3.ok_or_else(|| ResultsError::Storage("no S3 client".into()))?;
            crate::claim_check::fetch(s3, &r)
                .await
                .map_err(|e| ResultsError::Storage(e.to_string()))
        }
    }
}

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExportFile {
    /// `s3://bucket/key`.
    pub uri: String,
    pub state: JobState,
    pub lines: u64,
    pub bytes: u64,
}

/// `manifest.json`: what an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub request_id: String,
    /// `s3://bucket/key` of this manifest.
    pub manifest: String,
    /// Jobs per final state.
    pub counts: BTreeMap<JobState, u64>,
    pub files: Vec<ExportFile>,
    /// Bytes of every file.
    pub bytes: u64,
}

/// The prefix an export writes under, from `s3://bucket/prefix` (a prefix that does not end
/// in `/` gets one).
pub fn export_base(to: &str) -> Result<S3Uri, String> {
    let mut base = S3Uri::parse(to)?;
    if !base.key.is_empty() && !base.key.ends_with('/') {
        base.key.push('/');
    }
    Ok(base)
}

/// The part being filled for one state.
#[derive(Debug, Default)]
struct Part {
    body: Vec<u8>,
    lines: u64,
    /// Parts of this state written so far.
    written: u32,
}

/// Exports the results of finished request `request_id` (its jobs over `shards`
/// partitions) under `base` (see [`export_base`]). The caller checks that it is finished.
pub async fn export<L: RequestLedger>(
    ledger: &L,
    s3: &aws_sdk_s3::Client,
    request_id: &str,
    shards: u32,
    base: &S3Uri,
) -> Result<Manifest, ResultsError> {
    let mut parts: BTreeMap<JobState, Part> = BTreeMap::new();
    let mut manifest = Manifest {
        request_id: request_id.to_owned(),
        manifest: format!("s3://{}/{}manifest.json", base.bucket, base.key),
        counts: BTreeMap::new(),
        files: Vec::new(),
        bytes: 0,
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = ledger
            .jobs_page(request_id, shards, cursor.as_deref(), EXPORT_PAGE)
            .await?;
        for line in lines(ledger, Some(s3), &page.items, shards, None).await? {
            let mut text = serde_json::to_vec(&line)
                .map_err(|e| ResultsError::Storage(format!("encoding a result: {e}")))?;
            text.push(b'\n');
            *manifest.counts.entry(line.state).or_default() += 1;
            let part = parts.entry(line.state).or_default();
            if !part.body.is_empty() && part.body.len() + text.len() > PART_BYTES {
                let file = write_part(s3, base, line.state, part).await?;
                manifest.files.push(file);
            }
            part.body.extend_from_slice(&text);
            part.lines += 1;
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    for (state, part) in parts.iter_mut() {
        if !part.body.is_empty() {
            let file = write_part(s3, base, *state, part).await?;
            manifest.files.push(file);
        }
    }
    manifest.files.sort_by(|a, b| a.uri.cmp(&b.uri));
    manifest.bytes = manifest.files.iter().map(|f| f.bytes).sum();
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ResultsError::Storage(format!("encoding the manifest: {e}")))?;
    let uri = S3Uri {
        bucket: base.bucket.clone(),
        key: format!("{}manifest.json", base.key),
    };
    crate::claim_check::put(s3, &uri, body)
        .await
        .map_err(ResultsError::Storage)?;
    Ok(manifest)
}

/// Writes `part` as the next file of `state` and empties it.
async fn write_part(
    s3: &aws_sdk_s3::Client,
    base: &S3Uri,
    state: JobState,
    part: &mut Part,
) -> Result<ExportFile, ResultsError> {
    let uri = S3Uri {
        bucket: base.bucket.clone(),
        key: format!(
            "{}{}/part-{:05}.jsonl",
            base.key,
            state.as_str().to_ascii_lowercase(),
            part.written
        ),
    };
    let body = std::mem::take(&mut part.body);
    let file = ExportFile {
        uri: format!("s3://{}/{}", uri.bucket, uri.key),
        state,
        lines: part.lines,
        bytes: body.len() as u64,
    };
    crate::claim_check::put(s3, &uri, body)
        .await
        .map_err(ResultsError::Storage)?;
    part.lines = 0;
    part.written += 1;
    Ok(file)
}
