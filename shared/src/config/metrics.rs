//! `[metrics]`: the metrics and health endpoint.

use serde::Deserialize;

use super::{ConfigError, invalid};

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

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.ready_window_secs == 0 {
            return Err(invalid("metrics.ready_window_secs", "must be at least 1"));
        }
        Ok(())
    }
}
