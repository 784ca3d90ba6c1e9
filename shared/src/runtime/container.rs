//! The container entrypoint: one job from `FLEET_EVENT`, outcome in the exit code.

use std::process::ExitCode;
use std::sync::Arc;

use super::{EVENT_ENV, JobEvent, JobHandler, run_event};

/// Exit code of a job that failed.
pub const EXIT_JOB_FAILED: u8 = 1;
/// Exit code when the event itself is missing or malformed (a permanent error).
pub const EXIT_BAD_EVENT: u8 = 2;
/// Exit code of a job stopped by SIGTERM before it finished (a Fargate Spot interruption,
/// a StopTask, a scale-in): 128 + 15, as a shell reports it. The worker takes it for a
/// transient failure, not the job's.
pub const EXIT_INTERRUPTED: u8 = crate::message::EXIT_INTERRUPTED;

pub(super) async fn run<H: JobHandler>(handler: Arc<H>) -> ExitCode {
    let event = match std::env::var(EVENT_ENV) {
        Ok(v) => JobEvent::from_base64(&v),
        Err(_) => Err(format!("{EVENT_ENV} is not set (or not UTF-8)")),
    };
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_EVENT);
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let ran = tokio::select! {
        r = run_event(handler.as_ref(), event) => r,
        () = term => {
            eprintln!("stopped by SIGTERM before the job finished");
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    };
    match ran {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.to_lambda_body());
            ExitCode::from(EXIT_JOB_FAILED)
        }
    }
}
