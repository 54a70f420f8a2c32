//! Receiver configuration: the `[ingest]` table, per-source settings, and their validation.
//!
//! Config structs are what TOML holds; [`IngestConfig::validate`] and [`SourceSettings::new`]
//! turn them into typed runtime values (durations, non-zero counts, header names) without I/O,
//! so a bad config fails at startup with a message naming the field, never at request time.

use std::num::NonZeroUsize;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::auth::SourceAuth;
use crate::rate_limit::RateLimit;

/// The default body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The largest body limit accepted by validation: bodies are buffered whole in memory.
pub const MAX_BODY_BYTES_CEILING: u64 = 64 * 1024 * 1024;
/// The default request head limit: 32 KiB (nginx's default allows 4 header lines of 8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// The smallest head limit accepted by validation.
const MIN_HEADER_BYTES: usize = 1024;
/// The largest head limit accepted by validation: every connection may buffer this much.
const MAX_HEADER_BYTES_CEILING: usize = 1024 * 1024;
/// Headers that carry credentials and must never be copied into the raw log.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "authentication",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// The header that marks records callhook appends itself (`x-callhook-origin`): never copied
/// from a request.
pub const RESERVED_ORIGIN_HEADER: &str = "x-callhook-origin";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A numeric field is outside its allowed range.
    #[error("`{field}` must be {expected}, got {value}")]
    OutOfRange {
        /// The TOML field name.
        field: &'static str,
        /// What the field accepts.
        expected: &'static str,
        /// The value found.
        value: u64,
    },
    /// A header name in `selected_headers` is not a valid HTTP header name.
    #[error("`selected_headers` entry `{0}` is not a valid header name")]
    BadHeaderName(String),
    /// `selected_headers` names a header that carries credentials.
    #[error("`selected_headers` entry `{0}` carries credentials and is never stored")]
    SecretHeader(String),
    /// `selected_headers` names the header callhook marks its own raw records with.
    #[error("`selected_headers` entry `{0}` is reserved for callhook's own records (reconciliation backfills, stale notices)")]
    ReservedHeader(String),
    /// A source name cannot be used as a path segment or metric label.
    #[error("source name `{0}` must be 1-64 characters of [A-Za-z0-9_.-] and not start with `_`")]
    BadSourceName(String),
    /// An auth setting is invalid.
    #[error("auth `{field}`: {problem}")]
    Auth {
        /// The TOML field name, e.g. `hmac.secret`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result alias for configuration validation.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// The `[ingest]` table: limits and timeouts of the HTTP receiver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body accepted, in bytes, for sources without their own limit.
    /// Larger bodies are refused with `413` and nothing is stored. Default 1 MiB.
    pub max_body_bytes: u64,
    /// Longest time, in milliseconds, to receive a whole request body once the headers are in.
    /// A slower client gets `408` and nothing is stored. Default 10 000.
    pub body_read_timeout_ms: u64,
    /// Longest time, in milliseconds, to receive a request's headers; after it the connection
    /// is closed. Default 10 000.
    pub header_read_timeout_ms: u64,
    /// Most connections open at once. When all are taken, the connection that has waited
    /// longest for a request (none sent yet, or idle between keep-alive requests) is closed to
    /// make room; when every connection has a request in progress, the receiver stops
    /// accepting and further connections wait in the kernel's listen backlog. Default 1024.
    pub max_connections: usize,
    /// Most connections open at once from one client address (an IPv4 address, or an IPv6
    /// /64 prefix). A new connection from an address at its limit closes that address's
    /// longest-idle connection, or is refused (closed at once) when all of them have a request
    /// in progress. Behind a proxy that hides client addresses, set it to `max_connections`.
    /// Default 256.
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers), in bytes. A larger head is answered
    /// `431` and the connection closed; it also bounds each connection's read buffer.
    /// Between 1024 and 1048576. Default 32768 (32 KiB).
    pub max_header_bytes: usize,
    /// Longest time, in milliseconds, a response may wait for the client to read it before
    /// the connection is closed (a client that sends but never reads). Default 10 000.
    pub response_write_timeout_ms: u64,
    /// When a new connection finds every place taken (or its address at its limit), a
    /// connection whose request head has been arriving for longer than this, in milliseconds,
    /// is closed to make room, before any idle one (a slowloris, possibly spread over many
    /// addresses; vendors send a head in one packet, right behind the connection's handshake).
    /// Requests the handler already has are never closed. Default 100: with 1000, a slowloris
    /// spread over 64 addresses kept new connections waiting so long that a well-behaved
    /// client making a connection per push got almost nothing through (`bench/src/bin/abuse.rs`).
    pub header_read_timeout_at_capacity_ms: u64,
    /// Request headers (case-insensitive names) copied into each raw record. Credential headers
    /// (`authorization`, `authentication`, `cookie`, ...) are refused. Default: `content-type`,
    /// `user-agent`, `x-forwarded-for`, `x-real-ip`, `webhook-id`, `webhook-timestamp`,
    /// `x-request-id`.
    pub selected_headers: Vec<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_read_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            response_write_timeout_ms: 10_000,
            header_read_timeout_at_capacity_ms: 100,
            selected_headers: [
                "content-type",
                "user-agent",
                "x-forwarded-for",
                "x-real-ip",
                "webhook-id",
                "webhook-timestamp",
                "x-request-id",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Validated [`IngestConfig`].
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub(crate) max_body_bytes: u64,
    pub(crate) body_read_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: NonZeroUsize,
    pub(crate) max_connections_per_ip: NonZeroUsize,
    pub(crate) max_header_bytes: usize,
    pub(crate) response_write_timeout: Duration,
    pub(crate) header_read_timeout_at_capacity: Duration,
    pub(crate) selected_headers: Vec<HeaderName>,
}

impl IngestSettings {
    /// Returns the most connections served at once.
    pub fn max_connections(&self) -> NonZeroUsize {
        self.max_connections
    }
}

impl IngestConfig {
    /// Checks every field and returns the typed runtime settings.
    pub fn validate(&self) -> Result<IngestSettings> {
        let max_body_bytes = validate_body_limit("max_body_bytes", self.max_body_bytes)?;
        let body_read_timeout = validate_ms("body_read_timeout_ms", self.body_read_timeout_ms)?;
        let header_read_timeout =
            validate_ms("header_read_timeout_ms", self.header_read_timeout_ms)?;
        let max_connections = validate_count("max_connections", self.max_connections)?;
        let max_connections_per_ip =
            validate_count("max_connections_per_ip", self.max_connections_per_ip)?;
        let max_header_bytes = validate_header_limit(self.max_header_bytes)?;
        let response_write_timeout =
            validate_ms("response_write_timeout_ms", self.response_write_timeout_ms)?;
        let header_read_timeout_at_capacity = validate_ms(
            "header_read_timeout_at_capacity_ms",
            self.header_read_timeout_at_capacity_ms,
        )?;
        let selected_headers = self
            .selected_headers
            .iter()
            .map(|name| validate_selected_header(name))
            .collect::<Result<Vec<_>>>()?;
        Ok(IngestSettings {
            max_body_bytes,
            body_read_timeout,
            header_read_timeout,
            max_connections,
            max_connections_per_ip,
            max_header_bytes,
            response_write_timeout,
            header_read_timeout_at_capacity,
            selected_headers,
        })
    }
}

fn validate_body_limit(field: &'static str, value: u64) -> Result<u64> {
    if value == 0 || value > MAX_BODY_BYTES_CEILING {
        return Err(ConfigError::OutOfRange {
            field,
            expected: "between 1 and 67108864 (64 MiB)",
            value,
        });
    }
    Ok(value)
}

fn validate_count(field: &'static str, value: usize) -> Result<NonZeroUsize> {
    NonZeroUsize::new(value).ok_or(ConfigError::OutOfRange {
        field,
        expected: "at least 1",
        value: 0,
    })
}

fn validate_header_limit(value: usize) -> Result<usize> {
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES_CEILING).contains(&value) {
        return Err(ConfigError::OutOfRange {
            field: "max_header_bytes",
            expected: "between 1024 and 1048576 (1 MiB)",
            value: u64::try_from(value).unwrap_or(u64::MAX),
        });
    }
    Ok(value)
}

fn validate_ms(field: &'static str, value: u64) -> Result<Duration> {
    // An hour is far beyond any sane read timeout; the ceiling catches unit mistakes (µs, ns).
    if value == 0 || value > 3_600_000 {
        return Err(ConfigError::OutOfRange {
            field,
            expected: "between 1 and 3600000 milliseconds",
            value,
        });
    }
    Ok(Duration::from_millis(value))
}

fn validate_selected_header(name: &str) -> Result<HeaderName> {
    let header = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::BadHeaderName(name.to_owned()))?;
    if SECRET_HEADERS.contains(&header.as_str()) {
        return Err(ConfigError::SecretHeader(name.to_owned()));
    }
    // A vendor must not be able to make its push look like a record callhook appended itself
    // (a stale notice is mapped by callhook's own mapper).
    if header.as_str() == RESERVED_ORIGIN_HEADER {
        return Err(ConfigError::ReservedHeader(name.to_owned()));
    }
    Ok(header)
}

/// Runtime settings of one configured source: its auth, an optional own body limit and an
/// optional rate limit.
#[derive(Debug, Clone, Default)]
pub struct SourceSettings {
    pub(crate) auth: SourceAuth,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) rate_limit: Option<RateLimit>,
}

impl SourceSettings {
    /// Builds a source's settings. `max_body_bytes` (TOML `sources.<name>.max_body_bytes`, in
    /// bytes) overrides `[ingest] max_body_bytes` for this source when set.
    pub fn new(auth: SourceAuth, max_body_bytes: Option<u64>) -> Result<Self> {
        let max_body_bytes = max_body_bytes
            .map(|limit| validate_body_limit("sources.<name>.max_body_bytes", limit))
            .transpose()?;
        Ok(Self {
            auth,
            max_body_bytes,
            rate_limit: None,
        })
    }

    /// Sets the source's rate limit (`sources.<name>.rate_limit`); `None` leaves it off.
    pub fn with_rate_limit(mut self, rate_limit: Option<RateLimit>) -> Self {
        self.rate_limit = rate_limit;
        self
    }
}

/// Checks that a source name is usable as a path segment and a bounded metric label.
pub(crate) fn validate_source_name(name: &str) -> Result<()> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name.is_empty() || name.len() > 64 || !valid_chars || name.starts_with('_') {
        return Err(ConfigError::BadSourceName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_defaults_validate() {
        let settings = IngestConfig::default().validate().unwrap();
        assert_eq!(settings.max_body_bytes, 1024 * 1024);
        assert_eq!(settings.body_read_timeout, Duration::from_secs(10));
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_connections.get(), 1024);
        assert_eq!(settings.max_connections_per_ip.get(), 256);
        assert_eq!(settings.max_header_bytes, 32 * 1024);
        assert_eq!(settings.response_write_timeout, Duration::from_secs(10));
        assert_eq!(
            settings.header_read_timeout_at_capacity,
            Duration::from_millis(100)
        );
        assert!(settings
            .selected_headers
            .iter()
            .any(|h| h.as_str() == "webhook-id"));
    }

    #[test]
    fn test_toml_fields_and_unknown_field() {
        let config: IngestConfig =
            toml::from_str("max_body_bytes = 2048\nselected_headers = [\"User-Agent\"]").unwrap();
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.body_read_timeout_ms, 10_000);
        let settings = config.validate().unwrap();
        assert_eq!(settings.selected_headers[0].as_str(), "user-agent");
        assert!(toml::from_str::<IngestConfig>("max_body = 1").is_err());
    }

    #[test]
    fn test_rejects_zero_and_secret_headers() {
        let zero = IngestConfig {
            max_connections: 0,
            ..IngestConfig::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(ConfigError::OutOfRange {
                field: "max_connections",
                ..
            })
        ));
        let secret = IngestConfig {
            selected_headers: vec!["Authorization".into()],
            ..IngestConfig::default()
        };
        assert_eq!(
            secret.validate().unwrap_err(),
            ConfigError::SecretHeader("Authorization".into())
        );
        let reserved = IngestConfig {
            selected_headers: vec!["X-Callhook-Origin".into()],
            ..IngestConfig::default()
        };
        assert_eq!(
            reserved.validate().unwrap_err(),
            ConfigError::ReservedHeader("X-Callhook-Origin".into())
        );
        let huge = IngestConfig {
            max_body_bytes: MAX_BODY_BYTES_CEILING + 1,
            ..IngestConfig::default()
        };
        assert!(huge.validate().is_err());
        for (per_ip, header_bytes, field) in [
            (0, DEFAULT_MAX_HEADER_BYTES, "max_connections_per_ip"),
            (1, MIN_HEADER_BYTES - 1, "max_header_bytes"),
            (1, MAX_HEADER_BYTES_CEILING + 1, "max_header_bytes"),
        ] {
            let config = IngestConfig {
                max_connections_per_ip: per_ip,
                max_header_bytes: header_bytes,
                ..IngestConfig::default()
            };
            assert!(
                matches!(config.validate(), Err(ConfigError::OutOfRange { field: f, .. }) if f == field),
                "{field}"
            );
        }
    }

    #[test]
    fn test_source_names() {
        for good in ["7moor", "coocenter", "uin_call-2.x"] {
            assert!(validate_source_name(good).is_ok(), "{good}");
        }
        for bad in ["", "_unknown", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_source_name(bad).is_err(), "{bad}");
        }
    }
}
