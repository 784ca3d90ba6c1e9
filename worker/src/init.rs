//! `fleet-worker init`: creates the dead-letter queue, the jobs queue and the outcomes queue
//! (each with its redrive policy to the dead-letter queue) and the ledger table (with its
//! indexes and layout item). The functions' event-invoke configuration (no retries, the
//! maximum event age, the outcomes queue as both destinations) is the template's part.
//! Idempotent: existing resources are kept and their attributes brought to the configured
//! values; a ledger table of another layout is refused.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use fleet_shared::config::Config;
use fleet_shared::ledger::dynamo::DynamoLedger;

/// How long the jobs queue keeps a message (4 days).
pub const JOBS_RETENTION_SECS: u32 = 4 * 24 * 3600;
/// How long the dead-letter queue keeps a message (14 days, SQS's maximum, longer than the
/// jobs queue's so a dead-lettered message never expires before its source would have).
pub const DLQ_RETENTION_SECS: u32 = 14 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub jobs_queue_url: String,
    pub dead_letter_queue_url: String,
    pub outcomes_queue_url: String,
    pub table: String,
    pub table_created: bool,
}

/// The queue name of a name-or-URL setting.
fn queue_name(name_or_url: &str) -> &str {
    name_or_url.rsplit('/').next().unwrap_or(name_or_url)
}

async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> anyhow::Result<String> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("CreateQueue {name}: {}", DisplayErrorContext(e)))?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("CreateQueue {name} returned no URL"))?;
    sqs.set_queue_attributes()
        .queue_url(&url)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("SetQueueAttributes {name}: {}", DisplayErrorContext(e)))?;
    Ok(url)
}

pub async fn init(sdk: &SdkConfig, config: &Config) -> anyhow::Result<InitReport> {
    let sqs = fleet_shared::aws::sqs(sdk);
    let dlq_name = queue_name(&config.queue.dead_letter);
    let dlq_url = ensure_queue(
        &sqs,
        dlq_name,
        HashMap::from([
            (
                QueueAttributeName::MessageRetentionPeriod,
                DLQ_RETENTION_SECS.to_string(),
            ),
            (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
        ]),
    )
    .await?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GetQueueAttributes {dlq_name}: {}", DisplayErrorContext(e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow::anyhow!("queue {dlq_name} has no ARN"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": config.queue.max_receive_count,
    });
    // The jobs queue and the outcomes queue: hidden a lease, kept four days, redriven.
    let worked = HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            config.worker.lease_secs.to_string(),
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            JOBS_RETENTION_SECS.to_string(),
        ),
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
    ]);
    let jobs_url = ensure_queue(&sqs, queue_name(&config.queue.jobs), worked.clone()).await?;
    let outcomes = config.outcomes_queue();
    let outcomes_url = ensure_queue(&sqs, queue_name(&outcomes), worked).await?;
    let mut ledger = DynamoLedger::new(fleet_shared::aws::dynamodb(sdk), &config.ledger.table);
    let table_created = ledger.create_table(config.ledger.index_shards).await?;
    if config.ledger.ttl_days.is_some() {
        ledger.enable_ttl().await?;
    }
    Ok(InitReport {
        jobs_queue_url: jobs_url,
        dead_letter_queue_url: dlq_url,
        outcomes_queue_url: outcomes_url,
        table: config.ledger.table.clone(),
        table_created,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_names_from_urls() {
        assert_eq!(
            super::queue_name("https://sqs.us-east-1.amazonaws.com/123/jobs"),
            "jobs"
        );
        assert_eq!(super::queue_name("jobs"), "jobs");
    }
}
