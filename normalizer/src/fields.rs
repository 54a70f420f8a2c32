//! [`Fields`]: typed, consuming access to a push's vendor fields.
//!
//! A mapper *takes* each field it maps; what is left over becomes `data.vendor_fields`, so a
//! field is either mapped or carried through, never dropped. A value that cannot be used as the
//! mapped type (a time that is not a time) is left in place and so reaches `vendor_fields`
//! as sent.
//!
//! Guarantees of [`Fields::into_vendor_fields`], kept here so that no mapper has to:
//! - **Sent order.** The leftovers keep the order the vendor sent them in: a taken field is
//!   only marked taken, and the leftovers are collected in order at the end.
//! - **Blank means absent.** A blank value carries nothing and is dropped, by one rule
//!   (`is_blank`): `null`, a string of only white space (`""`), an array whose items are all
//!   blank (`[]`, `[""]`), an empty object (`{}`). This is the model's "an absent value is
//!   omitted (never `""`)"; the takers likewise return `None` for a blank value.
//!
//! Speed: the fields sit in a vector in sent order, found through a small open-addressing
//! table of positions keyed by each key's [`key_tag`] (a word: its length and first seven
//! bytes), so a lookup compares a word or two and a whole key only on a tag match (keys whose
//! tags pile up get a sorted index instead, see [`Index`]). A full v7
//! cdr has 78 fields and its mapper looks up some hundred names, many of them absent aliases:
//! a linear scan, or a binary search over a sorted index, compared keys for a tenth of the
//! mapping. Taking a field is O(1) once it is found; removing it from serde_json's ordered map
//! was O(fields) each, a quarter of the 7moor mapping time.

use std::borrow::Cow;

use callhook_schemas::PhoneNumber;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value};

use crate::phone::parse_phone;
use crate::time::parse_time_value;

/// The vendor fields of one push, consumed as they are mapped.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Every field in sent order, and whether it was taken.
    entries: Vec<(String, Value, bool)>,
    /// [`key_tag`] of each entry's key, compared before any key is.
    tags: Vec<u64>,
    /// How a key is found.
    index: Index,
    zone: FixedOffset,
}

impl Fields {
    /// Wraps a payload's fields; `zone` reads zone-less local times.
    pub fn new(map: Map<String, Value>, zone: FixedOffset) -> Self {
        let entries: Vec<(String, Value, bool)> = map
            .into_iter()
            .map(|(key, value)| (key, value, false))
            .collect();
        let tags: Vec<u64> = entries.iter().map(|entry| key_tag(&entry.0)).collect();
        let index = match slot_index(&tags) {
            Some(slots) => Index::Slots(slots),
            None => {
                let mut sorted: Vec<usize> = (0..entries.len()).collect();
                sorted.sort_unstable_by(|&left, &right| entries[left].0.cmp(&entries[right].0));
                Index::Sorted(sorted)
            }
        };
        Fields {
            entries,
            tags,
            index,
            zone,
        }
    }

    /// The position of an untaken field (keys are unique: the map they came from saw to it).
    fn position(&self, key: &str) -> Option<usize> {
        let found = match &self.index {
            Index::Slots(slots) => {
                let tag = key_tag(key);
                let mask = slots.len() - 1;
                let mut slot = slot_of(tag, mask);
                loop {
                    let position = match slots[slot] {
                        0 => break None,
                        filled => filled as usize - 1,
                    };
                    if self.tags[position] == tag && self.entries[position].0 == key {
                        break Some(position);
                    }
                    slot = (slot + 1) & mask;
                }
            }
            Index::Sorted(sorted) => sorted
                .binary_search_by(|&position| self.entries[position].0.as_str().cmp(key))
                .ok()
                .map(|index| sorted[index]),
        };
        found.filter(|&position| !self.entries[position].2)
    }

    /// The value of an untaken field.
    fn value(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|position| &self.entries[position].1)
    }

    /// Marks a field taken and moves its value out.
    fn take_at(&mut self, position: usize) -> Value {
        let entry = &mut self.entries[position];
        entry.2 = true;
        std::mem::take(&mut entry.1)
    }

    /// Takes a field if it is there.
    fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).map(|position| self.take_at(position))
    }

    /// Returns true if the field is present, even if empty.
    pub fn has(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Returns a field's raw value without consuming it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value(key)
    }

    /// Returns a scalar field as trimmed text without consuming it (`""` is `None`).
    pub fn peek_str(&self, key: &str) -> Option<String> {
        self.peek_text(key).map(Cow::into_owned)
    }

    /// [`Self::peek_str`] without a copy of the text.
    fn peek_text(&self, key: &str) -> Option<Cow<'_, str>> {
        self.value(key).and_then(scalar_text)
    }

    /// Takes a scalar field as trimmed text; numbers and booleans are rendered as text.
    /// Objects and arrays are left in place (they are not text).
    pub fn take_str(&mut self, key: &str) -> Option<String> {
        let position = self.position(key)?;
        let value = &self.entries[position].1;
        if value.is_object() || value.is_array() {
            return None;
        }
        match self.take_at(position) {
            // The sent string itself when it needs no trimming (nearly always): no copy.
            Value::String(text) if text.trim().len() == text.len() => {
                (!text.is_empty()).then_some(text)
            }
            value => scalar_text(&value).map(Cow::into_owned),
        }
    }

    /// Takes the first present, non-empty field of several aliases (`Agent`, then `Exten`).
    /// The others that hold the same text are consumed too.
    pub fn take_first_str(&mut self, keys: &[&str]) -> Option<String> {
        let found = keys
            .iter()
            .find_map(|key| self.peek_text(key))?
            .into_owned();
        for key in keys {
            if self.peek_text(key).as_deref() == Some(found.as_str()) || self.is_blank_at(key) {
                self.remove(key);
            }
        }
        Some(found)
    }

    /// Takes a time field; left in place when present but not a time.
    pub fn take_time(&mut self, key: &str) -> Option<DateTime<Utc>> {
        let position = self.position(key)?;
        match parse_time_value(&self.entries[position].1, self.zone) {
            Some(time) => {
                self.take_at(position);
                Some(time)
            }
            None => {
                self.remove_if_blank(key);
                None
            }
        }
    }

    /// Takes a whole-seconds duration (`"5"`, `5`, `"5.0"`); left in place when not one.
    pub fn take_seconds(&mut self, key: &str) -> Option<u64> {
        let position = self.position(key)?;
        let parsed = match &self.entries[position].1 {
            Value::Number(number) => number.as_u64().or_else(|| {
                number
                    .as_f64()
                    .filter(|f| *f >= 0.0)
                    .map(|f| f.round() as u64)
            }),
            Value::String(text) => parse_seconds_text(text.trim()),
            _ => None,
        };
        match parsed {
            Some(seconds) => {
                self.take_at(position);
                Some(seconds)
            }
            None => {
                self.remove_if_blank(key);
                None
            }
        }
    }

    /// Takes a phone-number field, keeping the raw text and adding a normalized form.
    pub fn take_phone(&mut self, key: &str) -> Option<PhoneNumber> {
        self.take_str(key).and_then(|raw| parse_phone(&raw))
    }

    /// Takes a field's raw value whatever its type; a blank value (`is_blank`) is `None`.
    pub fn take_value(&mut self, key: &str) -> Option<Value> {
        self.remove(key).filter(|value| !is_blank(value))
    }

    /// Moves a correlation field (as sent, unless blank) into `correlation` under its own name.
    pub fn take_correlation(&mut self, key: &str, correlation: &mut Map<String, Value>) {
        if let Some(value) = self.take_value(key) {
            correlation.insert(key.to_owned(), value);
        }
    }

    /// Consumes a field without mapping it (it is represented elsewhere, e.g. the discriminator).
    pub fn discard(&mut self, key: &str) {
        self.remove(key);
    }

    /// Returns every field not taken, as sent and in the order sent, minus blank values
    /// (`is_blank`): the event's `vendor_fields`.
    pub fn into_vendor_fields(self) -> Map<String, Value> {
        let kept = |(_, value, taken): &(String, Value, bool)| !taken && !is_blank(value);
        // Sized up front: collected from a filter, the map grew from empty and rehashed its
        // keys several times.
        let mut map = Map::with_capacity(self.entries.iter().filter(|entry| kept(entry)).count());
        for (key, value, _) in self.entries.into_iter().filter(kept) {
            map.insert(key, value);
        }
        map
    }

    fn is_blank_at(&self, key: &str) -> bool {
        self.value(key).is_some_and(is_blank)
    }

    fn remove_if_blank(&mut self, key: &str) {
        if self.is_blank_at(key) {
            self.remove(key);
        }
    }
}

/// How [`Fields`] finds a key.
#[derive(Debug, Clone)]
enum Index {
    /// Open addressing over the tags: each slot is an entry's position + 1, or 0 when empty;
    /// the length is a power of two at least twice the number of entries.
    Slots(Vec<u32>),
    /// Positions sorted by key, for payloads whose tags pile up (many keys of one length
    /// sharing their first seven bytes, as a hostile push can send): lookups stay O(log n).
    Sorted(Vec<usize>),
}

/// The longest probe [`slot_index`] accepts before giving up for a sorted index.
const MAX_PROBE: usize = 32;

/// Builds the open-addressing table, or `None` when some key would be found only after more
/// than [`MAX_PROBE`] slots.
fn slot_index(tags: &[u64]) -> Option<Vec<u32>> {
    let mut slots = vec![0u32; (tags.len() * 2).max(8).next_power_of_two()];
    let mask = slots.len() - 1;
    for (position, &tag) in tags.iter().enumerate() {
        let mut slot = slot_of(tag, mask);
        let mut probes = 0;
        while slots[slot] != 0 {
            probes += 1;
            if probes > MAX_PROBE {
                return None;
            }
            slot = (slot + 1) & mask;
        }
        // Positions fit: a payload has at most `limits::MAX_FIELDS` values.
        slots[slot] = u32::try_from(position + 1).ok()?;
    }
    Some(slots)
}

/// The home slot of a tag (Fibonacci hashing: the multiply spreads the tag's bytes over the
/// high bits, which the shift keeps).
fn slot_of(tag: u64, mask: usize) -> usize {
    let bits = (mask + 1).trailing_zeros();
    (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// A key's length and first seven bytes in one word: equal keys have equal tags, and most
/// unequal keys of a push (`callNo`, `callId`, `called` ...) differ here already.
fn key_tag(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let length = (bytes.len().min(255) as u64) << 56;
    length | (leading_word_le(bytes) & 0x00ff_ffff_ffff_ffff)
}

/// A key's first eight bytes (zero-padded) as a little-endian word, built in registers: a
/// `memcpy` into a stack buffer read back as one word stalled on store forwarding, which made
/// the lookup a tenth of the 7moor mapping. (The payload hash's key order uses it too.)
pub(crate) fn leading_word_le(bytes: &[u8]) -> u64 {
    if bytes.len() >= 8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[..8]);
        return u64::from_le_bytes(word);
    }
    bytes
        .iter()
        .enumerate()
        .fold(0, |word, (at, &byte)| word | u64::from(byte) << (8 * at))
}

/// The one blank rule: `null`, a string of only white space, an array whose items are all
/// blank (so `[]` and `[""]`), an empty object. A blank value means absent.
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        Value::Array(items) => items.iter().all(is_blank),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// A scalar as trimmed text (`None` when blank); numbers as sent (`arbitrary_precision` keeps
/// their text), booleans as `true` / `false`.
fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => {
            let trimmed = text.trim();
            (!trimmed.is_empty()).then_some(Cow::Borrowed(trimmed))
        }
        Value::Number(number) => Some(Cow::Borrowed(number.as_str())),
        Value::Bool(flag) => Some(Cow::Borrowed(if *flag { "true" } else { "false" })),
        _ => None,
    }
}

fn parse_seconds_text(text: &str) -> Option<u64> {
    if let Ok(whole) = text.parse::<u64>() {
        return Some(whole);
    }
    let float = text.parse::<f64>().ok()?;
    (0.0..1e12).contains(&float).then(|| float.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Fields {
        let Value::Object(map) = value else {
            panic!("not an object")
        };
        Fields::new(map, crate::push::china_offset())
    }

    #[test]
    fn test_key_tag_is_length_and_first_seven_bytes() {
        for key in [
            "",
            "a",
            "callId",
            "callNo",
            "abcdefg",
            "abcdefgh",
            "张三丰",
            "x\u{0}y",
        ] {
            let bytes = key.as_bytes();
            let mut expected = [0u8; 8];
            let take = bytes.len().min(7);
            expected[..take].copy_from_slice(&bytes[..take]);
            expected[7] = bytes.len() as u8;
            assert_eq!(key_tag(key), u64::from_le_bytes(expected), "{key:?}");
        }
        let long = "k".repeat(300);
        assert_eq!(key_tag(&long) >> 56, 255);
    }

    #[test]
    fn test_taken_fields_leave_vendor_fields() {
        let mut f = fields(json!({"a": "x", "b": 5, "c": "", "d": {"k": 1}, "e": "later"}));
        assert_eq!(f.take_str("a").as_deref(), Some("x"));
        assert_eq!(f.take_str("b").as_deref(), Some("5"));
        assert_eq!(f.take_str("c"), None);
        assert_eq!(f.take_str("d"), None);
        assert_eq!(
            Value::Object(f.into_vendor_fields()),
            json!({"d": {"k": 1}, "e": "later"})
        );
    }

    #[test]
    fn test_unparseable_values_stay_as_sent() {
        let mut f = fields(json!({"t": "soon", "s": "n/a", "t2": "", "s2": " "}));
        assert_eq!(f.take_time("t"), None);
        assert_eq!(f.take_seconds("s"), None);
        assert_eq!(f.take_time("t2"), None);
        assert_eq!(f.take_seconds("s2"), None);
        assert_eq!(
            Value::Object(f.into_vendor_fields()),
            json!({"t": "soon", "s": "n/a"})
        );
    }

    #[test]
    fn test_seconds_accept_strings_and_numbers() {
        let mut f = fields(json!({"a": "5", "b": 7, "c": "3.6", "d": 2.2}));
        assert_eq!(f.take_seconds("a"), Some(5));
        assert_eq!(f.take_seconds("b"), Some(7));
        assert_eq!(f.take_seconds("c"), Some(4));
        assert_eq!(f.take_seconds("d"), Some(2));
    }

    #[test]
    fn test_aliases_and_correlation() {
        let mut f = fields(json!({"Agent": "", "Exten": "8000", "extras": "", "ActionID": "a1"}));
        assert_eq!(
            f.take_first_str(&["Agent", "Exten"]).as_deref(),
            Some("8000")
        );
        let mut correlation = Map::new();
        f.take_correlation("extras", &mut correlation);
        f.take_correlation("ActionID", &mut correlation);
        assert_eq!(Value::Object(correlation), json!({"ActionID": "a1"}));
        assert!(f.into_vendor_fields().is_empty());
    }

    #[test]
    fn test_vendor_fields_keep_sent_order_and_drop_blanks() {
        let mut f = fields(json!({
            "z": "first", "a": "taken", "m": 3, "blank": " ", "null": null, "empty": [],
            "blanks": ["", null, [" "]], "obj": {}, "b": "taken too", "kept": [""  , "x"],
            "last": {"k": ""}
        }));
        assert_eq!(f.take_str("a").as_deref(), Some("taken"));
        assert_eq!(f.take_str("b").as_deref(), Some("taken too"));
        f.discard("z");
        let rest = f.into_vendor_fields();
        let keys: Vec<&str> = rest.keys().map(String::as_str).collect();
        assert_eq!(keys, ["m", "kept", "last"]);
        assert_eq!(
            Value::Object(rest),
            json!({"m": 3, "kept": ["", "x"], "last": {"k": ""}})
        );
    }

    #[test]
    fn test_order_survives_taking_the_first_field() {
        // A swap-remove of "a" would move "e" into its place.
        let mut f = fields(json!({"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}));
        assert_eq!(f.take_str("a").as_deref(), Some("1"));
        assert_eq!(f.take_value("c"), Some(json!("3")));
        let keys: Vec<String> = f.into_vendor_fields().keys().cloned().collect();
        assert_eq!(keys, ["b", "d", "e"]);
    }

    #[test]
    fn test_a_large_payload_is_found_through_its_index() {
        let mut map = Map::new();
        for index in (0..200).rev() {
            map.insert(format!("k{index:03}"), json!(index));
        }
        let mut f = Fields::new(map, crate::push::china_offset());
        assert!(matches!(&f.index, Index::Slots(slots) if slots.len() == 512));
        assert_eq!(f.take_str("k150").as_deref(), Some("150"));
        assert_eq!(f.take_str("k150"), None, "a taken field is gone");
        assert!(!f.has("k150"));
        assert!(f.has("k000"));
        assert_eq!(f.take_seconds("k007"), Some(7));
        assert_eq!(f.take_str("nope"), None);
        let keys: Vec<String> = f.into_vendor_fields().keys().cloned().collect();
        assert_eq!(keys.len(), 198);
        assert_eq!(keys[0], "k199", "sent order, not key order");
        assert!(!keys.contains(&"k150".to_owned()) && !keys.contains(&"k007".to_owned()));
    }

    #[test]
    fn test_keys_whose_tags_pile_up_get_a_sorted_index() {
        // One length, one first seven bytes: every key has the same tag.
        let map: Map<String, Value> = (0..500)
            .map(|index| (format!("prefix_{index:05}"), json!(index)))
            .collect();
        let mut f = Fields::new(map, crate::push::china_offset());
        assert!(matches!(f.index, Index::Sorted(_)));
        assert_eq!(f.take_str("prefix_00421").as_deref(), Some("421"));
        assert_eq!(f.take_str("prefix_00421"), None);
        assert_eq!(f.take_str("prefix_99999"), None);
        assert_eq!(f.into_vendor_fields().len(), 499);
    }

    #[test]
    fn test_a_taken_field_is_absent_to_every_reader() {
        let mut f = fields(json!({"a": "1", "b": ""}));
        f.discard("a");
        assert!(!f.has("a"));
        assert_eq!(f.get("a"), None);
        assert_eq!(f.peek_str("a"), None);
        assert_eq!(f.take_value("a"), None);
        assert!(f.has("b"));
    }
}
