//! The limits shared by every replica through the ledger: [`SharedRate`] (a token bucket),
//! [`StartPace`] (evenly spaced start slots) and [`FleetCap`] (slots of a fleet-wide cap),
//! all waiting through [`spend_or_take`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::error::ErrorClass;
use fleet_shared::ledger::{Ledger, LedgerError};
use fleet_shared::time::Clock;
use tokio::sync::Notify;
use tracing::warn;

/// A per-second budget shared by every replica (a token bucket in the ledger): a replica
/// takes a block of tokens at a time (a read and a conditional write) and spends it locally.
#[derive(Debug)]
pub struct SharedRate {
    bucket: fleet_shared::ledger::Bucket,
    block: u32,
    held: tokio::sync::Mutex<u32>,
}

impl SharedRate {
    /// `per_sec` for the whole fleet, bursts of up to a second's worth.
    pub fn new(name: &str, per_sec: f64) -> Self {
        Self {
            bucket: fleet_shared::ledger::Bucket {
                name: name.to_owned(),
                rate: per_sec,
                burst: per_sec.max(1.0),
            },
            block: ((per_sec / 4.0).ceil() as u32).clamp(1, 10),
            held: tokio::sync::Mutex::new(0),
        }
    }

    /// Waits for a token (see [`spend_or_take`] for ledger errors).
    pub async fn acquire<L: Ledger>(&self, ledger: &L, clock: Clock) -> Result<(), LedgerError> {
        let mut held = self.held.lock().await;
        spend_or_take(
            &self.bucket.name,
            &mut *held,
            |held| {
                let one = *held > 0;
                if one {
                    *held -= 1;
                }
                one.then_some(Duration::ZERO)
            },
            || ledger.take_tokens(&self.bucket, self.block, clock.now_ms()),
            |held, t| {
                *held = t.granted;
                (t.granted == 0).then(|| Duration::from_millis(t.wait_ms))
            },
        )
        .await
    }
}

/// The wait of a budget shared through the ledger: `spend` uses what is held (the wait
/// before the start it allows; `None` when nothing is held), else `take` asks the ledger
/// for more and `keep` holds what it gave (the wait before asking again when it gave none).
/// A ledger error that may pass (throttled, transient, a timeout) is tried again after a
/// growing pause, up to 5 s (nothing is ever assumed granted); a permanent one (a missing
/// table, a refused permission) is returned, as waiting cannot cure it.
async fn spend_or_take<H, G, F>(
    name: &str,
    held: &mut H,
    spend: impl Fn(&mut H) -> Option<Duration>,
    take: impl Fn() -> F,
    keep: impl Fn(&mut H, G) -> Option<Duration>,
) -> Result<(), LedgerError>
where
    F: std::future::Future<Output = Result<G, LedgerError>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        if let Some(wait) = spend(held) {
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        match take().await {
            Ok(granted) => {
                if let Some(wait) = keep(held, granted) {
                    tokio::time::sleep(wait).await;
                }
            }
            Err(e) if e.class() == ErrorClass::Permanent => return Err(e),
            Err(e) => {
                warn!(budget = name, error = %e, "could not take from a budget shared through the ledger; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Starts paced across the fleet (a job type's `max_starts_per_sec`): start slots from a
/// pace kept in the ledger, taken a block at a time and spent one start each, none before
/// its time. A slot not used within a quarter of the spacing after its time is dropped
/// rather than spent late, so that a replica held up cannot bunch its starts with the
/// others' on time.
#[derive(Debug)]
pub struct StartPace {
    pace: fleet_shared::ledger::Pace,
    block: u32,
    /// Slot times held, in microseconds, oldest first.
    held: tokio::sync::Mutex<std::collections::VecDeque<u64>>,
}

impl StartPace {
    /// `per_sec` starts a second for the whole fleet, a quarter second's slots a block
    /// (1 to 10).
    pub fn new(name: &str, per_sec: f64) -> Self {
        let block = ((per_sec / 4.0).ceil() as u32).clamp(1, 10);
        Self {
            pace: fleet_shared::ledger::Pace::new(name, per_sec, block),
            block,
            held: tokio::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Waits for a start slot's time (see [`spend_or_take`] for ledger errors).
    pub async fn acquire<L: Ledger>(&self, ledger: &L, clock: Clock) -> Result<(), LedgerError> {
        let mut held = self.held.lock().await;
        let grace = self.pace.spacing_us / 4;
        spend_or_take(
            &self.pace.name,
            &mut *held,
            |held| {
                let now_us = clock.now_ms() * 1000;
                while held.front().is_some_and(|t| t + grace < now_us) {
                    held.pop_front();
                }
                let t = held.pop_front()?;
                Some(Duration::from_micros(t.saturating_sub(now_us)))
            },
            || ledger.take_slots(&self.pace, self.block, clock.now_ms()),
            |held, s| {
                held.extend(s.times());
                (s.granted == 0).then(|| Duration::from_millis(s.wait_ms))
            },
        )
        .await
    }
}

/// A replica's share of a fleet-wide cap (`lambda.max_concurrency`, the function's reserved
/// concurrency): it starts an attempt only under the slots it holds in the ledger's item of
/// the cap, asks for room for every attempt waiting when it has none free (one ask at a
/// time, at most every 250 ms, whatever the number waiting), and renews its holding every
/// second with what it runs plus what waits, giving the rest back. A holding it could not
/// renew before its TTL counts as none.
#[derive(Debug)]
pub struct FleetCap {
    cap: fleet_shared::ledger::Cap,
    replica: String,
    state: Mutex<CapState>,
    /// One ledger call at a time.
    asking: tokio::sync::Mutex<()>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct CapState {
    held: u32,
    /// Until when the holding stands (ms), as of the last answer.
    until_ms: u64,
    running: u32,
    waiting: u32,
    /// When this replica last asked the ledger (ms): waiting attempts ask at most every
    /// [`ASK_EVERY_MS`] between them, not once each.
    asked_ms: u64,
}

/// How often waiting attempts ask the ledger for more slots, at most.
const ASK_EVERY_MS: u64 = 250;

/// How long a holding lasts unrenewed (renewals come every second).
const CAP_TTL_MS: u64 = 10_000;
const CAP_RENEW: Duration = Duration::from_secs(1);

impl FleetCap {
    pub fn new(name: &str, limit: u32, replica: &str) -> Arc<Self> {
        Arc::new(Self {
            cap: fleet_shared::ledger::Cap {
                name: name.to_owned(),
                limit,
                ttl_ms: CAP_TTL_MS,
            },
            replica: replica.to_owned(),
            state: Mutex::new(CapState::default()),
            asking: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots this replica holds (as of its last answer from the ledger).
    pub fn held(&self) -> u32 {
        self.lock().held
    }

    /// Asks the ledger to hold what runs plus `extra`, at most the cap.
    async fn ask<L: Ledger>(
        &self,
        ledger: &L,
        clock: Clock,
        extra: u32,
    ) -> Result<(), LedgerError> {
        let _one = self.asking.lock().await;
        let want = {
            let mut s = self.lock();
            let want = (s.running + extra).min(self.cap.limit);
            // A holding that shrinks shrinks here first: no attempt starts on the slots
            // being given back while the write is on its way, so what runs never exceeds
            // what the ledger says this replica holds.
            s.held = s.held.min(want);
            want
        };
        let now = clock.now_ms();
        self.lock().asked_ms = now;
        tracing::debug!(cap = %self.cap.name, want, extra, "asking the ledger for slots");
        let mine = ledger.allot(&self.cap, &self.replica, want, now).await?;
        let mut s = self.lock();
        s.held = mine;
        s.until_ms = now + self.cap.ttl_ms;
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Waits for a slot (see [`spend_or_take`] for ledger errors: the same).
    pub async fn acquire<L: Ledger>(
        self: &Arc<Self>,
        ledger: &L,
        clock: Clock,
    ) -> Result<CapPermit, LedgerError> {
        let mut pause = Duration::from_millis(250);
        // Counted as waiting until it returns, also when the caller gives up on it: the asks
        // and renewals ask for room for every waiting attempt.
        let waiting = Waiting::new(self);
        loop {
            let now = clock.now_ms();
            let ask_now = {
                let mut s = self.lock();
                if s.running < s.held && now < s.until_ms {
                    s.running += 1;
                    drop(s);
                    drop(waiting);
                    return Ok(CapPermit { cap: self.clone() });
                }
                // One ask at a time, and not again within ASK_EVERY_MS: the others wait for
                // its answer (it asks for all of them) or a slot of ours to end.
                let ask = s.asked_ms == 0 || now >= s.asked_ms + ASK_EVERY_MS;
                if ask {
                    s.asked_ms = now;
                }
                ask
            };
            let asked = if ask_now {
                let extra = self.lock().waiting.max(1);
                self.ask(ledger, clock, extra).await
            } else {
                Ok(())
            };
            match asked {
                Ok(()) => {
                    // Full: wait for a slot of ours to end, or ask again shortly.
                    let changed = self.changed.notified();
                    let room = {
                        let s = self.lock();
                        s.running < s.held
                    };
                    if !room {
                        let _ = tokio::time::timeout(Duration::from_millis(250), changed).await;
                    }
                }
                Err(e) if e.class() == ErrorClass::Permanent => return Err(e),
                Err(e) => {
                    warn!(cap = %self.cap.name, error = %e, "could not take slots of the fleet-wide cap; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Renews the holding every second until `stop`, then gives back what does not run
    /// (all of it once nothing runs).
    pub async fn renew_loop<L: Ledger>(
        self: Arc<Self>,
        ledger: Arc<L>,
        clock: Clock,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CAP_RENEW) => {}
                _ = stop.cancelled() => break,
            }
            let (extra, idle) = {
                let s = self.lock();
                (s.waiting, s.held == 0 && s.running == 0 && s.waiting == 0)
            };
            if idle {
                // Nothing held, nothing wanted: no write.
                continue;
            }
            if let Err(e) = self.ask(ledger.as_ref(), clock, extra).await {
                warn!(cap = %self.cap.name, error = %e, "could not renew this replica's slots of the fleet-wide cap");
            }
        }
        if self.held() > 0
            && let Err(e) = self.ask(ledger.as_ref(), clock, 0).await
        {
            warn!(cap = %self.cap.name, error = %e, "could not give back the fleet-wide cap's slots; they expire");
        }
    }
}

/// An attempt waiting for a slot of a [`FleetCap`], counted until dropped.
struct Waiting<'a>(&'a FleetCap);

impl<'a> Waiting<'a> {
    fn new(cap: &'a FleetCap) -> Self {
        cap.lock().waiting += 1;
        Self(cap)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.waiting = s.waiting.saturating_sub(1);
    }
}

/// A slot of a [`FleetCap`], given back when dropped.
#[derive(Debug)]
pub struct CapPermit {
    cap: Arc<FleetCap>,
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        let mut s = self.cap.lock();
        s.running = s.running.saturating_sub(1);
        drop(s);
        self.cap.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts waiting together ask the ledger together: 200 of them on a cap of 10 make a
    /// handful of asks a second, not one each; each ask is for all of them, so the first
    /// gets the whole cap.
    #[tokio::test(start_paused = true)]
    async fn waiting_attempts_share_their_asks() {
        let ledger = Arc::new(
            fleet_shared::ledger::memory::MemoryLedger::new()
                .with_model(fleet_shared::ledger::model::Limits::AWS),
        );
        let clock = Clock::tokio();
        let cap = FleetCap::new("l", 10, "a");
        let waiters: Vec<_> = (0..200)
            .map(|_| {
                let (cap, ledger) = (cap.clone(), ledger.clone());
                tokio::spawn(async move { cap.acquire(ledger.as_ref(), clock).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(cap.held(), 10, "the first ask took the whole cap");
        let asks = ledger.usage().unwrap().write_calls;
        assert!(
            asks <= 6,
            "{asks} asks in a second for 200 waiting attempts"
        );
        for w in waiters {
            w.abort();
        }
    }

    /// Two replicas share a cap of 4 through the ledger: together they never hold more; a
    /// slot one gives back (at its next renewal) goes to the other; a replica that stops
    /// renewing frees its slots when its holding expires.
    #[tokio::test(start_paused = true)]
    async fn a_fleet_wide_cap_is_shared_through_the_ledger() {
        let ledger = Arc::new(fleet_shared::ledger::memory::MemoryLedger::new());
        let clock = Clock::tokio();
        let (a, b) = (FleetCap::new("l", 4, "a"), FleetCap::new("l", 4, "b"));
        let mut held_by_a = Vec::new();
        for _ in 0..3 {
            held_by_a.push(a.acquire(ledger.as_ref(), clock).await.unwrap());
        }
        let b1 = b.acquire(ledger.as_ref(), clock).await.unwrap();
        assert_eq!(a.held() + b.held(), 4);
        // A fifth waits: nothing is free.
        let waiting = tokio::spawn({
            let (b, ledger) = (b.clone(), ledger.clone());
            async move { b.acquire(ledger.as_ref(), clock).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished());
        // "a" ends one and renews: "b" gets it.
        let stop = tokio_util::sync::CancellationToken::new();
        let renewing = tokio::spawn(a.clone().renew_loop(ledger.clone(), clock, stop.clone()));
        drop(held_by_a.pop());
        let b2 = waiting.await.unwrap();
        assert_eq!((a.held(), b.held()), (2, 2));
        // "a" stops renewing (it died): after the TTL its two slots are "b"'s to take.
        stop.cancel();
        renewing.await.unwrap();
        std::mem::forget(held_by_a);
        tokio::time::sleep(Duration::from_millis(CAP_TTL_MS + 1)).await;
        let more: Vec<_> =
            futures::future::join_all((0..2).map(|_| b.acquire(ledger.as_ref(), clock))).await;
        assert!(more.iter().all(Result::is_ok));
        assert_eq!(b.held(), 4);
        drop((b1, b2, more));
    }
}
