//! The model v1.1 columns of the `calls` row (conversation and leg, queue segment, abandon
//! point, disconnect reason, IVR path), folded like every other column: each is a minimum, a
//! maximum or an ordered union by keys computed from single events, so the result depends
//! only on the set of events. The rules are in the column table of [`super`].

use std::collections::BTreeMap;

use callhook_schemas::canonical_time;
use callhook_schemas::{
    AbandonPoint, CallEventData, Direction, DisconnectReasonValue, EventType, IvrStep, Leg,
};
use chrono::{DateTime, Utc};

use super::{min_time, AuthorityKey, Best, FoldKey, PreferredKey};

/// The v1.1 columns of one `calls` row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallJourney {
    /// The conversation the call belongs to.
    pub conversation_id: Option<String>,
    /// The leg of the conversation this call is.
    pub leg: Option<Leg>,
    /// When the call joined a queue.
    pub queue_joined_at: Option<DateTime<Utc>>,
    /// When it left the queue.
    pub queue_left_at: Option<DateTime<Utc>>,
    /// Seconds waiting in queue.
    pub queue_seconds: Option<u64>,
    /// Where the caller gave up (`none`: not abandoned).
    pub abandon_point: Option<AbandonPoint>,
    /// Why the call ended.
    pub disconnect_reason: Option<DisconnectReasonValue>,
    /// The vendor value that decided it.
    pub disconnect_reason_raw: Option<String>,
    /// The IVR nodes passed, in order.
    pub ivr_path: Vec<IvrStep>,
}

impl CallJourney {
    /// The columns a replay diff compares (`callhook replay --dry-run`), with `other`'s:
    /// `(column, self, other)`, times spelled canonically.
    pub fn compared_columns(
        &self,
        other: &CallJourney,
    ) -> [(&'static str, Option<String>, Option<String>); 5] {
        let time = |value: &Option<DateTime<Utc>>| value.as_ref().map(canonical_time);
        [
            (
                "conversation_id",
                self.conversation_id.clone(),
                other.conversation_id.clone(),
            ),
            (
                "leg",
                self.leg.map(|leg| leg.as_str().into()),
                other.leg.map(|leg| leg.as_str().into()),
            ),
            (
                "queue_joined_at",
                time(&self.queue_joined_at),
                time(&other.queue_joined_at),
            ),
            (
                "abandon_point",
                self.abandon_point.map(|point| point.as_str().into()),
                other.abandon_point.map(|point| point.as_str().into()),
            ),
            (
                "disconnect_reason",
                self.disconnect_reason.map(|reason| reason.as_str().into()),
                other.disconnect_reason.map(|reason| reason.as_str().into()),
            ),
        ]
    }
}

/// What the journey columns derive from the rest of the row.
pub(super) struct RowFacts {
    pub direction: Direction,
    pub ringing_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The journey columns in the making.
#[derive(Debug, Clone)]
pub(super) struct JourneyFold {
    /// Key: (names only the call itself, preferred order); a link to another leg wins.
    conversation_id: Best<(bool, PreferredKey), String>,
    leg: Option<Leg>,
    queue_joined_at: Option<DateTime<Utc>>,
    queue_left_at: Option<DateTime<Utc>>,
    queue_seconds: Best<AuthorityKey, u64>,
    abandon_point: Best<AuthorityKey, AbandonPoint>,
    disconnect_reason: Best<AuthorityKey, (DisconnectReasonValue, Option<String>)>,
    ivr_steps: BTreeMap<FoldKey, Vec<IvrStep>>,
    ivr_path: Best<PreferredKey, Vec<IvrStep>>,
}

impl JourneyFold {
    pub(super) fn new() -> Self {
        JourneyFold {
            conversation_id: Best::empty(),
            leg: None,
            queue_joined_at: None,
            queue_left_at: None,
            queue_seconds: Best::empty(),
            abandon_point: Best::empty(),
            disconnect_reason: Best::empty(),
            ivr_steps: BTreeMap::new(),
            ivr_path: Best::empty(),
        }
    }

    /// Adds one call event, with the keys the parent fold computed for it.
    pub(super) fn add(
        &mut self,
        call_id: &str,
        event_type: EventType,
        keys: (&FoldKey, &PreferredKey, &AuthorityKey),
        data: &CallEventData,
    ) {
        let (fold, preferred, authority) = keys;
        if let Some(conversation) = data.conversation_id.as_deref().filter(|c| !c.is_empty()) {
            let key = (conversation == call_id, preferred.clone());
            self.conversation_id
                .offer_min(&key, || conversation.to_owned());
        }
        if let Some(leg) = data.leg {
            if self.leg.is_none_or(|kept| leg_rank(leg) > leg_rank(kept)) {
                self.leg = Some(leg);
            }
        }
        self.queue_joined_at = min_time(self.queue_joined_at, data.queue_joined_at);
        self.queue_left_at = self.queue_left_at.max(data.queue_left_at);
        if let Some(seconds) = data.queue_seconds {
            self.queue_seconds.offer_max(authority, || seconds);
        }
        if let Some(point) = data.abandon_point {
            self.abandon_point.offer_max(authority, || point);
        }
        if let Some(reason) = &data.disconnect_reason {
            self.disconnect_reason
                .offer_max(authority, || (reason.value, reason.raw.clone()));
        }
        if !data.ivr_path.is_empty() {
            if event_type == EventType::IvrCompleted {
                self.ivr_steps.insert(fold.clone(), data.ivr_path.clone());
            } else {
                self.ivr_path.offer_min(preferred, || data.ivr_path.clone());
            }
        }
    }

    /// Returns the columns, given the rest of the row.
    pub(super) fn row(&self, facts: &RowFacts) -> CallJourney {
        let queue_seconds = self.queue_seconds.value().copied().or_else(|| {
            let waited = self.queue_left_at? - self.queue_joined_at?;
            u64::try_from(waited.num_seconds()).ok()
        });
        let (disconnect_reason, disconnect_reason_raw) = match self.disconnect_reason.value() {
            Some((value, raw)) => (Some(*value), raw.clone()),
            None => (None, None),
        };
        let ivr_path = if self.ivr_steps.is_empty() {
            self.ivr_path.value().cloned().unwrap_or_default()
        } else {
            self.ivr_steps.values().flatten().cloned().collect()
        };
        CallJourney {
            conversation_id: self.conversation_id.value().cloned(),
            leg: self.leg,
            queue_joined_at: self.queue_joined_at,
            queue_left_at: self.queue_left_at,
            queue_seconds,
            abandon_point: self
                .abandon_point
                .value()
                .copied()
                .or_else(|| derived_abandon_point(self.queue_joined_at, facts)),
            disconnect_reason,
            disconnect_reason_raw,
            ivr_path,
        }
    }
}

/// The most specific claim wins: a leg that says it continues or consults beats the generic
/// customer leg, which beats `unknown`.
fn leg_rank(leg: Leg) -> u8 {
    match leg {
        Leg::Unknown => 0,
        Leg::Customer => 1,
        Leg::Agent => 2,
        Leg::Consult => 3,
        Leg::Transfer => 4,
    }
}

/// When no event states an abandon point: an answered call was not abandoned; an inbound
/// call that ended unanswered was abandoned while an agent rang if it rang, else in the queue
/// if it joined one. Anything else is not known.
fn derived_abandon_point(
    queue_joined_at: Option<DateTime<Utc>>,
    facts: &RowFacts,
) -> Option<AbandonPoint> {
    if facts.answered_at.is_some() {
        return Some(AbandonPoint::NotAbandoned);
    }
    if facts.direction != Direction::Inbound || facts.ended_at.is_none() {
        return None;
    }
    if facts.ringing_at.is_some() {
        Some(AbandonPoint::AgentRinging)
    } else if queue_joined_at.is_some() {
        Some(AbandonPoint::Queue)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fold_call, StoredCallEvent};
    use super::*;
    use chrono::TimeZone;

    fn event(id: &str, event_type: EventType, second: i64) -> StoredCallEvent {
        let mut data = CallEventData::new("coocenter", "coocenter", "x", "s");
        data.call_id = Some("c1".to_owned());
        StoredCallEvent {
            id: id.to_owned(),
            event_type,
            time: Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap()
                + chrono::TimeDelta::seconds(second),
            data,
        }
    }

    fn step(node: &str) -> IvrStep {
        IvrStep {
            node: Some(node.to_owned()),
            ..IvrStep::default()
        }
    }

    #[test]
    fn test_ivr_nodes_concatenate_in_time_order_whatever_the_arrival() {
        let mut first = event("b", EventType::IvrCompleted, 5);
        first.data.ivr_path = vec![step("610")];
        let mut second = event("a", EventType::IvrCompleted, 9);
        second.data.ivr_path = vec![step("611")];
        let mut cdr = event("c", EventType::CallCdr, 30);
        cdr.data.ivr_path = vec![step("611")];
        let row = fold_call("s", "c1", vec![cdr, second, first]).unwrap();
        assert_eq!(row.journey.ivr_path, vec![step("610"), step("611")]);
    }

    #[test]
    fn test_unanswered_inbound_calls_get_a_derived_abandon_point() {
        // UinCall: `incoming` rang the agent, `call_hangup` ended it, nothing was answered.
        let mut incoming = event("a", EventType::CallRinging, 1);
        incoming.data.direction = Direction::Inbound;
        let hangup = event("b", EventType::CallEnded, 20);
        let row = fold_call("s", "c1", vec![hangup.clone(), incoming.clone()]).unwrap();
        assert_eq!(row.journey.abandon_point, Some(AbandonPoint::AgentRinging));
        // Still ringing: nothing derived yet.
        let row = fold_call("s", "c1", vec![incoming.clone()]).unwrap();
        assert_eq!(row.journey.abandon_point, None);
        // A queue join and no ringing: abandoned in the queue.
        let mut queued = event("c", EventType::CallInitiated, 0);
        queued.data.direction = Direction::Inbound;
        queued.data.queue_joined_at = Some(queued.time);
        let row = fold_call("s", "c1", vec![queued, hangup.clone()]).unwrap();
        assert_eq!(row.journey.abandon_point, Some(AbandonPoint::Queue));
        assert_eq!(
            row.journey.queue_joined_at,
            Some(incoming.time - chrono::TimeDelta::seconds(1))
        );
        // An outbound call nobody answered was not abandoned by a caller: not derived.
        let mut outbound = event("d", EventType::CallRinging, 1);
        outbound.data.direction = Direction::Outbound;
        let row = fold_call("s", "c1", vec![outbound, hangup]).unwrap();
        assert_eq!(row.journey.abandon_point, None);
    }

    #[test]
    fn test_a_link_to_another_leg_beats_the_calls_own_id() {
        let mut own = event("a", EventType::CallCdr, 9);
        own.data.conversation_id = Some("c1".to_owned());
        own.data.leg = Some(Leg::Customer);
        let mut linked = event("b", EventType::CallEnded, 8);
        linked.data.conversation_id = Some("main".to_owned());
        linked.data.leg = Some(Leg::Agent);
        let row = fold_call("s", "c1", vec![own, linked]).unwrap();
        assert_eq!(row.journey.conversation_id.as_deref(), Some("main"));
        assert_eq!(row.journey.leg, Some(Leg::Agent));
    }
}
