//! The SQLite file: connection settings, tables, and the checks run when the log is opened.
//!
//! Guarantees kept here: every connection runs in WAL mode with `synchronous=FULL`, so a commit
//! returns only after the WAL is fsync'd; the file is checked (`quick_check` or
//! `integrity_check`) before any write; the per-partition next offset is never below a stored
//! row, so offsets are never reused (it lives in `log_partitions`, not in `MAX(log_offset)`,
//! so deleting records never makes offsets restart).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::config::IntegrityCheck;
use super::error::{EmbeddedLogError, Result};
use super::state::Bookkeeping;

/// `PRAGMA application_id` of a raw log file ("chrl"), so another SQLite file is not mistaken
/// for one.
pub(crate) const APPLICATION_ID: i64 = 0x6368_726c;

/// The schema version this build writes and reads. Version 2 added `log_segments`; a version 1
/// file is migrated when the log is opened for writing (older builds then refuse the file).
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// The compacted segments (see `segment.rs`): consumed records moved out of `log_records` in
/// offset order, a prefix of each partition's stored offsets. Nine columns, so the WAL scan
/// (which recognises `log_records` rows by their twelve) never mistakes a segment for a record.
const CREATE_SEGMENTS: &str = "
CREATE TABLE log_segments (
    partition_id INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    oldest_received_at_ms INTEGER NOT NULL,
    newest_received_at_ms INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (partition_id, first_offset)
);
";

const CREATE_TABLES: &str = "
CREATE TABLE log_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE log_partitions (
    partition_id INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL,
    log_start_offset INTEGER NOT NULL
);
CREATE TABLE log_records (
    partition_id INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,
    record_key TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT,
    query TEXT,
    remote_addr TEXT,
    request_id TEXT NOT NULL,
    headers_json TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (partition_id, log_offset)
);
CREATE TABLE consumer_offsets (
    group_id TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, partition_id)
);
";

/// Converts an offset or count for SQLite's signed 64-bit integers. Offsets stay far below
/// `i64::MAX` (2^63 records), so saturating is only a guard.
pub(crate) fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Converts a stored integer back; negative values (never written) read as 0.
pub(crate) fn from_sql_int(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Opens a connection with the durability settings every raw log connection uses.
pub(crate) fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_error = |source: rusqlite::Error| classify_open_error(path, source);
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(busy_timeout).map_err(open_error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(EmbeddedLogError::Corrupt {
            path: path.to_owned(),
            detail: format!("cannot switch to WAL journal mode (got `{mode}`)"),
        });
    }
    // FULL: in WAL mode the WAL is fsync'd at every commit, which is what makes an
    // acknowledged append survive a power loss (NORMAL would only survive a process crash).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_error)?;
    Ok(conn)
}

fn classify_open_error(path: &Path, source: rusqlite::Error) -> EmbeddedLogError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => EmbeddedLogError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        },
        _ => EmbeddedLogError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Runs the configured SQLite consistency check; fails with `Corrupt` listing what it found.
pub(crate) fn check_integrity(conn: &Connection, check: IntegrityCheck, path: &Path) -> Result<()> {
    let pragma = match check {
        IntegrityCheck::Quick => "quick_check",
        IntegrityCheck::Full => "integrity_check",
        IntegrityCheck::Off => return Ok(()),
    };
    let mut problems: Vec<String> = Vec::new();
    conn.pragma_query(None, pragma, |row| {
        let line: String = row.get(0)?;
        if line != "ok" {
            problems.push(line);
        }
        Ok(())
    })
    .map_err(|source| classify_open_error(path, source))?;
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        return Err(EmbeddedLogError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "`{pragma}` reported {} problem(s): {}",
                problems.len(),
                shown.join("; ")
            ),
        });
    }
    tracing::info!(path = %path.display(), check = pragma, "raw log sqlite check passed");
    Ok(())
}

/// Creates the tables of a new file, or checks an existing file's identity, schema version and
/// partition count.
pub(crate) fn prepare_schema(conn: &mut Connection, partitions: u32, path: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let objects: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))?;
    let application_id: i64 = tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
    if objects == 0 {
        tx.execute_batch(CREATE_TABLES)?;
        tx.execute_batch(CREATE_SEGMENTS)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.execute(
            "INSERT INTO log_meta (name, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION],
        )?;
        tx.execute(
            "INSERT INTO log_meta (name, value) VALUES ('partitions', ?1)",
            [i64::from(partitions)],
        )?;
        for partition in 0..partitions {
            tx.execute(
                "INSERT INTO log_partitions (partition_id, next_offset, log_start_offset) VALUES (?1, 0, 0)",
                [i64::from(partition)],
            )?;
        }
        tracing::info!(path = %path.display(), partitions, "raw log created");
    } else if application_id != APPLICATION_ID {
        return Err(EmbeddedLogError::NotARawLog {
            path: path.to_owned(),
            application_id,
        });
    } else {
        check_meta(&tx, partitions, path)?;
    }
    tx.commit()?;
    Ok(())
}

fn check_meta(conn: &Connection, partitions: u32, path: &Path) -> Result<()> {
    let meta = |name: &str| -> Result<Option<i64>> {
        Ok(conn
            .query_row(
                "SELECT value FROM log_meta WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?)
    };
    let corrupt = |detail: &str| EmbeddedLogError::Corrupt {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let version = meta("schema_version")?.ok_or_else(|| corrupt("`schema_version` is missing"))?;
    if version == 1 {
        conn.execute_batch(CREATE_SEGMENTS)?;
        conn.execute(
            "UPDATE log_meta SET value = ?1 WHERE name = 'schema_version'",
            [SCHEMA_VERSION],
        )?;
        tracing::info!(path = %path.display(), from = version, to = SCHEMA_VERSION, "raw log schema migrated");
    } else if version != SCHEMA_VERSION {
        return Err(EmbeddedLogError::UnsupportedSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let stored = meta("partitions")?.ok_or_else(|| corrupt("`partitions` is missing"))?;
    let stored = u32::try_from(stored).map_err(|_| corrupt("`partitions` is out of range"))?;
    if stored != partitions {
        return Err(EmbeddedLogError::PartitionCountChanged {
            path: path.to_owned(),
            stored,
            configured: partitions,
        });
    }
    Ok(())
}

/// Checks the offset bookkeeping against the stored rows, repairs it where that loses nothing
/// (next offset raised past the highest row), and returns it.
pub(crate) fn load_bookkeeping(
    conn: &mut Connection,
    partitions: u32,
    path: &Path,
) -> Result<Bookkeeping> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stray: i64 = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM log_records WHERE partition_id < 0 OR partition_id >= ?1) \
         + (SELECT COUNT(*) FROM log_segments WHERE partition_id < 0 OR partition_id >= ?1)",
        [i64::from(partitions)],
        |row| row.get(0),
    )?;
    if stray > 0 {
        return Err(EmbeddedLogError::Corrupt {
            path: path.to_owned(),
            detail: format!("{stray} record(s) outside partitions 0..{partitions}"),
        });
    }
    let mut bookkeeping = Bookkeeping::default();
    let mut records_held = 0;
    for partition in 0..partitions {
        let (next_offset, log_start_offset) = verify_partition(&tx, partition, path)?;
        records_held += next_offset - log_start_offset;
        bookkeeping.next_offsets.push(next_offset);
        bookkeeping.log_start_offsets.push(log_start_offset);
    }
    bookkeeping.committed = load_committed(&tx, &bookkeeping.next_offsets)?;
    tx.commit()?;
    tracing::info!(
        path = %path.display(),
        partitions,
        records_held,
        consumer_groups = bookkeeping.committed.len(),
        "raw log offset bookkeeping verified"
    );
    Ok(bookkeeping)
}

/// Returns the verified `(next_offset, log_start_offset)` of one partition, repairing its row.
pub(crate) fn verify_partition(
    conn: &Connection,
    partition: u32,
    path: &Path,
) -> Result<(u64, u64)> {
    let stored: Option<(i64, i64)> = conn
        .query_row(
            "SELECT next_offset, log_start_offset FROM log_partitions WHERE partition_id = ?1",
            [i64::from(partition)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (stored_next, stored_start) = stored.ok_or_else(|| EmbeddedLogError::Corrupt {
        path: path.to_owned(),
        detail: format!("partition {partition} has no bookkeeping row"),
    })?;
    let stored = StoredOffsets {
        next_offset: from_sql_int(stored_next),
        log_start_offset: from_sql_int(stored_start),
    };
    // Segments are a prefix of the stored offsets and records the rest: both count.
    let (lowest, highest, count): (Option<i64>, Option<i64>, i64) = conn.query_row(
        "SELECT MIN(low), MAX(high), SUM(held) FROM ( \
         SELECT MIN(log_offset) AS low, MAX(log_offset) AS high, COUNT(*) AS held \
         FROM log_records WHERE partition_id = ?1 \
         UNION ALL SELECT MIN(first_offset), MAX(last_offset), COALESCE(SUM(record_count), 0) \
         FROM log_segments WHERE partition_id = ?1)",
        [i64::from(partition)],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, Option<i64>>(2)?.unwrap_or(0),
            ))
        },
    )?;
    let rows = match (lowest, highest) {
        (Some(lowest), Some(highest)) => Some(StoredRows {
            lowest: from_sql_int(lowest),
            highest: from_sql_int(highest),
            count: from_sql_int(count),
        }),
        _ => None,
    };
    let verified = reconcile_offsets(partition, stored, rows);
    if verified != stored {
        conn.execute(
            "UPDATE log_partitions SET next_offset = ?1, log_start_offset = ?2 WHERE partition_id = ?3",
            (sql_int(verified.next_offset), sql_int(verified.log_start_offset), i64::from(partition)),
        )?;
    }
    Ok((verified.next_offset, verified.log_start_offset))
}

/// A partition's bookkeeping row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredOffsets {
    next_offset: u64,
    log_start_offset: u64,
}

/// The offsets of the rows a partition actually holds.
#[derive(Debug, Clone, Copy)]
struct StoredRows {
    lowest: u64,
    highest: u64,
    count: u64,
}

/// Returns bookkeeping consistent with the rows: the next offset is raised past the highest
/// row (so no offset is reused), the start offset follows the lowest row. Logs what it finds;
/// missing rows are logged as ERROR (data loss) but cannot be repaired.
fn reconcile_offsets(
    partition: u32,
    stored: StoredOffsets,
    rows: Option<StoredRows>,
) -> StoredOffsets {
    let mut next_offset = stored.next_offset;
    let mut log_start_offset = stored.log_start_offset.min(stored.next_offset);
    let Some(rows) = rows else {
        if log_start_offset < next_offset {
            tracing::error!(
                partition,
                log_start_offset,
                next_offset,
                "raw log records missing, partition is empty"
            );
        }
        return StoredOffsets {
            next_offset,
            log_start_offset: next_offset,
        };
    };
    if rows.highest >= next_offset {
        tracing::warn!(
            partition,
            stored_next = next_offset,
            rows.highest,
            "raw log next offset behind stored rows, raised"
        );
        next_offset = rows.highest + 1;
    }
    if rows.lowest > log_start_offset {
        tracing::error!(
            partition,
            log_start_offset,
            rows.lowest,
            "raw log records missing before the first stored row"
        );
    }
    log_start_offset = rows.lowest;
    let expected = rows.highest - rows.lowest + 1;
    if rows.count != expected {
        tracing::error!(
            partition,
            expected,
            rows.count,
            "raw log partition has gaps between offsets"
        );
    }
    StoredOffsets {
        next_offset,
        log_start_offset,
    }
}

fn load_committed(
    conn: &Connection,
    next_offsets: &[u64],
) -> Result<BTreeMap<String, BTreeMap<u32, u64>>> {
    let mut committed: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut statement =
        conn.prepare("SELECT group_id, partition_id, next_offset FROM consumer_offsets")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (group, partition, offset) = row?;
        let offset = from_sql_int(offset);
        let Some(high_watermark) = usize::try_from(partition)
            .ok()
            .and_then(|index| next_offsets.get(index))
        else {
            tracing::warn!(
                group,
                partition,
                "committed offset for a partition that does not exist, ignored"
            );
            continue;
        };
        if offset > *high_watermark {
            tracing::warn!(
                group,
                partition,
                offset,
                high_watermark,
                "committed offset beyond the high watermark"
            );
        }
        let partition = u32::try_from(partition).unwrap_or(u32::MAX);
        committed
            .entry(group)
            .or_default()
            .insert(partition, offset);
    }
    Ok(committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(next_offset: u64, log_start_offset: u64) -> StoredOffsets {
        StoredOffsets {
            next_offset,
            log_start_offset,
        }
    }

    #[test]
    fn test_reconcile_keeps_consistent_bookkeeping() {
        let rows = StoredRows {
            lowest: 3,
            highest: 9,
            count: 7,
        };
        assert_eq!(
            reconcile_offsets(0, offsets(10, 3), Some(rows)),
            offsets(10, 3)
        );
        assert_eq!(reconcile_offsets(0, offsets(10, 10), None), offsets(10, 10));
        assert_eq!(reconcile_offsets(0, offsets(0, 0), None), offsets(0, 0));
    }

    #[test]
    fn test_reconcile_raises_next_offset_past_the_highest_row() {
        let rows = StoredRows {
            lowest: 0,
            highest: 9,
            count: 10,
        };
        assert_eq!(
            reconcile_offsets(0, offsets(4, 0), Some(rows)),
            offsets(10, 0)
        );
    }

    #[test]
    fn test_reconcile_moves_start_to_the_lowest_row_and_never_lowers_next() {
        let rows = StoredRows {
            lowest: 5,
            highest: 6,
            count: 2,
        };
        assert_eq!(
            reconcile_offsets(0, offsets(20, 2), Some(rows)),
            offsets(20, 5)
        );
        assert_eq!(reconcile_offsets(0, offsets(8, 0), None), offsets(8, 8));
    }
}
