//! `[prices]`: the list prices a request's estimated cost is computed with.

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::ledger::Usage;

/// US dollar list prices, and the ledger and queue requests a job makes. The defaults are
/// us-east-1's, checked on [`PricesConfig::as_of`]'s date; set your region's (and any
/// discount) here. The per-job requests come from the million-job benchmark
/// (`fleet-bench --scenario scale`, README "Performance").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricesConfig {
    /// What the prices are: their date and region.
    pub as_of: String,
    /// Lambda compute, per GB-second (arm64, as the template deploys the function).
    pub lambda_gb_second: f64,
    pub lambda_requests_per_million: f64,
    /// Fargate, per vCPU-hour and per GB-hour (Linux, arm64, as the template's task).
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    /// DynamoDB on demand, per million write and read request units.
    pub dynamodb_write_units_per_million: f64,
    pub dynamodb_read_units_per_million: f64,
    /// SQS standard queues, per million requests (of up to 64 KB).
    pub sqs_requests_per_million: f64,
    /// What one job makes of each, on average (table and index write units, read units,
    /// SQS requests).
    pub write_units_per_job: f64,
    pub read_units_per_job: f64,
    pub sqs_requests_per_job: f64,
}

impl Default for PricesConfig {
    fn default() -> Self {
        Self {
            as_of: "2026-12-02 us-east-1 list prices".into(),
            lambda_gb_second: 0.000_013_333_4,
            lambda_requests_per_million: 0.20,
            fargate_vcpu_hour: 0.032_384,
            fargate_gb_hour: 0.003_556,
            dynamodb_write_units_per_million: 0.625,
            dynamodb_read_units_per_million: 0.125,
            sqs_requests_per_million: 0.40,
            write_units_per_job: 6.31,
            read_units_per_job: 2.16,
            sqs_requests_per_job: 0.32,
        }
    }
}

/// Fargate bills a task for at least a minute.
pub const FARGATE_MIN_BILLED_MS: u64 = 60_000;

/// A request's estimated cost, in US dollars.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CostEstimate {
    /// Lambda and Fargate: what every recorded attempt used.
    pub compute_usd: f64,
    /// DynamoDB and SQS requests: the per-job figures times the jobs finished.
    pub requests_usd: f64,
    pub total_usd: f64,
    /// [`PricesConfig::as_of`].
    pub prices: String,
}

impl PricesConfig {
    /// A Lambda attempt billed `billed_ms` at `memory_mb`: its usage and cost.
    pub fn lambda(&self, billed_ms: u64, memory_mb: u32) -> Usage {
        let gb_seconds = billed_ms as f64 / 1000.0 * f64::from(memory_mb) / 1024.0;
        let usd = gb_seconds * self.lambda_gb_second + self.lambda_requests_per_million / 1e6;
        Usage {
            billed_ms,
            memory_mb,
            cpu_units: None,
            cost_nusd: nano(usd),
        }
    }

    /// A Fargate task of `cpu_units` and `memory_mb` that ran `ran_ms`: its usage (billed at
    /// least a minute) and cost.
    pub fn fargate(&self, ran_ms: u64, cpu_units: u32, memory_mb: u32) -> Usage {
        let billed_ms = ran_ms.max(FARGATE_MIN_BILLED_MS);
        let hours = billed_ms as f64 / 3_600_000.0;
        let usd = hours
            * (f64::from(cpu_units) / 1024.0 * self.fargate_vcpu_hour
                + f64::from(memory_mb) / 1024.0 * self.fargate_gb_hour);
        Usage {
            billed_ms,
            memory_mb,
            cpu_units: Some(cpu_units),
            cost_nusd: nano(usd),
        }
    }

    /// The DynamoDB and SQS requests of one job, in US dollars.
    pub fn requests_per_job_usd(&self) -> f64 {
        (self.write_units_per_job * self.dynamodb_write_units_per_million
            + self.read_units_per_job * self.dynamodb_read_units_per_million
            + self.sqs_requests_per_job * self.sqs_requests_per_million)
            / 1e6
    }

    /// The cost of a request whose attempts cost `compute_nusd` and which has `finished`
    /// jobs.
    pub fn estimate(&self, compute_nusd: i64, finished: u64) -> CostEstimate {
        let compute_usd = compute_nusd.max(0) as f64 / 1e9;
        let requests_usd = finished as f64 * self.requests_per_job_usd();
        CostEstimate {
            compute_usd,
            requests_usd,
            total_usd: compute_usd + requests_usd,
            prices: self.as_of.clone(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("prices.lambda_gb_second", self.lambda_gb_second),
            (
                "prices.lambda_requests_per_million",
                self.lambda_requests_per_million,
            ),
            ("prices.fargate_vcpu_hour", self.fargate_vcpu_hour),
            ("prices.fargate_gb_hour", self.fargate_gb_hour),
            (
                "prices.dynamodb_write_units_per_million",
                self.dynamodb_write_units_per_million,
            ),
            (
                "prices.dynamodb_read_units_per_million",
                self.dynamodb_read_units_per_million,
            ),
            (
                "prices.sqs_requests_per_million",
                self.sqs_requests_per_million,
            ),
            ("prices.write_units_per_job", self.write_units_per_job),
            ("prices.read_units_per_job", self.read_units_per_job),
            ("prices.sqs_requests_per_job", self.sqs_requests_per_job),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(
                    key,
                    format!("must be a number at least 0, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// US dollars in billionths, rounded.
fn nano(usd: f64) -> u64 {
    (usd * 1e9).round().max(0.0) as u64
}
