//! AWS client construction, in one place. Every client comes from the default chain
//! (environment, profile, container or instance role), so no credentials live in code or
//! configuration, and every client honours `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_<SERVICE>` (that is how the local stack points them at moto and at the
//! job's local Invoke-API server).

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::timeout::TimeoutConfig;

/// The shared SDK configuration from the default chain.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn sqs(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

pub fn dynamodb(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}

/// A Lambda client for synchronous Invoke: the SDK's own retries are off (a re-sent Invoke
/// would run the job twice; the worker decides about retries), and the read timeout should be
/// above the function's timeout (`LambdaConfig::read_timeout`) so a long job is never cut off
/// by the client.
pub fn lambda_for_invoke(sdk: &SdkConfig, read_timeout: Duration) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(read_timeout)
                .build(),
        )
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}
