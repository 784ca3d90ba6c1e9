//! `[lambda]`: the functions jobs run on, how they are invoked, and how many at once.

use std::time::Duration;

use serde::Deserialize;

use super::env::EnvValue;
use super::{ConfigError, check_function, invalid};

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
    /// The functions' memory (MB), for the cost of an asynchronous attempt (Lambda's
    /// invocation record does not say it; a synchronous Invoke's log tail does). Env
    /// `FLEET_LAMBDA_MEMORY_MB`.
    pub memory_mb: u32,
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

impl EnvValue for Invocation {
    fn parse_env(v: &str) -> Result<Self, String> {
        Invocation::parse(v)
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
            memory_mb: 1024,
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

    /// Checks this section alone (the outcomes queue, whose default comes from the jobs
    /// queue, is checked by [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(128..=10_240).contains(&self.memory_mb) {
            return Err(invalid(
                "lambda.memory_mb",
                "must be 128 to 10240 (Lambda's range)",
            ));
        }
        if let Some(f) = &self.function {
            check_function("lambda.function", f)?;
        }
        if let Some(r) = self.read_timeout_secs
            && !(1..=3600).contains(&r)
        {
            return Err(invalid("lambda.read_timeout_secs", "must be 1 to 3600"));
        }
        if self.min_concurrency == 0 {
            return Err(invalid("lambda.min_concurrency", "must be at least 1"));
        }
        if let Some(m) = self.max_concurrency
            && m < self.min_concurrency
        {
            return Err(invalid(
                "lambda.max_concurrency",
                "must be at least lambda.min_concurrency",
            ));
        }
        if !(60..=21600).contains(&self.max_event_age_secs) {
            return Err(invalid(
                "lambda.max_event_age_secs",
                "must be 60 to 21600 (Lambda's limits on an event's age)",
            ));
        }
        if !(1..=10_000).contains(&self.invoke_calls) {
            return Err(invalid("lambda.invoke_calls", "must be 1 to 10000"));
        }
        if !(1..=900).contains(&self.function_timeout_secs) {
            return Err(invalid(
                "lambda.function_timeout_secs",
                "must be 1 to 900 (Lambda's limit)",
            ));
        }
        Ok(())
    }
}
