//! The PostgreSQL sink against a real PostgreSQL (the test kit's server): the same rows as the
//! SQLite sink for the same batches in any order and split, re-deliveries that change
//! nothing, a refused push dead-lettered while its batch commits, and migrations run by
//! several processes at once.

mod common;

use std::collections::HashMap;

use callhook_schemas::{
    AbandonPoint, AgentState, AgentStatus, Direction, DisconnectReason, DisconnectReasonValue,
    DispositionValue, EventType, IvrStep, Leg, NumberKind, Queue,
};
use callhook_sinks::postgres::SINK_REJECTED;
use callhook_sinks::{
    PostgresSink, PostgresSinkConfig, ProjectionSettings, ProjectionSinks, SinkItem,
    SqliteSinkConfig,
};
use callhook_testkit::projections::{postgres_rows, sqlite_rows};
use callhook_testkit::Postgres;
use common::*;
use serde_json::json;

fn settings(url: &str) -> callhook_sinks::PostgresSinkSettings {
    PostgresSinkConfig {
        url: Some(url.to_owned()),
        sslmode: callhook_sinks::postgres::SslMode::Disable,
        ..PostgresSinkConfig::default()
    }
    .validate()
    .unwrap()
    .unwrap()
}

/// Pushes of `calls` calls (six events each, fields that every fold rule chooses between)
/// and of agent status changes, one push per event.
fn traffic(calls: u128) -> Vec<SinkItem> {
    let mut items = Vec::new();
    for tag in 0..calls {
        let call_id = format!("call-{tag}");
        let id = |slot: u128| event_id((slot << 64) | tag);
        let mut initiated = call_event(id(1), EventType::CallInitiated, at(0), &call_id);
        initiated.data.caller = Some(phone("1001", None, NumberKind::Extension));
        initiated
            .data
            .correlation
            .insert("ActionID".to_owned(), json!("a-initiated"));
        initiated.data.ivr_path = vec![IvrStep {
            node: Some("610".to_owned()),
            name: Some("主菜单".to_owned()),
            keys: Some(tag.to_string()),
        }];
        let mut ringing = call_event(id(2), EventType::CallRinging, at(3), &call_id);
        ringing.data.direction = Direction::Inbound;
        ringing.data.caller = Some(phone(
            "17319132391",
            Some("+8617319132391"),
            NumberKind::Mobile,
        ));
        ringing.data.agent = agent("8001", "Wang");
        ringing.data.agent_status = Some(AgentStatus {
            value: AgentState::Ringing,
            raw_code: Some("3".to_owned()),
            raw_label: None,
        });
        ringing.data.queue = Some(Queue {
            id: Some("q1".to_owned()),
            name: Some("sales".to_owned()),
        });
        ringing
            .data
            .correlation
            .insert("extras".to_owned(), json!({"order": 7, "b": [1, 2.50]}));
        let mut answered = call_event(id(3), EventType::CallAnswered, at(5 + tag as i64), &call_id);
        answered.data.direction = Direction::Outbound;
        answered.data.answered_at = Some(at(4));
        // v1.1: calls 0 and 1, 2 and 3, ... are the two legs of one conversation.
        answered.data.conversation_id = Some(format!("conversation-{}", tag / 2));
        answered.data.leg = Some(if tag % 2 == 0 {
            Leg::Customer
        } else {
            Leg::Transfer
        });
        answered.data.queue_left_at = Some(at(4));
        ringing.data.queue_joined_at = Some(at(1));
        let mut ended = call_event(id(4), EventType::CallEnded, at(65), &call_id);
        ended.data.disposition = disposition(DispositionValue::NoAnswer, Some("hangup"));
        ended.data.talk_seconds = Some(61);
        ended.data.recording_urls = vec!["https://rec.example/live.mp3".to_owned()];
        let mut cdr = call_event(id(6), EventType::CallCdr, at(62), &call_id);
        cdr.data.disposition = disposition(DispositionValue::Answered, Some("dealing"));
        cdr.data.talk_seconds = Some(58);
        cdr.data.ended_at = Some(at(64 + tag as i64));
        cdr.data.abandon_point = Some(AbandonPoint::NotAbandoned);
        cdr.data.disconnect_reason = Some(DisconnectReason {
            value: DisconnectReasonValue::AgentHangup,
            raw: Some("AGENT".to_owned()),
        });
        ended.data.disconnect_reason = Some(DisconnectReason {
            value: DisconnectReasonValue::CustomerHangup,
            raw: None,
        });
        let mut status = agent_event(
            id(7),
            EventType::AgentStatusChanged,
            at(10 + tag as i64),
            "8001",
        );
        status.data.agent_status = Some(AgentStatus {
            value: if tag % 2 == 0 {
                AgentState::Busy
            } else {
                AgentState::Idle
            },
            raw_code: Some(tag.to_string()),
            raw_label: Some("label".to_owned()),
        });
        for (slot, event) in [initiated, ringing, answered, ended, cdr, status]
            .into_iter()
            .enumerate()
        {
            items.push(push(&format!("c{tag}-p{slot}"), vec![event]));
        }
    }
    items
}

/// Commits `items` (offsets `1..`) in batches cut where `cut(index)` says, to both sinks.
fn commit_in_batches(sinks: &mut ProjectionSinks, items: &[SinkItem], cut: impl Fn(usize) -> bool) {
    let mut pending = Vec::new();
    for (index, item) in items.iter().enumerate() {
        pending.push(item.clone());
        if cut(index) || index + 1 == items.len() {
            sinks
                .commit_batch(&batch(
                    std::mem::take(&mut pending),
                    vec![(0, index as u64 + 1)],
                ))
                .unwrap();
        }
    }
}

fn both(url: &str, dir: &std::path::Path) -> ProjectionSinks {
    ProjectionSinks::open(&ProjectionSettings {
        sqlite: Some(SqliteSinkConfig::default().validate(dir).unwrap()),
        postgres: Some(settings(url)),
    })
    .unwrap()
}

fn assert_same_tables(url: &str, dir: &std::path::Path) {
    for table in ["events", "calls", "agents", "dead_letters", "conversations"] {
        let sqlite = sqlite_rows(&dir.join("callhook.db"), table);
        let postgres = postgres_rows(url, table);
        assert_eq!(
            sqlite, postgres,
            "table `{table}` differs between the sinks"
        );
    }
}

#[test]
fn test_rows_equal_the_sqlite_sinks_in_any_order_and_split() {
    let server = Postgres::start();
    let items = traffic(6);
    // Arrival orders: as generated, reversed, and interleaved; batches of 1, 4 and 7 items.
    let mut reversed = items.clone();
    reversed.reverse();
    let mut interleaved: Vec<SinkItem> = items.iter().step_by(2).cloned().collect();
    interleaved.extend(items.iter().skip(1).step_by(2).cloned());
    let mut first_calls = None;
    for (round, (order, size)) in [(items, 1), (reversed, 4), (interleaved, 7)]
        .into_iter()
        .enumerate()
    {
        let database = format!("round{round}");
        server.create_database(&database);
        let url = server.database_url(&database);
        let dir = scratch_dir();
        let mut sinks = both(&url, dir.path());
        commit_in_batches(&mut sinks, &order, |index| (index + 1) % size == 0);
        assert_same_tables(&url, dir.path());
        let calls = postgres_rows(&url, "calls");
        assert_eq!(calls.len(), 6);
        assert_eq!(postgres_rows(&url, "conversations").len(), 3);
        match &first_calls {
            None => first_calls = Some(calls),
            Some(first) => assert_eq!(first, &calls, "order {round} gave other calls rows"),
        }
    }
}

#[test]
fn test_redelivery_writes_nothing_twice() {
    let server = Postgres::start();
    let mut sink = PostgresSink::open(&settings(&server.url())).unwrap();
    let items = traffic(2);
    let first = batch(items.clone(), vec![(0, 12)]);
    let outcome = sink.commit_batch(&first).unwrap();
    assert_eq!(outcome.events_inserted, 12);
    assert_eq!(outcome.calls_touched, 2);
    // The same batch again (a crash after the commit): covered by the stored offsets.
    assert_eq!(sink.commit_batch(&first).unwrap(), Default::default());
    // The same pushes at later offsets (vendor re-sends): duplicates, nothing written.
    let again = sink.commit_batch(&batch(items, vec![(0, 24)])).unwrap();
    assert_eq!((again.events_inserted, again.duplicates_skipped), (0, 12));
    assert_eq!(server.psql("SELECT count(*) FROM events").trim(), "12");
    assert_eq!(
        server
            .psql("SELECT next_offset FROM consumer_offsets")
            .trim(),
        "24"
    );
    assert_eq!(sink.stored_offsets(CONSUMER).unwrap(), vec![(0, 24)]);
    assert!(sink.contains_event(&event_id(1 << 64)).unwrap());
    // Offsets never move back.
    sink.commit_batch(&batch(vec![], vec![(0, 3)])).unwrap();
    assert_eq!(sink.stored_offsets(CONSUMER).unwrap(), vec![(0, 24)]);
}

#[test]
fn test_a_refused_push_is_dead_lettered_and_its_batch_commits() {
    let server = Postgres::start();
    let mut sink = PostgresSink::open(&settings(&server.url())).unwrap();
    let mut items = traffic(1);
    let SinkItem::Push { events, .. } = &mut items[1] else {
        unreachable!()
    };
    let mut poisoned = events[0].event.clone();
    poisoned.data.agent = agent("80\u{0}01", "Wang");
    events[0] = callhook_sinks::SinkEvent::encode(poisoned).unwrap();
    let outcome = sink.commit_batch(&batch(items, vec![(0, 6)])).unwrap();
    assert_eq!(outcome.events_inserted, 5);
    assert_eq!(outcome.dead_letters_written, 1);
    let dead = server.psql("SELECT raw_ref, reason, detail FROM dead_letters");
    assert!(
        dead.starts_with(&format!("push:c0-p1|{SINK_REJECTED}|")),
        "{dead}"
    );
    assert!(dead.contains("NUL"), "{dead}");
    // (The counter is process-wide and another test here dead-letters too.)
    assert!(sink.metrics().dead_letters_count(SINK_REJECTED) >= 1);
    assert_eq!(
        server
            .psql("SELECT next_offset FROM consumer_offsets")
            .trim(),
        "6"
    );
}

#[test]
fn test_a_data_error_found_by_the_server_dead_letters_only_that_push() {
    let server = Postgres::start();
    let mut sink = PostgresSink::open(&settings(&server.url())).unwrap();
    // A check the sink does not know about: the server refuses one push's event.
    server.psql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.subject = 'call-poison' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()",
    );
    let mut items = traffic(1);
    items.push(push(
        "poison",
        vec![call_event(
            event_id(99),
            EventType::CallRinging,
            at(1),
            "call-poison",
        )],
    ));
    let outcome = sink.commit_batch(&batch(items, vec![(0, 7)])).unwrap();
    assert_eq!(
        (outcome.events_inserted, outcome.dead_letters_written),
        (6, 1)
    );
    assert_eq!(
        server
            .psql("SELECT raw_ref, reason FROM dead_letters")
            .trim(),
        format!("push:poison|{SINK_REJECTED}")
    );
}

#[test]
fn test_processes_starting_at_once_migrate_once() {
    let server = Postgres::start();
    let url = server.url();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let settings = settings(&url);
            std::thread::spawn(move || PostgresSink::open(&settings).map(|_| ()))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    assert_eq!(
        server
            .psql("SELECT count(*) FROM callhook_schema_migrations")
            .trim(),
        callhook_sinks::postgres::schema::SCHEMA_VERSION.to_string()
    );
}

#[test]
fn test_two_sinks_resume_from_the_smaller_offset_and_skip_what_they_hold() {
    let server = Postgres::start();
    let dir = scratch_dir();
    let items = traffic(2);
    // The SQLite sink alone took the first batch (the process died before PostgreSQL did).
    {
        let mut sqlite: ProjectionSinks = open_sink(dir.path()).into();
        sqlite
            .commit_batch(&batch(items[..6].to_vec(), vec![(0, 6)]))
            .unwrap();
    }
    let mut sinks = both(&server.url(), dir.path());
    assert_eq!(
        sinks.stored_offsets(CONSUMER).unwrap(),
        Vec::<(u32, u64)>::new()
    );
    // Replayed from the smaller offset (none: the start), in other batch boundaries.
    sinks
        .commit_batch(&batch(items[..4].to_vec(), vec![(0, 4)]))
        .unwrap();
    sinks
        .commit_batch(&batch(items[4..].to_vec(), vec![(0, 12)]))
        .unwrap();
    assert_eq!(sinks.stored_offsets(CONSUMER).unwrap(), vec![(0, 12)]);
    assert_same_tables(&server.url(), dir.path());
    let counts: HashMap<String, String> = [
        (
            "sqlite",
            count(dir.path(), "SELECT count(*) FROM events").to_string(),
        ),
        (
            "postgres",
            server.psql("SELECT count(*) FROM events").trim().to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts["sqlite"], "12");
    assert_eq!(counts["postgres"], "12");

    // Now PostgreSQL alone takes a batch (the process died before SQLite did): the loop
    // resumes from SQLite's smaller offset, and PostgreSQL skips what it holds.
    let more = traffic(3)[12..].to_vec();
    let postgres_alone = sinks
        .postgres()
        .unwrap()
        .commit_batch(&batch(more.clone(), vec![(0, 18)]))
        .unwrap();
    assert_eq!(postgres_alone.events_inserted, 6);
    assert_eq!(sinks.stored_offsets(CONSUMER).unwrap(), vec![(0, 12)]);
    let replayed = sinks.commit_batch(&batch(more, vec![(0, 18)])).unwrap();
    assert_eq!(replayed.events_inserted, 6, "sqlite takes the batch");
    assert_eq!(server.psql("SELECT count(*) FROM events").trim(), "18");
    assert_eq!(sinks.stored_offsets(CONSUMER).unwrap(), vec![(0, 18)]);
    assert_same_tables(&server.url(), dir.path());
}

#[test]
fn test_stale_candidates_and_sequences_agree_with_the_sqlite_sink() {
    let server = Postgres::start();
    let mut postgres = PostgresSink::open(&settings(&server.url())).unwrap();
    let dir = scratch_dir();
    let mut sqlite = open_sink(dir.path());
    // Call `open` rings and is answered; call `done` ends; both received at `at(1000)`.
    let items = vec![
        push(
            "o1",
            vec![call_event(
                event_id(1),
                EventType::CallRinging,
                at(0),
                "open",
            )],
        ),
        push(
            "d1",
            vec![call_event(
                event_id(2),
                EventType::CallRinging,
                at(0),
                "done",
            )],
        ),
        push(
            "o2",
            vec![call_event(
                event_id(3),
                EventType::CallAnswered,
                at(5),
                "open",
            )],
        ),
        push(
            "d2",
            vec![call_event(event_id(4), EventType::CallEnded, at(9), "done")],
        ),
        // A re-send of `o1`: no new number.
        push(
            "o1",
            vec![call_event(
                event_id(1),
                EventType::CallRinging,
                at(0),
                "open",
            )],
        ),
    ];
    let whole = batch(items, vec![(0, 5)]);
    sqlite.commit_batch(&whole).unwrap();
    postgres.commit_batch(&whole).unwrap();
    assert_eq!(
        sqlite_rows(&dir.path().join("callhook.db"), "events"),
        postgres_rows(&server.url(), "events")
    );
    assert_eq!(
        server
            .psql("SELECT string_agg(call_id || ':' || sequence, ',' ORDER BY call_id, sequence) FROM events")
            .trim(),
        "done:1,done:2,open:1,open:2"
    );
    let sqlite_read = callhook_sinks::sqlite::stale::open_for_sweep(
        &dir.path().join("callhook.db"),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    for (cutoff, expected) in [(at(999), Vec::<&str>::new()), (at(1001), vec!["open"])] {
        let from_postgres: Vec<String> = postgres
            .stale_candidates(SOURCE, cutoff, 10)
            .unwrap()
            .into_iter()
            .map(|candidate| candidate.call_id)
            .collect();
        let from_sqlite =
            callhook_sinks::sqlite::stale::stale_candidates(&sqlite_read, SOURCE, cutoff, 10)
                .unwrap();
        assert_eq!(from_postgres, expected);
        assert_eq!(from_sqlite.len(), expected.len());
        if let Some(candidate) = from_sqlite.first() {
            let postgres_candidate = &postgres.stale_candidates(SOURCE, cutoff, 10).unwrap()[0];
            assert_eq!(candidate, postgres_candidate);
            assert_eq!(candidate.last_event_type, "call.answered");
            assert_eq!(candidate.dialect, "7moor.v7");
        }
    }
}
