//! Ledger and queue errors keep the class of the SDK error they come from, and the retry
//! that commits a replica's changes tries again only what can succeed again: DynamoDB
//! answering with its own wire format (status, `__type`), through `aws-smithy-mocks`, with
//! the SDK's own retries off so that every call the mock sees is one the ledger made.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use fleet_shared::error::ErrorClass;
use fleet_shared::ids::JobId;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::ledger::recorder::{Live, Recorder};
use fleet_shared::ledger::{Change, Ledger, LedgerError, RequestLedger, item};
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::queue::{JobQueue, QueueError};
use fleet_shared::state::JobState;
use fleet_shared::time::Clock;

/// A DynamoDB error body, as DynamoDB sends it.
fn dynamo_body(code: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"from the mock"}}"#
    ))
}

fn dynamo(rule: &Rule) -> DynamoLedger {
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[rule], |c| c
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()));
    DynamoLedger::new(client, "ledger")
}

/// TransactWriteItems answering `status`/`code` every time.
fn transact_failing(status: u16, code: &str) -> Rule {
    let body = dynamo_body(code);
    mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .http_status(status, body)
        .repeatedly()
        .build()
}

/// TransactWriteItems answering `status`/`code` once, then succeeding.
fn transact_failing_once(status: u16, code: &str) -> Rule {
    let body = dynamo_body(code);
    mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .http_status(status, body)
        .output(|| TransactWriteItemsOutput::builder().build())
        .repeatedly()
        .build()
}

fn cancel() -> Change {
    let job = JobId::new("r", 1).unwrap();
    Change::CancelWaiting {
        key: item::job_key(&job, 1),
        job,
        from: JobState::Pending,
        now_ms: 1_000,
    }
}

/// Commits one change through a replica's recorder (which retries what is retryable).
async fn record(ledger: DynamoLedger) -> Result<(), LedgerError> {
    let (recorder, handle) = Recorder::spawn(
        Arc::new(ledger),
        "replica-a",
        Arc::new(Live::default()),
        Clock::tokio(),
    );
    let r = tokio::time::timeout(Duration::from_secs(5), recorder.commit(cancel()))
        .await
        .unwrap();
    handle.finish().await;
    r
}

#[tokio::test]
async fn sdk_errors_keep_their_class() {
    let cases = [
        (400, "ValidationException", ErrorClass::Permanent),
        (400, "AccessDeniedException", ErrorClass::Permanent),
        (
            400,
            "ProvisionedThroughputExceededException",
            ErrorClass::Throttled,
        ),
        (400, "ThrottlingException", ErrorClass::Throttled),
        (500, "InternalServerError", ErrorClass::Transient),
        (503, "ServiceUnavailable", ErrorClass::Transient),
    ];
    for (status, code, class) in cases {
        let rule = mock!(aws_sdk_dynamodb::Client::get_item)
            .sequence()
            .http_status(status, dynamo_body(code))
            .repeatedly()
            .build();
        let err = dynamo(&rule).get_request("r").await.unwrap_err();
        assert_eq!(err.class(), class, "{code}: {err}");
        assert!(
            matches!(&err, LedgerError::Aws { op: "GetItem", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(code), "{err}");
        assert_eq!(rule.num_calls(), 1, "{code}");
    }
}

#[tokio::test]
async fn a_transaction_dynamodb_refuses_is_permanent_and_answered_as_such() {
    let rule = transact_failing(400, "ValidationException");
    let results = dynamo(&rule).commit("0", &[cancel()], &[]).await.unwrap();
    assert_eq!(results.len(), 1);
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(!err.class().is_retryable());
}

#[tokio::test]
async fn a_throttled_or_failed_transaction_is_an_error_of_its_class() {
    for (status, code, class) in [
        (
            400,
            "ProvisionedThroughputExceededException",
            ErrorClass::Throttled,
        ),
        (500, "InternalServerError", ErrorClass::Transient),
    ] {
        let rule = transact_failing(status, code);
        let err = dynamo(&rule)
            .commit("0", &[cancel()], &[])
            .await
            .unwrap_err();
        assert_eq!(err.class(), class, "{code}: {err}");
        assert!(err.class().is_retryable());
        assert_eq!(rule.num_calls(), 1, "the ledger itself does not retry");
    }
}

#[tokio::test]
async fn the_recorder_gives_up_at_once_on_a_permanent_error() {
    // A change DynamoDB refuses as invalid, and calls refused whole (no such table, no
    // right to write it): each is answered after one call.
    for (status, code) in [
        (400, "ValidationException"),
        (400, "AccessDeniedException"),
        (400, "ResourceNotFoundException"),
    ] {
        let rule = transact_failing(status, code);
        let err = record(dynamo(&rule)).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Permanent, "{code}: {err}");
        assert!(err.to_string().contains(code), "{err}");
        assert_eq!(
            rule.num_calls(),
            1,
            "{code}: a permanent error is not retried"
        );
    }
}

#[tokio::test]
async fn the_recorder_retries_throttling_and_server_errors() {
    for (status, code) in [
        (400, "ProvisionedThroughputExceededException"),
        (500, "InternalServerError"),
    ] {
        let rule = transact_failing_once(status, code);
        record(dynamo(&rule)).await.unwrap();
        assert_eq!(rule.num_calls(), 2, "{code}: retried once, then written");
    }
}

fn sqs(rule: &Rule) -> SqsQueue {
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, &[rule], |c| c
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled()));
    SqsQueue::new(client, "https://sqs.local/1/q")
}

#[tokio::test]
async fn queue_errors_keep_their_class() {
    for (status, code, class) in [
        (400, "RequestThrottled", ErrorClass::Throttled),
        (500, "InternalError", ErrorClass::Transient),
        (400, "InvalidParameterValue", ErrorClass::Permanent),
        (403, "AccessDenied", ErrorClass::Permanent),
    ] {
        let body = Some(format!(
            r#"{{"__type":"com.amazonaws.sqs#{code}","message":"from the mock"}}"#
        ));
        let rule = mock!(aws_sdk_sqs::Client::send_message)
            .sequence()
            .http_status(status, body)
            .repeatedly()
            .build();
        let err = sqs(&rule).send("{}", Duration::ZERO).await.unwrap_err();
        assert_eq!(err.class(), class, "{code}: {err}");
        assert!(
            matches!(
                &err,
                QueueError::Aws {
                    op: "SendMessage",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        QueueError::NoSuchQueue("q".into()).class(),
        ErrorClass::Permanent
    );
}
