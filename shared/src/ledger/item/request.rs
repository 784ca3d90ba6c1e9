//! The request item.

use super::*;
use crate::ledger::{ItemKey, LedgerError};

/// A request item's attributes.
pub fn encode_request(r: &crate::ledger::RequestRecord, expires_at: Option<u64>) -> Item {
    use req_attr as a;
    let key = request_key(&r.request_id);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(&key.pk)),
        (attr::SK.to_owned(), s(&key.sk)),
        (a::REQUEST_ID.to_owned(), s(&r.request_id)),
        (a::JOB_TYPE.to_owned(), s(&r.job_type)),
        (a::TOTAL.to_owned(), n(r.total)),
        (a::CONTENT_HASH.to_owned(), s(&r.content_hash)),
        (a::CREATED_AT.to_owned(), n(r.created_at_ms)),
        (a::JOB_SHARDS.to_owned(), n(r.job_shards)),
        (a::WRITTEN.to_owned(), n(r.written)),
        (attr::LIST_KEY.to_owned(), s(REQUESTS_PARTITION)),
        (
            attr::LIST_AT.to_owned(),
            s(request_list_at(r.created_at_ms, &r.request_id)),
        ),
    ]);
    if let Some(m) = r.max_attempts {
        item.insert(a::MAX_ATTEMPTS.to_owned(), n(m));
    }
    if let Some(t) = r.target {
        item.insert(a::TARGET.to_owned(), s(t.as_str()));
    }
    if let Some(c) = r.cancelled_at_ms {
        item.insert(a::CANCELLED_AT.to_owned(), n(c));
    }
    if r.stop_running {
        item.insert(a::STOP_RUNNING.to_owned(), AttributeValue::Bool(true));
    }
    if let Some(t) = r.tolerated_failures {
        item.insert(a::TOLERATED_FAILURES.to_owned(), n(t));
    }
    if let Some(f) = &r.failed {
        item.insert(a::FAILED_AT.to_owned(), n(f.at_ms));
        item.insert(a::FAILED_REASON.to_owned(), s(&f.reason));
    }
    if let Some(w) = r.window {
        item.insert(a::WINDOW.to_owned(), n(w));
        item.insert(a::RELEASED.to_owned(), n(r.released));
        if r.capped {
            item.insert(a::CAPPED.to_owned(), AttributeValue::Bool(true));
        }
    }
    if let Some(t) = &r.tenant {
        item.insert(a::TENANT.to_owned(), s(t));
    }
    if let Some((who, until)) = &r.releaser {
        item.insert(a::RELEASER.to_owned(), s(who));
        item.insert(a::RELEASER_UNTIL.to_owned(), n(*until));
    }
    if let Some(p) = &r.results_prefix {
        item.insert(a::RESULTS_PREFIX.to_owned(), s(p));
    }
    let c = &r.completion;
    if let Some(f) = c.finished_at_ms {
        item.insert(a::FINISHED_AT.to_owned(), n(f));
    }
    if let Some((who, until)) = &c.notifier {
        item.insert(a::NOTIFIER.to_owned(), s(who));
        item.insert(a::NOTIFIER_UNTIL.to_owned(), n(*until));
    }
    if let Some(t) = c.notified_at_ms {
        item.insert(a::NOTIFIED_AT.to_owned(), n(t));
    }
    if let Some(m) = &c.manifest {
        item.insert(a::MANIFEST.to_owned(), s(m));
    }
    if let Some(at) = c.check_at_ms {
        item.insert(attr::DUE_KEY.to_owned(), s(FINISH_DUE_PARTITION));
        item.insert(attr::DUE_AT.to_owned(), n(at));
    }
    if let Some(x) = expires_at {
        item.insert(a::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

pub fn decode_request(item: &Item) -> Result<crate::ledger::RequestRecord, LedgerError> {
    use req_attr as a;
    let key = ItemKey::new(
        item.get(attr::PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default(),
        REQUEST_SK,
    );
    let r = Reader::new(item, &key);
    Ok(crate::ledger::RequestRecord {
        request_id: r.s(a::REQUEST_ID)?.to_owned(),
        job_type: r.s(a::JOB_TYPE)?.to_owned(),
        total: r.n(a::TOTAL)?,
        content_hash: r.s(a::CONTENT_HASH)?.to_owned(),
        max_attempts: r.opt_n(a::MAX_ATTEMPTS)?,
        target: r.target(a::TARGET)?,
        created_at_ms: r.n(a::CREATED_AT)?,
        job_shards: r.opt_n(a::JOB_SHARDS)?.unwrap_or(1).max(1),
        written: r.opt_n(a::WRITTEN)?.unwrap_or(0),
        cancelled_at_ms: r.opt_n(a::CANCELLED_AT)?,
        stop_running: r.bool(a::STOP_RUNNING),
        tolerated_failures: r.opt_n(a::TOLERATED_FAILURES)?,
        failed: r
            .opt_n(a::FAILED_AT)?
            .map(|at_ms| crate::ledger::RequestFailure {
                at_ms,
                reason: r.opt_s(a::FAILED_REASON).unwrap_or_default().to_owned(),
            }),
        window: r.opt_n(a::WINDOW)?,
        released: r.opt_n(a::RELEASED)?.unwrap_or(0),
        capped: r.bool(a::CAPPED),
        tenant: r.opt_s(a::TENANT).map(str::to_owned),
        releaser: match (r.opt_s(a::RELEASER), r.opt_n(a::RELEASER_UNTIL)?) {
            (Some(who), Some(until)) => Some((who.to_owned(), until)),
            _ => None,
        },
        results_prefix: r.opt_s(a::RESULTS_PREFIX).map(str::to_owned),
        completion: crate::ledger::Completion {
            finished_at_ms: r.opt_n(a::FINISHED_AT)?,
            notifier: match (r.opt_s(a::NOTIFIER), r.opt_n(a::NOTIFIER_UNTIL)?) {
                (Some(who), Some(until)) => Some((who.to_owned(), until)),
                _ => None,
            },
            notified_at_ms: r.opt_n(a::NOTIFIED_AT)?,
            manifest: r.opt_s(a::MANIFEST).map(str::to_owned),
            check_at_ms: match r.opt_s(attr::DUE_KEY) {
                Some(FINISH_DUE_PARTITION) => r.opt_n(attr::DUE_AT)?,
                _ => None,
            },
        },
    })
}

/// A release record's attributes: in the due index at its release time, in the partition of
/// its first job's hash.
pub fn encode_release(
    r: &crate::ledger::ReleaseRecord,
    index_shards: u32,
    expires_at: Option<u64>,
) -> Item {
    let key = release_key(&r.request_id, r.range.start);
    let first = crate::ids::JobId::new(&r.request_id, r.range.start).map_or(0, |j| job_hash(&j));
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(&key.pk)),
        (attr::SK.to_owned(), s(&key.sk)),
        (attr::RELEASE_END.to_owned(), n(r.range.end)),
        (
            attr::DUE_KEY.to_owned(),
            s(release_partition(first % index_shards.max(1))),
        ),
        (attr::DUE_AT.to_owned(), n(r.at_ms)),
    ]);
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// A release record from its item, or its due index entry (keys and projected attributes).
pub fn decode_release(item: &Item) -> Result<crate::ledger::ReleaseRecord, LedgerError> {
    let get = |a: &str| item.get(a).and_then(|v| v.as_s().ok()).cloned();
    let key = ItemKey::new(
        get(attr::PK).unwrap_or_default(),
        get(attr::SK).unwrap_or_default(),
    );
    let bad = |m: &str| LedgerError::Malformed {
        key: key.to_string(),
        message: m.to_owned(),
    };
    let request_id = key
        .pk
        .strip_prefix(RELEASE_PK_PREFIX)
        .and_then(|rest| rest.rsplit_once('#'))
        .map(|(request, _shard)| request.to_owned())
        .ok_or_else(|| bad("not a release record's partition"))?;
    let start: u32 = key.sk.parse().map_err(|_| bad("not a release record"))?;
    let r = Reader::new(item, &key);
    let end: u32 = r.n(attr::RELEASE_END)?;
    if end < start {
        return Err(bad("its range ends before it starts"));
    }
    Ok(crate::ledger::ReleaseRecord {
        request_id,
        range: start..end,
        at_ms: r.n(attr::DUE_AT)?,
    })
}
