//! `extensionstatus` → `agent.status_changed`: an Asterisk extension hint state.
//!
//! `status` is Asterisk's hint-state bit mask (`AST_EXTENSION_*`): 0 idle, 1 in use, 2 busy,
//! 4 unavailable, 8 ringing, 16 on hold, combined (9 = in use + ringing, 17 = in use + on hold),
//! -1 not found / deactivated, -2 removed. `statustext` is its label (`Idle`, `InUse`, `Busy`,
//! `Unavailable`, `Ringing`, `InUse&Ringing`, `Hold`, `InUse&Hold`, `Unknown`); one doc version
//! sends only the label, so the label is read when the code is absent or says nothing.

use callhook_schemas::{AgentState, AgentStatus, CallEventData, EventType};

use super::extension_agent;
use crate::build::Draft;
use crate::error::{MapError, Result};
use crate::fields::Fields;

/// Hint bits in the order they win when several are set: a held call outranks the active one,
/// an active call outranks a new one ringing, and any call outranks busy / unavailable.
const BIT_PRECEDENCE: [(i64, AgentState); 5] = [
    (16, AgentState::Hold),
    (1, AgentState::Talking),
    (8, AgentState::Ringing),
    (2, AgentState::Busy),
    (4, AgentState::Offline),
];

/// Maps an `extensionstatus` push; the extension is the agent and cannot be missing.
pub(super) fn extension_status(mut fields: Fields, mut data: CallEventData) -> Result<Draft> {
    let exten = fields
        .take_str("exten")
        .ok_or(MapError::MissingField("exten"))?;
    data.agent = Some(extension_agent(exten));
    let raw_code = fields.take_str("status");
    let raw_label = fields.take_str("statustext");
    if raw_code.is_some() || raw_label.is_some() {
        data.agent_status = Some(AgentStatus {
            value: state_of(raw_code.as_deref(), raw_label.as_deref()),
            raw_code,
            raw_label,
        });
    }
    let time = fields.take_time("timestamp");
    data.vendor_fields = fields.into_vendor_fields();
    Ok(Draft::new(EventType::AgentStatusChanged, time, data))
}

/// The code decides when it is a number that maps to a state; else the label.
fn state_of(code: Option<&str>, label: Option<&str>) -> AgentState {
    let from_code = code
        .and_then(|text| text.parse::<i64>().ok())
        .map_or(AgentState::Unknown, hint_state);
    if from_code != AgentState::Unknown {
        return from_code;
    }
    label.map_or(AgentState::Unknown, label_state)
}

/// Decodes an Asterisk hint state code.
fn hint_state(code: i64) -> AgentState {
    match code {
        0 => AgentState::Idle,
        -2 => AgentState::Offline,
        code if code < 0 => AgentState::Unknown,
        code => BIT_PRECEDENCE
            .iter()
            .find(|(bit, _)| code & bit != 0)
            .map_or(AgentState::Unknown, |(_, state)| *state),
    }
}

/// Maps a hint state label: Asterisk's English ones, device-state spellings, and the
/// Chinese words of the CooCenter doc (待机, 通话中, 忙线, 离线, 振铃中, 保持).
fn label_state(label: &str) -> AgentState {
    let normalized: String = label
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect::<String>()
        .to_lowercase();
    match normalized.as_str() {
        "idle" | "notinuse" | "待机" | "空闲" => AgentState::Idle,
        "inuse" | "inuse&ringing" | "ringinuse" | "通话中" => AgentState::Talking,
        "busy" | "忙线" | "忙碌" => AgentState::Busy,
        "unavailable" | "removed" | "离线" => AgentState::Offline,
        "ringing" | "振铃中" | "振铃" => AgentState::Ringing,
        "hold" | "onhold" | "inuse&hold" | "inuse&onhold" | "保持" => AgentState::Hold,
        _ => AgentState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hint_codes() {
        for (code, expected) in [
            (0, AgentState::Idle),
            (1, AgentState::Talking),
            (2, AgentState::Busy),
            (4, AgentState::Offline),
            (8, AgentState::Ringing),
            (16, AgentState::Hold),
            (9, AgentState::Talking),
            (17, AgentState::Hold),
            (3, AgentState::Talking),
            (10, AgentState::Ringing),
            (6, AgentState::Busy),
            (24, AgentState::Hold),
            (-1, AgentState::Unknown),
            (-2, AgentState::Offline),
            (-3, AgentState::Unknown),
            (32, AgentState::Unknown),
            (33, AgentState::Talking),
        ] {
            assert_eq!(hint_state(code), expected, "{code}");
        }
    }

    #[test]
    fn test_labels() {
        for (label, expected) in [
            ("Idle", AgentState::Idle),
            ("NOT_INUSE", AgentState::Idle),
            ("InUse", AgentState::Talking),
            ("In Use", AgentState::Talking),
            ("InUse&Ringing", AgentState::Talking),
            ("Busy", AgentState::Busy),
            ("Unavailable", AgentState::Offline),
            ("Ringing", AgentState::Ringing),
            ("Hold", AgentState::Hold),
            ("OnHold", AgentState::Hold),
            ("InUse&Hold", AgentState::Hold),
            ("振铃中", AgentState::Ringing),
            ("Unknown", AgentState::Unknown),
            ("Sleeping", AgentState::Unknown),
        ] {
            assert_eq!(label_state(label), expected, "{label}");
        }
    }

    #[test]
    fn test_code_wins_unless_it_says_nothing() {
        assert_eq!(state_of(Some("8"), Some("Idle")), AgentState::Ringing);
        assert_eq!(state_of(Some("-1"), Some("Ringing")), AgentState::Ringing);
        assert_eq!(state_of(Some("x"), Some("Busy")), AgentState::Busy);
        assert_eq!(state_of(None, Some("InUse")), AgentState::Talking);
        assert_eq!(state_of(Some("32"), None), AgentState::Unknown);
        assert_eq!(state_of(None, None), AgentState::Unknown);
    }
}
