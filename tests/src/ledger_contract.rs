//! What every [`Ledger`] must do, as one scenario run against each implementation (DynamoDB
//! on the local stack, and the in-memory one), so they cannot drift apart.

use fleet_shared::ids::JobId;
use fleet_shared::ledger::{Claim, ClaimRequest, Finish, Lease, Ledger, LedgerError};
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

fn stale(r: Result<(), LedgerError>) -> bool {
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
        duration_ms: 5,
    };
    assert!(stale(l.finish(&a, &done, t0).await));

    // A retry hides the job until its time; then the next attempt gets a higher fence.
    let now = renewed_end + 2 * SKEW;
    let retry = Finish::Retry {
        error: "boom".into(),
        retry_at_ms: now + 5_000,
        duration_ms: 5,
    };
    l.finish(&b, &retry, now).await.expect("retry");
    assert!(
        stale(l.finish(&b, &done, now).await),
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

    // Release gives the job back at once without counting the attempt.
    l.release(&c).await.expect("release");
    let d = claimed(l, &job, "d", now + 5_001).await;
    assert_eq!((d.fence, d.attempt), (4, 3));

    // Success is terminal: later claims see it and nothing changes.
    l.finish(&d, &done, now + 6_000).await.expect("succeed");
    let after = l
        .claim(&req(&job, "e", now + 1_000_000))
        .await
        .expect("claim call");
    assert_eq!(
        after,
        Claim::Finished {
            state: JobState::Succeeded,
            last_error: None
        }
    );

    // A failure records its error, which later claims report.
    let job2 = JobId::new(request, 1).expect("id");
    let f = claimed(l, &job2, "a", t0).await;
    l.finish(
        &f,
        &Finish::Failed {
            error: "permanent: nope".into(),
            duration_ms: 1,
        },
        t0,
    )
    .await
    .expect("fail");
    assert_eq!(
        l.claim(&req(&job2, "b", t0 + 1)).await.expect("claim call"),
        Claim::Finished {
            state: JobState::Failed,
            last_error: Some("permanent: nope".into())
        }
    );
}
