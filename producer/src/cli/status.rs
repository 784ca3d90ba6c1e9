//! `status`: a request's jobs per state, once or followed (`--watch`) until it is done.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_producer::{Producer, Status};
use fleet_shared::config::Config;
use fleet_shared::state::JobState;

/// Prints the status (with `watch`, the progress until the request is done first; with
/// `recount`, after correcting its counters from its jobs).
pub async fn cmd_status(
    config: &Arc<Config>,
    request_id: &str,
    json: bool,
    watch: bool,
    interval: f64,
    recount: bool,
) -> anyhow::Result<()> {
    let p = super::connect(config).await?;
    if watch {
        if !(interval.is_finite() && interval > 0.0) {
            anyhow::bail!("--interval must be a positive number of seconds");
        }
        follow(&p, request_id, Duration::from_secs_f64(interval)).await?;
    }
    let status = if recount {
        p.recount(request_id).await?
    } else {
        p.status(request_id).await?
    };
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else if !watch {
        print_status(&status);
    }
    Ok(())
}

fn print_status(s: &Status) {
    println!(
        "request {}: {}, {}/{} finished{}",
        s.request_id,
        s.state,
        s.finished(),
        s.total,
        if s.done { " (done)" } else { "" }
    );
    if let Some(f) = &s.failed {
        println!("  failed: {}", f.reason);
    }
    for st in JobState::ALL {
        println!("  {:<10} {}", st.as_str(), s.count(st));
    }
    println!("  attempts   {}", s.attempts);
}

fn progress_line(s: &Status, rate: f64) -> String {
    let states: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|st| s.count(*st) > 0)
        .map(|st| format!("{} {}", st.as_str(), s.count(st)))
        .collect();
    let remaining = s.total.saturating_sub(s.finished());
    let eta = if rate > 0.0 && remaining > 0 {
        format!(", eta {:.0}s", f64::from(remaining) / rate)
    } else {
        String::new()
    };
    format!(
        "{}/{} finished [{}] {:.1} jobs/s{}",
        s.finished(),
        s.total,
        states.join(", "),
        rate,
        eta
    )
}

/// Prints progress until the request is done: one updating line on a terminal, one line per
/// update otherwise.
async fn follow(p: &Producer, request_id: &str, interval: Duration) -> anyhow::Result<()> {
    // On a terminal: a live bar (on stderr, as indicatif draws it); otherwise plain lines.
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40.cyan/blue} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let start = Instant::now();
    let first = p.status(request_id).await?.finished();
    loop {
        let s = p.status(request_id).await?;
        let secs = start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            f64::from(s.finished() - first.min(s.finished())) / secs
        } else {
            0.0
        };
        let line = progress_line(&s, rate);
        match &bar {
            Some(bar) => {
                bar.set_length(u64::from(s.total));
                bar.set_position(u64::from(s.finished()));
                bar.set_message(line);
            }
            None => {
                println!("{line}");
                std::io::stdout().flush().ok();
            }
        }
        if s.done {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}
