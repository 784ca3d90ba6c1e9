//! The job's lean item: typed as [`JobItem`], read by [`decode_job`], written by
//! [`encode_job`], and what a claim makes of it.

use super::*;
use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::ledger::{AttemptRecord, ItemKey, LedgerError};
use crate::message::Target;
use crate::state::JobState;

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
pub fn claimed(old: &JobItem, req: &crate::ledger::ClaimRequest<'_>, index_shards: u32) -> JobItem {
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
    req: &crate::ledger::ClaimRequest<'_>,
) -> crate::ledger::Lease {
    crate::ledger::Lease {
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

/// Whether a result fits on the lean item of an attempt whose claimed item had
/// `item_bytes`: the terminal write drops the lease's attributes and adds the finish time,
/// the duration, the last attempt and the result, all within [`LEAN_MAX_BYTES`].
pub fn result_inline(item_bytes: usize, result: &str) -> bool {
    item_bytes + 2 + result.len() + 200 <= LEAN_MAX_BYTES
}

/// The payload inline on the lean item when it leaves the item room for an outcome under
/// [`LEAN_MAX_BYTES`], else apart.
impl crate::ledger::NewJob {
    /// The job's lean item as the producer writes it, and where its payload goes.
    pub fn pending_item(&self, index_shards: u32) -> (JobItem, PayloadAt) {
        let payload = payload_placement(&self.key, &self.job_type, &self.payload_json);
        let mut j = JobItem::pending(
            self.job.clone(),
            self.key.clone(),
            &self.job_type,
            payload.clone(),
            self.created_at_ms,
            index_shards,
        );
        j.max_attempts = self.max_attempts;
        j.target = self.target;
        if self.held {
            j.due = None;
        }
        (j, payload)
    }

    /// What writing the job costs, by partition: its lean item's write units, and its
    /// payload item's when the payload is apart.
    pub fn write_units(&self) -> Vec<(String, u64)> {
        let (j, payload) = self.pending_item(1);
        let mut out = vec![(
            self.key.pk.clone(),
            write_units(0, item_size(&encode_job(&j))),
        )];
        if payload == PayloadAt::Apart {
            let p = payload_item(&self.key, &self.payload_json, None);
            out.push((
                satellite(&self.key, PAYLOAD_SUFFIX).pk,
                write_units(0, item_size(&p)),
            ));
        }
        out
    }
}

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
    if let Some(u) = &r.usage {
        m.insert("b".to_owned(), n(u.billed_ms));
        m.insert("mb".to_owned(), n(u.memory_mb));
        m.insert("u".to_owned(), n(u.cost_nusd));
        if let Some(c) = u.cpu_units {
            m.insert("c".to_owned(), n(c));
        }
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
            usage: match r.opt_n("b")? {
                Some(billed_ms) => Some(crate::ledger::Usage {
                    billed_ms,
                    memory_mb: r.opt_n("mb")?.unwrap_or(0),
                    cpu_units: r.opt_n("c")?,
                    cost_nusd: r.opt_n("u")?.unwrap_or(0),
                }),
                None => None,
            },
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
