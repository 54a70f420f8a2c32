//! Raw records as Kafka records on the raw topic, and what a send's failure means.
//!
//! The layout is [`crate::kafka_codec`]'s: key = the partition key, value = the exact body
//! (an empty body is an empty value, never a null), `callhook.*` headers; the record
//! timestamp is the push's `received_at`, also when the record is forwarded from the spool
//! later.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::kafka_codec::encode_headers;
use crate::RawRecord;

/// librdkafka's own bound on one message (key, value and headers), used when the config does
/// not set `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Bytes added per header and per message when estimating a message's size: more than
/// librdkafka's own overhead, so a record the estimate admits is never refused by librdkafka's
/// size check later, when the forwarder sends it.
const HEADER_OVERHEAD_BYTES: usize = 16;
const MESSAGE_OVERHEAD_BYTES: usize = 128;

/// Hands one raw record to `producer` for `topic`. Never blocks: librdkafka copies the
/// record into its queue. On `Err` nothing was queued.
pub(crate) fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    record: &RawRecord,
) -> Result<DeliveryFuture, KafkaError> {
    let headers = encode_headers(record).iter().fold(
        OwnedHeaders::new_with_capacity(8),
        |headers, (name, value)| {
            headers.insert(Header {
                key: name,
                value: Some(value),
            })
        },
    );
    let body: &[u8] = &record.body;
    let message = FutureRecord::to(topic)
        .key(key)
        .payload(body)
        .headers(headers)
        .timestamp(record.received_at.timestamp_millis());
    producer.send_result(message).map_err(|(error, _)| error)
}

/// Returns an over-estimate of the bytes librdkafka counts against `message.max.bytes`.
pub(crate) fn estimated_message_bytes(key: &str, record: &RawRecord) -> usize {
    let headers: usize = encode_headers(record)
        .iter()
        .map(|(name, value)| name.len() + value.len() + HEADER_OVERHEAD_BYTES)
        .sum();
    MESSAGE_OVERHEAD_BYTES + key.len() + record.body.len() + headers
}

/// What a failed send means for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// Kafka refuses this record itself (too large): spooling it would only jam the forwarder.
    Rejected(String),
    /// Kafka is down, slow or otherwise failing: the record may go to the spool.
    Unavailable(String),
}

/// Classifies a producer error (from `send_result` or a delivery report).
pub(crate) fn classify(error: &KafkaError) -> SendFailure {
    let code = match error {
        KafkaError::MessageProduction(code) => Some(*code),
        _ => None,
    };
    match code {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord,
        ) => SendFailure::Rejected(error.to_string()),
        _ => SendFailure::Unavailable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::DateTime;

    fn record(body: &'static [u8]) -> RawRecord {
        RawRecord {
            source: "coocenter".into(),
            received_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            method: "POST".into(),
            content_type: Some("application/json".into()),
            query: None,
            remote_addr: Some("10.0.0.1:4000".into()),
            request_id: "req-1".into(),
            headers: vec![("user-agent".into(), "cc".into())],
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn test_estimate_covers_key_body_and_headers() {
        let small = estimated_message_bytes("call-1", &record(b"{}"));
        let large = estimated_message_bytes("call-1", &record(&[b'x'; 1000]));
        assert_eq!(large - small, 998);
        let header_bytes: usize = encode_headers(&record(b"{}"))
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        assert!(small > header_bytes + "call-1".len() + 2);
    }

    #[test]
    fn test_size_errors_are_rejections_and_others_unavailable() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&too_large), SendFailure::Rejected(_)));
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(classify(&timed_out), SendFailure::Unavailable(_)));
        let purged = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue);
        assert!(matches!(classify(&purged), SendFailure::Unavailable(_)));
    }
}
