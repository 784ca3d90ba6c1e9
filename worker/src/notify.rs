//! Sending a request's completion event ([`RequestFinished`]) to the configured targets: an
//! EventBridge bus (PutEvents, the event as its detail) and/or an SNS topic (Publish, the
//! event as the message and its `state` as a message attribute, for filter policies).

use aws_sdk_sns::types::MessageAttributeValue;
use fleet_shared::completion::{DETAIL_TYPE, RequestFinished};
use fleet_shared::config::EventsConfig;
use fleet_shared::metrics as fm;

/// The event's targets; none when `[events]` names none.
#[derive(Debug, Clone)]
pub struct Notifier {
    eventbridge: Option<(aws_sdk_eventbridge::Client, String)>,
    sns: Option<(aws_sdk_sns::Client, String)>,
    source: String,
}

impl Notifier {
    pub fn new(sdk: &aws_config::SdkConfig, events: &EventsConfig) -> Self {
        Self {
            eventbridge: events
                .eventbridge_bus
                .clone()
                .map(|b| (aws_sdk_eventbridge::Client::new(sdk), b)),
            sns: events
                .sns_topic
                .clone()
                .map(|t| (aws_sdk_sns::Client::new(sdk), t)),
            source: events.source.clone(),
        }
    }

    /// Sends `event` to every target; `Err` names those that failed (a target that took it
    /// is sent it again when the whole send is retried, with the same `event_id`).
    pub async fn send(&self, event: &RequestFinished) -> Result<(), String> {
        let body = serde_json::to_string(event).map_err(|e| format!("encoding the event: {e}"))?;
        let mut errors = Vec::new();
        if let Some((client, bus)) = &self.eventbridge {
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(&self.source)
                .detail_type(DETAIL_TYPE)
                .detail(&body)
                .build();
            match client.put_events().entries(entry).send().await {
                Ok(out) if out.failed_entry_count() == 0 => {
                    metrics::counter!(fm::EVENTS_SENT, "target" => "eventbridge").increment(1);
                }
                Ok(out) => {
                    let why = out
                        .entries()
                        .iter()
                        .filter_map(|e| e.error_message())
                        .collect::<Vec<_>>()
                        .join("; ");
                    errors.push(format!("EventBridge bus {bus} refused the event: {why}"));
                }
                Err(e) => errors.push(format!(
                    "EventBridge PutEvents to {bus}: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(&e)
                )),
            }
        }
        if let Some((client, topic)) = &self.sns {
            let state = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(&event.state)
                .build()
                .map_err(|e| format!("the event's SNS attribute: {e}"))?;
            match client
                .publish()
                .topic_arn(topic)
                .subject("Fleet request finished")
                .message(&body)
                .message_attributes("state", state)
                .send()
                .await
            {
                Ok(_) => metrics::counter!(fm::EVENTS_SENT, "target" => "sns").increment(1),
                Err(e) => errors.push(format!(
                    "SNS Publish to {topic}: {}",
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
