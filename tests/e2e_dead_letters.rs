//! `callhook dead-letters` against the real binary beside a running `serve`: list, show (the raw
//! push as received, hostile bytes escaped), redrive through a fixed mapping (the test-only
//! mapping variant), idempotent, and the counts by state in the metrics.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{metric_series, open_read_only, Server};
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

fn dead_letters(data: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["dead-letters", "--data-dir", data];
    all.extend_from_slice(args);
    callhook(&all, env)
}

fn list(data: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["list", "--json"];
    args.extend_from_slice(extra);
    let output = dead_letters(data, &args, &[]);
    serde_json::from_slice(&output.stdout).expect("JSON list")
}

#[test]
fn test_list_show_redrive_and_counts_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let server = Server::start(&data_dir, None);
    // A push type only the fixed mapping knows, hostile garbage, and an ordinary push.
    let variant = br#"{"eventUniqueId":"dl-1","accountId":"1","callUniqueId":"dl-call-1","pushType":"variantPush","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001"}"#;
    let garbage = b"<script>alert(1)</script>\xff\xfe\x1b[31m";
    let ordinary = br#"{"eventUniqueId":"dl-2","accountId":"1","callUniqueId":"dl-call-2","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001"}"#;
    for (path, body) in [
        ("/hooks/7moor", &variant[..]),
        ("/hooks/coocenter", &garbage[..]),
        ("/hooks/7moor", &ordinary[..]),
    ] {
        let (status, _) = server.request("POST", path, Some("application/json"), body);
        assert_eq!(status, 200);
    }
    server.wait_until_normalized();

    let open = list(data, &[]);
    assert_eq!(open.len(), 2, "{open:?}");
    let reasons: Vec<&str> = open
        .iter()
        .map(|letter| letter["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"unknown_event") && reasons.contains(&"unparseable_body"));
    let garbage_ref = open
        .iter()
        .find(|letter| letter["reason"] == "unparseable_body")
        .unwrap()["raw_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = dead_letters(data, &["show", &garbage_ref], &[]).stdout;
    assert!(
        !shown.contains(&0x1b),
        "an escape byte reached the terminal"
    );
    let shown = String::from_utf8(shown).expect("show prints UTF-8");
    assert!(
        shown.contains("<script>alert(1)</script>\\xFF\\xFE\\u{001b}[31m"),
        "{shown}"
    );
    assert!(shown.contains("POST /hooks/coocenter"), "{shown}");
    assert!(shown.contains("unparseable_body"), "{shown}");

    let redriven = dead_letters(data, &["redrive", "--json"], &[VARIANT]);
    let outcome: Value = serde_json::from_slice(&redriven.stdout).unwrap();
    assert_eq!(outcome[0]["resolved"], 1, "{outcome}");
    assert_eq!(outcome[0]["still_dead"], 1, "{outcome}");
    let db = data_dir.join("callhook.db");
    let events_of = |call: &str| -> i64 {
        open_read_only(&db)
            .query_row(
                "SELECT count(*) FROM events WHERE call_id = ?1",
                [call],
                |row| row.get(0),
            )
            .unwrap()
    };
    assert_eq!(events_of("dl-call-1"), 1, "the redriven push has its event");
    assert_eq!(list(data, &[]).len(), 1, "one dead letter stays open");
    let all = list(data, &["--all"]);
    assert_eq!(all.len(), 2);
    assert!(
        all.iter().any(|letter| letter["resolution"] == "redrive"),
        "{all:?}"
    );

    // Idempotent.
    let again = dead_letters(data, &["redrive", "--json"], &[VARIANT]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again[0]["resolved"], 0, "{again}");
    assert_eq!(events_of("dl-call-1"), 1);

    // The serving process counts them by state (refreshed every 15 s).
    let series = |state: &str, reason: &str| {
        format!("callhook_sink_dead_letters_held{{reason=\"{reason}\",sink=\"sqlite\",state=\"{state}\"}}")
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, metrics) = server.admin_get("/metrics");
        let resolved = metric_series(&metrics, &series("resolved", "unknown_event"));
        let open = metric_series(&metrics, &series("open", "unparseable_body"));
        if resolved == Some(1.0) && open == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "held: resolved {resolved:?} open {open:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(server);
}
