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
