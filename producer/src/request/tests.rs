//! The request file's parsing, checks, grouping and building.

use super::*;
use fleet_shared::claim_check;
use fleet_shared::message::{DEFAULT_MAX_MESSAGE_BYTES, parse_message};
use fleet_shared::s3::S3Uri;
use fleet_shared::s3_list::S3Object;

fn valid(text: &str) -> Result<ValidRequest, RequestError> {
    validate(parse(text)?, DEFAULT_MAX_MESSAGE_BYTES, 1_000)
}

#[test]
fn builds_deterministic_jobs_and_valid_messages() {
    let v = valid(r#"{"request_id": "r1", "job_type": "t", "jobs": [{"a": 1}, null], "options": {"max_attempts": 3, "target": "lambda"}}"#).unwrap();
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
    let a = valid(r#"{"job_type": "t", "jobs": [1]}"#).unwrap();
    let b = valid(r#"{"job_type": "t", "jobs": [1]}"#).unwrap();
    assert!(a.record.request_id.starts_with("req-"));
    assert_ne!(a.record.request_id, b.record.request_id);
    assert_eq!(a.record.content_hash, b.record.content_hash);
}

#[test]
fn hash_ignores_key_order_but_not_content() {
    let h = |t: &str| valid(t).unwrap().record.content_hash;
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
    let v = valid(
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
    let v = valid(&format!(
        r#"{{"job_type": "t", "range": {{"start": {}, "end": {}, "chunk": {}}}}}"#,
        i64::MIN,
        i64::MAX,
        u64::MAX
    ))
    .unwrap();
    assert_eq!(v.jobs.len(), 1);
}

fn objects(sizes: &[u64]) -> Vec<S3Object> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, s)| S3Object {
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
    assert_eq!(
        content_hash("t", &a, &opts, None),
        content_hash("t", &b, &opts, None)
    );
    let c = group_objects(&prefix, &spec, None, &objects(&[3, 4, 6]));
    assert_ne!(
        content_hash("t", &a, &opts, None),
        content_hash("t", &c, &opts, None)
    );
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
        content_hash("t", &payloads, &RequestOptions::default(), None)
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
        (
            r#"{"job_type": "t", "jobs": [1], "options": {"tolerated_failure_percent": 101}}"#
                .into(),
            "options.tolerated_failure_percent: must be 0 to 100, got 101",
        ),
        (
            r#"{"job_type": "t", "jobs": [1], "options": {"tolerated_failure_count": -1}}"#
                .into(),
            "invalid value: integer `-1`, expected u32 at line 1 column 72",
        ),
        (r#"{"job_type": "a b", "jobs": [1]}"#.into(), "job_type:"),
        (
            r#"{"request_id": "a:b", "job_type": "t", "jobs": [1]}"#.into(),
            "request_id:",
        ),
        (big, "jobs[1]: the job's message is"),
    ];
    for (text, want) in cases {
        let err = valid(&text).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

#[test]
fn tolerated_failures_are_the_lower_of_the_two_options_and_part_of_the_content() {
    let with = |options: &str| {
        valid(&format!(
            r#"{{"request_id": "r", "job_type": "t", "jobs": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25], "options": {options}}}"#
        ))
        .unwrap()
        .record
    };
    assert_eq!(with("{}").tolerated_failures, None);
    // 10 % of 25 jobs: 2 (rounded down).
    assert_eq!(
        with(r#"{"tolerated_failure_percent": 10}"#).tolerated_failures,
        Some(2)
    );
    assert_eq!(
        with(r#"{"tolerated_failure_count": 7}"#).tolerated_failures,
        Some(7)
    );
    assert_eq!(
        with(r#"{"tolerated_failure_percent": 50, "tolerated_failure_count": 7}"#)
            .tolerated_failures,
        Some(7)
    );
    assert_eq!(
        with(r#"{"tolerated_failure_percent": 0}"#).tolerated_failures,
        Some(0)
    );
    // Another threshold is another request; none set keeps the hash of a request without.
    assert_ne!(
        with(r#"{"tolerated_failure_count": 7}"#).content_hash,
        with(r#"{"tolerated_failure_count": 8}"#).content_hash
    );
    assert_eq!(
        with("{}").content_hash,
        with(r#"{"max_attempts": null}"#).content_hash
    );
}

#[test]
fn the_content_hash_is_the_digest_of_the_requests_canonical_json() {
    use sha2::{Digest, Sha256};
    let jobs = vec![
        serde_json::json!({"b": [1, {"z": "é\"", "a": null}], "a": 2.5}),
        serde_json::json!("x"),
    ];
    let opts = RequestOptions {
        max_attempts: Some(3),
        tolerated_failure_count: Some(2),
        ..Default::default()
    };
    let doc = serde_json::json!({
        "tenant": "acme",
        "options": {"max_attempts": 3, "target": null, "tolerated_failure_count": 2},
        "jobs": jobs,
        "job_type": "t",
    });
    let hex: String = Sha256::digest(canonical_json(&doc).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(content_hash("t", &jobs, &opts, Some("acme")), hex);
    assert_eq!(
        canonical_json(&doc),
        r#"{"job_type":"t","jobs":[{"a":2.5,"b":[1,{"a":null,"z":"é\""}]},"x"],"options":{"max_attempts":3,"target":null,"tolerated_failure_count":2},"tenant":"acme"}"#
    );
}
