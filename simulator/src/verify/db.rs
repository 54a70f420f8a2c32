//! Read-only lookups in the sink database (`callhook.db`), by primary key where possible.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// A stored `calls` row, the columns the verifier checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredCall {
    pub(crate) direction: String,
    pub(crate) disposition: Option<String>,
    pub(crate) parent_call_id: Option<String>,
}

/// A stored event received inside the run's window.
#[derive(Debug, Clone)]
pub(crate) struct WindowEvent {
    pub(crate) id: String,
    pub(crate) source_name: String,
    pub(crate) call_id: Option<String>,
    pub(crate) event_type: String,
    pub(crate) subject: String,
}

/// A dead letter received inside the run's window.
#[derive(Debug, Clone)]
pub(crate) struct WindowDeadLetter {
    pub(crate) source: String,
    pub(crate) reason: String,
    pub(crate) detail: String,
}

/// A read-only connection to the sink database.
pub(crate) struct Database {
    connection: Connection,
    /// Every stored event id, read once at the first [`Database::has_event`]: the sink indexes
    /// events by `(source_name, subject, id)`, and the ledger knows only the ids.
    ids: std::cell::OnceCell<HashSet<String>>,
}

impl Database {
    /// Opens the file read-only (it must exist).
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Database> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_secs(5))?;
        // Fails here, not at the first lookup, when the file is not a callhook database.
        connection.query_row("SELECT count(*) FROM events WHERE 0", [], |_| Ok(()))?;
        Ok(Database {
            connection,
            ids: std::cell::OnceCell::new(),
        })
    }

    /// Returns true when an event with this id is stored.
    pub(crate) fn has_event(&self, id: &str) -> rusqlite::Result<bool> {
        if let Some(ids) = self.ids.get() {
            return Ok(ids.contains(id));
        }
        let ids = self
            .connection
            .prepare("SELECT id FROM events")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<HashSet<String>>>()?;
        Ok(self.ids.get_or_init(|| ids).contains(id))
    }

    /// Returns the `calls` row of `(source, call_id)`.
    pub(crate) fn call(&self, source: &str, call_id: &str) -> rusqlite::Result<Option<StoredCall>> {
        self.connection
            .prepare_cached(
                "SELECT direction, disposition, parent_call_id FROM calls \
                 WHERE source = ?1 AND call_id = ?2",
            )?
            .query_row(params![source, call_id], |row| {
                Ok(StoredCall {
                    direction: row.get(0)?,
                    disposition: row.get(1)?,
                    parent_call_id: row.get(2)?,
                })
            })
            .optional()
    }

    /// Returns the events of `source` received in `[from, to]`.
    pub(crate) fn events_received(
        &self,
        source: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> rusqlite::Result<Vec<WindowEvent>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, source_name, call_id, type, subject FROM events \
             WHERE source_name = ?1 AND received_at >= ?2 AND received_at <= ?3",
        )?;
        let rows = statement.query_map(params![source, encode(from), encode(to)], |row| {
            Ok(WindowEvent {
                id: row.get(0)?,
                source_name: row.get(1)?,
                call_id: row.get(2)?,
                event_type: row.get(3)?,
                subject: row.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// Returns the dead letters of `source` received in `[from, to]`.
    pub(crate) fn dead_letters_received(
        &self,
        source: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> rusqlite::Result<Vec<WindowDeadLetter>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT source, reason, detail FROM dead_letters \
             WHERE source = ?1 AND received_at >= ?2 AND received_at <= ?3",
        )?;
        let rows = statement.query_map(params![source, encode(from), encode(to)], |row| {
            Ok(WindowDeadLetter {
                source: row.get(0)?,
                reason: row.get(1)?,
                detail: row.get(2)?,
            })
        })?;
        rows.collect()
    }
}

/// The sink's time encoding (fixed-width RFC 3339 with nanoseconds), which sorts as text.
fn encode(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}
