//! The lenient JS-literal parser (`callhook_normalizer::lenient`).

use callhook_normalizer::lenient::{parse_object_literal, LiteralError};
use callhook_normalizer::limits::MAX_NESTING;
use serde_json::{Map, Value};

/// `parse_object_literal` on the input as text.
///
/// Invariants: what it accepts nests at most [`MAX_NESTING`] levels and reads back from its
/// JSON text unchanged; text serde_json reads as an object within the nesting limit is
/// accepted, with the same members (numbers compared by value: `-0` is `0`;
/// a number beyond `f64` may come back as its text), since the
/// parser is a superset of JSON; `TooDeep` only for text with more opening brackets than the
/// limit.
pub fn check_lenient(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_object_literal(&text);
    if let Ok(map) = &parsed {
        let value = Value::Object(map.clone());
        assert!(
            depth(&value) <= MAX_NESTING,
            "accepted nesting beyond the limit"
        );
        let json = serde_json::to_string(&value).expect("a value serializes");
        let read_back: Value = serde_json::from_str(&json).expect("its JSON reads back");
        assert_eq!(read_back, value, "changed through JSON");
    }
    if let Ok(Value::Object(strict)) = serde_json::from_str::<Value>(&text) {
        let strict = Value::Object(strict);
        if depth(&strict) <= MAX_NESTING {
            let map: Map<String, Value> = parsed
                .clone()
                .unwrap_or_else(|error| panic!("strict JSON refused: {error:?}"));
            let lenient = Value::Object(map);
            assert!(
                same(&lenient, &strict),
                "{lenient} differs from JSON {strict}"
            );
        }
    }
    if parsed == Err(LiteralError::TooDeep) {
        let opening = text.chars().filter(|ch| matches!(ch, '{' | '[')).count();
        assert!(opening > MAX_NESTING, "TooDeep with {opening} brackets");
    }
}

/// Levels of objects and arrays (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Equality with numbers compared by value.
fn same(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        // Beyond f64, JSON keeps the digits as a number, the literal parser as the text.
        (Value::String(_), Value::Number(b)) => !b.as_f64().is_some_and(f64::is_finite),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(va, vb)| same(va, vb))
        }
        _ => left == right,
    }
}
