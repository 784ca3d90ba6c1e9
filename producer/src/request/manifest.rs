//! Jobs from a manifest object in S3 (`source.s3_manifest`): CSV with a header, or JSON
//! Lines, cut into jobs of `lines_per_job` rows. The object is read as a stream, a line at a
//! time (a CSV record whose quoted field holds line breaks spans several), never whole; a
//! line that does not parse refuses the request with its line number, before anything is
//! written. Each job's payload is `{"manifest": {"uri", "etag", "first_line", "rows"},
//! "rows": [...], "params"?}`: a CSV row is an object of the header's names, a JSON Lines
//! row the line's value. The ETag in every payload puts the object's version in the
//! request's content hash.

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use fleet_shared::s3::S3Uri;

/// How a manifest's lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestFormat {
    /// A header line of column names, then one record per line.
    Csv,
    /// One JSON value per line.
    Jsonl,
}

/// Most rows one job may take.
pub const MAX_LINES_PER_JOB: u32 = 100_000;

/// Why a manifest gave no jobs.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The object's content: refused with where.
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("{0}")]
    Content(String),
    /// S3 could not be read.
    #[error("{0}")]
    Read(String),
}

/// Where a manifest is and how to cut it.
#[derive(Debug, Clone)]
pub struct ManifestSpec<'a> {
    pub uri: &'a S3Uri,
    pub etag: &'a str,
    pub format: ManifestFormat,
    pub lines_per_job: u32,
    pub params: Option<&'a Value>,
    /// Most jobs it may give.
    pub max_jobs: usize,
}

/// Reads the manifest from `lines` and cuts it into job payloads.
pub async fn jobs_from<R: AsyncBufRead + Unpin>(
    spec: &ManifestSpec<'_>,
    reader: R,
) -> Result<Vec<Value>, ManifestError> {
    let mut lines = Lines {
        inner: reader.lines(),
        line: 0,
    };
    let header = match spec.format {
        ManifestFormat::Csv => Some(read_header(&mut lines).await?),
        ManifestFormat::Jsonl => None,
    };
    let mut jobs = Vec::new();
    let mut rows: Vec<Value> = Vec::new();
    let mut first_line = 0;
    while let Some((line, row)) = next_row(&mut lines, header.as_deref()).await? {
        if rows.is_empty() {
            first_line = line;
        }
        rows.push(row);
        if rows.len() == spec.lines_per_job as usize {
            jobs.push(payload(spec, first_line, std::mem::take(&mut rows)));
            if jobs.len() > spec.max_jobs {
                return Err(ManifestError::Content(format!(
                    "more than {} jobs of {} lines",
                    spec.max_jobs, spec.lines_per_job
                )));
            }
        }
    }
    if !rows.is_empty() {
        jobs.push(payload(spec, first_line, rows));
    }
    if jobs.len() > spec.max_jobs {
        return Err(ManifestError::Content(format!(
            "more than {} jobs of {} lines",
            spec.max_jobs, spec.lines_per_job
        )));
    }
    Ok(jobs)
}

fn payload(spec: &ManifestSpec<'_>, first_line: u64, rows: Vec<Value>) -> Value {
    let mut p = serde_json::json!({
        "manifest": {
            "uri": format!("s3://{}/{}", spec.uri.bucket, spec.uri.key),
            "etag": spec.etag,
            "first_line": first_line,
            "rows": rows.len(),
        },
        "rows": rows,
    });
    if let (Some(params), Some(map)) = (spec.params, p.as_object_mut()) {
        map.insert("params".into(), params.clone());
    }
    p
}

/// The object's lines, numbered from 1.
struct Lines<R> {
    inner: tokio::io::Lines<R>,
    line: u64,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    async fn next(&mut self) -> Result<Option<(u64, String)>, ManifestError> {
        let got = self.inner.next_line().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                ManifestError::Line {
                    line: self.line + 1,
                    reason: "not UTF-8".into(),
                }
            } else {
                ManifestError::Read(format!("reading the manifest: {e}"))
            }
        })?;
        Ok(got.map(|l| {
            self.line += 1;
            let l = l.strip_suffix('\r').map(str::to_owned).unwrap_or(l);
            (self.line, l)
        }))
    }
}

async fn read_header<R: AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
) -> Result<Vec<String>, ManifestError> {
    let Some((line, fields)) = next_record(lines).await? else {
        return Err(ManifestError::Content(
            "the manifest is empty: a CSV manifest starts with a header line".into(),
        ));
    };
    let mut seen = std::collections::BTreeSet::new();
    for f in &fields {
        if f.is_empty() || !seen.insert(f.as_str()) {
            return Err(ManifestError::Line {
                line,
                reason: format!("the header's column names must be non-empty and distinct: {f:?}"),
            });
        }
    }
    Ok(fields)
}

/// The next row: a CSV record as an object of `header`'s names, or a JSON line's value.
/// Empty lines are skipped.
async fn next_row<R: AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    header: Option<&[String]>,
) -> Result<Option<(u64, Value)>, ManifestError> {
    let Some(header) = header else {
        loop {
            let Some((line, text)) = lines.next().await? else {
                return Ok(None);
            };
            if text.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&text).map_err(|e| ManifestError::Line {
                line,
                reason: format!("not JSON: {e}"),
            })?;
            return Ok(Some((line, v)));
        }
    };
    let Some((line, fields)) = next_record(lines).await? else {
        return Ok(None);
    };
    if fields.len() != header.len() {
        return Err(ManifestError::Line {
            line,
            reason: format!(
                "{} fields, but the header has {} columns",
                fields.len(),
                header.len()
            ),
        });
    }
    let row: Map<String, Value> = header
        .iter()
        .cloned()
        .zip(fields.into_iter().map(Value::String))
        .collect();
    Ok(Some((line, Value::Object(row))))
}

/// The next CSV record and the line it starts on (a quoted field may hold line breaks: the
/// record then takes the lines up to its closing quote). Empty lines are skipped.
async fn next_record<R: AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
) -> Result<Option<(u64, Vec<String>)>, ManifestError> {
    let (start, mut text) = loop {
        match lines.next().await? {
            None => return Ok(None),
            Some((_, t)) if t.is_empty() => continue,
            Some(found) => break found,
        }
    };
    while text.bytes().filter(|&b| b == b'"').count() % 2 == 1 {
        match lines.next().await? {
            Some((_, more)) => {
                text.push('\n');
                text.push_str(&more);
            }
            None => {
                return Err(ManifestError::Line {
                    line: start,
                    reason: "a quoted field is not closed before the end of the object".into(),
                });
            }
        }
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(Some((start, record.iter().map(str::to_owned).collect()))),
        Ok(false) => Ok(Some((start, vec![String::new()]))),
        Err(e) => Err(ManifestError::Line {
            line: start,
            reason: format!("not a CSV record: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: ManifestFormat, lines_per_job: u32) -> (S3Uri, ManifestFormat, u32) {
        (
            S3Uri {
                bucket: "bkt".into(),
                key: "ids.csv".into(),
            },
            format,
            lines_per_job,
        )
    }

    async fn run(format: ManifestFormat, n: u32, text: &str) -> Result<Vec<Value>, ManifestError> {
        let (uri, format, lines_per_job) = spec(format, n);
        let s = ManifestSpec {
            uri: &uri,
            etag: "\"e1\"",
            format,
            lines_per_job,
            params: None,
            max_jobs: 10,
        };
        jobs_from(&s, text.as_bytes()).await
    }

    #[tokio::test]
    async fn csv_rows_become_objects_of_the_header_in_jobs_of_n_lines() {
        let text = "id,name\r\n1,a\n2,\"b, with a comma\"\n\n3,\"two\nlines\"\n4,d\n";
        let jobs = run(ManifestFormat::Csv, 2, text).await.unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[0]["rows"],
            serde_json::json!([{"id": "1", "name": "a"}, {"id": "2", "name": "b, with a comma"}])
        );
        assert_eq!(jobs[0]["manifest"]["first_line"], 2);
        assert_eq!(jobs[0]["manifest"]["etag"], "\"e1\"");
        assert_eq!(jobs[0]["manifest"]["uri"], "s3://bkt/ids.csv");
        assert_eq!(
            jobs[1]["rows"],
            serde_json::json!([{"id": "3", "name": "two\nlines"}, {"id": "4", "name": "d"}])
        );
        assert_eq!(jobs[1]["manifest"]["first_line"], 5);
    }

    #[tokio::test]
    async fn a_broken_line_is_refused_with_its_number() {
        let e = run(ManifestFormat::Csv, 2, "id,name\n1,a\n2\n3,c\n")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: 1 fields, but the header has 2 columns"
        );
        let e = run(ManifestFormat::Jsonl, 1, "{\"id\": 1}\n{\"id\": 2\n")
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("line 2: not JSON"), "{e}");
        let e = run(ManifestFormat::Csv, 1, "id,id\n1,2\n")
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("line 1: the header"), "{e}");
        let e = run(ManifestFormat::Csv, 1, "id\n\"open\n")
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("line 2: a quoted field"), "{e}");
        let e = run(ManifestFormat::Jsonl, 1, &"1\n".repeat(11))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("more than 10 jobs"), "{e}");
    }

    #[tokio::test]
    async fn json_lines_rows_are_their_values() {
        let jobs = run(ManifestFormat::Jsonl, 3, "{\"id\": 1}\n\n2\n\"x\"\n[4]\n")
            .await
            .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0]["rows"], serde_json::json!([{"id": 1}, 2, "x"]));
        assert_eq!(jobs[1]["rows"], serde_json::json!([[4]]));
        assert_eq!(jobs[1]["manifest"]["first_line"], 5);
    }
}
