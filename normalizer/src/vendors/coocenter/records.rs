//! The record events: `ivr` (one IVR node left), `cdr` (the Asterisk CDR, "通话日志1") and
//! `cc_cdr` (the call-center CDR, "通话日志2").
//!
//! A record stands on its own, so a missing `uuid`/`uniqueid` is not an error here: the event
//! is kept without a call id. Times are zone-less local times (`2018-11-05 19:05:31`, or
//! `2018-11-0519:05:31` as the doc extraction shows) in the source's zone.

use callhook_schemas::{
    CallEventData, Direction, Disposition, DispositionValue, EventType, HangupSide,
    HangupSideValue, Queue,
};
use chrono::{DateTime, Utc};

use super::{extension_agent, outcome, take_first_phone};
use crate::build::Draft;
use crate::fields::Fields;

/// How a blank call type reads: `cdr` documents `""` as an internal call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlankCallType {
    Internal,
    Unknown,
}

/// `ivr` → `ivr.completed` at `endTime`; `duration` (the time in this IVR) is `total_seconds`,
/// matching `started_at`/`ended_at`, which are this IVR's too.
pub(super) fn ivr(mut fields: Fields, mut data: CallEventData) -> Draft {
    data.call_id = fields.take_str("uuid");
    data.caller = fields.take_phone("caller");
    data.callee = fields.take_phone("called");
    data.direction = take_direction(&mut fields, "callType", BlankCallType::Unknown);
    data.queue = take_queue(&mut fields);
    data.trunk_number = fields.take_phone("trunkNumber");
    data.started_at = take_time(&mut fields, "startTime");
    data.ended_at = take_time(&mut fields, "endTime");
    data.total_seconds = fields.take_seconds("duration");
    outcome::ivr(&mut fields, &mut data);
    let time = data.ended_at;
    data.vendor_fields = fields.into_vendor_fields();
    Draft::new(EventType::IvrCompleted, time, data)
}

/// `cdr` (Asterisk CDR) → `call.cdr` at `endtime`.
pub(super) fn cdr(mut fields: Fields, mut data: CallEventData) -> Draft {
    data.call_id = fields.take_str("uniqueid");
    // `source` is the bare number; `callerid` (`"808" <808>`) stays in vendor_fields for its
    // name part, and stands in for the caller only when `source` is missing.
    data.caller = take_first_phone(&mut fields, &["source", "callerid"]);
    data.callee = fields.take_phone("destination");
    data.direction = take_direction(&mut fields, "calltype", BlankCallType::Internal);
    data.started_at = take_time(&mut fields, "starttime");
    data.answered_at = take_time(&mut fields, "answertime");
    data.ended_at = take_time(&mut fields, "endtime");
    data.disposition = fields.take_str("disposition").map(|raw| Disposition {
        value: cdr_disposition(&raw),
        raw: Some(raw),
    });
    data.total_seconds = fields.take_seconds("duration");
    data.talk_seconds = ["billableseconds", "billsec"]
        .iter()
        .find_map(|key| fields.take_seconds(key));
    data.recording_urls = fields.take_str("recordfile").into_iter().collect();
    outcome::cdr(&mut data);
    let time = data.ended_at;
    data.vendor_fields = fields.into_vendor_fields();
    Draft::new(EventType::CallCdr, time, data)
}

/// `cc_cdr` (call-center CDR) → `call.cdr` at `endTime`.
pub(super) fn cc_cdr(mut fields: Fields, mut data: CallEventData) -> Draft {
    data.call_id = fields.take_str("uuid");
    data.caller = fields.take_phone("caller");
    data.callee = fields.take_phone("called");
    data.direction = take_direction(&mut fields, "callType", BlankCallType::Unknown);
    data.queue = take_queue(&mut fields);
    data.agent = fields.take_str("agentCode").map(extension_agent);
    data.trunk_number = fields.take_phone("trunkNumber");
    // `missCause` and `voicemailState` inform the disposition but stay in vendor_fields as
    // sent: the disposition's raw value is `cdrState`, which cannot hold them too.
    let voicemail = fields
        .peek_str("voicemailState")
        .is_some_and(|v| is_truthy(&v));
    let miss_cause = fields.peek_str("missCause");
    let state = fields.take_str("cdrState");
    let state_sent = state.clone();
    data.disposition = cc_disposition(state.as_deref(), miss_cause.as_deref(), voicemail)
        .map(|value| Disposition { value, raw: state });
    data.hangup_side = fields.take_str("hangupSide").map(|raw| HangupSide {
        value: hangup_side(&raw),
        raw: Some(raw),
    });
    data.hangup_cause = fields.take_str("hangupCause");
    data.started_at = take_time(&mut fields, "startTime");
    data.ended_at = take_time(&mut fields, "endTime");
    data.total_seconds = fields.take_seconds("duration");
    data.queue_seconds = fields.take_seconds("queueTime");
    data.ring_seconds = fields.take_seconds("ringTime");
    data.talk_seconds = fields.take_seconds("talkingTime");
    data.recording_urls = fields.take_str("filePath").into_iter().collect();
    outcome::cc_cdr(&mut fields, &mut data, state_sent.as_deref());
    let time = data.ended_at;
    data.vendor_fields = fields.into_vendor_fields();
    Draft::new(EventType::CallCdr, time, data)
}

/// Takes a time; Asterisk's "never" (`0000-00-00 00:00:00`, e.g. the answer time of an
/// unanswered call) is absent, not a value to keep.
fn take_time(fields: &mut Fields, key: &str) -> Option<DateTime<Utc>> {
    if fields
        .peek_str(key)
        .is_some_and(|text| text.starts_with("0000-00-00"))
    {
        fields.discard(key);
        return None;
    }
    fields.take_time(key)
}

fn take_queue(fields: &mut Fields) -> Option<Queue> {
    let id = fields.take_str("queueCode");
    let name = fields.take_str("queueName");
    (id.is_some() || name.is_some()).then_some(Queue { id, name })
}

/// Takes a call type that maps to a direction; an unmapped one stays in vendor_fields as
/// sent (the direction has no raw slot).
fn take_direction(fields: &mut Fields, key: &str, blank: BlankCallType) -> Direction {
    if !fields.has(key) {
        return Direction::Unknown;
    }
    let Some(raw) = fields.peek_str(key) else {
        let is_text = fields
            .get(key)
            .is_some_and(|v| v.is_string() || v.is_null());
        if !is_text {
            return Direction::Unknown;
        }
        fields.discard(key);
        return match blank {
            BlankCallType::Internal => Direction::Internal,
            BlankCallType::Unknown => Direction::Unknown,
        };
    };
    let direction = call_type(&raw);
    if direction != Direction::Unknown {
        fields.discard(key);
    }
    direction
}

/// Maps `callType` / `calltype` (`IN`, `OUT`, `incoming`, `outbound`, ...).
fn call_type(raw: &str) -> Direction {
    match raw.to_ascii_lowercase().as_str() {
        "in" | "incoming" | "inbound" | "callin" => Direction::Inbound,
        "out" | "outgoing" | "outbound" | "callout" | "dialout" => Direction::Outbound,
        "internal" | "local" | "inner" => Direction::Internal,
        _ => Direction::Unknown,
    }
}

/// Maps an Asterisk CDR `disposition`.
fn cdr_disposition(raw: &str) -> DispositionValue {
    let normalized: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    match normalized.as_str() {
        "ANSWERED" | "ANSWER" => DispositionValue::Answered,
        "NOANSWER" => DispositionValue::NoAnswer,
        "BUSY" => DispositionValue::Busy,
        "FAILED" | "CONGESTION" => DispositionValue::Failed,
        _ => DispositionValue::Unknown,
    }
}

/// The `cc_cdr` outcome from where the call ended (`cdrState`), why it was lost
/// (`missCause`) and whether a voicemail was left. `None` when the push says nothing.
fn cc_disposition(
    state: Option<&str>,
    miss_cause: Option<&str>,
    voicemail: bool,
) -> Option<DispositionValue> {
    let state = state.map(str::to_ascii_lowercase);
    if matches!(state.as_deref(), Some("bridged" | "feedback")) {
        return Some(DispositionValue::Answered);
    }
    if voicemail {
        return Some(DispositionValue::Voicemail);
    }
    match state.as_deref()? {
        "queue" => Some(queue_loss(miss_cause)),
        // The caller hung up in the auto attendant before reaching a queue.
        "ivr" => Some(DispositionValue::Abandoned),
        _ => Some(DispositionValue::Unknown),
    }
}

/// A call that ended in the queue: nobody answered when agents were offered it, otherwise
/// (caller gave up, no agent free or logged in, no cause given) it was abandoned there.
fn queue_loss(miss_cause: Option<&str>) -> DispositionValue {
    match miss_cause.map(str::to_ascii_uppercase).as_deref() {
        Some("NO_AGENT_ANSWER") => DispositionValue::NoAnswer,
        _ => DispositionValue::Abandoned,
    }
}

fn hangup_side(raw: &str) -> HangupSideValue {
    match raw.to_ascii_lowercase().as_str() {
        "caller" => HangupSideValue::Caller,
        "callee" | "called" => HangupSideValue::Callee,
        "agent" => HangupSideValue::Agent,
        "customer" | "client" => HangupSideValue::Customer,
        "system" => HangupSideValue::System,
        _ => HangupSideValue::Unknown,
    }
}

fn is_truthy(flag: &str) -> bool {
    match flag.parse::<f64>() {
        Ok(number) => number != 0.0,
        Err(_) => matches!(flag.to_ascii_lowercase().as_str(), "true" | "yes" | "y"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_call_types() {
        for (raw, expected) in [
            ("IN", Direction::Inbound),
            ("incoming", Direction::Inbound),
            ("inbound", Direction::Inbound),
            ("OUT", Direction::Outbound),
            ("outgoing", Direction::Outbound),
            ("outbound", Direction::Outbound),
            ("internal", Direction::Internal),
            ("transfer", Direction::Unknown),
        ] {
            assert_eq!(call_type(raw), expected, "{raw}");
        }
    }

    #[test]
    fn test_cdr_dispositions() {
        for (raw, expected) in [
            ("ANSWERED", DispositionValue::Answered),
            ("NO ANSWER", DispositionValue::NoAnswer),
            ("NOANSWER", DispositionValue::NoAnswer),
            ("BUSY", DispositionValue::Busy),
            ("FAILED", DispositionValue::Failed),
            ("CONGESTION", DispositionValue::Failed),
            ("answered", DispositionValue::Answered),
            ("UNKNOWN", DispositionValue::Unknown),
        ] {
            assert_eq!(cdr_disposition(raw), expected, "{raw}");
        }
    }

    #[test]
    fn test_cc_dispositions() {
        use DispositionValue::*;
        for (state, miss, voicemail, expected) in [
            (Some("bridged"), None, false, Some(Answered)),
            (Some("feedback"), None, false, Some(Answered)),
            (Some("bridged"), None, true, Some(Answered)),
            (Some("queue"), Some("MEMBER_CANCEL"), false, Some(Abandoned)),
            (
                Some("queue"),
                Some("NO_AGENT_ANSWER"),
                false,
                Some(NoAnswer),
            ),
            (
                Some("queue"),
                Some("NO_AGENT_LOGIN"),
                false,
                Some(Abandoned),
            ),
            (Some("queue"), Some("NO_ASSIGN"), false, Some(Abandoned)),
            (Some("queue"), None, false, Some(Abandoned)),
            (
                Some("queue"),
                Some("NO_AGENT_ANSWER"),
                true,
                Some(Voicemail),
            ),
            (Some("ivr"), None, false, Some(Abandoned)),
            (Some("ivr"), None, true, Some(Voicemail)),
            (Some("parked"), None, false, Some(Unknown)),
            (None, None, true, Some(Voicemail)),
            (None, Some("MEMBER_CANCEL"), false, None),
        ] {
            assert_eq!(
                cc_disposition(state, miss, voicemail),
                expected,
                "{state:?} {miss:?} {voicemail}"
            );
        }
    }

    #[test]
    fn test_hangup_sides_and_flags() {
        assert_eq!(hangup_side("caller"), HangupSideValue::Caller);
        assert_eq!(hangup_side("Callee"), HangupSideValue::Callee);
        assert_eq!(hangup_side("agent"), HangupSideValue::Agent);
        assert_eq!(hangup_side("both"), HangupSideValue::Unknown);
        assert!(is_truthy("1") && is_truthy("true") && !is_truthy("0") && !is_truthy("no"));
    }
}
