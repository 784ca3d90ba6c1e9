//! A worker in a private subnet behind a NAT that forgets idle flows (network namespaces,
//! nftables masquerade, a conntrack idle timeout of a few seconds, as a NAT gateway forgets
//! one idle for 350 s). The local endpoint and the job's Invoke API are on the far side, so
//! every call the worker makes crosses the NAT. Needs root (CI runs as root).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fleet_tests::netns::NatLab;
use fleet_tests::{Stack, executions_per_job};
use serde_json::json;

/// The router forgets a flow idle this long.
const IDLE_SECS: u32 = 3;
/// The job runs more than three times as long.
const JOB_MS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_long_lambda_job_behind_a_nat_needs_keepalive_or_asynchronous_dispatch() {
    let lab = NatLab::new(IDLE_SECS);
    assert_eq!(lab.idle(), Duration::from_secs(IDLE_SECS.into()));
    let stack = Stack::start_in(&lab).await;
    let init = stack.run(fleet_tests::bin("fleet-worker"), &["init"], &[]);
    assert!(
        init.status.success(),
        "init across the NAT: {}",
        init.stderr
    );
    let job = stack.testjob(&[]).await;
    let read_timeout = (JOB_MS / 1000 + 10).to_string();
    let sync = |keepalive: &'static str| {
        vec![
            ("FLEET_LAMBDA_INVOCATION", "sync".to_owned()),
            ("FLEET_TCP_KEEPALIVE_SECS", keepalive.to_owned()),
            ("FLEET_LAMBDA_READ_TIMEOUT_SECS", read_timeout.clone()),
        ]
    };
    let run = |id: &'static str, env: Vec<(&'static str, String)>| {
        let stack = &stack;
        let job = &job;
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let _worker = stack.worker(id, job, &env);
            let request = json!({
                "request_id": id, "job_type": "test",
                "jobs": [{"sleep_ms": JOB_MS}],
                "options": {"max_attempts": 1},
            });
            let out = stack.submit(&request);
            assert!(out.status.success(), "{}", out.stderr);
            stack.wait_done(id, Duration::from_secs(90)).await
        }
    };

    // A synchronous Invoke with keepalive every second: the flow never idles; one run.
    let kept = run("kept", sync("1")).await;
    assert_eq!(kept.count("SUCCEEDED"), 1, "{kept:?}");

    // The same without keepalive: the NAT forgets the idle flow and the answer never comes;
    // the attempt ends at the read timeout although the job ran to its end.
    let lost = run("lost", sync("0")).await;
    assert_eq!(lost.count("FAILED"), 1, "{lost:?}");
    let history = stack
        .history(&fleet_shared::ids::JobId::parse("lost:0").unwrap())
        .await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome.as_str(), "timeout", "{history:?}");

    // Asynchronous dispatch holds no connection while the job runs: keepalive off, it
    // succeeds from its invocation record.
    let handed = run(
        "handed",
        vec![
            ("FLEET_LAMBDA_INVOCATION", "event".to_owned()),
            ("FLEET_TCP_KEEPALIVE_SECS", "0".to_owned()),
        ],
    )
    .await;
    assert_eq!(handed.count("SUCCEEDED"), 1, "{handed:?}");

    let per_job = executions_per_job(&job.executions());
    for id in ["kept:0", "lost:0", "handed:0"] {
        assert_eq!(per_job.get(id), Some(&1), "{id} ran once: {per_job:?}");
    }
    drop(stack);
    drop(lab);
}
