//! A request's throughput over time: its jobs finished per bucket of [`BUCKET_MS`], for the
//! console's chart and the API's `throughput`. Each replica adds up the outcomes it commits
//! and writes the sums every [`FLUSH_EVERY`], one small write per request it served (not one
//! per job), outside the outcome transactions. A display, not a count: the counters stay
//! exact, while a replica that crashes loses the sums it had not written yet (at most
//! `FLUSH_EVERY` of its outcomes), so the series may fall short of the counts by that much.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Change, Finish};

/// The width of a bucket.
pub const BUCKET_MS: u64 = 10_000;
/// How often a replica writes what it added up.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Jobs of a request that finished in the bucket starting at `at_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ThroughputPoint {
    pub at_ms: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// The start of the bucket of `ms`.
pub fn bucket_of(ms: u64) -> u64 {
    ms - ms % BUCKET_MS
}

/// Outcomes committed and not written to the series yet, per request and bucket.
#[derive(Debug, Default)]
pub struct Unwritten {
    sums: BTreeMap<(String, u64), ThroughputPoint>,
    last_flush_ms: u64,
}

impl Unwritten {
    /// Adds a committed change, if it finished a job as SUCCEEDED or FAILED, at `now_ms`.
    pub fn add(&mut self, change: &Change, now_ms: u64) {
        let Change::Finish { finish, .. } = change else {
            return;
        };
        let (s, f) = match finish {
            Finish::Succeeded { .. } => (1, 0),
            Finish::Failed { .. } => (0, 1),
            _ => return,
        };
        let at_ms = bucket_of(now_ms);
        let p = self
            .sums
            .entry((change.job().request_id().to_owned(), at_ms))
            .or_insert(ThroughputPoint {
                at_ms,
                ..ThroughputPoint::default()
            });
        p.succeeded += s;
        p.failed += f;
    }

    /// Whether the sums are due to be written at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        !self.sums.is_empty()
            && now_ms.saturating_sub(self.last_flush_ms) >= FLUSH_EVERY.as_millis() as u64
    }

    /// Takes every sum, as `(request id, point)`, and notes the flush.
    pub fn take(&mut self, now_ms: u64) -> Vec<(String, ThroughputPoint)> {
        self.last_flush_ms = now_ms;
        std::mem::take(&mut self.sums)
            .into_iter()
            .map(|((r, _), p)| (r, p))
            .collect()
    }

    /// Puts back a sum that could not be written (the next flush tries it again).
    pub fn put_back(&mut self, request_id: String, p: ThroughputPoint) {
        let e = self
            .sums
            .entry((request_id, p.at_ms))
            .or_insert(ThroughputPoint {
                at_ms: p.at_ms,
                ..ThroughputPoint::default()
            });
        e.succeeded += p.succeeded;
        e.failed += p.failed;
    }
}

/// Merges points of the same bucket (several replicas wrote them) into one per bucket,
/// oldest first.
pub fn merge(points: impl IntoIterator<Item = ThroughputPoint>) -> Vec<ThroughputPoint> {
    let mut by: BTreeMap<u64, ThroughputPoint> = BTreeMap::new();
    for p in points {
        let e = by.entry(p.at_ms).or_insert(ThroughputPoint {
            at_ms: p.at_ms,
            ..ThroughputPoint::default()
        });
        e.succeeded += p.succeeded;
        e.failed += p.failed;
    }
    by.into_values().collect()
}
