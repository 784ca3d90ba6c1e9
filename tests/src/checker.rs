//! The crash-safety checker: reads the replicas' histories (`worker.history_log`), the test
//! job's execution log and the ledger's final state, and counts what must not happen.
//!
//! - `lost`: submitted jobs not in a terminal state;
//! - `double_terminal`: jobs with more than one accepted terminal write;
//! - `stale_accepted`: accepted terminal writes whose fence is not the job's last fence
//!   (an old owner overwrote a newer one's work);
//! - `stale_rejected`: writes the ledger refused for a stale fence (proof that the fence was
//!   exercised);
//! - `reexecutions`: executions beyond one per attempt recorded as successful or failed;
//! - `over_limit`: jobs executed with an attempt number above the limit;
//! - `leases_expired`: attempts whose replica saw its lease expire before it could record
//!   the outcome (slow heartbeats; their jobs ran again).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use fleet_worker::history::{HistoryEvent, HistoryLine};

use crate::Execution;

/// One line of a replica's history, as the worker writes it.
pub type Event = HistoryLine<'static>;

/// Every event of every `*.jsonl` file in `dir`.
pub fn read_history(dir: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return events;
    };
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            // A replica killed mid-write may leave a partial last line: skip what does not parse.
            events.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Event>(l).ok()),
            );
        }
    }
    events.sort_by_key(|e| e.t);
    events
}

/// A job's final state in the ledger: its state, and the fence of its last recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub state: String,
    pub fence: u64,
}

/// The jobs a request submitted, and how the ledger ended for each.
pub async fn ledger_finals(
    ledger: &fleet_shared::ledger::dynamo::DynamoLedger,
    request_id: &str,
) -> Result<(Vec<String>, HashMap<String, Final>), fleet_shared::ledger::LedgerError> {
    use fleet_shared::ledger::RequestLedger;
    let request = ledger.get_request(request_id).await?;
    let shards = request
        .as_ref()
        .map_or(fleet_shared::ledger::memory::DIRECT_JOB_SHARDS, |r| {
            r.job_shards
        });
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = ledger
            .jobs_page(request_id, shards, cursor.as_deref(), 500)
            .await?;
        jobs.extend(page.items);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    let submitted = match &request {
        Some(r) => (0..r.total).map(|i| format!("{request_id}:{i}")).collect(),
        None => jobs.iter().map(|j| j.job_id.clone()).collect(),
    };
    let finals = jobs
        .iter()
        .map(|j| {
            let fin = Final {
                state: j.state.to_string(),
                fence: j.last.as_ref().map_or(0, |h| h.fence),
            };
            (j.job_id.clone(), fin)
        })
        .collect();
    Ok((submitted, finals))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub submitted: usize,
    pub lost: usize,
    pub double_terminal: usize,
    pub stale_accepted: usize,
    pub stale_rejected: usize,
    pub reexecutions: usize,
    pub executions: usize,
    pub over_limit: usize,
    pub leases_expired: usize,
}

/// Counts the figures for jobs `submitted`, given what happened and how the ledger ended.
pub fn check(
    submitted: &[String],
    history: &[Event],
    executions: &[Execution],
    finals: &HashMap<String, Final>,
    max_attempts: u32,
) -> Figures {
    let terminal = ["SUCCEEDED", "FAILED", "CANCELLED"];
    let mut terminal_writes: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in history
        .iter()
        .filter(|e| matches!(e.event, HistoryEvent::Terminal { .. }))
    {
        terminal_writes
            .entry(e.job_id.as_ref())
            .or_default()
            .push(e);
    }
    let mut per_job: HashMap<&str, usize> = HashMap::new();
    let mut above: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for x in executions {
        *per_job.entry(x.job_id.as_str()).or_default() += 1;
        if x.attempt > max_attempts {
            above.insert(x.job_id.as_str());
        }
    }
    let mut f = Figures {
        submitted: submitted.len(),
        executions: executions.len(),
        stale_rejected: history
            .iter()
            .filter(|e| matches!(e.event, HistoryEvent::Stale { .. }))
            .count(),
        leases_expired: history
            .iter()
            .filter(|e| e.event == HistoryEvent::LeaseExpired)
            .count(),
        ..Figures::default()
    };
    for job in submitted {
        let fin = finals.get(job);
        if !fin.is_some_and(|f| terminal.contains(&f.state.as_str())) {
            f.lost += 1;
        }
        let writes = terminal_writes
            .get(job.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if writes.len() > 1 {
            f.double_terminal += 1;
        }
        if let Some(fin) = fin {
            f.stale_accepted += writes.iter().filter(|w| w.fence != fin.fence).count();
        }
        if above.contains(job.as_str()) {
            f.over_limit += 1;
        }
        f.reexecutions += per_job
            .get(job.as_str())
            .copied()
            .unwrap_or(0)
            .saturating_sub(1);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_shared::state::JobState;

    fn ev(event: &str, job: &str, fence: u64) -> Event {
        let state = JobState::Succeeded;
        let event = match event {
            "terminal" => HistoryEvent::Terminal { state },
            "stale" => HistoryEvent::Stale {
                op: "finish".into(),
                state: Some(state),
            },
            _ => HistoryEvent::LeaseExpired,
        };
        Event {
            t: 0,
            replica: "r".into(),
            event,
            job_id: job.to_owned().into(),
            fence,
        }
    }

    fn exec(job: &str, attempt: u32) -> Execution {
        Execution {
            job_id: job.into(),
            attempt,
            fence: 1,
            pid: 1,
            started_ms: 0,
            payload_sha256: None,
        }
    }

    fn fin(state: &str, fence: u64) -> Final {
        Final {
            state: state.into(),
            fence,
        }
    }

    #[test]
    fn every_figure_counts_what_it_says() {
        let submitted: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let history = vec![
            ev("terminal", "a", 1),
            ev("terminal", "b", 1),
            ev("terminal", "b", 2), // b: two accepted terminal writes, one of them stale
            ev("stale", "c", 1),
            ev("terminal", "c", 2),
            ev("lease_expired", "c", 1),
        ];
        let execs = vec![
            exec("a", 1),
            exec("b", 1),
            exec("b", 2),
            exec("c", 1),
            exec("c", 2),
            exec("c", 6), // c: an attempt above the limit of 5
        ];
        let finals = HashMap::from([
            ("a".to_string(), fin("SUCCEEDED", 1)),
            ("b".to_string(), fin("SUCCEEDED", 2)),
            ("c".to_string(), fin("SUCCEEDED", 2)),
            ("d".to_string(), fin("RUNNING", 1)),
        ]);
        let f = check(&submitted, &history, &execs, &finals, 5);
        assert_eq!(
            f,
            Figures {
                submitted: 4,
                lost: 1,
                double_terminal: 1,
                stale_accepted: 1,
                stale_rejected: 1,
                reexecutions: 3,
                executions: 6,
                over_limit: 1,
                leases_expired: 1,
            }
        );
    }
}
