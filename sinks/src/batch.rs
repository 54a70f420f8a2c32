//! The unit of work a sink commits: mapped pushes, dead letters and the offsets they came from.
//!
//! A [`SinkBatch`] is all-or-nothing: a sink either records every item and the offsets, or
//! nothing at all. The consumer builds a batch from consecutive raw-log records and only moves
//! on (or commits upstream offsets) once the sink has confirmed it.

use callhook_schemas::CloudEvent;
use chrono::{DateTime, Utc};

/// Everything a consumer hands a sink in one commit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SinkBatch {
    /// The consumer (group) name the offsets belong to, e.g. `normalizer`.
    pub consumer: String,
    /// `(partition, next_offset)` per raw-log partition this batch advanced: the offset of the
    /// first record *not* covered by the batch, i.e. where to resume.
    pub offsets: Vec<(u32, u64)>,
    /// The mapped pushes and dead letters, in consumption order.
    pub items: Vec<SinkItem>,
}

/// One consumed raw record, as the sink should store it.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkItem {
    /// A push that mapped to zero or more canonical events.
    Push {
        /// Where its raw record sits (`<partition>:<offset>`, or `<topic>:<partition>:<offset>`
        /// in Kafka mode): the dead letter's pointer if a sink refuses the push's rows.
        raw_ref: String,
        /// The configured source name the push arrived on (the events' `data.source_name`).
        source: String,
        /// The push's dedupe key within `source`: a second push with the same key is a
        /// duplicate and its events are skipped.
        dedupe_key: String,
        /// When the receiver had the whole push; stored as the events' `received_at` and the
        /// dedupe key's `seen_at`.
        received_at: DateTime<Utc>,
        /// The canonical events the push mapped to, each with its `data` as JSON.
        events: Vec<SinkEvent>,
    },
    /// A record that could not be mapped.
    DeadLetter {
        /// Where the raw record sits, `<partition>:<offset>` (unique per record).
        raw_ref: String,
        /// The configured source name the push arrived on.
        source: String,
        /// A bounded reason code (`unknown_event`, `missing_field`, ...); also a metric label.
        reason: String,
        /// Human-readable detail (may name fields; never the payload).
        detail: String,
        /// When the receiver had the whole push.
        received_at: DateTime<Utc>,
    },
}

/// A canonical event with its `data` serialized once, by the mapping stage: every sink stores
/// or sends these bytes, none encodes the event again.
///
/// Batches wait between the mapping and the sinks, so what a `SinkEvent` holds is what a
/// batch costs in memory per event. Two things are trimmed by [`SinkEvent::encode`]:
/// `data_json` has no spare capacity (serializing grows it by doubling), and
/// `event.data.vendor_fields` is moved out: the fields are in `data_json`, and no sink reads
/// them from the struct (the `calls` fold reads `correlation`, which stays).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkEvent {
    /// The event, with `data.vendor_fields` empty (they are in `data_json`).
    pub event: CloudEvent,
    /// `serde_json` of `event.data` as mapped, `vendor_fields` included.
    pub data_json: String,
}

impl SinkEvent {
    /// Serializes the event's data, then drops the vendor fields from the struct.
    pub fn encode(mut event: CloudEvent) -> Result<SinkEvent, serde_json::Error> {
        let mut data_json = serde_json::to_string(&event.data)?;
        data_json.shrink_to_fit();
        event.data.vendor_fields = serde_json::Map::new();
        Ok(SinkEvent { event, data_json })
    }

    /// Serializes the data of each event.
    pub fn encode_all(events: Vec<CloudEvent>) -> Result<Vec<SinkEvent>, serde_json::Error> {
        events.into_iter().map(SinkEvent::encode).collect()
    }
}

/// How a stored event is looked up: its id within its source and subject.
///
/// The SQLite sink's dedupe is the unique index on these three (`events_key`), not on the id
/// alone: a call's events sit together in it, so a batch writes about one of its pages per
/// call rather than one per event at a random place (ids are hashes). For the same push the
/// three are the same (the id hashes the source and the push's dedupe key, the subject is
/// derived from the push). PostgreSQL keys on the id alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKey<'a> {
    /// `data.source_name`.
    pub source_name: &'a str,
    /// The CloudEvents `subject`.
    pub subject: &'a str,
    /// The CloudEvents `id`.
    pub id: &'a str,
}

impl<'a> EventKey<'a> {
    /// The key of `event`.
    pub fn of(event: &'a CloudEvent) -> EventKey<'a> {
        EventKey {
            source_name: &event.data.source_name,
            subject: &event.subject,
            id: &event.id,
        }
    }
}

/// What one [`SinkBatch`] commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitOutcome {
    /// Events newly written.
    pub events_inserted: u64,
    /// Events of non-duplicate pushes that were already stored (same event id), e.g. after a
    /// replay past the dedupe window.
    pub events_already_stored: u64,
    /// Pushes skipped because their dedupe key was already recorded.
    pub duplicates_skipped: u64,
    /// Dead letters newly written.
    pub dead_letters_written: u64,
    /// Dead letters skipped because their `raw_ref` was already recorded (a replay).
    pub dead_letters_already_stored: u64,
    /// Distinct `(source, call_id)` rows of `calls` recomputed.
    pub calls_touched: u64,
    /// Rows of `agents` inserted or replaced by a newer status.
    pub agents_updated: u64,
}
