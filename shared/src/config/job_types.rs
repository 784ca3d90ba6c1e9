//! `[job_types.<name>]`: settings of one job type, over the defaults of the other sections.

use serde::Deserialize;

use super::{ConfigError, check_attempts, check_function, invalid};
use crate::ids;

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
    /// Jobs of this type started a second across the whole fleet (every replica sharing the
    /// ledger), from start slots kept in the ledger and taken in blocks; default: no limit.
    pub max_starts_per_sec: Option<f64>,
    /// Jobs of this type running at once across the whole fleet (slots of a cap kept in the
    /// ledger, held by the replicas and renewed every second); default: no limit.
    pub max_concurrency: Option<u32>,
}

impl JobTypeConfig {
    /// Checks the job type `name` (its name too) and its settings.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        ids::validate_job_type(name)
            .map_err(|e| invalid(&format!("job_types.{name}"), format!("job type name {e}")))?;
        if let Some(f) = &self.function {
            check_function(&format!("job_types.{name}.function"), f)?;
        }
        if let Some(n) = self.max_attempts {
            check_attempts(&format!("job_types.{name}.max_attempts"), n)?;
        }
        if let Some(r) = self.max_starts_per_sec
            && !(r.is_finite() && r > 0.0 && r <= 10_000.0)
        {
            return Err(invalid(
                &format!("job_types.{name}.max_starts_per_sec"),
                "must be above 0 and at most 10000",
            ));
        }
        if let Some(n) = self.max_concurrency
            && !(1..=100_000).contains(&n)
        {
            return Err(invalid(
                &format!("job_types.{name}.max_concurrency"),
                "must be 1 to 100000",
            ));
        }
        if let Some(s) = self.estimated_secs
            && !(s.is_finite() && s >= 0.0)
        {
            return Err(invalid(
                &format!("job_types.{name}.estimated_secs"),
                "must be 0 or more",
            ));
        }
        Ok(())
    }
}
