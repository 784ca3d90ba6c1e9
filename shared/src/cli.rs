//! What every Fleet binary does around its own work: logging to stderr, the async runtime,
//! and turning an error into a message and an exit code.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

pub use fleet_job::log::{LogFormat, init_logging};

/// Runs `main` on a multi-threaded runtime. An error is printed as `NAME: error` (with its
/// causes, for `anyhow` errors) and exits 1.
pub fn run_main<E: Display>(name: &str, main: impl Future<Output = Result<(), E>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
