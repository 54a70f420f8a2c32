//! The stale sweep with an injected clock: a real SQLite sink, no sleeping. The sweep finds a
//! call with no terminal event once its source's `stale_after` has passed since callhook
//! received its last event, its notice maps to one `call.stale` with a deterministic id, and a
//! late hangup moves the row on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use callhook_normalizer::build::event_id;
use callhook_normalizer::stale::{dedupe_key, StaleSweep, ORIGIN_HEADER};
use callhook_normalizer::{map_push, Dialect, RawPush, SourceContext};
use callhook_rawlog::RawRecord;
use callhook_schemas::EventType;
use callhook_sinks::sqlite::stale::open_for_sweep;
use callhook_sinks::{SinkBatch, SinkEvent, SinkItem, SqliteSink, SqliteSinkSettings};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

const CALL: &str = "403344537650466816";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap()
}

fn contexts() -> HashMap<String, SourceContext> {
    [("7moor", Dialect::SevenMoor), ("slow", Dialect::SevenMoor)]
        .into_iter()
        .map(|(name, dialect)| (name.to_owned(), SourceContext::new(name, dialect)))
        .collect()
}

fn v7(source: &str, event_unique_id: &str, push_type: &str, call_event: &str) -> RawRecord {
    let body = serde_json::json!({
        "eventUniqueId": event_unique_id,
        "accountId": "20000153",
        "callUniqueId": CALL,
        "pushType": push_type,
        "customerNumber": "17319132391",
        "statusTime": "1620455977",
        "callEvent": call_event,
        "callType": "dialout",
    });
    RawRecord {
        source: source.to_owned(),
        received_at: t0(),
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: None,
        request_id: event_unique_id.to_owned(),
        headers: Vec::new(),
        body: serde_json::to_vec(&body).unwrap().into(),
    }
}

/// Maps `record` (at `received_at`) and commits it; returns the mapped events.
fn commit(
    sink: &mut SqliteSink,
    mut record: RawRecord,
    received_at: DateTime<Utc>,
) -> Vec<SinkEvent> {
    record.received_at = received_at;
    let contexts = contexts();
    let push = RawPush {
        method: &record.method,
        content_type: record.content_type.as_deref(),
        query: None,
        headers: &record.headers,
        body: &record.body,
        received_at,
    };
    let mapped = map_push(&push, &contexts[&record.source]).unwrap();
    let events = SinkEvent::encode_all(mapped.events).unwrap();
    sink.commit_batch(&SinkBatch {
        consumer: "test".to_owned(),
        offsets: Vec::new(),
        items: vec![SinkItem::Push {
            raw_ref: format!("0:{}", record.request_id),
            source: record.source.clone(),
            dedupe_key: mapped.dedupe_key,
            received_at,
            events: events.clone(),
        }],
    })
    .unwrap();
    events
}

fn sweep_at(db: &std::path::Path, now: DateTime<Utc>) -> Vec<(String, RawRecord)> {
    let sweep = StaleSweep {
        stale_after: BTreeMap::from([
            ("7moor".to_owned(), Duration::from_secs(2 * 3600)),
            ("slow".to_owned(), Duration::from_secs(4 * 3600)),
        ]),
        clock: Box::new(move || now),
    };
    sweep
        .sweep(&mut open_for_sweep(db, Duration::from_secs(1)).unwrap())
        .unwrap()
}

fn status(db: &std::path::Path, source: &str) -> String {
    open_for_sweep(db, Duration::from_secs(1))
        .unwrap()
        .query_row(
            "SELECT status FROM calls WHERE source = ?1 AND call_id = ?2",
            [source, CALL],
            |row| row.get(0),
        )
        .unwrap()
}

#[test]
fn test_a_call_goes_stale_after_stale_after_on_the_receive_clock_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callhook.db");
    let mut sink = SqliteSink::open(&SqliteSinkSettings::for_path(&db)).unwrap();
    commit(&mut sink, v7("7moor", "e1", "dialoutRing", "ring"), t0());
    // The second event is received 10 minutes later: the clock starts from it.
    let last = t0() + TimeDelta::minutes(10);
    commit(&mut sink, v7("7moor", "e2", "callStatus", "link"), last);
    commit(&mut sink, v7("slow", "s1", "dialoutRing", "ring"), last);
    assert_eq!(status(&db, "7moor"), "in_progress");

    assert!(sweep_at(&db, last + TimeDelta::minutes(119)).is_empty());
    let found = sweep_at(&db, last + TimeDelta::minutes(121));
    assert_eq!(found.len(), 1, "only 7moor's call: `slow` waits 4 h");
    let (key, notice) = &found[0];
    assert_eq!(key, CALL);
    assert_eq!(notice.source, "7moor");
    assert!(notice
        .headers
        .contains(&(ORIGIN_HEADER.0.to_owned(), ORIGIN_HEADER.1.to_owned())));

    // The notice maps to one call.stale with a deterministic id and a written reason.
    let detected = last + TimeDelta::minutes(121);
    let events = commit(&mut sink, notice.clone(), detected);
    assert_eq!(events.len(), 1);
    let stale = &events[0].event;
    assert_eq!(stale.event_type, EventType::CallStale);
    assert_eq!(stale.id, event_id("7moor", &dedupe_key(CALL), 0));
    assert_eq!(stale.time, detected);
    let reason = stale.data.stale_reason.as_deref().unwrap();
    assert!(reason.contains("within 2 h"), "{reason}");
    assert!(reason.contains("call.answered"), "{reason}");
    assert_eq!(status(&db, "7moor"), "stale");

    // Swept again later: nothing, the call is no longer in progress. A notice appended twice
    // (before the first was projected) is a duplicate.
    assert!(sweep_at(&db, last + TimeDelta::hours(3))
        .iter()
        .all(|(_, record)| record.source == "slow"));
    let again = commit(&mut sink, notice.clone(), detected + TimeDelta::minutes(1));
    assert_eq!(again[0].event.id, stale.id);
    let count: i64 = open_for_sweep(&db, Duration::from_secs(1))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM events WHERE type = 'call.stale'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(count, 1);

    // The hangup arrives late: ended, and its sequence follows the stale event's.
    commit(
        &mut sink,
        v7("7moor", "e3", "dialoutHangup", "hangup"),
        last + TimeDelta::hours(5),
    );
    assert_eq!(status(&db, "7moor"), "ended");
    let sequences: Vec<(String, i64)> = {
        let connection = open_for_sweep(&db, Duration::from_secs(1)).unwrap();
        let mut statement = connection
            .prepare(
                "SELECT type, sequence FROM events WHERE source_name = '7moor' ORDER BY sequence",
            )
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let types: Vec<&str> = sequences.iter().map(|(t, _)| t.as_str()).collect();
    let numbers: Vec<i64> = sequences.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (1..=sequences.len() as i64).collect::<Vec<_>>());
    assert_eq!(types.last(), Some(&"call.ended"));
    assert_eq!(types[types.len() - 2], "call.stale");
}

#[test]
fn test_a_notice_that_is_not_json_is_a_typed_error() {
    let mut record = v7("7moor", "x", "dialoutRing", "ring");
    record.headers = vec![(ORIGIN_HEADER.0.to_owned(), ORIGIN_HEADER.1.to_owned())];
    record.body = b"{not json".to_vec().into();
    let push = RawPush {
        method: &record.method,
        content_type: record.content_type.as_deref(),
        query: None,
        headers: &record.headers,
        body: &record.body,
        received_at: t0(),
    };
    let error = map_push(&push, &contexts()["7moor"]).unwrap_err();
    assert_eq!(error.reason(), "unrecognized_shape");
}
