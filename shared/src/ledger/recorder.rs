//! A replica's state changes, batched: every outcome, release and cancel goes through one
//! [`Recorder`], which commits what arrived within a few milliseconds as one transaction
//! with the counter items it moves (at most 100 items, DynamoDB's limit). One commit is in
//! flight at a time, so a replica never contends with itself for its counter items, and at
//! load a transaction carries dozens of outcomes: the counters cost a fraction of a write
//! per job. A commit that is throttled or fails on the way is tried again, with backoff,
//! for as long as the caller waits for it; a caller that gives up (its lease is lost) is
//! dropped from the next try.
//!
//! The recorder also carries the replica's live reports (how many of each request's jobs it
//! runs now) in the counter items, with its commits and every [`LIVE_EVERY`] otherwise, and
//! adds the outcomes it committed to their requests' throughput series (see
//! [`series`](super::series)) every [`FLUSH_EVERY`](super::series::FLUSH_EVERY).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::series::Unwritten;
use super::{Change, Ledger, LedgerError, LiveReport, counter_slot};
use crate::error::ErrorClass;
use crate::time::Clock;

/// Longest a change waits for others to share its transaction: at 200 outcomes a second a
/// replica commits ten at a time, so the counter items cost a fifth of a write unit per job.
pub const LINGER: Duration = Duration::from_millis(50);
/// How often live reports are refreshed when no commit carries them.
pub const LIVE_EVERY: Duration = Duration::from_secs(10);
/// DynamoDB's limit on the items of one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Jobs a replica runs now, per request.
#[derive(Debug, Default)]
pub struct Live {
    map: Mutex<HashMap<String, LiveCount>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LiveCount {
    running: u32,
    after_retry: u32,
    /// Changed since its last report.
    dirty: bool,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveCount>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attempt of a job of `request_id` started on this replica.
    pub fn started(&self, request_id: &str, after_retry: bool) {
        let mut m = self.lock();
        let c = m.entry(request_id.to_owned()).or_default();
        c.running += 1;
        c.after_retry += u32::from(after_retry);
        c.dirty = true;
    }

    /// That attempt ended (recorded, released or lost).
    pub fn ended(&self, request_id: &str, after_retry: bool) {
        let mut m = self.lock();
        if let Some(c) = m.get_mut(request_id) {
            c.running = c.running.saturating_sub(1);
            c.after_retry = c.after_retry.saturating_sub(u32::from(after_retry));
            c.dirty = true;
        }
    }

    /// Reports for `requests`, or (`None`) for every request that changed or still runs;
    /// requests reported at zero are forgotten.
    fn reports(
        &self,
        replica: &str,
        now_ms: u64,
        requests: Option<&BTreeSet<String>>,
    ) -> Vec<LiveReport> {
        let mut m = self.lock();
        let mut out = Vec::new();
        for (rid, c) in m.iter_mut() {
            let wanted = match requests {
                Some(set) => set.contains(rid),
                None => c.dirty || c.running > 0,
            };
            if wanted {
                c.dirty = false;
                out.push(LiveReport {
                    request_id: rid.clone(),
                    replica: replica.to_owned(),
                    running: c.running,
                    after_retry: c.after_retry,
                    at_ms: now_ms,
                });
            }
        }
        m.retain(|_, c| c.running > 0 || c.dirty);
        out
    }
}

struct Pending {
    change: Change,
    reply: oneshot::Sender<Result<(), LedgerError>>,
}

impl Pending {
    fn items(&self) -> usize {
        1 + usize::from(self.change.writes_history())
    }
}

/// Sends a replica's changes to its batching task.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("change", &self.change)
            .finish()
    }
}

/// The batching task's handle: [`RecorderHandle::finish`] stops it once every change sent
/// so far is committed or abandoned (its senders may live on: they are refused after).
pub struct RecorderHandle {
    task: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
}

impl RecorderHandle {
    pub async fn finish(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            warn!(error = %e, "the recorder task failed");
        }
    }
}

impl Recorder {
    /// Starts the batching task for replica `replica` (its name picks its counter slot).
    pub fn spawn<L: Ledger>(
        ledger: Arc<L>,
        replica: &str,
        live: Arc<Live>,
        clock: Clock,
    ) -> (Recorder, RecorderHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(
            ledger,
            counter_slot(replica),
            replica.to_owned(),
            live,
            clock,
            rx,
            stop.clone(),
        ));
        (Recorder { tx }, RecorderHandle { task, stop })
    }

    /// Commits `change` (with whatever else is pending) and waits for the answer: `Ok` once
    /// written, `Stale` when its condition did not hold (the lease is gone), a permanent
    /// error when DynamoDB refused it as invalid.
    pub async fn commit(&self, change: Change) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Pending { change, reply }).is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> LedgerError {
    LedgerError::Aws {
        op: "TransactWriteItems",
        class: ErrorClass::Transient,
        message: "the recorder has stopped".into(),
    }
}

async fn run<L: Ledger>(
    ledger: Arc<L>,
    slot: String,
    replica: String,
    live: Arc<Live>,
    clock: Clock,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(LIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut series = Unwritten::default();
    loop {
        let first = tokio::select! {
            biased;
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
            _ = stop.cancelled() => {
                // Nothing waits any more but what is queued: commit that, then stop.
                match rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => {
                        let reports = live.reports(&replica, clock.now_ms(), None);
                        if !reports.is_empty() {
                            let _ = ledger.commit(&slot, &[], &reports).await;
                        }
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                let reports = live.reports(&replica, clock.now_ms(), None);
                if !reports.is_empty()
                    && let Err(e) = ledger.commit(&slot, &[], &reports).await
                {
                    debug!(error = %e, "live report not written; the next one will be");
                }
                write_series(ledger.as_ref(), &mut series, clock.now_ms()).await;
                continue;
            }
        };
        let mut batch = vec![first];
        let mut requests: BTreeSet<String> = BTreeSet::new();
        requests.insert(batch[0].change.job().request_id().to_owned());
        let mut items = batch[0].items();
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        let mut carry = None;
        while items + requests.len() < MAX_TRANSACTION_ITEMS {
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => {
                        let rid = p.change.job().request_id();
                        let more = p.items() + usize::from(!requests.contains(rid));
                        if items + requests.len() + more > MAX_TRANSACTION_ITEMS {
                            carry = Some(p);
                            break;
                        }
                        items += p.items();
                        requests.insert(rid.to_owned());
                        batch.push(p);
                    }
                    None => break,
                },
                _ = &mut linger => break,
            }
        }
        let ctx = Ctx {
            ledger: ledger.as_ref(),
            slot: &slot,
            replica: &replica,
            live: &live,
            clock: &clock,
        };
        commit_batch(&ctx, &mut series, batch, &requests).await;
        if let Some(p) = carry {
            let mut requests = BTreeSet::new();
            requests.insert(p.change.job().request_id().to_owned());
            commit_batch(&ctx, &mut series, vec![p], &requests).await;
        }
        if series.due(clock.now_ms()) {
            write_series(ledger.as_ref(), &mut series, clock.now_ms()).await;
        }
    }
    write_series(ledger.as_ref(), &mut series, clock.now_ms()).await;
}

/// Writes the throughput sums added up so far; a sum not written is kept for the next time.
async fn write_series<L: Ledger>(ledger: &L, series: &mut Unwritten, now_ms: u64) {
    for (request_id, point) in series.take(now_ms) {
        if let Err(e) = ledger.add_throughput(&request_id, &point).await {
            debug!(%request_id, error = %e, "throughput not written; the next flush tries again");
            series.put_back(request_id, point);
        }
    }
}

/// What every commit of a replica's recorder uses.
struct Ctx<'a, L> {
    ledger: &'a L,
    slot: &'a str,
    replica: &'a str,
    live: &'a Live,
    clock: &'a Clock,
}

async fn commit_batch<L: Ledger>(
    ctx: &Ctx<'_, L>,
    series: &mut Unwritten,
    mut batch: Vec<Pending>,
    requests: &BTreeSet<String>,
) {
    let Ctx {
        ledger,
        slot,
        replica,
        live,
        clock,
    } = *ctx;
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .with_jitter()
        .build();
    loop {
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let changes: Vec<Change> = batch.iter().map(|p| p.change.clone()).collect();
        let reports = live.reports(replica, clock.now_ms(), Some(requests));
        match ledger.commit(slot, &changes, &reports).await {
            Ok(results) => {
                let now = clock.now_ms();
                for (p, r) in batch.into_iter().zip(results) {
                    if r.is_ok() {
                        series.add(&p.change, now);
                    }
                    let _ = p.reply.send(r);
                }
                return;
            }
            Err(e) if e.class().is_retryable() => {
                let pause = delays.next().unwrap_or(Duration::from_secs(2));
                debug!(error = %e, changes = changes.len(), retry_in_ms = pause.as_millis() as u64, "commit failed; trying again");
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                warn!(error = %e, changes = changes.len(), "commit refused");
                let message = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(LedgerError::Aws {
                        op: "TransactWriteItems",
                        class: ErrorClass::Permanent,
                        message: message.clone(),
                    }));
                }
                return;
            }
        }
    }
}
