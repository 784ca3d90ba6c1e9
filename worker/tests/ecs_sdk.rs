//! The ECS dispatcher against `aws-smithy-mocks`: RunTask's `failures[]` (capacity,
//! RESOURCE:*, missing attributes), throttling, a missing task definition, and tasks that
//! stop with a non-zero exit code or out of memory: each classified as the failure-handling
//! module says.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::run_task::RunTaskOutput;
use aws_sdk_ecs::types::{Container, Failure, Task, TaskStopCode};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use fleet_shared::config::Config;
use fleet_shared::message::JobEvent;
use fleet_worker::classify::ErrorClass;
use fleet_worker::dispatch::ecs::EcsLauncher;
use fleet_worker::dispatch::{Outcome, TaskLauncher};

fn config() -> Arc<Config> {
    let mut c = Config::default();
    c.ecs.cluster = Some("fleet".into());
    c.ecs.task_definition = Some("fleet-job".into());
    c.ecs.subnets = vec!["subnet-1".into()];
    c.ecs.poll_secs = 1;
    Arc::new(c)
}

fn event() -> JobEvent {
    JobEvent {
        request_id: "r".into(),
        job_id: "r:0".into(),
        job_type: "t".into(),
        attempt: 1,
        fence: 1,
        payload: serde_json::json!({"k": 1}),
        large_results: None,
        route: None,
        lease: None,
    }
}

fn run_failure(reason: &'static str) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_ecs::Client::run_task).then_output(move || {
        RunTaskOutput::builder()
            .failures(
                Failure::builder()
                    .arn("arn:aws:ecs:us-east-1:1:container-instance/x")
                    .reason(reason)
                    .build(),
            )
            .build()
    })
}

fn run_error(status: u16, code: &'static str) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_ecs::Client::run_task).then_http_response(move || {
        let body = format!(r#"{{"__type":"{code}","message":"injected"}}"#);
        let mut resp =
            HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        resp.headers_mut()
            .insert("content-type", "application/x-amz-json-1.1");
        resp
    })
}

async fn start_with(rule: aws_smithy_mocks::Rule) -> Result<String, (ErrorClass, String)> {
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &[&rule], |c| c
        .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled()));
    EcsLauncher::new(client, config()).start(&event()).await
}

#[tokio::test]
async fn run_task_failures_and_errors_are_classified() {
    let cases = [
        (start_with(run_failure("RESOURCE:MEMORY")).await, ErrorClass::Throttled),
        (start_with(run_failure("RESOURCE:CPU")).await, ErrorClass::Throttled),
        (
            start_with(run_failure("Capacity is unavailable at this time. Please try again later or in a different availability zone")).await,
            ErrorClass::Throttled,
        ),
        (start_with(run_failure("MISSING")).await, ErrorClass::Permanent),
        (start_with(run_failure("ATTRIBUTE")).await, ErrorClass::Permanent),
        (start_with(run_error(400, "ThrottlingException")).await, ErrorClass::Throttled),
        (start_with(run_error(500, "ServerException")).await, ErrorClass::Transient),
        (start_with(run_error(400, "ClientException")).await, ErrorClass::Permanent),
        (start_with(run_error(400, "ClusterNotFoundException")).await, ErrorClass::Permanent),
        (start_with(run_error(400, "AccessDeniedException")).await, ErrorClass::Permanent),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        let (class, message) = got.unwrap_err();
        assert_eq!(class, want, "case {i}: {message}");
    }
}

/// A launcher whose RunTask starts "arn:task/1" and whose DescribeTasks shows it stopped.
async fn stopped(
    container: Container,
    stop_code: TaskStopCode,
    reason: &'static str,
) -> fleet_worker::dispatch::TaskEnd {
    let run = mock!(aws_sdk_ecs::Client::run_task).then_output(|| {
        RunTaskOutput::builder()
            .tasks(
                Task::builder()
                    .task_arn("arn:task/1")
                    .last_status("PROVISIONING")
                    .build(),
            )
            .build()
    });
    let describe = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(move || {
        DescribeTasksOutput::builder()
            .tasks(
                Task::builder()
                    .task_arn("arn:task/1")
                    .last_status("STOPPED")
                    .stop_code(stop_code.clone())
                    .stopped_reason(reason)
                    .containers(container.clone())
                    .build(),
            )
            .build()
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &[&run, &describe]);
    let launcher = EcsLauncher::new(client, config());
    let task = launcher.start(&event()).await.unwrap();
    assert_eq!(task, "arn:task/1");
    launcher.wait(&task).await
}

#[tokio::test]
async fn stopped_tasks_report_exit_codes_and_out_of_memory() {
    let ok = stopped(
        Container::builder().name("job").exit_code(0).build(),
        TaskStopCode::EssentialContainerExited,
        "Essential container in task exited",
    )
    .await;
    assert!(matches!(ok.outcome, Outcome::Succeeded { .. }));
    assert_eq!(ok.exit_code, Some(0));

    let failed = stopped(
        Container::builder().name("job").exit_code(1).build(),
        TaskStopCode::EssentialContainerExited,
        "Essential container in task exited",
    )
    .await;
    assert_eq!(failed.exit_code, Some(1));
    assert!(
        matches!(&failed.outcome, Outcome::Failed { class: ErrorClass::JobFailure, message } if message.contains("code 1"))
    );

    let oom = stopped(
        Container::builder()
            .name("job")
            .exit_code(137)
            .reason("OutOfMemoryError: Container killed due to memory usage")
            .build(),
        TaskStopCode::EssentialContainerExited,
        "Essential container in task exited",
    )
    .await;
    assert_eq!(oom.exit_code, Some(137));
    assert!(
        oom.stopped_reason
            .as_deref()
            .unwrap()
            .contains("OutOfMemoryError")
    );
    assert!(fleet_worker::routing::is_out_of_memory(
        oom.stopped_reason.as_deref().unwrap()
    ));

    let never_ran = stopped(
        Container::builder()
            .name("job")
            .reason("CannotPullContainerError: pull access denied")
            .build(),
        TaskStopCode::TaskFailedToStart,
        "Task failed to start",
    )
    .await;
    assert_eq!(never_ran.exit_code, None);
    assert!(matches!(
        never_ran.outcome,
        Outcome::Failed {
            class: ErrorClass::Transient,
            ..
        }
    ));
}
