//! The producer's HTTP API (`fleet-producer serve`), black-box: submit, idempotent
//! re-submission and conflicts, status, cancel, failures, refusals of malformed bodies that
//! leave the ledger and the queue untouched, `/metrics`, and the agreement of
//! `producer/openapi.json` with the live server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use fleet_tests::{Stack, call, http_request, jobs, repo_root, start_api, wait_for};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");

async fn post_json(addr: &str, path: &str, extra: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut headers = vec![JSON];
    headers.extend_from_slice(extra);
    call(addr, "POST", path, &headers, body.to_string()).await
}

/// An attribute value as JSON (maps compare whatever their order).
fn attr_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(n) => json!({"NULL": n}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::L(items) => json!({"L": items.iter().map(attr_json).collect::<Vec<_>>()}),
        AttributeValue::M(map) => json!({"M": map
            .iter()
            .map(|(k, v)| (k.clone(), attr_json(v)))
            .collect::<serde_json::Map<_, _>>()}),
        other => json!({"other": format!("{other:?}")}),
    }
}

/// The ledger's items, comparable: each as JSON, in key order.
async fn ledger_snapshot(stack: &Stack) -> Vec<Value> {
    let mut items: Vec<(String, Value)> = stack
        .table_items()
        .await
        .iter()
        .map(|item| {
            let key = format!("{:?} {:?}", item.get("pk"), item.get("sk"));
            let v: serde_json::Map<String, Value> = item
                .iter()
                .map(|(k, v)| (k.clone(), attr_json(v)))
                .collect();
            (key, Value::Object(v))
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.into_iter().map(|(_, v)| v).collect()
}

/// The error object of an error answer, checked for its shape.
fn error_of(body: &Value) -> (&str, Option<&str>) {
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["field"].is_string() || e["field"].is_null(), "{body}");
    (e["code"].as_str().unwrap(), e["field"].as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_runs_to_success_and_resubmission_is_idempotent() {
    let stack = Stack::with_init().await;
    let (_api, addr) = start_api(&stack, &[]).await;
    wait_for("/readyz to answer 200", Duration::from_secs(60), || async {
        let (status, _, _) = http_request(&addr, "GET", "/readyz", &[], "").await;
        (status == 200).then_some(())
    })
    .await;

    let request = json!({"job_type": "test", "jobs": jobs(3, |i| json!({"echo": i}))});
    let key = [("idempotency-key", "api-run")];
    let (status, report) = post_json(&addr, "/v1/requests", &key, &request).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!(
        report,
        json!({"request_id": "api-run", "jobs": 3, "created": true, "written": 3, "sent": 3})
    );

    // Not run yet: the status says so.
    let (status, body) = call(&addr, "GET", "/v1/requests/api-run", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["total"].as_u64(), body["done"].as_bool()),
        (Some(3), Some(false))
    );

    let job = stack.testjob(&[]).await;
    let worker = stack.worker("w1", &job, &[]);
    stack.wait_done("api-run", Duration::from_secs(120)).await;
    let (status, body) = call(&addr, "GET", "/v1/requests/api-run", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], true, "{body}");
    assert_eq!(body["states"]["SUCCEEDED"], 3, "{body}");
    assert_eq!(body["request_id"], "api-run");
    // Acknowledgements are batched for up to a second: let them land before the replica goes.
    stack.wait_queues_empty(Duration::from_secs(60)).await;
    drop(worker);

    // The same key and content again: nothing new, nothing sent (every job is finished).
    let (status, report) = post_json(&addr, "/v1/requests", &key, &request).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"request_id": "api-run", "jobs": 3, "created": false, "written": 0, "sent": 0})
    );

    // The same key with other content: refused, and nothing changes.
    let before = ledger_snapshot(&stack).await;
    let other = json!({"job_type": "test", "jobs": [{"echo": "other"}]});
    let (status, body) = post_json(&addr, "/v1/requests", &key, &other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(error_of(&body).0, "conflict");
    assert_eq!(ledger_snapshot(&stack).await, before);
    assert_eq!(stack.queue_depth(&stack.names.queue).await, 0);

    // A body id and a different key: refused before anything is read or written.
    let mismatched = json!({"request_id": "api-other", "job_type": "test", "jobs": [1]});
    let (status, body) = post_json(&addr, "/v1/requests", &key, &mismatched).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body), ("invalid_request", Some("request_id")));
    assert_eq!(ledger_snapshot(&stack).await, before);

    // Unknown ids.
    for path in [
        "/v1/requests/no-such-request",
        "/v1/requests/no-such-request/failures",
    ] {
        let (status, body) = call(&addr, "GET", path, &[], "").await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(error_of(&body).0, "not_found");
    }
    let (status, body) = call(
        &addr,
        "POST",
        "/v1/requests/no-such-request/cancel",
        &[],
        "",
    )
    .await;
    assert_eq!((status, error_of(&body).0), (404, "not_found"), "{body}");

    // The producer's counter is served.
    let (status, _, text) = http_request(&addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        text.lines()
            .any(|l| l == "fleet_jobs_submitted_total{job_type=\"test\"} 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_failures() {
    let stack = Stack::with_init().await;
    let (_api, addr) = start_api(&stack, &[]).await;

    // Long jobs and no worker: all are cancelled, none runs.
    let sleepy = json!({"request_id": "api-sleepy", "job_type": "test", "jobs": jobs(4, |_| json!({"sleep_ms": 600_000}))});
    let (status, body) = post_json(&addr, "/v1/requests", &[], &sleepy).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &addr,
        "POST",
        "/v1/requests/api-sleepy/cancel?stop_running=maybe",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body), ("invalid_request", Some("stop_running")));
    let (status, report) = call(&addr, "POST", "/v1/requests/api-sleepy/cancel", &[], "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["request_id"], "api-sleepy");
    assert_eq!(report["stop_running"], false, "{report}");
    let cancelled_at = report["cancelled_at_ms"].as_u64().expect("cancelled_at_ms");
    // Not started, so they become CANCELLED as replicas receive them.
    assert_eq!(report["states"]["PENDING"], 4, "{report}");
    // Again, with stop_running: harmless; the first cancel's time stays.
    let (status, report) = call(
        &addr,
        "POST",
        "/v1/requests/api-sleepy/cancel?stop_running=true",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["cancelled_at_ms"].as_u64(),
            report["stop_running"].as_bool()
        ),
        (Some(cancelled_at), Some(true))
    );

    // A replica receives the cancelled jobs' messages: they become CANCELLED, none runs.
    let job = stack.testjob(&[]).await;
    let _worker = stack.worker("w1", &job, &[]);
    let s = stack.wait_done("api-sleepy", Duration::from_secs(60)).await;
    assert_eq!(s.count("CANCELLED"), 4, "{s:?}");
    assert!(job.executions().is_empty(), "a cancelled job ran");

    // One job fails on its only attempt, one succeeds.
    let failing = json!({
        "request_id": "api-failing",
        "job_type": "test",
        "jobs": [{"fail": true}, {"echo": 1}],
        "options": {"max_attempts": 1},
    });
    let (status, body) = post_json(&addr, "/v1/requests", &[], &failing).await;
    assert_eq!(status, 201, "{body}");
    let s = stack
        .wait_done("api-failing", Duration::from_secs(120))
        .await;
    assert_eq!((s.count("FAILED"), s.count("SUCCEEDED")), (1, 1), "{s:?}");
    let (status, body) = call(&addr, "GET", "/v1/requests/api-failing/failures", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request_id"], "api-failing");
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{body}");
    let f = &failures[0];
    assert_eq!(f["job_id"], "api-failing:0");
    assert_eq!(f["attempts"], 1);
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("fails on every attempt"),
        "{f}"
    );
    let history = f["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{f}");
    assert_eq!(history[0]["attempt"], 1);
    assert_ne!(history[0]["outcome"], "succeeded", "{f}");

    assert!(body["next"].is_null(), "one page: {body}");

    // A request without failures lists none; pages are bounded and their cursor checked.
    let (status, body) = call(&addr, "GET", "/v1/requests/api-sleepy/failures", &[], "").await;
    assert_eq!(
        (status, body["failures"].clone()),
        (200, json!([])),
        "{body}"
    );
    let (status, body) = call(
        &addr,
        "GET",
        "/v1/requests/api-failing/failures?limit=5000",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body), ("invalid_request", Some("limit")));

    // Results: a page per call, each finished job's result or error; a state filter.
    let (status, body) = call(
        &addr,
        "GET",
        "/v1/requests/api-failing/results?limit=1",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut lines = body["results"].as_array().unwrap().clone();
    let next = body["next"].as_str().expect("a second page").to_owned();
    let (status, body) = call(
        &addr,
        "GET",
        &format!("/v1/requests/api-failing/results?limit=1&cursor={next}"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    lines.extend(body["results"].as_array().unwrap().iter().cloned());
    lines.sort_by_key(|l| l["index"].as_u64());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["state"], &lines[0]["error_class"]),
        (&json!("FAILED"), &json!("job_failure")),
        "{lines:?}"
    );
    assert_eq!(lines[1]["state"], "SUCCEEDED");
    assert_eq!(lines[1]["result"]["echo"], 1, "{lines:?}");
    let (status, body) = call(
        &addr,
        "GET",
        "/v1/requests/api-failing/results?state=SUCCEEDED",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    let (status, body) = call(
        &addr,
        "GET",
        "/v1/requests/api-failing/results?state=RUNNING",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body), ("invalid_request", Some("state")));
}

/// A refused body: what, the body, the headers, the status, the error code and field.
type Case<'a> = (
    &'a str,
    String,
    &'a [(&'a str, &'a str)],
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_refused_and_change_nothing() {
    let stack = Stack::with_init().await;
    let (mut api, addr) = start_api(&stack, &[("FLEET_API_MAX_BODY_BYTES", "65536")]).await;

    let big = json!({"job_type": "test", "jobs": [{"x": "y".repeat(70_000)}]}).to_string();
    let cases: Vec<Case> = vec![
        (
            "bad JSON",
            "{not json".into(),
            &[JSON],
            400,
            "invalid_request",
            None,
        ),
        (
            "empty body",
            String::new(),
            &[JSON],
            400,
            "invalid_request",
            None,
        ),
        (
            "unknown field",
            r#"{"job_type": "test", "jobs": [1], "priority": 1}"#.into(),
            &[JSON],
            400,
            "invalid_request",
            Some("priority"),
        ),
        (
            "unknown nested field",
            r#"{"job_type": "test", "jobs": [1], "options": {"retries": 1}}"#.into(),
            &[JSON],
            400,
            "invalid_request",
            Some("options.retries"),
        ),
        (
            "missing job_type",
            r#"{"jobs": [1]}"#.into(),
            &[JSON],
            400,
            "invalid_request",
            Some("job_type"),
        ),
        (
            "wrong type",
            r#"{"job_type": "test", "jobs": [1], "options": {"max_attempts": "3"}}"#.into(),
            &[JSON],
            400,
            "invalid_request",
            Some("options.max_attempts"),
        ),
        (
            "no jobs",
            r#"{"job_type": "test", "jobs": []}"#.into(),
            &[JSON],
            400,
            "invalid_request",
            Some("jobs"),
        ),
        (
            "invalid attempts",
            r#"{"job_type": "test", "jobs": [1], "options": {"max_attempts": 0}}"#.into(),
            &[JSON],
            400,
            "invalid_request",
            Some("options.max_attempts"),
        ),
        (
            "invalid Idempotency-Key",
            r#"{"job_type": "test", "jobs": [1]}"#.into(),
            &[JSON, ("idempotency-key", "a:b")],
            400,
            "invalid_request",
            Some("Idempotency-Key"),
        ),
        ("too large", big, &[JSON], 413, "too_large", None),
        (
            "not declared JSON",
            r#"{"job_type": "test", "jobs": [1]}"#.into(),
            &[("content-type", "text/plain")],
            415,
            "unsupported_media_type",
            None,
        ),
    ];
    for (what, body, headers, want_status, want_code, want_field) in cases {
        let (status, answer) = call(&addr, "POST", "/v1/requests", headers, body).await;
        assert_eq!(status, want_status, "{what}: {answer}");
        assert_eq!(
            error_of(&answer),
            (want_code, want_field),
            "{what}: {answer}"
        );
        assert!(
            stack.ledger_items().await.is_empty(),
            "{what}: the ledger changed"
        );
        assert_eq!(
            stack.queue_depth(&stack.names.queue).await,
            0,
            "{what}: a message was sent"
        );
    }

    // Unknown routes and methods answer JSON too.
    let (status, body) = call(&addr, "GET", "/v2/nothing", &[], "").await;
    assert_eq!((status, error_of(&body).0), (404, "not_found"), "{body}");
    let (status, body) = call(&addr, "DELETE", "/v1/requests/x", &[], "").await;
    assert_eq!(
        (status, error_of(&body).0),
        (405, "method_not_allowed"),
        "{body}"
    );

    // Every operation of the document answers on the live server with one of its documented
    // codes, from its own handler (not the fallback).
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("producer/openapi.json")).unwrap(),
    )
    .unwrap();
    let valid = json!({"request_id": "api-doc", "job_type": "test", "jobs": [1]}).to_string();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let concrete = path.replace("{id}", "api-doc");
            let method = method.to_ascii_uppercase();
            let body = if op.get("requestBody").is_some() {
                valid.clone()
            } else {
                String::new()
            };
            let (status, _, text) = http_request(&addr, &method, &concrete, &[JSON], body).await;
            assert!(
                documented.contains(&status),
                "{method} {path}: {status} is not documented ({documented:?}): {text}"
            );
            assert!(
                !text.contains("no route") && !text.contains("method_not_allowed"),
                "{method} {path} reached a fallback: {text}"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 12);

    // SIGTERM: a clean exit.
    api.signal(Signal::SIGTERM);
    let exit = api.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}: {}",
        api.log_text()
    );
}
