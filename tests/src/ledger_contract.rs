//! What every ledger must do, as one scenario run against each implementation (DynamoDB on
//! the local stack, and the in-memory one), so they cannot drift apart: the test that runs it
//! also compares the items both leave behind.

use fleet_shared::error::ErrorClass;
use fleet_shared::ids::JobId;
use fleet_shared::ledger::item::{self, DueKind};
use fleet_shared::ledger::memory::DIRECT_JOB_SHARDS;
use fleet_shared::ledger::{
    AttemptRecord, Change, Claim, ClaimRequest, Counts, Finish, Lease, Ledger, LedgerError, NewJob,
    ReleaseRecord, RequestFailure, RequestLedger, RequestRecord, window,
};
use fleet_shared::state::JobState;

const LEASE: u64 = 10_000;
const SKEW: u64 = 1_000;
const SLOT: &str = "7";

fn req<'a>(job: &'a JobId, owner: &'a str, now_ms: u64) -> ClaimRequest<'a> {
    ClaimRequest {
        job,
        shards: DIRECT_JOB_SHARDS,
        job_type: "test",
        payload_json: "{\"k\":1}",
        max_attempts: Some(3),
        owner,
        now_ms,
        lease_ms: LEASE,
        skew_ms: SKEW,
        enqueued_at_ms: 1,
        direct: true,
    }
}

async fn claimed<L: Ledger>(l: &L, job: &JobId, owner: &str, now: u64) -> Lease {
    match l.claim(&req(job, owner, now)).await.expect("claim call") {
        Claim::Claimed(lease) => lease,
        other => panic!("{owner} at {now}: expected a lease, got {other:?}"),
    }
}

fn stale<T>(r: Result<T, LedgerError>) -> bool {
    matches!(r, Err(LedgerError::Stale { .. }))
}

/// Commits one change; its own result.
async fn commit<L: Ledger>(l: &L, change: Change) -> Result<(), LedgerError> {
    let mut r = l.commit(SLOT, &[change], &[]).await.expect("commit call");
    r.remove(0)
}

fn finish(lease: &Lease, f: Finish, outcome: &str) -> Change {
    Change::Finish {
        lease: lease.clone(),
        record: rec(lease, outcome),
        finish: f,
    }
}

/// Runs the whole contract on jobs of request `request`.
pub async fn check<L: Ledger + RequestLedger>(l: &L, request: &str) {
    let t0 = 1_800_000_000_000u64;
    let job = JobId::new(request, 0).expect("id");

    // A job with no item yet is created by its first claim.
    let a = claimed(l, &job, "a", t0).await;
    assert_eq!(
        (
            a.fence,
            a.attempt,
            a.max_attempts,
            a.until_ms,
            a.after_retry
        ),
        (1, 1, Some(3), t0 + LEASE, false)
    );
    assert_eq!(a.key, item::job_key(&job, DIRECT_JOB_SHARDS));

    // Another replica cannot take a live lease; it is told when the lease (plus skew) ends.
    let refused = l.claim(&req(&job, "b", t0 + 5)).await.expect("claim call");
    assert_eq!(
        refused,
        Claim::NotYet {
            state: JobState::Running,
            until_ms: t0 + LEASE + SKEW
        }
    );

    // Heartbeats hold only for the owner with the current fence.
    l.heartbeat(&a, t0 + 2 * LEASE).await.expect("heartbeat");
    let wrong_owner = Lease {
        owner: "b".into(),
        ..a.clone()
    };
    assert!(stale(l.heartbeat(&wrong_owner, t0 + 3 * LEASE).await));
    let wrong_fence = Lease {
        fence: 7,
        ..a.clone()
    };
    assert!(stale(l.heartbeat(&wrong_fence, t0 + 3 * LEASE).await));

    // The renewed lease is respected until it expires and the skew margin passes.
    let renewed_end = t0 + 2 * LEASE;
    assert!(matches!(
        l.claim(&req(&job, "b", renewed_end + SKEW / 2)).await,
        Ok(Claim::NotYet { .. })
    ));
    let b = claimed(l, &job, "b", renewed_end + SKEW + 1).await;
    assert_eq!((b.fence, b.attempt), (2, 2));

    // The old owner is fenced off: no heartbeat, no outcome.
    assert!(stale(l.heartbeat(&a, t0 + 9 * LEASE).await));
    let done = Finish::Succeeded {
        result: Some("{\"r\":1}".into()),
    };
    assert!(stale(
        commit(l, finish(&a, done.clone(), "succeeded")).await
    ));

    // A retry hides the job until its time; then the next attempt gets a higher fence.
    let now = renewed_end + 2 * SKEW;
    let retry = Finish::Retry {
        class: ErrorClass::JobFailure,
        error: "boom".into(),
        retry_at_ms: now + 5_000,
        refund: false,
    };
    commit(l, finish(&b, retry, "job_failure"))
        .await
        .expect("retry");
    assert!(
        stale(commit(l, finish(&b, done.clone(), "succeeded")).await),
        "a finished lease is gone"
    );
    assert_eq!(
        l.claim(&req(&job, "c", now + 4_999))
            .await
            .expect("claim call"),
        Claim::NotYet {
            state: JobState::Retrying,
            until_ms: now + 5_000
        }
    );
    let c = claimed(l, &job, "c", now + 5_000).await;
    assert_eq!(
        (c.fence, c.attempt, c.after_retry, c.due_ms),
        (3, 3, true, Some(now + 5_000))
    );
    assert_eq!(c.previous, Some(rec(&b, "job_failure")));

    // A throttled attempt is refunded: the next claim has the same attempt number.
    let throttled = Finish::Retry {
        class: ErrorClass::Throttled,
        error: "slow down".into(),
        retry_at_ms: now + 5_001,
        refund: true,
    };
    commit(l, finish(&c, throttled, "throttled"))
        .await
        .expect("throttled");
    let c2 = claimed(l, &job, "c", now + 5_001).await;
    assert_eq!((c2.fence, c2.attempt), (4, 3));

    // Release gives the job back at once without counting the attempt.
    commit(
        l,
        Change::Release {
            lease: c2.clone(),
            now_ms: now + 5_001,
        },
    )
    .await
    .expect("release");
    let d = claimed(l, &job, "d", now + 5_002).await;
    assert_eq!((d.fence, d.attempt, d.after_retry), (5, 3, true));

    // Success is terminal: later claims see it; the history has every recorded attempt, the
    // failed ones with their whole error.
    commit(l, finish(&d, done.clone(), "succeeded"))
        .await
        .expect("succeed");
    let after = l
        .claim(&req(&job, "e", now + 1_000_000))
        .await
        .expect("claim call");
    assert!(
        matches!(
            after,
            Claim::Finished {
                state: JobState::Succeeded,
                last_error: None,
                ..
            }
        ),
        "{after:?}"
    );
    let history = Ledger::history(l, &d.key).await.expect("history");
    let summary: Vec<(u32, u64, &str, Option<&str>)> = history
        .attempts
        .iter()
        .map(|h| {
            (
                h.record.attempt,
                h.record.fence,
                h.record.outcome.as_str(),
                h.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, 2, "job_failure", Some("boom")),
            (3, 3, "throttled", Some("slow down")),
            (3, 5, "succeeded", None)
        ]
    );
    assert_eq!(history.attempts[0].record, rec(&b, "job_failure"));
    assert_eq!(
        RequestLedger::result(l, &d.key).await.expect("result"),
        Some("{\"r\":1}".into())
    );

    // A failure records its class and error, which later claims report; the job is in the
    // failed index until a redrive takes it out.
    let job2 = JobId::new(request, 1).expect("id");
    let f = claimed(l, &job2, "a", t0).await;
    let failed = Finish::Failed {
        class: ErrorClass::Permanent,
        error: "nope".into(),
    };
    commit(l, finish(&f, failed, "permanent"))
        .await
        .expect("fail");
    assert_eq!(
        l.claim(&req(&job2, "b", t0 + 1)).await.expect("claim call"),
        Claim::Finished {
            key: f.key.clone(),
            state: JobState::Failed,
            last_error: Some("nope".into()),
            error_class: Some(ErrorClass::Permanent),
        }
    );
    let page = l.failed_page(request, None, 10).await.expect("failed page");
    assert_eq!(
        page.items
            .iter()
            .map(|j| (j.job_id.as_str(), j.error_class))
            .collect::<Vec<_>>(),
        vec![(job2.to_string().as_str(), Some(ErrorClass::Permanent))]
    );
    let redrive = |fence| Change::Redrive {
        job: job2.clone(),
        key: f.key.clone(),
        fence,
        budget: 2,
        target: None,
        now_ms: t0 + 2,
    };
    assert!(
        stale(commit(l, redrive(9)).await),
        "a redrive holds the fence it read"
    );
    commit(l, redrive(f.fence)).await.expect("redrive");
    assert!(stale(commit(l, redrive(f.fence)).await), "once");
    assert!(
        l.failed_page(request, None, 10)
            .await
            .expect("failed page")
            .items
            .is_empty()
    );
    let again = claimed(l, &job2, "c", t0 + 3).await;
    assert_eq!((again.attempt, again.max_attempts), (2, Some(3)));

    // A job of a cancelled request that never started is cancelled from its waiting state.
    let job3 = JobId::new(request, 2).expect("id");
    let g = claimed(l, &job3, "a", t0).await;
    commit(
        l,
        Change::Release {
            lease: g.clone(),
            now_ms: t0 + 1,
        },
    )
    .await
    .expect("release");
    let cancel = |from| Change::CancelWaiting {
        job: job3.clone(),
        key: g.key.clone(),
        from,
        now_ms: t0 + 2,
    };
    assert!(
        stale(commit(l, cancel(JobState::Pending)).await),
        "it is RETRYING"
    );
    commit(l, cancel(JobState::Retrying)).await.expect("cancel");

    // A result too large for the lean item is kept whole in its own item.
    let job4 = JobId::new(request, 3).expect("id");
    let h = claimed(l, &job4, "a", t0).await;
    let big = format!("\"{}\"", "r".repeat(5_000));
    commit(
        l,
        finish(
            &h,
            Finish::Succeeded {
                result: Some(big.clone()),
            },
            "succeeded",
        ),
    )
    .await
    .expect("succeed");
    assert_eq!(
        RequestLedger::result(l, &h.key).await.expect("result"),
        Some(big)
    );

    // The counters agree with the items: job 0 succeeded, job 1 runs again, job 2 was
    // cancelled, job 3 succeeded; attempts recorded: 4 outcomes of job 0 (one refunded),
    // 1 of job 1, and 1 of job 3.
    let counts = l.counts(request, 0).await.expect("counts");
    assert_eq!(
        counts,
        Counts {
            succeeded: 2,
            failed: 0,
            cancelled: 1,
            retrying: 0,
            attempts: 4,
            // Every attempt of the contract ran on Lambda.
            lambda_attempts: 4,
            ..Counts::default()
        }
    );
    let recounted = l
        .recount(request, DIRECT_JOB_SHARDS)
        .await
        .expect("recount");
    assert_eq!(
        (recounted.succeeded, recounted.failed, recounted.cancelled),
        (2, 0, 1)
    );
}

/// Jobs handed to Lambda and the shared token bucket: `running_at` says whether each job is
/// RUNNING at the fence asked for (one item asked at two fences included), and a bucket
/// gives no more than its burst, then refills at its rate.
pub async fn check_handed_and_buckets<L: Ledger>(l: &L, request: &str) {
    let t0 = 1_900_000_000_000u64;
    let job = JobId::new(request, 3).expect("id");
    let other = JobId::new(request, 4).expect("id");
    let a = claimed(l, &job, "a", t0).await;
    let b = claimed(l, &other, "a", t0).await;
    commit(
        l,
        finish(&b, Finish::Succeeded { result: None }, "succeeded"),
    )
    .await
    .expect("finish");
    let missing = fleet_shared::ledger::item::job_key(&JobId::new(request, 5).expect("id"), 1);
    let asked = vec![
        (a.key.clone(), a.fence),
        (a.key.clone(), a.fence + 1),
        (b.key.clone(), b.fence),
        (missing, 1),
    ];
    assert_eq!(
        l.running_at(&asked).await.expect("running_at"),
        vec![true, false, false, false]
    );
    let bucket = fleet_shared::ledger::Bucket {
        name: format!("{request}-bucket"),
        rate: 10.0,
        burst: 10.0,
    };
    let first = l.take_tokens(&bucket, 6, t0).await.expect("take");
    let second = l.take_tokens(&bucket, 6, t0).await.expect("take");
    let third = l.take_tokens(&bucket, 6, t0).await.expect("take");
    assert_eq!((first.granted, second.granted, third.granted), (6, 4, 0));
    assert!(third.wait_ms > 0 && third.wait_ms <= 100, "{third:?}");
    // Half a second later: five more.
    let later = l.take_tokens(&bucket, 6, t0 + 500).await.expect("take");
    assert_eq!(later.granted, 5);

    // Start slots, 10 a second, 3 at most a block: takes one after the other get the next
    // free slots, 100 ms apart, never beyond 300 ms ahead.
    let pace = fleet_shared::ledger::Pace::new(&format!("{request}-pace"), 10.0, 3);
    let a = l.take_slots(&pace, 2, t0).await.expect("slots");
    let b = l.take_slots(&pace, 5, t0).await.expect("slots");
    let c = l.take_slots(&pace, 1, t0).await.expect("slots");
    let us = t0 * 1000;
    assert_eq!(a.times().collect::<Vec<_>>(), vec![us, us + 100_000]);
    assert_eq!(b.times().collect::<Vec<_>>(), vec![us + 200_000]);
    assert_eq!((c.granted, c.wait_ms), (0, 1), "{c:?}");
    // A fleet-wide cap of 5: two replicas never hold more together; a holding asked
    // smaller gives slots back, and an unrenewed one expires.
    let cap = fleet_shared::ledger::Cap {
        name: format!("{request}-cap"),
        limit: 5,
        ttl_ms: 1_000,
    };
    assert_eq!(l.allot(&cap, "r1", 4, t0).await.expect("allot"), 4);
    assert_eq!(l.allot(&cap, "r2", 4, t0).await.expect("allot"), 1);
    assert_eq!(l.allot(&cap, "r1", 2, t0 + 10).await.expect("allot"), 2);
    assert_eq!(l.allot(&cap, "r2", 4, t0 + 20).await.expect("allot"), 3);
    assert_eq!(
        l.allot(&cap, "r3", 4, t0 + 1_015).await.expect("allot"),
        2,
        "r1's expired"
    );

    // Later the slots start from now: none is in the past.
    let d = l.take_slots(&pace, 3, t0 + 5_000).await.expect("slots");
    assert_eq!(d.first_us, (t0 + 5_000) * 1000);
    assert_eq!(d.granted, 3);
}

/// Hand-off and adoption, the due index, and shared durations.
pub async fn check_handoff<L: Ledger>(l: &L, request: &str) {
    let t0 = 1_900_000_000_000u64;
    let job = JobId::new(request, 7).expect("id");
    let shard = item::job_hash(&job) % l.index_shards();
    let a = claimed(l, &job, "a", t0).await;
    // Other requests' jobs may share the partition: only this job's entries count.
    let mine = &job;
    let due = |before| async move {
        l.due(DueKind::Lease, shard, before, 100)
            .await
            .expect("query")
            .into_iter()
            .filter(|e| e.job == *mine)
            .collect::<Vec<_>>()
    };
    // A live lease is not due; an expired one is.
    assert!(due(t0 + LEASE).await.is_empty());
    let expired = due(t0 + LEASE + 1).await;
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (
            expired[0].fence,
            expired[0].task.as_deref(),
            expired[0].owner.as_deref(),
            expired[0].state
        ),
        (1, None, Some("a"), JobState::Running)
    );
    assert!(
        l.due(DueKind::Waiting, shard, u64::MAX, 10)
            .await
            .expect("query")
            .iter()
            .all(|e| e.job != job),
        "a running job is not waiting"
    );

    // Without a recorded task there is nothing to adopt (the message will bring it back).
    let later = t0 + LEASE + SKEW + 10;
    assert_eq!(
        l.adopt(&expired[0], "b", later, LEASE, SKEW)
            .await
            .expect("adopt"),
        None
    );

    // Hand-off: the task is recorded; after expiry another replica adopts it, once.
    l.record_task(&a, "arn:task/1").await.expect("record task");
    let expired = due(t0 + LEASE + 1).await;
    assert_eq!(expired[0].task.as_deref(), Some("arn:task/1"));
    assert_eq!(
        l.adopt(&expired[0], "b", t0 + LEASE, LEASE, SKEW)
            .await
            .expect("adopt"),
        None,
        "within the skew margin"
    );
    let adopted = l
        .adopt(&expired[0], "b", later, LEASE, SKEW)
        .await
        .expect("adopt")
        .expect("adopted");
    assert_eq!(
        (
            adopted.lease.fence,
            adopted.lease.attempt,
            adopted.task.as_str()
        ),
        (2, 1, "arn:task/1")
    );
    assert_eq!(
        (adopted.job_type.as_str(), adopted.payload_json.as_str()),
        ("test", "{\"k\":1}")
    );
    assert_eq!(
        l.adopt(&expired[0], "c", later, LEASE, SKEW)
            .await
            .expect("adopt"),
        None,
        "the fence moved on"
    );
    assert!(
        stale(l.heartbeat(&a, later + LEASE).await),
        "the old owner is fenced off"
    );
    l.heartbeat(&adopted.lease, later + LEASE)
        .await
        .expect("new owner's heartbeat");
    commit(
        l,
        finish(
            &adopted.lease,
            Finish::Succeeded { result: None },
            "succeeded",
        ),
    )
    .await
    .expect("finish");
    assert!(
        l.due(DueKind::Lease, shard, u64::MAX, 100)
            .await
            .expect("query")
            .iter()
            .all(|e| e.job != job),
        "finished jobs leave the index"
    );

    // A waiting job whose message looks lost: one sweeper wins the right to re-send it.
    let lost = JobId::new(request, 8).expect("id");
    let lshard = item::job_hash(&lost) % l.index_shards();
    let g = claimed(l, &lost, "a", t0).await;
    commit(
        l,
        Change::Release {
            lease: g.clone(),
            now_ms: t0 + 5,
        },
    )
    .await
    .expect("release");
    let waiting = l
        .due(DueKind::Waiting, lshard, t0 + 100, 10)
        .await
        .expect("query");
    let entry = waiting.iter().find(|e| e.job == lost).expect("waiting");
    assert_eq!((entry.at_ms, entry.state), (t0 + 5, JobState::Retrying));
    let r = l
        .requeue(entry, t0 + 1_000, t0 + 100, 500)
        .await
        .expect("requeue")
        .expect("won");
    assert_eq!((r.attempts, r.payload_json.as_str()), (0, "{\"k\":1}"));
    assert_eq!(
        l.requeue(entry, t0 + 1_200, t0 + 100, 500)
            .await
            .expect("requeue"),
        None,
        "re-sent moments ago"
    );

    // Durations: appended, the newest `window` kept, shared by job type.
    l.add_durations("dur", &[1, 2, 3], 4).await.expect("add");
    l.add_durations("dur", &[4, 5], 4).await.expect("add");
    assert_eq!(l.durations("dur").await.expect("read"), vec![2, 3, 4, 5]);
    assert!(l.durations("other").await.expect("read").is_empty());
}

/// The history entry of an attempt run under `lease`.
fn rec(lease: &Lease, outcome: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: lease.attempt,
        fence: lease.fence,
        started_ms: lease.started_ms,
        ended_ms: lease.started_ms + 7,
        target: fleet_shared::message::Target::Lambda,
        outcome: outcome.parse().expect("an attempt outcome"),
        retry_at_ms: (outcome != "succeeded").then_some(lease.started_ms + 1_000),
        reason: fleet_shared::message::RouteReason::of(fleet_shared::message::RouteRule::Default),
        exit_code: Some(0),
        stopped_reason: None,
        usage: None,
    }
}

/// Listings a page at a time: 30 jobs over the direct job shards, 20 of them failed over the
/// failed index's shards; small pages list every job once, and the failed ones alone.
pub async fn check_listings<L: Ledger + RequestLedger>(l: &L, request: &str) {
    let t0 = 1_900_000_000_000u64;
    for i in 0..30 {
        let job = JobId::new(request, i).expect("id");
        let lease = claimed(l, &job, "a", t0).await;
        let end = if i % 3 == 0 {
            finish(&lease, Finish::Succeeded { result: None }, "succeeded")
        } else {
            let failed = Finish::Failed {
                class: ErrorClass::Permanent,
                error: format!("job {i}"),
            };
            finish(&lease, failed, "permanent")
        };
        commit(l, end).await.expect("finish");
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = l
            .jobs_page(request, DIRECT_JOB_SHARDS, cursor.as_deref(), 4)
            .await
            .expect("jobs page");
        assert!(page.items.len() <= 4, "{page:?}");
        listed.extend(page.items.iter().map(|j| j.index));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    listed.sort_unstable();
    assert_eq!(listed, (0..30).collect::<Vec<_>>(), "every job once");

    let mut failed = Vec::new();
    let mut cursor = None;
    loop {
        let page = l
            .failed_page(request, cursor.as_deref(), 3)
            .await
            .expect("failed page");
        assert!(page.items.len() <= 3, "{page:?}");
        for j in &page.items {
            assert_eq!(j.state, JobState::Failed);
            assert_eq!(
                j.last_error.as_deref(),
                Some(format!("job {}", j.index).as_str())
            );
        }
        failed.extend(page.items.iter().map(|j| j.index));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    failed.sort_unstable();
    let expected: Vec<u32> = (0..30).filter(|i| i % 3 != 0).collect();
    assert_eq!(failed, expected, "the failed jobs once each");
}

/// A request failed as a whole: the first reason stays, the request is cancelled too (its
/// jobs' claims see it), and a request that does not exist is not failed.
pub async fn check_request_failure<L: Ledger + RequestLedger>(l: &L, request: &str) {
    let record = RequestRecord {
        content_hash: "h".into(),
        written: 10,
        tolerated_failures: Some(2),
        ..RequestRecord::new(request, "test", 10, 1)
    };
    l.put_request(&record).await.expect("put request");
    let view = l.request_view(request).await.expect("view");
    assert_eq!(
        (
            view.total,
            view.tolerated_failures,
            view.failed,
            view.cancelled
        ),
        (10, Some(2), false, false)
    );
    assert!(l.fail_request(request, 50, "too many").await.expect("fail"));
    assert!(
        !l.fail_request(request, 60, "again").await.expect("fail"),
        "once"
    );
    assert!(
        !l.fail_request("no-such-request", 60, "x")
            .await
            .expect("fail"),
        "no request item"
    );
    let r = l.get_request(request).await.expect("get").expect("request");
    assert_eq!(
        r.failed,
        Some(RequestFailure {
            at_ms: 50,
            reason: "too many".into()
        })
    );
    assert_eq!((r.cancelled_at_ms, r.stop_running), (Some(50), false));
    let view = l.request_view(request).await.expect("view");
    assert!(
        view.failed && view.cancelled && !view.stop_running,
        "{view:?}"
    );
}

const TURN: u64 = 5_000;
const A: window::Releaser<'static> = window::Releaser {
    name: "a",
    turn_ms: TURN,
};
const B: window::Releaser<'static> = window::Releaser {
    name: "b",
    turn_ms: TURN,
};

/// The jobs of `request` the due index lists (any partition, any time).
async fn due_jobs<L: Ledger>(l: &L, request: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for shard in 0..l.index_shards() {
        let entries = l
            .due(DueKind::Waiting, shard, u64::MAX / 2, 100)
            .await
            .expect("due");
        found.extend(
            entries
                .iter()
                .filter(|e| e.job.request_id() == request)
                .map(|e| e.job.index()),
        );
    }
    found.sort_unstable();
    found
}

/// Ranges of the release records of `request` in the due index.
async fn due_ranges<L: RequestLedger + Ledger>(l: &L, request: &str) -> Vec<std::ops::Range<u32>> {
    let mut found = Vec::new();
    for shard in 0..l.index_shards() {
        let records = l
            .due_releases(shard, u64::MAX / 2, 100)
            .await
            .expect("due releases");
        found.extend(
            records
                .into_iter()
                .filter(|r| r.request_id == request)
                .map(|r| r.range),
        );
    }
    found.sort_unstable_by_key(|r| r.start);
    found
}

/// A windowed request: its held jobs have no due entry; a release writes a record of the
/// next jobs its window has room for (the record is due, its jobs are not) and moves the
/// cursor; a finished job makes room for one more; a job marked by the sweeper is not sent
/// again; a larger window releases the difference; a stale cursor cannot move; the
/// sweeper's check of a record sends its unsent jobs up to the cursor and deletes it; a
/// cancelled request releases nothing.
pub async fn check_window<L: Ledger + RequestLedger>(l: &L, request: &str) {
    let t0 = 1_800_000_000_000u64;
    let record = RequestRecord {
        content_hash: "h".into(),
        max_attempts: Some(3),
        written: 6,
        window: Some(2),
        ..RequestRecord::new(request, "test", 6, t0)
    };
    l.put_request(&record).await.expect("put request");
    let jobs: Vec<NewJob> = (0..6)
        .map(|i| {
            let job = JobId::new(request, i).expect("id");
            NewJob {
                key: item::job_key(&job, 1),
                job,
                job_type: "test".into(),
                payload_json: format!("{{\"i\":{i}}}"),
                max_attempts: Some(3),
                target: None,
                created_at_ms: t0,
                held: true,
            }
        })
        .collect();
    l.put_jobs(&jobs).await.expect("put jobs");
    assert!(l.request_view(request).await.expect("view").windowed);
    assert_eq!(
        due_jobs(l, request).await,
        Vec::<u32>::new(),
        "held: not due"
    );

    let first = window::release(l, request, A, t0 + 1)
        .await
        .expect("release");
    assert_eq!(first.range, 0..2);
    let sent: Vec<(u32, String, u32)> = first
        .jobs
        .iter()
        .map(|r| (r.job.index(), r.payload_json.clone(), r.attempts))
        .collect();
    assert_eq!(
        sent,
        vec![(0, "{\"i\":0}".into(), 0), (1, "{\"i\":1}".into(), 0)]
    );
    assert_eq!(
        due_jobs(l, request).await,
        Vec::<u32>::new(),
        "released jobs are not due one by one"
    );
    assert_eq!(due_ranges(l, request).await, vec![0..2], "their release is");
    let full = window::release(l, request, A, t0 + 2)
        .await
        .expect("release");
    assert!(full.range.is_empty(), "no room: {full:?}");
    assert!(full.turn, "the releaser keeps its turn and looks again");

    // Job 0 finishes: room for one more.
    let job0 = JobId::new(request, 0).expect("id");
    let lease = match l
        .claim(&ClaimRequest {
            shards: 1,
            direct: false,
            ..req(&job0, "a", t0 + 3)
        })
        .await
        .expect("claim")
    {
        Claim::Claimed(lease) => lease,
        other => panic!("a released job is claimable: {other:?}"),
    };
    commit(
        l,
        finish(&lease, Finish::Succeeded { result: None }, "succeeded"),
    )
    .await
    .expect("finish");
    // Another releaser's trigger during the turn reads the request item and does nothing.
    let other = window::release(l, request, B, t0 + 4)
        .await
        .expect("release");
    assert_eq!(other, window::Released::default());
    let next = window::release(l, request, A, t0 + 4)
        .await
        .expect("release");
    assert_eq!(next.range, 2..3);
    assert_eq!(next.jobs.len(), 1);

    // The sweeper marked job 3 (its message looked lost): it has its due entry, once.
    let job3 = JobId::new(request, 3).expect("id");
    let marked = l
        .mark_released(std::slice::from_ref(&job3), 1, t0 + 5)
        .await
        .expect("mark");
    assert_eq!(marked.len(), 1);
    let again = l
        .mark_released(std::slice::from_ref(&job3), 1, t0 + 5)
        .await
        .expect("mark");
    assert!(again.is_empty(), "marked once");

    // A larger window releases the difference; the job marked is not sent again.
    // The turn of "a" is over: "b" takes it.
    assert!(l.set_window(request, 4).await.expect("set window"));
    let wider = window::release(l, request, B, t0 + 4 + TURN + 1)
        .await
        .expect("release");
    assert_eq!(wider.range, 3..5);
    let indexes: Vec<u32> = wider.jobs.iter().map(|r| r.job.index()).collect();
    assert_eq!(indexes, vec![4]);
    let r = l.get_request(request).await.expect("get").expect("request");
    assert_eq!((r.window, r.released), (Some(4), 5));
    // A release from a stale cursor cannot move it.
    assert!(
        !l.advance_release(request, 3..6, "b", t0 + 4 + TURN + 2, t0 + 2 * TURN)
            .await
            .expect("advance")
    );

    // The sweeper's check: none of the released jobs was sent in this test. Each job still
    // PENDING with no due entry is marked and returned (job 0 finished, job 3 was marked),
    // and each record goes.
    assert_eq!(due_ranges(l, request).await, vec![0..2, 2..3, 3..5]);
    let mut checked = Vec::new();
    for shard in 0..l.index_shards() {
        for rec in l
            .due_releases(shard, u64::MAX / 2, 100)
            .await
            .expect("due releases")
        {
            let r = l.get_request(request).await.expect("get");
            let unsent = window::check_release(l, &rec, r.as_ref(), t0 + 6)
                .await
                .expect("check");
            checked.extend(unsent.iter().map(|r| (r.job.index(), r.attempts)));
        }
    }
    checked.sort_unstable();
    assert_eq!(checked, vec![(1, 0), (2, 0), (4, 0)]);
    assert_eq!(
        due_jobs(l, request).await,
        vec![1, 2, 3, 4],
        "due one by one now"
    );
    assert!(
        due_ranges(l, request).await.is_empty(),
        "checked records go"
    );
    // A record past the cursor (job 5 is held): its check sends nothing.
    let past = ReleaseRecord {
        request_id: request.to_owned(),
        range: 4..6,
        at_ms: t0 + 6,
    };
    l.put_release(&past).await.expect("put release");
    let r = l.get_request(request).await.expect("get");
    let unsent = window::check_release(l, &past, r.as_ref(), t0 + 7)
        .await
        .expect("check");
    assert!(unsent.is_empty(), "{unsent:?}");
    // One record left for the items' comparison.
    l.put_release(&ReleaseRecord {
        request_id: request.to_owned(),
        range: 5..6,
        at_ms: t0 + 8,
    })
    .await
    .expect("put release");
    assert_eq!(due_ranges(l, request).await, vec![5..6]);

    // Cancelled: nothing more is released, and the job never released counts as cancelled.
    assert!(
        l.cancel_request(request, t0 + 7, false)
            .await
            .expect("cancel")
    );
    let none = window::release(l, request, B, t0 + 4 + TURN + 3)
        .await
        .expect("release");
    assert!(none.range.is_empty());
    let r = l.get_request(request).await.expect("get").expect("request");
    assert_eq!(window::never_released(&r), 1);
    assert!(
        !l.set_window("no-such-request", 3)
            .await
            .expect("set window")
    );
}

/// A request's finish: due for a check from its creation, deferred by a sweeper; one turn
/// to send its event at a time (renewable by its holder, `finished_at` written once, the
/// next check moved to the turn's end); once sent, out of the due index for good, with its
/// manifest.
pub async fn check_finish<L: Ledger + RequestLedger>(l: &L, request: &str) {
    let t0 = 1_800_000_000_000u64;
    let record = RequestRecord {
        content_hash: "h".into(),
        written: 3,
        results_prefix: Some("s3://bucket/results/".into()),
        completion: fleet_shared::ledger::Completion {
            check_at_ms: Some(t0),
            ..Default::default()
        },
        ..RequestRecord::new(request, "test", 3, t0)
    };
    l.put_request(&record).await.expect("put request");
    let due = |before: u64| async move {
        l.due_finish_checks(before, 25)
            .await
            .expect("due checks")
            .contains(&request.to_owned())
    };
    assert!(!due(t0).await, "due strictly after its time");
    assert!(due(t0 + 1).await, "due from its creation");
    l.defer_finish_check(request, t0 + 5_000)
        .await
        .expect("ledger call");
    assert!(!due(t0 + 4_999).await && due(t0 + 5_001).await, "deferred");

    let r = l
        .finish_request(request, "a", t0 + 6_000, t0 + 9_000)
        .await
        .expect("ledger call")
        .expect("the first takes the turn");
    assert_eq!(r.completion.finished_at_ms, Some(t0 + 6_000));
    assert_eq!(r.completion.notifier, Some(("a".into(), t0 + 9_000)));
    assert_eq!(r.results_prefix.as_deref(), Some("s3://bucket/results/"));
    assert!(
        !due(t0 + 8_999).await && due(t0 + 9_001).await,
        "checked at the turn's end"
    );
    assert_eq!(
        l.finish_request(request, "b", t0 + 8_000, t0 + 11_000)
            .await
            .expect("ledger call"),
        None,
        "not while a's turn lasts"
    );
    let r = l
        .finish_request(request, "a", t0 + 8_500, t0 + 12_000)
        .await
        .expect("ledger call")
        .expect("a renews its turn");
    assert_eq!(
        r.completion.finished_at_ms,
        Some(t0 + 6_000),
        "written once"
    );
    let r = l
        .finish_request(request, "b", t0 + 12_001, t0 + 15_000)
        .await
        .expect("ledger call")
        .expect("b takes the turn once a's is over");
    assert_eq!(r.completion.notifier, Some(("b".into(), t0 + 15_000)));

    l.request_notified(
        request,
        t0 + 13_000,
        Some("s3://bucket/results/manifest.json"),
    )
    .await
    .expect("ledger call");
    let r = l
        .get_request(request)
        .await
        .expect("ledger call")
        .expect("ledger call");
    assert_eq!(r.completion.notified_at_ms, Some(t0 + 13_000));
    assert_eq!(
        r.completion.manifest.as_deref(),
        Some("s3://bucket/results/manifest.json")
    );
    assert_eq!(r.completion.check_at_ms, None);
    assert!(!due(u64::MAX / 2).await, "out of the due index once sent");
    assert_eq!(
        l.finish_request(request, "c", t0 + 100_000, t0 + 110_000)
            .await
            .expect("ledger call"),
        None,
        "no turn after it was sent"
    );
    l.defer_finish_check(request, t0 + 200_000)
        .await
        .expect("ledger call");
    assert!(
        !due(u64::MAX / 2).await,
        "a late deferral does not bring it back"
    );
    assert_eq!(
        l.get_request(request)
            .await
            .expect("ledger call")
            .expect("ledger call")
            .completion,
        r.completion
    );
}

/// The requests index lists requests newest first, a page at a time; the throughput series
/// adds what replicas write to the same bucket and reads from a bucket on.
pub async fn check_listing_and_series<L: Ledger + RequestLedger>(l: &L, prefix: &str) {
    use fleet_shared::ledger::ThroughputPoint;
    // Newer than every other request of the contract.
    let t0 = 4_000_000_000_000u64;
    let ids: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let record = RequestRecord::new(id, "test", 1, t0 + i as u64);
        l.put_request(&record).await.expect("put request");
    }
    let first = l.requests_page(None, 2).await.expect("a page");
    assert_eq!(
        first.items,
        [ids[2].clone(), ids[1].clone()],
        "newest first"
    );
    let next = first.next.expect("more after the first page");
    let second = l.requests_page(Some(&next), 2).await.expect("a page");
    assert_eq!(
        second.items.first(),
        Some(&ids[0]),
        "the next page goes on after the last"
    );
    assert!(
        !second.items.contains(&ids[1]) && !second.items.contains(&ids[2]),
        "nothing twice: {second:?}"
    );

    let r = &ids[0];
    let p = |at_ms, succeeded, failed| ThroughputPoint {
        at_ms,
        succeeded,
        failed,
    };
    assert!(l.throughput(r, 0).await.expect("a series").is_empty());
    l.add_throughput(r, &p(10_000, 2, 1)).await.expect("add");
    l.add_throughput(r, &p(10_000, 2, 1)).await.expect("add");
    l.add_throughput(r, &p(20_000, 1, 0)).await.expect("add");
    assert_eq!(
        l.throughput(r, 0).await.expect("a series"),
        [p(10_000, 4, 2), p(20_000, 1, 0)],
        "sums per bucket, oldest first"
    );
    assert_eq!(
        l.throughput(r, 19_999).await.expect("a series"),
        [p(10_000, 4, 2), p(20_000, 1, 0)],
        "from the bucket holding since_ms"
    );
    assert_eq!(
        l.throughput(r, 20_000).await.expect("a series"),
        [p(20_000, 1, 0)]
    );
    assert!(
        l.throughput(&ids[1], 0).await.expect("a series").is_empty(),
        "another request's series is its own"
    );
}
