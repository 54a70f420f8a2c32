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
//! - **Concurrent writers.** The SQLite sink numbers under its write lock; the PostgreSQL sink
//!   takes the per-call advisory lock before it reads the maximum, so two normalizers writing
//!   one call cannot hand out one number twice.

use std::collections::HashMap;

use callhook_schemas::CloudEvent;

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
