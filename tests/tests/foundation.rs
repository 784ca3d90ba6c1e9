//! The whole path, black-box: producer → SQS → worker replicas → DynamoDB ledger → the test
#![allow(clippy::unwrap_used)]
//! job behind the Lambda Invoke API, on the local stack.

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_tests::{Stack, executions_per_job, jobs, wait_for};
use nix::sys::signal::Signal;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_jobs_over_three_workers_run_once_each() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let workers: Vec<_> = (0..3)
        .map(|i| stack.worker(&format!("w{i}"), &job, &[("FLEET_CONCURRENCY", "32")]))
        .collect();
    let request = json!({
        "request_id": "five-hundred",
        "job_type": "test",
        "jobs": jobs(500, |i| json!({"sleep_ms": (i * 37) % 200, "echo": i})),
    });
    let out = stack.submit(&request);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["sent"], 500);

    let status = stack
        .wait_done("five-hundred", Duration::from_secs(240))
        .await;
    assert_eq!(status.total, 500);
    assert_eq!(status.count("SUCCEEDED"), 500, "{status:?}");
    assert_eq!(status.attempts, 500);

    let per_job = executions_per_job(&job.executions());
    assert_eq!(per_job.len(), 500, "every job executed");
    let twice: Vec<_> = per_job.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "executed more than once: {twice:?}");
    let expected: BTreeSet<String> = (0..500).map(|i| format!("five-hundred:{i}")).collect();
    assert_eq!(per_job.keys().cloned().collect::<BTreeSet<_>>(), expected);

    stack.wait_queues_empty(Duration::from_secs(30)).await;
    drop(workers);
}

#[tokio::test(flavor = "multi_thread")]
async fn resubmission_creates_nothing_and_other_content_is_refused() {
    let stack = Stack::with_init().await;
    let request = json!({"request_id": "again", "job_type": "test", "jobs": jobs(20, |i| json!({"echo": i}))});

    // First submission with no worker running: everything stays PENDING.
    let first = stack.submit(&request);
    assert!(first.status.success(), "{}", first.stderr);
    assert_eq!(
        first.json(),
        json!({"request_id": "again", "jobs": 20, "created": true, "written": 20, "sent": 20})
    );

    // Re-submitted while PENDING: the first submission was whole, so nothing is written or
    // sent (a message lost since is the sweeper's to send again).
    let second = stack.submit(&request);
    assert_eq!(
        second.json(),
        json!({"request_id": "again", "jobs": 20, "created": false, "written": 0, "sent": 0})
    );

    // The same id with other content: refused, nothing written or sent.
    let items_before = stack.table_items().await;
    let depth_before = stack.queue_depth(&stack.names.queue).await;
    let mut other = request.clone();
    other["jobs"][3] = json!({"echo": "changed"});
    let refused = stack.submit(&other);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("exists with other content"),
        "{}",
        refused.stderr
    );
    assert_eq!(stack.table_items().await, items_before);
    assert_eq!(stack.queue_depth(&stack.names.queue).await, depth_before);

    // Run: the duplicated messages do not make any job run twice. (A copy that arrives
    // while its job runs is deferred until the lease ends: a short lease keeps this quick.)
    let job = stack.testjob(&[]).await;
    let _w = stack.worker("w0", &job, &[("FLEET_LEASE_SECS", "4")]);
    let status = stack.wait_done("again", Duration::from_secs(120)).await;
    assert_eq!(status.count("SUCCEEDED"), 20);
    stack.wait_queues_empty(Duration::from_secs(30)).await;
    assert_eq!(job.executions().len(), 20);

    // Re-submitted when finished: nothing written, nothing sent, nothing executed.
    let third = stack.submit(&request);
    assert_eq!(
        third.json(),
        json!({"request_id": "again", "jobs": 20, "created": false, "written": 0, "sent": 0})
    );
    assert_eq!(stack.queue_depth(&stack.names.queue).await, 0);
    assert_eq!(job.executions().len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_running_jobs_message_does_not_run_it_again() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let timings = [("FLEET_LEASE_SECS", "3"), ("FLEET_HEARTBEAT_SECS", "1")];
    let _a = stack.worker("a", &job, &timings);
    let _b = stack.worker("b", &job, &timings);
    let out = stack
        .submit(&json!({"request_id": "copy", "job_type": "test", "jobs": [{"sleep_ms": 6000}]}));
    assert!(out.status.success(), "{}", out.stderr);

    wait_for("the job to run", Duration::from_secs(30), || async {
        (!job.executions().is_empty()).then_some(())
    })
    .await;
    // SQS may deliver a message twice; send the copy the producer would have sent.
    let copy = json!({
        "version": 1, "request_id": "copy", "job_id": "copy:0", "job_type": "test", "attempt": 1,
        "payload": {"sleep_ms": 6000}, "enqueued_at_ms": 1,
    });
    stack
        .sqs()
        .send_message()
        .queue_url(stack.queue_url(&stack.names.queue).await)
        .message_body(copy.to_string())
        .send()
        .await
        .unwrap();

    let status = stack.wait_done("copy", Duration::from_secs(60)).await;
    assert_eq!(status.count("SUCCEEDED"), 1);
    stack.wait_queues_empty(Duration::from_secs(30)).await;
    assert_eq!(job.executions().len(), 1, "{:?}", job.executions());
    assert_eq!(status.attempts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_replica_and_every_job_still_succeeds() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let drain = [("FLEET_DRAIN_SECS", "4"), ("FLEET_CONCURRENCY", "8")];
    let mut workers: Vec<_> = (0..3)
        .map(|i| stack.worker(&format!("w{i}"), &job, &drain))
        .collect();
    let request = json!({
        "request_id": "drain", "job_type": "test",
        "jobs": jobs(120, |i| json!({"sleep_ms": 300 + (i * 131) % 1200})),
    });
    assert!(stack.submit(&request).status.success());

    wait_for("30 jobs to finish", Duration::from_secs(120), || async {
        let s = stack.status("drain");
        (s.count("SUCCEEDED") >= 30).then_some(())
    })
    .await;
    let victim = &mut workers[0];
    victim.signal(Signal::SIGTERM);
    let status = victim.wait_exit(Duration::from_secs(4 + 6)).await;
    let status = status.expect("the replica exits within its drain deadline");
    assert_eq!(status.code(), Some(0), "{}", victim.log_text());
    assert!(victim.log_text().contains("stopped receiving; draining"));

    let done = stack.wait_done("drain", Duration::from_secs(180)).await;
    assert_eq!(done.count("SUCCEEDED"), 120, "{done:?}");
    stack.wait_queues_empty(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_leaves_its_lambda_jobs_running_and_none_runs_twice() {
    // Asynchronous invocation (the default): once Lambda has a job, the replica holds
    // nothing for it; any replica records its outcome from the invocation record.
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    // A short lease: a message whose batched delete the kill cut off comes back soon, finds
    // its job finished and is deleted.
    let timings = [("FLEET_LEASE_SECS", "6"), ("FLEET_HEARTBEAT_SECS", "2")];
    let mut first = stack.worker(
        "first",
        &job,
        &[timings[0], timings[1], ("FLEET_CONCURRENCY", "40")],
    );
    let request = json!({
        "request_id": "handed", "job_type": "test",
        "jobs": jobs(30, |_| json!({"sleep_ms": 5000})),
    });
    assert!(stack.submit(&request).status.success());
    wait_for("thirty executions", Duration::from_secs(30), || async {
        (job.executions().len() == 30).then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("killed");
    let _second = stack.worker("second", &job, &timings);
    let done = stack.wait_done("handed", Duration::from_secs(60)).await;
    assert_eq!(done.count("SUCCEEDED"), 30, "{done:?}");
    assert_eq!(done.attempts, 30, "no attempt was lost: {done:?}");
    let per_job = executions_per_job(&job.executions());
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
    stack.wait_queues_empty(Duration::from_secs(30)).await;
    // Every invocation record is consumed (the last deletes are batched: polled).
    let outcomes = format!("{}-outcomes", stack.names.queue);
    wait_for(
        "every invocation record consumed",
        Duration::from_secs(30),
        || async { (stack.queue_depth(&outcomes).await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_hands_lambda_no_more_jobs_than_its_reserved_concurrency() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&["--reserved-concurrency", "3"]).await;
    let worker = stack.worker("w", &job, &[("FLEET_CONCURRENCY", "20")]);
    let request = json!({
        "request_id": "reserved", "job_type": "test",
        "jobs": jobs(18, |_| json!({"sleep_ms": 1000})),
    });
    assert!(stack.submit(&request).status.success());
    let done = stack.wait_done("reserved", Duration::from_secs(60)).await;
    assert_eq!(done.count("SUCCEEDED"), 18, "{done:?}");
    // A job runs for a second from its start; at no start were more than three running.
    let starts: Vec<u64> = job.executions().iter().map(|e| e.started_ms).collect();
    let most = starts
        .iter()
        .map(|s| starts.iter().filter(|t| *t <= s && s - *t < 1000).count())
        .max()
        .unwrap();
    assert!(most <= 3, "{most} jobs ran at once: {starts:?}");
    assert!(
        worker
            .log_text()
            .contains("Lambda limit capped at the function's reserved concurrency"),
        "{}",
        worker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_still_running_at_the_drain_deadline_are_released_and_run_elsewhere() {
    // Synchronous invocation: the replica holds its Lambda jobs until they end.
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let sync = ("FLEET_LAMBDA_INVOCATION", "sync");
    let mut first = stack.worker("first", &job, &[("FLEET_DRAIN_SECS", "1"), sync]);
    let request = json!({"request_id": "release", "job_type": "test", "jobs": jobs(3, |_| json!({"sleep_ms": 30000}))});
    assert!(stack.submit(&request).status.success());
    wait_for("three executions", Duration::from_secs(30), || async {
        (job.executions().len() == 3).then_some(())
    })
    .await;

    first.signal(Signal::SIGTERM);
    let status = first
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits after its deadline");
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    // Released: claimable at once, and the cut-short attempt is not counted.
    let s = stack.status("release");
    assert_eq!(s.count("RETRYING"), 3, "{s:?}");
    assert_eq!(s.attempts, 0);

    let _second = stack.worker("second", &job, &[sync]);
    wait_for(
        "the released jobs to be claimed again",
        Duration::from_secs(30),
        || async {
            let s = stack.status("release");
            (s.count("RUNNING") == 3).then_some(s)
        },
    )
    .await;
    let per_job = executions_per_job(&job.executions());
    assert!(
        per_job
            .iter()
            .filter(|(id, _)| id.starts_with("release:"))
            .all(|(_, n)| *n == 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_refused_and_write_nothing() {
    let stack = Stack::with_init().await;
    let too_big =
        json!({"job_type": "test", "jobs": [{"echo": "x".repeat(300 * 1024)}]}).to_string();
    let cases = [
        (
            "bad JSON",
            "{\"job_type\": \"test\", \"jobs\": [".to_string(),
            "not a valid request",
        ),
        (
            "no jobs key",
            json!({"job_type": "test"}).to_string(),
            "jobs: give exactly one of jobs, source (an S3 prefix) or range",
        ),
        (
            "empty jobs",
            json!({"job_type": "test", "jobs": []}).to_string(),
            "at least one job",
        ),
        (
            "unknown field",
            json!({"job_type": "test", "jobs": [1], "priority": 9}).to_string(),
            "unknown field `priority`",
        ),
        (
            "payload over the limit",
            too_big,
            "over the limit of 262144",
        ),
    ];
    for (what, text, want) in cases {
        let path = stack.dir.path().join("bad.json");
        std::fs::write(&path, text).unwrap();
        let out = stack.run(
            fleet_tests::bin("fleet-producer"),
            &["submit", path.to_str().unwrap()],
            &[],
        );
        assert!(!out.status.success(), "{what}: accepted");
        assert!(out.stderr.contains(want), "{what}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{what}: printed {}", out.stdout);
    }
    assert!(stack.ledger_items().await.is_empty());
    assert_eq!(stack.queue_depth(&stack.names.queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_message_is_dead_lettered_and_good_jobs_still_run() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _w = stack.worker("w0", &job, &[]);
    let url = stack.queue_url(&stack.names.queue).await;
    stack
        .sqs()
        .send_message()
        .queue_url(&url)
        .message_body("this is not json")
        .send()
        .await
        .unwrap();
    assert!(
        stack
            .submit(&json!({"request_id": "good", "job_type": "test", "jobs": [{}]}))
            .status
            .success()
    );
    stack.wait_done("good", Duration::from_secs(60)).await;

    let got = stack.wait_dead_letter(Duration::from_secs(30)).await;
    assert_eq!(got.body(), Some("this is not json"));
    let record = fleet_tests::failure_record(&got);
    assert_eq!(record.error_class.as_str(), "permanent");
    assert!(record.error.contains("not valid JSON"), "{record:?}");
    assert_eq!((record.job_id, record.attempts), (None, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_max_attempts_bounds_retries_and_failures_are_dead_lettered() {
    let stack = Stack::with_init().await;
    // init is idempotent.
    let again = stack.run(fleet_tests::bin("fleet-worker"), &["init"], &[]);
    assert!(again.status.success(), "{}", again.stderr);
    assert!(again.stdout.contains("(exists)"), "{}", again.stdout);

    let job = stack.testjob(&[]).await;
    // Queues may be given by URL as well as by name.
    let url = stack.queue_url(&stack.names.queue).await;
    let _w = stack.worker("w0", &job, &[("FLEET_QUEUE", &url)]);
    let request = json!({
        "request_id": "bounded", "job_type": "test",
        "jobs": [{"fail": true}, {"fail_times": 1}],
        "options": {"max_attempts": 2},
    });
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("bounded", Duration::from_secs(60)).await;
    assert_eq!(
        (
            status.count("FAILED"),
            status.count("SUCCEEDED"),
            status.attempts
        ),
        (1, 1, 4)
    );
    let per_job = executions_per_job(&job.executions());
    assert_eq!(per_job["bounded:0"], 2);
    assert_eq!(per_job["bounded:1"], 2);

    let dead = stack.wait_dead_letter(Duration::from_secs(30)).await;
    let record = fleet_tests::failure_record(&dead);
    assert_eq!(record.job_id.as_deref(), Some("bounded:0"));
    assert_eq!(record.request_id.as_deref(), Some("bounded"));
    assert_eq!(record.attempts, 2);
    assert_eq!(record.error_class.as_str(), "job_failure");
    assert_eq!(record.targets, vec![fleet_shared::message::Target::Lambda]);
    assert!(record.first_attempt_ms < record.last_attempt_ms);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_sent_straight_to_sqs_runs_without_a_ledger_item() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _w = stack.worker("w0", &job, &[]);
    // Built from the schema alone, as another service would.
    let message = json!({
        "version": 1, "request_id": "direct", "job_id": "direct:0", "job_type": "test",
        "attempt": 1, "payload": {"echo": "from elsewhere"}, "enqueued_at_ms": 1_764_150_000_000u64,
    });
    let url = stack.queue_url(&stack.names.queue).await;
    stack
        .sqs()
        .send_message()
        .queue_url(&url)
        .message_body(message.to_string())
        .send()
        .await
        .unwrap();
    let status = stack.wait_done("direct", Duration::from_secs(60)).await;
    assert_eq!((status.total, status.count("SUCCEEDED")), (1, 1));
    assert_eq!(job.executions().len(), 1);
}
