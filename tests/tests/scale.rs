//! Request operations at scale, on the local stack: what `status`, `cancel` and the
//! dead-letter commands cost does not grow with the request (every AWS call counted by an
//! SDK interceptor), and results too large for the ledger are kept whole.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleet_producer::Producer;
use fleet_shared::config::Config;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::queue::sqs::SqsQueue;
use fleet_tests::calls::{self, CallCounter, Calls};
use fleet_tests::{Stack, bin, jobs, wait_for};
use serde_json::{Value, json};

/// The producer's library (what the `fleet-producer` binary runs), its calls counted.
async fn counted_producer(stack: &Stack, counter: &Arc<CallCounter>) -> Producer {
    let ledger = DynamoLedger::open(
        calls::dynamodb(&stack.sdk, counter),
        &stack.names.table,
        Config::default().ledger.index_shards,
    )
    .await
    .unwrap();
    let sqs = calls::sqs(&stack.sdk, counter);
    let queue = SqsQueue::new(sqs.clone(), stack.queue_url(&stack.names.queue).await);
    let dlq = SqsQueue::new(sqs, stack.queue_url(&stack.names.dlq).await);
    Producer::new(ledger, queue, Arc::new(Config::default())).with_dead_letters(dlq)
}

fn ops(calls: &Calls, service: &str) -> Vec<String> {
    calls
        .keys()
        .filter(|(s, _)| s == service)
        .map(|(_, o)| o.clone())
        .collect()
}

const WRITES: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

fn writes(calls: &Calls) -> u64 {
    calls
        .iter()
        .filter(|((s, o), _)| s == "DynamoDB" && WRITES.contains(&o.as_str()))
        .map(|(_, v)| *v)
        .sum()
}

/// Messages the queue holds in flight (received and not yet visible again).
async fn in_flight(stack: &Stack, queue: &str) -> u64 {
    let out = stack
        .sqs()
        .get_queue_attributes()
        .queue_url(stack.queue_url(queue).await)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .unwrap();
    out.attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_cancel_of_a_20000_job_request_cost_a_bounded_number_of_calls() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let small =
        json!({"request_id": "small", "job_type": "test", "jobs": jobs(200, |_| json!({}))});
    assert!(stack.submit(&small).status.success());
    let large = json!({"request_id": "large", "job_type": "test",
        "jobs": jobs(20_000, |_| json!({"sleep_ms": 20}))});
    let out = stack.submit(&large);
    assert!(out.status.success(), "{}", out.stderr);
    let _worker = stack.worker("w0", &job, &[]);
    stack.wait_done("small", Duration::from_secs(120)).await;
    wait_for(
        "some of the large request done",
        Duration::from_secs(120),
        || async {
            let s = stack.status("large");
            (s.count("SUCCEEDED") > 0).then_some(())
        },
    )
    .await;

    // `status` reads the same items for 200 jobs and for 20,000: the request item and its
    // counter items.
    let counter = Arc::new(CallCounter::default());
    let producer = counted_producer(&stack, &counter).await;
    let before = counter.snapshot();
    let s = producer.status("small").await.unwrap();
    let small_calls = counter.since(&before);
    assert!(s.done, "{s:?}");
    assert_eq!(s.count(fleet_shared::state::JobState::Succeeded), 200);
    let before = counter.snapshot();
    let l = producer.status("large").await.unwrap();
    let large_calls = counter.since(&before);
    assert_eq!(l.total, 20_000);
    assert!(!l.done, "{l:?}");
    assert_eq!(
        small_calls, large_calls,
        "the same reads whatever the job count"
    );
    assert!(
        calls::total(&large_calls, "DynamoDB") <= 3,
        "{large_calls:?}"
    );
    assert_eq!(ops(&large_calls, "SQS"), Vec::<String>::new());

    // The counters are exact once a request is done; one edited by hand is repaired by a
    // recount from the job items.
    let counter_key = fleet_shared::ledger::item::counter_key("small", "producer");
    stack
        .dynamodb()
        .update_item()
        .table_name(&stack.names.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(counter_key.pk),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(counter_key.sk),
        )
        .update_expression("ADD SUCCEEDED :n")
        .expression_attribute_values(":n", aws_sdk_dynamodb::types::AttributeValue::N("7".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(stack.status("small").count("SUCCEEDED"), 207);
    let out = stack.run(
        bin("fleet-producer"),
        &["status", "small", "--recount", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let recounted: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(recounted["states"]["SUCCEEDED"], 200, "{recounted}");
    assert_eq!(stack.status("small").count("SUCCEEDED"), 200);

    // `cancel` is one write, whatever the job count; no job starts after it returns.
    let before = counter.snapshot();
    let report = producer.cancel("large", false).await.unwrap();
    let returned_ms = fleet_shared::time::now_ms();
    let cancel_calls = counter.since(&before);
    assert_eq!(writes(&cancel_calls), 1, "{cancel_calls:?}");
    assert!(
        calls::total(&cancel_calls, "DynamoDB") <= 5,
        "{cancel_calls:?}"
    );
    assert_eq!(ops(&cancel_calls, "SQS"), Vec::<String>::new());
    assert_eq!(report.request_id, "large");

    // The jobs not started become CANCELLED as their messages arrive (the local endpoint
    // delivers a few hundred messages a minute from a queue this deep: watch the first
    // few hundred); the jobs that had started finish and are recorded.
    let started = || {
        job.executions()
            .into_iter()
            .filter(|e| e.job_id.starts_with("large:"))
            .collect::<Vec<_>>()
    };
    wait_for(
        "cancelled jobs, and every started job recorded",
        Duration::from_secs(300),
        || async {
            let s = stack.status("large");
            (s.count("CANCELLED") >= 300 && s.count("SUCCEEDED") as usize == started().len())
                .then_some(())
        },
    )
    .await;
    let late: Vec<_> = started()
        .into_iter()
        .filter(|e| e.started_ms > returned_ms)
        .collect();
    assert!(late.is_empty(), "started after cancel returned: {late:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_and_redrive_of_a_request_go_through_the_ledger_not_the_queue() {
    let stack = Stack::with_init().await;
    // 5,000 dead letters of other requests.
    let dlq_url = stack.queue_url(&stack.names.dlq).await;
    let sqs = stack.sqs();
    for batch in 0..500 {
        let entries: Vec<_> = (0..10)
            .map(|i| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(format!("{{\"other\":{}}}", batch * 10 + i))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(&dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(out.failed().is_empty());
    }
    let job = stack.testjob(&[]).await;
    let _worker = stack.worker("w0", &job, &[]);
    // Five jobs fail their only attempt (and would succeed on a second).
    let payload = |i: usize| {
        if i.is_multiple_of(2) {
            json!({"fail_times": 1})
        } else {
            json!({})
        }
    };
    let request = json!({"request_id": "dl", "job_type": "test", "jobs": jobs(10, payload),
        "options": {"max_attempts": 1}});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("dl", Duration::from_secs(120)).await;
    assert_eq!(status.count("FAILED"), 5, "{status:?}");
    wait_for("the 5 dead letters", Duration::from_secs(60), || async {
        (stack.queue_depth(&stack.names.dlq).await == 5_005).then_some(())
    })
    .await;

    // The binary lists them from the ledger; no message of the queue was received.
    let out = stack.run(
        bin("fleet-producer"),
        &["dlq", "list", "--request", "dl", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let mut listed: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("fails on attempt 1"),
                "{v}"
            );
            v["job_id"].as_str().unwrap().to_owned()
        })
        .collect();
    listed.sort();
    assert_eq!(listed, ["dl:0", "dl:2", "dl:4", "dl:6", "dl:8"]);
    assert_eq!(
        in_flight(&stack, &stack.names.dlq).await,
        0,
        "nothing received"
    );

    // The library makes no SQS call to list them, and reads a bounded number of items.
    let counter = Arc::new(CallCounter::default());
    let producer = counted_producer(&stack, &counter).await;
    let page = producer.failures_page("dl", None, 100).await.unwrap();
    assert_eq!(page.items.len(), 5);
    let listed_calls = counter.snapshot();
    assert_eq!(
        ops(&listed_calls, "SQS"),
        Vec::<String>::new(),
        "{listed_calls:?}"
    );

    // Redrive by the binary: the five run again and succeed; the dead-letter queue keeps
    // its messages (the archive) and none was received.
    let out = stack.run(
        bin("fleet-producer"),
        &[
            "dlq",
            "redrive",
            "--request",
            "dl",
            "--max-attempts",
            "1",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["redriven"], 5, "{report}");
    let status = stack.wait_done("dl", Duration::from_secs(120)).await;
    assert_eq!(status.count("SUCCEEDED"), 10, "{status:?}");
    assert_eq!(stack.queue_depth(&stack.names.dlq).await, 5_005);
    assert_eq!(
        in_flight(&stack, &stack.names.dlq).await,
        0,
        "nothing received"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_kb_result_is_kept_whole_and_without_a_prefix_the_job_fails_saying_why() {
    let stack = Stack::with_init().await;
    stack.create_bucket("results").await;
    let job = stack.testjob(&[]).await;
    let request = json!({"request_id": "big", "job_type": "test",
        "jobs": [{"result_bytes": 100_000}, {"result_bytes": 20_000}]});
    {
        let _worker = stack.worker(
            "w0",
            &job,
            &[("FLEET_CLAIM_CHECK_PREFIX", "s3://results/fleet/")],
        );
        assert!(stack.submit(&request).status.success());
        let status = stack.wait_done("big", Duration::from_secs(120)).await;
        assert_eq!(status.count("SUCCEEDED"), 2, "{status:?}");
    }
    for (index, fill) in [(0, 100_000), (1, 20_000)] {
        let out = stack.run(
            bin("fleet-producer"),
            &["result", &format!("big:{index}")],
            &[],
        );
        assert!(out.status.success(), "{}", out.stderr);
        let result: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(result["job_id"], format!("big:{index}"));
        assert_eq!(result["fill"].as_str().unwrap().len(), fill, "kept whole");
    }
    // Over the ledger's limit (32 KiB) it is in S3, under the claim-check prefix.
    let listed = stack
        .s3()
        .list_objects_v2()
        .bucket("results")
        .prefix("fleet/big/results/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("fleet/big/results/000000000-"),
        "{keys:?}"
    );

    // Without a claim-check prefix, the large result fails its job at once, saying why.
    let _worker = stack.worker("w1", &job, &[]);
    let request = json!({"request_id": "nowhere", "job_type": "test",
        "jobs": [{"result_bytes": 100_000}]});
    assert!(stack.submit(&request).status.success());
    let status = stack.wait_done("nowhere", Duration::from_secs(120)).await;
    assert_eq!(status.count("FAILED"), 1, "{status:?}");
    assert_eq!(status.attempts, 1, "a permanent failure, not retried");
    let out = stack.run(
        bin("fleet-producer"),
        &["dlq", "list", "--request", "nowhere", "--json"],
        &[],
    );
    let failure: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    let error = failure["error"].as_str().unwrap();
    assert!(
        error.contains("limits.max_result_bytes") && error.contains("claim_check.prefix"),
        "{failure}"
    );
    assert_eq!(failure["error_class"], "permanent", "{failure}");
}
