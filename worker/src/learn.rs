//! Learned routing: every replica records how long each job type's attempts took, publishes
//! the durations to the ledger (one write per job type every `routing.learn_secs`, not one per
//! job), and reads everyone's back to decide each type's learned route
//! ([`crate::routing::learned_route`], with hysteresis).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use fleet_shared::config::Config;
use fleet_shared::ledger::Ledger;
use fleet_shared::message::Target;
use tracing::{info, warn};

use crate::routing::learned_route;

#[derive(Debug, Default)]
pub struct Learner {
    pending: Mutex<HashMap<String, Vec<u64>>>,
    routes: Mutex<HashMap<String, Option<Target>>>,
    seen: Mutex<HashSet<String>>,
}

impl Learner {
    pub fn new() -> Self {
        Self::default()
    }

    /// An attempt of `job_type` that took `ms` (a success, or a timeout: a job that times out
    /// in Lambda is at least that long).
    pub fn observe(&self, job_type: &str, ms: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job_type.to_owned())
            .or_default()
            .push(ms);
    }

    /// The job type's learned route, as of the last sync.
    pub fn route(&self, job_type: &str) -> Option<Target> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_type.to_owned());
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_type)
            .copied()
            .flatten()
    }

    /// Publishes this replica's new durations and refreshes the learned routes of the job
    /// types it has seen. Errors are logged; routing then keeps its last view.
    pub async fn sync<L: Ledger>(&self, ledger: &L, config: &Config) {
        let pending: Vec<(String, Vec<u64>)> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (job_type, samples) in &pending {
            if let Err(e) = ledger
                .add_durations(job_type, samples, config.routing.learn_window)
                .await
            {
                warn!(%job_type, error = %e, "could not publish durations");
            }
        }
        let types: Vec<String> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.extend(pending.into_iter().map(|(t, _)| t));
            seen.iter().cloned().collect()
        };
        for job_type in types {
            match ledger.durations(&job_type).await {
                Ok(durations) => {
                    let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
                    let current = routes.get(&job_type).copied().flatten();
                    let next = learned_route(config, &durations, current);
                    if next != current {
                        info!(%job_type, route = ?next, samples = durations.len(), p95_ms = ?crate::routing::p95(&durations), "learned route changed");
                    }
                    routes.insert(job_type, next);
                }
                Err(e) => warn!(%job_type, error = %e, "could not read durations"),
            }
        }
    }
}
