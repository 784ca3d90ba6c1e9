//! The table: its keys and indexes, its creation (`fleet-worker init`), its TTL, and the
//! layout item that records which layout the table holds. Every process opens the ledger
//! through [`DynamoLedger::open`], which refuses a table of another layout with a message
//! that says what to do, so an older table is never misread.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};

use super::{DynamoLedger, aws_err, condition_failed, key_map};
use crate::ledger::item::{self, attr, layout_attr};
use crate::ledger::{LAYOUT_VERSION, LedgerError};

/// The index of the layout before this one: a table that has it was made by an older build.
const OLD_LEASE_INDEX: &str = "lease-expiry";

fn def(name: &str, t: ScalarAttributeType) -> Result<AttributeDefinition, LedgerError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .map_err(build_err)
}

fn key(name: &str, kt: KeyType) -> Result<KeySchemaElement, LedgerError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kt)
        .build()
        .map_err(build_err)
}

fn build_err(e: impl std::fmt::Display) -> LedgerError {
    super::build_err("CreateTable", e)
}

/// The three indexes: `due` (what the sweeper reads), `failed` (a request's failed jobs)
/// and `requests` (every request, newest first).
fn indexes() -> Result<Vec<GlobalSecondaryIndex>, LedgerError> {
    let index = |name: &str, pk: &str, sk: &str, projected: &[&str]| {
        let projection = if projected.is_empty() {
            Projection::builder().projection_type(ProjectionType::KeysOnly)
        } else {
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(projected.iter().map(|s| (*s).to_owned()).collect()))
        };
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(pk, KeyType::Hash)?)
            .key_schema(key(sk, KeyType::Range)?)
            .projection(projection.build())
            .build()
            .map_err(build_err)
    };
    Ok(vec![
        index(
            item::DUE_INDEX,
            attr::DUE_KEY,
            attr::DUE_AT,
            item::DUE_PROJECTED,
        )?,
        index(
            item::FAILED_INDEX,
            attr::FAILED_KEY,
            attr::FAILED_INDEX_SK,
            item::FAILED_PROJECTED,
        )?,
        index(item::REQUESTS_INDEX, attr::LIST_KEY, attr::LIST_AT, &[])?,
    ])
}

/// What is wrong with a table for this layout, if anything.
fn layout_problem(t: &TableDescription) -> Option<String> {
    let keys: Vec<(String, KeyType)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    let want_keys = vec![
        (attr::PK.to_owned(), KeyType::Hash),
        (attr::SK.to_owned(), KeyType::Range),
    ];
    if keys != want_keys {
        return Some(format!("its key schema is {keys:?}, not pk (S) and sk (S)"));
    }
    let names: Vec<&str> = t
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    if names.contains(&OLD_LEASE_INDEX) {
        return Some(format!(
            "it has the {OLD_LEASE_INDEX} index of ledger layout 1"
        ));
    }
    for (index, pk, sk) in [
        (item::DUE_INDEX, attr::DUE_KEY, attr::DUE_AT),
        (item::FAILED_INDEX, attr::FAILED_KEY, attr::FAILED_INDEX_SK),
        (item::REQUESTS_INDEX, attr::LIST_KEY, attr::LIST_AT),
    ] {
        let found = t
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(index));
        let Some(found) = found else {
            return Some(format!("it has no {index} index"));
        };
        let k: Vec<&str> = found
            .key_schema()
            .iter()
            .map(|k| k.attribute_name())
            .collect();
        if k != [pk, sk] {
            return Some(format!(
                "its {index} index is keyed {k:?}, not [{pk}, {sk}]"
            ));
        }
    }
    None
}

impl DynamoLedger {
    /// Opens the ledger on `table`: reads the layout item and refuses a table of another
    /// layout. A table without one (created by the CloudFormation template, which cannot
    /// write items) is checked against this layout's indexes and stamped with it, with
    /// `index_shards` partitions of the due index.
    pub async fn open(
        client: Client,
        table: impl Into<String>,
        index_shards: u32,
    ) -> Result<Self, LedgerError> {
        let mut l = DynamoLedger::new(client, table);
        l.index_shards = l.check_layout(index_shards).await?;
        Ok(l)
    }

    /// The table's due-index partitions, after checking (or stamping) its layout.
    async fn check_layout(&self, index_shards: u32) -> Result<u32, LedgerError> {
        if let Some(shards) = self.read_layout().await? {
            return Ok(shards);
        }
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception())
                {
                    LedgerError::Layout(format!(
                        "the ledger table {} does not exist: create it with `fleet-worker init` (or the CloudFormation template)",
                        self.table
                    ))
                } else {
                    aws_err("DescribeTable", e)
                }
            })?;
        let Some(t) = out.table else {
            return Err(LedgerError::Layout(format!(
                "DescribeTable returned no description of {}",
                self.table
            )));
        };
        if let Some(problem) = layout_problem(&t) {
            return Err(LedgerError::Layout(format!(
                "the ledger table {} was not made for ledger layout {LAYOUT_VERSION}: {problem}. \
                 Create a new table with `fleet-worker init` (set ledger.table / FLEET_TABLE to a new name), \
                 or delete this one once its requests no longer matter",
                self.table
            )));
        }
        self.stamp(index_shards).await
    }

    /// The layout item's due-index partitions; an error if it records another layout.
    async fn read_layout(&self) -> Result<Option<u32>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(&item::layout_key())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception())
                {
                    LedgerError::Layout(format!(
                        "the ledger table {} does not exist: create it with `fleet-worker init` (or the CloudFormation template)",
                        self.table
                    ))
                } else {
                    aws_err("GetItem", e)
                }
            })?;
        let Some(found) = out.item else {
            return Ok(None);
        };
        let key = item::layout_key();
        let r = item::Reader::new(&found, &key);
        let version: u32 = r.n(layout_attr::VERSION)?;
        if version != LAYOUT_VERSION {
            let hint = if version > LAYOUT_VERSION {
                "it was written by a newer Fleet: run that version"
            } else {
                "create a new table with `fleet-worker init`"
            };
            return Err(LedgerError::Layout(format!(
                "the ledger table {} holds ledger layout {version}; this build reads layout {LAYOUT_VERSION} ({hint})",
                self.table
            )));
        }
        Ok(Some(r.n(layout_attr::INDEX_SHARDS)?))
    }

    /// Writes the layout item unless one exists; the shards the table ends up with.
    async fn stamp(&self, index_shards: u32) -> Result<u32, LedgerError> {
        let mut it = key_map(&item::layout_key());
        it.insert(layout_attr::VERSION.to_owned(), item::n(LAYOUT_VERSION));
        it.insert(layout_attr::INDEX_SHARDS.to_owned(), item::n(index_shards));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .send()
            .await;
        match put {
            Ok(_) => Ok(index_shards),
            Err(e) if condition_failed(&e) => self.read_layout().await?.ok_or_else(|| {
                LedgerError::Layout(format!(
                    "the layout item of {} exists but cannot be read",
                    self.table
                ))
            }),
            Err(e) => Err(aws_err("PutItem", e)),
        }
    }

    /// Creates the table if it does not exist (on-demand capacity, the three indexes), waits
    /// until it is active, and stamps its layout. An existing table of another layout is an
    /// error. True when the table was created.
    pub async fn create_table(&mut self, index_shards: u32) -> Result<bool, LedgerError> {
        let created = match self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(def(attr::PK, ScalarAttributeType::S)?)
            .attribute_definitions(def(attr::SK, ScalarAttributeType::S)?)
            .attribute_definitions(def(attr::DUE_KEY, ScalarAttributeType::S)?)
            .attribute_definitions(def(attr::DUE_AT, ScalarAttributeType::N)?)
            .attribute_definitions(def(attr::FAILED_KEY, ScalarAttributeType::S)?)
            .attribute_definitions(def(attr::FAILED_INDEX_SK, ScalarAttributeType::N)?)
            .attribute_definitions(def(attr::LIST_KEY, ScalarAttributeType::S)?)
            .attribute_definitions(def(attr::LIST_AT, ScalarAttributeType::S)?)
            .key_schema(key(attr::PK, KeyType::Hash)?)
            .key_schema(key(attr::SK, KeyType::Range)?)
            .set_global_secondary_indexes(Some(indexes()?))
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
            let Some(t) = out.table else {
                return Err(LedgerError::Layout(format!(
                    "no description returned for table {}",
                    self.table
                )));
            };
            if t.table_status() == Some(&TableStatus::Active) {
                if !created
                    && self.read_layout().await?.is_none()
                    && let Some(problem) = layout_problem(&t)
                {
                    return Err(LedgerError::Layout(format!(
                        "table {} exists and was not made for ledger layout {LAYOUT_VERSION}: {problem}; delete it or choose another ledger.table",
                        self.table
                    )));
                }
                self.index_shards = self.check_layout(index_shards).await?;
                return Ok(created);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LedgerError::Layout(format!(
                    "table {} did not become ACTIVE within 120 s",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Turns on the table's TTL on `xa` (`init`, when `ledger.ttl_days` is set). Already on
    /// is fine.
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
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if on {
            return Ok(());
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr::EXPIRES_AT)
                    .enabled(true)
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .await
            .map_err(|e| aws_err("UpdateTimeToLive", e))?;
        Ok(())
    }
}
