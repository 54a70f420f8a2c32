//! The consume-map-sink loop: raw log in, canonical events out.
//!
//! # Guarantee: each event is in the sink exactly once
//!
//! - Records are consumed in offset order per partition, starting from the offsets the sink
//!   stored for this consumer (or the log start when it stored none).
//! - One batch = consecutive records of every partition. The events, dedupe keys, dead letters
//!   and the batch's next offsets are committed by the sink in **one** transaction
//!   ([`ProjectionSinks::commit_batch`]: the SQLite sink, the PostgreSQL sink, or both, each
//!   with its own offsets; the loop starts from the smaller). After a crash the loop resumes from the sink's offsets, so
//!   a record is either wholly in the sink or consumed again.
//! - Duplicates: a push whose `(source, dedupe key)` is in the LRU front ([`DedupeCache`]) is
//!   skipped without touching SQLite; every other push is checked authoritatively inside the
//!   commit. Keys enter the LRU only after their commit succeeded.
//! - A record that cannot be mapped becomes a dead letter (reason code + `raw_ref` =
//!   `partition:offset`), in the same transaction. A record from a source that is no longer
//!   configured is a dead letter with reason `unknown_source`.
//! - A failed commit is retried with backoff, never skipped: the loop stops advancing (and the
//!   lag metric grows, and `/readyz` says `retrying`) until the sink takes the batch again.
//!
//! # No record stops the loop
//!
//! - A record that cannot be mapped, whose metadata does not decode (`undecodable_record`), or
//!   whose mapping panics (`mapper_panic`, caught per record in [`records`]) is a dead letter;
//!   the records behind it are mapped as usual.
//! - A panic while the sink stores a batch rolls the batch back; its records are then
//!   committed one by one, and the one whose rows panic is a dead letter (`mapper_panic`).
//! - A death the process cannot catch (an abort, a stack overflow, an OOM kill) leaves its
//!   batch in the attempt journal; the next start isolates the record that did it
//!   ([`attempts`], `crashed_normalizer`).
//! - Any other error ends [`Normalizer::run_until`]; its [`crate::supervisor`] reports it and
//!   builds a fresh loop.
//! - After the sink commit, the raw log's own committed offset for the group is advanced too,
//!   at most once per [`RAW_LOG_COMMIT_INTERVAL`], and when the loop stops or a drain ends,
//!   always after [`ProjectionSinks::sync_to_disk`] (the sink commits without an fsync each); that
//!   offset only drives retention, so losing (or delaying) it is harmless.

mod ahead;
pub mod attempts;
pub mod records;
mod recovery;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhook_rawlog::embedded::{EmbeddedLog, LogReader};
use callhook_sinks::failpoints::crash_at;
use callhook_sinks::{ProjectionSinks, SinkItem};

use crate::push::SourceContext;
use crate::supervisor::{panic_message, sleep_unless_stopped, NormalizerHealth, SupervisedLoop};
use crate::telemetry::NormalizerMetrics;
use ahead::{Ahead, ReadAhead};
use attempts::{recovery, AttemptJournal, Recovery};
use records::{Housekeeping, PendingBatch, RecordMapper};

pub use crate::config::{NormalizerConfig, NormalizerSettings};

/// How often the raw log's own committed offset (retention only) is advanced. Each advance is
/// a write transaction with its own fsync on the raw log, whose write lock the receiver's
/// group commits need too: once per batch (or each time the loop caught up) it doubled the
/// loop's fsyncs and held up acks while this low-priority thread held the lock.
pub const RAW_LOG_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The first and the longest pause after a sink refused a batch.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long the committing thread waits for the next batch before it looks at the rest.
const HOUSEKEEPING_TICK: Duration = Duration::from_millis(200);

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The raw log could not be read.
    #[error("raw log read failed: {0}")]
    Log(#[from] callhook_rawlog::embedded::EmbeddedLogError),
    /// A projection sink (SQLite, PostgreSQL) failed; retried when
    /// [`callhook_sinks::SinkError::is_retryable`], else the loop stops.
    #[error("sink failed: {0}")]
    Sink(#[from] callhook_sinks::SinkError),
    /// The Kafka consumer or the Kafka sink failed in a way a retry will not fix.
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaPipelineError),
    /// The attempt journal could not be read or written.
    #[error("attempt journal `{dir}`: {source}")]
    Journal {
        /// The journal's directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The read-ahead thread could not be started or died.
    #[error("read-ahead thread: {0}")]
    Thread(String),
}

impl From<callhook_sinks::SqliteSinkError> for PipelineError {
    fn from(error: callhook_sinks::SqliteSinkError) -> Self {
        PipelineError::Sink(error.into())
    }
}

impl From<callhook_sinks::PostgresSinkError> for PipelineError {
    fn from(error: callhook_sinks::PostgresSinkError) -> Self {
        PipelineError::Sink(error.into())
    }
}

/// How a pipelined run ended.
enum RunEnd {
    /// Asked to stop.
    Stopped,
    /// Caught up (drain only).
    Drained,
    /// A sink panicked on a batch: its records are to be worked off one by one.
    Isolate,
}

/// The normalizer: reads the raw log, maps on a read-ahead thread, commits to the SQLite sink
/// with the dedupe LRU in front. Every method blocks on SQLite, so it runs on its own thread.
pub struct Normalizer {
    log: Arc<EmbeddedLog>,
    reader: LogReader,
    sink: ProjectionSinks,
    mapper: RecordMapper,
    settings: NormalizerSettings,
    next_offsets: Vec<u64>,
    metrics: NormalizerMetrics,
    housekeeping: Housekeeping,
    /// `None` while the read-ahead thread holds it.
    journal: Option<AttemptJournal>,
    /// Per partition: what to do from its next offset on ([`attempts`]).
    recovery: Vec<Recovery>,
    /// Sink-committed offsets not yet recorded in the raw log, and when it last was.
    raw_log_commit_due: bool,
    raw_log_committed_at: Option<Instant>,
}

impl Normalizer {
    /// Builds the loop over `log`, positions it at the sink's stored offsets, and reads the
    /// attempt journal in `attempts_dir` to find a batch a dead process left in flight.
    pub fn new(
        log: Arc<EmbeddedLog>,
        sink: impl Into<ProjectionSinks>,
        sources: HashMap<String, SourceContext>,
        settings: NormalizerSettings,
        attempts_dir: &Path,
    ) -> Result<Self, PipelineError> {
        let mut sink = sink.into();
        let reader = log.reader()?;
        let partitions = reader.partitions();
        let stored: HashMap<u32, u64> = sink
            .stored_offsets(&settings.consumer_group)?
            .into_iter()
            .collect();
        let mut journal = AttemptJournal::open(attempts_dir, &settings.consumer_group)
            .map_err(|source| journal_error(attempts_dir, source))?;
        let mut next_offsets = Vec::with_capacity(partitions as usize);
        let mut plans = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let start = reader.log_start_offset(partition)?;
            let next = stored.get(&partition).copied().unwrap_or(start).max(start);
            let found = journal
                .load(partition)
                .map_err(|source| journal_error(attempts_dir, source))?;
            let plan = recovery(next, found);
            if plan != Recovery::Normal {
                tracing::warn!(
                    partition,
                    ?plan,
                    ?found,
                    "the process died with a batch in flight; its records are attempted one by one"
                );
            }
            next_offsets.push(next);
            plans.push(plan);
        }
        let mapper = RecordMapper::new(sources, settings.dedupe_cache_keys);
        let metrics = NormalizerMetrics::new(mapper.source_names());
        sink.create_dead_letter_series(records::dead_letter_reasons());
        let housekeeping = Housekeeping::default();
        Ok(Normalizer {
            log,
            reader,
            sink,
            mapper,
            settings,
            next_offsets,
            metrics,
            housekeeping,
            journal: Some(journal),
            recovery: plans,
            raw_log_commit_due: false,
            raw_log_committed_at: None,
        })
    }

    /// Runs until `shutdown` is set, finishing the batch in progress. A sink that refuses a
    /// batch gets it again with backoff (`health` says `retrying` meanwhile); any other error
    /// ends the loop (its supervisor restarts it).
    pub fn run_until(
        mut self,
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<(), PipelineError> {
        let result = self.run_phases(shutdown, health, false);
        // What was committed is recorded in the raw log (retention); the rest waits there for
        // the next start.
        self.commit_raw_log_offsets(true);
        result.map(|_| ())
    }

    /// Consumes everything committed to the log so far; returns the records consumed.
    pub fn drain(&mut self) -> Result<u64, PipelineError> {
        let before: u64 = self.next_offsets.iter().sum();
        let never = AtomicBool::new(false);
        self.run_phases(&never, &NormalizerHealth::new(), true)?;
        self.commit_raw_log_offsets(true);
        Ok(self.next_offsets.iter().sum::<u64>() - before)
    }

    /// Alternates between working off recovering partitions (one record per commit, on this
    /// thread) and the pipelined run, until stopped (or, draining, caught up).
    fn run_phases(
        &mut self,
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
        drain: bool,
    ) -> Result<RunEnd, PipelineError> {
        loop {
            crate::failpoints::panic_at("normalizer::step");
            while !shutdown.load(Ordering::Acquire) && self.recovering() {
                self.retrying(|normalizer| normalizer.recover_one(), shutdown, health)?;
            }
            if shutdown.load(Ordering::Acquire) {
                return Ok(RunEnd::Stopped);
            }
            match self.run_pipelined(shutdown, health, drain)? {
                RunEnd::Isolate => continue,
                end => return Ok(end),
            }
        }
    }

    /// Runs `step` until it succeeds; a retryable sink error is retried with backoff.
    fn retrying<T>(
        &mut self,
        mut step: impl FnMut(&mut Self) -> Result<T, PipelineError>,
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<Option<T>, PipelineError> {
        let mut backoff = RETRY_MIN;
        loop {
            match step(self) {
                Ok(value) => {
                    health.running();
                    return Ok(Some(value));
                }
                Err(PipelineError::Sink(error)) if error.is_retryable() => {
                    tracing::error!(error = %error, backoff_ms = backoff.as_millis() as u64, "sink commit failed; retrying the batch");
                    health.retrying(format!("sink commit failing: {error}"));
                    self.metrics.commit_failures.inc();
                    sleep_unless_stopped(backoff, shutdown);
                    if shutdown.load(Ordering::Acquire) {
                        return Ok(None);
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn recovering(&self) -> bool {
        self.recovery.iter().any(|plan| *plan != Recovery::Normal)
    }

    /// Starts the read-ahead thread and commits what it maps, in order, until stopped, caught
    /// up (drain), or a sink panic sends the loop back to record-by-record recovery.
    fn run_pipelined(
        &mut self,
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
        drain: bool,
    ) -> Result<RunEnd, PipelineError> {
        let committed: Arc<Vec<AtomicU64>> = Arc::new(
            self.next_offsets
                .iter()
                .map(|o| AtomicU64::new(*o))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stage = ReadAhead {
            reader: self.log.reader()?,
            sources: self.mapper.sources(),
            journal: self
                .journal
                .take()
                .ok_or_else(|| PipelineError::Thread("the journal is already in use".into()))?,
            positions: self.next_offsets.clone(),
            committed: Arc::clone(&committed),
            max_batch_records: self.settings.max_batch_records,
            max_batch_bytes: self.settings.max_batch_bytes,
            read_limit: self.settings.max_batch_records,
            idle_wait: self.settings.idle_wait,
            until_caught_up: drain,
            stop: Arc::clone(&stop),
        };
        // A rendezvous channel: the mapper hands a batch over only when the writer takes it,
        // so at most two batches are in memory (the one committing and the next, mapped),
        // not three; the mapper is the faster of the two, so the overlap is kept.
        let (sender, receiver) = mpsc::sync_channel(0);
        // It inherits this thread's CPU priority (Linux keeps nice per thread, and a new
        // thread starts with its creator's).
        let thread = std::thread::Builder::new()
            .name("normalizer-map".into())
            .spawn(move || stage.run(sender))
            .map_err(|error| PipelineError::Thread(error.to_string()))?;
        let end = self.commit_ahead(&receiver, &committed, shutdown, health);
        stop.store(true, Ordering::Release);
        drop(receiver);
        let finished = thread
            .join()
            .map_err(|panic| PipelineError::Thread(panic_message(panic.as_ref())))?;
        self.journal = Some(finished.journal);
        let end = end?;
        if let RunEnd::Isolate = end {
            for (partition, read_to) in finished.positions.iter().enumerate() {
                let from = self.next_offsets[partition];
                if *read_to > from {
                    self.recovery[partition] = Recovery::Isolate {
                        from,
                        through: *read_to,
                        first_attempts: 1,
                    };
                }
            }
        }
        finished.result?;
        Ok(end)
    }

    /// The committing side of [`Normalizer::run_pipelined`].
    fn commit_ahead(
        &mut self,
        receiver: &mpsc::Receiver<Ahead>,
        committed: &[AtomicU64],
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<RunEnd, PipelineError> {
        loop {
            if shutdown.load(Ordering::Acquire) {
                return Ok(RunEnd::Stopped);
            }
            match receiver.recv_timeout(HOUSEKEEPING_TICK) {
                Ok(Ahead::Batch(batch)) => {
                    let mut pending = self.admit(batch.items);
                    let ranges = batch.ranges;
                    let outcome = self.retrying(
                        |normalizer| normalizer.commit(&mut pending, &ranges),
                        shutdown,
                        health,
                    )?;
                    match outcome {
                        None => return Ok(RunEnd::Stopped),
                        Some(false) => return Ok(RunEnd::Isolate),
                        Some(true) => {}
                    }
                    for (partition, next) in self.next_offsets.iter().enumerate() {
                        committed[partition].store(*next, Ordering::Release);
                    }
                }
                Ok(Ahead::CaughtUp) => {
                    health.running();
                    self.commit_raw_log_offsets(false);
                    self.record_lag()?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(RunEnd::Drained),
            }
            self.housekeeping.maybe_run(&mut self.sink);
        }
    }

    /// Puts mapped items through the dedupe LRU into a batch to commit.
    fn admit(&mut self, items: Vec<SinkItem>) -> PendingBatch {
        let mut pending = PendingBatch::new(&self.settings.consumer_group);
        for item in items {
            pending.admit(&mut self.mapper, item);
        }
        pending
    }

    /// Commits `pending` with the offsets after `ranges`; returns false (nothing committed)
    /// when the sink panicked on it.
    fn commit(
        &mut self,
        pending: &mut PendingBatch,
        ranges: &[(u32, u64, u64)],
    ) -> Result<bool, PipelineError> {
        pending.batch.offsets = ranges
            .iter()
            .map(|(partition, _, through)| (*partition, *through))
            .collect();
        let sink = &mut self.sink;
        let batch = &pending.batch;
        let outcome = match catch_unwind(AssertUnwindSafe(|| sink.commit_batch(batch))) {
            Ok(result) => result?,
            Err(panic) => {
                tracing::error!(panic = %panic_message(panic.as_ref()), records = pending.records(), "the sink panicked on a batch (rolled back); its records are committed one by one");
                return Ok(false);
            }
        };
        crash_at("normalizer::after_commit");
        for (partition, _, through) in ranges {
            self.next_offsets[*partition as usize] = *through;
        }
        self.raw_log_commit_due = true;
        self.commit_raw_log_offsets(false);
        pending.committed(&mut self.mapper, &outcome, &self.metrics);
        self.record_lag()?;
        Ok(true)
    }

    /// Records the sink-committed offsets in the raw log (retention only) if any are pending
    /// and `now` is set or [`RAW_LOG_COMMIT_INTERVAL`] has passed since the last time.
    fn commit_raw_log_offsets(&mut self, now: bool) {
        let interval_passed = self
            .raw_log_committed_at
            .is_none_or(|at| at.elapsed() >= RAW_LOG_COMMIT_INTERVAL);
        if !self.raw_log_commit_due || !(now || interval_passed) {
            return;
        }
        self.raw_log_commit_due = false;
        self.raw_log_committed_at = Some(Instant::now());
        // The sink's commits must survive a power loss before the raw log may release the
        // records behind them (its retention follows this offset).
        if let Err(error) = self.sink.sync_to_disk() {
            tracing::warn!(error = %error, "could not sync the sink to disk; the raw log keeps its records for now");
            self.raw_log_commit_due = true;
            return;
        }
        for (partition, next) in self.next_offsets.iter().enumerate() {
            if let Err(error) =
                self.reader
                    .commit(&self.settings.consumer_group, partition as u32, *next)
            {
                tracing::warn!(error = %error, partition, "could not record the consumed offset in the raw log (retention only)");
            }
        }
    }

    fn record_lag(&self) -> Result<(), PipelineError> {
        let mut lag = 0;
        for (partition, next) in self.next_offsets.iter().enumerate() {
            lag += self
                .reader
                .high_watermark(partition as u32)?
                .saturating_sub(*next);
        }
        self.metrics.lag_records.set(lag as i64);
        Ok(())
    }

    /// Returns the next offset to consume per partition.
    pub fn positions(&self) -> &[u64] {
        &self.next_offsets
    }

    /// Returns the number of keys in the dedupe LRU.
    pub fn cached_keys(&self) -> usize {
        self.mapper.cached_keys()
    }
}

impl SupervisedLoop for Normalizer {
    fn run(
        self: Box<Self>,
        stop: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<(), PipelineError> {
        (*self).run_until(stop, health)
    }
}

fn journal_error(dir: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Journal {
        dir: dir.display().to_string(),
        source,
    }
}
