//! Events written by schema v1 keep decoding: every frozen v1 event (the golden outputs as they
//! were when v1 was released, `v1-frozen/events.jsonl`) deserializes into today's types,
//! serializes back to the same JSON, and validates against today's schema.
//! Never edit the frozen file to make this pass; a failure means a breaking change.

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
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            original,
            "line {} does not round-trip",
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
