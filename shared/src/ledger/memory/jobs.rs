//! What a worker replica does, in memory.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ErrorClass;
use crate::ledger::item::{
    self, CounterItem, DueKind, JobItem, PayloadAt, ResultAt, encode_job, item_size, read_units,
    write_units,
};
use crate::ledger::model::Charge;
use crate::ledger::{
    Adopted, Change, Claim, ClaimRequest, DueEntry, Finish, History, ItemKey, Lease, Ledger,
    LedgerError, LiveReport, RequestLedger, RequestView, Requeue,
};
use crate::state::{JobState, transition};

use super::*;

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
            Some(r) => RequestView::of(r),
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
            return Ok(Claim::refused(&j, req));
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
        Self::injected(&self.failing_heartbeats, "UpdateItem")?;
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
        bucket: &crate::ledger::Bucket,
        want: u32,
        now_ms: u64,
    ) -> Result<crate::ledger::Taken, LedgerError> {
        Self::injected(&self.failing_tokens, "UpdateItem")?;
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

    async fn take_slots(
        &self,
        pace: &crate::ledger::Pace,
        want: u32,
        now_ms: u64,
    ) -> Result<crate::ledger::Slots, LedgerError> {
        Self::injected(&self.failing_tokens, "UpdateItem")?;
        let key = item::bucket_key(&pace.name);
        self.read("GetItem", &[Charge::table(&key.pk, read_units(100, true))])?;
        let mut st = self.lock();
        let (slots, next) = pace.take(st.paces.get(&pace.name).copied(), now_ms, want);
        if slots.granted > 0 {
            self.write("UpdateItem", &[Charge::table(&key.pk, 1.0)])?;
            st.paces.insert(pace.name.clone(), next);
        }
        Ok(slots)
    }

    async fn allot(
        &self,
        cap: &crate::ledger::Cap,
        replica: &str,
        want: u32,
        now_ms: u64,
    ) -> Result<u32, LedgerError> {
        Self::injected(&self.failing_tokens, "UpdateItem")?;
        let key = item::bucket_key(&format!("cap-{}", cap.name));
        self.read("GetItem", &[Charge::table(&key.pk, read_units(400, true))])?;
        let mut st = self.lock();
        let held = st.caps.get(&cap.name).cloned().unwrap_or_default();
        let (mine, held) = cap.allot(held, replica, want, now_ms);
        self.write("UpdateItem", &[Charge::table(&key.pk, 1.0)])?;
        st.caps.insert(cap.name.clone(), held);
        Ok(mine)
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
        let mut deltas: BTreeMap<String, crate::ledger::Delta> = BTreeMap::new();
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
        self.due_scan(&kind.partition(shard), before_ms, limit, |st, at, key| {
            let j = st.jobs.get(key)?;
            let entry = DueEntry {
                job: j.job.clone(),
                key: key.clone(),
                kind,
                fence: j.fence,
                owner: j.owner.clone(),
                at_ms: at,
                task: j.task.clone(),
                state: j.state,
            };
            Some((entry, encode_job(j)))
        })
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
            self.refused_write("UpdateItem", &e.key.pk, &old_item)?;
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
            self.refused_write("UpdateItem", &e.key.pk, &old_item)?;
            return Ok(None);
        }
        let mut new = j.clone();
        new.requeued_at_ms = Some(now_ms);
        self.write(
            "UpdateItem",
            &item_charges(&e.key.pk, Some(&old_item), Some(&encode_job(&new)), 1.0),
        )?;
        let r = Requeue::of(&new, self.payload_of(&st, &new));
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

    async fn add_throughput(
        &self,
        request_id: &str,
        point: &crate::ledger::ThroughputPoint,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let key = item::throughput_key(request_id, point.at_ms);
        self.write("UpdateItem", &[Charge::table(&key.pk, 1.0)])?;
        let e = st
            .throughput
            .entry((request_id.to_owned(), point.at_ms))
            .or_insert(crate::ledger::ThroughputPoint {
                at_ms: point.at_ms,
                ..Default::default()
            });
        e.succeeded += point.succeeded;
        e.failed += point.failed;
        Ok(())
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
