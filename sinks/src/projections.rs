//! The projection sinks a normalizer commits to: SQLite, PostgreSQL, or both.
//!
//! # Guarantee: exactly once in each, with two sinks
//!
//! Each sink commits a batch together with its own consumed offsets, in its own transaction.
//! The two commits are not atomic together, so a crash can fall between them; then one sink
//! holds the batch and the other does not. What keeps both exact:
//!
//! - The consumer resumes from the **smaller** of the two sinks' offsets per partition
//!   ([`ProjectionSinks::stored_offsets`]; a partition one sink has no offset for starts from
//!   the beginning), so nothing a sink lacks is skipped.
//! - A sink skips a batch its stored offsets already cover: [`ProjectionSinks`] remembers the
//!   offsets each sink committed and does not hand it such a batch, and the PostgreSQL sink
//!   also checks inside its transaction. A batch that only partly overlaps what a sink holds
//!   (batch boundaries differ after a restart) is applied whole; its stored part changes
//!   nothing, because events are unique by their deterministic ids, dead letters by
//!   `raw_ref`, and the `calls` and `agents` rows are functions of the set of stored events.
//!
//! A sink that fails a batch fails the whole commit: the normalizer retries the batch, and
//! the sink that took it already skips it then.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::batch::{CommitOutcome, EventKey, SinkBatch, SinkItem};
use crate::calls_fold::{fold_call, CallRow, StoredCallEvent};
use crate::metrics::SinkMetrics;
use crate::postgres::{PostgresSink, PostgresSinkError, PostgresSinkSettings, SINK_REJECTED};
use crate::sqlite::{SqliteSink, SqliteSinkError, SqliteSinkSettings};

/// Which projection sinks run.
#[derive(Debug, Clone, Default)]
pub struct ProjectionSettings {
    /// The SQLite sink, unless `[sink.sqlite] enabled = false`.
    pub sqlite: Option<SqliteSinkSettings>,
    /// The PostgreSQL sink, when `[sink.postgres] url` is set.
    pub postgres: Option<PostgresSinkSettings>,
}

/// Why a projection sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The SQLite sink (its messages start with `sqlite`).
    #[error(transparent)]
    Sqlite(#[from] SqliteSinkError),
    /// The PostgreSQL sink (its messages start with `postgres`).
    #[error(transparent)]
    Postgres(#[from] PostgresSinkError),
    /// Neither sink is configured.
    #[error("no projection sink is configured")]
    NoSink,
}

impl SinkError {
    /// Returns true when retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Sqlite(error) => error.is_retryable(),
            SinkError::Postgres(error) => error.is_retryable(),
            SinkError::NoSink => false,
        }
    }
}

/// The projection sinks of one normalizer loop.
#[derive(Debug)]
pub struct ProjectionSinks {
    sqlite: Option<SqliteSink>,
    postgres: Option<PostgresSink>,
    /// Per consumer, the offsets each sink is known to hold (`[sqlite, postgres]`): read
    /// once, then advanced by every commit. Another process can only move them further,
    /// so this may lag the truth but never leads it.
    known: HashMap<String, [BTreeMap<u32, u64>; 2]>,
}

impl From<SqliteSink> for ProjectionSinks {
    fn from(sqlite: SqliteSink) -> Self {
        ProjectionSinks {
            sqlite: Some(sqlite),
            postgres: None,
            known: HashMap::new(),
        }
    }
}

impl ProjectionSinks {
    /// Opens every configured sink (the PostgreSQL sink connects and migrates).
    pub fn open(settings: &ProjectionSettings) -> Result<ProjectionSinks, SinkError> {
        if settings.sqlite.is_none() && settings.postgres.is_none() {
            return Err(SinkError::NoSink);
        }
        Ok(ProjectionSinks {
            sqlite: settings.sqlite.as_ref().map(SqliteSink::open).transpose()?,
            postgres: settings
                .postgres
                .as_ref()
                .map(PostgresSink::open)
                .transpose()?,
            known: HashMap::new(),
        })
    }

    /// Returns the SQLite sink, if it runs.
    pub fn sqlite(&mut self) -> Option<&mut SqliteSink> {
        self.sqlite.as_mut()
    }

    /// Returns the PostgreSQL sink, if it runs.
    pub fn postgres(&mut self) -> Option<&mut PostgresSink> {
        self.postgres.as_mut()
    }

    /// Creates the dead-letter series of `reasons` at 0 for every sink (PostgreSQL also
    /// gets its own `sink_rejected`).
    pub fn create_dead_letter_series<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        let reasons: Vec<&str> = reasons.into_iter().collect();
        for metrics in self.metrics() {
            metrics.create_dead_letter_series(reasons.iter().copied());
        }
        if let Some(postgres) = &self.postgres {
            postgres
                .metrics()
                .create_dead_letter_series([SINK_REJECTED]);
        }
    }

    fn metrics(&self) -> impl Iterator<Item = &SinkMetrics> {
        self.sqlite
            .iter()
            .map(SqliteSink::metrics)
            .chain(self.postgres.iter().map(PostgresSink::metrics))
    }

    /// Returns where `consumer` resumes: per partition, the smaller of the sinks' stored
    /// next offsets; a partition missing from either sink is left out (its start).
    pub fn stored_offsets(&mut self, consumer: &str) -> Result<Vec<(u32, u64)>, SinkError> {
        let sqlite = match &self.sqlite {
            Some(sink) => Some(sink.stored_offsets(consumer)?),
            None => None,
        };
        let postgres = match &mut self.postgres {
            Some(sink) => Some(sink.stored_offsets(consumer)?),
            None => None,
        };
        let known = self.known.entry(consumer.to_owned()).or_default();
        for (index, offsets) in [&sqlite, &postgres].into_iter().enumerate() {
            for (partition, next) in offsets.iter().flatten() {
                let entry = known[index].entry(*partition).or_insert(*next);
                *entry = (*entry).max(*next);
            }
        }
        Ok(match (sqlite, postgres) {
            (Some(one), None) | (None, Some(one)) => one,
            (Some(sqlite), Some(postgres)) => {
                let postgres: BTreeMap<u32, u64> = postgres.into_iter().collect();
                sqlite
                    .into_iter()
                    .filter_map(|(partition, next)| {
                        Some((partition, next.min(*postgres.get(&partition)?)))
                    })
                    .collect()
            }
            (None, None) => Vec::new(),
        })
    }

    /// Commits `batch` to every sink that does not hold it yet; returns the outcome of the
    /// first sink that wrote it (SQLite's when both did). On error the batch is to be
    /// retried: sinks that took it skip it then.
    pub fn commit_batch(&mut self, batch: &SinkBatch) -> Result<CommitOutcome, SinkError> {
        if !self.known.contains_key(&batch.consumer) {
            self.stored_offsets(&batch.consumer)?;
        }
        let mut first = None;
        if let Some(sqlite) = &mut self.sqlite {
            if !holds(&self.known, 0, batch) {
                let outcome = sqlite.commit_batch(batch)?;
                advance(&mut self.known, 0, batch);
                first.get_or_insert(outcome);
            }
        }
        if let Some(postgres) = &mut self.postgres {
            if !holds(&self.known, 1, batch) {
                let outcome = postgres.commit_batch(batch)?;
                advance(&mut self.known, 1, batch);
                first.get_or_insert(outcome);
            }
        }
        Ok(first.unwrap_or_default())
    }

    /// Returns the `calls` row each call touched by `batch` will have once the batch is
    /// committed: the call's stored events (from PostgreSQL when it runs, else SQLite) and
    /// the batch's, folded. For the compacted calls topic, produced before the commit (so
    /// that a crash after the commit cannot lose a change; a re-read batch produces the same
    /// rows again, with the same versions).
    pub fn preview_calls(&mut self, batch: &SinkBatch) -> Result<Vec<CallRow>, SinkError> {
        let mut fresh: BTreeMap<(&str, &str), Vec<StoredCallEvent>> = BTreeMap::new();
        for item in &batch.items {
            let SinkItem::Push { events, .. } = item else {
                continue;
            };
            for sink_event in events {
                let event = &sink_event.event;
                let Some(call_id) = event.data.call_id.as_deref().filter(|id| !id.is_empty())
                else {
                    continue;
                };
                if event.event_type.is_agent_event() {
                    continue;
                }
                fresh
                    .entry((event.data.source_name.as_str(), call_id))
                    .or_default()
                    .push(StoredCallEvent {
                        id: event.id.clone(),
                        event_type: event.event_type,
                        time: event.time,
                        data: event.data.clone(),
                    });
            }
        }
        let calls: Vec<(&str, &str)> = fresh.keys().copied().collect();
        let mut stored = match (&mut self.postgres, &self.sqlite) {
            (Some(postgres), _) => postgres.call_events(&calls)?,
            (None, Some(sqlite)) => {
                let mut found = HashMap::new();
                for (source, call_id) in &calls {
                    found.insert(
                        ((*source).to_owned(), (*call_id).to_owned()),
                        sqlite.call_events(source, call_id)?,
                    );
                }
                found
            }
            (None, None) => HashMap::new(),
        };
        let mut rows = Vec::with_capacity(calls.len());
        for ((source, call_id), new_events) in fresh {
            let mut events = stored
                .remove(&(source.to_owned(), call_id.to_owned()))
                .unwrap_or_default();
            let known: HashSet<String> = events.iter().map(|event| event.id.clone()).collect();
            let mut added: HashSet<String> = HashSet::new();
            for event in new_events {
                if !known.contains(&event.id) && added.insert(event.id.clone()) {
                    events.push(event);
                }
            }
            rows.extend(fold_call(source, call_id, events));
        }
        Ok(rows)
    }

    /// Makes SQLite's committed batches durable against a power loss (PostgreSQL's commits
    /// are durable when they return).
    pub fn sync_to_disk(&mut self) -> Result<(), SinkError> {
        if let Some(sqlite) = &mut self.sqlite {
            sqlite.sync_to_disk()?;
        }
        Ok(())
    }

    /// Returns which of the events `keys` any sink stores, by id (for the first events of a
    /// batch's pushes: which pushes were stored, and so produced to Kafka, before).
    pub fn stored_events(&mut self, keys: &[EventKey<'_>]) -> Result<HashSet<String>, SinkError> {
        let mut found = HashSet::new();
        if let Some(sqlite) = &self.sqlite {
            for key in keys {
                if sqlite.contains_event(*key)? {
                    found.insert(key.id.to_owned());
                }
            }
        }
        if let Some(postgres) = &mut self.postgres {
            let missing: Vec<&str> = keys
                .iter()
                .map(|key| key.id)
                .filter(|id| !found.contains(*id))
                .collect();
            if !missing.is_empty() {
                found.extend(postgres.stored_events(&missing)?);
            }
        }
        Ok(found)
    }

    /// Exports the dead letters each sink holds (`callhook_sink_dead_letters_held`).
    pub fn refresh_dead_letters_held(&mut self) -> Result<(), SinkError> {
        if let Some(sqlite) = &self.sqlite {
            sqlite.refresh_dead_letters_held()?;
        }
        if let Some(postgres) = &mut self.postgres {
            postgres.refresh_dead_letters_held()?;
        }
        Ok(())
    }
}

/// True when sink `index` is known to hold every offset of `batch`.
fn holds(
    known: &HashMap<String, [BTreeMap<u32, u64>; 2]>,
    index: usize,
    batch: &SinkBatch,
) -> bool {
    let Some(offsets) = known.get(&batch.consumer) else {
        return false;
    };
    !batch.offsets.is_empty()
        && batch.offsets.iter().all(|(partition, next)| {
            offsets[index]
                .get(partition)
                .is_some_and(|held| next <= held)
        })
}

fn advance(known: &mut HashMap<String, [BTreeMap<u32, u64>; 2]>, index: usize, batch: &SinkBatch) {
    let offsets = &mut known.entry(batch.consumer.clone()).or_default()[index];
    for (partition, next) in &batch.offsets {
        let entry = offsets.entry(*partition).or_insert(*next);
        *entry = (*entry).max(*next);
    }
}
