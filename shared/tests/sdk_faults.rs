//! Behaviours the local endpoint cannot produce, with SDK-level fakes: SQS reporting some
//! batch entries as failed, and DynamoDB returning unprocessed items.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::types::WriteRequest;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use fleet_shared::ids::JobId;
use fleet_shared::ledger::NewJob;
use fleet_shared::ledger::RequestLedger;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::queue::QueueError;
use fleet_shared::queue::sqs::SqsQueue;

type Calls = Arc<Mutex<Vec<Vec<String>>>>;

/// A SendMessageBatch fake: records each call's bodies, and fails the entries `fail(call,
/// index)` picks (`sender_fault` as given).
fn sqs_fake(
    fail: impl Fn(usize, usize) -> Option<bool> + Send + Sync + 'static,
) -> (aws_sdk_sqs::Client, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let rule = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(move |req| {
        let mut seen = seen.lock().unwrap();
        let call = seen.len();
        seen.push(
            req.entries()
                .iter()
                .map(|e| e.message_body().to_owned())
                .collect(),
        );
        let mut out = SendMessageBatchOutput::builder()
            .set_failed(Some(vec![]))
            .set_successful(Some(vec![]));
        for (i, e) in req.entries().iter().enumerate() {
            out = match fail(call, i) {
                Some(sender_fault) => out.failed(
                    BatchResultErrorEntry::builder()
                        .id(e.id())
                        .code(if sender_fault {
                            "InvalidMessageContents"
                        } else {
                            "InternalError"
                        })
                        .sender_fault(sender_fault)
                        .build()
                        .unwrap(),
                ),
                None => out.successful(
                    SendMessageBatchResultEntry::builder()
                        .id(e.id())
                        .message_id(format!("m{call}-{i}"))
                        .md5_of_message_body("x")
                        .build()
                        .unwrap(),
                ),
            };
        }
        out.build().unwrap()
    });
    (
        mock_client!(aws_sdk_sqs, RuleMode::MatchAny, &[&rule]),
        calls,
    )
}

fn bodies(n: usize, size: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i:04}{}", "x".repeat(size)))
        .collect()
}

#[tokio::test]
async fn batches_hold_ten_messages_and_entries_failed_by_sqs_are_sent_again() {
    // The first call's entries 3 and 7 fail through no fault of ours.
    let (client, calls) = sqs_fake(|call, i| (call == 0 && (i == 3 || i == 7)).then_some(false));
    let queue = SqsQueue::new(client, "https://sqs.local/1/q");
    let sent = bodies(25, 10);
    queue.send_batched(&sent).await.unwrap();

    let calls = calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| c.len() <= 10));
    let first: Vec<usize> = calls.iter().map(Vec::len).take(3).collect();
    assert_eq!(
        first.iter().sum::<usize>(),
        25,
        "three batches of the 25 bodies: {first:?}"
    );
    assert_eq!(calls.len(), 4, "one more call for the two failed entries");
    let failed_first_time = vec![calls[0][3].clone(), calls[0][7].clone()];
    assert_eq!(calls[3], failed_first_time);
    let mut delivered: Vec<String> = calls.concat();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, sent);
}

#[tokio::test]
async fn batches_stay_under_the_batch_size_limit() {
    let (client, calls) = sqs_fake(|_, _| None);
    let queue = SqsQueue::new(client, "https://sqs.local/1/q");
    queue.send_batched(&bodies(5, 100 * 1024)).await.unwrap();
    let mut sizes: Vec<usize> = calls.lock().unwrap().iter().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![1, 2, 2],
        "at most two 100 KiB bodies fit in 256 KiB"
    );
}

#[tokio::test]
async fn a_body_sqs_refuses_is_an_error_not_a_retry() {
    let (client, calls) = sqs_fake(|_, i| (i == 0).then_some(true));
    let queue = SqsQueue::new(client, "https://sqs.local/1/q");
    let err = queue.send_batched(&bodies(3, 10)).await.unwrap_err();
    assert!(matches!(err, QueueError::SendFailed { .. }), "{err}");
    assert!(err.to_string().contains("InvalidMessageContents"));
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unprocessed_job_items_are_written_again() {
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen = calls.clone();
    let rule = mock!(aws_sdk_dynamodb::Client::batch_write_item).then_compute_output(move |req| {
        let requests: Vec<WriteRequest> = req.request_items().unwrap()["ledger"].clone();
        let sks: Vec<String> = requests
            .iter()
            .map(|w| {
                w.put_request().unwrap().item()["sk"]
                    .as_s()
                    .unwrap()
                    .clone()
            })
            .collect();
        let mut seen = seen.lock().unwrap();
        seen.push(sks);
        // The first call leaves its last five items unprocessed.
        let unprocessed: Vec<WriteRequest> = if seen.len() == 1 {
            requests[requests.len() - 5..].to_vec()
        } else {
            vec![]
        };
        let mut out = BatchWriteItemOutput::builder();
        if !unprocessed.is_empty() {
            out = out.unprocessed_items("ledger", unprocessed);
        }
        out.build()
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&rule]);
    let ledger = DynamoLedger::new(client, "ledger");
    let jobs: Vec<NewJob> = (0..20)
        .map(|i| NewJob {
            key: fleet_shared::ledger::item::job_key(&JobId::new("r", i).unwrap(), 1),
            job: JobId::new("r", i).unwrap(),
            job_type: "t".into(),
            payload_json: "{}".into(),
            max_attempts: None,
            target: None,
            created_at_ms: 0,
            held: false,
        })
        .collect();
    ledger.put_jobs(&jobs).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].len(), 20);
    assert_eq!(calls[1], calls[0][15..].to_vec());
}
