//! One bad push never stops the pipeline (issue 8), against the real binary:
//!
//! - bodies nested 100,000 levels deep, in every dialect, bare and inside a field of an
//!   otherwise valid push, are dead-lettered `too_deep`, and the pushes after them are mapped;
//! - a record that aborts the process whenever it is mapped (armed with the test-only
//!   `normalizer::poison` crash point) is dead-lettered `crashed_normalizer` after the
//!   restarts, and every other record is in `events` exactly once;
//! - a normalizer loop that dies turns `/readyz` red with the reason and shows in
//!   `callhook_normalizer_state`, and is restarted; a sink that refuses batches does too.

mod common;

use std::time::{Duration, Instant};

use common::{metric_series, metric_value, Server};

const LEVELS: usize = 100_000;

fn v7_ring(n: usize, extras: &str) -> String {
    format!(
        r#"{{"eventUniqueId":"poison-{n}","accountId":"1","callUniqueId":"poison-call-{n}","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","extras":{extras}}}"#
    )
}

fn deep_json() -> String {
    format!("{}1{}", "{\"a\":".repeat(LEVELS), "}".repeat(LEVELS))
}

/// (path, content type, body) of deep pushes in every dialect and parser path.
fn deep_pushes() -> Vec<(&'static str, Option<&'static str>, String)> {
    let deep = deep_json();
    let deep_text = serde_json::to_string(&deep).unwrap();
    vec![
        ("/hooks/7moor", Some("application/json"), deep.clone()),
        (
            "/hooks/7moor",
            Some("application/json"),
            v7_ring(900, &deep),
        ),
        (
            "/hooks/7moor",
            None,
            format!(r#"{{"uniqueId":"u1","content":{deep_text}}}"#),
        ),
        ("/hooks/coocenter", None, "[".repeat(LEVELS)),
        (
            "/hooks/coocenter",
            None,
            format!(
                "{{\nevent:\"extensionstatus\"\nexten:\"808\"\nx:{}1",
                "{b:".repeat(LEVELS)
            ),
        ),
        (
            "/hooks/uincall",
            Some("text/plain"),
            format!("{}1{}", "{a:".repeat(LEVELS), "}".repeat(LEVELS)),
        ),
        (
            "/hooks/uincall",
            Some("application/json"),
            format!(r#"{{"account":"a","eventData":{deep_text}}}"#),
        ),
    ]
}

#[test]
fn test_deep_pushes_are_dead_lettered_and_the_rest_is_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let deep = deep_pushes();
    for (index, (path, content_type, body)) in deep.iter().enumerate() {
        let (status, _) = server.request("POST", path, *content_type, body.as_bytes());
        assert_eq!(status, 200, "deep push {index} is acknowledged");
        let ok = v7_ring(index, "\"\"");
        let (status, _) = server.request(
            "POST",
            "/hooks/7moor",
            Some("application/json"),
            ok.as_bytes(),
        );
        assert_eq!(status, 200);
    }
    server.wait_until_normalized();
    let db = server.db();
    let too_deep: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM dead_letters WHERE reason = 'too_deep'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(too_deep, deep.len() as i64);
    let mapped: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE call_id LIKE 'poison-call-%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        mapped,
        deep.len() as i64,
        "every push after a deep one is mapped"
    );
    assert_eq!(server.admin_get("/readyz").0, 200);
    let (_, metrics) = server.admin_get("/metrics");
    assert_eq!(
        metric_series(&metrics, "callhook_normalizer_state{state=\"running\"}"),
        Some(1.0)
    );
}

#[test]
fn test_a_record_that_aborts_the_process_is_dead_lettered_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let armed = [("FAILPOINTS", "normalizer::poison=return(POISON-7c1f)")];
    let mut server = Server::start_with_env(&data, None, &armed);
    // Before the poison, the poison, after it: one batch or several, whatever the timing. The
    // process may die while pushes are still being sent: like a vendor, the test sends an
    // unacknowledged push again once the process is back, so the raw log may hold the poison
    // twice (its first copy was stored but never acknowledged). Each copy may kill the process
    // at most three times before it is dead-lettered.
    let mut deaths = 0;
    let poison_copies = || {
        let raw = common::open_read_only(&data.join("rawlog.db"));
        raw.query_row(
            "SELECT COUNT(*) FROM log_records WHERE CAST(body AS TEXT) LIKE '%POISON-7c1f%'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
    };
    let restart = |server: &mut Server, deaths: &mut i64| {
        let mut status = server.child.wait().expect("wait");
        loop {
            assert!(!status.success(), "the poison aborts the process");
            *deaths += 1;
            let copies = poison_copies();
            assert!(
                *deaths <= 3 * copies,
                "a crash loop: {deaths} deaths, {copies} poison record(s)"
            );
            // A restarted process may die again before it listens (the loop starts first).
            match Server::try_start_with_env(&data, None, &armed) {
                Ok(started) => {
                    *server = started;
                    return;
                }
                Err(exited) => status = exited,
            }
        }
    };
    let sent = 20;
    for n in 0..sent {
        let body = match n {
            10 => v7_ring(n, "\"POISON-7c1f\""),
            _ => v7_ring(n, "\"\""),
        };
        loop {
            let outcome = std::panic::catch_unwind(|| {
                server.request(
                    "POST",
                    "/hooks/7moor",
                    Some("application/json"),
                    body.as_bytes(),
                )
            });
            match outcome {
                Ok((200, _)) => break,
                _ => restart(&mut server, &mut deaths),
            }
        }
    }
    // The process dies on the poison, again on restart; the third start dead-letters it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the poison record still kills the process"
        );
        match server.exited() {
            Some(_) => restart(&mut server, &mut deaths),
            None if dead_letters(&server, "crashed_normalizer") == poison_copies() => break,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(
        deaths >= 2,
        "the poison killed the process only {deaths} time(s)"
    );
    server.wait_until_normalized();
    let db = server.db();
    let events: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE call_id LIKE 'poison-call-%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let distinct: i64 = db
        .query_row(
            "SELECT COUNT(DISTINCT call_id) FROM events WHERE call_id LIKE 'poison-call-%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(events, sent as i64 - 1, "every other record, exactly once");
    assert_eq!(distinct, events);
    let poisoned: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE call_id = 'poison-call-10'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(poisoned, 0);
    assert_eq!(server.admin_get("/readyz").0, 200);
}

#[test]
fn test_a_dead_normalizer_turns_readyz_red_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let armed = [("FAILPOINTS", "normalizer::step=3*panic")];
    let server = Server::start_with_env(&dir.path().join("data"), None, &armed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = server.admin_get("/readyz");
        if status == 503 && body.contains("restarting") || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("normalizer restarting"), "{body}");
    assert!(body.contains("normalizer::step"), "{body}");
    let (_, metrics) = server.admin_get("/metrics");
    assert_eq!(
        metric_series(&metrics, "callhook_normalizer_state{state=\"restarting\"}"),
        Some(1.0),
    );
    assert!(metric_value(&metrics, "callhook_normalizer_restarts_total").unwrap() >= 1.0);
    // After the third panic the loop runs again, and pushes sent meanwhile are mapped.
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        v7_ring(1, "\"\"").as_bytes(),
    );
    assert_eq!(status, 200, "the receiver keeps acknowledging");
    server.wait_until_normalized();
    assert_eq!(server.admin_get("/readyz").0, 200);
}

#[test]
fn test_a_refusing_sink_turns_readyz_red_until_it_takes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, Some("[sink.sqlite]\nbusy_timeout_ms = 100\n"));
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        v7_ring(1, "\"\"").as_bytes(),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    // Another process holds the sink's write lock: commits fail with SQLITE_BUSY.
    let blocker = rusqlite::Connection::open(data.join("callhook.db")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        v7_ring(2, "\"\"").as_bytes(),
    );
    assert_eq!(status, 200, "the receiver keeps acknowledging");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = server.admin_get("/readyz");
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz stayed green with a failing sink"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(body.contains("normalizer retrying"), "{body}");
    blocker.execute_batch("ROLLBACK").unwrap();
    server.wait_until_normalized();
    assert_eq!(server.admin_get("/readyz").0, 200);
}

fn dead_letters(server: &Server, reason: &str) -> i64 {
    let path = server.data_dir.join("callhook.db");
    if !path.exists() {
        return 0;
    }
    server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM dead_letters WHERE reason = ?1",
            [reason],
            |row| row.get(0),
        )
        .unwrap_or(0)
}
