//! Acknowledgements: messages are deleted in batches of up to ten, after their job's ledger
//! write succeeded. A delete that fails is harmless: the message comes back, the claim finds
//! the job terminal, and the message is deleted then.

use std::sync::Arc;
use std::time::Duration;

use fleet_shared::queue::{JobQueue, MAX_BATCH};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::warn;

/// How long a partial batch waits for more receipts. Deleting a finished job's message a
/// second later is harmless (its visibility is the lease, and a message that comes back for a
/// finished job is deleted then), and at ten or more completions a second every delete call
/// carries ten receipts.
const LINGER: Duration = Duration::from_secs(1);
/// Delete calls in flight at once.
const MAX_IN_FLIGHT: usize = 8;
/// Tries per batch before its receipts are left to come back.
const TRIES: u32 = 3;

/// Sends receipts to the batching task.
#[derive(Clone, Debug)]
pub struct Acker {
    tx: mpsc::UnboundedSender<String>,
}

impl Acker {
    /// Starts the batching task. It ends after [`Acker::close`] (or when every `Acker` is
    /// dropped) once every receipt sent before has been handled.
    pub fn spawn<Q: JobQueue>(queue: Arc<Q>) -> (Acker, AckerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(queue, rx));
        (Acker { tx: tx.clone() }, AckerHandle { tx: Some(tx), task })
    }

    /// Queues a receipt for deletion.
    pub fn delete(&self, receipt: String) {
        // The task outlives every sender, so this only fails after shutdown.
        if self.tx.send(receipt).is_err() {
            warn!("acknowledgement after shutdown dropped; the message will come back");
        }
    }
}

/// Owner's handle: close and wait.
pub struct AckerHandle {
    tx: Option<mpsc::UnboundedSender<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckerHandle {
    /// Waits until every receipt queued before the last `Acker` was dropped is handled.
    pub async fn finish(mut self) {
        self.tx.take();
        if let Err(e) = self.task.await {
            warn!(error = %e, "acknowledgement task failed");
        }
    }
}

async fn run<Q: JobQueue>(queue: Arc<Q>, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut flights = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => break,
                },
                _ = &mut linger => break,
            }
        }
        while flights.len() >= MAX_IN_FLIGHT {
            flights.join_next().await;
        }
        let q = queue.clone();
        flights.spawn(async move { flush(q.as_ref(), batch).await });
    }
    while flights.join_next().await.is_some() {}
}

/// Deletes a batch, trying again what failed through no fault of ours; a permanent error
/// (a receipt or queue SQS refuses) ends the batch at once.
async fn flush<Q: JobQueue>(queue: &Q, mut batch: Vec<String>) {
    for attempt in 1..=TRIES {
        match queue.delete_batch(&batch).await {
            Ok(failed) if failed.is_empty() => return,
            Ok(failed) => {
                warn!(failed = failed.len(), attempt, "some deletes failed");
                batch = failed;
            }
            Err(e) if !e.class().is_retryable() => {
                warn!(error = %e, receipts = batch.len(), "delete batch refused; those messages will come back and be deleted then");
                return;
            }
            Err(e) => warn!(error = %e, attempt, "delete batch failed"),
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    warn!(
        receipts = batch.len(),
        "giving up on deletes; those messages will come back and be deleted then"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use fleet_shared::error::ErrorClass;
    use fleet_shared::queue::memory::MemoryQueue;
    use fleet_shared::queue::{QueueError, Received};

    /// A queue whose deletes all fail with `class`, counting the calls.
    struct Failing {
        class: ErrorClass,
        calls: AtomicUsize,
    }

    impl Failing {
        fn err(&self) -> QueueError {
            QueueError::Aws {
                op: "DeleteMessageBatch",
                class: self.class,
                message: "no".into(),
            }
        }
    }

    impl JobQueue for Failing {
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<Received>, QueueError> {
            Ok(Vec::new())
        }
        async fn delete_batch(&self, _: &[String]) -> Result<Vec<String>, QueueError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(self.err())
        }
        async fn backlog(&self) -> Result<u64, QueueError> {
            Ok(0)
        }
        async fn send(&self, _: &str, _: Duration) -> Result<(), QueueError> {
            Err(self.err())
        }
        async fn send_all(&self, _: &[String]) -> Result<(), QueueError> {
            Err(self.err())
        }
        async fn set_visibility(&self, _: &str, _: Duration) -> Result<(), QueueError> {
            Err(self.err())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_delete_is_not_tried_again_a_failed_one_is() {
        for (class, calls) in [
            (ErrorClass::Permanent, 1),
            (ErrorClass::Throttled, TRIES as usize),
            (ErrorClass::Transient, TRIES as usize),
        ] {
            let q = Failing {
                class,
                calls: AtomicUsize::new(0),
            };
            flush(&q, vec!["r1".into(), "r2".into()]).await;
            assert_eq!(q.calls.load(Ordering::SeqCst), calls, "{class}");
        }
    }

    #[tokio::test]
    async fn deletes_everything_before_finishing() {
        let q = Arc::new(MemoryQueue::new());
        for i in 0..25 {
            q.push(format!("m{i}"));
        }
        let got = q
            .receive(10, Duration::ZERO, Duration::from_secs(60))
            .await
            .unwrap()
            .into_iter()
            .chain(
                q.receive(10, Duration::ZERO, Duration::from_secs(60))
                    .await
                    .unwrap(),
            )
            .chain(
                q.receive(10, Duration::ZERO, Duration::from_secs(60))
                    .await
                    .unwrap(),
            );
        let (acker, handle) = Acker::spawn(q.clone());
        for m in got {
            acker.delete(m.receipt);
        }
        drop(acker);
        handle.finish().await;
        assert!(q.is_empty());
    }
}
