//! A small run of every `fleet-bench` scenario: the benchmark's own bookkeeping (every job
//! accounted for, figures computed from the recorded times), not speed.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use fleet_tests::bin;
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(bin("fleet-bench"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    if !out.status.success() {
        // The error is last; warnings of the run (throttled writes) come before it.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        panic!(
            "fleet-bench {args:?} exited with {}; the last lines of its stderr:\n{}",
            out.status,
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap();
    let v: Value = serde_json::from_str(line).unwrap();
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["targets"].is_object(), "{v}");
    v
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn makespan_figures_come_from_the_recorded_times() {
    let v = bench(&["--scenario", "makespan", "--jobs", "300", "--limit", "50"]);
    assert_eq!(v["jobs"], 300);
    assert!(v["peak_in_flight"].as_u64().unwrap() <= 50, "{v}");
    let ideal = f(&v, "ideal_s");
    assert!(
        (f(&v, "efficiency") - ideal / f(&v, "makespan_s")).abs() < 1e-3,
        "{v}"
    );
    assert!((f(&v, "baseline_efficiency") - ideal / f(&v, "baseline_makespan_s")).abs() < 1e-3);
    // Nothing finishes before the ideal time; the batch coordinator waits for every batch's
    // slowest job.
    assert!(
        f(&v, "makespan_s") >= ideal && f(&v, "greedy_makespan_s") >= ideal,
        "{v}"
    );
    assert!(
        f(&v, "baseline_makespan_s") >= f(&v, "greedy_makespan_s"),
        "{v}"
    );
}

#[test]
fn overhead_and_scaling_count_every_job() {
    let v = bench(&["--scenario", "overhead", "--jobs", "500", "--limit", "50"]);
    assert_eq!(v["jobs"], 500);
    assert!(
        f(&v, "jobs_per_sec") > 0.0 && f(&v, "cpu_us_per_job") > 0.0,
        "{v}"
    );
    let s = bench(&["--scenario", "scaling", "--jobs", "500", "--limit", "20"]);
    let sizes: Vec<u64> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jobs"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![5, 50, 500]);
}

#[test]
fn footprint_holds_every_job_in_flight_over_real_http() {
    let v = bench(&[
        "--scenario",
        "footprint",
        "--jobs",
        "200",
        "--sleep-ms",
        "3000",
        "--invocation",
        "sync",
    ]);
    assert_eq!(v["in_flight"], 200, "{v}");
    assert_eq!(v["succeeded"], 200, "{v}");
    assert!(f(&v, "peak_rss_mb") >= f(&v, "rss_before_mb"), "{v}");
}

/// Asynchronously every job is handed off at once and recorded from its invocation record.
#[test]
fn footprint_in_event_mode_hands_every_job_off_and_records_it() {
    let v = bench(&[
        "--scenario",
        "footprint",
        "--jobs",
        "300",
        "--sleep-ms",
        "4000",
    ]);
    assert_eq!(v["invocation"], "event", "{v}");
    assert_eq!(v["in_flight"], 300, "{v}");
    assert_eq!(v["succeeded"], 300, "{v}");
}

#[test]
fn api_economy_counts_one_invoke_and_one_run_task_per_job() {
    let v = bench(&[
        "--scenario",
        "api-economy",
        "--jobs",
        "40",
        "--invocation",
        "sync",
    ]);
    let lambda = &v["lambda"]["per_job_by_operation"];
    let ecs = &v["ecs"]["per_job_by_operation"];
    assert_eq!(lambda["Lambda.Invoke"], 1.0, "{v}");
    assert_eq!(ecs["ECS.RunTask"], 1.0, "{v}");
    // The jobs were sent straight to SQS: each job's item is created claimed (one
    // conditional put), and outcomes go in transactions of many jobs each.
    assert!(f(lambda, "DynamoDB.PutItem") >= 1.0, "{v}");
    let txns = f(lambda, "DynamoDB.TransactWriteItems");
    assert!(txns > 0.0 && txns < 1.0, "outcomes batched: {v}");
    // Invoke, the claim, and a share of the receives, deletes and transactions.
    assert!(f(&v, "calls_per_lambda_job") > 2.0, "{v}");
}

/// The limits model has teeth: the same run on a layout that puts every job of the request on
/// one partition key is throttled, and on the real layout it is not; retries after a long
/// delay are not held in flight.
#[test]
fn scale_runs_under_the_model_of_aws_limits() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--scenario",
            "scale-run",
            "--jobs",
            "20000",
            "--in-flight",
            "2000",
            "--replicas",
            "4",
        ];
        args.extend_from_slice(extra);
        bench(&args)
    };
    let spread = run(&[]);
    assert_eq!(spread["submit"]["written"], 20_000, "{spread}");
    // The first window (twice the 2,000 in flight) as it was written, and more as jobs
    // finished during the submission.
    let sent = spread["submit"]["sent"].as_u64().unwrap();
    assert_eq!(spread["window"], 4_000, "{spread}");
    assert!((4_000..20_000).contains(&sent), "{spread}");
    assert_eq!(spread["invocations_per_job"], 1.0, "{spread}");
    assert_eq!(spread["throttled_writes"], 0, "{spread}");
    assert_eq!(spread["items_over_400kb"], 0, "{spread}");
    assert!(
        f(&spread, "first_job_started_s") < f(&spread, "submitted_s"),
        "jobs start while the submission goes on: {spread}"
    );
    let one_key = run(&["--max-job-shards", "1"]);
    assert!(
        one_key["throttled_writes"].as_u64().unwrap() > 0,
        "one partition for 20,000 jobs at 400 a second is over DynamoDB's 1,000 WCU: {one_key}"
    );
    assert_eq!(
        one_key["invocations_per_job"], 1.0,
        "throttled writes re-run nothing: {one_key}"
    );
    // Payloads of 5 KB, kept apart: each chunk of the submission writes 50 payload items of
    // 6 write units to each of the request's 20 data partitions; the submission's pace keeps
    // every partition under DynamoDB's 1,000 a second.
    let heavy = run(&["--payload-bytes", "5000"]);
    assert_eq!(heavy["submit"]["written"], 20_000, "{heavy}");
    assert_eq!(heavy["throttled_writes"], 0, "{heavy}");
    // A tenth of the jobs fail once and wait up to ten minutes: their messages are sent again
    // delayed, not kept in flight.
    let storm = run(&["--fail-ratio", "0.1", "--retry-secs", "600"]);
    assert!(
        (f(&storm, "invocations_per_job") - 1.1).abs() < 0.01,
        "{storm}"
    );
    assert!(
        storm["peak_queue_in_flight"].as_u64().unwrap() < 2_000 * 12 / 10,
        "{storm}"
    );
}

/// Asynchronously, a Lambda job also costs its hand-off write and a share of a receive and
/// of a delete on the outcomes queue; its record brings its lease, so the job is not read.
#[test]
fn api_economy_in_event_mode_counts_the_records() {
    let v = bench(&["--scenario", "api-economy", "--jobs", "40"]);
    assert_eq!(v["invocation"], "event", "{v}");
    let lambda = &v["lambda"]["per_job_by_operation"];
    assert_eq!(lambda["Lambda.Invoke"], 1.0, "{v}");
    // The claim (the conditional put of a job sent straight to SQS), then the lease
    // extended for the hand-off.
    assert!(f(lambda, "DynamoDB.PutItem") >= 1.0, "{v}");
    assert!(f(lambda, "DynamoDB.UpdateItem") >= 1.0, "{v}");
    assert!(
        f(lambda, "DynamoDB.GetItem") < 0.5,
        "no read per record: {v}"
    );
    assert!(f(lambda, "SQS.ReceiveMessage") > 0.0, "{v}");
    assert!(f(&v, "calls_per_lambda_job") > 3.0, "{v}");
}
