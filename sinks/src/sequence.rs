//! The per-call `sequence` of events (since v1.1), assigned by the projection sink that first
//! stores them.
//!
//! # Guarantee: a call's events are numbered 1, 2, 3 ... in the order they were first stored
//!
//! - **Where.** Inside the sink's batch transaction, at the insert: an event that is inserted
//!   gets the call's stored maximum plus one (read once per call and batch, then counted up in
//!   batch order); an event that is not inserted (its id is stored: a vendor re-send, a record
//!   read again after a crash) gets nothing, so a duplicate never uses up a number and there
//!   are no gaps. The number commits with the event and the offsets, so it survives crashes
//!   exactly as the event does.
//! - **Which events.** Call events: not `agent.*`, with a non-empty `call_id` (the events a
//!   `calls` row is folded from); `call.stale` included. Other events have none.
//! - **Same numbers everywhere.** An event that already carries a `sequence` (set upstream)
//!   keeps it. The SQLite and PostgreSQL sinks are handed the same batches in the same order,
//!   so each numbers a call's events the same way ([`crate::projections`]); `callhook replay
//!   --into` commits the raw log's records in the same order as the live loop did, so a rebuild
//!   reproduces the numbers (see `schemas/README.md` for the limits).
//! - **Before the sinks, when Kafka needs it.** In Kafka mode the events topic is produced
//!   before the projection sinks commit, so the normalizer numbers the batch first
//!   ([`ProjectionSinks::assign_sequences`]) from the projection that is authoritative for it
//!   (PostgreSQL when it runs, else SQLite), by the same rule: `ce_sequence` then carries the
//!   number each sink stores. An event already stored keeps its stored number (a re-produced
//!   batch carries the same `ce_sequence`s).
//! - **Concurrent writers.** The SQLite sink numbers under its write lock; the PostgreSQL sink
//!   takes the per-call advisory lock before it reads the maximum, so two normalizers writing
//!   one call cannot hand out one number twice.

use std::collections::{HashMap, HashSet};

use callhook_schemas::CloudEvent;

use crate::batch::{EventKey, SinkBatch, SinkItem};
use crate::projections::{ProjectionSinks, SinkError};

/// Returns the `(source_name, call_id)` an event is numbered under, or `None` for an event
/// that belongs to no call.
pub fn call_key(event: &CloudEvent) -> Option<(&str, &str)> {
    if event.event_type.is_agent_event() {
        return None;
    }
    let call_id = event.data.call_id.as_deref().filter(|id| !id.is_empty())?;
    Some((event.data.source_name.as_str(), call_id))
}

/// The numbers a batch has handed out so far, per call.
#[derive(Debug, Default)]
pub struct Numbering {
    /// Per `(source_name, call_id)`: the greatest number stored or handed out.
    last: HashMap<(String, String), u64>,
}

impl Numbering {
    /// Returns the number the call's next new event gets; `stored_max` reads the call's
    /// greatest stored number (0 when none) the first time the call comes up in the batch.
    pub fn next<E>(
        &mut self,
        call: (&str, &str),
        stored_max: impl FnOnce() -> Result<u64, E>,
    ) -> Result<u64, E> {
        let key = (call.0.to_owned(), call.1.to_owned());
        let last = match self.last.get(&key) {
            Some(last) => *last,
            None => {
                let max = stored_max()?;
                self.last.insert(key, max);
                max
            }
        };
        Ok(last + 1)
    }

    /// Returns the greatest number stored or handed out for a call in this batch, if it came
    /// up.
    pub fn last(&self, call: (&str, &str)) -> Option<u64> {
        self.last
            .get(&(call.0.to_owned(), call.1.to_owned()))
            .copied()
    }

    /// Records that an event of the call was stored with `number`.
    pub fn used(&mut self, call: (&str, &str), number: u64) {
        let last = self
            .last
            .entry((call.0.to_owned(), call.1.to_owned()))
            .or_default();
        *last = (*last).max(number);
    }

    /// Returns the number for `event` if it is inserted: its own, or the call's next. `None`
    /// for an event of no call.
    pub fn number_for<E>(
        &mut self,
        event: &CloudEvent,
        stored_max: impl FnOnce() -> Result<u64, E>,
    ) -> Result<Option<u64>, E> {
        let Some(call) = call_key(event) else {
            return Ok(None);
        };
        match event.sequence {
            Some(given) => Ok(Some(given)),
            None => self.next(call, stored_max).map(Some),
        }
    }

    /// Records that `event` was stored with `number` (from [`Numbering::number_for`]).
    pub fn stored(&mut self, event: &CloudEvent, number: Option<u64>) {
        if let (Some(call), Some(number)) = (call_key(event), number) {
            self.used(call, number);
        }
    }
}

impl ProjectionSinks {
    /// Sets the `sequence` of every call event of `batch` to the number the sinks will store
    /// (see the module docs): a stored event's own, else the next of its call, in batch order;
    /// the events of a push whose first event is stored (a re-send) keep what is stored.
    pub fn assign_sequences(&mut self, batch: &mut SinkBatch) -> Result<(), SinkError> {
        let keys: Vec<EventKey<'_>> = call_events(batch).map(EventKey::of).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let stored = self.stored_sequences(&keys)?;
        let mut calls: Vec<(String, String)> = call_events(batch)
            .filter(|event| !stored.contains_key(&event.id))
            .filter_map(|event| call_key(event).map(|(s, c)| (s.to_owned(), c.to_owned())))
            .collect();
        calls.sort_unstable();
        calls.dedup();
        let mut numbering = Numbering::default();
        for ((source, call_id), max) in self.max_sequences(&calls)? {
            numbering.used((&source, &call_id), max);
        }
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut seen_first: HashSet<String> = HashSet::new();
        for item in &mut batch.items {
            let SinkItem::Push { events, .. } = item else {
                continue;
            };
            let first = events.first().map(|first| first.event.id.clone());
            let resent =
                first.is_some_and(|first| stored.contains_key(&first) || !seen_first.insert(first));
            for sink_event in events.iter_mut() {
                let event = &mut sink_event.event;
                let Some(call) = call_key(event).map(|(s, c)| (s.to_owned(), c.to_owned())) else {
                    continue;
                };
                if let Some(number) = stored.get(&event.id) {
                    event.sequence = *number;
                } else if let Some(number) = seen.get(&event.id) {
                    event.sequence = Some(*number);
                } else if !resent {
                    let call = (call.0.as_str(), call.1.as_str());
                    let number = numbering.next(call, || Ok::<_, SinkError>(0))?;
                    numbering.used(call, number);
                    seen.insert(event.id.clone(), number);
                    event.sequence = Some(number);
                }
            }
        }
        Ok(())
    }

    /// Returns the `sequence` of each stored event of `ids`, from the authoritative projection
    /// (PostgreSQL when it runs, else SQLite).
    pub fn stored_sequences(
        &mut self,
        keys: &[EventKey<'_>],
    ) -> Result<HashMap<String, Option<u64>>, SinkError> {
        if let Some(postgres) = self.postgres() {
            let ids: Vec<&str> = keys.iter().map(|key| key.id).collect();
            return Ok(postgres.stored_sequences(&ids)?);
        }
        match self.sqlite() {
            Some(sqlite) => Ok(sqlite.stored_sequences(keys)?),
            None => Ok(HashMap::new()),
        }
    }

    /// The greatest stored `sequence` of each call, from the authoritative projection.
    fn max_sequences(
        &mut self,
        calls: &[(String, String)],
    ) -> Result<HashMap<(String, String), u64>, SinkError> {
        let refs: Vec<(&str, &str)> = calls
            .iter()
            .map(|(source, call_id)| (source.as_str(), call_id.as_str()))
            .collect();
        if let Some(postgres) = self.postgres() {
            return Ok(postgres.max_sequences(&refs)?);
        }
        let mut maxima = HashMap::new();
        if let Some(sqlite) = self.sqlite() {
            for (source, call_id) in calls {
                let max = sqlite.max_sequence(source, call_id)?;
                maxima.insert((source.clone(), call_id.clone()), max);
            }
        }
        Ok(maxima)
    }
}

/// The call events of a batch's pushes, in order.
fn call_events(batch: &SinkBatch) -> impl Iterator<Item = &CloudEvent> {
    batch
        .items
        .iter()
        .filter_map(|item| match item {
            SinkItem::Push { events, .. } => Some(events),
            SinkItem::DeadLetter { .. } => None,
        })
        .flatten()
        .map(|sink_event| &sink_event.event)
        .filter(|event| call_key(event).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_numbers_count_up_per_call_from_the_stored_max() {
        let mut numbering = Numbering::default();
        let a = ("s", "a");
        let b = ("s", "b");
        let first = numbering.next(a, || Ok::<_, ()>(3)).unwrap();
        assert_eq!(first, 4);
        // Not stored (a duplicate): the number is not used up.
        assert_eq!(
            numbering
                .next(a, || -> Result<u64, ()> { unreachable!() })
                .unwrap(),
            4
        );
        numbering.used(a, 4);
        assert_eq!(
            numbering
                .next(a, || -> Result<u64, ()> { unreachable!() })
                .unwrap(),
            5
        );
        assert_eq!(numbering.next(b, || Ok::<_, ()>(0)).unwrap(), 1);
    }
}
