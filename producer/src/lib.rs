//! The Fleet producer: turns a request into jobs with deterministic ids, records them in the
//! ledger, and sends their messages. Re-submitting a request never creates a second copy of
//! a job. Also reads a request's status.

pub mod dlq;
pub mod request;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fleet_shared::config::Config;
use fleet_shared::ids::JobId;
use futures::{StreamExt, TryStreamExt};

use fleet_shared::ledger::dynamo::{DynamoLedger, PutRequestOutcome};
use fleet_shared::ledger::{JobDetail, JobSummary, LedgerError};
use fleet_shared::queue::QueueError;
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::state::JobState;
use serde::Serialize;

use fleet_shared::s3::S3Uri;
use request::{JobsPlan, SourceObject};
pub use request::{RequestError, RequestFile, ValidRequest};

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("invalid request: {0}")]
    Invalid(#[from] RequestError),
    #[error(
        "request {request_id} exists with other content; nothing was written (submit with another request_id, or the same content to re-send its pending jobs)"
    )]
    Conflict { request_id: String },
    #[error("no request {0}")]
    NotFound(String),
    #[error(
        "request {request_id} is not finished ({finished}/{total} jobs); its payloads are still needed (--force deletes them anyway)"
    )]
    NotDone {
        request_id: String,
        finished: u32,
        total: u32,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("no dead-letter queue is configured")]
    NoDeadLetterQueue,
    #[error("{0}")]
    Ecs(String),
    /// S3 failed (listing a source, writing or deleting claim-check payloads).
    #[error("{0}")]
    Storage(String),
}

/// What `submit` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmitReport {
    pub request_id: String,
    pub jobs: u32,
    /// False when the request already existed (a re-submission).
    pub created: bool,
    /// Job items written to the ledger.
    pub written: u32,
    /// Messages sent.
    pub sent: u32,
}

/// A request's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub request_id: String,
    pub total: u32,
    /// Jobs per state; every state is listed.
    pub states: BTreeMap<String, u32>,
    /// Every job is in a terminal state.
    pub done: bool,
    /// Attempts started over all jobs.
    pub attempts: u64,
}

impl Status {
    pub fn count(&self, state: JobState) -> u32 {
        self.states.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Jobs in a terminal state.
    pub fn finished(&self) -> u32 {
        JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| self.count(s))
            .sum()
    }

    fn from_jobs(request_id: &str, total: u32, jobs: &[JobSummary]) -> Self {
        let mut states: BTreeMap<String, u32> = JobState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        for j in jobs {
            *states.entry(j.state.as_str().to_owned()).or_default() += 1;
        }
        let terminal = jobs.iter().filter(|j| j.state.is_terminal()).count() as u32;
        Status {
            request_id: request_id.to_owned(),
            total,
            states,
            done: total > 0 && terminal >= total,
            attempts: jobs.iter().map(|j| u64::from(j.attempts)).sum(),
        }
    }
}

pub struct Producer {
    ledger: DynamoLedger,
    queue: SqsQueue,
    dead_letters: Option<SqsQueue>,
    s3: Option<aws_sdk_s3::Client>,
    config: Arc<Config>,
}

/// Most objects one source prefix may hold.
pub const MAX_SOURCE_OBJECTS: usize = 2_000_000;

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelReport {
    pub request_id: String,
    /// Jobs this call moved to CANCELLED.
    pub cancelled: u32,
    /// Running tasks this call stopped (with `--stop-running`).
    pub stopped: u32,
    /// The request's jobs per state afterwards (RUNNING ones finish).
    pub states: BTreeMap<String, u32>,
}

impl Producer {
    pub fn new(ledger: DynamoLedger, queue: SqsQueue, config: Arc<Config>) -> Self {
        Self {
            ledger,
            queue,
            dead_letters: None,
            s3: None,
            config,
        }
    }

    /// Adds S3, for `source` requests and the claim-check.
    pub fn with_s3(mut self, s3: aws_sdk_s3::Client) -> Self {
        self.s3 = Some(s3);
        self
    }

    fn s3(&self) -> Result<&aws_sdk_s3::Client, ProducerError> {
        self.s3
            .as_ref()
            .ok_or_else(|| ProducerError::Storage("no S3 client".into()))
    }

    /// The objects under a source prefix, in key order (folder markers left out).
    async fn list_source(&self, prefix: &S3Uri) -> Result<Vec<SourceObject>, ProducerError> {
        use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
        let s3 = self.s3()?;
        let mut pages = s3
            .list_objects_v2()
            .bucket(&prefix.bucket)
            .prefix(&prefix.key)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| match e.as_service_error() {
                Some(ListObjectsV2Error::NoSuchBucket(_)) => {
                    ProducerError::Invalid(RequestError::Field {
                        field: "source.s3_prefix".into(),
                        reason: format!("no bucket {:?}", prefix.bucket),
                    })
                }
                _ => ProducerError::Storage(format!(
                    "listing {prefix}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )),
            })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                if key.ends_with('/') && o.size().unwrap_or(0) == 0 {
                    continue;
                }
                objects.push(SourceObject {
                    key: key.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or("").trim_matches('"').to_owned(),
                });
            }
            if objects.len() > MAX_SOURCE_OBJECTS {
                return Err(ProducerError::Invalid(RequestError::Field {
                    field: "source.s3_prefix".into(),
                    reason: format!("more than {MAX_SOURCE_OBJECTS} objects under {prefix}"),
                }));
            }
        }
        Ok(objects)
    }

    /// Deletes the claim-check payloads of a finished request (all its jobs terminal), or of
    /// any request with `force`. The number of objects deleted.
    pub async fn cleanup(&self, request_id: &str, force: bool) -> Result<u64, ProducerError> {
        let Some(prefix) = self.config.claim_check.location() else {
            return Err(ProducerError::Storage(
                "no claim_check.prefix is configured".into(),
            ));
        };
        if !force {
            let status = self.status(request_id).await?;
            if !status.done {
                return Err(ProducerError::NotDone {
                    request_id: request_id.to_owned(),
                    finished: status.finished(),
                    total: status.total,
                });
            }
        }
        let under = fleet_shared::claim_check::request_prefix(&prefix, request_id);
        fleet_shared::claim_check::delete_prefix(self.s3()?, &under)
            .await
            .map_err(ProducerError::Storage)
    }

    /// Adds the dead-letter queue, for `dlq` commands.
    pub fn with_dead_letters(mut self, dlq: SqsQueue) -> Self {
        self.dead_letters = Some(dlq);
        self
    }

    /// Every job of a request in full (state, attempts, history with targets and routing
    /// reasons, last error).
    pub async fn jobs(&self, request_id: &str) -> Result<Vec<JobDetail>, ProducerError> {
        let jobs = self.ledger.jobs(request_id).await?;
        if jobs.is_empty() && self.ledger.get_request(request_id).await?.is_none() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        Ok(jobs)
    }

    /// Cancels a request: its PENDING and RETRYING jobs become CANCELLED and are never
    /// dispatched (a worker that receives their messages deletes them); RUNNING jobs finish,
    /// unless `stop_running`: then jobs running in a task (ECS or a local process) become
    /// CANCELLED and their tasks are stopped (`ecs` stops ECS tasks; the worker that runs a
    /// local process kills it when its lease turns out gone). Lambda invocations cannot be
    /// stopped and finish. Cancelling again changes nothing.
    pub async fn cancel(
        &self,
        request_id: &str,
        stop_running: Option<&aws_sdk_ecs::Client>,
    ) -> Result<CancelReport, ProducerError> {
        let jobs = self.ledger.job_summaries(request_id).await?;
        if jobs.is_empty() && self.ledger.get_request(request_id).await?.is_none() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        let now = fleet_shared::time::now_ms();
        let ledger = &self.ledger;
        // The futures are built first and then run 16 at a time: a stream closure over
        // borrowed items would make this future impossible to prove `Send`
        // (rust-lang/rust#102211), and the HTTP API runs it on a multi-threaded server.
        let cancels: Vec<_> = jobs
            .iter()
            .filter(|j| matches!(j.state, JobState::Pending | JobState::Retrying))
            .map(|j| async move {
                let id = JobId::new(request_id, j.index).map_err(|e| LedgerError::Malformed {
                    key: request_id.to_owned(),
                    message: e.to_string(),
                })?;
                ledger.cancel(&id, now).await
            })
            .collect();
        let cancelled: Vec<bool> = futures::stream::iter(cancels)
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut stopped = 0;
        let mut cancelled = cancelled.iter().filter(|c| **c).count() as u32;
        if let Some(ecs) = stop_running {
            for j in jobs.iter().filter(|j| j.state == JobState::Running) {
                let id = JobId::new(request_id, j.index).map_err(|e| LedgerError::Malformed {
                    key: request_id.to_owned(),
                    message: e.to_string(),
                })?;
                let Some(task) = self.ledger.cancel_running(&id, now).await? else {
                    continue;
                };
                cancelled += 1;
                if !task.starts_with("process:") {
                    let cluster = self.config.ecs.cluster.as_deref().unwrap_or("default");
                    ecs.stop_task()
                        .cluster(cluster)
                        .task(&task)
                        .reason(format!("request {request_id} cancelled"))
                        .send()
                        .await
                        .map_err(|e| {
                            ProducerError::Ecs(format!(
                                "StopTask {task}: {}",
                                aws_sdk_ecs::error::DisplayErrorContext(e)
                            ))
                        })?;
                }
                stopped += 1;
            }
        }
        self.ledger.mark_request_cancelled(request_id, now).await?;
        let after = self.status(request_id).await?;
        Ok(CancelReport {
            request_id: request_id.to_owned(),
            cancelled,
            stopped,
            states: after.states,
        })
    }

    /// Records and sends a validated request. The request item is written first
    /// (conditionally: the same id with other content is refused before anything else is
    /// written), then the job items, then the messages. A crash part-way is repaired by
    /// submitting again: missing job items are written and every job still PENDING gets its
    /// message again (a duplicate message is harmless: the claim runs a job once).
    pub async fn submit(&self, req: &ValidRequest) -> Result<SubmitReport, ProducerError> {
        let id = &req.record.request_id;
        let (created, missing, pending): (bool, Vec<usize>, HashSet<u32>) =
            match self.ledger.put_request(&req.record).await? {
                PutRequestOutcome::Created => (true, (0..req.jobs.len()).collect(), HashSet::new()),
                PutRequestOutcome::Exists(existing) => {
                    if existing.content_hash != req.record.content_hash {
                        return Err(ProducerError::Conflict {
                            request_id: id.clone(),
                        });
                    }
                    let have = self.ledger.job_summaries(id).await?;
                    let present: HashSet<u32> = have.iter().map(|j| j.index).collect();
                    let missing = (0..req.jobs.len())
                        .filter(|i| !present.contains(&(*i as u32)))
                        .collect();
                    let pending = have
                        .iter()
                        .filter(|j| j.state == JobState::Pending)
                        .map(|j| j.index)
                        .collect();
                    (false, missing, pending)
                }
            };
        // Payloads kept in S3 go first: a job item never points at a missing object. The keys
        // are the jobs', so writing them again (a re-submission) puts the same bytes back.
        let uploads: Vec<_> = req
            .uploads
            .iter()
            .filter(|(i, _, _)| missing.binary_search(&(*i as usize)).is_ok())
            .collect();
        if !uploads.is_empty() {
            let s3 = self.s3()?;
            let puts: Vec<_> = uploads
                .into_iter()
                .map(|(_, uri, body)| fleet_shared::claim_check::put(s3, uri, body.clone()))
                .collect();
            futures::stream::iter(puts)
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await
                .map_err(ProducerError::Storage)?;
        }
        let new_jobs: Vec<_> = missing.iter().map(|&i| req.jobs[i].clone()).collect();
        self.ledger.put_new_jobs(&new_jobs).await?;
        let to_send: Vec<String> = (0..req.bodies.len())
            .filter(|i| missing.binary_search(i).is_ok() || pending.contains(&(*i as u32)))
            .map(|i| req.bodies[i].clone())
            .collect();
        if let Err(e) = self.queue.send_all(&to_send).await {
            metrics::counter!(fleet_shared::metrics::ENQUEUE_FAILURES)
                .increment(to_send.len() as u64);
            return Err(e.into());
        }
        metrics::counter!(
            fleet_shared::metrics::JOBS_SUBMITTED,
            "job_type" => req.record.job_type.clone()
        )
        .increment(to_send.len() as u64);
        Ok(SubmitReport {
            request_id: id.clone(),
            jobs: req.record.total,
            created,
            written: new_jobs.len() as u32,
            sent: to_send.len() as u32,
        })
    }

    /// Checks a parsed request completely (expanding an S3 prefix or a range into its jobs)
    /// without writing anything.
    pub async fn prepare(&self, file: RequestFile) -> Result<ValidRequest, ProducerError> {
        let payloads = match request::plan(&file)? {
            JobsPlan::Ready(payloads) => payloads,
            JobsPlan::List(prefix, spec) => {
                let objects = self.list_source(&prefix).await?;
                request::group_objects(&prefix, &spec, file.params.as_ref(), &objects)
            }
        };
        let claim_check = self
            .config
            .claim_check
            .location()
            .map(|prefix| request::ClaimCheck {
                prefix,
                inline_max_bytes: self.config.claim_check.inline_max_bytes,
            });
        Ok(request::build(
            file,
            payloads,
            self.config.limits.max_message_bytes,
            claim_check.as_ref(),
            fleet_shared::time::now_ms(),
        )?)
    }

    /// [`Producer::prepare`], then [`Producer::submit`]: what `submit` and the HTTP API do.
    pub async fn submit_file(&self, file: RequestFile) -> Result<SubmitReport, ProducerError> {
        let valid = self.prepare(file).await?;
        self.submit(&valid).await
    }

    /// Counts of a request's jobs per state.
    pub async fn status(&self, request_id: &str) -> Result<Status, ProducerError> {
        let request = self.ledger.get_request(request_id).await?;
        let jobs = self.ledger.job_summaries(request_id).await?;
        let total = match &request {
            Some(r) => r.total,
            // Jobs sent straight to SQS by another service have items but no request item.
            None if !jobs.is_empty() => jobs.len() as u32,
            None => return Err(ProducerError::NotFound(request_id.to_owned())),
        };
        Ok(Status::from_jobs(request_id, total, &jobs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(index: u32, state: JobState, attempts: u32) -> JobSummary {
        JobSummary {
            index,
            state,
            attempts,
        }
    }

    #[test]
    fn status_counts() {
        let s = Status::from_jobs(
            "r",
            3,
            &[
                job(0, JobState::Succeeded, 1),
                job(1, JobState::Failed, 5),
                job(2, JobState::Running, 2),
            ],
        );
        assert_eq!(s.finished(), 2);
        assert!(!s.done);
        assert_eq!(s.attempts, 8);
        assert_eq!(s.states.len(), 6);
        let s = Status::from_jobs(
            "r",
            2,
            &[
                job(0, JobState::Succeeded, 1),
                job(1, JobState::Cancelled, 0),
            ],
        );
        assert!(s.done);
    }
}
