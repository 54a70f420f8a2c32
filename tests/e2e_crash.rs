//! Crash safety: a client posts while the server is killed with SIGKILL. After a restart,
//! every push that got a 200 is in the raw log and, once normalized, in `events` exactly once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{http, Server};

fn push_body(n: usize) -> String {
    format!(
        r#"{{"eventUniqueId":"crash-{n}","accountId":"1","callUniqueId":"crash-call-{n}","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"2000{n}"}}"#
    )
}

#[test]
fn test_sigkill_loses_no_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let addr = server.public;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for i in 0..5000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = client * 100_000 + i;
                    let outcome = std::panic::catch_unwind(|| {
                        http(
                            addr,
                            "POST",
                            "/hooks/7moor",
                            Some("application/json"),
                            push_body(n).as_bytes(),
                            &[],
                        )
                    });
                    match outcome {
                        Ok((200, body)) if body == "200" => acked.lock().unwrap().push(n),
                        _ => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Let pushes flow, then crash the server mid-stream.
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let server = Server::start(&data, None);
    server.wait_until_normalized();
    let raw = common::open_read_only(&data.join("rawlog.db"));
    let db = server.db();
    for n in &acked {
        let in_log: i64 = raw
            .query_row(
                "SELECT COUNT(*) FROM log_records WHERE body = ?1",
                [push_body(*n).as_bytes()],
                |r| r.get(0),
            )
            .unwrap();
        assert!(in_log >= 1, "acknowledged push {n} is not in the raw log");
        let events: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM events WHERE subject = ?1",
                [format!("crash-call-{n}")],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(events, 1, "acknowledged push {n} has {events} events");
    }
    let total: i64 = db
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let distinct: i64 = db
        .query_row("SELECT COUNT(DISTINCT subject) FROM events", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(total, distinct, "no event twice");
    assert_eq!(server.terminate().code(), Some(0), "SIGTERM exits 0");
}
