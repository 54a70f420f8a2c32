//! Tests of compaction over real SQLite files: readers see the same records whether compacted
//! or not, offsets never move, retention deletes whole segments, and a damaged segment is
//! reported and read as undecodable records.

use rusqlite::Connection;

use super::check::{check_file, CheckOptions, Severity};
use super::telemetry::METRICS;
use super::tests::{append_acked, now_ms, read_all, record, record_at, settings};
use super::*;
use crate::StoredRecord;

/// Opens a log compacting in chunks of 4 records, with periodic passes out of the way.
fn open_small_chunks(dir: &std::path::Path) -> EmbeddedLog {
    EmbeddedLog::open(settings(dir, |config| {
        config.compact_chunk_records = 4;
        config.retention_check_interval_ms = 3_600_000;
    }))
    .unwrap()
}

fn snapshot_all(snapshot: &LogSnapshot) -> Vec<ReadRecord> {
    let mut records = Vec::new();
    let mut next = 0;
    loop {
        let chunk = snapshot.read_each(0, next, 3).unwrap();
        let Some(last) = chunk.last() else {
            return records;
        };
        next = last.position().offset + 1;
        records.extend(chunk);
    }
}

fn decoded(records: &[ReadRecord]) -> Vec<StoredRecord> {
    records
        .iter()
        .map(|record| match record {
            ReadRecord::Decoded(stored) => stored.clone(),
            ReadRecord::Undecodable(kept) => panic!("undecodable {}", kept.position),
        })
        .collect()
}

fn segment_rows(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM log_segments", [], |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn test_compaction_round_trip_keeps_records_offsets_and_only_consumed_whole_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small_chunks(dir.path());
    for index in 0..11 {
        append_acked(&log, "k", record(index)).await;
    }
    let reader = log.reader().unwrap();
    let before = read_all(&reader, 0);
    assert_eq!(
        log.compact().await.unwrap(),
        0,
        "no group: nothing consumed"
    );
    reader.commit("g", 0, 10).unwrap();
    let records_before = METRICS.compacted_records.get();
    assert_eq!(
        log.compact().await.unwrap(),
        8,
        "two whole chunks below the committed offset; 8 and 9 wait for a third"
    );
    assert!(METRICS.compacted_records.get() >= records_before + 8);
    assert!(METRICS.compaction_output_bytes.get() > 0);
    assert_eq!(segment_rows(&log.settings().path), 2);
    assert_eq!(
        read_all(&reader, 0),
        before,
        "byte for byte, offsets included"
    );
    // Across the boundary between a segment and plain rows, and from inside a segment.
    let across: Vec<u64> = reader
        .read(0, 6, 4)
        .unwrap()
        .iter()
        .map(|stored| stored.position.offset)
        .collect();
    assert_eq!(across, vec![6, 7, 8, 9]);
    assert_eq!(reader.read(0, 5, 1).unwrap()[0], before[5]);
    let snapshot = LogSnapshot::open(&log.settings().path).unwrap();
    assert_eq!(decoded(&snapshot_all(&snapshot)), before);
    assert_eq!(snapshot.records().unwrap(), 11);
    assert_eq!(
        snapshot
            .first_offset_since(0, before[6].record.received_at.timestamp_millis())
            .unwrap(),
        6
    );
    assert_eq!(reader.log_start_offset(0).unwrap(), 0);
    assert_eq!(reader.high_watermark(0).unwrap(), 11);
}

#[tokio::test]
async fn test_reopen_after_compaction_keeps_offsets_and_check_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small_chunks(dir.path());
    for index in 0..9 {
        append_acked(&log, "k", record(index)).await;
    }
    let reader = log.reader().unwrap();
    reader.commit("g", 0, 9).unwrap();
    let before = read_all(&reader, 0);
    assert_eq!(log.compact().await.unwrap(), 8);
    drop(reader);
    log.close().unwrap();
    let path = log.settings().path.clone();
    let report = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.records, 9);
    assert_eq!(report.partitions, vec![(0, 9)]);
    let reopened = open_small_chunks(dir.path());
    let reader = reopened.reader().unwrap();
    assert_eq!(
        (
            reader.log_start_offset(0).unwrap(),
            reader.high_watermark(0).unwrap()
        ),
        (0, 9)
    );
    assert_eq!(
        append_acked(&reopened, "k", record(9)).await.offset,
        9,
        "offsets never restart"
    );
    assert_eq!(read_all(&reader, 0)[..9], before[..]);
}

#[tokio::test]
async fn test_retention_deletes_whole_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.compact_chunk_records = 4;
        config.retention_days = Some(7);
        config.retention_check_interval_ms = 3_600_000;
    }))
    .unwrap();
    let old = now_ms() - chrono::Duration::days(10);
    // Segment 0..3 is old; segment 4..7 has one young record (7); 8..9 are old plain rows.
    for index in 0..7 {
        append_acked(&log, "k", record_at(index, old)).await;
    }
    append_acked(&log, "k", record_at(7, now_ms())).await;
    for index in 8..10 {
        append_acked(&log, "k", record_at(index, old)).await;
    }
    let reader = log.reader().unwrap();
    reader.commit("g", 0, 10).unwrap();
    assert_eq!(log.compact().await.unwrap(), 8);
    assert_eq!(
        log.enforce_retention().await.unwrap(),
        4,
        "the old segment goes; the young one and everything after it stay"
    );
    assert_eq!(reader.log_start_offset(0).unwrap(), 4);
    let kept: Vec<u64> = read_all(&reader, 0)
        .iter()
        .map(|stored| stored.position.offset)
        .collect();
    assert_eq!(kept, (4..10).collect::<Vec<u64>>());
    assert_eq!(segment_rows(&log.settings().path), 1);
}

#[tokio::test]
async fn test_damaged_segment_reads_as_undecodable_records_and_check_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small_chunks(dir.path());
    for index in 0..6 {
        append_acked(&log, "k", record(index)).await;
    }
    let reader = log.reader().unwrap();
    reader.commit("g", 0, 6).unwrap();
    assert_eq!(log.compact().await.unwrap(), 4);
    let path = log.settings().path.clone();
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE log_segments SET data = substr(data, 1, length(data) / 2)",
            [],
        )
        .unwrap();
    let records = reader.read_each(0, 0, 100).unwrap();
    assert_eq!(records.len(), 6, "one record per offset, damaged or not");
    for record in &records[..4] {
        match record {
            ReadRecord::Undecodable(kept) => {
                assert!(kept.detail.contains("0:0..3"), "{}", kept.detail)
            }
            ReadRecord::Decoded(stored) => panic!("{} decoded", stored.position),
        }
    }
    assert!(matches!(records[4], ReadRecord::Decoded(_)));
    assert!(
        reader.read(0, 0, 10).is_err(),
        "`read` refuses what it cannot decode"
    );
    drop(reader);
    log.close().unwrap();
    let report = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(!report.is_clean(), "{report}");
    assert_eq!(report.lost_records(), 4);
    assert!(report
        .findings
        .iter()
        .any(|finding| finding.severity == Severity::Loss
            && finding.message.contains("compacted segment 0:0..3")));
}

#[tokio::test]
async fn test_version_one_file_is_read_as_is_and_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small_chunks(dir.path());
    for index in 0..5 {
        append_acked(&log, "k", record(index)).await;
    }
    log.close().unwrap();
    let path = log.settings().path.clone();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE log_segments; UPDATE log_meta SET value = 1 WHERE name = 'schema_version';",
    )
    .unwrap();
    drop(conn);
    let snapshot = LogSnapshot::open(&path).unwrap();
    assert_eq!(snapshot.records().unwrap(), 5, "a reader does not migrate");
    assert_eq!(snapshot_all(&snapshot).len(), 5);
    drop(snapshot);
    let reopened = open_small_chunks(dir.path());
    let reader = reopened.reader().unwrap();
    reader.commit("g", 0, 5).unwrap();
    assert_eq!(reopened.compact().await.unwrap(), 4);
    assert_eq!(read_all(&reader, 0).len(), 5);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM log_meta WHERE name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(version, 2);
}

#[tokio::test]
async fn test_periodic_compaction_runs_on_the_writer_thread_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.compact_chunk_records = 2;
        config.retention_days = Some(0);
        config.retention_check_interval_ms = 10;
    }))
    .unwrap();
    for index in 0..4 {
        append_acked(&log, "k", record(index)).await;
    }
    log.reader().unwrap().commit("g", 0, 4).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment_rows(&log.settings().path) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(segment_rows(&log.settings().path), 2);
    let off_dir = tempfile::tempdir().unwrap();
    let off = EmbeddedLog::open(settings(off_dir.path(), |config| {
        config.compact = false;
        config.compact_chunk_records = 1;
    }))
    .unwrap();
    append_acked(&off, "k", record(0)).await;
    off.reader().unwrap().commit("g", 0, 1).unwrap();
    assert_eq!(off.compact().await.unwrap(), 0);
}
