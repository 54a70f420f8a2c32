//! Retention on the writer thread: deletes what every consumer group consumed once it is old
//! enough (or beyond the count limit), whole compacted segments first, then records, always a
//! prefix of each partition so the stored offsets stay contiguous from the log start offset.
//! Unconsumed records are never deleted.

use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::{Connection, TransactionBehavior};

use super::{Writer, RETENTION_MAX_DELETE_PER_PASS};
use crate::embedded::error::Result;
use crate::embedded::schema::{from_sql_int, sql_int};
use crate::embedded::segment;
use crate::embedded::telemetry::RetentionApplied;

impl Writer {
    pub(super) fn maybe_enforce_retention(&mut self) {
        if self.until_retention() > Duration::ZERO {
            return;
        }
        if let Err(error) = self.enforce_retention() {
            tracing::warn!(%error, "raw log retention pass failed, retried at the next interval");
            self.retention_backlog = false;
        }
    }

    /// Deletes, per partition, the prefix of records that every group consumed and that is
    /// older than the retention age or beyond the retention count: whole compacted segments
    /// (whose newest record is that old), then records. Returns the records deleted.
    pub(super) fn enforce_retention(&mut self) -> Result<u64> {
        self.last_retention = Instant::now();
        self.refresh_offsets_if_stale()?;
        // No retention age: no record is old enough (the count limit still applies).
        let cutoff_ms = match self.settings.retention {
            Some(retention) => {
                let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                Utc::now().timestamp_millis().saturating_sub(retention_ms)
            }
            None => i64::MIN,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deletions = Vec::new();
        let mut backlog = false;
        for partition in 0..self.shared.partitions {
            let start = self.log_start_offsets[partition as usize];
            let next = self.next_offsets[partition as usize];
            let max_records = self.settings.retention_max_records;
            // Segments hold the oldest offsets: whole ones go first; records only once no
            // segment is left in front of them.
            let segments = delete_old_segments(&tx, partition, next, max_records, cutoff_ms)?;
            let mut deleted = segments.records;
            let mut delete_end = segments.end.unwrap_or(start).max(start);
            if !segments.remaining {
                let plan = plan_deletion(&tx, partition, delete_end, next, max_records, cutoff_ms)?;
                if let Some((records_end, more)) = plan {
                    deleted += tx.execute(
                        "DELETE FROM log_records WHERE partition_id = ?1 AND log_offset < ?2",
                        (i64::from(partition), sql_int(records_end)),
                    )? as u64;
                    delete_end = records_end;
                    backlog |= more;
                }
            }
            backlog |= segments.more;
            if delete_end <= start {
                continue;
            }
            tx.execute(
                "UPDATE log_partitions SET log_start_offset = ?1 WHERE partition_id = ?2",
                (sql_int(delete_end), i64::from(partition)),
            )?;
            deletions.push((partition, delete_end, deleted));
        }
        tx.commit()?;
        self.retention_backlog = backlog;
        let mut total = 0;
        for (partition, log_start_offset, deleted) in deletions {
            self.log_start_offsets[partition as usize] = log_start_offset;
            self.shared
                .set_log_start_offset(partition, log_start_offset);
            total += deleted;
            let records_held = self.shared.records_held();
            RetentionApplied {
                partition,
                deleted,
                log_start_offset,
                records_held,
            }
            .emit();
        }
        Ok(total)
    }
}

/// What retention did to a partition's compacted segments.
struct SegmentsDeleted {
    /// The offset after the last segment deleted, if any was.
    end: Option<u64>,
    /// Records in the deleted segments.
    records: u64,
    /// Whether a segment stays (too young or not consumed): records after it must stay too.
    remaining: bool,
    /// Whether the pass stopped at its bound with deletable segments left.
    more: bool,
}

/// Deletes, in offset order, the compacted segments of `partition` that every group consumed
/// and whose newest record is older than `cutoff_ms` or that lie beyond the newest
/// `retention_max_records`; stops at the first that must stay, or at the pass's bound.
fn delete_old_segments(
    conn: &Connection,
    partition: u32,
    next: u64,
    retention_max_records: Option<u64>,
    cutoff_ms: i64,
) -> rusqlite::Result<SegmentsDeleted> {
    let consumed_end = min_committed(conn, partition)?.min(next);
    let count_end = retention_max_records.map_or(0, |keep| next.saturating_sub(keep));
    let mut outcome = SegmentsDeleted {
        end: None,
        records: 0,
        remaining: false,
        more: false,
    };
    for meta in segment::segments_from(conn, partition, 0) {
        let meta = meta?;
        let old_enough = meta.newest_received_at_ms < cutoff_ms || meta.last_offset < count_end;
        if meta.last_offset >= consumed_end || !old_enough {
            outcome.remaining = true;
            return Ok(outcome);
        }
        if outcome.records > 0
            && outcome.records + meta.record_count > RETENTION_MAX_DELETE_PER_PASS
        {
            outcome.remaining = true;
            outcome.more = true;
            return Ok(outcome);
        }
        conn.execute(
            "DELETE FROM log_segments WHERE partition_id = ?1 AND first_offset = ?2",
            (partition, sql_int(meta.first_offset)),
        )?;
        outcome.records += meta.record_count;
        outcome.end = Some(meta.last_offset + 1);
    }
    Ok(outcome)
}

/// Returns where this pass deletes up to (exclusive) in `partition`, and whether more would be
/// deletable after it (the pass hit its bound), or `None` when nothing is deletable.
fn plan_deletion(
    conn: &Connection,
    partition: u32,
    start: u64,
    next: u64,
    retention_max_records: Option<u64>,
    cutoff_ms: i64,
) -> rusqlite::Result<Option<(u64, bool)>> {
    let consumed_end = min_committed(conn, partition)?.min(next);
    if consumed_end <= start {
        return Ok(None);
    }
    let scan_end = consumed_end.min(start + RETENTION_MAX_DELETE_PER_PASS);
    let count_end = retention_max_records.map_or(start, |keep| next.saturating_sub(keep));
    let age_end = first_young_offset(conn, partition, start, scan_end, cutoff_ms)?;
    let delete_end = age_end.max(count_end).min(scan_end);
    if delete_end <= start {
        return Ok(None);
    }
    Ok(Some((
        delete_end,
        delete_end == scan_end && scan_end < consumed_end,
    )))
}

/// Returns the lowest offset committed for `partition` by every group (a group that never
/// committed this partition counts as 0; no group at all means nothing is consumed).
pub(super) fn min_committed(conn: &Connection, partition: u32) -> rusqlite::Result<u64> {
    let groups: i64 = conn.query_row(
        "SELECT COUNT(DISTINCT group_id) FROM consumer_offsets",
        [],
        |row| row.get(0),
    )?;
    if groups == 0 {
        return Ok(0);
    }
    let (committed_groups, lowest): (i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), MIN(next_offset) FROM consumer_offsets WHERE partition_id = ?1",
        [i64::from(partition)],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if committed_groups < groups {
        return Ok(0);
    }
    Ok(lowest.map_or(0, from_sql_int))
}

/// Returns the first offset in `start..end` whose record was received at or after `cutoff_ms`,
/// or `end` if every record there is older. Reads only up to that record.
fn first_young_offset(
    conn: &Connection,
    partition: u32,
    start: u64,
    end: u64,
    cutoff_ms: i64,
) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached(
        "SELECT log_offset, received_at_ms FROM log_records \
         WHERE partition_id = ?1 AND log_offset >= ?2 AND log_offset < ?3 ORDER BY log_offset",
    )?;
    let mut rows = statement.query((i64::from(partition), sql_int(start), sql_int(end)))?;
    while let Some(row) = rows.next()? {
        let received_at_ms: i64 = row.get(1)?;
        if received_at_ms >= cutoff_ms {
            return Ok(from_sql_int(row.get(0)?));
        }
    }
    Ok(end)
}
