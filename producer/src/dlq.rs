//! The dead-letter queue, per request: list what failed and why, and redrive one request's
//! failed jobs with a fresh attempt budget while every other message stays where it is.
//! (SQS's own StartMessageMoveTask moves a whole queue at once.)
//!
//! Reading a queue means receiving its messages: while a command works they are hidden
//! (`HIDE`), and every message it does not consume is made visible again before it returns.

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_shared::dead_letter::{FailureRecord, attr};
use fleet_shared::ids::JobId;
use fleet_shared::ledger::Redrive;
use fleet_shared::message::{JobMessage, MESSAGE_VERSION, RoutingHint, Target, parse_message};
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::queue::{JobQueue, MAX_BATCH, QueueError};
use fleet_shared::state::JobState;
use serde::Serialize;

use crate::{Producer, ProducerError};

/// How long messages stay hidden while a command looks at them.
const HIDE: Duration = Duration::from_secs(120);

/// One message of the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub record: Option<FailureRecord>,
}

impl DeadLetter {
    pub fn job_id(&self) -> Option<&str> {
        self.record.as_ref().and_then(|r| r.job_id.as_deref())
    }

    pub fn request_id(&self) -> Option<&str> {
        self.record.as_ref().and_then(|r| r.request_id.as_deref())
    }
}

/// A dead-lettered job (copies of the same job merged) or a message that names none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub job_id: Option<String>,
    pub request_id: Option<String>,
    pub error_class: String,
    pub error: String,
    pub attempts: u32,
    pub targets: Vec<String>,
    pub first_attempt_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    pub dead_lettered_ms: Option<u64>,
    /// Messages in the queue for this job (a crash can leave two).
    pub copies: usize,
    pub message_id: String,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    pub request_id: String,
    /// Jobs made PENDING again and sent to the jobs queue.
    pub redriven: u32,
    /// Jobs left in the dead-letter queue, with the reason.
    pub skipped: Vec<Skipped>,
    /// Dead-letter messages of other requests, untouched.
    pub others: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub job_id: String,
    pub reason: String,
}

/// Receives every message of the queue (each hidden for `HIDE`).
async fn read_all(dlq: &SqsQueue) -> Result<Vec<DeadLetter>, QueueError> {
    let mut out = Vec::new();
    let mut empty = 0;
    // SQS may answer a receive with nothing while messages remain (it samples servers);
    // stop after two empty answers in a row, the second with a short long-poll.
    while empty < 2 {
        let wait = Duration::from_secs(if empty == 0 { 0 } else { 1 });
        let batch = dlq.receive_with_attributes(MAX_BATCH, wait, HIDE).await?;
        if batch.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        out.extend(batch.into_iter().map(|(m, attrs)| {
            DeadLetter {
                record: attrs
                    .get(attr::FAILURE)
                    .and_then(|j| FailureRecord::from_attribute(j)),
                message_id: m.message_id,
                receipt: m.receipt,
                body: m.body,
            }
        }));
    }
    Ok(out)
}

/// Makes messages visible again at once.
async fn hand_back(dlq: &SqsQueue, letters: &[&DeadLetter]) {
    for l in letters {
        if let Err(e) = dlq.set_visibility(&l.receipt, Duration::ZERO).await {
            tracing::warn!(error = %e, message_id = %l.message_id, "could not make a dead letter visible again; it will be in {}s", HIDE.as_secs());
        }
    }
}

/// Messages grouped by job id, in job order; messages without a job id each on their own.
fn by_job(letters: &[DeadLetter]) -> Vec<Vec<&DeadLetter>> {
    let mut jobs: BTreeMap<(String, u32), Vec<&DeadLetter>> = BTreeMap::new();
    let mut loose = Vec::new();
    for l in letters {
        match l.job_id().and_then(|j| JobId::parse(j).ok()) {
            Some(id) => jobs
                .entry((id.request_id().to_owned(), id.index()))
                .or_default()
                .push(l),
            None => loose.push(vec![l]),
        }
    }
    jobs.into_values().chain(loose).collect()
}

fn listed(copies: &[&DeadLetter]) -> Listed {
    let first = copies[0];
    let r = first.record.clone();
    Listed {
        job_id: first.job_id().map(str::to_owned),
        request_id: first.request_id().map(str::to_owned),
        error_class: r
            .as_ref()
            .map_or_else(|| "unknown".into(), |r| r.error_class.clone()),
        error: r.as_ref().map_or_else(
            || "no failure record (moved by SQS's redrive policy?)".into(),
            |r| r.error.clone(),
        ),
        attempts: r.as_ref().map_or(0, |r| r.attempts),
        targets: r.as_ref().map_or_else(Vec::new, |r| r.targets.clone()),
        first_attempt_ms: r.as_ref().and_then(|r| r.first_attempt_ms),
        last_attempt_ms: r.as_ref().and_then(|r| r.last_attempt_ms),
        dead_lettered_ms: r.as_ref().map(|r| r.dead_lettered_ms),
        copies: copies.len(),
        message_id: first.message_id.clone(),
    }
}

impl Producer {
    fn dlq(&self) -> Result<&SqsQueue, ProducerError> {
        self.dead_letters
            .as_ref()
            .ok_or(ProducerError::NoDeadLetterQueue)
    }

    /// The dead-letter queue's jobs (one entry per job), of one request or all.
    pub async fn dlq_list(&self, request_id: Option<&str>) -> Result<Vec<Listed>, ProducerError> {
        let dlq = self.dlq()?;
        let letters = read_all(dlq).await?;
        let list = by_job(&letters)
            .iter()
            .filter(|copies| request_id.is_none() || copies[0].request_id() == request_id)
            .map(|copies| listed(copies))
            .collect();
        hand_back(dlq, &letters.iter().collect::<Vec<_>>()).await;
        Ok(list)
    }

    /// Sends one request's failed jobs back to the jobs queue: each becomes PENDING with
    /// `max_attempts` more attempts than it has used (default: the configured limit for its
    /// job type), optionally with another target; its dead-letter copies are deleted once
    /// the new message is sent. Messages of other requests are made visible again untouched.
    pub async fn dlq_redrive(
        &self,
        request_id: &str,
        max_attempts: Option<u32>,
        target: Option<Target>,
    ) -> Result<RedriveReport, ProducerError> {
        let dlq = self.dlq()?;
        let letters = read_all(dlq).await?;
        let groups = by_job(&letters);
        let (mine, others): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .partition(|c| c.iter().any(|l| l.request_id() == Some(request_id)));
        hand_back(dlq, &others.iter().flatten().copied().collect::<Vec<_>>()).await;
        let mut report = RedriveReport {
            request_id: request_id.to_owned(),
            others: others.iter().map(Vec::len).sum::<usize>() as u32,
            ..Default::default()
        };
        for copies in mine {
            match self.redrive_one(&copies, max_attempts, target).await {
                Ok(()) => {
                    report.redriven += 1;
                    let receipts: Vec<String> = copies.iter().map(|l| l.receipt.clone()).collect();
                    for chunk in receipts.chunks(MAX_BATCH) {
                        dlq.delete_batch(chunk).await?;
                    }
                }
                Err(reason) => {
                    hand_back(dlq, &copies).await;
                    report.skipped.push(Skipped {
                        job_id: copies[0].job_id().unwrap_or("?").to_owned(),
                        reason,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Redrives one job; `Err` says why it was left in the dead-letter queue.
    async fn redrive_one(
        &self,
        copies: &[&DeadLetter],
        max_attempts: Option<u32>,
        target: Option<Target>,
    ) -> Result<(), String> {
        let job = copies[0]
            .job_id()
            .and_then(|j| JobId::parse(j).ok())
            .ok_or("no job id")?;
        let original = copies
            .iter()
            .find_map(|l| parse_message(&l.body, usize::MAX).ok().map(|(m, _)| m));
        let job_type_hint = original.as_ref().map(|m| m.job_type.as_str()).unwrap_or("");
        let budget =
            max_attempts.unwrap_or_else(|| self.config.max_attempts_for(job_type_hint, None));
        let redriven = self
            .ledger
            .redrive(&job, budget, target)
            .await
            .map_err(|e| e.to_string())?;
        let (job_type, payload_json, attempts, max) = match redriven {
            Redrive::Redriven {
                job_type,
                payload_json,
                attempts,
                max_attempts,
            } => (job_type, payload_json, attempts, max_attempts),
            Redrive::NotFailed(JobState::Succeeded) => {
                return Err("the job has succeeded since".into());
            }
            Redrive::NotFailed(state) => return Err(format!("the job is {state}, not FAILED")),
            Redrive::Missing => return Err("the ledger has no such job".into()),
        };
        let routing = match target {
            Some(t) => Some(RoutingHint {
                target: Some(t),
                estimated_secs: None,
            }),
            None => original.and_then(|m| m.routing),
        };
        let message = JobMessage {
            version: MESSAGE_VERSION,
            request_id: job.request_id().to_owned(),
            job_id: job.to_string(),
            job_type,
            attempt: attempts + 1,
            payload: serde_json::from_str(&payload_json)
                .map_err(|e| format!("stored payload is not JSON: {e}"))?,
            routing,
            enqueued_at_ms: fleet_shared::time::now_ms(),
            max_attempts: Some(max),
        };
        self.queue
            .send_all(&[message.to_body()])
            .await
            .map_err(|e| e.to_string())
    }
}
