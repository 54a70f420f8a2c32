//! The `calls` row: a deterministic fold over all of a call's stored events.
//!
//! Order independence is by construction. The sink never patches a `calls` row with the event
//! that just arrived: after inserting a batch's events it reloads *every* stored event of each
//! touched `(source_name, call_id)` and recomputes the row with [`fold_call`], whose result
//! depends only on the set of events, never on the order they arrived in or how they were
//! split into batches. (It assumes, as the schema promises, that one event id always carries
//! the same content; `events` keeps the first stored copy.)
//!
//! # Which events
//!
//! Every stored event with a `call_id` whose type is not `agent.*`. Agent events never make or
//! change a `calls` row, even when they name a call.
//!
//! # Orders
//!
//! - **Fold order**: ascending `(time, type rank, id)`, where the type rank is
//!   `call.initiated < ivr.completed < call.ringing < call.answered < call.ended < call.cdr <
//!   call.media_failure` ([`type_rank`]). Ids are unique, so the order is total.
//! - **Preferred order**: the `call.cdr` events, latest first in fold order, then every other
//!   event in fold order. The CDR is the vendor's final word, and a re-sent CDR corrects the
//!   earlier one; among live events the earliest report wins.
//!
//! # Columns
//!
//! | column | rule |
//! |---|---|
//! | `vendor` | `data.vendor` of the first event in fold order |
//! | `direction` | the first non-`unknown` `data.direction` in preferred order (CDRs first), else `unknown` |
//! | `caller`, `callee` (+ `_e164`) | the first present number in preferred order; raw and E.164 come from the same number |
//! | `agent_number`, `agent_name` | each the first non-empty `data.agent.number` / `.name` in preferred order |
//! | `queue`, `queue_name` | the first queue with an id or a name in preferred order; `queue` is its id, else its name |
//! | `parent_call_id` | the first present in preferred order |
//! | `first_event_at`, `last_event_at` | time of the first / last event in fold order |
//! | `started_at` | min of `data.started_at` and the times of `call.initiated` events |
//! | `ringing_at` | min of `data.ringing_at` and the times of `call.ringing` events |
//! | `answered_at` | min of `data.answered_at` and the times of `call.answered` events |
//! | `ended_at` | max of `data.ended_at` and the times of `call.ended` events |
//! | `disposition`, `disposition_raw` | from the event with a disposition that is greatest by (`call.cdr` > `call.ended` > any other type, time, id); if no event has one and `answered_at` is known, `answered` with no raw value |
//! | `talk_seconds` | `data.talk_seconds` from the event that is greatest by the same key as `disposition`; else `ended_at - answered_at` in whole seconds when both are known and not negative |
//! | `recording_url` | the first non-empty recording URL in preferred order |
//! | `correlation` | the union of all `data.correlation` maps; for a key in several, the value from the event first in preferred order wins (earlier never overwritten); stored as a JSON object with sorted keys |
//! | `events_count` | the number of events folded |
//! | `last_event_type` | the type of the last event in fold order |

use std::collections::BTreeMap;

use callhook_schemas::{CallEventData, Direction, DispositionValue, EventType, PhoneNumber};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One stored event of a call, as the fold reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCallEvent {
    /// The event id.
    pub id: String,
    /// The event type.
    pub event_type: EventType,
    /// The envelope `time`.
    pub time: DateTime<Utc>,
    /// The event's data.
    pub data: CallEventData,
}

/// The content of one `calls` row (see the module docs for each rule).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// The configured source name (`data.source_name`).
    pub source: String,
    /// The vendor-scoped call id.
    pub call_id: String,
    /// The vendor.
    pub vendor: String,
    /// The call's direction.
    pub direction: Direction,
    /// The calling party.
    pub caller: Option<PhoneNumber>,
    /// The called party.
    pub callee: Option<PhoneNumber>,
    /// The agent's number.
    pub agent_number: Option<String>,
    /// The agent's name.
    pub agent_name: Option<String>,
    /// The queue's id, else its name.
    pub queue: Option<String>,
    /// The queue's name.
    pub queue_name: Option<String>,
    /// The call this one was transferred from.
    pub parent_call_id: Option<String>,
    /// The earliest event time.
    pub first_event_at: DateTime<Utc>,
    /// When the call started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the called side started ringing.
    pub ringing_at: Option<DateTime<Utc>>,
    /// When the call was answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When the call ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The canonical outcome.
    pub disposition: Option<DispositionValue>,
    /// The vendor's raw outcome.
    pub disposition_raw: Option<String>,
    /// Seconds of conversation.
    pub talk_seconds: Option<u64>,
    /// The first recording URL.
    pub recording_url: Option<String>,
    /// The merged correlation keys.
    pub correlation: BTreeMap<String, Value>,
    /// How many events were folded.
    pub events_count: u64,
    /// The type of the last event in fold order.
    pub last_event_type: EventType,
    /// The time of the last event in fold order.
    pub last_event_at: DateTime<Utc>,
}

/// Returns the rank of an event type in the fold order (lower sorts first at equal times).
pub fn type_rank(event_type: EventType) -> u8 {
    match event_type {
        EventType::CallInitiated => 0,
        EventType::IvrCompleted => 1,
        EventType::CallRinging => 2,
        EventType::CallAnswered => 3,
        EventType::CallEnded => 4,
        EventType::CallCdr => 5,
        EventType::CallMediaFailure => 6,
        // Never folded; ranked only so that the order is defined for every type.
        EventType::AgentLoggedIn => 7,
        EventType::AgentStatusChanged => 8,
        EventType::AgentLoggedOut => 9,
    }
}

/// Computes the `calls` row of `(source, call_id)` from the call's events, in any order.
/// Returns `None` when no event counts for a call (none, or only agent events).
pub fn fold_call(source: &str, call_id: &str, mut events: Vec<StoredCallEvent>) -> Option<CallRow> {
    events.retain(|event| !event.event_type.is_agent_event());
    events.sort_by(|left, right| fold_key(left).cmp(&fold_key(right)));
    let first = events.first()?;
    let last = events.last()?;
    let preferred = preferred_order(&events);
    let milestones = Milestones::of(&events);
    let parties = Parties::of(&preferred);
    let outcome = Outcome::of(&events, &milestones);
    Some(CallRow {
        source: source.to_owned(),
        call_id: call_id.to_owned(),
        vendor: first.data.vendor.clone(),
        // The CDR is the vendor's final word on the call, so it decides the direction too.
        direction: preferred
            .iter()
            .map(|event| event.data.direction)
            .find(|direction| *direction != Direction::Unknown)
            .unwrap_or(Direction::Unknown),
        caller: parties.caller,
        callee: parties.callee,
        agent_number: parties.agent_number,
        agent_name: parties.agent_name,
        queue: parties.queue,
        queue_name: parties.queue_name,
        parent_call_id: parties.parent_call_id,
        first_event_at: first.time,
        started_at: milestones.started_at,
        ringing_at: milestones.ringing_at,
        answered_at: milestones.answered_at,
        ended_at: milestones.ended_at,
        disposition: outcome.disposition,
        disposition_raw: outcome.disposition_raw,
        talk_seconds: outcome.talk_seconds,
        recording_url: parties.recording_url,
        correlation: merge_correlation(&preferred),
        events_count: events.len() as u64,
        last_event_type: last.event_type,
        last_event_at: last.time,
    })
}

/// Who took part and where the recording is: each the first found in preferred order.
struct Parties {
    caller: Option<PhoneNumber>,
    callee: Option<PhoneNumber>,
    agent_number: Option<String>,
    agent_name: Option<String>,
    queue: Option<String>,
    queue_name: Option<String>,
    parent_call_id: Option<String>,
    recording_url: Option<String>,
}

impl Parties {
    fn of(preferred: &[&StoredCallEvent]) -> Parties {
        let owned = |text: Option<&str>| text.map(str::to_owned);
        let queue = first_in(preferred, |data| {
            data.queue
                .as_ref()
                .filter(|queue| non_empty(&queue.id).or(non_empty(&queue.name)).is_some())
        });
        Parties {
            caller: first_in(preferred, |data| number(&data.caller)).cloned(),
            callee: first_in(preferred, |data| number(&data.callee)).cloned(),
            agent_number: owned(first_in(preferred, |data| {
                data.agent
                    .as_ref()
                    .and_then(|agent| non_empty(&agent.number))
            })),
            agent_name: owned(first_in(preferred, |data| {
                data.agent.as_ref().and_then(|agent| non_empty(&agent.name))
            })),
            queue: owned(queue.and_then(|queue| non_empty(&queue.id).or(non_empty(&queue.name)))),
            queue_name: owned(queue.and_then(|queue| non_empty(&queue.name))),
            parent_call_id: owned(first_in(preferred, |data| non_empty(&data.parent_call_id))),
            recording_url: first_in(preferred, |data| {
                data.recording_urls.iter().find(|url| !url.is_empty())
            })
            .cloned(),
        }
    }
}

/// How the call ended: the vendor's final word, else what the milestones imply.
struct Outcome {
    disposition: Option<DispositionValue>,
    disposition_raw: Option<String>,
    talk_seconds: Option<u64>,
}

impl Outcome {
    fn of(events: &[StoredCallEvent], milestones: &Milestones) -> Outcome {
        let (disposition, disposition_raw) = match final_word(events, |data| {
            data.disposition.as_ref()
        }) {
            Some(found) => (Some(found.value), found.raw.clone()),
            None if milestones.answered_at.is_some() => (Some(DispositionValue::Answered), None),
            None => (None, None),
        };
        let talk_seconds = final_word(events, |data| data.talk_seconds.as_ref())
            .copied()
            .or_else(|| milestones.computed_talk_seconds());
        Outcome {
            disposition,
            disposition_raw,
            talk_seconds,
        }
    }
}

/// The fold-order key.
fn fold_key(event: &StoredCallEvent) -> (DateTime<Utc>, u8, &str) {
    (event.time, type_rank(event.event_type), &event.id)
}

/// Returns the events (already in fold order) in preferred order: CDRs latest first, then the
/// rest in fold order.
fn preferred_order(events: &[StoredCallEvent]) -> Vec<&StoredCallEvent> {
    let is_cdr = |event: &&StoredCallEvent| event.event_type == EventType::CallCdr;
    let mut preferred: Vec<&StoredCallEvent> = events.iter().rev().filter(is_cdr).collect();
    preferred.extend(events.iter().filter(|event| !is_cdr(event)));
    preferred
}

/// Returns the first value `pick` finds, walking `events` in order.
fn first_in<'a, T: ?Sized>(
    events: &[&'a StoredCallEvent],
    pick: impl Fn(&'a CallEventData) -> Option<&'a T>,
) -> Option<&'a T> {
    events.iter().find_map(|event| pick(&event.data))
}

/// Returns the value `pick` finds in the event that is greatest by (`call.cdr` > `call.ended` >
/// other, time, id): the vendor's final word on it.
fn final_word<'a, T>(
    events: &'a [StoredCallEvent],
    pick: impl Fn(&'a CallEventData) -> Option<&'a T>,
) -> Option<&'a T> {
    let authority = |event_type: EventType| match event_type {
        EventType::CallCdr => 2,
        EventType::CallEnded => 1,
        _ => 0,
    };
    events
        .iter()
        .filter_map(|event| pick(&event.data).map(|value| (event, value)))
        .max_by(|(left, _), (right, _)| {
            (authority(left.event_type), left.time, &left.id).cmp(&(
                authority(right.event_type),
                right.time,
                &right.id,
            ))
        })
        .map(|(_, value)| value)
}

/// Returns the string if it is present and not empty.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// Returns the number if it is present and its raw form is not empty.
fn number(value: &Option<PhoneNumber>) -> Option<&PhoneNumber> {
    value.as_ref().filter(|number| !number.raw.is_empty())
}

/// Returns the union of the correlation maps; the first event in `preferred` order wins a key.
fn merge_correlation(preferred: &[&StoredCallEvent]) -> BTreeMap<String, Value> {
    let mut merged = BTreeMap::new();
    for event in preferred {
        for (key, value) in &event.data.correlation {
            merged.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    merged
}

/// The call's milestone times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Milestones {
    started_at: Option<DateTime<Utc>>,
    ringing_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
}

impl Milestones {
    fn of(events: &[StoredCallEvent]) -> Milestones {
        // Each milestone: the data field on any event, or the time of the event type that
        // announces it.
        let collect = |field: fn(&CallEventData) -> Option<DateTime<Utc>>,
                       announcing: EventType| {
            events.iter().flat_map(move |event| {
                [
                    field(&event.data),
                    (event.event_type == announcing).then_some(event.time),
                ]
                .into_iter()
                .flatten()
            })
        };
        Milestones {
            started_at: collect(|data| data.started_at, EventType::CallInitiated).min(),
            ringing_at: collect(|data| data.ringing_at, EventType::CallRinging).min(),
            answered_at: collect(|data| data.answered_at, EventType::CallAnswered).min(),
            ended_at: collect(|data| data.ended_at, EventType::CallEnded).max(),
        }
    }

    fn computed_talk_seconds(&self) -> Option<u64> {
        let talk = self.ended_at? - self.answered_at?;
        u64::try_from(talk.num_seconds()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhook_schemas::{Agent, Disposition, NumberKind, Queue};
    use chrono::TimeZone;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap() + chrono::TimeDelta::seconds(second)
    }

    fn event(id: &str, event_type: EventType, second: i64) -> StoredCallEvent {
        let mut data = CallEventData::new("7moor", "7moor.v7", "x", "moor-main");
        data.call_id = Some("c1".to_owned());
        StoredCallEvent {
            id: id.to_owned(),
            event_type,
            time: at(second),
            data,
        }
    }

    fn phone(raw: &str) -> PhoneNumber {
        PhoneNumber {
            raw: raw.to_owned(),
            e164: None,
            kind: NumberKind::Unknown,
        }
    }

    #[test]
    fn test_fold_prefers_latest_cdr_and_ignores_agent_events() {
        let mut early_cdr = event("a1", EventType::CallCdr, 30);
        early_cdr.data.disposition = Some(Disposition {
            value: DispositionValue::NoAnswer,
            raw: Some("NOANSWER".into()),
        });
        early_cdr.data.caller = Some(phone("1001"));
        let mut late_cdr = event("a2", EventType::CallCdr, 40);
        late_cdr.data.disposition = Some(Disposition {
            value: DispositionValue::Answered,
            raw: Some("ANSWER".into()),
        });
        late_cdr.data.caller = Some(phone("1002"));
        late_cdr.data.talk_seconds = Some(17);
        let mut ended = event("a3", EventType::CallEnded, 50);
        ended.data.disposition = Some(Disposition {
            value: DispositionValue::Busy,
            raw: None,
        });
        let agent = event("a4", EventType::AgentStatusChanged, 60);
        let row = fold_call("moor-main", "c1", vec![ended, agent, early_cdr, late_cdr]).unwrap();
        assert_eq!(row.disposition, Some(DispositionValue::Answered));
        assert_eq!(row.disposition_raw.as_deref(), Some("ANSWER"));
        assert_eq!(row.caller.map(|number| number.raw), Some("1002".to_owned()));
        assert_eq!(row.talk_seconds, Some(17));
        assert_eq!(row.events_count, 3);
        assert_eq!(row.last_event_type, EventType::CallEnded);
        assert_eq!(row.ended_at, Some(at(50)));
    }

    #[test]
    fn test_fold_derives_milestones_from_types_and_answered_disposition() {
        let mut initiated = event("b1", EventType::CallInitiated, 1);
        initiated.data.direction = Direction::Unknown;
        let mut ringing = event("b2", EventType::CallRinging, 3);
        ringing.data.direction = Direction::Inbound;
        ringing.data.agent = Some(Agent {
            number: Some(String::new()),
            name: Some("Li".into()),
            extension: None,
        });
        let answered = event("b3", EventType::CallAnswered, 5);
        let mut ended = event("b4", EventType::CallEnded, 45);
        ended.data.direction = Direction::Outbound;
        ended.data.agent = Some(Agent {
            number: Some("8001".into()),
            name: None,
            extension: None,
        });
        ended.data.queue = Some(Queue {
            id: None,
            name: Some("sales".into()),
        });
        let row = fold_call("moor-main", "c1", vec![ended, answered, ringing, initiated]).unwrap();
        assert_eq!(row.direction, Direction::Inbound);
        assert_eq!(
            (row.started_at, row.ringing_at, row.answered_at),
            (Some(at(1)), Some(at(3)), Some(at(5)))
        );
        assert_eq!(row.disposition, Some(DispositionValue::Answered));
        assert_eq!(row.talk_seconds, Some(40));
        assert_eq!(row.agent_number.as_deref(), Some("8001"));
        assert_eq!(row.agent_name.as_deref(), Some("Li"));
        assert_eq!(
            (row.queue.as_deref(), row.queue_name.as_deref()),
            (Some("sales"), Some("sales"))
        );
        assert_eq!(row.first_event_at, at(1));
    }

    #[test]
    fn test_fold_orders_equal_times_by_type_rank_then_id() {
        let row = fold_call(
            "s",
            "c1",
            vec![
                event("z", EventType::CallCdr, 9),
                event("y", EventType::CallEnded, 9),
                event("x", EventType::CallCdr, 9),
            ],
        )
        .unwrap();
        assert_eq!(row.last_event_type, EventType::CallCdr);
        assert!(type_rank(EventType::CallInitiated) < type_rank(EventType::CallRinging));
        assert!(type_rank(EventType::CallCdr) < type_rank(EventType::CallMediaFailure));
    }

    #[test]
    fn test_correlation_first_in_preferred_order_wins() {
        let mut ringing = event("c1", EventType::CallRinging, 1);
        ringing
            .data
            .correlation
            .insert("ActionID".into(), Value::from("live"));
        ringing
            .data
            .correlation
            .insert("extras".into(), Value::from("e"));
        let mut cdr = event("c2", EventType::CallCdr, 9);
        cdr.data
            .correlation
            .insert("ActionID".into(), Value::from("cdr"));
        let row = fold_call("s", "c1", vec![ringing, cdr]).unwrap();
        assert_eq!(row.correlation.get("ActionID"), Some(&Value::from("cdr")));
        assert_eq!(row.correlation.get("extras"), Some(&Value::from("e")));
    }

    #[test]
    fn test_only_agent_events_make_no_row() {
        assert!(fold_call("s", "c1", vec![event("d1", EventType::AgentLoggedIn, 1)]).is_none());
        assert!(fold_call("s", "c1", Vec::new()).is_none());
    }
}
