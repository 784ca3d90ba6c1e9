//! The job runtime's entrypoints, black-box: the local Invoke API as the AWS SDK sees it,
//! and the container entrypoint's contract.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use fleet_shared::message::JobEvent;
use fleet_tests::{Stack, bin, wait_for};
use serde_json::{Value, json};

fn event(job_id: &str, attempt: u32, payload: Value) -> JobEvent {
    JobEvent {
        request_id: "r".into(),
        job_id: job_id.into(),
        job_type: "test".into(),
        attempt,
        fence: 7,
        payload,
        large_results: None,
        route: None,
        lease: None,
    }
}

fn lambda(endpoint: &str) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_lambda::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

async fn invoke(
    client: &aws_sdk_lambda::Client,
    function: &str,
    ev: &JobEvent,
) -> (Option<String>, Value) {
    let out = client
        .invoke()
        .function_name(function)
        .payload(Blob::new(serde_json::to_vec(ev).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status_code(), 200);
    let body = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    (out.function_error().map(str::to_owned), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_invoke_api_answers_as_lambda_does() {
    let stack = Stack::start().await;
    let job = stack
        .testjob(&["--timeout", "1", "--function", "job"])
        .await;
    let client = lambda(&job.endpoint);

    let (err, body) = invoke(&client, "job", &event("r:1", 1, json!({"echo": [1, "x"]}))).await;
    assert_eq!(err, None);
    assert_eq!(
        body,
        json!({"job_id": "r:1", "attempt": 1, "fence": 7, "slept_ms": 0, "echo": [1, "x"]})
    );

    let (err, body) = invoke(&client, "job", &event("r:2", 1, json!({"fail_times": 1}))).await;
    assert_eq!(err.as_deref(), Some("Unhandled"));
    assert_eq!(body["errorType"], "RequestedFailure");
    let (err, _) = invoke(&client, "job", &event("r:2", 2, json!({"fail_times": 1}))).await;
    assert_eq!(err, None, "the second attempt succeeds");

    let (err, body) = invoke(&client, "job", &event("r:3", 1, json!({"panic": true}))).await;
    assert_eq!(err.as_deref(), Some("Unhandled"));
    assert!(
        body["errorMessage"].as_str().unwrap().contains("panicked"),
        "{body}"
    );

    let (err, body) = invoke(&client, "job", &event("r:4", 1, json!({"sleep_ms": 5000}))).await;
    assert_eq!(err.as_deref(), Some("Unhandled"));
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Task timed out after 1.00 seconds")
    );

    let arn = "arn:aws:lambda:us-east-1:123456789012:function:job";
    assert_eq!(
        invoke(&client, arn, &event("r:5", 1, json!({}))).await.0,
        None
    );

    // A job's error kind travels in the error type, as the worker reads it.
    let (err, body) = invoke(
        &client,
        "job",
        &event("r:6", 1, json!({"fail_permanent": true})),
    )
    .await;
    assert_eq!(err.as_deref(), Some("Unhandled"));
    assert_eq!(
        body["errorType"],
        "Fleet.Permanent.RequestedPermanentFailure"
    );
    let throttled = json!({"throttle_fences": 7, "retry_after_ms": 1500});
    let (err, body) = invoke(&client, "job", &event("r:7", 1, throttled)).await;
    assert_eq!(err.as_deref(), Some("Unhandled"));
    assert_eq!(
        body["errorType"],
        "Fleet.Throttled[retry_after_ms=1500].RequestedThrottling"
    );

    let missing = client
        .invoke()
        .function_name("other")
        .payload(Blob::new(b"{}".to_vec()))
        .send()
        .await
        .unwrap_err();
    let service = missing.into_service_error();
    assert!(service.is_resource_not_found_exception(), "{service:?}");

    // Every invocation above was logged once, with the attempt and fence it was given.
    let logged: Vec<(String, u32, u64)> = job
        .executions()
        .into_iter()
        .map(|e| (e.job_id, e.attempt, e.fence))
        .collect();
    assert_eq!(
        logged,
        vec![
            ("r:1".into(), 1, 7),
            ("r:2".into(), 1, 7),
            ("r:2".into(), 2, 7),
            ("r:3".into(), 1, 7),
            ("r:4".into(), 1, 7),
            ("r:5".into(), 1, 7),
            ("r:6".into(), 1, 7),
            ("r:7".into(), 1, 7)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_invoke_api_runs_invocations_concurrently() {
    let stack = Stack::start().await;
    let job = stack.testjob(&[]).await;
    let client = lambda(&job.endpoint);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = client.clone();
        calls.spawn(async move {
            invoke(
                &client,
                "job",
                &event(&format!("r:{i}"), 1, json!({"sleep_ms": 60_000})),
            )
            .await
        });
    }
    // Each execution is logged when it starts and sleeps a minute: all twenty started while
    // none has finished.
    wait_for(
        "twenty executions at once",
        Duration::from_secs(30),
        || async { (job.executions().len() == 20).then_some(()) },
    )
    .await;
    assert!(
        calls.try_join_next().is_none(),
        "no invocation has returned yet"
    );
    calls.abort_all();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_container_entrypoint_reports_through_its_exit_code() {
    let stack = Stack::start().await;
    let run = |ev: &str| stack.run(bin("fleet-testjob"), &["run"], &[("FLEET_EVENT", ev)]);

    let ok = run(&event("r:1", 1, json!({"echo": "hi"})).to_base64());
    assert_eq!(ok.status.code(), Some(0), "{}", ok.stderr);
    assert_eq!(ok.json()["echo"], "hi");

    let failed = run(&event("r:1", 1, json!({"fail": true})).to_base64());
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        failed.stderr.contains("RequestedFailure"),
        "{}",
        failed.stderr
    );

    // The error's kind in the exit code, as the worker reads it back.
    let permanent = run(&event("r:1", 1, json!({"fail_permanent": true})).to_base64());
    assert_eq!(permanent.status.code(), Some(3), "{}", permanent.stderr);
    assert!(
        permanent
            .stderr
            .contains("Fleet.Permanent.RequestedPermanentFailure")
    );
    let throttled = run(&event("r:1", 1, json!({"throttle_fences": 7})).to_base64());
    assert_eq!(throttled.status.code(), Some(75), "{}", throttled.stderr);
    let past = run(&event("r:1", 1, json!({"throttle_fences": 6})).to_base64());
    assert_eq!(past.status.code(), Some(0), "{}", past.stderr);

    let bad = run("not base64 at all!");
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stderr.contains("not base64"), "{}", bad.stderr);

    let panicked = run(&event("r:1", 1, json!({"panic": true})).to_base64());
    assert_eq!(panicked.status.code(), Some(101));
}

/// The Lambda entrypoint, against a stand-in for the Lambda Runtime API: a success, a job
/// failure and a panic are each answered as Lambda expects, and the runtime goes on to the
/// next invocation after each.
#[tokio::test(flavor = "multi_thread")]
async fn the_lambda_entrypoint_answers_the_runtime_api() {
    let api = fleet_tests::runtime_api::RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(bin("fleet-testjob"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "job")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/job")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
        .env("AWS_REGION", "us-east-1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let cases = [
        ("ok", json!({"echo": "hi"})),
        ("fails", json!({"fail": true})),
        ("panics", json!({"panic": true})),
        ("after", json!({"echo": "still here"})),
    ];
    for (id, payload) in &cases {
        let ev = event(&format!("r:{id}"), 1, payload.clone());
        api.invoke(id, serde_json::to_value(&ev).unwrap());
    }
    let answers = api.answers(cases.len(), Duration::from_secs(60)).await;
    let by_id = |id: &str| {
        answers
            .iter()
            .find(|a| a.request_id == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {answers:?}"))
            .clone()
    };
    let ok = by_id("ok");
    assert_eq!(ok.kind, "response", "{ok:?}");
    assert_eq!(ok.body["echo"], "hi");
    assert_eq!(ok.body["job_id"], "r:ok");
    let failed = by_id("fails");
    assert_eq!(failed.kind, "error", "{failed:?}");
    assert_eq!(failed.body["errorType"], "RequestedFailure", "{failed:?}");
    let panicked = by_id("panics");
    assert_eq!(panicked.kind, "error", "{panicked:?}");
    assert!(
        panicked.body.to_string().contains("panic requested"),
        "{panicked:?}"
    );
    assert_eq!(by_id("after").body["echo"], "still here");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the runtime keeps polling for the next invocation"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_configuration_stops_start_up_and_names_the_key() {
    let stack = Stack::start().await;
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("FLEET_LEASE_SECS", "soon")],
            "worker.lease_secs (env FLEET_LEASE_SECS)",
        ),
        (
            &[("FLEET_QUEUE", "not a queue!")],
            "queue.jobs (env FLEET_QUEUE)",
        ),
        (&[("FLEET_CONFIG", "missing.toml")], "missing.toml"),
    ];
    for (env, want) in cases {
        let out = stack.run(bin("fleet-worker"), &["run"], env);
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        assert!(out.stderr.contains(want), "{env:?}: {}", out.stderr);
    }
    std::fs::write(
        stack.dir.path().join("fleet.toml"),
        "[worker]\nconcurency = 3\n",
    )
    .unwrap();
    let out = stack.run(
        bin("fleet-producer"),
        &["--config", "fleet.toml", "status", "x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("unknown field `concurency`"),
        "{}",
        out.stderr
    );
    // No function for the Lambda dispatcher: refused at start-up, not at the first job.
    let out = stack.run(bin("fleet-worker"), &["run"], &[]);
    assert!(
        out.stderr
            .contains("lambda.function (env FLEET_LAMBDA_FUNCTION)"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_container_entrypoint_stops_on_sigterm_as_interrupted() {
    let stack = Stack::start().await;
    let log = stack.dir.path().join("executions.jsonl");
    let ev = event("r:1", 1, json!({"sleep_ms": 60_000})).to_base64();
    let mut job = stack.spawn(
        "container",
        bin("fleet-testjob"),
        &["run"],
        &[
            ("FLEET_EVENT", &ev),
            ("FLEET_TESTJOB_LOG", log.to_str().unwrap()),
        ],
    );
    wait_for("the job to start", Duration::from_secs(30), || async {
        (!fleet_tests::read_executions(&log).is_empty()).then_some(())
    })
    .await;
    job.signal(nix::sys::signal::Signal::SIGTERM);
    let status = job.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert_eq!(
        status.code(),
        Some(i32::from(fleet_shared::message::EXIT_INTERRUPTED)),
        "{}",
        job.log_text()
    );
}

/// `X-Amz-Invocation-Type: Event`: 202 at once, then the invocation record on the outcomes
/// queue in the format Lambda documents; a result too large for a record goes to S3.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_invoke_api_delivers_invocation_records() {
    let stack = Stack::with_init().await;
    stack.create_bucket("results").await;
    let job = stack.testjob(&["--timeout", "2"]).await;
    let client = lambda(&job.endpoint);
    let large = fleet_shared::message::LargeResults {
        inline_max_bytes: 1000,
        prefix: Some("s3://results/claims/".into()),
    };
    let cases = [
        event("r:1", 1, json!({"echo": "hi"})),
        event("r:2", 1, json!({"fail": true})),
        event("r:3", 1, json!({"sleep_ms": 5000})),
        JobEvent {
            large_results: Some(large.clone()),
            ..event("r:4", 1, json!({"result_bytes": 5000}))
        },
        JobEvent {
            large_results: Some(fleet_shared::message::LargeResults {
                prefix: None,
                ..large
            }),
            ..event("r:5", 1, json!({"result_bytes": 5000}))
        },
    ];
    for ev in &cases {
        let out = client
            .invoke()
            .function_name("job")
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(Blob::new(serde_json::to_vec(ev).unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.status_code(), 202);
    }
    let outcomes = format!("{}-outcomes", stack.names.queue);
    // Each record is received once (drain_queue hides what it read).
    let got = std::sync::Mutex::new(Vec::new());
    wait_for("five records", Duration::from_secs(30), || async {
        let more = stack.drain_queue(&outcomes).await;
        let mut got = got.lock().unwrap();
        got.extend(more);
        (got.len() >= 5).then_some(())
    })
    .await;
    let mut records: Vec<fleet_shared::invocation_record::InvocationRecord> = got
        .into_inner()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "one record per invocation");
    records.sort_by_key(|r| r.request_payload["job_id"].as_str().unwrap().to_owned());
    for (r, ev) in records.iter().zip(&cases) {
        assert_eq!(r.version, "1.0");
        assert_eq!(r.request_payload, serde_json::to_value(ev).unwrap());
        assert!(
            r.request_context
                .function_arn
                .ends_with(":function:job:$LATEST")
        );
        assert_eq!(r.response_context.as_ref().unwrap().status_code, 200);
    }
    let condition = |i: usize| r_condition(&records[i]);
    assert_eq!(condition(0), ("Success", None));
    assert_eq!(records[0].response_payload.as_ref().unwrap()["echo"], "hi");
    assert_eq!(condition(1), ("RetriesExhausted", Some("Unhandled")));
    assert_eq!(
        records[1].response_payload.as_ref().unwrap()["errorType"],
        "RequestedFailure"
    );
    assert_eq!(condition(2), ("RetriesExhausted", Some("Unhandled")));
    assert_eq!(
        records[2].response_payload.as_ref().unwrap()["errorType"],
        "Sandbox.Timedout"
    );
    // The large result is in S3; the record carries its reference.
    assert_eq!(condition(3), ("Success", None));
    let reference = records[3].response_payload.clone().unwrap();
    let r = fleet_shared::claim_check::result_reference_in(&reference)
        .expect("a result reference")
        .unwrap();
    let body = fleet_shared::claim_check::fetch(&stack.s3(), &r)
        .await
        .unwrap();
    assert!(body.len() > 1000, "{}", body.len());
    // Without a claim-check prefix the job fails, saying why, rather than lose the record.
    assert_eq!(condition(4), ("RetriesExhausted", Some("Unhandled")));
    assert_eq!(
        records[4].response_payload.as_ref().unwrap()["errorType"],
        "Fleet.Permanent.ResponseSizeTooLarge"
    );
}

fn r_condition(r: &fleet_shared::invocation_record::InvocationRecord) -> (&str, Option<&str>) {
    (
        r.request_context.condition.as_str(),
        r.response_context
            .as_ref()
            .and_then(|c| c.function_error.as_deref()),
    )
}
