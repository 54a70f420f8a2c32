//! How canonical events and dead letters are laid out as Kafka records.
//!
//! **Events** follow the CloudEvents 1.0 Kafka protocol binding, *binary* content mode:
//! key = the event's `subject` (the vendor-scoped call id, or `agent/<number>`), so every event
//! of one call lands on one partition, in order; value = the `data` JSON; headers
//! `ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_subject`, `ce_time` (RFC 3339 UTC, spelled as everywhere: `callhook_schemas::time`),
//! `ce_dataschema`, the extension `ce_timesource` (`vendor` or `received`), and `content-type`
//! (the event's `datacontenttype`, `application/json`).
//!
//! **Dead letters**: key = the raw record's key (as on the raw topic); value = the exact bytes
//! of the push; headers `callhook.reason` (a bounded reason code), `callhook.detail`,
//! `callhook.raw_ref` (`<partition>:<offset>` on the raw topic), then every raw-record
//! metadata header of [`callhook_rawlog::kafka_codec`] (`callhook.source`,
//! `callhook.received_at_ms`, ...), so a dead letter can be decoded back into the raw record
//! with [`callhook_rawlog::kafka_codec::decode`] and replayed.

use callhook_rawlog::kafka_codec;
use callhook_rawlog::RawRecord;
use callhook_schemas::{canonical_time, TimeSource};

use super::error::Result;
use crate::batch::SinkEvent;
use crate::calls_fold::CallRow;

/// Header names of the two topics.
pub mod header {
    /// CloudEvents `specversion`.
    pub const CE_SPECVERSION: &str = "ce_specversion";
    /// CloudEvents `id` (deterministic: the same push always yields the same id).
    pub const CE_ID: &str = "ce_id";
    /// CloudEvents `source`, `<vendor>/<account>`.
    pub const CE_SOURCE: &str = "ce_source";
    /// CloudEvents `type`, e.g. `call.ringing`.
    pub const CE_TYPE: &str = "ce_type";
    /// CloudEvents `subject`, also the record key.
    pub const CE_SUBJECT: &str = "ce_subject";
    /// CloudEvents `time`, RFC 3339 UTC.
    pub const CE_TIME: &str = "ce_time";
    /// CloudEvents `dataschema`.
    pub const CE_DATASCHEMA: &str = "ce_dataschema";
    /// The `timesource` extension: `vendor` or `received`.
    pub const CE_TIMESOURCE: &str = "ce_timesource";
    /// The `mappingversion` extension attribute (absent on events mapped before it existed).
    pub const CE_MAPPINGVERSION: &str = "ce_mappingversion";
    /// The `sequence` extension attribute (since v1.1; absent on events of no call).
    pub const CE_SEQUENCE: &str = "ce_sequence";
    /// The data's content type (CloudEvents `datacontenttype`).
    pub const CONTENT_TYPE: &str = "content-type";
    /// Dead letters: the bounded reason code.
    pub const REASON: &str = "callhook.reason";
    /// Dead letters: the human-readable detail (names fields, never payload values).
    pub const DETAIL: &str = "callhook.detail";
    /// Dead letters: `<partition>:<offset>` of the raw record on the raw topic.
    pub const RAW_REF: &str = "callhook.raw_ref";
    /// Calls topic: the row's version, the number of events folded into it (decimal); it
    /// only grows for a call, so a consumer keeps the value with the greatest.
    pub const VERSION: &str = "callhook.version";
}

/// The CloudEvents `type` of a calls-topic record.
pub const CALL_UPDATED_TYPE: &str = "callhook.call.updated";

/// Encodes a `calls` row for the compacted calls topic: key `<source>/<call id>` (source
/// names cannot hold `/`), value the row as a JSON object with the table's column names,
/// CloudEvents headers with type [`CALL_UPDATED_TYPE`] and the version header.
pub fn encode_call(row: &CallRow) -> EncodedRecord {
    let time = |value: &Option<chrono::DateTime<chrono::Utc>>| {
        value.map(|time| callhook_schemas::time::canonical_time(&time))
    };
    let value = serde_json::json!({
        "source": row.source,
        "call_id": row.call_id,
        "vendor": row.vendor,
        "direction": row.direction.as_str(),
        "caller": row.caller.as_ref().map(|n| n.raw.as_str()),
        "caller_e164": row.caller.as_ref().and_then(|n| n.e164.as_deref()),
        "callee": row.callee.as_ref().map(|n| n.raw.as_str()),
        "callee_e164": row.callee.as_ref().and_then(|n| n.e164.as_deref()),
        "agent_number": row.agent_number,
        "agent_name": row.agent_name,
        "queue": row.queue,
        "queue_name": row.queue_name,
        "parent_call_id": row.parent_call_id,
        "first_event_at": time(&Some(row.first_event_at)),
        "started_at": time(&row.started_at),
        "ringing_at": time(&row.ringing_at),
        "answered_at": time(&row.answered_at),
        "ended_at": time(&row.ended_at),
        "disposition": row.disposition.map(|d| d.as_str()),
        "disposition_raw": row.disposition_raw,
        "talk_seconds": row.talk_seconds,
        "recording_url": row.recording_url,
        "correlation": row.correlation,
        "events_count": row.events_count,
        "last_event_type": row.last_event_type.as_str(),
        "last_event_at": time(&Some(row.last_event_at)),
        // Model v1.1.
        "conversation_id": row.journey.conversation_id,
        "leg": row.journey.leg.map(|leg| leg.as_str()),
        "queue_joined_at": time(&row.journey.queue_joined_at),
        "queue_left_at": time(&row.journey.queue_left_at),
        "queue_seconds": row.journey.queue_seconds,
        "abandon_point": row.journey.abandon_point.map(|point| point.as_str()),
        "disconnect_reason": row.journey.disconnect_reason.map(|reason| reason.as_str()),
        "disconnect_reason_raw": row.journey.disconnect_reason_raw,
        "ivr_path": row.journey.ivr_path,
        "status": row.status.as_str(),
    });
    let version = row.events_count.to_string();
    let last = callhook_schemas::time::canonical_time(&row.last_event_at);
    let headers = [
        (header::CE_SPECVERSION, "1.0".to_owned()),
        (
            header::CE_ID,
            format!("{}/{}/{version}", row.source, row.call_id),
        ),
        (header::CE_SOURCE, format!("callhook/{}", row.source)),
        (header::CE_TYPE, CALL_UPDATED_TYPE.to_owned()),
        (header::CE_SUBJECT, row.call_id.clone()),
        (header::CE_TIME, last),
        (header::CONTENT_TYPE, "application/json".to_owned()),
        (header::VERSION, version),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.into_bytes()))
    .collect();
    EncodedRecord {
        key: format!("{}/{}", row.source, row.call_id),
        headers,
        value: value.to_string().into_bytes(),
    }
}

/// One record ready to be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    /// The record key.
    pub key: String,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The value.
    pub value: Vec<u8>,
}

/// A dead letter for the dead-letter topic.
#[derive(Debug, Clone, Copy)]
pub struct KafkaDeadLetter<'a> {
    /// The raw record's key on the raw topic.
    pub key: &'a str,
    /// `<partition>:<offset>` of the raw record.
    pub raw_ref: &'a str,
    /// The bounded reason code.
    pub reason: &'a str,
    /// The detail (may name fields; never the payload).
    pub detail: &'a str,
    /// The raw record: its body is the value, its metadata the `callhook.*` headers.
    pub record: &'a RawRecord,
}

/// Encodes an event in CloudEvents binary mode; the value is the data JSON the mapping
/// stage serialized.
pub fn encode_event(sink_event: &SinkEvent) -> Result<EncodedRecord> {
    let event = &sink_event.event;
    let value = sink_event.data_json.as_bytes().to_vec();
    let timesource = match event.timesource {
        TimeSource::Vendor => "vendor",
        TimeSource::Received => "received",
    };
    let time = canonical_time(&event.time);
    let mapping_version = event.mappingversion.map(|version| version.to_string());
    let sequence = event.sequence.map(|sequence| sequence.to_string());
    let headers = [
        (header::CE_SPECVERSION, event.specversion.as_str()),
        (header::CE_ID, event.id.as_str()),
        (header::CE_SOURCE, event.source.as_str()),
        (header::CE_TYPE, event.event_type.as_str()),
        (header::CE_SUBJECT, event.subject.as_str()),
        (header::CE_TIME, time.as_str()),
        (header::CE_DATASCHEMA, event.dataschema.as_str()),
        (header::CE_TIMESOURCE, timesource),
        (header::CONTENT_TYPE, event.datacontenttype.as_str()),
        (
            header::CE_MAPPINGVERSION,
            mapping_version.as_deref().unwrap_or_default(),
        ),
        (header::CE_SEQUENCE, sequence.as_deref().unwrap_or_default()),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
    .collect();
    Ok(EncodedRecord {
        key: event.subject.clone(),
        headers,
        value,
    })
}

/// Encodes a dead letter: the raw bytes as value, reason and raw metadata as headers.
pub fn encode_dead_letter(letter: &KafkaDeadLetter<'_>) -> EncodedRecord {
    let mut headers = vec![
        (header::REASON.to_owned(), letter.reason.as_bytes().to_vec()),
        (header::DETAIL.to_owned(), letter.detail.as_bytes().to_vec()),
        (
            header::RAW_REF.to_owned(),
            letter.raw_ref.as_bytes().to_vec(),
        ),
    ];
    headers.extend(kafka_codec::encode_headers(letter.record));
    EncodedRecord {
        key: letter.key.to_owned(),
        headers,
        value: letter.record.body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use callhook_schemas::CloudEvent;
    use chrono::{DateTime, Utc};

    fn event() -> CloudEvent {
        let json = serde_json::json!({
            "id": "2f665a87b756411dbee5d43ea7cc64e3",
            "specversion": "1.0",
            "source": "7moor/20000153",
            "subject": "403344537650466816",
            "type": "call.ringing",
            "time": "2021-05-08T06:39:37Z",
            "timesource": "vendor",
            "datacontenttype": "application/json",
            "dataschema": "urn:callhook:schema:call-event:v1",
            "data": {
                "schema_version": 1,
                "vendor": "7moor",
                "dialect": "7moor.v7",
                "vendor_event": "dialoutRing",
                "source_name": "7moor-main",
                "call_id": "403344537650466816",
                "direction": "outbound"
            }
        });
        serde_json::from_value(json).expect("a valid event")
    }

    fn header<'a>(record: &'a EncodedRecord, name: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).expect("utf-8"))
    }

    #[test]
    fn test_event_is_binary_mode_keyed_by_subject() {
        let event = event();
        let record = encode_event(&SinkEvent::encode(event.clone()).unwrap()).unwrap();
        assert_eq!(record.key, "403344537650466816");
        assert_eq!(header(&record, "ce_id"), Some(event.id.as_str()));
        assert_eq!(header(&record, "ce_type"), Some("call.ringing"));
        assert_eq!(header(&record, "ce_subject"), Some("403344537650466816"));
        assert_eq!(
            header(&record, "ce_time"),
            Some("2021-05-08T06:39:37.000000000Z")
        );
        assert_eq!(header(&record, "ce_timesource"), Some("vendor"));
        assert_eq!(header(&record, "content-type"), Some("application/json"));
        let data: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(data, serde_json::to_value(&event.data).unwrap());
        // ce_time is the same text the structured JSON form carries.
        let structured = serde_json::to_value(&event).unwrap();
        assert_eq!(header(&record, "ce_time"), structured["time"].as_str());
    }

    #[test]
    fn test_dead_letter_carries_raw_bytes_and_decodable_metadata() {
        let raw = RawRecord {
            source: "coocenter".into(),
            received_at: DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).unwrap(),
            method: "POST".into(),
            content_type: Some("text/plain".into()),
            query: None,
            remote_addr: Some("10.0.0.9:4000".into()),
            request_id: "req-1".into(),
            headers: vec![("user-agent".into(), "pbx".into())],
            body: Bytes::from_static(b"{event:\"mystery\"}"),
        };
        let letter = KafkaDeadLetter {
            key: "coocenter",
            raw_ref: "3:17",
            reason: "unknown_event",
            detail: "event `mystery` is not known",
            record: &raw,
        };
        let record = encode_dead_letter(&letter);
        assert_eq!(record.value, b"{event:\"mystery\"}");
        assert_eq!(header(&record, "callhook.reason"), Some("unknown_event"));
        assert_eq!(header(&record, "callhook.raw_ref"), Some("3:17"));
        let decoded = kafka_codec::decode(
            record
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), Some(v.as_slice()))),
            Some(&record.value),
        )
        .unwrap();
        assert_eq!(decoded, raw);
    }
}
