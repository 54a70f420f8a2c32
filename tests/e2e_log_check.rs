//! A damaged raw log, end to end with the real binary: `callhook serve` refuses to start on it
//! with a message that names `callhook log check`, and `callhook log check` exits non-zero with
//! a report of what is damaged; on a clean log it exits 0. A log that lost records the sink had
//! consumed gets its next offset raised at start, so new pushes are not skipped.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;

fn push(n: usize) -> String {
    format!(
        r#"{{"eventUniqueId":"logcheck-{n}","accountId":"1","callUniqueId":"logcheck-call-{n}","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001"}}"#
    )
}

fn log_check(data: &Path, repair: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
    command.args(["log", "check", "--data-dir"]).arg(data);
    if repair {
        command.arg("--repair");
    }
    command.output().expect("run callhook log check")
}

/// Runs `serve` on `data` and returns its output when it exits by itself (a refusal).
fn refused_start(data: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .expect("run callhook serve");
    assert!(
        !output.status.success(),
        "serve started on a damaged raw log"
    );
    output
}

fn fill(data: &Path, pushes: std::ops::Range<usize>) {
    let server = Server::start(data, None);
    for n in pushes {
        let (status, _) = server.request(
            "POST",
            "/hooks/7moor",
            Some("application/json"),
            push(n).as_bytes(),
        );
        assert_eq!(status, 200);
    }
    server.wait_until_normalized();
    assert!(server.terminate().success());
}

#[test]
fn test_a_truncated_raw_log_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, 0..300);
    let clean = log_check(&data, false);
    let report = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{report}");
    assert!(report.contains("clean"), "{report}");

    let rawlog = data.join("rawlog.db");
    let length = std::fs::metadata(&rawlog).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&rawlog)
        .unwrap();
    file.set_len(length / 2).unwrap();
    drop(file);

    let refused = refused_start(&data);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("callhook log check"), "{stderr}");
    let damaged = log_check(&data, false);
    let report = String::from_utf8_lossy(&damaged.stdout);
    assert!(!damaged.status.success(), "{report}");
    assert!(
        report.contains("DAMAGE") && report.contains("cut short"),
        "{report}"
    );
}

#[test]
fn test_a_raw_log_behind_the_sink_never_skips_new_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, 0..3);
    // An older copy of the raw log, restored after more pushes were consumed.
    let older = dir.path().join("rawlog.db.old");
    std::fs::copy(data.join("rawlog.db"), &older).unwrap();
    fill(&data, 3..8);
    std::fs::copy(&older, data.join("rawlog.db")).unwrap();
    let _ = std::fs::remove_file(data.join("rawlog.db-wal"));
    let _ = std::fs::remove_file(data.join("rawlog.db-shm"));

    let report = log_check(&data, false);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(!report.status.success(), "{text}");
    assert!(text.contains("records 0:3..7 were acknowledged"), "{text}");

    // At start the next offset is raised past what the sink consumed: a new push is mapped.
    let server = Server::start(&data, None);
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        push(100).as_bytes(),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    let events: i64 = server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE call_id = 'logcheck-call-100'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(events, 1, "the push after the restore was skipped");
    assert!(server.terminate().success());
    // The loss stays named, as known.
    let again = log_check(&data, false);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{text}");
    assert!(text.contains("lost earlier"), "{text}");
}
