//! The Fleet producer: turns a request into jobs with deterministic ids, records them in the
//! ledger and sends their messages, a chunk at a time (the first messages go out within
//! seconds even for a million jobs). Re-submitting a request never creates a second copy of
//! a job, and finishes a submission that was cut short. Also reads a request's progress
//! (from its counters: a bounded number of reads whatever its size), lists its jobs a page
//! at a time, cancels it (one write), and reads results.
//!
//! [`Producer`] is generic over the ledger and the queue, so its logic is unit-tested on
//! the in-memory parts; the binaries use DynamoDB and SQS.

pub mod dlq;
pub mod request;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_shared::config::Config;
use fleet_shared::ids::JobId;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::ledger::item::{self, JobItem};
use fleet_shared::ledger::memory::DIRECT_JOB_SHARDS;
use fleet_shared::ledger::{
    Counts, History, JobDetail, LedgerError, Page, PutRequestOutcome, RequestLedger, RequestRecord,
};
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::queue::{JobQueue, QueueError};
use fleet_shared::state::JobState;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use fleet_shared::s3::S3Uri;
use request::{JobsPlan, SourceObject};
pub use request::{RequestError, RequestFile, ValidRequest};

/// Jobs written (items, then messages) per step of a submission.
pub const SUBMIT_CHUNK: usize = 1000;

/// How long `cancel` waits after its write before it returns: a replica trusts a request's
/// view for at most [`fleet_shared::ledger::REQUEST_VIEW_TTL`], so no job starts after this.
pub const CANCEL_SETTLE: Duration =
    Duration::from_millis(fleet_shared::ledger::REQUEST_VIEW_TTL.as_millis() as u64 + 500);

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("invalid request: {0}")]
    Invalid(#[from] RequestError),
    #[error(
        "request {request_id} exists with other content; nothing was written (submit with another request_id, or the same content to finish its submission)"
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
    /// S3 failed (listing a source, writing, reading or deleting claim-check objects).
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

/// A request's progress, from its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub request_id: String,
    pub total: u32,
    /// Jobs per state; every state is listed. SUCCEEDED, FAILED and CANCELLED are exact;
    /// RUNNING comes from the replicas' reports (up to 10 seconds old); RETRYING counts the
    /// jobs waiting for their next attempt; PENDING is the rest (not started yet).
    pub states: BTreeMap<String, u32>,
    /// Every job is in a terminal state.
    pub done: bool,
    /// Attempts recorded over all jobs.
    pub attempts: u64,
    /// When the request was cancelled, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at_ms: Option<u64>,
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

    /// The status of a request with `total` jobs (`None`: no request item, its jobs were
    /// sent straight to SQS and its total is the jobs seen) from its counts.
    pub fn from_counts(
        request_id: &str,
        total: Option<u32>,
        c: &Counts,
        cancelled_at_ms: Option<u64>,
    ) -> Self {
        let n = |v: i64| v.max(0) as u32;
        let finished = n(c.succeeded) + n(c.failed) + n(c.cancelled);
        let running = n(c.running);
        // Jobs after a retry that run now are in the running count.
        let retrying = n(c.retrying - c.running_after_retry);
        let total = total.unwrap_or(finished + running + retrying);
        let pending = total.saturating_sub(finished + running + retrying);
        let mut states = BTreeMap::new();
        for (s, v) in [
            (JobState::Pending, pending),
            (JobState::Running, running),
            (JobState::Retrying, retrying),
            (JobState::Succeeded, n(c.succeeded)),
            (JobState::Failed, n(c.failed)),
            (JobState::Cancelled, n(c.cancelled)),
        ] {
            states.insert(s.as_str().to_owned(), v);
        }
        Status {
            request_id: request_id.to_owned(),
            total,
            states,
            done: total > 0 && finished >= total,
            attempts: c.attempts.max(0) as u64,
            cancelled_at_ms,
        }
    }
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelReport {
    pub request_id: String,
    /// When the request was (first) cancelled.
    pub cancelled_at_ms: u64,
    /// Jobs running in tasks are stopped too.
    pub stop_running: bool,
    /// The request's jobs per state as `cancel` returns: jobs not started become CANCELLED
    /// as their messages arrive at a replica.
    pub states: BTreeMap<String, u32>,
}

/// One job as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub state: JobState,
    pub attempts: u32,
    /// Where the last attempt ran, and why.
    pub target: Option<String>,
    pub reason: Option<String>,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    pub task: Option<String>,
    /// The attempts, oldest first (failed ones with their whole error).
    pub history: Vec<fleet_shared::ledger::HistoryEntry>,
    /// Older attempts no longer kept.
    pub older_attempts: u64,
}

impl JobView {
    fn new(j: &JobDetail, history: History) -> Self {
        let last = j.last.as_ref();
        JobView {
            job_id: j.job_id.clone(),
            state: j.state,
            attempts: j.attempts,
            target: last.map(|l| l.target.clone()),
            reason: last.map(|l| l.reason.clone()),
            error_class: j.error_class.map(|c| c.as_str().to_owned()),
            last_error: j.last_error.clone(),
            task: j.task.clone(),
            history: history.attempts,
            older_attempts: history.older,
        }
    }
}

pub struct Producer<L = DynamoLedger, Q = SqsQueue> {
    ledger: L,
    queue: Q,
    dead_letters: Option<SqsQueue>,
    s3: Option<aws_sdk_s3::Client>,
    config: Arc<Config>,
}

/// Most objects one source prefix may hold.
pub const MAX_SOURCE_OBJECTS: usize = 2_000_000;

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    pub fn new(ledger: L, queue: Q, config: Arc<Config>) -> Self {
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

    /// Adds the dead-letter queue, for `dlq list` without a request.
    pub fn with_dead_letters(mut self, dlq: SqsQueue) -> Self {
        self.dead_letters = Some(dlq);
        self
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
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

    /// The request item, or not found.
    async fn request(&self, request_id: &str) -> Result<RequestRecord, ProducerError> {
        self.ledger
            .get_request(request_id)
            .await?
            .ok_or_else(|| ProducerError::NotFound(request_id.to_owned()))
    }

    /// The partitions a request's job items are in: its record's, or the default of a
    /// request whose jobs were sent straight to SQS.
    async fn job_shards(&self, request_id: &str) -> Result<(u32, bool), ProducerError> {
        Ok(match self.ledger.get_request(request_id).await? {
            Some(r) => (r.job_shards, true),
            None => (DIRECT_JOB_SHARDS, false),
        })
    }

    /// A page of a request's jobs (`state`: only those; FAILED ones come from the failed
    /// index, other states are filtered from the page, which may then hold fewer). Jobs come
    /// in ledger order (by partition, then index). `history`: read each listed job's
    /// history too (a read per job that has more than one attempt or failed).
    pub async fn jobs_page(
        &self,
        request_id: &str,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: usize,
        history: bool,
    ) -> Result<Page<JobView>, ProducerError> {
        let (shards, exists) = self.job_shards(request_id).await?;
        let page = match state {
            Some(JobState::Failed) => self.ledger.failed_page(request_id, cursor, limit).await,
            _ => {
                self.ledger
                    .jobs_page(request_id, shards, cursor, limit)
                    .await
            }
        }
        .map_err(|e| match e {
            LedgerError::Malformed { key, message } if key == "cursor" => {
                ProducerError::Invalid(RequestError::Field {
                    field: "cursor".into(),
                    reason: message,
                })
            }
            e => e.into(),
        })?;
        if !exists && cursor.is_none() && page.items.is_empty() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        let picked: Vec<&JobDetail> = page
            .items
            .iter()
            .filter(|j| state.is_none_or(|s| s == j.state))
            .collect();
        let mut views = Vec::with_capacity(picked.len());
        for j in picked {
            let needs = history
                && (j.attempts > 1 || j.state == JobState::Failed || j.state == JobState::Retrying);
            let h = if needs {
                let job = JobId::parse(&j.job_id).map_err(|e| LedgerError::Malformed {
                    key: j.job_id.clone(),
                    message: e.to_string(),
                })?;
                self.ledger
                    .job_history(&item::job_key(&job, shards))
                    .await?
            } else {
                History {
                    attempts: j
                        .last
                        .iter()
                        .map(|r| fleet_shared::ledger::HistoryEntry {
                            record: r.clone(),
                            error: None,
                        })
                        .collect(),
                    older: 0,
                }
            };
            views.push(JobView::new(j, h));
        }
        Ok(Page {
            items: views,
            next: page.next,
        })
    }

    /// A succeeded job's result (JSON text), read from S3 when the ledger keeps only its
    /// reference.
    pub async fn result(&self, job_id: &str) -> Result<Option<Vec<u8>>, ProducerError> {
        let job = JobId::parse(job_id).map_err(|e| {
            ProducerError::Invalid(RequestError::Field {
                field: "job_id".into(),
                reason: e.to_string(),
            })
        })?;
        let (shards, _) = self.job_shards(job.request_id()).await?;
        let Some(text) = self.ledger.result(&item::job_key(&job, shards)).await? else {
            return Ok(None);
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        match fleet_shared::claim_check::result_reference_in(&value) {
            None => Ok(Some(text.into_bytes())),
            Some(r) => {
                let r = r.map_err(|e| ProducerError::Storage(e.to_string()))?;
                let bytes = fleet_shared::claim_check::fetch(self.s3()?, &r)
                    .await
                    .map_err(|e| ProducerError::Storage(e.to_string()))?;
                Ok(Some(bytes))
            }
        }
    }

    /// Cancels a request with one write to its request item: replicas stop starting its
    /// jobs (a job not started becomes CANCELLED when its message arrives), and with
    /// `stop_running` they stop its jobs running in tasks (ECS tasks, local processes; a
    /// Lambda invocation cannot be stopped and finishes). Returns once no job of the request
    /// can start any more. Cancelling again changes nothing.
    pub async fn cancel(
        &self,
        request_id: &str,
        stop_running: bool,
    ) -> Result<CancelReport, ProducerError> {
        let now = fleet_shared::time::now_ms();
        if !self
            .ledger
            .cancel_request(request_id, now, stop_running)
            .await?
        {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        tokio::time::sleep(CANCEL_SETTLE).await;
        let record = self.request(request_id).await?;
        let status = self.status(request_id).await?;
        Ok(CancelReport {
            request_id: request_id.to_owned(),
            cancelled_at_ms: record.cancelled_at_ms.unwrap_or(now),
            stop_running: record.stop_running,
            states: status.states,
        })
    }

    /// Records and sends a validated request, [`SUBMIT_CHUNK`] jobs at a time: the request
    /// item first (conditionally: the same id with other content is refused before anything
    /// else is written), then per chunk the claim-check payloads, the job items, the
    /// messages, and the request's watermark. A submission cut short is finished by
    /// submitting again: it resumes at the watermark, writes the chunk's missing items and
    /// sends the messages of its jobs still PENDING (a duplicate message is harmless: the
    /// claim runs a job once). Below the watermark everything was written and sent; a message
    /// lost after that is the sweeper's to repair.
    pub async fn submit(&self, req: &ValidRequest) -> Result<SubmitReport, ProducerError> {
        let id = &req.record.request_id;
        let total = req.jobs.len();
        let (created, from) = match self.ledger.put_request(&req.record).await? {
            PutRequestOutcome::Created => (true, 0),
            PutRequestOutcome::Exists(existing) => {
                if existing.content_hash != req.record.content_hash {
                    return Err(ProducerError::Conflict {
                        request_id: id.clone(),
                    });
                }
                (false, existing.written as usize)
            }
        };
        let (mut written, mut sent) = (0u32, 0u32);
        let mut start = from.min(total);
        while start < total {
            let end = (start + SUBMIT_CHUNK).min(total);
            let (missing, resend): (Vec<usize>, Vec<usize>) = if created {
                ((start..end).collect(), Vec::new())
            } else {
                let keys: Vec<_> = req.jobs[start..end].iter().map(|j| j.key.clone()).collect();
                let states = self.ledger.job_states(&keys).await?;
                let mut missing = Vec::new();
                let mut resend = Vec::new();
                for (i, s) in (start..end).zip(states) {
                    match s {
                        None => missing.push(i),
                        Some(JobState::Pending) => resend.push(i),
                        Some(_) => {}
                    }
                }
                (missing, resend)
            };
            self.upload_payloads(req, &missing).await?;
            let new_jobs: Vec<_> = missing.iter().map(|&i| req.jobs[i].clone()).collect();
            self.ledger.put_jobs(&new_jobs).await?;
            let mut to_send: Vec<usize> = missing.iter().chain(&resend).copied().collect();
            to_send.sort_unstable();
            let bodies: Vec<String> = to_send.iter().map(|&i| req.bodies[i].clone()).collect();
            if let Err(e) = self.queue.send_all(&bodies).await {
                metrics::counter!(fleet_shared::metrics::ENQUEUE_FAILURES)
                    .increment(bodies.len() as u64);
                return Err(e.into());
            }
            self.ledger.set_written(id, end as u32).await?;
            metrics::counter!(
                fleet_shared::metrics::JOBS_SUBMITTED,
                "job_type" => req.record.job_type.clone()
            )
            .increment(bodies.len() as u64);
            written += new_jobs.len() as u32;
            sent += bodies.len() as u32;
            start = end;
        }
        Ok(SubmitReport {
            request_id: id.clone(),
            jobs: req.record.total,
            created,
            written,
            sent,
        })
    }

    /// Payloads kept in S3 go before their job items: a job item never points at a missing
    /// object. The keys are the jobs', so writing them again puts the same bytes back.
    async fn upload_payloads(
        &self,
        req: &ValidRequest,
        jobs: &[usize],
    ) -> Result<(), ProducerError> {
        let uploads: Vec<_> = req
            .uploads
            .iter()
            .filter(|(i, _, _)| jobs.binary_search(&(*i as usize)).is_ok())
            .collect();
        if uploads.is_empty() {
            return Ok(());
        }
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
        Ok(())
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
            &request::Limits::from_config(&self.config),
            claim_check.as_ref(),
            fleet_shared::time::now_ms(),
        )?)
    }

    /// [`Producer::prepare`], then [`Producer::submit`]: what `submit` and the HTTP API do.
    pub async fn submit_file(&self, file: RequestFile) -> Result<SubmitReport, ProducerError> {
        let valid = self.prepare(file).await?;
        self.submit(&valid).await
    }

    /// A request's progress: its request item and counter items, a bounded number of reads
    /// whatever the number of jobs.
    pub async fn status(&self, request_id: &str) -> Result<Status, ProducerError> {
        let request = self.ledger.get_request(request_id).await?;
        let counts = self
            .ledger
            .counts(request_id, fleet_shared::time::now_ms())
            .await?;
        if request.is_none() && counts == Counts::default() && !self.has_jobs(request_id).await? {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        Ok(Status::from_counts(
            request_id,
            request.as_ref().map(|r| r.total),
            &counts,
            request.as_ref().and_then(|r| r.cancelled_at_ms),
        ))
    }

    /// Whether a request without a request item has job items (its jobs were sent straight
    /// to SQS and claimed, but none has an outcome yet): a page of one item per partition.
    async fn has_jobs(&self, request_id: &str) -> Result<bool, ProducerError> {
        let page = self
            .ledger
            .jobs_page(request_id, DIRECT_JOB_SHARDS, None, 1)
            .await?;
        Ok(!page.items.is_empty())
    }

    /// Counts the request's jobs from their items (reads every item: a repair, not a
    /// progress display), corrects its counters by the difference, and returns the status.
    /// Exact once the request has no job in flight; while jobs finish during the recount,
    /// those may be counted twice or not at all (run it again once the request is done).
    pub async fn recount(&self, request_id: &str) -> Result<Status, ProducerError> {
        let (shards, exists) = self.job_shards(request_id).await?;
        let counted = self.ledger.recount(request_id, shards).await?;
        if !exists && counted == Counts::default() {
            return Err(ProducerError::NotFound(request_id.to_owned()));
        }
        self.status(request_id).await
    }

    /// A job's lean item and payload.
    pub async fn job(&self, job: &JobId) -> Result<Option<(JobItem, String)>, ProducerError> {
        let (shards, _) = self.job_shards(job.request_id()).await?;
        Ok(self.ledger.job(&item::job_key(job, shards)).await?)
    }
}

#[cfg(test)]
mod tests;
