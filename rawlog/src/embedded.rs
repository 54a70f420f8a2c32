//! The embedded raw log: one SQLite file with Kafka-topic semantics.
//!
//! # Durability guarantee
//!
//! [`EmbeddedLog::append`](crate::LogAppender::append) resolves `Ok(position)` only after the
//! record is committed to the SQLite file in WAL mode with `synchronous=FULL`, which means the
//! WAL was fsync'd: an acknowledged record survives a process crash and a power loss (on a disk
//! that honours fsync). How it is kept:
//!
//! - **Group commit.** Appends go through a bounded queue to one writer thread. The writer
//!   blocks for the first append, takes whatever else is queued (up to `max_batch_records`),
//!   writes them all in one transaction and commits once (one fsync), then answers every waiter.
//!   Throughput grows with load while each append still waits for its own fsync.
//! - **Nothing acknowledged that is not durable.** If the commit fails, every waiter of that
//!   batch gets `Unavailable` (503, the pusher retries), [`LogAppender::check_writable`] reports
//!   the failure until a later commit succeeds, and the writer re-reads its offsets from the file.
//! - **Refuse, never drop.** A full queue (`max_pending_appends`) or too many unconsumed records
//!   (`max_unconsumed_records`) fail the append with `Overloaded` (503) at once.
//! - **Offsets.** Per partition, offsets start at 0 and are gapless; the next offset is stored
//!   in its own table, so deleting records never makes offsets restart. A record's partition is
//!   `fnv1a64(key) % partitions` ([`partition`]), stable across processes and builds.
//! - **Checks on open.** Before SQLite touches the file, its WAL is scanned ([`check::wal`]):
//!   committed frames that SQLite would silently drop behind a damaged frame fail
//!   [`EmbeddedLog::open`] (nothing is changed; [`check`] reports and repairs), and a torn
//!   tail of a transaction that never committed is logged. Then `PRAGMA quick_check` (or
//!   `integrity_check`), file identity, schema version and partition count, and the
//!   next-offset bookkeeping against the stored rows (raised past the highest row if behind);
//!   a corrupt file fails [`EmbeddedLog::open`]. [`EmbeddedLog::open_after`] also raises the
//!   next offsets to what a consumer has durably consumed, so a log that lost its tail never
//!   hands those offsets out again (the consumer would skip the new records).
//!
//! An append is queued when `append` is called: dropping the returned future does not cancel
//! the write, it only drops the answer (at-least-once, like a lost HTTP response).
//!
//! # Retention
//!
//! Consumer groups commit the next offset they will read ([`LogReader::commit`]). A record is
//! deleted only when **every** group has committed past it **and** it is older than
//! `retention_days` (by `received_at`; `0` days: never by age) or beyond the newest `retention_max_records` of its
//! partition. Unconsumed records are never deleted because of age; with no consumer group,
//! nothing is consumed and nothing is deleted. What bounds the disk when a consumer stalls is
//! `max_unconsumed_records`: past it, appends are refused. Retention deletes a prefix of each
//! partition, so the stored offsets stay contiguous from the log start offset.
//!
//! # Compaction
//!
//! Consumed records (below every group's committed offset, as for retention) are moved by the
//! writer thread, per partition in offset order and `compact_chunk_records` at a time, into
//! zstd-compressed segments (`log_segments`), each in one transaction. Readers read segments
//! and records in one read transaction and cannot tell them apart; a segment that does not
//! decode reads as one undecodable record per offset, as a damaged row does. Retention deletes
//! whole segments whose newest record is old enough. See `segment.rs` and
//! `writer/compaction.rs`.
//!
//! Modules: [`config`] (the `[log.embedded]` section), [`partition`] (key hashing), [`check`]
//! (the fsck behind `callhook log check`: WAL scan, integrity, bookkeeping), and the
//! private `schema` (file and checks), `writer` (group commit, retention, compaction),
//! `segment` (the compressed form of consumed records), `reader`
//! ([`LogReader`]), `state` (what the append path knows without SQLite), `telemetry`.

pub mod check;
pub mod config;
mod error;
pub mod partition;
mod reader;
mod schema;
mod segment;
mod snapshot;
mod state;
mod telemetry;
mod writer;

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

pub use config::{ConfigError, EmbeddedLogConfig, EmbeddedLogSettings, IntegrityCheck};
pub use error::{EmbeddedLogError, Result};
pub use reader::{LogReader, ReadRecord, UndecodableRecord};
pub use snapshot::LogSnapshot;
pub use state::LogStats;

use crate::{AppendError, BoxFuture, LogAppender, Position, RawRecord};
use state::{lock, SharedState};
use telemetry::{AppendAcknowledged, AppendRefused, METRICS};
use writer::{PendingAppend, Writer, WriterCommand};

/// The embedded raw log. Share it as `Arc<EmbeddedLog>` (or `Arc<dyn LogAppender>`); closing it
/// or dropping the last handle writes what is queued and stops the writer thread (both block
/// until the writer is done, so do it from a blocking context at shutdown).
pub struct EmbeddedLog {
    commands: SyncSender<WriterCommand>,
    shared: Arc<SharedState>,
    settings: EmbeddedLogSettings,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("path", &self.settings.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log file, checks it, and starts the writer thread. Blocks on file
    /// I/O (the integrity check reads the whole file): call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(settings: EmbeddedLogSettings) -> Result<Self> {
        Self::open_after(settings, &BTreeMap::new())
    }

    /// Opens the log like [`EmbeddedLog::open`], knowing that a consumer has durably consumed
    /// each partition up to `consumed` (the sink's stored offsets): where the log ends before
    /// that, it lost acknowledged records; the loss is logged as ERROR with the offsets, and the
    /// next offset is raised past them so they are never handed out again (the consumer would
    /// skip every new record that got one).
    pub fn open_after(
        settings: EmbeddedLogSettings,
        consumed: &BTreeMap<u32, u64>,
    ) -> Result<Self> {
        let path = settings.path.clone();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| EmbeddedLogError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        let partitions = settings.partitions.get();
        // Before SQLite opens the file: its recovery would drop a damaged WAL tail silently.
        check_wal_before_open(&path)?;
        let mut conn = schema::open_connection(&path, settings.busy_timeout)?;
        schema::check_integrity(&conn, settings.integrity_check, &path)?;
        schema::prepare_schema(&mut conn, partitions, &path)?;
        let lost = check::raise_to_consumed(&mut conn, consumed)?;
        if !lost.is_empty() {
            let ranges: Vec<String> = lost.iter().map(ToString::to_string).collect();
            let records: u64 = lost.iter().map(check::OffsetRange::len).sum();
            tracing::error!(path = %path.display(), records, offsets = %ranges.join(", "), "raw log lost acknowledged records that were already consumed (their events are in the sink); next offsets raised so they are not handed out again");
        }
        let bookkeeping = schema::load_bookkeeping(&mut conn, partitions, &path)?;
        let next_offsets = bookkeeping.next_offsets.clone();
        let log_start_offsets = bookkeeping.log_start_offsets.clone();
        let shared = Arc::new(SharedState::new(partitions, bookkeeping));
        METRICS
            .records
            .set(i64::try_from(shared.records_held()).unwrap_or(i64::MAX));
        let (commands, receiver) = mpsc::sync_channel(settings.max_pending_appends.get());
        let writer = Writer::new(
            conn,
            settings.clone(),
            Arc::clone(&shared),
            next_offsets,
            log_start_offsets,
        );
        // A std thread, not a tokio task: every SQLite call blocks (fsync included), and the
        // async runtime must not block. One thread is also SQLite's one writer at a time.
        let handle = thread::Builder::new()
            .name("callhook-rawlog-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(EmbeddedLogError::SpawnWriter)?;
        Ok(Self {
            commands,
            shared,
            settings,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Returns the settings the log was opened with.
    pub fn settings(&self) -> &EmbeddedLogSettings {
        &self.settings
    }

    /// Returns the partition count.
    pub fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    /// Opens a reader on its own connection. Blocks briefly on SQLite.
    pub fn reader(&self) -> Result<LogReader> {
        LogReader::open(
            &self.settings.path,
            self.settings.busy_timeout,
            Arc::clone(&self.shared),
        )
    }

    /// Returns a receiver of the append generation, bumped after every group commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.notifier().subscribe()
    }

    /// Returns the current append generation.
    pub fn append_generation(&self) -> u64 {
        self.shared.notifier().generation()
    }

    /// Blocks until a commit after generation `seen_generation` or until `timeout`; returns
    /// the generation then. For consumer threads, never for async tasks.
    pub fn wait_for_append(&self, seen_generation: u64, timeout: Duration) -> u64 {
        self.shared
            .notifier()
            .wait_for_change(seen_generation, timeout)
    }

    /// Returns this log's group-commit counters.
    pub fn stats(&self) -> LogStats {
        self.shared.stats()
    }

    /// Returns the records held past the lowest committed offsets (what
    /// `max_unconsumed_records` bounds).
    pub fn unconsumed_records(&self) -> u64 {
        self.shared.unconsumed_records()
    }

    /// Runs a retention pass on the writer thread now; returns how many records it deleted.
    pub async fn enforce_retention(&self) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        match self
            .commands
            .try_send(WriterCommand::EnforceRetention(reply))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EmbeddedLogError::WriterBusy),
            Err(TrySendError::Disconnected(_)) => return Err(EmbeddedLogError::WriterStopped),
        }
        match answer.await {
            Ok(Ok(deleted)) => Ok(deleted),
            Ok(Err(reason)) => Err(EmbeddedLogError::RetentionFailed(reason)),
            Err(_) => Err(EmbeddedLogError::WriterStopped),
        }
    }

    /// Compacts every whole chunk of consumed records on the writer thread now (the periodic
    /// pass does it a budget at a time); returns how many records it compacted.
    pub async fn compact(&self) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        match self.commands.try_send(WriterCommand::Compact(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EmbeddedLogError::WriterBusy),
            Err(TrySendError::Disconnected(_)) => return Err(EmbeddedLogError::WriterStopped),
        }
        match answer.await {
            Ok(Ok(compacted)) => Ok(compacted),
            Ok(Err(reason)) => Err(EmbeddedLogError::CompactionFailed(reason)),
            Err(_) => Err(EmbeddedLogError::WriterStopped),
        }
    }

    /// Refuses new appends, lets the writer commit everything already queued (answering its
    /// waiters), checkpoints the WAL and joins the thread. Blocks: call it from a blocking
    /// context. Closing twice is a no-op.
    pub fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        let Some(handle) = lock(&self.writer).take() else {
            return Ok(());
        };
        // Blocks only while the queue is full, and the writer is draining it. An error means
        // the writer is already gone, which the join reports.
        let _ = self.commands.send(WriterCommand::Close);
        handle.join().map_err(|_| EmbeddedLogError::WriterStopped)
    }

    /// Queues one append; returns where its answer will arrive.
    fn enqueue(
        &self,
        key: String,
        record: RawRecord,
    ) -> std::result::Result<oneshot::Receiver<std::result::Result<Position, String>>, AppendError>
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(AppendError::Unavailable("raw log is closed".to_owned()));
        }
        // Reserve a slot first so concurrent appends cannot all pass the bound together.
        let in_flight = self.shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let release = || self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.shared.unconsumed_records() + in_flight > self.settings.max_unconsumed_records.get()
        {
            release();
            return Err(AppendError::Overloaded("unconsumed records"));
        }
        let (reply, answer) = oneshot::channel();
        match self
            .commands
            .try_send(WriterCommand::Append(Box::new(PendingAppend {
                key,
                record,
                reply,
            }))) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => {
                release();
                Err(AppendError::Overloaded("pending appends"))
            }
            Err(TrySendError::Disconnected(_)) => {
                release();
                Err(AppendError::Unavailable(
                    "raw log writer stopped".to_owned(),
                ))
            }
        }
    }
}

/// Scans the WAL of `path` before SQLite does: fails when SQLite would drop committed frames,
/// logs a torn tail that never committed.
fn check_wal_before_open(path: &std::path::Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let wal_file = check::wal_path(path);
    let scan = check::wal::scan(&wal_file).map_err(|source| EmbeddedLogError::Corrupt {
        path: wal_file.clone(),
        detail: format!("cannot read the wal: {source}"),
    })?;
    match &scan.tail {
        check::wal::WalTail::Clean => Ok(()),
        tail if tail.loses_committed_data() => Err(EmbeddedLogError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "its wal is damaged: {tail}; SQLite would silently drop committed records ({}); nothing was changed",
                dropped_text(&scan)
            ),
        }),
        tail => {
            tracing::warn!(path = %path.display(), %tail, records = scan.dropped_records.len(), "raw log wal ends with a transaction that never committed (the process died while writing it); it is discarded, nothing acknowledged is in it");
            Ok(())
        }
    }
}

/// What the dropped WAL frames held, as far as their pages tell.
fn dropped_text(scan: &check::wal::WalScan) -> String {
    let mut parts = Vec::new();
    if let (Some(first), Some(last)) = (scan.dropped_records.first(), scan.dropped_records.last()) {
        parts.push(format!(
            "{} record row(s) between {}:{} and {}:{} in their pages",
            scan.dropped_records.len(),
            first.0,
            first.1,
            last.0,
            last.1
        ));
    }
    for (partition, next) in &scan.dropped_next_offsets {
        parts.push(format!(
            "partition {partition} reached offset {next} with them"
        ));
    }
    match parts.is_empty() {
        true => "which ones, their pages do not tell".to_owned(),
        false => parts.join("; "),
    }
}

impl LogAppender for EmbeddedLog {
    fn append(
        &self,
        key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, std::result::Result<Position, AppendError>> {
        let enqueued_at = Instant::now();
        // Queued now, not on first poll: the checks and `try_send` never block.
        let queued = self.enqueue(key, record);
        Box::pin(async move {
            let outcome = match queued {
                Ok(answer) => match answer.await {
                    Ok(Ok(position)) => Ok(position),
                    Ok(Err(reason)) => Err(AppendError::Unavailable(reason)),
                    Err(_) => Err(AppendError::Unavailable(
                        "raw log writer stopped".to_owned(),
                    )),
                },
                Err(error) => Err(error),
            };
            match &outcome {
                Ok(_) => AppendAcknowledged { enqueued_at }.emit(),
                Err(error) => AppendRefused {
                    reason: error.reason(),
                }
                .emit(),
            }
            outcome
        })
    }

    fn check_writable(&self) -> std::result::Result<(), String> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err("raw log is closed".to_owned());
        }
        if !self.shared.writer_running.load(Ordering::Acquire) {
            return Err("raw log writer stopped".to_owned());
        }
        if let Some(reason) = self.shared.health() {
            return Err(reason);
        }
        let unconsumed = self.shared.unconsumed_records();
        if unconsumed >= self.settings.max_unconsumed_records.get() {
            return Err(format!(
                "raw log holds {unconsumed} unconsumed records, its bound"
            ));
        }
        Ok(())
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "raw log writer ended abnormally");
        }
    }
}
