//! The `[console]` table: where the console listens and how people sign in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

/// The shortest console or tap token accepted: it guards phone numbers.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The `[console]` table. The console is off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Address of the console's own listener, e.g. `127.0.0.1:9465`. Off when absent.
    pub listen: Option<SocketAddr>,
    /// The secret that opens the console: typed into its sign-in form (which sets a session
    /// cookie) or sent as `Authorization: Bearer`. At least 16 characters. Required unless
    /// `listen` is a loopback address.
    pub token: Option<String>,
    /// A source with no push for this many seconds is flagged quiet on the Live page.
    /// Default 300.
    pub quiet_after_seconds: Option<u64>,
}

/// Validated [`ConsoleConfig`] of an enabled console.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The sign-in secret; `None` only on loopback.
    pub token: Option<Arc<str>>,
    /// See [`ConsoleConfig::quiet_after_seconds`].
    pub quiet_after: Duration,
}

impl ConsoleConfig {
    /// Returns the settings of an enabled console, `None` when it is off. Refuses a console
    /// without a token on an address other than loopback.
    pub fn validate(&self) -> anyhow::Result<Option<ConsoleSettings>> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let token = validate_token("token", self.token.as_deref())?;
        if token.is_none() && !listen.ip().is_loopback() {
            bail!(
                "the console shows phone numbers: set `token` to serve it on {listen}, or listen \
                 on a loopback address"
            );
        }
        let quiet_after_seconds = self.quiet_after_seconds.unwrap_or(300);
        if quiet_after_seconds == 0 {
            bail!("`quiet_after_seconds` must be at least 1");
        }
        Ok(Some(ConsoleSettings {
            listen,
            token,
            quiet_after: Duration::from_secs(quiet_after_seconds),
        }))
    }
}

/// Checks a secret's length; returns it shared.
pub fn validate_token(field: &str, token: Option<&str>) -> anyhow::Result<Option<Arc<str>>> {
    match token {
        None => Ok(None),
        Some(token)
            if token.chars().count() < MIN_TOKEN_CHARS || token.contains(char::is_whitespace) =>
        {
            bail!("`{field}` must be at least {MIN_TOKEN_CHARS} characters, without spaces")
        }
        Some(token) => Ok(Some(Arc::from(token))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_off_by_default_and_auth_required_off_loopback() {
        assert!(ConsoleConfig::default().validate().unwrap().is_none());
        let loopback: ConsoleConfig = toml::from_str("listen = \"127.0.0.1:9465\"").unwrap();
        assert!(loopback.validate().unwrap().unwrap().token.is_none());
        let open: ConsoleConfig = toml::from_str("listen = \"0.0.0.0:9465\"").unwrap();
        let error = format!("{:#}", open.validate().unwrap_err());
        assert!(error.contains("token"), "{error}");
        let short: ConsoleConfig =
            toml::from_str("listen = \"0.0.0.0:9465\"\ntoken = \"short\"").unwrap();
        assert!(short.validate().is_err());
        let good: ConsoleConfig =
            toml::from_str("listen = \"0.0.0.0:9465\"\ntoken = \"0123456789abcdef\"").unwrap();
        assert!(good.validate().unwrap().is_some());
        assert!(toml::from_str::<ConsoleConfig>("password = \"x\"").is_err());
    }
}
