//! The sister UinCall product's pushCallEvent ("U2"): the event arrives as a JSON string in
//! `eventData` (unwrapped by the parent module), with `account`, `event` (alert, transfer,
//! transferfail, connected, disconnected, callout, calloutanswer, calloutdropped),
//! `transferresult` and `yyyyMMddHHmmss` times in the source's zone.
//!
//! Only those names are public; the other field names below are inferred from the product
//! family and mapped where present. Whatever is not recognized stays in `vendor_fields`.
//!
//! Dedupe key: `uincall:u2:<call id|agent/<n>|->:<event>:<payload_hash>`, plus
//! `:b<receive bucket>` when the push carries no time (identical bodies could then be two
//! real events).

use callhook_schemas::{Agent, CallEventData, EventType};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::codes::PushEvent;
use super::journey;
use super::{bounded, DIALECT, VENDOR};
use crate::build::{payload_hash, receive_bucket, Draft};
use crate::error::{MapError, Result};
use crate::fields::Fields;
use crate::push::{RawPush, SourceContext};

/// The discriminator.
pub(super) const EVENT: &str = "event";

// Inferred aliases, first present wins (the documented U1 names are included).
const CALL_ID_KEYS: [&str; 6] = [
    "callId",
    "callid",
    "call_id",
    "sessionId",
    "session_id",
    "uuid",
];
const CALLER_KEYS: [&str; 4] = ["caller", "callerNumber", "callerNo", "ani"];
const CALLEE_KEYS: [&str; 4] = ["called", "calledNumber", "calledNo", "dnis"];
const DISPLAY_KEYS: [&str; 2] = ["displayNumber", "display"];
const TRUNK_KEYS: [&str; 2] = ["trunkNumber", "trunk"];
const AGENT_KEYS: [&str; 5] = ["agentNum", "agent_num", "agentNo", "agentId", "agent"];
const EXTENSION_KEYS: [&str; 3] = ["extension", "exten", "ext"];
const EVENT_TIME_KEYS: [&str; 4] = ["time", "eventTime", "event_time", "timestamp"];
const STARTED_KEYS: [&str; 2] = ["startTime", "beginTime"];
const ANSWERED_KEYS: [&str; 2] = ["answerTime", "connectTime"];
const ENDED_KEYS: [&str; 2] = ["endTime", "hangupTime"];

/// Maps one pushCallEvent (already unwrapped and merged into `map`).
pub(super) fn map(
    push: &RawPush<'_>,
    map: Map<String, Value>,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let hash = payload_hash(&map);
    let mut fields = Fields::new(map, ctx.utc_offset);
    let event_text = fields.peek_str(EVENT).ok_or_else(|| {
        MapError::UnrecognizedShape("no `event` field (UinCall pushCallEvent)".to_owned())
    })?;
    let event = PushEvent::parse(&event_text)
        .ok_or_else(|| MapError::UnknownEvent(bounded(&event_text)))?;
    fields.discard(EVENT);

    let mut data = CallEventData::new(VENDOR, DIALECT, &event_text, &ctx.name);
    data.account = fields.take_str("account");
    data.call_id = take_first(&mut fields, &CALL_ID_KEYS);
    data.direction = event.implied_direction();
    data.caller =
        take_first(&mut fields, &CALLER_KEYS).and_then(|raw| crate::phone::parse_phone(&raw));
    data.callee =
        take_first(&mut fields, &CALLEE_KEYS).and_then(|raw| crate::phone::parse_phone(&raw));
    data.display_number =
        take_first(&mut fields, &DISPLAY_KEYS).and_then(|raw| crate::phone::parse_phone(&raw));
    data.trunk_number =
        take_first(&mut fields, &TRUNK_KEYS).and_then(|raw| crate::phone::parse_phone(&raw));
    let agent_number = take_first(&mut fields, &AGENT_KEYS);
    let extension = take_first(&mut fields, &EXTENSION_KEYS);
    if agent_number.is_some() || extension.is_some() {
        data.agent = Some(Agent {
            number: agent_number,
            name: None,
            extension,
        });
    }
    journey::push_call_event(event, &mut data);
    let time = map_times(event, &mut fields, &mut data);
    let has_time = time.is_some()
        || [data.started_at, data.answered_at, data.ended_at]
            .iter()
            .any(Option::is_some);
    let dedupe_key = dedupe_key(&event_text, &data, has_time, &hash, push);
    data.vendor_fields = fields.into_vendor_fields();

    let drafts = match event.event_type() {
        Some(event_type) => vec![Draft::new(event_type, time, data)],
        // `transferfail`: understood, but no canonical type can say it without ending the
        // call; the push stays in the raw log and yields no event.
        None => Vec::new(),
    };
    Ok((dedupe_key, drafts))
}

/// Takes the first alias present as text; the others stay in `vendor_fields`.
fn take_first(fields: &mut Fields, keys: &[&str]) -> Option<String> {
    let key = keys.iter().find(|key| fields.peek_str(key).is_some())?;
    fields.take_str(key)
}

/// Takes the first alias that parses as a time.
fn take_first_time(fields: &mut Fields, keys: &[&str]) -> Option<DateTime<Utc>> {
    keys.iter().find_map(|key| fields.take_time(key))
}

/// Fills the lifecycle times and returns the time of this occurrence: the event time, or
/// else the lifecycle time the event itself marks.
fn map_times(
    event: PushEvent,
    fields: &mut Fields,
    data: &mut CallEventData,
) -> Option<DateTime<Utc>> {
    let event_time = take_first_time(fields, &EVENT_TIME_KEYS);
    data.started_at = take_first_time(fields, &STARTED_KEYS);
    data.answered_at = take_first_time(fields, &ANSWERED_KEYS);
    data.ended_at = take_first_time(fields, &ENDED_KEYS);
    let marked = match event.event_type() {
        Some(EventType::CallInitiated) => &mut data.started_at,
        Some(EventType::CallRinging) => &mut data.ringing_at,
        Some(EventType::CallAnswered) => &mut data.answered_at,
        Some(EventType::CallEnded) => &mut data.ended_at,
        _ => return event_time,
    };
    if marked.is_none() {
        *marked = event_time;
    }
    event_time.or(*marked)
}

fn dedupe_key(
    event_text: &str,
    data: &CallEventData,
    has_time: bool,
    hash: &str,
    push: &RawPush<'_>,
) -> String {
    let id = match (
        &data.call_id,
        data.agent.as_ref().and_then(|a| a.number.as_ref()),
    ) {
        (Some(call_id), _) => call_id.clone(),
        (None, Some(agent)) => format!("agent/{agent}"),
        (None, None) => "-".to_owned(),
    };
    let base = format!("uincall:u2:{id}:{event_text}:{hash}");
    if has_time {
        base
    } else {
        format!("{base}:b{}", receive_bucket(push.received_at))
    }
}
