//! From a record of the CDR query to the raw record of a `cdr` push.
//!
//! The query's record and the `cdr` push document the same fields (seed 001, §2.13 and §3.5
//! list them in one table), so the push body is the record itself with:
//!
//! | query record | push body |
//! |---|---|
//! | (none) | `"pushType": "cdr"` added |
//! | `callUniqueId`, else `_id` | `callUniqueId` (the call id; `_id` is dropped when it repeats it) |
//! | `__v` (the store's document version) | dropped |
//! | every other field | as sent |
//!
//! The body goes through the normal path (map, dedupe, project). Its dedupe key is the v7
//! mapper's key of a `cdr` push, `7moor.v7:cdr:<call id>`, the same as the webhook's, so
//! whichever of the two arrives second is a duplicate.
//!
//! The record is marked with the header `x-callhook-origin: reconcile`, has no peer address,
//! and a request id `reconcile-<16 hex>`.

use bytes::Bytes;
use callhook_rawlog::RawRecord;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The header that marks a backfilled record, and its value.
pub const ORIGIN_HEADER: (&str, &str) = ("x-callhook-origin", "reconcile");

/// Returns the call id of a query record: `callUniqueId`, else `_id` (non-blank strings or
/// numbers).
pub fn call_id(record: &Map<String, Value>) -> Option<String> {
    ["callUniqueId", "_id"]
        .iter()
        .find_map(|key| match record.get(*key) {
            Some(Value::String(text)) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        })
}

/// Returns the `cdr` push body of a query record whose call id is `call_id`.
pub fn push_body(mut record: Map<String, Value>, call_id: &str) -> Map<String, Value> {
    record.remove("__v");
    if call_id_of(&record, "_id").as_deref() == Some(call_id) {
        record.remove("_id");
    }
    let mut body = Map::with_capacity(record.len() + 2);
    body.insert("pushType".to_owned(), Value::String("cdr".to_owned()));
    body.insert("callUniqueId".to_owned(), Value::String(call_id.to_owned()));
    for (key, value) in record {
        if key != "pushType" && key != "callUniqueId" {
            body.insert(key, value);
        }
    }
    body
}

fn call_id_of(record: &Map<String, Value>, key: &str) -> Option<String> {
    match record.get(key) {
        Some(Value::String(text)) => Some(text.trim().to_owned()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    }
}

/// Returns the raw record of a backfilled push for `source`.
pub fn raw_record(
    source: &str,
    body: &Map<String, Value>,
    received_at: DateTime<Utc>,
) -> RawRecord {
    let bytes = serde_json::to_vec(body).expect("a JSON map always serializes");
    let request_id = format!("reconcile-{}", short_hash(&bytes, received_at));
    RawRecord {
        source: source.to_owned(),
        received_at,
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: None,
        request_id,
        headers: vec![(ORIGIN_HEADER.0.to_owned(), ORIGIN_HEADER.1.to_owned())],
        body: Bytes::from(bytes),
    }
}

fn short_hash(bytes: &[u8], at: DateTime<Utc>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    hasher.update(at.timestamp_millis().to_le_bytes());
    hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Returns the current time truncated to milliseconds, the precision the raw log keeps.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn test_call_id_prefers_call_unique_id() {
        assert_eq!(
            call_id(&object(json!({"_id": "2", "callUniqueId": "1"}))).as_deref(),
            Some("1")
        );
        assert_eq!(
            call_id(&object(json!({"_id": "387478792353878016"}))).as_deref(),
            Some("387478792353878016")
        );
        assert_eq!(
            call_id(&object(json!({"callUniqueId": " ", "_id": 5}))).as_deref(),
            Some("5")
        );
        assert_eq!(call_id(&object(json!({"id": "3"}))), None);
    }

    #[test]
    fn test_push_body_of_the_seed_record_shape() {
        let record = object(json!({
            "cdrType": "callRecord", "_id": "387478792353878016", "accountId": "2000144",
            "status": "ANSWER", "__v": 0, "failureReason": 0
        }));
        let body = push_body(record, "387478792353878016");
        assert_eq!(
            Value::Object(body),
            json!({
                "pushType": "cdr", "callUniqueId": "387478792353878016",
                "cdrType": "callRecord", "accountId": "2000144", "status": "ANSWER",
                "failureReason": 0
            })
        );
        let differs = push_body(object(json!({"_id": "x", "callUniqueId": "1"})), "1");
        assert_eq!(differs.get("_id"), Some(&json!("x")));
    }

    #[test]
    fn test_raw_record_is_marked() {
        let body = push_body(object(json!({"_id": "1"})), "1");
        let at = now_millis();
        let record = raw_record("7moor", &body, at);
        assert_eq!(
            record.headers,
            [("x-callhook-origin".to_owned(), "reconcile".to_owned())]
        );
        assert_eq!(record.method, "POST");
        assert!(record.request_id.starts_with("reconcile-"));
        let parsed: Value = serde_json::from_slice(&record.body).unwrap();
        assert_eq!(parsed["pushType"], "cdr");
        assert_eq!(parsed["callUniqueId"], "1");
    }
}
