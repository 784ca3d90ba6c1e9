//! Fleet-wide control of a request, black-box: limits that hold across every replica
//! sharing the ledger, counted from the test job's own execution log.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_tests::{Stack, executions_per_job, free_port, http_get, jobs, wait_for};
use serde_json::json;

/// The most starts within any one second of `starts` (milliseconds).
fn most_in_a_second(starts: &mut [u64]) -> usize {
    starts.sort_unstable();
    (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| **t < starts[i] + 1000)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// A job type limited to 20 starts a second runs at that rate across three replicas (each
/// of which could start 10 at once): no one-second window holds more than 22 starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_types_start_rate_holds_across_replicas() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    std::fs::write(
        stack.dir.path().join("fleet.toml"),
        "[job_types.test]\nmax_starts_per_sec = 20\n",
    )
    .unwrap();
    let _workers: Vec<_> = (0..3)
        .map(|i| {
            stack.worker(
                &format!("w{i}"),
                &job,
                &[("FLEET_CONFIG", "fleet.toml"), ("FLEET_CONCURRENCY", "10")],
            )
        })
        .collect();
    let request = json!({"request_id": "paced", "job_type": "test", "jobs": jobs(200, |_| json!({"sleep_ms": 50}))});
    let out = stack.submit(&request);
    assert!(out.status.success(), "{}", out.stderr);
    let status = stack.wait_done("paced", Duration::from_secs(180)).await;
    assert_eq!(status.count("SUCCEEDED"), 200, "{status:?}");
    let mut starts: Vec<u64> = job.executions().iter().map(|e| e.started_ms).collect();
    assert_eq!(starts.len(), 200);
    let most = most_in_a_second(&mut starts);
    let span = starts[199] - starts[0];
    eprintln!("most starts in one second: {most}; 200 starts over {span} ms");
    assert!(most <= 22, "{most} starts in one second");
    // The limit is the fleet's, not each replica's: 200 starts at 20 a second take more
    // than 9 s, where three replicas of 20 a second each would take 3.
    assert!(span > 9_000, "200 starts in {span} ms");
}

/// A gauge's value in a metrics page: the first series of `name` whose labels contain
/// `labels`.
fn gauge(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.split_whitespace().last()?.parse().ok())
}

/// Back-pressure from the job: jobs whose partner API answers "throttled, retry after 1 s"
/// on their first run are retried after that second without spending an attempt (one
/// attempt allowed, all succeed); the job type's in-flight limit went down to half of what
/// ran (8) and came back up as jobs succeeded, while the Lambda limit never moved (Lambda
/// did not throttle).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_reports_throttling_lowers_its_job_types_limit_not_lambdas() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    // Listed, so the job type's gauge is published.
    std::fs::write(stack.dir.path().join("fleet.toml"), "[job_types.test]\n").unwrap();
    let _worker = stack.worker(
        "w0",
        &job,
        &[
            ("FLEET_CONFIG", "fleet.toml"),
            ("FLEET_CONCURRENCY", "8"),
            ("FLEET_METRICS_LISTEN", &addr),
        ],
    );
    // The two limits, sampled while the jobs run.
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn({
        let (samples, stop, addr) = (samples.clone(), stop.clone(), addr.clone());
        async move {
            while !stop.is_cancelled() {
                if let Some((_, text)) = http_get(&addr, "/metrics").await
                    && let (Some(t), Some(l)) = (
                        gauge(
                            &text,
                            "fleet_job_type_concurrency_limit",
                            "job_type=\"test\"",
                        ),
                        gauge(&text, "fleet_concurrency_limit", "target=\"lambda\""),
                    )
                {
                    samples.lock().unwrap().push((t, l));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let throttled = json!({"request_id": "partner", "job_type": "test",
        "jobs": jobs(16, |_| json!({"throttle_fences": 1, "retry_after_ms": 1000, "sleep_ms": 100})),
        "options": {"max_attempts": 1}});
    assert!(stack.submit(&throttled).status.success());
    let status = stack.wait_done("partner", Duration::from_secs(120)).await;
    assert_eq!(
        status.count("SUCCEEDED"),
        16,
        "attempts refunded: {status:?}"
    );
    let execs = job.executions();
    assert_eq!(execs.len(), 32, "each job ran twice");
    let per_job = executions_per_job(&execs);
    assert!(per_job.values().all(|n| *n == 2), "{per_job:?}");
    // The partner has recovered: jobs that succeed raise the limit back.
    let plain = json!({"request_id": "recovered", "job_type": "test",
        "jobs": jobs(60, |_| json!({"sleep_ms": 20}))});
    assert!(stack.submit(&plain).status.success());
    stack.wait_done("recovered", Duration::from_secs(120)).await;
    wait_for(
        "the job type's limit back at 8 or more",
        Duration::from_secs(30),
        || async {
            let (_, text) = http_get(&addr, "/metrics").await?;
            (gauge(
                &text,
                "fleet_job_type_concurrency_limit",
                "job_type=\"test\"",
            )? >= 8.0)
                .then_some(())
        },
    )
    .await;
    stop.cancel();
    sampler.await.unwrap();
    let samples = samples.lock().unwrap().clone();
    let lowest = samples.iter().map(|s| s.0).fold(f64::MAX, f64::min);
    eprintln!(
        "job type limit: lowest {lowest} of {} samples",
        samples.len()
    );
    assert!(lowest <= 4.0, "the job type's limit went down: {samples:?}");
    let lambda = samples[0].1;
    assert!(
        samples.iter().all(|s| s.1 == lambda),
        "the Lambda limit never moved: {samples:?}"
    );
}

/// `lambda.max_concurrency` (the function's reserved concurrency) holds across the fleet:
/// three replicas that could each run 20 Lambda jobs at once run at most 10 together.
#[tokio::test(flavor = "multi_thread")]
async fn lambdas_max_concurrency_is_the_fleets() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _workers: Vec<_> = (0..3)
        .map(|i| {
            stack.worker(
                &format!("w{i}"),
                &job,
                &[
                    ("FLEET_CONCURRENCY", "20"),
                    ("FLEET_LAMBDA_MAX_CONCURRENCY", "10"),
                ],
            )
        })
        .collect();
    let request = json!({"request_id": "capped", "job_type": "test", "jobs": jobs(120, |_| json!({"sleep_ms": 300}))});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("capped", Duration::from_secs(180)).await;
    assert_eq!(status.count("SUCCEEDED"), 120, "{status:?}");
    // Each execution ran at least its 300 ms from its start: the overlap of those spans is
    // at most the real one.
    let mut edges: Vec<(u64, i32)> = job
        .executions()
        .iter()
        .flat_map(|e| [(e.started_ms, 1), (e.started_ms + 300, -1)])
        .collect();
    edges.sort_unstable_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    eprintln!("at most {most} executions at once");
    assert!(most <= 10, "{most} executions at once");
    assert!(most >= 5, "the cap is used: {most}");
}
