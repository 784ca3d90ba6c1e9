//! SQS adapter.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};

use super::{DeadLetterQueue, JobQueue, MAX_BATCH, QueueError, Received};

/// Largest total payload of one SendMessageBatch call.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

fn aws_err<E>(op: &'static str, e: SdkError<E>) -> QueueError
where
    E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    QueueError::Aws {
        op,
        class: crate::error::sdk_error(&e),
        message: DisplayErrorContext(e).to_string(),
    }
}

/// A request SQS was never sent (the SDK refused to build it): retrying cannot help.
fn build_err(op: &'static str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Aws {
        op,
        class: crate::error::ErrorClass::Permanent,
        message: e.to_string(),
    }
}

/// One SQS queue, by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

/// Messages in a queue, as SQS estimates them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// The queue named by a URL (used as it is) or a name (looked up).
    pub async fn resolve(client: Client, name_or_url: &str) -> Result<Self, QueueError> {
        if name_or_url.starts_with("https://") || name_or_url.starts_with("http://") {
            return Ok(Self::new(client, name_or_url));
        }
        match client.get_queue_url().queue_name(name_or_url).send().await {
            Ok(out) => Ok(Self::new(client, out.queue_url.unwrap_or_default())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_queue_does_not_exist()) =>
            {
                Err(QueueError::NoSuchQueue(name_or_url.to_owned()))
            }
            Err(e) => Err(aws_err("GetQueueUrl", e)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends every body, packing batches of up to 10 messages and 256 KiB, with a few calls
    /// in flight. Entries SQS reports as failed through no fault of the sender are re-sent
    /// with backoff; a sender fault (a body SQS refuses) is an error at once. A job message
    /// goes under its tenant's message group ([`crate::message::message_group`]): on a
    /// standard queue with fair queueing, SQS then favours tenants with few messages waiting.
    pub async fn send_batched(&self, bodies: &[String]) -> Result<(), QueueError> {
        let mut batches: Vec<&[String]> = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, b) in bodies.iter().enumerate() {
            if i > start && (i - start == MAX_BATCH || bytes + b.len() > MAX_BATCH_BYTES) {
                batches.push(&bodies[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += b.len();
        }
        if start < bodies.len() {
            batches.push(&bodies[start..]);
        }
        // Futures built before the stream (not in a stream closure over borrowed batches) keep
        // the caller's future provably `Send` (rust-lang/rust#102211).
        let sends: Vec<_> = batches.into_iter().map(|b| self.send_batch(b)).collect();
        futures::stream::iter(sends)
            .buffer_unordered(8)
            .try_collect::<()>()
            .await
    }

    async fn send_batch(&self, batch: &[String]) -> Result<(), QueueError> {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(10)
            .with_jitter()
            .build();
        loop {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&batch[i])
                        .set_message_group_id(crate::message::message_group(&batch[i]))
                        .build()
                        .map_err(|e| build_err("SendMessageBatch", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| aws_err("SendMessageBatch", e))?;
            if let Some(f) = out.failed().iter().find(|f| f.sender_fault()) {
                return Err(QueueError::SendFailed {
                    count: out.failed().len(),
                    class: crate::error::ErrorClass::Permanent,
                    message: format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                });
            }
            pending = out
                .failed()
                .iter()
                .filter_map(|f| f.id().parse().ok())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return Err(QueueError::SendFailed {
                        count: pending.len(),
                        class: crate::error::ErrorClass::Transient,
                        message: "still failing after retries".into(),
                    });
                }
            }
        }
    }

    /// Messages in the queue, by SQS's approximate counts.
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| aws_err("GetQueueAttributes", e))?;
        let get = |name: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

impl SqsQueue {
    /// Like [`JobQueue::receive`], with each message's string attributes (a dead-letter
    /// queue's failure records).
    pub async fn receive_with_attributes(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<(Received, HashMap<String, String>)>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| aws_err("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let attrs = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                (received(m), attrs)
            })
            .collect())
    }
}

fn received(m: aws_sdk_sqs::types::Message) -> Received {
    Received {
        receive_count: m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        message_id: m.message_id.unwrap_or_default(),
        receipt: m.receipt_handle.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
    }
}

impl JobQueue for SqsQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| aws_err("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(received)
            .collect())
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .map_err(|e| build_err("DeleteMessageBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| aws_err("DeleteMessageBatch", e))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok())
            .filter_map(|i| receipts.get(i).cloned())
            .collect())
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        let d = self.depth().await?;
        Ok(d.visible + d.delayed)
    }

    async fn send_all(&self, bodies: &[String]) -> Result<(), QueueError> {
        self.send_batched(bodies).await
    }

    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .set_message_group_id(crate::message::message_group(body))
            .delay_seconds(delay.min(super::MAX_DELAY).as_secs() as i32)
            .send()
            .await
            .map_err(|e| aws_err("SendMessage", e))?;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs() as i32)
            .send()
            .await
            .map_err(|e| aws_err("ChangeMessageVisibility", e))?;
        Ok(())
    }
}

impl DeadLetterQueue for SqsQueue {
    async fn send_dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (name, value) in attributes {
            let v = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| build_err("SendMessage", e))?;
            req = req.message_attributes(*name, v);
        }
        req.send().await.map_err(|e| aws_err("SendMessage", e))?;
        Ok(())
    }
}
