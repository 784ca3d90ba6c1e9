//! The container entrypoint: one job from `FLEET_EVENT`, outcome in the exit code
//! ([`crate::exit`]).

use std::process::ExitCode;
use std::sync::Arc;

use super::{JobHandler, run_event};
use crate::event::{EVENT_ENV, JobEvent};
use crate::exit::{EXIT_BAD_EVENT, EXIT_INTERRUPTED, ExitKind};

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
            ExitCode::from(ExitKind::code_of(e.kind))
        }
    }
}
