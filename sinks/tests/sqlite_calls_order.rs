//! The `calls` row does not depend on the order a call's events arrive in, how they are split
//! into batches, or on retried pushes: every permutation of one call's events, exhaustively
//! and under proptest with arbitrary batch splits and late retries, yields the same row.

mod common;

use std::path::Path;

use callhook_schemas::{
    AbandonPoint, AgentState, AgentStatus, CloudEvent, Direction, DisconnectReason,
    DisconnectReasonValue, DispositionValue, EventType, IvrStep, Leg, NumberKind, Queue,
};
use callhook_sinks::{SinkItem, SqliteSink};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rusqlite::types::Value;
use serde_json::json;

/// Number of events in the test call.
const EVENTS: usize = 6;

/// One call's six events with overlapping and conflicting fields, so that every fold rule has
/// something to choose between. `tag` keeps ids and the call id distinct between calls while
/// preserving the ids' relative order (the slot is in the high digits).
fn call_events(tag: u128) -> Vec<CloudEvent> {
    let call_id = format!("call-{tag}");
    let id = |slot: u128| event_id((slot << 64) | tag);
    let mut events = live_events(&call_id, &id);
    events.extend(end_events(&call_id, &id));
    events
}

/// Slots 1 to 3: initiated, ringing, answered.
fn live_events(call_id: &str, id: &dyn Fn(u128) -> String) -> Vec<CloudEvent> {
    let mut initiated = call_event(id(1), EventType::CallInitiated, at(0), call_id);
    initiated.data.caller = Some(phone("1001", None, NumberKind::Extension));
    let correlation = &mut initiated.data.correlation;
    correlation.insert("ActionID".to_owned(), json!("a-initiated"));
    initiated.data.ivr_path = vec![ivr_step("1", Some("1"))];

    let mut ringing = call_event(id(2), EventType::CallRinging, at(3), call_id);
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
    let correlation = &mut ringing.data.correlation;
    correlation.insert("ActionID".to_owned(), json!("a-ringing"));
    correlation.insert("extras".to_owned(), json!({"order": 7}));
    // v1.1: the call's own id as conversation (loses to a link), a queue join.
    ringing.data.conversation_id = Some(call_id.to_owned());
    ringing.data.leg = Some(Leg::Customer);
    ringing.data.queue_joined_at = Some(at(1));

    let mut answered = call_event(id(3), EventType::CallAnswered, at(5), call_id);
    answered.data.direction = Direction::Outbound;
    answered.data.answered_at = Some(at(4));
    answered.data.conversation_id = Some("conversation-a".to_owned());
    answered.data.queue_left_at = Some(at(4));
    vec![initiated, ringing, answered]
}

/// Slots 4 to 6: ended and media failure at the same time, and a CDR timed before both.
fn end_events(call_id: &str, id: &dyn Fn(u128) -> String) -> Vec<CloudEvent> {
    let mut ended = call_event(id(4), EventType::CallEnded, at(65), call_id);
    ended.data.disposition = disposition(DispositionValue::NoAnswer, Some("hangup"));
    ended.data.talk_seconds = Some(61);
    ended.data.recording_urls = vec!["https://rec.example/live.mp3".to_owned()];
    ended.data.leg = Some(Leg::Transfer);
    ended.data.disconnect_reason = reason(DisconnectReasonValue::AgentHangup, "AGENT");
    ended.data.abandon_point = Some(AbandonPoint::AgentRinging);

    let mut media_failure = call_event(id(5), EventType::CallMediaFailure, at(65), call_id);
    media_failure.data.disposition = disposition(DispositionValue::Failed, None);
    media_failure.data.disconnect_reason = reason(DisconnectReasonValue::Busy, "onThePhone");

    let mut cdr = call_event(id(6), EventType::CallCdr, at(62), call_id);
    cdr.data.disposition = disposition(DispositionValue::Answered, Some("dealing"));
    cdr.data.talk_seconds = Some(58);
    cdr.data.ended_at = Some(at(64));
    cdr.data.callee = Some(phone("8001", None, NumberKind::Extension));
    cdr.data.recording_urls = vec![String::new(), "https://rec.example/cdr.mp3".to_owned()];
    let correlation = &mut cdr.data.correlation;
    correlation.insert("ActionID".to_owned(), json!("a-cdr"));
    cdr.data.leg = Some(Leg::Customer);
    cdr.data.queue_seconds = Some(3);
    cdr.data.abandon_point = Some(AbandonPoint::NotAbandoned);
    cdr.data.disconnect_reason = reason(DisconnectReasonValue::CustomerHangup, "CUSTOMER");
    cdr.data.ivr_path = vec![ivr_step("2", None)];
    vec![ended, media_failure, cdr]
}

/// Every `calls` row, without the `call_id` column (the only column that differs by design
/// between the calls of the exhaustive test) and the `revision` (how many times the row was
/// written, which depends on how the events were split into batches).
fn calls_rows(dir: &Path) -> Vec<Vec<Value>> {
    let names = rows(dir, "SELECT name FROM pragma_table_info('calls')");
    let revision = names
        .iter()
        .position(|name| name[0] == Value::Text("revision".to_owned()))
        .expect("calls has a revision column");
    rows(dir, "SELECT * FROM calls ORDER BY call_id")
        .into_iter()
        .map(|mut row| {
            row.remove(revision);
            row.remove(1);
            row
        })
        .collect()
}

fn ivr_step(node: &str, keys: Option<&str>) -> IvrStep {
    IvrStep {
        node: Some(node.to_owned()),
        name: None,
        keys: keys.map(str::to_owned),
    }
}

fn reason(value: DisconnectReasonValue, raw: &str) -> Option<DisconnectReason> {
    Some(DisconnectReason {
        value,
        raw: Some(raw.to_owned()),
    })
}

/// Commits `items` to `sink`, starting a new batch after item `i` whenever `split_after[i]`.
fn commit_split(sink: &mut SqliteSink, items: Vec<SinkItem>, split_after: &[bool]) {
    let mut pending = Vec::new();
    let total = items.len();
    for (index, item) in items.into_iter().enumerate() {
        pending.push(item);
        if split_after.get(index).copied().unwrap_or(false) || index + 1 == total {
            sink.commit_batch(&batch(
                std::mem::take(&mut pending),
                vec![(0, index as u64 + 1)],
            ))
            .unwrap();
        }
    }
}

/// The row for the call committed in one batch, in its natural order.
fn reference_row() -> Vec<Value> {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let items = call_events(0)
        .into_iter()
        .enumerate()
        .map(|(slot, event)| push(&format!("p{slot}"), vec![event]))
        .collect();
    sink.commit_batch(&batch(items, vec![])).unwrap();
    let mut found = calls_rows(dir.path());
    assert_eq!(found.len(), 1);
    found.remove(0)
}

#[test]
fn test_reference_row_applies_the_fold_rules() {
    let row = reference_row();
    let time = |seconds: i64| {
        Value::Text(format!(
            "2024-05-01T02:{:02}:{:02}.000000000Z",
            seconds / 60,
            seconds % 60
        ))
    };
    let text = |value: &str| Value::Text(value.to_owned());
    // Columns in schema order, without call_id.
    let expected = vec![
        text(SOURCE),
        text("7moor"),
        text("inbound"),
        text("1001"),
        Value::Null,
        text("8001"),
        Value::Null,
        text("8001"),
        text("Wang"),
        text("q1"),
        text("sales"),
        Value::Null,
        time(0),
        time(0),
        time(3),
        time(4),
        time(65),
        text("answered"),
        text("dealing"),
        Value::Integer(58),
        text("https://rec.example/cdr.mp3"),
        text(r#"{"ActionID":"a-cdr","extras":{"order":7}}"#),
        Value::Integer(6),
        text("call.media_failure"),
        time(65),
        // v1.1 (after `revision`, which is left out).
        text("conversation-a"),
        text("transfer"),
        time(1),
        time(4),
        Value::Integer(3),
        text("none"),
        text("customer_hangup"),
        text("CUSTOMER"),
        text(r#"[{"node":"2"}]"#),
        text("final"),
    ];
    assert_eq!(row, expected);
}

#[test]
fn test_every_permutation_of_single_event_batches_gives_the_same_row() {
    let dir = scratch_dir();
    let mut sink = open_sink(dir.path());
    let permutations = permutations(EVENTS);
    for (tag, order) in permutations.iter().enumerate() {
        let events = call_events(tag as u128);
        let items = order
            .iter()
            .map(|slot| push(&events[*slot].id, vec![events[*slot].clone()]))
            .collect();
        commit_split(&mut sink, items, &[true; EVENTS]);
    }
    let reference = reference_row();
    let found = calls_rows(dir.path());
    assert_eq!(found.len(), permutations.len());
    for (tag, row) in found.iter().enumerate() {
        assert_eq!(row, &reference, "call {tag}");
    }
}

/// The arrival sequence: every slot once plus up to three late retries, each either the same
/// push again (same dedupe key) or the same event in a new push; shuffled; with batch splits.
fn arrivals() -> impl Strategy<Value = (Vec<(usize, Option<usize>)>, Vec<bool>)> {
    let retries = prop::collection::vec((0..EVENTS, any::<bool>()), 0..=3);
    let sequence = retries.prop_flat_map(|retries| {
        let mut all: Vec<(usize, Option<usize>)> = (0..EVENTS).map(|slot| (slot, None)).collect();
        for (number, (slot, new_push)) in retries.into_iter().enumerate() {
            all.push((slot, new_push.then_some(number)));
        }
        Just(all).prop_shuffle()
    });
    (sequence, prop::collection::vec(any::<bool>(), EVENTS + 3))
}

#[test]
fn test_proptest_any_order_split_and_retries_give_the_same_row() {
    let reference = reference_row();
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&arrivals(), |(sequence, split_after)| {
        let dir = scratch_dir();
        let mut sink = open_sink(dir.path());
        let events = call_events(0);
        let items = sequence
            .iter()
            .map(|(slot, retry)| {
                let key = match retry {
                    None => format!("p{slot}"),
                    Some(number) => format!("retry-{number}"),
                };
                push(&key, vec![events[*slot].clone()])
            })
            .collect();
        commit_split(&mut sink, items, &split_after);
        prop_assert_eq!(calls_rows(dir.path()), vec![reference.clone()]);
        prop_assert_eq!(
            count(dir.path(), "SELECT count(*) FROM events"),
            EVENTS as i64
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// A sink keeps the folds of recent calls in memory; another writer of the same file (a second
/// normalizer, an in-place replay) changing a call's row behind its back must not make it write
/// a row that misses that writer's events.
#[test]
fn test_another_writer_of_the_same_call_is_not_overwritten_by_a_stale_fold() {
    let dir = scratch_dir();
    let mut first = open_sink(dir.path());
    let mut second = open_sink(dir.path());
    let items: Vec<SinkItem> = call_events(0)
        .into_iter()
        .enumerate()
        .map(|(slot, event)| push(&format!("p{slot}"), vec![event]))
        .collect();
    let mut items = items.into_iter();
    // `first` folds two events and caches the fold; `second` adds two more to the same call;
    // `first` then adds the last two on top of its (now stale) fold.
    for writer in [0, 1, 0] {
        let sink = if writer == 0 { &mut first } else { &mut second };
        let batch_items: Vec<SinkItem> = items.by_ref().take(2).collect();
        sink.commit_batch(&batch(batch_items, vec![])).unwrap();
    }
    assert_eq!(calls_rows(dir.path()), vec![reference_row()]);
}
