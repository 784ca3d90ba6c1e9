//! `[events]`: where a request's completion event goes (see `fleet_shared::completion`).

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The targets of the one event sent when a request finishes; none by default (the request
/// item still records its finish). Either or both: the event goes to each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// An EventBridge bus (name or ARN); env `FLEET_EVENTS_EVENTBRIDGE_BUS`.
    pub eventbridge_bus: Option<String>,
    /// An SNS topic's ARN; env `FLEET_EVENTS_SNS_TOPIC`.
    pub sns_topic: Option<String>,
    /// The EventBridge event's `source`; env `FLEET_EVENTS_SOURCE`.
    pub source: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            eventbridge_bus: None,
            sns_topic: None,
            source: "fleet".into(),
        }
    }
}

impl EventsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.sns_topic
            && !(t.starts_with("arn:") && t.split(':').count() == 6 && t.contains(":sns:"))
        {
            return Err(invalid(
                "events.sns_topic",
                format!("{t:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"),
            ));
        }
        if let Some(b) = &self.eventbridge_bus
            && (b.is_empty() || b.len() > 1600)
        {
            return Err(invalid(
                "events.eventbridge_bus",
                "must be a bus name or ARN",
            ));
        }
        if self.source.is_empty() || self.source.len() > 256 || self.source.starts_with("aws.") {
            return Err(invalid(
                "events.source",
                "must be 1 to 256 characters and not start with \"aws.\" (EventBridge reserves it)",
            ));
        }
        Ok(())
    }
}
