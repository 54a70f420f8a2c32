//! What the database must hold for a ledger: each distinct push, mapped again with the real
//! mapper, and the dedupe keys and event ids it can have been given.
//!
//! Matching is by recomputation: `callhook_normalizer::map_push` on the exact request from
//! the ledger yields the push's dedupe key, and event ids are
//! `event_id(source, dedupe key, ordinal)`, so the events a push must have produced are known
//! exactly. Most keys do not depend on when the push was received. The few that do (pushes
//! with no id and no vendor time: CooCenter `extensionstatus` in 10-second slots, UinCall
//! agent pushes and id-less 7moor pushes in 5-minute buckets) are recomputed for every second
//! the server can have received them, `[sent_at - skew, answered_at + skew]`: the candidates.
//! The receive time is never known exactly, so such a push is accounted for when any
//! candidate is stored; identical bodies (a retry, or the same status twice) share candidates
//! and are one push here, as they are for the normalizer within one slot. Pushes with the same
//! fields in different bytes (a CooCenter status as JSON and as a JS literal) are merged too
//! (`merge_indistinguishable`): the mapper gives them the same keys.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use callhook_normalizer::build::event_id;
use callhook_normalizer::{map_push, RawPush, SourceContext};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::flow::SimDialect;
use crate::ledger::{Ledger, PushLine};

/// How far the receiver's clock may be from ours (the default of `--clock-skew-seconds`).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// One distinct push: a source and exact request bytes, with every sending of it.
#[derive(Debug, Clone)]
pub(crate) struct PushGroup {
    pub(crate) dialect: SimDialect,
    pub(crate) source: String,
    pub(crate) method: String,
    pub(crate) query: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: String,
    /// Acknowledged sendings.
    pub(crate) acknowledged: u32,
    /// Sendings that were not acknowledged.
    pub(crate) unacknowledged: u32,
    /// `[sent_at, answered_at]` of every sending.
    pub(crate) windows: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// One `(flow, seq, call id)` that sent it, for messages.
    pub(crate) example: (u64, u32, Option<String>),
}

/// A group with the keys it can have been stored under.
#[derive(Debug, Clone)]
pub(crate) struct ExpectedPush {
    pub(crate) group: PushGroup,
    /// Candidate dedupe keys (one when the key does not depend on the receive time).
    pub(crate) keys: Vec<String>,
    /// Events per key.
    pub(crate) events_per_key: usize,
    /// The key the push gets when received at the Unix epoch: equal for two pushes exactly
    /// when the mapper cannot tell them apart (same fields, maybe other bytes).
    identity: String,
}

impl ExpectedPush {
    /// Returns the event ids stored under `key`.
    pub(crate) fn event_ids(&self, key: &str) -> Vec<String> {
        (0..self.events_per_key)
            .map(|ordinal| event_id(&self.group.source, key, ordinal))
            .collect()
    }

    /// Returns a short description for mismatch reports.
    pub(crate) fn describe(&self) -> String {
        let (flow, seq, call) = &self.group.example;
        let call = call
            .as_deref()
            .map(|id| format!(" call {id}"))
            .unwrap_or_default();
        format!(
            "{} flow {flow} push {seq}{call} ({} sending(s) acknowledged)",
            self.group.dialect, self.group.acknowledged
        )
    }
}

/// Groups the ledger's pushes (acknowledged or not) by source and exact bytes.
pub(crate) fn group_pushes(ledger: &Ledger) -> Vec<PushGroup> {
    type GroupKey = (String, String, Option<String>, Option<String>, String);
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<PushGroup> = Vec::new();
    let lines = ledger
        .pushes
        .iter()
        .map(|line| (line, true))
        .chain(ledger.unacknowledged.iter().map(|line| (line, false)));
    for (line, acknowledged) in lines {
        let key = (
            line.source.clone(),
            line.method.clone(),
            line.query.clone(),
            line.content_type.clone(),
            line.body.clone(),
        );
        let position = *index.entry(key).or_insert_with(|| {
            groups.push(new_group(line));
            groups.len() - 1
        });
        let group = &mut groups[position];
        if acknowledged {
            group.acknowledged += 1;
        } else {
            group.unacknowledged += 1;
        }
        group.windows.push((line.sent_at, line.answered_at));
    }
    groups
}

fn new_group(line: &PushLine) -> PushGroup {
    PushGroup {
        dialect: line.dialect,
        source: line.source.clone(),
        method: line.method.clone(),
        query: line.query.clone(),
        content_type: line.content_type.clone(),
        body: line.body.clone(),
        acknowledged: 0,
        unacknowledged: 0,
        windows: Vec::new(),
        example: (line.flow, line.seq, line.call_id.clone()),
    }
}

/// Maps a group at every receive time it can have had; `Err` carries the mapper's reason.
pub(crate) fn expect(group: PushGroup, skew: Duration) -> Result<ExpectedPush, String> {
    let context = source_context(&group);
    let map_at = |received_at: DateTime<Utc>| -> Result<(String, usize), String> {
        let headers: Vec<(String, String)> = group
            .content_type
            .iter()
            .map(|value| ("content-type".to_owned(), value.clone()))
            .collect();
        let push = RawPush {
            method: &group.method,
            content_type: group.content_type.as_deref(),
            query: group.query.as_deref(),
            headers: &headers,
            body: group.body.as_bytes(),
            received_at,
        };
        map_push(&push, &context)
            .map(|mapped| (mapped.dedupe_key, mapped.events.len()))
            .map_err(|error| format!("{} ({error})", error.reason()))
    };
    let first = group.windows.first().map(|w| w.0).unwrap_or_else(Utc::now);
    let (key, events_per_key) = map_at(first)?;
    let (later_key, _) = map_at(first + TimeDelta::days(1))?;
    let (identity, _) = map_at(DateTime::UNIX_EPOCH)?;
    let keys = if key == later_key {
        vec![key]
    } else {
        let skew = TimeDelta::from_std(skew).unwrap_or(TimeDelta::seconds(2));
        let mut keys = BTreeSet::new();
        for (sent_at, answered_at) in &group.windows {
            for time in sample_times(*sent_at - skew, *answered_at + skew) {
                keys.insert(map_at(time)?.0);
            }
        }
        keys.into_iter().collect()
    };
    Ok(ExpectedPush {
        group,
        keys,
        events_per_key,
        identity,
    })
}

/// Merges pushes the mapper cannot tell apart (the same fields in other bytes: a CooCenter
/// status as JSON from one call and as a JS literal from another) into one: they share dedupe
/// keys, so only together can their sendings be weighed against the keys stored.
pub(crate) fn merge_indistinguishable(pushes: Vec<ExpectedPush>) -> Vec<ExpectedPush> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut merged: Vec<ExpectedPush> = Vec::new();
    for push in pushes {
        let identity = (push.group.source.clone(), push.identity.clone());
        match index.get(&identity) {
            Some(&position) => {
                let into = &mut merged[position];
                into.group.acknowledged += push.group.acknowledged;
                into.group.unacknowledged += push.group.unacknowledged;
                into.group.windows.extend(push.group.windows);
                let keys: BTreeSet<String> = into.keys.drain(..).chain(push.keys).collect();
                into.keys = keys.into_iter().collect();
            }
            None => {
                index.insert(identity, merged.len());
                merged.push(push);
            }
        }
    }
    merged
}

/// The mapping context of the group's source: the dialect's, with the default token
/// parameter redacted. The account and zone change no key or id, so they need not match the
/// server's config.
fn source_context(group: &PushGroup) -> SourceContext {
    let mut context = SourceContext::new(&group.source, group.dialect.normalizer_dialect());
    context.redact_params = vec!["token".to_owned()];
    context
}

/// Returns `low`, every whole second in `(low, high]` and `high`: receive-time slots are
/// whole-second aligned, so these hit every slot the interval touches.
pub(crate) fn sample_times(low: DateTime<Utc>, high: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut times = vec![low];
    let mut second =
        low.duration_trunc(TimeDelta::seconds(1)).unwrap_or(low) + TimeDelta::seconds(1);
    while second <= high {
        times.push(second);
        second += TimeDelta::seconds(1);
    }
    if high > low {
        times.push(high);
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn test_sample_times_cover_every_second_boundary() {
        let times = sample_times(
            at("2024-01-01T00:00:08.500Z"),
            at("2024-01-01T00:00:11.200Z"),
        );
        assert_eq!(
            times,
            vec![
                at("2024-01-01T00:00:08.500Z"),
                at("2024-01-01T00:00:09Z"),
                at("2024-01-01T00:00:10Z"),
                at("2024-01-01T00:00:11Z"),
                at("2024-01-01T00:00:11.200Z"),
            ]
        );
        let single = at("2024-01-01T00:00:08.500Z");
        assert_eq!(sample_times(single, single), vec![single]);
    }

    fn line(body: &str, sent: &str, answered: &str) -> PushLine {
        PushLine {
            flow: 1,
            seq: 0,
            copy: 0,
            dialect: SimDialect::CooCenter,
            source: "coocenter".into(),
            call_id: None,
            method: "POST".into(),
            query: None,
            content_type: Some("application/json".into()),
            body: body.into(),
            sent_at: at(sent),
            answered_at: at(answered),
            failure: None,
        }
    }

    #[test]
    fn test_time_bucketed_push_gets_a_candidate_per_slot() {
        let status =
            r#"{"event":"extensionstatus","exten":"808","status":"0","statustext":"Idle"}"#;
        // Sent 1 s before a 10-second slot boundary, answered just after it.
        let ledger = Ledger {
            pushes: vec![line(
                status,
                "2024-01-01T00:00:09.000Z",
                "2024-01-01T00:00:10.100Z",
            )],
            ..Ledger::default()
        };
        let group = group_pushes(&ledger).remove(0);
        let expected = expect(group, Duration::ZERO).unwrap();
        assert_eq!(expected.keys.len(), 2, "{:?}", expected.keys);
        assert_eq!(expected.events_per_key, 1);
        // With no skew and a window inside one slot: one key.
        let ledger = Ledger {
            pushes: vec![line(
                status,
                "2024-01-01T00:00:01.000Z",
                "2024-01-01T00:00:02.000Z",
            )],
            ..Ledger::default()
        };
        let expected = expect(group_pushes(&ledger).remove(0), Duration::ZERO).unwrap();
        assert_eq!(expected.keys.len(), 1);
    }

    #[test]
    fn test_identical_sendings_are_one_group_and_ids_are_exact() {
        let cdr = r#"{"event":"cdr","uniqueid":"1718872260.41","disposition":"BUSY","endtime":"2024-06-20 16:31:09","calltype":"outbound"}"#;
        let mut retry = line(cdr, "2024-01-01T00:00:05Z", "2024-01-01T00:00:05.010Z");
        retry.copy = 1;
        let ledger = Ledger {
            pushes: vec![
                line(cdr, "2024-01-01T00:00:01Z", "2024-01-01T00:00:01.010Z"),
                retry,
            ],
            ..Ledger::default()
        };
        let groups = group_pushes(&ledger);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].acknowledged, 2);
        let expected = expect(groups[0].clone(), DEFAULT_CLOCK_SKEW).unwrap();
        assert_eq!(expected.keys.len(), 1, "a time-independent key");
        let ids = expected.event_ids(&expected.keys[0]);
        assert_eq!(ids, vec![event_id("coocenter", &expected.keys[0], 0)]);
    }

    #[test]
    fn test_same_fields_in_other_bytes_merge_into_one_push() {
        let json = r#"{"event":"extensionstatus","exten":"808","status":"0","statustext":"Idle"}"#;
        let literal =
            "{\nevent:\"extensionstatus\",\nexten:\"808\",\nstatus:\"0\",\nstatustext:\"Idle\",\n}";
        let other = r#"{"event":"extensionstatus","exten":"809","status":"0","statustext":"Idle"}"#;
        let ledger = Ledger {
            pushes: vec![
                line(json, "2024-01-01T00:00:01Z", "2024-01-01T00:00:01.010Z"),
                line(literal, "2024-01-01T00:00:15Z", "2024-01-01T00:00:15.010Z"),
                line(other, "2024-01-01T00:00:15Z", "2024-01-01T00:00:15.010Z"),
            ],
            ..Ledger::default()
        };
        let groups = group_pushes(&ledger);
        assert_eq!(groups.len(), 3);
        let expected: Vec<ExpectedPush> = groups
            .into_iter()
            .map(|group| expect(group, Duration::ZERO).unwrap())
            .collect();
        let merged = merge_indistinguishable(expected);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].group.acknowledged, 2);
        assert_eq!(merged[0].keys.len(), 2, "one slot per sending");
        assert_eq!(merged[1].group.acknowledged, 1);
    }

    #[test]
    fn test_unmappable_push_is_reported_with_its_reason() {
        let ledger = Ledger {
            pushes: vec![line(
                r#"{"event":"nonsense"}"#,
                "2024-01-01T00:00:01Z",
                "2024-01-01T00:00:01Z",
            )],
            ..Ledger::default()
        };
        let error = expect(group_pushes(&ledger).remove(0), DEFAULT_CLOCK_SKEW).unwrap_err();
        assert!(error.starts_with("unknown_event"), "{error}");
    }
}
