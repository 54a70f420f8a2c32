//! [`SqliteSink`]: commits [`SinkBatch`]es to the database, exactly once (see the module docs
//! of [`super`] for the guarantee and how it is kept).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use callhook_schemas::EventType;
use chrono::{DateTime, Utc};
use rusqlite::{params, CachedStatement, Connection, TransactionBehavior};

use super::agents::{agent_update, NewestStatuses};
use super::calls::{CallCache, TouchedCalls};
use super::checkpoint::Checkpointer;
use super::codec::{encode_time, from_sql_integer};
use super::config::SqliteSinkSettings;

/// Calls whose fold a bulk fill keeps in memory (a fold is a few KB): a rebuild reads the log
/// in order, so a call not cached is one whose events lie further apart than this many calls,
/// and folding it again means reading its stored events back.
const BULK_CALL_CACHE_CALLS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(20_000).unwrap();
use super::dead_letters::{DeadLetterFilter, RedriveOutcome, StoredDeadLetter};
use super::error::{Result, SqliteSinkError};
use super::schema;
use super::writes::{self, DeadLetterRow};
use crate::batch::{CommitOutcome, EventKey, SinkBatch, SinkEvent, SinkItem};
use crate::metrics::{BatchCommitted, SinkMetrics};
use crate::sequence::Numbering;

/// The `sink` label of this sink's metrics.
pub const METRIC_LABEL: &str = "sqlite";

/// The SQLite sink. Owns one connection; every method blocks (a commit waits for fsync), so it
/// runs on a dedicated thread or under `spawn_blocking`, never directly on the async runtime.
#[derive(Debug)]
pub struct SqliteSink {
    connection: Connection,
    path: PathBuf,
    metrics: SinkMetrics,
    calls: CallCache,
    /// A bulk fill ([`SqliteSink::open_bulk`]): one transaction from open to finish.
    bulk: bool,
    /// The `CREATE INDEX` statements of the indexes a bulk fill builds at its end.
    deferred_indexes: Vec<String>,
    /// The thread that checkpoints the WAL (not in a bulk fill, which has none).
    checkpointer: Option<Checkpointer>,
}

impl SqliteSink {
    /// Opens (creating it and its directory if needed) the database, sets WAL and
    /// `synchronous=NORMAL`, and migrates the schema to the latest version.
    pub fn open(settings: &SqliteSinkSettings) -> Result<SqliteSink> {
        let path = settings.path.clone();
        if let Some(directory) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(directory).map_err(|source| SqliteSinkError::CreateDir {
                path: directory.to_owned(),
                source,
            })?;
        }
        let open_error = |source| SqliteSinkError::Open {
            path: path.clone(),
            source,
        };
        let mut connection = Connection::open(&path).map_err(open_error)?;
        schema::configure(&connection, settings.busy_timeout).map_err(open_error)?;
        connection.set_prepared_statement_cache_capacity(32);
        let found = schema::migrate(&mut connection)?;
        let checkpointer = Checkpointer::start(&path, &mut connection, settings.busy_timeout)?;
        tracing::info!(
            path = %path.display(),
            schema_version_found = found,
            schema_version = schema::SCHEMA_VERSION,
            "sqlite sink opened"
        );
        Ok(SqliteSink {
            connection,
            path,
            metrics: SinkMetrics::for_sink(METRIC_LABEL),
            calls: CallCache::new(settings.call_cache_calls),
            bulk: false,
            deferred_indexes: Vec::new(),
            checkpointer: Some(checkpointer),
        })
    }

    /// Opens a new database at `path` to be filled in one go (a rebuild from the raw log):
    /// no journal, no syncs, a page cache of up to 1 GiB, an exclusive lock and one transaction from
    /// here to [`SqliteSink::finish_bulk`], because a rebuild that dies is started again from
    /// scratch, never resumed. (Committing each batch would write every index page a batch
    /// touched once per batch: with ids that are hashes, that is nearly all of them, so a
    /// million-push rebuild wrote its indexes some 200 times over.) `commit_batch` then only
    /// writes; a failed batch leaves the fill unusable. The secondary indexes that the writes
    /// themselves do not read are dropped here and built at the end, each by one sort rather
    /// than by an insert per row (`events_key` stays: it is the dedupe, and a call's fold is
    /// read through it). `finish_bulk` builds them, commits
    /// and makes the file an ordinary database (WAL) that a normalizer can take over.
    pub fn open_bulk(path: &Path) -> Result<SqliteSink> {
        Self::open_bulk_with_call_cache(path, BULK_CALL_CACHE_CALLS)
    }

    /// [`SqliteSink::open_bulk`] keeping the folds of at most `call_cache_calls` calls (a
    /// call that falls out is read back from the file when it comes up again).
    pub fn open_bulk_with_call_cache(
        path: &Path,
        call_cache_calls: std::num::NonZeroUsize,
    ) -> Result<SqliteSink> {
        let open_error = |source| SqliteSinkError::Open {
            path: path.to_owned(),
            source,
        };
        let mut connection = Connection::open(path).map_err(open_error)?;
        schema::configure_bulk(&connection).map_err(open_error)?;
        connection.set_prepared_statement_cache_capacity(32);
        schema::migrate(&mut connection)?;
        connection.execute_batch("BEGIN")?;
        let deferred_indexes = schema::drop_deferrable_indexes(&connection)?;
        Ok(SqliteSink {
            connection,
            path: path.to_owned(),
            metrics: SinkMetrics::for_sink(METRIC_LABEL),
            calls: CallCache::for_bulk_fill(call_cache_calls),
            bulk: true,
            deferred_indexes,
            checkpointer: None,
        })
    }

    /// Ends a bulk fill: builds the deferred indexes, commits, switches the file to WAL, syncs
    /// it and closes it.
    pub fn finish_bulk(self) -> Result<()> {
        if self.bulk {
            for create in &self.deferred_indexes {
                self.connection.execute_batch(create)?;
            }
            self.connection.execute_batch("COMMIT")?;
        }
        schema::finish_bulk(&self.connection)?;
        let path = self.path.clone();
        drop(self);
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(|source| SqliteSinkError::Sync { path, source })
    }

    /// Returns the connection (for the replay's diff and apply, which run their own SQL).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Returns the handles of this sink's `callhook_sink_*` series.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits a whole batch in one durable transaction and returns what it did.
    ///
    /// For each push, in order: its events are inserted and the agents they carry a status for
    /// are updated. Event ids are deterministic (source, dedupe key, ordinal), so a push whose
    /// first event is stored already is a re-send: it is counted as a duplicate and skipped
    /// (a later event already stored is skipped and counted on its own). Dead letters are inserted unless their `raw_ref` is stored. Then the
    /// `calls` rows of every call that got a new event are recomputed, the consumer's offsets
    /// are moved forward, and the transaction commits (fsync'd). On error nothing of the batch
    /// is written, offsets included, and the same batch may be retried.
    pub fn commit_batch(&mut self, batch: &SinkBatch) -> Result<CommitOutcome> {
        let started = Instant::now();
        let tally = if self.bulk {
            let (tally, kept) = write_batch(&self.connection, &mut self.calls, batch)?;
            self.calls.keep(kept);
            tally
        } else {
            if let Some(checkpointer) = &self.checkpointer {
                checkpointer.pause_point();
            }
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (tally, kept) = write_batch(&transaction, &mut self.calls, batch)?;
            transaction.commit()?;
            self.calls.keep(kept);
            tally
        };
        let committed = BatchCommitted {
            outcome: tally.outcome,
            elapsed: started.elapsed(),
            events_by_type: tally.events_by_type,
            dead_letters_by_reason: tally.dead_letters_by_reason,
        };
        committed.emit(&self.metrics);
        Ok(committed.outcome)
    }

    /// Makes every committed batch durable against a power loss (commits are durable against
    /// a crash of the process at once; see `schema::configure`). Call it before anything
    /// upstream is released because of those commits (the raw log's retention offset).
    ///
    /// It commits one small write with `synchronous=FULL`, which fsyncs the WAL and with it
    /// every frame before. (Not an fsync through a file handle of our own: closing any other
    /// descriptor of the database file would drop SQLite's POSIX locks for the whole process,
    /// and another process could then write over it.)
    pub fn sync_to_disk(&mut self) -> Result<()> {
        self.connection.pragma_update(None, "synchronous", "FULL")?;
        let written = self.connection.execute(
            "INSERT INTO sink_meta (name, value) VALUES ('synced_at', ?1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [encode_time(&chrono::Utc::now())],
        );
        let restored = self.connection.pragma_update(None, "synchronous", "NORMAL");
        written?;
        restored?;
        Ok(())
    }

    /// Redrives dead letters: each `(raw_ref, item)` is a dead letter's record mapped again by
    /// the current mapping. A push stores its events (the dedupe as always) and resolves the
    /// dead letter; a dead letter keeps it open with the reason it gets now. One transaction,
    /// so a dead letter is never resolved without its events (see `dead_letters.rs`).
    pub fn redrive(&mut self, redriven: &[(String, SinkItem)]) -> Result<RedriveOutcome> {
        let mut outcome = RedriveOutcome::default();
        let now = encode_time(&chrono::Utc::now());
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut tally = BatchTally::default();
        let mut writer = ItemWriter::new(&transaction)?;
        for (raw_ref, item) in redriven {
            match item {
                SinkItem::Push { .. } => {
                    let before = tally.outcome.events_inserted;
                    write_item(&mut writer, &self.calls, &mut tally, item)?;
                    outcome.events_inserted += tally.outcome.events_inserted - before;
                    outcome.resolved += transaction.execute(
                        "UPDATE dead_letters SET resolved_at = ?1, resolution = 'redrive' \
                         WHERE raw_ref = ?2 AND resolved_at IS NULL",
                        [&now, raw_ref],
                    )? as u64;
                }
                SinkItem::DeadLetter { reason, detail, .. } => {
                    outcome.still_dead += 1;
                    outcome.reason_changed += transaction.execute(
                        "UPDATE dead_letters SET reason = ?1, detail = ?2 \
                         WHERE raw_ref = ?3 AND resolved_at IS NULL AND reason != ?1",
                        [reason, detail, raw_ref],
                    )? as u64;
                }
            }
        }
        drop(writer);
        write_agents(&transaction, &mut tally)?;
        let kept = self
            .calls
            .write_rows(&transaction, &tally.touched_calls, &tally.numbering)?;
        transaction.commit()?;
        self.calls.keep(kept);
        Ok(outcome)
    }

    /// Returns the dead letters `filter` selects, newest first.
    pub fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<StoredDeadLetter>> {
        super::dead_letters::list(&self.connection, filter)
    }

    /// Returns the dead letters by state (`open`, `resolved`) and reason.
    pub fn dead_letter_counts(&self) -> Result<Vec<(&'static str, String, u64)>> {
        super::dead_letters::counts_by_state(&self.connection)
    }

    /// Exports the dead letters held by state and reason (`callhook_sink_dead_letters_held`).
    pub fn refresh_dead_letters_held(&self) -> Result<()> {
        let counts = self.dead_letter_counts()?;
        self.metrics.set_dead_letters_held(&counts);
        Ok(())
    }

    /// Returns `(partition, next_offset)` for every partition `consumer` has committed, sorted
    /// by partition: where the consumer resumes.
    pub fn stored_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = ?1 ORDER BY partition",
        )?;
        let mut rows = statement.query(params![consumer])?;
        let mut offsets = Vec::new();
        while let Some(row) = rows.next()? {
            let partition = from_sql_integer("consumer_offsets", row.get(0)?)?;
            let next_offset = from_sql_integer("consumer_offsets", row.get(1)?)?;
            offsets.push((partition, next_offset));
        }
        Ok(offsets)
    }

    /// Returns every stored event of one call (what its `calls` row is folded from).
    pub fn call_events(
        &self,
        source: &str,
        call_id: &str,
    ) -> Result<Vec<crate::calls_fold::StoredCallEvent>> {
        writes::load_call_events(&self.connection, source, call_id)
    }

    /// Returns the `sequence` of each of the events `keys` that is stored, by id (`None`
    /// inside: stored without one).
    pub fn stored_sequences(
        &self,
        keys: &[EventKey<'_>],
    ) -> Result<std::collections::HashMap<String, Option<u64>>> {
        let mut found = std::collections::HashMap::new();
        for key in keys {
            if let Some(sequence) = writes::stored_sequence(&self.connection, *key)? {
                found.insert(key.id.to_owned(), sequence);
            }
        }
        Ok(found)
    }

    /// Returns the greatest `sequence` stored for a call's events (0 when none).
    pub fn max_sequence(&self, source: &str, call_id: &str) -> Result<u64> {
        writes::max_sequence(&self.connection, source, call_id)
    }

    /// Returns whether the event `key` is stored (the first event of a push: whether the push
    /// is).
    pub fn contains_event(&self, key: EventKey<'_>) -> Result<bool> {
        Ok(writes::stored_sequence(&self.connection, key)?.is_some())
    }
}

/// What a batch did so far, borrowed from the batch.
#[derive(Default)]
struct BatchTally<'a> {
    outcome: CommitOutcome,
    events_by_type: [u64; EventType::ALL.len()],
    dead_letters_by_reason: BTreeMap<&'a str, u64>,
    /// The new call events of the batch, by `(source_name, call_id)`.
    touched_calls: TouchedCalls<'a>,
    /// The per-call `sequence` numbers handed out so far ([`crate::sequence`]).
    numbering: Numbering,
    /// The newest status of each agent among the batch's new events: [`write_agents`] stores
    /// each once, guarded as every upsert is.
    agents: NewestStatuses<'a>,
}

/// Folds kept for the call cache once their batch is committed.
type KeptFolds = Vec<(super::calls::CallKey, super::calls::CachedFold)>;

/// Writes a whole batch on `connection` (inside the caller's transaction): its items, the
/// `calls` rows they touch and the consumer's offsets. Returns the tally and the folds to
/// keep once the batch is committed.
fn write_batch<'a>(
    connection: &Connection,
    calls: &mut CallCache,
    batch: &'a SinkBatch,
) -> Result<(BatchTally<'a>, KeptFolds)> {
    let mut tally = BatchTally::default();
    let mut writer = ItemWriter::new(connection)?;
    for item in &batch.items {
        write_item(&mut writer, calls, &mut tally, item)?;
    }
    drop(writer);
    crate::failpoints::crash_at("sink::mid_transaction");
    write_agents(connection, &mut tally)?;
    let kept = calls.write_rows(connection, &tally.touched_calls, &tally.numbering)?;
    tally.outcome.calls_touched = tally.touched_calls.len() as u64;
    writes::store_offsets(connection, &batch.consumer, &batch.offsets)?;
    Ok((tally, kept))
}

/// Stores the newest status of each agent the batch's events carry one for (see
/// [`NewestStatuses`]).
fn write_agents(connection: &Connection, tally: &mut BatchTally<'_>) -> Result<()> {
    for update in std::mem::take(&mut tally.agents).updates() {
        if writes::upsert_agent(connection, update)? {
            tally.outcome.agents_updated += 1;
        }
    }
    Ok(())
}

/// The connection of a batch's transaction, with the statement it runs for every event
/// prepared once per batch: `prepare_cached` hashes the SQL text twice and copies it at each
/// use, which was 4 % of the writer's profile when every event asked for it.
struct ItemWriter<'c> {
    connection: &'c Connection,
    insert_event: CachedStatement<'c>,
}

impl<'c> ItemWriter<'c> {
    fn new(connection: &'c Connection) -> Result<Self> {
        Ok(ItemWriter {
            connection,
            insert_event: connection.prepare_cached(writes::INSERT_EVENT_SQL)?,
        })
    }
}

/// Writes one item of a batch.
fn write_item<'a>(
    writer: &mut ItemWriter<'_>,
    calls: &CallCache,
    tally: &mut BatchTally<'a>,
    item: &'a SinkItem,
) -> Result<()> {
    match item {
        SinkItem::Push {
            source,
            received_at,
            events,
            ..
        } => write_push(writer, calls, tally, source, received_at, events),
        SinkItem::DeadLetter {
            raw_ref,
            source,
            reason,
            detail,
            received_at,
        } => {
            let row = DeadLetterRow {
                raw_ref,
                source,
                reason,
                detail,
                received_at,
            };
            if writes::insert_dead_letter(writer.connection, &row)? {
                tally.outcome.dead_letters_written += 1;
                *tally.dead_letters_by_reason.entry(reason).or_default() += 1;
            } else {
                tally.outcome.dead_letters_already_stored += 1;
            }
            Ok(())
        }
    }
}

/// Writes one push (unless it is a duplicate): its events and the agent statuses they carry.
fn write_push<'a>(
    writer: &mut ItemWriter<'_>,
    calls: &CallCache,
    tally: &mut BatchTally<'a>,
    source: &str,
    received_at: &DateTime<Utc>,
    events: &'a [SinkEvent],
) -> Result<()> {
    // A push's events have deterministic ids (its source, dedupe key and ordinal): when the
    // first one is stored already, the push is a re-send and none of its events is new.
    for (ordinal, sink_event) in events.iter().enumerate() {
        let event = &sink_event.event;
        debug_assert_eq!(
            event.data.source_name, source,
            "event `{}` is from another source",
            event.id
        );
        let sequence = tally.numbering.number_for(event, || {
            let call_id = event.data.call_id.as_deref().unwrap_or_default();
            calls.stored_sequence(writer.connection, &event.data.source_name, call_id)
        })?;
        if !writes::insert_event(&mut writer.insert_event, sink_event, received_at, sequence)? {
            if ordinal == 0 {
                tally.outcome.duplicates_skipped += 1;
                return Ok(());
            }
            tally.outcome.events_already_stored += 1;
            continue;
        }
        tally.numbering.stored(event, sequence);
        tally.outcome.events_inserted += 1;
        tally.events_by_type[event.event_type as usize] += 1;
        if let Some(update) = agent_update(event) {
            tally.agents.keep(update);
        }
        let call_id = event
            .data
            .call_id
            .as_deref()
            .filter(|call_id| !call_id.is_empty());
        if let (Some(call_id), false) = (call_id, event.event_type.is_agent_event()) {
            tally
                .touched_calls
                .entry((&event.data.source_name, call_id))
                .or_default()
                .push(sink_event);
        }
    }
    Ok(())
}
