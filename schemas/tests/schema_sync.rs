//! Keeps the Rust types and the JSON Schema in step: every closed enum in Rust has exactly the
//! schema's values, and a fully populated event serialized by the Rust types validates.

use callhook_schemas::*;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

fn schema() -> Value {
    serde_json::from_str(JSON_SCHEMA_V1).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema()).expect("schema compiles")
}

fn schema_enum(pointer: &str) -> Vec<String> {
    let schema = schema();
    let node = schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer}"));
    node["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{pointer} has no enum"))
        .iter()
        .map(|v| v.as_str().expect("string enum").to_owned())
        .collect()
}

fn rust_names<T: serde::Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn full_event() -> CloudEvent {
    let time = Utc.with_ymd_and_hms(2021, 5, 8, 6, 39, 47).unwrap();
    let mut data = CallEventData::new("7moor", "7moor.v7", "cdr", "7moor");
    data.account = Some("2100147".into());
    data.call_id = Some("403344537650466816".into());
    data.parent_call_id = Some("403344537650466815".into());
    data.direction = Direction::Outbound;
    let number = PhoneNumber {
        raw: "17319132391".into(),
        e164: Some("+8617319132391".into()),
        kind: NumberKind::Mobile,
    };
    data.caller = Some(number.clone());
    data.callee = Some(number.clone());
    data.display_number = Some(number.clone());
    data.trunk_number = Some(number);
    data.agent = Some(Agent {
        number: Some("20001".into()),
        name: Some("sc的坐席".into()),
        extension: Some("8001".into()),
    });
    data.agent_status = Some(AgentStatus {
        value: AgentState::WrapUp,
        raw_code: Some("5".into()),
        raw_label: Some("整理".into()),
    });
    data.queue = Some(Queue {
        id: Some("630".into()),
        name: Some("售后".into()),
    });
    data.disposition = Some(Disposition {
        value: DispositionValue::Answered,
        raw: Some("ANSWER".into()),
    });
    data.hangup_side = Some(HangupSide {
        value: HangupSideValue::Agent,
        raw: Some("AGENT".into()),
    });
    data.hangup_cause = Some("normal".into());
    data.started_at = Some(time);
    data.ringing_at = Some(time);
    data.answered_at = Some(time);
    data.ended_at = Some(time);
    data.ring_seconds = Some(5);
    data.talk_seconds = Some(5);
    data.total_seconds = Some(15);
    data.queue_seconds = Some(0);
    data.conversation_id = Some("403344537650466815".into());
    data.leg = Some(Leg::Transfer);
    data.queue_joined_at = Some(time);
    data.queue_left_at = Some(time);
    data.abandon_point = Some(AbandonPoint::AgentRinging);
    data.disconnect_reason = Some(DisconnectReason {
        value: DisconnectReasonValue::AgentHangup,
        raw: Some("AGENT".into()),
    });
    data.ivr_path = vec![IvrStep {
        node: Some("610".into()),
        name: Some("workingtime".into()),
        keys: Some("0".into()),
    }];
    data.recording_urls = vec!["https://example.invalid/a.mp3".into()];
    data.correlation
        .insert("extras".into(), json!({"orderId": "42"}));
    data.vendor_fields.insert("billCalls".into(), json!(["x"]));
    data.stale_reason = Some("no hangup".into());
    CloudEvent {
        id: "0123456789abcdef0123456789abcdef".into(),
        specversion: "1.0".into(),
        source: "7moor/2100147".into(),
        subject: "403344537650466816".into(),
        event_type: EventType::CallCdr,
        time,
        timesource: TimeSource::Vendor,
        datacontenttype: "application/json".into(),
        dataschema: DATA_SCHEMA_URI.into(),
        mappingversion: Some(2),
        sequence: Some(4),
        data,
    }
}

#[test]
fn test_enums_match_the_schema() {
    let data = "/$defs/call_event_data/properties";
    assert_eq!(rust_names(&EventType::ALL), schema_enum("/properties/type"));
    assert_eq!(
        rust_names(&[
            Direction::Inbound,
            Direction::Outbound,
            Direction::Internal,
            Direction::Unknown
        ]),
        schema_enum(&format!("{data}/direction"))
    );
    use AgentState::*;
    assert_eq!(
        rust_names(&[Idle, Busy, Dialing, Ringing, Talking, WrapUp, Hold, Mute, Offline, Unknown]),
        schema_enum(&format!("{data}/agent_status/properties/value"))
    );
    use DispositionValue as D;
    assert_eq!(
        rust_names(&[
            D::Answered,
            D::NoAnswer,
            D::Busy,
            D::Abandoned,
            D::Failed,
            D::Rejected,
            D::Voicemail,
            D::Blocked,
            D::Unknown
        ]),
        schema_enum(&format!("{data}/disposition/properties/value"))
    );
    use HangupSideValue as H;
    assert_eq!(
        rust_names(&[
            H::Agent,
            H::Customer,
            H::Caller,
            H::Callee,
            H::System,
            H::Unknown
        ]),
        schema_enum(&format!("{data}/hangup_side/properties/value"))
    );
    use NumberKind as N;
    assert_eq!(
        rust_names(&[
            N::Mobile,
            N::Landline,
            N::Service,
            N::International,
            N::Extension,
            N::Unknown
        ]),
        schema_enum("/$defs/phone_number/properties/kind")
    );
    assert_eq!(rust_names(&Leg::ALL), schema_enum(&format!("{data}/leg")));
    assert_eq!(
        rust_names(&AbandonPoint::ALL),
        schema_enum(&format!("{data}/abandon_point"))
    );
    assert_eq!(
        rust_names(&DisconnectReasonValue::ALL),
        schema_enum(&format!("{data}/disconnect_reason/properties/value"))
    );
}

#[test]
fn test_as_str_matches_serde() {
    for event_type in EventType::ALL {
        assert_eq!(
            serde_json::to_value(event_type).unwrap(),
            json!(event_type.as_str())
        );
    }
    for leg in Leg::ALL {
        assert_eq!(serde_json::to_value(leg).unwrap(), json!(leg.as_str()));
    }
    for point in AbandonPoint::ALL {
        assert_eq!(serde_json::to_value(point).unwrap(), json!(point.as_str()));
    }
    for reason in DisconnectReasonValue::ALL {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
    }
}

#[test]
fn test_full_event_validates_and_round_trips() {
    let event = full_event();
    let value = serde_json::to_value(&event).unwrap();
    let errors: Vec<String> = validator()
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let back: CloudEvent = serde_json::from_value(value).unwrap();
    assert_eq!(back, event);
}

#[test]
fn test_every_data_field_is_in_the_schema() {
    let value = serde_json::to_value(full_event()).unwrap();
    let schema = schema();
    let properties = schema
        .pointer("/$defs/call_event_data/properties")
        .unwrap()
        .as_object()
        .unwrap();
    for key in value["data"].as_object().unwrap().keys() {
        assert!(
            properties.contains_key(key),
            "data.{key} is not in the schema"
        );
    }
    assert_eq!(
        value["data"].as_object().unwrap().len(),
        properties.len(),
        "schema has properties the type lacks"
    );
}

#[test]
fn test_schema_rejects_what_the_model_forbids() {
    let validator = validator();
    let mut bad_type = serde_json::to_value(full_event()).unwrap();
    bad_type["type"] = json!("call.exploded");
    assert!(!validator.is_valid(&bad_type));
    let mut empty_string = serde_json::to_value(full_event()).unwrap();
    empty_string["data"]["call_id"] = json!("");
    assert!(!validator.is_valid(&empty_string));
    let mut local_time = serde_json::to_value(full_event()).unwrap();
    local_time["time"] = json!("2021-05-08 14:39:47");
    assert!(!validator.is_valid(&local_time));
}
