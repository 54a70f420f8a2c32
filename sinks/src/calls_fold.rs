//! The `calls` row: a deterministic fold over all of a call's stored events.
//!
//! Order independence is by construction: every column below is the value of the event that is
//! least (or greatest) by a key computed from that event alone, a minimum, a maximum, a count or
//! a union. So the row depends only on the set of events, never on the order they arrived in
//! or how they were split into batches, and it can be kept up to date one event at a time:
//! [`CallFold`] holds each column's best candidate with its key, and adding an event compares
//! keys. The sink keeps the folds of recent calls in memory and adds each newly stored event
//! to its call's fold; a call not in memory is folded from its stored events ([`fold_call`]
//! is exactly that). (It assumes, as the schema promises, that one event id always carries the
//! same content; `events` keeps the first stored copy.)
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
//! | `status` (since v1.1) | from the set of event types: `final` with a `call.cdr`, else `ended` with a `call.ended`, else `stale` with a `call.stale`, else `in_progress` ([`crate::call_status`]) |
//! | `conversation_id` (v1.1) | the first `data.conversation_id` in preferred order that names another leg (differs from the call id); else the call's own id when an event names it |
//! | `leg` (v1.1) | the most specific `data.leg` any event states: `transfer` > `consult` > `agent` > `customer` > `unknown` |
//! | `queue_joined_at` (v1.1) | min of `data.queue_joined_at` |
//! | `queue_left_at` (v1.1) | max of `data.queue_left_at` |
//! | `queue_seconds` (v1.1) | `data.queue_seconds` from the event greatest by the same key as `disposition`; else `queue_left_at - queue_joined_at` in whole seconds when both are known and not negative |
//! | `abandon_point` (v1.1) | `data.abandon_point` from the event greatest by the same key as `disposition`; if no event states one: `none` when `answered_at` is known, else for an inbound call with `ended_at` known, `agent_ringing` when `ringing_at` is known, else `queue` when `queue_joined_at` is known; else NULL |
//! | `disconnect_reason`, `disconnect_reason_raw` (v1.1) | from the event with a `data.disconnect_reason` greatest by the same key as `disposition` |
//! | `ivr_path` (v1.1) | the steps of the `ivr.completed` events (one node each) concatenated in fold order; with none, the first `data.ivr_path` in preferred order; stored as a JSON array of `{node?, name?, keys?}` (`[]` when none) |

mod journey;

use std::collections::BTreeMap;
use std::sync::Arc;

use callhook_schemas::{CallEventData, Direction, DispositionValue, EventType, PhoneNumber};

use crate::call_status::{CallStatus, StatusFold};
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use journey::CallJourney;
use journey::{JourneyFold, RowFacts};

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
    /// The model v1.1 columns: conversation and leg, queue segment, abandon point,
    /// disconnect reason, IVR path.
    pub journey: CallJourney,
    /// How complete the record is (since v1.1; [`crate::call_status`]).
    pub status: CallStatus,
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
        // After every vendor event at the same time: callhook's own verdict on the call.
        EventType::CallStale => 10,
    }
}

/// Computes the `calls` row of `(source, call_id)` from the call's events, in any order.
/// Returns `None` when no event counts for a call (none, or only agent events).
pub fn fold_call(source: &str, call_id: &str, events: Vec<StoredCallEvent>) -> Option<CallRow> {
    let mut fold = CallFold::new(source, call_id);
    for event in &events {
        fold.add(event.event_type, event.time, &event.id, &event.data);
    }
    fold.row()
}

/// An event's place in the fold order: `(time, type rank, id)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FoldKey {
    time: DateTime<Utc>,
    rank: u8,
    id: Arc<str>,
}

/// An event's place in the preferred order: the `call.cdr` events latest first, then every
/// other event in fold order (the variant order is the first criterion).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PreferredKey {
    Cdr(std::cmp::Reverse<FoldKey>),
    Other(FoldKey),
}

/// An event's authority on the call's outcome: `(call.cdr > call.ended > other, time, id)`,
/// greatest wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AuthorityKey {
    authority: u8,
    time: DateTime<Utc>,
    id: Arc<str>,
}

/// The value of the best event seen so far by some key: the least (`offer_min`) or the
/// greatest (`offer_max`).
#[derive(Debug, Clone)]
struct Best<K, V>(Option<(K, V)>);

impl<K: Ord + Clone, V> Best<K, V> {
    fn empty() -> Self {
        Best(None)
    }

    /// Keeps `value()` if `key` is less than the kept key (or nothing is kept).
    fn offer_min(&mut self, key: &K, value: impl FnOnce() -> V) {
        if self.0.as_ref().is_none_or(|(kept, _)| key < kept) {
            self.0 = Some((key.clone(), value()));
        }
    }

    /// Keeps `value()` if `key` is greater than the kept key (or nothing is kept).
    fn offer_max(&mut self, key: &K, value: impl FnOnce() -> V) {
        if self.0.as_ref().is_none_or(|(kept, _)| key > kept) {
            self.0 = Some((key.clone(), value()));
        }
    }

    fn value(&self) -> Option<&V> {
        self.0.as_ref().map(|(_, value)| value)
    }

    fn key(&self) -> Option<&K> {
        self.0.as_ref().map(|(key, _)| key)
    }
}

/// The `calls` row of one call in the making: for every column, the best candidate so far and
/// the key that made it best. Adding an event only compares keys, so the state after any set
/// of events is the same whatever order they were added in; [`CallFold::row`] is the row
/// [`fold_call`] gives for those events. The sink keeps the states of recent calls in memory
/// and adds each new event to its call's state, instead of reading the call's events back.
#[derive(Debug, Clone)]
pub struct CallFold {
    source: String,
    call_id: String,
    first: Best<FoldKey, String>,
    last: Best<FoldKey, EventType>,
    direction: Best<PreferredKey, Direction>,
    caller: Best<PreferredKey, PhoneNumber>,
    callee: Best<PreferredKey, PhoneNumber>,
    agent_number: Best<PreferredKey, String>,
    agent_name: Best<PreferredKey, String>,
    queue: Best<PreferredKey, (Option<String>, Option<String>)>,
    parent_call_id: Best<PreferredKey, String>,
    recording_url: Best<PreferredKey, String>,
    started_at: Option<DateTime<Utc>>,
    ringing_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    disposition: Best<AuthorityKey, (DispositionValue, Option<String>)>,
    talk_seconds: Best<AuthorityKey, u64>,
    correlation: BTreeMap<String, (PreferredKey, Value)>,
    events_count: u64,
    journey: JourneyFold,
    status: StatusFold,
}

impl CallFold {
    /// An empty fold of `(source, call_id)`.
    pub fn new(source: &str, call_id: &str) -> Self {
        CallFold {
            source: source.to_owned(),
            call_id: call_id.to_owned(),
            first: Best::empty(),
            last: Best::empty(),
            direction: Best::empty(),
            caller: Best::empty(),
            callee: Best::empty(),
            agent_number: Best::empty(),
            agent_name: Best::empty(),
            queue: Best::empty(),
            parent_call_id: Best::empty(),
            recording_url: Best::empty(),
            started_at: None,
            ringing_at: None,
            answered_at: None,
            ended_at: None,
            disposition: Best::empty(),
            talk_seconds: Best::empty(),
            correlation: BTreeMap::new(),
            events_count: 0,
            journey: JourneyFold::new(),
            status: StatusFold::default(),
        }
    }

    /// Returns how many events were added.
    pub fn events_count(&self) -> u64 {
        self.events_count
    }

    /// Adds one stored event of the call; agent events are ignored. Add each event once.
    pub fn add(
        &mut self,
        event_type: EventType,
        time: DateTime<Utc>,
        id: &str,
        data: &CallEventData,
    ) {
        if event_type.is_agent_event() {
            return;
        }
        self.events_count += 1;
        self.status.add(event_type);
        // One allocation per event, shared by every key that keeps it (a cached fold holds
        // a dozen keys, mostly of the same few events).
        let id: Arc<str> = Arc::from(id);
        let fold = FoldKey {
            time,
            rank: type_rank(event_type),
            id: Arc::clone(&id),
        };
        let preferred = match event_type {
            EventType::CallCdr => PreferredKey::Cdr(std::cmp::Reverse(fold.clone())),
            _ => PreferredKey::Other(fold.clone()),
        };
        let authority = AuthorityKey {
            authority: match event_type {
                EventType::CallCdr => 2,
                EventType::CallEnded => 1,
                _ => 0,
            },
            time,
            id,
        };
        self.first.offer_min(&fold, || data.vendor.clone());
        self.last.offer_max(&fold, || event_type);
        if data.direction != Direction::Unknown {
            self.direction.offer_min(&preferred, || data.direction);
        }
        if let Some(caller) = number(&data.caller) {
            self.caller.offer_min(&preferred, || caller.clone());
        }
        if let Some(callee) = number(&data.callee) {
            self.callee.offer_min(&preferred, || callee.clone());
        }
        let agent = data.agent.as_ref();
        if let Some(agent_number) = agent.and_then(|agent| non_empty(&agent.number)) {
            self.agent_number
                .offer_min(&preferred, || agent_number.to_owned());
        }
        if let Some(agent_name) = agent.and_then(|agent| non_empty(&agent.name)) {
            self.agent_name
                .offer_min(&preferred, || agent_name.to_owned());
        }
        if let Some(queue) = data
            .queue
            .as_ref()
            .filter(|queue| non_empty(&queue.id).or(non_empty(&queue.name)).is_some())
        {
            self.queue
                .offer_min(&preferred, || (queue.id.clone(), queue.name.clone()));
        }
        if let Some(parent) = non_empty(&data.parent_call_id) {
            self.parent_call_id
                .offer_min(&preferred, || parent.to_owned());
        }
        if let Some(url) = data.recording_urls.iter().find(|url| !url.is_empty()) {
            self.recording_url.offer_min(&preferred, || url.clone());
        }
        let announced = |announcing: EventType| (event_type == announcing).then_some(time);
        for candidate in [data.started_at, announced(EventType::CallInitiated)] {
            self.started_at = min_time(self.started_at, candidate);
        }
        for candidate in [data.ringing_at, announced(EventType::CallRinging)] {
            self.ringing_at = min_time(self.ringing_at, candidate);
        }
        for candidate in [data.answered_at, announced(EventType::CallAnswered)] {
            self.answered_at = min_time(self.answered_at, candidate);
        }
        for candidate in [data.ended_at, announced(EventType::CallEnded)] {
            self.ended_at = self.ended_at.max(candidate);
        }
        if let Some(disposition) = &data.disposition {
            self.disposition
                .offer_max(&authority, || (disposition.value, disposition.raw.clone()));
        }
        if let Some(talk_seconds) = data.talk_seconds {
            self.talk_seconds.offer_max(&authority, || talk_seconds);
        }
        self.journey.add(
            &self.call_id,
            event_type,
            (&fold, &preferred, &authority),
            data,
        );
        for (key, value) in &data.correlation {
            match self.correlation.get_mut(key) {
                Some((kept, _)) if *kept <= preferred => {}
                Some(slot) => *slot = (preferred.clone(), value.clone()),
                None => {
                    self.correlation
                        .insert(key.clone(), (preferred.clone(), value.clone()));
                }
            }
        }
    }

    /// Returns the row, or `None` when no call event was added.
    pub fn row(&self) -> Option<CallRow> {
        let first = self.first.key()?;
        let last = self.last.key()?;
        let queue = self.queue.value();
        let answered_at = self.answered_at;
        let (disposition, disposition_raw) = match self.disposition.value() {
            Some((value, raw)) => (Some(*value), raw.clone()),
            None if answered_at.is_some() => (Some(DispositionValue::Answered), None),
            None => (None, None),
        };
        let computed_talk = || {
            let talk = self.ended_at? - answered_at?;
            u64::try_from(talk.num_seconds()).ok()
        };
        Some(CallRow {
            source: self.source.clone(),
            call_id: self.call_id.clone(),
            vendor: self.first.value()?.clone(),
            direction: self
                .direction
                .value()
                .copied()
                .unwrap_or(Direction::Unknown),
            caller: self.caller.value().cloned(),
            callee: self.callee.value().cloned(),
            agent_number: self.agent_number.value().cloned(),
            agent_name: self.agent_name.value().cloned(),
            queue: queue
                .and_then(|(id, name)| non_empty(id).or(non_empty(name)).map(str::to_owned)),
            queue_name: queue.and_then(|(_, name)| non_empty(name).map(str::to_owned)),
            parent_call_id: self.parent_call_id.value().cloned(),
            first_event_at: first.time,
            started_at: self.started_at,
            ringing_at: self.ringing_at,
            answered_at,
            ended_at: self.ended_at,
            disposition,
            disposition_raw,
            talk_seconds: self.talk_seconds.value().copied().or_else(computed_talk),
            recording_url: self.recording_url.value().cloned(),
            correlation: self
                .correlation
                .iter()
                .map(|(key, (_, value))| (key.clone(), value.clone()))
                .collect(),
            events_count: self.events_count,
            last_event_type: *self.last.value()?,
            last_event_at: last.time,
            journey: self.journey.row(&RowFacts {
                direction: self
                    .direction
                    .value()
                    .copied()
                    .unwrap_or(Direction::Unknown),
                ringing_at: self.ringing_at,
                answered_at,
                ended_at: self.ended_at,
            }),
            status: self.status.status(),
        })
    }
}

/// The earlier of two optional times (a present one beats an absent one).
fn min_time(
    kept: Option<DateTime<Utc>>,
    candidate: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (kept, candidate) {
        (Some(kept), Some(candidate)) => Some(kept.min(candidate)),
        (kept, candidate) => kept.or(candidate),
    }
}

/// Returns the string if it is present and not empty.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// Returns the number if it is present and its raw form is not empty.
fn number(value: &Option<PhoneNumber>) -> Option<&PhoneNumber> {
    value.as_ref().filter(|number| !number.raw.is_empty())
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
