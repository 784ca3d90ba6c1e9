//! State changes on DynamoDB: one TransactWriteItems per batch, holding each job's
//! conditional update, the history entry a failed attempt appends, and one update per
//! counter item the batch moves. A result too large for the lean item is written to the
//! job's result item first, by itself (conditional on the fence, so a stale attempt cannot
//! overwrite a newer one's), and the transaction points the lean item at it.
//!
//! A transaction is all or nothing: when some changes' conditions fail (their leases are
//! gone), the rest are committed again without them, and the failed ones are answered
//! `Stale`. A change DynamoDB refuses as invalid is found by committing the batch's changes
//! one at a time, and answered with that permanent error.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

use super::{DynamoLedger, Update, aws_err, condition_failed};
use crate::error::ErrorClass;
use crate::ledger::item::{self, DueKind, attr, counter_attr, record_value};
use crate::ledger::{Change, Delta, Finish, LedgerError, LiveReport};
use crate::state::JobState;

/// What one transaction item does for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The job update of change `i`.
    Job(usize),
    /// The history entry of change `i`.
    History(usize),
    Counter,
}

fn state_value(s: JobState) -> AttributeValue {
    item::s(s.as_str())
}

impl DynamoLedger {
    /// The job update a change makes.
    fn job_update(&self, c: &Change) -> Update {
        let mut u = Update::default();
        let shard = item::job_hash(c.job()) % self.index_shards.max(1);
        let waiting = item::s(DueKind::Waiting.partition(shard));
        match c {
            Change::Finish {
                lease,
                finish,
                record,
            } => {
                let ended = record.ended_ms;
                u.owned(lease)
                    .set(attr::STATE, state_value(finish.state()))
                    .set(
                        attr::DURATION,
                        item::n(ended.saturating_sub(record.started_ms)),
                    )
                    .set(attr::LAST_ATTEMPT, record_value(record, None));
                match finish {
                    Finish::Succeeded { result } => {
                        u.set(attr::FINISHED_AT, item::n(ended)).remove(&[
                            attr::OWNER,
                            attr::LEASE_UNTIL,
                            attr::RETRY_AT,
                            attr::DUE_KEY,
                            attr::DUE_AT,
                            attr::LAST_ERROR,
                            attr::ERROR_CLASS,
                            attr::RETRY_DEBT,
                        ]);
                        match result {
                            Some(r) if item::result_inline(lease.item_bytes, r) => {
                                u.set(attr::RESULT, item::s(r));
                            }
                            Some(_) => {
                                u.set(attr::RESULT_FENCE, item::n(lease.fence));
                            }
                            None => {}
                        }
                        self.expire(&mut u, ended);
                    }
                    Finish::Retry {
                        class,
                        error,
                        retry_at_ms,
                        refund,
                    } => {
                        u.set(attr::RETRY_AT, item::n(*retry_at_ms))
                            .set(attr::DUE_KEY, waiting)
                            .set(attr::DUE_AT, item::n(*retry_at_ms))
                            .set(
                                attr::LAST_ERROR,
                                item::s(item::clip_bytes(error, item::SHORT_ERROR_BYTES)),
                            )
                            .set(attr::ERROR_CLASS, item::s(class.as_str()))
                            .set(attr::RETRY_DEBT, AttributeValue::Bool(true))
                            .remove(&[attr::OWNER, attr::LEASE_UNTIL]);
                        if *refund {
                            let at = u.name(attr::ATTEMPTS);
                            let one = u.value(item::n(1));
                            u.set_expr(attr::ATTEMPTS, format!("{at} - {one}"));
                        }
                    }
                    Finish::Failed { class, error } => {
                        u.set(attr::FINISHED_AT, item::n(ended))
                            .set(
                                attr::LAST_ERROR,
                                item::s(item::clip_bytes(error, item::SHORT_ERROR_BYTES)),
                            )
                            .set(attr::ERROR_CLASS, item::s(class.as_str()))
                            .set(
                                attr::FAILED_KEY,
                                item::s(item::failed_partition(&lease.job)),
                            )
                            .set(attr::FAILED_INDEX_SK, item::n(lease.job.index()))
                            .remove(&[
                                attr::OWNER,
                                attr::LEASE_UNTIL,
                                attr::RETRY_AT,
                                attr::DUE_KEY,
                                attr::DUE_AT,
                                attr::RETRY_DEBT,
                            ]);
                        self.expire(&mut u, ended);
                    }
                    Finish::Cancelled => {
                        u.set(attr::FINISHED_AT, item::n(ended)).remove(&[
                            attr::OWNER,
                            attr::LEASE_UNTIL,
                            attr::RETRY_AT,
                            attr::DUE_KEY,
                            attr::DUE_AT,
                            attr::RETRY_DEBT,
                        ]);
                        self.expire(&mut u, ended);
                    }
                }
            }
            Change::Release { lease, now_ms } => {
                let at = u.name(attr::ATTEMPTS);
                let one = u.value(item::n(1));
                u.owned(lease)
                    .set(attr::STATE, state_value(JobState::Retrying))
                    .set_expr(attr::ATTEMPTS, format!("{at} - {one}"))
                    .set(attr::RETRY_DEBT, AttributeValue::Bool(true))
                    .set(attr::DUE_KEY, waiting)
                    .set(attr::DUE_AT, item::n(*now_ms))
                    .remove(&[attr::OWNER, attr::LEASE_UNTIL, attr::RETRY_AT, attr::TASK]);
            }
            Change::CancelWaiting { from, now_ms, .. } => {
                let st = u.name(attr::STATE);
                let from = u.value(state_value(*from));
                u.condition(format!("{st} = {from}"))
                    .set(attr::STATE, state_value(JobState::Cancelled))
                    .set(attr::FINISHED_AT, item::n(*now_ms))
                    .remove(&[
                        attr::DUE_KEY,
                        attr::DUE_AT,
                        attr::RETRY_AT,
                        attr::RETRY_DEBT,
                    ]);
                self.expire(&mut u, *now_ms);
            }
            Change::Redrive {
                fence,
                budget,
                target,
                now_ms,
                ..
            } => {
                let (st, fe, at) = (
                    u.name(attr::STATE),
                    u.name(attr::FENCE),
                    u.name(attr::ATTEMPTS),
                );
                let failed = u.value(state_value(JobState::Failed));
                let fence = u.value(item::n(*fence));
                let budget = u.value(item::n(*budget));
                u.condition(format!("{st} = {failed} AND {fe} = {fence}"))
                    .set(attr::STATE, state_value(JobState::Pending))
                    .set_expr(attr::MAX_ATTEMPTS, format!("{at} + {budget}"))
                    .set(attr::DUE_KEY, waiting)
                    .set(attr::DUE_AT, item::n(*now_ms))
                    .remove(&[
                        attr::FINISHED_AT,
                        attr::FAILED_KEY,
                        attr::FAILED_INDEX_SK,
                        attr::EXPIRES_AT,
                        attr::REQUEUED_AT,
                    ]);
                if let Some(t) = target {
                    u.set(attr::TARGET, item::s(t.as_str()));
                }
            }
        }
        u
    }

    fn expire(&self, u: &mut Update, now_ms: u64) {
        if let Some(x) = self.expiry(now_ms) {
            u.set(attr::EXPIRES_AT, item::n(x));
        }
    }

    /// The history entry a failed attempt appends to the ring.
    fn history_update(&self, c: &Change) -> Option<Update> {
        let Change::Finish {
            lease,
            finish,
            record,
        } = c
        else {
            return None;
        };
        let (_, error) = finish.error()?;
        let mut u = Update::default();
        let n = u.name(attr::RECORDED);
        let zero = u.value(item::n(0));
        let one = u.value(item::n(1));
        u.set(
            &item::history_slot(lease.fence, self.history_keep),
            record_value(record, Some(error)),
        )
        .set_expr(
            attr::RECORDED,
            format!("if_not_exists({n}, {zero}) + {one}"),
        );
        if let Some(x) = self.expiry(record.ended_ms) {
            u.set(attr::EXPIRES_AT, item::n(x));
        }
        Some(u)
    }

    /// A counter item's update: the deltas (every count written, so the item always has
    /// all of them) and the live reports.
    fn counter_update(&self, delta: &Delta, live: &[&LiveReport], now_ms: u64) -> Update {
        let mut u = Update::default();
        for (name, v) in [
            (counter_attr::SUCCEEDED, delta.succeeded),
            (counter_attr::FAILED, delta.failed),
            (counter_attr::CANCELLED, delta.cancelled),
            (counter_attr::RETRYING, delta.retrying),
            (counter_attr::ATTEMPTS, delta.attempts),
        ] {
            u.add(name, item::n(v));
        }
        for (name, v) in [
            (counter_attr::COST, delta.cost_nusd),
            (counter_attr::LAMBDA_ATTEMPTS, delta.lambda_attempts),
            (counter_attr::ECS_ATTEMPTS, delta.ecs_attempts),
        ] {
            if v != 0 {
                u.add(name, item::n(v));
            }
        }
        for l in live {
            u.set(&item::live_attr(&l.replica), item::live_value(l));
        }
        if let Some(x) = self.expiry(now_ms) {
            let xa = u.name(attr::EXPIRES_AT);
            let v = u.value(item::n(x));
            u.set_expr(attr::EXPIRES_AT, format!("if_not_exists({xa}, {v})"));
        }
        u
    }

    /// Writes the result items of successes whose results do not fit inline.
    async fn put_results(&self, changes: &[&Change]) -> Result<(), LedgerError> {
        for c in changes {
            let Change::Finish {
                lease,
                finish: Finish::Succeeded { result: Some(r) },
                record,
            } = c
            else {
                continue;
            };
            if item::result_inline(lease.item_bytes, r) {
                continue;
            }
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item::result_item(
                    &lease.key,
                    lease.fence,
                    r,
                    self.expiry(record.ended_ms),
                )))
                .condition_expression("attribute_not_exists(#fe) OR #fe <= :fence")
                .expression_attribute_names("#fe", attr::FENCE)
                .expression_attribute_values(":fence", item::n(lease.fence))
                .send()
                .await;
            match put {
                Ok(_) => {}
                // A newer attempt wrote its result: this one's terminal write will be refused.
                Err(e) if condition_failed(&e) => {}
                Err(e) => return Err(aws_err("PutItem", e)),
            }
        }
        Ok(())
    }

    /// Commits the changes and live reports; see the module's description.
    pub(crate) async fn commit_changes_with_live(
        &self,
        slot: &str,
        changes: &[Change],
        live: &[LiveReport],
    ) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        let mut results: Vec<Option<Result<(), LedgerError>>> =
            (0..changes.len()).map(|_| None).collect();
        // Two changes of one job cannot share a transaction: the second waits for the next.
        let mut seen = BTreeSet::new();
        let mut now: Vec<usize> = Vec::new();
        let mut later: Vec<usize> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            if seen.insert(c.key().clone()) {
                now.push(i);
            } else {
                later.push(i);
            }
        }
        let mut first = true;
        while !now.is_empty() || first {
            first = false;
            match self.transact(slot, changes, &now, live).await? {
                Ok(()) => {
                    for i in &now {
                        results[*i] = Some(Ok(()));
                    }
                    now.clear();
                }
                Err(Refused::Conditions(failed)) => {
                    for i in &failed {
                        results[*i] = Some(Err(stale(&changes[*i])));
                    }
                    now.retain(|i| !failed.contains(i));
                }
                Err(Refused::Invalid(message)) if now.len() <= 1 => {
                    for i in &now {
                        results[*i] = Some(Err(invalid(&message)));
                    }
                    now.clear();
                }
                Err(Refused::Invalid(_)) => {
                    // Find the invalid one: each change alone.
                    for i in std::mem::take(&mut now) {
                        let r = match self.transact(slot, changes, &[i], live).await? {
                            Ok(()) => Ok(()),
                            Err(Refused::Conditions(_)) => Err(stale(&changes[i])),
                            Err(Refused::Invalid(m)) => Err(invalid(&m)),
                        };
                        results[i] = Some(r);
                    }
                }
            }
            if now.is_empty() && !later.is_empty() {
                now = std::mem::take(&mut later);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(stale_unknown())))
            .collect())
    }

    /// One TransactWriteItems of the changes `which`, the history entries they append, and
    /// the counters they move (with the live reports). Outer `Err`: retry the whole call;
    /// inner `Err`: what DynamoDB refused.
    async fn transact(
        &self,
        slot: &str,
        changes: &[Change],
        which: &[usize],
        live: &[LiveReport],
    ) -> Result<Result<(), Refused>, LedgerError> {
        let picked: Vec<&Change> = which.iter().map(|i| &changes[*i]).collect();
        self.put_results(&picked).await?;
        let mut items: Vec<TransactWriteItem> = Vec::new();
        let mut roles: Vec<Role> = Vec::new();
        let mut deltas: BTreeMap<String, Delta> = BTreeMap::new();
        let mut now_ms = 0;
        for &i in which {
            let c = &changes[i];
            let update = self.job_update(c).transact(&self.table, c.key())?;
            items.push(TransactWriteItem::builder().update(update).build());
            roles.push(Role::Job(i));
            if let Some(h) = self.history_update(c) {
                let key = item::satellite(c.key(), item::HISTORY_SUFFIX);
                items.push(
                    TransactWriteItem::builder()
                        .update(h.transact(&self.table, &key)?)
                        .build(),
                );
                roles.push(Role::History(i));
            }
            deltas
                .entry(c.job().request_id().to_owned())
                .or_default()
                .add(&c.delta());
            now_ms = now_ms.max(change_time(c));
        }
        let mut requests: BTreeSet<&str> = deltas.keys().map(String::as_str).collect();
        requests.extend(live.iter().map(|l| l.request_id.as_str()));
        if now_ms == 0 {
            now_ms = live
                .iter()
                .map(|l| l.at_ms)
                .max()
                .unwrap_or_else(crate::time::now_ms);
        }
        for rid in requests {
            let delta = deltas.get(rid).copied().unwrap_or_default();
            let reports: Vec<&LiveReport> = live.iter().filter(|l| l.request_id == rid).collect();
            let u = self.counter_update(&delta, &reports, now_ms);
            let key = item::counter_key(rid, slot);
            items.push(
                TransactWriteItem::builder()
                    .update(u.transact(&self.table, &key)?)
                    .build(),
            );
            roles.push(Role::Counter);
        }
        if items.is_empty() {
            return Ok(Ok(()));
        }
        if which.is_empty() {
            // Live reports only: plain updates, no transaction needed.
            for it in items {
                if let Some(u) = it.update {
                    self.client
                        .update_item()
                        .table_name(u.table_name)
                        .set_key(Some(u.key))
                        .update_expression(u.update_expression)
                        .set_expression_attribute_names(u.expression_attribute_names)
                        .set_expression_attribute_values(u.expression_attribute_values)
                        .send()
                        .await
                        .map_err(|e| aws_err("UpdateItem", e))?;
                }
            }
            return Ok(Ok(()));
        }
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let e = match out {
            Ok(_) => return Ok(Ok(())),
            Err(e) => e,
        };
        let class = crate::error::sdk_error(&e);
        let code = e
            .as_service_error()
            .and_then(|se| aws_sdk_dynamodb::error::ProvideErrorMetadata::code(se))
            .map(str::to_owned);
        if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) =
            e.as_service_error()
        {
            let reasons = tc.cancellation_reasons();
            let mut failed = BTreeSet::new();
            let mut invalid = None;
            let mut retry = None;
            for (pos, r) in reasons.iter().enumerate() {
                let Some(role) = roles.get(pos) else { continue };
                match r.code() {
                    None | Some("None") => {}
                    Some("ConditionalCheckFailed") => {
                        if let Role::Job(i) | Role::History(i) = role {
                            failed.insert(*i);
                        }
                    }
                    Some(c @ ("ValidationError" | "ItemCollectionSizeLimitExceeded")) => {
                        invalid = Some(format!("{c}: {}", r.message().unwrap_or_default()));
                    }
                    Some(c) => {
                        retry = Some(format!("{c}: {}", r.message().unwrap_or_default()));
                    }
                }
            }
            if let Some(m) = retry {
                let class = if m.contains("Throttl") || m.contains("ProvisionedThroughput") {
                    ErrorClass::Throttled
                } else {
                    ErrorClass::Transient
                };
                return Err(LedgerError::Aws {
                    op: "TransactWriteItems",
                    class,
                    message: m,
                });
            }
            if !failed.is_empty() {
                return Ok(Err(Refused::Conditions(failed.into_iter().collect())));
            }
            if let Some(m) = invalid {
                return Ok(Err(Refused::Invalid(m)));
            }
            return Err(LedgerError::Aws {
                op: "TransactWriteItems",
                class: ErrorClass::Transient,
                message: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            });
        }
        if class == ErrorClass::Permanent && code.as_deref() == Some("ValidationException") {
            return Ok(Err(Refused::Invalid(
                aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            )));
        }
        Err(aws_err("TransactWriteItems", e))
    }

    /// Adds `delta` to a request's counter item in `slot` (a recount's correction).
    pub(crate) async fn add_to_counter(
        &self,
        request_id: &str,
        slot: &str,
        delta: &Delta,
    ) -> Result<(), LedgerError> {
        let u = self.counter_update(delta, &[], crate::time::now_ms());
        u.update_item(self, &item::counter_key(request_id, slot))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_err("UpdateItem", e))
    }
}

/// Why DynamoDB refused a transaction.
enum Refused {
    /// These changes' conditions did not hold.
    Conditions(Vec<usize>),
    /// An item was invalid (too large, a bad expression).
    Invalid(String),
}

fn change_time(c: &Change) -> u64 {
    match c {
        Change::Finish { record, .. } => record.ended_ms,
        Change::Release { now_ms, .. }
        | Change::CancelWaiting { now_ms, .. }
        | Change::Redrive { now_ms, .. } => *now_ms,
    }
}

fn stale(c: &Change) -> LedgerError {
    match c {
        Change::Finish { lease, .. } | Change::Release { lease, .. } => LedgerError::Stale {
            job: lease.job.to_string(),
            fence: lease.fence,
        },
        Change::Redrive { job, fence, .. } => LedgerError::Stale {
            job: job.to_string(),
            fence: *fence,
        },
        Change::CancelWaiting { job, .. } => LedgerError::Stale {
            job: job.to_string(),
            fence: 0,
        },
    }
}

fn stale_unknown() -> LedgerError {
    LedgerError::Aws {
        op: "TransactWriteItems",
        class: ErrorClass::Transient,
        message: "the change was not committed".into(),
    }
}

fn invalid(message: &str) -> LedgerError {
    LedgerError::Aws {
        op: "TransactWriteItems",
        class: ErrorClass::Permanent,
        message: message.to_owned(),
    }
}
