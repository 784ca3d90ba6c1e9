//! The items every replica shares (`FLEET` / `BUCKET#…`): token buckets, start paces and
//! fleet-wide caps, each updated by one read-decide-write conditional on what was read.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{DynamoLedger, Update};
use crate::ledger::item;
use crate::ledger::{ItemKey, LedgerError};

/// A token bucket's tokens (a number with decimals) and when they were counted (ms).
const BUCKET_TOKENS: &str = "tokens";
const BUCKET_AT: &str = "at";
/// A pace's next free slot, in microseconds.
const PACE_NEXT: &str = "next_us";
/// A cap's holdings (JSON: replica to `[slots, until_ms]`) and their version.
const CAP_HOLDINGS: &str = "holdings";
const CAP_VERSION: &str = "v";

impl DynamoLedger {
    /// A read-decide-write of one small item every replica writes (a token bucket, a pace):
    /// `decide` answers from the item as read, with the attributes to set (none: no write).
    /// The write holds only if each of `guards` still has the value read (or is still
    /// missing), else it is tried again on what the other writer left, eight times; then
    /// `busy`.
    async fn compare_and_set<T>(
        &self,
        key: &ItemKey,
        guards: &[&str],
        busy: T,
        mut decide: impl FnMut(
            Option<&item::Item>,
        ) -> Result<(T, Vec<(&'static str, AttributeValue)>), LedgerError>,
    ) -> Result<T, LedgerError> {
        for _ in 0..8 {
            let found = self.get(key).await?;
            let (answer, set) = decide(found.as_ref())?;
            if set.is_empty() {
                return Ok(answer);
            }
            let mut u = Update::default();
            let mut held = Vec::new();
            for guard in guards {
                let g = u.name(guard);
                held.push(match found.as_ref().and_then(|it| it.get(*guard)) {
                    Some(old) => format!("{g} = {}", u.value(old.clone())),
                    None => format!("attribute_not_exists({g})"),
                });
            }
            for (name, value) in set {
                u.set(name, value);
            }
            u.condition(held.join(" AND "));
            if self
                .conditional(key, &u, ReturnValue::None)
                .await?
                .is_some()
            {
                return Ok(answer);
            }
        }
        Ok(busy)
    }

    pub(super) async fn bucket_take(
        &self,
        bucket: &crate::ledger::Bucket,
        want: u32,
        now_ms: u64,
    ) -> Result<crate::ledger::Taken, LedgerError> {
        let key = item::bucket_key(&bucket.name);
        let busy = crate::ledger::Taken {
            granted: 0,
            wait_ms: 50,
        };
        // Both: the time alone stays the same when this replica's clock is behind it.
        self.compare_and_set(&key, &[BUCKET_AT, BUCKET_TOKENS], busy, |found| {
            let stored = match found {
                Some(it) => {
                    let tokens = it
                        .get(BUCKET_TOKENS)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    Some((tokens, item::Reader::new(it, &key).n(BUCKET_AT)?))
                }
                None => None,
            };
            let available = bucket.refilled(stored, now_ms);
            let taken = bucket.take(available, want);
            if taken.granted == 0 {
                return Ok((taken, vec![]));
            }
            let at = stored.map_or(now_ms, |(_, at)| at.max(now_ms));
            let left = format!("{:.3}", available - f64::from(taken.granted));
            Ok((
                taken,
                vec![(BUCKET_TOKENS, item::n(left)), (BUCKET_AT, item::n(at))],
            ))
        })
        .await
    }

    pub(super) async fn pace_take(
        &self,
        pace: &crate::ledger::Pace,
        want: u32,
        now_ms: u64,
    ) -> Result<crate::ledger::Slots, LedgerError> {
        let key = item::bucket_key(&pace.name);
        // Eight lost races in a row: the pace is busy; the caller waits a little.
        let busy = crate::ledger::Slots {
            first_us: now_ms * 1000,
            spacing_us: pace.spacing_us,
            granted: 0,
            wait_ms: 50,
        };
        self.compare_and_set(&key, &[PACE_NEXT], busy, |found| {
            let next = match found {
                Some(it) => Some(item::Reader::new(it, &key).n(PACE_NEXT)?),
                None => None,
            };
            let (slots, next) = pace.take(next, now_ms, want);
            let set = if slots.granted > 0 {
                vec![(PACE_NEXT, item::n(next))]
            } else {
                vec![]
            };
            Ok((slots, set))
        })
        .await
    }

    pub(super) async fn cap_allot(
        &self,
        cap: &crate::ledger::Cap,
        replica: &str,
        want: u32,
        now_ms: u64,
    ) -> Result<u32, LedgerError> {
        let key = item::bucket_key(&format!("cap-{}", cap.name));
        // Eight lost races in a row: nothing more now; the caller asks again.
        self.compare_and_set(&key, &[CAP_VERSION], 0, |found| {
            let r = found.map(|it| item::Reader::new(it, &key));
            let version: u64 = match &r {
                Some(r) => r.opt_n(CAP_VERSION)?.unwrap_or(0),
                None => 0,
            };
            let held: crate::ledger::Holdings = match r.as_ref().and_then(|r| r.opt_s(CAP_HOLDINGS))
            {
                Some(text) => serde_json::from_str(text).map_err(|e| LedgerError::Malformed {
                    key: format!("{}/{}", key.pk, key.sk),
                    message: format!("cap holdings: {e}"),
                })?,
                None => Default::default(),
            };
            let (mine, held) = cap.allot(held, replica, want, now_ms);
            let text = serde_json::to_string(&held).unwrap_or_else(|_| "{}".into());
            Ok((
                mine,
                vec![
                    (CAP_HOLDINGS, item::s(text)),
                    (CAP_VERSION, item::n(version + 1)),
                ],
            ))
        })
        .await
    }
}
