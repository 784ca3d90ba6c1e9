use super::*;
use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::ledger::{AttemptRecord, ItemKey};
use crate::state::JobState;

fn job() -> JobId {
    JobId::new("req-1", 42).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn keys_spread_a_request_over_its_shards_and_name_their_job() {
    let key = job_key(&job(), 16);
    assert_eq!(key.pk, "J#req-1#10");
    assert_eq!(key.sk, "000000042");
    assert_eq!(job_of(&key).ok(), Some(job()));
    assert_eq!(job_of(&satellite(&key, 'H')).ok(), Some(job()));
    assert_eq!(job_key(&job(), 1).pk, "J#req-1#0");
    assert!(job_of(&ItemKey::new("R#x", "R")).is_err());
}

#[test]
fn a_job_item_survives_its_codec() {
    let key = job_key(&job(), 4);
    let mut j = JobItem::pending(
        job(),
        key,
        "resize",
        PayloadAt::Inline("{\"k\":1}".into()),
        1_800_000_000_000,
        32,
    );
    assert_eq!(decode_job(&encode_job(&j)).ok(), Some(j.clone()));
    j.state = JobState::Failed;
    j.failed = true;
    j.due = None;
    j.error_class = Some(ErrorClass::JobFailure);
    j.last_error = Some("boom".into());
    j.retry_debt = true;
    j.result = ResultAt::Item(3);
    j.payload = PayloadAt::Apart;
    j.last = Some(AttemptRecord {
        attempt: 2,
        fence: 3,
        started_ms: 5,
        ended_ms: 9,
        target: crate::message::Target::Lambda,
        outcome: crate::state::AttemptOutcome::Failed(crate::error::ErrorClass::JobFailure),
        retry_at_ms: Some(10),
        reason: crate::message::RouteReason::of(crate::message::RouteRule::Default),
        exit_code: Some(1),
        stopped_reason: Some("Essential container exited".into()),
        usage: None,
    });
    let item = encode_job(&j);
    assert!(failed_entry(&item).is_some());
    assert!(due_entry(&item).is_none());
    assert_eq!(decode_job(&item).ok(), Some(j));
}

#[test]
fn sizes_follow_dynamodbs_rules() {
    assert_eq!(item_size(&HashMap::from([("ab".into(), s("xyz"))])), 5);
    // 12345: five significant digits, three bytes, plus one.
    assert_eq!(value_size(&n(12345)), 4);
    assert_eq!(value_size(&n(0)), 2);
    assert_eq!(write_units(0, 1024), 1);
    assert_eq!(write_units(1025, 10), 2);
    assert_eq!(read_units(4097, true), 2.0);
    assert_eq!(read_units(10, false), 0.5);
}

#[test]
fn small_payloads_stay_inline_and_the_item_lean() {
    let key = job_key(&job(), 64);
    let small = "x".repeat(512);
    let p = PayloadAt::Inline(small.clone());
    let mut j = JobItem::pending(job(), key.clone(), "resize", p, 1_800_000_000_000, 64);
    // A claimed job with a long owner name and every outcome field still fits 1 KB.
    j.state = JobState::Running;
    j.owner = Some("ip-10-0-123-45.ec2.internal-12345-a1b2c3".into());
    j.lease_until_ms = Some(1_800_000_060_000);
    j.attempts = 3;
    j.fence = 3;
    j.max_attempts = Some(5);
    j.started_at_ms = Some(1_800_000_000_000);
    j.enqueued_at_ms = Some(1_800_000_000_000);
    j.last = Some(AttemptRecord {
        attempt: 2,
        fence: 2,
        started_ms: 1_800_000_000_000,
        ended_ms: 1_800_000_000_000,
        target: crate::message::Target::Lambda,
        outcome: crate::state::AttemptOutcome::Failed(crate::error::ErrorClass::JobFailure),
        retry_at_ms: Some(1_800_000_000_000),
        reason: crate::message::RouteReason::of(crate::message::RouteRule::PromotedAfterTimeout),
        exit_code: None,
        stopped_reason: None,
        usage: None,
    });
    j.last_error = Some("e".repeat(SHORT_ERROR_BYTES));
    j.error_class = Some(ErrorClass::JobFailure);
    j.retry_debt = true;
    let size = item_size(&encode_job(&j));
    assert!(size <= LEAN_MAX_BYTES, "{size} bytes");
    let mut bare = j.clone();
    bare.payload = PayloadAt::Inline(String::new());
    let fixed = item_size(&encode_job(&bare)) - key.pk.len() - key.sk.len() - "resize".len();
    assert!(
        fixed <= LEAN_FIXED_BYTES,
        "{fixed} bytes besides keys and payload"
    );
    assert_eq!(
        payload_placement(&key, "resize", &small),
        PayloadAt::Inline(small.clone())
    );
    let big = "x".repeat(700);
    assert_eq!(payload_placement(&key, "resize", &big), PayloadAt::Apart);
}

#[test]
fn clipping_keeps_characters_whole() {
    assert_eq!(clip_bytes("abc", 10), "abc");
    let c = clip_bytes(&"é".repeat(100), 11);
    assert!(c.len() <= 11 && c.ends_with('…'), "{c}");
}
