//! `fleet-producer`: submit requests and follow them. `main` parses the command line and
//! starts logging; `real_main` loads the configuration and hands each command to its
//! function in [`cli`], which calls the library.

mod api;
mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fleet_shared::config::Config;

use cli::{Cli, Command, DlqCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet_shared::cli::init_logging("warn", cli.log_format);
    fleet_shared::cli::run_main("fleet-producer", real_main(cli))
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    match cli.command {
        Command::Serve {
            listen,
            max_body_bytes,
            console,
        } => cli::cmd_serve(&config, listen, max_body_bytes, console).await,
        Command::Submit { file, json } => cli::cmd_submit(&config, &file, json).await,
        Command::Status {
            request_id,
            json,
            watch,
            interval,
            recount,
        } => cli::cmd_status(&config, &request_id, json, watch, interval, recount).await,
        Command::Jobs {
            request_id,
            state,
            json,
            cursor,
            limit,
        } => cli::cmd_jobs(&config, &request_id, state, json, cursor, limit).await,
        Command::Result { job_id } => cli::cmd_result(&config, &job_id).await,
        Command::Results {
            request_id,
            state,
            json,
        } => cli::cmd_results(&config, &request_id, state, json).await,
        Command::Export {
            request_id,
            to,
            json,
        } => cli::cmd_export(&config, &request_id, &to, json).await,
        Command::Cancel {
            request_id,
            stop_running,
            json,
        } => cli::cmd_cancel(&config, &request_id, stop_running, json).await,
        Command::Limit {
            request_id,
            max_concurrency,
            json,
        } => cli::cmd_limit(&config, &request_id, max_concurrency, json).await,
        Command::Cleanup { request_id, force } => {
            cli::cmd_cleanup(&config, &request_id, force).await
        }
        Command::Dlq(DlqCommand::List {
            request_id,
            limit,
            json,
        }) => cli::cmd_dlq_list(&config, request_id.as_deref(), limit, json).await,
        Command::Dlq(DlqCommand::Redrive {
            request_id,
            max_attempts,
            target,
            json,
        }) => {
            let target = target.map(Into::into);
            cli::cmd_dlq_redrive(&config, &request_id, max_attempts, target, json).await
        }
    }
}
