//! Reconciliation end to end: the real `callhook` binary against the fake 7moor CDR API
//! (`callhook_testkit::fake_7moor`), real HTTP, real SQLite files.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use callhook_testkit::fake_7moor::{cdr_record, Fake7moor};
use common::{metric_series, open_read_only, Server};
use serde_json::Value;

const APPKEY: &str = "2000144";
const SECRET: &str = "e2e-secret-key";

fn config(base_url: &str, secret: &str) -> String {
    format!(
        "[sources.7moor]\ndialect = \"7moor\"\n\
         [sources.7moor.reconcile]\nbase_url = \"{base_url}\"\nappkey = \"{APPKEY}\"\nsecret = \"{secret}\"\n\
         interval_seconds = 2\nwindow_seconds = 3600\ndelay_seconds = 0\nrequest_timeout_ms = 2000\n"
    )
}

/// A call start ten minutes ago, in the API's local time (+08:00).
fn recent_start() -> String {
    let local = chrono::Utc::now() + chrono::TimeDelta::hours(8) - chrono::TimeDelta::minutes(10);
    local.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The webhook cdr push of a call (seed 3.5 shape: pushType, callUniqueId, eventUniqueId).
fn webhook(call_id: &str, start: &str) -> Vec<u8> {
    let mut record = cdr_record(call_id, start);
    let object = record.as_object_mut().unwrap();
    object.remove("_id");
    object.remove("__v");
    object.insert("pushType".to_owned(), Value::from("cdr"));
    serde_json::to_vec(&record).unwrap()
}

/// `call.cdr` events per call id.
fn cdr_counts(server: &Server) -> Vec<(String, i64)> {
    let db = server.db();
    let mut statement = db
        .prepare("SELECT subject, COUNT(*) FROM events WHERE type = 'call.cdr' GROUP BY subject ORDER BY subject")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn reconcile_records(data_dir: &Path) -> i64 {
    let log = open_read_only(&data_dir.join("rawlog.db"));
    log.query_row(
        "SELECT COUNT(*) FROM log_records WHERE headers_json LIKE '%x-callhook-origin%reconcile%'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

fn metric(server: &Server, series: &str) -> f64 {
    let (_, text) = server.admin_get("/metrics");
    metric_series(&text, series).unwrap_or_else(|| panic!("no series {series}"))
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn test_gaps_are_filled_exactly_once_even_when_the_webhook_arrives_afterwards() {
    let fake = Fake7moor::start(APPKEY, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, Some(&config(&fake.base_url(), SECRET)));
    for name in ["cdrs_checked", "missing", "backfilled"] {
        let series = format!("callhook_reconcile_{name}_total{{source=\"7moor\"}}");
        assert_eq!(metric(&server, &series), 0.0, "{series} pre-created at 0");
    }
    let start = recent_start();
    let (a, b, c) = (
        "500000000000000001",
        "500000000000000002",
        "500000000000000003",
    );
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        &webhook(a, &start),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    // The API knows three calls; callhook only got the webhook of the first.
    fake.add_records([a, b, c].map(|id| cdr_record(id, &start)));
    wait_for("the backfill of two CDRs", Duration::from_secs(30), || {
        server.wait_until_normalized();
        cdr_counts(&server).len() == 3
    });
    let expected: Vec<(String, i64)> = [a, b, c].iter().map(|id| (id.to_string(), 1)).collect();
    assert_eq!(cdr_counts(&server), expected);
    // Each gap is appended and counted once, though passes run every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reconcile_records(&data_dir), 2);
    let series = |name: &str| format!("callhook_reconcile_{name}_total{{source=\"7moor\"}}");
    assert_eq!(metric(&server, &series("missing")), 2.0);
    assert_eq!(metric(&server, &series("backfilled")), 2.0);
    assert!(
        metric(
            &server,
            "callhook_reconcile_cdrs_checked_total{source=\"7moor\"}"
        ) >= 3.0
    );
    // A later pass finds nothing missing: the counters stop moving once the sink has them.
    std::thread::sleep(Duration::from_secs(3));
    let missing = metric(
        &server,
        "callhook_reconcile_missing_total{source=\"7moor\"}",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        metric(
            &server,
            "callhook_reconcile_missing_total{source=\"7moor\"}"
        ),
        missing
    );

    // The webhook of a backfilled call arrives late: acknowledged, and a duplicate.
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        &webhook(b, &start),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    assert_eq!(cdr_counts(&server), expected);
    let db = server.db();
    let data: String = db
        .query_row(
            "SELECT data FROM events WHERE type = 'call.cdr' AND subject = ?1",
            [c],
            |row| row.get(0),
        )
        .unwrap();
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["disposition"]["value"], "answered");
    assert_eq!(data["agent"]["number"], "1121");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn test_the_api_down_is_retried_and_the_pipeline_is_unaffected() {
    let fake = Fake7moor::start(APPKEY, SECRET);
    fake.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, Some(&config(&fake.base_url(), SECRET)));
    let start = recent_start();
    for n in 0..5 {
        let body = webhook(&format!("60000000000000000{n}"), &start);
        let (status, _) = server.request("POST", "/hooks/7moor", Some("application/json"), &body);
        assert_eq!(status, 200, "pushes are acknowledged while the API is down");
    }
    server.wait_until_normalized();
    assert_eq!(cdr_counts(&server).len(), 5);
    let errors = "callhook_reconcile_api_errors_total{reason=\"http_status\",source=\"7moor\"}";
    wait_for("two failed passes", Duration::from_secs(20), || {
        metric(&server, errors) >= 2.0
    });
    let (status, _) = server.admin_get("/readyz");
    assert_eq!(
        status, 200,
        "the API being down does not make callhook unready"
    );
    // The API comes back with a call callhook never heard of: the retried pass fills it.
    fake.set_down(false);
    fake.add_records([cdr_record("600000000000000099", &start)]);
    wait_for(
        "the backfill after the outage",
        Duration::from_secs(30),
        || cdr_counts(&server).len() == 6,
    );
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn test_a_bad_signature_is_a_clear_error_in_the_metrics_and_the_command() {
    let fake = Fake7moor::start(APPKEY, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let bad = config(&fake.base_url(), "not-the-secret");
    let server = Server::start(&data_dir, Some(&bad));
    let auth = "callhook_reconcile_api_errors_total{reason=\"auth\",source=\"7moor\"}";
    wait_for("an auth error", Duration::from_secs(20), || {
        metric(&server, auth) >= 1.0
    });
    assert!(fake.seen().iter().all(|seen| seen.code == "50015"));
    assert_eq!(server.terminate().code(), Some(0));

    let config_path = dir.path().join("bad.toml");
    std::fs::write(&config_path, &bad).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args([
            "reconcile",
            "--source",
            "7moor",
            "--since",
            "2026-01-01",
            "--until",
            "2026-01-02",
            "--dry-run",
            "--config",
        ])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused the request signature") && stderr.contains("50015"),
        "{stderr}"
    );
}

#[test]
fn test_the_command_reports_and_backfills_one_span() {
    let fake = Fake7moor::start(APPKEY, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // The periodic pass off: the command does the work.
    // `admin_listen` on a port nothing listens on: the command checks it for a running callhook.
    let text = format!(
        "admin_listen = \"127.0.0.1:1\"\n{}",
        config(&fake.base_url(), SECRET).replace("interval_seconds = 2", "enabled = false")
    );
    let server = Server::start(&data_dir, Some(&text));
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        &webhook("700000000000000001", "2026-01-01 10:00:00"),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    // Beside the running callhook, the command refuses to append (the raw log has one writer).
    let beside = dir.path().join("beside.toml");
    let admin = format!("admin_listen = \"{}\"", server.admin);
    std::fs::write(
        &beside,
        text.replace("admin_listen = \"127.0.0.1:1\"", &admin),
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args([
            "reconcile",
            "--source",
            "7moor",
            "--since",
            "2026-01-01",
            "--config",
        ])
        .arg(&beside)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("seems to be running"), "{stderr}");
    assert_eq!(server.terminate().code(), Some(0));
    fake.add_records(
        ["700000000000000001", "700000000000000002"]
            .map(|id| cdr_record(id, "2026-01-01 10:00:00")),
    );
    let config_path = dir.path().join("ok.toml");
    std::fs::write(&config_path, &text).unwrap();
    let run = |dry_run: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
        command
            .args([
                "reconcile",
                "--source",
                "7moor",
                "--since",
                "2026-01-01",
                "--until",
                "2026-01-02 00:00:00",
                "--config",
            ])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn");
        if dry_run {
            command.arg("--dry-run");
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let dry = run(true);
    assert!(
        dry.contains("2 CDRs checked, 1 missing, 0 backfilled (dry run"),
        "{dry}"
    );
    assert_eq!(reconcile_records(&data_dir), 0);
    let real = run(false);
    assert!(
        real.contains("2 CDRs checked, 1 missing, 1 backfilled"),
        "{real}"
    );
    assert_eq!(reconcile_records(&data_dir), 1);
    // The next start maps what the command appended.
    let server = Server::start(&data_dir, Some(&text));
    wait_for("the backfilled CDR", Duration::from_secs(20), || {
        cdr_counts(&server).len() == 2
    });
    assert_eq!(server.terminate().code(), Some(0));
}
