//! `[sources.<name>.reconcile]`: parse (serde, unknown keys are errors) and validate (typed
//! values, no I/O).

use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{FixedOffset, TimeDelta};
use serde::Deserialize;

/// The longest span one `/openapi/v1/call/cdr/list` query may cover (seed 001, §2.13).
pub const MAX_QUERY_SPAN: TimeDelta = TimeDelta::days(7);
/// The account's documented request limit per minute (seed 001, §3).
pub const MAX_REQUESTS_PER_MINUTE: u32 = 20;
/// The largest page the API serves (error 6734: at most 10 000 records per query).
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// Why a reconcile section is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReconcileConfigError {
    /// A value is out of range or malformed.
    #[error("`{key}` {problem}")]
    Invalid {
        /// The key, as written in the file.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ReconcileConfigError {
    ReconcileConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// One `[sources.<name>.reconcile]` table (7moor sources only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Whether `serve` runs the periodic pass. `callhook reconcile` runs regardless. Default true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Base URL of the 7moor v7 open API, `http://` or `https://host[:port]` (7moor documents
    /// `http://v7openapi.7moor.com`); the path `/openapi/v1/call/cdr/list` is appended.
    pub base_url: String,
    /// The account number sent as `m7-appkey` (AK).
    pub appkey: String,
    /// The account's secret key (SK), the HMAC key of `m7-sign`. Never sent, never logged.
    pub secret: String,
    /// Seconds between two periodic passes. Default 600.
    #[serde(default = "default_interval_seconds")]
    pub interval_seconds: u64,
    /// How far back each periodic pass looks, in seconds (calls started in
    /// `[now - delay - window, now - delay]`). Default 7200 (2 h); at most 7 days.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Seconds a call's CDR is given to arrive by webhook before a pass looks for it.
    /// Default 300.
    #[serde(default = "default_delay_seconds")]
    pub delay_seconds: u64,
    /// Records per page (`pageSize`). Default 1000, at most 10 000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Requests per minute this process sends for the account, at most 20 (the account's
    /// documented limit; lower it when other clients share the account). Default 20.
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    /// Timeout of one API request, in milliseconds. Default 30 000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_enabled() -> bool {
    true
}
fn default_interval_seconds() -> u64 {
    600
}
fn default_window_seconds() -> u64 {
    7200
}
fn default_delay_seconds() -> u64 {
    300
}
fn default_page_size() -> u32 {
    1000
}
fn default_requests_per_minute() -> u32 {
    MAX_REQUESTS_PER_MINUTE
}
fn default_request_timeout_ms() -> u64 {
    30_000
}

/// A secret that does not print itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// Returns the secret's bytes, for the HMAC key.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated reconcile section, with what it needs from its source.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// The source name (the raw records' `source`, the sink's `source_name`).
    pub source: String,
    /// See [`ReconcileConfig::enabled`].
    pub enabled: bool,
    /// `scheme://authority`, without a trailing `/`.
    pub base_url: http::Uri,
    /// See [`ReconcileConfig::appkey`].
    pub appkey: String,
    /// See [`ReconcileConfig::secret`].
    pub secret: Secret,
    /// See [`ReconcileConfig::interval_seconds`].
    pub interval: Duration,
    /// See [`ReconcileConfig::window_seconds`].
    pub window: TimeDelta,
    /// See [`ReconcileConfig::delay_seconds`].
    pub delay: TimeDelta,
    /// See [`ReconcileConfig::page_size`].
    pub page_size: NonZeroU32,
    /// See [`ReconcileConfig::requests_per_minute`].
    pub requests_per_minute: NonZeroU32,
    /// See [`ReconcileConfig::request_timeout_ms`].
    pub request_timeout: Duration,
    /// The zone of the API's zone-less `yyyy-MM-dd HH:mm:ss` times (the source's `utc_offset`).
    pub utc_offset: FixedOffset,
}

impl ReconcileConfig {
    /// Checks every value; `source` and `utc_offset` come from the enclosing source.
    pub fn validate(
        &self,
        source: &str,
        utc_offset: FixedOffset,
    ) -> Result<ReconcileSettings, ReconcileConfigError> {
        let base_url = parse_base_url(&self.base_url)?;
        let appkey = self.appkey.trim();
        if appkey.is_empty() || !appkey.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(
                "appkey",
                "must be the account number (letters and digits)",
            ));
        }
        if self.secret.is_empty() {
            return Err(invalid("secret", "is empty"));
        }
        if self.interval_seconds == 0 {
            return Err(invalid("interval_seconds", "must be at least 1"));
        }
        let window = TimeDelta::seconds(i64::try_from(self.window_seconds).unwrap_or(i64::MAX));
        if self.window_seconds == 0 || window > MAX_QUERY_SPAN {
            return Err(invalid(
                "window_seconds",
                format!(
                    "must be between 1 and {} (7 days, the API's query limit)",
                    MAX_QUERY_SPAN.num_seconds()
                ),
            ));
        }
        let delay = TimeDelta::seconds(i64::try_from(self.delay_seconds).unwrap_or(i64::MAX));
        if delay > TimeDelta::days(1) {
            return Err(invalid("delay_seconds", "must be at most 86400 (1 day)"));
        }
        let page_size = NonZeroU32::new(self.page_size)
            .filter(|size| size.get() <= MAX_PAGE_SIZE)
            .ok_or_else(|| {
                invalid(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                )
            })?;
        let requests_per_minute = NonZeroU32::new(self.requests_per_minute)
            .filter(|rate| rate.get() <= MAX_REQUESTS_PER_MINUTE)
            .ok_or_else(|| {
                invalid(
                    "requests_per_minute",
                    format!(
                        "must be between 1 and {MAX_REQUESTS_PER_MINUTE} (the account's limit)"
                    ),
                )
            })?;
        if self.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be at least 1"));
        }
        Ok(ReconcileSettings {
            source: source.to_owned(),
            enabled: self.enabled,
            base_url,
            appkey: appkey.to_owned(),
            secret: Secret::new(self.secret.clone()),
            interval: Duration::from_secs(self.interval_seconds),
            window,
            delay,
            page_size,
            requests_per_minute,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            utc_offset,
        })
    }
}

/// Accepts `http://` or `https://host[:port][/]` (7moor documents `http://v7openapi.7moor.com`).
fn parse_base_url(text: &str) -> Result<http::Uri, ReconcileConfigError> {
    let trimmed = text.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| invalid("base_url", format!("`{text}` is not a URL")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid(
            "base_url",
            format!("`{text}` is not an `http://` or `https://` URL"),
        ));
    }
    if uri.authority().is_none() {
        return Err(invalid("base_url", format!("`{text}` has no host")));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            "base_url",
            format!("`{text}` must be scheme and host only (the API path is appended)"),
        ));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ReconcileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    fn china() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    const MINIMAL: &str =
        "base_url = \"http://v7openapi.7moor.com\"\nappkey = \"2000144\"\nsecret = \"sk\"\n";

    #[test]
    fn test_defaults() {
        let settings = parse(MINIMAL).unwrap().validate("7moor", china()).unwrap();
        assert!(settings.enabled);
        assert_eq!(settings.interval, Duration::from_secs(600));
        assert_eq!(settings.window, TimeDelta::hours(2));
        assert_eq!(settings.delay, TimeDelta::minutes(5));
        assert_eq!(settings.requests_per_minute.get(), 20);
        assert_eq!(settings.base_url.to_string(), "http://v7openapi.7moor.com/");
        assert_eq!(format!("{:?}", settings.secret), "Secret(***)");
    }

    #[test]
    fn test_unknown_keys_and_missing_keys_are_named() {
        let error = parse(&format!("{MINIMAL}windw = 3"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("windw"), "{error}");
        let error = parse("appkey = \"1\"\nsecret = \"s\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("base_url"), "{error}");
    }

    #[test]
    fn test_bad_values_are_explained() {
        let cases = [
            ("window_seconds = 604801", "window_seconds"),
            ("window_seconds = 0", "window_seconds"),
            ("requests_per_minute = 21", "requests_per_minute"),
            ("page_size = 10001", "page_size"),
            ("interval_seconds = 0", "interval_seconds"),
        ];
        for (line, key) in cases {
            let config = parse(&format!("{MINIMAL}{line}")).unwrap();
            let error = config.validate("7moor", china()).unwrap_err().to_string();
            assert!(error.contains(key), "{line}: {error}");
        }
        for (url, problem) in [
            ("ftp://v7openapi.7moor.com", "http://"),
            ("v7openapi.7moor.com", "http://"),
            ("http://h/openapi", "scheme and host"),
        ] {
            let text = MINIMAL.replace("http://v7openapi.7moor.com", url);
            let error = parse(&text).unwrap().validate("s", china()).unwrap_err();
            assert!(error.to_string().contains(problem), "{url}: {error}");
        }
        let text = MINIMAL.replace("secret = \"sk\"", "secret = \"\"");
        assert!(parse(&text).unwrap().validate("s", china()).is_err());
    }

    #[test]
    fn test_seven_days_is_the_longest_window() {
        let config = parse(&format!("{MINIMAL}window_seconds = 604800")).unwrap();
        assert_eq!(
            config.validate("s", china()).unwrap().window,
            MAX_QUERY_SPAN
        );
    }
}
