//! `fleet-csv-to-parquet`: the demo job (see the library's documentation for the payload and
//! the result). Runs under Lambda, as a container (`run`, event in `FLEET_EVENT`) or behind a
//! local Invoke API (`serve --listen ADDR`).

use std::process::ExitCode;

fn main() -> ExitCode {
    fleet_job::main(fleet_csv_to_parquet::CsvToParquet::new())
}
