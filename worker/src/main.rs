//! `fleet-worker`: one coordinator replica.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_shared::config::Config;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, Parser)]
#[command(version, about = "Fleet worker: runs jobs from the jobs queue")]
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
    /// Create the jobs queue, the dead-letter queue and the ledger table (idempotent).
    Init,
    /// Run one replica until SIGTERM or SIGINT, then drain and exit 0.
    Run,
    /// Exit 0 when the replica in this container answers `/healthz` on `metrics.listen`
    /// (the container's health check; no curl needed in the image).
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet_shared::cli::init_logging("info", cli.log_format);
    fleet_shared::cli::run_main("fleet-worker", real_main(cli))
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    if let Command::Health = cli.command {
        let listen = config
            .metrics
            .listen
            .ok_or_else(|| anyhow::anyhow!("metrics.listen (FLEET_METRICS_LISTEN) is not set"))?;
        return fleet_shared::metrics::probe_health(listen).await;
    }
    let sdk = fleet_shared::aws::sdk_config(&config.aws).await;
    match cli.command {
        Command::Health => {}
        Command::Init => {
            let r = fleet_worker::init::init(&sdk, &config)
                .await
                .context("init")?;
            println!("jobs queue:        {}", r.jobs_queue_url);
            println!("dead-letter queue: {}", r.dead_letter_queue_url);
            println!("outcomes queue:    {}", r.outcomes_queue_url);
            println!(
                "ledger table:      {} ({})",
                r.table,
                if r.table_created { "created" } else { "exists" }
            );
        }
        Command::Run => {
            let shutdown = CancellationToken::new();
            let hard_stop = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone(), hard_stop.clone()));
            fleet_worker::run(&sdk, config, shutdown, hard_stop).await?;
        }
    }
    Ok(())
}

/// First SIGTERM or SIGINT: drain. A second one: release what is left and stop now.
async fn watch_signals(shutdown: CancellationToken, hard_stop: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for token in [&shutdown, &hard_stop] {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "signal received");
        token.cancel();
    }
}
