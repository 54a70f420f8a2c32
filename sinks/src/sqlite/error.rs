//! The SQLite sink's error type.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// Why the SQLite sink could not open, commit or read. A failed commit has written nothing.
#[derive(Debug, thiserror::Error)]
pub enum SqliteSinkError {
    /// The configuration is unusable.
    #[error("invalid sqlite sink config: {0}")]
    InvalidConfig(String),
    /// The directory that should hold the database cannot be created.
    #[error("cannot create directory `{path}`: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database file cannot be opened or configured.
    #[error("cannot open database `{path}`: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer callhook whose schema this build does not know.
    #[error("database schema version {found} is newer than the {supported} this build knows")]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build migrates to.
        supported: i64,
    },
    /// A statement failed; the transaction it was part of was rolled back.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An event could not be encoded as JSON.
    #[error("cannot encode event `{id}`: {source}")]
    Encode {
        /// The event id.
        id: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A stored row cannot be read back (written by another program, or corrupted).
    #[error("stored row in `{table}` is unreadable: {detail}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The database files could not be synced to disk.
    #[error("cannot sync `{path}` to disk: {source}")]
    Sync {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The thread that checkpoints the database's WAL could not be started.
    #[error("cannot start the checkpoint thread of `{path}`: {source}")]
    CheckpointThread {
        /// The database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A number in the batch does not fit SQLite's signed 64-bit integers.
    #[error("`{field}` value {value} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
}

impl SqliteSinkError {
    /// Returns true when retrying the same call may succeed (the database was busy or locked,
    /// the disk was full or failed); false for errors that retrying the same input cannot fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            SqliteSinkError::Sqlite(error) | SqliteSinkError::Open { source: error, .. } => {
                matches!(
                    error.sqlite_error_code(),
                    Some(
                        ErrorCode::DatabaseBusy
                            | ErrorCode::DatabaseLocked
                            | ErrorCode::SystemIoFailure
                            | ErrorCode::DiskFull
                            | ErrorCode::CannotOpen
                            | ErrorCode::OutOfMemory
                    )
                )
            }
            SqliteSinkError::CreateDir { .. }
            | SqliteSinkError::Sync { .. }
            | SqliteSinkError::CheckpointThread { .. } => true,
            SqliteSinkError::InvalidConfig(_)
            | SqliteSinkError::SchemaTooNew { .. }
            | SqliteSinkError::Encode { .. }
            | SqliteSinkError::CorruptRow { .. }
            | SqliteSinkError::OutOfRange { .. } => false,
        }
    }
}

/// The SQLite sink's result type.
pub type Result<T> = std::result::Result<T, SqliteSinkError>;
