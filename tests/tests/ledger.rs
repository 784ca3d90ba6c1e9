//! The ledger's conditional writes, against DynamoDB on the local stack and in memory, the
//! items both leave, and the table's layout check.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use fleet_shared::ids::JobId;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::ledger::memory::MemoryLedger;
use fleet_shared::ledger::{
    LedgerError, NewJob, PutRequestOutcome, RequestLedger, RequestRecord, item,
};
use fleet_shared::message::Target;
use fleet_shared::state::JobState;
use fleet_tests::{Stack, ledger_contract};

type Item = std::collections::HashMap<String, AttributeValue>;

/// Items by key: job items, their satellites and release records.
fn by_key(items: Vec<Item>) -> BTreeMap<(String, String), Item> {
    items
        .into_iter()
        .filter_map(|i| {
            let pk = i.get("pk")?.as_s().ok()?.clone();
            let sk = i.get("sk")?.as_s().ok()?.clone();
            let release = pk.starts_with(item::RELEASE_PK_PREFIX);
            (pk.starts_with("J#") || pk.starts_with("D#") || release).then_some(((pk, sk), i))
        })
        .collect()
}

async fn open_new(stack: &Stack, table: &str) -> DynamoLedger {
    let mut ledger = DynamoLedger::new(stack.dynamodb(), table);
    assert!(ledger.create_table(16).await.unwrap(), "created");
    assert!(
        !ledger.create_table(16).await.unwrap(),
        "second call finds it"
    );
    DynamoLedger::open(stack.dynamodb(), table, 99)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_ledgers_keep_the_contract_and_leave_the_same_items() {
    let stack = Stack::start().await;
    let dynamo = open_new(&stack, "ledger-contract").await;
    assert_eq!(
        fleet_shared::ledger::Ledger::index_shards(&dynamo),
        16,
        "the table's layout item wins over the caller's default"
    );
    ledger_contract::check(&dynamo, "contract").await;
    ledger_contract::check_handoff(&dynamo, "handoff").await;
    ledger_contract::check_handed_and_buckets(&dynamo, "handed").await;
    ledger_contract::check_listings(&dynamo, "listed").await;
    ledger_contract::check_request_failure(&dynamo, "brittle").await;
    ledger_contract::check_window(&dynamo, "windowed").await;
    ledger_contract::check_finish(&dynamo, "finishing").await;
    ledger_contract::check_listing_and_series(&dynamo, "listing").await;

    let memory = MemoryLedger::new().with_index_shards(16);
    ledger_contract::check(&memory, "contract").await;
    ledger_contract::check_handoff(&memory, "handoff").await;
    ledger_contract::check_handed_and_buckets(&memory, "handed").await;
    ledger_contract::check_listings(&memory, "listed").await;
    ledger_contract::check_request_failure(&memory, "brittle").await;
    ledger_contract::check_window(&memory, "windowed").await;
    ledger_contract::check_finish(&memory, "finishing").await;
    ledger_contract::check_listing_and_series(&memory, "listing").await;

    let mut scanned = Vec::new();
    let mut start = None;
    loop {
        let out = stack
            .dynamodb()
            .scan()
            .table_name("ledger-contract")
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        scanned.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let real = by_key(scanned);
    let modelled = by_key(memory.items());
    assert_eq!(
        real.keys().collect::<Vec<_>>(),
        modelled.keys().collect::<Vec<_>>(),
        "the same items"
    );
    for (k, item) in &real {
        assert_eq!(Some(item), modelled.get(k), "item {k:?}");
        assert_eq!(
            item::item_size(item),
            item::item_size(&modelled[k]),
            "the model measures {k:?} as DynamoDB stores it"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_job_items() {
    let stack = Stack::start().await;
    let ledger = open_new(&stack, "ledger-requests").await;
    let record = RequestRecord {
        content_hash: "abc".into(),
        max_attempts: Some(2),
        target: Some(Target::Lambda),
        job_shards: 3,
        ..RequestRecord::new("req", "t", 60, 5)
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
        PutRequestOutcome::Exists(Box::new(record.clone()))
    );
    assert_eq!(ledger.get_request("req").await.unwrap(), Some(record));
    assert_eq!(ledger.get_request("nope").await.unwrap(), None);

    // More than one BatchWriteItem call (25 items each), one payload too big to be inline.
    let jobs: Vec<NewJob> = (0..60)
        .map(|i| {
            let job = JobId::new("req", i).unwrap();
            NewJob {
                key: item::job_key(&job, 3),
                job,
                job_type: "t".into(),
                payload_json: if i == 7 {
                    format!("{{\"big\":\"{}\"}}", "x".repeat(5_000))
                } else {
                    format!("{{\"i\":{i}}}")
                },
                max_attempts: Some(2),
                target: None,
                created_at_ms: 5,
                held: false,
            }
        })
        .collect();
    ledger.put_jobs(&jobs).await.unwrap();
    let keys: Vec<_> = jobs.iter().map(|j| j.key.clone()).collect();
    let states = ledger.job_states(&keys).await.unwrap();
    assert!(states.iter().all(|s| *s == Some(JobState::Pending)));
    let (seven, payload) = ledger.job(&jobs[7].key).await.unwrap().unwrap();
    assert_eq!(seven.payload, item::PayloadAt::Apart);
    assert_eq!(payload, jobs[7].payload_json);

    // Listing: every job once, a page at a time, in partition order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = ledger
            .jobs_page("req", 3, cursor.as_deref(), 7)
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|j| j.index));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..60).collect::<Vec<_>>());

    // The watermark only moves up; cancel is one write on the request item.
    ledger.set_written("req", 40).await.unwrap();
    ledger.set_written("req", 20).await.unwrap();
    assert_eq!(
        ledger.get_request("req").await.unwrap().unwrap().written,
        40
    );
    assert!(ledger.cancel_request("req", 9, true).await.unwrap());
    assert!(!ledger.cancel_request("nope", 9, true).await.unwrap());
    let r = ledger.get_request("req").await.unwrap().unwrap();
    assert_eq!((r.cancelled_at_ms, r.stop_running), (Some(9), true));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_of_one_job_have_one_winner() {
    // DynamoDB evaluates a condition and writes atomically; the local endpoint must too (see
    // deploy/local/moto_server.py), or two replicas could both run a job.
    let stack = Stack::start().await;
    let ledger = std::sync::Arc::new(open_new(&stack, "ledger-race").await);
    for index in 0..10u32 {
        let mut tasks = tokio::task::JoinSet::new();
        for owner in 0..16 {
            let ledger = ledger.clone();
            tasks.spawn(async move {
                let job = JobId::new("race", index).unwrap();
                let direct = owner % 2 == 0;
                let owner = format!("o{owner}");
                let req = fleet_shared::ledger::ClaimRequest {
                    job: &job,
                    shards: 4,
                    job_type: "t",
                    payload_json: "{}",
                    max_attempts: None,
                    owner: &owner,
                    now_ms: 1_000,
                    lease_ms: 60_000,
                    skew_ms: 0,
                    enqueued_at_ms: 0,
                    // Both ways in: create first, update first.
                    direct,
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

fn def(name: &str, t: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .unwrap()
}

fn key(name: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_of_another_layout_is_refused_with_what_to_do() {
    // The queues and a current table exist; the old table is another one.
    let stack = Stack::with_init().await;
    // The previous layout's table: the same keys, its lease-expiry index, no layout item.
    stack
        .dynamodb()
        .create_table()
        .table_name("old-ledger")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .attribute_definitions(def("sk", ScalarAttributeType::S))
        .attribute_definitions(def("lease_shard", ScalarAttributeType::S))
        .attribute_definitions(def("lease_until", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("lease-expiry")
                .key_schema(key("lease_shard", KeyType::Hash))
                .key_schema(key("lease_until", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let err = DynamoLedger::open(stack.dynamodb(), "old-ledger", 32)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Layout(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("layout 1") && text.contains("fleet-worker init"),
        "{text}"
    );
    // Nothing was written to it.
    let scanned = stack
        .dynamodb()
        .scan()
        .table_name("old-ledger")
        .send()
        .await
        .unwrap();
    assert_eq!(scanned.count(), 0);

    // A replica started on it stops at once with the same message.
    let out = stack.run(
        fleet_tests::bin("fleet-worker"),
        &["run"],
        &[
            ("FLEET_TABLE", "old-ledger"),
            ("FLEET_LAMBDA_FUNCTION", "job"),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("layout 1"), "{}", out.stderr);
    // And `init` does not take it over.
    let out = stack.run(
        fleet_tests::bin("fleet-worker"),
        &["init"],
        &[("FLEET_TABLE", "old-ledger")],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("layout 1"), "{}", out.stderr);

    // A table stamped by a newer layout is refused too.
    let mut ledger = DynamoLedger::new(stack.dynamodb(), "newer-ledger");
    ledger.create_table(8).await.unwrap();
    stack
        .dynamodb()
        .put_item()
        .table_name("newer-ledger")
        .item("pk", AttributeValue::S("FLEET".into()))
        .item("sk", AttributeValue::S("LAYOUT".into()))
        .item(
            "version",
            AttributeValue::N((fleet_shared::ledger::LAYOUT_VERSION + 1).to_string()),
        )
        .item("index_shards", AttributeValue::N("8".into()))
        .send()
        .await
        .unwrap();
    let err = DynamoLedger::open(stack.dynamodb(), "newer-ledger", 32)
        .await
        .unwrap_err()
        .to_string();
    let newer = format!("layout {}", fleet_shared::ledger::LAYOUT_VERSION + 1);
    assert!(err.contains(&newer) && err.contains("newer"), "{err}");
}

/// With `ledger.ttl_days`, `init` turns the table's TTL on, and every finished job (succeeded,
/// failed, cancelled) and every request gets `xa`; a redriven job loses it.
#[tokio::test(flavor = "multi_thread")]
async fn finished_items_expire_after_the_configured_days() {
    use std::collections::HashMap;
    use std::time::Duration;

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
    assert_eq!(d.attribute_name(), Some("xa"));

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
            .unwrap_or_else(|| panic!("no item {pk}/{sk}"))
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
        num(&request, "xa"),
        Some(num(&request, "created_at").unwrap() / 1000 + three_days)
    );
    for sk in ["000000000", "000000001"] {
        let j = item(&items, "J#ttl-1#0", sk);
        assert_eq!(
            num(&j, "xa"),
            Some(num(&j, "fa").unwrap() / 1000 + three_days),
            "{sk}"
        );
    }
    // The failed attempt's history expires with it.
    let h = item(&items, "D#ttl-1#0", "000000001#H");
    assert_eq!(
        num(&h, "xa"),
        num(&item(&items, "J#ttl-1#0", "000000001"), "xa")
    );

    // A redriven job is unfinished again: it must not expire.
    let out = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["dlq", "redrive", "--request", "ttl-1"],
        &ttl,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let redriven = item(&stack.table_items().await, "J#ttl-1#0", "000000001");
    assert_eq!(redriven["st"].as_s().unwrap(), "PENDING");
    assert_eq!(num(&redriven, "xa"), None);

    // Cancelled jobs expire too: cancelled while no replica runs, then cancelled by the
    // replica that receives the message.
    submit(json!({"request_id": "ttl-2", "job_type": "test", "jobs": [{}]}));
    let out = stack.run(
        fleet_tests::bin("fleet-producer"),
        &["cancel", "ttl-2"],
        &ttl,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let _worker = stack.worker("w2", &job, &ttl);
    let cancelled = fleet_tests::wait_for("ttl-2 cancelled", Duration::from_secs(60), || async {
        let items = stack.table_items().await;
        items
            .iter()
            .find(|i| {
                i["pk"].as_s().unwrap() == "J#ttl-2#0"
                    && i.get("st").and_then(|s| s.as_s().ok()).map(String::as_str)
                        == Some("CANCELLED")
            })
            .cloned()
    })
    .await;
    assert_eq!(
        num(&cancelled, "xa"),
        Some(num(&cancelled, "fa").unwrap() / 1000 + three_days)
    );
    assert!(
        job.executions()
            .iter()
            .all(|e| !e.job_id.starts_with("ttl-2")),
        "the cancelled job never ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn live_reports_reach_the_counts() {
    use fleet_shared::ledger::{Ledger, LiveReport};
    let stack = Stack::start().await;
    let ledger = open_new(&stack, "ledger-live").await;
    let report = |running, at_ms| LiveReport {
        request_id: "lr".into(),
        replica: "r1".into(),
        running,
        after_retry: 1,
        at_ms,
    };
    let now = fleet_shared::time::now_ms();
    let r = ledger.commit("5", &[], &[report(3, now)]).await.unwrap();
    assert!(r.is_empty());
    let c = ledger.counts("lr", now).await.unwrap();
    assert_eq!((c.running, c.running_after_retry), (3, 1), "{c:?}");
    // A report older than a minute is not counted.
    assert_eq!(ledger.counts("lr", now + 61_000).await.unwrap().running, 0);
}

/// The largest items the configuration allows: every id, name and text at its limit, the
/// longest history the configuration accepts filled and wrapped, the largest inline payload
/// and result. Every item stays under DynamoDB's 400 KB (the local endpoint refuses larger
/// items too), and the job item under 1 KB. Settings one step further are refused.
#[tokio::test(flavor = "multi_thread")]
async fn no_item_passes_400_kb_at_the_largest_settings_the_config_accepts() {
    use fleet_shared::config::{Config, ITEM_SAFE_BYTES};
    use fleet_shared::error::ErrorClass;
    use fleet_shared::ids::{MAX_JOB_TYPE_LEN, MAX_REQUEST_ID_LEN};
    use fleet_shared::ledger::{
        AttemptRecord, Change, Claim, ClaimRequest, Finish, Ledger, LiveReport,
    };

    let keep = (ITEM_SAFE_BYTES / item::HISTORY_ENTRY_MAX_BYTES) as u32;
    let mut config = Config::default();
    config.ledger.history_keep = keep;
    config.claim_check.inline_max_bytes = ITEM_SAFE_BYTES;
    config.limits.max_result_bytes = 256 * 1024;
    config
        .validate()
        .expect("the largest settings are accepted");
    for refused in [
        {
            let mut c = config.clone();
            c.ledger.history_keep = keep + 1;
            c
        },
        {
            let mut c = config.clone();
            c.claim_check.inline_max_bytes = ITEM_SAFE_BYTES + 1;
            c
        },
        {
            let mut c = config.clone();
            c.limits.max_message_bytes = ITEM_SAFE_BYTES + 1;
            c
        },
        {
            let mut c = config.clone();
            c.limits.max_result_bytes = 256 * 1024 + 1;
            c
        },
    ] {
        assert!(refused.validate().is_err(), "{refused:?}");
    }

    let stack = Stack::start().await;
    let ledger = open_new(&stack, &stack.names.table)
        .await
        .with_history_keep(keep);
    let rid = "r".repeat(MAX_REQUEST_ID_LEN);
    let job_type = "t".repeat(MAX_JOB_TYPE_LEN);
    let shards = 64;
    let record = RequestRecord {
        content_hash: "h".repeat(64),
        max_attempts: Some(100),
        target: Some(Target::Ecs),
        job_shards: shards,
        ..RequestRecord::new(&rid, &job_type, 999_999_999, 1)
    };
    ledger.put_request(&record).await.unwrap();
    let job = JobId::new(&rid, 999_999_998).unwrap();
    let key = item::job_key(&job, shards);
    // The largest payload kept in the ledger (a larger one goes to S3 or is refused).
    let payload = format!("{{\"p\":\"{}\"}}", "x".repeat(ITEM_SAFE_BYTES - 8));
    assert_eq!(payload.len(), ITEM_SAFE_BYTES);
    ledger
        .put_jobs(&[NewJob {
            job: job.clone(),
            key: key.clone(),
            job_type: job_type.clone(),
            payload_json: payload.clone(),
            max_attempts: Some(100),
            target: Some(Target::Ecs),
            created_at_ms: 1,
            held: false,
        }])
        .await
        .unwrap();

    let owner = "o".repeat(128);
    let long = "e".repeat(100_000);
    let attempts = keep + 3;
    let mut now = 10u64;
    for attempt in 1..=attempts {
        now += 1_000;
        let req = ClaimRequest {
            job: &job,
            shards,
            job_type: &job_type,
            payload_json: &payload,
            max_attempts: Some(100),
            owner: &owner,
            now_ms: now,
            lease_ms: 600_000,
            skew_ms: 0,
            enqueued_at_ms: 1,
            direct: false,
        };
        let Claim::Claimed(lease) = ledger.claim(&req).await.unwrap() else {
            panic!("attempt {attempt} not claimed")
        };
        ledger
            .record_task(
                &lease,
                &format!("arn:aws:ecs:us-east-1:123456789012:task/{}", "c".repeat(64)),
            )
            .await
            .unwrap();
        ledger.heartbeat(&lease, now + 900_000).await.unwrap();
        let last = attempt == attempts;
        let finish = if last {
            Finish::Succeeded {
                result: Some(format!("\"{}\"", "r".repeat(256 * 1024 - 2))),
            }
        } else {
            Finish::Retry {
                class: ErrorClass::JobFailure,
                error: long.clone(),
                retry_at_ms: now + 1,
                refund: false,
            }
        };
        let record = AttemptRecord {
            attempt,
            fence: lease.fence,
            started_ms: now,
            ended_ms: now + 500,
            target: fleet_shared::message::Target::Ecs,
            outcome: if last { "succeeded" } else { "job_failure" }
                .parse()
                .unwrap(),
            retry_at_ms: (!last).then_some(now + 1),
            reason: fleet_shared::message::RouteReason {
                rule: fleet_shared::message::RouteRule::PromotedAfterTimeout,
                unavailable: Some(fleet_shared::message::Target::Lambda),
            },
            exit_code: Some(i32::MIN),
            stopped_reason: Some(long.clone()),
            usage: None,
        };
        let live: Vec<LiveReport> = (0..8)
            .map(|r| LiveReport {
                request_id: rid.clone(),
                replica: format!("{r}{}", "q".repeat(127)),
                running: u32::MAX,
                after_retry: u32::MAX,
                at_ms: now,
            })
            .collect();
        let results = ledger
            .commit(
                &"s".repeat(64),
                &[Change::Finish {
                    lease,
                    finish,
                    record,
                }],
                &live,
            )
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        now += 1;
    }

    // The history item keeps the newest `keep` failed attempts; the last attempt (which
    // succeeded) is on the job item.
    let history = ledger.job_history(&key).await.unwrap();
    assert_eq!(
        history.attempts.len(),
        keep as usize + 1,
        "the last {keep} failures kept, and the success"
    );
    assert_eq!(
        history.older,
        u64::from(attempts - 1 - keep),
        "older ones counted"
    );
    assert_eq!(
        history.attempts.last().map(|e| e.record.attempt),
        Some(attempts)
    );

    let items = stack.table_items().await;
    let mut largest = 0;
    for i in &items {
        let size = item::item_size(i);
        let pk = i["pk"].as_s().unwrap();
        let sk = i["sk"].as_s().unwrap();
        assert!(size <= item::ITEM_MAX_BYTES, "{pk}/{sk}: {size} bytes");
        if pk.starts_with("J#") {
            assert!(
                size <= item::LEAN_MAX_BYTES,
                "job item {pk}/{sk}: {size} bytes"
            );
        }
        largest = largest.max(size);
    }
    // The history item is the largest: near, but under, the limit.
    assert!(
        largest > 300_000,
        "the worst case was reached: {largest} bytes"
    );
    println!("largest item: {largest} bytes of {}", item::ITEM_MAX_BYTES);
}
