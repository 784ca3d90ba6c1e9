//! Submitting a request: the one path the CLI and the HTTP API share. A checked request (see
//! [`crate::request`]) is prepared (its source listed, its jobs and messages built: nothing
//! written yet), then recorded and sent a chunk at a time.

use std::collections::HashMap;

use fleet_shared::ledger::{PutRequestOutcome, RequestLedger, window};
use fleet_shared::queue::JobQueue;
use fleet_shared::s3::S3Uri;
use fleet_shared::s3_list::{self, ListError, S3Object};
use fleet_shared::state::JobState;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::request::{self, CheckedRequest, JobsPlan, RequestError, ValidRequest};
use crate::{Producer, ProducerError};

/// Jobs written (items, then messages) per step of a submission.
pub const SUBMIT_CHUNK: usize = 1000;

/// Write units a second the submission spends on any one partition key of the table at
/// most. DynamoDB takes 1,000 a second per partition key; a chunk of jobs writes each of the
/// request's partitions at once (its lean items, and its payload items when payloads are
/// large), so without a pace a fast producer throttles its own writes. The rest is left to
/// the replicas' claims and outcomes on the same partitions.
pub const PARTITION_WRITES_PER_SEC: u64 = 400;

/// Paces the submission's chunks so that no partition is written faster than
/// [`PARTITION_WRITES_PER_SEC`] on average: each chunk waits for the time its busiest
/// partition's writes take at that rate after the previous one.
#[derive(Debug)]
struct Pace {
    next: Option<tokio::time::Instant>,
}

impl Pace {
    async fn wait(&mut self, jobs: &[fleet_shared::ledger::NewJob]) {
        let mut units: HashMap<String, u64> = HashMap::new();
        for j in jobs {
            for (partition, u) in j.write_units() {
                *units.entry(partition).or_default() += u;
            }
        }
        let busiest = units.values().copied().max().unwrap_or(0);
        if let Some(next) = self.next {
            tokio::time::sleep_until(next).await;
        }
        let spend =
            std::time::Duration::from_secs_f64(busiest as f64 / PARTITION_WRITES_PER_SEC as f64);
        self.next = Some(tokio::time::Instant::now() + spend);
    }
}

/// Most objects one source prefix may hold.
pub const MAX_SOURCE_OBJECTS: usize = 2_000_000;

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

/// Why [`Producer::submit_request`] failed, and whether anything was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Refused while it was prepared (invalid, or its source could not be listed): nothing
    /// was written.
    #[error(transparent)]
    Refused(ProducerError),
    /// Recording or sending it failed, or its id holds other content. A submission cut short
    /// is finished by submitting the same request again.
    #[error(transparent)]
    Write(ProducerError),
}

impl From<SubmitError> for ProducerError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Refused(e) | SubmitError::Write(e) => e,
        }
    }
}

impl<L: RequestLedger, Q: JobQueue> Producer<L, Q> {
    /// [`Producer::prepare`], then [`Producer::submit`]: what the CLI's `submit` and the HTTP
    /// API's `POST /v1/requests` do.
    pub async fn submit_request(&self, req: CheckedRequest) -> Result<SubmitReport, SubmitError> {
        let valid = self.prepare(req).await.map_err(SubmitError::Refused)?;
        self.submit(&valid).await.map_err(SubmitError::Write)
    }

    /// Finishes checking a request (listing its S3 prefix into jobs, if it has one) and
    /// builds its jobs and their messages, without writing anything.
    pub async fn prepare(&self, req: CheckedRequest) -> Result<ValidRequest, ProducerError> {
        let (file, plan) = req.into_parts();
        let payloads = match plan {
            JobsPlan::Ready(payloads) => payloads,
            JobsPlan::List(prefix, spec) => {
                let objects = self.list_source(&prefix).await?;
                request::group_objects(&prefix, &spec, file.params.as_ref(), &objects)
            }
            JobsPlan::Manifest(uri, format, lines_per_job) => {
                self.read_manifest(&uri, format, lines_per_job, file.params.as_ref())
                    .await?
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

    /// The objects under a source prefix, in key order (folder markers left out).
    /// A manifest's jobs, read from S3 as a stream (see [`request::manifest`]).
    async fn read_manifest(
        &self,
        uri: &S3Uri,
        format: request::ManifestFormat,
        lines_per_job: u32,
        params: Option<&serde_json::Value>,
    ) -> Result<Vec<serde_json::Value>, ProducerError> {
        let refused = |reason: String| {
            ProducerError::Invalid(RequestError::Field {
                field: "source.s3_manifest".into(),
                reason,
            })
        };
        let out = self
            .s3()?
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                let text = format!(
                    "reading s3://{}/{}: {}",
                    uri.bucket,
                    uri.key,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                );
                if missing {
                    refused(format!("no object s3://{}/{}", uri.bucket, uri.key))
                } else {
                    ProducerError::Storage(text)
                }
            })?;
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let spec = request::ManifestSpec {
            uri,
            etag: &etag,
            format,
            lines_per_job,
            params,
            max_jobs: fleet_shared::ids::MAX_JOBS_PER_REQUEST as usize,
        };
        let reader = tokio::io::BufReader::new(out.body.into_async_read());
        request::manifest::jobs_from(&spec, reader)
            .await
            .map_err(|e| match e {
                request::ManifestError::Read(m) => ProducerError::Storage(m),
                e => refused(e.to_string()),
            })
    }

    async fn list_source(&self, prefix: &S3Uri) -> Result<Vec<S3Object>, ProducerError> {
        s3_list::list_objects(self.s3()?, prefix, MAX_SOURCE_OBJECTS)
            .await
            .map_err(|e| match e {
                ListError::NoSuchBucket(_) | ListError::TooMany { .. } => {
                    ProducerError::Invalid(RequestError::Field {
                        field: "source.s3_prefix".into(),
                        reason: e.to_string(),
                    })
                }
                ListError::Failed { .. } => ProducerError::Storage(e.to_string()),
            })
    }

    /// Records and sends a validated request, [`SUBMIT_CHUNK`] jobs at a time: the request
    /// item first (conditionally: the same id with other content is refused before anything
    /// else is written), then per chunk the claim-check payloads, the job items, the
    /// messages, and the request's watermark. A windowed request's jobs past its first
    /// window are written held and get no message: they are released (and sent) as jobs
    /// finish, by the replicas or by the release after each chunk. A submission cut short
    /// is finished by submitting again: it resumes at the watermark, writes the chunk's missing items and
    /// sends the messages of its jobs still PENDING (a duplicate message is harmless: the
    /// claim runs a job once). Below the watermark everything was written and sent; a message
    /// lost after that is the sweeper's to repair.
    pub async fn submit(&self, req: &ValidRequest) -> Result<SubmitReport, ProducerError> {
        let id = &req.record.request_id;
        let total = req.jobs.len();
        let windowed = req.record.window.is_some();
        let (created, from, released) = match self.ledger.put_request(&req.record).await? {
            PutRequestOutcome::Created => (true, 0, req.record.released as usize),
            PutRequestOutcome::Exists(existing) => {
                if existing.content_hash != req.record.content_hash {
                    return Err(ProducerError::Conflict {
                        request_id: id.clone(),
                    });
                }
                (false, existing.written as usize, existing.released as usize)
            }
        };
        let (mut written, mut sent) = (0u32, 0u32);
        let mut start = from.min(total);
        let mut pace = Pace { next: None };
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
                        // A held job has no message yet: its release sends it.
                        Some(JobState::Pending) if !windowed || i < released => resend.push(i),
                        Some(_) => {}
                    }
                }
                (missing, resend)
            };
            self.upload_payloads(req, &missing).await?;
            let new_jobs: Vec<_> = missing.iter().map(|&i| req.jobs[i].clone()).collect();
            pace.wait(&new_jobs).await;
            self.ledger.put_jobs(&new_jobs).await?;
            let mut to_send: Vec<usize> = missing
                .iter()
                .filter(|&&i| !windowed || i < released)
                .chain(&resend)
                .copied()
                .collect();
            to_send.sort_unstable();
            let bodies: Vec<String> = to_send.iter().map(|&i| req.bodies[i].clone()).collect();
            if !bodies.is_empty()
                && let Err(e) = self.queue.send_all(&bodies).await
            {
                metrics::counter!(fleet_shared::metrics::ENQUEUE_FAILURES)
                    .increment(bodies.len() as u64);
                return Err(e.into());
            }
            self.ledger.set_written(id, end as u32).await?;
            // Jobs that finished while the submission goes on make room: released now. A
            // release that fails changes nothing the replicas' releases cannot finish.
            let released_now = if windowed && (end as u32) > req.record.released {
                match self.release(id).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(request_id = %id, error = %e, "could not release jobs during the submission; the replicas release them as jobs finish");
                        0
                    }
                }
            } else {
                0
            };
            metrics::counter!(
                fleet_shared::metrics::JOBS_SUBMITTED,
                "job_type" => req.record.job_type.clone()
            )
            .increment(bodies.len() as u64 + u64::from(released_now));
            written += new_jobs.len() as u32;
            sent += bodies.len() as u32 + released_now;
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

    /// Releases what the request's window has room for and sends it (see
    /// [`window`](fleet_shared::ledger::window)): the messages sent.
    pub async fn release(&self, request_id: &str) -> Result<u32, ProducerError> {
        // A short turn: the replicas' releases take over a second after the producer's.
        let releaser = window::Releaser {
            name: fleet_shared::ledger::PRODUCER_SLOT,
            turn_ms: 1_000,
        };
        window::release_and_send(
            &self.ledger,
            &self.queue,
            request_id,
            releaser,
            fleet_shared::time::now_ms,
        )
        .await
        .map(|sent| sent.messages)
        .map_err(|e| match e {
            window::ReleaseError::Ledger(e) => e.into(),
            window::ReleaseError::Queue(e) => {
                metrics::counter!(fleet_shared::metrics::ENQUEUE_FAILURES).increment(1);
                e.into()
            }
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
}
