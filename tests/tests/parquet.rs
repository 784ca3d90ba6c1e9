//! The demo job, black-box: `fleet-csv-to-parquet run` (the container entrypoint) converts
#![allow(clippy::unwrap_used)]
//! generated CSV objects in the local S3, and the verifier and the test itself read the
//! Parquet outputs back.

use std::collections::BTreeMap;

use fleet_csv_to_parquet::arrow_array::{Array, StringArray};
use fleet_csv_to_parquet::bytes::Bytes;
use fleet_csv_to_parquet::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use fleet_csv_to_parquet::{JobResult, VerifyReport, verify};
use fleet_shared::message::JobEvent;
use fleet_shared::s3::S3Uri;
use fleet_tests::{Output, Stack, bin};
use serde_json::{Value, json};

const BUCKET: &str = "fleet-data";
const FILES: usize = 20;

/// One generated CSV object: what the test knows about it.
#[derive(Debug, Clone)]
struct Generated {
    key: String,
    columns: Vec<String>,
    rows: usize,
    /// The values of the `name` column, when the object has one (quotes, commas, newlines).
    names: Option<Vec<String>>,
    body: String,
}

/// A CSV field, quoted when it needs to be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Object `i`: its shape is `i % 5`, its row count varies (object 0 has a header only,
/// object 7 spans several of the reader's batches).
fn generate(i: usize) -> Generated {
    let rows = match i {
        0 => 0,
        7 => 3_000,
        _ => (i * 37) % 200 + 1,
    };
    let kind = i % 5;
    let columns: Vec<&str> = match kind {
        0 => vec!["id", "count", "delta"],
        1 => vec!["id", "price", "ratio"],
        2 => vec!["id", "name", "comment"],
        3 => vec!["id", "flag", "label"],
        _ => vec!["id", "score", "active", "name"],
    };
    let mut names = Vec::new();
    let mut body = columns.join(",");
    body.push('\n');
    for r in 0..rows {
        let n = (r * 7919 + i * 13) % 1000;
        let line: Vec<String> = match kind {
            0 => vec![r.to_string(), n.to_string(), format!("-{}", n % 17)],
            1 => vec![
                r.to_string(),
                format!("{}.{:02}", n, r % 100),
                if r % 4 == 0 {
                    String::new()
                } else {
                    format!("{}e-3", n)
                },
            ],
            2 => {
                let name = match r % 4 {
                    0 => format!("plain {n}"),
                    1 => format!("with, comma {n}"),
                    2 => format!("say \"hi\" {n}"),
                    _ => format!("two\nlines, \"both\" {n}"),
                };
                names.push(name.clone());
                vec![r.to_string(), field(&name), field(&format!("c{r},{i}"))]
            }
            3 => vec![
                r.to_string(),
                n.is_multiple_of(2).to_string(),
                field(&format!("label-{}", n % 5)),
            ],
            _ => {
                let name = format!("n\"{r}\", {i}");
                names.push(name.clone());
                vec![
                    r.to_string(),
                    if r % 5 == 0 {
                        String::new()
                    } else {
                        format!("{}.5", n)
                    },
                    if r % 2 == 0 { "true" } else { "false" }.to_owned(),
                    field(&name),
                ]
            }
        };
        body.push_str(&line.join(","));
        body.push('\n');
    }
    let key = if i < 10 {
        format!("in/{i:02}.csv")
    } else {
        format!("in/more/{i:02}.csv")
    };
    Generated {
        key,
        columns: columns.into_iter().map(str::to_owned).collect(),
        rows,
        names: matches!(kind, 2 | 4).then_some(names),
        body,
    }
}

async fn put(stack: &Stack, key: &str, body: &str) {
    stack
        .s3()
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
}

async fn get(stack: &Stack, key: &str) -> Bytes {
    let out = stack
        .s3()
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes()
}

/// The splitter's payload for some of the generated objects.
fn payload(objects: &[&Generated], params: Value) -> Value {
    let objs: Vec<Value> = objects
        .iter()
        .map(|g| json!({"key": g.key, "size": g.body.len()}))
        .collect();
    let bytes: usize = objects.iter().map(|g| g.body.len()).sum();
    json!({
        "source": {"bucket": BUCKET, "prefix": "in/", "objects": objs, "bytes": bytes},
        "params": params,
    })
}

/// Runs the job binary's container entrypoint on one event.
fn run_job(stack: &Stack, n: usize, attempt: u32, payload: Value) -> Output {
    let event = JobEvent {
        request_id: "parquet".into(),
        job_id: format!("parquet:{n}"),
        job_type: "csv-to-parquet".into(),
        attempt,
        fence: u64::from(attempt),
        payload,
        large_results: None,
        route: None,
        lease: None,
    };
    stack.run(
        bin("fleet-csv-to-parquet"),
        &["run"],
        &[("FLEET_EVENT", &event.to_base64())],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_csv_objects_become_verified_parquet() {
    let stack = Stack::start().await;
    stack.create_bucket(BUCKET).await;
    let generated: Vec<Generated> = (0..FILES).map(generate).collect();
    for g in &generated {
        put(&stack, &g.key, &g.body).await;
    }

    // Three jobs over the 20 objects: shapes 0 and 1 uncompressed, 2 and 3 with the
    // defaults, shape 4 with a given schema.
    let by_kind = |kinds: &[usize]| -> Vec<&Generated> {
        generated
            .iter()
            .enumerate()
            .filter(|(i, _)| kinds.contains(&(i % 5)))
            .map(|(_, g)| g)
            .collect()
    };
    let jobs = [
        payload(
            &by_kind(&[0, 1]),
            json!({"output": "s3://fleet-data/out/", "compression": "none"}),
        ),
        payload(&by_kind(&[2, 3]), json!({"output": "s3://fleet-data/out/"})),
        payload(
            &by_kind(&[4]),
            json!({
                "output": "s3://fleet-data/out/", "delimiter": ",", "compression": "snappy",
                "schema": [{"name": "id", "type": "int64"}, {"name": "score", "type": "float64"},
                           {"name": "active", "type": "bool"}, {"name": "name", "type": "utf8"}],
            }),
        ),
    ];
    let mut results: Vec<JobResult> = Vec::new();
    for (n, p) in jobs.iter().enumerate() {
        let out = run_job(&stack, n, 1, p.clone());
        assert!(
            out.status.success(),
            "job {n}: {:?}\n{}",
            out.status,
            out.stderr
        );
        results.push(serde_json::from_value(out.json()).unwrap());
    }

    // The results add up to what was generated.
    let files: u64 = results.iter().map(|r| r.files).sum();
    let rows: u64 = results.iter().map(|r| r.rows).sum();
    let bytes_in: u64 = results.iter().map(|r| r.bytes_in).sum();
    assert_eq!(files, FILES as u64);
    assert_eq!(rows, generated.iter().map(|g| g.rows as u64).sum::<u64>());
    assert_eq!(
        bytes_in,
        generated.iter().map(|g| g.body.len() as u64).sum::<u64>()
    );
    let mut outputs = BTreeMap::new();
    for r in &results {
        assert_eq!(r.files as usize, r.outputs.len());
        assert_eq!(r.rows, r.outputs.iter().map(|o| o.rows).sum::<u64>());
        assert_eq!(
            r.bytes_out,
            r.outputs.iter().map(|o| o.bytes_out).sum::<u64>()
        );
        for o in &r.outputs {
            outputs.insert(o.input.clone(), o.clone());
        }
    }
    for g in &generated {
        let o = &outputs[&format!("s3://{BUCKET}/{}", g.key)];
        let rel = g
            .key
            .strip_prefix("in/")
            .unwrap()
            .replace(".csv", ".parquet");
        assert_eq!(o.output, format!("s3://{BUCKET}/out/{rel}"));
        assert_eq!(
            (o.rows as usize, &o.columns),
            (g.rows, &g.columns),
            "{}",
            g.key
        );
    }

    // A re-execution writes the same outputs again and reports the same.
    let again = run_job(&stack, 1, 2, jobs[1].clone());
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(
        serde_json::from_value::<JobResult>(again.json()).unwrap(),
        results[1]
    );

    // The verifier: every object has its output, with the same rows and columns.
    let input = S3Uri::parse("s3://fleet-data/in/").unwrap();
    let output = S3Uri::parse("s3://fleet-data/out/").unwrap();
    let report = verify(&stack.s3(), &input, &output).await.unwrap();
    assert_eq!(report.files, FILES as u64, "{report:?}");
    assert_eq!(report.ok, FILES as u64, "{report:?}");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, rows);
    assert_eq!(report.bytes_in, bytes_in);
    assert_eq!(
        report.bytes_out,
        results.iter().map(|r| r.bytes_out).sum::<u64>()
    );
    // ... and its binary says the same.
    let cli = stack.run(
        bin("fleet-csv-verify"),
        &[
            "--input",
            "s3://fleet-data/in/",
            "--output",
            "s3://fleet-data/out/",
            "--json",
        ],
        &[],
    );
    assert!(cli.status.success(), "{}{}", cli.stdout, cli.stderr);
    assert_eq!(
        serde_json::from_value::<VerifyReport>(cli.json()).unwrap(),
        report
    );
    // Against a prefix with no outputs, every file is a problem and the exit code says so.
    let none = S3Uri::parse("s3://fleet-data/nothing/").unwrap();
    let missing = verify(&stack.s3(), &input, &none).await.unwrap();
    assert_eq!((missing.files, missing.ok), (FILES as u64, 0));
    assert_eq!(missing.problems.len(), FILES, "{:?}", missing.problems);
    assert!(
        missing.problems[0].contains("missing"),
        "{:?}",
        missing.problems
    );
    let cli = stack.run(
        bin("fleet-csv-verify"),
        &[
            "--input",
            "s3://fleet-data/in/",
            "--output",
            "s3://fleet-data/nothing/",
        ],
        &[],
    );
    assert_eq!(cli.status.code(), Some(1), "{}{}", cli.stdout, cli.stderr);

    // Independently of the verifier: read back outputs of each shape (the header-only one,
    // the one over several batches, and those with quoted names) and compare with what was
    // generated.
    for i in [0, 3, 7, 12, 14, 19] {
        let g = &generated[i];
        let rel = g
            .key
            .strip_prefix("in/")
            .unwrap()
            .replace(".csv", ".parquet");
        let data = get(&stack, &format!("out/{rel}")).await;
        let builder = ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
        assert_eq!(
            builder.metadata().file_metadata().num_rows(),
            g.rows as i64,
            "{}",
            g.key
        );
        let columns: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(columns, g.columns, "{}", g.key);
        let mut decoded = 0;
        let mut names = Vec::new();
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            decoded += batch.num_rows();
            if let Some(col) = batch.column_by_name("name") {
                let col = col.as_any().downcast_ref::<StringArray>().unwrap();
                names.extend((0..col.len()).map(|r| col.value(r).to_owned()));
            }
        }
        assert_eq!(decoded, g.rows, "{}", g.key);
        if let Some(expected) = &g.names {
            assert_eq!(&names, expected, "{}", g.key);
        }
    }

    // The verifier sees a wrong output and an unreadable one.
    let other = get(&stack, "out/02.parquet").await;
    stack
        .s3()
        .put_object()
        .bucket(BUCKET)
        .key("out/01.parquet")
        .body(other.into())
        .send()
        .await
        .unwrap();
    put(&stack, "out/03.parquet", "not parquet").await;
    let broken = verify(&stack.s3(), &input, &output).await.unwrap();
    assert_eq!((broken.files, broken.ok), (FILES as u64, FILES as u64 - 2));
    let text = broken.problems.join("\n");
    assert!(
        text.contains("out/01.parquet: ") && text.contains("rows"),
        "{text}"
    );
    assert!(text.contains("columns"), "{text}");
    assert!(
        text.contains("out/03.parquet: unreadable Parquet"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_payloads_and_objects_fail_with_their_error_type() {
    let stack = Stack::start().await;
    stack.create_bucket(BUCKET).await;
    put(&stack, "in/good.csv", "a,b\n1,2\n").await;
    put(&stack, "in/bad.csv", "a,b\n1,2\n3,4\n5\n").await;
    let good = generate(1);
    let output = json!({"output": "s3://fleet-data/out/"});

    let cases = [
        // A payload naming an object that does not exist.
        (
            json!({"source": {"bucket": BUCKET, "prefix": "in/", "objects": [{"key": "in/missing.csv", "size": 3}], "bytes": 3},
                   "params": output}),
            "NoSuchKey",
            "in/missing.csv",
        ),
        // Malformed payloads.
        (
            json!({"source": {"bucket": BUCKET}}),
            "BadPayload",
            "missing field",
        ),
        (json!("not an object"), "BadPayload", "invalid payload"),
        (
            payload(&[&good], json!({"output": "not-s3"})),
            "BadPayload",
            "params.output",
        ),
        (
            payload(
                &[&good],
                json!({"output": "s3://fleet-data/out/", "schema": [{"name": "id", "type": "decimal"}]}),
            ),
            "BadPayload",
            "decimal",
        ),
        // A CSV object with a short row: the object and the line are named.
        (
            json!({"source": {"bucket": BUCKET, "prefix": "in/", "objects": [{"key": "in/good.csv", "size": 8}, {"key": "in/bad.csv", "size": 15}], "bytes": 23},
                   "params": output}),
            "BadCsv",
            "s3://fleet-data/in/bad.csv",
        ),
    ];
    for (n, (p, error_type, mentions)) in cases.into_iter().enumerate() {
        let out = run_job(&stack, n, 1, p.clone());
        assert_eq!(out.status.code(), Some(1), "{p}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{p}: {}", out.stdout);
        let last = out.stderr.lines().last().unwrap_or_default();
        let body: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
        assert_eq!(body["errorType"], error_type, "{p}: {body}");
        let message = body["errorMessage"].as_str().unwrap();
        assert!(message.contains(mentions), "{p}: {message}");
        if error_type == "BadCsv" {
            assert!(message.contains("line"), "{message}");
        }
    }
}
