//! Bytes on disk per push: the raw log before and after compaction, and the sink, on whatever
//! the caller filled them with (`normalizer-bench --phases drain,disk` on the realistic
//! workload). The figures behind README's "Retention and disk sizing".
//!
//! "Used" bytes are the pages SQLite holds data in (`page_count - freelist_count`, WAL
//! included): compaction frees pages inside the file rather than shrinking it, and new appends
//! reuse them, so used bytes are what a log in steady state grows by.

use std::path::Path;
use std::time::Instant;

use callhook_rawlog::embedded::{EmbeddedLog, LogSnapshot};
use serde_json::json;

/// The consumer group the normalizer commits under by default.
const NORMALIZER_GROUP: &str = "normalizer";

/// Marks the whole log consumed (as the normalizer does after a drain), compacts it, and
/// returns the raw log's bytes per push before and after, the compaction and sequential-read
/// rates, and the sink's bytes per push when `sink` exists.
pub fn measure(log: &EmbeddedLog, pushes: u64, sink: &Path) -> anyhow::Result<serde_json::Value> {
    let path = log.settings().path.clone();
    let reader = log.reader()?;
    for partition in 0..log.partitions() {
        reader.commit(
            NORMALIZER_GROUP,
            partition,
            reader.high_watermark(partition)?,
        )?;
    }
    let before = used_bytes(&path)?;
    let read_before = sequential_read(&path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let compacted = runtime.block_on(log.compact())?;
    let compact_seconds = started.elapsed().as_secs_f64();
    let after = used_bytes(&path)?;
    let read_after = sequential_read(&path)?;
    let (raw_bytes, stored_bytes): (i64, i64) = rusqlite::Connection::open(&path)?.query_row(
        "SELECT COALESCE(SUM(raw_bytes), 0), COALESCE(SUM(stored_bytes), 0) FROM log_segments",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let per_push = |bytes: u64| bytes as f64 / pushes.max(1) as f64;
    let sink_bytes = match sink.exists() {
        true => Some(used_bytes(sink)?),
        false => None,
    };
    Ok(json!({
        "pushes": pushes,
        "rawlog_used_bytes_uncompacted": before,
        "rawlog_used_bytes_compacted": after,
        "rawlog_file_bytes": file_bytes(&path),
        "rawlog_bytes_per_push_uncompacted": per_push(before),
        "rawlog_bytes_per_push_compacted": per_push(after),
        "records_compacted": compacted,
        "compact_seconds": compact_seconds,
        "compact_records_per_second": compacted as f64 / compact_seconds,
        "segment_payload_bytes": raw_bytes,
        "segment_zstd_bytes": stored_bytes,
        "zstd_ratio": raw_bytes as f64 / stored_bytes.max(1) as f64,
        "read_records_per_second_uncompacted": read_before,
        "read_records_per_second_compacted": read_after,
        "sink_used_bytes": sink_bytes,
        "sink_bytes_per_push": sink_bytes.map(per_push),
    }))
}

/// Bytes of the pages holding data, the WAL's latest pages included.
fn used_bytes(path: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let pragma = |name: &str| -> anyhow::Result<i64> {
        Ok(conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))?)
    };
    let pages = pragma("page_count")? - pragma("freelist_count")?;
    Ok(u64::try_from(pages * pragma("page_size")?).unwrap_or(0))
}

/// The main file and its WAL.
fn file_bytes(path: &Path) -> u64 {
    let wal = callhook_rawlog::embedded::check::wal_path(path);
    [path, wal.as_path()]
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|meta| meta.len())
        .sum()
}

/// Reads every record in order, as replay does; returns records per second.
fn sequential_read(path: &Path) -> anyhow::Result<f64> {
    let snapshot = LogSnapshot::open(path)?;
    let started = Instant::now();
    let mut records = 0u64;
    for partition in 0..snapshot.partitions() {
        let (mut next, end) = snapshot.bounds(partition)?;
        while next < end {
            let chunk = snapshot.read_each(partition, next, 5_000)?;
            let Some(last) = chunk.last() else { break };
            next = last.position().offset + 1;
            records += chunk.len() as u64;
        }
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}
