//! CooCenter's model v1.1 fields: conversation and leg, queue segment, abandon point,
//! disconnect reason and IVR path (rules and reasons in `normalizer/docs/coocenter.md`,
//! "Model v1.1").
//!
//! Fields that only decide a value (`cdrState`, `missCause`, `hangupSide`, `forwardNumber`,
//! `fwType`, `dialstatus`, `disposition`, `cause`) stay where v1 put them; `ivrId`, `ivrName`
//! and `ivrDtmf`, now mapped to `ivr_path`, leave `vendor_fields`.

use callhook_schemas::DisconnectReasonValue as Reason;
use callhook_schemas::{AbandonPoint, CallEventData, Direction, DisconnectReason, Leg};
use chrono::{DateTime, TimeDelta, Utc};

use crate::fields::Fields;
use crate::vendors::journey::{complete_queue_segment, from_hangup_side, reason, take_ivr_step};

/// Every call event: the conversation is the calling channel's `uniqueid` / `uuid` (the call
/// id), which Asterisk keeps for the caller through queue attempts and a blind transfer;
/// the leg is the customer's when the call crosses the PBX's edge (inbound or outbound).
/// An internal call (extension to extension) may be a consultation or a plain internal call:
/// the push cannot tell, so it gets no leg.
pub(super) fn conversation(data: &mut CallEventData) {
    data.conversation_id = data.call_id.clone();
    if matches!(data.direction, Direction::Inbound | Direction::Outbound) {
        data.leg = Some(Leg::Customer);
    }
}

/// `ivr`: the node left (`ivrId`, `ivrName`, `ivrDtmf`); when it hands the caller to a queue
/// (`queueCode`), the IVR's `endTime` is when the call joined it.
pub(super) fn ivr(fields: &mut Fields, data: &mut CallEventData) {
    data.ivr_path = take_ivr_step(fields, "ivrId", Some("ivrName"), Some("ivrDtmf"))
        .into_iter()
        .collect();
    if data.queue.as_ref().is_some_and(|queue| queue.id.is_some()) {
        data.queue_joined_at = data.ended_at;
    }
}

/// `cc_cdr`: IVR path, queue segment, abandon point and disconnect reason. `state` is
/// `cdrState` as sent; call after the record's times, queue and hangup side are mapped.
pub(super) fn cc_cdr(fields: &mut Fields, data: &mut CallEventData, state: Option<&str>) {
    data.ivr_path = take_ivr_step(fields, "ivrId", Some("ivrName"), Some("ivrDtmf"))
        .into_iter()
        .collect();
    cc_queue_segment(fields, data);
    let state = state.map(str::to_ascii_lowercase);
    let miss_cause = fields.peek_str("missCause").map(|c| c.to_ascii_uppercase());
    let voicemail = fields
        .peek_str("voicemailState")
        .is_some_and(|flag| flag.parse::<f64>().is_ok_and(|n| n != 0.0));
    data.abandon_point = match (state.as_deref(), miss_cause.as_deref()) {
        (Some("bridged" | "feedback"), _) => Some(AbandonPoint::NotAbandoned),
        _ if voicemail => Some(AbandonPoint::NotAbandoned),
        (Some("ivr"), _) => Some(AbandonPoint::Ivr),
        (Some("queue"), Some("NO_AGENT_ANSWER")) => Some(AbandonPoint::AgentRinging),
        (Some("queue"), _) => Some(AbandonPoint::Queue),
        _ => None,
    };
    data.disconnect_reason = cc_disconnect(fields, data);
}

/// A call that reached a queue joined it after its IVR (`startTime` + `ivrTime`; a blank
/// `ivrTime` is no IVR) and left it `queueTime` seconds later.
fn cc_queue_segment(fields: &Fields, data: &mut CallEventData) {
    let (Some(started), Some(waited)) = (data.started_at, data.queue_seconds) else {
        return;
    };
    if data.queue.is_none() {
        return;
    }
    let ivr_seconds = match fields.get("ivrTime") {
        None => Some(0),
        Some(_) => match fields.peek_str("ivrTime") {
            None => Some(0),
            Some(text) => text.parse::<i64>().ok().filter(|s| *s >= 0),
        },
    };
    let Some(ivr_seconds) = ivr_seconds else {
        return;
    };
    // Seconds past what a time can hold (a hostile `ivrTime` of 21 digits, found by fuzzing)
    // leave the segment unknown instead of panicking in chrono.
    let Some(joined) = plus_seconds(started, ivr_seconds) else {
        return;
    };
    data.queue_joined_at = Some(joined);
    data.queue_left_at = i64::try_from(waited)
        .ok()
        .and_then(|waited| plus_seconds(joined, waited));
    complete_queue_segment(data);
}

/// `time` plus `seconds`, or `None` past the range of `TimeDelta` or of `DateTime`.
fn plus_seconds(time: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
    time.checked_add_signed(TimeDelta::try_seconds(seconds)?)
}

/// Forwarded (`forwardNumber` / `fwType`) → `transfer`; else why the call was lost
/// (`missCause`); else who hung up (`hangupSide`).
fn cc_disconnect(fields: &Fields, data: &CallEventData) -> Option<DisconnectReason> {
    if let Some(forward) = fields
        .peek_str("fwType")
        .or_else(|| fields.peek_str("forwardNumber"))
    {
        return Some(reason(Reason::Transfer, forward));
    }
    if let Some(cause) = fields.peek_str("missCause") {
        let value = match cause.to_ascii_uppercase().as_str() {
            "MEMBER_CANCEL" => Reason::CustomerHangup,
            "NO_AGENT_ANSWER" => Reason::NoAnswer,
            "NO_ASSIGN" | "NO_AGENT_LOGIN" => Reason::System,
            _ => Reason::Unknown,
        };
        return Some(reason(value, cause));
    }
    let side = data.hangup_side.as_ref()?;
    Some(DisconnectReason {
        value: from_hangup_side(side.value, data.direction),
        raw: side.raw.clone(),
    })
}

/// `cdr` (Asterisk CDR) `disposition`: a failed dial says why; `ANSWERED` says nothing about
/// who hung up.
pub(super) fn cdr(data: &mut CallEventData) {
    let Some(raw) = data.disposition.as_ref().and_then(|d| d.raw.clone()) else {
        return;
    };
    let value = match squash(&raw).as_str() {
        "ANSWERED" | "ANSWER" => {
            data.abandon_point = Some(AbandonPoint::NotAbandoned);
            return;
        }
        "BUSY" => Reason::Busy,
        "NOANSWER" => Reason::NoAnswer,
        "FAILED" | "CONGESTION" => Reason::NetworkError,
        _ => return,
    };
    data.disconnect_reason = Some(reason(value, raw));
}

/// `dialend` other than `ANSWER`: why the dial ended (`dialstatus`).
pub(super) fn dial_end(data: &mut CallEventData) {
    let Some(raw) = data.disposition.as_ref().and_then(|d| d.raw.clone()) else {
        return;
    };
    let value = match squash(&raw).as_str() {
        "ANSWER" | "ANSWERED" => return,
        "BUSY" => Reason::Busy,
        "NOANSWER" => Reason::NoAnswer,
        "CANCEL" => match data.direction {
            Direction::Inbound => Reason::CustomerHangup,
            Direction::Outbound => Reason::AgentHangup,
            _ => Reason::Unknown,
        },
        "CONGESTION" | "CHANUNAVAIL" | "INVALIDARGS" => Reason::NetworkError,
        "DONTCALL" | "TORTURE" => Reason::Rejected,
        _ => Reason::Unknown,
    };
    data.disconnect_reason = Some(reason(value, raw));
}

/// `hangup` `cause`: an ISDN / Q.850 cause code (what Asterisk reports) that says why; the
/// normal clearings (16, 31) and unknown codes say nothing beyond "someone hung up".
pub(super) fn hangup(data: &mut CallEventData) {
    let Some(raw) = data.hangup_cause.clone() else {
        return;
    };
    let value = match raw.trim() {
        "17" => Reason::Busy,
        "18" | "19" => Reason::NoAnswer,
        "21" => Reason::Rejected,
        "1" | "2" | "3" | "27" | "28" | "34" | "38" | "41" | "42" | "44" | "102" => {
            Reason::NetworkError
        }
        _ => return,
    };
    data.disconnect_reason = Some(reason(value, raw));
}

fn squash(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhook_schemas::{Disposition, DispositionValue};

    #[test]
    fn test_dial_end_reasons() {
        for (raw, direction, expected) in [
            ("BUSY", Direction::Inbound, Some(Reason::Busy)),
            ("NOANSWER", Direction::Inbound, Some(Reason::NoAnswer)),
            ("CANCEL", Direction::Inbound, Some(Reason::CustomerHangup)),
            ("CANCEL", Direction::Outbound, Some(Reason::AgentHangup)),
            (
                "CHANUNAVAIL",
                Direction::Outbound,
                Some(Reason::NetworkError),
            ),
            ("DONTCALL", Direction::Outbound, Some(Reason::Rejected)),
            ("hangup", Direction::Outbound, Some(Reason::Unknown)),
            ("ANSWER", Direction::Outbound, None),
        ] {
            let mut data = CallEventData::new("coocenter", "coocenter", "dialend", "s");
            data.direction = direction;
            data.disposition = Some(Disposition {
                value: DispositionValue::Unknown,
                raw: Some(raw.into()),
            });
            dial_end(&mut data);
            assert_eq!(data.disconnect_reason.map(|r| r.value), expected, "{raw}");
        }
    }
}
