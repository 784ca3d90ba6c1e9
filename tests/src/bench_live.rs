//! The `fleet-bench` scenarios that use real parts: `footprint` (the Lambda dispatcher over
//! real HTTP to the test job's Invoke API, queue and ledger in memory) and `api-economy`
//! (a replica against the local AWS endpoint through the real SDK, every call counted by an
//! SDK interceptor).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use fleet_shared::config::Config;
use fleet_shared::ledger::memory::MemoryLedger;
use fleet_shared::message::{JobEvent, JobMessage, MESSAGE_VERSION, RoutingHint, Target};
use fleet_shared::queue::memory::MemoryQueue;
use fleet_shared::time::Clock;
use fleet_worker::dispatch::lambda::LambdaDispatcher;
use fleet_worker::dispatch::{Dispatcher, NoTasks, Outcome, TaskEnd};
use fleet_worker::engine::{Engine, Parts};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::bench::{cpu_seconds, peak_rss_mb, round, rss_mb};
use crate::calls::{CallCounter, Counted};
use crate::{Stack, bin};

/// A dispatcher that counts attempts in flight and finished.
struct Counting<X> {
    inner: X,
    in_flight: AtomicUsize,
    succeeded: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

impl<X: Dispatcher> Dispatcher for Counting<X> {
    fn target(&self) -> &'static str {
        self.inner.target()
    }

    async fn dispatch(&self, event: &JobEvent) -> TaskEnd {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let out = self.inner.dispatch(event).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        match &out.outcome {
            Outcome::Succeeded { .. } => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed { message, .. } => self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(message.clone()),
        }
        out
    }

    fn hands_off(&self) -> bool {
        self.inner.hands_off()
    }

    /// An accepted hand-off counts in `in_flight` (and stays there).
    async fn hand_off(&self, event: &JobEvent) -> Result<String, TaskEnd> {
        let out = self.inner.hand_off(event).await;
        match &out {
            Ok(_) => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            Err(end) => {
                if let Outcome::Failed { message, .. } = &end.outcome {
                    self.failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(message.clone());
                }
            }
        }
        out
    }
}

/// `fleet-testjob serve` on a free loopback port; its address.
async fn start_testjob(
    extra: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut command = tokio::process::Command::new(bin("fleet-testjob"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::process::Stdio::null());
    crate::spawn_listening(command).await
}

async fn local_sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .load()
        .await
}

/// A job message (version 1) with `payload`, optionally routed to `target`.
pub(crate) fn job_body(
    request: &str,
    index: usize,
    payload: Value,
    target: Option<Target>,
) -> String {
    JobMessage {
        version: MESSAGE_VERSION,
        request_id: request.into(),
        job_id: format!("{request}:{index}"),
        job_type: "bench".into(),
        attempt: 1,
        payload,
        routing: target.map(|t| RoutingHint {
            target: Some(t),
            estimated_secs: None,
        }),
        enqueued_at_ms: fleet_shared::time::now_ms(),
        max_attempts: None,
        tenant: None,
    }
    .to_body()
}

/// Waits until `n` jobs are in flight (at most `sleep_ms` after `began`), then holds them a
/// while: when they all were (seconds from `began`), the CPU cores used while holding, and
/// the resident memory at the end of the hold (MB).
async fn hold_in_flight(
    in_flight: &AtomicUsize,
    n: usize,
    began: Instant,
    sleep_ms: u64,
) -> (Option<f64>, f64, f64) {
    let deadline = began + Duration::from_millis(sleep_ms);
    let mut reached = None;
    while Instant::now() < deadline {
        if in_flight.load(Ordering::Relaxed) >= n {
            reached = Some(began.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // CPU while holding them: a window inside the jobs' sleep.
    let hold = Duration::from_millis(sleep_ms / 3).min(Duration::from_secs(10));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(hold).await;
    (
        reached,
        (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64(),
        rss_mb(),
    )
}

/// `footprint`: `n` jobs of `sleep_ms` in flight at once on one replica.
pub async fn footprint(n: usize, sleep_ms: u64) -> anyhow::Result<Value> {
    let (_server, addr) = start_testjob(&["--function", "bench"], &[]).await?;
    let sdk = local_sdk(&format!("http://{addr}")).await;
    let mut config = crate::bench::engine_config(n);
    config.worker.lease_secs = (sleep_ms / 1000 + 60).max(60);
    let config = Arc::new(config);
    let lambda = fleet_shared::aws::lambda_for_invoke(&sdk, config.lambda.read_timeout());
    let queue = Arc::new(MemoryQueue::new());
    for i in 0..n {
        queue.push(job_body(
            "footprint",
            i,
            json!({"sleep_ms": sleep_ms}),
            None,
        ));
    }
    let rss_before = rss_mb();
    let dispatcher = Arc::new(Counting {
        inner: LambdaDispatcher::new(lambda, config.clone()),
        in_flight: AtomicUsize::new(0),
        succeeded: AtomicUsize::new(0),
        failed: Mutex::new(Vec::new()),
    });
    let engine = Arc::new(
        Engine::new(
            Parts {
                queue,
                dead_letters: Arc::new(MemoryQueue::new()),
                ledger: Arc::new(MemoryLedger::new()),
                dispatcher: dispatcher.clone(),
                tasks: Arc::new(NoTasks),
            },
            config,
            "bench".into(),
        )
        .with_clock(Clock::System),
    );
    let shutdown = CancellationToken::new();
    let hard = CancellationToken::new();
    let began = Instant::now();
    let run = tokio::spawn(engine.clone().run(shutdown.clone(), hard.clone()));
    let (reached, cpu_hold, rss_holding) =
        hold_in_flight(&dispatcher.in_flight, n, began, sleep_ms).await;
    let held_in_flight = dispatcher.in_flight.load(Ordering::Relaxed);
    let finish_by = Instant::now() + Duration::from_millis(sleep_ms) + Duration::from_secs(60);
    while dispatcher.succeeded.load(Ordering::Relaxed)
        + dispatcher
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
        < n
        && Instant::now() < finish_by
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    hard.cancel();
    let _ = run.await;
    let failed = dispatcher
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let succeeded = dispatcher.succeeded.load(Ordering::Relaxed);
    anyhow::ensure!(
        succeeded == n && failed.is_empty(),
        "bookkeeping: {succeeded} of {n} succeeded; failures: {:?}",
        failed.iter().take(3).collect::<Vec<_>>()
    );
    Ok(json!({
        "scenario": "footprint",
        "invocation": "sync",
        "jobs": n,
        "sleep_ms": sleep_ms,
        "in_flight": held_in_flight,
        "seconds_to_all_in_flight": reached.map(|s| round(s, 2)),
        "cpu_cores_while_holding": round(cpu_hold, 3),
        "rss_before_mb": round(rss_before, 1),
        "rss_holding_mb": round(rss_holding, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "succeeded": succeeded,
    }))
}

/// The resident memory (MB) that `n` claimed job items take in a fresh in-memory ledger:
/// the share of a footprint run that DynamoDB holds on AWS. Measured after the run in the
/// same process, where memory the run freed is reused first, so it errs low (the replica's
/// own share it leaves errs high).
async fn ledger_share_mb(n: usize, payload: &Value) -> anyhow::Result<f64> {
    use fleet_shared::ledger::{ClaimRequest, Ledger};
    let ledger = MemoryLedger::new();
    let payload = payload.to_string();
    let now = fleet_shared::time::now_ms();
    let before = rss_mb();
    for i in 0..n {
        let job = fleet_shared::ids::JobId::parse(&format!("calibration:{i}"))?;
        ledger
            .claim(&ClaimRequest {
                job: &job,
                shards: fleet_shared::ledger::memory::DIRECT_JOB_SHARDS,
                job_type: "bench",
                payload_json: &payload,
                max_attempts: None,
                owner: "bench",
                now_ms: now,
                lease_ms: 60_000,
                skew_ms: 1_000,
                enqueued_at_ms: now,
                direct: true,
            })
            .await?;
    }
    Ok(rss_mb() - before)
}

/// `footprint --invocation event`: `n` jobs of `sleep_ms` handed to Lambda asynchronously
/// by one replica, every call through the SDK over real HTTP: Invoke to the local Invoke
/// API (`fleet-testjob serve`, its own process), which runs each job and sends its
/// invocation record to the outcomes queue; the jobs and outcomes queues in the SQS
/// stand-in (its own process; the local endpoint takes minutes for what 100,000 jobs need);
/// the ledger in memory, its share of the memory measured and reported apart. In flight:
/// jobs handed off whose outcome is not recorded yet; the replica holds a permit and a table
/// entry for each, no connection and no task.
pub async fn footprint_event(n: usize, sleep_ms: u64) -> anyhow::Result<Value> {
    let mut config = crate::bench::engine_config(n);
    config.lambda.invocation = fleet_shared::config::Invocation::Event;
    // A slot is held only until the hand-off: a thousand keep the replica receiving while
    // the Lambda limit (every job) caps what it hands off.
    config.worker.concurrency = n.min(1000);
    config.worker.lease_secs = 60;
    config.validate()?;
    let config = Arc::new(config);
    let (_sqs, sqs_endpoint) = crate::sqs_stand_in::start().await?;
    let records_to = format!("{sqs_endpoint}/000000000000/footprint-outcomes");
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&sqs_endpoint).await);
    let jobs = Arc::new(fleet_shared::queue::sqs::SqsQueue::new(
        sqs.clone(),
        format!("{sqs_endpoint}/000000000000/footprint-jobs"),
    ));
    let outcomes = Arc::new(fleet_shared::queue::sqs::SqsQueue::new(
        sqs,
        records_to.clone(),
    ));
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL_SQS", sqs_endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("FLEET_OUTCOMES_QUEUE", records_to.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (_server, addr) = start_testjob(&["--function", "bench"], &env).await?;
    let lambda_sdk = local_sdk(&format!("http://{addr}")).await;
    let lambda = fleet_shared::aws::lambda_for_invoke(&lambda_sdk, config.lambda.read_timeout());
    let bodies: Vec<String> = (0..n)
        .map(|i| job_body("footprint", i, json!({"sleep_ms": sleep_ms}), None))
        .collect();
    jobs.send_batched(&bodies).await?;
    drop(bodies);
    let rss_before = rss_mb();
    let dispatcher = Arc::new(Counting {
        inner: LambdaDispatcher::new(lambda, config.clone()),
        in_flight: AtomicUsize::new(0),
        succeeded: AtomicUsize::new(0),
        failed: Mutex::new(Vec::new()),
    });
    let ledger = Arc::new(MemoryLedger::new());
    let engine = Arc::new(
        Engine::new(
            Parts {
                queue: jobs,
                dead_letters: Arc::new(MemoryQueue::new()),
                ledger: ledger.clone(),
                dispatcher: dispatcher.clone(),
                tasks: Arc::new(NoTasks),
            },
            config,
            "bench".into(),
        )
        .with_clock(Clock::System)
        .with_outcomes(outcomes),
    );
    let shutdown = CancellationToken::new();
    let hard = CancellationToken::new();
    let began = Instant::now();
    let run = tokio::spawn(engine.clone().run(shutdown.clone(), hard.clone()));
    let finished = || async {
        fleet_shared::ledger::RequestLedger::counts(ledger.as_ref(), "footprint", 0)
            .await
            .map(|c| c.finished() as usize)
            .unwrap_or(0)
    };
    // Handed off: `in_flight` counts accepted hand-offs.
    let (reached, cpu_hold, rss_holding) =
        hold_in_flight(&dispatcher.in_flight, n, began, sleep_ms).await;
    let held_in_flight = dispatcher
        .in_flight
        .load(Ordering::Relaxed)
        .saturating_sub(finished().await);
    let finish_by = Instant::now() + Duration::from_millis(sleep_ms) + Duration::from_secs(120);
    while finished().await < n && Instant::now() < finish_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    hard.cancel();
    let _ = run.await;
    let counts =
        fleet_shared::ledger::RequestLedger::counts(ledger.as_ref(), "footprint", 0).await?;
    let failed = dispatcher
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    anyhow::ensure!(
        counts.succeeded as usize == n && failed.is_empty(),
        "bookkeeping: {} of {n} succeeded ({counts:?}); handed off {} (all {reached:?} s \
         after the start); failures: {:?}",
        counts.succeeded,
        dispatcher.in_flight.load(Ordering::Relaxed),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    let ledger_mb = ledger_share_mb(n, &json!({"sleep_ms": sleep_ms})).await?;
    Ok(json!({
        "scenario": "footprint",
        "invocation": "event",
        "ledger_items_mb": round(ledger_mb, 1),
        "replica_holding_mb": round(rss_holding - ledger_mb, 1),
        "jobs": n,
        "sleep_ms": sleep_ms,
        "in_flight": held_in_flight,
        "seconds_to_all_in_flight": reached.map(|s| round(s, 2)),
        "cpu_cores_while_holding": round(cpu_hold, 3),
        "rss_before_mb": round(rss_before, 1),
        "rss_holding_mb": round(rss_holding, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "succeeded": counts.succeeded,
        "seconds": round(began.elapsed().as_secs_f64(), 1),
    }))
}

/// A replica's clients, each counting its calls.
fn counted_clients(
    sdk: &aws_config::SdkConfig,
    lambda_endpoint: &str,
    config: &Config,
    counter: &Arc<CallCounter>,
) -> fleet_worker::Clients {
    let c = Counted(counter.clone());
    let base = fleet_worker::Clients::new(sdk, config);
    let lambda = base
        .lambda
        .config()
        .to_builder()
        .endpoint_url(lambda_endpoint)
        .interceptor(c.clone())
        .build();
    fleet_worker::Clients {
        sqs: aws_sdk_sqs::Client::from_conf(
            base.sqs
                .config()
                .to_builder()
                .interceptor(c.clone())
                .build(),
        ),
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            base.dynamodb
                .config()
                .to_builder()
                .interceptor(c.clone())
                .build(),
        ),
        lambda: aws_sdk_lambda::Client::from_conf(lambda),
        ecs: aws_sdk_ecs::Client::from_conf(
            base.ecs
                .config()
                .to_builder()
                .interceptor(c.clone())
                .build(),
        ),
        s3: aws_sdk_s3::Client::from_conf(base.s3.config().to_builder().interceptor(c).build()),
        notifier: None,
    }
}

/// Runs `n` jobs routed to `target` through one replica against `stack`; the replica's
/// calls by operation.
async fn economy_run(
    stack: &Stack,
    config: &Config,
    lambda_endpoint: &str,
    request: &str,
    n: usize,
    target: Target,
) -> anyhow::Result<(BTreeMap<(String, String), u64>, f64)> {
    // Each run has queues of its own: a long poll that the previous run's replica left
    // behind at its hard stop would take this run's messages for a lease.
    let mut config = config.clone();
    config.queue.jobs = format!("{request}-jobs");
    config.queue.dead_letter = format!("{request}-dlq");
    let config = Arc::new(config);
    fleet_worker::init::init(&stack.sdk, &config).await?;
    let counter = Arc::new(CallCounter::default());
    let clients = counted_clients(&stack.sdk, lambda_endpoint, &config, &counter);
    let sqs = fleet_shared::queue::sqs::SqsQueue::resolve(stack.sqs(), &config.queue.jobs).await?;
    let bodies: Vec<String> = (0..n)
        .map(|i| job_body(request, i, json!({"echo": i}), Some(target)))
        .collect();
    sqs.send_batched(&bodies).await?;
    let shutdown = CancellationToken::new();
    let hard = CancellationToken::new();
    let began = Instant::now();
    let run = tokio::spawn(fleet_worker::run_with(
        clients,
        config.clone(),
        shutdown.clone(),
        hard.clone(),
    ));
    let ledger = stack.ledger();
    let deadline = began + Duration::from_secs(600);
    loop {
        // The request's counters (its jobs were sent straight to SQS: no request item).
        let counts = fleet_shared::ledger::RequestLedger::counts(&ledger, request, 0).await?;
        let done = counts.finished() as usize;
        if done >= n {
            let ok = counts.succeeded as usize;
            anyhow::ensure!(ok == n, "bookkeeping: {ok} of {n} jobs succeeded");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{done} of {n} jobs finished in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = began.elapsed().as_secs_f64();
    let calls = counter.snapshot();
    shutdown.cancel();
    hard.cancel();
    run.await??;
    Ok((calls, secs))
}

/// Calls a replica makes whatever the jobs: the sweeper's index queries and backlog reads,
/// request views (one read per request every two seconds), the queue URL at start. They
/// cost per replica and per second, not per job. (The learner's duration records are
/// PutItem calls, counted with the jobs' own: one per job type a minute.)
const BACKGROUND: &[&str] = &[
    "DynamoDB.Query",
    "SQS.GetQueueAttributes",
    "DynamoDB.GetItem",
    "SQS.GetQueueUrl",
];

fn summarise(calls: &BTreeMap<(String, String), u64>, n: usize, secs: f64) -> Value {
    let total: u64 = calls.values().sum();
    let by_op: BTreeMap<String, f64> = calls
        .iter()
        .map(|((s, o), c)| (format!("{s}.{o}"), round(*c as f64 / n as f64, 3)))
        .collect();
    let background: u64 = calls
        .iter()
        .filter(|((s, o), _)| BACKGROUND.contains(&format!("{s}.{o}").as_str()))
        .map(|(_, c)| *c)
        .sum();
    json!({
        "calls": total,
        "per_job": round(total as f64 / n as f64, 3),
        "per_job_without_background": round((total - background) as f64 / n as f64, 3),
        "background_calls": background,
        "background_calls_per_sec": round(background as f64 / secs.max(0.001), 3),
        "per_job_by_operation": by_op,
    })
}

/// `api-economy`: AWS calls per completed job, Lambda-routed and ECS-routed, no faults, with
/// Lambda invoked as `invocation` says (asynchronously, the outcome-queue receives and
/// deletes and the ledger's reads of the records count per job).
pub async fn api_economy(
    lambda_jobs: usize,
    ecs_jobs: usize,
    invocation: fleet_shared::config::Invocation,
) -> anyhow::Result<Value> {
    let stack = Stack::start().await;
    let ecs = stack.ecs_setup().await;
    // Tasks stop (exit 0) a second after they start.
    stack.moto_transition("ecs::task", json!({"progression": "time", "seconds": 1}));
    // The local Invoke API delivers invocation records to the Lambda run's outcomes queue.
    let mut env = stack.env();
    env.push((
        "FLEET_OUTCOMES_QUEUE".into(),
        "economy-lambda-jobs-outcomes".into(),
    ));
    let (_server, addr) = start_testjob(&["--function", "bench"], &env).await?;
    let mut config = Config::default();
    config.lambda.invocation = invocation;
    config.lambda.function = Some("bench".into());
    config.worker.concurrency = 100;
    ecs.configure(&mut config);
    config.ecs.poll_secs = 2;
    config.validate()?;
    let endpoint = format!("http://{addr}");
    let (lambda_calls, lambda_secs) = economy_run(
        &stack,
        &config,
        &endpoint,
        "economy-lambda",
        lambda_jobs,
        Target::Lambda,
    )
    .await?;
    let (ecs_calls, ecs_secs) = economy_run(
        &stack,
        &config,
        &endpoint,
        "economy-ecs",
        ecs_jobs,
        Target::Ecs,
    )
    .await?;
    let lambda = summarise(&lambda_calls, lambda_jobs, lambda_secs);
    let ecs_summary = summarise(&ecs_calls, ecs_jobs, ecs_secs);
    let describe = ecs_calls
        .iter()
        .filter(|((_, o), _)| o == "DescribeTasks")
        .map(|(_, c)| *c)
        .sum::<u64>();
    let ecs_total: u64 = ecs_calls.values().sum();
    Ok(json!({
        "scenario": "api-economy",
        "invocation": match invocation {
            fleet_shared::config::Invocation::Event => "event",
            fleet_shared::config::Invocation::Sync => "sync",
        },
        "lambda_jobs": lambda_jobs,
        "ecs_jobs": ecs_jobs,
        "calls_per_lambda_job": lambda["per_job_without_background"],
        "calls_per_ecs_job": ecs_summary["per_job_without_background"],
        "calls_per_ecs_job_without_describe": round(
            (ecs_total - describe - ecs_summary["background_calls"].as_u64().unwrap_or(0)) as f64
                / ecs_jobs.max(1) as f64,
            3
        ),
        "describe_tasks_per_ecs_job": round(describe as f64 / ecs_jobs.max(1) as f64, 3),
        "lambda": lambda,
        "ecs": ecs_summary,
        "lambda_seconds": round(lambda_secs, 1),
        "ecs_seconds": round(ecs_secs, 1),
    }))
}
