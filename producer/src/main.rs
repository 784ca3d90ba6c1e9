//! `fleet-producer`: submit requests and follow them.

mod api;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_producer::{Producer, Status, request};
use std::sync::Arc;

use fleet_shared::config::Config;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::message::Target;
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::state::JobState;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Fleet producer: submit requests of jobs and follow them"
)]
struct Cli {
    /// Configuration file (TOML); default FLEET_CONFIG, else built-in defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log lines as `human` text or `json` objects (with request and job ids).
    #[arg(long, global = true, env = "FLEET_LOG_FORMAT", default_value = "human")]
    log_format: fleet_shared::cli::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a request file ('-' reads stdin). Prints the request id.
    Submit {
        file: PathBuf,
        /// Print a JSON object: request_id, jobs, created, written, sent.
        #[arg(long)]
        json: bool,
    },
    /// Show a request's jobs per state.
    Status {
        request_id: String,
        /// Print a JSON object: request_id, total, states, done, attempts.
        #[arg(long)]
        json: bool,
        /// Follow the request until every job is finished.
        #[arg(long)]
        watch: bool,
        /// Seconds between updates with --watch.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Count the jobs from their items (reads every job of the request) and correct the
        /// request's counters by the difference.
        #[arg(long, conflicts_with = "watch")]
        recount: bool,
    },
    /// List a request's jobs: state, attempts, target, routing reason, last error. Jobs are
    /// read a page at a time (by ledger partition, then index).
    Jobs {
        request_id: String,
        /// Only jobs in this state (PENDING, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED).
        #[arg(long)]
        state: Option<JobState>,
        /// One JSON object per line, with the attempt history.
        #[arg(long)]
        json: bool,
        /// Start from this cursor (printed on stderr after each page with --limit).
        #[arg(long)]
        cursor: Option<String>,
        /// Print at most this many jobs, then the cursor of the next page on stderr.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print a succeeded job's result (read from S3 when it was too large for the ledger).
    Result { job_id: String },
    /// Cancel a request: none of its jobs starts after this returns; running ones finish.
    Cancel {
        request_id: String,
        /// Also stop jobs running in ECS tasks (or local processes); Lambda invocations
        /// cannot be stopped and finish.
        #[arg(long)]
        stop_running: bool,
        /// Print a JSON object: request_id, cancelled_at_ms, stop_running, states.
        #[arg(long)]
        json: bool,
    },
    /// Delete a finished request's payloads kept in S3 (claim_check.prefix). An S3 lifecycle
    /// rule on the prefix does the same for requests nobody cleans up.
    Cleanup {
        request_id: String,
        /// Delete even if the request still has unfinished jobs (they then fail to read their
        /// payloads).
        #[arg(long)]
        force: bool,
    },
    /// Inspect and replay the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Serve the HTTP API (submit, status, cancel, failures; see producer/openapi.json) with
    /// /metrics, /healthz and /readyz, until SIGTERM or SIGINT.
    Serve {
        /// Address to listen on; port 0 picks a free port. The bound address is printed on
        /// stdout as `listening on ADDR`.
        #[arg(long, env = "FLEET_API_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Largest request body accepted, in bytes; larger ones get 413.
        #[arg(long, env = "FLEET_API_MAX_BODY_BYTES", default_value_t = api::DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List failed jobs: a request's, from the ledger (every one, a page at a time); without
    /// --request, a look at the dead-letter queue itself (up to --limit messages).
    List {
        /// Only this request's jobs (read from the ledger's index of failed jobs).
        #[arg(long = "request")]
        request_id: Option<String>,
        /// Without --request: messages of the dead-letter queue to read at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send one request's failed jobs back to the jobs queue with fresh attempts (found in
    /// the ledger; the dead-letter queue keeps its messages as the archive).
    Redrive {
        #[arg(long = "request")]
        request_id: String,
        /// Attempts each job gets from now (default: the configured limit for its job type).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        max_attempts: Option<u32>,
        /// Run the jobs on this target from now on.
        #[arg(long, value_enum)]
        target: Option<TargetArg>,
        /// Print a JSON object: request_id, redriven, skipped.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Lambda,
    Ecs,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Lambda => Target::Lambda,
            TargetArg::Ecs => Target::Ecs,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet_shared::cli::init_logging("warn", cli.log_format);
    fleet_shared::cli::run_main("fleet-producer", real_main(cli))
}

async fn producer(config: &Arc<Config>, with_dead_letters: bool) -> anyhow::Result<Producer> {
    let sdk = fleet_shared::aws::sdk_config(&config.aws).await;
    let sqs = fleet_shared::aws::sqs(&sdk);
    let queue = SqsQueue::resolve(sqs.clone(), &config.queue.jobs).await?;
    let ledger = DynamoLedger::open(
        fleet_shared::aws::dynamodb(&sdk),
        &config.ledger.table,
        config.ledger.index_shards,
    )
    .await?
    .with_ttl(config.ledger.ttl())
    .with_history_keep(config.ledger.history_keep);
    let p = Producer::new(ledger, queue, config.clone()).with_s3(fleet_shared::aws::s3(&sdk));
    Ok(if with_dead_letters {
        p.with_dead_letters(SqsQueue::resolve(sqs, &config.queue.dead_letter).await?)
    } else {
        p
    })
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    match cli.command {
        Command::Serve {
            listen,
            max_body_bytes,
        } => serve(&config, listen, max_body_bytes).await?,
        Command::Submit { file, json } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the request from stdin")?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            // Everything that needs no AWS call is checked before any; a source prefix is
            // listed; nothing is written unless every job passed.
            let file_request = request::parse(&text)
                .and_then(|f| request::plan(&f).map(|_| f))
                .with_context(|| format!("invalid request file {}", file.display()))?;
            let p = producer(&config, false).await?;
            let valid = p
                .prepare(file_request)
                .await
                .with_context(|| format!("invalid request file {}", file.display()))?;
            let report = p.submit(&valid).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.request_id);
            }
        }
        Command::Status {
            request_id,
            json,
            watch,
            interval,
            recount,
        } => {
            let p = producer(&config, false).await?;
            if watch {
                if !(interval.is_finite() && interval > 0.0) {
                    anyhow::bail!("--interval must be a positive number of seconds");
                }
                follow(&p, &request_id, Duration::from_secs_f64(interval)).await?;
            }
            let status = if recount {
                p.recount(&request_id).await?
            } else {
                p.status(&request_id).await?
            };
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else if !watch {
                print_status(&status);
            }
        }
        Command::Jobs {
            request_id,
            state,
            json,
            cursor,
            limit,
        } => {
            let p = producer(&config, false).await?;
            let mut cursor = cursor;
            let mut left = limit.unwrap_or(usize::MAX);
            loop {
                let page = p
                    .jobs_page(&request_id, state, cursor.as_deref(), left.min(100), json)
                    .await?;
                for j in &page.items {
                    if json {
                        println!("{}", serde_json::to_string(j)?);
                    } else {
                        println!(
                            "{}  {}  attempts {}  {}  {}  {}",
                            j.job_id,
                            j.state,
                            j.attempts,
                            j.target.as_deref().unwrap_or("-"),
                            j.reason.as_deref().unwrap_or("-"),
                            j.last_error.as_deref().unwrap_or("")
                        );
                    }
                }
                left = left.saturating_sub(page.items.len());
                cursor = page.next;
                if cursor.is_none() || left == 0 {
                    break;
                }
            }
            if let Some(c) = cursor {
                eprintln!("next page: --cursor {c}");
            }
        }
        Command::Result { job_id } => {
            let p = producer(&config, false).await?;
            match p.result(&job_id).await? {
                Some(bytes) => {
                    std::io::stdout().write_all(&bytes)?;
                    println!();
                }
                None => anyhow::bail!("job {job_id} has no recorded result"),
            }
        }
        Command::Cancel {
            request_id,
            stop_running,
            json,
        } => {
            let report = producer(&config, false)
                .await?
                .cancel(&request_id, stop_running)
                .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let count = |s: &str| report.states.get(s).copied().unwrap_or(0);
                println!(
                    "request {} cancelled{}: no job starts from now; {} running will {}; {} not started become CANCELLED as replicas receive them",
                    report.request_id,
                    if report.stop_running {
                        " (stopping running tasks)"
                    } else {
                        ""
                    },
                    count("RUNNING"),
                    if report.stop_running {
                        "stop if in tasks, else finish"
                    } else {
                        "finish"
                    },
                    count("PENDING") + count("RETRYING"),
                );
            }
        }
        Command::Cleanup { request_id, force } => {
            let deleted = producer(&config, false)
                .await?
                .cleanup(&request_id, force)
                .await?;
            println!("request {request_id}: {deleted} payload object(s) deleted");
        }
        Command::Dlq(DlqCommand::List {
            request_id,
            limit,
            json,
        }) => {
            let p = producer(&config, request_id.is_none()).await?;
            let mut count = 0usize;
            let mut print = |l: &fleet_producer::dlq::Listed| -> anyhow::Result<()> {
                count += 1;
                if json {
                    println!("{}", serde_json::to_string(l)?);
                } else {
                    println!(
                        "{}  {}  attempts {}  {}{}",
                        l.job_id
                            .as_deref()
                            .or(l.message_id.as_deref())
                            .unwrap_or("?"),
                        l.error_class,
                        l.attempts,
                        l.error,
                        match l.copies {
                            Some(n) if n > 1 => format!("  ({n} copies)"),
                            _ => String::new(),
                        }
                    );
                }
                Ok(())
            };
            match &request_id {
                Some(id) => {
                    let mut cursor: Option<String> = None;
                    loop {
                        let page = p.failures_page(id, cursor.as_deref(), 100).await?;
                        for l in &page.items {
                            print(l)?;
                        }
                        cursor = page.next;
                        if cursor.is_none() {
                            break;
                        }
                    }
                }
                None => {
                    for l in &p.dlq_peek(limit).await? {
                        print(l)?;
                    }
                }
            }
            if !json {
                println!("{count} failed job(s)");
            }
        }
        Command::Dlq(DlqCommand::Redrive {
            request_id,
            max_attempts,
            target,
            json,
        }) => {
            let report = producer(&config, false)
                .await?
                .dlq_redrive(&request_id, max_attempts, target.map(Into::into))
                .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "request {}: {} job(s) redriven",
                    report.request_id, report.redriven
                );
                for s in &report.skipped {
                    println!("  left {}: {}", s.job_id, s.reason);
                }
            }
        }
    }
    Ok(())
}

/// `serve`: the HTTP API with the metrics endpoints on one port, until SIGTERM or SIGINT
/// (requests in progress finish).
async fn serve(
    config: &Arc<Config>,
    listen: std::net::SocketAddr,
    max_body_bytes: usize,
) -> anyhow::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let metrics = fleet_shared::metrics::install(stop.clone())?;
    let health =
        fleet_shared::metrics::Health::new(Duration::from_secs(config.metrics.ready_window_secs));
    let sdk = fleet_shared::aws::sdk_config(&config.aws).await;
    let api = Arc::new(api::Api::new(
        producer(config, false).await?,
        health.clone(),
        metrics,
        max_body_bytes,
    ));
    // Probes often enough that an idle API stays ready within the window.
    let every = Duration::from_secs((config.metrics.ready_window_secs / 4).clamp(1, 30));
    tokio::spawn(api::keep_ready(
        api.clone(),
        fleet_shared::aws::sqs(&sdk),
        config.queue.jobs.clone(),
        every,
        stop.clone(),
    ));
    let signalled = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, api::router(api))
        .with_graceful_shutdown(async move {
            signalled.await;
            health.set_draining();
            tracing::info!("shutting down: finishing the requests in progress");
        })
        .await
        .context("the HTTP API stopped")?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed at once (so a signal that comes
/// before the server runs is not lost to the default action).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn print_status(s: &Status) {
    println!(
        "request {}: {}/{} finished{}",
        s.request_id,
        s.finished(),
        s.total,
        if s.done { " (done)" } else { "" }
    );
    for st in JobState::ALL {
        println!("  {:<10} {}", st.as_str(), s.count(st));
    }
    println!("  attempts   {}", s.attempts);
}

fn progress_line(s: &Status, rate: f64) -> String {
    let states: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|st| s.count(*st) > 0)
        .map(|st| format!("{} {}", st.as_str(), s.count(st)))
        .collect();
    let remaining = s.total.saturating_sub(s.finished());
    let eta = if rate > 0.0 && remaining > 0 {
        format!(", eta {:.0}s", f64::from(remaining) / rate)
    } else {
        String::new()
    };
    format!(
        "{}/{} finished [{}] {:.1} jobs/s{}",
        s.finished(),
        s.total,
        states.join(", "),
        rate,
        eta
    )
}

/// Prints progress until the request is done: one updating line on a terminal, one line per
/// update otherwise.
async fn follow(p: &Producer, request_id: &str, interval: Duration) -> anyhow::Result<()> {
    // On a terminal: a live bar (on stderr, as indicatif draws it); otherwise plain lines.
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40.cyan/blue} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let start = Instant::now();
    let first = p.status(request_id).await?.finished();
    loop {
        let s = p.status(request_id).await?;
        let secs = start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            f64::from(s.finished() - first.min(s.finished())) / secs
        } else {
            0.0
        };
        let line = progress_line(&s, rate);
        match &bar {
            Some(bar) => {
                bar.set_length(u64::from(s.total));
                bar.set_position(u64::from(s.finished()));
                bar.set_message(line);
            }
            None => {
                println!("{line}");
                std::io::stdout().flush().ok();
            }
        }
        if s.done {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}
