//! Events written by schema v1 keep decoding: every frozen v1 event (the golden outputs as they
//! were when v1 was released, `v1-frozen/events.jsonl`) deserializes into today's types,
//! serializes back to the same JSON, and validates against today's schema.
//! Never edit the frozen file to make this pass; a failure means a breaking change.
//!
//! "The same JSON" allows one difference: a time is the same instant, spelled canonically
//! (`callhook_schemas::time`, nine fractional digits, since v1.1) where v1 wrote the shortest
//! RFC 3339 form. Every RFC 3339 reader reads both alike.

use callhook_schemas::{CloudEvent, JSON_SCHEMA_V1};
use serde_json::Value;

#[test]
fn test_frozen_v1_events_still_decode_and_validate() {
    let text = include_str!("../v1-frozen/events.jsonl");
    let schema: Value = serde_json::from_str(JSON_SCHEMA_V1).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let mut count = 0;
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let original: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", index + 1));
        let event: CloudEvent = serde_json::from_value(original.clone())
            .unwrap_or_else(|e| panic!("line {}: {e}", index + 1));
        let reserialized = serde_json::to_value(&event).unwrap();
        assert!(
            same_up_to_time_spelling(&reserialized, &original),
            "line {} does not round-trip:\n{reserialized}\n{original}",
            index + 1
        );
        assert!(
            validator.is_valid(&original),
            "line {} no longer validates",
            index + 1
        );
        count += 1;
    }
    assert!(
        count > 100,
        "the frozen set should hold every v1 golden event, found {count}"
    );
}

/// Equal JSON, where two strings that are RFC 3339 times of the same instant count as equal.
fn same_up_to_time_spelling(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, value)| {
                    right
                        .get(key)
                        .is_some_and(|other| same_up_to_time_spelling(value, other))
                })
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| same_up_to_time_spelling(left, right))
        }
        (Value::String(left), Value::String(right)) if left != right => {
            let instant = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
            matches!((instant(left), instant(right)), (Some(a), Some(b)) if a == b)
        }
        _ => left == right,
    }
}
