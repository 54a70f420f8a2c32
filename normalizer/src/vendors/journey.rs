//! Helpers shared by the vendors' model v1.1 derivations (conversation and leg, queue segment,
//! abandon point, disconnect reason, IVR path). Each vendor's rules are in its own
//! `journey.rs` / `outcome.rs` and in `normalizer/docs/<vendor>.md`.

use callhook_schemas::{
    CallEventData, Direction, DisconnectReason, DisconnectReasonValue, HangupSideValue, IvrStep,
};

use crate::fields::Fields;

/// Returns a disconnect reason keeping the deciding vendor value.
pub fn reason(value: DisconnectReasonValue, raw: impl Into<String>) -> DisconnectReason {
    DisconnectReason {
        value,
        raw: Some(raw.into()),
    }
}

/// Who hung up, as a disconnect reason. `caller` / `callee` are read with the call's
/// direction: the caller of an inbound call is the customer, of an outbound call the agent's
/// side; with no known direction they say nothing.
pub fn from_hangup_side(side: HangupSideValue, direction: Direction) -> DisconnectReasonValue {
    use DisconnectReasonValue as R;
    match (side, direction) {
        (HangupSideValue::Agent, _) => R::AgentHangup,
        (HangupSideValue::Customer, _) => R::CustomerHangup,
        (HangupSideValue::System, _) => R::System,
        (HangupSideValue::Caller, Direction::Inbound)
        | (HangupSideValue::Callee, Direction::Outbound) => R::CustomerHangup,
        (HangupSideValue::Caller, Direction::Outbound)
        | (HangupSideValue::Callee, Direction::Inbound) => R::AgentHangup,
        _ => R::Unknown,
    }
}

/// Completes the queue segment from what the push gave: a call that joined a queue left it
/// when it was answered, or else when it ended (Amazon Connect's dequeue time); the wait is
/// the difference when the push did not state it. A "left" before "joined" (clock skew) is
/// not a time.
pub fn complete_queue_segment(data: &mut CallEventData) {
    let Some(joined) = data.queue_joined_at else {
        return;
    };
    if data.queue_left_at.is_none() {
        data.queue_left_at = data
            .answered_at
            .or(data.ended_at)
            .filter(|left| *left >= joined);
    }
    if data.queue_seconds.is_none() {
        data.queue_seconds = data
            .queue_left_at
            .and_then(|left| u64::try_from((left - joined).num_seconds()).ok());
    }
}

/// Takes one IVR node (`node`, `name`, `keys` fields) into a step. A node needs an id or a
/// name: keys alone (CooCenter sends `ivrDtmf: '0'` on calls that met no IVR) stay in
/// `vendor_fields` as sent.
pub fn take_ivr_step(
    fields: &mut Fields,
    node_key: &str,
    name_key: Option<&str>,
    keys_key: Option<&str>,
) -> Option<IvrStep> {
    let has_node = fields.peek_str(node_key).is_some()
        || name_key.is_some_and(|key| fields.peek_str(key).is_some());
    if !has_node {
        return None;
    }
    Some(IvrStep {
        node: fields.take_str(node_key),
        name: name_key.and_then(|key| fields.take_str(key)),
        keys: keys_key.and_then(|key| fields.take_str(key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};

    #[test]
    fn test_queue_segment_ends_at_answer_else_end() {
        let joined = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut data = CallEventData::new("7moor", "7moor.v2", "Hangup", "s");
        data.queue_joined_at = Some(joined);
        data.answered_at = Some(joined + TimeDelta::seconds(12));
        data.ended_at = Some(joined + TimeDelta::seconds(90));
        complete_queue_segment(&mut data);
        assert_eq!(data.queue_left_at, data.answered_at);
        assert_eq!(data.queue_seconds, Some(12));
        let mut abandoned = CallEventData::new("7moor", "7moor.v2", "Hangup", "s");
        abandoned.queue_joined_at = Some(joined);
        abandoned.ended_at = Some(joined - TimeDelta::seconds(1));
        complete_queue_segment(&mut abandoned);
        assert_eq!(
            (abandoned.queue_left_at, abandoned.queue_seconds),
            (None, None)
        );
    }

    #[test]
    fn test_hangup_sides_read_with_direction() {
        use DisconnectReasonValue as R;
        let side = from_hangup_side;
        assert_eq!(
            side(HangupSideValue::Caller, Direction::Inbound),
            R::CustomerHangup
        );
        assert_eq!(
            side(HangupSideValue::Caller, Direction::Outbound),
            R::AgentHangup
        );
        assert_eq!(
            side(HangupSideValue::Callee, Direction::Inbound),
            R::AgentHangup
        );
        assert_eq!(
            side(HangupSideValue::Caller, Direction::Unknown),
            R::Unknown
        );
        assert_eq!(
            side(HangupSideValue::Agent, Direction::Unknown),
            R::AgentHangup
        );
    }
}
