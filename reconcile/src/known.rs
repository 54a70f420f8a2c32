//! Which calls already have their CDR: the SQLite sink's `call.cdr` events.
//!
//! Read-only, on a connection of its own: WAL readers never block the normalizer's writes.
//! Every call is blocking SQLite I/O, so callers run it on `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// Why the sink could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the sink database `{path}`: {source}")]
pub struct KnownError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// A read-only view of the sink's events.
pub struct KnownCdrs {
    connection: Connection,
}

impl KnownCdrs {
    /// Opens the sink database read-only. It must exist: compared with no database, every CDR
    /// would look missing (in Kafka mode, the database is where the normalizer runs).
    pub fn open(path: &Path) -> Result<KnownCdrs, KnownError> {
        let error = |source| KnownError {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(error)?;
        Ok(KnownCdrs { connection })
    }

    /// Returns true when `source` has a `call.cdr` event of `call_id` (the subject of a call
    /// event is its call id; the `events_key` index serves the lookup).
    pub fn has_cdr(&self, source: &str, call_id: &str) -> Result<bool, rusqlite::Error> {
        let mut statement = self.connection.prepare_cached(
            "SELECT 1 FROM events WHERE source_name = ?1 AND subject = ?2 AND type = 'call.cdr' LIMIT 1",
        )?;
        let found: Option<i64> = statement
            .query_row([source, call_id], |row| row.get(0))
            .optional()?;
        Ok(found.is_some())
    }
}

/// Returns which of `call_ids` have no `call.cdr` event of `source` in the database at `path`.
pub fn missing(path: &Path, source: &str, call_ids: &[String]) -> Result<Vec<bool>, KnownError> {
    let known = KnownCdrs::open(path)?;
    call_ids
        .iter()
        .map(|call_id| known.has_cdr(source, call_id).map(|has| !has))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| KnownError {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lookup_by_source_subject_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callhook.db");
        let absent = missing(&path, "7moor", &["1".to_owned()]).unwrap_err();
        assert!(absent.to_string().contains("callhook.db"), "{absent}");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE events (source_name TEXT, subject TEXT, type TEXT);
                 INSERT INTO events VALUES ('7moor', '1', 'call.cdr'), ('7moor', '2', 'call.ended'),
                   ('other', '3', 'call.cdr');",
            )
            .unwrap();
        let ids: Vec<String> = ["1", "2", "3"].map(str::to_owned).to_vec();
        assert_eq!(missing(&path, "7moor", &ids).unwrap(), [false, true, true]);
    }
}
