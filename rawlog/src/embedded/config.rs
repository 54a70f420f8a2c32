//! Configuration of the embedded raw log: the serde struct read from `[log.embedded]` and its
//! validation into typed settings.
//!
//! Validation does no I/O: it only checks ranges and fills in the default path, so a config file
//! can be checked (`callhook check-config`) without touching the data directory.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file name used under the data directory when `path` is not set.
pub const DEFAULT_FILE_NAME: &str = "rawlog.db";

/// Days consumed records are kept when neither `retention_days` nor `retention_hours` is set.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// Records per compacted segment by default: large enough for zstd to find the repetition
/// between pushes, small enough that reading one record decompresses about a megabyte.
pub const DEFAULT_COMPACT_CHUNK_RECORDS: usize = 1000;

/// The largest partition count accepted (a sanity bound: every partition is a row and a
/// wake-up target, and a typo like `40000` should be caught).
pub const MAX_PARTITIONS: u32 = 1024;

/// The longest SQLite busy timeout accepted, in milliseconds.
pub const MAX_BUSY_TIMEOUT_MS: u64 = 60_000;

/// Why an [`EmbeddedLogConfig`] was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A field is out of its allowed range.
    #[error("`log.embedded.{field}` {reason}")]
    InvalidField {
        /// The TOML field name.
        field: &'static str,
        /// What is wrong with it (lowercase, no trailing period).
        reason: String,
    },
}

/// The result type of config validation.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// Which SQLite consistency check runs when the log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrityCheck {
    /// `PRAGMA quick_check`: verifies page structure, not index contents (O(size), fast).
    #[default]
    Quick,
    /// `PRAGMA integrity_check`: also verifies that every index matches its table (slower).
    Full,
    /// No SQLite check; the offset bookkeeping is still verified.
    Off,
}

/// The `[log.embedded]` section of the binary's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedLogConfig {
    /// Path of the SQLite file. When absent, `<data-dir>/rawlog.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Number of partitions; a record goes to `fnv1a64(key) % partitions`. Cannot change once
    /// the file exists (it would move keys between partitions and break per-key order).
    pub partitions: u32,
    /// Appends that may wait for the writer; one more is refused with `Overloaded` (503).
    pub max_pending_appends: usize,
    /// Most records written by one group commit (one transaction, one fsync).
    pub max_batch_records: usize,
    /// Most records the log may hold past the lowest committed offset of all consumer groups,
    /// summed over partitions; past it appends are refused with `Overloaded` (503). This is
    /// what bounds the disk when consumers stall, since retention never deletes unconsumed data.
    pub max_unconsumed_records: u64,
    /// Records consumed by every group are deleted once their `received_at` is older than this
    /// many days; `0` keeps consumed records forever. Default 30 when `retention_hours` is not
    /// set either.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u64>,
    /// The same age in hours, as an explicit override of `retention_days` (setting both is an
    /// error). Unlike days, `0` deletes consumed records at the next pass (what the Kafka-mode
    /// spool does by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_hours: Option<u64>,
    /// Also delete consumed records beyond the newest this-many per partition, whatever their
    /// age. Absent: no count limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_records: Option<u64>,
    /// How often the writer thread applies retention and compaction, in milliseconds.
    pub retention_check_interval_ms: u64,
    /// Compact consumed records: move them, `compact_chunk_records` at a time, into
    /// zstd-compressed segments that every reader reads as before (about 10x less disk on
    /// realistic pushes). Unconsumed records are never compacted.
    pub compact: bool,
    /// Records per compacted segment; a partition is compacted only by whole chunks.
    pub compact_chunk_records: usize,
    /// The SQLite check run on open: `quick`, `full` or `off`.
    pub integrity_check: IntegrityCheck,
    /// How long a connection waits for the SQLite write lock before failing, in milliseconds.
    pub busy_timeout_ms: u64,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        Self {
            path: None,
            partitions: 1,
            max_pending_appends: 10_000,
            max_batch_records: 512,
            max_unconsumed_records: 5_000_000,
            retention_days: None,
            retention_hours: None,
            retention_max_records: None,
            retention_check_interval_ms: 60_000,
            compact: true,
            compact_chunk_records: DEFAULT_COMPACT_CHUNK_RECORDS,
            integrity_check: IntegrityCheck::Quick,
            busy_timeout_ms: 5_000,
        }
    }
}

/// Validated, typed settings for [`super::EmbeddedLog::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedLogSettings {
    /// The SQLite file.
    pub path: PathBuf,
    /// Number of partitions.
    pub partitions: NonZeroU32,
    /// Capacity of the append queue.
    pub max_pending_appends: NonZeroUsize,
    /// Most records per group commit.
    pub max_batch_records: NonZeroUsize,
    /// Bound on records past the lowest committed offsets.
    pub max_unconsumed_records: NonZeroU64,
    /// Age past which consumed records are deleted; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Count per partition past which consumed records are deleted.
    pub retention_max_records: Option<u64>,
    /// Period of the retention and compaction passes.
    pub retention_check_interval: Duration,
    /// Records per compacted segment; `None` when compaction is off.
    pub compact_chunk_records: Option<NonZeroUsize>,
    /// The check run on open.
    pub integrity_check: IntegrityCheck,
    /// SQLite busy timeout.
    pub busy_timeout: Duration,
}

impl EmbeddedLogConfig {
    /// Returns typed settings, with `path` defaulting to `<data_dir>/rawlog.db`. Does no I/O.
    pub fn validate(&self, data_dir: &Path) -> Result<EmbeddedLogSettings> {
        let path = match &self.path {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(invalid("path", "must not be empty".to_owned()))
            }
            Some(path) => path.clone(),
            None => data_dir.join(DEFAULT_FILE_NAME),
        };
        let partitions = NonZeroU32::new(self.partitions)
            .filter(|count| count.get() <= MAX_PARTITIONS)
            .ok_or_else(|| {
                invalid(
                    "partitions",
                    format!("must be between 1 and {MAX_PARTITIONS}"),
                )
            })?;
        let retention = self.retention()?;
        if self.retention_check_interval_ms == 0 {
            return Err(invalid(
                "retention_check_interval_ms",
                "must be at least 1".to_owned(),
            ));
        }
        if self.busy_timeout_ms == 0 || self.busy_timeout_ms > MAX_BUSY_TIMEOUT_MS {
            return Err(invalid(
                "busy_timeout_ms",
                format!("must be between 1 and {MAX_BUSY_TIMEOUT_MS}"),
            ));
        }
        Ok(EmbeddedLogSettings {
            path,
            partitions,
            max_pending_appends: non_zero_usize("max_pending_appends", self.max_pending_appends)?,
            max_batch_records: non_zero_usize("max_batch_records", self.max_batch_records)?,
            max_unconsumed_records: NonZeroU64::new(self.max_unconsumed_records).ok_or_else(
                || invalid("max_unconsumed_records", "must be at least 1".to_owned()),
            )?,
            retention,
            retention_max_records: self.retention_max_records,
            retention_check_interval: Duration::from_millis(self.retention_check_interval_ms),
            compact_chunk_records: match self.compact {
                true => Some(non_zero_usize(
                    "compact_chunk_records",
                    self.compact_chunk_records,
                )?),
                false => None,
            },
            integrity_check: self.integrity_check,
            busy_timeout: Duration::from_millis(self.busy_timeout_ms),
        })
    }

    /// Returns the retention age from `retention_days` or its `retention_hours` override.
    fn retention(&self) -> Result<Option<Duration>> {
        let hours = match (self.retention_days, self.retention_hours) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "retention_days",
                    "and `log.embedded.retention_hours` are both set; set one".to_owned(),
                ))
            }
            (Some(0), None) => return Ok(None),
            (Some(days), None) => days
                .checked_mul(24)
                .ok_or_else(|| invalid("retention_days", "is too large".to_owned()))?,
            (None, Some(hours)) => hours,
            (None, None) => DEFAULT_RETENTION_DAYS * 24,
        };
        let field = match self.retention_days {
            Some(_) => "retention_days",
            None => "retention_hours",
        };
        let seconds = hours
            .checked_mul(3600)
            .filter(|seconds| i64::try_from(seconds.saturating_mul(1000)).is_ok())
            .ok_or_else(|| invalid(field, "is too large".to_owned()))?;
        Ok(Some(Duration::from_secs(seconds)))
    }
}

fn non_zero_usize(field: &'static str, value: usize) -> Result<NonZeroUsize> {
    NonZeroUsize::new(value).ok_or_else(|| invalid(field, "must be at least 1".to_owned()))
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::InvalidField { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_config_validates_with_path_under_data_dir() {
        let settings = EmbeddedLogConfig::default()
            .validate(Path::new("/var/lib/callhook"))
            .unwrap();
        assert_eq!(settings.path, PathBuf::from("/var/lib/callhook/rawlog.db"));
        assert_eq!(settings.partitions.get(), 1);
        assert_eq!(
            settings.retention,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(settings.max_batch_records.get(), 512);
    }

    #[test]
    fn test_toml_section_parses_and_rejects_unknown_fields() {
        let config: EmbeddedLogConfig = toml::from_str(
            "path = \"/data/log.db\"\npartitions = 4\nretention_max_records = 10\nintegrity_check = \"full\"\n",
        )
        .unwrap();
        assert_eq!(config.path.as_deref(), Some(Path::new("/data/log.db")));
        assert_eq!(config.partitions, 4);
        assert_eq!(config.retention_max_records, Some(10));
        assert_eq!(config.integrity_check, IntegrityCheck::Full);
        assert_eq!(config.max_pending_appends, 10_000);
        let unknown = toml::from_str::<EmbeddedLogConfig>("max_batch = 3\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn test_retention_days_zero_keeps_forever_and_hours_override() {
        let data_dir = Path::new("/data");
        let retention = |toml_text: &str| {
            toml::from_str::<EmbeddedLogConfig>(toml_text)
                .unwrap()
                .validate(data_dir)
                .map(|settings| settings.retention)
        };
        assert_eq!(retention("retention_days = 0\n"), Ok(None));
        assert_eq!(
            retention("retention_days = 2\n"),
            Ok(Some(Duration::from_secs(2 * 24 * 3600)))
        );
        assert_eq!(
            retention("retention_hours = 5\n"),
            Ok(Some(Duration::from_secs(5 * 3600)))
        );
        assert_eq!(retention("retention_hours = 0\n"), Ok(Some(Duration::ZERO)));
        let both = retention("retention_days = 1\nretention_hours = 24\n").unwrap_err();
        let text = both.to_string();
        assert!(
            text.contains("retention_days") && text.contains("retention_hours"),
            "{text}"
        );
    }

    #[test]
    fn test_validation_rejects_out_of_range_values() {
        let data_dir = Path::new("/data");
        let cases: Vec<(EmbeddedLogConfig, &str)> = vec![
            (
                EmbeddedLogConfig {
                    partitions: 0,
                    ..Default::default()
                },
                "partitions",
            ),
            (
                EmbeddedLogConfig {
                    partitions: MAX_PARTITIONS + 1,
                    ..Default::default()
                },
                "partitions",
            ),
            (
                EmbeddedLogConfig {
                    max_pending_appends: 0,
                    ..Default::default()
                },
                "max_pending_appends",
            ),
            (
                EmbeddedLogConfig {
                    max_batch_records: 0,
                    ..Default::default()
                },
                "max_batch_records",
            ),
            (
                EmbeddedLogConfig {
                    max_unconsumed_records: 0,
                    ..Default::default()
                },
                "max_unconsumed_records",
            ),
            (
                EmbeddedLogConfig {
                    retention_hours: Some(u64::MAX),
                    ..Default::default()
                },
                "retention_hours",
            ),
            (
                EmbeddedLogConfig {
                    retention_days: Some(u64::MAX / 2),
                    ..Default::default()
                },
                "retention_days",
            ),
            (
                EmbeddedLogConfig {
                    retention_days: Some(30),
                    retention_hours: Some(0),
                    ..Default::default()
                },
                "retention_days",
            ),
            (
                EmbeddedLogConfig {
                    retention_check_interval_ms: 0,
                    ..Default::default()
                },
                "retention_check_interval_ms",
            ),
            (
                EmbeddedLogConfig {
                    busy_timeout_ms: 0,
                    ..Default::default()
                },
                "busy_timeout_ms",
            ),
            (
                EmbeddedLogConfig {
                    path: Some(PathBuf::new()),
                    ..Default::default()
                },
                "path",
            ),
        ];
        for (config, expected_field) in cases {
            match config.validate(data_dir) {
                Err(ConfigError::InvalidField { field, .. }) => assert_eq!(field, expected_field),
                Ok(_) => panic!("`{expected_field}` out of range was accepted"),
            }
        }
    }
}
