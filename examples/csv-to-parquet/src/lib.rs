//! The demo job: CSV objects in S3 to Parquet, one object after another.
//!
//! The payload is what the producer's S3-prefix splitter generates, plus the request's
//! `params`:
//!
//! ```json
//! {"source": {"bucket": "b", "prefix": "in/", "objects": [{"key": "in/a.csv", "size": 1234}], "bytes": 1234},
//!  "params": {"output": "s3://b/out/", "schema": [{"name": "id", "type": "int64"}],
//!             "delimiter": ",", "compression": "snappy"}}
//! ```
//!
//! - `params.output` (required): the output prefix. `in/sub/a.csv` under the source prefix
//!   `in/` becomes `<output>sub/a.parquet` (`.parquet` is appended to a key without a `.csv`
//!   suffix).
//! - `params.schema` (optional): the columns, in the order of the CSV header, which must
//!   name the same columns; types `int64`, `float64`, `utf8`, `bool`, `date32`,
//!   `timestamp_ms`. Without it the types are inferred from the whole object (arrow-csv), and
//!   a column with no value at all (a header-only object) becomes `utf8`.
//! - `params.delimiter` (optional, one ASCII character, default `,`).
//! - `params.compression` (optional): `snappy` (default) or `none`.
//!
//! The result: `{"files", "rows", "bytes_in", "bytes_out", "outputs": [{"input", "output",
//! "rows", "columns", "bytes_out"}]}`. Errors (job error types): `BadPayload`, `NoSuchKey`,
//! `BadCsv` (naming the object, and the line when arrow gives it), `S3Error`, `Internal`.
//!
//! Re-running a job writes the same keys again with the same content; a PUT is atomic, so a
//! reader sees either the old or the new object.
//!
//! [`verify`] checks a converted prefix independently of arrow-csv (the `fleet-csv-verify`
//! binary).

use std::io::Cursor;
use std::sync::Arc;

use arrow_csv::ReaderBuilder;
use arrow_csv::reader::Format;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use fleet_job::s3::S3Uri;
use fleet_job::{JobContext, JobError, JobHandler};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The crates this job writes with, for readers (the tests) that have no dependency of their
// own on them.
pub use arrow_array;
pub use bytes;
pub use parquet;

/// Job error types.
pub mod error_type {
    pub const BAD_PAYLOAD: &str = "BadPayload";
    pub const NO_SUCH_KEY: &str = "NoSuchKey";
    pub const BAD_CSV: &str = "BadCsv";
    pub const S3_ERROR: &str = "S3Error";
    pub const INTERNAL: &str = "Internal";
}

/// The job's payload.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Payload {
    pub source: Source,
    pub params: Params,
}

/// The objects of one job, as the producer's S3-prefix splitter lists them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Source {
    pub bucket: String,
    pub prefix: String,
    pub objects: Vec<SourceObject>,
    /// The objects' total size when they were listed.
    #[serde(default)]
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SourceObject {
    pub key: String,
    #[serde(default)]
    pub size: u64,
}

/// What the request asks for (written by a person: unknown keys are refused).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// One converted object, in the job's result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct OutputFile {
    pub input: String,
    pub output: String,
    pub rows: u64,
    pub columns: Vec<String>,
    pub bytes_out: u64,
}

/// The job's result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct JobResult {
    pub files: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub outputs: Vec<OutputFile>,
}

/// A payload checked and ready to run.
#[derive(Debug, Clone)]
struct Plan {
    bucket: String,
    /// (input key, output address)
    objects: Vec<(String, S3Uri)>,
    schema: Option<SchemaRef>,
    options: CsvOptions,
}

#[derive(Debug, Clone, Copy)]
struct CsvOptions {
    delimiter: u8,
    compression: Compression,
}

fn bad_payload(message: impl Into<String>) -> JobError {
    JobError::new(error_type::BAD_PAYLOAD, message)
}

/// The data type a `params.schema` type name stands for.
pub fn parse_type(name: &str) -> Option<DataType> {
    Some(match name {
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "bool" => DataType::Boolean,
        "date32" => DataType::Date32,
        "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, None),
        _ => return None,
    })
}

/// The output key of `key` listed under `prefix`: the key relative to the prefix, with its
/// `.csv` suffix replaced by `.parquet` (or `.parquet` appended), under `output`.
pub fn output_for(prefix: &str, key: &str, output: &S3Uri) -> Option<S3Uri> {
    let rel = key.strip_prefix(prefix)?;
    if rel.is_empty() {
        return None;
    }
    let stem = rel.strip_suffix(".csv").unwrap_or(rel);
    Some(output.join(&format!("{stem}.parquet")))
}

fn parse_delimiter(d: Option<&str>) -> Result<u8, JobError> {
    let Some(d) = d else {
        return Ok(b',');
    };
    match d.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => Ok(*b),
        _ => Err(bad_payload(format!(
            "params.delimiter must be one ASCII character other than a quote or a line end, got {d:?}"
        ))),
    }
}

fn plan(payload: Value) -> Result<Plan, JobError> {
    if payload.is_null() {
        return Err(bad_payload(
            "no payload: expected {\"source\": {...}, \"params\": {\"output\": \"s3://...\"}}",
        ));
    }
    let payload: Payload = parse_payload(payload)?;
    let output = S3Uri::parse(&payload.params.output)
        .map_err(|e| bad_payload(format!("params.output: {e}")))?;
    // The bucket name must be valid; checked the same way as the output's.
    S3Uri::parse(&format!("s3://{}/", payload.source.bucket))
        .map_err(|e| bad_payload(format!("source.bucket: {e}")))?;
    if payload.source.objects.is_empty() {
        return Err(bad_payload("source.objects is empty"));
    }
    let mut objects = Vec::with_capacity(payload.source.objects.len());
    for (i, o) in payload.source.objects.iter().enumerate() {
        let out = output_for(&payload.source.prefix, &o.key, &output).ok_or_else(|| {
            bad_payload(format!(
                "source.objects[{i}].key {:?} is not a key under the prefix {:?}",
                o.key, payload.source.prefix
            ))
        })?;
        if payload.source.bucket == out.bucket && o.key == out.key {
            return Err(bad_payload(format!(
                "the output of {:?} would overwrite it",
                o.key
            )));
        }
        objects.push((o.key.clone(), out));
    }
    let schema = match &payload.params.schema {
        None => None,
        Some(cols) if cols.is_empty() => {
            return Err(bad_payload("params.schema has no columns"));
        }
        Some(cols) => {
            let mut fields = Vec::with_capacity(cols.len());
            for (i, c) in cols.iter().enumerate() {
                let t = parse_type(&c.data_type).ok_or_else(|| {
                    bad_payload(format!(
                        "params.schema[{i}] ({:?}): unknown type {:?}; use int64, float64, utf8, bool, date32 or timestamp_ms",
                        c.name, c.data_type
                    ))
                })?;
                if c.name.is_empty() {
                    return Err(bad_payload(format!("params.schema[{i}] has an empty name")));
                }
                fields.push(Field::new(&c.name, t, true));
            }
            Some(Arc::new(Schema::new(fields)))
        }
    };
    let compression = match payload.params.compression.as_deref() {
        None | Some("snappy") => Compression::SNAPPY,
        Some("none") => Compression::UNCOMPRESSED,
        Some(other) => {
            return Err(bad_payload(format!(
                "params.compression must be \"snappy\" or \"none\", got {other:?}"
            )));
        }
    };
    Ok(Plan {
        bucket: payload.source.bucket,
        objects,
        schema,
        options: CsvOptions {
            delimiter: parse_delimiter(payload.params.delimiter.as_deref())?,
            compression,
        },
    })
}

/// Deserialises the payload; the error names the field (serde_json's own messages do for
/// missing and unknown fields and wrong types).
fn parse_payload(payload: Value) -> Result<Payload, JobError> {
    serde_json::from_value(payload).map_err(|e| bad_payload(format!("invalid payload: {e}")))
}

/// One object converted in memory.
#[derive(Debug)]
struct Converted {
    parquet: Vec<u8>,
    rows: u64,
    columns: Vec<String>,
}

/// The header's column names (the first record), read with the csv crate.
fn read_header(data: &[u8], delimiter: u8) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
        .from_reader(data);
    let header = reader.headers().map_err(|e| e.to_string())?;
    Ok(header.iter().map(str::to_owned).collect())
}

/// CSV bytes to Parquet bytes. Errors are messages for `BadCsv`.
fn convert(
    data: &[u8],
    schema: Option<SchemaRef>,
    options: CsvOptions,
) -> Result<Converted, String> {
    let header = read_header(data, options.delimiter)?;
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err("no header row (the first line must name the columns)".into());
    }
    let format = Format::default()
        .with_header(true)
        .with_delimiter(options.delimiter);
    let schema = match schema {
        Some(s) => {
            let expected: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
            if header != expected {
                return Err(format!(
                    "the header {header:?} does not name the columns of params.schema {expected:?}"
                ));
            }
            s
        }
        None => {
            let (inferred, _) = format
                .infer_schema(Cursor::new(data), None)
                .map_err(|e| e.to_string())?;
            // A column with no value (a header-only object, or only empty fields) is text.
            let fields: Vec<Field> = inferred
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Null => Field::new(f.name(), DataType::Utf8, true),
                    _ => f.as_ref().clone(),
                })
                .collect();
            Arc::new(Schema::new(fields))
        }
    };
    let reader = ReaderBuilder::new(schema.clone())
        .with_format(format)
        .build(Cursor::new(data))
        .map_err(|e| e.to_string())?;
    let props = WriterProperties::builder()
        .set_compression(options.compression)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
        .map_err(|e| format!("cannot start the Parquet writer: {e}"))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        rows += batch.num_rows() as u64;
        writer
            .write(&batch)
            .map_err(|e| format!("cannot write Parquet: {e}"))?;
    }
    let parquet = writer
        .into_inner()
        .map_err(|e| format!("cannot finish the Parquet file: {e}"))?;
    Ok(Converted {
        parquet,
        rows,
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
    })
}

/// GetObject's whole body; `NoSuchKey` when the object does not exist.
async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Bytes, JobError> {
    let uri = format!("s3://{bucket}/{key}");
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let e = e.into_service_error();
            if e.is_no_such_key() {
                JobError::new(error_type::NO_SUCH_KEY, format!("{uri} does not exist"))
            } else {
                JobError::new(
                    error_type::S3_ERROR,
                    format!("GetObject {uri}: {}", DisplayErrorContext(&e)),
                )
            }
        })?;
    let body = out.body.collect().await.map_err(|e| {
        JobError::new(
            error_type::S3_ERROR,
            format!("reading {uri}: {}", DisplayErrorContext(&e)),
        )
    })?;
    Ok(body.into_bytes())
}

/// The job: converts every object of the payload, one after another.
#[derive(Debug, Clone, Default)]
pub struct CsvToParquet {
    s3: Arc<tokio::sync::OnceCell<aws_sdk_s3::Client>>,
}

impl CsvToParquet {
    pub fn new() -> Self {
        Self::default()
    }

    /// With a given client (the default is built from the environment on first use).
    pub fn with_client(s3: aws_sdk_s3::Client) -> Self {
        Self {
            s3: Arc::new(tokio::sync::OnceCell::new_with(Some(s3))),
        }
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(fleet_job::s3::client_from_env).await
    }

    /// Runs one payload.
    pub async fn run(&self, payload: Value) -> Result<JobResult, JobError> {
        let plan = plan(payload)?;
        let s3 = self.client().await;
        let mut result = JobResult::default();
        for (key, out) in &plan.objects {
            let input_uri = format!("s3://{}/{key}", plan.bucket);
            let data = get_object(s3, &plan.bucket, key).await?;
            let bytes_in = data.len() as u64;
            let schema = plan.schema.clone();
            let options = plan.options;
            // Parsing and encoding are CPU work: off the async threads.
            let converted = tokio::task::spawn_blocking(move || convert(&data, schema, options))
                .await
                .map_err(|e| {
                    JobError::new(
                        error_type::INTERNAL,
                        format!("converting {input_uri} stopped: {e}"),
                    )
                })?
                .map_err(|e| JobError::new(error_type::BAD_CSV, format!("{input_uri}: {e}")))?;
            let bytes_out = converted.parquet.len() as u64;
            s3.put_object()
                .bucket(&out.bucket)
                .key(&out.key)
                .content_type("application/vnd.apache.parquet")
                .body(ByteStream::from(converted.parquet))
                .send()
                .await
                .map_err(|e| {
                    JobError::new(
                        error_type::S3_ERROR,
                        format!("PutObject {out}: {}", DisplayErrorContext(&e)),
                    )
                })?;
            result.files += 1;
            result.rows += converted.rows;
            result.bytes_in += bytes_in;
            result.bytes_out += bytes_out;
            result.outputs.push(OutputFile {
                input: input_uri,
                output: out.to_string(),
                rows: converted.rows,
                columns: converted.columns,
                bytes_out,
            });
        }
        Ok(result)
    }
}

impl JobHandler for CsvToParquet {
    async fn handle(&self, _ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let result = self.run(payload).await?;
        serde_json::to_value(&result).map_err(|e| {
            JobError::new(
                error_type::INTERNAL,
                format!("cannot serialise the result: {e}"),
            )
        })
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `.csv` objects under the input prefix.
    pub files: u64,
    /// Of those, the ones whose output has the same rows and columns.
    pub ok: u64,
    /// Data rows of the CSV objects (header rows not counted).
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub problems: Vec<String>,
}

/// Options of [`verify_with`].
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    pub delimiter: u8,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { delimiter: b',' }
    }
}

/// Checks that every `.csv` object under `input` has a Parquet output under `output` with
/// the same number of rows and the same column names.
pub async fn verify(
    s3: &aws_sdk_s3::Client,
    input: &S3Uri,
    output: &S3Uri,
) -> anyhow::Result<VerifyReport> {
    verify_with(s3, input, output, VerifyOptions::default()).await
}

/// [`verify`] with a delimiter other than `,`.
pub async fn verify_with(
    s3: &aws_sdk_s3::Client,
    input: &S3Uri,
    output: &S3Uri,
    options: VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for key in list_csv(s3, input).await? {
        report.files += 1;
        let input_uri = format!("s3://{}/{key}", input.bucket);
        let Some(out) = output_for(&input.key, &key, output) else {
            report
                .problems
                .push(format!("{input_uri}: not under the input prefix"));
            continue;
        };
        let csv_data = match get_object(s3, &input.bucket, &key).await {
            Ok(d) => d,
            Err(e) => {
                report
                    .problems
                    .push(format!("{input_uri}: cannot read: {e}"));
                continue;
            }
        };
        report.bytes_in += csv_data.len() as u64;
        let (header, rows) = match count_csv(&csv_data, options.delimiter) {
            Ok(v) => v,
            Err(e) => {
                report
                    .problems
                    .push(format!("{input_uri}: unreadable CSV: {e}"));
                continue;
            }
        };
        report.rows += rows;
        let parquet_data = match get_object(s3, &out.bucket, &out.key).await {
            Ok(d) => d,
            Err(e) if e.error_type == error_type::NO_SUCH_KEY => {
                report
                    .problems
                    .push(format!("{input_uri}: no output ({out} is missing)"));
                continue;
            }
            Err(e) => {
                report
                    .problems
                    .push(format!("{input_uri}: cannot read the output {out}: {e}"));
                continue;
            }
        };
        report.bytes_out += parquet_data.len() as u64;
        let before = report.problems.len();
        match read_parquet(parquet_data) {
            Err(e) => report
                .problems
                .push(format!("{out}: unreadable Parquet: {e}")),
            Ok(p) => {
                if p.footer_rows != rows {
                    report.problems.push(format!(
                        "{out}: {} rows in the footer, {rows} in {input_uri}",
                        p.footer_rows
                    ));
                }
                if p.decoded_rows != rows {
                    report.problems.push(format!(
                        "{out}: {} rows decoded, {rows} in {input_uri}",
                        p.decoded_rows
                    ));
                }
                if p.columns != header {
                    report.problems.push(format!(
                        "{out}: columns {:?}, {input_uri} has {header:?}",
                        p.columns
                    ));
                }
            }
        }
        if report.problems.len() == before {
            report.ok += 1;
        }
    }
    Ok(report)
}

/// Keys ending in `.csv` under a prefix, every page of ListObjectsV2.
async fn list_csv(s3: &aws_sdk_s3::Client, prefix: &S3Uri) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&prefix.bucket)
            .prefix(&prefix.key)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("ListObjectsV2 {prefix}: {}", DisplayErrorContext(&e)))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| k.ends_with(".csv"))
                .map(str::to_owned),
        );
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => return Ok(keys),
        }
    }
}

/// The header's names and the number of data rows, with the csv crate.
fn count_csv(data: &[u8], delimiter: u8) -> Result<(Vec<String>, u64), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
        .from_reader(data);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut rows = 0u64;
    let mut record = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| e.to_string())?
    {
        rows += 1;
    }
    Ok((header, rows))
}

struct ParquetSummary {
    footer_rows: u64,
    decoded_rows: u64,
    columns: Vec<String>,
}

fn read_parquet(data: Bytes) -> Result<ParquetSummary, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| e.to_string())?;
    let footer_rows = builder.metadata().file_metadata().num_rows();
    let columns = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut decoded_rows = 0u64;
    for batch in builder.build().map_err(|e| e.to_string())? {
        decoded_rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(ParquetSummary {
        footer_rows: u64::try_from(footer_rows).map_err(|_| format!("{footer_rows} rows"))?,
        decoded_rows,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            compression: Compression::SNAPPY,
        }
    }

    #[test]
    fn output_keys() {
        let out = S3Uri::parse("s3://bkt/out/").unwrap();
        let key = |k: &str| output_for("in/", k, &out).map(|u| u.to_string());
        assert_eq!(key("in/a.csv").as_deref(), Some("s3://bkt/out/a.parquet"));
        assert_eq!(
            key("in/x/b.csv").as_deref(),
            Some("s3://bkt/out/x/b.parquet")
        );
        assert_eq!(
            key("in/c.txt").as_deref(),
            Some("s3://bkt/out/c.txt.parquet")
        );
        assert_eq!(key("other/a.csv"), None);
        assert_eq!(key("in/"), None);
    }

    #[test]
    fn payload_errors_are_bad_payload() {
        let good = json!({"source": {"bucket": "bkt", "prefix": "in/", "objects": [{"key": "in/a.csv", "size": 1}], "bytes": 1},
                          "params": {"output": "s3://bkt/out/"}});
        assert!(plan(good.clone()).is_ok());
        let mut cases = vec![Value::Null, json!({}), json!({"source": good["source"]})];
        for (path, v) in [
            ("/params/output", json!("bkt/out/")),
            ("/params/schema", json!([{"name": "a", "type": "decimal"}])),
            ("/params/schema", json!([])),
            ("/params/delimiter", json!(";;")),
            ("/params/compression", json!("zstd")),
            ("/params/extra", json!(1)),
            ("/source/objects", json!([])),
            ("/source/objects", json!([{"key": "elsewhere/a.csv"}])),
            ("/source/bucket", json!("Bad Bucket")),
        ] {
            let mut p = good.clone();
            *p.pointer_mut(path.rsplit_once('/').unwrap().0)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .entry(path.rsplit_once('/').unwrap().1)
                .or_insert(Value::Null) = v;
            cases.push(p);
        }
        for c in cases {
            let e = plan(c.clone()).unwrap_err();
            assert_eq!(e.error_type, "BadPayload", "{c}: {e}");
        }
    }

    #[test]
    fn converts_with_inferred_and_given_schemas() {
        let data = b"id,name,score,ok\n1,\"a, \"\"b\"\"\",1.5,true\n2,c,,false\n";
        let c = convert(data, None, options()).unwrap();
        assert_eq!(
            (c.rows, c.columns.clone()),
            (
                2,
                vec!["id".into(), "name".into(), "score".into(), "ok".into()]
            )
        );
        let p = read_parquet(Bytes::from(c.parquet)).unwrap();
        assert_eq!((p.footer_rows, p.decoded_rows), (2, 2));

        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        assert_eq!(
            convert(data, Some(schema.clone()), options()).unwrap().rows,
            2
        );
        let wrong = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)]));
        assert!(
            convert(data, Some(wrong), options())
                .unwrap_err()
                .contains("header")
        );

        let header_only = convert(b"a,b\n", None, options()).unwrap();
        assert_eq!(header_only.rows, 0);
        let p = read_parquet(Bytes::from(header_only.parquet)).unwrap();
        assert_eq!(
            (p.footer_rows, p.decoded_rows, p.columns),
            (0, 0, vec!["a".into(), "b".into()])
        );

        assert!(
            convert(b"", None, options())
                .unwrap_err()
                .contains("no header")
        );
        let bad = convert(b"a,b\n1,2\n3\n", None, options()).unwrap_err();
        assert!(bad.contains("line"), "{bad}");
        let bad_type = convert(
            b"id\n1\nx\n",
            Some(Arc::new(Schema::new(vec![Field::new(
                "id",
                DataType::Int64,
                true,
            )]))),
            options(),
        )
        .unwrap_err();
        assert!(bad_type.contains("line"), "{bad_type}");
    }

    #[test]
    fn counts_csv_rows_independently() {
        let (header, rows) = count_csv(b"a,b\n\"x\ny\",2\n3,4\n", b',').unwrap();
        assert_eq!((header, rows), (vec!["a".to_owned(), "b".to_owned()], 2));
    }
}
