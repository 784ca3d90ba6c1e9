//! Token buckets kept in the ledger and shared by every replica.

/// A token bucket kept in the ledger (item `FLEET` / `BUCKET#<name>`), shared by the
/// replicas: fleet-wide rates such as the account's RunTask budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub name: String,
    /// Tokens a second.
    pub rate: f64,
    /// Most tokens saved up.
    pub burst: f64,
}

impl Bucket {
    /// The tokens a bucket holds at `now_ms`, from what it held (`tokens` at `at_ms`; a
    /// bucket never written is full).
    pub fn refilled(&self, stored: Option<(f64, u64)>, now_ms: u64) -> f64 {
        match stored {
            None => self.burst,
            Some((tokens, at_ms)) => {
                let secs = now_ms.saturating_sub(at_ms) as f64 / 1000.0;
                (tokens + secs * self.rate).min(self.burst).max(0.0)
            }
        }
    }

    /// What a take of `want` from `available` tokens gives.
    pub fn take(&self, available: f64, want: u32) -> Taken {
        let granted = (available.floor() as u32).min(want);
        let wait_ms = if granted == 0 {
            (((1.0 - available) / self.rate.max(1e-6)) * 1000.0)
                .ceil()
                .max(1.0) as u64
        } else {
            0
        };
        Taken { granted, wait_ms }
    }
}

/// The answer to [`Ledger::take_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub granted: u32,
    /// With none granted: when the next token is due.
    pub wait_ms: u64,
}
