//! Partition keys: the call id when it is cheap to find, else the source name.
//!
//! Records of one call share a key so the log keeps them in order. Finding the id must not cost
//! a parse on the hot path, so this is a bounded byte search: the `CallSheetID` query (or form)
//! parameter of 7moor v2, or the `"callUniqueId"` (7moor v7) / `"session_id"` (UinCall) string
//! field of a JSON body, looked for in the first [`SCAN_LIMIT_BYTES`] of the body only. A key
//! found this way is at most [`MAX_KEY_BYTES`] of printable ASCII; anything else falls back.

/// How much of a body is searched for a JSON call id.
pub(crate) const SCAN_LIMIT_BYTES: usize = 64 * 1024;
/// The longest call id used as a key.
pub(crate) const MAX_KEY_BYTES: usize = 128;

const QUERY_KEY: &str = "CallSheetID";
const JSON_KEYS: &[&str] = &["callUniqueId", "session_id"];

/// Returns the partition key of a push.
pub(crate) fn partition_key(source: &str, query: Option<&str>, body: &[u8]) -> String {
    let from_query = query.and_then(|query| form_value(query.as_bytes(), QUERY_KEY));
    let from_body = || {
        let head = &body[..body.len().min(SCAN_LIMIT_BYTES)];
        match head.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | Some(b'[') => JSON_KEYS.iter().find_map(|key| json_string(head, key)),
            _ => form_value(head, QUERY_KEY),
        }
    };
    from_query
        .or_else(from_body)
        .unwrap_or_else(|| source.to_owned())
}

/// Returns the raw value of `key=` in an `&`-separated form, if it is a usable key.
fn form_value(form: &[u8], key: &str) -> Option<String> {
    form.split(|&b| b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        usable(value)
    })
}

/// Returns the value of the first `"key": "value"` in `json` without parsing the document.
/// Values with escapes are skipped (a real call id has none).
fn json_string(json: &[u8], key: &str) -> Option<String> {
    let needle = format!("\"{key}\"");
    let needle = needle.as_bytes();
    let mut rest = json;
    while let Some(found) = find(rest, needle) {
        rest = &rest[found + needle.len()..];
        let after_colon = skip_ws(rest).strip_prefix(b":").map(skip_ws);
        let Some(value) = after_colon.and_then(|v| v.strip_prefix(b"\"")) else {
            continue;
        };
        let end = value.iter().position(|&b| b == b'"' || b == b'\\')?;
        if value[end] == b'"' {
            return usable(&value[..end]);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn usable(value: &[u8]) -> Option<String> {
    let printable = value.iter().all(|b| b.is_ascii_graphic());
    if value.is_empty() || value.len() > MAX_KEY_BYTES || !printable {
        return None;
    }
    std::str::from_utf8(value).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_query_call_sheet_id() {
        let query = "CallNo=13800000000&CallSheetID=6a7b-11e9&CallState=Hangup";
        assert_eq!(partition_key("7moor", Some(query), b""), "6a7b-11e9");
        assert_eq!(partition_key("7moor", Some("CallSheetID="), b""), "7moor");
        assert_eq!(partition_key("7moor", Some("XCallSheetID=1"), b""), "7moor");
    }

    #[test]
    fn test_form_body_call_sheet_id() {
        assert_eq!(partition_key("7moor", None, b"a=1&CallSheetID=abc"), "abc");
    }

    #[test]
    fn test_json_ids() {
        let v7 = br#"{"pushType":"dialoutHangup","callUniqueId" : "123456789012345678"}"#;
        assert_eq!(partition_key("7moor", None, v7), "123456789012345678");
        let uincall = br#" {"dir":"DN","session_id":"0b6c-44"}"#;
        assert_eq!(partition_key("uincall", None, uincall), "0b6c-44");
        let number = br#"{"callUniqueId":123,"session_id":"s1"}"#;
        assert_eq!(partition_key("x", None, number), "s1");
        let escaped = br#"{"session_id":"a\"b"}"#;
        assert_eq!(partition_key("x", None, escaped), "x");
        let unterminated = br#"{"session_id":"abc"#;
        assert_eq!(partition_key("x", None, unterminated), "x");
    }

    #[test]
    fn test_bounds() {
        let long = format!(r#"{{"session_id":"{}"}}"#, "a".repeat(MAX_KEY_BYTES + 1));
        assert_eq!(partition_key("x", None, long.as_bytes()), "x");
        let far = format!(
            r#"{{"pad":"{}","session_id":"s"}}"#,
            " ".repeat(SCAN_LIMIT_BYTES)
        );
        assert_eq!(partition_key("x", None, far.as_bytes()), "x");
        let spaced = br#"{"session_id":"a b"}"#;
        assert_eq!(partition_key("x", None, spaced), "x");
    }

    proptest::proptest! {
        #[test]
        fn test_never_panics_and_is_bounded(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512), query in ".{0,64}") {
            let key = partition_key("src", Some(&query), &body);
            proptest::prop_assert!(key == "src" || (key.len() <= MAX_KEY_BYTES && key.bytes().all(|b| b.is_ascii_graphic())));
        }
    }
}
