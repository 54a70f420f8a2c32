//! Compaction on the writer thread: consumed records move from `log_records` into zstd
//! segments (`log_segments`, see `segment.rs`), per partition in offset order, a chunk of
//! `compact_chunk_records` at a time.
//!
//! # Guarantee
//!
//! Compaction never changes what a reader sees: a chunk's segment is inserted and its records
//! deleted in one transaction (readers read segments and records in one read transaction), the
//! segment keeps every record byte for byte with its offset, and only records below every
//! group's committed offset (what retention calls consumed) are compacted, so the live
//! consumer keeps reading plain rows. Offsets and the partition bookkeeping are not touched.
//!
//! Why on the writer thread: SQLite allows one writer, and this keeps compaction from
//! competing with appends for the write lock. A periodic pass (every
//! `retention_check_interval_ms`) stops after [`COMPACTION_PASS_BUDGET`] and goes on after the
//! next group commit, so appends wait for at most about one budget.

use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::retention::min_committed;
use super::Writer;
use crate::embedded::error::{EmbeddedLogError, Result};
use crate::embedded::reader::StoredRow;
use crate::embedded::schema::{from_sql_int, sql_int};
use crate::embedded::segment;
use crate::embedded::telemetry::ChunkCompacted;

/// The zstd level. Measured on segments of 1,000 realistic pushes: level 1 gives 9.9x, level 3
/// 9.7x at about the same speed, level 6 11.0x at twice the time, level 9 11.5x at seven
/// times; compaction runs on the writer thread, so the fastest level wins.
const COMPACTION_LEVEL: i32 = 1;

/// How long a periodic pass may hold the writer thread before it lets appends through.
pub(crate) const COMPACTION_PASS_BUDGET: Duration = Duration::from_millis(50);

impl Writer {
    /// Returns how long until the next periodic compaction pass (`Duration::MAX` when off).
    pub(super) fn until_compaction(&self) -> Duration {
        if self.settings.compact_chunk_records.is_none() {
            return Duration::MAX;
        }
        if self.compaction_backlog {
            return Duration::ZERO;
        }
        self.settings
            .retention_check_interval
            .saturating_sub(self.last_compaction.elapsed())
    }

    pub(super) fn maybe_compact(&mut self) {
        if self.until_compaction() > Duration::ZERO {
            return;
        }
        if let Err(error) = self.compact(Some(COMPACTION_PASS_BUDGET)) {
            tracing::warn!(%error, "raw log compaction pass failed, retried at the next interval");
            self.compaction_backlog = false;
        }
    }

    /// Compacts every whole chunk of consumed, uncompacted records, one chunk per partition in
    /// turn, until none is left or `budget` is spent (then the next loop goes on). Returns the
    /// records compacted.
    pub(super) fn compact(&mut self, budget: Option<Duration>) -> Result<u64> {
        let started = Instant::now();
        self.last_compaction = started;
        self.compaction_backlog = false;
        let Some(chunk_records) = self.settings.compact_chunk_records else {
            return Ok(0);
        };
        self.refresh_offsets_if_stale()?;
        let mut total = 0;
        loop {
            let mut progressed = false;
            for partition in 0..self.shared.partitions {
                if budget.is_some_and(|budget| started.elapsed() >= budget) {
                    self.compaction_backlog = true;
                    return Ok(total);
                }
                let next = self.next_offsets[partition as usize];
                let consumed_end = min_committed(&self.conn, partition)?.min(next);
                let chunk =
                    compact_chunk(&mut self.conn, partition, consumed_end, chunk_records.get())?;
                if let Some(chunk) = chunk {
                    total += chunk.records;
                    progressed = true;
                    chunk.emit();
                }
            }
            if !progressed {
                return Ok(total);
            }
        }
    }
}

/// Moves the first `chunk_records` uncompacted records of `partition` into a segment, in one
/// transaction, when that many lie below `consumed_end`; returns what it did, or `None`.
fn compact_chunk(
    conn: &mut Connection,
    partition: u32,
    consumed_end: u64,
    chunk_records: usize,
) -> Result<Option<ChunkCompacted>> {
    let first: Option<i64> = conn
        .query_row(
            "SELECT MIN(log_offset) FROM log_records WHERE partition_id = ?1",
            [partition],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    let Some(first) = first.map(from_sql_int) else {
        return Ok(None);
    };
    if consumed_end.saturating_sub(first) < chunk_records as u64 {
        return Ok(None);
    }
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows: Vec<StoredRow> = tx
        .prepare_cached(&format!(
            "SELECT {} FROM log_records WHERE partition_id = ?1 AND log_offset < ?2 \
             ORDER BY log_offset LIMIT ?3",
            StoredRow::COLUMNS
        ))?
        .query_map(
            (
                partition,
                sql_int(consumed_end),
                sql_int(chunk_records as u64),
            ),
            StoredRow::from_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    // Gaps (records lost earlier) can leave fewer rows than offsets: wait for a whole chunk.
    let (Some(first_row), Some(last_row)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    if rows.len() < chunk_records {
        return Ok(None);
    }
    let (first_offset, last_offset) = (first_row.offset, last_row.offset);
    let oldest = rows.iter().map(|row| row.received_at_ms).min().unwrap_or(0);
    let newest = rows.iter().map(|row| row.received_at_ms).max().unwrap_or(0);
    let (blob, raw_bytes) =
        segment::encode(&rows, COMPACTION_LEVEL).map_err(EmbeddedLogError::Compress)?;
    let stored_bytes = blob.len();
    tx.execute(
        "INSERT INTO log_segments (partition_id, first_offset, last_offset, record_count, \
         oldest_received_at_ms, newest_received_at_ms, raw_bytes, stored_bytes, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            partition,
            sql_int(first_offset),
            sql_int(last_offset),
            sql_int(rows.len() as u64),
            oldest,
            newest,
            sql_int(raw_bytes as u64),
            sql_int(stored_bytes as u64),
            blob,
        ],
    )?;
    let deleted = tx.execute(
        "DELETE FROM log_records WHERE partition_id = ?1 AND log_offset >= ?2 AND log_offset <= ?3",
        (partition, sql_int(first_offset), sql_int(last_offset)),
    )?;
    debug_assert_eq!(deleted, rows.len(), "a chunk deletes exactly its rows");
    tx.commit()?;
    Ok(Some(ChunkCompacted {
        partition,
        first_offset,
        last_offset,
        records: rows.len() as u64,
        raw_bytes: raw_bytes as u64,
        stored_bytes: stored_bytes as u64,
        elapsed: started.elapsed(),
    }))
}
