//! Retry policy: a value with a pure `delay(attempt, rng)`. The exponential schedule comes
//! from a `backon` policy (base, doubling, capped); the delay is drawn uniformly between zero
//! and that ceiling ("full jitter"), so replicas that failed together do not retry together.
//! The delay is durable: the engine writes the retry time to the ledger and hides the message
//! for that long, so any replica can take the next attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use fleet_shared::config::{Config, SQS_MAX_VISIBILITY_SECS};
use rand::{Rng, RngExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the delay after the first failed attempt.
    pub base: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &Config) -> Self {
        Self {
            base: Duration::from_secs(c.worker.retry_base_secs),
            max: Duration::from_secs(c.worker.retry_max_secs),
        }
    }

    /// The ceiling after failure number `n` (from 1): `base * 2^(n-1)`, at most `max` and
    /// never beyond SQS's visibility limit.
    pub fn ceiling(&self, n: u32) -> Duration {
        let mut schedule = ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build();
        let mut c = self.base;
        for _ in 0..n.clamp(1, 64) {
            c = schedule.next().unwrap_or(self.max);
            if c >= self.max {
                break;
            }
        }
        c.min(self.max)
            .min(Duration::from_secs(SQS_MAX_VISIBILITY_SECS))
    }

    /// The delay after failure number `n`: uniform in `[0, ceiling(n)]`, to the millisecond.
    pub fn delay(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(n).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let got: Vec<u64> = (1..=7).map(|a| policy().ceiling(a).as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy().ceiling(200), Duration::from_secs(60));
        assert_eq!(policy().ceiling(0), Duration::from_secs(2));
    }

    #[test]
    fn delays_are_full_jitter_under_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(7);
        for n in 1..=8 {
            let ceiling = policy().ceiling(n);
            let delays: Vec<Duration> = (0..500).map(|_| policy().delay(n, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Spread over the whole range, not bunched at one end.
            let low = delays.iter().filter(|d| **d < ceiling / 4).count();
            let high = delays.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(low > 50 && high > 50, "n={n}: {low} low, {high} high");
        }
    }

    #[test]
    fn a_pinned_rng_gives_the_same_delays() {
        let a: Vec<Duration> = {
            let mut rng = StdRng::seed_from_u64(42);
            (1..=5).map(|n| policy().delay(n, &mut rng)).collect()
        };
        let b: Vec<Duration> = {
            let mut rng = StdRng::seed_from_u64(42);
            (1..=5).map(|n| policy().delay(n, &mut rng)).collect()
        };
        assert_eq!(a, b);
    }
}
