//! The local launcher: runs the job's container entrypoint (`ecs.command`) as a child
//! process with the container's environment contract (`FLEET_EVENT`, base64), follows it to
//! its exit code, and kills it on cancel or when the replica stops after its drain deadline.
//! The local stack uses it for ECS-routed jobs. Its tasks cannot be handed off: a child
//! belongs to the replica that started it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;

use fleet_shared::message::EVENT_ENV;
use fleet_shared::message::JobEvent;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::{Outcome, TaskEnd, TaskLauncher};
use crate::classify::ErrorClass;

struct Running {
    kill: Option<oneshot::Sender<()>>,
    end: Option<oneshot::Receiver<TaskEnd>>,
}

pub struct ProcessLauncher {
    argv: Vec<String>,
    running: Mutex<HashMap<String, Running>>,
    /// Largest stdout kept as the job's result.
    max_output: usize,
}

impl ProcessLauncher {
    pub fn new(argv: Vec<String>, max_output: usize) -> Self {
        Self {
            argv,
            running: Mutex::new(HashMap::new()),
            max_output,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TaskLauncher for ProcessLauncher {
    fn adoptable(&self) -> bool {
        false
    }

    async fn start(&self, event: &JobEvent) -> Result<String, (ErrorClass, String)> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err((ErrorClass::Permanent, "ecs.command is empty".into()));
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env(EVENT_ENV, event.to_base64())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let class = if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Transient
                };
                (class, format!("cannot start {program}: {e}"))
            })?;
        let id = format!("process:{}", child.id().unwrap_or(0));
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (end_tx, end_rx) = oneshot::channel();
        let mut stdout = child.stdout.take();
        let max = self.max_output;
        tokio::spawn(async move {
            // Keeps the first `max` + 1 bytes of stdout (more marks the result too large)
            // and drains the rest, so the child never blocks on a full pipe.
            let read = async {
                let mut out = Vec::new();
                if let Some(s) = stdout.as_mut() {
                    let _ = s.take(max as u64 + 1).read_to_end(&mut out).await;
                    let _ = tokio::io::copy(s, &mut tokio::io::sink()).await;
                }
                out
            };
            let (status, output, killed) = tokio::select! {
                (status, output) = async { let output = read.await; (child.wait().await, output) } => (status, output, false),
                _ = kill_rx => {
                    let _ = child.kill().await;
                    (child.wait().await, Vec::new(), true)
                }
            };
            let end = match status {
                Ok(s) if s.success() => TaskEnd {
                    outcome: Outcome::Succeeded { result: output },
                    exit_code: Some(0),
                    stopped_reason: None,
                    retry_after: None,
                    reported: Default::default(),
                },
                Ok(s) => {
                    let code = s.code();
                    let why = match code {
                        Some(c) => format!("the job exited with code {c}"),
                        None if killed => "the job was stopped".to_owned(),
                        None => format!("the job was killed by a signal ({s})"),
                    };
                    // The exit code's class (SIGTERM's 143: interrupted, not failed); a
                    // process killed by a signal failed.
                    let class = code
                        .and_then(crate::classify::exit_code)
                        .unwrap_or(ErrorClass::JobFailure);
                    TaskEnd {
                        outcome: Outcome::Failed {
                            class,
                            message: why.clone(),
                        },
                        exit_code: code,
                        stopped_reason: Some(why),
                        retry_after: None,
                        reported: Default::default(),
                    }
                }
                Err(e) => TaskEnd {
                    outcome: Outcome::Failed {
                        class: ErrorClass::Transient,
                        message: format!("lost the job's process: {e}"),
                    },
                    exit_code: None,
                    stopped_reason: None,
                    retry_after: None,
                    reported: Default::default(),
                },
            };
            let _ = end_tx.send(end);
        });
        self.lock().insert(
            id.clone(),
            Running {
                kill: Some(kill_tx),
                end: Some(end_rx),
            },
        );
        Ok(id)
    }

    async fn wait(&self, task: &str) -> TaskEnd {
        let end = self.lock().get_mut(task).and_then(|r| r.end.take());
        let end = match end {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        self.lock().remove(task);
        end.unwrap_or_else(|| TaskEnd {
            outcome: Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!("{task} is not a process of this replica"),
            },
            exit_code: None,
            stopped_reason: None,
            retry_after: None,
            reported: Default::default(),
        })
    }

    async fn stop(&self, task: &str, _reason: &str) {
        if let Some(kill) = self.lock().get_mut(task).and_then(|r| r.kill.take()) {
            let _ = kill.send(());
        }
    }
}
