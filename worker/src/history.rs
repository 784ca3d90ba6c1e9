//! This replica's history, for checking crash safety from outside: one JSON line per claim,
//! adoption, dispatch, accepted terminal write, rejected (stale) write, release and re-send,
//! with the job id, fence and replica. Written only when `worker.history_log` names a file;
//! each line is one write to a file opened for appending, so replicas can share a directory.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use fleet_shared::message::Target;
use fleet_shared::state::JobState;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// What happened to a job, as one history line says (`"event"` names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HistoryEvent<'a> {
    /// A claim of the job (a lease with this line's fence).
    Claim {
        attempt: u32,
    },
    /// A handed-off task taken over from a replica whose lease expired.
    Adopt {
        attempt: u32,
    },
    Dispatch {
        attempt: u32,
        target: Target,
    },
    /// An attempt handed to Lambda asynchronously.
    HandOff {
        invocation: Cow<'a, str>,
    },
    /// The invocation record of a handed-off attempt received.
    Record {
        invocation: Cow<'a, str>,
    },
    /// A terminal state the ledger took (at most one per job).
    Terminal {
        state: JobState,
    },
    /// A retry the ledger took.
    Retry {
        state: JobState,
    },
    /// A write the ledger refused for a stale owner or fence.
    Stale {
        op: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<JobState>,
    },
    /// A lease that ran out before a renewal landed.
    LeaseExpired,
    /// An unfinished attempt given back.
    Release,
    /// A job whose message looked lost, sent again.
    Requeue {
        state: JobState,
    },
}

/// One line of a replica's history: `{"t", "replica", "job_id", "fence", "event", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine<'a> {
    pub t: u64,
    pub replica: Cow<'a, str>,
    pub job_id: Cow<'a, str>,
    pub fence: u64,
    #[serde(flatten)]
    pub event: HistoryEvent<'a>,
}

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

    /// Appends one line.
    pub fn record(&self, now_ms: u64, job_id: &str, fence: u64, event: HistoryEvent<'_>) {
        let Some(file) = &self.file else { return };
        let line = HistoryLine {
            t: now_ms,
            replica: Cow::Borrowed(&self.replica),
            job_id: Cow::Borrowed(job_id),
            fence,
            event,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(text.as_bytes()) {
            warn!(error = %e, "history log write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let line = HistoryLine {
            t: 5,
            replica: "w0".into(),
            job_id: "r:1".into(),
            fence: 3,
            event: HistoryEvent::Stale {
                op: "finish".into(),
                state: Some(JobState::Succeeded),
            },
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains(r#""event":"stale""#), "{text}");
        assert_eq!(serde_json::from_str::<HistoryLine>(&text).unwrap(), line);
        let bare: HistoryLine = serde_json::from_str(
            r#"{"t":1,"replica":"w","job_id":"r:2","fence":1,"event":"lease_expired"}"#,
        )
        .unwrap();
        assert_eq!(bare.event, HistoryEvent::LeaseExpired);
    }
}
