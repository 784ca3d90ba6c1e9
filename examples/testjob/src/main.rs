//! `fleet-testjob`: the job the tests and the demo run. Payload keys (all optional; unknown
//! keys are refused as a job failure):
//!
//! - `sleep_ms`: sleep this long before answering;
//! - `fail_times`: fail while the attempt is at most this number;
//! - `fail`: always fail;
//! - `fail_permanent`: fail permanently (no retry can help);
//! - `throttle_fences`: answer "throttled" while the claim's fence is at most this number (a
//!   throttled attempt is not counted, so the attempt stays the same), with `retry_after_ms`
//!   when given;
//! - `panic`: panic (the Lambda emulation reports it as a function error; a container exits
//!   with code 101);
//! - `echo`: returned in the result;
//! - `result_bytes`: the result carries a `fill` string of this many bytes.
//!
//! When `FLEET_TESTJOB_LOG` names a file, every execution appends one JSON line to it
//! before the work starts: `{"job_id", "attempt", "fence", "pid", "started_ms",
//! "payload_bytes", "payload_sha256"}` (the payload as the job received it, compact JSON). Tests read
//! that file as the ground truth of executions.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use fleet_job::{JobContext, JobError, JobHandler};
use serde::Deserialize;
use serde_json::{Value, json};

/// Environment variable naming the execution log.
const LOG_ENV: &str = "FLEET_TESTJOB_LOG";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Payload {
    sleep_ms: u64,
    fail_times: u32,
    fail: bool,
    fail_permanent: bool,
    throttle_fences: u64,
    retry_after_ms: Option<u64>,
    panic: bool,
    echo: Option<Value>,
    result_bytes: usize,
}

struct TestJob {
    log: Option<std::path::PathBuf>,
}

impl TestJob {
    fn record(&self, ctx: &JobContext, payload: &Value) -> Result<(), JobError> {
        let Some(path) = &self.log else {
            return Ok(());
        };
        let mut line = json!({
            "job_id": ctx.job_id, "attempt": ctx.attempt, "fence": ctx.fence, "pid": std::process::id(),
            "started_ms": fleet_job::time::now_ms(),
            "payload_bytes": payload.to_string().len(),
            "payload_sha256": fleet_job::claim_check::sha256_hex(payload.to_string().as_bytes()),
        })
        .to_string();
        line.push('\n');
        // One write of the whole line to a file opened for append: lines from concurrent
        // executions and processes do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| {
                JobError::new(
                    "LogError",
                    format!("cannot append to {}: {e}", path.display()),
                )
            })
    }
}

impl JobHandler for TestJob {
    async fn handle(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        self.record(&ctx, &payload)?;
        let p: Payload = if payload.is_null() {
            Payload::default()
        } else {
            serde_json::from_value(payload)
                .map_err(|e| JobError::new("InvalidPayload", e.to_string()))?
        };
        if p.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
        }
        if p.panic {
            panic!("panic requested by the payload of {}", ctx.job_id);
        }
        if p.fail {
            return Err(JobError::new(
                "RequestedFailure",
                format!("{} fails on every attempt", ctx.job_id),
            ));
        }
        if p.fail_permanent {
            return Err(JobError::permanent(
                "RequestedPermanentFailure",
                format!("{} can never succeed", ctx.job_id),
            ));
        }
        if ctx.fence <= p.throttle_fences {
            return Err(JobError::throttled(
                "RequestedThrottling",
                format!("{} is throttled at fence {}", ctx.job_id, ctx.fence),
                p.retry_after_ms.map(Duration::from_millis),
            ));
        }
        if ctx.attempt <= p.fail_times {
            return Err(JobError::new(
                "RequestedFailure",
                format!(
                    "{} fails on attempt {} of the first {}",
                    ctx.job_id, ctx.attempt, p.fail_times
                ),
            ));
        }
        let mut result = json!({
            "job_id": ctx.job_id,
            "attempt": ctx.attempt,
            "fence": ctx.fence,
            "slept_ms": p.sleep_ms,
            "echo": p.echo,
        });
        if p.result_bytes > 0 {
            result["fill"] = json!("x".repeat(p.result_bytes));
        }
        Ok(result)
    }
}

fn main() -> ExitCode {
    fleet_job::main(TestJob {
        log: std::env::var_os(LOG_ENV).map(Into::into),
    })
}
