//! The one spelling of a time everywhere callhook writes one: RFC 3339 in UTC with exactly
//! nine fractional digits and `Z` (`2021-05-08T06:39:37.000000000Z`).
//!
//! The same event's time reads the same in the SQLite columns, in its `data` JSON, in the
//! Kafka `ce_time` header and in the Kafka message body. Nine digits lose nothing a vendor
//! sends (7moor's epoch microseconds included), and a fixed width sorts as text, which the
//! SQLite sink's time columns and indexes rely on. Reading accepts any RFC 3339 time.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Spells `time` canonically.
pub fn canonical_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// `serialize_with` for a `DateTime<Utc>` field.
pub fn serialize<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&canonical_time(time))
}

/// `serialize_with` for an `Option<DateTime<Utc>>` field (skip `None` with
/// `skip_serializing_if`).
pub fn serialize_option<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serialize(time, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_times_have_one_fixed_width_spelling_that_sorts_as_text() {
        let whole = DateTime::parse_from_rfc3339("2021-05-08T14:39:37+08:00").unwrap();
        let micros = DateTime::parse_from_rfc3339("2021-05-08T06:39:37.123456Z").unwrap();
        let whole = canonical_time(&whole.with_timezone(&Utc));
        let micros = canonical_time(&micros.with_timezone(&Utc));
        assert_eq!(whole, "2021-05-08T06:39:37.000000000Z");
        assert_eq!(micros, "2021-05-08T06:39:37.123456000Z");
        assert!(whole < micros);
    }
}
