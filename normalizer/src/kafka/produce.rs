//! The Kafka-sink step of a batch: which records go to the topics, and the wait for Kafka to
//! confirm them (delivery reports, or the transaction's commit with the consumed offsets).
//!
//! A record is produced only if the topics do not hold it yet:
//! - its offset is at or past the partition's "in topics below" mark (the group's committed
//!   offset at assignment, advanced by every batch Kafka confirmed; see `design.md`);
//! - for a push, its dedupe key is not earlier in the same batch, and its first event (whose
//!   deterministic id stands for the push) is not in a projection sink yet: an event stored there
//!   was produced with the batch that stored it (Kafka confirms before SQLite commits), so a
//!   second push with that key is a vendor's re-send, dropped from the topics as it is from
//!   SQLite.

use std::collections::{BTreeMap, HashSet};

use callhook_sinks::kafka::KafkaDeadLetter;
use callhook_sinks::{
    CommitOutcome, EventKey, KafkaSink, KafkaSinkError, ProjectionSinks, SinkError, SinkItem,
};
use rdkafka::consumer::ConsumerGroupMetadata;

use super::batch::KafkaBatch;

/// Why the Kafka step of a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The Kafka sink did not confirm the batch.
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
    /// The SQLite sink could not be asked whether it holds a push's events.
    #[error("dedupe lookup failed: {0}")]
    Sqlite(#[from] SinkError),
}

impl From<ProduceError> for crate::pipeline::PipelineError {
    fn from(error: ProduceError) -> Self {
        match error {
            ProduceError::Kafka(error) => super::KafkaPipelineError::Sink(error).into(),
            ProduceError::Sqlite(error) => error.into(),
        }
    }
}

impl ProduceError {
    /// Returns true when the batch may be retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProduceError::Kafka(error) => error.is_retryable(),
            ProduceError::Sqlite(error) => error.is_retryable(),
        }
    }
}

/// Produces what the topics lack and waits for Kafka to confirm it; with transactions,
/// `group` is the consumer's group metadata and the batch's offsets join the transaction.
/// On error the batch is aborted in the sink.
pub fn produce_batch(
    sink: &mut KafkaSink,
    sqlite: &mut ProjectionSinks,
    batch: &KafkaBatch,
    in_topics_below: &BTreeMap<i32, i64>,
    group: Option<&ConsumerGroupMetadata>,
) -> Result<CommitOutcome, ProduceError> {
    sink.begin_batch()?;
    let result = send_and_commit(sink, sqlite, batch, in_topics_below, group);
    if result.is_err() {
        sink.abort_batch();
    }
    result
}

fn send_and_commit(
    sink: &mut KafkaSink,
    sqlite: &mut ProjectionSinks,
    batch: &KafkaBatch,
    in_topics_below: &BTreeMap<i32, i64>,
    group: Option<&ConsumerGroupMetadata>,
) -> Result<CommitOutcome, ProduceError> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    // Which pushes' first events a projection sink holds, looked up for the whole batch at
    // once (one statement for PostgreSQL, not a round trip per push).
    let first_keys: Vec<EventKey<'_>> = batch
        .pending
        .batch
        .items
        .iter()
        .filter_map(|item| match item {
            SinkItem::Push { events, .. } => events.first().map(|first| EventKey::of(&first.event)),
            SinkItem::DeadLetter { .. } => None,
        })
        .collect();
    let stored_first = sqlite.stored_events(&first_keys)?;
    for consumed in &batch.records {
        let Some(index) = consumed.item else { continue };
        let position = consumed.stored.position;
        let below = i32::try_from(position.partition)
            .ok()
            .and_then(|partition| in_topics_below.get(&partition))
            .copied()
            .unwrap_or(-1);
        if i64::try_from(position.offset).is_ok_and(|offset| offset < below) {
            continue;
        }
        match &batch.pending.batch.items[index] {
            SinkItem::Push {
                source,
                dedupe_key,
                events,
                ..
            } => {
                let stored = events
                    .first()
                    .is_some_and(|first| stored_first.contains(first.event.id.as_str()));
                if !seen.insert((source, dedupe_key)) || stored {
                    sink.skip_duplicate();
                    continue;
                }
                for event in events {
                    sink.send_event(event)?;
                }
            }
            SinkItem::DeadLetter {
                raw_ref,
                reason,
                detail,
                ..
            } => {
                sink.send_dead_letter(&KafkaDeadLetter {
                    key: &consumed.stored.key,
                    raw_ref,
                    reason,
                    detail,
                    record: &consumed.stored.record,
                })?;
            }
        }
    }
    // Every call the batch touches gets its new row on the compacted calls topic, in the
    // same batch (and transaction) as its events.
    for row in sqlite.preview_calls(&batch.pending.batch)? {
        sink.send_call(&row)?;
    }
    let offsets = batch.next_offsets_list();
    Ok(sink.commit_batch(group.map(|group| (&offsets, group)))?)
}
