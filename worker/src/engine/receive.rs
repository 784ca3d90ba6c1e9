//! The receive loops: each long-polls the jobs queue for as many messages as there is room
//! to start now, and hands each to [`super::attempt`]. And the learner's loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_shared::metrics as fm;
use fleet_shared::queue::{JobQueue, MAX_BATCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::events::Noted;
use super::{Backends, Engine};
use crate::acks::Acker;

/// Longest a receive waits for a batch of free slots (see `receive_loop`).
const RECEIVE_LINGER: Duration = Duration::from_millis(500);

/// A message asked for or received that holds no target permit yet (see `Engine::room`);
/// dropped when its attempt holds one, or ends before.
pub(super) struct Unstarted(Arc<AtomicUsize>);

impl Unstarted {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B: Backends> Engine<B> {
    /// Room for messages to receive: free room under the target limits (a message's target
    /// is known only after its claim) and the slots configured beyond the Lambda limit (so
    /// that receiving and claiming overlap executions), less the messages received that do
    /// not hold their permit yet.
    fn room(&self) -> usize {
        let ecs = if self.config.ecs.enabled() {
            self.ecs_limit.available()
        } else {
            0
        };
        let ahead =
            (self.config.worker.concurrency).saturating_sub(self.config.lambda_concurrency().1);
        (self.lambda_limit.available() + ecs + ahead)
            .saturating_sub(self.unstarted.load(Ordering::Relaxed))
    }

    pub(super) async fn receive_loop(
        self: Arc<Self>,
        slots: Arc<Semaphore>,
        tracker: TaskTracker,
        acker: Acker,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let w = &self.config.worker;
        let wait = Duration::from_secs(w.wait_time_secs);
        let mut errors = 0u32;
        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.cancelled() => return,
            };
            let gate = tokio::select! {
                g = self.receive_gate.lock() => g,
                _ = shutdown.cancelled() => return,
            };
            // Only what can start now: free slots, and room under the target limits that
            // messages already received do not take (they claim theirs within a call or so).
            while self.room() == 0 {
                let unstarted = self.unstarted.load(Ordering::Relaxed) > 0;
                tokio::select! {
                    () = self.lambda_limit.wait_available(), if !unstarted => {}
                    () = self.ecs_limit.wait_available(), if !unstarted && self.config.ecs.enabled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(5)), if unstarted => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            // A receive asks for a batch: when fewer slots (or less room under the target
            // limits) are free than a batch, the replica is nearly full and they free one
            // by one; it then waits up to RECEIVE_LINGER for more rather than spend a call
            // on one or two messages. Small replicas (under ten slots a batch) never wait.
            let batch = (w.concurrency / 10).clamp(1, MAX_BATCH);
            let linger = tokio::time::sleep(RECEIVE_LINGER);
            tokio::pin!(linger);
            while self.room() < batch || slots.available_permits() + 1 < batch {
                tokio::select! {
                    _ = &mut linger => break,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let room = self.room().clamp(1, MAX_BATCH);
            let mut permits: Vec<(OwnedSemaphorePermit, Unstarted)> =
                vec![(first, Unstarted::new(&self.unstarted))];
            while permits.len() < room {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push((p, Unstarted::new(&self.unstarted))),
                    Err(_) => break,
                }
            }
            // The room is reserved: the next loop may wait for more while this one receives.
            drop(gate);
            // A receive in progress is not abandoned on shutdown: SQS may already have handed
            // it messages, which would then stay hidden for a whole lease. It ends within the
            // long-poll wait, and what it brought is handed straight back.
            let received = tokio::select! {
                r = self.queue.receive(permits.len(), wait, w.lease()) => r,
                _ = hard_stop.cancelled() => return,
            };
            if shutdown.is_cancelled() {
                if let Ok(messages) = received {
                    for m in messages {
                        self.set_visibility(&m.receipt, Duration::ZERO).await;
                    }
                }
                return;
            }
            match received {
                Ok(messages) => {
                    errors = 0;
                    self.health.sqs_ok();
                    if messages.is_empty() {
                        metrics::counter!(fm::EMPTY_RECEIVES).increment(1);
                        self.frontier.empty_receive();
                    } else {
                        self.frontier.busy();
                    }
                    for m in messages {
                        let Some((permit, unstarted)) = permits.pop() else {
                            break;
                        };
                        self.note(Noted::Received);
                        let me = self.clone();
                        let acker = acker.clone();
                        let hard_stop = hard_stop.clone();
                        tracker.spawn(async move {
                            me.handle(m, unstarted, &acker, &hard_stop).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    let pause = Duration::from_millis(200u64 << errors.min(5));
                    warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Publishes durations and refreshes learned routes every `routing.learn_secs`.
    pub(super) async fn learn_loop(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.config.routing.learned {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(self.config.routing.learn_secs)) => {}
                _ = shutdown.cancelled() => return,
            }
            self.learner.sync(self.ledger.as_ref(), &self.config).await;
        }
    }
}
