//! What the producer does, in memory: requests, job items, counts, listings.

use crate::error::ErrorClass;
use crate::ledger::item::{
    self, JobItem, PayloadAt, ResultAt, decode_history, encode_job, item_size, read_units,
    write_units,
};
use crate::ledger::model::Charge;
use crate::ledger::page;
use crate::ledger::{
    Change, Counts, History, ItemKey, JobDetail, Ledger, LedgerError, NewJob, Page,
    PutRequestOutcome, ReleaseRecord, RequestLedger, RequestRecord, Requeue,
};
use crate::state::JobState;

use super::*;

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
            return Ok(PutRequestOutcome::Exists(Box::new(existing.clone())));
        }
        let item = item::encode_request(r, self.expiry(r.created_at_ms));
        self.write("PutItem", &item_charges(&key.pk, None, Some(&item), 1.0))?;
        st.put_request(r.clone());
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
            let (j, payload) = nj.pending_item(self.index_shards);
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

    async fn set_window(&self, request_id: &str, window: u32) -> Result<bool, LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get_mut(request_id) else {
            return Ok(false);
        };
        let size = item_size(&item::encode_request(r, None));
        if r.window.is_none() {
            return self
                .refused_write("UpdateItem", &key.pk, &item::encode_request(r, None))
                .map(|()| false);
        }
        self.write(
            "UpdateItem",
            &[Charge::table(&key.pk, write_units(size, size) as f64)],
        )?;
        r.window = Some(window);
        r.capped = true;
        Ok(true)
    }

    async fn mark_released(
        &self,
        jobs: &[crate::ids::JobId],
        job_shards: u32,
        now_ms: u64,
    ) -> Result<Vec<Requeue>, LedgerError> {
        let mut out = Vec::new();
        for job in jobs {
            let key = item::job_key(job, job_shards);
            // A throttled write is tried again, as the SDK's standard retries do (3 attempts).
            let mut tries = 1;
            loop {
                match self.mark_one(&key, now_ms) {
                    Ok(marked) => {
                        out.extend(marked);
                        break;
                    }
                    Err(e) if tries < 3 && e.class() == ErrorClass::Throttled => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    async fn put_release(&self, release: &ReleaseRecord) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let key = item::release_key(&release.request_id, release.range.start);
        let new = item::encode_release(release, self.index_shards, self.expiry(release.at_ms));
        let old = st
            .releases
            .get(&key)
            .map(|r| item::encode_release(r, self.index_shards, self.expiry(r.at_ms)));
        self.write(
            "PutItem",
            &item_charges(&key.pk, old.as_ref(), Some(&new), 1.0),
        )?;
        st.unindex_release(&key, self.index_shards);
        st.releases.insert(key.clone(), release.clone());
        st.index_release(&key, self.index_shards);
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
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get_mut(request_id) else {
            return self
                .refused_write("UpdateItem", &key.pk, &Default::default())
                .map(|()| false);
        };
        let old = item::encode_request(r, None);
        let free = r
            .releaser
            .as_ref()
            .is_none_or(|(who, until)| who == releaser || *until < now_ms);
        if !free || r.window.is_none() || r.released != range.start {
            return self
                .refused_write("UpdateItem", &key.pk, &old)
                .map(|()| false);
        }
        let mut new = r.clone();
        new.released = range.end;
        new.releaser = Some((releaser.to_owned(), until_ms));
        let size = item_size(&item::encode_request(&new, None));
        self.write(
            "UpdateItem",
            &[Charge::table(
                &key.pk,
                write_units(item_size(&old), size) as f64,
            )],
        )?;
        *r = new;
        Ok(true)
    }

    async fn released_jobs(
        &self,
        jobs: &[crate::ids::JobId],
        job_shards: u32,
        consistent: bool,
    ) -> Result<Vec<Requeue>, LedgerError> {
        let st = self.lock();
        let mut charges = Vec::new();
        let mut out = Vec::new();
        for job in jobs {
            let key = item::job_key(job, job_shards);
            let j = st.jobs.get(&key);
            charges.push(Charge::table(
                &key.pk,
                read_units(j.map_or(0, |j| item_size(&encode_job(j))), consistent),
            ));
            let Some(j) = j.filter(|j| j.state == JobState::Pending && j.due.is_none()) else {
                continue;
            };
            let payload = self.payload_of(&st, j);
            if j.payload == PayloadAt::Apart {
                let p = item::payload_item(&j.key, &payload, None);
                charges.push(Charge::table(
                    item::satellite(&j.key, item::PAYLOAD_SUFFIX).pk,
                    read_units(item_size(&p), consistent),
                ));
            }
            out.push(Requeue::of(j, payload));
        }
        self.read("BatchGetItem", &charges)?;
        Ok(out)
    }

    async fn finish_request(
        &self,
        request_id: &str,
        notifier: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<RequestRecord>, LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get(request_id) else {
            return self
                .refused_write("UpdateItem", &key.pk, &Default::default())
                .map(|()| None);
        };
        let old = item::encode_request(r, None);
        let c = &r.completion;
        let free = c
            .notifier
            .as_ref()
            .is_none_or(|(who, until)| who == notifier || *until < now_ms);
        if !free || c.notified_at_ms.is_some() {
            return self
                .refused_write("UpdateItem", &key.pk, &old)
                .map(|()| None);
        }
        let mut new = r.clone();
        new.completion.finished_at_ms.get_or_insert(now_ms);
        new.completion.notifier = Some((notifier.to_owned(), until_ms));
        new.completion.check_at_ms = Some(until_ms);
        let charges = item_charges(
            &key.pk,
            Some(&old),
            Some(&item::encode_request(&new, None)),
            1.0,
        );
        self.write("UpdateItem", &charges)?;
        st.put_request(new.clone());
        Ok(Some(new))
    }

    async fn request_notified(
        &self,
        request_id: &str,
        now_ms: u64,
        manifest: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.update_request(request_id, |r| {
            r.completion.notified_at_ms = Some(now_ms);
            if let Some(m) = manifest {
                r.completion.manifest = Some(m.to_owned());
            }
            r.completion.check_at_ms = None;
            true
        })
    }

    async fn due_finish_checks(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        self.due_scan(
            item::FINISH_DUE_PARTITION,
            before_ms,
            limit,
            |st, _, key| {
                let id = item::request_of_key(&key.pk)?;
                let r = st.requests.get(id)?;
                Some((id.to_owned(), item::encode_request(r, None)))
            },
        )
    }

    async fn requests_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, LedgerError> {
        let st = self.lock();
        let mut all: Vec<String> = st
            .requests
            .values()
            .map(|r| item::request_list_at(r.created_at_ms, &r.request_id))
            .filter(|at| cursor.is_none_or(|c| at.as_str() < c))
            .collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        let limit = limit.clamp(1, 1000);
        let more = all.len() > limit;
        all.truncate(limit);
        // Keys only: 4 KB of index entries per read unit.
        let bytes: usize = all.iter().map(|a| a.len() * 2 + 8).sum();
        self.read(
            "Query",
            &[Charge::index(
                item::REQUESTS_INDEX,
                item::REQUESTS_PARTITION,
                read_units(bytes, false),
            )],
        )?;
        let next = more.then(|| all.last().cloned()).flatten();
        let items = all
            .into_iter()
            .filter_map(|at| at.split_once('#').map(|(_, id)| id.to_owned()))
            .collect();
        Ok(Page { items, next })
    }

    async fn throughput(
        &self,
        request_id: &str,
        since_ms: u64,
    ) -> Result<Vec<crate::ledger::ThroughputPoint>, LedgerError> {
        let st = self.lock();
        let from = crate::ledger::series::bucket_of(since_ms);
        let points: Vec<_> = st
            .throughput
            .range((request_id.to_owned(), from)..)
            .take_while(|((r, _), _)| r == request_id)
            .map(|(_, p)| *p)
            .collect();
        self.read(
            "Query",
            &[Charge::table(
                item::throughput_partition(request_id),
                read_units(points.len() * 40, false),
            )],
        )?;
        Ok(points)
    }

    async fn defer_finish_check(&self, request_id: &str, at_ms: u64) -> Result<(), LedgerError> {
        self.update_request(request_id, |r| {
            if r.completion.notified_at_ms.is_some() {
                return false;
            }
            r.completion.check_at_ms = Some(at_ms);
            true
        })
    }

    async fn due_releases(
        &self,
        shard: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>, LedgerError> {
        let shards = self.index_shards;
        self.due_scan(
            &item::release_partition(shard),
            before_ms,
            limit,
            |st, _, key| {
                let r = st.releases.get(key)?;
                Some((r.clone(), item::encode_release(r, shards, None)))
            },
        )
    }

    async fn delete_release(&self, release: &ReleaseRecord) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let key = item::release_key(&release.request_id, release.range.start);
        let old = st
            .releases
            .get(&key)
            .map(|r| item::encode_release(r, self.index_shards, self.expiry(r.at_ms)));
        self.write(
            "DeleteItem",
            &item_charges(&key.pk, old.as_ref(), None, 1.0),
        )?;
        st.unindex_release(&key, self.index_shards);
        st.releases.remove(&key);
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

    async fn fail_request(
        &self,
        request_id: &str,
        now_ms: u64,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get_mut(request_id) else {
            return Ok(false);
        };
        let old = item_size(&item::encode_request(r, None));
        if r.failed.is_some() {
            return self
                .refused_write("UpdateItem", &key.pk, &item::encode_request(r, None))
                .map(|()| false);
        }
        r.failed = Some(crate::ledger::RequestFailure {
            at_ms: now_ms,
            reason: reason.to_owned(),
        });
        r.cancelled_at_ms.get_or_insert(now_ms);
        let new = item_size(&item::encode_request(r, None));
        self.write(
            "UpdateItem",
            &[Charge::table(&key.pk, write_units(old, new) as f64)],
        )?;
        Ok(true)
    }

    async fn counts(&self, request_id: &str, now_ms: u64) -> Result<Counts, LedgerError> {
        let st = self.lock();
        let mut total = Counts::default();
        let mut charges = Vec::new();
        for slot in (0..crate::ledger::COUNTER_SLOTS)
            .map(|s| s.to_string())
            .chain([crate::ledger::PRODUCER_SLOT.to_owned()])
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
            let key = item::counter_key(request_id, crate::ledger::PRODUCER_SLOT);
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
        page::walk(job_shards, cursor, limit, |shard, after, want| async move {
            let st = self.lock();
            let part = item::job_partition(request_id, shard);
            let start = ItemKey::new(part.clone(), after.clone().unwrap_or_default());
            let mut found = st
                .jobs
                .range(start..)
                .take_while(|(k, _)| k.pk == part)
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k.sk > *a));
            let read: Vec<_> = found.by_ref().take(want).collect();
            let bytes = read.iter().map(|(_, j)| item_size(&encode_job(j))).sum();
            self.read("Query", &[Charge::table(&part, read_units(bytes, false))])?;
            Ok(page::ShardRead {
                more: found.next().is_some(),
                last: read.last().map(|(k, _)| k.sk.clone()),
                items: read.into_iter().map(|(_, j)| JobDetail::from(j)).collect(),
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
                let st = self.lock();
                let part = format!("{request_id}#{shard}");
                let after_ix: Option<u32> = after.as_deref().and_then(|a| a.parse().ok());
                let mut found = st
                    .failed
                    .range((part.clone(), 0u32, ItemKey::new("", ""))..)
                    .take_while(|(p, _, _)| *p == part)
                    .filter(|(_, ix, _)| after_ix.is_none_or(|a| *ix > a))
                    .filter_map(|(_, ix, key)| Some((*ix, st.jobs.get(key)?)));
                let read: Vec<_> = found.by_ref().take(want).collect();
                let bytes = read
                    .iter()
                    .map(|(_, j)| item::failed_entry(&encode_job(j)).map_or(0, |(_, s)| s))
                    .sum();
                self.read(
                    "Query",
                    &[Charge::index(
                        item::FAILED_INDEX,
                        &part,
                        read_units(bytes, false),
                    )],
                )?;
                Ok(page::ShardRead {
                    more: found.next().is_some(),
                    last: read.last().map(|(ix, _)| ix.to_string()),
                    items: read.into_iter().map(|(_, j)| JobDetail::from(j)).collect(),
                })
            },
        )
        .await
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
        h.attempts.push(crate::ledger::HistoryEntry {
            record: last.clone(),
            error: None,
        });
        h.attempts.sort_by_key(|e| e.record.fence);
    }
}

impl MemoryLedger {
    /// One job's release (see [`RequestLedger::mark_released`]).
    fn mark_one(&self, key: &ItemKey, now_ms: u64) -> Result<Option<Requeue>, LedgerError> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get(key).cloned() else {
            self.refused_write("UpdateItem", &key.pk, &Default::default())?;
            return Ok(None);
        };
        let old = encode_job(&j);
        if j.state != JobState::Pending || j.due.is_some() {
            self.refused_write("UpdateItem", &key.pk, &old)?;
            return Ok(None);
        }
        let mut new = j;
        new.due = item::due_for(&new.job, JobState::Pending, now_ms, self.index_shards);
        self.write(
            "UpdateItem",
            &item_charges(&key.pk, Some(&old), Some(&encode_job(&new)), 1.0),
        )?;
        let r = Requeue::of(&new, self.payload_of(&st, &new));
        st.put_job(new);
        Ok(Some(r))
    }
}

impl MemoryLedger {
    /// One UpdateItem of a request item: `change` edits it and says whether the write's
    /// condition holds (a refused write costs as DynamoDB charges it). Nothing for a missing
    /// request.
    fn update_request(
        &self,
        request_id: &str,
        change: impl FnOnce(&mut RequestRecord) -> bool,
    ) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let key = item::request_key(request_id);
        let Some(r) = st.requests.get(request_id) else {
            return self.refused_write("UpdateItem", &key.pk, &Default::default());
        };
        let old = item::encode_request(r, None);
        let mut new = r.clone();
        if !change(&mut new) {
            return self.refused_write("UpdateItem", &key.pk, &old);
        }
        let charges = item_charges(
            &key.pk,
            Some(&old),
            Some(&item::encode_request(&new, None)),
            1.0,
        );
        self.write("UpdateItem", &charges)?;
        st.put_request(new);
        Ok(())
    }
}
