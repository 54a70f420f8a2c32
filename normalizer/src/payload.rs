//! Turns a raw push (query string and body) into one JSON object of vendor fields.
//!
//! Order of attempts for a body: strict JSON, then JSON5, then the forgiving JS-literal parser
//! ([`crate::lenient`]), then form encoding. A form content type goes straight to form
//! decoding. Query parameters and body fields are merged into one map, the way the vendors'
//! own sample receivers do: a body field wins, and a query parameter whose name the body also
//! uses is kept as `query.<name>` so nothing is lost. Query parameters named in the source's
//! `redact_params` (auth tokens) are dropped here, before they could reach an event.
//!
//! Text: a `charset` declared in the content type is how the body (and a form body's values)
//! is read; without one, the body is UTF-8 with invalid bytes replaced. A query string is read
//! as UTF-8 when its bytes are UTF-8, else in the declared charset. Every parser runs within
//! the bounds of [`crate::limits`]. The raw bytes stay in the raw log whatever happens here.

use std::borrow::Cow;

use encoding_rs::Encoding;
use serde_json::map::Entry;
use serde_json::{Map, Value};

use crate::error::{MapError, Result};
use crate::limits::{check_nesting, check_value, MAX_BODY_BYTES, MAX_FIELDS, MAX_NESTING};
use crate::push::{RawPush, SourceContext};

/// How the body was read (recorded for diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// No body (or only white space).
    Empty,
    /// Strict JSON.
    Json,
    /// JSON5.
    Json5,
    /// A JavaScript object literal only the forgiving parser accepts.
    JsLiteral,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// The merged fields of one push.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Every field, query and body merged.
    pub fields: Map<String, Value>,
    /// How the body was read.
    pub body_format: BodyFormat,
    /// True when any field came from the query string.
    pub from_query: bool,
}

/// Parses a push into its merged fields; fails only when nothing usable is there, or when the
/// push passes a bound of [`crate::limits`].
pub fn parse_payload(push: &RawPush<'_>, ctx: &SourceContext) -> Result<Payload> {
    if push.body.len() > MAX_BODY_BYTES {
        return Err(MapError::TooLarge(format!(
            "the body has {} bytes; at most {MAX_BODY_BYTES} are mapped",
            push.body.len()
        )));
    }
    if push.query.is_some_and(|query| query.len() > MAX_BODY_BYTES) {
        return Err(MapError::TooLarge(format!(
            "the query string has more than {MAX_BODY_BYTES} bytes"
        )));
    }
    let charset = declared_charset(push.content_type);
    let (body_fields, body_format) = parse_body(push.body, push.content_type, charset)?;
    let mut fields = body_fields;
    let mut from_query = false;
    if let Some(query) = push.query.filter(|q| !q.is_empty()) {
        for (name, value) in decode_form(query.as_bytes(), FormText::Query(charset))? {
            if ctx.redact_params.iter().any(|p| p == &name) {
                continue;
            }
            from_query = true;
            // One hash of the name per parameter (`get` then `insert` took two).
            match fields.entry(name) {
                Entry::Vacant(vacant) => {
                    vacant.insert(value);
                }
                Entry::Occupied(existing) if *existing.get() == value => {}
                Entry::Occupied(existing) => {
                    let renamed = format!("query.{}", existing.key());
                    fields.insert(renamed, value);
                }
            }
        }
    }
    if fields.is_empty() {
        return Err(match body_format {
            BodyFormat::Empty => MapError::EmptyPush,
            _ => MapError::UnrecognizedShape("the payload has no fields".to_owned()),
        });
    }
    Ok(Payload {
        fields,
        body_format,
        from_query,
    })
}

/// Returns the encoding named by a `charset` parameter of the content type (GBK, GB18030 and
/// Big5 are common from Chinese PBXs), unless it is UTF-8 or unknown, which keep the default
/// reading: UTF-8, with Latin-1 mojibake repaired in form values.
fn declared_charset(content_type: Option<&str>) -> Option<&'static Encoding> {
    let content_type = content_type?;
    let label = content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches(|c| c == '"' || c == '\''))
    })?;
    Encoding::for_label(label.as_bytes()).filter(|encoding| *encoding != encoding_rs::UTF_8)
}

fn parse_body(
    body: &[u8],
    content_type: Option<&str>,
    charset: Option<&'static Encoding>,
) -> Result<(Map<String, Value>, BodyFormat)> {
    let text = match charset {
        Some(encoding) => encoding.decode_without_bom_handling(body).0,
        None => utf8_lossy(body),
    };
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.is_empty() {
        return Ok((Map::new(), BodyFormat::Empty));
    }
    let is_form_type = content_type
        .map(|ct| ct.to_ascii_lowercase().contains("x-www-form-urlencoded"))
        .unwrap_or(false);
    if is_form_type && !trimmed.starts_with('{') {
        return Ok((
            form_map(body_form_bytes(body, trimmed, charset), charset)?,
            BodyFormat::Form,
        ));
    }
    // Strict JSON first: serde_json stops at a depth of 128 on its own, and `check_value` holds
    // what it parsed to [`MAX_NESTING`], so the text need not be scanned twice on the common path.
    let strict = match trimmed.starts_with('{') {
        true => serde_json::from_str::<TopLevel>(trimmed).map(|top| top.0),
        false => serde_json::from_str::<Value>(trimmed),
    };
    if let Ok(value) = strict {
        return object_or_error(value, BodyFormat::Json);
    }
    // Every parser below is bounded by this scan: `json5` has no depth limit of its own.
    check_nesting(trimmed)?;
    if trimmed.starts_with('{') {
        if let Ok(value) = json5::from_str::<Value>(trimmed) {
            return object_or_error(value, BodyFormat::Json5);
        }
        return crate::lenient::parse_object_literal(trimmed)
            .map_err(|error| match error {
                crate::lenient::LiteralError::TooDeep => MapError::TooDeep { limit: MAX_NESTING },
                crate::lenient::LiteralError::Syntax(detail) => MapError::UnparseableBody(detail),
            })
            .and_then(|map| {
                check_map(&map)?;
                Ok((map, BodyFormat::JsLiteral))
            });
    }
    if looks_like_form(trimmed) {
        return Ok((
            form_map(body_form_bytes(body, trimmed, charset), charset)?,
            BodyFormat::Form,
        ));
    }
    Err(MapError::UnparseableBody(
        "not JSON, a JavaScript object literal or form encoding".to_owned(),
    ))
}

/// The bytes a form body is decoded from: the raw bytes when a charset is declared (each
/// percent-decoded value is then read in that charset), else the trimmed text.
fn body_form_bytes<'a>(body: &'a [u8], trimmed: &'a str, charset: Option<&Encoding>) -> &'a [u8] {
    match charset {
        Some(_) => body.trim_ascii(),
        None => trimmed.as_bytes(),
    }
}

/// A JSON object body as serde_json's `Value` reads one, except that its map starts with room
/// for a typical push's fields: growing it from empty rehashed every key some five times (3 %
/// of 7moor mapping). Duplicates behave as in `Value` (the last value of a repeated key wins,
/// in the first one's place). Only for text that starts with `{`: with `arbitrary_precision`,
/// serde_json hands a bare number to `visit_map` too.
struct TopLevel(Value);

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

/// Fields a push typically carries (7moor v7 sends 30 to 50).
const TYPICAL_FIELDS: usize = 64;

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> std::result::Result<TopLevel, A::Error> {
        let mut map = Map::with_capacity(TYPICAL_FIELDS);
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            map.insert(key, value);
        }
        Ok(TopLevel(Value::Object(map)))
    }
}

fn object_or_error(value: Value, format: BodyFormat) -> Result<(Map<String, Value>, BodyFormat)> {
    check_value(&value)?;
    match value {
        Value::Object(map) => Ok((map, format)),
        other => Err(MapError::UnrecognizedShape(format!(
            "the body is a JSON {}, not an object",
            json_kind(&other)
        ))),
    }
}

fn check_map(map: &Map<String, Value>) -> Result<()> {
    if map.len() > MAX_FIELDS {
        return Err(MapError::TooLarge(format!(
            "the payload holds more than {MAX_FIELDS} values"
        )));
    }
    map.values().try_for_each(check_value)
}

/// Names a JSON value's type (`null`, `string`, `array` ...) for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn looks_like_form(text: &str) -> bool {
    let first = text.split('&').next().unwrap_or("");
    match first.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '%' | '[' | ']'))
        }
        None => false,
    }
}

fn form_map(bytes: &[u8], charset: Option<&'static Encoding>) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for (name, value) in decode_form(bytes, FormText::Body(charset))? {
        match map.get_mut(&name) {
            None => {
                map.insert(name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    Ok(map)
}

/// How the percent-decoded bytes of a form or query value are read.
#[derive(Debug, Clone, Copy)]
enum FormText {
    /// A form body: in its declared charset, when there is one.
    Body(Option<&'static Encoding>),
    /// A query string, which has no charset of its own: UTF-8 when the bytes are UTF-8, else
    /// the body's declared charset.
    Query(Option<&'static Encoding>),
}

/// Decodes `a=1&b=2` (`+` is a space), reading each name and value as `text` says. Without a
/// charset, invalid UTF-8 bytes are replaced and UTF-8 text that was read as Latin-1 is
/// repaired. At most [`MAX_FIELDS`] pairs.
fn decode_form(bytes: &[u8], text: FormText) -> Result<Vec<(String, Value)>> {
    let mut pairs = Vec::new();
    for pair in bytes
        .split(|byte| *byte == b'&')
        .filter(|pair| !pair.is_empty())
    {
        if pairs.len() == MAX_FIELDS {
            return Err(MapError::TooLarge(format!(
                "more than {MAX_FIELDS} form or query fields"
            )));
        }
        let (name, value) = match pair.iter().position(|byte| *byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let name = decode_component(name, text);
        if name.is_empty() {
            continue;
        }
        pairs.push((name, Value::String(decode_component(value, text))));
    }
    Ok(pairs)
}

fn decode_component(raw: &[u8], text: FormText) -> String {
    let spaced: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&byte| if byte == b'+' { b' ' } else { byte })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(&spaced).into();
    let charset = match text {
        FormText::Body(charset) => charset,
        FormText::Query(charset) => charset.filter(|_| std::str::from_utf8(&decoded).is_err()),
    };
    match charset {
        Some(encoding) => encoding
            .decode_without_bom_handling(&decoded)
            .0
            .into_owned(),
        None => repair_latin1_mojibake(utf8_lossy(&decoded).into_owned()),
    }
}

/// `String::from_utf8_lossy`, with the check of valid text (nearly every push) done by
/// `str::from_utf8`, which reads ASCII a word at a time; the lossy walk went byte by byte and
/// was 4 % of the 7moor mapping.
fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Recovers UTF-8 text (Chinese names, provinces) that a gateway decoded as ISO-8859-1.
pub fn repair_latin1_mojibake(text: String) -> String {
    if text.is_ascii() || text.chars().any(|c| c as u32 > 0xff) {
        return text;
    }
    let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
    match String::from_utf8(bytes) {
        Ok(repaired) => repaired,
        Err(_) => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{Dialect, SourceContext};
    use serde_json::json;

    fn push<'a>(
        method: &'a str,
        content_type: Option<&'a str>,
        query: Option<&'a str>,
        body: &'a [u8],
    ) -> RawPush<'a> {
        RawPush {
            method,
            content_type,
            query,
            headers: &[],
            body,
            received_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn ctx() -> SourceContext {
        let mut ctx = SourceContext::new("7moor", Dialect::SevenMoor);
        ctx.redact_params = vec!["token".to_owned()];
        ctx
    }

    #[test]
    fn test_query_only_push() {
        let payload = parse_payload(
            &push("GET", None, Some("CallNo=123&Agent=8000&AgentName=%E5%BC%A0%E4%B8%89&Begin=2021-02-05+20%3A39%3A09&token=s3cret"), b""),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(payload.fields),
            json!({"CallNo": "123", "Agent": "8000", "AgentName": "张三", "Begin": "2021-02-05 20:39:09"})
        );
        assert!(payload.from_query);
        assert_eq!(payload.body_format, BodyFormat::Empty);
    }

    #[test]
    fn test_body_wins_and_conflicting_query_is_kept() {
        let payload = parse_payload(
            &push(
                "POST",
                Some("application/json"),
                Some("a=1&b=2"),
                br#"{"a":"9"}"#,
            ),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(payload.fields),
            json!({"a": "9", "query.a": "1", "b": "2"})
        );
    }

    #[test]
    fn test_body_formats_in_order() {
        let cases: [(&[u8], Option<&str>, BodyFormat); 5] = [
            (br#"{"event":"x"}"#, None, BodyFormat::Json),
            (b"{event:'x',}", Some("text/plain"), BodyFormat::Json5),
            (b"{event:\"x\"\nb:1}", None, BodyFormat::JsLiteral),
            (
                b"event=x&b=1",
                Some("application/x-www-form-urlencoded"),
                BodyFormat::Form,
            ),
            (b"event=x&b=1", None, BodyFormat::Form),
        ];
        for (body, content_type, expected) in cases {
            let payload = parse_payload(&push("POST", content_type, None, body), &ctx()).unwrap();
            assert_eq!(
                payload.body_format,
                expected,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(payload.fields["event"], json!("x"));
        }
    }

    #[test]
    fn test_errors_are_typed() {
        let empty = parse_payload(&push("POST", None, None, b"  "), &ctx()).unwrap_err();
        assert_eq!(empty.reason(), "empty_push");
        let garbage =
            parse_payload(&push("POST", None, None, b"\x00\xff garbage"), &ctx()).unwrap_err();
        assert_eq!(garbage.reason(), "unparseable_body");
        let array = parse_payload(&push("POST", None, None, b"[1,2]"), &ctx()).unwrap_err();
        assert_eq!(array.reason(), "unrecognized_shape");
        let broken = parse_payload(&push("POST", None, None, b"{\"a\":"), &ctx()).unwrap_err();
        assert_eq!(broken.reason(), "unparseable_body");
    }

    #[test]
    fn test_repeated_form_keys_become_an_array() {
        let payload = parse_payload(
            &push(
                "POST",
                Some("application/x-www-form-urlencoded"),
                None,
                b"k=1&k=2",
            ),
            &ctx(),
        )
        .unwrap();
        assert_eq!(payload.fields["k"], json!(["1", "2"]));
    }

    #[test]
    fn test_latin1_mojibake_is_repaired() {
        let mojibake: String = "北京市".as_bytes().iter().map(|&b| b as char).collect();
        assert_eq!(repair_latin1_mojibake(mojibake), "北京市");
        assert_eq!(repair_latin1_mojibake("café".to_owned()), "café");
    }
}
