//! Phone numbers: kept as received, normalized to E.164 only where unambiguous.
//!
//! Rules (mainland China numbering plan, the vendors' home market):
//! - `+CC…` and `00CC…` are international; `+86`/`0086`/`86`+mobile are Chinese and parsed on.
//! - `1[3-9]` + 9 digits is a mobile (`+86…`); a leading trunk `0` before it is dropped.
//! - `010`/`02X` + 8 digits and `0[3-9]XX` + 7–8 digits are landlines (`+86` + number without 0).
//! - `400`/`800` + 7 digits are national service numbers (`+86…`); `95xxx`, `96xxx`, `1xxxx`
//!   (3–6 digits) are short service codes, with no E.164 form.
//! - 2–6 digits otherwise are extensions; anything else (SIP URIs, `s`, 7–8 digit local numbers
//!   without an area code) is `unknown` with no E.164 form.
//!   `"808" <808>` (Asterisk caller id) is read as the number inside the angle brackets.

use callhook_schemas::{NumberKind, PhoneNumber};

/// Returns the number as received plus its normalized form, or `None` for an empty value.
pub fn parse_phone(raw: &str) -> Option<PhoneNumber> {
    if raw.trim().is_empty() {
        return None;
    }
    // Longer than any dialable number: kept as sent, never classified.
    let (kind, e164) = if raw.len() > crate::limits::MAX_SCALAR_CHARS {
        (NumberKind::Unknown, None)
    } else {
        classify(raw)
    };
    Some(PhoneNumber {
        raw: raw.to_owned(),
        e164,
        kind,
    })
}

fn classify(raw: &str) -> (NumberKind, Option<String>) {
    let inner = angle_bracketed(raw).unwrap_or(raw).trim();
    let Some(digits) = dial_digits(inner) else {
        return (NumberKind::Unknown, None);
    };
    if digits.plus {
        return classify_international(&digits.text);
    }
    if let Some(rest) = digits.text.strip_prefix("00") {
        return classify_international(rest);
    }
    classify_national(&digits.text)
}

struct Digits {
    plus: bool,
    text: String,
}

/// Strips the separators people and PBXs put in numbers; `None` if anything else remains.
fn dial_digits(text: &str) -> Option<Digits> {
    let (plus, body) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut out = String::with_capacity(body.len());
    for ch in body.chars() {
        match ch {
            '0'..='9' => out.push(ch),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(Digits { plus, text: out })
}

fn angle_bracketed(raw: &str) -> Option<&str> {
    let start = raw.rfind('<')?;
    let end = raw[start..].find('>')? + start;
    Some(&raw[start + 1..end])
}

fn classify_international(digits: &str) -> (NumberKind, Option<String>) {
    if let Some(national) = digits.strip_prefix("86") {
        let (kind, e164) = classify_national(national);
        if e164.is_some() {
            return (kind, e164);
        }
        // +86 followed by a landline written without its trunk 0.
        let (kind, e164) = classify_national(&format!("0{national}"));
        if kind == NumberKind::Landline {
            return (kind, e164);
        }
        return (NumberKind::Unknown, None);
    }
    if (7..=15).contains(&digits.len()) && !digits.starts_with('0') {
        return (NumberKind::International, Some(format!("+{digits}")));
    }
    (NumberKind::Unknown, None)
}

fn classify_national(digits: &str) -> (NumberKind, Option<String>) {
    let len = digits.len();
    if is_mobile(digits) {
        return (NumberKind::Mobile, Some(format!("+86{digits}")));
    }
    if len == 12 && digits.starts_with('0') && is_mobile(&digits[1..]) {
        return (NumberKind::Mobile, Some(format!("+86{}", &digits[1..])));
    }
    if len == 13 && digits.starts_with("86") && is_mobile(&digits[2..]) {
        return (NumberKind::Mobile, Some(format!("+{digits}")));
    }
    if is_landline(digits) {
        return (NumberKind::Landline, Some(format!("+86{}", &digits[1..])));
    }
    if len == 10 && (digits.starts_with("400") || digits.starts_with("800")) {
        return (NumberKind::Service, Some(format!("+86{digits}")));
    }
    if (5..=6).contains(&len) && (digits.starts_with("95") || digits.starts_with("96")) {
        return (NumberKind::Service, None);
    }
    if is_short_service(digits) {
        return (NumberKind::Service, None);
    }
    if (2..=6).contains(&len) {
        return (NumberKind::Extension, None);
    }
    (NumberKind::Unknown, None)
}

fn is_mobile(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    bytes.len() == 11 && bytes[0] == b'1' && (b'3'..=b'9').contains(&bytes[1])
}

fn is_landline(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    if bytes.len() < 10 || bytes[0] != b'0' || bytes[1] == b'0' {
        return false;
    }
    let area_len = if bytes[1] == b'1' || bytes[1] == b'2' {
        3
    } else {
        4
    };
    if bytes[1] == b'1' && bytes[2] != b'0' {
        // 01x other than 010 is not an area code (and 01[3-9] is a prefixed mobile).
        return false;
    }
    let subscriber = &digits[area_len..];
    let first = subscriber.as_bytes().first().copied().unwrap_or(b'0');
    let len_ok = if area_len == 3 {
        subscriber.len() == 8
    } else {
        (7..=8).contains(&subscriber.len())
    };
    len_ok && first != b'0' && first != b'1'
}

fn is_short_service(digits: &str) -> bool {
    // Emergency and public numbers (110 police, 112, 114 directory, 119 fire, 120 ambulance,
    // 122 traffic) and 5-digit carrier / government lines (10086, 10010, 10000, 12345, 12315).
    // Other 3-digit numbers (100, 808) are PBX extensions.
    match digits.len() {
        3 => matches!(digits, "110" | "112" | "114" | "119" | "120" | "122"),
        5 => digits.starts_with("100") || digits.starts_with("123") || digits.starts_with("121"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str) -> (NumberKind, Option<String>) {
        let parsed = parse_phone(raw).unwrap();
        assert_eq!(parsed.raw, raw);
        (parsed.kind, parsed.e164)
    }

    #[test]
    fn test_mobiles() {
        let expected = (NumberKind::Mobile, Some("+8617319132391".to_owned()));
        for raw in [
            "17319132391",
            "017319132391",
            "8617319132391",
            "+8617319132391",
            "008617319132391",
            "173-1913-2391",
            "+86 173 1913 2391",
        ] {
            assert_eq!(norm(raw), expected, "{raw}");
        }
    }

    #[test]
    fn test_landlines() {
        assert_eq!(
            norm("01081400192"),
            (NumberKind::Landline, Some("+861081400192".into()))
        );
        assert_eq!(
            norm("02863208372"),
            (NumberKind::Landline, Some("+862863208372".into()))
        );
        assert_eq!(
            norm("02258834811"),
            (NumberKind::Landline, Some("+862258834811".into()))
        );
        assert_eq!(
            norm("075526345678"),
            (NumberKind::Landline, Some("+8675526345678".into()))
        );
        assert_eq!(
            norm("05718234567"),
            (NumberKind::Landline, Some("+865718234567".into()))
        );
        assert_eq!(
            norm("+861081400192"),
            (NumberKind::Landline, Some("+861081400192".into()))
        );
    }

    #[test]
    fn test_service_extension_and_unknown() {
        assert_eq!(
            norm("4008001234"),
            (NumberKind::Service, Some("+864008001234".into()))
        );
        assert_eq!(norm("95588"), (NumberKind::Service, None));
        assert_eq!(norm("10086"), (NumberKind::Service, None));
        assert_eq!(norm("808"), (NumberKind::Extension, None));
        assert_eq!(norm("100"), (NumberKind::Extension, None));
        assert_eq!(norm("110"), (NumberKind::Service, None));
        assert_eq!(norm("20001"), (NumberKind::Extension, None));
        assert_eq!(norm("\"808\" <808>"), (NumberKind::Extension, None));
        assert_eq!(
            norm("\"Zhang\" <17319132391>"),
            (NumberKind::Mobile, Some("+8617319132391".into()))
        );
        assert_eq!(norm("s"), (NumberKind::Unknown, None));
        assert_eq!(norm("SIP/886"), (NumberKind::Unknown, None));
        assert_eq!(norm("85322361"), (NumberKind::Unknown, None));
        assert_eq!(
            norm("+14155550100"),
            (NumberKind::International, Some("+14155550100".into()))
        );
        assert_eq!(parse_phone(""), None);
        assert_eq!(parse_phone("  "), None);
    }

    proptest! {
        #[test]
        fn test_never_panics_and_keeps_raw(raw in ".{0,30}") {
            if let Some(parsed) = parse_phone(&raw) {
                prop_assert_eq!(parsed.raw, raw);
                if let Some(e164) = parsed.e164 {
                    prop_assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()));
                    prop_assert!((8..=16).contains(&e164.len()));
                }
            }
        }
    }
}
