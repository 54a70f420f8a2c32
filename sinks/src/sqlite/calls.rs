//! Keeping `calls` rows up to date, one batch at a time, without reading calls back.
//!
//! A batch's new call events are grouped by call ([`TouchedCalls`]); each touched call's row is
//! then written once. Its [`CallFold`] comes from, in order of preference:
//!
//! 1. the in-memory cache of recent calls ([`CallCache`], an LRU bounded by
//!    `call_cache_calls`), if the row's `revision` is still the one the cache wrote: the
//!    batch's new events are added to it, and the row is updated only if its revision is still
//!    the cached one (another writer, a second normalizer on the same file or an in-place
//!    replay, bumps it; the fold is then rebuilt from the stored events instead);
//! 2. nothing, when the call has no row yet (its first events are in this batch): the fold is
//!    the batch's events;
//! 3. the stored events of the call, when it has a row but is not cached ([`fold_call`](super::calls_fold::fold_call) over
//!    everything stored, this batch's events included).
//!
//! A bulk fill ([`CallCache::for_bulk_fill`]) is the only writer of its file, so it also
//! trusts memory for what case 2 and the call's `sequence` numbering would read: a cached
//! call's greatest number is the cached one, and a call it never stored has none and no row.
//!
//! The result equals [`fold_call`](super::calls_fold::fold_call) over every stored event of the call in all three cases,
//! because a fold does not depend on the order its events were added in. Folds enter the cache
//! only after the batch's transaction committed ([`CallCache::keep`]); a batch that rolls back
//! leaves the cache as it was, minus the folds it took out, which are rebuilt when needed.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;

use lru::LruCache;
use rusqlite::Connection;

use super::calls_fold::{fold_call, CallFold};
use super::error::Result;
use super::writes;
use crate::batch::SinkEvent;
use crate::sequence::Numbering;

/// A batch's newly stored call events, by `(source_name, call_id)`.
pub(crate) type TouchedCalls<'a> = BTreeMap<(&'a str, &'a str), Vec<&'a SinkEvent>>;

/// The cache key: `(source_name, call_id)`.
pub(crate) type CallKey = (String, String);

/// A call's fold as of the row revision it wrote.
#[derive(Debug)]
pub(crate) struct CachedFold {
    fold: CallFold,
    revision: i64,
    /// The greatest `sequence` stored for the call when the fold was kept.
    sequence: u64,
}

/// The calls a bulk fill has stored so far, as hashes of `(source_name, call_id)`: a call
/// whose hash is absent has no stored event and no row, so the fill numbers and inserts it
/// without reading the database. (A hash shared with another call only costs the reads.) Past
/// [`BULK_FILLED_CALLS_MAX`] calls the set is dropped and every call is read.
#[derive(Debug, Default)]
struct FilledCalls {
    hashes: HashSet<u64>,
}

/// The most calls [`FilledCalls`] remembers (16 bytes or so each).
const BULK_FILLED_CALLS_MAX: usize = 16 << 20;

fn call_hash(source: &str, call_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (source, call_id).hash(&mut hasher);
    hasher.finish()
}

/// The folds of recent calls.
#[derive(Debug)]
pub(crate) struct CallCache {
    folds: LruCache<CallKey, CachedFold>,
    /// Set for a bulk fill, the only writer of its file: then the cache and this set are the
    /// whole truth about what is stored, and a call they know is not read back.
    filled: Option<FilledCalls>,
}

impl CallCache {
    /// A cache of at most `capacity` calls.
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        CallCache {
            folds: LruCache::new(capacity),
            filled: None,
        }
    }

    /// A cache for a bulk fill of a new file that no one else writes (see [`FilledCalls`]).
    pub(crate) fn for_bulk_fill(capacity: NonZeroUsize) -> Self {
        CallCache {
            folds: LruCache::new(capacity),
            filled: Some(FilledCalls::default()),
        }
    }

    /// Returns the greatest `sequence` stored for a call's events (0 when none): from memory
    /// in a bulk fill when the call is cached or was never stored, else read from the database.
    pub(crate) fn stored_sequence(
        &self,
        connection: &Connection,
        source: &str,
        call_id: &str,
    ) -> Result<u64> {
        if let Some(filled) = &self.filled {
            let key = (source.to_owned(), call_id.to_owned());
            if let Some(cached) = self.folds.peek(&key) {
                return Ok(cached.sequence);
            }
            if !filled.hashes.contains(&call_hash(source, call_id)) {
                return Ok(0);
            }
        }
        writes::max_sequence(connection, source, call_id)
    }

    /// Writes the row of every touched call inside the caller's transaction; returns the
    /// folds to [`CallCache::keep`] once it commits. `numbering` is the batch's (the greatest
    /// number of each touched call).
    pub(crate) fn write_rows(
        &mut self,
        connection: &Connection,
        touched: &TouchedCalls<'_>,
        numbering: &Numbering,
    ) -> Result<Vec<(CallKey, CachedFold)>> {
        let mut kept = Vec::with_capacity(touched.len());
        for (&(source, call_id), new_events) in touched {
            let key = (source.to_owned(), call_id.to_owned());
            let sequence = numbering.last((source, call_id)).unwrap_or(0);
            let written = match self.folds.pop(&key) {
                Some(cached) => {
                    write_cached(connection, source, call_id, cached, new_events, sequence)?
                }
                None => {
                    let known_new = self
                        .filled
                        .as_ref()
                        .is_some_and(|filled| !filled.hashes.contains(&call_hash(source, call_id)));
                    if known_new {
                        write_new(connection, source, call_id, new_events, sequence)?
                    } else {
                        write_uncached(connection, source, call_id, new_events, sequence)?
                    }
                }
            };
            if let Some(filled) = &mut self.filled {
                if filled.hashes.len() >= BULK_FILLED_CALLS_MAX {
                    self.filled = None;
                } else {
                    filled.hashes.insert(call_hash(source, call_id));
                }
            }
            if let Some(written) = written {
                kept.push((key, written));
            }
        }
        Ok(kept)
    }

    /// Keeps the folds of a committed batch.
    pub(crate) fn keep(&mut self, kept: Vec<(CallKey, CachedFold)>) {
        for (key, fold) in kept {
            self.folds.put(key, fold);
        }
    }
}

fn add_all(fold: &mut CallFold, events: &[&SinkEvent]) {
    for sink_event in events {
        let event = &sink_event.event;
        fold.add(event.event_type, event.time, &event.id, &event.data);
    }
}

/// Case 1: the cached fold plus the batch's events, if the row did not change meanwhile.
fn write_cached(
    connection: &Connection,
    source: &str,
    call_id: &str,
    cached: CachedFold,
    new_events: &[&SinkEvent],
    sequence: u64,
) -> Result<Option<CachedFold>> {
    let mut fold = cached.fold;
    add_all(&mut fold, new_events);
    let Some(row) = fold.row() else {
        return Ok(None);
    };
    match writes::update_call_row(connection, &row, Some(cached.revision))? {
        Some(revision) => Ok(Some(CachedFold {
            fold,
            revision,
            sequence,
        })),
        // Another writer changed the row since: fold everything stored instead.
        None => write_uncached(connection, source, call_id, new_events, sequence),
    }
}

/// Case 2: a call with no row yet, folded from the batch's events.
fn write_new(
    connection: &Connection,
    source: &str,
    call_id: &str,
    new_events: &[&SinkEvent],
    sequence: u64,
) -> Result<Option<CachedFold>> {
    let mut fold = CallFold::new(source, call_id);
    add_all(&mut fold, new_events);
    let Some(row) = fold.row() else {
        return Ok(None);
    };
    writes::insert_call_row(connection, &row)?;
    Ok(Some(CachedFold {
        fold,
        revision: 1,
        sequence,
    }))
}

/// Cases 2 and 3: a new call from the batch's events, or a stored one from its events.
fn write_uncached(
    connection: &Connection,
    source: &str,
    call_id: &str,
    new_events: &[&SinkEvent],
    sequence: u64,
) -> Result<Option<CachedFold>> {
    match writes::call_revision(connection, source, call_id)? {
        None => write_new(connection, source, call_id, new_events, sequence),
        Some(revision) => {
            let events = writes::load_call_events(connection, source, call_id)?;
            let mut fold = CallFold::new(source, call_id);
            for event in &events {
                fold.add(event.event_type, event.time, &event.id, &event.data);
            }
            let Some(row) = fold.row() else {
                return Ok(None);
            };
            let revision =
                writes::update_call_row(connection, &row, Some(revision))?.unwrap_or(revision + 1);
            Ok(Some(CachedFold {
                fold,
                revision,
                sequence,
            }))
        }
    }
}

/// Recomputes one call's row from its stored events, whatever any cache holds (for tools that
/// rewrite events, such as an in-place replay): rewritten with a new revision, inserted, or
/// deleted when no call event is left.
pub(crate) fn rewrite_call(connection: &Connection, source: &str, call_id: &str) -> Result<()> {
    let events = writes::load_call_events(connection, source, call_id)?;
    match fold_call(source, call_id, events) {
        None => writes::delete_call_row(connection, source, call_id),
        Some(row) => match writes::call_revision(connection, source, call_id)? {
            Some(_) => writes::update_call_row(connection, &row, None).map(|_| ()),
            None => writes::insert_call_row(connection, &row),
        },
    }
}
