//! `limit`: a running request's `max_concurrency`.

use std::sync::Arc;

use fleet_shared::config::Config;

/// Sets the limit and prints what it did: one sentence, or with `json` its report.
pub async fn cmd_limit(
    config: &Arc<Config>,
    request_id: &str,
    max_concurrency: u32,
    json: bool,
) -> anyhow::Result<()> {
    let report = super::connect(config)
        .await?
        .limit(request_id, max_concurrency)
        .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "request {}: at most {} jobs run at a time from now; {} released at once",
            report.request_id, report.max_concurrency, report.released
        );
    }
    Ok(())
}
