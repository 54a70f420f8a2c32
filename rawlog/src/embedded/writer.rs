//! The writer thread: group commit, retention ([`retention`]) and compaction ([`compaction`]).
//!
//! Guarantee: a waiter is answered `Ok(position)` only after the transaction holding its record
//! committed (WAL fsync'd, see [`super::schema`]); when a commit fails, every waiter of that
//! batch is answered with an error and the next batch re-reads the offsets from the file, so an
//! offset is never handed out twice nor skipped.
//!
//! SQLite calls block, so they run here on one dedicated `std::thread` rather than on the async
//! runtime; one writer also means one write transaction at a time, which is all SQLite allows.

mod compaction;
mod retention;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::config::EmbeddedLogSettings;
use super::error::{EmbeddedLogError, Result};
use super::partition::partition_for_key;
use super::schema::{self, sql_int};
use super::state::SharedState;
use super::telemetry::{BatchCommitted, BatchFailed, CommitsRecovered};
use crate::{Position, RawRecord};

/// Most records one retention pass deletes per partition, so a pass never holds the write lock
/// (and so the appends) for long; a backlog is worked off by passes after the following batches.
pub(crate) const RETENTION_MAX_DELETE_PER_PASS: u64 = 10_000;

/// How often a persisting commit failure is logged.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where an append's outcome goes: the position, or the reason it is not durable.
pub(crate) type AppendReply = oneshot::Sender<std::result::Result<Position, String>>;

/// A message to the writer thread.
pub(crate) enum WriterCommand {
    /// Write this record (boxed: the queue preallocates a slot per `max_pending_appends`).
    Append(Box<PendingAppend>),
    /// Run a retention pass now and report how many records it deleted.
    EnforceRetention(oneshot::Sender<std::result::Result<u64, String>>),
    /// Compact every whole chunk of consumed records now and report how many it compacted.
    Compact(oneshot::Sender<std::result::Result<u64, String>>),
    /// Write what is queued, then stop.
    Close,
}

/// One queued append.
pub(crate) struct PendingAppend {
    pub(crate) key: String,
    pub(crate) record: RawRecord,
    pub(crate) reply: AppendReply,
}

/// Marks the writer as stopped however the thread ends (return or panic).
struct RunningGuard(Arc<SharedState>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.writer_running.store(false, Ordering::Release);
    }
}

pub(crate) struct Writer {
    conn: Connection,
    settings: EmbeddedLogSettings,
    shared: Arc<SharedState>,
    next_offsets: Vec<u64>,
    log_start_offsets: Vec<u64>,
    /// Set after a failed transaction: the in-memory offsets may disagree with the file.
    offsets_stale: bool,
    failing_since: Option<Instant>,
    last_failure_log: Option<Instant>,
    last_retention: Instant,
    retention_backlog: bool,
    last_compaction: Instant,
    /// Set when a compaction pass stopped at its budget with chunks left.
    compaction_backlog: bool,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        settings: EmbeddedLogSettings,
        shared: Arc<SharedState>,
        next_offsets: Vec<u64>,
        log_start_offsets: Vec<u64>,
    ) -> Self {
        Self {
            conn,
            settings,
            shared,
            next_offsets,
            log_start_offsets,
            offsets_stale: false,
            failing_since: None,
            last_failure_log: None,
            last_retention: Instant::now(),
            retention_backlog: false,
            last_compaction: Instant::now(),
            compaction_backlog: false,
        }
    }

    /// Runs until `Close` was received and the queue is empty, or every sender is gone.
    pub(crate) fn run(mut self, commands: Receiver<WriterCommand>) {
        let _running = RunningGuard(Arc::clone(&self.shared));
        let mut closing = false;
        loop {
            let first = if closing {
                match commands.try_recv() {
                    Ok(command) => command,
                    Err(_) => break,
                }
            } else {
                let wait = self.until_retention().min(self.until_compaction());
                match commands.recv_timeout(wait) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => {
                        self.maybe_enforce_retention();
                        self.maybe_compact();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut batch = Vec::new();
            let mut waiters = Waiters::default();
            closing |= sort_command(first, &mut batch, &mut waiters);
            // Group commit: take whatever else is already queued, up to the batch bound.
            while batch.len() < self.settings.max_batch_records.get() {
                match commands.try_recv() {
                    Ok(command) => closing |= sort_command(command, &mut batch, &mut waiters),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write_batch(batch);
            }
            if waiters.retention.is_empty() {
                self.maybe_enforce_retention();
            } else {
                let outcome = self.enforce_retention().map_err(|error| error.to_string());
                for waiter in waiters.retention {
                    let _ = waiter.send(outcome.clone());
                }
            }
            if waiters.compaction.is_empty() {
                self.maybe_compact();
            } else {
                let outcome = self.compact(None).map_err(|error| error.to_string());
                for waiter in waiters.compaction {
                    let _ = waiter.send(outcome.clone());
                }
            }
        }
        self.checkpoint();
    }

    fn until_retention(&self) -> Duration {
        if self.retention_backlog {
            return Duration::ZERO;
        }
        self.settings
            .retention_check_interval
            .saturating_sub(self.last_retention.elapsed())
    }

    fn write_batch(&mut self, batch: Vec<PendingAppend>) {
        let started = Instant::now();
        let records = batch.len();
        let outcome = self
            .refresh_offsets_if_stale()
            .and_then(|()| self.insert_batch(&batch));
        match outcome {
            Ok((positions, next_offsets)) => {
                self.next_offsets = next_offsets;
                self.shared.set_next_offsets(&self.next_offsets);
                // After the offsets moved, so the unconsumed count never dips below the truth.
                self.shared
                    .in_flight
                    .fetch_sub(records as u64, Ordering::AcqRel);
                self.shared.record_batch(records, true);
                self.mark_healthy();
                BatchCommitted {
                    records,
                    elapsed: started.elapsed(),
                    records_held: self.shared.records_held(),
                }
                .emit();
                self.shared.notifier().bump();
                for (append, position) in batch.into_iter().zip(positions) {
                    let _ = append.reply.send(Ok(position));
                }
            }
            Err(error) => {
                self.offsets_stale = true;
                self.shared
                    .in_flight
                    .fetch_sub(records as u64, Ordering::AcqRel);
                self.shared.record_batch(records, false);
                let reason = format!("commit failed: {error}");
                self.mark_failing(records, &error, &reason);
                for append in batch {
                    let _ = append.reply.send(Err(reason.clone()));
                }
            }
        }
    }

    /// Writes the batch in one transaction; returns each record's position and the new next
    /// offsets. Nothing in `self` changes unless the commit succeeded.
    fn insert_batch(&mut self, batch: &[PendingAppend]) -> Result<(Vec<Position>, Vec<u64>)> {
        let partitions = self.shared.partitions;
        let mut next_offsets = self.next_offsets.clone();
        let mut positions = Vec::with_capacity(batch.len());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log_records (partition_id, log_offset, record_key, source, received_at_ms, method, \
                 content_type, query, remote_addr, request_id, headers_json, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for append in batch {
                let partition = partition_for_key(&append.key, partitions);
                let offset = next_offsets[partition as usize];
                next_offsets[partition as usize] = offset + 1;
                let record = &append.record;
                let headers_json = serde_json::to_string(&record.headers)
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
                insert.execute(params![
                    i64::from(partition),
                    sql_int(offset),
                    append.key,
                    record.source,
                    record.received_at.timestamp_millis(),
                    record.method,
                    record.content_type,
                    record.query,
                    record.remote_addr,
                    record.request_id,
                    headers_json,
                    record.body.as_ref(),
                ])?;
                positions.push(Position { partition, offset });
            }
            let mut update = tx.prepare_cached(
                "UPDATE log_partitions SET next_offset = ?1 WHERE partition_id = ?2",
            )?;
            for (partition, (before, after)) in
                self.next_offsets.iter().zip(&next_offsets).enumerate()
            {
                if before != after {
                    update.execute((sql_int(*after), sql_int(partition as u64)))?;
                }
            }
        }
        tx.commit()?;
        Ok((positions, next_offsets))
    }

    fn refresh_offsets_if_stale(&mut self) -> Result<()> {
        if !self.offsets_stale {
            return Ok(());
        }
        let path = self.settings.path.clone();
        for partition in 0..self.shared.partitions {
            let (next_offset, log_start_offset) =
                schema::verify_partition(&self.conn, partition, &path)?;
            self.next_offsets[partition as usize] = next_offset;
            self.log_start_offsets[partition as usize] = log_start_offset;
            self.shared
                .set_log_start_offset(partition, log_start_offset);
        }
        self.shared.set_next_offsets(&self.next_offsets);
        self.offsets_stale = false;
        Ok(())
    }

    fn mark_healthy(&mut self) {
        if let Some(since) = self.failing_since.take() {
            self.shared.set_health(None);
            self.last_failure_log = None;
            CommitsRecovered {
                failed_for: since.elapsed(),
            }
            .emit();
        }
    }

    fn mark_failing(&mut self, records: usize, error: &EmbeddedLogError, reason: &str) {
        self.failing_since.get_or_insert_with(Instant::now);
        self.shared.set_health(Some(format!("raw log {reason}")));
        let log = self
            .last_failure_log
            .is_none_or(|logged| logged.elapsed() >= FAILURE_LOG_INTERVAL);
        if log {
            self.last_failure_log = Some(Instant::now());
        }
        BatchFailed {
            records,
            error,
            log,
        }
        .emit();
    }

    /// Folds the WAL back into the main file on a clean stop, so the next open starts small.
    fn checkpoint(&self) {
        let outcome = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        match outcome {
            Ok(0) => tracing::info!(path = %self.settings.path.display(), "raw log closed"),
            Ok(_) => {
                tracing::info!(path = %self.settings.path.display(), "raw log closed, wal checkpoint incomplete (a reader is open)")
            }
            Err(error) => tracing::warn!(%error, "raw log wal checkpoint failed on close"),
        }
    }
}

/// Who waits for an on-demand retention or compaction pass.
#[derive(Default)]
struct Waiters {
    retention: Vec<oneshot::Sender<std::result::Result<u64, String>>>,
    compaction: Vec<oneshot::Sender<std::result::Result<u64, String>>>,
}

/// Files a command into the batch or the waiters; returns whether it was `Close`.
fn sort_command(
    command: WriterCommand,
    batch: &mut Vec<PendingAppend>,
    waiters: &mut Waiters,
) -> bool {
    match command {
        WriterCommand::Append(append) => {
            batch.push(*append);
            false
        }
        WriterCommand::EnforceRetention(waiter) => {
            waiters.retention.push(waiter);
            false
        }
        WriterCommand::Compact(waiter) => {
            waiters.compaction.push(waiter);
            false
        }
        WriterCommand::Close => true,
    }
}
