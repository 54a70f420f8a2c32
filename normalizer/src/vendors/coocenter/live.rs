//! The live call events: `dialbegein` (sic) / `dialbegin`, `dialend`, `hangup`.
//!
//! These are Asterisk AMI `DialBegin` / `DialEnd` / `Hangup` relayed over HTTP. `uniqueid` is
//! the calling channel's id and the call id; without it an event cannot be attached to a call,
//! so it is a `missing_field` dead letter. Channels, channel states, `destuniqueid` and
//! `dialstring` stay in `vendor_fields` as sent; the direction and the agent extension are
//! inferred from them ([`super::channel`]).

use callhook_schemas::{CallEventData, Direction, Disposition, DispositionValue, EventType};

use super::channel;
use super::{extension_agent, outcome, take_first_phone};
use crate::build::Draft;
use crate::error::{MapError, Result};
use crate::fields::Fields;

/// `dialbegein` → `call.ringing` at `timestamp`.
pub(super) fn dial_begin(mut fields: Fields, mut data: CallEventData) -> Result<Draft> {
    data.call_id = Some(take_uniqueid(&mut fields)?);
    let time = fields.take_time("timestamp");
    data.ringing_at = time;
    take_dial_parties(&mut fields, &mut data);
    data.vendor_fields = fields.into_vendor_fields();
    Ok(Draft::new(EventType::CallRinging, time, data))
}

/// `dialend` → `call.answered` when `dialstatus` is `ANSWER`, else `call.ended` with the
/// dial's outcome as the disposition.
pub(super) fn dial_end(mut fields: Fields, mut data: CallEventData) -> Result<Draft> {
    data.call_id = Some(take_uniqueid(&mut fields)?);
    let time = fields.take_time("timestamp");
    take_dial_parties(&mut fields, &mut data);
    data.disposition = fields.take_str("dialstatus").map(|raw| Disposition {
        value: dial_status(&raw),
        raw: Some(raw),
    });
    let answered = data
        .disposition
        .as_ref()
        .is_some_and(|d| d.value == DispositionValue::Answered);
    let event_type = if answered {
        data.answered_at = time;
        EventType::CallAnswered
    } else {
        data.ended_at = time;
        EventType::CallEnded
    };
    outcome::dial_end(&mut data);
    data.vendor_fields = fields.into_vendor_fields();
    Ok(Draft::new(event_type, time, data))
}

/// `hangup` → `call.ended`. The documented push has no time (the receive time stands in);
/// a `timestamp`, if a firmware sends one, is used.
pub(super) fn hangup(mut fields: Fields, mut data: CallEventData) -> Result<Draft> {
    data.call_id = Some(take_uniqueid(&mut fields)?);
    let time = fields.take_time("timestamp");
    data.ended_at = time;
    let caller_number = fields.peek_str("calleridnum");
    let callee_number = fields.peek_str("connectedlinenum");
    // Asterisk reports these from the hanging-up channel's point of view, so on the called
    // leg they are swapped; only "both are extensions" (internal) survives the swap.
    if let (Some(caller), Some(callee)) = (&caller_number, &callee_number) {
        if channel::is_extension_number(caller) && channel::is_extension_number(callee) {
            data.direction = Direction::Internal;
        }
    }
    data.caller = fields.take_phone("calleridnum");
    data.callee = fields.take_phone("connectedlinenum");
    data.hangup_cause = fields
        .take_first_str(&["cause", "hangupcause", "hangupCause"])
        .or_else(|| fields.take_str("cause-txt"));
    outcome::hangup(&mut data);
    data.vendor_fields = fields.into_vendor_fields();
    Ok(Draft::new(EventType::CallEnded, time, data))
}

fn take_uniqueid(fields: &mut Fields) -> Result<String> {
    fields
        .take_str("uniqueid")
        .ok_or(MapError::MissingField("uniqueid"))
}

/// Maps caller and callee, and infers the direction and agent extension from the channels.
fn take_dial_parties(fields: &mut Fields, data: &mut CallEventData) {
    let caller_side = channel::classify(
        fields.peek_str("channel").as_deref(),
        fields.peek_str("calleridnum").as_deref(),
    );
    let callee_channel = fields
        .peek_str("destchannel")
        .or_else(|| fields.peek_str("dialstring"));
    let callee_number = fields
        .peek_str("destcalleridnum")
        .or_else(|| fields.peek_str("destexten"));
    let callee_side = channel::classify(callee_channel.as_deref(), callee_number.as_deref());
    data.direction = channel::direction(&caller_side, &callee_side);
    data.agent = channel::agent_extension(caller_side, callee_side).map(extension_agent);
    data.caller = fields.take_phone("calleridnum");
    data.callee = take_first_phone(fields, &["destcalleridnum", "destexten"]);
}

/// Maps an Asterisk `DIALSTATUS` / `DialEnd` status; unknown values (the doc's own example
/// `hangup`, `ABORT`, `CONTINUE`, `GOTO`) say nothing about the call's outcome.
fn dial_status(raw: &str) -> DispositionValue {
    let normalized: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    match normalized.as_str() {
        "ANSWER" | "ANSWERED" => DispositionValue::Answered,
        "BUSY" => DispositionValue::Busy,
        "NOANSWER" => DispositionValue::NoAnswer,
        "CANCEL" => DispositionValue::Abandoned,
        "CONGESTION" | "CHANUNAVAIL" | "INVALIDARGS" => DispositionValue::Failed,
        "DONTCALL" | "TORTURE" => DispositionValue::Rejected,
        _ => DispositionValue::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dial_status_table() {
        for (raw, expected) in [
            ("ANSWER", DispositionValue::Answered),
            ("answer", DispositionValue::Answered),
            ("BUSY", DispositionValue::Busy),
            ("NOANSWER", DispositionValue::NoAnswer),
            ("NO ANSWER", DispositionValue::NoAnswer),
            ("CANCEL", DispositionValue::Abandoned),
            ("CONGESTION", DispositionValue::Failed),
            ("CHANUNAVAIL", DispositionValue::Failed),
            ("INVALIDARGS", DispositionValue::Failed),
            ("DONTCALL", DispositionValue::Rejected),
            ("TORTURE", DispositionValue::Rejected),
            ("hangup", DispositionValue::Unknown),
            ("ABORT", DispositionValue::Unknown),
            ("CONTINUE", DispositionValue::Unknown),
            ("GOTO", DispositionValue::Unknown),
            ("拒接", DispositionValue::Unknown),
        ] {
            assert_eq!(dial_status(raw), expected, "{raw}");
        }
    }
}
