//! The UinCall enum tables: `command`, `calldirection`, `call_result` of the call-event push,
//! and `event` of the sister pushCallEvent product. Matching is trimmed and ASCII
//! case-insensitive; the values as sent stay in `vendor_event` / the `raw` slots.

use callhook_schemas::{Direction, DispositionValue, EventType};

/// The `command` values of the call-event push (the seed document's full list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Command {
    /// The agent asked to dial out (UP) / the platform answered with the call ids (DN).
    AgentDialout,
    /// The agent's state changed (also sent when an agent logs in).
    AgentStatus,
    /// The platform is ringing the agent's phone (first leg of an outbound call).
    CalloutProcess,
    /// The platform is ringing the customer.
    CallProcess,
    /// The customer answered; the conversation began.
    CallTalking,
    /// The agent's call ended.
    CallHangup,
    /// An inbound call is offered to the agent.
    Incoming,
    /// The agent switched answering mode (`agent_type`).
    SetAgentType,
}

impl Command {
    /// Every command, for tests and the proptest.
    #[cfg(test)]
    pub(super) const ALL: [Command; 8] = [
        Command::AgentDialout,
        Command::AgentStatus,
        Command::CalloutProcess,
        Command::CallProcess,
        Command::CallTalking,
        Command::CallHangup,
        Command::Incoming,
        Command::SetAgentType,
    ];

    /// Parses a `command` value; `None` for a command this mapper does not know.
    pub(super) fn parse(text: &str) -> Option<Command> {
        let key = text.trim().to_ascii_lowercase();
        let command = match key.as_str() {
            "agentdialout" => Command::AgentDialout,
            "agentstatus" => Command::AgentStatus,
            "callout_process" => Command::CalloutProcess,
            "call_process" => Command::CallProcess,
            "call_talking" => Command::CallTalking,
            "call_hangup" => Command::CallHangup,
            "incoming" => Command::Incoming,
            "setagenttype" => Command::SetAgentType,
            _ => return None,
        };
        Some(command)
    }

    /// Returns the command as the seed document spells it.
    #[cfg(test)]
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Command::AgentDialout => "agentDialout",
            Command::AgentStatus => "agentstatus",
            Command::CalloutProcess => "callout_process",
            Command::CallProcess => "call_process",
            Command::CallTalking => "call_talking",
            Command::CallHangup => "call_hangup",
            Command::Incoming => "incoming",
            Command::SetAgentType => "setAgentType",
        }
    }

    /// Returns the canonical type of the command's one event.
    pub(super) fn event_type(self) -> EventType {
        match self {
            Command::AgentDialout => EventType::CallInitiated,
            Command::CalloutProcess | Command::CallProcess | Command::Incoming => {
                EventType::CallRinging
            }
            Command::CallTalking => EventType::CallAnswered,
            Command::CallHangup => EventType::CallEnded,
            Command::AgentStatus | Command::SetAgentType => EventType::AgentStatusChanged,
        }
    }

    /// Returns the direction the command itself implies, used when `calldirection` is absent
    /// or unrecognized: a dial-out and the two ringing legs of it are outbound by definition,
    /// `incoming` is inbound; the others occur in both directions.
    pub(super) fn implied_direction(self) -> Direction {
        match self {
            Command::AgentDialout | Command::CalloutProcess | Command::CallProcess => {
                Direction::Outbound
            }
            Command::Incoming => Direction::Inbound,
            Command::CallTalking
            | Command::CallHangup
            | Command::AgentStatus
            | Command::SetAgentType => Direction::Unknown,
        }
    }
}

/// Parses `calldirection` (`"call out"`, `"call in"`); white space, `_`, `-` and case are
/// ignored so `"Call_Out"` or `"callout"` also match. `None` for any other value.
pub(super) fn parse_call_direction(text: &str) -> Option<Direction> {
    let key: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    match key.as_str() {
        "callout" | "out" | "outbound" => Some(Direction::Outbound),
        "callin" | "in" | "inbound" => Some(Direction::Inbound),
        _ => None,
    }
}

/// What a `call_result` value says about the call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallResult {
    /// `-1`: no result yet (every example in the seed carries it).
    Pending,
    /// `0`: the platform reports the call attempt succeeded (not necessarily answered).
    Success,
    /// `1` or `2`: the line could not be reached (线路不通).
    LineFailure,
    /// Any other value, numeric or not.
    Other,
}

impl CallResult {
    /// Classifies a `call_result` text (`"1"`, `"-1"`, `"1.0"` from a float).
    pub(super) fn parse(text: &str) -> CallResult {
        let trimmed = text.trim();
        let code = trimmed.parse::<i64>().ok().or_else(|| {
            trimmed
                .parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e6)
                .map(|f| f as i64)
        });
        match code {
            Some(-1) => CallResult::Pending,
            Some(0) => CallResult::Success,
            Some(1 | 2) => CallResult::LineFailure,
            _ => CallResult::Other,
        }
    }

    /// Returns the disposition this result gives an event, `None` when it gives none.
    /// A line failure is the call's outcome whichever event reports it (a failed dial-out
    /// response may be the last push of that call). Success and unknown values are an outcome
    /// only on `call_hangup`, where they become `unknown` with the raw value: "success" means
    /// the platform placed the call, not that anybody answered.
    pub(super) fn disposition(self, is_hangup: bool) -> Option<DispositionValue> {
        match self {
            CallResult::LineFailure => Some(DispositionValue::Failed),
            CallResult::Success | CallResult::Other if is_hangup => Some(DispositionValue::Unknown),
            CallResult::Pending | CallResult::Success | CallResult::Other => None,
        }
    }
}

/// The `event` values of the sister product's pushCallEvent (U2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushEvent {
    /// A call rings (is offered to an agent / extension).
    Alert,
    /// The call is put through to another agent / number.
    Transfer,
    /// A transfer attempt failed; the call goes on where it was.
    TransferFail,
    /// The call was answered.
    Connected,
    /// The call ended.
    Disconnected,
    /// An outbound call was started.
    Callout,
    /// The outbound call was answered.
    CalloutAnswer,
    /// The outbound call was hung up / dropped.
    CalloutDropped,
}

impl PushEvent {
    /// Every event, for tests and the proptest.
    #[cfg(test)]
    pub(super) const ALL: [PushEvent; 8] = [
        PushEvent::Alert,
        PushEvent::Transfer,
        PushEvent::TransferFail,
        PushEvent::Connected,
        PushEvent::Disconnected,
        PushEvent::Callout,
        PushEvent::CalloutAnswer,
        PushEvent::CalloutDropped,
    ];

    /// Parses an `event` value; `None` for an event this mapper does not know.
    pub(super) fn parse(text: &str) -> Option<PushEvent> {
        let key = text.trim().to_ascii_lowercase();
        let event = match key.as_str() {
            "alert" => PushEvent::Alert,
            "transfer" => PushEvent::Transfer,
            "transferfail" => PushEvent::TransferFail,
            "connected" => PushEvent::Connected,
            "disconnected" => PushEvent::Disconnected,
            "callout" => PushEvent::Callout,
            "calloutanswer" => PushEvent::CalloutAnswer,
            "calloutdropped" => PushEvent::CalloutDropped,
            _ => return None,
        };
        Some(event)
    }

    /// Returns the event as documented.
    #[cfg(test)]
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PushEvent::Alert => "alert",
            PushEvent::Transfer => "transfer",
            PushEvent::TransferFail => "transferfail",
            PushEvent::Connected => "connected",
            PushEvent::Disconnected => "disconnected",
            PushEvent::Callout => "callout",
            PushEvent::CalloutAnswer => "calloutanswer",
            PushEvent::CalloutDropped => "calloutdropped",
        }
    }

    /// Returns the canonical type, or `None` for `transferfail`: no canonical type says "a
    /// transfer attempt failed but the call goes on" (`call.ended` would end the call).
    pub(super) fn event_type(self) -> Option<EventType> {
        match self {
            PushEvent::Alert | PushEvent::Transfer => Some(EventType::CallRinging),
            PushEvent::Connected | PushEvent::CalloutAnswer => Some(EventType::CallAnswered),
            PushEvent::Disconnected | PushEvent::CalloutDropped => Some(EventType::CallEnded),
            PushEvent::Callout => Some(EventType::CallInitiated),
            PushEvent::TransferFail => None,
        }
    }

    /// Returns the direction the event name implies (only the `callout*` family does).
    pub(super) fn implied_direction(self) -> Direction {
        match self {
            PushEvent::Callout | PushEvent::CalloutAnswer | PushEvent::CalloutDropped => {
                Direction::Outbound
            }
            PushEvent::Alert
            | PushEvent::Transfer
            | PushEvent::TransferFail
            | PushEvent::Connected
            | PushEvent::Disconnected => Direction::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_commands_round_trip_and_ignore_case() {
        for command in Command::ALL {
            assert_eq!(Command::parse(command.as_str()), Some(command));
            assert_eq!(
                Command::parse(&command.as_str().to_ascii_uppercase()),
                Some(command)
            );
        }
        assert_eq!(
            Command::parse(" agentDialout "),
            Some(Command::AgentDialout)
        );
        assert_eq!(Command::parse("call_transfer"), None);
        assert_eq!(Command::parse(""), None);
    }

    #[test]
    fn test_command_types_and_directions() {
        let table = [
            (
                "agentDialout",
                EventType::CallInitiated,
                Direction::Outbound,
            ),
            (
                "agentstatus",
                EventType::AgentStatusChanged,
                Direction::Unknown,
            ),
            (
                "callout_process",
                EventType::CallRinging,
                Direction::Outbound,
            ),
            ("call_process", EventType::CallRinging, Direction::Outbound),
            ("call_talking", EventType::CallAnswered, Direction::Unknown),
            ("call_hangup", EventType::CallEnded, Direction::Unknown),
            ("incoming", EventType::CallRinging, Direction::Inbound),
            (
                "setAgentType",
                EventType::AgentStatusChanged,
                Direction::Unknown,
            ),
        ];
        for (text, event_type, direction) in table {
            let command = Command::parse(text).unwrap();
            assert_eq!(command.event_type(), event_type, "{text}");
            assert_eq!(command.implied_direction(), direction, "{text}");
        }
    }

    #[test]
    fn test_call_direction_table() {
        for text in [
            "call out",
            "CALL OUT",
            " call  out ",
            "call_out",
            "callout",
            "outbound",
        ] {
            assert_eq!(
                parse_call_direction(text),
                Some(Direction::Outbound),
                "{text}"
            );
        }
        for text in ["call in", "Call In", "call-in", "callin", "inbound"] {
            assert_eq!(
                parse_call_direction(text),
                Some(Direction::Inbound),
                "{text}"
            );
        }
        for text in ["", "call", "internal", "呼出"] {
            assert_eq!(parse_call_direction(text), None, "{text}");
        }
    }

    #[test]
    fn test_call_result_table() {
        assert_eq!(CallResult::parse("-1"), CallResult::Pending);
        assert_eq!(CallResult::parse("0"), CallResult::Success);
        assert_eq!(CallResult::parse("1"), CallResult::LineFailure);
        assert_eq!(CallResult::parse(" 2 "), CallResult::LineFailure);
        assert_eq!(CallResult::parse("2.0"), CallResult::LineFailure);
        assert_eq!(CallResult::parse("3"), CallResult::Other);
        assert_eq!(CallResult::parse("busy"), CallResult::Other);
        assert_eq!(CallResult::parse("1e300"), CallResult::Other);
    }

    #[test]
    fn test_call_result_dispositions() {
        use DispositionValue::{Failed, Unknown};
        let table = [
            (CallResult::Pending, None, None),
            (CallResult::Success, None, Some(Unknown)),
            (CallResult::LineFailure, Some(Failed), Some(Failed)),
            (CallResult::Other, None, Some(Unknown)),
        ];
        for (result, on_other_events, on_hangup) in table {
            assert_eq!(result.disposition(false), on_other_events, "{result:?}");
            assert_eq!(result.disposition(true), on_hangup, "{result:?}");
        }
    }

    #[test]
    fn test_push_events_table() {
        for event in PushEvent::ALL {
            assert_eq!(PushEvent::parse(event.as_str()), Some(event));
            assert_eq!(
                PushEvent::parse(&event.as_str().to_ascii_uppercase()),
                Some(event)
            );
        }
        assert_eq!(PushEvent::parse("hangup"), None);
        assert_eq!(PushEvent::Alert.event_type(), Some(EventType::CallRinging));
        assert_eq!(PushEvent::TransferFail.event_type(), None);
        assert_eq!(
            PushEvent::CalloutDropped.event_type(),
            Some(EventType::CallEnded)
        );
        assert_eq!(PushEvent::Callout.implied_direction(), Direction::Outbound);
        assert_eq!(PushEvent::Connected.implied_direction(), Direction::Unknown);
    }
}
