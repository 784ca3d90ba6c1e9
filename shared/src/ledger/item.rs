//! The table's layout (version [`super::LAYOUT_VERSION`]): keys, attribute names, and the
//! codec of the job item, with DynamoDB's own measure of an item's size. The DynamoDB ledger
//! reads items through [`decode_job`] and writes new ones through [`encode_job`]; the
//! in-memory ledger keeps [`JobItem`]s and measures them with [`encode_job`], so the limits
//! model charges exactly what DynamoDB would. A contract test checks that both ledgers leave
//! the same item after the same operations.
//!
//! Items (one table, keys `pk` and `sk`, both strings):
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | layout | `FLEET` | `LAYOUT` |
//! | request | `R#<request>` | `R` |
//! | job (lean: what claims, heartbeats and outcomes rewrite) | `J#<request>#<index mod job_shards>` | `<index, 9 digits>` |
//! | job payload (written once) | `D#<request>#<shard>` | `<index>#P` |
//! | job result (written by the attempt that succeeded) | same | `<index>#R` |
//! | job history (failed attempts, a bounded ring) | same | `<index>#H` |
//! | counters (one per request and replica slot) | `C#<request>#<slot>` | `C` |
//! | job type durations | `T#<job type>` | `D` |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{AttemptRecord, ItemKey, LedgerError};
use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::message::Target;
use crate::state::JobState;

pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's item size limit.
pub const ITEM_MAX_BYTES: usize = 400 * 1024;
/// The size a lean job item is kept under, so that every claim, heartbeat and outcome write
/// costs one write unit (DynamoDB bills writes per started KB of the larger of the old and
/// the new item).
pub const LEAN_MAX_BYTES: usize = 1024;
/// What a lean item holds besides its keys, job type and payload, at most: state, counts,
/// owner, lease, due keys, times, the last attempt and a short error (measured: 392 bytes
/// with a 41-character replica name; a test keeps it so).
pub const LEAN_FIXED_BYTES: usize = 400;
/// Longest error text on the lean item; the whole text is in the history item.
pub const SHORT_ERROR_BYTES: usize = 160;
/// Longest error text anywhere in the ledger (a history entry, a dead-letter record).
pub const ERROR_MAX_BYTES: usize = 2048;
/// Longest task stop reason kept.
pub const STOP_REASON_MAX_BYTES: usize = 512;
/// Upper bound of one history entry's size: the error, the stop reason, the routing reason
/// and the numbers.
pub const HISTORY_ENTRY_MAX_BYTES: usize = ERROR_MAX_BYTES + STOP_REASON_MAX_BYTES + 512;
/// Partitions of the sparse index of failed jobs, per request.
pub const FAILED_SHARDS: u32 = 8;

/// Index names and their keys.
pub const DUE_INDEX: &str = "due";
pub const FAILED_INDEX: &str = "failed";

/// Attribute names. Short: every name is stored (and billed) in every item.
pub mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const STATE: &str = "st";
    pub const ATTEMPTS: &str = "at";
    pub const MAX_ATTEMPTS: &str = "ma";
    pub const FENCE: &str = "fe";
    pub const OWNER: &str = "ow";
    pub const LEASE_UNTIL: &str = "lu";
    pub const RETRY_AT: &str = "ra";
    /// The due index's partition: `L#<n>` (a RUNNING job's lease) or `W#<n>` (a job waiting
    /// to be claimed); absent once the job is finished.
    pub const DUE_KEY: &str = "wk";
    /// The due index's sort key: when the job needs attention (lease end, or the moment it
    /// became claimable), ms since the epoch.
    pub const DUE_AT: &str = "wt";
    pub const JOB_TYPE: &str = "jt";
    pub const PAYLOAD: &str = "pl";
    /// The payload is in the job's payload item, not inline.
    pub const PAYLOAD_APART: &str = "px";
    pub const TARGET: &str = "tg";
    pub const CREATED_AT: &str = "ca";
    pub const ENQUEUED_AT: &str = "ea";
    pub const STARTED_AT: &str = "sa";
    pub const FINISHED_AT: &str = "fa";
    pub const DURATION: &str = "du";
    pub const REQUEUED_AT: &str = "rq";
    pub const TASK: &str = "ta";
    pub const LAST_ATTEMPT: &str = "la";
    pub const LAST_ERROR: &str = "le";
    pub const ERROR_CLASS: &str = "ec";
    pub const RESULT: &str = "rs";
    /// The result is in the result item, written by the attempt with this fence.
    pub const RESULT_FENCE: &str = "rf";
    /// The job's current attempt follows a retry: it is counted as RETRYING until its outcome.
    pub const RETRY_DEBT: &str = "rd";
    pub const FAILED_KEY: &str = "fk";
    pub const FAILED_INDEX_SK: &str = "fi";
    pub const EXPIRES_AT: &str = "xa";
    /// History item: attempts recorded in all (the ring keeps the newest).
    pub const RECORDED: &str = "n";
}

/// Request item attributes (read rarely; names kept readable).
pub mod req_attr {
    pub const REQUEST_ID: &str = "request_id";
    pub const JOB_TYPE: &str = "job_type";
    pub const TOTAL: &str = "total";
    pub const CONTENT_HASH: &str = "content_hash";
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    pub const TARGET: &str = "target";
    pub const CREATED_AT: &str = "created_at";
    pub const JOB_SHARDS: &str = "job_shards";
    pub const CANCELLED_AT: &str = "cancelled_at";
    pub const STOP_RUNNING: &str = "stop_running";
    /// Jobs whose items and messages are written: the submission's watermark.
    pub const WRITTEN: &str = "written";
    /// The TTL attribute, the same as every item's.
    pub const EXPIRES_AT: &str = super::attr::EXPIRES_AT;
}

/// Layout item attributes.
pub mod layout_attr {
    pub const VERSION: &str = "version";
    pub const INDEX_SHARDS: &str = "index_shards";
}

pub const LAYOUT_PK: &str = "FLEET";
pub const LAYOUT_SK: &str = "LAYOUT";
pub const REQUEST_SK: &str = "R";
pub const COUNTER_SK: &str = "C";
pub const DURATIONS_SK: &str = "D";

pub fn request_key(request_id: &str) -> ItemKey {
    ItemKey::new(format!("R#{request_id}"), REQUEST_SK)
}

pub fn layout_key() -> ItemKey {
    ItemKey::new(LAYOUT_PK, LAYOUT_SK)
}

pub fn job_type_key(job_type: &str) -> ItemKey {
    ItemKey::new(format!("T#{job_type}"), DURATIONS_SK)
}

pub fn counter_key(request_id: &str, slot: &str) -> ItemKey {
    ItemKey::new(format!("C#{request_id}#{slot}"), COUNTER_SK)
}

/// The partition of a request's job shard.
pub fn job_partition(request_id: &str, shard: u32) -> String {
    format!("J#{request_id}#{shard}")
}

/// The lean item of a job whose request spreads its jobs over `shards` partitions.
pub fn job_key(job: &JobId, shards: u32) -> ItemKey {
    ItemKey::new(
        job_partition(job.request_id(), job.index() % shards.max(1)),
        format!("{:09}", job.index()),
    )
}

/// The payload, result or history item of a lean item: in the shard's data partition
/// (`D#<request>#<shard>`), so a Query of the lean partition reads lean items only.
pub fn satellite(key: &ItemKey, suffix: char) -> ItemKey {
    let rest = key.pk.strip_prefix("J#").unwrap_or(&key.pk);
    ItemKey::new(format!("D#{rest}"), format!("{}#{suffix}", key.sk))
}

pub const PAYLOAD_SUFFIX: char = 'P';
pub const RESULT_SUFFIX: char = 'R';
pub const HISTORY_SUFFIX: char = 'H';

/// The job a lean item's key names.
pub fn job_of(key: &ItemKey) -> Result<JobId, LedgerError> {
    let bad = |m: &str| LedgerError::Malformed {
        key: key.to_string(),
        message: m.to_owned(),
    };
    let rest = key
        .pk
        .strip_prefix("J#")
        .or_else(|| key.pk.strip_prefix("D#"))
        .ok_or_else(|| bad("not a job key"))?;
    let (request, _shard) = rest.rsplit_once('#').ok_or_else(|| bad("no shard"))?;
    let index: u32 = key
        .sk
        .split('#')
        .next()
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| bad("no index"))?;
    JobId::new(request, index).map_err(|e| bad(&e.to_string()))
}

/// FNV-1a of the job id: the due index partition and the failed index partition.
pub fn job_hash(job: &JobId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in job.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Which due-index partitions a job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DueKind {
    /// RUNNING: keyed by the lease's end.
    Lease,
    /// PENDING or RETRYING: keyed by when it became claimable.
    Waiting,
}

impl DueKind {
    pub fn prefix(self) -> &'static str {
        match self {
            DueKind::Lease => "L",
            DueKind::Waiting => "W",
        }
    }

    pub fn partition(self, shard: u32) -> String {
        format!("{}#{shard}", self.prefix())
    }
}

/// A job's place in the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub kind: DueKind,
    pub shard: u32,
    pub at_ms: u64,
}

/// The due entry of a job in state `state` due at `at_ms` (none once finished).
pub fn due_for(job: &JobId, state: JobState, at_ms: u64, index_shards: u32) -> Option<Due> {
    let kind = match state {
        JobState::Running => DueKind::Lease,
        JobState::Pending | JobState::Retrying => DueKind::Waiting,
        _ => return None,
    };
    Some(Due {
        kind,
        shard: job_hash(job) % index_shards.max(1),
        at_ms,
    })
}

/// The failed index partition of a job.
pub fn failed_partition(job: &JobId) -> String {
    format!("{}#{}", job.request_id(), job.index() % FAILED_SHARDS)
}

/// Where a job's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadAt {
    /// On the lean item (small payloads).
    Inline(String),
    /// In the payload item.
    Apart,
}

/// Where a succeeded job's result is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultAt {
    None,
    Inline(String),
    /// In the result item, written by the attempt with this fence.
    Item(u64),
}

/// A job's lean item, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobItem {
    pub job: JobId,
    pub key: ItemKey,
    pub job_type: String,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    pub fence: u64,
    pub owner: Option<String>,
    pub lease_until_ms: Option<u64>,
    pub retry_at_ms: Option<u64>,
    pub due: Option<Due>,
    pub payload: PayloadAt,
    pub target: Option<Target>,
    pub created_at_ms: u64,
    pub enqueued_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub requeued_at_ms: Option<u64>,
    pub task: Option<String>,
    pub last: Option<AttemptRecord>,
    pub last_error: Option<String>,
    pub error_class: Option<ErrorClass>,
    pub result: ResultAt,
    pub retry_debt: bool,
    /// In the failed index (FAILED jobs only).
    pub failed: bool,
    pub expires_at: Option<u64>,
}

impl JobItem {
    /// A job as the producer writes it: PENDING, due since `now_ms`.
    pub fn pending(
        job: JobId,
        key: ItemKey,
        job_type: &str,
        payload: PayloadAt,
        now_ms: u64,
        index_shards: u32,
    ) -> Self {
        let due = due_for(&job, JobState::Pending, now_ms, index_shards);
        JobItem {
            job,
            key,
            job_type: job_type.to_owned(),
            state: JobState::Pending,
            attempts: 0,
            max_attempts: None,
            fence: 0,
            owner: None,
            lease_until_ms: None,
            retry_at_ms: None,
            due,
            payload,
            target: None,
            created_at_ms: now_ms,
            enqueued_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            requeued_at_ms: None,
            task: None,
            last: None,
            last_error: None,
            error_class: None,
            result: ResultAt::None,
            retry_debt: false,
            failed: false,
            expires_at: None,
        }
    }
}

/// The item a claim leaves: RUNNING under `req.owner`'s lease, fence and attempts up by
/// one (the one rule both ledgers apply; DynamoDB's update expression mirrors it).
pub fn claimed(old: &JobItem, req: &super::ClaimRequest<'_>, index_shards: u32) -> JobItem {
    let mut new = old.clone();
    let until = req.now_ms + req.lease_ms;
    new.state = JobState::Running;
    new.owner = Some(req.owner.to_owned());
    new.lease_until_ms = Some(until);
    new.fence += 1;
    new.attempts += 1;
    new.retry_at_ms = None;
    new.task = None;
    new.started_at_ms = Some(req.now_ms);
    new.due = due_for(&new.job, JobState::Running, until, index_shards);
    if new.max_attempts.is_none() {
        new.max_attempts = req.max_attempts;
    }
    if new.enqueued_at_ms.is_none() {
        new.enqueued_at_ms = Some(req.enqueued_at_ms);
    }
    new
}

/// The lease a claim gives, from the item before (`None` when the claim created it) and
/// after.
pub fn lease_of(
    old: Option<&JobItem>,
    new: &JobItem,
    req: &super::ClaimRequest<'_>,
) -> super::Lease {
    super::Lease {
        job: new.job.clone(),
        key: new.key.clone(),
        owner: req.owner.to_owned(),
        fence: new.fence,
        attempt: new.attempts,
        max_attempts: new.max_attempts,
        started_ms: req.now_ms,
        until_ms: req.now_ms + req.lease_ms,
        target: new.target,
        previous: old.and_then(|o| o.last.clone()),
        after_retry: old.is_some_and(|o| o.retry_debt),
        due_ms: old
            .filter(|o| matches!(o.state, JobState::Pending | JobState::Retrying))
            .and_then(|o| o.due.map(|d| d.at_ms)),
        item_bytes: item_size(&encode_job(new)),
    }
}

/// The item of a token bucket shared by the replicas.
pub fn bucket_key(name: &str) -> ItemKey {
    ItemKey::new(LAYOUT_PK, format!("BUCKET#{name}"))
}

/// Whether a result fits on the lean item of an attempt whose claimed item had
/// `item_bytes`: the terminal write drops the lease's attributes and adds the finish time,
/// the duration, the last attempt and the result, all within [`LEAN_MAX_BYTES`].
pub fn result_inline(item_bytes: usize, result: &str) -> bool {
    item_bytes + 2 + result.len() + 200 <= LEAN_MAX_BYTES
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The payload inline on the lean item when it leaves the item room for an outcome under
/// [`LEAN_MAX_BYTES`], else apart.
pub fn payload_placement(key: &ItemKey, job_type: &str, payload_json: &str) -> PayloadAt {
    let fixed = key.pk.len() + key.sk.len() + job_type.len() + LEAN_FIXED_BYTES;
    if fixed + payload_json.len() <= LEAN_MAX_BYTES {
        PayloadAt::Inline(payload_json.to_owned())
    } else {
        PayloadAt::Apart
    }
}

/// The attempt record as the lean item and the history keep it.
pub fn record_value(r: &AttemptRecord, error: Option<&str>) -> AttributeValue {
    let mut m = HashMap::from([
        ("a".to_owned(), n(r.attempt)),
        ("f".to_owned(), n(r.fence)),
        ("s".to_owned(), n(r.started_ms)),
        ("e".to_owned(), n(r.ended_ms)),
        ("t".to_owned(), s(r.target.as_str())),
        ("o".to_owned(), s(r.outcome.as_str())),
        ("w".to_owned(), s(r.reason.to_string())),
    ]);
    if let Some(at) = r.retry_at_ms {
        m.insert("r".to_owned(), n(at));
    }
    if let Some(code) = r.exit_code {
        m.insert("x".to_owned(), n(code));
    }
    if let Some(why) = &r.stopped_reason {
        m.insert("p".to_owned(), s(clip_bytes(why, STOP_REASON_MAX_BYTES)));
    }
    if let Some(e) = error {
        m.insert("m".to_owned(), s(clip_bytes(e, ERROR_MAX_BYTES)));
    }
    AttributeValue::M(m)
}

/// An attempt record and the error it carries (history entries carry the whole error).
pub fn record_from(
    v: &AttributeValue,
    key: &ItemKey,
) -> Result<(AttemptRecord, Option<String>), LedgerError> {
    let m = v.as_m().map_err(|_| LedgerError::Malformed {
        key: key.to_string(),
        message: "attempt record is not a map".into(),
    })?;
    let r = Reader { item: m, key };
    Ok((
        AttemptRecord {
            attempt: r.n("a")?,
            fence: r.n("f")?,
            started_ms: r.n("s")?,
            ended_ms: r.n("e")?,
            target: r.parsed("t")?,
            outcome: r.parsed("o")?,
            retry_at_ms: r.opt_n("r")?,
            reason: r.parsed("w")?,
            exit_code: r.opt_n("x")?,
            stopped_reason: r.opt_s("p").map(str::to_owned),
        },
        r.opt_s("m").map(str::to_owned),
    ))
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn clip_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Reads typed attributes from an item, naming the item in every error.
pub struct Reader<'a> {
    pub item: &'a Item,
    pub key: &'a ItemKey,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, key: &'a ItemKey) -> Self {
        Self { item, key }
    }

    fn bad(&self, message: String) -> LedgerError {
        LedgerError::Malformed {
            key: self.key.to_string(),
            message,
        }
    }

    pub fn s(&self, name: &str) -> Result<&'a str, LedgerError> {
        self.opt_s(name)
            .ok_or_else(|| self.bad(format!("no string attribute {name}")))
    }

    pub fn opt_s(&self, name: &str) -> Option<&'a str> {
        self.item
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    }

    pub fn opt_n<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, LedgerError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| self.bad(format!("{name} = {v:?} is out of range"))),
            Some(_) => Err(self.bad(format!("{name} is not a number"))),
        }
    }

    pub fn n<T: std::str::FromStr>(&self, name: &str) -> Result<T, LedgerError> {
        self.opt_n(name)?
            .ok_or_else(|| self.bad(format!("no number attribute {name}")))
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.item.get(name), Some(AttributeValue::Bool(true)))
    }

    pub fn state(&self) -> Result<JobState, LedgerError> {
        self.s(attr::STATE)?
            .parse()
            .map_err(|e| self.bad(format!("{e}")))
    }

    pub fn target(&self, name: &str) -> Result<Option<Target>, LedgerError> {
        self.opt_s(name)
            .map(|t| self.of_string(name, t))
            .transpose()
    }

    /// A string attribute read as the serde type it was written from (a target, an outcome,
    /// a route reason).
    pub fn parsed<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, LedgerError> {
        self.of_string(name, self.s(name)?)
    }

    fn of_string<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        v: &str,
    ) -> Result<T, LedgerError> {
        serde_json::from_value(serde_json::Value::String(v.to_owned()))
            .map_err(|e| self.bad(format!("{name} = {v:?}: {e}")))
    }
}

fn parse_due(r: &Reader<'_>) -> Result<Option<Due>, LedgerError> {
    let Some(k) = r.opt_s(attr::DUE_KEY) else {
        return Ok(None);
    };
    let (prefix, shard) = k.split_once('#').unwrap_or((k, ""));
    let kind = match prefix {
        "L" => DueKind::Lease,
        "W" => DueKind::Waiting,
        _ => {
            return Err(LedgerError::Malformed {
                key: r.key.to_string(),
                message: format!("due key {k:?}"),
            });
        }
    };
    let shard = shard.parse().map_err(|_| LedgerError::Malformed {
        key: r.key.to_string(),
        message: format!("due key {k:?}"),
    })?;
    Ok(Some(Due {
        kind,
        shard,
        at_ms: r.n(attr::DUE_AT)?,
    }))
}

/// A lean job item from its attributes.
pub fn decode_job(item: &Item) -> Result<JobItem, LedgerError> {
    let key = ItemKey::new(
        item.get(attr::PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default(),
        item.get(attr::SK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default(),
    );
    let r = Reader::new(item, &key);
    let job = job_of(&key)?;
    let payload = match r.opt_s(attr::PAYLOAD) {
        Some(p) => PayloadAt::Inline(p.to_owned()),
        None if r.bool(attr::PAYLOAD_APART) => PayloadAt::Apart,
        None => PayloadAt::Inline("null".into()),
    };
    let result = match (r.opt_s(attr::RESULT), r.opt_n::<u64>(attr::RESULT_FENCE)?) {
        (Some(v), _) => ResultAt::Inline(v.to_owned()),
        (None, Some(f)) => ResultAt::Item(f),
        (None, None) => ResultAt::None,
    };
    let last = match item.get(attr::LAST_ATTEMPT) {
        Some(v) => Some(record_from(v, &key)?.0),
        None => None,
    };
    let error_class = r
        .opt_s(attr::ERROR_CLASS)
        .map(|c| c.parse::<ErrorClass>())
        .transpose()
        .map_err(|m| LedgerError::Malformed {
            key: key.to_string(),
            message: m,
        })?;
    Ok(JobItem {
        job_type: r.s(attr::JOB_TYPE)?.to_owned(),
        state: r.state()?,
        attempts: r.opt_n(attr::ATTEMPTS)?.unwrap_or(0),
        max_attempts: r.opt_n(attr::MAX_ATTEMPTS)?,
        fence: r.opt_n(attr::FENCE)?.unwrap_or(0),
        owner: r.opt_s(attr::OWNER).map(str::to_owned),
        lease_until_ms: r.opt_n(attr::LEASE_UNTIL)?,
        retry_at_ms: r.opt_n(attr::RETRY_AT)?,
        due: parse_due(&r)?,
        payload,
        target: r.target(attr::TARGET)?,
        created_at_ms: r.opt_n(attr::CREATED_AT)?.unwrap_or(0),
        enqueued_at_ms: r.opt_n(attr::ENQUEUED_AT)?,
        started_at_ms: r.opt_n(attr::STARTED_AT)?,
        finished_at_ms: r.opt_n(attr::FINISHED_AT)?,
        duration_ms: r.opt_n(attr::DURATION)?,
        requeued_at_ms: r.opt_n(attr::REQUEUED_AT)?,
        task: r.opt_s(attr::TASK).map(str::to_owned),
        last,
        last_error: r.opt_s(attr::LAST_ERROR).map(str::to_owned),
        error_class,
        result,
        retry_debt: r.bool(attr::RETRY_DEBT),
        failed: item.contains_key(attr::FAILED_KEY),
        expires_at: r.opt_n(attr::EXPIRES_AT)?,
        job,
        key,
    })
}

/// The attributes of a lean job item, as DynamoDB holds them.
pub fn encode_job(j: &JobItem) -> Item {
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(&j.key.pk)),
        (attr::SK.to_owned(), s(&j.key.sk)),
        (attr::JOB_TYPE.to_owned(), s(&j.job_type)),
        (attr::STATE.to_owned(), s(j.state.as_str())),
        (attr::ATTEMPTS.to_owned(), n(j.attempts)),
        (attr::FENCE.to_owned(), n(j.fence)),
        (attr::CREATED_AT.to_owned(), n(j.created_at_ms)),
    ]);
    let mut put = |k: &str, v: Option<AttributeValue>| {
        if let Some(v) = v {
            item.insert(k.to_owned(), v);
        }
    };
    put(attr::MAX_ATTEMPTS, j.max_attempts.map(n));
    put(attr::OWNER, j.owner.as_ref().map(s));
    put(attr::LEASE_UNTIL, j.lease_until_ms.map(n));
    put(attr::RETRY_AT, j.retry_at_ms.map(n));
    if let Some(d) = &j.due {
        put(attr::DUE_KEY, Some(s(d.kind.partition(d.shard))));
        put(attr::DUE_AT, Some(n(d.at_ms)));
    }
    match &j.payload {
        PayloadAt::Inline(p) => put(attr::PAYLOAD, Some(s(p))),
        PayloadAt::Apart => put(attr::PAYLOAD_APART, Some(AttributeValue::Bool(true))),
    }
    put(attr::TARGET, j.target.map(|t| s(t.as_str())));
    put(attr::ENQUEUED_AT, j.enqueued_at_ms.map(n));
    put(attr::STARTED_AT, j.started_at_ms.map(n));
    put(attr::FINISHED_AT, j.finished_at_ms.map(n));
    put(attr::DURATION, j.duration_ms.map(n));
    put(attr::REQUEUED_AT, j.requeued_at_ms.map(n));
    put(attr::TASK, j.task.as_ref().map(s));
    put(
        attr::LAST_ATTEMPT,
        j.last.as_ref().map(|r| record_value(r, None)),
    );
    put(attr::LAST_ERROR, j.last_error.as_ref().map(s));
    put(attr::ERROR_CLASS, j.error_class.map(|c| s(c.as_str())));
    match &j.result {
        ResultAt::None => {}
        ResultAt::Inline(r) => put(attr::RESULT, Some(s(r))),
        ResultAt::Item(f) => put(attr::RESULT_FENCE, Some(n(f))),
    }
    if j.retry_debt {
        put(attr::RETRY_DEBT, Some(AttributeValue::Bool(true)));
    }
    if j.failed {
        put(attr::FAILED_KEY, Some(s(failed_partition(&j.job))));
        put(attr::FAILED_INDEX_SK, Some(n(j.job.index())));
    }
    put(attr::EXPIRES_AT, j.expires_at.map(n));
    item
}

/// Counter item attributes: the counts, and the replicas' live reports.
pub mod counter_attr {
    pub const SUCCEEDED: &str = "SUCCEEDED";
    pub const FAILED: &str = "FAILED";
    pub const CANCELLED: &str = "CANCELLED";
    pub const RETRYING: &str = "RETRYING";
    pub const ATTEMPTS: &str = "attempts";
    /// Live reports are kept in this many attributes (`l0`..), by replica name.
    pub const LIVE_SLOTS: u32 = 8;
}

/// The attribute that holds a replica's live report in a counter item.
pub fn live_attr(replica: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in replica.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("l{}", h % counter_attr::LIVE_SLOTS)
}

/// A live report as a counter item keeps it.
pub fn live_value(l: &super::LiveReport) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("r".to_owned(), s(&l.replica)),
        ("n".to_owned(), n(l.running)),
        ("d".to_owned(), n(l.after_retry)),
        ("t".to_owned(), n(l.at_ms)),
    ]))
}

/// A counter item's counts and live reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterItem {
    pub counts: super::Counts,
    /// By live attribute (`l0`..): the latest report written there.
    pub live: std::collections::BTreeMap<String, super::LiveReport>,
    pub expires_at: Option<u64>,
}

impl CounterItem {
    pub fn encode(&self, key: &ItemKey) -> Item {
        use counter_attr as c;
        let mut item: Item = HashMap::from([
            (attr::PK.to_owned(), s(&key.pk)),
            (attr::SK.to_owned(), s(&key.sk)),
        ]);
        for (name, v) in [
            (c::SUCCEEDED, self.counts.succeeded),
            (c::FAILED, self.counts.failed),
            (c::CANCELLED, self.counts.cancelled),
            (c::RETRYING, self.counts.retrying),
            (c::ATTEMPTS, self.counts.attempts),
        ] {
            item.insert(name.to_owned(), n(v));
        }
        for (a, l) in &self.live {
            item.insert(a.clone(), live_value(l));
        }
        if let Some(x) = self.expires_at {
            item.insert(attr::EXPIRES_AT.to_owned(), n(x));
        }
        item
    }

    pub fn decode(item: &Item, key: &ItemKey) -> Result<Self, LedgerError> {
        use counter_attr as c;
        let r = Reader::new(item, key);
        let mut live = std::collections::BTreeMap::new();
        for (a, v) in item {
            if a.starts_with('l') && a[1..].chars().all(|ch| ch.is_ascii_digit()) {
                let Ok(m) = v.as_m() else { continue };
                let lr = Reader::new(m, key);
                live.insert(
                    a.clone(),
                    super::LiveReport {
                        request_id: String::new(),
                        replica: lr.s("r")?.to_owned(),
                        running: lr.n("n")?,
                        after_retry: lr.n("d")?,
                        at_ms: lr.n("t")?,
                    },
                );
            }
        }
        Ok(CounterItem {
            counts: super::Counts {
                succeeded: r.opt_n(c::SUCCEEDED)?.unwrap_or(0),
                failed: r.opt_n(c::FAILED)?.unwrap_or(0),
                cancelled: r.opt_n(c::CANCELLED)?.unwrap_or(0),
                retrying: r.opt_n(c::RETRYING)?.unwrap_or(0),
                attempts: r.opt_n(c::ATTEMPTS)?.unwrap_or(0),
                running: 0,
                running_after_retry: 0,
            },
            live,
            expires_at: r.opt_n(attr::EXPIRES_AT)?,
        })
    }

    /// Adds this item's counts and its live reports newer than `LIVE_REPORT_MAX_AGE_MS` to
    /// `total`.
    pub fn add_to(&self, total: &mut super::Counts, now_ms: u64) {
        let c = &self.counts;
        total.succeeded += c.succeeded;
        total.failed += c.failed;
        total.cancelled += c.cancelled;
        total.retrying += c.retrying;
        total.attempts += c.attempts;
        for l in self.live.values() {
            if now_ms.saturating_sub(l.at_ms) <= super::LIVE_REPORT_MAX_AGE_MS {
                total.running += i64::from(l.running);
                total.running_after_retry += i64::from(l.after_retry.min(l.running));
            }
        }
    }
}

/// A request item's attributes.
pub fn encode_request(r: &super::RequestRecord, expires_at: Option<u64>) -> Item {
    use req_attr as a;
    let key = request_key(&r.request_id);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(&key.pk)),
        (attr::SK.to_owned(), s(&key.sk)),
        (a::REQUEST_ID.to_owned(), s(&r.request_id)),
        (a::JOB_TYPE.to_owned(), s(&r.job_type)),
        (a::TOTAL.to_owned(), n(r.total)),
        (a::CONTENT_HASH.to_owned(), s(&r.content_hash)),
        (a::CREATED_AT.to_owned(), n(r.created_at_ms)),
        (a::JOB_SHARDS.to_owned(), n(r.job_shards)),
        (a::WRITTEN.to_owned(), n(r.written)),
    ]);
    if let Some(m) = r.max_attempts {
        item.insert(a::MAX_ATTEMPTS.to_owned(), n(m));
    }
    if let Some(t) = r.target {
        item.insert(a::TARGET.to_owned(), s(t.as_str()));
    }
    if let Some(c) = r.cancelled_at_ms {
        item.insert(a::CANCELLED_AT.to_owned(), n(c));
    }
    if r.stop_running {
        item.insert(a::STOP_RUNNING.to_owned(), AttributeValue::Bool(true));
    }
    if let Some(x) = expires_at {
        item.insert(a::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

pub fn decode_request(item: &Item) -> Result<super::RequestRecord, LedgerError> {
    use req_attr as a;
    let key = ItemKey::new(
        item.get(attr::PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default(),
        REQUEST_SK,
    );
    let r = Reader::new(item, &key);
    Ok(super::RequestRecord {
        request_id: r.s(a::REQUEST_ID)?.to_owned(),
        job_type: r.s(a::JOB_TYPE)?.to_owned(),
        total: r.n(a::TOTAL)?,
        content_hash: r.s(a::CONTENT_HASH)?.to_owned(),
        max_attempts: r.opt_n(a::MAX_ATTEMPTS)?,
        target: r.target(a::TARGET)?,
        created_at_ms: r.n(a::CREATED_AT)?,
        job_shards: r.opt_n(a::JOB_SHARDS)?.unwrap_or(1).max(1),
        written: r.opt_n(a::WRITTEN)?.unwrap_or(0),
        cancelled_at_ms: r.opt_n(a::CANCELLED_AT)?,
        stop_running: r.bool(a::STOP_RUNNING),
    })
}

/// A payload item.
pub fn payload_item(lean: &ItemKey, payload_json: &str, expires_at: Option<u64>) -> Item {
    let key = satellite(lean, PAYLOAD_SUFFIX);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(key.pk)),
        (attr::SK.to_owned(), s(key.sk)),
        (attr::PAYLOAD.to_owned(), s(payload_json)),
    ]);
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// A result item.
pub fn result_item(lean: &ItemKey, fence: u64, result: &str, expires_at: Option<u64>) -> Item {
    let key = satellite(lean, RESULT_SUFFIX);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(key.pk)),
        (attr::SK.to_owned(), s(key.sk)),
        (attr::RESULT.to_owned(), s(result)),
        (attr::FENCE.to_owned(), n(fence)),
    ]);
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// The history ring's slot of an attempt: a job keeps its newest `keep` failed attempts.
pub fn history_slot(fence: u64, keep: u32) -> String {
    format!("h{}", fence % u64::from(keep.max(1)))
}

/// A history item: its ring of entries and how many were recorded.
pub fn history_item(
    lean: &ItemKey,
    ring: &std::collections::BTreeMap<String, (super::AttemptRecord, Option<String>)>,
    recorded: u64,
    expires_at: Option<u64>,
) -> Item {
    let key = satellite(lean, HISTORY_SUFFIX);
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(key.pk)),
        (attr::SK.to_owned(), s(key.sk)),
        (attr::RECORDED.to_owned(), n(recorded)),
    ]);
    for (slot, (rec, err)) in ring {
        item.insert(slot.clone(), record_value(rec, err.as_deref()));
    }
    if let Some(x) = expires_at {
        item.insert(attr::EXPIRES_AT.to_owned(), n(x));
    }
    item
}

/// A history item's entries, oldest first, and how many older ones it no longer holds.
pub fn decode_history(item: &Item, key: &ItemKey) -> Result<super::History, LedgerError> {
    let r = Reader::new(item, key);
    let recorded: u64 = r.opt_n(attr::RECORDED)?.unwrap_or(0);
    let mut attempts = Vec::new();
    for (a, v) in item {
        if a.starts_with('h') && a[1..].chars().all(|ch| ch.is_ascii_digit()) && a.len() > 1 {
            let (record, error) = record_from(v, key)?;
            attempts.push(super::HistoryEntry { record, error });
        }
    }
    attempts.sort_by_key(|e| e.record.fence);
    let older = recorded.saturating_sub(attempts.len() as u64);
    Ok(super::History { attempts, older })
}

/// Size of a number as DynamoDB counts it: about one byte per two significant digits, plus
/// one.
fn number_size(v: &str) -> usize {
    let digits = v
        .trim_start_matches('-')
        .trim_start_matches('0')
        .chars()
        .filter(char::is_ascii_digit)
        .count()
        .max(1);
    digits.div_ceil(2) + 1
}

/// The size of one attribute value in bytes, by DynamoDB's rules.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(x) => number_size(x),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|x| number_size(x)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// An item's size in bytes, by DynamoDB's rules (attribute names count).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units of a write that replaces an item of `old` bytes by one of `new` bytes.
pub fn write_units(old: usize, new: usize) -> u64 {
    (old.max(new).max(1)).div_ceil(1024) as u64
}

/// Read units of reading `bytes` (strongly consistent; half when eventually consistent).
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = (bytes.max(1)).div_ceil(4096) as f64;
    if consistent { units } else { units / 2.0 }
}

/// What the due index holds of an item (partition, sort key, and the entry's size: keys,
/// projected attributes and DynamoDB's 100 bytes of overhead).
pub fn due_entry(item: &Item) -> Option<(String, usize)> {
    index_entry(
        item,
        attr::DUE_KEY,
        attr::DUE_AT,
        &[attr::STATE, attr::FENCE, attr::OWNER, attr::TASK],
    )
}

/// What the failed index holds of an item.
pub fn failed_entry(item: &Item) -> Option<(String, usize)> {
    index_entry(
        item,
        attr::FAILED_KEY,
        attr::FAILED_INDEX_SK,
        &[
            attr::ATTEMPTS,
            attr::ERROR_CLASS,
            attr::LAST_ERROR,
            attr::LAST_ATTEMPT,
        ],
    )
}

fn index_entry(item: &Item, pk: &str, sk: &str, projected: &[&str]) -> Option<(String, usize)> {
    let part = item.get(pk)?.as_s().ok()?.clone();
    item.get(sk)?;
    let size = [attr::PK, attr::SK, pk, sk]
        .iter()
        .chain(projected)
        .filter_map(|a| item.get(*a).map(|v| a.len() + value_size(v)))
        .sum::<usize>()
        + 100;
    Some((part, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobId {
        JobId::new("req-1", 42).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keys_spread_a_request_over_its_shards_and_name_their_job() {
        let key = job_key(&job(), 16);
        assert_eq!(key.pk, "J#req-1#10");
        assert_eq!(key.sk, "000000042");
        assert_eq!(job_of(&key).ok(), Some(job()));
        assert_eq!(job_of(&satellite(&key, 'H')).ok(), Some(job()));
        assert_eq!(job_key(&job(), 1).pk, "J#req-1#0");
        assert!(job_of(&ItemKey::new("R#x", "R")).is_err());
    }

    #[test]
    fn a_job_item_survives_its_codec() {
        let key = job_key(&job(), 4);
        let mut j = JobItem::pending(
            job(),
            key,
            "resize",
            PayloadAt::Inline("{\"k\":1}".into()),
            1_800_000_000_000,
            32,
        );
        assert_eq!(decode_job(&encode_job(&j)).ok(), Some(j.clone()));
        j.state = JobState::Failed;
        j.failed = true;
        j.due = None;
        j.error_class = Some(ErrorClass::JobFailure);
        j.last_error = Some("boom".into());
        j.retry_debt = true;
        j.result = ResultAt::Item(3);
        j.payload = PayloadAt::Apart;
        j.last = Some(AttemptRecord {
            attempt: 2,
            fence: 3,
            started_ms: 5,
            ended_ms: 9,
            target: crate::message::Target::Lambda,
            outcome: crate::state::AttemptOutcome::Failed(ErrorClass::JobFailure),
            retry_at_ms: Some(10),
            reason: crate::message::RouteReason::of(crate::message::RouteRule::Default),
            exit_code: Some(1),
            stopped_reason: Some("Essential container exited".into()),
        });
        let item = encode_job(&j);
        assert!(failed_entry(&item).is_some());
        assert!(due_entry(&item).is_none());
        assert_eq!(decode_job(&item).ok(), Some(j));
    }

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        assert_eq!(item_size(&HashMap::from([("ab".into(), s("xyz"))])), 5);
        // 12345: five significant digits, three bytes, plus one.
        assert_eq!(value_size(&n(12345)), 4);
        assert_eq!(value_size(&n(0)), 2);
        assert_eq!(write_units(0, 1024), 1);
        assert_eq!(write_units(1025, 10), 2);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(10, false), 0.5);
    }

    #[test]
    fn small_payloads_stay_inline_and_the_item_lean() {
        let key = job_key(&job(), 64);
        let small = "x".repeat(512);
        let p = PayloadAt::Inline(small.clone());
        let mut j = JobItem::pending(job(), key.clone(), "resize", p, 1_800_000_000_000, 64);
        // A claimed job with a long owner name and every outcome field still fits 1 KB.
        j.state = JobState::Running;
        j.owner = Some("ip-10-0-123-45.ec2.internal-12345-a1b2c3".into());
        j.lease_until_ms = Some(1_800_000_060_000);
        j.attempts = 3;
        j.fence = 3;
        j.max_attempts = Some(5);
        j.started_at_ms = Some(1_800_000_000_000);
        j.enqueued_at_ms = Some(1_800_000_000_000);
        j.last = Some(AttemptRecord {
            attempt: 2,
            fence: 2,
            started_ms: 1_800_000_000_000,
            ended_ms: 1_800_000_000_000,
            target: crate::message::Target::Lambda,
            outcome: crate::state::AttemptOutcome::Failed(ErrorClass::JobFailure),
            retry_at_ms: Some(1_800_000_000_000),
            reason: crate::message::RouteReason::of(
                crate::message::RouteRule::PromotedAfterTimeout,
            ),
            exit_code: None,
            stopped_reason: None,
        });
        j.last_error = Some("e".repeat(SHORT_ERROR_BYTES));
        j.error_class = Some(ErrorClass::JobFailure);
        j.retry_debt = true;
        let size = item_size(&encode_job(&j));
        assert!(size <= LEAN_MAX_BYTES, "{size} bytes");
        let mut bare = j.clone();
        bare.payload = PayloadAt::Inline(String::new());
        let fixed = item_size(&encode_job(&bare)) - key.pk.len() - key.sk.len() - "resize".len();
        assert!(
            fixed <= LEAN_FIXED_BYTES,
            "{fixed} bytes besides keys and payload"
        );
        assert_eq!(
            payload_placement(&key, "resize", &small),
            PayloadAt::Inline(small.clone())
        );
        let big = "x".repeat(700);
        assert_eq!(payload_placement(&key, "resize", &big), PayloadAt::Apart);
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        assert_eq!(clip_bytes("abc", 10), "abc");
        let c = clip_bytes(&"é".repeat(100), 11);
        assert!(c.len() <= 11 && c.ends_with('…'), "{c}");
    }
}
