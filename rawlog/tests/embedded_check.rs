//! The raw log's fsck over real files: a torn WAL commit, bytes flipped in a frame with commits
//! behind it, a truncated main file, and a log that ends before what the sink consumed. Each
//! must be found and named (offsets included), and none may open silently.
//!
//! A WAL with frames is what a SIGKILL leaves: the files are copied while the log is open
//! (a clean close checkpoints the WAL away).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use callhook_rawlog::embedded::check::wal::{self, WalTail};
use callhook_rawlog::embedded::check::{check_file, wal_path, CheckOptions, Severity};
use callhook_rawlog::embedded::{EmbeddedLog, EmbeddedLogConfig, EmbeddedLogError};
use callhook_rawlog::{LogAppender, RawRecord};

const FRAME_HEADER: u64 = wal::FRAME_HEADER_BYTES as u64;
const WAL_HEADER: u64 = wal::HEADER_BYTES as u64;

fn settings(path: &Path) -> callhook_rawlog::embedded::EmbeddedLogSettings {
    let config = EmbeddedLogConfig {
        path: Some(path.to_owned()),
        ..EmbeddedLogConfig::default()
    };
    config.validate(path.parent().unwrap()).unwrap()
}

fn record(index: usize) -> RawRecord {
    RawRecord {
        source: "7moor".to_owned(),
        received_at: chrono::Utc::now(),
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: None,
        request_id: format!("req-{index}"),
        headers: Vec::new(),
        body: Bytes::from(format!(
            "{{\"push\":{index},\"pad\":\"{}\"}}",
            "x".repeat(200)
        )),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `count` records one transaction each, then copies the database and its WAL to
/// `snapshot` while the log is still open (as a SIGKILL would leave them).
fn crashed_log(dir: &Path, count: usize) -> PathBuf {
    let live = dir.join("live/rawlog.db");
    let log = EmbeddedLog::open(settings(&live)).unwrap();
    let runtime = runtime();
    for index in 0..count {
        let position = runtime
            .block_on(log.append("call".to_owned(), record(index)))
            .unwrap();
        assert_eq!(position.offset, index as u64);
    }
    let snapshot = dir.join("crashed/rawlog.db");
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    std::fs::copy(&live, &snapshot).unwrap();
    std::fs::copy(wal_path(&live), wal_path(&snapshot)).unwrap();
    log.close().unwrap();
    snapshot
}

fn frame_bytes(path: &Path) -> u64 {
    FRAME_HEADER + u64::from(wal::scan(&wal_path(path)).unwrap().page_size)
}

fn open_error(path: &Path) -> String {
    match EmbeddedLog::open(settings(path)) {
        Ok(_) => panic!("`{}` opened although damaged", path.display()),
        Err(error @ EmbeddedLogError::Corrupt { .. }) => error.to_string(),
        Err(other) => panic!("expected a corrupt-file error, got {other}"),
    }
}

fn stored_offsets(path: &Path) -> Vec<u64> {
    let log = EmbeddedLog::open(settings(path)).unwrap();
    let reader = log.reader().unwrap();
    let offsets = reader
        .read(0, 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|stored| stored.position.offset)
        .collect();
    log.close().unwrap();
    offsets
}

#[test]
fn test_a_clean_crash_snapshot_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_log(dir.path(), 30);
    let scan = wal::scan(&wal_path(&path)).unwrap();
    assert!(scan.frames > 30, "{scan:?}");
    assert_eq!(scan.tail, WalTail::Clean);
    let report = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.records, 30);
    assert_eq!(report.partitions, vec![(0, 30)]);
    assert_eq!(stored_offsets(&path), (0..30).collect::<Vec<_>>());
}

#[test]
fn test_a_torn_commit_frame_is_named_and_refused_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_log(dir.path(), 30);
    let frame = frame_bytes(&path);
    let wal_file = wal_path(&path);
    let length = std::fs::metadata(&wal_file).unwrap().len();
    // The file now ends inside the last frame (the last transaction's commit frame), its
    // header intact: that transaction (record 29) was committed and acknowledged.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal_file)
        .unwrap()
        .set_len(length - frame + FRAME_HEADER + 100)
        .unwrap();
    let report = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(report.is_damaged(), "{report}");
    assert_eq!(report.lost_records(), 1, "{report}");
    assert_eq!(report.lost[0].to_string(), "0:29");
    let text = report.to_string();
    assert!(
        text.contains("0:29") && text.contains("ends inside frame"),
        "{text}"
    );
    let error = open_error(&path);
    assert!(error.contains("nothing was changed"), "{error}");
    // The refusal changed nothing: the same report again.
    assert_eq!(
        check_file(&path, &CheckOptions::default()).unwrap().lost,
        report.lost
    );

    let repair = CheckOptions {
        repair: true,
        ..CheckOptions::default()
    };
    let repaired = check_file(&path, &repair).unwrap();
    assert_eq!(repaired.lost_records(), 1, "{repaired}");
    assert!(repaired
        .findings
        .iter()
        .any(|finding| finding.severity == Severity::Repaired));
    let kept: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "a copy of the damaged wal is kept");
    assert!(check_file(&path, &CheckOptions::default())
        .unwrap()
        .is_clean());
    assert_eq!(stored_offsets(&path), (0..29).collect::<Vec<_>>());
}

#[test]
fn test_flipped_bytes_with_commits_behind_them_are_not_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_log(dir.path(), 40);
    let frame = frame_bytes(&path);
    let wal_file = wal_path(&path);
    let frames = (std::fs::metadata(&wal_file).unwrap().len() - WAL_HEADER) / frame;
    let mut bytes = std::fs::read(&wal_file).unwrap();
    // Damage a frame a dozen frames before the end: the commits after it are intact.
    let at = (WAL_HEADER + (frames - 12) * frame + FRAME_HEADER + 1000) as usize;
    for byte in &mut bytes[at..at + 8] {
        *byte ^= 0x5a;
    }
    std::fs::write(&wal_file, bytes).unwrap();
    let scan = wal::scan(&wal_file).unwrap();
    let WalTail::CommittedLost {
        commits_dropped, ..
    } = scan.tail
    else {
        panic!("{scan:?}")
    };
    assert!(commits_dropped >= 3, "{scan:?}");
    let report = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(report.is_damaged(), "{report}");
    let lost = report.lost_records();
    assert!(lost >= 3, "{report}");
    // The lost records are the newest ones, named by offset, and exactly those are missing
    // after the repair.
    assert_eq!(report.lost.len(), 1, "{report}");
    assert_eq!(report.lost[0].through, 40, "{report}");
    open_error(&path);
    let repair = CheckOptions {
        repair: true,
        ..CheckOptions::default()
    };
    check_file(&path, &repair).unwrap();
    assert_eq!(stored_offsets(&path), (0..40 - lost).collect::<Vec<_>>());
}

#[test]
fn test_a_truncated_main_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rawlog.db");
    let log = EmbeddedLog::open(settings(&path)).unwrap();
    let runtime = runtime();
    for index in 0..300 {
        runtime
            .block_on(log.append(format!("call-{index}"), record(index)))
            .unwrap();
    }
    log.close().unwrap();
    let length = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let report = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(report.is_damaged(), "{report}");
    assert!(!report.is_clean());
    let text = report.to_string();
    assert!(text.contains("integrity_check"), "{text}");
    assert!(text.contains("cut short"), "{text}");
    open_error(&path);
}

#[test]
fn test_a_log_that_ends_before_the_sink_never_reuses_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rawlog.db");
    let log = EmbeddedLog::open(settings(&path)).unwrap();
    let runtime = runtime();
    for index in 0..5 {
        runtime
            .block_on(log.append("call".to_owned(), record(index)))
            .unwrap();
    }
    log.close().unwrap();
    // The sink consumed up to offset 8: records 5..7 were acknowledged, then lost (an older
    // copy of the file was restored, say).
    let consumed = BTreeMap::from([(0, 8)]);
    let options = CheckOptions {
        consumed: consumed.clone(),
        repair: false,
    };
    let report = check_file(&path, &options).unwrap();
    assert_eq!(report.lost_records(), 3, "{report}");
    assert_eq!(report.lost[0].to_string(), "0:5..7");
    let log = EmbeddedLog::open_after(settings(&path), &consumed).unwrap();
    let position = runtime
        .block_on(log.append("call".to_owned(), record(99)))
        .unwrap();
    assert_eq!(
        position.offset, 8,
        "the new push gets an offset the sink has not consumed"
    );
    log.close().unwrap();
}
