//! An attempt's end from its invocation record (asynchronous Lambda dispatch): the job event
//! it was invoked with (which carries the attempt's fence) and how it ended, classified as a
//! synchronous Invoke's answer would be.

use fleet_shared::invocation_record::{
    EVENT_AGE_EXCEEDED, InvocationRecord, RETRIES_EXHAUSTED, SUCCESS,
};
use fleet_shared::message::JobEvent;

use super::{Outcome, TaskEnd};
use crate::classify::ErrorClass;

/// A record read: the event and the attempt's end, and Lambda's request id.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub event: JobEvent,
    pub end: TaskEnd,
    pub request_id: String,
}

/// Reads an invocation record; `Err` says why it is not one of Fleet's.
pub fn read(body: &str) -> Result<Record, String> {
    let r: InvocationRecord =
        serde_json::from_str(body).map_err(|e| format!("not an invocation record: {e}"))?;
    let event: JobEvent = serde_json::from_value(r.request_payload.clone())
        .map_err(|e| format!("the record's requestPayload is not a job event: {e}"))?;
    let function_error = r
        .response_context
        .as_ref()
        .and_then(|c| c.function_error.clone());
    let end = match r.request_context.condition.as_str() {
        SUCCESS if function_error.is_none() => TaskEnd::of(Outcome::Succeeded {
            result: match &r.response_payload {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(v) => serde_json::to_vec(v).unwrap_or_default(),
            },
        }),
        SUCCESS | RETRIES_EXHAUSTED => match (&function_error, &r.response_payload) {
            (Some(_), payload) => {
                let v = payload.clone().unwrap_or_default();
                let raw = serde_json::to_vec(&v).unwrap_or_default();
                super::lambda::function_error(&v, &raw)
            }
            (None, _) => TaskEnd::of(Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!(
                    "Lambda gave up on the invocation (status {}) without a function error",
                    r.response_context.as_ref().map_or(0, |c| c.status_code)
                ),
            }),
        },
        EVENT_AGE_EXCEEDED => TaskEnd::of(Outcome::Failed {
            class: ErrorClass::Throttled,
            message: "the event waited the function's maximum event age (lambda.max_event_age_secs) in Lambda's queue and never ran: the function's concurrency is exhausted".into(),
        }),
        other => return Err(format!("unknown invocation record condition {other:?}")),
    };
    // When it ended, as Lambda says: the attempt's duration for its cost.
    let ended_ms = aws_sdk_lambda::primitives::DateTime::from_str(
        &r.timestamp,
        aws_sdk_lambda::primitives::DateTimeFormat::DateTime,
    )
    .ok()
    .and_then(|t| u64::try_from(t.to_millis().ok()?).ok());
    let end = TaskEnd {
        reported: super::Reported {
            ended_ms,
            ..Default::default()
        },
        ..end
    };
    Ok(Record {
        event,
        end,
        request_id: r.request_context.request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> serde_json::Value {
        json!({"request_id": "r", "job_id": "r:00000001", "job_type": "t", "attempt": 2, "fence": 7, "payload": {"x": 1}})
    }

    fn record(condition: &str, error: Option<&str>, payload: Option<serde_json::Value>) -> String {
        let mut r = json!({
            "version": "1.0", "timestamp": "t",
            "requestContext": {"requestId": "q", "functionArn": "f", "condition": condition, "approximateInvokeCount": 1},
            "requestPayload": event(),
        });
        if let Some(p) = payload {
            r["responseContext"] = json!({"statusCode": 200, "executedVersion": "$LATEST"});
            if let Some(e) = error {
                r["responseContext"]["functionError"] = json!(e);
            }
            r["responsePayload"] = p;
        }
        r.to_string()
    }

    #[test]
    fn the_records_timestamp_is_the_attempts_end() {
        let r = record("Success", None, Some(json!(1))).replace(
            "\"timestamp\":\"t\"",
            "\"timestamp\":\"2026-12-02T12:00:00.250Z\"",
        );
        let read = read(&r).unwrap();
        assert_eq!(read.end.reported.ended_ms, Some(1_796_212_800_250));
        assert_eq!(
            read.end.reported.billed_ms, None,
            "a record has no billed duration"
        );
        let bad = read_unparsed_time();
        assert_eq!(bad, None, "an unreadable timestamp gives no end");
    }

    fn read_unparsed_time() -> Option<u64> {
        read(&record("Success", None, Some(json!(1))))
            .unwrap()
            .end
            .reported
            .ended_ms
    }

    #[test]
    fn every_condition() {
        let ok = read(&record("Success", None, Some(json!({"rows": 3})))).unwrap();
        assert_eq!(ok.event.fence, 7);
        assert_eq!(ok.event.attempt, 2);
        assert_eq!(ok.request_id, "q");
        assert_eq!(
            ok.end.outcome,
            Outcome::Succeeded {
                result: br#"{"rows":3}"#.to_vec()
            }
        );
        let empty = read(&record("Success", None, Some(json!(null)))).unwrap();
        assert_eq!(empty.end.outcome, Outcome::Succeeded { result: vec![] });
        let timeout = read(&record(
            "RetriesExhausted",
            Some("Unhandled"),
            Some(json!({"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 3.00 seconds"})),
        ))
        .unwrap();
        assert!(matches!(
            timeout.end.outcome,
            Outcome::Failed {
                class: ErrorClass::Timeout,
                ..
            }
        ));
        let oom = read(&record(
            "RetriesExhausted",
            Some("Unhandled"),
            Some(json!({"errorType": "Runtime.OutOfMemory", "errorMessage": "signal: killed"})),
        ))
        .unwrap();
        assert_eq!(
            oom.end.stopped_reason.as_deref(),
            Some("Runtime.OutOfMemory")
        );
        let failed = read(&record(
            "RetriesExhausted",
            Some("Unhandled"),
            Some(json!({"errorType": "RequestedFailure", "errorMessage": "no"})),
        ))
        .unwrap();
        assert_eq!(
            failed.end.outcome,
            Outcome::Failed {
                class: ErrorClass::JobFailure,
                message: "RequestedFailure: no".into()
            }
        );
        let aged = read(&record("EventAgeExceeded", None, None)).unwrap();
        assert!(matches!(
            aged.end.outcome,
            Outcome::Failed {
                class: ErrorClass::Throttled,
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_is_not_a_record() {
        assert!(read("{}").unwrap_err().contains("not an invocation record"));
        assert!(read("not json").is_err());
        let other = json!({"requestContext": {"condition": "Success"}, "requestPayload": {"a": 1}});
        assert!(
            read(&other.to_string())
                .unwrap_err()
                .contains("not a job event")
        );
        assert!(
            read(&record("Sideways", None, None))
                .unwrap_err()
                .contains("Sideways")
        );
    }
}
