//! `callhook replay` in Kafka mode: the raw topic, from its start, through the current mapping,
//! re-produced as canonical events to a topic.
//!
//! # Guarantee
//!
//! - **The live pipeline is not touched.** The raw topic is read by a consumer that is
//!   assigned its partitions (it joins no group, so no rebalance of the live normalizers)
//!   under a group id of its own, and never commits an offset. Each partition is read from its
//!   low watermark up to the high watermark it had when the replay started, so the replay ends.
//! - **The same records as the live sink.** Records are decoded and mapped by the code the
//!   live loop uses ([`crate::kafka::batch`], [`crate::pipeline::records::map_record`]), with
//!   the replay filters of the embedded replay ([`crate::replay::ReplayFilter`]), and produced
//!   through the same [`KafkaSink`] (same key, headers and value for an event). Deterministic
//!   event ids make the re-produced events equal to the live ones: a consumer that dedupes on
//!   `ce_id` sees each event once.
//! - **At least once.** Every batch of records waits for Kafka's delivery reports before the
//!   next is read; the producer is idempotent but never transactional (a `transactional_id`
//!   would fence the live normalizer's producer). A replay that fails part way can be run
//!   again. A push whose dedupe key was already replayed (a vendor's re-send) is produced once.
//! - **The live `ce_sequence`.** With a projection to read (`sequences`: the SQLite sink's file
//!   or PostgreSQL), each event carries the `sequence` the projection stored for it, so the
//!   re-produced record equals the live one; an event the projection does not hold (a new
//!   mapping's) is produced without one.
//! - Dead letters are counted, not produced: their topic is for operators, and
//!   `callhook dead-letters redrive` is the tool for them.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use callhook_rawlog::embedded::ReadRecord;
use callhook_rawlog::kafka_codec;
use callhook_rawlog::{Position, StoredRecord};
use callhook_sinks::{
    EventKey, KafkaSink, KafkaSinkError, KafkaSinkSettings, ProjectionSinks, SinkItem,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::config::KafkaConsumerSettings;
use crate::dedupe::DedupeCache;
use crate::push::SourceContext;
use crate::replay::{replayed_item, ReplayFilter};

/// Records read before their events' delivery reports are awaited.
const REPLAY_BATCH: usize = 1_000;
/// How long one metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the replay waits without a record before it gives up on the rest.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Why a Kafka replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaReplayError {
    /// The raw-topic consumer failed (creation, metadata, assignment, reads).
    #[error("raw topic `{topic}`: {source}")]
    Consumer {
        /// The raw topic.
        topic: String,
        /// The client error.
        source: KafkaError,
    },
    /// The raw topic does not exist or has no partition.
    #[error("raw topic `{0}` does not exist or has no partition")]
    NoRawTopic(String),
    /// The raw topic stopped delivering before the replay reached its end.
    #[error("raw topic `{topic}` delivered nothing for {seconds} s with {missing} record(s) still to read")]
    Stalled {
        /// The raw topic.
        topic: String,
        /// How long it was quiet.
        seconds: u64,
        /// Records (offsets) not read.
        missing: i64,
    },
    /// The events could not be produced.
    #[error("producing the events: {0}")]
    Sink(#[from] KafkaSinkError),
    /// The projection the events' `sequence`s are read from failed.
    #[error("reading the events' sequence numbers: {0}")]
    Projection(#[from] callhook_sinks::SinkError),
}

/// Where the events go: a topic, or nowhere (`--dry-run` counts them).
pub enum ReplayTarget {
    /// Produce to `settings.events_topic` (the caller sets it to `--to-topic`).
    Topic(Box<KafkaSinkSettings>),
    /// Produce nothing.
    DryRun,
}

/// What a Kafka replay read and produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KafkaReplayStats {
    /// The topic the events went to (`None` on a dry run).
    pub topic: Option<String>,
    /// Raw records read.
    pub records_read: u64,
    /// Raw records the filter took.
    pub records_replayed: u64,
    /// Events produced (or, on a dry run, that would be), by type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Events produced in all.
    pub events: u64,
    /// Pushes left out as re-sends of a push replayed before.
    pub duplicates: u64,
    /// Records that map to a dead letter (not produced).
    pub dead_letters: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Replays `consumer.topic` through the current mapping to `target`. `progress(done, total)`
/// is called after every batch. Blocks (polls, delivery reports): run it on its own thread.
pub fn replay_to_topic(
    consumer: &KafkaConsumerSettings,
    target: ReplayTarget,
    sources: &HashMap<String, SourceContext>,
    filter: &ReplayFilter,
    dedupe_keys: NonZeroUsize,
    mut sequences: Option<&mut ProjectionSinks>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<KafkaReplayStats, KafkaReplayError> {
    let started = Instant::now();
    let topic = consumer.topic.clone();
    let client_error = |source| KafkaReplayError::Consumer {
        topic: topic.clone(),
        source,
    };
    let reader: BaseConsumer = replay_consumer_config(consumer)
        .create()
        .map_err(client_error)?;
    let ends = assign_from_start(&reader, &topic).map_err(client_error)?;
    let ends = ends.ok_or_else(|| KafkaReplayError::NoRawTopic(topic.clone()))?;
    let total: i64 = ends.values().map(|(low, high)| high - low).sum();
    let mut remaining: BTreeMap<i32, i64> = ends
        .iter()
        .filter(|(_, (low, high))| high > low)
        .map(|(partition, (_, high))| (*partition, *high))
        .collect();
    let (mut sink, topic_name) = match target {
        ReplayTarget::Topic(settings) => {
            let mut settings = *settings;
            // Never the live producer's transactional id: that would fence it.
            settings.transactional_id = None;
            let name = settings.events_topic.clone();
            (Some(KafkaSink::new(settings)?), Some(name))
        }
        ReplayTarget::DryRun => (None, None),
    };
    let mut stats = KafkaReplayStats {
        topic: topic_name,
        ..KafkaReplayStats::default()
    };
    let mut dedupe = DedupeCache::new(dedupe_keys);
    let mut last_record = Instant::now();
    let mut in_batch = 0;
    if let Some(sink) = sink.as_mut() {
        sink.begin_batch()?;
    }
    while !remaining.is_empty() {
        let Some(polled) = reader.poll(Duration::from_millis(100)) else {
            drop_partitions_at_end(&reader, &topic, &mut remaining);
            if !remaining.is_empty() && last_record.elapsed() >= IDLE_LIMIT {
                return Err(stalled(&reader, &topic, &remaining));
            }
            continue;
        };
        let message = polled.map_err(client_error)?;
        last_record = Instant::now();
        let partition = message.partition();
        let Some(end) = remaining.get(&partition).copied() else {
            continue;
        };
        if message.offset() >= end {
            remaining.remove(&partition);
            continue;
        }
        if message.offset() + 1 >= end {
            remaining.remove(&partition);
        }
        stats.records_read += 1;
        let Some(item) = map_message(&message, sources, filter) else {
            continue;
        };
        stats.records_replayed += 1;
        let item = match sequences.as_deref_mut() {
            Some(projections) => with_stored_sequences(projections, item)?,
            None => item,
        };
        send_item(sink.as_mut(), &item, &mut dedupe, &mut stats)?;
        in_batch += 1;
        if in_batch >= REPLAY_BATCH {
            if let Some(sink) = sink.as_mut() {
                sink.commit_batch(None)?;
                sink.begin_batch()?;
            }
            in_batch = 0;
            progress(stats.records_read, u64::try_from(total).unwrap_or(0));
        }
    }
    if let Some(sink) = sink.as_mut() {
        sink.commit_batch(None)?;
    }
    progress(stats.records_read, u64::try_from(total).unwrap_or(0));
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The live consumer's config under a group id of the replay's own: it only ever assigns, and
/// never commits (`enable.auto.commit` stays off).
fn replay_consumer_config(consumer: &KafkaConsumerSettings) -> rdkafka::ClientConfig {
    let mut config = consumer.consumer_config();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    config
        .set(
            "group.id",
            format!("{}-replay-{}-{stamp}", consumer.group, std::process::id()),
        )
        .set("enable.partition.eof", "false");
    config
}

/// Each partition's `(low, high)` watermarks when the replay started.
type Watermarks = BTreeMap<i32, (i64, i64)>;

/// Assigns every partition of `topic` at its low watermark; returns the watermarks, or `None`
/// when the topic has no partition.
fn assign_from_start(reader: &BaseConsumer, topic: &str) -> Result<Option<Watermarks>, KafkaError> {
    let metadata = reader.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let Some(found) = metadata.topics().iter().find(|found| found.name() == topic) else {
        return Ok(None);
    };
    if found.partitions().is_empty() {
        return Ok(None);
    }
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in found.partitions() {
        let (low, high) = reader.fetch_watermarks(topic, partition.id(), METADATA_TIMEOUT)?;
        ends.insert(partition.id(), (low, high));
        assignment.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
    }
    reader.assign(&assignment)?;
    Ok(Some(ends))
}

/// Drops the partitions whose position reached their end: with transactions, the last offsets
/// of a partition can be commit markers that are never delivered as records.
fn drop_partitions_at_end(reader: &BaseConsumer, topic: &str, remaining: &mut BTreeMap<i32, i64>) {
    let Ok(positions) = reader.position() else {
        return;
    };
    remaining.retain(|partition, end| {
        let position = positions
            .find_partition(topic, *partition)
            .and_then(|found| match found.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        position.is_none_or(|position| position < *end)
    });
}

fn stalled(reader: &BaseConsumer, topic: &str, remaining: &BTreeMap<i32, i64>) -> KafkaReplayError {
    let positions = reader.position().ok();
    let missing = remaining
        .iter()
        .map(|(partition, end)| {
            let position = positions
                .as_ref()
                .and_then(|list| list.find_partition(topic, *partition))
                .and_then(|found| match found.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
                .unwrap_or(0);
            end - position
        })
        .sum();
    KafkaReplayError::Stalled {
        topic: topic.to_owned(),
        seconds: IDLE_LIMIT.as_secs(),
        missing,
    }
}

/// Decodes a raw-topic message as the live loop does and maps it when the filter takes it.
fn map_message(
    message: &rdkafka::message::BorrowedMessage<'_>,
    sources: &HashMap<String, SourceContext>,
    filter: &ReplayFilter,
) -> Option<SinkItem> {
    let decoded = kafka_codec::decode(
        message
            .headers()
            .iter()
            .flat_map(|headers| headers.iter())
            .map(|header| (header.key, header.value)),
        message.payload(),
    );
    // An undecodable message maps to a dead letter, which a replay does not produce.
    let record = decoded.ok()?;
    let stored = StoredRecord {
        position: Position {
            partition: u32::try_from(message.partition()).unwrap_or_default(),
            offset: u64::try_from(message.offset()).unwrap_or_default(),
        },
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default(),
        record,
    };
    replayed_item(&ReadRecord::Decoded(stored), sources, filter)
}

/// Sets each event's `sequence` to the one `projections` stored for it.
fn with_stored_sequences(
    projections: &mut ProjectionSinks,
    mut item: SinkItem,
) -> Result<SinkItem, KafkaReplayError> {
    if let SinkItem::Push { events, .. } = &mut item {
        let keys: Vec<EventKey<'_>> = events.iter().map(|e| EventKey::of(&e.event)).collect();
        let stored = projections.stored_sequences(&keys)?;
        for sink_event in events.iter_mut() {
            let event = &mut sink_event.event;
            event.sequence = stored.get(&event.id).copied().flatten();
        }
    }
    Ok(item)
}

/// Sends a push's events (once per dedupe key) or counts a dead letter.
fn send_item(
    sink: Option<&mut KafkaSink>,
    item: &SinkItem,
    dedupe: &mut DedupeCache,
    stats: &mut KafkaReplayStats,
) -> Result<(), KafkaSinkError> {
    let SinkItem::Push {
        source,
        dedupe_key,
        events,
        ..
    } = item
    else {
        stats.dead_letters += 1;
        return Ok(());
    };
    if dedupe.contains(source, dedupe_key) {
        stats.duplicates += 1;
        return Ok(());
    }
    dedupe.remember(source, dedupe_key);
    let mut sink = sink;
    for event in events {
        if let Some(sink) = sink.as_deref_mut() {
            sink.send_event(event)?;
        }
        stats.events += 1;
        *stats
            .events_by_type
            .entry(event.event.event_type.as_str().to_owned())
            .or_default() += 1;
    }
    Ok(())
}
