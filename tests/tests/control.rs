//! Fleet-wide control of a request, black-box: limits that hold across every replica
//! sharing the ledger, counted from the test job's own execution log.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_tests::{
    Stack, bin, executions_per_job, free_port, http_get, jobs, wait_for, wait_for_every,
};
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

/// The most executions running at once at any instant in `within`, each counted from its
/// start for `ran_ms` (what the job sleeps: a lower bound of its span, so the count is at
/// most the real one).
fn most_at_once(starts: &[u64], ran_ms: u64, within: std::ops::Range<u64>) -> i32 {
    let mut edges: Vec<(u64, i32)> = starts
        .iter()
        .flat_map(|&s| [(s, 1), (s + ran_ms, -1)])
        .collect();
    edges.sort_unstable_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0, 0);
    for (t, d) in edges {
        now += d;
        if within.contains(&t) {
            most = most.max(now);
        }
    }
    most
}

/// A request's `max_concurrency` holds across the fleet and can be raised while it runs:
/// three replicas that could each run 50 jobs at once run at most 10 of its jobs (of a
/// second each) together; after `fleet-producer limit --max-concurrency 40`, more than 10
/// overlap.
#[tokio::test(flavor = "multi_thread")]
async fn a_requests_max_concurrency_holds_across_replicas_and_can_be_raised() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _workers: Vec<_> = (0..3)
        .map(|i| stack.worker(&format!("w{i}"), &job, &[("FLEET_CONCURRENCY", "50")]))
        .collect();
    let request = json!({"request_id": "capped", "job_type": "test",
        "jobs": jobs(300, |_| json!({"sleep_ms": 1000})),
        "options": {"max_concurrency": 10}});
    assert!(stack.submit(&request).status.success());
    wait_for_every(
        "60 jobs done under the cap",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async { (stack.status("capped").count("SUCCEEDED") >= 60).then_some(()) },
    )
    .await;
    let asked = fleet_shared::time::now_ms();
    let out = stack.run(
        bin("fleet-producer"),
        &["limit", "capped", "--max-concurrency", "40", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let raised = fleet_shared::time::now_ms();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["max_concurrency"], 40);
    let status = stack.wait_done("capped", Duration::from_secs(180)).await;
    assert_eq!(status.count("SUCCEEDED"), 300, "{status:?}");
    let starts: Vec<u64> = job.executions().iter().map(|e| e.started_ms).collect();
    assert_eq!(starts.len(), 300, "each job ran once");
    let before = most_at_once(&starts, 1000, 0..asked);
    let after = most_at_once(&starts, 1000, raised..u64::MAX);
    eprintln!("at most {before} at once under 10, {after} under 40");
    assert!(
        before <= 10,
        "{before} executions at once under a limit of 10"
    );
    assert!(before >= 5, "the limit is used: {before}");
    assert!(after > 10, "the raised limit is used: {after}");
}

/// Requests interleave in the queue: a 5,000-job request submitted first holds a window of
/// 50 messages in SQS, not 5,000, so a 20-job request submitted second is finished before
/// the first is a tenth done. Cancelling the first then ends it at once: its jobs never
/// released count as cancelled without a write each.
#[tokio::test(flavor = "multi_thread")]
async fn a_small_request_is_not_queued_behind_a_large_one() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let submit = |request: serde_json::Value| {
        let out = stack.submit_with(&request, &[("FLEET_WINDOW", "50")]);
        assert!(out.status.success(), "{}", out.stderr);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    let big = submit(json!({"request_id": "backfill", "job_type": "test",
        "jobs": jobs(5000, |_| json!({"sleep_ms": 20}))}));
    assert_eq!(
        (big["written"].as_u64(), big["sent"].as_u64()),
        (Some(5000), Some(50))
    );
    let small = submit(json!({"request_id": "quick", "job_type": "test",
        "jobs": jobs(20, |_| json!({"sleep_ms": 20}))}));
    assert_eq!(small["sent"].as_u64(), Some(20));
    assert_eq!(
        stack.queue_depth(&stack.names.queue).await,
        70,
        "a window of the first and all of the second"
    );
    let _workers: Vec<_> = (0..2)
        .map(|i| stack.worker(&format!("w{i}"), &job, &[("FLEET_CONCURRENCY", "10")]))
        .collect();
    let quick = stack.wait_done("quick", Duration::from_secs(120)).await;
    assert_eq!(quick.count("SUCCEEDED"), 20, "{quick:?}");
    let backfill = stack.status("backfill");
    eprintln!("the first request when the second finished: {backfill:?}");
    assert!(
        backfill.count("SUCCEEDED") < 500,
        "the second waited behind the first: {backfill:?}"
    );
    let out = stack.run(bin("fleet-producer"), &["cancel", "backfill"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    let backfill = stack.wait_done("backfill", Duration::from_secs(120)).await;
    assert_eq!(backfill.state, "CANCELLED");
    let (succeeded, cancelled) = (backfill.count("SUCCEEDED"), backfill.count("CANCELLED"));
    assert_eq!(succeeded + cancelled, 5000, "{backfill:?}");
    let ran = job
        .executions()
        .iter()
        .filter(|e| e.job_id.starts_with("backfill"))
        .count() as u32;
    assert_eq!(ran, succeeded, "no cancelled job ran");
    assert!(succeeded < 2500, "most of it never ran: {backfill:?}");
}

/// `job_types.<t>.max_concurrency` holds across the fleet, for jobs in containers too:
/// three replicas that could each run 20 ECS tasks (here local processes) run at most 6 of
/// the job type's jobs together.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_types_max_concurrency_is_the_fleets() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    std::fs::write(
        stack.dir.path().join("fleet.toml"),
        "[job_types.test]\nmax_concurrency = 6\n",
    )
    .unwrap();
    let command = format!("{} run", bin("fleet-testjob").display());
    let _workers: Vec<_> = (0..3)
        .map(|i| {
            stack.worker(
                &format!("w{i}"),
                &job,
                &[
                    ("FLEET_CONFIG", "fleet.toml"),
                    ("FLEET_CONCURRENCY", "20"),
                    ("FLEET_ECS_LAUNCHER", "process"),
                    ("FLEET_ECS_COMMAND", command.as_str()),
                ],
            )
        })
        .collect();
    let request = json!({"request_id": "typed", "job_type": "test",
        "jobs": jobs(60, |_| json!({"sleep_ms": 1000})), "options": {"target": "ecs"}});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("typed", Duration::from_secs(180)).await;
    assert_eq!(status.count("SUCCEEDED"), 60, "{status:?}");
    let starts: Vec<u64> = job.executions().iter().map(|e| e.started_ms).collect();
    assert_eq!(starts.len(), 60);
    let most = most_at_once(&starts, 1000, 0..u64::MAX);
    eprintln!("at most {most} of the job type at once");
    assert!(most <= 6, "{most} at once under a cap of 6");
    assert!(most >= 4, "the cap is used: {most}");
}

/// A tenant's `max_concurrency` holds across all its requests and every replica, and its
/// messages carry it as their SQS message group: two requests of tenant "acme" under a cap
/// of 4 never run more than 4 jobs together, while a request of another tenant beside them
/// is not held back by it.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_max_concurrency_holds_across_its_requests() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    std::fs::write(
        stack.dir.path().join("fleet.toml"),
        "[tenants.acme]\nmax_concurrency = 4\n",
    )
    .unwrap();
    for (id, tenant) in [
        ("acme-a", Some("acme")),
        ("acme-b", Some("acme")),
        ("solo", None),
    ] {
        let mut request = json!({"request_id": id, "job_type": "test",
            "jobs": jobs(20, |_| json!({"sleep_ms": 1000}))});
        if let Some(t) = tenant {
            request["tenant"] = json!(t);
        }
        assert!(stack.submit(&request).status.success());
    }
    // Every message's group is its request's tenant (a request without one: its id).
    let url = stack.queue_url(&stack.names.queue).await;
    let mut groups = std::collections::BTreeMap::<String, u32>::new();
    let mut receipts = Vec::new();
    while receipts.len() < 60 {
        let got = stack
            .sqs()
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
            )
            .visibility_timeout(30)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let group = m
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                })
                .cloned()
                .unwrap_or_default();
            *groups.entry(group).or_default() += 1;
            receipts.push(m.receipt_handle().unwrap().to_owned());
        }
    }
    assert_eq!(
        groups,
        [("acme".to_owned(), 40), ("solo".to_owned(), 20)].into()
    );
    for r in &receipts {
        stack
            .sqs()
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(r)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    let _workers: Vec<_> = (0..2)
        .map(|i| {
            stack.worker(
                &format!("w{i}"),
                &job,
                &[("FLEET_CONFIG", "fleet.toml"), ("FLEET_CONCURRENCY", "20")],
            )
        })
        .collect();
    for id in ["acme-a", "acme-b", "solo"] {
        let s = stack.wait_done(id, Duration::from_secs(180)).await;
        assert_eq!(s.count("SUCCEEDED"), 20, "{s:?}");
    }
    let starts = |prefix: &str| -> Vec<u64> {
        job.executions()
            .iter()
            .filter(|e| e.job_id.starts_with(prefix))
            .map(|e| e.started_ms)
            .collect()
    };
    let acme = most_at_once(&starts("acme-"), 1000, 0..u64::MAX);
    let solo = most_at_once(&starts("solo:"), 1000, 0..u64::MAX);
    eprintln!("at most {acme} of acme's jobs at once, {solo} of the other tenant's");
    assert!(acme <= 4, "{acme} of acme's jobs at once under a cap of 4");
    assert!(acme >= 3, "the cap is used: {acme}");
    assert!(solo > 4, "another tenant is not held to acme's cap: {solo}");
}
