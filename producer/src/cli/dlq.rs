//! `dlq list` (a request's failed jobs, or a look at the dead-letter queue) and
//! `dlq redrive` (a request's failed jobs sent back with fresh attempts).

use std::sync::Arc;

use fleet_producer::dlq::Listed;
use fleet_shared::config::Config;
use fleet_shared::message::Target;

/// Failed jobs read per page of a request's.
const PAGE: usize = 100;

/// Prints the failed jobs (one JSON object a line with `json`, else a line each and their
/// count): every one of `request_id`'s, or without it up to `limit` dead letters.
pub async fn cmd_dlq_list(
    config: &Arc<Config>,
    request_id: Option<&str>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let p = match request_id {
        Some(_) => super::connect(config).await?,
        None => super::connect_with_dead_letters(config).await?,
    };
    let mut count = 0usize;
    let mut print = |l: &Listed| -> anyhow::Result<()> {
        count += 1;
        if json {
            println!("{}", serde_json::to_string(l)?);
        } else {
            println!(
                "{}  {}  attempts {}  {}{}",
                l.job_id
                    .as_deref()
                    .or(l.message_id.as_deref())
                    .unwrap_or("?"),
                l.error_class,
                l.attempts,
                l.error,
                match l.copies {
                    Some(n) if n > 1 => format!("  ({n} copies)"),
                    _ => String::new(),
                }
            );
        }
        Ok(())
    };
    match request_id {
        Some(id) => {
            let mut cursor: Option<String> = None;
            loop {
                let page = p.failures_page(id, cursor.as_deref(), PAGE).await?;
                for l in &page.items {
                    print(l)?;
                }
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
        }
        None => {
            for l in &p.dlq_peek(limit).await? {
                print(l)?;
            }
        }
    }
    if !json {
        println!("{count} failed job(s)");
    }
    Ok(())
}

/// Redrives the request's failed jobs and prints how many, and those left with the reason.
pub async fn cmd_dlq_redrive(
    config: &Arc<Config>,
    request_id: &str,
    max_attempts: Option<u32>,
    target: Option<Target>,
    json: bool,
) -> anyhow::Result<()> {
    let report = super::connect(config)
        .await?
        .dlq_redrive(request_id, max_attempts, target)
        .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "request {}: {} job(s) redriven",
        report.request_id, report.redriven
    );
    for s in &report.skipped {
        println!("  left {}: {}", s.job_id, s.reason);
    }
    Ok(())
}
