//! Lambda's invocation record: what a function's destination receives after an
//! asynchronous invocation, in the format Lambda documents ("Capturing records of Lambda
//! asynchronous invocations"). The worker reads it from the outcomes queue; the local
//! Invoke-API server writes it there, playing Lambda's part on one machine.
//!
//! ```json
//! {"version": "1.0", "timestamp": "2026-12-02T12:00:00.000Z",
//!  "requestContext": {"requestId": "…", "functionArn": "arn:aws:lambda:…:function:job:$LATEST",
//!                     "condition": "Success", "approximateInvokeCount": 1},
//!  "requestPayload": {"request_id": "…", "job_id": "…", "fence": 3, …},
//!  "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
//!  "responsePayload": {"rows": 10}}
//! ```
//!
//! `condition` is `Success`, `RetriesExhausted` (the function failed; `responseContext`
//! has `functionError` and `responsePayload` the `errorType` and `errorMessage`) or
//! `EventAgeExceeded` (the event waited the maximum event age and never ran: no response).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub timestamp: String,
    pub request_context: RequestContext,
    /// The event as it was invoked (for Fleet, the job event with its fence).
    pub request_payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_context: Option<ResponseContext>,
    /// What the function returned, or its error document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_payload: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub function_arn: String,
    pub condition: String,
    #[serde(default)]
    pub approximate_invoke_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub executed_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_error: Option<String>,
}

/// The largest job event handed to Lambda asynchronously (a larger one runs on ECS): an
/// invocation record carries the event and the response, and the record must fit in an SQS
/// message (256 KiB, the limit before 2025 that every region and destination honours).
pub const EVENT_MAX_BYTES: usize = 128 * 1024;
/// The largest result a job returns inline in an invocation record; the job runtime keeps a
/// larger one in S3 (the claim-check) and returns its reference.
pub const RESULT_MAX_BYTES: usize = 120 * 1024;

/// `requestContext.condition` of a successful invocation.
pub const SUCCESS: &str = "Success";
/// The function failed (every retry Lambda was allowed; Fleet allows none).
pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
/// The event was dropped unrun after the maximum event age.
pub const EVENT_AGE_EXCEEDED: &str = "EventAgeExceeded";

impl InvocationRecord {
    /// A record of an invocation that ran: `Ok` the result, `Err` the function's error
    /// document.
    pub fn ran(
        request_id: &str,
        function_arn: &str,
        request_payload: Value,
        result: Result<Value, Value>,
        timestamp: String,
    ) -> Self {
        let (condition, function_error, payload) = match result {
            Ok(v) => (SUCCESS, None, v),
            Err(e) => (RETRIES_EXHAUSTED, Some("Unhandled".to_owned()), e),
        };
        InvocationRecord {
            version: "1.0".into(),
            timestamp,
            request_context: RequestContext {
                request_id: request_id.to_owned(),
                function_arn: function_arn.to_owned(),
                condition: condition.to_owned(),
                approximate_invoke_count: 1,
            },
            request_payload,
            response_context: Some(ResponseContext {
                status_code: 200,
                executed_version: "$LATEST".into(),
                function_error,
            }),
            response_payload: Some(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_example() {
        // The failure example of Lambda's documentation.
        let doc = r#"{
            "version": "1.0",
            "timestamp": "2019-11-14T18:16:05.568Z",
            "requestContext": {
                "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:my-function:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": {"ORDER_IDS": ["9e07af03ce31a4a8"]},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "RequestId: e4b46cbf Process exited before completing request"}
        }"#;
        let r: InvocationRecord = serde_json::from_str(doc).unwrap();
        assert_eq!(r.request_context.condition, RETRIES_EXHAUSTED);
        assert_eq!(r.request_context.approximate_invoke_count, 3);
        assert_eq!(
            r.response_context.unwrap().function_error.as_deref(),
            Some("Unhandled")
        );
        let back = InvocationRecord::ran(
            "id",
            "arn",
            serde_json::json!({"a": 1}),
            Ok(serde_json::json!({"rows": 2})),
            "t".into(),
        );
        let text = serde_json::to_string(&back).unwrap();
        assert!(
            text.contains(r#""requestContext":{"requestId":"id""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<InvocationRecord>(&text).unwrap(),
            back
        );
    }
}
