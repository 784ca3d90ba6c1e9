//! `[routing]`: which jobs go to Lambda and which to ECS, by rule and by learned durations.

use serde::Deserialize;

use super::{ConfigError, invalid};

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

impl RoutingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.lambda_max_secs > 0.0 && self.lambda_max_secs <= 900.0) {
            return Err(invalid(
                "routing.lambda_max_secs",
                "must be above 0 and at most 900 (Lambda's limit)",
            ));
        }
        if !(0.0 < self.learn_to_lambda
            && self.learn_to_lambda < self.learn_to_ecs
            && self.learn_to_ecs <= 1.0)
        {
            return Err(invalid(
                "routing.learn_to_ecs",
                "need 0 < learn_to_lambda < learn_to_ecs <= 1",
            ));
        }
        if !(1..=10_000).contains(&self.learn_window)
            || self.learn_min_samples == 0
            || self.learn_min_samples > self.learn_window
        {
            return Err(invalid(
                "routing.learn_window",
                "need 1 <= learn_min_samples <= learn_window <= 10000",
            ));
        }
        if self.learn_secs == 0 {
            return Err(invalid("routing.learn_secs", "must be at least 1"));
        }
        Ok(())
    }
}
