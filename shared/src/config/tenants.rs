//! `[tenants.<name>]`: limits of one tenant across all its requests (a request's tenant is
//! its `tenant`, else its request id).

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::ids;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Jobs of the tenant's requests running at once across the whole fleet (slots of a cap
    /// kept in the ledger, held by the replicas and renewed every second); default: no
    /// limit.
    pub max_concurrency: Option<u32>,
}

impl TenantConfig {
    /// Checks the tenant `name` (its name too) and its settings.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        ids::validate_request_id(name)
            .map_err(|e| invalid(&format!("tenants.{name}"), format!("tenant name {e}")))?;
        if let Some(n) = self.max_concurrency
            && !(1..=100_000).contains(&n)
        {
            return Err(invalid(
                &format!("tenants.{name}.max_concurrency"),
                "must be 1 to 100000",
            ));
        }
        Ok(())
    }
}
