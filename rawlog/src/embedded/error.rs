//! Errors of the embedded raw log (opening, reading, committing offsets). Append failures are
//! [`crate::AppendError`], the shape shared with the Kafka implementation.

use std::path::PathBuf;

use super::config::ConfigError;
use crate::Position;

/// Why an embedded log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedLogError {
    /// The `[log.embedded]` config is invalid.
    #[error("invalid raw log config: {0}")]
    Config(#[from] ConfigError),
    /// The directory holding the file cannot be created.
    #[error("cannot create the directory of raw log `{path}`: {source}")]
    CreateDir {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// SQLite cannot open or set up the file.
    #[error("cannot open raw log `{path}`: {source}")]
    Open {
        /// The log file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file is not a readable SQLite database, or its checks failed.
    #[error("raw log `{path}` is corrupt: {detail}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// What the check reported.
        detail: String,
    },
    /// The file is an SQLite database of some other program.
    #[error("`{path}` is not a callhook raw log (sqlite application_id {application_id:#x})")]
    NotARawLog {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA application_id`.
        application_id: i64,
    },
    /// The file was written by a newer (or unknown) schema.
    #[error("raw log `{path}` has schema version {found}, this build reads version {supported}")]
    UnsupportedSchema {
        /// The log file.
        path: PathBuf,
        /// The version stored in the file.
        found: i64,
        /// The version this build writes.
        supported: i64,
    },
    /// The configured partition count differs from the file's.
    #[error("raw log `{path}` has {stored} partitions but the config says {configured}; the partition count cannot change")]
    PartitionCountChanged {
        /// The log file.
        path: PathBuf,
        /// Partitions in the file.
        stored: u32,
        /// Partitions in the config.
        configured: u32,
    },
    /// The writer thread could not be started.
    #[error("cannot start the raw log writer thread: {0}")]
    SpawnWriter(std::io::Error),
    /// A partition number is out of range.
    #[error("partition {partition} does not exist (the log has {partitions})")]
    UnknownPartition {
        /// The partition asked for.
        partition: u32,
        /// The partition count.
        partitions: u32,
    },
    /// A consumer tried to commit an offset past what was written.
    #[error("cannot commit offset {offset} for partition {partition}: its high watermark is {high_watermark}")]
    OffsetBeyondHighWatermark {
        /// The partition.
        partition: u32,
        /// The offset offered.
        offset: u64,
        /// The next offset to be written.
        high_watermark: u64,
    },
    /// A consumer group name was empty.
    #[error("consumer group name must not be empty")]
    EmptyGroup,
    /// The log was closed.
    #[error("raw log is closed")]
    Closed,
    /// The writer queue is full; try again later.
    #[error("raw log writer queue is full")]
    WriterBusy,
    /// A retention pass failed (the reason is the writer's error text).
    #[error("raw log retention pass failed: {0}")]
    RetentionFailed(String),
    /// A compaction pass failed (the reason is the writer's error text).
    #[error("raw log compaction failed: {0}")]
    CompactionFailed(String),
    /// zstd could not compress a chunk of records.
    #[error("cannot compress records for compaction: {0}")]
    Compress(std::io::Error),
    /// The writer thread is gone.
    #[error("raw log writer stopped")]
    WriterStopped,
    /// A stored row cannot be decoded.
    #[error("stored record `{position}` is unreadable: {detail}")]
    BadRecord {
        /// Where it sits.
        position: Position,
        /// Why it cannot be decoded.
        detail: String,
    },
    /// Any other SQLite error.
    #[error("raw log sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The result type of the embedded log.
pub type Result<T> = std::result::Result<T, EmbeddedLogError>;

impl EmbeddedLogError {
    /// Returns whether retrying the same call later may succeed (busy writer, locked or failing
    /// disk) as opposed to a caller or file problem that needs a fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            EmbeddedLogError::WriterBusy
            | EmbeddedLogError::RetentionFailed(_)
            | EmbeddedLogError::CompactionFailed(_)
            | EmbeddedLogError::Compress(_)
            | EmbeddedLogError::Sqlite(_)
            | EmbeddedLogError::Open { .. } => true,
            EmbeddedLogError::Config(_)
            | EmbeddedLogError::CreateDir { .. }
            | EmbeddedLogError::Corrupt { .. }
            | EmbeddedLogError::NotARawLog { .. }
            | EmbeddedLogError::UnsupportedSchema { .. }
            | EmbeddedLogError::PartitionCountChanged { .. }
            | EmbeddedLogError::SpawnWriter(_)
            | EmbeddedLogError::UnknownPartition { .. }
            | EmbeddedLogError::OffsetBeyondHighWatermark { .. }
            | EmbeddedLogError::EmptyGroup
            | EmbeddedLogError::Closed
            | EmbeddedLogError::WriterStopped
            | EmbeddedLogError::BadRecord { .. } => false,
        }
    }
}
