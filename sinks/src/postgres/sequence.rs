//! The per-call `sequence` in the PostgreSQL sink ([`crate::sequence`] has the rule): the
//! batch's calls are locked before their greatest stored numbers are read, with the same
//! per-call advisory lock the `calls` fold takes (`writes.rs`, step 5; a transaction may take
//! it again), so two normalizers writing one call number its events one after the other.

use std::collections::HashMap;

use postgres::Transaction;

use super::error::Result;
use crate::sequence::{call_key, Numbering};
use crate::SinkEvent;

/// Locks the calls of `events` and returns a [`Numbering`] that starts from their stored
/// maxima.
pub(crate) fn lock_and_start<'e>(
    transaction: &mut Transaction<'_>,
    events: impl Iterator<Item = &'e SinkEvent>,
) -> Result<Numbering> {
    let mut calls: Vec<(&str, &str)> = events
        .filter_map(|sink_event| call_key(&sink_event.event))
        .collect();
    calls.sort_unstable();
    calls.dedup();
    let mut numbering = Numbering::default();
    if calls.is_empty() {
        return Ok(numbering);
    }
    let sources: Vec<&str> = calls.iter().map(|(source, _)| *source).collect();
    let call_ids: Vec<&str> = calls.iter().map(|(_, call_id)| *call_id).collect();
    transaction.execute(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT \
         hashtextextended(s || chr(31) || c, 0) AS k FROM unnest($1::text[], $2::text[]) AS t(s, c) \
         ORDER BY k) AS keys",
        &[&sources, &call_ids],
    )?;
    let maxima: HashMap<(String, String), i64> = transaction
        .query(
            "SELECT t.s, t.c, coalesce(max(e.sequence), 0) \
             FROM unnest($1::text[], $2::text[]) AS t(s, c) \
             LEFT JOIN events e ON e.source_name = t.s AND e.subject = t.c AND e.call_id = t.c \
             GROUP BY t.s, t.c",
            &[&sources, &call_ids],
        )?
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    for (key, max) in maxima {
        numbering.used((&key.0, &key.1), u64::try_from(max).unwrap_or(0));
    }
    Ok(numbering)
}
