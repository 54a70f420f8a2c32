//! `callhook simulate` end to end: the real binary serves on loopback, the real binary
//! simulates 200 call flows of all four dialects against it (with vendor retries and
//! reordered flows) and writes a ledger, then `callhook simulate --verify` checks the
//! server's database against the ledger. A copy of the database missing one event must fail
//! verification, naming what is missing.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;

fn callhook(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run callhook")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn verify(ledger: &Path, db: &Path, wait_seconds: &str) -> Output {
    callhook(&[
        "simulate",
        "--verify",
        "--ledger",
        ledger.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--wait-seconds",
        wait_seconds,
    ])
}

#[test]
fn test_simulated_flows_verify_against_the_database_and_a_missing_row_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, None);
    let ledger = dir.path().join("ledger.jsonl");
    let target = format!("http://{}", server.public);
    let run = callhook(&[
        "simulate",
        "--target",
        &target,
        "--calls",
        "200",
        "--calls-per-second",
        "100",
        "--flow-spread-ms",
        "1000",
        "--connections",
        "8",
        "--vendor-mix",
        "7moor=40,7moor-v2=20,coocenter=20,uincall=20",
        "--duplicate-rate",
        "0.05",
        "--duplicate-delay-ms",
        "500",
        "--reorder-rate",
        "0.1",
        "--seed",
        "20240620",
        "--ledger",
        ledger.to_str().unwrap(),
        "--json",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON report");
    let load = &report["load"];
    let plan = &report["plan"];
    assert_eq!(plan["flows"], 200);
    assert_eq!(
        plan["flows_by_dialect"].as_object().map(|m| m.len()),
        Some(4),
        "{plan}"
    );
    assert!(plan["duplicates"].as_u64().unwrap() > 0, "{plan}");
    assert!(plan["reordered_flows"].as_u64().unwrap() > 0, "{plan}");
    let sendings = plan["pushes"].as_u64().unwrap() + plan["duplicates"].as_u64().unwrap();
    assert_eq!(load["sent"].as_u64(), Some(sendings), "{report}");
    assert_eq!(load["acknowledged"].as_u64(), Some(sendings), "{report}");
    assert_eq!(load["failed"], 0);
    assert!(load["latency"]["samples"].as_u64() == Some(sendings));
    let ledger_text = std::fs::read_to_string(&ledger).unwrap();
    let pushes = ledger_text
        .lines()
        .filter(|l| l.starts_with("{\"kind\":\"push\""))
        .count() as u64;
    assert_eq!(pushes, sendings, "one ledger line per acknowledged push");

    let db = data_dir.join("callhook.db");
    let checked = verify(&ledger, &db, "30");
    let output = text(&checked);
    assert!(checked.status.success(), "{output}");
    assert!(output.contains("result   OK"), "{output}");

    // A copy of the database with one event row deleted must fail, naming the event. (The
    // event is the second of its push, a 7moor v2 Hangup's call.cdr: without its first event a
    // push counts as not stored at all, which the verifier names by its call.)
    server.wait_until_normalized();
    assert!(server.terminate().success());
    let copy_dir = dir.path().join("copy");
    std::fs::create_dir(&copy_dir).unwrap();
    let copy = copy_dir.join("callhook.db");
    std::fs::copy(&db, &copy).unwrap();
    for suffix in ["-wal", "-shm"] {
        let side = data_dir.join(format!("callhook.db{suffix}"));
        if side.exists() {
            std::fs::copy(&side, copy_dir.join(format!("callhook.db{suffix}"))).unwrap();
        }
    }
    let connection = rusqlite::Connection::open(&copy).unwrap();
    let deleted: String = connection
        .query_row(
            "SELECT id FROM events WHERE type = 'call.cdr' \
             AND json_extract(data, '$.dialect') = '7moor.v2' ORDER BY seq LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    connection
        .execute("DELETE FROM events WHERE id = ?1", [&deleted])
        .unwrap();
    drop(connection);
    let broken = verify(&ledger, &copy, "0");
    let output = text(&broken);
    assert_eq!(broken.status.code(), Some(1), "{output}");
    assert!(output.contains("events_missing"), "{output}");
    assert!(output.contains(&deleted), "{output}");
    assert!(output.contains("verification failed"), "{output}");
}
