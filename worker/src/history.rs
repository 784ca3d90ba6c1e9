//! This replica's history, for checking crash safety from outside: one JSON line per claim,
//! adoption, dispatch, accepted terminal write, rejected (stale) write, release and re-send,
//! with the job id, fence and replica. Written only when `worker.history_log` names a file;
//! each line is one write to a file opened for appending, so replicas can share a directory.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};
use tracing::warn;

pub struct HistoryLog {
    file: Option<Mutex<std::fs::File>>,
    replica: String,
}

impl HistoryLog {
    /// A log appending to `path`, or one that records nothing.
    pub fn open(path: Option<&Path>, replica: &str) -> Self {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| warn!(path = %p.display(), error = %e, "cannot open the history log; not recording history"))
                .ok()
        });
        Self {
            file: file.map(Mutex::new),
            replica: replica.to_owned(),
        }
    }

    /// Appends `{"t", "replica", "event", "job_id", "fence", ...extra}`.
    pub fn record(&self, now_ms: u64, event: &str, job_id: &str, fence: u64, extra: Value) {
        let Some(file) = &self.file else { return };
        let mut line = json!({"t": now_ms, "replica": self.replica, "event": event, "job_id": job_id, "fence": fence});
        if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
            line.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(text.as_bytes()) {
            warn!(error = %e, "history log write failed");
        }
    }
}
