//! The PostgreSQL sink end to end: the real `callhook serve` writing a real PostgreSQL (the test
//! kit's server) beside the SQLite sink.
//!
//! - every golden fixture gives the same `events`, `calls`, `agents` and `dead_letters` rows in
//!   both databases;
//! - PostgreSQL stopped under load: `/readyz` turns red naming the sink, the receiver keeps
//!   acknowledging, and once PostgreSQL is back every push is in both databases exactly once;
//!   then a SIGKILL of callhook under load, and again exactly once after the restart;
//! - a push PostgreSQL refuses (a NUL character) is a `sink_rejected` dead letter there, and the
//!   pushes of its batch commit.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callhook_testkit::projections::{postgres_rows, sqlite_rows};
use callhook_testkit::Postgres;
use common::{http, Server};

fn config_with_postgres(base: &str, url: &str) -> String {
    format!("{base}\n[sink.postgres]\nurl = \"{url}\"\nsslmode = \"disable\"\n")
}

/// Waits until PostgreSQL's stored offsets cover every raw record (and SQLite's, when it runs).
fn wait_until_in_postgres(server: &Server, pg: &Postgres) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let appended = common::raw_record_count(&server.data_dir);
        let consumed: i64 = pg
            .psql("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets")
            .trim()
            .parse()
            .unwrap_or(0);
        if consumed >= appended && appended > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "postgres did not catch up: {consumed} of {appended}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_same_tables(server: &Server, pg: &Postgres) {
    for table in ["events", "calls", "agents", "dead_letters"] {
        let sqlite = sqlite_rows(&server.data_dir.join("callhook.db"), table);
        let postgres = postgres_rows(&pg.url(), table);
        assert_eq!(
            sqlite.len(),
            postgres.len(),
            "`{table}`: {} rows in sqlite, {} in postgres",
            sqlite.len(),
            postgres.len()
        );
        for (s, p) in sqlite.iter().zip(&postgres) {
            assert_eq!(s, p, "`{table}` differs between the sinks");
        }
    }
}

#[test]
fn test_every_fixture_gives_the_same_rows_in_both_sinks() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_with_postgres(&common::fixture_config(), &pg.url());
    let server = Server::start(&data, Some(&config));
    let pushes = common::fixture_pushes();
    // In order, then in reverse order again (re-sends: nothing new may appear).
    for push in pushes.iter().chain(pushes.iter().rev()) {
        let (status, _) = server.request(
            &push.method,
            &push.target(),
            push.content_type.as_deref(),
            &push.body,
        );
        assert_eq!(status, 200, "{}/{}", push.vendor, push.case);
    }
    server.wait_until_normalized();
    wait_until_in_postgres(&server, &pg);
    assert_same_tables(&server, &pg);
    let calls: i64 = pg
        .psql("SELECT count(*) FROM calls")
        .trim()
        .parse()
        .unwrap();
    assert!(calls > 10, "only {calls} calls");
    // The README's example queries and the "calls" dashboard's run against the real schema,
    // and the dashboard's find the calls and agents.
    for query in readme_queries() {
        pg.psql(&query);
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/dashboards/calls.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let sql = grafana_macros(target["rawSql"].as_str().unwrap());
            let output = pg.psql(&sql);
            if panel["title"] != "Calls in progress" {
                assert!(
                    !output.trim().is_empty(),
                    "panel {} found nothing",
                    panel["title"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 4);
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        common::metric_series(
            &metrics,
            "callhook_sink_postgres_rows_total{table=\"events\"}"
        )
        .is_some_and(|rows| rows > 0.0),
        "no postgres rows counted"
    );
    assert_eq!(server.terminate().code(), Some(0));
}

/// Expands the Grafana macros the dashboard uses, as Grafana does for an all-time range.
fn grafana_macros(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$__timeFilter(".len()..];
        let close = after.find(')').expect("macro closes");
        out.push_str(&format!(
            "{} BETWEEN '1970-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'",
            &after[..close]
        ));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The SQL blocks of README's PostgreSQL section.
fn readme_queries() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut queries = Vec::new();
    let mut inside = false;
    let mut current = String::new();
    for line in readme.lines() {
        if line.trim() == "```sql" {
            inside = true;
            continue;
        }
        if inside && line.trim() == "```" {
            inside = false;
            queries.extend(
                current
                    .split(';')
                    .map(str::trim)
                    .filter(|q| !q.is_empty())
                    .map(str::to_owned),
            );
            current.clear();
            continue;
        }
        if inside && !line.trim_start().starts_with("--") {
            current.push_str(line);
            current.push('\n');
        }
    }
    queries
}

fn push_body(n: usize, agent_name: &str) -> String {
    format!(
        r#"{{"eventUniqueId":"pg-{n}","accountId":"1","callUniqueId":"pg-call-{n}","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"2000{}","agentName":"{agent_name}"}}"#,
        n % 7
    )
}

/// Posts pushes from 3 clients until `stop`; returns the acknowledged numbers.
fn load(
    addr: std::net::SocketAddr,
    first: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<usize>>>, Vec<std::thread::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = (0..3)
        .map(|client| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = first + client * 100_000 + i;
                    let outcome = std::panic::catch_unwind(|| {
                        http(
                            addr,
                            "POST",
                            "/hooks/7moor",
                            Some("application/json"),
                            push_body(n, "Wang").as_bytes(),
                            &[],
                        )
                    });
                    match outcome {
                        Ok((200, body)) if body == "200" => acked.lock().unwrap().push(n),
                        _ => break,
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    (acked, clients)
}

fn acked_count(acked: &Mutex<Vec<usize>>) -> usize {
    acked.lock().unwrap().len()
}

#[test]
fn test_postgres_outage_and_sigkill_lose_and_duplicate_nothing() {
    let mut pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_with_postgres("", &pg.url());
    let server = Server::start(&data, Some(&config));

    // PostgreSQL goes away under load.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, clients) = load(server.public, 0, Arc::clone(&stop));
    while acked_count(&acked) < 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = server.admin_get("/readyz");
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz stayed green without postgres"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(body.contains("postgres"), "{body}");
    let during = acked_count(&acked);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        acked_count(&acked) > during,
        "the receiver stopped acknowledging"
    );
    pg.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    server.wait_until_normalized();
    wait_until_in_postgres(&server, &pg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.admin_get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "readyz did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        common::metric_series(
            &metrics,
            "callhook_sink_postgres_failures_total{kind=\"connection\"}"
        )
        .is_some_and(|failures| failures > 0.0),
        "the outage was not counted"
    );
    let mut all_acked = acked.lock().unwrap().clone();

    // Then callhook is killed under load, and restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, clients) = load(server.public, 1_000_000, Arc::clone(&stop));
    while acked_count(&acked) < 150 {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    all_acked.extend(acked.lock().unwrap().iter());
    let server = Server::start(&data, Some(&config));
    server.wait_until_normalized();
    wait_until_in_postgres(&server, &pg);

    let stored: std::collections::HashMap<String, i64> = pg
        .psql("SELECT subject, count(*) FROM events GROUP BY subject")
        .lines()
        .filter_map(|line| {
            let (subject, count) = line.split_once('|')?;
            Some((subject.to_owned(), count.parse().ok()?))
        })
        .collect();
    for n in &all_acked {
        assert_eq!(
            stored.get(&format!("pg-call-{n}")),
            Some(&1),
            "acknowledged push {n} is not in postgres exactly once"
        );
    }
    assert!(stored.values().all(|count| *count == 1), "an event twice");
    assert_same_tables(&server, &pg);
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn test_a_push_postgres_refuses_is_dead_lettered_and_the_rest_commits() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // PostgreSQL alone: SQLite off.
    let config = config_with_postgres("[sink.sqlite]\nenabled = false\n", &pg.url());
    let server = Server::start(&data, Some(&config));
    // Every series of the PostgreSQL sink exists at 0 before any push.
    let (_, metrics) = server.admin_get("/metrics");
    for series in [
        "callhook_sink_postgres_failures_total{kind=\"connection\"}",
        "callhook_sink_postgres_failures_total{kind=\"data\"}",
        "callhook_sink_postgres_rows_total{table=\"calls\"}",
        "callhook_sink_dead_letters_total{reason=\"sink_rejected\",sink=\"postgres\"}",
        "callhook_sink_dead_letters_total{reason=\"unknown_source\",sink=\"postgres\"}",
        "callhook_sink_duplicates_total{sink=\"postgres\"}",
    ] {
        assert_eq!(
            common::metric_series(&metrics, series),
            Some(0.0),
            "`{series}` is not exported at 0 before any push"
        );
    }
    for (n, name) in [(1, "Wang"), (2, "Wa\\u0000ng"), (3, "Li")] {
        let (status, _) = server.request(
            "POST",
            "/hooks/7moor",
            Some("application/json"),
            push_body(n, name).as_bytes(),
        );
        assert_eq!(status, 200);
    }
    wait_until_in_postgres(&server, &pg);
    assert_eq!(
        pg.psql("SELECT subject FROM events ORDER BY subject"),
        "pg-call-1\npg-call-3\n"
    );
    let dead = pg.psql("SELECT raw_ref, reason, detail FROM dead_letters");
    assert!(dead.starts_with("0:") || dead.contains(":"), "{dead}");
    assert!(dead.contains("|sink_rejected|"), "{dead}");
    assert!(dead.contains("NUL"), "{dead}");
    assert!(
        !data.join("callhook.db").exists(),
        "the disabled SQLite sink wrote a database"
    );
    let (_, metrics) = server.admin_get("/metrics");
    assert_eq!(
        common::metric_series(
            &metrics,
            "callhook_sink_dead_letters_total{reason=\"sink_rejected\",sink=\"postgres\"}"
        ),
        Some(1.0)
    );
    assert_eq!(server.terminate().code(), Some(0));
}
