//! Lambda dispatcher. Asynchronously (`lambda.invocation = "event"`, the default): an Invoke
//! with `InvocationType=Event` per attempt, answered 202 once Lambda has queued the event;
//! the attempt's end comes back as an invocation record on the outcomes queue
//! ([`super::record`]). Synchronously (`"sync"`): one Invoke held open until the job ends.
//! The client has the SDK's retries off and, for the synchronous call, a read timeout above
//! the function timeout (see `fleet_shared::aws::lambda_for_invoke`), so an Invoke is never
//! re-sent behind the engine's back.

use std::sync::Arc;

use aws_sdk_lambda::error::{DisplayErrorContext, SdkError};
use aws_sdk_lambda::operation::RequestId;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use fleet_shared::config::{Config, Invocation};
use fleet_shared::message::JobEvent;

use super::{Dispatcher, Outcome, Reported, TaskEnd};
use crate::classify::{self, ErrorClass};

pub struct LambdaDispatcher {
    client: aws_sdk_lambda::Client,
    config: Arc<Config>,
}

impl LambdaDispatcher {
    pub fn new(client: aws_sdk_lambda::Client, config: Arc<Config>) -> Self {
        Self { client, config }
    }

    /// The function and the encoded event, or why the attempt cannot be sent.
    fn request(&self, event: &JobEvent) -> Result<(&str, Vec<u8>), TaskEnd> {
        let refuse = |message: String| {
            TaskEnd::of(Outcome::Failed {
                class: ErrorClass::Permanent,
                message,
            })
        };
        let Some(function) = self.config.function_for(&event.job_type) else {
            return Err(refuse(format!(
                "no Lambda function is configured for job type {:?} (set lambda.function or job_types.{}.function)",
                event.job_type, event.job_type
            )));
        };
        let payload = serde_json::to_vec(event)
            .map_err(|e| refuse(format!("cannot encode the event: {e}")))?;
        Ok((function, payload))
    }
}

impl Dispatcher for LambdaDispatcher {
    fn target(&self) -> &'static str {
        "lambda"
    }

    fn hands_off(&self) -> bool {
        self.config.lambda.invocation == Invocation::Event
    }

    async fn dispatch(&self, event: &JobEvent) -> TaskEnd {
        let (function, payload) = match self.request(event) {
            Ok(r) => r,
            Err(end) => return end,
        };
        match self
            .client
            .invoke()
            .function_name(function)
            .payload(Blob::new(payload))
            .log_type(aws_sdk_lambda::types::LogType::Tail)
            .send()
            .await
        {
            Ok(out) => {
                // The log tail's REPORT line: the billed duration and memory, for the cost.
                let reported = out
                    .log_result
                    .as_deref()
                    .and_then(|b| {
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
                    })
                    .map(|log| Reported::from_log(&String::from_utf8_lossy(&log)))
                    .unwrap_or_default();
                let body = out.payload.map(Blob::into_inner).unwrap_or_default();
                let end = match out.function_error {
                    None => TaskEnd::of(Outcome::Succeeded { result: body }),
                    Some(_) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        function_error(&v, &body)
                    }
                };
                TaskEnd { reported, ..end }
            }
            Err(e) => invoke_failed(function, &e),
        }
    }

    async fn hand_off(&self, event: &JobEvent) -> Result<String, TaskEnd> {
        let (function, payload) = self.request(event)?;
        match self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
        {
            Ok(out) if out.status_code == 202 => Ok(out.request_id().unwrap_or("").to_owned()),
            Ok(out) => Err(TaskEnd::of(Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!(
                    "Invoke {function} (Event) answered {} instead of 202",
                    out.status_code
                ),
            })),
            Err(e) => Err(invoke_failed(function, &e)),
        }
    }
}

/// A failed Invoke call: its class, its message with the throttle's reason (a reserved
/// concurrency exhausted, the account's, a rate), and Lambda's `retryAfterSeconds`.
fn invoke_failed(function: &str, e: &SdkError<InvokeError>) -> TaskEnd {
    let mut message = format!("Invoke {function}: {}", DisplayErrorContext(e));
    let mut retry_after = None;
    if let Some(InvokeError::TooManyRequestsException(t)) = e.as_service_error() {
        if let Some(reason) = &t.reason {
            message.push_str(&format!(" (reason {})", reason.as_str()));
        }
        retry_after = t
            .retry_after_seconds
            .as_deref()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| std::time::Duration::from_secs_f64(s.min(900.0)));
    }
    TaskEnd {
        retry_after,
        ..TaskEnd::of(Outcome::Failed {
            class: classify::lambda_invoke_error(e),
            message,
        })
    }
}

/// A function error (`{"errorType", "errorMessage"}` as Lambda returns it, from an Invoke's
/// answer or an invocation record's `responsePayload`), tolerating any body; `raw` is the
/// body as text, shown when it has no `errorMessage`.
pub fn function_error(v: &serde_json::Value, raw: &[u8]) -> TaskEnd {
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let error_type = field("errorType").unwrap_or_else(|| "Unhandled".into());
    let message = field("errorMessage")
        .unwrap_or_else(|| String::from_utf8_lossy(raw).chars().take(1000).collect());
    let (class, retry_after) = classify::function_error(&error_type);
    let message = if classify::is_response_too_large(&error_type) {
        format!(
            "{error_type}: {message} (the job's result is over Lambda's response limit: keep it in S3 with the claim-check, claim_check.prefix on the function)"
        )
    } else {
        format!("{error_type}: {message}")
    };
    TaskEnd {
        outcome: Outcome::Failed { class, message },
        exit_code: None,
        stopped_reason: Some(error_type),
        retry_after,
        reported: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &[u8]) -> (ErrorClass, String, Option<String>) {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let end = function_error(&v, body);
        match end.outcome {
            Outcome::Failed { class, message } => (class, message, end.stopped_reason),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn function_error_bodies() {
        assert_eq!(
            parts(br#"{"errorType":"E","errorMessage":"m"}"#),
            (ErrorClass::JobFailure, "E: m".into(), Some("E".into()))
        );
        assert_eq!(
            parts(b"plain"),
            (
                ErrorClass::JobFailure,
                "Unhandled: plain".into(),
                Some("Unhandled".into())
            )
        );
        let (class, _, reason) = parts(
            br#"{"errorType":"Runtime.OutOfMemory","errorMessage":"Runtime exited with error: signal: killed"}"#,
        );
        assert_eq!(class, ErrorClass::JobFailure);
        assert!(crate::routing::is_out_of_memory(&reason.unwrap()));
        let (class, message, _) = parts(
            br#"{"errorType":"Function.ResponseSizeTooLarge","errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes)."}"#,
        );
        assert_eq!(class, ErrorClass::Permanent);
        assert!(message.contains("claim-check"), "{message}");
        let (class, _, _) = parts(br#"{"errorType":"Sandbox.Timedout","errorMessage":"late"}"#);
        assert_eq!(class, ErrorClass::Timeout);
    }
}
