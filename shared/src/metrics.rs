//! The metric catalog (every metric Fleet exports: name, type, labels, meaning, buckets) and
//! the small HTTP server each long-running process serves it on, beside `/healthz` and
//! `/readyz`.
//!
//! Code records metrics with the `metrics` macros and the constants here; without an
//! installed recorder (unit tests, one-shot commands) the calls do nothing. Labels stay
//! low-cardinality: target, job_type, outcome, error_class, reason, state; never request or
//! job ids.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio_util::sync::CancellationToken;

/// The kind of a metric, as Prometheus shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Histogram bucket upper bounds, seconds (empty for counters and gauges).
    pub buckets: &'static [f64],
    /// The process that exports it.
    pub exporter: &'static str,
}

// Worker: messages and claims.
pub const MESSAGES_RECEIVED: &str = "fleet_messages_received_total";
pub const EMPTY_RECEIVES: &str = "fleet_empty_receives_total";
pub const JOBS_CLAIMED: &str = "fleet_jobs_claimed_total";
pub const CLAIM_CONFLICTS: &str = "fleet_claim_conflicts_total";
// Worker: attempts and outcomes.
pub const JOBS_DISPATCHED: &str = "fleet_jobs_dispatched_total";
pub const JOBS_COMPLETED: &str = "fleet_jobs_completed_total";
pub const RETRIES: &str = "fleet_retries_total";
pub const DEAD_LETTERED: &str = "fleet_dead_lettered_total";
pub const REQUESTS_FAILED: &str = "fleet_requests_failed_total";
pub const REQUESTS_FINISHED: &str = "fleet_requests_finished_total";
pub const EVENTS_SENT: &str = "fleet_events_sent_total";
pub const EVENT_ERRORS: &str = "fleet_event_errors_total";
pub const COST_USD: &str = "fleet_cost_usd";
pub const THROTTLES: &str = "fleet_throttles_total";
pub const JOBS_RELEASED: &str = "fleet_jobs_released_total";
pub const IN_FLIGHT: &str = "fleet_in_flight";
pub const HANDED_TO_LAMBDA: &str = "fleet_handed_to_lambda";
pub const INVOCATION_RECORDS: &str = "fleet_invocation_records_total";
pub const CONCURRENCY_LIMIT: &str = "fleet_concurrency_limit";
pub const JOB_TYPE_CONCURRENCY_LIMIT: &str = "fleet_job_type_concurrency_limit";
pub const JOB_DURATION: &str = "fleet_job_duration_seconds";
pub const DISPATCH_LATENCY: &str = "fleet_dispatch_latency_seconds";
pub const QUEUE_WAIT: &str = "fleet_queue_wait_seconds";
pub const ROUTING_DECISIONS: &str = "fleet_routing_decisions_total";
// Worker: crash safety.
pub const LEASES_LOST: &str = "fleet_leases_lost_total";
pub const STALE_WRITES_REJECTED: &str = "fleet_stale_writes_rejected_total";
pub const SWEEPER_REQUEUED: &str = "fleet_sweeper_requeued_total";
pub const SWEEPER_ADOPTED: &str = "fleet_sweeper_adopted_total";
pub const LEDGER_ERRORS: &str = "fleet_ledger_errors_total";
// Worker: the queue as the sweeper sees it.
pub const QUEUE_BACKLOG: &str = "fleet_queue_backlog";
pub const OLDEST_WAITING_JOB: &str = "fleet_oldest_waiting_job_seconds";
pub const DRAINING: &str = "fleet_draining";
// Producer.
pub const JOBS_SUBMITTED: &str = "fleet_jobs_submitted_total";
pub const ENQUEUE_FAILURES: &str = "fleet_enqueue_failures_total";

/// Job durations and queue waits: 0.1 s to 12 hours (SQS's longest visibility; ECS jobs may
/// run longer and land in `+Inf`).
pub const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    7200.0, 14400.0, 28800.0, 43200.0,
];

/// Engine-side latencies: 1 ms to 5 minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

const W: &str = "fleet-worker";
const P: &str = "fleet-producer";

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
    exporter: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
        buckets: &[],
        exporter,
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    buckets: &'static [f64],
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        labels,
        help,
        buckets,
        exporter: W,
    }
}

use Kind::{Counter, Gauge};

/// Every metric Fleet exports. The README's catalog, the alert rules and the dashboard are
/// checked against this list.
pub const CATALOG: &[Metric] = &[
    metric(
        MESSAGES_RECEIVED,
        Counter,
        &[],
        "Messages received from the jobs queue.",
        W,
    ),
    metric(
        EMPTY_RECEIVES,
        Counter,
        &[],
        "Long polls that returned no message.",
        W,
    ),
    metric(
        JOBS_CLAIMED,
        Counter,
        &[],
        "Jobs claimed in the ledger (attempts started or taken over).",
        W,
    ),
    metric(
        CLAIM_CONFLICTS,
        Counter,
        &["state"],
        "Claims refused because the job was not claimable: running elsewhere, waiting for its retry time, or finished (state).",
        W,
    ),
    metric(
        JOBS_DISPATCHED,
        Counter,
        &["target"],
        "Attempts started, per target (lambda, ecs).",
        W,
    ),
    metric(
        JOBS_COMPLETED,
        Counter,
        &["target", "outcome"],
        "Terminal outcomes recorded in the ledger: succeeded or failed (attempts exhausted or a permanent error).",
        W,
    ),
    metric(
        RETRIES,
        Counter,
        &["target", "error_class"],
        "Failed attempts that will be retried, per error class (throttled, transient, job_failure, timeout).",
        W,
    ),
    metric(
        DEAD_LETTERED,
        Counter,
        &["error_class"],
        "Messages sent to the dead-letter queue, per error class (refused messages included).",
        W,
    ),
    metric(
        REQUESTS_FAILED,
        Counter,
        &[],
        "Requests this replica marked FAILED as a whole: more of their jobs failed than options.tolerated_failure_percent or _count allow.",
        W,
    ),
    metric(
        REQUESTS_FINISHED,
        Counter,
        &["state"],
        "Requests this replica recorded finished and sent the completion event of (with their results exported when asked), per final state (FINISHED, CANCELLED, FAILED).",
        W,
    ),
    metric(
        EVENTS_SENT,
        Counter,
        &["target"],
        "Completion events sent, per target (eventbridge, sns).",
        W,
    ),
    metric(
        EVENT_ERRORS,
        Counter,
        &[],
        "Finished requests whose event (or results export) failed; a sweeper tries again once the sender's turn ends.",
        W,
    ),
    metric(
        COST_USD,
        Gauge,
        &["target", "job_type"],
        "Estimated cost in US dollars of the attempts this replica recorded, per target and job type, at the configured [prices]; only ever grows while the replica runs (a gauge, since Prometheus counters from this exporter count whole numbers: use increase() or rate() on it as on a counter).",
        W,
    ),
    metric(
        THROTTLES,
        Counter,
        &["target"],
        "Attempts the target throttled (Lambda 429, ECS throttling).",
        W,
    ),
    metric(
        JOBS_RELEASED,
        Counter,
        &[],
        "Attempts handed back unfinished (at shutdown, or after the lease ran out unrenewed); they do not count as attempts.",
        W,
    ),
    metric(
        IN_FLIGHT,
        Gauge,
        &["target"],
        "Attempts running now, per target.",
        W,
    ),
    metric(
        HANDED_TO_LAMBDA,
        Gauge,
        &[],
        "Attempts this replica handed to Lambda asynchronously that still hold a permit of its Lambda limit.",
        W,
    ),
    metric(
        INVOCATION_RECORDS,
        Counter,
        &["result"],
        "Invocation records read from the outcomes queue: recorded, stale (a duplicate, or the job was claimed again) or malformed.",
        W,
    ),
    metric(
        CONCURRENCY_LIMIT,
        Gauge,
        &["target"],
        "The current in-flight limit per target (adaptive for Lambda).",
        W,
    ),
    metric(
        JOB_TYPE_CONCURRENCY_LIMIT,
        Gauge,
        &["job_type"],
        "Each replica's in-flight limit per job type: halved when the job itself reports being throttled (its partner API answered 429), raised again as its jobs succeed.",
        W,
    ),
    histogram(
        JOB_DURATION,
        &["target", "job_type"],
        "Duration of finished attempts, seconds.",
        DURATION_BUCKETS,
    ),
    histogram(
        DISPATCH_LATENCY,
        &["target"],
        "From the claim until the target has the job (Invoke sent; RunTask answered), seconds: time spent waiting for a slot, the rate limiter and the launch.",
        LATENCY_BUCKETS,
    ),
    histogram(
        QUEUE_WAIT,
        &[],
        "From the message's enqueue time to its claim, seconds.",
        DURATION_BUCKETS,
    ),
    metric(
        ROUTING_DECISIONS,
        Counter,
        &["target", "reason"],
        "Routing decisions, per target and reason.",
        W,
    ),
    metric(
        LEASES_LOST,
        Counter,
        &[],
        "Attempts this replica gave up because its lease was lost or expired.",
        W,
    ),
    metric(
        STALE_WRITES_REJECTED,
        Counter,
        &[],
        "Ledger writes of this replica refused for a stale fence or owner.",
        W,
    ),
    metric(
        SWEEPER_REQUEUED,
        Counter,
        &[],
        "Jobs whose message the sweeper sent again (looked lost).",
        W,
    ),
    metric(
        SWEEPER_ADOPTED,
        Counter,
        &[],
        "Handed-off tasks the sweeper adopted from a replica whose lease expired.",
        W,
    ),
    metric(
        LEDGER_ERRORS,
        Counter,
        &[],
        "Ledger calls that failed (not refusals).",
        W,
    ),
    metric(
        QUEUE_BACKLOG,
        Gauge,
        &[],
        "Messages in the jobs queue, visible and delayed, as the sweeper last read them.",
        W,
    ),
    metric(
        OLDEST_WAITING_JOB,
        Gauge,
        &[],
        "Age of the longest-waiting unstarted job (PENDING or RETRYING past its retry time), seconds, as the sweeper last read the ledger; 0 when none waits.",
        W,
    ),
    metric(
        DRAINING,
        Gauge,
        &[],
        "1 while the replica drains for shutdown.",
        W,
    ),
    metric(
        JOBS_SUBMITTED,
        Counter,
        &["job_type"],
        "Jobs the producer enqueued.",
        P,
    ),
    metric(
        ENQUEUE_FAILURES,
        Counter,
        &[],
        "Jobs of submissions whose enqueue failed (all of the submission's messages; submitting again is idempotent).",
        P,
    ),
];

/// The catalog entry of `name`, if any (`_bucket`, `_sum` and `_count` series resolve to
/// their histogram).
pub fn lookup(name: &str) -> Option<&'static Metric> {
    CATALOG.iter().find(|m| m.name == name).or_else(|| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))?;
        CATALOG
            .iter()
            .find(|m| m.name == base && m.kind == Kind::Histogram)
    })
}

/// A recorder with the catalog's histogram buckets, each set for its own metric.
pub fn recorder() -> Result<PrometheusRecorder, metrics_exporter_prometheus::BuildError> {
    let mut b = PrometheusBuilder::new();
    for m in CATALOG.iter().filter(|m| m.kind == Kind::Histogram) {
        b = b.set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)?;
    }
    Ok(b.build_recorder())
}

/// Describes every metric to the installed recorder (the `# HELP` lines).
pub fn describe() {
    for m in CATALOG {
        let help = m.help;
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, help),
            Kind::Gauge => metrics::describe_gauge!(m.name, help),
            Kind::Histogram => {
                metrics::describe_histogram!(m.name, metrics::Unit::Seconds, help)
            }
        }
    }
}

/// What `/readyz` reports: whether SQS and DynamoDB were reached recently, and whether the
/// process is draining.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    window: Duration,
    /// Milliseconds since `started` of the last successful call, plus one (0: never).
    sqs: AtomicU64,
    dynamodb: AtomicU64,
    draining: AtomicBool,
}

impl Health {
    /// Ready while both services answered within the last `window`.
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            window,
            sqs: AtomicU64::new(0),
            dynamodb: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        })
    }

    fn stamp(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    pub fn sqs_ok(&self) {
        self.sqs.store(self.stamp(), Ordering::Relaxed);
    }

    pub fn dynamodb_ok(&self) {
        self.dynamodb.store(self.stamp(), Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(DRAINING).set(1.0);
    }

    /// `Ok` when ready, else the reasons.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        self.ready_at(self.stamp())
    }

    fn ready_at(&self, now: u64) -> Result<(), Vec<String>> {
        let window = self.window.as_millis() as u64;
        let mut why = Vec::new();
        if self.draining.load(Ordering::Relaxed) {
            why.push("draining".to_owned());
        }
        for (name, at) in [("sqs", &self.sqs), ("dynamodb", &self.dynamodb)] {
            let at = at.load(Ordering::Relaxed);
            if at == 0 {
                why.push(format!("{name} not reached yet"));
            } else if now.saturating_sub(at) > window {
                why.push(format!(
                    "{name} not reached for {} s",
                    now.saturating_sub(at) / 1000
                ));
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why) }
    }
}

/// Installs the catalog's recorder as the global one, describes the catalog, and keeps the
/// recorder's upkeep running until `stop`. Returns the handle that renders `/metrics`. Once
/// per process: a second call fails.
pub fn install(stop: CancellationToken) -> anyhow::Result<PrometheusHandle> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => upkeep.run_upkeep(),
            }
        }
    });
    Ok(handle)
}

/// Installs the catalog's recorder as the global one and serves `/metrics`, `/healthz` and
/// `/readyz` on `listen` until `stop`. Returns the address bound (port 0 picks one).
pub async fn serve(
    listen: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let handle = install(stop.clone())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {listen}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(handle, health);
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

/// The paths [`router`] serves, all with GET.
pub const PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// `/metrics` (rendered by `handle`), `/healthz` and `/readyz` (from `health`), for a server
/// of its own ([`serve`]) or merged into another router (the producer's HTTP API).
pub fn router<S: Clone + Send + Sync + 'static>(
    handle: PrometheusHandle,
    health: Arc<Health>,
) -> Router<S> {
    Router::new()
        .route(
            PATHS[0],
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
        .route(PATHS[1], get(|| async { "ok\n" }))
        .route(
            PATHS[2],
            get(move || {
                let health = health.clone();
                async move {
                    match health.ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {}\n", why.join("; ")),
                        )
                            .into_response(),
                    }
                }
            }),
        )
}

/// `GET /healthz` on the server listening on `listen` (an unspecified address such as
/// `0.0.0.0` is reached on loopback): `Ok` on 200. The worker image's health check.
pub async fn probe_health(listen: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        head.truncate(n);
        std::io::Result::Ok(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within 5 s"))?
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head);
    if status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        anyhow::bail!(
            "{addr}/healthz answered {:?}",
            status_line.lines().next().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_counters_end_in_total() {
        let mut seen = std::collections::BTreeSet::new();
        for m in CATALOG {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("fleet_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.name
            );
            for l in m.labels {
                assert!(
                    !["request_id", "job_id"].contains(l),
                    "{} has a high-cardinality label {l}",
                    m.name
                );
            }
        }
    }

    /// Every histogram renders as a histogram with exactly its own buckets (a metric without
    /// buckets would render as a summary, and one with another's buckets would be useless).
    #[test]
    fn every_histogram_gets_its_own_buckets() {
        let recorder = recorder().expect("recorder");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for m in CATALOG.iter().filter(|m| m.kind == Kind::Histogram) {
                let labels: Vec<(String, String)> = m
                    .labels
                    .iter()
                    .map(|l| ((*l).to_owned(), "x".to_owned()))
                    .collect();
                metrics::histogram!(m.name, &labels).record(0.3);
            }
        });
        let text = handle.render();
        for m in CATALOG.iter().filter(|m| m.kind == Kind::Histogram) {
            let les: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{}_bucket{{", m.name)))
                .filter_map(|l| {
                    let le = l.split("le=\"").nth(1)?.split('"').next()?;
                    le.parse().ok()
                })
                .filter(|v: &f64| v.is_finite())
                .collect();
            assert_eq!(les, m.buckets, "{}:\n{text}", m.name);
            assert!(
                text.contains(&format!("# TYPE {} histogram", m.name)),
                "{}",
                m.name
            );
        }
        assert!(
            DURATION_BUCKETS.first() == Some(&0.1) && DURATION_BUCKETS.last() == Some(&43200.0)
        );
    }

    #[test]
    fn series_resolve_to_their_metric() {
        assert_eq!(
            lookup("fleet_job_duration_seconds_bucket").map(|m| m.name),
            Some(JOB_DURATION)
        );
        assert_eq!(
            lookup("fleet_jobs_claimed_total").map(|m| m.name),
            Some(JOBS_CLAIMED)
        );
        assert!(lookup("fleet_jobs_claimed_total_bucket").is_none());
        assert!(lookup("fleet_nothing").is_none());
    }

    #[test]
    fn readiness_needs_both_services_and_no_drain() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.ready().unwrap_err().len(), 2);
        h.sqs_ok();
        assert_eq!(h.ready().unwrap_err(), vec!["dynamodb not reached yet"]);
        h.dynamodb_ok();
        assert_eq!(h.ready(), Ok(()));
        h.set_draining();
        assert_eq!(h.ready().unwrap_err(), vec!["draining"]);
        let h = Health::new(Duration::from_secs(60));
        h.sqs_ok();
        h.dynamodb_ok();
        let later = h.stamp() + 61_000;
        assert_eq!(
            h.ready_at(later).unwrap_err(),
            vec!["sqs not reached for 61 s", "dynamodb not reached for 61 s"]
        );
    }
}
