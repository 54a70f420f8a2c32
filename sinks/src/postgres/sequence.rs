//! The per-call `sequence` in the PostgreSQL sink ([`crate::sequence`] has the rule): the
//! batch's calls are locked before their greatest stored numbers are read, with the same
//! per-call advisory lock the `calls` fold takes (`writes.rs`, step 5; a transaction may take
//! it again), so two normalizers writing one call number its events one after the other.

use std::collections::HashMap;

use postgres::{GenericClient, Transaction};

use super::error::Result;
use crate::sequence::{call_key, Numbering};
use crate::SinkEvent;

/// Takes the per-call advisory lock of each call `(sources[i], call_ids[i])`, in key order so
/// that two transactions locking overlapping calls cannot deadlock. The numbering and the
/// `calls` fold (`writes.rs`) take this one lock, so their keys must agree: both call here.
pub(crate) fn lock_calls(
    transaction: &mut Transaction<'_>,
    sources: &[&str],
    call_ids: &[&str],
) -> Result<()> {
    transaction.execute(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT \
         hashtextextended(s || chr(31) || c, 0) AS k FROM unnest($1::text[], $2::text[]) AS t(s, c) \
         ORDER BY k) AS keys",
        &[&sources, &call_ids],
    )?;
    Ok(())
}

/// Returns the greatest stored `sequence` of each call `(sources[i], call_ids[i])` (0 when
/// none), in one statement.
pub(crate) fn stored_maxima(
    client: &mut impl GenericClient,
    sources: &[&str],
    call_ids: &[&str],
) -> Result<HashMap<(String, String), u64>> {
    Ok(client
        .query(
            "SELECT t.s, t.c, coalesce(max(e.sequence), 0) \
             FROM unnest($1::text[], $2::text[]) AS t(s, c) \
             LEFT JOIN events e ON e.source_name = t.s AND e.subject = t.c AND e.call_id = t.c \
             GROUP BY t.s, t.c",
            &[&sources, &call_ids],
        )?
        .iter()
        .map(|row| {
            let max: i64 = row.get(2);
            ((row.get(0), row.get(1)), u64::try_from(max).unwrap_or(0))
        })
        .collect())
}

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
    lock_calls(transaction, &sources, &call_ids)?;
    for (key, max) in stored_maxima(transaction, &sources, &call_ids)? {
        numbering.used((&key.0, &key.1), max);
    }
    Ok(numbering)
}
