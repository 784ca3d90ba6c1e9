//! The ledger on DynamoDB. Item layout (see `docs/ARCHITECTURE.md`):
//!
//! - request item: `pk = "R#<request id>"`, `sk = "R"`;
//! - job item: `pk = "R#<request id>"`, `sk = "J#<index, 9 digits>"`.
//!
//! A request's jobs share its partition key, so `status` is one paginated Query; DynamoDB
//! splits a hot item collection by sort key range (there is no local secondary index to
//! stop it). Every attribute name goes through an expression alias, since several (`state`,
//! `owner`, `result`) are DynamoDB reserved words.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, WriteRequest,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};

use super::{
    Adopted, AttemptRecord, Claim, ClaimRequest, Expired, Finish, JobDetail, JobSummary, Lease,
    Ledger, LedgerError, NewJob, Redrive, RequestRecord, Requeue, lease_shard,
};
use crate::ids::JobId;
use crate::message::Target;
use crate::state::{JobState, sources, transition};

/// Attribute names of the table.
pub mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const KIND: &str = "kind";
    pub const REQUEST_ID: &str = "request_id";
    pub const JOB_ID: &str = "job_id";
    pub const JOB_INDEX: &str = "job_index";
    pub const JOB_TYPE: &str = "job_type";
    pub const STATE: &str = "state";
    pub const ATTEMPTS: &str = "attempts";
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    pub const FENCE: &str = "fence";
    pub const OWNER: &str = "owner";
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const RETRY_AT: &str = "retry_at";
    pub const PAYLOAD: &str = "payload";
    pub const TARGET: &str = "target";
    pub const CREATED_AT: &str = "created_at";
    pub const ENQUEUED_AT: &str = "enqueued_at";
    pub const STARTED_AT: &str = "started_at";
    pub const FINISHED_AT: &str = "finished_at";
    pub const DURATION_MS: &str = "duration_ms";
    pub const RESULT: &str = "result";
    pub const RESULT_TRUNCATED: &str = "result_truncated";
    pub const LAST_ERROR: &str = "last_error";
    pub const TOTAL: &str = "total";
    pub const CONTENT_HASH: &str = "content_hash";
    pub const HISTORY: &str = "history";
    pub const CANCELLED_AT: &str = "cancelled_at";
    pub const LEASE_SHARD: &str = "lease_shard";
    pub const TASK: &str = "task_arn";
    pub const DURATIONS: &str = "durations";
    pub const VERSION: &str = "version";
    pub const REQUEUED_AT: &str = "requeued_at";
    /// When DynamoDB's TTL may delete the item (epoch seconds): finished jobs, and requests.
    pub const EXPIRES_AT: &str = "expires_at";
}

/// The sparse index of RUNNING jobs by lease expiry: `lease_shard` (S) and `lease_until` (N).
/// Only RUNNING items carry `lease_shard`, so the index holds nothing else.
pub const LEASE_INDEX: &str = "lease-expiry";

/// Partition key of a job type's duration record.
pub fn job_type_pk(job_type: &str) -> String {
    format!("T#{job_type}")
}

/// Sort key of a job type's duration record.
pub const DURATIONS_SK: &str = "D";

/// Sort key of a request item.
pub const REQUEST_SK: &str = "R";

/// Partition key of a request and its jobs.
pub fn request_pk(request_id: &str) -> String {
    format!("R#{request_id}")
}

/// Sort key of a job item: zero-padded so that jobs sort by index.
pub fn job_sk(index: u32) -> String {
    format!("J#{index:09}")
}

/// Every alias used in expressions, `#name` → attribute name.
const ALIASES: &[(&str, &str)] = &[
    ("#pk", attr::PK),
    ("#sk", attr::SK),
    ("#ki", attr::KIND),
    ("#rid", attr::REQUEST_ID),
    ("#jid", attr::JOB_ID),
    ("#ix", attr::JOB_INDEX),
    ("#jt", attr::JOB_TYPE),
    ("#st", attr::STATE),
    ("#at", attr::ATTEMPTS),
    ("#ma", attr::MAX_ATTEMPTS),
    ("#fe", attr::FENCE),
    ("#ow", attr::OWNER),
    ("#lu", attr::LEASE_UNTIL),
    ("#ra", attr::RETRY_AT),
    ("#pl", attr::PAYLOAD),
    ("#ca", attr::CREATED_AT),
    ("#ea", attr::ENQUEUED_AT),
    ("#sa", attr::STARTED_AT),
    ("#fa", attr::FINISHED_AT),
    ("#du", attr::DURATION_MS),
    ("#re", attr::RESULT),
    ("#rt", attr::RESULT_TRUNCATED),
    ("#le", attr::LAST_ERROR),
    ("#hi", attr::HISTORY),
    ("#tg", attr::TARGET),
    ("#ls", attr::LEASE_SHARD),
    ("#ta", attr::TASK),
    ("#rq", attr::REQUEUED_AT),
    ("#xa", attr::EXPIRES_AT),
];

/// Whether `expr` uses `alias` as a whole word (`#at` is not used by `#ate`).
fn alias_used(expr: &str, alias: &str) -> bool {
    expr.match_indices(alias).any(|(i, _)| {
        !expr[i + alias.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Adds the aliases the expressions use (DynamoDB refuses unused ones).
fn with_aliases(mut b: UpdateItemFluentBuilder, exprs: &[&str]) -> UpdateItemFluentBuilder {
    for (alias, name) in ALIASES {
        if exprs.iter().any(|e| alias_used(e, alias)) {
            b = b.expression_attribute_names(*alias, *name);
        }
    }
    b
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

type Item = HashMap<String, AttributeValue>;

fn key_of(item: &Item) -> String {
    let part = |k| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .unwrap_or("?")
    };
    format!("{}/{}", part(attr::PK), part(attr::SK))
}

fn malformed(item: &Item, message: String) -> LedgerError {
    LedgerError::Malformed {
        key: key_of(item),
        message,
    }
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, LedgerError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| malformed(item, format!("no string attribute {name}")))
}

fn opt_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn opt_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>, LedgerError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| malformed(item, format!("{name} = {v:?} is out of range"))),
        Some(_) => Err(malformed(item, format!("{name} is not a number"))),
    }
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, LedgerError> {
    opt_n(item, name)?.ok_or_else(|| malformed(item, format!("no number attribute {name}")))
}

fn get_state(item: &Item) -> Result<JobState, LedgerError> {
    get_s(item, attr::STATE)?
        .parse()
        .map_err(|e| malformed(item, format!("{e}")))
}

fn aws_err<E>(op: &'static str, e: SdkError<E>) -> LedgerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    LedgerError::Aws {
        op,
        message: DisplayErrorContext(e).to_string(),
    }
}

fn target_from(item: &Item) -> Result<Option<Target>, LedgerError> {
    opt_s(item, attr::TARGET)
        .map(|t| {
            serde_json::from_value(serde_json::Value::String(t.to_owned()))
                .map_err(|_| malformed(item, format!("unknown target {t:?}")))
        })
        .transpose()
}

/// Whether an SDK error is DynamoDB's "the condition did not hold".
fn condition_failed<E>(e: &SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// The ledger in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    ttl_secs: Option<u64>,
}

/// The answer to writing a request item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRequestOutcome {
    Created,
    /// A request with this id exists; here is what it holds.
    Exists(RequestRecord),
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            ttl_secs: None,
        }
    }

    /// Finished jobs (and requests, from their creation) get `expires_at` this long after,
    /// for the table's TTL to delete them; kept for ever when `None`.
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl_secs = ttl.map(|t| t.as_secs());
        self
    }

    /// `SET #xa = :xa, ...` in front of a terminal write's `SET`, and its value, when a TTL is
    /// configured.
    fn expiring(
        &self,
        expr: &str,
        now_ms: u64,
        values: &mut Vec<(&str, AttributeValue)>,
    ) -> String {
        match self.ttl_secs {
            Some(ttl) => {
                values.push((":xa", n(now_ms / 1000 + ttl)));
                expr.replacen("SET ", "SET #xa = :xa, ", 1)
            }
            None => expr.to_owned(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn update(&self, job: &JobId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(request_pk(job.request_id())))
            .key(attr::SK, s(job_sk(job.index())))
    }

    async fn get_job_item(&self, job: &JobId) -> Result<Option<Item>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(request_pk(job.request_id())))
            .key(attr::SK, s(job_sk(job.index())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_err("GetItem", e))?;
        Ok(out.item)
    }

    /// Creates the table if it does not exist (on-demand capacity) and waits until it is
    /// active. An existing table with another key schema is an error.
    /// Turns on the table's TTL on `expires_at` (`init`, when `ledger.ttl_days` is set).
    /// Already on is fine.
    pub async fn enable_ttl(&self) -> Result<(), LedgerError> {
        let current = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| aws_err("DescribeTimeToLive", e))?;
        let on = current.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(attr::EXPIRES_AT)
                && matches!(
                    d.time_to_live_status(),
                    Some(
                        aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled
                            | aws_sdk_dynamodb::types::TimeToLiveStatus::Enabling
                    )
                )
        });
        if on {
            return Ok(());
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                    .attribute_name(attr::EXPIRES_AT)
                    .enabled(true)
                    .build()
                    .map_err(|e| LedgerError::Aws {
                        op: "UpdateTimeToLive",
                        message: e.to_string(),
                    })?,
            )
            .send()
            .await
            .map_err(|e| aws_err("UpdateTimeToLive", e))?;
        Ok(())
    }

    pub async fn create_table(&self) -> Result<bool, LedgerError> {
        let created = match self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr_def(attr::PK))
            .attribute_definitions(attr_def(attr::SK))
            .attribute_definitions(attr_def(attr::LEASE_SHARD))
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr::LEASE_UNTIL)
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .expect("attribute definition has its required fields"),
            )
            .key_schema(key_elem(attr::PK, KeyType::Hash))
            .key_schema(key_elem(attr::SK, KeyType::Range))
            .global_secondary_indexes(lease_index())
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) =>
            {
                false
            }
            Err(e) => return Err(aws_err("CreateTable", e)),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| aws_err("DescribeTable", e))?;
            let Some(table) = out.table else {
                return Err(LedgerError::Aws {
                    op: "DescribeTable",
                    message: format!("no description returned for table {}", self.table),
                });
            };
            let keys: Vec<(String, KeyType)> = table
                .key_schema()
                .iter()
                .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
                .collect();
            let want = vec![
                (attr::PK.to_owned(), KeyType::Hash),
                (attr::SK.to_owned(), KeyType::Range),
            ];
            if keys != want {
                return Err(LedgerError::Malformed {
                    key: self.table.clone(),
                    message: format!("table exists with key schema {keys:?}, expected {want:?}"),
                });
            }
            let has_index = table
                .global_secondary_indexes()
                .iter()
                .any(|i| i.index_name() == Some(LEASE_INDEX));
            if !has_index {
                return Err(LedgerError::Malformed {
                    key: self.table.clone(),
                    message: format!(
                        "table exists without the {LEASE_INDEX} index; delete it or add the index (pk lease_shard S, sk lease_until N)"
                    ),
                });
            }
            if table.table_status() == Some(&TableStatus::Active) {
                return Ok(created);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LedgerError::Aws {
                    op: "DescribeTable",
                    message: format!("table {} did not become ACTIVE within 120 s", self.table),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Writes a request item unless one with this id exists.
    pub async fn put_request(&self, r: &RequestRecord) -> Result<PutRequestOutcome, LedgerError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::PK, s(request_pk(&r.request_id)))
            .item(attr::SK, s(REQUEST_SK))
            .item(attr::KIND, s("request"))
            .item(attr::REQUEST_ID, s(&r.request_id))
            .item(attr::JOB_TYPE, s(&r.job_type))
            .item(attr::TOTAL, n(r.total))
            .item(attr::CONTENT_HASH, s(&r.content_hash))
            .item(attr::CREATED_AT, n(r.created_at_ms))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(m) = r.max_attempts {
            put = put.item(attr::MAX_ATTEMPTS, n(m));
        }
        if let Some(t) = r.target {
            put = put.item(attr::TARGET, s(t.as_str()));
        }
        if let Some(ttl) = self.ttl_secs {
            put = put.item(attr::EXPIRES_AT, n(r.created_at_ms / 1000 + ttl));
        }
        match put.send().await {
            Ok(_) => Ok(PutRequestOutcome::Created),
            Err(e) if condition_failed(&e) => match self.get_request(&r.request_id).await? {
                Some(existing) => Ok(PutRequestOutcome::Exists(existing)),
                None => Err(LedgerError::Aws {
                    op: "PutItem",
                    message: format!(
                        "request {} was refused as existing but cannot be read",
                        r.request_id
                    ),
                }),
            },
            Err(e) => Err(aws_err("PutItem", e)),
        }
    }

    /// Reads a request item.
    pub async fn get_request(
        &self,
        request_id: &str,
    ) -> Result<Option<RequestRecord>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(request_pk(request_id)))
            .key(attr::SK, s(REQUEST_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_err("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        Ok(Some(RequestRecord {
            request_id: get_s(&item, attr::REQUEST_ID)?.to_owned(),
            job_type: get_s(&item, attr::JOB_TYPE)?.to_owned(),
            total: get_n(&item, attr::TOTAL)?,
            content_hash: get_s(&item, attr::CONTENT_HASH)?.to_owned(),
            max_attempts: opt_n(&item, attr::MAX_ATTEMPTS)?,
            target: target_from(&item)?,
            created_at_ms: get_n(&item, attr::CREATED_AT)?,
        }))
    }

    /// Writes PENDING job items with BatchWriteItem, 25 per call and a few calls in flight,
    /// re-sending unprocessed items with backoff. Items are written unconditionally: the
    /// caller passes only jobs that have no item yet.
    pub async fn put_new_jobs(&self, jobs: &[NewJob]) -> Result<(), LedgerError> {
        // Futures built before the stream, not in a stream closure over borrowed chunks: the
        // caller's future stays provably `Send` (rust-lang/rust#102211).
        let writes: Vec<_> = jobs.chunks(25).map(|c| self.batch_write(c)).collect();
        futures::stream::iter(writes)
            .buffer_unordered(4)
            .try_collect::<()>()
            .await
    }

    async fn batch_write(&self, chunk: &[NewJob]) -> Result<(), LedgerError> {
        let mut pending: Vec<WriteRequest> = chunk.iter().map(new_job_request).collect();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(12)
            .with_jitter()
            .build();
        loop {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(|e| aws_err("BatchWriteItem", e))?;
            pending = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return Err(LedgerError::Aws {
                        op: "BatchWriteItem",
                        message: format!("{} items still unprocessed after retries", pending.len()),
                    });
                }
            }
        }
    }

    /// Every job of a request with its state and attempt count, by index.
    pub async fn job_summaries(&self, request_id: &str) -> Result<Vec<JobSummary>, LedgerError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :j)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#sk", attr::SK)
            .expression_attribute_names("#ix", attr::JOB_INDEX)
            .expression_attribute_names("#st", attr::STATE)
            .expression_attribute_names("#at", attr::ATTEMPTS)
            .expression_attribute_values(":pk", s(request_pk(request_id)))
            .expression_attribute_values(":j", s("J#"))
            .projection_expression("#ix, #st, #at")
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_err("Query", e))?;
            for item in page.items() {
                out.push(JobSummary {
                    index: get_n(item, attr::JOB_INDEX)?,
                    state: get_state(item)?,
                    attempts: get_n(item, attr::ATTEMPTS)?,
                });
            }
        }
        Ok(out)
    }
}

fn lease_index() -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(LEASE_INDEX)
        .key_schema(key_elem(attr::LEASE_SHARD, KeyType::Hash))
        .key_schema(key_elem(attr::LEASE_UNTIL, KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes(attr::JOB_ID)
                .non_key_attributes(attr::FENCE)
                .non_key_attributes(attr::OWNER)
                .non_key_attributes(attr::TASK)
                .non_key_attributes(attr::STATE)
                .build(),
        )
        .build()
        .expect("index has its required fields")
}

fn attr_def(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute definition has its required fields")
}

fn key_elem(name: &str, kt: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kt)
        .build()
        .expect("key schema element has its required fields")
}

fn new_job_request(j: &NewJob) -> WriteRequest {
    let mut item: Item = HashMap::from([
        (attr::PK.to_owned(), s(request_pk(j.job.request_id()))),
        (attr::SK.to_owned(), s(job_sk(j.job.index()))),
        (attr::KIND.to_owned(), s("job")),
        (attr::REQUEST_ID.to_owned(), s(j.job.request_id())),
        (attr::JOB_ID.to_owned(), s(j.job.to_string())),
        (attr::JOB_INDEX.to_owned(), n(j.job.index())),
        (attr::JOB_TYPE.to_owned(), s(&j.job_type)),
        (attr::STATE.to_owned(), s(JobState::Pending.as_str())),
        (attr::ATTEMPTS.to_owned(), n(0)),
        (attr::FENCE.to_owned(), n(0)),
        (attr::PAYLOAD.to_owned(), s(&j.payload_json)),
        (attr::CREATED_AT.to_owned(), n(j.created_at_ms)),
        // In the lease-expiry index from the start, due since creation: the sweeper can
        // find a PENDING job whose message was lost.
        (
            attr::LEASE_SHARD.to_owned(),
            s(lease_shard(&j.job).to_string()),
        ),
        (attr::LEASE_UNTIL.to_owned(), n(j.created_at_ms)),
    ]);
    if let Some(m) = j.max_attempts {
        item.insert(attr::MAX_ATTEMPTS.to_owned(), n(m));
    }
    if let Some(t) = j.target {
        item.insert(attr::TARGET.to_owned(), s(t.as_str()));
    }
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("put request has its item"),
        )
        .build()
}

/// Builds `#st IN (:s0, :s1, ...)` over the states from which a claim starts a fresh
/// attempt (every source of RUNNING but RUNNING itself, which needs an expired lease).
fn fresh_claim_sources() -> (String, Vec<(String, AttributeValue)>) {
    let states: Vec<JobState> = sources(JobState::Running)
        .into_iter()
        .filter(|s| *s != JobState::Running)
        .collect();
    let names: Vec<String> = (0..states.len()).map(|i| format!(":src{i}")).collect();
    let values = names
        .iter()
        .cloned()
        .zip(states.iter().map(|st| s(st.as_str())))
        .collect();
    (format!("#st IN ({})", names.join(", ")), values)
}

/// Condition of every write that needs the lease: still RUNNING, same owner, same fence.
const OWNED: &str = "#st = :running AND #ow = :owner AND #fe = :fence";

impl DynamoLedger {
    fn owned(&self, lease: &Lease, b: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        b.condition_expression(OWNED)
            .expression_attribute_values(":running", s(JobState::Running.as_str()))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":fence", n(lease.fence))
    }

    async fn owned_write(
        &self,
        lease: &Lease,
        update_expr: &str,
        values: Vec<(&str, AttributeValue)>,
        returning: ReturnValue,
    ) -> Result<Item, LedgerError> {
        let mut b = with_aliases(self.update(&lease.job), &[update_expr, OWNED])
            .update_expression(update_expr)
            .return_values(returning);
        for (k, v) in values {
            b = b.expression_attribute_values(k, v);
        }
        match self.owned(lease, b).send().await {
            Ok(out) => Ok(out.attributes.unwrap_or_default()),
            Err(e) if condition_failed(&e) => Err(LedgerError::Stale {
                job: lease.job.to_string(),
                fence: lease.fence,
            }),
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    /// An UpdateItem with a condition: the item as written (`returning`), or `None` when the
    /// condition did not hold.
    async fn conditional(
        &self,
        job: &JobId,
        expr: &str,
        cond: &str,
        values: Vec<(&str, AttributeValue)>,
        returning: ReturnValue,
    ) -> Result<Option<Item>, LedgerError> {
        let mut b = with_aliases(self.update(job), &[expr, cond])
            .update_expression(expr)
            .condition_expression(cond)
            .return_values(returning);
        for (k, v) in values {
            b = b.expression_attribute_values(k, v);
        }
        match b.send().await {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    /// FAILED → PENDING with `budget` more attempts than it has used (an operator's
    /// redrive). A job already PENDING (a redrive repeated after a crash) gets the same
    /// treatment, so a redrive can be run again safely.
    pub async fn redrive(
        &self,
        job: &JobId,
        budget: u32,
        target: Option<Target>,
    ) -> Result<Redrive, LedgerError> {
        transition(JobState::Failed, JobState::Pending)?;
        let mut set =
            String::from("SET #st = :pending, #ma = #at + :budget, #ls = :shard, #lu = :now");
        if target.is_some() {
            set.push_str(", #tg = :target");
        }
        let expr = format!("{set} REMOVE #fa, #ra, #xa");
        let cond = "#st IN (:failed, :pending)";
        let mut b = with_aliases(self.update(job), &[&expr, cond])
            .update_expression(&expr)
            .condition_expression(cond)
            .expression_attribute_values(":pending", s(JobState::Pending.as_str()))
            .expression_attribute_values(":failed", s(JobState::Failed.as_str()))
            .expression_attribute_values(":budget", n(budget))
            .expression_attribute_values(":shard", s(lease_shard(job).to_string()))
            .expression_attribute_values(":now", n(crate::time::now_ms()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(t) = target {
            b = b.expression_attribute_values(":target", s(t.as_str()));
        }
        match b.send().await {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Redrive::Redriven {
                    job_type: get_s(&item, attr::JOB_TYPE)?.to_owned(),
                    payload_json: get_s(&item, attr::PAYLOAD)?.to_owned(),
                    attempts: get_n(&item, attr::ATTEMPTS)?,
                    max_attempts: get_n(&item, attr::MAX_ATTEMPTS)?,
                })
            }
            Err(e) if condition_failed(&e) => match self.get_job_item(job).await? {
                Some(item) => Ok(Redrive::NotFailed(get_state(&item)?)),
                None => Ok(Redrive::Missing),
            },
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    /// PENDING or RETRYING → CANCELLED. False when the job was in another state (running,
    /// finished, or already cancelled).
    pub async fn cancel(&self, job: &JobId, now_ms: u64) -> Result<bool, LedgerError> {
        let from: Vec<JobState> = crate::state::sources(JobState::Cancelled)
            .into_iter()
            .filter(|st| *st != JobState::Running)
            .collect();
        let mut values = vec![
            (":cancelled", s(JobState::Cancelled.as_str())),
            (":now", n(now_ms)),
        ];
        let names = [":c0", ":c1", ":c2", ":c3"];
        for (name, st) in names.iter().zip(&from) {
            values.push((name, s(st.as_str())));
        }
        let cond = format!("#st IN ({})", names[..from.len()].join(", "));
        let expr = self.expiring(
            "SET #st = :cancelled, #fa = :now REMOVE #ra, #ls, #lu",
            now_ms,
            &mut values,
        );
        Ok(self
            .conditional(job, &expr, &cond, values, ReturnValue::None)
            .await?
            .is_some())
    }

    /// RUNNING → CANCELLED for a job that runs in a task (ECS or a local process), so the
    /// task can be stopped; its owner's next heartbeat finds the lease gone. Returns the task,
    /// or `None` when the job was not running in one (a Lambda attempt finishes on its own).
    pub async fn cancel_running(
        &self,
        job: &JobId,
        now_ms: u64,
    ) -> Result<Option<String>, LedgerError> {
        transition(JobState::Running, JobState::Cancelled)?;
        let mut values = vec![
            (":cancelled", s(JobState::Cancelled.as_str())),
            (":running", s(JobState::Running.as_str())),
            (":now", n(now_ms)),
        ];
        let expr = self.expiring(
            "SET #st = :cancelled, #fa = :now REMOVE #ow, #lu, #ls",
            now_ms,
            &mut values,
        );
        let item = self
            .conditional(
                job,
                &expr,
                "#st = :running AND attribute_exists(#ta)",
                values,
                ReturnValue::AllNew,
            )
            .await?;
        Ok(item
            .as_ref()
            .and_then(|i| opt_s(i, attr::TASK))
            .map(str::to_owned))
    }

    /// Marks a request as cancelled (when, for `status`).
    pub async fn mark_request_cancelled(
        &self,
        request_id: &str,
        now_ms: u64,
    ) -> Result<(), LedgerError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(request_pk(request_id)))
            .key(attr::SK, s(REQUEST_SK))
            .update_expression("SET #ca = if_not_exists(#ca, :now)")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#ca", attr::CANCELLED_AT)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if condition_failed(&e) {
                    Ok(())
                } else {
                    Err(aws_err("UpdateItem", e))
                }
            })
    }

    async fn durations_item(&self, job_type: &str) -> Result<(u64, Vec<u64>), LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(job_type_pk(job_type)))
            .key(attr::SK, s(DURATIONS_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_err("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok((0, Vec::new()));
        };
        let list = match item.get(attr::DURATIONS) {
            Some(AttributeValue::L(l)) => l
                .iter()
                .filter_map(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
                .collect(),
            _ => Vec::new(),
        };
        Ok((get_n(&item, attr::VERSION)?, list))
    }

    /// Every job of a request in full, by index.
    pub async fn jobs(&self, request_id: &str) -> Result<Vec<JobDetail>, LedgerError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :j)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#sk", attr::SK)
            .expression_attribute_values(":pk", s(request_pk(request_id)))
            .expression_attribute_values(":j", s("J#"))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_err("Query", e))?;
            for item in page.items() {
                out.push(JobDetail {
                    job_id: get_s(item, attr::JOB_ID)?.to_owned(),
                    index: get_n(item, attr::JOB_INDEX)?,
                    state: get_state(item)?,
                    attempts: get_n(item, attr::ATTEMPTS)?,
                    task: opt_s(item, attr::TASK).map(str::to_owned),
                    last_error: opt_s(item, attr::LAST_ERROR).map(str::to_owned),
                    history: history_from(item)?,
                });
            }
        }
        Ok(out)
    }

    /// A job's attempt history.
    pub async fn history(&self, job: &JobId) -> Result<Vec<AttemptRecord>, LedgerError> {
        match self.get_job_item(job).await? {
            Some(item) => history_from(&item),
            None => Ok(Vec::new()),
        }
    }
}

fn record_value(r: &AttemptRecord) -> AttributeValue {
    let mut m = HashMap::from([
        ("attempt".to_owned(), n(r.attempt)),
        ("fence".to_owned(), n(r.fence)),
        ("started".to_owned(), n(r.started_ms)),
        ("ended".to_owned(), n(r.ended_ms)),
        ("target".to_owned(), s(&r.target)),
        ("outcome".to_owned(), s(&r.outcome)),
    ]);
    if let Some(at) = r.retry_at_ms {
        m.insert("retry_at".to_owned(), n(at));
    }
    if !r.reason.is_empty() {
        m.insert("reason".to_owned(), s(&r.reason));
    }
    if let Some(code) = r.exit_code {
        m.insert("exit_code".to_owned(), n(code));
    }
    if let Some(why) = &r.stopped_reason {
        m.insert("stopped".to_owned(), s(why));
    }
    AttributeValue::M(m)
}

fn history_from(item: &Item) -> Result<Vec<AttemptRecord>, LedgerError> {
    let Some(list) = item.get(attr::HISTORY) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_l()
        .map_err(|_| malformed(item, "history is not a list".into()))?;
    list.iter()
        .map(|v| {
            let m = v
                .as_m()
                .map_err(|_| malformed(item, "history entry is not a map".into()))?;
            Ok(AttemptRecord {
                attempt: get_n(m, "attempt")?,
                fence: get_n(m, "fence")?,
                started_ms: get_n(m, "started")?,
                ended_ms: get_n(m, "ended")?,
                target: get_s(m, "target")?.to_owned(),
                outcome: get_s(m, "outcome")?.to_owned(),
                retry_at_ms: opt_n(m, "retry_at")?,
                reason: opt_s(m, "reason").unwrap_or_default().to_owned(),
                exit_code: opt_n(m, "exit_code")?,
                stopped_reason: opt_s(m, "stopped").map(str::to_owned),
            })
        })
        .collect()
}

impl Ledger for DynamoLedger {
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
        let until = req.now_ms + req.lease_ms;
        let mut set = String::from(
            "SET #st = :running, #ow = :owner, #lu = :until, \
             #fe = if_not_exists(#fe, :zero) + :one, #at = if_not_exists(#at, :zero) + :one, \
             #sa = :now, #ki = if_not_exists(#ki, :kind), #rid = if_not_exists(#rid, :rid), \
             #jid = if_not_exists(#jid, :jid), #ix = if_not_exists(#ix, :ix), \
             #jt = if_not_exists(#jt, :jt), #pl = if_not_exists(#pl, :pl), \
             #ca = if_not_exists(#ca, :now), #ea = if_not_exists(#ea, :ea), #ls = :shard",
        );
        if req.max_attempts.is_some() {
            set.push_str(", #ma = if_not_exists(#ma, :ma)");
        }
        let update_expr = format!("{set} REMOVE #ra, #ta");
        let (fresh, fresh_values) = fresh_claim_sources();
        let cond = format!(
            "attribute_not_exists(#pk) OR ({fresh} AND (attribute_not_exists(#ra) OR #ra <= :now)) \
             OR (#st = :running AND #lu < :expired)"
        );
        let mut b = with_aliases(self.update(req.job), &[&update_expr, &cond])
            .update_expression(&update_expr)
            .condition_expression(&cond)
            .expression_attribute_values(":running", s(JobState::Running.as_str()))
            .expression_attribute_values(":owner", s(req.owner))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(req.now_ms))
            .expression_attribute_values(":kind", s("job"))
            .expression_attribute_values(":rid", s(req.job.request_id()))
            .expression_attribute_values(":jid", s(req.job.to_string()))
            .expression_attribute_values(":ix", n(req.job.index()))
            .expression_attribute_values(":jt", s(req.job_type))
            .expression_attribute_values(":pl", s(req.payload_json))
            .expression_attribute_values(":ea", n(req.enqueued_at_ms))
            .expression_attribute_values(":expired", n(req.now_ms.saturating_sub(req.skew_ms)))
            .expression_attribute_values(":shard", s(lease_shard(req.job).to_string()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (k, v) in fresh_values {
            b = b.expression_attribute_values(k, v);
        }
        if let Some(m) = req.max_attempts {
            b = b.expression_attribute_values(":ma", n(m));
        }
        match b.send().await {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Claim::Claimed(Lease {
                    job: req.job.clone(),
                    owner: req.owner.to_owned(),
                    fence: get_n(&item, attr::FENCE)?,
                    attempt: get_n(&item, attr::ATTEMPTS)?,
                    max_attempts: opt_n(&item, attr::MAX_ATTEMPTS)?,
                    started_ms: req.now_ms,
                    until_ms: until,
                    target: target_from(&item)?,
                    previous: history_from(&item)?.pop(),
                }))
            }
            Err(e) if condition_failed(&e) => {
                let old = match e.into_service_error() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let item = match old {
                    Some(item) => Some(item),
                    None => self.get_job_item(req.job).await?,
                };
                let Some(item) = item else {
                    // Deleted between the write and the read: let the message come back.
                    return Ok(Claim::NotYet {
                        state: JobState::Pending,
                        until_ms: req.now_ms,
                    });
                };
                claim_refusal(&item, req)
            }
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    async fn heartbeat(&self, lease: &Lease, until_ms: u64) -> Result<(), LedgerError> {
        self.owned_write(
            lease,
            "SET #lu = :until",
            vec![(":until", n(until_ms))],
            ReturnValue::None,
        )
        .await
        .map(|_| ())
    }

    async fn finish(
        &self,
        lease: &Lease,
        finish: &Finish,
        record: &AttemptRecord,
    ) -> Result<Vec<AttemptRecord>, LedgerError> {
        transition(JobState::Running, finish.state())?;
        const HISTORY: &str = "#hi = list_append(if_not_exists(#hi, :empty), :rec)";
        let mut values = vec![
            (":to", s(finish.state().as_str())),
            (":d", n(record.ended_ms.saturating_sub(record.started_ms))),
            (":empty", AttributeValue::L(vec![])),
            (":rec", AttributeValue::L(vec![record_value(record)])),
        ];
        let (expr, returning) = match finish {
            Finish::Succeeded {
                result: Some(result),
            } => {
                values.push((":now", n(record.ended_ms)));
                values.push((":r", s(result)));
                (
                    format!(
                        "SET #st = :to, #fa = :now, #du = :d, #re = :r, {HISTORY} REMOVE #ow, #lu, #ls, #le"
                    ),
                    ReturnValue::None,
                )
            }
            Finish::Succeeded { result: None } => {
                values.push((":now", n(record.ended_ms)));
                values.push((":t", AttributeValue::Bool(true)));
                (
                    format!(
                        "SET #st = :to, #fa = :now, #du = :d, #rt = :t, {HISTORY} REMOVE #ow, #lu, #ls, #le, #re"
                    ),
                    ReturnValue::None,
                )
            }
            Finish::Retry {
                error,
                retry_at_ms,
                refund,
            } => {
                values.push((":ra", n(retry_at_ms)));
                values.push((":e", s(error)));
                let refund = if *refund {
                    values.push((":one", n(1)));
                    ", #at = #at - :one"
                } else {
                    ""
                };
                (
                    format!(
                        "SET #st = :to, #ra = :ra, #lu = :ra, #le = :e, #du = :d, {HISTORY}{refund} REMOVE #ow"
                    ),
                    ReturnValue::None,
                )
            }
            Finish::Failed { error } => {
                values.push((":now", n(record.ended_ms)));
                values.push((":e", s(error)));
                (
                    format!(
                        "SET #st = :to, #fa = :now, #le = :e, #du = :d, {HISTORY} REMOVE #ow, #lu"
                    ),
                    ReturnValue::AllNew,
                )
            }
        };
        let expr = if finish.state().is_terminal() {
            self.expiring(&expr, record.ended_ms, &mut values)
        } else {
            expr
        };
        let item = self.owned_write(lease, &expr, values, returning).await?;
        history_from(&item)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LedgerError> {
        transition(JobState::Running, JobState::Retrying)?;
        self.owned_write(
            lease,
            "SET #st = :to, #at = #at - :one REMOVE #ow, #ra, #ta",
            vec![(":to", s(JobState::Retrying.as_str())), (":one", n(1))],
            ReturnValue::None,
        )
        .await
        .map(|_| ())
    }

    async fn record_task(&self, lease: &Lease, task: &str) -> Result<(), LedgerError> {
        self.owned_write(
            lease,
            "SET #ta = :task",
            vec![(":task", s(task))],
            ReturnValue::None,
        )
        .await
        .map(|_| ())
    }

    async fn expired_leases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Expired>, LedgerError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LEASE_INDEX)
            .key_condition_expression("#ls = :shard AND #lu < :before")
            .expression_attribute_names("#ls", attr::LEASE_SHARD)
            .expression_attribute_names("#lu", attr::LEASE_UNTIL)
            .expression_attribute_values(":shard", s(shard.to_string()))
            .expression_attribute_values(":before", n(before_ms))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| aws_err("Query", e))?;
        out.items()
            .iter()
            .map(|item| {
                Ok(Expired {
                    job: JobId::parse(get_s(item, attr::JOB_ID)?)
                        .map_err(|e| malformed(item, e.to_string()))?,
                    fence: get_n(item, attr::FENCE)?,
                    owner: opt_s(item, attr::OWNER).map(str::to_owned),
                    lease_until_ms: get_n(item, attr::LEASE_UNTIL)?,
                    task: opt_s(item, attr::TASK).map(str::to_owned),
                    state: get_state(item)?,
                })
            })
            .collect()
    }

    async fn adopt(
        &self,
        expired: &Expired,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        skew_ms: u64,
    ) -> Result<Option<Adopted>, LedgerError> {
        let until = now_ms + lease_ms;
        let values = vec![
            (":owner", s(owner)),
            (":until", n(until)),
            (":one", n(1)),
            (":now", n(now_ms)),
            (":running", s(JobState::Running.as_str())),
            (":expired", n(now_ms.saturating_sub(skew_ms))),
            (":fence", n(expired.fence)),
        ];
        let Some(item) = self
            .conditional(
                &expired.job,
                "SET #ow = :owner, #lu = :until, #fe = #fe + :one, #sa = :now",
                "#st = :running AND #lu < :expired AND #fe = :fence AND attribute_exists(#ta)",
                values,
                ReturnValue::AllNew,
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Adopted {
            lease: Lease {
                job: expired.job.clone(),
                owner: owner.to_owned(),
                fence: get_n(&item, attr::FENCE)?,
                attempt: get_n(&item, attr::ATTEMPTS)?,
                max_attempts: opt_n(&item, attr::MAX_ATTEMPTS)?,
                started_ms: now_ms,
                until_ms: until,
                target: target_from(&item)?,
                previous: history_from(&item)?.pop(),
            },
            job_type: get_s(&item, attr::JOB_TYPE)?.to_owned(),
            payload_json: get_s(&item, attr::PAYLOAD)?.to_owned(),
            task: get_s(&item, attr::TASK)?.to_owned(),
            enqueued_at_ms: opt_n(&item, attr::ENQUEUED_AT)?.unwrap_or(0),
        }))
    }

    async fn requeue(
        &self,
        expired: &Expired,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> Result<Option<Requeue>, LedgerError> {
        let (state_cond, mut values) = match expired.state {
            JobState::Running => (
                "#st = :running AND #fe = :fence AND attribute_not_exists(#ta)",
                vec![
                    (":running", s(JobState::Running.as_str())),
                    (":fence", n(expired.fence)),
                ],
            ),
            JobState::Pending | JobState::Retrying => (
                "#st IN (:pending, :retrying)",
                vec![
                    (":pending", s(JobState::Pending.as_str())),
                    (":retrying", s(JobState::Retrying.as_str())),
                ],
            ),
            _ => return Ok(None),
        };
        let cond =
            format!("{state_cond} AND #lu < :due AND (attribute_not_exists(#rq) OR #rq < :again)");
        values.extend([
            (":due", n(due_before_ms)),
            (":again", n(now_ms.saturating_sub(again_after_ms))),
            (":now", n(now_ms)),
        ]);
        let Some(item) = self
            .conditional(
                &expired.job,
                "SET #rq = :now",
                &cond,
                values,
                ReturnValue::AllNew,
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Requeue {
            job: expired.job.clone(),
            state: get_state(&item)?,
            job_type: get_s(&item, attr::JOB_TYPE)?.to_owned(),
            payload_json: get_s(&item, attr::PAYLOAD)?.to_owned(),
            attempts: get_n(&item, attr::ATTEMPTS)?,
            max_attempts: opt_n(&item, attr::MAX_ATTEMPTS)?,
            target: target_from(&item)?,
        }))
    }

    async fn durations(&self, job_type: &str) -> Result<Vec<u64>, LedgerError> {
        Ok(self.durations_item(job_type).await?.1)
    }

    async fn add_durations(
        &self,
        job_type: &str,
        samples: &[u64],
        window: usize,
    ) -> Result<(), LedgerError> {
        if samples.is_empty() {
            return Ok(());
        }
        // Optimistic: read, merge, write if nobody wrote in between; a few tries.
        for _ in 0..5 {
            let (version, mut all) = self.durations_item(job_type).await?;
            all.extend_from_slice(samples);
            let keep = all.len().saturating_sub(window);
            let list = all[keep..].iter().map(n).collect();
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(attr::PK, s(job_type_pk(job_type)))
                .item(attr::SK, s(DURATIONS_SK))
                .item(attr::KIND, s("job_type"))
                .item(attr::JOB_TYPE, s(job_type))
                .item(attr::DURATIONS, AttributeValue::L(list))
                .item(attr::VERSION, n(version + 1))
                .condition_expression("attribute_not_exists(#pk) OR #v = :v")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":v", n(version))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(()),
                Err(e) if condition_failed(&e) => continue,
                Err(e) => return Err(aws_err("PutItem", e)),
            }
        }
        Err(LedgerError::Aws {
            op: "PutItem",
            message: format!("durations of {job_type} kept changing under concurrent writers"),
        })
    }
}

/// Why a claim was refused, from the item as it stood.
fn claim_refusal(item: &Item, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
    let state = get_state(item)?;
    Ok(match state {
        st if st.is_terminal() => Claim::Finished {
            state: st,
            last_error: opt_s(item, attr::LAST_ERROR).map(str::to_owned),
            history: history_from(item)?,
        },
        JobState::Running => Claim::NotYet {
            state,
            until_ms: opt_n::<u64>(item, attr::LEASE_UNTIL)?.unwrap_or(req.now_ms) + req.skew_ms,
        },
        _ => Claim::NotYet {
            state,
            until_ms: opt_n::<u64>(item, attr::RETRY_AT)?.unwrap_or(req.now_ms),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_matched_whole() {
        let expr = "SET #st = :to, #at = #at - :one REMOVE #ow";
        let used: Vec<&str> = ALIASES
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| alias_used(expr, a))
            .collect();
        assert_eq!(used, vec!["#st", "#at", "#ow"]);
        assert!(!alias_used("SET #rid = :r", "#ri"));
    }

    #[test]
    fn fresh_sources_are_pending_and_retrying() {
        let (expr, values) = fresh_claim_sources();
        assert_eq!(expr, "#st IN (:src0, :src1)");
        let states: Vec<&str> = values
            .iter()
            .map(|(_, v)| v.as_s().unwrap().as_str())
            .collect();
        assert_eq!(states, vec!["PENDING", "RETRYING"]);
    }

    #[test]
    fn sort_keys_sort_by_index() {
        assert!(job_sk(9) < job_sk(10));
        assert_eq!(job_sk(42), "J#000000042");
    }
}
