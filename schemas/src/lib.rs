//! The canonical call-event model, version 1.
//!
//! Every vendor dialect is mapped onto these types; downstream consumers (the SQLite sink, the
//! Kafka topics) see nothing else. The envelope is a CloudEvents 1.0 event ([`CloudEvent`]); its
//! `data` is a [`CallEventData`]. The JSON Schema in `schemas/call-event.v1.schema.json` describes
//! the same shape and a test keeps the two in sync. The compatibility promise for this model is
//! written in `schemas/README.md`: within a major `schema_version`, fields are only added, never
//! removed, renamed or retyped, and closed enums only grow. Model v1.1 added, within that
//! promise, the conversation and leg, the queue segment, the abandon point, the disconnect
//! reason and the IVR path (`tests/compat_v11.rs` checks it stayed additive).

mod event;
pub mod time;
mod values;

pub use event::{CallEventData, CloudEvent, EventType, TimeSource};
pub use time::canonical_time;
pub use values::{AbandonPoint, DisconnectReason, DisconnectReasonValue, IvrStep, Leg};
pub use values::{
    Agent, AgentState, AgentStatus, Direction, Disposition, DispositionValue, HangupSide,
    HangupSideValue, NumberKind, PhoneNumber, Queue,
};

/// The major version of [`CallEventData`] this crate writes (`data.schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// The CloudEvents `dataschema` attribute of every event of this version.
pub const DATA_SCHEMA_URI: &str = "urn:callhook:schema:call-event:v1";

/// The JSON Schema (draft 2020-12) for a whole canonical event, as shipped in the repository.
pub const JSON_SCHEMA_V1: &str = include_str!("../call-event.v1.schema.json");
