//! Retry policy: a value with a pure `delay(attempt)`. The delay is durable: the engine
//! writes the retry time to the ledger and hides the message for that long, so any replica
//! can take the next attempt.

use std::time::Duration;

use fleet_shared::config::{Config, SQS_MAX_VISIBILITY_SECS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &Config) -> Self {
        Self {
            base: Duration::from_secs(c.worker.retry_base_secs),
            max: Duration::from_secs(c.worker.retry_max_secs),
        }
    }

    /// The delay after failed attempt number `attempt` (from 1): `base * 2^(attempt-1)`,
    /// at most `max` and never beyond SQS's visibility limit.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base
            .saturating_mul(factor)
            .min(self.max)
            .min(Duration::from_secs(SQS_MAX_VISIBILITY_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        let got: Vec<u64> = (1..=7).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.delay(200), Duration::from_secs(60));
    }
}
