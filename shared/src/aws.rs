//! AWS client construction, in one place. Every client comes from the default chain
//! (environment, profile, container or instance role), so no credentials live in code or
//! configuration, and every client honours `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_<SERVICE>` (that is how the local stack points them at moto and at the
//! job's local Invoke-API server).
//!
//! Connections carry TCP keepalive (`aws.tcp_keepalive_secs`): a NAT gateway drops a flow
//! idle for 350 s, and a synchronous Invoke of a long job is idle on the wire for as long as
//! the job runs. The SDK's default connector sets no keepalive, so with it on every client
//! uses the SDK's connection pool built with one.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::shared::IntoShared;

use crate::config::AwsConfig;

/// The shared SDK configuration from the default chain, with `aws`'s connection settings.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    match aws.tcp_keepalive() {
        Some(idle) => loader.http_client(http_client(idle)).load().await,
        None => loader.load().await,
    }
}

/// The SDK configuration with the settings from the environment (`FLEET_TCP_KEEPALIVE_SECS`),
/// for processes without a configuration file; a malformed value falls back to the default
/// with a warning.
pub async fn sdk_config_from_env() -> SdkConfig {
    let aws = AwsConfig::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring the AWS connection settings");
        AwsConfig::default()
    });
    sdk_config(&aws).await
}

/// An HTTPS (and plain HTTP, for local endpoints) client whose sockets send TCP keepalive
/// probes after `idle` seconds without traffic.
fn http_client(idle: Duration) -> SharedHttpClient {
    let pool = aws_smithy_http_client::pool::ConnectionPool::builder()
        .tcp_keepalive(idle)
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
        .expect("the connection pool's settings are valid");
    aws_smithy_http_client::pool::Client::new(&pool)
        .expect("a pool without partitions has its anonymous one")
        .into_shared()
}

pub fn sqs(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

pub fn dynamodb(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}

/// A Lambda client for Invoke: the SDK's own retries are off (a re-sent synchronous Invoke
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

/// An S3 client (path-style addresses with a custom endpoint): [`fleet_job::s3::client`].
pub fn s3(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    fleet_job::s3::client(sdk)
}
