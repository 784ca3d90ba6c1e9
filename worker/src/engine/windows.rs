//! Releasing windowed requests' jobs (see [`fleet_shared::ledger::window`]). After this
//! replica records a job of a windowed request finished, its release loop releases the
//! next ones and sends their messages; finishes that come close together are released by
//! one call. One replica at a time releases a request (its *turn*, 5 s renewed by each
//! release): while it holds the turn it looks again every 100 ms (500 ms when it found no
//! room), and the others' finishes only read the request item. The loop runs through the
//! drain, as finishes keep coming.
//!
//! A replica that stops between recording a finish and releasing leaves that room to the
//! next release of the request: any later finish on any replica, a `status` call, or this
//! module's repair: at each sweeper pass, a replica releases for the windowed requests
//! whose last finish it saw more than `worker.recover_secs` ago (and less than ten minutes
//! ago), so a request whose last running job was the one lost does not wait for ever.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::ledger::window::{self, ReleaseError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Backends, Engine};

/// How long the loop gathers finishes before it releases for them.
const GATHER: Duration = Duration::from_millis(100);

/// How long a replica's turn as a request's releaser lasts after its last release.
const TURN: Duration = Duration::from_secs(5);

/// How often the releaser looks again when its last look released nothing.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Requests seen finishing for longer than this are not repaired by this replica.
const REPAIR_FOR: Duration = Duration::from_secs(600);

/// Windowed requests with finishes to release for.
#[derive(Debug, Default)]
pub(super) struct Windows {
    pending: Mutex<HashSet<String>>,
    /// When this replica last recorded a finish of each windowed request.
    seen: Mutex<HashMap<String, Instant>>,
    wake: Notify,
}

impl Windows {
    fn finished(&self, request_id: &str) {
        lock(&self.pending).insert(request_id.to_owned());
        let mut seen = lock(&self.seen);
        seen.insert(request_id.to_owned(), Instant::now());
        if seen.len() > 10_000 {
            seen.retain(|_, at| at.elapsed() < REPAIR_FOR);
        }
        drop(seen);
        self.wake.notify_one();
    }

    /// Queues the requests whose last finish here is between `quiet` and [`REPAIR_FOR`] old.
    fn repair(&self, quiet: Duration) {
        let mut seen = lock(&self.seen);
        seen.retain(|_, at| at.elapsed() < REPAIR_FOR);
        let quiet: Vec<String> = seen
            .iter()
            .filter(|(_, at)| at.elapsed() >= quiet)
            .map(|(id, _)| id.clone())
            .collect();
        drop(seen);
        if !quiet.is_empty() {
            lock(&self.pending).extend(quiet);
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<String> {
        lock(&self.pending).drain().collect()
    }

    /// Queues `request_id` again after `delay`, without holding up the loop.
    fn later(self: &Arc<Self>, request_id: String, delay: Duration) {
        let windows = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lock(&windows.pending).insert(request_id);
            windows.wake.notify_one();
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B: Backends> Engine<B> {
    /// A job of `request_id` finished (its outcome is committed): when the request has a
    /// window, the next of its jobs are released soon.
    pub(super) async fn job_finished(&self, request_id: &str) {
        if self
            .view_says(request_id, |v| v.windowed && !v.cancelled)
            .await
        {
            self.windows.finished(request_id);
        }
    }

    /// The sweeper's pass: requests quiet here for a while get a release (see the module).
    pub(super) fn repair_windows(&self) {
        self.windows
            .repair(Duration::from_secs(self.config.worker.recover_secs));
    }

    /// Releases for the requests with finishes until `stop`, then once more.
    pub(super) async fn release_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = self.windows.wake.notified() => false,
                () = stop.cancelled() => true,
            };
            tokio::time::sleep(GATHER).await;
            for request_id in self.windows.take() {
                let clock = self.clock;
                let releaser = window::Releaser {
                    name: &self.replica,
                    turn_ms: TURN.as_millis() as u64,
                };
                match window::release_and_send(
                    self.ledger.as_ref(),
                    self.queue.as_ref(),
                    &request_id,
                    releaser,
                    || clock.now_ms(),
                )
                .await
                {
                    Ok(sent) => {
                        debug!(%request_id, sent = sent.messages, turn = sent.turn, "released jobs of the request's window");
                        if sent.turn {
                            // This replica releases for the whole fleet while its turn
                            // lasts: it looks again soon, finishes here or not.
                            let again = if sent.messages > 0 { GATHER } else { IDLE_POLL };
                            self.windows.later(request_id, again);
                        }
                    }
                    Err(ReleaseError::Ledger(e)) => {
                        warn!(%request_id, error = %e, "could not release the request's next jobs; trying again");
                        self.windows.later(request_id, Duration::from_millis(250));
                    }
                    Err(e @ ReleaseError::Queue(_)) => {
                        warn!(%request_id, error = %e, "released jobs were not sent");
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}
