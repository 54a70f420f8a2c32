//! `callhook replay` against the real binary, beside a running `callhook serve` fed by the
//! simulator: `--into` rebuilds the same `calls` rows as the live database, `--dry-run` on an
//! unchanged mapping sees no change, and a changed mapping (the test-only mapping variant,
//! armed through the `normalizer::mapping_variant` crash point) shows its diff, which
//! `--in-place` applies to the live database while it keeps serving.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{open_read_only, Server};
use serde_json::Value;

const VARIANT: (&str, &str) = ("FAILPOINTS", "normalizer::mapping_variant=return");

fn callhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run callhook");
    assert!(
        output.status.success(),
        "callhook {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts `serve` and sends it `calls` simulated call flows of every dialect.
fn serve_with_traffic(data: &Path, calls: u32) -> Server {
    serve_with_traffic_and_config(data, calls, None)
}

fn serve_with_traffic_and_config(data: &Path, calls: u32, config: Option<&str>) -> Server {
    let server = Server::start(data, config);
    let target = format!("http://{}", server.public);
    callhook(
        &[
            "simulate",
            "--target",
            &target,
            "--calls",
            &calls.to_string(),
            "--calls-per-second",
            "0",
            "--connections",
            "4",
            "--duplicate-rate",
            "0.05",
            "--reorder-rate",
            "0.2",
            "--seed",
            "11",
        ],
        &[],
    );
    server.wait_until_normalized();
    server
}

fn replay_json(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args = vec!["replay", "--data-dir", data.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let output = callhook(&args, env);
    serde_json::from_slice(&output.stdout).expect("replay --json prints JSON")
}

/// Every `calls` row without its revision (how often it was written differs by design).
fn calls_rows(db: &Path) -> Vec<Vec<rusqlite::types::Value>> {
    let connection = open_read_only(db);
    let mut statement = connection
        .prepare("SELECT * FROM calls ORDER BY source, call_id")
        .unwrap();
    let revision = statement
        .column_index("revision")
        .expect("calls has a revision column");
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .filter(|index| *index != revision)
                .map(|index| row.get::<_, rusqlite::types::Value>(index))
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every event's `(id, sequence)`.
fn sequences(db: &Path) -> Vec<(String, Option<i64>)> {
    let connection = open_read_only(db);
    let mut statement = connection
        .prepare("SELECT id, sequence FROM events ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count(db: &Path, sql: &str) -> i64 {
    open_read_only(db)
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

#[test]
fn test_replay_into_matches_the_live_database_and_a_dry_run_sees_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve_with_traffic(&data, 120);
    let live = data.join("callhook.db");
    let into = dir.path().join("rebuilt.db");
    let summary = replay_json(&data, &["--into", into.to_str().unwrap()], &[]);
    assert!(
        summary["rebuild"]["events"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(calls_rows(&into), calls_rows(&live));
    assert_eq!(
        sequences(&into),
        sequences(&live),
        "the rebuild numbers as the live sink did"
    );
    for table in ["events", "agents", "dead_letters"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&into, &sql), count(&live, &sql), "{table}");
    }
    let dry = replay_json(&data, &["--dry-run"], &[]);
    let diff = &dry["diff"];
    assert_eq!(diff["events"], serde_json::json!([]), "{dry}");
    assert_eq!(diff["calls_changed"], 0, "{dry}");
    assert_eq!(diff["calls_added"], 0, "{dry}");
    assert_eq!(diff["calls_removed"], 0, "{dry}");
    assert_eq!(diff["dead_letters_new"], serde_json::json!({}), "{dry}");
    drop(server);
}

#[test]
fn test_a_changed_mapping_shows_its_diff_and_in_place_applies_it_beside_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve_with_traffic(&data, 150);
    let live = data.join("callhook.db");
    // What the variant changes: 7moor events other than call.initiated that say outbound.
    let outbound_events = count(
        &live,
        "SELECT count(*) FROM events WHERE source_name = '7moor' AND type != 'call.initiated' \
         AND json_extract(data, '$.direction') = 'outbound'",
    );
    let outbound_calls = count(
        &live,
        "SELECT count(*) FROM calls WHERE source = '7moor' AND direction = 'outbound'",
    );
    assert!(outbound_events > 0 && outbound_calls > 0);
    let before = std::fs::metadata(&live).unwrap().modified().unwrap();

    let dry = replay_json(&data, &["--dry-run"], &[VARIANT]);
    let diff = &dry["diff"];
    let changed: u64 = diff["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|counts| counts["changed"].as_u64().unwrap())
        .sum();
    assert_eq!(changed as i64, outbound_events, "{dry}");
    assert_eq!(
        diff["calls_changed"].as_i64(),
        Some(outbound_calls),
        "{dry}"
    );
    assert_eq!(
        diff["call_columns_changed"]["direction"].as_i64(),
        Some(outbound_calls)
    );
    assert_eq!(
        count(
            &live,
            "SELECT count(*) FROM calls WHERE source = '7moor' AND direction = 'outbound'"
        ),
        outbound_calls,
        "a dry run changes nothing"
    );
    assert_eq!(
        std::fs::metadata(&live).unwrap().modified().unwrap(),
        before
    );

    let applied = replay_json(&data, &["--in-place"], &[VARIANT]);
    assert!(applied["applied"]["events_updated"].as_i64().unwrap() >= outbound_events);
    assert_eq!(
        count(
            &live,
            "SELECT count(*) FROM calls WHERE source = '7moor' AND direction = 'outbound'"
        ),
        0
    );
    let again = replay_json(&data, &["--dry-run"], &[VARIANT]);
    assert_eq!(
        again["diff"]["events"],
        serde_json::json!([]),
        "idempotent: {again}"
    );
    assert_eq!(again["diff"]["calls_changed"], 0, "{again}");

    // The serving process goes on: new calls are normalized, the rewritten rows stay.
    let target = format!("http://{}", server.public);
    callhook(
        &[
            "simulate",
            "--target",
            &target,
            "--calls",
            "30",
            "--calls-per-second",
            "0",
            "--seed",
            "12",
        ],
        &[],
    );
    server.wait_until_normalized();
    let versions = count(
        &live,
        "SELECT count(DISTINCT mapping_version) FROM events WHERE mapping_version IS NOT NULL",
    );
    assert_eq!(versions, 2, "variant events and new ones");
    drop(server);
}

/// Compacts every consumed record soon, in small segments.
const COMPACTING: &str =
    "[log.embedded]\ncompact_chunk_records = 40\nretention_check_interval_ms = 50\n";

fn segments(data: &Path) -> (i64, i64) {
    open_read_only(&data.join("rawlog.db"))
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(record_count), 0) FROM log_segments",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
}

#[test]
fn test_replay_over_a_compacted_log_equals_replay_over_the_uncompacted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        serve_with_traffic_and_config(&data, 120, Some("[log.embedded]\ncompact = false\n"));
    let plain = dir.path().join("plain.db");
    replay_json(&data, &["--into", plain.to_str().unwrap()], &[]);
    assert_eq!(segments(&data), (0, 0));
    server.terminate();
    let server = Server::start(&data, Some(COMPACTING));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let held = common::raw_record_count(&data);
    while segments(&data).1 < held - 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "not compacted: {:?} of {held}",
            segments(&data)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        common::metric_value(&metrics, "callhook_rawlog_compacted_records_total").unwrap() > 0.0
    );
    let compacted = dir.path().join("compacted.db");
    replay_json(&data, &["--into", compacted.to_str().unwrap()], &[]);
    assert_eq!(calls_rows(&compacted), calls_rows(&plain));
    for table in ["events", "agents", "dead_letters"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&compacted, &sql), count(&plain, &sql), "{table}");
    }
    let events =
        "SELECT group_concat(id || data, '|') FROM (SELECT id, data FROM events ORDER BY id)";
    let same_events: (String, String) = (
        open_read_only(&compacted)
            .query_row(events, [], |row| row.get(0))
            .unwrap(),
        open_read_only(&plain)
            .query_row(events, [], |row| row.get(0))
            .unwrap(),
    );
    assert!(same_events.0 == same_events.1, "the events differ");
    let dry = replay_json(&data, &["--dry-run"], &[]);
    assert_eq!(dry["diff"]["events"], serde_json::json!([]), "{dry}");
    server.terminate();
    let check = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["log", "check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn test_to_topic_needs_kafka_mode_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["replay", "--to-topic", "elsewhere", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Kafka mode"), "{stderr}");
}
