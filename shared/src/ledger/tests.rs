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
    .delta()
}

fn d(succeeded: i64, failed: i64, cancelled: i64, retrying: i64, attempts: i64) -> Delta {
    Delta {
        succeeded,
        failed,
        cancelled,
        retrying,
        attempts,
        cost_nusd: 0,
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
