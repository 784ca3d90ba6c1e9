//! The items beside a job's lean item, written apart from it: its payload, its result and
//! its history.

use super::*;
use crate::ledger::{ItemKey, LedgerError};

/// A payload item.
pub fn payload_item(lean: &ItemKey, payload_json: &str, expires_at: Option<u64>) -> Item {
    let key = satellite(lean, PAYLOAD_SUFFIX);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(key.pk)),
        (attr::SK.to_owned(), s(key.sk)),
        (attr::PAYLOAD.to_owned(), s(payload_json)),
    ]);
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// A result item.
pub fn result_item(lean: &ItemKey, fence: u64, result: &str, expires_at: Option<u64>) -> Item {
    let key = satellite(lean, RESULT_SUFFIX);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(key.pk)),
        (attr::SK.to_owned(), s(key.sk)),
        (attr::RESULT.to_owned(), s(result)),
        (attr::FENCE.to_owned(), n(fence)),
    ]);
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// The history ring's slot of an attempt: a job keeps its newest `keep` failed attempts.
pub fn history_slot(fence: u64, keep: u32) -> String {
    format!("h{}", fence % u64::from(keep.max(1)))
}

/// A history item: its ring of entries and how many were recorded.
pub fn history_item(
    lean: &ItemKey,
    ring: &std::collections::BTreeMap<String, (crate::ledger::AttemptRecord, Option<String>)>,
    recorded: u64,
    expires_at: Option<u64>,
) -> Item {
    let key = satellite(lean, HISTORY_SUFFIX);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(key.pk)),
        (attr::SK.to_owned(), s(key.sk)),
        (attr::RECORDED.to_owned(), n(recorded)),
    ]);
    for (slot, (rec, err)) in ring {
        item.insert(slot.clone(), record_value(rec, err.as_deref()));
    }
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// A history item's entries, oldest first, and how many older ones it no longer holds.
pub fn decode_history(item: &Item, key: &ItemKey) -> Result<crate::ledger::History, LedgerError> {
    let r = Reader::new(item, key);
    let recorded: u64 = r.opt_n(attr::RECORDED)?.unwrap_or(0);
    let mut attempts = Vec::new();
    for (a, v) in item {
        if a.starts_with('h') && a[1..].chars().all(|ch| ch.is_ascii_digit()) && a.len() > 1 {
            let (record, error) = record_from(v, key)?;
            attempts.push(crate::ledger::HistoryEntry { record, error });
        }
    }
    attempts.sort_by_key(|e| e.record.fence);
    let older = recorded.saturating_sub(attempts.len() as u64);
    Ok(crate::ledger::History { attempts, older })
}
