//! ECS dispatcher: one RunTask per attempt, the event in the job container's environment
//! (`FLEET_EVENT`, base64, exactly what the container entrypoint of the job runtime reads),
//! a client token derived from job id and attempt so a repeated RunTask never starts a
//! second task, and RunTask calls paced by a rate limiter. Running tasks are followed with
//! DescribeTasks, up to 100 tasks a call, shared by every task this replica follows, until
//! they stop; the essential container's exit code decides the outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecs::error::DisplayErrorContext;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    KeyValuePair, LaunchType, NetworkConfiguration, Task, TaskOverride, TaskStopCode,
};
use fleet_shared::config::Config;
use fleet_shared::message::{EVENT_ENV, JobEvent};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot};
use tracing::warn;

use super::{Outcome, TaskEnd, TaskLauncher};
use crate::classify::{self, ErrorClass};
use crate::limits::RateLimiter;

/// ECS's limit on a RunTask's container overrides.
pub const MAX_OVERRIDE_BYTES: usize = 8192;

/// The client token of an attempt: the same job and attempt always give the same token.
pub fn client_token(job_id: &str, attempt: u32) -> String {
    let digest = Sha256::digest(format!("{job_id}#{attempt}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("fleet-{}", &hex[..40])
}

type Waiters = HashMap<String, Vec<oneshot::Sender<TaskEnd>>>;

struct Inner {
    client: aws_sdk_ecs::Client,
    cluster: String,
    container: String,
    waiters: Mutex<Waiters>,
    wake: Notify,
}

pub struct EcsLauncher {
    inner: Arc<Inner>,
    config: Arc<Config>,
    /// Where an event too large for a container override puts its payload.
    s3: Option<aws_sdk_s3::Client>,
    rate: RateLimiter,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for EcsLauncher {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl EcsLauncher {
    /// With S3, an event too large for a container override travels with its payload kept
    /// in S3 under `claim_check.prefix` (when configured).
    pub fn with_s3(mut self, s3: aws_sdk_s3::Client) -> Self {
        self.s3 = Some(s3);
        self
    }

    /// The event's payload moved to S3 (the claim-check), when it is configured and the
    /// payload is not a reference already.
    async fn claim_checked(&self, event: &JobEvent) -> Option<Result<JobEvent, String>> {
        use fleet_shared::claim_check;
        let prefix = self.config.claim_check.location()?;
        let s3 = self.s3.as_ref()?;
        if claim_check::reference_in(&event.payload).is_some() {
            return None;
        }
        let index = fleet_shared::ids::JobId::parse(&event.job_id).ok()?.index();
        let uri = claim_check::object_uri(&prefix, &event.request_id, index);
        let body = event.payload.to_string().into_bytes();
        let payload = claim_check::reference(&uri, &body);
        Some(claim_check::put(s3, &uri, body).await.map(|()| JobEvent {
            payload,
            ..event.clone()
        }))
    }

    /// Needs `ecs.cluster`; starts the shared DescribeTasks poller.
    pub fn new(client: aws_sdk_ecs::Client, config: Arc<Config>) -> Self {
        let inner = Arc::new(Inner {
            client,
            cluster: config.ecs.cluster.clone().unwrap_or_default(),
            container: config.ecs.container.clone(),
            waiters: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let poller = tokio::spawn(poll(
            inner.clone(),
            Duration::from_secs(config.ecs.poll_secs),
        ));
        Self {
            inner,
            s3: None,
            rate: RateLimiter::new(config.ecs.run_task_per_sec),
            config,
            poller,
        }
    }
}

impl TaskLauncher for EcsLauncher {
    fn adoptable(&self) -> bool {
        true
    }

    /// RunTask calls are paced (`ecs.run_task_per_sec`).
    async fn pace(&self) {
        self.rate.acquire().await;
    }

    async fn start(&self, event: &JobEvent) -> Result<String, (ErrorClass, String)> {
        let ecs = &self.config.ecs;
        let task_definition = self
            .config
            .job_types
            .get(&event.job_type)
            .and_then(|t| t.task_definition.clone())
            .or_else(|| ecs.task_definition.clone())
            .ok_or_else(|| {
                (
                    ErrorClass::Permanent,
                    format!(
                        "no task definition for job type {:?} (ecs.task_definition)",
                        event.job_type
                    ),
                )
            })?;
        let fits = |encoded: &str| encoded.len() + EVENT_ENV.len() <= MAX_OVERRIDE_BYTES - 256;
        let mut encoded = event.to_base64();
        if !fits(&encoded) {
            match self.claim_checked(event).await {
                Some(Ok(small)) => encoded = small.to_base64(),
                Some(Err(e)) => return Err((ErrorClass::Transient, e)),
                None => {}
            }
        }
        if !fits(&encoded) {
            return Err((
                ErrorClass::Permanent,
                format!(
                    "the event is {} bytes in base64, over what ECS takes in a container override ({MAX_OVERRIDE_BYTES} bytes in all; configure claim_check.prefix to pass large payloads through S3)",
                    encoded.len()
                ),
            ));
        }
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&ecs.container)
                    .environment(
                        KeyValuePair::builder()
                            .name(EVENT_ENV)
                            .value(encoded)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let mut run = self
            .inner
            .client
            .run_task()
            .cluster(&self.inner.cluster)
            .task_definition(task_definition)
            .count(1)
            .client_token(client_token(&event.job_id, event.attempt))
            .started_by(event.job_id.chars().take(128).collect::<String>())
            .overrides(overrides);
        if !ecs.subnets.is_empty() {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(ecs.subnets.clone()))
                .set_security_groups(Some(ecs.security_groups.clone()))
                .assign_public_ip(if ecs.assign_public_ip {
                    AssignPublicIp::Enabled
                } else {
                    AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| (ErrorClass::Permanent, e.to_string()))?;
            run = run.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        run = match &ecs.capacity_provider {
            Some(cp) => run.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(cp)
                    .weight(1)
                    .build()
                    .map_err(|e| (ErrorClass::Permanent, e.to_string()))?,
            ),
            None => run.launch_type(LaunchType::from(ecs.launch_type.as_str())),
        };
        let out = run.send().await.map_err(|e| {
            (
                classify::sdk_error(&e),
                format!("RunTask: {}", DisplayErrorContext(&e)),
            )
        })?;
        if let Some(f) = out.failures().first() {
            let reason = f.reason().unwrap_or("unknown");
            return Err((
                classify::ecs_run_failure(reason),
                format!(
                    "RunTask failed: {reason} {}",
                    f.detail().unwrap_or_default()
                )
                .trim_end()
                .to_owned(),
            ));
        }
        out.tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_owned)
            .ok_or_else(|| (ErrorClass::Transient, "RunTask returned no task".to_owned()))
    }

    async fn wait(&self, task: &str) -> TaskEnd {
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task.to_owned())
            .or_default()
            .push(tx);
        self.inner.wake.notify_one();
        rx.await.unwrap_or_else(|_| TaskEnd {
            outcome: Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!("stopped following {task}"),
            },
            exit_code: None,
            stopped_reason: None,
            retry_after: None,
            reported: Default::default(),
        })
    }

    async fn stop(&self, task: &str, reason: &str) {
        if let Err(e) = self
            .inner
            .client
            .stop_task()
            .cluster(&self.inner.cluster)
            .task(task)
            .reason(reason.chars().take(255).collect::<String>())
            .send()
            .await
        {
            warn!(%task, error = %DisplayErrorContext(&e), "StopTask failed");
        }
    }
}

/// Describes every followed task every `period` (100 a call) and answers the waiters of
/// those that stopped.
async fn poll(inner: Arc<Inner>, period: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = inner.wake.notified() => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        let tasks: Vec<String> = inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for chunk in tasks.chunks(100) {
            let out = match inner
                .client
                .describe_tasks()
                .cluster(&inner.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "DescribeTasks failed; will try again");
                    continue;
                }
            };
            let mut ended: Vec<(String, TaskEnd)> = out
                .tasks()
                .iter()
                .filter(|t| t.last_status() == Some("STOPPED"))
                .filter_map(|t| Some((t.task_arn()?.to_owned(), task_end(t, &inner.container))))
                .collect();
            for f in out.failures() {
                if let Some(arn) = f.arn() {
                    ended.push((
                        arn.to_owned(),
                        TaskEnd {
                            outcome: Outcome::Failed {
                                class: ErrorClass::Transient,
                                message: format!(
                                    "ECS no longer knows task {arn}: {}",
                                    f.reason().unwrap_or("MISSING")
                                ),
                            },
                            exit_code: None,
                            stopped_reason: f.reason().map(str::to_owned),
                            retry_after: None,
                            reported: Default::default(),
                        },
                    ));
                }
            }
            let mut waiters = inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for (arn, end) in ended {
                for w in waiters.remove(&arn).unwrap_or_default() {
                    let _ = w.send(end.clone());
                }
            }
        }
    }
}

/// A stopped task's outcome, from its job container.
pub fn task_end(task: &Task, container: &str) -> TaskEnd {
    let c = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(container))
        .or_else(|| task.containers().first());
    let exit_code = c.and_then(|c| c.exit_code());
    let stop_code = task.stop_code().map(TaskStopCode::as_str);
    let mut why: Vec<&str> = Vec::new();
    why.extend(stop_code);
    why.extend(task.stopped_reason());
    why.extend(c.and_then(|c| c.reason()));
    let stopped_reason = (!why.is_empty()).then(|| why.join(": "));
    let detail = stopped_reason.clone().unwrap_or_default();
    // The stop code first: a task stopped from outside (a Spot interruption, a StopTask, a
    // scale-in) exits with whatever its container did on SIGTERM, which is not the job's
    // failure.
    let outcome = match (exit_code, stop_code) {
        (Some(0), _) => Outcome::Succeeded { result: Vec::new() },
        (
            _,
            Some(
                "TaskFailedToStart"
                | "SpotInterruption"
                | "TerminationNotice"
                | "UserInitiated"
                | "ServiceSchedulerInitiated",
            ),
        ) => Outcome::Failed {
            class: ErrorClass::Transient,
            message: format!("the task did not run to its end: {detail}"),
        },
        (Some(code), _) => match classify::exit_code(code) {
            None => Outcome::Succeeded { result: Vec::new() },
            Some(ErrorClass::Transient) => Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!("the job container was stopped by SIGTERM: {detail}"),
            },
            Some(class) => Outcome::Failed {
                class,
                message: format!("the job container exited with code {code}: {detail}"),
            },
        },
        (None, _) => Outcome::Failed {
            class: ErrorClass::JobFailure,
            message: format!("the task stopped without an exit code: {detail}"),
        },
    };
    TaskEnd {
        outcome,
        exit_code,
        stopped_reason,
        retry_after: None,
        reported: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(stop: TaskStopCode, exit: Option<i32>) -> TaskEnd {
        let mut c = aws_sdk_ecs::types::Container::builder().name("job");
        if let Some(code) = exit {
            c = c.exit_code(code);
        }
        let task = Task::builder()
            .stop_code(stop)
            .stopped_reason("stopped")
            .containers(c.build())
            .build();
        task_end(&task, "job")
    }

    fn class(end: &TaskEnd) -> Option<ErrorClass> {
        match &end.outcome {
            Outcome::Failed { class, .. } => Some(*class),
            Outcome::Succeeded { .. } => None,
        }
    }

    #[test]
    fn the_stop_code_is_read_before_the_exit_code() {
        // Stopped from outside: whatever the container exited with, not the job's failure.
        for stop in [
            TaskStopCode::SpotInterruption,
            TaskStopCode::TerminationNotice,
            TaskStopCode::UserInitiated,
            TaskStopCode::ServiceSchedulerInitiated,
        ] {
            for exit in [Some(1), Some(143), Some(137), None] {
                assert_eq!(
                    class(&stopped(stop.clone(), exit)),
                    Some(ErrorClass::Transient),
                    "{stop:?} {exit:?}"
                );
            }
        }
        let exited = TaskStopCode::EssentialContainerExited;
        assert_eq!(class(&stopped(exited.clone(), Some(0))), None);
        assert_eq!(
            class(&stopped(exited.clone(), Some(1))),
            Some(ErrorClass::JobFailure)
        );
        assert_eq!(
            class(&stopped(exited, Some(143))),
            Some(ErrorClass::Transient),
            "a job that stopped on SIGTERM was interrupted"
        );
        // A job that finished before the stop succeeded.
        assert_eq!(
            class(&stopped(TaskStopCode::SpotInterruption, Some(0))),
            None
        );
    }

    #[test]
    fn client_tokens_are_per_attempt_and_within_ecs_limits() {
        let a = client_token("some-request:12", 1);
        assert_eq!(a, client_token("some-request:12", 1));
        assert_ne!(a, client_token("some-request:12", 2));
        assert_ne!(a, client_token("some-request:13", 1));
        assert!(a.len() <= 64 && a.is_ascii());
    }
}
