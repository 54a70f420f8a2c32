//! 7moor's model v1.1 fields: conversation and leg, queue segment, abandon point, disconnect
//! reason and IVR path (rules and reasons in `normalizer/docs/7moor.md`, "Model v1.1").
//!
//! Fields that only *decide* a value (`CallID`, `callType`, `CallType`, `State`, `status`,
//! `sipCode`, `hangUpSide`, `failureReason`) stay where v1 put them; fields that are now
//! *mapped* (`QueueTime`, `joinQueueTime`, `IVRKEY`, `ivrId`, `ivrName`) leave
//! `vendor_fields`, as the model's convention is for every mapped field.

use callhook_schemas::DisconnectReasonValue as Reason;
use callhook_schemas::{AbandonPoint, CallEventData, Direction, DispositionValue, IvrStep, Leg};

use crate::fields::Fields;
use crate::vendors::journey::{complete_queue_segment, from_hangup_side, reason, take_ivr_step};

/// v2: conversation, leg, queue segment and IVR path of every call-event push.
///
/// Conversation: `CallID` (the channel id 7moor keeps across a transfer's call sheets), else
/// `refCallSheetId` (the sheet transferred from), else the push's own `CallSheetID`.
pub fn v2_common(fields: &mut Fields, data: &mut CallEventData) {
    let channel = fields.peek_str("CallID");
    data.conversation_id = channel
        .or_else(|| data.parent_call_id.clone())
        .or_else(|| data.call_id.clone());
    let call_type = fields.peek_str("CallType");
    data.leg = match call_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        _ if data.parent_call_id.is_some() => Some(Leg::Transfer),
        Some("transfer" | "dialtransfer") => Some(Leg::Transfer),
        Some("normal" | "dialout") => Some(Leg::Customer),
        Some(_) => Some(Leg::Unknown),
        None => None,
    };
    data.queue_joined_at = fields.take_time("QueueTime");
    complete_queue_segment(data);
    take_ivrkey(fields, data);
}

/// v2 `Hangup`: abandon point and disconnect reason from `State` (kept in
/// `disposition.raw`); v2 sends no hangup side, so an answered call has no reason.
pub fn v2_outcome(data: &mut CallEventData) {
    let Some(raw) = data.disposition.as_ref().and_then(|d| d.raw.clone()) else {
        return;
    };
    let inbound = data.direction == Direction::Inbound;
    let state = raw.trim().to_ascii_lowercase();
    data.abandon_point = match state.as_str() {
        "leak" => Some(AbandonPoint::Ivr),
        "queueleak" => Some(AbandonPoint::Queue),
        "notdeal" if inbound => Some(AbandonPoint::AgentRinging),
        "dealing" | "notdeal" | "blacklist" | "voicemail" | "limit" => {
            Some(AbandonPoint::NotAbandoned)
        }
        _ => None,
    };
    let value = match state.as_str() {
        "notdeal" => Some(Reason::NoAnswer),
        "leak" | "queueleak" => Some(Reason::CustomerHangup),
        "blacklist" => Some(Reason::Rejected),
        "limit" => Some(Reason::System),
        _ => None,
    };
    data.disconnect_reason = value.map(|value| reason(value, raw));
}

/// `IVRKEY` (`10004@0-10005@1`: `node@keys` steps joined by `-`) to the IVR path. The field
/// leaves `vendor_fields` only when the path spells it back exactly; otherwise it stays too.
fn take_ivrkey(fields: &mut Fields, data: &mut CallEventData) {
    let Some(raw) = fields.peek_str("IVRKEY") else {
        return;
    };
    let steps: Vec<IvrStep> = raw
        .split('-')
        .filter(|step| !step.trim().is_empty())
        .map(|step| {
            let (node, keys) = match step.split_once('@') {
                Some((node, keys)) => (node, Some(keys)),
                None => (step, None),
            };
            IvrStep {
                node: non_blank(node),
                name: None,
                keys: keys.and_then(non_blank),
            }
        })
        .filter(|step| step.node.is_some() || step.keys.is_some())
        .collect();
    let spelled: Vec<String> = steps
        .iter()
        .map(|step| match (&step.node, &step.keys) {
            (Some(node), Some(keys)) => format!("{node}@{keys}"),
            (Some(node), None) => node.clone(),
            (None, Some(keys)) => format!("@{keys}"),
            (None, None) => String::new(),
        })
        .collect();
    if spelled.join("-") == raw {
        fields.discard("IVRKEY");
    }
    data.ivr_path = steps;
}

fn non_blank(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// v7 call pushes: conversation (`superUniqueId`, the main call, else `callUniqueId`) and leg.
pub fn v7_common(fields: &Fields, data: &mut CallEventData) {
    if data.call_id.is_none() {
        return;
    }
    data.conversation_id = data.parent_call_id.clone().or_else(|| data.call_id.clone());
    let call_type = fields.peek_str("callType").map(|t| t.to_ascii_lowercase());
    data.leg = match call_type.as_deref() {
        Some("transfer" | "dialtransfer") => Some(Leg::Transfer),
        // A leg of another (main) call: the agent's side of it.
        _ if data.parent_call_id.is_some() => Some(Leg::Agent),
        Some("incoming" | "dialout" | "webcall" | "previewdialout" | "autodialout") => {
            Some(Leg::Customer)
        }
        Some(_) => Some(Leg::Unknown),
        None => None,
    };
}

/// v7 `cdr`: queue segment (`joinQueueTime`), IVR path (`ivrId` / `ivrName`), abandon point
/// (`status`) and disconnect reason (`failureReason`, then a failing `sipCode`, then
/// `hangUpSide`, then `status`). Call after the cdr's times, disposition and hangup side.
pub fn v7_cdr(fields: &mut Fields, data: &mut CallEventData, status: Option<String>) {
    if data.conversation_id.is_none() {
        // The cdr query shape names its call only by `_id`, taken after the common fields.
        v7_common(fields, data);
    }
    data.queue_joined_at = fields.take_time("joinQueueTime");
    complete_queue_segment(data);
    data.ivr_path = take_ivr_step(fields, "ivrId", Some("ivrName"), None)
        .into_iter()
        .collect();
    let status = status.map(|s| s.trim().to_ascii_uppercase());
    data.abandon_point = match status.as_deref() {
        Some("IVR") => Some(AbandonPoint::Ivr),
        Some("QUEUE_ABANDON") => Some(AbandonPoint::Queue),
        Some("AGENT_NO_ANSWER") if data.direction != Direction::Outbound => {
            Some(AbandonPoint::AgentRinging)
        }
        Some("ANSWER" | "ANSWERED" | "CUSTOMER_NO_ANSWER" | "AGENT_NO_ANSWER") => {
            Some(AbandonPoint::NotAbandoned)
        }
        _ => None,
    };
    data.disconnect_reason = cdr_disconnect(fields, data, status.as_deref());
}

fn cdr_disconnect(
    fields: &Fields,
    data: &CallEventData,
    status: Option<&str>,
) -> Option<callhook_schemas::DisconnectReason> {
    if let Some(failure) = &data.hangup_cause {
        let value = match failure.trim() {
            "forbidden" | "decline" => Reason::Rejected,
            "serviceUnavailable" => Reason::NetworkError,
            "requestTimeout" => Reason::NoAnswer,
            "cancel" if data.direction == Direction::Inbound => Reason::CustomerHangup,
            "cancel" => Reason::NoAnswer,
            _ => Reason::Unknown,
        };
        return Some(reason(value, failure.clone()));
    }
    if let Some(value) = fields
        .peek_str("sipCode")
        .and_then(|code| sip_reason(&code).map(|value| reason(value, code)))
    {
        return Some(value);
    }
    if let Some(side) = &data.hangup_side {
        return Some(callhook_schemas::DisconnectReason {
            value: from_hangup_side(side.value, data.direction),
            raw: side.raw.clone(),
        });
    }
    let value = match status? {
        "AGENT_NO_ANSWER" | "CUSTOMER_NO_ANSWER" => Reason::NoAnswer,
        "IVR" | "QUEUE_ABANDON" => Reason::CustomerHangup,
        _ => return None,
    };
    Some(reason(value, status?.to_owned()))
}

/// A failing SIP final response to a reason; 2xx and unknown codes say nothing.
fn sip_reason(code: &str) -> Option<Reason> {
    let value = match code.trim() {
        "486" | "600" => Reason::Busy,
        "403" | "603" => Reason::Rejected,
        "408" | "480" | "487" => Reason::NoAnswer,
        "404" | "484" | "500" | "502" | "503" | "504" => Reason::NetworkError,
        _ => return None,
    };
    Some(value)
}

/// `mediaFailreason` and the privacy-number CDR: the reason follows the disposition (busy,
/// refused, not answered, line failure), keeping the same raw value.
pub fn from_disposition(data: &mut CallEventData) {
    let Some(disposition) = &data.disposition else {
        return;
    };
    let value = match disposition.value {
        DispositionValue::Busy => Reason::Busy,
        DispositionValue::Rejected | DispositionValue::Blocked => Reason::Rejected,
        DispositionValue::NoAnswer => Reason::NoAnswer,
        DispositionValue::Failed => Reason::NetworkError,
        _ => return,
    };
    data.disconnect_reason = disposition.raw.clone().map(|raw| reason(value, raw));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn fields(value: Value) -> Fields {
        let Value::Object(map) = value else {
            unreachable!()
        };
        Fields::new(map, crate::push::china_offset())
    }

    fn data() -> CallEventData {
        CallEventData::new("7moor", "7moor.v2", "Hangup", "s")
    }

    #[test]
    fn test_ivrkey_parses_steps_and_leaves_only_when_spelled_back() {
        let mut exact = fields(json!({"IVRKEY": "10004@0-10005@1"}));
        let mut path = data();
        take_ivrkey(&mut exact, &mut path);
        assert_eq!(path.ivr_path.len(), 2);
        assert_eq!(path.ivr_path[1].node.as_deref(), Some("10005"));
        assert_eq!(path.ivr_path[1].keys.as_deref(), Some("1"));
        assert!(exact.into_vendor_fields().is_empty());
        let mut odd = fields(json!({"IVRKEY": "10004@-10005@1"}));
        let mut kept = data();
        take_ivrkey(&mut odd, &mut kept);
        assert_eq!(kept.ivr_path.len(), 2);
        assert_eq!(kept.ivr_path[0].keys, None);
        assert_eq!(
            Value::Object(odd.into_vendor_fields()),
            json!({"IVRKEY": "10004@-10005@1"})
        );
    }

    #[test]
    fn test_v2_conversation_prefers_the_channel_then_the_parent() {
        let mut with_channel = data();
        with_channel.call_id = Some("B".into());
        with_channel.parent_call_id = Some("A".into());
        v2_common(
            &mut fields(json!({"CallID": "ch", "CallType": "normal"})),
            &mut with_channel,
        );
        assert_eq!(with_channel.conversation_id.as_deref(), Some("ch"));
        assert_eq!(with_channel.leg, Some(Leg::Transfer));
        let mut first = data();
        first.call_id = Some("A".into());
        v2_common(&mut fields(json!({"CallType": "normal"})), &mut first);
        assert_eq!(first.conversation_id.as_deref(), Some("A"));
        assert_eq!(first.leg, Some(Leg::Customer));
    }

    #[test]
    fn test_sip_reasons() {
        assert_eq!(sip_reason("486"), Some(Reason::Busy));
        assert_eq!(sip_reason("603"), Some(Reason::Rejected));
        assert_eq!(sip_reason("480"), Some(Reason::NoAnswer));
        assert_eq!(sip_reason("503"), Some(Reason::NetworkError));
        assert_eq!(sip_reason("200"), None);
    }
}
