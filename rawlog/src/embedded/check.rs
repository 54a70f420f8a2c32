//! The raw log's fsck: what a damaged or torn file holds, what was lost, what can be repaired.
//!
//! # Guarantee
//!
//! An acknowledged record is never dropped silently. Three things can take records away from
//! under SQLite's own recovery, and each is found and named here:
//!
//! 1. **The WAL** ([`wal`]): SQLite replays frames up to the first one that fails its
//!    checksum and silently ignores everything after it, later commits included. The scan runs
//!    before SQLite touches the file (the first write after opening overwrites what SQLite
//!    ignored). A torn tail with no commit behind it is the transaction being written when the
//!    process died, never acknowledged: a note. Committed frames behind damage are a loss:
//!    [`super::EmbeddedLog::open`] refuses to start, and only `repair` (which keeps a copy of
//!    the WAL) lets SQLite drop them.
//! 2. **The main file**: `PRAGMA integrity_check`; a corrupt file is never opened for writing.
//! 3. **The bookkeeping**: per partition, offsets are gapless from `log_start_offset` to
//!    `next_offset`; a hole or a missing suffix is a loss, named by its offsets. When the
//!    caller knows how far a consumer has durably consumed (the SQLite sink's offsets), a log
//!    that ends before that lost records that were acknowledged and consumed, and, worse, would
//!    hand their offsets out again to new pushes, which the consumer would then skip. Repair (and
//!    every open through [`super::EmbeddedLog::open_after`]) raises `next_offset` past them.

pub mod wal;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::schema::{from_sql_int, sql_int};
use wal::{WalScan, WalTail};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing acknowledged is affected (e.g. an unfinished transaction's torn tail).
    Note,
    /// Fixed without losing anything more.
    Repaired,
    /// Records are gone; the offsets are named.
    Loss,
    /// The file cannot be used as it is: callhook refuses to start on it.
    Damage,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Repaired => "repaired",
            Severity::Loss => "LOST",
            Severity::Damage => "DAMAGE",
        }
    }
}

/// One thing the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What, in one line.
    pub message: String,
}

/// A run of offsets of one partition: `from..through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffsetRange {
    /// The partition.
    pub partition: u32,
    /// The first offset.
    pub from: u64,
    /// The offset after the last one.
    pub through: u64,
}

impl OffsetRange {
    /// Returns how many offsets the range holds.
    pub fn len(&self) -> u64 {
        self.through - self.from
    }

    /// Returns true for an empty range.
    pub fn is_empty(&self) -> bool {
        self.through == self.from
    }
}

impl fmt::Display for OffsetRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.len() {
            1 => write!(f, "{}:{}", self.partition, self.from),
            _ => write!(f, "{}:{}..{}", self.partition, self.from, self.through - 1),
        }
    }
}

/// What to check and whether to repair.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Per partition, the next offset a consumer has durably consumed up to (the SQLite
    /// sink's stored offsets): every record below it was acknowledged.
    pub consumed: BTreeMap<u32, u64>,
    /// Repair what can be repaired: move a damaged WAL's dropped tail aside (keeping a copy),
    /// raise `next_offset` past consumed records the log lost.
    pub repair: bool,
}

/// The check's report.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The log file.
    pub path: PathBuf,
    /// The WAL as found (before any repair).
    pub wal: WalScan,
    /// Records stored, after SQLite's recovery.
    pub records: u64,
    /// Per partition, `(log_start_offset, next_offset)` after any repair.
    pub partitions: Vec<(u64, u64)>,
    /// What was found, in order.
    pub findings: Vec<Finding>,
    /// Offsets of acknowledged records that are gone (or that SQLite would drop).
    pub lost: Vec<OffsetRange>,
}

impl CheckReport {
    /// Returns true when nothing was lost and nothing is damaged (notes and repairs allowed).
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|finding| finding.severity < Severity::Loss)
    }

    /// Returns true when the file must not be opened for writing as it is.
    pub fn is_damaged(&self) -> bool {
        self.findings
            .iter()
            .any(|finding| finding.severity == Severity::Damage)
    }

    /// Returns how many record offsets are named as lost.
    pub fn lost_records(&self) -> u64 {
        self.lost.iter().map(OffsetRange::len).sum()
    }

    fn add(&mut self, severity: Severity, message: String) {
        self.findings.push(Finding { severity, message });
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "raw log {}", self.path.display())?;
        let spans: Vec<String> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(partition, (start, next))| format!("{partition}:[{start}..{next})"))
            .collect();
        writeln!(
            f,
            "  {} records; partitions {}; wal {} bytes, {} frames, {} replayed ({} commits)",
            self.records,
            spans.join(" "),
            self.wal.file_bytes,
            self.wal.frames,
            self.wal.replayed_frames,
            self.wal.replayed_commits
        )?;
        for finding in &self.findings {
            writeln!(f, "  {:<8} {}", finding.severity.label(), finding.message)?;
        }
        match (self.is_clean(), self.lost_records()) {
            (true, _) => write!(f, "  clean: no acknowledged record is missing"),
            (false, 0) => write!(f, "  NOT CLEAN"),
            (false, lost) => write!(
                f,
                "  NOT CLEAN: {lost} acknowledged record(s) lost or at risk: {}",
                ranges_text(&self.lost)
            ),
        }
    }
}

fn ranges_text(ranges: &[OffsetRange]) -> String {
    let shown: Vec<String> = ranges.iter().take(20).map(ToString::to_string).collect();
    match ranges.len() > 20 {
        true => format!("{} and {} more ranges", shown.join(", "), ranges.len() - 20),
        false => shown.join(", "),
    }
}

/// Why the check itself could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Reading or repairing a file failed.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Returns the WAL path of a database path (`<path>-wal`).
pub fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Checks the raw log at `path` (and its WAL); repairs when `options.repair`. Never opens the
/// file for writing unless repairing.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<CheckReport, CheckError> {
    let mut report = CheckReport {
        path: path.to_owned(),
        ..CheckReport::default()
    };
    if !path.exists() {
        report.add(
            Severity::Note,
            "no raw log file yet: nothing to check".to_owned(),
        );
        return Ok(report);
    }
    let wal_file = wal_path(path);
    report.wal = wal::scan(&wal_file).map_err(|source| CheckError::Io {
        action: "read",
        path: wal_file.clone(),
        source,
    })?;
    let committed_lost = report.wal.tail.loses_committed_data();
    describe_wal(&mut report);
    if committed_lost && options.repair {
        set_wal_aside(&mut report, &wal_file)?;
    }
    let flags = match options.repair {
        true => OpenFlags::SQLITE_OPEN_READ_WRITE,
        false => OpenFlags::SQLITE_OPEN_READ_ONLY,
    };
    let conn = match Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX) {
        Ok(conn) => conn,
        Err(error) => {
            report.add(Severity::Damage, format!("sqlite cannot open it: {error}"));
            return Ok(report);
        }
    };
    if let Some(finding) = main_file_size(path) {
        report.add(Severity::Damage, finding);
    }
    let problems = integrity_problems(&conn);
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        report.add(
            Severity::Damage,
            format!(
                "`PRAGMA integrity_check` reported {} problem(s): {}",
                problems.len(),
                shown.join("; ")
            ),
        );
    }
    if let Err(error) = check_bookkeeping(&conn, &mut report, options) {
        report.add(
            Severity::Damage,
            format!("the offset bookkeeping cannot be read: {error}"),
        );
    }
    Ok(report)
}

fn describe_wal(report: &mut CheckReport) {
    let records = report.wal.dropped_records.len();
    match report.wal.tail.clone() {
        WalTail::Clean => {}
        WalTail::Unfinished {
            frames,
            partial_bytes,
        } => report.add(
            Severity::Note,
            format!(
                "wal: {frames} frame(s) of a transaction that never committed ({partial_bytes} byte(s) of a torn last frame; {records} record row(s) in them) are discarded: never acknowledged"
            ),
        ),
        WalTail::CommittedLost {
            reason,
            commits_dropped,
            frames_dropped,
            ..
        } => report.add(
            Severity::Damage,
            format!(
                "wal: {reason}; SQLite would silently drop it and the {frames_dropped} frame(s) from there, {commits_dropped} committed transaction(s) among them ({records} record row(s) in their pages)"
            ),
        ),
        WalTail::BadHeader {
            reason,
            ignored_bytes,
        } => report.add(
            match ignored_bytes > wal::HEADER_BYTES as u64 {
                true => Severity::Damage,
                false => Severity::Note,
            },
            format!("wal: {reason}; SQLite would ignore all {ignored_bytes} bytes of it"),
        ),
    }
}

/// Keeps a copy of the WAL beside it and cuts the WAL where SQLite stops replaying, so that
/// opening it drops exactly what the report names.
fn set_wal_aside(report: &mut CheckReport, wal_file: &Path) -> Result<(), CheckError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut copy_name = wal_file.as_os_str().to_owned();
    copy_name.push(format!(".damaged-{stamp}"));
    let copy = PathBuf::from(copy_name);
    std::fs::copy(wal_file, &copy).map_err(|source| CheckError::Io {
        action: "copy",
        path: wal_file.to_owned(),
        source,
    })?;
    let keep = match &report.wal.tail {
        WalTail::CommittedLost {
            first_bad_frame, ..
        } => {
            let frame_bytes = (wal::FRAME_HEADER_BYTES as u64) + u64::from(report.wal.page_size);
            wal::HEADER_BYTES as u64 + (first_bad_frame - 1) * frame_bytes
        }
        _ => 0,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(wal_file)
        .and_then(|file| file.set_len(keep).and_then(|()| file.sync_all()));
    file.map_err(|source| CheckError::Io {
        action: "truncate",
        path: wal_file.to_owned(),
        source,
    })?;
    report.add(
        Severity::Repaired,
        format!(
            "wal cut to {keep} bytes where SQLite stops replaying; the whole damaged wal is kept as `{}`",
            copy.display()
        ),
    );
    Ok(())
}

/// Compares the main file's length with the page count its header records; returns what is
/// missing when the file is cut short.
fn main_file_size(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let header = bytes.get(..100)?;
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        size => u64::from(size),
    };
    let change_counter = &header[24..28];
    let valid_for = &header[92..96];
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    // The header's page count is only current when written by the same change.
    if page_size == 0 || change_counter != valid_for || pages == 0 {
        return None;
    }
    let expected = pages * page_size;
    let length = bytes.len() as u64;
    (length < expected).then(|| {
        format!(
            "the main file is cut short: {length} bytes, its header says {pages} pages of {page_size} ({} bytes, {} pages missing)",
            expected,
            (expected - length).div_ceil(page_size)
        )
    })
}

fn integrity_problems(conn: &Connection) -> Vec<String> {
    let mut problems = Vec::new();
    let outcome = conn.pragma_query(None, "integrity_check", |row| {
        let line: String = row.get(0)?;
        if line != "ok" {
            problems.push(line);
        }
        Ok(())
    });
    if let Err(error) = outcome {
        problems.push(error.to_string());
    }
    problems
}

/// Per partition: gaps, a missing prefix or suffix, consumed records the log no longer holds,
/// and records that only the dropped WAL frames held.
fn check_bookkeeping(
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
    for (partition, start, next) in stored {
        let present = offsets_of(conn, partition)?;
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
    conn.prepare("SELECT partition_id, log_offset FROM log_records")?
        .query_map([], |row| {
            Ok((row.get::<_, u32>(0)?, from_sql_int(row.get(1)?)))
        })?
        .collect()
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
