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
    })
}
