//! The raw record: a vendor push exactly as received, plus request metadata.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One vendor push as received. Nothing here is re-encoded: `body` and `query` are the exact
/// bytes and text from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The configured source name from the path (`/hooks/{source}`).
    pub source: String,
    /// When the receiver had the whole body (millisecond precision).
    pub received_at: DateTime<Utc>,
    /// HTTP method, `GET` or `POST`.
    pub method: String,
    /// The `Content-Type` header, if any ([`header_value_text`] form).
    pub content_type: Option<String>,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    /// The peer address, `ip:port`.
    pub remote_addr: Option<String>,
    /// A unique id for this request (also returned in the `x-request-id` response header).
    pub request_id: String,
    /// Selected request headers (lowercase names), in arrival order; each value in
    /// [`header_value_text`] form, which keeps bytes that are not UTF-8 exactly.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Bytes,
}

/// How a header value that is not UTF-8 text is kept: `=?binary?b?<base64>?=`.
const BINARY_PREFIX: &str = "=?binary?b?";
const BINARY_SUFFIX: &str = "?=";

/// A request header value as the raw record keeps it: UTF-8 text as is; anything else
/// (HTTP allows any byte but NUL, CR and LF) as `=?binary?b?<base64 of the bytes>?=`, so the
/// exact bytes come back from [`header_value_bytes`]. A UTF-8 value that itself looks like that
/// marker is encoded too, so every value round-trips.
pub fn header_value_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.starts_with(BINARY_PREFIX) => text.to_owned(),
        _ => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            format!("{BINARY_PREFIX}{encoded}{BINARY_SUFFIX}")
        }
    }
}

/// The exact bytes of a header value kept by [`header_value_text`].
pub fn header_value_bytes(text: &str) -> std::borrow::Cow<'_, [u8]> {
    use base64::Engine;
    let decoded = text
        .strip_prefix(BINARY_PREFIX)
        .and_then(|rest| rest.strip_suffix(BINARY_SUFFIX))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        });
    match decoded {
        Some(bytes) => std::borrow::Cow::Owned(bytes),
        None => std::borrow::Cow::Borrowed(text.as_bytes()),
    }
}

/// Where a record sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The offset within the partition (starts at 0, gapless per partition).
    pub offset: u64,
}

impl std::fmt::Display for Position {
    /// Formats as `<partition>:<offset>`, the form used in dead-letter `raw_ref`s.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Where it sits.
    pub position: Position,
    /// The partition key it was appended with.
    pub key: String,
    /// The record.
    pub record: RawRecord,
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn test_header_values_round_trip_exactly_whatever_their_bytes() {
        for bytes in [
            &b"application/json; charset=utf-8"[..],
            "中文".as_bytes(),
            b"gbk \xd6\xd0\xce\xc4",
            b"\xff\xfe\x80",
            b"=?binary?b?AAAA?=",
            b"",
        ] {
            let text = header_value_text(bytes);
            assert_eq!(header_value_bytes(&text).as_ref(), bytes, "{text}");
        }
        assert_eq!(header_value_text(b"text/plain"), "text/plain");
        assert_eq!(header_value_text(b"\xd6\xd0"), "=?binary?b?1tA=?=");
    }
}
