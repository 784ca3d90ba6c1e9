//! The ledger on DynamoDB, one file per role:
//!
//! - [`schema`]: the table and its indexes, and the layout item that says which layout a
//!   table holds (an older table is refused, never misread);
//! - [`jobs`]: what a worker does to one job (claim, heartbeat, adopt, requeue, history);
//! - `read`: reading a job's items (lean item, payload, history) and a job type's durations;
//! - [`commit`]: state changes and the counters they move, in transactions;
//! - [`requests`]: what the producer does (requests, job items, counts, listings).
//!
//! The item layout and its codec are in [`super::item`]. Every attribute name in an
//! expression goes through an alias (several are DynamoDB reserved words).

pub mod commit;
pub mod jobs;
mod read;
pub mod requests;
pub use requests::MARKS_AT_ONCE;
pub mod schema;
mod shared_items;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{self, Item};
use super::{ItemKey, LedgerError};
use crate::error::{self, ErrorClass};

/// The ledger in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    ttl_secs: Option<u64>,
    index_shards: u32,
    history_keep: u32,
}

impl DynamoLedger {
    /// A ledger on `table` without checking its layout (for `init`, which creates it; every
    /// other caller uses [`DynamoLedger::open`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            ttl_secs: None,
            index_shards: 32,
            history_keep: 10,
        }
    }

    /// Finished jobs (and requests, from their creation) get `expires_at` this long after,
    /// for the table's TTL to delete them; kept for ever when `None`.
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl_secs = ttl.map(|t| t.as_secs());
        self
    }

    /// Failed attempts kept whole in each job's history (older ones are only counted).
    pub fn with_history_keep(mut self, keep: u32) -> Self {
        self.history_keep = keep.max(1);
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn expiry(&self, now_ms: u64) -> Option<u64> {
        self.ttl_secs.map(|t| now_ms / 1000 + t)
    }
}

/// An SDK error as a ledger error, with its class.
pub(crate) fn aws_err<E>(op: &'static str, e: SdkError<E>) -> LedgerError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    LedgerError::Aws {
        op,
        class: error::sdk_error(&e),
        message: DisplayErrorContext(e).to_string(),
    }
}

/// A request DynamoDB was never sent (the SDK refused to build it): retrying cannot help.
pub(crate) fn build_err(op: &'static str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Aws {
        op,
        class: ErrorClass::Permanent,
        message: e.to_string(),
    }
}

/// Whether an SDK error is DynamoDB's "the condition did not hold".
pub(crate) fn condition_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

pub(crate) fn key_map(key: &ItemKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (item::attr::PK.to_owned(), item::s(&key.pk)),
        (item::attr::SK.to_owned(), item::s(&key.sk)),
    ])
}

pub(crate) fn key_of(item: &Item) -> ItemKey {
    let get = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    ItemKey::new(get(item::attr::PK), get(item::attr::SK))
}

/// An update expression under construction: `SET`, `REMOVE` and `ADD` clauses, an optional
/// condition, and the aliases and values they use.
#[derive(Debug, Default, Clone)]
pub(crate) struct Update {
    sets: Vec<String>,
    removes: Vec<String>,
    adds: Vec<String>,
    condition: Option<String>,
    names: BTreeMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    /// The alias of an attribute (`#st`): names are short and alphanumeric.
    pub fn name(&mut self, attr: &str) -> String {
        let alias = format!("#{attr}");
        self.names.insert(alias.clone(), attr.to_owned());
        alias
    }

    /// A placeholder for a value.
    pub fn value(&mut self, v: AttributeValue) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), v);
        p
    }

    pub fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (a, p) = (self.name(attr), self.value(v));
        self.sets.push(format!("{a} = {p}"));
        self
    }

    /// `SET attr = <expr>`; `expr` may use aliases made with [`Update::name`].
    pub fn set_expr(&mut self, attr: &str, expr: String) -> &mut Self {
        let a = self.name(attr);
        self.sets.push(format!("{a} = {expr}"));
        self
    }

    pub fn remove(&mut self, attrs: &[&str]) -> &mut Self {
        for attr in attrs {
            let a = self.name(attr);
            self.removes.push(a);
        }
        self
    }

    pub fn add(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (a, p) = (self.name(attr), self.value(v));
        self.adds.push(format!("{a} {p}"));
        self
    }

    /// Adds a condition, joined to any earlier one with AND.
    pub fn condition(&mut self, c: String) -> &mut Self {
        self.condition = Some(match self.condition.take() {
            Some(old) => format!("({old}) AND ({c})"),
            None => c,
        });
        self
    }

    /// `#st = :running AND #ow = :owner AND #fe = :fence`: the lease still holds.
    pub fn owned(&mut self, lease: &super::Lease) -> &mut Self {
        let (st, ow, fe) = (
            self.name(item::attr::STATE),
            self.name(item::attr::OWNER),
            self.name(item::attr::FENCE),
        );
        let running = self.value(item::s(crate::state::JobState::Running.as_str()));
        let owner = self.value(item::s(&lease.owner));
        let fence = self.value(item::n(lease.fence));
        self.condition(format!(
            "{st} = {running} AND {ow} = {owner} AND {fe} = {fence}"
        ))
    }

    pub fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.sets.is_empty() {
            parts.push(format!("SET {}", self.sets.join(", ")));
        }
        if !self.removes.is_empty() {
            parts.push(format!("REMOVE {}", self.removes.join(", ")));
        }
        if !self.adds.is_empty() {
            parts.push(format!("ADD {}", self.adds.join(", ")));
        }
        parts.join(" ")
    }

    pub fn condition_expression(&self) -> Option<String> {
        self.condition.clone()
    }

    /// The aliases the expressions use (DynamoDB refuses unused ones).
    pub fn names(&self) -> HashMap<String, String> {
        let text = self.text();
        self.names
            .iter()
            .filter(|(alias, _)| used(&text, alias))
            .map(|(a, n)| (a.clone(), n.clone()))
            .collect()
    }

    /// The values the expressions use.
    pub fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        let text = self.text();
        let v: HashMap<String, AttributeValue> = self
            .values
            .iter()
            .filter(|(p, _)| used(&text, p))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect();
        (!v.is_empty()).then_some(v)
    }

    fn text(&self) -> String {
        format!(
            "{} {}",
            self.expression(),
            self.condition.as_deref().unwrap_or("")
        )
    }

    /// An UpdateItem call for `key` with this expression.
    pub fn update_item(
        &self,
        l: &DynamoLedger,
        key: &ItemKey,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        l.client
            .update_item()
            .table_name(&l.table)
            .set_key(Some(key_map(key)))
            .update_expression(self.expression())
            .set_condition_expression(self.condition_expression())
            .set_expression_attribute_names(Some(self.names()))
            .set_expression_attribute_values(self.values())
    }

    /// The same as a transaction's Update.
    pub fn transact(
        &self,
        table: &str,
        key: &ItemKey,
    ) -> Result<aws_sdk_dynamodb::types::Update, LedgerError> {
        aws_sdk_dynamodb::types::Update::builder()
            .table_name(table)
            .set_key(Some(key_map(key)))
            .update_expression(self.expression())
            .set_condition_expression(self.condition_expression())
            .set_expression_attribute_names(Some(self.names()))
            .set_expression_attribute_values(self.values())
            .build()
            .map_err(|e| build_err("TransactWriteItems", e))
    }
}

/// Whether `text` uses `token` as a whole word (`#at` is not used by `#ate`, nor `:v1` by
/// `:v12`).
fn used(text: &str, token: &str) -> bool {
    text.match_indices(token).any(|(i, _)| {
        !text[i + token.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_used_names_and_values_are_sent() {
        let mut u = Update::default();
        let unused = u.name("fe");
        let _ = u.value(item::n(1));
        u.set("st", item::s("x"));
        assert_eq!(unused, "#fe");
        assert_eq!(u.names().keys().collect::<Vec<_>>(), vec!["#st"]);
        assert_eq!(u.values().unwrap().keys().collect::<Vec<_>>(), vec![":v1"]);
        assert!(used("#at = :v12", ":v12") && !used("#at = :v12", ":v1"));
    }

    #[test]
    fn updates_read_as_dynamodb_expects() {
        let mut u = Update::default();
        u.set("st", item::s("RUNNING"))
            .remove(&["ow", "lu"])
            .add("SUCCEEDED", item::n(1));
        let st = u.name("st");
        let v = u.value(item::s("PENDING"));
        u.condition(format!("{st} = {v}"));
        u.condition("attribute_exists(#pk)".into());
        assert_eq!(
            u.expression(),
            "SET #st = :v0 REMOVE #ow, #lu ADD #SUCCEEDED :v1"
        );
        assert_eq!(
            u.condition_expression().as_deref(),
            Some("(#st = :v2) AND (attribute_exists(#pk))")
        );
        // Only aliases made with `name` are declared; `#pk` written by hand is not.
        let mut names: Vec<String> = u.names().into_keys().collect();
        names.sort();
        assert_eq!(names, ["#SUCCEEDED", "#lu", "#ow", "#st"]);
    }
}
