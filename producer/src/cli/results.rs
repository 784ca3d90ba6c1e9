//! `results` (every finished job's result or error, streamed a page at a time) and `export`
//! (the same to S3, with a manifest).

use std::io::Write;
use std::sync::Arc;

use fleet_shared::config::Config;
use fleet_shared::state::JobState;

/// Results read per page.
const PAGE: usize = 100;

/// Prints every finished job of the request, a page at a time: JSON lines with `json`, else
/// `job_id  STATE  result-or-error`.
pub async fn cmd_results(
    config: &Arc<Config>,
    request_id: &str,
    state: Option<JobState>,
    json: bool,
) -> anyhow::Result<()> {
    let p = super::connect(config).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor: Option<String> = None;
    loop {
        let page = p
            .results_page(request_id, state, cursor.as_deref(), PAGE)
            .await?;
        for line in &page.items {
            if json {
                serde_json::to_writer(&mut out, line)?;
                writeln!(out)?;
            } else {
                let what = match &line.result {
                    Some(r) => r.to_string(),
                    None => format!(
                        "{}: {}",
                        line.error_class.as_deref().unwrap_or("-"),
                        line.error.as_deref().unwrap_or("")
                    ),
                };
                writeln!(out, "{}  {}  {}", line.job_id, line.state, what)?;
            }
        }
        out.flush()?;
        cursor = page.next;
        if cursor.is_none() {
            return Ok(());
        }
    }
}

/// Exports the request's results and prints where (or the manifest with `json`).
pub async fn cmd_export(
    config: &Arc<Config>,
    request_id: &str,
    to: &str,
    json: bool,
) -> anyhow::Result<()> {
    let manifest = super::connect(config).await?.export(request_id, to).await?;
    if json {
        println!("{}", serde_json::to_string(&manifest)?);
    } else {
        for f in &manifest.files {
            println!(
                "{}  {}  {} lines  {} bytes",
                f.uri, f.state, f.lines, f.bytes
            );
        }
        println!("{}", manifest.manifest);
    }
    Ok(())
}
