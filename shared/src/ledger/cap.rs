//! Fleet-wide caps: a number of slots (Lambda's reserved concurrency, say) shared by every
//! replica through one ledger item (`FLEET` / `BUCKET#cap-<name>`) that lists what each
//! replica holds and until when. A replica asks to hold a number of slots, renews its
//! holding every second, and gives back what it no longer needs at its renewals; a holding
//! not renewed expires, so a replica that dies frees its slots after the holding's TTL.
//! The holdings written never add up to more than the cap.

use std::collections::BTreeMap;

/// What each replica holds: slots, and until when (ms since the epoch).
pub type Holdings = BTreeMap<String, (u32, u64)>;

/// A cap shared by every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub name: String,
    /// Slots across the fleet.
    pub limit: u32,
    /// How long a holding lasts unrenewed.
    pub ttl_ms: u64,
}

impl Cap {
    /// What `replica` holds after asking, at `now_ms`, to hold `want` slots: as many as the
    /// others' unexpired holdings leave, up to `want`; and the holdings to write.
    pub fn allot(
        &self,
        mut held: Holdings,
        replica: &str,
        want: u32,
        now_ms: u64,
    ) -> (u32, Holdings) {
        held.retain(|r, (_, until)| *until > now_ms && r != replica);
        let others: u32 = held.values().map(|(n, _)| *n).sum();
        let mine = want.min(self.limit.saturating_sub(others));
        if mine > 0 {
            held.insert(replica.to_owned(), (mine, now_ms + self.ttl_ms));
        }
        (mine, held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_never_add_up_past_the_cap_and_expire() {
        let cap = Cap {
            name: "lambda".into(),
            limit: 10,
            ttl_ms: 1_000,
        };
        let (a, h) = cap.allot(Holdings::new(), "a", 6, 0);
        let (b, h) = cap.allot(h, "b", 6, 10);
        assert_eq!((a, b), (6, 4));
        // A renewal asking for less gives the rest back; another replica takes it.
        let (a, h) = cap.allot(h, "a", 2, 20);
        let (c, h) = cap.allot(h, "c", 9, 30);
        assert_eq!((a, c), (2, 4));
        assert_eq!(h.values().map(|(n, _)| n).sum::<u32>(), 10);
        // Nothing left: a holding of none is not written.
        let (d, h) = cap.allot(h, "d", 3, 40);
        assert_eq!(d, 0);
        assert!(!h.contains_key("d"));
        // "a" stops renewing: after its TTL its slots are free again.
        let (b, h) = cap.allot(h, "b", 4, 900);
        let (c, h) = cap.allot(h, "c", 4, 900);
        let (d, _) = cap.allot(h, "d", 9, 1_500);
        assert_eq!((b, c, d), (4, 4, 2));
    }
}
