//! 7moor (七陌): the v7 open-API pushes and the legacy v2 call events, on one source.
//!
//! A customer moving from v2 to v7 (or running both) points both at one URL, so the dialect is
//! told apart by the payload's shape, not by configuration:
//!
//! - **v7** ([`v7`], [`v7_cdr`]): a JSON object with `pushType`, or `eventUniqueId`, or a
//!   `content` object beside `uniqueId` (the link push), or `callEvent` with
//!   `callUniqueId`/`superUniqueId` (the incoming ring/hangup pushes that carry no `pushType`).
//! - **v2** ([`v2`]): PascalCase `CallState` or `CallSheetID`, usually a GET query string.
//! - **privacy-number CDR** ([`privacy`]): snake_case `called_show` or `recorder_id`, which
//!   7moor sends to the same URL as the v2 events.
//!
//! Anything else is `UnrecognizedShape`. The field-by-field mapping, the enum tables and every
//! judgement call are in `normalizer/docs/7moor.md`.

mod common;
mod enums;
mod journey;
mod privacy;
mod v2;
mod v7;
mod v7_cdr;

use serde_json::{Map, Value};

use crate::build::Draft;
use crate::error::{MapError, Result};
use crate::payload::Payload;
use crate::push::{RawPush, SourceContext};

/// The payload shapes 7moor sends to one URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    V7,
    V2,
    PrivacyCdr,
}

/// Maps one 7moor push: v7, v2 or privacy-number CDR, told apart by shape.
pub fn map(
    push: &RawPush<'_>,
    payload: Payload,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let fields = payload.fields;
    match detect(&fields) {
        Some(Shape::V7) => v7::map(push, fields, ctx),
        Some(Shape::V2) => v2::map(fields, ctx),
        Some(Shape::PrivacyCdr) => privacy::map(push, fields, ctx),
        None => Err(MapError::UnrecognizedShape(
            "not a 7moor push: no `pushType`, `eventUniqueId`, `callEvent`, `content`+`uniqueId` \
             (v7), `CallState`/`CallSheetID` (v2) or `called_show`/`recorder_id` (privacy CDR)"
                .to_owned(),
        )),
    }
}

fn detect(fields: &Map<String, Value>) -> Option<Shape> {
    let present = |key: &str| match fields.get(key) {
        Some(Value::String(text)) => !text.trim().is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    let link_push = present("uniqueId") && present("content");
    let call_push = present("callEvent") && (present("callUniqueId") || present("superUniqueId"));
    if present("pushType") || present("eventUniqueId") || link_push || call_push {
        return Some(Shape::V7);
    }
    if fields.contains_key("CallState") || fields.contains_key("CallSheetID") {
        return Some(Shape::V2);
    }
    if present("called_show") || present("recorder_id") {
        return Some(Shape::PrivacyCdr);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::BodyFormat;
    use crate::push::Dialect;
    use proptest::prelude::*;
    use serde_json::json;

    fn run(fields: Map<String, Value>) -> Result<(String, Vec<Draft>)> {
        let push = RawPush {
            method: "POST",
            content_type: Some("application/json"),
            query: None,
            headers: &[],
            body: b"",
            received_at: chrono::DateTime::UNIX_EPOCH,
        };
        let payload = Payload {
            fields,
            body_format: BodyFormat::Json,
            from_query: false,
        };
        map(
            &push,
            payload,
            &SourceContext::new("7moor", Dialect::SevenMoor),
        )
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn test_detect_shapes() {
        let cases = [
            (json!({"pushType": "cdr"}), Some(Shape::V7)),
            (json!({"eventUniqueId": "e"}), Some(Shape::V7)),
            (json!({"content": {}, "uniqueId": "u"}), Some(Shape::V7)),
            (
                json!({"callEvent": "ring", "superUniqueId": "1"}),
                Some(Shape::V7),
            ),
            (json!({"CallState": "Ring"}), Some(Shape::V2)),
            (json!({"CallSheetID": "x"}), Some(Shape::V2)),
            (json!({"called_show": "1"}), Some(Shape::PrivacyCdr)),
            (json!({"recorder_id": "1"}), Some(Shape::PrivacyCdr)),
            (json!({"callEvent": "ring"}), None),
            (json!({"event": "hangup"}), None),
        ];
        for (fields, expected) in cases {
            assert_eq!(detect(&object(fields.clone())), expected, "{fields}");
        }
    }

    #[test]
    fn test_unknown_shapes_and_events_are_typed_errors() {
        let reason = |value: Value| run(object(value)).map(|_| ()).unwrap_err().reason();
        assert_eq!(reason(json!({"foo": "bar"})), "unrecognized_shape");
        assert_eq!(reason(json!({"pushType": "satisfaction"})), "unknown_event");
        assert_eq!(
            reason(json!({"CallState": "Transfer", "CallSheetID": "x"})),
            "unknown_event"
        );
        assert_eq!(reason(json!({"CallState": "Ring"})), "missing_field");
        assert_eq!(reason(json!({"CallSheetID": "x"})), "missing_field");
    }

    #[test]
    fn test_call_status_with_call_yields_call_then_agent_event() {
        let (_, drafts) = run(object(json!({
            "pushType": "callStatus", "callUniqueId": "1", "callEvent": "link",
            "statusNumber": "4", "statusName": "通话中", "eventUniqueId": "e"
        })))
        .unwrap();
        let types: Vec<_> = drafts.iter().map(|d| d.event_type.as_str()).collect();
        assert_eq!(types, ["call.answered", "agent.status_changed"]);
    }

    const V7_PUSH_TYPES: [&str; 7] = [
        "dialoutRing",
        "dialoutHangup",
        "callStatus",
        "cdr",
        "mediaFailreason",
        "login",
        "logout",
    ];
    const V2_CALL_STATES: [&str; 5] = ["Ring", "Ringing", "Link", "Hangup", "Unlink"];
    const KNOWN_KEYS: [&str; 24] = [
        "callUniqueId",
        "superUniqueId",
        "callEvent",
        "callType",
        "statusTime",
        "statusNumber",
        "statusName",
        "customerNumber",
        "extras",
        "status",
        "failureReason",
        "sipCode",
        "bridgeDuration",
        "endTime",
        "recordFileUrl",
        "content",
        "uniqueId",
        "CallSheetID",
        "CallType",
        "Begin",
        "End",
        "FileServer",
        "RecordFile",
        "State",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,24}".prop_map(Value::String),
            "[0-9]{1,14}".prop_map(Value::String),
            Just(json!("2021-05-08 14:39:37")),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn payload_fields() -> impl Strategy<Value = Map<String, Value>> {
        let key = prop_oneof![
            prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned),
            "[a-zA-Z_]{1,10}",
        ];
        prop::collection::vec((key, json_value()), 0..12)
            .prop_map(|pairs| pairs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn test_v7_never_panics(mut fields in payload_fields(), push_type in prop::sample::select(V7_PUSH_TYPES.to_vec())) {
            fields.insert("pushType".to_owned(), json!(push_type));
            let _ = run(fields);
        }

        #[test]
        fn test_v7_without_push_type_never_panics(mut fields in payload_fields(), event in "calling|ring|link|hangup|x") {
            fields.insert("callEvent".to_owned(), json!(event));
            fields.insert("superUniqueId".to_owned(), json!("1"));
            let _ = run(fields);
        }

        #[test]
        fn test_v2_never_panics(mut fields in payload_fields(), state in prop::sample::select(V2_CALL_STATES.to_vec())) {
            fields.insert("CallState".to_owned(), json!(state));
            let _ = run(fields);
        }

        #[test]
        fn test_privacy_never_panics(mut fields in payload_fields()) {
            fields.insert("called_show".to_owned(), json!("1"));
            let _ = run(fields);
        }
    }
}
