//! `map_push` per dialect: the input is one push (method, content type, query, body).
//!
//! Layout of an input: the first byte picks the method (bit 3: `GET`, else `POST`), the
//! `Content-Type` (bits 0–2, [`CONTENT_TYPES`]), an account in the source's config (bit 4)
//! and a redacted `token` query parameter (bit 5). The rest is `query NUL body` when it holds a
//! NUL byte, else the whole body with no query.
//!
//! Invariants ([`check_mapped`]): the result is events or a [`MapError`] whose reason is in
//! [`MapError::REASONS`]; a mapping has a dedupe key; each event has a 32-hex id, the
//! CloudEvents constants, a non-empty subject and source, a time within 2000..2100, and
//! serializes to JSON that serde_json reads back to the same event and the same text (what the
//! sinks store they can read).

use callhook_normalizer::{map_push, Dialect, MapError, Mapped, RawPush, SourceContext};
use callhook_schemas::CloudEvent;
use chrono::{DateTime, Datelike, Utc};

/// The `Content-Type` values an input can pick (index: the low three bits of its first byte).
pub const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
    Some("application/json;charset=utf-8"),
    Some("application/x-www-form-urlencoded; charset=GBK"),
    Some("text/javascript"),
    Some("multipart/form-data; boundary=x"),
];

/// The receive time of every fuzzed push (any fixed time in range would do).
fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_620_455_978, 0).expect("a valid timestamp")
}

/// Maps one fuzzed push on a source of `dialect` and checks the outcome.
pub fn check_map_push(dialect: Dialect, data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&byte| byte == 0) {
        Some(nul) => (
            Some(String::from_utf8_lossy(&rest[..nul]).into_owned()),
            &rest[nul + 1..],
        ),
        None => (None, rest),
    };
    let push = RawPush {
        method: if flags & 0b1000 != 0 { "GET" } else { "POST" },
        content_type: CONTENT_TYPES[usize::from(flags & 0b111)],
        query: query.as_deref(),
        headers: &[],
        body,
        received_at: received_at(),
    };
    let mut ctx = SourceContext::new("fuzz", dialect);
    if flags & 0b1_0000 != 0 {
        ctx.account = Some("acct".to_owned());
    }
    if flags & 0b10_0000 != 0 {
        ctx.redact_params = vec!["token".to_owned()];
    }
    check_mapped(&push, &ctx);
}

/// Maps `push` and checks the invariants above; returns the mapping, if any.
pub fn check_mapped(push: &RawPush<'_>, ctx: &SourceContext) -> Option<Mapped> {
    match map_push(push, ctx) {
        Ok(mapped) => {
            assert!(!mapped.dedupe_key.is_empty(), "empty dedupe key");
            for event in &mapped.events {
                check_event(event);
            }
            Some(mapped)
        }
        Err(error) => {
            assert!(
                MapError::REASONS.contains(&error.reason()),
                "reason `{}` is not in MapError::REASONS",
                error.reason()
            );
            None
        }
    }
}

fn check_event(event: &CloudEvent) {
    assert_eq!(event.id.len(), 32, "id {:?}", event.id);
    assert!(
        event
            .id
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)),
        "id {:?} is not lowercase hex",
        event.id
    );
    assert_eq!(event.specversion, "1.0");
    assert_eq!(event.datacontenttype, "application/json");
    assert!(!event.subject.is_empty(), "empty subject");
    assert!(!event.source.is_empty(), "empty source");
    assert!(
        (2000..2100).contains(&event.time.year()),
        "event time {} out of range",
        event.time
    );
    let text = serde_json::to_string(event).expect("an event serializes");
    let read_back: CloudEvent = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("stored event does not read back: {error}\n{text}"));
    assert_eq!(&read_back, event, "event changed through JSON");
    let value: serde_json::Value = serde_json::from_str(&text).expect("event text is JSON");
    assert_eq!(
        serde_json::to_string(&value).expect("a value serializes"),
        text,
        "event text changed through serde_json::Value"
    );
}
