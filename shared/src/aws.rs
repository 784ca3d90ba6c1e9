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

/// An S3 client. With a custom endpoint (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, as the
/// local stack sets), requests use path-style addresses (`http://host/bucket/key`), since a
/// local endpoint has no per-bucket host names.
pub fn s3(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
