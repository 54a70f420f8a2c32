//! The SQLite sink's configuration and its validation into [`SqliteSinkSettings`].
//!
//! There is deliberately no `synchronous` knob: the sink always runs WAL with
//! `synchronous=NORMAL` and syncs before the raw log may release records (see the module docs
//! of [`super`] for why that keeps the exactly-once guarantee across a power loss).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Result, SqliteSinkError};

/// The database file name inside the data directory when `path` is not set.
pub const DEFAULT_DATABASE_FILE: &str = "callhook.db";

/// The longest `busy_timeout_ms` accepted (10 minutes).
const MAX_BUSY_TIMEOUT_MS: u64 = 600_000;

/// The largest `call_cache_calls` accepted.
const MAX_CALL_CACHE_CALLS: usize = 10_000_000;

/// `[sinks.sqlite]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteSinkConfig {
    /// Whether the normalizer writes this database. Default true; `false` leaves only the
    /// PostgreSQL sink (`[sink.postgres]`), which must then be configured.
    pub enabled: bool,
    /// The database file. A relative path is taken relative to the data directory; when
    /// absent, the file is `<data-dir>/callhook.db`.
    pub path: Option<PathBuf>,
    /// How long a statement waits for a lock held by another connection (an operator's
    /// write, a backup) before failing with a retryable error, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Obsolete, accepted and ignored: a re-delivered push is recognised by its events'
    /// deterministic ids, however late it comes, so there is no window any more.
    pub dedupe_window_hours: Option<u64>,
    /// How many calls' `calls` folds are kept in memory (1–4 KB each, most of it the merged
    /// correlation keys), so that a new event of a recent call updates its row without
    /// reading the call's events back. Default 1 000: the calls in progress at once at a busy
    /// contact center; a call that fell out is folded again from its stored events.
    pub call_cache_calls: usize,
}

impl Default for SqliteSinkConfig {
    fn default() -> Self {
        SqliteSinkConfig {
            enabled: true,
            path: None,
            busy_timeout_ms: 5_000,
            dedupe_window_hours: None,
            call_cache_calls: 1_000,
        }
    }
}

/// A validated [`SqliteSinkConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSinkSettings {
    /// The database file.
    pub path: PathBuf,
    /// SQLite's busy timeout.
    pub busy_timeout: Duration,
    /// See [`SqliteSinkConfig::call_cache_calls`].
    pub call_cache_calls: NonZeroUsize,
}

impl SqliteSinkConfig {
    /// Checks the config and resolves the database path against `data_dir`, without I/O.
    pub fn validate(&self, data_dir: &Path) -> Result<SqliteSinkSettings> {
        let path = match &self.path {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(SqliteSinkError::InvalidConfig("`path` is empty".to_owned()));
            }
            Some(path) => data_dir.join(path),
            None => data_dir.join(DEFAULT_DATABASE_FILE),
        };
        if self.busy_timeout_ms > MAX_BUSY_TIMEOUT_MS {
            return Err(SqliteSinkError::InvalidConfig(format!(
                "`busy_timeout_ms` is {} (at most {MAX_BUSY_TIMEOUT_MS})",
                self.busy_timeout_ms
            )));
        }
        let call_cache_calls = NonZeroUsize::new(self.call_cache_calls)
            .filter(|calls| calls.get() <= MAX_CALL_CACHE_CALLS)
            .ok_or_else(|| {
                SqliteSinkError::InvalidConfig(format!(
                    "`call_cache_calls` is {} (1 to {MAX_CALL_CACHE_CALLS})",
                    self.call_cache_calls
                ))
            })?;
        Ok(SqliteSinkSettings {
            path,
            busy_timeout: Duration::from_millis(self.busy_timeout_ms),
            call_cache_calls,
        })
    }
}

impl SqliteSinkSettings {
    /// Returns the default settings for the database file `path`.
    pub fn for_path(path: impl Into<PathBuf>) -> SqliteSinkSettings {
        let defaults = SqliteSinkConfig::default();
        SqliteSinkSettings {
            path: path.into(),
            busy_timeout: Duration::from_millis(defaults.busy_timeout_ms),
            call_cache_calls: NonZeroUsize::new(defaults.call_cache_calls)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_path_is_callhook_db_in_data_dir() {
        let settings = SqliteSinkConfig::default()
            .validate(Path::new("/var/lib/callhook"))
            .unwrap();
        assert_eq!(settings.path, Path::new("/var/lib/callhook/callhook.db"));
        assert_eq!(settings.busy_timeout, Duration::from_millis(5_000));
    }

    #[test]
    fn test_relative_path_resolves_against_data_dir_and_absolute_is_kept() {
        let relative = SqliteSinkConfig {
            path: Some("db/x.db".into()),
            ..Default::default()
        };
        assert_eq!(
            relative.validate(Path::new("/data")).unwrap().path,
            Path::new("/data/db/x.db")
        );
        let absolute = SqliteSinkConfig {
            path: Some("/srv/x.db".into()),
            ..Default::default()
        };
        assert_eq!(
            absolute.validate(Path::new("/data")).unwrap().path,
            Path::new("/srv/x.db")
        );
    }

    #[test]
    fn test_out_of_range_values_are_rejected() {
        let no_calls = SqliteSinkConfig {
            call_cache_calls: 0,
            ..Default::default()
        };
        assert!(matches!(
            no_calls.validate(Path::new("/d")),
            Err(SqliteSinkError::InvalidConfig(_))
        ));
        let long_busy = SqliteSinkConfig {
            busy_timeout_ms: 600_001,
            ..Default::default()
        };
        assert!(matches!(
            long_busy.validate(Path::new("/d")),
            Err(SqliteSinkError::InvalidConfig(_))
        ));
        let empty = SqliteSinkConfig {
            path: Some(PathBuf::new()),
            ..Default::default()
        };
        assert!(matches!(
            empty.validate(Path::new("/d")),
            Err(SqliteSinkError::InvalidConfig(_))
        ));
    }

    #[test]
    fn test_unknown_fields_are_rejected_and_missing_fields_default() {
        let parsed: SqliteSinkConfig = serde_json::from_str(r#"{"busy_timeout_ms": 10}"#).unwrap();
        assert_eq!(
            parsed,
            SqliteSinkConfig {
                busy_timeout_ms: 10,
                ..Default::default()
            }
        );
        let unknown = serde_json::from_str::<SqliteSinkConfig>(r#"{"synchronous": "off"}"#);
        assert!(unknown.is_err());
    }
}
