//! Dispatchers run one attempt of a job somewhere and report how it ended. The engine is
//! generic over [`Dispatcher`], so it runs against Lambda in production and against an
//! in-memory dispatcher in unit tests and benchmarks.

pub mod ecs;
pub mod lambda;
pub mod process;
pub mod record;

use std::future::Future;

use fleet_shared::message::JobEvent;

use crate::classify::ErrorClass;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded; its result as the job returned it (JSON text).
    Succeeded { result: Vec<u8> },
    /// The attempt failed.
    Failed { class: ErrorClass, message: String },
}

pub trait Dispatcher: Send + Sync + 'static {
    /// Where this dispatcher runs jobs (`lambda`, `ecs`), as the ledger records it.
    fn target(&self) -> &'static str;

    /// Runs the attempt described by `event` and waits for its end.
    fn dispatch(&self, event: &JobEvent) -> impl Future<Output = TaskEnd> + Send;

    /// Whether attempts are handed off ([`Dispatcher::hand_off`]) rather than waited for.
    fn hands_off(&self) -> bool {
        false
    }

    /// Hands the attempt to the target, which runs it and reports its end as an invocation
    /// record on the outcomes queue ([`record`]); the invocation's id once accepted.
    /// `Err` is how the attempt ended when the target did not accept it.
    fn hand_off(&self, _event: &JobEvent) -> impl Future<Output = Result<String, TaskEnd>> + Send {
        async {
            Err(TaskEnd::of(Outcome::Failed {
                class: ErrorClass::Permanent,
                message: "this dispatcher does not hand attempts off".to_owned(),
            }))
        }
    }
}

/// How an attempt ended in its target: a task (a container, or a process standing in for
/// one), or a Lambda invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// Stop code and reason, as ECS reports them, or a Lambda function error's `errorType`
    /// (out-of-memory shows here).
    pub stopped_reason: Option<String>,
    /// When the target said to call again (Lambda's `retryAfterSeconds` on a throttle).
    pub retry_after: Option<std::time::Duration>,
    /// What the target reported of the attempt's use (Lambda), for its cost.
    pub reported: Reported,
}

/// What Lambda reported of an attempt: a synchronous Invoke's log tail has its REPORT line
/// (billed duration, memory size); an invocation record has only when it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    pub billed_ms: Option<u64>,
    pub memory_mb: Option<u32>,
    /// When the attempt ended, as Lambda says (an invocation record's timestamp), in ms
    /// since the epoch.
    pub ended_ms: Option<u64>,
}

impl Reported {
    /// The billed duration and memory size of a Lambda REPORT line
    /// (`REPORT RequestId: … Duration: 12.3 ms Billed Duration: 13 ms Memory Size: 128 MB …`)
    /// in `log` (a log tail), if it has one.
    pub fn from_log(log: &str) -> Reported {
        let field = |line: &str, name: &str, unit: &str| -> Option<u64> {
            let rest = line.split_once(name)?.1.trim_start();
            rest.split_once(unit)?.0.trim().parse().ok()
        };
        let Some(line) = log.lines().rev().find(|l| l.starts_with("REPORT ")) else {
            return Reported::default();
        };
        Reported {
            billed_ms: field(line, "Billed Duration:", "ms"),
            memory_mb: field(line, "Memory Size:", "MB").and_then(|m| u32::try_from(m).ok()),
            ended_ms: None,
        }
    }
}

impl TaskEnd {
    /// Whether the job itself reported being throttled (a Fleet error kind in Lambda's
    /// `errorType`, or a container's exit code 75), rather than the target throttling the
    /// call: what lowers the job type's limit instead of the target's.
    pub fn throttled_by_job(&self) -> bool {
        use fleet_job::{ErrorKind, exit::ExitKind};
        let throttled = |k: ErrorKind| matches!(k, ErrorKind::Throttled { .. });
        matches!(
            self.outcome,
            Outcome::Failed {
                class: ErrorClass::Throttled,
                ..
            }
        ) && (self
            .exit_code
            .is_some_and(|c| matches!(ExitKind::of_code(c), ExitKind::Failed(k) if throttled(k)))
            || self
                .stopped_reason
                .as_deref()
                .is_some_and(|t| throttled(ErrorKind::of_error_type(t).0)))
    }

    /// An end with nothing but its outcome.
    pub fn of(outcome: Outcome) -> Self {
        TaskEnd {
            outcome,
            exit_code: None,
            stopped_reason: None,
            retry_after: None,
            reported: Reported::default(),
        }
    }
}

/// Starts jobs as tasks and follows them to their end: the ECS dispatcher
/// ([`ecs::EcsLauncher`]) and the local stand-in ([`process::ProcessLauncher`]).
pub trait TaskLauncher: Send + Sync + 'static {
    /// Whether another replica can follow a task this one started (by its id). Then a
    /// running task is handed off: its id goes to the ledger, the message is deleted, and
    /// whoever holds the lease follows it.
    fn adoptable(&self) -> bool;

    /// Waits for a turn to start a task (a launcher that paces its starts waits here, so
    /// the engine's last checks before [`TaskLauncher::start`] are not stale).
    fn pace(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Starts the attempt; the task's id once it exists. A start repeated for the same job
    /// and attempt must not start a second task.
    fn start(
        &self,
        event: &JobEvent,
    ) -> impl Future<Output = Result<String, (ErrorClass, String)>> + Send;

    /// Waits for the task to stop.
    fn wait(&self, task: &str) -> impl Future<Output = TaskEnd> + Send;

    /// Stops the task (cancel, or a shutdown that cannot hand it off).
    fn stop(&self, task: &str, reason: &str) -> impl Future<Output = ()> + Send;
}

/// The launcher of a worker without ECS: every start is refused.
#[derive(Debug, Default)]
pub struct NoTasks;

impl TaskLauncher for NoTasks {
    fn adoptable(&self) -> bool {
        false
    }

    async fn start(&self, _event: &JobEvent) -> Result<String, (ErrorClass, String)> {
        Err((
            ErrorClass::Permanent,
            "ECS is not configured (ecs.cluster or ecs.command)".into(),
        ))
    }

    async fn wait(&self, task: &str) -> TaskEnd {
        TaskEnd {
            outcome: Outcome::Failed {
                class: ErrorClass::Permanent,
                message: format!("no launcher can follow task {task}"),
            },
            exit_code: None,
            stopped_reason: None,
            retry_after: None,
            reported: Reported::default(),
        }
    }

    async fn stop(&self, _task: &str, _reason: &str) {}
}

/// The launcher the configuration chose (`ecs.launcher`).
pub enum AnyLauncher {
    Ecs(ecs::EcsLauncher),
    Process(process::ProcessLauncher),
    None(NoTasks),
}

impl TaskLauncher for AnyLauncher {
    fn adoptable(&self) -> bool {
        match self {
            AnyLauncher::Ecs(l) => l.adoptable(),
            AnyLauncher::Process(l) => l.adoptable(),
            AnyLauncher::None(l) => l.adoptable(),
        }
    }

    async fn pace(&self) {
        match self {
            AnyLauncher::Ecs(l) => l.pace().await,
            AnyLauncher::Process(l) => l.pace().await,
            AnyLauncher::None(l) => l.pace().await,
        }
    }

    async fn start(&self, event: &JobEvent) -> Result<String, (ErrorClass, String)> {
        match self {
            AnyLauncher::Ecs(l) => l.start(event).await,
            AnyLauncher::Process(l) => l.start(event).await,
            AnyLauncher::None(l) => l.start(event).await,
        }
    }

    async fn wait(&self, task: &str) -> TaskEnd {
        match self {
            AnyLauncher::Ecs(l) => l.wait(task).await,
            AnyLauncher::Process(l) => l.wait(task).await,
            AnyLauncher::None(l) => l.wait(task).await,
        }
    }

    async fn stop(&self, task: &str, reason: &str) {
        match self {
            AnyLauncher::Ecs(l) => l.stop(task, reason).await,
            AnyLauncher::Process(l) => l.stop(task, reason).await,
            AnyLauncher::None(l) => l.stop(task, reason).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reported;

    #[test]
    fn a_report_line_gives_the_billed_duration_and_memory() {
        let log = "START RequestId: 1 Version: $LATEST\nhello\nEND RequestId: 1\n\
                   REPORT RequestId: 1\tDuration: 1202.51 ms\tBilled Duration: 1203 ms\tMemory Size: 512 MB\tMax Memory Used: 80 MB\tInit Duration: 120.10 ms\t\n";
        assert_eq!(
            Reported::from_log(log),
            Reported {
                billed_ms: Some(1203),
                memory_mb: Some(512),
                ended_ms: None
            }
        );
        assert_eq!(Reported::from_log("no report here"), Reported::default());
        let odd = Reported::from_log("REPORT RequestId: 1\tBilled Duration: soon ms");
        assert_eq!(odd.billed_ms, None);
    }
}
