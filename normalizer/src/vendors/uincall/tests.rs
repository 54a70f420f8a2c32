//! Unit tests and property tests of the UinCall mapper (the full mappings are golden tests).

use std::sync::OnceLock;

use callhook_schemas::{Direction, DispositionValue, EventType};
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::codes::{Command, PushEvent};
use super::*;
use crate::push::Dialect;
use crate::{map_push, Mapped};

fn received_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-20T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn run_at(body: &Value, at: DateTime<Utc>) -> Result<Mapped> {
    let bytes = serde_json::to_vec(body).unwrap();
    let push = RawPush {
        method: "POST",
        content_type: Some("application/json"),
        query: None,
        headers: &[],
        body: &bytes,
        received_at: at,
    };
    map_push(&push, &SourceContext::new("uincall", Dialect::UinCall))
}

fn run(body: Value) -> Result<Mapped> {
    run_at(&body, received_at())
}

fn outbound(command: &str) -> Value {
    json!({
        "tenant_id": "t1", "session_id": "s1", "call_id": "c1", "type": "event", "dir": "DN",
        "agent_num": "8014", "command": command, "agent_type": 0, "calldirection": "call out",
        "dnis": "15991752045", "ani": "02863208372", "call_result": -1
    })
}

#[test]
fn test_unwrap_accepts_string_object_and_double_encoding() {
    let inner = json!({"account": "a", "event": "alert"});
    let once = Value::String(inner.to_string());
    let twice = Value::String(once.to_string());
    for wrapped in [inner.clone(), once, twice] {
        let Value::Object(outer) = json!({"eventData": wrapped, "sign": "x"}) else {
            unreachable!()
        };
        let (merged, unwrapped) = unwrap_event_data(outer).unwrap();
        assert!(unwrapped);
        assert_eq!(
            Value::Object(merged),
            json!({"account": "a", "event": "alert", "sign": "x"})
        );
    }
}

#[test]
fn test_unwrap_keeps_clashing_outer_fields() {
    let Value::Object(outer) =
        json!({"eventData": "{\"account\":\"a\",\"event\":\"alert\"}", "account": "b"})
    else {
        unreachable!()
    };
    let (merged, _) = unwrap_event_data(outer).unwrap();
    assert_eq!(merged["account"], json!("a"));
    assert_eq!(merged["envelope.account"], json!("b"));
}

#[test]
fn test_unwrap_errors_are_typed() {
    let cases = [
        (json!({"eventData": "[1,2]"}), "unrecognized_shape"),
        (json!({"eventData": 5}), "unrecognized_shape"),
        (json!({"eventData": "{not json"}), "unparseable_body"),
        (
            json!({"eventData": "\"\\\"\\\\\\\"x\\\\\\\"\\\"\""}),
            "unrecognized_shape",
        ),
        (json!({"eventData": ""}), "unrecognized_shape"),
        (
            json!({"eventData": "{\"account\":\"a\"}"}),
            "unrecognized_shape",
        ),
    ];
    for (body, reason) in cases {
        let error = run(body.clone()).unwrap_err();
        assert_eq!(error.reason(), reason, "{body}: {error}");
    }
}

#[test]
fn test_call_id_prefers_call_id_and_keeps_session_id() {
    let mapped = run(outbound("call_talking")).unwrap();
    let data = &mapped.events[0].data;
    assert_eq!(data.call_id.as_deref(), Some("c1"));
    assert_eq!(data.correlation["session_id"], json!("s1"));
    let mut only_session = outbound("call_talking");
    only_session.as_object_mut().unwrap().remove("call_id");
    let mapped = run(only_session).unwrap();
    assert_eq!(mapped.events[0].data.call_id.as_deref(), Some("s1"));
}

#[test]
fn test_hangup_dispositions() {
    let table = [
        (json!(-1), None),
        (json!("-1"), None),
        (json!(0), Some(DispositionValue::Unknown)),
        (json!(1), Some(DispositionValue::Failed)),
        (json!("2"), Some(DispositionValue::Failed)),
        (json!(7), Some(DispositionValue::Unknown)),
    ];
    for (result, expected) in table {
        let mut body = outbound("call_hangup");
        body["call_result"] = result.clone();
        let mapped = run(body).unwrap();
        let data = &mapped.events[0].data;
        assert_eq!(
            data.disposition.as_ref().map(|d| d.value),
            expected,
            "{result}"
        );
        // Exactly one of disposition.raw and vendor_fields.call_result carries the value.
        assert_eq!(
            data.disposition.is_some(),
            !data.vendor_fields.contains_key("call_result"),
            "{result}"
        );
    }
}

#[test]
fn test_success_before_hangup_is_no_disposition() {
    let mut body = outbound("call_process");
    body["call_result"] = json!(0);
    let mapped = run(body).unwrap();
    assert_eq!(mapped.events[0].data.disposition, None);
    assert_eq!(mapped.events[0].data.vendor_fields["call_result"], json!(0));
}

#[test]
fn test_direction_decides_display_and_trunk_number() {
    let mapped = run(outbound("call_talking")).unwrap();
    let data = &mapped.events[0].data;
    assert_eq!(data.direction, Direction::Outbound);
    assert_eq!(data.display_number, data.caller);
    assert_eq!(data.trunk_number, None);
    let mut inbound = outbound("call_talking");
    inbound["calldirection"] = json!("call in");
    let mapped = run(inbound).unwrap();
    let data = &mapped.events[0].data;
    assert_eq!(data.direction, Direction::Inbound);
    assert_eq!(data.trunk_number, data.callee);
    assert_eq!(data.display_number, None);
}

#[test]
fn test_agent_events_are_bucketed_and_call_events_are_not() {
    let status = json!({"tenant_id": "t1", "dir": "DN", "agent_num": "8014",
                        "command": "agentstatus", "agent_type": 0, "call_result": -1});
    let later = received_at() + TimeDelta::seconds(3600);
    let first = run_at(&status, received_at()).unwrap();
    assert_eq!(first.events[0].event_type, EventType::AgentStatusChanged);
    assert_eq!(first.events[0].subject, "agent/8014");
    let retry = run_at(&status, received_at() + TimeDelta::seconds(5)).unwrap();
    assert_eq!(first.dedupe_key, retry.dedupe_key);
    assert_ne!(first.dedupe_key, run_at(&status, later).unwrap().dedupe_key);

    let call = outbound("call_talking");
    assert_eq!(
        run_at(&call, received_at()).unwrap().dedupe_key,
        run_at(&call, later).unwrap().dedupe_key
    );
}

#[test]
fn test_required_fields() {
    let no_agent = json!({"tenant_id": "t1", "command": "agentstatus", "dir": "DN"});
    assert_eq!(
        run(no_agent).unwrap_err(),
        MapError::MissingField("agent_num")
    );
    let nothing = json!({"tenant_id": "t1", "command": "call_hangup", "dir": "DN"});
    assert_eq!(run(nothing).unwrap_err(), MapError::MissingField("call_id"));
    let unknown = json!({"command": "call_transfer", "dir": "DN", "call_id": "c1"});
    assert_eq!(
        run(unknown).unwrap_err(),
        MapError::UnknownEvent("call_transfer/DN".to_owned())
    );
}

#[test]
fn test_bounded_shortens_long_text() {
    assert_eq!(bounded("abc"), "abc");
    let long = "长".repeat(100);
    let short = bounded(&long);
    assert_eq!(short.chars().count(), MAX_QUOTED_CHARS + 1);
    assert!(short.ends_with('…'));
}

const KNOWN_KEYS: [&str; 24] = [
    "tenant_id",
    "session_id",
    "call_id",
    "queue_id",
    "remark",
    "type",
    "dir",
    "agent_num",
    "agent_type",
    "calldirection",
    "dnis",
    "ani",
    "call_result",
    "account",
    "callId",
    "caller",
    "called",
    "agent",
    "extension",
    "time",
    "startTime",
    "answerTime",
    "endTime",
    "transferresult",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        "[0-9 +-]{0,16}".prop_map(Value::String),
        Just(Value::String("20240620120000".to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn arb_fields() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let key = prop_oneof![
        prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned),
        "[a-zA-Z_.]{1,10}",
    ];
    prop::collection::btree_map(key, arb_json(), 0..12).prop_map(|map| map.into_iter().collect())
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(callhook_schemas::JSON_SCHEMA_V1).unwrap();
        jsonschema::draft202012::new(&schema).unwrap()
    })
}

/// Whatever is mapped must be schema-valid and keyed by the dialect.
fn assert_valid(result: Result<Mapped>) -> std::result::Result<(), TestCaseError> {
    if let Ok(mapped) = result {
        prop_assert!(mapped.dedupe_key.starts_with("uincall:"));
        for event in &mapped.events {
            let value = serde_json::to_value(event).unwrap();
            let errors: Vec<String> = validator()
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            prop_assert!(errors.is_empty(), "{errors:?} in {value}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn test_any_call_event_push_maps_without_panic(
        mut fields in arb_fields(),
        command in prop::sample::select(Command::ALL.to_vec()),
        dir in prop::sample::select(vec!["UP", "DN", "", "up"]),
    ) {
        fields.insert("command".to_owned(), json!(command.as_str()));
        fields.insert("dir".to_owned(), json!(dir));
        assert_valid(run(Value::Object(fields)))?;
    }

    #[test]
    fn test_any_push_call_event_maps_without_panic(
        mut inner in arb_fields(),
        event in prop::sample::select(PushEvent::ALL.to_vec()),
        as_string in any::<bool>(),
    ) {
        inner.insert("event".to_owned(), json!(event.as_str()));
        let inner = Value::Object(inner);
        let event_data = if as_string { Value::String(inner.to_string()) } else { inner };
        assert_valid(run(json!({"eventData": event_data})))?;
    }

    #[test]
    fn test_any_object_maps_without_panic(fields in arb_fields()) {
        assert_valid(run(Value::Object(fields)))?;
    }
}
