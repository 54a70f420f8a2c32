//! The SQLite sink against real database files: dedupe, offsets, dead letters, agents,
//! atomicity, and what the rows hold.

mod common;

use callhook_schemas::{
    Agent, AgentState, AgentStatus, CallEventData, Direction, DispositionValue, EventType,
    NumberKind, Queue,
};
use callhook_sinks::metrics::SinkMetrics;
use callhook_sinks::{CommitOutcome, SqliteSink, SqliteSinkConfig, SqliteSinkError};
use common::*;
use rusqlite::types::Value;
use serde_json::json;

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

fn three_events(call_id: &str, first_id: u128) -> Vec<callhook_schemas::CloudEvent> {
    vec![
        call_event(event_id(first_id), EventType::CallInitiated, at(0), call_id),
        call_event(
            event_id(first_id + 1),
            EventType::CallRinging,
            at(2),
            call_id,
        ),
        call_event(
            event_id(first_id + 2),
            EventType::CallAnswered,
            at(4),
            call_id,
        ),
    ]
}

#[test]
fn test_same_push_twice_inserts_its_events_once_and_counts_a_duplicate() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let metrics = SinkMetrics::for_sink("sqlite");
    let duplicates_before = metrics.duplicates_count();
    let first = sink
        .commit_batch(&batch(
            vec![push("k1", three_events("c1", 1))],
            vec![(0, 1)],
        ))
        .unwrap();
    assert_eq!(first.events_inserted, 3);
    assert_eq!(first.duplicates_skipped, 0);
    assert_eq!(first.calls_touched, 1);
    let again = sink
        .commit_batch(&batch(
            vec![push("k1", three_events("c1", 1))],
            vec![(0, 2)],
        ))
        .unwrap();
    assert_eq!(
        again,
        CommitOutcome {
            duplicates_skipped: 1,
            ..CommitOutcome::default()
        }
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 3);
    assert_eq!(count(dir.path(), "SELECT events_count FROM calls"), 3);
    assert!(sink.contains_event(call_key("c1", &event_id(1))).unwrap());
    assert!(!sink.contains_event(call_key("c1", &event_id(99))).unwrap());
    // The same id under another subject is another event.
    assert!(!sink.contains_event(call_key("c2", &event_id(1))).unwrap());
    assert!(metrics.duplicates_count() > duplicates_before);
}

#[test]
fn test_duplicate_push_within_one_batch_is_skipped() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let items = vec![
        push("k1", three_events("c1", 1)),
        push("k1", three_events("c1", 1)),
    ];
    let outcome = sink.commit_batch(&batch(items, vec![(0, 2)])).unwrap();
    assert_eq!(
        (outcome.events_inserted, outcome.duplicates_skipped),
        (3, 1)
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 3);
}

#[test]
fn test_a_late_resend_is_still_a_duplicate_and_a_push_without_events_leaves_nothing() {
    // Duplicates are recognised by the first event's deterministic id: no window, however
    // late the re-send comes.
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    sink.commit_batch(&batch(vec![push("k1", three_events("c1", 1))], vec![]))
        .unwrap();
    let much_later = sink
        .commit_batch(&batch(vec![push("k1", three_events("c1", 1))], vec![]))
        .unwrap();
    assert_eq!(
        (much_later.events_inserted, much_later.duplicates_skipped),
        (0, 1)
    );
    assert_eq!(much_later.calls_touched, 0);
    let empty = sink
        .commit_batch(&batch(vec![push("k2", Vec::new())], vec![]))
        .unwrap();
    assert_eq!(empty, CommitOutcome::default());
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 3);
}

#[test]
fn test_offsets_round_trip_move_only_forward_and_survive_reopen() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    assert_eq!(sink.stored_offsets(CONSUMER).unwrap(), vec![]);
    sink.commit_batch(&batch(vec![], vec![(2, 7), (0, 10)]))
        .unwrap();
    assert_eq!(
        sink.stored_offsets(CONSUMER).unwrap(),
        vec![(0, 10), (2, 7)]
    );
    sink.commit_batch(&batch(vec![], vec![(0, 4), (1, 1)]))
        .unwrap();
    assert_eq!(
        sink.stored_offsets(CONSUMER).unwrap(),
        vec![(0, 10), (1, 1), (2, 7)]
    );
    let mut other = batch(vec![], vec![(0, 99)]);
    other.consumer = "replayer".to_owned();
    sink.commit_batch(&other).unwrap();
    drop(sink);
    let reopened = open_sink(dir.path());
    assert_eq!(
        reopened.stored_offsets(CONSUMER).unwrap(),
        vec![(0, 10), (1, 1), (2, 7)]
    );
    assert_eq!(reopened.stored_offsets("replayer").unwrap(), vec![(0, 99)]);
    assert_eq!(reopened.stored_offsets("nobody").unwrap(), vec![]);
}

#[test]
fn test_dead_letters_are_unique_on_raw_ref() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let metrics = SinkMetrics::for_sink("sqlite");
    let before = metrics.dead_letters_count("unknown_event");
    let items = vec![
        dead_letter("0:5", "unknown_event"),
        dead_letter("0:5", "unknown_event"),
        dead_letter("0:6", "missing_field"),
    ];
    let first = sink
        .commit_batch(&batch(items.clone(), vec![(0, 7)]))
        .unwrap();
    assert_eq!(
        (
            first.dead_letters_written,
            first.dead_letters_already_stored
        ),
        (2, 1)
    );
    let replay = sink.commit_batch(&batch(items, vec![(0, 7)])).unwrap();
    assert_eq!(
        (
            replay.dead_letters_written,
            replay.dead_letters_already_stored
        ),
        (0, 3)
    );
    let stored = rows(
        dir.path(),
        "SELECT raw_ref, source, reason, detail, received_at FROM dead_letters ORDER BY raw_ref",
    );
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0],
        vec![
            text("0:5"),
            text(SOURCE),
            text("unknown_event"),
            text("detail of 0:5"),
            text("2024-05-01T02:16:40.000000000Z")
        ]
    );
    assert!(metrics.dead_letters_count("unknown_event") > before);
}

#[test]
fn test_failed_commit_leaves_nothing_half_written() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    sink.commit_batch(&batch(
        vec![push("k0", three_events("c1", 1))],
        vec![(0, 3)],
    ))
    .unwrap();
    let ended = call_event(event_id(50), EventType::CallEnded, at(60), "c1");
    let failing = batch(
        vec![push("k1", vec![ended]), dead_letter("0:3", "unknown_event")],
        // The first offset is valid and written before the second fails.
        vec![(1, 5), (0, u64::MAX)],
    );
    let error = sink.commit_batch(&failing).unwrap_err();
    assert!(
        matches!(
            error,
            SqliteSinkError::OutOfRange {
                field: "next_offset",
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(sink.stored_offsets(CONSUMER).unwrap(), vec![(0, 3)]);
    assert!(!sink.contains_event(call_key("c1", &event_id(50))).unwrap());
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 3);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM dead_letters"), 0);
    assert_eq!(
        rows(dir.path(), "SELECT events_count, ended_at FROM calls"),
        vec![vec![Value::Integer(3), Value::Null]]
    );
    // The sink stays usable and the corrected batch goes through whole.
    let corrected = batch(failing.items.clone(), vec![(1, 5), (0, 4)]);
    let outcome = sink.commit_batch(&corrected).unwrap();
    assert_eq!(
        (outcome.events_inserted, outcome.dead_letters_written),
        (1, 1)
    );
    assert_eq!(sink.stored_offsets(CONSUMER).unwrap(), vec![(0, 4), (1, 5)]);
}

#[test]
fn test_agents_row_keeps_the_newest_status_in_every_order_and_batching() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let status = |value, code: &str| {
        Some(AgentStatus {
            value,
            raw_code: Some(code.to_owned()),
            raw_label: None,
        })
    };
    for (perm_index, order) in permutations(5).into_iter().enumerate() {
        let agent = format!("8{perm_index:03}");
        // Ids: the slot in the high digits, so ties order the same way in every permutation.
        let id = |slot: u128| event_id((slot << 64) | perm_index as u128);
        let mut events = [
            agent_event(id(1), EventType::AgentLoggedIn, at(10), &agent),
            agent_event(id(2), EventType::AgentStatusChanged, at(20), &agent),
            call_event(
                id(3),
                EventType::CallRinging,
                at(30),
                &format!("call-{perm_index}"),
            ),
            agent_event(id(4), EventType::AgentStatusChanged, at(30), &agent),
            agent_event(id(5), EventType::AgentLoggedOut, at(5), &agent),
        ];
        events[1].data.agent_status = status(AgentState::Busy, "2");
        events[2].data.agent = Some(Agent {
            number: Some(agent.clone()),
            name: None,
            extension: None,
        });
        events[2].data.agent_status = status(AgentState::Ringing, "3");
        events[3].data.agent_status = status(AgentState::WrapUp, "5");
        events[3].data.agent.as_mut().unwrap().name = Some("Wang".to_owned());
        // One push per event; the batches split them three ways, so the sink's per-batch
        // choice of each agent's newest status meets every order too.
        let pushes: Vec<_> = order
            .iter()
            .map(|&slot| push(&events[slot].id, vec![events[slot].clone()]))
            .collect();
        let batch_size = match perm_index % 3 {
            0 => 1,
            1 => 2,
            _ => pushes.len(),
        };
        for items in pushes.chunks(batch_size) {
            sink.commit_batch(&batch(items.to_vec(), vec![])).unwrap();
        }
        let stored = rows(
            dir.path(),
            &format!("SELECT status, raw_code, agent_name, status_at, event_id FROM agents WHERE agent_number = '{agent}'"),
        );
        let expected = vec![
            text("wrap_up"),
            text("5"),
            text("Wang"),
            text("2024-05-01T02:00:30.000000000Z"),
            text(&id(4)),
        ];
        assert_eq!(stored, vec![expected], "permutation {perm_index}");
    }
    assert_eq!(count(dir.path(), "SELECT count(*) FROM agents"), 120);
}

#[test]
fn test_agent_events_make_no_calls_row() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let mut logged_in = agent_event(event_id(1), EventType::AgentLoggedIn, at(0), "8001");
    logged_in.data.call_id = Some("c9".to_owned());
    let outcome = sink
        .commit_batch(&batch(vec![push("k1", vec![logged_in])], vec![]))
        .unwrap();
    assert_eq!(
        (
            outcome.events_inserted,
            outcome.calls_touched,
            outcome.agents_updated
        ),
        (1, 0, 1)
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM calls"), 0);
    assert_eq!(
        rows(dir.path(), "SELECT status FROM agents"),
        vec![vec![text("idle")]]
    );
}

#[test]
fn test_events_row_holds_every_envelope_attribute_and_the_data() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let metrics = SinkMetrics::for_sink("sqlite");
    let before = metrics.events_count(EventType::CallRinging);
    let mut event = call_event(event_id(7), EventType::CallRinging, at(3), "c1");
    event
        .data
        .correlation
        .insert("ActionID".to_owned(), json!("a-1"));
    sink.commit_batch(&batch(vec![push("k1", vec![event.clone()])], vec![]))
        .unwrap();
    let stored = rows(
        dir.path(),
        "SELECT id, type, source, subject, time, timesource, specversion, datacontenttype, dataschema, \
         source_name, call_id, received_at FROM events",
    );
    let expected = [
        &event.id,
        "call.ringing",
        "7moor/20000153",
        "c1",
        "2024-05-01T02:00:03.000000000Z",
        "vendor",
        "1.0",
        "application/json",
        callhook_schemas::DATA_SCHEMA_URI,
        SOURCE,
        "c1",
        "2024-05-01T02:16:40.000000000Z",
    ];
    assert_eq!(
        stored,
        vec![expected.iter().map(|value| text(value)).collect::<Vec<_>>()]
    );
    let data = rows(dir.path(), "SELECT data FROM events");
    let Value::Text(data) = &data[0][0] else {
        panic!("data is not text: {data:?}")
    };
    assert_eq!(
        serde_json::from_str::<CallEventData>(data).unwrap(),
        event.data
    );
    assert!(metrics.events_count(EventType::CallRinging) > before);
}

/// A whole answered call: initiated, ringing (with the parties), answered, ended, CDR.
fn whole_call() -> Vec<callhook_schemas::CloudEvent> {
    let mut ringing = call_event(event_id(2), EventType::CallRinging, at(3), "c1");
    ringing.data.direction = Direction::Inbound;
    ringing.data.caller = Some(phone(
        "17319132391",
        Some("+8617319132391"),
        NumberKind::Mobile,
    ));
    ringing.data.callee = Some(phone("8001", None, NumberKind::Extension));
    ringing.data.agent = agent("8001", "Wang");
    ringing.data.queue = Some(Queue {
        id: Some("q1".to_owned()),
        name: Some("sales".to_owned()),
    });
    let correlation = &mut ringing.data.correlation;
    correlation.insert("ActionID".to_owned(), json!("a-live"));
    correlation.insert("extras".to_owned(), json!({"order": 7}));
    let mut cdr = call_event(event_id(5), EventType::CallCdr, at(70), "c1");
    cdr.data.disposition = disposition(DispositionValue::Answered, Some("dealing"));
    cdr.data.talk_seconds = Some(58);
    cdr.data.ended_at = Some(at(64));
    cdr.data.recording_urls = vec![
        "https://rec.example/1.mp3".to_owned(),
        "https://rec.example/2.mp3".to_owned(),
    ];
    let correlation = &mut cdr.data.correlation;
    correlation.insert("ActionID".to_owned(), json!("a-cdr"));
    vec![
        call_event(event_id(1), EventType::CallInitiated, at(0), "c1"),
        ringing,
        call_event(event_id(3), EventType::CallAnswered, at(5), "c1"),
        call_event(event_id(4), EventType::CallEnded, at(65), "c1"),
        cdr,
    ]
}

#[test]
fn test_calls_row_of_a_whole_call() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let events = whole_call();
    sink.commit_batch(&batch(vec![push("k1", events)], vec![]))
        .unwrap();
    let stored = rows(
        dir.path(),
        "SELECT source, call_id, vendor, direction, caller, caller_e164, callee, agent_number, agent_name, queue, \
         queue_name, first_event_at, started_at, ringing_at, answered_at, ended_at, disposition, disposition_raw, \
         talk_seconds, recording_url, correlation, events_count, last_event_type, last_event_at FROM calls",
    );
    let time = |seconds| {
        text(&format!(
            "2024-05-01T02:{:02}:{:02}.000000000Z",
            seconds / 60,
            seconds % 60
        ))
    };
    let expected = vec![
        text(SOURCE),
        text("c1"),
        text("7moor"),
        text("inbound"),
        text("17319132391"),
        text("+8617319132391"),
        text("8001"),
        text("8001"),
        text("Wang"),
        text("q1"),
        text("sales"),
        time(0),
        time(0),
        time(3),
        time(5),
        time(65),
        text("answered"),
        text("dealing"),
        Value::Integer(58),
        text("https://rec.example/1.mp3"),
        text(r#"{"ActionID":"a-cdr","extras":{"order":7}}"#),
        Value::Integer(5),
        text("call.cdr"),
        time(70),
    ];
    assert_eq!(stored, vec![expected]);
}

#[test]
fn test_open_creates_the_directory_sets_wal_and_refuses_newer_schemas() {
    let dir = scratch_dir();
    let data_dir = dir.path().join("nested/data");
    let sink = open_sink(&data_dir);
    assert_eq!(sink.path(), data_dir.join("callhook.db"));
    assert_eq!(
        rows(&data_dir, "PRAGMA journal_mode"),
        vec![vec![text("wal")]]
    );
    assert_eq!(
        rows(&data_dir, "PRAGMA user_version"),
        vec![vec![Value::Integer(
            callhook_sinks::sqlite::schema::SCHEMA_VERSION
        )]]
    );
    drop(sink);
    rusqlite::Connection::open(data_dir.join("callhook.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let settings = SqliteSinkConfig::default().validate(&data_dir).unwrap();
    let refused = SqliteSink::open(&settings).unwrap_err();
    assert!(
        matches!(
            refused,
            SqliteSinkError::SchemaTooNew {
                found: 99,
                supported: callhook_sinks::sqlite::schema::SCHEMA_VERSION
            }
        ),
        "{refused}"
    );
}

#[test]
fn test_a_bulk_fill_ends_with_the_schema_and_rows_of_an_ordinary_sink() {
    let ordinary = scratch_dir();
    let bulk = scratch_dir();
    let batches = || {
        vec![
            batch(vec![push("k1", whole_call())], vec![(0, 1)]),
            batch(
                vec![push("k1", whole_call()), dead_letter("0:7", "parse_error")],
                vec![(0, 3)],
            ),
        ]
    };
    let mut sink = open_sink(ordinary.path());
    for each in batches() {
        sink.commit_batch(&each).unwrap();
    }
    drop(sink);
    let mut filled = SqliteSink::open_bulk(&bulk.path().join("callhook.db")).unwrap();
    let outcomes: Vec<CommitOutcome> = batches()
        .iter()
        .map(|each| filled.commit_batch(each).unwrap())
        .collect();
    assert_eq!(
        outcomes[1].duplicates_skipped, 1,
        "the dedupe works mid-fill"
    );
    filled.finish_bulk().unwrap();
    let schema = "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name";
    assert_eq!(
        rows(bulk.path(), schema),
        rows(ordinary.path(), schema),
        "every index dropped for the fill is back"
    );
    for table in [
        "events",
        "calls",
        "agents",
        "dead_letters",
        "consumer_offsets",
    ] {
        let select = format!("SELECT * FROM {table} ORDER BY 1, 2");
        assert_eq!(rows(bulk.path(), &select), rows(ordinary.path(), &select));
    }
    let mode = rows(bulk.path(), "PRAGMA journal_mode");
    assert_eq!(mode, vec![vec![text("wal")]]);
    let page_size = "PRAGMA page_size";
    assert_eq!(
        rows(bulk.path(), page_size),
        vec![vec![Value::Integer(8192)]]
    );
    assert_eq!(
        rows(ordinary.path(), page_size),
        vec![vec![Value::Integer(4096)]],
        "a live file keeps SQLite's page size"
    );
}

#[test]
fn test_a_bulk_fill_numbers_and_folds_calls_that_left_its_cache_like_an_ordinary_sink() {
    // Five calls, each seen in two batches far apart, through a bulk fill that caches two
    // calls' folds: the second visit of each finds it neither cached nor new, so its stored
    // events are read back. Sequences, rows and the dedupe must match the ordinary sink's.
    let ordinary = scratch_dir();
    let bulk = scratch_dir();
    let calls = ["c1", "c2", "c3", "c4", "c5"];
    let batches = || {
        let mut batches = Vec::new();
        for (visit, offset) in [(0u128, 0u64), (1, 10)] {
            for (n, call) in calls.iter().enumerate() {
                let n = n as u128;
                let base = 100 * n + 10 * visit;
                let (first, second) = if visit == 0 {
                    (EventType::CallRinging, EventType::CallAnswered)
                } else {
                    (EventType::CallEnded, EventType::CallCdr)
                };
                let time = i64::try_from(base).unwrap();
                let events = vec![
                    call_event(event_id(base + 1), first, at(time), call),
                    call_event(event_id(base + 2), second, at(time + 1), call),
                ];
                let key = format!("{call}-{visit}");
                let mut items = vec![push(&key, events.clone())];
                if visit == 1 {
                    // A re-send of the call's first push: no new number.
                    items.push(push(
                        &format!("{call}-0"),
                        vec![call_event(
                            event_id(100 * n + 1),
                            EventType::CallRinging,
                            at(time),
                            call,
                        )],
                    ));
                }
                let end = offset + n as u64 + 1;
                batches.push(batch(items, vec![(0, end)]));
            }
        }
        batches
    };
    let mut sink = open_sink(ordinary.path());
    for each in batches() {
        sink.commit_batch(&each).unwrap();
    }
    drop(sink);
    let two = std::num::NonZeroUsize::new(2).unwrap();
    let mut filled =
        SqliteSink::open_bulk_with_call_cache(&bulk.path().join("callhook.db"), two).unwrap();
    let duplicates: u64 = batches()
        .iter()
        .map(|each| filled.commit_batch(each).unwrap().duplicates_skipped)
        .sum();
    assert_eq!(duplicates, 5, "each re-send is skipped mid-fill");
    filled.finish_bulk().unwrap();
    let numbered = "SELECT call_id, id, sequence FROM events ORDER BY call_id, sequence";
    let expected = rows(ordinary.path(), numbered);
    assert_eq!(expected.len(), 20);
    assert_eq!(
        expected
            .iter()
            .map(|row| row[2].clone())
            .take(4)
            .collect::<Vec<_>>(),
        (1..=4).map(Value::Integer).collect::<Vec<_>>(),
        "the ordinary sink numbers each call 1..4"
    );
    assert_eq!(rows(bulk.path(), numbered), expected);
    let select = "SELECT * FROM calls ORDER BY 1, 2";
    assert_eq!(rows(bulk.path(), select), rows(ordinary.path(), select));
}
