//! What the producer does on DynamoDB: request items, job items in batches, counts from the
//! counter items (a bounded number of reads whatever the request's size), listings a page
//! at a time, the recount, and redrives.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{KeysAndAttributes, PutRequest, WriteRequest};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};

use aws_sdk_dynamodb::types::ReturnValue;

use super::{DynamoLedger, Update, aws_err, build_err, condition_failed, key_map, key_of};
use crate::error::ErrorClass;
use crate::ids::JobId;
use crate::ledger::item::{
    self, CounterItem, JobItem, PayloadAt, ResultAt, attr, decode_job, encode_job, req_attr,
};
use crate::ledger::page;
use crate::ledger::{
    COUNTER_SLOTS, Change, Counts, History, ItemKey, JobDetail, LedgerError, NewJob, Page,
    PutRequestOutcome, ReleaseRecord, RequestLedger, RequestRecord, Requeue,
};
use crate::state::JobState;

/// Marks in flight at once when a sweeper finds a release's jobs unsent (spread over the
/// request's partitions).
pub const MARKS_AT_ONCE: usize = 64;

/// A job as the failed index holds it (its item's attempts, error and last attempt).
fn failed_detail(it: &item::Item) -> Result<JobDetail, LedgerError> {
    let key = key_of(it);
    let r = item::Reader::new(it, &key);
    let job = item::job_of(&key)?;
    Ok(JobDetail {
        job_id: job.to_string(),
        index: job.index(),
        state: JobState::Failed,
        attempts: r.opt_n(attr::ATTEMPTS)?.unwrap_or(0),
        task: None,
        last_error: r.opt_s(attr::LAST_ERROR).map(str::to_owned),
        error_class: r.opt_s(attr::ERROR_CLASS).and_then(|c| c.parse().ok()),
        last: match it.get(attr::LAST_ATTEMPT) {
            Some(v) => Some(item::record_from(v, &key)?.0),
            None => None,
        },
        finished_at_ms: None,
        result: ResultAt::None,
    })
}

impl DynamoLedger {
    /// BatchWriteItem of up to 25 puts, re-sending unprocessed ones with backoff.
    async fn batch_put(&self, mut pending: Vec<WriteRequest>) -> Result<(), LedgerError> {
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
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    let err = aws_err("BatchWriteItem", e);
                    return Err(err);
                }
            };
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
                        class: ErrorClass::Throttled,
                        message: format!("{} items still unprocessed after retries", pending.len()),
                    });
                }
            }
        }
    }

    /// BatchGetItem of `keys` (at most 100), consistent, retrying unprocessed keys.
    /// Raises a number attribute of the request item to `value`, never lowering it (the
    /// submission's watermark, the release cursor); nothing when there is no request item.
    async fn raise_request_number(
        &self,
        request_id: &str,
        name: &str,
        value: u32,
    ) -> Result<(), LedgerError> {
        let mut u = Update::default();
        let (pk, v) = (u.name(attr::PK), u.name(name));
        let new = u.value(item::n(value));
        u.set(name, item::n(value)).condition(format!(
            "attribute_exists({pk}) AND (attribute_not_exists({v}) OR {v} < {new})"
        ));
        self.request_update(request_id, &u).await.map(|_| ())
    }

    /// A conditional update of the request item: whether its condition held.
    async fn request_update(&self, request_id: &str, u: &Update) -> Result<bool, LedgerError> {
        let key = item::request_key(request_id);
        Ok(self
            .conditional(&key, u, ReturnValue::None)
            .await?
            .is_some())
    }

    /// Releases one held job (see [`RequestLedger::mark_released`]).
    async fn mark_one(
        &self,
        job: &JobId,
        job_shards: u32,
        now_ms: u64,
    ) -> Result<Option<Requeue>, LedgerError> {
        let key = &item::job_key(job, job_shards);
        let Some(due) = item::due_for(job, JobState::Pending, now_ms, self.index_shards) else {
            return Ok(None);
        };
        let mut u = Update::default();
        let (st, wk) = (u.name(attr::STATE), u.name(attr::DUE_KEY));
        let pending = u.value(item::s(JobState::Pending.as_str()));
        u.set(attr::DUE_KEY, item::s(due.kind.partition(due.shard)))
            .set(attr::DUE_AT, item::n(due.at_ms))
            .condition(format!("{st} = {pending} AND attribute_not_exists({wk})"));
        let Some(found) = self.conditional(key, &u, ReturnValue::AllNew).await? else {
            return Ok(None);
        };
        let j = item::decode_job(&found)?;
        let payload_json = self.payload(&j).await?;
        Ok(Some(Requeue::of(&j, payload_json)))
    }

    pub(super) async fn batch_get(
        &self,
        keys: &[ItemKey],
        projection: Option<&str>,
        names: &[(&str, &str)],
    ) -> Result<HashMap<ItemKey, item::Item>, LedgerError> {
        self.batch_get_read(keys, projection, names, true).await
    }

    /// [`Self::batch_get`], strongly consistent or not.
    async fn batch_get_read(
        &self,
        keys: &[ItemKey],
        projection: Option<&str>,
        names: &[(&str, &str)],
        consistent: bool,
    ) -> Result<HashMap<ItemKey, item::Item>, LedgerError> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let mut ka = KeysAndAttributes::builder()
            .set_keys(Some(keys.iter().map(key_map).collect()))
            .consistent_read(consistent);
        if let Some(p) = projection {
            ka = ka.projection_expression(p);
            for (alias, name) in names {
                ka = ka.expression_attribute_names(*alias, *name);
            }
        }
        let mut request = Some(HashMap::from([(
            self.table.clone(),
            ka.build().map_err(|e| build_err("BatchGetItem", e))?,
        )]));
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(12)
            .with_jitter()
            .build();
        while let Some(req) = request.take() {
            let got = self
                .client
                .batch_get_item()
                .set_request_items(Some(req))
                .send()
                .await
                .map_err(|e| aws_err("BatchGetItem", e))?;
            for it in got
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                out.insert(key_of(&it), it);
            }
            let left = got.unprocessed_keys.filter(|u| !u.is_empty());
            if let Some(left) = left {
                match delays.next() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        return Err(LedgerError::Aws {
                            op: "BatchGetItem",
                            class: ErrorClass::Throttled,
                            message: "keys still unprocessed after retries".into(),
                        });
                    }
                }
                request = Some(left);
            }
        }
        Ok(out)
    }

    /// A page of one partition (table or index), from after `after`.
    async fn query_page(
        &self,
        index: Option<&str>,
        (pk_name, pk): (&str, &str),
        (sk_name, after): (&str, Option<item::Item>),
        limit: usize,
        consistent: bool,
    ) -> Result<(Vec<item::Item>, bool), LedgerError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .expression_attribute_names("#p", pk_name)
            .expression_attribute_values(":p", item::s(pk))
            .limit(limit.clamp(1, 1000) as i32)
            .consistent_read(consistent);
        q = match after.and_then(|mut a| a.remove(sk_name)) {
            Some(v) => q
                .key_condition_expression("#p = :p AND #s > :after")
                .expression_attribute_names("#s", sk_name)
                .expression_attribute_values(":after", v),
            None => q.key_condition_expression("#p = :p"),
        };
        let out = q.send().await.map_err(|e| aws_err("Query", e))?;
        let more = out.last_evaluated_key.is_some();
        Ok((out.items.unwrap_or_default(), more))
    }
}

impl RequestLedger for DynamoLedger {
    async fn put_request(&self, r: &RequestRecord) -> Result<PutRequestOutcome, LedgerError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item::encode_request(r, self.expiry(r.created_at_ms))))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .send()
            .await;
        match put {
            Ok(_) => Ok(PutRequestOutcome::Created),
            Err(e) if condition_failed(&e) => match self.get_request(&r.request_id).await? {
                Some(existing) => Ok(PutRequestOutcome::Exists(Box::new(existing))),
                None => Err(LedgerError::Aws {
                    op: "PutItem",
                    class: ErrorClass::Transient,
                    message: format!(
                        "request {} was refused as existing but cannot be read",
                        r.request_id
                    ),
                }),
            },
            Err(e) => Err(aws_err("PutItem", e)),
        }
    }

    async fn get_request(&self, request_id: &str) -> Result<Option<RequestRecord>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(&item::request_key(request_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_err("GetItem", e))?;
        out.item.as_ref().map(item::decode_request).transpose()
    }

    async fn put_jobs(&self, jobs: &[NewJob]) -> Result<(), LedgerError> {
        let mut puts: Vec<WriteRequest> = Vec::new();
        for nj in jobs {
            let (j, payload) = nj.pending_item(self.index_shards);
            let put = |it: item::Item| {
                PutRequest::builder()
                    .set_item(Some(it))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|e| build_err("BatchWriteItem", e))
            };
            if payload == PayloadAt::Apart {
                puts.push(put(item::payload_item(
                    &nj.key,
                    &nj.payload_json,
                    self.expiry(nj.created_at_ms),
                ))?);
            }
            puts.push(put(encode_job(&j))?);
        }
        // Futures built before the stream, not in a stream closure over borrowed chunks: the
        // caller's future stays provably `Send` (rust-lang/rust#102211).
        let chunks: Vec<Vec<WriteRequest>> = puts.chunks(25).map(<[_]>::to_vec).collect();
        let writes: Vec<_> = chunks.into_iter().map(|c| self.batch_put(c)).collect();
        futures::stream::iter(writes)
            .buffer_unordered(4)
            .try_collect::<()>()
            .await
    }

    async fn job_states(&self, keys: &[ItemKey]) -> Result<Vec<Option<JobState>>, LedgerError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            found.extend(
                self.batch_get(
                    chunk,
                    Some("#pk, #sk, #st"),
                    &[("#pk", attr::PK), ("#sk", attr::SK), ("#st", attr::STATE)],
                )
                .await?,
            );
        }
        keys.iter()
            .map(|k| {
                found
                    .get(k)
                    .map(|it| item::Reader::new(it, k).state())
                    .transpose()
            })
            .collect()
    }

    async fn set_written(&self, request_id: &str, written: u32) -> Result<(), LedgerError> {
        self.raise_request_number(request_id, req_attr::WRITTEN, written)
            .await
    }

    async fn set_window(&self, request_id: &str, window: u32) -> Result<bool, LedgerError> {
        let mut u = Update::default();
        let win = u.name(req_attr::WINDOW);
        u.set(req_attr::WINDOW, item::n(window))
            .set(
                req_attr::CAPPED,
                aws_sdk_dynamodb::types::AttributeValue::Bool(true),
            )
            .condition(format!("attribute_exists({win})"));
        self.request_update(request_id, &u).await
    }

    async fn mark_released(
        &self,
        jobs: &[JobId],
        job_shards: u32,
        now_ms: u64,
    ) -> Result<Vec<Requeue>, LedgerError> {
        let marks: Vec<_> = jobs
            .iter()
            .map(|j| self.mark_one(j, job_shards, now_ms))
            .collect();
        let marked: Vec<Option<Requeue>> = futures::stream::iter(marks)
            .buffered(MARKS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(marked.into_iter().flatten().collect())
    }

    async fn put_release(&self, release: &ReleaseRecord) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item::encode_release(
                release,
                self.index_shards,
                self.expiry(release.at_ms),
            )))
            .send()
            .await
            .map_err(|e| aws_err("PutItem", e))?;
        Ok(())
    }

    async fn advance_release(
        &self,
        request_id: &str,
        range: std::ops::Range<u32>,
        releaser: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, LedgerError> {
        let mut u = Update::default();
        let (pk, rel, who, until) = (
            u.name(attr::PK),
            u.name(req_attr::RELEASED),
            u.name(req_attr::RELEASER),
            u.name(req_attr::RELEASER_UNTIL),
        );
        let (from, me, now) = (
            u.value(item::n(range.start)),
            u.value(item::s(releaser)),
            u.value(item::n(now_ms)),
        );
        u.set(req_attr::RELEASED, item::n(range.end))
            .set(req_attr::RELEASER, item::s(releaser))
            .set(req_attr::RELEASER_UNTIL, item::n(until_ms))
            .condition(format!(
                "attribute_exists({pk}) AND {rel} = {from} AND (attribute_not_exists({who}) OR {who} = {me} OR {until} < {now})"
            ));
        self.request_update(request_id, &u).await
    }

    async fn released_jobs(
        &self,
        jobs: &[JobId],
        job_shards: u32,
        consistent: bool,
    ) -> Result<Vec<Requeue>, LedgerError> {
        let keys: Vec<ItemKey> = jobs.iter().map(|j| item::job_key(j, job_shards)).collect();
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            found.extend(self.batch_get_read(chunk, None, &[], consistent).await?);
        }
        let mut unsent = Vec::new();
        for k in &keys {
            let Some(it) = found.get(k) else { continue };
            let j = decode_job(it)?;
            if j.state == JobState::Pending && j.due.is_none() {
                unsent.push(j);
            }
        }
        let apart: Vec<ItemKey> = unsent
            .iter()
            .filter(|j| j.payload == PayloadAt::Apart)
            .map(|j| item::satellite(&j.key, item::PAYLOAD_SUFFIX))
            .collect();
        let mut payloads = HashMap::new();
        for chunk in apart.chunks(100) {
            payloads.extend(self.batch_get_read(chunk, None, &[], consistent).await?);
        }
        unsent
            .iter()
            .map(|j| {
                let payload = match &j.payload {
                    PayloadAt::Inline(p) => p.clone(),
                    PayloadAt::Apart => {
                        let key = item::satellite(&j.key, item::PAYLOAD_SUFFIX);
                        let p = payloads.get(&key).ok_or_else(|| LedgerError::Malformed {
                            key: key.to_string(),
                            message: "the job's payload item is missing".into(),
                        })?;
                        item::Reader::new(p, &key).s(attr::PAYLOAD)?.to_owned()
                    }
                };
                Ok(Requeue::of(j, payload))
            })
            .collect()
    }

    async fn finish_request(
        &self,
        request_id: &str,
        notifier: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<RequestRecord>, LedgerError> {
        let mut u = Update::default();
        let (pk, sent, who, until, fin) = (
            u.name(attr::PK),
            u.name(req_attr::NOTIFIED_AT),
            u.name(req_attr::NOTIFIER),
            u.name(req_attr::NOTIFIER_UNTIL),
            u.name(req_attr::FINISHED_AT),
        );
        let (me, now) = (u.value(item::s(notifier)), u.value(item::n(now_ms)));
        u.set_expr(req_attr::FINISHED_AT, format!("if_not_exists({fin}, {now})"))
            .set(req_attr::NOTIFIER, item::s(notifier))
            .set(req_attr::NOTIFIER_UNTIL, item::n(until_ms))
            .set(attr::DUE_KEY, item::s(item::FINISH_DUE_PARTITION))
            .set(attr::DUE_AT, item::n(until_ms))
            .condition(format!(
                "attribute_exists({pk}) AND attribute_not_exists({sent}) AND (attribute_not_exists({who}) OR {who} = {me} OR {until} < {now})"
            ));
        let key = item::request_key(request_id);
        match self.conditional(&key, &u, ReturnValue::AllNew).await? {
            Some(found) => Ok(Some(item::decode_request(&found)?)),
            None => Ok(None),
        }
    }

    async fn request_notified(
        &self,
        request_id: &str,
        now_ms: u64,
        manifest: Option<&str>,
    ) -> Result<(), LedgerError> {
        let mut u = Update::default();
        let pk = u.name(attr::PK);
        u.set(req_attr::NOTIFIED_AT, item::n(now_ms));
        if let Some(m) = manifest {
            u.set(req_attr::MANIFEST, item::s(m));
        }
        u.remove(&[attr::DUE_KEY, attr::DUE_AT])
            .condition(format!("attribute_exists({pk})"));
        self.request_update(request_id, &u).await.map(|_| ())
    }

    async fn requests_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, LedgerError> {
        let limit = limit.clamp(1, 1000);
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(item::REQUESTS_INDEX)
            .expression_attribute_names("#p", attr::LIST_KEY)
            .expression_attribute_values(":p", item::s(item::REQUESTS_PARTITION))
            .scan_index_forward(false)
            .limit(limit as i32);
        q = match cursor {
            Some(c) => q
                .key_condition_expression("#p = :p AND #s < :before")
                .expression_attribute_names("#s", attr::LIST_AT)
                .expression_attribute_values(":before", item::s(c)),
            None => q.key_condition_expression("#p = :p"),
        };
        let out = q.send().await.map_err(|e| aws_err("Query", e))?;
        let mut last = None;
        let mut items = Vec::new();
        for it in out.items() {
            let key = key_of(it);
            let at = item::Reader::new(it, &key).s(attr::LIST_AT)?.to_owned();
            if let Some(id) = item::request_of_key(&key.pk) {
                items.push(id.to_owned());
            }
            last = Some(at);
        }
        let next = out.last_evaluated_key.is_some().then_some(last).flatten();
        Ok(Page { items, next })
    }

    async fn throughput(
        &self,
        request_id: &str,
        since_ms: u64,
    ) -> Result<Vec<crate::ledger::ThroughputPoint>, LedgerError> {
        let part = item::throughput_partition(request_id);
        let from = item::throughput_key(request_id, crate::ledger::series::bucket_of(since_ms));
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :p AND #sk >= :from")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#sk", attr::SK)
            .expression_attribute_values(":p", item::s(&part))
            .expression_attribute_values(":from", item::s(&from.sk))
            .into_paginator()
            .send();
        let mut points = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_err("Query", e))?;
            for it in page.items() {
                let key = key_of(it);
                let r = item::Reader::new(it, &key);
                let at_ms = key.sk.parse().map_err(|_| LedgerError::Malformed {
                    key: key.to_string(),
                    message: "a throughput item's sort key is not a time".into(),
                })?;
                points.push(crate::ledger::ThroughputPoint {
                    at_ms,
                    succeeded: r.opt_n(attr::SERIES_SUCCEEDED)?.unwrap_or(0),
                    failed: r.opt_n(attr::SERIES_FAILED)?.unwrap_or(0),
                });
            }
        }
        Ok(crate::ledger::series::merge(points))
    }

    async fn due_finish_checks(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        Ok(self
            .due_items(item::FINISH_DUE_PARTITION, before_ms, limit)
            .await?
            .iter()
            .filter_map(|it| {
                let pk = it.get(attr::PK)?.as_s().ok()?;
                item::request_of_key(pk).map(str::to_owned)
            })
            .collect())
    }

    async fn defer_finish_check(&self, request_id: &str, at_ms: u64) -> Result<(), LedgerError> {
        let mut u = Update::default();
        let (pk, sent) = (u.name(attr::PK), u.name(req_attr::NOTIFIED_AT));
        u.set(attr::DUE_KEY, item::s(item::FINISH_DUE_PARTITION))
            .set(attr::DUE_AT, item::n(at_ms))
            .condition(format!(
                "attribute_exists({pk}) AND attribute_not_exists({sent})"
            ));
        self.request_update(request_id, &u).await.map(|_| ())
    }

    async fn due_releases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>, LedgerError> {
        self.due_items(&item::release_partition(shard), before_ms, limit)
            .await?
            .iter()
            .map(item::decode_release)
            .collect()
    }

    async fn delete_release(&self, release: &ReleaseRecord) -> Result<(), LedgerError> {
        let key = item::release_key(&release.request_id, release.range.start);
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_map(&key)))
            .send()
            .await
            .map_err(|e| aws_err("DeleteItem", e))?;
        Ok(())
    }

    async fn cancel_request(
        &self,
        request_id: &str,
        now_ms: u64,
        stop_running: bool,
    ) -> Result<bool, LedgerError> {
        let expr = if stop_running {
            "SET #ca = if_not_exists(#ca, :now), #sr = :t"
        } else {
            "SET #ca = if_not_exists(#ca, :now)"
        };
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_map(&item::request_key(request_id))))
            .update_expression(expr)
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#ca", req_attr::CANCELLED_AT)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":now", item::n(now_ms));
        if stop_running {
            u = u
                .expression_attribute_names("#sr", req_attr::STOP_RUNNING)
                .expression_attribute_values(
                    ":t",
                    aws_sdk_dynamodb::types::AttributeValue::Bool(true),
                );
        }
        match u.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    async fn fail_request(
        &self,
        request_id: &str,
        now_ms: u64,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        let u = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_map(&item::request_key(request_id))))
            .update_expression("SET #fa = :now, #fr = :why, #ca = if_not_exists(#ca, :now)")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#fa)")
            .expression_attribute_names("#fa", req_attr::FAILED_AT)
            .expression_attribute_names("#fr", req_attr::FAILED_REASON)
            .expression_attribute_names("#ca", req_attr::CANCELLED_AT)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":now", item::n(now_ms))
            .expression_attribute_values(":why", item::s(reason));
        match u.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    async fn counts(&self, request_id: &str, now_ms: u64) -> Result<Counts, LedgerError> {
        let keys: Vec<ItemKey> = (0..COUNTER_SLOTS)
            .map(|s| s.to_string())
            .chain([crate::ledger::PRODUCER_SLOT.to_owned()])
            .map(|slot| item::counter_key(request_id, &slot))
            .collect();
        let found = self.batch_get(&keys, None, &[]).await?;
        let mut total = Counts::default();
        for (k, it) in &found {
            CounterItem::decode(it, k)?.add_to(&mut total, now_ms);
        }
        Ok(total)
    }

    async fn recount(&self, request_id: &str, job_shards: u32) -> Result<Counts, LedgerError> {
        let mut counted = Counts::default();
        for shard in 0..job_shards.max(1) {
            let part = item::job_partition(request_id, shard);
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :p")
                .projection_expression("#st, #rd, #at")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#st", attr::STATE)
                .expression_attribute_names("#rd", attr::RETRY_DEBT)
                .expression_attribute_names("#at", attr::ATTEMPTS)
                .expression_attribute_values(":p", item::s(&part))
                .consistent_read(true)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| aws_err("Query", e))?;
                for it in page.items() {
                    let key = ItemKey::new(part.clone(), "");
                    let r = item::Reader::new(it, &key);
                    match r.state()? {
                        JobState::Succeeded => counted.succeeded += 1,
                        JobState::Failed => counted.failed += 1,
                        JobState::Cancelled => counted.cancelled += 1,
                        _ => {}
                    }
                    counted.retrying += i64::from(r.bool(attr::RETRY_DEBT));
                    counted.attempts += r.opt_n::<i64>(attr::ATTEMPTS)?.unwrap_or(0);
                }
            }
        }
        let current = self.counts(request_id, 0).await?;
        // Attempts are not recounted: an item's count includes attempts cut short.
        counted.attempts = current.attempts;
        let fix = current.delta_to(&counted);
        if !fix.is_zero() {
            self.add_to_counter(request_id, crate::ledger::PRODUCER_SLOT, &fix)
                .await?;
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
        page::walk(job_shards, cursor, limit, |shard, after, want| async move {
            let part = item::job_partition(request_id, shard);
            let after = after.map(|sk| HashMap::from([(attr::SK.to_owned(), item::s(sk))]));
            let (page, more) = self
                .query_page(None, (attr::PK, &part), (attr::SK, after), want, false)
                .await?;
            let jobs = page.iter().map(decode_job).collect::<Result<Vec<_>, _>>()?;
            Ok(page::ShardRead {
                last: jobs.last().map(|j| j.key.sk.clone()),
                items: jobs.iter().map(JobDetail::from).collect(),
                more,
            })
        })
        .await
    }

    async fn failed_page(
        &self,
        request_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<JobDetail>, LedgerError> {
        page::walk(
            item::FAILED_SHARDS,
            cursor,
            limit,
            |shard, after, want| async move {
                let part = format!("{request_id}#{shard}");
                let after = after
                    .map(|ix| HashMap::from([(attr::FAILED_INDEX_SK.to_owned(), item::n(ix))]));
                let (page, more) = self
                    .query_page(
                        Some(item::FAILED_INDEX),
                        (attr::FAILED_KEY, &part),
                        (attr::FAILED_INDEX_SK, after),
                        want,
                        false,
                    )
                    .await?;
                let items = page
                    .iter()
                    .map(failed_detail)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(page::ShardRead {
                    last: items.last().map(|d| d.index.to_string()),
                    items,
                    more,
                })
            },
        )
        .await
    }

    async fn job(&self, key: &ItemKey) -> Result<Option<(JobItem, String)>, LedgerError> {
        let Some(j) = self.job_item(key).await? else {
            return Ok(None);
        };
        let payload = self.payload(&j).await?;
        Ok(Some((j, payload)))
    }

    async fn result(&self, key: &ItemKey) -> Result<Option<String>, LedgerError> {
        let Some(j) = self.job_item(key).await? else {
            return Ok(None);
        };
        match j.result {
            ResultAt::None => Ok(None),
            ResultAt::Inline(r) => Ok(Some(r)),
            ResultAt::Item(fence) => {
                let rkey = item::satellite(key, item::RESULT_SUFFIX);
                let got = self
                    .batch_get(std::slice::from_ref(&rkey), None, &[])
                    .await?;
                let Some(it) = got.get(&rkey) else {
                    return Ok(None);
                };
                let r = item::Reader::new(it, &rkey);
                if r.n::<u64>(attr::FENCE)? != fence {
                    return Ok(None);
                }
                Ok(Some(r.s(attr::RESULT)?.to_owned()))
            }
        }
    }

    async fn job_history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        self.read_history(key).await
    }

    async fn commit_changes(
        &self,
        slot: &str,
        changes: &[Change],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        self.commit_changes_with_live(slot, changes, &[]).await
    }
}
