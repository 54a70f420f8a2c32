//! The scalar parsers: vendor times and phone numbers.

use callhook_normalizer::phone::parse_phone;
use callhook_normalizer::time::{parse_time, parse_time_value};
use callhook_schemas::{NumberKind, PhoneNumber};
use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Utc};
use serde_json::Value;

/// Source zones an input can pick with its first byte: China, UTC and the extremes.
const ZONES_SECONDS: [i32; 5] = [8 * 3600, 0, -12 * 3600, 14 * 3600, 5 * 3600 + 45 * 60];

/// `parse_time` on the text after the first byte (which picks the source zone), and
/// `parse_time_value` on that text read as JSON when it is JSON.
///
/// Invariants: every time returned lies within 2000..2100 (UTC); a JSON string gives what
/// `parse_time` gives for its content; a time returned, written as RFC 3339 UTC, parses back
/// to itself.
pub fn check_time(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let zone = FixedOffset::east_opt(ZONES_SECONDS[usize::from(selector) % ZONES_SECONDS.len()])
        .expect("a valid offset");
    let text = String::from_utf8_lossy(rest);
    let parsed = parse_time(&text, zone);
    if let Some(time) = parsed {
        check_time_result(time, zone);
    }
    if let Ok(value) = serde_json::from_str::<Value>(&text) {
        let from_value = parse_time_value(&value, zone);
        if let Value::String(inner) = &value {
            assert_eq!(from_value, parse_time(inner, zone), "string value differs");
        }
        if let Some(time) = from_value {
            check_time_result(time, zone);
        }
    }
}

fn check_time_result(time: DateTime<Utc>, zone: FixedOffset) {
    assert!(
        (2000..2100).contains(&time.year()),
        "time {time} is out of 2000..2100"
    );
    let written = time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    assert_eq!(
        parse_time(&written, zone),
        Some(time),
        "{written} does not parse back"
    );
}

/// `parse_phone` on the input as text.
///
/// Invariants: `None` exactly for blank text; `raw` is the text as given; an E.164 form is
/// `+` and 7 to 15 digits, present for every mobile and landline, and otherwise only for
/// service and international numbers (a mobile is `+86` and 11 digits); parsing the E.164 form
/// again gives it back; the number reads back from JSON.
pub fn check_phone(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Some(phone) = parse_phone(&text) else {
        assert!(
            text.trim().is_empty(),
            "{text:?} is not blank but has no number"
        );
        return;
    };
    assert!(!text.trim().is_empty(), "blank text gave a number");
    assert_eq!(phone.raw, text, "raw is not the text as given");
    if let Some(e164) = &phone.e164 {
        let digits = e164.strip_prefix('+').expect("E.164 starts with `+`");
        assert!(
            (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
            "bad E.164 {e164:?} from {text:?}"
        );
        assert!(
            matches!(
                phone.kind,
                NumberKind::Mobile
                    | NumberKind::Landline
                    | NumberKind::Service
                    | NumberKind::International
            ),
            "{:?} has an E.164 form",
            phone.kind
        );
        if phone.kind == NumberKind::Mobile {
            assert!(
                digits.len() == 13 && digits.starts_with("861"),
                "bad mobile {e164:?}"
            );
        }
        // The kind may differ (`0800…` reads as a landline, `+86800…` as a service number),
        // the number may not.
        let again = parse_phone(e164).expect("an E.164 number parses");
        assert_eq!(again.e164.as_ref(), Some(e164), "E.164 of {e164:?} changed");
    } else {
        assert!(
            !matches!(phone.kind, NumberKind::Mobile | NumberKind::Landline),
            "{:?} without an E.164 form",
            phone.kind
        );
    }
    let text = serde_json::to_string(&phone).expect("a number serializes");
    let read_back: PhoneNumber = serde_json::from_str(&text).expect("a number reads back");
    assert_eq!(read_back, phone);
}
