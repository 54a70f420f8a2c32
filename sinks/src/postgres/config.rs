//! The PostgreSQL sink's configuration (`[sink.postgres]`) and its validation into
//! [`PostgresSinkSettings`], without I/O.
//!
//! There is no `pool_size`: one normalizer loop commits one batch at a time, so it holds one
//! connection (and its rebalance callback a second one, in Kafka mode). More processes, not
//! more connections per process, is how the sink scales; a pool would only add idle
//! connections.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{PostgresSinkError, Result};

/// The longest `statement_timeout_ms` and `connect_timeout_ms` accepted (10 minutes).
const MAX_TIMEOUT_MS: u64 = 600_000;

/// `[sink.postgres]` in the config file. The sink is on when `url` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSinkConfig {
    /// The connection URL, `postgres://user:password@host:port/database` (libpq's URL and
    /// `key=value` forms both work). Unset: no PostgreSQL sink.
    pub url: Option<String>,
    /// TLS: `disable`, `prefer` (default: TLS when the server offers it) or `require`. When
    /// TLS is used, the server's certificate is always verified (name and chain) against
    /// `ca_file`, or the Mozilla roots when it is unset; unlike libpq's `require`, an
    /// unverified certificate is never accepted.
    pub sslmode: SslMode,
    /// A PEM file of CA certificates that sign the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// How long connecting may take, in milliseconds. Default 5 000.
    pub connect_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` for the sink's connection, in milliseconds: a batch
    /// statement that runs longer fails and the batch is retried. Default 30 000.
    pub statement_timeout_ms: u64,
}

impl Default for PostgresSinkConfig {
    fn default() -> Self {
        PostgresSinkConfig {
            url: None,
            sslmode: SslMode::Prefer,
            ca_file: None,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

/// Whether the connection uses TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server offers it.
    #[default]
    Prefer,
    /// Always; the connection fails without it.
    Require,
}

/// A validated [`PostgresSinkConfig`].
#[derive(Clone)]
pub struct PostgresSinkSettings {
    /// The connection parameters (URL, TLS mode, timeouts, `statement_timeout`).
    pub connection: postgres::Config,
    /// See [`PostgresSinkConfig::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// The URL without its password, for logs.
    pub display: String,
}

impl std::fmt::Debug for PostgresSinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkSettings")
            .field("database", &self.display)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PostgresSinkConfig {
    /// Returns the settings when the sink is configured (`url` set), `None` when it is not.
    pub fn validate(&self) -> Result<Option<PostgresSinkSettings>> {
        let Some(url) = self.url.as_deref() else {
            return Ok(None);
        };
        let invalid = |detail: String| PostgresSinkError::InvalidConfig(detail);
        if url.trim().is_empty() {
            return Err(invalid("`url` is empty".to_owned()));
        }
        let mut connection = postgres::Config::from_str(url)
            .map_err(|error| invalid(format!("`url` does not parse: {error}")))?;
        if connection.get_dbname().is_none() {
            return Err(invalid("`url` names no database".to_owned()));
        }
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            if value == 0 || value > MAX_TIMEOUT_MS {
                return Err(invalid(format!(
                    "`{name}` is {value} (1 to {MAX_TIMEOUT_MS})"
                )));
            }
        }
        connection
            .ssl_mode(match self.sslmode {
                SslMode::Disable => postgres::config::SslMode::Disable,
                SslMode::Prefer => postgres::config::SslMode::Prefer,
                SslMode::Require => postgres::config::SslMode::Require,
            })
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .application_name("callhook")
            .options(&format!(
                "-c statement_timeout={}",
                self.statement_timeout_ms
            ));
        let display = display_of(&connection);
        Ok(Some(PostgresSinkSettings {
            connection,
            ca_file: self.ca_file.clone(),
            display,
        }))
    }
}

/// `user@host:port/database`, never the password.
fn display_of(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unset_url_is_no_sink_and_bad_values_are_named() {
        assert!(PostgresSinkConfig::default().validate().unwrap().is_none());
        let with = |url: &str| PostgresSinkConfig {
            url: Some(url.to_owned()),
            ..PostgresSinkConfig::default()
        };
        let settings = with("postgres://callhook:secret@db:5433/calls")
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(settings.display, "callhook@db:5433/calls");
        assert!(!format!("{settings:?}").contains("secret"));
        let error = with("postgres://db/").validate().unwrap_err().to_string();
        assert!(error.contains("database"), "{error}");
        let error = PostgresSinkConfig {
            statement_timeout_ms: 0,
            ..with("postgres://db/calls")
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("statement_timeout_ms"), "{error}");
    }
}
