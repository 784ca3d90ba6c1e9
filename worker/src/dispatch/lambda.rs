//! Lambda dispatcher: a synchronous Invoke per attempt. The client has the SDK's retries off
//! and a read timeout above the function timeout (see `fleet_shared::aws::lambda_for_invoke`),
//! so an Invoke is never re-sent behind the engine's back.

use std::sync::Arc;

use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use fleet_shared::config::Config;
use fleet_shared::message::JobEvent;

use super::{Dispatcher, Outcome};
use crate::classify::{self, ErrorClass};

pub struct LambdaDispatcher {
    client: aws_sdk_lambda::Client,
    config: Arc<Config>,
}

impl LambdaDispatcher {
    pub fn new(client: aws_sdk_lambda::Client, config: Arc<Config>) -> Self {
        Self { client, config }
    }
}

impl Dispatcher for LambdaDispatcher {
    fn target(&self) -> &'static str {
        "lambda"
    }

    async fn dispatch(&self, event: &JobEvent) -> Outcome {
        let Some(function) = self.config.function_for(&event.job_type) else {
            return Outcome::Failed {
                class: ErrorClass::Permanent,
                message: format!(
                    "no Lambda function is configured for job type {:?} (set lambda.function or job_types.{}.function)",
                    event.job_type, event.job_type
                ),
            };
        };
        let payload = match serde_json::to_vec(event) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    class: ErrorClass::Permanent,
                    message: format!("cannot encode the event: {e}"),
                };
            }
        };
        match self
            .client
            .invoke()
            .function_name(function)
            .payload(Blob::new(payload))
            .send()
            .await
        {
            Ok(out) => {
                let body = out.payload.map(Blob::into_inner).unwrap_or_default();
                match out.function_error {
                    None => Outcome::Succeeded { result: body },
                    Some(_) => {
                        let (error_type, message) = function_error_body(&body);
                        Outcome::Failed {
                            class: classify::function_error(&error_type),
                            message: format!("{error_type}: {message}"),
                        }
                    }
                }
            }
            Err(e) => Outcome::Failed {
                class: classify::lambda_invoke_error(&e),
                message: format!("Invoke {function}: {}", DisplayErrorContext(&e)),
            },
        }
    }
}

/// `errorType` and `errorMessage` of a function error's body, tolerating any body.
fn function_error_body(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    (
        field("errorType").unwrap_or_else(|| "Unhandled".into()),
        field("errorMessage")
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(1000).collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::function_error_body;

    #[test]
    fn function_error_bodies() {
        assert_eq!(
            function_error_body(br#"{"errorType":"E","errorMessage":"m"}"#),
            ("E".into(), "m".into())
        );
        assert_eq!(
            function_error_body(b"plain"),
            ("Unhandled".into(), "plain".into())
        );
    }
}
