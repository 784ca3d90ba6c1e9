//! `jobs` (a request's jobs, a page at a time) and `result` (a succeeded job's result).

use std::io::Write;
use std::sync::Arc;

use fleet_shared::config::Config;
use fleet_shared::state::JobState;

/// Jobs read per page.
const PAGE: usize = 100;

/// Prints the jobs (one JSON object a line with `json`), at most `limit`, then the cursor of
/// the next page on stderr if there is one.
pub async fn cmd_jobs(
    config: &Arc<Config>,
    request_id: &str,
    state: Option<JobState>,
    json: bool,
    cursor: Option<String>,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let p = super::connect(config).await?;
    let mut cursor = cursor;
    let mut left = limit.unwrap_or(usize::MAX);
    loop {
        let page = p
            .jobs_page(request_id, state, cursor.as_deref(), left.min(PAGE), json)
            .await?;
        for j in &page.items {
            if json {
                println!("{}", serde_json::to_string(j)?);
            } else {
                println!(
                    "{}  {}  attempts {}  {}  {}  {}",
                    j.job_id,
                    j.state,
                    j.attempts,
                    j.target.map_or("-", |t| t.as_str()),
                    j.reason.map_or_else(|| "-".into(), |r| r.to_string()),
                    j.last_error.as_deref().unwrap_or("")
                );
            }
        }
        left = left.saturating_sub(page.items.len());
        cursor = page.next;
        if cursor.is_none() || left == 0 {
            break;
        }
    }
    if let Some(c) = cursor {
        eprintln!("next page: --cursor {c}");
    }
    Ok(())
}

/// Prints a job's result; a job without one is an error.
pub async fn cmd_result(config: &Arc<Config>, job_id: &str) -> anyhow::Result<()> {
    match super::connect(config).await?.result(job_id).await? {
        Some(bytes) => {
            std::io::stdout().write_all(&bytes)?;
            println!();
            Ok(())
        }
        None => anyhow::bail!("job {job_id} has no recorded result"),
    }
}
