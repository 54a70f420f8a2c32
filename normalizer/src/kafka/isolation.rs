//! Crash isolation in Kafka mode: the partitions a dead process left in flight
//! ([`crate::pipeline::attempts`] has the rule) are worked off one record per batch, while the
//! other assigned partitions are paused so that the loop gets to them first.
//!
//! The plan is made on every assignment, from the attempt journal and the SQLite offsets the
//! partitions were assigned at. A record of a recovering partition becomes a batch of its own
//! (a batch already begun is committed first and the record is read again); when it commits,
//! the partition moves on to its next record, until the range is worked off and the paused
//! partitions are resumed.

use std::collections::BTreeMap;
use std::path::Path;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use super::rebalance::RebalanceContext;
use crate::pipeline::attempts::{recovery, Attempt, AttemptJournal, Recovery};
use crate::pipeline::PipelineError;

/// What to do with one polled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Map it as part of a batch.
    Batch,
    /// Map it alone, recorded as attempt `attempts`.
    Alone {
        /// The attempt number recorded in the journal.
        attempts: u32,
    },
    /// Dead-letter it alone: it killed the process twice (`crashed_normalizer`).
    Crashed,
    /// Dead-letter it alone: storing its rows panicked (`mapper_panic`).
    Panicked,
}

/// The isolation state of one Kafka normalizer.
#[derive(Debug)]
pub struct Isolation {
    journal: AttemptJournal,
    recovering: BTreeMap<i32, Recovery>,
    panicked: BTreeMap<i32, i64>,
    paused: Vec<i32>,
    topic: String,
}

impl Isolation {
    /// Opens the journal of `consumer` in `dir`.
    pub fn open(dir: &Path, consumer: &str, topic: &str) -> Result<Self, PipelineError> {
        let journal =
            AttemptJournal::open(dir, consumer).map_err(|source| journal_error(dir, source))?;
        Ok(Isolation {
            journal,
            recovering: BTreeMap::new(),
            panicked: BTreeMap::new(),
            paused: Vec::new(),
            topic: topic.to_owned(),
        })
    }

    /// Makes the plan for a new assignment: `positions` are the assigned partitions' start
    /// offsets (`None`: the partition's start).
    pub fn plan(
        &mut self,
        positions: &BTreeMap<i32, Option<i64>>,
        consumer: &BaseConsumer<RebalanceContext>,
    ) -> Result<(), PipelineError> {
        let mut recovering = BTreeMap::new();
        for (partition, position) in positions {
            let Ok(index) = u32::try_from(*partition) else {
                continue;
            };
            let found = self
                .journal
                .load(index)
                .map_err(|source| journal_error(self.journal.dir(), source))?;
            let committed = position
                .and_then(|offset| u64::try_from(offset).ok())
                .or(found.map(|attempt| attempt.from))
                .unwrap_or(0);
            let plan = recovery(committed, found);
            if plan != Recovery::Normal {
                tracing::warn!(
                    partition,
                    ?plan,
                    ?found,
                    "the process died with a batch in flight; its records are attempted one by one"
                );
                recovering.insert(*partition, plan);
            }
        }
        self.recovering = recovering;
        self.panicked
            .retain(|partition, _| positions.contains_key(partition));
        self.update_pauses(positions, consumer);
        Ok(())
    }

    /// Returns how to treat the record at `offset` of `partition`.
    pub fn treatment(&self, partition: i32, offset: i64) -> Treatment {
        if self.panicked.get(&partition) == Some(&offset) {
            return Treatment::Panicked;
        }
        let Ok(offset) = u64::try_from(offset) else {
            return Treatment::Batch;
        };
        match self.recovering.get(&partition) {
            Some(Recovery::Isolate {
                from,
                through,
                first_attempts,
            }) if offset < *through => Treatment::Alone {
                attempts: if offset == *from { *first_attempts } else { 1 },
            },
            Some(Recovery::DeadLetter { offset: at }) if offset == *at => Treatment::Crashed,
            _ => Treatment::Batch,
        }
    }

    /// A record of `partition` at `offset` is read in a batch: a plan that ends before it
    /// is over (its records are gone, e.g. by retention), and the paused partitions resume
    /// once no plan is left.
    pub fn passed(
        &mut self,
        partition: i32,
        offset: i64,
        positions: &BTreeMap<i32, Option<i64>>,
        consumer: &BaseConsumer<RebalanceContext>,
    ) {
        if self.recovering.remove(&partition).is_some()
            || self.panicked.remove(&partition).is_some()
        {
            tracing::info!(
                partition,
                offset,
                "the records left in flight are gone; consuming as usual"
            );
            self.update_pauses(positions, consumer);
        }
    }

    /// Records that `from..through` of `partition` is being attempted, as attempt `attempts`.
    pub fn attempting(
        &mut self,
        partition: i32,
        from: i64,
        through: i64,
        attempts: u32,
    ) -> Result<(), PipelineError> {
        let (Ok(index), Ok(from), Ok(through)) = (
            u32::try_from(partition),
            u64::try_from(from),
            u64::try_from(through),
        ) else {
            return Ok(());
        };
        let attempt = Attempt {
            from,
            through,
            attempts,
        };
        self.journal
            .store(index, attempt)
            .map_err(|source| journal_error(self.journal.dir(), source))
    }

    /// A record treated alone committed: its partition moves on.
    pub fn committed_alone(
        &mut self,
        partition: i32,
        offset: i64,
        positions: &BTreeMap<i32, Option<i64>>,
        consumer: &BaseConsumer<RebalanceContext>,
    ) {
        self.panicked.remove(&partition);
        let next = u64::try_from(offset).unwrap_or_default() + 1;
        match self.recovering.get(&partition) {
            Some(Recovery::Isolate { through, .. }) if next < *through => {
                let plan = Recovery::Isolate {
                    from: next,
                    through: *through,
                    first_attempts: 1,
                };
                self.recovering.insert(partition, plan);
            }
            _ => {
                self.recovering.remove(&partition);
            }
        }
        self.update_pauses(positions, consumer);
    }

    /// A sink panicked on a batch of these ranges: their records are attempted alone.
    pub fn batch_panicked(
        &mut self,
        ranges: &[(i32, i64, i64)],
        positions: &BTreeMap<i32, Option<i64>>,
        consumer: &BaseConsumer<RebalanceContext>,
    ) {
        for (partition, from, through) in ranges {
            let plan = Recovery::Isolate {
                from: u64::try_from(*from).unwrap_or_default(),
                through: u64::try_from(*through).unwrap_or_default(),
                first_attempts: 1,
            };
            self.recovering.insert(*partition, plan);
        }
        self.update_pauses(positions, consumer);
    }

    /// A sink panicked on the record at `offset` of `partition`, alone: it becomes a dead
    /// letter the next time it is read.
    pub fn record_panicked(&mut self, partition: i32, offset: i64) {
        self.panicked.insert(partition, offset);
    }

    /// Pauses the assigned partitions that are not recovering while any is; resumes them
    /// once none is.
    fn update_pauses(
        &mut self,
        positions: &BTreeMap<i32, Option<i64>>,
        consumer: &BaseConsumer<RebalanceContext>,
    ) {
        let wanted: Vec<i32> = if self.recovering.is_empty() && self.panicked.is_empty() {
            Vec::new()
        } else {
            positions
                .keys()
                .filter(|partition| {
                    !self.recovering.contains_key(partition)
                        && !self.panicked.contains_key(partition)
                })
                .copied()
                .collect()
        };
        if wanted == self.paused {
            return;
        }
        if !self.paused.is_empty() {
            if let Err(error) = consumer.resume(&self.list(&self.paused)) {
                tracing::warn!(error = %error, "resuming partitions failed");
            }
        }
        if !wanted.is_empty() {
            if let Err(error) = consumer.pause(&self.list(&wanted)) {
                tracing::warn!(error = %error, "pausing partitions failed");
            }
        }
        self.paused = wanted;
    }

    fn list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&self.topic, *partition);
        }
        list
    }
}

fn journal_error(dir: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Journal {
        dir: dir.display().to_string(),
        source,
    }
}
