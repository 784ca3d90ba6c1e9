//! The ledger in memory, with the same conditional rules and item layout as
//! [`super::dynamo::DynamoLedger`] (a contract test runs the same scenario against both and
//! compares the items they leave): for unit tests of the engine and the producer, and for
//! benchmarks. With [`MemoryLedger::with_model`] every call is metered against DynamoDB's
//! limits ([`super::model`]) and refused the way DynamoDB refuses it. Not for production: it
//! lives and dies with one process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::item::{
    self, CounterItem, DueKind, Item, JobItem, PayloadAt, ResultAt, SHORT_ERROR_BYTES, clip_bytes,
    decode_history, due_for, encode_job, item_size, read_units, write_units,
};
use super::model::{Charge, Limits, Meter, Usage};
use super::{
    Adopted, Change, Claim, ClaimRequest, Counts, DueEntry, Finish, History, ItemKey, JobDetail,
    Lease, Ledger, LedgerError, LiveReport, NewJob, Page, PutRequestOutcome, RequestLedger,
    RequestRecord, RequestView, Requeue,
};
use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::state::{JobState, transition};

/// Job shards of a request whose jobs were sent straight to SQS (no request item).
pub const DIRECT_JOB_SHARDS: u32 = 16;

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
    /// (partition, due time, key) of every job in the due index.
    due: BTreeSet<(String, u64, ItemKey)>,
    /// (partition, index, key) of every job in the failed index.
    failed: BTreeSet<(String, u32, ItemKey)>,
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
    failing_heartbeats: std::sync::atomic::AtomicBool,
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
    for (name, entry) in [
        (
            item::DUE_INDEX,
            item::due_entry as fn(&Item) -> Option<(String, usize)>,
        ),
        (item::FAILED_INDEX, item::failed_entry),
    ] {
        let before = old.and_then(entry);
        let after = new.and_then(entry);
        let sort_of = |i: Option<&Item>, a: &str| i.and_then(|i| i.get(a).cloned());
        let sort_attr = if name == item::DUE_INDEX {
            item::attr::DUE_AT
        } else {
            item::attr::FAILED_INDEX_SK
        };
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
    let names: &'static [&'static str] = if index == item::DUE_INDEX {
        &[
            item::attr::STATE,
            item::attr::FENCE,
            item::attr::OWNER,
            item::attr::TASK,
        ]
    } else {
        &[
            item::attr::ATTEMPTS,
            item::attr::ERROR_CLASS,
            item::attr::LAST_ERROR,
            item::attr::LAST_ATTEMPT,
        ]
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
            failing_heartbeats: std::sync::atomic::AtomicBool::new(false),
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
        self.failing_heartbeats
            .store(fail, std::sync::atomic::Ordering::Relaxed);
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

    fn read(&self, op: &'static str, charges: &[Charge]) -> Result<(), LedgerError> {
        match &self.meter {
            Some(m) => m.read(op, charges),
            None => Ok(()),
        }
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

    /// The item a change leaves, or why it cannot apply.
    fn applied(&self, st: &Store, change: &Change) -> Result<JobItem, LedgerError> {
        let key = change.key();
        let Some(j) = st.jobs.get(key) else {
            return match change {
                Change::Finish { lease, .. } | Change::Release { lease, .. } => Err(stale(lease)),
                _ => Err(LedgerError::Stale {
                    job: change.job().to_string(),
                    fence: 0,
                }),
            };
        };
        let mut j = j.clone();
        match change {
            Change::Finish {
                lease,
                finish,
                record,
            } => {
                if !owns(&j, lease) {
                    return Err(stale(lease));
                }
                transition(JobState::Running, finish.state())?;
                let ended = record.ended_ms;
                j.state = finish.state();
                j.owner = None;
                j.lease_until_ms = None;
                j.retry_at_ms = None;
                j.duration_ms = Some(ended.saturating_sub(record.started_ms));
                j.last = Some(record.clone());
                match finish {
                    Finish::Succeeded { result } => {
                        j.finished_at_ms = Some(ended);
                        j.due = None;
                        j.retry_debt = false;
                        j.last_error = None;
                        j.error_class = None;
                        j.result = match result {
                            None => ResultAt::None,
                            Some(r) if item::result_inline(lease.item_bytes, r) => {
                                ResultAt::Inline(r.clone())
                            }
                            Some(_) => ResultAt::Item(lease.fence),
                        };
                        j.expires_at = self.expiry(ended);
                    }
                    Finish::Retry {
                        class,
                        error,
                        retry_at_ms,
                        refund,
                    } => {
                        j.retry_at_ms = Some(*retry_at_ms);
                        j.due =
                            due_for(&j.job, JobState::Retrying, *retry_at_ms, self.index_shards);
                        j.last_error = Some(clip_bytes(error, SHORT_ERROR_BYTES));
                        j.error_class = Some(*class);
                        j.retry_debt = true;
                        if *refund {
                            j.attempts = j.attempts.saturating_sub(1);
                        }
                    }
                    Finish::Failed { class, error } => {
                        j.finished_at_ms = Some(ended);
                        j.due = None;
                        j.retry_debt = false;
                        j.failed = true;
                        j.last_error = Some(clip_bytes(error, SHORT_ERROR_BYTES));
                        j.error_class = Some(*class);
                        j.expires_at = self.expiry(ended);
                    }
                    Finish::Cancelled => {
                        j.finished_at_ms = Some(ended);
                        j.due = None;
                        j.retry_debt = false;
                        j.expires_at = self.expiry(ended);
                    }
                }
            }
            Change::Release { lease, now_ms } => {
                if !owns(&j, lease) {
                    return Err(stale(lease));
                }
                transition(JobState::Running, JobState::Retrying)?;
                j.state = JobState::Retrying;
                j.attempts = j.attempts.saturating_sub(1);
                j.owner = None;
                j.lease_until_ms = None;
                j.retry_at_ms = None;
                j.task = None;
                j.retry_debt = true;
                j.due = due_for(&j.job, JobState::Retrying, *now_ms, self.index_shards);
            }
            Change::CancelWaiting { from, now_ms, .. } => {
                if j.state != *from {
                    return Err(LedgerError::Stale {
                        job: j.job.to_string(),
                        fence: j.fence,
                    });
                }
                transition(*from, JobState::Cancelled)?;
                j.state = JobState::Cancelled;
                j.finished_at_ms = Some(*now_ms);
                j.due = None;
                j.retry_at_ms = None;
                j.retry_debt = false;
                j.expires_at = self.expiry(*now_ms);
            }
            Change::Redrive {
                fence,
                budget,
                target,
                now_ms,
                ..
            } => {
                if j.state != JobState::Failed || j.fence != *fence {
                    return Err(LedgerError::Stale {
                        job: j.job.to_string(),
                        fence: *fence,
                    });
                }
                transition(JobState::Failed, JobState::Pending)?;
                j.state = JobState::Pending;
                j.max_attempts = Some(j.attempts + budget);
                j.due = due_for(&j.job, JobState::Pending, *now_ms, self.index_shards);
                if target.is_some() {
                    j.target = *target;
                }
                j.finished_at_ms = None;
                j.failed = false;
                j.expires_at = None;
                j.requeued_at_ms = None;
            }
        }
        Ok(j)
    }
}

impl Ledger for MemoryLedger {
    fn index_shards(&self) -> u32 {
        self.index_shards
    }

    async fn request_view(&self, request_id: &str) -> Result<RequestView, LedgerError> {
        let st = self.lock();
        let key = item::request_key(request_id);
        let r = st.requests.get(request_id);
        let size = r.map_or(0, |r| item_size(&item::encode_request(r, None)));
        self.read("GetItem", &[Charge::table(&key.pk, read_units(size, true))])?;
        Ok(match r {
            Some(r) => RequestView {
                exists: true,
                job_shards: r.job_shards,
                cancelled: r.cancelled_at_ms.is_some(),
                stop_running: r.stop_running,
            },
            None => RequestView::direct(DIRECT_JOB_SHARDS),
        })
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
        let key = item::job_key(req.job, req.shards);
        let mut st = self.lock();
        let old = st.jobs.get(&key).cloned();
        let old_item = old.as_ref().map(encode_job);
        let claimable = match &old {
            None => true,
            Some(j) => match j.state {
                JobState::Pending | JobState::Retrying => {
                    j.retry_at_ms.is_none_or(|t| t <= req.now_ms)
                }
                JobState::Running => j
                    .lease_until_ms
                    .is_some_and(|t| t < req.now_ms.saturating_sub(req.skew_ms)),
                _ => false,
            },
        };
        let Some(j) = old.as_ref().filter(|_| claimable).cloned().or_else(|| {
            old.is_none().then(|| {
                let payload = item::payload_placement(&key, req.job_type, req.payload_json);
                JobItem::pending(
                    req.job.clone(),
                    key.clone(),
                    req.job_type,
                    payload,
                    req.now_ms,
                    self.index_shards,
                )
            })
        }) else {
            // Refused: the write still costs its item's size.
            self.write(
                "UpdateItem",
                &[Charge::table(
                    &key.pk,
                    write_units(old_item.as_ref().map_or(0, item_size), 0) as f64,
                )],
            )?;
            let Some(j) = old else {
                return Ok(Claim::NotYet {
                    state: JobState::Pending,
                    until_ms: req.now_ms,
                });
            };
            return Ok(match j.state {
                s if s.is_terminal() => Claim::Finished {
                    key,
                    state: s,
                    last_error: j.last_error,
                    error_class: j.error_class,
                },
                JobState::Running => Claim::NotYet {
                    state: JobState::Running,
                    until_ms: j.lease_until_ms.unwrap_or(req.now_ms) + req.skew_ms,
                },
                s => Claim::NotYet {
                    state: s,
                    until_ms: j.retry_at_ms.unwrap_or(req.now_ms),
                },
            });
        };
        let created = old.is_none();
        transition(j.state, JobState::Running)?;
        let new = item::claimed(&j, req, self.index_shards);
        let new_item = encode_job(&new);
        self.check_size("UpdateItem", &key, &new_item)?;
        let mut charges = item_charges(&key.pk, old_item.as_ref(), Some(&new_item), 1.0);
        let payload_apart = created && new.payload == PayloadAt::Apart;
        if payload_apart {
            let p = item::payload_item(&key, req.payload_json, self.expiry(req.now_ms));
            self.check_size("PutItem", &key, &p)?;
            charges.push(Charge::table(
                item::satellite(&key, item::PAYLOAD_SUFFIX).pk,
                write_units(0, item_size(&p)) as f64,
            ));
        }
        self.write("UpdateItem", &charges)?;
        if payload_apart {
            st.payloads.insert(key.clone(), req.payload_json.to_owned());
        }
        let lease = item::lease_of(old.as_ref(), &new, req);
        st.put_job(new);
        Ok(Claim::Claimed(lease))
    }

    async fn heartbeat(&self, lease: &Lease, until_ms: u64) -> Result<(), LedgerError> {
        if self
            .failing_heartbeats
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(LedgerError::Aws {
                op: "UpdateItem",
                class: ErrorClass::Transient,
                message: "unreachable (test)".into(),
            });
        }
        self.owned_update("UpdateItem", lease, |j| {
            j.lease_until_ms = Some(until_ms);
            if let Some(d) = &mut j.due {
                d.at_ms = until_ms;
            }
        })
    }

    async fn record_task(&self, lease: &Lease, task: &str) -> Result<(), LedgerError> {
        self.owned_update("UpdateItem", lease, |j| j.task = Some(task.to_owned()))
    }

    async fn take_tokens(
        &self,
        bucket: &super::Bucket,
        want: u32,
        now_ms: u64,
    ) -> Result<super::Taken, LedgerError> {
        let key = item::bucket_key(&bucket.name);
        self.read("GetItem", &[Charge::table(&key.pk, read_units(100, true))])?;
        let mut st = self.lock();
        let stored = st.buckets.get(&bucket.name).copied();
        let available = bucket.refilled(stored, now_ms);
        let taken = bucket.take(available, want);
        if taken.granted > 0 {
            self.write("UpdateItem", &[Charge::table(&key.pk, 1.0)])?;
            let at = stored.map_or(now_ms, |(_, at)| at.max(now_ms));
            st.buckets.insert(
                bucket.name.clone(),
                (available - f64::from(taken.granted), at),
            );
        }
        Ok(taken)
    }

    async fn running_at(&self, attempts: &[(ItemKey, u64)]) -> Result<Vec<bool>, LedgerError> {
        // As DynamoDB: a BatchGetItem of at most 100 keys, none twice.
        let mut keys: Vec<&ItemKey> = attempts.iter().map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        if keys.len() > 100 {
            return Err(LedgerError::Aws {
                op: "BatchGetItem",
                class: ErrorClass::Permanent,
                message: "Too many items requested for the BatchGetItem call".into(),
            });
        }
        let st = self.lock();
        let mut charges = Vec::new();
        let out = attempts
            .iter()
            .map(|(k, fence)| {
                let j = st.jobs.get(k);
                charges.push(Charge::table(
                    &k.pk,
                    read_units(j.map_or(0, |j| item_size(&encode_job(j))), true),
                ));
                j.is_some_and(|j| j.state == JobState::Running && j.fence == *fence)
            })
            .collect();
        self.read("BatchGetItem", &charges)?;
        Ok(out)
    }

    async fn commit(
        &self,
        slot: &str,
        changes: &[Change],
        live: &[LiveReport],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        let mut st = self.lock();
        let mut results: Vec<Result<(), LedgerError>> = Vec::with_capacity(changes.len());
        let mut writes: Vec<(usize, JobItem)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            match self.applied(&st, c) {
                Ok(j) => {
                    writes.push((i, j));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // The transaction: the jobs, their history and result items, and the counters.
        let mut charges = Vec::new();
        let mut deltas: BTreeMap<String, super::Delta> = BTreeMap::new();
        let mut histories: Vec<(ItemKey, Ring, u64)> = Vec::new();
        let mut result_items: Vec<(ItemKey, u64, String)> = Vec::new();
        for (i, j) in &writes {
            let c = &changes[*i];
            let old = st.jobs.get(&j.key).map(encode_job);
            let new = encode_job(j);
            self.check_size("TransactWriteItems", &j.key, &new)?;
            charges.extend(item_charges(&j.key.pk, old.as_ref(), Some(&new), 2.0));
            deltas
                .entry(j.job.request_id().to_owned())
                .or_default()
                .add(&c.delta());
            if let Change::Finish {
                lease,
                finish,
                record,
            } = c
            {
                if c.writes_history() {
                    let (mut ring, n) = st.histories.get(&j.key).cloned().unwrap_or_default();
                    let before =
                        (!ring.is_empty()).then(|| item::history_item(&j.key, &ring, n, None));
                    let error = finish.error().map(|(_, e)| e.to_owned());
                    ring.insert(
                        item::history_slot(lease.fence, self.history_keep),
                        (record.clone(), error),
                    );
                    let after =
                        item::history_item(&j.key, &ring, n + 1, self.expiry(record.ended_ms));
                    self.check_size("TransactWriteItems", &j.key, &after)?;
                    charges.push(Charge::table(
                        item::satellite(&j.key, item::HISTORY_SUFFIX).pk,
                        2.0 * write_units(before.as_ref().map_or(0, item_size), item_size(&after))
                            as f64,
                    ));
                    histories.push((j.key.clone(), ring, n + 1));
                }
                if let (Finish::Succeeded { result: Some(r) }, ResultAt::Item(fence)) =
                    (finish, &j.result)
                {
                    // Written before the transaction, by itself (one unit per KB, not two).
                    let item = item::result_item(&j.key, *fence, r, None);
                    self.check_size("PutItem", &j.key, &item)?;
                    let old = st
                        .results
                        .get(&j.key)
                        .map(|(f, r)| item::result_item(&j.key, *f, r, None));
                    self.write(
                        "PutItem",
                        &[Charge::table(
                            item::satellite(&j.key, item::RESULT_SUFFIX).pk,
                            write_units(old.as_ref().map_or(0, item_size), item_size(&item)) as f64,
                        )],
                    )?;
                    result_items.push((j.key.clone(), *fence, r.clone()));
                }
            }
        }
        let mut counter_writes: Vec<(ItemKey, CounterItem)> = Vec::new();
        let mut requests: BTreeSet<String> = deltas.keys().cloned().collect();
        requests.extend(live.iter().map(|l| l.request_id.clone()));
        for rid in requests {
            let key = item::counter_key(&rid, slot);
            let old = st.counters.get(&key).cloned();
            let mut new = old.clone().unwrap_or_default();
            if let Some(d) = deltas.get(&rid) {
                new.counts.add_delta(d);
            }
            for l in live.iter().filter(|l| l.request_id == rid) {
                new.live.insert(item::live_attr(&l.replica), l.clone());
            }
            if new.expires_at.is_none() {
                new.expires_at = self.expiry(crate::time::now_ms());
            }
            let before = old.as_ref().map(|c| c.encode(&key));
            let after = new.encode(&key);
            charges.push(Charge::table(
                &key.pk,
                2.0 * write_units(before.as_ref().map_or(0, item_size), item_size(&after)) as f64,
            ));
            counter_writes.push((key, new));
        }
        if writes.is_empty() && counter_writes.is_empty() {
            return Ok(results);
        }
        self.write("TransactWriteItems", &charges)?;
        for (_, j) in writes {
            st.put_job(j);
        }
        for (k, ring, n) in histories {
            st.histories.insert(k, (ring, n));
        }
        for (k, f, r) in result_items {
            st.results.insert(k, (f, r));
        }
        for (k, c) in counter_writes {
            st.counters.insert(k, c);
        }
        Ok(results)
    }

    async fn due(
        &self,
        kind: DueKind,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueEntry>, LedgerError> {
        let st = self.lock();
        let part = kind.partition(shard);
        let lo = (part.clone(), 0u64, ItemKey::new("", ""));
        let mut out = Vec::new();
        let mut bytes = 0;
        for (p, at, key) in st.due.range(lo..) {
            if *p != part || *at >= before_ms || out.len() >= limit {
                break;
            }
            let Some(j) = st.jobs.get(key) else { continue };
            bytes += item::due_entry(&encode_job(j)).map_or(0, |(_, s)| s);
            out.push(DueEntry {
                job: j.job.clone(),
                key: key.clone(),
                kind,
                fence: j.fence,
                owner: j.owner.clone(),
                at_ms: *at,
                task: j.task.clone(),
                state: j.state,
            });
        }
        self.read(
            "Query",
            &[Charge::index(
                item::DUE_INDEX,
                &part,
                read_units(bytes, false),
            )],
        )?;
        Ok(out)
    }

    async fn adopt(
        &self,
        e: &DueEntry,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        skew_ms: u64,
    ) -> Result<Option<Adopted>, LedgerError> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get(&e.key).cloned() else {
            return Ok(None);
        };
        let expired = j
            .lease_until_ms
            .is_some_and(|u| u < now_ms.saturating_sub(skew_ms));
        let old_item = encode_job(&j);
        let Some(task) = j
            .task
            .clone()
            .filter(|_| j.state == JobState::Running && expired && j.fence == e.fence)
        else {
            self.write(
                "UpdateItem",
                &[Charge::table(
                    &e.key.pk,
                    write_units(item_size(&old_item), 0) as f64,
                )],
            )?;
            return Ok(None);
        };
        let mut new = j.clone();
        let until = now_ms + lease_ms;
        new.owner = Some(owner.to_owned());
        new.fence += 1;
        new.lease_until_ms = Some(until);
        new.started_at_ms = Some(now_ms);
        if let Some(d) = &mut new.due {
            d.at_ms = until;
        }
        let new_item = encode_job(&new);
        self.write(
            "UpdateItem",
            &item_charges(&e.key.pk, Some(&old_item), Some(&new_item), 1.0),
        )?;
        let payload_json = self.payload_of(&st, &new);
        let adopted = Adopted {
            lease: Lease {
                job: e.job.clone(),
                key: e.key.clone(),
                owner: owner.to_owned(),
                fence: new.fence,
                attempt: new.attempts,
                max_attempts: new.max_attempts,
                started_ms: now_ms,
                until_ms: until,
                target: new.target,
                previous: new.last.clone(),
                after_retry: new.retry_debt,
                due_ms: None,
                item_bytes: item_size(&new_item),
            },
            job_type: new.job_type.clone(),
            payload_json,
            task,
            enqueued_at_ms: new.enqueued_at_ms.unwrap_or(0),
        };
        st.put_job(new);
        Ok(Some(adopted))
    }

    async fn requeue(
        &self,
        e: &DueEntry,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> Result<Option<Requeue>, LedgerError> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get(&e.key).cloned() else {
            return Ok(None);
        };
        let state_ok = match j.state {
            JobState::Running => j.fence == e.fence && j.task.is_none(),
            JobState::Pending | JobState::Retrying => true,
            _ => false,
        };
        let due = j.due.is_some_and(|d| d.at_ms < due_before_ms);
        let not_recent = j
            .requeued_at_ms
            .is_none_or(|r| r < now_ms.saturating_sub(again_after_ms));
        let old_item = encode_job(&j);
        if !(state_ok && due && not_recent) {
            self.write(
                "UpdateItem",
                &[Charge::table(
                    &e.key.pk,
                    write_units(item_size(&old_item), 0) as f64,
                )],
            )?;
            return Ok(None);
        }
        let mut new = j.clone();
        new.requeued_at_ms = Some(now_ms);
        self.write(
            "UpdateItem",
            &item_charges(&e.key.pk, Some(&old_item), Some(&encode_job(&new)), 1.0),
        )?;
        let payload_json = self.payload_of(&st, &new);
        let r = Requeue {
            job: e.job.clone(),
            state: new.state,
            job_type: new.job_type.clone(),
            payload_json,
            attempts: new.attempts,
            max_attempts: new.max_attempts,
            target: new.target,
        };
        st.put_job(new);
        Ok(Some(r))
    }

    async fn history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        self.job_history(key).await
    }

    async fn durations(&self, job_type: &str) -> Result<Vec<u64>, LedgerError> {
        let st = self.lock();
        Ok(st.durations.get(job_type).cloned().unwrap_or_default())
    }

    async fn add_durations(
        &self,
        job_type: &str,
        samples: &[u64],
        window: usize,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let all = st.durations.entry(job_type.to_owned()).or_default();
        all.extend_from_slice(samples);
        let keep = all.len().saturating_sub(window);
        all.drain(..keep);
        Ok(())
    }
}

impl MemoryLedger {
    fn owned_update(
        &self,
        op: &'static str,
        lease: &Lease,
        f: impl FnOnce(&mut JobItem),
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get(&lease.key).cloned() else {
            return Err(stale(lease));
        };
        let old_item = encode_job(&j);
        if !owns(&j, lease) {
            self.write(
                op,
                &[Charge::table(
                    &lease.key.pk,
                    write_units(item_size(&old_item), 0) as f64,
                )],
            )?;
            return Err(stale(lease));
        }
        let mut new = j;
        f(&mut new);
        let new_item = encode_job(&new);
        self.check_size(op, &lease.key, &new_item)?;
        self.write(
            op,
            &item_charges(&lease.key.pk, Some(&old_item), Some(&new_item), 1.0),
        )?;
        st.put_job(new);
        Ok(())
    }

    fn detail(j: &JobItem) -> JobDetail {
        JobDetail {
            job_id: j.job.to_string(),
            index: j.job.index(),
            state: j.state,
            attempts: j.attempts,
            task: j.task.clone(),
            last_error: j.last_error.clone(),
            error_class: j.error_class,
            last: j.last.clone(),
            finished_at_ms: j.finished_at_ms,
        }
    }
}

/// A cursor: the position after the last item returned, as `<partition number>/<sort key>`.
pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<(u32, Option<String>), LedgerError> {
    let Some(c) = cursor else {
        return Ok((0, None));
    };
    let (p, sk) = c.split_once('/').ok_or_else(|| LedgerError::Malformed {
        key: "cursor".into(),
        message: format!("{c:?} is not a cursor this listing gave"),
    })?;
    let p = p.parse().map_err(|_| LedgerError::Malformed {
        key: "cursor".into(),
        message: format!("{c:?} is not a cursor this listing gave"),
    })?;
    Ok((p, Some(sk.to_owned())))
}

impl RequestLedger for MemoryLedger {
    async fn put_request(&self, r: &RequestRecord) -> Result<PutRequestOutcome, LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(&r.request_id);
        if let Some(existing) = st.requests.get(&r.request_id) {
            let size = item_size(&item::encode_request(existing, None));
            self.write(
                "PutItem",
                &[Charge::table(&key.pk, write_units(size, 0) as f64)],
            )?;
            return Ok(PutRequestOutcome::Exists(existing.clone()));
        }
        let item = item::encode_request(r, self.expiry(r.created_at_ms));
        self.write(
            "PutItem",
            &[Charge::table(
                &key.pk,
                write_units(0, item_size(&item)) as f64,
            )],
        )?;
        st.requests.insert(r.request_id.clone(), r.clone());
        Ok(PutRequestOutcome::Created)
    }

    async fn get_request(&self, request_id: &str) -> Result<Option<RequestRecord>, LedgerError> {
        let st = self.lock();
        let r = st.requests.get(request_id).cloned();
        let size = r
            .as_ref()
            .map_or(0, |r| item_size(&item::encode_request(r, None)));
        self.read(
            "GetItem",
            &[Charge::table(
                item::request_key(request_id).pk,
                read_units(size, true),
            )],
        )?;
        Ok(r)
    }

    async fn put_jobs(&self, jobs: &[NewJob]) -> Result<(), LedgerError> {
        // BatchWriteItem: 25 items a call; each call metered by itself.
        let mut items: Vec<(JobItem, Option<String>)> = Vec::new();
        for nj in jobs {
            let payload = item::payload_placement(&nj.key, &nj.job_type, &nj.payload_json);
            let mut j = JobItem::pending(
                nj.job.clone(),
                nj.key.clone(),
                &nj.job_type,
                payload.clone(),
                nj.created_at_ms,
                self.index_shards,
            );
            j.max_attempts = nj.max_attempts;
            j.target = nj.target;
            let apart = (payload == PayloadAt::Apart).then(|| nj.payload_json.clone());
            items.push((j, apart));
        }
        // BatchWriteItem calls of 25 items, each metered by itself; a throttled call is sent
        // again with backoff, as the DynamoDB adapter re-sends unprocessed items.
        for chunk in items.chunks(25) {
            let mut charges = Vec::new();
            for (j, apart) in chunk {
                let lean = encode_job(j);
                self.check_size("BatchWriteItem", &j.key, &lean)?;
                charges.extend(item_charges(&j.key.pk, None, Some(&lean), 1.0));
                if let Some(p) = apart {
                    let pi = item::payload_item(&j.key, p, self.expiry(j.created_at_ms));
                    self.check_size("BatchWriteItem", &j.key, &pi)?;
                    charges.push(Charge::table(
                        item::satellite(&j.key, item::PAYLOAD_SUFFIX).pk,
                        write_units(0, item_size(&pi)) as f64,
                    ));
                }
            }
            let mut pause = std::time::Duration::from_millis(50);
            let mut tries = 0;
            loop {
                match self.write("BatchWriteItem", &charges) {
                    Ok(()) => break,
                    Err(e) if tries < 12 && e.class() == ErrorClass::Throttled => {
                        tries += 1;
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut st = self.lock();
            for (j, apart) in chunk {
                if let Some(p) = apart {
                    st.payloads.insert(j.key.clone(), p.clone());
                }
                st.put_job(j.clone());
            }
        }
        Ok(())
    }

    async fn job_states(&self, keys: &[ItemKey]) -> Result<Vec<Option<JobState>>, LedgerError> {
        let st = self.lock();
        let mut charges = Vec::new();
        let out = keys
            .iter()
            .map(|k| {
                let j = st.jobs.get(k);
                charges.push(Charge::table(
                    &k.pk,
                    read_units(j.map_or(0, |j| item_size(&encode_job(j))), true),
                ));
                j.map(|j| j.state)
            })
            .collect();
        self.read("BatchGetItem", &charges)?;
        Ok(out)
    }

    async fn set_written(&self, request_id: &str, written: u32) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get_mut(request_id) else {
            return Ok(());
        };
        let size = item_size(&item::encode_request(r, None));
        if let Some(m) = &self.meter {
            m.write(
                "UpdateItem",
                &[Charge::table(&key.pk, write_units(size, size) as f64)],
            )?;
        }
        r.written = r.written.max(written);
        Ok(())
    }

    async fn cancel_request(
        &self,
        request_id: &str,
        now_ms: u64,
        stop_running: bool,
    ) -> Result<bool, LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get_mut(request_id) else {
            return Ok(false);
        };
        let size = item_size(&item::encode_request(r, None));
        if let Some(m) = &self.meter {
            m.write(
                "UpdateItem",
                &[Charge::table(&key.pk, write_units(size, size + 30) as f64)],
            )?;
        }
        r.cancelled_at_ms.get_or_insert(now_ms);
        r.stop_running |= stop_running;
        Ok(true)
    }

    async fn counts(&self, request_id: &str, now_ms: u64) -> Result<Counts, LedgerError> {
        let st = self.lock();
        let mut total = Counts::default();
        let mut charges = Vec::new();
        for slot in (0..super::COUNTER_SLOTS)
            .map(|s| s.to_string())
            .chain([super::PRODUCER_SLOT.to_owned()])
        {
            let key = item::counter_key(request_id, &slot);
            let c = st.counters.get(&key);
            charges.push(Charge::table(
                &key.pk,
                read_units(c.map_or(0, |c| item_size(&c.encode(&key))), true),
            ));
            if let Some(c) = c {
                c.add_to(&mut total, now_ms);
            }
        }
        self.read("BatchGetItem", &charges)?;
        Ok(total)
    }

    async fn recount(&self, request_id: &str, job_shards: u32) -> Result<Counts, LedgerError> {
        let mut st = self.lock();
        let mut counted = Counts::default();
        let mut charges = Vec::new();
        for shard in 0..job_shards.max(1) {
            let part = item::job_partition(request_id, shard);
            let mut bytes = 0;
            for j in st
                .jobs
                .range(ItemKey::new(part.clone(), "")..)
                .take_while(|(k, _)| k.pk == part)
                .map(|(_, j)| j)
            {
                bytes += item_size(&encode_job(j));
                match j.state {
                    JobState::Succeeded => counted.succeeded += 1,
                    JobState::Failed => counted.failed += 1,
                    JobState::Cancelled => counted.cancelled += 1,
                    _ => {}
                }
                counted.retrying += i64::from(j.retry_debt);
                counted.attempts += i64::from(j.attempts);
            }
            charges.push(Charge::table(&part, read_units(bytes, true)));
        }
        self.read("Query", &charges)?;
        let mut current = Counts::default();
        for (k, c) in st.counters.iter() {
            if k.pk.starts_with(&format!("C#{request_id}#")) {
                c.add_to(&mut current, 0);
            }
        }
        // Attempts are not recounted: an item's count includes attempts cut short.
        counted.attempts = current.attempts;
        let fix = current.delta_to(&counted);
        if !fix.is_zero() {
            let key = item::counter_key(request_id, super::PRODUCER_SLOT);
            let c = st.counters.entry(key).or_default();
            c.counts.add_delta(&fix);
        }
        Ok(counted)
    }

    async fn jobs_page(
        &self,
        request_id: &str,
        job_shards: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        let (mut shard, mut after) = parse_cursor(cursor)?;
        let st = self.lock();
        let mut items = Vec::new();
        let mut charges = Vec::new();
        while shard < job_shards.max(1) && items.len() < limit {
            let part = item::job_partition(request_id, shard);
            let start = ItemKey::new(part.clone(), after.clone().unwrap_or_default());
            let mut bytes = 0;
            let mut last = None;
            for (k, j) in st
                .jobs
                .range(start..)
                .take_while(|(k, _)| k.pk == part)
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k.sk > *a))
                .take(limit - items.len())
            {
                bytes += item_size(&encode_job(j));
                items.push(Self::detail(j));
                last = Some(k.sk.clone());
            }
            charges.push(Charge::table(&part, read_units(bytes, false)));
            if items.len() >= limit
                && let Some(l) = last
            {
                self.read("Query", &charges)?;
                return Ok(Page {
                    items,
                    next: Some(format!("{shard}/{l}")),
                });
            }
            shard += 1;
            after = None;
        }
        self.read("Query", &charges)?;
        Ok(Page { items, next: None })
    }

    async fn failed_page(
        &self,
        request_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        let (mut shard, mut after) = parse_cursor(cursor)?;
        let st = self.lock();
        let mut items = Vec::new();
        let mut charges = Vec::new();
        while shard < item::FAILED_SHARDS && items.len() < limit {
            let part = format!("{request_id}#{shard}");
            let after_ix: Option<u32> = after.as_deref().and_then(|a| a.parse().ok());
            let mut bytes = 0;
            let mut last = None;
            for (_, ix, key) in st
                .failed
                .range((part.clone(), 0u32, ItemKey::new("", ""))..)
                .take_while(|(p, _, _)| *p == part)
                .filter(|(_, ix, _)| after_ix.is_none_or(|a| *ix > a))
                .take(limit - items.len())
            {
                let Some(j) = st.jobs.get(key) else { continue };
                bytes += item::failed_entry(&encode_job(j)).map_or(0, |(_, s)| s);
                items.push(Self::detail(j));
                last = Some(*ix);
            }
            charges.push(Charge::index(
                item::FAILED_INDEX,
                &part,
                read_units(bytes, false),
            ));
            if items.len() >= limit
                && let Some(l) = last
            {
                self.read("Query", &charges)?;
                return Ok(Page {
                    items,
                    next: Some(format!("{shard}/{l}")),
                });
            }
            shard += 1;
            after = None;
        }
        self.read("Query", &charges)?;
        Ok(Page { items, next: None })
    }

    async fn job(&self, key: &ItemKey) -> Result<Option<(JobItem, String)>, LedgerError> {
        let st = self.lock();
        let Some(j) = st.jobs.get(key).cloned() else {
            self.read("GetItem", &[Charge::table(&key.pk, 1.0)])?;
            return Ok(None);
        };
        let mut charges = vec![Charge::table(
            &key.pk,
            read_units(item_size(&encode_job(&j)), true),
        )];
        if j.payload == PayloadAt::Apart {
            let p = st.payloads.get(key).cloned().unwrap_or_default();
            charges.push(Charge::table(
                item::satellite(key, item::PAYLOAD_SUFFIX).pk,
                read_units(item_size(&item::payload_item(key, &p, None)), true),
            ));
        }
        self.read("GetItem", &charges)?;
        let payload = self.payload_of(&st, &j);
        Ok(Some((j, payload)))
    }

    async fn result(&self, key: &ItemKey) -> Result<Option<String>, LedgerError> {
        let st = self.lock();
        let Some(j) = st.jobs.get(key) else {
            return Ok(None);
        };
        Ok(match &j.result {
            ResultAt::None => None,
            ResultAt::Inline(r) => Some(r.clone()),
            ResultAt::Item(f) => st
                .results
                .get(key)
                .filter(|(fence, _)| fence == f)
                .map(|(_, r)| r.clone()),
        })
    }

    async fn job_history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        let st = self.lock();
        let mut h = match st.histories.get(key) {
            Some((ring, n)) => decode_history(&item::history_item(key, ring, *n, None), key)?,
            None => History::default(),
        };
        if let Some(j) = st.jobs.get(key) {
            merge_last(&mut h, j);
        }
        Ok(h)
    }

    async fn commit_changes(
        &self,
        slot: &str,
        changes: &[Change],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        self.commit(slot, changes, &[]).await
    }
}

/// Adds the lean item's last attempt to a history when the ring does not hold it (a success,
/// or a cancel: only failed attempts go to the ring).
pub(crate) fn merge_last(h: &mut History, j: &JobItem) {
    if let Some(last) = &j.last
        && !h.attempts.iter().any(|e| e.record.fence == last.fence)
    {
        h.attempts.push(super::HistoryEntry {
            record: last.clone(),
            error: None,
        });
        h.attempts.sort_by_key(|e| e.record.fence);
    }
}
