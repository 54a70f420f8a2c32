//! The read-ahead stage: a thread that reads the next batch from the raw log and maps it while
//! the loop's own thread commits the previous one. Mapping is pure, so it runs in parallel;
//! the commits stay in order on one thread.
//!
//! Before it maps a batch, the stage records it in the attempt journal as one range per
//! partition that starts at the sink's committed offset (which the committing thread
//! publishes), not at the batch's first record: the batch still being committed is in flight
//! too, so a death while either is in flight isolates both ([`super::attempts`]).
//!
//! The hand-over is a rendezvous channel: a mapped batch waits in the stage until the
//! committing thread takes it, so memory holds at most two batches (the one committing and the
//! next), and the stage maps the one after while the next commits. When the committing thread
//! stops (or goes into recovery), it
//! drops its end; the stage notices at its next send or idle wake-up and returns, handing the
//! journal back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use callhook_rawlog::embedded::{LogReader, ReadRecord};
use callhook_sinks::failpoints::crash_at;
use callhook_sinks::SinkItem;

use super::attempts::{Attempt, AttemptJournal};
use super::records::{dead_letter_of_undecodable, map_record};
use super::PipelineError;
use crate::push::SourceContext;

/// What the stage hands to the committing thread.
pub(crate) enum Ahead {
    /// A mapped batch, in log order.
    Batch(MappedBatch),
    /// The stage read everything there was: the log is caught up (for health and lag).
    CaughtUp,
}

/// A read and mapped batch.
pub(crate) struct MappedBatch {
    /// One item per record, in order: the push (not yet through the dedupe LRU) or the dead
    /// letter.
    pub(crate) items: Vec<SinkItem>,
    /// Per partition: `(partition, first offset, offset after the last)`.
    pub(crate) ranges: Vec<(u32, u64, u64)>,
}

/// The stage's inputs.
pub(crate) struct ReadAhead {
    pub(crate) reader: LogReader,
    pub(crate) sources: Arc<HashMap<String, SourceContext>>,
    pub(crate) journal: AttemptJournal,
    /// Per partition, the next offset to read.
    pub(crate) positions: Vec<u64>,
    /// Per partition, the sink's committed next offset (the committing thread stores it).
    pub(crate) committed: Arc<Vec<AtomicU64>>,
    pub(crate) max_batch_records: usize,
    pub(crate) idle_wait: Duration,
    /// Stop once a read finds nothing (drain) instead of waiting for appends.
    pub(crate) until_caught_up: bool,
    pub(crate) stop: Arc<AtomicBool>,
}

/// What the stage hands back when it returns.
pub(crate) struct Finished {
    pub(crate) journal: AttemptJournal,
    /// Per partition, the next offset it would have read.
    pub(crate) positions: Vec<u64>,
    pub(crate) result: Result<(), PipelineError>,
}

impl ReadAhead {
    /// Runs the stage until `stop`, the other end hung up, or (drain) the log is caught up.
    pub(crate) fn run(mut self, out: SyncSender<Ahead>) -> Finished {
        let result = self.run_inner(&out);
        Finished {
            journal: self.journal,
            positions: self.positions,
            result,
        }
    }

    fn run_inner(&mut self, out: &SyncSender<Ahead>) -> Result<(), PipelineError> {
        let mut announced_caught_up = false;
        while !self.stop.load(Ordering::Acquire) {
            let generation = self.reader.append_generation();
            let Some(batch) = self.read_and_map()? else {
                if self.until_caught_up {
                    return Ok(());
                }
                if !announced_caught_up {
                    announced_caught_up = true;
                    // A rendezvous: this waits for the writer to finish the batch it holds
                    // (there is nothing to map meanwhile), and fails once the writer is gone.
                    if out.send(Ahead::CaughtUp).is_err() {
                        return Ok(());
                    }
                }
                self.reader.wait_for_append(generation, self.idle_wait);
                continue;
            };
            announced_caught_up = false;
            for (partition, _, through) in &batch.ranges {
                self.positions[*partition as usize] = *through;
            }
            if out.send(Ahead::Batch(batch)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads up to `max_batch_records` of every partition from its position, records the
    /// attempt, and maps the records; `None` when there was nothing to read.
    fn read_and_map(&mut self) -> Result<Option<MappedBatch>, PipelineError> {
        let mut read: Vec<ReadRecord> = Vec::new();
        let mut ranges = Vec::new();
        for partition in 0..self.reader.partitions() {
            let from = self.positions[partition as usize];
            let records = self
                .reader
                .read_each(partition, from, self.max_batch_records)?;
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                continue;
            };
            ranges.push((
                partition,
                first.position().offset,
                last.position().offset + 1,
            ));
            read.extend(records);
        }
        if ranges.is_empty() {
            return Ok(None);
        }
        for (partition, first, through) in &ranges {
            let committed = self.committed[*partition as usize].load(Ordering::Acquire);
            let attempt = Attempt {
                from: committed.min(*first),
                through: *through,
                attempts: 1,
            };
            self.journal
                .store(*partition, attempt)
                .map_err(|source| PipelineError::Journal {
                    dir: self.journal.dir().display().to_string(),
                    source,
                })?;
        }
        crash_at("normalizer::after_read");
        let items = read
            .iter()
            .map(|record| match record {
                ReadRecord::Decoded(stored) => map_record(&self.sources, stored),
                ReadRecord::Undecodable(kept) => dead_letter_of_undecodable(kept),
            })
            .collect();
        crash_at("normalizer::after_map");
        Ok(Some(MappedBatch { items, ranges }))
    }
}
