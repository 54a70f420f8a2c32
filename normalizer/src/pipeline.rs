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
//! - After the sink commit, the raw log's own committed offset for the group is advanced too;
//!   that one only drives retention, so losing it in a crash is harmless.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhook_rawlog::embedded::LogReader;
use callhook_rawlog::StoredRecord;
use callhook_sinks::{SinkBatch, SinkItem, SqliteSink};
use chrono::Utc;

use crate::dedupe::DedupeCache;
use crate::push::{RawPush, SourceContext};
use crate::telemetry::{BatchProcessed, NormalizerMetrics, RecordOutcome};

pub use crate::config::{NormalizerConfig, NormalizerSettings};

/// Longest dead-letter detail stored; mapper errors name fields, never payloads.
const MAX_DETAIL_CHARS: usize = 512;

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The raw log could not be read.
    #[error("raw log read failed: {0}")]
    Log(#[from] callhook_rawlog::embedded::EmbeddedLogError),
    /// The sink failed in a way a retry will not fix.
    #[error("sink failed: {0}")]
    Sink(#[from] callhook_sinks::SqliteSinkError),
}

/// The normalizer: owns a raw-log reader, the SQLite sink and the dedupe LRU. Every method
/// blocks on SQLite, so it runs on its own thread ([`Normalizer::run`]).
pub struct Normalizer {
    reader: LogReader,
    sink: SqliteSink,
    sources: HashMap<String, SourceContext>,
    cache: DedupeCache,
    settings: NormalizerSettings,
    next_offsets: Vec<u64>,
    metrics: NormalizerMetrics,
    last_prune: Option<Instant>,
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
        let cache = DedupeCache::new(settings.dedupe_cache_keys);
        let metrics = NormalizerMetrics::new(sources.keys().map(String::as_str));
        Ok(Normalizer {
            reader,
            sink,
            sources,
            cache,
            settings,
            next_offsets,
            metrics,
            last_prune: None,
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
            self.maybe_prune();
        }
    }

    /// Consumes everything committed to the log so far; returns the records consumed.
    pub fn drain(&mut self) -> Result<u64, PipelineError> {
        let mut total = 0;
        loop {
            let consumed = self.step()?;
            if consumed == 0 {
                return Ok(total);
            }
            total += consumed as u64;
        }
    }

    /// Reads, maps and commits one batch; returns how many records it consumed.
    pub fn step(&mut self) -> Result<usize, PipelineError> {
        let started = Instant::now();
        let mut batch = SinkBatch {
            consumer: self.settings.consumer_group.clone(),
            ..SinkBatch::default()
        };
        let mut consumed = 0;
        let mut outcomes = Vec::new();
        for partition in 0..self.reader.partitions() {
            let from = self.next_offsets[partition as usize];
            let records = self
                .reader
                .read(partition, from, self.settings.max_batch_records)?;
            let Some(last) = records.last() else { continue };
            batch.offsets.push((partition, last.position.offset + 1));
            consumed += records.len();
            for record in &records {
                outcomes.push(self.process(record, &mut batch.items));
            }
        }
        if consumed == 0 {
            self.record_lag()?;
            return Ok(0);
        }
        let outcome = self.sink.commit_batch(&batch)?;
        for (partition, next) in &batch.offsets {
            self.next_offsets[*partition as usize] = *next;
            if let Err(error) = self
                .reader
                .commit(&self.settings.consumer_group, *partition, *next)
            {
                tracing::warn!(error = %error, partition, "could not record the consumed offset in the raw log (retention only)");
            }
        }
        for item in &batch.items {
            if let SinkItem::Push {
                source, dedupe_key, ..
            } = item
            {
                self.cache.remember(source, dedupe_key);
            }
        }
        BatchProcessed {
            records: consumed,
            outcomes: &outcomes,
            items: &batch.items,
            commit: &outcome,
            elapsed: started.elapsed(),
        }
        .emit(&self.metrics);
        self.record_lag()?;
        Ok(consumed)
    }

    fn process(&mut self, stored: &StoredRecord, items: &mut Vec<SinkItem>) -> RecordOutcome {
        let record = &stored.record;
        let Some(ctx) = self.sources.get(&record.source) else {
            items.push(dead_letter(
                stored,
                "unknown_source",
                format!("source `{}` is not configured", record.source),
            ));
            return RecordOutcome::DeadLetter;
        };
        let push = RawPush {
            method: &record.method,
            content_type: record.content_type.as_deref(),
            query: record.query.as_deref(),
            headers: &record.headers,
            body: &record.body,
            received_at: record.received_at,
        };
        match crate::map_push(&push, ctx) {
            Ok(mapped) if self.cache.contains(&record.source, &mapped.dedupe_key) => {
                RecordOutcome::DuplicateInCache
            }
            Ok(mapped) => {
                items.push(SinkItem::Push {
                    source: record.source.clone(),
                    dedupe_key: mapped.dedupe_key,
                    received_at: record.received_at,
                    events: mapped.events,
                });
                RecordOutcome::Mapped
            }
            Err(error) => {
                tracing::debug!(reason = error.reason(), raw_ref = %stored.position, source = %record.source, "push dead-lettered");
                items.push(dead_letter(stored, error.reason(), error.to_string()));
                RecordOutcome::DeadLetter
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

    fn maybe_prune(&mut self) {
        let due = self
            .last_prune
            .is_none_or(|at| at.elapsed() >= self.settings.prune_interval);
        if !due {
            return;
        }
        self.last_prune = Some(Instant::now());
        let window = chrono::Duration::from_std(self.sink.dedupe_window())
            .unwrap_or(chrono::Duration::days(7));
        match self.sink.prune_dedupe_keys(Utc::now() - window) {
            Ok(removed) => tracing::debug!(removed, "pruned dedupe keys past the window"),
            Err(error) => {
                tracing::warn!(error = %error, "pruning dedupe keys failed; retrying later")
            }
        }
    }

    /// Returns the next offset to consume per partition.
    pub fn positions(&self) -> &[u64] {
        &self.next_offsets
    }

    /// Returns the number of keys in the dedupe LRU.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }
}

fn dead_letter(stored: &StoredRecord, reason: &str, detail: String) -> SinkItem {
    SinkItem::DeadLetter {
        raw_ref: stored.position.to_string(),
        source: stored.record.source.clone(),
        reason: reason.to_owned(),
        detail: detail.chars().take(MAX_DETAIL_CHARS).collect(),
        received_at: stored.record.received_at,
    }
}
