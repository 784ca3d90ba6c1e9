//! The queue in memory, with SQS's visibility rules (a received message is hidden until its
//! visibility timeout passes; only its latest receipt deletes it). Time is tokio's clock, so
//! tests can pause it. For unit tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DeadLetterQueue, JobQueue, QueueError, Received};

#[derive(Debug)]
struct Msg {
    id: String,
    body: String,
    visible_at: Instant,
    receive_count: u32,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    msgs: BTreeMap<u64, Msg>,
    next: u64,
    receipts: HashMap<String, u64>,
    dead: Vec<(String, Vec<(String, String)>)>,
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
        st.msgs.insert(
            seq,
            Msg {
                id: format!("m-{seq}"),
                body: body.into(),
                visible_at: Instant::now() + delay,
                receive_count: 0,
                receipt: None,
            },
        );
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
                let mut out = Vec::new();
                let mut taken = Vec::new();
                for (seq, m) in st.msgs.iter_mut() {
                    if out.len() == max {
                        break;
                    }
                    if m.visible_at <= now {
                        m.receive_count += 1;
                        m.visible_at = now + visibility;
                        let receipt = format!("{}-{}", m.id, m.receive_count);
                        m.receipt = Some(receipt.clone());
                        taken.push((receipt.clone(), *seq));
                        out.push(Received {
                            message_id: m.id.clone(),
                            receipt,
                            body: m.body.clone(),
                            receive_count: m.receive_count,
                        });
                    }
                }
                for (r, seq) in taken {
                    st.receipts.insert(r, seq);
                }
                if !out.is_empty() || now >= deadline {
                    return Ok(out);
                }
                st.msgs.values().map(|m| m.visible_at).min()
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
                    st.msgs.remove(&s);
                }
                _ => failed.push(r.clone()),
            }
        }
        Ok(failed)
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .msgs
            .values()
            .filter(|m| m.visible_at <= now || m.receive_count == 0)
            .count() as u64)
    }

    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.push_delayed(body, delay.min(super::MAX_DELAY));
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        {
            let mut st = self.lock();
            let Some(seq) = st.receipts.get(receipt).copied() else {
                return Err(QueueError::Aws {
                    op: "ChangeMessageVisibility",
                    message: format!("unknown receipt {receipt}"),
                });
            };
            if let Some(m) = st.msgs.get_mut(&seq) {
                m.visible_at = Instant::now() + timeout;
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
}
