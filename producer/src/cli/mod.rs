//! The command line: its arguments (clap), one module per command, and the connection to
//! the ledger, the queues and S3 that the commands share. Each command is a short function
//! over the library's [`Producer`]; what it prints is all it adds.

mod cancel;
mod dlq;
mod jobs;
mod limit;
mod results;
mod serve;
mod status;
mod submit;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use fleet_producer::Producer;
use fleet_shared::config::Config;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::message::Target;
use fleet_shared::queue::sqs::SqsQueue;
use fleet_shared::state::JobState;

pub use cancel::{cmd_cancel, cmd_cleanup};
pub use dlq::{cmd_dlq_list, cmd_dlq_redrive};
pub use jobs::{cmd_jobs, cmd_result};
pub use limit::cmd_limit;
pub use results::{cmd_export, cmd_results};
pub use serve::cmd_serve;
pub use status::cmd_status;
pub use submit::cmd_submit;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Fleet producer: submit requests of jobs and follow them"
)]
pub struct Cli {
    /// Configuration file (TOML); default FLEET_CONFIG, else built-in defaults.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log lines as `human` text or `json` objects (with request and job ids).
    #[arg(long, global = true, env = "FLEET_LOG_FORMAT", default_value = "human")]
    pub log_format: fleet_shared::cli::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Print a request's results: one line per finished job, a succeeded job's result and a
    /// failed job's error, in ledger order, read a page at a time (results kept in S3 are
    /// fetched). Unfinished jobs are left out.
    Results {
        request_id: String,
        /// Only jobs in this final state (SUCCEEDED, FAILED, CANCELLED).
        #[arg(long)]
        state: Option<JobState>,
        /// One JSON object per line: job_id, index, state, attempts, and result or
        /// error_class and error.
        #[arg(long)]
        json: bool,
    },
    /// Write a finished request's results to S3: JSON Lines files per final state (at most
    /// 8 MiB each) under the prefix, then manifest.json listing them with their lines and
    /// bytes. Exporting again writes the same objects.
    Export {
        request_id: String,
        /// Where: s3://bucket/prefix/.
        #[arg(long)]
        to: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// Change a running request's max_concurrency (its window): more jobs are released at
    /// once when it grows; when it shrinks, running jobs finish and no more start until fewer
    /// than the new limit run.
    Limit {
        request_id: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(fleet_shared::config::MAX_WINDOW)))]
        max_concurrency: u32,
        /// Print a JSON object: request_id, max_concurrency, released.
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
    /// Serve the HTTP API (submit, status, cancel, limit, failures; see producer/openapi.json) with
    /// /metrics, /healthz and /readyz, until SIGTERM or SIGINT.
    Serve {
        /// Address to listen on; port 0 picks a free port. The bound address is printed on
        /// stdout as `listening on ADDR`.
        #[arg(long, env = "FLEET_API_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Largest request body accepted, in bytes; larger ones get 413.
        #[arg(long, env = "FLEET_API_MAX_BODY_BYTES", default_value_t = crate::api::DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Serve the web console under /console/ (also `api.console`, env FLEET_API_CONSOLE).
        #[arg(long)]
        console: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
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
pub enum TargetArg {
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

/// The producer on the configured ledger table, jobs queue and S3.
pub async fn connect(config: &Arc<Config>) -> anyhow::Result<Producer> {
    let sdk = fleet_shared::aws::sdk_config(&config.aws).await;
    connect_with(&sdk, config).await
}

/// [`connect`], with the dead-letter queue too (for `dlq list` without a request).
pub async fn connect_with_dead_letters(config: &Arc<Config>) -> anyhow::Result<Producer> {
    let sdk = fleet_shared::aws::sdk_config(&config.aws).await;
    let p = connect_with(&sdk, config).await?;
    let dlq = SqsQueue::resolve(fleet_shared::aws::sqs(&sdk), &config.queue.dead_letter).await?;
    Ok(p.with_dead_letters(dlq))
}

/// The producer on the clients of an SDK configuration.
async fn connect_with(
    sdk: &aws_config::SdkConfig,
    config: &Arc<Config>,
) -> anyhow::Result<Producer> {
    let queue = SqsQueue::resolve(fleet_shared::aws::sqs(sdk), &config.queue.jobs).await?;
    let ledger = DynamoLedger::open(
        fleet_shared::aws::dynamodb(sdk),
        &config.ledger.table,
        config.ledger.index_shards,
    )
    .await?
    .with_ttl(config.ledger.ttl())
    .with_history_keep(config.ledger.history_keep);
    Ok(Producer::new(ledger, queue, config.clone()).with_s3(fleet_shared::aws::s3(sdk)))
}
