//! From a mapper's drafts to finished CloudEvents, and the dedupe-key helpers.
//!
//! Event ids are deterministic: `id = hex(sha256(source name, dedupe key, ordinal))[..32]`,
//! where the ordinal is the event's position among the events of its push. A vendor retry
//! yields the same dedupe key and therefore the same ids, so every sink can be idempotent.

use callhook_schemas::{CallEventData, CloudEvent, EventType, TimeSource, DATA_SCHEMA_URI};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::push::{RawPush, SourceContext};

/// What a vendor mapper produced for one push: its dedupe key and its events' drafts.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The push's dedupe key (see `normalizer/README.md` for each dialect's derivation).
    pub dedupe_key: String,
    /// The canonical events, in the order they happened.
    pub events: Vec<CloudEvent>,
}

/// One event before its envelope is filled in.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The canonical type.
    pub event_type: EventType,
    /// The vendor time of the occurrence, if the push carries one.
    pub time: Option<DateTime<Utc>>,
    /// The event's data.
    pub data: CallEventData,
}

impl Draft {
    /// Returns a draft of the given type.
    pub fn new(event_type: EventType, time: Option<DateTime<Utc>>, data: CallEventData) -> Self {
        Draft {
            event_type,
            time,
            data,
        }
    }
}

/// Finishes drafts into CloudEvents: ids, source, subject, time and the configured account.
pub fn finish(
    drafts: Vec<Draft>,
    push: &RawPush<'_>,
    ctx: &SourceContext,
    dedupe_key: String,
) -> Mapped {
    let events = drafts
        .into_iter()
        .enumerate()
        .map(|(ordinal, draft)| finish_one(draft, ordinal, push, ctx, &dedupe_key))
        .collect();
    Mapped { dedupe_key, events }
}

fn finish_one(
    draft: Draft,
    ordinal: usize,
    push: &RawPush<'_>,
    ctx: &SourceContext,
    dedupe_key: &str,
) -> CloudEvent {
    let mut data = draft.data;
    if data.account.is_none() {
        data.account = ctx.account.clone();
    }
    let account = data.account.clone().unwrap_or_else(|| ctx.name.clone());
    let subject = subject_for(draft.event_type, &data, dedupe_key);
    let (time, timesource) = match draft.time {
        Some(time) => (time, TimeSource::Vendor),
        None => (push.received_at, TimeSource::Received),
    };
    CloudEvent {
        id: event_id(&ctx.name, dedupe_key, ordinal),
        specversion: "1.0".to_owned(),
        source: event_source(&data.vendor, &account),
        subject,
        event_type: draft.event_type,
        time,
        timesource,
        datacontenttype: "application/json".to_owned(),
        dataschema: DATA_SCHEMA_URI.to_owned(),
        mappingversion: Some(crate::mapping::mapping_version()),
        // Assigned by the projection sink at first store (`callhook_sinks::sequence`).
        sequence: None,
        data,
    }
}

/// What an account id keeps of itself in a URI path segment: RFC 3986's `pchar` minus `%`
/// (so an id that holds `%` is not read back as an escape). Everything else, space, `#`,
/// `?`, `/`, non-ASCII, is percent-encoded as UTF-8.
const SOURCE_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The CloudEvents `source`: `<vendor>/<account>`, a valid URI-reference whatever the account
/// id holds (`7moor/acme%20sales%231`).
pub fn event_source(vendor: &str, account: &str) -> String {
    format!("{vendor}/{}", utf8_percent_encode(account, SOURCE_SEGMENT))
}

/// Call events are keyed by call id, agent events by `agent/<number>`; with neither, the push.
fn subject_for(event_type: EventType, data: &CallEventData, dedupe_key: &str) -> String {
    let agent = data.agent.as_ref().and_then(|a| a.number.as_deref());
    let call = data.call_id.as_deref();
    let preferred = if event_type.is_agent_event() {
        agent
            .map(|a| format!("agent/{a}"))
            .or(call.map(str::to_owned))
    } else {
        call.map(str::to_owned)
            .or(agent.map(|a| format!("agent/{a}")))
    };
    preferred.unwrap_or_else(|| format!("push/{}", short_hash(dedupe_key.as_bytes())))
}

/// Returns the deterministic id of the `ordinal`-th event of a push.
pub fn event_id(source_name: &str, dedupe_key: &str, ordinal: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source_name.as_bytes());
    hasher.update([0]);
    hasher.update(dedupe_key.as_bytes());
    hasher.update([0]);
    hasher.update(ordinal.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Returns a 16-hex-digit hash of the payload with object keys sorted (so key order and
/// white space, which a retry may not reproduce, do not change it).
pub fn payload_hash(fields: &Map<String, Value>) -> String {
    // The canonical text is written out whole, then hashed in one call: feeding SHA-256 a
    // few bytes at a time cost more than the hashing itself.
    let mut canonical = Vec::with_capacity(1024);
    write_canonical_map(fields, &mut canonical);
    hex::encode(&Sha256::digest(&canonical)[..8])
}

/// Writes `{"key":value,...,}` with keys sorted; keys and scalars in serde_json's compact form.
fn write_canonical_map(map: &Map<String, Value>, out: &mut Vec<u8>) {
    // Sorted by the key's first eight bytes as a big-endian word, then by the whole key: the
    // same order as comparing keys alone (a word orders like its bytes, and keys are unique),
    // with a compare of two integers in place of a `memcmp` call for nearly every pair.
    let mut entries: Vec<(u64, &String, &Value)> = map
        .iter()
        .map(|(key, value)| (key_prefix(key), key, value))
        .collect();
    entries.sort_unstable_by(|left, right| left.0.cmp(&right.0).then_with(|| left.1.cmp(right.1)));
    out.push(b'{');
    for (_, key, value) in entries {
        write_str(key, out);
        out.push(b':');
        write_canonical(value, out);
        out.push(b',');
    }
    out.push(b'}');
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_map(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                write_canonical(item, out);
                out.push(b',');
            }
            out.push(b']');
        }
        Value::String(text) => write_str(text, out),
        scalar => write_json(scalar, out),
    }
}

/// A key's first eight bytes, zero-padded, as a big-endian word.
fn key_prefix(key: &str) -> u64 {
    crate::fields::leading_word_le(key.as_bytes()).swap_bytes()
}

/// Writes a string exactly as serde_json's compact form does: the common text that needs no
/// escape (no `"`, `\` or control character; serde_json escapes nothing else) is copied
/// between quotes, which is a third of the hash's cost saved; anything else goes through
/// serde_json itself, so the bytes, and so every dedupe key and event id, stay the same.
fn write_str(text: &str, out: &mut Vec<u8>) {
    if !needs_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        write_json(text, out);
    }
}

/// True when some byte is a control character, `"` or `\`: eight bytes at a time, with the
/// classic "has a byte less than / equal to" word tricks (exact as yes/no answers).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_less_than = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGHS != 0;
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        if has_less_than(word, 0x20)
            || has_zero(word ^ (ONES * u64::from(b'"')))
            || has_zero(word ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing into a vector cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(out, value);
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// The window within which an identical push that carries no id and no time is a retry.
pub const RETRY_BUCKET_SECONDS: i64 = 300;

/// Returns the receive-time bucket used in keys of pushes with no id and no vendor time:
/// identical bodies within one bucket are retries; in different buckets, new events.
pub fn receive_bucket(received_at: DateTime<Utc>) -> i64 {
    received_at
        .duration_trunc(TimeDelta::seconds(RETRY_BUCKET_SECONDS))
        .map(|t| t.timestamp())
        .unwrap_or_else(|_| received_at.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_canonical_key_order_is_byte_order() {
        let keys = [
            "b",
            "a",
            "ab",
            "a\u{0}",
            "abcdefgh",
            "abcdefgg",
            "abcdefghi",
            "abcdefgh\u{0}",
            "abcdefg",
            "abcdefgz",
            "abcdef\u{7f}",
            "张",
            "Z",
            "",
        ];
        let map: Map<String, Value> = keys.iter().map(|key| (key.to_string(), json!(1))).collect();
        let mut canonical = Vec::new();
        write_canonical_map(&map, &mut canonical);
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        let expected: Map<String, Value> = sorted
            .iter()
            .map(|key| (key.to_string(), json!(1)))
            .collect();
        let mut text = String::from("{");
        for key in expected.keys() {
            text.push_str(&serde_json::to_string(key).unwrap());
            text.push_str(":1,");
        }
        text.push('}');
        assert_eq!(String::from_utf8(canonical).unwrap(), text);
    }

    #[test]
    fn test_write_str_is_byte_for_byte_serde_json() {
        let mut texts: Vec<String> = (0u32..=0x80)
            .filter_map(char::from_u32)
            .flat_map(|c| [format!("a{c}b"), format!("0123456789{c}abcdefgh")])
            .collect();
        texts.extend(
            [
                "",
                "张三",
                "北京市朝阳区呼叫中心\\\"",
                "北京市朝阳区呼叫中心ÿ",
                "\u{2028}\u{feff}",
                "tab\there",
                "q\"uote\\",
            ]
            .map(String::from),
        );
        for text in texts {
            let mut fast = Vec::new();
            write_str(&text, &mut fast);
            assert_eq!(fast, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn test_event_source_is_a_uri_reference_whatever_the_account_holds() {
        assert_eq!(event_source("7moor", "20000153"), "7moor/20000153");
        assert_eq!(
            event_source("7moor", "acme sales#1/é%?x"),
            "7moor/acme%20sales%231%2F%C3%A9%25%3Fx"
        );
        // Characters a path segment allows stay as sent.
        assert_eq!(
            event_source("uincall", "a-b_c.d~e:f@g!$&'()*+,;="),
            "uincall/a-b_c.d~e:f@g!$&'()*+,;="
        );
    }

    #[test]
    fn test_event_id_is_stable_and_distinct() {
        let a = event_id("7moor", "k", 0);
        assert_eq!(a, event_id("7moor", "k", 0));
        assert_eq!(a.len(), 32);
        assert_ne!(a, event_id("7moor", "k", 1));
        assert_ne!(a, event_id("7moor-b", "k", 0));
        assert_ne!(a, event_id("7moor", "k2", 0));
    }

    #[test]
    fn test_payload_hash_ignores_key_order_only() {
        let Value::Object(a) = json!({"x": 1, "y": {"b": 2, "a": [1, "2"]}}) else {
            unreachable!()
        };
        let Value::Object(b) = json!({"y": {"a": [1, "2"], "b": 2}, "x": 1}) else {
            unreachable!()
        };
        let Value::Object(c) = json!({"y": {"a": [1, 2], "b": 2}, "x": 1}) else {
            unreachable!()
        };
        assert_eq!(payload_hash(&a), payload_hash(&b));
        assert_ne!(payload_hash(&a), payload_hash(&c));
    }

    #[test]
    fn test_receive_bucket_groups_close_retries() {
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(receive_bucket(t), receive_bucket(t + TimeDelta::seconds(2)));
        assert_ne!(
            receive_bucket(t),
            receive_bucket(t + TimeDelta::seconds(600))
        );
    }
}
