//! The `conversations` view (model v1.1): one row per conversation over its calls' rows,
//! with the final disposition taken from the leg that ended last.

mod common;

use callhook_schemas::{Direction, DispositionValue, EventType, Leg};
use common::*;
use rusqlite::types::Value;

/// A transferred call: leg A answered by agent 8001 (talk 40 s) and transferred; leg B,
/// linked to A, rang agent 8002 and the caller hung up. A third, unrelated call has no
/// conversation id of its own.
fn commit_three_calls(dir: &std::path::Path) {
    let mut sink = open_sink(dir);
    let mut a_cdr = call_event(event_id(1), EventType::CallCdr, at(60), "A");
    a_cdr.data.conversation_id = Some("A".to_owned());
    a_cdr.data.leg = Some(Leg::Customer);
    a_cdr.data.started_at = Some(at(0));
    a_cdr.data.answered_at = Some(at(10));
    a_cdr.data.ended_at = Some(at(50));
    a_cdr.data.talk_seconds = Some(40);
    a_cdr.data.agent = agent("8001", "Li");
    a_cdr.data.disposition = disposition(DispositionValue::Answered, Some("dealing"));
    let mut b_cdr = call_event(event_id(2), EventType::CallCdr, at(90), "B");
    b_cdr.data.conversation_id = Some("A".to_owned());
    b_cdr.data.parent_call_id = Some("A".to_owned());
    b_cdr.data.leg = Some(Leg::Transfer);
    b_cdr.data.direction = Direction::Inbound;
    b_cdr.data.started_at = Some(at(50));
    b_cdr.data.ringing_at = Some(at(52));
    b_cdr.data.ended_at = Some(at(80));
    b_cdr.data.agent = agent("8002", "Wang");
    b_cdr.data.disposition = disposition(DispositionValue::NoAnswer, Some("notDeal"));
    let other = call_event(event_id(3), EventType::CallRinging, at(5), "C");
    let items = vec![
        push("b", vec![b_cdr]),
        push("c", vec![other]),
        push("a", vec![a_cdr]),
    ];
    sink.commit_batch(&batch(items, vec![])).unwrap();
}

#[test]
fn test_a_transferred_call_is_one_conversation_with_the_last_legs_outcome() {
    let dir = scratch_dir();
    commit_three_calls(dir.path());
    let found = rows(
        dir.path(),
        "SELECT conversation_id, legs, first_started_at, last_ended_at, total_talk_seconds, \
         agents, answered, final_disposition, final_abandon_point FROM conversations \
         ORDER BY conversation_id",
    );
    let text = |value: &str| Value::Text(value.to_owned());
    assert_eq!(
        found[0],
        vec![
            text("A"),
            Value::Integer(2),
            text("2024-05-01T02:00:00.000000000Z"),
            text("2024-05-01T02:01:20.000000000Z"),
            Value::Integer(40),
            text(r#"["8001","8002"]"#),
            Value::Integer(1),
            text("no_answer"),
            // Leg B states none; an inbound call that rang and ended unanswered.
            text("agent_ringing"),
        ]
    );
    // A call with no conversation id is a conversation of its own, still in progress.
    assert_eq!(found[1][0], text("C"));
    assert_eq!(found[1][1], Value::Integer(1));
    assert_eq!(found[1][3], Value::Null);
    assert_eq!(found.len(), 2);
    let legs = rows(
        dir.path(),
        "SELECT call_id, conversation_id, leg FROM calls ORDER BY call_id",
    );
    assert_eq!(
        legs,
        vec![
            vec![text("A"), text("A"), text("customer")],
            vec![text("B"), text("A"), text("transfer")],
            vec![text("C"), Value::Null, Value::Null],
        ]
    );
}
