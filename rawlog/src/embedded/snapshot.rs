//! Reading the raw log from outside the process that writes it: `callhook replay` and the
//! dead-letter tools open the file read-only, next to a running `callhook serve` (WAL lets a
//! reader in another process read while the writer appends; it only ever sees committed,
//! acknowledged records).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::{EmbeddedLogError, Result};
use super::reader::{read_records, ReadRecord};
use super::schema::from_sql_int;
use super::segment::{self, SegmentCache};
use crate::Position;

/// A read-only handle on a raw-log file. Every method blocks on SQLite.
pub struct LogSnapshot {
    conn: Connection,
    path: PathBuf,
    partitions: u32,
    /// `None` for a file of schema version 1 that no writer migrated yet (it has no segments).
    segments: Option<SegmentCache>,
}

impl LogSnapshot {
    /// Opens `path` read-only; fails when it is not a raw log.
    pub fn open(path: &Path) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let corrupt = |detail: String| EmbeddedLogError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        if !path.is_file() {
            return Err(corrupt("no raw log file here".to_owned()));
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| corrupt(e.to_string()))?;
        let partitions: Option<i64> = conn
            .query_row(
                "SELECT value FROM log_meta WHERE name = 'partitions'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| corrupt(format!("not a raw log: {e}")))?;
        let partitions = partitions
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| corrupt("no partition count in log_meta".to_owned()))?;
        let segments = segment::table_exists(&conn)?.then(SegmentCache::default);
        Ok(LogSnapshot {
            conn,
            path: path.to_owned(),
            partitions,
            segments,
        })
    }

    /// Returns the file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Returns `(log start offset, next offset)` of `partition` as committed now.
    pub fn bounds(&self, partition: u32) -> Result<(u64, u64)> {
        let (next, start): (i64, i64) = self.conn.query_row(
            "SELECT next_offset, log_start_offset FROM log_partitions WHERE partition_id = ?1",
            [i64::from(partition)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((from_sql_int(start), from_sql_int(next)))
    }

    /// Reads up to `max_records` records of `partition` from `from_offset` on, in order.
    pub fn read_each(
        &self,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<ReadRecord>> {
        if partition >= self.partitions {
            return Err(EmbeddedLogError::UnknownPartition {
                partition,
                partitions: self.partitions,
            });
        }
        read_records(
            &self.conn,
            self.segments.as_ref(),
            partition,
            from_offset,
            max_records,
        )
    }

    /// Reads the record at `position`, if the log still holds it.
    pub fn read_at(&self, position: Position) -> Result<Option<ReadRecord>> {
        let mut records = self.read_each(position.partition, position.offset, 1)?;
        Ok(records.pop().filter(|record| record.position() == position))
    }

    /// Returns how many records the log holds (compacted ones included).
    pub fn records(&self) -> Result<u64> {
        let mut count: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM log_records", [], |row| row.get(0))?;
        if self.segments.is_some() {
            count += self.conn.query_row(
                "SELECT COALESCE(SUM(record_count), 0) FROM log_segments",
                [],
                |row| row.get::<_, i64>(0),
            )?;
        }
        Ok(from_sql_int(count))
    }

    /// Returns the offset of the first record of `partition` received at or after
    /// `received_at_ms`, or its next offset when there is none (a start point for a replay
    /// bounded by receive time; receive times grow with offsets up to clock steps).
    pub fn first_offset_since(&self, partition: u32, received_at_ms: i64) -> Result<u64> {
        if self.segments.is_some() {
            let segment: Option<(i64, i64)> = self
                .conn
                .query_row(
                    "SELECT first_offset, record_count FROM log_segments \
                     WHERE partition_id = ?1 AND newest_received_at_ms >= ?2 \
                     ORDER BY first_offset LIMIT 1",
                    (i64::from(partition), received_at_ms),
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((first_offset, records)) = segment {
                let records = usize::try_from(from_sql_int(records)).unwrap_or(usize::MAX);
                let found = self
                    .read_each(partition, from_sql_int(first_offset), records)?
                    .into_iter()
                    .find(|record| match record {
                        ReadRecord::Decoded(stored) => {
                            stored.record.received_at.timestamp_millis() >= received_at_ms
                        }
                        ReadRecord::Undecodable(_) => true,
                    });
                if let Some(record) = found {
                    return Ok(record.position().offset);
                }
            }
        }
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(log_offset) FROM log_records WHERE partition_id = ?1 AND received_at_ms >= ?2",
                (i64::from(partition), received_at_ms),
                |row| row.get(0),
            )?;
        match found {
            Some(offset) => Ok(from_sql_int(offset)),
            None => Ok(self.bounds(partition)?.1),
        }
    }
}
