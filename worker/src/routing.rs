//! Where a job runs, decided in one place and recorded with every attempt (target and
//! reason). In order, the first rule that applies wins:
//!
//! 1. `request`: the request (or message) names a target;
//! 2. `promoted_after_timeout` / `promoted_after_oom`: the previous attempt timed out or ran
//!    out of memory in Lambda, so this one runs in a container; `kept_after_promotion`: an
//!    earlier one was promoted, so this one stays in a container;
//! 3. `payload_size`: the event is over Lambda's payload limit (for an asynchronous
//!    invocation, 128 KiB: its invocation record must fit in an SQS message);
//! 4. `input_size`: the job was split from an S3 prefix and its objects (the payload's
//!    `source.bytes`) add up to more than `routing.lambda_max_input_bytes`;
//! 5. `estimated_duration`: the message's or the job type's estimate is over
//!    `routing.lambda_max_secs`;
//! 6. `job_type`: the job type's configured target;
//! 7. `learned`: the job type's recent durations (shared through the ledger) say so;
//! 8. `default`: Lambda.
//!
//! A route to a target that is not configured falls back to the other one, with the reason
//! `<reason>_but_<target>_unavailable`; when neither is configured the job cannot run.

use fleet_shared::config::{Config, Invocation};
use fleet_shared::ledger::AttemptRecord;
use fleet_shared::message::{JobMessage, RouteReason, RouteRule, Target};
use fleet_shared::state::AttemptOutcome;

use crate::classify::ErrorClass;

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `Lambda` or `Ecs`, never `Auto`.
    pub target: Target,
    pub reason: RouteReason,
}

/// What the decision looks at besides the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub message: &'a JobMessage,
    /// The job's own target from the ledger (the request's option, or a redrive's).
    pub ledger_target: Option<Target>,
    /// Size of the event the job would receive.
    pub event_bytes: usize,
    /// The previous attempt, if any.
    pub previous: Option<&'a AttemptRecord>,
    /// The learned route of the job type, if the learner has one.
    pub learned: Option<Target>,
}

fn chosen(t: Option<Target>) -> Option<Target> {
    t.filter(|t| *t != Target::Auto)
}

/// The rule that applies, before availability is considered.
fn preferred(config: &Config, input: &RouteInput<'_>) -> (Target, RouteRule) {
    let msg = input.message;
    let hint = msg.routing.as_ref();
    if let Some(t) = chosen(hint.and_then(|h| h.target)).or(chosen(input.ledger_target)) {
        return (t, RouteRule::Request);
    }
    // A job promoted to ECS stays there: sending its next attempt back to Lambda would time
    // out (or run out of memory) again.
    if let Some(prev) = input.previous
        && prev.target == Target::Ecs
        && prev.reason.rule.is_promotion()
    {
        return (Target::Ecs, RouteRule::KeptAfterPromotion);
    }
    if let Some(prev) = input.previous
        && prev.target == Target::Lambda
    {
        if prev.outcome == AttemptOutcome::Failed(ErrorClass::Timeout) {
            return (Target::Ecs, RouteRule::PromotedAfterTimeout);
        }
        if prev.stopped_reason.as_deref().is_some_and(is_out_of_memory) {
            return (Target::Ecs, RouteRule::PromotedAfterOom);
        }
    }
    let max_payload = match config.lambda.invocation {
        Invocation::Event => config
            .routing
            .lambda_max_payload_bytes
            .min(fleet_shared::invocation_record::EVENT_MAX_BYTES),
        Invocation::Sync => config.routing.lambda_max_payload_bytes,
    };
    if input.event_bytes > max_payload {
        return (Target::Ecs, RouteRule::PayloadSize);
    }
    if let Some(max) = config.routing.lambda_max_input_bytes
        && input_bytes(&msg.payload).is_some_and(|b| b > max)
    {
        return (Target::Ecs, RouteRule::InputSize);
    }
    let job_type = config.job_types.get(&msg.job_type);
    let estimate = hint
        .and_then(|h| h.estimated_secs)
        .or(job_type.and_then(|t| t.estimated_secs));
    if estimate.is_some_and(|s| s > config.routing.lambda_max_secs) {
        return (Target::Ecs, RouteRule::EstimatedDuration);
    }
    if let Some(t) = chosen(job_type.and_then(|t| t.target)) {
        return (t, RouteRule::JobType);
    }
    if config.routing.learned
        && let Some(t) = input.learned
    {
        return (t, RouteRule::Learned);
    }
    (Target::Lambda, RouteRule::Default)
}

/// The bytes of input a job split from an S3 prefix reads (its payload's `source.bytes`).
fn input_bytes(payload: &serde_json::Value) -> Option<u64> {
    payload.get("source")?.get("bytes")?.as_u64()
}

/// Whether a Lambda error or an ECS stop reason means the job ran out of memory.
pub fn is_out_of_memory(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("outofmemory")
        || t.contains("out of memory")
        || t.contains("runtime.oom")
        || t.contains("memory size exceeded")
}

/// The route of one attempt. `None` when neither target is configured.
pub fn route(config: &Config, input: &RouteInput<'_>) -> Option<Route> {
    let (target, rule) = preferred(config, input);
    let lambda = config.function_for(&input.message.job_type).is_some();
    let ecs = config.ecs.enabled();
    let available = |t: Target| match t {
        Target::Ecs => ecs,
        _ => lambda,
    };
    if available(target) {
        return Some(Route {
            target,
            reason: RouteReason::of(rule),
        });
    }
    let other = if target == Target::Ecs {
        Target::Lambda
    } else {
        Target::Ecs
    };
    available(other).then_some(Route {
        target: other,
        reason: RouteReason {
            rule,
            unavailable: Some(target),
        },
    })
}

/// The 95th percentile of durations (nearest rank).
pub fn p95(durations: &[u64]) -> Option<u64> {
    if durations.is_empty() {
        return None;
    }
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * 95).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// The learned route of a job type from its durations, with hysteresis: move to ECS at
/// `learn_to_ecs` × the Lambda limit, back to Lambda below `learn_to_lambda` × the limit,
/// otherwise stay where it was.
pub fn learned_route(
    config: &Config,
    durations: &[u64],
    current: Option<Target>,
) -> Option<Target> {
    let r = &config.routing;
    if durations.len() < r.learn_min_samples {
        return current;
    }
    let p95 = p95(durations)? as f64 / 1000.0;
    if p95 >= r.learn_to_ecs * r.lambda_max_secs {
        Some(Target::Ecs)
    } else if p95 < r.learn_to_lambda * r.lambda_max_secs {
        Some(Target::Lambda)
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_shared::config::{JobTypeConfig, Launcher};
    use fleet_shared::message::{MESSAGE_VERSION, RoutingHint};

    fn config() -> Config {
        let mut c = Config::default();
        c.lambda.function = Some("job".into());
        c.ecs.launcher = Launcher::Process;
        c.ecs.command = Some("job run".into());
        c
    }

    fn msg(hint: Option<RoutingHint>) -> JobMessage {
        JobMessage {
            version: MESSAGE_VERSION,
            request_id: "r".into(),
            job_id: "r:0".into(),
            job_type: "t".into(),
            attempt: 1,
            payload: serde_json::Value::Null,
            routing: hint,
            enqueued_at_ms: 0,
            max_attempts: None,
            tenant: None,
        }
    }

    fn prev(target: &str, outcome: &str, stopped: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            attempt: 1,
            fence: 1,
            started_ms: 0,
            ended_ms: 1,
            target: target.parse().unwrap(),
            outcome: outcome.parse().unwrap(),
            retry_at_ms: None,
            reason: RouteReason::of(RouteRule::Default),
            exit_code: None,
            stopped_reason: stopped.map(str::to_owned),
            usage: None,
        }
    }

    fn decide(
        c: &Config,
        m: &JobMessage,
        previous: Option<&AttemptRecord>,
        learned: Option<Target>,
        bytes: usize,
    ) -> (Target, String) {
        let r = route(
            c,
            &RouteInput {
                message: m,
                ledger_target: None,
                event_bytes: bytes,
                previous,
                learned,
            },
        )
        .unwrap();
        (r.target, r.reason.to_string())
    }

    #[test]
    fn rules_in_order() {
        let mut c = config();
        c.job_types.insert(
            "t".into(),
            JobTypeConfig {
                target: Some(Target::Ecs),
                ..Default::default()
            },
        );
        let plain = msg(None);
        let to_lambda = msg(Some(RoutingHint {
            target: Some(Target::Lambda),
            estimated_secs: Some(5000.0),
        }));
        let long = msg(Some(RoutingHint {
            target: None,
            estimated_secs: Some(601.0),
        }));
        let timed_out = prev("lambda", "timeout", None);
        let oom = prev(
            "lambda",
            "job_failure",
            Some("Runtime.OutOfMemory: signal: killed"),
        );
        let ecs_timeout = prev("ecs", "timeout", None);
        let l = (Target::Lambda, "".to_string());
        let _ = l;
        assert_eq!(
            decide(&c, &to_lambda, Some(&timed_out), None, 10),
            (Target::Lambda, "request".into())
        );
        assert_eq!(
            decide(&c, &plain, Some(&timed_out), None, 10),
            (Target::Ecs, "promoted_after_timeout".into())
        );
        assert_eq!(
            decide(&c, &plain, Some(&oom), None, 10),
            (Target::Ecs, "promoted_after_oom".into())
        );
        assert_eq!(
            decide(&c, &plain, None, None, 7 << 20),
            (Target::Ecs, "payload_size".into())
        );
        let mut big_input = msg(None);
        big_input.payload = serde_json::json!({"source": {"bytes": 2_000_001}});
        assert_eq!(
            decide(&c, &big_input, None, None, 10),
            (Target::Ecs, "job_type".into()),
            "no input limit configured"
        );
        c.routing.lambda_max_input_bytes = Some(2_000_000);
        assert_eq!(
            decide(&c, &big_input, None, None, 10),
            (Target::Ecs, "input_size".into())
        );
        big_input.payload = serde_json::json!({"source": {"bytes": 2_000_000}});
        assert_ne!(decide(&c, &big_input, None, None, 10).1, "input_size");
        assert_eq!(
            decide(&c, &long, None, None, 10),
            (Target::Ecs, "estimated_duration".into())
        );
        assert_eq!(
            decide(&c, &plain, Some(&ecs_timeout), None, 10),
            (Target::Ecs, "job_type".into())
        );
        // Once promoted, a job stays on ECS whatever its later attempts do.
        let mut promoted = prev("ecs", "job_failure", None);
        promoted.reason = RouteReason::of(RouteRule::PromotedAfterTimeout);
        let mut kept = prev("ecs", "transient", None);
        kept.reason = RouteReason::of(RouteRule::KeptAfterPromotion);
        let mut no_ecs_type = c.clone();
        no_ecs_type.job_types.clear();
        for p in [&promoted, &kept] {
            assert_eq!(
                decide(&no_ecs_type, &plain, Some(p), None, 10),
                (Target::Ecs, "kept_after_promotion".into())
            );
        }
        assert_eq!(
            decide(&no_ecs_type, &plain, Some(&ecs_timeout), None, 10),
            (Target::Lambda, "default".into()),
            "an ECS attempt that was not a promotion does not pin the job"
        );
        // An asynchronous invocation's record carries the event: a large event goes to ECS.
        let big = fleet_shared::invocation_record::EVENT_MAX_BYTES + 1;
        assert_eq!(
            decide(&no_ecs_type, &plain, None, None, big),
            (Target::Ecs, "payload_size".into())
        );
        no_ecs_type.lambda.invocation = fleet_shared::config::Invocation::Sync;
        assert_eq!(
            decide(&no_ecs_type, &plain, None, None, big),
            (Target::Lambda, "default".into())
        );
        c.job_types.clear();
        assert_eq!(
            decide(&c, &plain, None, Some(Target::Ecs), 10),
            (Target::Ecs, "learned".into())
        );
        assert_eq!(
            decide(&c, &plain, None, None, 10),
            (Target::Lambda, "default".into())
        );
        c.routing.learned = false;
        assert_eq!(
            decide(&c, &plain, None, Some(Target::Ecs), 10),
            (Target::Lambda, "default".into())
        );
    }

    #[test]
    fn an_unavailable_target_falls_back_and_says_so() {
        let mut c = config();
        c.ecs.command = None;
        c.ecs.launcher = Launcher::Aws;
        let long = msg(Some(RoutingHint {
            target: None,
            estimated_secs: Some(700.0),
        }));
        assert_eq!(
            decide(&c, &long, None, None, 10),
            (
                Target::Lambda,
                "estimated_duration_but_ecs_unavailable".into()
            )
        );
        c.lambda.function = None;
        assert!(
            route(
                &c,
                &RouteInput {
                    message: &long,
                    ledger_target: None,
                    event_bytes: 10,
                    previous: None,
                    learned: None
                }
            )
            .is_none()
        );
    }

    #[test]
    fn percentiles_and_hysteresis() {
        assert_eq!(p95(&[]), None);
        assert_eq!(p95(&[5]), Some(5));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(p95(&hundred), Some(95));
        let mut c = config();
        c.routing.lambda_max_secs = 10.0;
        c.routing.learn_min_samples = 20;
        let secs = |s: u64| vec![s * 1000; 20];
        assert_eq!(
            learned_route(&c, &secs(9)[..19], None),
            None,
            "too few samples"
        );
        assert_eq!(
            learned_route(&c, &secs(8), None),
            Some(Target::Ecs),
            "at 0.8 of the limit"
        );
        assert_eq!(
            learned_route(&c, &secs(6), Some(Target::Ecs)),
            Some(Target::Ecs),
            "between: stays"
        );
        assert_eq!(
            learned_route(&c, &secs(6), Some(Target::Lambda)),
            Some(Target::Lambda),
            "between: stays"
        );
        assert_eq!(
            learned_route(&c, &secs(4), Some(Target::Ecs)),
            Some(Target::Lambda),
            "below 0.5: back"
        );
    }
}
