//! Model v1.1 is additive: everything v1.0 promised still holds.
//!
//! `v1-frozen/call-event.v1.0.schema.json` is the JSON Schema as it was before v1.1 (never edit
//! it). The checks:
//! - **Shape.** Walking both schemas side by side, every property, `$defs` entry and keyword of
//!   the v1.0 schema is still there with the same value; `required` lists are unchanged; an
//!   `enum` may only grow; the current schema adds no keyword to an existing node but
//!   `description`, and new properties only where v1.0 had `properties`. So making a field
//!   required, renaming or retyping one, or narrowing a value fails here (the last test
//!   proves the checker catches each of those).
//! - **Instances.** A v1.1 event with every new field set validates against today's schema;
//!   with the properties v1.0 did not have removed, it validates against the v1.0 schema, so
//!   the rest of the event is still v1.0. The frozen v1 events themselves are decoded and
//!   validated by `frozen.rs`.

use callhook_schemas::*;
use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};

const FROZEN_V10: &str = include_str!("../v1-frozen/call-event.v1.0.schema.json");

/// Keywords that may appear on an existing node only in the newer schema.
const ANNOTATIONS: [&str; 1] = ["description"];

fn frozen() -> Value {
    serde_json::from_str(FROZEN_V10).expect("frozen schema is JSON")
}

fn current() -> Value {
    serde_json::from_str(JSON_SCHEMA_V1).expect("schema is JSON")
}

/// Returns every way `newer` is not an additive extension of `older`, by JSON pointer.
fn breaking_changes(older: &Value, newer: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    compare(older, newer, "", &mut problems);
    problems
}

fn compare(older: &Value, newer: &Value, path: &str, problems: &mut Vec<String>) {
    let (Some(older), Some(newer)) = (older.as_object(), newer.as_object()) else {
        if older != newer {
            problems.push(format!("{path}: changed from {older} to {newer}"));
        }
        return;
    };
    for (keyword, old_value) in older {
        let here = format!("{path}/{keyword}");
        let Some(new_value) = newer.get(keyword) else {
            problems.push(format!("{here}: removed"));
            continue;
        };
        match keyword.as_str() {
            "properties" | "$defs" => compare_members(old_value, new_value, &here, problems),
            "items" => compare(old_value, new_value, &here, problems),
            "required" if sorted_strings(old_value) != sorted_strings(new_value) => {
                problems.push(format!("{here}: {old_value} became {new_value}"));
            }
            "required" => {}
            "enum" => {
                let grown = sorted_strings(new_value);
                for value in sorted_strings(old_value) {
                    if !grown.contains(&value) {
                        problems.push(format!("{here}: value `{value}` removed"));
                    }
                }
            }
            _ if old_value != new_value => {
                problems.push(format!("{here}: {old_value} became {new_value}"));
            }
            _ => {}
        }
    }
    for keyword in newer.keys() {
        if !older.contains_key(keyword) && !ANNOTATIONS.contains(&keyword.as_str()) {
            problems.push(format!(
                "{path}/{keyword}: new constraint on an existing node"
            ));
        }
    }
}

/// Members of `properties` / `$defs`: every old one kept and unchanged; new ones are allowed
/// (whether they are required is checked by the parent's `required`).
fn compare_members(older: &Value, newer: &Value, path: &str, problems: &mut Vec<String>) {
    let (Some(older), Some(newer)) = (older.as_object(), newer.as_object()) else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    for (name, old_member) in older {
        match newer.get(name) {
            Some(new_member) => {
                compare(old_member, new_member, &format!("{path}/{name}"), problems)
            }
            None => problems.push(format!("{path}/{name}: removed or renamed")),
        }
    }
}

fn sorted_strings(value: &Value) -> Vec<String> {
    let mut strings: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item.to_string())
        .collect();
    strings.sort();
    strings
}

/// A v1.1 event with every v1.1 field set (and a few v1.0 ones).
fn v11_event() -> CloudEvent {
    let time = Utc.with_ymd_and_hms(2021, 5, 8, 6, 39, 47).unwrap();
    let mut data = CallEventData::new("7moor", "7moor.v2", "Hangup", "7moor");
    data.call_id = Some("sheet-b".into());
    data.parent_call_id = Some("sheet-a".into());
    data.direction = Direction::Inbound;
    data.conversation_id = Some("channel-1".into());
    data.leg = Some(Leg::Transfer);
    data.queue_joined_at = Some(time);
    data.queue_left_at = Some(time);
    data.queue_seconds = Some(0);
    data.abandon_point = Some(AbandonPoint::NotAbandoned);
    data.disconnect_reason = Some(DisconnectReason {
        value: DisconnectReasonValue::CustomerHangup,
        raw: Some("CUSTOMER".into()),
    });
    data.ivr_path = vec![
        IvrStep {
            node: Some("10004".into()),
            name: None,
            keys: Some("0".into()),
        },
        IvrStep {
            node: Some("10005".into()),
            name: Some("售后".into()),
            keys: None,
        },
    ];
    // Built from JSON rather than a struct literal, so that envelope fields added later
    // (optional by the promise) do not have to be listed here.
    serde_json::from_value(json!({
        "id": "0123456789abcdef0123456789abcdef",
        "specversion": "1.0",
        "source": "7moor/2100147",
        "subject": "sheet-b",
        "type": "call.cdr",
        "time": "2021-05-08T06:39:47Z",
        "timesource": "vendor",
        "datacontenttype": "application/json",
        "dataschema": DATA_SCHEMA_URI,
        "mappingversion": 4,
        "data": serde_json::to_value(data).unwrap(),
    }))
    .unwrap()
}

#[test]
fn test_v11_schema_only_adds_optional_properties() {
    let problems = breaking_changes(&frozen(), &current());
    assert!(
        problems.is_empty(),
        "v1.1 is not additive:\n{}",
        problems.join("\n")
    );
}

#[test]
fn test_v11_event_validates_and_is_v10_without_its_new_fields() {
    let event = serde_json::to_value(v11_event()).unwrap();
    let now = jsonschema::draft202012::new(&current()).unwrap();
    let errors: Vec<String> = now.iter_errors(&event).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let back: CloudEvent = serde_json::from_value(event.clone()).unwrap();
    assert_eq!(back, v11_event());

    let old = jsonschema::draft202012::new(&frozen()).unwrap();
    assert!(!old.is_valid(&event), "v1.0 has no v1.1 fields");
    let old_properties = frozen()["$defs"]["call_event_data"]["properties"].clone();
    let mut stripped = event;
    let data: &mut Map<String, Value> = stripped["data"].as_object_mut().unwrap();
    let new_fields: Vec<String> = data
        .keys()
        .filter(|key| old_properties.get(key.as_str()).is_none())
        .cloned()
        .collect();
    assert_eq!(new_fields.len(), 7, "{new_fields:?}");
    for key in new_fields {
        data.remove(&key);
    }
    let errors: Vec<String> = old.iter_errors(&stripped).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn test_the_checker_catches_breaking_changes() {
    let base = current();
    let data = "/$defs/call_event_data";
    let mutate = |edit: &dyn Fn(&mut Value)| {
        let mut schema = base.clone();
        edit(&mut schema);
        breaking_changes(&frozen(), &schema)
    };
    let required = mutate(&|s| {
        s.pointer_mut(&format!("{data}/required"))
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(json!("call_id"));
    });
    assert!(!required.is_empty(), "a new required field went unnoticed");
    let renamed = mutate(&|s| {
        let properties = s
            .pointer_mut(&format!("{data}/properties"))
            .unwrap()
            .as_object_mut()
            .unwrap();
        let hangup = properties.remove("hangup_cause").unwrap();
        properties.insert("hangup_reason".into(), hangup);
    });
    assert!(
        renamed.iter().any(|p| p.contains("hangup_cause")),
        "{renamed:?}"
    );
    let narrowed = mutate(&|s| {
        s.pointer_mut(&format!("{data}/properties/direction/enum"))
            .unwrap()
            .as_array_mut()
            .unwrap()
            .pop();
    });
    assert!(!narrowed.is_empty(), "a narrowed enum went unnoticed");
    let retyped = mutate(&|s| {
        *s.pointer_mut(&format!("{data}/properties/talk_seconds/type"))
            .unwrap() = json!("string");
    });
    assert!(!retyped.is_empty(), "a retyped field went unnoticed");
    let tightened = mutate(&|s| {
        s.pointer_mut(&format!("{data}/properties/vendor_event"))
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert("maxLength".into(), json!(8));
    });
    assert!(!tightened.is_empty(), "a new constraint went unnoticed");
    let new_optional = mutate(&|s| {
        s.pointer_mut(&format!("{data}/properties"))
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert("later".into(), json!({"type": "string"}));
    });
    assert!(new_optional.is_empty(), "{new_optional:?}");
}
