//! End to end over real HTTP: the real `callhook serve` binary on 127.0.0.1:0, every seed push
//! of every vendor posted as the vendor sends it, then the rows in `events`, `calls`, `agents`
//! and `dead_letters` checked; re-posting adds nothing; every order of one call's events gives
//! the same `calls` row; each bad-input class gets its status.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{fixture_config, fixture_pushes, metric_value, FixturePush, Server};
use rusqlite::Connection;
use serde_json::Value;

fn post_all(server: &Server, pushes: &[FixturePush]) {
    for push in pushes {
        let (status, body) = server.request(
            &push.method,
            &push.target(),
            push.content_type.as_deref(),
            &push.body,
        );
        assert_eq!(
            (status, body.as_str()),
            (200, "200"),
            "{}/{}",
            push.vendor,
            push.case
        );
    }
}

fn count(db: &Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |row| row.get(0)).expect(sql)
}

/// (type, subject, vendor_event) of every event the golden files expect.
fn expected_events(pushes: &[FixturePush]) -> BTreeSet<(String, String, String, String)> {
    let mut expected = BTreeSet::new();
    for push in pushes {
        for event in push.expected["events"].as_array().into_iter().flatten() {
            let subject = event["subject"].as_str().unwrap_or_default();
            if subject.starts_with("push/") {
                continue; // keyed by a receive-time bucket: differs from the golden run
            }
            expected.insert((
                event["data"]["source_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                event["type"].as_str().unwrap_or_default().to_owned(),
                subject.to_owned(),
                event["data"]["vendor_event"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    expected
}

fn stored_events(db: &Connection) -> BTreeSet<(String, String, String, String)> {
    let mut statement = db
        .prepare("SELECT json_extract(data, '$.source_name'), type, subject, json_extract(data, '$.vendor_event') FROM events")
        .expect("prepare");
    let rows = statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .expect("query");
    rows.map(|row| row.expect("row")).collect()
}

#[test]
fn test_every_seed_push_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(&fixture_config()));
    let pushes = fixture_pushes();
    assert!(
        pushes.len() >= 30,
        "expected the vendors' fixtures, found {}",
        pushes.len()
    );
    post_all(&server, &pushes);
    server.wait_until_normalized();

    let db = server.db();
    let stored = stored_events(&db);
    let missing: Vec<_> = expected_events(&pushes)
        .difference(&stored)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "events the golden files expect but the sink lacks: {missing:#?}"
    );

    let error_cases: Vec<&FixturePush> = pushes
        .iter()
        .filter(|p| p.expected.get("error").is_some())
        .collect();
    let dead = count(&db, "SELECT COUNT(*) FROM dead_letters");
    assert_eq!(
        dead,
        error_cases.len() as i64,
        "one dead letter per unmappable fixture"
    );
    for push in &error_cases {
        let reason = push.expected["error"]["reason"].as_str().unwrap();
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM dead_letters WHERE reason = ?1 AND source = ?2",
                [reason, &push.source],
                |r| r.get(0),
            )
            .unwrap();
        assert!(n >= 1, "{}: no dead letter with reason {reason}", push.case);
    }

    // Pushes with neither a vendor id nor a vendor time are keyed by a receive-time bucket, so a
    // re-post that crosses a bucket boundary is (by design) a new event: compare the others.
    let keyed = "SELECT COUNT(*) FROM events WHERE timesource = 'vendor'";
    let events_before = count(&db, keyed);
    let calls_before = count(&db, "SELECT COUNT(*) FROM calls");
    let events_before_all = count(&db, "SELECT COUNT(*) FROM events");
    let duplicates_metric = |server: &Server| {
        let (_, metrics) = server.admin_get("/metrics");
        metric_value(&metrics, "callhook_normalizer_duplicates_total").unwrap_or(0.0)
    };
    let duplicates_before = duplicates_metric(&server);
    assert!(calls_before > 0 && count(&db, "SELECT COUNT(*) FROM agents") > 0);

    // Vendors retry: the same pushes again add no event, no call, no dead letter.
    post_all(&server, &pushes);
    server.wait_until_normalized();
    assert_eq!(count(&db, keyed), events_before);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM calls"), calls_before);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM dead_letters"),
        dead * 2,
        "a re-posted bad push is a new raw record, so a new dead letter"
    );
    let (_, metrics) = server.admin_get("/metrics");
    let duplicates = duplicates_metric(&server) - duplicates_before;
    // Every re-posted push that maps is a duplicate, except an id-less, time-less one whose
    // re-post fell into the next receive-time bucket (a new push by design, with new events).
    let new_events = count(&db, "SELECT COUNT(*) FROM events") - events_before_all;
    let expected = (pushes.len() - error_cases.len()) as i64;
    assert!(
        duplicates as i64 <= expected && duplicates as i64 >= expected - new_events,
        "duplicates counted: {duplicates} of {expected}, new events {new_events}"
    );
    if new_events == 0 {
        assert_eq!(duplicates as i64, expected);
    }
    // Each retry the LRU dropped is also a record whose outcome is `duplicate`, by source (the
    // sink drops the others, e.g. two copies in one batch, after they were mapped).
    let duplicate_records: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("callhook_normalizer_records_total{")
                && line.contains("outcome=\"duplicate\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    let cache_stage = common::metric_series(
        &metrics,
        "callhook_normalizer_duplicates_total{stage=\"cache\"}",
    );
    assert!(duplicate_records > 0.0);
    assert_eq!(
        Some(duplicate_records),
        cache_stage,
        "records_total{{outcome=duplicate}}"
    );
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn test_seed_call_rows_and_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(&fixture_config()));
    post_all(&server, &fixture_pushes());
    server.wait_until_normalized();
    let db = server.db();
    // The 7moor v7 cdr seed: an answered outbound call with a recording.
    let (disposition, talk, recording, direction): (Option<String>, Option<i64>, Option<String>, Option<String>) = db
        .query_row(
            "SELECT disposition, talk_seconds, recording_url, direction FROM calls WHERE call_id = '403344537650466816' AND source = '7moor-main'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("the 7moor seed call has a calls row");
    assert_eq!(disposition.as_deref(), Some("answered"));
    assert_eq!(talk, Some(5));
    assert!(recording.unwrap_or_default().ends_with("doubleTrack.mp3"));
    assert_eq!(direction.as_deref(), Some("outbound"));
    // Every agent row holds a canonical status.
    let mut statement = db.prepare("SELECT status FROM agents").unwrap();
    let statuses: Vec<String> = statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let allowed = [
        "idle", "busy", "dialing", "ringing", "talking", "wrap_up", "hold", "mute", "offline",
        "unknown",
    ];
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| allowed.contains(&s.as_str())),
        "{statuses:?}"
    );
}

/// Heap's algorithm: every permutation of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, items: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

#[test]
fn test_call_row_is_the_same_in_every_order() {
    // One 7moor v7 outbound call: ring, calling status, link, hangup, cdr.
    let templates = [
        r#"{"eventUniqueId":"E1-{n}","accountId":"20000153","callUniqueId":"C-{n}","pushType":"dialoutRing","customerNumber":"17319132391","trunkNumber":"","displayNumber":"01081400192","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","agentName":"sc","extras":""}"#,
        r#"{"eventUniqueId":"E2-{n}","accountId":"20000153","callUniqueId":"C-{n}","pushType":"callStatus","customerNumber":"17319132391","trunkNumber":"","displayNumber":"01081400192","statusTime":"1620455972","callEvent":"calling","callType":"dialout","agentNumber":"20001","agentName":"sc","statusName":"呼叫中","statusNumber":"2","extras":""}"#,
        r#"{"content":{"accountId":"20000153","callUniqueId":"C-{n}","customerNumber":"17319132391","trunkNumber":"","displayNumber":"01081400192","statusTime":"1620455982","callEvent":"link","callType":"dialout","extras":"","agentNumber":"20001","agentName":"sc"},"uniqueId":"U3-{n}"}"#,
        r#"{"eventUniqueId":"E4-{n}","accountId":"20000153","callUniqueId":"C-{n}","pushType":"dialoutHangup","customerNumber":"17319132391","trunkNumber":"","displayNumber":"01081400192","statusTime":"1620455987","callEvent":"hangup","callType":"dialout","agentNumber":"20001","extras":"","agentName":"sc"}"#,
        r#"{"callUniqueId":"C-{n}","accountId":"20000153","pushType":"cdr","eventUniqueId":"E5-{n}","customerNumber":"17319132391","displayNumber":"01081400192","callType":"dialout","agentNumber":"20001","agentName":"sc","startTime":"2021-05-08 14:39:32","customerAnswerTime":"2021-05-08 14:39:42","bridgeTime":"2021-05-08 14:39:42","endTime":"2021-05-08 14:39:47","bridgeDuration":5,"totalDuration":15,"status":"ANSWER","hangUpSide":"AGENT","recordFileUrl":"https://rec.example/C.mp3","extras":""}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let orders = permutations(templates.len());
    assert_eq!(orders.len(), 120);
    for (n, order) in orders.iter().enumerate() {
        for &index in order {
            let body = templates[index].replace("{n}", &n.to_string());
            let (status, _) = server.request(
                "POST",
                "/hooks/7moor",
                Some("application/json"),
                body.as_bytes(),
            );
            assert_eq!(status, 200);
        }
    }
    server.wait_until_normalized();
    let db = server.db();
    let mut statement = db
        .prepare("SELECT direction, caller, callee, agent_number, queue, first_event_at, ringing_at, answered_at, ended_at, disposition, talk_seconds, recording_url, correlation, events_count, last_event_type FROM calls WHERE source = '7moor' AND call_id LIKE 'C-%'")
        .unwrap();
    let rows: Vec<Vec<Value>> = statement
        .query_map([], |row| {
            (0..15)
                .map(|i| {
                    row.get::<_, rusqlite::types::Value>(i)
                        .map(|v| Value::String(format!("{v:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 120, "one calls row per permutation");
    let distinct: BTreeMap<String, usize> = rows.iter().fold(BTreeMap::new(), |mut acc, row| {
        *acc.entry(format!("{row:?}")).or_default() += 1;
        acc
    });
    assert_eq!(
        distinct.len(),
        1,
        "calls rows differ by arrival order: {distinct:#?}"
    );
    let row = &rows[0];
    assert!(format!("{:?}", row[9]).contains("answered"), "{row:?}");
    assert!(format!("{:?}", row[13]).contains('5'), "5 events: {row:?}");
}

#[test]
fn test_bad_input_gets_its_status_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[ingest]\nmax_body_bytes = 4096\n\n[sources.7moor]\ndialect = \"7moor\"\n\n[sources.locked]\ndialect = \"uincall\"\n[sources.locked.auth]\ntoken = \"a-very-secret-token-42\"\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    assert_eq!(server.request("POST", "/hooks/nobody", None, b"{}").0, 404);
    assert_eq!(
        server
            .request("POST", "/hooks/7moor", None, &vec![b'x'; 5000])
            .0,
        413
    );
    assert_eq!(
        server
            .request("POST", "/hooks/locked", Some("application/json"), b"{}")
            .0,
        401
    );
    assert_eq!(
        server
            .request(
                "POST",
                "/hooks/locked?token=wrong-token-wrong-token",
                Some("application/json"),
                b"{}"
            )
            .0,
        401
    );
    let ok = server.request(
        "POST",
        "/hooks/locked?token=a-very-secret-token-42",
        Some("application/json"),
        br#"{"command":"agentstatus","dir":"DN","agent_num":"1"}"#,
    );
    assert_eq!(ok, (200, "200".to_owned()));
    // Garbage and unknown events are acknowledged, stored, and dead-lettered with a reason.
    assert_eq!(
        server
            .request(
                "POST",
                "/hooks/7moor",
                Some("application/json"),
                b"\xff\xfe not json at all"
            )
            .0,
        200
    );
    assert_eq!(
        server
            .request(
                "POST",
                "/hooks/7moor",
                Some("application/json"),
                br#"{"pushType":"teleport","eventUniqueId":"x"}"#
            )
            .0,
        200
    );
    server.wait_until_normalized();
    let db = server.db();
    let mut statement = db
        .prepare("SELECT reason FROM dead_letters ORDER BY raw_ref")
        .unwrap();
    let reasons: Vec<String> = statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reasons, ["unparseable_body", "unknown_event"]);
    assert_eq!(
        common::raw_record_count(&server.data_dir),
        3,
        "refused requests store nothing"
    );
    // The stored raw query carries no token.
    let raw = common::open_read_only(&server.data_dir.join("rawlog.db"));
    let queries: Vec<Option<String>> = raw
        .prepare("SELECT query FROM log_records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        queries
            .iter()
            .flatten()
            .all(|q| !q.contains("a-very-secret")),
        "{queries:?}"
    );
    let (status, body) = server.admin_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.admin_get("/healthz").0, 200);
}
