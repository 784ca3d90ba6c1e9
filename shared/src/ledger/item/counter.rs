//! Counter items: a request's counts in one replica's slot, with the replicas' live
//! reports.

use super::*;
use crate::ledger::{ItemKey, LedgerError};

/// Counter item attributes: the counts, and the replicas' live reports.
pub mod counter_attr {
    pub const SUCCEEDED: &str = "SUCCEEDED";
    pub const FAILED: &str = "FAILED";
    pub const CANCELLED: &str = "CANCELLED";
    pub const RETRYING: &str = "RETRYING";
    pub const ATTEMPTS: &str = "attempts";
    /// What the attempts cost, in billionths of a US dollar (only once some did).
    pub const COST: &str = "cost";
    /// Attempts on Lambda and on ECS (only once some ran there).
    pub const LAMBDA_ATTEMPTS: &str = "al";
    pub const ECS_ATTEMPTS: &str = "ae";
    /// Live reports are kept in this many attributes (`l0`..), by replica name.
    pub const LIVE_SLOTS: u32 = 8;
}

/// The attribute that holds a replica's live report in a counter item.
pub fn live_attr(replica: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in replica.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("l{}", h % counter_attr::LIVE_SLOTS)
}

/// A live report as a counter item keeps it.
pub fn live_value(l: &crate::ledger::LiveReport) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("r".to_owned(), s(&l.replica)),
        ("n".to_owned(), n(l.running)),
        ("d".to_owned(), n(l.after_retry)),
        ("t".to_owned(), n(l.at_ms)),
    ]))
}

/// A counter item's counts and live reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterItem {
    pub counts: crate::ledger::Counts,
    /// By live attribute (`l0`..): the latest report written there.
    pub live: std::collections::BTreeMap<String, crate::ledger::LiveReport>,
    pub expires_at: Option<u64>,
}

impl CounterItem {
    pub fn encode(&self, key: &ItemKey) -> Item {
        use counter_attr as c;
        let mut item: Item = HashMap::from([
            (attr::PK.to_owned(), s(&key.pk)),
            (attr::SK.to_owned(), s(&key.sk)),
        ]);
        for (name, v) in [
            (c::SUCCEEDED, self.counts.succeeded),
            (c::FAILED, self.counts.failed),
            (c::CANCELLED, self.counts.cancelled),
            (c::RETRYING, self.counts.retrying),
            (c::ATTEMPTS, self.counts.attempts),
        ] {
            item.insert(name.to_owned(), n(v));
        }
        for (name, v) in [
            (c::COST, self.counts.cost_nusd),
            (c::LAMBDA_ATTEMPTS, self.counts.lambda_attempts),
            (c::ECS_ATTEMPTS, self.counts.ecs_attempts),
        ] {
            if v != 0 {
                item.insert(name.to_owned(), n(v));
            }
        }
        for (a, l) in &self.live {
            item.insert(a.clone(), live_value(l));
        }
        if let Some(x) = self.expires_at {
            item.insert(attr::EXPIRES_AT.to_owned(), n(x));
        }
        item
    }

    pub fn decode(item: &Item, key: &ItemKey) -> Result<Self, LedgerError> {
        use counter_attr as c;
        let r = Reader::new(item, key);
        let mut live = std::collections::BTreeMap::new();
        for (a, v) in item {
            if a.starts_with('l') && a[1..].chars().all(|ch| ch.is_ascii_digit()) {
                let Ok(m) = v.as_m() else { continue };
                let lr = Reader::new(m, key);
                live.insert(
                    a.clone(),
                    crate::ledger::LiveReport {
                        request_id: String::new(),
                        replica: lr.s("r")?.to_owned(),
                        running: lr.n("n")?,
                        after_retry: lr.n("d")?,
                        at_ms: lr.n("t")?,
                    },
                );
            }
        }
        Ok(CounterItem {
            counts: crate::ledger::Counts {
                succeeded: r.opt_n(c::SUCCEEDED)?.unwrap_or(0),
                failed: r.opt_n(c::FAILED)?.unwrap_or(0),
                cancelled: r.opt_n(c::CANCELLED)?.unwrap_or(0),
                retrying: r.opt_n(c::RETRYING)?.unwrap_or(0),
                attempts: r.opt_n(c::ATTEMPTS)?.unwrap_or(0),
                running: 0,
                running_after_retry: 0,
                cost_nusd: r.opt_n(c::COST)?.unwrap_or(0),
                lambda_attempts: r.opt_n(c::LAMBDA_ATTEMPTS)?.unwrap_or(0),
                ecs_attempts: r.opt_n(c::ECS_ATTEMPTS)?.unwrap_or(0),
            },
            live,
            expires_at: r.opt_n(attr::EXPIRES_AT)?,
        })
    }

    /// Adds this item's counts and its live reports newer than `LIVE_REPORT_MAX_AGE_MS` to
    /// `total`.
    pub fn add_to(&self, total: &mut crate::ledger::Counts, now_ms: u64) {
        let c = &self.counts;
        total.succeeded += c.succeeded;
        total.failed += c.failed;
        total.cancelled += c.cancelled;
        total.retrying += c.retrying;
        total.attempts += c.attempts;
        total.cost_nusd += c.cost_nusd;
        total.lambda_attempts += c.lambda_attempts;
        total.ecs_attempts += c.ecs_attempts;
        for l in self.live.values() {
            if now_ms.saturating_sub(l.at_ms) <= crate::ledger::LIVE_REPORT_MAX_AGE_MS {
                total.running += i64::from(l.running);
                total.running_after_retry += i64::from(l.after_retry.min(l.running));
            }
        }
    }
}
