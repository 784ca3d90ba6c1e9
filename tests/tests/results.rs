//! Results out: `fleet-producer results` returns every finished job's exact result (or its
//! error), inline, from its result item or from S3; `export` writes JSON Lines parts and a
//! manifest whose counts and files match, the same objects when run twice, and nothing for
//! a request that is not finished.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleet_tests::{Stack, bin};
use serde_json::{Value, json};

/// Jobs of the request; every 97th fails for good.
const JOBS: usize = 1000;

fn fails(i: usize) -> bool {
    i % 97 == 5
}

/// Result sizes from 10 B to 200 KB, spaced evenly on a log scale.
fn result_bytes(i: usize) -> usize {
    (10.0 * 20_000f64.powf(i as f64 / (JOBS - 1) as f64)).round() as usize
}

fn digest(v: &Value) -> String {
    fleet_shared::claim_check::sha256_hex(v.to_string().as_bytes())
}

async fn object(stack: &Stack, bucket: &str, key: &str) -> (Vec<u8>, String) {
    let out = stack
        .s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{bucket}/{key}: {e:?}"));
    let etag = out.e_tag().unwrap_or_default().to_owned();
    (out.body.collect().await.unwrap().to_vec(), etag)
}

/// Keys and ETags under `prefix`.
async fn listing(stack: &Stack, bucket: &str, prefix: &str) -> BTreeMap<String, String> {
    let out = stack
        .s3()
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_owned(),
                o.e_tag().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn results_come_back_exact_and_an_export_matches_its_manifest_twice_the_same() {
    let stack = Stack::with_init().await;
    stack.create_bucket("results").await;
    stack.create_bucket("exports").await;
    let job = stack.testjob(&[]).await;
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| {
            if fails(i) {
                json!({"fail_permanent": true})
            } else {
                json!({"result_bytes": result_bytes(i), "echo": i})
            }
        })
        .collect();
    let request = json!({"request_id": "res", "job_type": "test", "jobs": jobs});
    let failing = (0..JOBS).filter(|&i| fails(i)).count();
    {
        let prefix = [("FLEET_CLAIM_CHECK_PREFIX", "s3://results/fleet/")];
        let _a = stack.worker("w0", &job, &prefix);
        let _b = stack.worker("w1", &job, &prefix);
        let out = stack.submit(&request);
        assert!(out.status.success(), "{}", out.stderr);
        let status = stack.wait_done("res", Duration::from_secs(600)).await;
        assert_eq!(status.count("FAILED") as usize, failing, "{status:?}");
        assert_eq!(status.count("SUCCEEDED") as usize, JOBS - failing);
    }

    // What each job returned, from its last execution (the one that succeeded).
    let mut last: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    for e in job.executions() {
        let slot = last.entry(e.job_id.clone()).or_insert((e.attempt, e.fence));
        if e.fence >= slot.1 {
            *slot = (e.attempt, e.fence);
        }
    }
    let expected = |i: usize| {
        let id = format!("res:{i}");
        let (attempt, fence) = last[&id];
        json!({"job_id": id, "attempt": attempt, "fence": fence, "slept_ms": 0, "echo": i,
            "fill": "x".repeat(result_bytes(i))})
    };

    let out = stack.run(bin("fleet-producer"), &["results", "res", "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), JOBS, "one line per job");
    let mut seen = BTreeSet::new();
    for line in &lines {
        let i = line["index"].as_u64().unwrap() as usize;
        assert!(seen.insert(i), "job {i} listed twice");
        assert_eq!(line["job_id"], format!("res:{i}"));
        if fails(i) {
            assert_eq!(line["state"], "FAILED", "{line}");
            assert_eq!(line["error_class"], "permanent", "{line}");
            assert!(
                line["error"]
                    .as_str()
                    .unwrap()
                    .contains("can never succeed"),
                "{line}"
            );
            assert!(line.get("result").is_none(), "{line}");
        } else {
            assert_eq!(line["state"], "SUCCEEDED", "{line}");
            assert_eq!(
                digest(&line["result"]),
                digest(&expected(i)),
                "job {i}'s result ({} bytes) is what it returned",
                result_bytes(i)
            );
        }
    }
    // The largest results were kept in S3 and came back whole through the reference.
    let in_s3 = listing(&stack, "results", "fleet/res/results/").await;
    assert!(!in_s3.is_empty(), "results over 32 KiB are in S3");

    let out = stack.run(
        bin("fleet-producer"),
        &["results", "res", "--state", "FAILED", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), failing);

    // Export: parts per state, then the manifest.
    let export = || {
        let out = stack.run(
            bin("fleet-producer"),
            &["export", "res", "--to", "s3://exports/run", "--json"],
            &[],
        );
        assert!(out.status.success(), "{}", out.stderr);
        out.json()
    };
    let printed = export();
    let (stored, _) = object(&stack, "exports", "run/manifest.json").await;
    let manifest: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(manifest, printed, "the manifest written is the one printed");
    assert_eq!(manifest["manifest"], "s3://exports/run/manifest.json");
    assert_eq!(
        manifest["counts"],
        json!({"SUCCEEDED": JOBS - failing, "FAILED": failing})
    );
    let mut exported = BTreeSet::new();
    let mut total = 0u64;
    let files = manifest["files"].as_array().unwrap();
    assert!(
        files.iter().filter(|f| f["state"] == "SUCCEEDED").count() > 1,
        "about 20 MB of results are cut into parts: {manifest}"
    );
    for f in files {
        let key = f["uri"]
            .as_str()
            .unwrap()
            .strip_prefix("s3://exports/")
            .unwrap();
        let (body, _) = object(&stack, "exports", key).await;
        assert_eq!(body.len() as u64, f["bytes"].as_u64().unwrap(), "{key}");
        assert!(body.len() <= fleet_producer::PART_BYTES, "{key}");
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.lines().count() as u64, f["lines"].as_u64().unwrap());
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["state"], f["state"], "{key}");
            assert!(
                exported.insert(v["index"].as_u64().unwrap()),
                "{key}: twice"
            );
            let i = v["index"].as_u64().unwrap() as usize;
            if !fails(i) {
                assert_eq!(digest(&v["result"]), digest(&expected(i)));
            }
        }
        total += f["bytes"].as_u64().unwrap();
    }
    assert_eq!(exported.len(), JOBS, "every job in exactly one file");
    assert_eq!(manifest["bytes"].as_u64().unwrap(), total);

    // Again: the same keys with the same contents, nothing more.
    let before = listing(&stack, "exports", "run/").await;
    assert_eq!(before.len(), files.len() + 1, "the parts and the manifest");
    assert_eq!(export(), printed);
    assert_eq!(listing(&stack, "exports", "run/").await, before);

    // A request with unfinished jobs (no worker runs now) is refused, and nothing written.
    let out = stack.submit(&json!({"request_id": "late", "job_type": "test", "jobs": [{}]}));
    assert!(out.status.success(), "{}", out.stderr);
    let out = stack.run(
        bin("fleet-producer"),
        &["export", "late", "--to", "s3://exports/late/"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("not finished (0/1 jobs)"),
        "{}",
        out.stderr
    );
    assert!(listing(&stack, "exports", "late/").await.is_empty());
}
