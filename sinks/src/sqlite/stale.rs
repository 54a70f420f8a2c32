//! The stale sweep's read of the SQLite sink: calls still `in_progress` whose newest event was
//! received before a cut-off (see `normalizer/src/stale.rs` for the sweep).
//!
//! "After its last event" is measured on callhook's clock: the greatest `received_at` of the
//! call's stored events, never a vendor's time (vendor clocks can be wrong or zone-less). The
//! read goes through the partial index `calls_in_progress`, so it costs the calls in progress
//! and their events, not the history.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags};

use super::codec::{decode_time, encode_time};
use super::error::{Result, SqliteSinkError};

/// A call the sweep found with no terminal event since before the cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCandidate {
    /// The configured source name.
    pub source: String,
    /// The vendor-scoped call id.
    pub call_id: String,
    /// `data.vendor` of the call.
    pub vendor: String,
    /// `data.dialect` of the call's newest event.
    pub dialect: String,
    /// `data.account` of the call's newest event, if any.
    pub account: Option<String>,
    /// The type of the last event in fold order (`calls.last_event_type`).
    pub last_event_type: String,
    /// When callhook received the call's newest event.
    pub last_received_at: DateTime<Utc>,
}

/// Opens the sink's database read-only for the sweep (a WAL reader never blocks the writer).
pub fn open_for_sweep(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| SqliteSinkError::Open {
        path: path.to_owned(),
        source,
    })?;
    connection.busy_timeout(busy_timeout)?;
    Ok(connection)
}

/// Returns the calls of `source` with status `in_progress` whose newest event was received
/// before `received_before`, oldest first, at most `limit`.
pub fn stale_candidates(
    connection: &Connection,
    source: &str,
    received_before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<StaleCandidate>> {
    let mut statement = connection.prepare_cached(
        "SELECT c.call_id, c.vendor, c.last_event_type, last.received_at, \
         coalesce(json_extract(last.data, '$.dialect'), c.vendor), json_extract(last.data, '$.account') \
         FROM calls c JOIN events last ON last.seq = ( \
             SELECT e.seq FROM events e WHERE e.source_name = c.source AND e.subject = c.call_id \
             AND e.call_id = c.call_id ORDER BY e.received_at DESC, e.seq DESC LIMIT 1) \
         WHERE c.status = 'in_progress' AND c.source = ?1 AND last.received_at < ?2 \
         ORDER BY last.received_at LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![source, encode_time(&received_before), limit])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(StaleCandidate {
            source: source.to_owned(),
            call_id: row.get(0)?,
            vendor: row.get(1)?,
            last_event_type: row.get(2)?,
            last_received_at: decode_time("events", &row.get::<_, String>(3)?)?,
            dialect: row.get(4)?,
            account: row.get(5)?,
        });
    }
    Ok(found)
}
