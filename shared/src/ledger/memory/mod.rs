//! The ledger in memory, with the same conditional rules and item layout as
//! [`super::dynamo::DynamoLedger`] (a contract test runs the same scenario against both and
//! compares the items they leave): for unit tests of the engine and the producer, and for
//! benchmarks. With [`MemoryLedger::with_model`] every call is metered against DynamoDB's
//! limits ([`super::model`]) and refused the way DynamoDB refuses it. Not for production: it
//! lives and dies with one process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::item::{
    self, CounterItem, Item, JobItem, PayloadAt, encode_job, item_size, read_units, write_units,
};
use super::model::{Charge, Limits, Meter, Usage};
use super::{ItemKey, Lease, LedgerError, RequestRecord};
use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::state::JobState;

/// Job shards of a request whose jobs were sent straight to SQS (no request item).
pub const DIRECT_JOB_SHARDS: u32 = 16;

mod apply;
mod jobs;
mod requests;

pub(crate) use requests::merge_last;

type Ring = BTreeMap<String, (super::AttemptRecord, Option<String>)>;

#[derive(Debug, Default)]
struct Store {
    jobs: BTreeMap<ItemKey, JobItem>,
    /// Payload items, by their lean item's key.
    payloads: HashMap<ItemKey, String>,
    /// Result items: the fence that wrote it, and the result.
    results: HashMap<ItemKey, (u64, String)>,
    /// History items: the ring and the number recorded.
    histories: HashMap<ItemKey, (Ring, u64)>,
    requests: HashMap<String, RequestRecord>,
    counters: BTreeMap<ItemKey, CounterItem>,
    durations: HashMap<String, Vec<u64>>,
    /// Token buckets: tokens and when they were counted.
    buckets: HashMap<String, (f64, u64)>,
    /// Paces: the next free slot, in microseconds.
    paces: HashMap<String, u64>,
    /// Fleet-wide caps: what each replica holds.
    caps: HashMap<String, crate::ledger::Holdings>,
    /// Release records, by key.
    releases: BTreeMap<ItemKey, super::ReleaseRecord>,
    /// (partition, due time, key) of every job and release record in the due index.
    due: BTreeSet<(String, u64, ItemKey)>,
    /// (partition, index, key) of every job in the failed index.
    failed: BTreeSet<(String, u32, ItemKey)>,
    /// Throughput series: (request, bucket start) → its sums.
    throughput: BTreeMap<(String, u64), crate::ledger::ThroughputPoint>,
}

impl Store {
    fn unindex(&mut self, j: &JobItem) {
        if let Some(d) = &j.due {
            self.due
                .remove(&(d.kind.partition(d.shard), d.at_ms, j.key.clone()));
        }
        if j.failed {
            self.failed
                .remove(&(item::failed_partition(&j.job), j.job.index(), j.key.clone()));
        }
    }

    fn index(&mut self, j: &JobItem) {
        if let Some(d) = &j.due {
            self.due
                .insert((d.kind.partition(d.shard), d.at_ms, j.key.clone()));
        }
        if j.failed {
            self.failed
                .insert((item::failed_partition(&j.job), j.job.index(), j.key.clone()));
        }
    }

    fn release_entry(&self, key: &ItemKey, index_shards: u32) -> Option<(String, u64, ItemKey)> {
        let r = self.releases.get(key)?;
        let it = item::encode_release(r, index_shards, None);
        let part = it.get(item::attr::DUE_KEY)?.as_s().ok()?.clone();
        Some((part, r.at_ms, key.clone()))
    }

    fn unindex_release(&mut self, key: &ItemKey, index_shards: u32) {
        if let Some(e) = self.release_entry(key, index_shards) {
            self.due.remove(&e);
        }
    }

    fn index_release(&mut self, key: &ItemKey, index_shards: u32) {
        if let Some(e) = self.release_entry(key, index_shards) {
            self.due.insert(e);
        }
    }

    /// Replaces a request, keeping its due index entry (its finish check) in step.
    fn put_request(&mut self, r: RequestRecord) {
        let key = item::request_key(&r.request_id);
        if let Some(at) = self
            .requests
            .get(&r.request_id)
            .and_then(|o| o.completion.check_at_ms)
        {
            self.due
                .remove(&(item::FINISH_DUE_PARTITION.to_owned(), at, key.clone()));
        }
        if let Some(at) = r.completion.check_at_ms {
            self.due
                .insert((item::FINISH_DUE_PARTITION.to_owned(), at, key));
        }
        self.requests.insert(r.request_id.clone(), r);
    }

    fn put_job(&mut self, j: JobItem) {
        if let Some(old) = self.jobs.get(&j.key).cloned() {
            self.unindex(&old);
        }
        self.index(&j);
        self.jobs.insert(j.key.clone(), j);
    }
}

/// The in-memory ledger.
#[derive(Debug)]
pub struct MemoryLedger {
    store: Mutex<Store>,
    index_shards: u32,
    history_keep: u32,
    ttl_secs: Option<u64>,
    meter: Option<Meter>,
    /// While set, heartbeats fail as an unreachable table would (tests of lease expiry).
    failing_heartbeats: Mutex<Option<ErrorClass>>,
    /// While set, taking from a shared token bucket fails with an error of this class.
    failing_tokens: Mutex<Option<ErrorClass>>,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

/// The charges of replacing `old` by `new` (either may be absent): the item's partition,
/// and each index entry that appears, moves, changes or goes. `factor` is 2 in a
/// transaction.
fn item_charges(key_pk: &str, old: Option<&Item>, new: Option<&Item>, factor: f64) -> Vec<Charge> {
    let size = |i: Option<&Item>| i.map_or(0, item_size);
    let mut out = vec![Charge::table(
        key_pk,
        factor * write_units(size(old), size(new)) as f64,
    )];
    for (name, entry, sort_attr) in [
        (
            item::DUE_INDEX,
            item::due_entry as fn(&Item) -> Option<(String, usize)>,
            item::attr::DUE_AT,
        ),
        (
            item::FAILED_INDEX,
            item::failed_entry,
            item::attr::FAILED_INDEX_SK,
        ),
        (
            item::REQUESTS_INDEX,
            item::requests_entry,
            item::attr::LIST_AT,
        ),
    ] {
        let before = old.and_then(entry);
        let after = new.and_then(entry);
        let sort_of = |i: Option<&Item>, a: &str| i.and_then(|i| i.get(a).cloned());
        match (before, after) {
            (None, None) => {}
            (Some((p, s)), None) => out.push(Charge::index(name, &p, write_units(s, 0) as f64)),
            (None, Some((p, s))) => out.push(Charge::index(name, &p, write_units(0, s) as f64)),
            (Some((p0, s0)), Some((p1, s1))) => {
                let moved = p0 != p1 || sort_of(old, sort_attr) != sort_of(new, sort_attr);
                if moved {
                    out.push(Charge::index(name, &p0, write_units(s0, 0) as f64));
                    out.push(Charge::index(name, &p1, write_units(0, s1) as f64));
                } else if old.map(entry_attrs(name)) != new.map(entry_attrs(name)) {
                    out.push(Charge::index(name, &p1, write_units(s0, s1) as f64));
                }
            }
        }
    }
    out
}

/// The attributes an index entry projects (a change to any of them rewrites the entry).
fn entry_attrs(
    index: &str,
) -> impl Fn(&Item) -> Vec<Option<aws_sdk_dynamodb::types::AttributeValue>> {
    let names: &'static [&'static str] = match index {
        item::DUE_INDEX => &[
            item::attr::STATE,
            item::attr::FENCE,
            item::attr::OWNER,
            item::attr::TASK,
        ],
        item::FAILED_INDEX => &[
            item::attr::ATTEMPTS,
            item::attr::ERROR_CLASS,
            item::attr::LAST_ERROR,
            item::attr::LAST_ATTEMPT,
        ],
        _ => &[],
    };
    move |i: &Item| names.iter().map(|n| i.get(*n).cloned()).collect()
}

fn stale(lease: &Lease) -> LedgerError {
    LedgerError::Stale {
        job: lease.job.to_string(),
        fence: lease.fence,
    }
}

fn too_large(op: &'static str, key: &ItemKey, bytes: usize) -> LedgerError {
    LedgerError::Aws {
        op,
        class: ErrorClass::Permanent,
        message: format!(
            "ValidationException: item {key} would be {bytes} bytes, over DynamoDB's {} (model)",
            item::ITEM_MAX_BYTES
        ),
    }
}

/// Whether `lease` still owns `j`.
fn owns(j: &JobItem, lease: &Lease) -> bool {
    j.state == JobState::Running
        && j.owner.as_deref() == Some(lease.owner.as_str())
        && j.fence == lease.fence
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self {
            store: Mutex::new(Store::default()),
            index_shards: 16,
            history_keep: 10,
            ttl_secs: None,
            meter: None,
            failing_heartbeats: Mutex::new(None),
            failing_tokens: Mutex::new(None),
        }
    }

    /// Meters every call against `limits` and refuses what DynamoDB would refuse.
    pub fn with_model(mut self, limits: Limits) -> Self {
        self.meter = Some(Meter::new(limits));
        self
    }

    pub fn with_index_shards(mut self, shards: u32) -> Self {
        self.index_shards = shards.max(1);
        self
    }

    pub fn with_history_keep(mut self, keep: u32) -> Self {
        self.history_keep = keep.max(1);
        self
    }

    pub fn with_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.ttl_secs = ttl.map(|t| t.as_secs());
        self
    }

    /// What the model metered so far (`None` without a model).
    pub fn usage(&self) -> Option<Usage> {
        self.meter.as_ref().map(Meter::usage)
    }

    /// Makes heartbeats fail (or succeed again) as if the table could not be reached.
    pub fn fail_heartbeats(&self, fail: bool) {
        self.fail_heartbeats_as(fail.then_some(ErrorClass::Transient));
    }

    /// Makes heartbeats fail with an error of `class` (or succeed again with `None`).
    pub fn fail_heartbeats_as(&self, class: Option<ErrorClass>) {
        *self
            .failing_heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = class;
    }

    /// Makes taking from a shared token bucket fail with an error of `class` (or succeed
    /// again with `None`).
    pub fn fail_tokens_as(&self, class: Option<ErrorClass>) {
        *self
            .failing_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = class;
    }

    /// The error a call of `op` fails with while `switch` is set.
    fn injected(switch: &Mutex<Option<ErrorClass>>, op: &'static str) -> Result<(), LedgerError> {
        match *switch.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(class) => Err(LedgerError::Aws {
                op,
                class,
                message: "refused (test)".into(),
            }),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, op: &'static str, charges: &[Charge]) -> Result<(), LedgerError> {
        match &self.meter {
            Some(m) => m.write(op, charges),
            None => Ok(()),
        }
    }

    /// What a conditional write refused by its condition costs: the write units of the
    /// item as it stands (DynamoDB charges a failed condition like a write).
    fn refused_write(
        &self,
        op: &'static str,
        pk: &str,
        old_item: &Item,
    ) -> Result<(), LedgerError> {
        self.write(
            op,
            &[Charge::table(
                pk,
                write_units(item_size(old_item), 0) as f64,
            )],
        )
    }

    fn read(&self, op: &'static str, charges: &[Charge]) -> Result<(), LedgerError> {
        match &self.meter {
            Some(m) => m.read(op, charges),
            None => Ok(()),
        }
    }

    /// What due index partition `part` lists before `before_ms`, oldest first, at most
    /// `limit`, metered as one Query: `entry` reads each listed item from the store (with
    /// its attributes, for the entry's size).
    fn due_scan<T>(
        &self,
        part: &str,
        before_ms: u64,
        limit: usize,
        entry: impl Fn(&Store, u64, &ItemKey) -> Option<(T, Item)>,
    ) -> Result<Vec<T>, LedgerError> {
        let st = self.lock();
        let lo = (part.to_owned(), 0u64, ItemKey::new("", ""));
        let mut out = Vec::new();
        let mut bytes = 0;
        for (p, at, key) in st.due.range(lo..) {
            if p != part || *at >= before_ms || out.len() >= limit {
                break;
            }
            let Some((e, it)) = entry(&st, *at, key) else {
                continue;
            };
            bytes += item::due_entry(&it).map_or(0, |(_, s)| s);
            out.push(e);
        }
        self.read(
            "Query",
            &[Charge::index(
                item::DUE_INDEX,
                part,
                read_units(bytes, false),
            )],
        )?;
        Ok(out)
    }

    fn expiry(&self, now_ms: u64) -> Option<u64> {
        self.ttl_secs.map(|t| now_ms / 1000 + t)
    }

    /// Checks the 400 KB limit of an item about to be written.
    fn check_size(&self, op: &'static str, key: &ItemKey, item: &Item) -> Result<(), LedgerError> {
        let bytes = item_size(item);
        if bytes > item::ITEM_MAX_BYTES {
            if let Some(m) = &self.meter {
                m.too_large();
            }
            return Err(too_large(op, key, bytes));
        }
        Ok(())
    }

    /// Writes PENDING jobs directly (tests that need jobs without a producer).
    pub fn insert_pending(&self, job: &JobId, job_type: &str, payload_json: &str, now_ms: u64) {
        let key = item::job_key(job, DIRECT_JOB_SHARDS);
        let payload = item::payload_placement(&key, job_type, payload_json);
        let mut st = self.lock();
        if payload == PayloadAt::Apart {
            st.payloads.insert(key.clone(), payload_json.to_owned());
        }
        st.put_job(JobItem::pending(
            job.clone(),
            key,
            job_type,
            payload,
            now_ms,
            self.index_shards,
        ));
    }

    /// A copy of a job's lean item, by job id (any shard count).
    pub fn get(&self, job_id: &str) -> Option<JobItem> {
        let st = self.lock();
        st.jobs
            .values()
            .find(|j| j.job.to_string() == job_id)
            .cloned()
    }

    /// Every job's lean item, in key order.
    pub fn all_jobs(&self) -> Vec<JobItem> {
        self.lock().jobs.values().cloned().collect()
    }

    /// Release records not yet checked by a sweeper (unmetered: for benchmarks).
    pub fn release_records(&self) -> usize {
        self.lock().releases.len()
    }

    /// The DynamoDB attributes every item would have, for comparison with the real table.
    pub fn items(&self) -> Vec<Item> {
        let st = self.lock();
        let mut out: Vec<Item> = st.jobs.values().map(encode_job).collect();
        for (k, p) in &st.payloads {
            out.push(item::payload_item(k, p, None));
        }
        for (k, (fence, r)) in &st.results {
            out.push(item::result_item(k, *fence, r, None));
        }
        for (k, (ring, n)) in &st.histories {
            out.push(item::history_item(k, ring, *n, None));
        }
        for r in st.releases.values() {
            out.push(item::encode_release(r, self.index_shards, None));
        }
        out
    }

    fn payload_of(&self, st: &Store, j: &JobItem) -> String {
        match &j.payload {
            PayloadAt::Inline(p) => p.clone(),
            PayloadAt::Apart => st
                .payloads
                .get(&j.key)
                .cloned()
                .unwrap_or_else(|| "null".into()),
        }
    }
}
