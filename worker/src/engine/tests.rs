//! The engine over in-memory queue, ledger and dispatcher, on tokio's paused clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::config::Config;
use fleet_shared::ids::JobId;
use fleet_shared::ledger::memory::{DIRECT_JOB_SHARDS, MemoryLedger};
use fleet_shared::ledger::{AttemptRecord, Change, Claim, ClaimRequest, Ledger};
use fleet_shared::message::{
    JobEvent, JobMessage, MESSAGE_VERSION, RouteReason, RouteRule, Target,
};
use fleet_shared::queue::memory::MemoryQueue;
use fleet_shared::state::{AttemptOutcome, JobState};
use fleet_shared::time::Clock;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Engine, Parts, Report};
use crate::classify::ErrorClass;
use crate::dispatch::{Dispatcher, Outcome, TaskEnd, TaskLauncher};
use fleet_shared::dead_letter::{FailureRecord, attr as dead_letter_attr};

/// Runs the test job's behaviours (`sleep_ms`, `fail_times`, `fail`) and records every call.
/// With an outcomes queue it hands attempts off, as Lambda's asynchronous invocation does:
/// accepted at once, run, and their invocation records sent to that queue (`records`
/// says how faithfully).
struct FakeJob {
    clock: Clock,
    calls: Mutex<Vec<(String, u32, u64, u64)>>,
    outcomes: Option<Arc<MemoryQueue>>,
    records: Records,
    /// The ledger, to note each job's lease as it stands when its event is accepted.
    ledger: Option<Arc<MemoryLedger>>,
    leases_at_invoke: Mutex<Vec<LeaseAtInvoke>>,
}

/// At an Invoke: the job, the ledger's lease expiry, the expiry the event carries.
type LeaseAtInvoke = (String, Option<u64>, Option<u64>);

/// How a handing-off [`FakeJob`] delivers invocation records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Records {
    Once,
    /// Every record twice (SQS and Lambda deliver at least once).
    Twice,
    /// The first attempt's record is lost.
    LoseFirst,
}

impl FakeJob {
    fn calls_for(&self, job_id: &str) -> Vec<(u32, u64, u64)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == job_id)
            .map(|c| (c.1, c.2, c.3))
            .collect()
    }

    fn per_job(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in self.calls.lock().unwrap().iter() {
            *m.entry(c.0.clone()).or_default() += 1;
        }
        m
    }
}

impl Dispatcher for FakeJob {
    fn target(&self) -> &'static str {
        "lambda"
    }

    async fn dispatch(&self, event: &JobEvent) -> TaskEnd {
        TaskEnd::of(self.run(event).await)
    }

    fn hands_off(&self) -> bool {
        self.outcomes.is_some()
    }

    async fn hand_off(&self, event: &JobEvent) -> Result<String, TaskEnd> {
        let Some(outcomes) = self.outcomes.clone() else {
            return Err(TaskEnd::of(Outcome::Failed {
                class: ErrorClass::Permanent,
                message: "not handing off".into(),
            }));
        };
        let p = &event.payload;
        let calls_so_far = self.calls_for(&event.job_id).len() as u64;
        if calls_so_far < p["throttle_calls"].as_u64().unwrap_or(0) {
            self.calls.lock().unwrap().push((
                event.job_id.clone(),
                event.attempt,
                event.fence,
                self.clock.now_ms(),
            ));
            return Err(TaskEnd {
                retry_after: p["retry_after_secs"].as_u64().map(Duration::from_secs),
                ..TaskEnd::of(Outcome::Failed {
                    class: ErrorClass::Throttled,
                    message: "Rate Exceeded.".into(),
                })
            });
        }
        if let Some(ledger) = &self.ledger {
            let lease = ledger.get(&event.job_id).and_then(|j| j.lease_until_ms);
            self.leases_at_invoke.lock().unwrap().push((
                event.job_id.clone(),
                lease,
                event.lease.as_ref().map(|l| l.until_ms),
            ));
        }
        let me = FakeJob {
            clock: self.clock,
            calls: Mutex::new(Vec::new()),
            outcomes: None,
            records: self.records,
            ledger: None,
            leases_at_invoke: Mutex::new(Vec::new()),
        };
        let invocation = format!("invocation-{}-{}", event.job_id, event.fence);
        let event = event.clone();
        let records = self.records;
        let calls = self.calls_for(&event.job_id).len();
        // The run is recorded here, synchronously, so `calls` counts it at once.
        self.calls.lock().unwrap().push((
            event.job_id.clone(),
            event.attempt,
            event.fence,
            self.clock.now_ms(),
        ));
        tokio::spawn(async move {
            let outcome = me.behave(&event, calls as u64 + 1).await;
            let result = match outcome {
                Outcome::Succeeded { result } => Ok(serde_json::from_slice(&result)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&result).into()))),
                Outcome::Failed { class, message } => Err(json!({
                    "errorType": if class == ErrorClass::Timeout { "Sandbox.Timedout" } else { "RequestedFailure" },
                    "errorMessage": message,
                })),
            };
            let record = fleet_shared::invocation_record::InvocationRecord::ran(
                "req",
                "arn:aws:lambda:us-east-1:0:function:job",
                serde_json::to_value(&event).unwrap(),
                result,
                "t".into(),
            );
            let body = serde_json::to_string(&record).unwrap();
            match records {
                Records::LoseFirst if event.attempt == 1 => {}
                Records::Twice => {
                    outcomes.push(body.clone());
                    outcomes.push(body);
                }
                _ => outcomes.push(body),
            }
        });
        Ok(invocation)
    }
}

impl FakeJob {
    async fn run(&self, event: &JobEvent) -> Outcome {
        self.calls.lock().unwrap().push((
            event.job_id.clone(),
            event.attempt,
            event.fence,
            self.clock.now_ms(),
        ));
        let calls_so_far = self.calls_for(&event.job_id).len() as u64;
        self.behave(event, calls_so_far).await
    }

    /// What the job does on its `calls`-th call.
    async fn behave(&self, event: &JobEvent, calls: u64) -> Outcome {
        let p = &event.payload;
        if calls <= p["throttle_calls"].as_u64().unwrap_or(0) {
            return Outcome::Failed {
                class: ErrorClass::Throttled,
                message: "Rate Exceeded.".into(),
            };
        }
        if let Some(ms) = p["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if p["lambda_timeout"] == json!(true) {
            return Outcome::Failed {
                class: ErrorClass::Timeout,
                message: "Sandbox.Timedout: Task timed out".into(),
            };
        }
        let fail_times = p["fail_times"].as_u64().unwrap_or(0) as u32;
        if p["fail"] == json!(true) || event.attempt <= fail_times {
            return Outcome::Failed {
                class: ErrorClass::JobFailure,
                message: "requested".into(),
            };
        }
        if p["permanent"] == json!(true) {
            return Outcome::Failed {
                class: ErrorClass::Permanent,
                message: "no such function".into(),
            };
        }
        if let Some(n) = p["result_bytes"].as_u64() {
            return Outcome::Succeeded {
                result: vec![b'r'; n as usize],
            };
        }
        Outcome::Succeeded {
            result: br#"{"ok":true}"#.to_vec(),
        }
    }
}

/// Tasks that run for `task_ms` of (tokio) time from their start and exit with `exit_code`
/// (payload keys); every start and stop is recorded. Adoptable, like ECS tasks.
struct FakeTasks {
    starts: Mutex<Vec<(String, u32)>>,
    started_at: Mutex<Vec<tokio::time::Instant>>,
    stops: Mutex<Vec<String>>,
    tasks: Mutex<std::collections::HashMap<String, (tokio::time::Instant, u64, i32)>>,
}

impl FakeTasks {
    fn new() -> Self {
        Self {
            starts: Mutex::new(Vec::new()),
            started_at: Mutex::new(Vec::new()),
            stops: Mutex::new(Vec::new()),
            tasks: Mutex::new(Default::default()),
        }
    }
}

impl TaskLauncher for FakeTasks {
    fn adoptable(&self) -> bool {
        true
    }

    async fn start(&self, event: &JobEvent) -> Result<String, (ErrorClass, String)> {
        self.starts
            .lock()
            .unwrap()
            .push((event.job_id.clone(), event.attempt));
        self.started_at
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let task = format!("task/{}/{}", event.job_id, event.attempt);
        let ms = event.payload["task_ms"].as_u64().unwrap_or(0);
        let failing = event.payload["fail_task_attempts"].as_u64().unwrap_or(0) as u32;
        let code = if event.attempt <= failing { 3 } else { 0 };
        self.tasks.lock().unwrap().entry(task.clone()).or_insert((
            tokio::time::Instant::now(),
            ms,
            code,
        ));
        Ok(task)
    }

    async fn wait(&self, task: &str) -> TaskEnd {
        let (at, ms, code) = self.tasks.lock().unwrap()[task];
        tokio::time::sleep_until(at + Duration::from_millis(ms)).await;
        let outcome = if code == 0 {
            Outcome::Succeeded { result: Vec::new() }
        } else {
            Outcome::Failed {
                class: ErrorClass::JobFailure,
                message: format!("exit {code}"),
            }
        };
        TaskEnd {
            outcome,
            exit_code: Some(code),
            stopped_reason: None,
            retry_after: None,
            reported: Default::default(),
        }
    }

    async fn stop(&self, task: &str, _reason: &str) {
        self.stops.lock().unwrap().push(task.to_owned());
    }
}

type TestEngine = Engine<(MemoryQueue, MemoryQueue, MemoryLedger, FakeJob, FakeTasks)>;

struct Rig {
    engine: Arc<TestEngine>,
    tasks: Arc<FakeTasks>,
    queue: Arc<MemoryQueue>,
    dead: Arc<MemoryQueue>,
    ledger: Arc<MemoryLedger>,
    job: Arc<FakeJob>,
    outcomes: Option<Arc<MemoryQueue>>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    run: tokio::task::JoinHandle<Report>,
    clock: Clock,
}

fn config() -> Config {
    let mut c = Config::default();
    c.lambda.function = Some("job".into());
    c.worker.concurrency = 8;
    c.worker.receive_loops = 2;
    c.worker.wait_time_secs = 1;
    c.worker.lease_secs = 3;
    c.worker.heartbeat_secs = Some(1);
    c.worker.drain_secs = 2;
    c.worker.retry_base_secs = 1;
    c.worker.clock_skew_secs = 1;
    c.validate().unwrap();
    c
}

fn start(config: Config) -> Rig {
    start_with(config, None)
}

/// A replica; `shared` gives it another rig's queue, ledger and tasks (a second replica).
fn start_with(config: Config, shared: Option<&Rig>) -> Rig {
    start_full(config, shared, None)
}

/// A replica that hands its Lambda attempts off, with records delivered as `records` says.
fn start_handing(config: Config, shared: Option<&Rig>, records: Records) -> Rig {
    start_full(config, shared, Some(records))
}

fn start_full(config: Config, shared: Option<&Rig>, records: Option<Records>) -> Rig {
    let clock = shared.map_or_else(Clock::tokio, |r| r.clock);
    let queue = shared.map_or_else(|| Arc::new(MemoryQueue::new()), |r| r.queue.clone());
    let dead = shared.map_or_else(|| Arc::new(MemoryQueue::new()), |r| r.dead.clone());
    let ledger = shared.map_or_else(|| Arc::new(MemoryLedger::new()), |r| r.ledger.clone());
    let tasks = shared.map_or_else(|| Arc::new(FakeTasks::new()), |r| r.tasks.clone());
    let outcomes = shared
        .and_then(|r| r.outcomes.clone())
        .or_else(|| records.map(|_| Arc::new(MemoryQueue::new())));
    let job = Arc::new(FakeJob {
        clock,
        calls: Mutex::new(Vec::new()),
        outcomes: records.and(outcomes.clone()),
        records: records.unwrap_or(Records::Once),
        ledger: Some(ledger.clone()),
        leases_at_invoke: Mutex::new(Vec::new()),
    });
    let replica = if shared.is_some() {
        "second-replica"
    } else {
        "test-replica"
    };
    let engine: Arc<TestEngine> = Arc::new(
        Engine::new(
            Parts {
                queue: queue.clone(),
                dead_letters: dead.clone(),
                ledger: ledger.clone(),
                dispatcher: job.clone(),
                tasks: tasks.clone(),
            },
            Arc::new(config),
            replica.into(),
        )
        .with_clock(clock),
    );
    let engine = match (&outcomes, records) {
        (Some(q), Some(_)) => Arc::new(
            Arc::into_inner(engine)
                .expect("one owner")
                .with_outcomes(q.clone()),
        ),
        _ => engine,
    };
    let shutdown = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let run = tokio::spawn(engine.clone().run(shutdown.clone(), hard_stop.clone()));
    Rig {
        engine,
        tasks,
        queue,
        dead,
        ledger,
        job,
        outcomes,
        shutdown,
        hard_stop,
        run,
        clock,
    }
}

fn body(request: &str, index: u32, payload: Value) -> String {
    JobMessage {
        version: MESSAGE_VERSION,
        request_id: request.into(),
        job_id: format!("{request}:{index}"),
        job_type: "test".into(),
        attempt: 1,
        payload,
        routing: None,
        enqueued_at_ms: 0,
        max_attempts: None,
        tenant: None,
    }
    .to_body()
}

fn strs(v: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    v.iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..36_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

impl Rig {
    fn state(&self, job_id: &str) -> Option<JobState> {
        self.ledger.get(job_id).map(|j| j.state)
    }

    /// The job's attempts as its history has them, oldest first.
    async fn history(&self, job_id: &str) -> Vec<AttemptRecord> {
        let key = self.ledger.get(job_id).unwrap().key;
        self.ledger
            .history(&key)
            .await
            .unwrap()
            .attempts
            .into_iter()
            .map(|e| e.record)
            .collect()
    }

    /// Runs job `r:0` with `payload` to success; its attempts' (target, reason, outcome).
    async fn one_job(&self, payload: Value) -> Vec<(String, String, String)> {
        self.queue.push(body("r", 0, payload));
        until("succeeded", || {
            self.state("r:0") == Some(JobState::Succeeded)
        })
        .await;
        self.history("r:0")
            .await
            .into_iter()
            .map(|h| {
                (
                    h.target.as_str().to_owned(),
                    h.reason.to_string(),
                    h.outcome.to_string(),
                )
            })
            .collect()
    }

    async fn stop(self) -> Report {
        self.shutdown.cancel();
        self.run.await.unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn runs_every_job_once_and_acknowledges_it() {
    let rig = start(config());
    for i in 0..50 {
        rig.queue
            .push(body("r", i, json!({"sleep_ms": (i * 53) % 700})));
    }
    until("all succeeded", || {
        (0..50).all(|i| rig.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;
    assert!(rig.job.per_job().values().all(|n| *n == 1));
    assert_eq!(rig.job.per_job().len(), 50);
    let report = rig.stop().await;
    assert_eq!(
        (report.claimed, report.succeeded, report.retried),
        (50, 50, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_growing_delays_then_dead_lettered() {
    let mut c = config();
    c.worker.max_attempts = 4;
    let rig = start(c);
    rig.queue.push(body("r", 0, json!({"fail": true})));
    rig.queue.push(body("r", 1, json!({"fail_times": 2})));
    until("both finished", || {
        rig.state("r:0") == Some(JobState::Failed) && rig.state("r:1") == Some(JobState::Succeeded)
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;

    let calls = rig.job.calls_for("r:0");
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Full jitter under ceilings of 1, 2 and 4 seconds (base 1 s, doubling); the message
    // comes back on whole seconds and a receive waits up to 1 s, hence the slack.
    let gaps: Vec<u64> = calls.windows(2).map(|w| w[1].2 - w[0].2).collect();
    for (gap, ceiling) in gaps.iter().zip([1000, 2000, 4000]) {
        assert!(*gap <= ceiling + 2000, "gaps {gaps:?}");
    }
    assert_eq!(rig.job.calls_for("r:1").len(), 3);

    let dead = rig.dead.dead_letters();
    assert_eq!(dead.len(), 1);
    let attrs: BTreeMap<_, _> = dead[0].1.iter().cloned().collect();
    assert_eq!(attrs[dead_letter_attr::JOB_ID], "r:0");
    assert_eq!(attrs[dead_letter_attr::REQUEST_ID], "r");
    assert_eq!(attrs[dead_letter_attr::ERROR_CLASS], "job_failure");
    let record = FailureRecord::from_attribute(&attrs[dead_letter_attr::FAILURE]).unwrap();
    let history = rig.history("r:0").await;
    assert_eq!(history.len(), 4);
    assert!(
        history
            .iter()
            .all(|h| h.outcome.as_str() == "job_failure" && h.target == Target::Lambda)
    );
    assert_eq!(record.attempts, 4);
    assert_eq!(record.targets, vec![Target::Lambda]);
    assert_eq!(record.first_attempt_ms, Some(history[0].started_ms));
    assert_eq!(record.last_attempt_ms, Some(history[3].started_ms));
    assert_eq!(rig.ledger.get("r:0").unwrap().attempts, 4);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_fails_at_once() {
    let rig = start(config());
    rig.queue.push(body("r", 0, json!({"permanent": true})));
    until("failed", || rig.state("r:0") == Some(JobState::Failed)).await;
    until("queue empty", || rig.queue.is_empty()).await;
    assert_eq!(rig.job.calls_for("r:0").len(), 1);
    assert_eq!(rig.dead.dead_letters().len(), 1);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_the_ledger_refuses_as_invalid_fails_the_job_at_once() {
    // A configuration the checks would refuse (results this large go to S3): the outcome's
    // result item would pass DynamoDB's 400 KB, and the model refuses it as DynamoDB does,
    // with a ValidationException. The job fails with that reason on its first attempt.
    let mut c = config();
    c.limits.max_result_bytes = 500_000;
    assert!(c.validate().is_err());
    let rig = start(c);
    rig.queue
        .push(body("r", 0, json!({"result_bytes": 450_000})));
    until("failed", || rig.state("r:0") == Some(JobState::Failed)).await;
    until("queue empty", || rig.queue.is_empty()).await;
    assert_eq!(rig.job.calls_for("r:0").len(), 1, "never retried");
    let dead = rig.dead.dead_letters();
    assert_eq!(dead.len(), 1);
    let attrs: BTreeMap<_, _> = dead[0].1.iter().cloned().collect();
    let record = FailureRecord::from_attribute(&attrs[dead_letter_attr::FAILURE]).unwrap();
    assert!(record.error.contains("ValidationException"), "{record:?}");
    assert_eq!(record.error_class, ErrorClass::Permanent, "{record:?}");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_of_a_running_job_is_deferred_not_run() {
    let rig = start(config());
    let b = body("r", 0, json!({"sleep_ms": 10_000}));
    rig.queue.push(b.clone());
    until("running", || rig.state("r:0") == Some(JobState::Running)).await;
    rig.queue.push(b);
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;
    assert_eq!(rig.job.calls_for("r:0").len(), 1);
    let report = rig.stop().await;
    assert!(report.deferred >= 1, "{report:?}");
    assert_eq!(report.obsolete, 1);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_message_is_dead_lettered_with_its_reason() {
    let rig = start(config());
    rig.queue.push("{\"version\": 7}");
    rig.queue.push(body("r", 0, json!({})));
    until("good job done", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;
    let dead = rig.dead.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "{\"version\": 7}");
    let attrs: BTreeMap<_, _> = dead[0].1.iter().cloned().collect();
    let record = FailureRecord::from_attribute(&attrs[dead_letter_attr::FAILURE]).unwrap();
    assert!(
        record.error.contains("unknown message version 7"),
        "{record:?}"
    );
    assert_eq!((record.job_id, record.attempts), (None, 0));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_still_running_at_the_drain_deadline_is_released() {
    let rig = start(config());
    rig.queue.push(body("r", 0, json!({"sleep_ms": 100_000})));
    until("running", || rig.state("r:0") == Some(JobState::Running)).await;
    let queue = rig.queue.clone();
    let ledger = rig.ledger.clone();
    let report = rig.stop().await;
    assert_eq!(report.released, 1);
    let j = ledger.get("r:0").unwrap();
    assert_eq!(
        (j.state, j.attempts, j.owner),
        (JobState::Retrying, 0, None)
    );
    // The message is visible again at once.
    use fleet_shared::queue::JobQueue;
    let again = queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_lost_its_lease_does_not_record_the_result() {
    let rig = start(config());
    rig.queue.push(body("r", 0, json!({"sleep_ms": 20_000})));
    until("running", || rig.state("r:0") == Some(JobState::Running)).await;
    // Another replica takes the job over as if this one had been paused past its lease.
    let job = JobId::parse("r:0").unwrap();
    let now = rig.clock.now_ms() + 60_000;
    let claim = rig
        .ledger
        .claim(&ClaimRequest {
            job: &job,
            shards: DIRECT_JOB_SHARDS,
            job_type: "test",
            payload_json: "{}",
            max_attempts: None,
            owner: "other",
            now_ms: now,
            lease_ms: 600_000,
            skew_ms: 1000,
            enqueued_at_ms: 0,
            direct: true,
        })
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Claimed(ref l) if l.fence == 2));
    until("lease loss noticed", || {
        rig.job.calls_for("r:0").len() == 1
            && rig.ledger.get("r:0").unwrap().owner.as_deref() == Some("other")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let j = rig.ledger.get("r:0").unwrap();
    assert_eq!(
        (j.state, j.fence, j.owner.as_deref()),
        (JobState::Running, 2, Some("other"))
    );
    let report = rig.stop().await;
    assert_eq!(report.leases_lost, 1);
    assert_eq!(report.succeeded, 0);
}

#[tokio::test(start_paused = true)]
async fn receives_never_ask_for_more_than_free_slots() {
    let mut c = config();
    c.worker.concurrency = 3;
    let rig = start(c);
    for i in 0..20 {
        rig.queue.push(body("r", i, json!({"sleep_ms": 5_000})));
    }
    until("three running", || rig.job.calls.lock().unwrap().len() == 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Three in flight; the other 17 were never received (none went invisible).
    let running = (0..20)
        .filter(|i| rig.state(&format!("r:{i}")) == Some(JobState::Running))
        .count();
    assert_eq!(running, 3);
    use fleet_shared::queue::JobQueue;
    let visible = rig
        .queue
        .receive(10, Duration::ZERO, Duration::ZERO)
        .await
        .unwrap()
        .len();
    assert_eq!(visible, 10, "the rest are still visible in the queue");
    rig.hard_stop.cancel();
    rig.stop().await;
}

/// Jobs of different lengths free their slots one at a time; the receive loops wait for a
/// batch's worth in turn instead of all waking to split it (one or two messages a call).
#[tokio::test(start_paused = true)]
async fn receive_loops_take_full_batches_when_slots_free_one_by_one() {
    let mut c = config();
    // A batch is a tenth of the slots, at most ten.
    c.worker.concurrency = 100;
    c.worker.receive_loops = 4;
    c.worker.lease_secs = 60;
    let rig = start(c);
    let n = 600;
    for i in 0..n {
        let sleep_ms = 300 + (i * 7_919) % 500;
        rig.queue.push(body("r", i, json!({"sleep_ms": sleep_ms})));
    }
    until("all succeeded", || {
        (0..n).all(|i| rig.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    let s = rig.queue.stats();
    assert_eq!(s.received, u64::from(n), "each message received once");
    // A batch is ten; at most a fifth more calls than full batches would take.
    assert!(
        s.filled_receives * 10 <= s.received * 12 / 10,
        "{} receives for {} messages",
        s.filled_receives,
        s.received
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_receive_in_progress_at_shutdown_hands_its_messages_back() {
    let mut c = config();
    c.worker.wait_time_secs = 20;
    c.worker.receive_loops = 1;
    let rig = start(c);
    // Let the receive loop start its long poll on the empty queue.
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.shutdown.cancel();
    rig.queue.push(body("r", 0, json!({})));
    let queue = rig.queue.clone();
    let ledger = rig.ledger.clone();
    let report = rig.stop().await;
    assert_eq!(report.received, 0);
    assert!(ledger.get("r:0").is_none(), "never claimed");
    use fleet_shared::queue::JobQueue;
    let again = queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "visible again at once");
    assert_eq!(again[0].receive_count, 2, "the long poll had received it");
}

#[tokio::test(start_paused = true)]
async fn throttling_spends_no_attempt_and_lowers_the_limit() {
    let mut c = config();
    c.worker.max_attempts = 2;
    let rig = start(c);
    for i in 0..8 {
        rig.queue
            .push(body("r", i, json!({"throttle_calls": 3, "sleep_ms": 200})));
    }
    until("all succeeded", || {
        (0..8).all(|i| rig.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    for i in 0..8 {
        let id = format!("r:{i}");
        // Four calls (three throttled), yet a single attempt spent of the two allowed.
        assert_eq!(rig.job.calls_for(&id).len(), 4);
        assert!(
            rig.job.calls_for(&id).iter().all(|c| c.0 == 1),
            "attempt number never grew"
        );
        let j = rig.ledger.get(&id).unwrap();
        assert_eq!(j.attempts, 1);
        let history = rig.history(&id).await;
        let outcomes: Vec<&str> = history.iter().map(|h| h.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            vec!["throttled", "throttled", "throttled", "succeeded"]
        );
    }
    assert!(
        rig.engine.lambda_limit() < 8,
        "the limit came down from 8: {}",
        rig.engine.lambda_limit()
    );
    let report = rig.stop().await;
    assert_eq!(report.throttled, 24);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_job_type_is_dead_lettered_on_first_receive() {
    let mut c = config();
    c.job_types.insert("test".into(), Default::default());
    let rig = start(c);
    let mut other = serde_json::from_str::<Value>(&body("r", 0, json!({}))).unwrap();
    other["job_type"] = json!("other");
    rig.queue.push(other.to_string());
    rig.queue.push(body("r", 1, json!({})));
    until("known type done", || {
        rig.state("r:1") == Some(JobState::Succeeded)
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;
    assert!(
        rig.ledger.get("r:0").is_none(),
        "no ledger item for a refused message"
    );
    let dead = rig.dead.dead_letters();
    assert_eq!(dead.len(), 1);
    let attrs: BTreeMap<_, _> = dead[0].1.iter().cloned().collect();
    let record = FailureRecord::from_attribute(&attrs[dead_letter_attr::FAILURE]).unwrap();
    assert!(
        record.error.contains("unknown job type \"other\""),
        "{record:?}"
    );
    assert_eq!(record.job_id.as_deref(), Some("r:0"));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_jobs_message_that_comes_back_is_dead_lettered_again() {
    // As if a replica died after writing FAILED and before the dead-letter send.
    let rig = start(config());
    let job = JobId::parse("r:0").unwrap();
    let Claim::Claimed(lease) = rig
        .ledger
        .claim(&ClaimRequest {
            job: &job,
            shards: DIRECT_JOB_SHARDS,
            job_type: "test",
            payload_json: "{}",
            max_attempts: None,
            owner: "dead-replica",
            now_ms: rig.clock.now_ms(),
            lease_ms: 1000,
            skew_ms: 0,
            enqueued_at_ms: 0,
            direct: true,
        })
        .await
        .unwrap()
    else {
        panic!("claim")
    };
    let rec = fleet_shared::ledger::AttemptRecord {
        attempt: 1,
        fence: lease.fence,
        started_ms: lease.started_ms,
        ended_ms: lease.started_ms + 5,
        target: Target::Lambda,
        outcome: AttemptOutcome::Failed(ErrorClass::Permanent),
        retry_at_ms: None,
        reason: RouteReason::of(RouteRule::Default),
        exit_code: None,
        stopped_reason: None,
        usage: None,
    };
    let failed = fleet_shared::ledger::Finish::Failed {
        class: ErrorClass::Permanent,
        error: "no such function".into(),
    };
    let done = rig
        .ledger
        .commit(
            "0",
            &[Change::Finish {
                lease,
                finish: failed,
                record: rec,
            }],
            &[],
        )
        .await
        .unwrap();
    assert!(done[0].is_ok());
    rig.queue.push(body("r", 0, json!({})));
    until("queue empty", || rig.queue.is_empty()).await;
    assert!(rig.job.calls_for("r:0").is_empty(), "not run again");
    let dead = rig.dead.dead_letters();
    assert_eq!(dead.len(), 1);
    let attrs: BTreeMap<_, _> = dead[0].1.iter().cloned().collect();
    let record = FailureRecord::from_attribute(&attrs[dead_letter_attr::FAILURE]).unwrap();
    assert_eq!(
        (
            record.error_class.as_str(),
            record.error.as_str(),
            record.attempts
        ),
        ("permanent", "no such function", 1)
    );
    rig.stop().await;
}

/// ECS routing for job type `test`, with the sweeper and lease timings of the tests.
fn ecs_config() -> Config {
    let mut c = config();
    c.ecs.launcher = fleet_shared::config::Launcher::Process;
    c.ecs.command = Some("fake".into());
    c.worker.sweep_secs = 1;
    c.job_types.insert(
        "test".into(),
        fleet_shared::config::JobTypeConfig {
            target: Some(Target::Ecs),
            ..Default::default()
        },
    );
    c
}

#[tokio::test(start_paused = true)]
async fn a_running_task_is_handed_off_and_followed_to_its_end() {
    let rig = start(ecs_config());
    rig.queue.push(body("r", 0, json!({"task_ms": 120_000})));
    // The message is gone while the task still runs: the lease alone keeps the job.
    until("handed off", || {
        rig.state("r:0") == Some(JobState::Running) && rig.queue.is_empty()
    })
    .await;
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    let history = rig.history("r:0").await;
    assert_eq!(history.len(), 1);
    let h = &history[0];
    assert_eq!(
        (h.target.as_str(), h.reason.to_string(), h.exit_code),
        ("ecs", "job_type".to_owned(), Some(0))
    );
    assert!(
        h.ended_ms - h.started_ms >= 120_000,
        "ran for two minutes under a 3 s lease"
    );
    assert_eq!(rig.tasks.starts.lock().unwrap().len(), 1);
    let report = rig.stop().await;
    assert_eq!(report.handed_off, 1);
}

#[tokio::test(start_paused = true)]
async fn another_replica_adopts_a_task_whose_replica_died() {
    let first = start(ecs_config());
    first.queue.push(body("r", 0, json!({"task_ms": 60_000})));
    until("handed off", || {
        first.state("r:0") == Some(JobState::Running) && first.queue.is_empty()
    })
    .await;
    // The first replica stops at once: it follows the task no more and keeps its lease.
    first.hard_stop.cancel();
    first.shutdown.cancel();
    let second = start_with(ecs_config(), Some(&first));
    let ledger = first.ledger.clone();
    first.run.await.unwrap();

    until("succeeded", || {
        second.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    let j = ledger.get("r:0").unwrap();
    assert_eq!(j.fence, 2, "adopted with a higher fence");
    assert_eq!(j.attempts, 1, "the same attempt");
    let history = second.history("r:0").await;
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].reason.to_string(), history[0].fence),
        ("adopted".to_owned(), 2)
    );
    assert_eq!(
        second.tasks.starts.lock().unwrap().len(),
        1,
        "no second task"
    );
    let report = second.stop().await;
    assert_eq!(report.adopted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lambda_timeout_promotes_the_next_attempt_to_ecs() {
    let mut c = config();
    c.ecs.launcher = fleet_shared::config::Launcher::Process;
    c.ecs.command = Some("fake".into());
    let rig = start(c);
    let got = rig.one_job(json!({"lambda_timeout": true})).await;
    assert_eq!(
        strs(&got),
        vec![
            ("lambda", "default", "timeout"),
            ("ecs", "promoted_after_timeout", "succeeded")
        ]
    );
    let routes = rig.engine.stats.routes();
    assert_eq!(routes.get("lambda/default"), Some(&1));
    assert_eq!(routes.get("ecs/promoted_after_timeout"), Some(&1));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_is_retried_with_a_new_message() {
    let rig = start(ecs_config());
    rig.queue.push(body(
        "r",
        0,
        json!({"fail_task_attempts": 1, "task_ms": 10}),
    ));
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;
    let starts = rig.tasks.starts.lock().unwrap().clone();
    assert_eq!(starts, vec![("r:0".to_string(), 1), ("r:0".to_string(), 2)]);
    let h = rig.history("r:0").await;
    assert_eq!(
        (h[0].exit_code, h[0].outcome.as_str()),
        (Some(3), "job_failure")
    );
    rig.stop().await;
}

/// Two replicas with quick sweeps, for the sweeper's tests.
fn sweeping_config() -> Config {
    let mut c = config();
    c.worker.sweep_secs = 1;
    c.worker.recover_secs = 5;
    c
}

/// Claims `job` for a replica that then vanishes (no message, no task).
async fn ghost_claim(rig: &Rig, job: &str, lease_ms: u64) {
    let id = JobId::parse(job).unwrap();
    let claim = rig
        .ledger
        .claim(&ClaimRequest {
            job: &id,
            shards: DIRECT_JOB_SHARDS,
            job_type: "test",
            payload_json: "{}",
            max_attempts: None,
            owner: "ghost",
            now_ms: rig.clock.now_ms(),
            lease_ms,
            skew_ms: 1000,
            enqueued_at_ms: 0,
            direct: true,
        })
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Claimed(_)));
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_once_and_a_live_one_never() {
    let a = start(sweeping_config());
    let b = start_with(sweeping_config(), Some(&a));
    // A replica died holding r:0 (lease 3 s) and its message is gone; r:1's owner is alive.
    ghost_claim(&a, "r:0", 3_000).await;
    ghost_claim(&a, "r:1", 3_600_000).await;
    until("r:0 recovered", || {
        a.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    // Let many more sweeps pass.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let runs = a.job.calls_for("r:0").len() + b.job.calls_for("r:0").len();
    assert_eq!(runs, 1, "run once after the takeover");
    let j = a.ledger.get("r:0").unwrap();
    assert_eq!((j.fence, j.attempts), (2, 2));
    let live = a.ledger.get("r:1").unwrap();
    assert_eq!(
        (live.state, live.owner.as_deref(), live.fence),
        (JobState::Running, Some("ghost"), 1)
    );
    assert!(a.job.calls_for("r:1").is_empty() && b.job.calls_for("r:1").is_empty());
    let b_report = b.stop().await;
    let a_report = a.stop().await;
    assert_eq!(
        a_report.requeued + b_report.requeued,
        1,
        "one sweeper won the re-send"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_job_whose_message_is_lost_is_sent_again_once_the_queue_is_quiet() {
    let rig = start(sweeping_config());
    let lost = JobId::parse("r:5").unwrap();
    rig.ledger
        .insert_pending(&lost, "test", "{}", rig.clock.now_ms());
    until("re-sent and done", || {
        rig.state("r:5") == Some(JobState::Succeeded)
    })
    .await;
    // Many more sweeps: the job is not sent again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rig.job.calls_for("r:5").len(), 1);
    assert_eq!(rig.stop().await.requeued, 1);
}

/// A release whose replica stopped after moving the cursor and before sending: its record
/// is in the due index, and a sweeper sends the jobs it released; their finishes release
/// the rest.
#[tokio::test(start_paused = true)]
async fn jobs_released_without_their_messages_are_sent_by_the_sweeper() {
    use fleet_shared::ledger::{NewJob, RequestLedger, RequestRecord, item, window};
    let rig = start(sweeping_config());
    let now = rig.clock.now_ms();
    let record = RequestRecord {
        content_hash: "h".into(),
        written: 5,
        window: Some(3),
        capped: true,
        ..RequestRecord::new("w", "test", 5, now)
    };
    rig.ledger.put_request(&record).await.unwrap();
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| {
            let job = JobId::new("w", i).unwrap();
            NewJob {
                key: item::job_key(&job, 1),
                job,
                job_type: "test".into(),
                payload_json: "{}".into(),
                max_attempts: None,
                target: None,
                created_at_ms: now,
                held: true,
            }
        })
        .collect();
    rig.ledger.put_jobs(&jobs).await.unwrap();
    let releaser = window::Releaser {
        name: "stopped",
        turn_ms: 1,
    };
    let released = window::release(rig.ledger.as_ref(), "w", releaser, now)
        .await
        .unwrap();
    assert_eq!(released.range, 0..3, "released, and never sent");
    until("every job done", || {
        (0..5).all(|i| rig.state(&format!("w:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    // Many more sweeps: nothing is sent again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        rig.job.per_job().values().all(|n| *n == 1),
        "{:?}",
        rig.job.per_job()
    );
    assert_eq!(rig.job.per_job().len(), 5);
    assert_eq!(
        rig.stop().await.requeued,
        3,
        "the three released jobs, once each"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_jobs_behind_a_busy_queue_are_not_taken_for_lost() {
    // One slot, 40 jobs of 2 s: the queue stays 80 s behind, far beyond recover_secs (5 s).
    // Every claim is of a job due since the start, so no waiting job looks lost.
    let mut c = sweeping_config();
    c.worker.concurrency = 1;
    c.lambda.max_concurrency = Some(1);
    let rig = start(c);
    let now = rig.clock.now_ms();
    for i in 0..40 {
        let job = JobId::new("r", i).unwrap();
        rig.ledger.insert_pending(&job, "test", "{}", now);
        rig.queue.push(body("r", i, json!({"sleep_ms": 2000})));
    }
    until("all done", || {
        (0..40).all(|i| rig.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    assert!(rig.job.per_job().values().all(|n| *n == 1));
    assert_eq!(rig.stop().await.requeued, 0, "nothing was re-sent");
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_runs_out_unrenewed_is_handed_back_and_runs_again() {
    let rig = start(config());
    rig.ledger.fail_heartbeats(true);
    rig.queue.push(body("r", 0, json!({"sleep_ms": 20_000})));
    // No heartbeat lands: the 3 s lease runs out, the replica gives the job up and releases
    // it (nobody else holds it, so the fenced release is accepted).
    until("released", || rig.engine.stats().released == 1).await;
    assert_eq!(rig.engine.stats().leases_lost, 1);
    rig.ledger.fail_heartbeats(false);
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    // Claimed again at once (fence 2); the cut-short attempt was not counted.
    let j = rig.ledger.get("r:0").unwrap();
    assert_eq!((j.fence, j.attempts), (2, 1));
    assert_eq!(rig.job.calls_for("r:0").len(), 2);
    let report = rig.stop().await;
    assert_eq!(report.succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn a_claim_past_the_attempt_limit_fails_the_job_without_running_it() {
    let mut c = config();
    c.worker.max_attempts = 2;
    let rig = start(c);
    // Two attempts whose replicas died (leases of 1 s, never renewed).
    ghost_claim(&rig, "r:0", 1_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ghost_claim(&rig, "r:0", 1_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.queue.push(body("r", 0, json!({})));
    until("failed", || rig.state("r:0") == Some(JobState::Failed)).await;
    until("queue empty", || rig.queue.is_empty()).await;
    assert!(
        rig.job.calls_for("r:0").is_empty(),
        "attempt 3 never started"
    );
    let j = rig.ledger.get("r:0").unwrap();
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.contains("attempts exhausted")),
        "{:?}",
        j.last_error
    );
    assert_eq!(rig.dead.dead_letters().len(), 1);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replica_reports_the_jobs_it_runs_with_its_counters() {
    use fleet_shared::ledger::RequestLedger;
    let rig = start(config());
    for i in 0..3 {
        rig.queue.push(body("live", i, json!({"sleep_ms": 60_000})));
    }
    until("three running", || {
        (0..3).all(|i| rig.state(&format!("live:{i}")) == Some(JobState::Running))
    })
    .await;
    // Within a report period, without any outcome to carry it.
    tokio::time::sleep(fleet_shared::ledger::recorder::LIVE_EVERY + Duration::from_secs(1)).await;
    let counts = rig.ledger.counts("live", rig.clock.now_ms()).await.unwrap();
    assert_eq!((counts.running, counts.succeeded), (3, 0), "{counts:?}");
    until("done", || {
        (0..3).all(|i| rig.state(&format!("live:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    let counts = rig.ledger.counts("live", rig.clock.now_ms()).await.unwrap();
    assert_eq!((counts.running, counts.succeeded), (0, 3), "{counts:?}");
    rig.stop().await;
}

fn handing_config() -> Config {
    let mut c = sweeping_config();
    c.lambda.function_timeout_secs = 5;
    c.lambda.max_event_age_secs = 60;
    c.validate().unwrap();
    c
}

#[tokio::test(start_paused = true)]
async fn lambda_attempts_are_handed_off_and_recorded_from_their_records() {
    let mut c = handing_config();
    c.worker.max_attempts = 3;
    let rig = start_handing(c, None, Records::Once);
    for i in 0..30 {
        let payload = match i % 3 {
            0 => json!({"sleep_ms": 4000}),
            1 => json!({"fail_times": 1}),
            _ => json!({"fail": true}),
        };
        rig.queue.push(body("r", i, payload));
    }
    until("all finished", || {
        (0..30).all(|i| {
            rig.state(&format!("r:{i}"))
                .is_some_and(|s| s == JobState::Succeeded || s == JobState::Failed)
        })
    })
    .await;
    until("queue empty", || rig.queue.is_empty()).await;
    until("records consumed", || {
        rig.outcomes.as_ref().unwrap().is_empty()
    })
    .await;
    for i in 0..30 {
        let job = format!("r:{i}");
        let (state, runs) = match i % 3 {
            0 => (JobState::Succeeded, 1),
            1 => (JobState::Succeeded, 2),
            _ => (JobState::Failed, 3),
        };
        assert_eq!(rig.state(&job), Some(state), "{job}");
        assert_eq!(rig.job.calls_for(&job).len(), runs, "{job}");
        let h = rig.history(&job).await;
        assert_eq!(h.len(), runs, "{job}: one history entry per run");
        assert!(h.iter().all(|a| a.target == Target::Lambda));
    }
    // Every permit came back: the limit holds nothing for finished jobs.
    until("permits back", || rig.engine.handed.len() == 0).await;
    assert_eq!(rig.engine.lambda_limit.in_flight(), 0);
    let report = rig.stop().await;
    assert_eq!(report.handed_off, 10 + 20 + 30);
    assert_eq!(report.dead_lettered, 10);
}

/// The lease covers the event's age before Lambda is asked: a replica that dies after
/// the Invoke leaves a job that its record completes, not one that runs again.
#[tokio::test(start_paused = true)]
async fn the_lease_is_extended_before_the_event_is_sent() {
    let rig = start_handing(handing_config(), None, Records::Once);
    for i in 0..5 {
        rig.queue.push(body("r", i, json!({"sleep_ms": 1000})));
    }
    until("all succeeded", || {
        (0..5).all(|i| rig.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    let seen = rig.job.leases_at_invoke.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for (job, in_ledger, in_event) in seen {
        assert!(in_event.is_some(), "{job}: the event carries its lease");
        assert_eq!(
            in_ledger, in_event,
            "{job}: the ledger's lease at the Invoke"
        );
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_record_changes_nothing() {
    let rig = start_handing(handing_config(), None, Records::Twice);
    for i in 0..10 {
        rig.queue.push(body("r", i, json!({"fail_times": i % 2})));
    }
    until("all succeeded", || {
        (0..10).all(|i| rig.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    until("records consumed", || {
        rig.outcomes.as_ref().unwrap().is_empty()
    })
    .await;
    for i in 0..10 {
        let job = format!("r:{i}");
        let runs = 1 + (i % 2) as usize;
        assert_eq!(rig.job.calls_for(&job).len(), runs, "{job}");
        assert_eq!(rig.history(&job).await.len(), runs, "{job}");
    }
    let report = rig.stop().await;
    assert_eq!(report.succeeded, 10);
    assert_eq!(report.retried, 5, "each retry was recorded once");
}

#[tokio::test(start_paused = true)]
async fn a_lost_record_is_an_attempt_lost_that_the_sweeper_retries() {
    let rig = start_handing(handing_config(), None, Records::LoseFirst);
    rig.queue.push(body("r", 0, json!({})));
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    let calls = rig.job.calls_for("r:0");
    assert_eq!(calls.len(), 2, "{calls:?}");
    // The second run began only after the first one's lease (event age + timeout) ended.
    let lease_ms = (60 + 5) * 1000;
    assert!(calls[1].2 >= calls[0].2 + lease_ms, "{calls:?}");
    assert!(calls[1].1 > calls[0].1, "a new fence");
    until("permits back", || rig.engine.handed.len() == 0).await;
    let report = rig.stop().await;
    assert_eq!(report.requeued, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_replica_leaves_its_lambda_jobs_running_and_another_records_them() {
    // Room for every job under the Lambda limit (a cap on jobs handed off), so all are
    // running in Lambda when the replica stops.
    let mut c = handing_config();
    c.lambda.max_concurrency = Some(50);
    let first = start_handing(c, None, Records::Once);
    for i in 0..20 {
        first.queue.push(body("r", i, json!({"sleep_ms": 3000})));
    }
    until("all handed off", || {
        (0..20).all(|i| first.job.calls_for(&format!("r:{i}")).len() == 1)
    })
    .await;
    // The replica stops at once (a deploy, a scale-in): its jobs keep running in Lambda.
    first.hard_stop.cancel();
    first.shutdown.cancel();
    let second = start_handing(handing_config(), Some(&first), Records::Once);
    until("all succeeded", || {
        (0..20).all(|i| second.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    for i in 0..20 {
        let job = format!("r:{i}");
        assert_eq!(first.job.calls_for(&job).len(), 1, "{job} ran once");
        assert!(second.job.calls_for(&job).is_empty(), "{job} ran once");
    }
    let report = second.stop().await;
    assert_eq!(report.succeeded, 20);
    assert_eq!(report.claimed, 0, "the second replica claimed nothing");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_record_promotes_the_next_attempt_to_ecs_where_it_stays() {
    let mut c = handing_config();
    c.ecs.launcher = fleet_shared::config::Launcher::Process;
    c.ecs.command = Some("fake".into());
    let rig = start_handing(c, None, Records::Once);
    let got = rig
        .one_job(json!({"lambda_timeout": true, "fail_task_attempts": 2}))
        .await;
    assert_eq!(
        strs(&got),
        vec![
            ("lambda", "default", "timeout"),
            ("ecs", "promoted_after_timeout", "job_failure"),
            ("ecs", "kept_after_promotion", "succeeded"),
        ]
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_throttled_hand_off_spends_no_attempt() {
    let rig = start_handing(handing_config(), None, Records::Once);
    rig.queue.push(body("r", 0, json!({"throttle_calls": 2})));
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    let calls = rig.job.calls_for("r:0");
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|c| c.0 == 1),
        "every call is attempt 1: {calls:?}"
    );
    rig.stop().await;
}

/// A lease the ledger refuses to extend for good (a permanent error, not a throttle or a
/// 500): the hand-off gives up at once, invokes nothing and fails the job saying why, rather
/// than retrying until the lease runs out and the job comes back to do the same again.
#[tokio::test(start_paused = true)]
async fn a_permanent_ledger_error_before_a_hand_off_fails_the_job_without_invoking() {
    let rig = start_handing(handing_config(), None, Records::Once);
    rig.ledger.fail_heartbeats_as(Some(ErrorClass::Permanent));
    rig.queue.push(body("r", 0, json!({})));
    until("failed", || rig.state("r:0") == Some(JobState::Failed)).await;
    assert!(rig.job.calls_for("r:0").is_empty(), "nothing was invoked");
    let history = rig.history("r:0").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        history[0].outcome,
        AttemptOutcome::Failed(ErrorClass::Permanent)
    );
    let j = rig.ledger.get("r:0").unwrap();
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.contains("could not extend the lease")),
        "{:?}",
        j.last_error
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lambdas_retry_after_is_the_least_wait_after_a_throttle() {
    let rig = start_handing(handing_config(), None, Records::Once);
    rig.queue.push(body(
        "r",
        0,
        json!({"throttle_calls": 1, "retry_after_secs": 40}),
    ));
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    let calls = rig.job.calls_for("r:0");
    assert_eq!(calls.len(), 2);
    assert!(calls[1].2 >= calls[0].2 + 40_000, "{calls:?}");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn run_task_starts_share_one_budget_across_replicas() {
    let mut c = ecs_config();
    c.ecs.run_task_per_sec = 2.0;
    let first = start(c.clone());
    let second = start_with(c, Some(&first));
    for i in 0..12 {
        first.queue.push(body("r", i, json!({})));
    }
    until("all succeeded", || {
        (0..12).all(|i| first.state(&format!("r:{i}")) == Some(JobState::Succeeded))
    })
    .await;
    let mut at = first.tasks.started_at.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), 12);
    // Two a second for both replicas together, after a burst of two: at least 5 s for
    // twelve starts (each replica alone at two a second would need half that).
    let span = at[11] - at[0];
    assert!(span >= Duration::from_millis(4900), "{span:?}");
    // Both replicas started tasks.
    let (a, b) = (first.engine.stats().claimed, second.engine.stats().claimed);
    assert!(a > 0 && b > 0, "{a} / {b}");
    second.stop().await;
    first.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_shared_rate_waits_out_a_passing_ledger_error_and_fails_the_job_on_a_permanent_one() {
    let mut c = ecs_config();
    c.ecs.run_task_per_sec = 2.0;
    let rig = start(c);
    // Throttled: no task starts while it lasts, and the job runs once it passes.
    rig.ledger.fail_tokens_as(Some(ErrorClass::Throttled));
    rig.queue.push(body("r", 0, json!({})));
    until("claimed", || rig.state("r:0") == Some(JobState::Running)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        rig.tasks.started_at.lock().unwrap().is_empty(),
        "no token, no task"
    );
    assert_eq!(rig.state("r:0"), Some(JobState::Running), "still waiting");
    rig.ledger.fail_tokens_as(None);
    until("succeeded", || {
        rig.state("r:0") == Some(JobState::Succeeded)
    })
    .await;
    assert_eq!(rig.tasks.started_at.lock().unwrap().len(), 1);

    // Permanent: the job fails at once with why, and no task is started.
    rig.ledger.fail_tokens_as(Some(ErrorClass::Permanent));
    rig.queue.push(body("r", 1, json!({})));
    until("failed", || rig.state("r:1") == Some(JobState::Failed)).await;
    assert_eq!(
        rig.tasks.started_at.lock().unwrap().len(),
        1,
        "none for r:1"
    );
    let j = rig.ledger.get("r:1").unwrap();
    assert_eq!(j.attempts, 1, "not retried");
    assert!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.contains("shared rate")),
        "{:?}",
        j.last_error
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_malformed_invocation_record_is_dead_lettered_with_its_reason() {
    let rig = start_handing(handing_config(), None, Records::Once);
    let outcomes = rig.outcomes.clone().unwrap();
    outcomes.push("not a record".to_owned());
    // A record of someone else's function: its event is not a job event.
    outcomes.push(
        json!({"requestContext": {"condition": "Success"}, "requestPayload": {"order": 1}})
            .to_string(),
    );
    until("both dead-lettered", || rig.dead.dead_letters().len() == 2).await;
    until("records consumed", || outcomes.is_empty()).await;
    let mut reasons: Vec<String> = rig
        .dead
        .dead_letters()
        .iter()
        .map(|(body, attrs)| {
            let attrs: BTreeMap<_, _> = attrs.iter().cloned().collect();
            let record = FailureRecord::from_attribute(&attrs[dead_letter_attr::FAILURE]).unwrap();
            assert_eq!(record.error_class, ErrorClass::Permanent, "{body}");
            record.error
        })
        .collect();
    reasons.sort();
    assert!(
        reasons[0].contains("not an invocation record"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("not a job event"), "{reasons:?}");
    // Nothing was written to the ledger.
    assert!(rig.ledger.get("r:0").is_none());
    rig.stop().await;
}
