//! What a replica keeps of the ledger between calls.
//!
//! - [`Views`]: each request's item (job shards, cancelled, stop-running), read at most once
//!   per [`VIEW_TTL`] per request however many of its jobs the replica runs. A cancel waits
//!   that long before it returns, so no job of a cancelled request starts after `cancel`
//!   returns: every dispatch checks a view no older than the TTL.
//! - [`Frontier`]: how far behind the queue is, from the ledger's own due times of the jobs
//!   this replica claims. A waiting job is taken for lost (its message gone) only when the
//!   replica has been claiming jobs that became due well after it, or when the queue has
//!   been empty for a while; never from SQS's approximate counts, which lag a minute or more.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::ledger::{Ledger, LedgerError, RequestView};
use tokio::time::Instant;

/// How long a request's view is used before it is read again.
pub const VIEW_TTL: Duration = fleet_shared::ledger::REQUEST_VIEW_TTL;

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, RequestView)>>>;

/// Request views, one read per request and [`VIEW_TTL`].
#[derive(Debug, Default)]
pub struct Views {
    map: Mutex<HashMap<String, Slot>>,
}

impl Views {
    /// The view of `request_id`, read when the kept one is older than `max_age`. Its age
    /// counts from when the read was sent, so a view is never trusted past `max_age` after
    /// a write it might have missed.
    pub async fn get<L: Ledger>(
        &self,
        ledger: &L,
        request_id: &str,
        max_age: Duration,
    ) -> Result<RequestView, LedgerError> {
        let slot = {
            let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() > 10_000 {
                // Many requests seen: forget the views nobody is reading now.
                m.retain(|_, s| Arc::strong_count(s) > 1);
            }
            m.entry(request_id.to_owned()).or_default().clone()
        };
        let mut held = slot.lock().await;
        if let Some((at, view)) = *held
            && at.elapsed() < max_age
        {
            return Ok(view);
        }
        let sent = Instant::now();
        let view = ledger.request_view(request_id).await?;
        *held = Some((sent, view));
        Ok(view)
    }

    /// Drops the kept view of `request_id` (this replica changed the request item).
    pub fn forget(&self, request_id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id);
    }
}

/// The due times of the jobs a replica claimed recently, and whether its queue is empty.
#[derive(Debug)]
pub struct Frontier {
    window: Duration,
    recent: Mutex<VecDeque<(Instant, u64)>>,
    empty_since: Mutex<Option<Instant>>,
}

impl Frontier {
    /// Remembers claims for `window` (the sweeper's `recover_secs`).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            recent: Mutex::new(VecDeque::new()),
            empty_since: Mutex::new(None),
        }
    }

    /// A claim of a job that had been due (claimable) since `due_ms`.
    pub fn claimed(&self, due_ms: u64) {
        let now = Instant::now();
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.push_back((now, due_ms));
        while r
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.window)
        {
            r.pop_front();
        }
        drop(r);
        *self.empty_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A receive came back empty (a long poll: nothing was receivable for its wait).
    pub fn empty_receive(&self) {
        self.empty_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Instant::now);
    }

    /// A receive brought messages.
    pub fn busy(&self) {
        *self.empty_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The due time up to which waiting jobs are behind the queue: `now_ms` when the queue
    /// has been empty for `quiet`, else the oldest due time among recent claims; `None`
    /// when the replica knows neither (it just started).
    pub fn frontier(&self, now_ms: u64, quiet: Duration) -> Option<u64> {
        let empty = *self.empty_since.lock().unwrap_or_else(|p| p.into_inner());
        if empty.is_some_and(|t| t.elapsed() >= quiet) {
            return Some(now_ms);
        }
        let now = Instant::now();
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter()
            .filter(|(at, _)| now.duration_since(*at) <= self.window)
            .map(|(_, due)| *due)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_frontier_follows_claims_and_an_empty_queue() {
        let f = Frontier::new(Duration::from_secs(120));
        assert_eq!(f.frontier(1_000_000, Duration::from_secs(20)), None);
        f.claimed(500_000);
        f.claimed(600_000);
        assert_eq!(
            f.frontier(1_000_000, Duration::from_secs(20)),
            Some(500_000)
        );
        // Old claims leave the window.
        tokio::time::advance(Duration::from_secs(121)).await;
        f.claimed(900_000);
        assert_eq!(
            f.frontier(1_000_000, Duration::from_secs(20)),
            Some(900_000)
        );
        // An empty queue for long enough: everything up to now is behind it.
        f.empty_receive();
        assert_eq!(
            f.frontier(1_000_000, Duration::from_secs(20)),
            Some(900_000)
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        assert_eq!(
            f.frontier(2_000_000, Duration::from_secs(20)),
            Some(2_000_000)
        );
        f.busy();
        assert_eq!(
            f.frontier(2_000_000, Duration::from_secs(20)),
            Some(900_000)
        );
    }
}
