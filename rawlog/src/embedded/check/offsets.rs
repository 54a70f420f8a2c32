//! The bookkeeping half of the check: per partition, offsets gapless from `log_start_offset`
//! to `next_offset`; the records only dropped WAL frames held; consumed offsets past the log's
//! end; and the raise of `next_offset` past them, recorded in `log_gaps` so that an accepted
//! loss is told apart from a new one.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{ranges_text, CheckOptions, CheckReport, OffsetRange, Severity};
use crate::embedded::schema::{from_sql_int, sql_int};
use crate::embedded::segment;

/// Per partition: gaps, a missing prefix or suffix, consumed records the log no longer holds,
/// and records that only the dropped WAL frames held.
pub(super) fn check_bookkeeping(
    conn: &Connection,
    report: &mut CheckReport,
    options: &CheckOptions,
) -> rusqlite::Result<()> {
    let stored: Vec<(u32, u64, u64)> = conn
        .prepare("SELECT partition_id, log_start_offset, next_offset FROM log_partitions ORDER BY partition_id")?
        .query_map([], |row| {
            Ok((row.get::<_, u32>(0)?, from_sql_int(row.get(1)?), from_sql_int(row.get(2)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut lost = Vec::new();
    let recorded = recorded_gaps(conn)?;
    let has_segments = segment::table_exists(conn)?;
    for (partition, start, next) in stored {
        let mut present = Vec::new();
        if has_segments {
            // A damaged segment's offsets count as present here (so they are not named twice)
            // and are reported, and counted as lost, by their own finding.
            for (meta, outcome) in segment::scan_partition(conn, partition)? {
                match outcome {
                    Ok(offsets) => present.extend(offsets),
                    Err(reason) => {
                        let range = OffsetRange {
                            partition,
                            from: meta.first_offset,
                            through: meta.last_offset + 1,
                        };
                        report.add(
                            Severity::Loss,
                            format!("partition {partition}: compacted segment {range} ({} record(s)) does not decode: {reason}; readers get its records as undecodable", meta.record_count),
                        );
                        lost.push(range);
                        present.extend(meta.first_offset..=meta.last_offset);
                    }
                }
            }
        }
        present.extend(offsets_of(conn, partition)?);
        present.sort_unstable();
        report.records += present.len() as u64;
        let mut next_after = next;
        if let Some(highest) = present.last().copied() {
            if highest >= next {
                report.add(
                    Severity::Note,
                    format!("partition {partition}: next offset {next} is behind the stored row {highest}; raised at the next start"),
                );
                next_after = highest + 1;
            }
        }
        for gap in gaps(partition, start, next_after, &present) {
            let known = recorded.iter().any(|range| {
                range.partition == gap.partition
                    && range.from <= gap.from
                    && gap.through <= range.through
            });
            if known {
                report.add(
                    Severity::Note,
                    format!("partition {partition}: records {gap} were lost earlier; the loss was reported and recorded when the next offset was raised past them"),
                );
                continue;
            }
            report.add(
                Severity::Loss,
                format!("partition {partition}: records {gap} are missing from the log"),
            );
            lost.push(gap);
        }
        if let Some(consumed) = options.consumed.get(&partition).copied() {
            if consumed > next_after {
                let range = OffsetRange {
                    partition,
                    from: next_after,
                    through: consumed,
                };
                report.add(Severity::Loss, format!("partition {partition}: the log ends at offset {next_after} but the sink consumed up to {consumed}: records {range} were acknowledged and are gone from the log (their events were written); new pushes would reuse these offsets and be skipped"));
                lost.push(range);
                if options.repair {
                    raise_next_offset(conn, partition, consumed)?;
                    report.add(Severity::Repaired, format!("partition {partition}: next offset raised to {consumed}, so no offset is handed out twice"));
                    next_after = consumed;
                }
            }
        }
        report.partitions.push((start.min(next_after), next_after));
    }
    if report.wal.tail.loses_committed_data() {
        let present = all_offsets(conn)?;
        let mut dropped: BTreeSet<(u32, u64)> = report
            .wal
            .dropped_records
            .iter()
            .filter(|record| !present.contains(record))
            .copied()
            .collect();
        // The dropped frames' bookkeeping says where the log ended with them: every offset
        // from the kept end up to there was in a dropped transaction, even when its record's
        // page is not among the frames (or is the torn one).
        for (partition, dropped_next) in &report.wal.dropped_next_offsets {
            let kept_next = report
                .partitions
                .get(*partition as usize)
                .map_or(0, |(_, next)| *next);
            dropped.extend((kept_next..*dropped_next).map(|offset| (*partition, offset)));
        }
        let dropped: Vec<(u32, u64)> = dropped.into_iter().collect();
        let ranges = to_ranges(&dropped);
        let count = dropped.len();
        let verb = match options.repair {
            true => "were dropped with the damaged wal frames",
            false => "are only in the wal frames SQLite would drop",
        };
        report.add(
            Severity::Loss,
            format!("{count} record(s) {verb}: {}", ranges_text(&ranges)),
        );
        lost.extend(ranges);
    }
    report.lost = merge_ranges(lost);
    Ok(())
}

/// Sorts ranges and merges those that overlap or touch, so no offset is counted twice.
fn merge_ranges(mut ranges: Vec<OffsetRange>) -> Vec<OffsetRange> {
    ranges.sort();
    let mut merged: Vec<OffsetRange> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.partition == range.partition && range.from <= last.through => {
                last.through = last.through.max(range.through);
            }
            _ => merged.push(range),
        }
    }
    merged
}

fn offsets_of(conn: &Connection, partition: u32) -> rusqlite::Result<Vec<u64>> {
    conn.prepare_cached(
        "SELECT log_offset FROM log_records WHERE partition_id = ?1 ORDER BY log_offset",
    )?
    .query_map([partition], |row| Ok(from_sql_int(row.get(0)?)))?
    .collect()
}

fn all_offsets(conn: &Connection) -> rusqlite::Result<BTreeSet<(u32, u64)>> {
    let mut offsets: BTreeSet<(u32, u64)> = conn
        .prepare("SELECT partition_id, log_offset FROM log_records")?
        .query_map([], |row| {
            Ok((row.get::<_, u32>(0)?, from_sql_int(row.get(1)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if segment::table_exists(conn)? {
        // A segment's range is enough here: its own decoding is checked per partition.
        let ranges: Vec<(u32, u64, u64)> = conn
            .prepare("SELECT partition_id, first_offset, last_offset FROM log_segments")?
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    from_sql_int(row.get(1)?),
                    from_sql_int(row.get(2)?),
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (partition, first, last) in ranges {
            offsets.extend((first..=last).map(|offset| (partition, offset)));
        }
    }
    Ok(offsets)
}

/// Returns the offsets of `start..next` that `present` (sorted) lacks, as ranges.
fn gaps(partition: u32, start: u64, next: u64, present: &[u64]) -> Vec<OffsetRange> {
    let mut ranges = Vec::new();
    let mut expected = start;
    for offset in present.iter().copied().filter(|offset| *offset >= start) {
        if offset > expected {
            ranges.push(OffsetRange {
                partition,
                from: expected,
                through: offset,
            });
        }
        expected = expected.max(offset + 1);
    }
    if next > expected {
        ranges.push(OffsetRange {
            partition,
            from: expected,
            through: next,
        });
    }
    ranges
}

/// Groups sorted `(partition, offset)` pairs into ranges.
fn to_ranges(records: &[(u32, u64)]) -> Vec<OffsetRange> {
    let mut ranges: Vec<OffsetRange> = Vec::new();
    for (partition, offset) in records.iter().copied() {
        match ranges.last_mut() {
            Some(last) if last.partition == partition && last.through == offset => {
                last.through += 1
            }
            _ => ranges.push(OffsetRange {
                partition,
                from: offset,
                through: offset + 1,
            }),
        }
    }
    ranges
}

/// The table where a raise records the offsets it skipped, so a loss that was reported and
/// accepted is told apart from a new one (created on first use: files without it have none).
const CREATE_GAPS: &str = "CREATE TABLE IF NOT EXISTS log_gaps (
    partition_id INTEGER NOT NULL,
    from_offset INTEGER NOT NULL,
    through_offset INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (partition_id, from_offset)
)";

/// Returns the recorded gaps (none when the table does not exist).
fn recorded_gaps(conn: &Connection) -> rusqlite::Result<Vec<OffsetRange>> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'log_gaps'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    conn.prepare("SELECT partition_id, from_offset, through_offset FROM log_gaps")?
        .query_map([], |row| {
            Ok(OffsetRange {
                partition: row.get(0)?,
                from: from_sql_int(row.get(1)?),
                through: from_sql_int(row.get(2)?),
            })
        })?
        .collect()
}

/// Raises a partition's next offset to `floor` (an empty partition's start offset with it) and
/// records the offsets skipped in `log_gaps`.
fn raise_next_offset(conn: &Connection, partition: u32, floor: u64) -> rusqlite::Result<()> {
    let next: Option<i64> = conn
        .query_row(
            "SELECT next_offset FROM log_partitions WHERE partition_id = ?1",
            [partition],
            |row| row.get(0),
        )
        .optional()?;
    let Some(next) = next.map(from_sql_int).filter(|next| *next < floor) else {
        return Ok(());
    };
    conn.execute_batch(CREATE_GAPS)?;
    conn.execute(
        "INSERT OR REPLACE INTO log_gaps (partition_id, from_offset, through_offset, recorded_at_ms) \
         VALUES (?1, ?2, ?3, ?4)",
        (partition, sql_int(next), sql_int(floor), chrono::Utc::now().timestamp_millis()),
    )?;
    conn.execute(
        "UPDATE log_partitions SET log_start_offset = CASE WHEN log_start_offset >= next_offset \
         THEN ?1 ELSE log_start_offset END, next_offset = ?1 \
         WHERE partition_id = ?2 AND next_offset < ?1",
        (sql_int(floor), partition),
    )?;
    Ok(())
}

/// Raises every partition's next offset to the consumer's `consumed` offset where the log ends
/// before it, in one transaction; returns the offsets that were lost (for the caller to
/// report). Used at open, before the writer hands out offsets.
pub(crate) fn raise_to_consumed(
    conn: &mut Connection,
    consumed: &BTreeMap<u32, u64>,
) -> rusqlite::Result<Vec<OffsetRange>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut lost = Vec::new();
    for (partition, floor) in consumed {
        let next: Option<i64> = tx
            .query_row(
                "SELECT next_offset FROM log_partitions WHERE partition_id = ?1",
                [partition],
                |row| row.get(0),
            )
            .optional()?;
        let Some(next) = next.map(from_sql_int) else {
            continue;
        };
        if *floor > next {
            raise_next_offset(&tx, *partition, *floor)?;
            lost.push(OffsetRange {
                partition: *partition,
                from: next,
                through: *floor,
            });
        }
    }
    tx.commit()?;
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_gaps_name_holes_prefix_and_suffix() {
        let range = |from, through| OffsetRange {
            partition: 2,
            from,
            through,
        };
        assert_eq!(gaps(2, 0, 5, &[0, 1, 2, 3, 4]), vec![]);
        assert_eq!(gaps(2, 0, 0, &[]), vec![]);
        assert_eq!(
            gaps(2, 3, 10, &[5, 6, 8]),
            vec![range(3, 5), range(7, 8), range(9, 10)]
        );
        assert_eq!(range(7, 8).to_string(), "2:7");
        assert_eq!(range(3, 5).to_string(), "2:3..4");
    }

    #[test]
    fn test_merged_ranges_count_each_offset_once() {
        let range = |partition, from, through| OffsetRange {
            partition,
            from,
            through,
        };
        let merged = merge_ranges(vec![
            range(0, 5, 9),
            range(1, 0, 2),
            range(0, 3, 6),
            range(0, 9, 10),
        ]);
        assert_eq!(merged, vec![range(0, 3, 10), range(1, 0, 2)]);
    }

    #[test]
    fn test_to_ranges_groups_runs() {
        let ranges = to_ranges(&[(0, 1), (0, 2), (0, 4), (1, 5)]);
        let text: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["0:1..2", "0:4", "1:5"]);
    }
}
