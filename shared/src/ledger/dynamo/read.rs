//! Reading a job's items on DynamoDB: any item by key, a job's lean item and its payload,
//! its history, a job type's durations. Reads are consistent.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoLedger, aws_err, key_map};
use crate::ledger::item::{self, JobItem, PayloadAt, attr, decode_history, decode_job};
use crate::ledger::memory::merge_last;
use crate::ledger::{History, ItemKey, LedgerError};

impl DynamoLedger {
    pub(super) async fn get(&self, key: &ItemKey) -> Result<Option<item::Item>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_err("GetItem", e))?;
        Ok(out.item)
    }

    /// The entries of due index partition `partition` due before `before_ms`, oldest first
    /// (one Query of at most `limit`).
    pub(super) async fn due_items(
        &self,
        partition: &str,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<item::Item>, LedgerError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(item::DUE_INDEX)
            .key_condition_expression("#wk = :p AND #wt < :before")
            .expression_attribute_names("#wk", attr::DUE_KEY)
            .expression_attribute_names("#wt", attr::DUE_AT)
            .expression_attribute_values(":p", item::s(partition))
            .expression_attribute_values(":before", item::n(before_ms))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| super::aws_err("Query", e))?;
        Ok(out.items.unwrap_or_default())
    }

    /// A job's payload: inline, or from its payload item.
    pub(crate) async fn payload(&self, j: &JobItem) -> Result<String, LedgerError> {
        match &j.payload {
            PayloadAt::Inline(p) => Ok(p.clone()),
            PayloadAt::Apart => {
                let key = item::satellite(&j.key, item::PAYLOAD_SUFFIX);
                let found = self.get(&key).await?;
                let found = found.ok_or_else(|| LedgerError::Malformed {
                    key: key.to_string(),
                    message: "the job's payload item is missing".into(),
                })?;
                Ok(item::Reader::new(&found, &key).s(attr::PAYLOAD)?.to_owned())
            }
        }
    }

    /// A lean item, decoded.
    pub(crate) async fn job_item(&self, key: &ItemKey) -> Result<Option<JobItem>, LedgerError> {
        self.get(key).await?.as_ref().map(decode_job).transpose()
    }

    pub(super) async fn durations_item(
        &self,
        job_type: &str,
    ) -> Result<(u64, Vec<u64>), LedgerError> {
        let key = item::job_type_key(job_type);
        let Some(found) = self.get(&key).await? else {
            return Ok((0, Vec::new()));
        };
        let list = match found.get("d") {
            Some(AttributeValue::L(l)) => l
                .iter()
                .filter_map(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
                .collect(),
            _ => Vec::new(),
        };
        Ok((item::Reader::new(&found, &key).n("v")?, list))
    }

    /// A job's history item and its lean item's last attempt.
    pub(crate) async fn read_history(&self, key: &ItemKey) -> Result<History, LedgerError> {
        let hkey = item::satellite(key, item::HISTORY_SUFFIX);
        let mut h = match self.get(&hkey).await? {
            Some(found) => decode_history(&found, &hkey)?,
            None => History::default(),
        };
        if let Some(j) = self.job_item(key).await? {
            merge_last(&mut h, &j);
        }
        Ok(h)
    }
}
