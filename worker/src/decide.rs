//! What a failed attempt means for its job, as a pure function of the attempt's facts and the
//! retry policy: retried (after how long, spending the attempt or not) or failed for good.
//! The engine records what this decides; the table test below is the rule.

use std::time::Duration;

use rand::Rng;

use crate::classify::ErrorClass;
use crate::retry::RetryPolicy;

/// What the decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub class: ErrorClass,
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// The job's attempt limit.
    pub max_attempts: u32,
    /// How many times SQS has handed out the job's message (1 when there is none).
    pub receive_count: u32,
    /// When the target said to call again.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Another attempt after `delay`; `refund`: this one does not count (it never ran).
    Retry { delay: Duration, refund: bool },
    /// FAILED, dead-lettered.
    Fail,
}

/// Throttled: retried without spending the attempt, after a delay growing with the
/// message's receive count and at least the target's `retry_after`. Permanent: failed.
/// Any other class: retried with the policy's delay while attempts remain, else failed.
pub fn decide(f: &Facts, policy: &RetryPolicy, rng: &mut impl Rng) -> Decision {
    match f.class {
        ErrorClass::Throttled => {
            let delay = policy.delay(f.receive_count, rng);
            Decision::Retry {
                delay: f.retry_after.map_or(delay, |after| delay.max(after)),
                refund: true,
            }
        }
        ErrorClass::Permanent => Decision::Fail,
        _ if f.attempt < f.max_attempts => Decision::Retry {
            delay: policy.delay(f.attempt, rng),
            refund: false,
        },
        _ => Decision::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_rule_as_a_table() {
        use ErrorClass::*;
        let policy = RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
        };
        let s = Duration::from_secs;
        // class, attempt, limit, receive count, retry-after → retried (refunded) with a delay
        // in [least, most], or failed.
        type Row = (
            ErrorClass,
            u32,
            u32,
            u32,
            Option<u64>,
            Option<(bool, u64, u64)>,
        );
        let rows: &[Row] = &[
            (JobFailure, 1, 3, 1, None, Some((false, 0, 2))),
            (JobFailure, 2, 3, 2, None, Some((false, 0, 4))),
            (JobFailure, 3, 3, 3, None, None),
            (Transient, 1, 5, 1, None, Some((false, 0, 2))),
            (Timeout, 4, 5, 9, None, Some((false, 0, 16))),
            (Timeout, 5, 5, 1, None, None),
            (Permanent, 1, 5, 1, None, None),
            // Throttled: never the last attempt, growing with the receive count.
            (Throttled, 5, 5, 1, None, Some((true, 0, 2))),
            (Throttled, 1, 5, 4, None, Some((true, 0, 16))),
            // Lambda's retryAfterSeconds is the least wait.
            (Throttled, 1, 5, 1, Some(30), Some((true, 30, 30))),
            (Throttled, 1, 5, 9, Some(1), Some((true, 1, 512))),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        for (i, &(class, attempt, max_attempts, receive_count, after, want)) in
            rows.iter().enumerate()
        {
            let facts = Facts {
                class,
                attempt,
                max_attempts,
                receive_count,
                retry_after: after.map(s),
            };
            for _ in 0..50 {
                let got = decide(&facts, &policy, &mut rng);
                match (got, want) {
                    (Decision::Fail, None) => {}
                    (Decision::Retry { delay, refund }, Some((r, least, most))) => {
                        assert_eq!(refund, r, "row {i}");
                        assert!(delay >= s(least) && delay <= s(most), "row {i}: {delay:?}");
                    }
                    _ => panic!("row {i}: {got:?}, want {want:?}"),
                }
            }
        }
    }
}
