//! `fleet-csv-verify --input s3://.. --output s3://.. [--json]`: checks that every `.csv`
//! object under the input prefix has a Parquet output under the output prefix with the same
//! rows and columns. Exit code 0 only when every file is fine and there is at least one;
//! 1 when there are problems or no file; 2 when the check itself could not run.

use std::process::ExitCode;

use clap::Parser;
use fleet_job::s3::S3Uri;

#[derive(Debug, Parser)]
#[command(about = "Checks the Parquet outputs of fleet-csv-to-parquet against their CSV inputs")]
struct Cli {
    /// The input prefix, s3://bucket/prefix/
    #[arg(long, value_parser = S3Uri::parse)]
    input: S3Uri,
    /// The output prefix the job wrote to, s3://bucket/prefix/
    #[arg(long, value_parser = S3Uri::parse)]
    output: S3Uri,
    /// The CSV delimiter (one ASCII character)
    #[arg(long, default_value = ",", value_parser = parse_delimiter)]
    delimiter: u8,
    /// Print one JSON line instead of a summary
    #[arg(long)]
    json: bool,
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(format!("one ASCII character, got {s:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let s3 = fleet_job::s3::client_from_env().await;
    let report = fleet_csv_to_parquet::verify_with(
        &s3,
        &cli.input,
        &cli.output,
        fleet_csv_to_parquet::VerifyOptions {
            delimiter: cli.delimiter,
        },
    )
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verify: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("cannot serialise the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        println!(
            "{} CSV files under {}: {} ok, {} with problems; {} rows, {} bytes in, {} bytes of Parquet",
            report.files,
            cli.input,
            report.ok,
            report.files - report.ok,
            report.rows,
            report.bytes_in,
            report.bytes_out
        );
        for p in &report.problems {
            println!("problem: {p}");
        }
        if report.files == 0 {
            println!("nothing to verify: no .csv object under {}", cli.input);
        }
    }
    if report.problems.is_empty() && report.files > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
