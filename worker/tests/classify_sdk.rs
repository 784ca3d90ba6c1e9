//! Every way a Lambda Invoke can fail, in the shape the SDK really produces it, classified.
//! Service errors come from `aws-smithy-mocks` answering with Lambda's wire format; connection
//! failures and read timeouts come from real sockets on loopback.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use fleet_worker::classify::{ErrorClass, lambda_invoke_error};

/// A Lambda service error as Lambda sends it: status, `x-amzn-ErrorType`, JSON body.
fn lambda_error(status: u16, code: &'static str, message: &'static str) -> aws_sdk_lambda::Client {
    let rule = mock!(aws_sdk_lambda::Client::invoke).then_http_response(move || {
        let body = format!(r#"{{"Type":"User","message":"{message}"}}"#);
        let mut resp =
            HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        resp.headers_mut().insert("x-amzn-ErrorType", code);
        resp.headers_mut()
            .insert("content-type", "application/json");
        resp
    });
    mock_client!(aws_sdk_lambda, RuleMode::MatchAny, &[&rule], |c| c
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()))
}

async fn classify(client: &aws_sdk_lambda::Client) -> ErrorClass {
    let err = client
        .invoke()
        .function_name("job")
        .payload(Blob::new(b"{}".to_vec()))
        .send()
        .await
        .unwrap_err();
    lambda_invoke_error(&err)
}

#[tokio::test]
async fn service_errors() {
    let cases = [
        (
            429,
            "TooManyRequestsException",
            "Rate Exceeded.",
            ErrorClass::Throttled,
        ),
        (
            502,
            "EC2ThrottledException",
            "throttled by EC2",
            ErrorClass::Throttled,
        ),
        (500, "ServiceException", "internal", ErrorClass::Transient),
        (
            502,
            "ResourceNotReadyException",
            "not ready",
            ErrorClass::Transient,
        ),
        (
            409,
            "ResourceConflictException",
            "update in progress",
            ErrorClass::Transient,
        ),
        (
            503,
            "SomethingNewException",
            "unknown 5xx",
            ErrorClass::Transient,
        ),
        (
            404,
            "ResourceNotFoundException",
            "Function not found",
            ErrorClass::Permanent,
        ),
        (
            403,
            "AccessDeniedException",
            "not authorized",
            ErrorClass::Permanent,
        ),
        (
            403,
            "UnrecognizedClientException",
            "bad credentials",
            ErrorClass::Permanent,
        ),
        (
            413,
            "RequestTooLargeException",
            "too large",
            ErrorClass::Permanent,
        ),
        (
            400,
            "InvalidParameterValueException",
            "bad",
            ErrorClass::Permanent,
        ),
        (
            502,
            "KMSAccessDeniedException",
            "kms",
            ErrorClass::Permanent,
        ),
    ];
    for (status, code, message, want) in cases {
        let got = classify(&lambda_error(status, code, message)).await;
        assert_eq!(got, want, "{status} {code}");
    }
}

fn real_client(endpoint: &str, read_timeout: Duration) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "test"))
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .read_timeout(read_timeout)
                .build(),
        )
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind then drop: nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = real_client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    assert_eq!(classify(&client).await, ErrorClass::Transient);
}

#[tokio::test]
async fn a_read_timeout_is_a_timeout() {
    // Accepts the connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
        }
    });
    let client = real_client(&format!("http://{addr}"), Duration::from_millis(300));
    assert_eq!(classify(&client).await, ErrorClass::Timeout);
    hold.abort();
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_transient() {
    // Reads the request, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            drop(s);
        }
    });
    let client = real_client(&format!("http://{addr}"), Duration::from_secs(5));
    assert_eq!(classify(&client).await, ErrorClass::Transient);
    server.abort();
}
