//! The environment overrides: one line per variable, naming the key it sets. The value is
//! parsed as the key's type expects ([`EnvValue`]), so a malformed value is an error that
//! names the key and the variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, ConfigError};

/// A value an environment variable can hold, parsed as its key's type expects.
pub(super) trait EnvValue: Sized {
    /// The value of `v`, or why it is not one (the message follows the key and variable).
    fn parse_env(v: &str) -> Result<Self, String>;
}

impl EnvValue for String {
    fn parse_env(v: &str) -> Result<Self, String> {
        Ok(v.into())
    }
}

impl EnvValue for PathBuf {
    fn parse_env(v: &str) -> Result<Self, String> {
        Ok(v.into())
    }
}

/// A comma-separated list; blanks around items and empty items are dropped.
impl EnvValue for Vec<String> {
    fn parse_env(v: &str) -> Result<Self, String> {
        Ok(v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// Setting an optional key sets it.
impl<T: EnvValue> EnvValue for Option<T> {
    fn parse_env(v: &str) -> Result<Self, String> {
        T::parse_env(v).map(Some)
    }
}

macro_rules! whole_numbers {
    ($($t:ty),+) => {$(
        impl EnvValue for $t {
            fn parse_env(v: &str) -> Result<Self, String> {
                v.trim()
                    .parse()
                    .map_err(|_| format!("expected a whole number, got {v:?}"))
            }
        }
    )+};
}
whole_numbers!(u32, u64, usize);

impl EnvValue for f64 {
    fn parse_env(v: &str) -> Result<Self, String> {
        v.trim()
            .parse()
            .map_err(|_| format!("expected a number, got {v:?}"))
    }
}

impl EnvValue for bool {
    fn parse_env(v: &str) -> Result<Self, String> {
        match v.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            other => Err(format!("expected true or false, got {other:?}")),
        }
    }
}

impl EnvValue for SocketAddr {
    fn parse_env(v: &str) -> Result<Self, String> {
        v.trim()
            .parse()
            .map_err(|_| format!("expected an address like 127.0.0.1:9464, got {v:?}"))
    }
}

/// Sets `slot` from the variable's value.
fn set<T: EnvValue>(slot: &mut T, v: &str) -> Result<(), String> {
    *slot = T::parse_env(v)?;
    Ok(())
}

/// How an override sets its key.
pub(super) type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// `"VAR" => section.field,` lines into (variable, key, setter) rows.
macro_rules! overrides {
    ($($var:literal => $section:ident . $field:ident),+ $(,)?) => {
        &[$((
            $var,
            concat!(stringify!($section), ".", stringify!($field)),
            |c: &mut Config, v: &str| set(&mut c.$section.$field, v),
        )),+]
    };
}

/// Environment variable, the key it overrides, and how to set it; applied in this order.
/// Every one is documented in the README's configuration table (a test checks it).
pub(super) const ENV_OVERRIDES: &[(&str, &str, Setter)] = overrides! {
    "FLEET_TCP_KEEPALIVE_SECS" => aws.tcp_keepalive_secs,
    "FLEET_QUEUE" => queue.jobs,
    "FLEET_DLQ" => queue.dead_letter,
    "FLEET_TABLE" => ledger.table,
    "FLEET_LAMBDA_FUNCTION" => lambda.function,
    "FLEET_LAMBDA_TIMEOUT_SECS" => lambda.function_timeout_secs,
    "FLEET_LAMBDA_READ_TIMEOUT_SECS" => lambda.read_timeout_secs,
    "FLEET_LAMBDA_MAX_CONCURRENCY" => lambda.max_concurrency,
    "FLEET_LAMBDA_INVOCATION" => lambda.invocation,
    "FLEET_OUTCOMES_QUEUE" => lambda.outcomes_queue,
    "FLEET_LAMBDA_MAX_EVENT_AGE_SECS" => lambda.max_event_age_secs,
    "FLEET_LAMBDA_INVOKE_CALLS" => lambda.invoke_calls,
    "FLEET_ECS_LAUNCHER" => ecs.launcher,
    "FLEET_ECS_COMMAND" => ecs.command,
    "FLEET_ECS_CLUSTER" => ecs.cluster,
    "FLEET_ECS_TASK_DEFINITION" => ecs.task_definition,
    "FLEET_ECS_CONTAINER" => ecs.container,
    "FLEET_ECS_SUBNETS" => ecs.subnets,
    "FLEET_ECS_SECURITY_GROUPS" => ecs.security_groups,
    "FLEET_ECS_RUN_TASK_PER_SEC" => ecs.run_task_per_sec,
    "FLEET_ECS_MAX_CONCURRENCY" => ecs.max_concurrency,
    "FLEET_ECS_POLL_SECS" => ecs.poll_secs,
    "FLEET_ECS_TASK_CPU" => ecs.task_cpu,
    "FLEET_ECS_TASK_MEMORY_MB" => ecs.task_memory_mb,
    "FLEET_LAMBDA_MEMORY_MB" => lambda.memory_mb,
    "FLEET_ROUTING_LAMBDA_MAX_SECS" => routing.lambda_max_secs,
    "FLEET_ROUTING_LAMBDA_MAX_INPUT_BYTES" => routing.lambda_max_input_bytes,
    "FLEET_LEDGER_TTL_DAYS" => ledger.ttl_days,
    "FLEET_LEDGER_INDEX_SHARDS" => ledger.index_shards,
    "FLEET_LEDGER_MAX_JOB_SHARDS" => ledger.max_job_shards,
    "FLEET_CLAIM_CHECK_PREFIX" => claim_check.prefix,
    "FLEET_CLAIM_CHECK_INLINE_MAX_BYTES" => claim_check.inline_max_bytes,
    "FLEET_EVENTS_EVENTBRIDGE_BUS" => events.eventbridge_bus,
    "FLEET_EVENTS_SNS_TOPIC" => events.sns_topic,
    "FLEET_EVENTS_SOURCE" => events.source,
    "FLEET_API_TOKEN" => api.token,
    "FLEET_API_CONSOLE" => api.console,
    "FLEET_ROUTING_LEARN_SECS" => routing.learn_secs,
    "FLEET_REPLICA_ID" => worker.replica_id,
    "FLEET_CONCURRENCY" => worker.concurrency,
    "FLEET_RECEIVE_LOOPS" => worker.receive_loops,
    "FLEET_WAIT_TIME_SECS" => worker.wait_time_secs,
    "FLEET_LEASE_SECS" => worker.lease_secs,
    "FLEET_HEARTBEAT_SECS" => worker.heartbeat_secs,
    "FLEET_DRAIN_SECS" => worker.drain_secs,
    "FLEET_CLOCK_SKEW_SECS" => worker.clock_skew_secs,
    "FLEET_SWEEP_SECS" => worker.sweep_secs,
    "FLEET_RECOVER_SECS" => worker.recover_secs,
    "FLEET_HISTORY_LOG" => worker.history_log,
    "FLEET_METRICS_LISTEN" => metrics.listen,
    "FLEET_READY_WINDOW_SECS" => metrics.ready_window_secs,
    "FLEET_MAX_ATTEMPTS" => worker.max_attempts,
    "FLEET_RETRY_BASE_SECS" => worker.retry_base_secs,
    "FLEET_RETRY_MAX_SECS" => worker.retry_max_secs,
    "FLEET_MAX_MESSAGE_BYTES" => limits.max_message_bytes,
    "FLEET_WINDOW" => limits.window,
};

/// The environment variables this configuration reads, with the keys they override.
pub fn env_overrides() -> impl Iterator<Item = (&'static str, &'static str)> {
    ENV_OVERRIDES.iter().map(|(e, k, _)| (*e, *k))
}

/// The variable that overrides `key`, if one does.
pub(super) fn var_for(key: &str) -> Option<&'static str> {
    ENV_OVERRIDES
        .iter()
        .find(|(_, k, _)| *k == key)
        .map(|(e, _, _)| *e)
}

/// Applies every override of a key `keep` accepts that `env` has a value for; a malformed
/// value is an error naming the key and the variable.
pub(super) fn apply(
    config: &mut Config,
    env: impl Fn(&str) -> Option<String>,
    keep: impl Fn(&str) -> bool,
) -> Result<(), ConfigError> {
    for (var, key, set) in ENV_OVERRIDES {
        if !keep(key) {
            continue;
        }
        if let Some(value) = env(var) {
            set(config, &value).map_err(|message| ConfigError::Invalid {
                key: (*key).to_owned(),
                env: Some(var),
                message,
            })?;
        }
    }
    Ok(())
}
