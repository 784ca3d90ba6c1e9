//! One received message, from its claim to its outcome: parse it, read its request's view,
//! claim the job (or cancel it, when its request was cancelled), route it, run the attempt
//! while a heartbeat renews the lease and the message's visibility, and hand the outcome to
//! [`super::outcome`]. The heartbeat goes on while the outcome is committed, so a slow or
//! throttled ledger never costs the lease of a job that finished. The run itself is in
//! [`super::execute`], the lease and the message's visibility in [`super::lease`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fleet_shared::ids::JobId;
use fleet_shared::ledger::{Change, Claim, ClaimRequest, Lease, Ledger, LedgerError, RequestView};
use fleet_shared::message::{JobEvent, JobMessage, RouteReason, RouteRule, Target, parse_message};
use fleet_shared::metrics as fm;
use fleet_shared::queue::Received;
use fleet_shared::state::JobState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use fleet_shared::ledger::recorder::Live;

use super::events::Noted;
use super::receive::Unstarted;
use super::views::VIEW_TTL;
use super::{Backends, Engine};
use crate::acks::Acker;
use crate::classify::ErrorClass;
use crate::dispatch::{Outcome, TaskEnd};
use crate::routing::{self, Route, RouteInput};

/// How an attempt ended, seen from the replica.
pub(super) enum AttemptEnd {
    Done(Outcome, TaskInfo),
    /// The ledger refused a write (`expired: false`: another replica holds the job now), or
    /// the lease ran out before a renewal landed (`expired: true`).
    LeaseLost {
        expired: bool,
    },
    /// The job's request was cancelled with `--stop-running` while the job ran in a task.
    Cancelled,
    Stopped,
    /// Lambda accepted the attempt (asynchronous invocation) and its message is deleted:
    /// whoever receives its invocation record records the outcome.
    HandedToLambda,
    /// A fleet-wide cap of its job type or tenant had no slot for a while: the job goes
    /// back (the attempt not counted) and its message comes back after this delay, so that
    /// it does not hold a slot of the replica that other jobs could use.
    Deferred(Duration),
}

/// Why the heartbeat stopped.
pub(super) enum Beat {
    LeaseLost { expired: bool },
    Cancelled,
}

/// What a task launcher adds to an outcome.
#[derive(Debug, Default, Clone)]
pub(super) struct TaskInfo {
    pub exit_code: Option<i32>,
    pub stopped_reason: Option<String>,
    /// When the target said to call again (a throttle's `retryAfterSeconds`).
    pub retry_after: Option<Duration>,
    /// What Lambda reported of the attempt's use.
    pub reported: crate::dispatch::Reported,
}

impl From<&TaskEnd> for TaskInfo {
    fn from(e: &TaskEnd) -> Self {
        TaskInfo {
            exit_code: e.exit_code,
            stopped_reason: e.stopped_reason.clone(),
            retry_after: e.retry_after,
            reported: e.reported,
        }
    }
}

/// One claimed (or adopted) attempt: the job, its lease, and the message it came with.
pub(super) struct Attempt<'a> {
    pub msg: &'a JobMessage,
    /// The message's body as sent (what a dead letter or a re-sent message carries).
    pub body: String,
    pub lease: Lease,
    /// The received message, until it is handed off or when there is none (adopted).
    pub message: Option<(&'a Received, Instant)>,
    pub handed_off: AtomicBool,
    /// The task the attempt runs in, once started.
    pub task: std::sync::Mutex<Option<String>>,
    /// Until when the lease is known to be ours (the last renewal's expiry).
    pub until_ms: AtomicU64,
    /// Counted in the replica's live report (from start until its outcome is committed).
    pub live: AtomicBool,
    /// Set while the attempt is handed to Lambda: heartbeats stop (one landing after the
    /// hand-off would shorten the lease it extended).
    pub handing: tokio::sync::Mutex<bool>,
    /// Counted against the room for receives until the attempt holds its target permit.
    pub unstarted: std::sync::Mutex<Option<Unstarted>>,
}

impl Attempt<'_> {
    /// The attempt holds its target permit: no longer counted against the receives' room.
    pub(super) fn started(&self) {
        drop(
            self.unstarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }

    /// Counts the attempt as running on this replica.
    pub fn start_live(&self, live: &Live) {
        if !self.live.swap(true, Ordering::Relaxed) {
            live.started(&self.msg.request_id, self.lease.after_retry);
        }
    }

    /// Stops counting it: called as its outcome goes to the ledger, so the live report in
    /// the same transaction no longer counts it, and again (doing nothing) when it ends.
    pub fn end_live(&self, live: &Live) {
        if self.live.swap(false, Ordering::Relaxed) {
            live.ended(&self.msg.request_id, self.lease.after_retry);
        }
    }

    /// The received message while this replica still holds it.
    pub fn held(&self) -> Option<&Received> {
        match self.message {
            Some((m, _)) if !self.handed_off.load(Ordering::Relaxed) => Some(m),
            _ => None,
        }
    }

    pub fn task(&self) -> Option<String> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<B: Backends> Engine<B> {
    /// A write of attempt `a` the ledger refused: another replica owns the job now.
    pub(super) fn note_stale(&self, a: &Attempt<'_>, op: &'static str) {
        self.note(Noted::Stale {
            job: &a.msg.job_id,
            fence: a.lease.fence,
            op,
            state: None,
        });
    }

    /// Everything that happens to one received message.
    pub(super) async fn handle(
        &self,
        m: Received,
        unstarted: Unstarted,
        acker: &Acker,
        hard_stop: &CancellationToken,
    ) {
        let received_at = Instant::now();
        let (msg, job) = match parse_message(&m.body, self.config.limits.max_message_bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.note(Noted::Malformed);
                warn!(message_id = %m.message_id, error = %e, "malformed message; dead-lettering it");
                self.refuse(&m, None, &e.to_string(), acker).await;
                return;
            }
        };
        let span = info_span!("job", request_id = %msg.request_id, job_id = %msg.job_id);
        async {
            if !self.config.knows_job_type(&msg.job_type) {
                self.note(Noted::Malformed);
                let reason = format!("unknown job type {:?} (not in job_types)", msg.job_type);
                warn!(%reason, "dead-lettering the message");
                self.refuse(&m, Some(&msg), &reason, acker).await;
                return;
            }
            let view = match self
                .views
                .get(self.ledger.as_ref(), &msg.request_id, VIEW_TTL)
                .await
            {
                Ok(v) => v,
                Err(e) => return self.ledger_failed(&m, Some(&msg), e, acker).await,
            };
            if view.cancelled && self.cancel_waiting(&job, &view).await {
                acker.delete(m.receipt);
                return;
            }
            let now = self.clock.now_ms();
            let claim = match self.claim(&msg, &job, &view, now).await {
                Ok(c) => c,
                Err(e) => return self.ledger_failed(&m, Some(&msg), e, acker).await,
            };
            self.health.dynamodb_ok();
            match claim {
                Claim::Claimed(lease) => {
                    self.note(Noted::Claimed {
                        job: &msg.job_id,
                        fence: lease.fence,
                        attempt: lease.attempt,
                    });
                    if let Some(due) = lease.due_ms {
                        self.frontier.claimed(due);
                    }
                    if lease.attempt == 1 && msg.enqueued_at_ms > 0 {
                        metrics::histogram!(fm::QUEUE_WAIT)
                            .record(now.saturating_sub(msg.enqueued_at_ms) as f64 / 1000.0);
                    }
                    let a = Attempt {
                        msg: &msg,
                        body: m.body.clone(),
                        until_ms: AtomicU64::new(lease.until_ms),
                        lease,
                        message: Some((&m, received_at)),
                        handed_off: AtomicBool::new(false),
                        task: std::sync::Mutex::new(None),
                        live: AtomicBool::new(false),
                        handing: tokio::sync::Mutex::new(false),
                        unstarted: std::sync::Mutex::new(Some(unstarted)),
                    };
                    a.start_live(&self.live);
                    self.run_attempt(&a, acker, hard_stop).await;
                    a.end_live(&self.live);
                }
                Claim::NotYet { state, until_ms } => {
                    self.note(Noted::Deferred { state });
                    // A copy of a running job's message comes back within a lease period, as
                    // under a renewed lease, also when the job was handed to Lambda with a
                    // lease of its event age: it then finds the job finished and is deleted.
                    let mut wait_ms = until_ms.saturating_sub(now);
                    if state == JobState::Running {
                        let w = &self.config.worker;
                        wait_ms = wait_ms.min(w.lease_ms() + w.skew_ms());
                    }
                    debug!(%state, wait_ms, "not claimable yet; deferring the message");
                    self.defer(&m, wait_ms, acker).await;
                }
                Claim::Finished {
                    key,
                    state,
                    last_error,
                    error_class,
                } => {
                    self.note(Noted::Obsolete { state });
                    debug!(%state, "job already finished; deleting the message");
                    // A FAILED job's dead-letter record may have been lost to a crash between
                    // the ledger write and the send: send it again (readers de-duplicate by
                    // job id).
                    if state == JobState::Failed {
                        let class = error_class.unwrap_or(ErrorClass::Permanent);
                        let error = last_error.unwrap_or_else(|| "failed".into());
                        let history = self.ledger.history(&key).await.unwrap_or_default();
                        let record = self.failure_record(Some(&msg), class, &error, &history);
                        if !self.dead_letter(&m.body, &record).await {
                            return;
                        }
                    }
                    acker.delete(m.receipt);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A ledger call failed before any attempt: a permanent error (the item would be
    /// invalid, access denied) dead-letters the message with the reason; any other makes it
    /// come back in a few seconds.
    async fn ledger_failed(
        &self,
        m: &Received,
        msg: Option<&JobMessage>,
        e: LedgerError,
        acker: &Acker,
    ) {
        self.note(Noted::LedgerError);
        if e.class() == ErrorClass::Permanent {
            warn!(error = %e, "the ledger refused the job; dead-lettering the message");
            self.refuse(m, msg, &format!("the ledger refused the job: {e}"), acker)
                .await;
        } else {
            warn!(error = %e, "ledger call failed; the message will come back");
            self.set_visibility(&m.receipt, Duration::from_secs(5))
                .await;
        }
    }

    /// Cancels a job of a cancelled request that has not started; false when it has (it is
    /// running, or finished, or its item does not exist yet).
    async fn cancel_waiting(&self, job: &JobId, view: &RequestView) -> bool {
        let key = fleet_shared::ledger::item::job_key(job, view.job_shards);
        for from in [JobState::Pending, JobState::Retrying] {
            let change = Change::CancelWaiting {
                job: job.clone(),
                key: key.clone(),
                from,
                now_ms: self.clock.now_ms(),
            };
            match self.recorder().commit(change).await {
                Ok(()) => {
                    self.note(Noted::CancelledWaiting {
                        job: &job.to_string(),
                    });
                    info!(%from, "request cancelled; job cancelled before it started");
                    return true;
                }
                Err(LedgerError::Stale { .. }) => continue,
                Err(e) => {
                    warn!(error = %e, "could not cancel the job; it goes through the claim");
                    return false;
                }
            }
        }
        false
    }

    async fn claim(
        &self,
        msg: &JobMessage,
        job: &JobId,
        view: &RequestView,
        now: u64,
    ) -> Result<Claim, LedgerError> {
        let mut payload_json = msg.payload.to_string();
        if !view.exists && payload_json.len() > self.config.claim_check.inline_max_bytes {
            payload_json = self.claim_check_payload(job, payload_json).await?;
        }
        self.ledger
            .claim(&ClaimRequest {
                job,
                shards: view.job_shards,
                job_type: &msg.job_type,
                payload_json: &payload_json,
                max_attempts: msg.max_attempts,
                owner: &self.replica,
                now_ms: now,
                lease_ms: self.config.worker.lease_ms(),
                skew_ms: self.config.worker.skew_ms(),
                enqueued_at_ms: msg.enqueued_at_ms,
                direct: !view.exists,
            })
            .await
    }

    /// Stores a large payload of a message sent straight to SQS in S3 (the claim-check) and
    /// returns its reference; a permanent error without a claim-check prefix.
    async fn claim_check_payload(
        &self,
        job: &JobId,
        payload_json: String,
    ) -> Result<String, LedgerError> {
        let refuse = |message: String| LedgerError::Aws {
            op: "PutObject",
            class: ErrorClass::Permanent,
            message,
        };
        let (Some(prefix), Some(s3)) = (self.config.claim_check.location(), self.s3.as_ref())
        else {
            return Err(refuse(format!(
                "the payload is {} bytes, over claim_check.inline_max_bytes ({}), and no claim_check.prefix is configured to keep it in S3",
                payload_json.len(),
                self.config.claim_check.inline_max_bytes
            )));
        };
        let uri = fleet_shared::claim_check::object_uri(&prefix, job.request_id(), job.index());
        let body = payload_json.into_bytes();
        let reference = fleet_shared::claim_check::reference(&uri, &body);
        fleet_shared::claim_check::put(s3, &uri, body)
            .await
            .map_err(|message| LedgerError::Aws {
                op: "PutObject",
                class: ErrorClass::Transient,
                message,
            })?;
        Ok(reference.to_string())
    }

    pub(super) fn event(&self, a: &Attempt<'_>) -> JobEvent {
        JobEvent {
            request_id: a.msg.request_id.clone(),
            job_id: a.msg.job_id.clone(),
            job_type: a.msg.job_type.clone(),
            attempt: a.lease.attempt,
            fence: a.lease.fence,
            payload: a.msg.payload.clone(),
            large_results: None,
            route: None,
            lease: None,
        }
    }

    async fn run_attempt(&self, a: &Attempt<'_>, acker: &Acker, hard_stop: &CancellationToken) {
        // Attempts whose replica died or lost its lease count: a job that keeps killing its
        // replicas must not run forever. The claim that would start one attempt too many
        // records the job FAILED instead.
        let max_attempts = self
            .config
            .max_attempts_for(&a.msg.job_type, a.lease.max_attempts.or(a.msg.max_attempts));
        let previous_target = match a.lease.previous.as_ref().map(|p| p.target.as_str()) {
            Some("ecs") => Target::Ecs,
            _ => Target::Lambda,
        };
        if a.lease.attempt > max_attempts {
            let outcome = Outcome::Failed {
                class: ErrorClass::Transient,
                message: format!(
                    "attempts exhausted: not starting attempt {} of at most {max_attempts}; the previous ones did not finish (their replicas stopped or lost their leases)",
                    a.lease.attempt
                ),
            };
            let route = Route {
                target: previous_target,
                reason: RouteReason::of(RouteRule::AttemptsExhausted),
            };
            self.conclude(
                a,
                &route,
                AttemptEnd::Done(outcome, TaskInfo::default()),
                acker,
            )
            .await;
            return;
        }
        let event = self.event(a);
        let event_bytes = serde_json::to_vec(&event).map(|v| v.len()).unwrap_or(0);
        let input = RouteInput {
            message: a.msg,
            ledger_target: a.lease.target,
            event_bytes,
            previous: a.lease.previous.as_ref(),
            learned: self.learner.route(&a.msg.job_type),
        };
        let Some(route) = routing::route(&self.config, &input) else {
            let outcome = Outcome::Failed {
                class: ErrorClass::Permanent,
                message: format!(
                    "no Lambda function or ECS launcher is configured for job type {:?}",
                    a.msg.job_type
                ),
            };
            let route = Route {
                target: Target::Lambda,
                reason: RouteReason::of(RouteRule::NoTarget),
            };
            self.conclude(
                a,
                &route,
                AttemptEnd::Done(outcome, TaskInfo::default()),
                acker,
            )
            .await;
            return;
        };
        self.stats.count_route(&route);
        debug!(attempt = a.lease.attempt, fence = a.lease.fence, target = route.target.as_str(), reason = %route.reason, "dispatching");
        self.guarded(
            a,
            &route,
            self.execute(a, &route, &event, acker),
            acker,
            hard_stop,
        )
        .await;
    }
}
