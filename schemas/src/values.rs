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

// --- Since v1.1: conversation and leg, abandon point, disconnect reason, IVR path. ---

/// Which leg of a customer conversation a call record is (since v1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// The customer's own call: the inbound call, or the outbound call to the customer.
    Customer,
    /// A separate record of the agent's side (the agent leg of a callback or of a dial-out).
    Agent,
    /// The call after a transfer: a record that continues a previous leg.
    Transfer,
    /// A consultation: an agent consulting another agent or number while the customer waits.
    Consult,
    /// The push does not say.
    Unknown,
}

impl Leg {
    /// Every leg, in declaration order.
    pub const ALL: [Leg; 5] = [
        Leg::Customer,
        Leg::Agent,
        Leg::Transfer,
        Leg::Consult,
        Leg::Unknown,
    ];

    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Customer => "customer",
            Leg::Agent => "agent",
            Leg::Transfer => "transfer",
            Leg::Consult => "consult",
            Leg::Unknown => "unknown",
        }
    }
}

/// Where a caller gave up on a call that no one answered (since v1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbandonPoint {
    /// In the IVR, before reaching a queue or an agent.
    Ivr,
    /// Waiting in a queue, before any agent was offered the call.
    Queue,
    /// While an agent's phone rang.
    AgentRinging,
    /// Not abandoned: the call was answered (or did not reach the caller's choice at all).
    #[serde(rename = "none")]
    NotAbandoned,
}

impl AbandonPoint {
    /// Every value, in declaration order.
    pub const ALL: [AbandonPoint; 4] = [
        AbandonPoint::Ivr,
        AbandonPoint::Queue,
        AbandonPoint::AgentRinging,
        AbandonPoint::NotAbandoned,
    ];

    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AbandonPoint::Ivr => "ivr",
            AbandonPoint::Queue => "queue",
            AbandonPoint::AgentRinging => "agent_ringing",
            AbandonPoint::NotAbandoned => "none",
        }
    }
}

/// Why a call ended: a closed value plus the vendor value that decided it (since v1.1).
///
/// The same `{value, raw}` shape as [`Disposition`] and [`HangupSide`]. `raw` is a copy of the
/// vendor's value as sent; the value itself also stays where v1 put it (`hangup_cause`,
/// `hangup_side.raw`, `disposition.raw` or `vendor_fields`), so no v1 field changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectReason {
    /// The canonical reason.
    pub value: DisconnectReasonValue,
    /// The vendor's value that decided it, as sent (`"AGENT"`, `"decline"`, `"486"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Canonical disconnect reasons (since v1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReasonValue {
    /// The customer hung up.
    CustomerHangup,
    /// The agent hung up.
    AgentHangup,
    /// The platform ended the call (no agent available, limits, timeouts of its own).
    System,
    /// The called side did not answer.
    NoAnswer,
    /// The called side was busy.
    Busy,
    /// The called side, or the network on its behalf, refused the call.
    Rejected,
    /// The call could not be placed or was cut by the network (line failure, unreachable).
    NetworkError,
    /// The call left this leg by being transferred or forwarded.
    Transfer,
    /// The vendor's value is not one callhook knows.
    Unknown,
}

impl DisconnectReasonValue {
    /// Every value, in declaration order.
    pub const ALL: [DisconnectReasonValue; 9] = [
        DisconnectReasonValue::CustomerHangup,
        DisconnectReasonValue::AgentHangup,
        DisconnectReasonValue::System,
        DisconnectReasonValue::NoAnswer,
        DisconnectReasonValue::Busy,
        DisconnectReasonValue::Rejected,
        DisconnectReasonValue::NetworkError,
        DisconnectReasonValue::Transfer,
        DisconnectReasonValue::Unknown,
    ];

    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReasonValue::CustomerHangup => "customer_hangup",
            DisconnectReasonValue::AgentHangup => "agent_hangup",
            DisconnectReasonValue::System => "system",
            DisconnectReasonValue::NoAnswer => "no_answer",
            DisconnectReasonValue::Busy => "busy",
            DisconnectReasonValue::Rejected => "rejected",
            DisconnectReasonValue::NetworkError => "network_error",
            DisconnectReasonValue::Transfer => "transfer",
            DisconnectReasonValue::Unknown => "unknown",
        }
    }
}

/// One IVR node the caller passed, with the keys pressed there (since v1.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrStep {
    /// The vendor's node id (7moor IVRKEY node, CooCenter `ivrId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's display name (CooCenter `ivrName`, 7moor v7 `ivrName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The DTMF keys pressed at the node, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
}
