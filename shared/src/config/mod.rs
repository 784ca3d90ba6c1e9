//! Configuration: one TOML file (`--config PATH` or `FLEET_CONFIG`), then environment
//! overrides, then validation. Loading returns a `Result` whose error names the key (and the
//! environment variable) that is wrong; nothing here panics. Every field has a default, so
//! an empty file, or none, is a working configuration for the local stack.
//!
//! AWS settings (region, credentials, endpoints) are not here: they come from the default
//! AWS chain, including `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::message::MAX_ATTEMPTS_LIMIT;

mod api;
mod aws;
mod claim_check;
mod ecs;
mod env;
mod events;
mod job_types;
mod lambda;
mod ledger;
mod limits;
mod metrics;
mod prices;
mod queue;
mod routing;
mod tenants;
mod worker;

pub use api::{ApiConfig, MIN_TOKEN_CHARS};
pub use aws::AwsConfig;
pub use claim_check::ClaimCheckConfig;
pub use ecs::{EcsConfig, LaunchType, Launcher, split_command};
pub use env::env_overrides;
pub use events::EventsConfig;
pub use job_types::JobTypeConfig;
pub use lambda::{Invocation, LambdaConfig};
pub use ledger::{JOBS_PER_SHARD, LedgerConfig};
pub use limits::{LimitsConfig, MAX_WINDOW};
pub use metrics::MetricsConfig;
pub use prices::{CostEstimate, FARGATE_MIN_BILLED_MS, PricesConfig};
pub use queue::QueueConfig;
pub use routing::RoutingConfig;
pub use tenants::TenantConfig;
pub use worker::WorkerConfig;

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
    pub events: EventsConfig,
    pub prices: PricesConfig,
    pub api: ApiConfig,
    /// Settings per job type, keyed by the job type's name.
    pub job_types: BTreeMap<String, JobTypeConfig>,
    /// Limits per tenant, keyed by the tenant's name.
    pub tenants: BTreeMap<String, TenantConfig>,
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
        env: env::var_for(key),
        message: message.into(),
    }
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
        env::apply(&mut config, env, |_| true)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the first key that is wrong. Each section checks
    /// its own keys; the checks that span sections are here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.aws.validate()?;
        self.queue.validate()?;
        if self.queue.max_receive_count <= self.worker.max_attempts {
            return Err(invalid(
                "queue.max_receive_count",
                format!(
                    "must be above worker.max_attempts ({}), or SQS dead-letters jobs that still have attempts",
                    self.worker.max_attempts
                ),
            ));
        }
        self.ledger.validate()?;
        self.lambda.validate()?;
        let outcomes = self.outcomes_queue();
        check_queue("lambda.outcomes_queue", &outcomes)?;
        if outcomes == self.queue.jobs || outcomes == self.queue.dead_letter {
            return Err(invalid(
                "lambda.outcomes_queue",
                "must differ from queue.jobs and queue.dead_letter",
            ));
        }
        self.claim_check.validate()?;
        self.events.validate()?;
        self.api.validate()?;
        self.prices.validate()?;
        if self.claim_check.prefix.is_none() && self.limits.max_message_bytes > ITEM_SAFE_BYTES {
            return Err(invalid(
                "limits.max_message_bytes",
                format!(
                    "a payload of {} bytes could not be kept in a ledger item (DynamoDB's 400 KB): set claim_check.prefix to keep large payloads in S3, or keep this at most {ITEM_SAFE_BYTES}",
                    self.limits.max_message_bytes
                ),
            ));
        }
        self.worker.validate()?;
        self.metrics.validate()?;
        self.limits.validate()?;
        self.ecs.validate()?;
        self.routing.validate()?;
        for (name, jt) in &self.job_types {
            jt.validate(name)?;
        }
        for (name, tc) in &self.tenants {
            tc.validate(name)?;
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
mod tests;
