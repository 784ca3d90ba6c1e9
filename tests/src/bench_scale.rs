//! `fleet-bench --scenario scale`: one request of a million jobs through the real producer
//! and engine replicas, against the in-memory ledger and queue under the model of AWS's
//! limits (DynamoDB's per-partition throughput and item size, SQS's in-flight limit), on a
//! simulated clock. It reports what AWS would see: throttled calls, the hottest table and
//! index partitions, write and read units per job, what one `status` call and one `jobs`
//! page read, the queue's peak in-flight count, the makespan against the greedy bound, and
//! the request charges per million jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_producer::Producer;
use fleet_shared::config::Config;
use fleet_shared::ledger::memory::MemoryLedger;
use fleet_shared::ledger::model::{Limits, Usage};
use fleet_shared::message::JobEvent;
use fleet_shared::queue::memory::{MemoryQueue, SQS_IN_FLIGHT_LIMIT};
use fleet_shared::time::Clock;
use fleet_worker::classify::ErrorClass;
use fleet_worker::dispatch::{Dispatcher, NoTasks, Outcome, TaskEnd};
use fleet_worker::engine::{Engine, Parts};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::bench::{
    Latency, Slow, cpu_seconds, durations, greedy_makespan_ms, ideal_ms, peak_rss_mb, round,
};

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct ScaleOpts {
    pub jobs: usize,
    /// Jobs in flight across the fleet.
    pub in_flight: usize,
    pub replicas: usize,
    /// Median job duration, ms (lognormal).
    pub median_ms: u64,
    pub sigma: f64,
    pub seed: u64,
    /// Every `1 / fail_ratio`-th job fails its first attempt (0: none).
    pub fail_ratio: f64,
    /// The retry delay's ceiling for those failures, seconds.
    pub retry_secs: u64,
    /// Payload size of every job, bytes.
    pub payload_bytes: usize,
    /// The producer's `ledger.max_job_shards`.
    pub max_job_shards: u32,
    /// The producer's `limits.window` (0: every message at once).
    pub window: u32,
}

impl Default for ScaleOpts {
    fn default() -> Self {
        Self {
            jobs: 1_000_000,
            in_flight: 10_000,
            replicas: 10,
            median_ms: 5_000,
            sigma: 0.5,
            seed: 7,
            fail_ratio: 0.0,
            retry_secs: 600,
            payload_bytes: 512,
            max_job_shards: 64,
            window: Config::default().limits.window,
        }
    }
}

/// A job of `durations[index]` that fails its first attempt when `fails(index)`.
struct ScaleJob {
    durations: Arc<Vec<u64>>,
    fail_every: Option<usize>,
    overhead: Duration,
    succeeded: AtomicUsize,
    invocations: AtomicUsize,
    ends: Mutex<Vec<f64>>,
    began: tokio::time::Instant,
}

impl Dispatcher for ScaleJob {
    fn target(&self) -> &'static str {
        "lambda"
    }

    async fn dispatch(&self, event: &JobEvent) -> TaskEnd {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let index: usize = event
            .job_id
            .rsplit_once(':')
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or(0);
        let ms = self.durations.get(index).copied().unwrap_or(0);
        tokio::time::sleep(self.overhead + Duration::from_millis(ms)).await;
        if event.attempt == 1 && self.fail_every.is_some_and(|k| index.is_multiple_of(k)) {
            return TaskEnd::of(Outcome::Failed {
                class: ErrorClass::JobFailure,
                message: "fails its first attempt (benchmark)".into(),
            });
        }
        self.succeeded.fetch_add(1, Ordering::Relaxed);
        self.ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.began.elapsed().as_secs_f64());
        TaskEnd::of(Outcome::Succeeded {
            result: b"{\"ok\":true}".to_vec(),
        })
    }
}

/// The configuration of each replica.
fn replica_config(opts: &ScaleOpts) -> Config {
    let per = opts.in_flight.div_ceil(opts.replicas.max(1));
    let mut c = crate::bench::engine_config(per);
    // `lambda.max_concurrency` is the fleet's (the function's reserved concurrency): the
    // jobs in flight across every replica.
    c.lambda.max_concurrency = Some(opts.in_flight);
    c.worker.retry_base_secs = opts.retry_secs.max(1);
    c.worker.retry_max_secs = opts.retry_secs.max(1);
    c
}

fn usage_json(u: &Usage, n: f64) -> Value {
    json!({
        "write_units_per_job": round((u.write_units + u.index_write_units) / n, 3),
        "table_write_units_per_job": round(u.write_units / n, 3),
        "index_write_units_per_job": round(u.index_write_units / n, 3),
        "read_units_per_job": round((u.read_units + u.index_read_units) / n, 3),
    })
}

/// Write units the producer spends per job, measured by itself on a fresh ledger.
async fn producer_units(opts: &ScaleOpts) -> anyhow::Result<Value> {
    let n = 10_000;
    let ledger = MemoryLedger::new().with_model(Limits::AWS);
    let p = Producer::new(ledger, MemoryQueue::new(), Arc::new(Config::default()));
    let valid = p
        .prepare(request_file("probe", n, opts.payload_bytes))
        .await?;
    p.submit(&valid).await?;
    let u = p.ledger().usage().unwrap_or_default();
    Ok(usage_json(&u, n as f64))
}

/// The request: a range of `n` jobs whose payloads are `bytes` long.
fn request_file(id: &str, n: usize, bytes: usize) -> fleet_producer::CheckedRequest {
    // A range job's payload is {"range": {...}, "params": ...}: the padding makes it `bytes`.
    let pad = bytes.saturating_sub(60);
    let body = json!({
        "request_id": id,
        "job_type": "bench",
        "range": {"start": 0, "end": n, "chunk": 1},
        "params": {"pad": "x".repeat(pad)},
    });
    fleet_producer::request::parse(&body.to_string())
        .and_then(fleet_producer::request::check)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the scenario on a paused current-thread runtime.
pub fn scale(opts: &ScaleOpts) -> anyhow::Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(run(opts))
}

async fn run(opts: &ScaleOpts) -> anyhow::Result<Value> {
    let n = opts.jobs;
    let latency = Latency::model();
    let scaled: Vec<u64> = durations(n, opts.sigma, opts.seed)
        .into_iter()
        .map(|d| d * opts.median_ms / 1000)
        .collect();
    let config = replica_config(opts);
    let ledger = Arc::new(
        MemoryLedger::new()
            .with_model(Limits::AWS)
            .with_index_shards(config.ledger.index_shards),
    );
    let queue = Arc::new(MemoryQueue::new().with_in_flight_limit(SQS_IN_FLIGHT_LIMIT));
    let slow_ledger = Arc::new(Slow::new(ledger.clone(), latency));
    let slow_queue = Arc::new(Slow::new(queue.clone(), latency));
    let job = Arc::new(ScaleJob {
        durations: Arc::new(scaled.clone()),
        fail_every: (opts.fail_ratio > 0.0).then(|| (1.0 / opts.fail_ratio).round() as usize),
        overhead: latency.invoke,
        succeeded: AtomicUsize::new(0),
        invocations: AtomicUsize::new(0),
        ends: Mutex::new(Vec::with_capacity(n)),
        began: tokio::time::Instant::now(),
    });
    let config = Arc::new(config);
    let cpu0 = cpu_seconds();
    let wall0 = std::time::Instant::now();
    let began = tokio::time::Instant::now();
    let shutdown = CancellationToken::new();
    let hard = CancellationToken::new();
    let mut replicas = Vec::new();
    for r in 0..opts.replicas {
        let parts = Parts {
            queue: slow_queue.clone(),
            dead_letters: Arc::new(Slow::new(Arc::new(MemoryQueue::new()), latency)),
            ledger: slow_ledger.clone(),
            dispatcher: job.clone(),
            tasks: Arc::new(NoTasks),
        };
        let engine = Arc::new(
            Engine::new(parts, config.clone(), format!("replica-{r}")).with_clock(Clock::tokio()),
        );
        replicas.push(tokio::spawn(engine.run(shutdown.clone(), hard.clone())));
    }
    // The producer submits while the replicas run: its first messages go out at once.
    let producer_queue = Slow::new(queue.clone(), latency);
    let producer_calls = producer_queue.calls.clone();
    let producer = Producer::new(
        Slow::new(ledger.clone(), latency),
        producer_queue,
        Arc::new({
            let mut c = Config::default();
            c.ledger.max_job_shards = opts.max_job_shards;
            c.limits.window = opts.window;
            c
        }),
    );
    let valid = producer
        .prepare(request_file("scale", n, opts.payload_bytes))
        .await?;
    // When the first job starts, while the submission goes on.
    let first_started = {
        let job = job.clone();
        tokio::spawn(async move {
            while job.invocations.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            began.elapsed().as_secs_f64()
        })
    };
    let submit = producer.submit(&valid).await?;
    let submitted_s = began.elapsed().as_secs_f64();
    let first_started_s = first_started.await?;
    let mut peak_queue_in_flight = 0;
    while job.succeeded.load(Ordering::Relaxed) < n {
        peak_queue_in_flight = peak_queue_in_flight.max(queue.in_flight());
        tokio::time::sleep(Duration::from_millis(500)).await;
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(6 * 3600),
            "{} of {n} jobs succeeded in six simulated hours",
            job.succeeded.load(Ordering::Relaxed)
        );
    }
    let makespan_s = job
        .ends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .fold(0.0, f64::max);
    // Wait for the last outcomes' commits to land (throttled ones back off), then read what
    // a user reads. The waiting's own reads are not counted in the figures.
    let settling = ledger.usage().unwrap_or_default();
    let settled_at = began.elapsed();
    while !producer.status("scale").await?.done {
        anyhow::ensure!(
            began.elapsed() < settled_at + Duration::from_secs(600),
            "the counters did not reach {n} finished jobs ten simulated minutes after the last \
             job ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let waited = ledger.usage().unwrap_or_default();
    // The sweepers check the last releases' records once the queue's frontier is
    // `recover_secs` past them: their reads and deletes are part of what the run costs (the
    // wait looks without a metered call).
    while ledger.release_records() > 0 {
        anyhow::ensure!(
            began.elapsed() < settled_at + Duration::from_secs(900),
            "{} release records were still unchecked fifteen simulated minutes after the last \
             job ended",
            ledger.release_records()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = ledger.usage().unwrap_or_default();
    // What the status wait read is left out of the figures.
    let waited = waited.since(&settling);
    let status = producer.status("scale").await?;
    let after_status = ledger.usage().unwrap_or_default();
    let page = producer.jobs_page("scale", None, None, 100, false).await?;
    let after_page = ledger.usage().unwrap_or_default();
    anyhow::ensure!(status.done, "counters: {status:?}");
    anyhow::ensure!(
        status.count(fleet_shared::state::JobState::Succeeded) as usize == n,
        "counters say {status:?}, {n} jobs succeeded"
    );
    anyhow::ensure!(page.items.len() == 100, "a page of {}", page.items.len());
    let total = before.since(&waited);
    shutdown.cancel();
    hard.cancel();
    for r in replicas {
        let _ = r.await;
    }
    let wall_s = wall0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    let ideal_s = ideal_ms(&scaled, opts.in_flight) / 1000.0;
    let greedy_s = greedy_makespan_ms(&scaled, opts.in_flight) as f64 / 1000.0;
    let nf = n as f64;
    let invocations = job.invocations.load(Ordering::Relaxed) as f64;
    let sqs_requests =
        (slow_queue.calls.load(Ordering::Relaxed) + producer_calls.load(Ordering::Relaxed)) as f64;
    // The list prices the product estimates requests' costs with (`[prices]`'s defaults;
    // Lambda compute is not included: it depends on the jobs).
    let prices = fleet_shared::config::PricesConfig::default();
    let usd = |units: f64, price: f64| units / 1e6 * price;
    let per_million = 1e6 / nf;
    let dynamo_write_usd = usd(
        total.write_units + total.index_write_units,
        prices.dynamodb_write_units_per_million,
    ) * per_million;
    let dynamo_read_usd = usd(
        total.read_units + total.index_read_units,
        prices.dynamodb_read_units_per_million,
    ) * per_million;
    let sqs_usd = usd(sqs_requests, prices.sqs_requests_per_million) * per_million;
    let lambda_usd = usd(invocations, prices.lambda_requests_per_million) * per_million;
    let hot = |k: &Option<(String, f64)>| {
        k.as_ref().map_or(
            json!(null),
            |(key, v)| json!({"key": key, "units_per_sec": round(*v, 1)}),
        )
    };
    let mut out = json!({
        "scenario": "scale",
        "jobs": n,
        "in_flight": opts.in_flight,
        "replicas": opts.replicas,
        "median_ms": opts.median_ms,
        "sigma": opts.sigma,
        "payload_bytes": opts.payload_bytes,
        "window": opts.window,
        "fail_ratio": opts.fail_ratio,
        "retry_secs": opts.retry_secs,
        "submitted_s": round(submitted_s, 1),
        "first_job_started_s": round(first_started_s, 2),
        "submit": {"written": submit.written, "sent": submit.sent},
        "makespan_s": round(makespan_s, 1),
        "ideal_s": round(ideal_s, 1),
        "greedy_makespan_s": round(greedy_s, 1),
        "vs_greedy": round(greedy_s / makespan_s, 4),
        "throttled_writes": total.throttled_writes,
        "throttled_reads": total.throttled_reads,
        "items_over_400kb": total.too_large,
        "hottest_table_key": hot(&total.hottest_key),
        "hottest_index_key": hot(&total.hottest_index_key),
        "hottest_read_key": hot(&total.hottest_read_key),
        "status_read_units": round(after_status.read_units + after_status.index_read_units - before.read_units - before.index_read_units, 2),
        "status_read_calls": after_status.read_calls - before.read_calls,
        "jobs_page_read_units": round(after_page.read_units + after_page.index_read_units - after_status.read_units - after_status.index_read_units, 2),
        "peak_queue_in_flight": peak_queue_in_flight.max(queue.stats().peak_in_flight),
        "over_limit_receives": queue.stats().over_limit_receives,
        "invocations_per_job": round(invocations / nf, 3),
        "sqs_requests_per_job": round(sqs_requests / nf, 3),
        "usd_per_million_jobs": {
            "dynamodb_writes": round(dynamo_write_usd, 2),
            "dynamodb_reads": round(dynamo_read_usd, 2),
            "sqs": round(sqs_usd, 2),
            "lambda_requests": round(lambda_usd, 2),
            "total": round(dynamo_write_usd + dynamo_read_usd + sqs_usd + lambda_usd, 2),
            "prices": prices.as_of,
        },
        "cpu_s": round(cpu_s, 1),
        "wall_s": round(wall_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    });
    let mut fields: HashMap<String, Value> = HashMap::new();
    if let Value::Object(u) = usage_json(&total, nf) {
        fields.extend(u);
    }
    if let Value::Object(u) = producer_units(opts).await? {
        fields.insert("producer".into(), Value::Object(u));
    }
    if let Value::Object(o) = &mut out {
        o.extend(fields);
    }
    Ok(out)
}
