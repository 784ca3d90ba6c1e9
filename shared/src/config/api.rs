//! `[api]`: the producer's HTTP API (`fleet-producer serve`): its token and its console.

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The bearer token every API and console call must carry (`Authorization: Bearer
    /// <token>`); none by default (the API is then bound to loopback unless told
    /// otherwise). Env `FLEET_API_TOKEN`: give it from a secret store (an ECS task's
    /// `secrets`), not a file.
    pub token: Option<String>,
    /// Serve the web console under `/console/`. Env `FLEET_API_CONSOLE` (`true`/`false`).
    pub console: bool,
}

/// The token is never printed.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("console", &self.console)
            .finish()
    }
}

impl ApiConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.token
            && (t.chars().count() < MIN_TOKEN_CHARS || !t.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(invalid(
                "api.token",
                format!(
                    "must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces (it goes in an Authorization header)"
                ),
            ));
        }
        Ok(())
    }
}
