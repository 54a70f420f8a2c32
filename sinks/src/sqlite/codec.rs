//! How values are written as SQLite text and integers.
//!
//! Times are stored in callhook's one spelling ([`callhook_schemas::time`]): fixed-width
//! RFC 3339 UTC text with nanoseconds (`2024-05-01T02:03:04.500000000Z`), the same as in the
//! events' `data` JSON and Kafka's `ce_time`: lossless, readable by SQLite's date functions,
//! and ordered the same as text and as time, which the `agents` row-value comparison relies on.

use callhook_schemas::{canonical_time, EventType};
use chrono::{DateTime, Utc};

use super::error::{Result, SqliteSinkError};

/// Returns `time` as fixed-width RFC 3339 UTC text.
pub(crate) fn encode_time(time: &DateTime<Utc>) -> String {
    canonical_time(time)
}

/// Parses a time written by [`encode_time`] (any RFC 3339 time is accepted).
pub(crate) fn decode_time(table: &'static str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| SqliteSinkError::CorruptRow {
            table,
            detail: format!("time `{text}`: {error}"),
        })
}

/// Parses an event type's wire name.
pub(crate) fn decode_event_type(table: &'static str, text: &str) -> Result<EventType> {
    EventType::ALL
        .into_iter()
        .find(|event_type| event_type.as_str() == text)
        .ok_or_else(|| SqliteSinkError::CorruptRow {
            table,
            detail: format!("unknown event type `{text}`"),
        })
}

/// Converts an unsigned count or offset to SQLite's signed integer.
pub(crate) fn to_sql_integer(field: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| SqliteSinkError::OutOfRange { field, value })
}

/// Converts a stored integer back to an unsigned value.
pub(crate) fn from_sql_integer<T: TryFrom<i64>>(table: &'static str, value: i64) -> Result<T> {
    T::try_from(value).map_err(|_| SqliteSinkError::CorruptRow {
        table,
        detail: format!("integer {value} is out of range"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn test_encoded_times_sort_as_text_like_times() {
        let whole = Utc.with_ymd_and_hms(2024, 5, 1, 2, 3, 4).unwrap();
        let later = whole + chrono::TimeDelta::milliseconds(500);
        let much_later = Utc.with_ymd_and_hms(2024, 5, 1, 2, 3, 10).unwrap();
        let texts = [
            encode_time(&whole),
            encode_time(&later),
            encode_time(&much_later),
        ];
        assert_eq!(texts[0], "2024-05-01T02:03:04.000000000Z");
        assert!(texts[0] < texts[1] && texts[1] < texts[2], "{texts:?}");
        assert!(texts.iter().all(|text| text.len() == texts[0].len()));
        assert_eq!(decode_time("t", &texts[1]).unwrap(), later);
    }

    #[test]
    fn test_event_types_round_trip_and_garbage_is_corrupt() {
        for event_type in EventType::ALL {
            assert_eq!(
                decode_event_type("t", event_type.as_str()).unwrap(),
                event_type
            );
        }
        assert!(matches!(
            decode_event_type("t", "call.exploded"),
            Err(SqliteSinkError::CorruptRow { .. })
        ));
        assert!(matches!(
            to_sql_integer("offset", u64::MAX),
            Err(SqliteSinkError::OutOfRange { .. })
        ));
        assert!(from_sql_integer::<u32>("t", -1).is_err());
    }
}
