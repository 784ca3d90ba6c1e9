//! `fleet-bench`: how the worker engine performs, measured. See the README's "Performance".
//!
//!   fleet-bench [--scenario makespan|overhead|footprint|scaling|api-economy|scale|all] [--jobs N] [--json]
//!
//! Prints a table (or, with `--json`, one JSON object per scenario per line), each with the
//! machine it ran on, and whether the engine met its targets. `--check` exits 1 when a
//! target is missed.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use fleet_tests::bench::{self, round};
use fleet_tests::bench_live;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Makespan,
    Overhead,
    Footprint,
    Scaling,
    ApiEconomy,
    /// A million jobs in one request under the model of AWS's limits: the base run, a
    /// failure storm, and medium payloads (each in a process of its own).
    Scale,
    /// One run of `scale` with the given --fail-ratio and --payload-bytes.
    ScaleRun,
    All,
}

#[derive(Debug, Clone, Parser)]
#[command(
    about = "Measures the Fleet worker engine: makespan, overhead, footprint, scaling, AWS calls per job"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Jobs (makespan 20,000; overhead 100,000; footprint 10,000; api-economy 500 Lambda-routed
    /// and a fifth as many ECS-routed; scaling: the largest of three sizes a tenth apart,
    /// 100,000).
    #[arg(long)]
    jobs: Option<usize>,
    /// Jobs in flight at once (makespan, overhead, scaling).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Shape of the lognormal job durations (median 1 s).
    #[arg(long, default_value_t = 0.5)]
    sigma: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Length of each footprint job, ms.
    #[arg(long, default_value_t = 30_000)]
    sleep_ms: u64,
    /// scale: jobs in flight across the fleet.
    #[arg(long, default_value_t = 10_000)]
    in_flight: usize,
    /// scale: worker replicas sharing them.
    #[arg(long, default_value_t = 10)]
    replicas: usize,
    /// scale: median job duration, ms.
    #[arg(long, default_value_t = 5_000)]
    median_ms: u64,
    /// scale: share of jobs that fail their first attempt (the failure storm uses 0.1).
    #[arg(long, default_value_t = 0.0)]
    fail_ratio: f64,
    /// scale: the retry delay's ceiling after those failures, seconds.
    #[arg(long, default_value_t = 600)]
    retry_secs: u64,
    /// scale: each job's payload, bytes (small 512, medium 5120).
    #[arg(long, default_value_t = 512)]
    payload_bytes: usize,
    /// scale: most partitions a request's job items spread over (`ledger.max_job_shards`;
    /// 1 puts every job of the request on one key, as a single-partition layout would).
    #[arg(long, default_value_t = 64)]
    max_job_shards: u32,
    /// scale: the producer's `limits.window` (most of the request's jobs released and not
    /// finished at a time; 0 sends every message at once). Default: twice --in-flight, as a
    /// fleet that runs that many jobs at once sets it (a window no larger than what runs
    /// leaves slots idle while released jobs wait in the queue).
    #[arg(long)]
    window: Option<u32>,
    /// footprint, api-economy: how the worker invokes Lambda (`event` or `sync`; footprint
    /// then defaults to 100,000 jobs, or 10,000).
    #[arg(long, default_value = "event")]
    invocation: String,
    /// One JSON object per scenario per line.
    #[arg(long)]
    json: bool,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// Serve the in-memory SQS stand-in on a free loopback port instead (the asynchronous
    /// footprint starts it as a process of its own).
    #[arg(long, hide = true)]
    sqs_stand_in: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet_shared::cli::init_logging("warn", fleet_shared::cli::LogFormat::from_env());
    if cli.sqs_stand_in {
        return match serve_sqs_stand_in() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("SQS stand-in: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let scenarios = match cli.scenario {
        Scenario::All => vec![
            Scenario::Makespan,
            Scenario::Overhead,
            Scenario::Footprint,
            Scenario::Scaling,
            Scenario::ApiEconomy,
        ],
        s => vec![s],
    };
    let machine = bench::machine();
    if !cli.json {
        println!("machine: {machine}");
    }
    let mut missed = false;
    let alone = scenarios.len() > 1;
    for s in scenarios {
        // With several scenarios each runs in a process of its own: peak memory is per process.
        let outcome = if alone {
            in_child(s, &cli, None)
        } else {
            run(s, &cli)
        };
        let result = match outcome {
            Ok(mut v) => {
                let targets = targets(&v);
                missed |= targets.values().any(|t| t["met"] == false);
                v["targets"] = json!(targets);
                v["machine"] = machine.clone();
                v
            }
            Err(e) => {
                eprintln!("{s:?}: {e:#}");
                return ExitCode::from(2);
            }
        };
        if cli.json {
            println!("{result}");
        } else {
            print_table(&result);
        }
    }
    if cli.check && missed {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn serve_sqs_stand_in() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        fleet_tests::sqs_stand_in::serve(listener).await;
        Ok(())
    })
}

fn run(s: Scenario, cli: &Cli) -> anyhow::Result<Value> {
    match s {
        Scenario::Makespan => {
            bench::makespan(cli.jobs.unwrap_or(20_000), cli.limit, cli.sigma, cli.seed)
        }
        Scenario::Overhead => bench::overhead(cli.jobs.unwrap_or(100_000), cli.limit),
        Scenario::Footprint => {
            let rt = tokio::runtime::Runtime::new()?;
            match fleet_shared::config::Invocation::parse(&cli.invocation)
                .map_err(|e| anyhow::anyhow!("--invocation: {e}"))?
            {
                fleet_shared::config::Invocation::Event => rt.block_on(
                    bench_live::footprint_event(cli.jobs.unwrap_or(100_000), cli.sleep_ms),
                ),
                fleet_shared::config::Invocation::Sync => rt.block_on(bench_live::footprint(
                    cli.jobs.unwrap_or(10_000),
                    cli.sleep_ms,
                )),
            }
        }
        Scenario::ApiEconomy => {
            let n = cli.jobs.unwrap_or(500);
            let invocation = fleet_shared::config::Invocation::parse(&cli.invocation)
                .map_err(|e| anyhow::anyhow!("--invocation: {e}"))?;
            tokio::runtime::Runtime::new()?.block_on(bench_live::api_economy(
                n,
                (n / 5).max(1),
                invocation,
            ))
        }
        Scenario::Scaling => scaling(cli),
        Scenario::ScaleRun => fleet_tests::bench_scale::scale(&scale_opts(cli, cli.jobs)),
        Scenario::Scale => scale(cli),
        Scenario::All => anyhow::bail!("not a single scenario"),
    }
}

/// Runs one scenario as a child process (`--json`; `jobs` overrides `--jobs`), its figures
/// without the machine and targets (added by the caller).
fn in_child(s: Scenario, cli: &Cli, jobs: Option<usize>) -> anyhow::Result<Value> {
    let name = s
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .ok_or_else(|| anyhow::anyhow!("no name for {s:?}"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["--scenario", &name, "--json"])
        .args([
            "--limit",
            &cli.limit.to_string(),
            "--sigma",
            &cli.sigma.to_string(),
        ])
        .args([
            "--seed",
            &cli.seed.to_string(),
            "--sleep-ms",
            &cli.sleep_ms.to_string(),
        ]);
    if let Some(n) = jobs.or(cli.jobs) {
        cmd.args(["--jobs", &n.to_string()]);
    }
    cmd.args(["--invocation", &cli.invocation])
        .args(["--in-flight", &cli.in_flight.to_string()])
        .args(["--replicas", &cli.replicas.to_string()])
        .args(["--median-ms", &cli.median_ms.to_string()])
        .args(["--fail-ratio", &cli.fail_ratio.to_string()])
        .args(["--retry-secs", &cli.retry_secs.to_string()])
        .args(["--payload-bytes", &cli.payload_bytes.to_string()])
        .args(["--max-job-shards", &cli.max_job_shards.to_string()])
        .args(["--window", &window_of(cli).to_string()]);
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or_default(),
    )?;
    if let Some(o) = v.as_object_mut() {
        o.remove("machine");
        o.remove("targets");
    }
    Ok(v)
}

/// The scale scenario's window: `--window`, else twice the jobs in flight.
fn window_of(cli: &Cli) -> u32 {
    cli.window
        .unwrap_or((cli.in_flight * 2).min(100_000) as u32)
}

fn scale_opts(cli: &Cli, jobs: Option<usize>) -> fleet_tests::bench_scale::ScaleOpts {
    fleet_tests::bench_scale::ScaleOpts {
        jobs: jobs.unwrap_or(1_000_000),
        in_flight: cli.in_flight,
        replicas: cli.replicas,
        median_ms: cli.median_ms,
        sigma: cli.sigma,
        seed: cli.seed,
        fail_ratio: cli.fail_ratio,
        retry_secs: cli.retry_secs,
        payload_bytes: cli.payload_bytes,
        max_job_shards: cli.max_job_shards,
        window: window_of(cli),
    }
}

/// `scale`: the base run (small payloads), the failure storm (a tenth of the jobs fail once,
/// retried up to ten minutes later) and medium payloads (a tenth as many jobs: the units
/// per job do not depend on the count), each in its own process.
fn scale(cli: &Cli) -> anyhow::Result<Value> {
    let n = cli.jobs.unwrap_or(1_000_000);
    let run_child = |fail: f64, bytes: usize, jobs: usize, window: u32| {
        let c = Cli {
            fail_ratio: fail,
            payload_bytes: bytes,
            window: Some(window),
            scenario: Scenario::ScaleRun,
            jobs: Some(jobs),
            ..cli.clone()
        };
        in_child(Scenario::ScaleRun, &c, Some(jobs))
    };
    let child = |fail: f64, bytes: usize, jobs: usize| run_child(fail, bytes, jobs, window_of(cli));
    let base = child(0.0, 512, n)?;
    let storm = child(0.1, 512, n)?;
    let medium = child(0.0, 5120, (n / 10).max(1))?;
    // The window's cost: the base run without a window, at a tenth of the jobs (the units
    // per job do not depend on the count).
    let open = run_child(0.0, 512, (n / 10).max(1), 0)?;
    let per_job = |k: &str| {
        let d = base[k].as_f64().unwrap_or(0.0) - open[k].as_f64().unwrap_or(0.0);
        (d * 1000.0).round() / 1000.0
    };
    Ok(json!({
        "scenario": "scale",
        "base": base,
        "failure_storm": storm,
        "medium_payloads": medium,
        "without_window": open,
        "window_cost_per_job": {
            "write_units": per_job("write_units_per_job"),
            "read_units": per_job("read_units_per_job"),
            "sqs_requests": per_job("sqs_requests_per_job"),
        },
    }))
}

/// `makespan` at a hundredth, a tenth and all of `--jobs` (1,000, 10,000 and 100,000), each in
/// its own process so that each peak memory is its own.
fn scaling(cli: &Cli) -> anyhow::Result<Value> {
    let largest = cli.jobs.unwrap_or(100_000);
    let sizes = [largest / 100, largest / 10, largest].map(|n| n.max(1));
    let mut runs = Vec::new();
    for n in sizes {
        let v = in_child(Scenario::Makespan, cli, Some(n))?;
        runs.push(json!({
            "jobs": n,
            "efficiency": v["efficiency"],
            "vs_greedy": v["vs_greedy"],
            "makespan_per_job_ms": round(v["makespan_s"].as_f64().unwrap_or(0.0) * 1000.0 / n as f64, 3),
            "cpu_us_per_job": v["cpu_us_per_job"],
            "peak_rss_mb": v["peak_rss_mb"],
        }));
    }
    let cpu: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["cpu_us_per_job"].as_f64())
        .collect();
    let spread = match (
        cpu.iter().cloned().reduce(f64::max),
        cpu.iter().cloned().reduce(f64::min),
    ) {
        (Some(hi), Some(lo)) if lo > 0.0 => hi / lo,
        _ => 0.0,
    };
    Ok(
        json!({"scenario": "scaling", "limit": cli.limit, "runs": runs, "cpu_per_job_spread": round(spread, 3)}),
    )
}

/// The engine's targets on this machine, and whether the figures meet them.
fn targets(v: &Value) -> serde_json::Map<String, Value> {
    let mut t = serde_json::Map::new();
    let mut check = |name: &str, value: &Value, ok: bool, want: &str| {
        t.insert(
            name.into(),
            json!({"value": value, "want": want, "met": ok}),
        );
    };
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    match v["scenario"].as_str() {
        Some("makespan") => {
            check(
                "efficiency",
                &v["efficiency"],
                f("efficiency") >= 0.95,
                ">= 0.95",
            );
            check(
                "vs_greedy",
                &v["vs_greedy"],
                f("vs_greedy") >= 0.95,
                ">= 0.95",
            );
        }
        Some("overhead") => {
            check(
                "jobs_per_sec",
                &v["jobs_per_sec"],
                f("jobs_per_sec") >= 10_000.0,
                ">= 10000",
            );
        }
        Some("footprint") => {
            // Asynchronously, 100,000 jobs in flight within 250 MB; synchronously 10,000
            // connections within 150 MB.
            let (most, label) = if v["invocation"] == "event" {
                (250.0, "<= 250")
            } else {
                (150.0, "<= 150")
            };
            check(
                "peak_rss_mb",
                &v["peak_rss_mb"],
                f("peak_rss_mb") <= most,
                label,
            );
            check(
                "in_flight",
                &v["in_flight"],
                v["in_flight"] == v["jobs"],
                "all jobs",
            );
        }
        Some("api-economy") => {
            // Asynchronously a job also costs its hand-off write, its record's receive,
            // read and delete, and the check of jobs recorded by another replica.
            let (target, label) = if v["invocation"] == "event" {
                (3.5, "<= 3.5")
            } else {
                (3.3, "<= 3.3")
            };
            check(
                "calls_per_lambda_job",
                &v["calls_per_lambda_job"],
                f("calls_per_lambda_job") <= target,
                label,
            );
            check(
                "calls_per_ecs_job_without_describe",
                &v["calls_per_ecs_job_without_describe"],
                f("calls_per_ecs_job_without_describe") <= 4.5,
                "<= 4.5",
            );
        }
        Some("scale") => {
            let b = &v["base"];
            let bf = |k: &str| b[k].as_f64().unwrap_or(f64::NAN);
            let runs = ["base", "failure_storm", "medium_payloads"];
            let worst = |key: &str| {
                runs.iter()
                    .map(|r| v[r][key]["units_per_sec"].as_f64().unwrap_or(f64::NAN))
                    .fold(0.0_f64, |a, x| {
                        if x.is_nan() || a.is_nan() {
                            f64::NAN
                        } else {
                            a.max(x)
                        }
                    })
            };
            let throttled: u64 = runs
                .iter()
                .map(|r| v[r]["throttled_writes"].as_u64().unwrap_or(u64::MAX))
                .fold(0, u64::saturating_add);
            check(
                "throttled_writes",
                &json!(throttled),
                throttled == 0,
                "0 (every run)",
            );
            let hot_table = worst("hottest_table_key");
            check(
                "hottest_table_key_units_per_sec",
                &json!(hot_table),
                hot_table <= 500.0,
                "<= 500 (every run)",
            );
            let hot_index = worst("hottest_index_key");
            check(
                "hottest_index_key_units_per_sec",
                &json!(hot_index),
                hot_index <= 500.0,
                "<= 500 (every run)",
            );
            check(
                "first_job_started_s",
                &b["first_job_started_s"],
                bf("first_job_started_s") <= 10.0,
                "<= 10 (while the submission goes on)",
            );
            check(
                "table_write_units_per_small_job",
                &b["table_write_units_per_job"],
                bf("table_write_units_per_job") <= 5.0,
                "<= 5 (producer write included)",
            );
            check(
                "vs_greedy",
                &b["vs_greedy"],
                bf("vs_greedy") >= 0.95,
                ">= 0.95",
            );
            check(
                "storm_peak_queue_in_flight",
                &v["failure_storm"]["peak_queue_in_flight"],
                v["failure_storm"]["peak_queue_in_flight"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    <= 60_000.0,
                "far below 120,000 (<= 60,000)",
            );
        }
        Some("scaling") => {
            check(
                "cpu_per_job_spread",
                &v["cpu_per_job_spread"],
                f("cpu_per_job_spread") <= 1.5,
                "<= 1.5 (largest / smallest CPU per job)",
            );
        }
        _ => {}
    }
    t
}

fn print_table(v: &Value) {
    println!();
    println!("== {}", v["scenario"].as_str().unwrap_or("?"));
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if ["scenario", "machine", "targets"].contains(&k.as_str()) {
                continue;
            }
            println!("  {k:<36} {val}");
        }
    }
    if let Some(t) = v["targets"].as_object() {
        for (k, r) in t {
            let met = if r["met"] == true { "met" } else { "MISSED" };
            println!(
                "  target {k:<29} {} (want {}) {met}",
                r["value"],
                r["want"].as_str().unwrap_or("")
            );
        }
    }
}
