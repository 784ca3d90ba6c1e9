//! The producer's logic on the in-memory ledger and queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::config::Config;
use fleet_shared::ledger::memory::MemoryLedger;
use fleet_shared::ledger::model::Limits;
use fleet_shared::ledger::{
    Change, Counts, ItemKey, JobDetail, LedgerError, NewJob, Page, PutRequestOutcome,
    ReleaseRecord, RequestLedger, RequestRecord,
};
use fleet_shared::queue::memory::MemoryQueue;
use fleet_shared::queue::{JobQueue, MAX_BATCH};
use fleet_shared::state::JobState;
use serde_json::json;

use super::*;

fn request(id: &str, n: usize) -> CheckedRequest {
    let jobs: Vec<serde_json::Value> = (0..n).map(|i| json!({"i": i})).collect();
    checked(json!({"request_id": id, "job_type": "t", "jobs": jobs}))
}

fn checked(body: serde_json::Value) -> CheckedRequest {
    request::parse(&body.to_string())
        .and_then(request::check)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn producer() -> Producer<MemoryLedger, MemoryQueue> {
    Producer::new(
        MemoryLedger::new().with_model(Limits::AWS),
        MemoryQueue::new(),
        Arc::new(Config::default()),
    )
}

async fn messages(q: &MemoryQueue) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = q
            .receive(MAX_BATCH, Duration::ZERO, Duration::from_secs(600))
            .await
            .unwrap_or_default();
        if got.is_empty() {
            return out;
        }
        out.extend(got.into_iter().map(|m| m.body));
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_is_written_and_sent_in_chunks_and_a_resubmission_creates_nothing() {
    let p = producer();
    let valid = p.prepare(request("r1", 2500)).await.unwrap();
    assert_eq!(
        valid.record.job_shards, 3,
        "one partition per thousand jobs"
    );
    let report = p.submit(&valid).await.unwrap();
    assert_eq!(
        (report.created, report.written, report.sent),
        (true, 2500, 2500)
    );
    assert_eq!(messages(&p.queue).await.len(), 2500);
    let r = p.ledger.get_request("r1").await.unwrap().unwrap();
    assert_eq!(r.written, 2500);
    let again = p.submit(&valid).await.unwrap();
    assert_eq!((again.created, again.written, again.sent), (false, 0, 0));
    let status = p.status("r1").await.unwrap();
    assert_eq!(
        (status.total, status.count(JobState::Pending), status.done),
        (2500, 2500, false)
    );
}

#[tokio::test(start_paused = true)]
async fn other_content_under_the_same_id_is_refused_and_writes_nothing() {
    let p = producer();
    p.submit(&p.prepare(request("r2", 3)).await.unwrap())
        .await
        .unwrap();
    let before = p.ledger.usage().unwrap();
    let other = p.prepare(request("r2", 4)).await.unwrap();
    let err = p.submit(&other).await.unwrap_err();
    assert!(matches!(err, ProducerError::Conflict { .. }), "{err}");
    let after = p.ledger.usage().unwrap();
    // The refused conditional put (which DynamoDB bills) is the only write.
    assert_eq!(after.write_calls, before.write_calls + 1);
    assert_eq!(p.ledger.all_jobs().len(), 3);
}

/// A ledger that fails `put_jobs` after `ok` calls (a producer cut short), and records the
/// order of writes and sends with the queue.
struct Cut {
    inner: MemoryLedger,
    ok: Mutex<usize>,
    log: Arc<Mutex<Vec<String>>>,
}

impl RequestLedger for Cut {
    async fn put_request(&self, r: &RequestRecord) -> Result<PutRequestOutcome, LedgerError> {
        self.inner.put_request(r).await
    }
    async fn get_request(&self, id: &str) -> Result<Option<RequestRecord>, LedgerError> {
        self.inner.get_request(id).await
    }
    async fn requests_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<fleet_shared::ledger::Page<String>, LedgerError> {
        self.inner.requests_page(cursor, limit).await
    }
    async fn throughput(
        &self,
        request_id: &str,
        since_ms: u64,
    ) -> Result<Vec<fleet_shared::ledger::ThroughputPoint>, LedgerError> {
        self.inner.throughput(request_id, since_ms).await
    }
    async fn put_jobs(&self, jobs: &[NewJob]) -> Result<(), LedgerError> {
        {
            let mut ok = self.ok.lock().unwrap();
            if *ok == 0 {
                return Err(LedgerError::throttled("BatchWriteItem", "cut short (test)"));
            }
            *ok -= 1;
        }
        self.log.lock().unwrap().push(format!("put {}", jobs.len()));
        self.inner.put_jobs(jobs).await
    }
    async fn job_states(&self, keys: &[ItemKey]) -> Result<Vec<Option<JobState>>, LedgerError> {
        self.inner.job_states(keys).await
    }
    async fn set_written(&self, id: &str, w: u32) -> Result<(), LedgerError> {
        self.inner.set_written(id, w).await
    }
    async fn set_window(&self, id: &str, w: u32) -> Result<bool, LedgerError> {
        self.inner.set_window(id, w).await
    }
    async fn mark_released(
        &self,
        jobs: &[fleet_shared::ids::JobId],
        shards: u32,
        now: u64,
    ) -> Result<Vec<fleet_shared::ledger::Requeue>, LedgerError> {
        self.inner.mark_released(jobs, shards, now).await
    }
    async fn put_release(&self, r: &ReleaseRecord) -> Result<(), LedgerError> {
        self.inner.put_release(r).await
    }
    async fn finish_request(
        &self,
        id: &str,
        who: &str,
        now: u64,
        until: u64,
    ) -> Result<Option<RequestRecord>, LedgerError> {
        self.inner.finish_request(id, who, now, until).await
    }
    async fn request_notified(
        &self,
        id: &str,
        now: u64,
        manifest: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.inner.request_notified(id, now, manifest).await
    }
    async fn due_finish_checks(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        self.inner.due_finish_checks(before, limit).await
    }
    async fn defer_finish_check(&self, id: &str, at: u64) -> Result<(), LedgerError> {
        self.inner.defer_finish_check(id, at).await
    }
    async fn advance_release(
        &self,
        id: &str,
        range: std::ops::Range<u32>,
        who: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, LedgerError> {
        self.inner.advance_release(id, range, who, now, until).await
    }
    async fn released_jobs(
        &self,
        jobs: &[fleet_shared::ids::JobId],
        shards: u32,
        consistent: bool,
    ) -> Result<Vec<fleet_shared::ledger::Requeue>, LedgerError> {
        self.inner.released_jobs(jobs, shards, consistent).await
    }
    async fn due_releases(
        &self,
        shard: u32,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>, LedgerError> {
        self.inner.due_releases(shard, before, limit).await
    }
    async fn delete_release(&self, r: &ReleaseRecord) -> Result<(), LedgerError> {
        self.inner.delete_release(r).await
    }
    async fn cancel_request(&self, id: &str, now: u64, stop: bool) -> Result<bool, LedgerError> {
        self.inner.cancel_request(id, now, stop).await
    }
    async fn fail_request(&self, id: &str, now: u64, why: &str) -> Result<bool, LedgerError> {
        self.inner.fail_request(id, now, why).await
    }
    async fn counts(&self, id: &str, now: u64) -> Result<Counts, LedgerError> {
        self.inner.counts(id, now).await
    }
    async fn recount(&self, id: &str, shards: u32) -> Result<Counts, LedgerError> {
        self.inner.recount(id, shards).await
    }
    async fn jobs_page(
        &self,
        id: &str,
        shards: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        self.inner.jobs_page(id, shards, cursor, limit).await
    }
    async fn failed_page(
        &self,
        id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        self.inner.failed_page(id, cursor, limit).await
    }
    async fn job(
        &self,
        key: &ItemKey,
    ) -> Result<Option<(fleet_shared::ledger::item::JobItem, String)>, LedgerError> {
        RequestLedger::job(&self.inner, key).await
    }
    async fn result(&self, key: &ItemKey) -> Result<Option<String>, LedgerError> {
        self.inner.result(key).await
    }
    async fn job_history(
        &self,
        key: &ItemKey,
    ) -> Result<fleet_shared::ledger::History, LedgerError> {
        self.inner.job_history(key).await
    }
    async fn commit_changes(
        &self,
        slot: &str,
        changes: &[Change],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        self.inner.commit_changes(slot, changes).await
    }
}

/// A queue that logs its sends with the ledger's writes.
struct Logged {
    inner: MemoryQueue,
    log: Arc<Mutex<Vec<String>>>,
}

impl JobQueue for Logged {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<fleet_shared::queue::Received>, QueueError> {
        self.inner.receive(max, wait, visibility).await
    }
    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        self.inner.delete_batch(receipts).await
    }
    async fn backlog(&self) -> Result<u64, QueueError> {
        self.inner.backlog().await
    }
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.send(body, delay).await
    }
    async fn send_all(&self, bodies: &[String]) -> Result<(), QueueError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("send {}", bodies.len()));
        self.inner.send_all(bodies).await
    }
    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.set_visibility(receipt, timeout).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_submission_cut_short_sends_its_first_chunks_and_is_finished_by_submitting_again() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let p = Producer::new(
        Cut {
            inner: MemoryLedger::new(),
            ok: Mutex::new(2),
            log: log.clone(),
        },
        Logged {
            inner: MemoryQueue::new(),
            log: log.clone(),
        },
        Arc::new(Config::default()),
    );
    let valid = p.prepare(request("r3", 3500)).await.unwrap();
    assert!(
        p.submit(&valid).await.is_err(),
        "the third chunk's write fails"
    );
    // Each chunk's messages went out as soon as its items were written.
    assert_eq!(
        *log.lock().unwrap(),
        vec!["put 1000", "send 1000", "put 1000", "send 1000"]
    );
    assert_eq!(p.ledger.inner.all_jobs().len(), 2000);
    assert_eq!(
        p.ledger.get_request("r3").await.unwrap().unwrap().written,
        2000
    );
    // Submitting again resumes at the watermark and writes what is missing.
    *p.ledger.ok.lock().unwrap() = 100;
    let report = p.submit(&valid).await.unwrap();
    assert_eq!(
        (report.created, report.written, report.sent),
        (false, 1500, 1500)
    );
    assert_eq!(p.ledger.inner.all_jobs().len(), 3500);
    assert_eq!(messages(&p.queue.inner).await.len(), 3500);
}

#[tokio::test(start_paused = true)]
async fn a_resubmission_within_a_chunk_resends_only_what_is_still_pending() {
    let p = producer();
    let valid = p.prepare(request("r4", 10)).await.unwrap();
    // As if cut short after the request item and three job items of the first chunk.
    assert_eq!(
        p.ledger.put_request(&valid.record).await.unwrap(),
        PutRequestOutcome::Created
    );
    p.ledger.put_jobs(&valid.jobs[..3]).await.unwrap();
    let report = p.submit(&valid).await.unwrap();
    assert_eq!(
        (report.created, report.written, report.sent),
        (false, 7, 10),
        "seven items written; the three PENDING ones' messages sent again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_is_one_write_and_returns_once_no_job_can_start() {
    let p = producer();
    p.submit(&p.prepare(request("r5", 2000)).await.unwrap())
        .await
        .unwrap();
    let before = p.ledger.usage().unwrap();
    let started = tokio::time::Instant::now();
    let report = p.cancel("r5", true).await.unwrap();
    assert!(started.elapsed() >= fleet_shared::ledger::REQUEST_VIEW_TTL);
    let after = p.ledger.usage().unwrap();
    assert_eq!(after.write_calls - before.write_calls, 1, "one write");
    assert!(report.stop_running);
    assert_eq!(report.states["PENDING"], 2000);
    let s = p.status("r5").await.unwrap();
    assert!(s.cancelled_at_ms.is_some());
    assert!(matches!(
        p.cancel("nope", false).await,
        Err(ProducerError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn status_reads_the_same_whatever_the_request_size() {
    let p = producer();
    let mut reads = Vec::new();
    for (id, n) in [("small", 20), ("large", 5000)] {
        p.submit(&p.prepare(request(id, n)).await.unwrap())
            .await
            .unwrap();
        let before = p.ledger.usage().unwrap();
        let s = p.status(id).await.unwrap();
        assert_eq!(s.total as usize, n);
        let after = p.ledger.usage().unwrap();
        reads.push((
            after.read_calls - before.read_calls,
            after.read_units - before.read_units,
        ));
    }
    assert_eq!(reads[0], reads[1], "{reads:?}");
}

#[tokio::test(start_paused = true)]
async fn submit_request_refuses_before_writing_and_says_so() {
    let p = producer();
    let report = p.submit_request(request("r6", 3)).await.unwrap();
    assert_eq!((report.created, report.written, report.sent), (true, 3, 3));
    // Other content under the same id: refused by the ledger, a write error.
    let err = p.submit_request(request("r6", 4)).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Write(ProducerError::Conflict { .. })),
        "{err}"
    );
    let before = p.ledger.usage().unwrap();
    // A message over the limit, and a source prefix with no S3 client: refused while
    // prepared, with nothing written or read.
    let big = json!({"request_id": "r7", "job_type": "t", "jobs": ["x".repeat(300_000)]});
    let err = p.submit_request(checked(big)).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Refused(ProducerError::Invalid(_))),
        "{err}"
    );
    assert!(
        err.to_string().contains("jobs[0]: the job's message is"),
        "{err}"
    );
    let source =
        json!({"request_id": "r8", "job_type": "t", "source": {"s3_prefix": "s3://bkt/in/"}});
    let err = p.submit_request(checked(source)).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Refused(ProducerError::Storage(_))),
        "{err}"
    );
    assert_eq!(p.ledger.usage().unwrap(), before);
    assert_eq!(p.ledger.all_jobs().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn status_says_when_a_request_failed_as_a_whole() {
    let p = producer();
    p.submit(&p.prepare(request("r8", 3)).await.unwrap())
        .await
        .unwrap();
    let s = p.status("r8").await.unwrap();
    assert_eq!((s.state, s.failed.clone()), ("RUNNING", None));
    assert!(
        p.ledger
            .fail_request("r8", 5, "2 of its 3 jobs failed")
            .await
            .unwrap()
    );
    let s = p.status("r8").await.unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["state"], "FAILED");
    assert_eq!(json["failed"]["reason"], "2 of its 3 jobs failed");
    assert_eq!(json["failed"]["at_ms"], 5);
    assert_eq!(
        json["cancelled_at_ms"], 5,
        "a failed request is cancelled too"
    );
    p.cancel("r8", false).await.unwrap();
    assert_eq!(
        p.status("r8").await.unwrap().state,
        "FAILED",
        "failed stays"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_or_failed_request_is_not_redriven() {
    let p = producer();
    for (id, failed) in [("r9", true), ("r10", false)] {
        p.submit(&p.prepare(request(id, 3)).await.unwrap())
            .await
            .unwrap();
        if failed {
            p.ledger
                .fail_request(id, 5, "too many failed")
                .await
                .unwrap();
        } else {
            p.ledger.cancel_request(id, 5, false).await.unwrap();
        }
        let before = p.ledger.usage().unwrap();
        let err = p.dlq_redrive(id, None, None).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProducerError::Cancelled { .. }), "{text}");
        assert!(
            text.contains(if failed {
                "too many failed"
            } else {
                "cancelled"
            }),
            "{text}"
        );
        assert_eq!(p.ledger.usage().unwrap().write_calls, before.write_calls);
    }
}

/// Finishes (SUCCEEDED) the released jobs of `request_id` whose messages are in the queue,
/// as a replica would: claim, then commit; returns how many.
async fn finish_queued(p: &Producer<MemoryLedger, MemoryQueue>, limit: usize) -> usize {
    use fleet_shared::ledger::{ClaimRequest, Finish, Ledger};
    let got = p
        .queue
        .receive(limit, Duration::ZERO, Duration::from_secs(600))
        .await
        .unwrap();
    for m in &got {
        let (msg, job) = fleet_shared::message::parse_message(&m.body, 1 << 20).unwrap();
        let shards = p
            .ledger
            .request_view(&msg.request_id)
            .await
            .unwrap()
            .job_shards;
        let claim = p
            .ledger
            .claim(&ClaimRequest {
                job: &job,
                shards,
                job_type: "t",
                payload_json: "{}",
                max_attempts: None,
                owner: "w",
                now_ms: 1,
                lease_ms: 60_000,
                skew_ms: 0,
                enqueued_at_ms: 1,
                direct: false,
            })
            .await
            .unwrap();
        let fleet_shared::ledger::Claim::Claimed(lease) = claim else {
            panic!("{claim:?}");
        };
        let change = Change::Finish {
            record: fleet_shared::ledger::AttemptRecord {
                attempt: lease.attempt,
                fence: lease.fence,
                started_ms: 1,
                ended_ms: 2,
                target: fleet_shared::message::Target::Lambda,
                outcome: fleet_shared::state::AttemptOutcome::Succeeded,
                retry_at_ms: None,
                reason: fleet_shared::message::RouteReason::of(
                    fleet_shared::message::RouteRule::Default,
                ),
                exit_code: None,
                stopped_reason: None,
                usage: None,
            },
            lease,
            finish: Finish::Succeeded { result: None },
        };
        let r = p.ledger.commit("7", &[change], &[]).await.unwrap();
        assert!(r[0].is_ok(), "{r:?}");
    }
    got.len()
}

#[tokio::test(start_paused = true)]
async fn a_windowed_request_sends_its_window_and_the_rest_as_jobs_finish() {
    let p = producer();
    let body = |n: u32| {
        let jobs: Vec<serde_json::Value> = (0..25).map(|i| json!({"i": i})).collect();
        checked(json!({"request_id": "w1", "job_type": "t", "jobs": jobs,
            "options": {"max_concurrency": n}}))
    };
    let report = p.submit_request(body(10)).await.unwrap();
    assert_eq!((report.written, report.sent), (25, 10));
    let s = p.status("w1").await.unwrap();
    assert_eq!((s.max_concurrency, s.released), (Some(10), Some(10)));
    // Held jobs are not in the due index: a sweeper never takes them for lost messages.
    let due: usize = p
        .ledger
        .all_jobs()
        .iter()
        .filter(|j| j.due.is_some())
        .count();
    assert_eq!(due, 10);
    // Four finish: a release (as a replica's after recording them) sends four more, never
    // more than the window in flight.
    assert_eq!(finish_queued(&p, 4).await, 4);
    assert_eq!(p.release("w1").await.unwrap(), 4);
    let s = p.status("w1").await.unwrap();
    assert_eq!(s.released, Some(14));
    // The other six finish and no release follows (their replica stopped): nothing is in
    // flight, so the next status call releases the next ten.
    assert_eq!(finish_queued(&p, 6).await, 6);
    assert_eq!(p.status("w1").await.unwrap().released, Some(14));
    assert_eq!(finish_queued(&p, 10).await, 4);
    let s = p.status("w1").await.unwrap();
    assert_eq!(s.released, Some(24));
    assert_eq!(messages(&p.queue).await.len(), 10);
    // A larger limit releases the difference at once (one job is left); the same limit
    // again releases nothing.
    let raised = p.limit("w1", 15).await.unwrap();
    assert_eq!((raised.max_concurrency, raised.released), (15, 1));
    assert_eq!(p.limit("w1", 15).await.unwrap().released, 0);
    // Its content hash ignores the limit: resubmitting with another one is the same request.
    let again = p.submit_request(body(3)).await.unwrap();
    assert!(!again.created);
    // Cancelled: the jobs never released count as CANCELLED and nothing more is released.
    p.cancel("w1", false).await.unwrap();
    let s = p.status("w1").await.unwrap();
    assert_eq!((s.state, s.count(JobState::Cancelled)), ("CANCELLED", 0));
    assert_eq!(s.released, Some(25));
    assert_eq!(p.limit("w1", 50).await.unwrap().released, 0);
}

#[tokio::test(start_paused = true)]
async fn a_limit_is_refused_when_it_cannot_apply() {
    let mut config = Config::default();
    config.limits.window = 0;
    let p = Producer::new(MemoryLedger::new(), MemoryQueue::new(), Arc::new(config));
    let report = p.submit_request(request("open", 30)).await.unwrap();
    assert_eq!(report.sent, 30, "no window: every message at once");
    assert!(matches!(
        p.limit("open", 5).await,
        Err(ProducerError::NotWindowed { .. })
    ));
    assert!(matches!(
        p.limit("nope", 5).await,
        Err(ProducerError::NotFound(_))
    ));
    let err = p.limit("open", 0).await.unwrap_err();
    assert!(err.to_string().contains("max_concurrency"), "{err}");
    let refused = request::parse(
        &json!({"job_type": "t", "jobs": [1], "options": {"max_concurrency": 0}}).to_string(),
    )
    .and_then(request::check)
    .map(|c| p.prepare(c));
    match refused {
        Err(e) => panic!("checked: {e}"),
        Ok(f) => {
            let e = f.await.unwrap_err();
            assert!(e.to_string().contains("options.max_concurrency"), "{e}");
        }
    }
}

#[tokio::test]
async fn requests_are_listed_newest_first_a_page_at_a_time_and_filtered_by_state() {
    let p = producer();
    let t0 = 1_800_000_000_000;
    let ids: Vec<String> = (0..7).map(|i| format!("list-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let r = RequestRecord::new(id, "t", 3, t0 + i as u64 * 1000);
        p.ledger().put_request(&r).await.unwrap();
    }
    for id in [&ids[1], &ids[4]] {
        assert!(
            p.ledger()
                .cancel_request(id, t0 + 10_000, false)
                .await
                .unwrap()
        );
    }
    // Every page of 3, in order, nothing twice.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = p.requests(None, cursor.as_deref(), 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|s| s.request_id.clone()));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    // A filtered listing: only the cancelled ones, with their statuses.
    let page = p.requests(Some("CANCELLED"), None, 10).await.unwrap();
    let cancelled: Vec<&str> = page.items.iter().map(|s| s.request_id.as_str()).collect();
    assert_eq!(cancelled, ["list-4", "list-1"]);
    assert!(page.items.iter().all(|s| s.state == "CANCELLED"));
    assert_eq!(page.next, None);
    let running = p.requests(Some("RUNNING"), None, 2).await.unwrap();
    let ids_running: Vec<&str> = running
        .items
        .iter()
        .map(|s| s.request_id.as_str())
        .collect();
    assert_eq!(ids_running, ["list-6", "list-5"]);
    let rest = p
        .requests(Some("RUNNING"), running.next.as_deref(), 10)
        .await
        .unwrap();
    let ids_rest: Vec<&str> = rest.items.iter().map(|s| s.request_id.as_str()).collect();
    assert_eq!(ids_rest, ["list-3", "list-2", "list-0"]);
    assert_eq!(running.items[0].created_at_ms, Some(t0 + 6000));
    assert_eq!(running.items[0].job_type.as_deref(), Some("t"));
    // An unknown state is refused, naming the field.
    assert!(matches!(
        p.requests(Some("DONE"), None, 10).await,
        Err(ProducerError::Invalid(RequestError::Field { ref field, .. })) if field == "state"
    ));
    // The throughput of a request that does not exist is not found.
    assert!(matches!(
        p.throughput("nope", 0).await,
        Err(ProducerError::NotFound(_))
    ));
}
