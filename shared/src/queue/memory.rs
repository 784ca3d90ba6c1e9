//! The queue in memory, with SQS's visibility rules (a received message is hidden until its
//! visibility timeout passes; only its latest receipt deletes it) and, optionally, its limit
//! on messages in flight (received and not yet deleted or made visible: about 120,000 per
//! standard queue, past which long polls come back empty with no error). Time is tokio's
//! clock, so tests can pause it. Every call is O(log n) in the messages held, so a benchmark
//! can queue a million. For unit tests and benchmarks.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DeadLetterQueue, JobQueue, QueueError, Received};

/// SQS's limit on in-flight messages of a standard queue.
pub const SQS_IN_FLIGHT_LIMIT: usize = 120_000;

#[derive(Debug)]
struct Msg {
    body: String,
    visible_at: Instant,
    receive_count: u32,
    receipt: Option<String>,
    /// Received and neither deleted nor made visible again.
    in_flight: bool,
}

#[derive(Debug, Default)]
struct State {
    msgs: HashMap<u64, Msg>,
    /// Messages receivable now, oldest first.
    visible: BTreeSet<u64>,
    /// Hidden messages by the time they become visible (entries go stale when a message is
    /// deleted or its visibility changes; they are skipped then).
    hidden: BinaryHeap<Reverse<(Instant, u64)>>,
    next: u64,
    receipts: HashMap<String, u64>,
    dead: Vec<(String, Vec<(String, String)>)>,
    in_flight: usize,
    peak_in_flight: usize,
    in_flight_limit: Option<usize>,
    /// Receives answered empty because of the in-flight limit.
    over_limit: u64,
    sent: u64,
    /// Receives that returned messages, and the messages they returned.
    filled_receives: u64,
    received: u64,
}

impl State {
    /// Moves messages whose visibility timeout has passed back to the visible set.
    fn promote(&mut self, now: Instant) {
        while let Some(Reverse((at, seq))) = self.hidden.peek().copied() {
            if at > now {
                break;
            }
            self.hidden.pop();
            let Some(m) = self.msgs.get_mut(&seq) else {
                continue;
            };
            if m.visible_at != at || self.visible.contains(&seq) {
                continue;
            }
            if m.in_flight {
                m.in_flight = false;
                self.in_flight -= 1;
            }
            self.visible.insert(seq);
        }
    }

    fn hide(&mut self, seq: u64, until: Instant) {
        self.visible.remove(&seq);
        self.hidden.push(Reverse((until, seq)));
    }
}

/// What the queue saw, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub peak_in_flight: usize,
    pub over_limit_receives: u64,
    pub sent: u64,
    /// Receives that returned messages, and how many they returned in all.
    pub filled_receives: u64,
    pub received: u64,
}

#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies SQS's limit on in-flight messages: receives come back empty at the limit.
    pub fn with_in_flight_limit(self, limit: usize) -> Self {
        self.lock().in_flight_limit = Some(limit);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues a body, visible at once.
    pub fn push(&self, body: impl Into<String>) {
        self.push_delayed(body, Duration::ZERO);
    }

    /// Enqueues a body, visible after `delay`.
    pub fn push_delayed(&self, body: impl Into<String>, delay: Duration) {
        let mut st = self.lock();
        let seq = st.next;
        st.next += 1;
        st.sent += 1;
        let now = Instant::now();
        st.msgs.insert(
            seq,
            Msg {
                body: body.into(),
                visible_at: now + delay,
                receive_count: 0,
                receipt: None,
                in_flight: false,
            },
        );
        if delay.is_zero() {
            st.visible.insert(seq);
        } else {
            st.hidden.push(Reverse((now + delay, seq)));
        }
        drop(st);
        self.notify.notify_waiters();
    }

    /// Messages still in the queue, visible or not.
    pub fn len(&self) -> usize {
        self.lock().msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages in flight now.
    pub fn in_flight(&self) -> usize {
        let mut st = self.lock();
        st.promote(Instant::now());
        st.in_flight
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        QueueStats {
            peak_in_flight: st.peak_in_flight,
            over_limit_receives: st.over_limit,
            sent: st.sent,
            filled_receives: st.filled_receives,
            received: st.received,
        }
    }

    /// What was sent to this queue as a dead-letter queue: body and attributes.
    pub fn dead_letters(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.lock().dead.clone()
    }
}

impl JobQueue for MemoryQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let next_visible = {
                let mut st = self.lock();
                let now = Instant::now();
                st.promote(now);
                let mut out = Vec::new();
                let room = match st.in_flight_limit {
                    Some(limit) => limit.saturating_sub(st.in_flight),
                    None => usize::MAX,
                };
                if room == 0 && !st.visible.is_empty() {
                    st.over_limit += 1;
                }
                let take: Vec<u64> = st.visible.iter().take(max.min(room)).copied().collect();
                for seq in take {
                    let until = now + visibility;
                    st.hide(seq, until);
                    let Some(m) = st.msgs.get_mut(&seq) else {
                        continue;
                    };
                    m.receive_count += 1;
                    m.visible_at = until;
                    let receipt = format!("m-{seq}-{}", m.receive_count);
                    m.receipt = Some(receipt.clone());
                    let newly = !m.in_flight;
                    m.in_flight = true;
                    out.push(Received {
                        message_id: format!("m-{seq}"),
                        receipt: receipt.clone(),
                        body: m.body.clone(),
                        receive_count: m.receive_count,
                    });
                    if newly {
                        st.in_flight += 1;
                    }
                    st.receipts.insert(receipt, seq);
                }
                st.peak_in_flight = st.peak_in_flight.max(st.in_flight);
                if !out.is_empty() {
                    st.filled_receives += 1;
                    st.received += out.len() as u64;
                }
                if !out.is_empty() || now >= deadline {
                    return Ok(out);
                }
                st.hidden.peek().map(|Reverse((at, _))| *at)
            };
            let until = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        let mut st = self.lock();
        let mut failed = Vec::new();
        for r in receipts {
            let seq = st.receipts.remove(r);
            let current = seq.and_then(|s| {
                st.msgs
                    .get(&s)
                    .map(|m| m.receipt.as_deref() == Some(r.as_str()))
            });
            match (seq, current) {
                (Some(s), Some(true)) => {
                    if let Some(m) = st.msgs.remove(&s)
                        && m.in_flight
                    {
                        st.in_flight -= 1;
                    }
                    st.visible.remove(&s);
                }
                _ => failed.push(r.clone()),
            }
        }
        Ok(failed)
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        let mut st = self.lock();
        st.promote(Instant::now());
        // Visible, and delayed (hidden without having been received).
        Ok((st.msgs.len() - st.in_flight) as u64)
    }

    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.push_delayed(body, delay.min(super::MAX_DELAY));
        Ok(())
    }

    async fn send_all(&self, bodies: &[String]) -> Result<(), QueueError> {
        for b in bodies {
            self.push(b.clone());
        }
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        {
            let mut st = self.lock();
            let Some(seq) = st.receipts.get(receipt).copied() else {
                return Err(QueueError::Aws {
                    op: "ChangeMessageVisibility",
                    class: crate::error::ErrorClass::Permanent,
                    message: format!("unknown receipt {receipt}"),
                });
            };
            let now = Instant::now();
            let Some(m) = st.msgs.get_mut(&seq) else {
                return Ok(());
            };
            m.visible_at = now + timeout;
            if timeout.is_zero() {
                let was = m.in_flight;
                m.in_flight = false;
                if was {
                    st.in_flight -= 1;
                }
                st.visible.insert(seq);
            } else {
                st.hide(seq, now + timeout);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }
}

impl DeadLetterQueue for MemoryQueue {
    async fn send_dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        self.lock().dead.push((
            body.to_owned(),
            attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn visibility_hides_and_returns() {
        let q = MemoryQueue::new();
        q.push("a");
        let got = q
            .receive(10, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            q.receive(10, Duration::ZERO, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        // Long-poll past the visibility timeout: the message comes back with a new receipt.
        let again = q
            .receive(10, Duration::from_secs(40), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(again[0].receive_count, 2);
        // The old receipt no longer deletes it; the new one does.
        assert_eq!(
            q.delete_batch(&[got[0].receipt.clone()])
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            q.delete_batch(&[again[0].receipt.clone()])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn receives_stop_at_the_in_flight_limit_and_delayed_messages_are_not_in_flight() {
        let q = MemoryQueue::new().with_in_flight_limit(3);
        for i in 0..5 {
            q.push(format!("m{i}"));
        }
        q.push_delayed("later", Duration::from_secs(600));
        let first = q
            .receive(10, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(q.in_flight(), 3);
        // At the limit: an empty answer, no error, though two messages are visible.
        assert!(
            q.receive(10, Duration::ZERO, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(q.backlog().await.unwrap(), 3, "two visible and one delayed");
        // A delete and a hand-back free room.
        q.delete_batch(&[first[0].receipt.clone()]).await.unwrap();
        q.set_visibility(&first[1].receipt, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(q.in_flight(), 1);
        let s = q.stats();
        assert_eq!((s.peak_in_flight, s.over_limit_receives), (3, 1));
        // A visibility timeout that passes takes a message out of flight.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(q.in_flight(), 0);
    }
}
