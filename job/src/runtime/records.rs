//! The local Invoke API's part of Lambda's event-invoke configuration: an asynchronous
//! invocation's record goes to the outcomes queue (feature `local-async`).

use aws_sdk_sqs::error::DisplayErrorContext;
use serde_json::Value;

use crate::invocation_record::InvocationRecord;

/// Invocation records the local Invoke API sends at once.
const DELIVERIES_AT_ONCE: usize = 256;

pub(super) struct Delivery {
    queue: String,
    /// The client and the queue's URL, found at the first record.
    target: tokio::sync::OnceCell<(aws_sdk_sqs::Client, String)>,
    /// Records being sent at once: jobs that end together do not open a connection each
    /// (thousands at once run out of file descriptors and ports).
    sending: tokio::sync::Semaphore,
}

impl Delivery {
    pub(super) fn new(queue: String) -> Self {
        Self {
            queue,
            target: tokio::sync::OnceCell::new(),
            sending: tokio::sync::Semaphore::new(DELIVERIES_AT_ONCE),
        }
    }

    /// Sends an asynchronous invocation's record to the outcomes queue. A record that cannot
    /// be sent is lost, as Lambda loses one it cannot deliver: the worker's sweeper runs the
    /// job again when its lease ends.
    pub(super) async fn deliver(
        &self,
        request_id: &str,
        function: &str,
        request_payload: Value,
        result: Result<Value, Value>,
    ) {
        let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{function}:$LATEST");
        let timestamp =
            aws_sdk_sqs::primitives::DateTime::from_millis(crate::time::now_ms() as i64)
                .fmt(aws_sdk_sqs::primitives::DateTimeFormat::DateTime)
                .unwrap_or_default();
        let record = InvocationRecord::ran(request_id, &arn, request_payload, result, timestamp);
        let body = match serde_json::to_string(&record) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("invocation record of {request_id}: {e}");
                return;
            }
        };
        // Never closed: the semaphore lives as long as the server.
        let _sending = self.sending.acquire().await.ok();
        if let Err(e) = self.send(body).await {
            eprintln!("could not deliver the invocation record of {request_id}: {e}");
        }
    }

    async fn send(&self, body: String) -> Result<(), String> {
        let (client, url) = self
            .target
            .get_or_try_init(|| async {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                let client = aws_sdk_sqs::Client::new(&sdk);
                if self.queue.starts_with("https://") || self.queue.starts_with("http://") {
                    return Ok((client, self.queue.clone()));
                }
                let url = client
                    .get_queue_url()
                    .queue_name(&self.queue)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "no outcomes queue {}: {}",
                            self.queue,
                            DisplayErrorContext(e)
                        )
                    })?
                    .queue_url
                    .unwrap_or_default();
                Ok::<_, String>((client, url))
            })
            .await?;
        client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }
}
