//! Finishing requests. A request finishes when every job is terminal (its jobs cancelled,
//! or the request failed as a whole, included). Then, once:
//!
//! 1. the request item records `finished_at` and who sends its event, until when
//!    ([`RequestLedger::finish_request`], a conditional write: one sender at a time);
//! 2. the sender exports its results when it asked for it (`options.results.s3_prefix`),
//!    renewing its turn while the export runs;
//! 3. it sends the completion event ([`RequestFinished`]) to the configured targets;
//! 4. it records that the event was sent, which takes the request out of the due index.
//!
//! **Who finds it finished.** A replica that records a terminal outcome checks the
//! request's counters (a bounded number of reads) soon after: at once the first time, then
//! after half the time the request's recent pace says the rest will take (1 to 15 s), and
//! only while it keeps recording outcomes of the request. The replica that records the last
//! terminal job therefore checks within a second or so.
//!
//! **Repair.** Until its event is sent, the request item is in the due index. A sweeper
//! checks each such request once it is due: not finished, it is due again `recover_secs`
//! later; finished, the sweeper does steps 1–4 itself. So a replica that stops between the
//! last outcome and the event (or whose send fails) leaves the event to a sweeper, once its
//! turn has run out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::completion::RequestFinished;
use fleet_shared::ledger::{Counts, LedgerError, RequestLedger, RequestRecord, is_done};
use fleet_shared::metrics as fm;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Backends, Engine};

/// How often requests with new terminal outcomes are considered.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest a replica waits between two checks of a request it records outcomes of.
const MAX_GAP_MS: u64 = 15_000;

/// A request this replica recorded terminal outcomes of.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// When it may be checked next.
    next_ms: u64,
    /// The last check: when, and how many of its jobs were finished then.
    last: Option<(u64, u64)>,
    /// An outcome was recorded since the last check.
    dirty: bool,
}

/// Requests with terminal outcomes to check for their finish.
#[derive(Debug, Default)]
pub(super) struct Finishes {
    watches: Mutex<HashMap<String, Watch>>,
    /// Requests this replica is finishing now.
    busy: Mutex<std::collections::HashSet<String>>,
}

impl Finishes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watch>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn terminal(&self, request_id: &str, now_ms: u64) {
        self.lock()
            .entry(request_id.to_owned())
            .or_insert(Watch {
                next_ms: now_ms,
                last: None,
                dirty: true,
            })
            .dirty = true;
    }

    /// The requests to check now.
    fn due(&self, now_ms: u64) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, w)| w.dirty && w.next_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A check found `finished` of `total` jobs finished: when to check next.
    fn checked(&self, request_id: &str, now_ms: u64, finished: u64, total: u64) {
        let mut watches = self.lock();
        let Some(w) = watches.get_mut(request_id) else {
            return;
        };
        let remaining = total.saturating_sub(finished);
        let gap = match w.last {
            Some((at, before)) if finished > before && now_ms > at => {
                let per_ms = (finished - before) as f64 / (now_ms - at) as f64;
                (remaining as f64 / per_ms / 2.0) as u64
            }
            _ => 1000,
        };
        *w = Watch {
            next_ms: now_ms + gap.clamp(1000, MAX_GAP_MS),
            last: Some((now_ms, finished)),
            dirty: false,
        };
    }

    fn forget(&self, request_id: &str) {
        self.lock().remove(request_id);
    }

    /// Marks the request as being finished by this replica until the guard drops; `None`
    /// when it is already.
    fn start(&self, request_id: &str) -> Option<Finishing<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(request_id.to_owned()).then(|| Finishing {
            finishes: self,
            request_id: request_id.to_owned(),
        })
    }
}

/// A request this replica is finishing.
struct Finishing<'a> {
    finishes: &'a Finishes,
    request_id: String,
}

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        self.finishes
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.request_id);
    }
}

/// Jobs of a request in a terminal state (its never released ones, when cancelled, too).
fn finished(r: &RequestRecord, c: &Counts) -> u64 {
    let n = |v: i64| v.max(0) as u64;
    n(c.succeeded)
        + n(c.failed)
        + n(c.cancelled)
        + u64::from(fleet_shared::ledger::window::never_released(r))
}

impl<B: Backends> Engine<B> {
    /// A job of `request_id` reached a terminal state (its outcome is committed).
    pub(super) fn job_terminal(&self, request_id: &str) {
        self.finishes.terminal(request_id, self.clock.now_ms());
    }

    /// Checks the requests with new terminal outcomes every second until `stop`, then once
    /// more.
    pub(super) async fn finish_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => false,
                _ = stop.cancelled() => true,
            };
            for request_id in self.finishes.due(self.clock.now_ms()) {
                if let Err(e) = self.check_finish(&request_id, false).await {
                    warn!(%request_id, error = %e, "could not check whether the request finished; a sweeper will");
                    self.finishes.forget(&request_id);
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Whether the request finished, and if so its finish (steps 1–4). From the sweeper
    /// (`sweeping`), a request not finished is due again `recover_secs` later.
    pub(super) async fn check_finish(
        &self,
        request_id: &str,
        sweeping: bool,
    ) -> Result<(), LedgerError> {
        let Some(r) = self.ledger.get_request(request_id).await? else {
            self.finishes.forget(request_id);
            return Ok(());
        };
        if r.completion.notified_at_ms.is_some() {
            self.finishes.forget(request_id);
            return Ok(());
        }
        let now = self.clock.now_ms();
        let counts = self.ledger.counts(request_id, now).await?;
        if !is_done(&r, &counts) {
            self.finishes
                .checked(request_id, now, finished(&r, &counts), u64::from(r.total));
            if sweeping {
                let again = now + self.config.worker.recover_secs * 1000;
                self.ledger.defer_finish_check(request_id, again).await?;
            }
            return Ok(());
        }
        self.finishes.forget(request_id);
        self.finish(request_id, &counts).await
    }

    /// The finish of a request found finished with `counts`: nothing when another replica
    /// holds its turn or sent its event, or this replica is finishing it already (its
    /// outcome loop and its sweeper may both find it finished: the turn is the replica's,
    /// so only this guard keeps them from both sending).
    async fn finish(&self, request_id: &str, counts: &Counts) -> Result<(), LedgerError> {
        let Some(_guard) = self.finishes.start(request_id) else {
            return Ok(());
        };
        let turn = self.config.worker.recover_secs * 1000;
        let now = self.clock.now_ms();
        let Some(r) = self
            .ledger
            .finish_request(request_id, &self.replica, now, now + turn)
            .await?
        else {
            return Ok(());
        };
        let sent = async {
            let manifest = match &r.results_prefix {
                Some(prefix) => Some(self.export(&r, prefix).await?),
                None => None,
            };
            let mut event = RequestFinished::of(&r, counts, manifest.as_deref())
                .ok_or_else(|| "the request is not finished".to_owned())?;
            event.cost_usd = Some(
                self.config
                    .prices
                    .estimate(counts.cost_nusd, finished(&r, counts))
                    .total_usd,
            );
            // The turn is still this replica's (an export may have outlasted it).
            if !self.renew_turn(request_id, turn).await {
                return Err("the turn to send it was lost".to_owned());
            }
            if let Some(n) = &self.notifier {
                n.send(&event).await?;
            }
            Ok::<_, String>((event, manifest))
        };
        match self.renewing(request_id, turn, sent).await {
            Ok((event, manifest)) => {
                self.ledger
                    .request_notified(request_id, self.clock.now_ms(), manifest.as_deref())
                    .await?;
                metrics::counter!(fm::REQUESTS_FINISHED, "state" => event.state.clone())
                    .increment(1);
                info!(%request_id, state = %event.state, duration_ms = event.duration_ms, results = ?manifest, "request finished; its event is sent");
            }
            Err(e) => {
                metrics::counter!(fm::EVENT_ERRORS).increment(1);
                warn!(%request_id, error = %e, retry_in_secs = turn / 1000, "request finished, but its event could not be sent; a sweeper tries again when this replica's turn ends");
            }
        }
        Ok(())
    }

    /// Renews this replica's turn to send the request's event; whether it still holds it.
    async fn renew_turn(&self, request_id: &str, turn_ms: u64) -> bool {
        let now = self.clock.now_ms();
        match self
            .ledger
            .finish_request(request_id, &self.replica, now, now + turn_ms)
            .await
        {
            Ok(held) => held.is_some(),
            Err(e) => {
                warn!(%request_id, error = %e, "could not renew the turn to send the request's event");
                false
            }
        }
    }

    /// Runs `work` (the export and the send), renewing this replica's turn every third of
    /// it meanwhile.
    async fn renewing<T>(
        &self,
        request_id: &str,
        turn_ms: u64,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::pin!(work);
        let mut renew = tokio::time::interval(Duration::from_millis((turn_ms / 3).max(1)));
        renew.tick().await;
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = renew.tick() => {
                    if !self.renew_turn(request_id, turn_ms).await {
                        warn!(%request_id, "lost the turn to send the request's event while exporting or sending it");
                    }
                }
            }
        }
    }

    /// Exports the request's results under `prefix`; the manifest's `s3://`.
    async fn export(&self, r: &RequestRecord, prefix: &str) -> Result<String, String> {
        let base = fleet_shared::results::export_base(prefix)?;
        let s3 = self
            .s3
            .as_ref()
            .ok_or_else(|| "no S3 client to export the results with".to_owned())?;
        fleet_shared::results::export(self.ledger.as_ref(), s3, &r.request_id, r.job_shards, &base)
            .await
            .map(|m| m.manifest)
            .map_err(|e| format!("exporting the results: {e}"))
    }

    /// The sweeper's part: the requests due for a check, at most `limit` a pass.
    pub(super) async fn sweep_finishes(&self, limit: usize) {
        let now = self.clock.now_ms();
        let due = match self.ledger.due_finish_checks(now, limit).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "sweeper could not read the requests due for a finish check");
                return;
            }
        };
        for request_id in due {
            if let Err(e) = self.check_finish(&request_id, true).await {
                warn!(%request_id, error = %e, "sweeper could not check whether the request finished");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Finishes;

    #[test]
    fn checks_come_sooner_as_the_end_nears_and_stop_without_new_outcomes() {
        let f = Finishes::default();
        f.terminal("r", 0);
        assert_eq!(
            f.due(0),
            vec!["r".to_owned()],
            "checked at once the first time"
        );
        // 100 of 1,000 finished: no pace known yet, a second later.
        f.checked("r", 0, 100, 1000);
        assert!(f.due(999).is_empty(), "not before a second");
        assert!(f.due(1000).is_empty(), "and only after a new outcome");
        f.terminal("r", 500);
        assert_eq!(f.due(1000).len(), 1);
        // 200 more in 2 s: 700 left at 100/s, 7 s; half of it.
        f.checked("r", 2000, 300, 1000);
        f.terminal("r", 2100);
        assert!(f.due(5499).is_empty());
        assert_eq!(f.due(5500).len(), 1);
        // A slow pace is capped at 15 s.
        f.checked("r", 5500, 301, 1000);
        f.terminal("r", 5600);
        assert!(f.due(20_499).is_empty());
        assert_eq!(f.due(20_500).len(), 1);
        f.forget("r");
        assert!(f.due(u64::MAX).is_empty());
    }

    #[test]
    fn one_finish_of_a_request_at_a_time_in_a_replica() {
        let f = Finishes::default();
        let first = f.start("r").expect("the first");
        assert!(f.start("r").is_none(), "not twice at once");
        assert!(f.start("q").is_some(), "another request may");
        drop(first);
        assert!(f.start("r").is_some(), "again once the first is over");
    }
}
