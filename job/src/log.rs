//! Logging to stderr, as every Fleet binary logs: filtered by `RUST_LOG`, human or JSON
//! (`FLEET_LOG_FORMAT`).

use std::io::IsTerminal;

/// How log lines look: `human` (default; colours on a terminal) or `json` (one object a
/// line, with the span fields such as `request_id` and `job_id`, for log pipelines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected human or json, got {other:?}")),
        }
    }
}

impl LogFormat {
    /// `FLEET_LOG_FORMAT`, or human when unset or not understood.
    pub fn from_env() -> Self {
        std::env::var("FLEET_LOG_FORMAT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_level`), in `format`.
pub fn init_logging(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
