//! `fleet-chaos`: the crash-safety run on the local stack (see `fleet_tests::chaos`). Prints
//! a summary, and as its last line one JSON object with `lost`, `double_terminal`,
//! `stale_accepted`, `stale_rejected`, `reexecutions`, `kills` and `recovery_secs` (and
//! more); exits 1 when an invariant fails.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fleet_tests::chaos::{Options, run};

#[derive(Debug, Parser)]
#[command(
    about = "Kill, pause and scale in worker replicas over a request, then check that nothing was lost or recorded twice"
)]
struct Cli {
    /// Jobs in the request.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Worker replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Seconds between SIGKILLs of a random replica (each one restarted).
    #[arg(long, default_value_t = 20.0)]
    kill_every: f64,
    /// Replicas stopped with SIGTERM and replaced.
    #[arg(long, default_value_t = 1)]
    scale_ins: usize,
    /// Replicas paused past their lease with SIGSTOP, then resumed.
    #[arg(long, default_value_t = 1)]
    pauses: usize,
    /// Share of messages deleted behind the system's back.
    #[arg(long, default_value_t = 0.01)]
    deletes: f64,
    /// Share of messages sent twice.
    #[arg(long, default_value_t = 0.01)]
    duplicates: f64,
    /// Seconds every job may take to finish after the last fault.
    #[arg(long, default_value_t = 300)]
    recovery_bound: u64,
    /// Per-replica in-flight limit.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the run's files (history, execution log, logs) in this directory.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// How the replicas invoke Lambda: `event` (asynchronous, the default) or `sync`. A
    /// pause meets a heartbeat of a job's lease only under `sync`.
    #[arg(long, default_value = "event")]
    invocation: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(cli.kill_every.is_finite() && cli.kill_every > 0.0) || cli.jobs == 0 || cli.replicas == 0 {
        eprintln!("fleet-chaos: --jobs, --replicas and --kill-every must be positive");
        return ExitCode::from(2);
    }
    if !matches!(cli.invocation.as_str(), "event" | "sync") {
        eprintln!("fleet-chaos: --invocation is event or sync");
        return ExitCode::from(2);
    }
    let opts = Options {
        invocation: cli.invocation,
        jobs: cli.jobs,
        replicas: cli.replicas,
        kill_every: Duration::from_secs_f64(cli.kill_every),
        scale_ins: cli.scale_ins,
        pauses: cli.pauses,
        delete_share: cli.deletes,
        duplicate_share: cli.duplicates,
        recovery_bound: Duration::from_secs(cli.recovery_bound),
        concurrency: cli.concurrency,
        seed: cli.seed,
        keep: cli.keep,
        ..Options::default()
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet-chaos: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(run(&opts));
    println!(
        "jobs {} over {} replicas: {} kills ({} SIGKILL, {} scale-in, {} pause), {} deleted, {} duplicated",
        outcome.jobs,
        outcome.replicas,
        outcome.kills,
        outcome.sigkills,
        outcome.scale_ins,
        outcome.pauses,
        outcome.deleted,
        outcome.duplicated
    );
    println!(
        "lost {}, double-terminal {}, stale accepted {}, stale rejected {}, re-executions {} (bound {}), over limit {}",
        outcome.lost,
        outcome.double_terminal,
        outcome.stale_accepted,
        outcome.stale_rejected,
        outcome.reexecutions,
        outcome.reexecution_bound,
        outcome.over_limit
    );
    println!(
        "recovered {:.1} s after the last fault; {:.1} s in all",
        outcome.recovery_secs, outcome.elapsed_secs
    );
    for v in &outcome.violations {
        println!("VIOLATION: {v}");
    }
    println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    if outcome.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
