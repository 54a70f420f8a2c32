//! The value types inside [`crate::CallEventData`]: numbers, agents, closed enums with raw values.

use serde::{Deserialize, Serialize};

/// Direction of a call from the call center's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    Internal,
    Unknown,
}

impl Direction {
    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
            Direction::Unknown => "unknown",
        }
    }
}

/// A phone number as received, with a normalized form where one is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneNumber {
    /// Exactly as the vendor sent it (numbers sent as JSON numbers are rendered in decimal).
    pub raw: String,
    /// E.164 (`+8617319132391`) when the number is unambiguously a dialable public number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e164: Option<String>,
    /// What kind of number it looks like.
    pub kind: NumberKind,
}

/// The kind of a [`PhoneNumber`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    /// A mainland-China mobile number.
    Mobile,
    /// A mainland-China landline with its area code.
    Landline,
    /// A national service number (400/800) or a short service code (95xxx, 10086 ...).
    Service,
    /// An international number written with `+` or `00`.
    International,
    /// A PBX extension or agent number (2 to 6 digits).
    Extension,
    /// Anything else (SIP URIs, `s`, local numbers without an area code).
    Unknown,
}

/// The agent involved in an event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The agent's number (工号).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// The agent's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The extension / phone the agent uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// An agent's state: a closed value plus the vendor's own code and label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    /// The canonical state.
    pub value: AgentState,
    /// The vendor's code, as sent (`"5"`, `"17"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_code: Option<String>,
    /// The vendor's label, as sent (`"整理"`, `"Idle"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_label: Option<String>,
}

/// Canonical agent states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Idle,
    Busy,
    Dialing,
    Ringing,
    Talking,
    WrapUp,
    Hold,
    Mute,
    Offline,
    Unknown,
}

impl AgentState {
    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Idle => "idle",
            AgentState::Busy => "busy",
            AgentState::Dialing => "dialing",
            AgentState::Ringing => "ringing",
            AgentState::Talking => "talking",
            AgentState::WrapUp => "wrap_up",
            AgentState::Hold => "hold",
            AgentState::Mute => "mute",
            AgentState::Offline => "offline",
            AgentState::Unknown => "unknown",
        }
    }
}

/// A call's outcome: a closed value plus the vendor's raw status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disposition {
    /// The canonical outcome.
    pub value: DispositionValue,
    /// The vendor's status, as sent (`"ANSWER"`, `"queueLeak"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Canonical call outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispositionValue {
    Answered,
    NoAnswer,
    Busy,
    Abandoned,
    Failed,
    Rejected,
    Voicemail,
    Blocked,
    Unknown,
}

impl DispositionValue {
    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DispositionValue::Answered => "answered",
            DispositionValue::NoAnswer => "no_answer",
            DispositionValue::Busy => "busy",
            DispositionValue::Abandoned => "abandoned",
            DispositionValue::Failed => "failed",
            DispositionValue::Rejected => "rejected",
            DispositionValue::Voicemail => "voicemail",
            DispositionValue::Blocked => "blocked",
            DispositionValue::Unknown => "unknown",
        }
    }
}

/// Who hung up: a closed value plus the vendor's raw value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupSide {
    /// The canonical side.
    pub value: HangupSideValue,
    /// The vendor's value, as sent (`"AGENT"`, `"caller"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Canonical hangup sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupSideValue {
    Agent,
    Customer,
    Caller,
    Callee,
    System,
    Unknown,
}

/// A queue / skill group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// The vendor's queue id or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The queue's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
