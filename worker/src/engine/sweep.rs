//! The sweeper: every `worker.sweep_secs` (jittered) it reads the due index, a few entries
//! per partition and pass (never a table scan), and repairs what the feed lost:
//!
//! - a handed-off task whose replica stopped renewing its lease is adopted (lease
//!   partitions `L#n`);
//! - a job whose message looks lost is sent again: a lease that expired with no task, or a
//!   PENDING or RETRYING job nobody claimed (waiting partitions `W#n`), due more than
//!   `worker.recover_secs` before the queue's frontier (see [`super::views::Frontier`]).
//!   The re-sent job goes through the normal claim, so racing sweepers cannot both run it.
//! - a release of a windowed request's jobs (release partitions `X#n`) older than the same
//!   bound is checked: its jobs still PENDING with no due entry had no message, and are sent
//!   (see [`window::check_release`]).
//!
//! - a request whose completion event was not sent (partition `F#0`) is checked once due:
//!   a finished one gets its event (see [`super::finish`]).
//!
//! Leases and waiting jobs are in partitions of their own, so a backlog of waiting jobs
//! never delays the adoption of a task whose replica died.

use std::sync::Arc;
use std::time::Duration;

use fleet_shared::ledger::{Adopted, DueEntry, DueKind, Ledger, RequestLedger, window};
use fleet_shared::message::{JobMessage, RouteReason, RouteRule, Target};
use fleet_shared::metrics as fm;
use fleet_shared::queue::JobQueue;
use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::attempt::{Attempt, AttemptEnd, TaskInfo};
use super::events::Noted;
use super::{Backends, Engine};
use crate::acks::Acker;
use crate::dispatch::TaskLauncher;
use crate::routing::Route;

/// Entries the sweeper reads per partition and pass.
const SWEEP_BATCH: usize = 25;

/// Request items read during one pass, by request id (`None`: no such request).
type RequestCache = std::collections::HashMap<String, Option<fleet_shared::ledger::RequestRecord>>;

impl<B: Backends> Engine<B> {
    pub(super) async fn sweep_loop(
        self: Arc<Self>,
        tracker: TaskTracker,
        acker: Acker,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let period = Duration::from_secs(self.config.worker.sweep_secs);
        // A first pass at once: it fills the backlog gauges and proves DynamoDB reachable.
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            self.sweep_once(&tracker, &acker, &hard_stop).await;
            pause = period.mul_f64(rand::rng().random_range(0.5..1.5));
        }
    }

    /// One pass over every partition of the due index.
    async fn sweep_once(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        let w = &self.config.worker;
        let skew = w.skew_ms();
        let recover = w.recover_secs * 1000;
        // The queue's depth feeds the backlog gauge (autoscaling, alerts); whether a message
        // is lost is decided from the ledger (the frontier), not from this approximate count.
        match self.queue.backlog().await {
            Ok(b) => {
                self.health.sqs_ok();
                metrics::gauge!(fm::QUEUE_BACKLOG).set(b as f64);
            }
            Err(e) => warn!(error = %e, "sweeper could not read the queue's backlog"),
        }
        let quiet = Duration::from_secs(w.wait_time_secs.max(1));
        let frontier = self.frontier.frontier(self.clock.now_ms(), quiet);
        let mut oldest_waiting: Option<u64> = None;
        let mut read_all = true;
        let shards = self.ledger.index_shards().max(1);
        let start = rand::rng().random_range(0..shards);
        // The request items the release checks of this pass read, each once.
        let mut requests = RequestCache::default();
        for i in 0..shards {
            let shard = (start + i) % shards;
            for kind in [DueKind::Lease, DueKind::Waiting] {
                let now = self.clock.now_ms();
                let entries = match self
                    .ledger
                    .due(kind, shard, now.saturating_sub(skew), SWEEP_BATCH)
                    .await
                {
                    Ok(e) => {
                        self.health.dynamodb_ok();
                        e
                    }
                    Err(e) => {
                        warn!(shard, ?kind, error = %e, "sweeper could not read the due index");
                        read_all = false;
                        continue;
                    }
                };
                if kind == DueKind::Waiting
                    && let Some(first) = entries.first()
                {
                    oldest_waiting =
                        Some(oldest_waiting.map_or(first.at_ms, |o| o.min(first.at_ms)));
                }
                // Waiting or unleased jobs due before this are behind the queue: lost.
                let due_before =
                    frontier.map(|f| f.min(now.saturating_sub(skew)).saturating_sub(recover));
                for e in entries {
                    if kind == DueKind::Lease && e.task.is_some() {
                        if self.tasks.adoptable() {
                            self.try_adopt(&e, tracker, acker, hard_stop).await;
                        }
                        continue;
                    }
                    let Some(due_before) = due_before else {
                        continue;
                    };
                    if e.at_ms < due_before {
                        self.try_requeue(&e, now, due_before, recover).await;
                    }
                }
            }
            let now = self.clock.now_ms();
            if let Some(f) = frontier {
                let due_before = f.min(now.saturating_sub(skew)).saturating_sub(recover);
                if !self
                    .check_releases(shard, now, due_before, &mut requests)
                    .await
                {
                    read_all = false;
                }
            }
        }
        self.repair_windows();
        self.sweep_finishes(SWEEP_BATCH).await;
        if read_all {
            let age = oldest_waiting.map_or(0, |t| self.clock.now_ms().saturating_sub(t));
            metrics::gauge!(fm::OLDEST_WAITING_JOB).set(age as f64 / 1000.0);
        }
    }

    async fn try_adopt(
        self: &Arc<Self>,
        e: &DueEntry,
        tracker: &TaskTracker,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        // An adopted task counts against the ECS limit, not the receive slots.
        let Some(permit) = self.ecs_limit.try_acquire() else {
            return;
        };
        let w = &self.config.worker;
        match self
            .ledger
            .adopt(
                e,
                &self.replica,
                self.clock.now_ms(),
                w.lease_ms(),
                w.skew_ms(),
            )
            .await
        {
            Ok(Some(adopted)) => {
                self.note(Noted::Adopted {
                    job: &e.job.to_string(),
                    fence: adopted.lease.fence,
                    attempt: adopted.lease.attempt,
                });
                info!(job_id = %e.job, task = ?e.task, previous_owner = ?e.owner, fence = adopted.lease.fence, "adopted a handed-off task");
                let me = self.clone();
                let acker = acker.clone();
                let hard_stop = hard_stop.clone();
                tracker.spawn(async move {
                    me.follow_adopted(adopted, &acker, &hard_stop).await;
                    drop(permit);
                });
            }
            Ok(None) => debug!(job_id = %e.job, "someone else adopted it first"),
            Err(err) => warn!(job_id = %e.job, error = %err, "adoption failed"),
        }
    }

    async fn try_requeue(&self, e: &DueEntry, now: u64, due_before: u64, recover: u64) {
        let r = match self.ledger.requeue(e, now, due_before, recover).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(err) => {
                warn!(job_id = %e.job, error = %err, "could not mark a job for re-sending");
                return;
            }
        };
        // The tenant is the request's (not kept on the job item): for its message group and
        // the cap it counts against.
        let tenant = match self.ledger.get_request(r.job.request_id()).await {
            Ok(Some(req)) => req.tenant,
            _ => None,
        };
        let message = match r.message(now, tenant) {
            Ok(m) => m,
            Err(err) => {
                warn!(job_id = %r.job, error = %err, "cannot rebuild the job's message");
                return;
            }
        };
        match self.queue.send(&message.to_body(), Duration::ZERO).await {
            Ok(()) => {
                self.note(Noted::Requeued {
                    job: &message.job_id,
                    fence: e.fence,
                    state: r.state,
                });
                info!(job_id = %message.job_id, state = %r.state, overdue_ms = now.saturating_sub(e.at_ms), "message looked lost; sent the job again");
            }
            Err(err) => {
                warn!(job_id = %message.job_id, error = %err, "re-send failed; the next pass tries again")
            }
        }
    }

    /// Checks the release records of `shard` released before `due_before` (see
    /// [`window::check_release`]) and sends the jobs of theirs that had no message. `false`
    /// when the due index could not be read.
    async fn check_releases(
        &self,
        shard: u32,
        now: u64,
        due_before: u64,
        requests: &mut RequestCache,
    ) -> bool {
        let releases = match self
            .ledger
            .due_releases(shard, due_before, SWEEP_BATCH)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(shard, error = %e, "sweeper could not read the release records");
                return false;
            }
        };
        for release in releases {
            let request_id = &release.request_id;
            let request = match requests.get(request_id) {
                Some(r) => r.clone(),
                None => match self.ledger.get_request(request_id).await {
                    Ok(r) => {
                        requests.insert(request_id.clone(), r.clone());
                        r
                    }
                    Err(e) => {
                        warn!(%request_id, error = %e, "could not read the request of a release; the next pass tries again");
                        continue;
                    }
                },
            };
            let unsent = match window::check_release(
                self.ledger.as_ref(),
                &release,
                request.as_ref(),
                now,
            )
            .await
            {
                Ok(u) => u,
                Err(e) => {
                    warn!(%request_id, range = ?release.range, error = %e, "could not check a release; the next pass tries again");
                    continue;
                }
            };
            let tenant = request.as_ref().and_then(|r| r.tenant.as_deref());
            let bodies = window::bodies(&unsent, now, tenant);
            if bodies.is_empty() {
                continue;
            }
            // The jobs have their due entries now: a failed send is repaired like any lost
            // message.
            match self.queue.send_all(&bodies).await {
                Ok(()) => {
                    for r in &unsent {
                        self.note(Noted::Requeued {
                            job: &r.job.to_string(),
                            fence: 0,
                            state: r.state,
                        });
                    }
                    info!(%request_id, range = ?release.range, sent = bodies.len(), "released jobs had no message; sent them");
                }
                Err(err) => {
                    warn!(%request_id, error = %err, "re-send failed; the next pass tries again")
                }
            }
        }
        true
    }

    /// Follows an adopted task to its end and records the outcome.
    async fn follow_adopted(&self, adopted: Adopted, acker: &Acker, hard_stop: &CancellationToken) {
        let job = &adopted.lease.job;
        let msg = match JobMessage::for_job(
            job,
            &adopted.job_type,
            &adopted.payload_json,
            adopted.lease.attempt,
            adopted.lease.max_attempts,
            None,
            adopted.enqueued_at_ms,
        ) {
            Ok(m) => m,
            Err(err) => {
                warn!(job_id = %job, error = %err, "cannot rebuild the adopted job's message");
                return;
            }
        };
        let span = info_span!("job", request_id = %msg.request_id, job_id = %msg.job_id);
        let route = Route {
            target: Target::Ecs,
            reason: RouteReason::of(RouteRule::Adopted),
        };
        let a = Attempt::adopted(&msg, adopted.lease.clone());
        *a.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(adopted.task.clone());
        a.start_live(&self.live);
        let work = async {
            let end = self.tasks.wait(&adopted.task).await;
            AttemptEnd::Done(end.outcome.clone(), TaskInfo::from(&end))
        };
        self.guarded(&a, &route, work, acker, hard_stop)
            .instrument(span)
            .await;
        a.end_live(&self.live);
    }
}
