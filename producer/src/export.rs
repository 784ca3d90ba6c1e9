//! Exporting a finished request's results to S3: JSON Lines files per final state
//! (`<prefix>succeeded/part-00000.jsonl`, `failed/…`, `cancelled/…`), each at most
//! [`PART_BYTES`] (one line per job: [`ResultLine`]), then `<prefix>manifest.json` listing
//! the files with their lines and bytes, and the counts. The manifest is written last: a
//! reader that finds it finds every file it lists. The files follow the ledger's order and
//! a finished request's results do not change, so exporting again writes the same objects
//! under the same keys (no duplicates). One page of results and one part per state are held
//! in memory, whatever the request's size.

use std::collections::BTreeMap;

use fleet_shared::ledger::RequestLedger;
use fleet_shared::queue::JobQueue;
use fleet_shared::s3::S3Uri;
use fleet_shared::state::JobState;
use serde::Serialize;

use crate::{Producer, ProducerError, RequestError};

/// The largest part file, in bytes (a part ends before the line that would pass it; a
/// single larger line is a part of its own).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Results read per page while exporting.
const EXPORT_PAGE: usize = 500;

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

/// The part being filled for one state.
#[derive(Debug, Default)]
struct Part {
    body: Vec<u8>,
    lines: u64,
    /// Parts of this state written so far.
    written: u32,
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// Exports the results of finished request `request_id` under `to` (`s3://bucket/prefix`;
    /// a prefix that does not end in `/` gets one). A request with unfinished jobs is
    /// refused before anything is written.
    pub async fn export(&self, request_id: &str, to: &str) -> Result<Manifest, ProducerError> {
        let mut base = S3Uri::parse(to).map_err(|reason| {
            ProducerError::Invalid(RequestError::Field {
                field: "to".into(),
                reason,
            })
        })?;
        if !base.key.is_empty() && !base.key.ends_with('/') {
            base.key.push('/');
        }
        self.require_done(
            request_id,
            "its results are exported once every job is, and nothing was written",
        )
        .await?;
        let s3 = self.s3()?.clone();
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
            let page = self
                .results_page(request_id, None, cursor.as_deref(), EXPORT_PAGE)
                .await?;
            for line in &page.items {
                let mut text = serde_json::to_vec(line)
                    .map_err(|e| ProducerError::Storage(format!("encoding a result: {e}")))?;
                text.push(b'\n');
                *manifest.counts.entry(line.state).or_default() += 1;
                let part = parts.entry(line.state).or_default();
                if !part.body.is_empty() && part.body.len() + text.len() > PART_BYTES {
                    let file = write_part(&s3, &base, line.state, part).await?;
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
                let file = write_part(&s3, &base, *state, part).await?;
                manifest.files.push(file);
            }
        }
        manifest.files.sort_by(|a, b| a.uri.cmp(&b.uri));
        manifest.bytes = manifest.files.iter().map(|f| f.bytes).sum();
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ProducerError::Storage(format!("encoding the manifest: {e}")))?;
        let uri = S3Uri {
            bucket: base.bucket.clone(),
            key: format!("{}manifest.json", base.key),
        };
        fleet_shared::claim_check::put(&s3, &uri, body)
            .await
            .map_err(ProducerError::Storage)?;
        Ok(manifest)
    }
}

/// Writes `part` as the next file of `state` and empties it.
async fn write_part(
    s3: &aws_sdk_s3::Client,
    base: &S3Uri,
    state: JobState,
    part: &mut Part,
) -> Result<ExportFile, ProducerError> {
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
    fleet_shared::claim_check::put(s3, &uri, body)
        .await
        .map_err(ProducerError::Storage)?;
    part.lines = 0;
    part.written += 1;
    Ok(file)
}
