//! The job runtime: one [`JobHandler`] implementation runs unchanged under three
//! entrypoints, chosen by [`main`]:
//!
//! - **Lambda**: when `AWS_LAMBDA_RUNTIME_API` is set (the Lambda environment sets it), the
//!   handler runs under `lambda_runtime`; the event is a [`JobEvent`].
//! - **Container** (`run`, or no arguments with `FLEET_EVENT` set): the event arrives
//!   base64-encoded in the `FLEET_EVENT` environment variable; the result is printed on
//!   stdout and the exit code tells the outcome ([`crate::exit`]: 0 success, 1 failure, 2 bad
//!   event, 3 permanent failure, 75 throttled, 143 stopped by SIGTERM).
//!   This is what an ECS task runs.
//! - **Local Invoke API** (`serve --listen ADDR`): an HTTP server that answers Lambda's
//!   Invoke API like Lambda does, so the unchanged SDK client of the worker can call the job
//!   on one machine.

mod container;
#[cfg(feature = "local-async")]
mod records;
mod serve;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::error::JobError;
use crate::event::{EVENT_ENV, JobEvent, LargeResults};
pub use serve::{ServeOptions, serve};

/// What the job code knows about the attempt it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContext {
    pub request_id: String,
    pub job_id: String,
    pub job_type: String,
    /// From 1.
    pub attempt: u32,
    /// Grows with every claim of the job: key side effects by (job id, fence) to make them
    /// idempotent across re-executions.
    pub fence: u64,
}

impl JobContext {
    fn split(event: JobEvent) -> (Self, Value) {
        (
            JobContext {
                request_id: event.request_id,
                job_id: event.job_id,
                job_type: event.job_type,
                attempt: event.attempt,
                fence: event.fence,
            },
            event.payload,
        )
    }
}

/// The job code.
pub trait JobHandler: Send + Sync + 'static {
    fn handle(
        &self,
        ctx: JobContext,
        payload: Value,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;
}

/// One S3 client per process, made on first use: only jobs whose payload was kept in S3
/// (the claim-check) need it.
static S3: tokio::sync::OnceCell<aws_sdk_s3::Client> = tokio::sync::OnceCell::const_new();

/// The payload as the job code sees it: a claim-check reference is read back from S3 (and
/// checked against its size and digest) first.
async fn resolve_payload(payload: Value) -> Result<Value, JobError> {
    use crate::claim_check::{ClaimCheckError, reference_in, resolve};
    if reference_in(&payload).is_none() {
        return Ok(payload);
    }
    resolve(s3().await, payload).await.map_err(|e| {
        let message = e.to_string();
        match e {
            ClaimCheckError::Unavailable { .. } => JobError::new("PayloadUnavailable", message),
            ClaimCheckError::Malformed(_) | ClaimCheckError::Corrupt { .. } => {
                JobError::permanent("PayloadCorrupt", message)
            }
        }
    })
}

async fn s3() -> &'static aws_sdk_s3::Client {
    S3.get_or_init(crate::s3::client_from_env).await
}

async fn run_event<H: JobHandler>(handler: &H, event: JobEvent) -> Result<Value, JobError> {
    let large = event.large_results.clone();
    let (ctx, payload) = JobContext::split(event);
    let payload = resolve_payload(payload).await?;
    let (request_id, job_id, fence) = (ctx.request_id.clone(), ctx.job_id.clone(), ctx.fence);
    let result = handler.handle(ctx, payload).await?;
    match large {
        Some(large) => keep_large_result(&large, &request_id, &job_id, fence, result).await,
        None => Ok(result),
    }
}

/// A result as it can travel in an invocation record: itself when it is at most
/// `inline_max_bytes`, else stored under the claim-check prefix and its reference.
async fn keep_large_result(
    large: &LargeResults,
    request_id: &str,
    job_id: &str,
    fence: u64,
    result: Value,
) -> Result<Value, JobError> {
    let body = serde_json::to_vec(&result).unwrap_or_default();
    if body.len() <= large.inline_max_bytes {
        return Ok(result);
    }
    let too_large = |why: String| JobError::permanent("ResponseSizeTooLarge", why);
    let Some(prefix) = &large.prefix else {
        return Err(too_large(format!(
            "the result is {} bytes, over the {} an invocation record carries, and no claim_check.prefix is configured to keep it in S3",
            body.len(),
            large.inline_max_bytes
        )));
    };
    let prefix = crate::s3::S3Uri::parse(prefix).map_err(|e| too_large(e.to_string()))?;
    let index = crate::ids::JobId::parse(job_id)
        .map_err(|e| too_large(e.to_string()))?
        .index();
    let uri = crate::claim_check::result_uri(&prefix, request_id, index, fence);
    let reference = crate::claim_check::result_reference(&uri, &body);
    crate::claim_check::put(s3().await, &uri, body)
        .await
        .map_err(|e| JobError::new("ResultNotStored", e))?;
    Ok(reference)
}

#[derive(Debug, Parser)]
#[command(
    about = "A Fleet job: runs under Lambda, in a container, or as a local Invoke-API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one job from the base64 event in FLEET_EVENT (the container entrypoint).
    Run,
    /// Serve Lambda's Invoke API on ADDR.
    Serve(ServeOptions),
}

/// Runs the job binary: picks the entrypoint from the environment and the arguments.
pub fn main<H: JobHandler>(handler: H) -> ExitCode {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let cli = if in_lambda {
        Cli { command: None }
    } else {
        Cli::parse()
    };
    crate::log::init_logging("info", crate::log::LogFormat::from_env());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let handler = Arc::new(handler);
    match cli.command {
        _ if in_lambda => rt.block_on(run_lambda(handler)),
        Some(Command::Serve(opts)) => rt.block_on(async move {
            match serve(handler, opts).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Some(Command::Run) => rt.block_on(container::run(handler)),
        None if std::env::var_os(EVENT_ENV).is_some() => rt.block_on(container::run(handler)),
        None => {
            eprintln!(
                "nothing to do: give `run` (with {EVENT_ENV} set) or `serve --listen ADDR`; see --help"
            );
            ExitCode::from(2)
        }
    }
}

async fn run_lambda<H: JobHandler>(handler: Arc<H>) -> ExitCode {
    let service = lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<JobEvent>| {
        let handler = handler.clone();
        async move {
            run_event(handler.as_ref(), ev.payload)
                .await
                .map_err(|e| lambda_runtime::Diagnostic {
                    error_type: e.wire_error_type(),
                    error_message: e.message,
                })
        }
    });
    match lambda_runtime::run(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lambda runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
