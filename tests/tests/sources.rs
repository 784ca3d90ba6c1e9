//! Requests that name their jobs' source instead of listing them (an S3 prefix, an integer
//! range), payloads too large to travel inline (the claim-check through S3), and a message
//! sent to the queue by a program that knows only the JSON Schema.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use fleet_tests::{Stack, repo_root};
use futures::StreamExt;
use serde_json::{Value, json};

/// Job payloads as the ledger holds them, by job index.
async fn payloads(stack: &Stack) -> Vec<(u32, Value)> {
    // A payload is inline on its job's item, or in the job's payload item.
    let mut out: Vec<(u32, Value)> = stack
        .ledger_items()
        .await
        .iter()
        .filter_map(|item| {
            let pk = item.get("pk")?.as_s().ok()?;
            let sk = item.get("sk")?.as_s().ok()?;
            let index = match (pk.starts_with("J#"), sk.strip_suffix("#P")) {
                (true, None) => sk.parse().ok()?,
                (false, Some(ix)) if pk.starts_with("D#") => ix.parse().ok()?,
                _ => return None,
            };
            let payload = item.get("pl")?.as_s().ok()?;
            Some((index, serde_json::from_str(payload).unwrap()))
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out
}

async fn put_objects(stack: &Stack, bucket: &str, objects: &[(String, usize)]) {
    let s3 = stack.s3();
    futures::stream::iter(objects.iter())
        .map(|(key, size)| {
            let s3 = s3.clone();
            async move {
                s3.put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(vec![b'x'; *size]))
                    .send()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_of_a_thousand_objects_splits_into_groups_once() {
    let stack = Stack::with_init().await;
    stack.create_bucket("fleet-in").await;
    // 1,000 objects of 100 to 1,999 bytes, plus one outside the prefix and a folder marker.
    let objects: Vec<(String, usize)> = (0..1000)
        .map(|i| (format!("data/part-{i:04}.bin"), 100 + (i * 7919) % 1900))
        .collect();
    put_objects(&stack, "fleet-in", &objects).await;
    put_objects(
        &stack,
        "fleet-in",
        &[("elsewhere/x.bin".into(), 10), ("data/".into(), 0)],
    )
    .await;

    // The expected groups: consecutive objects in key order up to 20,000 bytes, at most 16.
    let mut expected: Vec<Vec<String>> = vec![];
    let mut bytes = 0;
    for (key, size) in &objects {
        match expected.last_mut() {
            Some(g) if g.len() < 16 && bytes + size <= 20_000 => {
                g.push(key.clone());
                bytes += size;
            }
            _ => {
                expected.push(vec![key.clone()]);
                bytes = *size;
            }
        }
    }
    let request = json!({
        "request_id": "split-1",
        "job_type": "test",
        "source": {"s3_prefix": "s3://fleet-in/data/", "group_bytes": 20_000, "max_objects_per_job": 16},
        "params": {"output": "s3://fleet-out/"},
    });
    let out = stack.submit(&request);
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["jobs"], expected.len());
    assert_eq!(report["written"], expected.len());

    let got = payloads(&stack).await;
    assert_eq!(got.len(), expected.len());
    let mut seen = BTreeSet::new();
    for ((index, payload), want) in got.iter().zip(&expected) {
        let source = &payload["source"];
        let keys: Vec<String> = source["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&keys, want, "job {index}");
        assert_eq!(source["bucket"], "fleet-in");
        assert_eq!(source["prefix"], "data/");
        let sizes: u64 = source["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["size"].as_u64().unwrap())
            .sum();
        assert_eq!(source["bytes"].as_u64().unwrap(), sizes);
        assert!(sizes <= 20_000 || keys.len() == 1);
        assert_eq!(payload["params"]["output"], "s3://fleet-out/");
        seen.extend(keys);
    }
    assert_eq!(seen.len(), 1000, "every object in exactly one job");

    // The same prefix content again: nothing new.
    let items_before = stack.table_items().await.len();
    let again = stack.submit(&request);
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(again.json()["created"], false);
    assert_eq!(again.json()["written"], 0);
    assert_eq!(stack.table_items().await.len(), items_before);

    // One more object makes it other content: refused, nothing written.
    put_objects(&stack, "fleet-in", &[("data/part-1000.bin".into(), 5)]).await;
    let depth = stack.queue_depth(&stack.names.queue).await;
    let changed = stack.submit(&request);
    assert!(!changed.status.success());
    assert!(
        changed.stderr.contains("other content"),
        "{}",
        changed.stderr
    );
    assert_eq!(stack.table_items().await.len(), items_before);
    assert_eq!(stack.queue_depth(&stack.names.queue).await, depth);

    // A missing bucket and an empty prefix are refused by name, before anything is written.
    for (prefix, want) in [
        ("s3://no-such-bucket/x/", "source.s3_prefix: no bucket"),
        ("s3://fleet-in/nothing-here/", "source: no objects under"),
    ] {
        let out = stack.submit(&json!({"job_type": "test", "source": {"s3_prefix": prefix}}));
        assert!(!out.status.success());
        assert!(out.stderr.contains(want), "want {want:?} in {}", out.stderr);
    }
    assert_eq!(stack.table_items().await.len(), items_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_is_recorded_as_exact_chunks() {
    let stack = Stack::with_init().await;
    let out = stack.submit(&json!({
        "request_id": "range-1",
        "job_type": "test",
        "range": {"start": 10, "end": 1013, "chunk": 100},
        "params": {"echo": "p"},
    }));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["jobs"], 11);
    let got = payloads(&stack).await;
    let ranges: Vec<(i64, i64)> = got
        .iter()
        .map(|(_, p)| {
            (
                p["range"]["start"].as_i64().unwrap(),
                p["range"]["end"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut want: Vec<(i64, i64)> = (0..10).map(|i| (10 + i * 100, 110 + i * 100)).collect();
    want.push((1010, 1013));
    assert_eq!(ranges, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_mib_payload_travels_through_s3_and_is_cleaned_up() {
    let stack = Stack::with_init().await;
    stack.create_bucket("fleet-payloads").await;
    let claim = [("FLEET_CLAIM_CHECK_PREFIX", "s3://fleet-payloads/p/")];
    let blob: String = (0..2 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let big = json!({"echo": blob});
    let small = json!({"echo": "small"});
    let path = stack.dir.path().join("big.json");
    std::fs::write(
        &path,
        json!({"request_id": "big-1", "job_type": "test", "jobs": [small, big]}).to_string(),
    )
    .unwrap();
    let out = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["submit", path.to_str().unwrap(), "--json"],
        &claim,
    );
    assert!(out.status.success(), "{}", out.stderr);

    // The ledger and the message hold a reference; the bytes are in S3.
    let stored = payloads(&stack).await;
    assert_eq!(stored[0].1, small);
    let reference = &stored[1].1["fleet_payload_ref"];
    assert_eq!(
        reference["uri"],
        "s3://fleet-payloads/p/big-1/000000001.json"
    );
    let object = stack
        .s3()
        .get_object()
        .bucket("fleet-payloads")
        .key("p/big-1/000000001.json")
        .send()
        .await
        .unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), big);
    assert_eq!(reference["bytes"].as_u64().unwrap(), bytes.len() as u64);

    // Cleaning up an unfinished request is refused and deletes nothing.
    let early = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["cleanup", "big-1"],
        &claim,
    );
    assert!(!early.status.success());
    assert!(early.stderr.contains("not finished"), "{}", early.stderr);

    let job = stack.testjob(&[]).await;
    let _w = stack.worker("w", &job, &claim);
    let status = stack.wait_done("big-1", Duration::from_secs(120)).await;
    assert_eq!(status.count("SUCCEEDED"), 2, "{status:?}");
    let execs = job.executions();
    let sha = |v: &Value| fleet_shared::claim_check::sha256_hex(v.to_string().as_bytes());
    let by_job: std::collections::BTreeMap<_, _> = execs
        .iter()
        .map(|e| (e.job_id.as_str(), e.payload_sha256.clone().unwrap()))
        .collect();
    assert_eq!(by_job["big-1:1"], sha(&big), "the job saw the same 2 MiB");
    assert_eq!(by_job["big-1:0"], sha(&small));

    // The job echoed its 2 MiB: a result over limits.max_result_bytes is kept in S3 under the
    // same prefix, whole, and read back through the ledger's reference.
    let result = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["result", "big-1:1"],
        &claim,
    );
    assert!(result.status.success(), "{}", result.stderr);
    let result: Value = serde_json::from_str(result.stdout.trim()).unwrap();
    assert_eq!(result["echo"], big["echo"], "the whole result");

    let done = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["cleanup", "big-1"],
        &claim,
    );
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stdout.contains("2 payload object(s) deleted"),
        "the payload and the result: {}",
        done.stdout
    );
    let left = stack
        .s3()
        .list_objects_v2()
        .bucket("fleet-payloads")
        .prefix("p/big-1/")
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count().unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_built_from_the_schema_alone_runs() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _w = stack.worker("w", &job, &[]);
    // The README's Python producer, run as a user would (boto3, no Fleet code).
    let script = repo_root().join("examples/producers/send_job.py");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let source = std::fs::read_to_string(&script).unwrap();
    let body = source.split("import json").nth(1).unwrap();
    assert!(
        readme.contains(body.trim()),
        "README shows examples/producers/send_job.py as it is"
    );
    let url = stack.queue_url(&stack.names.queue).await;
    let code = format!(
        "import sys, runpy; sys.argv = ['send_job.py', {url:?}, 'from-python', '3', 'test', '{{\"echo\": \"hi\"}}']; runpy.run_path({:?}, run_name='__main__')",
        script.to_str().unwrap()
    );
    let out = stack.python(&code);
    assert!(!out.trim().is_empty(), "a message id");
    let status = stack
        .wait_done("from-python", Duration::from_secs(60))
        .await;
    assert_eq!(status.count("SUCCEEDED"), 1, "{status:?}");
    let execs = job.executions();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].job_id, "from-python:3");
    assert_eq!(
        execs[0].payload_sha256.as_deref(),
        Some(fleet_shared::claim_check::sha256_hex(br#"{"echo":"hi"}"#).as_str())
    );
}

/// Peak resident memory of the largest child process this test has waited for, in KiB.
fn children_peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_manifest_of_100000_lines_becomes_its_jobs_in_bounded_memory_and_a_broken_line_is_named()
 {
    let stack = Stack::with_init().await;
    stack.create_bucket("fleet-in").await;
    let s3 = stack.s3();
    let put = |key: &'static str, body: String| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket("fleet-in")
                .key(key)
                .body(ByteStream::from(body.into_bytes()))
                .send()
                .await
                .unwrap()
        }
    };
    let mut csv = String::from("id,name\n");
    for i in 0..100_000 {
        csv.push_str(&format!("{i},\"item {i}, number {i}\"\n"));
    }
    put("ids.csv", csv.clone()).await;

    // A broken line refuses the request, naming it; nothing is written.
    let mut broken = csv.clone();
    let at = broken.match_indices('\n').nth(775).unwrap().0 + 1; // line 777 starts here
    broken.insert_str(at, "oops\n");
    put("broken.csv", broken).await;
    let out = stack.submit(&json!({"request_id": "broken", "job_type": "test",
        "source": {"s3_manifest": "s3://fleet-in/broken.csv", "lines_per_job": 100}}));
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("line 777: 1 fields, but the header has 2 columns"),
        "{}",
        out.stderr
    );
    assert!(stack.ledger_items().await.is_empty(), "nothing written");
    assert_eq!(stack.queue_depth(&stack.names.queue).await, 0);

    let request = json!({"request_id": "ids", "job_type": "test", "params": {"run": 7},
        "source": {"s3_manifest": "s3://fleet-in/ids.csv", "lines_per_job": 100}});
    let out = stack.submit(&request);
    assert!(out.status.success(), "{}", out.stderr);
    let peak_mib = children_peak_rss_kib() / 1024;
    assert!(peak_mib < 100, "the producer peaked at {peak_mib} MiB");
    let report = out.json();
    assert_eq!(
        (report["jobs"].as_u64(), report["created"].as_bool()),
        (Some(1000), Some(true))
    );

    let got = payloads(&stack).await;
    assert_eq!(got.len(), 1000);
    for (index, p) in &got {
        let first = *index as usize * 100;
        let rows: Vec<Value> = (first..first + 100)
            .map(|i| json!({"id": i.to_string(), "name": format!("item {i}, number {i}")}))
            .collect();
        assert_eq!(p["rows"], Value::from(rows), "job {index}");
        assert_eq!(p["manifest"]["first_line"], first as u64 + 2, "job {index}");
        assert_eq!(p["manifest"]["uri"], "s3://fleet-in/ids.csv");
        assert!(
            p["manifest"]["etag"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        );
        assert_eq!(p["params"], json!({"run": 7}));
    }

    // The same object again: the same request, nothing more written.
    let items = stack.ledger_items().await.len();
    let again = stack.submit(&request);
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(again.json()["created"], false, "{}", again.stdout);
    assert_eq!(stack.ledger_items().await.len(), items);
    // Another version of the object (another ETag) is other content under the same id.
    csv.push_str("100000,\"one more\"\n");
    put("ids.csv", csv).await;
    let changed = stack.submit(&request);
    assert!(!changed.status.success());
    assert!(
        changed.stderr.contains("exists with other content"),
        "{}",
        changed.stderr
    );
}
