//! What failed, per request, and redriving it. A request's failed jobs are found through the
//! ledger's index of FAILED jobs (a page at a time, whatever else the dead-letter queue
//! holds); the dead-letter queue stays the archive of the messages and their failure
//! records, kept for its retention period. `dlq list` without a request peeks at the queue
//! itself: up to a limit of messages, hidden while read and visible again when it returns.

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_shared::dead_letter::{FailureRecord, attr};
use fleet_shared::ids::JobId;
use fleet_shared::ledger::{Change, JobDetail, LedgerError, RequestLedger};
use fleet_shared::message::{JobMessage, Target};
use fleet_shared::queue::{JobQueue, MAX_BATCH};
use fleet_shared::state::JobState;
use serde::Serialize;

use crate::{JobView, Producer, ProducerError};

/// How long messages stay hidden while `dlq list` reads them.
const HIDE: Duration = Duration::from_secs(60);

/// Failed jobs redriven per ledger transaction.
const REDRIVE_BATCH: usize = 25;

/// A failed job, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub job_id: Option<String>,
    pub request_id: Option<String>,
    pub error_class: String,
    pub error: String,
    pub attempts: u32,
    pub targets: Vec<fleet_shared::message::Target>,
    pub first_attempt_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    /// From the dead-letter queue: the message and how many copies it holds of the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copies: Option<usize>,
}

impl Listed {
    fn from_view(request_id: &str, v: &JobView) -> Self {
        let targets = fleet_shared::ledger::targets_of(&v.history);
        let started = v.history.iter().map(|h| h.record.started_ms);
        // The whole error of the last failed attempt, if the history has it.
        let error = v
            .history
            .iter()
            .rev()
            .find_map(|h| h.error.clone())
            .or_else(|| v.last_error.clone())
            .unwrap_or_default();
        Listed {
            job_id: Some(v.job_id.clone()),
            request_id: Some(request_id.to_owned()),
            error_class: v.error_class.clone().unwrap_or_else(|| "unknown".into()),
            error,
            attempts: v.attempts,
            targets,
            first_attempt_ms: started.clone().min(),
            last_attempt_ms: started.max(),
            message_id: None,
            copies: None,
        }
    }

    fn from_record(r: Option<FailureRecord>, message_id: String, copies: usize) -> Self {
        Listed {
            job_id: r.as_ref().and_then(|r| r.job_id.clone()),
            request_id: r.as_ref().and_then(|r| r.request_id.clone()),
            error_class: r
                .as_ref()
                .map_or_else(|| "unknown".into(), |r| r.error_class.as_str().to_owned()),
            error: r.as_ref().map_or_else(
                || "no failure record (moved by SQS's redrive policy?)".into(),
                |r| r.error.clone(),
            ),
            attempts: r.as_ref().map_or(0, |r| r.attempts),
            targets: r.as_ref().map_or_else(Vec::new, |r| r.targets.clone()),
            first_attempt_ms: r.as_ref().and_then(|r| r.first_attempt_ms),
            last_attempt_ms: r.as_ref().and_then(|r| r.last_attempt_ms),
            message_id: Some(message_id),
            copies: Some(copies),
        }
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    pub request_id: String,
    /// Jobs made PENDING again and sent to the jobs queue.
    pub redriven: u32,
    /// Failed jobs left as they were, with the reason.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub job_id: String,
    pub reason: String,
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// A page of a request's failed jobs, from the ledger (with their histories).
    pub async fn failures_page(
        &self,
        request_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<fleet_shared::ledger::Page<Listed>, ProducerError> {
        let page = self
            .jobs_page(request_id, Some(JobState::Failed), cursor, limit, true)
            .await?;
        Ok(fleet_shared::ledger::Page {
            items: page
                .items
                .iter()
                .map(|v| Listed::from_view(request_id, v))
                .collect(),
            next: page.next,
        })
    }

    /// Up to `limit` messages of the dead-letter queue (one entry per job, copies merged),
    /// of every request: a look at the archive. The messages are visible again when this
    /// returns.
    pub async fn dlq_peek(&self, limit: usize) -> Result<Vec<Listed>, ProducerError> {
        let dlq = self
            .dead_letters
            .as_ref()
            .ok_or(ProducerError::NoDeadLetterQueue)?;
        let mut letters = Vec::new();
        let mut empty = 0;
        while letters.len() < limit && empty < 2 {
            let wait = Duration::from_secs(if empty == 0 { 0 } else { 1 });
            let want = (limit - letters.len()).min(MAX_BATCH);
            let batch = dlq.receive_with_attributes(want, wait, HIDE).await?;
            if batch.is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            letters.extend(batch);
        }
        let mut by_job: BTreeMap<String, (Option<FailureRecord>, String, usize)> = BTreeMap::new();
        for (m, attrs) in &letters {
            let record = attrs
                .get(attr::FAILURE)
                .and_then(|j| FailureRecord::from_attribute(j));
            let key = record
                .as_ref()
                .and_then(|r| r.job_id.clone())
                .unwrap_or_else(|| format!("~{}", m.message_id));
            by_job
                .entry(key)
                .and_modify(|e| e.2 += 1)
                .or_insert((record, m.message_id.clone(), 1));
        }
        for (m, _) in &letters {
            if let Err(e) = dlq.set_visibility(&m.receipt, Duration::ZERO).await {
                tracing::warn!(error = %e, message_id = %m.message_id, "could not make a dead letter visible again; it will be in {}s", HIDE.as_secs());
            }
        }
        Ok(by_job
            .into_values()
            .map(|(r, id, copies)| Listed::from_record(r, id, copies))
            .collect())
    }

    /// Sends one request's failed jobs back to the jobs queue: each becomes PENDING with
    /// `max_attempts` more attempts than it has used (default: the configured limit for its
    /// job type), optionally with another target, and gets a new message. The jobs are found
    /// in the ledger's failed index, a page at a time; their dead-letter messages stay in the
    /// queue as the archive. Running it again redrives what failed since.
    pub async fn dlq_redrive(
        &self,
        request_id: &str,
        max_attempts: Option<u32>,
        target: Option<Target>,
    ) -> Result<RedriveReport, ProducerError> {
        let record = self.ledger.get_request(request_id).await?;
        if let Some(r) = &record
            && r.cancelled_at_ms.is_some()
        {
            let why = match &r.failed {
                Some(f) => format!("FAILED as a whole ({})", f.reason),
                None => "cancelled".into(),
            };
            return Err(ProducerError::Cancelled {
                request_id: request_id.to_owned(),
                why,
            });
        }
        let shards = record
            .as_ref()
            .map_or(fleet_shared::ledger::memory::DIRECT_JOB_SHARDS, |r| {
                r.job_shards
            });
        let tenant = record.as_ref().and_then(|r| r.tenant.clone());
        let mut report = RedriveReport {
            request_id: request_id.to_owned(),
            ..Default::default()
        };
        // Redriven jobs leave the failed index, so every page is read from the start.
        loop {
            let page = self
                .ledger
                .failed_page(request_id, None, REDRIVE_BATCH)
                .await?;
            let skipped_before = report.skipped.len();
            let picked: Vec<&JobDetail> = page
                .items
                .iter()
                .filter(|j| !report.skipped.iter().any(|s| s.job_id == j.job_id))
                .collect();
            if picked.is_empty() {
                break;
            }
            let mut changes = Vec::new();
            let mut messages = Vec::new();
            for j in picked {
                match self
                    .redrive_change(j, shards, max_attempts, target, tenant.as_deref())
                    .await
                {
                    Ok((change, message)) => {
                        changes.push(change);
                        messages.push(message);
                    }
                    Err(reason) => report.skipped.push(Skipped {
                        job_id: j.job_id.clone(),
                        reason,
                    }),
                }
            }
            let results = self
                .ledger
                .commit_changes(fleet_shared::ledger::PRODUCER_SLOT, &changes)
                .await?;
            let mut bodies = Vec::new();
            for ((change, message), r) in changes.iter().zip(messages).zip(results) {
                match r {
                    Ok(()) => bodies.push(message),
                    Err(LedgerError::Stale { .. }) => report.skipped.push(Skipped {
                        job_id: change.job().to_string(),
                        reason: "the job changed while it was being redriven".into(),
                    }),
                    Err(e) => report.skipped.push(Skipped {
                        job_id: change.job().to_string(),
                        reason: e.to_string(),
                    }),
                }
            }
            // A crash here leaves redriven jobs PENDING without a message: the sweeper sends
            // them again (they are due since the redrive).
            self.queue.send_all(&bodies).await?;
            report.redriven += bodies.len() as u32;
            if bodies.is_empty() && report.skipped.len() == skipped_before {
                break;
            }
        }
        Ok(report)
    }

    /// The ledger change and the new message of one failed job's redrive; `Err` says why it
    /// is left as it is.
    async fn redrive_change(
        &self,
        j: &JobDetail,
        shards: u32,
        max_attempts: Option<u32>,
        target: Option<Target>,
        tenant: Option<&str>,
    ) -> Result<(Change, String), String> {
        let job = JobId::parse(&j.job_id).map_err(|e| e.to_string())?;
        let key = fleet_shared::ledger::item::job_key(&job, shards);
        let (item, payload_json) = self
            .ledger
            .job(&key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the ledger has no such job")?;
        if item.state != JobState::Failed {
            return Err(format!("the job is {}, not FAILED", item.state));
        }
        let budget =
            max_attempts.unwrap_or_else(|| self.config.max_attempts_for(&item.job_type, None));
        let now = fleet_shared::time::now_ms();
        let mut message = JobMessage::for_job(
            &job,
            &item.job_type,
            &payload_json,
            item.attempts + 1,
            Some(item.attempts + budget),
            target.or(item.target),
            now,
        )
        .map_err(|e| e.to_string())?;
        message.tenant = tenant.map(str::to_owned);
        Ok((
            Change::Redrive {
                job,
                key,
                fence: item.fence,
                budget,
                target,
                now_ms: now,
            },
            message.to_body(),
        ))
    }
}
