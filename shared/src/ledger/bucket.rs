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

/// Start slots handed out at a steady rate across the fleet (item `FLEET` /
/// `BUCKET#<name>`, holding the next free slot's time): a replica takes a block of slots and
/// starts one job per slot, no earlier than its time. However the blocks fall among the
/// replicas, slot times are `spacing_us` apart, so no interval of one second holds more
/// than the rate's slots plus one (a token bucket would allow its burst on top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    pub name: String,
    /// Microseconds between two slots (a million over the rate a second).
    pub spacing_us: u64,
    /// Slots are given at most this far ahead of now.
    pub ahead_us: u64,
}

impl Pace {
    /// `per_sec` slots a second, given `block` at a time.
    pub fn new(name: &str, per_sec: f64, block: u32) -> Self {
        let spacing_us = (1e6 / per_sec.max(1e-3)).round().max(1.0) as u64;
        Self {
            name: name.to_owned(),
            spacing_us,
            ahead_us: spacing_us * u64::from(block.max(1)),
        }
    }

    /// What a take of `want` slots at `now_ms` gives, from the next free slot `next_us`
    /// (`None`: never taken), and the next free slot after them.
    pub fn take(&self, next_us: Option<u64>, now_ms: u64, want: u32) -> (Slots, u64) {
        let now_us = now_ms * 1000;
        let first_us = next_us.unwrap_or(0).max(now_us);
        let horizon = now_us + self.ahead_us;
        if first_us >= horizon || want == 0 {
            let wait_ms = (first_us + 1 - horizon.min(first_us + 1))
                .div_ceil(1000)
                .max(1);
            let none = Slots {
                first_us,
                spacing_us: self.spacing_us,
                granted: 0,
                wait_ms,
            };
            return (none, first_us);
        }
        let room = (horizon - first_us).div_ceil(self.spacing_us);
        let granted = u64::from(want).min(room) as u32;
        let slots = Slots {
            first_us,
            spacing_us: self.spacing_us,
            granted,
            wait_ms: 0,
        };
        (slots, first_us + u64::from(granted) * self.spacing_us)
    }
}

/// The answer to [`Ledger::take_slots`]: `granted` slots at `first_us`, `first_us +
/// spacing_us`, …; with none granted, when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub first_us: u64,
    pub spacing_us: u64,
    pub granted: u32,
    pub wait_ms: u64,
}

impl Slots {
    /// The slots' times, in microseconds.
    pub fn times(&self) -> impl Iterator<Item = u64> + use<> {
        let (first, spacing) = (self.first_us, self.spacing_us);
        (0..u64::from(self.granted)).map(move |i| first + i * spacing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three takers asking for blocks at random moments: the slots are spaced evenly, and
    /// no second holds more than the rate's slots plus one.
    #[test]
    fn slots_keep_the_rate_whatever_the_blocks() {
        let pace = Pace::new("p", 20.0, 5);
        assert_eq!((pace.spacing_us, pace.ahead_us), (50_000, 250_000));
        let mut next = None;
        let mut times = Vec::new();
        let mut now_ms = 1_000_000;
        for i in 0..400u64 {
            now_ms += (i * 37) % 90;
            let (slots, after) = pace.take(next, now_ms, 1 + (i % 5) as u32);
            next = Some(after);
            assert!(slots.first_us >= now_ms * 1000, "never in the past");
            times.extend(slots.times());
        }
        times.sort_unstable();
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 50_000), "spaced");
        for (i, t) in times.iter().enumerate() {
            let in_second = times[i..]
                .iter()
                .take_while(|u| **u < t + 1_000_000)
                .count();
            assert!(in_second <= 21, "{in_second} slots in the second from {t}");
        }
        assert!(times.len() > 300, "{} slots", times.len());
    }

    #[test]
    fn no_slot_beyond_the_horizon() {
        let pace = Pace::new("p", 10.0, 2);
        // Next free slot 300 ms ahead, horizon 200 ms: nothing, ask again in 100 ms.
        let (s, after) = pace.take(Some(1_300_000), 1_000, 4);
        assert_eq!((s.granted, s.wait_ms, after), (0, 101, 1_300_000));
        let (s, after) = pace.take(Some(1_050_000), 1_000, 4);
        assert_eq!((s.granted, s.first_us, after), (2, 1_050_000, 1_250_000));
    }
}
