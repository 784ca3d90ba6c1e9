//! ECS dispatch and routing, black-box: RunTask and DescribeTasks against moto's ECS, the
//! hand-off of a running task to another replica, promotion after a Lambda timeout and
//! learned routing through the process launcher, and the process launcher's own contract.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleet_shared::config::Config;
use fleet_shared::message::JobEvent;
use fleet_tests::{Stack, bin, executions_per_job, wait_for};
use fleet_worker::dispatch::ecs::EcsLauncher;
use fleet_worker::dispatch::{Outcome, TaskLauncher};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn process_env(stack: &Stack) -> Vec<(&'static str, String)> {
    let command = format!("{} run", bin("fleet-testjob").display());
    let _ = stack;
    vec![
        ("FLEET_ECS_LAUNCHER", "process".into()),
        ("FLEET_ECS_COMMAND", command),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_task_on_moto_is_idempotent_and_followed_to_its_exit() {
    let stack = Stack::start().await;
    let ecs = stack.ecs_setup().await;
    let mut config = Config::default();
    ecs.configure(&mut config);
    config.ecs.poll_secs = 1;
    let client = aws_sdk_ecs::Client::new(&stack.sdk);
    let launcher = EcsLauncher::new(client.clone(), Arc::new(config));
    let event = JobEvent {
        request_id: "r".into(),
        job_id: "r:0".into(),
        job_type: "t".into(),
        attempt: 1,
        fence: 1,
        payload: json!({"k": "v"}),
        large_results: None,
        route: None,
        lease: None,
    };

    let task = launcher.start(&event).await.unwrap();
    // The same job and attempt again (a retried RunTask): the same task, not a second one.
    assert_eq!(launcher.start(&event).await.unwrap(), task);
    let listed = client.list_tasks().cluster("fleet").send().await.unwrap();
    assert_eq!(listed.task_arns().len(), 1);
    // The next attempt is another task.
    let next = JobEvent {
        attempt: 2,
        ..event.clone()
    };
    let second = launcher.start(&next).await.unwrap();
    assert_ne!(second, task);

    // The configured network settings and the event reached the task.
    let described = client
        .describe_tasks()
        .cluster("fleet")
        .tasks(&task)
        .send()
        .await
        .unwrap();
    let t = &described.tasks()[0];
    let env = &t.overrides().unwrap().container_overrides()[0];
    assert_eq!(env.name(), Some("job"));
    let passed = env.environment()[0].value().unwrap();
    assert_eq!(env.environment()[0].name(), Some("FLEET_EVENT"));
    assert_eq!(JobEvent::from_base64(passed).unwrap(), event);
    let subnet = t.attachments()[0]
        .details()
        .iter()
        .find(|d| d.name() == Some("subnetId"))
        .unwrap();
    assert_eq!(subnet.value(), Some(ecs.subnet.as_str()));

    // DescribeTasks walks it to STOPPED; exit code 0 is success.
    let end = tokio::time::timeout(Duration::from_secs(60), launcher.wait(&task))
        .await
        .unwrap();
    assert!(matches!(end.outcome, Outcome::Succeeded { .. }), "{end:?}");
    assert_eq!(end.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_outlives_its_replica_and_is_adopted_by_another() {
    let stack = Stack::with_init().await;
    let ecs = stack.ecs_setup().await;
    // Each task state lasts 4 s: RUNNING to STOPPED takes 16 s.
    stack.moto_transition("ecs::task", json!({"progression": "time", "seconds": 4}));
    let job = stack.testjob(&[]).await;
    let mut env = ecs.worker_env();
    env.extend([
        ("FLEET_LEASE_SECS", "3".into()),
        ("FLEET_HEARTBEAT_SECS", "1".into()),
        ("FLEET_SWEEP_SECS", "1".into()),
    ]);
    let env = env_refs(&env);
    let mut a = stack.worker("a", &job, &env);
    let request = json!({"request_id": "long", "job_type": "test", "jobs": [{}], "options": {"target": "ecs"}});
    assert!(stack.submit(&request).status.success());

    // Handed off: a task is recorded and the message is gone.
    let first = wait_for("the hand-off", Duration::from_secs(60), || async {
        let j = stack.jobs_json("long").pop()?;
        let handed = j["task"].is_string() && j["state"] == "RUNNING";
        (handed && stack.queue_depth(&stack.names.queue).await == 0).then_some(j)
    })
    .await;
    // Kill the only replica that knows about it; start another.
    a.signal(Signal::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).await.unwrap();
    let b = stack.worker("b", &job, &env);

    let done = stack.wait_done("long", Duration::from_secs(120)).await;
    assert_eq!(done.count("SUCCEEDED"), 1, "{done:?}");
    let j = stack.jobs_json("long").pop().unwrap();
    assert_eq!(j["task"], first["task"], "the same task, followed by ARN");
    let history = j["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["reason"], "adopted");
    assert_eq!(
        history[0]["exit_code"], 0,
        "the exit code DescribeTasks reported"
    );
    assert!(
        history[0]["fence"].as_u64().unwrap() > 1,
        "a higher fence than the first claim"
    );
    assert_eq!(j["attempts"], 1);
    let tasks = aws_sdk_ecs::Client::new(&stack.sdk)
        .list_tasks()
        .cluster("fleet")
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    let running = aws_sdk_ecs::Client::new(&stack.sdk)
        .list_tasks()
        .cluster("fleet")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tasks.task_arns().len() + running.task_arns().len(),
        1,
        "exactly one task was ever started"
    );
    assert!(b.log_text().contains("adopted a handed-off task"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_times_out_in_lambda_is_promoted_to_a_container() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&["--timeout", "1"]).await;
    let env = process_env(&stack);
    let _w = stack.worker("w", &job, &env_refs(&env));
    let request = json!({"request_id": "promo", "job_type": "test", "jobs": [{"sleep_ms": 2500}]});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("promo", Duration::from_secs(60)).await;
    assert_eq!(status.count("SUCCEEDED"), 1);
    let j = stack.jobs_json("promo").pop().unwrap();
    let steps: Vec<(String, String, String)> = j["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["target"].as_str().unwrap().into(),
                h["reason"].as_str().unwrap().into(),
                h["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("lambda".into(), "default".into(), "timeout".into()),
            (
                "ecs".into(),
                "promoted_after_timeout".into(),
                "succeeded".into()
            )
        ]
    );
    assert_eq!(j["history"][1]["exit_code"], 0);
    // Both attempts executed the same job code: once under Lambda, once as a process.
    let pids: Vec<u32> = job.executions().iter().map(|e| e.pid).collect();
    assert_eq!(pids.len(), 2);
    assert_ne!(pids[0], pids[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn learned_routing_moves_a_slow_job_type_to_ecs() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let mut env = process_env(&stack);
    // Jobs over 1 s do not belong in Lambda; learned routes refresh every second.
    env.extend([
        ("FLEET_ROUTING_LAMBDA_MAX_SECS", "1".into()),
        ("FLEET_ROUTING_LEARN_SECS", "1".into()),
    ]);
    let w = stack.worker("w", &job, &env_refs(&env));
    let slow = |id: &str, n: usize| json!({"request_id": id, "job_type": "slow", "jobs": vec![json!({"sleep_ms": 1200}); n]});
    assert!(stack.submit(&slow("first", 25)).status.success());
    stack.wait_done("first", Duration::from_secs(120)).await;
    assert!(
        stack
            .jobs_json("first")
            .iter()
            .all(|j| j["target"] == "lambda")
    );
    wait_for("the learned route", Duration::from_secs(30), || async {
        w.log_text()
            .contains("learned route changed job_type=slow route=Some(Ecs)")
            .then_some(())
    })
    .await;

    assert!(stack.submit(&slow("second", 3)).status.success());
    stack.wait_done("second", Duration::from_secs(60)).await;
    for j in stack.jobs_json("second") {
        assert_eq!(
            (j["target"].as_str(), j["reason"].as_str()),
            (Some("ecs"), Some("learned")),
            "{j}"
        );
    }
}

/// Polls until process `pid` is gone.
async fn gone(pid: u32) {
    wait_for(
        &format!("process {pid} to end"),
        Duration::from_secs(15),
        || async { (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_process_launcher_reports_exits_and_kills_on_cancel_and_shutdown() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let mut env = process_env(&stack);
    env.extend([
        ("FLEET_DRAIN_SECS", "1".into()),
        ("FLEET_LEASE_SECS", "4".into()),
        ("FLEET_HEARTBEAT_SECS", "1".into()),
    ]);
    let env = env_refs(&env);
    let mut w = stack.worker("w", &job, &env);
    let ecs = |id: &str, payload: Value, attempts: u32| json!({"request_id": id, "job_type": "test", "jobs": [payload], "options": {"target": "ecs", "max_attempts": attempts}});

    // A non-zero exit is a job failure with its exit code.
    assert!(
        stack
            .submit(&ecs("exit", json!({"fail": true}), 1))
            .status
            .success()
    );
    stack.wait_done("exit", Duration::from_secs(60)).await;
    let j = stack.jobs_json("exit").pop().unwrap();
    assert_eq!(j["state"], "FAILED");
    assert_eq!(
        (
            j["history"][0]["exit_code"].as_i64(),
            j["history"][0]["outcome"].as_str()
        ),
        (Some(1), Some("job_failure"))
    );

    // A cancelled job's process is killed.
    assert!(
        stack
            .submit(&ecs("cancel", json!({"sleep_ms": 120_000}), 1))
            .status
            .success()
    );
    let pid = wait_for("the job's process", Duration::from_secs(30), || async {
        job.executions()
            .iter()
            .find(|e| e.job_id == "cancel:0")
            .map(|e| e.pid)
    })
    .await;
    let out = stack.run(
        bin("fleet-producer"),
        &["cancel", "cancel", "--stop-running", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["stop_running"], true);
    // The replica that runs it sees the cancel at its next heartbeat, kills the process and
    // records the job CANCELLED.
    gone(pid).await;
    let s = wait_for("the job cancelled", Duration::from_secs(30), || async {
        let s = stack.status("cancel");
        (s.count("CANCELLED") == 1).then_some(s)
    })
    .await;
    assert!(s.done, "{s:?}");

    // After the drain deadline, a replica stopped with SIGTERM leaves no process behind.
    assert!(
        stack
            .submit(&ecs("drain", json!({"sleep_ms": 120_000}), 1))
            .status
            .success()
    );
    let pid = wait_for("the job's process", Duration::from_secs(30), || async {
        job.executions()
            .iter()
            .find(|e| e.job_id == "drain:0")
            .map(|e| e.pid)
    })
    .await;
    w.signal(Signal::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after its drain deadline");
    assert_eq!(status.code(), Some(0));
    gone(pid).await;
    assert_eq!(executions_per_job(&job.executions())["drain:0"], 1);
    assert_eq!(
        stack.status("drain").count("RETRYING"),
        1,
        "released for another replica"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_too_large_for_an_override_passes_its_payload_through_s3() {
    let stack = Stack::start().await;
    let ecs = stack.ecs_setup().await;
    stack.create_bucket("fleet-payloads").await;
    let mut config = Config::default();
    ecs.configure(&mut config);
    let client = aws_sdk_ecs::Client::new(&stack.sdk);
    let payload = json!({"rows": "r".repeat(20_000)});
    let event = JobEvent {
        request_id: "big".into(),
        job_id: "big:4".into(),
        job_type: "t".into(),
        attempt: 1,
        fence: 1,
        payload: payload.clone(),
        large_results: None,
        route: None,
        lease: None,
    };

    // Without a claim-check prefix the event cannot be passed, and the error says why.
    let plain = EcsLauncher::new(client.clone(), Arc::new(config.clone())).with_s3(stack.s3());
    let (class, message) = plain.start(&event).await.unwrap_err();
    assert_eq!(class, fleet_worker::classify::ErrorClass::Permanent);
    assert!(message.contains("claim_check.prefix"), "{message}");

    config.claim_check.prefix = Some("s3://fleet-payloads/p/".into());
    let launcher = EcsLauncher::new(client.clone(), Arc::new(config)).with_s3(stack.s3());
    let task = launcher.start(&event).await.unwrap();
    let described = client
        .describe_tasks()
        .cluster("fleet")
        .tasks(&task)
        .send()
        .await
        .unwrap();
    let env = &described.tasks()[0]
        .overrides()
        .unwrap()
        .container_overrides()[0];
    let passed = JobEvent::from_base64(env.environment()[0].value().unwrap()).unwrap();
    assert_eq!(passed.job_id, event.job_id);
    let reference = fleet_shared::claim_check::reference_in(&passed.payload)
        .unwrap()
        .unwrap();
    assert_eq!(reference.uri, "s3://fleet-payloads/p/big/000000004.json");
    // What the job runtime does before the job code runs: the same payload comes back.
    let resolved = fleet_shared::claim_check::resolve(&stack.s3(), passed.payload)
        .await
        .unwrap();
    assert_eq!(resolved, payload);
}
