//! Working off what a dead process left in flight, one record per commit, on the loop's own
//! thread (the rule is in [`super::attempts`]): a record in flight alone at two deaths is
//! dead-lettered `crashed_normalizer` without being mapped again; any other is mapped and
//! committed alone, and if storing its rows panics it is dead-lettered `mapper_panic`.

use callhook_rawlog::embedded::ReadRecord;

use super::attempts::{Attempt, Recovery};
use super::records::{
    dead_letter, dead_letter_of_undecodable, map_record, reason, PendingBatch, CRASHED_DETAIL,
    PANICKED_DETAIL,
};
use super::{journal_error, Normalizer, PipelineError};

impl Normalizer {
    /// Works off one record of the first recovering partition; returns how many records it
    /// consumed (0 when the partition's range turned out to be empty).
    pub(super) fn recover_one(&mut self) -> Result<usize, PipelineError> {
        let Some(index) = self
            .recovery
            .iter()
            .position(|plan| *plan != Recovery::Normal)
        else {
            return Ok(0);
        };
        let partition = index as u32;
        let offset = self.next_offsets[index];
        let (through, attempts, crashed) = match self.recovery[index] {
            Recovery::Normal => return Ok(0),
            Recovery::DeadLetter { offset: at } => (at + 1, 0, true),
            Recovery::Isolate {
                through,
                first_attempts,
                from,
            } => (
                through,
                if offset == from { first_attempts } else { 1 },
                false,
            ),
        };
        let mut records = self.reader.read_each(partition, offset, 1)?;
        let Some(record) = records
            .pop()
            .filter(|record| record.position().offset < through)
        else {
            // Nothing left of the range (retention, or it was the log's end).
            self.recovery[index] = Recovery::Normal;
            return Ok(0);
        };
        let at = record.position().offset;
        let ranges = [(partition, at, at + 1)];
        let mut pending = PendingBatch::new(&self.settings.consumer_group);
        if crashed {
            tracing::error!(raw_ref = %record.position(), "a record killed the normalizer twice; dead-lettered as crashed_normalizer");
            let item = dead_letter_for(&record, reason::CRASHED_NORMALIZER, CRASHED_DETAIL);
            pending.admit(&mut self.mapper, item);
        } else {
            self.journal_one(partition, at, attempts)?;
            let item = match &record {
                ReadRecord::Decoded(stored) => map_record(&self.mapper.sources(), stored),
                ReadRecord::Undecodable(kept) => dead_letter_of_undecodable(kept),
            };
            pending.admit(&mut self.mapper, item);
        }
        if !self.commit(&mut pending, &ranges)? {
            // Storing this one record's rows panicked: it is a dead letter.
            let mut dead = PendingBatch::new(&self.settings.consumer_group);
            let item = dead_letter_for(&record, reason::MAPPER_PANIC, PANICKED_DETAIL);
            dead.admit(&mut self.mapper, item);
            if !self.commit(&mut dead, &ranges)? {
                return Err(PipelineError::Thread(format!(
                    "storing the dead letter of {} panicked",
                    record.position()
                )));
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

    fn journal_one(&mut self, partition: u32, at: u64, attempts: u32) -> Result<(), PipelineError> {
        let Some(journal) = self.journal.as_mut() else {
            return Err(PipelineError::Thread("the journal is in use".into()));
        };
        let attempt = Attempt {
            from: at,
            through: at + 1,
            attempts,
        };
        journal
            .store(partition, attempt)
            .map_err(|source| journal_error(journal.dir(), source))
    }
}

/// The dead letter of a record with `reason`, without mapping it.
fn dead_letter_for(record: &ReadRecord, reason: &str, detail: &str) -> callhook_sinks::SinkItem {
    match record {
        ReadRecord::Decoded(stored) => dead_letter(stored, reason, detail.to_owned()),
        ReadRecord::Undecodable(kept) => dead_letter_of_undecodable(kept),
    }
}
