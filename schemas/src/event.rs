//! The CloudEvents 1.0 envelope and the call-event data it carries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::values::{AbandonPoint, DisconnectReason, IvrStep, Leg};
use crate::values::{Agent, AgentStatus, Direction, Disposition, HangupSide, PhoneNumber, Queue};

/// A canonical event in CloudEvents 1.0 structured form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEvent {
    /// Deterministic id: the same vendor push always yields the same id (32 lowercase hex).
    pub id: String,
    /// Always `"1.0"`.
    pub specversion: String,
    /// `<vendor>/<account>`, e.g. `7moor/20000153`; the configured source name stands in for the
    /// account when neither the push nor the source's config carries one.
    pub source: String,
    /// The partition key: the vendor-scoped call id, or `agent/<number>` for agent events.
    pub subject: String,
    /// One of the closed vocabulary in [`EventType`].
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened, UTC RFC 3339, spelled canonically ([`crate::time`]).
    #[serde(serialize_with = "crate::time::serialize")]
    pub time: DateTime<Utc>,
    /// Whether `time` came from the vendor's payload or is the receive time (CloudEvents extension).
    pub timesource: TimeSource,
    /// Always `"application/json"`.
    pub datacontenttype: String,
    /// Names the data schema and its major version ([`crate::DATA_SCHEMA_URI`]).
    pub dataschema: String,
    /// Extension attribute: the version of callhook's mapping that produced the event
    /// (`callhook_normalizer::MAPPING_VERSION`), so that a replay can say what changed and a
    /// consumer can tell old derivations from new. Absent on events mapped before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mappingversion: Option<u32>,
    /// Extension attribute (since v1.1): the event's place among its call's events, 1, 2, 3 ...
    /// in the order callhook first stored them (not the order they happened: that is `time`).
    /// Assigned by the projection sink at first store; absent on events that belong to no call
    /// (agent events) and on events produced before it existed. See `schemas/README.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The call-event payload.
    pub data: CallEventData,
}

/// The closed vocabulary of event types (documented in `schemas/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "call.initiated")]
    CallInitiated,
    #[serde(rename = "call.ringing")]
    CallRinging,
    #[serde(rename = "call.answered")]
    CallAnswered,
    #[serde(rename = "call.ended")]
    CallEnded,
    #[serde(rename = "call.cdr")]
    CallCdr,
    #[serde(rename = "agent.status_changed")]
    AgentStatusChanged,
    #[serde(rename = "agent.logged_in")]
    AgentLoggedIn,
    #[serde(rename = "agent.logged_out")]
    AgentLoggedOut,
    #[serde(rename = "ivr.completed")]
    IvrCompleted,
    #[serde(rename = "call.media_failure")]
    CallMediaFailure,
    /// Since v1.1: callhook saw no `call.ended` or `call.cdr` for the call within its source's
    /// `stale_after` of the call's last event (made by callhook, not by a vendor).
    #[serde(rename = "call.stale")]
    CallStale,
}

impl EventType {
    /// Every event type, in declaration order.
    pub const ALL: [EventType; 11] = [
        EventType::CallInitiated,
        EventType::CallRinging,
        EventType::CallAnswered,
        EventType::CallEnded,
        EventType::CallCdr,
        EventType::AgentStatusChanged,
        EventType::AgentLoggedIn,
        EventType::AgentLoggedOut,
        EventType::IvrCompleted,
        EventType::CallMediaFailure,
        EventType::CallStale,
    ];

    /// Returns the wire name, e.g. `call.ringing` (also a bounded metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallInitiated => "call.initiated",
            EventType::CallRinging => "call.ringing",
            EventType::CallAnswered => "call.answered",
            EventType::CallEnded => "call.ended",
            EventType::CallCdr => "call.cdr",
            EventType::AgentStatusChanged => "agent.status_changed",
            EventType::AgentLoggedIn => "agent.logged_in",
            EventType::AgentLoggedOut => "agent.logged_out",
            EventType::IvrCompleted => "ivr.completed",
            EventType::CallMediaFailure => "call.media_failure",
            EventType::CallStale => "call.stale",
        }
    }

    /// Returns true for the agent events, whose subject is an agent rather than a call.
    pub fn is_agent_event(self) -> bool {
        matches!(
            self,
            EventType::AgentStatusChanged | EventType::AgentLoggedIn | EventType::AgentLoggedOut
        )
    }
}

/// Where the envelope's `time` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// A time field in the vendor's payload.
    Vendor,
    /// The moment callhook received the push (the payload carried no usable time).
    Received,
}

/// The `data` of every canonical event. Absent values are omitted, never `""`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallEventData {
    /// Major version of this data shape ([`crate::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// `7moor`, `coocenter` or `uincall`.
    pub vendor: String,
    /// The vendor API dialect: `7moor.v7`, `7moor.v2`, `coocenter`, `uincall`.
    pub dialect: String,
    /// The original discriminator, as sent (`dialoutRing`, `Hangup`, `dialbegein`, `call_talking/DN`).
    pub vendor_event: String,
    /// The configured callhook source the push arrived on.
    pub source_name: String,
    /// The vendor account: 7moor accountId, UinCall tenant_id, CooCenter mac, or the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The vendor-scoped call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The call this one was transferred from (7moor `refCallSheetId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_call_id: Option<String>,
    /// Direction of the call from the call center's point of view.
    pub direction: Direction,
    /// The calling party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<PhoneNumber>,
    /// The called party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<PhoneNumber>,
    /// The number shown to the called party (外显号码).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_number: Option<PhoneNumber>,
    /// The trunk / DID / service number the call used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk_number: Option<PhoneNumber>,
    /// The agent involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// The agent's state, on agent events and on call events that carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<AgentStatus>,
    /// The queue / skill group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
    /// The call's outcome, where the push says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    /// Who hung up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_side: Option<HangupSide>,
    /// The vendor's hangup / failure cause, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_cause: Option<String>,
    /// When the call started (entered the system / dialing began).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::serialize_option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// When the called side started ringing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::serialize_option"
    )]
    pub ringing_at: Option<DateTime<Utc>>,
    /// When the call was answered.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::serialize_option"
    )]
    pub answered_at: Option<DateTime<Utc>>,
    /// When the call ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::serialize_option"
    )]
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds spent ringing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_seconds: Option<u64>,
    /// Seconds of conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk_seconds: Option<u64>,
    /// Seconds from start to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<u64>,
    /// Seconds waiting in queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_seconds: Option<u64>,
    // --- Since v1.1 (all optional, omitted when absent). ---
    /// The same on every leg of one customer conversation: transfers, consultations, the
    /// agent and customer legs of a callback. Derived per vendor (`normalizer/docs/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Which leg of the conversation this call record is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<Leg>,
    /// When the call joined a queue.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::serialize_option"
    )]
    pub queue_joined_at: Option<DateTime<Utc>>,
    /// When the call left the queue: answered by an agent, or ended there.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::serialize_option"
    )]
    pub queue_left_at: Option<DateTime<Utc>>,
    /// Where the caller gave up, or `none` when the call was not abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandon_point: Option<AbandonPoint>,
    /// Why the call ended, with the vendor value that decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_reason: Option<DisconnectReason>,
    /// The IVR nodes the caller passed and the keys pressed, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ivr_path: Vec<IvrStep>,
    // --- End of the v1.1 fields. ---
    /// Recording URLs (or vendor file paths), in the order the vendor listed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recording_urls: Vec<String>,
    /// Keys the customer's own systems use to find the call (7moor `extras`, `ActionID`,
    /// `WebcallActionID`, `DialoutStrVar`, `CdrVar`, ...), keyed by the vendor's field name.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub correlation: Map<String, Value>,
    /// Every field the vendor sent that is not mapped above, with its value as sent.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vendor_fields: Map<String, Value>,
    /// Since v1.1, on `call.stale` only: why callhook declared the call stale, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
}

impl CallEventData {
    /// Returns an empty data value for a vendor event; mappers fill in the rest.
    pub fn new(vendor: &str, dialect: &str, vendor_event: &str, source_name: &str) -> Self {
        CallEventData {
            schema_version: crate::SCHEMA_VERSION,
            vendor: vendor.to_owned(),
            dialect: dialect.to_owned(),
            vendor_event: vendor_event.to_owned(),
            source_name: source_name.to_owned(),
            account: None,
            call_id: None,
            parent_call_id: None,
            direction: Direction::Unknown,
            caller: None,
            callee: None,
            display_number: None,
            trunk_number: None,
            agent: None,
            agent_status: None,
            queue: None,
            disposition: None,
            hangup_side: None,
            hangup_cause: None,
            started_at: None,
            ringing_at: None,
            answered_at: None,
            ended_at: None,
            ring_seconds: None,
            talk_seconds: None,
            total_seconds: None,
            queue_seconds: None,
            conversation_id: None,
            leg: None,
            queue_joined_at: None,
            queue_left_at: None,
            abandon_point: None,
            disconnect_reason: None,
            ivr_path: Vec::new(),
            recording_urls: Vec::new(),
            correlation: Map::new(),
            vendor_fields: Map::new(),
            stale_reason: None,
        }
    }
}
