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

mod offsets;
pub mod wal;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

pub(crate) use offsets::raise_to_consumed;
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
    // One transaction: beside a running log, a compaction committing between the read of a
    // partition's segments and of its records would otherwise look like missing records.
    let bookkeeping = conn.unchecked_transaction().and_then(|snapshot| {
        offsets::check_bookkeeping(&snapshot, &mut report, options)?;
        snapshot.commit()
    });
    if let Err(error) = bookkeeping {
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
