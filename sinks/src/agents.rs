//! The `agents` row: each agent's newest known status, whatever the arrival order.
//!
//! Which events set a status, keyed by `(data.source_name, data.agent.number)` (events without
//! an agent number set nothing):
//!
//! - `agent.logged_in`: `data.agent_status.value` if present, else `idle`;
//! - `agent.logged_out`: always `offline`;
//! - `agent.status_changed`: `data.agent_status.value`; without one it sets nothing (there is
//!   no status to record, and `unknown` would hide a real one);
//! - any call event carrying `data.agent_status` (7moor `callStatus`): that value.
//!
//! `raw_code` and `raw_label` come from `data.agent_status` whenever present, `agent_name`
//! from `data.agent.name`; the row holds exactly the winning event's values, so it never mixes
//! two events.
//!
//! Order independence: the upsert replaces a stored row only when the new event's
//! `(time, id)` is greater than the stored `(status_at, event_id)` (a SQL row-value comparison
//! on fixed-width time text). The stored row is therefore always the status of the greatest
//! `(time, id)` among the agent's status events, the same in every arrival order. Both sinks
//! first keep each agent's greatest `(time, id)` of a batch ([`NewestStatuses`]) and upsert
//! that one only: no other status event of the batch could have won.

use std::collections::BTreeMap;

use callhook_schemas::{AgentState, CloudEvent, EventType};
use chrono::{DateTime, Utc};

/// The status one event sets for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUpdate<'a> {
    /// The configured source name.
    pub source: &'a str,
    /// The agent's number.
    pub agent_number: &'a str,
    /// The canonical status.
    pub status: AgentState,
    /// The vendor's status code.
    pub raw_code: Option<&'a str>,
    /// The vendor's status label.
    pub raw_label: Option<&'a str>,
    /// The agent's display name.
    pub agent_name: Option<&'a str>,
    /// The event time.
    pub status_at: DateTime<Utc>,
    /// The event id (breaks ties between equal times).
    pub event_id: &'a str,
}

/// The newest status of each agent among a batch's events, by `(source, agent number)`.
///
/// Only the greatest `(time, id)` of a batch can win against the stored row, so both sinks
/// store one guarded upsert per agent from this: the row it leaves is the one an upsert per
/// event would, and an agent with 30 status events in a batch costs one statement, not 30.
#[derive(Debug, Default)]
pub struct NewestStatuses<'a>(BTreeMap<(&'a str, &'a str), AgentUpdate<'a>>);

impl<'a> NewestStatuses<'a> {
    /// Keeps `update` if it is its agent's first or greatest `(time, id)` so far.
    pub fn keep(&mut self, update: AgentUpdate<'a>) {
        let key = (update.source, update.agent_number);
        let newer = self.0.get(&key).is_none_or(|kept| {
            (update.status_at, update.event_id) > (kept.status_at, kept.event_id)
        });
        if newer {
            self.0.insert(key, update);
        }
    }

    /// Returns true when no update was kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns the kept updates, one per agent, ordered by source and agent number.
    pub fn updates(&self) -> impl Iterator<Item = &AgentUpdate<'a>> {
        self.0.values()
    }
}

/// Returns the status `event` sets, or `None` when it sets none.
pub fn agent_update(event: &CloudEvent) -> Option<AgentUpdate<'_>> {
    let data = &event.data;
    let agent = data.agent.as_ref()?;
    let agent_number = agent
        .number
        .as_deref()
        .filter(|number| !number.is_empty())?;
    let carried = data.agent_status.as_ref();
    let status = match event.event_type {
        EventType::AgentLoggedIn => carried.map_or(AgentState::Idle, |status| status.value),
        EventType::AgentLoggedOut => AgentState::Offline,
        _ => carried?.value,
    };
    Some(AgentUpdate {
        source: &data.source_name,
        agent_number,
        status,
        raw_code: carried.and_then(|status| status.raw_code.as_deref()),
        raw_label: carried.and_then(|status| status.raw_label.as_deref()),
        agent_name: agent.name.as_deref().filter(|name| !name.is_empty()),
        status_at: event.time,
        event_id: &event.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhook_schemas::{Agent, AgentStatus, CallEventData, TimeSource};
    use chrono::TimeZone;

    fn event(
        event_type: EventType,
        number: Option<&str>,
        status: Option<AgentState>,
    ) -> CloudEvent {
        let mut data = CallEventData::new("7moor", "7moor.v7", "x", "moor-main");
        data.agent = Some(Agent {
            number: number.map(str::to_owned),
            name: Some("Wang".into()),
            extension: None,
        });
        data.agent_status = status.map(|value| AgentStatus {
            value,
            raw_code: Some("5".into()),
            raw_label: None,
        });
        CloudEvent {
            id: "0".repeat(32),
            specversion: "1.0".into(),
            source: "7moor/1".into(),
            subject: "agent/8001".into(),
            event_type,
            time: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(),
            timesource: TimeSource::Vendor,
            datacontenttype: "application/json".into(),
            dataschema: callhook_schemas::DATA_SCHEMA_URI.into(),
            mappingversion: None,
            sequence: None,
            data,
        }
    }

    #[test]
    fn test_status_per_event_type() {
        let status_of = |event: &CloudEvent| agent_update(event).map(|update| update.status);
        assert_eq!(
            status_of(&event(EventType::AgentLoggedIn, Some("8001"), None)),
            Some(AgentState::Idle)
        );
        assert_eq!(
            status_of(&event(
                EventType::AgentLoggedIn,
                Some("8001"),
                Some(AgentState::Busy)
            )),
            Some(AgentState::Busy)
        );
        assert_eq!(
            status_of(&event(
                EventType::AgentLoggedOut,
                Some("8001"),
                Some(AgentState::Idle)
            )),
            Some(AgentState::Offline)
        );
        assert_eq!(
            status_of(&event(EventType::AgentStatusChanged, Some("8001"), None)),
            None
        );
        assert_eq!(
            status_of(&event(
                EventType::CallRinging,
                Some("8001"),
                Some(AgentState::Ringing)
            )),
            Some(AgentState::Ringing)
        );
        assert_eq!(
            status_of(&event(EventType::CallRinging, Some("8001"), None)),
            None
        );
        assert_eq!(
            status_of(&event(EventType::AgentLoggedIn, Some(""), None)),
            None
        );
        assert_eq!(
            status_of(&event(EventType::AgentLoggedIn, None, None)),
            None
        );
    }

    #[test]
    fn test_raw_values_and_name_come_from_the_event() {
        let logged_in = event(
            EventType::AgentLoggedIn,
            Some("8001"),
            Some(AgentState::Idle),
        );
        let update = agent_update(&logged_in).unwrap();
        assert_eq!((update.source, update.agent_number), ("moor-main", "8001"));
        assert_eq!(
            (update.raw_code, update.raw_label, update.agent_name),
            (Some("5"), None, Some("Wang"))
        );
    }
}
