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
    /// Body bytes per partition and batch ([`crate::config::NormalizerConfig::max_batch_bytes`]).
    pub(crate) max_batch_bytes: usize,
    /// How many records the next read asks for: `max_batch_records`, or fewer when the last
    /// read's bodies said that many would pass `max_batch_bytes`.
    pub(crate) read_limit: usize,
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
            let mut records = self.reader.read_each(partition, from, self.read_limit)?;
            self.read_limit =
                cut_at_bytes(&mut records, self.max_batch_bytes, self.max_batch_records)
                    .unwrap_or(self.read_limit);
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

/// Cuts `records` after the one whose body reaches `max_bytes` (one at least) and returns
/// how many records to ask for next, from their mean body size (so that the cut is rarely
/// needed: a record cut off is read again by the next batch); `None` when there were none.
fn cut_at_bytes(
    records: &mut Vec<ReadRecord>,
    max_bytes: usize,
    max_records: usize,
) -> Option<usize> {
    let mut bytes = 0;
    let mut keep = records.len();
    for (index, record) in records.iter().enumerate() {
        bytes += body_len(record);
        if bytes >= max_bytes {
            keep = index + 1;
            break;
        }
    }
    records.truncate(keep);
    let mean = (bytes / records.len().max(1)).max(1);
    (!records.is_empty()).then(|| (max_bytes / mean).clamp(1, max_records))
}

/// The body length of a record read from the log.
fn body_len(record: &ReadRecord) -> usize {
    match record {
        ReadRecord::Decoded(stored) => stored.record.body.len(),
        ReadRecord::Undecodable(kept) => kept.body.len(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use callhook_rawlog::embedded::UndecodableRecord;
    use callhook_rawlog::Position;
    use chrono::DateTime;

    use super::*;

    fn records(body_lengths: &[usize]) -> Vec<ReadRecord> {
        body_lengths
            .iter()
            .enumerate()
            .map(|(offset, length)| {
                ReadRecord::Undecodable(UndecodableRecord {
                    position: Position {
                        partition: 0,
                        offset: offset as u64,
                    },
                    key: String::new(),
                    source: String::new(),
                    received_at: DateTime::UNIX_EPOCH,
                    body: Bytes::from(vec![b'x'; *length]),
                    detail: String::new(),
                })
            })
            .collect()
    }

    #[test]
    fn test_a_batch_ends_at_the_record_that_reaches_the_byte_bound() {
        let mut read = records(&[300; 10]);
        let next = cut_at_bytes(&mut read, 1000, 1000);
        assert_eq!(read.len(), 4, "300, 600, 900, then 1,200 reaches 1,000");
        assert_eq!(
            next,
            Some(3),
            "the next read asks for what fits: 1000 / 300"
        );
    }

    #[test]
    fn test_small_bodies_read_up_to_the_record_bound_and_a_huge_one_alone() {
        let mut read = records(&[100; 10]);
        assert_eq!(cut_at_bytes(&mut read, 1 << 20, 1000), Some(1000));
        assert_eq!(read.len(), 10);
        let mut read = records(&[5000, 10, 10]);
        assert_eq!(cut_at_bytes(&mut read, 1024, 1000), Some(1));
        assert_eq!(read.len(), 1, "a record over the bound still makes a batch");
        assert_eq!(cut_at_bytes(&mut Vec::new(), 1024, 1000), None);
    }
}
