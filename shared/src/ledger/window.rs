//! Windows: the ledger is a request's backlog and the queue holds a window of it. The
//! producer writes every job item, but a windowed request's jobs are *held* (no due entry,
//! no message); at most its window of them are released and not finished at a time. A
//! release reads the request item and its counters, writes one *release record* of the
//! range it releases (in the due index), moves the request's cursor (`released`) over the
//! range in one conditional write, reads the range's jobs and the caller sends their
//! messages: three writes a release, whatever its size, and one strongly consistent read a
//! job. A released job gets its own due entry when it is claimed.
//!
//! - A crash after the record and before the cursor moves: the next release writes the
//!   record of the same first job again and moves the cursor.
//! - A crash after the cursor moved and before sending leaves released jobs without a
//!   message: the sweeper, once the queue has moved past the record's time, reads the
//!   range's jobs, sends those still PENDING with no due entry (giving each its due entry
//!   first, one conditional write each) and deletes the record ([`check_release`]). It does
//!   the same for a message lost after it was sent.
//! - Two releases racing read the same cursor: the cursor's condition lets one of them move
//!   it; the other sends nothing.
//!
//! A release is started by whoever may have made room: the producer after writing a part
//! of the request or changing its window, and the replica that records a job finished. A
//! replica that stops between recording a job finished and releasing leaves that room to
//! the next release of the request (any later finish, the sweepers' pass over the requests
//! they saw, a `status` call).

use super::*;
use crate::ids::JobId;

/// Most jobs one release marks (the rest are released by the next).
pub const MAX_RELEASE: u32 = 1000;

/// The released jobs of `r` that hold no place in its window: the finished (terminal)
/// ones, and, unless the window is a cap, those waiting for a retry.
pub fn out_of_window(r: &RequestRecord, c: &Counts) -> u32 {
    let retrying = if r.capped { 0 } else { c.retrying.max(0) };
    (c.finished().max(0) + retrying) as u32
}

/// Where the next release of `r` ends, given its released jobs `finished` (out of the
/// window: see [`out_of_window`]): `None` when it has no window, is cancelled, or has no
/// room or no held job written.
pub fn next_release(r: &RequestRecord, finished: u32) -> Option<std::ops::Range<u32>> {
    let window = r.window?;
    if r.cancelled_at_ms.is_some() {
        return None;
    }
    let end = r
        .total
        .min(r.written)
        .min(finished.saturating_add(window))
        .min(r.released.saturating_add(MAX_RELEASE));
    (end > r.released).then_some(r.released..end)
}

/// Whether `r` has held jobs and room but nothing released in flight (every released job
/// out of the window, `finished` as for [`next_release`]): no outcome is coming to release
/// the next ones, so a release must be started from outside (a replica that stopped
/// between recording the last outcome and releasing).
pub fn stalled(r: &RequestRecord, finished: u32) -> bool {
    r.window.is_some()
        && r.cancelled_at_ms.is_none()
        && finished >= r.released
        && r.released < r.total.min(r.written)
}

/// Jobs of `r` that never had a message because it was cancelled first: they count as
/// cancelled.
pub fn never_released(r: &RequestRecord) -> u32 {
    if r.window.is_some() && r.cancelled_at_ms.is_some() {
        r.total.saturating_sub(r.released)
    } else {
        0
    }
}

/// Who releases: one releaser at a time per request takes a *turn* (a conditional write on
/// the request item, renewed by each release it makes), so that releases racing from many
/// replicas do not all read the same cursor, write the same record and read the same jobs
/// (each refused write is billed). Another releaser's trigger only reads the request item
/// while the turn lasts.
#[derive(Debug, Clone, Copy)]
pub struct Releaser<'a> {
    pub name: &'a str,
    /// How long its turn lasts after its last release.
    pub turn_ms: u64,
}

/// What one release did: the jobs it moved the cursor over, and what to send for those of
/// them not sent yet (a job the sweeper sent already is left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    pub range: std::ops::Range<u32>,
    pub jobs: Vec<Requeue>,
    /// The request's tenant, for their messages.
    pub tenant: Option<String>,
    /// The releaser holds the turn and the request still holds jobs back: it should look
    /// again soon, as the other replicas' finishes leave the releasing to it.
    pub turn: bool,
}

/// Releases what the request's window has room for (at most [`MAX_RELEASE`] jobs), unless
/// another releaser's turn lasts.
pub async fn release<L: RequestLedger>(
    ledger: &L,
    request_id: &str,
    releaser: Releaser<'_>,
    now_ms: u64,
) -> Result<Released, LedgerError> {
    let Some(r) = ledger.get_request(request_id).await? else {
        return Ok(Released::default());
    };
    if r.window.is_none() || r.cancelled_at_ms.is_some() || r.released >= r.total.min(r.written) {
        return Ok(Released::default());
    }
    let mine = match &r.releaser {
        Some((who, until)) if *until >= now_ms => {
            if who != releaser.name {
                return Ok(Released::default());
            }
            true
        }
        _ => false,
    };
    let finished = out_of_window(&r, &ledger.counts(request_id, now_ms).await?);
    let Some(range) = next_release(&r, finished) else {
        return Ok(Released {
            turn: mine,
            ..Default::default()
        });
    };
    ledger
        .put_release(&ReleaseRecord {
            request_id: request_id.to_owned(),
            range: range.clone(),
            at_ms: now_ms,
        })
        .await?;
    if !ledger
        .advance_release(
            request_id,
            range.clone(),
            releaser.name,
            now_ms,
            now_ms + releaser.turn_ms,
        )
        .await?
    {
        // Another release moved the cursor or took the turn first; the record is checked
        // by the sweeper like any other.
        return Ok(Released::default());
    }
    let jobs = ledger
        .released_jobs(&job_ids(request_id, range.clone())?, r.job_shards, true)
        .await?;
    Ok(Released {
        turn: range.end < r.total,
        range,
        jobs,
        tenant: r.tenant,
    })
}

fn job_ids(request_id: &str, range: std::ops::Range<u32>) -> Result<Vec<JobId>, LedgerError> {
    range
        .map(|i| JobId::new(request_id, i))
        .collect::<Result<_, _>>()
        .map_err(|e| LedgerError::Malformed {
            key: item::request_key(request_id).to_string(),
            message: e.to_string(),
        })
}

/// The sweeper's check of a release record released before the queue's frontier (less the
/// recovery delay): each job of its range up to the request's cursor (jobs past it are
/// held, not lost) still PENDING with no due entry had no message or lost it. Those get
/// their due entry (from then on they are any waiting job), the record is deleted, and
/// the caller sends them (what it returns). The range is read eventually consistently: a job read stale is
/// left out by its mark's condition. `request` is the request's item as read after the
/// record was written (`None`: gone), so that a sweeper checking many records of one
/// request reads it once: its cursor only grows, and a record past an older cursor was
/// refused its cursor write, so a later release's record covers those jobs.
pub async fn check_release<L: RequestLedger>(
    ledger: &L,
    release: &ReleaseRecord,
    request: Option<&RequestRecord>,
    now_ms: u64,
) -> Result<Vec<Requeue>, LedgerError> {
    let mut unsent = Vec::new();
    if let Some(r) = request {
        let end = release.range.end.min(r.released);
        let range = release.range.start..end.max(release.range.start);
        let found = ledger
            .released_jobs(&job_ids(&release.request_id, range)?, r.job_shards, false)
            .await?;
        if !found.is_empty() {
            let jobs: Vec<JobId> = found.into_iter().map(|j| j.job).collect();
            unsent = ledger.mark_released(&jobs, r.job_shards, now_ms).await?;
        }
    }
    ledger.delete_release(release).await?;
    Ok(unsent)
}

/// The message bodies of released `jobs`, enqueued at `now_ms` for the request's `tenant`
/// (a job whose message cannot be built is left out, with a warning).
pub fn bodies(jobs: &[Requeue], now_ms: u64, tenant: Option<&str>) -> Vec<String> {
    jobs.iter()
        .filter_map(|j| match j.message(now_ms, tenant.map(str::to_owned)) {
            Ok(m) => Some(m.to_body()),
            Err(e) => {
                tracing::warn!(job_id = %j.job, error = %e, "cannot build a released job's message");
                None
            }
        })
        .collect()
}

/// Why [`release_and_send`] stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The jobs are released (in the due index): the sweeper re-sends them.
    #[error("released jobs could not be sent (the sweeper sends them again): {0}")]
    Queue(#[from] crate::queue::QueueError),
}

/// What [`release_and_send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub messages: u32,
    /// See [`Released::turn`].
    pub turn: bool,
}

/// Releases and sends until the request's window is full or it holds no more jobs written.
pub async fn release_and_send<L: RequestLedger, Q: crate::queue::JobQueue>(
    ledger: &L,
    queue: &Q,
    request_id: &str,
    releaser: Releaser<'_>,
    now_ms: impl Fn() -> u64,
) -> Result<Sent, ReleaseError> {
    let mut sent = Sent::default();
    loop {
        let now = now_ms();
        let r = release(ledger, request_id, releaser, now).await?;
        sent.turn = r.turn;
        if r.range.is_empty() {
            return Ok(sent);
        }
        let bodies = bodies(&r.jobs, now, r.tenant.as_deref());
        queue.send_all(&bodies).await?;
        sent.messages += bodies.len() as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(total: u32, written: u32, window: Option<u32>, released: u32) -> RequestRecord {
        RequestRecord {
            request_id: "r".into(),
            job_type: "t".into(),
            total,
            content_hash: String::new(),
            max_attempts: None,
            target: None,
            created_at_ms: 0,
            job_shards: 1,
            written,
            cancelled_at_ms: None,
            stop_running: false,
            tolerated_failures: None,
            failed: None,
            window,
            capped: false,
            released,
            tenant: None,
            releaser: None,
            results_prefix: None,
            completion: Default::default(),
        }
    }

    #[test]
    fn a_release_fills_the_window_among_the_jobs_written() {
        // Room for the window past what finished, no further than what is written.
        assert_eq!(next_release(&record(100, 100, Some(10), 0), 0), Some(0..10));
        assert_eq!(
            next_release(&record(100, 100, Some(10), 10), 3),
            Some(10..13)
        );
        assert_eq!(next_release(&record(100, 100, Some(10), 13), 3), None);
        assert_eq!(
            next_release(&record(100, 12, Some(10), 10), 5),
            Some(10..12)
        );
        assert_eq!(
            next_release(&record(100, 100, Some(10), 95), 99),
            Some(95..100)
        );
        // A larger window (raised while it runs) releases the difference at once.
        assert_eq!(
            next_release(&record(100, 100, Some(40), 13), 3),
            Some(13..43)
        );
        // At most MAX_RELEASE a call.
        let big = record(10_000, 10_000, Some(5_000), 0);
        assert_eq!(next_release(&big, 0), Some(0..MAX_RELEASE));
        // No window, or cancelled: nothing.
        assert_eq!(next_release(&record(100, 100, None, 0), 0), None);
        let mut cancelled = record(100, 100, Some(10), 10);
        cancelled.cancelled_at_ms = Some(1);
        assert_eq!(next_release(&cancelled, 5), None);
        assert_eq!(never_released(&cancelled), 90);
        assert_eq!(never_released(&record(100, 100, Some(10), 10)), 0);
        // Stalled only when every released job finished and some are held.
        assert!(stalled(&record(100, 100, Some(10), 10), 10));
        assert!(!stalled(&record(100, 100, Some(10), 10), 9));
        assert!(!stalled(&record(10, 10, Some(10), 10), 10));
        assert!(!stalled(&cancelled, 10));
        // Jobs waiting for a retry leave a default window, not a cap.
        let mut c = Counts {
            succeeded: 3,
            retrying: 4,
            ..Default::default()
        };
        let mut r = record(100, 100, Some(10), 10);
        assert_eq!(out_of_window(&r, &c), 7);
        r.capped = true;
        assert_eq!(out_of_window(&r, &c), 3);
        c.failed = 2;
        assert_eq!(out_of_window(&r, &c), 5);
    }
}
