//! What a request cost: every attempt records what it used (Lambda's billed duration and
//! memory from the synchronous Invoke's REPORT line; a task's size and billed run time), and
//! `status` shows the request's estimated cost, which equals the hand computation at the
//! default list prices.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fleet_tests::{Stack, bin};
use serde_json::{Value, json};

/// The default `[prices]`, written out by hand (us-east-1 list prices).
const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const FARGATE_VCPU_HOUR: f64 = 0.032_384;
const FARGATE_GB_HOUR: f64 = 0.003_556;
/// Per job: 6.31 write units at $0.625 a million, 2.16 read units at $0.125, 0.32 SQS
/// requests at $0.40.
const REQUESTS_PER_JOB: f64 = (6.31 * 0.625 + 2.16 * 0.125 + 0.32 * 0.40) / 1e6;

fn status_cost(stack: &Stack, request: &str) -> Value {
    let out = stack.run(bin("fleet-producer"), &["status", request, "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    out.json()["cost"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_cost_is_what_its_attempts_used_at_the_configured_prices() {
    let stack = Stack::with_init().await;
    // The function's memory as Lambda reports it (512 MB), unlike the configured default
    // (lambda.memory_mb, 1024): the REPORT line is what counts.
    let job = stack
        .testjob_with(&[], &[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")])
        .await;
    let command = format!("{} run", bin("fleet-testjob").display());
    let _w = stack.worker(
        "w0",
        &job,
        &[
            ("FLEET_LAMBDA_INVOCATION", "sync"),
            ("FLEET_ECS_LAUNCHER", "process"),
            ("FLEET_ECS_COMMAND", command.as_str()),
        ],
    );
    let sleeps: Vec<u64> = (1..=8).map(|i| i * 60).collect();
    let lambda = json!({"request_id": "cost-l", "job_type": "test",
        "jobs": sleeps.iter().map(|ms| json!({"sleep_ms": ms})).collect::<Vec<_>>(),
        "options": {"target": "lambda"}});
    let ecs = json!({"request_id": "cost-e", "job_type": "test",
        "jobs": [{"sleep_ms": 200}, {"sleep_ms": 400}], "options": {"target": "ecs"}});
    assert!(stack.submit(&lambda).status.success());
    assert!(stack.submit(&ecs).status.success());
    stack.wait_done("cost-l", Duration::from_secs(300)).await;
    stack.wait_done("cost-e", Duration::from_secs(300)).await;

    // Lambda: each attempt's billed duration covers its sleep, at the reported memory.
    let mut hand = 0.0;
    let jobs = stack.jobs_json("cost-l");
    assert_eq!(jobs.len(), sleeps.len());
    for j in &jobs {
        assert_eq!(j["attempts"], 1, "{j}");
        let usage = &j["history"][0]["usage"];
        let billed = usage["billed_ms"].as_u64().unwrap_or_else(|| panic!("{j}"));
        let index: usize = j["job_id"].as_str().unwrap()[7..].parse().unwrap();
        let sleep = sleeps[index];
        assert!(
            billed >= sleep,
            "billed {billed} ms for a {sleep} ms job: {j}"
        );
        assert_eq!(usage["memory_mb"], 512, "the REPORT line's memory: {j}");
        assert!(usage.get("cpu_units").is_none(), "{j}");
        hand += billed as f64 / 1000.0 * 0.5 * LAMBDA_GB_SECOND + LAMBDA_REQUEST;
    }
    hand += sleeps.len() as f64 * REQUESTS_PER_JOB;
    let cost = status_cost(&stack, "cost-l");
    let total = cost["total_usd"].as_f64().unwrap();
    assert!(
        (total - hand).abs() < 1e-8,
        "status says {total}, by hand {hand}: {cost}"
    );
    assert_eq!(cost["prices"], "2026-12-02 us-east-1 list prices");

    // A task: 1 vCPU and 2 GB (ecs.task_cpu and ecs.task_memory_mb), at least a minute.
    let mut hand = 0.0;
    for j in &stack.jobs_json("cost-e") {
        assert_eq!(j["attempts"], 1, "{j}");
        let usage = &j["history"][0]["usage"];
        assert_eq!(usage["cpu_units"], 1024, "{j}");
        assert_eq!(usage["memory_mb"], 2048, "{j}");
        let billed = usage["billed_ms"].as_u64().unwrap();
        assert_eq!(
            billed, 60_000,
            "a short task is billed Fargate's minute: {j}"
        );
        hand += billed as f64 / 3_600_000.0 * (FARGATE_VCPU_HOUR + 2.0 * FARGATE_GB_HOUR);
    }
    hand += 2.0 * REQUESTS_PER_JOB;
    let cost = status_cost(&stack, "cost-e");
    let total = cost["total_usd"].as_f64().unwrap();
    assert!(
        (total - hand).abs() < 1e-8,
        "status says {total}, by hand {hand}: {cost}"
    );
}
