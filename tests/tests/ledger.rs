//! The ledger's conditional writes, against DynamoDB on the local stack and in memory.
#![allow(clippy::unwrap_used)]

use fleet_shared::ids::JobId;
use fleet_shared::ledger::dynamo::{DynamoLedger, PutRequestOutcome};
use fleet_shared::ledger::memory::MemoryLedger;
use fleet_shared::ledger::{NewJob, RequestRecord};
use fleet_shared::message::Target;
use fleet_shared::state::JobState;
use fleet_tests::{Stack, ledger_contract};

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_ledger_keeps_the_contract() {
    let stack = Stack::start().await;
    let ledger = DynamoLedger::new(stack.dynamodb(), "ledger-contract");
    assert!(ledger.create_table().await.unwrap(), "created");
    assert!(
        !ledger.create_table().await.unwrap(),
        "second call finds it"
    );
    ledger_contract::check(&ledger, "contract").await;
    ledger_contract::check_handoff(&ledger, "handoff").await;
}

#[tokio::test]
async fn memory_ledger_keeps_the_contract() {
    let ledger = MemoryLedger::new();
    ledger_contract::check(&ledger, "contract").await;
    ledger_contract::check_handoff(&ledger, "handoff").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_job_items() {
    let stack = Stack::start().await;
    let ledger = DynamoLedger::new(stack.dynamodb(), "ledger-requests");
    ledger.create_table().await.unwrap();
    let record = RequestRecord {
        request_id: "req".into(),
        job_type: "t".into(),
        total: 60,
        content_hash: "abc".into(),
        max_attempts: Some(2),
        target: Some(Target::Lambda),
        created_at_ms: 5,
    };
    assert_eq!(
        ledger.put_request(&record).await.unwrap(),
        PutRequestOutcome::Created
    );
    let other = RequestRecord {
        content_hash: "def".into(),
        ..record.clone()
    };
    assert_eq!(
        ledger.put_request(&other).await.unwrap(),
        PutRequestOutcome::Exists(record.clone())
    );
    assert_eq!(ledger.get_request("req").await.unwrap(), Some(record));
    assert_eq!(ledger.get_request("nope").await.unwrap(), None);

    // More than one BatchWriteItem call (25 items each).
    let jobs: Vec<NewJob> = (0..60)
        .map(|i| NewJob {
            job: JobId::new("req", i).unwrap(),
            job_type: "t".into(),
            payload_json: format!("{{\"i\":{i}}}"),
            max_attempts: Some(2),
            target: None,
            created_at_ms: 5,
        })
        .collect();
    ledger.put_new_jobs(&jobs).await.unwrap();
    let summaries = ledger.job_summaries("req").await.unwrap();
    assert_eq!(summaries.len(), 60);
    assert!(
        summaries
            .iter()
            .enumerate()
            .all(|(i, s)| s.index == i as u32 && s.state == JobState::Pending && s.attempts == 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_of_one_job_have_one_winner() {
    // DynamoDB evaluates a condition and writes atomically; the local endpoint must too (see
    // deploy/local/moto_server.py), or two replicas could both run a job.
    let stack = Stack::start().await;
    let ledger = std::sync::Arc::new(DynamoLedger::new(stack.dynamodb(), "ledger-race"));
    ledger.create_table().await.unwrap();
    for index in 0..10u32 {
        let mut tasks = tokio::task::JoinSet::new();
        for owner in 0..16 {
            let ledger = ledger.clone();
            tasks.spawn(async move {
                let job = JobId::new("race", index).unwrap();
                let owner = format!("o{owner}");
                let req = fleet_shared::ledger::ClaimRequest {
                    job: &job,
                    job_type: "t",
                    payload_json: "{}",
                    max_attempts: None,
                    owner: &owner,
                    now_ms: 1_000,
                    lease_ms: 60_000,
                    skew_ms: 0,
                    enqueued_at_ms: 0,
                };
                fleet_shared::ledger::Ledger::claim(ledger.as_ref(), &req)
                    .await
                    .unwrap()
            });
        }
        let claims = tasks.join_all().await;
        let winners: Vec<_> = claims
            .iter()
            .filter_map(|c| match c {
                fleet_shared::ledger::Claim::Claimed(l) => Some(l.fence),
                _ => None,
            })
            .collect();
        assert_eq!(winners, vec![1], "job {index}: {claims:?}");
    }
}

/// With `ledger.ttl_days`, `init` turns the table's TTL on, and every finished job (succeeded,
/// failed, cancelled) and every request gets `expires_at`; a redriven job loses it.
#[tokio::test(flavor = "multi_thread")]
async fn finished_items_expire_after_the_configured_days() {
    use std::collections::HashMap;
    use std::time::Duration;

    use aws_sdk_dynamodb::types::AttributeValue;
    use serde_json::json;

    let stack = Stack::start().await;
    let ttl = [("FLEET_LEDGER_TTL_DAYS", "3")];
    let three_days = 3 * 24 * 3600;
    let out = stack.run(fleet_tests::bin("fleet-worker"), &["init"], &ttl);
    assert!(out.status.success(), "{}", out.stderr);
    let described = stack
        .dynamodb()
        .describe_time_to_live()
        .table_name(&stack.names.table)
        .send()
        .await
        .unwrap();
    let d = described.time_to_live_description().unwrap();
    assert_eq!(d.attribute_name(), Some("expires_at"));

    let submit = |request: serde_json::Value| {
        let path = stack
            .dir
            .path()
            .join(format!("{}.json", request["request_id"].as_str().unwrap()));
        std::fs::write(&path, request.to_string()).unwrap();
        let out = stack.run(
            fleet_tests::bin("fleet-producer"),
            &["submit", path.to_str().unwrap()],
            &ttl,
        );
        assert!(out.status.success(), "{}", out.stderr);
    };
    let num = |item: &HashMap<String, AttributeValue>, k: &str| -> Option<u64> {
        item.get(k).map(|v| v.as_n().unwrap().parse().unwrap())
    };
    let item = |items: &[HashMap<String, AttributeValue>], pk: &str, sk: &str| {
        items
            .iter()
            .find(|i| i["pk"].as_s().unwrap() == pk && i["sk"].as_s().unwrap() == sk)
            .cloned()
            .unwrap()
    };

    submit(json!({"request_id": "ttl-1", "job_type": "test",
        "jobs": [{}, {"fail": true}], "options": {"max_attempts": 1}}));
    let job = stack.testjob(&[]).await;
    let worker = stack.worker("w", &job, &ttl);
    stack.wait_done("ttl-1", Duration::from_secs(60)).await;
    drop(worker);
    let items = stack.table_items().await;
    let request = item(&items, "R#ttl-1", "R");
    assert_eq!(
        num(&request, "expires_at"),
        Some(num(&request, "created_at").unwrap() / 1000 + three_days)
    );
    for sk in ["J#000000000", "J#000000001"] {
        let j = item(&items, "R#ttl-1", sk);
        assert_eq!(
            num(&j, "expires_at"),
            Some(num(&j, "finished_at").unwrap() / 1000 + three_days),
            "{sk}"
        );
    }

    // A redriven job is unfinished again: it must not expire.
    let out = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["dlq", "redrive", "--request", "ttl-1"],
        &ttl,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let redriven = item(&stack.table_items().await, "R#ttl-1", "J#000000001");
    assert_eq!(redriven["state"].as_s().unwrap(), "PENDING");
    assert_eq!(num(&redriven, "expires_at"), None);

    // Cancelled jobs expire too.
    submit(json!({"request_id": "ttl-2", "job_type": "test", "jobs": [{}]}));
    let out = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["cancel", "ttl-2"],
        &ttl,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let cancelled = item(&stack.table_items().await, "R#ttl-2", "J#000000000");
    assert_eq!(cancelled["state"].as_s().unwrap(), "CANCELLED");
    assert_eq!(
        num(&cancelled, "expires_at"),
        Some(num(&cancelled, "finished_at").unwrap() / 1000 + three_days)
    );
}
