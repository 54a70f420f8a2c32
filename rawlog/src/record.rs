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
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    /// The peer address, `ip:port`.
    pub remote_addr: Option<String>,
    /// A unique id for this request (also returned in the `x-request-id` response header).
    pub request_id: String,
    /// Selected request headers (lowercase names), in arrival order.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Bytes,
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
