//! The consume-map-sink loop: raw log in, canonical events out.
//!
//! # Guarantee: each event is in the sink exactly once
//!
//! - Records are consumed in offset order per partition, starting from the offsets the sink
//!   stored for this consumer (or the log start when it stored none).
//! - One batch = consecutive records of every partition. The events, dedupe keys, dead letters
//!   and the batch's next offsets are committed by the sink in **one** transaction
//!   ([`SqliteSink::commit_batch`]). After a crash the loop resumes from the sink's offsets, so
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
//!   always after [`SqliteSink::sync_to_disk`] (the sink commits without an fsync each); that
//!   offset only drives retention, so losing (or delaying) it is harmless.

pub mod attempts;
pub mod records;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callhook_rawlog::embedded::{LogReader, ReadRecord};
use callhook_sinks::failpoints::crash_at;
use callhook_sinks::SqliteSink;

use crate::push::SourceContext;
use crate::supervisor::{panic_message, sleep_unless_stopped, NormalizerHealth, SupervisedLoop};
use crate::telemetry::NormalizerMetrics;
use attempts::{recovery, Attempt, AttemptJournal, Recovery};
use records::{reason, DedupePruner, PendingBatch, RecordMapper};

pub use crate::config::{NormalizerConfig, NormalizerSettings};

/// How often the raw log's own committed offset (retention only) is advanced. Each advance is
/// a write transaction with its own fsync on the raw log, whose write lock the receiver's
/// group commits need too: once per batch (or each time the loop caught up) it doubled the
/// loop's fsyncs and held up acks while this low-priority thread held the lock.
pub const RAW_LOG_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The first and the longest pause after a sink refused a batch.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The raw log could not be read.
    #[error("raw log read failed: {0}")]
    Log(#[from] callhook_rawlog::embedded::EmbeddedLogError),
    /// The sink failed in a way a retry will not fix.
    #[error("sink failed: {0}")]
    Sink(#[from] callhook_sinks::SqliteSinkError),
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
}

/// A batch in the making: what the sink commits, and per partition the range it covers.
struct Batch {
    pending: PendingBatch,
    ranges: Vec<(u32, u64, u64)>,
}

/// The normalizer: owns a raw-log reader, the SQLite sink and the dedupe LRU. Every method
/// blocks on SQLite, so it runs on its own thread ([`Normalizer::run`]).
pub struct Normalizer {
    reader: LogReader,
    sink: SqliteSink,
    mapper: RecordMapper,
    settings: NormalizerSettings,
    next_offsets: Vec<u64>,
    metrics: NormalizerMetrics,
    pruner: DedupePruner,
    journal: AttemptJournal,
    /// Per partition: what to do from its next offset on ([`attempts`]).
    recovery: Vec<Recovery>,
    /// Sink-committed offsets not yet recorded in the raw log, and when it last was.
    raw_log_commit_due: bool,
    raw_log_committed_at: Option<Instant>,
}

impl Normalizer {
    /// Builds the loop, positions it at the sink's stored offsets, and reads the attempt
    /// journal in `attempts_dir` to find a batch a dead process left in flight.
    pub fn new(
        reader: LogReader,
        sink: SqliteSink,
        sources: HashMap<String, SourceContext>,
        settings: NormalizerSettings,
        attempts_dir: &Path,
    ) -> Result<Self, PipelineError> {
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
        sink.metrics()
            .create_dead_letter_series(records::dead_letter_reasons());
        let pruner = DedupePruner::new(settings.prune_interval);
        Ok(Normalizer {
            reader,
            sink,
            mapper,
            settings,
            next_offsets,
            metrics,
            pruner,
            journal,
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
        let mut backoff = RETRY_MIN;
        loop {
            let generation = self.reader.append_generation();
            let result = self.step();
            if shutdown.load(Ordering::Acquire) {
                // The current batch is committed (or failed as a whole); the rest waits in
                // the raw log for the next start.
                self.commit_raw_log_offsets(true);
                return result.map(|_| ());
            }
            match result {
                Ok(consumed) => {
                    health.running();
                    backoff = RETRY_MIN;
                    if consumed == 0 {
                        self.reader
                            .wait_for_append(generation, self.settings.idle_wait);
                    }
                }
                Err(PipelineError::Sink(error)) if error.is_retryable() => {
                    tracing::error!(error = %error, backoff_ms = backoff.as_millis() as u64, "sink commit failed; retrying the batch");
                    health.retrying(format!("sink commit failing: {error}"));
                    self.metrics.commit_failures.inc();
                    sleep_unless_stopped(backoff, shutdown);
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(error) => return Err(error),
            }
            self.pruner.maybe_prune(&mut self.sink);
        }
    }

    /// Consumes everything committed to the log so far; returns the records consumed.
    pub fn drain(&mut self) -> Result<u64, PipelineError> {
        let mut total = 0;
        loop {
            let consumed = self.step()?;
            if consumed == 0 && self.recovery.iter().all(|plan| *plan == Recovery::Normal) {
                self.commit_raw_log_offsets(true);
                return Ok(total);
            }
            total += consumed as u64;
        }
    }

    /// Reads, maps and commits one batch; returns how many records it consumed. A partition
    /// left in flight by a dead process is worked off first, one record per commit.
    pub fn step(&mut self) -> Result<usize, PipelineError> {
        crate::failpoints::panic_at("normalizer::step");
        if let Some(partition) = self
            .recovery
            .iter()
            .position(|plan| *plan != Recovery::Normal)
        {
            return self.recover(partition as u32);
        }
        let mut batch = Batch {
            pending: PendingBatch::new(&self.settings.consumer_group),
            ranges: Vec::new(),
        };
        let mut read = Vec::new();
        for partition in 0..self.reader.partitions() {
            let from = self.next_offsets[partition as usize];
            let records =
                self.reader
                    .read_each(partition, from, self.settings.max_batch_records)?;
            let Some(last) = records.last().map(offset_of) else {
                continue;
            };
            let first = records.first().map(offset_of).unwrap_or(last);
            batch.ranges.push((partition, first, last + 1));
            read.push(records);
        }
        if batch.ranges.is_empty() {
            self.commit_raw_log_offsets(false);
            self.record_lag()?;
            return Ok(0);
        }
        self.journal_ranges(&batch.ranges, 1)?;
        crash_at("normalizer::after_read");
        for records in &read {
            for record in records {
                add_record(&mut batch.pending, &mut self.mapper, record);
            }
        }
        crash_at("normalizer::after_map");
        let consumed = batch.pending.records();
        if !self.commit(&mut batch)? {
            // The sink panicked on this batch: work it off one record per commit.
            for (partition, from, through) in &batch.ranges {
                self.recovery[*partition as usize] = Recovery::Isolate {
                    from: *from,
                    through: *through,
                    first_attempts: 1,
                };
            }
            return Ok(0);
        }
        Ok(consumed)
    }

    /// Commits `batch` with its offsets; returns false (nothing committed) when the sink
    /// panicked on it.
    fn commit(&mut self, batch: &mut Batch) -> Result<bool, PipelineError> {
        batch.pending.batch.offsets = batch
            .ranges
            .iter()
            .map(|(partition, _, through)| (*partition, *through))
            .collect();
        let sink = &mut self.sink;
        let pending = &batch.pending;
        let outcome = match catch_unwind(AssertUnwindSafe(|| sink.commit_batch(&pending.batch))) {
            Ok(result) => result?,
            Err(panic) => {
                tracing::error!(panic = %panic_message(panic.as_ref()), records = pending.records(), "the sink panicked on a batch (rolled back); its records are committed one by one");
                return Ok(false);
            }
        };
        crash_at("normalizer::after_commit");
        for (partition, _, through) in &batch.ranges {
            self.next_offsets[*partition as usize] = *through;
        }
        self.raw_log_commit_due = true;
        self.commit_raw_log_offsets(false);
        batch
            .pending
            .committed(&mut self.mapper, &outcome, &self.metrics);
        self.record_lag()?;
        Ok(true)
    }

    /// Works off one record of a partition left in flight by a dead process (or a batch the
    /// sink panicked on): dead-letters it when it was in flight alone at two deaths, else maps
    /// and commits it alone.
    fn recover(&mut self, partition: u32) -> Result<usize, PipelineError> {
        let index = partition as usize;
        let offset = self.next_offsets[index];
        let (through, attempts, crashed) = match self.recovery[index] {
            Recovery::Normal => return Ok(0),
            Recovery::DeadLetter { offset: at } => (at + 1, 0, true),
            Recovery::Isolate {
                through,
                first_attempts,
                ..
            } => (through, first_attempts, false),
        };
        let mut records = self.reader.read_each(partition, offset, 1)?;
        let Some(record) = records.pop().filter(|record| offset_of(record) < through) else {
            // Nothing left of the range (retention, or it was the log's end).
            self.recovery[index] = Recovery::Normal;
            return Ok(0);
        };
        let at = offset_of(&record);
        let mut batch = Batch {
            pending: PendingBatch::new(&self.settings.consumer_group),
            ranges: vec![(partition, at, at + 1)],
        };
        if crashed {
            let detail = "the process died twice while this record was in flight alone (an abort, a stack overflow or an OOM kill); it is not mapped again".to_owned();
            tracing::error!(raw_ref = %position_of(&record), "a record killed the normalizer twice; dead-lettered as crashed_normalizer");
            add_dead_letter(
                &mut batch.pending,
                &record,
                reason::CRASHED_NORMALIZER,
                detail,
            );
        } else {
            self.journal_ranges(&batch.ranges, attempts)?;
            add_record(&mut batch.pending, &mut self.mapper, &record);
        }
        if !self.commit(&mut batch)? {
            // Storing this one record's rows panicked: it is a dead letter.
            let mut dead = Batch {
                pending: PendingBatch::new(&self.settings.consumer_group),
                ranges: batch.ranges.clone(),
            };
            let detail = "building or storing its rows panicked (see the ERROR log)".to_owned();
            add_dead_letter(&mut dead.pending, &record, reason::MAPPER_PANIC, detail);
            if !self.commit(&mut dead)? {
                return Err(PipelineError::Sink(
                    callhook_sinks::SqliteSinkError::CorruptRow {
                        table: "dead_letters",
                        detail: format!(
                            "storing the dead letter of {} panicked",
                            position_of(&record)
                        ),
                    },
                ));
            }
        }
        self.recovery[index] = if at + 1 < through {
            Recovery::Isolate {
                from: at + 1,
                through,
                first_attempts: 1,
            }
        } else {
            Recovery::Normal
        };
        Ok(1)
    }

    fn journal_ranges(
        &mut self,
        ranges: &[(u32, u64, u64)],
        attempts: u32,
    ) -> Result<(), PipelineError> {
        for (partition, from, through) in ranges {
            let attempt = Attempt {
                from: *from,
                through: *through,
                attempts,
            };
            self.journal
                .store(*partition, attempt)
                .map_err(|source| journal_error(self.journal.dir(), source))?;
        }
        Ok(())
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

fn offset_of(record: &ReadRecord) -> u64 {
    record.position().offset
}

fn position_of(record: &ReadRecord) -> callhook_rawlog::Position {
    record.position()
}

fn add_record(pending: &mut PendingBatch, mapper: &mut RecordMapper, record: &ReadRecord) {
    match record {
        ReadRecord::Decoded(stored) => {
            pending.add(mapper, stored);
        }
        ReadRecord::Undecodable(kept) => {
            pending.add_undecodable(kept);
        }
    }
}

fn add_dead_letter(pending: &mut PendingBatch, record: &ReadRecord, reason: &str, detail: String) {
    match record {
        ReadRecord::Decoded(stored) => {
            pending.add_dead_letter(stored, reason, detail);
        }
        ReadRecord::Undecodable(kept) => {
            pending.add_undecodable(kept);
        }
    }
}

fn journal_error(dir: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Journal {
        dir: dir.display().to_string(),
        source,
    }
}
