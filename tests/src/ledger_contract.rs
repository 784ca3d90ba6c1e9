//! What every [`Ledger`] must do, as one scenario run against each implementation (DynamoDB
//! on the local stack, and the in-memory one), so they cannot drift apart.

use fleet_shared::ids::JobId;
use fleet_shared::ledger::{
    AttemptRecord, Claim, ClaimRequest, Finish, LEASE_SHARDS, Lease, Ledger, LedgerError,
    lease_shard,
};
use fleet_shared::state::JobState;

const LEASE: u64 = 10_000;
const SKEW: u64 = 1_000;

fn req<'a>(job: &'a JobId, owner: &'a str, now_ms: u64) -> ClaimRequest<'a> {
    ClaimRequest {
        job,
        job_type: "test",
        payload_json: "{\"k\":1}",
        max_attempts: Some(3),
        owner,
        now_ms,
        lease_ms: LEASE,
        skew_ms: SKEW,
        enqueued_at_ms: 1,
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

/// Runs the whole contract on jobs of request `request`.
pub async fn check<L: Ledger>(l: &L, request: &str) {
    let t0 = 1_800_000_000_000u64;
    let job = JobId::new(request, 0).expect("id");

    // A job with no item yet is created by its first claim.
    let a = claimed(l, &job, "a", t0).await;
    assert_eq!(
        (a.fence, a.attempt, a.max_attempts, a.until_ms),
        (1, 1, Some(3), t0 + LEASE)
    );

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
    assert!(stale(l.finish(&a, &done, &rec(&a, "succeeded")).await));

    // A retry hides the job until its time; then the next attempt gets a higher fence.
    let now = renewed_end + 2 * SKEW;
    let retry = Finish::Retry {
        error: "job_failure: boom".into(),
        retry_at_ms: now + 5_000,
        refund: false,
    };
    assert_eq!(
        l.finish(&b, &retry, &rec(&b, "job_failure"))
            .await
            .expect("retry"),
        vec![]
    );
    assert!(
        stale(l.finish(&b, &done, &rec(&b, "succeeded")).await),
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
    assert_eq!((c.fence, c.attempt), (3, 3));

    // A throttled attempt is refunded: the next claim has the same attempt number.
    let throttled = Finish::Retry {
        error: "throttled: slow down".into(),
        retry_at_ms: now + 5_001,
        refund: true,
    };
    l.finish(&c, &throttled, &rec(&c, "throttled"))
        .await
        .expect("throttled");
    let c2 = claimed(l, &job, "c", now + 5_001).await;
    assert_eq!((c2.fence, c2.attempt), (4, 3));

    // Release gives the job back at once without counting the attempt.
    l.release(&c2).await.expect("release");
    let d = claimed(l, &job, "d", now + 5_002).await;
    assert_eq!((d.fence, d.attempt), (5, 3));

    // Success is terminal: later claims see it, with the history of the recorded attempts.
    assert_eq!(
        l.finish(&d, &done, &rec(&d, "succeeded"))
            .await
            .expect("succeed"),
        vec![]
    );
    let after = l
        .claim(&req(&job, "e", now + 1_000_000))
        .await
        .expect("claim call");
    let Claim::Finished {
        state,
        last_error,
        history,
    } = after
    else {
        panic!("expected a finished job, got {after:?}");
    };
    assert_eq!((state, last_error), (JobState::Succeeded, None));
    let summary: Vec<(u32, u64, &str)> = history
        .iter()
        .map(|h| (h.attempt, h.fence, h.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, 2, "job_failure"),
            (3, 3, "throttled"),
            (3, 5, "succeeded")
        ]
    );
    assert_eq!(history[0], rec(&b, "job_failure"));

    // A failure records its error, which later claims report, and returns the history.
    let job2 = JobId::new(request, 1).expect("id");
    let f = claimed(l, &job2, "a", t0).await;
    let failed = Finish::Failed {
        error: "permanent: nope".into(),
    };
    let history = l
        .finish(&f, &failed, &rec(&f, "permanent"))
        .await
        .expect("fail");
    assert_eq!(history, vec![rec(&f, "permanent")]);
    assert_eq!(
        l.claim(&req(&job2, "b", t0 + 1)).await.expect("claim call"),
        Claim::Finished {
            state: JobState::Failed,
            last_error: Some("permanent: nope".into()),
            history,
        }
    );
}

/// Hand-off and adoption, the lease-expiry index, and shared durations.
pub async fn check_handoff<L: Ledger>(l: &L, request: &str) {
    let t0 = 1_900_000_000_000u64;
    let job = JobId::new(request, 7).expect("id");
    let shard = lease_shard(&job);
    let a = claimed(l, &job, "a", t0).await;
    // A live lease is not in the expired list; an expired one is, once the skew has passed.
    assert!(
        l.expired_leases(shard, t0 + LEASE, 10)
            .await
            .expect("query")
            .is_empty()
    );
    let expired = l
        .expired_leases(shard, t0 + LEASE + 1, 10)
        .await
        .expect("query");
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (
            expired[0].fence,
            expired[0].task.as_deref(),
            expired[0].owner.as_deref()
        ),
        (1, None, Some("a"))
    );
    let other_shard = (shard + 1) % LEASE_SHARDS;
    assert!(
        l.expired_leases(other_shard, u64::MAX, 10)
            .await
            .expect("query")
            .iter()
            .all(|e| e.job != job)
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
    let expired = l
        .expired_leases(shard, t0 + LEASE + 1, 10)
        .await
        .expect("query");
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
    let done = Finish::Succeeded { result: None };
    l.finish(&adopted.lease, &done, &rec(&adopted.lease, "succeeded"))
        .await
        .expect("finish");
    assert!(
        l.expired_leases(shard, u64::MAX, 100)
            .await
            .expect("query")
            .iter()
            .all(|e| e.job != job),
        "finished jobs leave the index"
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
        target: "lambda".into(),
        outcome: outcome.into(),
        retry_at_ms: (outcome != "succeeded").then_some(lease.started_ms + 1_000),
        reason: "default".into(),
        exit_code: Some(0),
        stopped_reason: None,
    }
}
