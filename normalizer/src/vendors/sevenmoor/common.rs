//! Small helpers shared by the 7moor submodules (v7, v2, privacy-number CDR).

use crate::fields::Fields;
use crate::phone::parse_phone;
use crate::push::SourceContext;
use crate::time::parse_time_value;
use callhook_schemas::{Agent, CallEventData, Disposition, DispositionValue, PhoneNumber, Queue};
use chrono::{DateTime, FixedOffset, Utc};

/// The vendor name every 7moor event carries.
pub const VENDOR: &str = "7moor";
/// The v7 open-API dialect.
pub const DIALECT_V7: &str = "7moor.v7";
/// The legacy v2 dialect (and the privacy-number CDR that shares its URL).
pub const DIALECT_V2: &str = "7moor.v2";

/// Returns an empty data value of this vendor.
pub fn new_data(dialect: &str, vendor_event: &str, ctx: &SourceContext) -> CallEventData {
    CallEventData::new(VENDOR, dialect, vendor_event, &ctx.name)
}

/// Takes the first of several time fields that holds a time; the others stay in place.
pub fn take_time_first(fields: &mut Fields, keys: &[&str]) -> Option<DateTime<Utc>> {
    keys.iter().find_map(|key| fields.take_time(key))
}

/// Takes the first of several aliases of ONE time (`connect_time` / `answerTime`) that holds a
/// time; an alias holding the same instant is consumed too, a different one stays in place.
pub fn take_time_alias(
    fields: &mut Fields,
    keys: &[&str],
    zone: FixedOffset,
) -> Option<DateTime<Utc>> {
    let (found_key, time) = keys
        .iter()
        .find_map(|key| fields.take_time(key).map(|time| (*key, time)))?;
    for key in keys.iter().filter(|key| **key != found_key) {
        let same = fields
            .get(key)
            .and_then(|value| parse_time_value(value, zone))
            == Some(time);
        if same {
            fields.discard(key);
        }
    }
    Some(time)
}

/// Takes the first of several duration fields that holds whole seconds.
pub fn take_seconds_first(fields: &mut Fields, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|key| fields.take_seconds(key))
}

/// Takes the first non-empty of several aliases as a phone number.
pub fn take_phone_first(fields: &mut Fields, keys: &[&str]) -> Option<PhoneNumber> {
    fields
        .take_first_str(keys)
        .and_then(|raw| parse_phone(&raw))
}

/// Returns whole seconds from `start` to `end`, or `None` when either is missing or the
/// interval is negative (clock skew between 7moor's servers is not a duration).
pub fn seconds_between(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<u64> {
    let seconds = (end? - start?).num_seconds();
    u64::try_from(seconds).ok()
}

/// Returns an agent when any of its parts is known.
pub fn agent(
    number: Option<String>,
    name: Option<String>,
    extension: Option<String>,
) -> Option<Agent> {
    if number.is_none() && name.is_none() && extension.is_none() {
        return None;
    }
    Some(Agent {
        number,
        name,
        extension,
    })
}

/// Returns a queue when its id or name is known.
pub fn queue(id: Option<String>, name: Option<String>) -> Option<Queue> {
    if id.is_none() && name.is_none() {
        return None;
    }
    Some(Queue { id, name })
}

/// Returns a disposition: the mapped value, or `unknown`, with the raw value kept.
pub fn disposition(value: Option<DispositionValue>, raw: String) -> Disposition {
    Disposition {
        value: value.unwrap_or(DispositionValue::Unknown),
        raw: Some(raw),
    }
}

/// Appends a recording URL unless it is blank or already listed.
pub fn push_unique(urls: &mut Vec<String>, url: Option<String>) {
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn test_seconds_between_rejects_negative_and_missing() {
        let t0 = DateTime::parse_from_rfc3339("2021-05-08T06:39:32Z")
            .unwrap()
            .with_timezone(&Utc);
        let t1 = t0 + chrono::TimeDelta::seconds(15);
        assert_eq!(seconds_between(Some(t0), Some(t1)), Some(15));
        assert_eq!(seconds_between(Some(t1), Some(t0)), None);
        assert_eq!(seconds_between(None, Some(t0)), None);
    }

    #[test]
    fn test_time_alias_consumes_equal_aliases_only() {
        let zone = crate::push::china_offset();
        let Value::Object(map) = json!({
            "a": "2021-02-08 10:00:01", "b": "1612749601", "c": "2021-02-08 10:00:02"
        }) else {
            unreachable!()
        };
        let mut fields = Fields::new(map, zone);
        let time = take_time_alias(&mut fields, &["a", "b", "c"], zone);
        assert_eq!(time.map(|t| t.timestamp()), Some(1_612_749_601));
        assert_eq!(
            Value::Object(fields.into_vendor_fields()),
            json!({"c": "2021-02-08 10:00:02"})
        );
    }

    #[test]
    fn test_push_unique_keeps_order() {
        let mut urls = Vec::new();
        push_unique(&mut urls, Some("a".into()));
        push_unique(&mut urls, Some("b".into()));
        push_unique(&mut urls, Some("a".into()));
        push_unique(&mut urls, Some(" ".into()));
        push_unique(&mut urls, None);
        assert_eq!(urls, ["a", "b"]);
    }
}
