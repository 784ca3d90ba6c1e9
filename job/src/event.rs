//! The event a job receives: the same document under Lambda, in a container (base64 in
//! [`EVENT_ENV`]) and from the local Invoke API. The worker builds it from the job's message
//! and the lease it holds.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Environment variable that carries the base64-encoded event into a container.
pub const EVENT_ENV: &str = "FLEET_EVENT";

/// Where a job should run. `auto` leaves the choice to the worker's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Lambda,
    Ecs,
    Auto,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Lambda => "lambda",
            Target::Ecs => "ecs",
            Target::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Target::Lambda, Target::Ecs, Target::Auto]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown target {s:?} (lambda, ecs or auto)"))
    }
}

/// The rule that chose an attempt's target (the worker's routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteRule {
    /// The request or the message forced the target.
    Request,
    /// A job promoted to ECS stays there.
    KeptAfterPromotion,
    /// The previous attempt timed out in Lambda.
    PromotedAfterTimeout,
    /// The previous attempt ran out of memory in Lambda.
    PromotedAfterOom,
    /// The event is over Lambda's payload limit.
    PayloadSize,
    /// The job's input is over `routing.lambda_max_input_bytes`.
    InputSize,
    /// The job's estimated duration is over `routing.lambda_max_secs`.
    EstimatedDuration,
    /// The job type's configured target.
    JobType,
    /// The job type's learned durations.
    Learned,
    Default,
    /// An invocation record that did not bring its attempt's route back.
    InvocationRecord,
    /// A handed-off task taken over by another replica.
    Adopted,
    /// No attempt ran: the job had none left.
    AttemptsExhausted,
    /// No attempt ran: neither Lambda nor ECS is configured for the job.
    NoTarget,
}

impl RouteRule {
    pub const ALL: [RouteRule; 14] = [
        RouteRule::Request,
        RouteRule::KeptAfterPromotion,
        RouteRule::PromotedAfterTimeout,
        RouteRule::PromotedAfterOom,
        RouteRule::PayloadSize,
        RouteRule::InputSize,
        RouteRule::EstimatedDuration,
        RouteRule::JobType,
        RouteRule::Learned,
        RouteRule::Default,
        RouteRule::InvocationRecord,
        RouteRule::Adopted,
        RouteRule::AttemptsExhausted,
        RouteRule::NoTarget,
    ];

    /// The rule's name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteRule::Request => "request",
            RouteRule::KeptAfterPromotion => "kept_after_promotion",
            RouteRule::PromotedAfterTimeout => "promoted_after_timeout",
            RouteRule::PromotedAfterOom => "promoted_after_oom",
            RouteRule::PayloadSize => "payload_size",
            RouteRule::InputSize => "input_size",
            RouteRule::EstimatedDuration => "estimated_duration",
            RouteRule::JobType => "job_type",
            RouteRule::Learned => "learned",
            RouteRule::Default => "default",
            RouteRule::InvocationRecord => "invocation_record",
            RouteRule::Adopted => "adopted",
            RouteRule::AttemptsExhausted => "attempts_exhausted",
            RouteRule::NoTarget => "no_target",
        }
    }

    /// Whether the job was moved to ECS by a Lambda attempt's end.
    pub fn is_promotion(self) -> bool {
        matches!(
            self,
            RouteRule::PromotedAfterTimeout
                | RouteRule::PromotedAfterOom
                | RouteRule::KeptAfterPromotion
        )
    }
}

/// Why an attempt runs where it does: the rule, and the target the rule preferred when that
/// one was not configured. Written as one string, `payload_size` or
/// `default_but_lambda_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RouteReason {
    pub rule: RouteRule,
    /// The preferred target, when it was unavailable and the other one runs the job.
    pub unavailable: Option<Target>,
}

impl RouteReason {
    pub fn of(rule: RouteRule) -> Self {
        Self {
            rule,
            unavailable: None,
        }
    }
}

impl std::fmt::Display for RouteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unavailable {
            None => f.write_str(self.rule.as_str()),
            Some(t) => write!(f, "{}_but_{}_unavailable", self.rule.as_str(), t.as_str()),
        }
    }
}

impl From<RouteReason> for String {
    fn from(r: RouteReason) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for RouteReason {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for RouteReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (rule, unavailable) = match s
            .strip_suffix("_unavailable")
            .and_then(|r| r.rsplit_once("_but_"))
        {
            Some((rule, "lambda")) => (rule, Some(Target::Lambda)),
            Some((rule, "ecs")) => (rule, Some(Target::Ecs)),
            _ => (s, None),
        };
        RouteRule::ALL
            .into_iter()
            .find(|r| r.as_str() == rule)
            .map(|rule| RouteReason { rule, unavailable })
            .ok_or_else(|| format!("unknown route reason {s:?}"))
    }
}

/// What the job code receives: the same document for the Lambda runtime, the container
/// entrypoint (base64 in `FLEET_EVENT`) and the local Invoke-API server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub request_id: String,
    pub job_id: String,
    pub job_type: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The lease's fence: it grows with every claim, so side effects keyed by
    /// (job id, fence) are never applied twice by two owners.
    pub fence: u64,
    pub payload: Value,
    /// Set when the attempt's result travels in an invocation record (asynchronous Lambda
    /// dispatch): a result over `inline_max_bytes` is kept in S3 by the job runtime, which
    /// returns its reference instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_results: Option<LargeResults>,
    /// Why the attempt runs where it does (the routing decision), set for an asynchronous
    /// invocation so that its record brings it back to the ledger's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteReason>,
    /// The lease an attempt handed to Lambda runs under, echoed back by its invocation
    /// record so that whichever replica receives it records the outcome without reading the
    /// job first (the ledger's conditions on owner and fence still decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<HandedLease>,
}

/// What an invocation record needs of its attempt's lease (see [`JobEvent::lease`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedLease {
    pub owner: String,
    /// The job item's key.
    pub pk: String,
    pub sk: String,
    pub started_ms: u64,
    pub until_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The attempt follows a retry (how the counters move).
    #[serde(default)]
    pub after_retry: bool,
    /// The job item's size after the claim (whether a result fits inline).
    #[serde(default)]
    pub item_bytes: usize,
}

/// Where the job runtime keeps a result too large to return inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeResults {
    pub inline_max_bytes: usize,
    /// The claim-check prefix (`s3://bucket/prefix/`); without one a larger result fails
    /// the job with `ResponseSizeTooLarge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl JobEvent {
    /// The event as a container receives it in `FLEET_EVENT`: base64 of its JSON.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        // Strings, numbers and JSON values always serialise.
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes `FLEET_EVENT`.
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("the event is not base64: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the event is not a job event: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_reasons_are_one_string_each_way() {
        for rule in RouteRule::ALL {
            assert_eq!(serde_json::to_value(rule).unwrap(), json!(rule.as_str()));
            for unavailable in [None, Some(Target::Lambda), Some(Target::Ecs)] {
                let r = RouteReason { rule, unavailable };
                let v = serde_json::to_value(r).unwrap();
                assert_eq!(v, json!(r.to_string()));
                assert_eq!(serde_json::from_value::<RouteReason>(v).unwrap(), r);
            }
        }
        assert_eq!(
            RouteReason {
                rule: RouteRule::Default,
                unavailable: Some(Target::Lambda)
            }
            .to_string(),
            "default_but_lambda_unavailable"
        );
        assert!("no_such_rule".parse::<RouteReason>().is_err());
        assert!(
            "default_but_auto_unavailable"
                .parse::<RouteReason>()
                .is_err()
        );
    }

    #[test]
    fn event_round_trips_through_base64() {
        let ev = JobEvent {
            request_id: "r".into(),
            job_id: "r:1".into(),
            job_type: "t".into(),
            attempt: 2,
            fence: 3,
            payload: json!({"x": "é\n"}),
            large_results: None,
            route: None,
            lease: None,
        };
        assert_eq!(JobEvent::from_base64(&ev.to_base64()).unwrap(), ev);
        assert!(
            JobEvent::from_base64("%%%")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            JobEvent::from_base64("e30=")
                .unwrap_err()
                .contains("not a job event")
        );
    }
}
