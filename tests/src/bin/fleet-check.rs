//! `fleet-check`: the crash-safety checker on its own, over a finished run: the replicas'
//! history logs (`FLEET_HISTORY_LOG` files in one directory), the test job's execution log
//! and the ledger (configured like the binaries: `FLEET_TABLE`, the AWS environment). Prints
//! the figures as one JSON object; exits 1 when a job was lost, recorded twice, overwritten
//! by a stale fence or over its attempt limit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fleet_shared::config::Config;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_tests::checker;

#[derive(Debug, Parser)]
#[command(
    about = "Check a run's history against the ledger: lost, double-terminal, stale writes, re-executions"
)]
struct Cli {
    /// Directory of the replicas' history logs (*.jsonl).
    #[arg(long)]
    history: PathBuf,
    /// The test job's execution log (FLEET_TESTJOB_LOG).
    #[arg(long)]
    executions: PathBuf,
    /// The request whose jobs are checked.
    #[arg(long)]
    request: String,
    /// The attempt limit the jobs ran under.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet_shared::cli::run_main("fleet-check", async move {
        let config = Config::load(None)?;
        let sdk = fleet_shared::aws::sdk_config_from_env().await;
        let ledger = DynamoLedger::new(fleet_shared::aws::dynamodb(&sdk), &config.ledger.table);
        let (submitted, finals) = checker::ledger_finals(&ledger, &cli.request).await?;
        let figures = checker::check(
            &submitted,
            &checker::read_history(&cli.history),
            &fleet_tests::read_executions(&cli.executions),
            &finals,
            cli.max_attempts,
        );
        println!("{}", serde_json::to_string(&figures)?);
        let broken =
            figures.lost + figures.double_terminal + figures.stale_accepted + figures.over_limit;
        if broken > 0 {
            anyhow::bail!("{broken} invariant violations");
        }
        Ok::<(), anyhow::Error>(())
    })
}
