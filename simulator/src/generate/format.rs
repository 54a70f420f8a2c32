//! Vendor-looking ids, numbers, times and body encodings.

use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::StdRng;
use rand::RngExt;
use serde::Serialize;
use serde_json::{Map, Value};

/// What a query or form value escapes: everything but the unreserved characters (so a space
/// is `%20` and `:` is `%3A`, as 7moor's own GETs show).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Returns `n` lowercase hex digits.
pub(crate) fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// Returns a UUID-shaped id (`8-4-4-4-12` hex).
pub(crate) fn uuid(rng: &mut StdRng) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 12)
    )
}

/// Returns `n` decimal digits (the first one not 0).
pub(crate) fn digits(rng: &mut StdRng, n: usize) -> String {
    let mut text = rng.random_range(1..10u32).to_string();
    for _ in 1..n {
        text.push(char::from_digit(rng.random_range(0..10u32), 10).unwrap_or('0'));
    }
    text
}

/// Returns a Chinese mobile number (`1[3-9]x xxxx xxxx`).
pub(crate) fn mobile(rng: &mut StdRng) -> String {
    let second = ['3', '5', '7', '8', '9'][rng.random_range(0..5usize)];
    format!("1{second}{:09}", rng.random_range(0..1_000_000_000u64))
}

/// Returns a landline with its area code (`010`, `021`, `028`, `0755` + 8 digits).
pub(crate) fn landline(rng: &mut StdRng) -> String {
    let area = ["010", "021", "028", "0755"][rng.random_range(0..4usize)];
    format!("{area}{}", digits(rng, 8))
}

/// Returns a time as the vendors' zone-less local text, `2021-05-08 14:39:37` (+08:00).
pub(crate) fn local(time: DateTime<Utc>) -> String {
    time.with_timezone(&super::china())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Returns epoch seconds as text (`"1620455977"`).
pub(crate) fn epoch(time: DateTime<Utc>) -> String {
    time.timestamp().to_string()
}

/// Returns an Asterisk timestamp, epoch seconds with microseconds (`"1534993059.785012"`).
pub(crate) fn asterisk_timestamp(time: DateTime<Utc>, micros: u32) -> String {
    format!("{}.{micros:06}", time.timestamp())
}

/// Returns a JSON object from ordered pairs (the order is kept in the body).
pub(crate) fn object<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

/// Returns compact JSON.
pub(crate) fn json_compact(value: &Map<String, Value>) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Returns JSON the way 7moor prints it: one member per line, no indentation.
pub(crate) fn json_lines(value: &Map<String, Value>) -> String {
    let members: Vec<String> = value
        .iter()
        .map(|(key, value)| format!("{}: {}", Value::from(key.as_str()), value))
        .collect();
    format!("{{\n{}\n}}", members.join(",\n"))
}

/// Returns JSON indented by four spaces (UinCall's examples).
pub(crate) fn json_indented(value: &Map<String, Value>) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut serializer).is_err() {
        return json_compact(value);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Returns a JavaScript object literal as CooCenter documents its pushes: bare keys, one
/// member per line, strings in `quote`, numbers bare, a trailing comma.
pub(crate) fn js_literal(value: &Map<String, Value>, quote: char) -> String {
    let mut out = String::from("{\n");
    for (key, value) in value {
        out.push_str(key);
        out.push(':');
        match value {
            Value::String(text) => {
                out.push(quote);
                for ch in text.chars() {
                    if ch == quote || ch == '\\' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push(quote);
            }
            other => out.push_str(&other.to_string()),
        }
        out.push_str(",\n");
    }
    out.push('}');
    out
}

/// Returns `key=value&...` with every value percent-encoded (UTF-8).
pub(crate) fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", utf8_percent_encode(value, QUERY_VALUE)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns an `application/x-www-form-urlencoded` body of a JSON object's scalar members.
pub(crate) fn form(value: &Map<String, Value>) -> String {
    let pairs: Vec<(&str, String)> = value
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.as_str(), text)
        })
        .collect();
    query(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    #[test]
    fn test_ids_have_vendor_shapes() {
        let mut rng = StdRng::seed_from_u64(3);
        let id = uuid(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        let number = mobile(&mut rng);
        assert_eq!(number.len(), 11);
        assert!(number.starts_with('1'));
        assert!(landline(&mut rng).starts_with('0'));
        assert_eq!(digits(&mut rng, 18).len(), 18);
    }

    #[test]
    fn test_local_time_is_china() {
        let time = DateTime::from_timestamp(1_620_455_977, 0).unwrap();
        assert_eq!(local(time), "2021-05-08 14:39:37");
        assert_eq!(epoch(time), "1620455977");
        assert_eq!(asterisk_timestamp(time, 42), "1620455977.000042");
    }

    #[test]
    fn test_encodings() {
        let fields = object([
            ("event", json!("cdr")),
            ("callerid", json!("\"808\" <808>")),
            ("holdTime", json!(0)),
        ]);
        assert_eq!(
            js_literal(&fields, '"'),
            "{\nevent:\"cdr\",\ncallerid:\"\\\"808\\\" <808>\",\nholdTime:0,\n}"
        );
        assert_eq!(
            query(&[
                ("Ring", "2021-02-05 20:39:09".to_owned()),
                ("Q", "售".to_owned())
            ]),
            "Ring=2021-02-05%2020%3A39%3A09&Q=%E5%94%AE"
        );
        assert_eq!(
            form(&fields),
            "event=cdr&callerid=%22808%22%20%3C808%3E&holdTime=0"
        );
        assert_eq!(
            json_lines(&object([("a", json!("1")), ("b", json!(2))])),
            "{\n\"a\": \"1\",\n\"b\": 2\n}"
        );
        assert!(json_indented(&fields).contains("\n    \"event\": \"cdr\""));
    }
}
