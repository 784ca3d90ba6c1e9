//! Wall-clock time as the ledger stores it: milliseconds since the Unix epoch. Every replica
//! compares these numbers, so they are wall-clock, not monotonic; leases are judged with a
//! margin for clock skew (`worker.clock_skew_secs`).

pub use fleet_job::time::now_ms;

/// Where the engine reads the time. `System` in production; `Tokio` follows tokio's clock
/// from a starting wall time, so tests that pause and advance tokio's time move the
/// ledger's clock with it.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    #[default]
    System,
    Tokio {
        base_ms: u64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that starts at the current wall time and advances with tokio's time.
    pub fn tokio() -> Self {
        Clock::Tokio {
            base_ms: now_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => now_ms(),
            Clock::Tokio { base_ms, start } => base_ms + start.elapsed().as_millis() as u64,
        }
    }
}
