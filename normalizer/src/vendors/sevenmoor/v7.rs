//! 7moor v7 pushes: JSON bodies told apart by `pushType` (or, for the incoming-call and link
//! pushes that have none, by `callEvent`).
//!
//! | push | events |
//! |---|---|
//! | `dialoutRing` | `call.ringing` (+ `agent.status_changed` if it carries a status) |
//! | `dialoutHangup` | `call.ended` (+ agent status, idem) |
//! | `callStatus` | the call event of its `callEvent` when it names a call, then `agent.status_changed` when it carries `statusNumber`/`statusName` |
//! | no `pushType`, `callEvent` | the call event of its `callEvent` (the incoming ring/hangup pushes; the link push nested under `content`) |
//! | `cdr` | `call.cdr` ([`super::v7_cdr`]) |
//! | `mediaFailreason` | `call.media_failure` |
//! | `login` / `logout` | `agent.logged_in` / `agent.logged_out` |
//!
//! Dedupe key of a `cdr` push with a call id (`callUniqueId`, else `_id`): `7moor.v7:cdr:<call
//! id>`, one CDR per call, so that the reconciliation backfill of a CDR and its webhook are
//! duplicates of each other whichever comes first. Other pushes:
//! `7moor.v7:eid:<eventUniqueId>:<hash>`; the link push (no eventUniqueId):
//! `7moor.v7:uid:<uniqueId>:<hash>`; with neither, `7moor.v7:derived:<call id>:<callEvent>:
//! <time>:<hash>` (call id: `callUniqueId`, `superUniqueId`, `_id`; time: `statusTime`,
//! `endTime`, `hangupTime` as sent), where a missing time is replaced by the receive bucket
//! (`rb<epoch>`). The hash is over the whole payload as received (before flattening `content`),
//! because 7moor reuses one eventUniqueId for different pushes.

use callhook_schemas::{AgentState, AgentStatus, CallEventData, Direction, EventType};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::common::{agent, disposition, new_data, queue, take_phone_first, DIALECT_V7};
use super::enums::{self, CallEvent};
use super::journey;
use super::v7_cdr;
use crate::build::{payload_hash, receive_bucket, Draft};
use crate::error::{MapError, Result};
use crate::fields::Fields;
use crate::push::{RawPush, SourceContext};

/// Maps one v7 push (already recognized as v7 by shape).
pub fn map(
    push: &RawPush<'_>,
    payload: Map<String, Value>,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let hash = payload_hash(&payload);
    let flat = flatten_content(payload)?;
    let mut fields = Fields::new(flat, ctx.utc_offset);
    let dedupe_key = dedupe_key(&fields, &hash, push.received_at);
    let drafts = match fields.take_str("pushType") {
        Some(push_type) => map_push_type(push_type, fields, ctx)?,
        None => {
            let Some(call_event) = fields.peek_str("callEvent") else {
                return Err(MapError::UnrecognizedShape(
                    "7moor v7 push with neither `pushType` nor `callEvent`".to_owned(),
                ));
            };
            call_push(call_event, None, fields, ctx)?
        }
    };
    Ok((dedupe_key, drafts))
}

fn map_push_type(push_type: String, fields: Fields, ctx: &SourceContext) -> Result<Vec<Draft>> {
    match push_type.to_ascii_lowercase().as_str() {
        "dialoutring" => call_push(push_type, Some(CallEvent::Ring), fields, ctx),
        "dialouthangup" => call_push(push_type, Some(CallEvent::Hangup), fields, ctx),
        "callstatus" => call_push(push_type, None, fields, ctx),
        "cdr" => Ok(v7_cdr::map_cdr(push_type, fields, ctx)),
        "mediafailreason" => Ok(media_failure(push_type, fields, ctx)),
        "login" => Ok(login(push_type, fields, ctx, EventType::AgentLoggedIn)),
        "logout" => Ok(login(push_type, fields, ctx, EventType::AgentLoggedOut)),
        _ => Err(MapError::UnknownEvent(push_type)),
    }
}

/// The link push nests its fields under `content` (an object, or a JSON string of one) beside
/// `uniqueId`: lift them to the top. A top-level field that clashes with a different value
/// inside `content` is kept as `envelope.<name>`. A `content` string that is not JSON stays a
/// string field; one past the bounds of [`crate::limits`] is an error, like such a body.
fn flatten_content(mut payload: Map<String, Value>) -> Result<Map<String, Value>> {
    let inner = match payload.get("content") {
        Some(Value::Object(inner)) => inner.clone(),
        Some(Value::String(text)) if text.trim_start().starts_with('{') => {
            match crate::limits::parse_json_text(text, false) {
                Ok(Value::Object(inner)) => inner,
                Err(error @ (MapError::TooDeep { .. } | MapError::TooLarge(_))) => {
                    return Err(error)
                }
                _ => return Ok(payload),
            }
        }
        _ => return Ok(payload),
    };
    payload.remove("content");
    let mut flat = inner;
    for (name, value) in payload {
        match flat.get(&name) {
            None => {
                flat.insert(name, value);
            }
            Some(existing) if *existing == value => {}
            Some(_) => {
                flat.insert(format!("envelope.{name}"), value);
            }
        }
    }
    Ok(flat)
}

fn dedupe_key(fields: &Fields, hash: &str, received_at: DateTime<Utc>) -> String {
    let first = |keys: &[&str]| keys.iter().find_map(|key| fields.peek_str(key));
    let is_cdr = fields
        .peek_str("pushType")
        .is_some_and(|push_type| push_type.eq_ignore_ascii_case("cdr"));
    if is_cdr {
        // One CDR per call: the webhook and the reconciliation backfill (built from the CDR
        // query, so a different body) must share a key for the second to be a duplicate.
        if let Some(call_id) = first(&["callUniqueId", "_id"]) {
            return format!("{DIALECT_V7}:cdr:{call_id}");
        }
    }
    if let Some(event_id) = fields.peek_str("eventUniqueId") {
        return format!("{DIALECT_V7}:eid:{event_id}:{hash}");
    }
    if let Some(unique_id) = fields.peek_str("uniqueId") {
        return format!("{DIALECT_V7}:uid:{unique_id}:{hash}");
    }
    let call_id = first(&["callUniqueId", "superUniqueId", "_id"]).unwrap_or_default();
    let call_event = fields.peek_str("callEvent").unwrap_or_default();
    let when = first(&["statusTime", "endTime", "hangupTime"])
        .unwrap_or_else(|| format!("rb{}", receive_bucket(received_at)));
    format!("{DIALECT_V7}:derived:{call_id}:{call_event}:{when}:{hash}")
}

/// The call-progress pushes: the call event named by `fixed` (dialoutRing / dialoutHangup) or
/// by `callEvent`, and the agent's state when the push carries one. The call event comes
/// first: the agent's new state is the consequence of the call's progress.
fn call_push(
    vendor_event: String,
    fixed: Option<CallEvent>,
    mut fields: Fields,
    ctx: &SourceContext,
) -> Result<Vec<Draft>> {
    let raw_call_event = fields.peek_str("callEvent");
    let parsed = raw_call_event.as_deref().and_then(enums::call_event);
    let agent_status = take_agent_status(&mut fields);
    let names_call =
        fields.peek_str("callUniqueId").is_some() || fields.peek_str("superUniqueId").is_some();
    let call_event = match fixed {
        Some(event) => Some(event),
        // A status push describes a call only when it names one (callStatus 3.7).
        None if agent_status.is_some() && !names_call => None,
        None => parsed,
    };
    if call_event.is_none() && agent_status.is_none() {
        let name = match raw_call_event {
            Some(detail) if detail != vendor_event => format!("{vendor_event}/{detail}"),
            _ => vendor_event,
        };
        return Err(MapError::UnknownEvent(name));
    }
    if call_event.is_some() && call_event == parsed {
        fields.discard("callEvent");
    }
    let time = fields.take_time("statusTime");
    let mut data = new_data(DIALECT_V7, &vendor_event, ctx);
    take_call_common(&mut fields, &mut data);
    data.agent_status = agent_status;
    let mut drafts = Vec::with_capacity(2);
    if let Some(event) = call_event {
        set_event_time(&mut data, event, time);
    }
    data.vendor_fields = fields.into_vendor_fields();
    match (call_event, data.agent_status.is_some()) {
        (Some(event), true) => {
            drafts.push(Draft::new(call_event_type(event), time, data.clone()));
            drafts.push(Draft::new(EventType::AgentStatusChanged, time, data));
        }
        (Some(event), false) => drafts.push(Draft::new(call_event_type(event), time, data)),
        (None, true) => drafts.push(Draft::new(EventType::AgentStatusChanged, time, data)),
        (None, false) => {}
    }
    Ok(drafts)
}

fn call_event_type(event: CallEvent) -> EventType {
    match event {
        CallEvent::Calling => EventType::CallInitiated,
        CallEvent::Ring => EventType::CallRinging,
        CallEvent::Link => EventType::CallAnswered,
        CallEvent::Hangup => EventType::CallEnded,
    }
}

/// The push's `statusTime` is the moment of this call event: it also fills the matching
/// `*_at` field.
fn set_event_time(data: &mut CallEventData, event: CallEvent, time: Option<DateTime<Utc>>) {
    let slot = match event {
        CallEvent::Calling => &mut data.started_at,
        CallEvent::Ring => &mut data.ringing_at,
        CallEvent::Link => &mut data.answered_at,
        CallEvent::Hangup => &mut data.ended_at,
    };
    *slot = time;
}

/// `statusNumber` / `statusName`: the code decides, the label is the fallback; both are kept raw.
fn take_agent_status(fields: &mut Fields) -> Option<AgentStatus> {
    let code = fields.take_str("statusNumber");
    let label = fields.take_str("statusName");
    if code.is_none() && label.is_none() {
        return None;
    }
    let value = code
        .as_deref()
        .and_then(enums::agent_state_from_code)
        .or_else(|| label.as_deref().and_then(enums::agent_state_from_label))
        .unwrap_or(AgentState::Unknown);
    Some(AgentStatus {
        value,
        raw_code: code,
        raw_label: label,
    })
}

/// The fields every v7 call push shares: account, call ids, numbers, agent, queue, direction,
/// correlation keys.
///
/// `callUniqueId` is the call id. `superUniqueId` (the main call a leg belongs to) is the call
/// id when it is the only one (the link push), and `parent_call_id` when both differ.
/// `callType` decides direction but stays in `vendor_fields`: `dialout`, `webcall`,
/// `previewDialout` and `autoDialout` are all outbound, and which one it was matters.
/// `customerNumber` is the caller of an inbound call and the callee of an outbound one; with no
/// known direction it stays in `vendor_fields` rather than being guessed into either.
pub fn take_call_common(fields: &mut Fields, data: &mut CallEventData) {
    data.account = fields.take_str("accountId");
    let call = fields.take_str("callUniqueId");
    let main = fields.take_str("superUniqueId");
    match (call, main) {
        (Some(call), Some(main)) if call != main => {
            data.call_id = Some(call);
            data.parent_call_id = Some(main);
        }
        (call, main) => data.call_id = call.or(main),
    }
    data.direction = fields
        .peek_str("callType")
        .map(|call_type| enums::direction(&call_type))
        .unwrap_or(Direction::Unknown);
    data.display_number = take_phone_first(fields, &["displayNumber", "virtualNumber"]);
    data.trunk_number = take_phone_first(fields, &["trunkNumber", "hotLineNumber"]);
    match data.direction {
        Direction::Inbound => {
            data.caller = fields.take_phone("customerNumber");
            data.callee = data.trunk_number.clone();
        }
        Direction::Outbound => {
            data.caller = data.display_number.clone();
            data.callee = fields.take_phone("customerNumber");
        }
        Direction::Internal | Direction::Unknown => {}
    }
    data.agent = agent(
        fields.take_str("agentNumber"),
        fields.take_str("agentName"),
        fields.take_str("agentTelNumber"),
    );
    data.queue = queue(fields.take_str("queueNumber"), fields.take_str("queueName"));
    fields.take_correlation("actionId", &mut data.correlation);
    fields.take_correlation("extras", &mut data.correlation);
    journey::v7_common(fields, data);
}

/// `mediaFailreason`: early-media recognition heard why the call failed ("正在通话" ...).
fn media_failure(vendor_event: String, mut fields: Fields, ctx: &SourceContext) -> Vec<Draft> {
    let time = fields.take_time("statusTime");
    let mut data = new_data(DIALECT_V7, &vendor_event, ctx);
    take_call_common(&mut fields, &mut data);
    let reason = fields.take_str("preMediaFailureReason");
    let keyword = fields.peek_str("preMediaKeyWord");
    let value = reason
        .as_deref()
        .and_then(enums::media_failure_reason)
        .or_else(|| keyword.as_deref().and_then(enums::media_keyword));
    data.disposition = reason
        .clone()
        .or(keyword)
        .map(|raw| disposition(value, raw));
    data.hangup_cause = reason;
    journey::from_disposition(&mut data);
    data.vendor_fields = fields.into_vendor_fields();
    vec![Draft::new(EventType::CallMediaFailure, time, data)]
}

/// `login` / `logout` of the agent's softphone bar. A login says nothing about the state the
/// agent came up in (the callStatus push that follows does), so only logout sets a state:
/// `offline`. `loginType`, `logoutType` and `offlineType` stay in `vendor_fields`.
fn login(
    vendor_event: String,
    mut fields: Fields,
    ctx: &SourceContext,
    event_type: EventType,
) -> Vec<Draft> {
    let time = fields.take_time("statusTime");
    let mut data = new_data(DIALECT_V7, &vendor_event, ctx);
    take_call_common(&mut fields, &mut data);
    if event_type == EventType::AgentLoggedOut {
        data.agent_status = Some(AgentStatus {
            value: AgentState::Offline,
            raw_code: None,
            raw_label: None,
        });
    }
    data.vendor_fields = fields.into_vendor_fields();
    vec![Draft::new(event_type, time, data)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn test_flatten_content_lifts_fields_and_keeps_clashes() {
        let flat = flatten_content(object(json!({
            "content": {"callEvent": "link", "accountId": "1"},
            "uniqueId": "u1",
            "accountId": "2"
        })))
        .unwrap();
        assert_eq!(
            Value::Object(flat),
            json!({"callEvent": "link", "accountId": "1", "uniqueId": "u1", "envelope.accountId": "2"})
        );
        let from_string = flatten_content(object(
            json!({"content": "{\"callEvent\":\"ring\"}", "uniqueId": "u"}),
        ))
        .unwrap();
        assert_eq!(from_string.get("callEvent"), Some(&json!("ring")));
        let not_json =
            flatten_content(object(json!({"content": "hello", "uniqueId": "u"}))).unwrap();
        assert_eq!(not_json.get("content"), Some(&json!("hello")));
    }

    #[test]
    fn test_dedupe_key_prefers_event_id_then_unique_id() {
        let at = DateTime::UNIX_EPOCH;
        let zone = crate::push::china_offset();
        let with_eid = Fields::new(object(json!({"eventUniqueId": "e", "uniqueId": "u"})), zone);
        assert_eq!(dedupe_key(&with_eid, "h", at), "7moor.v7:eid:e:h");
        let with_uid = Fields::new(object(json!({"uniqueId": "u"})), zone);
        assert_eq!(dedupe_key(&with_uid, "h", at), "7moor.v7:uid:u:h");
        let derived = Fields::new(
            object(json!({"superUniqueId": "s", "callEvent": "ring", "statusTime": "1"})),
            zone,
        );
        assert_eq!(dedupe_key(&derived, "h", at), "7moor.v7:derived:s:ring:1:h");
        let no_time = Fields::new(object(json!({"callUniqueId": "c"})), zone);
        assert_eq!(dedupe_key(&no_time, "h", at), "7moor.v7:derived:c::rb0:h");
    }

    #[test]
    fn test_cdr_key_is_the_call_id_alone() {
        let at = DateTime::UNIX_EPOCH;
        let zone = crate::push::china_offset();
        let webhook = Fields::new(
            object(json!({"pushType": "cdr", "eventUniqueId": "e", "callUniqueId": "c"})),
            zone,
        );
        assert_eq!(dedupe_key(&webhook, "h1", at), "7moor.v7:cdr:c");
        let query_shape = Fields::new(object(json!({"pushType": "CDR", "_id": "c"})), zone);
        assert_eq!(dedupe_key(&query_shape, "h2", at), "7moor.v7:cdr:c");
        let no_call = Fields::new(
            object(json!({"pushType": "cdr", "eventUniqueId": "e"})),
            zone,
        );
        assert_eq!(dedupe_key(&no_call, "h", at), "7moor.v7:eid:e:h");
    }
}
