//! How a [`RawRecord`] travels as a Kafka record on the raw topic.
//!
//! - key: the partition key chosen by the receiver (call id when cheap to find, else source);
//! - value: the exact body bytes (an empty body is an empty value, never a null);
//! - headers (values are UTF-8 text unless noted):
//!   `callhook.source`, `callhook.received_at_ms` (decimal epoch milliseconds),
//!   `callhook.method`, `callhook.request_id`, and when present `callhook.content_type`,
//!   `callhook.query` (raw bytes of the query string), `callhook.remote_addr`; each selected
//!   request header as `callhook.h.<lowercase name>`, in arrival order.
//!
//! Decoding is strict about the four required headers and lenient about everything else, so a
//! record written by a newer callhook (with more headers) still decodes.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::RawRecord;

/// Header names on the raw topic.
pub mod header {
    /// The configured source name.
    pub const SOURCE: &str = "callhook.source";
    /// Receive time, epoch milliseconds in decimal.
    pub const RECEIVED_AT_MS: &str = "callhook.received_at_ms";
    /// HTTP method.
    pub const METHOD: &str = "callhook.method";
    /// Request id.
    pub const REQUEST_ID: &str = "callhook.request_id";
    /// `Content-Type` of the push.
    pub const CONTENT_TYPE: &str = "callhook.content_type";
    /// Raw query string.
    pub const QUERY: &str = "callhook.query";
    /// Peer address.
    pub const REMOTE_ADDR: &str = "callhook.remote_addr";
    /// Prefix of the selected request headers.
    pub const SELECTED_PREFIX: &str = "callhook.h.";
}

/// Why a Kafka record is not a raw record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A required header is absent.
    #[error("header `{0}` is missing")]
    MissingHeader(&'static str),
    /// A header's value is not what it must be.
    #[error("header `{name}` is invalid: {detail}")]
    InvalidHeader {
        /// The header name.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Returns the headers of a raw record, in a stable order.
pub fn encode_headers(record: &RawRecord) -> Vec<(String, Vec<u8>)> {
    let mut headers = vec![
        (header::SOURCE.to_owned(), record.source.as_bytes().to_vec()),
        (
            header::RECEIVED_AT_MS.to_owned(),
            record
                .received_at
                .timestamp_millis()
                .to_string()
                .into_bytes(),
        ),
        (header::METHOD.to_owned(), record.method.as_bytes().to_vec()),
        (
            header::REQUEST_ID.to_owned(),
            record.request_id.as_bytes().to_vec(),
        ),
    ];
    let optional = [
        (header::CONTENT_TYPE, &record.content_type),
        (header::QUERY, &record.query),
        (header::REMOTE_ADDR, &record.remote_addr),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            headers.push((name.to_owned(), value.as_bytes().to_vec()));
        }
    }
    for (name, value) in &record.headers {
        headers.push((
            format!("{}{}", header::SELECTED_PREFIX, name),
            value.as_bytes().to_vec(),
        ));
    }
    headers
}

/// Rebuilds a raw record from a Kafka record's headers and value.
pub fn decode<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    value: Option<&[u8]>,
) -> Result<RawRecord, DecodeError> {
    let mut source = None;
    let mut received_at = None;
    let mut method = None;
    let mut request_id = None;
    let mut record_headers = Vec::new();
    let mut content_type = None;
    let mut query = None;
    let mut remote_addr = None;
    for (name, value) in headers {
        let text = value.map(|bytes| String::from_utf8_lossy(bytes).into_owned());
        match name {
            header::SOURCE => source = text,
            header::RECEIVED_AT_MS => received_at = text,
            header::METHOD => method = text,
            header::REQUEST_ID => request_id = text,
            header::CONTENT_TYPE => content_type = text,
            header::QUERY => query = text,
            header::REMOTE_ADDR => remote_addr = text,
            other => {
                if let (Some(selected), Some(text)) =
                    (other.strip_prefix(header::SELECTED_PREFIX), text)
                {
                    record_headers.push((selected.to_owned(), text));
                }
            }
        }
    }
    let millis = received_at.ok_or(DecodeError::MissingHeader(header::RECEIVED_AT_MS))?;
    let received_at = millis
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .ok_or_else(|| DecodeError::InvalidHeader {
            name: header::RECEIVED_AT_MS,
            detail: format!("`{millis}` is not epoch milliseconds"),
        })?;
    Ok(RawRecord {
        source: source.ok_or(DecodeError::MissingHeader(header::SOURCE))?,
        received_at,
        method: method.ok_or(DecodeError::MissingHeader(header::METHOD))?,
        content_type,
        query,
        remote_addr,
        request_id: request_id.ok_or(DecodeError::MissingHeader(header::REQUEST_ID))?,
        headers: record_headers,
        body: Bytes::copy_from_slice(value.unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RawRecord {
        RawRecord {
            source: "7moor".into(),
            received_at: DateTime::from_timestamp_millis(1_620_455_977_123).unwrap(),
            method: "GET".into(),
            content_type: None,
            query: Some("CallNo=1&AgentName=%E5%BC%A0".into()),
            remote_addr: Some("127.0.0.1:5000".into()),
            request_id: "abc".into(),
            headers: vec![
                ("user-agent".into(), "moor".into()),
                ("x-forwarded-for".into(), "10.0.0.1".into()),
            ],
            body: Bytes::from_static(b"\xff\x00raw"),
        }
    }

    #[test]
    fn test_round_trip() {
        let original = record();
        let headers = encode_headers(&original);
        let decoded = decode(
            headers
                .iter()
                .map(|(n, v)| (n.as_str(), Some(v.as_slice()))),
            Some(&original.body),
        )
        .unwrap();
        assert_eq!(decoded, original);
    }

    #[test]
    fn test_missing_required_header_is_an_error() {
        let headers = encode_headers(&record());
        let without_source = headers
            .iter()
            .filter(|(n, _)| n != header::SOURCE)
            .map(|(n, v)| (n.as_str(), Some(v.as_slice())));
        assert_eq!(
            decode(without_source, None),
            Err(DecodeError::MissingHeader(header::SOURCE))
        );
        let bad_time = headers.iter().map(|(n, v)| {
            if n == header::RECEIVED_AT_MS {
                (n.as_str(), Some(&b"soon"[..]))
            } else {
                (n.as_str(), Some(v.as_slice()))
            }
        });
        assert!(matches!(
            decode(bad_time, None),
            Err(DecodeError::InvalidHeader { .. })
        ));
    }
}
