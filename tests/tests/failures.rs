//! Failure handling, black-box: retries and their delays, dead-lettering, throttling and
//! faults injected between the workers and Lambda, the bad-message corpus, redrive of one
//! request, cancel, and a request failing as a whole over its tolerated failures.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_shared::ids::JobId;
use fleet_tests::fault_proxy::{FaultKind, FaultProxy, Faults};
use fleet_tests::{
    Stack, bin, executions_per_job, failure_record, free_port, http_get, jobs, wait_for,
    wait_for_every,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn retries_follow_the_policy_and_failed_jobs_are_dead_lettered_once() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _workers: Vec<_> = (0..2)
        .map(|i| stack.worker(&format!("w{i}"), &job, &[]))
        .collect();
    // 5% always fail, 10% fail twice then succeed, the rest succeed at once.
    let payload = |i: usize| match i {
        i if i % 20 == 0 => json!({"fail": true}),
        i if i % 10 == 5 => json!({"fail_times": 2}),
        i => json!({"sleep_ms": (i * 7) % 300}),
    };
    let request = json!({"request_id": "policy", "job_type": "test", "jobs": jobs(300, payload), "options": {"max_attempts": 4}});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("policy", Duration::from_secs(300)).await;
    assert_eq!(
        (status.count("SUCCEEDED"), status.count("FAILED")),
        (285, 15),
        "{status:?}"
    );

    let per_job = executions_per_job(&job.executions());
    for i in 0..300 {
        let want = match i {
            i if i % 20 == 0 => 4,
            i if i % 10 == 5 => 3,
            _ => 1,
        };
        assert_eq!(per_job[&format!("policy:{i}")], want, "job {i}");
    }

    // Each failed job is in the dead-letter queue once, with its failure record.
    wait_for("15 dead letters", Duration::from_secs(30), || async {
        (stack.queue_depth(&stack.names.dlq).await == 15).then_some(())
    })
    .await;
    let dead = stack.drain_queue(&stack.names.dlq).await;
    let mut ids: Vec<String> = dead
        .iter()
        .map(|m| failure_record(m).job_id.unwrap())
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..300)
        .step_by(20)
        .map(|i| format!("policy:{i}"))
        .collect();
    want.sort();
    assert_eq!(ids, want);
    assert!(dead.iter().all(|m| failure_record(m).attempts == 4));

    // Delays between attempts: the delay chosen (the retry time recorded with the attempt)
    // is full jitter under ceilings of 1, 2, 4 s (base 1 s), and no attempt starts before it.
    let mut below_half = 0;
    for i in (0..300).filter(|i| i % 20 == 0 || i % 10 == 5) {
        let history = stack.history(&JobId::new("policy", i).unwrap()).await;
        assert_eq!(history.len(), per_job[&format!("policy:{i}")]);
        for pair in history.windows(2) {
            let retry_at = pair[0]
                .retry_at_ms
                .expect("a retried attempt records its retry time");
            let delay = retry_at - pair[0].ended_ms;
            let ceiling = 1000u64 << (pair[0].attempt - 1);
            assert!(
                delay <= ceiling,
                "job {i}: delay {delay} ms after attempt {}",
                pair[0].attempt
            );
            assert!(
                pair[1].started_ms >= retry_at,
                "job {i}: attempt {} started early",
                pair[1].attempt
            );
            if ceiling == 4000 && delay < 2000 {
                below_half += 1;
            }
        }
    }
    assert!(
        below_half > 0,
        "delays are jittered, not all at the ceiling"
    );
    stack.wait_queues_empty_but_dead_letters().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_5xx_through_a_fault_proxy() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let faults = Faults {
        throttle: 0.10,
        server_error: 0.05,
        seed: 11,
        ..Default::default()
    };
    let proxy = FaultProxy::start(&job.endpoint, faults).await;
    let env = [
        ("AWS_ENDPOINT_URL_LAMBDA", proxy.endpoint.as_str()),
        ("FLEET_CONCURRENCY", "16"),
    ];
    let workers: Vec<_> = (0..2)
        .map(|i| stack.worker(&format!("w{i}"), &job, &env))
        .collect();
    let request = json!({"request_id": "faults", "job_type": "test", "jobs": jobs(200, |i| json!({"sleep_ms": 100 + (i * 13) % 300}))});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("faults", Duration::from_secs(300)).await;
    assert_eq!(status.count("SUCCEEDED"), 200, "{status:?}");

    assert!(
        proxy.count(FaultKind::Throttle) >= 5,
        "{:?}",
        proxy.faults()
    );
    assert!(proxy.count(FaultKind::ServerError) >= 2);
    // Throttled calls spend no attempt; 5xx answers do.
    for i in 0..200u32 {
        let id = JobId::new("faults", i).unwrap();
        let history = stack.history(&id).await;
        let attempts = history.iter().map(|h| h.attempt).max().unwrap();
        let errors = proxy.count_for(&id.to_string(), FaultKind::ServerError) as u32;
        assert_eq!(attempts, 1 + errors, "{id}: {history:?}");
        let throttled = history
            .iter()
            .filter(|h| h.outcome.as_str() == "throttled")
            .count();
        assert_eq!(
            throttled,
            proxy.count_for(&id.to_string(), FaultKind::Throttle),
            "{id}"
        );
    }
    let lowered = workers.iter().any(|w| {
        w.log_text()
            .contains("throttled: concurrency limit lowered")
    });
    assert!(lowered, "a replica lowered its Lambda in-flight limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_timeouts_and_dropped_connections_are_failed_attempts() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let faults = Faults {
        delay: 0.15,
        delay_by: Duration::from_secs(4),
        reset: 0.15,
        seed: 5,
        ..Default::default()
    };
    let proxy = FaultProxy::start(&job.endpoint, faults).await;
    let env = [
        ("AWS_ENDPOINT_URL_LAMBDA", proxy.endpoint.as_str()),
        ("FLEET_LAMBDA_READ_TIMEOUT_SECS", "1"),
        ("FLEET_MAX_ATTEMPTS", "8"),
    ];
    let _w = stack.worker("w0", &job, &env);
    let request = json!({"request_id": "net", "job_type": "test", "jobs": jobs(40, |_| json!({}))});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("net", Duration::from_secs(300)).await;
    assert_eq!(status.count("SUCCEEDED"), 40, "{status:?}");
    assert!(proxy.count(FaultKind::Delay) > 0 && proxy.count(FaultKind::Reset) > 0);
    for i in 0..40u32 {
        let id = JobId::new("net", i).unwrap();
        let history = stack.history(&id).await;
        let outcomes = |o: &str| history.iter().filter(|h| h.outcome.as_str() == o).count();
        assert_eq!(
            outcomes("timeout"),
            proxy.count_for(&id.to_string(), FaultKind::Delay),
            "{id}: {history:?}"
        );
        assert_eq!(
            outcomes("transient"),
            proxy.count_for(&id.to_string(), FaultKind::Reset),
            "{id}: {history:?}"
        );
        // Never re-sent within an attempt: one call per attempt.
        assert_eq!(history.last().unwrap().attempt as usize, history.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bad_message_corpus_is_dead_lettered_without_harm() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    std::fs::write(stack.dir.path().join("fleet.toml"), "[job_types.test]\n").unwrap();
    let mut worker = stack.worker("w0", &job, &[("FLEET_CONFIG", "fleet.toml")]);
    let corpus: Vec<Value> =
        serde_json::from_str(include_str!("../corpus/bad-messages.json")).unwrap();
    let mut bodies: Vec<String> = corpus
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    // Over the 256 KiB limit, otherwise well formed.
    for i in 0..2 {
        let big = json!({"version": 1, "request_id": "big", "job_id": format!("big:{i}"), "job_type": "test",
            "attempt": 1, "payload": {"x": "y".repeat(300 * 1024)}, "enqueued_at_ms": 1});
        bodies.push(big.to_string());
    }
    let url = stack.queue_url(&stack.names.queue).await;
    let queue = fleet_shared::queue::sqs::SqsQueue::new(stack.sqs(), url.clone());
    let (small, large): (Vec<String>, Vec<String>) =
        bodies.iter().cloned().partition(|b| b.len() < 200 * 1024);
    queue.send_batched(&small).await.unwrap();
    for b in &large {
        stack
            .sqs()
            .send_message()
            .queue_url(&url)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
    assert!(
        stack
            .submit(&json!({"request_id": "good", "job_type": "test", "jobs": [{}]}))
            .status
            .success()
    );

    stack.wait_done("good", Duration::from_secs(120)).await;
    let n = bodies.len() as u64;
    wait_for(
        "every bad message dead-lettered",
        Duration::from_secs(120),
        || async { (stack.queue_depth(&stack.names.dlq).await == n).then_some(()) },
    )
    .await;
    // Their deletes from the jobs queue follow, batched for up to a second.
    wait_for(
        "the jobs queue to be empty",
        Duration::from_secs(30),
        || async { (stack.queue_depth(&stack.names.queue).await == 0).then_some(()) },
    )
    .await;
    let dead = stack.drain_queue(&stack.names.dlq).await;
    assert_eq!(dead.len() as u64, n);
    for m in &dead {
        let record = failure_record(m);
        assert_eq!(
            (record.error_class.as_str(), record.attempts),
            ("permanent", 0),
            "{record:?}"
        );
        assert!(!record.error.is_empty());
    }
    let mut got: Vec<&str> = dead.iter().map(|m| m.body().unwrap()).collect();
    let mut want: Vec<&str> = bodies.iter().map(String::as_str).collect();
    got.sort();
    want.sort();
    assert!(
        got == want,
        "the dead-letter queue holds exactly the bad messages, unchanged"
    );
    assert!(
        worker.try_status().is_none(),
        "the replica is still running"
    );
    assert!(!worker.log_text().contains("panicked"));
    assert!(
        stack
            .ledger_items()
            .await
            .iter()
            .all(|item| item["pk"].as_s().unwrap().contains("#good"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_replays_one_requests_failed_jobs_and_leaves_the_rest() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _w = stack.worker("w0", &job, &[]);
    // A: fails on attempts 1 to 3, allowed 2: FAILED. B: always fails, allowed 1: FAILED.
    let a = json!({"request_id": "req-a", "job_type": "test", "jobs": jobs(5, |_| json!({"fail_times": 3})), "options": {"max_attempts": 2}});
    let b = json!({"request_id": "req-b", "job_type": "test", "jobs": jobs(3, |_| json!({"fail": true})), "options": {"max_attempts": 1}});
    assert!(stack.submit(&a).status.success());
    assert!(stack.submit(&b).status.success());
    stack.wait_done("req-a", Duration::from_secs(120)).await;
    stack.wait_done("req-b", Duration::from_secs(120)).await;
    wait_for("8 dead letters", Duration::from_secs(30), || async {
        (stack.queue_depth(&stack.names.dlq).await == 8).then_some(())
    })
    .await;

    let producer = bin("fleet-producer");
    let list = stack.run(
        producer.clone(),
        &["dlq", "list", "--request", "req-a", "--json"],
        &[],
    );
    assert!(list.status.success(), "{}", list.stderr);
    let listed: Vec<Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|l| l["request_id"] == "req-a"
        && l["attempts"] == 2
        && l["error_class"] == "job_failure"));
    // Listing hides nothing for long: every message is visible again.
    assert_eq!(stack.queue_depth(&stack.names.dlq).await, 8);

    let out = stack.run(
        producer.clone(),
        &[
            "dlq",
            "redrive",
            "--request",
            "req-a",
            "--max-attempts",
            "3",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["redriven"].as_u64(), Some(5), "{report}");

    let status = stack.wait_done("req-a", Duration::from_secs(120)).await;
    assert_eq!(status.count("SUCCEEDED"), 5, "{status:?}");
    let per_job = executions_per_job(&job.executions());
    assert!(
        (0..5).all(|i| per_job[&format!("req-a:{i}")] == 4),
        "attempts 1-2, then 3 (fails) and 4 (succeeds): {per_job:?}"
    );
    // The ledger lists A's failures no more, B's still; the dead-letter queue keeps every
    // message as the archive.
    let listed = |request: &str| -> Vec<Value> {
        let out = stack.run(
            producer.clone(),
            &["dlq", "list", "--request", request, "--json"],
            &[],
        );
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(listed("req-a").is_empty());
    let b_left = listed("req-b");
    assert_eq!(b_left.len(), 3);
    assert!(b_left.iter().all(|l| l["request_id"] == "req-b"));
    assert_eq!(stack.queue_depth(&stack.names.dlq).await, 8);
    // A look at the queue itself merges copies by job.
    let peek = stack.run(producer.clone(), &["dlq", "list", "--json"], &[]);
    assert_eq!(peek.stdout.lines().count(), 8, "{}", peek.stdout);
    // A second redrive of A finds nothing to do.
    let again = stack.run(
        producer,
        &["dlq", "redrive", "--request", "req-a", "--json"],
        &[],
    );
    assert_eq!(again.json()["redriven"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_request_midway_and_the_counts_add_up() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _workers: Vec<_> = (0..2)
        .map(|i| stack.worker(&format!("w{i}"), &job, &[("FLEET_CONCURRENCY", "8")]))
        .collect();
    let request = json!({"request_id": "stop", "job_type": "test", "jobs": jobs(300, |i| json!({"sleep_ms": 300 + (i * 37) % 700}))});
    assert!(stack.submit(&request).status.success());
    wait_for("40 jobs done", Duration::from_secs(120), || async {
        (stack.status("stop").count("SUCCEEDED") >= 40).then_some(())
    })
    .await;

    let out = stack.run(bin("fleet-producer"), &["cancel", "stop", "--json"], &[]);
    let cancel_returned = fleet_shared::time::now_ms();
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    let cancelled_at = report["cancelled_at_ms"].as_u64().unwrap();

    // The jobs not started are cancelled as the replicas receive them.
    let status = stack.wait_done("stop", Duration::from_secs(120)).await;
    let states: BTreeMap<&str, u32> = status
        .states
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert!(states["CANCELLED"] > 100, "{states:?}");
    assert_eq!(states["SUCCEEDED"] + states["CANCELLED"], 300, "{states:?}");
    // No job started after cancel returned, and no cancelled job ever ran.
    let execs = job.executions();
    assert!(
        execs.iter().all(|e| e.started_ms < cancel_returned),
        "an execution started after cancel returned"
    );
    assert_eq!(execs.len() as u32, states["SUCCEEDED"]);
    // Cancelling again is harmless: the first cancel's time stays.
    let again = stack.run(bin("fleet-producer"), &["cancel", "stop", "--json"], &[]);
    assert_eq!(again.json()["cancelled_at_ms"], cancelled_at);
    stack.wait_queues_empty(Duration::from_secs(60)).await;
}

/// What a job's error says decides its retries, under Lambda (the kind in `errorType`) and in
/// a container (the kind in the exit code): a permanent failure runs once and fails however
/// many attempts remain; a throttled job runs again after its retry-after without spending
/// an attempt, so a job allowed one attempt succeeds after two throttled runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_error_kind_decides_its_retries_in_lambda_and_in_a_container() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let command = format!("{} run", bin("fleet-testjob").display());
    let env = [
        ("FLEET_ECS_LAUNCHER", "process"),
        ("FLEET_ECS_COMMAND", command.as_str()),
    ];
    let _w = stack.worker("w0", &job, &env);
    let permanent = json!({"fail_permanent": true});
    let throttled = json!({"throttle_fences": 2, "retry_after_ms": 300});
    for target in ["lambda", "ecs"] {
        let kinds = |id: &str, payload: &Value, attempts: u32| json!({"request_id": format!("{id}-{target}"), "job_type": "test", "jobs": [payload], "options": {"target": target, "max_attempts": attempts}});
        assert!(
            stack
                .submit(&kinds("permanent", &permanent, 3))
                .status
                .success()
        );
        assert!(
            stack
                .submit(&kinds("throttled", &throttled, 1))
                .status
                .success()
        );
    }
    for target in ["lambda", "ecs"] {
        let failed = stack
            .wait_done(&format!("permanent-{target}"), Duration::from_secs(120))
            .await;
        assert_eq!(failed.count("FAILED"), 1, "{target}: {failed:?}");
        let id = JobId::new(&format!("permanent-{target}"), 0).unwrap();
        let outcomes: Vec<&str> = stack
            .history(&id)
            .await
            .into_iter()
            .map(|h| h.outcome.as_str())
            .collect();
        assert_eq!(outcomes, ["permanent"], "{target}: one run, failed at once");

        let done = stack
            .wait_done(&format!("throttled-{target}"), Duration::from_secs(120))
            .await;
        assert_eq!(done.count("SUCCEEDED"), 1, "{target}: {done:?}");
        let id = JobId::new(&format!("throttled-{target}"), 0).unwrap();
        let history = stack.history(&id).await;
        let outcomes: Vec<(&str, u32)> = history
            .iter()
            .map(|h| (h.outcome.as_str(), h.attempt))
            .collect();
        assert_eq!(
            outcomes,
            [("throttled", 1), ("throttled", 1), ("succeeded", 1)],
            "{target}: the throttled runs spent no attempt"
        );
    }
    let per_job = executions_per_job(&job.executions());
    assert_eq!(per_job.get("permanent-lambda:0"), Some(&1), "{per_job:?}");
    assert_eq!(per_job.get("throttled-lambda:0"), Some(&3), "{per_job:?}");
}

/// A request fails as a whole once more of its jobs failed than it tolerates: 30% of 500 jobs
/// always fail, 10% (50 jobs) are tolerated. The request ends FAILED with the reason, its jobs
/// not started yet are cancelled and never run, far fewer than 500 jobs ran, and exactly one
/// replica counted the request as failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_its_tolerated_failures_fails_and_starts_no_more_jobs() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let _workers: Vec<_> = (0..2)
        .map(|i| {
            stack.worker(
                &format!("w{i}"),
                &job,
                &[
                    ("FLEET_CONCURRENCY", "4"),
                    ("FLEET_METRICS_LISTEN", &addrs[i]),
                ],
            )
        })
        .collect();
    let request = json!({
        "request_id": "brittle",
        "job_type": "test",
        "jobs": jobs(500, |i| if i % 10 < 3 {
            json!({"sleep_ms": 300, "fail_permanent": true})
        } else {
            json!({"sleep_ms": 300})
        }),
        "options": {"tolerated_failure_percent": 10, "max_attempts": 1},
    });
    let out = stack.submit(&request);
    assert!(out.status.success(), "{}", out.stderr);

    let status = wait_for_every(
        "the request to fail and its jobs to end",
        Duration::from_secs(240),
        Duration::from_millis(500),
        || async {
            stack
                .try_status("brittle")
                .filter(|s| s.done && s.state == "FAILED")
        },
    )
    .await;
    let failed = status.failed.clone().expect("why it failed");
    assert!(
        failed.reason.contains("more than the 50 it tolerates"),
        "{failed:?}"
    );
    let (ok, bad, cancelled) = (
        status.count("SUCCEEDED"),
        status.count("FAILED"),
        status.count("CANCELLED"),
    );
    assert!(bad > 50, "{status:?}");
    assert!(cancelled > 100, "{status:?}");
    assert_eq!(ok + bad + cancelled, 500, "{status:?}");
    // No cancelled job ran: the executions are the jobs that succeeded or failed.
    let execs = job.executions();
    eprintln!("{} of 500 jobs ran; {status:?}", execs.len());
    assert_eq!(execs.len() as u32, ok + bad, "{status:?}");
    assert!(execs.len() < 400, "{} of 500 jobs ran", execs.len());
    assert!(
        execs.iter().all(|e| e.started_ms <= failed.at_ms + 3_000),
        "no job started later than the replicas' request views (2 s) after the request failed"
    );
    // One replica marked it.
    let mut marked = 0.0;
    for addr in &addrs {
        let (_, text) = http_get(addr, "/metrics").await.expect("metrics");
        marked += text
            .lines()
            .filter(|l| l.starts_with("fleet_requests_failed_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!(marked, 1.0);
    stack.wait_queues_empty_but_dead_letters().await;
}
