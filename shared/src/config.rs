//! Configuration: one TOML file (`--config PATH` or `FLEET_CONFIG`), then environment
//! overrides, then validation. Loading returns a `Result` whose error names the key (and the
//! environment variable) that is wrong; nothing here panics. Every field has a default, so
//! an empty file, or none, is a working configuration for the local stack.
//!
//! AWS settings (region, credentials, endpoints) are not here: they come from the default
//! AWS chain, including `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids;
use crate::message::{DEFAULT_MAX_MESSAGE_BYTES, MAX_ATTEMPTS_LIMIT};

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "FLEET_CONFIG";

/// The most a ledger item may hold of one payload, result or history, leaving room for its
/// keys and other attributes under DynamoDB's 400 KB.
pub const ITEM_SAFE_BYTES: usize = 390_000;

/// SQS's limit on a message's visibility timeout: 12 hours.
pub const SQS_MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub aws: AwsConfig,
    pub queue: QueueConfig,
    pub ledger: LedgerConfig,
    pub lambda: LambdaConfig,
    pub worker: WorkerConfig,
    pub limits: LimitsConfig,
    pub ecs: EcsConfig,
    pub routing: RoutingConfig,
    pub metrics: MetricsConfig,
    pub claim_check: ClaimCheckConfig,
    /// Settings per job type, keyed by the job type's name.
    pub job_types: BTreeMap<String, JobTypeConfig>,
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
    pub launch_type: String,
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
            launch_type: "FARGATE".into(),
            capacity_provider: None,
            run_task_per_sec: 20.0,
            max_concurrency: 100,
            poll_secs: 5,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Jobs expected to run longer than this go to ECS (the rule of thumb: Lambda should not
    /// carry jobs over 8 to 10 minutes). Env `FLEET_ROUTING_LAMBDA_MAX_SECS`.
    pub lambda_max_secs: f64,
    /// Events larger than this go to ECS (Lambda's synchronous payload limit is 6 MB).
    pub lambda_max_payload_bytes: usize,
    /// Jobs split from an S3 prefix whose objects add up to more than this many bytes go to
    /// ECS (the payload's `source.bytes`); unset, the input's size does not route. Env
    /// `FLEET_ROUTING_LAMBDA_MAX_INPUT_BYTES`.
    pub lambda_max_input_bytes: Option<u64>,
    /// Route job types by their recorded durations.
    pub learned: bool,
    /// A job type moves to ECS when the p95 of its recent durations reaches this share of
    /// `lambda_max_secs`...
    pub learn_to_ecs: f64,
    /// ...and back to Lambda when it falls below this share.
    pub learn_to_lambda: f64,
    /// Durations kept per job type (in the ledger, shared by every replica).
    pub learn_window: usize,
    /// Durations needed before the learned route applies.
    pub learn_min_samples: usize,
    /// How often a replica publishes its durations and reads everyone's.
    /// Env `FLEET_ROUTING_LEARN_SECS`.
    pub learn_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            lambda_max_secs: 600.0,
            lambda_max_payload_bytes: 6 * 1024 * 1024 - 64 * 1024,
            lambda_max_input_bytes: None,
            learned: true,
            learn_to_ecs: 0.8,
            learn_to_lambda: 0.5,
            learn_window: 200,
            learn_min_samples: 20,
            learn_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The jobs queue, by name or URL. Env `FLEET_QUEUE`.
    pub jobs: String,
    /// The dead-letter queue, by name or URL. Env `FLEET_DLQ`.
    pub dead_letter: String,
    /// `maxReceiveCount` of the redrive policy `fleet-worker init` sets: SQS moves a message
    /// received this many times to the dead-letter queue. A safety net well above
    /// `worker.max_attempts`, since a message is also received when it is only deferred.
    pub max_receive_count: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            jobs: "fleet-jobs".into(),
            dead_letter: "fleet-jobs-dlq".into(),
            max_receive_count: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The DynamoDB table. Env `FLEET_TABLE`.
    pub table: String,
    /// Days a finished job's item (and a request's, from its creation) is kept before the
    /// table's TTL (attribute `expires_at`) deletes it; kept for ever when unset. Env
    /// `FLEET_LEDGER_TTL_DAYS`.
    pub ttl_days: Option<u32>,
    /// Partitions of the due index (each of leases and of waiting jobs), written into the
    /// table's layout item when the table is first opened; the table's value wins after.
    /// 32 keep every index partition under 150 write units a second at 2,000 jobs a second.
    /// Env `FLEET_LEDGER_INDEX_SHARDS`.
    pub index_shards: u32,
    /// Most partitions one request's job items are spread over (a request gets one per
    /// 1,000 jobs up to this). Env `FLEET_LEDGER_MAX_JOB_SHARDS`.
    pub max_job_shards: u32,
    /// Failed attempts kept whole in a job's history; older ones are only counted.
    pub history_keep: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            table: "fleet-ledger".into(),
            ttl_days: None,
            index_shards: 32,
            max_job_shards: 64,
            history_keep: 10,
        }
    }
}

/// Jobs per partition of a request's job items.
pub const JOBS_PER_SHARD: u32 = 1000;

impl LedgerConfig {
    /// The partitions a request of `total` jobs spreads its job items over.
    pub fn job_shards(&self, total: u32) -> u32 {
        total
            .div_ceil(JOBS_PER_SHARD)
            .clamp(1, self.max_job_shards.max(1))
    }

    /// The TTL as a duration.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl_days
            .map(|d| Duration::from_secs(u64::from(d) * 24 * 3600))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LambdaConfig {
    /// The function for job types that name none of their own. Env `FLEET_LAMBDA_FUNCTION`.
    pub function: Option<String>,
    /// The functions' timeout. Env `FLEET_LAMBDA_TIMEOUT_SECS`.
    pub function_timeout_secs: u64,
    /// How long the worker waits for an Invoke's answer; default the function timeout plus
    /// 30 s, so a slow job is never cut off by the client (a read timeout counts as a failed
    /// attempt and is never re-sent within it). Env `FLEET_LAMBDA_READ_TIMEOUT_SECS`.
    pub read_timeout_secs: Option<u64>,
    /// Lowest Lambda in-flight limit of a replica; throttling halves the limit down to this.
    pub min_concurrency: usize,
    /// Highest Lambda in-flight limit of a replica; it grows back by one per window of
    /// successes up to this. Default `worker.concurrency`. Env `FLEET_LAMBDA_MAX_CONCURRENCY`.
    pub max_concurrency: Option<usize>,
    /// How a job is handed to Lambda. Env `FLEET_LAMBDA_INVOCATION`.
    pub invocation: Invocation,
    /// The queue the functions' destinations send invocation records to (asynchronous
    /// invocation), by name or URL; default the jobs queue's name with `-outcomes` appended.
    /// Env `FLEET_OUTCOMES_QUEUE`.
    pub outcomes_queue: Option<String>,
    /// The functions' maximum event age (their event-invoke configuration): how long Lambda
    /// keeps an accepted event it could not run yet before it gives up with an
    /// `EventAgeExceeded` record. 60 to 21600. Env `FLEET_LAMBDA_MAX_EVENT_AGE_SECS`.
    pub max_event_age_secs: u64,
    /// Asynchronous Invoke calls in progress at once on a replica (each holds a connection
    /// for the call, not for the job): a burst of hand-offs opens no more connections than
    /// this. 1 to 10000. Env `FLEET_LAMBDA_INVOKE_CALLS`.
    pub invoke_calls: usize,
}

/// How the worker invokes Lambda.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Invocation {
    /// `InvocationType=Event`: Lambda accepts the job (202) and queues it; the outcome comes
    /// back as an invocation record on the outcomes queue. The worker holds nothing while
    /// the job runs.
    #[default]
    Event,
    /// `InvocationType=RequestResponse`: one connection held open until the job ends.
    Sync,
}

impl Invocation {
    pub fn parse(v: &str) -> Result<Self, String> {
        match v.trim() {
            "event" => Ok(Invocation::Event),
            "sync" => Ok(Invocation::Sync),
            other => Err(format!("expected event or sync, got {other:?}")),
        }
    }
}

impl Default for LambdaConfig {
    fn default() -> Self {
        Self {
            function: None,
            function_timeout_secs: 900,
            read_timeout_secs: None,
            min_concurrency: 1,
            max_concurrency: None,
            invocation: Invocation::Event,
            outcomes_queue: None,
            max_event_age_secs: 3600,
            invoke_calls: 64,
        }
    }
}

impl LambdaConfig {
    /// How long a job handed to Lambda asynchronously may take before its record is
    /// overdue: the event may wait its maximum age in Lambda's queue, then run up to the
    /// function timeout.
    pub fn hand_off_lease(&self) -> Duration {
        Duration::from_secs(self.max_event_age_secs + self.function_timeout_secs)
    }

    pub fn read_timeout(&self) -> Duration {
        match self.read_timeout_secs {
            Some(s) => Duration::from_secs(s),
            None => Duration::from_secs(self.function_timeout_secs + 30),
        }
    }
}

/// How the AWS clients connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// TCP keepalive on every AWS connection: the first probe after this many idle seconds
    /// (then every `net.ipv4.tcp_keepalive_intvl`, 75 s by default), so a NAT gateway, which
    /// drops a flow idle for 350 s, keeps a long synchronous Invoke open. 0 turns it off.
    /// Env `FLEET_TCP_KEEPALIVE_SECS`.
    pub tcp_keepalive_secs: u64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            tcp_keepalive_secs: 60,
        }
    }
}

impl AwsConfig {
    /// The keepalive idle time, `None` when off.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        (self.tcp_keepalive_secs > 0).then(|| Duration::from_secs(self.tcp_keepalive_secs))
    }

    /// The settings from the environment alone (for processes without a configuration
    /// file, such as the job runtime); a malformed value is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut c = Config::default();
        for (var, key, set) in ENV_OVERRIDES {
            if !key.starts_with("aws.") {
                continue;
            }
            if let Ok(value) = std::env::var(var) {
                set(&mut c, &value).map_err(|message| ConfigError::Invalid {
                    key: (*key).to_owned(),
                    env: Some(var),
                    message,
                })?;
            }
        }
        c.aws.validate()?;
        Ok(c.aws)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tcp_keepalive_secs > 7200 {
            return Err(invalid(
                "aws.tcp_keepalive_secs",
                "must be 0 (off) to 7200; under 350 keeps flows open through a NAT gateway",
            ));
        }
        Ok(())
    }
}

/// The metrics and health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`, e.g. `0.0.0.0:9464`; no endpoint when
    /// unset. Env `FLEET_METRICS_LISTEN`.
    pub listen: Option<std::net::SocketAddr>,
    /// `/readyz` is true while SQS and DynamoDB both answered within this many seconds (and
    /// the process is not draining). Env `FLEET_READY_WINDOW_SECS`.
    pub ready_window_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ready_window_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// This replica's name in the ledger's `owner` field. Default: host name, process id
    /// and a random suffix. Env `FLEET_REPLICA_ID`.
    pub replica_id: Option<String>,
    /// Jobs one replica runs at once. Env `FLEET_CONCURRENCY`.
    pub concurrency: usize,
    /// Concurrent long-poll receive loops. Env `FLEET_RECEIVE_LOOPS`.
    pub receive_loops: usize,
    /// Long-poll wait per receive (SQS allows 0 to 20). Env `FLEET_WAIT_TIME_SECS`.
    pub wait_time_secs: u64,
    /// Lease on a claimed job, renewed by heartbeats; also the message's visibility while
    /// the job runs. Env `FLEET_LEASE_SECS`.
    pub lease_secs: u64,
    /// Heartbeat period; default a third of the lease. Env `FLEET_HEARTBEAT_SECS`.
    pub heartbeat_secs: Option<u64>,
    /// On SIGTERM, how long in-flight jobs may run before they are released.
    /// Env `FLEET_DRAIN_SECS`.
    pub drain_secs: u64,
    /// Clock skew tolerated between replicas: a lease counts as expired only this long after
    /// its expiry time. Env `FLEET_CLOCK_SKEW_SECS`.
    pub clock_skew_secs: u64,
    /// Attempts per job unless the job type or the request says otherwise.
    /// Env `FLEET_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// How often the sweeper looks for expired leases (jittered).
    /// Env `FLEET_SWEEP_SECS`.
    pub sweep_secs: u64,
    /// How long a job must be overdue (a lease expired, or claimable and unclaimed) before
    /// the sweeper takes its message for lost and sends it again; only while the queue has no
    /// backlog, since a waiting message is not lost. Env `FLEET_RECOVER_SECS`.
    pub recover_secs: u64,
    /// Where to append this replica's history (one JSON line per claim, dispatch, terminal
    /// write, rejected stale write, release, adoption, re-send), for the chaos checker.
    /// Env `FLEET_HISTORY_LOG`.
    pub history_log: Option<std::path::PathBuf>,
    /// Delay before the second attempt; it doubles with each attempt after.
    /// Env `FLEET_RETRY_BASE_SECS`.
    pub retry_base_secs: u64,
    /// Longest delay between attempts. Env `FLEET_RETRY_MAX_SECS`.
    pub retry_max_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            replica_id: None,
            concurrency: 64,
            receive_loops: 4,
            wait_time_secs: 20,
            lease_secs: 60,
            heartbeat_secs: None,
            drain_secs: 30,
            clock_skew_secs: 5,
            sweep_secs: 30,
            recover_secs: 120,
            history_log: None,
            max_attempts: 5,
            retry_base_secs: 2,
            retry_max_secs: 300,
        }
    }
}

impl WorkerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// The lease in milliseconds, as the ledger compares times.
    pub fn lease_ms(&self) -> u64 {
        self.lease_secs * 1000
    }

    /// The clock skew tolerated, in milliseconds.
    pub fn skew_ms(&self) -> u64 {
        self.clock_skew_secs * 1000
    }

    pub fn heartbeat(&self) -> Duration {
        match self.heartbeat_secs {
            Some(s) => Duration::from_secs(s),
            None => Duration::from_millis(self.lease_secs * 1000 / 3),
        }
    }
}

/// Where payloads too large to travel inline go (the claim-check pattern): the producer writes
/// them to S3 and the message, the ledger and the event carry a reference; the job runtime
/// reads the payload back before the job code sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimCheckConfig {
    /// `s3://bucket/prefix/`; off when unset (large payloads then travel inline up to the
    /// message and ledger limits). Env `FLEET_CLAIM_CHECK_PREFIX`.
    pub prefix: Option<String>,
    /// Payloads whose JSON is larger than this go to S3. The default keeps ledger items small:
    /// DynamoDB bills every update by the item's size (1 KB units), and a job's item is
    /// updated at least three times per attempt. Env `FLEET_CLAIM_CHECK_INLINE_MAX_BYTES`.
    pub inline_max_bytes: usize,
}

impl Default for ClaimCheckConfig {
    fn default() -> Self {
        Self {
            prefix: None,
            inline_max_bytes: 32 * 1024,
        }
    }
}

impl ClaimCheckConfig {
    /// The parsed prefix, when one is configured (validated by [`Config::validate`]).
    pub fn location(&self) -> Option<crate::s3::S3Uri> {
        self.prefix
            .as_deref()
            .and_then(|p| crate::s3::S3Uri::parse(p).ok())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body accepted, in bytes. Env `FLEET_MAX_MESSAGE_BYTES`.
    pub max_message_bytes: usize,
    /// Largest job result kept in the ledger, in bytes; a larger one is kept in S3 under
    /// `claim_check.prefix` (the ledger keeps its reference), and without a prefix the
    /// attempt fails with a permanent error that says so.
    pub max_result_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_result_bytes: 32 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobTypeConfig {
    /// The Lambda function for this job type (name or ARN); default `lambda.function`.
    pub function: Option<String>,
    /// Attempts for this job type; default `worker.max_attempts`.
    pub max_attempts: Option<u32>,
    /// Where this job type runs by default: `lambda`, `ecs` or `auto` (routing decides).
    pub target: Option<crate::message::Target>,
    /// Expected duration of this job type's jobs, for routing.
    pub estimated_secs: Option<f64>,
    /// The ECS task definition for this job type; default `ecs.task_definition`.
    pub task_definition: Option<String>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {key}{}: {message}", env.map(|e| format!(" (env {e})")).unwrap_or_default())]
    Invalid {
        key: String,
        env: Option<&'static str>,
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        env: ENV_OVERRIDES
            .iter()
            .find(|(_, k, _)| *k == key)
            .map(|(e, _, _)| *e),
        message: message.into(),
    }
}

type Setter = fn(&mut Config, &str) -> Result<(), String>;

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("expected a whole number, got {v:?}"))
}

/// Environment variable, the key it overrides, and how to set it.
const ENV_OVERRIDES: &[(&str, &str, Setter)] = &[
    (
        "FLEET_TCP_KEEPALIVE_SECS",
        "aws.tcp_keepalive_secs",
        |c, v| {
            c.aws.tcp_keepalive_secs = num(v)?;
            Ok(())
        },
    ),
    ("FLEET_QUEUE", "queue.jobs", |c, v| {
        c.queue.jobs = v.into();
        Ok(())
    }),
    ("FLEET_DLQ", "queue.dead_letter", |c, v| {
        c.queue.dead_letter = v.into();
        Ok(())
    }),
    ("FLEET_TABLE", "ledger.table", |c, v| {
        c.ledger.table = v.into();
        Ok(())
    }),
    ("FLEET_LAMBDA_FUNCTION", "lambda.function", |c, v| {
        c.lambda.function = Some(v.into());
        Ok(())
    }),
    (
        "FLEET_LAMBDA_TIMEOUT_SECS",
        "lambda.function_timeout_secs",
        |c, v| {
            c.lambda.function_timeout_secs = num(v)?;
            Ok(())
        },
    ),
    (
        "FLEET_LAMBDA_READ_TIMEOUT_SECS",
        "lambda.read_timeout_secs",
        |c, v| {
            c.lambda.read_timeout_secs = Some(num(v)?);
            Ok(())
        },
    ),
    (
        "FLEET_LAMBDA_MAX_CONCURRENCY",
        "lambda.max_concurrency",
        |c, v| {
            c.lambda.max_concurrency = Some(num(v)?);
            Ok(())
        },
    ),
    ("FLEET_LAMBDA_INVOCATION", "lambda.invocation", |c, v| {
        c.lambda.invocation = Invocation::parse(v)?;
        Ok(())
    }),
    ("FLEET_OUTCOMES_QUEUE", "lambda.outcomes_queue", |c, v| {
        c.lambda.outcomes_queue = Some(v.into());
        Ok(())
    }),
    (
        "FLEET_LAMBDA_MAX_EVENT_AGE_SECS",
        "lambda.max_event_age_secs",
        |c, v| {
            c.lambda.max_event_age_secs = num(v)?;
            Ok(())
        },
    ),
    (
        "FLEET_LAMBDA_INVOKE_CALLS",
        "lambda.invoke_calls",
        |c, v| {
            c.lambda.invoke_calls = num(v)?;
            Ok(())
        },
    ),
    ("FLEET_ECS_LAUNCHER", "ecs.launcher", |c, v| {
        c.ecs.launcher = match v.trim() {
            "aws" => Launcher::Aws,
            "process" => Launcher::Process,
            other => return Err(format!("expected aws or process, got {other:?}")),
        };
        Ok(())
    }),
    ("FLEET_ECS_COMMAND", "ecs.command", |c, v| {
        c.ecs.command = Some(v.into());
        Ok(())
    }),
    ("FLEET_ECS_CLUSTER", "ecs.cluster", |c, v| {
        c.ecs.cluster = Some(v.into());
        Ok(())
    }),
    (
        "FLEET_ECS_TASK_DEFINITION",
        "ecs.task_definition",
        |c, v| {
            c.ecs.task_definition = Some(v.into());
            Ok(())
        },
    ),
    ("FLEET_ECS_CONTAINER", "ecs.container", |c, v| {
        c.ecs.container = v.into();
        Ok(())
    }),
    ("FLEET_ECS_SUBNETS", "ecs.subnets", |c, v| {
        c.ecs.subnets = list(v);
        Ok(())
    }),
    (
        "FLEET_ECS_SECURITY_GROUPS",
        "ecs.security_groups",
        |c, v| {
            c.ecs.security_groups = list(v);
            Ok(())
        },
    ),
    (
        "FLEET_ECS_RUN_TASK_PER_SEC",
        "ecs.run_task_per_sec",
        |c, v| {
            c.ecs.run_task_per_sec = v
                .trim()
                .parse()
                .map_err(|_| format!("expected a number, got {v:?}"))?;
            Ok(())
        },
    ),
    (
        "FLEET_ECS_MAX_CONCURRENCY",
        "ecs.max_concurrency",
        |c, v| {
            c.ecs.max_concurrency = num(v)?;
            Ok(())
        },
    ),
    ("FLEET_ECS_POLL_SECS", "ecs.poll_secs", |c, v| {
        c.ecs.poll_secs = num(v)?;
        Ok(())
    }),
    (
        "FLEET_ROUTING_LAMBDA_MAX_SECS",
        "routing.lambda_max_secs",
        |c, v| {
            c.routing.lambda_max_secs = v
                .trim()
                .parse()
                .map_err(|_| format!("expected a number, got {v:?}"))?;
            Ok(())
        },
    ),
    (
        "FLEET_ROUTING_LAMBDA_MAX_INPUT_BYTES",
        "routing.lambda_max_input_bytes",
        |c, v| {
            c.routing.lambda_max_input_bytes = Some(num(v)?);
            Ok(())
        },
    ),
    ("FLEET_LEDGER_TTL_DAYS", "ledger.ttl_days", |c, v| {
        c.ledger.ttl_days = Some(num(v)?);
        Ok(())
    }),
    (
        "FLEET_LEDGER_INDEX_SHARDS",
        "ledger.index_shards",
        |c, v| {
            c.ledger.index_shards = num(v)?;
            Ok(())
        },
    ),
    (
        "FLEET_LEDGER_MAX_JOB_SHARDS",
        "ledger.max_job_shards",
        |c, v| {
            c.ledger.max_job_shards = num(v)?;
            Ok(())
        },
    ),
    ("FLEET_CLAIM_CHECK_PREFIX", "claim_check.prefix", |c, v| {
        c.claim_check.prefix = Some(v.into());
        Ok(())
    }),
    (
        "FLEET_CLAIM_CHECK_INLINE_MAX_BYTES",
        "claim_check.inline_max_bytes",
        |c, v| {
            c.claim_check.inline_max_bytes = num(v)?;
            Ok(())
        },
    ),
    ("FLEET_ROUTING_LEARN_SECS", "routing.learn_secs", |c, v| {
        c.routing.learn_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_REPLICA_ID", "worker.replica_id", |c, v| {
        c.worker.replica_id = Some(v.into());
        Ok(())
    }),
    ("FLEET_CONCURRENCY", "worker.concurrency", |c, v| {
        c.worker.concurrency = num(v)?;
        Ok(())
    }),
    ("FLEET_RECEIVE_LOOPS", "worker.receive_loops", |c, v| {
        c.worker.receive_loops = num(v)?;
        Ok(())
    }),
    ("FLEET_WAIT_TIME_SECS", "worker.wait_time_secs", |c, v| {
        c.worker.wait_time_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_LEASE_SECS", "worker.lease_secs", |c, v| {
        c.worker.lease_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_HEARTBEAT_SECS", "worker.heartbeat_secs", |c, v| {
        c.worker.heartbeat_secs = Some(num(v)?);
        Ok(())
    }),
    ("FLEET_DRAIN_SECS", "worker.drain_secs", |c, v| {
        c.worker.drain_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_CLOCK_SKEW_SECS", "worker.clock_skew_secs", |c, v| {
        c.worker.clock_skew_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_SWEEP_SECS", "worker.sweep_secs", |c, v| {
        c.worker.sweep_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_RECOVER_SECS", "worker.recover_secs", |c, v| {
        c.worker.recover_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_HISTORY_LOG", "worker.history_log", |c, v| {
        c.worker.history_log = Some(v.into());
        Ok(())
    }),
    ("FLEET_METRICS_LISTEN", "metrics.listen", |c, v| {
        c.metrics.listen = Some(
            v.trim()
                .parse()
                .map_err(|_| format!("expected an address like 127.0.0.1:9464, got {v:?}"))?,
        );
        Ok(())
    }),
    (
        "FLEET_READY_WINDOW_SECS",
        "metrics.ready_window_secs",
        |c, v| {
            c.metrics.ready_window_secs = num(v)?;
            Ok(())
        },
    ),
    ("FLEET_MAX_ATTEMPTS", "worker.max_attempts", |c, v| {
        c.worker.max_attempts = num(v)?;
        Ok(())
    }),
    ("FLEET_RETRY_BASE_SECS", "worker.retry_base_secs", |c, v| {
        c.worker.retry_base_secs = num(v)?;
        Ok(())
    }),
    ("FLEET_RETRY_MAX_SECS", "worker.retry_max_secs", |c, v| {
        c.worker.retry_max_secs = num(v)?;
        Ok(())
    }),
    (
        "FLEET_MAX_MESSAGE_BYTES",
        "limits.max_message_bytes",
        |c, v| {
            c.limits.max_message_bytes = num(v)?;
            Ok(())
        },
    ),
];

/// The environment variables this configuration reads, with the keys they override.
pub fn env_overrides() -> impl Iterator<Item = (&'static str, &'static str)> {
    ENV_OVERRIDES.iter().map(|(e, k, _)| (*e, *k))
}

impl Config {
    /// Loads from `path`, or from `FLEET_CONFIG` when `path` is `None`, or defaults when
    /// neither names a file; then applies the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        let file = match &path {
            Some(p) => Some((
                p.as_path(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?,
            )),
            None => None,
        };
        Self::from_parts(file.as_ref().map(|(p, t)| (*p, t.as_str())), |k| {
            std::env::var(k).ok()
        })
    }

    /// Builds from a file's text (if any) and an environment lookup; validates.
    pub fn from_parts(
        file: Option<(&Path, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = match file {
            Some((path, text)) => toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_owned(),
            })?,
            None => Config::default(),
        };
        for (var, key, set) in ENV_OVERRIDES {
            if let Some(value) = env(var) {
                set(&mut config, &value).map_err(|message| ConfigError::Invalid {
                    key: (*key).to_owned(),
                    env: Some(var),
                    message,
                })?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the first key that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.aws.validate()?;
        check_queue("queue.jobs", &self.queue.jobs)?;
        check_queue("queue.dead_letter", &self.queue.dead_letter)?;
        if self.queue.jobs == self.queue.dead_letter {
            return Err(invalid("queue.dead_letter", "must differ from queue.jobs"));
        }
        if !(1..=1000).contains(&self.queue.max_receive_count) {
            return Err(invalid("queue.max_receive_count", "must be 1 to 1000"));
        }
        if self.queue.max_receive_count <= self.worker.max_attempts {
            return Err(invalid(
                "queue.max_receive_count",
                format!(
                    "must be above worker.max_attempts ({}), or SQS dead-letters jobs that still have attempts",
                    self.worker.max_attempts
                ),
            ));
        }
        let t = &self.ledger.table;
        if !(3..=255).contains(&t.len())
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(
                "ledger.table",
                format!("{t:?} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ - .)"),
            ));
        }
        if let Some(f) = &self.lambda.function {
            check_function("lambda.function", f)?;
        }
        if self.ledger.ttl_days == Some(0) {
            return Err(invalid(
                "ledger.ttl_days",
                "must be at least 1 (unset keeps items)",
            ));
        }
        if !(1..=1024).contains(&self.ledger.index_shards) {
            return Err(invalid("ledger.index_shards", "must be 1 to 1024"));
        }
        if !(1..=1024).contains(&self.ledger.max_job_shards) {
            return Err(invalid("ledger.max_job_shards", "must be 1 to 1024"));
        }
        // Every item the ledger writes stays under DynamoDB's 400 KB: a history holds at
        // most this many entries of bounded size.
        let history_max =
            crate::ledger::item::HISTORY_ENTRY_MAX_BYTES * self.ledger.history_keep as usize;
        if self.ledger.history_keep == 0 || history_max > ITEM_SAFE_BYTES {
            return Err(invalid(
                "ledger.history_keep",
                format!(
                    "must be 1 to {} (each entry may take {} bytes, and an item holds at most 400 KB)",
                    ITEM_SAFE_BYTES / crate::ledger::item::HISTORY_ENTRY_MAX_BYTES,
                    crate::ledger::item::HISTORY_ENTRY_MAX_BYTES
                ),
            ));
        }
        if let Some(p) = &self.claim_check.prefix {
            crate::s3::S3Uri::parse(p).map_err(|e| invalid("claim_check.prefix", e))?;
        }
        if self.claim_check.inline_max_bytes > ITEM_SAFE_BYTES {
            return Err(invalid(
                "claim_check.inline_max_bytes",
                format!("must be at most {ITEM_SAFE_BYTES}: a payload item holds at most 400 KB"),
            ));
        }
        if self.claim_check.prefix.is_none() && self.limits.max_message_bytes > ITEM_SAFE_BYTES {
            return Err(invalid(
                "limits.max_message_bytes",
                format!(
                    "a payload of {} bytes could not be kept in a ledger item (DynamoDB's 400 KB): set claim_check.prefix to keep large payloads in S3, or keep this at most {ITEM_SAFE_BYTES}",
                    self.limits.max_message_bytes
                ),
            ));
        }
        if self.claim_check.inline_max_bytes < 1024 {
            return Err(invalid(
                "claim_check.inline_max_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(r) = self.lambda.read_timeout_secs
            && !(1..=3600).contains(&r)
        {
            return Err(invalid("lambda.read_timeout_secs", "must be 1 to 3600"));
        }
        if self.lambda.min_concurrency == 0 {
            return Err(invalid("lambda.min_concurrency", "must be at least 1"));
        }
        if let Some(m) = self.lambda.max_concurrency
            && m < self.lambda.min_concurrency
        {
            return Err(invalid(
                "lambda.max_concurrency",
                "must be at least lambda.min_concurrency",
            ));
        }
        if !(60..=21600).contains(&self.lambda.max_event_age_secs) {
            return Err(invalid(
                "lambda.max_event_age_secs",
                "must be 60 to 21600 (Lambda's limits on an event's age)",
            ));
        }
        if !(1..=10_000).contains(&self.lambda.invoke_calls) {
            return Err(invalid("lambda.invoke_calls", "must be 1 to 10000"));
        }
        let outcomes = self.outcomes_queue();
        check_queue("lambda.outcomes_queue", &outcomes)?;
        if outcomes == self.queue.jobs || outcomes == self.queue.dead_letter {
            return Err(invalid(
                "lambda.outcomes_queue",
                "must differ from queue.jobs and queue.dead_letter",
            ));
        }
        if !(1..=900).contains(&self.lambda.function_timeout_secs) {
            return Err(invalid(
                "lambda.function_timeout_secs",
                "must be 1 to 900 (Lambda's limit)",
            ));
        }
        let w = &self.worker;
        if let Some(id) = &w.replica_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "worker.replica_id",
                "must be 1 to 128 characters without spaces",
            ));
        }
        if !(1..=100_000).contains(&w.concurrency) {
            return Err(invalid("worker.concurrency", "must be 1 to 100000"));
        }
        if !(1..=64).contains(&w.receive_loops) {
            return Err(invalid("worker.receive_loops", "must be 1 to 64"));
        }
        if w.wait_time_secs > 20 {
            return Err(invalid(
                "worker.wait_time_secs",
                "must be 0 to 20 (SQS's long-poll limit)",
            ));
        }
        if !(2..=SQS_MAX_VISIBILITY_SECS).contains(&w.lease_secs) {
            return Err(invalid(
                "worker.lease_secs",
                format!("must be 2 to {SQS_MAX_VISIBILITY_SECS} (SQS's visibility limit)"),
            ));
        }
        let hb = w.heartbeat();
        if hb.is_zero() || hb >= w.lease() {
            return Err(invalid(
                "worker.heartbeat_secs",
                "must be at least 1 and below worker.lease_secs",
            ));
        }
        if !(1..=3600).contains(&w.sweep_secs) {
            return Err(invalid("worker.sweep_secs", "must be 1 to 3600"));
        }
        if self.metrics.ready_window_secs == 0 {
            return Err(invalid("metrics.ready_window_secs", "must be at least 1"));
        }
        if !(1..=86_400).contains(&w.recover_secs) {
            return Err(invalid("worker.recover_secs", "must be 1 to 86400"));
        }
        if w.clock_skew_secs > 300 {
            return Err(invalid("worker.clock_skew_secs", "must be 0 to 300"));
        }
        check_attempts("worker.max_attempts", w.max_attempts)?;
        if w.retry_base_secs == 0 || w.retry_base_secs > w.retry_max_secs {
            return Err(invalid(
                "worker.retry_base_secs",
                "must be at least 1 and at most worker.retry_max_secs",
            ));
        }
        if w.retry_max_secs > SQS_MAX_VISIBILITY_SECS {
            return Err(invalid(
                "worker.retry_max_secs",
                format!("must be at most {SQS_MAX_VISIBILITY_SECS} (SQS's visibility limit)"),
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.limits.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be 1024 to 1048576 (SQS's limit)",
            ));
        }
        if !(64..=256 * 1024).contains(&self.limits.max_result_bytes) {
            return Err(invalid(
                "limits.max_result_bytes",
                "must be 64 to 262144 (larger results are kept in S3 under claim_check.prefix)",
            ));
        }
        let e = &self.ecs;
        if e.launcher == Launcher::Process {
            match &e.command {
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
        if !(e.run_task_per_sec > 0.0 && e.run_task_per_sec <= 1000.0) {
            return Err(invalid(
                "ecs.run_task_per_sec",
                "must be above 0 and at most 1000",
            ));
        }
        if !(1..=100_000).contains(&e.max_concurrency) {
            return Err(invalid("ecs.max_concurrency", "must be 1 to 100000"));
        }
        if !(1..=3600).contains(&e.poll_secs) {
            return Err(invalid("ecs.poll_secs", "must be 1 to 3600"));
        }
        if e.capacity_provider.is_none()
            && !matches!(e.launch_type.as_str(), "FARGATE" | "EC2" | "EXTERNAL")
        {
            return Err(invalid(
                "ecs.launch_type",
                "must be FARGATE, EC2 or EXTERNAL",
            ));
        }
        let r = &self.routing;
        if !(r.lambda_max_secs > 0.0 && r.lambda_max_secs <= 900.0) {
            return Err(invalid(
                "routing.lambda_max_secs",
                "must be above 0 and at most 900 (Lambda's limit)",
            ));
        }
        if !(0.0 < r.learn_to_lambda && r.learn_to_lambda < r.learn_to_ecs && r.learn_to_ecs <= 1.0)
        {
            return Err(invalid(
                "routing.learn_to_ecs",
                "need 0 < learn_to_lambda < learn_to_ecs <= 1",
            ));
        }
        if !(1..=10_000).contains(&r.learn_window)
            || r.learn_min_samples == 0
            || r.learn_min_samples > r.learn_window
        {
            return Err(invalid(
                "routing.learn_window",
                "need 1 <= learn_min_samples <= learn_window <= 10000",
            ));
        }
        if r.learn_secs == 0 {
            return Err(invalid("routing.learn_secs", "must be at least 1"));
        }
        for (name, jt) in &self.job_types {
            ids::validate_job_type(name)
                .map_err(|e| invalid(&format!("job_types.{name}"), format!("job type name {e}")))?;
            if let Some(f) = &jt.function {
                check_function(&format!("job_types.{name}.function"), f)?;
            }
            if let Some(n) = jt.max_attempts {
                check_attempts(&format!("job_types.{name}.max_attempts"), n)?;
            }
            if let Some(s) = jt.estimated_secs
                && !(s.is_finite() && s >= 0.0)
            {
                return Err(invalid(
                    &format!("job_types.{name}.estimated_secs"),
                    "must be 0 or more",
                ));
            }
        }
        Ok(())
    }

    /// Whether the worker runs this job type: any type when no job type is configured,
    /// else only the configured ones (a message of another type is a permanent error).
    pub fn knows_job_type(&self, job_type: &str) -> bool {
        self.job_types.is_empty() || self.job_types.contains_key(job_type)
    }

    /// The Lambda in-flight limit's bounds: (min, max).
    pub fn lambda_concurrency(&self) -> (usize, usize) {
        let max = self
            .lambda
            .max_concurrency
            .unwrap_or(self.worker.concurrency)
            .max(self.lambda.min_concurrency);
        (self.lambda.min_concurrency, max)
    }

    /// The outcomes queue (`lambda.outcomes_queue`, default the jobs queue with `-outcomes`).
    pub fn outcomes_queue(&self) -> String {
        self.lambda
            .outcomes_queue
            .clone()
            .unwrap_or_else(|| format!("{}-outcomes", self.queue.jobs))
    }

    /// The Lambda function for a job type, if any is configured.
    pub fn function_for(&self, job_type: &str) -> Option<&str> {
        self.job_types
            .get(job_type)
            .and_then(|t| t.function.as_deref())
            .or(self.lambda.function.as_deref())
    }

    /// Attempts for a job: the request's or message's own, else the job type's, else the
    /// worker's default.
    pub fn max_attempts_for(&self, job_type: &str, requested: Option<u32>) -> u32 {
        requested
            .or_else(|| self.job_types.get(job_type).and_then(|t| t.max_attempts))
            .unwrap_or(self.worker.max_attempts)
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

fn check_queue(key: &str, v: &str) -> Result<(), ConfigError> {
    let is_url = v.starts_with("https://") || v.starts_with("http://");
    let is_name = (1..=80).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if is_url || is_name {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{v:?} is neither a queue URL nor a queue name (1 to 80 of A-Z a-z 0-9 _ -)"),
        ))
    }
}

fn check_function(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.len() > 170 || v.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(invalid(
            key,
            format!("{v:?} is not a Lambda function name or ARN"),
        ));
    }
    Ok(())
}

fn check_attempts(key: &str, n: u32) -> Result<(), ConfigError> {
    if (1..=MAX_ATTEMPTS_LIMIT).contains(&n) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be 1 to {MAX_ATTEMPTS_LIMIT}, got {n}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(text: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(text.map(|t| (Path::new("fleet.toml"), t)), |k| {
            env.get(k).cloned()
        })
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.queue.jobs, "fleet-jobs");
        assert_eq!(c.worker.heartbeat(), Duration::from_secs(20));
    }

    #[test]
    fn file_then_environment() {
        let text = r#"
            [queue]
            jobs = "from-file"
            [worker]
            concurrency = 8
            [job_types.resize]
            function = "resize-fn"
            max_attempts = 2
        "#;
        let c = load(
            Some(text),
            &[
                ("FLEET_QUEUE", "https://sqs.example/1/q"),
                ("FLEET_LAMBDA_FUNCTION", "dflt"),
            ],
        )
        .unwrap();
        assert_eq!(c.queue.jobs, "https://sqs.example/1/q");
        assert_eq!(c.worker.concurrency, 8);
        assert_eq!(c.function_for("resize"), Some("resize-fn"));
        assert_eq!(c.function_for("other"), Some("dflt"));
        assert_eq!(c.max_attempts_for("resize", None), 2);
        assert_eq!(c.max_attempts_for("resize", Some(7)), 7);
        assert_eq!(c.max_attempts_for("other", None), 5);
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (Some("[worker]\nlease = 3"), &[], "unknown field `lease`"),
            (
                Some("[worker]\nconcurrency = \"many\""),
                &[],
                "concurrency = \"many\"",
            ),
            (
                None,
                &[("FLEET_LEASE_SECS", "soon")],
                "worker.lease_secs (env FLEET_LEASE_SECS): expected a whole number",
            ),
            (
                None,
                &[("FLEET_LEASE_SECS", "1")],
                "worker.lease_secs (env FLEET_LEASE_SECS): must be 2",
            ),
            (
                None,
                &[("FLEET_QUEUE", "bad name!")],
                "queue.jobs (env FLEET_QUEUE)",
            ),
            (
                None,
                &[("FLEET_TABLE", "t")],
                "ledger.table (env FLEET_TABLE)",
            ),
            (None, &[("FLEET_MAX_ATTEMPTS", "0")], "worker.max_attempts"),
            (
                None,
                &[("FLEET_WAIT_TIME_SECS", "21")],
                "worker.wait_time_secs",
            ),
            (
                None,
                &[("FLEET_LEASE_SECS", "6"), ("FLEET_HEARTBEAT_SECS", "6")],
                "worker.heartbeat_secs",
            ),
            (Some("[job_types.\"a b\"]"), &[], "job_types.a b"),
            (
                Some("[queue]\nmax_receive_count = 3"),
                &[],
                "queue.max_receive_count",
            ),
            (
                None,
                &[("FLEET_LAMBDA_INVOKE_CALLS", "0")],
                "lambda.invoke_calls (env FLEET_LAMBDA_INVOKE_CALLS): must be 1 to 10000",
            ),
        ];
        for (text, env, want) in cases {
            let err = load(*text, env).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_command("fleet-job run").unwrap(),
            vec!["fleet-job", "run"]
        );
        assert_eq!(
            split_command(r#"  /opt/my\ job "a b" 'c "d"' e\"f ''  "#).unwrap(),
            vec!["/opt/my job", "a b", "c \"d\"", "e\"f", ""]
        );
        assert!(split_command("'open").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn every_override_names_a_real_key() {
        // Each override must change the configuration, or its key name is a lie. (The
        // process launcher needs a command, so both start from one.)
        let with = [("FLEET_ECS_COMMAND", "cmd")];
        let base = format!("{:?}", load(None, &with).unwrap());
        for (var, key, _) in ENV_OVERRIDES {
            let value = match *var {
                "FLEET_QUEUE" => "q-other",
                "FLEET_DLQ" => "dlq-other",
                "FLEET_TABLE" => "table-other",
                "FLEET_LAMBDA_FUNCTION" | "FLEET_REPLICA_ID" | "FLEET_HISTORY_LOG" => "other",
                "FLEET_HEARTBEAT_SECS" => "7",
                "FLEET_METRICS_LISTEN" => "127.0.0.1:9464",
                "FLEET_MAX_MESSAGE_BYTES" => "2048",
                "FLEET_RETRY_BASE_SECS" => "3",
                "FLEET_WAIT_TIME_SECS" | "FLEET_CLOCK_SKEW_SECS" => "1",
                "FLEET_MAX_ATTEMPTS" => "9",
                "FLEET_LAMBDA_READ_TIMEOUT_SECS" | "FLEET_LAMBDA_MAX_CONCURRENCY" => "13",
                "FLEET_ECS_LAUNCHER" => "process",
                "FLEET_LAMBDA_INVOCATION" => "sync",
                "FLEET_OUTCOMES_QUEUE" => "outcomes-other",
                "FLEET_LAMBDA_MAX_EVENT_AGE_SECS" => "120",
                "FLEET_ECS_COMMAND"
                | "FLEET_ECS_CLUSTER"
                | "FLEET_ECS_TASK_DEFINITION"
                | "FLEET_ECS_CONTAINER" => "x",
                "FLEET_ECS_SUBNETS" | "FLEET_ECS_SECURITY_GROUPS" => "a,b",
                "FLEET_ROUTING_LAMBDA_MAX_SECS" => "30",
                "FLEET_CLAIM_CHECK_PREFIX" => "s3://bucket/payloads/",
                "FLEET_CLAIM_CHECK_INLINE_MAX_BYTES" => "4096",
                _ => "13",
            };
            let c = load(None, &[with[0], (var, value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
            assert_ne!(format!("{c:?}"), base, "{var} did not change {key}");
        }
    }
}
