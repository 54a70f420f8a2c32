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
//!   lag metric grows) until the sink takes the batch again.
//! - After the sink commit, the raw log's own committed offset for the group is advanced too,
//!   at most once per [`RAW_LOG_COMMIT_INTERVAL`], and when the loop stops or a drain ends;
//!   that one only drives retention, so losing (or delaying) it is harmless.

pub mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhook_rawlog::embedded::LogReader;
use callhook_sinks::SqliteSink;

use crate::push::SourceContext;
use crate::telemetry::NormalizerMetrics;
use records::{DedupePruner, PendingBatch, RecordMapper};

pub use crate::config::{NormalizerConfig, NormalizerSettings};

/// How often the raw log's own committed offset (retention only) is advanced. Each advance is
/// a write transaction with its own fsync on the raw log, whose write lock the receiver's
/// group commits need too: once per batch (or each time the loop caught up) it doubled the
/// loop's fsyncs and held up acks while this low-priority thread held the lock.
pub const RAW_LOG_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Sink-committed offsets not yet recorded in the raw log, and when it last was.
    raw_log_commit_due: bool,
    raw_log_committed_at: Option<Instant>,
}

impl Normalizer {
    /// Builds the loop and positions it at the sink's stored offsets.
    pub fn new(
        reader: LogReader,
        sink: SqliteSink,
        sources: HashMap<String, SourceContext>,
        settings: NormalizerSettings,
    ) -> Result<Self, PipelineError> {
        let partitions = reader.partitions();
        let stored: HashMap<u32, u64> = sink
            .stored_offsets(&settings.consumer_group)?
            .into_iter()
            .collect();
        let mut next_offsets = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let start = reader.log_start_offset(partition)?;
            next_offsets.push(stored.get(&partition).copied().unwrap_or(start).max(start));
        }
        let mapper = RecordMapper::new(sources, settings.dedupe_cache_keys);
        let metrics = NormalizerMetrics::new(mapper.source_names());
        let pruner = DedupePruner::new(settings.prune_interval);
        Ok(Normalizer {
            reader,
            sink,
            mapper,
            settings,
            next_offsets,
            metrics,
            pruner,
            raw_log_commit_due: false,
            raw_log_committed_at: None,
        })
    }

    /// Runs until `shutdown` is set, finishing the batch in progress.
    pub fn run(mut self, shutdown: Arc<AtomicBool>) -> Result<(), PipelineError> {
        let mut backoff = Duration::from_millis(50);
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
                Ok(0) => {
                    self.reader
                        .wait_for_append(generation, self.settings.idle_wait);
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(PipelineError::Sink(error)) if error.is_retryable() => {
                    tracing::error!(error = %error, backoff_ms = backoff.as_millis() as u64, "sink commit failed; retrying the batch");
                    self.metrics.commit_failures.inc();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
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
            if consumed == 0 {
                self.commit_raw_log_offsets(true);
                return Ok(total);
            }
            total += consumed as u64;
        }
    }

    /// Reads, maps and commits one batch; returns how many records it consumed.
    pub fn step(&mut self) -> Result<usize, PipelineError> {
        let mut pending = PendingBatch::new(&self.settings.consumer_group);
        for partition in 0..self.reader.partitions() {
            let from = self.next_offsets[partition as usize];
            let records = self
                .reader
                .read(partition, from, self.settings.max_batch_records)?;
            let Some(last) = records.last() else { continue };
            pending
                .batch
                .offsets
                .push((partition, last.position.offset + 1));
            for record in &records {
                pending.add(&mut self.mapper, record);
            }
        }
        let consumed = pending.records();
        if consumed == 0 {
            self.commit_raw_log_offsets(false);
            self.record_lag()?;
            return Ok(0);
        }
        let outcome = self.sink.commit_batch(&pending.batch)?;
        for (partition, next) in &pending.batch.offsets {
            self.next_offsets[*partition as usize] = *next;
        }
        self.raw_log_commit_due = true;
        self.commit_raw_log_offsets(false);
        pending.committed(&mut self.mapper, &outcome, &self.metrics);
        self.record_lag()?;
        Ok(consumed)
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
