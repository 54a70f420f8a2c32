//! Vendor time formats, all into UTC.
//!
//! Accepted (after trimming, and after one more percent-decoding when the text still holds
//! `%` escapes or `+` for a space, which double-encoded GET pushes carry):
//! - `""` and whitespace: absent;
//! - epoch seconds (10 digits), milliseconds (13), microseconds (16) or nanoseconds (19),
//!   with an optional fraction (`"1534993059.785012"`), as a string or a JSON number, read
//!   exactly (decimal digits, never through a binary float);
//! - `YYYY-MM-DD HH:mm:ss` in the source's zone, also with `T`, no separator at all
//!   (`2018-11-0519:05:31`), a fraction of a second, or `/` as the date separator;
//! - `yyyyMMddHHmmss` (14 digits) in the source's zone;
//! - RFC 3339 with an explicit offset (kept as given).
//!
//! Anything else is not a time: the caller keeps the raw value in `vendor_fields`. So is a
//! text longer than [`MAX_SCALAR_CHARS`], one still percent-encoded after two decodings, and
//! a time, in any of these forms, before 2000 or from 2100 on.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;

use crate::limits::MAX_SCALAR_CHARS;

/// Earliest epoch second accepted as a real event time (2000-01-01).
const MIN_EPOCH_SECONDS: i64 = 946_684_800;
/// Latest epoch second accepted (2100-01-01); beyond is garbage, not a time.
const MAX_EPOCH_SECONDS: i64 = 4_102_444_800;

/// Parses a vendor time value; returns `None` when it is absent or not a time.
pub fn parse_time_value(value: &Value, zone: FixedOffset) -> Option<DateTime<Utc>> {
    match value {
        Value::String(text) => parse_time(text, zone),
        // With serde_json's `arbitrary_precision`, a number renders as the digits the vendor
        // sent, so a fraction is read exactly rather than through a binary float.
        Value::Number(number) => parse_epoch(&number.to_string()),
        _ => None,
    }
}

/// Parses a vendor time string; returns `None` when it is absent or not a time.
pub fn parse_time(text: &str, zone: FixedOffset) -> Option<DateTime<Utc>> {
    parse_time_decoded(text, zone, MAX_DECODINGS)
}

/// Percent-decodings tried on one time text: once for an encoded query value, once more for a
/// double-encoded one.
const MAX_DECODINGS: usize = 2;

fn parse_time_decoded(
    text: &str,
    zone: FixedOffset,
    decodings_left: usize,
) -> Option<DateTime<Utc>> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_SCALAR_CHARS {
        return None;
    }
    if trimmed.contains('%') || trimmed.contains('+') && !looks_like_offset(trimmed) {
        let decoded = percent_decode_plus(trimmed);
        if decoded != trimmed {
            return decodings_left
                .checked_sub(1)
                .and_then(|left| parse_time_decoded(&decoded, zone, left));
        }
    }
    if let Some(time) = parse_epoch(trimmed) {
        return Some(time);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return within_bounds(time.with_timezone(&Utc));
    }
    parse_local(trimmed).and_then(|naive| local_to_utc(naive, zone))
}

fn looks_like_offset(text: &str) -> bool {
    // `2021-05-08T14:39:37+08:00`: a `+` after the time part is an offset, not a space.
    text.len() > 19 && text.as_bytes().get(10) == Some(&b'T')
}

fn percent_decode_plus(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads an epoch time in seconds (9–10 digits), milliseconds (13), microseconds (16) or
/// nanoseconds (19), with an optional decimal fraction of that unit, in integer arithmetic:
/// the result is exact to the nanosecond (further digits are cut).
fn parse_epoch(text: &str) -> Option<DateTime<Utc>> {
    if text.len() > MAX_SCALAR_CHARS {
        return None;
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    // Nanoseconds per unit of the whole part, by its digit count.
    let unit_nanos: i128 = match whole.len() {
        9 | 10 => 1_000_000_000,
        13 => 1_000_000,
        16 => 1_000,
        19 => 1,
        _ => return None,
    };
    let whole: i128 = whole.parse().ok()?;
    let mut nanos = whole * unit_nanos;
    let mut scale = unit_nanos / 10;
    for digit in fraction.unwrap_or("").bytes() {
        if scale == 0 {
            break;
        }
        nanos += i128::from(digit - b'0') * scale;
        scale /= 10;
    }
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    if !(MIN_EPOCH_SECONDS..MAX_EPOCH_SECONDS).contains(&seconds) {
        return None;
    }
    Utc.timestamp_opt(seconds, subsec).single()
}

fn parse_local(text: &str) -> Option<NaiveDateTime> {
    if let Some(time) = parse_plain_local(text) {
        return Some(time);
    }
    let bytes = text.as_bytes();
    if bytes.len() == 14 && bytes.iter().all(u8::is_ascii_digit) {
        return NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S").ok();
    }
    if bytes.len() < 18 {
        return None;
    }
    let date_part = text.get(..10)?.replace('/', "-");
    let date = NaiveDate::parse_from_str(&date_part, "%Y-%m-%d").ok()?;
    let rest = text.get(10..)?;
    let rest = rest.strip_prefix([' ', 'T']).unwrap_or(rest).trim_start();
    let time = NaiveTime::parse_from_str(rest, "%H:%M:%S%.f").ok()?;
    Some(date.and_time(time))
}

/// The shape nearly every vendor sends, `2021-05-08 14:39:37` (or `/` between the date's
/// parts), read without chrono's format-string parser. `None` for anything else, including a
/// leap second, which [`parse_local`]'s general path then reads as chrono does.
fn parse_plain_local(text: &str) -> Option<NaiveDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 19 || !matches!(bytes[10], b' ' | b'T') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let date_separators = matches!(bytes[4], b'-' | b'/') && matches!(bytes[7], b'-' | b'/');
    if !date_separators || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = i32::try_from(number(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)?;
    let time = NaiveTime::from_hms_opt(number(11..13)?, number(14..16)?, number(17..19)?)?;
    Some(date.and_time(time))
}

fn local_to_utc(naive: NaiveDateTime, zone: FixedOffset) -> Option<DateTime<Utc>> {
    let time = zone.from_local_datetime(&naive).single()?;
    within_bounds(time.with_timezone(&Utc))
}

/// Returns `time` when it lies within 2000..2100, the bounds of every time format here.
fn within_bounds(time: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (MIN_EPOCH_SECONDS..MAX_EPOCH_SECONDS)
        .contains(&time.timestamp())
        .then_some(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zone() -> FixedOffset {
        crate::push::china_offset()
    }

    fn utc(text: &str) -> Option<DateTime<Utc>> {
        Some(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn test_epoch_forms() {
        assert_eq!(
            parse_time("1620455977", zone()),
            utc("2021-05-08T06:39:37Z")
        );
        assert_eq!(
            parse_time("1534993059.785012", zone()),
            utc("2018-08-23T02:57:39.785012Z")
        );
        assert_eq!(
            parse_time("1609226863021", zone()),
            utc("2020-12-29T07:27:43.021Z")
        );
        assert_eq!(
            parse_time_value(&serde_json::json!(1620455977), zone()),
            utc("2021-05-08T06:39:37Z")
        );
        assert_eq!(
            parse_time_value(&serde_json::json!(1609226863021_i64), zone()),
            utc("2020-12-29T07:27:43.021Z")
        );
    }

    #[test]
    fn test_local_forms_use_the_source_zone() {
        let expected = utc("2021-05-08T06:39:37Z");
        assert_eq!(parse_time("2021-05-08 14:39:37", zone()), expected);
        assert_eq!(parse_time("2021-05-0814:39:37", zone()), expected);
        assert_eq!(parse_time("2021-05-08T14:39:37", zone()), expected);
        assert_eq!(parse_time("2021/05/08 14:39:37", zone()), expected);
        assert_eq!(parse_time("20210508143937", zone()), expected);
        assert_eq!(parse_time("2021-05-08+14%3A39%3A37", zone()), expected);
        assert_eq!(parse_time("2021-05-08%2014:39:37", zone()), expected);
        let utc_zone = FixedOffset::east_opt(0).unwrap();
        assert_eq!(parse_time("2021-05-08 06:39:37", utc_zone), expected);
    }

    #[test]
    fn test_rfc3339_keeps_its_offset() {
        assert_eq!(
            parse_time("2021-05-08T14:39:37+08:00", zone()),
            utc("2021-05-08T06:39:37Z")
        );
    }

    #[test]
    fn test_rfc3339_outside_the_bounds_is_none() {
        // Found by the `time` fuzz target: RFC 3339 skipped the 2000..2100 bounds.
        assert_eq!(parse_time("2221-05-08T15:39:37+08:00", zone()), None);
        assert_eq!(parse_time("6171-05-08 14:39:37Z", zone()), None);
        assert_eq!(parse_time("1999-12-31T23:59:59Z", zone()), None);
        assert_eq!(
            parse_time("2000-01-01T00:00:00Z", zone()),
            utc("2000-01-01T00:00:00Z")
        );
        assert_eq!(parse_time("2100-01-01T00:00:00Z", zone()), None);
    }

    #[test]
    fn test_absent_and_garbage_are_none() {
        for text in [
            "",
            "   ",
            "0",
            "abc",
            "2021-13-40 99:00:00",
            "12",
            "-1",
            "1.2.3",
            "NaN",
        ] {
            assert_eq!(parse_time(text, zone()), None, "{text:?}");
        }
        assert_eq!(parse_time_value(&serde_json::json!(null), zone()), None);
        assert_eq!(parse_time_value(&serde_json::json!(-5), zone()), None);
        let deep = format!("{}2021-05-08", "%25".repeat(100_000));
        assert_eq!(parse_time(&deep, zone()), None);
    }

    #[test]
    fn test_fractions_are_exact() {
        let number: Value = serde_json::from_str("1620455977.123456").unwrap();
        assert_eq!(
            parse_time_value(&number, zone()),
            utc("2021-05-08T06:39:37.123456Z")
        );
        let millis: Value = serde_json::from_str("1620455977123.456").unwrap();
        assert_eq!(
            parse_time_value(&millis, zone()),
            utc("2021-05-08T06:39:37.123456Z")
        );
        assert_eq!(
            parse_time("1620455977123456", zone()),
            utc("2021-05-08T06:39:37.123456Z")
        );
        assert_eq!(
            parse_time("1620455977.1234567891", zone()),
            utc("2021-05-08T06:39:37.123456789Z")
        );
    }

    proptest! {
        #[test]
        fn test_never_panics(text in ".{0,40}") {
            let _ = parse_time(&text, zone());
        }

        #[test]
        fn test_epoch_seconds_round_trip(seconds in MIN_EPOCH_SECONDS..MAX_EPOCH_SECONDS) {
            let parsed = parse_time(&seconds.to_string(), zone()).unwrap();
            prop_assert_eq!(parsed.timestamp(), seconds);
        }
    }

    proptest! {
        /// The fast path reads every plain local time exactly as the general path does, and
        /// declines what it does not read.
        #[test]
        fn prop_plain_local_times_agree_with_chrono(
            year in 0u32..10000, month in 0u32..14, day in 0u32..33,
            hour in 0u32..26, minute in 0u32..62, second in 0u32..62,
            date_sep in prop::sample::select(vec!['-', '/']),
            middle in prop::sample::select(vec![' ', 'T']),
        ) {
            let text = format!(
                "{year:04}{date_sep}{month:02}{date_sep}{day:02}{middle}{hour:02}:{minute:02}:{second:02}"
            );
            let date_part = text[..10].replace('/', "-");
            let general = NaiveDate::parse_from_str(&date_part, "%Y-%m-%d").ok().and_then(|date| {
                NaiveTime::parse_from_str(&text[11..], "%H:%M:%S%.f")
                    .ok()
                    .map(|time| date.and_time(time))
            });
            match parse_plain_local(&text) {
                Some(fast) => prop_assert_eq!(Some(fast), general),
                None => prop_assert!(general.is_none() || second == 60),
            }
        }
    }
}
