//! The bounds every parser that vendor input reaches works within.
//!
//! Pushes are attacker-controlled (auth is off by default), so nothing recurses or allocates
//! without a limit. The limits are checked *before* a parser runs where the parser itself has
//! none (the `json5` crate recurses once per nesting level with no limit; a few thousand
//! levels overflow the stack), and again on what was parsed:
//!
//! - **Nesting** ([`MAX_NESTING`]): the body, a JSON string inside a field (UinCall's
//!   `eventData`, 7moor's link `content`) and the lenient parser's input are scanned with
//!   [`check_nesting`] before any parser without a bound of its own runs (strict JSON goes
//!   first: serde_json stops at 128 levels, and [`check_value`] then holds what it parsed to
//!   the limit). Deeper input is a [`MapError::TooDeep`] dead letter. Every value a
//!   mapper sees is therefore at most [`MAX_NESTING`] deep, so an event's `data` (which nests
//!   vendor values two levels down, under `vendor_fields`) stays far below serde_json's
//!   recursion limit of 128 and the sinks can always read back what they stored.
//! - **Size**: a body over [`MAX_BODY_BYTES`] is not mapped ([`MapError::TooLarge`]); a payload
//!   with more than [`MAX_FIELDS`] values in all is not either; an event whose `data` JSON is
//!   over [`MAX_EVENT_DATA_BYTES`] is not stored (the pipeline dead-letters its push). Time and phone texts longer than
//!   [`MAX_SCALAR_CHARS`] are not times or numbers (they stay in `vendor_fields`).
//!
//! The raw push is never touched: a dead letter points at it, and `callhook dead-letters`
//! shows it as received.

use serde_json::Value;

use crate::error::{MapError, Result};

/// Deepest nesting of objects and arrays mapped. Real pushes nest two or three levels.
pub const MAX_NESTING: usize = 32;
/// Largest body mapped, in bytes. Real pushes are about 1 KB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most values (objects, arrays and scalars, counted recursively) one payload may hold.
pub const MAX_FIELDS: usize = 20_000;
/// Largest `data` of one event, as JSON, in bytes. Under Kafka's default message size
/// (1,000,000 bytes) with room for the headers, so every sink takes what the mapper accepted.
pub const MAX_EVENT_DATA_BYTES: usize = 512 * 1024;
/// Longest text the time and phone parsers look at, in bytes.
pub const MAX_SCALAR_CHARS: usize = 64;

/// Returns an error when `text` nests objects or arrays deeper than [`MAX_NESTING`].
///
/// The scan follows JSON5's lexical rules (strings in `"` or `'`, a backslash escapes the next
/// character), so brackets inside strings do not count; brackets inside comments do, which can
/// only over-count. It stops as soon as the limit is passed: linear time, constant memory.
pub fn check_nesting(text: &str) -> Result<()> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &byte in text.as_bytes() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == open {
                quote = None;
            }
            continue;
        }
        match byte {
            b'"' | b'\'' => quote = Some(byte),
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(MapError::TooDeep { limit: MAX_NESTING });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Returns an error when `value` nests deeper than [`MAX_NESTING`] or holds more than
/// [`MAX_FIELDS`] values. Iterative: safe on any input.
pub fn check_value(value: &Value) -> Result<()> {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    let mut count = 0usize;
    while let Some((value, depth)) = stack.pop() {
        count += 1;
        if count > MAX_FIELDS {
            return Err(MapError::TooLarge(format!(
                "the payload holds more than {MAX_FIELDS} values"
            )));
        }
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        if depth + 1 > MAX_NESTING {
            return Err(MapError::TooDeep { limit: MAX_NESTING });
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// Parses JSON text (a body, or a JSON document inside a field) within the bounds; `json5` as
/// a fallback when `lenient` is set, after the text's nesting is checked. The error says which bound was passed,
/// or that the text is not JSON.
pub fn parse_json_text(text: &str, lenient: bool) -> Result<Value> {
    // serde_json bounds its own depth (128) and `check_value` holds the result to ours; the
    // text scan is needed before `json5`, which has no bound, and to name a failure `too_deep`.
    let value = match serde_json::from_str::<Value>(text) {
        Ok(value) => value,
        Err(_) => {
            check_nesting(text)?;
            if !lenient {
                return Err(MapError::UnparseableBody("not JSON".to_owned()));
            }
            json5::from_str::<Value>(text)
                .map_err(|_| MapError::UnparseableBody("not JSON or JSON5".to_owned()))?
        }
    };
    check_value(&value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_nesting_counts_brackets_outside_strings_only() {
        assert!(check_nesting(&"[".repeat(MAX_NESTING)).is_ok());
        assert!(check_nesting(&"[".repeat(MAX_NESTING + 1)).is_err());
        let quoted = format!(
            "{{\"a\": \"{}\", 'b': '{}'}}",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(check_nesting(&quoted).is_ok());
        let escaped = format!("{{\"a\": \"\\\"{}\"}}", "[".repeat(100));
        assert!(check_nesting(&escaped).is_ok());
        let closed = "[]".repeat(100_000);
        assert!(check_nesting(&closed).is_ok());
    }

    #[test]
    fn test_deep_text_is_too_deep_not_a_stack_overflow() {
        let deep = format!("{}1{}", "{\"a\":".repeat(200_000), "}".repeat(200_000));
        assert_eq!(check_nesting(&deep).unwrap_err().reason(), "too_deep");
        assert_eq!(
            parse_json_text(&deep, true).unwrap_err().reason(),
            "too_deep"
        );
    }

    #[test]
    fn test_value_bounds() {
        let mut value = json!(1);
        for _ in 0..MAX_NESTING {
            value = json!([value]);
        }
        assert!(check_value(&value).is_ok());
        assert_eq!(
            check_value(&json!([value])).unwrap_err().reason(),
            "too_deep"
        );
        let wide = Value::Array(vec![json!(1); MAX_FIELDS]);
        assert_eq!(check_value(&wide).unwrap_err().reason(), "too_large");
    }

    #[test]
    fn test_json5_is_only_a_fallback_when_asked() {
        assert!(parse_json_text("{a: 1}", true).is_ok());
        assert_eq!(
            parse_json_text("{a: 1}", false).unwrap_err().reason(),
            "unparseable_body"
        );
    }
}
