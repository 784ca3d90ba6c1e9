//! `[queue]`: the jobs queue and its dead-letter queue.

use serde::Deserialize;

use super::{ConfigError, check_queue, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The jobs queue, by name or URL. Env `FLEET_QUEUE`.
    pub jobs: String,
    /// The dead-letter queue, by name or URL. Env `FLEET_DLQ`.
    pub dead_letter: String,
    /// `maxReceiveCount` of the redrive policy `fleet-worker init` sets: SQS moves a message
    /// received this many times to the dead-letter queue. A safety net well above
    /// `worker.max_attempts`, since a message is also received when it is only deferred.
    pub max_receive_count: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            jobs: "fleet-jobs".into(),
            dead_letter: "fleet-jobs-dlq".into(),
            max_receive_count: 100,
        }
    }
}

impl QueueConfig {
    /// Checks this section alone (that `max_receive_count` exceeds `worker.max_attempts` is
    /// checked by [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_queue("queue.jobs", &self.jobs)?;
        check_queue("queue.dead_letter", &self.dead_letter)?;
        if self.jobs == self.dead_letter {
            return Err(invalid("queue.dead_letter", "must differ from queue.jobs"));
        }
        if !(1..=1000).contains(&self.max_receive_count) {
            return Err(invalid("queue.max_receive_count", "must be 1 to 1000"));
        }
        Ok(())
    }
}
