//! `[aws]`: how the AWS clients connect (region, credentials and endpoints come from the
//! default AWS chain, not from here).

use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, env, invalid};

/// How the AWS clients connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// TCP keepalive on every AWS connection: the first probe after this many idle seconds
    /// (then every `net.ipv4.tcp_keepalive_intvl`, 75 s by default), so a NAT gateway, which
    /// drops a flow idle for 350 s, keeps a long synchronous Invoke open. 0 turns it off.
    /// Env `FLEET_TCP_KEEPALIVE_SECS`.
    pub tcp_keepalive_secs: u64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            tcp_keepalive_secs: 60,
        }
    }
}

impl AwsConfig {
    /// The keepalive idle time, `None` when off.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        (self.tcp_keepalive_secs > 0).then(|| Duration::from_secs(self.tcp_keepalive_secs))
    }

    /// The settings from the environment alone (for processes without a configuration
    /// file, such as the job runtime); a malformed value is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut c = Config::default();
        env::apply(
            &mut c,
            |var| std::env::var(var).ok(),
            |key| key.starts_with("aws."),
        )?;
        c.aws.validate()?;
        Ok(c.aws)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.tcp_keepalive_secs > 7200 {
            return Err(invalid(
                "aws.tcp_keepalive_secs",
                "must be 0 (off) to 7200; under 350 keeps flows open through a NAT gateway",
            ));
        }
        Ok(())
    }
}
