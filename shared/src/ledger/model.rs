//! A model of DynamoDB's limits, for the in-memory ledger: the local endpoint enforces none
//! of them, so the design is checked against them here.
//!
//! - A partition key gives at most 1,000 write units and 3,000 read units a second, in
//!   on-demand mode too; an index partition the same, and a write whose index write would
//!   be throttled is throttled on the table (a global index throttles its base table).
//! - A write costs one unit per started KB of the larger of the old and the new item, a
//!   refused conditional write too; a transactional write twice that. A read costs one unit
//!   per started 4 KB (half when eventually consistent).
//! - An item holds at most 400 KB.
//!
//! The model is strict: a key's budget is its second's, with none of DynamoDB's burst
//! credit, so a design that passes it has headroom on AWS. A throttled call is refused whole
//! (nothing written, nothing charged) with the error DynamoDB's throughput errors map to.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::time::Instant;

use super::LedgerError;

/// The limits the model applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub key_write_units_per_sec: f64,
    pub key_read_units_per_sec: f64,
}

impl Limits {
    /// DynamoDB's per-partition limits.
    pub const AWS: Limits = Limits {
        key_write_units_per_sec: 1000.0,
        key_read_units_per_sec: 3000.0,
    };
}

/// What the ledger consumed, and the hottest keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Write units on the table's partitions.
    pub write_units: f64,
    /// Write units on index partitions.
    pub index_write_units: f64,
    pub read_units: f64,
    pub index_read_units: f64,
    pub write_calls: u64,
    pub read_calls: u64,
    pub throttled_writes: u64,
    pub throttled_reads: u64,
    /// Writes refused because an item would exceed 400 KB.
    pub too_large: u64,
    /// The table partition that took the most write units in one second, and how many.
    pub hottest_key: Option<(String, f64)>,
    /// The same for index partitions.
    pub hottest_index_key: Option<(String, f64)>,
    /// The partition (table or index) that served the most read units in one second.
    pub hottest_read_key: Option<(String, f64)>,
}

impl Usage {
    /// `self - earlier`, for the figures of one operation (hottest keys are not subtracted).
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            write_units: self.write_units - earlier.write_units,
            index_write_units: self.index_write_units - earlier.index_write_units,
            read_units: self.read_units - earlier.read_units,
            index_read_units: self.index_read_units - earlier.index_read_units,
            write_calls: self.write_calls - earlier.write_calls,
            read_calls: self.read_calls - earlier.read_calls,
            throttled_writes: self.throttled_writes - earlier.throttled_writes,
            throttled_reads: self.throttled_reads - earlier.throttled_reads,
            too_large: self.too_large - earlier.too_large,
            hottest_key: self.hottest_key.clone(),
            hottest_index_key: self.hottest_index_key.clone(),
            hottest_read_key: self.hottest_read_key.clone(),
        }
    }
}

/// Units one call consumes on one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The partition key's value (an index partition's is prefixed with the index name).
    pub key: String,
    pub units: f64,
    pub index: bool,
}

impl Charge {
    pub fn table(key: impl Into<String>, units: f64) -> Self {
        Self {
            key: key.into(),
            units,
            index: false,
        }
    }

    pub fn index(index: &str, key: &str, units: f64) -> Self {
        Self {
            key: format!("{index}:{key}"),
            units,
            index: true,
        }
    }
}

#[derive(Debug, Default)]
struct KeySecond {
    second: u64,
    write: f64,
    read: f64,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, KeySecond>,
    usage: Usage,
}

/// Meters calls against [`Limits`], per partition and second of tokio's clock (so a paused
/// clock in a benchmark gives simulated seconds).
#[derive(Debug)]
pub struct Meter {
    limits: Limits,
    start: Instant,
    state: Mutex<State>,
}

impl Meter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            start: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn second(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_secs()
    }

    /// Charges a write to every partition it touches, or throttles it whole.
    pub fn write(&self, op: &'static str, charges: &[Charge]) -> Result<(), LedgerError> {
        self.charge(op, charges, true)
    }

    /// Charges a read, or throttles it.
    pub fn read(&self, op: &'static str, charges: &[Charge]) -> Result<(), LedgerError> {
        self.charge(op, charges, false)
    }

    /// Counts a write refused for an item over 400 KB.
    pub fn too_large(&self) {
        self.lock().usage.too_large += 1;
    }

    fn charge(&self, op: &'static str, charges: &[Charge], write: bool) -> Result<(), LedgerError> {
        let now = self.second();
        let limit = if write {
            self.limits.key_write_units_per_sec
        } else {
            self.limits.key_read_units_per_sec
        };
        let mut st = self.lock();
        // Merge charges on the same key (a transaction may touch one partition twice).
        let mut merged: Vec<(&str, f64, bool)> = Vec::new();
        for c in charges {
            match merged.iter_mut().find(|(k, _, _)| *k == c.key) {
                Some(m) => m.1 += c.units,
                None => merged.push((c.key.as_str(), c.units, c.index)),
            }
        }
        for (key, units, _) in &merged {
            let used = st.keys.get(*key).map_or(0.0, |k| {
                if k.second != now {
                    0.0
                } else if write {
                    k.write
                } else {
                    k.read
                }
            });
            if used + units > limit {
                if write {
                    st.usage.throttled_writes += 1;
                } else {
                    st.usage.throttled_reads += 1;
                }
                return Err(LedgerError::throttled(
                    op,
                    format!(
                        "{} on partition {key}: {:.0} units this second, limit {limit:.0} (model)",
                        if write {
                            "ProvisionedThroughputExceededException"
                        } else {
                            "ProvisionedThroughputExceededException (reads)"
                        },
                        used + units
                    ),
                ));
            }
        }
        if write {
            st.usage.write_calls += 1;
        } else {
            st.usage.read_calls += 1;
        }
        for (key, units, index) in merged {
            let k = st.keys.entry(key.to_owned()).or_default();
            if k.second != now {
                *k = KeySecond {
                    second: now,
                    write: 0.0,
                    read: 0.0,
                };
            }
            let total = if write {
                k.write += units;
                k.write
            } else {
                k.read += units;
                k.read
            };
            let u = &mut st.usage;
            match (write, index) {
                (true, false) => u.write_units += units,
                (true, true) => u.index_write_units += units,
                (false, false) => u.read_units += units,
                (false, true) => u.index_read_units += units,
            }
            let hottest = match (write, index) {
                (true, false) => &mut u.hottest_key,
                (true, true) => &mut u.hottest_index_key,
                (false, _) => &mut u.hottest_read_key,
            };
            if hottest.as_ref().is_none_or(|(_, v)| total > *v) {
                *hottest = Some((key.to_owned(), total));
            }
        }
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        self.lock().usage.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_key_over_its_second_is_throttled_and_the_next_second_is_fresh() {
        let m = Meter::new(Limits::AWS);
        for _ in 0..1000 {
            m.write("UpdateItem", &[Charge::table("J#r#0", 1.0)])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let err = m.write("UpdateItem", &[Charge::table("J#r#0", 1.0)]);
        assert!(
            matches!(err, Err(LedgerError::Aws { class, .. }) if class == crate::error::ErrorClass::Throttled)
        );
        // Another key has its own budget; an index throttle refuses the whole write.
        assert!(
            m.write("UpdateItem", &[Charge::table("J#r#1", 1.0)])
                .is_ok()
        );
        assert!(
            m.write(
                "UpdateItem",
                &[
                    Charge::table("J#r#2", 1.0),
                    Charge::index("due", "L#0", 1001.0)
                ]
            )
            .is_err()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            m.write("UpdateItem", &[Charge::table("J#r#0", 1.0)])
                .is_ok()
        );
        let u = m.usage();
        assert_eq!(u.throttled_writes, 2);
        assert_eq!(u.write_units, 1002.0);
        assert_eq!(u.hottest_key, Some(("J#r#0".into(), 1000.0)));
        assert_eq!(u.index_write_units, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_have_three_times_the_budget() {
        let m = Meter::new(Limits::AWS);
        assert!(m.read("Query", &[Charge::table("k", 3000.0)]).is_ok());
        assert!(m.read("Query", &[Charge::table("k", 0.5)]).is_err());
        assert_eq!(m.usage().throttled_reads, 1);
    }
}
