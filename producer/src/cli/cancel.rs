//! `cancel` (no job of the request starts any more) and `cleanup` (its payloads in S3).

use std::sync::Arc;

use fleet_shared::config::Config;

/// Prints what the cancel did: one sentence, or with `json` its report.
pub async fn cmd_cancel(
    config: &Arc<Config>,
    request_id: &str,
    stop_running: bool,
    json: bool,
) -> anyhow::Result<()> {
    let report = super::connect(config)
        .await?
        .cancel(request_id, stop_running)
        .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let count = |s: &str| report.states.get(s).copied().unwrap_or(0);
    println!(
        "request {} cancelled{}: no job starts from now; {} running will {}; {} not started become CANCELLED as replicas receive them",
        report.request_id,
        if report.stop_running {
            " (stopping running tasks)"
        } else {
            ""
        },
        count("RUNNING"),
        if report.stop_running {
            "stop if in tasks, else finish"
        } else {
            "finish"
        },
        count("PENDING") + count("RETRYING"),
    );
    Ok(())
}

/// Deletes the request's payloads kept in S3 and prints how many.
pub async fn cmd_cleanup(
    config: &Arc<Config>,
    request_id: &str,
    force: bool,
) -> anyhow::Result<()> {
    let deleted = super::connect(config)
        .await?
        .cleanup(request_id, force)
        .await?;
    println!("request {request_id}: {deleted} payload object(s) deleted");
    Ok(())
}
