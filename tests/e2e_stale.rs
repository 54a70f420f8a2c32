//! Stale calls and sequences end to end: the real `callhook` binary, real HTTP, real SQLite.
//!
//! The stale threshold is 1 s and the sweep runs every 100 ms (`[stale]`, per source), so a
//! call goes stale without the test waiting hours; the sweep's clock itself is injected in the
//! unit tests (`normalizer/tests/stale.rs`).

mod common;

use std::time::{Duration, Instant};

use common::{metric_series, open_read_only, Server};

const CONFIG: &str = "[stale]\nsweep_interval_ms = 100\n\
    [sources.7moor]\ndialect = \"7moor\"\nstale_after_seconds = 1\n\
    [sources.uincall]\ndialect = \"uincall\"\nstale_after_seconds = 0\n";

const CALL: &str = "403344537650466816";

/// A 7moor v7 push of `CALL` (seed 001 §3 shapes).
fn push(event_unique_id: &str, push_type: &str, call_event: &str, status_time: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "eventUniqueId": event_unique_id,
        "accountId": "20000153",
        "callUniqueId": CALL,
        "pushType": push_type,
        "customerNumber": "17319132391",
        "displayNumber": "01081400192",
        "statusTime": status_time.to_string(),
        "callEvent": call_event,
        "callType": "dialout",
        "agentNumber": "20001",
    }))
    .unwrap()
}

fn send(server: &Server, body: &[u8]) {
    let (status, _) = server.request("POST", "/hooks/7moor", Some("application/json"), body);
    assert_eq!(status, 200);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(server: &Server) -> Option<String> {
    server
        .db()
        .query_row(
            "SELECT status FROM calls WHERE source = '7moor' AND call_id = ?1",
            [CALL],
            |row| row.get(0),
        )
        .ok()
}

/// `(type, sequence)` of the call's events in sequence order.
fn sequences(server: &Server) -> Vec<(String, i64)> {
    let db = server.db();
    let mut statement = db
        .prepare("SELECT type, sequence FROM events WHERE source_name = '7moor' AND call_id = ?1 ORDER BY sequence")
        .unwrap();
    statement
        .query_map([CALL], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn stale_events(server: &Server) -> i64 {
    server
        .db()
        .query_row(
            "SELECT count(*) FROM events WHERE type = 'call.stale'",
            [],
            |row| row.get(0),
        )
        .unwrap()
}

fn stale_metric(server: &Server, source: &str) -> f64 {
    let (_, text) = server.admin_get("/metrics");
    let series = format!("callhook_calls_stale_total{{source=\"{source}\"}}");
    metric_series(&text, &series).unwrap_or_else(|| panic!("no series {series}"))
}

#[test]
fn test_a_call_without_hangup_goes_stale_once_then_recovers_to_ended_and_final() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, Some(CONFIG));
    assert_eq!(stale_metric(&server, "7moor"), 0.0, "pre-created at 0");
    // A call that rings and is answered, then nothing.
    send(&server, &push("e-ring", "dialoutRing", "ring", 1620455977));
    send(&server, &push("e-link", "callStatus", "link", 1620455987));
    server.wait_until_normalized();
    wait_for("the call to go stale", || {
        server.wait_until_normalized();
        status(&server).as_deref() == Some("stale")
    });
    let db = server.db();
    let (stale_time, reason, timesource): (String, String, String) = db
        .query_row(
            "SELECT time, json_extract(data, '$.stale_reason'), timesource FROM events WHERE type = 'call.stale'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert!(reason.contains("no call.ended or call.cdr"), "{reason}");
    assert!(reason.contains("within 1 s"), "{reason}");
    assert_eq!(timesource, "received");
    assert!(!stale_time.is_empty());
    // Sweeps keep running every 100 ms: the call is declared stale once.
    std::thread::sleep(Duration::from_millis(800));
    server.wait_until_normalized();
    assert_eq!(stale_events(&server), 1);
    assert_eq!(stale_metric(&server, "7moor"), 1.0);
    // `stale_after_seconds = 0`: the source is not swept at all.
    let (_, text) = server.admin_get("/metrics");
    assert!(metric_series(&text, "callhook_calls_stale_total{source=\"uincall\"}").is_none());
    // The hangup arrives late: the row moves on to `ended`, then the CDR makes it `final`.
    send(
        &server,
        &push("e-hangup", "dialoutHangup", "hangup", 1620456037),
    );
    server.wait_until_normalized();
    assert_eq!(status(&server).as_deref(), Some("ended"));
    let cdr = serde_json::to_vec(&serde_json::json!({
        "pushType": "cdr",
        "accountId": "20000153",
        "callUniqueId": CALL,
        "eventUniqueId": "e-cdr",
        "customerNumber": "17319132391",
        "callType": "dialout",
        "beginTime": "2021-05-08 14:39:37",
        "endTime": "2021-05-08 14:40:37",
    }))
    .unwrap();
    send(&server, &cdr);
    server.wait_until_normalized();
    assert_eq!(status(&server).as_deref(), Some("final"));
    assert_eq!(
        stale_events(&server),
        1,
        "call.stale in events exactly once"
    );
    // Every event of the call is numbered 1..n in the order it was stored.
    let numbered = sequences(&server);
    let numbers: Vec<i64> = numbered.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (1..=numbered.len() as i64).collect::<Vec<_>>());
    let stale_position = numbered
        .iter()
        .position(|(event_type, _)| event_type == "call.stale")
        .unwrap();
    let hangup_position = numbered
        .iter()
        .position(|(event_type, _)| event_type == "call.ended")
        .unwrap();
    assert!(stale_position < hangup_position, "{numbered:?}");
    // The notice is a raw record, so a rebuild from the raw log reproduces it and the numbers.
    server.terminate();
    let rebuilt = dir.path().join("rebuilt.db");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["replay", "--data-dir"])
        .arg(&data_dir)
        .arg("--into")
        .arg(&rebuilt)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let rebuilt = open_read_only(&rebuilt);
    let live = open_read_only(&data_dir.join("callhook.db"));
    let read = |db: &rusqlite::Connection| -> Vec<(String, String, Option<i64>)> {
        let mut statement = db
            .prepare("SELECT id, type, sequence FROM events ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(read(&rebuilt), read(&live));
}

#[test]
fn test_sequences_are_one_to_n_with_events_out_of_order_and_a_duplicate_push() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(CONFIG));
    // The hangup first, then the ring, the same ring again (a vendor retry), then the link.
    send(
        &server,
        &push("o-hangup", "dialoutHangup", "hangup", 1620456037),
    );
    send(&server, &push("o-ring", "dialoutRing", "ring", 1620455977));
    server.wait_until_normalized();
    send(&server, &push("o-ring", "dialoutRing", "ring", 1620455977));
    send(&server, &push("o-link", "callStatus", "link", 1620455987));
    server.wait_until_normalized();
    let numbered = sequences(&server);
    let numbers: Vec<i64> = numbered.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (1..=numbered.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        numbered.first().map(|(t, _)| t.as_str()),
        Some("call.ended")
    );
    assert_eq!(
        numbered.last().map(|(t, _)| t.as_str()),
        Some("call.answered")
    );
    let events: i64 = server
        .db()
        .query_row(
            "SELECT count(*) FROM events WHERE call_id = ?1",
            [CALL],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(events, numbered.len() as i64, "the retry added nothing");
    assert_eq!(status(&server).as_deref(), Some("ended"));
}

#[test]
fn test_the_sweep_reads_postgres_when_it_is_the_only_sink() {
    let pg = callhook_testkit::Postgres::start();
    let config = format!(
        "{CONFIG}[sink.sqlite]\nenabled = false\n[sink.postgres]\nurl = \"{}\"\nsslmode = \"disable\"\n",
        pg.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(&config));
    send(&server, &push("p-ring", "dialoutRing", "ring", 1620455977));
    let status = || {
        pg.psql(&format!(
            "SELECT status FROM calls WHERE source = '7moor' AND call_id = '{CALL}'"
        ))
        .trim()
        .to_owned()
    };
    wait_for("the call to go stale in PostgreSQL", || status() == "stale");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pg.psql("SELECT count(*) || ':' || max(sequence) FROM events WHERE type = 'call.stale'")
            .trim(),
        "1:2"
    );
    send(
        &server,
        &push("p-hangup", "dialoutHangup", "hangup", 1620456037),
    );
    wait_for("the hangup to end the call", || status() == "ended");
    assert_eq!(stale_metric(&server, "7moor"), 1.0);
}
