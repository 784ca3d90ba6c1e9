//! `[ecs]`: how ECS-routed jobs are started, on ECS or as local child processes.

use serde::Deserialize;

use super::env::EnvValue;
use super::{ConfigError, invalid};

/// The capacity ECS runs a task on when no capacity provider is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LaunchType {
    #[default]
    Fargate,
    Ec2,
    External,
}

impl LaunchType {
    /// The name ECS's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchType::Fargate => "FARGATE",
            LaunchType::Ec2 => "EC2",
            LaunchType::External => "EXTERNAL",
        }
    }
}

/// How ECS-routed jobs are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// ECS RunTask (Fargate or EC2 capacity).
    #[default]
    Aws,
    /// A child process running `ecs.command` with the container's environment contract; the
    /// local stack's stand-in for ECS.
    Process,
}

impl EnvValue for Launcher {
    fn parse_env(v: &str) -> Result<Self, String> {
        match v.trim() {
            "aws" => Ok(Launcher::Aws),
            "process" => Ok(Launcher::Process),
            other => Err(format!("expected aws or process, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcsConfig {
    /// `aws` or `process`. Env `FLEET_ECS_LAUNCHER`.
    pub launcher: Launcher,
    /// The process launcher's command line (split like a shell's), e.g. the job binary's
    /// container entrypoint `fleet-job run`. Env `FLEET_ECS_COMMAND`.
    pub command: Option<String>,
    /// Cluster name or ARN. Env `FLEET_ECS_CLUSTER`.
    pub cluster: Option<String>,
    /// Task definition (family, family:revision or ARN) for job types that name none.
    /// Env `FLEET_ECS_TASK_DEFINITION`.
    pub task_definition: Option<String>,
    /// The container that runs the job; it gets `FLEET_EVENT`. Env `FLEET_ECS_CONTAINER`.
    pub container: String,
    /// Subnets for awsvpc networking (Fargate). Env `FLEET_ECS_SUBNETS`, comma-separated.
    pub subnets: Vec<String>,
    /// Security groups. Env `FLEET_ECS_SECURITY_GROUPS`, comma-separated.
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    /// `FARGATE`, `EC2` or `EXTERNAL`; ignored when `capacity_provider` is set.
    pub launch_type: LaunchType,
    /// A capacity provider (e.g. `FARGATE_SPOT`) instead of a launch type.
    pub capacity_provider: Option<String>,
    /// RunTask calls per second across every replica sharing the ledger (ECS allows an
    /// account about 20), from a token bucket in the ledger. Env
    /// `FLEET_ECS_RUN_TASK_PER_SEC`.
    pub run_task_per_sec: f64,
    /// ECS tasks one replica tracks at once. Env `FLEET_ECS_MAX_CONCURRENCY`.
    pub max_concurrency: usize,
    /// How often running tasks are described (DescribeTasks, 100 tasks a call).
    /// Env `FLEET_ECS_POLL_SECS`.
    pub poll_secs: u64,
    /// The job task's size, for its cost: CPU units (1024 = 1 vCPU) and memory (MiB), as
    /// its task definition sets them. Env `FLEET_ECS_TASK_CPU`, `FLEET_ECS_TASK_MEMORY_MB`.
    pub task_cpu: u32,
    pub task_memory_mb: u32,
}

impl Default for EcsConfig {
    fn default() -> Self {
        Self {
            launcher: Launcher::Aws,
            command: None,
            cluster: None,
            task_definition: None,
            container: "job".into(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            assign_public_ip: false,
            launch_type: LaunchType::Fargate,
            capacity_provider: None,
            run_task_per_sec: 20.0,
            max_concurrency: 100,
            poll_secs: 5,
            task_cpu: 1024,
            task_memory_mb: 2048,
        }
    }
}

impl EcsConfig {
    /// Whether ECS-routed jobs can run at all with this configuration.
    pub fn enabled(&self) -> bool {
        match self.launcher {
            Launcher::Process => self.command.is_some(),
            Launcher::Aws => self.cluster.is_some(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(128..=16_384).contains(&self.task_cpu) {
            return Err(invalid(
                "ecs.task_cpu",
                "must be 128 to 16384 CPU units (1024 = 1 vCPU)",
            ));
        }
        if !(512..=122_880).contains(&self.task_memory_mb) {
            return Err(invalid("ecs.task_memory_mb", "must be 512 to 122880 MiB"));
        }
        if self.launcher == Launcher::Process {
            match &self.command {
                None => {
                    return Err(invalid(
                        "ecs.command",
                        "the process launcher needs a command",
                    ));
                }
                Some(c) => {
                    split_command(c).map_err(|m| invalid("ecs.command", m))?;
                }
            }
        }
        if !(self.run_task_per_sec > 0.0 && self.run_task_per_sec <= 1000.0) {
            return Err(invalid(
                "ecs.run_task_per_sec",
                "must be above 0 and at most 1000",
            ));
        }
        if !(1..=100_000).contains(&self.max_concurrency) {
            return Err(invalid("ecs.max_concurrency", "must be 1 to 100000"));
        }
        if !(1..=3600).contains(&self.poll_secs) {
            return Err(invalid("ecs.poll_secs", "must be 1 to 3600"));
        }
        Ok(())
    }
}

/// Splits a command line like a POSIX shell does for words and quotes (no expansion).
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err("backslash at the end".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => {
                    in_word = true;
                    word.push(c)
                }
                None => return Err("backslash at the end".into()),
            },
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}
