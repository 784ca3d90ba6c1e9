//! What a worker replica does to a job on DynamoDB: claim it, renew its lease, record its
//! task, find due jobs, adopt a handed-off task, claim a re-send, read a history. The state
//! changes that move counts are in [`super::commit`].

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{DynamoLedger, Update, aws_err, condition_failed, key_map, key_of};
use crate::ledger::item::{self, DueKind, JobItem, PayloadAt, attr, decode_job, encode_job};
use crate::ledger::{
    Adopted, Change, Claim, ClaimRequest, DueEntry, History, ItemKey, Lease, Ledger, LedgerError,
    LiveReport, RequestView, Requeue,
};
use crate::state::JobState;

/// Job shards of a request without a request item (its jobs were sent straight to SQS).
pub use crate::ledger::memory::DIRECT_JOB_SHARDS;

impl DynamoLedger {
    /// A conditional update returning the item it left (`None`: the condition failed).
    pub(super) async fn conditional(
        &self,
        key: &ItemKey,
        u: &Update,
        returning: ReturnValue,
    ) -> Result<Option<item::Item>, LedgerError> {
        match u
            .update_item(self, key)
            .return_values(returning)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    /// A write that needs the lease.
    async fn owned_write(&self, lease: &Lease, mut u: Update) -> Result<(), LedgerError> {
        u.owned(lease);
        match self.conditional(&lease.key, &u, ReturnValue::None).await? {
            Some(_) => Ok(()),
            None => Err(LedgerError::Stale {
                job: lease.job.to_string(),
                fence: lease.fence,
            }),
        }
    }

    /// Creates a job's item claimed (a job sent straight to SQS, seen for the first time);
    /// when another replica created it first, why it cannot be claimed now.
    async fn create_claimed(&self, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
        match self.put_claimed(req).await? {
            Ok(claim) => Ok(claim),
            Err(Some(j)) => Ok(Claim::refused(&j, req)),
            Err(None) => Ok(Claim::NotYet {
                state: JobState::Pending,
                until_ms: req.now_ms,
            }),
        }
    }

    /// Puts a job's item claimed unless it exists: `Err` with the item found, if any.
    async fn put_claimed(
        &self,
        req: &ClaimRequest<'_>,
    ) -> Result<Result<Claim, Option<JobItem>>, LedgerError> {
        let key = item::job_key(req.job, req.shards);
        let payload = item::payload_placement(&key, req.job_type, req.payload_json);
        let fresh = JobItem::pending(
            req.job.clone(),
            key.clone(),
            req.job_type,
            payload.clone(),
            req.now_ms,
            self.index_shards,
        );
        let new = item::claimed(&fresh, req, self.index_shards);
        if payload == PayloadAt::Apart {
            // The payload first: a created item never points at a missing payload.
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item::payload_item(
                    &key,
                    req.payload_json,
                    self.expiry(req.now_ms),
                )))
                .send()
                .await
                .map_err(|e| aws_err("PutItem", e))?;
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode_job(&new)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Ok(Claim::Claimed(item::lease_of(None, &new, req)))),
            Err(e) if condition_failed(&e) => {
                let found = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                Ok(Err(found.as_ref().map(decode_job).transpose()?))
            }
            Err(e) => Err(aws_err("PutItem", e)),
        }
    }
}

fn state_value(s: JobState) -> AttributeValue {
    item::s(s.as_str())
}

impl Ledger for DynamoLedger {
    fn index_shards(&self) -> u32 {
        self.index_shards
    }

    async fn request_view(&self, request_id: &str) -> Result<RequestView, LedgerError> {
        let key = item::request_key(request_id);
        let Some(found) = self.get(&key).await? else {
            return Ok(RequestView::direct(DIRECT_JOB_SHARDS));
        };
        Ok(RequestView::of(&item::decode_request(&found)?))
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, LedgerError> {
        if req.direct {
            // Most messages sent straight to SQS are seen once: create the item first.
            match self.put_claimed(req).await? {
                Ok(claim) => return Ok(claim),
                Err(Some(j)) if !matches!(Claim::refused(&j, req), Claim::NotYet { .. }) => {
                    return Ok(Claim::refused(&j, req));
                }
                // It exists and may be claimable (a retry, an expired lease): claim it.
                Err(_) => {}
            }
        }
        let key = item::job_key(req.job, req.shards);
        let until = req.now_ms + req.lease_ms;
        let mut u = Update::default();
        let (st, ra, lu, fe, at, pk) = (
            u.name(attr::STATE),
            u.name(attr::RETRY_AT),
            u.name(attr::LEASE_UNTIL),
            u.name(attr::FENCE),
            u.name(attr::ATTEMPTS),
            u.name(attr::PK),
        );
        let zero = u.value(item::n(0));
        let one = u.value(item::n(1));
        let now = u.value(item::n(req.now_ms));
        let running = u.value(state_value(JobState::Running));
        let pending = u.value(state_value(JobState::Pending));
        let retrying = u.value(state_value(JobState::Retrying));
        let expired = u.value(item::n(req.now_ms.saturating_sub(req.skew_ms)));
        let ea = u.name(attr::ENQUEUED_AT);
        let ea_v = u.value(item::n(req.enqueued_at_ms));
        u.set_expr(attr::STATE, running.clone())
            .set(attr::OWNER, item::s(req.owner))
            .set(attr::LEASE_UNTIL, item::n(until))
            .set_expr(attr::FENCE, format!("if_not_exists({fe}, {zero}) + {one}"))
            .set_expr(
                attr::ATTEMPTS,
                format!("if_not_exists({at}, {zero}) + {one}"),
            )
            .set_expr(attr::STARTED_AT, now.clone())
            .set(
                attr::DUE_KEY,
                item::s(
                    DueKind::Lease.partition(item::job_hash(req.job) % self.index_shards.max(1)),
                ),
            )
            .set(attr::DUE_AT, item::n(until))
            .set_expr(attr::ENQUEUED_AT, format!("if_not_exists({ea}, {ea_v})"))
            .remove(&[attr::RETRY_AT, attr::TASK]);
        if let Some(m) = req.max_attempts {
            let ma = u.name(attr::MAX_ATTEMPTS);
            let v = u.value(item::n(m));
            u.set_expr(attr::MAX_ATTEMPTS, format!("if_not_exists({ma}, {v})"));
        }
        u.condition(format!(
            "attribute_exists({pk}) AND (({st} IN ({pending}, {retrying}) AND (attribute_not_exists({ra}) OR {ra} <= {now})) OR ({st} = {running} AND {lu} < {expired}))"
        ));
        let out = u
            .update_item(self, &key)
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => {
                let old = decode_job(&out.attributes.unwrap_or_default())?;
                let new = item::claimed(&old, req, self.index_shards);
                Ok(Claim::Claimed(item::lease_of(Some(&old), &new, req)))
            }
            Err(e) if condition_failed(&e) => {
                let old = match e.into_service_error() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                // DynamoDB returns the item that failed the condition; none came back,
                // so there is no item: a job sent straight to SQS, seen for the first time.
                match old {
                    Some(item) => Ok(Claim::refused(&decode_job(&item)?, req)),
                    None => self.create_claimed(req).await,
                }
            }
            Err(e) => Err(aws_err("UpdateItem", e)),
        }
    }

    async fn heartbeat(&self, lease: &Lease, until_ms: u64) -> Result<(), LedgerError> {
        let mut u = Update::default();
        u.set(attr::LEASE_UNTIL, item::n(until_ms))
            .set(attr::DUE_AT, item::n(until_ms));
        self.owned_write(lease, u).await
    }

    async fn record_task(&self, lease: &Lease, task: &str) -> Result<(), LedgerError> {
        let mut u = Update::default();
        u.set(attr::TASK, item::s(task));
        self.owned_write(lease, u).await
    }

    async fn take_tokens(
        &self,
        bucket: &crate::ledger::Bucket,
        want: u32,
        now_ms: u64,
    ) -> Result<crate::ledger::Taken, LedgerError> {
        self.bucket_take(bucket, want, now_ms).await
    }

    async fn take_slots(
        &self,
        pace: &crate::ledger::Pace,
        want: u32,
        now_ms: u64,
    ) -> Result<crate::ledger::Slots, LedgerError> {
        self.pace_take(pace, want, now_ms).await
    }

    async fn allot(
        &self,
        cap: &crate::ledger::Cap,
        replica: &str,
        want: u32,
        now_ms: u64,
    ) -> Result<u32, LedgerError> {
        self.cap_allot(cap, replica, want, now_ms).await
    }

    async fn running_at(&self, attempts: &[(ItemKey, u64)]) -> Result<Vec<bool>, LedgerError> {
        let mut found = std::collections::HashMap::new();
        // One item may be asked for at two fences (a job handed off again after a retry);
        // BatchGetItem refuses a list with a key twice.
        let mut unique: Vec<ItemKey> = attempts.iter().map(|(k, _)| k.clone()).collect();
        unique.sort();
        unique.dedup();
        for keys in unique.chunks(100) {
            let keys = keys.to_vec();
            found.extend(
                self.batch_get(
                    &keys,
                    Some("#pk, #sk, #st, #fe"),
                    &[
                        ("#pk", attr::PK),
                        ("#sk", attr::SK),
                        ("#st", attr::STATE),
                        ("#fe", attr::FENCE),
                    ],
                )
                .await?,
            );
        }
        attempts
            .iter()
            .map(|(k, fence)| {
                let Some(it) = found.get(k) else {
                    return Ok(false);
                };
                let r = item::Reader::new(it, k);
                Ok(r.state()? == JobState::Running && r.opt_n(attr::FENCE)? == Some(*fence))
            })
            .collect()
    }

    async fn commit(
        &self,
        slot: &str,
        changes: &[Change],
        live: &[LiveReport],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        self.commit_changes_with_live(slot, changes, live).await
    }

    async fn due(
        &self,
        kind: DueKind,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueEntry>, LedgerError> {
        let found = self
            .due_items(&kind.partition(shard), before_ms, limit)
            .await?;
        found
            .iter()
            .map(|found| {
                let key = key_of(found);
                let r = item::Reader::new(found, &key);
                Ok(DueEntry {
                    job: item::job_of(&key)?,
                    kind,
                    fence: r.opt_n(attr::FENCE)?.unwrap_or(0),
                    owner: r.opt_s(attr::OWNER).map(str::to_owned),
                    at_ms: r.n(attr::DUE_AT)?,
                    task: r.opt_s(attr::TASK).map(str::to_owned),
                    state: r.state()?,
                    key,
                })
            })
            .collect()
    }

    async fn adopt(
        &self,
        e: &DueEntry,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        skew_ms: u64,
    ) -> Result<Option<Adopted>, LedgerError> {
        let until = now_ms + lease_ms;
        let mut u = Update::default();
        let (st, lu, fe, ta) = (
            u.name(attr::STATE),
            u.name(attr::LEASE_UNTIL),
            u.name(attr::FENCE),
            u.name(attr::TASK),
        );
        let one = u.value(item::n(1));
        let running = u.value(state_value(JobState::Running));
        let expired = u.value(item::n(now_ms.saturating_sub(skew_ms)));
        let fence = u.value(item::n(e.fence));
        u.set(attr::OWNER, item::s(owner))
            .set(attr::LEASE_UNTIL, item::n(until))
            .set(attr::DUE_AT, item::n(until))
            .set_expr(attr::FENCE, format!("{fe} + {one}"))
            .set(attr::STARTED_AT, item::n(now_ms))
            .condition(format!(
                "{st} = {running} AND {lu} < {expired} AND {fe} = {fence} AND attribute_exists({ta})"
            ));
        let Some(found) = self.conditional(&e.key, &u, ReturnValue::AllNew).await? else {
            return Ok(None);
        };
        let j = decode_job(&found)?;
        let payload_json = self.payload(&j).await?;
        let task = j.task.clone().ok_or_else(|| LedgerError::Malformed {
            key: e.key.to_string(),
            message: "adopted without a task".into(),
        })?;
        Ok(Some(Adopted {
            lease: Lease {
                job: e.job.clone(),
                key: e.key.clone(),
                owner: owner.to_owned(),
                fence: j.fence,
                attempt: j.attempts,
                max_attempts: j.max_attempts,
                started_ms: now_ms,
                until_ms: until,
                target: j.target,
                previous: j.last.clone(),
                after_retry: j.retry_debt,
                due_ms: None,
                item_bytes: item::item_size(&found),
            },
            job_type: j.job_type.clone(),
            payload_json,
            task,
            enqueued_at_ms: j.enqueued_at_ms.unwrap_or(0),
        }))
    }

    async fn requeue(
        &self,
        e: &DueEntry,
        now_ms: u64,
        due_before_ms: u64,
        again_after_ms: u64,
    ) -> Result<Option<Requeue>, LedgerError> {
        let mut u = Update::default();
        let (st, fe, ta, wt, rq) = (
            u.name(attr::STATE),
            u.name(attr::FENCE),
            u.name(attr::TASK),
            u.name(attr::DUE_AT),
            u.name(attr::REQUEUED_AT),
        );
        let state_cond = match e.state {
            JobState::Running => {
                let running = u.value(state_value(JobState::Running));
                let fence = u.value(item::n(e.fence));
                format!("{st} = {running} AND {fe} = {fence} AND attribute_not_exists({ta})")
            }
            JobState::Pending | JobState::Retrying => {
                let p = u.value(state_value(JobState::Pending));
                let r = u.value(state_value(JobState::Retrying));
                format!("{st} IN ({p}, {r})")
            }
            _ => return Ok(None),
        };
        let due = u.value(item::n(due_before_ms));
        let again = u.value(item::n(now_ms.saturating_sub(again_after_ms)));
        u.set(attr::REQUEUED_AT, item::n(now_ms)).condition(format!(
            "{state_cond} AND {wt} < {due} AND (attribute_not_exists({rq}) OR {rq} < {again})"
        ));
        let Some(found) = self.conditional(&e.key, &u, ReturnValue::AllNew).await? else {
            return Ok(None);
        };
        let j = decode_job(&found)?;
        let payload_json = self.payload(&j).await?;
        Ok(Some(Requeue {
            job: e.job.clone(),
            state: j.state,
            job_type: j.job_type,
            payload_json,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            target: j.target,
        }))
    }

    async fn history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        self.read_history(key).await
    }

    async fn durations(&self, job_type: &str) -> Result<Vec<u64>, LedgerError> {
        Ok(self.durations_item(job_type).await?.1)
    }

    async fn add_throughput(
        &self,
        request_id: &str,
        point: &crate::ledger::ThroughputPoint,
    ) -> Result<(), LedgerError> {
        let key = item::throughput_key(request_id, point.at_ms);
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_map(&key)))
            .update_expression("ADD #s :s, #f :f")
            .expression_attribute_names("#s", attr::SERIES_SUCCEEDED)
            .expression_attribute_names("#f", attr::SERIES_FAILED)
            .expression_attribute_values(":s", item::n(point.succeeded))
            .expression_attribute_values(":f", item::n(point.failed));
        if let Some(x) = self.expiry(point.at_ms) {
            u = u
                .update_expression("ADD #s :s, #f :f SET #xa = if_not_exists(#xa, :xa)")
                .expression_attribute_names("#xa", attr::EXPIRES_AT)
                .expression_attribute_values(":xa", item::n(x));
        }
        u.send().await.map_err(|e| aws_err("UpdateItem", e))?;
        Ok(())
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
        let key = item::job_type_key(job_type);
        // Optimistic: read, merge, write if nobody wrote in between; a few tries.
        for _ in 0..5 {
            let (version, mut all) = self.durations_item(job_type).await?;
            all.extend_from_slice(samples);
            let keep = all.len().saturating_sub(window);
            let list = all[keep..].iter().map(item::n).collect();
            let mut it = key_map(&key);
            it.insert("jt".into(), item::s(job_type));
            it.insert("d".into(), AttributeValue::L(list));
            it.insert("v".into(), item::n(version + 1));
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(it))
                .condition_expression("attribute_not_exists(#pk) OR #v = :v")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#v", "v")
                .expression_attribute_values(":v", item::n(version))
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
            class: crate::error::ErrorClass::Transient,
            message: format!("durations of {job_type} kept changing under concurrent writers"),
        })
    }
}
