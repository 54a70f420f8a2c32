//! A batch read from the raw topic: the shared [`PendingBatch`] plus what the Kafka side
//! needs (each record's position and raw form, each partition's first and next offsets).

use std::collections::BTreeMap;

use callhook_rawlog::kafka_codec::{self, header};
use callhook_rawlog::{Position, RawRecord, StoredRecord};
use callhook_sinks::SinkItem;
use chrono::{DateTime, Utc};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::pipeline::records::{PendingBatch, RecordMapper};

/// One consumed record and the sink item it became.
pub struct ConsumedRecord {
    /// The record as decoded (a placeholder for an undecodable one).
    pub stored: StoredRecord,
    /// The index of its item in the batch, if it produced one.
    pub item: Option<usize>,
}

/// A batch of raw-topic records.
pub struct KafkaBatch {
    /// The shared part: sink items, outcomes, offsets (as the SQLite sink stores them).
    pub pending: PendingBatch,
    /// Every consumed record, in consumption order.
    pub records: Vec<ConsumedRecord>,
    /// Per partition, the offset of the batch's first record.
    pub first_offsets: BTreeMap<i32, i64>,
    /// Per partition, the offset after the batch's last record.
    pub next_offsets: BTreeMap<i32, i64>,
    topic: String,
}

impl KafkaBatch {
    /// Starts an empty batch of `topic` for the SQLite consumer `sqlite_consumer`.
    pub fn new(topic: &str, sqlite_consumer: &str) -> Self {
        KafkaBatch {
            pending: PendingBatch::new(sqlite_consumer),
            records: Vec::new(),
            first_offsets: BTreeMap::new(),
            next_offsets: BTreeMap::new(),
            topic: topic.to_owned(),
        }
    }

    /// Returns the number of records in the batch.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Returns true when no record was read.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Decodes and maps one message into the batch. An undecodable record becomes a dead
    /// letter with reason `undecodable_record`.
    pub fn add(&mut self, mapper: &mut RecordMapper, message: &BorrowedMessage<'_>) {
        self.add_with(message, |pending, stored| pending.add(mapper, stored));
    }

    /// Adds one message as a dead letter with `reason`, without mapping it.
    pub fn add_dead_letter(&mut self, message: &BorrowedMessage<'_>, reason: &str, detail: String) {
        self.add_with(message, |pending, stored| {
            Some(pending.add_dead_letter(stored, reason, detail))
        });
    }

    fn add_with(
        &mut self,
        message: &BorrowedMessage<'_>,
        add: impl FnOnce(&mut PendingBatch, &StoredRecord) -> Option<usize>,
    ) {
        let partition = message.partition();
        let offset = message.offset();
        self.first_offsets.entry(partition).or_insert(offset);
        self.next_offsets.insert(partition, offset + 1);
        let position = Position {
            partition: u32::try_from(partition).unwrap_or_default(),
            offset: u64::try_from(offset).unwrap_or_default(),
        };
        let key = message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default();
        let headers = message.headers();
        let decoded = kafka_codec::decode(
            headers
                .iter()
                .flat_map(|headers| headers.iter())
                .map(|header| (header.key, header.value)),
            message.payload(),
        );
        let (stored, item) = match decoded {
            Ok(record) => {
                let stored = StoredRecord {
                    position,
                    key,
                    record,
                };
                let item = add(&mut self.pending, &stored);
                (stored, item)
            }
            Err(error) => {
                let stored = StoredRecord {
                    position,
                    key,
                    record: placeholder(message),
                };
                let item =
                    self.pending
                        .add_dead_letter(&stored, "undecodable_record", error.to_string());
                (stored, Some(item))
            }
        };
        // Raw refs (of dead letters, and of pushes a sink may dead-letter) name the topic too: positions of the embedded log
        // and of other raw topics never collide in one database.
        if let Some(SinkItem::DeadLetter { raw_ref, .. } | SinkItem::Push { raw_ref, .. }) =
            item.and_then(|index| self.pending.batch.items.get_mut(index))
        {
            *raw_ref = raw_ref_of(&self.topic, &position);
        }
        self.records.push(ConsumedRecord { stored, item });
    }

    /// Sets the offsets the SQLite sink stores (`(partition, next_offset)`).
    pub fn seal(&mut self) {
        self.pending.batch.offsets = self
            .next_offsets
            .iter()
            .map(|(partition, next)| {
                (
                    u32::try_from(*partition).unwrap_or_default(),
                    u64::try_from(*next).unwrap_or_default(),
                )
            })
            .collect();
    }

    /// Returns the batch's next offsets as a partition list (for commits).
    pub fn next_offsets_list(&self) -> TopicPartitionList {
        self.offsets_list(&self.next_offsets)
    }

    /// Returns the batch's first offsets as a partition list (to seek back to).
    pub fn first_offsets_list(&self) -> TopicPartitionList {
        self.offsets_list(&self.first_offsets)
    }

    fn offsets_list(&self, offsets: &BTreeMap<i32, i64>) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for (partition, offset) in offsets {
            // Adding a partition of a valid topic name cannot fail.
            let _ = list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset));
        }
        list
    }
}

/// The `raw_ref` of a raw-topic record: `<topic>:<partition>:<offset>`.
pub fn raw_ref_of(topic: &str, position: &Position) -> String {
    format!("{topic}:{position}")
}

/// A stand-in raw record for a message that does not decode: its bytes, and what its
/// headers and timestamp still tell.
fn placeholder(message: &BorrowedMessage<'_>) -> RawRecord {
    let source = message
        .headers()
        .and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == header::SOURCE)
                .and_then(|header| header.value)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        })
        .unwrap_or_default();
    let received_at = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    RawRecord {
        source,
        received_at,
        method: String::new(),
        content_type: None,
        query: None,
        remote_addr: None,
        request_id: String::new(),
        headers: Vec::new(),
        body: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    }
}
