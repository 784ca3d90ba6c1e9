//! The job state machine. Every state change the ledger makes is first checked by
//! [`transition`], and the conditions of the ledger's writes are built from the same table
//! ([`sources`]), so the rules live in one place.
//!
//! ```text
//!   PENDING ──claim──► RUNNING ──success──► SUCCEEDED
//!      │  ▲              │ │ ├──last failure / permanent──► FAILED
//!      │  └── (none)     │ │ └──cancel (stopped task)──► CANCELLED
//!      │                 │ └──failure with attempts left / release──► RETRYING ──claim──► RUNNING
//!      ├──cancel──► CANCELLED             RETRYING ──cancel──► CANCELLED
//!      └──refused before dispatch──► FAILED   RETRYING ──refused──► FAILED
//!   RUNNING ──claim after the lease expired (takeover, higher fence)──► RUNNING
//!   FAILED ──redrive (an operator's `dlq redrive`, with a fresh attempt budget)──► PENDING
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Written by the producer; waiting for a worker.
    Pending,
    /// Claimed: a worker holds the lease and the job is being run.
    Running,
    /// An attempt failed (or was released); the next one waits for its delay.
    Retrying,
    /// Finished with success. Terminal.
    Succeeded,
    /// Finished without success: attempts exhausted or a permanent error. Terminal; only an
    /// operator's redrive takes it back to PENDING.
    Failed,
    /// Cancelled before it finished. Terminal.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Retrying => "RETRYING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    /// Finished: no worker will run it again (a FAILED job only after a redrive).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: JobState,
    pub to: JobState,
}

/// Whether a job may go from `from` to `to`. The only self-transition is RUNNING → RUNNING:
/// another worker taking over an expired lease. The only way out of a terminal state is
/// FAILED → PENDING, a redrive.
pub fn transition(from: JobState, to: JobState) -> Result<JobState, InvalidTransition> {
    use JobState::*;
    let allowed = match from {
        Pending => matches!(to, Running | Failed | Cancelled),
        Retrying => matches!(to, Running | Failed | Cancelled),
        Running => matches!(to, Running | Retrying | Succeeded | Failed | Cancelled),
        Failed => to == Pending,
        Succeeded | Cancelled => false,
    };
    if allowed {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

/// The states from which `to` may be reached, for building the ledger's conditions.
pub fn sources(to: JobState) -> Vec<JobState> {
    JobState::ALL
        .into_iter()
        .filter(|from| transition(*from, to).is_ok())
        .collect()
}

/// How one attempt ended, as the job's history keeps it: `succeeded`, `cancelled`, or the
/// class of its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum AttemptOutcome {
    Succeeded,
    Cancelled,
    Failed(crate::error::ErrorClass),
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Failed(class) => class.as_str(),
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AttemptOutcome> for String {
    fn from(o: AttemptOutcome) -> String {
        o.as_str().to_owned()
    }
}

impl TryFrom<String> for AttemptOutcome {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for AttemptOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "succeeded" => Ok(AttemptOutcome::Succeeded),
            "cancelled" => Ok(AttemptOutcome::Cancelled),
            other => other
                .parse()
                .map(AttemptOutcome::Failed)
                .map_err(|_| format!("unknown attempt outcome {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn attempt_outcomes_are_their_names() {
        use crate::error::ErrorClass;
        let all = [AttemptOutcome::Succeeded, AttemptOutcome::Cancelled]
            .into_iter()
            .chain(ErrorClass::ALL.map(AttemptOutcome::Failed));
        for o in all {
            let v = serde_json::to_value(o).unwrap();
            assert_eq!(v, serde_json::json!(o.as_str()));
            assert_eq!(serde_json::from_value::<AttemptOutcome>(v).unwrap(), o);
        }
        assert!("lost".parse::<AttemptOutcome>().is_err());
    }

    /// Every pair, written out: rows are `from`, columns are `to` in the order of `ALL`
    /// (PENDING, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED).
    const TABLE: [(JobState, [bool; 6]); 6] = [
        (Pending, [false, true, false, false, true, true]),
        (Running, [false, true, true, true, true, true]),
        (Retrying, [false, true, false, false, true, true]),
        (Succeeded, [false, false, false, false, false, false]),
        (Failed, [true, false, false, false, false, false]),
        (Cancelled, [false, false, false, false, false, false]),
    ];

    #[test]
    fn every_pair() {
        for (from, row) in TABLE {
            for (to, want) in JobState::ALL.into_iter().zip(row) {
                assert_eq!(transition(from, to).is_ok(), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out_but_redrive() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            let exits: Vec<JobState> = JobState::ALL
                .into_iter()
                .filter(|to| transition(from, *to).is_ok())
                .collect();
            let want = if from == Failed {
                vec![Pending]
            } else {
                vec![]
            };
            assert_eq!(exits, want, "{from}");
        }
    }

    #[test]
    fn sources_follow_the_table() {
        assert_eq!(sources(Running), vec![Pending, Running, Retrying]);
        assert_eq!(sources(Succeeded), vec![Running]);
        assert_eq!(sources(Pending), vec![Failed]);
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("DONE".parse::<JobState>().is_err());
    }
}
