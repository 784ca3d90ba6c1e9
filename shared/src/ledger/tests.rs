use super::*;
use crate::ids::JobId;

fn lease(after_retry: bool) -> Lease {
    let job = JobId::new("r", 1).unwrap_or_else(|e| panic!("{e}"));
    Lease {
        key: item::job_key(&job, 1),
        job,
        owner: "a".into(),
        fence: 1,
        attempt: 1,
        max_attempts: None,
        started_ms: 0,
        until_ms: 1,
        target: None,
        previous: None,
        after_retry,
        due_ms: None,
        item_bytes: 0,
    }
}

fn finish(after_retry: bool, finish: Finish) -> Delta {
    finish_change(after_retry, finish).delta()
}

fn finish_change(after_retry: bool, finish: Finish) -> Change {
    Change::Finish {
        lease: lease(after_retry),
        finish,
        record: AttemptRecord {
            attempt: 1,
            fence: 1,
            started_ms: 0,
            ended_ms: 1,
            target: crate::message::Target::Lambda,
            outcome: crate::state::AttemptOutcome::Failed(crate::error::ErrorClass::JobFailure),
            retry_at_ms: None,
            reason: crate::message::RouteReason::of(crate::message::RouteRule::Default),
            exit_code: None,
            stopped_reason: None,
            usage: None,
        },
    }
}

fn d(succeeded: i64, failed: i64, cancelled: i64, retrying: i64, attempts: i64) -> Delta {
    Delta {
        succeeded,
        failed,
        cancelled,
        retrying,
        attempts,
        // Every attempt of these rows ran on Lambda.
        lambda_attempts: attempts,
        ..Delta::default()
    }
}

/// Every change, first attempt and after a retry: how the counters move.
#[test]
fn every_change_moves_the_counters_by_the_rule() {
    let ok = Finish::Succeeded { result: None };
    let retry = |refund| Finish::Retry {
        class: ErrorClass::JobFailure,
        error: "e".into(),
        retry_at_ms: 5,
        refund,
    };
    let failed = Finish::Failed {
        class: ErrorClass::Permanent,
        error: "e".into(),
    };
    let table = [
        (finish(false, ok.clone()), d(1, 0, 0, 0, 1)),
        (finish(true, ok), d(1, 0, 0, -1, 1)),
        (finish(false, retry(false)), d(0, 0, 0, 1, 1)),
        (finish(true, retry(false)), d(0, 0, 0, 0, 1)),
        (finish(false, retry(true)), d(0, 0, 0, 1, 0)),
        (finish(true, retry(true)), d(0, 0, 0, 0, 0)),
        (finish(false, failed.clone()), d(0, 1, 0, 0, 1)),
        (finish(true, failed), d(0, 1, 0, -1, 1)),
        (finish(false, Finish::Cancelled), d(0, 0, 1, 0, 1)),
        (finish(true, Finish::Cancelled), d(0, 0, 1, -1, 1)),
    ];
    for (i, (got, want)) in table.into_iter().enumerate() {
        assert_eq!(got, want, "row {i}");
    }
    let job = JobId::new("r", 1).unwrap_or_else(|e| panic!("{e}"));
    let key = item::job_key(&job, 1);
    let release = |after_retry| {
        Change::Release {
            lease: lease(after_retry),
            now_ms: 0,
        }
        .delta()
    };
    assert_eq!(release(false), d(0, 0, 0, 1, 0));
    assert_eq!(release(true), d(0, 0, 0, 0, 0));
    let cancel = |from| {
        Change::CancelWaiting {
            job: job.clone(),
            key: key.clone(),
            from,
            now_ms: 0,
        }
        .delta()
    };
    assert_eq!(cancel(JobState::Pending), d(0, 0, 1, 0, 0));
    assert_eq!(cancel(JobState::Retrying), d(0, 0, 1, -1, 0));
    let redrive = Change::Redrive {
        job: job.clone(),
        key,
        fence: 1,
        budget: 3,
        target: None,
        now_ms: 0,
    };
    assert_eq!(redrive.delta(), d(0, -1, 0, 0, 0));
}

#[test]
fn buckets_refill_at_their_rate_up_to_their_burst() {
    let b = Bucket {
        name: "b".into(),
        rate: 20.0,
        burst: 20.0,
    };
    assert_eq!(b.refilled(None, 5), 20.0);
    assert_eq!(b.refilled(Some((0.0, 1000)), 1500), 10.0);
    assert_eq!(b.refilled(Some((15.0, 1000)), 9000), 20.0);
    // Another replica's clock ahead of ours adds nothing.
    assert_eq!(b.refilled(Some((3.0, 2000)), 1000), 3.0);
    assert_eq!(
        b.take(7.9, 5),
        Taken {
            granted: 5,
            wait_ms: 0
        }
    );
    assert_eq!(
        b.take(2.5, 5),
        Taken {
            granted: 2,
            wait_ms: 0
        }
    );
    assert_eq!(
        b.take(0.5, 5),
        Taken {
            granted: 0,
            wait_ms: 25
        }
    );
}

#[test]
fn slots_are_stable_and_in_range() {
    assert_eq!(counter_slot("replica-a"), counter_slot("replica-a"));
    let slots: std::collections::BTreeSet<String> =
        (0..500).map(|i| counter_slot(&format!("r{i}"))).collect();
    assert!(slots.len() > 50, "{}", slots.len());
    assert!(
        slots
            .iter()
            .all(|s| s.parse::<u32>().is_ok_and(|n| n < COUNTER_SLOTS))
    );
}

#[test]
fn errors_say_whether_to_try_again() {
    let stale = LedgerError::Stale {
        job: "r/1".into(),
        fence: 3,
    };
    assert_eq!(stale.class(), ErrorClass::Permanent);
    assert!(!stale.class().is_retryable());
    let malformed = LedgerError::Malformed {
        key: "k".into(),
        message: "m".into(),
    };
    assert_eq!(malformed.class(), ErrorClass::Permanent);
    assert_eq!(
        LedgerError::Layout("l".into()).class(),
        ErrorClass::Permanent
    );
    let throttled = LedgerError::throttled("UpdateItem", "slow down");
    assert_eq!(throttled.class(), ErrorClass::Throttled);
    assert_eq!(
        throttled.to_string(),
        "ledger call UpdateItem failed (throttled): slow down"
    );
    assert_eq!(
        stale.to_string(),
        "lease lost on r/1: the ledger refused a write with fence 3"
    );
}

/// Outcomes committed are added up per request and bucket; only successes and failures
/// count, and a sum not written goes back for the next flush.
#[test]
fn the_series_adds_up_finished_jobs_per_bucket() {
    use super::series::{BUCKET_MS, FLUSH_EVERY, Unwritten};
    let ok = Finish::Succeeded { result: None };
    let failed = Finish::Failed {
        class: ErrorClass::Permanent,
        error: "e".into(),
    };
    let retry = Finish::Retry {
        class: ErrorClass::JobFailure,
        error: "e".into(),
        retry_at_ms: 5,
        refund: false,
    };
    let mut u = Unwritten::default();
    let t = 10 * BUCKET_MS;
    assert!(!u.due(t + 60_000), "nothing to write");
    u.add(&finish_change(false, ok.clone()), t + 1);
    u.add(&finish_change(false, ok.clone()), t + BUCKET_MS - 1);
    u.add(&finish_change(false, failed), t + 2);
    u.add(&finish_change(false, retry), t + 3);
    u.add(&finish_change(false, Finish::Cancelled), t + 4);
    u.add(&finish_change(false, ok), t + BUCKET_MS);
    let flush = FLUSH_EVERY.as_millis() as u64;
    assert!(
        u.due(flush),
        "due once FLUSH_EVERY passed since the last flush"
    );
    let taken = u.take(flush);
    let point = |at_ms, succeeded, failed| ThroughputPoint {
        at_ms,
        succeeded,
        failed,
    };
    assert_eq!(
        taken,
        [
            ("r".to_owned(), point(t, 2, 1)),
            ("r".to_owned(), point(t + BUCKET_MS, 1, 0)),
        ]
    );
    assert!(!u.due(flush + 1), "nothing left");
    u.put_back("r".into(), taken[1].1);
    assert!(
        !u.due(flush + 1),
        "not before FLUSH_EVERY since the last flush"
    );
    assert!(u.due(2 * flush));
    assert_eq!(
        u.take(2 * flush),
        [("r".to_owned(), point(t + BUCKET_MS, 1, 0))]
    );
    assert_eq!(
        series::merge([point(0, 1, 0), point(BUCKET_MS, 0, 1), point(0, 2, 2)]),
        [point(0, 3, 2), point(BUCKET_MS, 0, 1)]
    );
}
