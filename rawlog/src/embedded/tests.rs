//! Tests of the embedded log over real SQLite files in temporary directories.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use rusqlite::Connection;

use super::partition::partition_for_key;
use super::telemetry::METRICS;
use super::*;
use crate::{AppendError, LogAppender, Position, RawRecord, StoredRecord};

/// A fixed instant (2024-11-14), so `record(i)` is reproducible.
const BASE_RECEIVED_AT_MS: i64 = 1_731_542_400_000;

pub(super) fn settings(
    dir: &Path,
    edit: impl FnOnce(&mut EmbeddedLogConfig),
) -> EmbeddedLogSettings {
    let mut config = EmbeddedLogConfig::default();
    edit(&mut config);
    config.validate(dir).unwrap()
}

pub(super) fn record_at(index: usize, received_at: DateTime<Utc>) -> RawRecord {
    let mut body = vec![0xff, 0xfe, 0x00, 0xc3, 0x28, b'{'];
    body.extend_from_slice(index.to_string().as_bytes());
    body.extend_from_slice(&[0x80, 0x00, b'}']);
    RawRecord {
        source: "7moor".to_owned(),
        received_at,
        method: "POST".to_owned(),
        content_type: Some("application/x-www-form-urlencoded; charset=GBK".to_owned()),
        query: Some(format!("sign=a%2Fb&seq={index}")),
        remote_addr: Some("203.0.113.9:41000".to_owned()),
        request_id: format!("req-{index}"),
        headers: vec![
            ("x-signature".to_owned(), "c2lnbmF0dXJl".to_owned()),
            (
                "x-odd".to_owned(),
                "ünï \"quoted\" \\ [\"a\",\"b\"] \u{0}\t呼叫".to_owned(),
            ),
            ("x-odd".to_owned(), String::new()),
        ],
        body: Bytes::from(body),
    }
}

pub(super) fn record(index: usize) -> RawRecord {
    record_at(
        index,
        DateTime::from_timestamp_millis(BASE_RECEIVED_AT_MS + index as i64).unwrap(),
    )
}

pub(super) fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

pub(super) fn read_all(reader: &LogReader, partition: u32) -> Vec<StoredRecord> {
    let mut records = Vec::new();
    let mut next = 0;
    loop {
        let chunk = reader.read(partition, next, 64).unwrap();
        let Some(last) = chunk.last() else {
            return records;
        };
        next = last.position.offset + 1;
        records.extend(chunk);
    }
}

/// Appends sequentially, one acknowledged record at a time.
pub(super) async fn append_acked(log: &EmbeddedLog, key: &str, record: RawRecord) -> Position {
    log.append(key.to_owned(), record).await.unwrap()
}

fn open_blocker(path: &Path) -> Connection {
    let blocker = Connection::open(path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE;").unwrap();
    blocker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_concurrent_appends_get_distinct_gapless_offsets_and_read_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|index| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                (
                    index,
                    log.append(format!("key-{index}"), record(index))
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut index_by_offset = vec![usize::MAX; 200];
    for task in tasks {
        let (index, position) = task.await.unwrap();
        assert_eq!(position.partition, 0);
        assert_eq!(
            index_by_offset[position.offset as usize],
            usize::MAX,
            "offset handed out twice"
        );
        index_by_offset[position.offset as usize] = index;
    }
    let reader = log.reader().unwrap();
    assert_eq!(reader.high_watermark(0).unwrap(), 200);
    let stored = read_all(&reader, 0);
    assert_eq!(stored.len(), 200);
    for (expected_offset, stored_record) in stored.iter().enumerate() {
        let index = index_by_offset[expected_offset];
        assert_eq!(
            stored_record.position,
            Position {
                partition: 0,
                offset: expected_offset as u64
            }
        );
        assert_eq!(stored_record.key, format!("key-{index}"));
        assert_eq!(stored_record.record, record(index));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_group_commit_writes_many_records_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    let batches_observed_before = METRICS.batch_records.get_sample_count();
    // `append` queues at call time, so all 1000 are queued before the first commit finishes.
    let pending: Vec<_> = (0..1000)
        .map(|index| tokio::spawn(log.append(format!("k{index}"), record(index))))
        .collect();
    for append in pending {
        append.await.unwrap().unwrap();
    }
    let stats = log.stats();
    assert_eq!(stats.records_committed, 1000);
    assert!(
        stats.largest_batch_records > 1,
        "no batch held more than one record: {stats:?}"
    );
    assert!(
        stats.largest_batch_records <= 512,
        "batch exceeded max_batch_records: {stats:?}"
    );
    assert!(
        stats.batches_committed < 1000,
        "one commit per record: {stats:?}"
    );
    assert!(
        METRICS.batch_records.get_sample_count()
            >= batches_observed_before + stats.batches_committed
    );
}

#[tokio::test]
async fn test_reopen_after_close_keeps_records_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    for index in 0..5 {
        assert_eq!(
            append_acked(&log, "same", record(index)).await.offset,
            index as u64
        );
    }
    log.close().unwrap();
    drop(log);
    let reopened = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    assert_eq!(append_acked(&reopened, "same", record(5)).await.offset, 5);
    let stored = read_all(&reopened.reader().unwrap(), 0);
    let expected: Vec<RawRecord> = (0..6).map(record).collect();
    assert_eq!(
        stored
            .into_iter()
            .map(|stored| stored.record)
            .collect::<Vec<_>>(),
        expected
    );
}

#[tokio::test]
async fn test_crash_image_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    for index in 0..20 {
        append_acked(&log, "k", record(index)).await;
    }
    // What a crash leaves on disk: the main file and the WAL, no clean close, no checkpoint,
    // no shared-memory index. The writer is idle, so the files are not changing.
    let crashed = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let from = dir.path().join(format!("rawlog.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, crashed.path().join(format!("rawlog.db{suffix}"))).unwrap();
        }
    }
    assert!(
        crashed.path().join("rawlog.db-wal").exists(),
        "the test needs an uncheckpointed WAL"
    );
    let recovered = EmbeddedLog::open(settings(crashed.path(), |_| {})).unwrap();
    let stored = read_all(&recovered.reader().unwrap(), 0);
    assert_eq!(stored.len(), 20);
    assert!(stored
        .iter()
        .enumerate()
        .all(|(index, stored)| stored.record == record(index)));
    assert_eq!(append_acked(&recovered, "k", record(20)).await.offset, 20);
}

#[tokio::test]
async fn test_keys_map_to_stable_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let four_partitions = |config: &mut EmbeddedLogConfig| config.partitions = 4;
    let log = EmbeddedLog::open(settings(dir.path(), four_partitions)).unwrap();
    let mut first_positions = Vec::new();
    for index in 0..40 {
        let key = format!("call-{index}");
        let position = append_acked(&log, &key, record(index)).await;
        assert_eq!(position.partition, partition_for_key(&key, 4));
        first_positions.push(position);
    }
    for (index, first) in first_positions.iter().enumerate() {
        let again = append_acked(&log, &format!("call-{index}"), record(index)).await;
        assert_eq!(again.partition, first.partition);
        assert!(again.offset > first.offset);
    }
    let reader = log.reader().unwrap();
    let high_watermarks: Vec<u64> = (0..4)
        .map(|partition| reader.high_watermark(partition).unwrap())
        .collect();
    assert_eq!(high_watermarks.iter().sum::<u64>(), 80);
    assert!(
        high_watermarks.iter().filter(|count| **count > 0).count() > 1,
        "{high_watermarks:?}"
    );
    for partition in 0..4 {
        let stored = read_all(&reader, partition);
        assert!(stored
            .iter()
            .all(|stored| partition_for_key(&stored.key, 4) == partition));
        assert!(stored
            .iter()
            .enumerate()
            .all(|(offset, stored)| stored.position.offset == offset as u64));
    }
    drop(reader);
    log.close().unwrap();
    let reopened = EmbeddedLog::open(settings(dir.path(), four_partitions)).unwrap();
    assert_eq!(
        append_acked(&reopened, "call-7", record(0)).await.partition,
        first_positions[7].partition
    );
}

#[tokio::test]
async fn test_committed_offsets_are_per_group_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    for index in 0..10 {
        append_acked(&log, "k", record(index)).await;
    }
    let reader = log.reader().unwrap();
    assert_eq!(reader.committed("normalizer", 0).unwrap(), None);
    reader.commit("normalizer", 0, 4).unwrap();
    reader.commit("audit", 0, 10).unwrap();
    reader.commit("audit", 0, 9).unwrap();
    assert_eq!(reader.committed("normalizer", 0).unwrap(), Some(4));
    assert_eq!(reader.committed("audit", 0).unwrap(), Some(9));
    assert_eq!(log.unconsumed_records(), 6);
    assert!(matches!(
        reader.commit("audit", 0, 11),
        Err(EmbeddedLogError::OffsetBeyondHighWatermark {
            high_watermark: 10,
            ..
        })
    ));
    assert!(matches!(
        reader.commit("audit", 1, 0),
        Err(EmbeddedLogError::UnknownPartition { .. })
    ));
    assert!(matches!(
        reader.commit("", 0, 0),
        Err(EmbeddedLogError::EmptyGroup)
    ));
    drop(reader);
    log.close().unwrap();
    drop(log);
    let reopened = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    let reader = reopened.reader().unwrap();
    assert_eq!(reader.committed("normalizer", 0).unwrap(), Some(4));
    assert_eq!(reader.committed("audit", 0).unwrap(), Some(9));
    assert_eq!(reopened.unconsumed_records(), 6);
}

#[tokio::test]
async fn test_retention_deletes_only_records_every_group_consumed_and_old() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.retention_days = Some(7)
    }))
    .unwrap();
    let ten_days_ago = now_ms() - chrono::Duration::days(10);
    for index in 0..5 {
        append_acked(&log, "k", record_at(index, ten_days_ago)).await;
    }
    for index in 5..8 {
        append_acked(&log, "k", record_at(index, now_ms())).await;
    }
    let deleted_before = METRICS.retention_deleted.get();
    let reader = log.reader().unwrap();
    assert_eq!(
        log.enforce_retention().await.unwrap(),
        0,
        "no group: nothing is consumed"
    );
    reader.commit("a", 0, 8).unwrap();
    reader.commit("b", 0, 3).unwrap();
    assert_eq!(
        log.enforce_retention().await.unwrap(),
        3,
        "only what `b` consumed may go"
    );
    assert_eq!(reader.log_start_offset(0).unwrap(), 3);
    assert_eq!(reader.read(0, 0, 100).unwrap()[0].position.offset, 3);
    reader.commit("b", 0, 8).unwrap();
    assert_eq!(
        log.enforce_retention().await.unwrap(),
        2,
        "consumed but young records stay"
    );
    assert_eq!(reader.log_start_offset(0).unwrap(), 5);
    let kept: Vec<u64> = read_all(&reader, 0)
        .iter()
        .map(|stored| stored.position.offset)
        .collect();
    assert_eq!(kept, vec![5, 6, 7]);
    assert!(METRICS.retention_deleted.get() >= deleted_before + 5);
    assert_eq!(
        append_acked(&log, "k", record(8)).await.offset,
        8,
        "offsets never restart"
    );
    drop(reader);
    log.close().unwrap();
    let reopened = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    let reader = reopened.reader().unwrap();
    assert_eq!(
        (
            reader.log_start_offset(0).unwrap(),
            reader.high_watermark(0).unwrap()
        ),
        (5, 9)
    );
}

#[tokio::test]
async fn test_retention_days_zero_keeps_consumed_records_forever() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.retention_days = Some(0)
    }))
    .unwrap();
    let ten_years_ago = now_ms() - chrono::Duration::days(3650);
    for index in 0..4 {
        append_acked(&log, "k", record_at(index, ten_years_ago)).await;
    }
    let reader = log.reader().unwrap();
    reader.commit("g", 0, 4).unwrap();
    assert_eq!(log.enforce_retention().await.unwrap(), 0);
    assert_eq!(read_all(&reader, 0).len(), 4);
}

#[tokio::test]
async fn test_retention_max_records_deletes_consumed_records_beyond_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.retention_max_records = Some(2)
    }))
    .unwrap();
    for index in 0..6 {
        append_acked(&log, "k", record_at(index, now_ms())).await;
    }
    let reader = log.reader().unwrap();
    reader.commit("g", 0, 3).unwrap();
    assert_eq!(
        log.enforce_retention().await.unwrap(),
        3,
        "never past the committed offset"
    );
    reader.commit("g", 0, 6).unwrap();
    assert_eq!(
        log.enforce_retention().await.unwrap(),
        1,
        "keeps the newest two"
    );
    assert_eq!(reader.log_start_offset(0).unwrap(), 4);
    assert_eq!(read_all(&reader, 0).len(), 2);
}

#[tokio::test]
async fn test_periodic_retention_runs_on_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.retention_hours = Some(0);
        config.retention_check_interval_ms = 10;
    }))
    .unwrap();
    for index in 0..3 {
        append_acked(&log, "k", record(index)).await;
    }
    let reader = log.reader().unwrap();
    reader.commit("g", 0, 2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.log_start_offset(0).unwrap() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reader.log_start_offset(0).unwrap(), 2);
    assert_eq!(read_all(&reader, 0).len(), 1, "the unconsumed record stays");
}

#[tokio::test]
async fn test_append_overloaded_when_pending_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.max_pending_appends = 2;
        config.max_batch_records = 1;
    }))
    .unwrap();
    // Holding the write lock stalls the writer on its first record: at most one record in its
    // hands and two in the queue, so the fourth append cannot be queued.
    let blocker = open_blocker(&log.settings().path);
    let pending: Vec<_> = (0..4)
        .map(|index| log.append("k".to_owned(), record(index)))
        .collect();
    blocker.execute_batch("ROLLBACK;").unwrap();
    let mut acked = Vec::new();
    let mut overloaded = 0;
    for append in pending {
        match append.await {
            Ok(position) => acked.push(position.offset),
            Err(AppendError::Overloaded(what)) => {
                assert_eq!(what, "pending appends");
                overloaded += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(overloaded >= 1);
    assert!(acked.len() >= 2, "{acked:?}");
    assert_eq!(acked, (0..acked.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn test_append_overloaded_past_unconsumed_bound_until_a_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |config| {
        config.max_unconsumed_records = 3
    }))
    .unwrap();
    // Ten at once: the reservation lets exactly three through.
    let pending: Vec<_> = (0..10)
        .map(|index| log.append("k".to_owned(), record(index)))
        .collect();
    let mut acked = 0;
    for append in pending {
        match append.await {
            Ok(_) => acked += 1,
            Err(error) => assert!(matches!(
                error,
                AppendError::Overloaded("unconsumed records")
            )),
        }
    }
    assert_eq!(acked, 3);
    assert!(log.check_writable().is_err());
    log.reader().unwrap().commit("g", 0, 2).unwrap();
    assert!(log.check_writable().is_ok());
    assert_eq!(append_acked(&log, "k", record(3)).await.offset, 3);
    assert_eq!(append_acked(&log, "k", record(4)).await.offset, 4);
    assert!(matches!(
        log.append("k".to_owned(), record(5)).await,
        Err(AppendError::Overloaded(_))
    ));
}

#[tokio::test]
async fn test_commit_failure_answers_unavailable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log =
        EmbeddedLog::open(settings(dir.path(), |config| config.busy_timeout_ms = 50)).unwrap();
    let blocker = open_blocker(&log.settings().path);
    let failed = log.append("k".to_owned(), record(0)).await;
    assert!(
        matches!(failed, Err(AppendError::Unavailable(_))),
        "{failed:?}"
    );
    let reason = log.check_writable().unwrap_err();
    assert!(reason.contains("commit failed"), "{reason}");
    assert_eq!(log.stats().batches_failed, 1);
    blocker.execute_batch("ROLLBACK;").unwrap();
    assert_eq!(
        append_acked(&log, "k", record(1)).await.offset,
        0,
        "the failed record took no offset"
    );
    assert_eq!(log.check_writable(), Ok(()));
    assert_eq!(read_all(&log.reader().unwrap(), 0).len(), 1);
}

#[test]
fn test_open_rejects_garbage_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..16_384u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("rawlog.db"), garbage).unwrap();
    let error = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap_err();
    assert!(matches!(error, EmbeddedLogError::Corrupt { .. }), "{error}");
}

#[test]
fn test_open_rejects_another_programs_database_and_a_partition_change() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE calls (id TEXT);")
        .unwrap();
    let foreign_settings = settings(dir.path(), |config| config.path = Some(foreign.clone()));
    let error = EmbeddedLog::open(foreign_settings).unwrap_err();
    assert!(
        matches!(error, EmbeddedLogError::NotARawLog { .. }),
        "{error}"
    );

    drop(EmbeddedLog::open(settings(dir.path(), |config| config.partitions = 2)).unwrap());
    let error =
        EmbeddedLog::open(settings(dir.path(), |config| config.partitions = 3)).unwrap_err();
    assert!(
        matches!(
            error,
            EmbeddedLogError::PartitionCountChanged {
                stored: 2,
                configured: 3,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn test_open_repairs_next_offset_behind_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    for index in 0..5 {
        append_acked(&log, "k", record(index)).await;
    }
    log.close().unwrap();
    let path = log.settings().path.clone();
    drop(log);
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE log_partitions SET next_offset = 2", [])
        .unwrap();
    let reopened = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    assert_eq!(reopened.reader().unwrap().high_watermark(0).unwrap(), 5);
    assert_eq!(append_acked(&reopened, "k", record(5)).await.offset, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_readers_are_woken_after_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    let reader = log.reader().unwrap();
    let seen = reader.append_generation();
    assert_eq!(
        reader.wait_for_append(seen, Duration::from_millis(5)),
        seen,
        "times out without appends"
    );
    let mut subscription = log.subscribe();
    // The reader moves to its own thread, as a consumer's would.
    let waiter = std::thread::spawn(move || {
        let woken_at = reader.wait_for_append(seen, Duration::from_secs(10));
        (woken_at, reader.read(0, 0, 10).unwrap().len())
    });
    append_acked(&log, "k", record(0)).await;
    let (woken_at, visible) = waiter.join().unwrap();
    assert!(woken_at > seen);
    assert_eq!(visible, 1, "a woken reader sees the committed record");
    tokio::time::timeout(Duration::from_secs(10), subscription.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*subscription.borrow() > seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_close_writes_queued_appends_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap());
    let pending: Vec<_> = (0..50)
        .map(|index| log.append("k".to_owned(), record(index)))
        .collect();
    let closing = Arc::clone(&log);
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap()
        .unwrap();
    for append in pending {
        append.await.unwrap();
    }
    assert!(matches!(
        log.append("k".to_owned(), record(50)).await,
        Err(AppendError::Unavailable(_))
    ));
    assert!(log.check_writable().is_err());
    drop(log);
    let reopened = EmbeddedLog::open(settings(dir.path(), |_| {})).unwrap();
    assert_eq!(reopened.reader().unwrap().high_watermark(0).unwrap(), 50);
}

fn any_record() -> impl Strategy<Value = (String, RawRecord)> {
    // Any Unicode scalar values, control characters and NUL included.
    let text = "(?s).{0,24}";
    (
        (
            text,
            text,
            0i64..8_000_000_000_000,
            prop_oneof![Just("GET"), Just("POST")],
        ),
        (
            proptest::option::of(text),
            proptest::option::of(text),
            proptest::option::of(text),
        ),
        (text, proptest::collection::vec((text, text), 0..4)),
        proptest::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(
            |(
                (key, source, received_at_ms, method),
                (content_type, query, remote_addr),
                (request_id, headers),
                body,
            )| {
                let record = RawRecord {
                    source,
                    received_at: DateTime::from_timestamp_millis(received_at_ms).unwrap(),
                    method: method.to_owned(),
                    content_type,
                    query,
                    remote_addr,
                    request_id,
                    headers,
                    body: Bytes::from(body),
                };
                (key, record)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn test_arbitrary_records_round_trip_byte_for_byte(records in proptest::collection::vec(any_record(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let log = EmbeddedLog::open(settings(dir.path(), |config| config.partitions = 3)).unwrap();
        let pending: Vec<_> = records.iter().map(|(key, record)| log.append(key.clone(), record.clone())).collect();
        let positions: Vec<Position> = runtime.block_on(async {
            let mut positions = Vec::new();
            for append in pending {
                positions.push(append.await.unwrap());
            }
            positions
        });
        let reader = log.reader().unwrap();
        for ((key, record), position) in records.iter().zip(positions) {
            prop_assert_eq!(position.partition, partition_for_key(key, 3));
            let stored = reader.read(position.partition, position.offset, 1).unwrap();
            prop_assert_eq!(stored.len(), 1);
            prop_assert_eq!(&stored[0].position, &position);
            prop_assert_eq!(&stored[0].key, key);
            prop_assert_eq!(&stored[0].record, record);
        }
    }
}
