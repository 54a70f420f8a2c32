//! The PostgreSQL sink's error type, and which failures a retry can fix.

use postgres::error::SqlState;

/// Why the PostgreSQL sink could not connect, migrate, commit or read. A failed commit has
/// written nothing.
#[derive(Debug, thiserror::Error)]
pub enum PostgresSinkError {
    /// The configuration is unusable.
    #[error("invalid postgres sink config: {0}")]
    InvalidConfig(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot use the CA file `{path}`: {detail}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The database was migrated by a newer callhook whose schema this build does not know.
    #[error("database schema version {found} is newer than the {supported} this build knows")]
    SchemaTooNew {
        /// The highest version in `schema_migrations`.
        found: i64,
        /// The newest version this build migrates to.
        supported: i64,
    },
    /// A statement (or the connection) failed; its transaction was rolled back. The message
    /// already carries the client error's cause, so it is not chained as a source again.
    #[error("postgres: {}", describe(.0))]
    Postgres(postgres::Error),
    /// A stored row cannot be read back.
    #[error("stored row in `{table}` is unreadable: {detail}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A number does not fit PostgreSQL's signed 64-bit integers.
    #[error("`{field}` value {value} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
}

impl From<postgres::Error> for PostgresSinkError {
    fn from(error: postgres::Error) -> Self {
        PostgresSinkError::Postgres(error)
    }
}

/// The server's message and SQLSTATE for a database error (the client's own `Display` says
/// only `db error`), else the client's error and its cause.
fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// How a failure is counted (`callhook_sink_postgres_failures_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection is down, refused, or was lost.
    Connection,
    /// A serialization failure, a deadlock or a lock timeout: the transaction lost a race.
    Serialization,
    /// The server refused a value (SQLSTATE class 22): one record's data.
    Data,
    /// A statement timed out, or the server is short of resources or shutting down.
    Server,
    /// Anything else (a bug, a schema changed by hand).
    Other,
}

impl FailureKind {
    /// Every kind, in label order.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Connection,
        FailureKind::Serialization,
        FailureKind::Data,
        FailureKind::Server,
        FailureKind::Other,
    ];

    /// Returns the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connection => "connection",
            FailureKind::Serialization => "serialization",
            FailureKind::Data => "data",
            FailureKind::Server => "server",
            FailureKind::Other => "other",
        }
    }
}

impl PostgresSinkError {
    /// Returns what kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        let PostgresSinkError::Postgres(error) = self else {
            return FailureKind::Other;
        };
        let Some(code) = error.code() else {
            // No SQLSTATE: the connection failed or closed (I/O, TLS, a timeout connecting).
            return FailureKind::Connection;
        };
        let class = &code.code()[..2];
        if class == "08" || *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN {
            FailureKind::Connection
        } else if class == "40" || *code == SqlState::LOCK_NOT_AVAILABLE {
            FailureKind::Serialization
        } else if class == "22" {
            FailureKind::Data
        } else if class == "53"
            || class == "57"
            || class == "58"
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            FailureKind::Server
        } else {
            FailureKind::Other
        }
    }

    /// Returns true when retrying the same call may succeed: the connection, a lost race, a
    /// timeout or a server short of resources. A data error is not retryable as such: the
    /// sink dead-letters the record instead (see `sink.rs`).
    pub fn is_retryable(&self) -> bool {
        match self {
            PostgresSinkError::Postgres(_) => matches!(
                self.kind(),
                FailureKind::Connection | FailureKind::Serialization | FailureKind::Server
            ),
            PostgresSinkError::CaFile { .. } => true,
            PostgresSinkError::InvalidConfig(_)
            | PostgresSinkError::SchemaTooNew { .. }
            | PostgresSinkError::CorruptRow { .. }
            | PostgresSinkError::OutOfRange { .. } => false,
        }
    }
}

/// The PostgreSQL sink's result type.
pub type Result<T> = std::result::Result<T, PostgresSinkError>;
