//! UinCall's model v1.1 fields (rules and reasons in `normalizer/docs/uincall.md`,
//! "Model v1.1"): conversation and leg, and the disconnect reason `call_result` can say.
//! No UinCall push names a queue time, an IVR or where a caller gave up; the `calls` fold
//! derives the abandon point of an unanswered inbound call from its events instead.

use callhook_schemas::{CallEventData, DisconnectReasonValue as Reason, Leg};

use super::codes::{CallResult, Command, PushEvent};
use crate::vendors::journey::reason;

/// The call-event push: one session (`session_id`, else the call id) is one conversation
/// whose record covers both the agent's and the customer's legs of a dial-out, so every call
/// command is the customer's leg. `call_result` 1 or 2 (线路不通, line failure) is a
/// `network_error` on any command; on `call_hangup` any other result but `-1` (pending) is
/// kept as `unknown`: "success" says the platform placed the call, not who ended it.
pub(super) fn call_event(
    command: Command,
    session_id: Option<String>,
    call_result: Option<String>,
    data: &mut CallEventData,
) {
    if command.event_type().is_agent_event() || data.call_id.is_none() {
        return;
    }
    data.conversation_id = session_id.or_else(|| data.call_id.clone());
    data.leg = Some(Leg::Customer);
    let Some(raw) = call_result else {
        return;
    };
    let value = match CallResult::parse(&raw) {
        CallResult::LineFailure => Reason::NetworkError,
        CallResult::Pending => return,
        CallResult::Success | CallResult::Other if command == Command::CallHangup => {
            Reason::Unknown
        }
        CallResult::Success | CallResult::Other => return,
    };
    data.disconnect_reason = Some(reason(value, raw));
}

/// pushCallEvent: the call id is the conversation (no other key links legs); `transfer`
/// puts the call through to another agent or number, a transfer leg.
pub(super) fn push_call_event(event: PushEvent, data: &mut CallEventData) {
    if data.call_id.is_none() {
        return;
    }
    data.conversation_id = data.call_id.clone();
    data.leg = Some(match event {
        PushEvent::Transfer => Leg::Transfer,
        _ => Leg::Customer,
    });
}
