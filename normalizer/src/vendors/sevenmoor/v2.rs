//! 7moor v2 call-event pushes: PascalCase fields in a GET query string (or, the same keys, a
//! form or JSON POST body), told apart by `CallState`.
//!
//! | CallState | events |
//! |---|---|
//! | `Ring` (entered the call center) | `call.initiated` |
//! | `Ringing` | `call.ringing` |
//! | `Link` | `call.answered` |
//! | `Hangup`, `Unlink` (documented as the same) | `call.ended`, then `call.cdr` with the same data: v2 has no separate record push and its Hangup carries the whole record |
//!
//! Dedupe key: `7moor.v2:<CallSheetID>:<CallState>:<payload hash>`. CallSheetID is per call
//! record and CallState per stage; the hash separates two pushes of one stage (the agent leg
//! ringing twice) while a retry, same fields in any order, hashes the same.

use callhook_schemas::{CallEventData, Direction, EventType};
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value};

use super::common::{
    agent, disposition, new_data, push_unique, queue, seconds_between, take_phone_first,
    take_time_alias, DIALECT_V2,
};
use super::enums::{self, V2CallState};
use super::journey;
use crate::build::{payload_hash, Draft};
use crate::error::{MapError, Result};
use crate::fields::Fields;
use crate::push::SourceContext;

/// The correlation keys integrators use, in the order they are documented.
const CORRELATION_FIELDS: [&str; 5] = [
    "ActionID",
    "WebcallActionID",
    "DialoutStrVar",
    "CdrVar",
    "userID",
];

/// Maps one v2 call-event push (already recognized as v2 by shape).
pub fn map(payload: Map<String, Value>, ctx: &SourceContext) -> Result<(String, Vec<Draft>)> {
    let hash = payload_hash(&payload);
    let mut fields = Fields::new(payload, ctx.utc_offset);
    let raw_state = fields
        .take_str("CallState")
        .ok_or(MapError::MissingField("CallState"))?;
    let state = enums::v2_call_state(&raw_state)
        .ok_or_else(|| MapError::UnknownEvent(raw_state.clone()))?;
    let call_sheet_id = fields
        .take_first_str(&["CallSheetID", "CallSheetId", "callSheetId"])
        .ok_or(MapError::MissingField("CallSheetID"))?;
    let dedupe_key = format!("{DIALECT_V2}:{call_sheet_id}:{raw_state}:{hash}");
    let mut data = new_data(DIALECT_V2, &raw_state, ctx);
    data.call_id = Some(call_sheet_id);
    take_parties(&mut fields, &mut data);
    take_times(&mut fields, &mut data, ctx.utc_offset);
    if state == V2CallState::Hangup {
        data.disposition = fields
            .take_str("State")
            .map(|raw| disposition(enums::v2_state(&raw), raw));
    }
    journey::v2_common(&mut fields, &mut data);
    if state == V2CallState::Hangup {
        journey::v2_outcome(&mut data);
    }
    take_recordings(&mut fields, &mut data);
    for key in CORRELATION_FIELDS {
        fields.take_correlation(key, &mut data.correlation);
    }
    data.vendor_fields = fields.into_vendor_fields();
    Ok((dedupe_key, drafts(state, data)))
}

fn drafts(state: V2CallState, data: CallEventData) -> Vec<Draft> {
    let (event_type, time) = match state {
        V2CallState::Ring => (EventType::CallInitiated, data.started_at),
        V2CallState::Ringing => (EventType::CallRinging, data.ringing_at),
        V2CallState::Link => (EventType::CallAnswered, data.answered_at),
        V2CallState::Hangup => (EventType::CallEnded, data.ended_at),
    };
    if state == V2CallState::Hangup {
        let record = Draft::new(EventType::CallCdr, time, data.clone());
        return vec![Draft::new(event_type, time, data), record];
    }
    vec![Draft::new(event_type, time, data)]
}

/// Account, transfer parent, direction, numbers, agent and queue.
///
/// `CallType` decides direction and stays in `vendor_fields` (`transfer` and `normal` are both
/// inbound). `RealCalled` (the real customer behind a privacy-number call) is the callee when
/// present; a different `CalledNo` then stays in `vendor_fields`. `Exten` is documented as the
/// same as `Agent`; when it differs it is kept as the extension. `CallID` is a channel id
/// shared across transfers, not a call id: it stays in `vendor_fields`.
fn take_parties(fields: &mut Fields, data: &mut CallEventData) {
    data.account = fields.take_first_str(&["AccountId", "AccountID", "accountId"]);
    data.parent_call_id = fields
        .take_first_str(&["refCallSheetId", "RefCallSheetId", "refCallSheetID"])
        .filter(|parent| data.call_id.as_ref() != Some(parent));
    data.direction = fields
        .peek_str("CallType")
        .map(|call_type| enums::direction(&call_type))
        .unwrap_or(Direction::Unknown);
    data.caller = fields.take_phone("CallNo");
    data.callee = take_phone_first(fields, &["RealCalled", "CalledNo"]);
    let number = fields.take_first_str(&["Agent", "Exten"]);
    let extension = fields.take_str("Exten");
    data.agent = agent(number, fields.take_str("AgentName"), extension);
    data.queue = queue(None, fields.take_first_str(&["Queue", "QueueName"]));
}

/// `Ring` (entered the call center), `RingingDate` (or `RingingTimestamp`), `Begin` (answer),
/// `End`; the durations are differences of these. `QueueTime` stays in `vendor_fields`: the
/// push has no "left the queue" time, so a queue wait cannot be derived without guessing.
fn take_times(fields: &mut Fields, data: &mut CallEventData, zone: FixedOffset) {
    data.started_at = fields.take_time("Ring");
    data.ringing_at = take_time_alias(fields, &["RingingDate", "RingingTimestamp"], zone);
    data.answered_at = fields.take_time("Begin");
    data.ended_at = fields.take_time("End");
    data.talk_seconds = seconds_between(data.answered_at, data.ended_at);
    data.total_seconds = seconds_between(data.started_at, data.ended_at);
    let ring_end: Option<DateTime<Utc>> = data.answered_at.or(data.ended_at);
    data.ring_seconds = seconds_between(data.ringing_at, ring_end);
}

/// Recording URL = `FileServer` + `/` + `RecordFile` (documented), with one slash whatever the
/// two ends carry; an absolute `RecordFile` is used as is, and without `FileServer` the file
/// name alone is kept. `MonitorFilename` (privacy-number and dial-out flows) is treated alike.
fn take_recordings(fields: &mut Fields, data: &mut CallEventData) {
    let server = fields.peek_str("FileServer");
    let mut used_server = false;
    for key in ["RecordFile", "MonitorFilename"] {
        let Some(file) = fields.take_str(key) else {
            continue;
        };
        let url = match &server {
            Some(server) if !is_absolute(&file) => {
                used_server = true;
                format!(
                    "{}/{}",
                    server.trim_end_matches('/'),
                    file.trim_start_matches('/')
                )
            }
            _ => file,
        };
        push_unique(&mut data.recording_urls, Some(url));
    }
    if used_server {
        fields.discard("FileServer");
    }
}

fn is_absolute(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recordings(value: Value) -> (Vec<String>, Map<String, Value>) {
        let Value::Object(map) = value else {
            unreachable!()
        };
        let mut fields = Fields::new(map, crate::push::china_offset());
        let ctx = SourceContext::new("s", crate::push::Dialect::SevenMoor);
        let mut data = new_data(DIALECT_V2, "Hangup", &ctx);
        take_recordings(&mut fields, &mut data);
        (data.recording_urls, fields.into_vendor_fields())
    }

    #[test]
    fn test_recording_url_joins_with_one_slash() {
        let expected = vec!["http://f.example/m/a.mp3".to_owned()];
        for (server, file) in [
            ("http://f.example/m", "a.mp3"),
            ("http://f.example/m/", "a.mp3"),
            ("http://f.example/m/", "/a.mp3"),
            ("http://f.example/m", "/a.mp3"),
        ] {
            let (urls, rest) = recordings(json!({"FileServer": server, "RecordFile": file}));
            assert_eq!(urls, expected, "{server} + {file}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn test_recording_without_server_or_absolute() {
        let (urls, _) = recordings(json!({"RecordFile": "monitor/a.mp3"}));
        assert_eq!(urls, ["monitor/a.mp3"]);
        let (urls, rest) =
            recordings(json!({"FileServer": "http://x", "RecordFile": "https://y/a.mp3"}));
        assert_eq!(urls, ["https://y/a.mp3"]);
        assert_eq!(rest.get("FileServer"), Some(&json!("http://x")));
        let (urls, rest) = recordings(json!({"FileServer": "http://x", "RecordFile": ""}));
        assert!(urls.is_empty());
        assert_eq!(rest.get("FileServer"), Some(&json!("http://x")));
    }
}
