//! Failure thresholds. A request may tolerate a number of failed jobs
//! (`options.tolerated_failure_percent` / `_count`, kept in its request item as one count);
//! one more fails it as a whole. After a replica records a failed job of such a request it
//! checks the request's counters, at most once a second per request however fast its jobs
//! fail (a bounded number of reads). The first replica to find the count over marks the
//! request FAILED with the reason, in one conditional write that also cancels it: its jobs
//! not started yet are cancelled as replicas receive them, running ones finish.
//!
//! A replica that stops between recording a failure and checking leaves the check to the
//! next failure of the request (on any replica).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::ledger::RequestLedger;
use fleet_shared::metrics as fm;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::views::VIEW_TTL;
use super::{Backends, Engine};

/// How often requests with new failures are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Requests with failures recorded since their last check.
#[derive(Debug, Default)]
pub(super) struct Thresholds {
    pending: Mutex<HashSet<String>>,
}

impl Thresholds {
    pub(super) fn failed(&self, request_id: &str) {
        self.lock().insert(request_id.to_owned());
    }

    fn take(&self) -> Vec<String> {
        self.lock().drain().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<B: Backends> Engine<B> {
    /// A job of `request_id` failed (its outcome is committed): its request is checked
    /// against what it tolerates at the next tick, when it has a threshold.
    pub(super) async fn job_failed(&self, request_id: &str) {
        if self
            .view_says(request_id, |v| v.tolerated_failures.is_some() && !v.failed)
            .await
        {
            self.thresholds.failed(request_id);
        }
    }

    /// Whether the request's view says `test`; `true` when it cannot be read (what follows
    /// reads what it needs itself).
    pub(super) async fn view_says(
        &self,
        request_id: &str,
        test: impl Fn(&fleet_shared::ledger::RequestView) -> bool,
    ) -> bool {
        self.views
            .get(self.ledger.as_ref(), request_id, VIEW_TTL)
            .await
            .map_or(true, |v| test(&v))
    }

    /// Checks the requests with new failures every second until `stop`, then once more.
    pub(super) async fn threshold_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => false,
                _ = stop.cancelled() => true,
            };
            for request_id in self.thresholds.take() {
                if let Err(e) = self.check_threshold(&request_id).await {
                    warn!(%request_id, error = %e, "could not check the request's failures; trying again");
                    self.thresholds.failed(&request_id);
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Fails the request when more of its jobs failed than it tolerates.
    async fn check_threshold(
        &self,
        request_id: &str,
    ) -> Result<(), fleet_shared::ledger::LedgerError> {
        let view = self
            .views
            .get(self.ledger.as_ref(), request_id, VIEW_TTL)
            .await?;
        let Some(tolerated) = view.tolerated_failures.filter(|_| !view.failed) else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let failed = self.ledger.counts(request_id, now).await?.failed.max(0);
        if failed <= i64::from(tolerated) {
            return Ok(());
        }
        let reason = format!(
            "{failed} of its {} jobs failed, more than the {tolerated} it tolerates",
            view.total
        );
        if self.ledger.fail_request(request_id, now, &reason).await? {
            metrics::counter!(fm::REQUESTS_FAILED).increment(1);
            warn!(%request_id, %reason, "request failed; its jobs not started yet are cancelled");
        } else {
            info!(%request_id, "request had failed already");
        }
        // This replica stops starting its jobs at once; the others within the views' TTL.
        self.views.forget(request_id);
        Ok(())
    }
}
